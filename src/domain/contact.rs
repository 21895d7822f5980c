//! `contact/<id>`: one entry of the company's contact directory, and the session commands that
//! create, link and change contacts.
use super::{Ctx, Decision, Principal, Rejection};
use copanel_protocol::{
    Command, ContactDetail, ContactState, Envelope, Event, SessionState, StreamName,
};

/// Decides a command sent to a contact stream directly.
pub fn decide(_s: &ContactState, _ctx: &Ctx<'_>, cmd: &Command) -> Result<Decision, Rejection> {
    Err(Rejection::invalid(
        "kind",
        format!("{} is not a command for contact streams", cmd.kind()),
    ))
}

/// Folds an event into a contact.
pub fn apply(_s: &mut ContactState, _env: &Envelope) {}

/// Read access to a contact.
pub fn can_read(_s: &ContactState, _who: &Principal) -> Result<(), Rejection> {
    Err(Rejection::not_found("contacts arrive with the directory"))
}

/// `add_to_directory` on a session.
pub fn add_to_directory(_s: &SessionState, _ctx: &Ctx<'_>) -> Result<Decision, Rejection> {
    Err(Rejection::invalid("kind", "not implemented yet"))
}

/// `link_contact` on a session.
pub fn link_contact(
    _s: &SessionState,
    _ctx: &Ctx<'_>,
    _contact_id: &str,
) -> Result<Decision, Rejection> {
    Err(Rejection::invalid("kind", "not implemented yet"))
}

/// `disconnect_contact` on a session.
pub fn disconnect_contact(_s: &SessionState, _ctx: &Ctx<'_>) -> Result<Decision, Rejection> {
    Err(Rejection::invalid("kind", "not implemented yet"))
}

/// `add_contact_detail` on a session.
pub fn add_contact_detail(
    _s: &SessionState,
    _ctx: &Ctx<'_>,
    _detail: ContactDetail,
    _value: &str,
) -> Result<Decision, Rejection> {
    Err(Rejection::invalid("kind", "not implemented yet"))
}

/// `remove_contact` on a session.
pub fn remove_contact(_s: &SessionState, _ctx: &Ctx<'_>) -> Result<Decision, Rejection> {
    Err(Rejection::invalid("kind", "not implemented yet"))
}

/// The side event that keeps a linked contact in step with `set_client_info`.
pub fn client_info_side(
    _s: &SessionState,
    _ctx: &Ctx<'_>,
    _changed: &Event,
) -> Option<(StreamName, Event)> {
    None
}
