//! Graceful shutdown, done once: SIGTERM or SIGINT flips one signal that every service
//! listens to (the FTP listener now; the web UI and feeds later).

use tokio::sync::watch;

/// The sending side, held by `main`.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// A handle services clone and wait on.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger(sender), Shutdown(receiver))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }

    /// Triggers on the first SIGTERM or SIGINT (SIGHUP is logged and ignored).
    pub async fn on_signal(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hangup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: nothing to do (users.toml is re-read when it changes; server.toml needs a restart)");
                    continue;
                }
            }
            break;
        }
        self.trigger();
        Ok(())
    }
}

impl Shutdown {
    /// Whether shutdown has been triggered, without waiting.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has been triggered.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
