//! Telemetry collector for telemetrics-client probes (a drop-in for the clearlinux
//! telemetrics-backend collector) on the web listener.
//!
//! - `POST /v2/collector` and `POST /`: the record in headers (names case-insensitive, `_`
//!   and `-` equal), the payload as the body. `POST /v3/collector`: the record as a JSON
//!   object of strings, the TID in `X-Telemetry-TID`.
//! - Validation as the reference collector ([`validate`]); a failure is 400
//!   `{"message": "<field>: <why>"}`, success 201 with the stored record as JSON.
//! - A record is stored in the catalog tree `telemetry` and appended to
//!   `/telemetry/<YYYY>/<MM>/<DD>.jsonl` by the shared appender; the 201 comes once both
//!   are written (a 503 the probe retries when either fails), so a server killed after
//!   answering loses nothing.
//! - `GET /api/records` lists them newest first with the reference's filters;
//!   `GET /telemetry` is an HTML page with a filter form, the newest records and SVG
//!   charts of counts per day by severity and by classification. Unlike the reference
//!   (open to all), both take the web UI's logins and show records only to admins and to
//!   users granted `r` on `/telemetry` ([`may_see_records`]): records are the content of
//!   `/telemetry/*.jsonl`, so whoever may read those files may read them here.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRef, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use logarchive_common::config::server::TelemetryConfig;
use logarchive_common::paths::ArchivePath;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::sources::Event;
use super::{Counters, FeedContext, date_parts, peer_ip};
use crate::users::Account;
use crate::web::WebState;
use crate::web::auth::CurrentUser;
use crate::web::error::WebError;
use logarchive_common::perm::Perm;

/// A stored record, as the reference collector returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub machine_id: String,
    pub machine_type: String,
    pub arch: String,
    pub build: String,
    pub kernel_version: String,
    pub ts_capture: String,
    pub ts_reception: String,
    pub severity: u8,
    pub classification: String,
    pub record_version: u8,
    pub payload: String,
    pub board_name: String,
    pub bios_version: String,
    pub cpu_model: String,
    pub event_id: String,
    pub system_name: String,
    pub external: bool,
    /// Seconds since the epoch, for the time filters.
    pub creation_timestamp: i64,
    pub reception_timestamp: i64,
}

/// A validation failure: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid {
        field,
        reason: reason.into(),
    }
}

const ARCHES: [&str; 10] = [
    "armv7l", "armv6l", "aarch64", "amd64", "sparc64", "ppc64", "i686", "i386", "x86_64", "ppc",
];

/// The fields each record format version requires (names normalised: lowercase, `_`).
fn required(version: u8) -> Vec<&'static str> {
    let mut fields = vec![
        "arch",
        "build",
        "creation_timestamp",
        "classification",
        "host_type",
        "kernel_version",
        "machine_id",
        "severity",
        "record_format_version",
    ];
    if version >= 2 {
        fields.extend(["payload_format_version", "system_name", "x_telemetry_tid"]);
    }
    if version >= 3 {
        fields.extend(["board_name", "bios_version", "cpu_model"]);
    }
    if version >= 4 {
        fields.push("event_id");
    }
    fields
}

fn printable_short(field: &'static str, value: &str) -> Result<(), Invalid> {
    if value.len() >= 200 || !value.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        return Err(invalid(
            field,
            "must be printable ASCII, shorter than 200 characters",
        ));
    }
    Ok(())
}

