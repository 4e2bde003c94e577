//! Who is asking: web logins, session cookies, CSRF tokens, and HTTP Basic for scripts.
//!
//! Passwords are checked by the FTP service's own [`PasswordAuthenticator`] (argon2id on
//! the blocking pool under its semaphore, decoy hash for unknown names, disabled accounts
//! refused, the 15-minute cache that keeps HTTP Basic scripts cheap), so a web login costs
//! what an FTP login costs. Failures are counted per (user, address) with the `[ftp]`
//! `max_failed_logins` / `failed_login_block` policy.
//!
//! A session is a random token in an HttpOnly, SameSite=Strict cookie, held in memory (a
//! restart logs everybody out). Each session has a CSRF token that every form carries and
//! every state-changing request made with the cookie must present (form field `csrf`, or the
//! `X-CSRF-Token` header for API calls). Basic auth is taken by `/api/`, `/metrics` and
//! `GET /download/` (scripts); Basic requests need no CSRF token, and no form accepts them.
//! The account is looked up on every request, so a disabled or removed user is out at once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use unftp_core::auth::{Authenticator, ChannelEncryptionState, Credentials};

use super::error::WebError;
use super::{Form, Params, WebState};
use crate::ftp::auth::PasswordAuthenticator;
use crate::users::Account;

pub const SESSION_COOKIE: &str = "logarchive_session";
const LOGIN_CSRF_COOKIE: &str = "logarchive_login";

struct WebSession {
    user: String,
    csrf: String,
    last_seen: Instant,
}

/// Failed attempts of one (user, address), and until when it is blocked.
#[derive(Default)]
struct Failures {
    count: u32,
    blocked_until: Option<Instant>,
    last: Option<Instant>,
}

/// Past this many (user, address) pairs, old failures are forgotten, so guessing with
/// ever new names cannot grow the table without bound.
const MAX_TRACKED_FAILURES: usize = 10_000;

/// Web logins: the password check, live sessions and failed-login blocking.
pub struct Logins {
    authenticator: PasswordAuthenticator,
    sessions: Mutex<HashMap<String, WebSession>>,
    failures: Mutex<HashMap<(String, IpAddr), Failures>>,
    max_failed: u32,
    block: Duration,
    idle: Duration,
}

