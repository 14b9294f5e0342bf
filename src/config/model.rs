//! Validated domain types: what the rest of ferry works with once a job file has been checked.
//!
//! Nothing here is parsed from YAML directly: `raw.rs` mirrors the file, `validate.rs` turns it
//! into these types (resolving secrets' sources, defaults and paths) and reports every problem.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The whole validated job file.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file was read from (for messages).
    pub source: PathBuf,
    pub state_dir: PathBuf,
    pub endpoints: BTreeMap<String, Endpoint>,
    pub jobs: BTreeMap<String, Job>,
    /// What only `ferry run` uses.
    pub agent: AgentSettings,
    /// Non-fatal findings (a literal password, `tls: none`), each already naming its place.
    pub warnings: Vec<String>,
    /// What cannot be checked from here and need not be wrong (a `password_env` this shell does
    /// not set, a `password_credential` outside the systemd unit): shown, never fatal. The
    /// secret is read when connecting, which is where such a job fails if it really is missing.
    pub notes: Vec<String>,
    /// Problems of this machine now rather than of the file, by job: a `local` or
    /// `after_upload.move_to` directory that is missing or not a directory, a password file or
    /// credential that cannot be read (an endpoint's finding is listed under each of its
    /// jobs). Such a job cannot run here now; the others can. Lines are rendered like
    /// [`ConfigError`](super::ConfigError)'s, ``jobs.yaml:11:12: job `x`: message``.
    pub unavailable: BTreeMap<String, Vec<String>>,
    /// Every such finding once, in file order, an endpoint's without jobs included: what
    /// `ferry check` prints.
    pub unavailable_findings: Vec<String>,
}

impl Config {
    /// Why `job` cannot run on this machine now, when it cannot (see [`Config::unavailable`]).
    pub fn unavailable(&self, job: &str) -> Option<&[String]> {
        self.unavailable
            .get(job)
            .filter(|lines| !lines.is_empty())
            .map(Vec::as_slice)
    }
}

/// Settings of the agent (`ferry run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// Where to serve Prometheus metrics; off when `None`.
    pub metrics: Option<std::net::SocketAddr>,
    /// After SIGTERM, how long in-flight transfers may finish before they are aborted.
    pub shutdown_grace: Duration,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            metrics: None,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// AUTH TLS on a plain connection (port 21 by default).
    Explicit,
    /// TLS from the first byte (port 990 by default).
    Implicit,
    /// Cleartext FTP: only with `allow_insecure: true`, warned at every run.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMode {
    Passive,
    Active,
}

/// Where the password comes from. The secret itself is read only when connecting, by
/// [`read_password`](super::read_password).
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordSource {
    None,
    /// The name of an environment variable.
    Env(String),
    File(PathBuf),
    /// The name of a systemd credential (`LoadCredential=NAME:...`): the file
    /// `$CREDENTIALS_DIRECTORY/NAME`, resolved when connecting, since only the service has it.
    Credential(String),
    /// A literal password from the job file (warned about). Never printed.
    Literal(Secret),
}

impl fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::None => f.write_str("None"),
            PasswordSource::Env(v) => write!(f, "Env({v})"),
            PasswordSource::File(p) => write!(f, "File({})", p.display()),
            PasswordSource::Credential(name) => write!(f, "Credential({name})"),
            PasswordSource::Literal(_) => f.write_str("Literal(<redacted>)"),
        }
    }
}

/// A secret string whose Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustRoots {
    /// The system's root store.
    System,
    /// Only the CAs in this PEM file.
    CaFile(PathBuf),
}

/// One remote FTPS server and how to log in to it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub user: String,
    pub password: PasswordSource,
    pub trust: TrustRoots,
    /// SHA-256 of the server certificate (DER), 32 bytes, when pinned: accept exactly it.
    pub pin_sha256: Option<[u8; 32]>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub data_mode: DataMode,
    pub max_connections: usize,
    pub timeout: Duration,
    /// Highest TLS version to offer: `None` means rustls' default (1.3).
    pub tls_max_version: Option<TlsVersion>,
    /// Local ports to listen on for active-mode data connections (`None`: any free port).
    pub active_ports: Option<std::ops::RangeInclusive<u16>>,
    /// Connect passive data connections to the address in a PASV reply. Off by default: the
    /// control connection's address is used, so a server cannot send ferry to another host.
    pub use_pasv_address: bool,
    pub limits: Limits,
}

/// Bounds on what a server may send, so that a hostile or broken one cannot exhaust memory or
/// keep a walk going forever. Over a limit is an error naming the directory, which makes the
/// listing incomplete and so blocks deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest listing line, in bytes.
    pub max_line: usize,
    /// Most entries one directory listing may hold.
    pub max_entries: usize,
    /// Deepest directory level below the root that is walked (both sides).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 16 * 1024,
            max_entries: 1_000_000,
            max_depth: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Push,
    Pull,
    /// Two-way: what changed on either side since the last sync goes to the other.
    Both,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Push => "push",
            Direction::Pull => "pull",
            Direction::Both => "both",
        }
    }
}

/// How a two-way job settles a file changed on both sides since the last sync (or found on
/// both sides, different, with no record of a sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// The side with the later modification time wins; equal or unknown times keep both.
    Newer,
    /// The local copy wins.
    Local,
    /// The remote copy wins.
    Remote,
    /// The newer copy keeps the name; the other is renamed `NAME.conflict-<time>.EXT` and
    /// copied to both sides. Nothing is overwritten. The default.
    KeepBoth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    Size,
    Hash,
    Readback,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterUpload {
    Keep,
    Delete,
    MoveTo(PathBuf),
}

