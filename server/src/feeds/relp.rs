//! RELP, the Reliable Event Logging Protocol (rsyslog's `omrelp` and `imrelp`): syslog over
//! TCP (or TLS) in which every message is answered, so a sender keeps what was not
//! answered and sends it again after a reconnect.
//!
//! - Frames: `TXNR SP COMMAND SP DATALEN [SP DATA] LF` ([`Cutter`]). Commands: `open`
//!   (answered `200 OK` with our offers: `relp_version=0`, `commands=syslog`), `syslog`,
//!   `close`; the server says `serverclose` when it stops.
//! - A `syslog` message takes the path of a TCP syslog frame ([`Receiver`]: parse, host
//!   folder, F-TICKS, stats, rate limit, the appender). Its `rsp 200 OK` is sent only once
//!   the appender has written it to the archive (`Appender::append_durable`), answers in
//!   the order of the frames. **An acknowledged RELP message is in the archive.** A server
//!   killed before answering loses nothing: the sender resends what was not answered (at
//!   least once, so a message written but not yet answered at a kill arrives twice).
//! - A message that cannot be stored now (the appender's backlog is full, or its file
//!   stayed unwritable) is never answered: the connection is closed and the sender
//!   resends it later. Only a frame that can never be stored gets `rsp 500` (which a
//!   sender drops): one over `max_frame`.
//! - Limits: `max_frame` for DATALEN (larger frames are skipped unread, answered 500), at
//!   most [`WINDOW`] frames read ahead of their answers (then the connection is not read:
//!   TCP backpressure), commands of at most 32 letters, and the syslog listeners'
//!   allow-list, connection limit, idle timeout and rate per sender. The idle timeout
//!   also bounds each write of answers: a client that sends without reading its answers
//!   is disconnected, not kept forever. A frame that is not RELP is answered `rsp 500`
//!   with the reason, and the connection closed (a byte stream cannot be resynchronised).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::Counters;
use super::sources::Event;
use super::syslog::{Receiver, trim_line_end};
use crate::shutdown::Shutdown;

/// Frames read ahead of their answers per connection (rsyslog's window is 128 by default).
pub const WINDOW: usize = 1024;
/// The longest command name (the RELP spec: `1*32ALPHA`).
const MAX_COMMAND: usize = 32;
/// TXNR and DATALEN have at most 9 digits.
const MAX_DIGITS: usize = 9;
/// How long a stopping server waits for the answers still due before `serverclose`.
const DRAIN: Duration = Duration::from_millis(1500);

/// One RELP frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub txnr: u32,
    pub command: String,
    pub data: Vec<u8>,
}

/// What [`Cutter::next_cut`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Cut {
    Frame(Frame),
    /// A frame whose data is over the limit: skipped without being kept.
    Oversize {
        txnr: u32,
        len: usize,
    },
    /// Not RELP: the stream cannot be read further.
    Broken {
        txnr: Option<u32>,
        reason: String,
    },
}

/// Cuts RELP frames from a byte stream.
#[derive(Debug)]
pub struct Cutter {
    buf: Vec<u8>,
    pos: usize,
    max_data: usize,
    /// Bytes of an oversize frame's data still to skip, then its trailer.
    skip: Option<(u32, usize)>,
    broken: bool,
}

/// A step of parsing a header.
enum Step<T> {
    Done(T),
    NeedMore,
    Bad(String),
}

