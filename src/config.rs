//! `copanel serve` configuration: flags, environment, an optional TOML file, and defaults.
//!
//! Owns the file format ([`FileConfig`]: top-level keys mirror the flags, `[limits]` holds the
//! edge limits of [`crate::server::EdgeLimits`] and the domain limits of
//! [`crate::domain::Limits`]) and the merge. Precedence, highest first: flag, environment
//! variable (both already folded into [`Overrides`] by the command-line parser), file, default.
//!
//! Never: accept a key it does not know (a misspelt limit silently left at its default is worse
//! than a refused start), or a limit that would make the server misbehave (a zero queue, a zero
//! ping interval).

use crate::domain::Limits;
use crate::server::{Config, EdgeLimits};
use crate::writer::Durability;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default data directory.
pub const DEFAULT_DATA: &str = "./copanel-data";

/// When commands are acknowledged (the `durability` flag and key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Ack after the batch is flushed to disk.
    Sync,
    /// Ack before the flush (events still published after it): lower latency, may lose the last acks on a crash.
    Relaxed,
}

impl From<DurabilityMode> for Durability {
    fn from(d: DurabilityMode) -> Self {
        match d {
            DurabilityMode::Sync => Durability::Sync,
            DurabilityMode::Relaxed => Durability::Relaxed,
        }
    }
}

/// The log format (the `log-format` flag, `log_format` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The configuration file. Every key is optional; unknown keys are an error.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on, e.g. `"0.0.0.0:7700"`.
    pub listen: Option<SocketAddr>,
    /// Data directory; a relative path is taken from the working directory.
    pub data: Option<PathBuf>,
    /// `"sync"` or `"relaxed"`.
    pub durability: Option<DurabilityMode>,
    /// Token secret (HS256). Prefer `COPANEL_SECRET` or `DATA/secret` to a file in a repo.
    pub secret: Option<String>,
    /// `"text"` or `"json"`.
    pub log_format: Option<LogFormat>,
    /// Store a stream's state every this many events (`0`: never); see [`crate::snapshot`].
    pub snapshot_every: Option<u64>,
    /// Whether the process may use transparent huge pages (default `false`: disabled for it).
    pub transparent_huge_pages: Option<bool>,
    /// Limits.
    #[serde(default)]
    pub limits: FileLimits,
}

/// The `[limits]` table: edge limits, then domain limits. Every key is optional.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Largest client frame, bytes (larger ones get `too_large`).
    pub frame_bytes: Option<usize>,
    /// Frames above this many bytes drop the connection.
    pub hard_frame_bytes: Option<usize>,
    /// Subscriptions per connection.
    pub subscriptions: Option<usize>,
    /// Sustained commands per second per connection.
    pub commands_per_sec: Option<f64>,
    /// Command burst per connection.
    pub command_burst: Option<f64>,
    /// Largest `history` page.
    pub history_page: Option<u64>,
    /// Open WebSocket connections at once.
    pub connections: Option<usize>,
    /// Live events queued per connection before its subscriptions fall back to the log.
    pub outbound_queue: Option<usize>,
    /// Seconds between server pings.
    pub ping_interval_secs: Option<u64>,
    /// Seconds of client silence before the connection is closed.
    pub idle_timeout_secs: Option<u64>,
    /// Sustained HTTP API requests per second per token subject.
    pub http_requests_per_sec: Option<f64>,
    /// HTTP API request burst per token subject.
    pub http_burst: Option<f64>,
    /// Client name, email, phone: characters.
    pub client_field_chars: Option<usize>,
    /// Tag name: characters.
    pub tag_chars: Option<usize>,
    /// Tags per session.
    pub tags_per_session: Option<usize>,
    /// Parameter key: characters.
    pub parameter_key_chars: Option<usize>,
    /// Parameter value: characters.
    pub parameter_value_chars: Option<usize>,
    /// Parameters per session.
    pub parameters_per_session: Option<usize>,
    /// Note text: characters.
    pub note_chars: Option<usize>,
    /// Notes per session.
    pub notes_per_session: Option<usize>,
    /// Transcript message: characters.
    pub message_chars: Option<usize>,
    /// Channel name, operator ids, group names, command ids: characters.
    pub id_chars: Option<usize>,
    /// Collaborators per session.
    pub collaborators_per_session: Option<usize>,
}

/// What the flags and environment variables gave (`None`: neither was set).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen` / `COPANEL_LISTEN`.
    pub listen: Option<SocketAddr>,
    /// `--data` / `COPANEL_DATA`.
    pub data: Option<PathBuf>,
    /// `--durability` / `COPANEL_DURABILITY`.
    pub durability: Option<DurabilityMode>,
    /// `--secret` / `COPANEL_SECRET`.
    pub secret: Option<String>,
    /// `--log-format` / `COPANEL_LOG_FORMAT`.
    pub log_format: Option<LogFormat>,
    /// `--transparent-huge-pages` / `COPANEL_TRANSPARENT_HUGE_PAGES`.
    pub transparent_huge_pages: Option<bool>,
}

