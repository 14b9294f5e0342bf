//! A proftpd 1.3.8 harness (Debian's `proftpd-core` with `mod_tls` from `proftpd-mod-crypto`):
//! one real proftpd per test, explicit FTPS required on control and data, data connections
//! required to resume the control connection's TLS session (proftpd's default), MLSD and MFMT
//! (`mod_facts`), a private passive port range, and the same login user as the vsftpd harness
//! (`ferrytest`, through `/etc/shadow`).
//!
//! Debian's proftpd and vsftpd packages conflict (both are `ftp-server`), so `.ci/test` unpacks
//! proftpd's packages into [`EXTRACTED`] instead of installing them; the harness uses
//! `/usr/sbin/proftpd` when installed, else that copy (with its modules' directory).
//!
//! What it does not do: install proftpd (`.ci/test` does). Like the vsftpd tests, a test fails
//! when proftpd is missing or the tests do not run as root, unless `FERRY_SKIP_VSFTPD=1` (the
//! switch for every installed-server test) asks to skip.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};

use ferry::embedded::Pki;

use super::vsftpd::{
    VSFTPD_PASSWORD, VSFTPD_USER, chown_tree, free_port, login_user_ids, server_dir, set_mode,
    wait_until_accepting,
};

/// Where `.ci/test` unpacks Debian's proftpd packages (`dpkg -x`).
pub const EXTRACTED: &str = "/opt/ferry-test/proftpd";

/// The proftpd binary and its modules' directory: the installed one, else the unpacked one.
fn proftpd() -> Option<(PathBuf, PathBuf)> {
    [PathBuf::from("/"), PathBuf::from(EXTRACTED)]
        .into_iter()
        .map(|prefix| {
            (
                prefix.join("usr/sbin/proftpd"),
                prefix.join("usr/lib/proftpd"),
            )
        })
        .find(|(bin, modules)| bin.exists() && modules.join("mod_tls.so").exists())
}
/// Passive ports of proftpd harnesses: blocks of 20 from 49000 (vsftpd's end below 48000, and
/// the bench's vsftpd uses 48000-48199).
static NEXT_PASV_BLOCK: AtomicU16 = AtomicU16::new(0);

pub struct Proftpd {
    child: Child,
    addr: SocketAddr,
    pki: Pki,
    root: PathBuf,
    dir: tempfile::TempDir,
}

impl Proftpd {
    /// Start a proftpd, or `None` when `FERRY_SKIP_VSFTPD=1` asks to skip installed servers.
    pub fn start() -> Option<Proftpd> {
        Self::start_with("")
    }

    /// [`start`](Self::start) with more configuration lines (`LoadModule mod_site_misc.c`).
    pub fn start_with(extra: &str) -> Option<Proftpd> {
        if std::env::var_os("FERRY_SKIP_VSFTPD").is_some_and(|v| v == "1") {
            println!("skipping: FERRY_SKIP_VSFTPD=1");
            return None;
        }
        let Some((bin, modules)) = proftpd() else {
            panic!(
                "proftpd with mod_tls is missing (neither /usr/sbin/proftpd nor {EXTRACTED}): run \
                 `bash .ci/test`, which unpacks it (as root), or set FERRY_SKIP_VSFTPD=1 to skip \
                 the tests of installed servers"
            );
        };
        let (dir, root, pki) = server_dir("proftpd");
        let n = NEXT_PASV_BLOCK.fetch_add(1, Ordering::Relaxed) % 50;
        let pasv = 49000 + n * 20..=49000 + n * 20 + 19;
        let mut failure = String::new();
        for _ in 0..5 {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
            let conf = write_config(dir.path(), &root, &pki, addr, &pasv, &modules, extra);
            let child = Command::new(&bin)
                .args(["--nodaemon", "--config"])
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
                .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
                .spawn()
                .unwrap();
            match wait_until_accepting(
                "proftpd",
                child,
                addr,
                dir.path(),
                &["stderr", "system.log", "proftpd.conf"],
            ) {
                Ok(child) => {
                    let server = Proftpd {
                        child,
                        addr,
                        pki,
                        root,
                        dir,
                    };
                    server.give_root_to_user();
                    return Some(server);
                }
                Err(e) => failure = e,
            }
        }
        panic!("proftpd did not start:\n{failure}");
    }

    /// The served directory, which the client sees as `/` (DefaultRoot).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn user(&self) -> &'static str {
        VSFTPD_USER
    }

    pub fn password(&self) -> &'static str {
        VSFTPD_PASSWORD
    }

    pub fn ca_pem(&self) -> &Path {
        self.pki.ca_pem()
    }

    /// Give everything under the root to the login user (files a test writes are root's).
    pub fn give_root_to_user(&self) {
        let (uid, gid) = login_user_ids();
        chown_tree(&self.root, uid, gid);
    }

    /// The system and TLS logs so far.
    pub fn log_text(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("system.log"), read("tls.log"))
    }
}

impl Drop for Proftpd {
    fn drop(&mut self) {
        // By PID: the listener, then the sessions it forked.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let listener = self.child.id().to_string();
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &listener])
            .status();
    }
}

fn write_config(
    dir: &Path,
    root: &Path,
    pki: &Pki,
    addr: SocketAddr,
    pasv: &RangeInclusive<u16>,
    modules: &Path,
    extra: &str,
) -> PathBuf {
    let d = dir.display();
    let mut conf = String::new();
    writeln!(
        conf,
        "ServerType standalone
ServerName \"ferry test\"
DefaultServer on
DefaultAddress {ip}
SocketBindTight on
UseIPv6 off
Port {port}
User nobody
Group nogroup
PidFile {d}/proftpd.pid
ScoreboardFile {d}/proftpd.scoreboard
DelayTable none
WtmpLog off
UseReverseDNS off
SystemLog {d}/system.log
TransferLog {d}/xfer.log
AuthOrder mod_auth_unix.c
DefaultRoot {root}
RequireValidShell off
AllowOverwrite on
PassivePorts {lo} {hi}
MaxInstances 30
ModulePath {modules}
LoadModule mod_tls.c
<IfModule mod_tls.c>
  TLSEngine on
  TLSRequired on
  TLSProtocol TLSv1.2 TLSv1.3
  TLSECCertificateFile {cert}
  TLSECCertificateKeyFile {key}
  TLSCACertificateFile {ca}
  TLSVerifyClient off
  TLSLog {d}/tls.log
</IfModule>
<Directory {root}>
  AllowOverwrite on
</Directory>
{extra}",
        ip = addr.ip(),
        port = addr.port(),
        root = root.display(),
        lo = pasv.start(),
        hi = pasv.end(),
        cert = pki.server_cert_pem().display(),
        key = pki.server_key_pem().display(),
        ca = pki.ca_pem().display(),
        modules = modules.display(),
    )
    .unwrap();
    let path = dir.join("proftpd.conf");
    std::fs::write(&path, conf).unwrap();
    // proftpd reads its key as root, then serves as the login user.
    set_mode(pki.server_key_pem(), 0o600);
    path
}
