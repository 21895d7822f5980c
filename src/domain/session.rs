//! `session/<id>`: the client panel of one customer session.
//!
//! This module owns the rules of a session stream: who may read it ([`can_read`]), which
//! commands it accepts and what they append ([`decide`]), and how its events fold into a
//! [`SessionState`] ([`apply`]). The invitee's side of an invitation is written to its
//! `operator/<id>` feed as `others` in the same decision, so both streams change in one atomic
//! append; how that feed folds lives in [`super::operator`].
//!
//! `decide` checks in a fixed order, so a client always gets the most fundamental problem
//! first: status (`not_found`, `closed`), then permission (`forbidden`), then the command's
//! fields (`invalid`, `too_large`), then the state (duplicates, counts, missing targets).
//! It must never panic whatever the input: no indexing, no `unwrap` on anything a client sent.

use super::{Ctx, Decision, Limits, Principal, Rejection};
use copanel_protocol::command::ClientInfoInput;
use copanel_protocol::event::InvitationOutcome;
use copanel_protocol::stream::valid_id;
use copanel_protocol::{
    Collaborator, CollaboratorStatus, Command, Envelope, Event, MessageFrom, Note, Owner,
    Parameter, ParameterSource, PresetParameter, Role, SessionState, SessionStatus, StreamName,
    Tag, TagSource,
};
use std::collections::BTreeMap;

/// Decides a command on a session: the events it appends, or why it is refused.
pub fn decide(s: &SessionState, ctx: &Ctx<'_>, cmd: &Command) -> Result<Decision, Rejection> {
    check_status(s, ctx, cmd)?;
    let who = ctx.principal;
    let limits = ctx.limits;
    match cmd {
        Command::OpenSession {
            channel,
            client,
            parameters,
            owner,
        } => open_session(s, ctx, channel, client, parameters, owner),
        Command::SetClientInfo { name, phone, email } => {
            set_client_info(s, ctx, name, phone, email)
        }
        Command::InviteCollaborator { operator_id } => invite(s, ctx, operator_id),
        Command::AcceptInvitation {} => answer_invitation(s, ctx, true),
        Command::DeclineInvitation {} => answer_invitation(s, ctx, false),
        Command::CancelInvitation { operator_id } => cancel_invitation(s, ctx, operator_id),
        Command::Leave {} => leave(s, who),
        Command::RemoveCollaborator { operator_id } => remove_collaborator(s, ctx, operator_id),
        Command::SetParameter {
            key,
            value,
            read_only,
        } => set_parameter(s, who, limits, key, value, *read_only),
        Command::RemoveParameter { key } => remove_parameter(s, who, key),
        Command::AddTag { tag } => add_tag(s, ctx, tag),
        Command::RemoveTag { tag } => remove_tag(s, who, tag),
        Command::AddNote { text } => add_note(s, ctx, text),
        Command::EditNote { note_id, text } => edit_note(s, who, limits, note_id, text),
        Command::DeleteNote { note_id } => delete_note(s, who, note_id),
        Command::PostMessage {
            from,
            text,
            template_id,
        } => post_message(s, ctx, *from, text.as_deref(), template_id.as_deref()),
        Command::CloseSession {} => close_session(s, ctx),
        Command::AddToDirectory {} => super::contact::add_to_directory(s, ctx),
        Command::LinkContact { contact_id } => super::contact::link_contact(s, ctx, contact_id),
        Command::DisconnectContact {} => super::contact::disconnect_contact(s, ctx),
        Command::AddContactDetail { detail, value } => {
            super::contact::add_contact_detail(s, ctx, *detail, value)
        }
        Command::RemoveContact {} => super::contact::remove_contact(s, ctx),
        Command::Redirect {
            operator_id,
            group,
            note,
        } => super::redirect::redirect(
            s,
            ctx,
            operator_id.as_deref(),
            group.as_deref(),
            note.as_deref(),
        ),
        Command::Claim {} => super::redirect::claim(s, ctx),
        Command::Anonymize {} => super::anonymize::anonymize(s, ctx),
        Command::StarTemplate { .. }
        | Command::UnstarTemplate { .. }
        | Command::DefineTag { .. }
        | Command::AddAutotagRule { .. }
        | Command::RemoveAutotagRule { .. }
        | Command::CreateTemplate { .. }
        | Command::UpdateTemplate { .. }
        | Command::DeleteTemplate { .. } => Err(Rejection::invalid(
            "kind",
            format!("{} is not a command for session streams", cmd.kind()),
        )),
    }
}

