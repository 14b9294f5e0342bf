//! Validation: from the raw job file to the domain types of `model.rs`, with every problem.
//!
//! What it does: [`load`] and [`parse_str`] parse the file (see `raw.rs`), deserialize each
//! endpoint and each job on its own, then check what serde cannot: required keys, value ranges,
//! that an endpoint named by a job exists, that local directories and CA files are there, that
//! a cron expression and a timezone parse, that globs compile. Each problem carries its line,
//! column and the job or endpoint it belongs to; nothing stops at the first one. Defaults are
//! applied here (port by TLS mode, `max_connections: 2`, `timeout: 30s`, ...), relative paths
//! are resolved against the job file's directory, and non-fatal findings (a literal password,
//! `tls: none`) become warnings.
//!
//! What it does not do: it never reads a secret (only checks that its source is there:
//! [`read_password`] reads it when connecting) and never touches the network.
//!
//! Error policy, in three kinds of finding:
//! - A problem of the file (it does not parse, a key is wrong, a value is out of range, a
//!   secret file is open to other users, a CA file holds no certificate) is fatal: the file is
//!   [`ConfigError::Invalid`] with all its problems, which the CLI prints one per line and maps
//!   to exit code 2. Nothing runs from a file that is wrong.
//! - A problem of this machine now (a job's `local` or `after_upload.move_to` directory that
//!   is missing, not a directory or not accessible; a `password_file` or credential that
//!   cannot be read) makes only the jobs it concerns unavailable
//!   ([`Config::unavailable`](super::Config::unavailable)): the file loads, those jobs are
//!   reported and skipped, the others run. An endpoint's finding concerns each of its jobs.
//! - What cannot be checked from here and is not wrong for that (a `password_env` the shell
//!   does not set, a `password_credential` outside the systemd unit) is a note
//!   ([`Config::notes`](super::Config::notes)): `ferry check` of a production file can run
//!   from a shell. The secret is read when connecting; that is where such a job fails.
//!
//! No message ever contains a password.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::model::{
    AfterUpload, AgentSettings, Config, ConflictPolicy, DataMode, Direction, Endpoint, Filter,
    Hooks, Job, Limits, MaxDelete, PasswordSource, Publish, Ready, RemoteAfter, RetryPolicy,
    Secret, TlsMode, TlsVersion, TrustRoots, Verify,
};
use super::raw::{
    Collected, Mark, Node, NodeValue, Problem, RawAfterUpload, RawConflict, RawDataMode,
    RawDirection, RawEndpoint, RawFile, RawJob, RawLimits, RawMarker, RawMaxDelete, RawPublish,
    RawReady, RawReadyWord, RawRemoteAfter, RawTlsMode, RawTlsVersion, RawUpload, RawVerify,
    deserialize_collecting, parse_document,
};

/// The only job file format this ferry reads.
const SUPPORTED_VERSION: u32 = 1;
const DEFAULT_MAX_CONNECTIONS: usize = 2;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_SETTLE: Duration = Duration::from_secs(2);
/// How long a pull job's remote file must stay unchanged before it is taken, by default.
pub const DEFAULT_STABLE_FOR: Duration = Duration::from_secs(30);
/// Files a watch job leaves alone as unfinished, besides its own `exclude`.
pub const WATCH_TEMP_PATTERNS: &[&str] = &[
    "**/*.tmp",
    "**/*.part",
    "**/*.partial",
    "**/.~*",
    "**/~$*",
    "**/*.swp",
];

/// How often a watch job rescans its tree behind the watcher, by default.
const DEFAULT_RESCAN: Duration = Duration::from_secs(600);
const PASSWORD_KEYS: [&str; 4] = [
    "password_env",
    "password_file",
    "password_credential",
    "password",
];

/// Why a job file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}", path = .path.display())]
    Read { path: PathBuf, source: io::Error },
    /// Display: one line per problem:
    /// ``jobs.yaml:12:5: job `acme-nightly`: unknown endpoint `acm` (known: acme, partner)``
    #[error("{}", render_problems(.path, .problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, problem) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{}:{problem}", path.display());
    }
    out
}

/// Read and validate the job file at `path`; relative paths in it are resolved against its
/// directory, and environment variables come from the process.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base_dir = directory_of(path);
    parse_str(&text, path, &base_dir, &|name| std::env::var(name).ok())
}

/// The job file's directory, absolute when the current directory is known, so that every
/// resolved path in [`Config`] is absolute.
fn directory_of(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

/// The same from text; `base_dir` resolves relative paths (the job file's directory); `env`
/// looks up environment variables (tests pass a closure; `load` passes `std::env::var`).
pub fn parse_str(
    text: &str,
    path: &Path,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut checker = Checker {
        base_dir,
        env,
        problems: Vec::new(),
        warnings: Vec::new(),
        notes: Vec::new(),
        unavailable: Vec::new(),
        secrets: Vec::new(),
    };
    let parts = checker.check_document(text);
    let mut problems = checker.problems;
    for problem in &mut problems {
        problem.message = redact(&problem.message, &checker.secrets);
    }
    let render = |problem: &Problem| {
        format!(
            "{}:{}",
            path.display(),
            Problem {
                message: redact(&problem.message, &checker.secrets),
                ..problem.clone()
            }
        )
    };
    match parts {
        Some((state_dir, endpoints, jobs, agent)) if problems.is_empty() => {
            let mut found = checker.unavailable;
            found.sort_by_key(|(_, p)| (p.line, p.column));
            let mut unavailable: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut unavailable_findings = Vec::new();
            for (owner, problem) in &found {
                let line = render(problem);
                let concerned = jobs.values().filter(|job| match owner {
                    Owner::Job(name) => &job.name == name,
                    Owner::Endpoint(name) => &job.endpoint == name,
                });
                for job in concerned {
                    unavailable
                        .entry(job.name.clone())
                        .or_default()
                        .push(line.clone());
                }
                unavailable_findings.push(line);
            }
            Ok(Config {
                source: path.to_path_buf(),
                state_dir,
                endpoints,
                jobs,
                agent,
                warnings: checker.warnings.iter().map(render).collect(),
                notes: checker.notes.iter().map(render).collect(),
                unavailable,
                unavailable_findings,
            })
        }
        _ => {
            // A file refused is reported whole: what this machine lacks too, so that fixing the
            // file does not only reveal the next problem.
            problems.extend(checker.unavailable.into_iter().map(|(_, mut problem)| {
                problem.message = redact(&problem.message, &checker.secrets);
                problem
            }));
            // Stable: problems at the same place keep the order they were found in.
            problems.sort_by_key(|p| (p.line, p.column));
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }
}

/// Read the password now (for connecting): from the environment, a file (one trailing newline
/// trimmed), a systemd credential (the file `$CREDENTIALS_DIRECTORY/NAME`, resolved now: only
/// the service has that variable) or the literal. The error names the endpoint and the
/// source, never the secret.
pub fn read_password(endpoint: &Endpoint) -> Result<Option<Secret>, String> {
    read_password_with(endpoint, &|name| std::env::var(name))
}

/// [`read_password`] with the environment looked up by `env` (tests pass their own).
fn read_password_with(
    endpoint: &Endpoint,
    env: &dyn Fn(&str) -> Result<String, std::env::VarError>,
) -> Result<Option<Secret>, String> {
    let name = &endpoint.name;
    let read_file = |path: &Path, source: &str| {
        let text = fs::read_to_string(path)
            .map_err(|e| format!("endpoint `{name}`: cannot read {source}: {e}"))?;
        check_private_file(path).map_err(|e| format!("endpoint `{name}`: {e}"))?;
        Ok::<_, String>(Secret::new(trim_one_newline(text)))
    };
    let (secret, source) = match &endpoint.password {
        PasswordSource::None => return Ok(None),
        PasswordSource::Literal(secret) => (secret.clone(), "the literal password".to_string()),
        PasswordSource::Env(var) => {
            let source = format!("environment variable `{var}` (password_env)");
            match env(var) {
                Ok(value) => (Secret::new(value), source),
                Err(std::env::VarError::NotPresent) => {
                    return Err(format!("endpoint `{name}`: {source} is not set"));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(format!("endpoint `{name}`: {source} is not valid UTF-8"));
                }
            }
        }
        PasswordSource::File(path) => {
            let source = format!("password file `{}`", path.display());
            (read_file(path, &source)?, source)
        }
        PasswordSource::Credential(credential) => {
            let Some(dir) = env("CREDENTIALS_DIRECTORY").ok().filter(|d| !d.is_empty()) else {
                return Err(format!(
                    "endpoint `{name}`: password_credential `{credential}` needs \
                     $CREDENTIALS_DIRECTORY, which systemd sets for a service with \
                     LoadCredential={credential}:...; it is not set here"
                ));
            };
            let path = Path::new(&dir).join(credential);
            let source = format!("credential `{credential}` (`{}`)", path.display());
            (read_file(&path, &source)?, source)
        }
    };
    // CR or LF would end the PASS command early and let the rest run as another command.
    if has_control_break(secret.expose()) {
        return Err(format!(
            "endpoint `{name}`: the password from {source} contains CR, LF or NUL"
        ));
    }
    crate::text::register_secret(secret.expose());
    Ok(Some(secret))
}

/// Refuse a secret file (a password file, a client key) that users other than its owner and
/// group can read or write, as OpenSSH does; group-readable stays allowed for `root:ferry 0640`
/// set-ups. The message names the file and the fix.
pub fn check_private_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o006 != 0 {
        return Err(format!(
            "`{}` is open to other users (mode {mode:04o}): it holds a secret; \
             make it 0600 or 0640 (chmod o-rwx)",
            path.display()
        ));
    }
    Ok(())
}

/// A literal password is never quoted by ferry's own messages, but serde quotes a value that
/// has the wrong type: if the password was also pasted under another key, hide it there too.
/// Only quoted occurrences are replaced, so that a short password does not garble messages.
fn redact(message: &str, secrets: &[String]) -> String {
    let mut message = message.to_owned();
    for secret in secrets {
        for (open, close) in [("\"", "\""), ("`", "`")] {
            let quoted = format!("{open}{secret}{close}");
            message = message.replace(&quoted, &format!("{open}<redacted>{close}"));
        }
    }
    message
}

/// Files written by editors and `echo` end with a newline that is not part of the password.
fn trim_one_newline(mut text: String) -> String {
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    text
}

fn has_control_break(text: &str) -> bool {
    text.contains(['\r', '\n', '\0'])
}

/// Parse a `schedule:` as ferry reads it: 5 fields, or 6 with seconds first, or a nickname such
/// as `@daily`; no year field. The scheduler uses this too, so both agree on what is valid.
pub fn parse_schedule(expr: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr)
}

/// One job or endpoint being checked: its name for messages and its node for positions.
struct Place<'n> {
    /// Whose findings of this machine (see [`Owner`]) are found here.
    owner: Owner,
    context: String,
    name_mark: Mark,
    node: &'n Node,
    /// Keys whose values serde already rejected: not to be reported again as missing.
    set_aside: Vec<String>,
}

impl Place<'_> {
    /// Where `key` is written; the entry's name when it is not.
    fn key(&self, key: &str) -> Mark {
        self.node.entry(key).map_or(self.name_mark, |(k, _)| k.mark)
    }

    /// Where the value of `key` is written; the entry's name when it is not.
    fn value(&self, key: &str) -> Mark {
        self.node.get(key).map_or(self.name_mark, |v| v.mark)
    }

    /// Where `outer.inner` is written, or the closest enclosing place.
    fn nested_value(&self, outer: &str, inner: &str) -> Mark {
        match self.node.get(outer) {
            Some(node) => node.get(inner).map_or(node.mark, |v| v.mark),
            None => self.name_mark,
        }
    }

    fn was_set_aside(&self, key: &str) -> bool {
        self.set_aside.iter().any(|k| k == key)
    }
}

type Parts = (
    PathBuf,
    BTreeMap<String, Endpoint>,
    BTreeMap<String, Job>,
    AgentSettings,
);

/// What a finding of this machine (not of the file) makes unavailable: one job, or every job
/// of one endpoint.
enum Owner {
    Job(String),
    Endpoint(String),
}

struct Checker<'a> {
    base_dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Problems of the file: any one of them and the file is refused.
    problems: Vec<Problem>,
    /// Rendered with the file name in front once the file is known to be valid.
    warnings: Vec<Problem>,
    /// Likewise: what cannot be checked from here (see [`Config::notes`]).
    notes: Vec<Problem>,
    /// Problems of this machine now: they make their owner's jobs unavailable, not the file
    /// invalid (see [`Config::unavailable`]).
    unavailable: Vec<(Owner, Problem)>,
    /// Literal passwords of the file, to keep out of every message.
    secrets: Vec<String>,
}

