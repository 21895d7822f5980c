//! The two encodings of protocol v1 and the decoding of client frames with errors that say what
//! is wrong.
//!
//! Decoding is done in two steps: the bytes become a generic value (which catches frames that are
//! not MessagePack/JSON maps at all, `bad_frame`), then the value becomes a [`ClientFrame`], with
//! `serde_path_to_error` naming the field that did not fit (`invalid` with `field`). A `type` that
//! is not known is told apart as `unknown_type`. Nesting is capped well below what could exhaust
//! the stack.

use crate::command::Command;
use crate::error::ErrorCode;
use crate::event::Envelope;
use crate::frame::{ClientFrame, ServerFrame, CLIENT_TYPES};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Deepest nesting accepted in a client frame. Real frames nest 3 levels deep at most.
pub const MAX_DEPTH: usize = 32;

/// The encoding a connection speaks, fixed by its subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `copanel.v1.msgpack`: binary frames, MessagePack maps with field names.
    Msgpack,
    /// `copanel.v1.json`: text frames, JSON objects.
    Json,
}

/// Why a client frame was refused. Maps one-to-one onto an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    /// `bad_frame`, `unknown_type` or `invalid`.
    pub code: ErrorCode,
    /// What is wrong, for people.
    pub message: String,
    /// For `invalid`: the dotted path of the offending field.
    pub field: Option<String>,
    /// The frame's `id`, when it could be read, so the error can be matched to the request.
    pub id: Option<u64>,
}

impl DecodeError {
    fn bad_frame(message: impl Into<String>) -> Self {
        DecodeError {
            code: ErrorCode::BadFrame,
            message: message.into(),
            field: None,
            id: None,
        }
    }
}

impl Encoding {
    /// The subprotocol name of this encoding.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Msgpack => crate::SUBPROTOCOL_MSGPACK,
            Encoding::Json => crate::SUBPROTOCOL_JSON,
        }
    }

    /// Encodes any serialisable value (a frame) in this encoding.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Bytes {
        let out = match self {
            Encoding::Msgpack => rmp_serde::to_vec_named(value).map_err(|e| e.to_string()),
            Encoding::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
        };
        match out {
            Ok(v) => Bytes::from(v),
            // Our own types always serialise (string keys, no non-finite floats); should one
            // ever fail, the client gets an `internal` error frame rather than a dead socket.
            Err(e) => self.encode_fallback_error(&e),
        }
    }

    fn encode_fallback_error(self, why: &str) -> Bytes {
        let frame =
            ServerFrame::error(None, ErrorCode::Internal, format!("encoding failed: {why}"));
        match self {
            Encoding::Msgpack => Bytes::from(rmp_serde::to_vec_named(&frame).unwrap_or_default()),
            Encoding::Json => Bytes::from(serde_json::to_vec(&frame).unwrap_or_default()),
        }
    }

    /// Encodes a server frame.
    pub fn encode_frame(self, frame: &ServerFrame) -> Bytes {
        self.encode(frame)
    }

    /// Encodes an `event` frame straight from an envelope, without copying it into a
    /// [`ServerFrame`]. The bytes are the same as `encode_frame(&ServerFrame::Event(env))`.
    pub fn encode_event(self, env: &Envelope) -> Bytes {
        self.encode(&EventFrameRef {
            r#type: "event",
            stream: env.stream.as_str(),
            seq: env.seq,
            at: env.at,
            actor: &env.actor,
            command_id: env.command_id.as_deref(),
            event: &env.event,
        })
    }

    /// Decodes a client frame.
    pub fn decode_client(self, bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
        let value: Value = match self {
            Encoding::Json => serde_json::from_slice(bytes)
                .map_err(|e| DecodeError::bad_frame(format!("not a JSON document: {e}")))?,
            Encoding::Msgpack => {
                let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
                de.set_max_depth(MAX_DEPTH + 1);
                let v = serde::Deserialize::deserialize(&mut de).map_err(|e| {
                    DecodeError::bad_frame(format!("not a MessagePack map with string keys: {e}"))
                })?;
                let used = de.position();
                if used as usize != bytes.len() {
                    return Err(DecodeError::bad_frame(format!(
                        "{} trailing bytes after the MessagePack value",
                        bytes.len() - used as usize
                    )));
                }
                v
            }
        };
        decode_value(value)
    }
}

