//! The binary's operational commands and defaults: completions and the man page, `status
//! --json`, the per-job lock between `ferry sync` processes, and what the logs show by default.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry::embedded::{EmbeddedOptions, EmbeddedServer};

const SECRET: &str = "commands-Secret-42";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ferry(args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args)
        .env("FERRY_TEST_PASSWORD", SECRET)
        .env_remove("FERRY_CONFIG")
        .env_remove("FERRY_LOG")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied());
    cmd
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Out {
    let out = ferry(args, env).output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn server(dir: &Path) -> EmbeddedServer {
    std::fs::create_dir_all(dir.join("server/data")).unwrap();
    std::fs::create_dir_all(dir.join("pki")).unwrap();
    EmbeddedServer::start(
        &dir.join("server"),
        &dir.join("pki"),
        EmbeddedOptions {
            passive_ports: support::embedded_passive_ports(),
            password: SECRET.to_owned(),
            ..EmbeddedOptions::default()
        },
    )
    .await
    .unwrap()
}

fn job_file(dir: &Path, server: &EmbeddedServer) -> PathBuf {
    for d in ["outbox", "inbox", "watched"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let text = format!(
        "version: 1
state_dir: {dir}/state
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
    local: {dir}/outbox
    remote: /data
    schedule: \"0 3 * * *\"
    timezone: Europe/Berlin
  watched:
    endpoint: local
    direction: push
    local: {dir}/watched
    remote: /watched
    watch: true
",
        dir = dir.display(),
        port = server.addr().port(),
        ca = server.ca_pem().display(),
    );
    let path = dir.join("jobs.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_definition() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run(&["completions", shell], &[]);
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        // fish writes long options as `-l wait`.
        let long = |name: &str| match shell {
            "fish" => format!("-l {name}"),
            _ => format!("--{name}"),
        };
        for word in [
            "ferry".to_owned(),
            "sync".into(),
            "status".into(),
            long("wait"),
            long("config"),
        ] {
            assert!(
                out.stdout.contains(&word),
                "{shell} completions lack {word}"
            );
        }
    }
    let bad = run(&["completions", "cmd.exe"], &[]);
    assert_eq!(bad.code, 2);
    let man = run(&["man"], &[]);
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH ferry"),
        "{}",
        man.stdout
    );
    for word in ["run", "sync", "status", "completions", "\\-\\-log\\-format"] {
        assert!(man.stdout.contains(word), "the man page lacks {word}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_gives_last_run_last_success_next_run_and_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let config = job_file(dir.path(), &server);
    let config = config.to_str().unwrap();
    std::fs::write(dir.path().join("outbox/a.txt"), b"abc").unwrap();
    let sync = run(&["sync", "push", "--config", config], &[]);
    assert_eq!(sync.code, 0, "{}", sync.stderr);

    let status = run(&["status", "--json", "--config", config], &[]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let push = &json[0];
    assert_eq!(push["job"], "push");
    assert_eq!(push["last_run"]["trigger"], "cli", "{json}");
    assert_eq!(push["last_run"]["outcome"], "ok");
    assert_eq!(push["last_run"]["totals"]["transferred"], 1);
    assert_eq!(push["last_run"]["totals"]["bytes"], 3);
    assert_eq!(push["last_success"]["id"], push["last_run"]["id"]);
    assert!(push["running"].is_null());
    // 03:00 in Berlin is 01:00 or 02:00 UTC.
    let next = push["next_run"].as_str().unwrap();
    assert!(
        next.contains("T01:00:00") || next.contains("T02:00:00"),
        "{next}"
    );
    assert!(push["outbox"].is_null());
    let watched = &json[1];
    assert_eq!(watched["job"], "watched");
    assert!(watched["last_run"].is_null());
    assert_eq!(watched["outbox"], 0);

    // A failed run: its reason as recorded, and the last success stays the earlier run.
    server.shutdown().await;
    std::fs::write(dir.path().join("outbox/b.txt"), b"b").unwrap();
    let failed = run(&["sync", "push", "--config", config], &[]);
    assert_eq!(failed.code, 3, "{}", failed.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&run(&["status", "--json", "--config", config], &[]).stdout).unwrap();
    let push = &json[0];
    assert_eq!(push["last_run"]["outcome"], "failed", "{json}");
    assert!(
        push["last_run"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("connect")),
        "{json}"
    );
    assert_ne!(push["last_success"]["id"], push["last_run"]["id"]);
    // And the text form says the same.
    let text = run(&["status", "--config", config], &[]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("push"), "{}", text.stdout);
    assert!(text.stdout.contains("failed"), "{}", text.stdout);
    assert!(text.stdout.contains("last success"), "{}", text.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_of_a_job_already_running_refuses_naming_the_holder_or_waits() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let config = job_file(dir.path(), &server);
    std::fs::write(dir.path().join("outbox/a.txt"), b"abc").unwrap();
    let config_s = config.to_str().unwrap().to_owned();
    let held =
        ferry::agent::lock::try_lock(&dir.path().join("state"), "push", "ferry run").unwrap();

    let refused = run(&["sync", "push", "--config", &config_s], &[]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("ferry run") && refused.stderr.contains("--wait"),
        "{}",
        refused.stderr
    );
    assert!(!dir.path().join("server/data/a.txt").exists());

    // --wait waits for the holder, then runs.
    let mut waiting = ferry(&["sync", "--wait", "push", "--config", &config_s], &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(waiting.try_wait().unwrap().is_none(), "it did not wait");
    assert!(!dir.path().join("server/data/a.txt").exists());
    drop(held);
    let done = tokio::task::spawn_blocking(move || waiting.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        done.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        std::fs::read(dir.path().join("server/data/a.txt")).unwrap(),
        b"abc"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_logs_are_ferry_lines_only_and_never_show_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let config = job_file(dir.path(), &server);
    let config = config.to_str().unwrap();
    std::fs::write(dir.path().join("outbox/a.txt"), b"abc").unwrap();
    let sync = run(&["sync", "push", "--config", config], &[]);
    assert_eq!(sync.code, 0, "{}", sync.stderr);
    for line in sync.stderr.lines() {
        assert!(
            !line.contains("suppaftp"),
            "library line by default: {line}"
        );
        assert!(!line.contains("DEBUG"), "debug line by default: {line}");
        assert!(
            !line.contains("\x1b["),
            "colour when not on a terminal: {line:?}"
        );
    }
    // Every line of the run carries the job and the run id; the summary is an event.
    let json = run(
        &["--log-format", "json", "sync", "push", "--config", config],
        &[],
    );
    assert_eq!(json.code, 0, "{}", json.stderr);
    let events: Vec<serde_json::Value> = json
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let finished = events
        .iter()
        .find(|e| e["fields"]["message"] == "run finished")
        .unwrap_or_else(|| panic!("no run finished event: {}", json.stderr));
    assert_eq!(finished["fields"]["outcome"], "ok");
    assert_eq!(finished["span"]["job"], "push");
    assert!(finished["span"]["run_id"].is_number());
    // FERRY_LOG=warn silences the info lines; -vv shows library lines, still without PASS.
    let quiet = run(
        &["sync", "push", "--config", config],
        &[("FERRY_LOG", "warn")],
    );
    assert_eq!(quiet.code, 0);
    assert!(!quiet.stderr.contains("INFO"), "{}", quiet.stderr);
    std::fs::write(dir.path().join("outbox/b.txt"), b"b").unwrap();
    let loud = run(&["-vv", "sync", "push", "--config", config], &[]);
    assert_eq!(loud.code, 0);
    assert!(loud.stderr.contains("suppaftp"), "{}", loud.stderr);
    for out in [&sync, &json, &quiet, &loud] {
        assert!(!out.stderr.contains(SECRET) && !out.stdout.contains(SECRET));
        assert!(!out.stderr.contains("PASS "), "{}", out.stderr);
    }
    server.shutdown().await;
}

#[test]
fn the_demo_prints_no_library_debug_lines() {
    let demo = run(&["demo"], &[]);
    assert_eq!(demo.code, 0, "{}", demo.stderr);
    assert!(!demo.stderr.contains("DEBUG"), "{}", demo.stderr);
    assert!(!demo.stderr.contains("suppaftp"), "{}", demo.stderr);
}

/// A push job with `hooks` (YAML lines under the job) against the server at `port`.
fn hook_job_file(dir: &Path, port: u16, ca: &Path, hooks: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("outbox")).unwrap();
    let text = format!(
        "version: 1
state_dir: {dir}/state
endpoints:
  local:
    host: 127.0.0.1
    port: {port}
    user: ferry
    password_env: FERRY_TEST_PASSWORD
    ca_file: {ca}
    timeout: 5s
jobs:
  push:
    endpoint: local
    direction: push
    local: {dir}/outbox
    remote: /data
    retry: {{ attempts: 1 }}
{hooks}",
        dir = dir.display(),
        ca = ca.display(),
    );
    let path = dir.join("jobs.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `on_success` gets the job, the outcome, the direction and the file of transferred paths,
/// and not the password's variable; a failing hook is reported and the run stays ok; a hook
/// that hangs is killed after `hook_timeout`; `on_failure` runs after a run that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_after_a_run_with_what_it_did_and_cannot_change_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let (port, ca) = (server.addr().port(), server.ca_pem().to_path_buf());
    let out = dir.path().join("hook.out");
    let sync = |config: PathBuf| {
        tokio::task::spawn_blocking(move || {
            run(&["sync", "push", "--config", config.to_str().unwrap()], &[])
        })
    };
    let hook = |argv: &[&str], extra: &str| {
        let argv: Vec<String> = argv
            .iter()
            .map(|a| serde_json::to_string(a).unwrap())
            .collect();
        format!("    on_success: [{}]\n{extra}", argv.join(", "))
    };
    std::fs::create_dir_all(dir.path().join("outbox/sub")).unwrap();
    std::fs::write(dir.path().join("outbox/a.txt"), b"a").unwrap();
    std::fs::write(dir.path().join("outbox/sub/b.txt"), b"b").unwrap();
    let script = format!(
        "{{ echo \"$FERRY_JOB $FERRY_OUTCOME $FERRY_DIRECTION $FERRY_TRANSFERRED_COUNT run=$FERRY_RUN_ID secret=${{FERRY_TEST_PASSWORD:-none}}\"; sort \"$FERRY_TRANSFERRED\"; }} > {}",
        out.display()
    );
    let config = hook_job_file(
        dir.path(),
        port,
        &ca,
        &hook(&["/bin/sh", "-c", &script], ""),
    );
    let first = sync(config).await.unwrap();
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "push ok push 2 run=1 secret=none\na.txt\nsub/b.txt\n"
    );
    assert!(!first.stderr.contains(SECRET));
    assert!(
        std::fs::read_dir(dir.path().join("state/hooks"))
            .unwrap()
            .next()
            .is_none(),
        "the list of transferred files is removed after the hook"
    );

    // A failing hook: reported, with its output; the run is still ok.
    let config = hook_job_file(
        dir.path(),
        port,
        &ca,
        &hook(&["/bin/sh", "-c", "echo it broke >&2; exit 3"], ""),
    );
    let failing = sync(config).await.unwrap();
    assert_eq!(failing.code, 0, "{}", failing.stderr);
    let all = format!("{}{}", failing.stdout, failing.stderr);
    assert!(
        all.contains("ok in") && all.contains("on_success hook failed: exited with code 3"),
        "{all}"
    );
    assert!(all.contains("it broke"), "{all}");

    // A hook that hangs is killed after hook_timeout.
    let config = hook_job_file(
        dir.path(),
        port,
        &ca,
        &hook(&["/bin/sleep", "30"], "    hook_timeout: 1s\n"),
    );
    let started = std::time::Instant::now();
    let hanging = sync(config).await.unwrap();
    assert_eq!(hanging.code, 0, "{}", hanging.stderr);
    assert!(started.elapsed() < Duration::from_secs(15));
    let all = format!("{}{}", hanging.stdout, hanging.stderr);
    assert!(all.contains("did not finish within 1s (killed)"), "{all}");

    // on_failure after a run that failed: the server is gone.
    server.shutdown().await;
    let script = format!(
        "echo \"$FERRY_OUTCOME $FERRY_TRANSFERRED_COUNT\" > {}",
        out.display()
    );
    let argv: Vec<String> = ["/bin/sh", "-c", &script]
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    let config = hook_job_file(
        dir.path(),
        port,
        &ca,
        &format!("    on_failure: [{}]\n", argv.join(", ")),
    );
    let failed = sync(config).await.unwrap();
    assert_eq!(failed.code, 3, "{}", failed.stderr);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "failed 0\n");
}