impl Checker<'_> {
    fn report(&mut self, mark: Mark, context: Option<&str>, message: impl Into<String>) {
        self.problems.push(Problem::new(mark, context, message));
    }

    fn report_at(&mut self, place: &Place<'_>, mark: Mark, message: impl Into<String>) {
        self.problems
            .push(Problem::new(mark, Some(&place.context), message));
    }

    fn warn_at(&mut self, place: &Place<'_>, mark: Mark, message: impl Into<String>) {
        self.warnings
            .push(Problem::new(mark, Some(&place.context), message));
    }

    fn note_at(&mut self, place: &Place<'_>, mark: Mark, message: impl Into<String>) {
        self.notes
            .push(Problem::new(mark, Some(&place.context), message));
    }

    /// A problem of this machine now, not of the file: the value is kept and the place's jobs
    /// become unavailable.
    fn unavailable_at(&mut self, place: &Place<'_>, mark: Mark, message: impl Into<String>) {
        let owner = match &place.owner {
            Owner::Job(name) => Owner::Job(name.clone()),
            Owner::Endpoint(name) => Owner::Endpoint(name.clone()),
        };
        let problem = Problem::new(mark, Some(&place.context), message);
        self.unavailable.push((owner, problem));
    }

    fn report_serde_errors(&mut self, context: Option<&str>, errors: &[(Mark, String)]) {
        for (mark, message) in errors {
            self.report(*mark, context, message.clone());
        }
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    // --- the top level ---------------------------------------------------------------------

    fn check_document(&mut self, text: &str) -> Option<Parts> {
        let root = match parse_document(text) {
            Ok(Some(root)) => root,
            Ok(None) => {
                self.report(
                    Mark { line: 1, column: 1 },
                    None,
                    "the job file is empty; it needs at least `version: 1`",
                );
                return None;
            }
            Err(problem) => {
                self.problems.push(problem);
                return None;
            }
        };
        self.secrets = literal_passwords(&root);
        let collected: Collected<RawFile> = deserialize_collecting(&root);
        self.report_serde_errors(None, &collected.errors);
        let raw = collected.value?;
        let version_set_aside = collected.set_aside.iter().any(|k| k == "version");
        self.check_version(&root, raw.version, version_set_aside);
        let state_dir = self.check_state_dir(&root, raw.state_dir.as_deref());
        let endpoint_nodes = self.named_entries(&root, "endpoints", "endpoint");
        let job_nodes = self.named_entries(&root, "jobs", "job");

        let known: Vec<String> = endpoint_nodes.iter().map(|(n, _, _)| n.clone()).collect();
        let mut endpoints = BTreeMap::new();
        for (name, mark, node) in &endpoint_nodes {
            if let Some(endpoint) = self.check_endpoint(name, *mark, node) {
                endpoints.insert(name.clone(), endpoint);
            }
        }
        let mut jobs = BTreeMap::new();
        let mut local_marks = BTreeMap::new();
        for (name, mark, node) in &job_nodes {
            if let Some(job) = self.check_job(name, *mark, node, &known) {
                let local_mark = node.get("local").map_or(*mark, |v| v.mark);
                local_marks.insert(name.clone(), local_mark);
                jobs.insert(name.clone(), job);
            }
        }
        self.check_overlapping_roots(&jobs, &local_marks);
        let agent = self.check_agent(&root, &raw);
        Some((state_dir?, endpoints, jobs, agent?))
    }

    /// `metrics: 127.0.0.1:9464` and `shutdown_grace: 30s`.
    fn check_agent(&mut self, root: &Node, raw: &RawFile) -> Option<AgentSettings> {
        let defaults = AgentSettings::default();
        let mark = |key: &str| root.get(key).map_or(root.mark, |v| v.mark);
        let metrics = match raw.metrics.as_deref() {
            None => None,
            Some(text) => {
                match text.parse::<std::net::SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        self.report(
                        mark("metrics"),
                        None,
                        format!("metrics `{text}` must be an address and port such as 127.0.0.1:9464"),
                    );
                        return None;
                    }
                }
            }
        };
        let shutdown_grace = raw.shutdown_grace.unwrap_or(defaults.shutdown_grace);
        Some(AgentSettings {
            metrics,
            shutdown_grace,
        })
    }

    /// Two jobs on one local tree, one of which deletes there, would delete each other's files:
    /// refused, naming both (each pair once, at the later job's `local`).
    fn check_overlapping_roots(
        &mut self,
        jobs: &BTreeMap<String, Job>,
        marks: &BTreeMap<String, Mark>,
    ) {
        let roots: Vec<(&Job, PathBuf)> = jobs
            .values()
            .map(|j| {
                (
                    j,
                    fs::canonicalize(&j.local).unwrap_or_else(|_| j.local.clone()),
                )
            })
            .collect();
        for (i, (a, a_root)) in roots.iter().enumerate() {
            for (b, b_root) in &roots[i + 1..] {
                let overlap = a_root.starts_with(b_root) || b_root.starts_with(a_root);
                let deleter = [a, b].into_iter().find(|j| deletes_files(j));
                if let (true, Some(deleter)) = (overlap, deleter) {
                    let mark = marks
                        .get(&b.name)
                        .copied()
                        .unwrap_or(Mark { line: 1, column: 1 });
                    let context = format!("job `{}`", b.name);
                    self.report(
                        mark,
                        Some(&context),
                        format!(
                            "local `{}` overlaps job `{}`'s local `{}`, and `{}` deletes files there; give each job a directory of its own",
                            b.local.display(),
                            a.name,
                            a.local.display(),
                            deleter.name
                        ),
                    );
                }
            }
        }
    }

    fn check_version(&mut self, root: &Node, version: Option<u32>, set_aside: bool) {
        match version {
            Some(SUPPORTED_VERSION) => {}
            Some(other) => {
                let mark = root.get("version").map_or(root.mark, |v| v.mark);
                self.report(
                    mark,
                    None,
                    format!(
                        "unsupported version {other}; this ferry reads version {SUPPORTED_VERSION}"
                    ),
                );
            }
            None if set_aside => {}
            None => self.report(
                root.mark,
                None,
                format!("missing `version: {SUPPORTED_VERSION}` (the job file format)"),
            ),
        }
    }

    /// `state_dir`, else `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else
    /// `$XDG_STATE_HOME/ferry`, else `$HOME/.local/state/ferry`.
    fn check_state_dir(&mut self, root: &Node, state_dir: Option<&Path>) -> Option<PathBuf> {
        if let Some(dir) = state_dir {
            return Some(self.resolve(dir));
        }
        let env = |name: &str| (self.env)(name).filter(|v| !v.is_empty());
        // systemd joins several StateDirectory= entries with ':'; the first is ours.
        if let Some(dirs) = env("STATE_DIRECTORY") {
            let first = dirs.split(':').next().unwrap_or_default();
            return Some(PathBuf::from(first));
        }
        // The XDG spec says to ignore a relative XDG_STATE_HOME.
        if let Some(xdg) = env("XDG_STATE_HOME").filter(|v| Path::new(v).is_absolute()) {
            return Some(Path::new(&xdg).join("ferry"));
        }
        if let Some(home) = env("HOME") {
            return Some(Path::new(&home).join(".local/state/ferry"));
        }
        self.report(
            root.mark,
            None,
            "no state directory: set `state_dir`, or $STATE_DIRECTORY, $XDG_STATE_HOME or $HOME",
        );
        None
    }

    /// The entries of `endpoints:` or `jobs:` with valid, unique names: (name, key place, node).
    fn named_entries<'n>(
        &mut self,
        root: &'n Node,
        section: &str,
        kind: &str,
    ) -> Vec<(String, Mark, &'n Node)> {
        let Some(section_node) = root.get(section) else {
            return Vec::new();
        };
        let entries = match &section_node.value {
            NodeValue::Mapping(entries) => entries,
            _ if section_node.is_null() => return Vec::new(),
            _ => {
                self.report(
                    section_node.mark,
                    None,
                    format!("`{section}` must be a mapping of {kind} names to {kind}s"),
                );
                return Vec::new();
            }
        };
        let mut seen: BTreeMap<String, Mark> = BTreeMap::new();
        let mut named = Vec::new();
        for (key, node) in entries {
            let Some(name) = key.as_scalar().filter(|_| !key.is_null()) else {
                self.report(key.mark, None, format!("{kind} name must be text"));
                continue;
            };
            if let Some(message) = check_name(kind, name) {
                self.report(key.mark, None, message);
                continue;
            }
            if let Some(first) = seen.get(name) {
                let message = format!(
                    "duplicate {kind} `{name}` (first defined on line {})",
                    first.line
                );
                self.report(key.mark, None, message);
                continue;
            }
            seen.insert(name.to_owned(), key.mark);
            named.push((name.to_owned(), key.mark, node));
        }
        named
    }

    // --- endpoints -------------------------------------------------------------------------

    fn check_endpoint(&mut self, name: &str, name_mark: Mark, node: &Node) -> Option<Endpoint> {
        let context = format!("endpoint `{name}`");
        let collected: Collected<RawEndpoint> = deserialize_collecting(node);
        self.report_serde_errors(Some(&context), &collected.errors);
        let raw = collected.value?;
        let place = Place {
            owner: Owner::Endpoint(name.to_owned()),
            context,
            name_mark,
            node,
            set_aside: collected.set_aside,
        };

        let host = self.check_host(&place, raw.host.as_deref());
        let user = self.check_user(&place, raw.user.as_deref());
        let tls = match raw.tls {
            None | Some(RawTlsMode::Explicit) => TlsMode::Explicit,
            Some(RawTlsMode::Implicit) => TlsMode::Implicit,
            Some(RawTlsMode::None) => TlsMode::None,
        };
        self.check_insecure(&place, tls, raw.allow_insecure);
        let port = self.check_port(&place, raw.port, tls);
        let password = self.check_password_source(&place, &raw);
        let trust = self.check_ca_file(&place, raw.ca_file.as_deref());
        let pin_sha256 = self.check_pin(&place, raw.pin_sha256.as_deref());
        let (client_cert, client_key) = self.check_client_identity(
            &place,
            raw.client_cert.as_deref(),
            raw.client_key.as_deref(),
        );
        let max_connections = self.check_max_connections(&place, raw.max_connections);
        let timeout = self.check_timeout(&place, raw.timeout);
        let active_ports = self.check_active_ports(&place, raw.active_ports.as_deref());
        let limits = self.check_limits(&place, raw.limits);
        let use_pasv_address = raw.use_pasv_address.unwrap_or(false);
        if use_pasv_address {
            self.warn_at(
                &place,
                place.value("use_pasv_address"),
                "use_pasv_address: true lets the server's PASV reply choose the host ferry \
                 connects to for data; use it only for a server that needs it",
            );
        }

        Some(Endpoint {
            name: name.to_owned(),
            host: host?,
            port: port?,
            tls,
            user: user?,
            password: password?,
            trust: trust?,
            pin_sha256: pin_sha256?,
            client_cert: client_cert?,
            client_key: client_key?,
            data_mode: match raw.data_mode {
                None | Some(RawDataMode::Passive) => DataMode::Passive,
                Some(RawDataMode::Active) => DataMode::Active,
            },
            max_connections: max_connections?,
            timeout: timeout?,
            tls_max_version: raw.tls_max_version.map(|v| match v {
                RawTlsVersion::V1_2 => TlsVersion::V1_2,
                RawTlsVersion::V1_3 => TlsVersion::V1_3,
            }),
            active_ports: active_ports?,
            use_pasv_address,
            limits: limits?,
        })
    }

    fn check_limits(&mut self, place: &Place<'_>, raw: Option<RawLimits>) -> Option<Limits> {
        let defaults = Limits::default();
        let Some(raw) = raw else {
            return Some(defaults);
        };
        let limits = Limits {
            max_line: raw.line_length.unwrap_or(defaults.max_line),
            max_entries: raw.entries_per_dir.unwrap_or(defaults.max_entries),
            max_depth: raw.depth.unwrap_or(defaults.max_depth),
        };
        let mut ok = true;
        for (key, value, least) in [
            ("line_length", limits.max_line, 512),
            ("entries_per_dir", limits.max_entries, 1),
            ("depth", limits.max_depth, 1),
        ] {
            if value < least {
                let mark = place.nested_value("limits", key);
                self.report_at(
                    place,
                    mark,
                    format!("limits.{key} must be at least {least}"),
                );
                ok = false;
            }
        }
        ok.then_some(limits)
    }

    fn require<'v>(
        &mut self,
        place: &Place<'_>,
        key: &str,
        value: Option<&'v str>,
    ) -> Option<&'v str> {
        if value.is_none() && !place.was_set_aside(key) {
            self.report_at(place, place.name_mark, format!("missing `{key}`"));
        }
        value
    }

    fn check_host(&mut self, place: &Place<'_>, host: Option<&str>) -> Option<String> {
        let host = self.require(place, "host", host)?;
        if host.is_empty() {
            self.report_at(place, place.value("host"), "host is empty");
            return None;
        }
        if host.contains(char::is_whitespace) {
            let message = format!("host `{host}` must not contain whitespace");
            self.report_at(place, place.value("host"), message);
            return None;
        }
        Some(host.to_owned())
    }

    fn check_user(&mut self, place: &Place<'_>, user: Option<&str>) -> Option<String> {
        let user = self.require(place, "user", user)?;
        if user.is_empty() {
            self.report_at(place, place.value("user"), "user is empty");
            return None;
        }
        // CR or LF would end the USER command early and smuggle in another one.
        if has_control_break(user) {
            self.report_at(
                place,
                place.value("user"),
                "user must not contain CR, LF or NUL",
            );
            return None;
        }
        Some(user.to_owned())
    }

    fn check_insecure(&mut self, place: &Place<'_>, tls: TlsMode, allow_insecure: Option<bool>) {
        if tls != TlsMode::None {
            return;
        }
        let mark = place.value("tls");
        if allow_insecure == Some(true) {
            self.warn_at(
                place,
                mark,
                "`tls: none`: the password and every file travel in cleartext",
            );
        } else {
            self.report_at(
                place,
                mark,
                "`tls: none` sends the password and files in cleartext; \
                 add `allow_insecure: true` to allow it",
            );
        }
    }

    fn check_port(&mut self, place: &Place<'_>, port: Option<u16>, tls: TlsMode) -> Option<u16> {
        match port {
            Some(0) => {
                self.report_at(
                    place,
                    place.value("port"),
                    "port must be between 1 and 65535",
                );
                None
            }
            Some(port) => Some(port),
            None if tls == TlsMode::Implicit => Some(990),
            None => Some(21),
        }
    }

    fn check_password_source(
        &mut self,
        place: &Place<'_>,
        raw: &RawEndpoint,
    ) -> Option<PasswordSource> {
        let given: Vec<&str> = PASSWORD_KEYS
            .into_iter()
            .filter(|key| place.node.get(key).is_some() && !place.was_set_aside(key))
            .collect();
        if given.len() > 1 {
            let message = format!(
                "set only one password source; found {}",
                given.join(" and ")
            );
            self.report_at(place, place.key(given[1]), message);
            return None;
        }
        if let Some(var) = &raw.password_env {
            return self.check_password_env(place, var);
        }
        if let Some(file) = &raw.password_file {
            let path = self.resolve(file);
            let mark = place.value("password_file");
            return match check_readable_file(&path) {
                // A file others can read is wrong wherever ferry runs: refused.
                Ok(()) => match check_private_file(&path) {
                    Ok(()) => Some(PasswordSource::File(path)),
                    Err(message) => {
                        self.report_at(place, mark, format!("password_file {message}"));
                        None
                    }
                },
                // A file this machine (or this user) cannot read now: the endpoint's jobs
                // cannot run here, the file is not wrong for that.
                Err(e) => {
                    let message = format!("cannot read password_file `{}`: {e}", path.display());
                    self.unavailable_at(place, mark, message);
                    Some(PasswordSource::File(path))
                }
            };
        }
        if let Some(credential) = &raw.password_credential {
            return self.check_password_credential(place, credential);
        }
        if let Some(secret) = &raw.password {
            return self.check_literal_password(place, secret);
        }
        let password_set_aside = PASSWORD_KEYS.iter().any(|k| place.was_set_aside(k));
        if raw.client_cert.is_some() {
            // Certificate-only login: the server maps the client certificate to the user.
            Some(PasswordSource::None)
        } else if password_set_aside {
            None
        } else {
            self.report_at(
                place,
                place.name_mark,
                "no password source (set password_env, password_file, password_credential or password)",
            );
            None
        }
    }

    fn check_password_env(&mut self, place: &Place<'_>, var: &str) -> Option<PasswordSource> {
        let mark = place.value("password_env");
        if var.is_empty() || var.contains(['=', '\0']) {
            let message = format!("password_env `{var}` is not an environment variable name");
            self.report_at(place, mark, message);
            return None;
        }
        // The service's environment may well differ from this shell's: a note, and the
        // variable is read when connecting.
        if (self.env)(var).is_none() {
            let message = format!(
                "password_env: environment variable `{var}` is not set here; it is read when \
                 connecting, so this endpoint's jobs need it where they run"
            );
            self.note_at(place, mark, message);
        }
        Some(PasswordSource::Env(var.to_owned()))
    }

    /// A systemd credential (`LoadCredential=NAME:...`) is the file
    /// `$CREDENTIALS_DIRECTORY/NAME`, which systemd provides to the service only: outside it
    /// the credential cannot be checked (a note); inside it, a credential that cannot be read
    /// makes the endpoint's jobs unavailable. [`read_password`] resolves it when connecting.
    fn check_password_credential(
        &mut self,
        place: &Place<'_>,
        credential: &str,
    ) -> Option<PasswordSource> {
        let mark = place.value("password_credential");
        if credential.is_empty()
            || credential.contains(['/', '\0'])
            || credential == "."
            || credential == ".."
        {
            let message = format!(
                "password_credential `{credential}` must be a credential name as in \
                 LoadCredential=NAME:..., not a path"
            );
            self.report_at(place, mark, message);
            return None;
        }
        let source = PasswordSource::Credential(credential.to_owned());
        let Some(dir) = (self.env)("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) else {
            let message = format!(
                "password_credential `{credential}`: $CREDENTIALS_DIRECTORY is not set here \
                 (systemd sets it for a service with LoadCredential={credential}:...); the \
                 credential is read when connecting"
            );
            self.note_at(place, mark, message);
            return Some(source);
        };
        let path = Path::new(&dir).join(credential);
        if let Err(e) = check_readable_file(&path) {
            let message = format!(
                "cannot read credential `{credential}` ({}): {e}",
                path.display()
            );
            self.unavailable_at(place, mark, message);
        }
        Some(source)
    }

    fn check_literal_password(
        &mut self,
        place: &Place<'_>,
        secret: &Secret,
    ) -> Option<PasswordSource> {
        if has_control_break(secret.expose()) {
            // The message must not quote the password.
            self.report_at(
                place,
                place.value("password"),
                "password must not contain CR, LF or NUL",
            );
            return None;
        }
        self.warn_at(
            place,
            place.key("password"),
            "literal password in the job file; prefer password_env or password_file",
        );
        Some(PasswordSource::Literal(secret.clone()))
    }

    fn check_ca_file(&mut self, place: &Place<'_>, ca_file: Option<&Path>) -> Option<TrustRoots> {
        let Some(ca_file) = ca_file else {
            return Some(TrustRoots::System);
        };
        let path = self.resolve(ca_file);
        match read_certificates(&path, "ca_file") {
            Ok(()) => Some(TrustRoots::CaFile(path)),
            Err(message) => {
                self.report_at(place, place.value("ca_file"), message);
                None
            }
        }
    }

    fn check_pin(&mut self, place: &Place<'_>, pin: Option<&str>) -> Option<Option<[u8; 32]>> {
        let Some(pin) = pin else {
            return Some(None);
        };
        match parse_pin(pin) {
            Some(bytes) => Some(Some(bytes)),
            None => {
                self.report_at(
                    place,
                    place.value("pin_sha256"),
                    "pin_sha256 must be 64 hex digits (colons allowed): the SHA-256 of the \
                     server's certificate",
                );
                None
            }
        }
    }

    /// Both paths or neither, each readable and holding what its name says. Each result is
    /// `Some(value)` when fine.
    fn check_client_identity(
        &mut self,
        place: &Place<'_>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> (Option<Option<PathBuf>>, Option<Option<PathBuf>>) {
        let pair_ok = match (cert, key) {
            (Some(_), None) if !place.was_set_aside("client_key") => {
                let mark = place.key("client_cert");
                self.report_at(
                    place,
                    mark,
                    "client_cert needs client_key too (both or neither)",
                );
                false
            }
            (None, Some(_)) if !place.was_set_aside("client_cert") => {
                let mark = place.key("client_key");
                self.report_at(
                    place,
                    mark,
                    "client_key needs client_cert too (both or neither)",
                );
                false
            }
            _ => true,
        };
        let cert = cert.map(|c| self.resolve(c));
        let key = key.map(|k| self.resolve(k));
        let cert_ok = match &cert {
            Some(path) => match read_certificates(path, "client_cert") {
                Ok(()) => true,
                Err(message) => {
                    self.report_at(place, place.value("client_cert"), message);
                    false
                }
            },
            None => true,
        };
        let key_ok = match &key {
            Some(path) => match read_private_key(path) {
                Ok(()) => true,
                Err(message) => {
                    self.report_at(place, place.value("client_key"), message);
                    false
                }
            },
            None => true,
        };
        (
            (pair_ok && cert_ok).then_some(cert),
            (pair_ok && key_ok).then_some(key),
        )
    }

    /// `active_ports: 50000-50100` (or a single port `50000`), ports 1024-65535.
    fn check_active_ports(
        &mut self,
        place: &Place<'_>,
        text: Option<&str>,
    ) -> Option<Option<std::ops::RangeInclusive<u16>>> {
        let Some(text) = text else {
            return Some(None);
        };
        let parsed = match text.split_once('-') {
            Some((a, b)) => a
                .trim()
                .parse::<u16>()
                .ok()
                .zip(b.trim().parse::<u16>().ok()),
            None => text.trim().parse::<u16>().ok().map(|p| (p, p)),
        };
        match parsed {
            Some((start, end)) if start >= 1024 && start <= end => Some(Some(start..=end)),
            _ => {
                let mark = place.value("active_ports");
                self.report_at(
                    place,
                    mark,
                    format!(
                        "active_ports `{text}` must be a port range such as 50000-50100 \
                         (ports 1024-65535, first not above last)"
                    ),
                );
                None
            }
        }
    }

    fn check_max_connections(&mut self, place: &Place<'_>, max: Option<usize>) -> Option<usize> {
        match max {
            Some(0) => {
                let mark = place.value("max_connections");
                self.report_at(place, mark, "max_connections must be at least 1");
                None
            }
            Some(n) => Some(n),
            None => Some(DEFAULT_MAX_CONNECTIONS),
        }
    }

    fn check_timeout(&mut self, place: &Place<'_>, timeout: Option<Duration>) -> Option<Duration> {
        match timeout {
            Some(Duration::ZERO) => {
                self.report_at(
                    place,
                    place.value("timeout"),
                    "timeout must be greater than 0",
                );
                None
            }
            Some(t) => Some(t),
            None => Some(DEFAULT_TIMEOUT),
        }
    }

    // --- jobs ------------------------------------------------------------------------------

    fn check_job(
        &mut self,
        name: &str,
        name_mark: Mark,
        node: &Node,
        known_endpoints: &[String],
    ) -> Option<Job> {
        let context = format!("job `{name}`");
        let collected: Collected<RawJob> = deserialize_collecting(node);
        self.report_serde_errors(Some(&context), &collected.errors);
        let raw = collected.value?;
        let place = Place {
            owner: Owner::Job(name.to_owned()),
            context,
            name_mark,
            node,
            set_aside: collected.set_aside,
        };

        let endpoint = self.check_job_endpoint(&place, raw.endpoint.as_deref(), known_endpoints);
        let direction = match raw.direction {
            Some(RawDirection::Push) => Some(Direction::Push),
            Some(RawDirection::Pull) => Some(Direction::Pull),
            Some(RawDirection::Both) => Some(Direction::Both),
            None if place.was_set_aside("direction") => None,
            None => {
                self.report_at(
                    &place,
                    name_mark,
                    "missing `direction` (push, pull or both)",
                );
                None
            }
        };
        let local = self.check_local(&place, raw.local.as_deref());
        let remote = self.check_remote(&place, raw.remote.as_deref());
        let schedule = self.check_schedule(&place, raw.schedule.as_deref());
        let timezone = self.check_timezone(&place, raw.timezone.as_deref());
        let include = self.check_globs(&place, "include", raw.include.as_deref());
        // A watch job never takes what editors and downloaders are still writing.
        let exclude = if raw.watch == Some(true) {
            let mut all = raw.exclude.clone().unwrap_or_default();
            all.extend(WATCH_TEMP_PATTERNS.iter().map(|p| (*p).to_owned()));
            self.check_globs(&place, "exclude", Some(&all))
        } else {
            self.check_globs(&place, "exclude", raw.exclude.as_deref())
        };
        let retry = self.check_retry(&place, &raw);
        let watch = raw.watch.unwrap_or(false);
        let after_upload = self.check_after_upload(&place, raw.after_upload.as_ref());
        if let (Some(direction), Some(local)) = (direction, &local) {
            self.warn_push_only_keys(&place, direction, watch, after_upload.as_ref(), local);
        }
        let delete = raw.delete.unwrap_or(false);
        let max_delete = self.check_max_delete(&place, raw.max_delete.as_ref());
        let ready = self.check_ready(&place, &raw, direction);
        let hooks = self.check_hooks(&place, &raw);
        let remote_after =
            self.check_remote_after(&place, &raw, direction, delete, remote.as_deref());
        let publish = self.check_publish(&place, &raw, direction);
        let backup_dir =
            self.check_backup_dir(&place, &raw, direction, local.as_deref(), remote.as_deref());
        let conflict = self.check_two_way(&place, &raw, direction);
        let direct_upload = self.check_upload(&place, &raw, direction);
        if delete
            && direction == Some(Direction::Push)
            && matches!(
                after_upload,
                Some(AfterUpload::Delete | AfterUpload::MoveTo(_))
            )
        {
            // The next run would mirror the local removal onto the server.
            self.report_at(
                &place,
                place.key("after_upload"),
                "after_upload removes pushed files locally, and delete: true would then delete them on the server; use one or the other",
            );
        }

        let removes_local = matches!(
            after_upload,
            Some(AfterUpload::Delete | AfterUpload::MoveTo(_))
        );
        if (delete || removes_local)
            && let Some(local) = &local
            && let Some(root) = system_root(local, (self.env)("HOME").as_deref())
        {
            let what = if delete {
                "delete: true"
            } else {
                "after_upload"
            };
            self.report_at(
                &place,
                place.value("local"),
                format!(
                    "local `{}` is {root}; a job with {what} may not delete files there: give the job a directory of its own",
                    local.display()
                ),
            );
        }

        Some(Job {
            name: name.to_owned(),
            endpoint: endpoint?,
            direction: direction?,
            local: local?,
            remote: remote?,
            schedule: schedule?,
            timezone: timezone?,
            filter: Filter::new(include?, exclude?),
            delete,
            max_delete: max_delete?,
            verify: match raw.verify {
                None | Some(RawVerify::Size) => Verify::Size,
                Some(RawVerify::Hash) => Verify::Hash,
                Some(RawVerify::Readback) => Verify::Readback,
            },
            retry: retry?,
            watch,
            settle: raw.settle.unwrap_or(DEFAULT_SETTLE),
            after_upload: after_upload?,
            checksum_sidecar: raw.checksum_sidecar.unwrap_or(false),
            catch_up: raw.catch_up.unwrap_or(false),
            jitter: raw.jitter.filter(|j| !j.is_zero()),
            rescan: raw.rescan.unwrap_or(DEFAULT_RESCAN),
            ready: ready?,
            hooks: hooks?,
            remote_after: remote_after?,
            publish: publish?,
            backup_dir: backup_dir?,
            conflict: conflict?,
            direct_upload: direct_upload?,
        })
    }

    /// `upload: temporary | direct` (push jobs). `direct` cannot go with `publish: batch`,
    /// which publishes from temporary names.
    fn check_upload(
        &mut self,
        place: &Place<'_>,
        raw: &RawJob,
        direction: Option<Direction>,
    ) -> Option<bool> {
        let direct = raw.upload == Some(RawUpload::Direct);
        if raw.upload.is_some() && direction != Some(Direction::Push) {
            self.warn_at(
                place,
                place.key("upload"),
                "upload only applies to push jobs; ignored",
            );
            return Some(false);
        }
        if direct && raw.publish == Some(RawPublish::Batch) {
            self.report_at(
                place,
                place.key("upload"),
                "upload: direct cannot go with publish: batch (a batch is published from temporary names)",
            );
            return None;
        }
        Some(direct)
    }

    /// `direction: both`: `conflict` (keep_both by default), and none of the keys that only
    /// make sense one way (they are errors here, not warnings: each would lose or duplicate
    /// files in a two-way job). `conflict` on a one-way job is ignored, with a warning.
    fn check_two_way(
        &mut self,
        place: &Place<'_>,
        raw: &RawJob,
        direction: Option<Direction>,
    ) -> Option<ConflictPolicy> {
        let conflict = match raw.conflict {
            None | Some(RawConflict::KeepBoth) => ConflictPolicy::KeepBoth,
            Some(RawConflict::Newer) => ConflictPolicy::Newer,
            Some(RawConflict::Local) => ConflictPolicy::Local,
            Some(RawConflict::Remote) => ConflictPolicy::Remote,
        };
        if direction != Some(Direction::Both) {
            if raw.conflict.is_some() {
                self.warn_at(
                    place,
                    place.key("conflict"),
                    "conflict only applies to direction: both; ignored",
                );
            }
            return Some(conflict);
        }
        let mut ok = true;
        for (key, why) in [
            ("watch", "a watch job pushes"),
            ("after_upload", "a two-way job keeps both sides"),
            (
                "checksum_sidecar",
                "the checksum files would be synced back",
            ),
            ("publish", "publishing is for push jobs"),
            ("marker", "publishing is for push jobs"),
            ("manifest", "publishing is for push jobs"),
            ("remote_after_download", "a two-way job keeps both sides"),
            ("backup_dir", "not supported for two-way jobs yet"),
            ("ready", "a two-way job takes remote files as listed"),
            ("stable_for", "a two-way job takes remote files as listed"),
        ] {
            if place.node.get(key).is_some() {
                self.report_at(
                    place,
                    place.key(key),
                    format!("{key} cannot be used with direction: both ({why})"),
                );
                ok = false;
            }
        }
        ok.then_some(conflict)
    }

    /// `backup_dir`: for a pull job an existing local directory outside `local`; for a push job
    /// an absolute remote directory outside `remote`.
    fn check_backup_dir(
        &mut self,
        place: &Place<'_>,
        raw: &RawJob,
        direction: Option<Direction>,
        local: Option<&Path>,
        remote: Option<&str>,
    ) -> Option<Option<PathBuf>> {
        let Some(dir) = &raw.backup_dir else {
            return Some(None);
        };
        if direction == Some(Direction::Both) {
            // Reported by check_two_way.
            return Some(None);
        }
        if direction == Some(Direction::Push) {
            let text = dir.to_string_lossy();
            let text = text.trim_end_matches('/');
            if has_control_break(text)
                || !text.starts_with('/')
                || text.split('/').any(|p| p == "..")
            {
                self.report_at(
                    place,
                    place.value("backup_dir"),
                    "backup_dir of a push job must be an absolute remote directory without `..`",
                );
                return None;
            }
            let inside = remote.is_some_and(|r| {
                let r = r.trim_end_matches('/');
                r.is_empty() || text == r || text.starts_with(&format!("{r}/"))
            });
            if inside {
                self.report_at(
                    place,
                    place.value("backup_dir"),
                    format!("backup_dir `{text}` is inside the job's remote directory: the kept copies would be mirrored"),
                );
                return None;
            }
            return Some(Some(PathBuf::from(text)));
        }
        let path = self.resolve(dir);
        if local.is_some_and(|l| path.starts_with(l)) {
            self.report_at(
                place,
                place.value("backup_dir"),
                format!(
                    "backup_dir `{}` is inside local: the kept copies would be synced",
                    path.display()
                ),
            );
            return None;
        }
        if let Err(message) = check_directory(&path, "backup_dir") {
            self.unavailable_at(place, place.value("backup_dir"), message);
        }
        Some(Some(path))
    }

    /// `publish: batch` with exactly one of `marker: NAME` or `manifest: NAME` (push jobs).
    fn check_publish(
        &mut self,
        place: &Place<'_>,
        raw: &RawJob,
        direction: Option<Direction>,
    ) -> Option<Option<Publish>> {
        let batch = raw.publish == Some(RawPublish::Batch);
        if direction == Some(Direction::Both) {
            // Reported by check_two_way.
            return Some(None);
        }
        if direction == Some(Direction::Pull) {
            for key in ["publish", "marker", "manifest"] {
                if place.node.get(key).is_some() {
                    self.warn_at(
                        place,
                        place.key(key),
                        format!("{key} only applies to push jobs; ignored for this pull job"),
                    );
                }
            }
            return Some(None);
        }
        let (name, manifest, key) = match (&raw.marker, &raw.manifest) {
            (Some(m), None) => (m, false, "marker"),
            (None, Some(m)) => (m, true, "manifest"),
            (None, None) if !batch => return Some(None),
            (None, None) => {
                self.report_at(
                    place,
                    place.key("publish"),
                    "publish: batch needs `marker: NAME` (such as READY) or `manifest: NAME` (such as SHA256SUMS)",
                );
                return None;
            }
            (Some(_), Some(_)) => {
                self.report_at(
                    place,
                    place.key("manifest"),
                    "give either marker or manifest, not both",
                );
                return None;
            }
        };
        if !batch {
            self.report_at(place, place.key(key), format!("{key} needs publish: batch"));
            return None;
        }
        if name.contains('/') || crate::path::validate_name(name).is_err() {
            self.report_at(
                place,
                place.value(key),
                format!("{key} must be a file name such as READY (no `/`)"),
            );
            return None;
        }
        Some(Some(Publish {
            marker: name.clone(),
            manifest,
        }))
    }

    /// `remote_after_download`: pull jobs only; `move_to` an absolute remote directory outside
    /// the job's root; never with `delete: true` (the next run would mirror the removal).
    fn check_remote_after(
        &mut self,
        place: &Place<'_>,
        raw: &RawJob,
        direction: Option<Direction>,
        delete: bool,
        remote: Option<&str>,
    ) -> Option<RemoteAfter> {
        let Some(after) = &raw.remote_after_download else {
            return Some(RemoteAfter::Keep);
        };
        if direction == Some(Direction::Both) {
            // Reported by check_two_way.
            return Some(RemoteAfter::Keep);
        }
        if direction == Some(Direction::Push) {
            self.warn_at(
                place,
                place.key("remote_after_download"),
                "remote_after_download only applies to pull jobs; ignored for this push job",
            );
            return Some(RemoteAfter::Keep);
        }
        let after = match after {
            RawRemoteAfter::Keep => RemoteAfter::Keep,
            RawRemoteAfter::Delete => RemoteAfter::Delete,
            RawRemoteAfter::MoveTo(dir) => {
                let mark = place.nested_value("remote_after_download", "move_to");
                let dir = dir.trim_end_matches('/');
                if has_control_break(dir)
                    || !dir.starts_with('/')
                    || dir.split('/').any(|p| p == "..")
                {
                    self.report_at(
                        place,
                        mark,
                        "remote_after_download.move_to must be an absolute remote directory without `..`",
                    );
                    return None;
                }
                let inside = remote.is_some_and(|r| {
                    let r = r.trim_end_matches('/');
                    r.is_empty() || dir == r || dir.starts_with(&format!("{r}/"))
                });
                if inside {
                    self.report_at(
                        place,
                        mark,
                        format!(
                            "remote_after_download.move_to `{dir}` is inside the job's remote directory: the moved files would be pulled again"
                        ),
                    );
                    return None;
                }
                RemoteAfter::MoveTo(dir.to_owned())
            }
        };
        if delete && after != RemoteAfter::Keep {
            self.report_at(
                place,
                place.key("remote_after_download"),
                "remote_after_download removes pulled files on the server, and delete: true would then delete them locally; use one or the other",
            );
            return None;
        }
        Some(after)
    }

    /// `on_success` / `on_failure`: each a non-empty argv list; `hook_timeout` above 0.
    fn check_hooks(&mut self, place: &Place<'_>, raw: &RawJob) -> Option<Hooks> {
        let mut ok = true;
        for (key, argv) in [
            ("on_success", &raw.on_success),
            ("on_failure", &raw.on_failure),
        ] {
            if argv
                .as_ref()
                .is_some_and(|a| a.first().is_none_or(|p| p.trim().is_empty()))
            {
                self.report_at(
                    place,
                    place.value(key),
                    format!(
                        "{key} must name a command, as a list such as [/usr/local/bin/notify, --job, nightly]"
                    ),
                );
                ok = false;
            }
        }
        if raw.hook_timeout.is_some_and(|t| t.is_zero()) {
            self.report_at(
                place,
                place.value("hook_timeout"),
                "hook_timeout must be more than 0s",
            );
            ok = false;
        }
        ok.then(|| Hooks {
            on_success: raw.on_success.clone(),
            on_failure: raw.on_failure.clone(),
            timeout: raw.hook_timeout.unwrap_or(Hooks::default().timeout),
        })
    }

    /// `ready` and `stable_for`: pull jobs take a remote file once it has stayed unchanged for
    /// `stable_for` (30 s by default), unless `ready: immediate`.
    fn check_ready(
        &mut self,
        place: &Place<'_>,
        raw: &RawJob,
        direction: Option<Direction>,
    ) -> Option<Ready> {
        if direction == Some(Direction::Both) {
            // A two-way job takes what it lists (check_two_way refuses `ready` there).
            return Some(Ready::Immediate);
        }
        if direction == Some(Direction::Push) {
            for key in ["ready", "stable_for"] {
                if place.node.get(key).is_some() {
                    self.warn_at(
                        place,
                        place.key(key),
                        format!("{key} only applies to pull jobs; ignored for this push job"),
                    );
                }
            }
            return Some(Ready::Immediate);
        }
        match &raw.ready {
            Some(RawReady::Marker(RawMarker { marker })) => {
                if raw.stable_for.is_some() {
                    self.warn_at(
                        place,
                        place.key("stable_for"),
                        "stable_for only applies with ready: stable; ignored",
                    );
                }
                if marker.contains('/') || crate::path::validate_name(marker).is_err() {
                    self.report_at(
                        place,
                        place.nested_value("ready", "marker"),
                        "ready.marker must be a file name such as _SUCCESS or READY (no `/`)",
                    );
                    return None;
                }
                Some(Ready::Marker(marker.clone()))
            }
            Some(RawReady::Word(RawReadyWord::Sidecar)) => {
                if raw.stable_for.is_some() {
                    self.warn_at(
                        place,
                        place.key("stable_for"),
                        "stable_for only applies with ready: stable; ignored",
                    );
                }
                Some(Ready::Sidecar)
            }
            Some(RawReady::Word(RawReadyWord::Immediate)) => {
                if raw.stable_for.is_some() {
                    self.warn_at(
                        place,
                        place.key("stable_for"),
                        "stable_for only applies with ready: stable; ignored",
                    );
                }
                Some(Ready::Immediate)
            }
            None | Some(RawReady::Word(RawReadyWord::Stable)) => match raw.stable_for {
                Some(d) if d.is_zero() => {
                    self.report_at(
                        place,
                        place.value("stable_for"),
                        "stable_for must be more than 0s (ready: immediate takes files as soon as they are listed)",
                    );
                    None
                }
                Some(d) => Some(Ready::Stable(d)),
                None => Some(Ready::Stable(DEFAULT_STABLE_FOR)),
            },
        }
    }

    fn check_job_endpoint(
        &mut self,
        place: &Place<'_>,
        endpoint: Option<&str>,
        known: &[String],
    ) -> Option<String> {
        let endpoint = self.require(place, "endpoint", endpoint)?;
        if known.iter().any(|k| k == endpoint) {
            return Some(endpoint.to_owned());
        }
        let known = if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        };
        let message = format!("unknown endpoint `{endpoint}` (known: {known})");
        self.report_at(place, place.value("endpoint"), message);
        None
    }

    fn check_local(&mut self, place: &Place<'_>, local: Option<&Path>) -> Option<PathBuf> {
        let Some(local) = local else {
            if !place.was_set_aside("local") {
                self.report_at(place, place.name_mark, "missing `local`");
            }
            return None;
        };
        let path = self.resolve(local);
        // Missing here now (an unmounted disk, a directory yet to be made) is not a fault of
        // the file: this job is unavailable, the others are not.
        if let Err(message) = check_directory(&path, "local") {
            self.unavailable_at(place, place.value("local"), message);
        }
        Some(path)
    }

    fn check_remote(&mut self, place: &Place<'_>, remote: Option<&str>) -> Option<String> {
        let remote = self.require(place, "remote", remote)?;
        let mark = place.value("remote");
        // Checked first so that the next message never prints a control character.
        if has_control_break(remote) {
            self.report_at(place, mark, "remote path must not contain CR, LF or NUL");
            return None;
        }
        if !remote.starts_with('/') {
            let message = format!("remote path `{remote}` must be absolute (start with `/`)");
            self.report_at(place, mark, message);
            return None;
        }
        Some(remote.to_owned())
    }

    fn check_schedule(
        &mut self,
        place: &Place<'_>,
        schedule: Option<&str>,
    ) -> Option<Option<String>> {
        let Some(schedule) = schedule else {
            return Some(None);
        };
        match parse_schedule(schedule) {
            Ok(_) => Some(Some(schedule.to_owned())),
            Err(e) => {
                let message = format!(
                    "bad schedule `{schedule}`: {e} (fields: [second] minute hour day-of-month \
                     month day-of-week, or @hourly, @daily, @weekly, @monthly, @yearly)"
                );
                self.report_at(place, place.value("schedule"), message);
                None
            }
        }
    }

    fn check_timezone(
        &mut self,
        place: &Place<'_>,
        timezone: Option<&str>,
    ) -> Option<Option<chrono_tz::Tz>> {
        let Some(timezone) = timezone else {
            return Some(None);
        };
        match timezone.parse::<chrono_tz::Tz>() {
            Ok(tz) => Some(Some(tz)),
            Err(_) => {
                let message = format!(
                    "unknown timezone `{timezone}` (expected an IANA name such as Europe/Berlin or UTC)"
                );
                self.report_at(place, place.value("timezone"), message);
                None
            }
        }
    }

    /// Compile `include` or `exclude`. `*` does not cross `/`; `**` does.
    fn check_globs(
        &mut self,
        place: &Place<'_>,
        key: &str,
        globs: Option<&[String]>,
    ) -> Option<Option<GlobSet>> {
        let Some(globs) = globs else {
            return Some(None);
        };
        if globs.is_empty() {
            if key == "include" {
                // An empty GlobSet matches nothing: the job would silently sync no file.
                self.report_at(
                    place,
                    place.value(key),
                    "include is empty and would match no file; remove it to include every file",
                );
                return None;
            }
            return Some(None);
        }
        let item_marks: Vec<Mark> = match place.node.get(key).map(|n| &n.value) {
            Some(NodeValue::Sequence(items)) => items.iter().map(|n| n.mark).collect(),
            _ => Vec::new(),
        };
        let mut builder = GlobSetBuilder::new();
        let mut ok = true;
        for (i, pattern) in globs.iter().enumerate() {
            match compile_glob(pattern) {
                Ok(glob) => {
                    builder.add(glob);
                }
                Err(kind) => {
                    let mark = item_marks.get(i).copied().unwrap_or(place.value(key));
                    self.report_at(
                        place,
                        mark,
                        format!("bad glob `{pattern}` in {key}: {kind}"),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        match builder.build() {
            Ok(set) => Some(Some(set)),
            Err(e) => {
                self.report_at(place, place.value(key), format!("bad {key} globs: {e}"));
                None
            }
        }
    }

    fn check_retry(&mut self, place: &Place<'_>, raw: &RawJob) -> Option<RetryPolicy> {
        let defaults = RetryPolicy::default();
        let Some(retry) = raw.retry else {
            return Some(defaults);
        };
        let policy = RetryPolicy {
            attempts: retry.attempts.unwrap_or(defaults.attempts),
            initial: retry.initial.unwrap_or(defaults.initial),
            max: retry.max.unwrap_or(defaults.max),
        };
        let mut ok = true;
        if policy.attempts == 0 {
            let mark = place.nested_value("retry", "attempts");
            self.report_at(
                place,
                mark,
                "retry.attempts must be at least 1 (1 means no retry)",
            );
            ok = false;
        }
        if policy.initial > policy.max {
            let message = format!(
                "retry.initial ({}) is longer than retry.max ({})",
                humantime::format_duration(policy.initial),
                humantime::format_duration(policy.max)
            );
            self.report_at(place, place.nested_value("retry", "initial"), message);
            ok = false;
        }
        ok.then_some(policy)
    }

    fn check_max_delete(
        &mut self,
        place: &Place<'_>,
        raw: Option<&RawMaxDelete>,
    ) -> Option<MaxDelete> {
        let text = match raw {
            None => return Some(MaxDelete::default()),
            Some(RawMaxDelete::Count(n)) => return Some(MaxDelete::Count(*n)),
            Some(RawMaxDelete::Text(t)) => t.trim(),
        };
        let percent = text
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<u8>().ok())
            .filter(|p| *p <= 100);
        match (percent, text.parse::<u64>()) {
            (Some(p), _) => Some(MaxDelete::Percent(p)),
            (None, Ok(n)) => Some(MaxDelete::Count(n)),
            _ => {
                self.report_at(
                    place,
                    place.value("max_delete"),
                    format!(
                        "max_delete `{text}` must be a number of files (100) or a percentage from 0% to 100% (50%)"
                    ),
                );
                None
            }
        }
    }

    fn check_after_upload(
        &mut self,
        place: &Place<'_>,
        after: Option<&RawAfterUpload>,
    ) -> Option<AfterUpload> {
        match after {
            None | Some(RawAfterUpload::Keep) => Some(AfterUpload::Keep),
            Some(RawAfterUpload::Delete) => Some(AfterUpload::Delete),
            Some(RawAfterUpload::MoveTo(dir)) => {
                let path = self.resolve(dir);
                // As for `local`: a problem of this machine, the job is unavailable.
                if let Err(message) = check_directory(&path, "after_upload.move_to") {
                    let mark = place.nested_value("after_upload", "move_to");
                    self.unavailable_at(place, mark, message);
                }
                Some(AfterUpload::MoveTo(path))
            }
        }
    }

    /// `watch` and `after_upload` act on local files that were pushed; on a pull job they would
    /// do nothing, which the user most likely did not mean.
    fn warn_push_only_keys(
        &mut self,
        place: &Place<'_>,
        direction: Direction,
        watch: bool,
        after_upload: Option<&AfterUpload>,
        local: &Path,
    ) {
        let after_upload_given = place.node.get("after_upload").is_some();
        if direction == Direction::Both {
            // check_two_way refuses watch and after_upload there.
            return;
        }
        if direction == Direction::Pull {
            if watch {
                self.warn_at(
                    place,
                    place.key("watch"),
                    "watch only applies to push jobs; ignored for this pull job",
                );
            }
            if after_upload_given {
                self.warn_at(
                    place,
                    place.key("after_upload"),
                    "after_upload only applies to push jobs; ignored for this pull job",
                );
            }
            return;
        }
        if let Some(AfterUpload::MoveTo(dir)) = after_upload
            && dir.starts_with(local)
        {
            let message = format!(
                "after_upload.move_to `{}` is inside local `{}`: moved files will be pushed \
                 again unless an exclude glob covers them",
                dir.display(),
                local.display()
            );
            self.warn_at(
                place,
                place.nested_value("after_upload", "move_to"),
                message,
            );
        }
    }
}

/// The values of every endpoint's `password` key, as written.
fn literal_passwords(root: &Node) -> Vec<String> {
    let Some(endpoints) = root.get("endpoints") else {
        return Vec::new();
    };
    endpoints
        .entries()
        .iter()
        .filter_map(|(_, endpoint)| endpoint.get("password")?.as_scalar())
        .filter(|secret| !secret.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A job or endpoint name: non-empty, no whitespace, no `/` (names appear in paths, logs and
/// command lines).
/// Whether a job removes files from its local tree or mirrors deletions at all.
fn deletes_files(job: &Job) -> bool {
    job.delete
        || matches!(
            job.after_upload,
            AfterUpload::Delete | AfterUpload::MoveTo(_)
        )
}

/// What system directory `path` is (`/`, `/etc`, `/usr/lib`, the home directory, ...), if it
/// is one: a mirror with deletes there could empty the system.
fn system_root(path: &Path, home: Option<&str>) -> Option<&'static str> {
    const TOP: &[&str] = &[
        "bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt",
        "opt", "proc", "root", "run", "sbin", "srv", "sys", "tmp", "usr", "var",
    ];
    const UNDER_VAR: &[&str] = &["lib", "log", "cache", "spool", "tmp", "mail", "backups"];
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let parts: Vec<&str> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(p) => p.to_str(),
            _ => None,
        })
        .collect();
    let home = home.map(|h| fs::canonicalize(h).unwrap_or_else(|_| PathBuf::from(h)));
    match parts.as_slice() {
        [] => Some("the root directory"),
        [top] if TOP.contains(top) => Some("a system directory"),
        ["usr", _] => Some("a system directory"),
        ["var", sub] if UNDER_VAR.contains(sub) => Some("a system directory"),
        _ if home.as_deref() == Some(path.as_path()) => Some("the home directory"),
        _ => None,
    }
}

fn check_name(kind: &str, name: &str) -> Option<String> {
    if name.is_empty() {
        return Some(format!("{kind} name must not be empty"));
    }
    if name.contains(|c: char| c.is_whitespace() || c == '/') {
        return Some(format!(
            "{kind} name `{name}` must not contain whitespace or `/`"
        ));
    }
    None
}

fn compile_glob(pattern: &str) -> Result<Glob, globset::ErrorKind> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| e.kind().clone())
}