impl Cutter {
    pub fn new(max_data: usize) -> Cutter {
        Cutter {
            buf: Vec::new(),
            pos: 0,
            max_data,
            skip: None,
            broken: false,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.drain(..self.pos);
        self.pos = 0;
        // An oversize frame's data is dropped as it comes, never buffered.
        let data = match &mut self.skip {
            Some((_, left)) if *left > 0 => {
                let cut = (*left).min(data.len());
                *left -= cut;
                &data[cut..]
            }
            _ => data,
        };
        self.buf.extend_from_slice(data);
    }

    fn rest(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// The next frame, if the buffer holds a whole one.
    pub fn next_cut(&mut self) -> Option<Cut> {
        if self.broken {
            return None;
        }
        if let Some((txnr, left)) = self.skip {
            if left > 0 {
                return None;
            }
            // The skipped frame's trailer.
            let first = *self.rest().first()?;
            self.skip = None;
            if first != b'\n' {
                return Some(self.broken(Some(txnr), "the frame does not end in LF".into()));
            }
            self.pos += 1;
        }
        match self.header() {
            Step::NeedMore => None,
            Step::Bad(reason) => {
                let txnr = self.leading_txnr();
                Some(self.broken(txnr, reason))
            }
            Step::Done((txnr, command, len, at)) => {
                if len > self.max_data {
                    self.pos += at;
                    let buffered = self.rest().len().min(len);
                    self.pos += buffered;
                    self.skip = Some((txnr, len - buffered));
                    return Some(Cut::Oversize { txnr, len });
                }
                // `at` is past the SP before the data (or at the LF when there is none).
                let rest = &self.rest()[at..];
                if rest.len() < len + 1 {
                    return None;
                }
                if rest[len] != b'\n' {
                    return Some(self.broken(Some(txnr), "the frame does not end in LF".into()));
                }
                let data = rest[..len].to_vec();
                self.pos += at + len + 1;
                Some(Cut::Frame(Frame {
                    txnr,
                    command,
                    data,
                }))
            }
        }
    }

    fn broken(&mut self, txnr: Option<u32>, reason: String) -> Cut {
        self.broken = true;
        Cut::Broken { txnr, reason }
    }

    fn leading_txnr(&self) -> Option<u32> {
        match digits(self.rest(), 0, "") {
            Step::Done((value, _)) => u32::try_from(value).ok(),
            _ => None,
        }
    }

    /// TXNR, command, DATALEN and where the data starts.
    fn header(&self) -> Step<(u32, String, usize, usize)> {
        let rest = self.rest();
        let (txnr, at) = match digits(rest, 0, "transaction number") {
            Step::Done(found) => found,
            Step::NeedMore => return Step::NeedMore,
            Step::Bad(reason) => return Step::Bad(reason),
        };
        let Ok(txnr) = u32::try_from(txnr) else {
            return Step::Bad("the transaction number is out of range".into());
        };
        match rest.get(at) {
            None => return Step::NeedMore,
            Some(b' ') => {}
            Some(_) => return Step::Bad("no space after the transaction number".into()),
        }
        let start = at + 1;
        let letters = rest[start..]
            .iter()
            .take(MAX_COMMAND + 1)
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        if start + letters == rest.len() && letters <= MAX_COMMAND {
            return Step::NeedMore;
        }
        if letters == 0 || letters > MAX_COMMAND {
            return Step::Bad(format!(
                "the command must be 1 to {MAX_COMMAND} letters (after transaction {txnr})"
            ));
        }
        let command = String::from_utf8_lossy(&rest[start..start + letters]).into_owned();
        let at = start + letters;
        if rest[at] != b' ' {
            return Step::Bad(format!("no space after the command \"{command}\""));
        }
        let (len, at) = match digits(rest, at + 1, "data length") {
            Step::Done(found) => found,
            Step::NeedMore => return Step::NeedMore,
            Step::Bad(reason) => return Step::Bad(reason),
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        match rest.get(at) {
            None => Step::NeedMore,
            // No data: the LF follows (some senders put a space before it).
            Some(b'\n') if len == 0 => Step::Done((txnr, command, 0, at)),
            Some(b' ') if len == 0 => match rest.get(at + 1) {
                None => Step::NeedMore,
                Some(b'\n') => Step::Done((txnr, command, 0, at + 1)),
                Some(_) => Step::Bad("data after a data length of 0".into()),
            },
            Some(b' ') => Step::Done((txnr, command, len, at + 1)),
            Some(_) => Step::Bad("no space between the data length and the data".into()),
        }
    }
}

/// A number of 1 to 9 digits at `at`, and where it ends.
fn digits(rest: &[u8], at: usize, what: &str) -> Step<(u64, usize)> {
    let tail = rest.get(at..).unwrap_or_default();
    let count = tail
        .iter()
        .take(MAX_DIGITS + 1)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if count == tail.len() && count <= MAX_DIGITS {
        return Step::NeedMore;
    }
    if count == 0 {
        return Step::Bad(format!("a {what} (digits) was expected"));
    }
    if count > MAX_DIGITS {
        return Step::Bad(format!("the {what} has more than {MAX_DIGITS} digits"));
    }
    let value = tail[..count]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Step::Done((value, at + count))
}

/// One answer frame.
fn response(txnr: u32, data: &str) -> Vec<u8> {
    format!("{txnr} rsp {} {data}\n", data.len()).into_bytes()
}

/// What the writer of a session sends, in the order of the frames.
enum Answer {
    /// Ready now (the answer to `open`, an error).
    Now(Vec<u8>),
    /// `200 OK` once the message is in the archive.
    Stored(u32, oneshot::Receiver<bool>),
    /// The last answer: then the connection is closed.
    Last(Vec<u8>),
}

/// The offers we answer an `open` with, or why the client's cannot work.
fn open_answer(offers: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(offers);
    let mut version = None;
    let mut syslog = false;
    for line in text.lines() {
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        match name.trim() {
            "relp_version" => version = value.trim().parse::<u32>().ok(),
            "commands" => syslog = value.split(',').any(|c| c.trim() == "syslog"),
            _ => {}
        }
    }
    if version.is_none() {
        return Err("the open offers carry no valid relp_version".into());
    }
    if !syslog {
        return Err("required command syslog not offered by the client".into());
    }
    Ok(format!(
        "200 OK\nrelp_version=0\nrelp_software=logarchive,{},https://github.com/logarchive\ncommands=syslog",
        env!("CARGO_PKG_VERSION")
    ))
}

/// Serves one RELP connection until the client closes it, it breaks, idles out or the
/// server stops.
pub(super) async fn session<S>(receiver: &Receiver, stream: S, peer: SocketAddr, shutdown: Shutdown)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut read, write) = tokio::io::split(stream);
    let (answers, queue) = mpsc::channel::<Answer>(WINDOW);
    let idle = receiver.idle_timeout();
    let writer = tokio::spawn(write_answers(write, queue, peer, idle));
    let counters = receiver.counters();
    let mut cutter = Cutter::new(receiver.max_frame());
    let mut buf = vec![0u8; 64 * 1024];
    let mut open = false;
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut stopping = false;
    'read: loop {
        let n = tokio::select! {
            read = tokio::time::timeout(idle, read.read(&mut buf)) => match read {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => n,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, "RELP connection: {err}");
                    break;
                }
                Err(_) => {
                    Counters::add(&counters.timeouts);
                    receiver.note(peer.ip(), Event::Timeout, &format!("RELP: idle for {idle:?}: disconnected"));
                    break;
                }
            },
            // The writer gave up (a message that cannot be stored, a broken connection).
            _ = answers.closed() => break,
            _ = &mut stop => {
                stopping = true;
                break;
            }
        };
        cutter.push(&buf[..n]);
        while let Some(cut) = cutter.next_cut() {
            let answer = match cut {
                Cut::Frame(frame) => match frame.command.as_str() {
                    "syslog" if open => {
                        let message = trim_line_end(frame.data);
                        tracing::trace!(%peer, txnr = frame.txnr, "RELP syslog frame: {}", String::from_utf8_lossy(&message));
                        match receiver.ingest_durable(&message, peer.ip()) {
                            Some(stored) => Answer::Stored(frame.txnr, stored),
                            // Not answered: the sender keeps it and resends it.
                            None => {
                                tracing::warn!(%peer, "RELP: the archive's backlog is full: closing, the sender resends");
                                break 'read;
                            }
                        }
                    }
                    "syslog" => {
                        let reason = "500 the session is not open: send open first";
                        refused(receiver, peer, reason);
                        Answer::Last(response(frame.txnr, reason))
                    }
                    "open" => match open_answer(&frame.data) {
                        Ok(offers) => {
                            open = true;
                            Answer::Now(response(frame.txnr, &offers))
                        }
                        Err(reason) => {
                            let reason = format!("500 {reason}");
                            refused(receiver, peer, &reason);
                            Answer::Last(response(frame.txnr, &reason))
                        }
                    },
                    "close" => {
                        let _ = answers
                            .send(Answer::Last(response(frame.txnr, "200 OK")))
                            .await;
                        break 'read;
                    }
                    other => {
                        let reason = format!(
                            "500 unknown command \"{other}\" (this server takes open, syslog, close)"
                        );
                        refused(receiver, peer, &reason);
                        Answer::Now(response(frame.txnr, &reason))
                    }
                },
                Cut::Oversize { txnr, len } => {
                    Counters::add(&counters.oversize);
                    receiver.note(
                        peer.ip(),
                        Event::Oversize,
                        &format!("a {len}-byte RELP message is over max_frame"),
                    );
                    Answer::Now(response(
                        txnr,
                        &format!(
                            "500 a {len}-byte message is over the limit of {} bytes",
                            receiver.max_frame()
                        ),
                    ))
                }
                Cut::Broken { txnr, reason } => {
                    let reason = format!("500 not a RELP frame: {reason}");
                    refused(receiver, peer, &reason);
                    Answer::Last(response(txnr.unwrap_or(0), &reason))
                }
            };
            let last = matches!(answer, Answer::Last(_));
            // Waits while WINDOW answers are due: the connection is not read meanwhile.
            if answers.send(answer).await.is_err() || last {
                break 'read;
            }
        }
        let pause = receiver.charge(peer.ip(), n);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    if stopping {
        let _ = answers
            .send(Answer::Last(b"0 serverclose 0\n".to_vec()))
            .await;
    }
    drop(answers);
    // The answers still due (a stopping server gives them a moment: the appender still
    // runs until the feeds have stopped).
    let mut writer = writer;
    let stalled = if stopping {
        match tokio::time::timeout(DRAIN, &mut writer).await {
            Ok(stalled) => stalled.unwrap_or(false),
            Err(_) => {
                writer.abort();
                false
            }
        }
    } else {
        writer.await.unwrap_or(false)
    };
    if stalled {
        Counters::add(&counters.timeouts);
        receiver.note(
            peer.ip(),
            Event::Timeout,
            &format!("RELP: took no answer for {idle:?}: disconnected"),
        );
    }
}

