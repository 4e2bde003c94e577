//! The feeds: data that arrives other than from agents — syslog (UDP, TCP, TLS), OTT netDL
//! data loggers and telemetry probes — written into the same archive and catalog.
//!
//! - [`syslog`]: listeners on their own ports, started by [`serve`]; [`relp`] is the
//!   protocol of its RELP listeners (acknowledged once in the archive).
//! - [`ott`] and [`telemetry`]: routers merged into the one web listener ([`router`]).
//! - [`fticks`]: F-TICKS lines found in syslog, indexed in a catalog tree.
//! - [`Appender`]: buffered appends shared by the feeds that grow files (syslog, the
//!   telemetry `.jsonl`): flushed every `flush_interval` (1 s by default) and at shutdown.
//! - [`FeedStats`]: counters per feed, per source ([`sources`]) and recent flagged items.
//! - [`admin`]: the read side on the web listener — `/admin/feeds`, `/api/feeds`, and the
//!   feeds' own listings — behind the web UI's logins ([`CurrentUser`]), like every page.
//!
//! [`CurrentUser`]: crate::web::auth::CurrentUser
//!
//! Everything goes through [`Archive`]; every file written is recorded in the catalog with
//! the feed as its uploader (`syslog`, `logger`, `telemetry`).

pub mod admin;
pub mod fticks;
pub mod ott;
pub mod relp;
pub mod sources;
pub mod syslog;
pub mod telemetry;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use logarchive_common::config::server::LoadedServerConfig;
use logarchive_common::paths::ArchivePath;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

use crate::archive::{Archive, UploadMode};
use crate::catalog::Catalog;
use crate::ftp::auth::PasswordAuthenticator;
use crate::shutdown::Shutdown;
use crate::users::Account;
use crate::web::WebState;

/// What every feed needs.
#[derive(Clone)]
pub struct FeedContext {
    pub archive: Arc<dyn Archive>,
    pub catalog: Catalog,
    pub stats: Arc<FeedStats>,
    pub appender: Arc<Appender>,
    /// Checks HTTP Basic credentials against users.toml, as FTP logins are checked.
    pub auth: Arc<PasswordAuthenticator>,
    pub fticks: fticks::FticksIndex,
}

impl FeedContext {
    /// A file a feed grows: `<dir>/<stem>.<ext>`, or on an archive several servers share
    /// `<dir>/<stem>.<server_name>.<ext>`, so that each such file has exactly one writer
    /// (two servers composing one S3 object at once would lose an append).
    pub fn grown_file(
        &self,
        dir: &str,
        stem: &str,
        ext: &str,
    ) -> Result<ArchivePath, logarchive_common::paths::PathError> {
        ArchivePath::parse(&match self.archive.writer_name() {
            Some(server) => format!("{dir}/{stem}.{server}.{ext}"),
            None => format!("{dir}/{stem}.{ext}"),
        })
    }

    pub fn new(
        archive: Arc<dyn Archive>,
        catalog: Catalog,
        auth: Arc<PasswordAuthenticator>,
    ) -> anyhow::Result<FeedContext> {
        Ok(FeedContext {
            appender: Arc::new(Appender::new(archive.clone(), catalog.clone())),
            fticks: fticks::FticksIndex::open(&catalog)?,
            archive,
            catalog,
            stats: Arc::new(FeedStats::default()),
            auth,
        })
    }
}

/// Counters of one feed. `received` counts the messages (syslog frames that passed the
/// allow-list, size and rate checks) or requests that were looked at; each of those ends
/// in one of `stored`, `unparsed` (kept, but flagged), `rejected`, `dropped`, `oversize`
/// or `errors`. Syslog traffic refused before that (allow-list, size, rate, connection
/// limit, idle senders) is counted in `rejected`, `oversize`, `dropped` and `timeouts`.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub stored: AtomicU64,
    pub unparsed: AtomicU64,
    pub rejected: AtomicU64,
    pub dropped: AtomicU64,
    pub oversize: AtomicU64,
    pub timeouts: AtomicU64,
    pub errors: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CounterSnapshot {
    pub received: u64,
    pub stored: u64,
    pub unparsed: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub oversize: u64,
    pub timeouts: u64,
    pub errors: u64,
}

