//! Frames: every WebSocket message is one frame, a map with a `type`.

use crate::command::Command;
use crate::error::ErrorCode;
use crate::event::Envelope;
use crate::state::StreamState;
use crate::stream::StreamName;
use serde::{Deserialize, Serialize};

/// A frame from a client. `id`, where present, is echoed in the reply so a client can match
/// replies to requests.
///
/// On the wire the frame is tagged by `type`; like [`Command`], the derive is the externally
/// tagged form and [`crate::codec`] converts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Start receiving a stream: `subscribed`, then either the events after `since` or one
    /// `snapshot`, then live events.
    Subscribe {
        /// Request id, echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The stream.
        stream: StreamName,
        /// The last seq the client already has; absent asks for a snapshot instead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    /// Stop receiving a stream.
    Unsubscribe {
        /// Request id, echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The stream.
        stream: StreamName,
    },
    /// Ask for a change. Answered by `ack` once the events are durable, or by `error`.
    Command {
        /// Request id, echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The stream the command is addressed to.
        stream: StreamName,
        /// Unique per stream; a retry with the same id gets the first result and appends nothing.
        command_id: String,
        /// Refuse with `conflict` unless the stream's head is exactly this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_seq: Option<u64>,
        /// The command.
        #[serde(with = "Command")]
        command: Command,
    },
    /// Read a page of a stream's log.
    History {
        /// Request id, echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The stream.
        stream: StreamName,
        /// First seq wanted (default 1).
        #[serde(default = "one")]
        from: u64,
        /// At most this many events (default and maximum 1000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
    /// Read a stream's state as it was right after `seq`.
    StateAt {
        /// Request id, echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The stream.
        stream: StreamName,
        /// The seq (0 = the empty state).
        seq: u64,
    },
    /// Asks a question that is not one stream: `contacts`, `tag_suggestions` or `sessions`.
    Query {
        /// Request id, echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Which query.
        what: QueryKind,
        /// `contacts`: the search text (name, phone fragment, email, identifier).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        q: Option<String>,
        /// `contacts`: at most this many results (default 20, at most 100).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
        /// `tag_suggestions`: the typed prefix (may be empty).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
        /// `sessions`: `open` (default) or `closed`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
    },
    /// An ephemeral hint ("typing in notes") relayed to the stream's other viewers.
    Activity {
        /// The stream (the sender must be subscribed to it).
        stream: StreamName,
        /// What the operator is doing, at most 64 characters.
        what: String,
    },
    /// Liveness check; answered by `pong`.
    Ping {
        /// Request id, echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
}

fn one() -> u64 {
    1
}

impl ClientFrame {
    /// The request id, if the client gave one.
    pub fn id(&self) -> Option<u64> {
        match self {
            ClientFrame::Subscribe { id, .. }
            | ClientFrame::Unsubscribe { id, .. }
            | ClientFrame::Command { id, .. }
            | ClientFrame::History { id, .. }
            | ClientFrame::StateAt { id, .. }
            | ClientFrame::Query { id, .. }
            | ClientFrame::Ping { id } => *id,
            ClientFrame::Activity { .. } => None,
        }
    }
}

/// The `type`s a client may send; anything else is `unknown_type`.
pub const CLIENT_TYPES: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "command",
    "history",
    "state_at",
    "query",
    "activity",
    "ping",
];

/// The queries of a `query` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryKind {
    /// Search the company's contact directory.
    Contacts,
    /// Tags to offer while typing: the company's by usage, and the operator's own recent ones.
    TagSuggestions,
    /// The operator's own sessions, invitations and assignments.
    Sessions,
}

/// One contact found by `query contacts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactHit {
    /// The contact's id (the stream is `contact/<id>`).
    pub contact_id: String,
    /// Name.
    pub name: String,
    /// Main phone.
    pub phone: String,
    /// Main email.
    pub email: String,
    /// Further phones, emails and identifiers.
    pub details: Vec<crate::state::ContactDetailEntry>,
}

