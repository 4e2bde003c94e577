//! Notifications to a webhook: each one POSTed as JSON ([`super::Notification`]) to
//! `[alerts.webhook] url`, from a bounded queue by one worker, in order. A failed attempt
//! (no connection, timeout, a 5xx or 429 answer) is retried after 1 s, 2 s, 4 s ... (at
//! most 60 s) up to `retries` times; another answer (4xx, a redirect) is final. The
//! optional bearer token is read from `bearer_token_file` at start-up, sent as a sensitive
//! header and never logged; logs name the receiver's host only, since webhook addresses
//! often carry a secret in their path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use logarchive_common::config::server::WebhookConfig;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use tokio::sync::mpsc;

use super::{Alerts, DeliveryCounts, Notification, backoff};

/// The sending side of the webhook's queue.
pub struct Queue(mpsc::Sender<Notification>);

impl Queue {
    /// Reads the token, builds the client and starts the worker.
    pub fn start(
        config: &WebhookConfig,
        resolve: &impl Fn(&Path) -> PathBuf,
        alerts: Arc<Alerts>,
    ) -> anyhow::Result<(Queue, tokio::task::JoinHandle<()>)> {
        let token = match &config.bearer_token_file {
            Some(file) => Some(bearer(&resolve(file.get_ref()))?),
            None => None,
        };
        let url = config.url.get_ref().clone();
        let tls = if url.scheme() == "https" {
            let ca = config.ca_file.as_ref().map(|f| resolve(f.get_ref()));
            logarchive_common::tls::client_config(ca.as_deref())
                .map_err(|e| anyhow!("[alerts.webhook] {e}"))?
        } else {
            // Never used for http://, but the client wants one (its TLS has no default).
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            )
        };
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(config.timeout.0)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("logarchive-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("[alerts.webhook]: cannot set up the HTTP client")?;
        let (sender, receiver) = mpsc::channel(config.queue.max(1));
        let worker = Worker {
            client,
            url,
            token,
            retries: config.retries,
            alerts,
        };
        Ok((Queue(sender), tokio::spawn(worker.run(receiver))))
    }

    /// Queues a notification; when the queue is full it is dropped (counted, logged).
    pub fn push(&self, notification: Notification, counts: &DeliveryCounts) {
        if let Err(err) = self.0.try_send(notification) {
            DeliveryCounts::add(&counts.dropped);
            let notification = match err {
                mpsc::error::TrySendError::Full(n) | mpsc::error::TrySendError::Closed(n) => n,
            };
            tracing::error!(
                incident = %notification.incident,
                "alerts: webhook queue full, not sent: {}",
                notification.headline()
            );
        }
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
    client: reqwest::Client,
    url: reqwest::Url,
    token: Option<HeaderValue>,
    retries: u32,
    alerts: Arc<Alerts>,
}

impl Worker {
    async fn run(self, mut queue: mpsc::Receiver<Notification>) {
        while let Some(notification) = queue.recv().await {
            let counts = &self.alerts.webhook;
            if self.deliver(&notification).await {
                DeliveryCounts::add(&counts.sent);
            } else {
                DeliveryCounts::add(&counts.failed);
            }
        }
    }

    /// Sends one notification with retries; whether the receiver took it.
    async fn deliver(&self, notification: &Notification) -> bool {
        let host = self.url.host_str().unwrap_or("?");
        for attempt in 0..=self.retries {
            let mut request = self.client.post(self.url.clone()).json(notification);
            if let Some(token) = &self.token {
                request = request.header(AUTHORIZATION, token.clone());
            }
            let why = match request.send().await {
                Ok(response) if response.status().is_success() => return true,
                Ok(response)
                    if response.status().is_server_error()
                        || response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS =>
                {
                    format!("answered {}", response.status())
                }
                Ok(response) => {
                    tracing::error!(
                        incident = %notification.incident,
                        "alerts: webhook at {host} refused the notification ({}); not retried",
                        response.status()
                    );
                    return false;
                }
                Err(err) => err.without_url().to_string(),
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
