//! The live FTP sessions, fed by libunftp's presence events: who is logged in since when.
//! Logs one line when a session ends (the login line comes from [`super::auth`]). The
//! admin sessions page of the web UI lists them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use libunftp::notification::{EventMeta, PresenceEvent, PresenceListener};

#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: String,
    pub user: String,
    /// When the login happened (for the admin sessions page).
    pub since: SystemTime,
    started: Instant,
}

/// Cheap to clone: clones share one registry.
#[derive(Debug, Default, Clone)]
pub struct Sessions {
    live: Arc<Mutex<HashMap<String, SessionInfo>>>,
}

impl Sessions {
    /// The sessions logged in now, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<SessionInfo> = live.values().cloned().collect();
        all.sort_by_key(|s| s.started);
        all
    }
}

#[async_trait]
impl PresenceListener for Sessions {
    async fn receive_presence_event(&self, event: PresenceEvent, meta: EventMeta) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            PresenceEvent::LoggedIn => {
                live.insert(
                    meta.trace_id.clone(),
                    SessionInfo {
                        id: meta.trace_id,
                        user: meta.username,
                        since: SystemTime::now(),
                        started: Instant::now(),
                    },
                );
            }
            PresenceEvent::LoggedOut => {
                if let Some(session) = live.remove(&meta.trace_id) {
                    tracing::info!(
                        user = %session.user, session = %session.id,
                        seconds = session.started.elapsed().as_secs_f64(), "session ended"
                    );
                }
            }
        }
    }
}
