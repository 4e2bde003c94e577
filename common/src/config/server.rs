//! The server's config file (`server.toml`) and users file (`users.toml`).
//!
//! Both are contracts with operators: keys are refused when unknown, every value is checked
//! as it is read, and `config-templates/server.toml` documents each key.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Interval, load_toml, parse_toml, relative_to_file};
use crate::paths::ArchivePath;
use crate::perm::PermSet;
use crate::rate::Rate;

/// `server.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Archive tree in `<data_dir>/archive`, catalog beside it.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Relative to the config file; with no config file, `<data_dir>/users.toml`.
    pub users_file: Option<PathBuf>,
    /// fsync each uploaded file before acknowledging it (true: an acknowledged upload
    /// survives a power cut; false: like vsftpd, the page cache decides).
    #[serde(default = "yes")]
    pub durable_writes: bool,
    #[serde(default)]
    pub ftp: FtpConfig,
    #[serde(default)]
    pub web: WebConfig,
    /// Syslog listeners; no section: none.
    pub syslog: Option<SyslogConfig>,
    #[serde(default)]
    pub logger: LoggerConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Per-folder retention policies; nothing outside them is ever deleted.
    #[serde(default)]
    pub retention: Vec<RetentionPolicy>,
    /// Incidents (silent agents and feeds, a full disk, failed-login spikes) and where
    /// they are sent.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Where the archive lives: `<data_dir>/archive` (default) or an S3 bucket.
    #[serde(default)]
    pub storage: StorageConfig,
}

/// `[storage]`: the archive's back-end.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default)]
    pub kind: StorageKind,
    /// S3 endpoint URL, e.g. `http://127.0.0.1:3900`.
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    /// S3 region name (Garage's default is `garage`).
    #[serde(default = "default_region")]
    pub region: String,
    /// Key prefix inside the bucket (several archives can share one bucket).
    #[serde(default)]
    pub prefix: String,
    /// Two lines: access key id, secret key. Without it, `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` from the environment.
    pub credentials_file: Option<PathBuf>,
    /// How often each server reads the journal records other servers wrote to the bucket,
    /// so their uploads appear in its catalog (web UI, search).
    #[serde(default = "default_follow_interval")]
    pub follow_interval: Interval,
    /// This server's name among the servers sharing the bucket (S3 only): files a feed
    /// grows carry it (`<day>.<server_name>.log`), so each has one writer. Default: the
    /// host name. Letters, digits, `.`, `_`, `-`; at most 64; unique per bucket and prefix.
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// A local directory, `<data_dir>/archive`.
    #[default]
    Fs,
    /// An S3-compatible object store.
    S3,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::Fs,
            endpoint: None,
            bucket: None,
            region: default_region(),
            prefix: String::new(),
            credentials_file: None,
            follow_interval: default_follow_interval(),
            server_name: None,
        }
    }
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_follow_interval() -> Interval {
    Interval(Duration::from_secs(2))
}

/// The S3 settings of a loaded `[storage]`, credentials read.
#[derive(Clone)]
pub struct S3Settings {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// Empty, or ends with `/`.
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub follow_interval: Duration,
    /// `[storage] server_name`, checked (see [`is_server_name`]), else the host name.
    pub server_name: String,
}

// The secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// The archive's back-end as `run`, `reindex` and `retention` open it.
#[derive(Debug, Clone)]
pub enum Storage {
    Fs,
    S3(S3Settings),
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./logarchive-data")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtpConfig {
    #[serde(default = "default_ftp_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub passive_ports: PortRange,
    /// The address announced in PASV replies; default: the address the client connected to.
    pub passive_host: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    pub max_upload_rate: Rate,
    #[serde(default)]
    pub max_download_rate: Rate,
    #[serde(default)]
    pub total_upload_rate: Rate,
    #[serde(default)]
    pub total_download_rate: Rate,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Interval,
    #[serde(default = "default_max_failed_logins")]
    pub max_failed_logins: u32,
    #[serde(default = "default_failed_login_block")]
    pub failed_login_block: Interval,
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Interval,
    pub tls: Option<FtpTlsConfig>,
}

fn default_ftp_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 2121))
}
fn default_idle_timeout() -> Interval {
    Interval(Duration::from_secs(600))
}
fn default_max_failed_logins() -> u32 {
    5
}
fn default_failed_login_block() -> Interval {
    Interval(Duration::from_secs(300))
}
fn default_shutdown_grace() -> Interval {
    Interval(Duration::from_secs(5))
}

impl Default for FtpConfig {
    fn default() -> Self {
        FtpConfig {
            listen: default_ftp_listen(),
            passive_ports: PortRange::default(),
            passive_host: None,
            max_upload_rate: Rate::UNLIMITED,
            max_download_rate: Rate::UNLIMITED,
            total_upload_rate: Rate::UNLIMITED,
            total_download_rate: Rate::UNLIMITED,
            idle_timeout: default_idle_timeout(),
            max_failed_logins: default_max_failed_logins(),
            failed_login_block: default_failed_login_block(),
            shutdown_grace: default_shutdown_grace(),
            tls: None,
        }
    }
}

