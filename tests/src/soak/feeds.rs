//! The feed clients of the soak: numbered syslog messages over UDP and TCP (as a plain
//! socket sender) and over RELP ([`crate::relp_client`]: resent until acknowledged), OTT
//! data-logger posts and telemetry probe posts over HTTP, each message unique so it can
//! be found in the archive afterwards. HTTP posts that fail (refused or reset at a server
//! kill, a 5xx) are sent again until answered 2xx, as the real clients do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

/// The syslog host name (folder) of each sender.
pub const UDP_HOST: &str = "soak-udp";
pub const TCP_HOST: &str = "soak-tcp";
pub const RELP_HOST: &str = "soak-relp";
pub const OTT_STATION: &str = "soak";
const TELEMETRY_TID: &str = "6907c830-eed9-4ce9-81ae-76daf8d88f0f";

/// The marker of message `n` of a feed (`soak-udp-00000042`).
pub fn marker(feed: &str, n: u64) -> String {
    format!("{feed}-{n:08}")
}

/// What a feed client sent: per message, when (since the soak's start) it left.
#[derive(Debug, Default, Clone)]
pub struct Sent {
    pub feed: String,
    pub sent_at: Vec<Duration>,
    /// HTTP: answers other than 2xx (and failed requests), each followed by a retry;
    /// RELP: messages written again after a reconnect.
    pub retries: u64,
    /// Messages sent again (HTTP after a failed request, RELP unanswered at a lost
    /// connection): the server may have stored them before the answer was lost.
    pub retried: Vec<u64>,
    /// RELP: messages the server refused (`rsp 500`), with its reason.
    pub refused: Vec<String>,
}

pub struct FeedTargets {
    pub syslog_port: u16,
    pub web_port: u16,
    pub ott_user: String,
    pub ott_password: String,
}

/// UDP: `rate` datagrams a second until `stop`.
pub async fn udp_sender(port: u16, rate: f64, start: Instant, stop: Arc<AtomicBool>) -> Sent {
    let mut sent = Sent {
        feed: UDP_HOST.into(),
        ..Sent::default()
    };
    let Ok(socket) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        return sent;
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let n = sent.sent_at.len() as u64;
        let line = format!("<14>1 - {UDP_HOST} soak - - - {}", marker(UDP_HOST, n));
        if socket
            .send_to(line.as_bytes(), ("127.0.0.1", port))
            .await
            .is_ok()
        {
            sent.sent_at.push(start.elapsed());
        }
    }
    sent
}

/// TCP: LF-framed lines, reconnecting when the server goes away. A message counts as sent
/// once written to a connected socket (what a syslog sender knows).
pub async fn tcp_sender(port: u16, rate: f64, start: Instant, stop: Arc<AtomicBool>) -> Sent {
    let mut sent = Sent {
        feed: TCP_HOST.into(),
        ..Sent::default()
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut stream: Option<tokio::net::TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if stream.is_none() {
            stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok();
        }
        let Some(connection) = stream.as_mut() else {
            continue;
        };
        let n = sent.sent_at.len() as u64;
        let line = format!("<14>1 - {TCP_HOST} soak - - - {}\n", marker(TCP_HOST, n));
        match connection.write_all(line.as_bytes()).await {
            Ok(()) => sent.sent_at.push(start.elapsed()),
            Err(_) => stream = None,
        }
    }
    sent
}

/// RELP: `rate` messages a second until `stop`, then until every one is answered (at
/// most a minute). A message counts as sent once handed to the client, which keeps it
/// until the server acknowledges it (in the archive) — also while the server is down.
pub async fn relp_sender(port: u16, rate: f64, start: Instant, stop: Arc<AtomicBool>) -> Sent {
    let mut sent = Sent {
        feed: RELP_HOST.into(),
        ..Sent::default()
    };
    let mut client = crate::relp_client::RelpClient::new(port);
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut due = Instant::now();
    let mut drain_until = None;
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) {
            let until = *drain_until.get_or_insert(now + Duration::from_secs(60));
            if client.pending() == 0 || now >= until {
                break;
            }
        } else if now >= due {
            let n = sent.sent_at.len() as u64;
            let line = format!("<14>1 - {RELP_HOST} soak - - - {}", marker(RELP_HOST, n));
            client.send(n, line.into_bytes()).await;
            sent.sent_at.push(start.elapsed());
            due += period;
            continue;
        }
        let wait = due
            .saturating_duration_since(now)
            .clamp(Duration::from_millis(1), Duration::from_millis(100));
        client.poll(wait).await;
    }
    let mut resent = client.resent.clone();
    sent.retries = resent.len() as u64;
    resent.sort_unstable();
    resent.dedup();
    sent.retried = resent;
    sent.refused = client
        .refused
        .iter()
        .map(|(n, why)| format!("{}: {why}", marker(RELP_HOST, *n)))
        .collect();
    if client.pending() > 0 {
        sent.refused.push(format!(
            "{} messages still unacknowledged a minute after the load stopped",
            client.pending()
        ));
    }
    sent
}

/// OTT: `POST /ott` with HTTP Basic, one XML document per message.
pub async fn ott_poster(
    targets: Arc<FeedTargets>,
    rate: f64,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> Sent {
    let url = format!(
        "http://127.0.0.1:{}/ott?stationid={OTT_STATION}&action=senddata",
        targets.web_port
    );
    poster("ott", rate, start, stop, |client, body| {
        client
            .post(&url)
            .basic_auth(&targets.ott_user, Some(&targets.ott_password))
            .body(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<StationData id=\"{body}\"/>\n"
            ))
    })
    .await
}

/// Telemetry: `POST /v2/collector` with the probe's headers; the marker is the payload.
pub async fn telemetry_poster(
    targets: Arc<FeedTargets>,
    rate: f64,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> Sent {
    let url = format!("http://127.0.0.1:{}/v2/collector", targets.web_port);
    poster("soak-tel", rate, start, stop, |client, body| {
        client
            .post(&url)
            .header("Record-Format-Version", "4")
            .header("classification", "org.soak/load/test")
            .header("SEVERITY", "2")
            .header("machine_id", "50a4c0000000000000000000000000aa")
            .header("creation_timestamp", "1443573575")
            .header("arch", "x86_64")
            .header("host_type", "blank|blank|blank")
            .header("build", "2980")
            .header("kernel_version", "4.2.0-120")
            .header("payload_format_version", "1")
            .header("system_name", "clear-linux-os")
            .header("board_name", "Qemu|Intel")
            .header("bios_version", "Qemu")
            .header("cpu_model", "soak")
            .header("event_id", "3a2d799826edc6266d72824d2aac6763")
            .header("X-Telemetry-TID", TELEMETRY_TID)
            .header("Content-Type", "application/text")
            .body(body.to_owned())
    })
    .await
}

async fn poster(
    feed: &str,
    rate: f64,
    start: Instant,
    stop: Arc<AtomicBool>,
    request: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
) -> Sent {
    let mut sent = Sent {
        feed: feed.into(),
        ..Sent::default()
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap_or_default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let n = sent.sent_at.len() as u64;
        let body = marker(feed, n);
        let mut pause = Duration::from_millis(200);
        let mut retried = false;
        // Once begun, a message is delivered even after `stop`: the client keeps it.
        loop {
            let answer = request(&client, &body).send().await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                break;
            }
            sent.retries += 1;
            retried = true;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        if retried {
            sent.retried.push(n);
        }
        sent.sent_at.push(start.elapsed());
    }
    sent
}
