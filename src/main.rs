//! The `copanel` command: `serve` (the default), `token` and `demo`.

use clap::{Parser, Subcommand, ValueEnum};
use copanel::auth::{self, Auth, Claims};
use copanel::config::{self, DurabilityMode, LogFormat, Overrides};
use copanel::server;
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
    /// Run a demo server: company `demo` with a seeded session; prints console links.
    Demo(DemoArgs),
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// Data directory (default: a fresh temporary directory).
    #[arg(long)]
    data: Option<PathBuf>,
}

/// `serve`'s flags. Each is optional here so that the merge in [`copanel::config`] can tell a
/// flag or variable that was given from a default: flag > environment > `--config` file >
/// default.
#[derive(clap::Args, Default)]
struct ServeArgs {
    /// TOML configuration file: the keys below plus a `[limits]` table (see README).
    #[arg(long, env = "COPANEL_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7700].
    #[arg(long, env = "COPANEL_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory, created if missing [default: ./copanel-data].
    #[arg(long, env = "COPANEL_DATA")]
    data: Option<PathBuf>,
    /// When commands are acknowledged [default: sync].
    #[arg(long, value_enum, env = "COPANEL_DURABILITY")]
    durability: Option<DurabilityMode>,
    /// Token secret (HS256). Default: DATA/secret, generated on first start.
    #[arg(long, env = "COPANEL_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Log format [default: text].
    #[arg(long, value_enum, env = "COPANEL_LOG_FORMAT")]
    log_format: Option<LogFormat>,
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
    /// Also print the console link for this server (`http://127.0.0.1:7700`).
    #[arg(long)]
    url: Option<String>,
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
        Cmd::Demo(args) => demo(args),
    }
}

fn demo(args: DemoArgs) -> ExitCode {
    init_logs(LogFormat::Text);
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
    match runtime.block_on(copanel::demo::run(
        args.listen,
        args.data,
        shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("copanel: {e}");
            ExitCode::FAILURE
        }
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
    let over = Overrides {
        listen: args.listen,
        data: args.data,
        durability: args.durability,
        secret: args.secret,
        log_format: args.log_format,
    };
    // Before the logs exist (the file may choose their format): errors go to stderr.
    let settings = match config::load(over, args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("copanel: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logs(settings.log_format);
    let config = settings.server;
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
        let data = config.data.clone();
        let durability = config.durability;
        let edge = config.edge.clone();
        let running = match server::start(config).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("copanel: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            listen = %running.addr,
            data = %data.display(),
            ?durability,
            epoch = %running.epoch,
            config = ?args.config,
            connections = edge.connections,
            subscriptions = edge.subscriptions,
            "started"
        );
        println!(
            "copanel listening on ws://{}/ws (data {}, epoch {})",
            running.addr,
            data.display(),
            running.epoch
        );
        let stop = running.stopper();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: closing connections, flushing the log");
            let _ = stop.send(true);
        });
        running.wait().await;
        tracing::info!("shut down");
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
    if let Some(url) = args.url {
        println!("{}/?token={token}", url.trim_end_matches('/'));
    }
    ExitCode::SUCCESS
}
