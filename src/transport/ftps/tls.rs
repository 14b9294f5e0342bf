//! TLS for FTPS: the rustls client configuration and a connector that watches its handshakes.
//!
//! Every control connection gets its own [`ClientConfig`] and so its own session cache: data
//! connections resume the session of *their* control connection (proftpd refuses a sibling's
//! session, vsftpd requires reuse by default). [`ObservingConnector`] wraps tokio-rustls for
//! suppaftp and records the negotiated version and whether each data connection resumed, which
//! `ferry check --connect` reports.
//!
//! Certificates are decided by rustls' webpki verifier (against the system roots or a
//! `ca_file`) or by `PinVerifier`; an `ExplainingVerifier` around either changes no verdict,
//! it only notes what a refused certificate looked like (subject, issuer, validity, SHA-256)
//! and what would make it accepted, so the handshake error can say so. It parses a certificate
//! only to describe it, never to judge it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use suppaftp::tokio::{AsyncRustlsStream, AsyncTlsConnector};
use suppaftp::{FtpError, FtpResult};
use tokio::net::TcpStream;

use crate::config::{Endpoint, TlsVersion, TrustRoots};
use crate::transport::{ErrorKind, TransportError};

/// The crypto provider ferry uses everywhere (ring), passed explicitly so that no
/// process-wide default has to be installed.
///
/// The same suites as ring's defaults, with AES-128-GCM asked for before AES-256-GCM (as
/// Mozilla's TLS guidelines order them; a server that follows the client's order, as vsftpd and
/// the embedded server do, then picks it). Every data connection is a handshake, and the suite
/// decides its key schedule's hash: SHA-384, which this CPU's SHA instructions do not cover, took
/// 2.4 % of ferry's CPU in the profile of a pull of 5,000 small files; SHA-256 has them. Fewer AES
/// rounds make a big file's bytes cheaper too, for ferry and for the server.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite_rank(suite.suite()));
    Arc::new(provider)
}

/// Where a suite goes in ferry's order (lower first): TLS 1.3 before 1.2 and the order within
/// each family as ring has it, except that AES-128-GCM comes before AES-256-GCM.
fn suite_rank(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384 => 1,
        S::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => 10,
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => 11,
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => 12,
        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 13,
        S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 14,
        S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => 15,
        _ => 20,
    }
}

fn tls_error(message: impl Into<String>) -> TransportError {
    TransportError::new(ErrorKind::Tls, "TLS setup", message)
}

