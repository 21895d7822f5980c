//! Events: what happened, in the past tense, and the envelope that carries each one.

use crate::command::{ContactDetail, MessageFrom, Owner, PresetParameter};
use crate::stream::StreamName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An actor's role, from the token's `role` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A contact-centre operator.
    Operator,
    /// An operator who may read and edit every session of the company.
    Supervisor,
    /// A supervisor who also manages the catalog and may anonymise.
    Admin,
    /// The integrating platform.
    Service,
}

impl Role {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }

    /// Supervisors and admins see and edit every session of their company.
    pub fn is_supervisor(self) -> bool {
        matches!(self, Role::Supervisor | Role::Admin)
    }
}

/// Who did something: recorded on every event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The token's `sub`.
    pub id: String,
    /// The token's `role`.
    pub role: Role,
}

/// Where a tag came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagSource {
    /// Added by hand (an operator or the platform).
    Manual,
    /// Added by an auto-tag rule (the event's `rule_id` says which).
    Rule,
}

/// An event, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    // ---- session/<id> ----
    /// The session was opened.
    SessionOpened {
        /// The channel.
        channel: String,
        /// Client name.
        name: String,
        /// Client phone.
        phone: String,
        /// Client email.
        email: String,
        /// Preset parameters.
        parameters: BTreeMap<String, PresetParameter>,
        /// The owner.
        owner: Owner,
    },
    /// Some client information changed; absent fields are unchanged.
    ClientInfoChanged {
        /// New name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// New phone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone: Option<String>,
        /// New email.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
    },
    /// An operator was invited.
    CollaboratorInvited {
        /// The invitee.
        operator_id: String,
    },
    /// The invitee accepted and joined.
    InvitationAccepted {
        /// The invitee.
        operator_id: String,
    },
    /// The invitee declined.
    InvitationDeclined {
        /// The invitee.
        operator_id: String,
    },
    /// A pending invitation was withdrawn.
    InvitationCancelled {
        /// The invitee.
        operator_id: String,
    },
    /// A collaborator left.
    CollaboratorLeft {
        /// The collaborator.
        operator_id: String,
    },
    /// A collaborator was removed.
    CollaboratorRemoved {
        /// The collaborator.
        operator_id: String,
    },
    /// A parameter was created or changed.
    ParameterSet {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// `preset` when set by the platform, `operator` otherwise.
        source: crate::state::ParameterSource,
        /// Read-only for operators.
        read_only: bool,
    },
    /// A parameter was removed.
    ParameterRemoved {
        /// The key.
        key: String,
    },
    /// A tag was added.
    TagAdded {
        /// The tag.
        tag: String,
        /// Where it came from.
        source: TagSource,
        /// The auto-tag rule, when `source` is `rule`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule_id: Option<String>,
    },
    /// A tag was removed.
    TagRemoved {
        /// The tag.
        tag: String,
    },
    /// A note was added; its author is the event's actor.
    NoteAdded {
        /// The new note's id (`n<seq>`).
        note_id: String,
        /// The text.
        text: String,
    },
    /// A note was edited.
    NoteEdited {
        /// Which note.
        note_id: String,
        /// The new text.
        text: String,
    },
    /// A note was deleted.
    NoteDeleted {
        /// Which note.
        note_id: String,
    },
    /// A transcript message was posted.
    MessagePosted {
        /// Who it is from.
        from: MessageFrom,
        /// The text.
        text: String,
        /// The template it came from, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template_id: Option<String>,
    },
    /// The session was closed.
    SessionClosed,
    /// The session was linked to a contact.
    ContactLinked {
        /// The contact.
        contact_id: String,
    },
    /// The session was unlinked from its contact.
    ContactUnlinked {
        /// The contact.
        contact_id: String,
        /// `true` when the contact was removed from the directory.
        #[serde(default)]
        removed: bool,
    },
    /// The session was handed to an operator or a group.
    SessionRedirected {
        /// The new owner.
        to: Owner,
        /// The note that came with it (added by a `note_added` in the same append).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note_id: Option<String>,
    },
    /// A member of the owning group took the session.
    SessionClaimed {
        /// The new owner.
        operator_id: String,
    },
    /// The session's personal data was erased: client information, transcript texts,
    /// parameter values and the contact link read as the redaction marker from now on.
    SessionAnonymized,

    // ---- contact/<id> ----
    /// The contact was created from a session's client information.
    ContactCreated {
        /// The session it came from (and is linked to).
        session_id: String,
        /// Name.
        name: String,
        /// Phone.
        phone: String,
        /// Email.
        email: String,
    },
    /// The contact's main details changed (through a linked session's client information).
    ContactUpdated {
        /// New name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// New phone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone: Option<String>,
        /// New email.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
    },
    /// A phone, email or identifier was added.
    ContactDetailAdded {
        /// Which kind.
        detail: ContactDetail,
        /// The value.
        value: String,
    },
    /// A session was linked to the contact.
    SessionLinked {
        /// The session.
        session_id: String,
    },
    /// A session was unlinked from the contact.
    SessionUnlinked {
        /// The session.
        session_id: String,
    },
    /// The contact was removed from the directory.
    ContactRemoved,

    // ---- operator/<id> ----
    /// This operator was invited to a session.
    InvitationReceived {
        /// The session's id (without `session/`).
        session_id: String,
        /// Who invited.
        by: String,
    },
    /// A pending invitation of this operator ended.
    InvitationEnded {
        /// The session's id.
        session_id: String,
        /// `accepted`, `declined` or `cancelled`.
        outcome: InvitationOutcome,
    },
    /// A session was redirected to this operator, or to a group it belongs to.
    AssignmentReceived {
        /// The session's id.
        session_id: String,
        /// Who redirected it.
        by: String,
        /// The redirect's note.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// The group, when the session went to a group.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    /// A pending assignment ended (claimed, redirected again, or closed).
    AssignmentEnded {
        /// The session's id.
        session_id: String,
    },
    /// A template was starred.
    TemplateStarred {
        /// The template.
        template_id: String,
    },
    /// A template was unstarred.
    TemplateUnstarred {
        /// The template.
        template_id: String,
    },

    // ---- catalog ----
    /// A tag was defined or recoloured.
    TagDefined {
        /// The tag.
        tag: String,
        /// Background colour.
        background: String,
        /// Text colour.
        text: String,
    },
    /// An auto-tag rule was added.
    AutotagRuleAdded {
        /// Its id (`r<seq>`).
        rule_id: String,
        /// Keywords or phrases.
        keywords: Vec<String>,
        /// The tag.
        tag: String,
    },
    /// An auto-tag rule was removed.
    AutotagRuleRemoved {
        /// The rule.
        rule_id: String,
    },
    /// A template was created.
    TemplateCreated {
        /// Its id (`t<seq>`).
        template_id: String,
        /// Title.
        title: String,
        /// Text.
        text: String,
    },
    /// A template changed.
    TemplateUpdated {
        /// The template.
        template_id: String,
        /// New title.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        /// New text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// A template was deleted.
    TemplateDeleted {
        /// The template.
        template_id: String,
    },
}

/// How a pending invitation ended, on the invitee's feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationOutcome {
    /// The invitee joined.
    Accepted,
    /// The invitee declined.
    Declined,
    /// The inviter (or owner, supervisor) withdrew it.
    Cancelled,
}

