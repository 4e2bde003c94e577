//! `/view/<path>` (and `/api/view?path=` as JSON): a text file, with line numbers. Pages go by byte range
//! (`offset`, [`PAGE`] bytes, cut at a line end), `tail=N` shows the last N lines, and
//! `follow=1` is the tail refreshed every few seconds (a meta refresh, so it works without
//! JavaScript). `.gz` files are shown decompressed. Bytes that are not UTF-8 are shown
//! lossily; everything is HTML-escaped by the template. Needs `r`.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use logarchive_common::paths::ArchivePath;
use logarchive_common::perm::Perm;
use serde::Deserialize;
use std::io::Write;
use tokio::io::AsyncReadExt;

use super::auth::CurrentUser;
use super::browse::{Crumb, crumbs};
use super::error::WebError;
use super::{Params, WebState, access, format, url_path};
use crate::archive::{ArchiveError, ArchiveReader, EntryKind};

/// Bytes shown per page.
pub const PAGE: u64 = 64 * 1024;
/// The most lines `tail` may ask for.
const MAX_TAIL: usize = 10_000;
/// How far back from the end `tail` reads.
const TAIL_WINDOW: u64 = 1024 * 1024;
/// The most a `.gz` is decompressed to answer one request.
const MAX_INFLATE: u64 = 512 * 1024 * 1024;

#[derive(Debug, Deserialize, Default)]
pub struct ViewQuery {
    /// The file, for `/api/view` (the page has it in its URL).
    path: Option<String>,
    offset: Option<u64>,
    tail: Option<usize>,
    follow: Option<u8>,
}

/// One line as shown: its number (`"12"`; `"+3"` counted from the page when the page
/// starts inside the file; `"-1"` for the last line of a tail) and its text.
#[derive(serde::Serialize)]
pub struct Line {
    pub number: String,
    pub text: String,
}

#[derive(Template)]
#[template(path = "view.html")]
struct ViewPage<'a> {
    user: &'a CurrentUser,
    path: String,
    path_url: String,
    crumbs: Vec<Crumb>,
    lines: Vec<Line>,
    info: String,
    prev_url: Option<String>,
    next_url: Option<String>,
    follow: bool,
    compressed: bool,
}

/// What a view shows: the lines of one page or tail, and where the pages around it start.
#[derive(serde::Serialize)]
pub struct TextPage {
    pub path: String,
    pub size: u64,
    pub lines: Vec<Line>,
    pub info: String,
    pub prev_offset: Option<u64>,
    pub next_offset: Option<u64>,
    #[serde(skip)]
    follow: bool,
    #[serde(skip)]
    compressed: bool,
}

/// `/api/view?path=&offset=&tail=`: the lines of the page as JSON.
pub async fn api_view(
    State(state): State<WebState>,
    user: CurrentUser,
    Params(query): Params<ViewQuery>,
) -> Result<axum::Json<TextPage>, WebError> {
    let raw = query
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| WebError::BadRequest("path= names the file to view".into()))?;
    let path = access::authorize(&user.account, Perm::Read, &raw)?;
    let entry = state.archive.stat(&path).await?;
    if entry.kind == EntryKind::Dir {
        return Err(WebError::BadRequest(format!(
            "{path} is a folder: list it with /api/list"
        )));
    }
    Ok(axum::Json(read_text(&state, entry, &query).await?))
}

pub async fn page(
    State(state): State<WebState>,
    user: CurrentUser,
    Path(raw): Path<String>,
    Params(query): Params<ViewQuery>,
) -> Result<Response, WebError> {
    let path = access::authorize(&user.account, Perm::Read, &raw)?;
    let entry = state.archive.stat(&path).await?;
    if entry.kind == EntryKind::Dir {
        return Ok(Redirect::to(&format!("/browse{}", url_path(path.as_str()))).into_response());
    }
    let text = read_text(&state, entry, &query).await?;
    let path_url = url_path(path.as_str());
    let page = ViewPage {
        user: &user,
        crumbs: crumbs(&path),
        path: path.to_string(),
        prev_url: text
            .prev_offset
            .map(|o| format!("/view{path_url}?offset={o}")),
        next_url: text
            .next_offset
            .map(|o| format!("/view{path_url}?offset={o}")),
        path_url,
        lines: text.lines,
        info: text.info,
        follow: text.follow,
        compressed: text.compressed,
    };
    Ok(Html(page.render()?).into_response())
}