/// Header or JSON names as the reference matches them.
pub fn normalise(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

/// Checks a record (fields by normalised name) like the reference collector and builds it.
pub fn validate(
    fields: &HashMap<String, String>,
    payload: String,
    tid: &str,
    external: bool,
    now: OffsetDateTime,
) -> Result<Record, Invalid> {
    let get = |name: &'static str| fields.get(name).map(|v| v.trim());
    let version: u8 = get("record_format_version")
        .ok_or_else(|| invalid("record_format_version", "missing"))?
        .parse()
        .ok()
        .filter(|v| (1..=4).contains(v))
        .ok_or_else(|| invalid("record_format_version", "must be 1, 2, 3 or 4"))?;
    for field in required(version) {
        if get(field).is_none_or(str::is_empty) {
            return Err(invalid(field, "missing"));
        }
    }
    let field = |name: &'static str| get(name).unwrap_or_default().to_owned();
    if version >= 2 && get("x_telemetry_tid") != Some(tid) {
        return Err(invalid(
            "X-Telemetry-TID",
            "not this collector's telemetry id",
        ));
    }
    let severity: u8 = field("severity")
        .parse()
        .ok()
        .filter(|s| (1..=4).contains(s))
        .ok_or_else(|| invalid("severity", "must be 1 to 4"))?;
    let classification = field("classification");
    if classification.split('/').count() != 3 || classification.split('/').any(str::is_empty) {
        return Err(invalid(
            "classification",
            "must be three '/'-separated parts, e.g. org.clearlinux/hello/world",
        ));
    }
    let machine_id = field("machine_id");
    if machine_id.len() > 32 {
        return Err(invalid("machine_id", "longer than 32 characters"));
    }
    let created = field("creation_timestamp");
    let creation_timestamp: i64 = created
        .parse()
        .ok()
        .filter(|_| created.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| invalid("creation_timestamp", "must be seconds since 1970 (digits)"))?;
    let arch = field("arch");
    if !ARCHES.contains(&arch.as_str()) {
        return Err(invalid(
            "arch",
            format!("\"{arch}\" is not one of {}", ARCHES.join(", ")),
        ));
    }
    let host_type = field("host_type");
    if host_type.len() >= 250 {
        return Err(invalid("host_type", "250 characters or longer"));
    }
    let kernel_version = field("kernel_version");
    let parts: Vec<&str> = kernel_version.split('.').collect();
    let numeric = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if parts.len() < 3 || !numeric(parts[0]) || !numeric(parts[1]) {
        return Err(invalid(
            "kernel_version",
            "must have at least three '.'-separated parts, the first two numbers",
        ));
    }
    let system_name = field("system_name");
    let build = field("build");
    let build_ok = if system_name == "clear-linux-os" {
        numeric(&build)
    } else {
        !build.is_empty()
            && build
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !build_ok {
        return Err(invalid(
            "build",
            "must match ^[-_a-zA-Z0-9.]+$ (digits only for clear-linux-os)",
        ));
    }
    let (board_name, bios_version, cpu_model) = (
        field("board_name"),
        field("bios_version"),
        field("cpu_model"),
    );
    if version >= 3 {
        printable_short("board_name", &board_name)?;
        printable_short("bios_version", &bios_version)?;
        printable_short("cpu_model", &cpu_model)?;
    }
    let event_id = field("event_id");
    if version >= 4
        && (event_id.len() != 32
            || !event_id
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, 'a'..='f')))
    {
        return Err(invalid("event_id", "must be 32 lowercase hex digits"));
    }
    let ts_capture = OffsetDateTime::from_unix_timestamp(creation_timestamp)
        .map_err(|_| invalid("creation_timestamp", "out of range"))?;
    Ok(Record {
        id: 0,
        machine_id,
        machine_type: host_type,
        arch,
        build,
        kernel_version,
        ts_capture: reference_time(ts_capture),
        ts_reception: reference_time(now),
        severity,
        classification,
        record_version: version,
        payload,
        board_name,
        bios_version,
        cpu_model,
        event_id,
        system_name,
        external,
        creation_timestamp,
        reception_timestamp: now.unix_timestamp(),
    })
}

