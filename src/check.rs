//! `ferry check --connect`: log in to each endpoint and report what the server supports.
//!
//! One listing of the endpoint's first job root (or `/`) opens a data connection, which tells
//! whether the data channel resumed the control connection's TLS session.

use std::io::Write;

use crate::config::{Config, TlsMode};
use crate::path::RelPath;
use crate::transport::ftps::FtpsConnector;
use crate::transport::{Capabilities, Connector};

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Describe capabilities as `ferry check --connect` prints them.
pub fn describe_capabilities(caps: &Capabilities, tls: TlsMode) -> Vec<String> {
    let mut lines = Vec::new();
    match (&caps.tls_version, tls) {
        (_, TlsMode::None) => lines.push("TLS: none (cleartext FTP)".to_owned()),
        (Some(v), _) => lines.push(format!("TLS: {v}")),
        (None, _) => lines.push("TLS: unknown".to_owned()),
    }
    lines.push(format!(
        "data channel resumed TLS session: {}",
        match caps.data_session_resumed {
            Some(true) => "yes",
            Some(false) => "no",
            None => "not tested",
        }
    ));
    lines.push(format!("MLSD: {}", yes_no(caps.mlsd)));
    lines.push(format!("MFMT: {}", yes_no(caps.mfmt)));
    lines.push(format!("SIZE: {}", yes_no(caps.size)));
    lines.push(format!("MDTM: {}", yes_no(caps.mdtm)));
    lines.push(format!("REST STREAM: {}", yes_no(caps.rest)));
    lines.push(format!("EPSV: {}", yes_no(caps.epsv)));
    lines.push(format!("UTF8: {}", yes_no(caps.utf8)));
    lines.push(format!(
        "hash commands: {}",
        if caps.hash_commands.is_empty() {
            "none".to_owned()
        } else {
            caps.hash_commands.join(", ")
        }
    ));
    lines.push(format!(
        "transfers verified by: {}",
        match &caps.hash_command {
            Some(h) => format!("the server's {} ({})", h.command, h.algo.as_str()),
            None => "size (or a read-back, with verify: hash or readback)".to_owned(),
        }
    ));
    if let Some(b) = &caps.banner {
        lines.push(format!("banner: {b}"));
    }
    lines
}

/// Connect to every endpoint; returns the exit code (0, or 3 if any endpoint failed).
pub async fn connect_all(config: &Config, out: &mut dyn Write) -> i32 {
    let mut code = 0;
    for (name, endpoint) in &config.endpoints {
        let root = config
            .jobs
            .values()
            .find(|j| &j.endpoint == name)
            .map(|j| j.remote.clone())
            .unwrap_or_else(|| "/".to_owned());
        let _ = writeln!(
            out,
            "endpoint `{name}` ({}:{}):",
            endpoint.host, endpoint.port
        );
        let password = match crate::config::read_password(endpoint) {
            Ok(p) => p,
            Err(e) => {
                let _ = writeln!(out, "  error: {e}");
                code = 3;
                continue;
            }
        };
        let connector = match FtpsConnector::new(endpoint.clone(), &root, password) {
            Ok(c) => c,
            Err(e) => {
                let _ = writeln!(out, "  error: {e}");
                code = 3;
                continue;
            }
        };
        let mut session = match connector.connect().await {
            Ok(s) => s,
            Err(e) => {
                let _ = writeln!(out, "  error: {e}");
                code = 3;
                continue;
            }
        };
        let _ = writeln!(out, "  logged in as {}", endpoint.user);
        if endpoint.tls != TlsMode::None {
            let _ = writeln!(
                out,
                "  certificate: {}",
                crate::transport::ftps::tls::describe_trust(endpoint)
            );
        }
        if let Err(e) = session.list_dir(&RelPath::root()).await {
            let _ = writeln!(out, "  listing {root} failed: {e}");
            code = 3;
        }
        for line in describe_capabilities(session.capabilities(), endpoint.tls) {
            let _ = writeln!(out, "  {line}");
        }
        session.quit().await;
    }
    code
}