/// `[ftp.tls]`: explicit FTPS (AUTH TLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtpTlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// True: plaintext logins and transfers are refused.
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    #[serde(default = "default_web_listen")]
    pub listen: SocketAddr,
    /// The largest folder a `.zip` / `.tar.gz` download may hold (sum of file sizes).
    #[serde(default = "default_max_archive_size")]
    pub max_archive_size: ByteSize,
    /// An agent whose health report is older than this is shown as silent.
    #[serde(default = "default_agent_silent_after")]
    pub agent_silent_after: Interval,
    /// A feed source (syslog host, logger station, telemetry machine) that sent nothing for
    /// this long is shown as silent on the admin feeds page.
    #[serde(default = "default_feed_silent_after")]
    pub feed_silent_after: Interval,
    /// How long a web login lasts without use.
    #[serde(default = "default_session_idle")]
    pub session_idle: Interval,
    /// PEM certificate chain: with `key`, the listener speaks HTTPS only.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl WebConfig {
    /// The certificate and key, when HTTPS is configured (both set).
    pub fn tls(&self) -> Option<(&PathBuf, &PathBuf)> {
        self.cert.as_ref().zip(self.key.as_ref())
    }
}

fn default_web_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_max_archive_size() -> ByteSize {
    ByteSize(Some(4 << 30))
}
fn default_agent_silent_after() -> Interval {
    Interval(Duration::from_secs(10 * 60))
}
fn default_feed_silent_after() -> Interval {
    Interval(Duration::from_secs(60 * 60))
}
fn default_session_idle() -> Interval {
    Interval(Duration::from_secs(8 * 3600))
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: default_web_listen(),
            max_archive_size: default_max_archive_size(),
            agent_silent_after: default_agent_silent_after(),
            feed_silent_after: default_feed_silent_after(),
            session_idle: default_session_idle(),
            cert: None,
            key: None,
        }
    }
}

/// A size limit: like [`Size`], but `"0"` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub Option<u64>);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = size_in_bytes(deserializer)?;
        Ok(ByteSize((bytes > 0).then_some(bytes)))
    }
}

/// `[syslog]`: each listener runs when its key is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    /// RFC 5425 (syslog over TLS); needs `cert` and `key`.
    pub tls: Option<SocketAddr>,
    /// RELP (rsyslog's `omrelp`): each message acknowledged once it is in the archive.
    pub relp: Option<SocketAddr>,
    /// RELP over TLS; needs `cert` and `key` (the same as `tls`).
    pub relp_tls: Option<SocketAddr>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Sender networks allowed; empty: everybody.
    #[serde(default)]
    pub allow: Vec<ipnet::IpNet>,
    /// Per sender address; UDP datagrams over it are dropped (counted), TCP is slowed.
    #[serde(default)]
    pub rate_per_sender: Rate,
    /// Longest frame accepted; longer ones are counted and dropped.
    #[serde(default = "default_max_frame")]
    pub max_frame: Size,
    /// A TCP/TLS/RELP sender silent this long is disconnected, as is a RELP sender that
    /// takes none of its answers for this long.
    #[serde(default = "default_syslog_idle")]
    pub idle_timeout: Interval,
    /// Open TCP, TLS and RELP connections at most (together); more are refused and counted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How often buffered messages are written to the archive (at most "1s" is promised).
    #[serde(default = "default_flush_interval")]
    pub flush_interval: Interval,
    /// Where the host folder's name comes from.
    #[serde(default)]
    pub host_from: HostFrom,
}

impl SyslogConfig {
    /// The listeners that are switched on, by kind (`udp`, `tcp`, `tls`, `relp`,
    /// `relp_tls`).
    pub fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        [
            ("udp", self.udp),
            ("tcp", self.tcp),
            ("tls", self.tls),
            ("relp", self.relp),
            ("relp_tls", self.relp_tls),
        ]
        .into_iter()
        .filter_map(|(kind, addr)| addr.map(|addr| (kind, addr)))
        .collect()
    }
}

/// `[syslog] host_from`: the message's host name (else the sender's address), or always
/// the sender's address (for networks whose senders should not name their own folders).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostFrom {
    #[default]
    Message,
    Sender,
}

fn default_max_frame() -> Size {
    Size(64 * 1024)
}
fn default_syslog_idle() -> Interval {
    Interval(Duration::from_secs(300))
}
fn default_max_connections() -> usize {
    1000
}
fn default_flush_interval() -> Interval {
    Interval(Duration::from_secs(1))
}

/// `[logger]`: the OTT netDL endpoint on the web listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Largest body accepted (after deflate), else 413.
    #[serde(default = "default_logger_body")]
    pub max_body: Size,
    /// A request (body included) that takes longer gets 408: slow senders cannot hold
    /// connections and memory forever.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Interval,
}

fn default_request_timeout() -> Interval {
    Interval(Duration::from_secs(30))
}

fn default_logger_body() -> Size {
    Size(4 << 20)
}

impl Default for LoggerConfig {
    fn default() -> Self {
        LoggerConfig {
            enabled: false,
            max_body: default_logger_body(),
            request_timeout: default_request_timeout(),
        }
    }
}

/// `[telemetry]`: the telemetrics collector on the web listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default)]
    pub enabled: bool,
    /// The `X-Telemetry-TID` probes must send.
    #[serde(default = "default_tid")]
    pub tid: String,
    /// Largest request body accepted, else 413.
    #[serde(default = "default_telemetry_body")]
    pub max_body: Size,
    /// A request (body included) that takes longer gets 408.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Interval,
}

