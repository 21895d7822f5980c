//! Error codes carried by `error` frames (and, later, HTTP error bodies).

use serde::{Deserialize, Serialize};

/// The machine-readable reason of an `error` frame. Every code is documented in
/// `protocol/README.md`, with what a client should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame could not be decoded at all (not MessagePack/JSON, not a map, no `type`).
    BadFrame,
    /// The frame's `type` is not one this server knows.
    UnknownType,
    /// A field is missing or has a wrong value; the frame names it in `field`.
    Invalid,
    /// The token is missing, malformed, forged or expired.
    Unauthorized,
    /// The caller may not do this on this stream.
    Forbidden,
    /// The stream or the thing inside it does not exist (or the caller may not know it does).
    NotFound,
    /// `expected_seq` no longer matches the stream's head; the frame carries `head`.
    Conflict,
    /// The session is closed and this command is not allowed after close.
    Closed,
    /// The frame or a value in it is over a limit.
    TooLarge,
    /// The connection sent more than its rate allows.
    RateLimited,
    /// The store could not take the write (disk, shutdown); the outcome of a command is unknown
    /// and it may be retried with the same `command_id`.
    Unavailable,
    /// A bug on the server; logged with details there.
    Internal,
}

impl ErrorCode {
    /// The wire spelling of the code, e.g. `"bad_frame"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Closed => "closed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
