//! Bad configuration: the server refuses to start, and the CLI refuses the edit, with a
//! message naming the file, the line and the value; `check-config` of both programs finds
//! the same errors without starting anything.

use std::net::TcpListener;
use std::process::Command;

use logarchive_tests::{TestServer, agent_bin, free_port, server_bin};

fn start_fails(server: &TestServer) -> String {
    let out = server.cli(&["run"], "");
    assert!(!out.status.success(), "the server should refuse to start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

#[test]
fn bad_users_files_are_refused_with_file_line_and_value() {
    let cases = [
        ("perm = \"elrz\"", "'z'"),
        ("perm = \"elre\"", "appears twice"),
        ("max_upload_rate = \"fast\"", "\"fast\""),
        ("home = \"/../etc\"", "\"/../etc\""),
        ("colour = \"blue\"", "colour"),
        ("enabled = \"yes\"", "enabled"),
    ];
    for (line, needle) in cases {
        let server = TestServer::prepare("");
        std::fs::write(
            server.dir.path().join("users.toml"),
            format!("[[user]]\nname = \"u\"\npassword = \"{HASH}\"\n{line}\n"),
        )
        .unwrap();
        let err = start_fails(&server);
        assert!(err.contains("users.toml:4:"), "{line}: {err}");
        assert!(err.contains(needle), "{line}: {err}");
    }
    let server = TestServer::prepare("");
    std::fs::write(
        server.dir.path().join("users.toml"),
        "[[user]]\nname = \"u\"\npassword = \"plain-secret\"\n",
    )
    .unwrap();
    let err = start_fails(&server);
    assert!(
        err.contains("users.toml:3:") && err.contains("argon2id") && !err.contains("plain-secret"),
        "{err}"
    );
}

#[test]
fn bad_server_config_is_refused_with_file_line_and_value() {
    let cases = [
        ("max_upload_rate = \"2 furlongs\"", "\"2 furlongs\""),
        ("passive_ports = \"60000-50000\"", "60000-50000"),
        ("idle_timeout = \"soon\"", "\"soon\""),
        ("listen = \"nowhere\"", "listen"),
        ("speed = 1", "speed"),
    ];
    for (line, needle) in cases {
        let server = TestServer::prepare(line);
        let err = start_fails(&server);
        assert!(err.contains("server.toml:"), "{line}: {err}");
        assert!(err.contains(needle), "{line}: {err}");
    }
    let server =
        TestServer::prepare("[ftp.tls]\ncert = \"missing.pem\"\nkey = \"missing-key.pem\"");
    let err = start_fails(&server);
    assert!(
        err.contains("missing.pem") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn the_cli_refuses_bad_edits_and_never_takes_a_password_from_argv() {
    let server = TestServer::prepare("");
    server.add_user("kim", "kim-password", &["--perm", "elr"]);
    let before = std::fs::read_to_string(server.dir.path().join("users.toml")).unwrap();
    for args in [
        vec!["user", "set", "kim", "--perm", "elrq"],
        vec!["user", "set", "kim", "--max-upload-rate", "lots"],
        vec!["user", "set", "kim", "--dir", "/elsewhere=elr"],
        vec!["user", "set", "kim", "--home", "/a/../b"],
        vec!["user", "add", "kim", "--password-stdin"],
        vec!["user", "set", "nobody", "--perm", "elr"],
    ] {
        let out = server.cli(&args, "another-password\n");
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(!out.stderr.is_empty());
    }
    assert_eq!(
        std::fs::read_to_string(server.dir.path().join("users.toml")).unwrap(),
        before
    );
    assert!(
        !before.contains("kim-password"),
        "the password is stored hashed"
    );
    // There is no way to give a password on the command line.
    let out = server.cli(&["user", "passwd", "kim", "--password", "x"], "");
    assert!(!out.status.success());
}

fn check(server: &TestServer) -> (bool, String, String) {
    let out = server.cli(&["check-config"], "");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_listeners_and_binds_nothing() {
    let (udp, tcp) = (free_port(), free_port());
    let server = TestServer::prepare_with_sections(
        "",
        &format!(
            "[syslog]\nudp = \"127.0.0.1:{udp}\"\ntcp = \"127.0.0.1:{tcp}\"\n[logger]\nenabled = true\n"
        ),
    );
    server.add_user("kim", "kim-password", &["--perm", "elr"]);
    // Hold the FTP port: `run` could not start now, check-config must not care.
    let held = TcpListener::bind(("127.0.0.1", server.ftp_port)).unwrap();
    let (ok, stdout, stderr) = check(&server);
    assert!(ok, "{stdout}{stderr}");
    for needle in [
        format!("127.0.0.1:{}", server.ftp_port),
        format!("127.0.0.1:{}", server.web_port),
        format!("udp 127.0.0.1:{udp}, tcp 127.0.0.1:{tcp}"),
        "FTPS off".to_owned(),
        "loggers:   on".to_owned(),
        "telemetry: off".to_owned(),
        "users:     1 in".to_owned(),
        "will be created".to_owned(),
    ] {
        assert!(stdout.contains(&needle), "{needle}: {stdout}");
    }
    drop(held);
    // Nothing was bound or created: every port is free, the data dir does not exist.
    for port in [server.web_port, tcp] {
        TcpListener::bind(("127.0.0.1", port)).expect("check-config left a port bound");
    }
    std::net::UdpSocket::bind(("127.0.0.1", udp)).expect("udp port bound");
    assert!(!server.dir.path().join("data").exists());
}

#[test]
fn check_config_names_the_file_line_and_key() {
    // server.toml line 8 is the first line of `extra_ftp`.
    let server = TestServer::prepare("idle_timeout = \"soon\"");
    let (ok, _, stderr) = check(&server);
    assert!(!ok);
    assert!(
        stderr.contains("server.toml:8:")
            && stderr.contains("idle_timeout")
            && stderr.contains("\"soon\""),
        "{stderr}"
    );
    // A bad users file, and a web key without its certificate.
    let server = TestServer::prepare("");
    std::fs::write(
        server.dir.path().join("users.toml"),
        format!("[[user]]\nname = \"u\"\npassword = \"{HASH}\"\nperm = \"elrz\"\n"),
    )
    .unwrap();
    let (ok, _, stderr) = check(&server);
    assert!(
        !ok && stderr.contains("users.toml:4:") && stderr.contains("'z'"),
        "{stderr}"
    );
    // A certificate file that exists but is not one: `run` would fail at the listener.
    let server = TestServer::prepare("[ftp.tls]\ncert = \"bad.pem\"\nkey = \"bad.pem\"");
    std::fs::write(server.dir.path().join("bad.pem"), "not a certificate\n").unwrap();
    let (ok, _, stderr) = check(&server);
    assert!(
        !ok && stderr.contains("bad.pem") && stderr.contains("[ftp.tls] cert"),
        "{stderr}"
    );
    // Two listeners on one port.
    let server = TestServer::prepare_with_sections("", "[syslog]\ntcp = \"0.0.0.0:1\"\n");
    let text = std::fs::read_to_string(&server.config)
        .unwrap()
        .replace("0.0.0.0:1\"", &format!("0.0.0.0:{}\"", server.ftp_port));
    std::fs::write(&server.config, text).unwrap();
    let (ok, _, stderr) = check(&server);
    assert!(
        !ok && stderr.contains("[ftp] listen and [syslog] tcp both use port"),
        "{stderr}"
    );
}

#[test]
fn check_config_without_a_config_checks_the_embedded_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(server_bin())
        .arg("check-config")
        .env_remove("LOGARCHIVE_SERVER_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("embedded defaults") && stdout.contains("0.0.0.0:2121"),
        "{stdout}"
    );
    assert!(
        stdout.contains("0.0.0.0:8080") && stdout.contains("logarchive-data/archive"),
        "{stdout}"
    );
    assert!(!dir.path().join("logarchive-data").exists());
}

#[test]
fn agent_check_config_shows_the_watches_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    std::fs::write(dir.path().join("agent.pass"), "secret-pass\n").unwrap();
    let config = dir.path().join("agent.toml");
    let good = "agent_id = \"n1\"\nstate_dir = \"state\"\n[server]\nhost = \"127.0.0.1\"\nport = 2121\nuser = \"n1\"\npassword_file = \"agent.pass\"\n[upload]\nmax_rate = \"1MiB/s\"\n[[watch]]\ndir = \"logs\"\ninclude = [\"**/*.log\"]\nexclude = [\"**/*.tmp\"]\nremote = \"/n1\"\n";
    let run = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let out = Command::new(agent_bin())
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = run(good);
    assert!(ok, "{stdout}{stderr}");
    for needle in [
        "127.0.0.1:2121 as n1",
        "password from agent.pass",
        "include [**/*.log] exclude [**/*.tmp]",
        "-> /n1",
        "max_rate 1MiB/s",
        "state_dir will be created",
    ] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }
    assert!(!stdout.contains("secret-pass") && !dir.path().join("state").exists());
    // Line 9 is `max_rate`.
    let (ok, _, stderr) = run(&good.replace("\"1MiB/s\"", "\"fast\""));
    assert!(
        !ok && stderr.contains("agent.toml:9:") && stderr.contains("max_rate"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&good.replace("dir = \"logs\"", "dir = \"missing\""));
    assert!(
        !ok && stderr.contains("missing") && stderr.contains("cannot read the folder"),
        "{stderr}"
    );
}
