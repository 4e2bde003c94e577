//! FTP logins: passwords checked against users.toml, and the per-session user.
//!
//! The session's user value also carries its entry in the live sessions registry
//! ([`super::sessions`]). libunftp hands the authenticator the client's address but gives
//! the user-detail provider only a [`Principal`], which holds just a name; so the
//! authenticator appends the address to the principal's name after a newline (which no
//! FTP user name can contain, commands being lines) and the provider splits it off.
//!
//! Hashing is argon2id, which is deliberately slow and memory-hungry; it runs on the
//! blocking pool under a semaphore so that a flood of logins can neither starve the async
//! threads nor make the server allocate without bound. Unknown users cost the same time
//! as wrong passwords, so logins do not reveal which names exist.
//!
//! Agents reconnect often with the same password, so a successful check is remembered for
//! [`LOGIN_CACHE_TTL`] as a keyed SHA-256 of the password (the key is random per process
//! and never leaves memory), tied to the stored hash: a password change, or a restart,
//! forgets it. SFTPGo does the same ("password caching").
//!
//! Every refused login (FTP, and the web UI's, which come through [`Authenticator`] too) is
//! noted in the alerts' [`FailedLogins`] window.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use unftp_core::auth::{
    AuthenticationError, Authenticator, Credentials, Principal, UserDetail, UserDetailError,
    UserDetailProvider,
};

use super::sessions::{SessionHandle, Sessions, TransferMark};
use super::throttle::Direction;
use crate::alerts::logins::FailedLogins;
use crate::archive::Archive;
use crate::users::{Account, UserStore, hash_password, verify_password};

/// The user of one FTP session. Rights are looked up live from the store on every command.
#[derive(Debug, Clone)]
pub struct FtpUser {
    pub name: String,
    pub enabled: bool,
    /// The session's entry in the live sessions registry, removed when the last clone
    /// of this value goes with the session.
    pub session: Option<Arc<SessionHandle>>,
}

impl FtpUser {
    /// Marks a transfer as running in this session (shown on the sessions page).
    pub fn transfer(&self, path: &str, direction: Direction) -> TransferMark {
        match &self.session {
            Some(session) => session.transfer(path, direction),
            None => TransferMark::none(),
        }
    }
}

/// Separates the user name from the client address inside a [`Principal`].
const ADDRESS_SEPARATOR: char = '\n';

impl fmt::Display for FtpUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl UserDetail for FtpUser {
    fn account_enabled(&self) -> bool {
        self.enabled
    }
}

/// How long a verified password is remembered.
pub const LOGIN_CACHE_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
pub struct PasswordAuthenticator {
    users: Arc<UserStore>,
    archive: Arc<dyn Archive>,
    /// Refused logins are noted here for the alerts.
    failed_logins: Arc<FailedLogins>,
    hashing: Semaphore,
    cache: LoginCache,
}

/// (user, stored hash) -> (keyed digest of the password, when it was verified)
type Verified = HashMap<(String, String), ([u8; 32], Instant)>;

/// Recently verified passwords, as keyed digests.
struct LoginCache {
    key: [u8; 32],
    verified: Mutex<Verified>,
}

impl fmt::Debug for LoginCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginCache(..)")
    }
}

impl LoginCache {
    fn new() -> Self {
        LoginCache {
            key: rand::random(),
            verified: Mutex::new(HashMap::new()),
        }
    }

    fn digest(&self, password: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(self.key)
            .chain_update(password.as_bytes())
            .finalize()
            .into()
    }

    fn knows(&self, user: &str, hash: &str, password: &str) -> bool {
        let digest = self.digest(password);
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified
            .get(&(user.to_owned(), hash.to_owned()))
            .is_some_and(|(known, when)| *known == digest && when.elapsed() < LOGIN_CACHE_TTL)
    }

    fn remember(&self, user: &str, hash: &str, password: &str) {
        let digest = self.digest(password);
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.retain(|_, (_, when)| when.elapsed() < LOGIN_CACHE_TTL);
        verified.insert((user.to_owned(), hash.to_owned()), (digest, Instant::now()));
    }
}

