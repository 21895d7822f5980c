//! `copanel export` / `copanel import`: the whole store as NDJSON, and back, exactly.
//!
//! Owns the export format (below) and opening a data directory for offline tools
//! ([`open_existing`]). Records are read and written through the raw API of
//! [`crate::store::sled_store::raw`], so an import recreates every record byte for byte: the
//! same keys, the same values, the same epoch. Only the sled directory's generation number
//! (`log-000001` after an import) and sled's own file layout differ.
//!
//! # Format (version 1)
//! One JSON object per line, told apart by `type`; binary fields are standard base64 and end
//! in `_b64`:
//! 1. `{"type":"header","format":"copanel-export","version":1,"epoch":"…"}`
//! 2. the records, in the store's key order (command outcomes, then events stream by stream in
//!    seq order, then metadata, then derived records):
//!    - `{"type":"outcome","company","stream","command_id","outcome":{…}}`
//!    - `{"type":"event","company","stream","seq","event":{…envelope…}}`
//!    - `{"type":"meta","name","value_b64"}` (any metadata besides the epoch)
//!    - `{"type":"index","kind":"sessions"|"tag_usage"|…,"company","key","value_b64"}`
//!    - `{"type":"record","tree_b64","key_b64","value_b64"}`: anything outside the documented
//!      layout (other sled trees, unknown keys), carried verbatim.
//!
//!    Events and outcomes are readable JSON. When re-encoding that JSON would not give back the
//!    stored bytes exactly (a record that does not decode, or encodes differently), the line
//!    also carries `raw_b64`, the stored bytes, and import uses those.
//! 3. `{"type":"secret","value_b64"}` only with `--include-secret`: the token secret
//!    (`DATA/secret`) is a credential, so it stays out of a backup unless asked for; without it
//!    the imported store gets a new secret at its first start (old tokens stop working).
//! 4. `{"type":"end","records":N}`: N record lines came before it. A file without it is
//!    truncated and is refused.
//!
//! Import refuses a target directory that is not empty, and any malformed line with an error
//! naming its line number; it then removes what it wrote. It never panics on its input.

use crate::store::sled_store::raw::{kind_by_name, kind_name, RecordKey, DEFAULT_TREE};
use crate::store::{CommandOutcome, SledStore, StoreError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use copanel_protocol::{Envelope, StreamName};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Read, Write};
use std::path::Path;

/// The `format` of the header line.
pub const FORMAT: &str = "copanel-export";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// The longest line import accepts (an event is bounded far below this by the limits).
pub const MAX_LINE: usize = 16 * 1024 * 1024;
/// Records written per atomic batch during import.
const IMPORT_BATCH: usize = 4096;

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A line of the import file is malformed.
    #[error("line {line}: {why}")]
    Line {
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        why: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else (I/O, a non-empty target, a missing store), explained.
    #[error("{0}")]
    Other(String),
}

/// One line of the export format.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Header {
        format: String,
        version: u32,
        epoch: String,
    },
    Outcome {
        company: String,
        stream: String,
        command_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<CommandOutcome>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw_b64: Option<String>,
    },
    Event {
        company: String,
        stream: String,
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<Envelope>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw_b64: Option<String>,
    },
    Meta {
        name: String,
        value_b64: String,
    },
    Index {
        kind: String,
        company: String,
        key: String,
        value_b64: String,
    },
    Record {
        tree_b64: String,
        key_b64: String,
        value_b64: String,
    },
    Secret {
        value_b64: String,
    },
    End {
        records: u64,
    },
}

/// Counts of what an export wrote or an import read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Events.
    pub events: u64,
    /// Command outcomes.
    pub outcomes: u64,
    /// Derived records.
    pub index: u64,
    /// Metadata besides the epoch, and records outside the layout.
    pub other: u64,
    /// Events and outcomes carried as stored bytes (`raw_b64`) because their JSON would not
    /// re-encode exactly.
    pub verbatim: u64,
    /// Whether the secret was included.
    pub secret: bool,
}

impl Summary {
    /// Record lines (everything between the header and the end line, secret excluded).
    pub fn records(&self) -> u64 {
        self.events + self.outcomes + self.index + self.other
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events, {} command outcomes, {} derived records, {} other records ({} verbatim), secret {}",
            self.events,
            self.outcomes,
            self.index,
            self.other,
            self.verbatim,
            if self.secret { "included" } else { "not included" }
        )
    }
}

