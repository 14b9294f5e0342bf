//! An in-process FTPS server on loopback, for `ferry demo` and for tests.
//!
//! What it does: serves one local directory over explicit FTPS (AUTH TLS) on a loopback address
//! (`127.0.0.1` unless [`EmbeddedOptions::listen_ip`] names another one of `127.0.0.0/8`), with a
//! throwaway certificate authority generated on start (see [`Pki`]), one accepted login, TLS
//! required on the control and the data channel, an explicit passive port range, and optionally
//! TLS 1.3 and X.509 client-certificate authentication. It is built on libunftp with the
//! unftp-sbe-fs filesystem backend.
//!
//! What it does not do: implicit FTPS, MFMT or hash commands (libunftp has none), requiring TLS
//! session reuse on data connections (test that against vsftpd), or listening anywhere but
//! loopback (a non-loopback `listen_ip` is refused). It is not meant to serve anybody but ferry's
//! own demo and tests.
//!
//! How it fits: `ferry demo` starts one, points a push job and a pull job at it and runs them
//! through the real engine; integration tests start one per test with disjoint passive port
//! ranges. [`Pki`] is public so other test servers (vsftpd, a hostile one) reuse the same
//! certificate set-up. Fault-injection tests start one on `127.0.0.2` behind a TCP proxy on
//! `127.0.0.1`: libunftp binds each passive listener to the control connection's local IP, so
//! the data ports are on `127.0.0.2` too, and the certificate (valid for `127.0.0.1`) still
//! matches the address the client connects to.
//!
//! Why ferry accepts connections itself and hands each one to libunftp's `Server::service`
//! instead of calling `listen(addr)`: `listen` needs an address string, so the port would have to
//! be found by binding port 0, releasing it and hoping nobody takes it in between. Owning the
//! listener makes the port race impossible, and dropping a connection's task closes that session,
//! so shutdown is immediate and complete.

use std::fmt::Debug;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use libunftp::options::{FtpsClientAuth, FtpsRequired, TlsFlags};
use libunftp::{Server, ServerBuilder};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use unftp_core::auth::{
    AuthenticationError, Authenticator, ChannelEncryptionState, Credentials, DefaultUser, Principal,
};
use unftp_core::storage::{Fileinfo, Result as StorageResult, StorageBackend};
use unftp_sbe_fs::{Filesystem, Meta};

/// What went wrong while setting up the embedded server.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("cannot generate the {what} certificate: {source}")]
    Certificate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot serve directory {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the passive port range {start}-{end} is empty")]
    EmptyPassiveRange { start: u16, end: u16 },
    #[error("cannot listen on {ip}: {source}")]
    Bind {
        ip: Ipv4Addr,
        #[source]
        source: io::Error,
    },
    #[error(
        "refusing to listen on {0}: the embedded server listens on loopback (127.0.0.0/8) only"
    )]
    NotLoopback(Ipv4Addr),
    #[error("cannot configure the FTPS server: {0}")]
    Configure(String),
}

/// Which server certificate the throwaway CA issues, so tests can exercise refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// Valid now, for `127.0.0.1` and `localhost`.
    Valid,
    /// Valid now, but only for `wrong-host.invalid`: a client must refuse it for 127.0.0.1.
    WrongHost,
    /// For `127.0.0.1` and `localhost`, but it expired in 2001.
    Expired,
}

/// The password [`EmbeddedOptions::default`] accepts (user `ferry`). Not a word that appears
/// in messages: ferry redacts every password it reads from everything it shows.
pub const TEST_PASSWORD: &str = "embedded-test-secret";

