//! Syslog receiver: UDP, TCP and TLS (RFC 5425) listeners writing each message to
//! `/syslog/<host>/<YYYY>/<MM>/<DD>.log`.
//!
//! - Formats: RFC 3164 and RFC 5424 (parsed by `syslog_loose`). A frame without a `<PRI>`
//!   header, with a NUL byte or invalid UTF-8 is *unparsed*: counted and kept, escaped, in
//!   `/syslog/_unparsed/<YYYY-MM-DD>.log` with the sender and the reason.
//! - TCP framing (RFC 6587) is detected per frame: `<len> SP <msg>` is octet counting,
//!   anything else runs to the next LF, so both kinds of sender can share one port.
//! - The line written is the message as received, control characters escaped rsyslog-style
//!   (`#012` for LF) so one message is always one line, with the receive time (RFC 3339)
//!   in front when the message carries no time of its own. Files are per *receive* date
//!   (UTC): a sender's clock cannot put data in the past.
//! - The host folder is the message's host name, else the sender's address (or always the
//!   sender's with `host_from = "sender"`), made one safe path component by
//!   `paths::safe_component`.
//! - Limits: allow-list of sender networks, a token bucket per sender address (UDP excess
//!   is dropped and counted, TCP is slowed down), a frame size limit, an idle timeout and a
//!   connection limit. None of them affects other senders.
//! - Writes go through the shared [`Appender`](super::Appender): within a second in the
//!   archive.
//! - RELP (`relp`, `relp_tls`) shares the accept loop, TLS, limits and [`Receiver`]; its
//!   protocol is in [`super::relp`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use logarchive_common::config::server::{HostFrom, LoadedServerConfig, SyslogConfig};
use logarchive_common::paths::safe_component;
use logarchive_common::rate::RateLimiter;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

use super::sources::Event;
use super::{Counters, FeedContext, date_parts};
use crate::shutdown::Shutdown;

/// A frame cut from a TCP stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Message(Vec<u8>),
    /// A frame over the size limit, of at least this many bytes, skipped.
    Oversize(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    None,
    /// Discard up to and including the next LF.
    Line,
    /// Discard this many more bytes.
    Bytes(usize),
}

/// Cuts a TCP byte stream into syslog frames (RFC 6587), detecting the framing of each.
///
/// Consumed bytes are only skipped over (`pos`) and cut off once per [`Framer::push`], so
/// cutting many small frames from a large read costs no copying of what follows them.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    pos: usize,
    max: usize,
    skip: Skip,
}

impl Framer {
    pub fn new(max: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            pos: 0,
            max,
            skip: Skip::None,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.drain(..self.pos);
        self.pos = 0;
        self.buf.extend_from_slice(data);
    }

    fn rest(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }

    /// Takes `len` bytes after a `header` as a frame.
    fn take(&mut self, header: usize, len: usize) -> Frame {
        let frame = self.rest()[header..header + len].to_vec();
        Frame::Message(trim_line_end(frame))
    }