/// `%Y-%m-%d %H:%M:%S UTC`.
fn reference_time(at: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// The catalog's tree of records (taken per request: the catalog may reopen its database).
const RECORDS: &str = "telemetry";

#[derive(Clone)]
struct TelemetryState {
    ctx: FeedContext,
    tid: String,
    next_id: Arc<AtomicU64>,
    /// For the logins of the read side.
    web: WebState,
}

impl FromRef<TelemetryState> for WebState {
    fn from_ref(state: &TelemetryState) -> WebState {
        state.web.clone()
    }
}

/// Whether `account` may see telemetry records: admins, and whoever may read
/// `/telemetry` (the folder the records are archived in).
pub fn may_see_records(account: &Account) -> bool {
    account.admin
        || ArchivePath::parse("/telemetry")
            .is_ok_and(|path| crate::web::access::check(account, Perm::Read, &path).is_ok())
}

fn check_records_right(user: &CurrentUser) -> Result<(), WebError> {
    if may_see_records(&user.account) {
        Ok(())
    } else {
        Err(WebError::Forbidden(
            "telemetry records are for admins and users with 'r' on /telemetry".into(),
        ))
    }
}

pub fn router(
    config: &TelemetryConfig,
    ctx: &FeedContext,
    web: &WebState,
) -> anyhow::Result<Router> {
    let last = ctx
        .catalog
        .tree(RECORDS)?
        .last()?
        .and_then(|(key, _)| <[u8; 8]>::try_from(key.as_ref()).ok())
        .map_or(0, u64::from_be_bytes);
    let state = TelemetryState {
        ctx: ctx.clone(),
        tid: config.tid.clone(),
        next_id: Arc::new(AtomicU64::new(last + 1)),
        web: web.clone(),
    };
    let max_body = usize::try_from(config.max_body.0).unwrap_or(usize::MAX);
    Ok(Router::new()
        .route("/v2/collector", post(collect_v2))
        .route("/", post(collect_v2))
        .route("/v3/collector", post(collect_v3))
        .route(
            "/api/records",
            get(list_records).layer(axum::middleware::map_response(
                crate::web::error::jsonify_api_errors,
            )),
        )
        .route("/telemetry", get(page))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout.0,
        ))
        .with_state(state))
}

fn message(status: StatusCode, text: impl std::fmt::Display) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "message": text.to_string() })),
    )
        .into_response()
}

fn external(headers: &HeaderMap) -> bool {
    headers
        .get("x-clr-external")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

async fn collect_v2(
    State(state): State<TelemetryState>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut fields = HashMap::new();
    for (name, value) in &headers {
        if let Ok(value) = value.to_str() {
            fields.insert(normalise(name.as_str()), value.to_owned());
        }
    }
    collect(state, peer_ip(&extensions), fields, &headers, body, false).await
}

async fn collect_v3(
    State(state): State<TelemetryState>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    collect(
        state,
        peer_ip(&extensions),
        HashMap::new(),
        &headers,
        body,
        true,
    )
    .await
}

/// The feeds page's name of a probe: its machine id (as sent, escaped where shown).
fn machine(fields: &HashMap<String, String>) -> Option<&str> {
    fields
        .get("machine_id")
        .map(|m| m.trim())
        .filter(|m| !m.is_empty())
}

async fn collect(
    state: TelemetryState,
    peer: Option<std::net::IpAddr>,
    mut fields: HashMap<String, String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    json: bool,
) -> Response {
    let counters = &state.ctx.stats.telemetry;
    Counters::add(&counters.received);
    let sources = &state.ctx.stats.sources;
    // A refusal is counted per machine when the request names one (a v2 header, or the
    // v3 body once parsed); the reference's 400 names the field either way.
    let refuse = |fields: &HashMap<String, String>, reason: String| {
        Counters::add(&counters.rejected);
        if let Some(machine) = machine(fields) {
            let why = format!("refused: {reason}");
            sources.record("telemetry", machine, peer, Event::Refused, 1, Some(&why));
        }
        tracing::warn!("telemetry record refused: {reason}");
        message(StatusCode::BAD_REQUEST, reason)
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            Counters::add(&counters.oversize);
            if let Some(machine) = machine(&fields) {
                let why = format!("body refused: {rejection}");
                sources.record("telemetry", machine, peer, Event::Oversize, 1, Some(&why));
            }
            return message(rejection.status(), format!("body: {rejection}"));
        }
    };
    let payload = if json {
        let object: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&body)
        {
            Ok(object) => object,
            Err(err) => return refuse(&fields, format!("body: not a JSON object: {err}")),
        };
        for (name, value) in object {
            let text = match value {
                serde_json::Value::String(text) => text,
                serde_json::Value::Number(number) => number.to_string(),
                _ => return refuse(&fields, format!("{name}: must be a string")),
            };
            fields.insert(normalise(&name), text);
        }
        if let Some(tid) = headers.get("x-telemetry-tid").and_then(|v| v.to_str().ok()) {
            fields.insert("x_telemetry_tid".into(), tid.to_owned());
        }
        fields.remove("payload").unwrap_or_default()
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(payload) => payload,
            Err(_) => return refuse(&fields, "payload: not valid UTF-8".into()),
        }
    };
    let now = OffsetDateTime::now_utc();
    let mut record = match validate(&fields, payload, &state.tid, external(headers), now) {
        Ok(record) => record,
        Err(err) => return refuse(&fields, err.to_string()),
    };
    record.id = state.next_id.fetch_add(1, Ordering::Relaxed);
    match store(&state, &record, now).await {
        Ok(()) => {
            Counters::add(&counters.stored);
            sources.record(
                "telemetry",
                &record.machine_id,
                peer,
                Event::Stored,
                1,
                None,
            );
            (StatusCode::CREATED, axum::Json(public(&record))).into_response()
        }
        Err(err) => {
            Counters::add(&counters.errors);
            sources.record(
                "telemetry",
                &record.machine_id,
                peer,
                Event::Error,
                1,
                Some("the server could not store the record"),
            );
            tracing::error!("telemetry record not stored: {err:#}");
            // The client retries anything but 201 later.
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "the record could not be stored",
            )
        }
    }
}

