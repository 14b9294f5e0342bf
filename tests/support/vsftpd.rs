//! A vsftpd 3.0.3 harness: one real vsftpd per test, on its own loopback port.
//!
//! What it does: writes a config (explicit or implicit FTPS, TLS required on control and data,
//! `require_ssl_reuse` as asked, a private passive port range), a throwaway CA and server
//! certificate for 127.0.0.1, and a served directory into a temp dir; makes sure the Linux user
//! `ferrytest` exists with a known password; starts `/usr/sbin/vsftpd <conf>` in the foreground,
//! waits until it accepts connections, and on drop kills it and every session it forked.
//!
//! What it does not do: install vsftpd (`.ci/test` does), or run without root (vsftpd needs it
//! to switch to the login user). Without vsftpd (or without root) a test fails, so that no run
//! passes by skipping; `FERRY_SKIP_VSFTPD=1` asks for the skip explicitly.
//!
//! How it fits: integration tests point ferry's FTPS transport at [`Vsftpd::addr`] with
//! [`Vsftpd::ca_pem`] as `ca_file` and read [`Vsftpd::log_text`] to check session reuse.
//!
//! vsftpd 3.0.3 facts the harness works around (checked with `strings /usr/sbin/vsftpd`):
//! its only TLS version switches are `ssl_sslv2`, `ssl_sslv3` and `ssl_tlsv1` (TLS 1.0); TLS
//! 1.1-1.3 are always on. To offer at most TLS 1.2 the harness starts vsftpd with an
//! `OPENSSL_CONF` whose system default sets `MaxProtocol = TLSv1.2`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use ferry::embedded::{CertKind, Pki};

pub const VSFTPD_BIN: &str = "/usr/sbin/vsftpd";
pub const VSFTPD_USER: &str = "ferrytest";
pub const VSFTPD_PASSWORD: &str = "ferry-Test-4711";

/// Each harness in this process takes the next block of passive ports. Test binaries run one
/// after another, so a per-process counter is enough to keep concurrent tests apart.
static NEXT_PASV_BLOCK: AtomicU16 = AtomicU16::new(0);
const PASV_BASE: u16 = 40000;
const PASV_BLOCK: u16 = 20;

/// How to configure one vsftpd instance.
#[derive(Debug, Clone)]
pub struct VsftpdOptions {
    /// Implicit FTPS (`implicit_ssl=YES`): TLS from the first byte, no AUTH TLS.
    pub implicit: bool,
    /// Allow TLS 1.3; when false the server offers at most TLS 1.2.
    pub tls13: bool,
    /// `require_ssl_reuse`: data connections must resume the control connection's session.
    pub require_ssl_reuse: bool,
    /// `strict_ssl_read_eof`: uploads must end with a TLS close_notify.
    pub strict_ssl_read_eof: bool,
    /// Passive ports; `None` takes the next free block of 20 ports above 40000.
    pub passive_ports: Option<RangeInclusive<u16>>,
}

impl Default for VsftpdOptions {
    fn default() -> Self {
        VsftpdOptions {
            implicit: false,
            tls13: true,
            require_ssl_reuse: true,
            strict_ssl_read_eof: true,
            passive_ports: None,
        }
    }
}

/// Whether the vsftpd binary is installed.
pub fn vsftpd_available() -> bool {
    Path::new(VSFTPD_BIN).is_file()
}

/// Whether skipping the vsftpd tests was asked for (`FERRY_SKIP_VSFTPD=1`).
fn skip_requested() -> bool {
    std::env::var("FERRY_SKIP_VSFTPD").is_ok_and(|v| v == "1")
}

/// A running vsftpd; dropping it kills it and every session process it forked.
pub struct Vsftpd {
    child: Child,
    addr: SocketAddr,
    pki: Pki,
    root: PathBuf,
    log: PathBuf,
    marker: String,
    _dir: tempfile::TempDir,
}

