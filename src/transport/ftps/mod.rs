//! FTPS transport over suppaftp's tokio client with rustls.
//!
//! [`FtpsConnector`] logs in to one endpoint (explicit or implicit TLS, PBSZ 0 and PROT P,
//! password and/or client certificate) and hands out [`FtpsSession`]s rooted at a job's remote
//! directory. Every command and every data read or write runs under the endpoint's timeout: a
//! server that stops answering yields a transient error, never a hang, and the session is then
//! dropped by the caller (suppaftp's `abort` is not cancel-safe).
//!
//! Listings use MLSD when FEAT offers it, else LIST (parsed by [`parse`]). Names are returned
//! raw; the scan validates them. Paths sent to the server are built from [`RelPath`]s, which can
//! hold no CR or LF, under a root the job file validated.

pub mod active;
pub mod parse;
pub mod passive;
pub mod tls;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use suppaftp::tokio::AsyncRustlsFtpStream;
use suppaftp::types::FileType;
use suppaftp::{FtpError, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use self::tls::{ObservingConnector, TlsObservations};
use crate::config::{DataMode, Endpoint, Limits, Secret, TlsMode};
use crate::path::RelPath;
use crate::transport::{
    Capabilities, Connector, DirListing, ErrorKind, HashAlgo, Progress, Result, Transport,
    TransportError, copy_with_progress,
};

/// Opens FTPS sessions to one endpoint, rooted at one remote directory.
pub struct FtpsConnector {
    endpoint: Endpoint,
    root: String,
    password: Option<Secret>,
    roots: Arc<RootCertStore>,
}

impl FtpsConnector {
    /// Prepare a connector. Loads the trust anchors once; reads no secret itself.
    pub fn new(
        endpoint: Endpoint,
        root: &str,
        password: Option<Secret>,
    ) -> Result<Self, TransportError> {
        if let Some(p) = &password {
            crate::text::register_secret(p.expose());
        }
        let roots = if endpoint.tls == TlsMode::None {
            Arc::new(RootCertStore::empty())
        } else {
            tls::load_roots(&endpoint.trust)?
        };
        Ok(FtpsConnector {
            endpoint,
            root: root.to_owned(),
            password,
            roots,
        })
    }

    async fn open(&self) -> Result<FtpsSession> {
        let ep = &self.endpoint;
        let timeout = ep.timeout;
        let addr = resolve(&ep.host, ep.port, timeout).await?;
        let connect_op = format!("connect {}:{}", ep.host, ep.port);
        let (mut ftp, seen, tls_config, tickets) = match ep.tls {
            TlsMode::None => {
                let tcp = tcp_connect(addr, timeout, &connect_op).await?;
                let ftp = with_timeout(
                    timeout,
                    &connect_op,
                    AsyncRustlsFtpStream::connect_with_stream(tcp),
                )
                .await?;
                (ftp, None, None, None)
            }
            TlsMode::Explicit => {
                let tcp = tcp_connect(addr, timeout, &connect_op).await?;
                let ftp = with_timeout(
                    timeout,
                    &connect_op,
                    AsyncRustlsFtpStream::connect_with_stream(tcp),
                )
                .await?;
                let (config, rejected, tickets) = tls::client_config(ep, &self.roots)?;
                let (connector, seen) = ObservingConnector::new(config.clone(), rejected);
                let ftp =
                    with_timeout(timeout, "AUTH TLS", ftp.into_secure(connector, &ep.host)).await?;
                (ftp, Some(seen), Some(config), Some(tickets))
            }
            TlsMode::Implicit => {
                let (config, rejected, tickets) = tls::client_config(ep, &self.roots)?;
                let tickets = Some(tickets);
                let (connector, seen) = ObservingConnector::new(config.clone(), rejected);
                let mut ftp = with_timeout(
                    timeout,
                    &connect_op,
                    AsyncRustlsFtpStream::connect_secure_implicit(addr, connector, &ep.host),
                )
                .await?;
                // connect_secure_implicit sends neither PBSZ nor PROT; without PROT P the data
                // channel would be cleartext (and vsftpd answers 522).
                with_timeout(
                    timeout,
                    "PBSZ 0",
                    ftp.custom_command("PBSZ 0", &[Status::CommandOk]),
                )
                .await?;
                with_timeout(
                    timeout,
                    "PROT P",
                    ftp.custom_command("PROT P", &[Status::CommandOk]),
                )
                .await?;
                (ftp, Some(seen), Some(config), tickets)
            }
        };
        let banner = ftp
            .get_welcome_msg()
            .and_then(|m| m.lines().next())
            .map(|line| crate::text::clean(line, 200));
        let password = self.password.as_ref().map(Secret::expose).unwrap_or("");
        let login_op = format!("login as {}", ep.user);
        tokio::time::timeout(timeout, ftp.login(ep.user.as_str(), password))
            .await
            .map_err(|_| timed_out(&login_op, timeout))?
            .map_err(|e| classify_login(&login_op, e))?;
        let features = with_timeout(timeout, "FEAT", ftp.feat())
            .await
            .map(|f| {
                // suppaftp returns a map; sort it so hash commands keep a stable order.
                let mut f: Vec<_> = f.into_iter().collect();
                f.sort();
                let lines: Vec<String> = std::iter::once("211-Features:".to_owned())
                    .chain(f.into_iter().map(|(k, v)| match v {
                        Some(v) => format!(" {k} {v}"),
                        None => format!(" {k}"),
                    }))
                    .chain(std::iter::once("211 End".to_owned()))
                    .collect();
                parse::parse_feat(&lines)
            })
            .unwrap_or_default();
        if features.utf8 {
            // Best effort: servers that list UTF8 mostly have it on already.
            let _ = with_timeout(
                timeout,
                "OPTS UTF8 ON",
                ftp.custom_command("OPTS UTF8 ON", &[Status::CommandOk]),
            )
            .await;
        }
        with_timeout(timeout, "TYPE I", ftp.transfer_type(FileType::Binary)).await?;
        let data_tls = active::DataTls {
            tls: match tls_config {
                Some(config) => {
                    let name = ServerName::try_from(ep.host.clone()).map_err(|e| {
                        TransportError::new(ErrorKind::Tls, "TLS setup", e.to_string())
                    })?;
                    Some((config, name))
                }
                None => None,
            },
            observations: seen.clone(),
        };
        let active = match ep.data_mode {
            DataMode::Passive => None,
            DataMode::Active => Some(active::Active {
                ports: ep.active_ports.clone(),
                eprt: true,
            }),
        };
        let capabilities = Capabilities {
            mlsd: features.mlsd,
            mfmt: features.mfmt,
            size: features.size,
            mdtm: features.mdtm,
            utf8: features.utf8,
            rest: features.rest_stream,
            epsv: features.epsv,
            hash_commands: features.hash_commands,
            hash_command: features.hash_command,
            tls_version: seen
                .as_ref()
                .and_then(|s| s.lock().ok().and_then(|s| s.control_version.clone())),
            tls_cipher_suite: seen
                .as_ref()
                .and_then(|s| s.lock().ok().and_then(|s| s.control_suite.clone())),
            data_session_resumed: None,
            banner,
        };
        let epsv = ep.data_mode == DataMode::Passive && capabilities.epsv;
        // Where passive data connections go, asked once (not once per file).
        let peer = { ftp.get_ref().await.peer_addr() }
            .map_err(|e| TransportError::from_io("connect", &e))?;
        Ok(FtpsSession {
            ftp,
            root: self.root.clone(),
            timeout,
            capabilities,
            seen,
            epsv,
            active,
            data_tls,
            use_pasv_address: ep.use_pasv_address,
            limits: ep.limits,
            tickets,
            site_utime: None,
            peer,
        })
    }
}

#[async_trait]
impl Connector for FtpsConnector {
    async fn connect(&self) -> Result<Box<dyn Transport>> {
        Ok(Box::new(self.open().await?))
    }

    fn describe(&self) -> String {
        let scheme = match self.endpoint.tls {
            TlsMode::Explicit => "ftps",
            TlsMode::Implicit => "ftps-implicit",
            TlsMode::None => "ftp",
        };
        format!(
            "{scheme}://{}@{}:{}{}",
            self.endpoint.user, self.endpoint.host, self.endpoint.port, self.root
        )
    }
}

/// Where a passive data connection goes. By default the control connection's address with the
/// port from the reply: the address in a PASV reply is ignored (as curl does), so that a server
/// cannot point ferry at another host (a port scan, or a TLS ClientHello sent to a third
/// party). With `use_pasv_address` the reply's address is used, except an unroutable one.
pub fn data_address(pasv: SocketAddr, control_ip: IpAddr, use_pasv_address: bool) -> SocketAddr {
    if use_pasv_address {
        rewrite_pasv(pasv, control_ip)
    } else {
        SocketAddr::new(control_ip, pasv.port())
    }
}

/// Replace an unroutable PASV address (0.0.0.0, a private or loopback address that is not the
/// control peer) with the control connection's address: servers behind NAT often announce
/// their inside address.
pub fn rewrite_pasv(pasv: SocketAddr, control_ip: IpAddr) -> SocketAddr {
    if pasv.ip() == control_ip || !is_unroutable(pasv.ip(), control_ip) {
        return pasv;
    }
    SocketAddr::new(control_ip, pasv.port())
}

fn is_unroutable(ip: IpAddr, control_ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_link_local()
                // A private or loopback address only makes sense when the control peer is one too.
                || ((v4.is_private() || v4.is_loopback()) && !control_is_local(control_ip))
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified() || (v6.is_loopback() && !control_is_local(control_ip))
        }
    }
}

