//! The archive: the one storage interface every part of the server goes through.
//!
//! FTP, the catalog, the web UI, the feeds and retention never touch files directly; they
//! call an [`Archive`]. Two back-ends implement it: the local filesystem
//! ([`fs::FsArchive`], the default) and an S3 bucket ([`s3::S3Archive`]); [`open`] picks the
//! one `[storage] kind` names.
//!
//! Invariants every back-end keeps:
//! - Paths are [`ArchivePath`]s, so nothing can name a place outside the archive, and a
//!   back-end never follows a link out of it.
//! - An upload is invisible under its final name until [`Upload::commit`]; an aborted
//!   upload leaves the archive as it was (an append is cut back to its old length).
//! - The top-level folder [`RESERVED`] belongs to the server (partial uploads, the upload
//!   journal) and is never listed or reachable from outside.

pub mod fs;
mod group_commit;
pub mod s3;
pub mod zero_copy;

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use logarchive_common::config::server::{LoadedServerConfig, Storage};
use logarchive_common::paths::ArchivePath;
use tokio::io::AsyncRead;

/// Opens the archive `server.toml` names: `<data_dir>/archive`, or the `[storage]` bucket.
pub async fn open(config: &LoadedServerConfig, durable: bool) -> io::Result<Arc<dyn Archive>> {
    match &config.storage {
        Storage::Fs => {
            let root = config.data_dir.join("archive");
            let archive = fs::FsArchive::open(&root, durable).map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("cannot open the archive at {}: {err}", root.display()),
                )
            })?;
            Ok(Arc::new(archive))
        }
        Storage::S3(settings) => Ok(Arc::new(s3::S3Archive::open(settings).await?)),
    }
}

/// Renews this server's claim of its name every [`s3::CLAIM_RENEW`] until shutdown (see
/// [`Archive::claim_writer_name`]); a claim another server took is logged as an error.
pub async fn keep_writer_name(
    archive: Arc<dyn Archive>,
    home: String,
    shutdown: crate::shutdown::Shutdown,
) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(s3::CLAIM_RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        if let Err(err) = archive.claim_writer_name(&home).await {
            tracing::error!("cannot renew the claim of the server name: {err}");
        }
    }
}

/// What [`Archive::follow_records`] remembers between calls, and what it found.
#[derive(Debug, Default)]
pub struct RecordBatch {
    /// Record objects already read (the back-end's own bookkeeping).
    pub cursor: HashSet<String>,
    /// The records found by the last call that other servers wrote.
    pub records: Vec<u8>,
}

/// The server's own top-level folder inside the archive.
pub const RESERVED: &str = ".logarchive";

/// True for paths inside the server's own folder.
pub fn is_reserved(path: &ArchivePath) -> bool {
    path.components().next() == Some(RESERVED)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
}

/// A file or folder as the archive sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: ArchivePath,
    pub kind: EntryKind,
    pub size: u64,
    pub modified: SystemTime,
    /// Unix permission bits (shown in listings; changed by SITE CHMOD).
    pub mode: u32,
}

/// How an upload relates to what is already stored under its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMode {
    /// A new file that replaces any old one when committed (STOR).
    Replace,
    /// A new file, refused where a file exists, at the start and at the commit (STOR
    /// announced by `ALLO` in a session that asked for `SITE NOREPLACE`).
    New,
    /// Keep the first `n` bytes of the stored file and continue from there (REST n, STOR).
    ResumeAt(u64),
    /// Add to the end of the stored file, creating it if missing (APPE).
    Append,
}

