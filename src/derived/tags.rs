//! Company tag usage and each operator's recent tags, for `tag_suggestions`.
use crate::store::{IndexWrite, Store, StoreResult};
use copanel_protocol::Envelope;
use std::sync::Arc;

/// Cached tag usage per company.
#[derive(Default)]
pub struct TagIndex {}

impl TagIndex {
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
