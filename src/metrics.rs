//! Process-wide counters, cheap to bump from hot paths (one relaxed atomic add).
//!
//! They are reported by `/healthz` and, with the ack-latency [`Histogram`] and the fan-out
//! queue [`Gauge`]s, in Prometheus text format at `/metrics` (`server::prom`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
/// Appends and flushes of the writer that failed (full disk, I/O error).
pub static STORE_FAILURES: Counter = Counter::new();
/// WebSocket connections accepted since start.
pub static CONNECTIONS_OPENED: Counter = Counter::new();
/// WebSocket connections ended since start.
pub static CONNECTIONS_CLOSED: Counter = Counter::new();

/// A value that goes up and down (or a high-water mark), lock-free.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// A gauge at zero.
    pub const fn new() -> Self {
        Gauge(AtomicU64::new(0))
    }
    /// Sets the value.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Raises the value to `v` if it is lower (a high-water mark).
    pub fn raise(&self, v: u64) {
        self.0.fetch_max(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of every [`Histogram`]'s buckets, milliseconds (`+Inf` is implied).
pub const LATENCY_BUCKETS_MS: [f64; 10] =
    [0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0];

/// A fixed-bucket histogram of durations, lock-free: one relaxed add per bucket hit, plus the
/// count and the sum (in microseconds). Buckets are not cumulative here; [`Histogram::snapshot`]
/// makes them so, as Prometheus wants.
#[derive(Debug)]
pub struct Histogram {
    /// Observations per bucket; the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in milliseconds, cumulative count); the last bound is infinite.
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Sum of the observations, seconds.
    pub sum_secs: f64,
}

impl Histogram {
    /// An empty histogram over [`LATENCY_BUCKETS_MS`].
    pub const fn new() -> Self {
        #[allow(clippy::declare_interior_mutable_const)]
        const ZERO: AtomicU64 = AtomicU64::new(0);
        Histogram {
            buckets: [ZERO; LATENCY_BUCKETS_MS.len() + 1],
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative buckets, count and sum. Read without a lock, so under concurrent updates the
    /// parts may differ by the observations in flight; `count` is read last and the `+Inf`
    /// bucket is reported as `count`, so the buckets never exceed it.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            acc += b.load(Ordering::Relaxed);
            let bound = LATENCY_BUCKETS_MS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, acc));
        }
        let sum_secs = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let count = self.count.load(Ordering::Relaxed).max(acc);
        if let Some(last) = buckets.last_mut() {
            last.1 = count;
        }
        for b in buckets.iter_mut() {
            b.1 = b.1.min(count);
        }
        HistogramSnapshot {
            buckets,
            count,
            sum_secs,
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Command latency on a WebSocket connection: from the connection taking the command for the
/// writer until the connection's task takes the writer's ack (acked commands only).
pub static ACK_LATENCY: Histogram = Histogram::new();
/// The writer's part of [`ACK_LATENCY`]: from the moment a command enters the writer's queue to
/// the writer sending its ack (the wait in the queue, then its batch's append and, with `sync`
/// durability, its flush and publish; `relaxed` acks before the flush), for every acked command
/// (WebSocket and HTTP). What [`ACK_LATENCY`] adds to it is the connection's side: waiting for
/// room in the queue, and for a worker thread to run the connection's task once the ack is sent.
pub static WRITER_ACK: Histogram = Histogram::new();
/// Writer, per batch: deciding its commands and appending them to the store (not durable yet).
pub static WRITER_APPEND: Histogram = Histogram::new();
/// Writer, per batch: the flush that makes the append durable (`sync` and `relaxed` alike).
pub static WRITER_FLUSH: Histogram = Histogram::new();
/// Writer, per batch: publishing its events to the subscribers' queues and acking its commands.
pub static WRITER_PUBLISH: Histogram = Histogram::new();
/// The deepest connection queue found by the most recent publish of an event (events waiting
/// to be written to that subscriber's socket).
pub static FANOUT_QUEUE_DEPTH: Gauge = Gauge::new();
/// The deepest connection queue any publish has found since start.
pub static FANOUT_QUEUE_DEPTH_PEAK: Gauge = Gauge::new();
