//! The catalog equals a fresh reindex after whatever the soak under faults did to the
//! server (issue 6): a SIGKILL between an archive change and its catalog step, and a
//! catalog whose disk filled up (sled 0.34 refuses every write after its first `ENOSPC`
//! until its database is reopened). Real server, real FTP and HTTP clients; the crashed
//! state is made on disk exactly as a kill at that point leaves it, so the test does not
//! depend on the timing of a kill.

use std::collections::BTreeSet;
use std::time::Duration;

use logarchive_tests::soak::disk::SmallDisk;
use logarchive_tests::soak::faults::collect_paths;
use logarchive_tests::{TestServer, ftp_login, run, wait_until};

const PW: &str = "password-1";

/// The file names `/api/search?q=<query>` shows to `node`.
fn searched(server: &TestServer, query: &str) -> BTreeSet<String> {
    let url = format!(
        "http://127.0.0.1:{}/api/search?q={query}&limit=1000",
        server.web_port
    );
    let out = run("curl", &["-sS", "-f", "-u", &format!("node:{PW}"), &url]);
    assert!(
        out.status.success(),
        "search: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("search JSON");
    let mut paths = Vec::new();
    collect_paths(&value, &mut paths);
    paths
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_owned())
        .collect()
}

/// `/healthz`: status code and body.
fn health(server: &TestServer) -> (String, String) {
    let url = format!("http://127.0.0.1:{}/healthz", server.web_port);
    let out = run("curl", &["-sS", "-w", "\n%{http_code}", &url]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (code.to_owned(), body.to_owned())
}

/// Stops the server, then `catalog --json` must equal itself after `reindex`.
fn assert_catalog_equals_reindex(server: &mut TestServer) {
    assert!(server.stop(), "clean stop: {}", server.stderr());
    let catalog = server.cli(&["catalog", "--json"], "");
    let reindex = server.cli(&["reindex"], "");
    assert!(
        reindex.status.success(),
        "reindex: {}",
        String::from_utf8_lossy(&reindex.stderr)
    );
    let reindexed = server.cli(&["catalog", "--json"], "");
    let (catalog, reindexed) = (
        String::from_utf8_lossy(&catalog.stdout).into_owned(),
        String::from_utf8_lossy(&reindexed.stdout).into_owned(),
    );
    assert!(!catalog.is_empty(), "empty catalog");
    assert_eq!(
        catalog,
        reindexed,
        "the catalog differs from a fresh reindex\nserver log:\n{}",
        server.stderr()
    );
}

fn node_server() -> TestServer {
    let server = TestServer::prepare("");
    server.add_user("node", PW, &["--home", "/node", "--perm", "elrwadfm"]);
    server
}

#[tokio::test]
async fn a_server_killed_between_archive_and_catalog_steps_catches_up_at_start() {
    let mut server = node_server();
    server.start();
    let mut ftp = ftp_login(&server.addr(), "node", PW).await.expect("login");
    // The agent's way: a hidden temporary name, renamed once complete.
    for (name, bytes) in [
        (".a.log.logarchive-part", &b"alpha\n"[..]),
        ("b.log", b"beta\n"),
        ("c.log", b"gamma\n"),
        ("e.log", b"epsilon\n"),
    ] {
        ftp.put_file(name, &mut &bytes[..]).await.expect("STOR");
    }
    let _ = ftp.quit().await;
    assert!(searched(&server, "logarchive-part").contains(".a.log.logarchive-part"));

    // SIGKILL, and on disk what the archive step of each command did before the kill
    // took the server: RNTO renamed, DELE removed, an APPE and a STOR committed (the
    // last one to a name never seen before), none of them journaled or cataloged.
    server.kill();
    let node = server.archive("/node");
    std::fs::rename(node.join(".a.log.logarchive-part"), node.join("a.log")).expect("rename");
    std::fs::remove_file(node.join("b.log")).expect("remove");
    let mut c = std::fs::OpenOptions::new()
        .append(true)
        .open(node.join("c.log"))
        .expect("open");
    std::io::Write::write_all(&mut c, b"more gamma\n").expect("append");
    drop(c);
    std::fs::write(node.join("d.log"), b"delta\n").expect("write");

    server.start();
    let found = searched(&server, "log");
    assert!(
        found.contains("a.log") && found.contains("c.log") && found.contains("d.log"),
        "{found:?}"
    );
    assert!(
        !found.contains(".a.log.logarchive-part") && !found.contains("b.log"),
        "the catalog still shows what the archive no longer has: {found:?}"
    );
    assert_eq!(health(&server).0, "200");
    // A rename after the restart is followed as always.
    let mut ftp = ftp_login(&server.addr(), "node", PW).await.expect("login");
    ftp.rename("e.log", "f.log").await.expect("rename");
    let _ = ftp.quit().await;
    let found = searched(&server, "log");
    assert!(
        found.contains("f.log") && !found.contains("e.log"),
        "{found:?}"
    );
    assert_catalog_equals_reindex(&mut server);
}

/// The catalog's own filesystem fills up (a real one, ext4 on a loop device or tmpfs:
/// needs root), while the archive and its journal still have room: uploads are stored and
/// journaled, sled's writes fail. The server says so on `/healthz`, and once space is back
/// it reopens the database and catches up, without a restart.
#[tokio::test]
async fn the_catalog_catches_up_after_its_disk_was_full_without_a_restart() {
    let mut server = node_server();
    let base = tempfile::tempdir().expect("temp dir");
    let disk = match SmallDisk::mount(base.path(), 32) {
        Ok(disk) => disk,
        Err(err) => {
            eprintln!("skipped: no filesystem of the test's own (needs root): {err:#}");
            return;
        }
    };
    std::fs::create_dir_all(&server.data_dir).expect("data dir");
    let catalog_dir = disk.mount_point.join("catalog");
    std::fs::create_dir_all(&catalog_dir).expect("catalog dir");
    std::os::unix::fs::symlink(&catalog_dir, server.data_dir.join("catalog")).expect("symlink");
    server.start();
    let mut ftp = ftp_login(&server.addr(), "node", PW).await.expect("login");
    ftp.put_file("before.log", &mut &b"before\n"[..])
        .await
        .expect("STOR");
    assert!(searched(&server, "before").contains("before.log"));

    // Full: every upload still succeeds (stored and journaled), until sled's write fails.
    disk.fill(0).expect("fill");
    let mut sent = Vec::new();
    for n in 0..40 {
        let name = format!("full-{n}.log");
        ftp.put_file(&name, &mut format!("while full {n}\n").as_bytes())
            .await
            .expect("an upload whose journal line was written succeeds");
        sent.push(name);
        if health(&server).0 == "503" {
            break;
        }
    }
    let (code, body) = health(&server);
    assert_eq!(code, "503", "the full catalog disk went unnoticed: {body}");
    assert!(body.contains("catalog behind"), "{body}");

    // Space is back: the catalog catches up by itself.
    disk.free().expect("free");
    assert!(
        wait_until(Duration::from_secs(30), || health(&server).0 == "200"),
        "the catalog did not recover: {:?}\n{}",
        health(&server),
        server.stderr()
    );
    ftp.put_file("after.log", &mut &b"after\n"[..])
        .await
        .expect("STOR");
    let _ = ftp.quit().await;
    let found = searched(&server, "log");
    for name in sent
        .iter()
        .map(String::as_str)
        .chain(["before.log", "after.log"])
    {
        assert!(found.contains(name), "{name} not in the catalog: {found:?}");
    }
    assert_catalog_equals_reindex(&mut server);
    drop(server);
    drop(disk);
    drop(base);
}