impl Counters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            received: get(&self.received),
            stored: get(&self.stored),
            unparsed: get(&self.unparsed),
            rejected: get(&self.rejected),
            dropped: get(&self.dropped),
            oversize: get(&self.oversize),
            timeouts: get(&self.timeouts),
            errors: get(&self.errors),
        }
    }
}

/// Something a feed kept but that needs a human look (malformed XML, an F-TICKS line).
#[derive(Debug, Clone, Serialize)]
pub struct Flag {
    pub feed: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The stored file or the sender.
    pub what: String,
    pub reason: String,
}

const FLAGS_KEPT: usize = 100;

/// The counters of all feeds, shared with the web UI's feeds page.
#[derive(Debug, Default)]
pub struct FeedStats {
    pub syslog: Counters,
    pub fticks: Counters,
    pub logger: Counters,
    pub telemetry: Counters,
    /// Per syslog host, logger station and telemetry machine.
    pub sources: sources::Sources,
    flags: Mutex<VecDeque<Flag>>,
}

#[derive(Debug, Serialize)]
pub struct StatsSnapshot {
    pub syslog: CounterSnapshot,
    pub fticks: CounterSnapshot,
    pub logger: CounterSnapshot,
    pub telemetry: CounterSnapshot,
    /// Newest first.
    pub flagged: Vec<Flag>,
}

impl FeedStats {
    pub fn flag(&self, feed: &'static str, what: impl Into<String>, reason: impl Into<String>) {
        let flag = Flag {
            feed,
            at: OffsetDateTime::now_utc(),
            what: what.into(),
            reason: reason.into(),
        };
        // F-TICKS lines can come by the thousand: counted and kept, logged only in debug.
        if feed == "fticks" {
            tracing::debug!(feed, what = %flag.what, "flagged: {}", flag.reason);
        } else {
            tracing::warn!(feed, what = %flag.what, "flagged: {}", flag.reason);
        }
        let mut flags = self.flags.lock().unwrap_or_else(|p| p.into_inner());
        if flags.len() == FLAGS_KEPT {
            flags.pop_back();
        }
        flags.push_front(flag);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            syslog: self.syslog.snapshot(),
            fticks: self.fticks.snapshot(),
            logger: self.logger.snapshot(),
            telemetry: self.telemetry.snapshot(),
            flagged: self
                .flags
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }
}

/// Buffered bytes waiting for their file.
#[derive(Default)]
struct Pending {
    files: HashMap<ArchivePath, (&'static str, Vec<u8>)>,
    bytes: usize,
    /// Senders waiting to hear that what they appended is in the archive (RELP), by file.
    /// Empty for UDP, TCP and telemetry, which do not ask.
    waiters: Vec<(ArchivePath, Durable)>,
}

/// Resolved with `true` once the bytes appended with it are in the archive, `false` when
/// they were given up (the file stayed unwritable); dropped unresolved if the server stops
/// first.
pub type Durable = tokio::sync::oneshot::Sender<bool>;

/// What the appender knows of a file it grows: its size and the running SHA-256, so the
/// catalog's hash stays current without re-reading the file at every flush.
struct Grown {
    size: u64,
    hasher: Sha256,
    last: std::time::Instant,
}

/// What the appender remembers between flushes.
#[derive(Default)]
struct Known {
    grown: HashMap<ArchivePath, Grown>,
    /// Folders known to exist (forgotten when a write below them fails).
    dirs: HashSet<ArchivePath>,
    /// Files whose last appends failed.
    failures: HashMap<ArchivePath, Failing>,
}

/// A file not appended to for this long is forgotten (its hash is recomputed if it grows
/// again), so memory does not grow with every host and day ever seen.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// After this many failed tries in a row (one a second at most: about a minute), a file's
/// buffered bytes are dropped (logged), so one unwritable file cannot fill the backlog for
/// every sender...
const MAX_FAILURES: u32 = 60;

/// A failing file is not tried again sooner than this: flushes come more often than once a
/// second while senders wait for their acknowledgement (RELP), and a full disk must not
/// use up a file's tries any sooner.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// A file whose appends fail: the last try, and how many tries in a row.
struct Failing {
    last: std::time::Instant,
    count: u32,
}

/// Flush early when this much is buffered.
const FLUSH_AT: usize = 4 << 20;
/// Refuse new data (counted as dropped by the caller) when this much is waiting, e.g.
/// because the archive cannot be written.
const BACKLOG_LIMIT: usize = 256 << 20;

/// Buffered appends to archive files.
///
/// Guarantee: data handed to [`Appender::append`] is in the archive (fsynced when
/// `durable_writes` is on) within one flush interval (default 1 s) plus the time of the
/// write, and on a clean shutdown before the server exits; a crash loses at most what
/// arrived in the last interval. Appends to one file keep their order.
pub struct Appender {
    archive: Arc<dyn Archive>,
    catalog: Catalog,
    pending: Mutex<Pending>,
    wake: Notify,
    /// One flush at a time; holds what is known of the files grown.
    known: tokio::sync::Mutex<Known>,
    /// [`RETRY_PAUSE`]; zero in unit tests.
    retry_pause: Duration,
}

impl Appender {
    pub fn new(archive: Arc<dyn Archive>, catalog: Catalog) -> Appender {
        Appender {
            archive,
            catalog,
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            known: tokio::sync::Mutex::new(Known::default()),
            retry_pause: RETRY_PAUSE,
        }
    }

