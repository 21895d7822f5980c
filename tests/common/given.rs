//! Given / then helpers shared by the domain tests (`tests/domain_*.rs`): the principals that
//! send commands, and the verdicts on a decision (accepted, a no-op, or refused with a code and
//! field). Each domain test includes it with `#[path = "common/given.rs"] mod given;`, so a file
//! may not use every helper.
#![allow(dead_code)]

use copanel::domain::{Decision, Principal, Rejection};
use copanel_protocol::{ErrorCode, Role};

// ---- principals ------------------------------------------------------------------------------

/// A principal in no group.
pub fn principal(id: &str, role: Role) -> Principal {
    member_of(id, role, &[])
}

/// A principal in `groups`.
pub fn member_of(id: &str, role: Role, groups: &[&str]) -> Principal {
    Principal {
        id: id.into(),
        role,
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

/// An operator in no group.
pub fn op(id: &str) -> Principal {
    principal(id, Role::Operator)
}

/// The supervisor `sup`.
pub fn sup() -> Principal {
    principal("sup", Role::Supervisor)
}

/// The admin `adm`.
pub fn admin() -> Principal {
    principal("adm", Role::Admin)
}

/// The platform's service principal.
pub fn svc() -> Principal {
    principal("platform", Role::Service)
}

// ---- verdicts --------------------------------------------------------------------------------

/// The decision of an accepted command.
#[track_caller]
pub fn accepted(r: Result<Decision, Rejection>) -> Decision {
    r.unwrap_or_else(|e| panic!("refused: {e:?}"))
}

/// An accepted command that changes nothing.
#[track_caller]
pub fn no_op(r: Result<Decision, Rejection>) {
    assert_eq!(accepted(r), Decision::default());
}

/// A refusal with `code` and a message.
#[track_caller]
pub fn rejected(r: Result<Decision, Rejection>, code: ErrorCode) -> Rejection {
    match r {
        Ok(d) => panic!("accepted, expected {code}: {d:?}"),
        Err(e) => {
            assert_eq!(e.code, code, "{e:?}");
            assert!(!e.message.is_empty());
            e
        }
    }
}

/// `forbidden`, naming no field.
#[track_caller]
pub fn forbidden(r: Result<Decision, Rejection>) -> Rejection {
    let e = rejected(r, ErrorCode::Forbidden);
    assert_eq!(e.field, None);
    e
}

/// `not_found`, naming no field.
#[track_caller]
pub fn not_found(r: Result<Decision, Rejection>) -> Rejection {
    let e = rejected(r, ErrorCode::NotFound);
    assert_eq!(e.field, None);
    e
}

/// `invalid`, naming `command.<field>`.
#[track_caller]
pub fn invalid(r: Result<Decision, Rejection>, field: &str) -> Rejection {
    let e = rejected(r, ErrorCode::Invalid);
    assert_eq!(
        e.field.as_deref(),
        Some(format!("command.{field}").as_str())
    );
    e
}

/// `too_large`, naming `command.<field>`.
#[track_caller]
pub fn too_large(r: Result<Decision, Rejection>, field: &str) -> Rejection {
    let e = rejected(r, ErrorCode::TooLarge);
    assert_eq!(
        e.field.as_deref(),
        Some(format!("command.{field}").as_str())
    );
    e
}
