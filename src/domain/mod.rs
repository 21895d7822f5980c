//! The domain: what each stream kind accepts and how its events fold into state.
//!
//! Two pure functions per stream kind, in the style of esrs:
//! - `decide(&state, &ctx, &command) -> Result<Decision, Rejection>`: all validation and access
//!   rules live here; it never changes anything.
//! - `apply(&mut state, &envelope)`: folds one event into the state; no logic, cannot fail, so a
//!   replay of the log always rebuilds the same state.
//!
//! This module knows nothing of sockets, sled or time sources: the caller passes the actor, the
//! clock reading and the seq the first event will get in [`Ctx`].
//!
//! # Layout
//! - [`session`]: `session/<id>`, the client panel; its contact-directory commands live in
//!   [`contact`], redirect and claim in [`redirect`], anonymisation in [`anonymize`].
//! - [`contact`]: `contact/<id>`, a contact directory entry.
//! - [`catalog`]: `catalog`, tag definitions, auto-tag rules, templates; also the session-side
//!   tag and template rules that read it.
//! - [`operator`]: `operator/<id>`, an operator's own feed (invitations, assignments, stars).
//! - [`text`]: case- and diacritics-insensitive text matching (auto-tags, search).
//!
//! Rules that span streams read the other streams through [`World`], which the writer fills
//! with the states [`needs`] names before it calls `decide`.
//! - this file: the shared types ([`Ctx`], [`Decision`], [`Rejection`], [`Limits`],
//!   [`Principal`]) and the dispatch by stream kind.

pub mod anonymize;
pub mod catalog;
pub mod contact;
pub mod operator;
pub mod redirect;
pub mod session;
pub mod text;

use copanel_protocol::{
    Actor, CatalogState, Command, ContactState, Envelope, ErrorCode, OperatorState, Role,
    SessionState, StreamKind, StreamName, StreamState,
};

/// Who is asking: the token's claims that matter to the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub id: String,
    /// The token's `role`.
    pub role: Role,
    /// The token's `groups`.
    pub groups: Vec<String>,
}

impl Principal {
    /// The actor recorded on events this principal causes.
    pub fn actor(&self) -> Actor {
        Actor {
            id: self.id.clone(),
            role: self.role,
        }
    }
}

/// Everything `decide` needs besides the state and the command.
#[derive(Clone)]
pub struct Ctx<'a> {
    /// Who sends the command.
    pub principal: &'a Principal,
    /// The stream the command is addressed to.
    pub stream: &'a StreamName,
    /// Milliseconds since the Unix epoch, as the writer read it for this batch.
    pub now: u64,
    /// The seq the first event on `stream` will get (head + 1); ids such as note ids derive
    /// from it, which keeps `decide` deterministic.
    pub next_seq: u64,
    /// The limits in force.
    pub limits: &'a Limits,
    /// The current states of other streams this command needs (see [`needs`]).
    pub world: &'a dyn World,
    /// A fresh unique id from the writer, for things a command creates that need an id unique
    /// across streams (a new contact).
    pub fresh_id: &'a str,
}

/// Read-only access to other streams' current states and the company's operator roster.
pub trait World {
    /// The current state of `stream` in the caller's company, if the writer loaded it (every
    /// stream [`needs`] named is loaded; a stream with no events has its initial state).
    fn state(&self, stream: &StreamName) -> Option<&StreamState>;
    /// Operators of the company known to belong to `group` (from the tokens they connected
    /// with), sorted.
    fn group_members(&self, group: &str) -> Vec<String>;
}

/// A world with no other streams and no roster: for rules that need none, and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct EmptyWorld;

impl World for EmptyWorld {
    fn state(&self, _stream: &StreamName) -> Option<&StreamState> {
        None
    }
    fn group_members(&self, _group: &str) -> Vec<String> {
        Vec::new()
    }
}

