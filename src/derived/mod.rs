//! Derived records: projections kept beside the log for queries that must not replay every
//! stream (tag suggestions, an operator's sessions). The writer computes them from the events
//! it stages and writes them in the same atomic batch, so they never disagree with the log;
//! all of them can be rebuilt from it.
//!
//! # Layout
//! - [`tags`]: company tag usage and each operator's recent tags.
//! - [`sessions`]: per-session summaries for `query sessions`.

pub mod sessions;
pub mod tags;

use crate::store::{IndexWrite, Store, StoreResult};
use copanel_protocol::Envelope;
use std::sync::Arc;

/// The writer's derived-record state (caches of current values, loaded from the store).
#[derive(Default)]
pub struct Derived {
    /// Tag usage and recent tags.
    pub tags: tags::TagIndex,
    /// Session summaries.
    pub sessions: sessions::SessionIndex,
}

impl Derived {
    /// Computes the derived writes for one staged event.
    pub fn on_event(
        &mut self,
        store: &dyn Store,
        company: &Arc<str>,
        env: &Envelope,
        out: &mut Vec<IndexWrite>,
    ) -> StoreResult<()> {
        self.tags.on_event(store, company, env, out)?;
        self.sessions.on_event(store, company, env, out)?;
        Ok(())
    }

    /// Forgets every cached value (after a failed batch, whose writes did not happen).
    pub fn clear(&mut self) {
        self.tags = Default::default();
        self.sessions = Default::default();
    }
}
