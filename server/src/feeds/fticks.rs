//! F-TICKS: roaming-authentication log lines (eduroam RADIUS servers send them over
//! syslog), parsed and indexed so they can be searched by realm, visited country, visited
//! institution and result.
//!
//! Grammar: `"F-TICKS/" federation "/" version 1*("#" KEY "=" value) ["#"]`, with exactly
//! the keys REALM, VISCOUNTRY, VISINST, CSI, PN and RESULT (the old importer's rules: CSI
//! is a MAC normalised to 12 hex digits, VISINST starts with `1`, RESULT is OK or FAIL).
//! Good lines go to the catalog tree `fticks` (with lookup trees per searchable field),
//! malformed ones with their reason to `fticks_malformed`; neither is ever dropped (the
//! raw line is in the syslog file too).
//! The index is derived data: sled writes it back within half a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::FromRef;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::sources::Event;
use super::{Counters, FeedContext};
use crate::web::WebState;
use crate::web::auth::CurrentUser;

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

/// The F-TICKS index in the catalog's database: records by id (`fticks`), malformed lines
/// by id (`fticks_malformed`), and one lookup tree per searchable field
/// (`fticks_by_<field>`, key: lowercase value, NUL, id), so a search by realm, country,
/// institution or result reads only the matching records.
/// The trees are taken from the catalog for each operation, never kept, so the index
/// follows the catalog when it reopens its database.
#[derive(Clone)]
pub struct FticksIndex {
    catalog: crate::catalog::Catalog,
    next_id: Arc<AtomicU64>,
}

struct Trees {
    good: sled::Tree,
    malformed: sled::Tree,
    /// realm, viscountry, visinst, result (the order of [`Filter::lookups`]).
    by: [sled::Tree; 4],
}

const LOOKUPS: [&str; 4] = ["realm", "viscountry", "visinst", "result"];

