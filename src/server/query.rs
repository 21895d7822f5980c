//! `query` frames: questions that span streams (contact search, tag suggestions, an operator's
//! sessions). Each answers from an index, never by replaying streams.

use super::App;
use crate::domain::Principal;
use copanel_protocol::{ErrorCode, QueryKind, ServerFrame};
use std::sync::Arc;

/// A `query` frame's parameters.
pub(super) struct Query {
    pub id: Option<u64>,
    pub what: QueryKind,
    pub q: Option<String>,
    pub limit: Option<u64>,
    pub prefix: Option<String>,
    pub status: Option<String>,
}

/// Answers a query for `principal` of `company`.
pub(super) async fn answer(
    app: &Arc<App>,
    company: &Arc<str>,
    principal: &Principal,
    q: Query,
) -> ServerFrame {
    match q.what {
        QueryKind::Contacts => contacts(app, company, principal, &q).await,
        QueryKind::TagSuggestions => tag_suggestions(app, company, principal, &q).await,
        QueryKind::Sessions => sessions(app, company, principal, &q).await,
    }
}

/// `query contacts {q, limit?}`: searches the caller's company directory. Every role of the
/// company may search; the index is scoped by the token's company, so no other company's
/// contacts can match.
async fn contacts(app: &Arc<App>, company: &Arc<str>, _p: &Principal, q: &Query) -> ServerFrame {
    let (text, limit) = match contacts_params(q) {
        Ok(v) => v,
        Err(e) => return field_error(q.id, e),
    };
    let index = app.contacts.clone();
    let store = app.store.clone();
    let company = company.clone();
    // The first search of a company reads its contacts from the log: blocking sled reads.
    let found = tokio::task::spawn_blocking(move || {
        index
            .ensure_loaded(store.as_ref(), &company)
            .map(|()| index.search(&company, &text, limit))
    })
    .await;
    match found {
        Ok(Ok(hits)) => ServerFrame::Result {
            id: q.id,
            what: QueryKind::Contacts,
            contacts: Some(hits),
            company: None,
            mine: None,
            sessions: None,
        },
        Ok(Err(e)) => ServerFrame::error(
            q.id,
            ErrorCode::Unavailable,
            format!("the contact directory could not be read ({e}); retry"),
        ),
        Err(e) => ServerFrame::error(
            q.id,
            ErrorCode::Internal,
            format!("contact search failed: {e}"),
        ),
    }
}

/// `query tag_suggestions {prefix?}`: tags to offer while an operator types. `company`: the
/// company's tags (in use on sessions now, or defined in the catalog) by usage, most used
/// first, then by name, at most [`SUGGESTIONS`]; `mine`: the caller's own recently added tags,
/// most recent first. Both only those matching the prefix (ignoring case and diacritics, at
/// the start of the tag or of any of its words), each with its catalog colours (or the
/// defaults). Every role of the company may ask; everything read is scoped by its company.
async fn tag_suggestions(
    app: &Arc<App>,
    company: &Arc<str>,
    p: &Principal,
    q: &Query,
) -> ServerFrame {
    let prefix = q.prefix.as_deref().unwrap_or("");
    let n = prefix.chars().count();
    if n > SUGGESTION_PREFIX_CHARS {
        return suggestion_error(
            q.id,
            ErrorCode::TooLarge,
            Some("prefix"),
            format!("prefix is {n} characters; the limit is {SUGGESTION_PREFIX_CHARS}"),
        );
    }
    let definitions = match catalog_definitions(app, company).await {
        Ok(d) => d,
        Err(f) => return suggestion_error(q.id, f.0, None, f.1),
    };
    let store = app.store.clone();
    let (c, operator) = (company.clone(), p.id.clone());
    // Derived records are sled reads: blocking, so off the connection's task.
    let read = tokio::task::spawn_blocking(move || {
        use crate::store::IndexKind;
        let usage = store.index_scan(&c, IndexKind::TagUsage)?;
        let recent = store.index_get(&c, IndexKind::RecentTags, &operator)?;
        Ok::<_, crate::store::StoreError>((usage, recent))
    })
    .await;
    let (usage, recent) = match read {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "tag suggestions: store unavailable");
            return suggestion_error(
                q.id,
                ErrorCode::Unavailable,
                None,
                format!("the store is unavailable: {e}"),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "tag suggestions task failed");
            return suggestion_error(
                q.id,
                ErrorCode::Internal,
                None,
                "tag suggestions failed".into(),
            );
        }
    };
    let (company_list, mine) = suggest(prefix, &definitions, &usage, recent.as_deref());
    ServerFrame::Result {
        id: q.id,
        what: QueryKind::TagSuggestions,
        contacts: None,
        company: Some(company_list),
        mine: Some(mine),
        sessions: None,
    }
}

