//! `catalog`: the company's tag definitions, auto-tag rules and message templates, and the
//! session and operator rules that read it.
use super::{Ctx, Decision, Principal, Rejection};
use copanel_protocol::{
    CatalogState, Command, Envelope, Event, OperatorState, SessionState, StreamName,
};

/// Decides a catalog command.
pub fn decide(_s: &CatalogState, _ctx: &Ctx<'_>, cmd: &Command) -> Result<Decision, Rejection> {
    Err(Rejection::invalid(
        "kind",
        format!("{} is not a command for the catalog", cmd.kind()),
    ))
}

/// Folds an event into the catalog.
pub fn apply(_s: &mut CatalogState, _env: &Envelope) {}

/// Everyone in the company reads the catalog.
pub fn can_read(_who: &Principal) -> Result<(), Rejection> {
    Ok(())
}

/// The catalog side event of `add_tag`: a tag the catalog does not know enters it with the
/// default colours.
pub fn tag_side(_ctx: &Ctx<'_>, _tag: &str) -> Option<(StreamName, Event)> {
    None
}

/// The `tag_added` events the auto-tag rules produce for a transcript message.
pub fn autotags(_s: &SessionState, _ctx: &Ctx<'_>, _text: &str) -> Vec<Event> {
    Vec::new()
}

/// The text of a catalog template, for `post_message {template_id}`.
pub fn template_text(_ctx: &Ctx<'_>, template_id: &str) -> Result<String, Rejection> {
    Err(Rejection::not_found(format!(
        "template {template_id:?} does not exist"
    )))
}

/// `star_template` / `unstar_template` on an operator's feed.
pub fn star_template(
    _s: &OperatorState,
    _ctx: &Ctx<'_>,
    _template_id: &str,
    _star: bool,
) -> Result<Decision, Rejection> {
    Err(Rejection::invalid("kind", "not implemented yet"))
}
