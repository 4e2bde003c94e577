//! Change hints from the kernel (inotify through notify): any event below a watched folder
//! wakes the mirror loop, which then waits the settle time and scans. Events are only
//! hints: the scan decides what changed, so a lost or overflowed event costs latency, never
//! data (the periodic rescan catches it). Watches with `poll = true`, and folders inotify
//! cannot watch (e.g. the watch limit is reached, with a warning), are polled every
//! `poll_interval` instead.

use std::sync::Arc;
use std::time::Duration;

use notify::{PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::scan::Watch;

/// Keeps the kernel watches and pollers alive; dropping it stops them.
pub struct ChangeHints {
    _inotify: Option<RecommendedWatcher>,
    _poll: Option<PollWatcher>,
    pub changed: Arc<Notify>,
}

/// Wakes the loop on any event but a mere read.
fn waker(changed: &Arc<Notify>) -> impl Fn(notify::Result<notify::Event>) + Send + 'static {
    let wake = changed.clone();
    move |event: notify::Result<notify::Event>| match event {
        Ok(event) if event.kind.is_access() => {}
        // Errors (an overflowed queue among them) also wake the loop: it rescans.
        _ => wake.notify_one(),
    }
}

impl ChangeHints {
    pub fn start(watches: &[Watch], poll_interval: Duration) -> ChangeHints {
        let changed = Arc::new(Notify::new());
        let mut inotify = match notify::recommended_watcher(waker(&changed)) {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                tracing::warn!("no inotify ({err}); polling every {poll_interval:?} instead");
                None
            }
        };
        let mut polled = Vec::new();
        for watch in watches {
            if watch.poll {
                polled.push(watch);
                continue;
            }
            let Some(watcher) = inotify.as_mut() else {
                polled.push(watch);
                continue;
            };
            if let Err(err) = watcher.watch(&watch.dir, RecursiveMode::Recursive) {
                tracing::warn!(
                    dir = %watch.dir.display(),
                    "cannot watch with inotify ({err}); polling this folder every {poll_interval:?} (raise fs.inotify.max_user_watches?)"
                );
                polled.push(watch);
            }
        }
        let poll = (!polled.is_empty())
            .then(|| {
                let config = notify::Config::default().with_poll_interval(poll_interval);
                let mut poller = match PollWatcher::new(waker(&changed), config) {
                    Ok(poller) => poller,
                    Err(err) => {
                        tracing::warn!("cannot poll ({err}); relying on the periodic rescan");
                        return None;
                    }
                };
                for watch in polled {
                    match poller.watch(&watch.dir, RecursiveMode::Recursive) {
                        Ok(()) => tracing::info!(dir = %watch.dir.display(), "polling for changes every {poll_interval:?}"),
                        Err(err) => tracing::warn!(dir = %watch.dir.display(), "cannot poll ({err}); relying on the periodic rescan"),
                    }
                }
                Some(poller)
            })
            .flatten();
        ChangeHints {
            _inotify: inotify,
            _poll: poll,
            changed,
        }
    }
}
