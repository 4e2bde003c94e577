//! Alerts end to end: a real server with short windows, driven into real conditions (a
//! syslog sender that stops, an agent that is killed, failed FTP logins, a disk threshold),
//! notifying a webhook receiver and an SMTP sink that run in this test on loopback sockets.
//! The receiver and the sink are the test's peers, speaking just enough HTTP/1.1 and SMTP.

mod web_common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logarchive_tests::{TestAgent, TestServer, free_port, run, wait_until, write_tls_files};
use serde_json::Value;
use web_common::PASSWORD;

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
struct Received {
    /// Header lines, as sent.
    headers: Vec<String>,
    body: Value,
    /// What the receiver answered.
    status: u16,
}

/// A webhook receiver: answers the queued statuses first, then 200.
struct Hook {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Hook {
    fn start(first_statuses: &[u16]) -> Hook {
        Hook::start_tls(first_statuses, None)
    }

    /// With TLS settings, the receiver speaks HTTPS.
    fn start_tls(first_statuses: &[u16], tls: Option<Arc<rustls::ServerConfig>>) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(
            first_statuses.iter().copied().collect::<VecDeque<u16>>(),
        ));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let status = statuses.lock().unwrap().pop_front().unwrap_or(200);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let request =
                    match &tls {
                        Some(config) => rustls::ServerConnection::new(config.clone())
                            .ok()
                            .and_then(|server| {
                                serve_one(rustls::StreamOwned::new(server, stream), status)
                            }),
                        None => serve_one(stream, status),
                    };
                if let Some(request) = request {
                    log.lock().unwrap().push(request);
                }
            }
        });
        Hook { port, received }
    }

    fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/hooks/logarchive?channel=ops",
            self.port
        )
    }

    fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Bodies the receiver accepted (2xx).
    fn accepted(&self) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|r| r.status < 300)
            .map(|r| r.body)
            .collect()
    }

    /// Accepted notifications of `kind` in `state`.
    fn accepted_of(&self, kind: &str, state: &str) -> Vec<Value> {
        self.accepted()
            .into_iter()
            .filter(|b| b["kind"] == kind && b["state"] == state)
            .collect()
    }

    fn wait_for(&self, kind: &str, state: &str, within: Duration) -> Value {
        let seen = wait_until(within, || !self.accepted_of(kind, state).is_empty());
        assert!(
            seen,
            "no {state} {kind} notification; received: {:?}",
            self.all()
        );
        self.accepted_of(kind, state).remove(0)
    }
}

fn serve_one(stream: impl Read + Write, status: u16) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        }
        headers.push(line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let stream = reader.get_mut();
    write!(
        stream,
        "HTTP/1.1 {status} Whatever\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    )
    .ok()?;
    Some(Received {
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status,
    })
}

/// One mail the SMTP sink accepted.
#[derive(Debug, Clone)]
struct Mail {
    auth: Option<String>,
    from: String,
    to: Vec<String>,
    data: String,
    /// Whether it came over TLS.
    tls: bool,
}

/// An SMTP sink: accepts every mail (AUTH PLAIN and LOGIN are taken and remembered).
/// With TLS files it offers STARTTLS, or speaks TLS from the first byte (`wrapped`).
struct Sink {
    port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

/// The sink's connection: plain until STARTTLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
    Switching,
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
            Conn::Switching => Ok(0),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
            Conn::Switching => Ok(0),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
            Conn::Switching => Ok(()),
        }
    }
}

/// TLS settings for the sink from `write_tls_files`' cert and key.
fn sink_tls(dir: &std::path::Path) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    )
}

impl Sink {
    fn start() -> Sink {
        Sink::start_tls(None, false)
    }