fn default_tid() -> String {
    "6907c830-eed9-4ce9-81ae-76daf8d88f0f".to_owned()
}
fn default_telemetry_body() -> Size {
    Size(64 * 1024)
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: false,
            tid: default_tid(),
            max_body: default_telemetry_body(),
            request_timeout: default_request_timeout(),
        }
    }
}

/// One `[[retention]]`: files below `path` older than `max_age` are removed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    pub path: ArchivePath,
    pub max_age: Interval,
}

/// `[alerts]`: when incidents open and clear, and where they are sent. Without the section
/// incidents are still shown on the admin pages; nothing is sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// How often conditions are evaluated.
    #[serde(default = "default_alerts_interval")]
    pub interval: Interval,
    /// Names this server in notifications; default: the host name.
    pub server_name: Option<String>,
    /// An incident opens when the archive's filesystem is at least this full (percent of
    /// the space available to the server, as `df` counts it).
    #[serde(default = "default_disk_threshold")]
    pub disk_threshold_percent: Spanned<u8>,
    /// An incident opens when more than this many logins (FTP and web) failed within
    /// `failed_logins_window`.
    #[serde(default = "default_failed_logins_threshold")]
    pub failed_logins_threshold: u32,
    #[serde(default = "default_failed_logins_window")]
    pub failed_logins_window: Interval,
    pub webhook: Option<WebhookConfig>,
    pub email: Option<EmailConfig>,
}

fn default_alerts_interval() -> Interval {
    Interval(Duration::from_secs(30))
}
fn default_disk_threshold() -> Spanned<u8> {
    Spanned::new(0..0, 90)
}
fn default_failed_logins_threshold() -> u32 {
    20
}
fn default_failed_logins_window() -> Interval {
    Interval(Duration::from_secs(600))
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            interval: default_alerts_interval(),
            server_name: None,
            disk_threshold_percent: default_disk_threshold(),
            failed_logins_threshold: default_failed_logins_threshold(),
            failed_logins_window: default_failed_logins_window(),
            webhook: None,
            email: None,
        }
    }
}

/// `[alerts.webhook]`: each notification is POSTed as JSON to `url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: Spanned<url::Url>,
    /// A file holding a token sent as `Authorization: Bearer <token>` (never in server.toml).
    pub bearer_token_file: Option<Spanned<PathBuf>>,
    /// A PEM file with the CA of an `https` receiver with a private CA; default: the
    /// system's trusted roots.
    pub ca_file: Option<Spanned<PathBuf>>,
    /// How long one attempt may take.
    #[serde(default = "default_webhook_timeout")]
    pub timeout: Interval,
    /// Attempts after the first one failed (no answer, or a 5xx / 429 status).
    #[serde(default = "default_webhook_retries")]
    pub retries: u32,
    /// Notifications waiting to be sent at most; more are dropped (logged).
    #[serde(default = "default_alert_queue")]
    pub queue: usize,
}

fn default_webhook_timeout() -> Interval {
    Interval(Duration::from_secs(10))
}
fn default_webhook_retries() -> u32 {
    5
}
fn default_alert_queue() -> usize {
    256
}

/// `[alerts.email]`: each notification is mailed over SMTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name (checked against its certificate with TLS).
    pub server: String,
    /// Default: 587 with `starttls`, 465 with `tls`, 25 with `plain`.
    pub port: Option<u16>,
    #[serde(default)]
    pub security: SmtpSecurity,
    /// SMTP AUTH user; needs `password_file`.
    pub user: Option<String>,
    pub password_file: Option<Spanned<PathBuf>>,
    /// A PEM file with the SMTP server's CA (private CAs); default: the system's roots.
    pub ca_file: Option<Spanned<PathBuf>>,
    pub from: lettre::Address,
    pub to: Spanned<Vec<lettre::Address>>,
    /// How long one delivery may take.
    #[serde(default = "default_email_timeout")]
    pub timeout: Interval,
    /// Attempts after the first one failed.
    #[serde(default = "default_email_retries")]
    pub retries: u32,
    #[serde(default = "default_alert_queue")]
    pub queue: usize,
}

fn default_email_timeout() -> Interval {
    Interval(Duration::from_secs(30))
}
fn default_email_retries() -> u32 {
    3
}

/// `[alerts.email] security`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required: no fallback to plaintext).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption (a relay on localhost).
    Plain,
}

impl EmailConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::Plain => 25,
        })
    }
}

/// An amount of bytes written `"64KiB"`, `"4MiB"` or as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match size_in_bytes(deserializer)? {
            0 => Err(serde::de::Error::custom("a size must be above 0")),
            bytes => Ok(Size(bytes)),
        }
    }
}

/// The one parser of sizes in config files: `"64KiB"`, `"4MiB"` or a number of bytes.
fn size_in_bytes<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(u64),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Text(text) => crate::rate::parse_bytes(&text).map_err(|reason| {
            serde::de::Error::custom(format!(
                "invalid size \"{text}\": {reason} (write e.g. \"64KiB\", \"4MiB\")"
            ))
        }),
        Raw::Number(bytes) => Ok(bytes),
    }
}

/// A port range written `"50000-50100"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRange(pub RangeInclusive<u16>);

