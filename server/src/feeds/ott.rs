//! OTT netDL data loggers: a drop-in for the urban-flows data-logger-server on the web
//! listener.
//!
//! - `POST /ott?stationid=<id>&action=senddata|sendalarm` (trailing slash optional), HTTP
//!   Basic auth with a users.toml user who has `w` on the target folder.
//! - The body (after `Content-Encoding: deflate`, if any) is stored byte-exact — it is
//!   usually iso-8859-1, so it is never decoded — with [`Archive::store_new`]: atomic, and
//!   an existing name is never overwritten (a `.1`, `.2` suffix is added instead), at
//!   `/logger/<action>/<YYYY>/<MM>/<DD>/<stationid>_<UTC time, ':' as '+'>`.
//! - A body that is not well-formed XML is stored all the same (a logger does not resend)
//!   and flagged on the feeds page.
//! - Reply: 200 `<Response stationId=".." responseDateTime=".." />` only once the body and
//!   its journal line are stored; when either fails, 503 with a short reason (the logger
//!   keeps its data and retries). Bad requests get a 400 with a plain-text reason, never
//!   a 500. `GET /ping` answers `pong`;
//!   `GET /ott?action=requestcommand` an empty body (no commands are queued).

use std::collections::HashMap;
use std::io::Read;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use logarchive_common::config::server::LoggerConfig;
use logarchive_common::paths::{ArchivePath, safe_component};
use logarchive_common::perm::Perm;
use time::OffsetDateTime;

use super::sources::Event;
use super::{Counters, FeedContext, basic_auth, date_parts, peer_ip};
use crate::archive::ArchiveError;
use crate::catalog::CatalogError;

#[derive(Clone)]
struct OttState {
    ctx: FeedContext,
    max_body: usize,
}

pub fn router(config: &LoggerConfig, ctx: &FeedContext) -> Router {
    let max_body = usize::try_from(config.max_body.0).unwrap_or(usize::MAX);
    let state = OttState {
        ctx: ctx.clone(),
        max_body,
    };
    Router::new()
        .route("/ott", get(command).post(receive))
        .route("/ott/", get(command).post(receive))
        .route("/ping", get(ping))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout.0,
        ))
        .with_state(state)
}

async fn ping() -> &'static str {
    "pong"
}

fn bad_request(ctx: &FeedContext, reason: String) -> Response {
    Counters::add(&ctx.stats.logger.rejected);
    tracing::warn!("logger request refused: {reason}");
    (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response()
}

/// `GET /ott?action=requestcommand`: no command is ever waiting.
async fn command(
    State(state): State<OttState>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    if let Err(refusal) = basic_auth(&state.ctx, &headers).await {
        return refusal;
    }
    let Ok(Query(query)) = query else {
        return bad_request(&state.ctx, "the query string is malformed".into());
    };
    match query.get("action").map(String::as_str) {
        Some("requestcommand") => (StatusCode::OK, "").into_response(),
        Some(other) => bad_request(
            &state.ctx,
            format!("unknown action \"{other}\" for GET (only requestcommand)"),
        ),
        None => bad_request(&state.ctx, "missing parameter \"action\"".into()),
    }
}

/// A UTC time as Python's `isoformat()` writes it (microseconds), with `colon` between
/// hours, minutes and seconds: `+` in file names (as the old server), `:` in replies.
fn iso_time(at: OffsetDateTime, colon: char) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}{colon}{:02}{colon}{:02}.{:06}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

/// The encoding named in the XML declaration, lowercase.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut buf = Vec::new();
    match reader.read_event_into(&mut buf) {
        Ok(quick_xml::events::Event::Decl(decl)) => decl
            .encoding()
            .and_then(Result::ok)
            .map(|name| name.to_ascii_lowercase()),
        _ => None,
    }
}

/// Why `bytes` is not well-formed XML, if it is not.
pub fn xml_problem(bytes: &[u8]) -> Option<String> {
    // quick-xml reads UTF-8 only; the loggers declare ISO-8859-1, whose bytes are exactly
    // the code points U+0000..U+00FF, so it is widened for the check (the stored body is
    // never touched).
    let widened: String;
    let bytes = match declared_encoding(bytes).as_deref() {
        Some("iso-8859-1" | "iso8859-1" | "latin1" | "latin-1" | "l1") => {
            widened = bytes.iter().map(|&b| char::from(b)).collect();
            widened.as_bytes()
        }
        _ => bytes,
    };
    let mut reader = quick_xml::Reader::from_reader(bytes);
    reader.config_mut().check_end_names = true;
    let mut buf = Vec::new();
    let mut depth = 0usize;
    let mut roots = 0usize;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(quick_xml::events::Event::Start(_)) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
            }
            Ok(quick_xml::events::Event::Empty(_)) if depth == 0 => roots += 1,
            Ok(quick_xml::events::Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(err) => {
                return Some(format!(
                    "not well-formed XML at byte {}: {err}",
                    reader.error_position()
                ));
            }
        }
        buf.clear();
    }
    match (depth, roots) {
        (0, 1) => None,
        (0, 0) => Some("no root element".into()),
        (0, _) => Some("more than one root element".into()),
        _ => Some("the document ends inside an element".into()),
    }
}