/// The most files one run may delete; over it, the run deletes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxDelete {
    Count(u64),
    /// A percentage of the files known in state (or, with no state yet, of the files the
    /// destination lists).
    Percent(u8),
}

impl Default for MaxDelete {
    fn default() -> Self {
        MaxDelete::Percent(50)
    }
}

impl std::fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxDelete::Count(n) => write!(f, "{n}"),
            MaxDelete::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// How transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, including the first (1 means no retry).
    pub attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The waits before the second, third, ... try: `attempts - 1` of them, exponential from
    /// `initial` and capped at `max` (backon's schedule), each drawn uniformly from zero to
    /// that ("full jitter"), so that workers cut off together do not come back in step.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_max_times(self.attempts.saturating_sub(1) as usize)
            .build()
            .map(|d| d.mul_f64(rand::random_range(0.0..=1.0)))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// Include and exclude globs, relative to the mapping's root.
#[derive(Debug, Clone)]
pub struct Filter {
    include: Option<globset::GlobSet>,
    exclude: Option<globset::GlobSet>,
}

impl Filter {
    pub fn new(include: Option<globset::GlobSet>, exclude: Option<globset::GlobSet>) -> Self {
        Filter { include, exclude }
    }

    /// Everything passes.
    pub fn all() -> Self {
        Filter {
            include: None,
            exclude: None,
        }
    }

    /// Whether a file at this relative path takes part in the job. Directories are always
    /// walked; include globs apply to files only, exclude globs to both.
    pub fn allows_file(&self, rel: &str) -> bool {
        if self.exclude.as_ref().is_some_and(|x| x.is_match(rel)) {
            return false;
        }
        self.include.as_ref().is_none_or(|i| i.is_match(rel))
    }

    /// Whether a directory is walked at all.
    pub fn allows_dir(&self, rel: &str) -> bool {
        !self.exclude.as_ref().is_some_and(|x| x.is_match(rel))
    }

    /// Whether the filter narrows files (then empty directories are not created on their own).
    pub fn has_include(&self) -> bool {
        self.include.is_some()
    }
}

/// One validated sync job.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    /// Name of the endpoint in [`Config::endpoints`].
    pub endpoint: String,
    pub direction: Direction,
    /// Absolute local root (an existing directory at validation time).
    pub local: PathBuf,
    /// Absolute remote root, such as `/incoming`.
    pub remote: String,
    /// The cron expression as written (validated with croner).
    pub schedule: Option<String>,
    pub timezone: Option<chrono_tz::Tz>,
    pub filter: Filter,
    pub delete: bool,
    /// The most files one run may delete (with `delete: true`).
    pub max_delete: MaxDelete,
    pub verify: Verify,
    pub retry: RetryPolicy,
    pub watch: bool,
    pub settle: Duration,
    pub after_upload: AfterUpload,
    /// Push: write `x.sha256` (coreutils format) beside each uploaded `x`, once `x` is in place.
    pub checksum_sidecar: bool,
    /// Run once at start-up a scheduled run missed while the agent was down.
    pub catch_up: bool,
    /// Delay each scheduled run by a random part of this (spreads jobs sharing a schedule).
    pub jitter: Option<Duration>,
    /// Watch jobs: how often a full scan backs the watcher up (default 10 min).
    pub rescan: Duration,
    /// Pull jobs: when a remote file is finished enough to take (default: stable for 30 s).
    pub ready: Ready,
    /// Commands run after each run.
    pub hooks: Hooks,
    /// Pull jobs: what happens to a remote file once its local copy is verified and in place.
    pub remote_after: RemoteAfter,
    /// Push jobs with `publish: batch`: how a batch is announced once all of it is in place.
    pub publish: Option<Publish>,
    /// Where an old copy goes instead of being overwritten or deleted: for a pull job a local
    /// directory, for a push job an absolute directory on the server.
    pub backup_dir: Option<PathBuf>,
    /// Two-way jobs: how a file changed on both sides is settled.
    pub conflict: ConflictPolicy,
    /// Push jobs with `upload: direct`: files are written straight to their final name (for
    /// write-only drop boxes that refuse renames), not through a temporary name.
    pub direct_upload: bool,
}

/// `publish: batch`: every changed file of a run is uploaded and verified under its temporary
/// name, then all are renamed into place, and only then the marker (or manifest) is written in
/// the remote root; the previous batch's marker is removed before the first rename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The marker's name in the remote root (`READY`, or the manifest's `SHA256SUMS`).
    pub marker: String,
    /// The marker holds `SHA256  PATH` lines of the batch (a manifest) rather than nothing.
    pub manifest: bool,
}

/// `remote_after_download`: the partner's copy of a pulled file, once ferry's is in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteAfter {
    Keep,
    Delete,
    /// Move it to this absolute remote directory, keeping its path below the job's root.
    MoveTo(String),
}

/// `on_success` / `on_failure`: argv lists run after a run (see `hooks.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    pub on_success: Option<Vec<String>>,
    pub on_failure: Option<Vec<String>>,
    /// A hook still running after this is killed (default 60 s).
    pub timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            on_success: None,
            on_failure: None,
            timeout: Duration::from_secs(60),
        }
    }
}

/// When a pull job takes a remote file: a partner may still be writing one that is listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// As soon as it is listed (`ready: immediate`; push jobs always).
    Immediate,
    /// Once it showed the same size and time in listings at least this far apart
    /// (`ready: stable`, `stable_for: 30s`).
    Stable(Duration),
    /// A directory's files once this file is listed in it (`ready: { marker: _SUCCESS }`);
    /// the marker itself is pulled last.
    Marker(String),
    /// A file once its `x.sha256` or `x.md5` is beside it (`ready: sidecar`), and checked
    /// against it.
    Sidecar,
}
