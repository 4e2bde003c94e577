//! The catalog: an index of every file in the archive (sled), for search and listings.
//!
//! Each completed upload is recorded with its path, size, modification time, SHA-256, the
//! user who sent it and when it was received. The catalog is derived data: the facts that a
//! file cannot carry itself (who sent it, when) are also appended to an upload journal in
//! the archive's reserved folder, so `reindex` rebuilds the catalog from the archive alone.
//!
//! Invariant: an entry is flushed to disk before the upload is acknowledged to its sender.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use logarchive_common::paths::ArchivePath;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use crate::archive::{Archive, ArchiveError, Entry};

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
    },
    Rename {
        from: ArchivePath,
        to: ArchivePath,
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
}

const JOURNAL_PREFIX: &str = "uploads-";

#[derive(Clone)]
pub struct Catalog {
    db: sled::Db,
    files: sled::Tree,
    archive: Arc<dyn Archive>,
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
        // sled caches up to 1 GiB by default; the catalog is read little and rebuildable.
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(32 * 1024 * 1024)
            .open()?;
        let files = db.open_tree("files")?;
        Ok(Catalog { db, files, archive })
    }

    /// Records a committed upload: journal first (the archive's own record), then the index,
    /// flushed before returning.
    pub async fn record_upload(
        &self,
        entry: &Entry,
        sha256: String,
        uploader: &str,
    ) -> Result<CatalogEntry, CatalogError> {
        let received = whole_seconds(OffsetDateTime::now_utc());
        let record = JournalRecord::Upload {
            path: entry.path.clone(),
            uploader: uploader.to_owned(),
            received,
        };
        self.journal(&record, received).await?;
        self.index(entry, sha256, uploader, received).await
    }

    /// Writes and flushes the index entry of a stored file.
    async fn index(
        &self,
        entry: &Entry,
        sha256: String,
        uploader: &str,
        received: OffsetDateTime,
    ) -> Result<CatalogEntry, CatalogError> {
        let item = CatalogEntry {
            path: entry.path.clone(),
            size: entry.size,
            modified: whole_seconds(to_datetime(entry.modified)),
            sha256,
            uploader: Some(uploader.to_owned()),
            received,
        };
        self.put(&item)?;
        self.flush().await?;
        Ok(item)
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
        let known = match self.files.get(entry.path.as_str())? {
            Some(value) => decode(entry.path.as_str(), &value)?.uploader,
            None => None,
        };
        if known.as_deref() != Some(uploader) {
            return self.record_upload(entry, sha256, uploader).await;
        }
        let received = whole_seconds(OffsetDateTime::now_utc());
        self.index(entry, sha256, uploader, received).await
    }

    /// A sled tree of the catalog's database for a feed's own index (F-TICKS, telemetry
    /// records): derived data that lives and is backed up with the catalog.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, CatalogError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Follows a rename of a file or folder.
    pub async fn record_rename(
        &self,
        from: &ArchivePath,
        to: &ArchivePath,
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
        for item in self.under(from)? {
            if let Some(moved) = item.path.rebase(from, to) {
                self.files.remove(item.path.as_str())?;
                self.put(&CatalogEntry {
                    path: moved,
                    ..item
                })?;
            }
        }
        self.flush().await?;
        Ok(())
    }

    /// Follows a deletion of a file (or an empty folder: nothing to do).
    pub async fn record_removal(&self, path: &ArchivePath) -> Result<(), CatalogError> {
        self.files.remove(path.as_str())?;
        self.flush().await?;
        Ok(())
    }

    /// Refreshes the size, time and hash of a file changed in place (append, resume).
    pub async fn refresh(
        &self,
        entry: &Entry,
        uploader: &str,
    ) -> Result<CatalogEntry, CatalogError> {
        let sha256 = self.hash_file(&entry.path).await?;
        self.record_upload(entry, sha256, uploader).await
    }

    /// Every entry at or below `dir`, in path order.
    pub fn under(&self, dir: &ArchivePath) -> Result<Vec<CatalogEntry>, CatalogError> {
        let mut found = Vec::new();
        let prefix = dir.as_str().to_owned();
        for item in self.files.scan_prefix(prefix.as_bytes()) {
            let (key, value) = item?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let entry = decode(&key, &value)?;
            if entry.path.starts_with(dir) {
                found.push(entry);
            }
        }
        Ok(found)
    }

    /// Makes everything recorded so far durable.
    ///
    /// sled's own `flush_async` can leave concurrent callers waiting forever (sled issue
    /// #1241: seen here as uploads stuck before their 226 with 200 parallel sessions), so
    /// the synchronous flush runs on the blocking pool instead.
    pub async fn flush(&self) -> Result<(), CatalogError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|join| CatalogError::Db(sled::Error::Io(std::io::Error::other(join))))??;
        Ok(())
    }

    /// Rebuilds the catalog from the archive alone: every file is hashed again, and the
    /// journal says who sent it and when.
    pub async fn reindex(&self) -> Result<usize, CatalogError> {
        let files = self.archive.walk(&ArchivePath::root()).await?;
        let origins = self.replay_journal().await?;
        self.files.clear()?;
        let mut indexed = 0;
        for file in &files {
            // One unreadable file is reported, not allowed to stop the whole rebuild.
            let sha256 = match self.hash_file(&file.path).await {
                Ok(sha256) => sha256,
                Err(err) => {
                    tracing::error!(path = %file.path, "not indexed: {err}");
                    continue;
                }
            };
            indexed += 1;
            let modified = whole_seconds(to_datetime(file.modified));
            let (uploader, received) = match origins.get(&file.path) {
                Some((uploader, received)) => (Some(uploader.clone()), *received),
                None => (None, modified),
            };
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
                } => {
                    origins.insert(path, (uploader, received));
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
        self.archive.append_record(&name, &line).await?;
        Ok(())
    }

    async fn hash_file(&self, path: &ArchivePath) -> Result<String, CatalogError> {
        let mut reader = self.archive.open(path, 0).await?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = reader
                .read(&mut buffer)
                .await
                .map_err(|source| ArchiveError::Io {
                    path: path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        Ok(hex::encode(hasher.finalize()))
    }

    fn put(&self, entry: &CatalogEntry) -> Result<(), CatalogError> {
        let value = serde_json::to_vec(entry).map_err(|source| CatalogError::Decode {
            path: entry.path.to_string(),
            source,
        })?;
        self.files.insert(entry.path.as_str(), value)?;
        Ok(())
    }
}

fn decode(path: &str, bytes: &[u8]) -> Result<CatalogEntry, CatalogError> {
    serde_json::from_slice(bytes).map_err(|source| CatalogError::Decode {
        path: path.to_owned(),
        source,
    })
}
