//! Commands: what a client asks to change. One variant per `command.kind`.
//!
//! A command is only a request; the server's domain decides whether it becomes events. Field
//! limits (lengths, counts) are checked by the domain, not here, so that every rejection names
//! the field and the limit.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Who owns a session: one operator, or a group whose members may claim it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Owner {
    /// A single operator.
    Operator {
        /// The operator's id (the token's `sub`).
        operator_id: String,
    },
    /// A group of operators.
    Group {
        /// The group's name (as in the token's `groups`).
        group: String,
    },
}

/// A parameter given when a session opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresetParameter {
    /// The value.
    pub value: String,
    /// Whether operators are kept from editing or removing it.
    #[serde(default)]
    pub read_only: bool,
}

/// Who a transcript message is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageFrom {
    /// The customer (posted by the platform, role `service`).
    Client,
    /// An operator of the session.
    Operator,
}

/// The kind of detail `add_contact_detail` adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactDetail {
    /// A phone number.
    Phone,
    /// An email address.
    Email,
    /// A custom identifier.
    Identifier,
}

/// A command, tagged by `kind` on the wire (`{"kind": "add_tag", "tag": "vip"}`).
///
/// The derive below is the *externally* tagged form (`remote = "Self"` makes it inherent
/// functions, not trait impls); the `Serialize`/`Deserialize` impls in [`crate::codec`] move the
/// tag in and out so that decoding can name the exact field that is wrong. Variants without
/// fields are written `{}` so that every variant has the same shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    // ---- session/<id> ----
    /// Opens the session (service, admin). The stream must be empty.
    OpenSession {
        /// The channel the customer came through (`chat`, `video`, …).
        channel: String,
        /// Initial client information.
        #[serde(default)]
        client: ClientInfoInput,
        /// Preset parameters.
        #[serde(default)]
        parameters: BTreeMap<String, PresetParameter>,
        /// The owner: an operator or a group.
        owner: Owner,
    },
    /// Changes any of the client's name, phone, email (absent fields are kept; `""` clears).
    SetClientInfo {
        /// New name.
        #[serde(default)]
        name: Option<String>,
        /// New phone.
        #[serde(default)]
        phone: Option<String>,
        /// New email.
        #[serde(default)]
        email: Option<String>,
    },
    /// Invites another operator of the company as a collaborator.
    InviteCollaborator {
        /// The invitee.
        operator_id: String,
    },
    /// The invitee accepts its pending invitation.
    AcceptInvitation {},
    /// The invitee declines its pending invitation.
    DeclineInvitation {},
    /// Withdraws a pending invitation.
    CancelInvitation {
        /// The invitee.
        operator_id: String,
    },
    /// A joined collaborator leaves the session.
    Leave {},
    /// Removes a collaborator (owner, supervisors, admins, service).
    RemoveCollaborator {
        /// The collaborator.
        operator_id: String,
    },
    /// Sets a parameter (creates or changes it).
    SetParameter {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Marks it read-only for operators (service only).
        #[serde(default)]
        read_only: Option<bool>,
    },
    /// Removes a parameter.
    RemoveParameter {
        /// The key.
        key: String,
    },
    /// Adds a tag.
    AddTag {
        /// The tag's name.
        tag: String,
    },
    /// Removes a tag.
    RemoveTag {
        /// The tag's name.
        tag: String,
    },
    /// Adds an operator note; the ack's `created` is the new note's id.
    AddNote {
        /// The text.
        text: String,
    },
    /// Edits a note (its author, supervisors, admins).
    EditNote {
        /// Which note.
        note_id: String,
        /// The new text.
        text: String,
    },
    /// Deletes a note (its author, supervisors, admins).
    DeleteNote {
        /// Which note.
        note_id: String,
    },
    /// Posts a transcript message.
    PostMessage {
        /// `client` (service only) or `operator`.
        from: MessageFrom,
        /// The text.
        #[serde(default)]
        text: Option<String>,
        /// A catalog template whose text is posted instead of `text`.
        #[serde(default)]
        template_id: Option<String>,
    },
    /// Closes the session.
    CloseSession {},
    /// Adds the session's client to the contact directory: a new `contact/<id>` is created from
    /// the client information and linked. The ack's `created` is the contact id.
    AddToDirectory {},
    /// Links the session to an existing contact.
    LinkContact {
        /// The contact (the id after `contact/`).
        contact_id: String,
    },
    /// Unlinks the session from its contact; the contact stays in the directory.
    DisconnectContact {},
    /// Adds a phone, email or identifier to the linked contact (also one it already has).
    AddContactDetail {
        /// Which kind of detail.
        detail: ContactDetail,
        /// The value.
        value: String,
    },
    /// Removes the linked contact from the directory; every session linked to it is unlinked.
    RemoveContact {},
    /// Hands the session to another operator or to a group, with an optional note.
    Redirect {
        /// The operator to hand it to.
        #[serde(default)]
        operator_id: Option<String>,
        /// Or the group whose members may claim it.
        #[serde(default)]
        group: Option<String>,
        /// A note for the receiver, added to the session's notes.
        #[serde(default)]
        note: Option<String>,
    },
    /// A member of the owning group takes the session.
    Claim {},
    /// Erases the personal data of a closed session (admin).
    Anonymize {},

    // ---- operator/<id> ----
    /// Stars a catalog template on the operator's own feed.
    StarTemplate {
        /// The template.
        template_id: String,
    },
    /// Unstars a template.
    UnstarTemplate {
        /// The template.
        template_id: String,
    },

    // ---- catalog ----
    /// Defines (or recolours) a tag (admin).
    DefineTag {
        /// The tag.
        tag: String,
        /// Background colour, `#rrggbb`.
        background: String,
        /// Text colour, `#rrggbb`.
        text: String,
    },
    /// Adds an auto-tag rule (admin): a transcript message containing any keyword gets the tag.
    /// The ack's `created` is the rule id.
    AddAutotagRule {
        /// Keywords or phrases, matched as whole words, ignoring case and diacritics.
        keywords: Vec<String>,
        /// The tag to add.
        tag: String,
    },
    /// Removes an auto-tag rule (admin).
    RemoveAutotagRule {
        /// The rule.
        rule_id: String,
    },
    /// Creates a message template (admin). The ack's `created` is the template id.
    CreateTemplate {
        /// Title.
        title: String,
        /// Text.
        text: String,
    },
    /// Changes a template's title and/or text (admin).
    UpdateTemplate {
        /// The template.
        template_id: String,
        /// New title.
        #[serde(default)]
        title: Option<String>,
        /// New text.
        #[serde(default)]
        text: Option<String>,
    },
    /// Deletes a template (admin).
    DeleteTemplate {
        /// The template.
        template_id: String,
    },
}

