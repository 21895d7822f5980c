//! `catalog`: the company's tag definitions (with colours), auto-tag rules and message
//! templates, and the session and operator rules that read it.
//!
//! This module owns:
//! - the catalog stream itself: who may change it ([`decide`]: admins only; everyone of the
//!   company reads it, [`can_read`]) and how its events fold into a [`CatalogState`] ([`apply`]);
//! - the session-side rules that read the catalog: a tag new to the company enters it with the
//!   default colours ([`tag_side`]), transcript messages get the tags of matching auto-tag rules
//!   ([`autotags`]), and `post_message {template_id}` posts a template's text
//!   ([`template_text`]);
//! - starring templates on an operator's own feed ([`star_template`]).
//!
//! Tags are one tag whatever their case and diacritics (`Stížnost` = `stiznost`, compared with
//! [`text::fold`]); the catalog keeps the spelling a tag was first defined with. The functions
//! that read the catalog from a session or a feed get it through [`Ctx::world`]; the writer
//! always loads it there (see [`super::needs`]). Like every `decide`, nothing here may panic on
//! client input.

use super::text;
use super::{Ctx, Decision, Limits, Principal, Rejection};
use copanel_protocol::{
    AutotagRule, CatalogState, Command, Envelope, Event, OperatorState, Role, SessionState,
    StreamName, StreamState, TagDefinition, TagSource, Template,
};

/// Background colour of a tag that enters the catalog without one (through `add_tag` or an
/// auto-tag rule).
pub const DEFAULT_BACKGROUND: &str = "#e0e0e0";
/// Text colour of a tag that enters the catalog without one.
pub const DEFAULT_TEXT: &str = "#1f1f1f";
/// Most keywords one auto-tag rule may have.
pub const MAX_KEYWORDS: usize = 20;
/// Longest keyword (or phrase) of an auto-tag rule, in characters.
pub const KEYWORD_CHARS: usize = 64;
/// Longest template title, in characters.
pub const TEMPLATE_TITLE_CHARS: usize = 200;

/// Decides a catalog command. Order: the command must be a catalog command (`invalid` on
/// `kind`), then the sender must be an admin (`forbidden`), then the fields, then the state.
pub fn decide(s: &CatalogState, ctx: &Ctx<'_>, cmd: &Command) -> Result<Decision, Rejection> {
    let is_catalog_command = matches!(
        cmd,
        Command::DefineTag { .. }
            | Command::AddAutotagRule { .. }
            | Command::RemoveAutotagRule { .. }
            | Command::CreateTemplate { .. }
            | Command::UpdateTemplate { .. }
            | Command::DeleteTemplate { .. }
    );
    if !is_catalog_command {
        return Err(Rejection::invalid(
            "kind",
            format!("{} is not a command for catalog streams", cmd.kind()),
        ));
    }
    // Admins in the console, and the platform through the HTTP API (PRODUCT.md section 4).
    if !matches!(ctx.principal.role, Role::Admin | Role::Service) {
        return Err(Rejection::forbidden(format!(
            "only admins and the platform may change the catalog ({})",
            cmd.kind()
        )));
    }
    let limits = ctx.limits;
    match cmd {
        Command::DefineTag {
            tag,
            background,
            text,
        } => define_tag(s, limits, tag, background, text),
        Command::AddAutotagRule { keywords, tag } => add_autotag_rule(s, ctx, keywords, tag),
        Command::RemoveAutotagRule { rule_id } => remove_autotag_rule(s, rule_id),
        Command::CreateTemplate { title, text } => create_template(ctx, title, text),
        Command::UpdateTemplate {
            template_id,
            title,
            text,
        } => update_template(s, limits, template_id, title.as_deref(), text.as_deref()),
        Command::DeleteTemplate { template_id } => delete_template(s, template_id),
        // Refused above; kept explicit so a new command kind is a compile error here.
        _ => Err(Rejection::invalid(
            "kind",
            format!("{} is not a command for catalog streams", cmd.kind()),
        )),
    }
}

