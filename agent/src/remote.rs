//! One FTP session to the archive server (suppaftp), with the few operations the mirror
//! needs. Always binary mode: suppaftp's default ASCII mode would rewrite line endings.
//! With `[server] tls = true` the session is explicit FTPS (AUTH TLS, then protected data
//! connections), trusting `ca_file` or else the system's roots.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use logarchive_common::rate::RateLimiter;
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::types::FileType;
use suppaftp::{FtpError, Status};

use crate::local_range::{self, FirstBytes, RangeReader};
use crate::scan::LocalFile;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The connection failed or broke: reconnect and retry.
    #[error("connection to the server failed: {0}")]
    Connection(String),
    /// The server refused the operation (e.g. 550 without the right permission letter).
    #[error("the server refused {operation} {path}: {reply}")]
    Refused {
        operation: &'static str,
        path: String,
        reply: String,
    },
    #[error("{path}: {source}")]
    Local {
        path: String,
        source: std::io::Error,
    },
    /// The local file changed while it was read for sending (`local_range`): the
    /// transfer was dropped, and the session with it (its reply may still be due).
    #[error("{path} changed while being sent: {reason}")]
    Changed { path: String, reason: String },
}

impl RemoteError {
    fn from_ftp(operation: &'static str, path: &str, err: FtpError) -> RemoteError {
        match err {
            FtpError::UnexpectedResponse(response) => RemoteError::Refused {
                operation,
                path: path.to_owned(),
                // The reply's text starts with its code ("550 Permission denied: ...").
                reply: String::from_utf8_lossy(&response.body).trim().to_owned(),
            },
            // The reader's own failure, passed through the data connection's copy.
            FtpError::ConnectionError(err) if local_range::changed_while_sent(&err) => {
                RemoteError::Changed {
                    path: path.to_owned(),
                    reason: err.to_string(),
                }
            }
            other => RemoteError::Connection(other.to_string()),
        }
    }

    pub fn is_connection(&self) -> bool {
        matches!(self, RemoteError::Connection(_))
    }
}

/// Where and how to log in.
#[derive(Debug, Clone)]
pub struct Login {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// Explicit FTPS with this client configuration; `None` is plain FTP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A TLS setup error, named as agent.toml's key.
#[derive(Debug, thiserror::Error)]
#[error("[server] {0}")]
pub struct TlsSetupError(#[from] logarchive_common::tls::ClientTlsError);

/// The TLS client configuration the agent uses: the server's certificate must chain to
/// `ca_file` (a private CA, PEM) or, without it, to the system's trusted roots.
pub fn client_tls(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    Ok(logarchive_common::tls::client_config(ca_file)?)
}

/// The two commands that send a file's bytes.
enum Transfer {
    Stor,
    Appe,
}

/// How a `store_new` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredNew {
    /// The server stored exactly the bytes sent, as a new file.
    Stored,
    /// The name holds a file already: nothing was stored.
    Taken,
}

pub struct Remote {
    ftp: AsyncRustlsFtpStream,
    /// The server agreed to `SITE NOREPLACE` (logarchive-server): see `store_new`.
    stores_new: bool,
    /// Folders known to exist, so each is made once per session.
    made: HashSet<String>,
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

impl Remote {
    pub async fn connect(login: &Login) -> Result<Remote, RemoteError> {
        let address = format!("{}:{}", login.host, login.port);
        let mut ftp = AsyncRustlsFtpStream::connect(&address)
            .await
            .map_err(|e| RemoteError::Connection(format!("{address}: {e}")))?;
        if let Some(tls) = &login.tls {
            let connector =
                AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(tls.clone()));
            ftp = ftp.into_secure(connector, &login.host).await.map_err(|e| {
                RemoteError::Connection(format!("FTPS (AUTH TLS) with {address}: {e}"))
            })?;
        }
        ftp.login(login.user.as_str(), login.password.as_str())
            .await
            .map_err(|e| RemoteError::from_ftp("login as", &login.user, e))?;
        ftp.transfer_type(FileType::Binary)
            .await
            .map_err(|e| RemoteError::from_ftp("binary mode for", "/", e))?;
        // logarchive-server's; other servers answer 500 or 502, and `store_new` is not used.
        let stores_new = match ftp.site("NOREPLACE").await {
            Ok(_) => true,
            Err(FtpError::UnexpectedResponse(_)) => false,
            Err(err) => return Err(RemoteError::from_ftp("SITE NOREPLACE", "/", err)),
        };
        Ok(Remote {
            ftp,
            stores_new,
            made: HashSet::new(),
        })
    }