/// Client information as given to `open_session`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientInfoInput {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Phone.
    #[serde(default)]
    pub phone: String,
    /// Email.
    #[serde(default)]
    pub email: String,
}

impl Command {
    /// The wire spelling of the kind, e.g. `"add_tag"`; used in logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::OpenSession { .. } => "open_session",
            Command::SetClientInfo { .. } => "set_client_info",
            Command::InviteCollaborator { .. } => "invite_collaborator",
            Command::AcceptInvitation {} => "accept_invitation",
            Command::DeclineInvitation {} => "decline_invitation",
            Command::CancelInvitation { .. } => "cancel_invitation",
            Command::Leave {} => "leave",
            Command::RemoveCollaborator { .. } => "remove_collaborator",
            Command::SetParameter { .. } => "set_parameter",
            Command::RemoveParameter { .. } => "remove_parameter",
            Command::AddTag { .. } => "add_tag",
            Command::RemoveTag { .. } => "remove_tag",
            Command::AddNote { .. } => "add_note",
            Command::EditNote { .. } => "edit_note",
            Command::DeleteNote { .. } => "delete_note",
            Command::PostMessage { .. } => "post_message",
            Command::CloseSession {} => "close_session",
            Command::AddToDirectory {} => "add_to_directory",
            Command::LinkContact { .. } => "link_contact",
            Command::DisconnectContact {} => "disconnect_contact",
            Command::AddContactDetail { .. } => "add_contact_detail",
            Command::RemoveContact {} => "remove_contact",
            Command::Redirect { .. } => "redirect",
            Command::Claim {} => "claim",
            Command::Anonymize {} => "anonymize",
            Command::StarTemplate { .. } => "star_template",
            Command::UnstarTemplate { .. } => "unstar_template",
            Command::DefineTag { .. } => "define_tag",
            Command::AddAutotagRule { .. } => "add_autotag_rule",
            Command::RemoveAutotagRule { .. } => "remove_autotag_rule",
            Command::CreateTemplate { .. } => "create_template",
            Command::UpdateTemplate { .. } => "update_template",
            Command::DeleteTemplate { .. } => "delete_template",
        }
    }
}