/// Turns a generic value into a client frame, classifying what is wrong with it.
pub fn decode_value(value: Value) -> Result<ClientFrame, DecodeError> {
    if depth(&value) > MAX_DEPTH {
        return Err(DecodeError::bad_frame(format!(
            "nested more than {MAX_DEPTH} levels deep"
        )));
    }
    let map = match &value {
        Value::Object(m) => m,
        other => {
            return Err(DecodeError::bad_frame(format!(
                "a frame must be a map with a \"type\", got {}",
                json_kind(other)
            )))
        }
    };
    let id = map.get("id").and_then(|v| v.as_u64());
    let ty = match map.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(other) => {
            return Err(DecodeError {
                code: ErrorCode::BadFrame,
                message: format!("\"type\" must be a string, got {}", json_kind(other)),
                field: Some("type".into()),
                id,
            })
        }
        None => {
            return Err(DecodeError {
                code: ErrorCode::BadFrame,
                message: "the frame has no \"type\"".into(),
                field: Some("type".into()),
                id,
            })
        }
    };
    if !CLIENT_TYPES.contains(&ty) {
        let shown: String = ty.chars().take(64).collect();
        return Err(DecodeError {
            code: ErrorCode::UnknownType,
            message: format!(
                "unknown frame type {shown:?}; expected one of {}",
                CLIENT_TYPES.join(", ")
            ),
            field: Some("type".into()),
            id,
        });
    }
    if let Some(v) = map.get("id") {
        if v.as_u64().is_none() {
            return Err(DecodeError {
                code: ErrorCode::Invalid,
                message: "\"id\" must be an unsigned integer".into(),
                field: Some("id".into()),
                id: None,
            });
        }
    }
    let is_command = ty == "command";
    if is_command {
        match map.get("command") {
            Some(Value::Object(c)) => match c.get("kind") {
                Some(Value::String(_)) => {}
                _ => {
                    return Err(DecodeError {
                        code: ErrorCode::Invalid,
                        message: "command.kind: missing or not a string".into(),
                        field: Some("command.kind".into()),
                        id,
                    })
                }
            },
            Some(_) => {
                return Err(DecodeError {
                    code: ErrorCode::Invalid,
                    message: "command: must be a map with a \"kind\"".into(),
                    field: Some("command".into()),
                    id,
                })
            }
            None => {}
        }
    }
    let ext = frame_to_external(value);
    let mut track = serde_path_to_error::Track::new();
    let result = ClientFrame::deserialize(serde_path_to_error::Deserializer::new(ext, &mut track));
    result.map_err(|e| {
        let path = wire_path(&track.path().to_string(), is_command);
        let inner = e.to_string();
        let field = field_name(&path, &inner);
        DecodeError {
            code: ErrorCode::Invalid,
            message: match &field {
                Some(f) => format!("{f}: {inner}"),
                None => inner,
            },
            field,
            id,
        }
    })
}

/// Maps a path in the externally tagged form (`command.command.add_tag.tag`) back to the wire
/// form (`command.tag`): the frame type and the command kind are not fields on the wire.
fn wire_path(path: &str, is_command: bool) -> String {
    let segs: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
    let segs: &[&str] = segs.get(1..).unwrap_or(&[]);
    let mut out: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < segs.len() {
        let seg = segs.get(i).copied().unwrap_or_default();
        out.push(seg);
        if is_command && i == 0 && seg == "command" {
            i += 1; // skip the kind segment
        }
        i += 1;
    }
    out.join(".")
}