impl PasswordAuthenticator {
    pub fn new(
        users: Arc<UserStore>,
        archive: Arc<dyn Archive>,
        failed_logins: Arc<FailedLogins>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        PasswordAuthenticator {
            users,
            archive,
            failed_logins,
            hashing: Semaphore::new(cores * 2),
            cache: LoginCache::new(),
        }
    }
}

impl PasswordAuthenticator {
    /// Checks a user's password as a login does (also for HTTP Basic auth of the feeds):
    /// the account when it exists, is enabled and the password is right, else `None`.
    pub async fn verify(&self, username: &str, password: &str) -> Option<Arc<Account>> {
        match self.check(username, password).await {
            Ok((Some(account), true)) => Some(account),
            _ => None,
        }
    }

    /// The account (enabled ones only) and whether the password is right.
    async fn check(
        &self,
        username: &str,
        password: &str,
    ) -> Result<(Option<Arc<Account>>, bool), AuthenticationError> {
        let store = self.users.clone();
        let _ = tokio::task::spawn_blocking(move || store.reload_if_changed()).await;
        // A disabled account is treated like an unknown one: no home, no "login" line.
        let account = self.users.get(username).filter(|account| account.enabled);
        let hash = account
            .as_ref()
            .map_or_else(|| decoy_hash().to_owned(), |a| a.password_hash.clone());
        if account.is_some() && self.cache.knows(username, &hash, password) {
            return Ok((account, true));
        }
        let permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| AuthenticationError::with_source("hashing unavailable", e))?;
        let (checked_hash, checked_password) = (hash.clone(), password.to_owned());
        let valid =
            tokio::task::spawn_blocking(move || verify_password(&checked_hash, &checked_password))
                .await
                .unwrap_or(false);
        drop(permit);
        if valid && account.is_some() {
            self.cache.remember(username, &hash, password);
        }
        Ok((account, valid))
    }
}

/// A hash to verify against when the user does not exist, so that takes as long.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("logarchive decoy password").unwrap_or_default())
}

#[async_trait]
impl Authenticator for PasswordAuthenticator {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        let password = creds.password.clone().unwrap_or_default();
        let (account, valid) = self.check(username, &password).await?;
        match account {
            Some(account) if valid => {
                // The home exists from the first login on, so the user can CWD and list it.
                if let Err(err) = self.archive.create_dir_all(&account.home).await {
                    tracing::error!(
                        user = username,
                        "cannot create home {}: {err}",
                        account.home
                    );
                }
                tracing::info!(user = username, ip = %creds.source_ip, admin = account.admin, "login");
                Ok(Principal {
                    username: format!("{username}{ADDRESS_SEPARATOR}{}", creds.source_ip),
                })
            }
            Some(_) => {
                self.failed_logins.note(creds.source_ip);
                tracing::warn!(user = username, ip = %creds.source_ip, "login failed: wrong password");
                Err(AuthenticationError::BadPassword)
            }
            None => {
                self.failed_logins.note(creds.source_ip);
                tracing::warn!(user = username, ip = %creds.source_ip, "login failed: no such user");
                Err(AuthenticationError::BadUser)
            }
        }
    }
}

#[derive(Debug)]
pub struct AccountProvider {
    users: Arc<UserStore>,
    sessions: Sessions,
}

impl AccountProvider {
    pub fn new(users: Arc<UserStore>, sessions: Sessions) -> Self {
        AccountProvider { users, sessions }
    }
}

#[async_trait]
impl UserDetailProvider for AccountProvider {
    type User = FtpUser;

    async fn provide_user_detail(&self, principal: &Principal) -> Result<FtpUser, UserDetailError> {
        let (name, address) = match principal.username.split_once(ADDRESS_SEPARATOR) {
            Some((name, address)) => (name, address.parse().ok()),
            None => (principal.username.as_str(), None),
        };
        let account = self
            .users
            .get(name)
            .ok_or_else(|| UserDetailError::UserNotFound {
                username: name.to_owned(),
            })?;
        // Registered here, after the password check: libunftp keeps this value for the
        // session's life (or drops it at once if the login is refused after all).
        let session = self.sessions.open(&account.name, address);
        Ok(FtpUser {
            name: account.name.clone(),
            enabled: account.enabled,
            session: Some(Arc::new(session)),
        })
    }
}