    /// Queues `bytes` for the end of `path`; false (nothing queued) when the backlog is full.
    pub fn append(&self, path: &ArchivePath, uploader: &'static str, bytes: &[u8]) -> bool {
        self.queue(path, uploader, bytes, None)
    }

    /// As [`Appender::append`], and the answer resolves once `bytes` are in the archive
    /// (`None`: the backlog is full, nothing queued). The next flush starts at once, so a
    /// sender waiting for its acknowledgement waits for one write, not a flush interval;
    /// whatever arrives meanwhile shares the flush after it.
    pub fn append_durable(
        &self,
        path: &ArchivePath,
        uploader: &'static str,
        bytes: &[u8],
    ) -> Option<tokio::sync::oneshot::Receiver<bool>> {
        let (durable, answer) = tokio::sync::oneshot::channel();
        self.queue(path, uploader, bytes, Some(durable))
            .then_some(answer)
    }

    fn queue(
        &self,
        path: &ArchivePath,
        uploader: &'static str,
        bytes: &[u8],
        durable: Option<Durable>,
    ) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.bytes + bytes.len() > BACKLOG_LIMIT {
            return false;
        }
        let wake_now = durable.is_some();
        if let Some(durable) = durable {
            pending.waiters.push((path.clone(), durable));
        }
        pending.bytes += bytes.len();
        let full = pending.bytes >= FLUSH_AT;
        // No key clone for the common case of a file that already has a buffer.
        match pending.files.get_mut(path) {
            Some(slot) => slot.1.extend_from_slice(bytes),
            None => {
                pending
                    .files
                    .insert(path.clone(), (uploader, bytes.to_vec()));
            }
        }
        drop(pending);
        if full || wake_now {
            self.wake.notify_one();
        }
        true
    }