/// Folds an event into the catalog. Tag definitions are matched like tags everywhere
/// (ignoring case and diacritics), so a recolouring replaces the colours and keeps the first
/// spelling; events of other stream kinds are ignored.
pub fn apply(s: &mut CatalogState, env: &Envelope) {
    match &env.event {
        Event::TagDefined {
            tag,
            background,
            text,
        } => match definition_mut(s, tag) {
            Some(d) => {
                d.background = background.clone();
                d.text = text.clone();
            }
            None => s.tag_definitions.push(TagDefinition {
                tag: tag.clone(),
                background: background.clone(),
                text: text.clone(),
            }),
        },
        Event::AutotagRuleAdded {
            rule_id,
            keywords,
            tag,
        } if !s.rules.iter().any(|r| &r.rule_id == rule_id) => s.rules.push(AutotagRule {
            rule_id: rule_id.clone(),
            keywords: keywords.clone(),
            tag: tag.clone(),
        }),
        Event::AutotagRuleRemoved { rule_id } => s.rules.retain(|r| &r.rule_id != rule_id),
        Event::TemplateCreated {
            template_id,
            title,
            text,
        } if !s.templates.iter().any(|t| &t.template_id == template_id) => {
            s.templates.push(Template {
                template_id: template_id.clone(),
                title: title.clone(),
                text: text.clone(),
            })
        }
        Event::TemplateUpdated {
            template_id,
            title,
            text,
        } => {
            if let Some(t) = s
                .templates
                .iter_mut()
                .find(|t| &t.template_id == template_id)
            {
                if let Some(v) = title {
                    t.title = v.clone();
                }
                if let Some(v) = text {
                    t.text = v.clone();
                }
            }
        }
        Event::TemplateDeleted { template_id } => {
            s.templates.retain(|t| &t.template_id != template_id)
        }
        _ => {}
    }
}

/// Everyone in the company reads the catalog.
pub fn can_read(_who: &Principal) -> Result<(), Rejection> {
    Ok(())
}

/// The catalog side event of `add_tag`: a tag the catalog does not know (compared ignoring
/// case and diacritics) enters it with the default colours, in the same atomic append as the
/// session's `tag_added`. `tag` is the already validated, trimmed tag.
///
/// `None` when the catalog knows the tag, and also when the world holds no catalog at all
/// (tests with an empty world): the writer always loads it for `add_tag`, so in the server a
/// missing catalog never hides a new tag.
pub fn tag_side(ctx: &Ctx<'_>, tag: &str) -> Option<(StreamName, Event)> {
    let name = catalog_name()?;
    let catalog = catalog_of(ctx, &name)?;
    if definition(catalog, tag).is_some() {
        return None;
    }
    Some((name, default_definition(tag)))
}

/// The `tag_added` events (source `rule`, with the rule's id) that the catalog's auto-tag
/// rules produce for a transcript message `text` posted on session `s`.
///
/// A rule matches when any of its keywords occurs in the message as whole words, ignoring case
/// and diacritics (a keyword of several words must occur as that sequence of words). Rules are
/// tried in catalog order; each tag is added at most once: tags already on the session and
/// tags an earlier rule added for this message are skipped. When the session's tag limit is
/// reached, no more are added; the message itself is still accepted.
pub fn autotags(s: &SessionState, ctx: &Ctx<'_>, text: &str) -> Vec<Event> {
    let Some(catalog) = catalog_name().and_then(|n| catalog_of(ctx, &n)) else {
        return Vec::new();
    };
    if catalog.rules.is_empty() {
        return Vec::new();
    }
    let room = ctx.limits.tags_per_session.saturating_sub(s.tags.len());
    let words = text::words(text);
    let mut present: Vec<String> = s.tags.iter().map(|t| text::fold(&t.tag)).collect();
    let mut out = Vec::new();
    for rule in &catalog.rules {
        if out.len() >= room {
            break;
        }
        let folded = text::fold(&rule.tag);
        if present.contains(&folded) {
            continue;
        }
        let hit = rule
            .keywords
            .iter()
            .any(|k| text::contains_words(&words, &text::words(k)));
        if hit {
            present.push(folded);
            out.push(Event::TagAdded {
                tag: rule.tag.clone(),
                source: TagSource::Rule,
                rule_id: Some(rule.rule_id.clone()),
            });
        }
    }
    out
}

