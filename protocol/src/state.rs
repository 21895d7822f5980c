//! Projections as sent in `snapshot` and `state` frames.
//!
//! These are plain values. How an event changes them (`apply`) lives in the server's domain;
//! this crate only fixes their wire shape.

use crate::command::Owner;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Open or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Not opened yet: the stream is empty.
    #[default]
    New,
    /// Open: everything may change.
    Open,
    /// Closed: only parameters, tags and notes may change.
    Closed,
}

/// Client information.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Name (`""` when unknown).
    pub name: String,
    /// Phone (`""` when unknown).
    pub phone: String,
    /// Email (`""` when unknown).
    pub email: String,
}

/// Invited or joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollaboratorStatus {
    /// Invited, not answered yet: may read.
    Invited,
    /// Joined: may read and edit.
    Joined,
}

/// One collaborator of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collaborator {
    /// The operator.
    pub operator_id: String,
    /// Invited or joined.
    pub status: CollaboratorStatus,
    /// Who invited it.
    pub invited_by: String,
}

/// Where a parameter's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParameterSource {
    /// From the platform (role `service`), at open or later.
    Preset,
    /// From an operator.
    Operator,
}

/// One parameter of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameter {
    /// The value.
    pub value: String,
    /// Where the value came from.
    pub source: ParameterSource,
    /// Operators may not edit or remove it.
    pub read_only: bool,
    /// Who set it last.
    pub changed_by: String,
    /// When, milliseconds since the Unix epoch.
    pub changed_at: u64,
}

/// One tag of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// The tag's name.
    pub tag: String,
    /// Where it came from.
    pub source: crate::event::TagSource,
    /// Who added it.
    pub added_by: String,
    /// The auto-tag rule that added it, when `source` is `rule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
}

/// One operator note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Its id, `n<seq>` of the event that added it.
    pub note_id: String,
    /// Who wrote it.
    pub author: String,
    /// The text.
    pub text: String,
    /// When it was written (or last edited), milliseconds since the Unix epoch.
    pub at: u64,
}

/// The client panel of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// `new` (nothing yet), `open` or `closed`.
    pub status: SessionStatus,
    /// The channel.
    pub channel: String,
    /// The owner (absent before open).
    pub owner: Option<Owner>,
    /// Client information.
    pub client: ClientInfo,
    /// The linked contact, if any.
    pub contact_id: Option<String>,
    /// Collaborators, in invitation order.
    pub collaborators: Vec<Collaborator>,
    /// Parameters by key.
    pub parameters: BTreeMap<String, Parameter>,
    /// Tags, in the order they were added.
    pub tags: Vec<Tag>,
    /// Notes, in the order they were added.
    pub notes: Vec<Note>,
    /// How many transcript messages were posted (the texts are in the history).
    pub messages: u64,
    /// The session was anonymised: its personal data reads as `[redacted]`, in this state and
    /// in every stored event before the `session_anonymized` one.
    #[serde(default)]
    pub anonymized: bool,
}

/// A pending invitation on an operator's feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// The session's id.
    pub session_id: String,
    /// Who invited.
    pub by: String,
    /// When, milliseconds since the Unix epoch.
    pub at: u64,
}

/// A session handed to this operator (or its group) and not yet taken up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The session's id.
    pub session_id: String,
    /// Who redirected it.
    pub by: String,
    /// The redirect's note.
    pub note: Option<String>,
    /// The group, when it went to a group.
    pub group: Option<String>,
    /// When, milliseconds since the Unix epoch.
    pub at: u64,
}

/// One operator's own feed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorState {
    /// Pending invitations, oldest first.
    pub invitations: Vec<Invitation>,
    /// Sessions redirected to this operator or its groups, oldest first.
    #[serde(default)]
    pub assignments: Vec<Assignment>,
    /// Starred template ids, in the order they were starred.
    #[serde(default)]
    pub starred: Vec<String>,
}

/// Whether a contact exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactStatus {
    /// Not created (the stream is empty).
    #[default]
    New,
    /// In the directory.
    Active,
    /// Removed from the directory.
    Removed,
}

/// An extra phone, email or identifier of a contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactDetailEntry {
    /// Which kind.
    pub detail: crate::command::ContactDetail,
    /// The value.
    pub value: String,
    /// Who added it.
    pub added_by: String,
    /// When, milliseconds since the Unix epoch.
    pub at: u64,
}

/// One contact of the directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactState {
    /// `new`, `active` or `removed`.
    pub status: ContactStatus,
    /// Name.
    pub name: String,
    /// Main phone.
    pub phone: String,
    /// Main email.
    pub email: String,
    /// Further phones, emails and identifiers, in the order they were added.
    pub details: Vec<ContactDetailEntry>,
    /// Sessions linked to it now.
    pub sessions: Vec<String>,
}

/// A tag's colours in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagDefinition {
    /// The tag.
    pub tag: String,
    /// Background colour, `#rrggbb`.
    pub background: String,
    /// Text colour, `#rrggbb`.
    pub text: String,
}

/// An auto-tag rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutotagRule {
    /// Its id.
    pub rule_id: String,
    /// Keywords or phrases.
    pub keywords: Vec<String>,
    /// The tag it adds.
    pub tag: String,
}

/// A message template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// Its id.
    pub template_id: String,
    /// Title.
    pub title: String,
    /// Text.
    pub text: String,
}

/// The company catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogState {
    /// Tag definitions, in the order they were first defined.
    pub tag_definitions: Vec<TagDefinition>,
    /// Auto-tag rules, in the order they were added.
    pub rules: Vec<AutotagRule>,
    /// Templates, in the order they were created.
    pub templates: Vec<Template>,
}

/// The state of any stream, as a `snapshot` or `state` frame carries it (untagged: the stream
/// name says which).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
// Sessions are the common case by far; boxing them would add an allocation to every clone for
// the sake of the small operator feed.
#[allow(clippy::large_enum_variant)]
pub enum StreamState {
    /// `session/<id>`.
    Session(SessionState),
    /// `operator/<id>`.
    Operator(OperatorState),
    /// `contact/<id>`.
    Contact(ContactState),
    /// `catalog`.
    Catalog(CatalogState),
}
