//! The permission matrix: for each of the ten letters, a user with every letter but that
//! one is refused exactly that letter's commands (550 with a reason, nothing changed in
//! the archive) and allowed all the others — with suppaftp and with curl.

use logarchive_tests::{TestServer, ftp_login, ftp_retr, run, sha256_hex};
use suppaftp::FtpError;
use suppaftp::Status;

const LETTERS: [char; 10] = ['e', 'l', 'r', 'a', 'd', 'f', 'm', 'w', 'M', 'T'];
const PASSWORD: &str = "matrix-password";

fn all_but(letter: char) -> String {
    LETTERS.iter().filter(|l| **l != letter).collect()
}

fn user_name(letter: char) -> String {
    // Letters differ by case (m/M): keep user names distinct on any filesystem.
    format!(
        "no_{}{}",
        letter,
        if letter.is_uppercase() { "_upper" } else { "" }
    )
}

/// The files every matrix user starts with, put into the archive as an operator would
/// (mode 0644: planted files get it on disk, and it is the default on S3).
fn make_fixtures(server: &TestServer, home: &str) {
    server.plant_dir(&format!("{home}/d"));
    server.plant_dir(&format!("{home}/rmd_me"));
    server.plant(&format!("{home}/f.txt"), b"original\n");
    server.plant(&format!("{home}/del_me.txt"), b"delete me\n");
    server.plant(&format!("{home}/ren_src.txt"), b"rename me\n");
}

fn start_matrix_server() -> TestServer {
    let server = TestServer::prepare("");
    for letter in LETTERS {
        let name = user_name(letter);
        server.add_user(&name, PASSWORD, &["--perm", &all_but(letter)]);
        make_fixtures(&server, &name);
    }
    let mut server = server;
    server.start();
    server
}

/// Checks the archive after the operations of the user lacking `letter`: the refused
/// letter changed nothing, every allowed letter had its effect.
fn check_archive(server: &TestServer, letter: char) {
    let home = user_name(letter);
    let at = |name: &str| format!("{home}/{name}");
    let effect = |l: char| l != letter;
    let f = server.archived(&at("f.txt")).unwrap();
    assert_eq!(
        f.starts_with(b"original\n") && f.len() > 9,
        effect('a'),
        "{letter}: APPE effect"
    );
    let mode = server.archived_mode(&at("f.txt")).unwrap();
    assert_eq!(mode == 0o600, effect('M'), "{letter}: CHMOD effect");
    let mtime = server.archived_modified(&at("f.txt")).unwrap();
    let year_2020 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800);
    assert_eq!(mtime == year_2020, effect('T'), "{letter}: MFMT effect");
    assert_eq!(
        server.archived(&at("new.txt")).is_some(),
        effect('w'),
        "{letter}: STOR effect"
    );
    assert_eq!(
        server.archived_is_dir(&at("newdir")),
        effect('m'),
        "{letter}: MKD effect"
    );
    assert_eq!(
        server.archived(&at("ren_dst.txt")).is_some(),
        effect('f'),
        "{letter}: RNTO effect"
    );
    assert_eq!(
        server.archived(&at("ren_src.txt")).is_some(),
        !effect('f'),
        "{letter}: RNFR source"
    );
    assert_eq!(
        server.archived(&at("del_me.txt")).is_some(),
        !effect('d'),
        "{letter}: DELE effect"
    );
    assert_eq!(
        server.archived_is_dir(&at("rmd_me")),
        !effect('d'),
        "{letter}: RMD effect"
    );
}

/// A refusal must be a 550 that says why.
fn assert_refused<T: std::fmt::Debug>(letter: char, command: &str, result: Result<T, FtpError>) {
    match result {
        Err(FtpError::UnexpectedResponse(response)) => {
            let body = String::from_utf8_lossy(&response.body).to_string();
            assert_eq!(
                response.status,
                Status::FileUnavailable,
                "{command} without '{letter}': {body}"
            );
            assert!(
                body.contains("Permission denied") && body.contains(&format!("'{letter}'")),
                "{command}: {body}"
            );
        }
        other => panic!("{command} without '{letter}' should be refused, got {other:?}"),
    }
}

