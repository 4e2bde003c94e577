//! `/download/<path>`: a file streamed from the archive with `Range` (one range: 206; past
//! the end: 416), `ETag` / `Last-Modified`, `If-None-Match` (304) and `If-Range`, and a
//! `Content-Disposition` that names any file correctly (RFC 6266: an ASCII fallback plus
//! `filename*=UTF-8''...`). A folder, or a selection in it (`select=name`, repeatable),
//! comes as `?format=zip` or `?format=tar.gz`, built on a blocking thread while it is sent:
//! each file is read in chunks into a bounded channel, so memory stays flat whatever the
//! size. The file list comes from the catalog, each file needs `r`, and the total is capped
//! by `[web] max_archive_size`. Needs `r`.

use std::io::{Read, Write};
use std::time::UNIX_EPOCH;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use logarchive_common::paths::ArchivePath;
use logarchive_common::perm::Perm;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::auth::CurrentUser;
use super::error::WebError;
use super::{WebState, access, format};
use crate::archive::{Archive, ArchiveError, Entry, EntryKind};

/// Bytes read per chunk of a folder archive.
const CHUNK: usize = 256 * 1024;
/// Bytes read per chunk of a file download: each read is a hop to the blocking pool, so
/// larger chunks mean fewer hops (1 MiB, as FTP downloads use).
const FILE_CHUNK: usize = 1 << 20;

pub async fn get(
    State(state): State<WebState>,
    user: CurrentUser,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let path = access::authorize(&user.account, Perm::Read, &raw)?;
    let params = parse_query(query.as_deref().unwrap_or(""));
    let format = params
        .iter()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.as_str());
    let entry = state.archive.stat(&path).await?;
    match (entry.kind, format) {
        (EntryKind::File, None) => file(&state, entry, &headers).await,
        (EntryKind::File, Some(_)) => Err(WebError::BadRequest(format!(
            "{path} is a file: download it without ?format"
        ))),
        (EntryKind::Dir, None) => Err(WebError::BadRequest(format!(
            "{path} is a folder: add ?format=zip or ?format=tar.gz"
        ))),
        (EntryKind::Dir, Some(format)) => {
            let kind = match format {
                "zip" => Packing::Zip,
                "tar.gz" | "tgz" => Packing::TarGz,
                other => {
                    return Err(WebError::BadRequest(format!(
                        "format \"{other}\" is neither zip nor tar.gz"
                    )));
                }
            };
            let selected: Vec<&str> = params
                .iter()
                .filter(|(k, _)| k == "select")
                .map(|(_, v)| v.as_str())
                .collect();
            folder(
                &state,
                &user,
                &path,
                kind,
                &selected,
                method == Method::HEAD,
            )
            .await
        }
    }
}

/// `a=b&c=d` with percent-decoding; repeated keys kept.
fn parse_query(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// `attachment; filename="ascii"; filename*=UTF-8''percent-encoded`.
pub fn content_disposition(name: &str) -> HeaderValue {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded =
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string();
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

fn etag(entry: &Entry) -> String {
    let nanos = entry
        .modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("\"{:x}-{:x}\"", entry.size, nanos)
}

/// The one byte range asked for, if any and if it applies. `Err` = not satisfiable.
fn range(
    headers: &HeaderMap,
    size: u64,
    tag: &str,
    modified: &str,
) -> Result<Option<(u64, u64)>, WebError> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    // If-Range: the range only applies to the version the client has.
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && if_range != tag
        && if_range != modified
    {
        return Ok(None);
    }
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        // Several ranges: send the whole file (allowed by RFC 9110).
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = WebError::RangeNotSatisfiable { size };
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix
                .parse()
                .map_err(|_| WebError::RangeNotSatisfiable { size })?;
            if n == 0 || size == 0 {
                return Err(unsatisfiable);
            }
            (size.saturating_sub(n), size - 1)
        }
        (first, last) => {
            let start: u64 = first
                .parse()
                .map_err(|_| WebError::RangeNotSatisfiable { size })?;
            let end: u64 = if last.is_empty() {
                size.saturating_sub(1)
            } else {
                last.parse::<u64>()
                    .map_err(|_| WebError::RangeNotSatisfiable { size })?
                    .min(size.saturating_sub(1))
            };
            if start >= size || end < start {
                return Err(unsatisfiable);
            }
            (start, end)
        }
    };
    Ok(Some((start, end)))
}

