//! F-TICKS: roaming-authentication log lines (eduroam RADIUS servers send them over
//! syslog), parsed and indexed so they can be searched by realm, visited country, visited
//! institution and result.
//!
//! Grammar: `"F-TICKS/" federation "/" version 1*("#" KEY "=" value) ["#"]`, with exactly
//! the keys REALM, VISCOUNTRY, VISINST, CSI, PN and RESULT (the old importer's rules: CSI
//! is a MAC normalised to 12 hex digits, VISINST starts with `1`, RESULT is OK or FAIL).
//! Good lines go to the catalog tree `fticks`, malformed ones with their reason to
//! `fticks_malformed`; neither is ever dropped (the raw line is in the syslog file too).
//! The index is derived data: sled writes it back within half a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Counters, FeedContext, basic_auth};

/// One F-TICKS record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fticks {
    pub federation: String,
    pub version: String,
    pub realm: String,
    pub viscountry: String,
    pub visinst: String,
    /// 12 lowercase hex digits.
    pub csi: String,
    pub pn: String,
    pub result: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FticksError {
    #[error("does not start with \"F-TICKS/\"")]
    NoPrefix,
    #[error("no \"<federation>/<version>\" after \"F-TICKS/\"")]
    NoVersion,
    #[error("field \"{0}\" is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("unknown key {0}")]
    UnknownKey(String),
    #[error("key {0} appears twice")]
    Duplicate(String),
    #[error("key {0} is missing")]
    Missing(&'static str),
    #[error("CSI \"{0}\" is not a MAC address (12 hex digits)")]
    BadCsi(String),
    #[error("VISINST \"{0}\" does not start with '1'")]
    BadVisinst(String),
    #[error("RESULT \"{0}\" is neither OK nor FAIL")]
    BadResult(String),
    #[error("{0} is empty")]
    Empty(&'static str),
}

const KEYS: [&str; 6] = ["REALM", "VISCOUNTRY", "VISINST", "CSI", "PN", "RESULT"];

/// Parses one F-TICKS line (from `F-TICKS/` on; surrounding whitespace is ignored).
pub fn parse(line: &str) -> Result<Fticks, FticksError> {
    let rest = line
        .trim()
        .strip_prefix("F-TICKS/")
        .ok_or(FticksError::NoPrefix)?;
    let mut fields = rest.split('#');
    let head = fields.next().unwrap_or_default();
    let (federation, version) = head
        .split_once('/')
        .filter(|(f, v)| !f.is_empty() && !v.is_empty())
        .ok_or(FticksError::NoVersion)?;
    let mut values: HashMap<&'static str, &str> = HashMap::new();
    let fields: Vec<&str> = fields.collect();
    // A trailing '#' leaves one empty last field.
    let count = fields.len() - usize::from(fields.last() == Some(&""));
    for field in &fields[..count] {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| FticksError::NotKeyValue((*field).to_owned()))?;
        let known = KEYS
            .iter()
            .find(|k| **k == key)
            .ok_or_else(|| FticksError::UnknownKey(key.to_owned()))?;
        if values.insert(known, value).is_some() {
            return Err(FticksError::Duplicate(key.to_owned()));
        }
    }
    let get = |key: &'static str| values.get(key).copied().ok_or(FticksError::Missing(key));
    let csi_raw = get("CSI")?;
    let csi: String = csi_raw
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect::<String>()
        .to_ascii_lowercase();
    if csi.len() != 12 || !csi.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(FticksError::BadCsi(csi_raw.to_owned()));
    }
    let visinst = get("VISINST")?;
    if !visinst.starts_with('1') {
        return Err(FticksError::BadVisinst(visinst.to_owned()));
    }
    let result = get("RESULT")?;
    if result != "OK" && result != "FAIL" {
        return Err(FticksError::BadResult(result.to_owned()));
    }
    let realm = get("REALM")?;
    if realm.is_empty() {
        return Err(FticksError::Empty("REALM"));
    }
    let viscountry = get("VISCOUNTRY")?;
    if viscountry.is_empty() {
        return Err(FticksError::Empty("VISCOUNTRY"));
    }
    Ok(Fticks {
        federation: federation.to_owned(),
        version: version.to_owned(),
        realm: realm.to_owned(),
        viscountry: viscountry.to_owned(),
        visinst: visinst.to_owned(),
        csi,
        pn: get("PN")?.to_owned(),
        result: result.to_owned(),
    })
}

