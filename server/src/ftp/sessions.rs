//! The live FTP sessions: who is logged in, from where, since when, and the transfer each
//! one is running (path, direction, bytes so far, rate). The admin sessions page of the
//! web UI reads this one registry; the FTP side writes it.
//!
//! A session enters the registry when libunftp asks [`super::auth::AccountProvider`] for
//! the session's user after a successful password check, and leaves it when that user
//! value is dropped with the session (a [`SessionHandle`] inside [`super::auth::FtpUser`]),
//! so a session that ends in any way (QUIT, a cut connection, an idle timeout) is gone
//! from the page. The client address comes from the login's credentials. The guard sees
//! every transfer of the session through the same user value and marks it with
//! [`SessionHandle::transfer`]; the mark counts bytes as they pass and clears itself when
//! the transfer ends. Logs one line when a session ends (the login line comes from
//! [`super::auth`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, ReadBuf};

use super::throttle::Direction;

/// A transfer in progress, as the sessions page shows it.
#[derive(Debug, Clone)]
pub struct TransferInfo {
    /// The archive path.
    pub path: String,
    pub direction: Direction,
    pub bytes: u64,
    /// Average bytes per second since the transfer began.
    pub rate: u64,
}

/// One live session, as the sessions page shows it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: u64,
    pub user: String,
    pub address: Option<IpAddr>,
    /// When the login happened.
    pub since: SystemTime,
    pub transfer: Option<TransferInfo>,
}

#[derive(Debug)]
struct Transfer {
    path: String,
    direction: Direction,
    bytes: Arc<AtomicU64>,
    started: Instant,
}

#[derive(Debug)]
struct Live {
    id: u64,
    user: String,
    address: Option<IpAddr>,
    since: SystemTime,
    started: Instant,
    transfer: Mutex<Option<Transfer>>,
}

impl Live {
    fn info(&self) -> SessionInfo {
        let transfer = lock(&self.transfer).as_ref().map(|t| {
            let bytes = t.bytes.load(Ordering::Relaxed);
            let seconds = t.started.elapsed().as_secs_f64().max(1e-3);
            TransferInfo {
                path: t.path.clone(),
                direction: t.direction,
                bytes,
                rate: (bytes as f64 / seconds) as u64,
            }
        });
        SessionInfo {
            id: self.id,
            user: self.user.clone(),
            address: self.address,
            since: self.since,
            transfer,
        }
    }
}

// Every critical section here is a plain field update, so a poisoned lock holds
// consistent data and is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Cheap to clone: clones share one registry.
#[derive(Debug, Default, Clone)]
pub struct Sessions {
    live: Arc<Mutex<HashMap<u64, Arc<Live>>>>,
    next_id: Arc<AtomicU64>,
}

impl Sessions {
    /// The sessions logged in now, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let live: Vec<Arc<Live>> = lock(&self.live).values().cloned().collect();
        let mut all: Vec<(Instant, SessionInfo)> =
            live.iter().map(|s| (s.started, s.info())).collect();
        all.sort_by_key(|(started, info)| (*started, info.id));
        all.into_iter().map(|(_, info)| info).collect()
    }

    pub fn count(&self) -> usize {
        lock(&self.live).len()
    }

    /// Registers a session that just logged in; it stays listed while the handle lives.
    pub fn open(&self, user: &str, address: Option<IpAddr>) -> SessionHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let live = Arc::new(Live {
            id,
            user: user.to_owned(),
            address,
            since: SystemTime::now(),
            started: Instant::now(),
            transfer: Mutex::new(None),
        });
        lock(&self.live).insert(id, live.clone());
        SessionHandle {
            live,
            registry: self.clone(),
            no_replace: AtomicBool::new(false),
        }
    }
}

/// A session's entry in the registry; dropping it (with the session) removes the entry.
#[derive(Debug)]
pub struct SessionHandle {
    live: Arc<Live>,
    registry: Sessions,
    /// Set by `SITE NOREPLACE`: a STOR announced by `ALLO` never replaces a file.
    no_replace: AtomicBool,
}

impl SessionHandle {
    /// From now on, a STOR of this session announced by `ALLO` is refused where a file
    /// exists (`SITE NOREPLACE`).
    pub fn refuse_replacing(&self) {
        self.no_replace.store(true, Ordering::Relaxed);
    }

    pub fn refuses_replacing(&self) -> bool {
        self.no_replace.load(Ordering::Relaxed)
    }

    /// Marks a transfer as running in this session until the returned mark is dropped.
    pub fn transfer(&self, path: &str, direction: Direction) -> TransferMark {
        let bytes = Arc::new(AtomicU64::new(0));
        *lock(&self.live.transfer) = Some(Transfer {
            path: path.to_owned(),
            direction,
            bytes: bytes.clone(),
            started: Instant::now(),
        });
        TransferMark {
            live: Some(self.live.clone()),
            bytes,
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        lock(&self.registry.live).remove(&self.live.id);
        tracing::info!(
            user = %self.live.user, session = self.live.id,
            seconds = self.live.started.elapsed().as_secs_f64(), "session ended"
        );
    }
}

/// A running transfer: counts its bytes; clears the session's transfer when dropped.
#[derive(Debug)]
pub struct TransferMark {
    live: Option<Arc<Live>>,
    bytes: Arc<AtomicU64>,
}

impl TransferMark {
    /// A mark that shows nowhere (a session without a registry entry).
    pub fn none() -> TransferMark {
        TransferMark {
            live: None,
            bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// The counter behind [`TransferMark::add`], for a transfer that runs on another
    /// thread (the kernel-side copies of `archive::zero_copy`).
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.bytes.clone()
    }
}

impl Drop for TransferMark {
    fn drop(&mut self) {
        if let Some(live) = &self.live {
            let mut transfer = lock(&live.transfer);
            // Only its own transfer: a newer one may have replaced it already.
            if transfer
                .as_ref()
                .is_some_and(|t| Arc::ptr_eq(&t.bytes, &self.bytes))
            {
                *transfer = None;
            }
        }
    }
}

/// A reader that counts the bytes it passes into a [`TransferMark`].
pub struct Counted<R> {
    pub inner: R,
    pub mark: TransferMark,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.mark.add(n as u64);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_show_their_transfer_and_leave_when_dropped() {
        let sessions = Sessions::default();
        let handle = sessions.open("u", "127.0.0.1".parse().ok());
        let mark = handle.transfer("/u/x", Direction::Upload);
        mark.add(10);
        let listed = sessions.list();
        let transfer = listed[0].transfer.clone().unwrap();
        assert_eq!((transfer.path.as_str(), transfer.bytes), ("/u/x", 10));
        // A newer transfer is not cleared by the older one's end.
        let newer = handle.transfer("/u/y", Direction::Download);
        drop(mark);
        assert_eq!(sessions.list()[0].transfer.clone().unwrap().path, "/u/y");
        drop(newer);
        assert!(sessions.list()[0].transfer.is_none());
        drop(handle);
        assert_eq!(sessions.count(), 0);
    }
}