impl Event {
    /// The wire spelling of the kind, e.g. `"tag_added"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::SessionOpened { .. } => "session_opened",
            Event::ClientInfoChanged { .. } => "client_info_changed",
            Event::CollaboratorInvited { .. } => "collaborator_invited",
            Event::InvitationAccepted { .. } => "invitation_accepted",
            Event::InvitationDeclined { .. } => "invitation_declined",
            Event::InvitationCancelled { .. } => "invitation_cancelled",
            Event::CollaboratorLeft { .. } => "collaborator_left",
            Event::CollaboratorRemoved { .. } => "collaborator_removed",
            Event::ParameterSet { .. } => "parameter_set",
            Event::ParameterRemoved { .. } => "parameter_removed",
            Event::TagAdded { .. } => "tag_added",
            Event::TagRemoved { .. } => "tag_removed",
            Event::NoteAdded { .. } => "note_added",
            Event::NoteEdited { .. } => "note_edited",
            Event::NoteDeleted { .. } => "note_deleted",
            Event::MessagePosted { .. } => "message_posted",
            Event::SessionClosed => "session_closed",
            Event::InvitationReceived { .. } => "invitation_received",
            Event::InvitationEnded { .. } => "invitation_ended",
            Event::ContactLinked { .. } => "contact_linked",
            Event::ContactUnlinked { .. } => "contact_unlinked",
            Event::SessionRedirected { .. } => "session_redirected",
            Event::SessionClaimed { .. } => "session_claimed",
            Event::SessionAnonymized => "session_anonymized",
            Event::ContactCreated { .. } => "contact_created",
            Event::ContactUpdated { .. } => "contact_updated",
            Event::ContactDetailAdded { .. } => "contact_detail_added",
            Event::SessionLinked { .. } => "session_linked",
            Event::SessionUnlinked { .. } => "session_unlinked",
            Event::ContactRemoved => "contact_removed",
            Event::AssignmentReceived { .. } => "assignment_received",
            Event::AssignmentEnded { .. } => "assignment_ended",
            Event::TemplateStarred { .. } => "template_starred",
            Event::TemplateUnstarred { .. } => "template_unstarred",
            Event::TagDefined { .. } => "tag_defined",
            Event::AutotagRuleAdded { .. } => "autotag_rule_added",
            Event::AutotagRuleRemoved { .. } => "autotag_rule_removed",
            Event::TemplateCreated { .. } => "template_created",
            Event::TemplateUpdated { .. } => "template_updated",
            Event::TemplateDeleted { .. } => "template_deleted",
        }
    }
}

/// An event with what is not the domain's business: where and when it happened and who did it.
///
/// This is exactly what is stored in the log and what an `event` frame carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The stream the event belongs to.
    pub stream: StreamName,
    /// Its position in the stream: 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// When it was appended, milliseconds since the Unix epoch.
    pub at: u64,
    /// Who caused it.
    pub actor: Actor,
    /// The command that caused it (absent on events written without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// The event itself.
    pub event: Event,
}