    fn start_tls(tls: Option<Arc<rustls::ServerConfig>>, wrapped: bool) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let log = mails.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                    let conn = match (&tls, wrapped) {
                        (Some(config), true) => {
                            let Ok(server) = rustls::ServerConnection::new(config.clone()) else {
                                return;
                            };
                            Conn::Tls(Box::new(rustls::StreamOwned::new(server, stream)))
                        }
                        _ => Conn::Plain(stream),
                    };
                    let _ = smtp_session(conn, tls.filter(|_| !wrapped), &log);
                });
            }
        });
        Sink { port, mails }
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

/// One line (without CR LF), read byte by byte so nothing is buffered across STARTTLS.
fn read_line(conn: &mut Conn) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&line);
    Some(text.trim_end_matches('\r').to_owned())
}

fn smtp_session(
    mut conn: Conn,
    starttls: Option<Arc<rustls::ServerConfig>>,
    mails: &Mutex<Vec<Mail>>,
) -> Option<()> {
    use base64::Engine;
    let decode = |text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    write!(conn, "220 sink ESMTP\r\n").ok()?;
    let (mut auth, mut from, mut to) = (None, String::new(), Vec::new());
    loop {
        let command = read_line(&mut conn)?;
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            let offer = if starttls.is_some() && matches!(conn, Conn::Plain(_)) {
                "250-STARTTLS\r\n"
            } else {
                ""
            };
            write!(
                conn,
                "250-sink\r\n{offer}250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
            )
            .ok()?;
        } else if upper == "STARTTLS" && starttls.is_some() {
            write!(conn, "220 go ahead\r\n").ok()?;
            let Conn::Plain(tcp) = std::mem::replace(&mut conn, Conn::Switching) else {
                return None;
            };
            let server = rustls::ServerConnection::new(starttls.clone()?).ok()?;
            conn = Conn::Tls(Box::new(rustls::StreamOwned::new(server, tcp)));
        } else if upper.starts_with("HELO") {
            write!(conn, "250 sink\r\n").ok()?;
        } else if upper.starts_with("AUTH PLAIN") {
            let initial = command[10..].trim().to_owned();
            let initial = if initial.is_empty() {
                write!(conn, "334 \r\n").ok()?;
                read_line(&mut conn)?
            } else {
                initial
            };
            auth = Some(decode(&initial).replace('\0', " ").trim().to_owned());
            write!(conn, "235 ok\r\n").ok()?;
        } else if upper.starts_with("AUTH LOGIN") {
            write!(conn, "334 VXNlcm5hbWU6\r\n").ok()?;
            let user = decode(&read_line(&mut conn)?);
            write!(conn, "334 UGFzc3dvcmQ6\r\n").ok()?;
            let password = decode(&read_line(&mut conn)?);
            auth = Some(format!("{user} {password}"));
            write!(conn, "235 ok\r\n").ok()?;
        } else if upper.starts_with("MAIL FROM") {
            from = command.clone();
            write!(conn, "250 ok\r\n").ok()?;
        } else if upper.starts_with("RCPT TO") {
            to.push(command.clone());
            write!(conn, "250 ok\r\n").ok()?;
        } else if upper == "DATA" {
            write!(conn, "354 go on\r\n").ok()?;
            let mut data = String::new();
            loop {
                let text = read_line(&mut conn)?;
                if text == "." {
                    break;
                }
                data.push_str(&text);
                data.push('\n');
            }
            mails.lock().unwrap().push(Mail {
                auth: auth.clone(),
                from: std::mem::take(&mut from),
                to: std::mem::take(&mut to),
                data,
                tls: matches!(conn, Conn::Tls(_)),
            });
            write!(conn, "250 queued\r\n").ok()?;
        } else if upper == "QUIT" {
            write!(conn, "221 bye\r\n").ok()?;
            return Some(());
        } else if upper == "RSET" || upper == "NOOP" {
            write!(conn, "250 ok\r\n").ok()?;
        } else {
            write!(conn, "502 not here\r\n").ok()?;
        }
    }
}

