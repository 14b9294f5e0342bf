//! Faults injected between ferry and real servers, seeded and bounded: connections cut at
//! random byte offsets, stalled or refused (a TCP proxy in front of the embedded server), and
//! server sessions killed at random or refused with 421 (vsftpd). Every run must end with both
//! trees identical by SHA-256, no temporary file left, and no final name ever seen with wrong
//! content by a reader polling the destination meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Setup, endpoint, job, pseudo_random, tree};
use ferry::config::{Direction, RetryPolicy};
use ferry::embedded::{EmbeddedOptions, EmbeddedServer};
use sha2::{Digest, Sha256};
use support::proxy::{Aim, FaultProxy, Faults, data_port_blocks};
use support::vsftpd::{Vsftpd, VsftpdOptions};

const UPSTREAM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn patient(j: &mut ferry::config::Job) {
    j.retry = RetryPolicy {
        attempts: 15,
        initial: Duration::from_millis(50),
        max: Duration::from_secs(1),
    };
}

/// `n` files of mixed sizes (0 B to 1 MiB) in 10 directories.
fn write_mixed_tree(root: &Path, n: usize) -> BTreeMap<String, String> {
    for i in 0..n {
        let size = match i % 10 {
            0 => 0,
            1 => 1_048_576,
            _ => (i * 7919) % 300_000,
        };
        let p = root.join(format!("d{}/f{i:03}.bin", i % 10));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, pseudo_random(size, i as u64 + 1)).unwrap();
    }
    tree(root)
}