/// Counts and logs a frame answered with an error.
fn refused(receiver: &Receiver, peer: SocketAddr, reason: &str) {
    Counters::add(&receiver.counters().rejected);
    receiver.note(peer.ip(), Event::Refused, &format!("RELP: {reason}"));
    // Debug only: a sender controls how many there are (counted on the feeds page).
    tracing::debug!(%peer, "RELP frame refused: {reason}");
}

/// Sends the answers in order; ends at the last one, when a message cannot be stored, when
/// the connection breaks, or when the client takes no answer for `idle` (then `true`: a
/// client that sends without reading would otherwise hold its connection forever, as the
/// reader waits on the full window and the idle timeout of reading never fires).
async fn write_answers<W: AsyncWrite + Unpin>(
    mut write: W,
    mut queue: mpsc::Receiver<Answer>,
    peer: SocketAddr,
    idle: Duration,
) -> bool {
    let mut stalled = false;
    while let Some(answer) = queue.recv().await {
        let (bytes, last) = match answer {
            Answer::Now(bytes) => (bytes, false),
            Answer::Last(bytes) => (bytes, true),
            Answer::Stored(txnr, stored) => match stored.await {
                Ok(true) => (response(txnr, "200 OK"), false),
                // Given up or the server is stopping: unanswered, so the sender resends.
                _ => {
                    tracing::warn!(%peer, txnr, "RELP message not stored: closing unanswered, the sender resends");
                    break;
                }
            },
        };
        // Answers that are ready go out together.
        if let Err(err) = within(idle, write.write_all(&bytes)).await {
            stalled = err.kind() == std::io::ErrorKind::TimedOut;
            break;
        }
        if last {
            break;
        }
        if queue.is_empty()
            && let Err(err) = within(idle, write.flush()).await
        {
            stalled = err.kind() == std::io::ErrorKind::TimedOut;
            break;
        }
    }
    if !stalled && within(idle, write.flush()).await.is_ok() {
        let _ = within(idle, write.shutdown()).await;
    }
    stalled
}