    /// Writes everything buffered so far.
    pub async fn flush(&self) {
        let mut known = self.known.lock().await;
        let (files, waiters) = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.bytes = 0;
            (
                std::mem::take(&mut pending.files),
                std::mem::take(&mut pending.waiters),
            )
        };
        let known = &mut *known;
        // Files whose bytes are kept for the next flush, and those given up.
        let mut retried = HashSet::new();
        let mut dropped = HashSet::new();
        for (path, (uploader, bytes)) in files {
            // A failing file is tried once per `retry_pause`, however often flushes come.
            if known
                .failures
                .get(&path)
                .is_some_and(|failing| failing.last.elapsed() < self.retry_pause)
            {
                self.keep(path.clone(), uploader, bytes);
                retried.insert(path);
                continue;
            }
            let Err(err) = self.write(&path, uploader, &bytes, known).await else {
                known.failures.remove(&path);
                continue;
            };
            known.grown.remove(&path);
            if let Some(parent) = path.parent() {
                known.dirs.remove(&parent);
            }
            let failing = known
                .failures
                .entry(path.clone())
                .or_insert_with(|| Failing {
                    last: std::time::Instant::now(),
                    count: 0,
                });
            failing.count += 1;
            failing.last = std::time::Instant::now();
            if failing.count >= MAX_FAILURES {
                tracing::error!(%path, "dropping {} bytes after {MAX_FAILURES} failed appends: {err:#}", bytes.len());
                known.failures.remove(&path);
                dropped.insert(path);
                continue;
            }
            tracing::error!(%path, "cannot append {} bytes, will retry: {err:#}", bytes.len());
            retried.insert(path.clone());
            self.keep(path, uploader, bytes);
        }
        if !waiters.is_empty() {
            self.answer(waiters, &retried, &dropped);
        }
        known
            .grown
            .retain(|_, grown| grown.last.elapsed() < FORGET_AFTER);
        if known.dirs.len() > 10_000 {
            known.dirs.clear();
        }
    }

    /// Keeps bytes that could not be written for the next flush, ahead of what arrived
    /// meanwhile.
    fn keep(&self, path: ArchivePath, uploader: &'static str, bytes: Vec<u8>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.bytes += bytes.len();
        let slot = pending
            .files
            .entry(path)
            .or_insert_with(|| (uploader, Vec::new()));
        let newer = std::mem::replace(&mut slot.1, bytes);
        slot.1.extend_from_slice(&newer);
    }

    /// Tells the waiters of this flush whether their bytes are in the archive; those of a
    /// file kept for a retry wait for the next flush, ahead of newer ones.
    fn answer(
        &self,
        waiters: Vec<(ArchivePath, Durable)>,
        retried: &HashSet<ArchivePath>,
        dropped: &HashSet<ArchivePath>,
    ) {
        let mut later = Vec::new();
        for (path, durable) in waiters {
            if retried.contains(&path) {
                later.push((path, durable));
            } else {
                // A closed receiver (the connection ended) needs no answer.
                let _ = durable.send(!dropped.contains(&path));
            }
        }
        if !later.is_empty() {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            later.append(&mut pending.waiters);
            pending.waiters = later;
        }
    }

    async fn write(
        &self,
        path: &ArchivePath,
        uploader: &'static str,
        bytes: &[u8],
        known: &mut Known,
    ) -> anyhow::Result<()> {
        if let Some(parent) = path.parent()
            && !known.dirs.contains(&parent)
        {
            self.archive.create_dir_all(&parent).await?;
            known.dirs.insert(parent);
        }
        let mut upload = self.archive.begin_upload(path, UploadMode::Append).await?;
        if let Err(err) = upload.write(bytes.to_vec()).await {
            // Cut back to where it was, so the retry does not duplicate a part.
            upload.abort().await;
            return Err(err.into());
        }
        let committed = upload.commit().await?;
        let size = committed.entry.size;
        let state = match known.grown.remove(path) {
            Some(mut state) if state.size + bytes.len() as u64 == size => {
                state.hasher.update(bytes);
                state.size = size;
                state.last = std::time::Instant::now();
                state
            }
            // First append of this run, or the file changed behind our back: hash it whole.
            _ => Grown {
                size,
                hasher: self.hash_whole(path).await?,
                last: std::time::Instant::now(),
            },
        };
        let sha256 = hex::encode(state.hasher.clone().finalize());
        known.grown.insert(path.clone(), state);
        if let Err(err) = self
            .catalog
            .record_append(&committed.entry, sha256, uploader)
            .await
        {
            // The data is stored; `reindex` catches the catalog up.
            tracing::error!(%path, "appended but not cataloged: {err}");
        }
        Ok(())
    }

    async fn hash_whole(&self, path: &ArchivePath) -> anyhow::Result<Sha256> {
        let mut reader = self.archive.open(path, 0).await?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buffer).await?;
            if n == 0 {
                return Ok(hasher);
            }
            hasher.update(&buffer[..n]);
        }
    }

    /// Flushes every `interval` (or sooner when much is buffered) until `shutdown`, then
    /// once more.
    pub async fn run(self: Arc<Self>, interval: Duration, shutdown: Shutdown) {
        let stop = shutdown.wait();
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
                _ = &mut stop => break,
            }
            self.flush().await;
        }
        self.flush().await;
    }
}

/// How often the appender writes: `[syslog] flush_interval`, else 1 s.
pub fn flush_interval(config: &logarchive_common::config::server::ServerConfig) -> Duration {
    config
        .syslog
        .as_ref()
        .map_or(Duration::from_secs(1), |s| s.flush_interval.0)
        .max(Duration::from_millis(10))
}

