//! A vsftpd 3.0.3 harness: one real vsftpd per test, on its own loopback port.
//!
//! What it does: writes a config (explicit or implicit FTPS, TLS required on control and data,
//! `require_ssl_reuse` as asked, a private passive port range, optionally `max_per_ip` and
//! `idle_session_timeout`), a throwaway CA and server certificate for 127.0.0.1, and a served
//! directory into a temp dir; makes sure the Linux user `ferrytest` exists with a known
//! password; starts `/usr/sbin/vsftpd <conf>` in the foreground on 127.0.0.1 (or another
//! loopback address, [`VsftpdOptions::listen_address`]), waits until it accepts connections, can
//! kill one session on demand ([`Vsftpd::kill_one_session`]), and on drop kills it and every
//! session it forked.
//!
//! What it does not do: install vsftpd (`.ci/test` does), or run without root (vsftpd needs it
//! to switch to the login user). Without vsftpd (or without root) a test fails, so that no run
//! passes by skipping; `FERRY_SKIP_VSFTPD=1` asks for the skip explicitly.
//!
//! How it fits: integration tests point ferry's FTPS transport at [`Vsftpd::addr`] with
//! [`Vsftpd::ca_pem`] as `ca_file` and read [`Vsftpd::log_text`] to check session reuse.
//! Fault-injection tests start it on `127.0.0.2` behind a [`super::proxy::FaultProxy`] on
//! `127.0.0.1`: vsftpd binds each passive socket to the control connection's local address, so
//! its data ports are on `127.0.0.2` as well, and the certificate (for 127.0.0.1) still matches
//! the address ferry connects to.
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
    /// Passive ports; `None` takes the next free block of 20 ports above 40000. Behind a
    /// [`super::proxy::FaultProxy`], pass [`super::proxy::data_port_block`] (see why there).
    pub passive_ports: Option<RangeInclusive<u16>>,
    /// The address to listen on (`listen_address`); `None` is 127.0.0.1.
    pub listen_address: Option<Ipv4Addr>,
    /// `max_per_ip`: more control connections from one address are refused with a 421 reply.
    /// `None` leaves vsftpd's default (0, unlimited). Behind the proxy every connection comes
    /// from 127.0.0.1; a session counts until vsftpd has reaped it ([`Vsftpd::session_count`]).
    pub max_per_ip: Option<u32>,
    /// `idle_session_timeout` in seconds; `None` leaves vsftpd's default (300).
    pub idle_session_timeout: Option<u32>,
}

impl Default for VsftpdOptions {
    fn default() -> Self {
        VsftpdOptions {
            implicit: false,
            tls13: true,
            require_ssl_reuse: true,
            strict_ssl_read_eof: true,
            passive_ports: None,
            listen_address: None,
            max_per_ip: None,
            idle_session_timeout: None,
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
    passive_ports: RangeInclusive<u16>,
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
        let ip = opts.listen_address.unwrap_or(Ipv4Addr::LOCALHOST);
        let mut last_failure = String::new();
        // The port is found by binding port 0 and releasing it; another process may take it in
        // between, so a start that fails to bind is retried on a new port.
        for _ in 0..5 {
            let port = free_port(ip);
            let addr = SocketAddr::from((ip, port));
            write_config(&layout, &pki, &opts, addr, &pasv);
            let child = spawn_vsftpd(&layout, &opts);
            match wait_until_listening(child, addr, &layout) {
                Ok(child) => {
                    return Some(Vsftpd {
                        child,
                        addr,
                        passive_ports: pasv.clone(),
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

    /// CPU seconds (user+sys) of the sessions that have ended and been reaped, as the listener's
    /// `cutime + cstime` (each session process waits for its own children, so the login user's
    /// process is in there too).
    pub fn sessions_cpu_seconds(&self) -> Option<f64> {
        reaped_children_cpu_seconds(self.child.id())
    }

    /// Whether a session is still running (its CPU counts only once it is over).
    pub fn sessions_alive(&self) -> bool {
        has_children(self.child.id())
    }

    /// The served directory, which the client sees as `/` (chrooted).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The control address: [`VsftpdOptions::listen_address`] (default 127.0.0.1) and its port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The passive port range (`pasv_min_port`-`pasv_max_port`), on [`addr`](Self::addr)'s IP.
    pub fn passive_ports(&self) -> RangeInclusive<u16> {
        self.passive_ports.clone()
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

    /// Kill one session of this instance, picked at random, as a crashing server would lose
    /// it: SIGKILL, by PID, to every process of that session. Returns once the listener has
    /// reaped the session (so it no longer counts against `max_per_ip`; at most 5 s), and says
    /// whether there was a session to kill.
    ///
    /// A logged-in vsftpd session is three processes in a Unix session of its own: the leader
    /// the listener forked, a second process of the leader's, and the process running as the
    /// login user. Killing one of them at random is not enough (in a test the session went on
    /// answering NOOP), so every process of that Unix session is killed.
    pub fn kill_one_session(&self) -> bool {
        use rand::seq::IteratorRandom as _;
        let listener = self.child.id();
        let listener_sid = session_id(listener);
        let mut sessions: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
        for pid in instance_pids(&self.marker) {
            match session_id(pid) {
                Some(sid) if pid != listener && Some(sid) != listener_sid => {
                    sessions.entry(sid).or_default().push(pid);
                }
                _ => {}
            }
        }
        let Some((leader, pids)) = sessions.into_iter().choose(&mut rand::rng()) else {
            return false;
        };
        let killed = kill_pids(&pids);
        let deadline = Instant::now() + Duration::from_secs(5);
        while parent_pid(leader) == Some(listener) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        killed
    }

    /// How many sessions the listener still counts (against `max_per_ip`): its child
    /// processes, including ones that have ended but are not reaped yet. A connection turned
    /// away with 421 counts until its process is reaped, a moment after the reply.
    pub fn session_count(&self) -> usize {
        let listener = self.child.id();
        all_pids()
            .filter(|&pid| parent_pid(pid) == Some(listener))
            .count()
    }
}

/// Every PID in /proc.
fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok()?.parse::<u32>().ok())
}

/// Fields 4 and later of /proc/`pid`/stat (state, ppid, pgrp, session, ...): after the command
/// name, which is in parentheses and may itself hold spaces or parentheses.
fn stat_fields(pid: u32) -> Option<Vec<u32>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // The state is a letter; numbers follow. Keep positions: the state becomes 0.
    Some(
        rest.split_whitespace()
            .map(|field| field.parse().unwrap_or(0))
            .collect(),
    )
}

fn parent_pid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1).copied()
}

fn session_id(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(3).copied()
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
    let pids = instance_pids(marker);
    if !pids.is_empty() {
        kill_pids(&pids);
    }
}

/// Every live process carrying this instance's marker: the listener and its sessions. (A
/// zombie's environment reads as empty, so exited processes are not listed.)
fn instance_pids(marker: &str) -> Vec<u32> {
    let wanted = format!("{INSTANCE_VAR}={marker}");
    all_pids()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|&b| b == 0)
                    .any(|var| var == wanted.as_bytes())
            })
        })
        .collect()
}

