//! Anonymising a closed session.
use super::{Ctx, Decision, Rejection};
use copanel_protocol::SessionState;

/// `anonymize`.
pub fn anonymize(_s: &SessionState, _ctx: &Ctx<'_>) -> Result<Decision, Rejection> {
    Err(Rejection::invalid("kind", "not implemented yet"))
}

/// What personal data reads as once erased.
pub const REDACTED: &str = "[redacted]";

/// Folds `session_anonymized`: the client information, parameter values and contact link are
/// replaced. The same function redacts the stored events, so a replay gives the same state.
pub fn redact_state(s: &mut SessionState) {
    for v in [&mut s.client.name, &mut s.client.phone, &mut s.client.email] {
        if !v.is_empty() {
            *v = REDACTED.to_owned();
        }
    }
    for p in s.parameters.values_mut() {
        p.value = REDACTED.to_owned();
    }
    s.contact_id = None;
}