fn control_is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<SocketAddr> {
    let op = format!("resolve {host}");
    let mut addrs = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| timed_out(&op, timeout))?
        .map_err(|e| TransportError::new(ErrorKind::Transient, &op, e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| TransportError::new(ErrorKind::Permanent, op, "no address found"))
}

async fn tcp_connect(addr: SocketAddr, timeout: Duration, op: &str) -> Result<TcpStream> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out(op, timeout))?
        .map_err(|e| TransportError::from_io(op, &e))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

fn timed_out(op: &str, timeout: Duration) -> TransportError {
    TransportError::new(
        ErrorKind::Transient,
        op,
        format!(
            "no answer within {} (timeout)",
            humantime::format_duration(timeout)
        ),
    )
}

async fn with_timeout<T>(
    timeout: Duration,
    op: &str,
    fut: impl Future<Output = suppaftp::FtpResult<T>>,
) -> Result<T> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| timed_out(op, timeout))?
        .map_err(|e| classify(op, e))
}

/// The server's reply as text, e.g. `550 Permission denied.`
fn reply_text(resp: &suppaftp::types::Response) -> String {
    let body = String::from_utf8_lossy(&resp.body);
    let body = body.trim();
    let code = resp.status.code().to_string();
    if body.starts_with(&code) {
        body.to_owned()
    } else {
        format!("{code} {body}")
    }
}

