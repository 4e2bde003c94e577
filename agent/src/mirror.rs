//! The mirror: decides, for each settled local file, what the server needs — nothing, the
//! appended bytes, the whole file, or a rename — and does it so that a crash at any moment
//! loses nothing and sends nothing twice.
//!
//! - New files go to a hidden temporary name in the target folder and are renamed into
//!   place once the server reports the full size, so no server ever shows a partial file.
//!   Small ones go straight to their final name where the server itself shows nothing
//!   before the whole announced size arrived and never replaces a file (`upload_new`).
//! - Growth is sent with APPE while the remote size equals the confirmed size.
//! - The archive only grows: content that does not extend the remote copy (truncation,
//!   copytruncate, rewrite) first moves the old remote copy to `<name>.<UTC stamp>`.
//! - Copytruncate (`app.log` copied to `app.log.1`, then truncated): when the server holds
//!   exactly the copy's first bytes (`SITE SHA256`), its copy is renamed to the copy's
//!   name instead, so the old bytes are archived once, not as a version and again as
//!   `app.log.1`.
//! - A renamed file (same device, inode and first bytes) is renamed on the server, also when
//!   a new file already took its old name (logrotate's `create`).
//! - Before every transfer the record says what is about to happen; after a restart the
//!   server's sizes tell how far it got.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use logarchive_common::rate::RateLimiter;
use sha2::{Digest, Sha256};

use crate::local_range::FirstBytes;
use crate::record::{FileRecord, Record, SendState};
use crate::remote::{Remote, RemoteError, StoredNew};
use crate::scan::{LocalFile, Watch};

/// How many leading bytes identify a file's content.
const FINGERPRINT_BYTES: u64 = 4096;

/// The largest file sent by `Remote::store_new` (straight to its final name). An
/// interrupted `store_new` starts again from the first byte, so this bounds what an
/// interruption costs; larger files go through a temporary name that REST can resume.
const STORE_NEW_MAX: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
    #[error("{path}: {source}")]
    Local {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: the server has {remote} bytes after the transfer, expected {expected}")]
    SizeMismatch {
        path: String,
        remote: u64,
        expected: u64,
    },
}