    /// The next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Option<Frame> {
        match self.skip {
            Skip::Bytes(n) => {
                let cut = n.min(self.rest().len());
                self.consume(cut);
                if cut < n {
                    self.skip = Skip::Bytes(n - cut);
                    return None;
                }
                self.skip = Skip::None;
            }
            Skip::Line => match self.rest().iter().position(|b| *b == b'\n') {
                Some(at) => {
                    self.consume(at + 1);
                    self.skip = Skip::None;
                }
                None => {
                    self.consume(self.rest().len());
                    return None;
                }
            },
            Skip::None => {}
        }
        // Blank lines between frames (and the LF some senders add after a counted frame).
        let blank = self
            .rest()
            .iter()
            .take_while(|b| matches!(b, b'\n' | b'\r'))
            .count();
        self.consume(blank);
        if self.rest().is_empty() {
            return None;
        }
        match self.octet_count() {
            Counted::NeedMore => return None,
            Counted::Len(header, len) if len > self.max => {
                self.consume(header);
                self.skip = Skip::Bytes(len);
                return Some(Frame::Oversize(len));
            }
            Counted::Len(header, len) => {
                if self.rest().len() < header + len {
                    return None;
                }
                let frame = self.take(header, len);
                self.consume(header + len);
                return Some(frame);
            }
            Counted::No => {}
        }
        match self.rest().iter().position(|b| *b == b'\n') {
            Some(at) if at <= self.max => {
                let frame = self.take(0, at);
                self.consume(at + 1);
                Some(frame)
            }
            Some(at) => {
                self.consume(at + 1);
                Some(Frame::Oversize(at))
            }
            None if self.rest().len() > self.max => {
                let len = self.rest().len();
                self.consume(len);
                self.skip = Skip::Line;
                Some(Frame::Oversize(len))
            }
            None => None,
        }
    }

    /// At the end of the stream: the last frame if it lacked its LF.
    pub fn finish(&mut self) -> Option<Frame> {
        if self.skip != Skip::None || self.rest().is_empty() {
            return None;
        }
        let len = self.rest().len();
        let frame = self.take(0, len);
        self.consume(len);
        Some(frame)
    }

    /// RFC 6587 octet counting: `NONZERO-DIGIT *DIGIT SP` followed by `<`.
    fn octet_count(&self) -> Counted {
        let rest = self.rest();
        let digits = rest
            .iter()
            .take(11)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || rest[0] == b'0' || digits > 9 {
            return Counted::No;
        }
        match (rest.get(digits), rest.get(digits + 1)) {
            (None, _) | (Some(b' '), None) => Counted::NeedMore,
            (Some(b' '), Some(b'<')) => {
                let len = std::str::from_utf8(&rest[..digits])
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(usize::MAX);
                Counted::Len(digits + 1, len)
            }
            _ => Counted::No,
        }
    }
}

enum Counted {
    No,
    NeedMore,
    /// Header length, frame length.
    Len(usize, usize),
}

pub(super) fn trim_line_end(mut frame: Vec<u8>) -> Vec<u8> {
    while matches!(frame.last(), Some(b'\n' | b'\r')) {
        frame.pop();
    }
    frame
}

/// A frame that is a syslog message.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub text: &'a str,
    pub host: Option<String>,
    pub has_time: bool,
    /// The F-TICKS part of the message, when it has one.
    pub fticks: Option<&'a str>,
}

/// The folder below `/syslog` that keeps unparsed frames.
const UNPARSED: &str = "_unparsed";

/// Checks and parses one frame; `Err` is why it is unparsed.
pub fn parse_frame(frame: &[u8]) -> Result<Parsed<'_>, &'static str> {
    if frame.is_empty() {
        return Err("empty frame");
    }
    if frame.contains(&0) {
        return Err("NUL byte");
    }
    let text = std::str::from_utf8(frame).map_err(|_| "invalid UTF-8")?;
    let pri_end = text.find('>').filter(|end| (2..=4).contains(end));
    let pri = pri_end
        .filter(|_| text.starts_with('<'))
        .and_then(|end| text[1..end].parse::<u8>().ok());
    if pri.is_none_or(|pri| pri > 191) {
        return Err("no <PRI> header");
    }
    let message = syslog_loose::parse_message(text, syslog_loose::Variant::Either);
    let host = message
        .hostname
        .filter(|h| !h.is_empty() && *h != "-")
        .and_then(|h| safe_component(&h.to_ascii_lowercase(), 64))
        // The folder of unparsed frames is not a host's.
        .map(|h| {
            if h == UNPARSED {
                format!("{h}-host")
            } else {
                h
            }
        });
    Ok(Parsed {
        text,
        host,
        has_time: message.timestamp.is_some(),
        fticks: text.find("F-TICKS/").map(|at| &text[at..]),
    })
}

/// Control characters as rsyslog writes them (`#012`), so a message stays one line.
fn escape_controls(text: &str, out: &mut Vec<u8>) {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend_from_slice(format!("#{:03o}", c as u32).as_bytes());
        } else {
            let mut utf8 = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
}

/// The lines cut from one read, by host (`None`: unparsed), with their message counts:
/// handed to the appender once per read instead of once per message.
struct Batch {
    now: OffsetDateTime,
    /// The sender of every frame in the batch (one datagram or one read of a connection).
    peer: IpAddr,
    files: Vec<(Option<String>, Vec<u8>, usize)>,
}

impl Batch {
    fn new(peer: IpAddr) -> Batch {
        Batch {
            now: OffsetDateTime::now_utc(),
            peer,
            files: Vec::new(),
        }
    }
}