/// How to run an [`EmbeddedServer`].
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Ports for passive data connections; callers running servers side by side pick disjoint
    /// ranges (libunftp's default, 49152-65535, would collide).
    pub passive_ports: RangeInclusive<u16>,
    /// Offer TLS 1.3 besides TLS 1.2.
    pub tls13: bool,
    /// The only user accepted.
    pub user: String,
    /// The only password accepted.
    pub password: String,
    /// The server certificate to present.
    pub cert: CertKind,
    /// Ask for an X.509 client certificate, verify it against the throwaway CA, and accept only
    /// the one issued in [`EmbeddedServer::client_cert_pem`] (the password is still checked).
    pub require_client_cert: bool,
    /// The loopback address the control listener binds; passive listeners follow the control
    /// connection's local address, so they land on the same IP. Tests put a proxy in front by
    /// serving on `127.0.0.2`. Anything outside `127.0.0.0/8` is refused.
    pub listen_ip: Ipv4Addr,
    /// Offer `SITE MD5` (in FEAT): a server-side hash that is not SHA-256.
    pub site_md5: bool,
    /// The control port; 0 picks a free one. A test that stops a server and starts it again
    /// where its clients expect it passes the first server's port.
    pub port: u16,
    /// Refuse (550) a rename onto an existing file, as IIS and FileZilla Server do.
    pub refuse_rename_over_existing: bool,
    /// A write-only drop box: uploads and listings only; every rename and delete is refused
    /// (550).
    pub write_only: bool,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            passive_ports: 50000..=50049,
            tls13: true,
            user: "ferry".to_string(),
            password: TEST_PASSWORD.to_string(),
            cert: CertKind::Valid,
            require_client_cert: false,
            listen_ip: Ipv4Addr::LOCALHOST,
            site_md5: false,
            port: 0,
            refuse_rename_over_existing: false,
            write_only: false,
        }
    }
}

/// A change a client made on an [`EmbeddedServer`], in the order the server saw them; paths are
/// in the FTP namespace (`/data/a.txt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A STOR or APPE finished: `bytes` were written to `path`.
    Stored { path: String, bytes: u64 },
    /// A rename finished.
    Renamed { from: String, to: String },
    /// A DELE finished.
    Deleted { path: String },
}

/// Records what clients changed, for tests that count uploads.
#[derive(Debug, Default, Clone)]
struct EventLog(Arc<std::sync::Mutex<Vec<(std::time::Instant, ServerEvent)>>>);

#[async_trait]
impl libunftp::notification::DataListener for EventLog {
    async fn receive_data_event(
        &self,
        event: libunftp::notification::DataEvent,
        _meta: libunftp::notification::EventMeta,
    ) {
        use libunftp::notification::DataEvent;
        let event = match event {
            DataEvent::Put { path, bytes } => ServerEvent::Stored { path, bytes },
            DataEvent::Renamed { from, to } => ServerEvent::Renamed { from, to },
            DataEvent::Deleted { path } => ServerEvent::Deleted { path },
            _ => return,
        };
        // A poisoned log only means a test thread panicked while reading it.
        if let Ok(mut log) = self.0.lock() {
            log.push((std::time::Instant::now(), event));
        }
    }
}

/// A throwaway certificate authority with one server and one client certificate, as PEM files.
#[derive(Debug, Clone)]
pub struct Pki {
    ca_pem: PathBuf,
    server_cert_pem: PathBuf,
    server_key_pem: PathBuf,
    client_cert_pem: PathBuf,
    client_key_pem: PathBuf,
    server_cert_der: Vec<u8>,
    client_cert_der: Vec<u8>,
}

impl Pki {
    /// Generate a CA, a server certificate of `kind` and a client certificate, and write them into
    /// `dir` as `ca.pem`, `server-cert.pem`, `server-key.pem`, `client-cert.pem` and
    /// `client-key.pem`.
    pub fn generate(dir: &Path, kind: CertKind) -> Result<Pki, EmbeddedError> {
        let ca = issue_ca()?;
        let (server_cert, server_key) = issue_server_cert(&ca, kind)?;
        let (client_cert, client_key) = issue_client_cert(&ca)?;
        let pki = Pki {
            ca_pem: dir.join("ca.pem"),
            server_cert_pem: dir.join("server-cert.pem"),
            server_key_pem: dir.join("server-key.pem"),
            client_cert_pem: dir.join("client-cert.pem"),
            client_key_pem: dir.join("client-key.pem"),
            server_cert_der: server_cert.der().to_vec(),
            client_cert_der: client_cert.der().to_vec(),
        };
        write_file(&pki.ca_pem, &ca.pem())?;
        write_file(&pki.server_cert_pem, &server_cert.pem())?;
        write_file(&pki.server_key_pem, &server_key.serialize_pem())?;
        write_file(&pki.client_cert_pem, &client_cert.pem())?;
        write_file(&pki.client_key_pem, &client_key.serialize_pem())?;
        Ok(pki)
    }

