//! A server that lists hostile names, or stops answering: ferry must stay inside the job's
//! local root, never send such a name back, report each one, and never hang.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::time::Duration;

use common::{Setup, endpoint, job, tree};
use ferry::config::Direction;
use support::hostile::{Behaviour, Body, HOSTILE_CONTENT, Hostile};

const HOSTILE_NAMES: &[&str] = &[
    "..",
    ".",
    "/etc/passwd",
    "../../escape.txt",
    "a/b",
    "a\\b",
    "nul\0name",
    "cr\rname",
];

fn list_line(kind: char, name: &str) -> String {
    format!("{kind}rw-r--r--    1 ftp      ftp             7 Nov 24 09:30 {name}")
}

fn mlsd_line(kind: &str, name: &str) -> String {
    format!("type={kind};size=7;modify=20261124093000; {name}")
}

async fn pull_from(server: &Hostile) -> (tempfile::TempDir, ferry::run::RunReport) {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("local-only.txt"), b"mine").unwrap();
    let mut j = job("pull", Direction::Pull, &inbox, "/data");
    j.delete = true;
    let setup = Setup::new(
        endpoint(
            server.addr(),
            server.ca_pem(),
            server.user(),
            server.password(),
        ),
        vec![j],
    );
    let report = tokio::time::timeout(Duration::from_secs(60), setup.run("pull"))
        .await
        .expect("the run must not hang")
        .expect("the run itself goes on");
    (dir, report)
}

fn assert_contained(dir: &tempfile::TempDir, server: &Hostile, report: &ferry::run::RunReport) {
    // Only the good file arrived, inside the root; nothing appeared beside the root.
    let inbox = dir.path().join("inbox");
    assert_eq!(
        std::fs::read(inbox.join("ok.txt")).unwrap(),
        HOSTILE_CONTENT
    );
    assert_eq!(
        tree(&inbox).keys().cloned().collect::<Vec<_>>(),
        vec!["local-only.txt", "ok.txt"]
    );
    assert_eq!(
        tree(dir.path())
            .keys()
            .filter(|k| !k.starts_with("inbox"))
            .count(),
        0
    );
    // Only the good name was ever sent back to the server.
    let asked = server.requested_paths();
    assert!(
        !asked.is_empty() && asked.iter().all(|p| p == "/data/ok.txt"),
        "{asked:?}"
    );
    // Each hostile name (other than the harmless `.`/`..` self-references) is reported by name.
    let problems: Vec<String> = report
        .planned
        .remote
        .problems
        .iter()
        .map(|p| p.message.clone())
        .collect();
    for name in HOSTILE_NAMES.iter().filter(|n| !matches!(**n, "." | "..")) {
        let quoted = format!("{name:?}");
        assert!(
            problems.iter().any(|m| m.contains(&quoted)),
            "{quoted} not reported in {problems:?}"
        );
    }
    // An incomplete listing blocks every delete, and the run is not a success.
    assert!(inbox.join("local-only.txt").exists());
    assert!(report.planned.plan.deletes_blocked.is_some());
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test]
async fn hostile_names_in_list_are_refused() {
    let mut lines = vec![list_line('-', "ok.txt")];
    for name in HOSTILE_NAMES {
        let kind = if matches!(*name, "." | "..") {
            'd'
        } else {
            '-'
        };
        lines.push(list_line(kind, name));
    }
    let server = Hostile::listing(lines, false).await;
    let (dir, report) = pull_from(&server).await;
    assert_contained(&dir, &server, &report);
}

#[tokio::test]
async fn hostile_names_in_mlsd_are_refused() {
    let mut lines = vec![mlsd_line("file", "ok.txt")];
    for name in HOSTILE_NAMES {
        lines.push(mlsd_line("file", name));
    }
    let server = Hostile::listing(lines, true).await;
    let (dir, report) = pull_from(&server).await;
    assert_contained(&dir, &server, &report);
}

#[tokio::test]
async fn a_server_that_stops_answering_times_out() {
    let server = Hostile::stall_after_login().await;
    let dir = tempfile::tempdir().unwrap();
    let mut ep = endpoint(
        server.addr(),
        server.ca_pem(),
        server.user(),
        server.password(),
    );
    ep.timeout = Duration::from_secs(1);
    let setup = Setup::new(ep, vec![job("pull", Direction::Pull, dir.path(), "/data")]);
    let err = tokio::time::timeout(Duration::from_secs(60), setup.run("pull"))
        .await
        .expect("must not hang")
        .expect_err("a silent server is an error");
    assert!(err.to_string().contains("timeout"), "{err}");
    assert_eq!(err.exit_code(), 3);
}