/// The feeds page's name of a sender known only by its address.
fn sender_name(peer: IpAddr) -> String {
    safe_component(&peer.to_string(), 64).unwrap_or_else(|| "unknown".into())
}

/// The receiver shared by all listeners.
pub struct Receiver {
    ctx: FeedContext,
    config: SyslogConfig,
    limiters: Mutex<HashMap<IpAddr, Arc<RateLimiter>>>,
}

/// `max_connections` is capped here (far beyond any file descriptor limit).
const MAX_CONNECTIONS: usize = 1 << 20;

/// Forget per-sender buckets beyond this many senders (a spoofed-source UDP flood must not
/// grow memory without bound).
const MAX_TRACKED_SENDERS: usize = 10_000;

impl Receiver {
    pub fn new(ctx: FeedContext, config: SyslogConfig) -> Receiver {
        Receiver {
            ctx,
            config,
            limiters: Mutex::new(HashMap::new()),
        }
    }

    /// `max_frame`: the longest message taken.
    pub(super) fn max_frame(&self) -> usize {
        usize::try_from(self.config.max_frame.0).unwrap_or(usize::MAX)
    }

    /// A stream connection silent this long is closed.
    pub(super) fn idle_timeout(&self) -> Duration {
        self.config.idle_timeout.0
    }

    pub(super) fn counters(&self) -> &Counters {
        &self.ctx.stats.syslog
    }

    /// Counts a problem of a sender known only by its address on the feeds page.
    pub(super) fn note(&self, peer: IpAddr, event: Event, reason: &str) {
        self.ctx.stats.sources.record(
            "syslog",
            &sender_name(peer),
            Some(peer),
            event,
            1,
            Some(reason),
        );
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.config.allow.is_empty() || self.config.allow.iter().any(|net| net.contains(&ip))
    }

    /// Whether the allow-list lets `ip` send; a refusal is counted and noted.
    fn admit(&self, ip: IpAddr) -> bool {
        if self.allowed(ip) {
            return true;
        }
        Counters::add(&self.counters().rejected);
        self.note(ip, Event::Refused, "refused: not in the allow-list");
        false
    }

    /// How long the sender must pause after `bytes` (zero when unlimited).
    pub(super) fn charge(&self, ip: IpAddr, bytes: usize) -> Duration {
        self.limiter(ip)
            .map_or(Duration::ZERO, |limiter| limiter.charge(bytes as u64))
    }

    /// Whether a datagram of `bytes` is within the sender's rate (drops cost nothing).
    fn within_rate(&self, ip: IpAddr, bytes: usize) -> bool {
        self.limiter(ip)
            .is_none_or(|limiter| limiter.try_take(bytes as u64))
    }

    fn limiter(&self, ip: IpAddr) -> Option<Arc<RateLimiter>> {
        if self.config.rate_per_sender.is_unlimited() {
            return None;
        }
        let limiter = {
            let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
            if limiters.len() >= MAX_TRACKED_SENDERS && !limiters.contains_key(&ip) {
                limiters.clear();
            }
            limiters
                .entry(ip)
                .or_insert_with(|| Arc::new(RateLimiter::new(self.config.rate_per_sender)))
                .clone()
        };
        Some(limiter)
    }

    /// Stores one frame.
    pub fn ingest(&self, frame: &[u8], peer: IpAddr) {
        let mut batch = Batch::new(peer);
        self.add(&mut batch, frame, peer);
        self.commit(batch);
    }

    /// Stores one frame as [`Receiver::ingest`] does, and returns what resolves once it is
    /// in the archive (RELP acknowledges then); `None` when it was not queued (counted as
    /// dropped: the archive's backlog is full).
    pub(super) fn ingest_durable(
        &self,
        frame: &[u8],
        peer: IpAddr,
    ) -> Option<tokio::sync::oneshot::Receiver<bool>> {
        let mut batch = Batch::new(peer);
        self.add(&mut batch, frame, peer);
        let mut durable = Vec::with_capacity(1);
        self.queue(batch, Some(&mut durable));
        durable.pop()
    }

