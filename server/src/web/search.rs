//! Search: `/search?q=` (HTML) and `/api/search` (JSON, the listing's shape), answered from
//! the catalog, never by walking the disk. `q` is a glob when it has `*`, `?` or `[`
//! (matched against the file name, or the whole path when it has a `/`), else a
//! case-insensitive substring of the name. Filters: `path` (a folder, default the home),
//! `from` / `to` (RFC 3339, on the modification time), `source` (the agent, feed or user
//! that sent it), `min_size` / `max_size`. Paginated by cursor. Needs `l` on `path`; only
//! files the user may list are returned.
//!
//! The catalog answers from its in-memory file table (see `catalog/index.rs`): the name
//! test and the filters run on compact records, and only a page's entries are read from
//! sled, so one page may look at a whole million-entry catalog.

use aho_corasick::AhoCorasick;
use askama::Template;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use globset::GlobBuilder;
use logarchive_common::paths::ArchivePath;
use logarchive_common::perm::Perm;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::auth::CurrentUser;
use super::browse::{ListEntry, Listing, check_limit};
use super::error::WebError;
use super::{Params, WebState, access, url_encode};
use crate::catalog::IndexedFile;

/// Files looked at most for one page of results (the next page goes on from there): two
/// million in-memory records take about a tenth of a second, so a search over a million
/// entries that matches little still answers in one page.
const SCAN_LIMIT: usize = 2_000_000;

#[derive(Debug, Deserialize, Default, Clone)]
pub struct SearchQuery {
    #[serde(default)]
    pub q: String,
    pub path: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub source: Option<String>,
    #[serde(default, deserialize_with = "super::empty_as_none")]
    pub min_size: Option<u64>,
    #[serde(default, deserialize_with = "super::empty_as_none")]
    pub max_size: Option<u64>,
    #[serde(default, deserialize_with = "super::empty_as_none")]
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

fn parse_time(name: &str, value: Option<&str>) -> Result<Option<OffsetDateTime>, WebError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => OffsetDateTime::parse(text, &Rfc3339)
            .map(Some)
            .map_err(|err| {
                WebError::BadRequest(format!(
                    "{name}=\"{text}\" is not an RFC 3339 time like 2026-01-31T00:00:00Z: {err}"
                ))
            }),
    }
}

async fn run(
    state: &WebState,
    user: &CurrentUser,
    query: &SearchQuery,
) -> Result<Listing, WebError> {
    let limit = check_limit(query.limit)?;
    let raw_dir = query
        .path
        .clone()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| user.account.home.to_string());
    let dir = access::authorize(&user.account, Perm::List, &raw_dir)?;
    let from = parse_time("from", query.from.as_deref())?;
    let to = parse_time("to", query.to.as_deref())?;
    let q = query.q.trim().to_owned();
    let whole_path = q.contains('/');
    let glob = if q.contains(['*', '?', '[']) {
        let glob = GlobBuilder::new(&q)
            .case_insensitive(true)
            .literal_separator(whole_path)
            .build()
            .map_err(|err| WebError::BadRequest(format!("q=\"{q}\" is not a valid glob: {err}")))?;
        Some(glob.compile_matcher())
    } else {
        None
    };
    let needle = Needle::new(&q)?;
    let accept_key = move |key: &str| {
        let name = key.rsplit('/').next().unwrap_or(key);
        match &glob {
            Some(glob) if whole_path => glob.is_match(key),
            Some(glob) => glob.is_match(name),
            None => needle.is_in(name),
        }
    };
    let source = query.source.clone().filter(|s| !s.is_empty());
    let (min_size, max_size) = (query.min_size, query.max_size);
    let account = user.account.clone();
    let (from, to) = (
        from.map(OffsetDateTime::unix_timestamp),
        to.map(OffsetDateTime::unix_timestamp),
    );
    let accept = move |file: &IndexedFile<'_>| {
        from.is_none_or(|t| file.modified >= t)
            && to.is_none_or(|t| file.modified <= t)
            && min_size.is_none_or(|n| file.size >= n)
            && max_size.is_none_or(|n| file.size <= n)
            && source.as_deref().is_none_or(|s| file.source == Some(s))
            // Catalog paths parse (they were ArchivePaths); one that did not is not shown.
            && ArchivePath::parse(file.path)
                .is_ok_and(|path| access::check(&account, Perm::List, &path).is_ok())
    };
    let catalog = state.catalog.clone();
    let cursor = query.cursor.clone();
    let page = tokio::task::spawn_blocking(move || {
        catalog.search(
            &dir,
            cursor.as_deref(),
            limit,
            SCAN_LIMIT,
            accept_key,
            accept,
        )
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))??;
    Ok(Listing {
        entries: page.items.iter().map(ListEntry::from_catalog).collect(),
        next: page.next,
    })
}