#[tokio::test]
async fn a_stalled_data_connection_times_out_and_leaves_no_partial_file() {
    let server = Hostile::stall_data().await;
    let dir = tempfile::tempdir().unwrap();
    let mut ep = endpoint(
        server.addr(),
        server.ca_pem(),
        server.user(),
        server.password(),
    );
    ep.timeout = Duration::from_secs(1);
    let setup = Setup::new(ep, vec![job("pull", Direction::Pull, dir.path(), "/data")]);
    let report = tokio::time::timeout(Duration::from_secs(60), setup.run("pull"))
        .await
        .expect("must not hang")
        .expect("listing works; the transfer fails");
    assert_eq!(report.exit_code(), 1);
    assert!(!report.execution.failures.is_empty());
    assert!(
        report
            .execution
            .failures
            .iter()
            .all(|f| f.error.to_string().contains("timeout")),
        "{:?}",
        report.execution.failures
    );
    assert!(
        tree(dir.path()).is_empty(),
        "partial file left: {:?}",
        tree(dir.path())
    );
}

#[tokio::test]
async fn refused_epsv_falls_back_to_pasv_behind_nat() {
    // The PASV reply announces 0.0.0.0. Linux would route that to loopback anyway, so this test
    // proves the fallback and that such a reply works; the rewrite rule itself is unit-tested in
    // transport::ftps (pasv_rewrite_replaces_only_unroutable_addresses).
    let server = Hostile::listing_behind_nat(vec![list_line('-', "ok.txt")]).await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(
        endpoint(
            server.addr(),
            server.ca_pem(),
            server.user(),
            server.password(),
        ),
        vec![job("pull", Direction::Pull, dir.path(), "/data")],
    );
    let report = setup.sync_ok("pull").await;
    assert_eq!(report.execution.transferred, 1);
    assert_eq!(
        std::fs::read(dir.path().join("ok.txt")).unwrap(),
        HOSTILE_CONTENT
    );
    let commands = server.commands();
    assert!(commands.iter().any(|c| c == "EPSV"), "{commands:?}");
    assert!(commands.iter().any(|c| c == "PASV"), "{commands:?}");
}

