//! Alerts: incidents derived from the server's health, and notifications when one opens and
//! when it clears.
//!
//! One evaluator task ([`run`]) looks every `[alerts] interval` at the same health the admin
//! pages show — agents ([`crate::web::agents::agent_health`]), feed sources
//! ([`crate::feeds::sources::Source::state`] with `[web] feed_silent_after`) — and at the
//! archive's filesystem ([`disk`]) and the failed logins of FTP and the web UI
//! ([`logins`]). Each condition found is an incident, keyed by kind and subject; a key that
//! appears opens one (one notification, `open`), a key that disappears clears it (one
//! notification, `cleared`). Notifications go to the webhook ([`webhook`]) and the mail
//! ([`email`]), each through its own bounded queue and worker with retries, so a slow
//! receiver never holds up the evaluation.
//!
//! Open incidents are kept in `<data_dir>/alerts.json` (written atomically when the set
//! changes), so a restart neither sends them again nor forgets to clear them. Feed sources
//! are counted in memory only: an open feed incident whose source the server has not heard
//! from since a restart stays open until the source sends again. The failed-login count
//! starts from zero at a restart, so an open spike clears then. Agents cannot report while
//! the server is down, so for `[web] agent_silent_after` after a start no agent is newly
//! called silent. The admin page
//! ([`admin`], `/admin/alerts`) lists the open incidents and the recently cleared ones.

pub mod admin;
pub mod disk;
pub mod email;
pub mod logins;
pub mod webhook;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use logarchive_common::config::server::AlertsConfig;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::shutdown::Shutdown;
use crate::web::WebState;

/// Open incidents at most; past this, new ones are not opened (logged), so a flood of
/// spoofed feed senders going quiet cannot flood the receivers.
pub const MAX_OPEN: usize = 1000;
/// Cleared incidents kept for the admin page.
const RECENTLY_CLEARED: usize = 50;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An agent's report is older than `[web] agent_silent_after`.
    AgentSilent,
    /// An agent's last error is newer than its last success.
    AgentErroring,
    /// A feed source sent nothing for longer than `[web] feed_silent_after`.
    FeedSilent,
    /// The archive's filesystem is fuller than `[alerts] disk_threshold_percent`.
    DiskFull,
    /// More than `[alerts] failed_logins_threshold` failed logins within the window.
    FailedLogins,
    /// A catalog step failed (e.g. a full disk): search and listings miss recent changes
    /// until the catalog catches up with the archive (`catalog::recovery`).
    CatalogBehind,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::AgentSilent,
        Kind::AgentErroring,
        Kind::FeedSilent,
        Kind::DiskFull,
        Kind::FailedLogins,
        Kind::CatalogBehind,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AgentSilent => "agent_silent",
            Kind::AgentErroring => "agent_erroring",
            Kind::FeedSilent => "feed_silent",
            Kind::DiskFull => "disk_full",
            Kind::FailedLogins => "failed_logins",
            Kind::CatalogBehind => "catalog_behind",
        }
    }
}

/// A condition found by one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: Kind,
    /// What it is about: an agent id, `feed/source`, the data dir, `ftp+web`.
    pub subject: String,
    /// For people: what was seen.
    pub detail: String,
}

/// One incident: a condition from when it was first seen until it was no longer seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Random, unique; the open and the cleared notification carry the same.
    pub id: String,
    pub kind: Kind,
    pub subject: String,
    pub detail: String,
    #[serde(with = "time::serde::rfc3339")]
    pub opened_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub cleared_at: Option<OffsetDateTime>,
}

/// What a receiver gets: the webhook's JSON body, and what the mail says.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub incident: String,
    pub kind: Kind,
    pub subject: String,
    /// `open` or `cleared`.
    pub state: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub opened_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub cleared_at: Option<OffsetDateTime>,
    pub detail: String,
    /// `[alerts] server_name`, else the host name.
    pub server: String,
}

impl Notification {
    fn of(incident: &Incident, server: &str) -> Notification {
        Notification {
            incident: incident.id.clone(),
            kind: incident.kind,
            subject: incident.subject.clone(),
            state: if incident.cleared_at.is_some() {
                "cleared"
            } else {
                "open"
            },
            opened_at: incident.opened_at,
            cleared_at: incident.cleared_at,
            detail: incident.detail.clone(),
            server: server.to_owned(),
        }
    }

