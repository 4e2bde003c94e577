//! The archive in an S3 bucket (`[storage] kind = "s3"`), through OpenDAL's S3 service.
//!
//! Object keys are the archive paths without their leading `/`, below `[storage] prefix`.
//! How each promise of [`Archive`] is kept on a store that has no folders, no rename and no
//! append:
//! - **Folders** are implicit (a key `a/b/x` makes `/a` and `/a/b` exist); `MKD` writes a
//!   marker object `a/b/` so an empty folder exists too, and removing the last file of a
//!   folder writes its marker, so a folder does not vanish under a user's feet.
//! - **Atomic uploads**: every upload is an S3 multipart upload (or a single PUT when it
//!   fits in one part) to the final key. S3 shows nothing under the key until
//!   `CompleteMultipartUpload`, which is [`Upload::commit`]; [`Upload::abort`] sends
//!   `AbortMultipartUpload`. No temporary key, so no copy on commit. A server that dies
//!   mid-upload leaves an incomplete multipart upload, invisible and billed until the
//!   bucket's `AbortIncompleteMultipartUpload` lifecycle rule (or Garage's own cleanup)
//!   removes it.
//! - **APPE and REST** compose: the new multipart upload of the same key starts with the
//!   kept part of the stored object (`UploadPartCopy`, server-side: OpenDAL's
//!   `Writer::copy_from`), then the new bytes; complete replaces the object atomically. S3
//!   parts other than the last must be at least 5 MiB, so the tail of the old object past
//!   the last whole [`PART_SIZE`] is read and written again through the server: an append
//!   costs one HEAD, one `UploadPartCopy` per 5 GiB of stored file (no bytes through the
//!   server) and at most [`PART_SIZE`] bytes read back, plus the new bytes.
//!   Appends are atomic here (an aborted append leaves the old object untouched).
//! - **Rename** is copy then delete (`CopyObject`, multipart copy above 5 GiB). The copy is
//!   a new object with a new `LastModified`, so it carries the source's modification time
//!   as `logarchive-mtime` (set by composing when the source has none), as a rename on disk
//!   keeps the time. A folder is renamed object by object: not atomic; a failure midway
//!   leaves some files under each name (none lost), and the error is reported.
//! - **Mode and modification time** set by `SITE CHMOD`/`MFMT` are kept in the object's
//!   user metadata (`x-amz-meta-logarchive-mode`, `-mtime`), rewritten by composing the
//!   object onto itself. `stat` reads them, and so do `list` (FTP LIST, MLSD, NLST) and
//!   `walk` (zip/tar, retention, reindex): S3 listings carry no user metadata, so they send
//!   a HEAD per file ([`LISTING_HEADS`] at a time). An append keeps the mode and drops the
//!   time set by hand (the file was modified), as on disk.
//! - **A file used as a folder** (`/a/file.log/x`) is "not a folder", as `ENOTDIR` on disk.
//! - **Never replacing** (`store_new`): a HEAD, then a PUT with `If-None-Match: *`. Stores
//!   that ignore the condition (Garage 2.x) leave a window between the two in which two
//!   servers storing the same new name at once both succeed, the later one winning.
//! - **Records** (the upload journal): each batch of records is one object
//!   `.logarchive/journal/<time>-<server>-<n>-<name>`, written by whichever caller arrives
//!   first while others wait (group commit); readers list the keys, which sort by time, and
//!   [`Archive::follow_records`] lets every server read what the others wrote.
//!   Record objects older than an hour are merged, one object per record name, by
//!   whichever server runs [`Archive::compact_records`] (each server hourly): the merged
//!   object is written first, under the newest merged key's time, then its sources are
//!   deleted. Its first line names the objects it holds, so a reader that still finds some
//!   of them (deletion cut short, or two servers compacting at once) reads each once; a
//!   compaction that finds a source gone (another one is merging it) leaves that name to
//!   its next round.
//! - **Shared files** (users.toml) are objects under `.logarchive/shared/`.
//! - **One writer per grown file**: S3 has no append, and Garage 2.x ignores conditional
//!   writes, so two servers composing the same object at once would lose one append.
//!   Files the feeds grow carry this server's name ([`Archive::writer_name`]), and the
//!   name is claimed in `.logarchive/servers/<name>` (renewed every [`CLAIM_RENEW`]), so a
//!   second running server with the same name refuses to start. An append (APPE, REST)
//!   also checks at commit that the object is still the one it composed from (size and
//!   ETag), and fails rather than overwrite an append another server made meanwhile.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use logarchive_common::config::server::S3Settings;
use logarchive_common::paths::ArchivePath;
use opendal::{ErrorKind, Metadata, Operator};
use sha2::Digest;

use super::{
    Archive, ArchiveError, ArchiveReader, ChunkReader, Committed, Entry, EntryKind, RESERVED,
    RecordBatch, Result, Upload, UploadMode,
};

/// Multipart part size: above S3's 5 MiB minimum; the most an append reads back.
pub const PART_SIZE: usize = 8 << 20;
/// Parts uploaded at once by one upload.
const CONCURRENT_PARTS: usize = 4;
/// HEADs in flight at once while a listing fetches each file's mode and time.
const LISTING_HEADS: usize = 16;
/// The largest range one `UploadPartCopy` (and one `CopyObject`) may copy.
const MAX_COPY: u64 = 5 << 30;
const MODE_KEY: &str = "logarchive-mode";
const MTIME_KEY: &str = "logarchive-mtime";
const JOURNAL: &str = ".logarchive/journal/";
/// Server-owned files every server reads (users.toml).
const SHARED: &str = ".logarchive/shared/";
/// Each running server's claim of its `server_name`.
const CLAIMS: &str = ".logarchive/servers/";
/// How often a running server renews its claim.
pub const CLAIM_RENEW: Duration = Duration::from_secs(5);
/// A claim not renewed for this long belongs to a server that is gone.
const CLAIM_STALE: Duration = Duration::from_secs(15);
/// How long a new claim must stay ours before the server starts (see
/// [`Archive::claim_writer_name`]): longer than a claim's read and write take.
const CLAIM_SETTLE: Duration = Duration::from_secs(1);
/// The first line of a merged record object: `#logarchive-merged ["key", ...]`.
const MERGED: &[u8] = b"#logarchive-merged ";
/// How far back a follower lists again, for records written (by a server whose clock is
/// behind, or whose PUT was slow) with a time before the newest one it has read.
const FOLLOW_LOOKBACK: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct S3Archive {
    op: Operator,
    /// Tells this server's record objects from the others', and this run's name claim.
    server: u64,
    /// `[storage] server_name`: in the name of every file a feed grows.
    name: String,
    /// Whether this run holds the claim of `name`.
    claimed: Arc<std::sync::atomic::AtomicBool>,
    records: Arc<Records>,
    /// One upload at a time per key on this server: an append composes the stored object
    /// with new bytes, so two at once would lose one of them.
    writing: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    moving: Arc<Moving>,
}