/// Opens the store of an existing data directory for an offline tool. Refuses a directory that
/// does not exist or holds no store (rather than creating one), and says plainly when another
/// process (a running server) holds it. Opening may tidy the directory the way a server start
/// does (it deletes what an interrupted compaction left); it changes no record.
pub fn open_existing(dir: &Path) -> Result<SledStore, BackupError> {
    if !dir.is_dir() {
        return Err(BackupError::Other(format!(
            "{} does not exist or is not a directory",
            dir.display()
        )));
    }
    let has_store = ["CURRENT", "db", "conf"]
        .iter()
        .any(|f| dir.join(f).exists());
    if !has_store {
        return Err(BackupError::Other(format!(
            "{} holds no copanel store (no CURRENT file)",
            dir.display()
        )));
    }
    SledStore::open(dir).map_err(|e| {
        let text = e.to_string();
        if text.contains("could not acquire lock") || text.contains("locked by another process") {
            BackupError::Other(format!(
                "{} is in use by another process (is a copanel server running on it? stop it first): {text}",
                dir.display()
            ))
        } else {
            BackupError::Store(e)
        }
    })
}

/// `copanel history`: writes one stream's events `from`.. (at most `limit`) as JSON lines, or
/// with `at` the stream's state after that seq as one `{"seq", "state"}` line, read from a
/// stopped server's store.
pub fn history(
    dir: &Path,
    company: &str,
    stream: &str,
    from: u64,
    limit: Option<u64>,
    at: Option<u64>,
    out: &mut dyn Write,
) -> Result<(), BackupError> {
    let name = copanel_protocol::StreamName::parse(stream)
        .map_err(|e| BackupError::Other(format!("--stream {stream:?}: {e}")))?;
    let store = open_existing(dir)?;
    let id = crate::store::StreamId::new(std::sync::Arc::from(company), name);
    let head = crate::store::Store::head(&store, &id).map_err(BackupError::Store)?;
    if head == 0 {
        return Err(BackupError::Other(format!(
            "{company}:{stream} has no events in {}",
            dir.display()
        )));
    }
    if let Some(at) = at {
        if at > head {
            return Err(BackupError::Other(format!(
                "--at {at} is beyond the stream's head {head}"
            )));
        }
        let loaded = crate::snapshot::load(&store, &id, Some(at)).map_err(BackupError::Store)?;
        let line = serde_json::json!({ "seq": at, "state": loaded.state });
        return json_line(out, &line);
    }
    let mut next = from.max(1);
    let mut left = limit.unwrap_or(u64::MAX);
    while next <= head && left > 0 {
        let want = left.min(1000).min(head - next + 1) as usize;
        let page =
            crate::store::Store::read(&store, &id, next, want).map_err(BackupError::Store)?;
        let Some(last) = page.last().map(|e| e.seq) else {
            return Err(BackupError::Other(format!(
                "{company}:{stream}: events {next}..={head} are missing (run copanel verify)"
            )));
        };
        for env in &page {
            json_line(out, env)?;
        }
        left = left.saturating_sub(page.len() as u64);
        next = last + 1;
    }
    out.flush().map_err(|e| io("stdout", e))
}

/// Writes `v` as one line of JSON.
fn json_line<T: Serialize>(out: &mut dyn Write, v: &T) -> Result<(), BackupError> {
    serde_json::to_writer(&mut *out, v).map_err(|e| BackupError::Other(format!("stdout: {e}")))?;
    out.write_all(b"\n").map_err(|e| io("stdout", e))
}

fn io(what: &str, e: std::io::Error) -> BackupError {
    BackupError::Other(format!("{what}: {e}"))
}

/// Writes every record of `store` (in `data_dir`) to `out` in the export format. With
/// `include_secret`, also `data_dir/secret` (an error if there is none).
pub fn export(
    store: &SledStore,
    data_dir: &Path,
    include_secret: bool,
    out: &mut dyn Write,
) -> Result<Summary, BackupError> {
    let mut summary = Summary::default();
    let mut write = |line: &Line| -> Result<(), BackupError> {
        let text = serde_json::to_string(line)
            .map_err(|e| BackupError::Other(format!("cannot encode a line: {e}")))?;
        out.write_all(text.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| io("cannot write the export", e))
    };
    write(&Line::Header {
        format: FORMAT.into(),
        version: VERSION,
        epoch: store_epoch(store)?,
    })?;
    let epoch_key = SledStore::raw_epoch_key();
    for item in store.raw_records() {
        let (tree, key, value) = item?;
        if tree == DEFAULT_TREE && key == epoch_key {
            continue; // in the header
        }
        let line = record_line(&tree, &key, &value, &mut summary);
        write(&line)?;
    }
    if include_secret {
        let path = data_dir.join("secret");
        let secret = std::fs::read(&path).map_err(|e| io(&format!("{}", path.display()), e))?;
        write(&Line::Secret {
            value_b64: B64.encode(secret),
        })?;
        summary.secret = true;
    }
    write(&Line::End {
        records: summary.records(),
    })?;
    out.flush().map_err(|e| io("cannot write the export", e))?;
    Ok(summary)
}

