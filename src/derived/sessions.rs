//! Per-session summaries, for `query sessions`.
use crate::store::{IndexWrite, Store, StoreResult};
use copanel_protocol::Envelope;
use std::sync::Arc;

/// Cached session summaries.
#[derive(Default)]
pub struct SessionIndex {}

impl SessionIndex {
    /// Derived writes for one event.
    pub fn on_event(
        &mut self,
        _store: &dyn Store,
        _company: &Arc<str>,
        _env: &Envelope,
        _out: &mut Vec<IndexWrite>,
    ) -> StoreResult<()> {
        Ok(())
    }
}
