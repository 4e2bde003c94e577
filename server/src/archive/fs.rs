//! The archive on the local filesystem: `<data_dir>/archive`.
//!
//! Uploads are written under `<root>/.logarchive/partial/` (same filesystem, so the final
//! rename is atomic), fsynced, and renamed into place on commit. Appends go to the file
//! itself and are cut back to the old length on abort. No operation follows a symbolic
//! link: a link anywhere on the way is refused, so a link placed in the tree by hand cannot
//! lead outside it.

use std::fs;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use logarchive_common::paths::ArchivePath;

use super::group_commit::GroupCommit;
use super::{
    Archive, ArchiveError, ArchiveReader, ChunkReader, Committed, Entry, EntryKind, RESERVED,
    Result, Upload, UploadMode, zero_copy,
};

#[derive(Debug, Clone)]
pub struct FsArchive {
    root: PathBuf,
    /// fsync every upload before it is committed (and so acknowledged).
    durable: bool,
    /// Journal appends of concurrent sessions share their fsyncs.
    records: Arc<GroupCommit>,
}

impl FsArchive {
    /// Opens (creating if needed) the archive at `root`. With `durable`, every upload is
    /// fsynced before it is committed, so an acknowledged upload survives a power cut.
    pub fn open(root: &Path, durable: bool) -> io::Result<FsArchive> {
        fs::create_dir_all(root.join(RESERVED).join("partial"))?;
        fs::create_dir_all(root.join(RESERVED).join("journal"))?;
        Ok(FsArchive {
            root: root.to_owned(),
            durable,
            records: Arc::new(GroupCommit::default()),
        })
    }

