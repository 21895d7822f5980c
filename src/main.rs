//! The `copanel` command: `serve` (the default) and `token`.

use clap::{Parser, Subcommand, ValueEnum};
use copanel::auth::{self, Auth, Claims};
use copanel::server::{self, Config};
use copanel::writer::Durability;
use copanel_protocol::Role;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "copanel",
    version,
    about = "Real-time collaboration server for the client panel of a contact-centre console"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (the default when no command is given).
    Serve(ServeArgs),
    /// Print a signed token for an operator, supervisor, admin or service.
    Token(TokenArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// Ack after the batch is flushed to disk.
    Sync,
    /// Ack before the flush (events still published after it): lower latency, may lose the last acks on a crash.
    Relaxed,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7700", env = "COPANEL_LISTEN")]
    listen: SocketAddr,
    /// Data directory (created if missing).
    #[arg(long, default_value = "./copanel-data", env = "COPANEL_DATA")]
    data: PathBuf,
    /// When commands are acknowledged.
    #[arg(long, value_enum, default_value = "sync", env = "COPANEL_DURABILITY")]
    durability: DurabilityArg,
    /// Token secret (HS256). Default: DATA/secret, generated on first start.
    #[arg(long, env = "COPANEL_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "COPANEL_LOG_FORMAT")]
    log_format: LogFormat,
}

impl Default for ServeArgs {
    fn default() -> Self {
        ServeArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            data: PathBuf::from("./copanel-data"),
            durability: DurabilityArg::Sync,
            secret: std::env::var("COPANEL_SECRET").ok(),
            log_format: LogFormat::Text,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Operator,
    Supervisor,
    Admin,
    Service,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Company id.
    #[arg(long)]
    company: String,
    /// Operator (or service) id: the token's `sub`.
    #[arg(long)]
    operator: String,
    /// Role.
    #[arg(long, value_enum, default_value = "operator")]
    role: RoleArg,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Group membership (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 12 * 3600)]
    ttl: u64,
    /// Data directory whose secret signs the token (ignored with --secret).
    #[arg(long, default_value = "./copanel-data", env = "COPANEL_DATA")]
    data: PathBuf,
    /// Token secret, as given to `serve`.
    #[arg(long, env = "COPANEL_SECRET", hide_env_values = true)]
    secret: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // No command means `serve` with its defaults and environment fallbacks, parsed by clap.
    let command =
        cli.command
            .unwrap_or_else(|| match Cli::parse_from(["copanel", "serve"]).command {
                Some(c) => c,
                None => Cmd::Serve(ServeArgs::default()),
            });
    match command {
        Cmd::Serve(args) => serve(args),
        Cmd::Token(args) => token(args),
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Logs go to stderr, so stdout carries only what the command prints (the address, a token).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    init_logs(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("copanel: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut config = Config::new(args.listen, args.data.clone());
        config.durability = match args.durability {
            DurabilityArg::Sync => Durability::Sync,
            DurabilityArg::Relaxed => Durability::Relaxed,
        };
        config.secret = args.secret;
        let running = match server::start(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("copanel: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "copanel listening on ws://{}/ws (data {}, epoch {})",
            running.addr,
            args.data.display(),
            running.epoch
        );
        let stop = running.stopper();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: closing connections, flushing the log");
            let _ = stop.send(true);
        });
        running.wait().await;
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn token(args: TokenArgs) -> ExitCode {
    let secret = match args.secret {
        Some(s) => s.into_bytes(),
        None => match auth::load_or_create_secret(&args.data) {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "copanel: cannot read or create the secret in {}: {e}",
                    args.data.display()
                );
                return ExitCode::FAILURE;
            }
        },
    };
    let claims = Claims {
        sub: args.operator,
        company: args.company,
        role: match args.role {
            RoleArg::Operator => Role::Operator,
            RoleArg::Supervisor => Role::Supervisor,
            RoleArg::Admin => Role::Admin,
            RoleArg::Service => Role::Service,
        },
        name: args.name,
        groups: args.groups,
        exp: auth::now_secs() + args.ttl,
    };
    let auth = Auth::new(&secret);
    let token = match auth.mint(&claims) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("copanel: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Check what we mint the way the server will, so a bad id fails here, not at connect.
    if let Err(e) = auth.verify(&token) {
        eprintln!("copanel: {e}");
        return ExitCode::FAILURE;
    }
    println!("{token}");
    ExitCode::SUCCESS
}