/// Runs the feeds that have their own listeners (syslog) until `shutdown`, then waits for
/// their connections to end. The appender runs beside them (see `server.rs`) and is
/// stopped after them, so nothing they queued is left unwritten.
pub async fn serve(
    config: &LoadedServerConfig,
    ctx: FeedContext,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    match &config.config.syslog {
        Some(syslog_config) => syslog::serve(config, syslog_config, &ctx, shutdown).await,
        None => {
            shutdown.wait().await;
            Ok(())
        }
    }
}

/// The HTTP routes of the feeds that are switched on, for the web listener. What people
/// read (pages, `/api/...`) takes the web UI's logins from `web`; what the feeds' clients
/// post keeps the authentication those clients use (none for telemetry probes, HTTP Basic
/// for data loggers).
pub fn router(
    config: &LoadedServerConfig,
    ctx: &FeedContext,
    web: &WebState,
) -> anyhow::Result<Router> {
    let mut app = admin::router(ctx, web).merge(fticks::router(ctx, web)?);
    if config.config.logger.enabled {
        app = app.merge(ott::router(&config.config.logger, ctx));
    }
    if config.config.telemetry.enabled {
        app = app.merge(telemetry::router(&config.config.telemetry, ctx, web)?);
    }
    Ok(app)
}

/// The account of a request's HTTP Basic credentials, or the 401 to answer (the data
/// loggers' posts, which the reference clients make with Basic and nothing else).
pub async fn basic_auth(ctx: &FeedContext, headers: &HeaderMap) -> Result<Arc<Account>, Response> {
    use base64::Engine;
    let challenge = || {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"logarchive\"")],
            "HTTP Basic authentication with a logarchive user is required\n",
        )
            .into_response()
    };
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
        })
        .and_then(|decoded| String::from_utf8(decoded).ok());
    let Some(credentials) = credentials else {
        return Err(challenge());
    };
    let Some((user, password)) = credentials.split_once(':') else {
        return Err(challenge());
    };
    match ctx.auth.verify(user, password).await {
        Some(account) => Ok(account),
        None => {
            tracing::warn!(user, "feed request refused: wrong user or password");
            Err(challenge())
        }
    }
}