/// Folds one event into a session. Events that do not fit the state (a missing note, an
/// operator-feed event) are ignored: the log is the truth and a fold must always finish.
pub fn apply(s: &mut SessionState, env: &Envelope) {
    let actor = &env.actor.id;
    match &env.event {
        Event::SessionOpened {
            channel,
            name,
            phone,
            email,
            parameters,
            owner,
        } => {
            s.status = SessionStatus::Open;
            s.channel = channel.clone();
            s.owner = Some(owner.clone());
            s.client.name = name.clone();
            s.client.phone = phone.clone();
            s.client.email = email.clone();
            s.parameters = parameters
                .iter()
                .map(|(key, p)| {
                    let param = Parameter {
                        value: p.value.clone(),
                        source: ParameterSource::Preset,
                        read_only: p.read_only,
                        changed_by: actor.clone(),
                        changed_at: env.at,
                    };
                    (key.clone(), param)
                })
                .collect();
        }
        Event::ClientInfoChanged { name, phone, email } => {
            if let Some(v) = name {
                s.client.name = v.clone();
            }
            if let Some(v) = phone {
                s.client.phone = v.clone();
            }
            if let Some(v) = email {
                s.client.email = v.clone();
            }
        }
        Event::CollaboratorInvited { operator_id }
            if !s
                .collaborators
                .iter()
                .any(|c| &c.operator_id == operator_id) =>
        {
            s.collaborators.push(Collaborator {
                operator_id: operator_id.clone(),
                status: CollaboratorStatus::Invited,
                invited_by: actor.clone(),
            });
        }
        Event::InvitationAccepted { operator_id } => {
            if let Some(c) = s
                .collaborators
                .iter_mut()
                .find(|c| &c.operator_id == operator_id)
            {
                c.status = CollaboratorStatus::Joined;
            }
        }
        Event::InvitationDeclined { operator_id }
        | Event::InvitationCancelled { operator_id }
        | Event::CollaboratorLeft { operator_id }
        | Event::CollaboratorRemoved { operator_id } => {
            s.collaborators.retain(|c| &c.operator_id != operator_id);
        }
        Event::ParameterSet {
            key,
            value,
            source,
            read_only,
        } => {
            s.parameters.insert(
                key.clone(),
                Parameter {
                    value: value.clone(),
                    source: *source,
                    read_only: *read_only,
                    changed_by: actor.clone(),
                    changed_at: env.at,
                },
            );
        }
        Event::ParameterRemoved { key } => {
            s.parameters.remove(key);
        }
        Event::TagAdded {
            tag,
            source,
            rule_id,
        } => s.tags.push(Tag {
            tag: tag.clone(),
            source: source.clone(),
            added_by: actor.clone(),
            rule_id: rule_id.clone(),
        }),
        Event::ContactLinked { contact_id } => s.contact_id = Some(contact_id.clone()),
        Event::ContactUnlinked { .. } => s.contact_id = None,
        Event::SessionRedirected { to, .. } => s.owner = Some(to.clone()),
        Event::SessionClaimed { operator_id } => {
            s.owner = Some(Owner::Operator {
                operator_id: operator_id.clone(),
            })
        }
        Event::SessionAnonymized => super::anonymize::redact_state(s),
        Event::TagRemoved { tag } => s.tags.retain(|t| &t.tag != tag),
        Event::NoteAdded { note_id, text } if !s.notes.iter().any(|n| &n.note_id == note_id) => {
            s.notes.push(Note {
                note_id: note_id.clone(),
                author: actor.clone(),
                text: text.clone(),
                at: env.at,
            });
        }
        Event::NoteEdited { note_id, text } => {
            if let Some(n) = s.notes.iter_mut().find(|n| &n.note_id == note_id) {
                n.text = text.clone();
                n.at = env.at;
            }
        }
        Event::NoteDeleted { note_id } => s.notes.retain(|n| &n.note_id != note_id),
        Event::MessagePosted { .. } => s.messages += 1,
        Event::SessionClosed => s.status = SessionStatus::Closed,
        // Other stream kinds' events never belong here.
        _ => {}
    }
}

/// Read access: the platform, supervisors and admins read every session (even one not opened
/// yet, so they can watch it open); an operator reads the sessions it owns, those owned by one
/// of its groups, and those it is invited to or has joined.
///
/// A refused operator learns that an unopened session does not exist (`not_found`) rather than
/// that it is forbidden, so ids cannot be probed before a session opens.
pub fn can_read(s: &SessionState, who: &Principal) -> Result<(), Rejection> {
    if is_privileged(who) {
        return Ok(());
    }
    let owns = match &s.owner {
        Some(Owner::Operator { operator_id }) => operator_id == &who.id,
        Some(Owner::Group { group }) => who.groups.iter().any(|g| g == group),
        None => false,
    };
    if owns || collaborator(s, &who.id).is_some() {
        return Ok(());
    }
    if s.status == SessionStatus::New {
        return Err(Rejection::not_found("session does not exist"));
    }
    Err(Rejection::forbidden(format!(
        "operator {} is not the owner or a collaborator of this session",
        shown(&who.id)
    )))
}

