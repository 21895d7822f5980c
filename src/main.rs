//! The `copanel` command: `serve` (the default), `token`, `demo`, and the offline store tools
//! `verify`, `export` and `import` (logic in [`copanel::verify`] and [`copanel::backup`]).

use clap::{Parser, Subcommand, ValueEnum};
use copanel::auth::{self, Auth, Claims};
use copanel::config::{self, DurabilityMode, LogFormat, Overrides};
use copanel::server;
use copanel_protocol::Role;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: the server allocates and frees small buffers (frames,
/// envelopes, sled nodes) on every core at once, and glibc's arena locks and consolidation were
/// about a tenth of the server's CPU samples under fan-out load (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Check a stopped server's store: gapless streams, decodable events, replay, outcomes,
    /// derived records. Exit status 0 clean, 1 problems found, 2 cannot read the store.
    Verify(VerifyArgs),
    /// Print one stream's events from a stopped server's store, one JSON envelope a line
    /// (or, with --at, the stream's state after that seq).
    History(HistoryArgs),
    /// Write a stopped server's whole store as NDJSON (see RELIABILITY.md).
    Export(ExportArgs),
    /// Recreate a store from an export, in a new or empty directory.
    Import(ImportArgs),
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Data directory of the store (the server must not be running on it).
    #[arg(long)]
    data: PathBuf,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// Data directory of the store (the server must not be running on it).
    #[arg(long)]
    data: PathBuf,
    /// Where to write: a file (written beside it, then renamed) or `-` for stdout.
    #[arg(long, default_value = "-")]
    out: PathBuf,
    /// Also export the token secret (DATA/secret). It is a credential: off by default.
    #[arg(long)]
    include_secret: bool,
}

#[derive(clap::Args)]
struct HistoryArgs {
    /// Data directory of the store (the server must not be running on it).
    #[arg(long)]
    data: PathBuf,
    /// Company id.
    #[arg(long)]
    company: String,
    /// Stream name: `session/<id>`, `operator/<id>`, `contact/<id>` or `catalog`.
    #[arg(long)]
    stream: String,
    /// First seq to print.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Most events to print (all when absent).
    #[arg(long)]
    limit: Option<u64>,
    /// Print the state after this seq (`{"seq", "state"}`) instead of events.
    #[arg(long)]
    at: Option<u64>,
}

#[derive(clap::Args)]
struct ImportArgs {
    /// Data directory to create (must not exist, or be empty).
    #[arg(long)]
    data: PathBuf,
    /// The export to read: a file or `-` for stdin.
    #[arg(long = "in", default_value = "-")]
    input: PathBuf,
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
    /// Let the process use transparent huge pages (`true`), or disable them for it (`false`):
    /// a huge-page fault stalls its thread while 2 MiB are zeroed [default: false].
    #[arg(long, env = "COPANEL_TRANSPARENT_HUGE_PAGES")]
    transparent_huge_pages: Option<bool>,
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
        Cmd::Verify(args) => verify(args),
        Cmd::History(args) => history(args),
        Cmd::Export(args) => export(args),
        Cmd::Import(args) => import(args),
    }
}

fn verify(args: VerifyArgs) -> ExitCode {
    let store = match copanel::backup::open_existing(&args.data) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("copanel: {e}");
            return ExitCode::from(2);
        }
    };
    match copanel::verify::verify(&store) {
        Ok(report) => {
            println!("verify {}: {report}", args.data.display());
            if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!(
                "copanel: cannot read the store in {}: {e}",
                args.data.display()
            );
            ExitCode::from(2)
        }
    }
}

fn history(args: HistoryArgs) -> ExitCode {
    match copanel::backup::history(
        &args.data,
        &args.company,
        &args.stream,
        args.from,
        args.limit,
        args.at,
        &mut std::io::BufWriter::new(std::io::stdout().lock()),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("copanel: {e}");
            ExitCode::FAILURE
        }
    }
}

