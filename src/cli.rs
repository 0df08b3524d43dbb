//! The command line: `serve` (the default), `check-config`, and the hook
//! that git runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, RuntimeFiles, config_file_path};

/// procurator-ci: a Nix-native continuous integration daemon.
#[derive(Debug, Parser)]
#[command(name = "procurator-ci", version, about)]
struct Cli {
    /// Configuration file (default: $PROCURATOR_CI_CONFIG, else
    /// /etc/procurator-ci/config.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Load and validate the configuration, print it as TOML, and exit.
    CheckConfig {
        /// Check everything but the contents of files that exist only where
        /// the daemon runs (`api_token_file`, `[[notify]] secret_file`), as a
        /// build that generates the configuration must.
        #[arg(long)]
        build_time: bool,
    },
    /// Copy the database, the repositories and the logs into DIR (new or
    /// empty), consistently, while the daemon runs. Run it as the service
    /// user; restore by copying DIR/state/ into an empty state directory.
    Backup {
        /// Where the backup goes (created with mode 0700).
        dir: PathBuf,
    },
    /// Entry points of the git hooks the daemon installs.
    #[command(hide = true)]
    Hook {
        #[command(subcommand)]
        hook: Hook,
    },
}

#[derive(Debug, Subcommand)]
enum Hook {
    /// Queue builds for the branches git just updated.
    PostReceive {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        repo: String,
    },
    /// Refuse branch names procurator-ci cannot build, before git stores
    /// anything.
    PreReceive,
}

fn load(config: Option<PathBuf>, runtime_files: RuntimeFiles) -> Result<Config, ExitCode> {
    Config::load_checking(
        config_file_path(config.as_deref()).as_deref(),
        runtime_files,
    )
    .map_err(|e| {
        // An error quotes the value at fault, which may be a URL with its
        // credentials.
        eprintln!("procurator-ci: {}", crate::redact::urls(&e.to_string()));
        ExitCode::from(2)
    })
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig { build_time } => {
            let runtime_files = if build_time {
                RuntimeFiles::Skip
            } else {
                RuntimeFiles::Read
            };
            match load(cli.config, runtime_files) {
                Ok(config) => {
                    // The signing key's contents, as the start reads them.
                    if runtime_files == RuntimeFiles::Read
                        && let Err(e) = crate::cache::Cache::load(&config)
                    {
                        eprintln!("procurator-ci: cache_secret_key_file: {e}");
                        return ExitCode::from(2);
                    }
                    for warning in Config::foreign_environment() {
                        eprintln!("procurator-ci: warning: {warning}");
                    }
                    print!("{}", config.to_toml());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        Command::Backup { dir } => match load(cli.config, RuntimeFiles::Skip) {
            Ok(config) => match crate::ops::backup::backup(&config, &dir) {
                Ok(manifest) => {
                    println!(
                        "procurator-ci: backed up the database (schema {}), {} repositories and {} log files into {}",
                        manifest.schema_version,
                        manifest.repositories.len(),
                        manifest.log_files,
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("procurator-ci: backup failed: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(code) => code,
        },
        Command::Hook {
            hook: Hook::PreReceive,
        } => {
            if crate::repos::hook::pre_receive_main() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Hook {
            hook: Hook::PostReceive { socket, repo },
        } => {
            crate::repos::hook::main(&socket, &repo);
            ExitCode::SUCCESS
        }
        Command::Serve => match load(cli.config, RuntimeFiles::Read) {
            Ok(config) => serve(config),
            Err(code) => code,
        },
    }
}

/// Threads of the runtime's blocking pool. Its jobs are short (SQLite
/// reads, at most 8 at once; log frames, at most 4; git reads) and never
/// wait on one another, so a small pool serves them all. Tokio's default
/// (512) let a burst of hundreds of log clients grow the pool by dozens of
/// threads that then idled for seconds.
const BLOCKING_THREADS: usize = 32;

fn serve(config: Config) -> ExitCode {
    crate::ops::telemetry::init(config.log_format);
    for warning in Config::foreign_environment() {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(on_signal(shutdown.clone()));
        match crate::server::serve(config, None, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "procurator-ci could not start");
                eprintln!("procurator-ci: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGTERM or SIGINT starts the graceful shutdown.
async fn on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "Received signal; shutting down");
    shutdown.cancel();
}
