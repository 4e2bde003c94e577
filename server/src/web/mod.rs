//! The HTTP listener on `[web] listen`: one axum server shared by the web UI, its JSON API
//! and the HTTP feeds (OTT data loggers, telemetry). Each part contributes a `Router`
//! (composed in `server.rs`); this module binds the socket, serves until shutdown and lets
//! requests in flight finish.
//!
//! - `/healthz`: liveness for load balancers and wall screens (no login): `ok`, or 503
//!   with the reason while the catalog is behind the archive.
//! - [`app`]: the web UI and `/api/`, for logged-in users only:
//!   [`auth`] (login, sessions, CSRF, Basic), [`access`] (the one place URL paths are
//!   confined and permission letters checked), [`browse`] (folders, `/api/list`),
//!   [`view`] (text view, `/api/view`), [`download`] (files, `.zip` / `.tar.gz`
//!   folders), [`search`], [`users`] (admin: users.toml), [`agents`] and [`sessions`]
//!   (admin pages; `/admin/alerts` is [`crate::alerts::admin`]), [`metrics`] (Prometheus text), [`error`] (status codes and error
//!   pages). `app` has the fallback (a 404 page): routers merged beside it must not.

pub mod access;
pub mod agents;
pub mod auth;
pub mod browse;
pub mod download;
pub mod error;
pub mod format;
pub mod metrics;
pub mod search;
pub mod sessions;
pub mod tls;
pub mod users;
pub mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use logarchive_common::config::server::WebConfig;

use crate::archive::Archive;
use crate::catalog::Catalog;
use crate::ftp::sessions::Sessions;
use crate::shutdown::Shutdown;
use crate::users::UserStore;
use error::WebError;

/// Routes every deployment has, whatever else is switched on.
pub fn base_routes(catalog: Catalog) -> Router {
    Router::new().route("/healthz", get(move || healthz(catalog.clone())))
}

/// `ok`, or 503 with the reason while the catalog is behind the archive.
async fn healthz(catalog: Catalog) -> Response {
    match catalog.health() {
        Ok(()) => "ok\n".into_response(),
        Err(reason) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("{reason}\n"),
        )
            .into_response(),
    }
}

/// What the web UI works with; cheap to clone.
#[derive(Clone)]
pub struct WebState(Arc<WebParts>);

pub struct WebParts {
    pub archive: Arc<dyn Archive>,
    pub catalog: Catalog,
    pub users: Arc<UserStore>,
    /// users.toml, edited through `UsersDocument` by the admin pages.
    pub users_file: PathBuf,
    pub ftp_sessions: Sessions,
    pub logins: auth::Logins,
    pub config: WebConfig,
    pub metrics: metrics::Counters,
    /// The feeds' counters, for `/metrics`.
    pub feed_stats: Arc<crate::feeds::FeedStats>,
    /// Alert incidents, for the admin pages and `/metrics`.
    pub alerts: Arc<crate::alerts::Alerts>,
    pub alerts_config: logarchive_common::config::server::AlertsConfig,
}

impl std::ops::Deref for WebState {
    type Target = WebParts;
    fn deref(&self) -> &WebParts {
        &self.0
    }
}

impl WebState {
    pub fn new(parts: WebParts) -> WebState {
        WebState(Arc::new(parts))
    }
}