/// A server with `web` lines under `[web]`, `sections` appended (an `[alerts]` table),
/// an `admin` and a `node01` user; started.
fn alerts_server(web: &str, sections: &str) -> TestServer {
    let mut server = TestServer::prepare_with_sections("max_failed_logins = 50", sections);
    let text = std::fs::read_to_string(&server.config).unwrap();
    let text = text.replacen("[web]\n", &format!("[web]\n{web}\n"), 1);
    std::fs::write(&server.config, text).unwrap();
    server.add_user("admin", PASSWORD, &["--admin", "--home", "/"]);
    server.add_user("node01", PASSWORD, &["--perm", "elrwmf"]);
    server.start();
    server
}

/// `GET <path>` with the admin's Basic credentials (for `/api/` and `/metrics`).
fn admin_get(server: &TestServer, path: &str) -> String {
    let out = run(
        "curl",
        &[
            "-sf",
            "-u",
            &format!("admin:{PASSWORD}"),
            &format!("http://127.0.0.1:{}{path}", server.web_port),
        ],
    );
    assert!(out.status.success(), "GET {path}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn open_incidents(server: &TestServer) -> Vec<Value> {
    let report: Value = serde_json::from_str(&admin_get(server, "/api/alerts")).unwrap();
    report["open"].as_array().cloned().unwrap_or_default()
}

/// The admin's view of `/admin/alerts` through the login form.
fn admin_page(server: &TestServer, path: &str) -> String {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = web_common::client();
        web_common::login(&client, server, "admin").await;
        web_common::text_of(&client, server, path).await
    })
}

#[test]
fn a_silent_feed_source_opens_once_despite_a_500_and_clears_when_it_sends_again() {
    let hook = Hook::start(&[500]);
    let syslog = free_port();
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("hook-token");
    std::fs::write(&token_file, "s3cret-hook-token\n").unwrap();
    let server = alerts_server(
        "feed_silent_after = \"3s\"",
        &format!(
            "[syslog]\nudp = \"127.0.0.1:{syslog}\"\nflush_interval = \"200ms\"\n[alerts]\ninterval = \"300ms\"\nserver_name = \"archive-test\"\ndisk_threshold_percent = 100\n[alerts.webhook]\nurl = \"{}\"\nbearer_token_file = \"{}\"\ntimeout = \"5s\"\n",
            hook.url(),
            token_file.display()
        ),
    );
    server.wait_for_log("syslog");
    let host = format!("alerthost{:06x}", rand::random::<u32>() & 0xffffff);
    let send = |text: &str| {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let frame = format!("<14>Jan  1 00:00:00 {host} app: {text}");
        socket
            .send_to(frame.as_bytes(), ("127.0.0.1", syslog))
            .unwrap();
    };
    send("first message");
    let subject = format!("syslog/{host}");

    // Silent past 3 s: the receiver answers 500 first, the retry (1 s later) is taken.
    let open = hook.wait_for("feed_silent", "open", Duration::from_secs(20));
    assert_eq!(open["subject"], subject.as_str());
    assert_eq!(open["server"], "archive-test");
    assert!(open["cleared_at"].is_null());
    assert!(open["detail"].as_str().unwrap().contains(&host), "{open:?}");
    let attempts: Vec<Received> = hook
        .all()
        .into_iter()
        .filter(|r| r.body["kind"] == "feed_silent" && r.body["state"] == "open")
        .collect();
    assert_eq!(
        attempts.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500, 200],
        "one refused attempt, one retry"
    );
    assert_eq!(attempts[0].body["incident"], attempts[1].body["incident"]);
    let headers = attempts[1].headers.join("\n").to_ascii_lowercase();
    assert!(
        headers.starts_with("post /hooks/logarchive?channel=ops http/1.1"),
        "{headers}"
    );
    assert!(
        headers.contains("authorization: bearer s3cret-hook-token"),
        "{headers}"
    );
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );

    // The admin pages show it: the alerts page, the badge, /metrics, the API.
    let page = admin_page(&server, "/admin/alerts");
    assert!(
        page.contains(&host) && page.contains("feed_silent"),
        "{page}"
    );
    assert!(page.contains("id=\"alerts-count\""), "no badge: {page}");
    let metrics = admin_get(&server, "/metrics");
    assert!(
        metrics.contains("logarchive_alerts_open{kind=\"feed_silent\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "logarchive_alert_notifications_total{channel=\"webhook\",outcome=\"sent\"} 1"
        ),
        "{metrics}"
    );
    assert_eq!(open_incidents(&server).len(), 1);

    // It sends again: cleared, once, with the same incident id.
    send("back again");
    let cleared = hook.wait_for("feed_silent", "cleared", Duration::from_secs(10));
    assert_eq!(cleared["incident"], open["incident"]);
    assert!(cleared["cleared_at"].is_string());
    assert!(open_incidents(&server).is_empty());
    let page = admin_page(&server, "/admin/alerts");
    assert!(page.contains("id=\"no-open\""), "{page}");
    assert!(page.contains(&host), "recently cleared is listed: {page}");

    // Each was said once (the source is back within its window), and the 100 % disk
    // threshold never tripped.
    assert_eq!(hook.accepted_of("feed_silent", "open").len(), 1);
    assert_eq!(hook.accepted_of("feed_silent", "cleared").len(), 1);
    assert!(hook.accepted_of("disk_full", "open").is_empty());
    assert!(
        !server.stderr().contains("s3cret-hook-token"),
        "the token was logged"
    );
}

