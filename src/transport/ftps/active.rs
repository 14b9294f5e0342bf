//! Data connections, done by ferry rather than suppaftp: active mode here, and the TLS
//! handshake both modes share ([`secure`]); passive mode's replies are read in `passive.rs`.
//!
//! suppaftp's own active mode always sends PORT on IPv4 and binds any free port. Servers and
//! firewalls that need active mode often want EPRT (RFC 2428) and a known local port range, so
//! ferry opens these connections itself: bind a listener in the configured range on the
//! control connection's local address, announce it with EPRT (falling back to PORT when the
//! server does not know EPRT), send the command, accept only the control peer's connection, and
//! run the TLS handshake as the client, resuming the control connection's session.
//!
//! The command and the completion reply go through suppaftp's control channel
//! (`custom_command`, `read_response_in`), so the control connection stays in one place.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use super::tls::TlsObservations;
use crate::transport::{ErrorKind, TransportError};

/// A data connection: TLS over TCP, or bare TCP for `tls: none`.
pub trait DataIo: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP connection underneath.
    fn tcp(&self) -> &TcpStream;
}

impl DataIo for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl DataIo for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// How this session opens active-mode data connections.
pub struct Active {
    /// Local ports to listen on; `None` lets the system choose.
    pub ports: Option<RangeInclusive<u16>>,
    /// Whether EPRT is still worth trying (cleared after the server refused it once).
    pub eprt: bool,
}

/// How data connections are secured, in either mode.
pub struct DataTls {
    /// The control connection's TLS configuration (and so its session cache), or `None` in
    /// cleartext.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    pub observations: Option<Arc<Mutex<TlsObservations>>>,
}

/// Bind a listener on `ip`, in `ports` when given (the first free port wins).
pub async fn bind_listener(
    ip: IpAddr,
    ports: Option<&RangeInclusive<u16>>,
) -> Result<TcpListener, TransportError> {
    let op = "listen for active data connection";
    let Some(ports) = ports else {
        return TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .map_err(|e| TransportError::from_io(op, &e));
    };
    let mut last = None;
    for port in ports.clone() {
        match TcpListener::bind(SocketAddr::new(ip, port)).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(TransportError::new(
        ErrorKind::Transient,
        op,
        format!(
            "no free port in {}-{} on {ip}{}",
            ports.start(),
            ports.end(),
            last.map(|e| format!(": {e}")).unwrap_or_default()
        ),
    ))
}

/// The EPRT argument for an address (RFC 2428): `|1|192.0.2.1|5282|` or `|2|::1|5282|`.
pub fn eprt_argument(addr: SocketAddr) -> String {
    let family = if addr.is_ipv4() { 1 } else { 2 };
    format!("|{family}|{}|{}|", addr.ip(), addr.port())
}

/// The PORT argument for an IPv4 address: `h1,h2,h3,h4,p1,p2`; `None` for IPv6.
pub fn port_argument(addr: SocketAddr) -> Option<String> {
    match addr.ip() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            Some(format!(
                "{a},{b},{c},{d},{},{}",
                addr.port() >> 8,
                addr.port() & 0xff
            ))
        }
        IpAddr::V6(_) => None,
    }
}

/// Accept the server's connection (only from the control peer), then secure it.
pub async fn accept_data(
    data_tls: &DataTls,
    listener: TcpListener,
    peer: IpAddr,
    timeout: Duration,
    op: &str,
) -> Result<Box<dyn DataIo>, TransportError> {
    let accept = async {
        loop {
            let (tcp, from) = listener.accept().await?;
            if from.ip().to_canonical() == peer.to_canonical() {
                // Small TLS records: no Nagle (see the passive data connection).
                let _ = tcp.set_nodelay(true);
                return Ok::<TcpStream, std::io::Error>(tcp);
            }
            tracing::warn!(%from, "ignoring an active data connection from another address");
        }
    };
    let tcp = tokio::time::timeout(timeout, accept)
        .await
        .map_err(|_| {
            TransportError::new(
                ErrorKind::Transient,
                op,
                "the server did not connect back for the active data connection (timeout)",
            )
        })?
        .map_err(|e| TransportError::from_io(op, &e))?;
    secure(data_tls, tcp, timeout, op).await
}

/// Run the TLS handshake on a data connection as the client, resuming the control
/// connection's session (servers such as vsftpd require it); bare TCP in cleartext.
pub async fn secure(
    data_tls: &DataTls,
    tcp: TcpStream,
    timeout: Duration,
    op: &str,
) -> Result<Box<dyn DataIo>, TransportError> {
    let Some((config, name)) = &data_tls.tls else {
        return Ok(Box::new(tcp));
    };
    let tls = tokio::time::timeout(
        timeout,
        tokio_rustls::TlsConnector::from(config.clone()).connect(name.clone(), tcp),
    )
    .await
    .map_err(|_| TransportError::new(ErrorKind::Transient, op, "TLS handshake timed out"))?
    .map_err(|e| {
        // A refusal stops the run; a handshake cut short is a lost connection.
        let kind = if super::tls::is_tls_refusal(&e) {
            ErrorKind::Tls
        } else {
            ErrorKind::Transient
        };
        TransportError::new(kind, op, e.to_string())
    })?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    if let Some(seen) = &data_tls.observations
        && let Ok(mut seen) = seen.lock()
    {
        seen.data_handshakes += 1;
        seen.data_resumed += u32::from(resumed);
        seen.last_data_resumed = Some(resumed);
    }
    Ok(Box::new(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eprt_and_port_arguments() {
        let v4: SocketAddr = "192.0.2.10:50001".parse().expect("addr");
        assert_eq!(eprt_argument(v4), "|1|192.0.2.10|50001|");
        assert_eq!(port_argument(v4).as_deref(), Some("192,0,2,10,195,81"));
        let v6: SocketAddr = "[::1]:2121".parse().expect("addr");
        assert_eq!(eprt_argument(v6), "|2|::1|2121|");
        assert_eq!(port_argument(v6), None);
    }

    #[tokio::test]
    async fn listener_stays_in_the_port_range() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let first = bind_listener(ip, None).await.expect("any port");
        let taken = first.local_addr().expect("addr").port();
        // A range whose only port is taken has no free port.
        let err = bind_listener(ip, Some(&(taken..=taken)))
            .await
            .expect_err("taken");
        assert!(
            err.to_string()
                .contains(&format!("no free port in {taken}-{taken}")),
            "{err}"
        );
        let next = taken.checked_add(1).unwrap_or(taken - 1);
        let range = taken.min(next)..=taken.max(next);
        if let Ok(l) = bind_listener(ip, Some(&range)).await {
            assert!(range.contains(&l.local_addr().expect("addr").port()));
        }
    }
}
