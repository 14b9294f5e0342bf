//! `ferry run` as a child process, the way systemd runs it, against real FTPS servers on
//! loopback (the embedded one, and vsftpd): a schedule with seconds pulls what lands on the
//! server, a watch job pushes what is finished locally, SIGTERM stops cleanly, SIGHUP with a broken
//! file keeps the old jobs, and a SIGKILL with the server down loses nothing and sends nothing
//! twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::tree;
use ferry::embedded::{EmbeddedOptions, EmbeddedServer, ServerEvent};
use tokio::io::{AsyncBufReadExt, BufReader};

const PASSWORD: &str = "agent-test-secret";

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        passive_ports: support::embedded_passive_ports(),
        password: PASSWORD.to_owned(),
        ..EmbeddedOptions::default()
    }
}

async fn server(dir: &Path) -> EmbeddedServer {
    std::fs::create_dir_all(dir.join("server/data")).unwrap();
    std::fs::create_dir_all(dir.join("pki")).unwrap();
    EmbeddedServer::start(&dir.join("server"), &dir.join("pki"), options())
        .await
        .unwrap()
}

/// A job file with one endpoint (`port`, trusting `ca`) and the given jobs section.
fn write_job_file(dir: &Path, port: u16, ca: &Path, extra: &str, jobs: &str) -> PathBuf {
    let text = format!(
        "version: 1
state_dir: {state}
shutdown_grace: 2s
{extra}
endpoints:
  local:
    host: 127.0.0.1
    port: {port}
    user: ferry
    password_env: FERRY_TEST_PASSWORD
    ca_file: {ca}
    timeout: 5s
jobs:
{jobs}",
        state = dir.join("state").display(),
        ca = ca.display(),
    );
    let path = dir.join("jobs.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `ferry run`, its stderr collected line by line.
struct Agent {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    fn start(config: &Path, password: &str) -> Agent {
        Agent::start_with(config, password, &[])
    }

    fn start_with(config: &Path, password: &str, env: &[(&str, &str)]) -> Agent {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("FERRY_TEST_PASSWORD", password)
            .env_remove("FERRY_CONFIG")
            // The default filter; AGENT_TEST_LOG=ferry=debug shows more when a test fails.
            .env(
                "FERRY_LOG",
                std::env::var("AGENT_TEST_LOG").unwrap_or("ferry=info".into()),
            )
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Agent { child, lines }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The sum of `field=N` over the agent's `run finished` lines.
    fn sum(&self, field: &str) -> u64 {
        let key = format!("{field}=");
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("run finished"))
            .filter_map(|l| {
                let rest = &l[l.find(&key)? + key.len()..];
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// Wait until `n` lines contain `needle`.
    async fn wait_for_n(&self, needle: &str, n: usize, within: Duration) {
        let start = Instant::now();
        while self.count(needle) < n {
            assert!(
                start.elapsed() < within,
                "no {n}× `{needle}` within {within:?}; the agent said:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for(&self, needle: &str, within: Duration) {
        self.wait_for_n(needle, 1, within).await;
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn exit_code(&mut self, within: Duration) -> i32 {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the agent did not exit; it said:\n{}", self.log()))
            .unwrap();
        status.code().unwrap_or(-1)
    }
}

/// `ferry status --json`, run from a shell that has not got the job's secrets.
fn status_json(config: &Path) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["status", "--json", "--config"])
        .arg(config)
        .env_remove("FERRY_TEST_PASSWORD")
        .env_remove("FERRY_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Poll until `f` holds.
async fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Write `contents` to `path` through a name the jobs ignore, then rename it into place: a file
/// that appears complete.
fn drop_file(path: &Path, contents: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Every file under `root` whose name says it is a transfer in progress.
fn temp_files(root: &Path) -> Vec<String> {
    tree(root)
        .into_keys()
        .filter(|k| k.ends_with(ferry::execute::TEMP_SUFFIX))
        .collect()
}

fn scheduled_pull(inbox: &Path) -> String {
    format!(
        "  fetch:
    endpoint: local
    direction: pull
    local: {}
    remote: /data
    schedule: \"*/2 * * * * *\"
    ready: immediate
",
        inbox.display()
    )
}

fn watch_push(outbox: &Path, remote: &str) -> String {
    format!(
        "  send:
    endpoint: local
    direction: push
    local: {}
    remote: {remote}
    watch: true
    settle: 300ms
    verify: readback
    retry: {{ attempts: 3, initial: 200ms, max: 1s }}
",
        outbox.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_with_seconds_pulls_a_file_dropped_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let config = write_job_file(
        dir.path(),
        server.addr().port(),
        server.ca_pem(),
        "",
        &scheduled_pull(&inbox),
    );
    let mut agent = Agent::start(&config, PASSWORD);
    agent.wait_for("scheduled", Duration::from_secs(20)).await;
    // A run with nothing to fetch comes first: the schedule fires, not a one-off start-up run.
    agent
        .wait_for("run finished", Duration::from_secs(10))
        .await;
    drop_file(&dir.path().join("server/data/report.csv"), b"a,b\n1,2\n");
    eventually("report.csv pulled", Duration::from_secs(10), || {
        std::fs::read(inbox.join("report.csv")).ok().as_deref() == Some(b"a,b\n1,2\n")
    })
    .await;
    // It keeps firing every two seconds.
    let runs = agent.count("run finished");
    agent
        .wait_for_n("run finished", runs + 2, Duration::from_secs(10))
        .await;
    agent.signal("TERM");
    assert_eq!(
        agent.exit_code(Duration::from_secs(10)).await,
        0,
        "{}",
        agent.log()
    );
    assert!(agent.log().contains("agent stopped"), "{}", agent.log());
    assert!(temp_files(&inbox).is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_job_pushes_files_created_locally_verified() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let config = write_job_file(
        dir.path(),
        server.addr().port(),
        server.ca_pem(),
        "",
        &format!(
            "{}    exclude: [\"**/*.bak\"]\n",
            watch_push(&outbox, "/data")
        ),
    );
    let mut agent = Agent::start(&config, PASSWORD);
    agent.wait_for("watching", Duration::from_secs(20)).await;
    // What editors, downloaders and office suites leave while they write, and what the job
    // excludes itself: never sent.
    let unfinished = [
        "draft.tmp",
        "movie.part",
        "dump.partial",
        ".~lock.report.odt#",
        "~$report.docx",
        ".notes.txt.swp",
        "old.bak",
    ];
    for name in unfinished {
        std::fs::write(outbox.join(name), b"not finished").unwrap();
    }
    // A file written in pieces, a directory made after the watch started with files in it at
    // once (inotify has no watch on it yet when they land), and an editor's temporary file.
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(outbox.join("slow.bin")).unwrap();
        for i in 0..5u8 {
            f.write_all(&[i; 1000]).unwrap();
            f.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    std::fs::create_dir_all(outbox.join("new/deeper")).unwrap();
    std::fs::write(outbox.join("new/deeper/a.txt"), b"alpha").unwrap();
    std::fs::write(outbox.join("new/b.txt"), b"beta").unwrap();
    let remote = dir.path().join("server/data");
    eventually(
        "the three files on the server",
        Duration::from_secs(20),
        || {
            std::fs::read(remote.join("new/deeper/a.txt"))
                .ok()
                .as_deref()
                == Some(b"alpha")
                && std::fs::read(remote.join("new/b.txt")).ok().as_deref() == Some(b"beta")
                && std::fs::read(remote.join("slow.bin")).map(|b| b.len()).ok() == Some(5000)
        },
    )
    .await;
    let mut want = tree(&outbox);
    for name in unfinished {
        want.remove(name);
    }
    eventually("no transfer in progress", Duration::from_secs(10), || {
        tree(&remote) == want
    })
    .await;
    // Each upload was verified, and taken out of the outbox only after that.
    eventually("three uploads reported", Duration::from_secs(5), || {
        agent.sum("transferred") >= 3
    })
    .await;
    assert_eq!(agent.sum("transferred"), 3, "{}", agent.log());
    assert_eq!(agent.sum("verified"), 3, "{}", agent.log());
    eventually("the outbox empty", Duration::from_secs(5), || {
        status_json(&config)[0]["outbox"] == 0
    })
    .await;
    assert_eq!(status_json(&config)[0]["job"], "send");
    agent.signal("TERM");
    assert_eq!(
        agent.exit_code(Duration::from_secs(10)).await,
        0,
        "{}",
        agent.log()
    );
    assert!(temp_files(&remote).is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_transfer_exits_zero_and_leaves_no_temporary_file() {
    stop_during_a_transfer("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_transfer_exits_zero_and_leaves_no_temporary_file() {
    stop_during_a_transfer("INT").await;
}

/// `signal` while a big upload is under way, with a grace shorter than the upload: exit 0, no
/// temporary file on either side.
async fn stop_during_a_transfer(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let config = write_job_file(
        dir.path(),
        server.addr().port(),
        server.ca_pem(),
        "",
        &watch_push(&outbox, "/data"),
    )
    .to_path_buf();
    // A short grace, so the transfer is still going when it ends.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("shutdown_grace: 2s", "shutdown_grace: 200ms");
    std::fs::write(&config, text).unwrap();
    // Sparse: 4 GiB that take no disk here and far longer than the grace to send.
    let big = std::fs::File::create(outbox.join("big.img")).unwrap();
    big.set_len(4 << 30).unwrap();
    drop(big);
    let mut agent = Agent::start(&config, PASSWORD);
    let remote = dir.path().join("server/data");
    eventually("the upload under way", Duration::from_secs(30), || {
        temp_files(&remote).len() == 1
    })
    .await;
    agent.signal(signal);
    assert_eq!(
        agent.exit_code(Duration::from_secs(20)).await,
        0,
        "{}",
        agent.log()
    );
    let log = agent.log();
    assert!(log.contains("cancelling"), "{log}");
    assert!(temp_files(&remote).is_empty(), "{:?}\n{log}", tree(&remote));
    assert!(!remote.join("big.img").exists());
    assert!(temp_files(&outbox).is_empty());
    server.shutdown().await;
}

/// A file changed while it is being sent is not taken out of the outbox with the run: the
/// half-sent version is dropped, and its new version follows once it has settled again, even
/// when it settled before the run that saw the change had ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_while_it_is_sent_stays_queued_and_its_new_version_follows() {
    use std::os::unix::fs::FileExt as _;
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let config = write_job_file(
        dir.path(),
        server.addr().port(),
        server.ca_pem(),
        "",
        &watch_push(&outbox, "/data"),
    );
    // Sparse: 256 MiB that take no disk here and far longer than `settle` to send.
    const SIZE: u64 = 256 << 20;
    let big = std::fs::File::create(outbox.join("report.bin")).unwrap();
    big.set_len(SIZE).unwrap();
    drop(big);
    let mut agent = Agent::start(&config, PASSWORD);
    let remote = dir.path().join("server/data");
    eventually("the upload under way", Duration::from_secs(30), || {
        temp_files(&remote).len() == 1
    })
    .await;
    // Changed in place while it is read: same size, new first bytes.
    let changed_at = Instant::now();
    std::fs::OpenOptions::new()
        .write(true)
        .open(outbox.join("report.bin"))
        .unwrap()
        .write_all_at(b"version two", 0)
        .unwrap();
    eventually("the first upload given up", Duration::from_secs(60), || {
        agent.log().contains("changed while it was being uploaded")
    })
    .await;
    let seen_after = changed_at.elapsed();
    eventually(
        "the new version on the server",
        Duration::from_secs(60),
        || {
            std::fs::File::open(remote.join("report.bin")).is_ok_and(|f| {
                let mut head = [0u8; 11];
                f.metadata().unwrap().len() == SIZE
                    && f.read_exact_at(&mut head, 0).is_ok()
                    && &head == b"version two"
            })
        },
    )
    .await;
    eprintln!("the change was seen by the upload {seen_after:?} after it was made");
    eventually("the outbox empty", Duration::from_secs(10), || {
        status_json(&config)[0]["outbox"] == 0
    })
    .await;
    agent.signal("TERM");
    assert_eq!(
        agent.exit_code(Duration::from_secs(10)).await,
        0,
        "{}",
        agent.log()
    );
    assert!(temp_files(&remote).is_empty(), "{:?}", tree(&remote));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_file_keeps_the_old_jobs_and_a_fixed_one_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let inbox = dir.path().join("inbox");
    let second = dir.path().join("second");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let port = server.addr().port();
    let config = write_job_file(
        dir.path(),
        port,
        server.ca_pem(),
        "",
        &scheduled_pull(&inbox),
    );
    let good = std::fs::read_to_string(&config).unwrap();
    let mut agent = Agent::start(&config, PASSWORD);
    agent.wait_for("scheduled", Duration::from_secs(20)).await;

    std::fs::write(&config, "version: 1\njobs: [this is: not a job file\n").unwrap();
    agent.signal("HUP");
    agent
        .wait_for("the job file did not load", Duration::from_secs(10))
        .await;
    drop_file(
        &dir.path().join("server/data/after-hup.txt"),
        b"still running",
    );
    eventually("the old job still pulls", Duration::from_secs(10), || {
        inbox.join("after-hup.txt").exists()
    })
    .await;

    // A valid file with a second job: it is scheduled too.
    let more = format!(
        "{good}  fetch-again:
    endpoint: local
    direction: pull
    local: {}
    remote: /data
    schedule: \"*/2 * * * * *\"
    ready: immediate
",
        second.display()
    );
    std::fs::write(&config, more).unwrap();
    agent.signal("HUP");
    agent
        .wait_for("job file reloaded", Duration::from_secs(10))
        .await;
    eventually("the new job pulls", Duration::from_secs(10), || {
        second.join("after-hup.txt").exists()
    })
    .await;
    agent.signal("TERM");
    assert_eq!(
        agent.exit_code(Duration::from_secs(10)).await,
        0,
        "{}",
        agent.log()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_a_pending_outbox_and_the_server_down_sends_each_file_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("server/data")).unwrap();
    std::fs::create_dir_all(dir.path().join("pki")).unwrap();
    let mut opts = options();
    // The server is stopped and started again on this port: one no other test can be given.
    opts.port = support::restartable_port();
    let server = EmbeddedServer::start(&dir.path().join("server"), &dir.path().join("pki"), opts)
        .await
        .unwrap();
    let port = server.addr().port();
    let pki = server.pki().clone();
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let config = write_job_file(
        dir.path(),
        port,
        server.ca_pem(),
        "",
        &watch_push(&outbox, "/data"),
    );
    let mut agent = Agent::start(&config, PASSWORD);
    agent.wait_for("watching", Duration::from_secs(20)).await;
    server.shutdown().await;

    let names: Vec<String> = (0..20).map(|i| format!("f{i:02}.dat")).collect();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(outbox.join(name), format!("file {i}\n")).unwrap();
    }
    // Each settled file is in the outbox before anything is tried.
    let pending = || status_json(&config)[0]["outbox"].as_u64().unwrap();
    eventually("20 files in the outbox", Duration::from_secs(20), || {
        pending() == 20
    })
    .await;
    // And the run failed for want of a server.
    agent.wait_for("failed", Duration::from_secs(20)).await;
    agent.child.kill().await.unwrap();

    let mut opts = options();
    opts.port = port;
    let server = EmbeddedServer::start_with(&dir.path().join("server"), pki, opts)
        .await
        .unwrap();
    let mut agent = Agent::start(&config, PASSWORD);
    let remote = dir.path().join("server/data");
    eventually("every file on the server", Duration::from_secs(30), || {
        names.iter().all(|n| remote.join(n).exists())
    })
    .await;
    eventually("the outbox drained", Duration::from_secs(10), || {
        pending() == 0
    })
    .await;
    // Some time for a duplicate to show up, had there been one queued.
    tokio::time::sleep(Duration::from_secs(2)).await;
    agent.signal("TERM");
    assert_eq!(
        agent.exit_code(Duration::from_secs(10)).await,
        0,
        "{}",
        agent.log()
    );
    assert_eq!(tree(&outbox), tree(&remote));
    let events = server.events();
    let stored = events
        .iter()
        .filter(|e| matches!(e, ServerEvent::Stored { .. }))
        .count();
    assert_eq!(stored, 20, "{events:#?}");
    for name in &names {
        let arrivals = events
            .iter()
            .filter(
                |e| matches!(e, ServerEvent::Renamed { to, .. } if to == &format!("/data/{name}")),
            )
            .count();
        assert_eq!(arrivals, 1, "{name}: {events:#?}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_watch_and_schedule_jobs_against_vsftpd() {
    let Some(v) = support::vsftpd::Vsftpd::start(Default::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(v.root().join("data")).unwrap();
    v.give_root_to_user();
    let (outbox, inbox) = (dir.path().join("outbox"), dir.path().join("inbox"));
    std::fs::create_dir_all(&outbox).unwrap();
    std::fs::create_dir_all(&inbox).unwrap();
    let jobs = format!("{}{}", watch_push(&outbox, "/data"), scheduled_pull(&inbox));
    let config = write_job_file(dir.path(), v.addr().port(), v.ca_pem(), "", &jobs).to_path_buf();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("user: ferry", &format!("user: {}", v.user()));
    std::fs::write(&config, text).unwrap();
    let mut agent = Agent::start(&config, v.password());
    agent.wait_for("watching", Duration::from_secs(20)).await;
    std::fs::create_dir_all(outbox.join("sub")).unwrap();
    std::fs::write(outbox.join("sub/hello.txt"), b"hello vsftpd").unwrap();
    // Pushed by the watch job, then pulled back by the scheduled one.
    eventually("the file round trip", Duration::from_secs(30), || {
        std::fs::read(inbox.join("sub/hello.txt")).ok().as_deref() == Some(b"hello vsftpd")
    })
    .await;
    agent.signal("TERM");
    assert_eq!(
        agent.exit_code(Duration::from_secs(10)).await,
        0,
        "{}",
        agent.log()
    );
    assert!(temp_files(&inbox).is_empty());
    assert!(temp_files(&v.root().join("data")).is_empty());
}

/// GET `path` from `addr` over plain HTTP/1.0; the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1."), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_prometheus_metrics_of_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let metrics = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let config = write_job_file(
        dir.path(),
        server.addr().port(),
        server.ca_pem(),
        &format!("metrics: {metrics}"),
        &watch_push(&outbox, "/data"),
    );
    let mut agent = Agent::start(&config, PASSWORD);
    agent
        .wait_for("serving Prometheus metrics", Duration::from_secs(20))
        .await;
    agent.wait_for("watching", Duration::from_secs(20)).await;
    std::fs::write(outbox.join("one.txt"), b"12345").unwrap();
    agent
        .wait_for("run finished", Duration::from_secs(20))
        .await;
    let body = http_get(metrics, "/metrics").await;
    for line in [
        "ferry_runs_total{job=\"send\",outcome=\"ok\"} 1",
        "ferry_files_transferred_total{job=\"send\"} 1",
        "ferry_bytes_transferred_total{job=\"send\"} 5",
        "ferry_outbox_files{job=\"send\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "no `{line}` in:\n{body}");
    }
    assert!(
        body.lines()
            .any(|l| l.starts_with("ferry_last_success_timestamp_seconds{job=\"send\"} ")),
        "{body}"
    );
    assert!(
        body.lines()
            .any(|l| l.starts_with("ferry_run_duration_seconds")),
        "{body}"
    );
    // The session the run logged in stays open in the pool for the next run.
    let open: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("ferry_open_connections{endpoint=\"local\"} "))
        .unwrap_or_else(|| panic!("no open connections gauge in:\n{body}"))
        .parse()
        .unwrap();
    assert!((1.0..=2.0).contains(&open), "{body}");
    agent.signal("TERM");
    assert_eq!(
        agent.exit_code(Duration::from_secs(10)).await,
        0,
        "{}",
        agent.log()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let config = write_job_file(
        dir.path(),
        server.addr().port(),
        server.ca_pem(),
        "",
        &scheduled_pull(&inbox),
    );
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut agent = Agent::start_with(
        &config,
        PASSWORD,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            // WatchdogSec=2s: a ping at least every second.
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    let mut heard: Vec<String> = Vec::new();
    let read = |heard: &mut Vec<String>, socket: &std::os::unix::net::UnixDatagram| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            heard.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_owned),
            );
        }
    };
    let start = Instant::now();
    while heard.iter().filter(|l| *l == "WATCHDOG=1").count() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "heard only {heard:?}; the agent said:\n{}",
            agent.log()
        );
        read(&mut heard, &socket);
    }
    let ready = heard.iter().position(|l| l == "READY=1").expect("READY=1");
    assert!(
        heard[ready..]
            .iter()
            .any(|l| l.starts_with("STATUS=") && l.contains("1 of 1 jobs")),
        "{heard:?}"
    );
    agent.signal("TERM");
    assert_eq!(agent.exit_code(Duration::from_secs(10)).await, 0);
    read(&mut heard, &socket);
    assert!(heard.iter().any(|l| l == "STOPPING=1"), "{heard:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_runs_a_schedule_missed_while_the_agent_was_down_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    // A daily schedule that fires two seconds after a first run, while no agent runs.
    let config = write_job_file(
        dir.path(),
        server.addr().port(),
        server.ca_pem(),
        "",
        &scheduled_pull(&inbox),
    );
    let first = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["sync", "fetch", "--config"])
        .arg(&config)
        .env("FERRY_TEST_PASSWORD", PASSWORD)
        .env_remove("FERRY_CONFIG")
        .output()
        .unwrap();
    assert!(first.status.success(), "{first:?}");
    let fire = chrono::Utc::now() + chrono::Duration::seconds(2);
    let daily = fire.format("%S %M %H * * *").to_string();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "schedule: \"*/2 * * * * *\"",
        &format!("schedule: \"{daily}\"\n    catch_up: true"),
    );
    std::fs::write(&config, text).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    drop_file(&dir.path().join("server/data/missed.txt"), b"missed");

    let mut agent = Agent::start(&config, PASSWORD);
    agent
        .wait_for("a scheduled run was missed", Duration::from_secs(20))
        .await;
    eventually("the missed run pulls", Duration::from_secs(10), || {
        inbox.join("missed.txt").exists()
    })
    .await;
    agent
        .wait_for("run finished", Duration::from_secs(10))
        .await;
    assert_eq!(status_json(&config)[0]["last_run"]["trigger"], "catch-up");
    agent.signal("TERM");
    assert_eq!(agent.exit_code(Duration::from_secs(10)).await, 0);
    // Once: a restart right after finds nothing missed.
    let mut again = Agent::start(&config, PASSWORD);
    again.wait_for("scheduled", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(again.count("was missed"), 0, "{}", again.log());
    again.signal("TERM");
    assert_eq!(again.exit_code(Duration::from_secs(10)).await, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let config = write_job_file(
        dir.path(),
        server.addr().port(),
        server.ca_pem(),
        "",
        &watch_push(&outbox, "/data"),
    );
    // A long grace: only the second signal can make it exit soon.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("shutdown_grace: 2s", "shutdown_grace: 5m");
    std::fs::write(&config, text).unwrap();
    let big = std::fs::File::create(outbox.join("big.img")).unwrap();
    big.set_len(4 << 30).unwrap();
    drop(big);
    let mut agent = Agent::start(&config, PASSWORD);
    let remote = dir.path().join("server/data");
    eventually("the upload under way", Duration::from_secs(30), || {
        temp_files(&remote).len() == 1
    })
    .await;
    agent.signal("TERM");
    agent.wait_for("stopping", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "it did not wait for the grace"
    );
    let sent = Instant::now();
    agent.signal("TERM");
    assert_eq!(agent.exit_code(Duration::from_secs(5)).await, 130);
    assert!(sent.elapsed() < Duration::from_secs(3));
    server.shutdown().await;
}

/// `ferry run` with a job file that does not load refuses to start, naming the file and line.
#[tokio::test]
async fn run_refuses_to_start_with_a_job_file_that_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            "version: 1\njobs: [this is: not a job file\n",
            "jobs.yaml:3:1: YAML syntax error",
        ),
        (
            "version: 1\nendpoints: {}\njobs:\n  j:\n    endpoint: nowhere\n    direction: push\n    local: /tmp\n    remote: /x\n",
            "jobs.yaml:5:",
        ),
    ] {
        let config = dir.path().join("jobs.yaml");
        std::fs::write(&config, text).unwrap();
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
                .arg("run")
                .arg("--config")
                .arg(&config)
                .env_remove("FERRY_CONFIG")
                .output(),
        )
        .await
        .expect("it does not start")
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(want), "names the file and line: {stderr}");
    }
}

/// SIGHUP with a job removed and another changed: the removed one runs no more, the changed one
/// runs as it now says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_stops_a_removed_job_and_runs_a_changed_one_as_changed() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let (a, b, b2) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("b2"),
    );
    for d in [&a, &b, &b2] {
        std::fs::create_dir_all(d).unwrap();
    }
    let pull = |name: &str, local: &Path| {
        format!(
            "  {name}:\n    endpoint: local\n    direction: pull\n    local: {}\n    remote: /data\n    schedule: \"*/1 * * * * *\"\n    ready: immediate\n",
            local.display()
        )
    };
    let port = server.addr().port();
    let config = write_job_file(
        dir.path(),
        port,
        server.ca_pem(),
        "",
        &format!("{}{}", pull("alpha", &a), pull("beta", &b)),
    );
    let mut agent = Agent::start(&config, PASSWORD);
    drop_file(&dir.path().join("server/data/one.txt"), b"one");
    eventually("both jobs pull", Duration::from_secs(20), || {
        a.join("one.txt").exists() && b.join("one.txt").exists()
    })
    .await;
    // alpha removed; beta now pulls into b2.
    write_job_file(dir.path(), port, server.ca_pem(), "", &pull("beta", &b2));
    agent.signal("HUP");
    agent
        .wait_for("job file reloaded", Duration::from_secs(10))
        .await;
    assert!(
        agent.log().contains("removed or changed"),
        "{}",
        agent.log()
    );
    let runs = agent.count("run finished");
    drop_file(&dir.path().join("server/data/two.txt"), b"two");
    eventually(
        "the changed job pulls where it now says",
        Duration::from_secs(20),
        || b2.join("two.txt").exists(),
    )
    .await;
    // A few more runs of beta, and still nothing new for the removed job or the old place.
    agent
        .wait_for_n("run finished", runs + 4, Duration::from_secs(20))
        .await;
    assert!(!a.join("two.txt").exists(), "the removed job ran");
    assert!(!b.join("two.txt").exists(), "the changed job ran as before");
    let after = agent.log();
    let reload = after.find("job file reloaded").unwrap();
    assert!(
        !after[reload..]
            .lines()
            .any(|l| l.contains("run finished") && l.contains("alpha")),
        "the removed job finished a run after the reload:\n{after}"
    );
    agent.signal("TERM");
    assert_eq!(agent.exit_code(Duration::from_secs(10)).await, 0);
    server.shutdown().await;
}

/// A watch job with `after_upload: { move_to: DIR }`: each file is moved there once its upload
/// is verified, keeping its path; nothing is left in the outbox or the watched tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_job_moves_each_file_away_only_after_it_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let outbox = dir.path().join("outbox");
    let sent = dir.path().join("sent");
    std::fs::create_dir_all(&outbox).unwrap();
    std::fs::create_dir_all(&sent).unwrap();
    let config = write_job_file(
        dir.path(),
        server.addr().port(),
        server.ca_pem(),
        "",
        &format!(
            "{}    after_upload: {{ move_to: {} }}\n",
            watch_push(&outbox, "/data"),
            sent.display()
        ),
    );
    let mut agent = Agent::start(&config, PASSWORD);
    agent.wait_for("watching", Duration::from_secs(20)).await;
    drop_file(&outbox.join("x/report.csv"), b"id,total\n1,2\n");
    drop_file(&outbox.join("top.csv"), b"top");
    let remote = dir.path().join("server/data");
    eventually("both moved away", Duration::from_secs(20), || {
        sent.join("x/report.csv").exists() && sent.join("top.csv").exists()
    })
    .await;
    // On the server, verified, before they were moved.
    assert_eq!(
        std::fs::read(remote.join("x/report.csv")).unwrap(),
        b"id,total\n1,2\n"
    );
    assert_eq!(std::fs::read(remote.join("top.csv")).unwrap(), b"top");
    assert!(!outbox.join("top.csv").exists() && !outbox.join("x/report.csv").exists());
    eventually("both runs reported", Duration::from_secs(10), || {
        agent.sum("verified") >= 2
    })
    .await;
    assert_eq!(agent.sum("verified"), 2, "{}", agent.log());
    eventually("the outbox empty", Duration::from_secs(10), || {
        status_json(&config)[0]["outbox"] == 0
    })
    .await;
    agent.signal("TERM");
    assert_eq!(agent.exit_code(Duration::from_secs(10)).await, 0);
    server.shutdown().await;
}

/// `ferry status --json` while the agent works: a job in the middle of a run says who runs it
/// (the agent, by pid); a watch job whose server is down says how many files wait and for how
/// long (below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_running_job_and_who_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let port = server.addr().port();
    let config = write_job_file(
        dir.path(),
        port,
        server.ca_pem(),
        "",
        &watch_push(&outbox, "/data"),
    );
    // Running: a sparse 4 GiB upload takes long enough to be seen.
    let big = std::fs::File::create(outbox.join("big.img")).unwrap();
    big.set_len(4 << 30).unwrap();
    drop(big);
    let mut agent = Agent::start(&config, PASSWORD);
    let remote = dir.path().join("server/data");
    eventually("the upload under way", Duration::from_secs(30), || {
        temp_files(&remote).len() == 1
    })
    .await;
    let status = status_json(&config);
    let holder = status[0]["running"].as_str().unwrap_or_default().to_owned();
    assert!(
        holder.contains(&agent.child.id().unwrap().to_string()),
        "running now, by the agent's pid: {status}"
    );
    assert_eq!(status[0]["outbox"], 1, "{status}");
    agent.signal("TERM");
    assert_eq!(agent.exit_code(Duration::from_secs(20)).await, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_how_many_files_wait_and_for_how_long_while_the_server_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    // The server's address and CA, then the server goes away.
    let server = server(dir.path()).await;
    let config = write_job_file(
        dir.path(),
        server.addr().port(),
        server.ca_pem(),
        "",
        &watch_push(&outbox, "/data"),
    );
    server.shutdown().await;
    let mut agent = Agent::start(&config, PASSWORD);
    agent.wait_for("watching", Duration::from_secs(20)).await;
    drop_file(&outbox.join("a.csv"), b"a");
    drop_file(&outbox.join("b.csv"), b"b");
    eventually("both queued", Duration::from_secs(20), || {
        status_json(&config)[0]["outbox"] == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = status_json(&config);
    let age = status[0]["oldest_pending_secs"].as_i64().unwrap_or(-1);
    assert!((2..60).contains(&age), "{status}");
    assert!(status[0]["running"].is_null() || status[0]["running"].is_string());
    let mut shown = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    let human = shown
        .args(["status", "--config"])
        .arg(&config)
        .env_remove("FERRY_TEST_PASSWORD")
        .env_remove("FERRY_CONFIG")
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("outbox: 2 pending, the oldest for"),
        "{human}"
    );
    agent.signal("TERM");
    assert_eq!(agent.exit_code(Duration::from_secs(20)).await, 0);
}

/// Jobs on one endpoint run at once, sharing its `max_connections`: three watch jobs with a
/// big file each and a budget of two have two uploads under way at some moment, never three,
/// and every file arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_jobs_run_at_once_within_the_endpoints_connections() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let mut jobs = String::new();
    const SIZE: u64 = 96 << 20;
    for name in ["one", "two", "three"] {
        let outbox = dir.path().join(name);
        std::fs::create_dir_all(&outbox).unwrap();
        std::fs::create_dir_all(dir.path().join("server/data").join(name)).unwrap();
        let big = std::fs::File::create(outbox.join(format!("{name}.img"))).unwrap();
        big.set_len(SIZE).unwrap();
        drop(big);
        jobs.push_str(&watch_push(&outbox, &format!("/data/{name}")).replacen(
            "  send:",
            &format!("  {name}:"),
            1,
        ));
    }
    let config = write_job_file(dir.path(), server.addr().port(), server.ca_pem(), "", &jobs);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "    timeout: 5s\n",
        "    timeout: 5s\n    max_connections: 2\n",
    );
    std::fs::write(&config, text).unwrap();
    let mut agent = Agent::start(&config, PASSWORD);
    let remote = dir.path().join("server/data");
    let arrived = |name: &str| {
        std::fs::metadata(remote.join(name).join(format!("{name}.img")))
            .is_ok_and(|m| m.len() == SIZE)
    };
    let started = Instant::now();
    let (mut most_uploads, mut most_sessions) = (0, 0);
    while !(arrived("one") && arrived("two") && arrived("three")) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not all arrived: {:?}\n{}",
            tree(&remote).keys().collect::<Vec<_>>(),
            agent.log()
        );
        most_uploads = most_uploads.max(temp_files(&remote).len());
        let pid = agent.child.id().unwrap();
        most_sessions = most_sessions.max(connections_to(server.addr().port(), pid));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        most_uploads >= 2,
        "two uploads under way at once: {most_uploads}"
    );
    assert!(
        (1..=2).contains(&most_sessions),
        "sessions open at once, at most: {most_sessions}"
    );
    agent.signal("TERM");
    assert_eq!(agent.exit_code(Duration::from_secs(10)).await, 0);
    server.shutdown().await;
}

/// Established TCP connections to `port` on 127.0.0.1 that process `pid` holds (the agent's
/// ends of its control connections): the sockets of `/proc/net/tcp` whose inode is one of the
/// process's descriptors. Sockets of other processes (another test's agent that happens to
/// knock on this port) are not the agent's connections.
fn connections_to(port: u16, pid: u32) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let held: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .map(|link| link.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9
                && f[2] == remote
                && f[3] == "01"
                && held.contains(&format!("socket:[{}]", f[9]))
        })
        .count()
}
