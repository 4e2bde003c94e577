//! Reading bytes `from..to` of a local file for sending, releasing each chunk only after
//! checking that the file still holds the content it was scanned with.
//!
//! A log can be rotated at any moment, also while it is being sent. A rename rotation
//! puts another file at the path (caught by the identity check on opening); a copytruncate
//! keeps the inode but truncates the file and lets it grow anew, so a reader past the
//! truncation reads the new content's bytes at the old offsets. Glued onto the server's
//! copy, those are bytes the file never held there (found by the soak: an append after a
//! copytruncate left the server 5,248 foreign bytes). So every chunk is read, then the
//! file's size and first bytes are checked, and only then is the chunk handed on: a chunk
//! read after a truncation is never sent, and the transfer fails instead. What was sent
//! before is the file's real content, so a partial transfer is still a true prefix.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use bytes::Bytes;
use logarchive_common::rate::{RateLimiter, ThrottledReader};
use sha2::{Digest, Sha256};
use tokio_util::io::StreamReader;

use crate::scan::LocalFile;

/// The file changed under the reader (rotated, truncated, rewritten): not a failure of
/// the agent or the server, only a transfer to drop; the next pass sees the file as it is.
/// Carried inside the `io::Error` the reader fails with, to be told apart from real faults.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ChangedWhileSent(String);

/// Whether `err` is a `ChangedWhileSent`.
pub fn changed_while_sent(err: &io::Error) -> bool {
    err.get_ref()
        .is_some_and(|inner| inner.is::<ChangedWhileSent>())
}

fn changed(reason: String) -> io::Error {
    io::Error::other(ChangedWhileSent(reason))
}

/// How much is read, checked and handed on at a time.
pub const CHUNK: usize = 256 << 10;

/// What the file must start with while it is read: SHA-256 (hex) of its first `len` bytes.
#[derive(Debug, Clone)]
pub struct FirstBytes {
    pub len: u64,
    pub sha256: String,
}

pub type RangeReader = ThrottledReader<StreamReader<ChunkStream, Bytes>>;
type ChunkStream = futures_util::stream::BoxStream<'static, io::Result<Bytes>>;

/// A reader of bytes `from..to` of `local`, throttled by `limiters`. Opening fails if the
/// path holds another file than the scanned one; reading fails (the transfer is cut short)
/// as soon as the file no longer starts with `first` or is shorter than what is read.
pub fn open(
    local: &LocalFile,
    from: u64,
    to: u64,
    first: FirstBytes,
    limiters: &[Arc<RateLimiter>],
) -> io::Result<RangeReader> {
    let file = File::open(&local.local)?;
    let meta = file.metadata()?;
    if (meta.dev(), meta.ino()) != (local.dev, local.ino) {
        return Err(changed(
            "replaced by another file since the scan (rotated)".into(),
        ));
    }
    // Checked before anything is sent, not only after the first chunk: a file found
    // shorter now than when scanned was truncated, and nothing of it may go.
    check(&file, to, &first)?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(2);
    tokio::task::spawn_blocking(move || {
        let mut at = from;
        while at < to {
            let want = (to - at).min(CHUNK as u64) as usize;
            let chunk = read_checked(&file, at, want, &first);
            let failed = chunk.is_err();
            if let Ok(bytes) = &chunk {
                at += bytes.len() as u64;
            }
            // The receiver is gone when the transfer was dropped: stop reading.
            if sender.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    let stream: ChunkStream = Box::pin(futures_util::stream::poll_fn(move |cx| {
        receiver.poll_recv(cx)
    }));
    Ok(ThrottledReader::new(
        StreamReader::new(stream),
        limiters.to_vec(),
    ))
}

/// Reads `want` bytes at `at`, then checks the file still starts as it did and still
/// reaches past them.
fn read_checked(file: &File, at: u64, want: usize, first: &FirstBytes) -> io::Result<Bytes> {
    let mut buffer = vec![0; want];
    match file.read_exact_at(&mut buffer, at) {
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(changed(format!(
                "ended before byte {} while being sent (truncated since the scan)",
                at + want as u64
            )));
        }
        result => result?,
    }
    check(file, at + want as u64, first)?;
    Ok(Bytes::from(buffer))
}

/// Fails unless `file` is at least `len` bytes long and starts with `first`.
fn check(file: &File, len: u64, first: &FirstBytes) -> io::Result<()> {
    let now = file.metadata()?.len();
    if now < len {
        return Err(changed(format!(
            "now {now} bytes, shorter than the {len} being sent (truncated since the scan)"
        )));
    }
    if first.len == 0 {
        return Ok(());
    }
    let mut head = vec![0; first.len as usize];
    let whole = match file.read_exact_at(&mut head, 0) {
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => false,
        result => result.map(|()| true)?,
    };
    if !whole || hex::encode(Sha256::digest(&head)) != first.sha256 {
        return Err(changed(
            "no longer starts as it did when scanned (rewritten or copied and truncated)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    fn first(bytes: &[u8]) -> FirstBytes {
        FirstBytes {
            len: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        }
    }

    #[tokio::test]
    async fn reads_the_range_of_an_unchanged_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let content: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let mut reader = open(
            &LocalFile::on_disk(&path),
            1000,
            590_000,
            first(&content[..4096]),
            &[],
        )
        .unwrap();
        let mut read = Vec::new();
        reader.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, content[1000..590_000]);
    }

    #[tokio::test]
    async fn refuses_a_file_truncated_and_regrown_since_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"old line 1\nold line 2\nold line 3\n").unwrap();
        let scanned = LocalFile::on_disk(&path);
        let expected = first(b"old line 1\n");
        // Copytruncate: same inode, new content, longer than the offset to be read.
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(0).unwrap();
        file.write_all(b"new line A\nnew line B\nnew line C\nnew line D\n")
            .unwrap();
        let err = open(&scanned, 11, 33, expected, &[]).err().unwrap();
        assert!(err.to_string().contains("no longer starts"), "{err}");
        assert!(changed_while_sent(&err));
    }

    #[tokio::test]
    async fn fails_rather_than_send_bytes_read_after_a_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // More chunks than the reading thread can hold ready (two queued, one in hand).
        let content: Vec<u8> = (0..(8 * CHUNK) as u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let scanned = LocalFile::on_disk(&path);
        let mut reader = open(
            &scanned,
            0,
            content.len() as u64,
            first(&content[..4096]),
            &[],
        )
        .unwrap();
        // The first chunk is read and released; then the file is truncated and regrown.
        let mut head = vec![0; CHUNK];
        reader.read_exact(&mut head).await.unwrap();
        assert_eq!(head, content[..CHUNK]);
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(0).unwrap();
        file.write_all(&vec![b'x'; 8 * CHUNK]).unwrap();
        drop(file);
        let mut rest = Vec::new();
        let err = reader.read_to_end(&mut rest).await.err().unwrap();
        assert!(changed_while_sent(&err));
        // Caught while the file was empty, or once it had regrown.
        let err = err.to_string();
        assert!(
            err.contains("truncated") || err.contains("no longer starts"),
            "{err}"
        );
        // Whatever came before the error was the file's real content.
        assert!(rest.len() < 7 * CHUNK);
        assert_eq!(rest, content[CHUNK..CHUNK + rest.len()]);
    }
}