/// The merged result: the server's configuration and how to log.
#[derive(Debug, Clone)]
pub struct Settings {
    /// For [`crate::server::start`].
    pub server: Config,
    /// The log format.
    pub log_format: LogFormat,
    /// Whether the process may use transparent huge pages. `false` (the default): `serve`
    /// disables them for itself at start, because one huge-page fault zeroes 2 MiB while the
    /// faulting thread waits — on a VM measured at 10–25 ms in the writer, the p99 of a whole
    /// load run (BENCHMARKS.md, seventh pass). `true` leaves the system's policy.
    pub transparent_huge_pages: bool,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {err}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        err: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type. The
    /// message names the line, the column and the key.
    #[error("bad config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid limit `{key}`: {message}")]
    Invalid {
        /// The key, as written in `[limits]`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Parses a configuration file's text; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string().trim_end().to_owned(),
    })
}

/// Reads and parses a configuration file.
pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
        path: path.display().to_string(),
        err,
    })?;
    parse(&text, path)
}

/// Merges flags and environment (`over`) over the file over the defaults, and checks the limits.
pub fn merge(over: Overrides, file: FileConfig) -> Result<Settings, ConfigError> {
    let listen = over
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7700)));
    let data = over
        .data
        .or(file.data)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
    let mut server = Config::new(listen, data);
    server.durability = over
        .durability
        .or(file.durability)
        .unwrap_or(DurabilityMode::Sync)
        .into();
    server.secret = over.secret.or(file.secret);
    if let Some(n) = file.snapshot_every {
        server.snapshot_every = n;
    }
    let (edge, limits) = limits(&file.limits)?;
    server.edge = edge;
    server.limits = limits;
    Ok(Settings {
        server,
        log_format: over.log_format.or(file.log_format).unwrap_or_default(),
        transparent_huge_pages: over
            .transparent_huge_pages
            .or(file.transparent_huge_pages)
            .unwrap_or(false),
    })
}

/// Reads the file (if any) and merges; the whole of `copanel serve`'s configuration step.
pub fn load(over: Overrides, file: Option<&Path>) -> Result<Settings, ConfigError> {
    let file = match file {
        Some(p) => read(p)?,
        None => FileConfig::default(),
    };
    merge(over, file)
}

fn positive<T: PartialOrd + Default + Copy>(
    key: &'static str,
    v: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) if v > T::default() => Ok(v),
        Some(_) => Err(ConfigError::Invalid {
            key,
            message: "must be greater than zero".into(),
        }),
    }
}

/// Sets `$target.$field` from `$file.$field` if given, refusing zero.
macro_rules! set_positive {
    ($target:ident, $file:ident, $($field:ident),+ $(,)?) => {
        $( $target.$field = positive(stringify!($field), $file.$field, $target.$field)?; )+
    };
}

/// The edge and domain limits of `[limits]` over their defaults. Fields are set one by one, so
/// a limit added to either struct keeps its default until it gets a key here.
fn limits(f: &FileLimits) -> Result<(EdgeLimits, Limits), ConfigError> {
    let mut edge = EdgeLimits::default();
    set_positive!(
        edge,
        f,
        frame_bytes,
        hard_frame_bytes,
        subscriptions,
        commands_per_sec,
        command_burst,
        history_page,
        connections,
        outbound_queue,
        http_requests_per_sec,
        http_burst,
    );
    if let Some(s) = f.ping_interval_secs {
        edge.ping_interval = Duration::from_secs(positive("ping_interval_secs", Some(s), 0)?);
    }
    if let Some(s) = f.idle_timeout_secs {
        edge.idle_timeout = Duration::from_secs(positive("idle_timeout_secs", Some(s), 0)?);
    }
    if edge.frame_bytes > edge.hard_frame_bytes {
        return Err(ConfigError::Invalid {
            key: "frame_bytes",
            message: format!(
                "{} is above hard_frame_bytes ({})",
                edge.frame_bytes, edge.hard_frame_bytes
            ),
        });
    }
    if !edge.commands_per_sec.is_finite() {
        return Err(ConfigError::Invalid {
            key: "commands_per_sec",
            message: "must be a finite number".into(),
        });
    }
    for (key, v) in [
        ("http_requests_per_sec", edge.http_requests_per_sec),
        ("http_burst", edge.http_burst),
    ] {
        if !v.is_finite() || (key == "http_burst" && v < 1.0) {
            return Err(ConfigError::Invalid {
                key,
                message: "must be a finite number (a burst of at least 1)".into(),
            });
        }
    }
    if !edge.command_burst.is_finite() || edge.command_burst < 1.0 {
        return Err(ConfigError::Invalid {
            key: "command_burst",
            message: "must be a finite number of at least 1, or no command is ever accepted".into(),
        });
    }
    let mut limits = Limits::default();
    set_positive!(
        limits,
        f,
        client_field_chars,
        tag_chars,
        tags_per_session,
        parameter_key_chars,
        parameter_value_chars,
        parameters_per_session,
        note_chars,
        notes_per_session,
        message_chars,
        id_chars,
        collaborators_per_session,
    );
    Ok((edge, limits))
}
