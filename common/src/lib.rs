//! What the logarchive agent and server share.
//!
//! - [`perm`]: pyftpdlib permission strings (`elradfmwMT`) and the FTP commands each letter
//!   allows.
//! - [`rate`]: transfer rates as written in config files (`"300KiB/s"`) and the token bucket
//!   that enforces them across any number of sessions.
//! - [`paths`]: archive paths, normalised and confined so that nothing from outside can name
//!   a place beyond its root.
//! - [`config`]: the server's and the agent's config files, and loading TOML with errors
//!   that name the file, line, key and value.
//! - [`logging`]: tracing to stderr, the same way in both binaries.
//! - [`tls`]: TLS client settings (a CA file or the system's roots).

pub mod config;
pub mod logging;
pub mod paths;
pub mod perm;
pub mod rate;
pub mod tls;