impl Vsftpd {
    /// Start a vsftpd, or return `None` (printing why) when `FERRY_SKIP_VSFTPD=1` asks to skip.
    /// Otherwise panics when vsftpd is missing or cannot run here, and whenever it does not
    /// come up: a test never passes by skipping unless told to.
    pub fn start(opts: VsftpdOptions) -> Option<Vsftpd> {
        if skip_requested() {
            println!("skipping: FERRY_SKIP_VSFTPD=1");
            return None;
        }
        assert!(
            vsftpd_available(),
            "{VSFTPD_BIN} is missing: run `bash .ci/test`, which installs it (as root), or set \
             FERRY_SKIP_VSFTPD=1 to skip the vsftpd tests"
        );
        assert!(
            is_root(),
            "the vsftpd tests need root (vsftpd switches to its login user); run them as root, \
             or set FERRY_SKIP_VSFTPD=1 to skip them"
        );
        ensure_login_user();
        let dir = tempfile::Builder::new()
            .prefix("ferry-vsftpd-")
            .tempdir()
            .unwrap();
        // vsftpd serves as `ferrytest`, which must be able to reach the served root.
        set_mode(dir.path(), 0o755);
        let layout = Layout::create(dir.path());
        let pki = Pki::generate(&layout.pki, CertKind::Valid).unwrap();
        let pasv = opts
            .passive_ports
            .clone()
            .unwrap_or_else(next_passive_block);
        let mut last_failure = String::new();
        // The port is found by binding port 0 and releasing it; another process may take it in
        // between, so a start that fails to bind is retried on a new port.
        for _ in 0..5 {
            let port = free_port();
            write_config(&layout, &pki, &opts, port, &pasv);
            let child = spawn_vsftpd(&layout, &opts);
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match wait_until_listening(child, addr, &layout) {
                Ok(child) => {
                    return Some(Vsftpd {
                        child,
                        addr,
                        pki,
                        root: layout.root.clone(),
                        log: layout.log.clone(),
                        marker: layout.conf.display().to_string(),
                        _dir: dir,
                    });
                }
                Err(failure) => last_failure = failure,
            }
        }
        panic!("vsftpd did not start:\n{last_failure}");
    }

    /// The served directory, which the client sees as `/` (chrooted).
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

    /// The CA that signed the server certificate (for 127.0.0.1 and localhost).
    pub fn ca_pem(&self) -> &Path {
        self.pki.ca_pem()
    }

    /// SHA-256 of the server certificate's DER.
    pub fn server_cert_sha256(&self) -> [u8; 32] {
        self.pki.server_cert_sha256()
    }

    /// vsftpd's log so far: the FTP protocol, transfers, and (with `debug_ssl`) whether each
    /// data connection reused the control connection's TLS session.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Give everything under [`root`](Self::root) to `ferrytest`: files a test writes as root are
    /// otherwise read-only to the server.
    pub fn give_root_to_user(&self) {
        let (uid, gid) = login_user_ids();
        chown_tree(&self.root, uid, gid);
    }
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        // Stop the listener first so no new session can be forked, then end the sessions.
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_sessions(&self.marker);
    }
}

/// The environment variable that tags every process of one instance: vsftpd runs each session
/// in a new Unix session (setsid), so neither its parent link nor its process group leads back
/// to the listener, but the environment is inherited.
const INSTANCE_VAR: &str = "FERRY_VSFTPD_INSTANCE";

/// Kill, by PID, every process carrying this instance's marker (sessions still open).
fn kill_sessions(marker: &str) {
    let wanted = format!("{INSTANCE_VAR}={marker}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let pids: Vec<String> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|&b| b == 0)
                    .any(|var| var == wanted.as_bytes())
            })
        })
        .collect();
    if pids.is_empty() {
        return;
    }
    // sh's builtin kill, because /bin/kill (procps) is not in every minimal image.
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -s KILL {}", pids.join(" "))])
        .stderr(Stdio::null())
        .status();
}

/// Where everything of one instance lives inside its temp dir.
struct Layout {
    conf: PathBuf,
    openssl_conf: PathBuf,
    pki: PathBuf,
    root: PathBuf,
    empty: PathBuf,
    log: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Layout {
    fn create(dir: &Path) -> Layout {
        let layout = Layout {
            conf: dir.join("vsftpd.conf"),
            openssl_conf: dir.join("openssl.cnf"),
            pki: dir.join("pki"),
            root: dir.join("root"),
            empty: dir.join("empty"),
            log: dir.join("vsftpd.log"),
            stdout: dir.join("stdout.txt"),
            stderr: dir.join("stderr.txt"),
        };
        for sub in [&layout.pki, &layout.root, &layout.empty] {
            std::fs::create_dir(sub).unwrap();
        }
        set_mode(&layout.root, 0o755);
        let (uid, gid) = login_user_ids();
        std::os::unix::fs::chown(&layout.root, Some(uid), Some(gid)).unwrap();
        std::fs::write(&layout.openssl_conf, OPENSSL_MAX_TLS12).unwrap();
        layout
    }
}

/// An OpenSSL config whose system default caps the protocol at TLS 1.2.
const OPENSSL_MAX_TLS12: &str = "openssl_conf = ferry_conf
[ferry_conf]
ssl_conf = ferry_ssl
[ferry_ssl]
system_default = ferry_tls
[ferry_tls]
MaxProtocol = TLSv1.2
";

fn yes_no(on: bool) -> &'static str {
    if on { "YES" } else { "NO" }
}

