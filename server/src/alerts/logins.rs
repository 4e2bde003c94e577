//! Failed logins of FTP and the web UI (forms and HTTP Basic), counted over a sliding
//! window for the alerts: [`crate::ftp::auth::PasswordAuthenticator`] notes each refusal.
//!
//! Only the window's failures are kept (time and address), at most [`MAX_REMEMBERED`], so
//! a password-guessing flood cannot grow memory; past that the count is a floor, which is
//! still far above any threshold.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures remembered at most.
pub const MAX_REMEMBERED: usize = 100_000;

#[derive(Debug)]
pub struct FailedLogins {
    window: Duration,
    recent: Mutex<VecDeque<(Instant, IpAddr)>>,
}

/// The failures within the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recent {
    pub count: usize,
    /// The address with the most of them, and how many.
    pub top_address: Option<(IpAddr, usize)>,
}

impl FailedLogins {
    pub fn new(window: Duration) -> FailedLogins {
        FailedLogins {
            window,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    fn forget_old(&self, recent: &mut VecDeque<(Instant, IpAddr)>) {
        while recent
            .front()
            .is_some_and(|(at, _)| at.elapsed() > self.window)
        {
            recent.pop_front();
        }
    }

    /// Notes one failed login from `address`.
    pub fn note(&self, address: IpAddr) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        self.forget_old(&mut recent);
        if recent.len() >= MAX_REMEMBERED {
            recent.pop_front();
        }
        recent.push_back((Instant::now(), address));
    }

    pub fn recent(&self) -> Recent {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        self.forget_old(&mut recent);
        let mut per_address: HashMap<IpAddr, usize> = HashMap::new();
        for (_, address) in recent.iter() {
            *per_address.entry(*address).or_default() += 1;
        }
        Recent {
            count: recent.len(),
            top_address: per_address
                .into_iter()
                .max_by_key(|(address, n)| (*n, std::cmp::Reverse(*address))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_the_window_and_names_the_top_address() {
        let logins = FailedLogins::new(Duration::from_millis(200));
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let b: IpAddr = "192.0.2.8".parse().unwrap();
        logins.note(a);
        logins.note(b);
        logins.note(a);
        assert_eq!(
            logins.recent(),
            Recent {
                count: 3,
                top_address: Some((a, 2))
            }
        );
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(logins.recent().count, 0);
    }
}
