//! Another writer of the local tree racing a run: directories flipped to links to outside the
//! root, files swapped for links to secrets after the scan. Nothing may be written, deleted or
//! read outside the root, whatever the timing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Setup, endpoint, job, tree};
use ferry::config::Direction;
use ferry::embedded::{EmbeddedOptions, EmbeddedServer};
use ferry::execute::Silent;
use ferry::run::{Planned, RunReport};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

struct World {
    server: EmbeddedServer,
    server_root: PathBuf,
    dir: TempDir,
}

async fn start() -> World {
    let dir = tempfile::tempdir().unwrap();
    let server_root = dir.path().join("server");
    std::fs::create_dir_all(server_root.join("data")).unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let opts = EmbeddedOptions {
        passive_ports: support::embedded_passive_ports(),
        ..EmbeddedOptions::default()
    };
    let server = EmbeddedServer::start(&server_root, &pki, opts)
        .await
        .unwrap();
    World {
        server,
        server_root,
        dir,
    }
}

impl World {
    fn local(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn setup(&self, jobs: Vec<ferry::config::Job>) -> Setup {
        let mut ep = endpoint(
            self.server.addr(),
            self.server.ca_pem(),
            "ferry",
            ferry::embedded::TEST_PASSWORD,
        );
        ep.max_connections = 4;
        Setup::new(ep, jobs)
    }
}

/// Run a job, calling `on_plan` once the scan and the plan are done, before any transfer.
async fn run_with_hook(
    setup: &Setup,
    name: &str,
    on_plan: &(dyn Fn(&Planned) + Send + Sync),
) -> RunReport {
    let job = setup.config.jobs.get(name).unwrap();
    tokio::time::timeout(
        Duration::from_secs(120),
        ferry::run::run_job(
            &setup.config,
            job,
            &setup.pools,
            setup.store.clone(),
            "test",
            CancellationToken::new(),
            Arc::new(Silent),
            on_plan,
        ),
    )
    .await
    .expect("the run must end")
    .expect("the run reports")
}

/// Flips `dir` between the real directory and a link to `outside`, in a loop, once `go` is set.
struct Flipper {
    go: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    flips: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flipper {
    fn new(dir: &Path, outside: &Path) -> Flipper {
        let go = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let flips = Arc::new(AtomicU64::new(0));
        let (dir, outside) = (dir.to_path_buf(), outside.to_path_buf());
        let real = dir.with_extension("real");
        let thread = {
            let (go, stop, flips) = (go.clone(), stop.clone(), flips.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if !go.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    std::fs::rename(&dir, &real).unwrap();
                    symlink(&outside, &dir).unwrap();
                    std::thread::sleep(Duration::from_micros(300));
                    std::fs::remove_file(&dir).unwrap();
                    std::fs::rename(&real, &dir).unwrap();
                    flips.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(300));
                }
            })
        };
        Flipper {
            go,
            stop,
            flips,
            thread: Some(thread),
        }
    }

    fn start(&self) {
        self.go.store(true, Ordering::Relaxed);
    }

    /// Stop flipping (the real directory is back in place) and say how often it flipped.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.flips.load(Ordering::Relaxed)
    }
}

/// The ways a flip can meet an operation: a link there (refused), the directory swapped back
/// meanwhile (refused), or nothing there for a moment (between the rename and the link).
fn assert_refused_by_the_race(e: &str) {
    assert!(
        e.contains("is a symbolic link")
            || e.contains("was replaced while ferry opened it")
            || e.contains("No such file"),
        "{e}"
    );
}

/// The tree at `dir` is still `before`; else name (some of) what differs.
fn assert_unchanged(dir: &Path, before: &std::collections::BTreeMap<String, String>, what: &str) {
    let now = tree(dir);
    let differing: Vec<&String> = before
        .keys()
        .chain(now.keys())
        .filter(|k| before.get(*k) != now.get(*k))
        .take(10)
        .collect();
    assert!(differing.is_empty(), "{what}: {differing:?}");
}