    /// Removes partial uploads left by an earlier run: they were never committed, so nobody
    /// waits for them. Only the server calls this, at start, once it holds the catalog lock
    /// (so no other server is writing here).
    fn discard_partial_files(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join(RESERVED).join("partial"))? {
            if fs::remove_file(entry?.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The local path of `path`, after checking that no existing component on the way is a
    /// symbolic link.
    fn local(&self, path: &ArchivePath) -> Result<PathBuf> {
        let mut local = self.root.clone();
        for name in path.components() {
            local.push(name);
            match fs::symlink_metadata(&local) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(ArchiveError::Refused {
                        path: path.clone(),
                        reason: "a symbolic link is on the way; links are not followed".into(),
                    });
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // Whatever exists below a missing component does not exist either.
        Ok(self.root.join(path.as_str().trim_start_matches('/')))
    }

    fn partial_path(&self) -> PathBuf {
        let name: u128 = rand::random();
        self.root
            .join(RESERVED)
            .join("partial")
            .join(format!("{name:032x}"))
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.root.join(RESERVED).join("journal").join(name)
    }
}

/// Maps an I/O error about `path` to an archive error.
fn map_err(path: &ArchivePath, err: io::Error) -> ArchiveError {
    let path = path.clone();
    match err.kind() {
        io::ErrorKind::NotFound => ArchiveError::NotFound(path),
        io::ErrorKind::AlreadyExists => ArchiveError::AlreadyExists(path),
        io::ErrorKind::NotADirectory => ArchiveError::NotADir(path),
        io::ErrorKind::IsADirectory => ArchiveError::IsADir(path),
        io::ErrorKind::DirectoryNotEmpty => ArchiveError::NotEmpty(path),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => ArchiveError::Full(path),
        _ => ArchiveError::Io { path, source: err },
    }
}

fn entry(path: ArchivePath, meta: &fs::Metadata) -> Entry {
    Entry {
        path,
        kind: if meta.is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::File
        },
        size: if meta.is_dir() { 0 } else { meta.len() },
        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        mode: meta.permissions().mode() & 0o7777,
    }
}

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`), in one step:
/// `renameat2(RENAME_NOREPLACE)`, or a hard link and an unlink where the filesystem has no
/// such rename (the link fails where `to` exists just the same).
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(err) => Err(err.into()),
    }
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    path: &ArchivePath,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| {
            Err(ArchiveError::Io {
                path: path.clone(),
                source: io::Error::other(join),
            })
        })
}

/// The parent folder must exist and be a folder.
fn require_parent(archive: &FsArchive, path: &ArchivePath) -> Result<()> {
    let parent = path.parent().unwrap_or_else(ArchivePath::root);
    let local = archive.local(&parent)?;
    match fs::metadata(&local) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(ArchiveError::NotADir(parent)),
        Err(err) => Err(map_err(&parent, err)),
    }
}

impl FsArchive {
    /// Opens a file for reading at `offset`, with the checks every read makes.
    async fn open_std(&self, path: &ArchivePath, offset: u64) -> Result<fs::File> {
        let this = self.clone();
        let owned = path.clone();
        blocking(path, move || {
            let local = this.local(&owned)?;
            let mut file = fs::File::open(&local).map_err(|e| map_err(&owned, e))?;
            let meta = file.metadata().map_err(|e| map_err(&owned, e))?;
            if meta.is_dir() {
                return Err(ArchiveError::IsADir(owned));
            }
            if offset > meta.len() {
                return Err(ArchiveError::Refused {
                    path: owned,
                    reason: format!(
                        "offset {offset} is beyond the end of the file ({} bytes)",
                        meta.len()
                    ),
                });
            }
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| map_err(&owned, e))?;
            Ok(file)
        })
        .await
    }
}

/// A file read in chunks, each read on the blocking pool straight into the chunk that is
/// handed on (one copy from the page cache, one hop per chunk).
struct FileChunks {
    /// Taken for the duration of each read on the blocking pool.
    file: Option<fs::File>,
}

#[async_trait]
impl ChunkReader for FileChunks {
    async fn next_chunk(&mut self, max: usize) -> io::Result<Option<bytes::Bytes>> {
        let Some(mut file) = self.file.take() else {
            return Ok(None);
        };
        let (file, read) = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buffer = vec![0u8; max];
            let mut filled = 0;
            // A whole chunk, unless the file ends first: fewer, fuller chunks to send.
            let read = loop {
                match file.read(&mut buffer[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == buffer.len() {
                            break Ok(());
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => break Err(err),
                }
            };
            buffer.truncate(filled);
            (file, read.map(|()| buffer))
        })
        .await
        .map_err(io::Error::other)?;
        let buffer = read?;
        if buffer.is_empty() {
            return Ok(None);
        }
        self.file = Some(file);
        Ok(Some(bytes::Bytes::from(buffer)))
    }
}

#[async_trait]
impl Archive for FsArchive {
    async fn stat(&self, path: &ArchivePath) -> Result<Entry> {
        let this = self.clone();
        let path = path.clone();
        blocking(&path.clone(), move || {
            let local = this.local(&path)?;
            let meta = fs::metadata(&local).map_err(|e| map_err(&path, e))?;
            Ok(entry(path, &meta))
        })
        .await
    }

    async fn list(&self, dir: &ArchivePath) -> Result<Vec<Entry>> {
        let this = self.clone();
        let dir = dir.clone();
        blocking(&dir.clone(), move || {
            let local = this.local(&dir)?;
            let mut entries = Vec::new();
            for item in fs::read_dir(&local).map_err(|e| map_err(&dir, e))? {
                let item = item.map_err(|e| map_err(&dir, e))?;
                let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                    continue; // not UTF-8: not something the archive wrote
                };
                if dir.is_root() && name == RESERVED {
                    continue;
                }
                let Ok(path) = dir.join(&name) else { continue };
                match item.metadata() {
                    Ok(meta) if !meta.file_type().is_symlink() => entries.push(entry(path, &meta)),
                    _ => {}
                }
            }
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(entries)
        })
        .await
    }

    async fn open(&self, path: &ArchivePath, offset: u64) -> Result<ArchiveReader> {
        let file = self.open_std(path, offset).await?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn open_local(&self, path: &ArchivePath, offset: u64) -> Result<Option<fs::File>> {
        self.open_std(path, offset).await.map(Some)
    }

    async fn open_chunks(&self, path: &ArchivePath, offset: u64) -> Result<Box<dyn ChunkReader>> {
        let file = self.open_std(path, offset).await?;
        Ok(Box::new(FileChunks { file: Some(file) }))
    }

    async fn begin_upload(&self, path: &ArchivePath, mode: UploadMode) -> Result<Box<dyn Upload>> {
        let this = self.clone();
        let owned = path.clone();
        let (file, target, durable) = blocking(path, move || {
            require_parent(&this, &owned)?;
            let local = this.local(&owned)?;
            let existing = match fs::metadata(&local) {
                Ok(meta) if meta.is_dir() => return Err(ArchiveError::IsADir(owned)),
                Ok(meta) => Some((meta.len(), meta.modified().ok())),
                Err(err) if err.kind() == io::ErrorKind::NotFound => None,
                Err(err) => return Err(map_err(&owned, err)),
            };
            let (existing, old_modified) = match existing {
                Some((len, modified)) => (Some(len), modified),
                None => (None, None),
            };
            if mode == UploadMode::New && existing.is_some() {
                return Err(ArchiveError::AlreadyExists(owned));
            }
            let in_place = match (mode, existing) {
                (UploadMode::Append, _) => true,
                (UploadMode::ResumeAt(n), Some(len)) if n == len => true,
                (UploadMode::ResumeAt(n), len) if n > len.unwrap_or(0) => {
                    return Err(ArchiveError::Refused {
                        path: owned,
                        reason: format!(
                            "cannot resume at byte {n}: the stored file has {} bytes",
                            len.unwrap_or(0)
                        ),
                    });
                }
                _ => false,
            };
            if in_place {
                let file = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&local)
                    .map_err(|e| map_err(&owned, e))?;
                let target = Target::InPlace {
                    path: owned,
                    local,
                    old_len: existing,
                    old_modified,
                };
                return Ok((file, target, this.durable));
            }
            let partial = this.partial_path();
            if let UploadMode::ResumeAt(_) = mode {
                // Keep the first n bytes: copy (copy_file_range, cheap on most filesystems)
                // then cut, so the stored file stays whole until the commit.
                fs::copy(&local, &partial).map_err(|e| map_err(&owned, e))?;
            }
            let mut file = fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(!matches!(mode, UploadMode::ResumeAt(_)))
                .open(&partial)
                .map_err(|e| map_err(&owned, e))?;
            if let UploadMode::ResumeAt(n) = mode {
                file.set_len(n).map_err(|e| map_err(&owned, e))?;
                file.seek(SeekFrom::Start(n))
                    .map_err(|e| map_err(&owned, e))?;
            }
            Ok((
                file,
                Target::Replace {
                    path: owned,
                    partial,
                    local,
                    no_replace: mode == UploadMode::New,
                },
                this.durable,
            ))
        })
        .await?;
        Ok(Box::new(FsUpload::start(file, target, durable)))
    }

    async fn create_dir(&self, path: &ArchivePath) -> Result<()> {
        let this = self.clone();
        let path = path.clone();
        blocking(&path.clone(), move || {
            require_parent(&this, &path)?;
            fs::create_dir(this.local(&path)?).map_err(|e| map_err(&path, e))
        })
        .await
    }

    async fn create_dir_all(&self, path: &ArchivePath) -> Result<()> {
        let this = self.clone();
        let path = path.clone();
        blocking(&path.clone(), move || {
            fs::create_dir_all(this.local(&path)?).map_err(|e| map_err(&path, e))
        })
        .await
    }

    async fn remove_file(&self, path: &ArchivePath) -> Result<()> {
        let this = self.clone();
        let path = path.clone();
        blocking(&path.clone(), move || {
            let local = this.local(&path)?;
            if fs::metadata(&local)
                .map_err(|e| map_err(&path, e))?
                .is_dir()
            {
                return Err(ArchiveError::IsADir(path));
            }
            fs::remove_file(local).map_err(|e| map_err(&path, e))
        })
        .await
    }

    async fn remove_dir(&self, path: &ArchivePath) -> Result<()> {
        let this = self.clone();
        let path = path.clone();
        blocking(&path.clone(), move || {
            fs::remove_dir(this.local(&path)?).map_err(|e| map_err(&path, e))
        })
        .await
    }

    async fn rename(&self, from: &ArchivePath, to: &ArchivePath) -> Result<()> {
        let this = self.clone();
        let (from, to) = (from.clone(), to.clone());
        blocking(&from.clone(), move || {
            if to.starts_with(&from) && to != from {
                return Err(ArchiveError::Refused {
                    path: to,
                    reason: format!("cannot move {from} into itself"),
                });
            }
            let source = this.local(&from)?;
            fs::symlink_metadata(&source).map_err(|e| map_err(&from, e))?;
            require_parent(&this, &to)?;
            let target = this.local(&to)?;
            if fs::metadata(&target).is_ok_and(|meta| meta.is_dir()) {
                return Err(ArchiveError::AlreadyExists(to));
            }
            fs::rename(source, target).map_err(|e| map_err(&to, e))
        })
        .await
    }

    async fn set_modified(&self, path: &ArchivePath, time: SystemTime) -> Result<()> {
        let this = self.clone();
        let path = path.clone();
        blocking(&path.clone(), move || {
            let file = fs::File::open(this.local(&path)?).map_err(|e| map_err(&path, e))?;
            file.set_modified(time).map_err(|e| map_err(&path, e))
        })
        .await
    }

    async fn set_mode(&self, path: &ArchivePath, mode: u32) -> Result<()> {
        let this = self.clone();
        let path = path.clone();
        blocking(&path.clone(), move || {
            fs::set_permissions(this.local(&path)?, fs::Permissions::from_mode(mode & 0o777))
                .map_err(|e| map_err(&path, e))
        })
        .await
    }

    async fn walk(&self, dir: &ArchivePath) -> Result<Vec<Entry>> {
        let this = self.clone();
        let dir = dir.clone();
        blocking(&dir.clone(), move || {
            let mut files = Vec::new();
            let mut pending = vec![dir];
            while let Some(dir) = pending.pop() {
                let local = this.local(&dir)?;
                for item in fs::read_dir(&local).map_err(|e| map_err(&dir, e))? {
                    let item = item.map_err(|e| map_err(&dir, e))?;
                    let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                        continue;
                    };
                    if dir.is_root() && name == RESERVED {
                        continue;
                    }
                    let Ok(path) = dir.join(&name) else { continue };
                    let Ok(meta) = item.metadata() else { continue };
                    if meta.is_dir() {
                        pending.push(path);
                    } else if meta.is_file() {
                        files.push(entry(path, &meta));
                    }
                }
            }
            files.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(files)
        })
        .await
    }

    async fn store_new(&self, path: &ArchivePath, bytes: Vec<u8>) -> Result<Committed> {
        use sha2::Digest;
        use std::io::Write;
        let this = self.clone();
        let path = path.clone();
        blocking(&path.clone(), move || {
            require_parent(&this, &path)?;
            let local = this.local(&path)?;
            let partial = this.partial_path();
            let written = (|| {
                let mut file = fs::File::create(&partial)?;
                file.write_all(&bytes)?;
                if this.durable {
                    file.sync_data()?;
                }
                // A hard link fails when the name exists, so nothing is ever replaced.
                fs::hard_link(&partial, &local)
            })();
            let _ = fs::remove_file(&partial);
            written.map_err(|e| map_err(&path, e))?;
            if this.durable
                && let Some(folder) = local.parent()
            {
                fs::File::open(folder)
                    .and_then(|folder| folder.sync_all())
                    .map_err(|e| map_err(&path, e))?;
            }
            let meta = fs::metadata(&local).map_err(|e| map_err(&path, e))?;
            Ok(Committed {
                entry: entry(path, &meta),
                sha256: Some(hex::encode(sha2::Sha256::digest(&bytes))),
            })
        })
        .await
    }

    async fn discard_partials(&self) -> Result<usize> {
        let this = self.clone();
        let path = ArchivePath::root();
        blocking(&path.clone(), move || {
            this.discard_partial_files().map_err(|e| map_err(&path, e))
        })
        .await
    }

    async fn append_record(&self, name: &str, record: &[u8]) -> Result<()> {
        let local = self.record_path(name);
        let record = record.to_vec();
        let records = self.records.clone();
        let path = ArchivePath::root();
        blocking(&path.clone(), move || {
            records.append(local, record).map_err(|e| map_err(&path, e))
        })
        .await
    }

    async fn read_records(&self, prefix: &str) -> Result<Vec<u8>> {
        let dir = self.root.join(RESERVED).join("journal");
        let prefix = prefix.to_owned();
        let path = ArchivePath::root();
        blocking(&path.clone(), move || {
            let mut names: Vec<PathBuf> = fs::read_dir(&dir)
                .map_err(|e| map_err(&path, e))?
                .filter_map(|item| item.ok().map(|item| item.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix))
                })
                .collect();
            names.sort();
            let mut all = Vec::new();
            for name in names {
                all.extend(fs::read(name).map_err(|e| map_err(&path, e))?);
            }
            Ok(all)
        })
        .await
    }
}

#[derive(Debug)]
enum Target {
    /// Written to a partial file, renamed over `local` on commit (or, with `no_replace`,
    /// renamed only where `local` does not exist by then).
    Replace {
        path: ArchivePath,
        partial: PathBuf,
        local: PathBuf,
        no_replace: bool,
    },
    /// Appended to `local`; on abort cut back to `old_len` with its old modification
    /// time (so the catalog's entry stays true), or removed if it was new.
    InPlace {
        path: ArchivePath,
        local: PathBuf,
        old_len: Option<u64>,
        old_modified: Option<std::time::SystemTime>,
    },
}

impl Target {
    fn path(&self) -> &ArchivePath {
        match self {
            Target::Replace { path, .. } | Target::InPlace { path, .. } => path,
        }
    }
}

/// Chunks queued between the receiver and the writer thread.
const QUEUED_CHUNKS: usize = 4;

/// What the receiver hands the writer thread.
enum Piece {
    /// Bytes to write.
    Bytes(Vec<u8>),
    /// A data connection to take the rest of the upload from, inside the kernel; the
    /// outcome goes back on `done`.
    Socket {
        socket: zero_copy::DataSocket,
        done: tokio::sync::oneshot::Sender<io::Result<u64>>,
    },
}

/// An upload whose chunks are written by a blocking task of its own, so that receiving the
/// next chunk overlaps with storing the last one. It is not hashed here: the catalog hashes
/// it after the sender has its reply (`catalog::run_hasher`).
struct FsUpload {
    chunks: Option<tokio::sync::mpsc::Sender<Piece>>,
    recycled: tokio::sync::mpsc::Receiver<Vec<u8>>,
    writer: Option<tokio::task::JoinHandle<io::Result<fs::File>>>,
    target: Target,
    durable: bool,
}

impl FsUpload {
    fn start(mut file: fs::File, target: Target, durable: bool) -> FsUpload {
        use std::io::Write;
        let (chunks, mut incoming) = tokio::sync::mpsc::channel::<Piece>(QUEUED_CHUNKS);
        let (give_back, recycled) = tokio::sync::mpsc::channel(QUEUED_CHUNKS + 1);
        let writer = tokio::task::spawn_blocking(move || {
            while let Some(piece) = incoming.blocking_recv() {
                match piece {
                    Piece::Bytes(chunk) => {
                        file.write_all(&chunk)?;
                        let _ = give_back.try_send(chunk);
                    }
                    Piece::Socket { socket, done } => {
                        let _ = done.send(zero_copy::receive_into_file(&socket, &file));
                    }
                }
            }
            if durable {
                file.sync_data()?;
            }
            Ok(file)
        });
        FsUpload {
            chunks: Some(chunks),
            recycled,
            writer: Some(writer),
            target,
            durable,
        }
    }

    /// Stops the writer and returns what it reports.
    async fn finish_writer(&mut self) -> io::Result<fs::File> {
        self.chunks = None;
        match self.writer.take() {
            Some(writer) => writer
                .await
                .unwrap_or_else(|join| Err(io::Error::other(join))),
            None => Err(io::Error::other("upload already finished")),
        }
    }
}

#[async_trait]
impl Upload for FsUpload {
    async fn write(&mut self, chunk: Vec<u8>) -> Result<Vec<u8>> {
        let capacity = chunk.capacity();
        let sent = match &self.chunks {
            Some(chunks) => chunks.send(Piece::Bytes(chunk)).await.is_ok(),
            None => false,
        };
        if !sent {
            // The writer stopped early: its error says why.
            let path = self.target.path().clone();
            let err = match self.finish_writer().await {
                Err(err) => err,
                Ok(_) => io::Error::other("the upload writer stopped"),
            };
            return Err(map_err(&path, err));
        }
        Ok(self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(capacity)))
    }

    async fn receive_from(&mut self, socket: zero_copy::DataSocket) -> Option<Result<u64>> {
        // Linux cannot splice into a file opened for appending (an append in place).
        if !matches!(self.target, Target::Replace { .. }) {
            return None;
        }
        let chunks = self.chunks.as_ref()?;
        let (done, outcome) = tokio::sync::oneshot::channel();
        let path = self.target.path().clone();
        if chunks.send(Piece::Socket { socket, done }).await.is_err() {
            let err = match self.finish_writer().await {
                Err(err) => err,
                Ok(_) => io::Error::other("the upload writer stopped"),
            };
            return Some(Err(map_err(&path, err)));
        }
        let received = outcome
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the upload writer stopped")));
        Some(received.map_err(|e| map_err(&path, e)))
    }

    async fn commit(mut self: Box<Self>) -> Result<Committed> {
        let path = self.target.path().clone();
        let durable = self.durable;
        let written = self.finish_writer().await;
        let target = std::mem::replace(
            &mut self.target,
            Target::InPlace {
                path: path.clone(),
                local: PathBuf::new(),
                old_len: None,
                old_modified: None,
            },
        );
        let file = match written {
            Ok(file) => file,
            Err(err) => {
                // The last chunk or the fsync failed (a full disk reports ENOSPC as late as
                // the fsync): undo like an abort, so a retry does not duplicate what part
                // of this upload reached the file.
                let _ = blocking(&ArchivePath::root(), move || {
                    discard(target);
                    Ok(())
                })
                .await;
                return Err(map_err(&path, err));
            }
        };
        drop(file);
        blocking(&path.clone(), move || {
            let local = match target {
                Target::Replace {
                    partial,
                    local,
                    no_replace,
                    ..
                } => {
                    let renamed = match no_replace {
                        true => rename_no_replace(&partial, &local),
                        false => fs::rename(&partial, &local),
                    };
                    renamed.map_err(|e| {
                        let _ = fs::remove_file(&partial);
                        match e.kind() {
                            io::ErrorKind::AlreadyExists => {
                                ArchiveError::AlreadyExists(path.clone())
                            }
                            _ => map_err(&path, e),
                        }
                    })?;
                    local
                }
                Target::InPlace { local, .. } => local,
            };
            // The new name (or a file APPE created) must survive a power cut too.
            if durable && let Some(folder) = local.parent() {
                fs::File::open(folder)
                    .and_then(|folder| folder.sync_all())
                    .map_err(|e| map_err(&path, e))?;
            }
            let meta = fs::metadata(&local).map_err(|e| map_err(&path, e))?;
            Ok(Committed {
                entry: entry(path, &meta),
                sha256: None,
            })
        })
        .await
    }

    async fn abort(mut self: Box<Self>) {
        let _ = self.finish_writer().await;
        let target = std::mem::replace(
            &mut self.target,
            Target::InPlace {
                path: ArchivePath::root(),
                local: PathBuf::new(),
                old_len: None,
                old_modified: None,
            },
        );
        let path = ArchivePath::root();
        let _ = blocking(&path, move || {
            discard(target);
            Ok(())
        })
        .await;
    }
}

/// Undoes an upload that will not be committed: removes the partial file, cuts an append
/// back to its old length, or removes a file the append created. Blocking.
fn discard(target: Target) {
    match target {
        Target::Replace { partial, .. } => {
            let _ = fs::remove_file(partial);
        }
        Target::InPlace {
            local,
            old_len: Some(len),
            old_modified,
            ..
        } => {
            if let Ok(file) = fs::OpenOptions::new().write(true).open(&local) {
                let _ = file.set_len(len);
                if let Some(modified) = old_modified {
                    let _ = file.set_modified(modified);
                }
            }
        }
        Target::InPlace {
            local,
            old_len: None,
            ..
        } => {
            let _ = fs::remove_file(local);
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// Throughput of the writer side of a 1 GiB `Replace` upload (write + SHA-256), without
    /// the network: `LOGARCHIVE_SPEED_DIR=/dev/shm cargo test --release -p logarchive-server
    /// upload_writer_speed -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a test"]
    async fn upload_writer_speed() {
        let base = std::env::var("LOGARCHIVE_SPEED_DIR").unwrap_or_else(|_| "/tmp".into());
        for _ in 0..3 {
            let dir = tempfile::tempdir_in(&base).expect("temp dir");
            let archive = FsArchive::open(dir.path(), false).expect("archive");
            let path = ArchivePath::parse("/big.bin").expect("path");
            let start = std::time::Instant::now();
            let mut upload = archive
                .begin_upload(&path, UploadMode::Replace)
                .await
                .expect("begin");
            let mut chunk = Vec::with_capacity(256 << 10);
            for i in 0..4096u32 {
                chunk.clear();
                chunk.resize(256 << 10, i as u8);
                chunk = upload.write(chunk).await.expect("write");
            }
            let committed = upload.commit().await.expect("commit");
            let took = start.elapsed();
            assert_eq!(committed.entry.size, 1 << 30);
            println!(
                "writer: 1 GiB in {took:?}: {:.0} MiB/s",
                1024.0 / took.as_secs_f64()
            );
        }
    }
}