/// An indexed record: the line's fields plus where and when it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Indexed {
    pub id: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub received: OffsetDateTime,
    pub host: String,
    #[serde(flatten)]
    pub record: Fticks,
}

/// A malformed line and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Malformed {
    pub id: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub received: OffsetDateTime,
    pub host: String,
    pub line: String,
    pub reason: String,
}

/// The F-TICKS index in the catalog's database.
#[derive(Clone)]
pub struct FticksIndex {
    good: sled::Tree,
    malformed: sled::Tree,
    next_id: Arc<AtomicU64>,
}

fn last_id(tree: &sled::Tree) -> u64 {
    tree.last()
        .ok()
        .flatten()
        .and_then(|(key, _)| <[u8; 8]>::try_from(key.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

impl FticksIndex {
    pub fn open(catalog: &crate::catalog::Catalog) -> anyhow::Result<FticksIndex> {
        let good = catalog.tree("fticks")?;
        let malformed = catalog.tree("fticks_malformed")?;
        let next = last_id(&good).max(last_id(&malformed)) + 1;
        Ok(FticksIndex {
            good,
            malformed,
            next_id: Arc::new(AtomicU64::new(next)),
        })
    }

    /// Parses and indexes the F-TICKS part of a syslog message, counting it in `counters`.
    pub fn ingest(&self, ctx: &FeedContext, line: &str, host: &str) {
        let counters = &ctx.stats.fticks;
        Counters::add(&counters.received);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let received = OffsetDateTime::now_utc();
        let stored = match parse(line) {
            Ok(record) => {
                let item = Indexed {
                    id,
                    received,
                    host: host.to_owned(),
                    record,
                };
                serde_json::to_vec(&item)
                    .map_err(anyhow::Error::from)
                    .and_then(|v| Ok(self.good.insert(id.to_be_bytes(), v)?))
                    .map(|_| &counters.stored)
            }
            Err(reason) => {
                ctx.stats.flag("fticks", host, format!("{reason}: {line}"));
                let item = Malformed {
                    id,
                    received,
                    host: host.to_owned(),
                    line: line.to_owned(),
                    reason: reason.to_string(),
                };
                serde_json::to_vec(&item)
                    .map_err(anyhow::Error::from)
                    .and_then(|v| Ok(self.malformed.insert(id.to_be_bytes(), v)?))
                    .map(|_| &counters.unparsed)
            }
        };
        match stored {
            Ok(counter) => Counters::add(counter),
            Err(err) => {
                Counters::add(&counters.errors);
                tracing::error!("cannot index an F-TICKS line: {err:#}");
            }
        }
    }

    /// Records matching `filter`, newest first.
    pub fn search(&self, filter: &Filter) -> anyhow::Result<Vec<Indexed>> {
        let limit = filter.limit.unwrap_or(1000).min(10_000);
        let mut found = Vec::new();
        for item in self.good.iter().rev() {
            let (_, value) = item?;
            let Ok(record) = serde_json::from_slice::<Indexed>(&value) else {
                continue;
            };
            let matches = |want: &Option<String>, have: &str| {
                want.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(have))
            };
            if matches(&filter.realm, &record.record.realm)
                && matches(&filter.viscountry, &record.record.viscountry)
                && matches(&filter.visinst, &record.record.visinst)
                && matches(&filter.result, &record.record.result)
            {
                found.push(record);
                if found.len() >= limit {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// Malformed lines, newest first.
    pub fn malformed(&self, limit: usize) -> anyhow::Result<Vec<Malformed>> {
        let mut found = Vec::new();
        for item in self.malformed.iter().rev().take(limit) {
            let (_, value) = item?;
            if let Ok(record) = serde_json::from_slice(&value) {
                found.push(record);
            }
        }
        Ok(found)
    }
}

/// Search filters of `GET /api/fticks` (all optional, case-insensitive exact matches).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub realm: Option<String>,
    pub viscountry: Option<String>,
    pub visinst: Option<String>,
    pub result: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Clone)]
struct ApiState {
    ctx: FeedContext,
    index: FticksIndex,
}

/// `GET /api/fticks?realm=&viscountry=&visinst=&result=&limit=` and
/// `GET /api/fticks/malformed` (admins only: the lines identify people's devices).
pub fn router(ctx: &FeedContext) -> anyhow::Result<Router> {
    let state = ApiState {
        ctx: ctx.clone(),
        index: ctx.fticks.clone(),
    };
    Ok(Router::new()
        .route("/api/fticks", get(search))
        .route("/api/fticks/malformed", get(malformed))
        .with_state(state))
}

async fn admin(state: &ApiState, headers: &HeaderMap) -> Result<(), Response> {
    match basic_auth(&state.ctx, headers).await {
        Ok(account) if account.admin => Ok(()),
        Ok(_) => Err((StatusCode::FORBIDDEN, "admins only\n").into_response()),
        Err(refusal) => Err(refusal),
    }
}

async fn search(
    State(state): State<ApiState>,
    headers: HeaderMap,
    filter: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(refusal) = admin(&state, &headers).await {
        return refusal;
    }
    let Query(filter) = match filter {
        Ok(filter) => filter,
        Err(err) => return (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    };
    match state.index.search(&filter) {
        Ok(records) => axum::Json(serde_json::json!({ "records": records })).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}\n")).into_response(),
    }
}

async fn malformed(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(refusal) = admin(&state, &headers).await {
        return refusal;
    }
    match state.index.malformed(1000) {
        Ok(records) => axum::Json(serde_json::json!({ "malformed": records })).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "F-TICKS/eduroam/1.0#REALM=example.org#VISCOUNTRY=CZ#VISINST=1example.cz#CSI=aa-bb-cc-dd-ee-ff#PN=3f2a#RESULT=OK#";

    #[test]
    fn parses_a_good_line() {
        let record = parse(GOOD).unwrap();
        assert_eq!(record.federation, "eduroam");
        assert_eq!(record.version, "1.0");
        assert_eq!(record.realm, "example.org");
        assert_eq!(record.csi, "aabbccddeeff");
        assert_eq!(record.result, "OK");
        assert_eq!(parse(GOOD.trim_end_matches('#')).unwrap(), record);
    }

    #[test]
    fn malformed_lines_say_why() {
        let cases = [
            ("F-TICKS/eduroam#REALM=a", "federation"),
            (&GOOD.replace("VISINST=1", "VISINST="), "VISINST"),
            (&GOOD.replace("CSI=aa-bb-cc-dd-ee-ff", "CSI="), "CSI"),
            (&GOOD.replace("RESULT=OK", "RESULT=MAYBE"), "RESULT"),
            (&GOOD.replace("#PN=3f2a", ""), "PN is missing"),
            (&format!("{GOOD}AP=x"), "unknown key AP"),
            (&format!("{GOOD}REALM=x"), "twice"),
            (&GOOD.replace("#PN=3f2a", "#PN"), "KEY=VALUE"),
            ("hello", "F-TICKS/"),
        ];
        for (line, needle) in cases {
            let err = parse(line).unwrap_err().to_string();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn never_panics(line in "(F-TICKS/)?[a-z]{0,5}(/[0-9.]{0,3})?(#[A-Z]{0,10}=?[-a-z0-9.:@]{0,12}){0,8}#?") {
            let _ = parse(&line);
        }

        #[test]
        fn any_valid_record_parses(realm in "[a-z]{1,8}\\.[a-z]{2}", country in "[A-Z]{2}", inst in "1[a-z]{1,8}", mac in "[0-9a-f]{12}", ok in any::<bool>()) {
            let result = if ok { "OK" } else { "FAIL" };
            let line = format!("F-TICKS/eduroam/1.0#REALM={realm}#VISCOUNTRY={country}#VISINST={inst}#CSI={mac}#PN=x#RESULT={result}#");
            let record = parse(&line).unwrap();
            prop_assert_eq!(record.realm, realm);
            prop_assert_eq!(record.csi, mac);
        }
    }
}
