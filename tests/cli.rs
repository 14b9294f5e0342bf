//! The `ferry` binary end to end: job file on disk, embedded FTPS server on loopback, exit codes
//! and output as a user or a script sees them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use ferry::embedded::{CertKind, EmbeddedOptions, EmbeddedServer};

/// The server's password: it must never show up in any output.
const SECRET: &str = "s3cret-Pa55-ferry";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn ferry(args: &[&str], config: &Path) -> Run {
    ferry_with_env(args, config, &[]).await
}

async fn ferry_with_env(args: &[&str], config: &Path, env: &[(&str, &str)]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("FERRY_TEST_PASSWORD", SECRET)
        .env_remove("FERRY_CONFIG")
        .env_remove("FERRY_LOG")
        // After the removals, so that a test's own FERRY_LOG is kept.
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn job_file(
    dir: &Path,
    server: &EmbeddedServer,
    outbox: &Path,
    inbox: &Path,
) -> std::path::PathBuf {
    let text = format!(
        "version: 1
state_dir: {state}
endpoints:
  local:
    host: 127.0.0.1
    port: {port}
    user: ferry
    password_env: FERRY_TEST_PASSWORD
    ca_file: {ca}
jobs:
  push:
    endpoint: local
    direction: push
    local: {outbox}
    remote: /data
    verify: hash
  pull:
    endpoint: local
    direction: pull
    local: {inbox}
    remote: /data
    ready: immediate
",
        state = dir.join("state").display(),
        port = server.addr().port(),
        ca = server.ca_pem().display(),
        outbox = outbox.display(),
        inbox = inbox.display(),
    );
    let path = dir.join("jobs.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn start(dir: &Path, cert: CertKind) -> EmbeddedServer {
    std::fs::create_dir_all(dir.join("server/data")).unwrap();
    std::fs::create_dir_all(dir.join("pki")).unwrap();
    EmbeddedServer::start(
        &dir.join("server"),
        &dir.join("pki"),
        EmbeddedOptions {
            passive_ports: support::embedded_passive_ports(),
            cert,
            password: SECRET.to_owned(),
            ..EmbeddedOptions::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn sync_plan_check_and_status_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), CertKind::Valid).await;
    let (outbox, inbox) = (dir.path().join("outbox"), dir.path().join("inbox"));
    std::fs::create_dir_all(outbox.join("sub dir")).unwrap();
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(outbox.join("sub dir/a.csv"), b"a,b\n").unwrap();
    std::fs::write(outbox.join("empty"), b"").unwrap();
    let config = job_file(dir.path(), &server, &outbox, &inbox);

    let check = ferry(&["check"], &config).await;
    assert_eq!(check.code, 0, "{}", check.stderr);

    let plan = ferry(&["plan", "push", "--json"], &config).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let kinds: Vec<_> = json["plan"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} {} ({})",
                a["kind"].as_str().unwrap(),
                a["path"].as_str().unwrap(),
                a["reason"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "make_remote_dir sub dir (missing on remote)",
            "upload empty (missing on remote)",
            "upload sub dir/a.csv (missing on remote)"
        ]
    );
    assert!(
        !dir.path().join("server/data/empty").exists(),
        "plan changed the server"
    );

    let sync = ferry(&["sync", "push"], &config).await;
    assert_eq!(sync.code, 0, "{}", sync.stderr);
    assert!(
        sync.stdout.contains("job `push`: ok in ")
            && sync
                .stdout
                .contains("2 transferred (4 B), 0 skipped, 0 failed, 2 verified"),
        "{}",
        sync.stdout
    );
    let sync = ferry(&["sync", "--all"], &config).await;
    assert_eq!(sync.code, 0, "{}", sync.stderr);
    assert!(
        sync.stdout.contains("job `push`: ok")
            && sync.stdout.contains("0 transferred (0 B), 2 skipped"),
        "{}",
        sync.stdout
    );
    assert!(
        sync.stdout.contains("job `pull`: ok") && sync.stdout.contains("2 transferred"),
        "{}",
        sync.stdout
    );
    assert_eq!(
        std::fs::read(inbox.join("sub dir/a.csv")).unwrap(),
        b"a,b\n"
    );

    let status = ferry(&["status"], &config).await;
    assert_eq!(status.code, 0);
    assert!(
        status.stdout.contains("pull: last run") && status.stdout.contains("ok, 2 transferred"),
        "{}",
        status.stdout
    );
    // The password never shows up in any output, not even in the most detailed logs.
    std::fs::write(outbox.join("late.txt"), b"late").unwrap();
    let traced = ferry_with_env(&["sync", "push"], &config, &[("FERRY_LOG", "trace")]).await;
    assert_eq!(traced.code, 0, "{}", traced.stderr);
    assert!(
        traced.stderr.contains("Signin in with user"),
        "suppaftp debug logs are on: {}",
        traced.stderr
    );
    // Likewise plan, check --connect and JSON logs, with suppaftp's own trace asked for by name.
    let mut more = Vec::new();
    for (args, log) in [
        (vec!["plan", "push"], "trace"),
        (
            vec!["--log-format", "json", "plan", "push", "--json"],
            "trace",
        ),
        (
            vec!["check", "--connect"],
            "suppaftp::async_ftp=trace,trace",
        ),
        (
            vec!["--log-format", "json", "sync", "push"],
            "suppaftp=trace",
        ),
    ] {
        let run = ferry_with_env(&args, &config, &[("FERRY_LOG", log)]).await;
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        more.push(run);
    }
    assert!(
        more[1].stderr.lines().any(|l| l.starts_with('{')),
        "JSON logs: {}",
        more[1].stderr
    );
    for out in [
        &sync.stdout,
        &sync.stderr,
        &status.stdout,
        &traced.stdout,
        &traced.stderr,
    ]
    .into_iter()
    .chain(more.iter().flat_map(|r| [&r.stdout, &r.stderr]))
    {
        assert!(!out.contains(SECRET), "password leaked:\n{out}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn exit_codes_for_bad_config_unknown_job_and_bad_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), CertKind::WrongHost).await;
    let (outbox, inbox) = (dir.path().join("outbox"), dir.path().join("inbox"));
    std::fs::create_dir_all(&outbox).unwrap();
    std::fs::create_dir_all(&inbox).unwrap();
    let config = job_file(dir.path(), &server, &outbox, &inbox);

    let bad_cert = ferry(&["sync", "pull"], &config).await;
    assert_eq!(bad_cert.code, 3, "{}", bad_cert.stderr);
    assert!(
        bad_cert.stderr.contains("job `pull`") && bad_cert.stderr.contains("certificate"),
        "{}",
        bad_cert.stderr
    );

    let unknown = ferry(&["sync", "nope"], &config).await;
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("no job `nope`"),
        "{}",
        unknown.stderr
    );

    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "version: 1\nendpoints:\n  e:\n    host: h\n    user: u\n    password_env: FERRY_TEST_PASSWORD\n    colour: blue\njobs:\n  j:\n    endpoint: missing\n    direction: push\n    local: /definitely/not/here\n    remote: /r\n    schedule: \"61 * * * *\"\n",
    )
    .unwrap();
    let check = ferry(&["check"], &broken).await;
    assert_eq!(check.code, 2);
    let lines: Vec<&str> = check.stderr.lines().collect();
    assert!(lines.len() >= 4, "every problem at once:\n{}", check.stderr);
    for want in [
        "broken.yaml:7:5: endpoint `e`",
        "job `j`",
        "missing",
        "/definitely/not/here",
        "61 * * * *",
    ] {
        assert!(
            check.stderr.contains(want),
            "missing {want:?} in:\n{}",
            check.stderr
        );
    }
    server.shutdown().await;
}
