//! The contact directory's search index: per company, in memory, built from the log on first
//! use and kept current by the writer after every committed contact event.
//!
//! Each active contact is kept with its state folded from its stream and the searchable forms
//! of its fields (folded name, folded emails and identifiers, the digits of its phones). Those
//! forms are laid end to end in two flat strings per company (text, phone digits), so a search
//! is one substring scan of each string rather than thousands of small ones, and never a
//! replay. A change appends the contact's new segment and marks its old one dead; the strings
//! are compacted once dead segments outnumber live ones, so an update costs the size of one
//! contact (amortised) and a search never waits for a rebuild. Removed contacts leave the
//! index; only the seq of their last event stays, so that a late report cannot bring them back.
//!
//! Consistency with the writer: a company is built under its own lock, and the writer's
//! [`ContactIndex::on_committed`] for that company waits for that lock. Every event is in the
//! log before the writer reports it, so an event is either read by the build or reported after
//! it; applying only events above each contact's known seq makes the two paths meet without
//! loss or double application. A company that was never built ignores reports: its build will
//! read everything from the log.
//!
//! Never: read the log while holding the index-wide map lock (only a company's own lock), or
//! let one company's search see another's contacts (every call names its company).

use crate::domain::{self, text};
use crate::store::{Store, StoreResult};
use copanel_protocol::{
    ContactDetail, ContactHit, ContactState, ContactStatus, Envelope, StreamKind, StreamState,
};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;

/// Events read per page while building a company.
const BUILD_PAGE: usize = 1000;

/// Digits a query needs before it is also matched against phone digits; fewer would match
/// nearly every phone.
pub const MIN_PHONE_DIGITS: usize = 3;

/// Separates fields in the flat text. Stored values never hold control characters (the
/// session rules refuse them), and a query holding one is not matched as text, so no match
/// can span two fields.
const FIELD_END: char = '\0';

/// Separates phones in the flat digits; anything but a digit would do.
const PHONE_END: char = ' ';

/// Contacts per block of a flat string ruled out by one `contains`.
const SCAN_BLOCK: usize = 16;

/// Dead segments tolerated before a compaction, whatever the number of live ones.
const COMPACT_MIN: usize = 256;

/// The index of every company's contacts.
#[derive(Default)]
pub struct ContactIndex {
    /// Company → its directory. A plain mutex: held only to find or insert a company's entry,
    /// never while reading the log or searching.
    companies: Mutex<HashMap<String, Arc<CompanyIndex>>>,
}

/// One company's slot. The lock is held for writing during the build (so the writer's reports
/// wait for it) and for each report; searches share it for reading.
#[derive(Default)]
struct CompanyIndex {
    /// `None` until built (or after a failed build, which the next search retries).
    directory: RwLock<Option<Directory>>,
}

/// A company's contacts.
#[derive(Default)]
struct Directory {
    /// Active contacts: id → their segment in `flat`.
    live: HashMap<String, usize>,
    /// Removed contacts by id → the seq of their last applied event.
    gone: HashMap<String, u64>,
    /// Every active contact's searchable forms, end to end.
    flat: Flat,
}

/// One active contact and its searchable forms.
struct Indexed {
    /// The contact's id (the stream is `contact/<id>`).
    id: String,
    /// The seq of the last event folded in.
    seq: u64,
    /// The contact as its stream folds.
    state: ContactState,
    /// `text::fold` of the name.
    name: String,
    /// Folded main email, further emails and identifiers.
    texts: Vec<String>,
    /// The digits of the main phone and further phones (empty ones left out).
    phones: Vec<String>,
}

/// Contacts' searchable forms laid end to end, one segment per contact version.
#[derive(Default)]
struct Flat {
    /// Segment `k`'s contact, or `None` once superseded or removed (a dead segment).
    entries: Vec<Option<Indexed>>,
    /// Dead segments.
    dead: usize,
    /// Per segment: the folded name and texts, each followed by [`FIELD_END`].
    text: String,
    /// `text_ends[k]`: where segment `k` of `text` ends (exclusive).
    text_ends: Vec<usize>,
    /// Per segment: the phones' digits, each followed by [`PHONE_END`].
    phones: String,
    /// `phone_ends[k]`: where segment `k` of `phones` ends (exclusive).
    phone_ends: Vec<usize>,
}

impl Flat {
    /// Appends a contact's segment; returns its index.
    fn push(&mut self, e: Indexed) -> usize {
        for t in std::iter::once(&e.name).chain(&e.texts) {
            self.text.push_str(t);
            self.text.push(FIELD_END);
        }
        self.text_ends.push(self.text.len());
        for p in &e.phones {
            self.phones.push_str(p);
            self.phones.push(PHONE_END);
        }
        self.phone_ends.push(self.phones.len());
        self.entries.push(Some(e));
        self.entries.len() - 1
    }

