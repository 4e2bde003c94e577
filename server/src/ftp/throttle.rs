//! Bandwidth limits for FTP transfers.
//!
//! Each user has one upload and one download [`RateLimiter`], shared by all its sessions,
//! and the server has one of each for its total. A transfer is charged to both, so four
//! sessions of a user limited to 1 MiB/s move about 1 MiB/s together. Rates are read from
//! the live users on every transfer, so an edit of users.toml applies to the next transfer.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use logarchive_common::rate::{Rate, RateLimiter};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;

use crate::users::Account;

#[derive(Debug, Clone, Copy)]
pub enum Direction {
    Upload,
    Download,
}

#[derive(Debug)]
pub struct Throttles {
    default_upload: Rate,
    default_download: Rate,
    total_upload: Arc<RateLimiter>,
    total_download: Arc<RateLimiter>,
    users: Mutex<HashMap<String, [Arc<RateLimiter>; 2]>>,
}

impl Throttles {
    pub fn new(
        default_upload: Rate,
        default_download: Rate,
        total_upload: Rate,
        total_download: Rate,
    ) -> Self {
        Throttles {
            default_upload,
            default_download,
            total_upload: Arc::new(RateLimiter::new(total_upload)),
            total_download: Arc::new(RateLimiter::new(total_download)),
            users: Mutex::new(HashMap::new()),
        }
    }

    /// The limiters a transfer of `account` in `direction` is charged to, with the user's
    /// current rate applied.
    pub fn limiters(&self, account: &Account, direction: Direction) -> Vec<Arc<RateLimiter>> {
        let (rate, index, total) = match direction {
            Direction::Upload => (
                account.max_upload_rate.unwrap_or(self.default_upload),
                0,
                &self.total_upload,
            ),
            Direction::Download => (
                account.max_download_rate.unwrap_or(self.default_download),
                1,
                &self.total_download,
            ),
        };
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let pair = users.entry(account.name.clone()).or_insert_with(|| {
            [
                Arc::new(RateLimiter::new(Rate::UNLIMITED)),
                Arc::new(RateLimiter::new(Rate::UNLIMITED)),
            ]
        });
        pair[index].set_rate(rate);
        vec![pair[index].clone(), total.clone()]
    }
}

/// A reader that keeps to the rate of every limiter it is charged to.
pub struct ThrottledReader<R> {
    inner: R,
    limiters: Vec<Arc<RateLimiter>>,
    pause: Option<Pin<Box<Sleep>>>,
    bytes: u64,
}

impl<R> ThrottledReader<R> {
    pub fn new(inner: R, limiters: Vec<Arc<RateLimiter>>) -> Self {
        ThrottledReader {
            inner,
            limiters,
            pause: None,
            bytes: 0,
        }
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ThrottledReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(pause) = this.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.pause = None;
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            this.bytes += n;
            let wait = this
                .limiters
                .iter()
                .map(|limiter| limiter.charge(n))
                .max()
                .unwrap_or(Duration::ZERO);
            if !wait.is_zero() {
                this.pause = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
        result
    }
}
