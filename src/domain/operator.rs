//! `operator/<id>`: one operator's own feed.
//!
//! This module owns who may read a feed ([`can_read`]) and how its events fold into an
//! [`OperatorState`] ([`apply`]). The feed holds the operator's pending invitations and
//! assignments, whose events are written by session commands (see [`super::session`]) in the
//! same atomic append as the session's own events, so a feed never disagrees with the sessions
//! it mirrors; and its starred templates, the one thing a client changes on its own feed
//! ([`decide`]: `star_template`, `unstar_template`).

use super::{Ctx, Decision, Principal, Rejection};
use copanel_protocol::{Assignment, Command, Envelope, Event, Invitation, OperatorState, Role};

/// Decides a command on an operator feed: starring and unstarring templates (the rules read
/// the catalog, see [`super::catalog::star_template`]).
pub fn decide(s: &OperatorState, ctx: &Ctx<'_>, cmd: &Command) -> Result<Decision, Rejection> {
    match cmd {
        Command::StarTemplate { template_id } => {
            super::catalog::star_template(s, ctx, template_id, true)
        }
        Command::UnstarTemplate { template_id } => {
            super::catalog::star_template(s, ctx, template_id, false)
        }
        _ => Err(Rejection::invalid(
            "kind",
            format!("{} is not a command for operator streams", cmd.kind()),
        )),
    }
}

/// Folds one event into a feed. Session events are ignored: they never belong here, and a
/// fold must always finish.
pub fn apply(s: &mut OperatorState, env: &Envelope) {
    match &env.event {
        Event::InvitationReceived { session_id, by } => {
            // One pending invitation per session: a repeated one replaces the old and moves to
            // the end, which keeps the list ordered oldest first.
            s.invitations.retain(|i| &i.session_id != session_id);
            s.invitations.push(Invitation {
                session_id: session_id.clone(),
                by: by.clone(),
                at: env.at,
            });
        }
        Event::InvitationEnded { session_id, .. } => {
            s.invitations.retain(|i| &i.session_id != session_id);
        }
        Event::AssignmentReceived {
            session_id,
            by,
            note,
            group,
        } => {
            s.assignments.retain(|a| &a.session_id != session_id);
            s.assignments.push(Assignment {
                session_id: session_id.clone(),
                by: by.clone(),
                note: note.clone(),
                group: group.clone(),
                at: env.at,
            });
        }
        Event::AssignmentEnded { session_id } => {
            s.assignments.retain(|a| &a.session_id != session_id);
        }
        Event::TemplateStarred { template_id } if !s.starred.contains(template_id) => {
            s.starred.push(template_id.clone());
        }
        Event::TemplateUnstarred { template_id } => s.starred.retain(|t| t != template_id),
        _ => {}
    }
}

/// Read access: an operator reads only its own feed; the platform reads every feed. Supervisors
/// do not: the feed is personal.
pub fn can_read(operator_id: &str, who: &Principal) -> Result<(), Rejection> {
    if who.id == operator_id || who.role == Role::Service {
        Ok(())
    } else {
        Err(Rejection::forbidden(format!(
            "operator/{operator_id} is another operator's feed"
        )))
    }
}
