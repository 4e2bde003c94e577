//! The catalog: an index of every file in the archive (sled), for search and listings.
//!
//! Each completed upload is recorded with its path, size, modification time, SHA-256, the
//! user who sent it and when it was received. The catalog is derived data: the facts that a
//! file cannot carry itself (who sent it, when) are also appended to an upload journal in
//! the archive's reserved folder, so `reindex` rebuilds the catalog from the archive alone.
//!
//! Invariant: an entry is flushed to disk before the upload is acknowledged to its sender,
//! or, if sled failed, the catalog is marked behind and catches up from the journal
//! ([`recovery`]); without its journal line an upload is not acknowledged at all.
//! Its SHA-256 may follow: an FTP upload is recorded with an empty hash and a place in the
//! `unhashed` tree (in the same flush), and [`run_hasher`] fills the hash in soon after, at
//! the next start if the server stopped first. Hashing inline would cost the sender about
//! 0.7 s per GiB on the server's critical path, and every append would re-hash the whole
//! file before its reply (docs/BENCHMARKS.md).
//!
//! Searches are answered from an in-memory table of every file's path, size, time and
//! source ([`index`]), built when the catalog opens and kept in step by the private
//! write helpers (`put`, `delete`, `clear_files`): every writer of the `files` tree,
//! uploads, renames, removals, reindex and any later one, must go through them.

pub mod follow;
mod hashing;
mod index;
pub mod recovery;

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use logarchive_common::paths::ArchivePath;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::archive::{Archive, ArchiveError, Entry};
pub use index::IndexedFile;
pub use recovery::RenameError;

/// One archived file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub path: ArchivePath,
    pub size: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub modified: OffsetDateTime,
    pub sha256: String,
    /// The FTP user (or feed) that sent it; `None` for files placed in the tree by hand.
    pub uploader: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub received: OffsetDateTime,
}

