//! `ferry check --connect`: log in to each endpoint once, say what the server supports, and
//! check every job's remote root on that session.
//!
//! What it does not do: change anything on a server (a push job's missing root is reported,
//! not created: the first `sync` creates it), transfer files, or look deeper than each root's
//! top directory. How it fits: `main.rs` calls [`connect_all`] once the job file is valid; the
//! roots are listed through the same [`Transport`] a sync uses, so what it reports is what a
//! sync meets. Listing a root also opens a data connection, which tells whether the data
//! channel resumed the control connection's TLS session.

use std::io::Write;

use crate::config::{Config, Direction, Endpoint, Job, TlsMode};
use crate::path::RelPath;
use crate::transport::ftps::FtpsConnector;
use crate::transport::{Capabilities, Connector, DirListing, ErrorKind, Transport, TransportError};

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Describe capabilities as `ferry check --connect` prints them.
pub fn describe_capabilities(caps: &Capabilities, tls: TlsMode) -> Vec<String> {
    let mut lines = Vec::new();
    match (&caps.tls_version, tls) {
        (_, TlsMode::None) => lines.push("TLS: none (cleartext FTP)".to_owned()),
        (Some(v), _) => match &caps.tls_cipher_suite {
            Some(suite) => lines.push(format!("TLS: {v}, {suite}")),
            None => lines.push(format!("TLS: {v}")),
        },
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
    lines.push(format!(
        "MFMT: {}",
        if caps.mfmt {
            "yes (uploads keep their local modification time)"
        } else {
            "no (uploaded files show the time of the upload)"
        }
    ));
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

/// How one endpoint's check ended, worst last (the run's exit code is the worst one's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Fine,
    /// A root that a sync could not read (a pull job's missing root, a refused listing).
    RootProblem,
    /// No session: connecting, logging in or TLS failed, or the password could not be read.
    NoSession,
}

impl Outcome {
    fn exit_code(self) -> i32 {
        match self {
            Outcome::Fine => 0,
            Outcome::RootProblem => 1,
            Outcome::NoSession => 3,
        }
    }
}

/// Log in to every endpoint once and check each job's remote root on that session, printing
/// one block per endpoint to `out`.
///
/// Returns the exit code:
/// - 3 when any endpoint could not be used: connecting, logging in or the TLS handshake failed
///   (a refused certificate included), its password could not be read (a credential that only
///   the systemd unit provides, say), or a listing met a TLS or authentication refusal;
/// - else 1 when a job's root cannot be read: a pull job's root is missing, or a listing was
///   refused or failed;
/// - else 0. A push job's missing root is not a problem: the first sync creates it.
///
/// One endpoint's failure is printed and the other endpoints are still checked.
pub async fn connect_all(config: &Config, out: &mut dyn Write) -> i32 {
    let mut worst = Outcome::Fine;
    for (name, endpoint) in &config.endpoints {
        let jobs: Vec<&Job> = config
            .jobs
            .values()
            .filter(|j| &j.endpoint == name)
            .collect();
        worst = worst.max(check_endpoint(name, endpoint, &jobs, out).await);
    }
    worst.exit_code()
}

/// Write one line of the report. A stdout that cannot be written to cannot be told so on
/// stdout; the exit code still carries the outcome.
fn say(out: &mut dyn Write, line: &str) {
    let _ = writeln!(out, "{line}");
}

async fn check_endpoint(
    name: &str,
    endpoint: &Endpoint,
    jobs: &[&Job],
    out: &mut dyn Write,
) -> Outcome {
    say(
        out,
        &format!("endpoint `{name}` ({}:{}):", endpoint.host, endpoint.port),
    );
    let password = match crate::config::read_password(endpoint) {
        Ok(p) => p,
        Err(e) => {
            say(out, &format!("  error: {e}"));
            return Outcome::NoSession;
        }
    };
    // Each job's root is set on the session before it is listed; "/" is only the start.
    let connector = match FtpsConnector::new(endpoint.clone(), "/", password) {
        Ok(c) => c,
        Err(e) => {
            say(out, &format!("  error: {e}"));
            return Outcome::NoSession;
        }
    };
    let mut session = match connector.connect().await {
        Ok(s) => s,
        Err(e) => {
            say(out, &format!("  error: {e}"));
            return Outcome::NoSession;
        }
    };
    say(out, &format!("  logged in as {}", endpoint.user));
    if endpoint.tls != TlsMode::None {
        say(
            out,
            &format!(
                "  certificate: {}",
                crate::transport::ftps::tls::describe_trust(endpoint)
            ),
        );
    }
    let mut outcome = Outcome::Fine;
    if jobs.is_empty() {
        // No job to check, but one listing still tests the data channel.
        if let Err(e) = session.list_dir(&RelPath::root()).await {
            say(out, &format!("  listing / failed: {e}"));
            outcome = outcome.max(listing_outcome(&e));
        }
    }
    let mut capabilities = session.capabilities().clone();
    let mut session = Some(session);
    for job in jobs {
        let current = match session.as_mut() {
            Some(s) => s,
            None => match connector.connect().await {
                Ok(s) => session.insert(s),
                Err(e) => {
                    say(out, &format!("  error: {e}"));
                    outcome = Outcome::NoSession;
                    break;
                }
            },
        };
        let (line, root_outcome, usable) = check_root(current.as_mut(), job).await;
        capabilities = current.capabilities().clone();
        say(out, &format!("  {line}"));
        outcome = outcome.max(root_outcome);
        if !usable {
            // After a timeout or a lost connection the session may be out of step with the
            // server: the next job gets a new one.
            session = None;
        }
    }
    for line in describe_capabilities(&capabilities, endpoint.tls) {
        say(out, &format!("  {line}"));
    }
    if let Some(mut s) = session {
        s.quit().await;
    }
    outcome
}

/// List one job's remote root: the line to print, what it means for the exit code, and
/// whether the session can still be used.
async fn check_root(session: &mut dyn Transport, job: &Job) -> (String, Outcome, bool) {
    let direction = job.direction.as_str();
    let place = format!("job `{}` ({direction}): {}", job.name, job.remote);
    session.set_root(&job.remote);
    match session.list_dir(&RelPath::root()).await {
        Ok(listing) => {
            let mut line = format!("{place}: ok, {}", count_entries(&listing));
            if let Some(clock) = list_clock(session, &listing).await {
                line.push_str(&format!("; {clock}"));
            }
            if job.direction != Direction::Pull {
                line.push_str(&format!("; {}", probe_renames(session).await));
            }
            (line, Outcome::Fine, true)
        }
        // A 5xx on the root: it does not exist (or cannot be listed). A push creates it, as
        // `sync` does; a pull has nothing to read.
        Err(e) if e.kind == ErrorKind::Permanent && job.direction != Direction::Pull => (
            format!("{place}: does not exist yet; the first sync creates it"),
            Outcome::Fine,
            true,
        ),
        Err(e) => {
            let usable = e.kind == ErrorKind::Permanent;
            (
                format!("{place}: error: {}", e.message),
                listing_outcome(&e),
                usable,
            )
        }
    }
}

/// Whether ferry can rename in a push job's root, and onto an existing name: probed with two
/// small files under temporary names (`.ferry-check-N-a.ferry-tmp`, which no sync takes),
/// removed afterwards. Servers differ here (IIS and FileZilla Server refuse to rename onto a
/// file; write-only drop boxes refuse renames and deletes), and a sync adapts; this says how.
async fn probe_renames(session: &mut dyn Transport) -> String {
    let name = |tag: &str| {
        RelPath::parse(&format!(
            ".ferry-check-{}-{tag}{}",
            std::process::id(),
            crate::execute::TEMP_SUFFIX
        ))
    };
    let (Ok(a), Ok(b)) = (name("a"), name("b")) else {
        return "renames not probed".to_owned();
    };
    let body = b"ferry check --connect: rename probe\n";
    let mut leftovers = Vec::new();
    let mut times = "";
    let verdict = async {
        if let Err(e) = session.upload(&a, &mut &body[..], &|_| {}).await {
            return format!("cannot write here ({})", e.message);
        }
        // How an upload gets its modification time here.
        let mfmt = session.capabilities().mfmt;
        let when =
            crate::listing::Mtime::from_secs(1_700_000_000, crate::listing::Precision::Second);
        times = match session.set_modified(&a, when).await {
            Ok(true) if mfmt => "; modification times: set with MFMT",
            Ok(true) => "; modification times: set with SITE UTIME",
            Ok(false) => "; modification times: not settable here (uploads show the upload time)",
            Err(_) => "; modification times: refused here (uploads show the upload time)",
        };
        if let Err(e) = session.replace(&a, &b).await {
            leftovers.push(a.clone());
            return format!(
                "the server refuses renames ({}): uploads go straight to final names \
                 (`upload: direct` says so from the start)",
                e.message
            );
        }
        leftovers.push(b.clone());
        if let Err(e) = session.upload(&a, &mut &body[..], &|_| {}).await {
            return format!(
                "renames: yes; a second probe file was refused ({})",
                e.message
            );
        }
        leftovers.push(a.clone());
        match session.replace(&a, &b).await {
            Ok(crate::transport::Replaced::Renamed) => {
                leftovers.retain(|p| p != &a);
                "renames: yes, onto existing names too".to_owned()
            }
            Ok(crate::transport::Replaced::DeletedFirst) => {
                leftovers.retain(|p| p != &a);
                "renames: yes, but not onto an existing name: an update deletes the old file \
                 first (for a moment there is none)"
                    .to_owned()
            }
            Err(e) => format!(
                "renames: yes, but not onto an existing name ({})",
                e.message
            ),
        }
    }
    .await;
    let mut left = Vec::new();
    for p in leftovers {
        if session.delete_file(&p).await.is_err() {
            left.push(p.to_string());
        }
    }
    if left.is_empty() {
        format!("{verdict}{times} (probed with files under temporary names, removed)")
    } else {
        format!(
            "{verdict}{times} (probe files the server would not let ferry remove: {})",
            left.join(", ")
        )
    }
}

/// For a server that lists with LIST (times to the minute, in whatever zone the server keeps),
/// compare one file's listed time with its MDTM (UTC by RFC 3659; vsftpd's `use_localtime`
/// shifts both): how far LIST times are from MDTM's. ferry keeps the listed values in state, so
/// an offset never makes it send a file again; this says what a partner reading the listing
/// sees.
async fn list_clock(session: &mut dyn Transport, listing: &DirListing) -> Option<String> {
    if session.capabilities().mlsd || !session.capabilities().mdtm {
        return None;
    }
    let file = listing.entries.iter().find(|e| {
        e.entry.kind == crate::listing::EntryKind::File
            && e.entry
                .mtime
                .is_some_and(|m| m.precision == crate::listing::Precision::Minute)
    })?;
    let listed = file.entry.mtime?;
    let path = RelPath::parse(&file.name).ok()?;
    let exact = session.modified(&path).await.ok()??;
    Some(describe_offset(
        listed.nanos / 1_000_000_000 - exact.nanos / 1_000_000_000,
    ))
}

/// `listed - exact` seconds, told to the quarter hour (LIST shows minutes only).
pub fn describe_offset(seconds: i64) -> String {
    let quarter = 15 * 60;
    let rounded = (seconds as f64 / quarter as f64).round() as i64 * quarter;
    if rounded == 0 {
        return "LIST times agree with MDTM".to_owned();
    }
    let sign = if rounded < 0 { '-' } else { '+' };
    let (h, m) = (rounded.abs() / 3600, rounded.abs() % 3600 / 60);
    format!(
        "LIST times are MDTM{sign}{h:02}:{m:02} (a server clock or zone; kept as listed, nothing is sent again for it)"
    )
}

/// A failed listing is a root problem, unless the server refused TLS or the login.
fn listing_outcome(e: &TransportError) -> Outcome {
    match e.kind {
        ErrorKind::Tls | ErrorKind::Auth => Outcome::NoSession,
        _ => Outcome::RootProblem,
    }
}

/// `N entries` in a listing's top directory (`.` and `..` aside, which some LIST output
/// carries), and the lines that could not be understood, if any.
fn count_entries(listing: &DirListing) -> String {
    let n = listing
        .entries
        .iter()
        .filter(|e| e.name != "." && e.name != "..")
        .count();
    let mut text = match n {
        1 => "1 entry".to_owned(),
        n => format!("{n} entries"),
    };
    match listing.unparsed.len() {
        0 => {}
        1 => text.push_str(", 1 line not understood"),
        m => text.push_str(&format!(", {m} lines not understood")),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::{Entry, RawEntry};

    fn listing(names: &[&str], unparsed: usize) -> DirListing {
        DirListing {
            entries: names
                .iter()
                .map(|n| RawEntry {
                    name: (*n).to_owned(),
                    entry: Entry::dir(),
                })
                .collect(),
            unparsed: (0..unparsed).map(|i| format!("line {i}")).collect(),
        }
    }

    #[test]
    fn entries_are_counted_without_dot_and_dot_dot() {
        let cases: &[(&[&str], usize, &str)] = &[
            (&[], 0, "0 entries"),
            (&[".", ".."], 0, "0 entries"),
            (&["a"], 0, "1 entry"),
            (&[".", "a", "..", "b"], 0, "2 entries"),
            (&["a", "b"], 1, "2 entries, 1 line not understood"),
            (&["a"], 3, "1 entry, 3 lines not understood"),
        ];
        for (names, unparsed, want) in cases {
            assert_eq!(
                count_entries(&listing(names, *unparsed)),
                *want,
                "{names:?}"
            );
        }
    }

    #[test]
    fn a_list_clock_offset_is_told_to_the_quarter_hour() {
        assert_eq!(describe_offset(0), "LIST times agree with MDTM");
        assert_eq!(describe_offset(-40), "LIST times agree with MDTM");
        assert!(describe_offset(3600 - 20).starts_with("LIST times are MDTM+01:00 (a server"));
        assert!(describe_offset(-5 * 3600).starts_with("LIST times are MDTM-05:00"));
        assert!(describe_offset(5 * 3600 + 1800).starts_with("LIST times are MDTM+05:30"));
    }

    #[test]
    fn the_worst_outcome_sets_the_exit_code() {
        let cases = [
            (vec![], 0),
            (vec![Outcome::Fine, Outcome::Fine], 0),
            (vec![Outcome::RootProblem, Outcome::Fine], 1),
            (vec![Outcome::NoSession, Outcome::RootProblem], 3),
            (vec![Outcome::Fine, Outcome::NoSession], 3),
        ];
        for (outcomes, want) in cases {
            let worst = outcomes.iter().copied().fold(Outcome::Fine, Outcome::max);
            assert_eq!(worst.exit_code(), want, "{outcomes:?}");
        }
    }

    #[test]
    fn a_listing_refused_for_tls_or_login_counts_as_no_session() {
        let cases = [
            (ErrorKind::Permanent, Outcome::RootProblem),
            (ErrorKind::Transient, Outcome::RootProblem),
            (ErrorKind::Busy, Outcome::RootProblem),
            (ErrorKind::Tls, Outcome::NoSession),
            (ErrorKind::Auth, Outcome::NoSession),
        ];
        for (kind, want) in cases {
            let e = TransportError::new(kind, "MLSD /data", "refused");
            assert_eq!(listing_outcome(&e), want, "{kind:?}");
        }
    }
}