    /// Turns one frame into its line in `batch` (the file it goes to is chosen at commit).
    fn add(&self, batch: &mut Batch, frame: &[u8], peer: IpAddr) {
        Counters::add(&self.counters().received);
        let stamp = || batch.now.format(&Rfc3339).unwrap_or_default();
        let sender = || sender_name(peer);
        let mut line = Vec::with_capacity(frame.len() + 40);
        let host = match parse_frame(frame) {
            Ok(parsed) => {
                let host = match self.config.host_from {
                    HostFrom::Message => parsed.host.unwrap_or_else(sender),
                    HostFrom::Sender => sender(),
                };
                if !parsed.has_time {
                    line.extend_from_slice(stamp().as_bytes());
                    line.push(b' ');
                }
                escape_controls(parsed.text, &mut line);
                if let Some(fticks) = parsed.fticks {
                    self.ctx.fticks.ingest(&self.ctx, fticks, &host);
                }
                Some(host)
            }
            Err(reason) => {
                self.note(peer, Event::Unparsed, &format!("unparsed frame: {reason}"));
                line.extend_from_slice(format!("{} {} {reason}: ", stamp(), sender()).as_bytes());
                escape_controls(&String::from_utf8_lossy(frame), &mut line);
                None
            }
        };
        line.push(b'\n');
        let slot = match batch.files.iter().position(|(h, _, _)| *h == host) {
            Some(at) => &mut batch.files[at],
            None => {
                batch.files.push((host, Vec::new(), 0));
                let last = batch.files.len() - 1;
                &mut batch.files[last]
            }
        };
        slot.1.extend_from_slice(&line);
        slot.2 += 1;
    }

    /// Hands a batch to the appender, one append per file, and counts its messages.
    fn commit(&self, batch: Batch) {
        self.queue(batch, None);
    }

    /// [`Receiver::commit`]; with `durable`, each file's append is one whose answer (in
    /// the archive) is pushed there.
    fn queue(
        &self,
        batch: Batch,
        mut durable: Option<&mut Vec<tokio::sync::oneshot::Receiver<bool>>>,
    ) {
        let counters = self.counters();
        let [year, month, day] = date_parts(batch.now);
        for (host, bytes, messages) in batch.files {
            let (path, counter) = match &host {
                Some(host) => (
                    self.ctx
                        .grown_file(&format!("/syslog/{host}/{year}/{month}"), &day, "log"),
                    &counters.stored,
                ),
                None => (
                    self.ctx.grown_file(
                        &format!("/syslog/{UNPARSED}"),
                        &format!("{year}-{month}-{day}"),
                        "log",
                    ),
                    &counters.unparsed,
                ),
            };
            let queued = match (path, durable.as_deref_mut()) {
                (Ok(path), None) => self.ctx.appender.append(&path, "syslog", &bytes),
                (Ok(path), Some(answers)) => {
                    match self.ctx.appender.append_durable(&path, "syslog", &bytes) {
                        Some(answer) => {
                            answers.push(answer);
                            true
                        }
                        None => false,
                    }
                }
                (Err(err), _) => {
                    tracing::error!("syslog: no archive path for a message: {err}");
                    false
                }
            };
            let counter = if queued { counter } else { &counters.dropped };
            counter.fetch_add(messages as u64, std::sync::atomic::Ordering::Relaxed);
            // Unparsed frames were counted per sender as they came (with their reason).
            if let Some(host) = &host {
                let (event, reason) = if queued {
                    (Event::Stored, None)
                } else {
                    (
                        Event::Dropped,
                        Some("not stored: the archive's backlog is full"),
                    )
                };
                self.ctx.stats.sources.record(
                    "syslog",
                    host,
                    Some(batch.peer),
                    event,
                    messages as u64,
                    reason,
                );
            }
        }
    }

