//! The code the fuzz targets in `fuzz/` run, shared with `tests/fuzz_corpus.rs` so that CI
//! replays the committed corpus through exactly the same checks with stable `cargo test`.
//!
//! Included by `#[path]` from both places; it uses only copanel's public API.
//!
//! - [`decode_frame`]: any bytes through the client-frame decoder of one encoding. A frame that
//!   decodes must re-encode (in both encodings) to bytes that decode to the same frame; a refusal
//!   must be `bad_frame`, `unknown_type` or `invalid` with a message.
//! - [`decide_script`]: the bytes are a script of lines, `<principal byte><JSON client frame>`;
//!   every command frame is decided on an in-memory world of streams (the same `decide`/`apply`
//!   the writer runs) and accepted events are folded in. A refusal must carry a message and one
//!   of the codes `decide` may return; at the end every stream's state must equal a fresh replay
//!   of its log.

#![allow(dead_code)]

use copanel::domain::{self, Ctx, Limits, Principal, World};
use copanel_protocol::{ClientFrame, Encoding, Envelope, ErrorCode, Role, StreamName, StreamState};
use std::collections::BTreeMap;

/// Decodes `data` as a client frame in `enc` and checks the round trip (see the module docs).
pub fn decode_frame(enc: Encoding, data: &[u8]) {
    match enc.decode_client(data) {
        Ok(frame) => {
            for again in [Encoding::Json, Encoding::Msgpack] {
                let bytes = again.encode(&frame);
                match again.decode_client(&bytes) {
                    Ok(back) => assert_eq!(back, frame, "{again:?} round trip changed the frame"),
                    Err(e) => panic!("{again:?} re-encoding of {frame:?} does not decode: {e}"),
                }
            }
        }
        Err(e) => {
            assert!(
                matches!(
                    e.code,
                    ErrorCode::BadFrame | ErrorCode::UnknownType | ErrorCode::Invalid
                ),
                "unexpected decode error code {:?}",
                e.code
            );
            assert!(!e.message.is_empty(), "decode error without a message");
        }
    }
}

/// One stream of the in-memory world: its log and its folded state.
struct Stream {
    log: Vec<Envelope>,
    state: StreamState,
}

/// The in-memory world a script runs against.
#[derive(Default)]
struct Mem {
    streams: BTreeMap<StreamName, Stream>,
}

impl Mem {
    fn load(&mut self, name: &StreamName) {
        self.streams.entry(name.clone()).or_insert_with(|| Stream {
            log: Vec::new(),
            state: domain::initial(name.kind()),
        });
    }

    fn append(&mut self, name: &StreamName, env: Envelope) {
        self.load(name);
        if let Some(s) = self.streams.get_mut(name) {
            domain::apply(&mut s.state, &env);
            s.log.push(env);
        }
    }

    fn head(&self, name: &StreamName) -> u64 {
        self.streams.get(name).map_or(0, |s| s.log.len() as u64)
    }
}

impl World for Mem {
    fn state(&self, stream: &StreamName) -> Option<&StreamState> {
        self.streams.get(stream).map(|s| &s.state)
    }
    fn group_members(&self, group: &str) -> Vec<String> {
        match group {
            "g1" => vec!["op1".into(), "op2".into()],
            "g2" => vec!["op3".into()],
            _ => Vec::new(),
        }
    }
}

/// The principal a script line's first byte selects.
fn principal(b: u8) -> Principal {
    let (id, role, groups): (&str, Role, &[&str]) = match b % 6 {
        0 => ("op1", Role::Operator, &["g1"]),
        1 => ("op2", Role::Operator, &["g1"]),
        2 => ("op3", Role::Operator, &["g2"]),
        3 => ("sup", Role::Supervisor, &[]),
        4 => ("adm", Role::Admin, &[]),
        _ => ("svc", Role::Service, &[]),
    };
    Principal {
        id: id.into(),
        role,
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

/// Runs a script of commands through `decide`/`apply` (see the module docs). Returns how many
/// events were accepted, so the corpus replay can show the scripts reach past validation.
pub fn decide_script(data: &[u8]) -> usize {
    let limits = Limits::default();
    let mut mem = Mem::default();
    let mut now = 1_700_000_000_000u64;
    for (n, line) in data.split(|b| *b == b'\n').enumerate().take(256) {
        let Some((&who, frame)) = line.split_first() else {
            continue;
        };
        let Ok(ClientFrame::Command {
            stream,
            command_id,
            expected_seq,
            command,
            ..
        }) = Encoding::Json.decode_client(frame)
        else {
            continue;
        };
        let principal = principal(who);
        now += 1000;
        mem.load(&stream);
        let head = mem.head(&stream);
        if expected_seq.is_some_and(|e| e != head) {
            continue; // the writer answers `conflict` before deciding
        }
        let state = &mem.streams[&stream].state;
        let _ = domain::can_read(&stream, state, &principal);
        for other in domain::needs(&stream, state, &command) {
            mem.load(&other);
        }
        let fresh_id = format!("{n:016x}");
        let ctx = Ctx {
            principal: &principal,
            stream: &stream,
            now,
            next_seq: head + 1,
            limits: &limits,
            world: &mem,
            fresh_id: &fresh_id,
        };
        let state = &mem.streams[&stream].state;
        match domain::decide(state, &ctx, &command) {
            Ok(decision) => {
                let actor = principal.actor();
                let events = decision
                    .events
                    .into_iter()
                    .map(|e| (stream.clone(), e))
                    .chain(decision.others);
                for (name, event) in events {
                    let env = Envelope {
                        stream: name.clone(),
                        seq: mem.head(&name) + 1,
                        at: now,
                        actor: actor.clone(),
                        command_id: Some(command_id.clone()),
                        event,
                    };
                    mem.append(&name, env);
                }
            }
            Err(r) => {
                assert!(
                    matches!(
                        r.code,
                        ErrorCode::Invalid
                            | ErrorCode::Forbidden
                            | ErrorCode::NotFound
                            | ErrorCode::Closed
                            | ErrorCode::TooLarge
                            | ErrorCode::Conflict
                    ),
                    "decide returned {:?} for {command:?}",
                    r.code
                );
                assert!(!r.message.is_empty(), "rejection without a message");
            }
        }
    }
    let mut accepted = 0;
    for (name, s) in &mem.streams {
        accepted += s.log.len();
        let mut replay = domain::initial(name.kind());
        for env in &s.log {
            domain::apply(&mut replay, env);
        }
        assert_eq!(replay, s.state, "{name}: replay differs from the live fold");
    }
    accepted
}