/// The text of a catalog template, for `post_message {template_id}`; `not_found` when the
/// catalog has no such template (any more).
pub fn template_text(ctx: &Ctx<'_>, template_id: &str) -> Result<String, Rejection> {
    catalog_name()
        .and_then(|n| catalog_of(ctx, &n))
        .and_then(|c| template(c, template_id))
        .map(|t| t.text.clone())
        .ok_or_else(|| missing_template(template_id))
}

/// `star_template` / `unstar_template` on an operator's feed `s`. Only the feed's own operator
/// may star on it (`forbidden` for everyone else, the platform included: stars are personal).
/// Starring needs the template to exist in the catalog (`not_found`); starring a starred one is
/// an accepted no-op. Unstarring needs it to be starred (`not_found`), not to exist: a deleted
/// template can still be unstarred.
pub fn star_template(
    s: &OperatorState,
    ctx: &Ctx<'_>,
    template_id: &str,
    star: bool,
) -> Result<Decision, Rejection> {
    if ctx.principal.id != ctx.stream.id() {
        return Err(Rejection::forbidden(format!(
            "only operator {} stars templates on {}",
            shown(ctx.stream.id()),
            ctx.stream
        )));
    }
    let starred = s.starred.iter().any(|t| t == template_id);
    let event = if star {
        template_text(ctx, template_id)?;
        if starred {
            return Ok(Decision::default());
        }
        Event::TemplateStarred {
            template_id: template_id.to_owned(),
        }
    } else {
        if !starred {
            return Err(Rejection::not_found(format!(
                "template {} is not starred",
                shown(template_id)
            )));
        }
        Event::TemplateUnstarred {
            template_id: template_id.to_owned(),
        }
    };
    Ok(one(event))
}

// ---------------------------------------------------------------------------------------------
// Catalog commands.
// ---------------------------------------------------------------------------------------------

/// Defines a tag or recolours it. The colours are stored lower-cased (`#E0E0E0` and `#e0e0e0`
/// are one colour); an existing definition keeps its spelling; an unchanged one appends
/// nothing.
fn define_tag(
    s: &CatalogState,
    limits: &Limits,
    tag: &str,
    background: &str,
    text_colour: &str,
) -> Result<Decision, Rejection> {
    let tag = check_tag("tag", tag, limits)?;
    let background = check_colour("background", background)?;
    let text_colour = check_colour("text", text_colour)?;
    let tag = match definition(s, tag) {
        Some(d) if d.background == background && d.text == text_colour => {
            return Ok(Decision::default())
        }
        Some(d) => d.tag.clone(),
        None => tag.to_owned(),
    };
    Ok(one(Event::TagDefined {
        tag,
        background,
        text: text_colour,
    }))
}

