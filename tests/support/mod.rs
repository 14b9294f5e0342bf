//! Test servers and client helpers shared by ferry's integration tests.
//!
//! - [`vsftpd`]: a real vsftpd 3.0.3 per test (a test fails when it is not installed, unless `FERRY_SKIP_VSFTPD=1`).
//! - [`proftpd`], [`pureftpd`]: a real proftpd 1.3.8 / pure-ftpd 1.0.50 per test, likewise.
//! - [`hostile`]: a scripted FTPS server that lists hostile names or stalls.
//! - [`proxy`]: a TCP proxy in front of a server on `127.0.0.2` that refuses, cuts or stalls
//!   control and data connections (fault injection), forwarding TLS untouched.
//! - The embedded libunftp server lives in the library (`ferry::embedded`), since `ferry demo`
//!   uses it too.
//!
//! The helpers below talk to those servers with suppaftp directly, bypassing ferry's transport,
//! so a server can be checked on its own. Each control connection gets its own rustls
//! `ClientConfig`, hence its own session cache: data connections resume that connection's
//! session and no other, as proftpd and vsftpd expect.
//!
//! Every test binary compiles this module but uses only part of it.
#![allow(dead_code)]

pub mod hostile;
pub mod proftpd;
pub mod proxy;
pub mod pureftpd;
pub mod vsftpd;

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore};
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Passive port ranges for embedded servers in this process: disjoint blocks of 20 above 52000
/// (vsftpd harnesses use 40000-47999).
pub fn embedded_passive_ports() -> RangeInclusive<u16> {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 300;
    let start = 52000 + n * 20;
    start..=start + 19
}

/// A free port for a server that a test stops and starts again on the same port, chosen below
/// the kernel's ephemeral range (`ip_local_port_range`): while the server is down, no other test
/// of this process can be given the port by a bind to port 0, nor use it as the local end of a
/// connection. (A test that did, as one watching the connections to its own server's port, would
/// see the restarted test's agent knock on its door.)
pub fn restartable_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Below the vsftpd harnesses' 40000-47999 and the embedded passive blocks too.
    let (start, end) = (20000u16, low.min(40000));
    let span = u32::from(end - start);
    let base = std::process::id() % span;
    for _ in 0..span {
        let n = u32::from(NEXT.fetch_add(1, Ordering::Relaxed));
        let port = start + ((base + n * 7) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {start}..{end}");
}

/// Which TLS versions a client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTls {
    /// TLS 1.3 and 1.2, the server picks.
    Any,
    /// TLS 1.2 only.
    Tls12,
}

/// A fresh client config (own session cache) trusting only `ca_pem`, optionally presenting a
/// client certificate.
pub fn client_config(
    ca_pem: &Path,
    versions: ClientTls,
    client_cert: Option<(&Path, &Path)>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let protocol_versions: &[&rustls::SupportedProtocolVersion] = match versions {
        ClientTls::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
        ClientTls::Tls12 => &[&rustls::version::TLS12],
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(protocol_versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    Arc::new(config)
}

/// Connect, AUTH TLS (with PBSZ 0 and PROT P), log in, and switch to binary mode.
pub async fn login_explicit(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    user: &str,
    password: &str,
) -> AsyncRustlsFtpStream {
    let connector = AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(config));
    let plain = AsyncRustlsFtpStream::connect(addr).await.unwrap();
    let mut ftp = plain
        .into_secure(connector, &addr.ip().to_string())
        .await
        .unwrap();
    ftp.login(user, password).await.unwrap();
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .await
        .unwrap();
    ftp
}

/// Connect with TLS from the first byte (implicit FTPS), send PBSZ 0 and PROT P ourselves
/// (suppaftp's implicit connect does not), log in, and switch to binary mode.
pub async fn login_implicit(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    user: &str,
    password: &str,
) -> AsyncRustlsFtpStream {
    use suppaftp::Status;
    let connector = AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(config));
    #[allow(deprecated)]
    let mut ftp =
        AsyncRustlsFtpStream::connect_secure_implicit(addr, connector, &addr.ip().to_string())
            .await
            .unwrap();
    for cmd in ["PBSZ 0", "PROT P"] {
        let response = ftp.custom_command(cmd, &[Status::CommandOk]).await.unwrap();
        assert_eq!(response.status, Status::CommandOk, "{cmd}");
    }
    ftp.login(user, password).await.unwrap();
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .await
        .unwrap();
    ftp
}

/// Upload `contents` as `name` in the current directory.
pub async fn put_bytes(ftp: &mut AsyncRustlsFtpStream, name: &str, contents: &[u8]) {
    let mut reader = std::io::Cursor::new(contents);
    let written = ftp.put_file(name, &mut reader).await.unwrap();
    assert_eq!(written, contents.len() as u64);
}

/// Download `name` from the current directory.
pub async fn get_bytes(ftp: &mut AsyncRustlsFtpStream, name: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut stream = ftp.retr_as_stream(name).await.unwrap();
    let mut contents = Vec::new();
    stream.read_to_end(&mut contents).await.unwrap();
    stream.finish().await.unwrap();
    contents
}

/// What a server presents on an explicit-FTPS control connection: greet, AUTH TLS, handshake,
/// and report the negotiated TLS version and the server's leaf certificate (DER).
pub async fn probe_tls(addr: SocketAddr, config: Arc<ClientConfig>) -> (ProtocolVersion, Vec<u8>) {
    let mut plain = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let greeting = read_reply(&mut plain).await;
    assert!(greeting.starts_with("220"), "greeting: {greeting}");
    plain.get_mut().write_all(b"AUTH TLS\r\n").await.unwrap();
    let auth = read_reply(&mut plain).await;
    assert!(auth.starts_with("234"), "AUTH TLS: {auth}");
    let name = ServerName::from(addr.ip());
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, plain.into_inner())
        .await
        .unwrap();
    let conn = tls.get_ref().1;
    let leaf = conn.peer_certificates().unwrap()[0].to_vec();
    (conn.protocol_version().unwrap(), leaf)
}

/// Read one (possibly multi-line) reply: lines until one starts with `NNN `.
async fn read_reply(reader: &mut BufReader<TcpStream>) -> String {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await.unwrap();
        assert!(n > 0, "connection closed after {text:?}");
        text.push_str(&line);
        let bytes = line.as_bytes();
        if bytes.len() >= 4 && bytes[..3].iter().all(u8::is_ascii_digit) && bytes[3] == b' ' {
            return text;
        }
    }
}
