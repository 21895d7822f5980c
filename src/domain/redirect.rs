//! Redirecting a session to another operator or a group, and claiming a group's session.
//!
//! This module owns the rules of `redirect` and `claim` on a session. Both change the session's
//! owner (the fold is [`super::session::apply`] of `session_redirected` / `session_claimed`),
//! and both tell the operators concerned on their own `operator/<id>` feeds, as `others` in the
//! same decision, so the session and the feeds change in one atomic append:
//! - the receiving operator, or every known member of the receiving group, gets
//!   `assignment_received` (with the note, and the group for a group redirect);
//! - when the session leaves a group (redirected elsewhere, or claimed), every known member of
//!   that group gets `assignment_ended`, since none of them can claim it any more; when it
//!   leaves an operator, that operator gets `assignment_ended` too, so an assignment it received
//!   earlier does not point at a session it can no longer open.
//!
//! Group members are the operators the roster knows (from the tokens they connected with,
//! through [`super::World::group_members`]); an operator that never connected learns of the
//! session when it queries its sessions.
//!
//! The session's status was checked by [`super::session::decide`] before anything here runs
//! (`not_found` before open, `closed` after close). Each command then checks permission
//! (`forbidden`), its fields (`invalid`, `too_large`), then the state.
//!
//! Losing access needs no event of its own: read access follows the owner (see
//! [`super::session::can_read`]), so the previous owner stops reading the session at the
//! redirect, unless it is a collaborator, and the hub ends its live subscriptions.

use super::session::{can_write, check_controls, check_len, shown};
use super::{Ctx, Decision, Rejection};
use copanel_protocol::stream::valid_id;
use copanel_protocol::{Event, Owner, SessionState, StreamName};

/// `redirect {operator_id | group, note?}`: hands the session to one operator or to a group
/// whose members may claim it.
///
/// Who: the owner operator, joined collaborators, supervisors, admins and the platform (the
/// session's writers). Fields: exactly one of `operator_id` (a valid operator id) and `group`
/// (1 to `id_chars` characters, no control characters), not the current owner; `note` like an
/// `add_note` text. Appends `note_added` (when there is a note; its id is `n<seq>`, returned as
/// `created`) then `session_redirected`.
pub fn redirect(
    s: &SessionState,
    ctx: &Ctx<'_>,
    operator_id: Option<&str>,
    group: Option<&str>,
    note: Option<&str>,
) -> Result<Decision, Rejection> {
    let limits = ctx.limits;
    can_write(s, ctx.principal)?;
    let to = match (operator_id, group) {
        (Some(_), Some(_)) => {
            return Err(Rejection::invalid(
                "operator_id",
                "give operator_id or group, not both",
            ))
        }
        (None, None) => {
            return Err(Rejection::invalid(
                "operator_id",
                "give operator_id or group",
            ))
        }
        (Some(id), None) => {
            check_len("operator_id", "operator id", id, limits.id_chars)?;
            if !valid_id(id) {
                return Err(Rejection::invalid(
                    "operator_id",
                    format!(
                        "operator id {} must be 1 to 128 characters of A-Z a-z 0-9 - _ . :",
                        shown(id)
                    ),
                ));
            }
            Owner::Operator {
                operator_id: id.to_owned(),
            }
        }
        (None, Some(g)) => {
            if g.is_empty() {
                return Err(Rejection::invalid("group", "group is empty"));
            }
            check_len("group", "group", g, limits.id_chars)?;
            check_controls("group", "group", g, &[])?;
            Owner::Group {
                group: g.to_owned(),
            }
        }
    };
    if let Some(text) = note {
        // The same rules as `add_note`: the note becomes one of the session's notes.
        check_len("note", "note text", text, limits.note_chars)?;
        check_controls("note", "note text", text, &['\n', '\r', '\t'])?;
        if text.trim().is_empty() {
            return Err(Rejection::invalid("note", "note text is empty"));
        }
    }
    if s.owner.as_ref() == Some(&to) {
        let (field, message) = match &to {
            Owner::Operator { operator_id } => (
                "operator_id",
                format!("operator {} already owns this session", shown(operator_id)),
            ),
            Owner::Group { group } => (
                "group",
                format!("the session is already waiting in group {}", shown(group)),
            ),
        };
        return Err(Rejection::invalid(field, message));
    }
    if note.is_some() && s.notes.len() >= limits.notes_per_session {
        return Err(Rejection::too_large(
            "note",
            format!("a session holds at most {} notes", limits.notes_per_session),
        ));
    }

    let session_id = ctx.stream.id().to_owned();
    let by = ctx.principal.id.clone();
    let mut decision = Decision::default();
    // Derived from the seq the event gets (it is the first of this append), like `add_note`,
    // so replays and retries name the note the same.
    let note_id = note.map(|_| format!("n{}", ctx.next_seq));
    if let (Some(text), Some(id)) = (note, &note_id) {
        decision.events.push(Event::NoteAdded {
            note_id: id.clone(),
            text: text.to_owned(),
        });
    }
    decision.events.push(Event::SessionRedirected {
        to: to.clone(),
        note_id: note_id.clone(),
    });
    // Ended before received: an operator in both the old and the new group ends up with the
    // new assignment on its feed.
    end_assignments(s, ctx, &mut decision, None)?;
    let received = |group: Option<String>| Event::AssignmentReceived {
        session_id: session_id.clone(),
        by: by.clone(),
        note: note.map(str::to_owned),
        group,
    };
    match &to {
        Owner::Operator { operator_id } => {
            decision.others.push((feed(operator_id)?, received(None)));
        }
        Owner::Group { group } => {
            // The sender handed it on: it needs no reminder to claim it.
            for member in ctx.world.group_members(group) {
                if member != by {
                    decision
                        .others
                        .push((feed(&member)?, received(Some(group.clone()))));
                }
            }
        }
    }
    decision.created = note_id;
    Ok(decision)
}