fn assert_allowed<T: std::fmt::Debug>(letter: char, command: &str, result: Result<T, FtpError>) {
    if let Err(err) = result {
        panic!("{command} should be allowed for the user without '{letter}': {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_letter_is_enforced_with_suppaftp() {
    let server = start_matrix_server();
    for letter in LETTERS {
        let mut ftp = ftp_login(&server.addr(), &user_name(letter), PASSWORD)
            .await
            .unwrap();
        let mut results: Vec<(char, &str, Result<(), FtpError>)> = Vec::new();
        results.push(('e', "CWD", ftp.cwd("d").await));
        results.push(('e', "CDUP", ftp.cdup().await));
        // Back at the home whatever happened, for the relative paths below.
        let _ = ftp.cwd("/").await;
        results.push(('l', "LIST", ftp.list(None).await.map(drop)));
        results.push(('l', "NLST", ftp.nlst(None).await.map(drop)));
        results.push(('l', "MLSD", ftp.mlsd(None).await.map(drop)));
        results.push(('l', "SIZE", ftp.size("f.txt").await.map(drop)));
        results.push(('r', "RETR", ftp_retr(&mut ftp, "f.txt").await.map(drop)));
        // The whole file's SHA-256, as agents ask before moving a copy (copytruncate).
        let sha256 = ftp.site("SHA256 f.txt").await;
        if let Ok(reply) = &sha256 {
            let body = String::from_utf8_lossy(&reply.body).to_string();
            assert_eq!(body.trim(), format!("200 {}", sha256_hex(b"original\n")));
        }
        results.push(('r', "SITE SHA256", sha256.map(drop)));
        results.push((
            'a',
            "APPE",
            ftp.append_file("f.txt", &mut &b"appended\n"[..])
                .await
                .map(drop),
        ));
        results.push((
            'M',
            "SITE CHMOD",
            ftp.site("CHMOD 600 f.txt").await.map(drop),
        ));
        results.push((
            'T',
            "MFMT",
            ftp.custom_command("MFMT 20200101000000 f.txt", &[Status::File])
                .await
                .map(drop),
        ));
        results.push((
            'w',
            "STOR",
            ftp.put_file("new.txt", &mut &b"new\n"[..]).await.map(drop),
        ));
        results.push(('m', "MKD", ftp.mkdir("newdir").await));
        results.push((
            'f',
            "RNFR/RNTO",
            ftp.rename("ren_src.txt", "ren_dst.txt").await,
        ));
        results.push(('d', "DELE", ftp.rm("del_me.txt").await));
        results.push(('d', "RMD", ftp.rmdir("rmd_me").await));
        for (needs, command, result) in results {
            if needs == letter {
                assert_refused(letter, command, result);
            } else {
                assert_allowed(letter, command, result);
            }
        }
        let _ = ftp.quit().await;
        check_archive(&server, letter);
    }
}

/// Runs curl against the server as `user`; returns whether it succeeded and its stderr.
fn curl(server: &TestServer, user: &str, args: &[&str], path: &str) -> (bool, String) {
    let url = format!("ftp://{}/{}", server.addr(), path);
    let credentials = format!("{user}:{PASSWORD}");
    let mut all = vec!["-sS", "--max-time", "30", "-u", &credentials];
    all.extend_from_slice(args);
    all.push(&url);
    let out = run("curl", &all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn each_letter_is_enforced_with_curl() {
    let server = start_matrix_server();
    let upload = server.dir.path().join("upload.txt");
    std::fs::write(&upload, b"appended\n").unwrap();
    let upload = upload.to_str().unwrap();
    let download = server.dir.path().join("download.txt");
    let download = download.to_str().unwrap();
    for letter in LETTERS {
        let user = user_name(letter);
        let checks: Vec<(char, &str, Vec<&str>, &str)> = vec![
            (
                'e',
                "CWD/CDUP",
                vec!["--head", "-Q", "CWD d", "-Q", "CDUP"],
                "",
            ),
            ('l', "LIST", vec!["-o", "/dev/null"], ""),
            ('l', "NLST", vec!["--list-only", "-o", "/dev/null"], ""),
            (
                'r',
                "RETR",
                vec!["--ignore-content-length", "-o", download],
                "f.txt",
            ),
            ('a', "APPE", vec!["--append", "-T", upload], "f.txt"),
            (
                'M',
                "SITE CHMOD",
                vec!["--head", "-Q", "SITE CHMOD 600 f.txt"],
                "",
            ),
            (
                'T',
                "MFMT",
                vec!["--head", "-Q", "MFMT 20200101000000 f.txt"],
                "",
            ),
            ('w', "STOR", vec!["-T", upload], "new.txt"),
            ('m', "MKD", vec!["--head", "-Q", "MKD newdir"], ""),
            (
                'f',
                "RNFR/RNTO",
                vec!["--head", "-Q", "RNFR ren_src.txt", "-Q", "RNTO ren_dst.txt"],
                "",
            ),
            ('d', "DELE", vec!["--head", "-Q", "DELE del_me.txt"], ""),
            ('d', "RMD", vec!["--head", "-Q", "RMD rmd_me"], ""),
        ];
        for (needs, command, args, path) in checks {
            let (ok, stderr) = curl(&server, &user, &args, path);
            if needs == letter {
                assert!(!ok, "curl {command} without '{letter}' should fail");
            } else {
                assert!(
                    ok,
                    "curl {command} for the user without '{letter}' should work: {stderr}"
                );
            }
        }
        check_archive(&server, letter);
    }
}