/// Load the trust anchors an endpoint asks for (once per connector, not per connection).
pub fn load_roots(trust: &TrustRoots) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    match trust {
        TrustRoots::System => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system store with one odd certificate is still usable.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(tls_error(
                    "no usable certificates in the system's root store; set ca_file or pin_sha256",
                ));
            }
        }
        TrustRoots::CaFile(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| {
                    tls_error(format!(
                        "CA file {}: unusable certificate: {e}",
                        path.display()
                    ))
                })?;
            }
        }
    }
    Ok(Arc::new(roots))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(format!("cannot parse {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_error(format!(
            "{} contains no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Build a fresh client configuration (with its own session cache) for one control connection,
/// and the slot where its verifier describes a certificate it refused (for [`ObservingConnector`]).
pub fn client_config(
    endpoint: &Endpoint,
    roots: &Arc<RootCertStore>,
) -> Result<(Arc<ClientConfig>, RejectedCert, Tickets), TransportError> {
    let provider = provider();
    let versions: &[&'static rustls::SupportedProtocolVersion] = match endpoint.tls_max_version {
        Some(TlsVersion::V1_2) => &[&rustls::version::TLS12],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| tls_error(e.to_string()))?;
    let webpki = || {
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| tls_error(e.to_string()))
    };
    let decider: Arc<dyn ServerCertVerifier> = match endpoint.pin_sha256 {
        Some(pin) => {
            // With a ca_file the chain, name and validity must hold as well as the pin; with the
            // system roots as the only trust, the pin alone decides (like known_hosts).
            let chain = match &endpoint.trust {
                TrustRoots::CaFile(_) => Some(webpki()?),
                TrustRoots::System => None,
            };
            Arc::new(PinVerifier {
                pin,
                chain,
                algorithms: provider.signature_verification_algorithms,
            })
        }
        // The same verifier `with_root_certificates` builds: webpki over these roots, no CRLs.
        None => webpki()?,
    };
    let rejected = RejectedCert::default();
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ExplainingVerifier {
            decider,
            rejected: rejected.clone(),
            pinned: endpoint.pin_sha256.is_some(),
            has_ca_file: matches!(endpoint.trust, TrustRoots::CaFile(_)),
        }));
    let config = match (&endpoint.client_cert, &endpoint.client_key) {
        (Some(cert), Some(key)) => {
            crate::config::check_private_file(key)
                .map_err(|e| tls_error(format!("client_key {e}")))?;
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| tls_error(format!("client key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error(format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = config;
    let tickets = Tickets::default();
    config.resumption = rustls::client::Resumption::store(Arc::new(CountingStore {
        inner: rustls::client::ClientSessionMemoryCache::new(32),
        tickets: tickets.clone(),
    }));
    Ok((Arc::new(config), rejected, tickets))
}

/// TLS 1.3 session tickets of one control connection, as counted by its session store. Each
/// data connection uses one up (rustls never offers a ticket twice), and a server sends new
/// ones when it pleases: vsftpd on every data connection, proftpd only on those where it writes
/// (listings, downloads), never on an upload's. A control connection whose tickets are gone
/// cannot resume its session on the next data connection, which proftpd then refuses: such a
/// session is replaced by a new login before it is used for one ([`Tickets::exhausted`]).
#[derive(Debug, Clone, Default)]
pub struct Tickets(Arc<TicketCounts>);

#[derive(Debug, Default)]
struct TicketCounts {
    /// Tickets held now.
    held: std::sync::atomic::AtomicUsize,
    /// Tickets received since the control handshake.
    received: std::sync::atomic::AtomicUsize,
}

impl Tickets {
    /// Whether tickets came and none is left (a server that never sends any is not "out").
    pub fn exhausted(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.0.received.load(Relaxed) > 0 && self.0.held.load(Relaxed) == 0
    }
}

/// rustls' in-memory session cache, counting TLS 1.3 tickets in and out.
#[derive(Debug)]
struct CountingStore {
    inner: rustls::client::ClientSessionMemoryCache,
    tickets: Tickets,
}

impl rustls::client::ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group);
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }

    fn set_tls12_session(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(name, value);
    }

    fn tls12_session(
        &self,
        name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name);
    }

    fn insert_tls13_ticket(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        // The cache keeps at most 8 tickets per server, dropping the oldest.
        let held = self.tickets.0.held.load(Relaxed);
        self.tickets.0.held.store((held + 1).min(8), Relaxed);
        self.tickets.0.received.fetch_add(1, Relaxed);
        self.inner.insert_tls13_ticket(name, value);
    }

    fn take_tls13_ticket(
        &self,
        name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        use std::sync::atomic::Ordering::Relaxed;
        let taken = self.inner.take_tls13_ticket(name);
        if taken.is_some() {
            let _ = self
                .tickets
                .0
                .held
                .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        } else {
            self.tickets.0.held.store(0, Relaxed);
        }
        taken
    }
}

