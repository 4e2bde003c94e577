//! Folders: `/browse/<path>` (HTML) and `/api/list` (JSON), both answered from the catalog
//! by [`Catalog::children`](crate::catalog::Catalog::children), a page at a time with a
//! cursor, so a folder of 100,000 files opens as fast as one of ten. Sorting by name
//! follows the cursor; sorting by size or time reads the folder (up to [`MAX_SORTED`]
//! entries) and pages by offset. Needs `l` on the folder.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use logarchive_common::paths::ArchivePath;
use logarchive_common::perm::Perm;
use serde::{Deserialize, Serialize};

use super::auth::CurrentUser;
use super::error::WebError;
use super::{Params, WebState, access, format, url_encode, url_path};
use crate::archive::EntryKind;
use crate::catalog::Child;

/// The largest page a client may ask for.
pub const MAX_LIMIT: usize = 1000;
pub const DEFAULT_LIMIT: usize = 100;
/// Folders larger than this can only be sorted by name.
pub const MAX_SORTED: usize = 20_000;
/// Keys read at most for one filtered page (the next page goes on from there).
const SCAN_LIMIT: usize = 50_000;

#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    pub path: Option<String>,
    pub cursor: Option<String>,
    #[serde(default, deserialize_with = "super::empty_as_none")]
    pub limit: Option<usize>,
    pub sort: Option<String>,
    pub order: Option<String>,
    pub filter: Option<String>,
}

/// One entry of a listing or search result: the API's contract shape.
#[derive(Debug, Serialize)]
pub struct ListEntry {
    pub name: String,
    pub path: String,
    pub size: Option<u64>,
    pub modified: Option<String>,
    pub kind: &'static str,
    pub source: Option<String>,
}

impl ListEntry {
    pub fn url_path(&self) -> String {
        url_path(&self.path)
    }
    pub fn size_text(&self) -> String {
        self.size.map(format::size).unwrap_or_default()
    }
    pub fn modified_text(&self) -> String {
        self.modified
            .clone()
            .unwrap_or_default()
            .replace('T', " ")
            .replace('Z', "")
    }
    pub fn source_text(&self) -> &str {
        self.source.as_deref().unwrap_or("")
    }
    pub fn is_dir(&self) -> bool {
        self.kind == "dir"
    }
    pub fn from_catalog(entry: &crate::catalog::CatalogEntry) -> ListEntry {
        ListEntry {
            name: entry.path.file_name().unwrap_or("").to_owned(),
            path: entry.path.to_string(),
            size: Some(entry.size),
            modified: Some(format::rfc3339(entry.modified)),
            kind: "file",
            source: entry.uploader.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub entries: Vec<ListEntry>,
    pub next: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum SortKey {
    Name,
    Size,
    Modified,
}

pub fn check_limit(limit: Option<usize>) -> Result<usize, WebError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(WebError::BadRequest(format!(
            "limit {n} is out of range: ask for 1 to {MAX_LIMIT} entries"
        ))),
    }
}

/// One page of `dir` for `user`; the shared body of the page and the API.
async fn list(
    state: &WebState,
    user: &CurrentUser,
    dir: &ArchivePath,
    query: &ListQuery,
) -> Result<Listing, WebError> {
    access::check(&user.account, Perm::List, dir)?;
    let limit = check_limit(query.limit)?;
    let sort = match query.sort.as_deref() {
        None | Some("") | Some("name") => SortKey::Name,
        Some("size") => SortKey::Size,
        Some("modified") => SortKey::Modified,
        Some(other) => {
            return Err(WebError::BadRequest(format!(
                "cannot sort by \"{other}\": use name, size or modified"
            )));
        }
    };
    let descending = match query.order.as_deref() {
        None | Some("") | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(WebError::BadRequest(format!(
                "order \"{other}\" is neither asc nor desc"
            )));
        }
    };
    let filter = query.filter.as_deref().unwrap_or("").to_lowercase();
    let accept = move |name: &str| filter.is_empty() || name.to_lowercase().contains(&filter);
    let to_entry = |child: Child| match child {
        Child::Dir(name) => ListEntry {
            path: dir.join(&name).map(|p| p.to_string()).unwrap_or_default(),
            name,
            size: None,
            modified: None,
            kind: "dir",
            source: None,
        },
        Child::File(entry) => ListEntry::from_catalog(&entry),
    };
    let listing = if sort == SortKey::Name && !descending {
        let page =
            state
                .catalog
                .children(dir, query.cursor.as_deref(), limit, SCAN_LIMIT, accept)?;
        Listing {
            entries: page.items.into_iter().map(to_entry).collect(),
            next: page.next,
        }
    } else {
        let offset: usize = match query.cursor.as_deref() {
            None => 0,
            Some(c) => c
                .strip_prefix('@')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    WebError::BadRequest("the cursor does not belong to this listing".into())
                })?,
        };
        let page = state
            .catalog
            .children(dir, None, MAX_SORTED, usize::MAX, accept)?;
        if page.next.is_some() {
            return Err(WebError::BadRequest(format!(
                "{dir} has more than {MAX_SORTED} entries: sort it by name, or use search"
            )));
        }
        let mut entries: Vec<ListEntry> = page.items.into_iter().map(to_entry).collect();
        match sort {
            SortKey::Name => entries.sort_by(|a, b| a.name.cmp(&b.name)),
            SortKey::Size => entries.sort_by_key(|e| e.size),
            SortKey::Modified => entries.sort_by(|a, b| a.modified.cmp(&b.modified)),
        }
        if descending {
            entries.reverse();
        }
        let total = entries.len();
        let entries: Vec<ListEntry> = entries.into_iter().skip(offset).take(limit).collect();
        let next = (offset + limit < total).then(|| format!("@{}", offset + limit));
        Listing { entries, next }
    };
    // An empty first page: is it an empty folder, a file, or nothing at all?
    if listing.entries.is_empty()
        && query.cursor.is_none()
        && query.filter.as_deref().unwrap_or("").is_empty()
        && !dir.is_root()
    {
        let entry = state.archive.stat(dir).await?;
        if entry.kind == EntryKind::File {
            return Err(WebError::BadRequest(format!(
                "{dir} is a file, not a folder"
            )));
        }
    }
    Ok(listing)
}

