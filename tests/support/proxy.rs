//! A TCP proxy that sits between ferry and a test server and injects network faults.
//!
//! What it does: listens on `127.0.0.1` for the control connection (a free port) and on
//! `127.0.0.1:P` for every port `P` of the server's passive range, and forwards each accepted
//! connection to the upstream server's IP at the same port (the control port for the control
//! listener). For every new connection it draws a fate from a seeded RNG: refuse (accept, then
//! close at once), cut (forward until a random offset in one random direction, then close both
//! sides), stall (forward until a random offset, then forward nothing more, in either direction,
//! until the client stops sending and a second more; then close both sides), or pass untouched. [`FaultProxy::stats`] counts what happened.
//!
//! What it does not do: decrypt, parse or rewrite anything. It forwards bytes as they are, so
//! TLS (and TLS session reuse on data connections) is end to end between ferry and the server.
//! It does not delay or reorder bytes, and it listens on IPv4 loopback only.
//!
//! How it fits: ferry opens data connections to the control connection's IP at the port the
//! server announced, ignoring the address in a PASV reply. With the server on `127.0.0.2` and
//! ferry pointed at [`FaultProxy::addr`] on `127.0.0.1`, both control and data connections go
//! through the proxy, while the servers' certificates (valid for 127.0.0.1) still verify. The
//! embedded server takes `listen_ip` and the vsftpd harness `listen_address` for this; both bind
//! their passive sockets to the control connection's local IP, so their data ports are on
//! `127.0.0.2` too and do not collide with the proxy's listeners on `127.0.0.1`.
//!
//! Determinism: connection `n` (in accept order, over all listeners) always gets the same fate
//! for the same seed, because every connection draws the same number of values from the one
//! RNG, even while faults are disabled (then the fate is overridden to pass). Accept order is
//! the order of a sequential client's connects; connects racing on two listeners can swap.
//!
//! Stats count faults that happened: a connection fated to be cut or stalled whose traffic ended
//! before its offset counts in `connections` only. Each counter is incremented before the fault
//! is visible to either peer, so a test that saw a connection end can read the stats at once.
//!
//! Ports: the proxy binds every port of the passive range on `127.0.0.1`, so take the range from
//! [`data_port_block`], not from the other harnesses' blocks (40000-47999, 52000-57999). Those lie
//! inside Linux's ephemeral range (32768-60999 by default): an outgoing connection that used,
//! say, 52092 as its source port and closed first leaves a TIME_WAIT that refuses `bind` on
//! 127.0.0.1:52092 for a minute, SO_REUSEADDR or not. The servers get past that by picking one
//! random passive port and retrying; a proxy that needs all of them cannot.
//!
//! Shutdown: dropping the proxy aborts every task, which closes every socket as soon as the
//! runtime runs again (at the latest when the test's runtime ends). [`FaultProxy::shutdown`]
//! waits until all of them are closed, for a test that binds the same ports again.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Bytes read at once in each direction of a forwarded connection.
const BUFFER: usize = 64 * 1024;

/// How long a stalled connection stays open after the client stopped sending (a half-close, or
/// ferry hanging up after its timeout) before the proxy hangs up on both sides.
const STALL_RELEASE: std::time::Duration = std::time::Duration::from_secs(1);

/// Ports per block handed out by [`data_port_block`].
const BLOCK: u16 = 20;

/// A block of 20 ports for a server's passive range behind a proxy, outside the ephemeral port
/// range (see the module doc), each port free to bind on 127.0.0.1 right now. Successive calls
/// in one process hand out different blocks; the search starts at an offset drawn from the PID
/// so that two test processes rarely try the same block.
pub fn data_port_block() -> RangeInclusive<u16> {
    data_port_blocks(1)
}

/// `count` adjacent blocks of [`data_port_block`] as one range, for a server that keeps many
/// data connections in flight (stalled ones hold a port until they time out).
pub fn data_port_blocks(count: u16) -> RangeInclusive<u16> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (first, blocks) = block_region();
    let usable = blocks - (count - 1);
    let base = u64::from(std::process::id());
    for _ in 0..usable {
        let n = (base + NEXT.fetch_add(u64::from(count), Ordering::Relaxed)) % u64::from(usable);
        let start = first + u16::try_from(n).unwrap() * BLOCK;
        let block = start..=start + BLOCK * count - 1;
        if block.clone().all(can_bind) {
            return block;
        }
    }
    panic!("no {count} blocks of {BLOCK} free ports on 127.0.0.1 from {first} on");
}