/// SHA-256 (hex) of the first `len` bytes of the file at `path` whose identity (device,
/// inode) is `identity`; `None` if it is shorter, or if the path holds another file now (a
/// rotation since the scan must not lend the new file's bytes to the old one's record).
/// Also the check that a local file starts with a whole remote file (copytruncate).
fn fingerprint(path: &Path, identity: (u64, u64), len: u64) -> Result<Option<String>, MirrorError> {
    let err = |source| MirrorError::Local {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    if (meta.dev(), meta.ino()) != identity {
        return Ok(None);
    }
    let mut reader = file.take(len);
    let mut hasher = Sha256::new();
    let read = std::io::copy(&mut reader, &mut hasher).map_err(err)?;
    Ok((read == len).then(|| hex::encode(hasher.finalize())))
}

/// The fingerprint of the first `len` bytes of the file at `path` (identity `identity`),
/// read at once with the `record.fingerprint_len` bytes before them, which must still be
/// the record's; `None` when they are not (rewritten, or copied and truncated), the file
/// is shorter or the path holds another file.
fn longer_fingerprint(
    path: &Path,
    identity: (u64, u64),
    record: &FileRecord,
    len: u64,
) -> Result<Option<String>, MirrorError> {
    let err = |source| MirrorError::Local {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    if (meta.dev(), meta.ino()) != identity || record.fingerprint_len > len {
        return Ok(None);
    }
    let mut head = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut head).map_err(err)?;
    if head.len() as u64 != len {
        return Ok(None);
    }
    let still = hex::encode(Sha256::digest(&head[..record.fingerprint_len as usize]));
    Ok((still == record.fingerprint).then(|| hex::encode(Sha256::digest(&head))))
}

/// Whether the file at `path` (identity `identity`, now `size` bytes) still starts with
/// what `record` confirmed, by its fingerprint.
fn starts_as_confirmed(
    path: &Path,
    identity: (u64, u64),
    size: u64,
    record: &FileRecord,
) -> Result<bool, MirrorError> {
    Ok(record.confirmed <= size
        && fingerprint(path, identity, record.fingerprint_len)?.as_deref()
            == Some(&record.fingerprint))
}

/// What the file must go on starting with while it is sent: what its record says.
fn first_bytes(record: &FileRecord) -> FirstBytes {
    FirstBytes {
        len: record.fingerprint_len,
        sha256: record.fingerprint.clone(),
    }
}

/// The temporary name an upload of `remote` goes to: hidden, in the same folder.
pub fn temp_name(remote: &str) -> String {
    let (dir, name) = remote.rsplit_once('/').unwrap_or(("", remote));
    format!("{dir}/.{name}.logarchive-part")
}

fn version_name(remote: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{remote}.{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// What `keep_as_version` found under the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeldCopy {
    /// No file: nothing to keep.
    Nothing,
    /// Another content: renamed to a version name.
    KeptAsVersion,
    /// Exactly the local file's first bytes (`whole`: all of them): left to be replaced.
    StartOfThisFile { whole: bool },
}

/// The archive only grows: a remote file about to be replaced by `local` is first renamed
/// to `<name>.<UTC stamp>` (with `.1`, `.2`... when that name is taken). Unless it holds
/// exactly `local`'s first bytes (logarchive-server tells by `SITE SHA256`), or nothing:
/// then replacing it loses nothing, and keeping it would archive those bytes twice. (A
/// send whose record a kill or a cut connection lost ends here; found by the soak.)
async fn keep_as_version(
    remote: &mut Remote,
    path: &str,
    local: &LocalFile,
) -> Result<HeldCopy, MirrorError> {
    let Some(held) = remote.size(path).await? else {
        return Ok(HeldCopy::Nothing);
    };
    // An empty copy holds nothing to keep.
    if held == 0 {
        return Ok(HeldCopy::StartOfThisFile {
            whole: local.size == 0,
        });
    }
    if held <= local.size
        && let Some(hash) = remote.sha256(path).await?
        && prefix_sha256(local, held).await?.as_deref() == Some(hash.as_str())
    {
        return Ok(HeldCopy::StartOfThisFile {
            whole: held == local.size,
        });
    }
    let stamp = version_name(path);
    let mut version = stamp.clone();
    let mut n = 0;
    while remote.size(&version).await?.is_some() {
        n += 1;
        version = format!("{stamp}.{n}");
    }
    remote.rename(path, &version).await?;
    tracing::info!(remote = %path, kept = %version, "remote copy kept as a version");
    Ok(HeldCopy::KeptAsVersion)
}

/// `fingerprint` of `file`'s first `len` bytes, which may be many: read off the runtime.
async fn prefix_sha256(file: &LocalFile, len: u64) -> Result<Option<String>, MirrorError> {
    let (path, identity) = (file.local.clone(), (file.dev, file.ino));
    tokio::task::spawn_blocking(move || fingerprint(&path, identity, len))
        .await
        .map_err(|join| MirrorError::Local {
            path: file.local.display().to_string(),
            source: std::io::Error::other(join),
        })?
}

/// True when `file` is exactly as confirmed: same identity, size and modification time
/// (no need to read its first bytes). Anything else goes through the full comparison.
pub fn is_unchanged(record: &FileRecord, file: &LocalFile) -> bool {
    record.state == SendState::Confirmed
        && record.dev == file.dev
        && record.ino == file.ino
        && record.confirmed == file.size
        && record.mtime_seen == file.mtime
        && record.remote == file.remote
}

/// The record of a file the server holds whole (`upload_whole` starts from it; `import`
/// writes it for the Python agent's uploads once `SIZE` matched, so the mirror then treats
/// such a file like one it sent itself).
pub fn confirmed_record(file: &LocalFile) -> Result<FileRecord, MirrorError> {
    let fingerprint_len = file.size.min(FINGERPRINT_BYTES);
    Ok(FileRecord {
        local: file.local.clone(),
        remote: file.remote.clone(),
        dev: file.dev,
        ino: file.ino,
        fingerprint: fingerprint(&file.local, (file.dev, file.ino), fingerprint_len)?
            .unwrap_or_default(),
        fingerprint_len,
        size_seen: file.size,
        mtime_seen: file.mtime,
        confirmed: file.size,
        state: SendState::Confirmed,
    })
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    /// The path holds another file since the scan, or none (rotated or deleted a moment
    /// ago): nothing done; the next pass sees the files as they are.
    Gone,
    Uploaded,
    Appended,
    Renamed,
}

pub struct Mirror {
    pub record: Record,
    pub limiters: Vec<Arc<RateLimiter>>,
    /// Held while a file that may take part in a copytruncate is synced: the copy and the
    /// truncated file can be in two sessions at once, and only one may move the server's
    /// copy (the other then finds the record moved).
    pub copy_turn: tokio::sync::Mutex<()>,
}

impl Mirror {
    /// Brings the server up to date with `file`, found by `watch`.
    pub async fn sync(
        &self,
        remote: &mut Remote,
        watch: &Watch,
        file: &LocalFile,
    ) -> Result<Outcome, MirrorError> {
        // Everything below reads the file by its path: a rotation since the scan would lend
        // the new file's bytes to the old file's record (found by the soak: the rotated
        // file's record lost its fingerprint, and it was sent again whole).
        match std::fs::symlink_metadata(&file.local) {
            Ok(meta) if (meta.dev(), meta.ino()) == (file.dev, file.ino) => {}
            Ok(_) => return Ok(Outcome::Gone),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Outcome::Gone),
            Err(source) => {
                return Err(MirrorError::Local {
                    path: file.local.display().to_string(),
                    source,
                });
            }
        }
        let mut known = self.record.get(&file.local)?;
        let other_file = |known: &Option<FileRecord>| {
            known
                .as_ref()
                .is_none_or(|record| (record.dev, record.ino) != (file.dev, file.ino))
        };
        // Same file, but no longer starting as confirmed (truncated or rewritten).
        let rewritten = |known: &Option<FileRecord>| -> Result<bool, MirrorError> {
            Ok(match known {
                Some(record) if (record.dev, record.ino) == (file.dev, file.ino) => {
                    !is_unchanged(record, file)
                        && !starts_as_confirmed(
                            &file.local,
                            (file.dev, file.ino),
                            file.size,
                            record,
                        )?
                }
                _ => false,
            })
        };
        // A copytruncate: the copy (`app.log.1`) and the file truncated (`app.log`).
        let copied_from = match other_file(&known) {
            true => self.copy_source(file)?,
            false => None,
        };
        let _copy_turn = match copied_from.is_some() || rewritten(&known)? {
            true => {
                let turn = self.copy_turn.lock().await;
                known = self.record.get(&file.local)?;
                Some(turn)
            }
            false => None,
        };
        // The copy: the server's copy of the file truncated since becomes this file's.
        if other_file(&known)
            && let Some(source) = copied_from
        {
            // Its last append or upload may have been cut short (a full disk, a kill):
            // settled from the server's sizes first.
            let source = self.recover(remote, source).await?;
            if source.dev != u64::MAX && self.move_to_copy(remote, file, &source).await? {
                known = self.record.get(&file.local)?;
            }
        }
        // A path with no record, or whose record is another file's (logrotate's `create`
        // put a new file at an old name: `app.log.1` of the generation before), may hold a
        // file that was renamed here.
        if other_file(&known)
            && let Some(old) = self.renamed_from(remote, file).await?
        {
            return self.follow_rename(remote, file, old).await;
        }
        let Some(mut record) = known else {
            return self.upload_new(remote, file).await;
        };
        if is_unchanged(&record, file) {
            return Ok(Outcome::Unchanged);
        }
        // Only an interrupted whole upload can have left a temporary file of ours, and it
        // may be continued only if the file still starts as it did: after a truncation or
        // copytruncate the temporary file holds the old content, and resuming would glue
        // the new content's tail onto the old content's head (found by the soak).
        let resume = matches!(record.state, SendState::Sending { .. })
            && record.dev == file.dev
            && record.ino == file.ino
            && fingerprint(&file.local, (file.dev, file.ino), record.fingerprint_len)?.as_deref()
                == Some(&record.fingerprint);
        record = self.recover(remote, record).await?;
        let same_file = record.dev == file.dev && record.ino == file.ino;
        let same_start = same_file
            && starts_as_confirmed(&file.local, (file.dev, file.ino), file.size, &record)?;
        if same_start && file.size == record.confirmed && record.remote == file.remote {
            if record.mtime_seen != file.mtime {
                record.mtime_seen = file.mtime;
                self.record.stage(&record)?;
            }
            return Ok(Outcome::Unchanged);
        }
        if same_start && file.size > record.confirmed && record.remote == file.remote {
            // Growth: append, if the server still has exactly what was confirmed.
            if remote.size(&record.remote).await? == Some(record.confirmed) {
                return self.append(remote, file, record).await;
            }
        }
        // Truncated, and copied first (copytruncate): the server's copy moves to the copy's
        // name, and this file starts anew.
        if same_file
            && !same_start
            && let Some(copy) = self.copy_beside(watch, file, &record)?
            && self.move_to_copy(remote, &copy, &record).await?
        {
            return self.upload_new(remote, file).await;
        }
        // Anything else replaces the remote copy; upload_whole keeps that copy as a version.
        self.upload_whole(remote, file, resume).await
    }

    /// The record of a file that `file` may be a copy of: beside it, named as the start of
    /// `file`'s name up to a `.`, `-` or `_` (`app.log` for `app.log.1` or
    /// `app.log-20241122`), the same file as recorded but now shorter than confirmed.
    fn copy_source(&self, file: &LocalFile) -> Result<Option<FileRecord>, MirrorError> {
        let (Some(dir), Some(name)) = (
            file.local.parent(),
            file.local.file_name().and_then(|n| n.to_str()),
        ) else {
            return Ok(None);
        };
        for (at, _) in name
            .match_indices(['.', '-', '_'])
            .filter(|(at, _)| *at > 0)
        {
            let Some(record) = self.record.get(&dir.join(&name[..at]))? else {
                continue;
            };
            let Ok(meta) = std::fs::symlink_metadata(&record.local) else {
                continue;
            };
            if (meta.dev(), meta.ino()) == (record.dev, record.ino)
                && record.confirmed <= file.size
                && !starts_as_confirmed(
                    &record.local,
                    (meta.dev(), meta.ino()),
                    meta.len(),
                    &record,
                )?
            {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    /// A file beside `file` that the watch mirrors, not recorded yet, named as `file`'s
    /// name followed by `.`, `-` or `_`, and starting as `record` confirmed: maybe the
    /// copy a copytruncate made before truncating `file`.
    fn copy_beside(
        &self,
        watch: &Watch,
        file: &LocalFile,
        record: &FileRecord,
    ) -> Result<Option<LocalFile>, MirrorError> {
        let (Some(dir), Some(name)) = (
            file.local.parent(),
            file.local.file_name().and_then(|n| n.to_str()),
        ) else {
            return Ok(None);
        };
        let entries = std::fs::read_dir(dir).map_err(|source| MirrorError::Local {
            path: dir.display().to_string(),
            source,
        })?;
        for entry in entries.flatten() {
            let copy_name = entry.file_name();
            let Some(rest) = copy_name.to_str().and_then(|n| n.strip_prefix(name)) else {
                continue;
            };
            if !rest.starts_with(['.', '-', '_']) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.len() < record.confirmed {
                continue;
            }
            // Several copies may wait (rotated twice before the agent looked): the one
            // that starts as confirmed.
            if let Some(copy) = watch.local_file(entry.path(), &meta)
                && self.record.by_identity(copy.dev, copy.ino)?.is_none()
                && starts_as_confirmed(&copy.local, (copy.dev, copy.ino), copy.size, record)?
            {
                return Ok(Some(copy));
            }
        }
        Ok(None)
    }

    /// If the server's copy of `source` holds exactly the first bytes of `copy` (its size
    /// and its SHA-256, which only logarchive-server tells), renames it to `copy`'s remote
    /// name and moves the record to `copy`. Also finishes a move a kill cut short (the
    /// server's copy already there). False when it is not such a copy, or the server
    /// cannot tell: the caller then sends as usual.
    async fn move_to_copy(
        &self,
        remote: &mut Remote,
        copy: &LocalFile,
        source: &FileRecord,
    ) -> Result<bool, MirrorError> {
        if source.state != SendState::Confirmed
            || source.confirmed == 0
            || copy.size < source.confirmed
            || copy.remote == source.remote
            || fingerprint(&copy.local, (copy.dev, copy.ino), source.fingerprint_len)?.as_deref()
                != Some(&source.fingerprint)
        {
            return Ok(false);
        }
        let at_source = remote.size(&source.remote).await?;
        let at_copy = remote.size(&copy.remote).await?;
        let held_at = match (at_source, at_copy) {
            (Some(size), None) if size == source.confirmed => &source.remote,
            // Moved before a kill; the record was not.
            (None, Some(size)) if size == source.confirmed => &copy.remote,
            _ => return Ok(false),
        };
        let Some(held) = remote.sha256(held_at).await? else {
            return Ok(false);
        };
        if prefix_sha256(copy, source.confirmed).await?.as_deref() != Some(held.as_str()) {
            return Ok(false);
        }
        if *held_at == source.remote {
            remote.ensure_parent(&copy.remote).await?;
            remote.rename(&source.remote, &copy.remote).await?;
        }
        tracing::info!(from = %source.remote, to = %copy.remote, "renamed on the server: the local file was copied, then truncated");
        let record = FileRecord {
            local: copy.local.clone(),
            remote: copy.remote.clone(),
            dev: copy.dev,
            ino: copy.ino,
            size_seen: source.confirmed,
            mtime_seen: copy.mtime,
            ..source.clone()
        };
        self.record.rekey(&source.local, &record)?;
        Ok(true)
    }

    /// A record whose identity and first bytes match `file` while its own path is gone or
    /// now holds another file (logrotate's `create` mode makes a new file there at once):
    /// a rotation by rename.
    async fn renamed_from(
        &self,
        remote: &mut Remote,
        file: &LocalFile,
    ) -> Result<Option<FileRecord>, MirrorError> {
        let Some(record) = self.record.by_identity(file.dev, file.ino)? else {
            return Ok(None);
        };
        if record.local == file.local {
            return Ok(None);
        }
        let old_path_moved_on = match std::fs::symlink_metadata(&record.local) {
            Ok(meta) => (meta.dev(), meta.ino()) != (record.dev, record.ino),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => true,
            Err(source) => {
                return Err(MirrorError::Local {
                    path: record.local.display().to_string(),
                    source,
                });
            }
        };
        if !old_path_moved_on {
            return Ok(None);
        }
        // A kill -9 can leave the record a step behind the server (the final state of an
        // upload is not flushed at once): settle that first, from the server's sizes.
        let record = self.recover(remote, record).await?;
        let moved = (record.dev, record.ino) == (file.dev, file.ino)
            && fingerprint(&file.local, (file.dev, file.ino), record.fingerprint_len)?.as_deref()
                == Some(&record.fingerprint);
        Ok(moved.then_some(record))
    }

    async fn follow_rename(
        &self,
        remote: &mut Remote,
        file: &LocalFile,
        old: FileRecord,
    ) -> Result<Outcome, MirrorError> {
        let at_target = remote.size(&file.remote).await?;
        // Killed between the server's rename and the rekey below: the old name is gone and
        // the new one holds exactly the confirmed bytes, so the rename is done.
        let done_before = at_target == Some(old.confirmed)
            && old.remote != file.remote
            && remote.size(&old.remote).await?.is_none();
        let moved = done_before
            || (at_target.is_none()
                && remote.ensure_parent(&file.remote).await.is_ok()
                && remote.rename(&old.remote, &file.remote).await.is_ok());
        if !moved {
            // Not permitted (no 'f') or the name is taken: send it under its new name.
            return self.upload_whole(remote, file, false).await;
        }
        tracing::info!(from = %old.remote, to = %file.remote, "renamed on the server");
        let record = FileRecord {
            local: file.local.clone(),
            remote: file.remote.clone(),
            ..old.clone()
        };
        self.record.rekey(&old.local, &record)?;
        // It may have grown since; the next pass appends.
        if file.size > record.confirmed {
            return self.append(remote, file, record).await;
        }
        Ok(Outcome::Renamed)
    }

    /// Finishes what a crash interrupted, asking the server how far it got.
    async fn recover(
        &self,
        remote: &mut Remote,
        mut record: FileRecord,
    ) -> Result<FileRecord, MirrorError> {
        match record.state.clone() {
            SendState::Confirmed => return Ok(record),
            SendState::Sending { temp, size } => {
                let at_temp = remote.size(&temp).await?;
                let at_final = remote.size(&record.remote).await?;
                if at_temp.is_none() && at_final == Some(size) {
                    // Renamed into place before the crash; only the record was behind.
                    record.confirmed = size;
                } else {
                    // upload_whole resumes from the temporary file.
                    record.confirmed = 0;
                    record.dev = u64::MAX; // forces a whole upload below
                }
            }
            SendState::Appending { from, to } => match remote.size(&record.remote).await? {
                Some(size) if size == to => record.confirmed = to,
                Some(size) if size >= from && size < to => {
                    // Part of the append arrived (a plain FTP server keeps it): the bytes
                    // on the server are ours (`local_range` sends no byte read after a
                    // truncation), so continue from there.
                    record.confirmed = size;
                }
                _ => record.dev = u64::MAX,
            },
        }
        record.state = SendState::Confirmed;
        if record.dev != u64::MAX {
            // The fingerprint stays the one taken before the interrupted step, from the
            // content that was sent: taking it now from the local file would vouch for
            // whatever the file holds now (after a copytruncate, other content), and the
            // next append would glue that onto the server's copy (found by the soak).
            self.record.put(&record)?;
        }
        Ok(record)
    }

    /// Sends a file the server should not have yet. Where the server stores a new file under
    /// its final name in one step (`Remote::store_new`), a small file goes that way: one
    /// command instead of a temporary name, two `SIZE`s and a rename, which for a backlog
    /// of small files is most of the time spent. A larger one goes through `upload_whole`,
    /// whose temporary file survives an interruption to be resumed with REST (the server
    /// drops a cut `store_new`).
    ///
    /// The record is staged, not flushed: a kill before the background flush leaves no
    /// record, and the next run's `store_new` finds the name taken by the same bytes, which
    /// it then records without sending them again.
    async fn upload_new(
        &self,
        remote: &mut Remote,
        file: &LocalFile,
    ) -> Result<Outcome, MirrorError> {
        if !remote.stores_new() || file.size > STORE_NEW_MAX {
            return self.upload_whole(remote, file, false).await;
        }
        let record = confirmed_record(file)?;
        remote.ensure_parent(&file.remote).await?;
        let stored = remote
            .store_new(
                file,
                &file.remote,
                file.size,
                first_bytes(&record),
                &self.limiters,
            )
            .await?;
        if stored == StoredNew::Taken {
            if keep_as_version(remote, &file.remote, file).await?
                != (HeldCopy::StartOfThisFile { whole: true })
            {
                return self.upload_whole(remote, file, false).await;
            }
            tracing::info!(local = %file.local.display(), remote = %file.remote, "already on the server (a record lost to a kill): recorded, not sent again");
        } else {
            tracing::info!(local = %file.local.display(), remote = %file.remote, bytes = file.size, "uploaded");
        }
        self.record.stage(&record)?;
        Ok(Outcome::Uploaded)
    }

    /// Sends the whole file to its temporary name and renames it into place; with
    /// `resume`, continues a temporary file an interrupted run left.
    ///
    /// The `Sending` state only has to be on disk before the rename: a crash before that
    /// leaves at most a temporary file, which the next run overwrites (or resumes, if the
    /// background flush kept the state); a crash after it is resolved by `recover` from the
    /// server's sizes. So one flush per file, not two.
    async fn upload_whole(
        &self,
        remote: &mut Remote,
        file: &LocalFile,
        resume: bool,
    ) -> Result<Outcome, MirrorError> {
        let temp = temp_name(&file.remote);
        let size = file.size;
        let mut record = FileRecord {
            confirmed: 0,
            state: SendState::Sending {
                temp: temp.clone(),
                size,
            },
            ..confirmed_record(file)?
        };
        self.record.stage(&record)?;
        remote.ensure_parent(&file.remote).await?;
        // Resume an interrupted upload of the same content (the temp name is ours).
        let offset = match resume {
            true => match remote.size(&temp).await? {
                Some(at) if at <= size => at,
                _ => 0,
            },
            false => 0,
        };
        remote
            .store(
                file,
                &temp,
                offset,
                size,
                first_bytes(&record),
                &self.limiters,
            )
            .await?;
        let stored = remote.size(&temp).await?.unwrap_or(0);
        if stored != size {
            return Err(MirrorError::SizeMismatch {
                path: temp,
                remote: stored,
                expected: size,
            });
        }
        self.record.flush()?;
        if let HeldCopy::StartOfThisFile { .. } =
            keep_as_version(remote, &file.remote, file).await?
        {
            tracing::info!(remote = %file.remote, "the server's copy is this file's start: replaced, not kept");
        }
        remote.rename(&temp, &file.remote).await?;
        record.confirmed = size;
        record.state = SendState::Confirmed;
        self.record.stage(&record)?;
        tracing::info!(local = %file.local.display(), remote = %file.remote, bytes = size, "uploaded");
        Ok(Outcome::Uploaded)
    }

    async fn append(
        &self,
        remote: &mut Remote,
        file: &LocalFile,
        mut record: FileRecord,
    ) -> Result<Outcome, MirrorError> {
        let (from, to) = (record.confirmed, file.size);
        // Extend a short fingerprint before sending, from the bytes about to be sent, so
        // that it always describes what the server has (see `recover`). Only if the file
        // still starts as confirmed: it may have been copied and truncated since `sync`
        // looked (a slow SIZE in between), and a fingerprint of the new content would
        // vouch for it while it is appended to the old (found by the soak).
        if record.fingerprint_len < FINGERPRINT_BYTES {
            let len = to.min(FINGERPRINT_BYTES);
            match longer_fingerprint(&file.local, (file.dev, file.ino), &record, len)? {
                Some(longer) => {
                    record.fingerprint_len = len;
                    record.fingerprint = longer;
                }
                None => return Ok(Outcome::Gone),
            }
        }
        record.state = SendState::Appending { from, to };
        self.record.put(&record)?;
        remote
            .append(
                file,
                &record.remote,
                from,
                to,
                first_bytes(&record),
                &self.limiters,
            )
            .await?;
        let stored = remote.size(&record.remote).await?.unwrap_or(0);
        if stored != to {
            return Err(MirrorError::SizeMismatch {
                path: record.remote.clone(),
                remote: stored,
                expected: to,
            });
        }
        record.confirmed = to;
        record.size_seen = to;
        record.mtime_seen = file.mtime;
        record.state = SendState::Confirmed;
        // Losing this in a crash is safe: `recover` finds the append complete.
        self.record.stage(&record)?;
        tracing::info!(local = %file.local.display(), remote = %record.remote, bytes = to - from, "appended");
        Ok(Outcome::Appended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_hidden_beside_the_target() {
        assert_eq!(temp_name("/Logs/a/x.log"), "/Logs/a/.x.log.logarchive-part");
        assert_eq!(temp_name("/x.log"), "/.x.log.logarchive-part");
    }

    #[test]
    fn a_fingerprint_is_extended_only_over_the_confirmed_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"old start").unwrap();
        let local = LocalFile::on_disk(&path);
        let record = confirmed_record(&local).unwrap();
        let identity = (local.dev, local.ino);
        std::fs::write(&path, b"old start, grown").unwrap();
        assert_eq!(
            longer_fingerprint(&path, identity, &record, 16).unwrap(),
            Some(hex::encode(Sha256::digest(b"old start, grown")))
        );
        // Copied and truncated, and longer again: same inode, other first bytes.
        std::fs::write(&path, b"new content here").unwrap();
        assert_eq!(
            longer_fingerprint(&path, identity, &record, 16).unwrap(),
            None
        );
    }

    #[test]
    fn fingerprints_need_the_whole_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let identity = (meta.dev(), meta.ino());
        let five = fingerprint(&path, identity, 5).unwrap().unwrap();
        assert_eq!(five, hex::encode(Sha256::digest(b"hello")));
        assert!(fingerprint(&path, identity, 100).unwrap().is_none());
        // Another file at the path now (rotated since the scan): no fingerprint.
        let other = dir.path().join("other");
        std::fs::write(&other, b"hello world").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(fingerprint(&path, identity, 5).unwrap().is_none());
    }
}
