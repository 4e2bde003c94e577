//! Notifications to a webhook: each one POSTed as JSON ([`super::Notification`]) to
//! `[alerts.webhook] url`, from a bounded queue by one worker, in order; one connection per
//! notification (hyper's HTTP/1.1 client; `https` through tokio-rustls, the certificate
//! checked against `ca_file` or the system's roots). A failed attempt (no connection,
//! timeout, a 5xx or 429 answer) is retried after 1 s, 2 s, 4 s ... (at most 60 s) up to
//! `retries` times; another answer (4xx, a redirect) is final. The optional bearer token is
//! read from `bearer_token_file` at start-up, sent as a sensitive header and never logged;
//! logs name the receiver's host only, since webhook addresses often carry a secret in
//! their path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use hyper_util::rt::TokioIo;
use logarchive_common::config::server::WebhookConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::{Alerts, Notification, Queue, backoff};

/// Reads the token, sets up TLS and starts the worker.
pub fn start(
    config: &WebhookConfig,
    resolve: &impl Fn(&Path) -> PathBuf,
    alerts: Arc<Alerts>,
) -> anyhow::Result<(Queue, tokio::task::JoinHandle<()>)> {
    let token = match &config.bearer_token_file {
        Some(file) => Some(bearer(&resolve(file.get_ref()))?),
        None => None,
    };
    let url = config.url.get_ref();
    let host = match url.host() {
        Some(url::Host::Domain(name)) => name.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(anyhow!("[alerts.webhook] url: no host")),
    };
    let tls = if url.scheme() == "https" {
        let ca = config.ca_file.as_ref().map(|f| resolve(f.get_ref()));
        let config = logarchive_common::tls::client_config(ca.as_deref())
            .map_err(|e| anyhow!("[alerts.webhook] {e}"))?;
        let name = ServerName::try_from(host.clone())
            .map_err(|e| anyhow!("[alerts.webhook] url: host \"{host}\": {e}"))?;
        Some((tokio_rustls::TlsConnector::from(config), name))
    } else {
        None
    };
    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let target = Target {
        port: url.port_or_known_default().unwrap_or(80),
        host,
        authority: HeaderValue::from_str(&authority)
            .context("[alerts.webhook] url: host is not a valid header")?,
        path: url[url::Position::BeforePath..url::Position::AfterQuery].to_owned(),
        tls,
        token,
        timeout: config.timeout.0,
    };
    let (queue, receiver) = Queue::new("webhook", config.queue);
    let worker = Worker {
        target,
        retries: config.retries,
        alerts,
    };
    Ok((queue, tokio::spawn(worker.run(receiver))))
}

/// Where and how to POST.
struct Target {
    host: String,
    port: u16,
    /// The `Host` header.
    authority: HeaderValue,
    /// Path and query.
    path: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    token: Option<HeaderValue>,
    timeout: std::time::Duration,
}

/// The most of a receiver's answer that is read (and thrown away).
const MAX_ANSWER: usize = 64 * 1024;

impl Target {
    /// One attempt: the receiver's status, or why there was none.
    async fn post(&self, body: Bytes) -> Result<StatusCode, String> {
        let attempt = async {
            let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            match &self.tls {
                Some((connector, name)) => {
                    let stream = connector
                        .connect(name.clone(), stream)
                        .await
                        .map_err(|e| format!("TLS: {e}"))?;
                    self.exchange(stream, body).await
                }
                None => self.exchange(stream, body).await,
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)))
    }

    async fn exchange<S>(&self, stream: S, body: Bytes) -> Result<StatusCode, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let connection = tokio::spawn(connection);
        let mut request = hyper::Request::post(self.path.as_str())
            .header(HOST, self.authority.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("logarchive-server/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.clone());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status();
        // The answer's body is not used; read a little of it so the exchange ends cleanly.
        let _ = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await;
        drop(sender);
        connection.abort();
        Ok(status)
    }
}

/// `Authorization: Bearer <token>` from the first line of `file`.
fn bearer(file: &Path) -> anyhow::Result<HeaderValue> {
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "[alerts.webhook] bearer_token_file \"{}\": cannot read",
            file.display()
        )
    })?;
    let token = text.lines().next().unwrap_or("").trim();
    let bad = || {
        anyhow!(
            "[alerts.webhook] bearer_token_file \"{}\": the first line must be the token (visible ASCII, not empty)",
            file.display()
        )
    };
    if token.is_empty() {
        return Err(bad());
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| bad())?;
    value.set_sensitive(true);
    Ok(value)
}

struct Worker {
    target: Target,
    retries: u32,
    alerts: Arc<Alerts>,
}

impl Worker {
    async fn run(self, queue: mpsc::Receiver<Notification>) {
        let worker = &self;
        super::deliver_all(queue, &self.alerts.webhook, |notification| async move {
            worker.deliver(&notification).await
        })
        .await
    }

    /// Sends one notification with retries; whether the receiver took it.
    async fn deliver(&self, notification: &Notification) -> bool {
        let host = &self.target.host;
        let body = match serde_json::to_vec(notification) {
            Ok(body) => Bytes::from(body),
            Err(err) => {
                tracing::error!("alerts: cannot encode a notification: {err}");
                return false;
            }
        };
        for attempt in 0..=self.retries {
            let why = match self.target.post(body.clone()).await {
                Ok(status) if status.is_success() => return true,
                Ok(status)
                    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS =>
                {
                    format!("answered {status}")
                }
                Ok(status) => {
                    tracing::error!(
                        incident = %notification.incident,
                        "alerts: webhook at {host} refused the notification ({status}); not retried"
                    );
                    return false;
                }
                Err(why) => why,
            };
            if attempt < self.retries {
                let wait = backoff(attempt);
                tracing::warn!(
                    incident = %notification.incident,
                    "alerts: webhook at {host}: {why}; retrying in {wait:?}"
                );
                tokio::time::sleep(wait).await;
            } else {
                tracing::error!(
                    incident = %notification.incident,
                    "alerts: webhook at {host}: {why}; gave up after {} attempts: {}",
                    attempt + 1,
                    notification.headline()
                );
            }
        }
        false
    }
}
