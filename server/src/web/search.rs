//! Search: `/search?q=` (HTML) and `/api/search` (JSON, the listing's shape), answered from
//! the catalog, never by walking the disk. `q` is a glob when it has `*`, `?` or `[`
//! (matched against the file name, or the whole path when it has a `/`), else a
//! case-insensitive substring of the name. Filters: `path` (a folder, default the home),
//! `from` / `to` (RFC 3339, on the modification time), `source` (the agent, feed or user
//! that sent it), `min_size` / `max_size`. Paginated by cursor. Needs `l` on `path`; only
//! files the user may list are returned.

use askama::Template;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use globset::GlobBuilder;
use logarchive_common::perm::Perm;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::auth::CurrentUser;
use super::browse::{ListEntry, Listing, check_limit};
use super::error::WebError;
use super::{Params, WebState, access, url_encode};

/// Catalog keys read at most for one page of results (the next page goes on from there).
const SCAN_LIMIT: usize = 200_000;

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
    let needle = q.to_lowercase();
    let accept_key = move |key: &str| {
        let name = key.rsplit('/').next().unwrap_or(key);
        match &glob {
            Some(glob) if whole_path => glob.is_match(key),
            Some(glob) => glob.is_match(name),
            None => contains_ignoring_case(name, &needle),
        }
    };
    let source = query.source.clone().filter(|s| !s.is_empty());
    let (min_size, max_size) = (query.min_size, query.max_size);
    let account = user.account.clone();
    let accept = move |entry: &crate::catalog::CatalogEntry| {
        from.is_none_or(|t| entry.modified >= t)
            && to.is_none_or(|t| entry.modified <= t)
            && min_size.is_none_or(|n| entry.size >= n)
            && max_size.is_none_or(|n| entry.size <= n)
            && source
                .as_ref()
                .is_none_or(|s| entry.uploader.as_deref() == Some(s.as_str()))
            && access::check(&account, Perm::List, &entry.path).is_ok()
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

/// Whether `name` contains `needle` (already lower case), ignoring case; without
/// allocating for ASCII names, the usual case, since a search tests every key.
fn contains_ignoring_case(name: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if name.is_ascii() && needle.is_ascii() {
        let (hay, pin) = (name.as_bytes(), needle.as_bytes());
        return hay.windows(pin.len()).any(|w| w.eq_ignore_ascii_case(pin));
    }
    name.to_lowercase().contains(needle)
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
    use super::contains_ignoring_case;

    #[test]
    fn substrings_ignore_case() {
        assert!(contains_ignoring_case("APP-notes.txt", "app"));
        assert!(contains_ignoring_case("x", ""));
        assert!(!contains_ignoring_case("db.log", "app"));
        assert!(contains_ignoring_case("Ärger.LOG", "ärger"));
        assert!(!contains_ignoring_case("ap", "app"));
    }
}
