//! Admin: the agents. Each agent leaves a health report in its home
//! (`/.logarchive-agent/status.json`, replaced every `report_interval`); the catalog adds
//! what the server saw (last upload, files and bytes in the last 24 h, by the agent's FTP
//! user). An agent is `silent` when its report is older than `[web] agent_silent_after`,
//! `erroring` when its last error is newer than its last success, else `ok`
//! ([`agent_health`], which the alerts evaluator uses too). The page
//! also draws archive growth per day and source as a server-rendered SVG chart.

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use logarchive_common::paths::ArchivePath;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::AsyncReadExt;

use super::auth::CurrentUser;
use super::error::WebError;
use super::{WebState, format};

/// Where an agent keeps its report, below its home.
const REPORT: [&str; 2] = [".logarchive-agent", "status.json"];
/// Days shown in the growth chart.
const CHART_DAYS: i64 = 14;

#[derive(Debug, Serialize)]
pub struct AgentRow {
    pub id: String,
    /// The FTP user the agent logs in as.
    pub user: String,
    pub host: String,
    pub version: String,
    pub last_seen: Option<String>,
    pub last_upload: Option<String>,
    pub files_24h: u64,
    pub bytes_24h: u64,
    pub backlog_files: u64,
    pub backlog_bytes: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub state: &'static str,
}

impl AgentRow {
    fn bytes_text(&self) -> String {
        format::size(self.bytes_24h)
    }
    fn backlog_text(&self) -> String {
        format!(
            "{} files, {}",
            self.backlog_files,
            format::size(self.backlog_bytes)
        )
    }
}

/// What the catalog says about one source.
#[derive(Default)]
struct SourceStats {
    last_upload: Option<OffsetDateTime>,
    files_24h: u64,
    bytes_24h: u64,
    /// Bytes received per day (days since the epoch).
    per_day: BTreeMap<i64, u64>,
}

fn catalog_stats(state: &WebState) -> Result<BTreeMap<String, SourceStats>, WebError> {
    let now = OffsetDateTime::now_utc();
    let day_ago = now - time::Duration::days(1);
    let first_day = day_number(now) - CHART_DAYS + 1;
    let mut stats: BTreeMap<String, SourceStats> = BTreeMap::new();
    for entry in state.catalog.all() {
        let entry = entry?;
        let Some(source) = entry.uploader else {
            continue;
        };
        let s = stats.entry(source).or_default();
        s.last_upload = s.last_upload.max(Some(entry.received));
        if entry.received >= day_ago {
            s.files_24h += 1;
            s.bytes_24h += entry.size;
        }
        let day = day_number(entry.received);
        if day >= first_day {
            *s.per_day.entry(day).or_default() += entry.size;
        }
    }
    Ok(stats)
}

fn day_number(time: OffsetDateTime) -> i64 {
    time.unix_timestamp().div_euclid(86_400)
}

fn text(value: &serde_json::Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

fn parse(value: Option<&str>) -> Option<OffsetDateTime> {
    value.and_then(|v| OffsetDateTime::parse(v, &Rfc3339).ok())
}

/// The report in `home`, and the user that sent it (from the catalog).
async fn read_report(
    state: &WebState,
    home: &ArchivePath,
) -> Option<(serde_json::Value, Option<String>)> {
    let path = home.join(REPORT[0]).and_then(|p| p.join(REPORT[1])).ok()?;
    let mut reader = state.archive.open(&path, 0).await.ok()?;
    let mut bytes = Vec::new();
    // A report is a few hundred bytes; anything much larger is not one.
    (&mut reader)
        .take(64 * 1024)
        .read_to_end(&mut bytes)
        .await
        .ok()?;
    let sender = state
        .catalog
        .get(&path)
        .ok()
        .flatten()
        .and_then(|e| e.uploader);
    Some((serde_json::from_slice(&bytes).ok()?, sender))
}

/// One agent's health, from its report: what the agents page shows and what the alerts
/// evaluator turns into incidents, so both call an agent silent or erroring the same way.
#[derive(Debug, Clone)]
pub struct AgentHealth {
    /// The agent's id (its report's `agent_id`, else its user).
    pub id: String,
    /// The FTP user that sent the report (else the home's account).
    pub user: String,
    pub host: String,
    pub version: String,
    pub updated: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    pub last_error_at: Option<OffsetDateTime>,
    pub backlog_files: u64,
    pub backlog_bytes: u64,
    /// `ok`, `silent` or `erroring` ([`agent_state`]).
    pub state: &'static str,
}

/// `silent` when the report is missing a time or older than `silent_after`, else
/// `erroring` when the last error is newer than the last success, else `ok`.
pub fn agent_state(
    now: OffsetDateTime,
    silent_after: std::time::Duration,
    updated: Option<OffsetDateTime>,
    last_success: Option<OffsetDateTime>,
    last_error: Option<OffsetDateTime>,
) -> &'static str {
    let silent_after = time::Duration::try_from(silent_after).unwrap_or(time::Duration::MAX);
    if updated.is_none_or(|t| now - t > silent_after) {
        "silent"
    } else if last_error.is_some_and(|e| last_success.is_none_or(|s| e > s)) {
        "erroring"
    } else {
        "ok"
    }
}