async fn file(state: &WebState, entry: Entry, headers: &HeaderMap) -> Result<Response, WebError> {
    let tag = etag(&entry);
    let modified = format::http_date(entry.modified);
    let mut response_headers = HeaderMap::new();
    let name = entry.path.file_name().unwrap_or("download");
    response_headers.insert(header::CONTENT_DISPOSITION, content_disposition(name));
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(&tag) {
        response_headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&modified) {
        response_headers.insert(header::LAST_MODIFIED, value);
    }
    if let Some(none_match) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && (none_match.trim() == "*"
            || none_match
                .split(',')
                .any(|t| t.trim().trim_start_matches("W/") == tag))
    {
        return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
    }
    let (status, start, len) = match range(headers, entry.size, &tag, &modified)? {
        Some((start, end)) => {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{}", entry.size))
            {
                response_headers.insert(header::CONTENT_RANGE, value);
            }
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        None => (StatusCode::OK, 0, entry.size),
    };
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let reader = state.archive.open_chunks(&entry.path, start).await?;
    let path = entry.path.clone();
    // Owned chunks go to hyper as they are: one copy per byte, from the file.
    let stream =
        futures_util::stream::unfold((reader, path, len), |(mut reader, path, left)| async move {
            if left == 0 {
                return None;
            }
            let max = left.min(FILE_CHUNK as u64) as usize;
            match reader.next_chunk(max).await {
                Ok(None) => None,
                Ok(Some(chunk)) => {
                    let left = left.saturating_sub(chunk.len() as u64);
                    Some((Ok(chunk), (reader, path, left)))
                }
                Err(err) => {
                    tracing::warn!(path = %path, "download cut: {err}");
                    // Ends the stream after the error: hyper cuts the response.
                    Some((Err(err), (reader, path, 0)))
                }
            }
        });
    Ok((status, response_headers, Body::from_stream(stream)).into_response())
}

#[derive(Clone, Copy)]
enum Packing {
    Zip,
    TarGz,
}

async fn folder(
    state: &WebState,
    user: &CurrentUser,
    dir: &ArchivePath,
    packing: Packing,
    selected: &[&str],
    head_only: bool,
) -> Result<Response, WebError> {
    let mut chosen = Vec::new();
    for name in selected {
        chosen.push(dir.join(name)?);
    }
    let account = user.account.clone();
    let catalog = state.catalog.clone();
    let base = dir.clone();
    let files = tokio::task::spawn_blocking(move || {
        let mut files = Vec::new();
        for entry in catalog.under(&base)? {
            let picked = chosen.is_empty() || chosen.iter().any(|c| entry.path.starts_with(c));
            if picked && access::check(&account, Perm::Read, &entry.path).is_ok() {
                files.push(entry.path);
            }
        }
        Ok::<_, crate::catalog::CatalogError>(files)
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))??;
    if files.is_empty() {
        return Err(WebError::NotFound(format!("{dir}: no files to pack here")));
    }
    // Sizes as stored now (the catalog may lag an append).
    let mut entries = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for path in files {
        match state.archive.stat(&path).await {
            Ok(entry) if entry.kind == EntryKind::File => {
                total += entry.size;
                entries.push(entry);
            }
            Ok(_) | Err(ArchiveError::NotFound(_)) => {}
            Err(err) => return Err(err.into()),
        }
    }
    if let Some(cap) = state.config.max_archive_size.0
        && total > cap
    {
        return Err(WebError::Forbidden(format!(
            "{dir} holds {} in {} files, over the limit of {} for one download ([web] max_archive_size)",
            format::size(total),
            entries.len(),
            format::size(cap)
        )));
    }
    let (extension, kind) = match packing {
        Packing::Zip => ("zip", "application/zip"),
        Packing::TarGz => ("tar.gz", "application/gzip"),
    };
    let name = format!("{}.{extension}", dir.file_name().unwrap_or("archive"));
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
        (header::CONTENT_DISPOSITION, content_disposition(&name)),
    ];
    if head_only {
        // HEAD: the headers, without packing anything.
        return Ok(headers.into_response());
    }
    let root_name = dir.file_name().unwrap_or("archive").to_owned();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let archive = state.archive.clone();
    let base = dir.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let sink = ChannelWriter { tx: tx.clone() };
        let result = match packing {
            Packing::TarGz => {
                write_tar_gz(sink, &handle, archive.as_ref(), &base, &root_name, &entries)
            }
            Packing::Zip => write_zip(sink, &handle, archive.as_ref(), &base, &root_name, &entries),
        };
        if let Err(err) = result {
            tracing::warn!(dir = %base, "folder download cut: {err}");
            let _ = tx.blocking_send(Err(err));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// A `Write` that hands its bytes to the response body (blocking while the client is slow).
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
            })?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An archive file read from a blocking thread, exactly `remaining` bytes long (zeros if
/// it shrank meanwhile, cut if it grew), so headers written before stay true.
struct FileReader<'a> {
    handle: &'a tokio::runtime::Handle,
    reader: crate::archive::ArchiveReader,
    remaining: u64,
    source_done: bool,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining.min(CHUNK as u64) as usize);
        let n = if self.source_done {
            buf[..want].fill(0);
            want
        } else {
            let n = self.handle.block_on(self.reader.read(&mut buf[..want]))?;
            if n == 0 {
                self.source_done = true;
                buf[..want].fill(0);
                want
            } else {
                n
            }
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn open_blocking<'a>(
    handle: &'a tokio::runtime::Handle,
    archive: &dyn Archive,
    entry: &Entry,
) -> std::io::Result<FileReader<'a>> {
    let reader = handle
        .block_on(archive.open(&entry.path, 0))
        .map_err(std::io::Error::other)?;
    Ok(FileReader {
        handle,
        reader,
        remaining: entry.size,
        source_done: false,
    })
}