// ---------------------------------------------------------------------------------------------
// Gates shared by the commands.
// ---------------------------------------------------------------------------------------------

/// The platform, supervisors and admins may do everything an owner may.
fn is_privileged(who: &Principal) -> bool {
    who.role == Role::Service || who.role.is_supervisor()
}

fn is_owner_operator(s: &SessionState, id: &str) -> bool {
    matches!(&s.owner, Some(Owner::Operator { operator_id }) if operator_id == id)
}

fn collaborator<'s>(s: &'s SessionState, id: &str) -> Option<&'s Collaborator> {
    s.collaborators.iter().find(|c| c.operator_id == id)
}

/// Write access: the platform, supervisors, admins, the owner operator and joined
/// collaborators. Invited collaborators and members of an owning group only read: a group
/// member edits once it has claimed the session, an invitee once it has accepted.
pub(super) fn can_write(s: &SessionState, who: &Principal) -> Result<(), Rejection> {
    if is_privileged(who) || is_owner_operator(s, &who.id) {
        return Ok(());
    }
    let id = shown(&who.id);
    match collaborator(s, &who.id).map(|c| c.status) {
        Some(CollaboratorStatus::Joined) => Ok(()),
        Some(CollaboratorStatus::Invited) => Err(Rejection::forbidden(format!(
            "operator {id} has not accepted the invitation yet; an invited collaborator may only read this session"
        ))),
        None => match &s.owner {
            Some(Owner::Group { group }) if who.groups.iter().any(|g| g == group) => {
                Err(Rejection::forbidden(format!(
                    "operator {id} may read this session of group {} but not edit it",
                    shown(group)
                )))
            }
            _ => Err(Rejection::forbidden(format!(
                "operator {id} is not the owner or a joined collaborator of this session"
            ))),
        },
    }
}

/// Owner operator, supervisors, admins and the platform: who may close the session and
/// remove collaborators.
fn can_manage(s: &SessionState, who: &Principal, what: &str) -> Result<(), Rejection> {
    if is_privileged(who) || is_owner_operator(s, &who.id) {
        Ok(())
    } else {
        Err(Rejection::forbidden(format!(
            "only the session's owner, supervisors, admins and the platform may {what}"
        )))
    }
}

fn allowed_after_close(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::SetParameter { .. }
            | Command::RemoveParameter { .. }
            | Command::AddTag { .. }
            | Command::RemoveTag { .. }
            | Command::AddNote { .. }
            | Command::EditNote { .. }
            | Command::DeleteNote { .. }
            | Command::Anonymize {}
    )
}

fn check_status(s: &SessionState, ctx: &Ctx<'_>, cmd: &Command) -> Result<(), Rejection> {
    // open_session is the one command that wants a new session; it checks that itself, after
    // the permission, so that only those who may open learn that it is already open.
    if matches!(cmd, Command::OpenSession { .. }) {
        return Ok(());
    }
    match s.status {
        SessionStatus::New => Err(Rejection::not_found(format!("{} is not open", ctx.stream))),
        // Anything written after anonymisation would escape it: an anonymised session is frozen.
        SessionStatus::Closed if s.anonymized && !matches!(cmd, Command::Anonymize {}) => Err(
            Rejection::closed("session is anonymised; it no longer changes"),
        ),
        SessionStatus::Closed if !allowed_after_close(cmd) => Err(Rejection::closed(
            "session is closed; only parameters, tags and notes may change",
        )),
        _ => Ok(()),
    }
}

fn already_open(s: &SessionState, ctx: &Ctx<'_>) -> Rejection {
    let message = match s.status {
        SessionStatus::Closed => format!("{} was already opened and is closed", ctx.stream),
        _ => format!("{} is already open", ctx.stream),
    };
    Rejection::invalid("kind", message)
}

// ---------------------------------------------------------------------------------------------
// Field checks. Each names the field and, where there is one, the limit.
// ---------------------------------------------------------------------------------------------

/// Client values can be huge or hold control characters; messages quote at most this much.
const SHOWN_CHARS: usize = 64;