/// SHA-256 pin: 64 hex digits, any case, colons between bytes allowed.
fn parse_pin(pin: &str) -> Option<[u8; 32]> {
    let digits: String = pin.chars().filter(|&c| c != ':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(&digits, &mut bytes).ok()?;
    Some(bytes)
}

/// Opening is the honest test of "readable" (permissions, ACLs, a dangling link).
fn check_readable_file(path: &Path) -> Result<(), String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    let metadata = file.metadata().map_err(|e| e.to_string())?;
    if metadata.is_dir() {
        return Err("it is a directory".to_owned());
    }
    Ok(())
}

fn check_directory(path: &Path, key: &str) -> Result<(), String> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "{key} path `{}` is not a directory",
            path.display()
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!(
            "{key} directory `{}` does not exist",
            path.display()
        )),
        Err(e) => Err(format!(
            "cannot access {key} directory `{}`: {e}",
            path.display()
        )),
    }
}

/// The file must hold at least one PEM certificate.
fn read_certificates(path: &Path, key: &str) -> Result<(), String> {
    let shown = path.display();
    let bytes = fs::read(path).map_err(|e| format!("cannot read {key} `{shown}`: {e}"))?;
    let mut count = 0;
    for item in CertificateDer::pem_slice_iter(&bytes) {
        item.map_err(|e| format!("{key} `{shown}` is not valid PEM: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "{key} `{shown}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(())
}

/// The file must hold a PEM private key. The parser's own message is not shown: it could quote
/// a line of the key.
fn read_private_key(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let bytes = fs::read(path).map_err(|e| format!("cannot read client_key `{shown}`: {e}"))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|_| format!("client_key `{shown}` holds no PEM private key"))?;
    check_private_file(path).map_err(|e| format!("client_key {e}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::raw::deserialize_collecting;

    /// A temporary directory with what job files point at, and a fake environment.
    struct Fixture {
        dir: tempfile::TempDir,
        env: HashMap<String, String>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path();
            for sub in ["drops", "outbox", "sent", "mirror", "state", "creds"] {
                fs::create_dir(root.join(sub)).expect("mkdir");
            }
            let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
                .expect("certificate");
            fs::write(root.join("ca.pem"), certified.cert.pem()).expect("write ca");
            fs::write(root.join("client.pem"), certified.cert.pem()).expect("write cert");
            fs::write(
                root.join("client.key"),
                certified.signing_key.serialize_pem(),
            )
            .expect("write key");
            fs::write(root.join("empty.pem"), "no certificate here\n").expect("write");
            fs::write(root.join("file.txt"), "not a directory\n").expect("write");
            fs::write(root.join("password.txt"), "from-file\n").expect("write");
            fs::write(root.join("creds/partner-ftp"), "from-credential").expect("write");
            // Secrets are owner-only, or ferry refuses them (tested below).
            for secret in ["client.key", "password.txt", "creds/partner-ftp"] {
                set_mode(&root.join(secret), 0o600);
            }
            let env = HashMap::from([
                ("HOME".to_string(), "/home/ferry".to_string()),
                ("ACME_PASSWORD".to_string(), "from-env".to_string()),
            ]);
            Fixture { dir, env }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        /// A secret file with the given mode.
        fn secret(&self, rel: &str, text: &str, mode: u32) -> PathBuf {
            let path = self.path(rel);
            fs::write(&path, text).expect("write");
            set_mode(&path, mode);
            path
        }
    }

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn deleting_jobs_on_system_roots_or_shared_trees_are_refused() {
        let fixture = Fixture::new();
        fs::create_dir(fixture.path("drops/inner")).expect("mkdir");
        let job = |name: &str, local: &str, extra: &str| {
            format!(
                "  {name}:\n    endpoint: acme\n    direction: pull\n    local: {local}\n    remote: /out\n{extra}"
            )
        };
        let file = |jobs: &[String]| format!("{ENDPOINT}jobs:\n{}", jobs.concat());
        assert_eq!(
            fixture.problems(&file(&[job("all", "/", "    delete: true\n")])),
            vec![
                "jobs.yaml:11:12: job `all`: local `/` is the root directory; a job with delete: true may not delete files there: give the job a directory of its own"
            ]
        );
        assert_eq!(
            fixture.problems(&file(&[job("etc", "/etc", "    delete: true\n")])),
            vec![
                "jobs.yaml:11:12: job `etc`: local `/etc` is a system directory; a job with delete: true may not delete files there: give the job a directory of its own"
            ]
        );
        // Without deletes, a system directory is the operator's business.
        fixture.parse_ok(&file(&[job("etc", "/etc", "")]));
        assert_eq!(
            fixture.problems(&file(&[
                job("outer", "drops", ""),
                job("inner", "drops/inner", "    delete: true\n"),
            ])),
            vec![
                "jobs.yaml:11:12: job `outer`: local `$DIR/drops` overlaps job `inner`'s local `$DIR/drops/inner`, and `inner` deletes files there; give each job a directory of its own"
            ]
        );
        // Overlapping roots are fine when neither deletes.
        fixture.parse_ok(&file(&[job("a", "drops", ""), job("b", "drops/inner", "")]));
    }

    #[test]
    fn secret_files_open_to_other_users_are_refused() {
        let fixture = Fixture::new();
        let key = fs::read_to_string(fixture.path("client.key")).expect("key");
        fixture.secret("open.txt", "pw\n", 0o644);
        fixture.secret("group.txt", "pw\n", 0o640);
        fixture.secret("open.key", &key, 0o604);
        fixture.secret("group.key", &key, 0o640);
        let endpoint = |extra: &str| {
            format!("version: 1\nendpoints:\n  acme:\n    host: h\n    user: u\n{extra}")
        };
        assert_eq!(
            fixture.problems(&endpoint("    password_file: open.txt\n")),
            vec![
                "jobs.yaml:6:20: endpoint `acme`: password_file `$DIR/open.txt` is open to other users (mode 0644): it holds a secret; make it 0600 or 0640 (chmod o-rwx)"
            ]
        );
        assert_eq!(
            fixture.problems(&endpoint(
                "    password_env: ACME_PASSWORD\n    client_cert: client.pem\n    client_key: open.key\n"
            )),
            vec![
                "jobs.yaml:8:17: endpoint `acme`: client_key `$DIR/open.key` is open to other users (mode 0604): it holds a secret; make it 0600 or 0640 (chmod o-rwx)"
            ]
        );
        // root:ferry 0640 is the usual set-up for a service: allowed.
        fixture.parse_ok(&endpoint(
            "    password_file: group.txt\n    client_cert: client.pem\n    client_key: group.key\n",
        ));
        // At run time too: a file opened up after `ferry check` is refused when read.
        let config = fixture.parse_ok(&endpoint("    password_file: group.txt\n"));
        set_mode(&fixture.path("group.txt"), 0o644);
        let err = read_password(&config.endpoints["acme"]).expect_err("refused");
        assert!(err.contains("is open to other users (mode 0644)"), "{err}");
    }

    #[test]
    fn pull_jobs_wait_for_stable_files_by_default() {
        let fixture = Fixture::new();
        let job = |direction: &str, extra: &str| {
            format!(
                "{ENDPOINT}jobs:\n  j:\n    endpoint: acme\n    direction: {direction}\n    local: drops\n    remote: /out\n{extra}"
            )
        };
        let ready = |yaml: String| fixture.parse_ok(&yaml).jobs["j"].ready.clone();
        assert_eq!(ready(job("pull", "")), Ready::Stable(DEFAULT_STABLE_FOR));
        assert_eq!(
            ready(job("pull", "    stable_for: 3s\n")),
            Ready::Stable(Duration::from_secs(3))
        );
        assert_eq!(
            ready(job("pull", "    ready: immediate\n")),
            Ready::Immediate
        );
        assert_eq!(ready(job("push", "")), Ready::Immediate);
        assert_eq!(ready(job("pull", "    ready: sidecar\n")), Ready::Sidecar);
        assert_eq!(
            ready(job("pull", "    ready: { marker: _SUCCESS }\n")),
            Ready::Marker("_SUCCESS".into())
        );
        assert_eq!(
            fixture
                .problems(&job("pull", "    ready: { marker: a/READY }\n"))
                .len(),
            1
        );
        assert_eq!(
            fixture.problems(&job("pull", "    stable_for: 0s\n")),
            vec![
                "jobs.yaml:13:17: job `j`: stable_for must be more than 0s (ready: immediate takes files as soon as they are listed)"
            ]
        );
        assert_eq!(
            fixture
                .problems(&job("pull", "    ready: sometimes\n"))
                .len(),
            1
        );
        let warned = fixture
            .parse_ok(&job("push", "    ready: stable\n"))
            .warnings;
        assert!(
            warned
                .iter()
                .any(|w| w.contains("ready only applies to pull jobs")),
            "{warned:?}"
        );
    }

    #[test]
    fn the_partners_copy_may_be_deleted_or_archived_outside_the_root() {
        let fixture = Fixture::new();
        let job = |extra: &str| {
            format!(
                "{ENDPOINT}jobs:\n  j:\n    endpoint: acme\n    direction: pull\n    local: drops\n    remote: /out\n{extra}"
            )
        };
        let after = |extra: &str| fixture.parse_ok(&job(extra)).jobs["j"].remote_after.clone();
        assert_eq!(after(""), RemoteAfter::Keep);
        assert_eq!(
            after("    remote_after_download: delete\n"),
            RemoteAfter::Delete
        );
        assert_eq!(
            after("    remote_after_download: { move_to: /archive/ }\n"),
            RemoteAfter::MoveTo("/archive".into())
        );
        for (extra, want) in [
            (
                "    remote_after_download: { move_to: /out/done }\n",
                "is inside the job's remote directory",
            ),
            (
                "    remote_after_download: { move_to: archive }\n",
                "must be an absolute remote directory",
            ),
            (
                "    remote_after_download: delete\n    delete: true\n",
                "use one or the other",
            ),
        ] {
            let problems = fixture.problems(&job(extra));
            assert!(
                problems.len() == 1 && problems[0].contains(want),
                "{extra}: {problems:?}"
            );
        }
    }

    #[test]
    fn a_batch_is_announced_by_a_marker_or_a_manifest() {
        let fixture = Fixture::new();
        let job = |extra: &str| {
            format!(
                "{ENDPOINT}jobs:\n  j:\n    endpoint: acme\n    direction: push\n    local: drops\n    remote: /out\n{extra}"
            )
        };
        let publish = |extra: &str| fixture.parse_ok(&job(extra)).jobs["j"].publish.clone();
        assert_eq!(publish(""), None);
        assert_eq!(
            publish("    publish: batch\n    marker: READY\n"),
            Some(Publish {
                marker: "READY".into(),
                manifest: false
            })
        );
        assert_eq!(
            publish("    publish: batch\n    manifest: SHA256SUMS\n"),
            Some(Publish {
                marker: "SHA256SUMS".into(),
                manifest: true
            })
        );
        for (extra, want) in [
            (
                "    publish: batch\n",
                "publish: batch needs `marker: NAME`",
            ),
            ("    marker: READY\n", "marker needs publish: batch"),
            (
                "    publish: batch\n    marker: READY\n    manifest: SUMS\n",
                "either marker or manifest",
            ),
            (
                "    publish: batch\n    marker: a/READY\n",
                "must be a file name",
            ),
        ] {
            let problems = fixture.problems(&job(extra));
            assert!(
                problems.len() == 1 && problems[0].contains(want),
                "{extra}: {problems:?}"
            );
        }
    }

    #[test]
    fn two_way_jobs_take_a_conflict_policy_and_refuse_one_way_keys() {
        let fixture = Fixture::new();
        let job = |direction: &str, extra: &str| {
            format!(
                "{ENDPOINT}jobs:\n  j:\n    endpoint: acme\n    direction: {direction}\n    local: drops\n    remote: /out\n{extra}"
            )
        };
        let parsed = |extra: &str| fixture.parse_ok(&job("both", extra)).jobs["j"].clone();
        let j = parsed("");
        assert_eq!(j.direction, Direction::Both);
        assert_eq!(j.conflict, ConflictPolicy::KeepBoth);
        assert_eq!(
            j.ready,
            Ready::Immediate,
            "a two-way job takes files as listed"
        );
        for (word, want) in [
            ("newer", ConflictPolicy::Newer),
            ("local", ConflictPolicy::Local),
            ("remote", ConflictPolicy::Remote),
            ("keep_both", ConflictPolicy::KeepBoth),
        ] {
            assert_eq!(parsed(&format!("    conflict: {word}\n")).conflict, want);
        }
        for (extra, want) in [
            (
                "    watch: true\n",
                "watch cannot be used with direction: both",
            ),
            ("    after_upload: delete\n", "after_upload cannot be used"),
            (
                "    checksum_sidecar: true\n",
                "checksum_sidecar cannot be used",
            ),
            ("    ready: stable\n", "ready cannot be used"),
            (
                "    remote_after_download: delete\n",
                "remote_after_download cannot",
            ),
            (
                "    publish: batch\n    marker: READY\n",
                "publish cannot be used",
            ),
            ("    backup_dir: /old\n", "backup_dir cannot be used"),
        ] {
            let problems = fixture.problems(&job("both", extra));
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{extra}: {problems:?}"
            );
        }
        let problems = fixture.problems(&job("both", "    conflict: mine\n"));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("unknown variant `mine`, expected one of `newer`")),
            "{problems:?}"
        );
        let one_way = fixture.parse_ok(&job("push", "    conflict: local\n"));
        assert!(
            one_way.warnings.iter().any(|w| w
                .to_string()
                .contains("conflict only applies to direction: both")),
            "{:?}",
            one_way.warnings
        );
    }

    #[test]
    fn upload_is_temporary_or_direct_for_push_jobs() {
        let fixture = Fixture::new();
        let job = |direction: &str, extra: &str| {
            format!(
                "{ENDPOINT}jobs:\n  j:\n    endpoint: acme\n    direction: {direction}\n    local: drops\n    remote: /out\n{extra}"
            )
        };
        let direct = |extra: &str| fixture.parse_ok(&job("push", extra)).jobs["j"].direct_upload;
        assert!(!direct(""));
        assert!(!direct("    upload: temporary\n"));
        assert!(direct("    upload: direct\n"));
        let problems = fixture.problems(&job(
            "push",
            "    upload: direct\n    publish: batch\n    marker: READY\n",
        ));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("upload: direct cannot go with publish: batch")),
            "{problems:?}"
        );
        let pull = fixture.parse_ok(&job("pull", "    upload: direct\n    ready: immediate\n"));
        assert!(!pull.jobs["j"].direct_upload);
        assert!(
            pull.warnings
                .iter()
                .any(|w| w.to_string().contains("upload only applies to push jobs")),
            "{:?}",
            pull.warnings
        );
    }

    #[test]
    fn backup_dir_is_a_local_directory_of_a_pull_job_outside_local() {
        let fixture = Fixture::new();
        fs::create_dir(fixture.path("kept")).expect("mkdir");
        fs::create_dir(fixture.path("drops/inner")).expect("mkdir");
        let job = |direction: &str, extra: &str| {
            format!(
                "{ENDPOINT}jobs:\n  j:\n    endpoint: acme\n    direction: {direction}\n    local: drops\n    remote: /out\n{extra}"
            )
        };
        let config = fixture.parse_ok(&job("pull", "    backup_dir: kept\n"));
        assert_eq!(config.jobs["j"].backup_dir, Some(fixture.path("kept")));
        for (direction, extra, want) in [
            ("pull", "    backup_dir: drops/inner\n", "is inside local"),
            (
                "push",
                "    backup_dir: kept\n",
                "must be an absolute remote directory",
            ),
            (
                "push",
                "    backup_dir: /out/old\n",
                "inside the job's remote directory",
            ),
        ] {
            let problems = fixture.problems(&job(direction, extra));
            assert!(
                problems.len() == 1 && problems[0].contains(want),
                "{extra}: {problems:?}"
            );
        }
        let push = fixture.parse_ok(&job("push", "    backup_dir: /old/\n"));
        assert_eq!(push.jobs["j"].backup_dir, Some(PathBuf::from("/old")));
        // A missing one makes the job unavailable on this machine, as a missing local does.
        let config = fixture.parse_ok(&job("pull", "    backup_dir: nowhere\n"));
        assert!(config.unavailable("j").is_some());
    }

    #[test]
    fn hooks_are_argv_lists_with_a_timeout() {
        let fixture = Fixture::new();
        let job = |extra: &str| {
            format!(
                "{ENDPOINT}jobs:\n  j:\n    endpoint: acme\n    direction: pull\n    local: drops\n    remote: /out\n{extra}"
            )
        };
        let hooks = fixture
            .parse_ok(&job(
                "    on_success: [/usr/bin/notify, --job, j]\n    hook_timeout: 5s\n",
            ))
            .jobs["j"]
            .hooks
            .clone();
        assert_eq!(
            hooks.on_success,
            Some(vec!["/usr/bin/notify".into(), "--job".into(), "j".into()])
        );
        assert_eq!(hooks.on_failure, None);
        assert_eq!(hooks.timeout, Duration::from_secs(5));
        assert_eq!(fixture.parse_ok(&job("")).jobs["j"].hooks, Hooks::default());
        assert_eq!(
            fixture.problems(&job("    on_failure: []\n    hook_timeout: 0s\n")),
            vec![
                "jobs.yaml:13:17: job `j`: on_failure must name a command, as a list such as [/usr/local/bin/notify, --job, nightly]",
                "jobs.yaml:14:19: job `j`: hook_timeout must be more than 0s",
            ]
        );
        // A string is not a list: no shell will split it.
        assert_eq!(
            fixture
                .problems(&job("    on_success: /usr/bin/notify --job j\n"))
                .len(),
            1
        );
    }

    impl Fixture {
        fn parse(&self, yaml: &str) -> Result<Config, ConfigError> {
            let env = |name: &str| self.env.get(name).cloned();
            parse_str(yaml, Path::new("jobs.yaml"), self.dir.path(), &env)
        }

        fn parse_ok(&self, yaml: &str) -> Config {
            match self.parse(yaml) {
                Ok(config) => config,
                Err(e) => panic!("expected a valid file, got:\n{e}"),
            }
        }

        /// The lines `ConfigError` prints, with the temporary directory shown as `$DIR`.
        fn problems(&self, yaml: &str) -> Vec<String> {
            match self.parse(yaml) {
                Ok(_) => Vec::new(),
                Err(e) => e
                    .to_string()
                    .lines()
                    .map(|l| l.replace(&self.dir.path().display().to_string(), "$DIR"))
                    .collect(),
            }
        }
    }

    const ENDPOINT: &str = "\
version: 1
endpoints:
  acme:
    host: ftp.acme.example
    user: dropbox
    password_env: ACME_PASSWORD
";

    /// Each case: the YAML (after the common `ENDPOINT` header, 6 lines), the exact problems.
    #[test]
    fn job_problems_are_reported_with_line_column_and_job() {
        let cases: &[(&str, &[&str])] = &[
            (
                "jobs:\n  nightly:\n    endpoint: acm\n    direction: pull\n    local: drops\n    remote: /out\n",
                &["jobs.yaml:9:15: job `nightly`: unknown endpoint `acm` (known: acme)"],
            ),
            (
                "jobs:\n  nightly:\n    watch: true\n",
                &[
                    "jobs.yaml:8:3: job `nightly`: missing `endpoint`",
                    "jobs.yaml:8:3: job `nightly`: missing `direction` (push, pull or both)",
                    "jobs.yaml:8:3: job `nightly`: missing `local`",
                    "jobs.yaml:8:3: job `nightly`: missing `remote`",
                ],
            ),
            (
                "jobs:\n  nightly:\n    endpoint: acme\n    direction: sideways\n    local: drops\n    remote: /out\n",
                &[
                    "jobs.yaml:10:16: job `nightly`: unknown variant `sideways`, expected one of `push`, `pull`, `both`",
                ],
            ),
            (
                "jobs:\n  nightly:\n    endpoint: acme\n    direction: pull\n    local: drops\n    remote: out\n",
                &[
                    "jobs.yaml:12:13: job `nightly`: remote path `out` must be absolute (start with `/`)",
                ],
            ),
            (
                "jobs:\n  nightly:\n    endpoint: acme\n    direction: pull\n    local: drops\n    remote: \"/out\\r\\nDELE x\"\n",
                &["jobs.yaml:12:13: job `nightly`: remote path must not contain CR, LF or NUL"],
            ),
            (
                "jobs:\n  nightly:\n    endpoint: acme\n    direction: pull\n    local: drops\n    remote: /out\n    schedule: \"61 2 * * *\"\n",
                &[
                    "jobs.yaml:13:15: job `nightly`: bad schedule `61 2 * * *`: Component error: Number out of bounds. (fields: [second] minute hour day-of-month month day-of-week, or @hourly, @daily, @weekly, @monthly, @yearly)",
                ],
            ),
            (
                "jobs:\n  nightly:\n    endpoint: acme\n    direction: pull\n    local: drops\n    remote: /out\n    schedule: \"* * *\"\n",
                &[
                    "jobs.yaml:13:15: job `nightly`: bad schedule `* * *`: Invalid pattern: Pattern must have 5 or 6 fields when years are disallowed. (fields: [second] minute hour day-of-month month day-of-week, or @hourly, @daily, @weekly, @monthly, @yearly)",
                ],
            ),
            (
                "jobs:\n  nightly:\n    endpoint: acme\n    direction: pull\n    local: drops\n    remote: /out\n    timezone: Europe/Berln\n",
                &[
                    "jobs.yaml:13:15: job `nightly`: unknown timezone `Europe/Berln` (expected an IANA name such as Europe/Berlin or UTC)",
                ],
            ),
            (
                "jobs:\n  nightly:\n    endpoint: acme\n    direction: pull\n    local: drops\n    remote: /out\n    include: [\"**/*.csv\", \"[a\"]\n    exclude: []\n",
                &[
                    "jobs.yaml:13:27: job `nightly`: bad glob `[a` in include: unclosed character class; missing ']'",
                ],
            ),
            (
                "jobs:\n  nightly:\n    endpoint: acme\n    direction: pull\n    local: drops\n    remote: /out\n    include: []\n",
                &[
                    "jobs.yaml:13:14: job `nightly`: include is empty and would match no file; remove it to include every file",
                ],
            ),
            (
                "jobs:\n  nightly:\n    endpoint: acme\n    direction: pull\n    local: drops\n    remote: /out\n    retry: { attempts: 0, initial: 10s, max: 5s }\n",
                &[
                    "jobs.yaml:13:24: job `nightly`: retry.attempts must be at least 1 (1 means no retry)",
                    "jobs.yaml:13:36: job `nightly`: retry.initial (10s) is longer than retry.max (5s)",
                ],
            ),
            (
                "jobs:\n  nightly:\n    endpoint: acme\n    direction: push\n    local: outbox\n    remote: /in\n    delete: true\n    after_upload: delete\n",
                &[
                    "jobs.yaml:14:5: job `nightly`: after_upload removes pushed files locally, and delete: true would then delete them on the server; use one or the other",
                ],
            ),
            (
                "jobs:\n  nightly:\n    endpoint: acme\n    direction: pull\n    local: drops\n    remote: /out\n    delete: yes\n    settle: 2 seconds please\n",
                &[
                    "jobs.yaml:13:13: job `nightly`: invalid type: string \"yes\", expected a boolean",
                    "jobs.yaml:14:13: job `nightly`: invalid value: string \"2 seconds please\", expected a duration",
                ],
            ),
            (
                "jobs:\n  night ly:\n    endpoint: acme\n",
                &["jobs.yaml:8:3: job name `night ly` must not contain whitespace or `/`"],
            ),
            (
                "jobs:\n  a:\n    endpoint: acme\n    direction: pull\n    local: drops\n    remote: /a\n  a:\n    endpoint: acme\n",
                &["jobs.yaml:13:3: duplicate job `a` (first defined on line 8)"],
            ),
        ];
        let fixture = Fixture::new();
        for (jobs, expected) in cases {
            let yaml = format!("{ENDPOINT}{jobs}");
            assert_eq!(fixture.problems(&yaml), *expected, "for:\n{yaml}");
        }
    }

    /// Each case: one endpoint's YAML after `version: 1\nendpoints:\n  acme:\n` (so the
    /// endpoint's first key is on line 4), the exact problems.
    #[test]
    fn endpoint_problems_are_reported_with_line_column_and_endpoint() {
        let cases: &[(&str, &[&str])] = &[
            (
                "    port: 2121\n",
                &[
                    "jobs.yaml:3:3: endpoint `acme`: missing `host`",
                    "jobs.yaml:3:3: endpoint `acme`: missing `user`",
                    "jobs.yaml:3:3: endpoint `acme`: no password source (set password_env, password_file, password_credential or password)",
                ],
            ),
            (
                "    host: h\n    user: u\n    password_env: ACME_PASSWORD\n    tls: none\n",
                &[
                    "jobs.yaml:7:10: endpoint `acme`: `tls: none` sends the password and files in cleartext; add `allow_insecure: true` to allow it",
                ],
            ),
            (
                "    host: h\n    user: u\n    password_env: ACME_PASSWORD\n    password: hunter2\n",
                &[
                    "jobs.yaml:7:5: endpoint `acme`: set only one password source; found password_env and password",
                ],
            ),
            (
                "    host: h\n    user: u\n    password_env: \"A=B\"\n",
                &[
                    "jobs.yaml:6:19: endpoint `acme`: password_env `A=B` is not an environment variable name",
                ],
            ),
            (
                "    host: h\n    user: u\n    password_credential: ../partner-ftp\n",
                &[
                    "jobs.yaml:6:26: endpoint `acme`: password_credential `../partner-ftp` must be a credential name as in LoadCredential=NAME:..., not a path",
                ],
            ),
            (
                "    host: h\n    user: u\n    password_credential: \"..\"\n",
                &[
                    "jobs.yaml:6:26: endpoint `acme`: password_credential `..` must be a credential name as in LoadCredential=NAME:..., not a path",
                ],
            ),
            (
                "    host: h\n    user: u\n    password_credential: \"\"\n",
                &[
                    "jobs.yaml:6:26: endpoint `acme`: password_credential `` must be a credential name as in LoadCredential=NAME:..., not a path",
                ],
            ),
            (
                "    host: h\n    user: u\n    password_env: ACME_PASSWORD\n    ca_file: /nonexistent/ca.pem\n",
                &[
                    "jobs.yaml:7:14: endpoint `acme`: cannot read ca_file `/nonexistent/ca.pem`: No such file or directory (os error 2)",
                ],
            ),
            (
                "    host: h\n    user: u\n    password_env: ACME_PASSWORD\n    ca_file: empty.pem\n",
                &[
                    "jobs.yaml:7:14: endpoint `acme`: ca_file `$DIR/empty.pem` holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                ],
            ),
            (
                "    host: h\n    user: u\n    password_env: ACME_PASSWORD\n    pin_sha256: \"9f:86:d0\"\n",
                &[
                    "jobs.yaml:7:17: endpoint `acme`: pin_sha256 must be 64 hex digits (colons allowed): the SHA-256 of the server's certificate",
                ],
            ),
            (
                "    host: h\n    user: u\n    client_cert: client.pem\n",
                &[
                    "jobs.yaml:6:5: endpoint `acme`: client_cert needs client_key too (both or neither)",
                ],
            ),
            (
                "    host: h\n    user: u\n    client_cert: client.pem\n    client_key: ca.pem\n",
                &[
                    "jobs.yaml:7:17: endpoint `acme`: client_key `$DIR/ca.pem` holds no PEM private key",
                ],
            ),
            (
                "    host: h\n    port: 0\n    user: u\n    password_env: ACME_PASSWORD\n    max_connections: 0\n    timeout: 0s\n",
                &[
                    "jobs.yaml:5:11: endpoint `acme`: port must be between 1 and 65535",
                    "jobs.yaml:8:22: endpoint `acme`: max_connections must be at least 1",
                    "jobs.yaml:9:14: endpoint `acme`: timeout must be greater than 0",
                ],
            ),
            (
                "    host: h\n    user: \"u\\r\\nDELE x\"\n    password: \"p\\r\\nQUIT\"\n",
                &[
                    "jobs.yaml:5:11: endpoint `acme`: user must not contain CR, LF or NUL",
                    "jobs.yaml:6:15: endpoint `acme`: password must not contain CR, LF or NUL",
                ],
            ),
            (
                "    host: h\n    user: u\n    password_env: ACME_PASSWORD\n    pasive: true\n",
                &[
                    "jobs.yaml:7:5: endpoint `acme`: unknown field `pasive`, expected one of `host`, `port`, `tls`, `allow_insecure`, `user`, `password_env`, `password_file`, `password_credential`, `password`, `ca_file`, `pin_sha256`, `client_cert`, `client_key`, `data_mode`, `max_connections`, `timeout`, `tls_max_version`, `active_ports`, `use_pasv_address`, `limits`",
                ],
            ),
        ];
        let fixture = Fixture::new();
        for (endpoint, expected) in cases {
            let yaml = format!("version: 1\nendpoints:\n  acme:\n{endpoint}");
            assert_eq!(fixture.problems(&yaml), *expected, "for:\n{yaml}");
        }
    }

    /// A missing or wrong directory, an unreadable password file: problems of this machine,
    /// not of the file. The file loads with the values kept; only the jobs concerned (an
    /// endpoint's finding: each of its jobs) are unavailable, each finding placed as an error.
    #[test]
    fn problems_of_this_machine_make_only_their_jobs_unavailable() {
        let fixture = Fixture::new();
        let yaml = "\
version: 1
endpoints:
  acme:
    host: h
    user: u
    password_env: ACME_PASSWORD
  partner:
    host: h
    user: u
    password_file: missing.txt
  lonely:
    host: h
    user: u
    password_file: gone.txt
jobs:
  fine:
    endpoint: acme
    direction: pull
    local: drops
    remote: /a
  nowhere:
    endpoint: acme
    direction: pull
    local: nowhere
    remote: /b
  notdir:
    endpoint: acme
    direction: pull
    local: file.txt
    remote: /c
  archive:
    endpoint: acme
    direction: push
    local: outbox
    remote: /d
    after_upload: { move_to: archive }
  via-partner:
    endpoint: partner
    direction: push
    local: mirror
    remote: /e
  also-partner:
    endpoint: partner
    direction: push
    local: nowhere-else
    remote: /f
";
        let config = fixture.parse_ok(yaml);
        let dir = fixture.dir.path().display().to_string();
        let shown = |lines: &[String]| -> Vec<String> {
            lines.iter().map(|l| l.replace(&dir, "$DIR")).collect()
        };
        let partner = "jobs.yaml:10:20: endpoint `partner`: cannot read password_file `$DIR/missing.txt`: No such file or directory (os error 2)";
        assert_eq!(
            shown(&config.unavailable_findings),
            [
                partner,
                "jobs.yaml:14:20: endpoint `lonely`: cannot read password_file `$DIR/gone.txt`: No such file or directory (os error 2)",
                "jobs.yaml:24:12: job `nowhere`: local directory `$DIR/nowhere` does not exist",
                "jobs.yaml:29:12: job `notdir`: local path `$DIR/file.txt` is not a directory",
                "jobs.yaml:36:30: job `archive`: after_upload.move_to directory `$DIR/archive` does not exist",
                "jobs.yaml:45:12: job `also-partner`: local directory `$DIR/nowhere-else` does not exist",
            ]
        );
        let by_job: BTreeMap<&str, Vec<String>> = config
            .unavailable
            .iter()
            .map(|(job, lines)| (job.as_str(), shown(lines)))
            .collect();
        assert_eq!(
            by_job,
            BTreeMap::from([
                (
                    "also-partner",
                    vec![
                        partner.to_owned(),
                        "jobs.yaml:45:12: job `also-partner`: local directory `$DIR/nowhere-else` does not exist".to_owned(),
                    ]
                ),
                (
                    "archive",
                    vec!["jobs.yaml:36:30: job `archive`: after_upload.move_to directory `$DIR/archive` does not exist".to_owned()]
                ),
                (
                    "notdir",
                    vec!["jobs.yaml:29:12: job `notdir`: local path `$DIR/file.txt` is not a directory".to_owned()]
                ),
                (
                    "nowhere",
                    vec!["jobs.yaml:24:12: job `nowhere`: local directory `$DIR/nowhere` does not exist".to_owned()]
                ),
                ("via-partner", vec![partner.to_owned()]),
            ])
        );
        assert_eq!(config.unavailable("fine"), None);
        assert_eq!(config.unavailable("no-such-job"), None);
        assert_eq!(config.unavailable("nowhere").map(<[String]>::len), Some(1));
        // The values are kept: once the directory or the file is there, the job runs as written.
        assert_eq!(config.jobs["nowhere"].local, fixture.path("nowhere"));
        assert_eq!(
            config.jobs["archive"].after_upload,
            AfterUpload::MoveTo(fixture.path("archive"))
        );
        assert_eq!(
            config.endpoints["partner"].password,
            PasswordSource::File(fixture.path("missing.txt"))
        );
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        assert!(config.notes.is_empty(), "{:?}", config.notes);
    }

    /// A password_env this shell does not set and a password_credential outside the systemd
    /// unit cannot be checked here and are not wrong for that: notes. With
    /// $CREDENTIALS_DIRECTORY set, a credential that is not there is a problem of this machine.
    #[test]
    fn secrets_this_shell_cannot_see_are_notes() {
        let mut fixture = Fixture::new();
        let yaml = "\
version: 1
endpoints:
  acme:
    host: h
    user: u
    password_env: NOT_SET
  partner:
    host: h
    user: u
    password_credential: partner-ftp
  other:
    host: h
    user: u
    password_credential: other-ftp
jobs:
  nightly:
    endpoint: other
    direction: pull
    local: drops
    remote: /a
";
        let config = fixture.parse_ok(yaml);
        assert_eq!(
            config.notes,
            [
                "jobs.yaml:6:19: endpoint `acme`: password_env: environment variable `NOT_SET` is not set here; it is read when connecting, so this endpoint's jobs need it where they run",
                "jobs.yaml:10:26: endpoint `partner`: password_credential `partner-ftp`: $CREDENTIALS_DIRECTORY is not set here (systemd sets it for a service with LoadCredential=partner-ftp:...); the credential is read when connecting",
                "jobs.yaml:14:26: endpoint `other`: password_credential `other-ftp`: $CREDENTIALS_DIRECTORY is not set here (systemd sets it for a service with LoadCredential=other-ftp:...); the credential is read when connecting",
            ]
        );
        assert!(config.unavailable_findings.is_empty());
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        assert_eq!(
            config.endpoints["acme"].password,
            PasswordSource::Env("NOT_SET".into())
        );
        assert_eq!(
            config.endpoints["partner"].password,
            PasswordSource::Credential("partner-ftp".into())
        );

        // Inside the unit: the credential that is there is fine, the one that is not makes its
        // endpoint's job unavailable.
        let creds = fixture.path("creds").display().to_string();
        fixture
            .env
            .insert("CREDENTIALS_DIRECTORY".into(), creds.clone());
        let config = fixture.parse_ok(yaml);
        assert_eq!(config.notes.len(), 1, "{:?}", config.notes);
        let missing = format!(
            "jobs.yaml:14:26: endpoint `other`: cannot read credential `other-ftp` ({creds}/other-ftp): No such file or directory (os error 2)"
        );
        assert_eq!(config.unavailable_findings, std::slice::from_ref(&missing));
        assert_eq!(
            config.unavailable,
            BTreeMap::from([("nightly".to_owned(), vec![missing])])
        );
        assert_eq!(
            config.endpoints["other"].password,
            PasswordSource::Credential("other-ftp".into())
        );
    }

    #[test]
    fn top_level_problems_are_reported_with_their_place() {
        let cases: &[(&str, &[&str])] = &[
            (
                "",
                &["jobs.yaml:1:1: the job file is empty; it needs at least `version: 1`"],
            ),
            (
                "endpoints: {}\n",
                &["jobs.yaml:1:1: missing `version: 1` (the job file format)"],
            ),
            (
                "version: 2\n",
                &["jobs.yaml:1:10: unsupported version 2; this ferry reads version 1"],
            ),
            (
                "version: 1\njob:\n  a: {}\n",
                &[
                    "jobs.yaml:2:1: unknown field `job`, expected one of `version`, `state_dir`, `metrics`, `shutdown_grace`, `endpoints`, `jobs`",
                ],
            ),
            (
                "version: 1\njobs: [a, b]\n",
                &["jobs.yaml:2:7: `jobs` must be a mapping of job names to jobs"],
            ),
            (
                "version: 1\njobs:\n  a: {endpoint: x\n",
                &[
                    "jobs.yaml:4:1: YAML syntax error: while parsing a flow mapping, did not find expected ',' or '}'",
                ],
            ),
            (
                "- just\n- a list\n",
                &[
                    "jobs.yaml:1:1: invalid type: sequence, expected a mapping with version, endpoints and jobs",
                ],
            ),
            (
                "version: 1\nendpoints:\n  acme:\n  \"\": {}\n  [a]: {}\n",
                &[
                    "jobs.yaml:3:7: endpoint `acme`: invalid type: empty value, expected an endpoint: a mapping with host, user, a password source, ...",
                    "jobs.yaml:4:3: endpoint name must not be empty",
                    "jobs.yaml:5:3: endpoint name must be text",
                ],
            ),
        ];
        let fixture = Fixture::new();
        for (yaml, expected) in cases {
            assert_eq!(fixture.problems(yaml), *expected, "for:\n{yaml}");
        }
    }

    #[test]
    fn five_different_problems_are_all_reported_at_once() {
        let yaml = "\
version: 1
endpoints:
  acme:
    host: ftp.acme.example
    user: dropbox
    ca_file: empty.pem
  partner:
    host: files.partner.example
    user: ferry
    password_env: ACME_PASSWORD
    colour: blue
jobs:
  nightly:
    endpoint: acm
    direction: pull
    local: drops
    remote: /outgoing
    schedule: \"30 25 * * *\"
  outbox:
    endpoint: partner
    direction: push
    local: file.txt
    remote: /incoming
";
        let fixture = Fixture::new();
        assert_eq!(
            fixture.problems(yaml),
            [
                "jobs.yaml:3:3: endpoint `acme`: no password source (set password_env, password_file, password_credential or password)",
                "jobs.yaml:6:14: endpoint `acme`: ca_file `$DIR/empty.pem` holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                "jobs.yaml:11:5: endpoint `partner`: unknown field `colour`, expected one of `host`, `port`, `tls`, `allow_insecure`, `user`, `password_env`, `password_file`, `password_credential`, `password`, `ca_file`, `pin_sha256`, `client_cert`, `client_key`, `data_mode`, `max_connections`, `timeout`, `tls_max_version`, `active_ports`, `use_pasv_address`, `limits`",
                "jobs.yaml:14:15: job `nightly`: unknown endpoint `acm` (known: acme, partner)",
                "jobs.yaml:18:15: job `nightly`: bad schedule `30 25 * * *`: Component error: Number out of bounds. (fields: [second] minute hour day-of-month month day-of-week, or @hourly, @daily, @weekly, @monthly, @yearly)",
                "jobs.yaml:22:12: job `outbox`: local path `$DIR/file.txt` is not a directory",
            ]
        );
    }

    #[test]
    fn defaults_are_applied() {
        let fixture = Fixture::new();
        let config = fixture.parse_ok(&format!(
            "{ENDPOINT}jobs:\n  nightly:\n    endpoint: acme\n    direction: pull\n    local: drops\n    remote: /out\n"
        ));
        assert_eq!(config.source, Path::new("jobs.yaml"));
        assert_eq!(
            config.state_dir,
            Path::new("/home/ferry/.local/state/ferry")
        );
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        let endpoint = &config.endpoints["acme"];
        assert_eq!(endpoint.name, "acme");
        assert_eq!(endpoint.port, 21);
        assert_eq!(endpoint.tls, TlsMode::Explicit);
        assert_eq!(
            endpoint.password,
            PasswordSource::Env("ACME_PASSWORD".into())
        );
        assert_eq!(endpoint.trust, TrustRoots::System);
        assert_eq!(endpoint.pin_sha256, None);
        assert_eq!(
            (&endpoint.client_cert, &endpoint.client_key),
            (&None, &None)
        );
        assert_eq!(endpoint.data_mode, DataMode::Passive);
        assert_eq!(endpoint.max_connections, 2);
        assert_eq!(endpoint.timeout, Duration::from_secs(30));
        assert_eq!(endpoint.tls_max_version, None);
        let job = &config.jobs["nightly"];
        assert_eq!(job.name, "nightly");
        assert_eq!(job.endpoint, "acme");
        assert_eq!(job.local, fixture.path("drops"));
        assert_eq!(job.schedule, None);
        assert_eq!(job.timezone, None);
        assert!(!job.filter.has_include());
        assert!(job.filter.allows_file("any/thing.bin"));
        assert!(!job.delete);
        assert_eq!(job.verify, Verify::Size);
        assert_eq!(job.retry, RetryPolicy::default());
        assert_eq!(
            (job.retry.attempts, job.retry.initial, job.retry.max),
            (3, Duration::from_secs(1), Duration::from_secs(60))
        );
        assert!(!job.watch);
        assert_eq!(job.settle, Duration::from_secs(2));
        assert_eq!(job.after_upload, AfterUpload::Keep);
    }

    #[test]
    fn implicit_tls_defaults_to_port_990() {
        let fixture = Fixture::new();
        let config = fixture.parse_ok(&format!("{ENDPOINT}    tls: implicit\n"));
        assert_eq!(config.endpoints["acme"].port, 990);
    }

    /// Each case: environment variables, the state directory chosen.
    #[test]
    fn state_dir_default_follows_systemd_then_xdg_then_home() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("STATE_DIRECTORY", "/var/lib/ferry:/var/lib/other"),
                    ("HOME", "/h"),
                ],
                "/var/lib/ferry",
            ),
            (
                &[("XDG_STATE_HOME", "/x/state"), ("HOME", "/h")],
                "/x/state/ferry",
            ),
            (
                &[("XDG_STATE_HOME", "relative"), ("HOME", "/h")],
                "/h/.local/state/ferry",
            ),
            (
                &[("STATE_DIRECTORY", ""), ("HOME", "/h")],
                "/h/.local/state/ferry",
            ),
        ];
        for (vars, expected) in cases {
            let mut fixture = Fixture::new();
            fixture.env.remove("HOME");
            for (k, v) in *vars {
                fixture.env.insert((*k).into(), (*v).into());
            }
            let config = fixture.parse_ok("version: 1\n");
            assert_eq!(config.state_dir, Path::new(expected), "for {vars:?}");
        }
        let mut fixture = Fixture::new();
        fixture.env.clear();
        assert_eq!(
            fixture.problems("version: 1\n"),
            [
                "jobs.yaml:1:1: no state directory: set `state_dir`, or $STATE_DIRECTORY, $XDG_STATE_HOME or $HOME"
            ]
        );
        let config = fixture.parse_ok("version: 1\nstate_dir: state\n");
        assert_eq!(config.state_dir, fixture.path("state"));
    }

    #[test]
    fn warnings_name_their_place() {
        let fixture = Fixture::new();
        let yaml = "\
version: 1
endpoints:
  acme:
    host: h
    user: u
    tls: none
    allow_insecure: true
    password: hunter2
    use_pasv_address: true
jobs:
  fetch:
    endpoint: acme
    direction: pull
    local: drops
    remote: /out
    watch: true
    after_upload: delete
  push:
    endpoint: acme
    direction: push
    local: outbox
    remote: /in
    after_upload: { move_to: outbox/sent }
";
        fs::create_dir(fixture.path("outbox/sent")).expect("mkdir");
        let config = fixture.parse_ok(yaml);
        let outbox = fixture.path("outbox").display().to_string();
        assert_eq!(
            config.warnings,
            [
                "jobs.yaml:6:10: endpoint `acme`: `tls: none`: the password and every file travel in cleartext".to_string(),
                "jobs.yaml:8:5: endpoint `acme`: literal password in the job file; prefer password_env or password_file".to_string(),
                "jobs.yaml:9:23: endpoint `acme`: use_pasv_address: true lets the server's PASV reply choose the host ferry connects to for data; use it only for a server that needs it".to_string(),
                "jobs.yaml:16:5: job `fetch`: watch only applies to push jobs; ignored for this pull job".to_string(),
                "jobs.yaml:17:5: job `fetch`: after_upload only applies to push jobs; ignored for this pull job".to_string(),
                format!("jobs.yaml:23:30: job `push`: after_upload.move_to `{outbox}/sent` is inside local `{outbox}`: moved files will be pushed again unless an exclude glob covers them"),
            ]
        );
    }

    #[test]
    fn literal_password_never_appears_in_output() {
        const SECRET: &str = "hunter2-Sup3r-s3cret";
        let fixture = Fixture::new();
        let valid = format!(
            "version: 1\nendpoints:\n  acme:\n    host: h\n    user: u\n    password: {SECRET}\n"
        );
        let config = fixture.parse_ok(&valid);
        let shown = format!("{config:?}\n{}", config.warnings.join("\n"));
        assert!(!shown.contains(SECRET), "{shown}");
        assert_eq!(
            config.endpoints["acme"].password,
            PasswordSource::Literal(Secret::new(SECRET))
        );

        // Invalid files: the secret sits next to every kind of problem around it.
        let invalids = [
            format!("{valid}    password_env: ACME_PASSWORD\n"),
            format!("{valid}    pasword: {SECRET}\n"),
            format!("{valid}    port: {SECRET}\n"),
            format!("{valid}    user: [{SECRET}]\n"),
            valid
                .replace("password: ", "password: [")
                .replace(SECRET, &format!("{SECRET}]")),
            valid.replace(SECRET, &format!("\"{SECRET}\\nQUIT\"")),
            valid.replace(SECRET, &format!("{SECRET}: [")),
        ];
        for yaml in &invalids {
            let error = fixture.parse(yaml).expect_err("invalid");
            let shown = format!("{error}\n{error:?}");
            assert!(!shown.contains(SECRET), "{shown}");
        }
    }

    #[test]
    fn a_valid_full_file_parses_into_every_field() {
        let fixture = Fixture::new();
        fs::create_dir(fixture.path("archive")).expect("mkdir");
        let yaml = "\
version: 1
state_dir: /var/lib/ferry
endpoints:
  acme:
    host: ftp.acme.example
    port: 2121
    tls: implicit
    user: dropbox
    password_file: password.txt
    ca_file: ca.pem
    pin_sha256: \"9F:86:D0:81:88:4c:7d:65:9a:2f:ea:a0:c5:5a:d0:15:a3:bf:4f:1b:2b:0b:82:2c:d1:5d:6c:15:b0:f0:0a:08\"
    client_cert: client.pem
    client_key: client.key
    data_mode: active
    max_connections: 4
    timeout: 1m 30s
    tls_max_version: 1.2
jobs:
  outbox:
    endpoint: acme
    direction: push
    local: outbox
    remote: /incoming
    schedule: \"0 */5 * * * *\"
    timezone: Europe/Berlin
    include: [\"**/*.csv\", \"*.txt\"]
    exclude: [\"**/*.tmp\"]
    delete: false
    verify: readback
    retry: { attempts: 5, initial: 500ms, max: 5m }
    watch: true
    settle: 3s
    after_upload:
      move_to: archive
";
        let config = fixture.parse_ok(yaml);
        assert_eq!(config.state_dir, Path::new("/var/lib/ferry"));
        let e = &config.endpoints["acme"];
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("ftp.acme.example", 2121, TlsMode::Implicit)
        );
        assert_eq!(e.user, "dropbox");
        assert_eq!(
            e.password,
            PasswordSource::File(fixture.path("password.txt"))
        );
        assert_eq!(e.trust, TrustRoots::CaFile(fixture.path("ca.pem")));
        let mut pin = [0u8; 32];
        hex::decode_to_slice(
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            &mut pin,
        )
        .expect("hex");
        assert_eq!(e.pin_sha256, Some(pin));
        assert_eq!(e.client_cert, Some(fixture.path("client.pem")));
        assert_eq!(e.client_key, Some(fixture.path("client.key")));
        assert_eq!(e.data_mode, DataMode::Active);
        assert_eq!(e.max_connections, 4);
        assert_eq!(e.timeout, Duration::from_secs(90));
        assert_eq!(e.tls_max_version, Some(TlsVersion::V1_2));
        let j = &config.jobs["outbox"];
        assert_eq!(j.direction, Direction::Push);
        assert_eq!(j.local, fixture.path("outbox"));
        assert_eq!(j.remote, "/incoming");
        assert_eq!(j.schedule.as_deref(), Some("0 */5 * * * *"));
        assert_eq!(j.timezone, Some(chrono_tz::Europe::Berlin));
        assert!(j.filter.has_include());
        assert!(j.filter.allows_file("a/b/c.csv"));
        assert!(j.filter.allows_file("top.txt"));
        // `*` does not cross directories.
        assert!(!j.filter.allows_file("sub/deep.txt"));
        assert!(!j.filter.allows_file("x/y.tmp.csv.tmp"));
        assert!(!j.filter.allows_dir("z.tmp"));
        assert!(!j.delete);
        assert_eq!(j.verify, Verify::Readback);
        assert_eq!(
            j.retry,
            RetryPolicy {
                attempts: 5,
                initial: Duration::from_millis(500),
                max: Duration::from_secs(300)
            }
        );
        assert!(j.watch);
        assert_eq!(j.settle, Duration::from_secs(3));
        assert_eq!(j.after_upload, AfterUpload::MoveTo(fixture.path("archive")));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn certificate_only_login_needs_no_password() {
        let fixture = Fixture::new();
        let config = fixture.parse_ok(
            "version: 1\nendpoints:\n  acme:\n    host: h\n    user: u\n    client_cert: client.pem\n    client_key: client.key\n",
        );
        assert_eq!(config.endpoints["acme"].password, PasswordSource::None);
    }

    #[test]
    fn schedules_accept_five_or_six_fields_and_nicknames() {
        for good in [
            "30 2 * * *",
            "*/15 * * * *",
            "0 30 2 * * *",
            "@daily",
            "@hourly",
            "0 0 * * MON-FRI",
        ] {
            assert!(parse_schedule(good).is_ok(), "{good}");
        }
        for bad in ["* * *", "0 0 0 1 1 * 2030", "61 * * * *", "every day"] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
    }

    /// The keys serde knows for `T`, read from its own "unknown field" message.
    fn known_keys<T: serde::de::DeserializeOwned>() -> Vec<String> {
        let probe = crate::config::raw::parse_document("__probe__: 1\n")
            .expect("yaml")
            .expect("document");
        let collected: Collected<T> = deserialize_collecting(&probe);
        let message = &collected.errors[0].1;
        let list = message.split("expected ").nth(1).expect("expected list");
        list.trim_start_matches("one of ")
            .split([',', ' '])
            .filter(|w| w.starts_with('`'))
            .map(|w| w.trim_matches('`').to_string())
            .collect()
    }

    #[test]
    fn example_file_documents_every_key() {
        use crate::config::raw::{RawEndpoint, RawFile, RawJob, RawRetry};
        let example = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs.example.yaml"))
            .expect("jobs.example.yaml");
        let mut keys = known_keys::<RawFile>();
        keys.extend(known_keys::<RawEndpoint>());
        keys.extend(known_keys::<RawJob>());
        keys.extend(known_keys::<RawRetry>());
        keys.push("move_to".into());
        assert!(keys.len() > 30, "{keys:?}");
        for key in keys {
            assert!(
                example.contains(&format!("{key}:")),
                "jobs.example.yaml does not mention `{key}:`"
            );
        }
    }

    #[test]
    fn example_file_validates_once_its_paths_exist() {
        let mut fixture = Fixture::new();
        let creds = fixture.path("creds").display().to_string();
        fixture.env.insert("CREDENTIALS_DIRECTORY".into(), creds);
        let example = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs.example.yaml"))
            .expect("jobs.example.yaml");
        let dir = fixture.dir.path().display().to_string();
        // Longest first: /srv/outbox is a prefix of /srv/outbox-sent.
        let substitutions = [
            ("/srv/outbox-sent", "sent"),
            ("/srv/outbox", "outbox"),
            ("/srv/drops/acme", "drops"),
            ("/srv/mirror/acme", "mirror"),
            ("/srv/shared/acme", "shared"),
            ("/etc/ferry/acme-ca.pem", "ca.pem"),
            ("/etc/ferry/partner-client.pem", "client.pem"),
            ("/etc/ferry/partner-client.key", "client.key"),
            ("/var/lib/ferry", "state"),
        ];
        let mut text = example.clone();
        for (from, to) in substitutions {
            assert!(text.contains(from), "the example no longer mentions {from}");
            text = text.replace(from, &format!("{dir}/{to}"));
        }
        let config = fixture.parse_ok(&text);
        assert_eq!(
            config.endpoints.keys().collect::<Vec<_>>(),
            ["acme", "partner"]
        );
        assert_eq!(
            config.jobs.keys().collect::<Vec<_>>(),
            ["acme-nightly", "mirror", "outbox", "shared"]
        );
        assert_eq!(config.jobs["shared"].direction, Direction::Both);
        assert_eq!(config.jobs["shared"].conflict, ConflictPolicy::KeepBoth);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        let partner = &config.endpoints["partner"];
        assert_eq!(partner.port, 990);
        assert_eq!(
            partner.password,
            PasswordSource::Credential("partner-ftp".into())
        );
        let env = |name: &str| {
            fixture
                .env
                .get(name)
                .cloned()
                .ok_or(std::env::VarError::NotPresent)
        };
        assert_eq!(
            read_password_with(partner, &env),
            Ok(Some(Secret::new("from-credential")))
        );
        assert_eq!(
            config.jobs["outbox"].after_upload,
            AfterUpload::MoveTo(fixture.path("sent"))
        );
        assert!(config.jobs["mirror"].delete);
    }

    #[test]
    fn load_reads_the_file_and_resolves_paths_against_its_directory() {
        let fixture = Fixture::new();
        let path = fixture.path("jobs.yaml");
        fs::write(&path, "version: 1\nstate_dir: state\n").expect("write");
        let config = load(&path).expect("valid");
        assert_eq!(config.source, path);
        assert_eq!(config.state_dir, fixture.path("state"));

        let missing = fixture.path("absent.yaml");
        let error = load(&missing).expect_err("missing file");
        assert_eq!(
            error.to_string(),
            format!(
                "cannot read {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
    }

    #[test]
    fn read_password_reads_each_source() {
        let fixture = Fixture::new();
        let base = fixture
            .parse_ok(
                "version: 1\nendpoints:\n  acme:\n    host: h\n    user: u\n    password: lit\n",
            )
            .endpoints["acme"]
            .clone();
        fixture.secret("crlf.txt", "crlf\r\n", 0o600);
        // Only one newline is trimmed: the second is part of the value, and a password may
        // not hold one (it would end the PASS command).
        fixture.secret("two.txt", "two\n\n", 0o600);
        let file = |name: &str| PasswordSource::File(fixture.path(name));
        let shown = |name: &str| fixture.path(name).display().to_string();
        // PATH is set wherever tests run; nobody sets the long name below.
        let path_value = std::env::var("PATH").expect("PATH");
        let cases: Vec<(PasswordSource, Result<Option<Secret>, String>)> = vec![
            (PasswordSource::None, Ok(None)),
            (PasswordSource::Literal(Secret::new("lit")), Ok(Some(Secret::new("lit")))),
            (file("password.txt"), Ok(Some(Secret::new("from-file")))),
            (file("crlf.txt"), Ok(Some(Secret::new("crlf")))),
            (
                file("two.txt"),
                Err(format!(
                    "endpoint `acme`: the password from password file `{}` contains CR, LF or NUL",
                    shown("two.txt")
                )),
            ),
            (
                file("missing.txt"),
                Err(format!(
                    "endpoint `acme`: cannot read password file `{}`: No such file or directory (os error 2)",
                    shown("missing.txt")
                )),
            ),
            (PasswordSource::Env("PATH".into()), Ok(Some(Secret::new(path_value)))),
            (
                PasswordSource::Env("FERRY_TEST_SURELY_UNSET_VARIABLE".into()),
                Err("endpoint `acme`: environment variable `FERRY_TEST_SURELY_UNSET_VARIABLE` (password_env) is not set".into()),
            ),
        ];
        for (source, expected) in cases {
            let endpoint = Endpoint {
                password: source.clone(),
                ..base.clone()
            };
            assert_eq!(read_password(&endpoint), expected, "for {source:?}");
        }

        // A credential is resolved when connecting, from the environment of that moment.
        let creds = fixture.path("creds").display().to_string();
        let in_unit = |name: &str| match name {
            "CREDENTIALS_DIRECTORY" => Ok(creds.clone()),
            _ => Err(std::env::VarError::NotPresent),
        };
        let in_shell = |_: &str| Err(std::env::VarError::NotPresent);
        let credential = |name: &str| Endpoint {
            password: PasswordSource::Credential(name.into()),
            ..base.clone()
        };
        assert_eq!(
            read_password_with(&credential("partner-ftp"), &in_unit),
            Ok(Some(Secret::new("from-credential")))
        );
        assert_eq!(
            read_password_with(&credential("other-ftp"), &in_unit),
            Err(format!(
                "endpoint `acme`: cannot read credential `other-ftp` (`{creds}/other-ftp`): No such file or directory (os error 2)"
            ))
        );
        assert_eq!(
            read_password_with(&credential("partner-ftp"), &in_shell),
            Err("endpoint `acme`: password_credential `partner-ftp` needs $CREDENTIALS_DIRECTORY, which systemd sets for a service with LoadCredential=partner-ftp:...; it is not set here".into())
        );
        // Names of sources are shown, secrets never.
        assert_eq!(
            format!("{:?}", credential("partner-ftp").password),
            "Credential(partner-ftp)"
        );
        assert_eq!(
            format!("{:?}", PasswordSource::Literal(Secret::new("lit"))),
            "Literal(<redacted>)"
        );
    }
}
