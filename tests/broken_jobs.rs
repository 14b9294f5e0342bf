//! One broken job does not stop the others (issue 6, "Operations"): a job whose local directory
//! is missing, whose secret cannot be read, or whose endpoint is down is reported and skipped
//! by `ferry sync --all`, `sync J` of another job and `ferry run`, and `ferry status` still
//! works; `ferry check` reports it and exits 2. A secret the shell cannot see (`password_env`
//! unset, `password_credential` outside the unit) is a note at `check` and fails at connect.
//!
//! Each test runs the `ferry` binary as a child against the embedded FTPS server on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry::embedded::{EmbeddedOptions, EmbeddedServer};
use tokio::io::{AsyncBufReadExt, BufReader};

const PASSWORD: &str = "broken-jobs-secret";

async fn server(dir: &Path) -> EmbeddedServer {
    std::fs::create_dir_all(dir.join("server/data")).unwrap();
    std::fs::create_dir_all(dir.join("pki")).unwrap();
    EmbeddedServer::start(
        &dir.join("server"),
        &dir.join("pki"),
        EmbeddedOptions {
            passive_ports: support::embedded_passive_ports(),
            password: PASSWORD.to_owned(),
            ..EmbeddedOptions::default()
        },
    )
    .await
    .unwrap()
}

/// An endpoint block named `name` for the embedded server at `port`; `password` is its
/// password source line (`password_env: ...`, `password_credential: ...`).
fn endpoint(name: &str, port: u16, ca: &Path, password: &str) -> String {
    format!(
        "  {name}:
    host: 127.0.0.1
    port: {port}
    user: ferry
    {password}
    ca_file: {ca}
    timeout: 5s
",
        ca = ca.display()
    )
}

/// A push job from `local` to `remote` on `endpoint`, quick to give up on a dead server.
fn push_job(name: &str, endpoint: &str, local: &Path, remote: &str) -> String {
    format!(
        "  {name}:
    endpoint: {endpoint}
    direction: push
    local: {local}
    remote: {remote}
    retry: {{ attempts: 2, initial: 100ms, max: 200ms }}
",
        local = local.display()
    )
}

fn write_job_file(dir: &Path, endpoints: &[String], jobs: &[String]) -> PathBuf {
    let text = format!(
        "version: 1\nstate_dir: {}\nendpoints:\n{}jobs:\n{}",
        dir.join("state").display(),
        endpoints.concat(),
        jobs.concat()
    );
    let path = dir.join("jobs.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `ferry ARGS --config CONFIG` with the password in `FERRY_TEST_PASSWORD`, plus `env`.
async fn ferry(args: &[&str], config: &Path, env: &[(&str, &str)]) -> Run {
    ferry_as(args, config, env, true).await
}

/// The same from a shell that has not got the password (`FERRY_TEST_PASSWORD` unset).
async fn ferry_without_secret(args: &[&str], config: &Path, env: &[(&str, &str)]) -> Run {
    ferry_as(args, config, env, false).await
}

async fn ferry_as(args: &[&str], config: &Path, env: &[(&str, &str)], secret: bool) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("FERRY_CONFIG")
        .env_remove("FERRY_LOG")
        .env_remove("FERRY_TEST_PASSWORD")
        .env_remove("CREDENTIALS_DIRECTORY");
    if secret {
        cmd.env("FERRY_TEST_PASSWORD", PASSWORD);
    }
    let out = cmd.envs(env.iter().copied()).output().await.unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(PASSWORD), "password leaked:\n{run}");
    }
    run
}

