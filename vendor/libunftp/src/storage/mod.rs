//! Re-exports storage traits/types from unftp-core.

use crate::server::controlchan::{Reply, ReplyCode};
pub(crate) use unftp_core::storage::{Error, ErrorKind, FEATURE_RESTART, FEATURE_SITEMD5, Metadata, StorageBackend};

/// logarchive patch: a message for the client. A storage back-end that builds its
/// [`Error`] with a `Reason` as the source has that text added to the FTP reply
/// (e.g. "550 Permission denied: 'w' (store) is not granted on /x").
#[derive(Debug)]
pub struct Reason(pub String);

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reason {}

tokio::task_local! {
    static COMMAND: &'static str;
}

/// logarchive patch: the FTP command a storage call serves, where the call alone does not
/// tell: "APPE" during `put` for APPE (not STOR after REST) and "RNFR" during the `metadata`
/// call of RNFR (not SIZE, MDTM or MLST). Commands need different rights.
pub fn current_command() -> Option<&'static str> {
    COMMAND.try_with(|command| *command).ok()
}

pub(crate) async fn for_command<F: std::future::Future>(command: &'static str, future: F) -> F::Output {
    COMMAND.scope(command, future).await
}

tokio::task_local! {
    static ANNOUNCED_SIZE: Option<u64>;
}

/// logarchive patch: the byte count the client announced with `ALLO` before this STOR or
/// APPE, during its `put` call. A back-end that honours it commits the upload only when
/// exactly that many bytes arrived.
pub fn announced_size() -> Option<u64> {
    ANNOUNCED_SIZE.try_with(|size| *size).ok().flatten()
}

pub(crate) async fn with_announced_size<F: std::future::Future>(size: Option<u64>, future: F) -> F::Output {
    ANNOUNCED_SIZE.scope(size, future).await
}

tokio::task_local! {
    static PLAIN_DATA_SOCKET: Option<std::os::fd::RawFd>;
}

/// logarchive patch: the data connection's socket, during the `get_into`, `put` and `get`
/// calls of RETR, STOR and APPE, when the connection is plain TCP (no TLS), so a back-end
/// can move bytes between it and a local file with `sendfile`/`splice`, never copying them
/// through user space. The socket is non-blocking and stays open until the call returns;
/// use it on another thread only through a `dup`. A `put` that takes bytes this way must
/// still read the reader it was given to its end: that read tells a finished upload from
/// one cut by a vanished client.
pub fn current_plain_data_socket() -> Option<std::os::fd::RawFd> {
    PLAIN_DATA_SOCKET.try_with(|fd| *fd).ok().flatten()
}

pub(crate) async fn with_plain_data_socket<F: std::future::Future>(fd: Option<std::os::fd::RawFd>, future: F) -> F::Output {
    PLAIN_DATA_SOCKET.scope(fd, future).await
}

/// logarchive patch: the reply for a storage error. When the back-end gave the error a
/// message of its own (a `Reason`), the client sees it after the standard text, so that a
/// refusal says why ("550 Permission denied: ...").
pub fn error_reply(error: &Error) -> Reply {
    let (code, text) = match error.kind() {
        ErrorKind::ExceededStorageAllocationError => (ReplyCode::ExceededStorageAllocation, "Exceeded storage allocation"),
        ErrorKind::FileNameNotAllowedError => (ReplyCode::BadFileName, "File name not allowed"),
        ErrorKind::InsufficientStorageSpaceError => (ReplyCode::OutOfSpace, "Insufficient storage space"),
        ErrorKind::LocalError => (ReplyCode::LocalError, "Local error"),
        ErrorKind::PageTypeUnknown => (ReplyCode::PageTypeUnknown, "Page type unknown"),
        ErrorKind::TransientFileNotAvailable => (ReplyCode::TransientFileError, "File not found"),
        ErrorKind::PermanentFileNotAvailable => (ReplyCode::FileError, "File not found"),
        ErrorKind::PermanentDirectoryNotAvailable => (ReplyCode::FileError, "Directory not found"),
        ErrorKind::PermanentDirectoryNotEmpty => (ReplyCode::FileError, "Directory not empty"),
        ErrorKind::PermissionDenied => (ReplyCode::FileError, "Permission denied"),
        ErrorKind::CommandNotImplemented => (ReplyCode::CommandNotImplemented, "Command not implemented"),
        ErrorKind::ConnectionClosed => (ReplyCode::ConnectionClosed, "Connection closed"),
    };
    let reason = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<Reason>())
        .map(|reason| reason.0.replace(['\r', '\n'], " "));
    match reason {
        Some(reason) => Reply::new_with_string(code, format!("{text}: {reason}")),
        None => Reply::new(code, text),
    }
}

