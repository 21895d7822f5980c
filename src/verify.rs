//! `copanel verify`: an offline consistency check of a whole store.
//!
//! Owns the checks, not the storage: it reads records through the raw API of
//! [`crate::store::sled_store::raw`] and reports every problem it finds instead of stopping at
//! the first. What it checks:
//! - **events**: every stream's seqs run gapless from 1 to its head; every event decodes; the
//!   envelope's stream and seq match its key; a full replay through [`domain::apply`] runs;
//! - **command outcomes**: decode and point at a seq that exists (at most the stream's head);
//! - **derived records** ([`IndexKind`]), recomputed from the log where that is cheap:
//!   session summaries must equal a fold of their session stream (and exist for every opened
//!   session); tag usage counts must equal the log's net `tag_added` − `tag_removed` per folded
//!   tag; each operator's recent tags must be tags that operator added by hand; outbox entries
//!   must point at stored events; the rest (roster, redaction markers, webhooks, webhook
//!   positions) must decode;
//! - **everything else**: the epoch exists; no record has a key outside the documented layout.
//!
//! Not checked (not derivable from the log): the roster's contents (it comes from tokens) and the
//! *order* of recent tags (it depends on the commit order across sessions).
//! A store whose tags were added before the tag index existed shows tag usage differences; the
//! writer never counted those tags, so they are real (harmless) disagreements, and reported.

use crate::derived::sessions::SessionSummary;
use crate::derived::tags::{decode_recent, TagUsage, RECENT_TAGS};
use crate::domain::{self, text};
use crate::store::sled_store::raw::{kind_name, RecordKey, DEFAULT_TREE};
use crate::store::{CommandOutcome, IndexKind, SledStore, StoreResult};
use copanel_protocol::{Envelope, Event, Role, StreamKind, StreamName, TagSource};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// One thing wrong with a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: a stream (`company:stream`), an outcome, a derived record or a raw key.
    pub place: String,
    /// The seq concerned, for events.
    pub seq: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "{} seq {}: {}", self.place, seq, self.what),
            None => write!(f, "{}: {}", self.place, self.what),
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Default)]
pub struct Report {
    /// Streams with at least one event record.
    pub streams: usize,
    /// Event records read.
    pub events: u64,
    /// Command outcomes read.
    pub outcomes: u64,
    /// Derived records read.
    pub index_records: u64,
    /// Every problem, in the order found.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether the store is consistent.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, place: impl Into<String>, seq: Option<u64>, what: impl Into<String>) {
        self.problems.push(Problem {
            place: place.into(),
            seq,
            what: what.into(),
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} streams, {} events, {} command outcomes, {} derived records: ",
            self.streams, self.events, self.outcomes, self.index_records
        )?;
        if self.problems.is_empty() {
            write!(f, "no problems")
        } else {
            write!(f, "{} problems", self.problems.len())?;
            for p in &self.problems {
                write!(f, "\n  {p}")?;
            }
            Ok(())
        }
    }
}

/// The outbox record layout (see [`crate::webhooks`]).
#[derive(Deserialize)]
struct OutboxRecord {
    stream: String,
    seq: u64,
}

/// What the log says the derived records of one company should be.
#[derive(Default)]
struct Expected {
    /// Session id → its summary folded from the stream (`None` if no event changed it).
    sessions: HashMap<String, Option<SessionSummary>>,
    /// Folded tag → net uses.
    tag_uses: HashMap<String, i64>,
    /// Operator id → folded tags it added by hand.
    manual_tags: HashMap<String, HashSet<String>>,
}

/// The replay of one stream in progress.
struct StreamCheck {
    company: String,
    stream: String,
    name: Option<StreamName>,
    last: u64,
    state: Option<copanel_protocol::StreamState>,
    summary: SessionSummary,
    summary_written: bool,
}