impl Default for PortRange {
    fn default() -> Self {
        PortRange(50000..=50100)
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            format!("invalid port range \"{text}\": {why} (write e.g. \"50000-50100\")")
        };
        let (low, high) = text.split_once('-').unwrap_or((text, text));
        let low: u16 = low.trim().parse().map_err(|_| bad("not a port number"))?;
        let high: u16 = high.trim().parse().map_err(|_| bad("not a port number"))?;
        if low == 0 || low > high {
            return Err(bad("the first port must be between 1 and the last"));
        }
        Ok(PortRange(low..=high))
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A loaded `server.toml` with its paths made absolute-or-relative-to-the-file.
#[derive(Debug, Clone)]
pub struct LoadedServerConfig {
    pub config: ServerConfig,
    /// None when running on embedded defaults.
    pub file: Option<PathBuf>,
    pub users_file: PathBuf,
    pub data_dir: PathBuf,
    pub storage: Storage,
}

impl LoadedServerConfig {
    /// Loads `file`, or the embedded defaults when `None`.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(file) = file else {
            let config: ServerConfig = parse_toml(Path::new("<embedded defaults>"), "")?;
            let data_dir = config.data_dir.clone();
            return Ok(LoadedServerConfig {
                users_file: data_dir.join("users.toml"),
                data_dir,
                config,
                file: None,
                storage: Storage::Fs,
            });
        };
        let (config, text) = load_toml::<ServerConfig>(file)?;
        check_syslog_tls(file, &text, config.syslog.as_ref())?;
        let storage = load_storage(file, &text, &config.storage)?;
        if let Some(tls) = &config.ftp.tls {
            for (key, path) in [("cert", &tls.cert), ("key", &tls.key)] {
                let path = relative_to_file(file, path);
                if !path.is_file() {
                    let span = text.find(&format!("{key} =")).unwrap_or(0);
                    return Err(ConfigError::at(
                        file,
                        &text,
                        span..span,
                        format!(
                            "[ftp.tls] {key}: file \"{}\" does not exist",
                            path.display()
                        ),
                    ));
                }
            }
        }
        let web = &config.web;
        // Where `[web]` starts, so an error points into that table, not `[ftp.tls]`.
        let web_at = text.find("[web]").unwrap_or(0);
        let web_span = |key: &str| {
            let at = text[web_at..]
                .find(&format!("{key} ="))
                .map_or(web_at, |i| web_at + i);
            at..at
        };
        match (&web.cert, &web.key) {
            (Some(_), None) | (None, Some(_)) => {
                let key = if web.cert.is_some() { "cert" } else { "key" };
                return Err(ConfigError::at(
                    file,
                    &text,
                    web_span(key),
                    "[web] cert and key go together: set both for HTTPS, or neither".to_owned(),
                ));
            }
            (Some(cert), Some(key_file)) => {
                for (key, path) in [("cert", cert), ("key", key_file)] {
                    let path = relative_to_file(file, path);
                    if !path.is_file() {
                        return Err(ConfigError::at(
                            file,
                            &text,
                            web_span(key),
                            format!("[web] {key}: file \"{}\" does not exist", path.display()),
                        ));
                    }
                }
            }
            (None, None) => {}
        }
        check_alerts(file, &text, &config.alerts)?;
        Ok(LoadedServerConfig {
            data_dir: relative_to_file(file, &config.data_dir),
            users_file: relative_to_file(
                file,
                config
                    .users_file
                    .as_deref()
                    .unwrap_or(Path::new("users.toml")),
            ),
            config,
            file: Some(file.to_owned()),
            storage,
        })
    }

    /// A path from the config file, made relative to the file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match &self.file {
            Some(file) => relative_to_file(file, path),
            None => path.to_owned(),
        }
    }
}

/// Checks `[storage]` and reads the S3 credentials (file, else environment).
fn load_storage(file: &Path, text: &str, storage: &StorageConfig) -> Result<Storage, ConfigError> {
    if storage.kind == StorageKind::Fs {
        return Ok(Storage::Fs);
    }
    let section = text.find("[storage]").unwrap_or(0);
    let span = |key: &str| {
        let at = text[section..]
            .find(&format!("{key} ="))
            .map_or(section, |at| section + at);
        at..at
    };
    let fail = |key: &str, message: String| ConfigError::at(file, text, span(key), message);
    let endpoint = match &storage.endpoint {
        None => {
            return Err(fail(
                "kind",
                "[storage] kind = \"s3\" needs `endpoint`".into(),
            ));
        }
        Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
            return Err(fail(
                "endpoint",
                format!("[storage] endpoint: \"{url}\" is not an http:// or https:// URL"),
            ));
        }
        Some(url) => url.trim_end_matches('/').to_owned(),
    };
    let bucket = match &storage.bucket {
        Some(bucket) if !bucket.is_empty() && !bucket.contains('/') => bucket.clone(),
        Some(bucket) => {
            return Err(fail(
                "bucket",
                format!("[storage] bucket: \"{bucket}\" is not a bucket name"),
            ));
        }
        None => {
            return Err(fail(
                "kind",
                "[storage] kind = \"s3\" needs `bucket`".into(),
            ));
        }
    };
    let prefix = storage.prefix.trim_matches('/');
    if prefix.split('/').any(|part| part == "." || part == "..") || prefix.contains("//") {
        return Err(fail(
            "prefix",
            format!(
                "[storage] prefix: \"{}\" has an empty, . or .. component",
                storage.prefix
            ),
        ));
    }
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let (access_key_id, secret_access_key) = match &storage.credentials_file {
        Some(path) => {
            let path = relative_to_file(file, path);
            let content = std::fs::read_to_string(&path).map_err(|err| {
                fail(
                    "credentials_file",
                    format!("[storage] credentials_file \"{}\": {err}", path.display()),
                )
            })?;
            let mut lines = content.lines().map(str::trim).filter(|l| !l.is_empty());
            match (lines.next(), lines.next()) {
                (Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
                _ => {
                    return Err(fail(
                        "credentials_file",
                        format!(
                            "[storage] credentials_file \"{}\" must hold two lines: the access key id, then the secret key",
                            path.display()
                        ),
                    ));
                }
            }
        }
        None => match (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Ok(id), Ok(secret)) if !id.is_empty() && !secret.is_empty() => (id, secret),
            _ => {
                return Err(fail(
                    "kind",
                    "[storage] kind = \"s3\" needs `credentials_file`, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment".into(),
                ));
            }
        },
    };
    let server_name = match &storage.server_name {
        Some(name) if is_server_name(name) => name.clone(),
        Some(name) => {
            return Err(fail(
                "server_name",
                format!(
                    "[storage] server_name: \"{name}\" must be 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
                ),
            ));
        }
        None => {
            let host = super::agent::hostname();
            match crate::paths::safe_component(&host, 64) {
                Some(name) => name,
                None => {
                    return Err(fail(
                        "kind",
                        format!(
                            "[storage] the host name \"{host}\" cannot name this server: set `server_name`"
                        ),
                    ));
                }
            }
        }
    };
    Ok(Storage::S3(S3Settings {
        endpoint,
        bucket,
        region: storage.region.clone(),
        prefix,
        access_key_id,
        secret_access_key,
        follow_interval: storage.follow_interval.0.max(Duration::from_millis(100)),
        server_name,
    }))
}

