//! Per-source health of the feeds, for the admin feeds page: one entry per syslog host (or
//! sender address, for what could not be tied to a host), logger station and telemetry
//! machine, with when it was last seen, what it sent and what went wrong.
//!
//! Kept in memory only (a restart starts from zero, as the feed counters do) and bounded:
//! past [`MAX_SOURCES`] entries the longest-silent ones are forgotten, so a flood of spoofed
//! UDP senders cannot grow memory without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

/// Past this many sources, the longest-silent tenth is forgotten.
pub const MAX_SOURCES: usize = 10_000;
/// Reasons are cut to this many characters (an F-TICKS line or an XML error can be long).
const MAX_REASON: usize = 300;
/// Names are cut to this many characters.
const MAX_NAME: usize = 128;

/// What happened to one message or request of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Stored as expected.
    Stored,
    /// Kept, but not parseable (a syslog frame in `_unparsed`).
    Unparsed,
    /// Stored, but flagged: a malformed F-TICKS line, an OTT body that is not well-formed XML.
    Malformed,
    /// Refused: allow-list, credentials, rights, validation, TLS handshake.
    Refused,
    /// Over the sender's rate limit.
    RateLimited,
    /// Not stored for lack of room (connection limit, the appender's backlog).
    Dropped,
    /// Over the size limit.
    Oversize,
    /// Disconnected for idling.
    Timeout,
    /// The server could not store it.
    Error,
}

/// How many of each [`Event`] a source had.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SourceCounts {
    pub stored: u64,
    pub unparsed: u64,
    pub malformed: u64,
    pub refused: u64,
    pub rate_limited: u64,
    pub dropped: u64,
    pub oversize: u64,
    pub timeouts: u64,
    pub errors: u64,
}

impl SourceCounts {
    fn add(&mut self, event: Event, n: u64) {
        let slot = match event {
            Event::Stored => &mut self.stored,
            Event::Unparsed => &mut self.unparsed,
            Event::Malformed => &mut self.malformed,
            Event::Refused => &mut self.refused,
            Event::RateLimited => &mut self.rate_limited,
            Event::Dropped => &mut self.dropped,
            Event::Oversize => &mut self.oversize,
            Event::Timeout => &mut self.timeouts,
            Event::Error => &mut self.errors,
        };
        *slot += n;
    }
}

/// One source of one feed.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// `syslog`, `logger` or `telemetry`.
    pub feed: &'static str,
    /// The host folder, sender address, station id or machine id (as received, unescaped:
    /// pages escape it).
    pub name: String,
    /// The address it last sent from, when known.
    pub address: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_ok: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_error: Option<OffsetDateTime>,
    pub last_error_reason: Option<String>,
    pub counts: SourceCounts,
}

impl Source {
    /// `silent` when nothing came for longer than `silent_after`, else `erroring` when the
    /// last problem is newer than the last success (the agents page's rule), else `ok`.
    pub fn state(&self, now: OffsetDateTime, silent_after: Duration) -> &'static str {
        let silent_after = time::Duration::try_from(silent_after).unwrap_or(time::Duration::MAX);
        if now - self.last_seen > silent_after {
            "silent"
        } else if self
            .last_error
            .is_some_and(|e| self.last_ok.is_none_or(|ok| e >= ok))
        {
            "erroring"
        } else {
            "ok"
        }
    }
}

/// The sources of all feeds.
#[derive(Debug, Default)]
pub struct Sources {
    map: Mutex<HashMap<(&'static str, String), Source>>,
}

impl Sources {
    /// Counts `n` times `event` for `name` of `feed`; `reason` says what went wrong.
    pub fn record(
        &self,
        feed: &'static str,
        name: &str,
        address: Option<IpAddr>,
        event: Event,
        n: u64,
        reason: Option<&str>,
    ) {
        if n == 0 {
            return;
        }
        let now = OffsetDateTime::now_utc();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Names come from outside (a machine id, a host name): bounded like the reasons.
        let name: String = name.chars().take(MAX_NAME).collect();
        let name = name.as_str();
        let key = (feed, name.to_owned());
        if map.len() >= MAX_SOURCES && !map.contains_key(&key) {
            forget_oldest(&mut map);
        }
        let source = map.entry(key).or_insert_with(|| Source {
            feed,
            name: name.to_owned(),
            address: None,
            first_seen: now,
            last_seen: now,
            last_ok: None,
            last_error: None,
            last_error_reason: None,
            counts: SourceCounts::default(),
        });
        source.last_seen = now;
        if let Some(address) = address {
            source.address = Some(address.to_string());
        }
        source.counts.add(event, n);
        if event == Event::Stored {
            source.last_ok = Some(now);
        } else {
            source.last_error = Some(now);
            source.last_error_reason = reason.map(|r| r.chars().take(MAX_REASON).collect());
        }
    }

    /// Every source, by feed and name.
    pub fn snapshot(&self) -> Vec<Source> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Source> = map.values().cloned().collect();
        drop(map);
        all.sort_by(|a, b| a.feed.cmp(b.feed).then_with(|| a.name.cmp(&b.name)));
        all
    }
}

/// Drops the longest-silent tenth of the sources.
fn forget_oldest(map: &mut HashMap<(&'static str, String), Source>) {
    let mut seen: Vec<OffsetDateTime> = map.values().map(|s| s.last_seen).collect();
    let cut = seen.len() / 10;
    seen.select_nth_unstable(cut);
    let limit = seen[cut];
    map.retain(|_, s| s.last_seen > limit);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_states_and_bounds() {
        let sources = Sources::default();
        sources.record("syslog", "web-01", None, Event::Stored, 3, None);
        sources.record(
            "syslog",
            "web-01",
            None,
            Event::Malformed,
            1,
            Some("no realm"),
        );
        let all = sources.snapshot();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].counts.stored, 3);
        assert_eq!(all[0].counts.malformed, 1);
        assert_eq!(all[0].last_error_reason.as_deref(), Some("no realm"));
        let now = OffsetDateTime::now_utc();
        assert_eq!(all[0].state(now, Duration::from_secs(60)), "erroring");
        sources.record("syslog", "web-01", None, Event::Stored, 1, None);
        let all = sources.snapshot();
        assert_eq!(all[0].state(now, Duration::from_secs(60)), "ok");
        let later = now + time::Duration::hours(2);
        assert_eq!(all[0].state(later, Duration::from_secs(60)), "silent");

        for i in 0..MAX_SOURCES + 5 {
            sources.record("telemetry", &format!("m{i}"), None, Event::Stored, 1, None);
        }
        assert!(sources.snapshot().len() <= MAX_SOURCES);
    }
}