    /// The CA certificate that signed both leaf certificates.
    pub fn ca_pem(&self) -> &Path {
        &self.ca_pem
    }

    pub fn server_cert_pem(&self) -> &Path {
        &self.server_cert_pem
    }

    pub fn server_key_pem(&self) -> &Path {
        &self.server_key_pem
    }

    pub fn client_cert_pem(&self) -> &Path {
        &self.client_cert_pem
    }

    pub fn client_key_pem(&self) -> &Path {
        &self.client_key_pem
    }

    /// DER of the server certificate.
    pub fn server_cert_der(&self) -> &[u8] {
        &self.server_cert_der
    }

    /// SHA-256 of the server certificate's DER, the value a `pin_sha256` names.
    pub fn server_cert_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.server_cert_der).into()
    }
}

fn issue_ca() -> Result<CertifiedIssuer<'static, KeyPair>, EmbeddedError> {
    let cert_error = |source| EmbeddedError::Certificate { what: "CA", source };
    let key = KeyPair::generate().map_err(cert_error)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "ferry throwaway test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, key).map_err(cert_error)
}

fn issue_server_cert(
    ca: &CertifiedIssuer<'static, KeyPair>,
    kind: CertKind,
) -> Result<(rcgen::Certificate, KeyPair), EmbeddedError> {
    let cert_error = |source| EmbeddedError::Certificate {
        what: "server",
        source,
    };
    let names = match kind {
        CertKind::Valid | CertKind::Expired => vec!["127.0.0.1".to_string(), "localhost".into()],
        CertKind::WrongHost => vec!["wrong-host.invalid".to_string()],
    };
    let key = KeyPair::generate().map_err(cert_error)?;
    let mut params = CertificateParams::new(names).map_err(cert_error)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "ferry test server");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    if kind == CertKind::Expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let cert = params.signed_by(&key, ca).map_err(cert_error)?;
    Ok((cert, key))
}

fn issue_client_cert(
    ca: &CertifiedIssuer<'static, KeyPair>,
) -> Result<(rcgen::Certificate, KeyPair), EmbeddedError> {
    let cert_error = |source| EmbeddedError::Certificate {
        what: "client",
        source,
    };
    let key = KeyPair::generate().map_err(cert_error)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "ferry test client");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, ca).map_err(cert_error)?;
    Ok((cert, key))
}

/// Write a PEM file owner-only (0600): keys are secrets, and ferry refuses a client key that
/// other users can read.
fn write_file(path: &Path, contents: &str) -> Result<(), EmbeddedError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|source| EmbeddedError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// A running embedded FTPS server. Dropping it without [`shutdown`](Self::shutdown) still stops
/// it (the serving task is aborted).
#[derive(Debug)]
pub struct EmbeddedServer {
    addr: SocketAddr,
    pki: Pki,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    events: EventLog,
}

impl EmbeddedServer {
    /// Serve `root` on a free port of [`EmbeddedOptions::listen_ip`], with certificates written
    /// into `pki_dir`. The server runs on the current tokio runtime until
    /// [`shutdown`](Self::shutdown) or drop.
    pub async fn start(
        root: &Path,
        pki_dir: &Path,
        opts: EmbeddedOptions,
    ) -> Result<Self, EmbeddedError> {
        let pki = Pki::generate(pki_dir, opts.cert)?;
        Self::start_with(root, pki, opts).await
    }