fn export(args: ExportArgs) -> ExitCode {
    let store = match copanel::backup::open_existing(&args.data) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("copanel: {e}");
            return ExitCode::FAILURE;
        }
    };
    let to_stdout = args.out.as_os_str() == "-";
    let result = if to_stdout {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        copanel::backup::export(&store, &args.data, args.include_secret, &mut out)
    } else {
        export_to_file(&store, &args)
    };
    match result {
        Ok(summary) => {
            let to = if to_stdout {
                "stdout".to_owned()
            } else {
                args.out.display().to_string()
            };
            eprintln!("exported {} to {to}: {summary}", args.data.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("copanel: export failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exports into `FILE.partial` and renames it to `FILE` once complete.
fn export_to_file(
    store: &copanel::store::SledStore,
    args: &ExportArgs,
) -> Result<copanel::backup::Summary, copanel::backup::BackupError> {
    use copanel::backup::BackupError;
    let mut partial = args.out.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let io = |e: std::io::Error| BackupError::Other(format!("{}: {e}", partial.display()));
    let file = std::fs::File::create(&partial).map_err(io)?;
    let mut out = std::io::BufWriter::new(file);
    let summary = copanel::backup::export(store, &args.data, args.include_secret, &mut out);
    let done = summary.and_then(|s| {
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&partial, &args.out)
            .map_err(|e| BackupError::Other(format!("{}: {e}", args.out.display())))?;
        Ok(s)
    });
    if done.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    done
}

fn import(args: ImportArgs) -> ExitCode {
    let result = if args.input.as_os_str() == "-" {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        copanel::backup::import(&mut input, &args.data)
    } else {
        match std::fs::File::open(&args.input) {
            Ok(f) => copanel::backup::import(&mut std::io::BufReader::new(f), &args.data),
            Err(e) => {
                eprintln!("copanel: cannot open {}: {e}", args.input.display());
                return ExitCode::FAILURE;
            }
        }
    };
    match result {
        Ok(summary) => {
            eprintln!("imported into {}: {summary}", args.data.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("copanel: import of {} failed: {e}", args.input.display());
            ExitCode::FAILURE
        }
    }
}

fn demo(args: DemoArgs) -> ExitCode {
    init_logs(LogFormat::Text);
    huge_pages(false);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
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

/// Applies the `transparent_huge_pages` setting to this process, before the runtime and the
/// store allocate: `prctl(PR_SET_THP_DISABLE)` set (`allowed == false`) or cleared (`true`,
/// also undoing a flag inherited from a parent). Set, it holds for every thread and even where
/// the allocator asked for huge pages (`madvise(MADV_HUGEPAGE)`, as mimalloc does for its
/// arenas). Linux only; elsewhere there are no transparent huge pages to disable.
fn huge_pages(allowed: bool) {
    #[cfg(target_os = "linux")]
    match (
        rustix::thread::disable_transparent_huge_pages(!allowed),
        allowed,
    ) {
        (Ok(()), false) => tracing::info!(
            "transparent huge pages disabled for this process (set transparent_huge_pages = true to keep the system's policy)"
        ),
        (Ok(()), true) => tracing::info!("transparent huge pages: the system's policy applies"),
        (Err(e), false) => tracing::warn!(
            error = %e,
            "cannot disable transparent huge pages: a huge-page fault may stall a thread for milliseconds"
        ),
        (Err(e), true) => tracing::warn!(
            error = %e,
            "cannot clear the process's THP-disable flag; the system's policy may not apply"
        ),
    }
    #[cfg(not(target_os = "linux"))]
    let _ = allowed;
}

/// The multi-thread runtime of `serve` and `demo`; `None` (said on stderr) if it cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("copanel: cannot start the runtime: {e}");
            None
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
        transparent_huge_pages: args.transparent_huge_pages,
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
    huge_pages(settings.transparent_huge_pages);
    let config = settings.server;
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
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
        let stopped = running.wait().await;
        tracing::info!(?stopped, "shut down");
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