/// A client-supplied string made safe to quote in a message: cut short and debug-escaped.
pub(super) fn shown(s: &str) -> String {
    let mut cut: String = s.chars().take(SHOWN_CHARS).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

pub(super) fn check_len(
    field: &str,
    what: &str,
    value: &str,
    limit: usize,
) -> Result<(), Rejection> {
    let n = value.chars().count();
    if n > limit {
        return Err(Rejection::too_large(
            field,
            format!("{what} is {n} characters; the limit is {limit}"),
        ));
    }
    Ok(())
}

/// Refuses control characters other than those in `allowed`.
pub(super) fn check_controls(
    field: &str,
    what: &str,
    value: &str,
    allowed: &[char],
) -> Result<(), Rejection> {
    match value
        .chars()
        .find(|c| c.is_control() && !allowed.contains(c))
    {
        Some(c) => Err(Rejection::invalid(
            field,
            format!("{what} contains the control character {c:?}"),
        )),
        None => Ok(()),
    }
}

/// Text that must say something: not blank, within `limit`, only the line-breaking and tab
/// control characters (notes and messages are multi-line).
fn check_text(field: &str, what: &str, text: &str, limit: usize) -> Result<(), Rejection> {
    check_len(field, what, text, limit)?;
    check_controls(field, what, text, &['\n', '\r', '\t'])?;
    if text.trim().is_empty() {
        return Err(Rejection::invalid(field, format!("{what} is empty")));
    }
    Ok(())
}

/// A short name (channel, group): 1..=`id_chars` characters, no control characters.
fn check_name(field: &str, what: &str, value: &str, limits: &Limits) -> Result<(), Rejection> {
    if value.is_empty() {
        return Err(Rejection::invalid(field, format!("{what} is empty")));
    }
    check_len(field, what, value, limits.id_chars)?;
    check_controls(field, what, value, &[])
}

/// An operator id must be usable as `operator/<id>`, since invitations are written there.
fn check_operator_id(field: &str, id: &str, limits: &Limits) -> Result<(), Rejection> {
    check_len(field, "operator id", id, limits.id_chars)?;
    if !valid_id(id) {
        return Err(Rejection::invalid(
            field,
            format!(
                "operator id {} must be 1 to 128 characters of A-Z a-z 0-9 - _ . :",
                shown(id)
            ),
        ));
    }
    Ok(())
}

fn check_client_field(
    field: &str,
    what: &str,
    value: &str,
    limits: &Limits,
) -> Result<(), Rejection> {
    check_len(field, what, value, limits.client_field_chars)?;
    check_controls(field, what, value, &[])
}

pub(super) fn check_email(field: &str, email: &str) -> Result<(), Rejection> {
    if email.is_empty() {
        return Ok(());
    }
    let bad = |why: &str| Err(Rejection::invalid(field, format!("email {why}")));
    if email.chars().any(char::is_whitespace) {
        return bad("may not contain spaces");
    }
    let mut parts = email.split('@');
    let (local, domain) = match (parts.next(), parts.next(), parts.next()) {
        (Some(local), Some(domain), None) => (local, domain),
        _ => return bad("must contain exactly one @"),
    };
    if local.is_empty() {
        return bad("needs a name before the @");
    }
    if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
        return bad("needs a domain such as example.com after the @");
    }
    Ok(())
}

pub(super) fn check_phone(field: &str, phone: &str) -> Result<(), Rejection> {
    if phone.is_empty() {
        return Ok(());
    }
    let bad = |why: &str| Err(Rejection::invalid(field, format!("phone {why}")));
    let allowed =
        |c: char| c.is_ascii_digit() || matches!(c, ' ' | '+' | '(' | ')' | '-' | '.' | '/');
    if !phone.chars().all(allowed) {
        return bad("may only contain digits, spaces and + ( ) - . /");
    }
    if phone.chars().skip(1).any(|c| c == '+') {
        return bad("may only have + as its first character");
    }
    if phone.chars().filter(char::is_ascii_digit).count() < 3 {
        return bad("needs at least 3 digits");
    }
    Ok(())
}

fn check_parameter_key(field: &str, key: &str, limits: &Limits) -> Result<(), Rejection> {
    check_len(field, "parameter key", key, limits.parameter_key_chars)?;
    check_controls(field, "parameter key", key, &[])?;
    if key.trim().is_empty() {
        return Err(Rejection::invalid(field, "parameter key is empty"));
    }
    Ok(())
}

fn check_parameter_value(field: &str, value: &str, limits: &Limits) -> Result<(), Rejection> {
    check_len(
        field,
        "parameter value",
        value,
        limits.parameter_value_chars,
    )?;
    check_controls(field, "parameter value", value, &['\t'])
}

