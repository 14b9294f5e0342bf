//! A pure-ftpd 1.0.50 harness (Debian's `pure-ftpd`): one real pure-ftpd on its own loopback
//! port, TLS required on control and data (`--tls 3`), a private passive port range, and one
//! virtual user whose home, the served directory, is private to the instance (a PureDB user file
//! mapped to the Linux user `ferrytest`, so files on disk belong to it).
//!
//! Debian's pure-ftpd and vsftpd packages conflict (both are `ftp-server`: installing one removes
//! the other), so pure-ftpd is unpacked with `dpkg -x` into [`EXTRACTED`] instead of installed;
//! the harness uses `/usr/sbin/pure-ftpd` when installed, else that copy. `tests/sync_pureftpd.rs`
//! and the bench (`ferry-bench --server pure-ftpd`) use it. It writes the virtual user's password with a
//! SHA-512 crypt hash ([`PASSWORD_HASH`]), since `pure-pw`'s default (argon2id) costs about
//! 2.5 s of CPU per login here and would be timed as part of every connection.
//!
//! What it does not do: install or unpack pure-ftpd (`.ci/test` unpacks it), or run without
//! root (pure-ftpd switches to the login user).

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use ferry::embedded::Pki;

use super::vsftpd::{
    VSFTPD_PASSWORD, free_port, has_children, login_user_ids, reaped_children_cpu_seconds,
    server_dir, set_mode, wait_until_accepting,
};

/// Where Debian's pure-ftpd package is unpacked (`dpkg -x`) when it is not installed.
pub const EXTRACTED: &str = "/opt/ferry-test/pure-ftpd";

/// The virtual user's login name.
pub const PURE_USER: &str = "ferry";

/// [`VSFTPD_PASSWORD`] as a SHA-512 crypt hash with a fixed salt:
/// `openssl passwd -6 -salt ferrytestsalt ferry-Test-4711`.
const PASSWORD_HASH: &str = "$6$ferrytestsalt$aWS7d176kYSb46qfYMrlWZiEEDyloa0zF9pf3DOuQBW7xMENy7tzCb324f9tzzdtSKvnqCo5IQpsyh8mhmtZj1";

/// The pure-ftpd binary and its `pure-pw`: the installed ones, else the unpacked ones.
pub fn pure_ftpd() -> Option<(PathBuf, PathBuf)> {
    [PathBuf::from("/"), PathBuf::from(EXTRACTED)]
        .into_iter()
        .map(|prefix| {
            (
                prefix.join("usr/sbin/pure-ftpd"),
                prefix.join("usr/bin/pure-pw"),
            )
        })
        .find(|(bin, pw)| bin.exists() && pw.exists())
}

pub struct PureFtpd {
    child: Child,
    addr: SocketAddr,
    pki: Pki,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl PureFtpd {
    /// Start a pure-ftpd with passive ports `pasv`, or `None` when `FERRY_SKIP_VSFTPD=1` asks
    /// to skip installed servers. Panics (with its output) when pure-ftpd is missing, the
    /// caller is not root, or the server does not come up.
    pub fn start(pasv: RangeInclusive<u16>) -> Option<PureFtpd> {
        if std::env::var_os("FERRY_SKIP_VSFTPD").is_some_and(|v| v == "1") {
            println!("skipping: FERRY_SKIP_VSFTPD=1");
            return None;
        }
        let Some((bin, pure_pw)) = pure_ftpd() else {
            panic!(
                "pure-ftpd is missing (neither /usr/sbin/pure-ftpd nor {EXTRACTED}): unpack it \
                 with `apt-get download pure-ftpd && dpkg -x pure-ftpd_*.deb {EXTRACTED}`"
            );
        };
        let (dir, root, pki) = server_dir("pure-ftpd");
        let (uid, gid) = login_user_ids();
        std::os::unix::fs::chown(&root, Some(uid), Some(gid)).unwrap();
        set_mode(pki.server_key_pem(), 0o600);
        let users = write_user_db(dir.path(), &pure_pw, &root, (uid, gid));
        let mut failure = String::new();
        for _ in 0..5 {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
            let mut command = Command::new(&bin);
            command
                .arg(format!("--bind={},{}", addr.ip(), addr.port()))
                .arg(format!(
                    "--passiveportrange={}:{}",
                    pasv.start(),
                    pasv.end()
                ))
                .arg("--tls=3")
                .arg(format!(
                    "--certfile={},{}",
                    pki.server_cert_pem().display(),
                    pki.server_key_pem().display()
                ))
                .arg(format!("--login=puredb:{}", users.display()))
                .args(["--noanonymous", "--dontresolve", "--ipv4only"])
                .args(["--maxclientsnumber=64", "--maxclientsperip=64"])
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
                .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
            let child = command.spawn().unwrap();
            match wait_until_accepting("pure-ftpd", child, addr, dir.path(), &["stdout", "stderr"])
            {
                Ok(child) => {
                    return Some(PureFtpd {
                        child,
                        addr,
                        pki,
                        root,
                        _dir: dir,
                    });
                }
                Err(e) => failure = e,
            }
        }
        panic!("pure-ftpd did not start:\n{failure}");
    }

    /// The virtual user's home, which the client sees as `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn user(&self) -> &'static str {
        PURE_USER
    }

    pub fn password(&self) -> &'static str {
        VSFTPD_PASSWORD
    }

    pub fn ca_pem(&self) -> &Path {
        self.pki.ca_pem()
    }

    /// CPU seconds (user+sys) of the sessions that have ended and been reaped by the listener.
    pub fn sessions_cpu_seconds(&self) -> Option<f64> {
        reaped_children_cpu_seconds(self.child.id())
    }

    /// Whether a session is still running (its CPU counts only once it is over).
    pub fn sessions_alive(&self) -> bool {
        has_children(self.child.id())
    }

    /// The uid and gid files on the server belong to (the Linux user `ferrytest`).
    pub fn owner(&self) -> (u32, u32) {
        login_user_ids()
    }
}

impl Drop for PureFtpd {
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

/// Write the PureDB user database: one virtual user, [`PURE_USER`], chrooted to `root` and
/// mapped to `ferrytest`'s uid and gid, with [`PASSWORD_HASH`].
fn write_user_db(dir: &Path, pure_pw: &Path, root: &Path, (uid, gid): (u32, u32)) -> PathBuf {
    // pure-pw's text format: name:hash:uid:gid:gecos:home/./ then the unused limit fields.
    let line = format!(
        "{PURE_USER}:{PASSWORD_HASH}:{uid}:{gid}::{}/./::::::::::::\n",
        root.display()
    );
    let passwd = dir.join("pureftpd.passwd");
    std::fs::write(&passwd, line).unwrap();
    let pdb = dir.join("pureftpd.pdb");
    let status = Command::new(pure_pw)
        .arg("mkdb")
        .arg(&pdb)
        .arg("-f")
        .arg(&passwd)
        .status()
        .unwrap();
    assert!(status.success(), "pure-pw mkdb failed: {status}");
    pdb
}
