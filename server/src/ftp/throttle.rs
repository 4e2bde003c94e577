//! Bandwidth limits for FTP transfers.
//!
//! Each user has one upload and one download [`RateLimiter`], shared by all its sessions,
//! and the server has one of each for its total. A transfer is charged to both, so four
//! sessions of a user limited to 1 MiB/s move about 1 MiB/s together. Rates are read from
//! the live users on every transfer, so an edit of users.toml applies to the next transfer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use logarchive_common::rate::{Rate, RateLimiter};

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
