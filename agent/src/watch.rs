//! Change hints from the kernel (inotify through notify): any event below a watched folder
//! wakes the mirror loop, which then waits the settle time and scans. Events are only
//! hints: the scan decides what changed, so a lost or overflowed event costs latency, never
//! data (the periodic rescan catches it). Where inotify is unavailable (e.g. the watch
//! limit is reached) the agent warns and relies on the periodic scan.

use std::sync::Arc;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::scan::Watch;

/// Keeps the kernel watches alive; dropping it stops them.
pub struct ChangeHints {
    _watcher: Option<RecommendedWatcher>,
    pub changed: Arc<Notify>,
}

impl ChangeHints {
    pub fn start(watches: &[Watch]) -> ChangeHints {
        let changed = Arc::new(Notify::new());
        let wake = changed.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                Ok(event) if event.kind.is_access() => {}
                // Errors (an overflowed queue among them) also wake the loop: it rescans.
                _ => wake.notify_one(),
            }
        });
        let mut watcher = match watcher {
            Ok(watcher) => watcher,
            Err(err) => {
                tracing::warn!("no inotify ({err}); relying on periodic scans");
                return ChangeHints {
                    _watcher: None,
                    changed,
                };
            }
        };
        for watch in watches {
            if let Err(err) = watcher.watch(&watch.dir, RecursiveMode::Recursive) {
                tracing::warn!(
                    dir = %watch.dir.display(),
                    "cannot watch with inotify ({err}); this folder relies on periodic scans (raise fs.inotify.max_user_watches?)"
                );
            }
        }
        ChangeHints {
            _watcher: Some(watcher),
            changed,
        }
    }
}
