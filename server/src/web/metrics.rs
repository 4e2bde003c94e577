//! `/metrics` in Prometheus text format: uploads and bytes (from the catalog), FTP and web
//! sessions, failed web logins, HTTP responses by class and server errors, catalog size,
//! the feeds' messages by feed and outcome (received, stored, unparsed, refused, ...), and
//! open alert incidents by kind and alert notifications by channel and outcome.
//! Like every other page it needs a login (scrapers use HTTP Basic).

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use super::WebState;
use super::auth::CurrentUser;
use super::error::WebError;

/// Counters kept by the web listener itself.
#[derive(Default)]
pub struct Counters {
    pub failed_logins: AtomicU64,
    pub responses: [AtomicU64; 5],
    /// The catalog totals of the last scrape and when they were taken: a pass over a
    /// catalog of a million files takes seconds, so scrapes share one per minute.
    catalog_totals: std::sync::Mutex<Option<(std::time::Instant, CatalogTotals)>>,
}

/// Files and bytes in the catalog, and those received in the last 24 hours.
#[derive(Debug, Clone, Copy)]
struct CatalogTotals {
    files: u64,
    bytes: u64,
    files_24h: u64,
    bytes_24h: u64,
}

/// How long catalog totals are reused between scrapes.
const TOTALS_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Counts every response by its status class.
pub async fn count_response(State(state): State<WebState>, response: Response) -> Response {
    let class = (response.status().as_u16() / 100).clamp(1, 5) as usize - 1;
    state.metrics.responses[class].fetch_add(1, Ordering::Relaxed);
    response
}

pub async fn get(State(state): State<WebState>, _user: CurrentUser) -> Result<Response, WebError> {
    let cached = *state
        .metrics
        .catalog_totals
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let totals = match cached {
        Some((at, totals)) if at.elapsed() < TOTALS_FOR => totals,
        _ => {
            let catalog = state.catalog.clone();
            // A whole-catalog pass: run it off the async threads.
            let totals = tokio::task::spawn_blocking(move || {
                let day_ago = OffsetDateTime::now_utc() - time::Duration::days(1);
                let mut totals = CatalogTotals {
                    files: 0,
                    bytes: 0,
                    files_24h: 0,
                    bytes_24h: 0,
                };
                for entry in catalog.all() {
                    let entry = entry?;
                    totals.files += 1;
                    totals.bytes += entry.size;
                    if entry.received >= day_ago {
                        totals.files_24h += 1;
                        totals.bytes_24h += entry.size;
                    }
                }
                Ok::<_, crate::catalog::CatalogError>(totals)
            })
            .await
            .map_err(|e| WebError::Internal(e.to_string()))??;
            *state
                .metrics
                .catalog_totals
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some((std::time::Instant::now(), totals));
            totals
        }
    };
    let (files, bytes, uploads_24h, bytes_24h) = (
        totals.files,
        totals.bytes,
        totals.files_24h,
        totals.bytes_24h,
    );
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, values: &[(&str, u64)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in values {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    metric(
        "logarchive_catalog_files",
        "gauge",
        "Files in the catalog.",
        &[("", files)],
    );
    metric(
        "logarchive_catalog_bytes",
        "gauge",
        "Bytes of the files in the catalog.",
        &[("", bytes)],
    );
    let (_, index_bytes) = state.catalog.table_stats();
    metric(
        "logarchive_search_index_bytes",
        "gauge",
        "Estimated heap held by the catalog's in-memory search table.",
        &[("", index_bytes as u64)],
    );
    metric(
        "logarchive_catalog_unhashed_files",
        "gauge",
        "Uploads whose SHA-256 the catalog has yet to compute.",
        &[("", state.catalog.unhashed_len() as u64)],
    );
    metric(
        "logarchive_catalog_behind",
        "gauge",
        "1 while a catalog step failed and the catalog has not caught up with the archive yet.",
        &[("", u64::from(state.catalog.health().is_err()))],
    );
    metric(
        "logarchive_uploads_24h",
        "gauge",
        "Files received in the last 24 hours.",
        &[("", uploads_24h)],
    );
    metric(
        "logarchive_upload_bytes_24h",
        "gauge",
        "Bytes of the files received in the last 24 hours.",
        &[("", bytes_24h)],
    );
    metric(
        "logarchive_ftp_sessions",
        "gauge",
        "FTP sessions logged in now.",
        &[("", state.ftp_sessions.count() as u64)],
    );
    metric(
        "logarchive_web_sessions",
        "gauge",
        "Web logins open now.",
        &[("", state.logins.session_count() as u64)],
    );
    metric(
        "logarchive_web_failed_logins_total",
        "counter",
        "Failed web and API logins.",
        &[("", state.metrics.failed_logins.load(Ordering::Relaxed))],
    );
    let responses: Vec<(String, u64)> = state
        .metrics
        .responses
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                format!("{{class=\"{}xx\"}}", i + 1),
                n.load(Ordering::Relaxed),
            )
        })
        .collect();
    let responses: Vec<(&str, u64)> = responses.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    metric(
        "logarchive_web_responses_total",
        "counter",
        "HTTP responses by status class (5xx are server errors).",
        &responses,
    );
    let feeds = state.feed_stats.snapshot();
    let mut feed_values = Vec::new();
    for (feed, c) in [
        ("syslog", feeds.syslog),
        ("fticks", feeds.fticks),
        ("logger", feeds.logger),
        ("telemetry", feeds.telemetry),
    ] {
        for (outcome, value) in [
            ("received", c.received),
            ("stored", c.stored),
            ("unparsed", c.unparsed),
            ("rejected", c.rejected),
            ("dropped", c.dropped),
            ("oversize", c.oversize),
            ("timeout", c.timeouts),
            ("error", c.errors),
        ] {
            feed_values.push((format!("{{feed=\"{feed}\",outcome=\"{outcome}\"}}"), value));
        }
    }
    let feed_values: Vec<(&str, u64)> = feed_values.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    metric(
        "logarchive_feed_messages_total",
        "counter",
        "Feed messages (syslog, F-TICKS lines, OTT posts, telemetry records) by outcome.",
        &feed_values,
    );
    let open: Vec<(String, u64)> = state
        .alerts
        .open_by_kind()
        .into_iter()
        .map(|(kind, n)| (format!("{{kind=\"{}\"}}", kind.as_str()), n as u64))
        .collect();
    let open: Vec<(&str, u64)> = open.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    metric(
        "logarchive_alerts_open",
        "gauge",
        "Open alert incidents by kind.",
        &open,
    );
    let mut deliveries = Vec::new();
    for (channel, counts) in [
        ("webhook", &state.alerts.webhook),
        ("email", &state.alerts.email),
    ] {
        for (outcome, counter) in [
            ("sent", &counts.sent),
            ("failed", &counts.failed),
            ("dropped", &counts.dropped),
        ] {
            deliveries.push((
                format!("{{channel=\"{channel}\",outcome=\"{outcome}\"}}"),
                counter.load(Ordering::Relaxed),
            ));
        }
    }
    let deliveries: Vec<(&str, u64)> = deliveries.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    metric(
        "logarchive_alert_notifications_total",
        "counter",
        "Alert notifications by channel and outcome (failed: given up or refused; dropped: queue full).",
        &deliveries,
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}