async fn read_text(
    state: &WebState,
    entry: crate::archive::Entry,
    query: &ViewQuery,
) -> Result<TextPage, WebError> {
    let path = entry.path.clone();
    let compressed = path.as_str().ends_with(".gz");
    let follow = query.follow.unwrap_or(0) != 0;
    let tail = match (query.tail, follow) {
        (Some(n), _) if n == 0 || n > MAX_TAIL => {
            return Err(WebError::BadRequest(format!(
                "tail={n}: ask for 1 to {MAX_TAIL} lines"
            )));
        }
        (Some(n), _) => Some(n),
        (None, true) => Some(100),
        (None, false) => None,
    };
    let (lines, info, prev_offset, next_offset) = if let Some(n) = tail {
        let text = if compressed {
            inflate_tail(state, &path).await?
        } else {
            let start = entry.size.saturating_sub(TAIL_WINDOW);
            let bytes =
                read_range(state.archive.open(&path, start).await?, &path, TAIL_WINDOW).await?;
            // A window that starts mid-line drops its first, partial line.
            if start > 0 {
                bytes
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(&bytes[..], |i| &bytes[i + 1..])
                    .to_vec()
            } else {
                bytes
            }
        };
        let all: Vec<&[u8]> = split_lines(&text);
        let skip = all.len().saturating_sub(n);
        let lines = all[skip..]
            .iter()
            .enumerate()
            .map(|(i, line)| Line {
                number: format!("-{}", all.len() - skip - i),
                text: String::from_utf8_lossy(line).into_owned(),
            })
            .collect();
        let info = format!(
            "last {} lines of {}{}",
            all.len() - skip,
            format::size(entry.size),
            if follow { ", refreshed every 5 s" } else { "" }
        );
        (lines, info, None, None)
    } else {
        let offset = query.offset.unwrap_or(0);
        let (bytes, at_end) = if compressed {
            inflate_page(state, &path, offset).await?
        } else {
            if offset > entry.size || (offset == entry.size && offset > 0) {
                return Err(WebError::RangeNotSatisfiable { size: entry.size });
            }
            let bytes = read_range(state.archive.open(&path, offset).await?, &path, PAGE).await?;
            let at_end = offset + bytes.len() as u64 >= entry.size;
            (bytes, at_end)
        };
        // Cut at the last line end, so the next page starts on a new line.
        let shown = if at_end {
            bytes.len()
        } else {
            bytes
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(bytes.len(), |i| i + 1)
        };
        let first_line = if offset == 0 { Some(1) } else { None };
        let lines = split_lines(&bytes[..shown])
            .iter()
            .enumerate()
            .map(|(i, line)| Line {
                number: first_line.map_or(format!("+{}", i + 1), |first| (first + i).to_string()),
                text: String::from_utf8_lossy(line).into_owned(),
            })
            .collect();
        let next = offset + shown as u64;
        let info = format!(
            "bytes {offset}–{next} of {}{}",
            if compressed {
                "the decompressed file".to_owned()
            } else {
                format::size(entry.size)
            },
            if offset > 0 {
                " (line numbers count from this page)"
            } else {
                ""
            }
        );
        let prev = (offset > 0).then(|| offset.saturating_sub(PAGE));
        let next = (!at_end).then_some(next);
        (lines, info, prev, next)
    };
    Ok(TextPage {
        path: path.to_string(),
        size: entry.size,
        lines,
        info,
        prev_offset,
        next_offset,
        follow,
        compressed,
    })
}

fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .collect()
}

async fn read_range(
    reader: ArchiveReader,
    path: &ArchivePath,
    len: u64,
) -> Result<Vec<u8>, WebError> {
    let mut bytes = Vec::new();
    reader
        .take(len)
        .read_to_end(&mut bytes)
        .await
        .map_err(|source| ArchiveError::Io {
            path: path.clone(),
            source,
        })?;
    Ok(bytes)
}

/// Feeds the compressed file through `sink` chunk by chunk until it says stop.
async fn inflate(
    state: &WebState,
    path: &ArchivePath,
    mut sink: impl FnMut(&[u8], u64) -> bool,
) -> Result<(), WebError> {
    let mut reader = state.archive.open(path, 0).await?;
    let mut decoder = flate2::write::MultiGzDecoder::new(Vec::new());
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let bad = |err: std::io::Error| {
        WebError::BadRequest(format!("{path} is not a readable gzip file: {err}"))
    };
    loop {
        let n = reader
            .read(&mut buffer)
            .await
            .map_err(|source| ArchiveError::Io {
                path: path.clone(),
                source,
            })?;
        if n == 0 {
            decoder.try_finish().map_err(bad)?;
        } else {
            decoder.write_all(&buffer[..n]).map_err(bad)?;
        }
        let out = std::mem::take(decoder.get_mut());
        let before = total;
        total += out.len() as u64;
        if total > MAX_INFLATE {
            return Err(WebError::BadRequest(format!(
                "{path} decompresses to more than {}: download it instead",
                format::size(MAX_INFLATE)
            )));
        }
        if !sink(&out, before) || n == 0 {
            return Ok(());
        }
    }
}

/// A page of the decompressed bytes from `offset`; whether it reaches the end.
async fn inflate_page(
    state: &WebState,
    path: &ArchivePath,
    offset: u64,
) -> Result<(Vec<u8>, bool), WebError> {
    let mut page = Vec::new();
    let mut total = 0u64;
    inflate(state, path, |chunk, at| {
        total = at + chunk.len() as u64;
        let end = at + chunk.len() as u64;
        if end > offset {
            let from = offset.saturating_sub(at) as usize;
            page.extend_from_slice(&chunk[from..]);
        }
        (page.len() as u64) <= PAGE
    })
    .await?;
    if offset > 0 && offset >= total && page.is_empty() {
        return Err(WebError::RangeNotSatisfiable { size: total });
    }
    let at_end = page.len() as u64 <= PAGE;
    page.truncate(PAGE as usize);
    Ok((page, at_end))
}

/// The last [`TAIL_WINDOW`] decompressed bytes.
async fn inflate_tail(state: &WebState, path: &ArchivePath) -> Result<Vec<u8>, WebError> {
    let mut window: Vec<u8> = Vec::new();
    inflate(state, path, |chunk, _| {
        window.extend_from_slice(chunk);
        if window.len() as u64 > 2 * TAIL_WINDOW {
            let cut = window.len() - TAIL_WINDOW as usize;
            window.drain(..cut);
        }
        true
    })
    .await?;
    Ok(window)
}