/// The other streams `decide` will read for `command` on `stream` in `state`.
pub fn needs(stream: &StreamName, state: &StreamState, command: &Command) -> Vec<StreamName> {
    let catalog = || StreamName::parse("catalog").ok();
    let linked = || match state {
        StreamState::Session(s) => s
            .contact_id
            .as_deref()
            .and_then(|c| StreamName::parse(&format!("contact/{c}")).ok()),
        _ => None,
    };
    let found: Vec<Option<StreamName>> = match (stream.kind(), command) {
        (StreamKind::Session, Command::AddTag { .. } | Command::PostMessage { .. }) => {
            vec![catalog()]
        }
        (StreamKind::Session, Command::LinkContact { contact_id }) => {
            vec![
                StreamName::parse(&format!("contact/{contact_id}")).ok(),
                linked(),
            ]
        }
        (
            StreamKind::Session,
            Command::SetClientInfo { .. }
            | Command::AddToDirectory {}
            | Command::DisconnectContact {}
            | Command::AddContactDetail { .. }
            | Command::RemoveContact {}
            | Command::Anonymize {},
        ) => vec![linked()],
        (StreamKind::Operator, Command::StarTemplate { .. }) => vec![catalog()],
        _ => Vec::new(),
    };
    found.into_iter().flatten().collect()
}

/// What an accepted command appends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Events for the command's own stream, in order (may be empty: an accepted no-op).
    pub events: Vec<copanel_protocol::Event>,
    /// Events for other streams (e.g. the invitee's `operator/<id>` feed), appended in the same
    /// atomic batch.
    pub others: Vec<(StreamName, copanel_protocol::Event)>,
    /// The id of what the command created, returned in the ack (a note, contact, rule or
    /// template id).
    pub created: Option<String>,
}

/// Why a command was refused. Maps onto an error frame at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    /// `invalid`, `forbidden`, `not_found`, `closed` or `too_large`.
    pub code: ErrorCode,
    /// What is wrong, for people; names the field and the limit where there is one.
    pub message: String,
    /// The offending field as a dotted wire path (`command.text`), for `invalid`/`too_large`.
    pub field: Option<String>,
}

impl Rejection {
    /// `invalid`, naming the field (`command.<field>`).
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Rejection {
            code: ErrorCode::Invalid,
            message: message.into(),
            field: Some(format!("command.{field}")),
        }
    }

    /// `too_large`, naming the field (`command.<field>`).
    pub fn too_large(field: &str, message: impl Into<String>) -> Self {
        Rejection {
            code: ErrorCode::TooLarge,
            message: message.into(),
            field: Some(format!("command.{field}")),
        }
    }

    /// `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Rejection {
            code: ErrorCode::Forbidden,
            message: message.into(),
            field: None,
        }
    }

    /// `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Rejection {
            code: ErrorCode::NotFound,
            message: message.into(),
            field: None,
        }
    }

    /// `closed`.
    pub fn closed(message: impl Into<String>) -> Self {
        Rejection {
            code: ErrorCode::Closed,
            message: message.into(),
            field: None,
        }
    }
}

/// Limits from PRODUCT.md section 5. Exceeding one is `too_large` (counts, lengths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Client name, email, phone: characters.
    pub client_field_chars: usize,
    /// Tag name: characters.
    pub tag_chars: usize,
    /// Tags per session.
    pub tags_per_session: usize,
    /// Parameter key: characters.
    pub parameter_key_chars: usize,
    /// Parameter value: characters.
    pub parameter_value_chars: usize,
    /// Parameters per session.
    pub parameters_per_session: usize,
    /// Note text: characters.
    pub note_chars: usize,
    /// Notes per session.
    pub notes_per_session: usize,
    /// Transcript message: characters.
    pub message_chars: usize,
    /// Channel name, operator ids, group names, command ids: characters.
    pub id_chars: usize,
    /// Collaborators (invited or joined) per session.
    pub collaborators_per_session: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            client_field_chars: 256,
            tag_chars: 64,
            tags_per_session: 50,
            parameter_key_chars: 64,
            parameter_value_chars: 1024,
            parameters_per_session: 100,
            note_chars: 4000,
            notes_per_session: 500,
            message_chars: 8000,
            id_chars: 128,
            collaborators_per_session: 50,
        }
    }
}