/// The error class of a reply code: the one table that decides, by code and never by text,
/// what is worth retrying.
pub fn kind_of_reply(code: u32) -> ErrorKind {
    match code {
        421 => ErrorKind::Busy,
        530 | 532 => ErrorKind::Auth,
        // 425 no data connection, 426 transfer aborted, 450/451 file busy or local error,
        // 452 insufficient storage (for now): a later try may succeed.
        400..=499 => ErrorKind::Transient,
        // A positive reply where another was expected (a 150 read after the data connection
        // was cut): the session is out of step, not the file refused. A new session may do.
        100..=399 => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// Classify a suppaftp error: the one place that decides what is worth retrying.
pub fn classify(op: &str, e: FtpError) -> TransportError {
    match e {
        FtpError::ConnectionError(io) => TransportError::from_io(op, &io),
        // A refusal (a certificate, the protocol) stops the run; any other handshake failure
        // (a connection lost mid-handshake: suppaftp reports data connections' handshake
        // errors as SecureError too) is transient.
        FtpError::SecureError(msg) if msg.contains(tls::REFUSED) => {
            TransportError::new(ErrorKind::Tls, op, msg.replacen(tls::REFUSED, "", 1))
        }
        FtpError::SecureError(msg) => TransportError::new(ErrorKind::Transient, op, msg),
        FtpError::UnexpectedResponse(resp) => {
            TransportError::new(kind_of_reply(resp.status.code()), op, reply_text(&resp))
        }
        FtpError::BadResponse => {
            TransportError::new(ErrorKind::Transient, op, "malformed reply from server")
        }
        other => TransportError::new(ErrorKind::Permanent, op, other.to_string()),
    }
}

fn classify_login(op: &str, e: FtpError) -> TransportError {
    let refusal =
        matches!(&e, FtpError::UnexpectedResponse(r) if (500..600).contains(&r.status.code()));
    let mut err = classify(op, e);
    // Any 5xx refusal of USER/PASS is an authentication failure, whatever code the server
    // chose; a 421 or a lost connection during login is not.
    if refusal {
        err.kind = ErrorKind::Auth;
    }
    err
}

/// One logged-in FTPS control connection.
pub struct FtpsSession {
    ftp: AsyncRustlsFtpStream,
    root: String,
    timeout: Duration,
    capabilities: Capabilities,
    seen: Option<Arc<Mutex<TlsObservations>>>,
    /// EPSV is in use and may still turn out to be refused (then PASV takes over).
    epsv: bool,
    /// Set in active mode; passive otherwise. ferry opens data connections itself in both.
    active: Option<active::Active>,
    data_tls: active::DataTls,
    /// Connect to the address a PASV reply names, not the control connection's.
    use_pasv_address: bool,
    limits: Limits,
    /// The control connection's TLS 1.3 tickets (see [`tls::Tickets`]).
    tickets: Option<tls::Tickets>,
    /// Whether `SITE UTIME` works here; `None` until tried.
    site_utime: Option<bool>,
    /// The control connection's peer: where passive data connections go (unless
    /// `use_pasv_address`), and whom an active one must come from.
    peer: SocketAddr,
}

/// The error when the control connection answered while a data connection was awaited.
fn reply_instead_of_data(
    command: &str,
    reply: suppaftp::FtpResult<suppaftp::types::Response>,
    when: &str,
) -> TransportError {
    match reply {
        Err(e) => classify(command, e),
        Ok(r) => TransportError::new(
            ErrorKind::Transient,
            command,
            format!("{} {when}", reply_text(&r)),
        ),
    }
}

/// Whether a reply means the server does not understand or allow EPSV.
fn is_epsv_refusal(e: &TransportError) -> bool {
    e.kind == ErrorKind::Permanent
        && ["500", "501", "502", "522"]
            .iter()
            .any(|code| e.message.starts_with(code))
}

impl FtpsSession {
    fn remote(&self, path: &RelPath) -> String {
        path.to_remote(&self.root)
    }

    /// The root this session works under now.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The TLS handshakes seen so far on this session.
    pub fn tls_observations(&self) -> Option<TlsObservations> {
        self.seen
            .as_ref()
            .and_then(|s| s.lock().ok().map(|s| s.clone()))
    }

    fn note_data_connection(&mut self) {
        if let Some(obs) = self.tls_observations() {
            self.capabilities.data_session_resumed = obs.last_data_resumed;
        }
    }

    async fn run<T>(
        &mut self,
        op: &str,
        f: impl AsyncFnOnce(&mut AsyncRustlsFtpStream) -> suppaftp::FtpResult<T>,
    ) -> Result<T> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, f(&mut self.ftp))
            .await
            .map_err(|_| timed_out(op, timeout))?
            .map_err(|e| classify(op, e))
    }

    /// After a data command failed: if EPSV was refused, switch this session to PASV for good
    /// and tell the caller to try once more.
    fn fall_back_to_pasv(&mut self, e: &TransportError) -> bool {
        if !(self.epsv && is_epsv_refusal(e)) {
            return false;
        }
        tracing::info!(error = %e, "EPSV refused; falling back to PASV");
        self.epsv = false;
        self.capabilities.epsv = false;
        true
    }

    /// MKD each prefix of the absolute directory `dir`; one that exists answers 550, which is
    /// fine (the caller's next command tells).
    async fn make_dirs_to(&mut self, dir: &str) -> Result<()> {
        let mut prefix = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            let op = format!("MKD {prefix}");
            let made = prefix.clone();
            match self.run(&op, async |f| f.mkdir(&made).await).await {
                Ok(()) => {}
                Err(e) if e.kind == ErrorKind::Permanent => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// REST `rest` when it is not 0 (right before the transfer command, RFC 3659 5.3), then
    /// the command itself, which must answer 150 or 125.
    async fn send_transfer_command(&mut self, command: &str, rest: u64) -> Result<()> {
        if rest > 0 {
            let line = format!("REST {rest}");
            self.run(&line, async |f| {
                f.custom_command(&line, &[Status::RequestFilePending]).await
            })
            .await?;
        }
        self.run(command, async |f| {
            f.custom_command(command, &[Status::AboutToSend, Status::AlreadyOpen])
                .await
        })
        .await
        .map(|_| ())
    }

    /// Open an active-mode data connection for `command` (`RETR x`, `STOR x`, `LIST`, `MLSD`).
    async fn open_active(&mut self, command: &str, rest: u64) -> Result<Box<dyn active::DataIo>> {
        let timeout = self.timeout;
        let local = { self.ftp.get_ref().await.local_addr() }
            .map_err(|e| TransportError::from_io(command, &e))?;
        let peer = self.peer;
        let Some(mode) = self.active.as_ref() else {
            return Err(TransportError::new(
                ErrorKind::Permanent,
                command,
                "not in active mode",
            ));
        };
        let listener = active::bind_listener(local.ip(), mode.ports.as_ref()).await?;
        let announce = listener
            .local_addr()
            .map_err(|e| TransportError::from_io(command, &e))?;
        let mut announced = false;
        if mode.eprt {
            let line = format!("EPRT {}", active::eprt_argument(announce));
            match self
                .run(&line, async |f| {
                    f.custom_command(&line, &[Status::CommandOk]).await
                })
                .await
            {
                Ok(_) => announced = true,
                Err(e) if e.kind == ErrorKind::Permanent && announce.is_ipv4() => {
                    tracing::info!(error = %e, "EPRT refused; falling back to PORT");
                    if let Some(mode) = self.active.as_mut() {
                        mode.eprt = false;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if !announced {
            let Some(arg) = active::port_argument(announce) else {
                return Err(TransportError::new(
                    ErrorKind::Permanent,
                    command,
                    "the server refused EPRT and PORT cannot carry an IPv6 address",
                ));
            };
            let line = format!("PORT {arg}");
            self.run(&line, async |f| {
                f.custom_command(&line, &[Status::CommandOk]).await
            })
            .await?;
        }
        self.send_transfer_command(command, rest).await?;
        let accept = active::accept_data(&self.data_tls, listener, peer.ip(), timeout, command);
        // The server may answer on the control connection instead of connecting back (425
        // can't open data connection): that reply ends the wait at once.
        let control = self
            .ftp
            .read_response_in(&[Status::ClosingDataConnection, Status::RequestedFileActionOk]);
        let data = tokio::select! {
            data = accept => data?,
            reply = control => return Err(reply_instead_of_data(command, reply, "before any data connection")),
        };
        self.note_data_connection();
        Ok(data)
    }

    /// After a data connection failed to open or to complete its handshake, the reason is
    /// often waiting on the control connection (425, 426, 450, 451): read it for a moment and
    /// report it instead of the bare connection error.
    async fn explain_data_failure(&mut self, op: &str, e: TransportError) -> TransportError {
        if e.message.starts_with(|c: char| c.is_ascii_digit()) {
            // Already a reply.
            return e;
        }
        let wait = self.timeout.min(Duration::from_millis(500));
        match tokio::time::timeout(wait, self.ftp.read_response_in(&[])).await {
            // Only a refusal explains the failure; a 150 that came before the cut does not.
            Ok(Err(FtpError::UnexpectedResponse(r))) if r.status.code() >= 400 => {
                classify(op, FtpError::UnexpectedResponse(r))
            }
            _ => e,
        }
    }

    /// Close a data connection (close_notify first; after an upload, wait for the server's
    /// too, so our completion cannot overtake our own close) and read the completion reply.
    async fn close_data(
        &mut self,
        mut data: Box<dyn active::DataIo>,
        upload: bool,
        op: &str,
    ) -> Result<()> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, data.shutdown())
            .await
            .map_err(|_| timed_out(op, timeout))?
            .map_err(|e| TransportError::from_io(op, &e))?;
        if upload {
            // Wait for the server's close_notify, so our 226 cannot overtake our own close.
            let mut sink = [0u8; 512];
            let _ = tokio::time::timeout(timeout, async {
                while let Ok(n) = data.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }
        // Then for the server's FIN behind its close_notify: a socket closed before the FIN
        // arrives leaves that FIN unacknowledged, and vsftpd (which closes its data socket
        // lingering, before it sends 226) resends it after the 200 ms minimum retransmission
        // timeout: measured as one stall in about 35 small uploads.
        let tcp: &TcpStream = data.tcp();
        let _ = tokio::time::timeout(Duration::from_millis(100), async {
            let mut byte = [0u8; 1];
            loop {
                if tcp.readable().await.is_err() {
                    break;
                }
                match tcp.try_read(&mut byte) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    _ => break,
                }
            }
        })
        .await;
        drop(data);
        self.run(op, async |f| {
            f.read_response_in(&[Status::ClosingDataConnection, Status::RequestedFileActionOk])
                .await
        })
        .await
        .map(|_| ())
    }

    /// Open a passive data connection for `command`: EPSV (PASV when EPSV is refused or not
    /// offered), a connection to the control peer's address (the PASV reply's only with
    /// `use_pasv_address`), REST `rest` when it is not 0, the command, then the TLS handshake,
    /// raced against the control connection: a reply there (425, 426, 450, 451) ends the wait
    /// at once and is the error.
    async fn open_passive(&mut self, command: &str, rest: u64) -> Result<Box<dyn active::DataIo>> {
        let timeout = self.timeout;
        let peer = self.peer;
        let mut port = None;
        if self.epsv {
            match self
                .run("EPSV", async |f| {
                    f.custom_command("EPSV", &[Status::ExtendedPassiveMode])
                        .await
                })
                .await
            {
                Ok(r) => {
                    let text = reply_text(&r);
                    port = Some(passive::epsv_port(&text).ok_or_else(|| {
                        TransportError::new(
                            ErrorKind::Transient,
                            "EPSV",
                            format!("no port in the reply: {text}"),
                        )
                    })?);
                }
                Err(e) if self.fall_back_to_pasv(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let target = match port {
            Some(port) => SocketAddr::new(peer.ip(), port),
            None => {
                let r = self
                    .run("PASV", async |f| {
                        f.custom_command("PASV", &[Status::PassiveMode]).await
                    })
                    .await?;
                let text = reply_text(&r);
                let named = passive::pasv_address(&text).ok_or_else(|| {
                    TransportError::new(
                        ErrorKind::Transient,
                        "PASV",
                        format!("no address in the reply: {text}"),
                    )
                })?;
                data_address(named, peer.ip(), self.use_pasv_address)
            }
        };
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(target))
            .await
            .map_err(|_| {
                TransportError::new(
                    ErrorKind::Transient,
                    command,
                    format!("data connection to {target} timed out"),
                )
            })?
            .map_err(|e| TransportError::from_io(command, &e))?;
        // The TLS handshake and close_notify are small writes: without this, Nagle and the
        // peer's delayed ACK cost ~40 ms per data connection.
        let _ = tcp.set_nodelay(true);
        self.send_transfer_command(command, rest).await?;
        let secure = active::secure(&self.data_tls, tcp, timeout, command);
        let control = self
            .ftp
            .read_response_in(&[Status::ClosingDataConnection, Status::RequestedFileActionOk]);
        let data = tokio::select! {
            // A handshake that is done wins: the server's completion reply can only follow it.
            biased;
            data = secure => data?,
            reply = control => {
                return Err(reply_instead_of_data(command, reply, "before the data connection was secured"));
            }
        };
        self.note_data_connection();
        Ok(data)
    }

    /// Open the data connection for `command` (`RETR x`, `STOR x`, `LIST`, `MLSD`) in the
    /// session's mode; a failure is explained by the server's reply when it has one.
    async fn open_data(
        &mut self,
        command: &str,
        op: &str,
        rest: u64,
    ) -> Result<Box<dyn active::DataIo>> {
        let opened = if self.active.is_some() {
            self.open_active(command, rest).await
        } else {
            self.open_passive(command, rest).await
        };
        match opened {
            Ok(data) => Ok(data),
            Err(mut e) => {
                // `LIST` names its directory.
                if e.op == command {
                    e.op = crate::text::clean(op, 400);
                }
                Err(self.explain_data_failure(op, e).await)
            }
        }
    }

    async fn list_lines(&mut self, dir: &str) -> Result<Vec<String>> {
        // CWD then a bare listing: some servers read LIST arguments as options or globs, and
        // vsftpd answers `LIST missing-dir` with an empty listing and 226, where CWD fails
        // (tests/conformance.rs: a missing directory is an error). It costs a round trip per
        // directory, and vsftpd some CPU (README, Benchmark).
        let cwd_op = format!("CWD {dir}");
        let dir_owned = dir.to_owned();
        self.run(&cwd_op, async |f| f.cwd(&dir_owned).await).await?;
        let command = if self.capabilities.mlsd {
            "MLSD"
        } else {
            "LIST"
        };
        let op = format!("{command} {dir}");
        let bounds = ListingBounds {
            max_line: self.limits.max_line,
            max_entries: self.limits.max_entries,
            timeout: self.timeout,
        };
        let mut data = self.open_data(command, &op, 0).await?;
        let lines = read_listing(&mut data, &bounds, &op).await?;
        self.close_data(data, false, &op).await?;
        Ok(lines)
    }
}

/// How much of a listing ferry reads before it calls the server hostile.
struct ListingBounds {
    max_line: usize,
    max_entries: usize,
    timeout: Duration,
}

/// Read a directory listing's lines (LF or CRLF, empty ones dropped, lossy UTF-8), refusing a
/// line longer than `max_line` bytes or more than `max_entries` lines (plus a little room for
/// `total` and `.`/`..` lines): memory stays bounded whatever the server sends.
async fn read_listing<R: AsyncRead + Unpin + ?Sized>(
    data: &mut R,
    bounds: &ListingBounds,
    op: &str,
) -> Result<Vec<String>> {
    use tokio::io::AsyncBufReadExt;
    let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, data);
    let mut lines = Vec::new();
    let mut line = Vec::with_capacity(256);
    let room = bounds.max_entries.saturating_add(16);
    loop {
        line.clear();
        let limit = bounds.max_line as u64 + 2;
        let n = tokio::time::timeout(
            bounds.timeout,
            (&mut reader).take(limit).read_until(b'\n', &mut line),
        )
        .await
        .map_err(|_| timed_out(op, bounds.timeout))?
        .map_err(|e| TransportError::from_io(op, &e))?;
        if n == 0 {
            return Ok(lines);
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.len() > bounds.max_line {
            return Err(TransportError::new(
                ErrorKind::Permanent,
                op,
                format!(
                    "a listing line is longer than {} bytes (limits.line_length); it starts \"{}\"",
                    bounds.max_line,
                    crate::text::clean(&String::from_utf8_lossy(&text[..text.len().min(80)]), 80)
                ),
            ));
        }
        if text.is_empty() {
            continue;
        }
        if lines.len() >= room {
            return Err(TransportError::new(
                ErrorKind::Permanent,
                op,
                format!(
                    "the directory lists more than {} entries (limits.entries_per_dir)",
                    bounds.max_entries
                ),
            ));
        }
        lines.push(String::from_utf8_lossy(text).into_owned());
    }
}

#[async_trait]
impl Transport for FtpsSession {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn list_dir(&mut self, dir: &RelPath) -> Result<DirListing> {
        let remote = self.remote(dir);
        let lines = self.list_lines(&remote).await?;
        let now = chrono::Utc::now().naive_utc();
        let mut listing = DirListing::default();
        for line in lines {
            let parsed = if self.capabilities.mlsd {
                parse::parse_mlsd_line(&line)
            } else {
                parse::parse_list_line(&line, now)
            };
            match parsed {
                Ok(Some(raw)) => listing.entries.push(raw),
                Ok(None) => {}
                Err(e) => listing.unparsed.push(e.to_string()),
            }
        }
        Ok(listing)
    }

    async fn make_dir(&mut self, dir: &RelPath) -> Result<()> {
        let remote = self.remote(dir);
        let op = format!("MKD {remote}");
        match self.run(&op, async |f| f.mkdir(&remote).await).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind == ErrorKind::Permanent => {
                // Already there as a directory is success: CWD tells.
                let cwd = format!("CWD {remote}");
                match self.run(&cwd, async |f| f.cwd(&remote).await).await {
                    Ok(()) => Ok(()),
                    Err(_) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn upload(
        &mut self,
        path: &RelPath,
        src: &mut (dyn AsyncRead + Unpin + Send),
        progress: Progress<'_>,
    ) -> Result<u64> {
        self.upload_from(path, 0, src, progress).await
    }

    async fn upload_from(
        &mut self,
        path: &RelPath,
        offset: u64,
        src: &mut (dyn AsyncRead + Unpin + Send),
        progress: Progress<'_>,
    ) -> Result<u64> {
        let remote = self.remote(path);
        let op = format!("STOR {remote}");
        let timeout = self.timeout;
        let mut data = self.open_data(&op, &op, offset).await?;
        let sent = copy_with_progress(src, &mut data, Some(timeout), &op, progress).await?;
        self.close_data(data, true, &op).await?;
        Ok(sent)
    }

    async fn download(
        &mut self,
        path: &RelPath,
        dst: &mut (dyn AsyncWrite + Unpin + Send),
        progress: Progress<'_>,
    ) -> Result<u64> {
        self.download_from(path, 0, dst, progress).await
    }

    async fn download_from(
        &mut self,
        path: &RelPath,
        offset: u64,
        dst: &mut (dyn AsyncWrite + Unpin + Send),
        progress: Progress<'_>,
    ) -> Result<u64> {
        let remote = self.remote(path);
        let op = format!("RETR {remote}");
        let timeout = self.timeout;
        let mut data = self.open_data(&op, &op, offset).await?;
        let received = copy_with_progress(&mut data, dst, Some(timeout), &op, progress).await?;
        self.close_data(data, false, &op).await?;
        Ok(received)
    }

    async fn make_root(&mut self) -> Result<()> {
        // An existing directory answers 550, which is fine: CWD decides.
        let root = self.root.clone();
        self.make_dirs_to(&root).await?;
        let op = format!("CWD {root}");
        self.run(&op, async |f| f.cwd(&root).await).await
    }

    async fn rename(&mut self, from: &RelPath, to: &RelPath) -> Result<()> {
        self.replace(from, to).await.map(|_| ())
    }

    async fn replace(
        &mut self,
        from: &RelPath,
        to: &RelPath,
    ) -> Result<crate::transport::Replaced> {
        use crate::transport::Replaced;
        let (rf, rt) = (self.remote(from), self.remote(to));
        let op = format!("RNFR {rf} / RNTO {rt}");
        match self.run(&op, async |f| f.rename(&rf, &rt).await).await {
            Ok(()) => Ok(Replaced::Renamed),
            Err(e) if e.kind == ErrorKind::Permanent => {
                // Some servers (IIS, FileZilla) refuse to rename onto an existing file: remove
                // the old version, then rename. The window without a file is unavoidable there.
                let dele = format!("DELE {rt}");
                if self.run(&dele, async |f| f.rm(&rt).await).await.is_err() {
                    return Err(e);
                }
                tracing::warn!(path = %crate::text::clean(&rt, 400), refusal = %e.message,
                    "the server refuses to rename onto an existing file: the old one was deleted first (for a moment there is no file)");
                self.run(&op, async |f| f.rename(&rf, &rt).await)
                    .await
                    .map(|()| Replaced::DeletedFirst)
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_file(&mut self, path: &RelPath) -> Result<()> {
        let remote = self.remote(path);
        let op = format!("DELE {remote}");
        self.run(&op, async |f| f.rm(&remote).await).await
    }

    async fn move_out(&mut self, path: &RelPath, dir: &str, stamp: bool) -> Result<String> {
        let from = self.remote(path);
        let now = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let mut to = path.to_remote(dir);
        if stamp {
            to = format!("{to}.{now}");
        }
        // The directories it needs there.
        let parent = to.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
        self.make_dirs_to(&parent).await?;
        // Never onto an older archived copy.
        let probe = format!("SIZE {to}");
        let target = to.clone();
        if self
            .run(&probe, async |f| f.size(&target).await)
            .await
            .is_ok()
        {
            to = if stamp {
                format!("{to}.1")
            } else {
                format!("{to}.{now}")
            };
        }
        let op = format!("RNFR {from} / RNTO {to}");
        self.run(&op, async |f| f.rename(&from, &to).await).await?;
        Ok(to)
    }

    async fn remove_dir(&mut self, path: &RelPath) -> Result<()> {
        let remote = self.remote(path);
        let op = format!("RMD {remote}");
        self.run(&op, async |f| f.rmdir(&remote).await).await
    }

    fn set_root(&mut self, root: &str) {
        root.clone_into(&mut self.root);
    }

    async fn noop(&mut self) -> Result<()> {
        self.run("NOOP", async |f| f.noop().await).await
    }

    fn needs_new_session(&self) -> bool {
        self.capabilities.tls_version.as_deref() == Some("TLSv1.3")
            && self.tickets.as_ref().is_some_and(tls::Tickets::exhausted)
    }

    async fn size(&mut self, path: &RelPath) -> Result<Option<u64>> {
        if !self.capabilities.size {
            return Ok(None);
        }
        let remote = self.remote(path);
        let op = format!("SIZE {remote}");
        let size = self.run(&op, async |f| f.size(&remote).await).await?;
        Ok(Some(size as u64))
    }

    async fn modified(&mut self, path: &RelPath) -> Result<Option<crate::listing::Mtime>> {
        if !self.capabilities.mdtm {
            return Ok(None);
        }
        let remote = self.remote(path);
        let op = format!("MDTM {remote}");
        let at = self.run(&op, async |f| f.mdtm(&remote).await).await?;
        Ok(Some(crate::listing::Mtime::from_secs(
            at.and_utc().timestamp(),
            crate::listing::Precision::Second,
        )))
    }

    async fn server_hash(&mut self, path: &RelPath) -> Result<Option<(HashAlgo, String)>> {
        let Some(hash) = self.capabilities.hash_command.clone() else {
            return Ok(None);
        };
        let remote = self.remote(path);
        let line = format!("{} {remote}", hash.command);
        let resp = self
            .run(&line, async |f| {
                f.custom_command(&line, &[Status::File, Status::RequestedFileActionOk])
                    .await
            })
            .await?;
        let text = String::from_utf8_lossy(&resp.body).to_string();
        match parse_hash_reply(&text, hash.algo) {
            Some(hex) => Ok(Some((hash.algo, hex))),
            None => Err(TransportError::new(
                ErrorKind::Permanent,
                &line,
                format!("no {} digest in the reply: {text}", hash.algo.as_str()),
            )),
        }
    }

    async fn set_modified(&mut self, path: &RelPath, mtime: crate::listing::Mtime) -> Result<bool> {
        let Some(at) = chrono::DateTime::from_timestamp(mtime.secs(), 0) else {
            return Ok(false);
        };
        let remote = self.remote(path);
        // UTC, to the second (RFC 3659 time-val; proftpd's SITE UTIME takes the same).
        let stamp = at.format("%Y%m%d%H%M%S");
        if self.capabilities.mfmt {
            let line = format!("MFMT {stamp} {remote}");
            self.run(&line, async |f| {
                f.custom_command(&line, &[Status::File]).await
            })
            .await?;
            return Ok(true);
        }
        // No MFMT: `SITE UTIME` (proftpd's mod_site_misc), which FEAT does not announce, so
        // it is tried once per session. A path with a space is no verdict (its arguments are
        // counted by spaces).
        if self.site_utime == Some(false) {
            return Ok(false);
        }
        let line = format!("SITE UTIME {stamp} {remote}");
        match self
            .run(&line, async |f| {
                f.custom_command(&line, &[Status::CommandOk]).await
            })
            .await
        {
            Ok(_) => {
                self.site_utime = Some(true);
                Ok(true)
            }
            Err(e) if e.kind == ErrorKind::Permanent => {
                if !remote.contains(' ') {
                    self.site_utime = Some(false);
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn quit(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ftp.quit()).await;
    }
}

/// Find the digest (as many hex digits as `algo` has) in a reply to a hash command:
/// `213 <hex>`, `213 SHA-256 0-49 <hex> name`, `213 <hex>    name` (SITE MD5).
pub fn parse_hash_reply(text: &str, algo: HashAlgo) -> Option<String> {
    let text = text.trim();
    // Skip the reply code, which is hex digits too.
    let words = text.split_whitespace().skip(usize::from(
        text.get(..3)
            .is_some_and(|c| c.bytes().all(|b| b.is_ascii_digit())),
    ));
    words
        .into_iter()
        .find(|w| w.len() == algo.hex_len() && w.chars().all(|c| c.is_ascii_hexdigit()))
        .map(|w| w.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasv_rewrite_replaces_only_unroutable_addresses() {
        let public: IpAddr = "203.0.113.7".parse().expect("ip");
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        let cases: &[(&str, IpAddr, &str)] = &[
            ("10.0.0.5:5000", public, "203.0.113.7:5000"),
            ("0.0.0.0:5000", public, "203.0.113.7:5000"),
            ("192.168.1.2:5000", public, "203.0.113.7:5000"),
            ("198.51.100.9:5000", public, "198.51.100.9:5000"),
            ("127.0.0.1:5000", local, "127.0.0.1:5000"),
            ("0.0.0.0:5001", local, "127.0.0.1:5001"),
            ("10.1.1.1:5002", local, "10.1.1.1:5002"),
        ];
        for (pasv, control, want) in cases {
            let got = rewrite_pasv(pasv.parse().expect("addr"), *control);
            assert_eq!(got.to_string(), *want, "PASV {pasv} with control {control}");
        }
    }

    #[test]
    fn pasv_addresses_are_ignored_unless_asked_for() {
        let control: IpAddr = "192.0.2.10".parse().expect("ip");
        for (pasv, use_it, want) in [
            ("127.0.0.2:9999", false, "192.0.2.10:9999"),
            ("198.51.100.9:5000", false, "192.0.2.10:5000"),
            ("198.51.100.9:5000", true, "198.51.100.9:5000"),
            ("0.0.0.0:5000", true, "192.0.2.10:5000"),
        ] {
            let got = data_address(pasv.parse().expect("addr"), control, use_it);
            assert_eq!(
                got.to_string(),
                want,
                "PASV {pasv}, use_pasv_address {use_it}"
            );
        }
    }

    #[test]
    fn reply_codes_are_classed_by_code() {
        for (code, want) in [
            (421, ErrorKind::Busy),
            (425, ErrorKind::Transient),
            (426, ErrorKind::Transient),
            (450, ErrorKind::Transient),
            (451, ErrorKind::Transient),
            (452, ErrorKind::Transient),
            (530, ErrorKind::Auth),
            (550, ErrorKind::Permanent),
            (553, ErrorKind::Permanent),
            // A preliminary or completion reply out of place means a session out of step
            // (seen: a 150 read after vsftpd cut the data connection), worth a new session.
            (150, ErrorKind::Transient),
            (226, ErrorKind::Transient),
        ] {
            assert_eq!(kind_of_reply(code), want, "reply {code}");
        }
    }

    #[test]
    fn hash_replies_are_parsed() {
        let h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let sha = HashAlgo::Sha256;
        assert_eq!(
            parse_hash_reply(&format!("213 {h}"), sha).as_deref(),
            Some(h)
        );
        assert_eq!(
            parse_hash_reply(&format!("213 SHA-256 0-0 {} a.txt", h.to_uppercase()), sha)
                .as_deref(),
            Some(h)
        );
        assert_eq!(parse_hash_reply("213 abc", sha), None);
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        assert_eq!(
            parse_hash_reply(&format!("213 {md5}    /data/a.txt"), HashAlgo::Md5).as_deref(),
            Some(md5)
        );
        assert_eq!(
            parse_hash_reply("250 00000000", HashAlgo::Crc32).as_deref(),
            Some("00000000"),
            "a CRC that is all digits is not mistaken for the reply code"
        );
    }
}