/// `{"kind": k, …rest}` → `{k: {…rest}}`; anything else is left alone for serde to refuse.
fn tag_to_external(value: Value, tag: &str) -> Value {
    match value {
        Value::Object(mut m) => match m.remove(tag) {
            Some(Value::String(k)) => {
                let mut outer = serde_json::Map::with_capacity(1);
                outer.insert(k, Value::Object(m));
                Value::Object(outer)
            }
            Some(other) => {
                m.insert(tag.to_owned(), other);
                Value::Object(m)
            }
            None => Value::Object(m),
        },
        other => other,
    }
}

/// `{k: {…rest}}` → `{"kind": k, …rest}`.
fn tag_to_internal(value: Value, tag: &str) -> Value {
    match value {
        Value::Object(m) if m.len() == 1 => {
            let Some((k, v)) = m.into_iter().next() else {
                return Value::Null;
            };
            let mut inner = match v {
                Value::Object(inner) => inner,
                _ => serde_json::Map::new(),
            };
            inner.insert(tag.to_owned(), Value::String(k));
            Value::Object(inner)
        }
        other => other,
    }
}

fn frame_to_external(value: Value) -> Value {
    let mut v = tag_to_external(value, "type");
    if let Some(Value::Object(body)) = v.get_mut("command") {
        if let Some(cmd) = body.remove("command") {
            body.insert("command".into(), tag_to_external(cmd, "kind"));
        }
    }
    v
}

fn frame_to_internal(value: Value) -> Value {
    let mut v = value;
    if let Some(Value::Object(body)) = v.get_mut("command") {
        if let Some(cmd) = body.remove("command") {
            body.insert("command".into(), tag_to_internal(cmd, "kind"));
        }
    }
    tag_to_internal(v, "type")
}