/// Inflates a `Content-Encoding: deflate` body (zlib-wrapped as HTTP says, or raw, as some
/// clients send), refusing more than `max` bytes out.
fn inflate(body: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    let zlib = flate2::read::ZlibDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out);
    if zlib.is_err() {
        out.clear();
        flate2::read::DeflateDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|err| format!("the body is not valid deflate data: {err}"))?;
    }
    if out.len() > max {
        return Err(format!(
            "the inflated body is over the limit of {max} bytes"
        ));
    }
    Ok(out)
}

async fn receive(
    State(state): State<OttState>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let ctx = &state.ctx;
    let counters = &ctx.stats.logger;
    Counters::add(&counters.received);
    let peer = peer_ip(&extensions);
    // Per station on the feeds page, once the station is known.
    let note = |station: &str, event: Event, reason: Option<&str>| {
        ctx.stats
            .sources
            .record("logger", station, peer, event, 1, reason);
    };
    let account = match basic_auth(ctx, &headers).await {
        Ok(account) => account,
        Err(refusal) => {
            Counters::add(&counters.rejected);
            let station = query.as_ref().ok().and_then(|q| q.0.get("stationid"));
            if let Some(station) = station.and_then(|s| safe_component(s, 64)) {
                note(
                    &station,
                    Event::Refused,
                    Some("refused: wrong user or password"),
                );
            }
            return refusal;
        }
    };
    let Ok(Query(query)) = query else {
        return bad_request(ctx, "the query string is malformed".into());
    };
    let Some(raw_station) = query.get("stationid").filter(|s| !s.is_empty()) else {
        return bad_request(ctx, "missing parameter \"stationid\"".into());
    };
    let action = match query.get("action").map(String::as_str) {
        Some(action @ ("senddata" | "sendalarm")) => action,
        Some(other) => {
            return bad_request(
                ctx,
                format!("unknown action \"{other}\" (POST accepts senddata or sendalarm)"),
            );
        }
        None => return bad_request(ctx, "missing parameter \"action\"".into()),
    };
    let Some(station) = safe_component(raw_station, 64) else {
        return bad_request(
            ctx,
            format!("stationid \"{raw_station}\" has no usable characters"),
        );
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            Counters::add(&counters.oversize);
            note(
                &station,
                Event::Oversize,
                Some(&format!("body refused: {rejection}")),
            );
            return (
                rejection.status(),
                format!(
                    "the body is over the limit of {} bytes ([logger] max_body): {rejection}\n",
                    state.max_body
                ),
            )
                .into_response();
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let body = match encoding.as_deref() {
        None | Some("identity") => body.to_vec(),
        Some("deflate") => match inflate(&body, state.max_body) {
            Ok(body) => body,
            Err(reason) => {
                note(&station, Event::Refused, Some(&reason));
                return bad_request(ctx, reason);
            }
        },
        Some(other) => {
            note(
                &station,
                Event::Refused,
                Some("unsupported Content-Encoding"),
            );
            return bad_request(
                ctx,
                format!("Content-Encoding \"{other}\" is not supported (only deflate)"),
            );
        }
    };
    let now = OffsetDateTime::now_utc();
    let [year, month, day] = date_parts(now);
    let Ok(folder) = ArchivePath::parse(&format!("/logger/{action}/{year}/{month}/{day}")) else {
        return bad_request(ctx, "no archive folder for this request".into());
    };
    // As over FTP, rights hold only inside the user's home.
    if !folder.starts_with(&account.home) || !account.may(Perm::Write, &folder) {
        Counters::add(&counters.rejected);
        note(
            &station,
            Event::Refused,
            Some(&format!(
                "user \"{}\" may not write to {folder}",
                account.name
            )),
        );
        return (
            StatusCode::FORBIDDEN,
            format!("user \"{}\" may not write to {folder}\n", account.name),
        )
            .into_response();
    }
    let problem = xml_problem(&body);
    match store(
        ctx,
        &folder,
        &format!("{station}_{}", iso_time(now, '+')),
        body,
    )
    .await
    {
        Ok(path) => {
            match problem {
                Some(reason) => {
                    Counters::add(&counters.unparsed);
                    note(
                        &station,
                        Event::Malformed,
                        Some(&format!(
                            "{path}: stored, but not well-formed XML: {reason}"
                        )),
                    );
                    ctx.stats.flag("logger", path.as_str(), reason);
                }
                None => {
                    Counters::add(&counters.stored);
                    note(&station, Event::Stored, None);
                }
            }
            tracing::info!(user = %account.name, %path, "logger data stored");
        }
        Err(err) => {
            Counters::add(&counters.errors);
            note(
                &station,
                Event::Error,
                Some("the server could not store the data"),
            );
            tracing::error!("logger data not stored: {err:#}");
            // The logger retries on anything but 200.
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the data could not be stored; try again later\n",
            )
                .into_response();
        }
    }
    let response_time = format!("{}Z", iso_time(now, ':'));
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Response stationId=\"{}\" responseDateTime=\"{}\" />\n",
        quick_xml::escape::escape(raw_station.as_str()),
        response_time
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        xml,
    )
        .into_response()
}