fn write_config(
    layout: &Layout,
    pki: &Pki,
    opts: &VsftpdOptions,
    port: u16,
    pasv: &RangeInclusive<u16>,
) {
    let mut conf = String::new();
    let settings: [(&str, String); 34] = [
        ("listen", "YES".into()),
        ("listen_ipv6", "NO".into()),
        ("listen_address", "127.0.0.1".into()),
        ("listen_port", port.to_string()),
        ("background", "NO".into()),
        ("seccomp_sandbox", "NO".into()),
        ("isolate", "NO".into()),
        ("isolate_network", "NO".into()),
        ("anonymous_enable", "NO".into()),
        ("local_enable", "YES".into()),
        ("write_enable", "YES".into()),
        ("local_umask", "022".into()),
        ("pam_service_name", "vsftpd".into()),
        ("local_root", layout.root.display().to_string()),
        // Chrooted into the served root, so the client's `/` is the test's directory.
        ("chroot_local_user", "YES".into()),
        ("allow_writeable_chroot", "YES".into()),
        ("secure_chroot_dir", layout.empty.display().to_string()),
        ("pasv_enable", "YES".into()),
        ("pasv_min_port", pasv.start().to_string()),
        ("pasv_max_port", pasv.end().to_string()),
        ("ssl_enable", "YES".into()),
        ("implicit_ssl", yes_no(opts.implicit).into()),
        ("force_local_logins_ssl", "YES".into()),
        ("force_local_data_ssl", "YES".into()),
        ("require_ssl_reuse", yes_no(opts.require_ssl_reuse).into()),
        (
            "strict_ssl_read_eof",
            yes_no(opts.strict_ssl_read_eof).into(),
        ),
        ("ssl_ciphers", "HIGH".into()),
        ("rsa_cert_file", pki.server_cert_pem().display().to_string()),
        (
            "rsa_private_key_file",
            pki.server_key_pem().display().to_string(),
        ),
        ("xferlog_enable", "YES".into()),
        ("vsftpd_log_file", layout.log.display().to_string()),
        ("dual_log_enable", "YES".into()),
        ("log_ftp_protocol", "YES".into()),
        ("debug_ssl", "YES".into()),
    ];
    for (key, value) in settings {
        writeln!(conf, "{key}={value}").unwrap();
    }
    std::fs::write(&layout.conf, conf).unwrap();
}

fn spawn_vsftpd(layout: &Layout, opts: &VsftpdOptions) -> Child {
    let mut command = Command::new(VSFTPD_BIN);
    command
        .arg(&layout.conf)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&layout.stdout).unwrap())
        .stderr(std::fs::File::create(&layout.stderr).unwrap())
        .env(INSTANCE_VAR, &layout.conf);
    if !opts.tls13 {
        command.env("OPENSSL_CONF", &layout.openssl_conf);
    }
    command.spawn().unwrap()
}

/// Wait (at most 10 s) until vsftpd accepts connections; on failure return its output and log.
fn wait_until_listening(
    mut child: Child,
    addr: SocketAddr,
    layout: &Layout,
) -> Result<Child, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(describe_failure(
                &format!("vsftpd exited with {status}"),
                layout,
            ));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(describe_failure(
                &format!("vsftpd did not listen on {addr} within 10 s"),
                layout,
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn describe_failure(what: &str, layout: &Layout) -> String {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    format!(
        "{what}\n--- stdout\n{}\n--- stderr\n{}\n--- log\n{}\n--- config\n{}",
        read(&layout.stdout),
        read(&layout.stderr),
        read(&layout.log),
        read(&layout.conf)
    )
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn next_passive_block() -> RangeInclusive<u16> {
    let n = NEXT_PASV_BLOCK.fetch_add(1, Ordering::Relaxed);
    let start = PASV_BASE + (n % 400) * PASV_BLOCK;
    start..=start + PASV_BLOCK - 1
}

/// Create `ferrytest` (with a home and a login shell, which PAM's pam_shells wants) if missing,
/// and set its password; once per process.
fn ensure_login_user() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        if login_user_exists() {
            ensure_home();
        } else {
            let status = Command::new("useradd")
                .args(["-m", "-s", "/bin/bash", VSFTPD_USER])
                .status()
                .unwrap();
            // Another test process may have created it at the same moment.
            assert!(
                status.success() || login_user_exists(),
                "useradd {VSFTPD_USER} failed ({status}); vsftpd tests must run as root"
            );
        }
        set_password();
    });
}

fn login_user_exists() -> bool {
    Command::new("id")
        .arg(VSFTPD_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ensure_home() {
    let home = PathBuf::from(format!("/home/{VSFTPD_USER}"));
    if !home.is_dir() {
        std::fs::create_dir_all(&home).unwrap();
        let (uid, gid) = login_user_ids();
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
    }
}

fn set_password() {
    use std::io::Write;
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = chpasswd.stdin.take().unwrap();
    writeln!(stdin, "{VSFTPD_USER}:{VSFTPD_PASSWORD}").unwrap();
    drop(stdin);
    let status = chpasswd.wait().unwrap();
    assert!(
        status.success(),
        "chpasswd for {VSFTPD_USER} failed: {status}"
    );
}

/// Whether this process runs as root (owner of `/proc/self` is uid 0).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn login_user_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, VSFTPD_USER])
            .output()
            .unwrap();
        assert!(out.status.success(), "id {flag} {VSFTPD_USER} failed");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid, gid);
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