// ---------------------------------------------------------------------------------------------
// Commands.
// ---------------------------------------------------------------------------------------------

fn one(event: Event) -> Result<Decision, Rejection> {
    Ok(Decision {
        events: vec![event],
        ..Decision::default()
    })
}

/// The invitee's feed. Ids were checked against `valid_id` when invited, so this only fails
/// on a corrupt state; it is still a rejection rather than a panic.
fn feed(operator_id: &str) -> Result<StreamName, Rejection> {
    StreamName::operator(operator_id).map_err(|e| Rejection::invalid("operator_id", e.to_string()))
}

fn open_session(
    s: &SessionState,
    ctx: &Ctx<'_>,
    channel: &str,
    client: &ClientInfoInput,
    parameters: &BTreeMap<String, PresetParameter>,
    owner: &Owner,
) -> Result<Decision, Rejection> {
    let limits = ctx.limits;
    if !matches!(ctx.principal.role, Role::Service | Role::Admin) {
        return Err(Rejection::forbidden(
            "only the platform and admins may open a session",
        ));
    }
    if s.status != SessionStatus::New {
        return Err(already_open(s, ctx));
    }
    check_name("channel", "channel", channel, limits)?;
    check_client_field("client.name", "name", &client.name, limits)?;
    check_client_field("client.phone", "phone", &client.phone, limits)?;
    check_client_field("client.email", "email", &client.email, limits)?;
    check_phone("client.phone", &client.phone)?;
    check_email("client.email", &client.email)?;
    if parameters.len() > limits.parameters_per_session {
        return Err(Rejection::too_large(
            "parameters",
            format!(
                "{} parameters given; a session holds at most {}",
                parameters.len(),
                limits.parameters_per_session
            ),
        ));
    }
    for (key, p) in parameters {
        check_parameter_key("parameters", key, limits)?;
        check_parameter_value(&format!("parameters.{key}.value"), &p.value, limits)?;
    }
    match owner {
        Owner::Operator { operator_id } => check_operator_id("owner", operator_id, limits)?,
        Owner::Group { group } => check_name("owner", "group", group, limits)?,
    }
    let mut d = one(Event::SessionOpened {
        channel: channel.to_owned(),
        name: client.name.clone(),
        phone: client.phone.clone(),
        email: client.email.clone(),
        parameters: parameters.clone(),
        owner: owner.clone(),
    })?;
    // A session opened into a group waits there: its known members are told, as on a redirect.
    if let Owner::Group { group } = owner {
        for member in ctx.world.group_members(group) {
            if let Ok(feed) = StreamName::operator(&member) {
                d.others.push((
                    feed,
                    Event::AssignmentReceived {
                        session_id: ctx.stream.id().to_owned(),
                        by: ctx.principal.id.clone(),
                        note: None,
                        group: Some(group.clone()),
                    },
                ));
            }
        }
    }
    Ok(d)
}

fn set_client_info(
    s: &SessionState,
    ctx: &Ctx<'_>,
    name: &Option<String>,
    phone: &Option<String>,
    email: &Option<String>,
) -> Result<Decision, Rejection> {
    let limits = ctx.limits;
    can_write(s, ctx.principal)?;
    if name.is_none() && phone.is_none() && email.is_none() {
        return Err(Rejection::invalid(
            "name",
            "set_client_info needs at least one of name, phone, email",
        ));
    }
    for (field, value) in [("name", name), ("phone", phone), ("email", email)] {
        if let Some(v) = value {
            check_client_field(field, field, v, limits)?;
        }
    }
    if let Some(v) = phone {
        check_phone("phone", v)?;
    }
    if let Some(v) = email {
        check_email("email", v)?;
    }
    // Only what really changes is recorded, so the history shows edits, not keystrokes.
    let changed = |new: &Option<String>, old: &str| new.as_ref().filter(|v| *v != old).cloned();
    let name = changed(name, &s.client.name);
    let phone = changed(phone, &s.client.phone);
    let email = changed(email, &s.client.email);
    if name.is_none() && phone.is_none() && email.is_none() {
        return Ok(Decision::default());
    }
    let event = Event::ClientInfoChanged { name, phone, email };
    // While linked, the contact follows the client information, in the same atomic append.
    let others = super::contact::client_info_side(s, ctx, &event)
        .into_iter()
        .collect();
    Ok(Decision {
        events: vec![event],
        others,
        created: None,
    })
}

