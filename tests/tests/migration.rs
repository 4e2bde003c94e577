//! Migration from the Python log archiver: its users log in with their old passwords and
//! exactly their old letters, a bad letter stops the import before anything is written, and
//! an agent imported from its config and upload record continues where the old agent
//! stopped — what the server already has is not sent again, the rest arrives.
//!
//! The old installation is `fixtures/migration/` (our own files, in the old program's
//! shapes, with a Windows upload record).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use logarchive_tests::{TestAgent, TestServer, agent_bin, ftp_login, wait_until};
use suppaftp::FtpError;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/migration")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn imported_users_log_in_with_their_old_passwords_and_letters() {
    let mut server = TestServer::prepare("");
    let record = fixtures().join("userRecord.json");
    let server_config = fixtures().join("ServerConfig.txt");
    let out = server.cli(
        &[
            "import-users",
            record.to_str().unwrap(),
            "--server-config",
            server_config.to_str().unwrap(),
            "--admin",
            "admin",
        ],
        "",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("3 users written"), "{stdout}");
    // Anonymous access is not imported, and the import says so.
    assert!(
        stderr.contains("\"anonymous\"") && stderr.contains("none was imported"),
        "{stderr}"
    );

    let users = std::fs::read_to_string(server.dir.path().join("users.toml")).unwrap();
    for secret in ["old-admin-secret", "node07-pass", "123456"] {
        assert!(!users.contains(secret) && !stdout.contains(secret) && !stderr.contains(secret));
    }
    assert_eq!(users.matches("$argon2id$").count(), 3, "{users}");
    // ServerConfig's swapped names: MAX_DOWNLOAD_SPEED (1 MiB/s) limited the uploads.
    assert!(users.contains("max_upload_rate = \"1MiB/s\""), "{users}");
    assert!(
        users.contains("max_download_rate = \"300KiB/s\""),
        "{users}"
    );
    let list = server.cli(&["user", "list", "--json"], "");
    let list = text(&list.stdout);
    assert!(
        list.contains("\"name\":\"viewer\"") && list.contains("\"home\":\"/\""),
        "{list}"
    );

    server.start();
    std::fs::create_dir_all(server.archive("node07")).unwrap();
    std::fs::write(server.archive("node07/old.txt"), b"from the old archive\n").unwrap();

    // viewer ("elrr" in the old file: the repeated letter counts once) may list and read,
    // not store.
    let mut viewer = ftp_login(&server.addr(), "viewer", "123456").await.unwrap();
    let names = viewer.nlst(Some("/node07")).await.unwrap();
    assert!(names.iter().any(|n| n.ends_with("old.txt")), "{names:?}");
    let refused = viewer
        .put_file("/node07/new.txt", &mut &b"x"[..])
        .await
        .unwrap_err();
    match refused {
        FtpError::UnexpectedResponse(reply) => {
            let body = text(&reply.body);
            assert!(body.starts_with("550") && body.contains("'w'"), "{body}");
        }
        other => panic!("expected a 550 refusal, got {other}"),
    }
    assert!(!server.archive("node07/new.txt").exists());
    // node07 (elradfmwM) may store.
    let mut node = ftp_login(&server.addr(), "node07", "node07-pass")
        .await
        .unwrap();
    node.put_file("/node07/new.txt", &mut &b"stored\n"[..])
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(server.archive("node07/new.txt")).unwrap(),
        b"stored\n"
    );
    // A wrong password and the old server's anonymous login are refused.
    assert!(
        ftp_login(&server.addr(), "node07", "wrong-pass")
            .await
            .is_err()
    );
    assert!(
        ftp_login(&server.addr(), "anonymous", "guest@example.org")
            .await
            .is_err()
    );
}

