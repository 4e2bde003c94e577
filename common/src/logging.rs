//! Logging for both binaries: tracing to stderr, `RUST_LOG` overriding the default filter,
//! colours only on a terminal (log files and journald get plain text).

use std::io::IsTerminal;

pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