    /// One line for a mail subject or a log.
    pub fn headline(&self) -> String {
        format!(
            "[{}] {} {}: {}",
            self.server,
            self.state.to_uppercase(),
            self.kind.as_str(),
            self.subject
        )
    }
}

/// Deliveries of one channel, for `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryCounts {
    pub sent: AtomicU64,
    /// Given up after the last retry, or refused by the receiver (4xx).
    pub failed: AtomicU64,
    /// Not queued: the queue was full.
    pub dropped: AtomicU64,
}

impl DeliveryCounts {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    open: Vec<Incident>,
}

#[derive(Debug, Default)]
struct Book {
    open: BTreeMap<(Kind, String), Incident>,
    cleared: VecDeque<Incident>,
}

/// The incidents: open ones (persisted) and the recently cleared; shared by the evaluator,
/// the admin pages and `/metrics`.
#[derive(Debug, Default)]
pub struct Alerts {
    book: Mutex<Book>,
    /// `<data_dir>/alerts.json`; `None` keeps them in memory only.
    file: Option<PathBuf>,
    pub webhook: DeliveryCounts,
    pub email: DeliveryCounts,
    /// Conditions not opened because [`MAX_OPEN`] were open.
    pub suppressed: AtomicU64,
}

impl Alerts {
    /// The incidents saved in `file` by an earlier run (none if it does not exist; an
    /// unreadable file is logged and set aside, never fatal).
    pub fn load(file: PathBuf) -> Alerts {
        let mut book = Book::default();
        match std::fs::read(&file) {
            Ok(bytes) => match serde_json::from_slice::<Saved>(&bytes) {
                Ok(saved) => {
                    for incident in saved.open.into_iter().take(MAX_OPEN) {
                        book.open
                            .insert((incident.kind, incident.subject.clone()), incident);
                    }
                }
                Err(err) => {
                    let aside = file.with_extension("json.bad");
                    tracing::error!(
                        "alerts: {} is not an incident list ({err}); moved to {} and starting with none open",
                        file.display(),
                        aside.display()
                    );
                    let _ = std::fs::rename(&file, &aside);
                }
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => tracing::error!("alerts: cannot read {}: {err}", file.display()),
        }
        Alerts {
            book: Mutex::new(book),
            file: Some(file),
            ..Alerts::default()
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open incidents, oldest first.
    pub fn open(&self) -> Vec<Incident> {
        let mut open: Vec<Incident> = self.book().open.values().cloned().collect();
        open.sort_by_key(|i| i.opened_at);
        open
    }

    /// Cleared incidents, newest first.
    pub fn recently_cleared(&self) -> Vec<Incident> {
        self.book().cleared.iter().rev().cloned().collect()
    }

    pub fn open_count(&self) -> usize {
        self.book().open.len()
    }

    /// Open incidents per kind (every kind, zeros included).
    pub fn open_by_kind(&self) -> Vec<(Kind, usize)> {
        let book = self.book();
        Kind::ALL
            .iter()
            .map(|kind| (*kind, book.open.keys().filter(|(k, _)| k == kind).count()))
            .collect()
    }

    /// Applies one evaluation: opens an incident for each new condition, clears each open
    /// one that is no longer found, and returns what changed (to be notified).
    pub fn update(&self, conditions: Vec<Condition>, now: OffsetDateTime) -> Vec<Incident> {
        let mut changed = Vec::new();
        let mut book = self.book();
        let found: BTreeSet<(Kind, String)> = conditions
            .iter()
            .map(|c| (c.kind, c.subject.clone()))
            .collect();
        let gone: Vec<(Kind, String)> = book
            .open
            .keys()
            .filter(|key| !found.contains(*key))
            .cloned()
            .collect();
        for key in gone {
            if let Some(mut incident) = book.open.remove(&key) {
                incident.cleared_at = Some(now);
                if book.cleared.len() >= RECENTLY_CLEARED {
                    book.cleared.pop_front();
                }
                book.cleared.push_back(incident.clone());
                changed.push(incident);
            }
        }
        for condition in conditions {
            let key = (condition.kind, condition.subject.clone());
            if let Some(open) = book.open.get_mut(&key) {
                // Still open: the page shows what is seen now; receivers heard once.
                open.detail = condition.detail;
                continue;
            }
            if book.open.len() >= MAX_OPEN {
                if self.suppressed.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        "alerts: {MAX_OPEN} incidents are open; further ones are not opened"
                    );
                }
                continue;
            }
            let incident = Incident {
                id: hex::encode(rand::random::<[u8; 8]>()),
                kind: condition.kind,
                subject: condition.subject,
                detail: condition.detail,
                opened_at: now,
                cleared_at: None,
            };
            book.open.insert(key, incident.clone());
            changed.push(incident);
        }
        let saved = (!changed.is_empty()).then(|| Saved {
            open: book.open.values().cloned().collect(),
        });
        drop(book);
        if let (Some(saved), Some(file)) = (saved, &self.file) {
            match serde_json::to_vec_pretty(&saved) {
                Ok(bytes) => {
                    if let Err(err) = crate::users::edit::write_atomically(file, &bytes) {
                        tracing::error!("alerts: cannot save the open incidents: {err}");
                    }
                }
                Err(err) => tracing::error!("alerts: cannot encode the open incidents: {err}"),
            }
        }
        changed
    }

    /// Open incidents of `kind`, by subject.
    fn open_of(&self, kind: Kind) -> Vec<Incident> {
        self.book()
            .open
            .values()
            .filter(|i| i.kind == kind)
            .cloned()
            .collect()
    }
}

/// Where notifications go: the configured channels' queues.
pub struct Notifier {
    webhook: Option<Queue>,
    email: Option<Queue>,
    server: String,
}

impl Notifier {
    fn notify(&self, alerts: &Alerts, incident: &Incident) {
        let notification = Notification::of(incident, &self.server);
        tracing::info!(
            incident = %notification.incident,
            detail = %notification.detail,
            "alert: {}",
            notification.headline()
        );
        if let Some(queue) = &self.webhook {
            queue.push(notification.clone(), &alerts.webhook);
        }
        if let Some(queue) = &self.email {
            queue.push(notification, &alerts.email);
        }
    }
}

/// What the evaluator looks at.
pub struct Evaluator {
    pub web: WebState,
    pub config: AlertsConfig,
    pub failed_logins: std::sync::Arc<logins::FailedLogins>,
    /// The archive's root: its filesystem is the one checked.
    pub archive_root: PathBuf,
    /// When the server started: agents could not report while it was down, so no agent
    /// is newly called silent before it has been up for `[web] agent_silent_after`.
    pub started: std::time::Instant,
}

impl Evaluator {
    /// Every condition that holds now.
    pub async fn conditions(&self) -> Vec<Condition> {
        let mut found = Vec::new();
        let grace = self.started.elapsed() < self.web.config.agent_silent_after.0;
        let already_silent: BTreeSet<String> = self
            .web
            .alerts
            .open_of(Kind::AgentSilent)
            .into_iter()
            .map(|i| i.subject)
            .collect();
        for agent in crate::web::agents::agent_health(&self.web).await {
            let kind = match agent.state {
                "silent" if grace && !already_silent.contains(&agent.id) => continue,
                "silent" => Kind::AgentSilent,
                "erroring" => Kind::AgentErroring,
                _ => continue,
            };
            let detail = match kind {
                Kind::AgentSilent => format!(
                    "agent {} (user {}, host {}) has not reported since {} (silent after {})",
                    agent.id,
                    agent.user,
                    agent.host,
                    agent
                        .updated
                        .map_or("ever".to_owned(), crate::web::format::rfc3339),
                    humantime::format_duration(self.web.config.agent_silent_after.0)
                ),
                _ => format!(
                    "agent {} (user {}, host {}): {}",
                    agent.id,
                    agent.user,
                    agent.host,
                    agent.last_error.as_deref().unwrap_or("error")
                ),
            };
            found.push(Condition {
                kind,
                subject: agent.id,
                detail,
            });
        }
        found.extend(self.feed_conditions());
        let root = self.archive_root.clone();
        let threshold = *self.config.disk_threshold_percent.get_ref();
        match tokio::task::spawn_blocking(move || disk::usage(&root)).await {
            Ok(Ok(usage)) if usage.used_percent() >= f64::from(threshold) => {
                found.push(Condition {
                    kind: Kind::DiskFull,
                    subject: self.archive_root.display().to_string(),
                    detail: format!(
                        "the archive's filesystem is {:.1} % full (threshold {threshold} %), {} free",
                        usage.used_percent(),
                        crate::web::format::size(usage.available)
                    ),
                });
            }
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(
                "alerts: cannot read the usage of {}: {err}",
                self.archive_root.display()
            ),
            Err(join) => tracing::warn!("alerts: disk check failed: {join}"),
        }
        let recent = self.failed_logins.recent();
        if recent.count > self.config.failed_logins_threshold as usize {
            let top = recent.top_address.map_or(String::new(), |(address, n)| {
                format!("; most from {address} ({n})")
            });
            found.push(Condition {
                kind: Kind::FailedLogins,
                subject: "ftp+web".to_owned(),
                detail: format!(
                    "{} failed logins in the last {} (threshold {}){top}",
                    recent.count,
                    humantime::format_duration(self.config.failed_logins_window.0),
                    self.config.failed_logins_threshold
                ),
            });
        }
        if let Err(detail) = self.web.catalog.health() {
            found.push(Condition {
                kind: Kind::CatalogBehind,
                subject: "catalog".to_owned(),
                detail,
            });
        }
        found
    }

