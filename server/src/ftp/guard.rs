//! The guard: libunftp's storage back-end, where every FTP command is checked.
//!
//! libunftp parses commands and calls this back-end for each file operation; the guard
//! resolves the path inside the user's home (the one place FTP paths are confined), checks
//! the permission letter for that path against the *current* users.toml, applies the
//! user's bandwidth limits, and then calls the [`Archive`]. Completed uploads are recorded
//! in the catalog before the client is told they succeeded.
//!
//! | operation | letter | commands |
//! |---|---|---|
//! | `cwd` | e | CWD, CDUP |
//! | `list`, `metadata` | l | LIST, NLST, STAT, MLSD, MLST, SIZE, MDTM |
//! | `metadata` during RNFR | f | RNFR |
//! | `get` | r | RETR |
//! | `put` during APPE | a | APPE |
//! | `put` | w | STOR, STOU (and REST + STOR) |
//! | `del`, `rmd` | d | DELE, RMD |
//! | `rename` | f | RNTO (source and target) |
//! | `mkd` | m | MKD |
//! | [`Guard::chmod`] | M | SITE CHMOD |
//! | [`Guard::set_modified`] | T | MFMT, SITE MFMT |

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use libunftp::storage::{Reason, announced_size, current_command, current_plain_data_socket};
use logarchive_common::paths::ArchivePath;
use logarchive_common::perm::Perm;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use unftp_core::storage::{
    Error, ErrorKind, FEATURE_RESTART, Fileinfo, Metadata, Permissions, Result, StorageBackend,
};

use super::auth::FtpUser;
use super::sessions::{Counted, TransferMark};
use super::throttle::{Direction, Throttles};
use crate::archive::zero_copy::{self, DataSocket, StopOnDrop};
use crate::archive::{Archive, ArchiveError, Committed, Entry, EntryKind, UploadMode, is_reserved};
use crate::catalog::{Catalog, CatalogError, RenameError};
use crate::users::{Account, UserStore};
use logarchive_common::rate::{RateLimiter, ThrottledReader};

/// The chunk size of downloads: large enough that the blocking-pool hop per chunk of file
/// I/O does not dominate.
const TRANSFER_BUFFER: usize = 1 << 20;

/// The chunk size of uploads: small enough to stay in the CPU cache between being
/// received, hashed and written.
const UPLOAD_CHUNK: usize = 256 << 10;

/// Counts transfers in flight, so that shutdown can report the ones it had to cut.
#[derive(Debug, Default)]
pub struct Transfers {
    running: AtomicUsize,
}

impl Transfers {
    fn start(self: &Arc<Self>) -> TransferGuard {
        self.running.fetch_add(1, Ordering::SeqCst);
        TransferGuard(self.clone())
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }
}

struct TransferGuard(Arc<Transfers>);

impl Drop for TransferGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One guard per FTP session (libunftp asks its factory for a back-end per session).
#[derive(Debug, Clone)]
pub struct Guard {
    pub archive: Arc<dyn Archive>,
    pub catalog: Catalog,
    pub users: Arc<UserStore>,
    pub throttles: Arc<Throttles>,
    pub transfers: Arc<Transfers>,
}

/// Metadata as libunftp wants it.
#[derive(Debug, Clone)]
pub struct Meta(Entry);

impl Metadata for Meta {
    fn len(&self) -> u64 {
        self.0.size
    }
    fn is_dir(&self) -> bool {
        self.0.kind == EntryKind::Dir
    }
    fn is_file(&self) -> bool {
        self.0.kind == EntryKind::File
    }
    fn is_symlink(&self) -> bool {
        false
    }
    fn modified(&self) -> Result<SystemTime> {
        Ok(self.0.modified)
    }
    fn gid(&self) -> u32 {
        0
    }
    fn uid(&self) -> u32 {
        0
    }
    fn permissions(&self) -> Permissions {
        Permissions(self.0.mode)
    }
}

fn refuse(kind: ErrorKind, reason: impl Into<String>) -> Error {
    Error::new(kind, Reason(reason.into()))
}

/// The path as the user sees it: relative to its home.
fn shown(account: &Account, path: &ArchivePath) -> String {
    match path.relative_to(&account.home) {
        Some(rest) => format!("/{rest}"),
        None => path.to_string(),
    }
}

