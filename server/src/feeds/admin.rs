//! Admin: the feeds. `GET /admin/feeds` (HTML, server-rendered, no script needed) and
//! `GET /api/feeds` (the same as JSON) show each feed's counters, every source — syslog
//! host or sender address, logger station, telemetry machine — with when it was last seen,
//! what it sent, what went wrong and a state (`ok`, `silent` past `[web]
//! feed_silent_after`, `erroring` when its last problem is newer than its last success),
//! and the newest flagged items. Admins only, with the web UI's logins ([`CurrentUser`]):
//! the session cookie for the page, the cookie or HTTP Basic for the API.

use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{FromRef, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use time::OffsetDateTime;

use super::sources::{Source, SourceCounts};
use super::{CounterSnapshot, FeedContext, Flag, StatsSnapshot};
use crate::web::WebState;
use crate::web::auth::CurrentUser;
use crate::web::error::WebError;
use crate::web::format;

#[derive(Clone)]
struct AdminState {
    ctx: FeedContext,
    web: WebState,
}

impl FromRef<AdminState> for WebState {
    fn from_ref(state: &AdminState) -> WebState {
        state.web.clone()
    }
}

pub fn router(ctx: &FeedContext, web: &WebState) -> Router {
    let state = AdminState {
        ctx: ctx.clone(),
        web: web.clone(),
    };
    Router::new()
        .route(
            "/api/feeds",
            get(api).layer(axum::middleware::map_response(
                crate::web::error::jsonify_api_errors,
            )),
        )
        .route(
            "/admin/feeds",
            get(page).layer(axum::middleware::map_response(crate::web::security_headers)),
        )
        .with_state(state)
}

/// A source with its state, as the page and the API show it.
#[derive(Debug, Serialize)]
pub struct SourceRow {
    #[serde(flatten)]
    pub source: Source,
    pub state: &'static str,
}

impl SourceRow {
    fn last_seen(&self) -> String {
        format::rfc3339(self.source.last_seen)
    }
    fn last_error_at(&self) -> String {
        self.source
            .last_error
            .map(format::rfc3339)
            .unwrap_or_default()
    }
    /// The problems that happened, as `name n` pairs (none when all went well).
    fn problems(&self) -> Vec<(&'static str, u64)> {
        let c: &SourceCounts = &self.source.counts;
        [
            ("unparsed", c.unparsed),
            ("malformed", c.malformed),
            ("refused", c.refused),
            ("rate-limited", c.rate_limited),
            ("dropped", c.dropped),
            ("oversize", c.oversize),
            ("timeouts", c.timeouts),
            ("errors", c.errors),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}

#[derive(Debug, Serialize)]
pub struct FeedsReport {
    #[serde(flatten)]
    pub totals: StatsSnapshot,
    pub silent_after_secs: u64,
    pub sources: Vec<SourceRow>,
}

fn report(state: &AdminState) -> FeedsReport {
    let silent_after: Duration = state.web.config.feed_silent_after.0;
    let now = OffsetDateTime::now_utc();
    let sources = state
        .ctx
        .stats
        .sources
        .snapshot()
        .into_iter()
        .map(|source| SourceRow {
            state: source.state(now, silent_after),
            source,
        })
        .collect();
    FeedsReport {
        totals: state.ctx.stats.snapshot(),
        silent_after_secs: silent_after.as_secs(),
        sources,
    }
}

/// `GET /api/feeds`: the counters, every source with its state, and the flagged items.
async fn api(
    State(state): State<AdminState>,
    user: CurrentUser,
) -> Result<axum::Json<FeedsReport>, WebError> {
    user.require_admin()?;
    Ok(axum::Json(report(&state)))
}

/// One line of the totals table.
struct Total {
    feed: &'static str,
    counts: CounterSnapshot,
}

#[derive(Template)]
#[template(path = "feeds.html")]
struct FeedsPage<'a> {
    user: &'a CurrentUser,
    totals: Vec<Total>,
    sources: Vec<SourceRow>,
    flagged: Vec<Flag>,
    silent_minutes: u64,
}

fn flag_time(flag: &Flag) -> String {
    format::rfc3339(flag.at)
}

/// `GET /admin/feeds`.
async fn page(State(state): State<AdminState>, user: CurrentUser) -> Result<Response, WebError> {
    user.require_admin()?;
    let report = report(&state);
    let t = &report.totals;
    let page = FeedsPage {
        user: &user,
        totals: vec![
            Total {
                feed: "syslog",
                counts: t.syslog,
            },
            Total {
                feed: "F-TICKS (in syslog)",
                counts: t.fticks,
            },
            Total {
                feed: "logger",
                counts: t.logger,
            },
            Total {
                feed: "telemetry",
                counts: t.telemetry,
            },
        ],
        flagged: report.totals.flagged,
        sources: report.sources,
        silent_minutes: report.silent_after_secs / 60,
    };
    Ok(Html(page.render()?).into_response())
}