/// Checks every record of `store` (see the module docs). `Err` only when the store cannot be
/// read at all; everything wrong with its contents is a [`Problem`] in the report.
pub fn verify(store: &SledStore) -> StoreResult<Report> {
    let mut report = Report::default();
    let mut heads: HashMap<(String, String), u64> = HashMap::new();
    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();

    // Events, stream by stream (they are contiguous and in seq order in key order).
    let mut current: Option<StreamCheck> = None;
    for item in store.raw_scan(b"e") {
        let (key, value) = item?;
        report.events += 1;
        let RecordKey::Event {
            company,
            stream,
            seq,
        } = RecordKey::parse(&key)
        else {
            report.problem(raw_place(&key), None, "malformed event key");
            continue;
        };
        let same = current
            .as_ref()
            .is_some_and(|c| c.company == company && c.stream == stream);
        if !same {
            if let Some(done) = current.take() {
                finish_stream(done, &mut heads, &mut expected);
            }
            report.streams += 1;
            let name = StreamName::parse(&stream).ok();
            if name.is_none() {
                report.problem(
                    format!("{company}:{stream}"),
                    None,
                    "not a valid stream name",
                );
            }
            current = Some(StreamCheck {
                state: name.as_ref().map(|n| domain::initial(n.kind())),
                company,
                stream,
                name,
                last: 0,
                summary: SessionSummary::default(),
                summary_written: false,
            });
        }
        let Some(check) = current.as_mut() else {
            continue;
        };
        let place = format!("{}:{}", check.company, check.stream);
        // Keys sort by seq, so `seq > last` always; a gap is anything past `last + 1`.
        let want = check.last.saturating_add(1);
        if seq != want {
            let what = if seq == want.saturating_add(1) {
                format!("seq {want} is missing (the next stored event is {seq})")
            } else {
                format!(
                    "seqs {want}..={} are missing (the next stored event is {seq})",
                    seq.saturating_sub(1)
                )
            };
            report.problem(&place, Some(want), what);
        }
        check.last = seq;
        let env: Envelope = match rmp_serde::from_slice(&value) {
            Ok(env) => env,
            Err(e) => {
                report.problem(&place, Some(seq), format!("the event does not decode: {e}"));
                continue;
            }
        };
        if env.stream.as_str() != check.stream || env.seq != seq {
            report.problem(
                &place,
                Some(seq),
                format!(
                    "the envelope says {} seq {}, the key says {} seq {seq}",
                    env.stream, env.seq, check.stream
                ),
            );
        }
        if let Some(state) = check.state.as_mut() {
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                domain::apply(state, &env)
            }));
            if applied.is_err() {
                report.problem(&place, Some(seq), "replaying the event panicked in apply");
                check.state = None; // the state is unknown from here on
            }
        }
        if check.name.as_ref().map(|n| n.kind()) == Some(StreamKind::Session) {
            if check.summary.fold(&env.event) {
                check.summary_written = true;
            }
            let exp = expected.entry(check.company.clone()).or_default();
            match &env.event {
                Event::TagAdded { tag, source, .. } => {
                    *exp.tag_uses.entry(text::fold(tag)).or_default() += 1;
                    if *source == TagSource::Manual && env.actor.role != Role::Service {
                        exp.manual_tags
                            .entry(env.actor.id.clone())
                            .or_default()
                            .insert(text::fold(tag));
                    }
                }
                Event::TagRemoved { tag } => {
                    *exp.tag_uses.entry(text::fold(tag)).or_default() -= 1;
                }
                _ => {}
            }
        }
    }
    if let Some(done) = current.take() {
        finish_stream(done, &mut heads, &mut expected);
    }

    // Command outcomes.
    for item in store.raw_scan(b"c") {
        let (key, value) = item?;
        report.outcomes += 1;
        let RecordKey::Outcome {
            company,
            stream,
            command_id,
        } = RecordKey::parse(&key)
        else {
            report.problem(raw_place(&key), None, "malformed command outcome key");
            continue;
        };
        let place = format!("{company}:{stream} command {command_id:?}");
        let outcome: CommandOutcome = match rmp_serde::from_slice(&value) {
            Ok(o) => o,
            Err(e) => {
                report.problem(place, None, format!("the outcome does not decode: {e}"));
                continue;
            }
        };
        let head = heads.get(&(company, stream)).copied().unwrap_or(0);
        if outcome.seq > head {
            report.problem(
                place,
                None,
                format!(
                    "the outcome points at seq {}, but the stream's head is {head}",
                    outcome.seq
                ),
            );
        }
    }

    // Derived records.
    let mut seen_sessions: HashSet<(String, String)> = HashSet::new();
    let mut seen_tags: HashSet<(String, String)> = HashSet::new();
    for item in store.raw_scan(b"x") {
        let (key, value) = item?;
        report.index_records += 1;
        let RecordKey::Index { kind, company, key } = RecordKey::parse(&key) else {
            report.problem(raw_place(&key), None, "malformed derived record key");
            continue;
        };
        let place = format!("{} {company}/{key}", kind_name(kind));
        let exp = expected.get(&company);
        match kind {
            IndexKind::Sessions => {
                seen_sessions.insert((company.clone(), key.clone()));
                let Some(stored) = SessionSummary::decode(&value) else {
                    report.problem(place, None, "the session summary does not decode");
                    continue;
                };
                match exp.and_then(|e| e.sessions.get(&key)) {
                    None => report.problem(place, None, "stale: the log has no such session"),
                    Some(None) => {
                        report.problem(place, None, "stale: the session's events never set one")
                    }
                    Some(Some(replayed)) if *replayed != stored => report.problem(
                        place,
                        None,
                        format!("differs from a replay of the log: stored {stored:?}, replayed {replayed:?}"),
                    ),
                    Some(Some(_)) => {}
                }
            }
            IndexKind::TagUsage => {
                seen_tags.insert((company.clone(), key.clone()));
                let Some(stored) = TagUsage::decode(&value) else {
                    report.problem(place, None, "the tag usage record does not decode");
                    continue;
                };
                let uses = exp.and_then(|e| e.tag_uses.get(&key)).copied().unwrap_or(0);
                if text::fold(&stored.tag) != key {
                    report.problem(
                        &place,
                        None,
                        format!("its spelling {:?} does not fold to the key", stored.tag),
                    );
                }
                if i64::try_from(stored.uses).ok() != Some(uses) {
                    report.problem(
                        place,
                        None,
                        format!("stored {} uses, the log says {}", stored.uses, uses.max(0)),
                    );
                }
            }
            IndexKind::RecentTags => {
                let Some(list) = decode_recent(&value) else {
                    report.problem(place, None, "the recent tags record does not decode");
                    continue;
                };
                if list.len() > RECENT_TAGS {
                    report.problem(
                        &place,
                        None,
                        format!("{} tags, more than the {RECENT_TAGS} kept", list.len()),
                    );
                }
                let added = exp.and_then(|e| e.manual_tags.get(&key));
                for tag in &list {
                    if !added.is_some_and(|a| a.contains(&text::fold(tag))) {
                        report.problem(
                            &place,
                            None,
                            format!("{tag:?} was never added by hand by this operator"),
                        );
                    }
                }
            }
            IndexKind::Roster => {
                if rmp_serde::from_slice::<Vec<String>>(&value).is_err() {
                    report.problem(place, None, "the roster record is not a list of groups");
                }
            }
            IndexKind::Redactions | IndexKind::WebhookPositions => {
                if value.len() != 8 {
                    report.problem(
                        place,
                        None,
                        format!("expected a u64 (8 bytes), found {} bytes", value.len()),
                    );
                }
            }
            IndexKind::Webhooks => {
                if serde_json::from_slice::<serde_json::Value>(&value).is_err() {
                    report.problem(place, None, "the webhook registration is not JSON");
                }
            }
            IndexKind::Outbox => {
                if key.len() != 20 || !key.bytes().all(|b| b.is_ascii_digit()) {
                    report.problem(&place, None, "the key is not a 20-digit outbox sequence");
                }
                match rmp_serde::from_slice::<OutboxRecord>(&value) {
                    Err(e) => report.problem(
                        place,
                        None,
                        format!("the outbox record does not decode: {e}"),
                    ),
                    Ok(r) => {
                        let head = heads
                            .get(&(company, r.stream.clone()))
                            .copied()
                            .unwrap_or(0);
                        if r.seq == 0 || r.seq > head {
                            report.problem(
                                place,
                                None,
                                format!(
                                    "points at {} seq {}, which is not stored (head {head})",
                                    r.stream, r.seq
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
    for (company, exp) in &expected {
        let mut missing: Vec<&String> = exp
            .sessions
            .iter()
            .filter(|(id, s)| {
                s.is_some() && !seen_sessions.contains(&(company.clone(), (*id).clone()))
            })
            .map(|(id, _)| id)
            .collect();
        missing.sort();
        for id in missing {
            report.problem(
                format!("sessions {company}/{id}"),
                None,
                "missing: the log has this session but there is no summary",
            );
        }
        let mut missing: Vec<(&String, &i64)> = exp
            .tag_uses
            .iter()
            .filter(|(t, n)| **n > 0 && !seen_tags.contains(&(company.clone(), (*t).clone())))
            .collect();
        missing.sort();
        for (tag, n) in missing {
            report.problem(
                format!("tag_usage {company}/{tag}"),
                None,
                format!("missing: the log says {n} uses but there is no record"),
            );
        }
    }

    // Metadata and anything outside the layout.
    match store.raw_get(&SledStore::raw_epoch_key())? {
        None => report.problem("m/epoch", None, "the store has no epoch"),
        Some(v) if std::str::from_utf8(&v).is_err() => {
            report.problem("m/epoch", None, "the epoch is not UTF-8")
        }
        Some(_) => {}
    }
    for prefix in (0..=u8::MAX).filter(|b| !b"cemx".contains(b)) {
        for item in store.raw_scan(&[prefix]) {
            let (key, _) = item?;
            report.problem(
                raw_place(&key),
                None,
                "a record outside the store's key layout",
            );
        }
    }
    for tree in store.raw_tree_names()? {
        if tree == DEFAULT_TREE {
            continue;
        }
        for item in store.raw_tree(&tree)? {
            let (key, _) = item?;
            report.problem(
                format!("tree {}", String::from_utf8_lossy(&tree)),
                None,
                format!(
                    "a record in a tree the store does not use: {}",
                    raw_place(&key)
                ),
            );
        }
    }
    Ok(report)
}

/// Records a finished stream's head and derived expectations.
fn finish_stream(
    done: StreamCheck,
    heads: &mut HashMap<(String, String), u64>,
    expected: &mut BTreeMap<String, Expected>,
) {
    if let Some(name) = &done.name {
        if name.kind() == StreamKind::Session {
            let summary = done.summary_written.then_some(done.summary);
            expected
                .entry(done.company.clone())
                .or_default()
                .sessions
                .insert(name.id().to_owned(), summary);
        }
    }
    heads.insert((done.company, done.stream), done.last);
}

/// A raw key, printable.
fn raw_place(key: &[u8]) -> String {
    format!("key {:?}", String::from_utf8_lossy(key).replace('\0', "/"))
}