/// The empty state of a stream kind (before its first event).
pub fn initial(kind: StreamKind) -> StreamState {
    match kind {
        StreamKind::Session => StreamState::Session(SessionState::default()),
        StreamKind::Operator => StreamState::Operator(OperatorState::default()),
        StreamKind::Contact => StreamState::Contact(ContactState::default()),
        StreamKind::Catalog => StreamState::Catalog(CatalogState::default()),
    }
}

/// Decides a command on any stream.
pub fn decide(
    state: &StreamState,
    ctx: &Ctx<'_>,
    command: &Command,
) -> Result<Decision, Rejection> {
    match (ctx.stream.kind(), state) {
        (StreamKind::Session, StreamState::Session(s)) => session::decide(s, ctx, command),
        (StreamKind::Operator, StreamState::Operator(s)) => operator::decide(s, ctx, command),
        (StreamKind::Contact, StreamState::Contact(s)) => contact::decide(s, ctx, command),
        (StreamKind::Catalog, StreamState::Catalog(s)) => catalog::decide(s, ctx, command),
        _ => Err(Rejection::invalid(
            "kind",
            format!(
                "{} is not a command for {} streams",
                command.kind(),
                kind_name(ctx.stream.kind())
            ),
        )),
    }
}

/// Folds one event into any stream's state.
pub fn apply(state: &mut StreamState, env: &Envelope) {
    match state {
        StreamState::Session(s) => session::apply(s, env),
        StreamState::Operator(s) => operator::apply(s, env),
        StreamState::Contact(s) => contact::apply(s, env),
        StreamState::Catalog(s) => catalog::apply(s, env),
    }
}

/// Whether `event` can take read access away from `reader` (it left or was removed, its
/// invitation ended, the session changed hands, the contact was removed). Only after such an
/// event does a live or catching-up subscriber need its access checked again; every other
/// event leaves `can_read` as it was.
pub fn may_revoke(event: &copanel_protocol::Event, reader: &str) -> bool {
    use copanel_protocol::Event as E;
    match event {
        E::CollaboratorRemoved { operator_id }
        | E::CollaboratorLeft { operator_id }
        | E::InvitationDeclined { operator_id }
        | E::InvitationCancelled { operator_id } => operator_id == reader,
        E::SessionRedirected { .. } | E::SessionClaimed { .. } | E::ContactRemoved => true,
        _ => false,
    }
}

/// Whether `who` may read `stream` whose current state is `state`. `Err` carries the refusal
/// (`not_found` for a session that does not exist, `forbidden` otherwise).
pub fn can_read(
    stream: &StreamName,
    state: &StreamState,
    who: &Principal,
) -> Result<(), Rejection> {
    match (stream.kind(), state) {
        (StreamKind::Session, StreamState::Session(s)) => session::can_read(s, who),
        (StreamKind::Operator, StreamState::Operator(_)) => operator::can_read(stream.id(), who),
        (StreamKind::Contact, StreamState::Contact(s)) => contact::can_read(s, who),
        (StreamKind::Catalog, StreamState::Catalog(_)) => catalog::can_read(who),
        _ => Err(Rejection::not_found(format!("{stream} does not exist"))),
    }
}

/// The plural name of a stream kind, for messages.
pub fn kind_name(kind: StreamKind) -> &'static str {
    match kind {
        StreamKind::Session => "session",
        StreamKind::Operator => "operator",
        StreamKind::Contact => "contact",
        StreamKind::Catalog => "catalog",
    }
}
