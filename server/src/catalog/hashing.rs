//! SHA-256 of stored files for the catalog, computed on one background thread at the
//! lowest CPU priority (nice 19).
//!
//! Every upload is hashed after its reply (`run_hasher`). On the tokio workers that hash
//! competed with the transfers themselves: a download started right after a 1 GiB upload
//! ran at about 70 % of its speed while the upload was being hashed (docs/BENCHMARKS.md).
//! At nice 19 the hash takes what CPU the transfers leave; the reading stays on the
//! caller's task (it may be S3), only the compute moves. Callers queue: one file at a time.
//! A caller may also name a "transfers are running" probe: the hash then pauses while
//! transfers run (reading the file back competes with them for memory bandwidth even at
//! nice 19), for at most [`MAX_PAUSE`] per file, so a busy server still hashes.

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes read per chunk handed to the thread.
const CHUNK: usize = 256 * 1024;
/// Chunks read ahead of the thread.
const QUEUED: usize = 4;
/// The longest a file's hash waits for transfers to end, in all.
pub const MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(10);
/// How often a paused hash looks again.
const PAUSE_STEP: std::time::Duration = std::time::Duration::from_millis(50);

/// Says whether transfers are running (see the module's doc).
pub type Busy = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// One file to hash: its chunks, then the digest back.
struct Job {
    chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    done: tokio::sync::oneshot::Sender<[u8; 32]>,
}

/// The hashing thread, started on first use; `None` if it could not be started (then the
/// caller hashes on its own task).
fn worker() -> Option<&'static mpsc::Sender<Job>> {
    static WORKER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    WORKER
        .get_or_init(|| {
            let (jobs, incoming) = mpsc::channel::<Job>();
            let started = std::thread::Builder::new()
                .name("catalog-hasher".into())
                .spawn(move || {
                    // Linux applies a nice value to the thread that asks, by its id.
                    let me = rustix::thread::gettid();
                    if let Err(err) = rustix::process::setpriority_process(Some(me), 19) {
                        tracing::warn!("catalog hasher keeps normal priority: {err}");
                    }
                    for mut job in incoming {
                        let mut hasher = Sha256::new();
                        while let Some(chunk) = job.chunks.blocking_recv() {
                            hasher.update(&chunk);
                        }
                        let _ = job.done.send(hasher.finalize().into());
                    }
                });
            match started {
                Ok(_) => Some(jobs),
                Err(err) => {
                    tracing::warn!("catalog hashes on the runtime's threads: {err}");
                    None
                }
            }
        })
        .as_ref()
}

/// The SHA-256 (hex) of everything `reader` gives, and how many bytes that was.
pub async fn sha256_of(
    mut reader: impl AsyncRead + Unpin,
    busy: Option<&Busy>,
) -> io::Result<(String, u64)> {
    let (chunks, receiver) = tokio::sync::mpsc::channel(QUEUED);
    let (done, digest) = tokio::sync::oneshot::channel();
    let queued = worker().is_some_and(|jobs| {
        jobs.send(Job {
            chunks: receiver,
            done,
        })
        .is_ok()
    });
    if !queued {
        return sha256_here(reader).await;
    }
    let mut length = 0u64;
    let mut paused = std::time::Duration::ZERO;
    loop {
        if let Some(busy) = busy {
            while paused < MAX_PAUSE && busy() {
                tokio::time::sleep(PAUSE_STEP).await;
                paused += PAUSE_STEP;
            }
        }
        let mut chunk = Vec::with_capacity(CHUNK);
        while chunk.len() < CHUNK {
            let room = (CHUNK - chunk.len()) as u64;
            if (&mut reader).take(room).read_buf(&mut chunk).await? == 0 {
                break;
            }
        }
        if chunk.is_empty() {
            break;
        }
        length += chunk.len() as u64;
        if chunks.send(chunk).await.is_err() {
            return Err(io::Error::other("the catalog's hashing thread stopped"));
        }
    }
    drop(chunks);
    let digest = digest
        .await
        .map_err(|_| io::Error::other("the catalog's hashing thread stopped"))?;
    Ok((hex::encode(digest), length))
}

/// The same, on the caller's task.
async fn sha256_here(mut reader: impl AsyncRead + Unpin) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut length = 0u64;
    loop {
        let n = reader.read(&mut buffer).await?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), length));
        }
        length += n as u64;
        hasher.update(&buffer[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_thread_and_the_task_agree_with_a_known_digest() {
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 241) as u8).collect();
        let expected = hex::encode(Sha256::digest(&data));
        let (threaded, length) = sha256_of(&data[..], None).await.expect("hash");
        assert_eq!(
            (threaded.as_str(), length),
            (expected.as_str(), data.len() as u64)
        );
        let (here, _) = sha256_here(&data[..]).await.expect("hash");
        assert_eq!(here, expected);
        // The empty file, and several callers at once (they queue).
        let (empty, zero) = sha256_of(&b""[..], None).await.expect("hash");
        assert_eq!(zero, 0);
        assert_eq!(empty, hex::encode(Sha256::digest(b"")));
        let many = futures_like_join(&data).await;
        assert!(many.iter().all(|digest| *digest == expected));
    }

    #[tokio::test]
    async fn a_hash_waits_while_transfers_run_but_not_forever() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let running = Arc::new(AtomicBool::new(true));
        let probe = running.clone();
        let busy: Busy = Arc::new(move || probe.load(Ordering::Relaxed));
        let started = std::time::Instant::now();
        let ends = tokio::spawn({
            let running = running.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                running.store(false, Ordering::Relaxed);
            }
        });
        let (digest, _) = sha256_of(&b"abc"[..], Some(&busy)).await.expect("hash");
        ends.await.expect("task");
        assert!(started.elapsed() >= std::time::Duration::from_millis(300));
        assert_eq!(digest, hex::encode(Sha256::digest(b"abc")));
    }

    async fn futures_like_join(data: &[u8]) -> Vec<String> {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let data = data.to_vec();
                tokio::spawn(async move { sha256_of(&data[..], None).await.expect("hash").0 })
            })
            .collect();
        let mut digests = Vec::new();
        for task in tasks {
            digests.push(task.await.expect("task"));
        }
        digests
    }
}
