//! Passive-mode replies, read by ferry: ferry opens passive data connections itself (as it does
//! active ones, see `active.rs`), so that a reply the server sends on the control connection
//! while the data connection's TLS handshake waits (425, 426, 450, 451) ends that wait at once.
//! suppaftp runs that handshake inside its own call, holding the control connection.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// The port of an EPSV reply (RFC 2428): `229 Entering Extended Passive Mode (|||6446|)`, where
/// the delimiter may be any printable character other than a digit.
pub fn epsv_port(reply: &str) -> Option<u16> {
    let open = reply.find('(')?;
    let inner = &reply[open + 1..];
    let close = inner.find(')')?;
    let inner = &inner[..close];
    let delimiter = inner.chars().next()?;
    if delimiter.is_ascii_digit() || !delimiter.is_ascii_graphic() {
        return None;
    }
    let fields: Vec<&str> = inner.split(delimiter).collect();
    // `|||6446|` splits into "", "", "", "6446", "".
    match fields.as_slice() {
        ["", "", "", port, ""] => port.parse().ok().filter(|p| *p != 0),
        _ => None,
    }
}

/// The address of a PASV reply: `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`, with or
/// without the parentheses. The first run of six comma-separated numbers after the reply code.
pub fn pasv_address(reply: &str) -> Option<SocketAddr> {
    let text = reply.get(3..)?;
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        if bytes[start].is_ascii_digit() && (start == 0 || !bytes[start - 1].is_ascii_digit()) {
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_digit() || c == ','))
                .map_or(text.len(), |n| start + n);
            let numbers: Option<Vec<u8>> = text[start..end]
                .split(',')
                .map(|n| n.parse().ok())
                .collect();
            if let Some([a, b, c, d, p1, p2]) = numbers.as_deref() {
                let port = u16::from(*p1) << 8 | u16::from(*p2);
                if port != 0 {
                    let ip = Ipv4Addr::new(*a, *b, *c, *d);
                    return Some(SocketAddr::V4(SocketAddrV4::new(ip, port)));
                }
            }
            start = end;
        } else {
            start += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsv_replies_give_their_port() {
        assert_eq!(
            epsv_port("229 Entering Extended Passive Mode (|||6446|)"),
            Some(6446)
        );
        assert_eq!(epsv_port("229 EPSV ok (!!!50000!)"), Some(50000));
        assert_eq!(
            epsv_port("229 Entering Extended Passive Mode (|||0|)"),
            None
        );
        assert_eq!(
            epsv_port("229 Entering Extended Passive Mode (|||70000|)"),
            None
        );
        assert_eq!(
            epsv_port("229 Entering Extended Passive Mode (||6446|)"),
            None
        );
        assert_eq!(
            epsv_port("229 Entering Extended Passive Mode |||6446|"),
            None
        );
        assert_eq!(epsv_port("229 (1112223334445)"), None);
    }

    #[test]
    fn pasv_replies_give_their_address() {
        let want: SocketAddr = "127.0.0.1:50010".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(
            pasv_address("227 Entering Passive Mode (127,0,0,1,195,90)."),
            Some(want)
        );
        assert_eq!(
            pasv_address("227 Entering Passive Mode 127,0,0,1,195,90"),
            Some(want)
        );
        assert_eq!(
            pasv_address("227 =0,0,0,0,195,90"),
            Some("0.0.0.0:50010".parse().unwrap_or_else(|_| unreachable!()))
        );
        assert_eq!(
            pasv_address("227 Entering Passive Mode (127,0,0,1,256,90)"),
            None
        );
        assert_eq!(
            pasv_address("227 Entering Passive Mode (127,0,0,1,195)"),
            None
        );
        assert_eq!(
            pasv_address("227 Entering Passive Mode (127,0,0,1,0,0)"),
            None
        );
        assert_eq!(pasv_address("227"), None);
    }
}
