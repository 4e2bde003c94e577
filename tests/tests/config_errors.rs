//! Bad configuration: the server refuses to start, and the CLI refuses the edit, with a
//! message naming the file, the line and the value.

use logarchive_tests::TestServer;

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