fn store_epoch(store: &SledStore) -> Result<String, BackupError> {
    let bytes = store
        .raw_get(&SledStore::raw_epoch_key())?
        .ok_or_else(|| BackupError::Other("the store has no epoch".into()))?;
    String::from_utf8(bytes)
        .map_err(|_| BackupError::Other("the store's epoch is not UTF-8".into()))
}

/// The line for one stored record: readable where that re-imports exactly, verbatim otherwise.
fn record_line(tree: &[u8], key: &[u8], value: &[u8], summary: &mut Summary) -> Line {
    let verbatim = || Line::Record {
        tree_b64: B64.encode(tree),
        key_b64: B64.encode(key),
        value_b64: B64.encode(value),
    };
    let parsed = RecordKey::parse(key);
    if tree != DEFAULT_TREE || parsed.encode().as_deref() != Some(key) {
        summary.other += 1;
        return verbatim();
    }
    let line = match parsed {
        RecordKey::Event {
            company,
            stream,
            seq,
        } => {
            summary.events += 1;
            Line::Event {
                company,
                stream,
                seq,
                event: rmp_serde::from_slice(value).ok(),
                raw_b64: None,
            }
        }
        RecordKey::Outcome {
            company,
            stream,
            command_id,
        } => {
            summary.outcomes += 1;
            Line::Outcome {
                company,
                stream,
                command_id,
                outcome: rmp_serde::from_slice(value).ok(),
                raw_b64: None,
            }
        }
        RecordKey::Index { kind, company, key } => {
            summary.index += 1;
            return Line::Index {
                kind: kind_name(kind).into(),
                company,
                key,
                value_b64: B64.encode(value),
            };
        }
        RecordKey::Meta { name } => {
            summary.other += 1;
            return Line::Meta {
                name,
                value_b64: B64.encode(value),
            };
        }
        RecordKey::Unknown => {
            summary.other += 1;
            return verbatim();
        }
    };
    // Check the way import will read it: JSON text → record → stored bytes.
    let exact = serde_json::to_string(&line)
        .ok()
        .and_then(|text| serde_json::from_str::<Line>(&text).ok())
        .and_then(|back| record_of(back).ok().flatten())
        .is_some_and(|(k, v)| k == key && v == value);
    if exact {
        return line;
    }
    summary.verbatim += 1;
    match line {
        Line::Event {
            company,
            stream,
            seq,
            event,
            ..
        } => Line::Event {
            company,
            stream,
            seq,
            event,
            raw_b64: Some(B64.encode(value)),
        },
        Line::Outcome {
            company,
            stream,
            command_id,
            outcome,
            ..
        } => Line::Outcome {
            company,
            stream,
            command_id,
            outcome,
            raw_b64: Some(B64.encode(value)),
        },
        other => other,
    }
}

/// Base64 field `field` decoded.
fn unb64(field: &str, text: &str) -> Result<Vec<u8>, String> {
    B64.decode(text)
        .map_err(|e| format!("{field} is not valid base64: {e}"))
}

/// A company id as a key part: non-empty is not required (store-wide records use `""`), but
/// it must not contain the NUL separator.
fn check_part(field: &str, s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err(format!("{field} contains a NUL character"));
    }
    Ok(())
}

fn check_stream(stream: &str) -> Result<(), String> {
    StreamName::parse(stream)
        .map(|_| ())
        .map_err(|e| format!("stream {stream:?} is not a valid stream name: {e}"))
}

/// What a record line writes: (tree, key, value) in the default tree or another. `Ok(None)`
/// for lines that are not records (header, secret, end).
fn record_of(line: Line) -> Result<Option<KeyValue>, String> {
    record_in_tree(line).map(|r| r.map(|(_, k, v)| (k, v)))
}

/// A key and its value.
type KeyValue = (Vec<u8>, Vec<u8>);
/// A tree, a key and its value.
type TreeRecord = (Vec<u8>, Vec<u8>, Vec<u8>);
/// Records to write (`Some`) into one tree.
type TreeWrites = (Vec<u8>, Vec<(Vec<u8>, Option<Vec<u8>>)>);