/// `query sessions {status?}`: the sessions the caller has a part in, with that status (`open`
/// by default, or `closed`), sorted by session id, each with why it is listed: `owner`,
/// `collaborator` (joined), `invited`, or `group` (waiting in one of the caller's groups).
/// Supervisors, admins and the platform get every session of the company, as `supervisor`.
/// Answers from the derived session summaries (see [`crate::derived::sessions`]), never by
/// replaying streams; the scan is scoped to the token's company.
async fn sessions(app: &Arc<App>, company: &Arc<str>, p: &Principal, q: &Query) -> ServerFrame {
    use crate::derived::sessions::SessionSummary as Stored;
    use copanel_protocol::{CollaboratorStatus, Owner, Role};

    /// Why `p` sees session `s` in its list, or `None` if it does not. The strongest reason
    /// wins: owner, then joined collaborator, then invitee, then member of the waiting group.
    fn session_role(s: &Stored, p: &Principal) -> Option<&'static str> {
        if p.role == Role::Service || p.role.is_supervisor() {
            return Some("supervisor");
        }
        if let Some(Owner::Operator { operator_id }) = &s.owner {
            if operator_id == &p.id {
                return Some("owner");
            }
        }
        match s.collaborators.iter().find(|(id, _)| id == &p.id) {
            Some((_, CollaboratorStatus::Joined)) => return Some("collaborator"),
            Some((_, CollaboratorStatus::Invited)) => return Some("invited"),
            None => {}
        }
        match &s.owner {
            Some(Owner::Group { group }) if p.groups.iter().any(|g| g == group) => Some("group"),
            _ => None,
        }
    }

    /// A client-sent status made safe to quote: cut short and debug-escaped.
    fn shown_status(s: &str) -> String {
        let cut: String = s.chars().take(32).collect();
        format!("{cut:?}")
    }

    let status = match q.status.as_deref() {
        None | Some("open") => copanel_protocol::SessionStatus::Open,
        Some("closed") => copanel_protocol::SessionStatus::Closed,
        Some(other) => {
            return ServerFrame::Error {
                id: q.id,
                code: ErrorCode::Invalid,
                message: format!(
                    "status must be \"open\" or \"closed\", not {}",
                    shown_status(other)
                ),
                field: Some("status".into()),
                head: None,
                stream: None,
            }
        }
    };
    // A company's index can be large: read it off the async workers.
    let store = app.store.clone();
    let scoped = company.clone();
    let scanned = tokio::task::spawn_blocking(move || {
        store.index_scan(&scoped, crate::store::IndexKind::Sessions)
    })
    .await;
    let records = match scanned {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "session summaries unreadable");
            return ServerFrame::error(
                q.id,
                ErrorCode::Unavailable,
                format!("the store is unavailable: {e}"),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "session scan task failed");
            return ServerFrame::error(q.id, ErrorCode::Internal, "the session scan failed");
        }
    };
    let mut out: Vec<copanel_protocol::SessionSummary> = records
        .into_iter()
        .filter_map(|(session_id, bytes)| {
            let s = Stored::decode(&bytes)?;
            if s.status != status {
                return None;
            }
            let role = session_role(&s, p)?;
            Some(copanel_protocol::SessionSummary {
                session_id,
                status: s.status,
                channel: s.channel,
                owner: s.owner,
                client_name: s.client_name,
                role: role.to_owned(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.session_id.cmp(&b.session_id));
    ServerFrame::Result {
        id: q.id,
        what: QueryKind::Sessions,
        contacts: None,
        company: None,
        mine: None,
        sessions: Some(out),
    }
}

// ---------------------------------------------------------------------------------------------
// Contact search helpers.
// ---------------------------------------------------------------------------------------------

/// Longest `q` of `query contacts`, characters.
const CONTACTS_Q_CHARS: usize = 256;
/// `query contacts` results when `limit` is not given.
const CONTACTS_DEFAULT_LIMIT: u64 = 20;
/// Most `query contacts` results.
const CONTACTS_MAX_LIMIT: u64 = 100;

/// A refused `query` field: (code, field, message).
type FieldError = (ErrorCode, &'static str, String);

/// An error frame naming a frame field (`q`, `limit`).
fn field_error(id: Option<u64>, (code, field, message): FieldError) -> ServerFrame {
    ServerFrame::Error {
        id,
        code,
        message,
        field: Some(field.to_owned()),
        head: None,
        stream: None,
    }
}

/// Checks `q` (required, not blank, at most 256 characters) and `limit` (default 20,
/// 1..=100).
fn contacts_params(q: &Query) -> Result<(String, usize), FieldError> {
    let text = match q.q.as_deref() {
        Some(t) if !t.trim().is_empty() => t,
        Some(_) => {
            return Err((
                ErrorCode::Invalid,
                "q",
                "q is blank; give a name, phone fragment, email or identifier".into(),
            ))
        }
        None => {
            return Err((
                ErrorCode::Invalid,
                "q",
                "query contacts needs q (a name, phone fragment, email or identifier)".into(),
            ))
        }
    };
    let n = text.chars().count();
    if n > CONTACTS_Q_CHARS {
        return Err((
            ErrorCode::TooLarge,
            "q",
            format!("q is {n} characters; the limit is {CONTACTS_Q_CHARS}"),
        ));
    }
    let limit = q.limit.unwrap_or(CONTACTS_DEFAULT_LIMIT);
    if limit == 0 {
        return Err((
            ErrorCode::Invalid,
            "limit",
            "limit must be at least 1".into(),
        ));
    }
    if limit > CONTACTS_MAX_LIMIT {
        return Err((
            ErrorCode::TooLarge,
            "limit",
            format!("limit is {limit}; at most {CONTACTS_MAX_LIMIT} contacts are returned"),
        ));
    }
    // At most 100, so the conversion cannot fail.
    let limit = usize::try_from(limit).unwrap_or(100);
    Ok((text.to_owned(), limit))
}

// ---------------------------------------------------------------------------------------------
// tag_suggestions helpers.
// ---------------------------------------------------------------------------------------------

/// Most tags in each list of a `tag_suggestions` answer.
const SUGGESTIONS: usize = 20;
/// Longest `tag_suggestions` prefix, in characters (a tag's own limit by default).
const SUGGESTION_PREFIX_CHARS: usize = 64;

fn suggestion_error(
    id: Option<u64>,
    code: ErrorCode,
    field: Option<&str>,
    message: String,
) -> ServerFrame {
    ServerFrame::Error {
        id,
        code,
        message,
        field: field.map(str::to_owned),
        head: None,
        stream: None,
    }
}

/// The catalog's tag definitions as committed (the state the hub serves), loading the catalog
/// into the hub first if no one has yet. `Err((code, message))` when it cannot be read.
async fn catalog_definitions(
    app: &Arc<App>,
    company: &Arc<str>,
) -> Result<Vec<copanel_protocol::TagDefinition>, (ErrorCode, String)> {
    use crate::store::StreamId;
    use copanel_protocol::{StreamName, StreamState};
    let name = StreamName::parse("catalog")
        .map_err(|e| (ErrorCode::Internal, format!("catalog stream name: {e}")))?;
    let sid = StreamId::new(company.clone(), name);
    if app.hub.read(&sid, |_| ()).is_none() {
        app.writer.load(sid.clone()).await.map_err(|e| {
            tracing::warn!(error = %e, "tag suggestions: catalog not loaded");
            (
                ErrorCode::Unavailable,
                format!("the store is unavailable: {e}"),
            )
        })?;
    }
    let read = app.hub.read(&sid, |c| match &c.state {
        StreamState::Catalog(cat) => cat.tag_definitions.clone(),
        _ => Vec::new(),
    });
    // `None`: evicted between load and read, vanishingly rare; the client may retry.
    read.ok_or((
        ErrorCode::Unavailable,
        "the catalog was being reloaded; retry".into(),
    ))
}

/// Whether a tag is offered for `prefix` (already folded and trimmed): the folded tag starts
/// with it at its beginning or at the beginning of one of its words, so `vol` offers
/// `Zpětné volání`.
fn tag_matches(tag: &str, prefix: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    let folded = crate::domain::text::fold(tag);
    let mut previous_alnum = false;
    for (i, c) in folded.char_indices() {
        let alnum = c.is_alphanumeric();
        let word_start = i == 0 || (alnum && !previous_alnum);
        if word_start && folded.get(i..).is_some_and(|rest| rest.starts_with(prefix)) {
            return true;
        }
        previous_alnum = alnum;
    }
    false
}

/// Builds both lists from the catalog's definitions, the `TagUsage` records and the caller's
/// `RecentTags` record. Pure, so the ordering rules are easy to read in one place.
fn suggest(
    prefix: &str,
    definitions: &[copanel_protocol::TagDefinition],
    usage: &[(String, Vec<u8>)],
    recent: Option<&[u8]>,
) -> (
    Vec<copanel_protocol::TagSuggestion>,
    Vec<copanel_protocol::TagSuggestion>,
) {
    use crate::derived::tags::{decode_recent, TagUsage};
    use crate::domain::catalog::{DEFAULT_BACKGROUND, DEFAULT_TEXT};
    use crate::domain::text::fold;
    use copanel_protocol::TagSuggestion;
    use std::collections::HashMap;

    let prefix = fold(prefix.trim());
    // Folded tag → (catalog spelling, background, text).
    let defined: HashMap<String, &copanel_protocol::TagDefinition> =
        definitions.iter().map(|d| (fold(&d.tag), d)).collect();
    let uses: HashMap<String, TagUsage> = usage
        .iter()
        .filter_map(|(k, v)| TagUsage::decode(v).map(|u| (k.clone(), u)))
        .filter(|(_, u)| u.uses > 0)
        .collect();
    let item = |tag: &str| -> TagSuggestion {
        let key = fold(tag);
        let n = uses.get(&key).map_or(0, |u| u.uses);
        match defined.get(&key) {
            Some(d) => TagSuggestion {
                tag: d.tag.clone(),
                background: d.background.clone(),
                text: d.text.clone(),
                uses: n,
            },
            None => TagSuggestion {
                tag: tag.to_owned(),
                background: DEFAULT_BACKGROUND.to_owned(),
                text: DEFAULT_TEXT.to_owned(),
                uses: n,
            },
        }
    };

    let mut company: Vec<TagSuggestion> = uses
        .values()
        .map(|u| u.tag.as_str())
        .chain(
            definitions
                .iter()
                .filter(|d| !uses.contains_key(&fold(&d.tag)))
                .map(|d| d.tag.as_str()),
        )
        .filter(|t| tag_matches(t, &prefix))
        .map(item)
        .collect();
    company.sort_by(|a, b| {
        b.uses
            .cmp(&a.uses)
            .then_with(|| fold(&a.tag).cmp(&fold(&b.tag)))
            .then_with(|| a.tag.cmp(&b.tag))
    });
    company.truncate(SUGGESTIONS);

    let mut mine: Vec<TagSuggestion> = recent
        .and_then(decode_recent)
        .unwrap_or_default()
        .iter()
        .filter(|t| tag_matches(t, &prefix))
        .map(|t| item(t))
        .collect();
    mine.truncate(SUGGESTIONS);
    (company, mine)
}
