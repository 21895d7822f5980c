//! Company tag usage and each operator's recent tags, for `query tag_suggestions`.
//!
//! Two derived records per company, written by the writer in the same atomic batch as the
//! session events they follow from:
//! - [`IndexKind::TagUsage`]: key = the folded tag ([`text::fold`]: `Stížnost` and `STIZNOST` are
//!   one tag), value = a [`TagUsage`] (MessagePack map): the spelling first seen and how many
//!   sessions carry the tag now (+1 on `tag_added`, -1 on `tag_removed`; the record is deleted
//!   when it reaches 0).
//! - [`IndexKind::RecentTags`]: key = operator id, value = MessagePack list of the last
//!   [`RECENT_TAGS`] distinct tags that operator added by hand, most recent first. Tags added by
//!   auto-tag rules or by the platform are not anyone's "recent" tags.
//!
//! Current values are cached per company and loaded lazily from the store; the writer drops the
//! whole cache after a failed batch ([`super::Derived::clear`]), so it is reloaded on demand.
//! Never: let a missing or unreadable record stop an event; these are rebuildable hints.

use crate::domain::text;
use crate::store::{IndexKind, IndexWrite, Store, StoreResult};
use copanel_protocol::{Envelope, Event, Role, StreamKind, TagSource};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// How many distinct recent tags are kept per operator.
pub const RECENT_TAGS: usize = 20;

/// A [`IndexKind::TagUsage`] record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagUsage {
    /// The tag as it was spelled when the record was created (its first use).
    pub tag: String,
    /// How many sessions carry it now.
    pub uses: u64,
}

impl TagUsage {
    /// Decodes a stored record; `None` if it is unreadable.
    pub fn decode(bytes: &[u8]) -> Option<TagUsage> {
        rmp_serde::from_slice(bytes).ok()
    }
}

/// Decodes a stored [`IndexKind::RecentTags`] record; `None` if it is unreadable.
pub fn decode_recent(bytes: &[u8]) -> Option<Vec<String>> {
    rmp_serde::from_slice(bytes).ok()
}

/// Cached tag usage and recent tags, per company.
#[derive(Default)]
pub struct TagIndex {
    /// Per company: one cache each, since keys repeat across companies.
    companies: HashMap<Arc<str>, CompanyTags>,
}

/// What the writer knows of one company's records.
#[derive(Default)]
struct CompanyTags {
    /// Folded tag → its record; `None` once the store was asked and has none (so a new tag
    /// costs one read, not one per event).
    usage: HashMap<String, Option<TagUsage>>,
    /// Operator id → its recent tags, most recent first.
    recent: HashMap<String, Vec<String>>,
}

impl TagIndex {
    /// Derived writes for one staged event: session `tag_added` / `tag_removed` only.
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
        let (tag, added, manual) = match &env.event {
            Event::TagAdded { tag, source, .. } => (tag, true, *source == TagSource::Manual),
            Event::TagRemoved { tag } => (tag, false, false),
            _ => return Ok(()),
        };
        let cache = self.companies.entry(company.clone()).or_default();
        cache.count(store, company, tag, added, out)?;
        if added && manual && env.actor.role != Role::Service {
            cache.remember(store, company, &env.actor.id, tag, out)?;
        }
        Ok(())
    }
}

impl CompanyTags {
    /// Counts one more (or one fewer) session carrying `tag`.
    fn count(
        &mut self,
        store: &dyn Store,
        company: &Arc<str>,
        tag: &str,
        added: bool,
        out: &mut Vec<IndexWrite>,
    ) -> StoreResult<()> {
        let key = text::fold(tag);
        if !self.usage.contains_key(&key) {
            let stored = store.index_get(company, IndexKind::TagUsage, &key)?;
            let record = stored.as_deref().and_then(|b| {
                let r = TagUsage::decode(b);
                if r.is_none() {
                    tracing::warn!(%company, tag = %key, "unreadable tag usage record; recounting from here");
                }
                r
            });
            self.usage.insert(key.clone(), record);
        }
        let slot = self.usage.entry(key.clone()).or_default();
        let value = match (slot.as_mut(), added) {
            (Some(u), true) => {
                u.uses += 1;
                rmp_serde::to_vec_named(u).ok()
            }
            (None, true) => {
                let u = TagUsage {
                    tag: tag.to_owned(),
                    uses: 1,
                };
                let v = rmp_serde::to_vec_named(&u).ok();
                *slot = Some(u);
                v
            }
            (Some(u), false) if u.uses > 1 => {
                u.uses -= 1;
                rmp_serde::to_vec_named(u).ok()
            }
            (Some(_), false) => {
                *slot = None;
                None
            }
            // A removal of a tag nobody counted (added before the index existed): nothing to do.
            (None, false) => return Ok(()),
        };
        out.push(IndexWrite {
            company: company.clone(),
            kind: IndexKind::TagUsage,
            key,
            value,
        });
        Ok(())
    }

    /// Moves `tag` to the front of `operator`'s recent tags.
    fn remember(
        &mut self,
        store: &dyn Store,
        company: &Arc<str>,
        operator: &str,
        tag: &str,
        out: &mut Vec<IndexWrite>,
    ) -> StoreResult<()> {
        if !self.recent.contains_key(operator) {
            let stored = store.index_get(company, IndexKind::RecentTags, operator)?;
            let list = stored
                .as_deref()
                .and_then(decode_recent)
                .unwrap_or_default();
            self.recent.insert(operator.to_owned(), list);
        }
        let list = self.recent.entry(operator.to_owned()).or_default();
        let folded = text::fold(tag);
        if list.first().is_some_and(|t| text::fold(t) == folded) {
            return Ok(()); // already the most recent: nothing changes
        }
        list.retain(|t| text::fold(t) != folded);
        list.insert(0, tag.to_owned());
        list.truncate(RECENT_TAGS);
        out.push(IndexWrite {
            company: company.clone(),
            kind: IndexKind::RecentTags,
            key: operator.to_owned(),
            value: rmp_serde::to_vec(list).ok(),
        });
        Ok(())
    }
}