/// Polls a destination tree while a run goes on: any file under a final name must have the
/// content it is meant to have (temporary names are ferry's business). Returns the
/// violations when stopped.
struct Reader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Reader {
    fn start(root: PathBuf, expected: BTreeMap<String, String>) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for (rel, want) in &expected {
                        if want == "dir" {
                            continue;
                        }
                        // A file may not be there yet; when it is, it must be whole.
                        if let Ok(bytes) = std::fs::read(root.join(rel)) {
                            let got = hex::encode(Sha256::digest(&bytes));
                            if &got != want && !bad.contains(rel) {
                                bad.push(rel.clone());
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                bad
            })
        };
        Reader {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn explain(report: &ferry::run::RunReport) -> String {
    let mut out = Vec::new();
    ferry::report::print_failures(report, &mut out).unwrap();
    format!(
        "{}\nfatal: {:?}",
        String::from_utf8_lossy(&out),
        report.execution.fatal
    )
}

struct Faulty {
    server: EmbeddedServer,
    proxy: FaultProxy,
    server_root: PathBuf,
    dir: tempfile::TempDir,
}

async fn embedded_behind_proxy(faults: Faults) -> Faulty {
    let dir = tempfile::tempdir().unwrap();
    let server_root = dir.path().join("server");
    std::fs::create_dir_all(server_root.join("data")).unwrap();
    std::fs::create_dir_all(dir.path().join("pki")).unwrap();
    // Room for the data connections stalls keep busy until ferry's timeout ends them.
    let ports = data_port_blocks(4);
    let server = EmbeddedServer::start(
        &server_root,
        &dir.path().join("pki"),
        EmbeddedOptions {
            listen_ip: UPSTREAM,
            passive_ports: ports.clone(),
            ..EmbeddedOptions::default()
        },
    )
    .await
    .unwrap();
    let proxy = FaultProxy::start(UPSTREAM, server.addr().port(), ports, faults).await;
    Faulty {
        server,
        proxy,
        server_root,
        dir,
    }
}

impl Faulty {
    fn local(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn setup(&self, jobs: Vec<ferry::config::Job>) -> Setup {
        let mut ep = endpoint(
            self.proxy.addr(),
            self.server.ca_pem(),
            "ferry",
            ferry::embedded::TEST_PASSWORD,
        );
        ep.max_connections = 4;
        // Stalled connections end with this timeout.
        ep.timeout = Duration::from_secs(3);
        Setup::new(ep, jobs)
    }
}

/// Push then pull, each watched by a reader of its destination; both must end clean.
async fn push_and_pull(w: &Faulty, outbox: &Path, expected: &BTreeMap<String, String>) {
    let inbox = w.local("inbox");
    let mut push = job("push", Direction::Push, outbox, "/data");
    let mut pull = job("pull", Direction::Pull, &inbox, "/data");
    patient(&mut push);
    patient(&mut pull);
    let setup = w.setup(vec![push, pull]);

    let reader = Reader::start(w.server_root.join("data"), expected.clone());
    let report = tokio::time::timeout(Duration::from_secs(600), setup.run("push"))
        .await
        .expect("the push ends")
        .expect("the push runs");
    assert_eq!(
        reader.finish(),
        Vec::<String>::new(),
        "a final name on the server held wrong content"
    );
    assert_eq!(report.exit_code(), 0, "push: {}", explain(&report));

    let reader = Reader::start(inbox.clone(), expected.clone());
    let report = tokio::time::timeout(Duration::from_secs(600), setup.run("pull"))
        .await
        .expect("the pull ends")
        .expect("the pull runs");
    assert_eq!(
        reader.finish(),
        Vec::<String>::new(),
        "a final local name held wrong content"
    );
    assert_eq!(report.exit_code(), 0, "pull: {}", explain(&report));

    // Identical, and nothing else: no temporary file on either side.
    assert_eq!(&tree(&w.server_root.join("data")), expected);
    assert_eq!(&tree(&inbox), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_files_get_through_cut_stalled_and_refused_connections() {
    let w = embedded_behind_proxy(Faults {
        seed: 7,
        cut: 0.2,
        stall: 0.02,
        refuse: 0.05,
        max_cut_offset: 256 * 1024,
    })
    .await;
    let outbox = w.local("outbox");
    let expected = write_mixed_tree(&outbox, 300);
    push_and_pull(&w, &outbox, &expected).await;
    let stats = w.proxy.stats();
    assert!(
        stats.cut >= 20 && stats.refused >= 5,
        "faults really happened: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabyte_file_resumes_across_cut_connections() {
    let w = embedded_behind_proxy(Faults {
        seed: 11,
        // Every connection gets a cut point; only the file's data connections carry enough
        // bytes (in the direction aimed at) to reach it.
        cut: 1.0,
        stall: 0.0,
        refuse: 0.0,
        max_cut_offset: 90_000_000,
    })
    .await;
    let outbox = w.local("outbox");
    std::fs::write(outbox.join("big.bin"), pseudo_random(100_000_000, 5)).unwrap();
    std::fs::write(outbox.join("small.txt"), b"small").unwrap();
    let expected = tree(&outbox);
    let inbox = w.local("inbox");
    let mut push = job("push", Direction::Push, &outbox, "/data");
    let mut pull = job("pull", Direction::Pull, &inbox, "/data");
    patient(&mut push);
    patient(&mut pull);
    let setup = w.setup(vec![push, pull]);
    for (name, dest, aim) in [
        ("push", w.server_root.join("data"), Aim::Uploads),
        ("pull", inbox.clone(), Aim::Downloads),
    ] {
        // Offsets count the bytes the file travels in, so its data connections are the ones
        // cut (at a random point of the file), not the few bytes going the other way.
        w.proxy.aim(aim);
        let cut_before = w.proxy.stats().cut;
        let reader = Reader::start(dest.clone(), expected.clone());
        let report = tokio::time::timeout(Duration::from_secs(600), setup.run(name))
            .await
            .expect("ends")
            .expect("runs");
        assert_eq!(
            reader.finish(),
            Vec::<String>::new(),
            "{name}: wrong content seen"
        );
        assert_eq!(
            report.exit_code(),
            0,
            "{name}: {:?}",
            report.execution.failures
        );
        assert_eq!(&tree(&dest), &expected, "{name}");
        let cuts = w.proxy.stats().cut - cut_before;
        assert!(
            cuts >= 1,
            "{name}: no connection was cut: {:?}",
            w.proxy.stats()
        );
        // The last try sent only the rest of the file: it resumed, it did not start over.
        assert!(
            report.execution.bytes < 100_000_000,
            "{name}: {} bytes in the last try after {cuts} cuts",
            report.execution.bytes
        );
    }
}

fn vsftpd(opts: VsftpdOptions) -> Option<Vsftpd> {
    Vsftpd::start(opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_killed_at_random_by_vsftpd_cost_retries_not_files() {
    let Some(v) = vsftpd(VsftpdOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let expected = write_mixed_tree(&outbox, 300);
    std::fs::write(outbox.join("big.bin"), pseudo_random(60 * 1024 * 1024, 9)).unwrap();
    let expected = {
        let mut e = expected;
        e.extend(tree(&outbox));
        e
    };
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let mut ep = endpoint(v.addr(), v.ca_pem(), v.user(), v.password());
    ep.max_connections = 4;
    ep.timeout = Duration::from_secs(5);
    std::fs::create_dir_all(v.root().join("data")).unwrap();
    v.give_root_to_user();
    let mut push = job("push", Direction::Push, &outbox, "/data");
    let mut pull = job("pull", Direction::Pull, &inbox, "/data");
    patient(&mut push);
    patient(&mut pull);
    let setup = Setup::new(ep, vec![push, pull]);
    let killing = Arc::new(AtomicBool::new(true));
    let killer = {
        let killing = killing.clone();
        let v = &v;
        async move {
            let mut killed = 0;
            while killing.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if v.kill_one_session() {
                    killed += 1;
                }
            }
            killed
        }
    };
    let runs = async {
        let push = setup.run("push").await.expect("push runs");
        let pull = setup.run("pull").await.expect("pull runs");
        killing.store(false, Ordering::Relaxed);
        (push, pull)
    };
    let ((push, pull), killed) = tokio::join!(runs, killer);
    assert!(killed >= 2, "only {killed} sessions killed");
    assert_eq!(push.exit_code(), 0, "push: {:?}", push.execution.failures);
    assert_eq!(pull.exit_code(), 0, "pull: {:?}", pull.execution.failures);
    assert_eq!(tree(&v.root().join("data")), expected);
    assert_eq!(tree(&inbox), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_421_limit_below_the_pool_still_gets_every_file() {
    let Some(v) = vsftpd(VsftpdOptions {
        max_per_ip: Some(2),
        ..VsftpdOptions::default()
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let expected = write_mixed_tree(&outbox, 60);
    let mut ep = endpoint(v.addr(), v.ca_pem(), v.user(), v.password());
    ep.max_connections = 6;
    std::fs::create_dir_all(v.root().join("data")).unwrap();
    v.give_root_to_user();
    let mut push = job("push", Direction::Push, &outbox, "/data");
    patient(&mut push);
    let setup = Setup::new(ep, vec![push]);
    let report = setup.run("push").await.expect("runs");
    assert_eq!(report.exit_code(), 0, "{:?}", report.execution.failures);
    assert_eq!(tree(&v.root().join("data")), expected);
    let pool =
        ferry::run::pool_for(&setup.config, &setup.pools, &setup.config.jobs["push"]).unwrap();
    assert!(
        pool.allowed() <= 2,
        "the pool shrank to what the server allows: {}",
        pool.allowed()
    );
}

/// vsftpd hangs up on sessions idle for a second (`idle_session_timeout=1`): the next run over
/// the same pool, as in the agent, costs reconnects, never an error. And a run logs in at most
/// once per connection it uses: vsftpd's own log counts the logins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_closed_by_an_idle_server_cost_a_reconnect_not_an_error() {
    let Some(v) = vsftpd(VsftpdOptions {
        idle_session_timeout: Some(1),
        ..VsftpdOptions::default()
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    write_mixed_tree(&outbox, 40);
    let mut ep = endpoint(v.addr(), v.ca_pem(), v.user(), v.password());
    ep.max_connections = 3;
    std::fs::create_dir_all(v.root().join("data")).unwrap();
    v.give_root_to_user();
    let setup = Setup::new(ep, vec![job("push", Direction::Push, &outbox, "/data")]);
    let logins = || v.log_text().matches("OK LOGIN: Client").count();
    let first = setup.run("push").await.expect("runs");
    assert_eq!(first.exit_code(), 0, "{}", explain(&first));
    assert_eq!(tree(&v.root().join("data")), tree(&outbox));
    let after_first = logins();
    assert!(
        (1..=3).contains(&after_first),
        "one login per connection at most, 3 connections: {after_first} logins"
    );
    // Sessions idle for longer than the server allows, then more work over the same pool: at
    // once (they look fresh to the pool and fail on first use), and after the pool's own
    // NOOP check is due.
    let check_after = ferry::transport::pool::PoolSettings::default().check_after;
    for (round, idle) in [Duration::from_secs(3), check_after + Duration::from_secs(1)]
        .into_iter()
        .enumerate()
    {
        tokio::time::sleep(idle).await;
        assert_eq!(v.session_count(), 0, "vsftpd closed the idle sessions");
        std::fs::write(outbox.join(format!("later-{round}.txt")), b"new").unwrap();
        let again = setup.run("push").await.expect("runs");
        assert_eq!(again.exit_code(), 0, "round {round}: {}", explain(&again));
        assert_eq!(again.execution.transferred, 1, "round {round}");
        assert_eq!(tree(&v.root().join("data")), tree(&outbox));
    }
    let total = logins();
    assert!(
        total > after_first && total <= after_first + 6,
        "reconnects after the idle time, one per connection used: {after_first} then {total}"
    );
}

/// The stall once seen in 1 of 18 runs (`SIZE .../.f25.csv.ferry-tmp: no answer within 30s`
/// right after that file's upload, while another connection moved a 400 MiB file), looked for
/// under the same load: 18 pushes of 300 small files and one of 400 MiB over 4 connections to
/// vsftpd, each run into an empty remote. No run may hit a timeout. Slow (minutes), so run on
/// demand: `cargo test --release --test faults -- --ignored size_stall`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a stress run of minutes; run on demand"]
async fn size_stall_under_a_big_parallel_upload_does_not_come_back() {
    let Some(v) = vsftpd(VsftpdOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    write_mixed_tree(&outbox, 300);
    std::fs::write(outbox.join("big.bin"), pseudo_random(400 * 1024 * 1024, 7)).unwrap();
    let mut ep = endpoint(v.addr(), v.ca_pem(), v.user(), v.password());
    ep.max_connections = 4;
    v.give_root_to_user();
    let mut stalls = Vec::new();
    for round in 0..18 {
        let remote = format!("/round{round}");
        let mut push = job("push", Direction::Push, &outbox, &remote);
        push.retry = RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        };
        let setup = Setup::new(ep.clone(), vec![push]);
        let started = std::time::Instant::now();
        let report = setup.run("push").await.expect("runs");
        let took = started.elapsed();
        for f in &report.execution.failures {
            stalls.push(format!("round {round}: {}: {}", f.path, f.error));
        }
        eprintln!(
            "round {round}: {:.1}s, {} transferred, {} failed",
            took.as_secs_f64(),
            report.execution.transferred,
            report.execution.failures.len()
        );
        let _ = std::fs::remove_dir_all(v.root().join(format!("round{round}")));
    }
    assert!(stalls.is_empty(), "{stalls:#?}");
}