    /// Feed sources that stored something and then went silent. A source only ever
    /// refused (a stranger, a spoofed address) is not one anybody waits for.
    fn feed_conditions(&self) -> Vec<Condition> {
        let silent_after = self.web.config.feed_silent_after.0;
        let now = OffsetDateTime::now_utc();
        let sources = self.web.feed_stats.sources.snapshot();
        let mut known = BTreeSet::new();
        let mut found = Vec::new();
        for source in &sources {
            let subject = format!("{}/{}", source.feed, source.name);
            known.insert(subject.clone());
            if source.last_ok.is_none() || source.state(now, silent_after) != "silent" {
                continue;
            }
            found.push(Condition {
                kind: Kind::FeedSilent,
                subject,
                detail: format!(
                    "{} source {} has sent nothing since {} (silent after {})",
                    source.feed,
                    source.name,
                    crate::web::format::rfc3339(source.last_seen),
                    humantime::format_duration(silent_after)
                ),
            });
        }
        // Sources are counted in memory: one not heard from since a restart (or forgotten
        // among too many) is still silent, so its open incident stays open.
        for incident in self.web.alerts.open_of(Kind::FeedSilent) {
            if !known.contains(&incident.subject) {
                found.push(Condition {
                    kind: Kind::FeedSilent,
                    subject: incident.subject,
                    detail: incident.detail,
                });
            }
        }
        found
    }
}

/// The name notifications carry: `[alerts] server_name`, else the host name.
fn server_name(config: &AlertsConfig) -> String {
    config.server_name.clone().unwrap_or_else(|| {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    })
}

/// Starts the channels configured in `[alerts]` (reading their secret files) and returns
/// the evaluator's task: every `interval` until `shutdown`, then the queues get a few
/// seconds to drain.
pub fn start(
    evaluator: Evaluator,
    resolve: impl Fn(&std::path::Path) -> PathBuf,
    shutdown: Shutdown,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let config = &evaluator.config;
    let mut workers = Vec::new();
    let webhook = match &config.webhook {
        Some(webhook) => {
            let (queue, worker) = webhook::start(webhook, &resolve, evaluator.alerts())?;
            workers.push(worker);
            Some(queue)
        }
        None => None,
    };
    let email = match &config.email {
        Some(email) => {
            let (queue, worker) = email::start(email, &resolve, evaluator.alerts())?;
            workers.push(worker);
            Some(queue)
        }
        None => None,
    };
    let notifier = Notifier {
        webhook,
        email,
        server: server_name(config),
    };
    Ok(tokio::spawn(run(evaluator, notifier, workers, shutdown)))
}

impl Evaluator {
    fn alerts(&self) -> std::sync::Arc<Alerts> {
        self.web.alerts.clone()
    }
}

/// How long the queues may take to send what is left when the server stops.
const DRAIN: Duration = Duration::from_secs(5);

async fn run(
    evaluator: Evaluator,
    notifier: Notifier,
    workers: Vec<tokio::task::JoinHandle<()>>,
    shutdown: Shutdown,
) {
    let alerts = evaluator.alerts();
    let mut tick = tokio::time::interval(evaluator.config.interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        let conditions = evaluator.conditions().await;
        for incident in alerts.update(conditions, OffsetDateTime::now_utc()) {
            notifier.notify(&alerts, &incident);
        }
    }
    // Closing the queues lets each worker send what is queued, then end.
    drop(notifier);
    let drained = tokio::time::timeout(DRAIN, futures_util::future::join_all(workers)).await;
    if drained.is_err() {
        tracing::warn!("alerts: notifications still queued after {DRAIN:?} are not sent");
    }
}

/// Backoff between attempts: 1 s doubling, at most 60 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(6)).min(Duration::from_secs(60))
}