fn record_in_tree(line: Line) -> Result<Option<TreeRecord>, String> {
    let default = DEFAULT_TREE.to_vec();
    let record = match line {
        Line::Header { .. } | Line::Secret { .. } | Line::End { .. } => return Ok(None),
        Line::Event {
            company,
            stream,
            seq,
            event,
            raw_b64,
        } => {
            check_part("company", &company)?;
            check_stream(&stream)?;
            if seq == 0 {
                return Err("seq 0: seqs start at 1".into());
            }
            let value = match (raw_b64, event) {
                (Some(raw), _) => unb64("raw_b64", &raw)?,
                (None, Some(env)) => {
                    if env.stream.as_str() != stream || env.seq != seq {
                        return Err(format!(
                            "the event says {} seq {}, the line says {stream} seq {seq}",
                            env.stream, env.seq
                        ));
                    }
                    rmp_serde::to_vec_named(&env).map_err(|e| format!("cannot encode: {e}"))?
                }
                (None, None) => return Err("an event line needs `event` or `raw_b64`".into()),
            };
            let key = RecordKey::Event {
                company,
                stream,
                seq,
            };
            (default, key, value)
        }
        Line::Outcome {
            company,
            stream,
            command_id,
            outcome,
            raw_b64,
        } => {
            check_part("company", &company)?;
            check_stream(&stream)?;
            if command_id.chars().any(char::is_control) {
                return Err("command_id contains a control character".into());
            }
            let value = match (raw_b64, outcome) {
                (Some(raw), _) => unb64("raw_b64", &raw)?,
                (None, Some(o)) => {
                    rmp_serde::to_vec_named(&o).map_err(|e| format!("cannot encode: {e}"))?
                }
                (None, None) => return Err("an outcome line needs `outcome` or `raw_b64`".into()),
            };
            let key = RecordKey::Outcome {
                company,
                stream,
                command_id,
            };
            (default, key, value)
        }
        Line::Meta { name, value_b64 } => {
            if name == "epoch" {
                return Err("the epoch belongs in the header, not in a meta line".into());
            }
            let value = unb64("value_b64", &value_b64)?;
            (default, RecordKey::Meta { name }, value)
        }
        Line::Index {
            kind,
            company,
            key,
            value_b64,
        } => {
            let kind = kind_by_name(&kind).ok_or_else(|| {
                format!("unknown index kind {kind:?} (expected sessions, tag_usage, recent_tags, roster, redactions, outbox, webhooks or webhook_positions)")
            })?;
            check_part("company", &company)?;
            let value = unb64("value_b64", &value_b64)?;
            (default, RecordKey::Index { kind, company, key }, value)
        }
        Line::Record {
            tree_b64,
            key_b64,
            value_b64,
        } => {
            let tree = unb64("tree_b64", &tree_b64)?;
            let key = unb64("key_b64", &key_b64)?;
            if tree.is_empty() || key.is_empty() {
                return Err("a record needs a non-empty tree and key".into());
            }
            let value = unb64("value_b64", &value_b64)?;
            return Ok(Some((tree, key, value)));
        }
    };
    let (tree, key, value) = record;
    let key = key
        .encode()
        .ok_or_else(|| "the record has no key".to_string())?;
    Ok(Some((tree, key, value)))
}

/// Reads one line (without its `\n`) of at most [`MAX_LINE`] bytes; `None` at the end.
fn read_line(input: &mut dyn BufRead, number: u64) -> Result<Option<String>, BackupError> {
    let mut buf = Vec::new();
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
    let n = (&mut *input)
        .take(limit)
        .read_until(b'\n', &mut buf)
        .map_err(|e| io(&format!("cannot read line {number}"), e))?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() > MAX_LINE {
        return Err(BackupError::Line {
            line: number,
            why: format!("longer than {MAX_LINE} bytes"),
        });
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| BackupError::Line {
            line: number,
            why: "not valid UTF-8".into(),
        })
}

/// Recreates a store in `dir` from an export read from `input`. `dir` must not exist or be
/// empty; on any error, what was written is removed again. The store must not be opened by
/// anyone else meanwhile.
pub fn import(input: &mut dyn BufRead, dir: &Path) -> Result<Summary, BackupError> {
    let created = match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::Other(format!(
                    "{} is not empty: import only into a new or empty directory",
                    dir.display()
                )));
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            return Err(io(
                &format!("cannot use {} as the target directory", dir.display()),
                e,
            ))
        }
    };
    let result = import_into(input, dir);
    if result.is_err() {
        // Leave the directory as it was: absent, or empty.
        let cleanup = if created {
            std::fs::remove_dir_all(dir)
        } else {
            std::fs::read_dir(dir).and_then(|entries| {
                for entry in entries {
                    let path = entry?.path();
                    if path.is_dir() {
                        std::fs::remove_dir_all(&path)?;
                    } else {
                        std::fs::remove_file(&path)?;
                    }
                }
                Ok(())
            })
        };
        if let Err(e) = cleanup {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a failed import");
        }
    }
    result
}