/// Accepts exactly one server certificate, by the SHA-256 of its DER encoding. The handshake
/// signature is still verified, so the server must hold that certificate's key. Without
/// `chain`, hostname and expiry are not checked (the pin names the certificate, as known_hosts
/// names a host key); with `chain` (a `ca_file` was given) the certificate must also verify
/// against it, name and validity included.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// How an endpoint's server certificate is checked, in words, for `ferry check --connect`.
pub fn describe_trust(endpoint: &Endpoint) -> String {
    match (&endpoint.trust, endpoint.pin_sha256) {
        (TrustRoots::System, None) => "verified against the system's roots, with hostname and expiry".to_owned(),
        (TrustRoots::CaFile(p), None) => format!(
            "verified against ca_file {}, with hostname and expiry",
            p.display()
        ),
        (TrustRoots::System, Some(_)) => "pinned by pin_sha256: exactly that certificate is accepted; hostname and expiry are not checked".to_owned(),
        (TrustRoots::CaFile(p), Some(_)) => format!(
            "verified against ca_file {}, with hostname and expiry, and pinned by pin_sha256",
            p.display()
        ),
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if digest == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate SHA-256 {} does not match pin_sha256",
                hex::encode(digest)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Where the verifier of one control connection (and its data connections) leaves the
/// description of the last server certificate it refused; the connector takes it to explain
/// the handshake error. Empty unless a certificate was refused.
pub type RejectedCert = Arc<Mutex<Option<String>>>;

/// Wraps the verifier that decides (webpki over the roots, or [`PinVerifier`]) and passes every
/// question and every answer through unchanged: it decides nothing. On a refused certificate
/// it notes, before returning the same error, what the certificate was and what would make it
/// accepted ([`describe_rejection`]).
#[derive(Debug)]
struct ExplainingVerifier {
    decider: Arc<dyn ServerCertVerifier>,
    rejected: RejectedCert,
    /// `pin_sha256` is set: a non-certificate error then is the pin's mismatch.
    pinned: bool,
    /// A `ca_file` is set: a pin would then have to hold as well as the chain.
    has_ca_file: bool,
}

impl ServerCertVerifier for ExplainingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.decider.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if let Err(error) = &verdict {
            let refusal = match error {
                rustls::Error::General(_) if self.pinned => Refusal::PinMismatch,
                other => Refusal::of(other),
            };
            let description = describe_rejection(end_entity.as_ref(), refusal, self.has_ca_file);
            // A poisoned lock only loses the description; the verdict stands either way.
            if let Ok(mut slot) = self.rejected.lock() {
                *slot = Some(description);
            }
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.decider.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.decider.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.decider.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.decider.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.decider.root_hint_subjects()
    }
}

/// Why a certificate was refused, as far as the advice differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Outside its validity period: no CA file makes it valid.
    Dates,
    /// Not issued for the host ferry connects to.
    Name,
    /// Not the certificate `pin_sha256` names.
    PinMismatch,
    /// Anything else, mostly an issuer ferry does not trust.
    Chain,
}

impl Refusal {
    fn of(error: &rustls::Error) -> Refusal {
        use rustls::CertificateError as C;
        match error {
            rustls::Error::InvalidCertificate(
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. },
            ) => Refusal::Dates,
            rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            ) => Refusal::Name,
            _ => Refusal::Chain,
        }
    }
}

/// The SHA-256 of a certificate's DER as `openssl x509 -fingerprint -sha256` prints it:
/// colon-separated upper-case hex (which `pin_sha256` accepts as it is).
fn fingerprint_sha256(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// A refused server certificate in one line: subject, issuer, validity (UTC) and SHA-256
/// fingerprint, then what would make ferry accept it. The names are quoted with Rust's
/// escaping and cut short, so the line stays one line and of bounded length whatever the
/// certificate holds.
fn describe_rejection(der: &[u8], refusal: Refusal, has_ca_file: bool) -> String {
    let fingerprint = fingerprint_sha256(der);
    let facts = match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => {
            let validity = cert.validity();
            format!(
                "subject {}, issuer {}, not before {}, not after {}",
                quoted(&cert.subject().to_string()),
                quoted(&cert.issuer().to_string()),
                utc(validity.not_before.timestamp()),
                utc(validity.not_after.timestamp()),
            )
        }
        Err(e) => format!(
            "not readable as X.509 ({})",
            crate::text::clean(&e.to_string(), 120)
        ),
    };
    let pin = format!("pin_sha256: \"{fingerprint}\"");
    // With a ca_file the pin must hold as well as the chain, so only the pin alone helps.
    let alone = if has_ca_file { " (and no ca_file)" } else { "" };
    let hint = match refusal {
        Refusal::Chain => {
            format!("trust it with ca_file: <the issuer's CA file> or pin it with {pin}{alone}")
        }
        Refusal::Dates => format!(
            "have it renewed, or accept exactly this certificate whatever its dates with {pin}{alone}"
        ),
        Refusal::Name => format!(
            "connect by a name it was issued for, or accept exactly this certificate whatever its name with {pin}{alone}"
        ),
        Refusal::PinMismatch => {
            format!("if it was replaced on purpose, pin the new one with {pin}")
        }
    };
    format!("the server's certificate: {facts}, SHA-256 {fingerprint}; {hint}")
}

/// A name from the certificate in quotes, escaped as Rust escapes a string (quotes and
/// control characters included), cut short after 160 characters.
fn quoted(name: &str) -> String {
    crate::text::clean(&format!("{name:?}"), 160)
}

fn utc(unix: i64) -> String {
    match chrono::DateTime::from_timestamp(unix, 0) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("{unix} (UNIX time)"),
    }
}

