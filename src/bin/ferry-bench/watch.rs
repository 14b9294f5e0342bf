//! `watch`: the agent's watch-folder latency. A stream of files is written into a watched
//! directory; for each, the time from its close to its appearance under its final name on the
//! server (the server's own rename event) is taken. Prints p50, p95 and max against the target
//! `settle + 1 s` at the 95th percentile, after checking every file's SHA-256 on the server.
//!
//! The agent runs in this process (the same `ferry::agent::run` as `ferry run`), against the
//! embedded FTPS server, so the figures include TLS, the outbox in SQLite, the settle check and
//! verification, on the same cores as the writer. The other scenarios run `ferry` as a child.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry::embedded::{EmbeddedOptions, EmbeddedServer, ServerEvent, TEST_PASSWORD};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::{BenchResult, io};

/// The stream of `files` files, `every` apart, into a watched directory; prints the latencies.
/// `Ok(false)` when p95 is over `settle + 1 s`.
pub async fn watch(
    files: usize,
    settle: Duration,
    every: Duration,
    size: usize,
) -> BenchResult<bool> {
    let dir = io("temporary directory", tempfile::tempdir())?;
    let root = dir.path();
    for d in ["server/data", "pki", "outbox", "state"] {
        io(d, std::fs::create_dir_all(root.join(d)))?;
    }
    let server = EmbeddedServer::start(
        &root.join("server"),
        &root.join("pki"),
        EmbeddedOptions {
            passive_ports: 58000..=58099,
            ..EmbeddedOptions::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let password = root.join("password");
    write_private(&password, TEST_PASSWORD)?;
    let job_file = root.join("jobs.yaml");
    let yaml = format!(
        "version: 1
state_dir: {state}
shutdown_grace: 5s
endpoints:
  bench:
    host: 127.0.0.1
    port: {port}
    user: ferry
    password_file: {password}
    ca_file: {ca}
    max_connections: 4
jobs:
  watch:
    endpoint: bench
    direction: push
    local: {outbox}
    remote: /data
    watch: true
    settle: {settle}
    verify: hash
",
        state = root.join("state").display(),
        port = server.addr().port(),
        password = password.display(),
        ca = server.ca_pem().display(),
        outbox = root.join("outbox").display(),
        settle = humantime::format_duration(settle),
    );
    io("job file", std::fs::write(&job_file, yaml))?;
    let config = ferry::config::load(&job_file).map_err(|e| e.to_string())?;

    let shutdown = CancellationToken::new();
    let (_reload_tx, reloads) = tokio::sync::mpsc::channel(1);
    let agent = tokio::spawn(ferry::agent::run(
        config,
        job_file.clone(),
        Arc::new(ferry::agent::timer::SystemClock),
        shutdown.clone(),
        reloads,
    ));
    // Let the watcher and the start-up rescan settle in.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let dirs = 10;
    for d in 0..dirs {
        io(
            "outbox",
            std::fs::create_dir_all(root.join(format!("outbox/d{d}"))),
        )?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!(
        "watch: {files} files of {size} B, one every {}, settle {}, embedded FTPS server",
        humantime::format_duration(every),
        humantime::format_duration(settle)
    );
    let mut closed: BTreeMap<String, Instant> = BTreeMap::new();
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    let started = Instant::now();
    for i in 0..files {
        let rel = format!("d{}/f{i:05}.dat", i % dirs);
        let body: Vec<u8> = (0..size).map(|b| ((b * 31 + i * 7) % 251) as u8).collect();
        io(
            "write",
            std::fs::write(root.join("outbox").join(&rel), &body),
        )?;
        closed.insert(format!("/data/{rel}"), Instant::now());
        expected.insert(rel, hex::encode(Sha256::digest(&body)));
        tokio::time::sleep(every).await;
    }
    let written = started.elapsed();

    // Wait for every file under its final name.
    let deadline = Instant::now() + settle + Duration::from_secs(60);
    let arrived = loop {
        let events = server.timed_events();
        let mut arrived: BTreeMap<String, Instant> = BTreeMap::new();
        for (at, event) in events {
            if let ServerEvent::Renamed { to, .. } = event
                && closed.contains_key(&to)
            {
                arrived.entry(to).or_insert(at);
            }
        }
        if arrived.len() == files {
            break arrived;
        }
        if Instant::now() > deadline {
            shutdown.cancel();
            return Err(format!(
                "only {} of {files} files arrived within {:?} of the last write",
                arrived.len(),
                settle + Duration::from_secs(60)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let total = started.elapsed();
    shutdown.cancel();
    let _ = agent.await;

    // Every file checked on the server before its time counts.
    for (rel, sha) in &expected {
        let bytes = io(rel, std::fs::read(root.join("server/data").join(rel)))?;
        if &hex::encode(Sha256::digest(&bytes)) != sha {
            return Err(format!("{rel}: wrong content on the server"));
        }
    }
    let uploads = server
        .events()
        .iter()
        .filter(|e| matches!(e, ServerEvent::Stored { .. }))
        .count();
    server.shutdown().await;

    let mut latencies: Vec<Duration> = arrived
        .iter()
        .map(|(path, at)| at.saturating_duration_since(closed[path]))
        .collect();
    latencies.sort();
    let pick = |q: f64| {
        latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let (p50, p95, max) = (pick(0.50), pick(0.95), pick(1.0));
    let target = settle + Duration::from_secs(1);
    println!(
        "  written in {:.1} s, all on the server after {:.1} s, {uploads} uploads for {files} files, \
         every SHA-256 checked",
        written.as_secs_f64(),
        total.as_secs_f64()
    );
    println!(
        "  latency close -> final name: p50 {:.2} s, p95 {:.2} s, max {:.2} s (target p95 <= {:.2} s: {})",
        p50.as_secs_f64(),
        p95.as_secs_f64(),
        max.as_secs_f64(),
        target.as_secs_f64(),
        if p95 <= target { "met" } else { "MISSED" }
    );
    Ok(p95 <= target && uploads == files)
}

pub fn write_private(path: &Path, text: &str) -> BenchResult<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = io(
        "password file",
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path),
    )?;
    io("password file", f.write_all(text.as_bytes()))
}