/// `root/relative/path` for the entry inside the packed file.
fn member_name(base: &ArchivePath, root: &str, entry: &Entry) -> String {
    let relative = entry
        .path
        .as_str()
        .strip_prefix(base.as_str())
        .unwrap_or(entry.path.as_str())
        .trim_start_matches('/');
    format!("{root}/{relative}")
}

fn write_tar_gz(
    sink: ChannelWriter,
    handle: &tokio::runtime::Handle,
    archive: &dyn Archive,
    base: &ArchivePath,
    root: &str,
    entries: &[Entry],
) -> std::io::Result<()> {
    let gzip = flate2::write::GzEncoder::new(
        std::io::BufWriter::with_capacity(CHUNK, sink),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gzip);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(entry.size);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(
            entry
                .modified
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        );
        let reader = open_blocking(handle, archive, entry)?;
        // `append_data` writes GNU long-name records for paths over 100 bytes.
        tar.append_data(&mut header, member_name(base, root, entry), reader)?;
    }
    let gzip = tar.into_inner()?;
    let mut buffered = gzip.finish()?;
    buffered.flush()
}

/// A stored (uncompressed) zip64, streamed: each member's CRC and sizes follow its data in
/// a data descriptor, and the central directory comes last. Zip64 throughout (8-byte sizes
/// and offsets), so folders over 4 GiB or 65,535 files work the same as small ones. Logs
/// compress well, but the usual reason to pick zip is a desktop double-click; tar.gz is
/// there for size.
fn write_zip(
    sink: ChannelWriter,
    handle: &tokio::runtime::Handle,
    archive: &dyn Archive,
    base: &ArchivePath,
    root: &str,
    entries: &[Entry],
) -> std::io::Result<()> {
    const VERSION: u16 = 45; // zip64
    const UNKNOWN: u32 = u32::MAX; // "see the zip64 extra field"
    // Flags: bit 3 = sizes in a data descriptor, bit 11 = the name is UTF-8.
    const FLAGS: u16 = (1 << 3) | (1 << 11);
    let mut out = std::io::BufWriter::with_capacity(CHUNK, sink);
    let mut central = Vec::new();
    let mut offset: u64 = 0;
    let mut buffer = vec![0u8; CHUNK];
    for entry in entries {
        let name = member_name(base, root, entry);
        let (time, date) = dos_time(entry.modified);
        let mut local = Vec::with_capacity(50 + name.len());
        local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        local.extend_from_slice(&VERSION.to_le_bytes());
        local.extend_from_slice(&FLAGS.to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes()); // stored
        local.extend_from_slice(&time.to_le_bytes());
        local.extend_from_slice(&date.to_le_bytes());
        local.extend_from_slice(&0u32.to_le_bytes()); // CRC: in the descriptor
        local.extend_from_slice(&UNKNOWN.to_le_bytes());
        local.extend_from_slice(&UNKNOWN.to_le_bytes());
        local.extend_from_slice(&(name.len() as u16).to_le_bytes());
        local.extend_from_slice(&20u16.to_le_bytes());
        local.extend_from_slice(name.as_bytes());
        // Zip64 extra field: both sizes, zero here, known after the data.
        local.extend_from_slice(&1u16.to_le_bytes());
        local.extend_from_slice(&16u16.to_le_bytes());
        local.extend_from_slice(&[0u8; 16]);
        out.write_all(&local)?;
        let mut reader = open_blocking(handle, archive, entry)?;
        let mut crc = crc32fast::Hasher::new();
        loop {
            let n = reader.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            crc.update(&buffer[..n]);
            out.write_all(&buffer[..n])?;
        }
        let crc = crc.finalize();
        let mut descriptor = Vec::with_capacity(24);
        descriptor.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        descriptor.extend_from_slice(&crc.to_le_bytes());
        descriptor.extend_from_slice(&entry.size.to_le_bytes());
        descriptor.extend_from_slice(&entry.size.to_le_bytes());
        out.write_all(&descriptor)?;
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&VERSION.to_le_bytes()); // made by
        central.extend_from_slice(&VERSION.to_le_bytes()); // needed
        central.extend_from_slice(&FLAGS.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&time.to_le_bytes());
        central.extend_from_slice(&date.to_le_bytes());
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&UNKNOWN.to_le_bytes());
        central.extend_from_slice(&UNKNOWN.to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&28u16.to_le_bytes()); // extra
        central.extend_from_slice(&[0u8; 6]); // comment, disk, internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&UNKNOWN.to_le_bytes()); // offset
        central.extend_from_slice(name.as_bytes());
        central.extend_from_slice(&1u16.to_le_bytes());
        central.extend_from_slice(&24u16.to_le_bytes());
        central.extend_from_slice(&entry.size.to_le_bytes());
        central.extend_from_slice(&entry.size.to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        offset += local.len() as u64 + entry.size + descriptor.len() as u64;
    }
    out.write_all(&central)?;
    let count = entries.len() as u64;
    let central_size = central.len() as u64;
    let zip64_end_at = offset + central_size;
    let mut end = Vec::with_capacity(98);
    // Zip64 end of central directory record, its locator, then the classic end record
    // pointing at them.
    end.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
    end.extend_from_slice(&44u64.to_le_bytes());
    end.extend_from_slice(&VERSION.to_le_bytes());
    end.extend_from_slice(&VERSION.to_le_bytes());
    end.extend_from_slice(&[0u8; 8]); // disk numbers
    end.extend_from_slice(&count.to_le_bytes());
    end.extend_from_slice(&count.to_le_bytes());
    end.extend_from_slice(&central_size.to_le_bytes());
    end.extend_from_slice(&offset.to_le_bytes());
    end.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
    end.extend_from_slice(&0u32.to_le_bytes());
    end.extend_from_slice(&zip64_end_at.to_le_bytes());
    end.extend_from_slice(&1u32.to_le_bytes());
    end.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    end.extend_from_slice(&[0u8; 4]); // disk numbers
    end.extend_from_slice(&u16::MAX.to_le_bytes());
    end.extend_from_slice(&u16::MAX.to_le_bytes());
    end.extend_from_slice(&UNKNOWN.to_le_bytes());
    end.extend_from_slice(&UNKNOWN.to_le_bytes());
    end.extend_from_slice(&0u16.to_le_bytes());
    out.write_all(&end)?;
    out.flush()
}

