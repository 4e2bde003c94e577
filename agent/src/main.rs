//! `logarchive-agent`: mirrors log folders into the logarchive server over FTP.
//!
//! ```text
//! logarchive-agent run --config agent.toml            mirror until SIGTERM
//! logarchive-agent scan --dry-run --config agent.toml what would be sent now
//! ```

mod mirror;
mod record;
mod remote;
mod scan;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use logarchive_common::config::agent::LoadedAgentConfig;
use logarchive_common::rate::RateLimiter;

use mirror::Mirror;
use record::Record;
use remote::{Login, Remote};
use scan::{LocalFile, Watch};

#[derive(Debug, Parser)]
#[command(
    name = "logarchive-agent",
    version,
    about = "Mirrors log folders into a logarchive server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mirror the watched folders until SIGTERM or SIGINT.
    Run {
        #[arg(long, short, env = "LOGARCHIVE_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Show what would be sent now, without sending anything.
    Scan {
        /// Required: the scan never sends (kept explicit for scripts).
        #[arg(long)]
        dry_run: bool,
        #[arg(long, short, env = "LOGARCHIVE_AGENT_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sled=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match Cli::parse().command {
        Command::Run { config } => run(&config),
        Command::Scan { config, .. } => dry_run(&config),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("logarchive-agent: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

struct Agent {
    config: LoadedAgentConfig,
    watches: Vec<Watch>,
    mirror: Mirror,
}

impl Agent {
    fn open(config_file: &Path) -> anyhow::Result<Agent> {
        let config = LoadedAgentConfig::load(config_file)?;
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("cannot create state_dir {}", config.state_dir.display()))?;
        let record = Record::open(&config.state_dir.join("record")).context(
            "cannot open the agent record (is another logarchive-agent using this state_dir?)",
        )?;
        let watches = config
            .watches
            .iter()
            .map(Watch::new)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let limiters = vec![Arc::new(RateLimiter::new(config.config.upload.max_rate))];
        Ok(Agent {
            watches,
            mirror: Mirror { record, limiters },
            config,
        })
    }

    /// Every watched file that has not changed for the settle time, oldest first.
    fn settled_files(&self) -> Vec<LocalFile> {
        let settle = self.config.config.upload.settle.0.as_nanos() as i128;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let mut files: Vec<LocalFile> = self
            .watches
            .iter()
            .flat_map(Watch::scan)
            .filter(|file| now - file.mtime >= settle)
            .collect();
        files.sort_by_key(|file| file.mtime);
        files
    }

    fn login(&self) -> Login {
        let server = &self.config.config.server;
        Login {
            host: server.host.clone(),
            port: server.port,
            user: server.user.clone(),
            password: self.config.password.clone(),
        }
    }
}

fn run(config_file: &Path) -> anyhow::Result<()> {
    let agent = Agent::open(config_file)?;
    if agent.config.config.server.tls {
        anyhow::bail!("[server] tls = true: FTPS from the agent is not available in this version");
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        tokio::select! {
            result = mirror_forever(&agent) => result,
            signal = stop_signal() => {
                signal?;
                tracing::info!("stopping");
                Ok(())
            }
        }
    })
}

async fn stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Scan, send, wait; reconnect with exponential backoff and jitter when the server is away.
async fn mirror_forever(agent: &Agent) -> anyhow::Result<()> {
    let upload = &agent.config.config.upload;
    let pause = upload
        .settle
        .0
        .min(upload.rescan_interval.0)
        .max(Duration::from_millis(200));
    let mut remote: Option<Remote> = None;
    let mut backoff = Duration::from_secs(1);
    tracing::info!(agent = %agent.config.agent_id, watches = agent.watches.len(), "agent started");
    loop {
        let files = agent.settled_files();
        for file in &files {
            let session = match remote.as_mut() {
                Some(session) => session,
                None => match Remote::connect(&agent.login()).await {
                    Ok(session) => {
                        backoff = Duration::from_secs(1);
                        remote.insert(session)
                    }
                    Err(err) => {
                        let jitter =
                            Duration::from_millis(rand_millis(backoff.as_millis() as u64 / 2));
                        tracing::warn!(
                            "server unreachable, retrying in {:?}: {err}",
                            backoff + jitter
                        );
                        tokio::time::sleep(backoff + jitter).await;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                        break;
                    }
                },
            };
            match agent.mirror.sync(session, file).await {
                Ok(_) => {}
                Err(mirror::MirrorError::Remote(err)) if err.is_connection() => {
                    tracing::warn!("connection lost: {err}");
                    remote = None;
                    break;
                }
                // A refusal (e.g. no permission) is reported and retried on the next pass,
                // never in a busy loop.
                Err(err) => tracing::error!(local = %file.local.display(), "not sent: {err}"),
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// A pseudo-random number below `bound` (jitter needs no cryptographic quality).
fn rand_millis(bound: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    if bound == 0 { 0 } else { nanos % bound }
}

fn dry_run(config_file: &Path) -> anyhow::Result<()> {
    let agent = Agent::open(config_file)?;
    let mut files = 0;
    let mut bytes = 0;
    for watch in &agent.watches {
        for file in watch.scan() {
            let pending = match agent.mirror.record.get(&file.local)? {
                Some(record)
                    if record.dev == file.dev
                        && record.ino == file.ino
                        && record.confirmed <= file.size =>
                {
                    file.size - record.confirmed
                }
                _ => file.size,
            };
            if pending > 0 {
                println!(
                    "{pending:>12}  {}  ->  {}",
                    file.local.display(),
                    file.remote
                );
                files += 1;
                bytes += pending;
            }
        }
    }
    println!("{files} files, {bytes} bytes to send");
    Ok(())
}
