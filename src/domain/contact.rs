//! `contact/<id>`: one entry of the company's contact directory, and the session commands that
//! create, link and change contacts.
//!
//! This module owns the rules of a contact stream ([`can_read`], [`decide`], [`apply`]) and the
//! contact-directory commands of a session (`add_to_directory`, `link_contact`,
//! `disconnect_contact`, `add_contact_detail`, `remove_contact`, and the contact side of
//! `set_client_info`). A contact never takes a command itself: every change starts on a
//! session, and the contact's events travel as `others` in the session command's decision, so
//! the session and its contact always change in one atomic append.
//!
//! The session's status was checked by [`super::session::decide`] before any function here
//! runs (`not_found` before open, `closed` after close: none of these commands is allowed after
//! close). Each command then checks permission (`forbidden`), its fields (`invalid`,
//! `too_large`), then the state (links, the contact's existence, counts). The linked contact's
//! state is read through [`Ctx::world`]; [`super::needs`] names it, so the writer has loaded it.

use super::session::{can_write, check_controls, check_email, check_len, check_phone, shown};
use super::{Ctx, Decision, Principal, Rejection};
use copanel_protocol::stream::valid_id;
use copanel_protocol::{
    Command, ContactDetail, ContactDetailEntry, ContactState, ContactStatus, Envelope, Event,
    SessionState, StreamName, StreamState,
};

/// Most extra details (phones, emails, identifiers) one contact holds.
pub const MAX_DETAILS: usize = 50;

/// Decides a command sent to a contact stream directly: there is none. Contacts change only
/// through the session commands below, so that a contact never drifts from its sessions.
pub fn decide(_s: &ContactState, _ctx: &Ctx<'_>, cmd: &Command) -> Result<Decision, Rejection> {
    Err(Rejection::invalid(
        "kind",
        format!("{} is not a command for contact streams", cmd.kind()),
    ))
}

/// Folds an event into a contact. Events of other stream kinds are ignored.
pub fn apply(s: &mut ContactState, env: &Envelope) {
    match &env.event {
        Event::ContactCreated {
            session_id,
            name,
            phone,
            email,
        } => {
            s.status = ContactStatus::Active;
            s.name = name.clone();
            s.phone = phone.clone();
            s.email = email.clone();
            s.details.clear();
            s.sessions = vec![session_id.clone()];
        }
        Event::ContactUpdated { name, phone, email } => {
            if let Some(v) = name {
                s.name = v.clone();
            }
            if let Some(v) = phone {
                s.phone = v.clone();
            }
            if let Some(v) = email {
                s.email = v.clone();
            }
        }
        Event::ContactDetailAdded { detail, value } => s.details.push(ContactDetailEntry {
            detail: *detail,
            value: value.clone(),
            added_by: env.actor.id.clone(),
            at: env.at,
        }),
        Event::SessionLinked { session_id } if !s.sessions.contains(session_id) => {
            s.sessions.push(session_id.clone())
        }
        Event::SessionUnlinked { session_id } => s.sessions.retain(|x| x != session_id),
        Event::ContactRemoved => {
            s.status = ContactStatus::Removed;
            s.sessions.clear();
        }
        _ => {}
    }
}