/// A line of the upload journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum JournalRecord {
    Upload {
        path: ArchivePath,
        uploader: String,
        #[serde(with = "time::serde::rfc3339")]
        received: OffsetDateTime,
        /// Size and hash at the upload, so other servers sharing the archive need not read
        /// the file again (absent in journals written before they were added).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    Rename {
        from: ArchivePath,
        to: ArchivePath,
    },
    /// A file removed (DELE, retention): other servers sharing the archive follow it.
    Remove {
        path: ArchivePath,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog database: {0}")]
    Db(#[from] sled::Error),
    #[error("catalog entry for {path} is unreadable: {source}")]
    Decode {
        path: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The upload journal could not be written: what it would have said is lost unless
    /// the operation is repeated.
    #[error("upload journal: {0}")]
    Journal(#[source] ArchiveError),
    #[error("the catalog database is being reopened")]
    Unavailable,
    #[error("the cursor does not belong to this listing")]
    Cursor,
}

/// One page of a listing or search; `next` continues it.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// A direct child of a folder, as the catalog knows it.
#[derive(Debug)]
pub enum Child {
    /// A folder: implied by the files below it.
    Dir(String),
    File(CatalogEntry),
}

const JOURNAL_PREFIX: &str = "uploads-";

#[derive(Clone)]
pub struct Catalog {
    shared: Arc<Shared>,
    archive: Arc<dyn Archive>,
}

/// What every clone of a catalog shares.
struct Shared {
    /// The sled database's folder, to reopen it after a write error.
    dir: std::path::PathBuf,
    /// The open database; `None` only while it is being reopened.
    store: RwLock<Option<Arc<Store>>>,
    /// Woken when `unhashed` gains an entry.
    hash_wanted: tokio::sync::Notify,
    /// Derived from `files`; changed only together with it, under its write lock.
    table: RwLock<index::Table>,
    /// Writers of the catalog hold it shared; catching up holds it alone, so it compares
    /// the archive with a catalog no operation is halfway through.
    gate: tokio::sync::RwLock<()>,
    health: recovery::Health,
    /// Set by the server: background hashing pauses while transfers run (hashing.rs).
    transfers_running: std::sync::OnceLock<hashing::Busy>,
}

/// The sled database and its trees. Handles to it are taken per operation, never kept,
/// so that the database can be closed and reopened (sled refuses every write after its
/// first I/O error until it is reopened).
struct Store {
    db: sled::Db,
    files: sled::Tree,
    /// Files recorded without their SHA-256 yet: path -> a generation, new each time the
    /// file is recorded, so a hash of older content is never taken for the newer.
    unhashed: sled::Tree,
    /// Renames begun: `from NUL to` -> nothing (see `recovery`).
    intents: sled::Tree,
    /// `clean_stop` while no server runs on the catalog after a clean stop.
    state: sled::Tree,
}

impl Store {
    fn open(dir: &std::path::Path) -> Result<Store, sled::Error> {
        // sled caches up to 1 GiB by default; the catalog is read little and rebuildable.
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(32 * 1024 * 1024)
            .open()?;
        Ok(Store {
            files: db.open_tree("files")?,
            unhashed: db.open_tree("unhashed")?,
            intents: db.open_tree("intents")?,
            state: db.open_tree("state")?,
            db,
        })
    }

    /// The search table of everything in `files`.
    fn table(&self) -> Result<index::Table, CatalogError> {
        let mut table = index::Table::default();
        for item in self.files.iter() {
            let (key, value) = item?;
            let entry = decode(&String::from_utf8_lossy(&key), &value)?;
            table.push_sorted(
                entry.path.as_str(),
                entry.size,
                entry.modified.unix_timestamp(),
                entry.uploader.as_deref(),
            );
        }
        Ok(table)
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

fn to_datetime(time: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(time)
}

/// Truncates to whole seconds so that catalog times survive RFC 3339 round trips exactly.
fn whole_seconds(time: OffsetDateTime) -> OffsetDateTime {
    time.replace_nanosecond(0).unwrap_or(time)
}

impl Catalog {
    pub fn open(dir: &std::path::Path, archive: Arc<dyn Archive>) -> Result<Catalog, CatalogError> {
        let store = Store::open(dir)?;
        let table = store.table()?;
        Ok(Catalog {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                store: RwLock::new(Some(Arc::new(store))),
                hash_wanted: tokio::sync::Notify::new(),
                table: RwLock::new(table),
                gate: tokio::sync::RwLock::new(()),
                health: recovery::Health::default(),
                transfers_running: std::sync::OnceLock::new(),
            }),
            archive,
        })
    }

    /// Lets hashing pause while `busy` says transfers are running (set once, by the
    /// server; a catalog without it, as in `reindex`, never pauses).
    pub fn pause_hashing_while(&self, busy: hashing::Busy) {
        let _ = self.shared.transfers_running.set(busy);
    }

    /// The open database, for one operation.
    fn store(&self) -> Result<Arc<Store>, CatalogError> {
        self.shared
            .store
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or(CatalogError::Unavailable)
    }

    /// Files in the catalog, and an estimate of the bytes the search table holds.
    pub fn table_stats(&self) -> (usize, usize) {
        let table = self.read_table();
        (table.len(), table.heap_bytes())
    }

    // A panic while holding the lock cannot leave the table half-changed (each change is
    // one B-tree operation), so a poisoned lock is still good to use.
    fn read_table(&self) -> RwLockReadGuard<'_, index::Table> {
        self.shared
            .table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_table(&self) -> RwLockWriteGuard<'_, index::Table> {
        self.shared
            .table
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a committed upload: journal first (the archive's own record), then the index,
    /// flushed before returning. Without `sha256` the hash is computed in the background.
    pub async fn record_upload(
        &self,
        entry: &Entry,
        sha256: Option<String>,
        uploader: &str,
    ) -> Result<CatalogEntry, CatalogError> {
        let _writing = self.shared.gate.read().await;
        let recorded = self.journal_upload(entry, sha256, uploader).await;
        self.noted(recorded)
    }

    async fn journal_upload(
        &self,
        entry: &Entry,
        sha256: Option<String>,
        uploader: &str,
    ) -> Result<CatalogEntry, CatalogError> {
        let received = whole_seconds(OffsetDateTime::now_utc());
        let record = JournalRecord::Upload {
            path: entry.path.clone(),
            uploader: uploader.to_owned(),
            received,
            size: Some(entry.size),
            sha256: sha256.clone(),
        };
        self.journal(&record, received).await?;
        self.index(entry, sha256, uploader, received).await
    }

    /// Writes and flushes the index entry of a stored file (queued for hashing when
    /// `sha256` is `None`).
    async fn index(
        &self,
        entry: &Entry,
        sha256: Option<String>,
        uploader: &str,
        received: OffsetDateTime,
    ) -> Result<CatalogEntry, CatalogError> {
        let pending = sha256.is_none();
        let item = CatalogEntry {
            path: entry.path.clone(),
            size: entry.size,
            modified: whole_seconds(to_datetime(entry.modified)),
            sha256: sha256.unwrap_or_default(),
            uploader: Some(uploader.to_owned()),
            received,
        };
        self.put(&item)?;
        self.flush().await?;
        if pending {
            self.shared.hash_wanted.notify_one();
        }
        Ok(item)
    }

    /// Puts a file in the hasher's queue with a new generation (not flushed, not woken).
    fn queue_for_hashing(&self, store: &Store, path: &str) -> Result<(), CatalogError> {
        let generation = store.db.generate_id()?;
        store.unhashed.insert(path, &generation.to_be_bytes())?;
        Ok(())
    }

    /// Files still waiting for their hash.
    pub fn unhashed_len(&self) -> usize {
        self.store().map_or(0, |store| store.unhashed.len())
    }

    /// Computes the SHA-256 of every file recorded without one; returns how many got it.
    /// A file recorded again while it was being hashed keeps its place for the next round.
    pub async fn hash_pending(&self) -> Result<usize, CatalogError> {
        let hashed = self.hash_queued().await;
        self.noted(hashed)
    }

    async fn hash_queued(&self) -> Result<usize, CatalogError> {
        let queued = self
            .store()?
            .unhashed
            .iter()
            .collect::<Result<Vec<_>, _>>()?;
        let mut hashed = 0;
        for (key, generation) in queued {
            let path = String::from_utf8_lossy(&key).into_owned();
            let hash = match ArchivePath::parse(&path) {
                Ok(archive_path) => self.hash_file(&archive_path).await,
                Err(_) => Err(CatalogError::Decode {
                    path: path.clone(),
                    source: serde::de::Error::custom("not an archive path"),
                }),
            };
            let (sha256, length) = match hash {
                Ok(hash) => hash,
                // Removed since: nothing to hash.
                Err(CatalogError::Archive(ArchiveError::NotFound(_))) => {
                    let _ = self.store()?.unhashed.compare_and_swap(
                        &key,
                        Some(&generation),
                        None::<&[u8]>,
                    )?;
                    continue;
                }
                Err(err) => {
                    tracing::error!(
                        path,
                        "catalog: cannot hash the upload (retried at the next upload or start): {err}"
                    );
                    continue;
                }
            };
            // Under the table's lock no writer of `files` runs, so the entry and the queue
            // are read and changed as one.
            let store = self.store()?;
            let _table = self.write_table();
            if store.unhashed.get(&key)?.as_ref() != Some(&generation) {
                continue;
            }
            store.unhashed.remove(&key)?;
            let Some(value) = store.files.get(&key)? else {
                continue;
            };
            let mut entry = decode(&path, &value)?;
            if entry.size != length {
                tracing::warn!(
                    path,
                    "catalog: file changed outside the server since it was recorded; its hash waits for a reindex"
                );
                continue;
            }
            entry.sha256 = sha256;
            let value = serde_json::to_vec(&entry).map_err(|source| CatalogError::Decode {
                path: path.clone(),
                source,
            })?;
            store.files.insert(&key, value)?;
            hashed += 1;
        }
        if hashed > 0 {
            self.flush().await?;
        }
        Ok(hashed)
    }

    /// Records a file a feed grew in place, with the hash the feed kept up to date: the
    /// journal gets a line only when the file is new to the catalog (or changes hands), so
    /// a file appended to every second does not write a journal line every second.
    pub async fn record_append(
        &self,
        entry: &Entry,
        sha256: String,
        uploader: &str,
    ) -> Result<CatalogEntry, CatalogError> {
        let _writing = self.shared.gate.read().await;
        let recorded = self.journal_append(entry, sha256, uploader).await;
        self.noted(recorded)
    }

    async fn journal_append(
        &self,
        entry: &Entry,
        sha256: String,
        uploader: &str,
    ) -> Result<CatalogEntry, CatalogError> {
        let known = self.get(&entry.path)?;
        match known {
            // Only the first append is journaled, so `received` stays that first time:
            // what `reindex` derives from the journal. On an archive several servers share,
            // every append is (with that first time), so the others follow the growth.
            Some(known) if known.uploader.as_deref() == Some(uploader) => {
                if self.archive.writer_name().is_some() {
                    let record = JournalRecord::Upload {
                        path: entry.path.clone(),
                        uploader: uploader.to_owned(),
                        received: known.received,
                        size: Some(entry.size),
                        sha256: Some(sha256.clone()),
                    };
                    self.journal(&record, OffsetDateTime::now_utc()).await?;
                }
                self.index(entry, Some(sha256), uploader, known.received)
                    .await
            }
            _ => self.journal_upload(entry, Some(sha256), uploader).await,
        }
    }

    /// A sled tree of the catalog's database for a feed's own index (F-TICKS, telemetry
    /// records): derived data that lives and is backed up with the catalog.
    /// The database may be reopened (see `recovery`): take the tree for one operation, do
    /// not keep it.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, CatalogError> {
        Ok(self.store()?.db.open_tree(name)?)
    }

    /// Renames a file or folder in the archive and follows in the catalog. The rename is
    /// noted as begun (flushed) before the archive changes, so a server killed before the
    /// journal has its line finds it at the next start and journals it then
    /// (`recovery`): the file keeps who sent it. An archive refusal changes nothing.
    ///
    /// It runs to its end even when the caller is dropped (an FTP session whose client
    /// went away): cut short, an S3 rename would leave the file under both names.
    pub async fn rename(&self, from: &ArchivePath, to: &ArchivePath) -> Result<(), RenameError> {
        let (catalog, moved_from, moved_to) = (self.clone(), from.clone(), to.clone());
        let renaming =
            tokio::spawn(async move { catalog.rename_to_the_end(&moved_from, &moved_to).await });
        renaming.await.unwrap_or_else(|join| {
            Err(RenameError::Archive(ArchiveError::Io {
                path: from.clone(),
                source: std::io::Error::other(join),
            }))
        })
    }

    async fn rename_to_the_end(
        &self,
        from: &ArchivePath,
        to: &ArchivePath,
    ) -> Result<(), RenameError> {
        let _writing = self.shared.gate.read().await;
        let intent = recovery::intent_key(from, to);
        // Without a working database the rename goes on: catching up still makes the
        // catalog agree with the archive, only the sender of the file may be lost.
        let noted = self.note_intent(&intent).await;
        if let Err(err) = &noted {
            tracing::warn!(%from, %to, "catalog: rename not noted as begun: {err}");
        }
        let _ = self.noted(noted);
        if let Err(err) = self.archive.rename(from, to).await {
            // Not flushed: an intent left over is checked against the archive anyway.
            if let Ok(store) = self.store() {
                let _ = store.intents.remove(&intent);
            }
            return Err(RenameError::Archive(err));
        }
        let followed = self.follow_rename(from, to, &intent).await;
        self.noted(followed).map_err(RenameError::Catalog)
    }

    async fn note_intent(&self, intent: &[u8]) -> Result<(), CatalogError> {
        self.store()?.intents.insert(intent, &[])?;
        self.flush().await
    }

    /// Journals a rename done in the archive and moves the entries at or below `from`;
    /// the intent goes in the same flush. A journal failure keeps the intent, so catching
    /// up writes the line later.
    async fn follow_rename(
        &self,
        from: &ArchivePath,
        to: &ArchivePath,
        intent: &[u8],
    ) -> Result<(), CatalogError> {
        let now = OffsetDateTime::now_utc();
        self.journal(
            &JournalRecord::Rename {
                from: from.clone(),
                to: to.clone(),
            },
            now,
        )
        .await?;
        let store = self.store()?;
        for item in self.under(from)? {
            if let Some(moved) = item.path.rebase(from, to) {
                self.delete(&item.path)?;
                self.put(&CatalogEntry {
                    path: moved,
                    ..item
                })?;
            }
        }
        store.intents.remove(intent)?;
        self.flush().await?;
        Ok(())
    }

    /// Follows a deletion of a file (or an empty folder: nothing to do).
    pub async fn record_removal(&self, path: &ArchivePath) -> Result<(), CatalogError> {
        let _writing = self.shared.gate.read().await;
        let recorded = async {
            let now = OffsetDateTime::now_utc();
            self.journal(&JournalRecord::Remove { path: path.clone() }, now)
                .await?;
            self.delete(path)?;
            self.flush().await
        }
        .await;
        self.noted(recorded)
    }

    /// Refreshes the size and time of a file changed in place (append, resume); its hash
    /// follows in the background.
    pub async fn refresh(
        &self,
        entry: &Entry,
        uploader: &str,
    ) -> Result<CatalogEntry, CatalogError> {
        self.record_upload(entry, None, uploader).await
    }

    /// Every entry at or below `dir`, in path order.
    pub fn under(&self, dir: &ArchivePath) -> Result<Vec<CatalogEntry>, CatalogError> {
        let mut found = Vec::new();
        let prefix = dir.as_str().to_owned();
        for item in self.store()?.files.scan_prefix(prefix.as_bytes()) {
            let (key, value) = item?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let entry = decode(&key, &value)?;
            if entry.path.starts_with(dir) {
                found.push(entry);
            }
        }
        Ok(found)
    }

    /// One page of the direct children of `dir`, in key order, starting at `cursor` (the
    /// `next` of the page before). Folders are implied by the paths below them: a
    /// folder with 100,000 files yields its first page after reading a page of keys, and
    /// a subfolder costs one seek past its contents, so no second index needs keeping.
    /// `accept` sees each child's name first; at most `scan_limit` keys are read per page.
    pub fn children(
        &self,
        dir: &ArchivePath,
        cursor: Option<&str>,
        limit: usize,
        scan_limit: usize,
        accept: impl Fn(&str) -> bool,
    ) -> Result<Page<Child>, CatalogError> {
        let prefix = if dir.is_root() {
            "/".to_owned()
        } else {
            format!("{}/", dir.as_str())
        };
        let mut start = match cursor {
            Some(cursor) if cursor.starts_with(&prefix) => cursor.to_owned(),
            Some(_) => return Err(CatalogError::Cursor),
            None => prefix.clone(),
        };
        let store = self.store()?;
        let (mut items, mut scanned) = (Vec::new(), 0usize);
        'seek: loop {
            for item in store.files.range(start.as_bytes()..) {
                let (key, value) = item?;
                let key = String::from_utf8_lossy(&key).into_owned();
                let Some(rest) = key.strip_prefix(&prefix) else {
                    return Ok(Page { items, next: None });
                };
                if items.len() >= limit || scanned >= scan_limit {
                    return Ok(Page {
                        items,
                        next: Some(key),
                    });
                }
                scanned += 1;
                if let Some((name, _)) = rest.split_once('/') {
                    let name = name.to_owned();
                    // Everything below `name/` sorts before `name0` ('0' follows '/').
                    start = format!("{prefix}{name}0");
                    if accept(&name) {
                        items.push(Child::Dir(name));
                    }
                    continue 'seek;
                }
                if accept(rest) {
                    items.push(Child::File(decode(&key, &value)?));
                }
            }
            return Ok(Page { items, next: None });
        }
    }

    /// Entries at or below `dir` for which `accept_key` (on the path) and then `accept`
    /// hold, in path order, after `cursor` (the `next` of the page before); at most
    /// `scan_limit` files are looked at per page. Answered from the in-memory table, so
    /// looking at a file costs a few tens of nanoseconds; only the page's own entries are
    /// read from sled.
    pub fn search(
        &self,
        dir: &ArchivePath,
        cursor: Option<&str>,
        limit: usize,
        scan_limit: usize,
        accept_key: impl Fn(&str) -> bool,
        accept: impl Fn(&IndexedFile<'_>) -> bool,
    ) -> Result<Page<CatalogEntry>, CatalogError> {
        let prefix = if dir.is_root() {
            "/".to_owned()
        } else {
            format!("{}/", dir.as_str())
        };
        let from = match cursor {
            Some(cursor) if cursor.starts_with(&prefix) => Bound::Excluded(cursor),
            Some(_) => return Err(CatalogError::Cursor),
            None => Bound::Included(prefix.as_str()),
        };
        let (mut found, mut next) = (Vec::new(), None);
        {
            let table = self.read_table();
            let (mut scanned, mut last): (usize, Option<&str>) = (0, None);
            for file in table.range(&prefix, from) {
                if found.len() >= limit || scanned >= scan_limit {
                    next = last.map(str::to_owned);
                    break;
                }
                scanned += 1;
                if accept_key(file.path) && accept(&file) {
                    found.push(file.path.to_owned());
                }
                last = Some(file.path);
            }
        }
        // A file removed between the scan and here is left out of the page, not an error.
        let store = self.store()?;
        let mut items = Vec::with_capacity(found.len());
        for path in found {
            if let Some(value) = store.files.get(path.as_bytes())? {
                items.push(decode(&path, &value)?);
            }
        }
        Ok(Page { items, next })
    }

    /// Every entry, in path order (for statistics over the whole catalog).
    pub fn all(&self) -> impl Iterator<Item = Result<CatalogEntry, CatalogError>> + '_ {
        let (unavailable, files) = match self.store() {
            Ok(store) => (None, Some(store.files.iter())),
            Err(err) => (Some(Err(err)), None),
        };
        unavailable
            .into_iter()
            .chain(files.into_iter().flatten().map(|item| {
                let (key, value) = item?;
                decode(&String::from_utf8_lossy(&key), &value)
            }))
    }

    /// The entry of one file, if catalogued.
    pub fn get(&self, path: &ArchivePath) -> Result<Option<CatalogEntry>, CatalogError> {
        match self.store()?.files.get(path.as_str())? {
            Some(value) => decode(path.as_str(), &value).map(Some),
            None => Ok(None),
        }
    }

    /// The SHA-256 of a file as it is now: the catalog's, when its entry has one and
    /// still matches the file's size and time, else read from the archive.
    pub async fn sha256(&self, path: &ArchivePath) -> Result<String, CatalogError> {
        let file = self.archive.stat(path).await?;
        if let Some(entry) = self.get(path)?
            && !entry.sha256.is_empty()
            && entry.size == file.size
            && whole_seconds(entry.modified) == whole_seconds(to_datetime(file.modified))
        {
            return Ok(entry.sha256);
        }
        Ok(self.hash_file(path).await?.0)
    }

    /// Makes everything recorded so far durable.
    ///
    /// sled's own `flush_async` can leave concurrent callers waiting forever (sled issue
    /// #1241: seen here as uploads stuck before their 226 with 200 parallel sessions), so
    /// the synchronous flush runs on the blocking pool instead.
    /// A failure marks the catalog as behind (`recovery`), whoever flushed.
    pub async fn flush(&self) -> Result<(), CatalogError> {
        let store = self.store()?;
        let flushed = tokio::task::spawn_blocking(move || store.db.flush())
            .await
            .map_err(|join| CatalogError::Db(sled::Error::Io(std::io::Error::other(join))))
            .and_then(|flushed| Ok(flushed.map(drop)?));
        self.noted(flushed)
    }

    /// Rebuilds the catalog from the archive alone: every file is hashed again, and the
    /// journal says who sent it and when.
    pub async fn reindex(&self) -> Result<usize, CatalogError> {
        let _alone = self.shared.gate.write().await;
        // A rename cut short by a kill gets its journal line first, as a start would.
        self.resolve_intents().await?;
        let files = self.archive.walk(&ArchivePath::root()).await?;
        let origins = self.replay_journal().await?;
        self.clear_files()?;
        let mut indexed = 0;
        for file in &files {
            // One unreadable file is reported, not allowed to stop the whole rebuild.
            let sha256 = match self.hash_file(&file.path).await {
                Ok((sha256, _)) => sha256,
                Err(err) => {
                    tracing::error!(path = %file.path, "not indexed: {err}");
                    continue;
                }
            };
            indexed += 1;
            let modified = whole_seconds(to_datetime(file.modified));
            let (uploader, received) = origin(&origins, &file.path, modified);
            self.put(&CatalogEntry {
                path: file.path.clone(),
                size: file.size,
                modified,
                sha256,
                uploader,
                received,
            })?;
        }
        self.flush().await?;
        self.mark_clean().await?;
        Ok(indexed)
    }

    /// Who sent each path, and when, as the journal tells it (renames followed).
    async fn replay_journal(
        &self,
    ) -> Result<HashMap<ArchivePath, (String, OffsetDateTime)>, CatalogError> {
        let bytes = self.archive.read_records(JOURNAL_PREFIX).await?;
        let mut origins: HashMap<ArchivePath, (String, OffsetDateTime)> = HashMap::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            // A torn last line after a crash is skipped, not fatal.
            let Ok(record) = serde_json::from_slice::<JournalRecord>(line) else {
                tracing::warn!("skipping an unreadable upload journal line");
                continue;
            };
            match record {
                JournalRecord::Upload {
                    path,
                    uploader,
                    received,
                    ..
                } => {
                    origins.insert(path, (uploader, received));
                }
                JournalRecord::Remove { path } => {
                    origins.remove(&path);
                }
                JournalRecord::Rename { from, to } => {
                    let moved: Vec<ArchivePath> = origins
                        .keys()
                        .filter(|p| p.starts_with(&from))
                        .cloned()
                        .collect();
                    for path in moved {
                        if let (Some(origin), Some(target)) =
                            (origins.remove(&path), path.rebase(&from, &to))
                        {
                            origins.insert(target, origin);
                        }
                    }
                }
            }
        }
        Ok(origins)
    }

    async fn journal(
        &self,
        record: &JournalRecord,
        now: OffsetDateTime,
    ) -> Result<(), CatalogError> {
        let mut line = serde_json::to_vec(record).map_err(|source| CatalogError::Decode {
            path: "journal".into(),
            source,
        })?;
        line.push(b'\n');
        let name = format!(
            "{JOURNAL_PREFIX}{:04}-{:02}-{:02}.jsonl",
            now.year(),
            u8::from(now.month()),
            now.day()
        );
        self.archive
            .append_record(&name, &line)
            .await
            .map_err(CatalogError::Journal)
    }

    /// The SHA-256 (hex) of a stored file and the number of bytes it covers.
    async fn hash_file(&self, path: &ArchivePath) -> Result<(String, u64), CatalogError> {
        let reader = self.archive.open(path, 0).await?;
        hashing::sha256_of(reader, self.shared.transfers_running.get())
            .await
            .map_err(|source| {
                CatalogError::Archive(ArchiveError::Io {
                    path: path.clone(),
                    source,
                })
            })
    }

    // The only writers of `files`: each holds the table's write lock across the sled
    // change and the table's, so concurrent writers of one path leave both in one order.
    // The hasher's queue changes under the same lock: an entry without a hash is queued
    // (a new generation), one with a hash leaves the queue, so the hasher never sees a
    // generation without its entry (it would drop it, and the entry stay unhashed).

    fn put(&self, entry: &CatalogEntry) -> Result<(), CatalogError> {
        let value = serde_json::to_vec(entry).map_err(|source| CatalogError::Decode {
            path: entry.path.to_string(),
            source,
        })?;
        let store = self.store()?;
        let mut table = self.write_table();
        if entry.sha256.is_empty() {
            self.queue_for_hashing(&store, entry.path.as_str())?;
        } else {
            store.unhashed.remove(entry.path.as_str())?;
        }
        store.files.insert(entry.path.as_str(), value)?;
        table.insert(
            entry.path.as_str(),
            entry.size,
            entry.modified.unix_timestamp(),
            entry.uploader.as_deref(),
        );
        Ok(())
    }

    fn delete(&self, path: &ArchivePath) -> Result<(), CatalogError> {
        self.delete_key(path.as_str())
    }

    fn delete_key(&self, path: &str) -> Result<(), CatalogError> {
        let store = self.store()?;
        let mut table = self.write_table();
        store.unhashed.remove(path)?;
        store.files.remove(path)?;
        table.remove(path);
        Ok(())
    }

    fn clear_files(&self) -> Result<(), CatalogError> {
        let store = self.store()?;
        let mut table = self.write_table();
        store.unhashed.clear()?;
        store.files.clear()?;
        table.clear();
        Ok(())
    }
}

/// The background task that fills in the hashes of uploads: once at start (what a stopped
/// or crashed server left), then whenever an upload is recorded without one, until
/// shutdown. The server drains the queue once more after its services have stopped.
pub async fn run_hasher(catalog: Catalog, shutdown: crate::shutdown::Shutdown) {
    let mut stop = std::pin::pin!(shutdown.wait());
    loop {
        if let Err(err) = catalog.hash_pending().await {
            tracing::error!("catalog: hashing uploads: {err}");
        }
        tokio::select! {
            _ = catalog.shared.hash_wanted.notified() => {}
            _ = &mut stop => return,
        }
    }
}

/// Who sent a file and when, as `reindex` derives it: from the journal, else nobody, at
/// its modification time.
fn origin(
    origins: &HashMap<ArchivePath, (String, OffsetDateTime)>,
    path: &ArchivePath,
    modified: OffsetDateTime,
) -> (Option<String>, OffsetDateTime) {
    match origins.get(path) {
        Some((uploader, received)) => (Some(uploader.clone()), *received),
        None => (None, modified),
    }
}

fn decode(path: &str, bytes: &[u8]) -> Result<CatalogEntry, CatalogError> {
    serde_json::from_slice(bytes).map_err(|source| CatalogError::Decode {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::fs::FsArchive;

    fn catalog_with(paths: &[&str]) -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let archive = Arc::new(FsArchive::open(&dir.path().join("archive"), false).unwrap());
        let catalog = Catalog::open(&dir.path().join("catalog"), archive).unwrap();
        for path in paths {
            catalog
                .put(&CatalogEntry {
                    path: ArchivePath::parse(path).unwrap(),
                    size: path.len() as u64,
                    modified: OffsetDateTime::UNIX_EPOCH,
                    sha256: String::new(),
                    uploader: Some("u".into()),
                    received: OffsetDateTime::UNIX_EPOCH,
                })
                .unwrap();
        }
        (dir, catalog)
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(bytes))
    }

    #[tokio::test]
    async fn uploads_recorded_without_a_hash_get_it_in_the_background() {
        let (dir, catalog) = catalog_with(&[]);
        let root = dir.path().join("archive");
        std::fs::create_dir_all(root.join("n1")).unwrap();
        let path = |p: &str| ArchivePath::parse(p).unwrap();
        for (name, bytes) in [
            ("a.log", &b"alpha\n"[..]),
            ("b.log", b"beta\n"),
            ("c.log", b"c\n"),
        ] {
            std::fs::write(root.join("n1").join(name), bytes).unwrap();
            let entry = catalog
                .archive
                .stat(&path(&format!("/n1/{name}")))
                .await
                .unwrap();
            let recorded = catalog.record_upload(&entry, None, "n1").await.unwrap();
            assert_eq!(recorded.sha256, "", "recorded before its hash");
        }
        assert_eq!(catalog.unhashed_len(), 3);
        // Renamed and removed before the hasher ran: it follows the one, skips the other.
        catalog
            .rename(&path("/n1/b.log"), &path("/n1/renamed.log"))
            .await
            .unwrap();
        std::fs::remove_file(root.join("n1/c.log")).unwrap();
        catalog.record_removal(&path("/n1/c.log")).await.unwrap();

        assert_eq!(catalog.hash_pending().await.unwrap(), 2);
        assert_eq!(catalog.unhashed_len(), 0);
        let a = catalog.get(&path("/n1/a.log")).unwrap().unwrap();
        assert_eq!(a.sha256, sha256_hex(b"alpha\n"));
        let renamed = catalog.get(&path("/n1/renamed.log")).unwrap().unwrap();
        assert_eq!(renamed.sha256, sha256_hex(b"beta\n"));
        assert_eq!(catalog.get(&path("/n1/c.log")).unwrap(), None);

        // An append recorded while an older hash was pending: the newer content wins.
        std::fs::write(root.join("n1/a.log"), b"alpha\nmore\n").unwrap();
        let grown = catalog.archive.stat(&path("/n1/a.log")).await.unwrap();
        catalog.refresh(&grown, "n1").await.unwrap();
        assert_eq!(catalog.get(&path("/n1/a.log")).unwrap().unwrap().sha256, "");
        assert_eq!(catalog.hash_pending().await.unwrap(), 1);
        let a = catalog.get(&path("/n1/a.log")).unwrap().unwrap();
        assert_eq!((a.size, a.sha256), (11, sha256_hex(b"alpha\nmore\n")));
    }

    #[tokio::test]
    async fn a_hash_of_content_recorded_over_is_not_kept() {
        let (dir, catalog) = catalog_with(&[]);
        let root = dir.path().join("archive");
        let path = ArchivePath::parse("/x.log").unwrap();
        std::fs::write(root.join("x.log"), b"one\n").unwrap();
        let entry = catalog.archive.stat(&path).await.unwrap();
        catalog.record_upload(&entry, None, "u").await.unwrap();
        // The file grows behind the catalog's back (an upload committed, not yet recorded):
        // the hash covers other bytes than the entry's size, so it is not written.
        std::fs::write(root.join("x.log"), b"one\ntwo\n").unwrap();
        assert_eq!(catalog.hash_pending().await.unwrap(), 0);
        assert_eq!(catalog.get(&path).unwrap().unwrap().sha256, "");
        // The upload's own record then queues it again, and it gets its hash.
        let entry = catalog.archive.stat(&path).await.unwrap();
        catalog.record_upload(&entry, None, "u").await.unwrap();
        assert_eq!(catalog.hash_pending().await.unwrap(), 1);
        assert_eq!(
            catalog.get(&path).unwrap().unwrap().sha256,
            sha256_hex(b"one\ntwo\n")
        );
    }

    fn names(page: &Page<Child>) -> Vec<String> {
        page.items
            .iter()
            .map(|c| match c {
                Child::Dir(name) => format!("{name}/"),
                Child::File(e) => e.path.file_name().unwrap().to_owned(),
            })
            .collect()
    }

    #[test]
    fn children_list_folders_once_and_page_by_cursor() {
        let (_dir, catalog) = catalog_with(&[
            "/d/sub-x/a",
            "/d/sub.log",
            "/d/sub/inner/1",
            "/d/sub/inner/2",
            "/d/sub/z",
            "/d/z.log",
            "/dx/other",
            "/e/f",
        ]);
        let d = ArchivePath::parse("/d").unwrap();
        let all = catalog.children(&d, None, 100, 100, |_| true).unwrap();
        assert_eq!(names(&all), ["sub-x/", "sub.log", "sub/", "z.log"]);
        assert!(all.next.is_none());
        // Two at a time: every child exactly once.
        let first = catalog.children(&d, None, 2, 100, |_| true).unwrap();
        assert_eq!(names(&first), ["sub-x/", "sub.log"]);
        let second = catalog
            .children(&d, first.next.as_deref(), 2, 100, |_| true)
            .unwrap();
        assert_eq!(names(&second), ["sub/", "z.log"]);
        assert!(second.next.is_none());
        // Filtered; the root; a cursor from elsewhere.
        let only = catalog
            .children(&d, None, 100, 100, |n| n.ends_with(".log"))
            .unwrap();
        assert_eq!(names(&only), ["sub.log", "z.log"]);
        let root = catalog
            .children(&ArchivePath::root(), None, 100, 100, |_| true)
            .unwrap();
        assert_eq!(names(&root), ["d/", "dx/", "e/"]);
        assert!(matches!(
            catalog.children(&d, Some("/e/f"), 2, 100, |_| true),
            Err(CatalogError::Cursor)
        ));
    }

    fn found(catalog: &Catalog, dir: &str, needle: &str) -> Vec<String> {
        let dir = ArchivePath::parse(dir).unwrap();
        let page = catalog
            .search(&dir, None, 100, 100, |k| k.contains(needle), |_| true)
            .unwrap();
        page.items.iter().map(|e| e.path.to_string()).collect()
    }

    #[tokio::test]
    async fn the_search_table_follows_every_write_and_is_rebuilt_at_open() {
        let (dir, catalog) = catalog_with(&["/a/x.log", "/a/y.log", "/b/z.log"]);
        assert_eq!(
            found(&catalog, "/", ".log"),
            ["/a/x.log", "/a/y.log", "/b/z.log"]
        );
        // The entries only: the archive holds none of these files.
        let (a, c) = (
            ArchivePath::parse("/a").unwrap(),
            ArchivePath::parse("/c").unwrap(),
        );
        catalog
            .follow_rename(&a, &c, &recovery::intent_key(&a, &c))
            .await
            .unwrap();
        catalog
            .record_removal(&ArchivePath::parse("/b/z.log").unwrap())
            .await
            .unwrap();
        assert_eq!(found(&catalog, "/", ".log"), ["/c/x.log", "/c/y.log"]);
        assert!(found(&catalog, "/a", ".log").is_empty());
        // Filters see the table's records: size, time and source.
        let sized = catalog
            .search(
                &ArchivePath::root(),
                None,
                100,
                100,
                |_| true,
                |f| f.size == "/a/x.log".len() as u64 && f.source == Some("u") && f.modified == 0,
            )
            .unwrap();
        assert_eq!(sized.items.len(), 2);
        assert_eq!(catalog.table_stats().0, 2);
        // Reopened, the table is built again from sled alone.
        let archive = catalog.archive.clone();
        drop(catalog);
        // sled's background flusher lets go of the file lock a moment after the drop.
        let mut reopened = Catalog::open(&dir.path().join("catalog"), archive.clone());
        for _ in 0..100 {
            if reopened.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            reopened = Catalog::open(&dir.path().join("catalog"), archive.clone());
        }
        let reopened = reopened.unwrap();
        assert_eq!(found(&reopened, "/", ".log"), ["/c/x.log", "/c/y.log"]);
        // reindex rebuilds from the archive, which holds none of these files.
        reopened.reindex().await.unwrap();
        assert!(found(&reopened, "/", ".log").is_empty());
    }

    #[test]
    fn search_pages_within_the_folder() {
        let (_dir, catalog) = catalog_with(&["/d/a.log", "/d/b.txt", "/d/s/c.log", "/dx/d.log"]);
        let d = ArchivePath::parse("/d").unwrap();
        let logs = |cursor: Option<&str>| {
            catalog
                .search(&d, cursor, 1, 100, |k| k.ends_with(".log"), |_| true)
                .unwrap()
        };
        let first = logs(None);
        assert_eq!(first.items[0].path.as_str(), "/d/a.log");
        let second = logs(first.next.as_deref());
        assert_eq!(second.items[0].path.as_str(), "/d/s/c.log");
        assert!(second.next.is_none(), "the last match ends the search");
        // The scan limit ends a page early, with a cursor to go on from.
        let short = catalog
            .search(&d, None, 10, 1, |k| k.ends_with(".txt"), |_| true)
            .unwrap();
        assert!(short.items.is_empty() && short.next.is_some());
    }
}
