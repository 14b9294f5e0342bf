//! A server that lists hostile names, or stops answering: ferry must stay inside the job's
//! local root, never send such a name back, report each one, and never hang.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::time::Duration;

use common::{Setup, endpoint, job, tree};
use ferry::config::Direction;
use support::hostile::{HOSTILE_CONTENT, Hostile};

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

async fn pull_from(server: &Hostile) -> (tempfile::TempDir, ferry::job::RunReport) {
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

fn assert_contained(dir: &tempfile::TempDir, server: &Hostile, report: &ferry::job::RunReport) {
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
    let trigger = cancel.clone();
    tokio::spawn(async move {
        // Long enough to be inside the stalled RETR.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        trigger.cancel();
    });
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        setup.run_with_cancel("pull", cancel),
    )
    .await
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
