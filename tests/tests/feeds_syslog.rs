//! The syslog feed with real senders: util-linux `logger` over UDP and TCP (both
//! framings, both formats), raw sockets for mixed framing and bad input, a UDP flood, and
//! rsyslog forwarding over TCP and TLS (with F-TICKS lines).

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

#[test]
fn rsyslog_forwards_over_tcp_and_tls_with_fticks() {
    let (tcp_port, tls_port) = (free_port(), free_port());
    let mut server = TestServer::prepare_with_sections(
        "",
        &format!(
            "[syslog]\ntcp = \"127.0.0.1:{tcp_port}\"\ntls = \"127.0.0.1:{tls_port}\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n"
        ),
    );
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let ca = server.dir.path().join("cert.pem");
    std::fs::write(&ca, cert.cert.pem()).expect("cert");
    std::fs::write(
        server.dir.path().join("key.pem"),
        cert.signing_key.serialize_pem(),
    )
    .expect("key");
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
