//! Raw access to the sled store's records, for the offline tools (`copanel verify`, `export`,
//! `import`) and for tests that damage a store on purpose.
//!
//! Everything here bypasses the writer and every check: it reads and writes records exactly as
//! they are stored. The server never uses it. [`RecordKey`] names the key layout documented in
//! [`super`] (`e` events, `c` command outcomes, `x` derived records, `m` metadata); a key that
//! fits none of them is [`RecordKey::Unknown`], which the tools report or carry over verbatim.
//!
//! Never: call the write functions on a store a server has open (sled's directory lock keeps
//! another process out; within one process, nothing does).

use super::{
    backend, epoch_key, event_key, index_prefix, outcome_key, SledStore, EVENT, INDEX, META,
    OUTCOME,
};
use crate::store::{IndexKind, StoreResult, StreamId};
use copanel_protocol::StreamName;
use std::sync::Arc;

/// The name of sled's default tree, the only one the store writes to.
pub const DEFAULT_TREE: &[u8] = b"__sled__default";

/// What a stored key addresses, parsed from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    /// An event: `seq` of `stream` in `company`.
    Event {
        /// The company.
        company: String,
        /// The stream (as stored; validated by [`RecordKey::stream_id`]).
        stream: String,
        /// The seq.
        seq: u64,
    },
    /// A command outcome.
    Outcome {
        /// The company.
        company: String,
        /// The command's stream.
        stream: String,
        /// The command id.
        command_id: String,
    },
    /// A derived record.
    Index {
        /// Which index.
        kind: IndexKind,
        /// The company (`""` for store-wide indexes).
        company: String,
        /// The key within the index.
        key: String,
    },
    /// Store metadata (`epoch`, …).
    Meta {
        /// The metadata name.
        name: String,
    },
    /// Anything else: an unknown prefix, or a key that is not valid UTF-8 where text belongs.
    Unknown,
}

impl RecordKey {
    /// Parses a stored key. Never fails: what does not fit is [`RecordKey::Unknown`].
    pub fn parse(key: &[u8]) -> RecordKey {
        Self::try_parse(key).unwrap_or(RecordKey::Unknown)
    }

    fn try_parse(key: &[u8]) -> Option<RecordKey> {
        let (&kind, rest) = key.split_first()?;
        let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
        match kind {
            EVENT => {
                let split = rest.len().checked_sub(8)?;
                let (body, seq) = rest.split_at(split);
                let body = body.strip_suffix(&[0])?;
                let (company, stream) = split_nul(body)?;
                Some(RecordKey::Event {
                    company: text(company)?,
                    stream: text(stream)?,
                    seq: u64::from_be_bytes(seq.try_into().ok()?),
                })
            }
            OUTCOME => {
                let (company, rest) = split_nul(rest)?;
                let (stream, command_id) = split_nul(rest)?;
                Some(RecordKey::Outcome {
                    company: text(company)?,
                    stream: text(stream)?,
                    command_id: text(command_id)?,
                })
            }
            INDEX => {
                let (&tag, rest) = rest.split_first()?;
                let kind = kind_of_tag(tag)?;
                let (company, key) = split_nul(rest)?;
                Some(RecordKey::Index {
                    kind,
                    company: text(company)?,
                    key: text(key)?,
                })
            }
            META => Some(RecordKey::Meta { name: text(rest)? }),
            _ => None,
        }
    }

    /// The key's bytes; `None` for [`RecordKey::Unknown`]. `encode(parse(k)) == k` for every
    /// key that parses.
    pub fn encode(&self) -> Option<Vec<u8>> {
        match self {
            RecordKey::Event {
                company,
                stream,
                seq,
            } => Some(event_key(company, stream, *seq)),
            RecordKey::Outcome {
                company,
                stream,
                command_id,
            } => {
                let mut k = super::stream_prefix(OUTCOME, company, stream);
                k.extend_from_slice(command_id.as_bytes());
                Some(k)
            }
            RecordKey::Index { kind, company, key } => {
                let mut k = index_prefix(company, *kind);
                k.extend_from_slice(key.as_bytes());
                Some(k)
            }
            RecordKey::Meta { name } => {
                let mut k = vec![META];
                k.extend_from_slice(name.as_bytes());
                Some(k)
            }
            RecordKey::Unknown => None,
        }
    }

    /// For events and outcomes: the stream as a [`StreamId`], if its name is valid.
    pub fn stream_id(&self) -> Option<StreamId> {
        match self {
            RecordKey::Event {
                company, stream, ..
            }
            | RecordKey::Outcome {
                company, stream, ..
            } => StreamName::parse(stream)
                .ok()
                .map(|s| StreamId::new(Arc::from(company.as_str()), s)),
            _ => None,
        }
    }
}

/// `a \0 b` → (a, b), splitting at the first NUL.
fn split_nul(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = b.iter().position(|&c| c == 0)?;
    Some((b.get(..at)?, b.get(at + 1..)?))
}

/// The [`IndexKind`] whose [`IndexKind::tag`] is `tag`.
pub fn kind_of_tag(tag: u8) -> Option<IndexKind> {
    ALL_KINDS.iter().copied().find(|k| k.tag() == tag)
}

/// Every [`IndexKind`], in tag order of no importance.
pub const ALL_KINDS: [IndexKind; 8] = [
    IndexKind::Roster,
    IndexKind::TagUsage,
    IndexKind::RecentTags,
    IndexKind::Sessions,
    IndexKind::Redactions,
    IndexKind::Outbox,
    IndexKind::Webhooks,
    IndexKind::WebhookPositions,
];