fn invite(s: &SessionState, ctx: &Ctx<'_>, operator_id: &str) -> Result<Decision, Rejection> {
    let limits = ctx.limits;
    can_write(s, ctx.principal)?;
    check_operator_id("operator_id", operator_id, limits)?;
    let id = shown(operator_id);
    if is_owner_operator(s, operator_id) {
        return Err(Rejection::invalid(
            "operator_id",
            format!("operator {id} owns this session"),
        ));
    }
    match collaborator(s, operator_id).map(|c| c.status) {
        Some(CollaboratorStatus::Invited) => {
            return Err(Rejection::invalid(
                "operator_id",
                format!("operator {id} is already invited"),
            ))
        }
        Some(CollaboratorStatus::Joined) => {
            return Err(Rejection::invalid(
                "operator_id",
                format!("operator {id} is already a collaborator"),
            ))
        }
        None => {}
    }
    if s.collaborators.len() >= limits.collaborators_per_session {
        return Err(Rejection::too_large(
            "operator_id",
            format!(
                "a session holds at most {} collaborators (invited or joined)",
                limits.collaborators_per_session
            ),
        ));
    }
    Ok(Decision {
        events: vec![Event::CollaboratorInvited {
            operator_id: operator_id.to_owned(),
        }],
        others: vec![(
            feed(operator_id)?,
            Event::InvitationReceived {
                session_id: ctx.stream.id().to_owned(),
                by: ctx.principal.id.clone(),
            },
        )],
        created: None,
    })
}

/// The invitee's answer: only the invitee itself can give it, so there is no permission to
/// check beyond having a pending invitation.
fn answer_invitation(s: &SessionState, ctx: &Ctx<'_>, accept: bool) -> Result<Decision, Rejection> {
    let who = ctx.principal;
    match collaborator(s, &who.id) {
        Some(c) if c.status == CollaboratorStatus::Invited => {}
        _ => {
            return Err(Rejection::not_found(format!(
                "no pending invitation for {}",
                shown(&who.id)
            )))
        }
    }
    let operator_id = who.id.clone();
    let (event, outcome) = if accept {
        let e = Event::InvitationAccepted {
            operator_id: operator_id.clone(),
        };
        (e, InvitationOutcome::Accepted)
    } else {
        let e = Event::InvitationDeclined {
            operator_id: operator_id.clone(),
        };
        (e, InvitationOutcome::Declined)
    };
    Ok(Decision {
        events: vec![event],
        others: vec![(
            feed(&operator_id)?,
            Event::InvitationEnded {
                session_id: ctx.stream.id().to_owned(),
                outcome,
            },
        )],
        created: None,
    })
}

fn cancel_invitation(
    s: &SessionState,
    ctx: &Ctx<'_>,
    operator_id: &str,
) -> Result<Decision, Rejection> {
    let who = ctx.principal;
    let managing = is_privileged(who) || is_owner_operator(s, &who.id);
    // An inviter that is not a manager cancels as a joined collaborator: once it has left it
    // no longer edits this session, so it cannot withdraw invitations either. Checking this
    // before the lookup keeps outsiders from learning who is invited.
    if !managing {
        can_write(s, who)?;
    }
    let pending = collaborator(s, operator_id)
        .filter(|c| c.status == CollaboratorStatus::Invited)
        .ok_or_else(|| {
            Rejection::not_found(format!("no pending invitation for {}", shown(operator_id)))
        })?;
    if !managing && pending.invited_by != who.id {
        return Err(Rejection::forbidden(
            "only the inviter, the session's owner, supervisors, admins and the platform may cancel an invitation",
        ));
    }
    Ok(Decision {
        events: vec![Event::InvitationCancelled {
            operator_id: operator_id.to_owned(),
        }],
        others: vec![(
            feed(operator_id)?,
            Event::InvitationEnded {
                session_id: ctx.stream.id().to_owned(),
                outcome: InvitationOutcome::Cancelled,
            },
        )],
        created: None,
    })
}

fn leave(s: &SessionState, who: &Principal) -> Result<Decision, Rejection> {
    match collaborator(s, &who.id) {
        Some(c) if c.status == CollaboratorStatus::Joined => one(Event::CollaboratorLeft {
            operator_id: who.id.clone(),
        }),
        _ => Err(Rejection::not_found(
            "you are not a collaborator of this session",
        )),
    }
}

fn remove_collaborator(
    s: &SessionState,
    ctx: &Ctx<'_>,
    operator_id: &str,
) -> Result<Decision, Rejection> {
    can_manage(s, ctx.principal, "remove a collaborator")?;
    let c = collaborator(s, operator_id).ok_or_else(|| {
        Rejection::not_found(format!(
            "operator {} is not a collaborator of this session",
            shown(operator_id)
        ))
    })?;
    let mut decision = Decision {
        events: vec![Event::CollaboratorRemoved {
            operator_id: operator_id.to_owned(),
        }],
        ..Decision::default()
    };
    // A still-pending invitation would otherwise stay on the invitee's feed forever.
    if c.status == CollaboratorStatus::Invited {
        decision.others.push((
            feed(operator_id)?,
            Event::InvitationEnded {
                session_id: ctx.stream.id().to_owned(),
                outcome: InvitationOutcome::Cancelled,
            },
        ));
    }
    Ok(decision)
}