/// The keys a rename of a file is moving: S3 has no rename, so it is a copy, then a
/// delete, and between the two the file is under both names. A stat of either name waits
/// until the rename is done, so no client of this server sees that: an agent that finds
/// its temporary file and a file at the final name takes the latter for an older copy and
/// keeps it as a version (found by the kill -9 test on S3). A server stopped in between
/// finishes the rename at its next start (`catalog::recovery`).
#[derive(Debug, Default)]
struct Moving {
    keys: std::sync::Mutex<HashSet<String>>,
    done: tokio::sync::Notify,
}

impl Moving {
    fn keys(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks `from` and `to` as moving until the returned guard is dropped.
    fn mark(&self, from: &str, to: &str) -> MovingGuard<'_> {
        let keys = [from.to_owned(), to.to_owned()];
        self.keys().extend(keys.iter().cloned());
        MovingGuard { moving: self, keys }
    }

    /// Returns once no rename is moving `key`.
    async fn settled(&self, key: &str) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            // Registered before the check, so a rename ending in between still wakes us.
            notified.as_mut().enable();
            if !self.keys().contains(key) {
                return;
            }
            notified.await;
        }
    }
}

struct MovingGuard<'a> {
    moving: &'a Moving,
    keys: [String; 2],
}

impl Drop for MovingGuard<'_> {
    fn drop(&mut self) {
        let mut keys = self.moving.keys();
        for key in &self.keys {
            keys.remove(key);
        }
        drop(keys);
        self.moving.done.notify_waiters();
    }
}

/// A record waiting to be written: its name, bytes, and who to tell whether it was.
type QueuedRecord = (String, Vec<u8>, tokio::sync::oneshot::Sender<bool>);

/// Group commit of record objects: callers queue, the first to get the turn writes every
/// queued record (one object per record name) and hands each caller its result.
#[derive(Debug, Default)]
struct Records {
    queued: std::sync::Mutex<Vec<QueuedRecord>>,
    turn: tokio::sync::Mutex<()>,
    sequence: AtomicU64,
    /// One compaction at a time on this server.
    compacting: tokio::sync::Mutex<()>,
}

/// What `.logarchive/servers/<name>` holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Claim {
    /// The claiming run ([`S3Archive::server`] in hex).
    run: String,
    host: String,
    pid: u32,
    /// The claiming server's host and data dir (see [`Archive::claim_writer_name`]).
    #[serde(default)]
    home: String,
    /// Unix seconds of the last renewal.
    renewed: u64,
}