impl Guard {
    /// The user's account as it stands now; refused if it was removed or disabled.
    fn account(&self, user: &FtpUser) -> Result<Arc<Account>> {
        match self.users.get(&user.name) {
            Some(account) if account.enabled => Ok(account),
            _ => Err(refuse(
                ErrorKind::PermissionDenied,
                format!("account \"{}\" is disabled or was removed", user.name),
            )),
        }
    }

    /// Resolves a client path inside the user's home and checks `perm` there.
    fn authorize(&self, account: &Account, path: &Path, perm: Perm) -> Result<ArchivePath> {
        let resolved = ArchivePath::resolve_within(&account.home, path)
            .map_err(|err| refuse(ErrorKind::FileNameNotAllowedError, err.to_string()))?;
        if is_reserved(&resolved) {
            return Err(refuse(
                ErrorKind::PermanentFileNotAvailable,
                format!("{} is reserved for the server", shown(account, &resolved)),
            ));
        }
        if !account.may(perm, &resolved) {
            tracing::info!(user = %account.name, path = %resolved, "refused: no '{}'", perm.letter());
            return Err(refuse(
                ErrorKind::PermissionDenied,
                format!("{perm} is not granted on {}", shown(account, &resolved)),
            ));
        }
        Ok(resolved)
    }

    fn archive_error(&self, account: &Account, err: ArchiveError) -> Error {
        match err {
            ArchiveError::NotFound(p) => refuse(
                ErrorKind::PermanentFileNotAvailable,
                format!("{} does not exist", shown(account, &p)),
            ),
            ArchiveError::AlreadyExists(p) => refuse(
                ErrorKind::PermanentFileNotAvailable,
                format!("{} already exists", shown(account, &p)),
            ),
            ArchiveError::NotADir(p) => refuse(
                ErrorKind::PermanentDirectoryNotAvailable,
                format!("{} is not a folder", shown(account, &p)),
            ),
            ArchiveError::IsADir(p) => refuse(
                ErrorKind::PermanentFileNotAvailable,
                format!("{} is a folder", shown(account, &p)),
            ),
            ArchiveError::NotEmpty(p) => refuse(
                ErrorKind::PermanentDirectoryNotEmpty,
                format!("{} is not empty", shown(account, &p)),
            ),
            ArchiveError::Refused { reason, .. } => {
                refuse(ErrorKind::FileNameNotAllowedError, reason)
            }
            ArchiveError::Full(_) => refuse(
                ErrorKind::InsufficientStorageSpaceError,
                "the archive is out of space",
            ),
            ArchiveError::Io { path, source } => {
                tracing::error!(path = %path, "archive I/O error: {source}");
                Error::from(ErrorKind::LocalError)
            }
        }
    }

    /// SITE CHMOD (letter M).
    pub async fn chmod(&self, user: &FtpUser, path: &Path, mode: u32) -> Result<()> {
        let account = self.account(user)?;
        let path = self.authorize(&account, path, Perm::Chmod)?;
        self.archive
            .set_mode(&path, mode)
            .await
            .map_err(|e| self.archive_error(&account, e))
    }

    /// SITE SHA256 (letter r: it tells about the content). An agent asks before it moves
    /// the server's copy of a log to the name of a local copy of it (copytruncate).
    pub async fn sha256(&self, user: &FtpUser, path: &Path) -> Result<String> {
        let account = self.account(user)?;
        let path = self.authorize(&account, path, Perm::Read)?;
        match self.catalog.sha256(&path).await {
            Ok(hash) => Ok(hash),
            Err(CatalogError::Archive(err)) => Err(self.archive_error(&account, err)),
            Err(err) => {
                tracing::error!(path = %path, "SITE SHA256: {err}");
                Err(Error::from(ErrorKind::LocalError))
            }
        }
    }

