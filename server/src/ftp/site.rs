//! SITE CHMOD (letter M), MFMT / SITE MFMT (letter T), SITE SHA256 (letter r) and
//! SITE NOREPLACE (no letter: it only takes a right away).
//!
//! libunftp hands these to handlers registered by name; both resolve their path against
//! the session's working directory and go through the [`Guard`] like every other command.

use std::path::Path;
use std::time::SystemTime;

use async_trait::async_trait;
use libunftp::options::{Reply, ReplyCode, SiteCommandContext, SiteCommandHandler};
use libunftp::storage::error_reply;
use time::PrimitiveDateTime;
use time::macros::format_description;

use super::auth::FtpUser;
use super::guard::Guard;

fn user(ctx: &SiteCommandContext<Guard, FtpUser>) -> Option<&FtpUser> {
    (*ctx.user).as_ref()
}

/// `SITE CHMOD <octal mode> <path>`.
#[derive(Debug)]
pub struct Chmod;

#[async_trait]
impl SiteCommandHandler<Guard, FtpUser> for Chmod {
    async fn handle(&self, ctx: &SiteCommandContext<Guard, FtpUser>) -> Reply {
        let Some(user) = user(ctx) else {
            return Reply::new(ReplyCode::NotLoggedIn, "Not logged in");
        };
        let Some((mode, file)) = ctx.arguments.trim().split_once(' ') else {
            return Reply::new(
                ReplyCode::ParameterSyntaxError,
                "Usage: SITE CHMOD <mode> <path>",
            );
        };
        let mode = match u32::from_str_radix(mode, 8) {
            Ok(mode) if mode <= 0o777 => mode,
            _ => {
                return Reply::new_with_string(
                    ReplyCode::ParameterSyntaxError,
                    format!("Invalid mode \"{mode}\": write an octal mode from 000 to 777"),
                );
            }
        };
        let path = ctx.cwd.join(Path::new(file.trim()));
        match ctx.storage.chmod(user, &path, mode).await {
            Ok(()) => Reply::new(ReplyCode::CommandOkay, "SITE CHMOD successful"),
            Err(err) => error_reply(&err),
        }
    }
}

/// `MFMT <YYYYMMDDHHMMSS[.sss]> <path>` (draft-somers-ftp-mfxx), also as `SITE MFMT`.
#[derive(Debug)]
pub struct Mfmt;

fn parse_mfmt_time(text: &str) -> Option<SystemTime> {
    let whole = text.split('.').next()?;
    let format = format_description!("[year][month][day][hour][minute][second]");
    let time = PrimitiveDateTime::parse(whole, &format).ok()?.assume_utc();
    Some(time.into())
}

#[async_trait]
impl SiteCommandHandler<Guard, FtpUser> for Mfmt {
    async fn handle(&self, ctx: &SiteCommandContext<Guard, FtpUser>) -> Reply {
        let Some(user) = user(ctx) else {
            return Reply::new(ReplyCode::NotLoggedIn, "Not logged in");
        };
        let Some((stamp, file)) = ctx.arguments.trim().split_once(' ') else {
            return Reply::new(
                ReplyCode::ParameterSyntaxError,
                "Usage: MFMT <YYYYMMDDHHMMSS> <path>",
            );
        };
        let Some(time) = parse_mfmt_time(stamp) else {
            return Reply::new_with_string(
                ReplyCode::ParameterSyntaxError,
                format!("Invalid time \"{stamp}\": write YYYYMMDDHHMMSS in UTC"),
            );
        };
        let file = file.trim();
        let path = ctx.cwd.join(Path::new(file));
        match ctx.storage.set_modified(user, &path, time).await {
            Ok(()) => {
                Reply::new_with_string(ReplyCode::FileStatus, format!("Modify={stamp}; {file}"))
            }
            Err(err) => error_reply(&err),
        }
    }
}

/// `SITE SHA256 <path>`: `200 <hex>`, the SHA-256 of the whole file. Agents ask it before
/// moving a copy on the server instead of sending the same bytes again (copytruncate).
#[derive(Debug)]
pub struct Sha256;

#[async_trait]
impl SiteCommandHandler<Guard, FtpUser> for Sha256 {
    async fn handle(&self, ctx: &SiteCommandContext<Guard, FtpUser>) -> Reply {
        let Some(user) = user(ctx) else {
            return Reply::new(ReplyCode::NotLoggedIn, "Not logged in");
        };
        let file = ctx.arguments.trim();
        if file.is_empty() {
            return Reply::new(ReplyCode::ParameterSyntaxError, "Usage: SITE SHA256 <path>");
        }
        match ctx
            .storage
            .sha256(user, &ctx.cwd.join(Path::new(file)))
            .await
        {
            Ok(hash) => Reply::new_with_string(ReplyCode::CommandOkay, hash),
            Err(err) => error_reply(&err),
        }
    }
}

/// `SITE NOREPLACE`: from now on a STOR of this session that `ALLO <bytes>` announced (a
/// new file of that size) is refused (`550 ... already exists`) where a file exists, and
/// one that finds a file there at its commit is not committed. Other STORs replace as
/// before (the agent's temporary files and health report). The archive only grows: the
/// agent stores a new file under its final name this way, in one command, and keeps the
/// older copy first when there is one.
#[derive(Debug)]
pub struct NoReplace;

#[async_trait]
impl SiteCommandHandler<Guard, FtpUser> for NoReplace {
    async fn handle(&self, ctx: &SiteCommandContext<Guard, FtpUser>) -> Reply {
        let Some(user) = user(ctx) else {
            return Reply::new(ReplyCode::NotLoggedIn, "Not logged in");
        };
        if !ctx.arguments.trim().is_empty() {
            return Reply::new(ReplyCode::ParameterSyntaxError, "Usage: SITE NOREPLACE");
        }
        match &user.session {
            Some(session) => {
                session.refuse_replacing();
                Reply::new(
                    ReplyCode::CommandOkay,
                    "STOR announced by ALLO in this session will not replace existing files",
                )
            }
            None => Reply::new(ReplyCode::CommandNotImplemented, "No session to set"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mfmt_times() {
        let time = parse_mfmt_time("20240723101500").unwrap();
        let secs = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(secs, 1721729700);
        assert!(parse_mfmt_time("20240723101500.123").is_some());
        for bad in ["2024", "20241350101500", "abc", ""] {
            assert!(parse_mfmt_time(bad).is_none(), "{bad}");
        }
    }
}
