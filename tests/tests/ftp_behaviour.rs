//! The FTP server's promises beyond single permission letters: confinement to the home,
//! per-folder overrides, atomic uploads, REST resume, live user edits, failed-login
//! blocking, FTPS, the catalog and reindex, and a clean exit on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use logarchive_tests::{
    TestServer, ftp_login, ftp_retr, on_s3, run, sha256_file, sha256_hex, skip_on_s3, wait_until,
    write_tls_files,
};

const PW: &str = "behaviour-password";

#[tokio::test(flavor = "multi_thread")]
async fn users_cannot_leave_their_home() {
    let server = TestServer::start_with(
        "",
        &[
            ("alice", PW, &["--perm", "elrw"]),
            ("bob", PW, &["--perm", "elrw"]),
        ],
    );
    server.plant("bob/secret.txt", b"bob's");
    server.plant_dir("alice");
    // A link placed in the tree by hand must not lead outside the home either.
    if !skip_on_s3(
        "users_cannot_leave_their_home, its symbolic links",
        "a bucket has no links",
    ) {
        std::os::unix::fs::symlink(server.archive("bob"), server.archive("alice/link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", server.archive("alice/passwd")).unwrap();
    }

    let mut ftp = ftp_login(&server.addr(), "alice", PW).await.unwrap();
    for path in [
        "../bob/secret.txt",
        "/../bob/secret.txt",
        "../../../../etc/passwd",
        "link/secret.txt",
        "passwd",
        "/../../data/archive/bob/secret.txt",
        "%2e%2e/bob/secret.txt",
        "..%2Fbob%2Fsecret.txt",
        "..\\bob\\secret.txt",
    ] {
        assert!(
            ftp_retr(&mut ftp, path).await.is_err(),
            "RETR {path} must fail"
        );
    }
    // `..` stops at the home: CWD .. stays in it, and what is seen there is alice's.
    ftp.cwd("../../..").await.unwrap();
    assert_eq!(ftp.pwd().await.unwrap(), "/");
    let names = ftp.nlst(None).await.unwrap();
    assert!(
        !names.iter().any(|n| n.contains("secret") || n == "bob"),
        "{names:?}"
    );
    // Uploads cannot escape either: the file lands inside alice's home or nowhere.
    let _ = ftp.put_file("../bob/planted.txt", &mut &b"x"[..]).await;
    assert!(!server.archived_exists("bob/planted.txt"));
    assert!(
        ftp.put_file("../../escape.txt", &mut &b"x"[..])
            .await
            .is_ok()
    );
    assert!(server.archived("alice/escape.txt").is_some());
    assert!(!server.dir.path().join("data/escape.txt").exists());
    // The server's own folder is out of reach even for a user whose home is the root.
    let _ = ftp.quit().await;
    server.add_user("root_user", PW, &["--home", "/", "--perm", "elrw"]);
    // Added while the server runs: usable once the server has re-read users.toml.
    let mut root = None;
    for _ in 0..100 {
        if let Ok(ftp) = ftp_login(&server.addr(), "root_user", PW).await {
            root = Some(ftp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut root = root.unwrap();
    assert!(root.cwd(".logarchive").await.is_err());
    assert!(
        !root
            .nlst(None)
            .await
            .unwrap()
            .iter()
            .any(|n| n.contains(".logarchive"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn per_folder_overrides_most_specific_wins() {
    let server = TestServer::start_with(
        "",
        &[(
            "carol",
            PW,
            &[
                "--perm",
                "elrf",
                "--dir",
                "/carol/inbox=elrwmf",
                "--dir",
                "/carol/inbox/locked=el",
            ],
        )],
    );
    for dir in ["carol/inbox/locked", "carol/other"] {
        server.plant_dir(dir);
    }
    let mut ftp = ftp_login(&server.addr(), "carol", PW).await.unwrap();
    assert!(
        ftp.put_file("other/x.txt", &mut &b"x"[..]).await.is_err(),
        "no w outside inbox"
    );
    ftp.put_file("inbox/x.txt", &mut &b"x"[..]).await.unwrap();
    ftp.mkdir("inbox/sub").await.unwrap();
    assert!(
        ftp.put_file("inbox/locked/x.txt", &mut &b"x"[..])
            .await
            .is_err(),
        "locked wins"
    );
    assert!(ftp.mkdir("inbox/locked/sub").await.is_err());
    assert!(server.archived("carol/inbox/x.txt").is_some());
    assert!(!server.archived_exists("carol/other/x.txt"));
    assert!(!server.archived_exists("carol/inbox/locked/x.txt"));
    // Folders with their own rights cannot be moved away from them, nor replaced.
    let err = ftp.rename("inbox", "moved").await.unwrap_err().to_string();
    assert!(err.contains("has its own permissions"), "{err}");
    assert!(ftp.rename("other", "inbox/locked/other").await.is_err());
    ftp.rename("other", "other2").await.unwrap();
    assert!(server.archived_is_dir("carol/inbox/locked"));
}

#[test]
fn killed_client_leaves_no_file_under_the_final_name() {
    let server = TestServer::start_with("", &[("dave", PW, &["--perm", "elrw"])]);
    // Large and slow enough that the kill comes long before the end, and that bytes are in
    // the store by then on S3 too (the server sends a part once it has 8 MiB).
    let source = server.dir.path().join("big.bin");
    std::fs::write(&source, vec![7u8; 24 << 20]).unwrap();
    let url = format!("ftp://{}/big.bin", server.addr());
    let mut curl = Command::new("curl")
        .args([
            "-sS",
            "--limit-rate",
            "2M",
            "-u",
            &format!("dave:{PW}"),
            "-T",
        ])
        .arg(&source)
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl");
    // Wait until the upload is really under way (bytes in the partial area, or the parts
    // of a multipart upload), then kill -9.
    let started = wait_until(Duration::from_secs(20), || {
        server
            .uploads_in_progress()
            .iter()
            .any(|&bytes| bytes > 100_000)
    });
    assert!(started, "upload did not start: {}", server.stderr());
    curl.kill().unwrap();
    curl.wait().unwrap();
    // The server notices the cut, discards the partial and never shows big.bin.
    let cleaned = wait_until(Duration::from_secs(10), || {
        server.uploads_in_progress().is_empty()
    });
    assert!(cleaned, "partial upload not discarded");
    assert!(
        !server.archived_exists("dave/big.bin"),
        "a cut upload appeared under its final name"
    );
    let list = run(
        "curl",
        &[
            "-sS",
            "-u",
            &format!("dave:{PW}"),
            &format!("ftp://{}/", server.addr()),
        ],
    );
    assert!(!String::from_utf8_lossy(&list.stdout).contains("big.bin"));
}

/// `SITE NOREPLACE` and `ALLO <bytes>` (what the agent sends before storing a new file
/// under its final name), with curl sending them as quoted commands before its STOR.
#[test]
fn noreplace_keeps_stored_files_and_allo_refuses_an_upload_of_another_size() {
    let server = TestServer::start_with("", &[("nora", PW, &["--perm", "elrw"])]);
    let payload = server.dir.path().join("payload.log");
    let upload = |name: &str, content: &[u8], quoted: &[&str]| {
        std::fs::write(&payload, content).unwrap();
        let mut args = vec!["-sSv", "-u", "nora:behaviour-password"];
        for command in quoted {
            args.extend(["-Q", command]);
        }
        let url = format!("ftp://{}/{name}", server.addr());
        args.extend(["-T", payload.to_str().unwrap(), &url]);
        run("curl", &args)
    };

    // Without it, a STOR replaces, as in pyftpdlib.
    assert!(upload("app.log", b"first\n", &[]).status.success());
    assert!(upload("app.log", b"second\n", &[]).status.success());
    assert_eq!(server.archived("nora/app.log").unwrap(), b"second\n");

    // With it, a STOR announced by ALLO leaves the stored file and says why; a new name is
    // stored; a STOR without ALLO still replaces (the agent's temporary files).
    let refused = upload("app.log", b"third\n", &["SITE NOREPLACE", "ALLO 6"]);
    assert!(
        !refused.status.success(),
        "a STOR replaced a file after SITE NOREPLACE"
    );
    assert_eq!(server.archived("nora/app.log").unwrap(), b"second\n");
    let exchange = String::from_utf8_lossy(&refused.stderr);
    assert!(
        exchange.contains("550 ") && exchange.contains("/app.log already exists"),
        "{exchange}"
    );
    assert!(
        upload("new.log", b"third\n", &["SITE NOREPLACE", "ALLO 6"])
            .status
            .success()
    );
    assert_eq!(server.archived("nora/new.log").unwrap(), b"third\n");
    assert!(
        upload("new.log", b"fourth\n", &["SITE NOREPLACE"])
            .status
            .success()
    );
    assert_eq!(server.archived("nora/new.log").unwrap(), b"fourth\n");

    // ALLO: the announced size is stored; any other size is not committed.
    assert!(upload("sized.log", b"12345", &["ALLO 5"]).status.success());
    assert_eq!(server.archived("nora/sized.log").unwrap(), b"12345");
    let short = upload("short.log", b"1234", &["ALLO 5"]);
    assert!(
        !short.status.success(),
        "an upload shorter than its ALLO was accepted"
    );
    let exchange = String::from_utf8_lossy(&short.stderr);
    assert!(
        exchange.contains("4 bytes arrived, ALLO announced 5"),
        "{exchange}"
    );
    assert!(!server.archived_exists("nora/short.log"));
    let long = upload("sized.log", b"123456", &["ALLO 5"]);
    assert!(
        !long.status.success(),
        "an upload longer than its ALLO was accepted"
    );
    assert_eq!(server.archived("nora/sized.log").unwrap(), b"12345");
    assert!(server.stderr().contains("not the size announced by ALLO"));
    // It counts for one transfer only.
    assert!(upload("after.log", b"1234", &[]).status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_resume_gives_a_byte_identical_file() {
    let server = TestServer::start_with("", &[("erin", PW, &["--perm", "elrwa"])]);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let half = data.len() / 2;
    // suppaftp: first half, then REST + STOR of the rest.
    let mut ftp = ftp_login(&server.addr(), "erin", PW).await.unwrap();
    ftp.put_file("resumed.bin", &mut &data[..half])
        .await
        .unwrap();
    ftp.resume_transfer(half).await.unwrap();
    ftp.put_file("resumed.bin", &mut &data[half..])
        .await
        .unwrap();
    assert_eq!(server.archived("erin/resumed.bin").unwrap(), data);
    assert_eq!(ftp_retr(&mut ftp, "resumed.bin").await.unwrap(), data);
    // REST then RETR downloads the tail.
    ftp.resume_transfer(half).await.unwrap();
    assert_eq!(
        ftp_retr(&mut ftp, "resumed.bin").await.unwrap(),
        &data[half..]
    );
    let _ = ftp.quit().await;

    // lftp: `put -c` continues a partial upload from the server's size.
    let local = server.dir.path().join("whole.bin");
    std::fs::write(&local, &data).unwrap();
    server.plant("erin/lftp.bin", &data[..1_000_000]);
    let script = format!(
        "set ftp:ssl-allow no; set cmd:fail-exit yes; put -c {} -o lftp.bin; quit",
        local.display()
    );
    let out = run(
        "lftp",
        &[
            "-u",
            &format!("erin,{PW}"),
            "-p",
            &server.ftp_port.to_string(),
            "-e",
            &script,
            "127.0.0.1",
        ],
    );
    assert!(
        out.status.success(),
        "lftp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sha256_hex(&server.archived("erin/lftp.bin").unwrap()),
        sha256_file(&local)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn user_edits_apply_without_restart() {
    let server = TestServer::start_with("", &[("frank", PW, &["--perm", "elrw"])]);
    let mut ftp = ftp_login(&server.addr(), "frank", PW).await.unwrap();
    ftp.put_file("one.txt", &mut &b"1"[..]).await.unwrap();
    let out = server.cli(&["user", "set", "frank", "--perm", "elr"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same session loses 'w' as soon as the server has re-read the file.
    let mut refused = false;
    for _ in 0..100 {
        if ftp.put_file("two.txt", &mut &b"2"[..]).await.is_err() {
            refused = true;
            break;
        }
        let _ = ftp.rm("two.txt").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the perm change did not apply");
    // A removed user is refused at once, also in a running session.
    let out = server.cli(&["user", "remove", "frank"], "");
    assert!(out.status.success());
    let mut gone = false;
    for _ in 0..100 {
        if ftp.list(None).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone);
    assert!(ftp_login(&server.addr(), "frank", PW).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_failed_logins_block_that_user_from_that_address() {
    let server = TestServer::start_with(
        "max_failed_logins = 5\nfailed_login_block = \"5m\"",
        &[("gina", PW, &[]), ("hank", PW, &[])],
    );
    for _ in 0..5 {
        assert!(
            ftp_login(&server.addr(), "gina", "wrong-password")
                .await
                .is_err()
        );
    }
    // Now even the right password is refused for gina from this address...
    assert!(ftp_login(&server.addr(), "gina", PW).await.is_err());
    // ...while other users are not affected.
    ftp_login(&server.addr(), "hank", PW).await.unwrap();
}

fn tls_server(required: bool) -> (TestServer, std::path::PathBuf) {
    let mut server = TestServer::prepare(&format!(
        "[ftp.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nrequired = {required}"
    ));
    let ca = write_tls_files(server.dir.path());
    server.add_user("ivy", PW, &["--perm", "elrw"]);
    server.start();
    (server, ca)
}

fn curl_upload(server: &TestServer, name: &str, extra: &[&str]) -> bool {
    let file = server.dir.path().join("payload.txt");
    std::fs::write(&file, b"over the wire\n").unwrap();
    let url = format!("ftp://{}/{name}", server.addr());
    let mut args = vec![
        "-sS",
        "-u",
        "ivy:behaviour-password",
        "-T",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    run("curl", &args).status.success()
}

#[test]
fn ftps_required_refuses_plaintext() {
    let (server, ca) = tls_server(true);
    let ca = ca.to_str().unwrap();
    assert!(
        !curl_upload(&server, "plain.txt", &[]),
        "plaintext must be refused"
    );
    assert!(!server.archived_exists("ivy/plain.txt"));
    assert!(curl_upload(
        &server,
        "secure.txt",
        &["--ssl-reqd", "--cacert", ca]
    ));
    assert_eq!(
        server.archived("ivy/secure.txt").unwrap(),
        b"over the wire\n"
    );
}

#[test]
fn ftps_optional_serves_both() {
    let (server, ca) = tls_server(false);
    let ca = ca.to_str().unwrap();
    assert!(curl_upload(&server, "plain.txt", &[]));
    assert!(curl_upload(
        &server,
        "secure.txt",
        &["--ssl-reqd", "--cacert", ca]
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn reindex_reproduces_the_catalog_and_sigterm_exits_cleanly() {
    let mut server = TestServer::start_with("", &[("jack", PW, &["--perm", "elrwafdm"])]);
    let mut ftp = ftp_login(&server.addr(), "jack", PW).await.unwrap();
    ftp.mkdir("logs").await.unwrap();
    ftp.put_file("logs/a.log", &mut &b"alpha\n"[..])
        .await
        .unwrap();
    ftp.put_file("logs/b.log", &mut &b"beta\n"[..])
        .await
        .unwrap();
    ftp.append_file("logs/b.log", &mut &b"more beta\n"[..])
        .await
        .unwrap();
    ftp.put_file("gone.log", &mut &b"soon deleted\n"[..])
        .await
        .unwrap();
    ftp.rm("gone.log").await.unwrap();
    ftp.rename("logs/a.log", "logs/renamed.log").await.unwrap();
    let _ = ftp.quit().await;
    assert!(server.stop(), "SIGTERM should exit 0: {}", server.stderr());

    let before = server.cli(&["catalog", "--json"], "");
    assert!(
        before.status.success(),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
    let before = String::from_utf8(before.stdout).unwrap();
    let lines: Vec<&str> = before.lines().collect();
    assert_eq!(lines.len(), 2, "{before}");
    assert!(
        before.contains("\"/jack/logs/renamed.log\"") && before.contains("\"uploader\":\"jack\"")
    );
    let b_log = server.archived("jack/logs/b.log").unwrap();
    assert!(
        before.contains(&sha256_hex(&b_log)),
        "catalog hash of the appended file"
    );

    let out = server.cli(&["reindex"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = String::from_utf8(server.cli(&["catalog", "--json"], "").stdout).unwrap();
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_are_closed() {
    let server = TestServer::start_with("idle_timeout = \"1s\"", &[("mona", PW, &[])]);
    let mut ftp = ftp_login(&server.addr(), "mona", PW).await.unwrap();
    ftp.noop().await.unwrap();
    // The server closes the control connection after a second without a command (any
    // command would restart the clock, so this waits without asking).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let closed = ftp.pwd().await.is_err();
    assert!(closed, "an idle session stayed open");
}

#[test]
fn sigterm_lets_a_running_upload_finish() {
    let mut server = TestServer::start_with(
        "shutdown_grace = \"10s\"",
        &[(
            "nora",
            PW,
            &["--perm", "elrw", "--max-upload-rate", "4MiB/s"],
        )],
    );
    // About 5 s at 4 MiB/s; above 8 MiB, so on S3 a part is stored while it runs.
    let source = server.dir.path().join("slow.bin");
    std::fs::write(&source, vec![3u8; 20 << 20]).unwrap();
    let url = format!("ftp://{}/slow.bin", server.addr());
    let curl = Command::new("curl")
        .args(["-sS", "-u", &format!("nora:{PW}"), "-T"])
        .arg(&source)
        .arg(&url)
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    // SIGTERM while the upload is under way.
    assert!(wait_until(Duration::from_secs(20), || {
        !server.uploads_in_progress().is_empty()
    }));
    assert!(server.stop(), "exit 0 after the grace: {}", server.stderr());
    let out = curl.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the upload was cut: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        server.archived("nora/slow.bin") == Some(std::fs::read(&source).unwrap()),
        "the upload is not stored whole"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn passwd_changes_the_password() {
    let server = TestServer::start_with("", &[("olga", PW, &[])]);
    let out = server.cli(
        &["user", "passwd", "olga", "--password-stdin"],
        "a-new-password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut changed = false;
    for _ in 0..100 {
        if ftp_login(&server.addr(), "olga", "a-new-password")
            .await
            .is_ok()
        {
            changed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(changed);
    assert!(ftp_login(&server.addr(), "olga", PW).await.is_err());
}

/// Plain, unthrottled transfers move between the socket and the file inside the kernel
/// (splice up, sendfile down); FTPS data goes through memory. Both are byte-identical,
/// including a download resumed with REST, and the server's log says which path each took.
#[test]
fn plain_transfers_move_in_the_kernel_and_ftps_through_memory() {
    let (server, ca) = tls_server(false);
    let ca = ca.to_str().unwrap();
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 13 % 253) as u8).collect();
    let source = server.dir.path().join("pattern.bin");
    std::fs::write(&source, &data).unwrap();
    let base = format!("ftp://{}", server.addr());
    let transfer = |args: &[&str]| {
        let mut all = vec!["-sS", "-u", "ivy:behaviour-password"];
        all.extend_from_slice(args);
        // -v: which exchange failed, if one does (once seen in CI under load: "wrong
        // version number" on an FTPS upload, not reproduced since).
        all.push("-v");
        let out = run("curl", &all);
        assert!(
            out.status.success(),
            "curl {args:?}: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.stderr()
        );
    };
    let source = source.to_str().unwrap();
    transfer(&["-T", source, &format!("{base}/plain.bin")]);
    transfer(&[
        "--ssl-reqd",
        "--cacert",
        ca,
        "-T",
        source,
        &format!("{base}/tls.bin"),
    ]);
    for name in ["plain.bin", "tls.bin"] {
        assert!(
            server.archived(&format!("ivy/{name}")).as_ref() == Some(&data),
            "{name} differs from what was sent"
        );
    }
    let plain_copy = server.dir.path().join("plain.down");
    let tls_copy = server.dir.path().join("tls.down");
    let tail_copy = server.dir.path().join("tail.down");
    transfer(&[
        "-o",
        plain_copy.to_str().unwrap(),
        &format!("{base}/plain.bin"),
    ]);
    transfer(&[
        "--ssl-reqd",
        "--cacert",
        ca,
        "-o",
        tls_copy.to_str().unwrap(),
        &format!("{base}/tls.bin"),
    ]);
    transfer(&[
        "-C",
        "1234567",
        "-o",
        tail_copy.to_str().unwrap(),
        &format!("{base}/plain.bin"),
    ]);
    assert!(
        std::fs::read(&plain_copy).unwrap() == data,
        "plain download differs"
    );
    assert!(
        std::fs::read(&tls_copy).unwrap() == data,
        "FTPS download differs"
    );
    assert!(
        std::fs::read(&tail_copy).unwrap() == data[1_234_567..],
        "resumed download differs"
    );
    // One log line per transfer, naming its path through the server. On S3 every byte
    // passes through memory (there is no local file to splice into or send from).
    let log = server.stderr();
    let lines = |event: &str, path: &str| {
        log.lines()
            .filter(|l| l.contains(event) && l.contains(&format!("data_path={path}")))
            .count()
    };
    let (kernel_up, kernel_down) = if on_s3() { (0, 0) } else { (1, 2) };
    assert_eq!(lines("upload", "Kernel"), kernel_up, "{log}");
    assert_eq!(lines("upload", "Memory"), 2 - kernel_up, "{log}");
    assert_eq!(lines("download", "Kernel"), kernel_down, "{log}");
    assert_eq!(lines("download", "Memory"), 3 - kernel_down, "{log}");
}
