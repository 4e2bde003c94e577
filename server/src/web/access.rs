//! The one place where the web UI turns a path from a URL into an [`ArchivePath`] and
//! checks the user's right to it: parsed strictly by `ArchivePath::parse` (`..` in any
//! encoding is refused, since axum decodes before we parse), confined to the user's
//! home, never the server's reserved folder, and the permission letter checked with
//! `Account::may` (the same rule as FTP's guard, `[user.dirs]` included).

use logarchive_common::paths::ArchivePath;
use logarchive_common::perm::Perm;

use super::error::WebError;
use crate::archive::is_reserved;
use crate::users::Account;

/// Parses `raw` (with or without its leading `/`) and checks `perm` on it for `account`.
pub fn authorize(account: &Account, perm: Perm, raw: &str) -> Result<ArchivePath, WebError> {
    let path = parse(raw)?;
    check(account, perm, &path)?;
    Ok(path)
}

/// Parses a path from outside, strictly.
pub fn parse(raw: &str) -> Result<ArchivePath, WebError> {
    let absolute = if raw.starts_with('/') {
        raw.to_owned()
    } else {
        format!("/{raw}")
    };
    Ok(ArchivePath::parse(&absolute)?)
}

/// Checks that `path` is inside the user's home, not reserved, and that `perm` is granted.
pub fn check(account: &Account, perm: Perm, path: &ArchivePath) -> Result<(), WebError> {
    if is_reserved(path) {
        return Err(WebError::NotFound(format!(
            "{path}: no such file or folder"
        )));
    }
    if !path.starts_with(&account.home) {
        return Err(WebError::Forbidden(format!(
            "{path} is outside your home folder {}",
            account.home
        )));
    }
    if !account.may(perm, path) {
        return Err(WebError::Forbidden(format!(
            "permission denied: '{}' ({}) is not granted on {path}",
            perm.letter(),
            perm.meaning()
        )));
    }
    Ok(())
}