/// Delivers each queued notification in turn (the channel's worker), counting what the
/// receiver took and what failed after its retries.
async fn deliver_all<F: std::future::Future<Output = bool>>(
    mut queue: mpsc::Receiver<Notification>,
    counts: &DeliveryCounts,
    mut deliver: impl FnMut(Notification) -> F,
) {
    while let Some(notification) = queue.recv().await {
        if deliver(notification).await {
            DeliveryCounts::add(&counts.sent);
        } else {
            DeliveryCounts::add(&counts.failed);
        }
    }
}

/// The sending side of one channel's queue (webhook or mail): bounded, so a receiver that
/// is down never holds up the evaluator.
pub struct Queue {
    channel: &'static str,
    sender: mpsc::Sender<Notification>,
}

impl Queue {
    fn new(channel: &'static str, capacity: usize) -> (Queue, mpsc::Receiver<Notification>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (Queue { channel, sender }, receiver)
    }

    /// Queues a notification; when the queue is full it is dropped (counted, logged).
    pub fn push(&self, notification: Notification, counts: &DeliveryCounts) {
        if let Err(err) = self.sender.try_send(notification) {
            DeliveryCounts::add(&counts.dropped);
            let notification = match err {
                mpsc::error::TrySendError::Full(n) | mpsc::error::TrySendError::Closed(n) => n,
            };
            tracing::error!(
                incident = %notification.incident,
                "alerts: {} queue full, not sent: {}",
                self.channel,
                notification.headline()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(kind: Kind, subject: &str) -> Condition {
        Condition {
            kind,
            subject: subject.to_owned(),
            detail: "seen".to_owned(),
        }
    }

    #[test]
    fn opens_once_clears_once_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("alerts.json");
        let alerts = Alerts::load(file.clone());
        let now = OffsetDateTime::now_utc();
        let opened = alerts.update(
            vec![
                condition(Kind::AgentSilent, "node01"),
                condition(Kind::DiskFull, "/data"),
            ],
            now,
        );
        assert_eq!(opened.len(), 2);
        assert!(opened.iter().all(|i| i.cleared_at.is_none()));
        // Seen again: nothing new to say.
        let again = alerts.update(
            vec![
                condition(Kind::AgentSilent, "node01"),
                condition(Kind::DiskFull, "/data"),
            ],
            now,
        );
        assert!(again.is_empty());
        // A restart keeps both open without opening them again.
        let restarted = Alerts::load(file.clone());
        assert_eq!(restarted.open_count(), 2);
        let cleared = restarted.update(vec![condition(Kind::DiskFull, "/data")], now);
        assert_eq!(cleared.len(), 1);
        assert_eq!(cleared[0].subject, "node01");
        assert!(cleared[0].cleared_at.is_some());
        let first = opened.iter().find(|i| i.subject == "node01").unwrap();
        assert_eq!(cleared[0].id, first.id);
        assert_eq!(restarted.recently_cleared().len(), 1);
        assert_eq!(
            restarted
                .open_by_kind()
                .iter()
                .find(|(k, _)| *k == Kind::DiskFull)
                .unwrap()
                .1,
            1
        );
        // A broken file is set aside, not fatal.
        std::fs::write(&file, b"{not json").unwrap();
        let fresh = Alerts::load(file.clone());
        assert_eq!(fresh.open_count(), 0);
        assert!(file.with_extension("json.bad").exists());
    }

    #[test]
    fn open_incidents_are_bounded() {
        let alerts = Alerts::default();
        let many = (0..MAX_OPEN + 10)
            .map(|i| condition(Kind::FeedSilent, &format!("syslog/h{i}")))
            .collect();
        let opened = alerts.update(many, OffsetDateTime::now_utc());
        assert_eq!(opened.len(), MAX_OPEN);
        assert_eq!(alerts.suppressed.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn backoff_doubles_to_a_minute() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(20), Duration::from_secs(60));
    }
}