    /// Marks segment `k` dead and hands back its contact.
    fn take(&mut self, k: usize) -> Option<Indexed> {
        let e = self.entries.get_mut(k)?.take();
        if e.is_some() {
            self.dead += 1;
        }
        e
    }

    /// Marks in `hit` every segment of `hay` that holds `needle`.
    ///
    /// Segments are taken in blocks: `str::contains` rules out a block that holds no match
    /// with the standard library's vectorised search, several times faster than `find`; only
    /// blocks that hold one are walked segment by segment. Within a block, after a match the
    /// scan resumes at the next segment, so a broad query costs one step per contact, not
    /// one per occurrence.
    fn mark(hay: &str, ends: &[usize], needle: &str, hit: &mut [bool]) {
        let mut start = 0;
        for (b, block) in ends.chunks(SCAN_BLOCK).enumerate() {
            let Some(&end) = block.last() else {
                break;
            };
            let found = hay.get(start..end).is_some_and(|h| h.contains(needle));
            let mut from = start;
            start = end;
            if !found {
                continue;
            }
            while let Some(pos) = hay.get(from..end).and_then(|rest| rest.find(needle)) {
                let k = block.partition_point(|&e| e <= from + pos);
                let (Some(h), Some(&next)) = (hit.get_mut(b * SCAN_BLOCK + k), block.get(k)) else {
                    break;
                };
                *h = true;
                from = next;
            }
        }
    }
}

impl Indexed {
    fn new(id: &str, seq: u64, state: ContactState) -> Self {
        let mut texts = Vec::new();
        let mut phones = Vec::new();
        let mut phone = |p: &str| {
            let d = text::digits(p);
            if !d.is_empty() {
                phones.push(d);
            }
        };
        phone(&state.phone);
        let is_phone = |d: &&copanel_protocol::ContactDetailEntry| d.detail == ContactDetail::Phone;
        for d in state.details.iter().filter(is_phone) {
            phone(&d.value);
        }
        if !state.email.is_empty() {
            texts.push(text::fold(&state.email));
        }
        for d in state.details.iter().filter(|d| !is_phone(d)) {
            texts.push(text::fold(&d.value));
        }
        Indexed {
            id: id.to_owned(),
            seq,
            name: text::fold(&state.name),
            state,
            texts,
            phones,
        }
    }

    fn hit(&self) -> ContactHit {
        ContactHit {
            contact_id: self.id.clone(),
            name: self.state.name.clone(),
            phone: self.state.phone.clone(),
            email: self.state.email.clone(),
            details: self.state.details.clone(),
        }
    }
}

/// A match while ranking: (its name does not start with the query, the contact).
type Found<'a> = (bool, &'a Indexed);

/// The contract's order: name-prefix matches first, then by folded name, then by id.
fn rank(a: &Found<'_>, b: &Found<'_>) -> std::cmp::Ordering {
    (a.0, &a.1.name, &a.1.id).cmp(&(b.0, &b.1.name, &b.1.id))
}

impl Directory {
    /// The seq of the last event applied to `id`, 0 if none.
    fn known(&self, id: &str) -> u64 {
        let live = self.live.get(id).and_then(|&k| self.flat.entries.get(k));
        match live {
            Some(Some(e)) => e.seq,
            _ => self.gone.get(id).copied().unwrap_or(0),
        }
    }

    /// Folds one event of `contact/<id>` in, unless it was already.
    fn apply(&mut self, id: &str, env: &Envelope) {
        if env.seq <= self.known(id) {
            return;
        }
        let old = self.live.remove(id).and_then(|k| self.flat.take(k));
        let mut state = match old {
            Some(e) => StreamState::Contact(e.state),
            None => domain::initial(StreamKind::Contact),
        };
        domain::apply(&mut state, env);
        if let StreamState::Contact(state) = state {
            if state.status == ContactStatus::Active {
                self.gone.remove(id);
                let k = self.flat.push(Indexed::new(id, env.seq, state));
                self.live.insert(id.to_owned(), k);
            } else {
                self.gone.insert(id.to_owned(), env.seq);
            }
        }
        if self.flat.dead > COMPACT_MIN && self.flat.dead > self.live.len() {
            self.compact();
        }
    }

