//! The FTPS server every tool of one invocation talks to, on 127.0.0.1.
//!
//! vsftpd 3.0.3 through the tests' harness (`tests/support/vsftpd.rs`: TLS 1.3 allowed, session
//! reuse required, `strict_ssl_read_eof`, its own throwaway CA, the login user `ferrytest`, the
//! protocol log on) when it is installed and the bench runs as root; else ferry's embedded
//! libunftp server on a runtime of its own. Either way the served directory is a local path, so
//! the bench makes source trees and checks results on disk, without going through FTP.
//!
//! Dropping a [`Server`] stops it: the harness kills vsftpd and every session it forked; the
//! embedded server is shut down and its runtime dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ferry::embedded::{EmbeddedOptions, EmbeddedServer, TEST_PASSWORD};

use crate::pureftpd::PureFtpd;
use crate::vsftpd::{Vsftpd, VsftpdOptions};
use crate::{BenchResult, ServerChoice, io};

/// Passive ports of the bench's servers: outside the tests' blocks (vsftpd 40000-47999,
/// embedded 52000-57999) and the watch scenario's (58000-58099).
const VSFTPD_PASSIVE: std::ops::RangeInclusive<u16> = 48000..=48199;
const EMBEDDED_PASSIVE: std::ops::RangeInclusive<u16> = 58100..=58299;
const PURE_FTPD_PASSIVE: std::ops::RangeInclusive<u16> = 48200..=48399;

pub enum Server {
    Vsftpd {
        server: Box<Vsftpd>,
        /// uid and gid of the login user, who must own what it is to change.
        owner: (u32, u32),
    },
    /// pure-ftpd through its harness (`tests/support/pureftpd.rs`), when asked for.
    PureFtpd {
        server: Box<PureFtpd>,
        owner: (u32, u32),
    },
    Embedded(Box<Embedded>),
}

/// The embedded server and the runtime it is served on.
pub struct Embedded {
    server: Option<EmbeddedServer>,
    runtime: tokio::runtime::Runtime,
    root: PathBuf,
}

impl Server {
    /// Start the server `choice` asks for; `work` holds the embedded server's files.
    pub fn start(choice: ServerChoice, work: &Path) -> BenchResult<Server> {
        let vsftpd_usable = crate::vsftpd::vsftpd_available() && is_root();
        match choice {
            ServerChoice::Vsftpd if !vsftpd_usable => Err(format!(
                "--server vsftpd needs {} installed and root",
                crate::vsftpd::VSFTPD_BIN
            )),
            ServerChoice::Vsftpd => Self::start_vsftpd(),
            ServerChoice::PureFtpd => Self::start_pure_ftpd(),
            ServerChoice::Auto if vsftpd_usable => Self::start_vsftpd(),
            ServerChoice::Auto | ServerChoice::Embedded => Self::start_embedded(work),
        }
    }

    fn start_vsftpd() -> BenchResult<Server> {
        let opts = VsftpdOptions {
            passive_ports: Some(VSFTPD_PASSIVE),
            ..VsftpdOptions::default()
        };
        // The harness panics (with its reasons) when vsftpd does not come up.
        let started = std::panic::catch_unwind(|| Vsftpd::start(opts))
            .map_err(|_| "vsftpd did not start (see the message above)".to_string())?;
        let server =
            started.ok_or("FERRY_SKIP_VSFTPD=1: vsftpd skipped; pass --server embedded")?;
        let owner = (user_id("-u")?, user_id("-g")?);
        Ok(Server::Vsftpd {
            server: Box::new(server),
            owner,
        })
    }

    fn start_pure_ftpd() -> BenchResult<Server> {
        if !is_root() {
            return Err("--server pure-ftpd needs root".into());
        }
        // The harness panics (with its reasons) when pure-ftpd is missing or does not come up.
        let started = std::panic::catch_unwind(|| PureFtpd::start(PURE_FTPD_PASSIVE))
            .map_err(|_| "pure-ftpd did not start (see the message above)".to_string())?;
        let server = started.ok_or("FERRY_SKIP_VSFTPD=1: pure-ftpd skipped")?;
        let owner = server.owner();
        Ok(Server::PureFtpd {
            server: Box::new(server),
            owner,
        })
    }

