//! TLS for FTPS: the rustls client configuration and a connector that watches its handshakes.
//!
//! Every control connection gets its own [`ClientConfig`] and so its own session cache: data
//! connections resume the session of *their* control connection (proftpd refuses a sibling's
//! session, vsftpd requires reuse by default). [`ObservingConnector`] wraps tokio-rustls for
//! suppaftp and records the negotiated version and whether each data connection resumed, which
//! `ferry check --connect` reports.

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
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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

/// Build a fresh client configuration (with its own session cache) for one control connection.
pub fn client_config(
    endpoint: &Endpoint,
    roots: &Arc<RootCertStore>,
) -> Result<Arc<ClientConfig>, TransportError> {
    let provider = provider();
    let versions: &[&'static rustls::SupportedProtocolVersion] = match endpoint.tls_max_version {
        Some(TlsVersion::V1_2) => &[&rustls::version::TLS12],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| tls_error(e.to_string()))?;
    let builder = match endpoint.pin_sha256 {
        Some(pin) => {
            // With a ca_file the chain, name and validity must hold as well as the pin; with the
            // system roots as the only trust, the pin alone decides (like known_hosts).
            let chain = match &endpoint.trust {
                TrustRoots::CaFile(_) => Some(
                    rustls::client::WebPkiServerVerifier::builder_with_provider(
                        roots.clone(),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| tls_error(e.to_string()))?,
                ),
                TrustRoots::System => None,
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier {
                    pin,
                    chain,
                    algorithms: provider.signature_verification_algorithms,
                }))
        }
        None => builder.with_root_certificates(roots.clone()),
    };
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
    Ok(Arc::new(config))
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

/// A failed handshake: a refusal of the certificate (either side's) or of the protocol stops
/// the run ([`FtpError::SecureError`], classified as TLS); anything else (the connection
/// closed or reset mid-handshake, a server that killed the session) is a connection error,
/// which a retry on a new connection may get past.
fn handshake_error(e: std::io::Error) -> FtpError {
    if is_tls_refusal(&e) {
        FtpError::SecureError(format!("{REFUSED}{e}"))
    } else {
        FtpError::ConnectionError(e)
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
}

impl std::fmt::Debug for ObservingConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObservingConnector")
    }
}

impl ObservingConnector {
    pub fn new(config: Arc<ClientConfig>) -> (Self, Arc<Mutex<TlsObservations>>) {
        let seen = Arc::new(Mutex::new(TlsObservations::default()));
        (
            ObservingConnector {
                connector: tokio_rustls::TlsConnector::from(config),
                seen: seen.clone(),
            },
            seen,
        )
    }
}

#[async_trait]
impl AsyncTlsConnector for ObservingConnector {
    type Stream = AsyncRustlsStream;

    async fn connect(&self, domain: &str, stream: TcpStream) -> FtpResult<Self::Stream> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| FtpError::SecureError(format!("invalid server name {domain:?}: {e}")))?;
        let tls = self
            .connector
            .connect(name, stream)
            .await
            .map_err(handshake_error)?;
        {
            let (_, conn) = tls.get_ref();
            let version = conn.protocol_version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
                other => format!("{other:?}"),
            });
            let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
            if let Ok(mut seen) = self.seen.lock() {
                if seen.control_version.is_none() {
                    seen.control_version = version;
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