    async fn udp(self: Arc<Self>, socket: UdpSocket, shutdown: Shutdown) {
        let mut buf = vec![0u8; 65536];
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            let (len, peer) = tokio::select! {
                received = socket.recv_from(&mut buf) => match received {
                    Ok(received) => received,
                    Err(err) => {
                        // E.g. ICMP port unreachable reported on the socket: not fatal.
                        tracing::debug!("syslog udp: {err}");
                        continue;
                    }
                },
                _ = &mut stop => return,
            };
            let counters = self.counters();
            if !self.admit(peer.ip()) {
                continue;
            }
            if len > self.config.max_frame.0 as usize {
                Counters::add(&counters.oversize);
                self.note(
                    peer.ip(),
                    Event::Oversize,
                    &format!("a {len}-byte datagram is over max_frame"),
                );
                continue;
            }
            if !self.within_rate(peer.ip(), len) {
                Counters::add(&counters.dropped);
                self.note(
                    peer.ip(),
                    Event::RateLimited,
                    "dropped: over rate_per_sender",
                );
                continue;
            }
            let frame = trim_line_end(buf[..len].to_vec());
            self.ingest(&frame, peer.ip());
        }
    }

    /// Reads frames from one TCP or TLS connection until it ends, idles out or shutdown.
    async fn stream<S: AsyncRead + Unpin>(&self, mut stream: S, peer: SocketAddr) {
        let counters = self.counters();
        let mut framer = Framer::new(self.config.max_frame.0 as usize);
        let mut buf = vec![0u8; 64 * 1024];
        let idle = self.config.idle_timeout.0;
        loop {
            let n = match tokio::time::timeout(idle, stream.read(&mut buf)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => n,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, "syslog connection: {err}");
                    break;
                }
                Err(_) => {
                    Counters::add(&counters.timeouts);
                    self.note(
                        peer.ip(),
                        Event::Timeout,
                        &format!("idle for {idle:?}: disconnected"),
                    );
                    tracing::debug!(%peer, "syslog sender idle for {idle:?}: disconnected");
                    break;
                }
            };
            framer.push(&buf[..n]);
            let mut batch = Batch::new(peer.ip());
            while let Some(frame) = framer.next_frame() {
                self.take(&mut batch, frame, peer.ip());
            }
            self.commit(batch);
            let pause = self.charge(peer.ip(), n);
            if !pause.is_zero() {
                // Backpressure: the sender's TCP window fills while we wait.
                tokio::time::sleep(pause).await;
            }
        }
        if let Some(frame) = framer.finish() {
            let mut batch = Batch::new(peer.ip());
            self.take(&mut batch, frame, peer.ip());
            self.commit(batch);
        }
    }

    fn take(&self, batch: &mut Batch, frame: Frame, peer: IpAddr) {
        match frame {
            Frame::Message(bytes) => self.add(batch, &bytes, peer),
            Frame::Oversize(len) => {
                Counters::add(&self.counters().oversize);
                self.note(
                    peer,
                    Event::Oversize,
                    &format!("a {len}-byte frame is over max_frame"),
                );
                // Per frame: counted; a log line each could flood the log.
                tracing::debug!(%peer, len, "syslog frame over max_frame dropped");
            }
        }
    }

    async fn tcp(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        protocol: Protocol,
        connections: Arc<Semaphore>,
        shutdown: Shutdown,
    ) {
        let stop = shutdown.clone().wait();
        tokio::pin!(stop);
        loop {
            let (socket, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: wait a moment, keep serving.
                        tracing::warn!("syslog accept: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = &mut stop => return,
            };
            let counters = self.counters();
            if !self.admit(peer.ip()) {
                continue;
            }
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                Counters::add(&counters.dropped);
                self.note(
                    peer.ip(),
                    Event::Dropped,
                    "connection refused: max_connections reached",
                );
                tracing::debug!(%peer, "syslog connection refused: max_connections reached");
                continue;
            };
            let receiver = self.clone();
            let tls = tls.clone();
            let shutdown = shutdown.clone();
            let protocol = protocol.clone();
            let relp = matches!(protocol, Protocol::Relp(_));
            tokio::spawn(async move {
                let _permit = permit;
                let work = async {
                    match tls {
                        None => receiver.serve_stream(protocol, socket, peer).await,
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(
                                Duration::from_secs(10),
                                acceptor.accept(socket),
                            );
                            match handshake.await {
                                Ok(Ok(stream)) => {
                                    receiver.serve_stream(protocol, stream, peer).await
                                }
                                Ok(Err(err)) => {
                                    Counters::add(&receiver.counters().rejected);
                                    receiver.note(
                                        peer.ip(),
                                        Event::Refused,
                                        &format!("TLS handshake failed: {err}"),
                                    );
                                    tracing::warn!(%peer, "syslog TLS handshake failed: {err}");
                                }
                                Err(_) => {
                                    Counters::add(&receiver.counters().timeouts);
                                    receiver.note(
                                        peer.ip(),
                                        Event::Timeout,
                                        "TLS handshake timed out",
                                    );
                                    tracing::warn!(%peer, "syslog TLS handshake timed out");
                                }
                            }
                        }
                    }
                };
                if relp {
                    // A RELP session ends itself at shutdown: it answers what is stored
                    // and says `serverclose`, so its client resends only the rest.
                    work.await;
                } else {
                    tokio::select! {
                        _ = work => {}
                        _ = shutdown.wait() => {}
                    }
                }
            });
        }
    }

    async fn serve_stream<S>(&self, protocol: Protocol, stream: S, peer: SocketAddr)
    where
        S: AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        match protocol {
            Protocol::Syslog => self.stream(stream, peer).await,
            Protocol::Relp(shutdown) => super::relp::session(self, stream, peer, shutdown).await,
        }
    }
}

