//! Following an archive that several servers share (`[storage] kind = "s3"`): each server
//! keeps its own catalog, and applies the journal records the other servers write to the
//! bucket (uploads, renames, removals), so that a file uploaded through any server is
//! listed and found by every server's web UI within `[storage] follow_interval` plus the
//! time to read the new records.
//!
//! Where a server got to is kept in the catalog (tree `follow`), so a restarted server
//! reads only what is new; a new server, or one whose catalog was lost, reads the whole
//! journal (as `reindex` does, without hashing files whose record carries the hash).
//!
//! Applying a record is idempotent: each one is applied as the archive is *now* (an upload
//! indexes the file as it stands, a removal of a file that exists again is ignored, a
//! rename of nothing keeps what is known of its target). A server far behind may read a
//! record twice, when journal objects it had read were merged meanwhile
//! ([`run_compaction_job`]), and ends where reading it once would have.

use logarchive_common::paths::ArchivePath;

use super::{Catalog, CatalogEntry, CatalogError, JOURNAL_PREFIX, JournalRecord, whole_seconds};
use crate::archive::{ArchiveError, EntryKind, RecordBatch};

const FOLLOW_TREE: &str = "follow";
const CURSOR_KEY: &str = "cursor";

impl Catalog {
    /// Applies what other servers recorded since the last call; how many records.
    /// `Ok(None)`: the archive is not shared (nothing to follow).
    pub async fn follow(&self, batch: &mut RecordBatch) -> Result<Option<usize>, CatalogError> {
        let _writing = self.shared.gate.read().await;
        let saved = self.tree(FOLLOW_TREE)?;
        if batch.cursor.is_empty()
            && let Some(cursor) = saved.get(CURSOR_KEY)?
        {
            batch
                .cursor
                .insert(String::from_utf8_lossy(&cursor).into_owned());
        }
        if !self.archive.follow_records(JOURNAL_PREFIX, batch).await? {
            return Ok(None);
        }
        let records = std::mem::take(&mut batch.records);
        let mut parsed = Vec::new();
        for line in records.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<JournalRecord>(line) {
                Ok(record) => parsed.push(record),
                Err(_) => tracing::warn!("skipping an unreadable journal record of another server"),
            }
        }
        let mut gone = Gone::new();
        let mut applied = 0;
        for record in latest_uploads(parsed) {
            self.apply(record, &mut gone).await?;
            applied += 1;
        }
        if let Some(newest) = batch.cursor.iter().max() {
            saved.insert(CURSOR_KEY, newest.as_bytes())?;
        }
        if applied > 0 {
            self.flush().await?;
        }
        Ok(Some(applied))
    }

    async fn apply(&self, record: JournalRecord, gone: &mut Gone) -> Result<(), CatalogError> {
        match record {
            JournalRecord::Upload {
                path,
                uploader,
                received,
                size,
                sha256,
            } => {
                self.index_upload(
                    path,
                    Origin {
                        uploader: Some(uploader),
                        received,
                        size,
                        sha256,
                    },
                    gone,
                )
                .await?;
            }
            JournalRecord::Rename { from, to } => {
                // An upload to a temporary name that was renamed before this server read
                // its record (the agent's STOR then RNFR/RNTO): index it under its new name.
                if let Some(origin) = gone.remove(&from) {
                    return self.index_upload(to, origin, gone).await;
                }
                let known = self.under(&from)?;
                if known.is_empty() {
                    // A file this server never indexed under `from`, or a record read a
                    // second time (a far-behind server reading a merged journal object):
                    // what the catalog knows of `to` already stays.
                    let origin = match self.get(&to)? {
                        Some(entry) => Origin {
                            uploader: entry.uploader,
                            received: entry.received,
                            size: None,
                            sha256: None,
                        },
                        None => Origin {
                            uploader: None,
                            received: time::OffsetDateTime::now_utc(),
                            size: None,
                            sha256: None,
                        },
                    };
                    return self.index_upload(to, origin, gone).await;
                }
                for item in known {
                    if let Some(moved) = item.path.rebase(&from, &to) {
                        self.delete(&item.path)?;
                        self.put(&CatalogEntry {
                            path: moved,
                            ..item
                        })?;
                    }
                }
            }
            JournalRecord::Remove { path } => {
                gone.remove(&path);
                // A record read a second time may be older than a new file of that name.
                let replaced = matches!(
                    self.archive.stat(&path).await,
                    Ok(entry) if entry.kind == EntryKind::File
                );
                if !replaced {
                    self.delete(&path)?;
                }
            }
        }
        Ok(())
    }

    /// Indexes a file another server stored, as it is now; one that is gone already is
    /// remembered in `gone`, in case a rename of it follows.
    async fn index_upload(
        &self,
        path: ArchivePath,
        origin: Origin,
        gone: &mut Gone,
    ) -> Result<(), CatalogError> {
        let entry = match self.archive.stat(&path).await {
            Ok(entry) if entry.kind == EntryKind::File => entry,
            Ok(_) => return Ok(()),
            Err(ArchiveError::NotFound(_)) => {
                gone.insert(path, origin);
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        };
        // Without the uploader's hash (an append, or a file grown since), this server's
        // hasher computes it, as for its own uploads.
        let sha256 = match origin.sha256 {
            Some(sha256) if origin.size == Some(entry.size) => Some(sha256),
            _ => None,
        };
        let modified = whole_seconds(time::OffsetDateTime::from(entry.modified));
        self.put(&CatalogEntry {
            path,
            size: entry.size,
            modified,
            sha256: sha256.clone().unwrap_or_default(),
            uploader: origin.uploader,
            received: origin.received,
        })?;
        if sha256.is_none() {
            self.shared.hash_wanted.notify_one();
        }
        Ok(())
    }
}

