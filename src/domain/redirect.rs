//! Redirecting a session to another operator or a group, and claiming a group's session.
use super::{Ctx, Decision, Rejection};
use copanel_protocol::SessionState;

/// `redirect {operator_id | group, note?}`.
pub fn redirect(
    _s: &SessionState,
    _ctx: &Ctx<'_>,
    _operator_id: Option<&str>,
    _group: Option<&str>,
    _note: Option<&str>,
) -> Result<Decision, Rejection> {
    Err(Rejection::invalid("kind", "not implemented yet"))
}

/// `claim`.
pub fn claim(_s: &SessionState, _ctx: &Ctx<'_>) -> Result<Decision, Rejection> {
    Err(Rejection::invalid("kind", "not implemented yet"))
}
