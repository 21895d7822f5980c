//! Anonymising a closed session: the rule ([`anonymize`]), what it erases from the state
//! ([`redact_state`]) and from each stored event ([`redact_event`]).
//!
//! Personal data of a session, and only it, is erased:
//! - client information: `name`, `phone`, `email` of `session_opened` and
//!   `client_info_changed` (non-empty values; an empty one says "unknown" and stays);
//! - transcript texts: `message_posted.text` (non-empty);
//! - parameter values: `session_opened.parameters[*].value` and `parameter_set.value`, always
//!   (even an empty value, so no parameter's value survives);
//! - the contact link: `contact_id` of `contact_linked` / `contact_unlinked` (non-empty).
//!
//! Everything else stays: seqs, event kinds, actors, times, command ids, parameter keys, tags,
//! notes, collaborators, owners. Each erased value reads as [`REDACTED`].
//!
//! The domain only decides and folds: the `session_anonymized` event folds through
//! [`redact_state`], and the writer then asks the store to rewrite events `1..seq-1` of the
//! stream with [`redact_event`] (see [`crate::store::Store::redact`]). The two functions agree,
//! so replaying the redacted log gives exactly the state the live fold gave.
//!
//! The linked contact is the company's directory entry, not the session's data: it stays, but
//! it no longer lists the session (`session_unlinked` on `contact/<id>`, same atomic append).

use super::{Ctx, Decision, Rejection};
use copanel_protocol::{
    ContactStatus, Envelope, Event, Role, SessionState, SessionStatus, StreamName, StreamState,
};

/// What personal data reads as once erased.
pub const REDACTED: &str = "[redacted]";

/// `anonymize`: admins only, closed sessions only; a session already anonymised is an accepted
/// no-op (nothing appended). The caller ([`super::session::decide`]) has already refused a
/// session that was never opened (`not_found`).
///
/// Appends `session_anonymized` and, while the session is linked to a contact that lists it,
/// `session_unlinked {session_id}` on that contact.
pub fn anonymize(s: &SessionState, ctx: &Ctx<'_>) -> Result<Decision, Rejection> {
    if ctx.principal.role != Role::Admin {
        return Err(Rejection::forbidden("only admins may anonymise a session"));
    }
    if s.status != SessionStatus::Closed {
        return Err(Rejection::invalid(
            "kind",
            "only a closed session can be anonymised; close it first",
        ));
    }
    if s.anonymized {
        return Ok(Decision::default());
    }
    let mut decision = Decision {
        events: vec![Event::SessionAnonymized],
        ..Decision::default()
    };
    if let Some(contact_id) = s.contact_id.as_deref() {
        // The contact stays in the directory but must stop pointing at an anonymised session.
        // A contact that does not list it (removed meanwhile) needs no event.
        let session_id = ctx.stream.id();
        let stream = StreamName::parse(&format!("contact/{contact_id}")).ok();
        let lists_it = stream
            .as_ref()
            .and_then(|c| ctx.world.state(c))
            .is_some_and(|state| match state {
                StreamState::Contact(c) => {
                    c.status == ContactStatus::Active && c.sessions.iter().any(|x| x == session_id)
                }
                _ => false,
            });
        if let (Some(stream), true) = (stream, lists_it) {
            decision.others.push((
                stream,
                Event::SessionUnlinked {
                    session_id: session_id.to_owned(),
                },
            ));
        }
    }
    Ok(decision)
}

/// Replaces `v` by [`REDACTED`] unless it is empty.
fn redact_value(v: &mut String) {
    if !v.is_empty() {
        *v = REDACTED.to_owned();
    }
}

/// Erases the personal data of one stored session event (the fields listed in the module
/// doc); other events are left as they are. Idempotent.
pub fn redact_event(env: &mut Envelope) {
    match &mut env.event {
        Event::SessionOpened {
            name,
            phone,
            email,
            parameters,
            ..
        } => {
            redact_value(name);
            redact_value(phone);
            redact_value(email);
            for p in parameters.values_mut() {
                p.value = REDACTED.to_owned();
            }
        }
        Event::ClientInfoChanged { name, phone, email } => {
            for v in [name, phone, email].into_iter().flatten() {
                redact_value(v);
            }
        }
        Event::MessagePosted { text, .. } => redact_value(text),
        Event::ParameterSet { value, .. } => *value = REDACTED.to_owned(),
        Event::ContactLinked { contact_id } | Event::ContactUnlinked { contact_id, .. } => {
            redact_value(contact_id)
        }
        _ => {}
    }
}

/// Folds `session_anonymized`: the client information and parameter values are replaced, the
/// contact link is dropped, and the session is marked anonymised. Gives the same state as
/// folding the events redacted by [`redact_event`] and then this.
pub fn redact_state(s: &mut SessionState) {
    for v in [&mut s.client.name, &mut s.client.phone, &mut s.client.email] {
        redact_value(v);
    }
    for p in s.parameters.values_mut() {
        p.value = REDACTED.to_owned();
    }
    s.contact_id = None;
    s.anonymized = true;
}
