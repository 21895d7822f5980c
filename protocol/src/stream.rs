//! Stream names: `session/<id>`, `operator/<id>`, `contact/<id>`, `catalog`.
//!
//! A stream name on the wire never carries the company: the server scopes every name to the
//! caller's company, so one company cannot even name another's streams.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Longest id accepted after the `kind/` prefix.
pub const MAX_ID_LEN: usize = 128;

/// The kind of a stream, which decides its domain rules and access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKind {
    /// `session/<id>`: one customer session's client panel and transcript.
    Session,
    /// `operator/<id>`: one operator's own feed.
    Operator,
    /// `contact/<id>`: one contact directory entry.
    Contact,
    /// `catalog`: company-wide tags, rules and templates.
    Catalog,
}

/// A validated stream name, e.g. `session/s-42`.
///
/// Ids are 1..=128 characters of `A-Z a-z 0-9 - _ . :`, which keeps them safe as storage keys
/// and in logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName {
    kind: StreamKind,
    /// The full name as written on the wire (`session/s-42`).
    full: String,
}

/// Why a stream name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamNameError {
    /// The prefix is not one of the known kinds.
    #[error("unknown stream kind in {0:?}: expected session/<id>, operator/<id>, contact/<id> or catalog")]
    UnknownKind(String),
    /// The id part is empty, too long or has a character outside the allowed set.
    #[error("bad stream id in {0:?}: 1 to 128 characters of A-Z a-z 0-9 - _ . :")]
    BadId(String),
}

/// Checks an id (the part after `kind/`): 1..=128 of `A-Z a-z 0-9 - _ . :`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl StreamName {
    /// Parses and validates a wire stream name.
    pub fn parse(s: &str) -> Result<Self, StreamNameError> {
        if s == "catalog" {
            return Ok(StreamName {
                kind: StreamKind::Catalog,
                full: s.to_owned(),
            });
        }
        let (prefix, id) = s
            .split_once('/')
            .ok_or_else(|| StreamNameError::UnknownKind(truncate(s)))?;
        let kind = match prefix {
            "session" => StreamKind::Session,
            "operator" => StreamKind::Operator,
            "contact" => StreamKind::Contact,
            _ => return Err(StreamNameError::UnknownKind(truncate(s))),
        };
        if !valid_id(id) {
            return Err(StreamNameError::BadId(truncate(s)));
        }
        Ok(StreamName {
            kind,
            full: s.to_owned(),
        })
    }

    /// `session/<id>` for a valid id.
    pub fn session(id: &str) -> Result<Self, StreamNameError> {
        Self::parse(&format!("session/{id}"))
    }

    /// `operator/<id>` for a valid id.
    pub fn operator(id: &str) -> Result<Self, StreamNameError> {
        Self::parse(&format!("operator/{id}"))
    }

    /// The stream's kind.
    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    /// The id after `kind/` (empty for `catalog`).
    pub fn id(&self) -> &str {
        match self.full.split_once('/') {
            Some((_, id)) => id,
            None => "",
        }
    }

    /// The full wire name.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

/// Keeps error messages short when a client sends a huge name.
fn truncate(s: &str) -> String {
    s.chars().take(160).collect()
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl Serialize for StreamName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> Deserialize<'de> for StreamName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StreamName::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_four_kinds() {
        assert_eq!(
            StreamName::parse("session/a-1").unwrap().kind(),
            StreamKind::Session
        );
        assert_eq!(StreamName::parse("operator/op.7").unwrap().id(), "op.7");
        assert_eq!(
            StreamName::parse("contact/c:1").unwrap().kind(),
            StreamKind::Contact
        );
        assert_eq!(
            StreamName::parse("catalog").unwrap().kind(),
            StreamKind::Catalog
        );
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "",
            "session",
            "session/",
            "nope/x",
            "session/a b",
            "session/a/b",
            "session/é",
        ] {
            assert!(StreamName::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("session/{}", "a".repeat(129));
        assert!(StreamName::parse(&long).is_err());
        let max = format!("session/{}", "a".repeat(128));
        assert!(StreamName::parse(&max).is_ok());
    }
}
