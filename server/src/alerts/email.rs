//! Notifications by mail: each one a plain-text message over SMTP (lettre, tokio, rustls
//! with aws-lc-rs) to `[alerts.email] to`, from a bounded queue by one worker, in order.
//! `security` is `starttls` (required, never a fallback to plaintext), `tls` (SMTPS) or
//! `plain` (a local relay); the server's certificate must chain to `ca_file` or the
//! system's roots. SMTP AUTH, when `user` is set, takes the password from
//! `password_file`, read at start-up and never logged. A failed delivery is retried after
//! 1 s, 2 s, 4 s ... (at most 60 s) up to `retries` times, except when the server refused
//! it for good (a 5xx reply).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Mailboxes};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use logarchive_common::config::server::{EmailConfig, SmtpSecurity};
use tokio::sync::mpsc;

use super::{Alerts, Notification, Queue, backoff};

/// Reads the password, sets up the transport and starts the worker.
pub fn start(
    config: &EmailConfig,
    resolve: &impl Fn(&Path) -> PathBuf,
    alerts: Arc<Alerts>,
) -> anyhow::Result<(Queue, tokio::task::JoinHandle<()>)> {
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.server)
        .port(config.port())
        .timeout(Some(config.timeout.0));
    if config.security != SmtpSecurity::Plain {
        let mut params = TlsParameters::builder(config.server.clone());
        if let Some(ca) = &config.ca_file {
            let path = resolve(ca.get_ref());
            let pem = std::fs::read(&path).with_context(|| {
                format!("[alerts.email] ca_file \"{}\": cannot read", path.display())
            })?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| anyhow!("[alerts.email] ca_file \"{}\": {e}", path.display()))?;
            params = params
                .certificate_store(CertificateStore::None)
                .add_root_certificate(cert);
        }
        let params = params
            .build_rustls()
            .map_err(|e| anyhow!("[alerts.email]: TLS setup: {e}"))?;
        builder = builder.tls(match config.security {
            SmtpSecurity::Tls => Tls::Wrapper(params),
            _ => Tls::Required(params),
        });
    }
    if let (Some(user), Some(file)) = (&config.user, &config.password_file) {
        let path = resolve(file.get_ref());
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "[alerts.email] password_file \"{}\": cannot read",
                path.display()
            )
        })?;
        let password = text.lines().next().unwrap_or("").to_owned();
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    let to: Mailboxes = config
        .to
        .get_ref()
        .iter()
        .map(|address| Mailbox::new(None, address.clone()))
        .collect();
    let worker = Worker {
        transport: builder.build(),
        from: Mailbox::new(Some("logarchive".to_owned()), config.from.clone()),
        to,
        retries: config.retries,
        alerts,
    };
    let (queue, receiver) = Queue::new("mail", config.queue);
    Ok((queue, tokio::spawn(worker.run(receiver))))
}

struct Worker {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Mailboxes,
    retries: u32,
    alerts: Arc<Alerts>,
}

/// The mail's text.
fn body(n: &Notification) -> String {
    let time = crate::web::format::rfc3339;
    let mut text = format!(
        "Incident {} is {}.\n\nkind:     {}\nsubject:  {}\nopened:   {}\n",
        n.incident,
        n.state,
        n.kind.as_str(),
        n.subject,
        time(n.opened_at)
    );
    if let Some(cleared) = n.cleared_at {
        text.push_str(&format!("cleared:  {}\n", time(cleared)));
    }
    text.push_str(&format!("server:   {}\n\n{}\n", n.server, n.detail));
    text
}

impl Worker {
    async fn run(self, queue: mpsc::Receiver<Notification>) {
        let worker = &self;
        super::deliver_all(queue, &self.alerts.email, |notification| async move {
            worker.deliver(&notification).await
        })
        .await
    }

    async fn deliver(&self, notification: &Notification) -> bool {
        let message = Message::builder()
            .from(self.from.clone())
            .mailbox(lettre::message::header::To::from(self.to.clone()))
            // Names from outside (a syslog host) never break the header.
            .subject(notification.headline().replace(char::is_control, "?"))
            .header(ContentType::TEXT_PLAIN)
            .body(body(notification));
        let message = match message {
            Ok(message) => message,
            Err(err) => {
                tracing::error!(incident = %notification.incident, "alerts: cannot build the mail: {err}");
                return false;
            }
        };
        for attempt in 0..=self.retries {
            let err = match self.transport.send(message.clone()).await {
                Ok(_) => return true,
                Err(err) => err,
            };
            if err.is_permanent() {
                tracing::error!(
                    incident = %notification.incident,
                    "alerts: the mail server refused the notification: {err}; not retried"
                );
                return false;
            }
            if attempt < self.retries {
                let wait = backoff(attempt);
                tracing::warn!(incident = %notification.incident, "alerts: mail: {err}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            } else {
                tracing::error!(
                    incident = %notification.incident,
                    "alerts: mail: {err}; gave up after {} attempts: {}",
                    attempt + 1,
                    notification.headline()
                );
            }
        }
        false
    }
}
