//! A user's rate limit is shared by all its sessions: four parallel uploads of a user
//! limited to 1 MiB/s move about 1 MiB/s together (±15 %). The server's total caps hold
//! across users the same way.

use std::time::Instant;

use logarchive_tests::{TestServer, ftp_login};

#[tokio::test(flavor = "multi_thread")]
async fn four_sessions_share_one_user_limit() {
    const LIMIT: f64 = 1024.0 * 1024.0;
    const EACH: usize = 1024 * 1024;
    let server = TestServer::start_with(
        "",
        &[(
            "lena",
            "rate-password",
            &["--perm", "elrw", "--max-upload-rate", "1MiB/s"],
        )],
    );
    let started = Instant::now();
    let mut uploads = Vec::new();
    for i in 0..4 {
        let addr = server.addr();
        uploads.push(tokio::spawn(async move {
            let mut ftp = ftp_login(&addr, "lena", "rate-password").await.unwrap();
            let data = vec![i as u8; EACH];
            ftp.put_file(format!("part{i}.bin"), &mut &data[..])
                .await
                .unwrap();
        }));
    }
    for upload in uploads {
        upload.await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = (4 * EACH) as f64 / seconds;
    assert!(
        rate > LIMIT * 0.85 && rate < LIMIT * 1.15,
        "4 sessions moved {rate:.0} B/s together; the user's limit is {LIMIT} B/s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_total_cap_holds_across_users() {
    const LIMIT: f64 = 1024.0 * 1024.0;
    const EACH: usize = 1024 * 1024;
    let server = TestServer::start_with(
        "total_upload_rate = \"1MiB/s\"",
        &[
            ("u1", "rate-password", &["--perm", "elrw"]),
            ("u2", "rate-password", &["--perm", "elrw"]),
        ],
    );
    let started = Instant::now();
    let mut uploads = Vec::new();
    for i in 0..4 {
        let addr = server.addr();
        let user = if i % 2 == 0 { "u1" } else { "u2" };
        uploads.push(tokio::spawn(async move {
            let mut ftp = ftp_login(&addr, user, "rate-password").await.unwrap();
            let data = vec![i as u8; EACH];
            ftp.put_file(format!("part{i}.bin"), &mut &data[..])
                .await
                .unwrap();
        }));
    }
    for upload in uploads {
        upload.await.unwrap();
    }
    let rate = (4 * EACH) as f64 / started.elapsed().as_secs_f64();
    assert!(
        rate > LIMIT * 0.85 && rate < LIMIT * 1.15,
        "two users moved {rate:.0} B/s together; the server's total is {LIMIT} B/s"
    );
}