    /// The size of a remote file, or `None` when it does not exist.
    pub async fn size(&mut self, path: &str) -> Result<Option<u64>, RemoteError> {
        match self.ftp.size(path).await {
            Ok(size) => Ok(Some(size as u64)),
            Err(FtpError::UnexpectedResponse(response))
                if response.status == Status::FileUnavailable =>
            {
                Ok(None)
            }
            Err(err) => Err(RemoteError::from_ftp("SIZE", path, err)),
        }
    }

    /// Makes the folders above `path` (like `mkdir -p`).
    pub async fn ensure_parent(&mut self, path: &str) -> Result<(), RemoteError> {
        let parent = parent_of(path).to_owned();
        if parent == "/" || self.made.contains(&parent) {
            return Ok(());
        }
        let mut current = String::new();
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            current.push('/');
            current.push_str(part);
            if self.made.contains(&current) {
                continue;
            }
            // MKD of an existing folder fails; whether the folder is there is what counts.
            if let Err(err) = self.ftp.mkdir(&current).await
                && self.ftp.cwd(&current).await.is_err()
            {
                return Err(RemoteError::from_ftp("MKD", &current, err));
            }
            self.made.insert(current.clone());
        }
        let _ = self.ftp.cwd("/").await;
        Ok(())
    }

    /// Sends bytes `offset..end` of `local` to `remote`: STOR, after REST when resuming.
    pub async fn store(
        &mut self,
        local: &LocalFile,
        remote: &str,
        offset: u64,
        end: u64,
        first: FirstBytes,
        limiters: &[Arc<RateLimiter>],
    ) -> Result<(), RemoteError> {
        let reader = open_range(local, offset, end, first, limiters)?;
        if offset > 0 {
            self.ftp
                .resume_transfer(offset as usize)
                .await
                .map_err(|e| RemoteError::from_ftp("REST", remote, e))?;
        }
        self.send(Transfer::Stor, remote, reader)
            .await
            .map_err(|e| RemoteError::from_ftp("STOR", remote, e))
    }

    /// True when `store_new` may be used: the server refuses to replace a file by a STOR
    /// announced by `ALLO` in this session, and honours the size (logarchive-server).
    pub fn stores_new(&self) -> bool {
        self.stores_new
    }

    /// Sends all of `local` (`size` bytes) straight to its final name `remote`, as a new
    /// file: `ALLO size`, then STOR in a session that asked for `SITE NOREPLACE` (which
    /// covers only STORs announced by `ALLO`: temporary names are still replaced). The
    /// server commits the upload only if exactly `size` bytes arrived and no file holds the
    /// name by then, and shows nothing under the name before; so its `226` confirms the
    /// whole file, as `SIZE` would, without a temporary name and a rename.
    pub async fn store_new(
        &mut self,
        local: &LocalFile,
        remote: &str,
        size: u64,
        first: FirstBytes,
        limiters: &[Arc<RateLimiter>],
    ) -> Result<StoredNew, RemoteError> {
        let reader = open_range(local, 0, size, first, limiters)?;
        self.ftp
            .custom_command(format!("ALLO {size}"), &[Status::CommandOk])
            .await
            .map_err(|e| RemoteError::from_ftp("ALLO", remote, e))?;
        let err = match self.send(Transfer::Stor, remote, reader).await {
            Ok(_) => return Ok(StoredNew::Stored),
            Err(err) => RemoteError::from_ftp("STOR", remote, err),
        };
        // A taken name is refused like anything else (550), or, when the refusal closed
        // the data connection under a write, looks like a broken connection: ask.
        if matches!(err, RemoteError::Changed { .. }) {
            return Err(err);
        }
        match self.size(remote).await {
            Ok(Some(_)) => Ok(StoredNew::Taken),
            _ => Err(err),
        }
    }