    /// MFMT / SITE MFMT (letter T).
    pub async fn set_modified(&self, user: &FtpUser, path: &Path, time: SystemTime) -> Result<()> {
        let account = self.account(user)?;
        let path = self.authorize(&account, path, Perm::SetTime)?;
        self.archive
            .set_modified(&path, time)
            .await
            .map_err(|e| self.archive_error(&account, e))?;
        if let Ok(entry) = self.archive.stat(&path).await
            && entry.kind == EntryKind::File
            && let Err(err) = self.catalog.refresh(&entry, &user.name).await
        {
            tracing::error!(path = %path, "catalog not updated after MFMT: {err}");
        }
        Ok(())
    }

    async fn receive(
        &self,
        account: &Account,
        input: impl AsyncRead + Unpin,
        path: &ArchivePath,
        mode: UploadMode,
        announced: Option<u64>,
        mark: TransferMark,
    ) -> Result<(Committed, u64, DataPath)> {
        let mut upload = self
            .archive
            .begin_upload(path, mode)
            .await
            .map_err(|e| self.archive_error(account, e))?;
        let limiters = self.throttles.limiters(account, Direction::Upload);
        let (spliced, data_path) = match plain_data_socket(&limiters, &mark) {
            Some((socket, _stop)) => match upload.receive_from(socket).await {
                Some(Ok(bytes)) => (bytes, DataPath::Kernel),
                Some(Err(err)) => {
                    upload.abort().await;
                    return Err(match err {
                        // The client's side: reset, or the session let go (ABOR, closed).
                        ArchiveError::Io { source, .. }
                            if matches!(
                                source.kind(),
                                std::io::ErrorKind::ConnectionReset
                                    | std::io::ErrorKind::ConnectionAborted
                                    | std::io::ErrorKind::BrokenPipe
                            ) =>
                        {
                            tracing::warn!(user = %account.name, path = %path, "upload aborted: {source}");
                            Error::new(ErrorKind::ConnectionClosed, source)
                        }
                        err => {
                            tracing::error!(path = %path, "upload not stored: {err}");
                            self.archive_error(account, err)
                        }
                    });
                }
                None => (0, DataPath::Memory),
            },
            None => (0, DataPath::Memory),
        };
        // After a kernel-side receive this loop only reads the end of data, which tells a
        // finished upload from one whose client vanished (libunftp's reader).
        let input = Counted { inner: input, mark };
        let mut input = ThrottledReader::new(input, limiters);
        let mut chunk = Vec::with_capacity(UPLOAD_CHUNK);
        loop {
            // Fill a whole chunk before handing it on: the socket gives a few dozen KiB
            // per read, and every chunk costs the archive a hand-over to its writer.
            chunk.clear();
            match read_full(&mut input, &mut chunk).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) => {
                    upload.abort().await;
                    tracing::warn!(user = %account.name, path = %path, "upload aborted after {} bytes: {err}", spliced + input.bytes());
                    return Err(Error::new(ErrorKind::ConnectionClosed, err));
                }
            };
            chunk = match upload.write(chunk).await {
                Ok(next) => next,
                Err(err) => {
                    upload.abort().await;
                    tracing::error!(path = %path, "upload not stored: {err}");
                    return Err(self.archive_error(account, err));
                }
            };
        }
        // A data connection closed early by something between client and server (a proxy)
        // ends like a finished upload; a client that announced its size is not fooled.
        let received = spliced + input.bytes();
        if let Some(announced) = announced
            && announced != received
        {
            upload.abort().await;
            tracing::warn!(user = %account.name, path = %path, received, announced, "upload not stored: not the size announced by ALLO");
            return Err(refuse(
                ErrorKind::ConnectionClosed,
                format!(
                    "{received} bytes arrived, ALLO announced {announced}: {} not stored",
                    shown(account, path)
                ),
            ));
        }
        let committed = upload
            .commit()
            .await
            .map_err(|e| self.archive_error(account, e))?;
        Ok((committed, received, data_path))
    }
}

/// The session's data connection for a kernel-side transfer (`archive::zero_copy`), when
/// there is one to use: plain TCP (TLS needs the bytes in user space) and no rate limit
/// on the transfer (the limiters meter bytes they see). Dropping the second value stops
/// the transfer.
fn plain_data_socket(
    limiters: &[Arc<RateLimiter>],
    mark: &TransferMark,
) -> Option<(DataSocket, StopOnDrop)> {
    if !limiters.iter().all(|limiter| limiter.rate().is_unlimited()) {
        return None;
    }
    let fd = current_plain_data_socket()?;
    match DataSocket::duplicate(fd, mark.counter()) {
        Ok(pair) => Some(pair),
        Err(err) => {
            tracing::warn!("copying through memory: the data socket cannot be duplicated: {err}");
            None
        }
    }
}