    /// [`start`](Self::start) with certificates already made (those of a server stopped
    /// before), so clients that trust its CA or pin its certificate trust this one.
    pub async fn start_with(
        root: &Path,
        pki: Pki,
        opts: EmbeddedOptions,
    ) -> Result<Self, EmbeddedError> {
        check_passive_range(&opts.passive_ports)?;
        let ip = opts.listen_ip;
        if !ip.is_loopback() {
            return Err(EmbeddedError::NotLoopback(ip));
        }
        // Fail now, not at the first connection, when the directory cannot be served.
        Filesystem::new(root).map_err(|source| EmbeddedError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        let events = EventLog::default();
        let port = opts.port;
        let setup = Arc::new(ServerSetup {
            root: root.to_path_buf(),
            pki: pki.clone(),
            opts,
            events: events.clone(),
        });
        // Building once validates the TLS files and options before anybody connects.
        setup.build_server()?;
        let bind_error = |source| EmbeddedError::Bind { ip, source };
        let listener = TcpListener::bind((ip, port)).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_connections(listener, setup, stopped));
        tracing::debug!(%addr, "embedded FTPS server listening");
        Ok(EmbeddedServer {
            addr,
            pki,
            stop: Some(stop),
            task,
            events,
        })
    }

    /// Every upload, rename and delete clients made so far, in order.
    pub fn events(&self) -> Vec<ServerEvent> {
        self.timed_events().into_iter().map(|(_, e)| e).collect()
    }

    /// [`events`](Self::events) with the moment the server finished each (for latency figures).
    pub fn timed_events(&self) -> Vec<(std::time::Instant, ServerEvent)> {
        self.events
            .0
            .lock()
            .map(|log| log.clone())
            .unwrap_or_default()
    }

    /// The control connection address, `<listen_ip>:<port>` (`127.0.0.1:<port>` by default).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The throwaway CA that signed the server certificate (for a job's `ca_file`).
    pub fn ca_pem(&self) -> &Path {
        self.pki.ca_pem()
    }

    /// A client certificate signed by the same CA (for client-certificate authentication).
    pub fn client_cert_pem(&self) -> &Path {
        self.pki.client_cert_pem()
    }

    /// The private key of [`client_cert_pem`](Self::client_cert_pem).
    pub fn client_key_pem(&self) -> &Path {
        self.pki.client_key_pem()
    }

    /// SHA-256 of the server certificate's DER (for `pin_sha256`).
    pub fn server_cert_sha256(&self) -> [u8; 32] {
        self.pki.server_cert_sha256()
    }

    /// Every generated certificate and key.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// Stop accepting, close every open session, and return once the server task has ended.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // An Err means the task already ended; there is nothing left to stop.
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            tracing::warn!(error = %e, "embedded FTPS server task ended abnormally");
        }
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn check_passive_range(range: &RangeInclusive<u16>) -> Result<(), EmbeddedError> {
    if range.is_empty() {
        return Err(EmbeddedError::EmptyPassiveRange {
            start: *range.start(),
            end: *range.end(),
        });
    }
    Ok(())
}

/// Everything needed to build one libunftp server per control connection.
#[derive(Debug)]
struct ServerSetup {
    root: PathBuf,
    pki: Pki,
    opts: EmbeddedOptions,
    events: EventLog,
}