#[test]
fn the_webhook_speaks_https_to_a_receiver_signed_by_the_configured_ca() {
    let tls_dir = tempfile::tempdir().unwrap();
    let ca = write_tls_files(tls_dir.path());
    let hook = Hook::start_tls(&[], Some(sink_tls(tls_dir.path())));
    let url = hook.url().replace("http://", "https://");
    let _server = alerts_server(
        "",
        &format!(
            "[alerts]\ninterval = \"300ms\"\ndisk_threshold_percent = 1\n[alerts.webhook]\nurl = \"{url}\"\nca_file = \"{}\"\n",
            ca.display()
        ),
    );
    let open = hook.wait_for("disk_full", "open", Duration::from_secs(15));
    assert!(open["detail"].as_str().unwrap().contains("threshold 1 %"));
}

#[test]
fn a_killed_agent_turns_silent_and_clears_when_it_reports_again() {
    let hook = Hook::start(&[]);
    let mut server = alerts_server(
        // Wide enough that a report delayed by a loaded machine is not silence.
        "agent_silent_after = \"8s\"",
        &format!(
            "[alerts]\ninterval = \"300ms\"\ndisk_threshold_percent = 100\n[alerts.webhook]\nurl = \"{}\"\n",
            hook.url()
        ),
    );
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("app.log"), "line\n").unwrap();
    let mut agent = TestAgent::start(
        &server,
        "node01",
        PASSWORD,
        tree.path(),
        "report_interval = \"1s\"",
    );
    let report = server.archive("/node01/.logarchive-agent/status.json");
    assert!(
        wait_until(Duration::from_secs(20), || report.exists()),
        "the agent never reported: {}",
        agent.stderr()
    );
    // Reporting: no incident.
    std::thread::sleep(Duration::from_secs(2));
    assert!(hook.accepted().is_empty(), "{:?}", hook.all());

    agent.kill();
    let open = hook.wait_for("agent_silent", "open", Duration::from_secs(20));
    assert_eq!(open["subject"], "test-agent");
    assert!(
        open["detail"].as_str().unwrap().contains("node01"),
        "{open:?}"
    );
    let page = admin_page(&server, "/admin/alerts");
    assert!(
        page.contains("agent_silent") && page.contains("test-agent"),
        "{page}"
    );
    // The agents page says the same thing, from the same rule.
    let agents: Value = serde_json::from_str(&admin_get(&server, "/api/agents")).unwrap();
    assert_eq!(agents[0]["state"], "silent", "{agents}");

    agent.restart();
    let cleared = hook.wait_for("agent_silent", "cleared", Duration::from_secs(20));
    assert_eq!(cleared["incident"], open["incident"]);
    assert_eq!(hook.accepted_of("agent_silent", "open").len(), 1);

    // The server is down longer than the window: at its start the agent's report is stale,
    // but it is not called silent before the server has been up for the window.
    agent.kill();
    assert!(server.stop());
    std::thread::sleep(Duration::from_secs(9));
    server.start();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        hook.accepted_of("agent_silent", "open").len(),
        1,
        "called silent at once: {:?}",
        hook.all()
    );
    let seen = wait_until(Duration::from_secs(20), || {
        hook.accepted_of("agent_silent", "open").len() == 2
    });
    assert!(
        seen,
        "never called silent after the start: {:?}",
        hook.all()
    );
}