/// Stores a record in the catalog tree and its line in the day's `.jsonl` (waiting for
/// the appender to write it); an error when either fails (the record taken back out), so
/// the probe is answered 503 and retries rather than a 201 for a record the archive lacks.
async fn store(state: &TelemetryState, record: &Record, now: OffsetDateTime) -> anyhow::Result<()> {
    let value = serde_json::to_vec(record)?;
    let records = state.ctx.catalog.tree(RECORDS)?;
    records.insert(record.id.to_be_bytes(), value.clone())?;
    state.ctx.catalog.flush().await?;
    let [year, month, day] = date_parts(now);
    let path = state
        .ctx
        .grown_file(&format!("/telemetry/{year}/{month}"), &day, "jsonl")?;
    let mut line = value;
    line.push(b'\n');
    let problem = match state.ctx.appender.append_durable(&path, "telemetry", &line) {
        None => "the appender's backlog is full",
        Some(written) => match written.await {
            Ok(true) => return Ok(()),
            Ok(false) => "the line could not be written",
            Err(_) => "the server is stopping",
        },
    };
    // Taken back out, so the probe's retry does not list it twice.
    if let Err(err) = records.remove(record.id.to_be_bytes()) {
        tracing::error!(
            id = record.id,
            "telemetry record not removed after a failed append: {err}"
        );
    }
    anyhow::bail!("{path}: {problem}")
}

/// The record as the reference API shows it (without the internal epoch fields).
fn public(record: &Record) -> serde_json::Value {
    let mut value = serde_json::to_value(record).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.remove("creation_timestamp");
        object.remove("reception_timestamp");
        object.remove("system_name");
    }
    value
}

/// Filters of `GET /api/records`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub classification: Option<String>,
    pub severity: Option<u8>,
    pub machine_id: Option<String>,
    pub build: Option<String>,
    pub created_in_days: Option<u32>,
    pub created_in_sec: Option<u32>,
    pub limit: Option<usize>,
    pub from_id: Option<u64>,
}

impl Filter {
    /// The field filters (not the time window).
    fn matches(&self, record: &Record) -> bool {
        let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        same(&self.classification, &record.classification)
            && self.severity.is_none_or(|s| s == record.severity)
            && same(&self.machine_id, &record.machine_id)
            && same(&self.build, &record.build)
    }
}

const MAX_LIMIT: usize = 10_000;
const MAX_CREATED_IN_SEC: u32 = 30 * 86_400;