/// The address a request came from (the web listener records it for every connection).
pub fn peer_ip(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

/// The banner lines of the feeds that are switched on.
pub fn print_banner(config: &logarchive_common::config::server::ServerConfig) {
    if let Some(syslog) = &config.syslog {
        let listeners: Vec<String> = syslog
            .listeners()
            .into_iter()
            .map(|(kind, addr)| format!("{kind} {addr}"))
            .collect();
        println!("  syslog:    {} -> /syslog", listeners.join(", "));
    }
    if config.logger.enabled {
        println!("  loggers:   POST /ott on the web listener -> /logger");
    }
    if config.telemetry.enabled {
        println!(
            "  telemetry: POST /v2/collector, /v3/collector on the web listener -> /telemetry"
        );
    }
}

/// `YYYY/MM/DD` folder names of a UTC time.
pub fn date_parts(at: OffsetDateTime) -> [String; 3] {
    [
        format!("{:04}", at.year()),
        format!("{:02}", u8::from(at.month())),
        format!("{:02}", at.day()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};

    fn open(dir: &std::path::Path) -> (Arc<dyn Archive>, Catalog) {
        let archive: Arc<dyn Archive> =
            Arc::new(crate::archive::fs::FsArchive::open(&dir.join("a"), false).unwrap());
        let catalog = Catalog::open(&dir.join("c"), archive.clone()).unwrap();
        (archive, catalog)
    }

    async fn read(archive: &Arc<dyn Archive>, path: &ArchivePath) -> Vec<u8> {
        let mut bytes = Vec::new();
        archive
            .open(path, 0)
            .await
            .unwrap()
            .read_to_end(&mut bytes)
            .await
            .unwrap();
        bytes
    }

    /// A path every append to fails: a file stands where its folder should be.
    async fn unwritable(archive: &Arc<dyn Archive>) -> ArchivePath {
        archive
            .create_dir_all(&ArchivePath::parse("/syslog").unwrap())
            .await
            .unwrap();
        let blocker = ArchivePath::parse("/syslog/blocked").unwrap();
        archive.store_new(&blocker, b"x".to_vec()).await.unwrap();
        ArchivePath::parse("/syslog/blocked/2026.log").unwrap()
    }

    #[tokio::test]
    async fn appends_keep_order_and_the_catalog_hash_follows() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, catalog) = open(dir.path());
        let appender = Appender::new(archive.clone(), catalog.clone());
        let path = ArchivePath::parse("/syslog/h/2026/11/22.log").unwrap();
        assert!(appender.append(&path, "syslog", b"one\n"));
        assert!(appender.append(&path, "syslog", b"two\n"));
        appender.flush().await;
        assert!(appender.append(&path, "syslog", b"three\n"));
        appender.flush().await;
        let bytes = read(&archive, &path).await;
        assert_eq!(bytes, b"one\ntwo\nthree\n");
        let entry = &catalog.under(&path).unwrap()[0];
        assert_eq!(entry.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(entry.uploader.as_deref(), Some("syslog"));

        // Someone else grew the file: the hash is computed afresh, not continued.
        let mut other = archive
            .begin_upload(&path, UploadMode::Append)
            .await
            .unwrap();
        other.write(b"by hand\n".to_vec()).await.unwrap();
        other.commit().await.unwrap();
        assert!(appender.append(&path, "syslog", b"four\n"));
        appender.flush().await;
        let bytes = read(&archive, &path).await;
        assert_eq!(
            catalog.under(&path).unwrap()[0].sha256,
            hex::encode(Sha256::digest(&bytes))
        );
    }

    #[tokio::test]
    async fn an_unwritable_file_does_not_hold_up_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, catalog) = open(dir.path());
        let mut appender = Appender::new(archive.clone(), catalog);
        appender.retry_pause = Duration::ZERO;
        let bad = unwritable(&archive).await;
        let good = ArchivePath::parse("/syslog/ok/2026.log").unwrap();
        assert!(appender.append(&bad, "syslog", b"lost\n"));
        assert!(appender.append(&good, "syslog", b"kept\n"));
        appender.flush().await;
        assert_eq!(read(&archive, &good).await, b"kept\n");
        // Retried, then given up after MAX_FAILURES flushes: the backlog empties.
        for _ in 1..MAX_FAILURES {
            appender.flush().await;
        }
        let pending = appender.pending.lock().unwrap();
        assert!(pending.files.is_empty() && pending.bytes == 0);
    }

    #[tokio::test]
    async fn a_durable_append_is_answered_only_once_its_bytes_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, catalog) = open(dir.path());
        let mut appender = Appender::new(archive.clone(), catalog);
        appender.retry_pause = Duration::ZERO;
        let good = ArchivePath::parse("/syslog/ok/2026.log").unwrap();
        let mut answer = appender.append_durable(&good, "syslog", b"one\n").unwrap();
        assert!(answer.try_recv().is_err(), "answered before any write");
        appender.flush().await;
        assert_eq!(answer.try_recv(), Ok(true));
        assert_eq!(read(&archive, &good).await, b"one\n");

        // Unwritable (a file where its folder should be): no answer while retried, then
        // `false` when given up; never `true`.
        let bad = unwritable(&archive).await;
        let mut refused = appender.append_durable(&bad, "syslog", b"lost\n").unwrap();
        for _ in 1..MAX_FAILURES {
            appender.flush().await;
            assert!(refused.try_recv().is_err(), "answered while still retried");
        }
        appender.flush().await;
        assert_eq!(refused.try_recv(), Ok(false));
    }

    /// Flushes that come fast (a RELP sender waiting for each answer wakes the appender)
    /// do not use up a failing file's tries: a full disk costs no data sooner than a
    /// minute of failures.
    #[tokio::test]
    async fn fast_flushes_do_not_give_up_a_failing_file_early() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, catalog) = open(dir.path());
        let appender = Appender::new(archive.clone(), catalog);
        let bad = unwritable(&archive).await;
        let mut answer = appender.append_durable(&bad, "syslog", b"kept\n").unwrap();
        for _ in 0..(MAX_FAILURES * 2) {
            appender.flush().await;
        }
        assert!(answer.try_recv().is_err(), "given up within a second");
        assert_eq!(appender.pending.lock().unwrap().bytes, 5);
    }

    /// The telemetry collector answers `POST /`; the web UI will want `GET /`: merging the
    /// two routers must work (axum merges methods of one path).
    #[test]
    fn post_root_merges_with_a_get_root() {
        let ui: axum::Router = axum::Router::new().route("/", get(|| async { "ui" }));
        let feeds: axum::Router = axum::Router::new().route("/", post(|| async { "feed" }));
        let _app = ui.merge(feeds);
    }
}