/// The first port and the number of blocks of the region used for data port blocks: above the
/// ephemeral range when at least 50 blocks fit there, else below it (but above 10000).
fn block_region() -> (u16, u16) {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((bounds.next()??, bounds.next()??))
        })
        .unwrap_or((32768, 60999));
    let above = (65535 - u32::from(high)) / u32::from(BLOCK);
    if above >= 50 {
        return (high + 1, u16::try_from(above).unwrap());
    }
    let below = u32::from(low.saturating_sub(10000)) / u32::from(BLOCK);
    assert!(
        below >= 50,
        "the ephemeral port range {low}-{high} leaves no room for passive port blocks"
    );
    (10000, u16::try_from(below).unwrap())
}

/// Whether a listener with SO_REUSEADDR (as tokio's) could bind 127.0.0.1:`port` now.
fn can_bind(port: u16) -> bool {
    tokio::net::TcpSocket::new_v4()
        .and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        })
        .is_ok()
}

/// Which faults to inject, as fractions of new connections (control and data alike).
/// `refuse + cut + stall` must not exceed 1; the rest pass untouched. The default injects none.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Seeds the RNG that decides every connection's fate, offset and direction.
    pub seed: u64,
    /// Fraction of connections forwarded until a random offset, then closed on both sides.
    pub cut: f64,
    /// Fraction of connections forwarded until a random offset, then frozen (bytes from the
    /// client are swallowed) until the client hangs up, which closes the server's side too.
    pub stall: f64,
    /// Fraction of connections accepted and closed at once, before any byte is forwarded.
    pub refuse: f64,
    /// Offsets for cuts and stalls are drawn uniformly from `0..=max_cut_offset` bytes, counted
    /// in the one direction drawn for that connection.
    pub max_cut_offset: u64,
}

/// What the proxy has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted, on the control and on every data listener.
    pub connections: u64,
    /// Connections closed at once.
    pub refused: u64,
    /// Connections closed after their offset was passed.
    pub cut: u64,
    /// Connections frozen after their offset was passed.
    pub stalled: u64,
}

/// A running proxy; see the module doc.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    listeners: JoinSet<()>,
}

impl FaultProxy {
    /// Listen on `127.0.0.1` (control on a free port, data on every port of `data_ports`) and
    /// forward to `upstream_ip` at `upstream_control_port` and at the same data ports. Panics
    /// when a port cannot be bound, naming it, or when the fault fractions make no sense.
    pub async fn start(
        upstream_ip: Ipv4Addr,
        upstream_control_port: u16,
        data_ports: RangeInclusive<u16>,
        faults: Faults,
    ) -> FaultProxy {
        check_faults(&faults);
        let shared = Arc::new(Shared {
            rng: Mutex::new(StdRng::seed_from_u64(faults.seed)),
            faults,
            enabled: AtomicBool::new(true),
            aim: std::sync::atomic::AtomicU8::new(0),
            counters: Counters::default(),
        });
        let control = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap_or_else(|e| panic!("fault proxy cannot listen on 127.0.0.1: {e}"));
        let addr = control.local_addr().unwrap();
        let stop = CancellationToken::new();
        let mut listeners = JoinSet::new();
        listeners.spawn(accept_loop(
            control,
            SocketAddrV4::new(upstream_ip, upstream_control_port),
            shared.clone(),
            stop.clone(),
        ));
        for port in data_ports {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
                .await
                .unwrap_or_else(|e| {
                    panic!("fault proxy cannot listen on data port 127.0.0.1:{port}: {e}")
                });
            listeners.spawn(accept_loop(
                listener,
                SocketAddrV4::new(upstream_ip, port),
                shared.clone(),
                stop.clone(),
            ));
        }
        FaultProxy {
            addr,
            shared,
            stop,
            listeners,
        }
    }

