//! Moving bytes between a TCP socket and a local file inside the kernel: `splice` for
//! uploads (socket → pipe → file) and `sendfile` for downloads (file → socket), so that
//! the bytes are never copied through the server's memory.
//!
//! The FTP service uses this for plain (not TLS), unthrottled transfers to and from the
//! filesystem archive; TLS, rate limits and S3 need the bytes in user space and take the
//! copying path. Copying cost a 1 GiB upload or download two to three passes over every
//! byte that vsftpd (read/write up, `sendfile` down) does not make (docs/BENCHMARKS.md).
//!
//! The socket belongs to the FTP session's tokio task and is non-blocking. A transfer runs
//! on a blocking thread with its own `dup` of it (the descriptor stays valid even if the
//! session drops its end first), waits with `poll` while the socket is not ready, and
//! stops within [`STOP_CHECK`] once the session lets go of its [`StopOnDrop`] (the
//! transfer was aborted, or the session's task ended).

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::pipe::{PipeFlags, SpliceFlags};

/// Bytes asked of one `splice` or `sendfile` call, and the pipe's size (Linux's default
/// `pipe-max-size` allows it without privileges).
const STEP: usize = 1 << 20;

/// How often a transfer waiting on its socket checks whether it should stop.
pub const STOP_CHECK: Duration = Duration::from_millis(200);

/// A data connection handed to a blocking thread: a duplicate of the session's socket, the
/// stop flag the session controls, and a byte counter the session shows while it runs.
#[derive(Debug)]
pub struct DataSocket {
    fd: OwnedFd,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
}

/// Held by the session while a [`DataSocket`] transfer runs; dropping it tells the
/// transfer to stop.
#[derive(Debug)]
pub struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl DataSocket {
    /// Duplicates `socket`, a connected TCP socket that stays open for the duration of
    /// this call (libunftp's `current_plain_data_socket` guarantees that during the
    /// storage call it names). Each byte moved is added to `progress`.
    pub fn duplicate(
        socket: RawFd,
        progress: Arc<AtomicU64>,
    ) -> io::Result<(DataSocket, StopOnDrop)> {
        // SAFETY: the caller passes a descriptor that is open for the duration of this
        // call; it is only used here to make a duplicate we own.
        let borrowed = unsafe { BorrowedFd::borrow_raw(socket) };
        let fd = rustix::io::fcntl_dupfd_cloexec(borrowed, 0)?;
        let stop = Arc::new(AtomicBool::new(false));
        Ok((
            DataSocket {
                fd,
                stop: stop.clone(),
                progress,
            },
            StopOnDrop(stop),
        ))
    }

    /// Waits until the socket is ready for `flags` (or has an error or hang-up to
    /// report), checking the stop flag every [`STOP_CHECK`]. Blocking.
    fn wait(&self, flags: PollFlags) -> io::Result<()> {
        let timeout = Timespec::try_from(STOP_CHECK).map_err(io::Error::other)?;
        loop {
            self.check_stop()?;
            let mut fds = [PollFd::new(&self.fd, flags)];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) | Err(Errno::INTR) => continue,
                Ok(_) => return Ok(()),
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// `ConnectionAborted` once the session let go of the transfer.
    fn check_stop(&self) -> io::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the transfer was stopped",
            ));
        }
        Ok(())
    }

    fn moved(&self, n: usize) {
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Receives from `socket` until its peer's end of data, writing at `file`'s position
/// (a file not opened for appending: Linux refuses to splice into those); the bytes
/// moved. Blocking.
pub fn receive_into_file(socket: &DataSocket, file: &fs::File) -> io::Result<u64> {
    let (pipe_out, pipe_in) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    // Best effort: a smaller pipe only means more calls.
    let _ = rustix::pipe::fcntl_setpipe_size(&pipe_in, STEP);
    let mut total = 0u64;
    loop {
        socket.check_stop()?;
        let spliced = rustix::pipe::splice(
            &socket.fd,
            None,
            &pipe_in,
            None,
            STEP,
            SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
        );
        match spliced {
            Ok(0) => return Ok(total),
            Ok(n) => {
                drain_pipe(&pipe_out, file, n)?;
                total += n as u64;
                socket.moved(n);
            }
            Err(Errno::AGAIN) => socket.wait(PollFlags::IN | PollFlags::RDHUP)?,
            Err(Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

/// Moves exactly `n` bytes, already in the pipe, into `file`.
fn drain_pipe(pipe: impl AsFd, file: &fs::File, mut n: usize) -> io::Result<()> {
    while n > 0 {
        match rustix::pipe::splice(&pipe, None, file, None, n, SpliceFlags::MOVE) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the file took no more bytes",
                ));
            }
            Ok(written) => n -= written,
            Err(Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// Sends `file` from its current position to its end into `socket`; the bytes sent.
/// Blocking.
pub fn send_file(file: &fs::File, socket: &DataSocket) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        socket.check_stop()?;
        // No offset: sendfile reads at the file's position and advances it.
        match rustix::fs::sendfile(&socket.fd, file, None, STEP) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                total += n as u64;
                socket.moved(n);
            }
            Err(Errno::AGAIN) => socket.wait(PollFlags::OUT)?,
            Err(Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;

    /// A connected pair of loopback TCP sockets, the first non-blocking like tokio's.
    fn socket_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("non-blocking");
        (server, client)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn an_upload_is_received_byte_for_byte_until_the_peer_closes() {
        let (server, mut client) = socket_pair();
        let data = pattern(5 * STEP + 12_345);
        let sent = data.clone();
        let sender = std::thread::spawn(move || {
            client.write_all(&sent).expect("send");
        });
        let progress = Arc::new(AtomicU64::new(0));
        let (socket, _stop) =
            DataSocket::duplicate(server.as_raw_fd(), progress.clone()).expect("dup");
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(b"kept").expect("prefix");
        let received = receive_into_file(&socket, &file).expect("receive");
        sender.join().expect("sender");
        assert_eq!(received, data.len() as u64);
        assert_eq!(progress.load(Ordering::Relaxed), data.len() as u64);
        let mut stored = Vec::new();
        file.rewind().expect("rewind");
        file.read_to_end(&mut stored).expect("read back");
        assert_eq!(&stored[..4], b"kept");
        assert!(stored[4..] == data[..], "content differs");
    }

    #[test]
    fn a_download_sends_the_file_from_its_position() {
        let (server, mut client) = socket_pair();
        let data = pattern(3 * STEP + 777);
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(&data).expect("write");
        file.seek(io::SeekFrom::Start(1000)).expect("seek");
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).expect("read");
            got
        });
        let (socket, stop) =
            DataSocket::duplicate(server.as_raw_fd(), Arc::new(AtomicU64::new(0))).expect("dup");
        let sent = send_file(&file, &socket).expect("send");
        drop((socket, stop, server));
        let got = reader.join().expect("reader");
        assert_eq!(sent, (data.len() - 1000) as u64);
        assert!(got == data[1000..], "content differs");
    }

    #[test]
    fn a_stopped_transfer_ends_while_the_peer_is_silent() {
        let (server, _client) = socket_pair();
        let (socket, stop) =
            DataSocket::duplicate(server.as_raw_fd(), Arc::new(AtomicU64::new(0))).expect("dup");
        let file = tempfile::tempfile().expect("temp file");
        let waiter = std::thread::spawn(move || receive_into_file(&socket, &file));
        std::thread::sleep(Duration::from_millis(50));
        drop(stop);
        let result = waiter.join().expect("thread");
        let err = result.expect_err("a stopped transfer fails");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }
}