/// The web UI and its API.
pub fn app(state: WebState) -> Router {
    let api = Router::new()
        .route("/api/list", get(browse::api_list))
        .route("/api/search", get(search::api_search))
        .route("/api/view", get(view::api_view))
        .route("/api/agents", get(agents::api_agents))
        .route("/api/alerts", get(crate::alerts::admin::api))
        .route("/api/sessions", get(sessions::api_sessions))
        .route("/api/users", get(users::api_list).post(users::api_add))
        .route(
            "/api/users/{name}",
            get(users::api_get)
                .put(users::api_set)
                .delete(users::api_remove),
        )
        .fallback(api_not_found)
        .layer(axum::middleware::map_response(error::jsonify_api_errors));
    Router::new()
        .route("/", get(|| async { Redirect::to("/browse/") }))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/browse", get(browse::page_root))
        .route("/browse/", get(browse::page_root))
        .route("/browse/{*path}", get(browse::page))
        .route("/view/{*path}", get(view::page))
        .route("/download/{*path}", get(download::get))
        .route("/search", get(search::page))
        .route("/admin", get(|| async { Redirect::to("/admin/users") }))
        .route("/admin/users", get(users::page_list).post(users::page_add))
        .route(
            "/admin/users/{name}",
            get(users::page_edit).post(users::page_save),
        )
        .route("/admin/sessions", get(sessions::page))
        .route("/admin/agents", get(agents::page))
        .route("/admin/alerts", get(crate::alerts::admin::page))
        .route("/metrics", get(metrics::get))
        .route("/assets/style.css", get(style))
        .route("/assets/app.js", get(script))
        .merge(api)
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            metrics::count_response,
        ))
        .with_state(state)
}

/// Defence in depth for every page: only our own scripts and styles run, no framing, no
/// content sniffing (a downloaded log is never taken for HTML).
pub async fn security_headers(mut response: Response) -> Response {
    use axum::http::HeaderValue;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn not_found() -> WebError {
    WebError::NotFound("no such page".into())
}

async fn api_not_found() -> WebError {
    WebError::NotFound("no such API route".into())
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/style.css"))
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// Query parameters; a malformed query is a 400 with a clear message, not axum's default.
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, WebError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Params(q.0))
            .map_err(|err| {
                WebError::BadRequest(format!("bad query parameters: {}", err.body_text()))
            })
    }
}

/// A form body; a malformed one is a 400 with a clear message.
pub struct Form<T>(pub T);

impl<T, S> FromRequest<S> for Form<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = WebError;

    async fn from_request(req: Request, state: &S) -> Result<Self, WebError> {
        axum::Form::<T>::from_request(req, state)
            .await
            .map(|f| Form(f.0))
            .map_err(|err| WebError::BadRequest(format!("bad form: {}", err.body_text())))
    }
}

/// A JSON body; a malformed one is a 400 with a clear message.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = WebError;

    async fn from_request(req: Request, state: &S) -> Result<Self, WebError> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|j| Json(j.0))
            .map_err(|err| WebError::BadRequest(format!("bad JSON body: {}", err.body_text())))
    }
}

/// For optional numbers in forms: an empty field (`min_size=`) means "not given".
pub fn empty_as_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text: Option<String> = serde::Deserialize::deserialize(deserializer)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|err| serde::de::Error::custom(format!("\"{text}\": {err}"))),
    }
}

/// Percent-encodes a query value or path (keeps `/` when `path`).
pub fn url_encode(text: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const QUERY: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(text, QUERY).to_string()
}

/// Percent-encodes an archive path for a URL, keeping its slashes.
pub fn url_path(path: &str) -> String {
    path.split('/')
        .map(url_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// Binds `listen` and serves `app` until `shutdown`; requests in flight are completed.
/// With `tls` (certificate and key files) the listener speaks HTTPS only.
pub async fn serve(
    listen: SocketAddr,
    app: Router,
    shutdown: Shutdown,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> anyhow::Result<()> {
    // Read before binding, so a bad certificate stops the start with its own message.
    let tls = match &tls {
        Some((cert, key)) => Some(tls::server_config(cert, key, "[web]")?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {listen} ([web] listen)"))?;
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => {
            tracing::info!(%listen, "web listener up (HTTP)");
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown.wait())
                .await
        }
        Some(config) => {
            tracing::info!(%listen, "web listener up (HTTPS)");
            // `tap_io` is how axum hands a custom listener's address to `ConnectInfo`.
            let listener = tls::TlsListener::new(listener, config)
                .context("the web listener failed")?
                .tap_io(|_| ());
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown.wait())
                .await
        }
    }
    .context("the web listener failed")
}
