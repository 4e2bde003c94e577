//! The syslog feed with real senders: util-linux `logger` over UDP and TCP (both
//! framings, both formats), raw sockets for mixed framing and bad input, a UDP flood, and
//! rsyslog forwarding over TCP and TLS (with F-TICKS lines), and over RELP (`omrelp`): exact
//! delivery, nothing lost across a server SIGKILL, bad frames answered.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use logarchive_tests::{TestServer, free_port, run, wait_until};

const PW: &str = "feeds-admin-pw";

/// A server with `[syslog]` lines and an admin (for `/api/feeds`), started, listeners up.
fn syslog_server(syslog: &str) -> TestServer {
    let mut server = TestServer::prepare_with_sections("", &format!("[syslog]\n{syslog}"));
    server.add_user("admin", PW, &["--admin"]);
    server.start();
    server.wait_for_log("syslog");
    server
}

fn unique(label: &str) -> String {
    format!("{label}-{:08x}", rand::random::<u32>())
}

/// Every file below the archive's `/syslog`, with its text.
fn syslog_files(server: &TestServer) -> Vec<(String, String)> {
    server
        .archived_tree("/syslog")
        .into_iter()
        .map(|(rel, bytes)| {
            (
                format!("/syslog/{rel}"),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect()
}

/// Waits until a line containing `needle` is in a syslog file; returns (path, line).
fn wait_for_line(server: &TestServer, needle: &str) -> (String, String) {
    let mut found = None;
    let seen = wait_until(Duration::from_secs(15), || {
        found = syslog_files(server).into_iter().find_map(|(path, text)| {
            text.lines()
                .find(|line| line.contains(needle))
                .map(|line| (path.clone(), line.to_owned()))
        });
        found.is_some()
    });
    assert!(
        seen,
        "{needle:?} never reached /syslog: {:?}",
        syslog_files(server)
    );
    found.unwrap_or_default()
}

fn today() -> String {
    let out = run("date", &["-u", "+%Y/%m/%d"]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stats(server: &TestServer) -> serde_json::Value {
    let out = run(
        "curl",
        &[
            "-sf",
            "-u",
            &format!("admin:{PW}"),
            &format!("http://127.0.0.1:{}/api/feeds", server.web_port),
        ],
    );
    assert!(out.status.success(), "GET /api/feeds failed: {out:?}");
    serde_json::from_slice(&out.stdout).expect("stats JSON")
}

fn counter(server: &TestServer, feed: &str, name: &str) -> u64 {
    stats(server)[feed][name].as_u64().unwrap_or(0)
}

fn logger(port: u16, args: &[&str], message: &str) {
    let port = port.to_string();
    let mut all = vec!["-n", "127.0.0.1", "-P", &port, "-t", "feedtest"];
    all.extend_from_slice(args);
    all.push(message);
    let out = run("logger", &all);
    assert!(out.status.success(), "logger {all:?}: {out:?}");
}

#[test]
fn logger_over_udp_and_tcp_in_both_formats_lands_per_host_and_day() {
    let port = free_port();
    let mut server = syslog_server(&format!(
        "udp = \"127.0.0.1:{port}\"\ntcp = \"127.0.0.1:{port}\"\n"
    ));
    server.wait_for_log("syslog tcp listener up");
    let cases: [(&str, &[&str]); 5] = [
        ("udp3164", &["--udp", "--rfc3164"]),
        ("udp5424", &["--udp", "--rfc5424"]),
        ("tcp3164", &["--tcp", "--rfc3164"]),
        ("tcp5424", &["--tcp", "--rfc5424"]),
        ("tcpoctet", &["--tcp", "--octet-count", "--rfc5424"]),
    ];
    let mut sent = Vec::new();
    for (label, args) in cases {
        let message = unique(label);
        logger(port, args, &message);
        sent.push(message);
    }
    let day = today();
    let mut paths = Vec::new();
    for message in &sent {
        let (path, line) = wait_for_line(&server, message);
        assert!(
            path.starts_with("/syslog/") && path.ends_with(&server.feed_file("", &day, "log")),
            "{path}"
        );
        assert!(!path.contains("_unparsed"), "{path}: {line}");
        assert!(line.contains("feedtest"), "{line}");
        paths.push(path);
    }
    // One file per host and day (RFC 3164 senders give the short host name, RFC 5424 ones
    // may give the full one).
    paths.sort();
    paths.dedup();
    assert!(paths.len() <= 2, "{paths:?}");
    let counters = &stats(&server)["syslog"];
    assert_eq!(counters["stored"], 5, "{counters}");
    assert_eq!(counters["unparsed"], 0, "{counters}");
    // The file is in the catalog with the feed as its uploader.
    assert!(server.stop(), "server did not stop cleanly");
    let out = server.cli(&["catalog", "--json"], "");
    let catalog = String::from_utf8_lossy(&out.stdout);
    let entry = catalog
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["path"] == paths[0].as_str())
        .unwrap_or_else(|| panic!("{} not cataloged: {catalog}", paths[0]));
    assert_eq!(entry["uploader"], "syslog");
    let stored = logarchive_tests::sha256_hex(&server.archived(&paths[0]).unwrap());
    assert_eq!(entry["sha256"], stored.as_str());
}

#[test]
fn mixed_framing_and_bad_input_on_one_port_are_stored_or_counted() {
    let port = free_port();
    let server = syslog_server(&format!(
        "tcp = \"127.0.0.1:{port}\"\nmax_frame = \"1KiB\"\nidle_timeout = \"1s\"\n"
    ));
    let tag = unique("mixed");
    let counted = format!("<13>1 2026-11-22T19:00:00Z mixhost app - - - {tag} two\nsecond line");
    let mut stream = Vec::new();
    stream.extend_from_slice(format!("<13>Nov 22 19:00:00 mixhost app: {tag} one\n").as_bytes());
    stream.extend_from_slice(format!("{} {counted}", counted.len()).as_bytes());
    stream.extend_from_slice(
        format!("<13>Nov 22 19:00:00 mixhost app: {tag} nul\0byte\n").as_bytes(),
    );
    stream.extend_from_slice(b"<13>Nov 22 19:00:00 mixhost app: bad \xff\xfe utf8\n");
    stream.extend_from_slice(
        format!("<13>Nov 22 19:00:00 mixhost app: {}\n", "x".repeat(2000)).as_bytes(),
    );
    stream.extend_from_slice(format!("{tag} has no pri\n").as_bytes());
    stream
        .extend_from_slice(format!("<13>Nov 22 19:00:00 ../../etc app: {tag} trick\n").as_bytes());
    stream.extend_from_slice(format!("<13>Nov 22 19:00:00 mixhost app: {tag} three\n").as_bytes());
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.write_all(&stream).expect("send");
    drop(tcp);

    let (path, _) = wait_for_line(&server, &format!("{tag} three"));
    assert!(path.starts_with("/syslog/mixhost/"), "{path}");
    let (_, two) = wait_for_line(&server, &format!("{tag} two"));
    assert!(two.ends_with("two#012second line"), "{two}");
    assert!(
        two.starts_with("<13>1 2026-11-22T19:00:00Z mixhost"),
        "{two}"
    );
    let (trick, _) = wait_for_line(&server, &format!("{tag} trick"));
    assert!(trick.starts_with("/syslog/_.._etc/"), "{trick}");
    let (unparsed, line) = wait_for_line(&server, &format!("{tag} has no pri"));
    assert!(unparsed.starts_with("/syslog/_unparsed/"), "{unparsed}");
    assert!(line.contains("no <PRI> header"), "{line}");
    let (_, nul) = wait_for_line(&server, &format!("{tag} nul"));
    assert!(
        nul.contains("NUL byte") && nul.contains("nul#000byte"),
        "{nul}"
    );
    let (_, bad) = wait_for_line(&server, "bad ");
    assert!(bad.contains("invalid UTF-8"), "{bad}");
    // Nothing outside /syslog (and the server's own folder).
    assert_eq!(server.archived_names("/"), [".logarchive", "syslog"]);
    let counters = stats(&server)["syslog"].clone();
    assert_eq!(counters["oversize"], 1, "{counters}");
    assert_eq!(counters["unparsed"], 3, "{counters}");
    assert_eq!(counters["stored"], 4, "{counters}");

    // A silent sender is cut off after idle_timeout, and counted.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut byte = [0u8; 1];
    assert_eq!(
        idle.read(&mut byte).unwrap_or(0),
        0,
        "idle sender not closed"
    );
    assert!(wait_until(Duration::from_secs(5), || counter(
        &server, "syslog", "timeouts"
    ) == 1));
}

#[test]
fn a_udp_flood_is_dropped_and_counted_while_other_senders_get_through() {
    let port = free_port();
    let server = syslog_server(&format!(
        "udp = \"127.0.0.1:{port}\"\nrate_per_sender = \"20KiB/s\"\nmax_frame = \"512\"\n"
    ));
    // The flood comes from 127.0.0.2; loopback answers for all of 127/8.
    let flood = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let datagram = format!("<13>Nov 22 19:00:00 flooder app: {}", "f".repeat(300));
    for _ in 0..3000 {
        let _ = flood.send_to(datagram.as_bytes(), ("127.0.0.1", port));
    }
    assert!(
        wait_until(Duration::from_secs(10), || counter(
            &server, "syslog", "dropped"
        ) > 0),
        "flood not dropped: {}",
        stats(&server)
    );
    // Another sender is not affected.
    let message = unique("calm");
    logger(port, &["--udp", "--rfc3164"], &message);
    wait_for_line(&server, &message);
    let counters = stats(&server)["syslog"].clone();
    let dropped = counters["dropped"].as_u64().unwrap_or(0);
    let stored = counters["stored"].as_u64().unwrap_or(0);
    assert!(dropped > 100, "{counters}");
    // Every datagram that arrived is accounted for (UDP may lose some in the kernel).
    let received = counters["received"].as_u64().unwrap_or(0);
    assert!(received >= stored && stored >= 2, "{counters}");
    // A datagram over max_frame is counted, not stored (resent in case the kernel dropped it).
    let oversize = wait_until(Duration::from_secs(10), || {
        let _ = flood.send_to("x".repeat(600).as_bytes(), ("127.0.0.1", port));
        std::thread::sleep(Duration::from_millis(100));
        counter(&server, "syslog", "oversize") >= 1
    });
    assert!(oversize, "{}", stats(&server));
    assert_eq!(stats(&server)["syslog"]["stored"].as_u64(), Some(stored));
}

/// rsyslogd on its own config, pid file and work dir; killed on drop.
struct Rsyslog {
    child: Child,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_rsyslog(dir: &Path, config: &str) -> Rsyslog {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let conf = dir.join("rsyslog.conf");
    std::fs::write(&conf, config).expect("write rsyslog.conf");
    let program = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("rsyslogd");
    let check = Command::new(program)
        .args(["-N1", "-f"])
        .arg(&conf)
        .output()
        .expect("rsyslogd (apt-get install rsyslog rsyslog-gnutls)");
    assert!(check.status.success(), "rsyslog.conf: {check:?}");
    let child = Command::new(program)
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rsyslogd");
    Rsyslog { child }
}

/// A certificate for `localhost` as the server's `cert.pem` and `key.pem`; returns the
/// certificate's path (what clients trust).
fn self_signed_cert(server: &TestServer) -> std::path::PathBuf {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let ca = server.dir.path().join("cert.pem");
    std::fs::write(&ca, cert.cert.pem()).expect("cert");
    std::fs::write(
        server.dir.path().join("key.pem"),
        cert.signing_key.serialize_pem(),
    )
    .expect("key");
    ca
}

#[test]
fn rsyslog_forwards_over_tcp_and_tls_with_fticks() {
    let (tcp_port, tls_port) = (free_port(), free_port());
    let mut server = TestServer::prepare_with_sections(
        "",
        &format!(
            "[syslog]\ntcp = \"127.0.0.1:{tcp_port}\"\ntls = \"127.0.0.1:{tls_port}\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n"
        ),
    );
    let ca = self_signed_cert(&server);
    server.add_user("admin", PW, &["--admin"]);
    server.start();
    server.wait_for_log("syslog tls listener up");

    let rsyslog_dir = tempfile::tempdir().expect("temp dir");
    let (in_tcp, in_tls) = (free_port(), free_port());
    let config = format!(
        r#"global(workDirectory="{work}" defaultNetstreamDriverCAFile="{ca}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{in_tcp}" ruleset="viaTcp")
input(type="imudp" address="127.0.0.1" port="{in_tls}" ruleset="viaTls")
ruleset(name="viaTcp") {{
  action(type="omfwd" target="127.0.0.1" port="{tcp_port}" protocol="tcp" TCP_Framing="octet-counted")
}}
ruleset(name="viaTls") {{
  action(type="omfwd" target="127.0.0.1" port="{tls_port}" protocol="tcp"
         StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
         StreamDriverPermittedPeers="localhost")
}}
"#,
        work = rsyslog_dir.path().join("work").display(),
        ca = ca.display(),
    );
    let _rsyslog = start_rsyslog(rsyslog_dir.path(), &config);
    assert!(
        wait_until(Duration::from_secs(10), || {
            UdpSocket::bind("127.0.0.1:0").is_ok()
                && rsyslog_dir.path().join("rsyslogd.pid").exists()
        }),
        "rsyslogd did not start"
    );

    let via_tcp = unique("via-tcp");
    let via_tls = unique("via-tls");
    let realm = format!("{}.example.org", unique("realm"));
    let good = format!(
        "F-TICKS/eduroam/1.0#REALM={realm}#VISCOUNTRY=CZ#VISINST=1example.cz#CSI=aa-bb-cc-dd-ee-ff#PN=3f2a#RESULT=OK#"
    );
    let bad = format!(
        "F-TICKS/eduroam/1.0#REALM={realm}#VISCOUNTRY=CZ#VISINST=example.cz#CSI=x#PN=#RESULT=OK"
    );
    // rsyslog may still be setting up its inputs: resend until the first line is through.
    let mut sent = false;
    for _ in 0..40 {
        logger(in_tcp, &["--udp", "--rfc3164"], &via_tcp);
        if wait_until(Duration::from_millis(500), || {
            syslog_files(&server)
                .iter()
                .any(|(_, t)| t.contains(&via_tcp))
        }) {
            sent = true;
            break;
        }
    }
    assert!(
        sent,
        "nothing arrived over TCP from rsyslog: {}",
        server.stderr()
    );
    for message in [&via_tls, &good, &bad] {
        logger(in_tls, &["--udp", "--rfc3164"], message);
    }
    let (tcp_path, _) = wait_for_line(&server, &via_tcp);
    let (tls_path, _) = wait_for_line(&server, &via_tls);
    assert_eq!(tcp_path, tls_path, "one sender host, one file");
    wait_for_line(&server, &realm);

    let api = |path: &str| {
        let out = run(
            "curl",
            &[
                "-sf",
                "-u",
                &format!("admin:{PW}"),
                &format!("http://127.0.0.1:{}{path}", server.web_port),
            ],
        );
        assert!(out.status.success(), "GET {path}: {out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    let mut found = serde_json::Value::Null;
    let indexed = wait_until(Duration::from_secs(10), || {
        found = api(&format!(
            "/api/fticks?realm={realm}&viscountry=cz&result=OK"
        ));
        found["records"].as_array().is_some_and(|r| r.len() == 1)
    });
    assert!(indexed, "F-TICKS line not searchable: {found}");
    assert_eq!(found["records"][0]["visinst"], "1example.cz");
    assert_eq!(found["records"][0]["csi"], "aabbccddeeff");
    let none = api(&format!("/api/fticks?realm={realm}&result=FAIL"));
    assert_eq!(none["records"].as_array().map(Vec::len), Some(0));
    let malformed = api("/api/fticks/malformed");
    let reasons = malformed.to_string();
    assert!(
        reasons.contains(&realm) && reasons.contains("VISINST"),
        "{reasons}"
    );
    // The F-TICKS API is for admins only.
    let anonymous = run(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{}/api/fticks", server.web_port),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");
}

#[test]
fn allow_list_max_connections_and_host_from_sender() {
    let (port, open_port) = (free_port(), free_port());
    let server = syslog_server(&format!(
        "udp = \"127.0.0.1:{port}\"\ntcp = \"127.0.0.1:{port}\"\nallow = [\"10.0.0.0/8\"]\n"
    ));
    logger(port, &["--udp", "--rfc3164"], &unique("outsider"));
    let mut refused = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    refused.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let _ = refused.write_all(b"<13>Nov 22 19:00:00 h app: not allowed\n");
    let mut byte = [0u8; 1];
    assert_eq!(
        refused.read(&mut byte).unwrap_or(0),
        0,
        "connection not closed"
    );
    assert!(
        wait_until(Duration::from_secs(5), || counter(
            &server, "syslog", "rejected"
        ) == 2),
        "{}",
        stats(&server)
    );
    assert_eq!(counter(&server, "syslog", "stored"), 0);
    assert!(syslog_files(&server).is_empty());

    // One connection at a time: the second is closed at once and counted.
    let limited = syslog_server(&format!(
        "tcp = \"127.0.0.1:{open_port}\"\nmax_connections = 1\nhost_from = \"sender\"\n"
    ));
    let first = TcpStream::connect(("127.0.0.1", open_port)).expect("connect");
    let mut second = TcpStream::connect(("127.0.0.1", open_port)).expect("connect");
    second.set_read_timeout(Some(Duration::from_secs(10))).ok();
    assert_eq!(
        second.read(&mut byte).unwrap_or(0),
        0,
        "second connection not closed"
    );
    assert!(wait_until(Duration::from_secs(5), || counter(
        &limited, "syslog", "dropped"
    ) == 1));
    let mut first = first;
    let message = unique("first");
    first
        .write_all(format!("<13>Nov 22 19:00:00 limited app: {message}\n").as_bytes())
        .expect("send");
    let (path, _) = wait_for_line(&limited, &message);
    // host_from = "sender": the folder is the sender's address, not the name it gives.
    assert!(path.starts_with("/syslog/127.0.0.1/"), "{path}");
}

#[test]
fn buffered_messages_are_written_at_shutdown() {
    let port = free_port();
    let mut server = syslog_server(&format!(
        "tcp = \"127.0.0.1:{port}\"\nflush_interval = \"1h\"\n"
    ));
    let message = unique("at-shutdown");
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.write_all(format!("<13>Nov 22 19:00:00 shut app: {message}\n").as_bytes())
        .expect("send");
    assert!(wait_until(Duration::from_secs(10), || counter(
        &server, "syslog", "stored"
    ) == 1));
    assert!(
        syslog_files(&server).is_empty(),
        "written before the flush interval"
    );
    assert!(server.stop(), "server did not stop cleanly");
    let files = syslog_files(&server);
    assert!(
        files
            .iter()
            .any(|(path, text)| path.starts_with("/syslog/shut/") && text.contains(&message)),
        "{files:?}"
    );
}

/// The rsyslog config lines that load imudp/imtcp and omrelp and forward `ruleset` to a
/// RELP port; retried every second while the server is away, kept in a queue meanwhile.
fn omrelp_action(port: u16, tls: &str) -> String {
    format!(
        r#"action(type="omrelp" target="127.0.0.1" port="{port}" {tls}
         queue.type="LinkedList" action.resumeRetryCount="-1" action.resumeInterval="1")"#
    )
}

/// `[syslog]` with RELP (plain and TLS, a self-signed cert for `localhost`): the server,
/// started, and the CA file rsyslog trusts.
fn relp_server(relp: u16, relp_tls: u16) -> (TestServer, std::path::PathBuf) {
    let mut server = TestServer::prepare_with_sections(
        "",
        &format!(
            "[syslog]\nrelp = \"127.0.0.1:{relp}\"\nrelp_tls = \"127.0.0.1:{relp_tls}\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n"
        ),
    );
    let ca = self_signed_cert(&server);
    server.add_user("admin", PW, &["--admin"]);
    server.start();
    server.wait_for_log("syslog relp_tls listener up");
    (server, ca)
}

/// The archived lines of the syslog files of `host` that contain `needle`.
fn lines_with(server: &TestServer, host: &str, needle: &str) -> Vec<String> {
    syslog_files(server)
        .into_iter()
        .filter(|(path, _)| path.starts_with(&format!("/syslog/{host}/")))
        .flat_map(|(_, text)| {
            text.lines()
                .filter(|line| line.contains(needle))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// rsyslog's `omrelp` (the real RELP client) over plain TCP and TLS: every message
/// arrives once, with exactly its text.
#[test]
fn rsyslog_omrelp_delivers_each_message_with_its_text_over_relp_and_relp_tls() {
    let (relp, relp_tls) = (free_port(), free_port());
    let (server, ca) = relp_server(relp, relp_tls);
    let rsyslog_dir = tempfile::tempdir().expect("temp dir");
    // librelp's x509 modes want a certificate of the client's own (the server asks none).
    let client = rcgen::generate_simple_self_signed(vec!["client".to_owned()]).expect("cert");
    let (client_cert, client_key) = (
        rsyslog_dir.path().join("client.pem"),
        rsyslog_dir.path().join("client-key.pem"),
    );
    std::fs::write(&client_cert, client.cert.pem()).expect("client cert");
    std::fs::write(&client_key, client.signing_key.serialize_pem()).expect("client key");
    let (in_plain, in_tls) = (free_port(), free_port());
    let config = format!(
        r#"global(workDirectory="{work}")
module(load="imudp")
module(load="omrelp")
input(type="imudp" address="127.0.0.1" port="{in_plain}" ruleset="viaRelp")
input(type="imudp" address="127.0.0.1" port="{in_tls}" ruleset="viaRelpTls")
ruleset(name="viaRelp") {{
  {plain}
}}
ruleset(name="viaRelpTls") {{
  {tls}
}}
"#,
        work = rsyslog_dir.path().join("work").display(),
        plain = omrelp_action(relp, ""),
        tls = omrelp_action(
            relp_tls,
            &format!(
                r#"tls="on" tls.caCert="{}" tls.authMode="name" tls.permittedPeer=["localhost"] tls.myCert="{}" tls.myPrivKey="{}""#,
                ca.display(),
                client_cert.display(),
                client_key.display(),
            )
        ),
    );
    let _rsyslog = start_rsyslog(rsyslog_dir.path(), &config);
    let run_id = unique("relp");
    let texts = [
        format!("{run_id} plain ascii"),
        format!("{run_id} unicode: žluťoučký kůň, 日本語"),
        format!("{run_id} quotes \"and\" brackets [x] <y> 100%"),
    ];
    // rsyslog may still be setting up its inputs: resend a first line until it is through.
    for (port, label) in [(in_plain, "relp"), (in_tls, "relp_tls")] {
        let first = format!("{run_id} {label} first");
        let through = (0..40).any(|_| {
            logger(port, &["--udp", "--rfc3164"], &first);
            wait_until(Duration::from_millis(500), || {
                syslog_files(&server)
                    .iter()
                    .any(|(_, t)| t.contains(&first))
            })
        });
        assert!(
            through,
            "nothing arrived over {label} from rsyslog: {}",
            server.stderr()
        );
    }
    for (port, label) in [(in_plain, "relp"), (in_tls, "relp_tls")] {
        for text in &texts {
            logger(port, &["--udp", "--rfc3164"], &format!("{label} {text}"));
        }
    }
    for label in ["relp", "relp_tls"] {
        for text in &texts {
            let message = format!("{label} {text}");
            let (_, line) = wait_for_line(&server, &message);
            // The line is rsyslog's forwarded message: its text is the end of it, whole.
            assert!(line.ends_with(&format!(": {message}")), "{line}");
            let all: Vec<String> = syslog_files(&server)
                .iter()
                .flat_map(|(_, t)| {
                    t.lines()
                        .filter(|l| l.ends_with(&message))
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect();
            assert_eq!(all.len(), 1, "{message}: {all:?}");
        }
    }
    assert_eq!(
        counter(&server, "syslog", "rejected"),
        0,
        "{}",
        stats(&server)
    );
}

/// The same kill with our own RELP client (the soak's, which resends what was not
/// answered, as librelp does): none is missing, none refused. Tells the server's part from
/// rsyslog's in the test below.
#[test]
fn relp_client_loses_nothing_when_the_server_is_killed_mid_stream() {
    const COUNT: u64 = 3000;
    let (relp, relp_tls) = (free_port(), free_port());
    let (mut server, _) = relp_server(relp, relp_tls);
    let run_id = unique("ownkill");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut client = logarchive_tests::relp_client::RelpClient::new(relp);
    runtime.block_on(async {
        for n in 0..COUNT {
            let text = format!("<13>Nov 23 04:00:00 relpown app: {run_id} seq={n:06}");
            client.send(n, text.into_bytes()).await;
            client.poll(Duration::from_millis(1)).await;
            if n == COUNT / 3 + 50 {
                server.kill();
            }
            if n == COUNT / 2 + 50 {
                server.start();
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while client.pending() > 0 && std::time::Instant::now() < deadline {
            client.poll(Duration::from_millis(50)).await;
        }
    });
    assert_eq!(client.pending(), 0, "messages never answered");
    assert!(client.refused.is_empty(), "refused: {:?}", client.refused);
    let mut seen = vec![0usize; COUNT as usize];
    for line in lines_with(&server, "relpown", &run_id) {
        if let Some(n) = line
            .rsplit("seq=")
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < COUNT as usize)
        {
            seen[n] += 1;
        }
    }
    let missing: Vec<usize> = (0..COUNT as usize).filter(|n| seen[*n] == 0).collect();
    assert!(missing.is_empty(), "missing after the kill: {missing:?}");
}

/// Numbered messages through rsyslog's `omrelp` while the server is SIGKILLed and
/// restarted: none is missing (what was sent but not acknowledged at the kill is sent
/// again, so a few may arrive twice: at most rsyslog's window of 128).
#[test]
fn relp_loses_nothing_when_the_server_is_killed_mid_stream() {
    // On S3 rsyslog 8.2302 / librelp 1.11 drops one message here, every run: the server
    // never receives it (no frame, no refusal in its trace log), and our own RELP client
    // loses none in the same kill on S3 (the test above). rsyslog has dropped one message
    // when its action resumes before (rsyslog issues #571, #884); why the S3 server's
    // restart brings that out and the disk's does not is open (issue 6).
    if logarchive_tests::skip_on_s3(
        "relp_loses_nothing_when_the_server_is_killed_mid_stream",
        "rsyslog's omrelp drops one message at the resume against the S3 server (issue 6)",
    ) {
        return;
    }
    const COUNT: usize = 3000;
    let (relp, relp_tls) = (free_port(), free_port());
    let (mut server, _) = relp_server(relp, relp_tls);
    let rsyslog_dir = tempfile::tempdir().expect("temp dir");
    let input = free_port();
    let config = format!(
        r#"global(workDirectory="{work}")
module(load="imtcp")
module(load="omrelp")
input(type="imtcp" address="127.0.0.1" port="{input}" ruleset="viaRelp")
ruleset(name="viaRelp") {{
  {action}
}}
"#,
        work = rsyslog_dir.path().join("work").display(),
        action = omrelp_action(relp, ""),
    );
    let _rsyslog = start_rsyslog(rsyslog_dir.path(), &config);
    let mut feed = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            feed = TcpStream::connect(("127.0.0.1", input)).ok();
            feed.is_some()
        }),
        "rsyslog's imtcp input never listened"
    );
    let mut feed = feed.expect("connected");
    let run_id = unique("kill");
    let message = |n: usize| format!("<13>Nov 23 04:00:00 relpkill app: {run_id} seq={n:06}\n");
    let started = std::time::Instant::now();
    for n in 0..COUNT {
        feed.write_all(message(n).as_bytes())
            .expect("send to rsyslog");
        if n % 100 == 99 {
            std::thread::sleep(Duration::from_millis(40));
        }
        // In the middle of a burst, so that messages are on their way at the kill.
        if n == COUNT / 3 + 50 {
            server.kill();
        }
        if n == COUNT / 2 + 50 {
            server.start();
        }
    }
    drop(feed);
    let count_each = |server: &TestServer| {
        let mut seen = vec![0usize; COUNT];
        for line in lines_with(server, "relpkill", &run_id) {
            let number = line
                .rsplit("seq=")
                .next()
                .and_then(|n| n.parse::<usize>().ok());
            if let Some(n) = number.filter(|n| *n < COUNT) {
                seen[n] += 1;
            }
        }
        seen
    };
    let mut seen = Vec::new();
    wait_until(Duration::from_secs(20), || {
        seen = count_each(&server);
        seen.iter().all(|c| *c > 0)
    });
    let missing: Vec<usize> = (0..COUNT).filter(|n| seen[*n] == 0).collect();
    let duplicates: usize = seen.iter().map(|c| c.saturating_sub(1)).sum();
    eprintln!(
        "RELP across a server SIGKILL: {COUNT} sent in {:?}, {} missing, {duplicates} duplicates",
        started.elapsed(),
        missing.len()
    );
    assert!(missing.is_empty(), "missing after the kill: {missing:?}");
    assert!(
        duplicates <= 128,
        "{duplicates} duplicates: more than the window"
    );
}

/// Bad frames get `rsp 500` with the reason; the server stays up and the next session
/// works; a stopping server says `serverclose`.
#[test]
fn a_bad_relp_frame_is_answered_500_and_the_server_stays_up() {
    let (relp, relp_tls) = (free_port(), free_port());
    let (mut server, _) = relp_server(relp, relp_tls);
    let session = || {
        let stream = TcpStream::connect(("127.0.0.1", relp)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
    };
    // Read until the peer closes (or the timeout), as text.
    let read_all = |stream: &mut TcpStream| {
        let mut text = Vec::new();
        let _ = stream.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    };
    let read_some = |stream: &mut TcpStream, want: &str| {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while !text.contains(want) {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        text
    };
    let offers = "relp_version=0\ncommands=syslog\nx=y";
    let open = format!("1 open {} {offers}\n", offers.len());
    let open = open.as_bytes();

    // Not RELP at all: an answer naming what was wrong, then the connection is closed.
    let mut http = session();
    http.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send");
    let answer = read_all(&mut http);
    assert!(
        answer.starts_with("0 rsp ")
            && answer.contains("500 not a RELP frame: a transaction number"),
        "{answer:?}"
    );

    // syslog before open: refused.
    let mut early = session();
    early.write_all(b"1 syslog 9 <13>early\n").expect("send");
    let answer = read_all(&mut early);
    assert!(
        answer.contains("1 rsp") && answer.contains("500 the session is not open"),
        "{answer:?}"
    );

    // An oversize frame (over the default max_frame) and an unknown command: refused, and
    // the session goes on; a good message is answered 200 and stored.
    let mut good = session();
    good.write_all(open).expect("send");
    let answer = read_some(&mut good, "commands=syslog");
    assert!(
        answer.starts_with("1 rsp ") && answer.contains("200 OK\nrelp_version=0"),
        "{answer:?}"
    );
    let big = vec![b'x'; 100_000];
    good.write_all(format!("2 syslog {} ", big.len()).as_bytes())
        .expect("send");
    good.write_all(&big).expect("send");
    good.write_all(b"\n3 starttls 0\n").expect("send");
    let text = format!("<13>Nov 23 04:00:00 relpbad app: {}", unique("after"));
    good.write_all(format!("4 syslog {} {text}\n", text.len()).as_bytes())
        .expect("send");
    let answers = read_some(&mut good, "4 rsp");
    assert!(
        answers.contains("2 rsp")
            && answers.contains("500 a 100000-byte message is over the limit"),
        "{answers:?}"
    );
    assert!(
        answers.contains("3 rsp") && answers.contains("500 unknown command \"starttls\""),
        "{answers:?}"
    );
    assert!(answers.contains("4 rsp 6 200 OK\n"), "{answers:?}");
    // Acknowledged means written: the line is there at once, no flush interval later.
    let needle = text.rsplit(' ').next().unwrap_or_default();
    assert_eq!(lines_with(&server, "relpbad", needle).len(), 1);
    good.write_all(b"5 close 0\n").expect("send");
    let closed = read_all(&mut good);
    assert_eq!(closed, "5 rsp 6 200 OK\n");

    // A frame that breaks off in the middle of a session: 500, the rest is not read.
    let mut broken = session();
    broken.write_all(open).expect("send");
    read_some(&mut broken, "commands=syslog");
    broken.write_all(b"2 syslog 3 abcdef\n").expect("send");
    let answer = read_all(&mut broken);
    assert!(
        answer.contains("2 rsp") && answer.contains("does not end in LF"),
        "{answer:?}"
    );

    assert!(server.healthy(), "{}", server.stderr());
    let snapshot = stats(&server);
    assert_eq!(snapshot["syslog"]["oversize"], 1, "{snapshot}");
    assert_eq!(snapshot["syslog"]["rejected"], 4, "{snapshot}");
    // Counted, not logged one by one: a sender controls how many there are.
    assert!(
        !server.stderr().contains("RELP frame refused"),
        "{}",
        server.stderr()
    );
    assert_eq!(snapshot["syslog"]["stored"], 1, "{snapshot}");

    // A stopping server tells an open session `serverclose`, after the answers due.
    let mut open_session = session();
    open_session.write_all(open).expect("send");
    read_some(&mut open_session, "commands=syslog");
    let last = format!("<13>Nov 23 04:00:00 relpbad app: {}", unique("last"));
    open_session
        .write_all(format!("2 syslog {} {last}\n", last.len()).as_bytes())
        .expect("send");
    assert!(read_some(&mut open_session, "2 rsp").contains("2 rsp 6 200 OK\n"));
    assert!(server.stop(), "{}", server.stderr());
    assert_eq!(read_all(&mut open_session), "0 serverclose 0\n");
}

/// A RELP client that sends without ever reading its answers is disconnected once its
/// answers have waited `idle_timeout`, not held forever (its answers fill the socket, the
/// window fills, the server stops reading: the idle timeout of reading alone never fires).
#[test]
fn a_relp_client_that_never_reads_its_answers_is_disconnected() {
    let relp = free_port();
    // Frames over max_frame are answered at once, unstored: many answers, quickly.
    let server = syslog_server(&format!(
        "relp = \"127.0.0.1:{relp}\"\nmax_frame = 16\nidle_timeout = \"2s\"\n"
    ));
    let mut stream = TcpStream::connect(("127.0.0.1", relp)).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let offers = "relp_version=0\ncommands=syslog";
    stream
        .write_all(format!("1 open {} {offers}\n", offers.len()).as_bytes())
        .expect("send");
    let started = std::time::Instant::now();
    let mut txnr = 2u32;
    let outcome = loop {
        let mut chunk = Vec::with_capacity(64 * 1024);
        for _ in 0..2000 {
            chunk.extend_from_slice(format!("{txnr} syslog 17 xxxxxxxxxxxxxxxxx\n").as_bytes());
            txnr += 1;
        }
        if let Err(err) = stream.write_all(&chunk) {
            break err;
        }
        assert!(
            txnr < 5_000_000,
            "the server kept reading without its answers read"
        );
    };
    // Without a bound on writing answers, the server never reads again: our write times out.
    assert!(
        !matches!(
            outcome.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        "not disconnected after {:?} ({txnr} frames sent): {outcome}",
        started.elapsed()
    );
    assert!(server.healthy(), "{}", server.stderr());
    assert_eq!(counter(&server, "syslog", "timeouts"), 1);
}