/// Stores `body` under `folder/name`, or `name.1`, `name.2`… when taken; returns the path.
async fn store(
    ctx: &FeedContext,
    folder: &ArchivePath,
    name: &str,
    body: Vec<u8>,
) -> anyhow::Result<ArchivePath> {
    ctx.archive.create_dir_all(folder).await?;
    for attempt in 0..100 {
        let candidate = if attempt == 0 {
            name.to_owned()
        } else {
            format!("{name}.{attempt}")
        };
        let path = folder.join(&candidate)?;
        match ctx.archive.store_new(&path, body.clone()).await {
            Ok(committed) => {
                let sha256 = committed.sha256.unwrap_or_default();
                match ctx
                    .catalog
                    .record_upload(&committed.entry, Some(sha256), "logger")
                    .await
                {
                    Ok(_) => {}
                    // As over FTP: without its journal line, who sent the file is lost for
                    // good, so no success. The stored copy goes, so the logger's retry
                    // stores it once rather than beside a `.1` twin.
                    Err(CatalogError::Journal(err)) => {
                        if let Err(removal) = ctx.archive.remove_file(&path).await {
                            tracing::error!(%path, "stored but not journaled, and not removed: {removal}");
                        }
                        anyhow::bail!("{path}: the upload journal could not be written: {err}");
                    }
                    // The file and its journal line are durable; the catalog catches up.
                    Err(err) => tracing::error!(%path, "stored but not cataloged: {err}"),
                }
                return Ok(path);
            }
            Err(ArchiveError::AlreadyExists(_)) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    anyhow::bail!("{folder}/{name}: 100 names taken")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_use_plus_for_colons() {
        let at = time::macros::datetime!(2020-10-22 00:01:06.209619 UTC);
        assert_eq!(iso_time(at, '+'), "2020-10-22T00+01+06.209619");
        assert_eq!(iso_time(at, ':'), "2020-10-22T00:01:06.209619");
    }

    #[test]
    fn xml_checks() {
        assert_eq!(
            xml_problem(b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><A b=\"\xe9\"><C/></A>"),
            None
        );
        assert!(xml_problem(b"<A><B></A>").is_some());
        assert!(xml_problem(b"<A>").unwrap().contains("ends inside"));
        assert!(xml_problem(b"").unwrap().contains("no root"));
        assert!(xml_problem(b"<A/><B/>").unwrap().contains("more than one"));
    }

    #[test]
    fn inflates_zlib_and_raw_with_a_limit() {
        use std::io::Write;
        let data = b"<A>hello</A>".repeat(10);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&data).unwrap();
        let zlib = zlib.finish().unwrap();
        assert_eq!(inflate(&zlib, 1000).unwrap(), data);
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&data).unwrap();
        assert_eq!(inflate(&raw.finish().unwrap(), 1000).unwrap(), data);
        assert!(inflate(&zlib, 50).unwrap_err().contains("over the limit"));
        assert!(inflate(b"not deflate", 1000).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn xml_check_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = xml_problem(&data);
        }

        #[test]
        fn xml_check_never_panics_on_xmlish(text in "(<[A-Za-z]{1,3}( [a-z]=\"[^\"<]{0,4}\")?/?>|</[A-Za-z]{1,3}>|[a-z &;]{0,5}){0,12}") {
            let _ = xml_problem(text.as_bytes());
        }
    }
}
