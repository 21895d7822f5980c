//! copanel wire protocol v1.
//!
//! This crate is the wire and nothing else: the frames a client and the server exchange over the
//! WebSocket, the commands and events they carry, the state values sent in snapshots, and the two
//! codecs (`copanel.v1.msgpack`, `copanel.v1.json`). It knows nothing of the server, of storage or
//! of sockets. `protocol/README.md` is the authoritative, human-readable spec of these types.
//!
//! # Layout
//! - [`frame`]: [`ClientFrame`] (client → server) and [`ServerFrame`] (server → client).
//! - [`command`]: [`Command`], one variant per command kind.
//! - [`event`]: [`Event`] (one variant per event kind) and the [`Envelope`] that carries it.
//! - [`state`]: [`SessionState`], [`OperatorState`] and [`StreamState`], the projections.
//! - [`stream`]: [`StreamName`], parsing and validation of `session/<id>`, `operator/<id>`, ….
//! - [`codec`]: [`Encoding`], encoding server frames and decoding client frames with clear errors.
//! - [`error`]: [`ErrorCode`], the error codes of error frames.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod command;
pub mod error;
pub mod event;
pub mod frame;
pub mod state;
pub mod stream;

pub use codec::{DecodeError, Encoding};
pub use command::{ClientInfoInput, Command, ContactDetail, MessageFrom, Owner, PresetParameter};
pub use error::ErrorCode;
pub use event::{Actor, Envelope, Event, InvitationOutcome, Role, TagSource};
pub use frame::{
    ClientFrame, ContactHit, QueryKind, ServerFrame, SessionSummary, TagSuggestion, Viewer,
};
pub use state::{
    Assignment, AutotagRule, CatalogState, ClientInfo, Collaborator, CollaboratorStatus,
    ContactDetailEntry, ContactState, ContactStatus, Invitation, Note, OperatorState, Parameter,
    ParameterSource, SessionState, SessionStatus, StreamState, Tag, TagDefinition, Template,
};
pub use stream::{StreamKind, StreamName};

/// WebSocket subprotocol for MessagePack frames (binary). The default.
pub const SUBPROTOCOL_MSGPACK: &str = "copanel.v1.msgpack";
/// WebSocket subprotocol for JSON frames (text).
pub const SUBPROTOCOL_JSON: &str = "copanel.v1.json";