/// SIGKILL every PID in `pids`; whether every signal was delivered.
fn kill_pids(pids: &[u32]) -> bool {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    // sh's builtin kill, because /bin/kill (procps) is not in every minimal image.
    Command::new("sh")
        .args(["-c", &format!("kill -s KILL {}", list.join(" "))])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
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
    addr: SocketAddr,
    pasv: &RangeInclusive<u16>,
) {
    let mut conf = String::new();
    let mut settings: Vec<(&str, String)> = vec![
        ("listen", "YES".into()),
        ("listen_ipv6", "NO".into()),
        ("listen_address", addr.ip().to_string()),
        ("listen_port", addr.port().to_string()),
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
    if let Some(max) = opts.max_per_ip {
        settings.push(("max_per_ip", max.to_string()));
    }
    if let Some(seconds) = opts.idle_session_timeout {
        settings.push(("idle_session_timeout", seconds.to_string()));
    }
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
        if let Ok(probe) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            settle_probe_session(probe, child.id());
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

/// End the session vsftpd forks for [`wait_until_listening`]'s probe before the harness hands
/// the server out, so that it neither counts against `max_per_ip` nor is the one
/// [`Vsftpd::kill_one_session`] picks. The probe's connect succeeds before vsftpd has accepted
/// it, so first wait (at most 2 s) for the session to appear, then close the probe and wait (at
/// most 5 s) until the session is reaped: until then it is a zombie child of the listener, which
/// [`instance_pids`] no longer sees but vsftpd still counts. After the deadlines, go on.
fn settle_probe_session(probe: TcpStream, listener: u32) {
    let has_session = || all_pids().any(|pid| parent_pid(pid) == Some(listener));
    let deadline = Instant::now() + Duration::from_secs(2);
    while !has_session() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(probe);
    let deadline = Instant::now() + Duration::from_secs(5);
    while has_session() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
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

/// The common start of an installed server's harness (proftpd, pure-ftpd): root and the login
/// user checked, then a private directory readable by the login user, holding `root/` (to be
/// served) and a throwaway PKI in `pki/`. Returns the directory, `root/` and the PKI.
pub(crate) fn server_dir(name: &str) -> (tempfile::TempDir, PathBuf, Pki) {
    assert!(
        is_root(),
        "the {name} tests need root ({name} switches to its login user)"
    );
    ensure_login_user();
    let dir = tempfile::Builder::new()
        .prefix(&format!("ferry-{name}-"))
        .tempdir()
        .unwrap();
    set_mode(dir.path(), 0o755);
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    let pki = Pki::generate(&pki_dir, CertKind::Valid).unwrap();
    (dir, root, pki)
}

/// Wait (at most 10 s) until the server `name`, started as `child`, accepts connections on
/// `addr`; on failure kill it and return why, with the named files of `dir` (its output, logs
/// and configuration). For the servers whose listener needs no probe session settled (proftpd,
/// pure-ftpd); vsftpd's own wait is [`wait_until_listening`].
pub(crate) fn wait_until_accepting(
    name: &str,
    mut child: Child,
    addr: SocketAddr,
    dir: &Path,
    files: &[&str],
) -> Result<Child, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let describe = |what: String| {
        let mut text = what;
        for file in files {
            let body = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            let _ = write!(text, "\n--- {file}\n{body}");
        }
        text
    };
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(describe(format!("{name} exited with {status}")));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(describe(format!(
                "{name} did not listen on {addr} within 10 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CPU seconds (user+sys) of the reaped children of process `pid`: its `cutime + cstime`.
pub(crate) fn reaped_children_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state is field 3; cutime and cstime are 16, 17.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    let hz = 100.0; // USER_HZ on Linux
    Some((ticks(16)? + ticks(17)?) / hz)
}

/// Whether `pid` has a child alive (a session not yet over), from
/// `/proc/PID/task/PID/children`; `false` when that cannot be read.
pub(crate) fn has_children(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .is_ok_and(|c| !c.trim().is_empty())
}

pub(crate) fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
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
pub(crate) fn ensure_login_user() {
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
pub(crate) fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub(crate) fn login_user_ids() -> (u32, u32) {
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

pub(crate) fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid, gid);
        }
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