/// Read access: every principal of the company reads an active contact (the directory is the
/// company's). A contact that was never created or was removed is `not_found`: it is not in
/// the directory.
pub fn can_read(s: &ContactState, _who: &Principal) -> Result<(), Rejection> {
    match s.status {
        ContactStatus::Active => Ok(()),
        ContactStatus::New => Err(Rejection::not_found("contact does not exist")),
        ContactStatus::Removed => Err(Rejection::not_found(
            "contact does not exist (it was removed from the directory)",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// `contact/<id>`. Ids here come from the writer's fresh id or from a state that was checked
/// when it was written, so this only fails on a corrupt state; still a rejection, not a panic.
fn contact_stream(id: &str) -> Result<StreamName, Rejection> {
    StreamName::parse(&format!("contact/{id}"))
        .map_err(|e| Rejection::invalid("contact_id", e.to_string()))
}

/// The current state of `contact/<id>` if it is in the directory. The writer loads every
/// stream [`super::needs`] names, so a missing one has no events: it does not exist.
fn active<'w>(ctx: &Ctx<'w>, id: &str) -> Option<&'w ContactState> {
    let stream = StreamName::parse(&format!("contact/{id}")).ok()?;
    match ctx.world.state(&stream) {
        Some(StreamState::Contact(c)) if c.status == ContactStatus::Active => Some(c),
        _ => None,
    }
}

fn missing(id: &str) -> Rejection {
    Rejection::not_found(format!("contact {} does not exist", shown(id)))
}

fn not_linked() -> Rejection {
    Rejection::not_found("session is not linked to a contact")
}

/// The id of the contact the session is linked to, or `not_found`.
fn linked(s: &SessionState) -> Result<&str, Rejection> {
    s.contact_id.as_deref().ok_or_else(not_linked)
}

// ---------------------------------------------------------------------------------------------
// Session commands.
// ---------------------------------------------------------------------------------------------

/// `add_to_directory` on a session: creates `contact/<fresh id>` from the session's client
/// information and links the two. The ack's `created` is the new contact's id.
pub fn add_to_directory(s: &SessionState, ctx: &Ctx<'_>) -> Result<Decision, Rejection> {
    can_write(s, ctx.principal)?;
    if let Some(id) = &s.contact_id {
        return Err(Rejection::invalid(
            "kind",
            format!("session is already linked to contact {}", shown(id)),
        ));
    }
    let contact_id = ctx.fresh_id.to_owned();
    let stream = contact_stream(&contact_id)?;
    Ok(Decision {
        events: vec![Event::ContactLinked {
            contact_id: contact_id.clone(),
        }],
        others: vec![(
            stream,
            Event::ContactCreated {
                session_id: ctx.stream.id().to_owned(),
                name: s.client.name.clone(),
                phone: s.client.phone.clone(),
                email: s.client.email.clone(),
            },
        )],
        created: Some(contact_id),
    })
}

/// `link_contact {contact_id}` on a session: links it to an existing contact.
pub fn link_contact(
    s: &SessionState,
    ctx: &Ctx<'_>,
    contact_id: &str,
) -> Result<Decision, Rejection> {
    can_write(s, ctx.principal)?;
    if !valid_id(contact_id) {
        return Err(Rejection::invalid(
            "contact_id",
            format!(
                "contact id {} must be 1 to 128 characters of A-Z a-z 0-9 - _ . :",
                shown(contact_id)
            ),
        ));
    }
    if let Some(current) = &s.contact_id {
        return Err(Rejection::invalid(
            "contact_id",
            format!(
                "session is already linked to contact {}; disconnect it first",
                shown(current)
            ),
        ));
    }
    if active(ctx, contact_id).is_none() {
        return Err(missing(contact_id));
    }
    Ok(Decision {
        events: vec![Event::ContactLinked {
            contact_id: contact_id.to_owned(),
        }],
        others: vec![(
            contact_stream(contact_id)?,
            Event::SessionLinked {
                session_id: ctx.stream.id().to_owned(),
            },
        )],
        created: None,
    })
}

/// `disconnect_contact` on a session: unlinks it; the contact stays in the directory.
pub fn disconnect_contact(s: &SessionState, ctx: &Ctx<'_>) -> Result<Decision, Rejection> {
    can_write(s, ctx.principal)?;
    let contact_id = linked(s)?;
    Ok(Decision {
        events: vec![Event::ContactUnlinked {
            contact_id: contact_id.to_owned(),
            removed: false,
        }],
        others: vec![(
            contact_stream(contact_id)?,
            Event::SessionUnlinked {
                session_id: ctx.stream.id().to_owned(),
            },
        )],
        created: None,
    })
}

/// Checks a detail's value by its kind: phones and emails have the shapes `set_client_info`
/// accepts, identifiers are free text of at most `id_chars`.
fn check_detail(ctx: &Ctx<'_>, detail: ContactDetail, value: &str) -> Result<(), Rejection> {
    let limits = ctx.limits;
    let what = match detail {
        ContactDetail::Phone => "phone",
        ContactDetail::Email => "email",
        ContactDetail::Identifier => "identifier",
    };
    if value.trim().is_empty() {
        return Err(Rejection::invalid("value", format!("{what} is empty")));
    }
    check_len("value", what, value, limits.client_field_chars)?;
    check_controls("value", what, value, &[])?;
    match detail {
        ContactDetail::Phone => check_phone("value", value),
        ContactDetail::Email => check_email("value", value),
        ContactDetail::Identifier => check_len("value", what, value, limits.id_chars),
    }
}

/// `add_contact_detail {detail, value}` on a session: adds a phone, email or identifier to the
/// linked contact, also one it already has (the seed: "even if the client already has this
/// information"). Only the contact changes, so the ack's seq is the session's head.
pub fn add_contact_detail(
    s: &SessionState,
    ctx: &Ctx<'_>,
    detail: ContactDetail,
    value: &str,
) -> Result<Decision, Rejection> {
    can_write(s, ctx.principal)?;
    check_detail(ctx, detail, value)?;
    let contact_id = linked(s)?;
    let contact = active(ctx, contact_id).ok_or_else(|| missing(contact_id))?;
    if contact.details.len() >= MAX_DETAILS {
        return Err(Rejection::too_large(
            "value",
            format!("a contact holds at most {MAX_DETAILS} extra details"),
        ));
    }
    Ok(Decision {
        events: Vec::new(),
        others: vec![(
            contact_stream(contact_id)?,
            Event::ContactDetailAdded {
                detail,
                value: value.to_owned(),
            },
        )],
        created: None,
    })
}

/// `remove_contact` on a session: removes the linked contact from the directory and unlinks
/// every session linked to it, this one included, in one atomic append.
pub fn remove_contact(s: &SessionState, ctx: &Ctx<'_>) -> Result<Decision, Rejection> {
    can_write(s, ctx.principal)?;
    let contact_id = linked(s)?;
    let contact = active(ctx, contact_id).ok_or_else(|| missing(contact_id))?;
    let unlinked = || Event::ContactUnlinked {
        contact_id: contact_id.to_owned(),
        removed: true,
    };
    let mut others = vec![(contact_stream(contact_id)?, Event::ContactRemoved)];
    let own = ctx.stream.id();
    for sid in contact.sessions.iter().filter(|sid| sid.as_str() != own) {
        // Session ids were valid stream ids when they were linked; one that is not cannot be
        // written to and cannot stay linked either, so it is skipped rather than block removal.
        if let Ok(stream) = StreamName::session(sid) {
            others.push((stream, unlinked()));
        }
    }
    Ok(Decision {
        events: vec![unlinked()],
        others,
        created: None,
    })
}

/// The side event that keeps a linked contact in step with `set_client_info`: given the
/// session's `client_info_changed`, a `contact_updated` on the linked contact with the fields
/// whose value differs from the contact's. `None` when the session is not linked, the contact
/// is not in the directory, or nothing differs.
pub fn client_info_side(
    s: &SessionState,
    ctx: &Ctx<'_>,
    changed: &Event,
) -> Option<(StreamName, Event)> {
    let Event::ClientInfoChanged { name, phone, email } = changed else {
        return None;
    };
    let contact_id = s.contact_id.as_deref()?;
    let contact = active(ctx, contact_id)?;
    let differs = |new: &Option<String>, old: &str| new.as_ref().filter(|v| *v != old).cloned();
    let name = differs(name, &contact.name);
    let phone = differs(phone, &contact.phone);
    let email = differs(email, &contact.email);
    if name.is_none() && phone.is_none() && email.is_none() {
        return None;
    }
    let stream = contact_stream(contact_id).ok()?;
    Some((stream, Event::ContactUpdated { name, phone, email }))
}