/// MS-DOS time and date (local = UTC here), as zip stores them.
fn dos_time(time: std::time::SystemTime) -> (u16, u16) {
    let t = time::OffsetDateTime::from(time);
    if t.year() < 1980 {
        return (0, (1 << 5) | 1);
    }
    let clock = ((t.hour() as u16) << 11) | ((t.minute() as u16) << 5) | (t.second() as u16 / 2);
    let date =
        (((t.year() - 1980) as u16) << 9) | ((u8::from(t.month()) as u16) << 5) | t.day() as u16;
    (clock, date)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(range: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        map
    }

    #[test]
    fn ranges() {
        let r = |spec: &str| range(&headers(spec), 100, "\"t\"", "d");
        assert_eq!(r("bytes=0-9").unwrap(), Some((0, 9)));
        assert_eq!(r("bytes=90-").unwrap(), Some((90, 99)));
        assert_eq!(r("bytes=-10").unwrap(), Some((90, 99)));
        assert_eq!(r("bytes=95-500").unwrap(), Some((95, 99)));
        assert!(r("bytes=100-").is_err());
        assert!(r("bytes=5-2").is_err());
        assert!(r("bytes=x-2").is_err());
        assert_eq!(r("bytes=0-1,5-6").unwrap(), None);
        assert_eq!(r("items=0-1").unwrap(), None);
    }

    #[test]
    fn dispositions() {
        let v = content_disposition("a \"b\"\\é<x>.log");
        assert_eq!(
            v.to_str().unwrap(),
            "attachment; filename=\"a _b___<x>.log\"; filename*=UTF-8''a%20%22b%22%5C%C3%A9%3Cx%3E%2Elog"
        );
    }
}