/// The key of `id` under `value` in a lookup tree.
fn lookup_key(value: &str, id: u64) -> Vec<u8> {
    let mut key = value.to_lowercase().into_bytes();
    key.push(0);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

impl Fticks {
    fn lookups(&self) -> [&str; 4] {
        [&self.realm, &self.viscountry, &self.visinst, &self.result]
    }
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
        let index = FticksIndex {
            catalog: catalog.clone(),
            next_id: Arc::new(AtomicU64::new(0)),
        };
        let trees = index.trees()?;
        let next = last_id(&trees.good).max(last_id(&trees.malformed)) + 1;
        index.next_id.store(next, Ordering::Relaxed);
        Ok(index)
    }

    fn trees(&self) -> anyhow::Result<Trees> {
        let by = LOOKUPS.map(|field| self.catalog.tree(&format!("fticks_by_{field}")));
        let [realm, viscountry, visinst, result] = by;
        Ok(Trees {
            good: self.catalog.tree("fticks")?,
            malformed: self.catalog.tree("fticks_malformed")?,
            by: [realm?, viscountry?, visinst?, result?],
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
                self.insert(&item).map(|()| &counters.stored)
            }
            Err(reason) => {
                let why = format!("{reason}: {line}");
                let shown = format!("malformed F-TICKS: {why}");
                ctx.stats
                    .sources
                    .record("syslog", host, None, Event::Malformed, 1, Some(&shown));
                ctx.stats.flag("fticks", host, why);
                let item = Malformed {
                    id,
                    received,
                    host: host.to_owned(),
                    line: line.to_owned(),
                    reason: reason.to_string(),
                };
                serde_json::to_vec(&item)
                    .map_err(anyhow::Error::from)
                    .and_then(|v| Ok(self.trees()?.malformed.insert(id.to_be_bytes(), v)?))
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

    /// Stores a good record and its lookup keys.
    pub(crate) fn insert(&self, item: &Indexed) -> anyhow::Result<()> {
        let trees = self.trees()?;
        trees
            .good
            .insert(item.id.to_be_bytes(), serde_json::to_vec(item)?)?;
        for (tree, value) in trees.by.iter().zip(item.record.lookups()) {
            tree.insert(lookup_key(value, item.id), &[])?;
        }
        Ok(())
    }

    /// Records matching `filter`, newest first. With a field filter, only the records
    /// under its lookup key are read (the first given of realm, institution, country,
    /// result); without, all are scanned.
    pub fn search(&self, filter: &Filter) -> anyhow::Result<Vec<Indexed>> {
        let trees = self.trees()?;
        let limit = filter.limit.unwrap_or(1000).min(10_000);
        let wanted = filter.lookups();
        let matches = |record: &Indexed| {
            wanted
                .iter()
                .zip(record.record.lookups())
                .all(|(want, have)| want.is_none_or(|w| w.eq_ignore_ascii_case(have)))
        };
        let mut found = Vec::new();
        let mut keep = |value: &[u8]| {
            if let Ok(record) = serde_json::from_slice::<Indexed>(value)
                && matches(&record)
            {
                found.push(record);
            }
            found.len() < limit
        };
        // Most selective first: realm, visinst, viscountry, result.
        let lookup = [0usize, 2, 1, 3]
            .into_iter()
            .find_map(|at| wanted[at].map(|value| (&trees.by[at], value)));
        match lookup {
            Some((tree, value)) => {
                let prefix = lookup_key(value, 0);
                let prefix = &prefix[..prefix.len() - 8];
                for key in tree.scan_prefix(prefix).keys().rev() {
                    let key = key?;
                    let Some(id) = key.len().checked_sub(8).map(|at| &key[at..]) else {
                        continue;
                    };
                    // A record expired by retention may leave its lookup key for a moment.
                    if let Some(value) = trees.good.get(id)?
                        && !keep(&value)
                    {
                        break;
                    }
                }
            }
            None => {
                for item in trees.good.iter().rev() {
                    let (_, value) = item?;
                    if !keep(&value) {
                        break;
                    }
                }
            }
        }
        Ok(found)
    }

    /// Removes records and malformed lines received before `oldest`, with their lookup
    /// keys; returns how many went.
    pub fn prune(&self, oldest: OffsetDateTime) -> anyhow::Result<usize> {
        let trees = self.trees()?;
        let mut removed = 0;
        for item in trees.good.iter() {
            let (key, value) = item?;
            let Ok(record) = serde_json::from_slice::<Indexed>(&value) else {
                continue;
            };
            if record.received < oldest {
                for (tree, value) in trees.by.iter().zip(record.record.lookups()) {
                    tree.remove(lookup_key(value, record.id))?;
                }
                trees.good.remove(key)?;
                removed += 1;
            }
        }
        for item in trees.malformed.iter() {
            let (key, value) = item?;
            let Ok(line) = serde_json::from_slice::<Malformed>(&value) else {
                continue;
            };
            if line.received < oldest {
                trees.malformed.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Malformed lines, newest first.
    pub fn malformed(&self, limit: usize) -> anyhow::Result<Vec<Malformed>> {
        let mut found = Vec::new();
        for item in self.trees()?.malformed.iter().rev().take(limit) {
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

impl Filter {
    /// The field filters in the order of the lookup trees.
    fn lookups(&self) -> [Option<&str>; 4] {
        [
            self.realm.as_deref(),
            self.viscountry.as_deref(),
            self.visinst.as_deref(),
            self.result.as_deref(),
        ]
    }
}

#[derive(Clone)]
struct ApiState {
    index: FticksIndex,
    web: WebState,
}

impl FromRef<ApiState> for WebState {
    fn from_ref(state: &ApiState) -> WebState {
        state.web.clone()
    }
}

/// `GET /api/fticks?realm=&viscountry=&visinst=&result=&limit=` and
/// `GET /api/fticks/malformed` (admins only: the lines identify people's devices), with
/// the web UI's logins (session cookie or HTTP Basic).
pub fn router(ctx: &FeedContext, web: &WebState) -> anyhow::Result<Router> {
    let state = ApiState {
        index: ctx.fticks.clone(),
        web: web.clone(),
    };
    Ok(Router::new()
        .route("/api/fticks", get(search))
        .route("/api/fticks/malformed", get(malformed))
        .layer(axum::middleware::map_response(
            crate::web::error::jsonify_api_errors,
        ))
        .with_state(state))
}

async fn search(
    State(state): State<ApiState>,
    user: CurrentUser,
    filter: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(refusal) = user.require_admin() {
        return refusal.into_response();
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

async fn malformed(State(state): State<ApiState>, user: CurrentUser) -> Response {
    if let Err(refusal) = user.require_admin() {
        return refusal.into_response();
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

    #[tokio::test]
    async fn searches_use_the_lookup_trees_and_prune_cleans_them() {
        let dir = tempfile::tempdir().unwrap();
        let archive: Arc<dyn crate::archive::Archive> =
            Arc::new(crate::archive::fs::FsArchive::open(&dir.path().join("a"), false).unwrap());
        let catalog = crate::catalog::Catalog::open(&dir.path().join("c"), archive).unwrap();
        let index = FticksIndex::open(&catalog).unwrap();
        let now = OffsetDateTime::now_utc();
        let cases = [
            (1, "a.org", "OK", 10),
            (2, "b.org", "FAIL", 1),
            (3, "a.org", "FAIL", 1),
            (4, "A.ORG", "OK", 0),
        ];
        for (id, realm, result, days) in cases {
            let line = GOOD
                .replace("example.org", realm)
                .replace("RESULT=OK", &format!("RESULT={result}"));
            let item = Indexed {
                id,
                received: now - time::Duration::days(days),
                host: "h".into(),
                record: parse(&line).unwrap(),
            };
            index.insert(&item).unwrap();
        }
        let ids = |filter: Filter| -> Vec<u64> {
            index
                .search(&filter)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect()
        };
        let realm = |r: &str| Some(r.to_owned());
        assert_eq!(
            ids(Filter {
                realm: realm("a.org"),
                ..Filter::default()
            }),
            [4, 3, 1]
        );
        assert_eq!(
            ids(Filter {
                realm: realm("a.org"),
                result: realm("fail"),
                ..Filter::default()
            }),
            [3]
        );
        assert_eq!(
            ids(Filter {
                result: realm("OK"),
                ..Filter::default()
            }),
            [4, 1]
        );
        assert_eq!(
            ids(Filter {
                limit: Some(2),
                ..Filter::default()
            }),
            [4, 3]
        );
        assert_eq!(index.prune(now - time::Duration::days(5)).unwrap(), 1);
        assert_eq!(
            ids(Filter {
                realm: realm("a.org"),
                ..Filter::default()
            }),
            [4, 3]
        );
        assert_eq!(index.trees().unwrap().by[0].len(), 3);
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
