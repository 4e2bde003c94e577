//! `logarchive-agent`: mirrors log folders into the logarchive server over FTP.
//!
//! ```text
//! logarchive-agent run --config agent.toml            mirror until SIGTERM
//! logarchive-agent scan --dry-run --config agent.toml what would be sent now
//! logarchive-agent check-config --config agent.toml   validate, start nothing
//! logarchive-agent import --config AgentConfig.txt    take over from the Python agent
//! ```

mod check_config;
mod confirmed_index;
mod import;
mod local_range;
mod mirror;
mod progress;
mod record;
mod remote;
mod scan;
mod watch;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// Backlog per watch, last success and last error.
    Status {
        /// As JSON.
        #[arg(long)]
        json: bool,
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
    /// Check agent.toml and print what `run` would do (without connecting or watching).
    CheckConfig {
        #[arg(long, short, env = "LOGARCHIVE_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Write an agent.toml from the Python archiver's AgentConfig.txt and mark the files it
    /// uploaded (checked on the server with SIZE) as sent.
    Import(import::ImportArgs),
}

fn main() -> std::process::ExitCode {
    logarchive_common::logging::init_with_writer("info,sled=warn", || progress::LogWriter);
    let result = match Cli::parse().command {
        Command::Run { config } => run(&config),
        Command::Scan { config, .. } => dry_run(&config),
        Command::Status { config, json } => status(&config, json),
        Command::CheckConfig { config } => check_config::run(&config),
        Command::Import(args) => import::run(args),
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
    /// The FTPS client configuration when `[server] tls = true`.
    tls: Option<Arc<rustls::ClientConfig>>,
    watches: Vec<Watch>,
    mirror: Mirror,
}

impl Agent {
    fn open(config_file: &Path) -> anyhow::Result<Agent> {
        let config = LoadedAgentConfig::load(config_file)?;
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("cannot create state_dir {}", config.state_dir.display()))?;
        // A `status` or `scan` may hold the record for a moment: wait a little for it.
        let path = config.state_dir.join("record");
        let mut attempt = 0;
        let record = loop {
            match Record::open(&path) {
                Ok(record) => break record,
                Err(_) if attempt < 50 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => {
                    return Err(err).context(
                        "cannot open the agent record (is another logarchive-agent using this state_dir?)",
                    );
                }
            }
        };
        let watches = config
            .watches
            .iter()
            .map(Watch::new)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let limiters = vec![Arc::new(RateLimiter::new(config.config.upload.max_rate))];
        let server = &config.config.server;
        let tls = match server.tls {
            true => Some(remote::client_tls(server.ca_file.as_deref())?),
            false => None,
        };
        Ok(Agent {
            tls,
            watches,
            mirror: Mirror {
                record,
                limiters,
                copy_turn: tokio::sync::Mutex::new(()),
            },
            config,
        })
    }

    /// Of the files that need sending, those unchanged for the settle time, oldest first,
    /// and how long until the next file still settling will be ready.
    /// The files are moved, not copied: the first pass after install may hold 100,000.
    fn settled_files(&self, survey: Vec<Backlog>) -> (Vec<LocalFile>, Option<Duration>) {
        let settle = self.config.config.upload.settle.0.as_nanos() as i128;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let mut settled = Vec::new();
        let mut next: Option<i128> = None;
        for file in survey.into_iter().flat_map(|watch| watch.files) {
            if now - file.mtime >= settle {
                settled.push(file);
            } else {
                let wait = settle - (now - file.mtime);
                next = Some(next.map_or(wait, |n| n.min(wait)));
            }
        }
        settled.sort_by_key(|file| file.mtime);
        let next =
            next.map(|wait| Duration::from_nanos(wait.max(0) as u64) + Duration::from_millis(20));
        (settled, next)
    }

    fn login(&self) -> Login {
        let server = &self.config.config.server;
        Login {
            host: server.host.clone(),
            port: server.port,
            user: server.user.clone(),
            password: self.config.password.clone(),
            tls: self.tls.clone(),
        }
    }
}

fn run(config_file: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup())?;
        let mut agent = Agent::open(config_file)?;
        loop {
            enum Wake {
                /// A large backlog was sent (or the record failed).
                Returned(anyhow::Result<BacklogSent>),
                Signalled(anyhow::Result<()>),
                Reload,
            }
            let wake = tokio::select! {
                result = mirror_forever(&agent) => Wake::Returned(result),
                signal = stop_signal() => Wake::Signalled(signal),
                _ = hangup.recv() => Wake::Reload,
            };
            match wake {
                Wake::Returned(result) => {
                    let backlog = result?;
                    // Only with a config that still loads: the fresh process reads it.
                    match LoadedAgentConfig::load(config_file) {
                        Ok(_) => {
                            tracing::info!(
                                files = backlog.files,
                                "backlog sent: continuing in a fresh process (same process id) to return the memory sending fragmented"
                            );
                            drop(agent); // flushes and closes the record
                            let err = exec_fresh();
                            tracing::error!("could not start a fresh process, going on: {err}");
                            agent = Agent::open(config_file)?;
                        }
                        Err(err) => tracing::error!(
                            "no fresh start after the backlog, the configuration no longer loads: {err}"
                        ),
                    }
                }
                Wake::Signalled(signal) => {
                    signal?;
                    tracing::info!("stopping");
                    return Ok(());
                }
                // SIGHUP: a config that loads replaces the running one; a broken one is
                // reported and the agent goes on as it was.
                Wake::Reload => match LoadedAgentConfig::load(config_file) {
                    Ok(_) => {
                        drop(agent); // releases the record before it is opened again
                        agent = Agent::open(config_file)?;
                        tracing::info!("SIGHUP: configuration reloaded");
                    }
                    Err(err) => {
                        tracing::error!(
                            "SIGHUP: configuration not reloaded, the running one stays: {err}"
                        )
                    }
                },
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

/// Replaces this process with a fresh run of the same program, arguments and environment
/// (`execve` keeps the process id, so a service manager sees no restart). Sending a large
/// backlog leaves glibc's heap in small free pieces between live ones (sled's
/// copy-on-write pages) that `malloc_trim` cannot give back; a fresh process holds only
/// what an idle agent needs. Returns only if the exec failed.
fn exec_fresh() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_default();
    std::process::Command::new("/proc/self/exe")
        .arg0(program)
        .args(args)
        .exec()
}

/// A backlog sent in full (the agent idles next): how many files it held.
struct BacklogSent {
    files: u64,
}

/// Files the server refused, and when to try each again (doubling, 2 s to 5 min).
type Refused = Mutex<HashMap<PathBuf, (Instant, Duration)>>;

/// How a worker's part of a pass ended.
enum WorkerEnd {
    /// The queue is empty.
    Done,
    /// The server could not be reached (or the connection broke).
    Unreachable,
}

/// Scan, send with `parallel` sessions, wait; when the server is away, back off
/// exponentially with jitter. An outage of any length only grows the backlog, which then
/// drains oldest first. Returns once a backlog of `fresh_start_after` files or more is
/// sent, for the caller to start afresh.
async fn mirror_forever(agent: &Agent) -> anyhow::Result<BacklogSent> {
    let upload = &agent.config.config.upload;
    let settle = upload.settle.0;
    let hints = watch::ChangeHints::start(&agent.watches, upload.poll_interval.0);
    let mut sessions: Vec<Option<Remote>> = (0..upload.parallel.0).map(|_| None).collect();
    let mut backoff = Duration::from_secs(1);
    let refused: Refused = Mutex::new(HashMap::new());
    let mut last_health: Option<Instant> = None;
    // Spans the bounded passes of one large backlog.
    let mut progress: Option<progress::Progress> = None;
    // Files sent since the agent last went idle.
    let mut sent_since_idle: u64 = 0;
    tracing::info!(agent = %agent.config.agent_id, watches = agent.watches.len(), sessions = sessions.len(), "agent started");
    loop {
        let now = Instant::now();
        // One walk per pass: it feeds the queue and, minus what was sent, the status. A
        // large backlog goes in bounded passes, oldest first, so a pass holds at most
        // `files_per_pass` files and the status and health report are refreshed between
        // passes, not once an hour-long backlog is through. Files refused a moment ago
        // wait for their retry time without holding back the others.
        let per_pass = upload.files_per_pass.0;
        let due = |file: &LocalFile| {
            lock(&refused)
                .get(&file.local)
                .is_none_or(|(at, _)| *at <= now)
        };
        let survey = match backlog(agent, per_pass, due) {
            Ok(survey) => survey,
            Err(err) => {
                tracing::error!("cannot read the agent record: {err:#}");
                Vec::new()
            }
        };
        let before: Vec<Pending> = survey.iter().map(|watch| watch.pending).collect();
        let total = before
            .iter()
            .fold(Pending::default(), |sum, watch| Pending {
                files: sum.files + watch.files,
                bytes: sum.bytes + watch.bytes,
            });
        let mut bounded = survey.iter().any(|watch| watch.left_out);
        let (mut settled, mut next_settled) = agent.settled_files(survey);
        if progress.is_none() {
            progress = progress::Progress::for_backlog(total.files as usize, total.bytes);
        }
        if settled.len() > per_pass {
            settled.truncate(per_pass);
            bounded = true;
        }
        if bounded {
            tracing::info!(
                "a pass of the oldest {} of {} files to send; the next pass follows",
                settled.len(),
                total.files
            );
            next_settled = Some(Duration::ZERO);
        }
        if defer_replacements(&mut settled) {
            next_settled = Some(Duration::ZERO);
        }
        let sent: Mutex<Vec<Pending>> = Mutex::new(vec![Pending::default(); before.len()]);
        let queue: Mutex<VecDeque<LocalFile>> = Mutex::new(settled.into_iter().collect());
        let ends = futures_util::future::join_all(
            sessions
                .iter_mut()
                .map(|slot| worker(agent, slot, &queue, &refused, &sent, progress.as_ref())),
        )
        .await;
        let drained = ends.iter().all(|end| matches!(end, WorkerEnd::Done));
        if (!bounded || !drained)
            && let Some(progress) = progress.take()
        {
            progress.finish();
        }
        let sent = sent.into_inner().unwrap_or_else(|p| p.into_inner());
        sent_since_idle += sent.iter().map(|watch| watch.files).sum::<u64>();
        // Empty now, but still as large as the pass was (100,000 files: 11 MiB): freed
        // before the agent waits, not after.
        drop(queue);
        // Everything sent and nothing settling after a first pass or a backlog: the agent
        // is about to idle, so sled's cache, full of records it will not read again, is
        // let go.
        if drained && next_settled.is_none() {
            let fresh_after = upload.fresh_start_after.0;
            if fresh_after > 0 && sent_since_idle >= fresh_after {
                return Ok(BacklogSent {
                    files: sent_since_idle,
                });
            }
            sent_since_idle = 0;
            let started = Instant::now();
            match agent.mirror.record.release_cache() {
                Ok(true) => {
                    tracing::info!(took = ?started.elapsed(), "record reopened to release its cache")
                }
                Ok(false) => {}
                Err(err) => return Err(err).context("cannot reopen the agent record"),
            }
        }
        release_free_memory();
        let left: Vec<Pending> = before
            .iter()
            .zip(&sent)
            .map(|(before, sent)| Pending {
                files: before.files.saturating_sub(sent.files),
                bytes: before.bytes.saturating_sub(sent.bytes),
            })
            .collect();
        let report = match write_status(agent, &left) {
            Ok(report) => Some(report),
            Err(err) => {
                tracing::warn!("cannot write the status file: {err:#}");
                None
            }
        };
        let reachable = !ends.iter().any(|end| matches!(end, WorkerEnd::Unreachable));
        let health_due = last_health.is_none_or(|at| at.elapsed() >= upload.report_interval.0);
        if let (true, true, Some(report), Some(slot)) =
            (reachable, health_due, report, sessions.first_mut())
        {
            if slot.is_none() {
                *slot = Remote::connect(&agent.login()).await.ok();
            }
            if let Some(session) = slot.as_mut() {
                match send_health(session, &report).await {
                    Ok(()) => last_health = Some(Instant::now()),
                    Err(err) => {
                        tracing::warn!("health report not sent: {err}");
                        if err.is_connection() {
                            *slot = None;
                        }
                    }
                }
            }
        }
        if !reachable {
            // The backoff is the wait: then the next pass tries again at once.
            let jitter = Duration::from_millis(rand_millis(backoff.as_millis() as u64 / 2));
            tracing::warn!("server unreachable, retrying in {:?}", backoff + jitter);
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
            continue;
        }
        backoff = Duration::from_secs(1);
        // Until the next pass: a change hint (then the settle time, so the file has been
        // quiet that long), a file still settling, or the periodic rescan.
        // A file already seen settling is sent when it is ready, even if more hints come.
        let next = next_settled
            .unwrap_or(upload.rescan_interval.0)
            .min(upload.rescan_interval.0);
        let ready_at = tokio::time::Instant::now() + next;
        tokio::select! {
            _ = hints.changed.notified() => {
                tokio::time::sleep_until(ready_at.min(tokio::time::Instant::now() + settle)).await
            }
            _ = tokio::time::sleep_until(ready_at) => {}
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One FTP session's share of a pass: takes files from the queue until it is empty.
async fn worker(
    agent: &Agent,
    slot: &mut Option<Remote>,
    queue: &Mutex<VecDeque<LocalFile>>,
    refused: &Refused,
    sent: &Mutex<Vec<Pending>>,
    progress: Option<&progress::Progress>,
) -> WorkerEnd {
    let record = &agent.mirror.record;
    loop {
        let Some(file) = lock(queue).pop_front() else {
            return WorkerEnd::Done;
        };
        let session = match slot {
            Some(session) => session,
            None => match Remote::connect(&agent.login()).await {
                Ok(session) => slot.insert(session),
                Err(err) => {
                    let _ = record.note("last_error", err.to_string());
                    tracing::warn!("{err}");
                    return WorkerEnd::Unreachable;
                }
            },
        };
        let Some(watch) = agent.watches.get(file.watch) else {
            continue;
        };
        match agent.mirror.sync(session, watch, &file).await {
            Ok(mirror::Outcome::Gone) => {
                tracing::debug!(local = %file.local.display(), "rotated or deleted since the scan");
            }
            Ok(outcome) => {
                if let Some(progress) = progress {
                    progress.file_done(file.pending);
                }
                if let Some(sent) = lock(sent).get_mut(file.watch) {
                    sent.count(&file);
                }
                if outcome == mirror::Outcome::Unchanged {
                    continue;
                }
                lock(refused).remove(&file.local);
                let _ = record.note("last_success", format!("{outcome:?} {}", file.remote));
            }
            Err(mirror::MirrorError::Remote(err @ remote::RemoteError::Changed { .. })) => {
                // A rotation while sending: the next pass, woken by the change, sends the
                // file as it is then. The session may still owe the dropped transfer's
                // reply, so a new one is opened.
                tracing::info!("{err}; sent again at the next pass");
                *slot = None;
            }
            Err(mirror::MirrorError::Remote(err)) if err.is_connection() => {
                tracing::warn!("connection lost: {err}");
                let _ = record.note("last_error", err.to_string());
                *slot = None;
                return WorkerEnd::Unreachable;
            }
            // A refusal (e.g. no permission) is reported and retried later, never in a
            // busy loop.
            Err(err) => {
                let mut refused = lock(refused);
                let delay = refused
                    .get(&file.local)
                    .map_or(Duration::from_secs(2), |(_, d)| {
                        (*d * 2).min(Duration::from_secs(300))
                    });
                refused.insert(file.local.clone(), (Instant::now() + delay, delay));
                tracing::error!(local = %file.local.display(), "not sent, next try in {delay:?}: {err}");
                let _ = record.note("last_error", format!("{}: {err}", file.local.display()));
            }
        }
    }
}

/// Hands memory freed by a pass back to the system. A pass over 100,000 files allocates
/// and frees many small blocks; glibc keeps them, spread over its per-thread arenas, so
/// without this an idle agent would stay at the size of its largest pass.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A pseudo-random number below `bound` (jitter needs no cryptographic quality).
fn rand_millis(bound: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    if bound == 0 { 0 } else { nanos % bound }
}

/// What is still to send in one watch: the files that differ from what the server
/// confirmed, each with the bytes it still needs (`pending`; 0 for a file only touched).
struct Backlog {
    /// The oldest of them (by modification time), as many as a pass takes.
    files: Vec<LocalFile>,
    /// All of them, counted (those left out of `files` too).
    pending: Pending,
    /// Whether some were left out of `files` by number (the next pass follows at once).
    left_out: bool,
}

/// Files with bytes to send, and those bytes, in one watch.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    files: u64,
    bytes: u64,
}

impl Pending {
    fn count(&mut self, file: &LocalFile) {
        if file.pending > 0 {
            self.files += 1;
            self.bytes += file.pending;
        }
    }
}

/// Walks every watch and compares each file with the record: the backlog per watch, with
/// at most `keep` of its files, the oldest that are `due`. Only those are held, so a pass
/// over a backlog of 100,000 files allocates for `keep` of them, not all.
fn backlog(
    agent: &Agent,
    keep: usize,
    due: impl Fn(&LocalFile) -> bool,
) -> anyhow::Result<Vec<Backlog>> {
    let mut all = Vec::new();
    for (index, watch) in agent.watches.iter().enumerate() {
        let mut files = Vec::new();
        let mut pending = Pending::default();
        let mut left_out = false;
        let mut failed = None;
        watch.walk(|mut file| {
            if agent
                .mirror
                .record
                .known_unchanged(&file.local, &file.as_confirmed())
            {
                return;
            }
            let bytes = match agent.mirror.record.get(&file.local) {
                Ok(Some(record)) if mirror::is_unchanged(&record, &file) => return,
                Ok(Some(record))
                    if record.dev == file.dev
                        && record.ino == file.ino
                        && record.confirmed <= file.size =>
                {
                    file.size - record.confirmed
                }
                Ok(Some(record)) => {
                    if (record.dev, record.ino) != (file.dev, file.ino) {
                        file.replaces = Some((record.dev, record.ino));
                    }
                    file.size
                }
                Ok(None) => file.size,
                Err(err) => {
                    failed.get_or_insert(err);
                    return;
                }
            };
            file.watch = index;
            file.pending = bytes;
            pending.count(&file);
            // Not due (refused a moment ago): waits for its retry time, and must not make
            // the next pass start at once (that would walk in a busy loop until then).
            if !due(&file) {
                return;
            }
            files.push(file);
            // Sorting every `keep` files keeps at most twice that many in memory.
            if files.len() >= keep.saturating_mul(2) {
                oldest_first(&mut files, keep);
                left_out = true;
            }
        });
        if let Some(err) = failed {
            return Err(err.into());
        }
        if files.len() > keep {
            left_out = true;
        }
        oldest_first(&mut files, keep);
        files.shrink_to_fit();
        all.push(Backlog {
            files,
            pending,
            left_out,
        });
    }
    Ok(all)
}

/// Leaves for the next pass every file that took the place of a file rotated away by
/// rename which this pass sends (`app.log` after `app.log` -> `app.log.1`): sent in
/// parallel, the new file could replace the server's copy before the rotated one is renamed
/// there, keeping the old bytes twice. True if any was left. Cannot hold a file back for
/// long: once its rotated file is through (or refused, which keeps that out of the queue),
/// it goes. Files that replace each other in a ring (two files swapped by rename) are not
/// held back, as no pass would ever free them: they fall back to keeping versions.
fn defer_replacements(queue: &mut Vec<LocalFile>) -> bool {
    // Identity of each queued file -> the identity it replaces.
    let queued: HashMap<(u64, u64), Option<(u64, u64)>> = queue
        .iter()
        .map(|file| ((file.dev, file.ino), file.replaces))
        .collect();
    // Waits if the chain of rotated files leads to one that goes in this pass.
    let waits = |file: &LocalFile| {
        let mut rotated = match file.replaces {
            Some(rotated) if queued.contains_key(&rotated) => rotated,
            _ => return false,
        };
        for _ in 0..queued.len() {
            match queued.get(&rotated) {
                Some(Some(next)) if queued.contains_key(next) => rotated = *next,
                _ => return true,
            }
        }
        false
    };
    let before = queue.len();
    let keep: Vec<bool> = queue.iter().map(|file| !waits(file)).collect();
    let mut keep = keep.into_iter();
    queue.retain(|_| keep.next().unwrap_or(true));
    queue.len() < before
}

/// Keeps the `keep` oldest files, oldest first.
fn oldest_first(files: &mut Vec<LocalFile>, keep: usize) {
    files.sort_by_key(|file| file.mtime);
    files.truncate(keep);
}

fn dry_run(config_file: &Path) -> anyhow::Result<()> {
    let agent = Agent::open(config_file)?;
    let (mut files, mut bytes) = (0, 0);
    for watch in backlog(&agent, usize::MAX, |_| true)? {
        for file in watch.files.iter().filter(|file| file.pending > 0) {
            println!(
                "{:>12}  {}  ->  {}",
                file.pending,
                file.local.display(),
                file.remote
            );
            files += 1;
            bytes += file.pending;
        }
    }
    println!("{files} files, {bytes} bytes to send");
    Ok(())
}

/// The status report: what `status --json` prints and what a running agent keeps in
/// `<state_dir>/status.json` (the record is locked while the agent runs).
fn status_report(agent: &Agent, pending: &[Pending]) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::json!({
        "agent_id": agent.config.agent_id,
        "version": env!("CARGO_PKG_VERSION"),
        "updated": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?,
        "watches": agent.watches.iter().zip(pending).map(|(w, p)| serde_json::json!({
            "dir": w.dir,
            "remote": w.remote,
            "backlog_files": p.files,
            "backlog_bytes": p.bytes,
        })).collect::<Vec<_>>(),
        "last_success": agent.mirror.record.last("last_success")?,
        "last_error": agent.mirror.record.last("last_error")?,
    }))
}

fn status_file(config: &LoadedAgentConfig) -> PathBuf {
    config.state_dir.join("status.json")
}

/// Writes the status file atomically (temporary file, rename) and returns the report.
fn write_status(agent: &Agent, pending: &[Pending]) -> anyhow::Result<serde_json::Value> {
    let report = status_report(agent, pending)?;
    let path = status_file(&agent.config);
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, serde_json::to_vec_pretty(&report)?)?;
    std::fs::rename(&temp, &path)?;
    Ok(report)
}

/// Where the agent's health report lives on the server, in a hidden folder of its home.
const HEALTH_REPORT: &str = "/.logarchive-agent/status.json";

/// The health report for the server: who, which version, where, how far behind, what went
/// wrong last. Built from the local report without folders, config or password.
fn health_report(report: &serde_json::Value) -> serde_json::Value {
    let watches = report["watches"].as_array().cloned().unwrap_or_default();
    let sum = |key: &str| watches.iter().filter_map(|w| w[key].as_u64()).sum::<u64>();
    serde_json::json!({
        "agent_id": report["agent_id"],
        "version": report["version"],
        "host": logarchive_common::config::agent::hostname(),
        "updated": report["updated"],
        "backlog_files": sum("backlog_files"),
        "backlog_bytes": sum("backlog_bytes"),
        "last_success": report["last_success"],
        "last_error": report["last_error"],
    })
}

/// Replaces the health report on the server (temporary name, then rename).
async fn send_health(
    remote: &mut Remote,
    report: &serde_json::Value,
) -> Result<(), remote::RemoteError> {
    let bytes = serde_json::to_vec_pretty(&health_report(report)).unwrap_or_default();
    let temp = mirror::temp_name(HEALTH_REPORT);
    remote.ensure_parent(HEALTH_REPORT).await?;
    remote.store_bytes(&temp, &bytes).await?;
    remote.rename(&temp, HEALTH_REPORT).await
}

fn status(config_file: &Path, json: bool) -> anyhow::Result<()> {
    // The agent keeps its report up to date while it runs (and holds the record): read
    // that. Only an agent that never ran is asked directly.
    let config = LoadedAgentConfig::load(config_file)?;
    let path = status_file(&config);
    let report = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is unreadable", path.display()))?,
        Err(_) => {
            let agent = Agent::open(config_file)?;
            let pending: Vec<Pending> = backlog(&agent, 0, |_| false)?
                .iter()
                .map(|watch| watch.pending)
                .collect();
            status_report(&agent, &pending)?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let text = |value: &serde_json::Value| value.as_str().unwrap_or("?").to_owned();
    println!(
        "agent {} (logarchive-agent {}), as of {}",
        text(&report["agent_id"]),
        text(&report["version"]),
        text(&report["updated"])
    );
    for watch in report["watches"].as_array().into_iter().flatten() {
        println!(
            "  {} -> {}: {} files, {} bytes to send",
            text(&watch["dir"]),
            text(&watch["remote"]),
            watch["backlog_files"],
            watch["backlog_bytes"]
        );
    }
    for (label, key) in [
        ("last success", "last_success"),
        ("last error  ", "last_error"),
    ] {
        let event = &report[key];
        if event.is_null() {
            println!("  {label}: never");
        } else {
            println!(
                "  {label}: {} {}",
                text(&event["at"]),
                text(&event["message"])
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, ino: u64, replaces: Option<u64>) -> LocalFile {
        LocalFile {
            local: PathBuf::from(name),
            remote: format!("/{name}"),
            dev: 1,
            ino,
            size: 1,
            mtime: 0,
            watch: 0,
            pending: 1,
            replaces: replaces.map(|ino| (1, ino)),
        }
    }

    fn names(queue: &[LocalFile]) -> Vec<&str> {
        queue.iter().filter_map(|f| f.local.to_str()).collect()
    }

    #[test]
    fn a_new_file_waits_for_the_rename_of_the_file_it_replaces() {
        // app.log.2 <- app.log.1 <- app.log <- new app.log: one generation per pass.
        let mut queue = vec![
            file("app.log", 30, Some(20)),
            file("app.log.1", 20, Some(10)),
            file("app.log.2", 10, None),
            file("other.log", 40, Some(99)),
        ];
        assert!(defer_replacements(&mut queue));
        assert_eq!(names(&queue), ["app.log.2", "other.log"]);
        let mut next = vec![file("app.log", 30, Some(20)), file("app.log.1", 20, None)];
        assert!(defer_replacements(&mut next));
        assert_eq!(names(&next), ["app.log.1"]);
    }

    #[test]
    fn files_swapped_by_rename_are_never_held_back() {
        let mut queue = vec![file("a", 1, Some(2)), file("b", 2, Some(1))];
        assert!(!defer_replacements(&mut queue));
        assert_eq!(queue.len(), 2);
    }
}