/// A substring to find in names, ignoring case. A search tests every file's name, so
/// ASCII names (the usual case) are searched with a precompiled ASCII-case-insensitive
/// automaton (memchr-based prefilters, no allocation); other names are lower-cased.
struct Needle {
    lower: String,
    ascii: Option<AhoCorasick>,
}

impl Needle {
    fn new(text: &str) -> Result<Needle, WebError> {
        let lower = text.to_lowercase();
        let ascii = if lower.is_ascii() && !lower.is_empty() {
            let automaton = AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build([lower.as_str()])
                .map_err(|err| {
                    WebError::BadRequest(format!("q=\"{text}\" cannot be searched for: {err}"))
                })?;
            Some(automaton)
        } else {
            None
        };
        Ok(Needle { lower, ascii })
    }

    fn is_in(&self, name: &str) -> bool {
        if self.lower.is_empty() {
            return true;
        }
        match &self.ascii {
            Some(automaton) if name.is_ascii() => automaton.is_match(name),
            _ => name.to_lowercase().contains(&self.lower),
        }
    }
}

pub async fn api_search(
    State(state): State<WebState>,
    user: CurrentUser,
    Params(query): Params<SearchQuery>,
) -> Result<axum::Json<Listing>, WebError> {
    Ok(axum::Json(run(&state, &user, &query).await?))
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage<'a> {
    user: &'a CurrentUser,
    query: SearchQuery,
    path: String,
    searched: bool,
    listing: Listing,
    next_url: Option<String>,
}

impl SearchPage<'_> {
    fn size_text(&self, size: &Option<u64>) -> String {
        size.map_or(String::new(), |n| n.to_string())
    }
}

pub async fn page(
    State(state): State<WebState>,
    user: CurrentUser,
    Params(query): Params<SearchQuery>,
) -> Result<Response, WebError> {
    let searched = !query.q.is_empty()
        || query.source.as_deref().is_some_and(|s| !s.is_empty())
        || query.from.as_deref().is_some_and(|s| !s.is_empty())
        || query.to.as_deref().is_some_and(|s| !s.is_empty())
        || query.min_size.is_some()
        || query.max_size.is_some();
    let listing = if searched {
        run(&state, &user, &query).await?
    } else {
        Listing {
            entries: Vec::new(),
            next: None,
        }
    };
    let opt = |v: &Option<String>| url_encode(v.as_deref().unwrap_or(""));
    let next_url = listing.next.as_ref().map(|next| {
        format!(
            "/search?q={}&path={}&from={}&to={}&source={}{}{}&cursor={}",
            url_encode(&query.q),
            opt(&query.path),
            opt(&query.from),
            opt(&query.to),
            opt(&query.source),
            query
                .min_size
                .map_or(String::new(), |n| format!("&min_size={n}")),
            query
                .max_size
                .map_or(String::new(), |n| format!("&max_size={n}")),
            url_encode(next)
        )
    });
    let page = SearchPage {
        user: &user,
        path: query
            .path
            .clone()
            .unwrap_or_else(|| user.account.home.to_string()),
        query,
        searched,
        listing,
        next_url,
    };
    Ok(Html(page.render()?).into_response())
}

#[cfg(test)]
mod tests {
    use super::Needle;

    fn contains_ignoring_case(name: &str, needle: &str) -> bool {
        Needle::new(needle).unwrap().is_in(name)
    }

    #[test]
    fn substrings_ignore_case() {
        assert!(contains_ignoring_case("APP-notes.txt", "app"));
        assert!(contains_ignoring_case("x", ""));
        assert!(!contains_ignoring_case("db.log", "app"));
        assert!(contains_ignoring_case("Ärger.LOG", "ärger"));
        assert!(!contains_ignoring_case("ap", "app"));
        assert!(contains_ignoring_case("Ärger.LOG", "LOG"));
        assert!(contains_ignoring_case("x-ÄRGER", "ärger"));
    }
}