impl S3Archive {
    /// Connects to the bucket and checks that it answers (credentials, bucket name).
    pub async fn open(settings: &S3Settings) -> io::Result<S3Archive> {
        opendal::install_default();
        let builder = opendal::services::S3::default()
            .endpoint(&settings.endpoint)
            .bucket(&settings.bucket)
            .region(&settings.region)
            .root(&format!("/{}", settings.prefix))
            .access_key_id(&settings.access_key_id)
            .secret_access_key(&settings.secret_access_key)
            .disable_config_load()
            .disable_ec2_metadata();
        let op = Operator::new(builder)
            .map_err(io::Error::other)?
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(Duration::from_secs(60))
                    .with_io_timeout(Duration::from_secs(30)),
            )
            .layer(
                opendal::layers::RetryLayer::new()
                    .with_max_times(4)
                    .with_jitter(),
            );
        let archive = S3Archive {
            op,
            server: rand::random(),
            name: settings.server_name.clone(),
            claimed: Arc::default(),
            records: Arc::default(),
            writing: Arc::default(),
            moving: Arc::default(),
        };
        archive
            .op
            .lister_with(JOURNAL)
            .limit(1)
            .await
            .map_err(|err| {
                io::Error::other(format!(
                    "bucket {} at {}: {}",
                    settings.bucket,
                    settings.endpoint,
                    brief(&err)
                ))
            })?;
        Ok(archive)
    }

    /// Waits for this server's other uploads to `key` to end.
    async fn lock_key(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
            writing.retain(|_, lock| Arc::strong_count(lock) > 1);
            writing.entry(key.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Whether a folder exists: its marker, or any key below it.
    async fn dir_exists(&self, path: &ArchivePath) -> Result<bool> {
        if path.is_root() {
            return Ok(true);
        }
        let mut lister = self
            .op
            .lister_with(&dir_key(path))
            .limit(1)
            .await
            .map_err(|e| map_err(path, e))?;
        Ok(lister
            .try_next()
            .await
            .map_err(|e| map_err(path, e))?
            .is_some())
    }

    /// The object of a file, or `None` (a folder, or nothing).
    async fn head(&self, path: &ArchivePath) -> Result<Option<Metadata>> {
        if path.is_root() {
            return Ok(None);
        }
        match self.op.stat(&key(path)).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta)),
            Ok(_) => Ok(None),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(map_err(path, err)),
        }
    }

    /// Why `path` names nothing: a file on the way to it is used as a folder (as a disk
    /// answers `ENOTDIR`), or it is simply not there. A HEAD per ancestor, on misses only.
    async fn missing(&self, path: &ArchivePath) -> ArchiveError {
        let mut at = path.parent().filter(|p| !p.is_root());
        while let Some(ancestor) = at {
            if let Ok(Some(_)) = self.head(&ancestor).await {
                return ArchiveError::NotADir(path.clone());
            }
            at = ancestor.parent().filter(|p| !p.is_root());
        }
        ArchiveError::NotFound(path.clone())
    }

    /// The parent folder must exist (and not be a file).
    async fn require_parent(&self, path: &ArchivePath) -> Result<()> {
        let parent = path.parent().unwrap_or_else(ArchivePath::root);
        if self.dir_exists(&parent).await? {
            return Ok(());
        }
        if self.head(&parent).await?.is_some() {
            return Err(ArchiveError::NotADir(parent));
        }
        Err(ArchiveError::NotFound(parent))
    }

    /// Keeps a folder that may just have lost its last object: writes its marker.
    async fn keep_folder(&self, path: &ArchivePath) {
        let Some(parent) = path.parent().filter(|p| !p.is_root()) else {
            return;
        };
        if let Ok(false) = self.dir_exists(&parent).await
            && let Err(err) = self.op.create_dir(&dir_key(&parent)).await
        {
            tracing::warn!(path = %parent, "cannot keep the emptied folder: {}", brief(&err));
        }
    }

    /// Copies one object to another key, keeping its user metadata and its modification
    /// time. A copy is a new object to the store, with a new `LastModified`: a file without
    /// a time of its own gets its source's as `logarchive-mtime` (a composed copy instead of
    /// one `CopyObject`), so a rename keeps the time as it does on disk.
    /// `source` is `from`'s metadata when the caller has it from a HEAD already.
    async fn copy_object(
        &self,
        from: &str,
        to: &str,
        source: Option<Metadata>,
        path: &ArchivePath,
    ) -> Result<()> {
        let meta = match source {
            Some(meta) => meta,
            None => self.op.stat(from).await.map_err(|e| map_err(path, e))?,
        };
        let size = meta.content_length();
        let mut metadata = user_metadata(&meta);
        if size <= MAX_COPY && metadata.contains_key(MTIME_KEY) {
            self.op.copy(from, to).await.map_err(|e| map_err(path, e))?;
            return Ok(());
        }
        if !metadata.contains_key(MTIME_KEY) {
            let modified = file_entry(path.clone(), &meta).modified;
            let secs = modified
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            metadata.insert(MTIME_KEY.to_owned(), secs.to_string());
        }
        let mut writer = self.writer_from(path, to, metadata, from, size).await?;
        writer.close().await.map_err(|e| map_err(path, e))?;
        Ok(())
    }

    /// Files as a listing gives them, with the mode and time of their user metadata:
    /// listings carry none, so a HEAD per file ([`LISTING_HEADS`] at a time). A file gone
    /// meanwhile, or a failed HEAD, keeps what the listing said.
    async fn with_user_metadata(&self, entries: Vec<Entry>) -> Vec<Entry> {
        let mut entries: Vec<Entry> = futures_util::stream::iter(entries)
            .map(|entry| async move {
                if entry.kind != EntryKind::File {
                    return entry;
                }
                match self.head(&entry.path).await {
                    Ok(Some(meta)) => file_entry(entry.path, &meta),
                    _ => entry,
                }
            })
            .buffer_unordered(LISTING_HEADS)
            .collect()
            .await;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        entries
    }

    /// A writer (multipart upload) on `to` with `metadata`, holding already the first
    /// `keep` bytes of `from` (copied server-side where the store can).
    async fn writer_from(
        &self,
        path: &ArchivePath,
        to: &str,
        metadata: HashMap<String, String>,
        from: &str,
        keep: u64,
    ) -> Result<opendal::Writer> {
        let mut writer = self
            .op
            .writer_with(to)
            .chunk(PART_SIZE)
            .concurrent(CONCURRENT_PARTS)
            .user_metadata(metadata)
            .await
            .map_err(|e| map_err(path, e))?;
        if let Err(err) = copy_range(&mut writer, from, 0, keep).await {
            let _ = writer.abort().await;
            return Err(map_err(path, err));
        }
        Ok(writer)
    }

    /// Rewrites a file's user metadata by composing the object onto itself.
    async fn set_metadata(&self, path: &ArchivePath, name: &str, value: String) -> Result<()> {
        let Some(meta) = self.head(path).await? else {
            return if self.dir_exists(path).await? {
                // Folders have no object of their own to carry it; accepted and dropped.
                Ok(())
            } else {
                Err(ArchiveError::NotFound(path.clone()))
            };
        };
        let mut metadata = user_metadata(&meta);
        metadata.insert(name.to_owned(), value);
        let key = key(path);
        let mut writer = self
            .writer_from(path, &key, metadata, &key, meta.content_length())
            .await?;
        writer.close().await.map_err(|e| map_err(path, e))?;
        Ok(())
    }

    /// Writes one object per record name with every record queued so far.
    async fn write_queued_records(&self) {
        let queued = std::mem::take(
            &mut *self
                .records
                .queued
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        if queued.is_empty() {
            return;
        }
        let mut by_name: HashMap<String, (Vec<u8>, Vec<tokio::sync::oneshot::Sender<bool>>)> =
            HashMap::new();
        for (name, record, done) in queued {
            let slot = by_name.entry(name).or_default();
            slot.0.extend_from_slice(&record);
            slot.1.push(done);
        }
        for (name, (bytes, waiting)) in by_name {
            let key = format!(
                "{JOURNAL}{:020}-{:016x}-{:08}-{name}",
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
                self.server,
                self.records.sequence.fetch_add(1, Ordering::Relaxed)
            );
            let written = match self.op.write(&key, bytes).await {
                Ok(_) => true,
                Err(err) => {
                    tracing::error!("cannot write the record object {key}: {}", brief(&err));
                    false
                }
            };
            for done in waiting {
                let _ = done.send(written);
            }
        }
    }

    /// Record object keys after `after` (all when empty), in key order.
    async fn record_keys(&self, after: &str) -> Result<Vec<String>> {
        let path = ArchivePath::root();
        let mut builder = self.op.lister_with(JOURNAL);
        if !after.is_empty() {
            builder = builder.start_after(after);
        }
        let mut lister = builder.await.map_err(|e| map_err(&path, e))?;
        let mut keys = Vec::new();
        while let Some(entry) = lister.try_next().await.map_err(|e| map_err(&path, e))? {
            if entry.metadata().is_file() && entry.path().len() > JOURNAL.len() {
                keys.push(entry.path().to_owned());
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Where this server's name is claimed.
    fn claim_key(&self) -> String {
        format!("{CLAIMS}{}", self.name)
    }

    /// The claim of this server's name, if any (an unreadable one counts as none).
    async fn read_claim(&self) -> Result<Option<Claim>> {
        match self.op.read(&self.claim_key()).await {
            Ok(buffer) => Ok(serde_json::from_slice(&buffer.to_vec()).ok()),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(map_err(&ArchivePath::root(), err)),
        }
    }

    async fn write_claim(&self, home: &str) -> Result<()> {
        let claim = Claim {
            run: format!("{:016x}", self.server),
            host: logarchive_common::config::agent::hostname(),
            pid: std::process::id(),
            home: home.to_owned(),
            renewed: unix_seconds(),
        };
        let bytes = serde_json::to_vec(&claim).unwrap_or_default();
        self.op
            .write(&self.claim_key(), bytes)
            .await
            .map(|_| ())
            .map_err(|e| map_err(&ArchivePath::root(), e))
    }

    fn name_in_use(&self, claim: &Claim) -> ArchiveError {
        ArchiveError::Refused {
            path: ArchivePath::root(),
            reason: format!(
                "[storage] server_name \"{}\" is in use by another running server (host {}, pid {}): give every server sharing the bucket a server_name of its own",
                self.name, claim.host, claim.pid
            ),
        }
    }

    /// Record objects with their bytes, as readers take them: a merged object's first line
    /// (the keys it holds) removed, and every object some merged object holds left out, as
    /// is a merged object whose keys another merged object holds too (two servers
    /// compacting at once): each record once. In key order.
    fn resolve_records(objects: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
        let mut parsed: Vec<(String, Option<HashSet<String>>, Vec<u8>)> = objects
            .into_iter()
            .map(|(key, bytes)| {
                let (held, body) = split_merged(bytes);
                (key, held, body)
            })
            .collect();
        parsed.sort_by(|a, b| a.0.cmp(&b.0));
        let merged: Vec<(&String, &HashSet<String>)> = parsed
            .iter()
            .filter_map(|(key, held, _)| held.as_ref().map(|held| (key, held)))
            .collect();
        let held_somewhere: HashSet<&String> = merged.iter().flat_map(|(_, held)| *held).collect();
        let superseded = |key: &String, held: &HashSet<String>| {
            merged.iter().any(|(other, more)| {
                *other != key && more.is_superset(held) && (more.len() > held.len() || *other < key)
            })
        };
        let keep: Vec<bool> = parsed
            .iter()
            .map(|(key, held, _)| {
                // A merged object whose first line could not be read names nothing, and is
                // kept: dropping it could drop records.
                !held_somewhere.contains(key)
                    && !held
                        .as_ref()
                        .is_some_and(|held| !held.is_empty() && superseded(key, held))
            })
            .collect();
        parsed
            .into_iter()
            .zip(keep)
            .filter(|(_, keep)| *keep)
            .map(|((key, _, body), _)| (key, body))
            .collect()
    }

    /// The record objects `keys` with their bytes; `None` when one of them is gone. A
    /// compaction deletes its sources only after writing the merged object, so a listing
    /// made again finds that object: the caller lists again rather than skip the gone
    /// one, whose records a listing made before the merge would otherwise never see.
    async fn read_listed(&self, keys: &[String]) -> Result<Option<Vec<(String, Vec<u8>)>>> {
        let mut objects = Vec::with_capacity(keys.len());
        for key in keys {
            match self.read_object(key).await {
                Ok(bytes) => objects.push((key.clone(), bytes)),
                Err(ArchiveError::NotFound(_)) => return Ok(None),
                Err(err) => return Err(err),
            }
        }
        Ok(Some(objects))
    }

    async fn read_object(&self, key: &str) -> Result<Vec<u8>> {
        self.op
            .read(key)
            .await
            .map(|buffer| buffer.to_vec())
            .map_err(|e| map_err(&ArchivePath::root(), e))
    }
}

/// The record name inside a record object's key (`<time>-<server>-<n>-<name>`).
fn record_name(key: &str) -> &str {
    let file = key.strip_prefix(JOURNAL).unwrap_or(key);
    file.splitn(4, '-').nth(3).unwrap_or("")
}

/// The time part of a record object's key.
fn record_time(key: &str) -> u128 {
    let file = key.strip_prefix(JOURNAL).unwrap_or(key);
    file.split('-')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// A merged record object's keys (its first line) and its records; `None` and the bytes
/// as they are for an object written by `append_record`.
fn split_merged(bytes: Vec<u8>) -> (Option<HashSet<String>>, Vec<u8>) {
    if !bytes.starts_with(MERGED) {
        return (None, bytes);
    }
    let end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(bytes.len());
    let held = serde_json::from_slice::<Vec<String>>(&bytes[MERGED.len()..end])
        .unwrap_or_default()
        .into_iter()
        .collect();
    let body = bytes.get(end + 1..).unwrap_or_default().to_vec();
    (Some(held), body)
}

/// How often a reader lists the journal again when objects it listed were merged away
/// meanwhile (one compaction at a time per server: a few tries outlast them).
const RELIST_TRIES: usize = 5;

/// The error of a journal that kept changing under a reader for [`RELIST_TRIES`] listings.
fn journal_in_flux() -> ArchiveError {
    ArchiveError::Refused {
        path: ArchivePath::root(),
        reason: format!(
            "journal objects were merged away while being read, {RELIST_TRIES} times: try again"
        ),
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Copies `from[start..end]` into `writer`, at most [`MAX_COPY`] per call.
async fn copy_range(
    writer: &mut opendal::Writer,
    from: &str,
    start: u64,
    end: u64,
) -> opendal::Result<()> {
    let mut at = start;
    while at < end {
        let next = end.min(at + MAX_COPY);
        writer.copy_from(from, at..next).await?;
        at = next;
    }
    Ok(())
}

fn user_metadata(meta: &Metadata) -> HashMap<String, String> {
    meta.user_metadata()
        .map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn key(path: &ArchivePath) -> String {
    path.as_str().trim_start_matches('/').to_owned()
}

fn dir_key(path: &ArchivePath) -> String {
    if path.is_root() {
        "/".to_owned()
    } else {
        format!("{}/", key(path))
    }
}

/// An OpenDAL error without its context lines (which can be long), for logs and replies.
fn brief(err: &opendal::Error) -> String {
    format!("{:?}: {}", err.kind(), err.message())
}

fn map_err(path: &ArchivePath, err: opendal::Error) -> ArchiveError {
    let path = path.clone();
    match err.kind() {
        ErrorKind::NotFound => ArchiveError::NotFound(path),
        ErrorKind::AlreadyExists | ErrorKind::ConditionNotMatch => {
            ArchiveError::AlreadyExists(path)
        }
        ErrorKind::IsADirectory => ArchiveError::IsADir(path),
        ErrorKind::NotADirectory => ArchiveError::NotADir(path),
        _ => ArchiveError::Io {
            path,
            source: io::Error::other(brief(&err)),
        },
    }
}

fn file_entry(path: ArchivePath, meta: &Metadata) -> Entry {
    let stored = meta
        .last_modified()
        .map(SystemTime::from)
        .unwrap_or(UNIX_EPOCH);
    let extra = meta.user_metadata();
    let modified = extra
        .and_then(|m| m.get(MTIME_KEY))
        .and_then(|t| t.parse::<u64>().ok())
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap_or(stored);
    let mode = extra
        .and_then(|m| m.get(MODE_KEY))
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .unwrap_or(0o644);
    Entry {
        path,
        kind: EntryKind::File,
        size: meta.content_length(),
        modified,
        mode,
    }
}

fn dir_entry(path: ArchivePath, meta: Option<&Metadata>) -> Entry {
    Entry {
        path,
        kind: EntryKind::Dir,
        size: 0,
        modified: meta
            .and_then(Metadata::last_modified)
            .map(SystemTime::from)
            .unwrap_or(UNIX_EPOCH),
        mode: 0o755,
    }
}

/// An object's archive path from its key (relative to the root), if it names one.
fn path_of(key: &str) -> Option<ArchivePath> {
    let trimmed = key.trim_end_matches('/');
    if trimmed.is_empty() {
        return None;
    }
    ArchivePath::parse(&format!("/{trimmed}")).ok()
}

/// A file read as a stream of the chunks S3 sends.
struct ObjectChunks {
    stream: opendal::FuturesBytesStream,
    /// What is left of the last chunk when it was larger than asked for.
    rest: Bytes,
}

#[async_trait]
impl ChunkReader for ObjectChunks {
    async fn next_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        if self.rest.is_empty() {
            match self.stream.try_next().await? {
                Some(chunk) => self.rest = chunk,
                None => return Ok(None),
            }
        }
        let take = self.rest.len().min(max.max(1));
        Ok(Some(self.rest.split_to(take)))
    }
}

impl S3Archive {
    /// A stream of a file's bytes from `offset`, with the checks every read makes.
    async fn stream(&self, path: &ArchivePath, offset: u64) -> Result<opendal::FuturesBytesStream> {
        let Some(meta) = self.head(path).await? else {
            return Err(if self.dir_exists(path).await? {
                ArchiveError::IsADir(path.clone())
            } else {
                self.missing(path).await
            });
        };
        let len = meta.content_length();
        if offset > len {
            return Err(ArchiveError::Refused {
                path: path.clone(),
                reason: format!("offset {offset} is beyond the end of the file ({len} bytes)"),
            });
        }
        let reader = self
            .op
            .reader_with(&key(path))
            .chunk(PART_SIZE)
            .await
            .map_err(|e| map_err(path, e))?;
        reader
            .into_bytes_stream(offset..len)
            .await
            .map_err(|e| map_err(path, e))
    }
}

#[async_trait]
impl Archive for S3Archive {
    async fn stat(&self, path: &ArchivePath) -> Result<Entry> {
        self.moving.settled(&key(path)).await;
        if let Some(meta) = self.head(path).await? {
            return Ok(file_entry(path.clone(), &meta));
        }
        if self.dir_exists(path).await? {
            let marker = if path.is_root() {
                None
            } else {
                self.op.stat(&dir_key(path)).await.ok()
            };
            return Ok(dir_entry(path.clone(), marker.as_ref()));
        }
        Err(self.missing(path).await)
    }

    async fn list(&self, dir: &ArchivePath) -> Result<Vec<Entry>> {
        let prefix = dir_key(dir);
        let mut lister = self
            .op
            .lister_with(&prefix)
            .await
            .map_err(|e| map_err(dir, e))?;
        let mut entries = Vec::new();
        let mut found = dir.is_root();
        while let Some(item) = lister.try_next().await.map_err(|e| map_err(dir, e))? {
            found = true;
            let key = item.path();
            if key == prefix || key.trim_start_matches('/') == prefix.trim_start_matches('/') {
                continue; // the folder's own marker
            }
            let Some(path) = path_of(key) else { continue };
            if path.parent().as_ref() != Some(dir) {
                continue;
            }
            if dir.is_root() && path.components().next() == Some(RESERVED) {
                continue;
            }
            if item.metadata().is_dir() {
                entries.push(dir_entry(path, None));
            } else {
                entries.push(file_entry(path, item.metadata()));
            }
        }
        if !found {
            return Err(if self.head(dir).await?.is_some() {
                ArchiveError::NotADir(dir.clone())
            } else {
                ArchiveError::NotFound(dir.clone())
            });
        }
        // The mode and time set by SITE CHMOD / MFMT (or kept by a rename), so LIST and
        // MLSD show what MDTM shows.
        Ok(self.with_user_metadata(entries).await)
    }

    async fn open(&self, path: &ArchivePath, offset: u64) -> Result<ArchiveReader> {
        let stream = self.stream(path, offset).await?;
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }

    async fn open_chunks(&self, path: &ArchivePath, offset: u64) -> Result<Box<dyn ChunkReader>> {
        let stream = self.stream(path, offset).await?;
        Ok(Box::new(ObjectChunks {
            stream,
            rest: Bytes::new(),
        }))
    }

    async fn begin_upload(&self, path: &ArchivePath, mode: UploadMode) -> Result<Box<dyn Upload>> {
        let turn = self.lock_key(&key(path)).await;
        self.require_parent(path).await?;
        let existing = self.head(path).await?;
        if existing.is_none() && self.dir_exists(path).await? {
            return Err(ArchiveError::IsADir(path.clone()));
        }
        // Checked under this server's lock of the key; servers sharing the bucket do not see
        // each other's locks, so two of them storing one new name at once can still both
        // succeed (the later wins), as with a plain STOR.
        if mode == UploadMode::New && existing.is_some() {
            return Err(ArchiveError::AlreadyExists(path.clone()));
        }
        let stored = existing.as_ref().map_or(0, Metadata::content_length);
        let keep = match mode {
            UploadMode::Replace | UploadMode::New => 0,
            UploadMode::Append => stored,
            UploadMode::ResumeAt(n) if n > stored => {
                return Err(ArchiveError::Refused {
                    path: path.clone(),
                    reason: format!(
                        "cannot resume at byte {n}: the stored file has {stored} bytes"
                    ),
                });
            }
            UploadMode::ResumeAt(n) => n,
        };
        // A mode set by hand stays with the file through appends; a time set by hand does
        // not: an append modifies the file, which then shows the store's time, as on disk.
        let metadata = match (&existing, keep) {
            (Some(meta), 1..) => {
                let mut kept = user_metadata(meta);
                kept.remove(MTIME_KEY);
                kept
            }
            _ => HashMap::new(),
        };
        let key = key(path);
        let writer = self.writer_from(path, &key, metadata, &key, keep).await?;
        let composed_from = (!mode.is_whole()).then(|| {
            existing
                .as_ref()
                .map(|meta| (meta.content_length(), meta.etag().map(str::to_owned)))
        });
        Ok(Box::new(S3Upload {
            archive: self.clone(),
            path: path.clone(),
            writer,
            hasher: mode.is_whole().then(sha2::Sha256::new),
            composed_from,
            _turn: turn,
        }))
    }

    async fn create_dir(&self, path: &ArchivePath) -> Result<()> {
        self.require_parent(path).await?;
        if self.head(path).await?.is_some() || self.dir_exists(path).await? {
            return Err(ArchiveError::AlreadyExists(path.clone()));
        }
        self.op
            .create_dir(&dir_key(path))
            .await
            .map_err(|e| map_err(path, e))
    }

    async fn create_dir_all(&self, path: &ArchivePath) -> Result<()> {
        if path.is_root() || self.dir_exists(path).await? {
            return Ok(());
        }
        let mut at = Some(path.clone());
        while let Some(p) = at {
            if self.head(&p).await?.is_some() {
                return Err(ArchiveError::NotADir(p));
            }
            at = p.parent().filter(|p| !p.is_root());
        }
        self.op
            .create_dir(&dir_key(path))
            .await
            .map_err(|e| map_err(path, e))
    }

    async fn remove_file(&self, path: &ArchivePath) -> Result<()> {
        if self.head(path).await?.is_none() {
            return Err(if self.dir_exists(path).await? {
                ArchiveError::IsADir(path.clone())
            } else {
                ArchiveError::NotFound(path.clone())
            });
        }
        self.op
            .delete(&key(path))
            .await
            .map_err(|e| map_err(path, e))?;
        self.keep_folder(path).await;
        Ok(())
    }

    async fn remove_dir(&self, path: &ArchivePath) -> Result<()> {
        if path.is_root() {
            return Err(ArchiveError::NotEmpty(path.clone()));
        }
        let prefix = dir_key(path);
        let mut lister = self
            .op
            .lister_with(&prefix)
            .limit(2)
            .await
            .map_err(|e| map_err(path, e))?;
        let mut marker = false;
        while let Some(item) = lister.try_next().await.map_err(|e| map_err(path, e))? {
            if item.path() == prefix {
                marker = true;
            } else {
                return Err(ArchiveError::NotEmpty(path.clone()));
            }
        }
        if !marker {
            return Err(if self.head(path).await?.is_some() {
                ArchiveError::NotADir(path.clone())
            } else {
                ArchiveError::NotFound(path.clone())
            });
        }
        self.op
            .delete(&prefix)
            .await
            .map_err(|e| map_err(path, e))?;
        self.keep_folder(path).await;
        Ok(())
    }

    async fn rename(&self, from: &ArchivePath, to: &ArchivePath) -> Result<()> {
        if to.starts_with(from) && to != from {
            return Err(ArchiveError::Refused {
                path: to.clone(),
                reason: format!("cannot move {from} into itself"),
            });
        }
        let source = self.head(from).await?;
        if source.is_none() && !self.dir_exists(from).await? {
            return Err(ArchiveError::NotFound(from.clone()));
        }
        self.require_parent(to).await?;
        if self.dir_exists(to).await? && !to.is_root() {
            return Err(ArchiveError::AlreadyExists(to.clone()));
        }
        if from == to {
            return Ok(());
        }
        if source.is_some() {
            let _moving = self.moving.mark(&key(from), &key(to));
            self.copy_object(&key(from), &key(to), source, to).await?;
            self.op
                .delete(&key(from))
                .await
                .map_err(|e| map_err(from, e))?;
            self.keep_folder(from).await;
            return Ok(());
        }
        if self.head(to).await?.is_some() {
            return Err(ArchiveError::NotADir(to.clone()));
        }
        // A folder: every object below it, one by one (see the module doc).
        let from_prefix = dir_key(from);
        let to_prefix = dir_key(to);
        let mut lister = self
            .op
            .lister_with(&from_prefix)
            .recursive(true)
            .await
            .map_err(|e| map_err(from, e))?;
        let mut objects = Vec::new();
        while let Some(item) = lister.try_next().await.map_err(|e| map_err(from, e))? {
            objects.push(item.path().to_owned());
        }
        if !objects.contains(&from_prefix) {
            objects.push(from_prefix.clone());
        }
        for object in &objects {
            let target = format!("{to_prefix}{}", &object[from_prefix.len()..]);
            if object.ends_with('/') {
                self.op
                    .create_dir(&target)
                    .await
                    .map_err(|e| map_err(to, e))?;
            } else {
                self.copy_object(object, &target, None, to).await?;
            }
        }
        for object in &objects {
            if let Err(err) = self.op.delete(object).await
                && err.kind() != ErrorKind::NotFound
            {
                return Err(map_err(from, err));
            }
        }
        self.keep_folder(from).await;
        Ok(())
    }

    async fn set_modified(&self, path: &ArchivePath, time: SystemTime) -> Result<()> {
        let secs = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.set_metadata(path, MTIME_KEY, secs.to_string()).await
    }

    async fn set_mode(&self, path: &ArchivePath, mode: u32) -> Result<()> {
        self.set_metadata(path, MODE_KEY, format!("{:o}", mode & 0o777))
            .await
    }

    async fn walk(&self, dir: &ArchivePath) -> Result<Vec<Entry>> {
        let mut lister = self
            .op
            .lister_with(&dir_key(dir))
            .recursive(true)
            .await
            .map_err(|e| map_err(dir, e))?;
        let mut files = Vec::new();
        while let Some(item) = lister.try_next().await.map_err(|e| map_err(dir, e))? {
            if item.path().ends_with('/') || !item.metadata().is_file() {
                continue;
            }
            let Some(path) = path_of(item.path()) else {
                continue;
            };
            if path.components().next() == Some(RESERVED) {
                continue;
            }
            files.push(file_entry(path, item.metadata()));
        }
        if files.is_empty() && !self.dir_exists(dir).await? {
            return Err(ArchiveError::NotFound(dir.clone()));
        }
        // The time a file carries (MFMT, or kept by a rename) is its time for reindex,
        // retention and archives too.
        Ok(self.with_user_metadata(files).await)
    }

    async fn store_new(&self, path: &ArchivePath, bytes: Vec<u8>) -> Result<Committed> {
        self.require_parent(path).await?;
        if self.head(path).await?.is_some() || self.dir_exists(path).await? {
            return Err(ArchiveError::AlreadyExists(path.clone()));
        }
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        self.op
            .write_with(&key(path), bytes)
            .if_not_exists(true)
            .await
            .map_err(|e| map_err(path, e))?;
        Ok(Committed {
            entry: self.stat(path).await?,
            sha256: Some(sha256),
        })
    }

    async fn append_record(&self, name: &str, record: &[u8]) -> Result<()> {
        let (done, written) = tokio::sync::oneshot::channel();
        self.records
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_owned(), record.to_vec(), done));
        {
            // Whoever holds the turn writes everything queued, ours included if it came in
            // time; otherwise we write it ourselves.
            let _turn = self.records.turn.lock().await;
            self.write_queued_records().await;
        }
        match written.await {
            Ok(true) => Ok(()),
            _ => Err(ArchiveError::Io {
                path: ArchivePath::root(),
                source: io::Error::other(format!("cannot store the record {name}")),
            }),
        }
    }

    async fn read_records(&self, prefix: &str) -> Result<Vec<u8>> {
        let mut listed = None;
        for _ in 0..RELIST_TRIES {
            let mut keys = self.record_keys("").await?;
            keys.retain(|key| record_name(key).starts_with(prefix));
            listed = self.read_listed(&keys).await?;
            if listed.is_some() {
                break;
            }
        }
        let objects = listed.ok_or_else(journal_in_flux)?;
        let mut objects = Self::resolve_records(objects);
        // Oldest name first, then in time order within a name.
        objects.sort_by(|a, b| record_name(&a.0).cmp(record_name(&b.0)).then(a.0.cmp(&b.0)));
        Ok(objects.into_iter().flat_map(|(_, body)| body).collect())
    }

    async fn compact_records(&self, age: Duration) -> Result<usize> {
        let _alone = self.records.compacting.lock().await;
        let cutoff = SystemTime::now()
            .checked_sub(age)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let mut by_name: HashMap<String, Vec<String>> = HashMap::new();
        for key in self.record_keys("").await? {
            if record_time(&key) < cutoff {
                by_name
                    .entry(record_name(&key).to_owned())
                    .or_default()
                    .push(key);
            }
        }
        let mut removed = 0;
        for (name, keys) in by_name {
            if keys.len() < 2 {
                continue;
            }
            // A source gone means another compaction is merging this name now. Merging
            // what is left would make an object whose sources overlap the other's without
            // either holding the other's, and readers would read the shared records twice:
            // left to the next round instead.
            let Some(objects) = self.read_listed(&keys).await? else {
                tracing::debug!(%name, "journal: merged by another server meanwhile, skipped");
                continue;
            };
            let held: Vec<&String> = objects.iter().map(|(key, _)| key).collect();
            let mut merged = MERGED.to_vec();
            merged.extend(serde_json::to_vec(&held).unwrap_or_default());
            merged.push(b'\n');
            let newest = keys.iter().map(|k| record_time(k)).max().unwrap_or(0);
            let sources: Vec<String> = objects.iter().map(|(key, _)| key.clone()).collect();
            for (_, body) in Self::resolve_records(objects) {
                merged.extend(body);
            }
            // Under the newest source's time: a follower that has not read every source yet
            // lists from before that time, so it finds the merged object. A writer id of
            // its own, never this server's: it holds other servers' records, and this
            // server's follower (which skips its own objects) may not have read them all.
            let key = format!(
                "{JOURNAL}{newest:020}-{:016x}-{:08}-{name}",
                rand::random::<u64>(),
                self.records.sequence.fetch_add(1, Ordering::Relaxed)
            );
            self.op
                .write(&key, merged)
                .await
                .map_err(|e| map_err(&ArchivePath::root(), e))?;
            let mut deleted = 0usize;
            for source in sources {
                match self.op.delete(&source).await {
                    Ok(()) => deleted += 1,
                    Err(err) if err.kind() == ErrorKind::NotFound => {}
                    Err(err) => return Err(map_err(&ArchivePath::root(), err)),
                }
            }
            // The merged object took their place.
            removed += deleted.saturating_sub(1);
        }
        Ok(removed)
    }

    fn writer_name(&self) -> Option<&str> {
        Some(&self.name)
    }

    async fn claim_writer_name(&self, home: &str) -> Result<()> {
        let run = format!("{:016x}", self.server);
        if let Some(claim) = self.read_claim().await?
            && claim.run != run
            && (claim.home != home || self.claimed.load(Ordering::Relaxed))
        {
            if self.claimed.load(Ordering::Relaxed) {
                // Taken over while this server runs (another one started with this name
                // while this one could not renew): both now write the same files.
                return Err(self.name_in_use(&claim));
            }
            // A claim renewed lately: a running server, or one that just died. Watch it
            // until it would be stale.
            let age = unix_seconds().saturating_sub(claim.renewed);
            let wait = CLAIM_STALE.saturating_sub(Duration::from_secs(age));
            let deadline = tokio::time::Instant::now() + wait;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                match self.read_claim().await? {
                    None => break,
                    Some(now) if now.run != claim.run || now.renewed != claim.renewed => {
                        return Err(self.name_in_use(&now));
                    }
                    Some(_) => {}
                }
            }
            tracing::info!(
                server_name = %self.name,
                "taking over the server name from a run that stopped (host {}, pid {})",
                claim.host,
                claim.pid
            );
        }
        let first = !self.claimed.load(Ordering::Relaxed);
        self.write_claim(home).await?;
        if first {
            // No conditional write: a server started at the same moment with this name
            // read no claim either and may have written its own over ours. The later write
            // stays, so the earlier writer finds the other's claim here and refuses.
            tokio::time::sleep(CLAIM_SETTLE).await;
            if let Some(now) = self.read_claim().await?
                && now.run != run
            {
                return Err(self.name_in_use(&now));
            }
        }
        self.claimed.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn release_writer_name(&self) {
        if !self.claimed.swap(false, Ordering::Relaxed) {
            return;
        }
        let run = format!("{:016x}", self.server);
        if let Ok(Some(claim)) = self.read_claim().await
            && claim.run == run
            && let Err(err) = self.op.delete(&self.claim_key()).await
        {
            tracing::warn!("cannot release the server name: {}", brief(&err));
        }
    }

    async fn read_shared(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.op.read(&format!("{SHARED}{name}")).await {
            Ok(buffer) => Ok(Some(buffer.to_vec())),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(map_err(&ArchivePath::root(), err)),
        }
    }

    async fn write_shared(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.op
            .write(&format!("{SHARED}{name}"), bytes)
            .await
            .map(|_| ())
            .map_err(|e| map_err(&ArchivePath::root(), e))
    }

    async fn follow_records(&self, prefix: &str, batch: &mut RecordBatch) -> Result<bool> {
        let newest = batch
            .cursor
            .iter()
            .map(|k| record_time(k))
            .max()
            .unwrap_or(0);
        let after = if newest == 0 {
            String::new()
        } else {
            let from = newest.saturating_sub(FOLLOW_LOOKBACK.as_nanos());
            format!("{JOURNAL}{from:020}")
        };
        let own = format!("-{:016x}-", self.server);
        let mut listed = None;
        for _ in 0..RELIST_TRIES {
            let keys = self.record_keys(&after).await?;
            let wanted: Vec<String> = keys
                .iter()
                .filter(|key| {
                    !batch.cursor.contains(*key)
                        && record_name(key).starts_with(prefix)
                        && !key.contains(&own)
                })
                .cloned()
                .collect();
            if let Some(fresh) = self.read_listed(&wanted).await? {
                listed = Some((keys, fresh));
                break;
            }
        }
        // Nothing is marked seen: the next call reads it all again.
        let (keys, fresh) = listed.ok_or_else(journal_in_flux)?;
        let seen: HashSet<String> = keys.into_iter().collect();
        let fresh: Vec<u8> = Self::resolve_records(fresh)
            .into_iter()
            .flat_map(|(_, body)| body)
            .collect();
        // Remember what was seen within the look-back window only.
        let horizon = seen
            .iter()
            .map(|k| record_time(k))
            .max()
            .unwrap_or(newest)
            .saturating_sub(FOLLOW_LOOKBACK.as_nanos());
        batch.cursor.extend(seen);
        batch.cursor.retain(|k| record_time(k) >= horizon);
        batch.records = fresh;
        Ok(true)
    }
}

/// An upload in progress: an OpenDAL writer on the final key (a multipart upload once it
/// outgrows one part).
struct S3Upload {
    archive: S3Archive,
    path: ArchivePath,
    writer: opendal::Writer,
    hasher: Option<sha2::Sha256>,
    /// For an append or resume: the object it was composed from (size, ETag; `None`: no
    /// object), which must still be there unchanged at commit.
    composed_from: Option<Option<(u64, Option<String>)>>,
    /// Held until commit or abort.
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, chunk: Vec<u8>) -> Result<Vec<u8>> {
        let capacity = chunk.capacity();
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&chunk);
        }
        self.writer
            .write(Bytes::from(chunk))
            .await
            .map_err(|e| map_err(&self.path, e))?;
        Ok(Vec::with_capacity(capacity))
    }

    async fn commit(mut self: Box<Self>) -> Result<Committed> {
        if let Some(expected) = &self.composed_from {
            // Another server may have grown the object while this append ran (the lock is
            // per server): completing would drop its bytes. A HEAD narrows that window from
            // the whole upload to the moment before the completion.
            let now = self.archive.head(&self.path).await;
            let unchanged = match (expected, &now) {
                (None, Ok(None)) => true,
                (Some((size, etag)), Ok(Some(meta))) => {
                    meta.content_length() == *size && meta.etag() == etag.as_deref()
                }
                _ => false,
            };
            if !unchanged {
                let _ = self.writer.abort().await;
                now?;
                return Err(ArchiveError::Refused {
                    path: self.path.clone(),
                    reason: "the file changed in the store while this append ran (written through another server?): nothing was appended, send it again".into(),
                });
            }
        }
        if let Err(err) = self.writer.close().await {
            let _ = self.writer.abort().await;
            return Err(map_err(&self.path, err));
        }
        Ok(Committed {
            entry: self.archive.stat(&self.path).await?,
            sha256: self.hasher.take().map(|h| hex::encode(h.finalize())),
        })
    }

    async fn abort(mut self: Box<Self>) {
        if let Err(err) = self.writer.abort().await {
            tracing::warn!(path = %self.path, "cannot abort the upload: {}", brief(&err));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_carry_time_and_name() {
        let key = format!(
            "{JOURNAL}00000001700000000000-00000000000000ff-00000003-uploads-2026-11-22.jsonl"
        );
        assert_eq!(record_name(&key), "uploads-2026-11-22.jsonl");
        assert_eq!(record_time(&key), 1_700_000_000_000);
    }

    fn merged(keys: &[&str], body: &str) -> Vec<u8> {
        let mut bytes = MERGED.to_vec();
        bytes.extend(serde_json::to_vec(keys).unwrap());
        bytes.push(b'\n');
        bytes.extend(body.as_bytes());
        bytes
    }

    fn bodies(objects: Vec<(&str, Vec<u8>)>) -> String {
        let objects = objects
            .into_iter()
            .map(|(key, bytes)| (key.to_owned(), bytes))
            .collect();
        S3Archive::resolve_records(objects)
            .into_iter()
            .map(|(_, body)| String::from_utf8(body).unwrap())
            .collect()
    }

    #[test]
    fn each_record_is_read_once_whatever_a_compaction_left() {
        let plain = |text: &str| text.as_bytes().to_vec();
        // Nothing merged: every object, in key order.
        assert_eq!(
            bodies(vec![("2", plain("b\n")), ("1", plain("a\n"))]),
            "a\nb\n"
        );
        // Merged, its sources not all deleted yet (a compaction cut short).
        assert_eq!(
            bodies(vec![
                ("1", plain("a\n")),
                ("3", merged(&["1", "2"], "a\nb\n")),
                ("4", plain("c\n")),
            ]),
            "a\nb\nc\n"
        );
        // Two servers merged the same objects at once: one of the two is read.
        assert_eq!(
            bodies(vec![
                ("2x", merged(&["1", "2"], "a\nb\n")),
                ("2y", merged(&["1", "2"], "a\nb\n")),
            ]),
            "a\nb\n"
        );
        // One of them saw an object more: the larger one is read.
        assert_eq!(
            bodies(vec![
                ("2x", merged(&["1"], "a\n")),
                ("2y", merged(&["1", "2"], "a\nb\n")),
                ("2", plain("b\n")),
            ]),
            "a\nb\n"
        );
        // A merged object folded into a later one.
        assert_eq!(
            bodies(vec![
                ("2", merged(&["1", "0"], "a\n")),
                ("4", merged(&["2", "3"], "a\nb\n")),
                ("5", plain("c\n")),
            ]),
            "a\nb\nc\n"
        );
        // A merged object's first line never reaches the readers.
        let (held, body) = split_merged(merged(&["k"], "x\n"));
        assert_eq!((held.map(|h| h.len()), body), (Some(1), b"x\n".to_vec()));
    }

    #[test]
    fn keys_of_paths() {
        let path = ArchivePath::parse("/a/b.log").expect("path");
        assert_eq!(key(&path), "a/b.log");
        assert_eq!(dir_key(&path), "a/b.log/");
        assert_eq!(dir_key(&ArchivePath::root()), "/");
        assert_eq!(path_of("a/b/"), ArchivePath::parse("/a/b").ok());
        assert_eq!(path_of("/"), None);
    }
}
