//! A tiny scripted FTPS server that misbehaves on purpose.
//!
//! What it does: explicit FTPS (AUTH TLS) on 127.0.0.1 with a throwaway CA, one login
//! (`ferry`/`ferry`), enough commands for a client to log in, list and download, and data
//! connections over TLS (any session resumption is accepted). Modes:
//! - [`Hostile::listing`]: LIST (and MLSD when asked) of any directory answers exactly the given
//!   raw lines, whatever names they carry; RETR of any name sends `b"hostile"` and records the
//!   name, so a test can prove ferry never asked for a hostile name.
//! - [`Hostile::stall_after_login`]: logs in, then never answers another command.
//! - [`Hostile::stall_data`]: opens the RETR data connection, then sends nothing.
//! - [`Hostile::with`]: a listing plus [`Behaviour`]: other answers for some directories (an
//!   empty one, an endless line), RETR sending endless data, PASV replies naming another host
//!   (with a decoy listening there to count who comes), a refusal that echoes the password.
//!
//! What it does not do: uploads, renames, directories, active mode, or anything beyond what a
//! listing/timeout test needs (other commands get 502). It is not a model of a real server.
//!
//! How it fits: integration tests for untrusted names and timeouts start one per test; the
//! server task is aborted on drop.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use ferry::embedded::{CertKind, Pki};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// The only login the hostile server accepts.
pub const HOSTILE_USER: &str = "ferry";
pub const HOSTILE_PASSWORD: &str = "hostile-test-secret";
/// What RETR of any name sends.
pub const HOSTILE_CONTENT: &[u8] = b"hostile";

/// What a directory listing sends.
#[derive(Debug, Clone)]
pub enum Body {
    Lines(Vec<String>),
    /// One line of `x` that never ends (until the client stops reading, or 256 MiB).
    EndlessLine,
}

/// Misbehaviour beyond the listing itself.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// For these directories (as CWD names them, e.g. `/data/sub`), send this instead.
    pub dirs: Vec<(String, Body)>,
    /// RETR sends data without end (until the client stops reading, or 512 MiB).
    pub endless_retr: bool,
    /// PASV replies name this address while data is served on 127.0.0.1 (EPSV is then not
    /// offered); a decoy listens on the named address and counts connections.
    pub pasv_elsewhere: Option<Ipv4Addr>,
    /// A wrong password is refused with a reply that quotes it.
    pub echo_password: bool,
    /// RETR answers 150, then gives up on the data connection: in passive mode it accepts and
    /// drops it and replies 426; in active mode it never connects back and replies 425.
    pub abort_data_after_150: bool,
    /// Every PASS is refused with this reply (a whole line, e.g. `530 ...`).
    pub refuse_login: Option<String>,
    /// The reply to this verb (e.g. `TYPE`) is one line of `x` that never ends (until the
    /// client stops reading, or 64 MiB), and then, when `multiline`, more lines of it.
    pub endless_reply_to: Option<(&'static str, bool)>,
    /// RETR answers 150, accepts the passive data connection and holds it open without a TLS
    /// handshake or a byte, then sends this reply (e.g. `451 ...`) on the control connection.
    pub hold_data_then_reply: Option<&'static str>,
}

#[derive(Debug, Clone)]
enum Script {
    Listing { lines: Vec<String>, mlsd: bool },
    StallAfterLogin,
    StallData,
}