#[test]
fn a_bad_letter_names_the_user_and_letter_and_nothing_is_written() {
    let server = TestServer::prepare("");
    let users_file = server.dir.path().join("users.toml");
    let bad = fixtures().join("userRecord-bad-letter.json");
    let out = server.cli(&["import-users", bad.to_str().unwrap()], "");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("user \"viewer\"") && stderr.contains("letter 'x'"),
        "{stderr}"
    );
    assert!(!users_file.exists(), "nothing may be written");

    // With users already there: the file stays byte for byte as it was.
    server.add_user("kim", "kim-password", &["--perm", "elr"]);
    let before = std::fs::read(&users_file).unwrap();
    let out = server.cli(&["import-users", bad.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&users_file).unwrap(), before);

    // An existing user is replaced only with --replace.
    let good = fixtures().join("userRecord.json");
    let out = server.cli(&["import-users", good.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = server.cli(&["import-users", good.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--replace"),
        "{}",
        text(&out.stderr)
    );
    let out = server.cli(&["import-users", good.to_str().unwrap(), "--replace"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let users = std::fs::read_to_string(&users_file).unwrap();
    assert_eq!(users.matches("name = ").count(), 4, "{users}");

    // A user named "anonymous" is not turned into an account silently.
    let anonymous = server.dir.path().join("anonymous.json");
    std::fs::write(
        &anonymous,
        r#"{"anonymous": {"passwd": "x", "perm": "elr"}}"#,
    )
    .unwrap();
    let before = std::fs::read(&users_file).unwrap();
    let out = server.cli(&["import-users", anonymous.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no anonymous access"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&users_file).unwrap(), before);

    // --stdout prints the users and writes nothing.
    let before = std::fs::read(&users_file).unwrap();
    let out = server.cli(&["import-users", good.to_str().unwrap(), "--stdout"], "");
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).matches("[[user]]").count(), 3);
    assert_eq!(std::fs::read(&users_file).unwrap(), before);
}

/// Copies a folder tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Lines of the server's upload journal that mention `name` (uploads, also to the
/// temporary name, and renames).
fn journal_mentions(server: &TestServer, name: &str) -> usize {
    let dir = server.archive(".logarchive/journal");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .map(|text| text.lines().filter(|l| l.contains(name)).count())
                .sum()
        })
        .unwrap_or(0)
}

const PWS: &str = "Logs/PWS/20240723/PWS_UI_20240723_111325_1.txt";
const BLOCK: &str = "Logs/plc/20240723/BlockPlc_20240723_134331_1.txt";
const SIGNAL: &str = "Logs/plc/20240723/SignalPlc_20240723_111707_1.txt";
const FRESH: &str = "Logs/new/fresh_20240724_090000_1.txt";

#[tokio::test]
async fn an_imported_agent_sends_only_what_the_server_lacks() {
    let mut server = TestServer::prepare("");
    let record = fixtures().join("userRecord.json");
    let out = server.cli(&["import-users", record.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    server.start();

    // The old agent's machine: its folder, config (pointing at this server) and record.
    let old = tempfile::tempdir().unwrap();
    copy_tree(
        &fixtures().join("AgentLogFolder"),
        &old.path().join("AgentLogFolder"),
    );
    std::fs::copy(
        fixtures().join("uploadRcd.json"),
        old.path().join("uploadRcd.json"),
    )
    .unwrap();
    let config = std::fs::read_to_string(fixtures().join("AgentConfig.txt"))
        .unwrap()
        .replace(
            "FTP_SER_PORT:8081",
            &format!("FTP_SER_PORT:{}", server.ftp_port),
        );
    std::fs::write(old.path().join("AgentConfig.txt"), config).unwrap();
    let local = |rel: &str| old.path().join("AgentLogFolder").join(rel);

    // What the old agent had sent: two files whole, one that differs on the server.
    let mut ftp = ftp_login(&server.addr(), "node07", "node07-pass")
        .await
        .unwrap();
    for dir in [
        "/node07",
        "/node07/Logs",
        "/node07/Logs/PWS",
        "/node07/Logs/PWS/20240723",
    ] {
        ftp.mkdir(dir).await.unwrap();
    }
    for dir in ["/node07/Logs/plc", "/node07/Logs/plc/20240723"] {
        ftp.mkdir(dir).await.unwrap();
    }
    for rel in ["testLogfile.txt", PWS] {
        let bytes = std::fs::read(local(rel)).unwrap();
        ftp.put_file(&format!("/node07/{rel}"), &mut &bytes[..])
            .await
            .unwrap();
    }
    ftp.put_file(&format!("/node07/{BLOCK}"), &mut &b"cut short\n"[..])
        .await
        .unwrap();
    ftp.quit().await.unwrap();
    let mtime = |rel: &str| {
        std::fs::metadata(server.archive(&format!("node07/{rel}")))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = [mtime("testLogfile.txt"), mtime(PWS)];
    let journal_before = [
        journal_mentions(&server, "testLogfile.txt"),
        journal_mentions(&server, "PWS_UI_20240723_111325_1.txt"),
    ];
    assert_eq!(journal_before, [1, 1]);

    // The import.
    let agent_dir = tempfile::tempdir().unwrap();
    let agent_toml = agent_dir.path().join("etc/agent.toml");
    let import = |config: &Path| {
        Command::new(agent_bin())
            .arg("import")
            .arg("--config")
            .arg(config)
            .arg("--record")
            .arg(old.path().join("uploadRcd.json"))
            .arg("--output")
            .arg(&agent_toml)
            .arg("--state-dir")
            .arg(agent_dir.path().join("state"))
            .output()
            .unwrap()
    };
    // A bad value is named by file, line and key; an unknown key by file and line; an
    // unreachable server writes nothing.
    let broken = old.path().join("Broken.txt");
    let good_text = std::fs::read_to_string(old.path().join("AgentConfig.txt")).unwrap();
    std::fs::write(
        &broken,
        format!("{good_text}SPEED:5\n").replace("UPLOAD_INV:10", "UPLOAD_INV:often"),
    )
    .unwrap();
    let out = import(&broken);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("Broken.txt:22:UPLOAD_INV: \"often\""),
        "{stderr}"
    );
    let unreachable = good_text.replace(
        &format!("FTP_SER_PORT:{}", server.ftp_port),
        &format!("FTP_SER_PORT:{}", logarchive_tests::free_port()),
    );
    std::fs::write(&broken, format!("{unreachable}SPEED:5\n")).unwrap();
    let out = import(&broken);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("Broken.txt:23: unknown key SPEED"),
        "{stderr}"
    );
    assert!(
        stderr.contains("was not written") && !stderr.contains("node07-pass"),
        "{stderr}"
    );
    assert!(!agent_toml.exists() && !agent_dir.path().join("etc/agent.pass").exists());
    let out = import(&old.path().join("AgentConfig.txt"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("2 marked as sent"), "{stdout}");
    assert!(
        stdout.contains("BlockPlc_20240723_134331_1.txt") && stdout.contains("has 10 bytes"),
        "the differing file is reported: {stdout}"
    );
    assert!(
        stdout.contains("SignalPlc_20240723_111707_1.txt"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Deleted_20240720_000000_1.txt: not on disk"),
        "{stdout}"
    );
    let toml = std::fs::read_to_string(&agent_toml).unwrap();
    assert!(toml.contains("remote = \"/node07\""), "{toml}");
    for output in [&toml, &stdout, &stderr] {
        assert!(
            !output.contains("node07-pass"),
            "the password leaked: {output}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let password_file = agent_dir.path().join("etc/agent.pass");
    let mode = std::fs::metadata(&password_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(&password_file).unwrap(),
        "node07-pass\n"
    );

    // The agent on the generated config.
    let log_dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start_existing(log_dir, agent_toml);
    let arrived = wait_until(Duration::from_secs(40), || {
        [FRESH, SIGNAL, BLOCK].iter().all(|rel| {
            std::fs::read(server.archive(&format!("node07/{rel}"))).ok()
                == std::fs::read(local(rel)).ok()
        })
    });
    assert!(arrived, "agent log: {}", agent.stderr());
    // One more pass over every file: a new file is seen (inotify) and sent, so a resend
    // of the old ones would have happened by now too.
    std::fs::write(local("Logs/new/after_1.txt"), b"written after the import\n").unwrap();
    let passed = wait_until(Duration::from_secs(30), || {
        server.archive("node07/Logs/new/after_1.txt").exists()
    });
    assert!(passed, "agent log: {}", agent.stderr());

    // Not sent again: no new journal line, same modification time.
    assert_eq!([mtime("testLogfile.txt"), mtime(PWS)], before);
    assert_eq!(
        [
            journal_mentions(&server, "testLogfile.txt"),
            journal_mentions(&server, "PWS_UI_20240723_111325_1.txt"),
        ],
        journal_before,
        "agent log: {}",
        agent.stderr()
    );
    // The differing copy was kept as a version, and the .csv (not LOG_PF) stayed home.
    let versions = std::fs::read_dir(server.archive("node07/Logs/plc/20240723"))
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("BlockPlc_20240723_134331_1.txt.")
        })
        .count();
    assert_eq!(versions, 1);
    assert!(
        !server
            .archive("node07/Logs/plc/20240723/readings.csv")
            .exists()
    );
}