/// One tag offered by `query tag_suggestions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagSuggestion {
    /// The tag.
    pub tag: String,
    /// Background colour from the catalog (default if it has none).
    pub background: String,
    /// Text colour.
    pub text: String,
    /// How many sessions carry it now.
    pub uses: u64,
}

/// One session in `query sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The session's id (the stream is `session/<id>`).
    pub session_id: String,
    /// `open` or `closed`.
    pub status: crate::state::SessionStatus,
    /// Its channel.
    pub channel: String,
    /// Its owner.
    pub owner: Option<crate::command::Owner>,
    /// Client name.
    pub client_name: String,
    /// Why it is listed: `owner`, `collaborator`, `invited`, `group`, or `supervisor` (for
    /// supervisors, admins and the platform, who see every session).
    pub role: String,
}

/// One viewer in a `presence` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewer {
    /// The operator (or service) id.
    pub operator_id: String,
    /// Its role.
    pub role: crate::event::Role,
    /// Its display name, when the token has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The subscription is live from `head` on (see `subscribe`).
    Subscribed {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The stream.
        stream: StreamName,
        /// The stream's last seq at the moment of subscribing.
        head: u64,
        /// The store's id; if it changes, a client must reset its copy instead of resuming.
        epoch: String,
    },
    /// The subscription ended.
    Unsubscribed {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The stream.
        stream: StreamName,
    },
    /// The state of a stream at `seq`, sent once after `subscribed` when `since` was absent.
    Snapshot {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The stream.
        stream: StreamName,
        /// The seq the state includes.
        seq: u64,
        /// The state.
        state: StreamState,
    },
    /// One event of a subscribed stream.
    Event(Envelope),
    /// The command's events are durable.
    Ack {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The command's stream.
        stream: StreamName,
        /// The command id.
        command_id: String,
        /// The last seq appended on `stream` by this command (the head when it appended none).
        seq: u64,
        /// The id of what the command created: the note (`add_note`, `redirect` with a note),
        /// the contact (`add_to_directory`), the rule (`add_autotag_rule`), the template
        /// (`create_template`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        created: Option<String>,
    },
    /// A page of history.
    History {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The stream.
        stream: StreamName,
        /// The events, in order.
        events: Vec<Envelope>,
        /// The `from` of the next page, or absent at the end of the log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<u64>,
    },
    /// A stream's state at a seq (reply to `state_at`).
    State {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The stream.
        stream: StreamName,
        /// The seq the state includes.
        seq: u64,
        /// The state.
        state: StreamState,
    },
    /// Reply to `query`: the field named after the query is set.
    Result {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Which query.
        what: QueryKind,
        /// `contacts`: the matches, best first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contacts: Option<Vec<ContactHit>>,
        /// `tag_suggestions`: company tags by usage, most used first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        company: Option<Vec<TagSuggestion>>,
        /// `tag_suggestions`: this operator's own recent tags, most recent first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mine: Option<Vec<TagSuggestion>>,
        /// `sessions`: the operator's sessions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sessions: Option<Vec<SessionSummary>>,
    },
    /// Who is subscribed to a stream right now; sent to its subscribers on every change.
    Presence {
        /// The stream.
        stream: StreamName,
        /// The viewers, one entry per operator however many connections it has.
        viewers: Vec<Viewer>,
    },
    /// Another viewer's activity hint.
    Activity {
        /// The stream.
        stream: StreamName,
        /// Who.
        operator: String,
        /// What.
        what: String,
    },
    /// Reply to `ping`.
    Pong {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A request failed, or the connection is about to be closed.
    Error {
        /// Echo of the request id, when the failing frame had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The code.
        code: ErrorCode,
        /// A human-readable explanation naming the problem.
        message: String,
        /// `invalid`: the offending field (a dotted path such as `command.text`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
        /// `conflict`: the stream's current head.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        head: Option<u64>,
        /// The stream the failure concerns, when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<StreamName>,
    },
}

impl ServerFrame {
    /// An error frame with just a code and a message.
    pub fn error(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            id,
            code,
            message: message.into(),
            field: None,
            head: None,
            stream: None,
        }
    }
}