fn set_parameter(
    s: &SessionState,
    who: &Principal,
    limits: &Limits,
    key: &str,
    value: &str,
    read_only: Option<bool>,
) -> Result<Decision, Rejection> {
    can_write(s, who)?;
    let service = who.role == Role::Service;
    if read_only.is_some() && !service {
        return Err(Rejection::forbidden(
            "read_only is set by the platform only",
        ));
    }
    check_parameter_key("key", key, limits)?;
    check_parameter_value("value", value, limits)?;
    let existing = s.parameters.get(key);
    match existing {
        Some(p) if p.read_only && !service => {
            return Err(Rejection::forbidden(format!(
                "parameter {} is read-only",
                shown(key)
            )))
        }
        None if s.parameters.len() >= limits.parameters_per_session => {
            return Err(Rejection::too_large(
                "key",
                format!(
                    "a session holds at most {} parameters",
                    limits.parameters_per_session
                ),
            ))
        }
        _ => {}
    }
    let source = if service {
        ParameterSource::Preset
    } else {
        ParameterSource::Operator
    };
    let read_only = read_only.unwrap_or_else(|| existing.is_some_and(|p| p.read_only));
    one(Event::ParameterSet {
        key: key.to_owned(),
        value: value.to_owned(),
        source,
        read_only,
    })
}

fn remove_parameter(s: &SessionState, who: &Principal, key: &str) -> Result<Decision, Rejection> {
    can_write(s, who)?;
    let p = s
        .parameters
        .get(key)
        .ok_or_else(|| Rejection::not_found(format!("parameter {} does not exist", shown(key))))?;
    if p.read_only && who.role != Role::Service {
        return Err(Rejection::forbidden(format!(
            "parameter {} is read-only",
            shown(key)
        )));
    }
    one(Event::ParameterRemoved {
        key: key.to_owned(),
    })
}

/// Tags are compared without case, so `VIP` and `vip` are one tag on a session.
fn find_tag<'s>(s: &'s SessionState, tag: &str) -> Option<&'s Tag> {
    // The same folding as the catalog and auto-tags: "Café" and "cafe" are one tag.
    let wanted = super::text::fold(tag);
    s.tags.iter().find(|t| super::text::fold(&t.tag) == wanted)
}

/// Adds a tag by hand. A tag the company catalog does not know enters it, with the default
/// colours, in the same atomic append (see [`super::catalog::tag_side`]).
fn add_tag(s: &SessionState, ctx: &Ctx<'_>, tag: &str) -> Result<Decision, Rejection> {
    let limits = ctx.limits;
    can_write(s, ctx.principal)?;
    let tag = tag.trim();
    if tag.is_empty() {
        return Err(Rejection::invalid("tag", "tag is empty"));
    }
    check_len("tag", "tag", tag, limits.tag_chars)?;
    check_controls("tag", "tag", tag, &[])?;
    if find_tag(s, tag).is_some() {
        return Ok(Decision::default());
    }
    if s.tags.len() >= limits.tags_per_session {
        return Err(Rejection::too_large(
            "tag",
            format!("a session holds at most {} tags", limits.tags_per_session),
        ));
    }
    Ok(Decision {
        events: vec![Event::TagAdded {
            tag: tag.to_owned(),
            source: TagSource::Manual,
            rule_id: None,
        }],
        others: super::catalog::tag_side(ctx, tag).into_iter().collect(),
        created: None,
    })
}

fn remove_tag(s: &SessionState, who: &Principal, tag: &str) -> Result<Decision, Rejection> {
    can_write(s, who)?;
    let stored = find_tag(s, tag.trim()).ok_or_else(|| {
        Rejection::not_found(format!("tag {} is not on this session", shown(tag.trim())))
    })?;
    one(Event::TagRemoved {
        tag: stored.tag.clone(),
    })
}