/// A running hostile server; dropping it aborts the server task and every session.
pub struct Hostile {
    addr: SocketAddr,
    decoy_connections: Arc<std::sync::atomic::AtomicUsize>,
    retr_bytes: Arc<std::sync::atomic::AtomicU64>,
    port_only: Arc<std::sync::atomic::AtomicBool>,
    pki: Pki,
    requested: Arc<Mutex<Vec<String>>>,
    commands: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Hostile {
    /// Answer LIST of any directory with exactly `lines` (and MLSD too when `mlsd`, which FEAT
    /// then advertises). Must be called inside a tokio runtime.
    pub async fn listing(lines: Vec<String>, mlsd: bool) -> Hostile {
        Self::start(Script::Listing { lines, mlsd }, false).await
    }

    /// Like [`listing`](Self::listing) (LIST only), as a server behind NAT would behave: FEAT
    /// advertises EPSV but EPSV is refused (502), and PASV announces the unroutable 0.0.0.0.
    pub async fn listing_behind_nat(lines: Vec<String>) -> Hostile {
        Self::start(Script::Listing { lines, mlsd: false }, true).await
    }

    /// Like [`listing`](Self::listing) (LIST only), for active mode as an old server does it:
    /// EPRT is refused (502), PORT is accepted and the server connects back to the client.
    pub async fn listing_port_only(lines: Vec<String>) -> Hostile {
        let hostile = Self::start(Script::Listing { lines, mlsd: false }, false).await;
        hostile
            .port_only
            .store(true, std::sync::atomic::Ordering::Relaxed);
        hostile
    }

    /// From now on, refuse EPRT and accept PORT, as [`Hostile::listing_port_only`] does.
    pub fn port_only_mode(&self) {
        self.port_only
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Answer LIST (and MLSD when `mlsd`) with `lines`, misbehaving as `behaviour` says.
    pub async fn with(lines: Vec<String>, mlsd: bool, behaviour: Behaviour) -> Hostile {
        Self::start_with(Script::Listing { lines, mlsd }, false, behaviour).await
    }

    /// Log in normally, then never answer the next command.
    pub async fn stall_after_login() -> Hostile {
        Self::start(Script::StallAfterLogin, false).await
    }

    /// Open the data connection for RETR, then send nothing and never reply 226.
    pub async fn stall_data() -> Hostile {
        Self::start(Script::StallData, false).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA that signed the server certificate (valid for 127.0.0.1 and localhost).
    pub fn ca_pem(&self) -> &Path {
        self.pki.ca_pem()
    }

    pub fn user(&self) -> &'static str {
        HOSTILE_USER
    }

    pub fn password(&self) -> &'static str {
        HOSTILE_PASSWORD
    }

    /// Every RETR argument received, in order, exactly as sent.
    pub fn requested_paths(&self) -> Vec<String> {
        self.requested.lock().unwrap().clone()
    }

    /// Every command line received after AUTH TLS, in order (PASS's argument hidden), so a test
    /// can check that no hostile name reached any command.
    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }

    /// Data connections made to the decoy at the PASV address that was not the server's.
    pub fn decoy_connections(&self) -> usize {
        self.decoy_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes the server managed to send in RETR data connections.
    pub fn retr_bytes(&self) -> u64 {
        self.retr_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn start(script: Script, nat: bool) -> Hostile {
        Self::start_with(script, nat, Behaviour::default()).await
    }

    async fn start_with(script: Script, nat: bool, behaviour: Behaviour) -> Hostile {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(dir.path(), CertKind::Valid).unwrap();
        let acceptor = TlsAcceptor::from(server_config(&pki));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requested = Arc::new(Mutex::new(Vec::new()));
        let commands = Arc::new(Mutex::new(Vec::new()));
        let port_only = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let decoy_connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let retr_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let shared = Arc::new(Shared {
            acceptor,
            port_only: port_only.clone(),
            script,
            nat,
            behaviour,
            decoy_connections: decoy_connections.clone(),
            retr_bytes: retr_bytes.clone(),
            requested: requested.clone(),
            commands: commands.clone(),
        });
        let task = tokio::spawn(accept_loop(listener, shared));
        Hostile {
            addr,
            decoy_connections,
            retr_bytes,
            pki,
            port_only,
            requested,
            commands,
            task,
            _dir: dir,
        }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn server_config(pki: &Pki) -> Arc<ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.server_cert_pem())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.server_key_pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The default config keeps a server-side session cache, so data connections may resume
    // the control connection's session (or any other) with TLS 1.2 or 1.3.
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    Arc::new(config)
}

struct Shared {
    acceptor: TlsAcceptor,
    /// Refuse EPRT, accept PORT (see [`Hostile::listing_port_only`]).
    port_only: Arc<std::sync::atomic::AtomicBool>,
    script: Script,
    /// Refuse EPSV and announce 0.0.0.0 in PASV replies.
    nat: bool,
    behaviour: Behaviour,
    decoy_connections: Arc<std::sync::atomic::AtomicUsize>,
    retr_bytes: Arc<std::sync::atomic::AtomicU64>,
    requested: Arc<Mutex<Vec<String>>>,
    commands: Arc<Mutex<Vec<String>>>,
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Sessions live in a JoinSet owned by this task, so aborting it ends them all.
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        sessions.spawn(serve_session(stream, shared.clone()));
        while sessions.try_join_next().is_some() {}
    }
}

async fn serve_session(stream: TcpStream, shared: Arc<Shared>) {
    let Some(stream) = upgrade_control(stream, &shared.acceptor).await else {
        return;
    };
    let mut control = BufReader::new(stream);
    let mut session = Session::default();
    while let Some(line) = read_command(&mut control).await {
        let (verb, arg) = split_command(&line);
        let logged = if verb == "PASS" {
            "PASS <hidden>"
        } else {
            &line
        };
        shared.commands.lock().unwrap().push(logged.to_string());
        if session.logged_in && matches!(shared.script, Script::StallAfterLogin) {
            std::future::pending::<()>().await;
        }
        if verb == "QUIT" {
            let _ = reply(&mut control, "221 Goodbye.").await;
            return;
        }
        if answer(&mut control, &mut session, &shared, &verb, &arg)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Greet in cleartext and refuse everything but AUTH TLS, then switch the control connection to
/// TLS: no login ever happens in the clear.
async fn upgrade_control(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut plain = BufReader::new(stream);
    // The greeting carries a terminal escape (it turns the screen red), shown by check --connect.
    reply(&mut plain, "220 hostile \x1b[41mtest\x1b[0m server")
        .await
        .ok()?;
    loop {
        let line = read_command(&mut plain).await?;
        let (verb, arg) = split_command(&line);
        match (verb.as_str(), arg.to_ascii_uppercase().as_str()) {
            ("AUTH", "TLS" | "SSL") => {
                reply(&mut plain, "234 Proceed with negotiation.")
                    .await
                    .ok()?;
                // The client waits for 234 before its ClientHello, so nothing is buffered.
                return acceptor.accept(plain.into_inner()).await.ok();
            }
            ("QUIT", _) => {
                let _ = reply(&mut plain, "221 Goodbye.").await;
                return None;
            }
            _ => reply(&mut plain, "530 Please use AUTH TLS first.")
                .await
                .ok()?,
        }
    }
}

#[derive(Default)]
struct Session {
    user: Option<String>,
    logged_in: bool,
    passive: Option<TcpListener>,
    /// Where to connect for the next transfer, after PORT.
    active: Option<SocketAddr>,
    cwd: String,
    /// Data connections held open on purpose (see `Behaviour::hold_data_then_reply`).
    held: Vec<TcpStream>,
}

async fn answer<S>(
    control: &mut S,
    session: &mut Session,
    shared: &Shared,
    verb: &str,
    arg: &str,
) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let mlsd = matches!(shared.script, Script::Listing { mlsd: true, .. });
    let needs_login = !matches!(
        verb,
        "USER" | "PASS" | "PBSZ" | "PROT" | "FEAT" | "SYST" | "NOOP" | "OPTS"
    );
    if needs_login && !session.logged_in && is_known(verb) {
        return reply(control, "530 Please login with USER and PASS.").await;
    }
    if let Some((endless, multiline)) = shared.behaviour.endless_reply_to
        && endless == verb
    {
        return endless_reply(control, multiline).await;
    }
    match verb {
        "USER" => {
            session.user = Some(arg.to_string());
            reply(control, "331 Please specify the password.").await
        }
        "PASS" => {
            if let Some(refusal) = &shared.behaviour.refuse_login {
                reply(control, refusal).await
            } else if session.user.as_deref() == Some(HOSTILE_USER) && arg == HOSTILE_PASSWORD {
                session.logged_in = true;
                reply(control, "230 Login successful.").await
            } else if shared.behaviour.echo_password {
                let text = format!("530 Login incorrect: password {arg} is not {HOSTILE_USER}'s.");
                reply(control, &text).await
            } else {
                reply(control, "530 Login incorrect.").await
            }
        }
        "PBSZ" => reply(control, "200 PBSZ=0").await,
        "PROT" if arg.eq_ignore_ascii_case("P") => reply(control, "200 PROT now Private.").await,
        "PROT" => reply(control, "536 Only PROT P is supported.").await,
        "FEAT" => {
            let epsv = shared.behaviour.pasv_elsewhere.is_none();
            reply(control, &feat_reply(mlsd, epsv)).await
        }
        "SYST" => reply(control, "215 UNIX Type: L8").await,
        "TYPE" => reply(control, "200 Type set.").await,
        "PWD" => reply(control, "257 \"/\" is the current directory").await,
        "CWD" => {
            session.cwd = arg.to_string();
            reply(control, "250 Directory successfully changed.").await
        }
        "OPTS" => reply(control, "200 Always in UTF8 mode.").await,
        "NOOP" => reply(control, "200 NOOP ok.").await,
        "EPSV" if shared.nat => reply(control, "502 EPSV not allowed behind this NAT.").await,
        "EPSV" => {
            let port = open_passive(session).await?;
            reply(
                control,
                &format!("229 Entering Extended Passive Mode (|||{port}|)"),
            )
            .await
        }
        "PASV" => {
            let port = match shared.behaviour.pasv_elsewhere {
                Some(ip) => open_passive_with_decoy(session, ip, shared).await?,
                None => open_passive(session).await?,
            };
            let (hi, lo) = (port >> 8, port & 0xff);
            let ip = match (shared.nat, shared.behaviour.pasv_elsewhere) {
                (true, _) => "0,0,0,0".to_string(),
                (false, Some(ip)) => ip.to_string().replace('.', ","),
                (false, None) => "127,0,0,1".to_string(),
            };
            reply(
                control,
                &format!("227 Entering Passive Mode ({ip},{hi},{lo})."),
            )
            .await
        }
        "EPRT" => reply(control, "502 EPRT not implemented here.").await,
        "PORT" if shared.port_only.load(std::sync::atomic::Ordering::Relaxed) => {
            match parse_port_argument(arg) {
                Some(addr) => {
                    session.active = Some(addr);
                    reply(control, "200 PORT command successful.").await
                }
                None => reply(control, "501 Bad PORT argument.").await,
            }
        }
        "SIZE" => reply(control, &format!("213 {}", HOSTILE_CONTENT.len())).await,
        "MDTM" => reply(control, "213 20240102030405").await,
        "LIST" => send_listing(control, session, shared).await,
        "MLSD" if mlsd => send_listing(control, session, shared).await,
        "RETR" => {
            record(shared, arg);
            send_file(control, session, shared).await
        }
        _ => reply(control, "502 Command not implemented.").await,
    }
}

fn is_known(verb: &str) -> bool {
    matches!(
        verb,
        "TYPE"
            | "PWD"
            | "CWD"
            | "EPSV"
            | "PASV"
            | "EPRT"
            | "PORT"
            | "LIST"
            | "MLSD"
            | "RETR"
            | "SIZE"
            | "MDTM"
    )
}

fn feat_reply(mlsd: bool, epsv: bool) -> String {
    let mut lines = vec!["211-Features:", " AUTH TLS"];
    if epsv {
        lines.push(" EPSV");
    }
    lines.extend([" MDTM", " PASV", " PBSZ", " PROT", " SIZE", " UTF8"]);
    if mlsd {
        lines.push(" MLSD");
    }
    lines.push("211 End");
    lines.join("\r\n")
}

/// `h1,h2,h3,h4,p1,p2` as PORT sends it.
fn parse_port_argument(arg: &str) -> Option<SocketAddr> {
    let n: Vec<u8> = arg
        .split(',')
        .map(|p| p.trim().parse().ok())
        .collect::<Option<_>>()?;
    let [a, b, c, d, hi, lo] = n[..] else {
        return None;
    };
    Some(SocketAddr::from((
        [a, b, c, d],
        u16::from(hi) << 8 | u16::from(lo),
    )))
}

fn record(shared: &Shared, name: &str) {
    shared.requested.lock().unwrap().push(name.to_string());
}

async fn open_passive(session: &mut Session) -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let port = listener.local_addr()?.port();
    session.passive = Some(listener);
    Ok(port)
}

/// A passive listener on 127.0.0.1, and a decoy on `ip` with the same port that counts whoever
/// connects to it (the address the PASV reply will name).
async fn open_passive_with_decoy(
    session: &mut Session,
    ip: Ipv4Addr,
    shared: &Shared,
) -> std::io::Result<u16> {
    for _ in 0..50 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let Ok(decoy) = TcpListener::bind((ip, port)).await else {
            continue;
        };
        let count = shared.decoy_connections.clone();
        tokio::spawn(async move {
            while let Ok((_stream, _)) = decoy.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        session.passive = Some(listener);
        return Ok(port);
    }
    Err(std::io::Error::other("no port free on both addresses"))
}

/// Send 150, accept the pending passive connection and secure it.
async fn open_data<S>(
    control: &mut S,
    session: &mut Session,
    shared: &Shared,
) -> std::io::Result<Option<tokio_rustls::server::TlsStream<TcpStream>>>
where
    S: AsyncWrite + Unpin,
{
    if let Some(addr) = session.active.take() {
        // Active mode: announce, connect back to the client, and be the TLS server there too.
        reply(control, "150 Here comes the data.").await?;
        let stream = TcpStream::connect(addr).await?;
        return Ok(Some(shared.acceptor.accept(stream).await?));
    }
    let Some(listener) = session.passive.take() else {
        reply(control, "425 Use PASV or EPSV first.").await?;
        return Ok(None);
    };
    // The client connects before sending the command but starts TLS only after 150.
    reply(control, "150 Here comes the data.").await?;
    let (stream, _) = listener.accept().await?;
    Ok(Some(shared.acceptor.accept(stream).await?))
}

async fn send_listing<S>(
    control: &mut S,
    session: &mut Session,
    shared: &Shared,
) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let stalled_file =
        ["-rw-r--r--    1 ftp      ftp          1024 Nov 24 09:30 stalled.bin".to_owned()];
    let special = shared
        .behaviour
        .dirs
        .iter()
        .find(|(dir, _)| *dir == session.cwd)
        .map(|(_, body)| body.clone());
    let lines: &[String] = match (&special, &shared.script) {
        (Some(Body::Lines(lines)), _) => lines,
        (Some(Body::EndlessLine), _) => {
            let Some(mut data) = open_data(control, session, shared).await? else {
                return Ok(());
            };
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..4096 {
                if data.write_all(&chunk).await.is_err() {
                    return reply(control, "426 Connection closed; transfer aborted.").await;
                }
            }
            data.shutdown().await?;
            return reply(control, "226 Directory send OK.").await;
        }
        (None, Script::Listing { lines, .. }) => lines,
        // One file to download, so the stall happens on its data connection.
        (None, Script::StallData) => &stalled_file,
        (None, Script::StallAfterLogin) => return reply(control, "226 Nothing to list.").await,
    };
    let Some(mut data) = open_data(control, session, shared).await? else {
        return Ok(());
    };
    for line in lines {
        data.write_all(line.as_bytes()).await?;
        data.write_all(b"\r\n").await?;
    }
    // shutdown sends close_notify, as a well-behaved server would, before the TCP FIN.
    data.shutdown().await?;
    reply(control, "226 Directory send OK.").await
}

async fn send_file<S>(
    control: &mut S,
    session: &mut Session,
    shared: &Shared,
) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    if let Some(text) = shared.behaviour.hold_data_then_reply
        && let Some(listener) = session.passive.take()
    {
        reply(control, "150 Here comes the data.").await?;
        let (stream, _) = listener.accept().await?;
        session.held.push(stream);
        return reply(control, text).await;
    }
    if shared.behaviour.abort_data_after_150 {
        reply(control, "150 Here comes the data.").await?;
        if session.active.take().is_some() {
            return reply(control, "425 Can't open data connection.").await;
        }
        if let Some(listener) = session.passive.take() {
            let (stream, _) = listener.accept().await?;
            drop(stream);
        }
        return reply(control, "426 Connection closed; transfer aborted.").await;
    }
    let Some(mut data) = open_data(control, session, shared).await? else {
        return Ok(());
    };
    if matches!(shared.script, Script::StallData) {
        // Hold the data connection open forever without sending a byte or a reply.
        let _held = data;
        std::future::pending::<()>().await;
        return Ok(());
    }
    if shared.behaviour.endless_retr {
        let chunk = vec![b'y'; 64 * 1024];
        for _ in 0..8192 {
            if data.write_all(&chunk).await.is_err() {
                return reply(control, "426 Connection closed; transfer aborted.").await;
            }
            shared
                .retr_bytes
                .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        data.shutdown().await?;
        return reply(control, "226 Transfer complete.").await;
    }
    data.write_all(HOSTILE_CONTENT).await?;
    shared.retr_bytes.fetch_add(
        HOSTILE_CONTENT.len() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    data.shutdown().await?;
    reply(control, "226 Transfer complete.").await
}

async fn read_command<R>(reader: &mut R) -> Option<String>
where
    R: AsyncBufReadExt + Unpin,
{
    let mut line = Vec::new();
    let n = reader.read_until(b'\n', &mut line).await.ok()?;
    if n == 0 {
        return None;
    }
    let text = String::from_utf8_lossy(&line);
    Some(text.trim_end_matches(['\r', '\n']).to_string())
}

/// `"RETR a b"` → `("RETR", "a b")`; the verb is upper-cased, the argument kept verbatim.
fn split_command(line: &str) -> (String, String) {
    match line.split_once(' ') {
        Some((verb, arg)) => (verb.to_ascii_uppercase(), arg.to_string()),
        None => (line.to_ascii_uppercase(), String::new()),
    }
}

/// A reply without end: 64 MiB of `x` on one line, or (`multiline`) in continuation lines of
/// 1 KiB each, which a client bounded per line but not per reply would read for ever.
async fn endless_reply<S>(stream: &mut S, multiline: bool) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let chunk = if multiline {
        let mut line = b"257-".to_vec();
        line.resize(1022, b'x');
        line.extend_from_slice(b"\r\n");
        line
    } else {
        vec![b'x'; 1024]
    };
    if !multiline {
        stream.write_all(b"257 ").await?;
    }
    for _ in 0..64 * 1024 {
        stream.write_all(&chunk).await?;
    }
    stream.flush().await
}

async fn reply<S>(stream: &mut S, text: &str) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    stream.write_all(text.as_bytes()).await?;
    stream.write_all(b"\r\n").await?;
    stream.flush().await
}
