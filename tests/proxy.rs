//! The fault-injection proxy on its own (against an echo server on 127.0.0.2), then wired in
//! front of the embedded server and vsftpd listening on 127.0.0.2, with ferry syncing through it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Setup, endpoint, job, pseudo_random, tree};
use ferry::config::Direction;
use ferry::embedded::{EmbeddedOptions, EmbeddedServer};
use support::proxy::{FaultProxy, Faults, ProxyStats, data_port_block};
use support::vsftpd::{Vsftpd, VsftpdOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Where the servers behind the proxy listen.
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// An echo server on 127.0.0.2: a control port of its own and the given data ports. Each
/// connection sends back what it receives and ends when its peer does.
struct Echo {
    control_port: u16,
    accepted: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
    _tasks: JoinSet<()>,
}

impl Echo {
    async fn start(data_ports: &[u16]) -> Echo {
        let (accepted, closed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let control = TcpListener::bind((UPSTREAM, 0)).await.unwrap();
        let control_port = control.local_addr().unwrap().port();
        let mut listeners = vec![control];
        for &port in data_ports {
            listeners.push(TcpListener::bind((UPSTREAM, port)).await.unwrap());
        }
        let mut tasks = JoinSet::new();
        for listener in listeners {
            tasks.spawn(serve_echo(listener, accepted.clone(), closed.clone()));
        }
        Echo {
            control_port,
            accepted,
            closed,
            _tasks: tasks,
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Wait (at most 5 s) until every connection the echo server accepted has ended.
    async fn wait_all_closed(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.closed.load(Ordering::SeqCst) < self.accepted() {
            assert!(
                Instant::now() < deadline,
                "upstream connections still open: {} of {} closed",
                self.closed.load(Ordering::SeqCst),
                self.accepted()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn serve_echo(listener: TcpListener, accepted: Arc<AtomicU64>, closed: Arc<AtomicU64>) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        accepted.fetch_add(1, Ordering::SeqCst);
        let closed = closed.clone();
        connections.spawn(async move {
            let (mut from, mut to) = stream.into_split();
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.shutdown().await;
            closed.fetch_add(1, Ordering::SeqCst);
        });
    }
}

/// How one exchange with the echo server through the proxy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Every byte came back, then the end of the stream.
    Echoed,
    /// The connection ended (end of stream or error) before every byte came back.
    ClosedEarly,
    /// Nothing arrived for the idle time, and the connection was still open.
    Stalled,
}

/// Send `payload` (then half-close) while reading the echo; returns what came back and how it
/// ended. Writing and reading run together so neither side's buffers can deadlock the other.
async fn exchange(addr: SocketAddr, payload: &[u8], idle: Duration) -> (usize, Ending) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let write = async {
        // A refused or cut connection fails the write; the read side reports the ending.
        let _ = writer.write_all(payload).await;
        let _ = writer.shutdown().await;
        std::future::pending::<()>().await;
    };
    let mut received = Vec::with_capacity(payload.len());
    let read = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout(idle, reader.read(&mut buf)).await {
                Err(_) => return Ending::Stalled,
                Ok(Ok(0) | Err(_)) => {
                    return if received == payload {
                        Ending::Echoed
                    } else {
                        Ending::ClosedEarly
                    };
                }
                Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    let ending = tokio::select! {
        ending = read => ending,
        () = write => unreachable!("the writer never finishes"),
    };
    (received.len(), ending)
}

/// The first `n` ports of a fresh block: the proxy tests that need no data listeners still
/// bind a few, to exercise them.
fn data_ports(n: u16) -> RangeInclusive<u16> {
    let block = data_port_block();
    *block.start()..=*block.start() + n - 1
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

#[tokio::test]
async fn untouched_connections_carry_every_byte_both_ways_on_control_and_data_ports() {
    let ports = data_ports(3);
    let (first, last) = (*ports.start(), *ports.end());
    let echo = Echo::start(&[first, last]).await;
    let proxy = FaultProxy::start(UPSTREAM, echo.control_port, ports, Faults::default()).await;
    assert_eq!(proxy.addr().ip(), Ipv4Addr::LOCALHOST);
    let payload = pseudo_random(3 * 1024 * 1024 + 5, 11);
    for addr in [proxy.addr(), localhost(first), localhost(last)] {
        let (received, ending) = exchange(addr, &payload, Duration::from_secs(10)).await;
        assert_eq!(
            (received, ending),
            (payload.len(), Ending::Echoed),
            "through {addr}"
        );
    }
    echo.wait_all_closed().await;
    assert_eq!(
        proxy.stats(),
        ProxyStats {
            connections: 3,
            ..ProxyStats::default()
        }
    );
}

#[tokio::test]
async fn cut_connections_end_before_their_offset_on_both_sides() {
    let echo = Echo::start(&[]).await;
    let faults = Faults {
        seed: 1,
        cut: 1.0,
        max_cut_offset: 100_000,
        ..Faults::default()
    };
    let proxy = FaultProxy::start(UPSTREAM, echo.control_port, data_ports(1), faults).await;
    let payload = pseudo_random(1024 * 1024, 12);
    for _ in 0..8 {
        let (received, ending) = exchange(proxy.addr(), &payload, Duration::from_secs(5)).await;
        assert_eq!(ending, Ending::ClosedEarly);
        // The cut direction carries at most the offset, and an echo cannot return more than
        // reached the server, so nothing past the largest offset ever comes back.
        assert!(received <= 100_000, "{received} bytes came back");
    }
    assert_eq!(
        proxy.stats(),
        ProxyStats {
            connections: 8,
            cut: 8,
            ..ProxyStats::default()
        }
    );
    assert_eq!(echo.accepted(), 8);
    echo.wait_all_closed().await;
}

#[tokio::test]
async fn refused_connections_close_at_once_and_never_reach_the_server() {
    let ports = data_ports(2);
    let data = *ports.start();
    let echo = Echo::start(&[data]).await;
    let faults = Faults {
        seed: 2,
        refuse: 1.0,
        ..Faults::default()
    };
    let proxy = FaultProxy::start(UPSTREAM, echo.control_port, ports, faults).await;
    let started = Instant::now();
    for addr in [proxy.addr(), localhost(data), proxy.addr()] {
        let (received, ending) = exchange(addr, b"hello", Duration::from_secs(5)).await;
        assert_eq!(
            (received, ending),
            (0, Ending::ClosedEarly),
            "through {addr}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusals waited"
    );
    assert_eq!(
        proxy.stats(),
        ProxyStats {
            connections: 3,
            refused: 3,
            ..ProxyStats::default()
        }
    );
    assert_eq!(echo.accepted(), 0);
}

/// Sixteen sequential exchanges through a proxy with every kind of fault.
async fn mixed_run(seed: u64) -> (Vec<Ending>, ProxyStats) {
    let echo = Echo::start(&[]).await;
    let faults = Faults {
        seed,
        cut: 0.3,
        stall: 0.2,
        refuse: 0.2,
        max_cut_offset: 50_000,
    };
    let proxy = FaultProxy::start(UPSTREAM, echo.control_port, data_ports(1), faults).await;
    let payload = pseudo_random(200_000, 13);
    let mut endings = Vec::new();
    for _ in 0..16 {
        let (_, ending) = exchange(proxy.addr(), &payload, Duration::from_millis(300)).await;
        endings.push(ending);
    }
    (endings, proxy.stats())
}

#[tokio::test]
async fn the_same_seed_gives_the_same_fates() {
    let (endings, stats) = mixed_run(7).await;
    let (again_endings, again_stats) = mixed_run(7).await;
    assert_eq!(endings, again_endings);
    assert_eq!(stats, again_stats);
    assert_eq!(stats.connections, 16);
    // Seed 7 gives every kind of fate in sixteen connections.
    assert!(
        stats.refused > 0 && stats.cut > 0 && stats.stalled > 0,
        "{stats:?}"
    );
    let passed = endings.iter().filter(|e| **e == Ending::Echoed).count() as u64;
    assert_eq!(
        passed + stats.refused + stats.cut + stats.stalled,
        16,
        "{endings:?} {stats:?}"
    );
    let stalled = endings.iter().filter(|e| **e == Ending::Stalled).count() as u64;
    assert_eq!(stalled, stats.stalled);
    let (other_endings, _) = mixed_run(8).await;
    assert_ne!(endings, other_endings, "seeds 7 and 8 decide alike");
}

#[tokio::test]
async fn disabled_faults_let_new_connections_pass_and_running_ones_keep_their_fate() {
    let echo = Echo::start(&[]).await;
    let faults = Faults {
        seed: 3,
        stall: 1.0,
        max_cut_offset: 1000,
        ..Faults::default()
    };
    let proxy = FaultProxy::start(UPSTREAM, echo.control_port, data_ports(1), faults).await;
    let idle = Duration::from_millis(300);
    let payload = pseudo_random(100_000, 14);

    // A connection that stalls, kept open across the switch.
    let mut stalled = TcpStream::connect(proxy.addr()).await.unwrap();
    stalled.write_all(&payload).await.unwrap();
    let mut buf = vec![0u8; 200_000];
    let mut before = 0;
    while let Ok(n) = tokio::time::timeout(idle, stalled.read(&mut buf)).await {
        let n = n.unwrap();
        assert_ne!(n, 0, "a stalled connection was closed");
        before += n;
    }
    assert!(before <= 1000, "{before} bytes came back before the stall");

    proxy.set_enabled(false);
    assert_eq!(
        exchange(proxy.addr(), &payload, idle).await,
        (payload.len(), Ending::Echoed)
    );
    // The stalled connection is still stalled, and still open.
    assert!(
        tokio::time::timeout(idle, stalled.read(&mut buf))
            .await
            .is_err()
    );

    proxy.set_enabled(true);
    assert_eq!(
        exchange(proxy.addr(), &payload, idle).await.1,
        Ending::Stalled
    );
    assert_eq!(
        proxy.stats(),
        ProxyStats {
            connections: 3,
            stalled: 2,
            ..ProxyStats::default()
        }
    );
}

#[tokio::test]
async fn a_data_port_in_use_is_named_in_the_panic() {
    let ports = data_ports(3);
    let taken = *ports.start() + 1;
    let _holder = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, taken)).unwrap();
    let failed = tokio::spawn(FaultProxy::start(UPSTREAM, 21, ports, Faults::default()))
        .await
        .unwrap_err();
    let message = failed.into_panic().downcast::<String>().unwrap();
    assert_eq!(
        *message,
        format!(
            "fault proxy cannot listen on data port 127.0.0.1:{taken}: \
             Address already in use (os error 98)"
        )
    );
}

#[tokio::test]
async fn dropping_the_proxy_closes_every_socket_and_shutdown_frees_the_ports() {
    let ports = data_ports(2);
    let echo = Echo::start(&[]).await;
    let faults = Faults {
        seed: 4,
        stall: 1.0,
        max_cut_offset: 10,
        ..Faults::default()
    };
    let proxy = FaultProxy::start(UPSTREAM, echo.control_port, ports.clone(), faults).await;
    let addr = proxy.addr();
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"stall me, please").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.stats().stalled == 0 {
        assert!(Instant::now() < deadline, "never stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(proxy);
    // The bytes passed before the stall (at most the offset) may still be unread.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
        .await
        .expect("the stalled connection stayed open after drop")
        .ok();
    assert!(rest.len() <= 10, "{} bytes after the stall", rest.len());
    echo.wait_all_closed().await;
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");

    // shutdown returns once every socket is closed, so the same ports bind again at once.
    let proxy = FaultProxy::start(
        UPSTREAM,
        echo.control_port,
        ports.clone(),
        Faults::default(),
    )
    .await;
    let _open = TcpStream::connect(localhost(*ports.start())).await.unwrap();
    proxy.shutdown().await;
    let again = FaultProxy::start(UPSTREAM, echo.control_port, ports, Faults::default()).await;
    assert_eq!(
        exchange(again.addr(), b"back", Duration::from_secs(5)).await,
        (4, Ending::Echoed)
    );
}

/// Files for a pull: a few small ones and one of a couple of MiB.
fn write_remote_files(data: &Path) -> usize {
    std::fs::create_dir_all(data.join("sub")).unwrap();
    let files: [(&str, Vec<u8>); 4] = [
        ("a.txt", b"alpha\n".to_vec()),
        ("b.bin", pseudo_random(2 * 1024 * 1024 + 3, 21)),
        ("sub/c.txt", b"gamma\n".to_vec()),
        ("sub/d.bin", pseudo_random(70_000, 22)),
    ];
    for (name, contents) in &files {
        std::fs::write(data.join(name), contents).unwrap();
    }
    files.len()
}

#[tokio::test]
async fn ferry_pulls_from_the_embedded_server_on_127_0_0_2_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (server_root, pki, inbox) = (
        dir.path().join("server"),
        dir.path().join("pki"),
        dir.path().join("inbox"),
    );
    for d in [&server_root, &pki, &inbox] {
        std::fs::create_dir_all(d).unwrap();
    }
    let files = write_remote_files(&server_root.join("data"));
    // Not support::embedded_passive_ports(): the proxy must bind every port of the range, and
    // those blocks lie in the ephemeral port range (see support::proxy).
    let ports = data_port_block();
    let opts = EmbeddedOptions {
        passive_ports: ports.clone(),
        listen_ip: UPSTREAM,
        ..EmbeddedOptions::default()
    };
    let server = EmbeddedServer::start(&server_root, &pki, opts)
        .await
        .unwrap();
    assert_eq!(server.addr().ip(), UPSTREAM);
    let proxy = FaultProxy::start(UPSTREAM, server.addr().port(), ports, Faults::default()).await;

    let setup = Setup::new(
        endpoint(
            proxy.addr(),
            server.ca_pem(),
            "ferry",
            ferry::embedded::TEST_PASSWORD,
        ),
        vec![job("pull", Direction::Pull, &inbox, "/data")],
    );
    let report = setup.sync_ok("pull").await;
    assert_eq!(report.execution.transferred, files as u64);
    assert_eq!(tree(&inbox), tree(&server_root.join("data")));

    // The server listens on 127.0.0.2 only, so every data connection to 127.0.0.1 went through
    // the proxy: at least one per download and one per listed directory, besides the control
    // connection(s), of which the endpoint allows two.
    let stats = proxy.stats();
    let listings = 2;
    assert!(
        stats.connections >= (files + listings + 1) as u64,
        "{stats:?}"
    );
    assert!(stats.connections > 2, "{stats:?}");
    assert_eq!(
        (stats.refused, stats.cut, stats.stalled),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn ferry_pulls_from_vsftpd_on_127_0_0_2_through_the_proxy() {
    let Some(v) = Vsftpd::start(VsftpdOptions {
        listen_address: Some(UPSTREAM),
        passive_ports: Some(data_port_block()),
        ..VsftpdOptions::default()
    }) else {
        return;
    };
    assert_eq!(v.addr().ip(), UPSTREAM);
    let files = write_remote_files(&v.root().join("data"));
    v.give_root_to_user();
    let proxy = FaultProxy::start(
        UPSTREAM,
        v.addr().port(),
        v.passive_ports(),
        Faults::default(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let setup = Setup::new(
        endpoint(proxy.addr(), v.ca_pem(), v.user(), v.password()),
        vec![job("pull", Direction::Pull, &inbox, "/data")],
    );
    let report = setup.sync_ok("pull").await;
    assert_eq!(report.execution.transferred, files as u64);
    assert_eq!(tree(&inbox), tree(&v.root().join("data")));

    // vsftpd saw every login and every download come from the proxy's side of loopback, and
    // the proxy carried more connections than there were logins: the data connections.
    let log = v.log_text();
    let logins = log.matches("OK LOGIN: Client \"127.0.0.1\"").count();
    let downloads = log.matches("OK DOWNLOAD: Client \"127.0.0.1\"").count();
    assert!(logins >= 1, "{log}");
    assert_eq!(downloads, files, "{log}");
    let stats = proxy.stats();
    assert!(
        stats.connections >= (logins + files + 2) as u64,
        "{stats:?}, {logins} logins"
    );
    assert_eq!(
        (stats.refused, stats.cut, stats.stalled),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn vsftpd_options_for_fault_tests_take_effect() {
    use support::{ClientTls, client_config, login_explicit};
    let Some(v) = Vsftpd::start(VsftpdOptions {
        listen_address: Some(UPSTREAM),
        passive_ports: Some(data_port_block()),
        max_per_ip: Some(1),
        idle_session_timeout: Some(1),
        ..VsftpdOptions::default()
    }) else {
        return;
    };
    let proxy = FaultProxy::start(
        UPSTREAM,
        v.addr().port(),
        v.passive_ports(),
        Faults::default(),
    )
    .await;
    let login = || {
        login_explicit(
            proxy.addr(),
            client_config(v.ca_pem(), ClientTls::Any, None),
            v.user(),
            v.password(),
        )
    };

    // max_per_ip: a second connection from the same address is turned away with a 421.
    let mut ftp = login().await;
    assert_eq!(v.session_count(), 1);
    let mut second = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut greeting = vec![0u8; 256];
    let n = second.read(&mut greeting).await.unwrap();
    let greeting = String::from_utf8_lossy(&greeting[..n]);
    assert!(greeting.starts_with("421 "), "{greeting}");
    drop(second);
    // The turned-away connection counts until vsftpd has reaped its process.
    let deadline = Instant::now() + Duration::from_secs(5);
    while v.session_count() > 1 {
        assert!(
            Instant::now() < deadline,
            "the 421 session was never reaped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // kill_one_session: the logged-in session dies and is reaped; then nothing is left.
    assert!(v.kill_one_session());
    assert_eq!(v.session_count(), 0);
    assert!(ftp.noop().await.is_err(), "the session survived");
    drop(ftp);
    assert!(!v.kill_one_session());

    // idle_session_timeout: an idle session is closed after a second.
    let mut ftp = login().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(ftp.noop().await.is_err(), "an idle session stayed open");
}