fn add_note(s: &SessionState, ctx: &Ctx<'_>, text: &str) -> Result<Decision, Rejection> {
    let limits = ctx.limits;
    can_write(s, ctx.principal)?;
    check_text("text", "note text", text, limits.note_chars)?;
    if s.notes.len() >= limits.notes_per_session {
        return Err(Rejection::too_large(
            "text",
            format!("a session holds at most {} notes", limits.notes_per_session),
        ));
    }
    // Derived from the seq the event gets, so replays and retries name the note the same.
    let note_id = format!("n{}", ctx.next_seq);
    Ok(Decision {
        events: vec![Event::NoteAdded {
            note_id: note_id.clone(),
            text: text.to_owned(),
        }],
        others: Vec::new(),
        created: Some(note_id),
    })
}

/// Who may change a note: its author while it still edits the session, and whoever may edit
/// every session. Outsiders are refused before the lookup so they cannot probe note ids.
fn find_own_note<'s>(
    s: &'s SessionState,
    who: &Principal,
    note_id: &str,
) -> Result<&'s Note, Rejection> {
    let privileged = is_privileged(who);
    if !privileged {
        can_write(s, who)?;
    }
    let note = s
        .notes
        .iter()
        .find(|n| n.note_id == note_id)
        .ok_or_else(|| Rejection::not_found(format!("note {} does not exist", shown(note_id))))?;
    if !privileged && note.author != who.id {
        return Err(Rejection::forbidden(
            "only a note's author, supervisors, admins and the platform may change it",
        ));
    }
    Ok(note)
}

fn edit_note(
    s: &SessionState,
    who: &Principal,
    limits: &Limits,
    note_id: &str,
    text: &str,
) -> Result<Decision, Rejection> {
    let note = find_own_note(s, who, note_id)?;
    check_text("text", "note text", text, limits.note_chars)?;
    one(Event::NoteEdited {
        note_id: note.note_id.clone(),
        text: text.to_owned(),
    })
}

fn delete_note(s: &SessionState, who: &Principal, note_id: &str) -> Result<Decision, Rejection> {
    let note = find_own_note(s, who, note_id)?;
    one(Event::NoteDeleted {
        note_id: note.note_id.clone(),
    })
}

/// Posts a transcript message: its own text, or a catalog template's (`template_id`, which
/// the event records). The auto-tag rules' tags follow the message in the same append (see
/// [`super::catalog::autotags`]), for client and operator messages alike.
fn post_message(
    s: &SessionState,
    ctx: &Ctx<'_>,
    from: MessageFrom,
    text: Option<&str>,
    template_id: Option<&str>,
) -> Result<Decision, Rejection> {
    let who = ctx.principal;
    match from {
        MessageFrom::Client if who.role != Role::Service => {
            return Err(Rejection::forbidden(
                "only the platform posts messages from the client",
            ))
        }
        MessageFrom::Client => {}
        MessageFrom::Operator => can_write(s, who)?,
    }
    let (text, template_id) = match (text, template_id) {
        (Some(_), Some(_)) => {
            return Err(Rejection::invalid(
                "text",
                "give text or template_id, not both",
            ))
        }
        (None, None) => return Err(Rejection::invalid("text", "give text or template_id")),
        (None, Some(id)) => (super::catalog::template_text(ctx, id)?, Some(id.to_owned())),
        (Some(text), None) => (text.to_owned(), None),
    };
    check_text("text", "message text", &text, ctx.limits.message_chars)?;
    let tags = super::catalog::autotags(s, ctx, &text);
    let mut events = Vec::with_capacity(1 + tags.len());
    events.push(Event::MessagePosted {
        from,
        text,
        template_id,
    });
    events.extend(tags);
    Ok(Decision {
        events,
        ..Decision::default()
    })
}

fn close_session(s: &SessionState, ctx: &Ctx<'_>) -> Result<Decision, Rejection> {
    can_manage(s, ctx.principal, "close the session")?;
    // After close nobody may answer an invitation, so pending ones are withdrawn in the same
    // append; otherwise they would stay on the invitees' feeds forever.
    let mut decision = Decision::default();
    for c in &s.collaborators {
        if c.status == CollaboratorStatus::Invited {
            decision.events.push(Event::InvitationCancelled {
                operator_id: c.operator_id.clone(),
            });
            decision.others.push((
                feed(&c.operator_id)?,
                Event::InvitationEnded {
                    session_id: ctx.stream.id().to_owned(),
                    outcome: InvitationOutcome::Cancelled,
                },
            ));
        }
    }
    // Nobody can claim a closed session: the group's members drop it from their feeds.
    if let Some(Owner::Group { group }) = &s.owner {
        for member in ctx.world.group_members(group) {
            decision.others.push((
                feed(&member)?,
                Event::AssignmentEnded {
                    session_id: ctx.stream.id().to_owned(),
                },
            ));
        }
    }
    decision.events.push(Event::SessionClosed);
    Ok(decision)
}