/// A lowercase name for an index kind (the export format and messages use it).
pub fn kind_name(kind: IndexKind) -> &'static str {
    match kind {
        IndexKind::Roster => "roster",
        IndexKind::TagUsage => "tag_usage",
        IndexKind::RecentTags => "recent_tags",
        IndexKind::Sessions => "sessions",
        IndexKind::Redactions => "redactions",
        IndexKind::Outbox => "outbox",
        IndexKind::Webhooks => "webhooks",
        IndexKind::WebhookPositions => "webhook_positions",
    }
}

/// The index kind named `name` by [`kind_name`].
pub fn kind_by_name(name: &str) -> Option<IndexKind> {
    ALL_KINDS.iter().copied().find(|k| kind_name(*k) == name)
}

/// One stored record: its tree, key and value, as bytes.
pub type RawRecord = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Records of one tree, as (key, value), one at a time.
pub type RawPairs = Box<dyn Iterator<Item = StoreResult<(Vec<u8>, Vec<u8>)>> + 'static>;

impl SledStore {
    /// The names of sled's trees, sorted. The store itself writes only [`DEFAULT_TREE`].
    pub fn raw_tree_names(&self) -> StoreResult<Vec<Vec<u8>>> {
        let mut names: Vec<Vec<u8>> = self
            .db()?
            .tree_names()
            .into_iter()
            .map(|n| n.to_vec())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every record of one tree, as (key, value), in key order, one at a time.
    pub fn raw_tree(
        &self,
        tree: &[u8],
    ) -> StoreResult<impl Iterator<Item = StoreResult<(Vec<u8>, Vec<u8>)>> + 'static> {
        let tree = if tree == DEFAULT_TREE {
            (**self.db()?).clone()
        } else {
            self.db()?.open_tree(tree).map_err(backend)?
        };
        Ok(tree
            .iter()
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend)))
    }

    /// Every record of every tree, as (tree name, key, value): trees in name order, keys in
    /// key order within each, one record at a time.
    pub fn raw_records(&self) -> impl Iterator<Item = StoreResult<RawRecord>> + 'static {
        let names = match self.raw_tree_names() {
            Ok(n) => n,
            Err(e) => {
                let once: Box<dyn Iterator<Item = StoreResult<RawRecord>>> =
                    Box::new(std::iter::once(Err(e)));
                return once;
            }
        };
        let trees: Vec<(Vec<u8>, StoreResult<_>)> = names
            .into_iter()
            .map(|name| {
                let it = self.raw_tree(&name);
                (name, it)
            })
            .collect();
        Box::new(trees.into_iter().flat_map(|(name, it)| {
            let records: Box<dyn Iterator<Item = StoreResult<RawRecord>>> = match it {
                Err(e) => Box::new(std::iter::once(Err(e))),
                Ok(it) => Box::new(it.map(move |r| r.map(|(k, v)| (name.clone(), k, v)))),
            };
            records
        }))
    }

    /// The records of the default tree whose keys start with `prefix`, in key order.
    pub fn raw_scan(&self, prefix: &[u8]) -> RawPairs {
        match self.db() {
            Ok(db) => Box::new(
                db.scan_prefix(prefix)
                    .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend)),
            ),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    /// The value stored under `key` in the default tree.
    pub fn raw_get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.db()?.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    /// Writes (`Some`) or removes (`None`) records of `tree` in one atomic batch. Not durable
    /// until [`SledStore::raw_flush`]. No check of any kind: for import and damage tests.
    pub fn raw_write(
        &self,
        tree: &[u8],
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> StoreResult<()> {
        let db = self.db()?;
        let mut batch = sled::Batch::default();
        for (k, v) in records {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        let _gate = self.gate.read();
        if tree == DEFAULT_TREE {
            db.apply_batch(batch).map_err(backend)
        } else {
            db.open_tree(tree)
                .map_err(backend)?
                .apply_batch(batch)
                .map_err(backend)
        }
    }

    /// Makes every raw write durable.
    pub fn raw_flush(&self) -> StoreResult<()> {
        self.db()?.flush().map(|_| ()).map_err(backend)
    }

    /// The key of event `seq` of `stream` in `company` (for damage tests).
    pub fn raw_event_key(company: &str, stream: &str, seq: u64) -> Vec<u8> {
        event_key(company, stream, seq)
    }

    /// The key of a command outcome.
    pub fn raw_outcome_key(id: &StreamId, command_id: &str) -> Vec<u8> {
        outcome_key(id, command_id)
    }

    /// The key of the store's epoch.
    pub fn raw_epoch_key() -> Vec<u8> {
        epoch_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let keys = [
            RecordKey::Event {
                company: "acme".into(),
                stream: "session/s1".into(),
                seq: 258,
            },
            RecordKey::Outcome {
                company: "acme".into(),
                stream: "session/s1".into(),
                command_id: "c-1".into(),
            },
            RecordKey::Index {
                kind: IndexKind::TagUsage,
                company: "acme".into(),
                key: "vip".into(),
            },
            RecordKey::Index {
                kind: IndexKind::Redactions,
                company: String::new(),
                key: "acme/session/s1".into(),
            },
            RecordKey::Meta {
                name: "epoch".into(),
            },
        ];
        for k in keys {
            let bytes = k.encode().expect("a known key encodes");
            assert_eq!(RecordKey::parse(&bytes), k);
        }
        assert_eq!(RecordKey::parse(b""), RecordKey::Unknown);
        assert_eq!(RecordKey::parse(b"zzz"), RecordKey::Unknown);
        assert_eq!(RecordKey::parse(b"eacme\0s"), RecordKey::Unknown);
        assert_eq!(RecordKey::parse(&[b'x', b'?', 0]), RecordKey::Unknown);
        assert_eq!(RecordKey::parse(&[b'm', 0xff]), RecordKey::Unknown);
    }
}
