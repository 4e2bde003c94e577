//! A small RELP client for the soak (rsyslog's `omrelp` needs a daemon per sender; the
//! soak wants to know exactly which message was written, answered and resent): `open`,
//! `syslog` frames with a window of unanswered ones, and after a lost connection (or the
//! server's `serverclose`) a reconnect that sends every unanswered message again, as
//! librelp does.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Unanswered frames at most, as rsyslog's default window.
pub const WINDOW: usize = 128;

/// One message on its way: the caller's number for it and its syslog text.
#[derive(Debug, Clone)]
struct Message {
    id: u64,
    text: Vec<u8>,
    /// Written on a connection at least once (a later write is a resend).
    written: bool,
}

/// What the connection said back.
enum Answer {
    Ok(u32),
    Error(u32, String),
    ServerClose,
}

/// A RELP session that survives its server going away.
pub struct RelpClient {
    port: u16,
    connection: Option<TcpStream>,
    next_txnr: u32,
    /// Written and not answered, oldest first, with their TXNR.
    unanswered: VecDeque<(u32, Message)>,
    /// Waiting for room in the window or for a connection.
    waiting: VecDeque<Message>,
    buf: Vec<u8>,
    /// Messages written again after a reconnect.
    pub resent: Vec<u64>,
    /// Messages the server refused (`rsp 500`): not resent (RELP's rule), reported.
    pub refused: Vec<(u64, String)>,
    pub reconnects: u64,
}

impl RelpClient {
    pub fn new(port: u16) -> RelpClient {
        RelpClient {
            port,
            connection: None,
            next_txnr: 1,
            unanswered: VecDeque::new(),
            waiting: VecDeque::new(),
            buf: Vec::new(),
            resent: Vec::new(),
            refused: Vec::new(),
            reconnects: 0,
        }
    }

    /// Messages not answered yet (written or waiting).
    pub fn pending(&self) -> usize {
        self.unanswered.len() + self.waiting.len()
    }

    /// Queues a message and writes what the window allows.
    pub async fn send(&mut self, id: u64, text: Vec<u8>) {
        self.waiting.push_back(Message {
            id,
            text,
            written: false,
        });
        self.pump().await;
    }

    /// Reads the answers that came, (re)connects when needed, writes what waits; returns
    /// within about `wait`.
    pub async fn poll(&mut self, wait: Duration) {
        if self.connection.is_none() {
            self.pump().await;
            if self.connection.is_none() {
                tokio::time::sleep(wait).await;
                return;
            }
        }
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(wait, connection.read(&mut chunk)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => self.lost(),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.take_answers();
            }
        }
        self.pump().await;
    }

    fn take_answers(&mut self) {
        while let Some(answer) = self.next_answer() {
            match answer {
                Answer::Ok(txnr) => self.answered(txnr, None),
                Answer::Error(txnr, why) => self.answered(txnr, Some(why)),
                Answer::ServerClose => {
                    self.lost();
                    return;
                }
            }
        }
    }

    fn answered(&mut self, txnr: u32, refusal: Option<String>) {
        let at = self.unanswered.iter().position(|(t, _)| *t == txnr);
        if let Some((_, message)) = at.and_then(|at| self.unanswered.remove(at))
            && let Some(why) = refusal
        {
            self.refused.push((message.id, why));
        }
    }

    /// The connection is gone: everything unanswered waits (first) for the next one.
    fn lost(&mut self) {
        self.connection = None;
        self.buf.clear();
        while let Some((_, message)) = self.unanswered.pop_back() {
            self.waiting.push_front(message);
        }
    }

    /// Connects if needed, then writes waiting messages while the window has room.
    async fn pump(&mut self) {
        if self.connection.is_none() && !self.connect().await {
            return;
        }
        let mut frames = Vec::new();
        while self.unanswered.len() < WINDOW {
            let Some(mut message) = self.waiting.pop_front() else {
                break;
            };
            if message.written {
                self.resent.push(message.id);
            }
            message.written = true;
            let txnr = self.txnr();
            frames.extend_from_slice(format!("{txnr} syslog {} ", message.text.len()).as_bytes());
            frames.extend_from_slice(&message.text);
            frames.push(b'\n');
            self.unanswered.push_back((txnr, message));
        }
        if frames.is_empty() {
            return;
        }
        let written = match self.connection.as_mut() {
            Some(connection) => connection.write_all(&frames).await.is_ok(),
            None => false,
        };
        if !written {
            self.lost();
        }
    }

    fn txnr(&mut self) -> u32 {
        let txnr = self.next_txnr;
        self.next_txnr = if txnr >= 999_999_999 { 1 } else { txnr + 1 };
        txnr
    }

    /// Connects and opens a session (`open` answered 200); false when the server is away.
    async fn connect(&mut self) -> bool {
        let Ok(Ok(mut stream)) = tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        else {
            return false;
        };
        let offers = "relp_version=0\nrelp_software=logarchive-soak\ncommands=syslog";
        let open = format!("1 open {} {offers}\n", offers.len());
        if stream.write_all(open.as_bytes()).await.is_err() {
            return false;
        }
        self.buf.clear();
        self.connection = Some(stream);
        self.next_txnr = 2;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(answer) = self.next_answer() {
                return match answer {
                    Answer::Ok(1) => {
                        self.reconnects += 1;
                        true
                    }
                    _ => {
                        self.connection = None;
                        false
                    }
                };
            }
            let Some(connection) = self.connection.as_mut() else {
                return false;
            };
            match tokio::time::timeout(Duration::from_secs(5), connection.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => {
                    self.connection = None;
                    return false;
                }
            }
        }
    }

    /// The next whole answer frame in the buffer: `TXNR rsp LEN CODE[ text][\n...]` or
    /// `0 serverclose 0`.
    fn next_answer(&mut self) -> Option<Answer> {
        let header_end = self.buf.iter().position(|b| *b == b'\n')?;
        let head = String::from_utf8_lossy(&self.buf[..header_end]).into_owned();
        let mut parts = head.splitn(3, ' ');
        let txnr: u32 = parts.next()?.parse().ok()?;
        let command = parts.next()?.to_owned();
        let rest = parts.next().unwrap_or("0");
        let (len, _) = rest.split_once(' ').unwrap_or((rest, ""));
        let len: usize = len.parse().ok()?;
        // Header, SP, data, LF (data may hold LFs: count bytes, not lines).
        let start = head
            .find(' ')
            .map(|a| a + 1 + command.len() + 1 + len.to_string().len())?;
        let data_start = if len > 0 { start + 1 } else { start };
        let end = data_start + len;
        if self.buf.len() < end + 1 {
            return None;
        }
        let data = String::from_utf8_lossy(&self.buf[data_start..end]).into_owned();
        self.buf.drain(..=end);
        if command == "serverclose" {
            return Some(Answer::ServerClose);
        }
        if data.starts_with("200") {
            Some(Answer::Ok(txnr))
        } else {
            Some(Answer::Error(txnr, data))
        }
    }
}