/// Whether `name` may be a `[storage] server_name`: it becomes part of file names, so
/// only plain characters, and never a hidden or relative name.
pub fn is_server_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `[syslog] tls` and `relp_tls` need a cert and key that exist.
fn check_syslog_tls(
    file: &Path,
    text: &str,
    syslog: Option<&SyslogConfig>,
) -> Result<(), ConfigError> {
    let Some(syslog) = syslog else { return Ok(()) };
    let listener = match (syslog.tls, syslog.relp_tls) {
        (Some(_), _) => "tls",
        (None, Some(_)) => "relp_tls",
        (None, None) => return Ok(()),
    };
    let section = text.find("[syslog]").unwrap_or(0);
    for (key, path) in [("cert", &syslog.cert), ("key", &syslog.key)] {
        let span = text[section..]
            .find(&format!("{key} ="))
            .map_or(section, |at| section + at);
        match path {
            None => {
                return Err(ConfigError::at(
                    file,
                    text,
                    section..section,
                    format!("[syslog] {listener} is set but `{key}` is missing"),
                ));
            }
            Some(path) if !relative_to_file(file, path).is_file() => {
                return Err(ConfigError::at(
                    file,
                    text,
                    span..span,
                    format!(
                        "[syslog] {key}: file \"{}\" does not exist",
                        relative_to_file(file, path).display()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// What `[alerts]` needs beyond each value's own check: a threshold that is a percentage,
/// a webhook that speaks HTTP, secret and CA files that exist, a mail with recipients.
fn check_alerts(file: &Path, text: &str, alerts: &AlertsConfig) -> Result<(), ConfigError> {
    let percent = &alerts.disk_threshold_percent;
    if *percent.get_ref() > 100 {
        return Err(ConfigError::at(
            file,
            text,
            percent.span(),
            format!(
                "[alerts] disk_threshold_percent: {} is not a percentage (0 to 100)",
                percent.get_ref()
            ),
        ));
    }
    if alerts.interval.0.is_zero() {
        let at = text.find("[alerts]").unwrap_or(0);
        return Err(ConfigError::at(
            file,
            text,
            at..at,
            "[alerts] interval must be above 0",
        ));
    }
    let must_exist = |section: &str, key: &str, path: &Spanned<PathBuf>| {
        let resolved = relative_to_file(file, path.get_ref());
        if resolved.is_file() {
            Ok(())
        } else {
            Err(ConfigError::at(
                file,
                text,
                path.span(),
                format!(
                    "[{section}] {key}: file \"{}\" does not exist",
                    resolved.display()
                ),
            ))
        }
    };
    if let Some(webhook) = &alerts.webhook {
        let url = &webhook.url;
        if !matches!(url.get_ref().scheme(), "http" | "https") || !url.get_ref().has_host() {
            return Err(ConfigError::at(
                file,
                text,
                url.span(),
                format!(
                    "[alerts.webhook] url: \"{}\" is not an http:// or https:// address",
                    url.get_ref()
                ),
            ));
        }
        for (key, path) in [
            ("bearer_token_file", &webhook.bearer_token_file),
            ("ca_file", &webhook.ca_file),
        ] {
            if let Some(path) = path {
                must_exist("alerts.webhook", key, path)?;
            }
        }
    }
    if let Some(email) = &alerts.email {
        let section = text.find("[alerts.email]").unwrap_or(0);
        let whole_section = |message: &str| ConfigError::at(file, text, section..section, message);
        if email.to.get_ref().is_empty() {
            return Err(ConfigError::at(
                file,
                text,
                email.to.span(),
                "[alerts.email] to: give at least one recipient",
            ));
        }
        match (&email.user, &email.password_file) {
            (Some(_), None) => {
                return Err(whole_section(
                    "[alerts.email] user is set but password_file is missing",
                ));
            }
            (None, Some(path)) => {
                return Err(ConfigError::at(
                    file,
                    text,
                    path.span(),
                    "[alerts.email] password_file is set but user is missing",
                ));
            }
            _ => {}
        }
        for (key, path) in [
            ("password_file", &email.password_file),
            ("ca_file", &email.ca_file),
        ] {
            if let Some(path) = path {
                must_exist("alerts.email", key, path)?;
            }
        }
    }
    Ok(())
}

/// `users.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    #[serde(default)]
    pub user: Vec<UserEntry>,
}

/// One `[[user]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: Spanned<UserName>,
    /// An argon2id hash in PHC format; never plaintext.
    pub password: PasswordHash,
    /// The user's root inside the archive; default `/<name>`.
    pub home: Option<ArchivePath>,
    #[serde(default = "default_perm")]
    pub perm: PermSet,
    pub max_upload_rate: Option<Rate>,
    pub max_download_rate: Option<Rate>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub admin: bool,
    /// Per-folder permission strings; the most specific folder wins.
    pub dirs: Option<Spanned<BTreeMap<ArchivePath, PermSet>>>,
}

fn default_perm() -> PermSet {
    "elr".parse().unwrap_or_default()
}
fn yes() -> bool {
    true
}

impl UserEntry {
    pub fn home(&self) -> ArchivePath {
        match &self.home {
            Some(home) => home.clone(),
            None => ArchivePath::root()
                .join(self.name.get_ref().as_str())
                .unwrap_or_else(|_| ArchivePath::root()),
        }
    }

    pub fn dirs(&self) -> impl Iterator<Item = (&ArchivePath, &PermSet)> {
        self.dirs.iter().flat_map(|dirs| dirs.get_ref().iter())
    }
}

/// A user name: 1 to 64 characters from `A-Z a-z 0-9 . _ -`, not starting with `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

impl UserName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for UserName {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(UserName(name.to_owned()))
        } else {
            Err(format!(
                "invalid user name \"{name}\": use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with '.')"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for UserName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A password hash as stored in users.toml: argon2id in PHC string format.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub const PREFIX: &'static str = "$argon2id$";

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl std::str::FromStr for PasswordHash {
    type Err = String;
    fn from_str(hash: &str) -> Result<Self, Self::Err> {
        if hash.starts_with(Self::PREFIX) && hash.split('$').count() == 6 {
            Ok(PasswordHash(hash.to_owned()))
        } else {
            // Never echo the value: it may be a plaintext password.
            Err("password is not an argon2id hash (\"$argon2id$...\"); set it with `logarchive-server user passwd`".to_owned())
        }
    }
}

impl<'de> Deserialize<'de> for PasswordHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl UsersFile {
    /// Parses and checks a users file: the checks that involve more than one value (unique
    /// names, folders inside the home) are done here, pointing at the value's line.
    pub fn parse(path: &Path, text: &str) -> Result<UsersFile, ConfigError> {
        let users: UsersFile = parse_toml(path, text)?;
        let mut seen = HashSet::new();
        for user in &users.user {
            let name = user.name.get_ref();
            if !seen.insert(name.clone()) {
                return Err(ConfigError::at(
                    path,
                    text,
                    user.name.span(),
                    format!("user \"{name}\" is defined twice"),
                ));
            }
            let home = user.home();
            if home.components().next() == Some(".logarchive") {
                let span =
                    text[user.name.span().start..]
                        .find("home")
                        .map_or(user.name.span(), |at| {
                            let at = user.name.span().start + at;
                            at..at
                        });
                return Err(ConfigError::at(
                    path,
                    text,
                    span,
                    format!(
                        "user \"{name}\": home \"{home}\" is inside the server's reserved folder /.logarchive"
                    ),
                ));
            }
            if let Some(dirs) = &user.dirs {
                for dir in dirs.get_ref().keys() {
                    if !dir.starts_with(&home) {
                        return Err(ConfigError::at(
                            path,
                            text,
                            dirs.span(),
                            format!(
                                "user \"{name}\": folder \"{dir}\" in [user.dirs] is outside the user's home \"{home}\""
                            ),
                        ));
                    }
                }
            }
        }
        Ok(users)
    }

    /// Reads a users file; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<(UsersFile, String), ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Ok((UsersFile::parse(path, &text)?, text))
    }

    pub fn find(&self, name: &str) -> Option<&UserEntry> {
        self.user
            .iter()
            .find(|user| user.name.get_ref().as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

    fn users(text: &str) -> Result<UsersFile, ConfigError> {
        UsersFile::parse(Path::new("users.toml"), text)
    }

    #[test]
    fn reads_a_full_user() {
        let text = format!(
            "[[user]]\nname = \"node01\"\npassword = \"{HASH}\"\nperm = \"elrawmf\"\nmax_upload_rate = \"1MiB/s\"\n[user.dirs]\n\"/node01/readonly\" = \"elr\"\n"
        );
        let file = users(&text).unwrap();
        let user = &file.user[0];
        assert_eq!(user.home().as_str(), "/node01");
        assert_eq!(user.perm.to_string(), "elrafmw");
        assert_eq!(user.max_upload_rate.unwrap().get(), Some(1 << 20));
        assert!(user.enabled && !user.admin);
        assert_eq!(user.dirs().count(), 1);
    }

    #[test]
    fn errors_name_file_line_and_value() {
        let cases = [
            ("perm = \"elrx\"", 4, "'x'"),
            ("perm = \"ee\"", 4, "twice"),
            ("max_upload_rate = \"fast\"", 4, "\"fast\""),
            ("home = \"/../etc\"", 4, "'..'"),
            ("colour = \"blue\"", 4, "unknown field `colour`"),
        ];
        for (line, number, needle) in cases {
            let text = format!("[[user]]\nname = \"a\"\npassword = \"{HASH}\"\n{line}\n");
            let err = users(&text).unwrap_err().to_string();
            assert!(err.starts_with(&format!("users.toml:{number}:")), "{err}");
            assert!(err.contains(needle), "{err}");
        }
        let err = users("[[user]]\nname = \"a\"\npassword = \"hunter2\"\n").unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("argon2id") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn refuses_duplicates_and_folders_outside_home() {
        let twice = format!(
            "[[user]]\nname = \"a\"\npassword = \"{HASH}\"\n[[user]]\nname = \"a\"\npassword = \"{HASH}\"\n"
        );
        let err = users(&twice).unwrap_err().to_string();
        assert!(
            err.starts_with("users.toml:5:") && err.contains("twice"),
            "{err}"
        );
        let outside = format!(
            "[[user]]\nname = \"a\"\npassword = \"{HASH}\"\n[user.dirs]\n\"/b\" = \"elr\"\n"
        );
        let err = users(&outside).unwrap_err().to_string();
        assert!(err.contains("outside the user's home"), "{err}");
    }

    #[test]
    fn server_config_defaults_and_errors() {
        let loaded = LoadedServerConfig::load(None).unwrap();
        assert_eq!(loaded.config.ftp.listen.port(), 2121);
        assert_eq!(loaded.config.ftp.passive_ports.0, 50000..=50100);
        let err = parse_toml::<ServerConfig>(
            Path::new("server.toml"),
            "[ftp]\npassive_ports = \"60000-50000\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("server.toml:2:") && err.contains("60000-50000"),
            "{err}"
        );
    }

    #[test]
    fn storage_errors_name_the_line_and_key_and_hide_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            LoadedServerConfig::load(Some(&file))
        };
        let base = "[storage]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:3900\"\n";
        let err = load(&format!("{base}credentials_file = \"c\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":2:") && err.contains("needs `bucket`"),
            "{err}"
        );
        let err = load(&format!(
            "{base}bucket = \"b\"\ncredentials_file = \"missing\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(":5:") && err.contains("credentials_file"),
            "{err}"
        );
        let err = load("[storage]\nkind = \"s3\"\nendpoint = \"ftp://x\"\nbucket = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":3:") && err.contains("ftp://x"), "{err}");
        let err = load("[storage]\nkind = \"gcs\"\n").unwrap_err().to_string();
        assert!(err.contains(":2:") && err.contains("gcs"), "{err}");
        std::fs::write(dir.path().join("c"), "GKid\ntopsecret\n").unwrap();
        let loaded = load(&format!(
            "{base}bucket = \"b\"\nprefix = \"/p/\"\ncredentials_file = \"c\"\n"
        ))
        .unwrap();
        let Storage::S3(s3) = &loaded.storage else {
            panic!("not s3")
        };
        assert_eq!(
            (s3.prefix.as_str(), s3.access_key_id.as_str()),
            ("p/", "GKid")
        );
        assert!(!format!("{loaded:?}").contains("topsecret"));
        assert_eq!(
            s3.server_name,
            crate::paths::safe_component(&super::super::agent::hostname(), 64).unwrap(),
            "the host name by default"
        );
        let named = |name: &str| {
            load(&format!(
                "{base}bucket = \"b\"\ncredentials_file = \"c\"\nserver_name = \"{name}\"\n"
            ))
        };
        let Storage::S3(s3) = named("archive-2.example_org").unwrap().storage else {
            panic!("not s3")
        };
        assert_eq!(s3.server_name, "archive-2.example_org");
        for bad in [
            "",
            ".hidden",
            "a/b",
            "two words",
            "\u{e9}t\u{e9}",
            &"x".repeat(65),
        ] {
            let err = named(bad).unwrap_err().to_string();
            assert!(
                err.contains(":6:") && err.contains("server_name"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn the_template_parses_with_its_feed_examples_switched_on() {
        let template = include_str!("../../../config-templates/server.toml");
        parse_toml::<ServerConfig>(Path::new("server.toml"), template).unwrap();
        // Uncomment the [syslog] and [[retention]] examples (TLS needs real files).
        let start = template.find("# [syslog]").unwrap();
        let mut text = template[..start].to_owned();
        for line in template[start..].lines() {
            let bare = line.strip_prefix("# ").unwrap_or(line);
            let example = bare.starts_with('[') || bare.split(' ').nth(1) == Some("=");
            let tls = ["tls =", "cert =", "key ="]
                .iter()
                .any(|k| bare.starts_with(k));
            text.push_str(if example && !tls { bare } else { line });
            text.push('\n');
        }
        let config: ServerConfig = parse_toml(Path::new("server.toml"), &text).unwrap();
        let syslog = config.syslog.unwrap();
        assert!(syslog.udp.is_some() && syslog.tcp.is_some() && syslog.tls.is_none());
        assert!(syslog.relp.is_some() && syslog.relp_tls.is_some());
        assert_eq!(syslog.allow.len(), 3);
        assert_eq!(config.retention.len(), 2);
        // The alert channels' examples too.
        let webhook = config.alerts.webhook.unwrap();
        assert_eq!(webhook.url.get_ref().scheme(), "https");
        let email = config.alerts.email.unwrap();
        assert_eq!(email.security, SmtpSecurity::Starttls);
        assert_eq!(email.port(), 587);
        assert_eq!(email.to.get_ref().len(), 1);
    }

    #[test]
    fn alerts_defaults_and_errors_name_line_and_key() {
        let config: ServerConfig = parse_toml(Path::new("server.toml"), "").unwrap();
        assert_eq!(*config.alerts.disk_threshold_percent.get_ref(), 90);
        assert_eq!(config.alerts.interval.0, Duration::from_secs(30));
        assert!(config.alerts.webhook.is_none() && config.alerts.email.is_none());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        let cases = [
            (
                "[alerts]\ndisk_threshold_percent = 101\n",
                2,
                "disk_threshold_percent",
            ),
            ("[alerts]\ninterval = \"0s\"\n", 1, "interval"),
            (
                "[alerts.webhook]\nurl = \"mailto:x@y\"\n",
                2,
                "[alerts.webhook] url",
            ),
            ("[alerts.webhook]\nurl = \"not a url\"\n", 2, "not a url"),
            (
                "[alerts.webhook]\nurl = \"http://h/\"\nca_file = \"nope.pem\"\n",
                3,
                "ca_file",
            ),
            (
                "[alerts.email]\nserver = \"m\"\nfrom = \"a@b.org\"\nto = []\n",
                4,
                "to: give at least one recipient",
            ),
            (
                "[alerts.email]\nserver = \"m\"\nfrom = \"a@b.org\"\nto = [\"c@d.org\"]\npassword_file = \"p\"\n",
                5,
                "user is missing",
            ),
            (
                "[alerts.email]\nserver = \"m\"\nsecurity = \"ssl\"\nfrom = \"a@b.org\"\nto = [\"c@d.org\"]\n",
                3,
                "ssl",
            ),
        ];
        for (text, line, needle) in cases {
            std::fs::write(&file, text).unwrap();
            let err = LoadedServerConfig::load(Some(&file))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("server.toml:{line}:")), "{err}");
            assert!(err.contains(needle), "{err}");
        }
        std::fs::write(dir.path().join("token"), "t\n").unwrap();
        std::fs::write(
            &file,
            "[alerts.webhook]\nurl = \"http://127.0.0.1:9/x\"\nbearer_token_file = \"token\"\n[alerts.email]\nserver = \"m\"\nsecurity = \"tls\"\nfrom = \"a@b.org\"\nto = [\"c@d.org\"]\n",
        )
        .unwrap();
        let loaded = LoadedServerConfig::load(Some(&file)).unwrap();
        assert_eq!(loaded.config.alerts.email.unwrap().port(), 465);
    }

    #[test]
    fn relp_tls_needs_the_cert_and_key_of_tls() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(
            &file,
            "[syslog]\nrelp = \"127.0.0.1:2514\"\nrelp_tls = \"127.0.0.1:2515\"\n",
        )
        .unwrap();
        let err = LoadedServerConfig::load(Some(&file))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[syslog] relp_tls is set but `cert` is missing"),
            "{err}"
        );
        std::fs::write(&file, "[syslog]\nrelp = \"127.0.0.1:2514\"\n").unwrap();
        let loaded = LoadedServerConfig::load(Some(&file)).unwrap();
        let syslog = loaded.config.syslog.unwrap();
        assert_eq!(
            syslog.listeners(),
            vec![("relp", "127.0.0.1:2514".parse().unwrap())]
        );
    }

    #[test]
    fn feed_sections_parse_and_point_at_bad_values() {
        let text = "[syslog]\nudp = \"127.0.0.1:5514\"\nallow = [\"10.0.0.0/8\"]\nmax_frame = \"8KiB\"\n[logger]\nenabled = true\n[telemetry]\nenabled = true\n[[retention]]\npath = \"/telemetry\"\nmax_age = \"35d\"\n";
        let config: ServerConfig = parse_toml(Path::new("server.toml"), text).unwrap();
        let syslog = config.syslog.unwrap();
        assert_eq!(syslog.max_frame, Size(8192));
        assert!(syslog.tcp.is_none());
        assert_eq!(
            config.retention[0].max_age.0,
            Duration::from_secs(35 * 86400)
        );
        let cases = [
            ("[syslog]\nallow = [\"10.0.0/8x\"]\n", 2, "10.0.0/8x"),
            ("[syslog]\nmax_frame = \"lots\"\n", 2, "\"lots\""),
            ("[logger]\nenable = true\n", 2, "unknown field `enable`"),
            (
                "[[retention]]\npath = \"/a/../b\"\nmax_age = \"1d\"\n",
                2,
                "'..'",
            ),
            (
                "[[retention]]\npath = \"/a\"\nmax_age = \"soon\"\n",
                3,
                "\"soon\"",
            ),
        ];
        for (text, line, needle) in cases {
            let err = parse_toml::<ServerConfig>(Path::new("server.toml"), text)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("server.toml:{line}:")), "{err}");
            assert!(err.contains(needle), "{err}");
        }
    }
}
