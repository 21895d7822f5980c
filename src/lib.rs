//! copanel: a real-time, event-sourced collaboration server for the client panel of a
//! contact-centre operator console.
//!
//! Every edit is a command; an accepted command becomes events appended to a durable log and
//! fanned out over WebSockets to everyone subscribed; any stream's history replays to any point.
//!
//! # Layout
//! - [`domain`]: the rules. Pure `decide`/`apply` per stream kind; knows nothing of I/O.
//! - [`store`]: the durable log ([`store::Store`] trait, sled implementation).
//! - [`writer`]: the single writer task: idempotency, `expected_seq`, decide, group commit.
//! - [`snapshot`]: persisted stream states, so a load folds only the tail of the log.
//! - [`derived`]: projections kept beside the log for queries (tag usage, session summaries).
//! - [`search`]: the in-memory contact search index.
//! - [`hub`]: committed projections and live fan-out with bounded per-connection queues.
//! - [`server`]: the network edge: HTTP routes, WebSocket upgrade and connections.
//! - [`auth`]: JWT HS256 tokens and the server secret.
//! - [`metrics`]: process-wide counters, gauges and the ack latency histogram.
//! - [`config`]: `serve`'s configuration: flags, environment, TOML file, defaults.
//! - [`verify`], [`backup`]: the offline tools `copanel verify`, `export` and `import`.
//! - The wire types and codecs are in the `copanel-protocol` crate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod backup;
pub mod config;
pub mod demo;
pub mod derived;
pub mod domain;
pub mod hub;
pub mod metrics;
pub mod outcomes;
pub mod search;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod verify;
pub mod webhooks;
pub mod writer;