/// What every download starts with, taken once whichever way its bytes then go.
struct Download {
    account: Arc<Account>,
    path: ArchivePath,
    limiters: Vec<Arc<RateLimiter>>,
    /// Its line on the sessions page.
    mark: TransferMark,
}

impl Guard {
    fn start_download(&self, user: &FtpUser, path: &Path) -> Result<Download> {
        let account = self.account(user)?;
        let path = self.authorize(&account, path, Perm::Read)?;
        Ok(Download {
            limiters: self.throttles.limiters(&account, Direction::Download),
            mark: user.transfer(path.as_str(), Direction::Download),
            account,
            path,
        })
    }

    /// The copying path of a download: the file read through its limiters.
    async fn open_download(
        &self,
        download: Download,
        start_pos: u64,
    ) -> Result<DownloadLog<crate::archive::ArchiveReader>> {
        let reader = self
            .archive
            .open(&download.path, start_pos)
            .await
            .map_err(|e| self.archive_error(&download.account, e))?;
        Ok(DownloadLog {
            mark: download.mark,
            reader: ThrottledReader::new(reader, download.limiters),
            user: download.account.name.clone(),
            path: download.path,
            started: Instant::now(),
            _transfer: self.transfers.start(),
        })
    }
}

/// How a transfer's bytes moved between the socket and the archive; logged with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataPath {
    /// Inside the kernel (`splice` up, `sendfile` down).
    Kernel,
    /// Read into the server's memory and written out (TLS, rate limits, S3).
    Memory,
}

/// The one log line of a download.
fn log_download(user: &str, path: &ArchivePath, bytes: u64, started: Instant, data_path: DataPath) {
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        user = %user, path = %path, bytes, seconds,
        rate = (bytes as f64 / seconds.max(1e-6)) as u64, ?data_path, "download"
    );
}

/// Reads until `chunk` holds `UPLOAD_CHUNK` bytes or the input ends; returns the bytes read.
/// `read_buf` reads into the vector's spare capacity, so the chunk is never zeroed first:
/// zeroing would touch every uploaded byte once more, on the receiving task.
async fn read_full(
    input: &mut (impl AsyncRead + Unpin),
    chunk: &mut Vec<u8>,
) -> std::io::Result<usize> {
    chunk.reserve(UPLOAD_CHUNK.saturating_sub(chunk.len()));
    while chunk.len() < UPLOAD_CHUNK {
        // Never past UPLOAD_CHUNK, even if a recycled vector has more capacity.
        let room = UPLOAD_CHUNK - chunk.len();
        if (&mut *input).take(room as u64).read_buf(chunk).await? == 0 {
            break;
        }
    }
    Ok(chunk.len())
}

#[async_trait]
impl StorageBackend<FtpUser> for Guard {
    type Metadata = Meta;