/// A failed handshake: a refusal of the certificate (either side's) or of the protocol stops
/// the run ([`FtpError::SecureError`], classified as TLS); anything else (the connection
/// closed or reset mid-handshake, a server that killed the session) is a connection error,
/// which a retry on a new connection may get past.
/// A refused server certificate's description (`rejected`) is appended to the refusal.
fn handshake_error(e: std::io::Error, rejected: Option<String>) -> FtpError {
    if !is_tls_refusal(&e) {
        return FtpError::ConnectionError(e);
    }
    match rejected {
        Some(described) => FtpError::SecureError(format!("{REFUSED}{e}; {described}")),
        None => FtpError::SecureError(format!("{REFUSED}{e}")),
    }
}

/// Marks a handshake refusal in the text of suppaftp's `SecureError`: suppaftp turns every
/// error of a data connection's handshake into a `SecureError` string, so the class has to
/// travel in the text. Only ferry's own connector writes it.
pub const REFUSED: &str = "TLS refused: ";

/// Whether an I/O error carries a rustls error that no retry can cure: a certificate problem,
/// a refused client certificate, no protocol in common.
pub fn is_tls_refusal(e: &std::io::Error) -> bool {
    use rustls::AlertDescription as A;
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return false;
    };
    match inner {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::UnsupportedNameType
        | rustls::Error::PeerIncompatible(_)
        | rustls::Error::General(_) => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            A::HandshakeFailure
                | A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::CertificateRequired
                | A::ProtocolVersion
                | A::InsufficientSecurity
                | A::IllegalParameter
        ),
        _ => false,
    }
}

/// What the handshakes of one control connection and its data connections looked like.
#[derive(Debug, Default, Clone)]
pub struct TlsObservations {
    /// Negotiated version of the first (control) handshake.
    pub control_version: Option<String>,
    /// Negotiated cipher suite of the first (control) handshake, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub control_suite: Option<String>,
    /// Handshakes after the first (data connections), and how many of them resumed.
    pub data_handshakes: u32,
    pub data_resumed: u32,
    /// Whether the most recent data connection resumed.
    pub last_data_resumed: Option<bool>,
}

/// A suppaftp TLS connector over tokio-rustls that records each handshake.
pub struct ObservingConnector {
    connector: tokio_rustls::TlsConnector,
    seen: Arc<Mutex<TlsObservations>>,
    rejected: RejectedCert,
}

impl std::fmt::Debug for ObservingConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObservingConnector")
    }
}

impl ObservingConnector {
    /// `rejected` is the slot [`client_config`] returned with `config`.
    pub fn new(
        config: Arc<ClientConfig>,
        rejected: RejectedCert,
    ) -> (Self, Arc<Mutex<TlsObservations>>) {
        let seen = Arc::new(Mutex::new(TlsObservations::default()));
        (
            ObservingConnector {
                connector: tokio_rustls::TlsConnector::from(config),
                seen: seen.clone(),
                rejected,
            },
            seen,
        )
    }

    /// Take what the verifier noted about a refused certificate, leaving the slot empty.
    fn take_rejected(&self) -> Option<String> {
        self.rejected.lock().ok().and_then(|mut slot| slot.take())
    }
}

#[async_trait]
impl AsyncTlsConnector for ObservingConnector {
    type Stream = AsyncRustlsStream;