async fn list_records(
    State(state): State<TelemetryState>,
    user: CurrentUser,
    filter: Result<Query<Filter>, QueryRejection>,
) -> Response {
    if let Err(refusal) = check_records_right(&user) {
        return refusal.into_response();
    }
    let Query(filter) = match filter {
        Ok(filter) => filter,
        Err(err) => return message(StatusCode::BAD_REQUEST, err.body_text()),
    };
    let limit = filter.limit.unwrap_or(MAX_LIMIT);
    if limit > MAX_LIMIT {
        return message(
            StatusCode::BAD_REQUEST,
            format!("limit: at most {MAX_LIMIT}"),
        );
    }
    if filter
        .created_in_sec
        .is_some_and(|s| s > MAX_CREATED_IN_SEC)
    {
        return message(
            StatusCode::BAD_REQUEST,
            format!("created_in_sec: at most {MAX_CREATED_IN_SEC} (30 days)"),
        );
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let since = filter
        .created_in_sec
        .map(i64::from)
        .or(filter.created_in_days.map(|d| i64::from(d) * 86_400))
        .map(|window| now - window);
    let from = filter.from_id.unwrap_or(0);
    let records = match state.ctx.catalog.tree(RECORDS) {
        Ok(records) => records,
        Err(err) => return WebError::from(err).into_response(),
    };
    let mut found = Vec::new();
    for item in records.range(from.to_be_bytes()..).rev() {
        if found.len() >= limit {
            break;
        }
        let Ok((_, value)) = item else { continue };
        let Ok(record) = serde_json::from_slice::<Record>(&value) else {
            continue;
        };
        if filter.matches(&record) && since.is_none_or(|since| record.creation_timestamp >= since) {
            found.push(public(&record));
        }
    }
    axum::Json(serde_json::json!({ "records": found })).into_response()
}

/// Filters of the HTML page: the API's, as text (an empty form field is no filter).
#[derive(Debug, Default, Deserialize)]
pub struct PageFilter {
    #[serde(default)]
    classification: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    machine_id: String,
    #[serde(default)]
    build: String,
}

const PAGE_DAYS: i64 = 14;
const PAGE_ROWS: usize = 200;
const SEVERITY_COLOURS: [&str; 4] = ["#9ecae1", "#fdae6b", "#e6550d", "#a50f15"];

fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(text)
}

