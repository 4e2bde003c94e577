//! Re-exports storage traits/types from unftp-core.

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
