//! Per-session summaries, for `query sessions`.
//!
//! One record per opened session (`IndexKind::Sessions`, key = the session id): what the
//! sessions list shows and what decides who sees a session there (status, channel, owner,
//! client name, collaborators). The writer folds every staged session event through
//! [`SessionIndex::on_event`], which writes the new summary in the same atomic batch as the
//! event, so the list never disagrees with the log. Everything here can be rebuilt by folding
//! the session streams.
//!
//! Never: hold personal data past anonymisation (`session_anonymized` redacts the client name
//! here too).

use crate::domain::anonymize::REDACTED;
use crate::store::{IndexKind, IndexWrite, Store, StoreResult};
use copanel_protocol::{CollaboratorStatus, Envelope, Event, Owner, SessionStatus, StreamKind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Summaries kept in memory beyond this many are dropped (except those this batch wrote) and
/// read again from the store on next use.
const MAX_CACHED: usize = 100_000;

/// What `query sessions` needs of one session. Stored as a MessagePack map, so fields can be
/// added later with `#[serde(default)]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// `open` or `closed`.
    pub status: SessionStatus,
    /// The channel.
    pub channel: String,
    /// The current owner.
    pub owner: Option<Owner>,
    /// The client's name (the redaction marker once anonymised).
    pub client_name: String,
    /// Collaborators and whether they joined, in invitation order.
    #[serde(default)]
    pub collaborators: Vec<(String, CollaboratorStatus)>,
}

impl SessionSummary {
    /// Decodes a stored summary.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        rmp_serde::from_slice(bytes).ok()
    }

    /// Folds one session event. Returns whether the summary changed (only then is it written).
    pub fn fold(&mut self, event: &Event) -> bool {
        match event {
            Event::SessionOpened {
                channel,
                name,
                owner,
                ..
            } => {
                self.status = SessionStatus::Open;
                self.channel = channel.clone();
                self.owner = Some(owner.clone());
                self.client_name = name.clone();
            }
            Event::ClientInfoChanged { name: Some(n), .. } => self.client_name = n.clone(),
            Event::CollaboratorInvited { operator_id } => {
                if self.collaborators.iter().any(|(id, _)| id == operator_id) {
                    return false;
                }
                self.collaborators
                    .push((operator_id.clone(), CollaboratorStatus::Invited));
            }
            Event::InvitationAccepted { operator_id } => {
                for (id, status) in &mut self.collaborators {
                    if id == operator_id {
                        *status = CollaboratorStatus::Joined;
                    }
                }
            }
            Event::InvitationDeclined { operator_id }
            | Event::InvitationCancelled { operator_id }
            | Event::CollaboratorLeft { operator_id }
            | Event::CollaboratorRemoved { operator_id } => {
                self.collaborators.retain(|(id, _)| id != operator_id);
            }
            Event::SessionRedirected { to, .. } => self.owner = Some(to.clone()),
            Event::SessionClaimed { operator_id } => {
                self.owner = Some(Owner::Operator {
                    operator_id: operator_id.clone(),
                })
            }
            Event::SessionClosed => self.status = SessionStatus::Closed,
            Event::SessionAnonymized => {
                if !self.client_name.is_empty() {
                    self.client_name = REDACTED.to_owned();
                }
            }
            _ => return false,
        }
        true
    }
}

/// Cached session summaries: the current value of every summary this writer touched, so that
/// several events of one batch build on each other before the batch reaches the store.
#[derive(Default)]
pub struct SessionIndex {
    /// (company, session id) → summary.
    cache: HashMap<(Arc<str>, String), SessionSummary>,
}

impl SessionIndex {
    /// Derived writes for one event: the session's new summary, when the event changes it.
    pub fn on_event(
        &mut self,
        store: &dyn Store,
        company: &Arc<str>,
        env: &Envelope,
        out: &mut Vec<IndexWrite>,
    ) -> StoreResult<()> {
        if env.stream.kind() != StreamKind::Session {
            return Ok(());
        }
        let id = env.stream.id();
        let key = (company.clone(), id.to_owned());
        if !self.cache.contains_key(&key) {
            if self.cache.len() >= MAX_CACHED {
                self.shrink(out);
            }
            let stored = store
                .index_get(company, IndexKind::Sessions, id)?
                .and_then(|b| SessionSummary::decode(&b))
                .unwrap_or_default();
            self.cache.insert(key.clone(), stored);
        }
        let Some(summary) = self.cache.get_mut(&key) else {
            return Ok(());
        };
        if summary.fold(&env.event) {
            out.push(IndexWrite {
                company: company.clone(),
                kind: IndexKind::Sessions,
                key: key.1,
                value: rmp_serde::to_vec_named(summary).ok(),
            });
        }
        Ok(())
    }

    /// Forgets cached summaries, keeping those written by the batch being built (`out`): the
    /// store does not hold them yet, so reading them back would lose this batch's changes.
    fn shrink(&mut self, out: &[IndexWrite]) {
        self.cache.retain(|(company, id), _| {
            out.iter()
                .any(|w| w.kind == IndexKind::Sessions && &w.key == id && &w.company == company)
        });
    }
}