/// `GET /telemetry`: the records with a filter form, and server-rendered SVG charts of the
/// last 14 days' counts per day by severity and by classification.
async fn page(
    State(state): State<TelemetryState>,
    user: CurrentUser,
    form: Result<Query<PageFilter>, QueryRejection>,
) -> Response {
    if let Err(refusal) = check_records_right(&user) {
        return refusal.into_response();
    }
    let form = form.map(|Query(form)| form).unwrap_or_default();
    let text = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_owned());
    let filter = Filter {
        classification: text(&form.classification),
        severity: form.severity.trim().parse().ok(),
        machine_id: text(&form.machine_id),
        build: text(&form.build),
        ..Filter::default()
    };
    let today = OffsetDateTime::now_utc().unix_timestamp() / 86_400;
    let days = PAGE_DAYS as usize;
    let mut by_severity = vec![vec![0u32; days]; 4];
    let mut by_class: HashMap<String, Vec<u32>> = HashMap::new();
    let mut rows = String::new();
    let mut shown = 0;
    let records = match state.ctx.catalog.tree(RECORDS) {
        Ok(records) => records,
        Err(err) => return WebError::from(err).into_response(),
    };
    for item in records.iter().rev() {
        let Ok((_, value)) = item else { continue };
        let Ok(record) = serde_json::from_slice::<Record>(&value) else {
            continue;
        };
        if !filter.matches(&record) {
            continue;
        }
        let age = today - record.reception_timestamp.div_euclid(86_400);
        if (0..PAGE_DAYS).contains(&age) {
            let slot = (PAGE_DAYS - 1 - age) as usize;
            let severity = usize::from(record.severity.clamp(1, 4)) - 1;
            by_severity[severity][slot] += 1;
            by_class
                .entry(record.classification.clone())
                .or_insert_with(|| vec![0; days])[slot] += 1;
        }
        if shown < PAGE_ROWS {
            shown += 1;
            let payload: String = record.payload.chars().take(80).collect();
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>\n",
                record.id,
                esc(&record.ts_reception),
                esc(&record.classification),
                record.severity,
                esc(&record.machine_id),
                esc(&record.build),
                esc(&payload)
            ));
        }
    }
    let severity_series: Vec<Series> = by_severity
        .into_iter()
        .enumerate()
        .map(|(at, counts)| (format!("severity {}", at + 1), SEVERITY_COLOURS[at], counts))
        .collect();
    let severity_chart = day_chart(&severity_series, today, "records per day by severity");
    let mut classes: Vec<(String, Vec<u32>)> = by_class.into_iter().collect();
    let total = |counts: &[u32]| counts.iter().sum::<u32>();
    classes.sort_by(|a, b| total(&b.1).cmp(&total(&a.1)).then_with(|| a.0.cmp(&b.0)));
    let class_rows: String = classes
        .iter()
        .take(30)
        .map(|(class, counts)| {
            format!(
                "<tr><td>{}</td><td>{}</td></tr>\n",
                esc(class),
                total(counts)
            )
        })
        .collect();
    // The biggest classifications get a colour each; the rest are summed as "other".
    let mut class_series: Vec<Series> = classes
        .iter()
        .take(CLASS_COLOURS.len() - 1)
        .zip(CLASS_COLOURS)
        .map(|((class, counts), colour)| (class.clone(), colour, counts.clone()))
        .collect();
    if classes.len() >= CLASS_COLOURS.len() {
        let mut other = vec![0; days];
        for (_, counts) in &classes[CLASS_COLOURS.len() - 1..] {
            for (sum, count) in other.iter_mut().zip(counts) {
                *sum += count;
            }
        }
        class_series.push((
            "other".into(),
            CLASS_COLOURS[CLASS_COLOURS.len() - 1],
            other,
        ));
    }
    let class_chart = day_chart(&class_series, today, "records per day by classification");
    let input = |name: &str, value: &str| {
        format!(
            "<label>{name} <input name=\"{name}\" value=\"{}\"></label> ",
            esc(value)
        )
    };
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Telemetry records</title>\n\
         <style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}</style></head>\n\
         <body><h1>Telemetry records</h1>\n<form method=\"get\">{}{}{}{}<button>Filter</button></form>\n\
         <h2>Last {PAGE_DAYS} days by severity</h2>\n{severity_chart}\n<h2>Last {PAGE_DAYS} days by classification</h2>\n{class_chart}\n\
         <table><tr><th>classification</th><th>records</th></tr>\n{class_rows}</table>\n\
         <h2>Newest records (up to {PAGE_ROWS})</h2>\n<table><tr><th>id</th><th>received</th><th>classification</th><th>severity</th><th>machine</th><th>build</th><th>payload</th></tr>\n{rows}</table>\n</body></html>\n",
        input("classification", &form.classification),
        input("severity", &form.severity),
        input("machine_id", &form.machine_id),
        input("build", &form.build),
    );
    axum::response::Html(html).into_response()
}