/// Every agent that left a report in a home, with its state now.
pub async fn agent_health(state: &WebState) -> Vec<AgentHealth> {
    let now = OffsetDateTime::now_utc();
    let mut agents = Vec::new();
    // Users may share a home; each report is read once.
    let mut homes = BTreeSet::new();
    for account in state.users.current().all() {
        if !homes.insert(account.home.clone()) {
            continue;
        }
        let Some((report, sender)) = read_report(state, &account.home).await else {
            continue;
        };
        let user = sender.unwrap_or_else(|| account.name.clone());
        let updated = parse(report["updated"].as_str());
        let success = parse(report["last_success"]["at"].as_str());
        let error_at = parse(report["last_error"]["at"].as_str());
        agents.push(AgentHealth {
            id: text(&report["agent_id"]).unwrap_or_else(|| user.clone()),
            user,
            host: text(&report["host"]).unwrap_or_default(),
            version: text(&report["version"]).unwrap_or_default(),
            updated,
            last_error: text(&report["last_error"]["message"]),
            last_error_at: error_at,
            backlog_files: report["backlog_files"].as_u64().unwrap_or(0),
            backlog_bytes: report["backlog_bytes"].as_u64().unwrap_or(0),
            state: agent_state(
                now,
                state.config.agent_silent_after.0,
                updated,
                success,
                error_at,
            ),
        });
    }
    agents
}

async fn agents(state: &WebState, stats: &BTreeMap<String, SourceStats>) -> Vec<AgentRow> {
    agent_health(state)
        .await
        .into_iter()
        .map(|agent| {
            let own = stats.get(&agent.user);
            AgentRow {
                id: agent.id,
                host: agent.host,
                version: agent.version,
                last_seen: agent.updated.map(format::rfc3339),
                last_upload: own.and_then(|s| s.last_upload).map(format::rfc3339),
                files_24h: own.map_or(0, |s| s.files_24h),
                bytes_24h: own.map_or(0, |s| s.bytes_24h),
                backlog_files: agent.backlog_files,
                backlog_bytes: agent.backlog_bytes,
                last_error: agent.last_error,
                last_error_at: agent.last_error_at.map(format::rfc3339),
                state: agent.state,
                user: agent.user,
            }
        })
        .collect()
}

pub async fn api_agents(
    State(state): State<WebState>,
    user: CurrentUser,
) -> Result<axum::Json<Vec<AgentRow>>, WebError> {
    user.require_admin()?;
    let stats = whole_catalog_stats(&state).await?;
    Ok(axum::Json(agents(&state, &stats).await))
}

async fn whole_catalog_stats(state: &WebState) -> Result<BTreeMap<String, SourceStats>, WebError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || catalog_stats(&state))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
}

/// One bar of the chart, already placed.
pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub colour: &'static str,
    pub title: String,
}

pub struct Legend {
    pub name: String,
    pub colour: &'static str,
    pub y: u32,
}

pub struct Chart {
    pub width: u32,
    pub height: u32,
    pub bars: Vec<Bar>,
    pub legend: Vec<Legend>,
    pub days: Vec<(u32, String)>,
    pub max_label: String,
}

const COLOURS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// Bytes received per day, one stacked bar per day, one colour per source.
fn chart(stats: &BTreeMap<String, SourceStats>) -> Chart {
    let today = day_number(OffsetDateTime::now_utc());
    let days: Vec<i64> = (today - CHART_DAYS + 1..=today).collect();
    let (plot_height, bar_width, gap, left, top) = (160u32, 28u32, 8u32, 10u32, 10u32);
    let sources: BTreeSet<&String> = stats
        .iter()
        .filter(|(_, s)| !s.per_day.is_empty())
        .map(|(n, _)| n)
        .collect();
    let totals: Vec<u64> = days
        .iter()
        .map(|d| {
            stats
                .values()
                .map(|s| s.per_day.get(d).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let mut bars = Vec::new();
    let mut labels = Vec::new();
    for (i, day) in days.iter().enumerate() {
        let x = left + i as u32 * (bar_width + gap);
        let mut y = top + plot_height;
        for (k, source) in sources.iter().enumerate() {
            let bytes = stats[*source].per_day.get(day).copied().unwrap_or(0);
            if bytes == 0 {
                continue;
            }
            let height = ((bytes as f64 / max as f64) * plot_height as f64)
                .ceil()
                .max(1.0) as u32;
            y = y.saturating_sub(height);
            let date = OffsetDateTime::from_unix_timestamp(day * 86_400)
                .map(|d| d.date().to_string())
                .unwrap_or_default();
            bars.push(Bar {
                x,
                y,
                width: bar_width,
                height,
                colour: COLOURS[k % COLOURS.len()],
                title: format!("{source}, {date}: {}", format::size(bytes)),
            });
        }
        if i % 2 == 0
            && let Ok(d) = OffsetDateTime::from_unix_timestamp(day * 86_400)
        {
            labels.push((x, format!("{:02}-{:02}", u8::from(d.month()), d.day())));
        }
    }
    let plot_width = left + days.len() as u32 * (bar_width + gap);
    let legend = sources
        .iter()
        .enumerate()
        .map(|(k, name)| Legend {
            name: (*name).clone(),
            colour: COLOURS[k % COLOURS.len()],
            y: top + 14 * k as u32,
        })
        .collect();
    Chart {
        width: plot_width + 200,
        height: top + plot_height + 30,
        bars,
        legend,
        days: labels,
        max_label: format::size(max),
    }
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage<'a> {
    user: &'a CurrentUser,
    agents: Vec<AgentRow>,
    chart: Chart,
    silent_minutes: u64,
}

pub async fn page(State(state): State<WebState>, user: CurrentUser) -> Result<Response, WebError> {
    user.require_admin()?;
    let stats = whole_catalog_stats(&state).await?;
    let page = AgentsPage {
        user: &user,
        agents: agents(&state, &stats).await,
        chart: chart(&stats),
        silent_minutes: state.config.agent_silent_after.0.as_secs() / 60,
    };
    Ok(Html(page.render()?).into_response())
}