impl ServerSetup {
    fn build_server(&self) -> Result<Server<ServedRoot, DefaultUser>, EmbeddedError> {
        let root = self.root.clone();
        let refuse = self.opts.refuse_rename_over_existing;
        let write_only = self.opts.write_only;
        let storage = Box::new(move || ServedRoot::open(&root, refuse, write_only));
        let authenticator = Arc::new(FixedLogin {
            user: self.opts.user.clone(),
            password: self.opts.password.clone(),
            client_cert_der: self
                .opts
                .require_client_cert
                .then(|| self.pki.client_cert_der.clone()),
        });
        let mut builder = ServerBuilder::with_authenticator(storage, authenticator)
            .greeting("ferry embedded FTPS server")
            .passive_ports(self.opts.passive_ports.clone())
            .ftps(self.pki.server_cert_pem(), self.pki.server_key_pem())
            .ftps_required(FtpsRequired::All, FtpsRequired::All)
            .ftps_tls_flags(tls_flags(self.opts.tls13))
            .notify_data(self.events.clone());
        if self.opts.require_client_cert {
            builder = builder
                .ftps_client_auth(FtpsClientAuth::Require)
                .ftps_trust_store(self.pki.ca_pem());
        }
        if self.opts.site_md5 {
            builder = builder.sitemd5(libunftp::options::SiteMd5::All);
        }
        builder
            .build()
            .map_err(|e| EmbeddedError::Configure(e.to_string()))
    }
}

fn tls_flags(tls13: bool) -> TlsFlags {
    let resumption = TlsFlags::RESUMPTION_SESS_ID | TlsFlags::RESUMPTION_TICKETS;
    if tls13 {
        TlsFlags::V1_2 | TlsFlags::V1_3 | resumption
    } else {
        TlsFlags::V1_2 | resumption
    }
}

/// Accept control connections until told to stop; each runs in its own task, all of which are
/// aborted (closing their sessions) when this returns.
async fn accept_connections(
    listener: TcpListener,
    setup: Arc<ServerSetup>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "embedded FTPS server accepted a connection");
                    sessions.spawn(serve_connection(stream, setup.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "embedded FTPS server cannot accept");
                    // Errors such as EMFILE persist for a while; do not spin on them.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            // Reap finished sessions so the set does not grow with every connection.
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    sessions.shutdown().await;
}

async fn serve_connection(stream: TcpStream, setup: Arc<ServerSetup>) {
    // Replies are small writes; without this, Nagle and the client's delayed ACK add ~40 ms.
    let _ = stream.set_nodelay(true);
    let server = match setup.build_server() {
        Ok(server) => server,
        Err(e) => {
            tracing::warn!(error = %e, "embedded FTPS server cannot serve a connection");
            return;
        }
    };
    if let Err(e) = server.service(stream).await {
        tracing::debug!(error = %e, "embedded FTPS session ended with an error");
    }
}

/// Accepts exactly one user and password, over TLS only, and with a client certificate
/// requirement, exactly the issued client certificate.
#[derive(Debug)]
struct FixedLogin {
    user: String,
    password: String,
    client_cert_der: Option<Vec<u8>>,
}

#[async_trait]
impl Authenticator for FixedLogin {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        // libunftp already refuses a cleartext login (FtpsRequired::All); this is the backstop.
        if creds.command_channel_security != ChannelEncryptionState::Tls {
            return Err(AuthenticationError::new("login over cleartext refused"));
        }
        if username != self.user {
            return Err(AuthenticationError::BadUser);
        }
        if creds.password.as_deref() != Some(self.password.as_str()) {
            return Err(AuthenticationError::BadPassword);
        }
        if let Some(expected) = &self.client_cert_der {
            let presented = creds
                .certificate_chain
                .as_ref()
                .and_then(|chain| chain.first());
            if presented.map(|cert| cert.0.as_slice()) != Some(expected.as_slice()) {
                return Err(AuthenticationError::BadCert);
            }
        }
        Ok(Principal {
            username: username.to_string(),
        })
    }
}

/// The served directory, or the reason it could not be opened for this connection.
///
/// libunftp asks for a storage backend through an infallible constructor; opening a directory can
/// fail (it may have been removed since start), so the failure is carried here and every
/// operation reports it as a storage error instead of the constructor panicking.
#[derive(Debug)]
struct ServedRoot {
    fs: Result<Filesystem, String>,
    /// See [`EmbeddedOptions::refuse_rename_over_existing`].
    refuse_rename_over_existing: bool,
    /// See [`EmbeddedOptions::write_only`].
    write_only: bool,
}