    async fn connect(&self, domain: &str, stream: TcpStream) -> FtpResult<Self::Stream> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| FtpError::SecureError(format!("invalid server name {domain:?}: {e}")))?;
        // A description left by an earlier handshake must not explain this one.
        self.take_rejected();
        let tls = match self.connector.connect(name, stream).await {
            Ok(tls) => tls,
            Err(e) => return Err(handshake_error(e, self.take_rejected())),
        };
        {
            let (_, conn) = tls.get_ref();
            let version = conn.protocol_version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
                other => format!("{other:?}"),
            });
            let suite = conn
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .map(str::to_owned);
            let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
            if let Ok(mut seen) = self.seen.lock() {
                if seen.control_version.is_none() {
                    seen.control_version = version;
                    seen.control_suite = suite;
                } else {
                    seen.data_handshakes += 1;
                    seen.data_resumed += u32::from(resumed);
                    seen.last_data_resumed = Some(resumed);
                }
            }
        }
        Ok(AsyncRustlsStream::from(tls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate with a known subject and dates (and an odd character in its
    /// organisation), and its fingerprint.
    fn sample_cert() -> (Vec<u8>, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["files.example".to_owned()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "files.example");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme \"Drops\"\n");
        params.not_before = rcgen::date_time_ymd(2024, 3, 1);
        params.not_after = rcgen::date_time_ymd(2025, 3, 1);
        let der = params.self_signed(&key).expect("cert").der().to_vec();
        let digest = Sha256::digest(&der);
        let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
        (der, hex.join(":"))
    }

    #[test]
    fn aes_128_gcm_is_asked_for_first_and_no_suite_is_lost() {
        let ours: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        let mut ring: Vec<_> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let at = |suite| ours.iter().position(|s| *s == suite);
        for (first, then) in [
            (
                rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ),
            (
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ),
            (
                rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ),
        ] {
            assert!(
                at(first) < at(then),
                "{first:?} before {then:?} in {ours:?}"
            );
        }
        let mut sorted = ours.clone();
        sorted.sort_by_key(|s| u16::from(*s));
        ring.sort_by_key(|s| u16::from(*s));
        assert_eq!(sorted, ring, "the same suites as ring's defaults");
    }

    #[test]
    fn fingerprints_read_like_openssl() {
        assert_eq!(
            fingerprint_sha256(b""),
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
    }

    #[test]
    fn a_refused_certificate_is_described_with_what_would_make_it_accepted() {
        let (der, fp) = sample_cert();
        let facts = format!(
            "the server's certificate: subject \"CN=files.example, O=Acme \\\"Drops\\\"\\n\", \
             issuer \"CN=files.example, O=Acme \\\"Drops\\\"\\n\", \
             not before 2024-03-01 00:00:00 UTC, not after 2025-03-01 00:00:00 UTC, SHA-256 {fp}; "
        );
        let cases = [
            (
                Refusal::Chain,
                false,
                format!(
                    "trust it with ca_file: <the issuer's CA file> or pin it with pin_sha256: \"{fp}\""
                ),
            ),
            (
                Refusal::Chain,
                true,
                format!(
                    "trust it with ca_file: <the issuer's CA file> or pin it with pin_sha256: \"{fp}\" (and no ca_file)"
                ),
            ),
            (
                Refusal::Dates,
                false,
                format!(
                    "have it renewed, or accept exactly this certificate whatever its dates with pin_sha256: \"{fp}\""
                ),
            ),
            (
                Refusal::Name,
                true,
                format!(
                    "connect by a name it was issued for, or accept exactly this certificate whatever its name with pin_sha256: \"{fp}\" (and no ca_file)"
                ),
            ),
            (
                Refusal::PinMismatch,
                true,
                format!("if it was replaced on purpose, pin the new one with pin_sha256: \"{fp}\""),
            ),
        ];
        for (refusal, has_ca_file, hint) in cases {
            assert_eq!(
                describe_rejection(&der, refusal, has_ca_file),
                format!("{facts}{hint}"),
                "{refusal:?}, ca_file {has_ca_file}"
            );
        }
    }

    #[test]
    fn bytes_that_are_no_certificate_are_still_named_by_their_fingerprint() {
        let text = describe_rejection(b"\x30\x03junk", Refusal::Chain, false);
        let fp = fingerprint_sha256(b"\x30\x03junk");
        assert!(
            text.starts_with("the server's certificate: not readable as X.509 ("),
            "{text}"
        );
        assert!(
            text.ends_with(&format!(
                "), SHA-256 {fp}; trust it with ca_file: <the issuer's CA file> or pin it with pin_sha256: \"{fp}\""
            )),
            "{text}"
        );
    }

    #[test]
    fn long_names_are_cut_short() {
        let name = "x".repeat(500);
        assert_eq!(
            quoted(&name),
            format!("\"{}… (342 more characters)", "x".repeat(159))
        );
    }

    #[test]
    fn refusals_are_told_apart_by_the_rustls_error() {
        use rustls::CertificateError as C;
        let cases = [
            (
                rustls::Error::InvalidCertificate(C::UnknownIssuer),
                Refusal::Chain,
            ),
            (
                rustls::Error::InvalidCertificate(C::BadSignature),
                Refusal::Chain,
            ),
            (
                rustls::Error::InvalidCertificate(C::Expired),
                Refusal::Dates,
            ),
            (
                rustls::Error::InvalidCertificate(C::NotValidYet),
                Refusal::Dates,
            ),
            (
                rustls::Error::InvalidCertificate(C::NotValidForName),
                Refusal::Name,
            ),
            (rustls::Error::General("other".into()), Refusal::Chain),
        ];
        for (error, want) in cases {
            assert_eq!(Refusal::of(&error), want, "{error:?}");
        }
    }
}