    fn start_embedded(work: &Path) -> BenchResult<Server> {
        let root = work.join("embedded-root");
        let pki = work.join("embedded-pki");
        io("embedded root", std::fs::create_dir_all(&root))?;
        io("embedded pki", std::fs::create_dir_all(&pki))?;
        let runtime = io("start the runtime", tokio::runtime::Runtime::new())?;
        let server = runtime
            .block_on(EmbeddedServer::start(
                &root,
                &pki,
                EmbeddedOptions {
                    passive_ports: EMBEDDED_PASSIVE,
                    ..EmbeddedOptions::default()
                },
            ))
            .map_err(|e| format!("embedded server: {e}"))?;
        Ok(Server::Embedded(Box::new(Embedded {
            server: Some(server),
            runtime,
            root,
        })))
    }

    /// CPU seconds the server's ended sessions used so far (vsftpd and pure-ftpd).
    pub fn sessions_cpu(&self) -> Option<f64> {
        match self {
            Server::Vsftpd { server, .. } => server.sessions_cpu_seconds(),
            Server::PureFtpd { server, .. } => server.sessions_cpu_seconds(),
            Server::Embedded(_) => None,
        }
    }

    /// Whether one of the server's sessions is still running.
    pub fn sessions_alive(&self) -> bool {
        match self {
            Server::Vsftpd { server, .. } => server.sessions_alive(),
            Server::PureFtpd { server, .. } => server.sessions_alive(),
            Server::Embedded(_) => false,
        }
    }

    /// Whether this is ferry's embedded server (the one that answers HASH).
    pub fn is_embedded(&self) -> bool {
        matches!(self, Server::Embedded(_))
    }

    pub fn is_vsftpd(&self) -> bool {
        matches!(self, Server::Vsftpd { .. })
    }