/// A local port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_missing_local_directory_stops_only_its_own_job() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let (good, missing) = (dir.path().join("good"), dir.path().join("missing"));
    std::fs::create_dir_all(&good).unwrap();
    std::fs::write(good.join("a.txt"), b"alpha").unwrap();
    let port = server.addr().port();
    let config = write_job_file(
        dir.path(),
        &[endpoint(
            "local",
            port,
            server.ca_pem(),
            "password_env: FERRY_TEST_PASSWORD",
        )],
        &[
            push_job("a", "local", &good, "/data/a"),
            push_job("b", "local", &missing, "/data/b"),
        ],
    );
    let finding = format!(
        "jobs.yaml:21:12: job `b`: local directory `{}` does not exist",
        missing.display()
    );
    let finding = format!("{}/{finding}", dir.path().display());

    // `check` names the directory and exits 2; the file itself is not refused.
    let check = ferry(&["check"], &config, &[]).await;
    assert_eq!(check.code, 2, "{check}");
    assert_eq!(check.stderr, format!("{finding}\n"), "{check}");
    assert_eq!(
        check.stdout,
        format!(
            "{}: 1 endpoint(s), 2 job(s): 1 job(s) cannot run here (b), 1 problem(s) of this machine\n",
            config.display()
        ),
        "{check}"
    );

    // `sync --all`: a's file arrives, b is named and skipped, exit 2.
    let all = ferry(&["sync", "--all"], &config, &[]).await;
    assert_eq!(all.code, 2, "{all}");
    assert_eq!(
        std::fs::read(dir.path().join("server/data/a/a.txt")).unwrap(),
        b"alpha"
    );
    assert!(all.stdout.contains("job `a`: ok"), "{all}");
    assert!(
        all.stderr.contains(&finding)
            && all
                .stderr
                .contains("ferry sync: job `b` skipped: it cannot run here (see above)"),
        "{all}"
    );
    assert!(!dir.path().join("server/data/b").exists(), "{all}");

    // `sync a` works while b is broken; `sync b` and `plan b` say why not, exit 2.
    std::fs::write(good.join("a2.txt"), b"again").unwrap();
    let a = ferry(&["sync", "a"], &config, &[]).await;
    assert_eq!(a.code, 0, "{a}");
    assert!(!a.stderr.contains("job `b`"), "{a}");
    assert_eq!(
        std::fs::read(dir.path().join("server/data/a/a2.txt")).unwrap(),
        b"again"
    );
    let b = ferry(&["sync", "b"], &config, &[]).await;
    assert_eq!(b.code, 2, "{b}");
    assert_eq!(
        b.stderr,
        format!("{finding}\nferry sync: job `b` skipped: it cannot run here (see above)\n"),
        "{b}"
    );
    let plan = ferry(&["plan", "b"], &config, &[]).await;
    assert_eq!(plan.code, 2, "{plan}");
    assert_eq!(
        plan.stderr,
        format!("{finding}\nferry plan: job `b` not planned: it cannot run here (see above)\n"),
        "{plan}"
    );
    let plan = ferry(&["plan", "a"], &config, &[]).await;
    assert_eq!(plan.code, 0, "{plan}");

    // `status` works, from a shell without the password too, and shows why b cannot run.
    let status = ferry_without_secret(&["status", "--json"], &config, &[]).await;
    assert_eq!(status.code, 0, "{status}");
    assert!(
        status.stderr.contains("note: ")
            && status
                .stderr
                .contains("`FERRY_TEST_PASSWORD` is not set here"),
        "{status}"
    );
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let jobs = json.as_array().unwrap();
    assert_eq!(jobs[0]["job"], "a");
    assert_eq!(jobs[0]["unavailable"], serde_json::json!([]));
    assert_eq!(jobs[0]["last_run"]["outcome"], "ok");
    assert_eq!(jobs[1]["job"], "b");
    assert_eq!(jobs[1]["unavailable"], serde_json::json!([finding]));
    assert!(jobs[1]["last_run"].is_null(), "{status}");
    let text = ferry_without_secret(&["status"], &config, &[]).await;
    assert_eq!(text.code, 0, "{text}");
    assert!(
        text.stdout
            .contains(&format!("b: never run\n  cannot run here: {finding}\n")),
        "{text}"
    );

    // Once the directory is there, the job runs: nothing to re-load or re-check.
    std::fs::create_dir_all(&missing).unwrap();
    std::fs::write(missing.join("b.txt"), b"beta").unwrap();
    let check = ferry(&["check"], &config, &[]).await;
    assert_eq!(check.code, 0, "{check}");
    assert!(check.stdout.ends_with(": valid\n"), "{check}");
    let all = ferry(&["sync", "--all"], &config, &[]).await;
    assert_eq!(all.code, 0, "{all}");
    assert_eq!(
        std::fs::read(dir.path().join("server/data/b/b.txt")).unwrap(),
        b"beta"
    );
    server.shutdown().await;
}