fn import_into(input: &mut dyn BufRead, dir: &Path) -> Result<Summary, BackupError> {
    let bad = |line: u64, why: String| BackupError::Line { line, why };
    let first = read_line(input, 1)?.ok_or_else(|| bad(1, "the file is empty".into()))?;
    let epoch = match serde_json::from_str::<Line>(&first) {
        Ok(Line::Header {
            format,
            version,
            epoch,
        }) => {
            if format != FORMAT {
                return Err(bad(1, format!("format {format:?}, expected {FORMAT:?}")));
            }
            if version != VERSION {
                return Err(bad(
                    1,
                    format!("format version {version}; this copanel reads version {VERSION}"),
                ));
            }
            if epoch.is_empty() || epoch.len() > 128 || epoch.chars().any(char::is_control) {
                return Err(bad(
                    1,
                    "the epoch must be 1 to 128 printable characters".into(),
                ));
            }
            epoch
        }
        Ok(_) => return Err(bad(1, "the first line must be the header".into())),
        Err(e) => return Err(bad(1, format!("not a header line: {e}"))),
    };
    let store = SledStore::open(dir)?;
    let mut summary = Summary::default();
    let mut pending: Vec<TreeWrites> = Vec::new();
    let mut in_batch = 0;
    let mut number = 1;
    let mut ended = false;
    loop {
        number += 1;
        let Some(text) = read_line(input, number)? else {
            break;
        };
        if ended {
            return Err(bad(number, "a line after the end line".into()));
        }
        let line: Line = serde_json::from_str(&text)
            .map_err(|e| bad(number, format!("not a valid line: {e}")))?;
        match &line {
            Line::Header { .. } => return Err(bad(number, "a second header".into())),
            Line::End { records } => {
                if *records != summary.records() {
                    return Err(bad(
                        number,
                        format!(
                            "the end line counts {records} records, the file has {}",
                            summary.records()
                        ),
                    ));
                }
                ended = true;
                continue;
            }
            Line::Secret { value_b64 } => {
                if summary.secret {
                    return Err(bad(number, "a second secret".into()));
                }
                let secret = unb64("value_b64", value_b64).map_err(|w| bad(number, w))?;
                write_secret(dir, &secret)?;
                summary.secret = true;
                continue;
            }
            Line::Event { raw_b64, .. } | Line::Outcome { raw_b64, .. } => {
                if raw_b64.is_some() {
                    summary.verbatim += 1;
                }
                if matches!(line, Line::Event { .. }) {
                    summary.events += 1;
                } else {
                    summary.outcomes += 1;
                }
            }
            Line::Index { .. } => summary.index += 1,
            Line::Meta { .. } | Line::Record { .. } => summary.other += 1,
        }
        let Some((tree, key, value)) = record_in_tree(line).map_err(|w| bad(number, w))? else {
            continue;
        };
        if key == SledStore::raw_epoch_key() && tree == DEFAULT_TREE {
            return Err(bad(number, "the epoch belongs in the header".into()));
        }
        match pending.iter_mut().find(|(t, _)| *t == tree) {
            Some((_, records)) => records.push((key, Some(value))),
            None => pending.push((tree, vec![(key, Some(value))])),
        }
        in_batch += 1;
        if in_batch >= IMPORT_BATCH {
            for (tree, records) in pending.drain(..) {
                store.raw_write(&tree, records)?;
            }
            in_batch = 0;
        }
    }
    if !ended {
        return Err(bad(
            number,
            "the file ends without an end line (is it truncated?)".into(),
        ));
    }
    for (tree, records) in pending.drain(..) {
        store.raw_write(&tree, records)?;
    }
    store.raw_write(
        DEFAULT_TREE,
        vec![(SledStore::raw_epoch_key(), Some(epoch.into_bytes()))],
    )?;
    store.raw_flush()?;
    Ok(summary)
}

/// Writes `DIR/secret` the way the server creates it (owner-only permissions).
fn write_secret(dir: &Path, secret: &[u8]) -> Result<(), BackupError> {
    let path = dir.join("secret");
    let tmp = dir.join("secret.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(secret)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| io(&format!("cannot write {}", path.display()), e))
}