impl Serialize for Command {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ext = Command::serialize(self, serde_json::value::Serializer)
            .map_err(serde::ser::Error::custom)?;
        tag_to_internal(ext, "kind").serialize(s)
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Command::deserialize(tag_to_external(v, "kind")).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ClientFrame {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ext = ClientFrame::serialize(self, serde_json::value::Serializer)
            .map_err(serde::ser::Error::custom)?;
        frame_to_internal(ext).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ClientFrame {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        decode_value(v).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// Works out the offending field from serde's path and message. serde reports a missing field
/// at the parent's path and an unknown `kind` at the enum's path, so both are completed here.
fn field_name(path: &str, message: &str) -> Option<String> {
    let base = if path == "." {
        String::new()
    } else {
        path.to_owned()
    };
    let join = |leaf: &str| {
        if base.is_empty() {
            leaf.to_owned()
        } else {
            format!("{base}.{leaf}")
        }
    };
    if let Some(rest) = message.strip_prefix("missing field `") {
        if let Some(name) = rest.split('`').next() {
            return Some(join(name));
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some(name) = rest.split('`').next() {
            // serde_path_to_error already puts an unknown key at the end of the path.
            if base.rsplit('.').next() == Some(name) {
                return Some(base);
            }
            return Some(join(name));
        }
    }
    if message.starts_with("unknown variant") {
        // Only the command enum is tagged by `kind`; other enums are plain values.
        return Some(if base == "command" {
            join("kind")
        } else {
            base
        });
    }
    if base.is_empty() {
        None
    } else {
        Some(base)
    }
}

fn depth(v: &Value) -> usize {
    // Iterative, so that measuring a hostile frame cannot itself recurse deeply.
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(m) => stack.extend(m.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    max
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a map",
    }
}

#[derive(Serialize)]
struct EventFrameRef<'a> {
    r#type: &'static str,
    stream: &'a str,
    seq: u64,
    at: u64,
    actor: &'a crate::event::Actor,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_id: Option<&'a str>,
    event: &'a crate::event::Event,
}

/// Decodes a server frame (for clients and tests).
pub fn decode_server(enc: Encoding, bytes: &[u8]) -> Result<ServerFrame, String> {
    match enc {
        Encoding::Msgpack => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Actor, Event, Role, TagSource};
    use crate::stream::StreamName;

    fn json(s: &str) -> Result<ClientFrame, DecodeError> {
        Encoding::Json.decode_client(s.as_bytes())
    }

    #[test]
    fn decodes_a_command_in_both_encodings() {
        let text = r#"{"type":"command","id":7,"stream":"session/s1","command_id":"c1",
            "expected_seq":3,"command":{"kind":"add_tag","tag":"vip"}}"#;
        let f = json(text).unwrap();
        let want = ClientFrame::Command {
            id: Some(7),
            stream: StreamName::parse("session/s1").unwrap(),
            command_id: "c1".into(),
            expected_seq: Some(3),
            command: Command::AddTag { tag: "vip".into() },
        };
        assert_eq!(f, want);
        let packed = rmp_serde::to_vec_named(&want).unwrap();
        assert_eq!(Encoding::Msgpack.decode_client(&packed).unwrap(), want);
    }

    #[test]
    fn classifies_errors() {
        assert_eq!(json("nope").unwrap_err().code, ErrorCode::BadFrame);
        assert_eq!(json("[1,2]").unwrap_err().code, ErrorCode::BadFrame);
        assert_eq!(json(r#"{"id":1}"#).unwrap_err().code, ErrorCode::BadFrame);
        let e = json(r#"{"type":"dance","id":4}"#).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::UnknownType, Some(4)));
        let e = json(r#"{"type":"subscribe","id":5}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid);
        assert_eq!(e.field.as_deref(), Some("stream"));
        assert_eq!(e.id, Some(5));
        let e = json(r#"{"type":"subscribe","stream":"bogus/1"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("stream"));
        let e = json(
            r#"{"type":"command","stream":"session/a","command_id":"x","command":{"kind":"fly"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("command.kind"), "{e:?}");
        let e = json(
            r#"{"type":"command","stream":"session/a","command_id":"x","command":{"kind":"add_tag"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("command.tag"), "{e:?}");
        let e = json(
            r#"{"type":"command","stream":"session/a","command_id":"x","command":{"kind":"post_message","from":"robot","text":"hi"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("command.from"), "{e:?}");
        let e = json(r#"{"type":"ping","id":-1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("id"));
        let e = json(
            r#"{"type":"command","stream":"session/a","command_id":"x","command":{"kind":"add_tag","tag":5}}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("command.tag"), "{e:?}");
        let e = json(r#"{"type":"history","stream":"session/a","from":"x"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("from"), "{e:?}");
        let e = json(r#"{"type":"ping","extra":1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("extra"));
    }

    #[test]
    fn client_frames_serialise_with_inline_tags() {
        let f = ClientFrame::Command {
            id: None,
            stream: StreamName::parse("session/s1").unwrap(),
            command_id: "c".into(),
            expected_seq: None,
            command: Command::Leave {},
        };
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(
            text,
            r#"{"command":{"kind":"leave"},"command_id":"c","stream":"session/s1","type":"command"}"#
        );
        assert_eq!(json(&text).unwrap(), f);
    }

    #[test]
    fn refuses_deep_nesting_without_recursing() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(json(&deep).unwrap_err().code, ErrorCode::BadFrame);
        let mut packed = vec![0x91u8; 60_000];
        packed.push(0xc0);
        assert_eq!(
            Encoding::Msgpack.decode_client(&packed).unwrap_err().code,
            ErrorCode::BadFrame
        );
    }

    #[test]
    fn event_frames_match_server_frame_encoding() {
        let env = Envelope {
            stream: StreamName::parse("session/s").unwrap(),
            seq: 2,
            at: 1_700_000_000_000,
            actor: Actor {
                id: "op1".into(),
                role: Role::Operator,
            },
            command_id: Some("c".into()),
            event: Event::TagAdded {
                tag: "vip".into(),
                source: TagSource::Manual,
                rule_id: None,
            },
        };
        for enc in [Encoding::Json, Encoding::Msgpack] {
            let a = enc.encode_event(&env);
            let b = enc.encode_frame(&ServerFrame::Event(env.clone()));
            assert_eq!(a, b);
            assert_eq!(
                decode_server(enc, &a).unwrap(),
                ServerFrame::Event(env.clone())
            );
        }
    }
}