    /// For the table's heading.
    pub fn describe(&self) -> String {
        match self {
            Server::Vsftpd { .. } => {
                "vsftpd 3.0.3 (explicit FTPS, TLS 1.3, session reuse required)".into()
            }
            Server::PureFtpd { .. } => {
                "pure-ftpd 1.0.50 (explicit FTPS, TLS required on control and data)".into()
            }
            Server::Embedded(_) => "ferry's embedded libunftp server (explicit FTPS)".into(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Server::Vsftpd { server, .. } => server.addr(),
            Server::PureFtpd { server, .. } => server.addr(),
            Server::Embedded(e) => e
                .server
                .as_ref()
                .map(EmbeddedServer::addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        }
    }

    pub fn user(&self) -> &str {
        match self {
            Server::Vsftpd { server, .. } => server.user(),
            Server::PureFtpd { server, .. } => server.user(),
            Server::Embedded(_) => "ferry",
        }
    }

    pub fn password(&self) -> &str {
        match self {
            Server::Vsftpd { server, .. } => server.password(),
            Server::PureFtpd { server, .. } => server.password(),
            Server::Embedded(_) => TEST_PASSWORD,
        }
    }

    /// The CA that signed the server's certificate (for 127.0.0.1).
    pub fn ca_pem(&self) -> PathBuf {
        match self {
            Server::Vsftpd { server, .. } => server.ca_pem().to_path_buf(),
            Server::PureFtpd { server, .. } => server.ca_pem().to_path_buf(),
            Server::Embedded(e) => e
                .server
                .as_ref()
                .map(|s| s.ca_pem().to_path_buf())
                .unwrap_or_else(|| e.root.clone()),
        }
    }

    /// The directory the client sees as `/`.
    pub fn root(&self) -> &Path {
        match self {
            Server::Vsftpd { server, .. } => server.root(),
            Server::PureFtpd { server, .. } => server.root(),
            Server::Embedded(e) => &e.root,
        }
    }

    /// The local path of the remote directory `/name`.
    pub fn disk(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    /// Create the empty remote directory `/name` (replacing whatever was there), writable by
    /// the server's login user.
    pub fn fresh_dir(&self, name: &str) -> BenchResult<PathBuf> {
        let path = self.disk(name);
        remove_tree(&path)?;
        io("remote directory", std::fs::create_dir_all(&path))?;
        self.give(&path)?;
        Ok(path)
    }

    /// Give `path` and everything under it to the login user (a file made by the bench, as
    /// root, is otherwise read-only to vsftpd's session).
    pub fn give(&self, path: &Path) -> BenchResult<()> {
        match self {
            Server::Vsftpd { owner, .. } | Server::PureFtpd { owner, .. } => {
                chown_tree(path, *owner)
            }
            Server::Embedded(_) => Ok(()),
        }
    }

    /// How long the protocol log is now (vsftpd only): the start of a window of commands.
    pub fn log_mark(&self) -> Option<usize> {
        match self {
            Server::Vsftpd { server, .. } => Some(server.log_text().len()),
            Server::PureFtpd { .. } | Server::Embedded(_) => None,
        }
    }

    /// The FTP commands clients sent since `mark`, counted by verb (`STOR`, `SIZE`, ...).
    pub fn commands_since(&self, mark: usize) -> Option<BTreeMap<String, usize>> {
        let Server::Vsftpd { server, .. } = self else {
            return None;
        };
        let log = server.log_text();
        Some(count_commands(log.get(mark..).unwrap_or("")))
    }
}

// vsftpd: the harness's own Drop kills the listener and its sessions.
impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

/// Count the commands in vsftpd's protocol log lines:
/// `... FTP command: Client "127.0.0.1", "STOR d0001/f000001.dat"`.
pub fn count_commands(log: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in log.lines() {
        let Some((_, rest)) = line.split_once("FTP command: Client \"") else {
            continue;
        };
        let Some((_, command)) = rest.split_once("\", \"") else {
            continue;
        };
        let verb = command
            .split([' ', '"'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        if !verb.is_empty() {
            *counts.entry(verb).or_insert(0) += 1;
        }
    }
    counts
}

/// Remove a directory tree if it exists.
pub fn remove_tree(path: &Path) -> BenchResult<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("remove {}: {e}", path.display())),
    }
}

fn chown_tree(path: &Path, (uid, gid): (u32, u32)) -> BenchResult<()> {
    let what = || path.display().to_string();
    io(
        &what(),
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)),
    )?;
    let meta = io(&what(), std::fs::symlink_metadata(path))?;
    if meta.is_dir() {
        for entry in io(&what(), std::fs::read_dir(path))? {
            chown_tree(&io(&what(), entry)?.path(), (uid, gid))?;
        }
    }
    Ok(())
}

fn user_id(flag: &str) -> BenchResult<u32> {
    let out = io(
        "id",
        std::process::Command::new("id")
            .args([flag, crate::vsftpd::VSFTPD_USER])
            .output(),
    )?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| format!("id {flag} {}: no such user", crate::vsftpd::VSFTPD_USER))
}

/// Whether this process runs as root (vsftpd switches to its login user, which needs root).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_protocol_log_commands() {
        let log = "Mon Dec  1 12:00:00 2026 [pid 9] FTP command: Client \"127.0.0.1\", \"USER ferrytest\"\n\
                   Mon Dec  1 12:00:00 2026 [pid 9] [ferrytest] FTP response: Client \"127.0.0.1\", \"230 Login successful.\"\n\
                   Mon Dec  1 12:00:00 2026 [pid 9] [ferrytest] FTP command: Client \"127.0.0.1\", \"STOR a b.dat\"\n\
                   Mon Dec  1 12:00:00 2026 [pid 9] [ferrytest] FTP command: Client \"127.0.0.1\", \"stor c\"\n";
        let counts = count_commands(log);
        assert_eq!(counts.get("STOR"), Some(&2));
        assert_eq!(counts.get("USER"), Some(&1));
        assert_eq!(counts.len(), 2);
    }
}