    fn supported_features(&self) -> u32 {
        FEATURE_RESTART
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> Result<Meta> {
        let account = self.account(user)?;
        let perm = if current_command() == Some("RNFR") {
            Perm::Rename
        } else {
            Perm::List
        };
        let path = self.authorize(&account, path.as_ref(), perm)?;
        self.archive
            .stat(&path)
            .await
            .map(Meta)
            .map_err(|e| self.archive_error(&account, e))
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> Result<Vec<Fileinfo<PathBuf, Meta>>> {
        let account = self.account(user)?;
        let path = self.authorize(&account, path.as_ref(), Perm::List)?;
        let entries = match self.archive.list(&path).await {
            Ok(entries) => entries,
            // LIST of a file shows that file, as other servers do.
            Err(ArchiveError::NotADir(_)) => vec![
                self.archive
                    .stat(&path)
                    .await
                    .map_err(|e| self.archive_error(&account, e))?,
            ],
            Err(err) => return Err(self.archive_error(&account, err)),
        };
        Ok(entries
            .into_iter()
            .map(|entry| Fileinfo {
                path: PathBuf::from(entry.path.file_name().unwrap_or("/")),
                metadata: Meta(entry),
            })
            .collect())
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
        start_pos: u64,
    ) -> Result<Box<dyn AsyncRead + Send + Sync + Unpin>> {
        let download = self.start_download(user, path.as_ref())?;
        Ok(Box::new(self.open_download(download, start_pos).await?))
    }

    /// RETR: `sendfile` where it applies (see [`plain_data_socket`]), else large reads and
    /// writes (libunftp's default copies 8 KiB at a time, which costs a blocking-pool hop
    /// per 8 KiB of file).
    async fn get_into<'a, P, W: ?Sized>(
        &self,
        user: &FtpUser,
        path: P,
        start_pos: u64,
        output: &'a mut W,
    ) -> Result<u64>
    where
        W: tokio::io::AsyncWrite + Unpin + Sync + Send,
        P: AsRef<Path> + Send + Debug,
    {
        let download = self.start_download(user, path.as_ref())?;
        if let Some((socket, _stop)) = plain_data_socket(&download.limiters, &download.mark) {
            let local = self
                .archive
                .open_local(&download.path, start_pos)
                .await
                .map_err(|e| self.archive_error(&download.account, e))?;
            if let Some(file) = local {
                let _transfer = self.transfers.start();
                let started = Instant::now();
                let sent =
                    tokio::task::spawn_blocking(move || zero_copy::send_file(&file, &socket))
                        .await
                        .unwrap_or_else(|join| Err(std::io::Error::other(join)));
                let bytes = download.mark.counter().load(Ordering::Relaxed);
                log_download(
                    &download.account.name,
                    &download.path,
                    bytes,
                    started,
                    DataPath::Kernel,
                );
                return sent.map_err(Error::from);
            }
        }
        let mut reader = self.open_download(download, start_pos).await?;
        let mut buffer = vec![0u8; TRANSFER_BUFFER];
        let mut sent = 0u64;
        loop {
            let n = reader.read(&mut buffer).await.map_err(Error::from)?;
            if n == 0 {
                return Ok(sent);
            }
            output.write_all(&buffer[..n]).await.map_err(Error::from)?;
            sent += n as u64;
        }
    }

    async fn put<P: AsRef<Path> + Send + Debug, R: AsyncRead + Send + Sync + Unpin + 'static>(
        &self,
        user: &FtpUser,
        input: R,
        path: P,
        start_pos: u64,
    ) -> Result<u64> {
        let account = self.account(user)?;
        let announced = announced_size();
        let (perm, mode) = if current_command() == Some("APPE") {
            (Perm::Append, UploadMode::Append)
        } else if start_pos > 0 {
            (Perm::Write, UploadMode::ResumeAt(start_pos))
        } else if announced.is_some()
            && user.session.as_ref().is_some_and(|s| s.refuses_replacing())
        {
            (Perm::Write, UploadMode::New)
        } else {
            (Perm::Write, UploadMode::Replace)
        };
        let path = self.authorize(&account, path.as_ref(), perm)?;
        let _transfer = self.transfers.start();
        let started = Instant::now();
        let mark = user.transfer(path.as_str(), Direction::Upload);
        let (Committed { entry, sha256 }, bytes, data_path) = self
            .receive(&account, input, &path, mode, announced, mark)
            .await?;
        match self
            .catalog
            .record_upload(&entry, sha256, &account.name)
            .await
        {
            Ok(_) => {}
            // Without its journal line, who sent the file is lost for good: no 226, so the
            // sender sends it again (the catalog catches up with the stored file).
            Err(CatalogError::Journal(err)) => {
                tracing::error!(path = %path, "upload stored but not journaled, refused: {err}");
                let kind = if matches!(err, ArchiveError::Full(_)) {
                    ErrorKind::InsufficientStorageSpaceError
                } else {
                    ErrorKind::LocalError
                };
                return Err(refuse(
                    kind,
                    format!(
                        "the record of {} could not be written ({}): send it again",
                        shown(&account, &path),
                        if kind == ErrorKind::LocalError {
                            "server error"
                        } else {
                            "out of space"
                        }
                    ),
                ));
            }
            // The file and its journal line are durable; the catalog catches up with them
            // (`catalog::recovery`).
            Err(err) => tracing::error!(path = %path, "upload stored but not cataloged: {err}"),
        }
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            user = %account.name, path = %path, bytes, mode = ?mode, seconds,
            rate = (bytes as f64 / seconds.max(1e-6)) as u64, ?data_path, "upload"
        );
        Ok(bytes)
    }

    async fn del<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> Result<()> {
        let account = self.account(user)?;
        let path = self.authorize(&account, path.as_ref(), Perm::Delete)?;
        self.archive
            .remove_file(&path)
            .await
            .map_err(|e| self.archive_error(&account, e))?;
        if let Err(err) = self.catalog.record_removal(&path).await {
            tracing::error!(path = %path, "catalog not updated after delete: {err}");
        }
        tracing::info!(user = %account.name, path = %path, "deleted");
        Ok(())
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> Result<()> {
        let account = self.account(user)?;
        let path = self.authorize(&account, path.as_ref(), Perm::MakeDir)?;
        self.archive
            .create_dir(&path)
            .await
            .map_err(|e| self.archive_error(&account, e))
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        from: P,
        to: P,
    ) -> Result<()> {
        let account = self.account(user)?;
        let from = self.authorize(&account, from.as_ref(), Perm::Rename)?;
        let to = self.authorize(&account, to.as_ref(), Perm::Rename)?;
        if from == account.home {
            return Err(refuse(
                ErrorKind::PermissionDenied,
                "the home folder cannot be renamed",
            ));
        }
        // Per-folder rights are bound to paths: moving a folder that has (or holds) its own
        // rights, or moving one into such a place, would carry files out of their rules.
        if let Some((dir, _)) = account
            .dirs
            .iter()
            .find(|(dir, _)| dir.starts_with(&from) || dir.starts_with(&to))
        {
            return Err(refuse(
                ErrorKind::PermissionDenied,
                format!(
                    "{} has its own permissions and cannot be moved or replaced",
                    shown(&account, dir)
                ),
            ));
        }
        match self.catalog.rename(&from, &to).await {
            Ok(()) => {}
            Err(RenameError::Archive(err)) => return Err(self.archive_error(&account, err)),
            // Done in the archive; the catalog catches up (`catalog::recovery`).
            Err(RenameError::Catalog(err)) => {
                tracing::error!(path = %from, "catalog not updated after rename: {err}");
            }
        }
        tracing::info!(user = %account.name, from = %from, to = %to, "renamed");
        Ok(())
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> Result<()> {
        let account = self.account(user)?;
        let path = self.authorize(&account, path.as_ref(), Perm::Delete)?;
        if path == account.home {
            return Err(refuse(
                ErrorKind::PermissionDenied,
                "the home folder cannot be removed",
            ));
        }
        self.archive
            .remove_dir(&path)
            .await
            .map_err(|e| self.archive_error(&account, e))
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> Result<()> {
        let account = self.account(user)?;
        let path = self.authorize(&account, path.as_ref(), Perm::ChangeDir)?;
        match self.archive.stat(&path).await {
            Ok(entry) if entry.kind == EntryKind::Dir => Ok(()),
            Ok(_) => Err(refuse(
                ErrorKind::PermanentDirectoryNotAvailable,
                format!("{} is not a folder", shown(&account, &path)),
            )),
            Err(err) => Err(self.archive_error(&account, err)),
        }
    }
}

/// A download stream that shows on the sessions page while it runs and logs one line
/// when the transfer ends.
struct DownloadLog<R> {
    reader: ThrottledReader<R>,
    mark: TransferMark,
    user: String,
    path: ArchivePath,
    started: Instant,
    _transfer: TransferGuard,
}

impl<R: AsyncRead + Unpin> AsyncRead for DownloadLog<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.reader).poll_read(cx, buf);
        self.mark
            .add(buf.filled().len().saturating_sub(before) as u64);
        polled
    }
}

impl<R> Drop for DownloadLog<R> {
    fn drop(&mut self) {
        log_download(
            &self.user,
            &self.path,
            self.reader.bytes(),
            self.started,
            DataPath::Memory,
        );
    }
}