#[tokio::test]
async fn cancelling_a_run_stops_a_transfer_and_removes_its_partial_file() {
    use std::os::unix::fs::PermissionsExt;
    let server = Hostile::stall_data().await;
    let dir = tempfile::tempdir().unwrap();
    let mut ep = endpoint(
        server.addr(),
        server.ca_pem(),
        server.user(),
        server.password(),
    );
    ep.timeout = Duration::from_secs(600);
    let setup = Setup::new(ep, vec![job("pull", Direction::Pull, dir.path(), "/data")]);
    let cancel = tokio_util::sync::CancellationToken::new();
    let partial = dir.path().join(".stalled.bin.ferry-tmp");
    // Cancel only once the transfer has really started: the server got RETR and the partial
    // file exists (owner-only while it is being written).
    let watch = async {
        let started = tokio::time::timeout(Duration::from_secs(30), async {
            while server.requested_paths().is_empty() || !partial.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let mode = std::fs::metadata(&partial).map(|m| m.permissions().mode() & 0o777);
        cancel.cancel();
        (started.is_ok(), mode.ok())
    };
    let (report, (started, partial_mode)) = tokio::join!(
        tokio::time::timeout(
            Duration::from_secs(60),
            setup.run_with_cancel("pull", cancel.clone()),
        ),
        watch
    );
    assert!(started, "the transfer never started");
    assert_eq!(partial_mode, Some(0o600), "the partial file is owner-only");
    assert_eq!(server.requested_paths(), vec!["/data/stalled.bin"]);
    let report = report
        .expect("cancellation must end the run")
        .expect("the run reports");
    let fatal = report
        .execution
        .fatal
        .as_ref()
        .expect("stopped by cancellation");
    assert_eq!(fatal.kind, ferry::transport::ErrorKind::Cancelled);
    assert_eq!(report.exit_code(), 1);
    assert!(
        tree(dir.path()).is_empty(),
        "partial file left: {:?}",
        tree(dir.path())
    );
}

#[tokio::test]
async fn active_mode_announces_with_eprt_falls_back_to_port_and_stays_in_the_port_range() {
    let server = Hostile::listing_port_only(vec![list_line('-', "ok.txt")]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut ep = endpoint(
        server.addr(),
        server.ca_pem(),
        server.user(),
        server.password(),
    );
    ep.data_mode = ferry::config::DataMode::Active;
    ep.active_ports = Some(47100..=47199);
    let setup = Setup::new(ep, vec![job("pull", Direction::Pull, dir.path(), "/data")]);
    let report = setup.sync_ok("pull").await;
    assert_eq!(report.execution.transferred, 1);
    assert_eq!(
        std::fs::read(dir.path().join("ok.txt")).unwrap(),
        HOSTILE_CONTENT
    );
    let commands = server.commands();
    let eprt: Vec<_> = commands.iter().filter(|c| c.starts_with("EPRT ")).collect();
    let ports: Vec<u16> = commands
        .iter()
        .filter_map(|c| c.strip_prefix("PORT "))
        .map(|arg| {
            let n: Vec<u16> = arg.split(',').map(|p| p.parse().unwrap()).collect();
            n[4] << 8 | n[5]
        })
        .collect();
    let sessions = commands.iter().filter(|c| c.starts_with("USER ")).count();
    assert_eq!(
        eprt.len(),
        sessions,
        "each session tries EPRT once, then PORT for good: {commands:?}"
    );
    assert!(eprt[0].starts_with("EPRT |1|127.0.0.1|"), "{eprt:?}");
    assert!(
        ports.len() >= 2,
        "listing and download both in active mode: {commands:?}"
    );
    assert!(
        ports.iter().all(|p| (47100..=47199).contains(p)),
        "{ports:?}"
    );
}

fn hostile_setup(server: &Hostile, jobs: Vec<ferry::config::Job>) -> Setup {
    Setup::new(
        endpoint(
            server.addr(),
            server.ca_pem(),
            server.user(),
            server.password(),
        ),
        jobs,
    )
}

async fn run_bounded(setup: &Setup, name: &str) -> ferry::run::RunReport {
    tokio::time::timeout(Duration::from_secs(60), setup.run(name))
        .await
        .expect("the run must not hang")
        .expect("the run itself goes on")
}

#[tokio::test]
async fn endless_data_is_cut_off_at_the_listed_size_and_not_retried() {
    let server = Hostile::with(
        vec!["-rw-r--r--    1 ftp      ftp            10 Nov 24 09:30 ten.bin".to_owned()],
        false,
        Behaviour {
            endless_retr: true,
            ..Behaviour::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut j = job("pull", Direction::Pull, dir.path(), "/data");
    j.retry.attempts = 5;
    let setup = hostile_setup(&server, vec![j]);
    let report = run_bounded(&setup, "pull").await;
    assert_eq!(report.exit_code(), 1);
    let failure = &report.execution.failures[0];
    assert_eq!(failure.path.as_str(), "ten.bin");
    assert!(
        failure
            .error
            .to_string()
            .contains("more than the 10 bytes its listing gave"),
        "{}",
        failure.error
    );
    // Stopped at once, not retried: the file is not what the listing said.
    assert_eq!(server.requested_paths(), vec!["/data/ten.bin"]);
    assert!(tree(dir.path()).is_empty(), "{:?}", tree(dir.path()));
}

#[tokio::test]
async fn a_pasv_reply_naming_another_host_is_ignored() {
    let decoy: std::net::Ipv4Addr = "127.0.0.2".parse().unwrap();
    let behaviour = Behaviour {
        pasv_elsewhere: Some(decoy),
        ..Behaviour::default()
    };
    let server = Hostile::with(vec![list_line('-', "ok.txt")], false, behaviour.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let setup = hostile_setup(
        &server,
        vec![job("pull", Direction::Pull, dir.path(), "/data")],
    );
    let report = setup.sync_ok("pull").await;
    assert_eq!(report.execution.transferred, 1);
    assert_eq!(
        std::fs::read(dir.path().join("ok.txt")).unwrap(),
        HOSTILE_CONTENT
    );
    let commands = server.commands();
    assert!(commands.iter().any(|c| c == "PASV"), "{commands:?}");
    assert_eq!(server.decoy_connections(), 0, "ferry went where PASV said");

    // The same server with use_pasv_address: ferry does go to the named host (which is how
    // the test knows the decoy would have seen a connection).
    let server = Hostile::with(vec![list_line('-', "ok.txt")], false, behaviour).await;
    let dir = tempfile::tempdir().unwrap();
    let mut ep = endpoint(
        server.addr(),
        server.ca_pem(),
        server.user(),
        server.password(),
    );
    ep.use_pasv_address = true;
    ep.timeout = Duration::from_secs(2);
    let setup = Setup::new(ep, vec![job("pull", Direction::Pull, dir.path(), "/data")]);
    let _ = tokio::time::timeout(Duration::from_secs(60), setup.run("pull")).await;
    assert!(
        server.decoy_connections() > 0,
        "the opt-in follows the reply"
    );
}

#[tokio::test]
async fn a_huge_listing_line_is_refused_with_a_short_quote_and_blocks_deletes() {
    let server = Hostile::with(
        vec![
            list_line('-', "ok.txt"),
            "drwxr-xr-x    2 ftp      ftp          4096 Nov 24 09:30 sub".to_owned(),
        ],
        false,
        Behaviour {
            dirs: vec![("/data/sub".to_owned(), Body::EndlessLine)],
            ..Behaviour::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("local-only.txt"), b"mine").unwrap();
    let mut j = job("pull", Direction::Pull, dir.path(), "/data");
    j.delete = true;
    let setup = hostile_setup(&server, vec![j]);
    let report = run_bounded(&setup, "pull").await;
    let problems = &report.planned.remote.problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    let message = &problems[0].message;
    assert!(
        message.contains("LIST /data/sub")
            && message.contains("longer than 16384 bytes (limits.line_length)"),
        "{message}"
    );
    assert!(message.len() < 400, "quotes a short prefix only: {message}");
    assert!(
        dir.path().join("local-only.txt").exists(),
        "deletes are blocked"
    );
    assert!(report.planned.plan.deletes_blocked.is_some());
    assert_eq!(report.exit_code(), 1);
    // The rest of the tree still came.
    assert_eq!(
        std::fs::read(dir.path().join("ok.txt")).unwrap(),
        HOSTILE_CONTENT
    );
}

#[tokio::test]
async fn an_endless_directory_depth_stops_at_the_limit() {
    // Every directory lists a directory `a`: a tree without a bottom.
    let server = Hostile::with(
        vec!["drwxr-xr-x    2 ftp      ftp          4096 Nov 24 09:30 a".to_owned()],
        false,
        Behaviour::default(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("local-only.txt"), b"mine").unwrap();
    let mut j = job("pull", Direction::Pull, dir.path(), "/data");
    j.delete = true;
    let setup = hostile_setup(&server, vec![j]);
    let report = run_bounded(&setup, "pull").await;
    let problems = &report.planned.remote.problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]
            .message
            .contains("more than 64 directory levels deep (limits.max_depth)"),
        "{problems:?}"
    );
    // Named: the directory where the walk stopped, 65 levels of `a` down.
    let deepest = vec!["a"; 65].join("/");
    assert!(
        problems[0].message.starts_with(&format!("{deepest}: ")),
        "the problem names the directory: {problems:?}"
    );
    let lists = server
        .commands()
        .iter()
        .filter(|c| c.as_str() == "LIST")
        .count();
    assert_eq!(
        lists, 65,
        "the root and 64 levels below it are listed, no more"
    );
    assert!(
        dir.path().join("local-only.txt").exists(),
        "deletes are blocked"
    );
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test]
async fn an_empty_root_listing_never_empties_the_local_side() {
    let server = Hostile::with(Vec::new(), false, Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..10 {
        std::fs::write(dir.path().join(format!("f{i}.csv")), b"data").unwrap();
    }
    std::fs::create_dir_all(dir.path().join("d/e")).unwrap();
    std::fs::write(dir.path().join("d/e/g.csv"), b"data").unwrap();
    let before = tree(dir.path());
    assert_eq!(before.len(), 13);
    let mut j = job("pull", Direction::Pull, dir.path(), "/data");
    j.delete = true;
    let setup = hostile_setup(&server, vec![j]);
    let report = run_bounded(&setup, "pull").await;
    assert_eq!(tree(dir.path()), before, "nothing deleted");
    let why = report
        .planned
        .plan
        .deletes_blocked
        .clone()
        .unwrap_or_default();
    assert!(why.contains("the remote root is empty"), "{why}");
    assert_eq!(
        report.planned.plan.withheld.len(),
        13,
        "the would-be deletes are listed"
    );
    assert_eq!(report.execution.deleted, 0);
    assert_eq!(report.exit_code(), 1, "a blocked mirror is not a success");
}

/// A server that quotes the password in its refusal: the password appears nowhere, whatever
/// the log level or format, and not in the state database.
#[tokio::test]
async fn a_reply_echoing_the_password_is_redacted_everywhere() {
    const WRONG: &str = "Wr0ng-Secret-Passw0rd";
    let server = Hostile::with(
        vec![list_line('-', "ok.txt")],
        false,
        Behaviour {
            echo_password: true,
            ..Behaviour::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("jobs.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nstate_dir: {}\nendpoints:\n  h:\n    host: 127.0.0.1\n    port: {}\n    user: {}\n    password_env: FERRY_TEST_WRONG\n    ca_file: {}\n    timeout: 5s\njobs:\n  pull:\n    endpoint: h\n    direction: pull\n    local: {}\n    remote: /data\n",
            state.display(),
            server.addr().port(),
            server.user(),
            server.ca_pem().display(),
            inbox.display()
        ),
    )
    .unwrap();
    let mut outputs = Vec::new();
    for (args, log) in [
        (vec!["sync", "pull"], "trace"),
        (vec!["--log-format", "json", "sync", "pull"], "trace"),
        (vec!["plan", "pull"], "trace"),
        (
            vec!["--log-format", "json", "plan", "pull", "--json"],
            "suppaftp::async_ftp=trace",
        ),
        (vec!["check", "--connect"], "trace"),
        (
            vec!["sync", "pull"],
            "suppaftp::async_ftp=trace,ferry=trace",
        ),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(&args)
            .arg("--config")
            .arg(&config)
            .env_remove("FERRY_CONFIG")
            .env("FERRY_LOG", log)
            .env("FERRY_TEST_WRONG", WRONG)
            .output()
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(3), "{args:?}: {text}");
        outputs.push((args, text));
    }
    for (args, text) in &outputs {
        assert!(
            !text.contains(WRONG),
            "{args:?} leaked the password:\n{text}"
        );
    }
    // The refusal itself is shown, redacted.
    assert!(
        outputs[0]
            .1
            .contains("530 Login incorrect: password <redacted>"),
        "{}",
        outputs[0].1
    );
    // The state database stores the run's message redacted too; nothing else in the state
    // directory (the locks naming their holders, say) holds it either.
    let mut dirs = vec![state.clone()];
    let mut files = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(WRONG.len()).any(|w| w == WRONG.as_bytes()),
                "{} holds the password",
                path.display()
            );
        }
    }
    assert!(files > 0, "no state files were checked");
}

/// A name and a banner carrying terminal escapes are shown escaped: in the plan, its JSON, the
/// summary of failures, `check --connect` and the state database's run messages.
#[tokio::test]
async fn names_and_banners_with_terminal_escapes_are_shown_escaped() {
    let evil = "evil\x1b[2J\u{9b}31m\u{202e}name.txt";
    let server = Hostile::with(vec![list_line('-', evil)], false, Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let setup = hostile_setup(
        &server,
        vec![job("pull", Direction::Pull, dir.path(), "/data")],
    );
    let report = setup.sync_ok("pull").await;
    // The file itself keeps its exact name on disk.
    assert_eq!(
        std::fs::read(dir.path().join(evil)).unwrap(),
        HOSTILE_CONTENT
    );
    let mut shown = Vec::new();
    ferry::report::print_plan("pull", &report.planned, &mut shown).unwrap();
    let json = ferry::report::plan_json("pull", &report.planned).to_string();
    let mut check = Vec::new();
    ferry::check::connect_all(&setup.config, &mut check).await;
    let mut all = String::from_utf8(shown).unwrap();
    all.push_str(&json);
    all.push_str(&String::from_utf8(check).unwrap());
    all.push_str(&ferry::report::summary_line(&report));
    for raw in ['\x1b', '\u{9b}', '\u{202e}'] {
        assert!(!all.contains(raw), "{raw:?} printed raw:\n{all}");
    }
    assert!(
        all.contains("evil\\x1b[2J\\u{9b}31m\\u{202e}name.txt"),
        "{all}"
    );
    assert!(
        all.contains("banner: 220 hostile \\x1b[41mtest\\x1b[0m server"),
        "{all}"
    );
    assert!(
        all.contains("certificate: verified against ca_file")
            && all.contains("with hostname and expiry"),
        "check --connect says how the certificate is checked: {all}"
    );
}

#[tokio::test]
async fn a_directory_listing_more_entries_than_the_limit_is_refused() {
    let lines: Vec<String> = (0..40)
        .map(|i| list_line('-', &format!("f{i:02}.txt")))
        .collect();
    let server = Hostile::with(lines, false, Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("local-only.txt"), b"mine").unwrap();
    let mut ep = endpoint(
        server.addr(),
        server.ca_pem(),
        server.user(),
        server.password(),
    );
    ep.limits.max_entries = 10;
    let mut j = job("pull", Direction::Pull, dir.path(), "/data");
    j.delete = true;
    let setup = Setup::new(ep, vec![j]);
    let err = tokio::time::timeout(Duration::from_secs(60), setup.run("pull"))
        .await
        .expect("must not hang")
        .expect_err("the root's listing is over the limit");
    let text = err.to_string();
    assert!(
        text.contains("LIST /data")
            && text.contains("more than 10 entries (limits.entries_per_dir)"),
        "{text}"
    );
    // Nothing written, and with `delete: true` nothing deleted either.
    let left: Vec<String> = tree(dir.path()).into_keys().collect();
    assert_eq!(left, vec!["local-only.txt".to_owned()]);
}

/// A server that answers on the control connection instead of carrying the data (426 after
/// dropping the passive connection, 425 instead of connecting back in active mode): ferry
/// reports that reply, at once, not a bare handshake error or a timeout.
#[tokio::test]
async fn a_reply_on_the_control_connection_ends_the_data_wait_at_once() {
    for active in [false, true] {
        let behaviour = Behaviour {
            abort_data_after_150: true,
            ..Behaviour::default()
        };
        let server = Hostile::with(vec![list_line('-', "f.bin")], false, behaviour).await;
        if active {
            server.port_only_mode();
        }
        let dir = tempfile::tempdir().unwrap();
        let mut ep = endpoint(
            server.addr(),
            server.ca_pem(),
            server.user(),
            server.password(),
        );
        ep.timeout = Duration::from_secs(30);
        if active {
            ep.data_mode = ferry::config::DataMode::Active;
        }
        let mut j = job("pull", Direction::Pull, dir.path(), "/data");
        j.retry.attempts = 1;
        let setup = Setup::new(ep, vec![j]);
        let started = std::time::Instant::now();
        let report = run_bounded(&setup, "pull").await;
        let elapsed = started.elapsed();
        let e = report.execution.failures[0].error.to_string();
        let want = if active {
            "425 Can't open data connection."
        } else {
            "426 Connection closed"
        };
        assert!(e.contains(want), "active {active}: {e}");
        assert!(
            elapsed < Duration::from_secs(10),
            "active {active}: took {elapsed:?}"
        );
        assert!(tree(dir.path()).is_empty());
    }
}

/// A run that fails on a server's reply carrying terminal escapes records its reason in the run
/// history with every control character escaped, as `ferry status` then shows it.
#[tokio::test]
async fn a_failed_runs_reason_is_stored_with_control_characters_escaped() {
    let server = Hostile::with(
        vec![list_line('-', "ok.txt")],
        false,
        Behaviour {
            refuse_login: Some("530 No \x1b[2J\u{9b}31mentry \u{202e}today.".to_owned()),
            ..Behaviour::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let setup = hostile_setup(
        &server,
        vec![job("pull", Direction::Pull, dir.path(), "/data")],
    );
    let err = tokio::time::timeout(Duration::from_secs(60), setup.run("pull"))
        .await
        .expect("must not hang")
        .expect_err("the login is refused");
    let row = setup
        .store
        .call(|s| s.last_run("pull"))
        .await
        .unwrap()
        .expect("the failed run is recorded");
    assert_eq!(row.outcome.as_deref(), Some("failed"), "{row:?}");
    let message = row.message.expect("a failed run records why");
    let shown = err.to_string();
    for raw in ['\x1b', '\u{9b}', '\u{202e}'] {
        assert!(!message.contains(raw), "{raw:?} stored raw: {message:?}");
        assert!(!shown.contains(raw), "{raw:?} shown raw: {shown:?}");
    }
    assert!(
        message.contains("530 No \\x1b[2J\\u{9b}31mentry \\u{202e}today."),
        "{message}"
    );
}

/// A reply that never ends, on one line or in endless continuation lines, is cut off at the
/// reply bound (256 KiB): the run fails with a short message, it does not read on or hang.
#[tokio::test]
async fn an_endless_reply_is_cut_off_at_the_reply_bound() {
    for multiline in [false, true] {
        let server = Hostile::with(
            vec![list_line('-', "ok.txt")],
            false,
            Behaviour {
                endless_reply_to: Some(("TYPE", multiline)),
                ..Behaviour::default()
            },
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("local-only.txt"), b"mine").unwrap();
        let mut j = job("pull", Direction::Pull, dir.path(), "/data");
        j.delete = true;
        let setup = hostile_setup(&server, vec![j]);
        let outcome = tokio::time::timeout(Duration::from_secs(60), setup.run("pull"))
            .await
            .expect("must not hang");
        assert!(
            server.commands().iter().any(|c| c.starts_with("TYPE")),
            "multiline {multiline}: the endless reply was sent: {:?}",
            server.commands()
        );
        let text = match outcome {
            Err(e) => e.to_string(),
            Ok(report) => {
                assert_eq!(report.exit_code(), 1, "multiline {multiline}");
                report
                    .execution
                    .fatal
                    .as_ref()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| format!("{:?}", report.execution.failures))
            }
        };
        assert!(
            text.contains("reply larger than 262144 bytes"),
            "multiline {multiline}: {text}"
        );
        assert!(text.len() < 400, "a short message: {text}");
        let left: Vec<String> = tree(dir.path()).into_keys().collect();
        assert_eq!(left, vec!["local-only.txt".to_owned()], "nothing touched");
    }
}

/// The data connection is open but silent (no TLS handshake, no byte) and the server says why
/// on the control connection, with each of the replies that can come there: the wait ends at
/// once with that reply, not after the 30 s timeout, and the file is retried (transient).
#[tokio::test]
async fn a_reply_during_a_silent_data_connection_ends_the_wait_with_that_reply() {
    for text in [
        "425 Can't open data connection.",
        "426 Connection closed; transfer aborted.",
        "450 Requested file action not taken.",
        "451 Requested action aborted: local error in processing.",
    ] {
        let server = Hostile::with(
            vec![list_line('-', "f.bin")],
            false,
            Behaviour {
                hold_data_then_reply: Some(text),
                ..Behaviour::default()
            },
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut ep = endpoint(
            server.addr(),
            server.ca_pem(),
            server.user(),
            server.password(),
        );
        ep.timeout = Duration::from_secs(30);
        let mut j = job("pull", Direction::Pull, dir.path(), "/data");
        j.retry.attempts = 2;
        let setup = Setup::new(ep, vec![j]);
        let started = std::time::Instant::now();
        let report = run_bounded(&setup, "pull").await;
        let elapsed = started.elapsed();
        let failures = &report.execution.failures;
        assert_eq!(failures.len(), 1, "{text}: {failures:?}");
        let e = failures[0].error.to_string();
        assert!(e.contains(text), "{text}: {e}");
        assert_eq!(
            failures[0].error.kind,
            ferry::transport::ErrorKind::Transient,
            "{text}"
        );
        let retrs = server
            .commands()
            .iter()
            .filter(|c| c.starts_with("RETR"))
            .count();
        assert_eq!(retrs, 2, "{text}: retried once, as `attempts: 2` says");
        assert!(
            elapsed < Duration::from_secs(10),
            "{text}: took {elapsed:?}"
        );
        assert!(tree(dir.path()).is_empty());
    }
}
