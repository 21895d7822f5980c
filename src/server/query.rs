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

async fn contacts(_app: &Arc<App>, _company: &Arc<str>, _p: &Principal, q: &Query) -> ServerFrame {
    ServerFrame::error(q.id, ErrorCode::Invalid, "not implemented yet")
}

async fn tag_suggestions(
    _app: &Arc<App>,
    _company: &Arc<str>,
    _p: &Principal,
    q: &Query,
) -> ServerFrame {
    ServerFrame::error(q.id, ErrorCode::Invalid, "not implemented yet")
}

async fn sessions(_app: &Arc<App>, _company: &Arc<str>, _p: &Principal, q: &Query) -> ServerFrame {
    ServerFrame::error(q.id, ErrorCode::Invalid, "not implemented yet")
}