/// The records without the uploads followed by a later upload of the same path, with no
/// rename or removal touching it in between: a file a feed grows has a record per append,
/// and indexing it once, as it is now, costs one HEAD instead of one per record.
fn latest_uploads(records: Vec<JournalRecord>) -> Vec<JournalRecord> {
    let mut uploaded_later: std::collections::HashSet<ArchivePath> = Default::default();
    let mut kept: Vec<JournalRecord> = records
        .into_iter()
        .rev()
        .filter(|record| match record {
            JournalRecord::Upload { path, .. } => uploaded_later.insert(path.clone()),
            JournalRecord::Remove { path } => {
                uploaded_later.remove(path);
                true
            }
            JournalRecord::Rename { from, to } => {
                uploaded_later.retain(|p| !p.starts_with(from) && !p.starts_with(to));
                true
            }
        })
        .collect();
    kept.reverse();
    kept
}

/// What an upload record says about a file.
struct Origin {
    uploader: Option<String>,
    received: time::OffsetDateTime,
    size: Option<u64>,
    sha256: Option<String>,
}

/// Uploads whose file had gone (renamed or removed) when their record was read.
type Gone = std::collections::HashMap<ArchivePath, Origin>;

/// How old a journal object must be before it is merged: far beyond the follow look-back,
/// so objects written late (slow PUTs, skewed clocks) are in their place by then.
pub const COMPACT_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Merges old journal objects at start and every [`COMPACT_AGE`] until shutdown, so
/// `reindex` and a new server read a few objects per day instead of one per batch.
pub async fn run_compaction_job(
    archive: std::sync::Arc<dyn crate::archive::Archive>,
    shutdown: crate::shutdown::Shutdown,
) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(COMPACT_AGE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        match archive.compact_records(COMPACT_AGE).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "journal: old record objects merged"),
            Err(err) => tracing::warn!("journal: cannot merge old record objects: {err}"),
        }
    }
}

/// Follows the shared archive every `interval` until shutdown (nothing to do for an archive
/// only this server writes).
pub async fn run_job(
    catalog: Catalog,
    interval: std::time::Duration,
    shutdown: crate::shutdown::Shutdown,
) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = RecordBatch::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        match catalog.follow(&mut batch).await {
            Ok(None) => return,
            Ok(Some(0)) => {}
            Ok(Some(applied)) => tracing::debug!(applied, "catalog: followed other servers"),
            Err(err) => tracing::warn!("catalog: cannot follow the shared archive: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(path: &str, size: u64) -> JournalRecord {
        JournalRecord::Upload {
            path: ArchivePath::parse(path).unwrap(),
            uploader: "syslog".into(),
            received: time::OffsetDateTime::UNIX_EPOCH,
            size: Some(size),
            sha256: None,
        }
    }

    fn describe(records: &[JournalRecord]) -> Vec<String> {
        records
            .iter()
            .map(|record| match record {
                JournalRecord::Upload { path, size, .. } => format!("up {path} {size:?}"),
                JournalRecord::Remove { path } => format!("rm {path}"),
                JournalRecord::Rename { from, to } => format!("mv {from} {to}"),
            })
            .collect()
    }

    #[test]
    fn a_grown_file_is_indexed_once_per_batch_and_order_is_kept() {
        let path = |p: &str| ArchivePath::parse(p).unwrap();
        let records = vec![
            upload("/s/a.log", 1),
            upload("/s/b.log", 1),
            upload("/s/a.log", 2),
            JournalRecord::Rename {
                from: path("/s/b.log"),
                to: path("/s/c.log"),
            },
            upload("/s/b.log", 5),
            upload("/s/a.log", 3),
            JournalRecord::Remove {
                path: path("/s/b.log"),
            },
            upload("/s/b.log", 7),
        ];
        assert_eq!(
            describe(&latest_uploads(records)),
            [
                "up /s/b.log Some(1)",
                "mv /s/b.log /s/c.log",
                "up /s/b.log Some(5)",
                "up /s/a.log Some(3)",
                "rm /s/b.log",
                "up /s/b.log Some(7)",
            ]
        );
    }
}