impl UploadMode {
    /// True when the upload is a whole new file (nothing of a stored one is kept).
    pub fn is_whole(self) -> bool {
        matches!(self, UploadMode::Replace | UploadMode::New)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}: no such file or folder")]
    NotFound(ArchivePath),
    #[error("{0}: already exists")]
    AlreadyExists(ArchivePath),
    #[error("{0}: is not a folder")]
    NotADir(ArchivePath),
    #[error("{0}: is a folder")]
    IsADir(ArchivePath),
    #[error("{0}: folder is not empty")]
    NotEmpty(ArchivePath),
    #[error("{path}: {reason}")]
    Refused { path: ArchivePath, reason: String },
    #[error("archive is out of space writing {0}")]
    Full(ArchivePath),
    #[error("{path}: {source}")]
    Io {
        path: ArchivePath,
        source: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, ArchiveError>;

/// A byte stream read from the archive.
pub type ArchiveReader = Box<dyn AsyncRead + Send + Sync + Unpin>;

/// A file read in owned chunks, for streaming responses: an `AsyncRead` has to copy
/// each byte once more, from its own buffer into the caller's.
#[async_trait]
pub trait ChunkReader: Send {
    /// The next chunk of at most `max` bytes; `None` at the end of the file.
    async fn next_chunk(&mut self, max: usize) -> io::Result<Option<bytes::Bytes>>;
}

/// Chunks through any [`ArchiveReader`] (the default for back-ends without their own).
struct ReaderChunks(ArchiveReader);

#[async_trait]
impl ChunkReader for ReaderChunks {
    async fn next_chunk(&mut self, max: usize) -> io::Result<Option<bytes::Bytes>> {
        use tokio::io::AsyncReadExt;
        let mut buffer = bytes::BytesMut::with_capacity(max);
        match self.0.read_buf(&mut buffer).await? {
            0 => Ok(None),
            _ => Ok(Some(buffer.freeze())),
        }
    }
}

/// What a committed upload left in the archive.
#[derive(Debug, Clone)]
pub struct Committed {
    pub entry: Entry,
    /// SHA-256 (hex) of the whole file when the back-end computes it as it stores
    /// (`store_new`, which holds the bytes; S3 uploads, where reading the object back
    /// would cost a second transfer); `None` leaves it to the catalog's hasher.
    pub sha256: Option<String>,
}

/// An upload in progress: hand it the bytes in chunks, then commit or abort.
///
/// Chunks are owned so that a back-end can write (and hash) them on another thread while
/// the caller receives the next one, without copying.
#[async_trait]
pub trait Upload: Send + Sync {
    /// Adds `chunk` to the upload; returns an empty buffer to fill next.
    async fn write(&mut self, chunk: Vec<u8>) -> Result<Vec<u8>>;
    /// Takes the rest of the upload straight from a plain TCP data connection, inside the
    /// kernel (`splice`), until the peer's end of data; the bytes taken. `None`: this
    /// back-end or this upload cannot, and the caller reads and calls [`Upload::write`].
    async fn receive_from(&mut self, _socket: zero_copy::DataSocket) -> Option<Result<u64>> {
        None
    }
    /// Makes the upload durable and visible under its final name.
    async fn commit(self: Box<Self>) -> Result<Committed>;
    /// Drops what was written; the archive is left as before the upload.
    async fn abort(self: Box<Self>);
}

/// The storage interface of the archive.
#[async_trait]
pub trait Archive: Send + Sync + std::fmt::Debug + 'static {
    async fn stat(&self, path: &ArchivePath) -> Result<Entry>;
    /// The entries of a folder (never the reserved folder).
    async fn list(&self, dir: &ArchivePath) -> Result<Vec<Entry>>;
    /// Reads a file from byte `offset`.
    async fn open(&self, path: &ArchivePath, offset: u64) -> Result<ArchiveReader>;
    /// The local file itself, positioned at byte `offset`, for back-ends whose files are
    /// local (so a download can `sendfile` it); `Ok(None)` for the others.
    async fn open_local(&self, _path: &ArchivePath, _offset: u64) -> Result<Option<std::fs::File>> {
        Ok(None)
    }
    /// Reads a file from byte `offset` in owned chunks (web downloads).
    async fn open_chunks(&self, path: &ArchivePath, offset: u64) -> Result<Box<dyn ChunkReader>> {
        Ok(Box::new(ReaderChunks(self.open(path, offset).await?)))
    }
    /// Starts an upload; the parent folder must exist.
    async fn begin_upload(&self, path: &ArchivePath, mode: UploadMode) -> Result<Box<dyn Upload>>;
    async fn create_dir(&self, path: &ArchivePath) -> Result<()>;
    /// Creates a folder and its missing parents.
    async fn create_dir_all(&self, path: &ArchivePath) -> Result<()>;
    async fn remove_file(&self, path: &ArchivePath) -> Result<()>;
    /// Removes an empty folder.
    async fn remove_dir(&self, path: &ArchivePath) -> Result<()>;
    /// Renames a file or folder, replacing a file at `to`.
    async fn rename(&self, from: &ArchivePath, to: &ArchivePath) -> Result<()>;
    async fn set_modified(&self, path: &ArchivePath, time: SystemTime) -> Result<()>;
    async fn set_mode(&self, path: &ArchivePath, mode: u32) -> Result<()>;
    /// Every file below `dir`, recursively (reserved folder excluded).
    async fn walk(&self, dir: &ArchivePath) -> Result<Vec<Entry>>;
    /// Stores `bytes` as a new file, atomically (all or nothing under the final name) and
    /// never replacing one: `AlreadyExists` when `path` is taken. The parent must exist.
    async fn store_new(&self, path: &ArchivePath, bytes: Vec<u8>) -> Result<Committed>;
    /// Appends a record to a server-owned log under the reserved folder (e.g. the upload
    /// journal); `name` is a plain file name.
    async fn append_record(&self, name: &str, record: &[u8]) -> Result<()>;
    /// Reads the server-owned logs whose names start with `prefix`, oldest name first.
    async fn read_records(&self, prefix: &str) -> Result<Vec<u8>>;
    /// For archives several servers share: puts into `batch.records` the records (names
    /// starting with `prefix`) that other servers wrote since the last call with this
    /// `batch`, and returns true. False: nobody else writes here (the default).
    async fn follow_records(&self, _prefix: &str, _batch: &mut RecordBatch) -> Result<bool> {
        Ok(false)
    }
    /// A server-owned file that every server sharing the archive sees (users.toml):
    /// `Ok(None)` when it is not there. Back-ends that are never shared keep none.
    async fn read_shared(&self, _name: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
    /// Replaces a shared server-owned file (see [`Archive::read_shared`]).
    async fn write_shared(&self, _name: &str, _bytes: Vec<u8>) -> Result<()> {
        Ok(())
    }
    /// On an archive several servers share, this server's name (`[storage] server_name`):
    /// every file a feed grows carries it, so each such file has exactly one writer (S3
    /// has no append and Garage no conditional write to share one safely). `None`: no
    /// other server writes here.
    fn writer_name(&self) -> Option<&str> {
        None
    }
    /// Claims [`Archive::writer_name`] for this running server, or renews the claim;
    /// refuses when another running server holds the name. `home` names this server's
    /// data dir on this host: a claim left with the same `home` is an earlier run of this
    /// very server (the catalog's lock shows it is gone). Nothing to do when unshared.
    async fn claim_writer_name(&self, _home: &str) -> Result<()> {
        Ok(())
    }
    /// Gives the claim up at a clean stop, so the name is free at once for the next start.
    async fn release_writer_name(&self) {}
    /// Merges the server-owned record objects older than `age` (see
    /// [`Archive::append_record`]) into fewer; how many objects went. Back-ends that keep
    /// each log in one file have nothing to merge.
    async fn compact_records(&self, _age: std::time::Duration) -> Result<usize> {
        Ok(0)
    }
    /// Removes uploads an earlier run left unfinished; how many. Only `run` calls this, once
    /// it holds the catalog lock.
    async fn discard_partials(&self) -> Result<usize> {
        Ok(0)
    }
}