/// A directory outside every root, with files named like the ones the run handles.
fn decoy_outside(w: &World, names: impl Iterator<Item = String>) -> PathBuf {
    let outside = w.local("outside");
    for name in names {
        std::fs::write(outside.join(name), b"OUTSIDE").unwrap();
    }
    outside
}

fn names(prefix: &str, n: usize) -> impl Iterator<Item = String> + use<> {
    let prefix = prefix.to_owned();
    (0..n).map(move |i| format!("{prefix}{i:03}.csv"))
}

#[tokio::test]
async fn a_directory_flipped_to_a_link_during_a_pull_writes_nothing_outside() {
    let w = start().await;
    std::fs::create_dir_all(w.server_root.join("data/d")).unwrap();
    for name in names("f", 400) {
        std::fs::write(w.server_root.join("data/d").join(&name), name.as_bytes()).unwrap();
    }
    let inbox = w.local("inbox");
    std::fs::create_dir_all(inbox.join("d")).unwrap();
    let outside = decoy_outside(&w, names("f", 400));
    let before = tree(&outside);
    let setup = w.setup(vec![job("pull", Direction::Pull, &inbox, "/data")]);

    let flipper = Flipper::new(&inbox.join("d"), &outside);
    let report = run_with_hook(&setup, "pull", &|_| flipper.start()).await;
    let flips = flipper.finish();
    assert!(flips > 10, "the directory flipped only {flips} times");
    assert_unchanged(&outside, &before, "written outside the root");
    // Files that did arrive are whole; those refused are reported, none vanished silently.
    let arrived = report.execution.transferred as usize;
    let refused = report.execution.failures.len();
    assert_eq!(arrived + refused, 400, "{:?}", report.execution.failures);
    for f in &report.execution.failures {
        assert_refused_by_the_race(&f.error.to_string());
    }

    // Once the other writer is gone, the next run brings the rest, correctly.
    let report = run_with_hook(&setup, "pull", &|_| {}).await;
    assert_eq!(report.exit_code(), 0, "{:?}", report.execution.failures);
    for name in names("f", 400) {
        assert_eq!(
            std::fs::read(inbox.join("d").join(&name)).unwrap(),
            name.as_bytes()
        );
    }
    assert_unchanged(&outside, &before, "written outside the root");
}

#[tokio::test]
async fn a_directory_flipped_to_a_link_during_deletes_deletes_nothing_outside() {
    let w = start().await;
    std::fs::create_dir_all(w.server_root.join("data/d")).unwrap();
    std::fs::write(w.server_root.join("data/keep.txt"), b"keep").unwrap();
    let inbox = w.local("inbox");
    let outside = decoy_outside(&w, names("stale", 400));
    let before = tree(&outside);
    let mut j = job("pull", Direction::Pull, &inbox, "/data");
    j.delete = true;
    // 400 local-only files against one known: far over the default max_delete, on purpose.
    j.max_delete = ferry::config::MaxDelete::Count(u64::MAX);
    let setup = w.setup(vec![j]);
    run_with_hook(&setup, "pull", &|_| {}).await;
    let mut deleted = 0;
    for round in 0..3 {
        // Files that exist locally only: a mirror deletes them.
        for name in names("stale", 400) {
            std::fs::write(inbox.join("d").join(name), b"stale").unwrap();
        }
        let flipper = Flipper::new(&inbox.join("d"), &outside);
        let report = run_with_hook(&setup, "pull", &|p| {
            assert_eq!(p.plan.count(ferry::plan::ActionKind::DeleteLocalFile), 400);
            flipper.start();
        })
        .await;
        let flips = flipper.finish();
        assert!(flips > 0, "round {round}: never flipped");
        assert_unchanged(
            &outside,
            &before,
            &format!("round {round}: deleted outside the root"),
        );
        deleted += report.execution.deleted;
        for f in &report.execution.failures {
            assert_refused_by_the_race(&f.error.to_string());
        }
    }
    assert!(
        deleted > 0,
        "no delete ran at all: the race was not exercised"
    );
}