    /// Stores a small document (STOR from memory).
    pub async fn store_bytes(&mut self, remote: &str, bytes: &[u8]) -> Result<(), RemoteError> {
        self.ftp
            .put_file(remote, &mut &bytes[..])
            .await
            .map_err(|e| RemoteError::from_ftp("STOR", remote, e))?;
        Ok(())
    }

    /// Sends bytes `from..to` of `local` to the end of `remote` (APPE).
    pub async fn append(
        &mut self,
        local: &LocalFile,
        remote: &str,
        from: u64,
        to: u64,
        first: FirstBytes,
        limiters: &[Arc<RateLimiter>],
    ) -> Result<(), RemoteError> {
        let reader = open_range(local, from, to, first, limiters)?;
        self.send(Transfer::Appe, remote, reader)
            .await
            .map_err(|e| RemoteError::from_ftp("APPE", remote, e))
    }

    /// Sends `reader` to `remote` by STOR or APPE in writes of a whole chunk (suppaftp's
    /// `put_file` copies through an 8 KiB buffer: eight times the writes on a big file),
    /// then reads the server's reply.
    async fn send(
        &mut self,
        transfer: Transfer,
        remote: &str,
        reader: RangeReader,
    ) -> Result<(), FtpError> {
        let mut stream = match transfer {
            Transfer::Stor => self.ftp.put_with_stream(remote).await?,
            Transfer::Appe => self.ftp.append_with_stream(remote).await?,
        };
        let mut reader = tokio::io::BufReader::with_capacity(local_range::CHUNK, reader);
        tokio::io::copy_buf(&mut reader, &mut stream)
            .await
            .map_err(FtpError::ConnectionError)?;
        stream.finish().await
    }

    /// The SHA-256 (hex) of a whole remote file, by `SITE SHA256` (logarchive-server's);
    /// `None` when the file is not there or the server has no such command (vsftpd).
    pub async fn sha256(&mut self, path: &str) -> Result<Option<String>, RemoteError> {
        match self.ftp.site(format!("SHA256 {path}")).await {
            Ok(response) => {
                let text = String::from_utf8_lossy(&response.body);
                // "200 <hex>"
                let hash = text.trim().trim_start_matches("200").trim();
                let valid = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
                Ok(valid.then(|| hash.to_ascii_lowercase()))
            }
            Err(FtpError::UnexpectedResponse(_)) => Ok(None),
            Err(err) => Err(RemoteError::from_ftp("SITE SHA256", path, err)),
        }
    }

    pub async fn rename(&mut self, from: &str, to: &str) -> Result<(), RemoteError> {
        self.ftp
            .rename(from, to)
            .await
            .map_err(|e| RemoteError::from_ftp("RNFR/RNTO", from, e))
    }
}

/// `local_range::open`, its failure named by the local path.
fn open_range(
    local: &LocalFile,
    from: u64,
    to: u64,
    first: FirstBytes,
    limiters: &[Arc<RateLimiter>],
) -> Result<RangeReader, RemoteError> {
    let path = local.local.display().to_string();
    local_range::open(local, from, to, first, limiters).map_err(|source| {
        match local_range::changed_while_sent(&source) {
            true => RemoteError::Changed {
                path,
                reason: source.to_string(),
            },
            false => RemoteError::Local { path, source },
        }
    })
}