/// Adds a rule `keywords -> tag`. Its id is `r<seq>`, the seq of the first event the command
/// appends; a tag the catalog does not know is defined first, with the default colours, so
/// every tag a rule adds has colours. The rule names the tag as the catalog spells it.
fn add_autotag_rule(
    s: &CatalogState,
    ctx: &Ctx<'_>,
    keywords: &[String],
    tag: &str,
) -> Result<Decision, Rejection> {
    if keywords.is_empty() {
        return Err(Rejection::invalid(
            "keywords",
            "an auto-tag rule needs at least one keyword",
        ));
    }
    if keywords.len() > MAX_KEYWORDS {
        return Err(Rejection::too_large(
            "keywords",
            format!(
                "an auto-tag rule has {} keywords; the limit is {MAX_KEYWORDS}",
                keywords.len()
            ),
        ));
    }
    let mut kept = Vec::with_capacity(keywords.len());
    for (i, k) in keywords.iter().enumerate() {
        let what = format!("keyword {}", i + 1);
        let k = k.trim();
        check_len("keywords", &what, k, KEYWORD_CHARS)?;
        check_controls("keywords", &what, k)?;
        // Matching compares words; a keyword without any would never match.
        if text::words(k).is_empty() {
            return Err(Rejection::invalid(
                "keywords",
                format!("{what} has no letters or digits"),
            ));
        }
        kept.push(k.to_owned());
    }
    let tag = check_tag("tag", tag, ctx.limits)?;
    let rule_id = format!("r{}", ctx.next_seq);
    let mut events = Vec::with_capacity(2);
    let tag = match definition(s, tag) {
        Some(d) => d.tag.clone(),
        None => {
            events.push(default_definition(tag));
            tag.to_owned()
        }
    };
    events.push(Event::AutotagRuleAdded {
        rule_id: rule_id.clone(),
        keywords: kept,
        tag,
    });
    Ok(Decision {
        events,
        others: Vec::new(),
        created: Some(rule_id),
    })
}

fn remove_autotag_rule(s: &CatalogState, rule_id: &str) -> Result<Decision, Rejection> {
    if !s.rules.iter().any(|r| r.rule_id == rule_id) {
        return Err(Rejection::not_found(format!(
            "auto-tag rule {} does not exist",
            shown(rule_id)
        )));
    }
    Ok(one(Event::AutotagRuleRemoved {
        rule_id: rule_id.to_owned(),
    }))
}

/// Creates a template; its id is `t<seq>` of its event.
fn create_template(ctx: &Ctx<'_>, title: &str, text: &str) -> Result<Decision, Rejection> {
    check_title(title)?;
    check_text("text", "template text", text, ctx.limits.message_chars)?;
    let template_id = format!("t{}", ctx.next_seq);
    Ok(Decision {
        events: vec![Event::TemplateCreated {
            template_id: template_id.clone(),
            title: title.to_owned(),
            text: text.to_owned(),
        }],
        others: Vec::new(),
        created: Some(template_id),
    })
}

/// Changes a template's title and/or text; only what really changes is recorded.
fn update_template(
    s: &CatalogState,
    limits: &Limits,
    template_id: &str,
    title: Option<&str>,
    text: Option<&str>,
) -> Result<Decision, Rejection> {
    if title.is_none() && text.is_none() {
        return Err(Rejection::invalid(
            "title",
            "update_template needs title or text",
        ));
    }
    if let Some(t) = title {
        check_title(t)?;
    }
    if let Some(t) = text {
        check_text("text", "template text", t, limits.message_chars)?;
    }
    let current = template(s, template_id).ok_or_else(|| missing_template(template_id))?;
    let title = title.filter(|t| *t != current.title).map(str::to_owned);
    let text = text.filter(|t| *t != current.text).map(str::to_owned);
    if title.is_none() && text.is_none() {
        return Ok(Decision::default());
    }
    Ok(one(Event::TemplateUpdated {
        template_id: current.template_id.clone(),
        title,
        text,
    }))
}

fn delete_template(s: &CatalogState, template_id: &str) -> Result<Decision, Rejection> {
    let current = template(s, template_id).ok_or_else(|| missing_template(template_id))?;
    Ok(one(Event::TemplateDeleted {
        template_id: current.template_id.clone(),
    }))
}

// ---------------------------------------------------------------------------------------------
// Lookups.
// ---------------------------------------------------------------------------------------------

fn catalog_name() -> Option<StreamName> {
    StreamName::parse("catalog").ok()
}

/// The company catalog as the writer loaded it for this command.
fn catalog_of<'w>(ctx: &Ctx<'w>, name: &StreamName) -> Option<&'w CatalogState> {
    match ctx.world.state(name) {
        Some(StreamState::Catalog(c)) => Some(c),
        _ => None,
    }
}

