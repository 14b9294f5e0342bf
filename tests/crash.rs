//! The power goes, the disk fills: `ferry sync` killed with SIGKILL at random moments and
//! restarted, a pull onto a full disk. Nothing partial is ever visible under a final name,
//! nothing already in place is damaged, and the trees end identical.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{pseudo_random, tree};
use ferry::embedded::{EmbeddedOptions, EmbeddedServer};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

const PASSWORD: &str = "crash-test-secret";

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

fn job_file(dir: &Path, server: &EmbeddedServer, outbox: &Path, inbox: &Path) -> PathBuf {
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
    timeout: 10s
jobs:
  push:
    endpoint: local
    direction: push
    local: {outbox}
    remote: /data
    retry: {{ attempts: 5, initial: 100ms, max: 1s }}
  pull:
    endpoint: local
    direction: pull
    local: {inbox}
    remote: /data
    retry: {{ attempts: 5, initial: 100ms, max: 1s }}
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

fn ferry(config: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env("FERRY_TEST_PASSWORD", PASSWORD)
        .env_remove("FERRY_CONFIG")
        .env_remove("FERRY_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Polls `root` for files under their final names: each must have the content it is meant to
/// have. Returns the paths seen with anything else.
fn watch(
    root: PathBuf,
    expected: BTreeMap<String, String>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut bad = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for (rel, want) in &expected {
                if let Ok(bytes) = std::fs::read(root.join(rel))
                    && &hex::encode(Sha256::digest(&bytes)) != want
                    && !bad.contains(rel)
                {
                    bad.push(rel.clone());
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bad
    })
}

/// SIGKILL a `ferry sync JOB` at a random moment, `times` times, then let one run finish.
async fn kill_and_restart(config: &Path, job: &str, times: usize, seed: u64) -> usize {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut killed = 0;
    for _ in 0..times {
        let mut child = ferry(config, &["sync", job]).spawn().unwrap();
        let after = Duration::from_millis(rng.random_range(30..250));
        tokio::select! {
            _ = tokio::time::sleep(after) => {
                child.start_kill().unwrap();
                killed += 1;
            }
            _ = child.wait() => {}
        }
        let _ = child.wait().await;
    }
    let out = ferry(config, &["sync", job]).output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{job} after the kills: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_never_leaves_a_partial_file_and_the_trees_end_identical() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let (outbox, inbox) = (dir.path().join("outbox"), dir.path().join("inbox"));
    std::fs::create_dir_all(outbox.join("many")).unwrap();
    std::fs::create_dir_all(&inbox).unwrap();
    // Enough for 20 runs killed within their first quarter second to leave work to do.
    std::fs::write(outbox.join("large.bin"), pseudo_random(250_000_000, 3)).unwrap();
    for i in 0..40 {
        std::fs::write(
            outbox.join(format!("many/f{i:02}.csv")),
            pseudo_random(2_000_000 + i * 997, i as u64),
        )
        .unwrap();
    }
    let expected = tree(&outbox);
    let config = job_file(dir.path(), &server, &outbox, &inbox);
    let stop = Arc::new(AtomicBool::new(false));
    let on_server = watch(
        dir.path().join("server/data"),
        expected.clone(),
        stop.clone(),
    );
    let on_disk = watch(inbox.clone(), expected.clone(), stop.clone());

    let killed = kill_and_restart(&config, "push", 20, 1).await;
    eprintln!("push: {killed} of 20 killed");
    assert!(killed >= 18, "only {killed} of 20 runs were killed mid-way");
    assert_eq!(tree(&dir.path().join("server/data")), expected);
    let killed = kill_and_restart(&config, "pull", 20, 2).await;
    eprintln!("pull: {killed} of 20 killed");
    assert!(killed >= 18, "only {killed} of 20 runs were killed mid-way");
    assert_eq!(
        tree(&inbox),
        expected,
        "identical, and no temporary file left"
    );

    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        on_server.join().unwrap(),
        Vec::<String>::new(),
        "partial content under a final name on the server"
    );
    assert_eq!(
        on_disk.join().unwrap(),
        Vec::<String>::new(),
        "partial content under a final local name"
    );
    server.shutdown().await;
}

/// A pull onto a full disk: the file that does not fit fails with a clear error naming it, the
/// version already in place stays whole, and no temporary file is left taking the space.
#[tokio::test]
async fn a_full_local_disk_fails_the_file_clearly_and_keeps_the_earlier_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let small_disk = mount_small_tmpfs(&inbox, "4m");
    let earlier = b"the earlier version".to_vec();
    std::fs::write(inbox.join("big.bin"), &earlier).unwrap();
    std::fs::write(
        dir.path().join("server/data/big.bin"),
        pseudo_random(8_000_000, 4),
    )
    .unwrap();
    std::fs::write(dir.path().join("server/data/small.txt"), b"fits").unwrap();
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let config = job_file(dir.path(), &server, &outbox, &inbox);
    let out = ferry(&config, &["sync", "pull"]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("big.bin") && stderr.contains("No space left on device"),
        "the error names the file and the cause: {stderr}"
    );
    assert!(
        !stderr.contains("retrying") && !stderr.contains("trying again"),
        "a full disk is not retried as a network error: {stderr}"
    );
    assert_eq!(std::fs::read(inbox.join("big.bin")).unwrap(), earlier);
    assert_eq!(std::fs::read(inbox.join("small.txt")).unwrap(), b"fits");
    assert!(
        !inbox.join(".big.bin.ferry-tmp").exists(),
        "the partial file is gone"
    );
    drop(small_disk);
    server.shutdown().await;
}

/// A tmpfs of `size` mounted over `dir` (the tests run as root), unmounted on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn mount_small_tmpfs(dir: &Path, size: &str) -> Mounted {
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cannot mount a small tmpfs on {} (the tests run as root)",
        dir.display()
    );
    Mounted(dir.to_path_buf())
}