    /// The control address to point ferry at, `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Inject faults into new connections (`true`, the initial state) or let them pass
    /// untouched. Connections already accepted keep the fate they were given.
    pub fn set_enabled(&self, on: bool) {
        self.shared.enabled.store(on, Ordering::SeqCst);
    }

    /// Count cut and stall offsets of new connections in the direction files travel in:
    /// toward the server (`Aim::Uploads`), toward ferry (`Aim::Downloads`), or either at random
    /// (`Aim::Random`, the initial state). The random draws stay the same, so fates stay
    /// seeded.
    pub fn aim(&self, aim: Aim) {
        let v = match aim {
            Aim::Random => 0,
            Aim::Uploads => 1,
            Aim::Downloads => 2,
        };
        self.shared.aim.store(v, Ordering::SeqCst);
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            connections: c.connections.load(Ordering::SeqCst),
            refused: c.refused.load(Ordering::SeqCst),
            cut: c.cut.load(Ordering::SeqCst),
            stalled: c.stalled.load(Ordering::SeqCst),
        }
    }

    /// Stop listening and close every connection, returning once every socket is closed.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.listeners.join_next().await.is_some() {}
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("faults", &self.shared.faults)
            .field("enabled", &self.shared.enabled.load(Ordering::SeqCst))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting a listener task drops its JoinSet of connections, which aborts those too.
        self.stop.cancel();
        self.listeners.abort_all();
    }
}

fn check_faults(faults: &Faults) {
    let fractions = [
        ("cut", faults.cut),
        ("stall", faults.stall),
        ("refuse", faults.refuse),
    ];
    for (name, p) in fractions {
        assert!(
            (0.0..=1.0).contains(&p),
            "fault fraction {name} = {p} is not in 0..=1"
        );
    }
    let sum = faults.cut + faults.stall + faults.refuse;
    assert!(
        sum <= 1.0 + 1e-9,
        "fault fractions cut + stall + refuse = {sum} exceed 1"
    );
}

/// State every listener and connection task shares.
struct Shared {
    faults: Faults,
    enabled: AtomicBool,
    /// 0: offsets counted in a random direction; 1: toward the server; 2: toward ferry.
    aim: std::sync::atomic::AtomicU8,
    rng: Mutex<StdRng>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
    stalled: AtomicU64,
}

/// Which direction cut and stall offsets are counted in (see [`FaultProxy::aim`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aim {
    Random,
    Uploads,
    Downloads,
}

/// The direction in which a cut or stall offset is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Toward {
    /// Bytes from ferry to the server.
    Server,
    /// Bytes from the server to ferry.
    Client,
}

/// What happens to one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Pass,
    Refuse,
    Cut { toward: Toward, after: u64 },
    Stall { toward: Toward, after: u64 },
}

impl Shared {
    /// Count a new connection and draw its fate. Every call draws the same three values, so
    /// the `n`th connection's fate depends only on the seed and `n`.
    fn next_fate(&self) -> Fate {
        let (roll, after, toward_server) = {
            let mut rng = self
                .rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Counted under the lock, so the count and the draw order agree.
            self.counters.connections.fetch_add(1, Ordering::SeqCst);
            let roll: f64 = rng.random();
            let after = rng.random_range(0..=self.faults.max_cut_offset);
            let toward_server = rng.random_bool(0.5);
            (roll, after, toward_server)
        };
        if !self.enabled.load(Ordering::SeqCst) {
            return Fate::Pass;
        }
        let toward = match (self.aim.load(Ordering::SeqCst), toward_server) {
            (1, _) | (0, true) => Toward::Server,
            _ => Toward::Client,
        };
        let f = &self.faults;
        if roll < f.refuse {
            Fate::Refuse
        } else if roll < f.refuse + f.cut {
            Fate::Cut { toward, after }
        } else if roll < f.refuse + f.cut + f.stall {
            Fate::Stall { toward, after }
        } else {
            Fate::Pass
        }
    }
}

