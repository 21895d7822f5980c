//! Persisted stream snapshots: loading a stream's state without replaying its whole log.
//!
//! The writer stores, in the same atomic batch as the events, the state of a stream every
//! [`DEFAULT_EVERY`] events (configurable, `0` = never): `[b'S', FORMAT]` followed by the
//! MessagePack of the [`StreamState`], keyed by the stream and the seq it reflects (see
//! [`crate::store::sled_store`]). Loading a state at some seq ([`load`]) takes the latest
//! snapshot at or before that seq and folds only the events after it. A snapshot that does not
//! decode, has another [`FORMAT`], or is of the wrong stream kind is ignored (full replay), so a
//! change of the state structs only needs [`FORMAT`] bumped.
//!
//! Snapshots hold personal data like the events they fold: [`crate::store::Store::redact`]
//! drops every snapshot of the stream it redacts, and the next load replays the redacted log.
//!
//! Never: use a snapshot without checking that the event at its seq exists (a snapshot must not
//! claim a head the log does not have), or write one that is not the fold of events `1..=seq`.

use crate::domain;
use crate::store::{Store, StoreError, StoreResult, StreamId};
use copanel_protocol::StreamState;

/// Events between two snapshots of a stream unless configured otherwise.
pub const DEFAULT_EVERY: u64 = 1000;
/// The version of the snapshot encoding. Bump it whenever a state struct changes in a way that
/// would decode differently: older snapshots are then ignored and rewritten.
pub const FORMAT: u8 = 1;
/// First byte of every snapshot value.
const MAGIC: u8 = b'S';
/// Events read from the log per page while folding.
const PAGE: usize = 1000;

/// Encodes a state as a snapshot value.
pub fn encode(state: &StreamState) -> StoreResult<Vec<u8>> {
    let mut out = vec![MAGIC, FORMAT];
    rmp_serde::encode::write_named(&mut out, state)
        .map_err(|e| StoreError::Backend(format!("cannot encode a snapshot: {e}")))?;
    Ok(out)
}

/// Decodes a snapshot value of a stream, or says why it cannot be used.
pub fn decode(id: &StreamId, bytes: &[u8]) -> Result<StreamState, String> {
    let body = match bytes {
        [MAGIC, FORMAT, body @ ..] => body,
        [MAGIC, other, ..] => return Err(format!("snapshot format {other}, expected {FORMAT}")),
        _ => return Err("not a snapshot".into()),
    };
    let state: StreamState = rmp_serde::from_slice(body).map_err(|e| e.to_string())?;
    let want = domain::initial(id.stream.kind());
    if std::mem::discriminant(&state) != std::mem::discriminant(&want) {
        return Err("snapshot of another stream kind".into());
    }
    Ok(state)
}

/// A stream's state loaded from the store.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The last seq folded in (0 for an empty stream).
    pub head: u64,
    /// The state after event `head`.
    pub state: StreamState,
    /// The seq of the snapshot it started from (0: a full replay).
    pub from_snapshot: u64,
}

/// The state of `id` after event `upto` (`None`: after its last event), from the latest usable
/// snapshot at or before it plus the events after the snapshot. Fails if the log has a gap, or
/// ends before `upto`.
pub fn load(store: &dyn Store, id: &StreamId, upto: Option<u64>) -> StoreResult<Loaded> {
    let limit = upto.unwrap_or(u64::MAX);
    let mut state = domain::initial(id.stream.kind());
    let mut head = 0;
    let mut from_snapshot = 0;
    if limit > 0 {
        if let Some((seq, bytes)) = store.snapshot(id, limit)? {
            // The event the snapshot reflects must exist: then the fold below starts right.
            let there = store.read(id, seq, 1)?.first().map(|e| e.seq) == Some(seq);
            match decode(id, &bytes) {
                Ok(s) if there => {
                    state = s;
                    head = seq;
                    from_snapshot = seq;
                }
                Ok(_) => tracing::warn!(stream = %id, seq, "snapshot beyond the log ignored"),
                Err(why) => tracing::debug!(stream = %id, seq, %why, "snapshot ignored"),
            }
        }
    }
    while head < limit {
        let want = (limit - head).min(PAGE as u64) as usize;
        let page = store.read(id, head + 1, want)?;
        let n = page.len();
        for env in &page {
            if env.seq != head + 1 {
                return Err(StoreError::Corrupt {
                    key: format!("{id}#{}", env.seq),
                    why: format!("expected seq {}", head + 1),
                });
            }
            domain::apply(&mut state, env);
            head = env.seq;
        }
        if n < want {
            break;
        }
    }
    if let Some(u) = upto {
        if head < u {
            return Err(StoreError::Backend(format!(
                "{id}: events from {} missing",
                head + 1
            )));
        }
    }
    Ok(Loaded {
        head,
        state,
        from_snapshot,
    })
}