/// One stacked part of a day chart: its label, colour and count per day (oldest first).
type Series = (String, &'static str, Vec<u32>);

const CLASS_COLOURS: [&str; 6] = [
    "#3182bd", "#31a354", "#756bb1", "#e6550d", "#636363", "#bdbdbd",
];

/// A stacked bar per day (oldest left), one colour per series, with totals and a legend.
fn day_chart(series: &[Series], today: i64, label: &str) -> String {
    let (bar, gap, height) = (36u32, 8u32, 160u32);
    let days = series.first().map_or(0, |(_, _, counts)| counts.len());
    let day_total = |slot: usize| -> u32 { series.iter().map(|(_, _, counts)| counts[slot]).sum() };
    let most = (0..days).map(day_total).max().unwrap_or(0).max(1);
    let width = ((bar + gap) * days as u32 + gap).max(560);
    let legend_rows = series.len().div_ceil(3) as u32;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" role=\"img\" aria-label=\"{}\">\n",
        height + 40 + 16 * legend_rows,
        esc(label)
    );
    for slot in 0..days {
        let x = gap + slot as u32 * (bar + gap);
        let mut top = height;
        for (name, colour, counts) in series {
            let count = counts[slot];
            let h = count * height / most;
            if h == 0 {
                continue;
            }
            top -= h;
            svg.push_str(&format!(
                "<rect x=\"{x}\" y=\"{top}\" width=\"{bar}\" height=\"{h}\" fill=\"{colour}\"><title>{}: {count}</title></rect>\n",
                esc(name)
            ));
        }
        let day = OffsetDateTime::from_unix_timestamp((today - (days - 1 - slot) as i64) * 86_400)
            .map(|d| format!("{:02}-{:02}", u8::from(d.month()), d.day()))
            .unwrap_or_default();
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{day}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>\n",
            x + bar / 2,
            height + 14,
            x + bar / 2,
            height + 26,
            day_total(slot)
        ));
    }
    for (at, (name, colour, _)) in series.iter().enumerate() {
        let (x, y) = (
            gap + (at % 3) as u32 * 185,
            height + 36 + 16 * (at / 3) as u32,
        );
        let shown: String = name.chars().take(28).collect();
        svg.push_str(&format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>\n",
            x + 14,
            y + 9,
            esc(&shown)
        ));
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TID: &str = "6907c830-eed9-4ce9-81ae-76daf8d88f0f";

    fn good() -> HashMap<String, String> {
        [
            ("record_format_version", "4"),
            ("classification", "org.clearlinux/hello/world"),
            ("severity", "1"),
            ("machine_id", "66c196ce4222dd761470da5e7e35f6f1"),
            ("creation_timestamp", "1443573575"),
            ("arch", "x86_64"),
            ("host_type", "blank|blank|blank"),
            ("build", "2980"),
            ("kernel_version", "4.2.0-120"),
            ("payload_format_version", "1"),
            ("system_name", "clear-linux-os"),
            ("board_name", "Qemu|Intel"),
            ("bios_version", "Qemu"),
            ("cpu_model", "Intel(R) Core(TM) i7"),
            ("event_id", "3a2d799826edc6266d72824d2aac6763"),
            ("x_telemetry_tid", TID),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn check(fields: &HashMap<String, String>) -> Result<Record, Invalid> {
        validate(
            fields,
            "hello".into(),
            TID,
            false,
            OffsetDateTime::now_utc(),
        )
    }

    #[test]
    fn accepts_a_good_record() {
        let record = check(&good()).unwrap();
        assert_eq!(record.ts_capture, "2015-09-30 00:39:35 UTC");
        assert_eq!(record.record_version, 4);
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            ("record_format_version", "5", "record_format_version"),
            ("severity", "0", "severity"),
            ("classification", "a/b", "classification"),
            ("machine_id", &"x".repeat(33), "machine_id"),
            ("creation_timestamp", "-5", "creation_timestamp"),
            ("arch", "mips", "arch"),
            ("kernel_version", "4.x.1", "kernel_version"),
            ("build", "12a", "build"),
            ("event_id", "ABC", "event_id"),
            ("cpu_model", "caf\u{e9}", "cpu_model"),
            ("x_telemetry_tid", "nope", "X-Telemetry-TID"),
        ];
        for (field, value, named) in cases {
            let mut fields = good();
            fields.insert(field.into(), value.into());
            let err = check(&fields).unwrap_err();
            assert_eq!(err.field, named, "{field}={value}: {err}");
        }
        let mut fields = good();
        fields.remove("board_name");
        assert_eq!(
            check(&fields).unwrap_err().to_string(),
            "board_name: missing"
        );
        // Version 1 needs none of the later fields.
        let mut v1 = good();
        v1.insert("record_format_version".into(), "1".into());
        for later in ["board_name", "event_id", "x_telemetry_tid", "system_name"] {
            v1.remove(later);
        }
        assert!(check(&v1).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn validate_never_panics(
            values in proptest::collection::vec("[ -~\u{e9}]{0,40}", 16),
            drop_one in 0usize..17,
        ) {
            let mut fields = good();
            let keys: Vec<String> = fields.keys().cloned().collect();
            for (key, value) in keys.iter().zip(values) {
                fields.insert(key.clone(), value);
            }
            if let Some(key) = keys.get(drop_one) {
                fields.remove(key);
            }
            let _ = check(&fields);
        }
    }
}