/// `claim`: a member of the group that owns the session becomes its owner operator.
///
/// Who: members of the owning group only (the token's `groups`); supervisors and admins
/// redirect instead. State: the session must be waiting in a group (`invalid`, field
/// `command.kind`, otherwise). Appends `session_claimed`; every known member of the group,
/// the claimer included, gets `assignment_ended`.
pub fn claim(s: &SessionState, ctx: &Ctx<'_>) -> Result<Decision, Rejection> {
    let who = ctx.principal;
    let group = match &s.owner {
        Some(Owner::Group { group }) => group,
        _ => {
            return Err(Rejection::invalid(
                "kind",
                "session is not waiting in a group",
            ))
        }
    };
    if !who.groups.iter().any(|g| g == group) {
        return Err(Rejection::forbidden(format!(
            "operator {} is not a member of group {}, which this session is waiting in",
            shown(&who.id),
            shown(group)
        )));
    }
    let mut decision = Decision {
        events: vec![Event::SessionClaimed {
            operator_id: who.id.clone(),
        }],
        ..Decision::default()
    };
    end_assignments(s, ctx, &mut decision, Some(&who.id))?;
    Ok(decision)
}

/// The session leaves its current owner: `assignment_ended` on the feeds of the owner operator,
/// or of every known member of the owning group plus `also` (the claimer, who may be missing
/// from the roster if its connection's roster note was dropped).
fn end_assignments(
    s: &SessionState,
    ctx: &Ctx<'_>,
    decision: &mut Decision,
    also: Option<&str>,
) -> Result<(), Rejection> {
    let mut ids: Vec<String> = match &s.owner {
        Some(Owner::Operator { operator_id }) => vec![operator_id.clone()],
        Some(Owner::Group { group }) => ctx.world.group_members(group),
        None => Vec::new(),
    };
    if let Some(id) = also {
        ids.push(id.to_owned());
    }
    ids.sort();
    ids.dedup();
    for id in ids {
        decision.others.push((
            feed(&id)?,
            Event::AssignmentEnded {
                session_id: ctx.stream.id().to_owned(),
            },
        ));
    }
    Ok(())
}

/// An operator's feed. Ids come from validated commands, the roster (token subjects, which the
/// edge validates) or the state; a bad one is still a rejection rather than a panic.
fn feed(operator_id: &str) -> Result<StreamName, Rejection> {
    StreamName::operator(operator_id).map_err(|e| Rejection::invalid("operator_id", e.to_string()))
}