impl Logins {
    pub fn new(
        authenticator: PasswordAuthenticator,
        max_failed: u32,
        block: Duration,
        idle: Duration,
    ) -> Logins {
        Logins {
            authenticator,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            max_failed: max_failed.max(1),
            block,
            idle,
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Checks a password, with blocking after repeated failures. Returns whether it is valid.
    async fn check(
        &self,
        state: &WebState,
        user: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<bool, WebError> {
        let key = (user.to_owned(), ip);
        {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = failures.get_mut(&key) {
                match entry.blocked_until {
                    Some(until) if until > Instant::now() => {
                        return Err(WebError::TooManyRequests(
                            "too many failed logins: this user is blocked from this address for a while".into(),
                        ));
                    }
                    Some(_) => *entry = Failures::default(),
                    None => {}
                }
            }
        }
        let creds = Credentials {
            password: Some(password.to_owned()),
            certificate_chain: None,
            source_ip: ip,
            command_channel_security: ChannelEncryptionState::Plaintext,
        };
        let valid = self.authenticator.authenticate(user, &creds).await.is_ok();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if valid {
            failures.remove(&key);
        } else {
            state
                .metrics
                .failed_logins
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if failures.len() >= MAX_TRACKED_FAILURES {
                let block = self.block;
                failures.retain(|_, f| f.last.is_some_and(|t| t.elapsed() < block));
            }
            let entry = failures.entry(key).or_default();
            entry.count += 1;
            entry.last = Some(Instant::now());
            if entry.count >= self.max_failed {
                entry.blocked_until = Some(Instant::now() + self.block);
            }
        }
        Ok(valid)
    }

    fn open_session(&self, user: &str) -> (String, String) {
        let token = random_token();
        let csrf = random_token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let idle = self.idle;
        sessions.retain(|_, s| s.last_seen.elapsed() < idle);
        sessions.insert(
            token.clone(),
            WebSession {
                user: user.to_owned(),
                csrf: csrf.clone(),
                last_seen: Instant::now(),
            },
        );
        (token, csrf)
    }

    /// The user and CSRF token of a live session (and marks it used).
    fn session(&self, token: &str) -> Option<(String, String)> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let session = sessions.get_mut(token)?;
        if session.last_seen.elapsed() >= self.idle {
            sessions.remove(token);
            return None;
        }
        session.last_seen = Instant::now();
        Some((session.user.clone(), session.csrf.clone()))
    }

    fn close_session(&self, token: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// A cookie's value from the request headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |info| info.0.ip())
}

/// How a request proved who it is.
#[derive(Debug, Clone)]
pub enum Via {
    /// The session cookie; forms and cookie API calls must echo this CSRF token.
    Session {
        csrf: String,
    },
    Basic,
}

/// The logged-in user of a request: a live account (enabled, present in users.toml).
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub account: Arc<Account>,
    pub via: Via,
    /// Open alert incidents, for the navigation's badge (admins only; 0 for others).
    pub open_incidents: usize,
}

impl CurrentUser {
    /// The token forms must carry (empty for Basic-auth requests, which have no forms).
    pub fn csrf(&self) -> &str {
        match &self.via {
            Via::Session { csrf } => csrf,
            Via::Basic => "",
        }
    }

    /// Refuses a state change made with the session cookie without its CSRF token.
    pub fn check_csrf(&self, presented: Option<&str>) -> Result<(), WebError> {
        match &self.via {
            Via::Basic => Ok(()),
            Via::Session { csrf } if presented.is_some_and(|p| constant_eq(p, csrf)) => Ok(()),
            Via::Session { .. } => Err(WebError::Forbidden(
                "missing or wrong CSRF token: reload the page and try again".into(),
            )),
        }
    }

    pub fn require_admin(&self) -> Result<(), WebError> {
        if self.account.admin {
            Ok(())
        } else {
            Err(WebError::Forbidden(
                "this page is for administrators (admin = true)".into(),
            ))
        }
    }
}

fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Any router whose state holds the [`WebState`] (the feeds' read side, for one) takes the
/// same logins, so there is one way in on the web listener.
impl<S> FromRequestParts<S> for CurrentUser
where
    WebState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, WebError> {
        let state = &WebState::from_ref(state);
        let api = parts.uri.path().starts_with("/api/") || parts.uri.path() == "/metrics";
        let refuse = || {
            if api {
                WebError::Unauthorized
            } else {
                let next = parts
                    .uri
                    .path_and_query()
                    .map_or("/".to_owned(), |p| p.as_str().to_owned());
                WebError::LoginRequired { next }
            }
        };
        let live = |name: &str| state.users.get(name).filter(|a| a.enabled);
        if let Some(token) = cookie(&parts.headers, SESSION_COOKIE)
            && let Some((name, csrf)) = state.logins.session(&token)
        {
            let Some(account) = live(&name) else {
                state.logins.close_session(&token);
                return Err(refuse());
            };
            let user = CurrentUser {
                open_incidents: open_incidents(state, &account),
                account,
                via: Via::Session { csrf },
            };
            // API calls that change something carry the token in a header; forms are
            // checked by their handlers (the token is in the body).
            if api && !matches!(parts.method, Method::GET | Method::HEAD) {
                let presented = parts
                    .headers
                    .get("x-csrf-token")
                    .and_then(|v| v.to_str().ok());
                user.check_csrf(presented)?;
            }
            return Ok(user);
        }
        // Scripts also fetch files with Basic (`curl -u`); pages with forms never take it,
        // so a form can never be posted on the strength of credentials a browser cached.
        let basic_allowed =
            api || (parts.method == Method::GET && parts.uri.path().starts_with("/download/"));
        if basic_allowed && let Some((name, password)) = basic_credentials(&parts.headers) {
            let ip = client_ip(parts);
            if state.logins.check(state, &name, &password, ip).await?
                && let Some(account) = live(&name)
            {
                return Ok(CurrentUser {
                    open_incidents: open_incidents(state, &account),
                    account,
                    via: Via::Basic,
                });
            }
        }
        Err(refuse())
    }
}

fn open_incidents(state: &WebState, account: &Account) -> usize {
    if account.admin {
        state.alerts.open_count()
    } else {
        0
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf: &'a str,
    next: &'a str,
    error: Option<&'a str>,
}

#[derive(serde::Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Only local paths are followed after a login (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

/// A cookie; `secure` when the listener speaks HTTPS (`[web] cert`), so the browser never
/// sends it over plain HTTP.
fn cookie_header(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> HeaderValue {
    let age = max_age.map_or(String::new(), |s| format!("; Max-Age={s}"));
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict{secure}{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

fn login_page(
    secure: bool,
    next: &str,
    error: Option<&str>,
    status: axum::http::StatusCode,
) -> Result<Response, WebError> {
    let csrf = random_token();
    let page = LoginPage {
        csrf: &csrf,
        next,
        error,
    };
    let mut response = (status, Html(page.render()?)).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(LOGIN_CSRF_COOKIE, &csrf, Some(3600), secure),
    );
    Ok(response)
}

pub async fn login_form(
    State(state): State<WebState>,
    Params(query): Params<LoginQuery>,
) -> Result<Response, WebError> {
    login_page(
        state.config.tls().is_some(),
        &safe_next(query.next.as_deref()),
        None,
        axum::http::StatusCode::OK,
    )
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    csrf: String,
    next: Option<String>,
}

pub async fn login(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    let next = safe_next(form.next.as_deref());
    // Double-submit token: the login form's cookie must match its hidden field.
    if !cookie(&headers, LOGIN_CSRF_COOKIE).is_some_and(|c| constant_eq(&c, &form.csrf)) {
        return login_page(
            state.config.tls().is_some(),
            &next,
            Some("The login form expired; please try again."),
            axum::http::StatusCode::FORBIDDEN,
        );
    }
    match state
        .logins
        .check(&state, &form.user, &form.password, peer.ip())
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return login_page(
                state.config.tls().is_some(),
                &next,
                Some("Wrong user name or password."),
                axum::http::StatusCode::UNAUTHORIZED,
            );
        }
        Err(WebError::TooManyRequests(message)) => {
            return login_page(
                state.config.tls().is_some(),
                &next,
                Some(&message),
                axum::http::StatusCode::TOO_MANY_REQUESTS,
            );
        }
        Err(other) => return Err(other),
    }
    let (token, _) = state.logins.open_session(&form.user);
    tracing::info!(user = %form.user, ip = %peer.ip(), "web login");
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(SESSION_COOKIE, &token, None, state.config.tls().is_some()),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(LOGIN_CSRF_COOKIE, "", Some(0), state.config.tls().is_some()),
    );
    Ok(response)
}

#[derive(serde::Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

pub async fn logout(
    State(state): State<WebState>,
    user: CurrentUser,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    user.check_csrf(Some(&form.csrf))?;
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        state.logins.close_session(&token);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(SESSION_COOKIE, "", Some(0), state.config.tls().is_some()),
    );
    Ok(response)
}
