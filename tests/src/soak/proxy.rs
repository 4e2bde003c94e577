//! The faulty network between the agents and the server: a TCP proxy for the FTP control
//! port and, one to one, for every passive data port (the server advertises the proxy's
//! address with `passive_host`), that can cut every live connection, stall, or trickle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the bytes passing through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NetMode {
    /// Forwards at full speed.
    Clear = 0,
    /// Forwards nothing (connections stay open).
    Stall = 1,
    /// Forwards 1 KiB every 100 ms per connection and direction (10 KiB/s).
    Trickle = 2,
}

/// The proxy's shared switches and counters.
#[derive(Default)]
pub struct ProxyState {
    mode: AtomicU8,
    /// Bumped by [`ProxyState::cut_all`]; a connection opened before a bump closes.
    cut_generation: AtomicU64,
    pub connections: AtomicU64,
    pub cut_connections: AtomicU64,
    pub bytes: AtomicU64,
}

impl ProxyState {
    pub fn set_mode(&self, mode: NetMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn mode(&self) -> NetMode {
        match self.mode.load(Ordering::SeqCst) {
            1 => NetMode::Stall,
            2 => NetMode::Trickle,
            _ => NetMode::Clear,
        }
    }

    /// Cuts every connection open now, mid-transfer or not.
    pub fn cut_all(&self) {
        self.cut_generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// Listens on `listen` and forwards each connection to `target`, until the runtime ends.
pub async fn forward(
    listen: SocketAddr,
    target: SocketAddr,
    state: Arc<ProxyState>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return; // the server is down: the client sees the connection close
                };
                state.connections.fetch_add(1, Ordering::Relaxed);
                let generation = state.cut_generation.load(Ordering::SeqCst);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = pump(client_read, server_write, state.clone(), generation);
                let down = pump(server_read, client_write, state.clone(), generation);
                // A direction that ends passes the end on (shutdown); a cut ends both.
                let (cut_up, cut_down) = tokio::join!(up, down);
                if cut_up || cut_down {
                    state.cut_connections.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    Ok(())
}

/// Copies one direction; returns true when it stopped because of a cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<ProxyState>,
    generation: u64,
) -> bool {
    let mut buffer = vec![0u8; 64 * 1024];
    let cut = || state.cut_generation.load(Ordering::SeqCst) != generation;
    loop {
        while state.mode() == NetMode::Stall && !cut() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if cut() {
            return true;
        }
        let limit = match state.mode() {
            NetMode::Trickle => 1024,
            _ => buffer.len(),
        };
        // Wake up now and then to notice a cut while the peer is quiet.
        let read =
            tokio::time::timeout(Duration::from_millis(200), from.read(&mut buffer[..limit])).await;
        let n = match read {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => {
                let _ = to.shutdown().await;
                return false;
            }
            Ok(Ok(n)) => n,
        };
        if cut() {
            return true;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return false;
        }
        state.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if state.mode() == NetMode::Trickle {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