pub async fn api_list(
    State(state): State<WebState>,
    user: CurrentUser,
    Params(query): Params<ListQuery>,
) -> Result<axum::Json<Listing>, WebError> {
    let raw = query
        .path
        .clone()
        .unwrap_or_else(|| user.account.home.to_string());
    let dir = access::parse(&raw)?;
    Ok(axum::Json(list(&state, &user, &dir, &query).await?))
}

/// A link in the breadcrumbs.
pub struct Crumb {
    pub name: String,
    pub url: String,
}

pub fn crumbs(path: &ArchivePath) -> Vec<Crumb> {
    let mut all = vec![Crumb {
        name: "/".into(),
        url: "/browse/".into(),
    }];
    let mut at = ArchivePath::root();
    for name in path.components() {
        let Ok(next) = at.join(name) else { break };
        at = next;
        all.push(Crumb {
            name: name.to_owned(),
            url: format!("/browse{}", url_path(at.as_str())),
        });
    }
    all
}

#[derive(Template)]
#[template(path = "browse.html")]
struct BrowsePage<'a> {
    user: &'a CurrentUser,
    dir: String,
    dir_url: String,
    crumbs: Vec<Crumb>,
    listing: Listing,
    filter: String,
    sort: String,
    order: String,
    next_url: Option<String>,
    may_read: bool,
}

impl BrowsePage<'_> {
    /// The link that sorts by `key`, flipping the order when it is the current key.
    fn sort_url(&self, key: &str) -> String {
        let order = if self.sort == key && self.order != "desc" {
            "desc"
        } else {
            "asc"
        };
        format!(
            "/browse{}?sort={key}&order={order}&filter={}",
            self.dir_url,
            url_encode(&self.filter)
        )
    }
}

/// `/browse/`: the user's home (the root itself for a user whose home is `/`).
pub async fn page_root(
    State(state): State<WebState>,
    user: CurrentUser,
    Params(query): Params<ListQuery>,
) -> Result<Response, WebError> {
    if !user.account.home.is_root() {
        return Ok(home_redirect(&user));
    }
    render(&state, &user, ArchivePath::root(), query).await
}

fn home_redirect(user: &CurrentUser) -> Response {
    Redirect::to(&format!("/browse{}", url_path(user.account.home.as_str()))).into_response()
}

pub async fn page(
    State(state): State<WebState>,
    user: CurrentUser,
    Path(raw): Path<String>,
    Params(query): Params<ListQuery>,
) -> Result<Response, WebError> {
    let dir = access::parse(&raw)?;
    if dir.is_root() && !user.account.home.is_root() {
        return Ok(home_redirect(&user));
    }
    render(&state, &user, dir, query).await
}

async fn render(
    state: &WebState,
    user: &CurrentUser,
    dir: ArchivePath,
    query: ListQuery,
) -> Result<Response, WebError> {
    let listing = list(state, user, &dir, &query).await?;
    let sort = query.sort.clone().unwrap_or_else(|| "name".into());
    let order = query.order.clone().unwrap_or_else(|| "asc".into());
    let filter = query.filter.clone().unwrap_or_default();
    let dir_url = url_path(dir.as_str());
    let next_url = listing.next.as_ref().map(|next| {
        format!(
            "/browse{dir_url}?cursor={}&limit={}&sort={}&order={}&filter={}",
            url_encode(next),
            query.limit.unwrap_or(DEFAULT_LIMIT),
            url_encode(&sort),
            url_encode(&order),
            url_encode(&filter)
        )
    });
    let page = BrowsePage {
        user,
        may_read: access::check(&user.account, Perm::Read, &dir).is_ok(),
        dir: dir.to_string(),
        dir_url,
        crumbs: crumbs(&dir),
        listing,
        filter,
        sort,
        order,
        next_url,
    };
    Ok(Html(page.render()?).into_response())
}
