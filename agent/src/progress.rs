//! Progress of a large pass (the first backlog after install, or after a long outage):
//! a progress bar when the agent runs on a terminal, progress lines in the log when it
//! runs as a service. Small passes (the everyday trickle) show nothing.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// From this many files or bytes on, a pass reports its progress.
const LARGE_FILES: usize = 100;
const LARGE_BYTES: u64 = 64 << 20;
/// How often a service logs a progress line.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The bar on screen, if any: log lines are written around it, not through it.
static ON_SCREEN: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// The agent's log writer: stderr, with the progress bar (if shown) lifted while a line is
/// written, so lines and bar never mix.
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ON_SCREEN.lock().ok().and_then(|bar| bar.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

pub struct Progress {
    files: usize,
    bytes: u64,
    files_done: AtomicUsize,
    bytes_done: AtomicU64,
    started: Instant,
    /// The bar on a terminal; `None` as a service, which logs lines instead.
    bar: Option<indicatif::ProgressBar>,
    last_line: Mutex<Instant>,
}

impl Progress {
    /// A progress report for a backlog of `files` files and `bytes` bytes, if it is large
    /// (sent in one or more passes).
    pub fn for_backlog(files: usize, bytes: u64) -> Option<Progress> {
        if files < LARGE_FILES && bytes < LARGE_BYTES {
            return None;
        }
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(bytes);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "[{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            ) {
                bar.set_style(style);
            }
            bar.set_message(format!("0/{files} files"));
            bar
        });
        tracing::info!("sending a backlog of {files} files, {bytes} bytes");
        if let (Some(bar), Ok(mut on_screen)) = (&bar, ON_SCREEN.lock()) {
            *on_screen = Some(bar.clone());
        }
        Some(Progress {
            files,
            bytes,
            files_done: AtomicUsize::new(0),
            bytes_done: AtomicU64::new(0),
            started: Instant::now(),
            bar,
            last_line: Mutex::new(Instant::now()),
        })
    }

    /// One more file is done (sent, or found unchanged) with `bytes` bytes.
    pub fn file_done(&self, bytes: u64) {
        let files = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        let sent = self.bytes_done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
            bar.set_message(format!("{files}/{} files", self.files));
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= LOG_EVERY {
            *last = Instant::now();
            tracing::info!(
                "backlog progress: {files}/{} files, {sent}/{} bytes, {:.1} MiB/s",
                self.files,
                self.bytes,
                self.rate(sent)
            );
        }
    }

    fn rate(&self, bytes: u64) -> f64 {
        bytes as f64 / self.started.elapsed().as_secs_f64().max(0.001) / (1 << 20) as f64
    }

    /// The backlog is through (all sent, or interrupted by an outage).
    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            if let Ok(mut on_screen) = ON_SCREEN.lock() {
                *on_screen = None;
            }
            bar.finish_and_clear();
        }
        let files = self.files_done.load(Ordering::Relaxed);
        let sent = self.bytes_done.load(Ordering::Relaxed);
        tracing::info!(
            "backlog done: {files}/{} files, {sent}/{} bytes in {:.1} s ({:.1} MiB/s)",
            self.files,
            self.bytes,
            self.started.elapsed().as_secs_f64(),
            self.rate(sent)
        );
    }
}