/// What a stream listener speaks.
#[derive(Clone)]
enum Protocol {
    /// Syslog frames (RFC 6587, RFC 5425), never answered.
    Syslog,
    /// RELP: each frame answered; the session watches the shutdown itself.
    Relp(Shutdown),
}

/// The TLS server config from PEM files (also used by `check-config`).
pub(crate) fn tls_acceptor(
    config: &LoadedServerConfig,
    syslog: &SyslogConfig,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&syslog.cert, &syslog.key) else {
        anyhow::bail!("[syslog] tls and relp_tls need cert and key");
    };
    let (cert, key) = (config.resolve(cert), config.resolve(key));
    let certs = CertificateDer::pem_file_iter(&cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("[syslog] cert: cannot read {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key)
        .with_context(|| format!("[syslog] key: cannot read {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("[syslog] cert and key do not make a TLS identity")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

/// Binds the configured listeners and serves until `shutdown`.
pub async fn serve(
    config: &LoadedServerConfig,
    syslog: &SyslogConfig,
    ctx: &FeedContext,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let receiver = Arc::new(Receiver::new(ctx.clone(), syslog.clone()));
    let limit = syslog.max_connections.clamp(1, MAX_CONNECTIONS);
    let connections = Arc::new(Semaphore::new(limit));
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = syslog.udp {
        let socket = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot listen for syslog on udp {addr} ([syslog] udp)"))?;
        tracing::info!(%addr, "syslog udp listener up");
        tasks.spawn(receiver.clone().udp(socket, shutdown.clone()));
    }
    if let Some(addr) = syslog.tcp {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for syslog on tcp {addr} ([syslog] tcp)"))?;
        tracing::info!(%addr, "syslog tcp listener up");
        tasks.spawn(receiver.clone().tcp(
            listener,
            None,
            Protocol::Syslog,
            connections.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(addr) = syslog.tls {
        let acceptor = tls_acceptor(config, syslog)?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for syslog on tls {addr} ([syslog] tls)"))?;
        tracing::info!(%addr, "syslog tls listener up");
        tasks.spawn(receiver.clone().tcp(
            listener,
            Some(acceptor),
            Protocol::Syslog,
            connections.clone(),
            shutdown.clone(),
        ));
    }
    for (key, addr, tls) in [
        ("relp", syslog.relp, false),
        ("relp_tls", syslog.relp_tls, true),
    ] {
        let Some(addr) = addr else { continue };
        let acceptor = if tls {
            Some(tls_acceptor(config, syslog)?)
        } else {
            None
        };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for RELP on {addr} ([syslog] {key})"))?;
        tracing::info!(%addr, "syslog {key} listener up");
        tasks.spawn(receiver.clone().tcp(
            listener,
            acceptor,
            Protocol::Relp(shutdown.clone()),
            connections.clone(),
            shutdown.clone(),
        ));
    }
    if tasks.is_empty() {
        tracing::warn!(
            "[syslog] has none of udp, tcp, tls, relp, relp_tls: no syslog listener runs"
        );
    }
    shutdown.wait().await;
    while tasks.join_next().await.is_some() {}
    // Connections end at their next read once shutdown is signalled; each holds a permit.
    let all = u32::try_from(limit).unwrap_or(u32::MAX);
    if tokio::time::timeout(Duration::from_secs(2), connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("syslog: connections still open 2 s after shutdown are cut");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use logarchive_common::paths::ArchivePath;
    use proptest::prelude::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut framer = Framer::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk);
            while let Some(frame) = framer.next_frame() {
                out.push(frame);
            }
        }
        out.extend(framer.finish());
        out
    }

    fn msg(text: &str) -> Frame {
        Frame::Message(text.as_bytes().to_vec())
    }

    #[test]
    fn detects_framing_per_frame() {
        let stream = b"<13>one\n9 <13>two\nx\r\n<13>three\n5 <13>4";
        let got = frames(1024, &[stream]);
        assert_eq!(
            got,
            vec![
                msg("<13>one"),
                msg("<13>two\nx"),
                msg("<13>three"),
                msg("<13>4")
            ]
        );
        // Split at every byte: same frames.
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frames(1024, &chunks), got);
    }

    #[test]
    fn digits_without_a_frame_after_them_are_a_line() {
        assert_eq!(
            frames(100, &[b"2024 was a year\n"]),
            vec![msg("2024 was a year")]
        );
    }

    #[test]
    fn oversize_frames_are_skipped_and_the_stream_goes_on() {
        let long = format!("<13>{}\n<13>after\n", "x".repeat(50));
        assert_eq!(
            frames(20, &[long.as_bytes()]),
            vec![Frame::Oversize(54), msg("<13>after")]
        );
        let counted = format!("60 <13>{}<13>after\n", "y".repeat(56));
        assert_eq!(
            frames(20, &[counted.as_bytes()]),
            vec![Frame::Oversize(60), msg("<13>after")]
        );
        let endless = "z".repeat(30);
        let got = frames(
            20,
            &[endless.as_bytes(), endless.as_bytes(), b"z\n<13>ok\n"],
        );
        assert_eq!(got, vec![Frame::Oversize(30), msg("<13>ok")]);
    }

    #[test]
    fn frames_are_parsed_or_refused_with_a_reason() {
        let parsed = parse_frame(b"<13>Nov 22 19:00:00 Web-01 app[1]: hello").unwrap();
        assert_eq!(parsed.host.as_deref(), Some("web-01"));
        assert!(parsed.has_time);
        let parsed =
            parse_frame(b"<165>1 2026-11-22T19:00:00Z ../etc app - - - F-TICKS/x/1.0#REALM=a")
                .unwrap();
        assert_eq!(parsed.host.as_deref(), Some("_etc"));
        assert_eq!(parsed.fticks, Some("F-TICKS/x/1.0#REALM=a"));
        let spoof = parse_frame(b"<13>Nov 22 19:00:00 _unparsed app: x").unwrap();
        assert_eq!(spoof.host.as_deref(), Some("_unparsed-host"));
        assert_eq!(parse_frame(b"hello"), Err("no <PRI> header"));
        assert_eq!(parse_frame(b"<999>x"), Err("no <PRI> header"));
        assert_eq!(parse_frame(b"<13>a\0b"), Err("NUL byte"));
        assert_eq!(parse_frame(b"<13>\xff\xfe"), Err("invalid UTF-8"));
        let mut out = Vec::new();
        escape_controls("a\nb\tc", &mut out);
        assert_eq!(out, b"a#012b\tc");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn framer_never_panics_and_respects_the_limit(
            data in proptest::collection::vec(any::<u8>(), 0..400),
            split in 1usize..50,
            max in 1usize..64,
        ) {
            let chunks: Vec<&[u8]> = data.chunks(split).collect();
            for frame in frames(max, &chunks) {
                if let Frame::Message(bytes) = frame {
                    // A last frame cut short may still hold its length header.
                    prop_assert!(bytes.len() <= max + 11);
                }
            }
        }

        #[test]
        fn parse_frame_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_frame(&data);
        }

        /// Past the `<PRI>` check, so syslog_loose sees odd headers and any text.
        #[test]
        fn parse_frame_with_pri_never_panics(
            pri in 0u8..200,
            version in "(1 )?",
            rest in "[ -~\u{80}-\u{10ffff}]{0,80}",
        ) {
            let frame = format!("<{pri}>{version}{rest}");
            if let Ok(Parsed { host: Some(host), .. }) = parse_frame(frame.as_bytes()) {
                prop_assert!(ArchivePath::root().join(&host).is_ok());
            }
        }

        #[test]
        fn lines_survive_framing(lines in proptest::collection::vec("<13>[ -~]{0,30}", 1..10)) {
            let stream: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let got = frames(1024, &[stream.as_bytes()]);
            let want: Vec<Frame> = lines.iter().map(|l| msg(l)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