    /// Rewrites the flat strings with live segments only.
    fn compact(&mut self) {
        let old = std::mem::take(&mut self.flat);
        for e in old.entries.into_iter().flatten() {
            let id = e.id.clone();
            let k = self.flat.push(e);
            self.live.insert(id, k);
        }
    }

    fn search(&self, q: &str, limit: usize) -> Vec<ContactHit> {
        let folded = text::fold(q.trim());
        let digits = text::digits(q);
        let flat = &self.flat;
        let mut hit = vec![false; flat.entries.len()];
        if !folded.is_empty() && !folded.contains(FIELD_END) {
            Flat::mark(&flat.text, &flat.text_ends, &folded, &mut hit);
        }
        if digits.len() >= MIN_PHONE_DIGITS {
            Flat::mark(&flat.phones, &flat.phone_ends, &digits, &mut hit);
        }
        let mut found: Vec<Found<'_>> = flat
            .entries
            .iter()
            .zip(&hit)
            .filter(|(_, h)| **h)
            .filter_map(|(e, _)| e.as_ref())
            .map(|e| {
                let prefix = !folded.is_empty() && e.name.starts_with(&folded);
                (!prefix, e)
            })
            .collect();
        // Only the first `limit` need ordering; partitioning first keeps a broad query cheap.
        if found.len() > limit && limit > 0 {
            found.select_nth_unstable_by(limit - 1, rank);
        }
        found.truncate(limit);
        found.sort_unstable_by(rank);
        found.into_iter().map(|(_, e)| e.hit()).collect()
    }
}

impl ContactIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn company(&self, company: &str) -> Option<Arc<CompanyIndex>> {
        self.companies.lock().get(company).cloned()
    }

    fn company_or_insert(&self, company: &str) -> Arc<CompanyIndex> {
        self.companies
            .lock()
            .entry(company.to_owned())
            .or_default()
            .clone()
    }

    /// Called by the writer, in commit order, for every committed event of a `contact/` stream.
    /// Waits while the company is being built; does nothing for a company not built yet.
    pub fn on_committed(&self, company: &str, env: &Envelope) {
        let Some(c) = self.company(company) else {
            return;
        };
        let mut dir = c.directory.write();
        if let Some(dir) = dir.as_mut() {
            dir.apply(env.stream.id(), env);
        }
    }

    /// Makes sure a company's contacts are indexed (reads the log on first use).
    ///
    /// Blocking (it reads the store): call it off the async runtime's workers.
    pub fn ensure_loaded(&self, store: &dyn Store, company: &str) -> StoreResult<()> {
        let c = self.company_or_insert(company);
        if c.directory.read().is_some() {
            return Ok(());
        }
        // Held for writing during the whole build, so reports for this company wait for it
        // and then apply only what the build did not read.
        let mut slot = c.directory.write();
        if slot.is_some() {
            return Ok(()); // built by another caller while this one waited
        }
        let mut dir = Directory::default();
        for (id, _head) in store.company_streams(company, "contact/")? {
            let contact = id.stream.id().to_owned();
            let mut from = 1;
            loop {
                let page = store.read(&id, from, BUILD_PAGE)?;
                for env in &page {
                    dir.apply(&contact, env);
                    from = env.seq + 1;
                }
                if page.len() < BUILD_PAGE {
                    break;
                }
            }
        }
        dir.compact();
        *slot = Some(dir);
        Ok(())
    }

    /// Whether a company's contacts are indexed.
    pub fn is_loaded(&self, company: &str) -> bool {
        self.company(company)
            .is_some_and(|c| c.directory.read().is_some())
    }

    /// Searches a company's directory (which must be loaded, see [`Self::ensure_loaded`];
    /// an unloaded company finds nothing).
    ///
    /// `q` matches when its folded form (lower case, no diacritics, trimmed) is a substring of
    /// the folded name, an email or an identifier, or when it holds at least
    /// [`MIN_PHONE_DIGITS`] digits and those digits are a substring of a phone's digits.
    /// At most `limit` hits: contacts whose folded name starts with the folded query first,
    /// then by folded name, then by id.
    pub fn search(&self, company: &str, q: &str, limit: usize) -> Vec<ContactHit> {
        let Some(c) = self.company(company) else {
            return Vec::new();
        };
        let dir = c.directory.read();
        match dir.as_ref() {
            Some(dir) => dir.search(q, limit),
            None => Vec::new(),
        }
    }

    /// How many active contacts a loaded company has (0 if not loaded).
    pub fn contact_count(&self, company: &str) -> usize {
        self.company(company)
            .and_then(|c| c.directory.read().as_ref().map(|d| d.live.len()))
            .unwrap_or(0)
    }
}
