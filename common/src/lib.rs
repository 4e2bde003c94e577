//! What the logarchive agent and server share.
//!
//! - [`perm`]: pyftpdlib permission strings (`elradfmwMT`) and the FTP commands each letter
//!   allows.
//! - [`rate`]: transfer rates as written in config files (`"300KiB/s"`) and the token bucket
//!   that enforces them across any number of sessions.
//! - [`paths`]: archive paths, normalised and confined so that nothing from outside can name
//!   a place beyond its root.
//! - [`config`]: the server's config and users files, and loading TOML with errors that name
//!   the file, line, key and value.

pub mod config;
pub mod paths;
pub mod perm;
pub mod rate;