#[test]
fn failed_ftp_logins_past_the_threshold_send_one_mail() {
    let sink = Sink::start();
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("smtp-password");
    std::fs::write(&password_file, "smtp-pass-word\n").unwrap();
    let server = alerts_server(
        "",
        &format!(
            "[alerts]\ninterval = \"300ms\"\ndisk_threshold_percent = 100\nfailed_logins_threshold = 3\nfailed_logins_window = \"1m\"\n[alerts.email]\nserver = \"127.0.0.1\"\nport = {}\nsecurity = \"plain\"\nuser = \"alerts\"\npassword_file = \"{}\"\nfrom = \"logarchive@example.org\"\nto = [\"ops@example.org\", \"oncall@example.org\"]\n",
            sink.port,
            password_file.display()
        ),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Three failures are within the threshold: no mail.
        for _ in 0..3 {
            let refused = logarchive_tests::ftp_login(&server.addr(), "node01", "wrong").await;
            assert!(refused.is_err());
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(sink.mails().is_empty(), "{:?}", sink.mails());
    runtime.block_on(async {
        for user in ["node01", "nobody"] {
            let refused = logarchive_tests::ftp_login(&server.addr(), user, "wrong").await;
            assert!(refused.is_err());
        }
    });
    let arrived = wait_until(Duration::from_secs(15), || !sink.mails().is_empty());
    assert!(arrived, "no mail: {}", server.stderr());
    std::thread::sleep(Duration::from_millis(1000));
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail.auth.as_deref(), Some("alerts smtp-pass-word"));
    assert!(mail.from.contains("logarchive@example.org"), "{mail:?}");
    assert_eq!(mail.to.len(), 2, "{mail:?}");
    assert!(
        mail.data.contains("OPEN failed_logins: ftp+web"),
        "{}",
        mail.data
    );
    // The count when it opened: past the threshold (4 or 5, as the check fell).
    let counted: usize = mail
        .data
        .lines()
        .find_map(|l| l.split_once(" failed logins in the last 1m (threshold 3)"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no count: {}", mail.data));
    assert!((4..=5).contains(&counted), "{}", mail.data);
    assert!(mail.data.contains("most from 127.0.0.1"), "{}", mail.data);
    assert!(!mail.tls);
    assert!(!server.stderr().contains("smtp-pass-word"));
}

#[test]
fn mail_goes_over_starttls_and_tls_trusting_the_configured_ca() {
    let tls_dir = tempfile::tempdir().unwrap();
    let ca = write_tls_files(tls_dir.path());
    let config = sink_tls(tls_dir.path());
    for (security, wrapped) in [("starttls", false), ("tls", true)] {
        let sink = Sink::start_tls(Some(config.clone()), wrapped);
        let server = alerts_server(
            "",
            &format!(
                "[alerts]\ninterval = \"300ms\"\ndisk_threshold_percent = 1\n[alerts.email]\nserver = \"127.0.0.1\"\nport = {}\nsecurity = \"{security}\"\nca_file = \"{}\"\nfrom = \"logarchive@example.org\"\nto = [\"ops@example.org\"]\n",
                sink.port,
                ca.display()
            ),
        );
        let arrived = wait_until(Duration::from_secs(15), || !sink.mails().is_empty());
        assert!(arrived, "{security}: no mail: {}", server.stderr());
        let mail = &sink.mails()[0];
        assert!(mail.tls, "{security}: not over TLS");
        assert!(mail.data.contains("OPEN disk_full"), "{}", mail.data);
    }
    // A server whose certificate the CA did not sign gets nothing.
    let other = tempfile::tempdir().unwrap();
    let _ = write_tls_files(other.path());
    let sink = Sink::start_tls(Some(sink_tls(other.path())), false);
    let server = alerts_server(
        "",
        &format!(
            "[alerts]\ninterval = \"300ms\"\ndisk_threshold_percent = 1\n[alerts.email]\nserver = \"127.0.0.1\"\nport = {}\nca_file = \"{}\"\nretries = 0\nfrom = \"logarchive@example.org\"\nto = [\"ops@example.org\"]\n",
            sink.port,
            ca.display()
        ),
    );
    server.wait_for_log("alerts: mail");
    assert!(sink.mails().is_empty(), "{:?}", sink.mails());
    let log = server.stderr();
    assert!(log.contains("invalid peer certificate"), "{log}");
}

#[test]
fn a_disk_past_its_threshold_opens_once_and_a_restart_does_not_send_it_again() {
    let hook = Hook::start(&[]);
    let mut server = alerts_server(
        "",
        &format!(
            "[alerts]\ninterval = \"300ms\"\ndisk_threshold_percent = 1\n[alerts.webhook]\nurl = \"{}\"\n",
            hook.url()
        ),
    );
    let open = hook.wait_for("disk_full", "open", Duration::from_secs(15));
    assert!(
        open["subject"].as_str().unwrap().ends_with("data/archive"),
        "{open:?}"
    );
    assert!(
        open["detail"].as_str().unwrap().contains("threshold 1 %"),
        "{open:?}"
    );
    let metrics = admin_get(&server, "/metrics");
    assert!(
        metrics.contains("logarchive_alerts_open{kind=\"disk_full\"} 1"),
        "{metrics}"
    );
    assert!(server.stop(), "stop: {}", server.stderr());
    server.start();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        hook.accepted_of("disk_full", "open").len(),
        1,
        "sent again after the restart: {:?}",
        hook.all()
    );
    let open_now = open_incidents(&server);
    assert_eq!(open_now.len(), 1, "{open_now:?}");
    assert_eq!(open_now[0]["id"], open["incident"]);
}

#[test]
fn alert_config_errors_name_the_key_and_line() {
    let cases = [
        (
            "[alerts]\ndisk_threshold_percent = 150\n",
            "disk_threshold_percent",
        ),
        (
            "[alerts.webhook]\nurl = \"ftp://example.org/hook\"\n",
            "[alerts.webhook] url",
        ),
        (
            "[alerts.webhook]\nurl = \"http://127.0.0.1:9/\"\nbearer_token_file = \"missing-token\"\n",
            "bearer_token_file",
        ),
        (
            "[alerts.email]\nserver = \"mail\"\nfrom = \"not an address\"\nto = [\"a@example.org\"]\n",
            "not an address",
        ),
        (
            "[alerts.email]\nserver = \"mail\"\nfrom = \"a@example.org\"\nto = []\n",
            "at least one recipient",
        ),
    ];
    for (section, needle) in cases {
        let server = TestServer::prepare_with_sections("", section);
        let out = server.cli(&["run"], "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{section}: started");
        assert!(err.contains("server.toml:"), "{section}: {err}");
        assert!(err.contains(needle), "{section}: {err}");
    }
}