/// A tag's definition, whatever the case and diacritics of `tag`.
pub fn definition<'s>(s: &'s CatalogState, tag: &str) -> Option<&'s TagDefinition> {
    let wanted = text::fold(tag);
    s.tag_definitions
        .iter()
        .find(|d| text::fold(&d.tag) == wanted)
}

fn definition_mut<'s>(s: &'s mut CatalogState, tag: &str) -> Option<&'s mut TagDefinition> {
    let wanted = text::fold(tag);
    s.tag_definitions
        .iter_mut()
        .find(|d| text::fold(&d.tag) == wanted)
}

fn template<'s>(s: &'s CatalogState, template_id: &str) -> Option<&'s Template> {
    s.templates.iter().find(|t| t.template_id == template_id)
}

fn missing_template(template_id: &str) -> Rejection {
    Rejection::not_found(format!("template {} does not exist", shown(template_id)))
}

fn default_definition(tag: &str) -> Event {
    Event::TagDefined {
        tag: tag.to_owned(),
        background: DEFAULT_BACKGROUND.to_owned(),
        text: DEFAULT_TEXT.to_owned(),
    }
}

fn one(event: Event) -> Decision {
    Decision {
        events: vec![event],
        ..Decision::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Field checks. Each names the field and, where there is one, the limit.
// ---------------------------------------------------------------------------------------------

/// Client values can be huge or hold control characters; messages quote at most this much.
const SHOWN_CHARS: usize = 64;

/// A client-supplied string made safe to quote in a message: cut short and debug-escaped.
fn shown(s: &str) -> String {
    let mut cut: String = s.chars().take(SHOWN_CHARS).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

fn check_len(field: &str, what: &str, value: &str, limit: usize) -> Result<(), Rejection> {
    let n = value.chars().count();
    if n > limit {
        return Err(Rejection::too_large(
            field,
            format!("{what} is {n} characters; the limit is {limit}"),
        ));
    }
    Ok(())
}

fn check_controls(field: &str, what: &str, value: &str) -> Result<(), Rejection> {
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(Rejection::invalid(
            field,
            format!("{what} contains the control character {c:?}"),
        )),
        None => Ok(()),
    }
}

/// A tag as `add_tag` takes it: trimmed, not empty, within the limit, no control characters.
/// Returns the trimmed tag.
fn check_tag<'t>(field: &str, tag: &'t str, limits: &Limits) -> Result<&'t str, Rejection> {
    let tag = tag.trim();
    if tag.is_empty() {
        return Err(Rejection::invalid(field, "tag is empty"));
    }
    check_len(field, "tag", tag, limits.tag_chars)?;
    check_controls(field, "tag", tag)?;
    Ok(tag)
}

/// A colour written `#rrggbb`; returned lower-cased.
fn check_colour(field: &str, colour: &str) -> Result<String, Rejection> {
    let ok = colour.len() == 7
        && colour.starts_with('#')
        && colour.chars().skip(1).all(|c| c.is_ascii_hexdigit());
    if !ok {
        return Err(Rejection::invalid(
            field,
            format!(
                "{field} must be a colour written #rrggbb (such as {DEFAULT_BACKGROUND}), not {}",
                shown(colour)
            ),
        ));
    }
    Ok(colour.to_ascii_lowercase())
}

fn check_title(title: &str) -> Result<(), Rejection> {
    if title.trim().is_empty() {
        return Err(Rejection::invalid("title", "template title is empty"));
    }
    check_len("title", "template title", title, TEMPLATE_TITLE_CHARS)?;
    check_controls("title", "template title", title)
}

/// Text that must say something: not blank, within `limit`, only line breaks and tabs as
/// control characters (templates are multi-line, like the messages they become).
fn check_text(field: &str, what: &str, value: &str, limit: usize) -> Result<(), Rejection> {
    check_len(field, what, value, limit)?;
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Rejection::invalid(
            field,
            format!("{what} contains the control character {c:?}"),
        ));
    }
    if value.trim().is_empty() {
        return Err(Rejection::invalid(field, format!("{what} is empty")));
    }
    Ok(())
}
