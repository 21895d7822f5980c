//! Process-wide counters, cheap to bump from hot paths (one relaxed atomic add).
//!
//! They are reported by `/healthz` and in logs; the Prometheus endpoint arrives with the
//! operations issue and will read the same counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Subscriptions that overflowed their connection's queue and fell back to the log.
pub static SLOW_CONSUMER_FALLBACKS: Counter = Counter::new();
/// Events appended to the log.
pub static EVENTS_APPENDED: Counter = Counter::new();
/// Commands acknowledged.
pub static COMMANDS_ACKED: Counter = Counter::new();
/// Commands refused (any error).
pub static COMMANDS_REFUSED: Counter = Counter::new();
/// Write batches committed.
pub static BATCHES: Counter = Counter::new();
/// WebSocket connections accepted since start.
pub static CONNECTIONS_OPENED: Counter = Counter::new();
/// WebSocket connections ended since start.
pub static CONNECTIONS_CLOSED: Counter = Counter::new();