/// A production file checked from a shell: the unit provides the password (an environment
/// variable, a systemd credential), the shell does not. `check` notes it and passes; a sync
/// fails at connect for that endpoint's jobs only, with a message saying what is missing.
#[tokio::test]
async fn secrets_only_the_unit_has_are_notes_at_check_and_fail_at_connect() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let (outbox, unit_box) = (dir.path().join("outbox"), dir.path().join("unit-box"));
    for (d, name) in [(&outbox, "a.txt"), (&unit_box, "u.txt")] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join(name), name.as_bytes()).unwrap();
    }
    let port = server.addr().port();
    let config = write_job_file(
        dir.path(),
        &[
            endpoint(
                "env",
                port,
                server.ca_pem(),
                "password_env: FERRY_TEST_PASSWORD",
            ),
            endpoint(
                "unit",
                port,
                server.ca_pem(),
                "password_credential: ferry-ftp",
            ),
        ],
        &[
            push_job("a", "env", &outbox, "/data/a"),
            push_job("u", "unit", &unit_box, "/data/u"),
        ],
    );
    let shown = config.display().to_string();
    let env_note = format!(
        "note: {shown}:8:19: endpoint `env`: password_env: environment variable `FERRY_TEST_PASSWORD` is not set here; it is read when connecting, so this endpoint's jobs need it where they run\n"
    );
    let credential_note = format!(
        "note: {shown}:15:26: endpoint `unit`: password_credential `ferry-ftp`: $CREDENTIALS_DIRECTORY is not set here (systemd sets it for a service with LoadCredential=ferry-ftp:...); the credential is read when connecting\n"
    );

    // From a shell with neither: two notes, valid, exit 0.
    let check = ferry_without_secret(&["check"], &config, &[]).await;
    assert_eq!(check.code, 0, "{check}");
    assert_eq!(
        check.stderr,
        format!("{env_note}{credential_note}"),
        "{check}"
    );
    assert!(check.stdout.ends_with(": valid\n"), "{check}");

    // A sync from there: `a` has its password, `u` fails at connect, saying why; exit 2.
    let all = ferry(&["sync", "--all"], &config, &[]).await;
    assert_eq!(all.code, 2, "{all}");
    assert_eq!(
        std::fs::read(dir.path().join("server/data/a/a.txt")).unwrap(),
        b"a.txt"
    );
    assert!(
        all.stderr.contains(
            "ferry: job `u`: endpoint `unit`: password_credential `ferry-ftp` needs $CREDENTIALS_DIRECTORY, which systemd sets for a service with LoadCredential=ferry-ftp:...; it is not set here"
        ),
        "{all}"
    );
    assert!(!dir.path().join("server/data/u").exists(), "{all}");

    // And `check --connect` reports that endpoint (3) while checking the other.
    let connect = ferry(&["check", "--connect"], &config, &[]).await;
    assert_eq!(connect.code, 3, "{connect}");
    assert!(
        connect.stdout.contains("endpoint `env`") && connect.stdout.contains("logged in as ferry"),
        "{connect}"
    );

    // Inside the unit, the credential is read when connecting.
    let creds = dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    let unit_env = [("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())];
    // A credential missing there: `u` cannot run here (check: 2; sync skips it).
    let check = ferry(&["check"], &config, &unit_env).await;
    assert_eq!(check.code, 2, "{check}");
    assert_eq!(
        check.stderr,
        format!(
            "{shown}:15:26: endpoint `unit`: cannot read credential `ferry-ftp` ({}/ferry-ftp): No such file or directory (os error 2)\n",
            creds.display()
        ),
        "{check}"
    );
    let all = ferry(&["sync", "--all"], &config, &unit_env).await;
    assert_eq!(all.code, 2, "{all}");
    assert!(
        all.stderr
            .contains("ferry sync: job `u` skipped: it cannot run here (see above)"),
        "{all}"
    );
    std::fs::write(creds.join("ferry-ftp"), format!("{PASSWORD}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            creds.join("ferry-ftp"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let check = ferry_without_secret(&["check"], &config, &unit_env).await;
    assert_eq!(check.code, 0, "{check}");
    assert_eq!(check.stderr, env_note, "{check}");
    let all = ferry(&["sync", "--all"], &config, &unit_env).await;
    assert_eq!(all.code, 0, "{all}");
    assert_eq!(
        std::fs::read(dir.path().join("server/data/u/u.txt")).unwrap(),
        b"u.txt"
    );
    server.shutdown().await;
}

/// An endpoint that refuses connections: its job fails (exit 3), and the job after it, on
/// another endpoint, still runs.
#[tokio::test]
async fn an_endpoint_that_is_down_does_not_stop_the_other_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    std::fs::write(outbox.join("a.txt"), b"alpha").unwrap();
    let config = write_job_file(
        dir.path(),
        &[
            endpoint(
                "down",
                closed_port(),
                server.ca_pem(),
                "password_env: FERRY_TEST_PASSWORD",
            ),
            endpoint(
                "up",
                server.addr().port(),
                server.ca_pem(),
                "password_env: FERRY_TEST_PASSWORD",
            ),
        ],
        // `sync --all` runs jobs in name order: the dead endpoint's job comes first.
        &[
            push_job("a-down", "down", &outbox, "/data/down"),
            push_job("b-up", "up", &outbox, "/data/up"),
        ],
    );
    let all = ferry(&["sync", "--all"], &config, &[]).await;
    assert_eq!(all.code, 3, "{all}");
    assert!(
        all.stderr.contains("job `a-down`") && all.stderr.contains("refused"),
        "{all}"
    );
    assert!(all.stdout.contains("job `b-up`: ok"), "{all}");
    assert_eq!(
        std::fs::read(dir.path().join("server/data/up/a.txt")).unwrap(),
        b"alpha"
    );
    // `status` reads state only: it works with an endpoint down.
    let status = ferry(&["status", "--json"], &config, &[]).await;
    assert_eq!(status.code, 0, "{status}");
    server.shutdown().await;
}

/// `ferry run` with a job that cannot run here: that job is logged at error level and not
/// started, the others are; once it is fixed, SIGHUP starts it. A running job that a reload
/// finds unable to run is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_starts_the_jobs_that_can_run_and_the_others_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let (inbox, later) = (dir.path().join("inbox"), dir.path().join("later"));
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(dir.path().join("server/data/r.csv"), b"1,2\n").unwrap();
    let pull = |name: &str, local: &Path| {
        format!(
            "  {name}:
    endpoint: local
    direction: pull
    local: {}
    remote: /data
    schedule: \"* * * * * *\"
    ready: immediate
",
            local.display()
        )
    };
    let config = write_job_file(
        dir.path(),
        &[endpoint(
            "local",
            server.addr().port(),
            server.ca_pem(),
            "password_env: FERRY_TEST_PASSWORD",
        )],
        &[pull("fetch", &inbox), pull("later", &later)],
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("FERRY_TEST_PASSWORD", PASSWORD)
        .env_remove("FERRY_CONFIG")
        .env_remove("FERRY_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let mut reader = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
    }
    let log = || lines.lock().unwrap().join("\n");
    let wait_for = |what: &'static str, test: Box<dyn Fn(&str) -> bool + Send>| {
        let lines = lines.clone();
        async move {
            let start = Instant::now();
            loop {
                if lines.lock().unwrap().iter().any(|l| test(l)) {
                    return;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "{what}: not within 20s; the agent said:\n{}",
                    lines.lock().unwrap().join("\n")
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    wait_for(
        "`later` reported and not started",
        Box::new(|l| {
            l.contains("ERROR")
                && l.contains("job=later")
                && l.contains("the job cannot run here, so it is not started")
        }),
    )
    .await;
    assert!(
        log().contains(&format!(
            "job `later`: local directory `{}` does not exist",
            later.display()
        )),
        "{}",
        log()
    );
    // The other job runs meanwhile.
    let pulled = inbox.join("r.csv");
    let start = Instant::now();
    while std::fs::read(&pulled).ok().as_deref() != Some(b"1,2\n") {
        assert!(start.elapsed() < Duration::from_secs(20), "{}", log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("scheduled") && l.contains("job=later")),
        "{}",
        log()
    );

    // Fixed, then reloaded: it starts and pulls.
    std::fs::create_dir_all(&later).unwrap();
    let pid = child.id().unwrap();
    let kill = |signal: &str| {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    };
    kill("HUP");
    wait_for(
        "`later` scheduled after the reload",
        Box::new(|l| l.contains("scheduled") && l.contains("job=later")),
    )
    .await;
    let pulled = later.join("r.csv");
    let start = Instant::now();
    while std::fs::read(&pulled).ok().as_deref() != Some(b"1,2\n") {
        assert!(start.elapsed() < Duration::from_secs(20), "{}", log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The other way round: a running job whose directory goes, then a reload, is stopped.
    std::fs::rename(&inbox, dir.path().join("inbox-gone")).unwrap();
    kill("HUP");
    wait_for(
        "`fetch` stopped after the reload",
        Box::new(|l| {
            l.contains("ERROR")
                && l.contains("job=fetch")
                && l.contains("it stops after its current run")
        }),
    )
    .await;
    let fetch_runs = || {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("job=fetch"))
            .count()
    };
    // A run in progress may finish (or fail, its directory gone); then nothing of it runs:
    // every run, finished or failed, logs a line naming the job.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let runs = fetch_runs();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(fetch_runs(), runs, "{}", log());
    kill("TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap_or_else(|_| panic!("the agent did not stop:\n{}", log()))
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", log());
    server.shutdown().await;
}