/// A write to the client, given up (`TimedOut`) when it takes longer than `idle`.
async fn within(
    idle: Duration,
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    tokio::time::timeout(idle, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cut_all(max: usize, chunks: &[&[u8]]) -> Vec<Cut> {
        let mut cutter = Cutter::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            cutter.push(chunk);
            while let Some(cut) = cutter.next_cut() {
                out.push(cut);
            }
        }
        out
    }

    fn frame(txnr: u32, command: &str, data: &[u8]) -> Cut {
        Cut::Frame(Frame {
            txnr,
            command: command.into(),
            data: data.to_vec(),
        })
    }

    #[test]
    fn cuts_frames_whole_or_split_at_every_byte() {
        let stream: &[u8] =
            b"1 open 30 relp_version=0\ncommands=syslog\n2 syslog 7 <13>a\nb\n3 close 0\n4 close 0 \n";
        let want = vec![
            frame(1, "open", b"relp_version=0\ncommands=syslog"),
            frame(2, "syslog", b"<13>a\nb"),
            frame(3, "close", b""),
            frame(4, "close", b""),
        ];
        assert_eq!(cut_all(100, &[stream]), want);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(cut_all(100, &bytes), want);
    }

    #[test]
    fn skips_an_oversize_frame_and_goes_on() {
        let stream: &[u8] = b"5 syslog 12 <13>toolong!\n6 syslog 4 <13>\n";
        let want = vec![
            Cut::Oversize { txnr: 5, len: 12 },
            frame(6, "syslog", b"<13>"),
        ];
        assert_eq!(cut_all(8, &[stream]), want);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(cut_all(8, &bytes), want);
    }

    #[test]
    fn names_what_is_wrong_with_a_bad_frame() {
        let cases: [(&[u8], Option<u32>, &str); 6] = [
            (b"GET / HTTP/1.1\n", None, "transaction number"),
            (b"1234567890 syslog 1 x\n", None, "more than 9 digits"),
            (b"7 sys-log 1 x\n", Some(7), "no space after the command"),
            (b"7 syslog x\n", Some(7), "data length"),
            (b"7 syslog 2 abc\n", Some(7), "does not end in LF"),
            (b"7 syslog 0 x\n", Some(7), "data after a data length of 0"),
        ];
        for (stream, txnr, needle) in cases {
            let cuts = cut_all(100, &[stream]);
            match &cuts[..] {
                [Cut::Broken { txnr: got, reason }] => {
                    assert_eq!(*got, txnr, "{stream:?}");
                    assert!(reason.contains(needle), "{stream:?}: {reason}");
                }
                other => panic!("{stream:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn answers_open_with_our_offers_or_a_reason() {
        let ok = open_answer(b"relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog").unwrap();
        assert!(
            ok.starts_with("200 OK\n") && ok.contains("\ncommands=syslog"),
            "{ok}"
        );
        assert!(ok.contains("\nrelp_version=0\n"), "{ok}");
        assert!(
            open_answer(b"commands=syslog")
                .unwrap_err()
                .contains("relp_version")
        );
        assert!(
            open_answer(b"relp_version=0\ncommands=other")
                .unwrap_err()
                .contains("syslog")
        );
        assert_eq!(response(3, "200 OK"), b"3 rsp 6 200 OK\n");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn never_panics_and_never_keeps_more_than_asked(
            data in proptest::collection::vec(any::<u8>(), 0..400),
            split in 0usize..400,
        ) {
            let split = split.min(data.len());
            for cut in cut_all(16, &[&data[..split], &data[split..]]) {
                if let Cut::Frame(frame) = cut {
                    prop_assert!(frame.data.len() <= 16);
                }
            }
        }

        #[test]
        fn never_panics_on_framelike_input(text in "([0-9]{1,3} (syslog|open|close|x) [0-9]{1,2}( [a-z<>0-9]{0,12})?\n?){0,6}") {
            let _ = cut_all(8, &[text.as_bytes()]);
        }
    }
}
