//! A user's rate limit is shared by all its sessions: four parallel uploads of a user
//! limited to 1 MiB/s move about 1 MiB/s together (±15 %). The server's total caps hold
//! across users the same way.

use std::time::Instant;

use logarchive_tests::{TestServer, ftp_login};

const LIMIT: f64 = 1024.0 * 1024.0;
const EACH: usize = 1024 * 1024;
const PASSWORD: &str = "rate-password";

/// Uploads `EACH` bytes in parallel, one session per entry of `users`; returns the rate
/// all of them reached together, in bytes per second.
async fn combined_upload_rate(server: &TestServer, users: &[&'static str]) -> f64 {
    let started = Instant::now();
    let mut uploads = Vec::new();
    for (i, user) in users.iter().copied().enumerate() {
        let addr = server.addr();
        uploads.push(tokio::spawn(async move {
            let mut ftp = ftp_login(&addr, user, PASSWORD).await.unwrap();
            let data = vec![i as u8; EACH];
            ftp.put_file(format!("part{i}.bin"), &mut &data[..])
                .await
                .unwrap();
        }));
    }
    for upload in uploads {
        upload.await.unwrap();
    }
    (users.len() * EACH) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn four_sessions_share_one_user_limit() {
    let server = TestServer::start_with(
        "",
        &[(
            "lena",
            PASSWORD,
            &["--perm", "elrw", "--max-upload-rate", "1MiB/s"],
        )],
    );
    let rate = combined_upload_rate(&server, &["lena"; 4]).await;
    assert!(
        rate > LIMIT * 0.85 && rate < LIMIT * 1.15,
        "4 sessions moved {rate:.0} B/s together; the user's limit is {LIMIT} B/s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_total_cap_holds_across_users() {
    let server = TestServer::start_with(
        "total_upload_rate = \"1MiB/s\"",
        &[
            ("u1", PASSWORD, &["--perm", "elrw"]),
            ("u2", PASSWORD, &["--perm", "elrw"]),
        ],
    );
    let rate = combined_upload_rate(&server, &["u1", "u2", "u1", "u2"]).await;
    assert!(
        rate > LIMIT * 0.85 && rate < LIMIT * 1.15,
        "two users moved {rate:.0} B/s together; the server's total is {LIMIT} B/s"
    );
}