#[tokio::test]
async fn a_file_swapped_after_the_scan_is_never_sent() {
    let w = start().await;
    let outbox = w.local("outbox");
    let secrets = w.local("secrets");
    let secret = secrets.join("key.pem");
    std::fs::write(&secret, b"TOP-SECRET-KEY-MATERIAL").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(secrets.join("g.txt"), b"TOP-SECRET-IN-A-DIRECTORY").unwrap();
    for name in names("f", 50) {
        std::fs::write(outbox.join(name), b"public").unwrap();
    }
    std::fs::create_dir_all(outbox.join("sub")).unwrap();
    std::fs::write(outbox.join("sub/g.txt"), b"public").unwrap();
    let setup = w.setup(vec![job("push", Direction::Push, &outbox, "/data")]);
    let report = run_with_hook(&setup, "push", &|_| {
        // After the scan: a file becomes a link to a secret, another is replaced by a new file
        // of the same size and time, and a directory becomes a link to a secret directory.
        std::fs::remove_file(outbox.join("f000.csv")).unwrap();
        symlink(&secret, outbox.join("f000.csv")).unwrap();
        let f1 = outbox.join("f001.csv");
        let mtime = std::fs::metadata(&f1).unwrap().modified().unwrap();
        std::fs::remove_file(&f1).unwrap();
        std::fs::write(&f1, b"PUBLIC").unwrap();
        filetime::set_file_mtime(&f1, filetime::FileTime::from_system_time(mtime)).unwrap();
        std::fs::rename(outbox.join("sub"), outbox.join("sub.away")).unwrap();
        symlink(&secrets, outbox.join("sub")).unwrap();
    })
    .await;
    // Nothing secret reached the server, under any name.
    for (path, _) in tree(&w.server_root) {
        let p = w.server_root.join(&path);
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(10).any(|w| w == b"TOP-SECRET"),
                "{path} holds the secret"
            );
        }
    }
    let mut changed: Vec<String> = report
        .execution
        .changed
        .iter()
        .map(|c| c.path.to_string())
        .collect();
    changed.sort();
    assert_eq!(changed, vec!["f000.csv", "f001.csv", "sub/g.txt"]);
    assert_eq!(report.execution.transferred, 48, "51 files, 3 swapped");
    assert!(report.execution.failures.is_empty(), "skipped, not failed");
    assert_eq!(report.exit_code(), 0);
    let data = w.server_root.join("data");
    assert!(!data.join("f000.csv").exists() && !data.join("f001.csv").exists());
    assert!(!data.join("sub/g.txt").exists());
}

#[tokio::test]
async fn pulled_files_are_owner_only_until_done_then_keep_or_follow_their_mode() {
    let w = start().await;
    std::fs::write(w.server_root.join("data/new.txt"), b"new").unwrap();
    std::fs::write(w.server_root.join("data/private.txt"), b"v2 private").unwrap();
    let inbox = w.local("inbox");
    std::fs::write(inbox.join("private.txt"), b"v1").unwrap();
    std::fs::set_permissions(
        inbox.join("private.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let setup = w.setup(vec![job("pull", Direction::Pull, &inbox, "/data")]);
    let report = run_with_hook(&setup, "pull", &|_| {}).await;
    assert_eq!(report.execution.transferred, 2);
    let mode = |name: &str| {
        std::fs::metadata(inbox.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        std::fs::read(inbox.join("private.txt")).unwrap(),
        b"v2 private"
    );
    assert_eq!(mode("private.txt"), 0o600, "an updated file keeps its mode");
    assert_eq!(
        mode("new.txt"),
        ferry::local_fs::new_file_mode(),
        "a new file follows the umask"
    );
}
