//! The contact directory's search index: per company, in memory, built from the log on first
//! use and kept current by the writer after every committed contact event.
use crate::store::{Store, StoreResult};
use copanel_protocol::Envelope;

/// The index of every company's contacts.
#[derive(Default)]
pub struct ContactIndex {}

impl ContactIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called by the writer, in commit order, for every committed event of a `contact/` stream.
    pub fn on_committed(&self, _company: &str, _env: &Envelope) {}

    /// Makes sure a company's contacts are indexed (reads the log on first use).
    pub fn ensure_loaded(&self, _store: &dyn Store, _company: &str) -> StoreResult<()> {
        Ok(())
    }
}