impl ServedRoot {
    fn open(root: &Path, refuse_rename_over_existing: bool, write_only: bool) -> Self {
        let fs = Filesystem::new(root)
            .map_err(|e| format!("cannot open served directory {}: {e}", root.display()));
        ServedRoot {
            fs,
            refuse_rename_over_existing,
            write_only,
        }
    }

    fn refuse_if_write_only(&self, what: &str) -> StorageResult<()> {
        if self.write_only {
            return Err(unftp_core::storage::Error::new(
                unftp_core::storage::ErrorKind::PermissionDenied,
                io::Error::other(format!("{what}: this is a write-only drop box")),
            ));
        }
        Ok(())
    }

    fn fs(&self) -> StorageResult<&Filesystem> {
        self.fs.as_ref().map_err(|message| {
            unftp_core::storage::Error::new(
                unftp_core::storage::ErrorKind::LocalError,
                io::Error::other(message.clone()),
            )
        })
    }
}

#[async_trait]
impl StorageBackend<DefaultUser> for ServedRoot {
    type Metadata = Meta;

    fn enter(&mut self, user: &DefaultUser) -> io::Result<()> {
        match &mut self.fs {
            Ok(fs) => StorageBackend::<DefaultUser>::enter(fs, user),
            Err(message) => Err(io::Error::other(message.clone())),
        }
    }

    fn supported_features(&self) -> u32 {
        match &self.fs {
            Ok(fs) => StorageBackend::<DefaultUser>::supported_features(fs),
            Err(_) => 0,
        }
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &DefaultUser,
        path: P,
    ) -> StorageResult<Meta> {
        self.fs()?.metadata(user, path).await
    }

    async fn list<P>(
        &self,
        user: &DefaultUser,
        path: P,
    ) -> StorageResult<Vec<Fileinfo<PathBuf, Meta>>>
    where
        P: AsRef<Path> + Send + Debug,
    {
        self.fs()?.list(user, path).await
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &DefaultUser,
        path: P,
        start_pos: u64,
    ) -> StorageResult<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>> {
        self.fs()?.get(user, path, start_pos).await
    }

    async fn put<
        P: AsRef<Path> + Send + Debug,
        R: tokio::io::AsyncRead + Send + Sync + Unpin + 'static,
    >(
        &self,
        user: &DefaultUser,
        input: R,
        path: P,
        start_pos: u64,
    ) -> StorageResult<u64> {
        self.fs()?.put(user, input, path, start_pos).await
    }