/// Accept on one listener until stopped; every connection runs in a task of this loop's
/// JoinSet, so ending or aborting the loop ends them all.
async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddrV4,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((client, _peer)) => {
                    let fate = shared.next_fate();
                    connections.spawn(handle_connection(client, upstream, fate, shared.clone()));
                }
                Err(e) => {
                    eprintln!("fault proxy: accept on {upstream} failed: {e}");
                    // Errors such as EMFILE persist for a while; do not spin on them.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow with every one.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn handle_connection(
    mut client: TcpStream,
    upstream: SocketAddrV4,
    fate: Fate,
    shared: Arc<Shared>,
) {
    let counters = &shared.counters;
    let limit = match fate {
        Fate::Refuse => {
            counters.refused.fetch_add(1, Ordering::SeqCst);
            return;
        }
        Fate::Pass => None,
        Fate::Cut { toward, after } | Fate::Stall { toward, after } => Some((toward, after)),
    };
    let mut server = match TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("fault proxy: cannot connect to upstream {upstream}: {e}");
            return;
        }
    };
    // Small writes (FTP replies, TLS records) must not wait for Nagle on either leg.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    match forward(&mut client, &mut server, limit).await {
        Forwarded::Ended => {}
        Forwarded::LimitReached => match fate {
            Fate::Stall { .. } => {
                counters.stalled.fetch_add(1, Ordering::SeqCst);
                // A black hole: forward nothing more, in either direction, until ferry gives up
                // and closes its side (its timeout), and a moment more; then hang up on both, as
                // the server's own idle timeout would, so that a stall does not hold one of the
                // server's passive ports for ever.
                let mut sink = vec![0u8; BUFFER];
                while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
                tokio::time::sleep(STALL_RELEASE).await;
                let _ = server.shutdown().await;
            }
            _ => {
                counters.cut.fetch_add(1, Ordering::SeqCst);
                // FIN to both peers; dropping right after turns it into a reset where unread
                // bytes remain, as an abrupt close would.
                let _ = client.shutdown().await;
                let _ = server.shutdown().await;
            }
        },
    }
}

/// How forwarding one connection ended.
enum Forwarded {
    /// Both directions reached end of stream, or one failed.
    Ended,
    /// The limited direction passed its offset; nothing more is forwarded.
    LimitReached,
}

/// How one direction of forwarding ended.
enum Pumped {
    /// The source reached end of stream; the end was passed on to the destination.
    Eof,
    /// The offset was passed.
    Limit,
}

/// Forward both directions until both end, one fails, or the limited one passes its offset.
async fn forward(
    client: &mut TcpStream,
    server: &mut TcpStream,
    limit: Option<(Toward, u64)>,
) -> Forwarded {
    let limit_toward = |toward| limit.and_then(|(t, after)| (t == toward).then_some(after));
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let up = pump(
        &mut client_read,
        &mut server_write,
        limit_toward(Toward::Server),
    );
    let down = pump(
        &mut server_read,
        &mut client_write,
        limit_toward(Toward::Client),
    );
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    loop {
        let pumped = tokio::select! {
            r = &mut up, if !up_done => { up_done = true; r }
            r = &mut down, if !down_done => { down_done = true; r }
            else => return Forwarded::Ended,
        };
        match pumped {
            // A half-close: the other direction goes on (an upload's end, say).
            Ok(Pumped::Eof) => {}
            Ok(Pumped::Limit) => return Forwarded::LimitReached,
            Err(_) => return Forwarded::Ended,
        }
    }
}

/// Copy `from` to `to` until end of stream (then shut `to` down for writing) or until exactly
/// `limit` bytes have been copied.
async fn pump<R, W>(from: &mut R, to: &mut W, limit: Option<u64>) -> io::Result<Pumped>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if limit == Some(0) {
        return Ok(Pumped::Limit);
    }
    let mut buf = vec![0u8; BUFFER];
    let mut passed: u64 = 0;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(Pumped::Eof);
        }
        let take = match limit {
            Some(limit) => n.min(usize::try_from(limit - passed).unwrap_or(usize::MAX)),
            None => n,
        };
        to.write_all(&buf[..take]).await?;
        passed += take as u64;
        if limit.is_some_and(|limit| passed >= limit) {
            return Ok(Pumped::Limit);
        }
    }
}
