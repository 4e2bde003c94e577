//! Logging for both binaries: tracing to stderr, `RUST_LOG` overriding the default filter,
//! colours only on a terminal (log files and journald get plain text).

use std::io::IsTerminal;

pub fn init(default_filter: &str) {
    init_with_writer(default_filter, std::io::stderr);
}

/// Like [`init`], writing through `writer` (which must end up on stderr), e.g. one that
/// keeps a progress bar intact.
pub fn init_with_writer<W>(default_filter: &str, writer: W)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