    async fn del<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &DefaultUser,
        path: P,
    ) -> StorageResult<()> {
        self.refuse_if_write_only("delete")?;
        self.fs()?.del(user, path).await
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &DefaultUser,
        path: P,
    ) -> StorageResult<()> {
        self.fs()?.mkd(user, path).await
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &DefaultUser,
        from: P,
        to: P,
    ) -> StorageResult<()> {
        self.refuse_if_write_only("rename")?;
        let fs = self.fs()?;
        if self.refuse_rename_over_existing && fs.metadata(user, to.as_ref()).await.is_ok() {
            return Err(unftp_core::storage::Error::new(
                unftp_core::storage::ErrorKind::PermanentFileNotAvailable,
                io::Error::other("will not rename onto an existing file"),
            ));
        }
        fs.rename(user, from, to).await
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &DefaultUser,
        path: P,
    ) -> StorageResult<()> {
        self.fs()?.rmd(user, path).await
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &DefaultUser,
        path: P,
    ) -> StorageResult<()> {
        self.fs()?.cwd(user, path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_flags_offer_tls13_only_when_asked() {
        assert!(tls_flags(true).contains(TlsFlags::V1_3 | TlsFlags::V1_2));
        assert!(!tls_flags(false).contains(TlsFlags::V1_3));
        assert!(tls_flags(false).contains(TlsFlags::V1_2));
    }

    #[test]
    fn empty_passive_range_is_refused_with_its_bounds() {
        #[allow(clippy::reversed_empty_ranges)]
        let err = check_passive_range(&(50010..=50000)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the passive port range 50010-50000 is empty"
        );
    }

    fn parse_leaf(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
        x509_parser::parse_x509_certificate(der).unwrap().1
    }

    fn san_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
        use x509_parser::extensions::GeneralName;
        let san = cert.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .map(|name| match name {
                GeneralName::DNSName(dns) => dns.to_string(),
                GeneralName::IPAddress(ip) => format!("{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn pki_writes_every_pem_file_and_hashes_the_server_der() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(dir.path(), CertKind::Valid).unwrap();
        for (path, marker) in [
            (pki.ca_pem(), "BEGIN CERTIFICATE"),
            (pki.server_cert_pem(), "BEGIN CERTIFICATE"),
            (pki.server_key_pem(), "BEGIN PRIVATE KEY"),
            (pki.client_cert_pem(), "BEGIN CERTIFICATE"),
            (pki.client_key_pem(), "BEGIN PRIVATE KEY"),
        ] {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.contains(marker), "{}: {text}", path.display());
        }
        let expected: [u8; 32] = Sha256::digest(pki.server_cert_der()).into();
        assert_eq!(pki.server_cert_sha256(), expected);
    }

    #[test]
    fn server_certificates_name_the_hosts_their_kind_promises() {
        let cases = [
            (CertKind::Valid, vec!["[127, 0, 0, 1]", "localhost"], false),
            (CertKind::WrongHost, vec!["wrong-host.invalid"], false),
            (CertKind::Expired, vec!["[127, 0, 0, 1]", "localhost"], true),
        ];
        for (kind, names, expired) in cases {
            let dir = tempfile::tempdir().unwrap();
            let pki = Pki::generate(dir.path(), kind).unwrap();
            let cert = parse_leaf(pki.server_cert_der());
            assert_eq!(san_names(&cert), names, "{kind:?}");
            assert_eq!(!cert.validity().is_valid(), expired, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn start_refuses_a_missing_root_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = EmbeddedServer::start(&missing, dir.path(), EmbeddedOptions::default())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot serve directory {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
    }

    #[tokio::test]
    async fn start_listens_on_the_loopback_address_asked_for_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let opts = EmbeddedOptions {
            passive_ports: 50060..=50069,
            listen_ip: Ipv4Addr::new(127, 0, 0, 2),
            ..EmbeddedOptions::default()
        };
        let server = EmbeddedServer::start(dir.path(), dir.path(), opts)
            .await
            .unwrap();
        assert_eq!(
            server.addr().ip(),
            std::net::IpAddr::from(Ipv4Addr::new(127, 0, 0, 2))
        );
        assert!(TcpStream::connect(server.addr()).await.is_ok());
        server.shutdown().await;

        let opts = EmbeddedOptions {
            listen_ip: Ipv4Addr::new(192, 0, 2, 1),
            ..EmbeddedOptions::default()
        };
        let err = EmbeddedServer::start(dir.path(), dir.path(), opts)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing to listen on 192.0.2.1: the embedded server listens on loopback \
             (127.0.0.0/8) only"
        );
    }

    #[tokio::test]
    async fn shutdown_closes_the_listener_and_open_sessions() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let opts = EmbeddedOptions {
            passive_ports: 50050..=50059,
            ..EmbeddedOptions::default()
        };
        let server = EmbeddedServer::start(dir.path(), dir.path(), opts)
            .await
            .unwrap();
        let addr = server.addr();
        assert_eq!(addr.ip(), std::net::IpAddr::from(Ipv4Addr::LOCALHOST));
        let mut session = TcpStream::connect(addr).await.unwrap();
        let mut greeting = [0u8; 64];
        let n = session.read(&mut greeting).await.unwrap();
        assert!(greeting[..n].starts_with(b"220 ferry embedded FTPS server"));
        server.shutdown().await;
        assert!(TcpStream::connect(addr).await.is_err());
        let after = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            session.read(&mut greeting),
        )
        .await
        .unwrap();
        assert!(
            matches!(after, Ok(0) | Err(_)),
            "session still open: {after:?}"
        );
    }
}
