//! Building job configurations and running jobs for ferry's end-to-end tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry::config::{
    AfterUpload, Config, DataMode, Direction, Endpoint, Filter, Job, Limits, MaxDelete,
    PasswordSource, RetryPolicy, Secret, TlsMode, TrustRoots, Verify,
};
use ferry::execute::Silent;
use ferry::run::{self, JobError, RunReport};
use ferry::state::{SharedStore, Store};
use ferry::transport::pool::Pools;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

pub fn endpoint(addr: SocketAddr, ca: &Path, user: &str, password: &str) -> Endpoint {
    Endpoint {
        name: "server".to_owned(),
        host: addr.ip().to_string(),
        port: addr.port(),
        tls: TlsMode::Explicit,
        user: user.to_owned(),
        password: PasswordSource::Literal(Secret::new(password)),
        trust: TrustRoots::CaFile(ca.to_path_buf()),
        pin_sha256: None,
        client_cert: None,
        client_key: None,
        data_mode: DataMode::Passive,
        max_connections: 2,
        timeout: Duration::from_secs(10),
        tls_max_version: None,
        active_ports: None,
        use_pasv_address: false,
        limits: Limits::default(),
    }
}

pub fn job(name: &str, direction: Direction, local: &Path, remote: &str) -> Job {
    Job {
        name: name.to_owned(),
        endpoint: "server".to_owned(),
        direction,
        local: local.to_path_buf(),
        remote: remote.to_owned(),
        schedule: None,
        timezone: None,
        filter: Filter::all(),
        delete: false,
        max_delete: MaxDelete::default(),
        verify: Verify::Size,
        retry: RetryPolicy {
            attempts: 2,
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
        watch: false,
        settle: Duration::from_secs(2),
        after_upload: AfterUpload::Keep,
        checksum_sidecar: false,
        catch_up: false,
        jitter: None,
        rescan: std::time::Duration::from_secs(600),
        ready: ferry::config::Ready::Immediate,
        hooks: ferry::config::Hooks::default(),
        remote_after: ferry::config::RemoteAfter::Keep,
        publish: None,
        backup_dir: None,
        conflict: ferry::config::ConflictPolicy::KeepBoth,
        direct_upload: false,
    }
}

/// A job file in memory: one endpoint, some jobs, its own state directory.
pub struct Setup {
    pub config: Config,
    pub store: SharedStore,
    /// The endpoint pools of this setup: sessions are kept between its runs, as in one
    /// `ferry sync --all` or in the agent.
    pub pools: Pools,
    _state: tempfile::TempDir,
}

impl Setup {
    pub fn new(endpoint: Endpoint, jobs: Vec<Job>) -> Setup {
        let state = tempfile::tempdir().unwrap();
        let config = Config {
            source: PathBuf::from("<test>"),
            state_dir: state.path().to_path_buf(),
            endpoints: BTreeMap::from([("server".to_owned(), endpoint)]),
            jobs: jobs.into_iter().map(|j| (j.name.clone(), j)).collect(),
            agent: Default::default(),
            warnings: Vec::new(),
            notes: Vec::new(),
            unavailable: BTreeMap::new(),
            unavailable_findings: Vec::new(),
        };
        let store = SharedStore::new(Store::open(state.path()).unwrap());
        Setup {
            config,
            store,
            pools: Pools::new(),
            _state: state,
        }
    }

    pub async fn run(&self, name: &str) -> Result<RunReport, JobError> {
        self.run_with_cancel(name, CancellationToken::new()).await
    }

    pub async fn run_with_cancel(
        &self,
        name: &str,
        cancel: CancellationToken,
    ) -> Result<RunReport, JobError> {
        let job = self.config.jobs.get(name).unwrap();
        run::run_job(
            &self.config,
            job,
            &self.pools,
            self.store.clone(),
            "test",
            cancel,
            Arc::new(Silent),
            &|_| {},
        )
        .await
    }

    /// Run and insist on a clean outcome.
    pub async fn sync_ok(&self, name: &str) -> RunReport {
        let report = self
            .run(name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            report.exit_code(),
            0,
            "{name} did not finish cleanly: failures {:?}, fatal {:?}, problems {:?} {:?}",
            report.execution.failures,
            report.execution.fatal,
            report.planned.local.problems,
            report.planned.remote.problems
        );
        report
    }
}

/// Push the sample tree to `/data` on the server at `ep`, pull it back into another directory,
/// then sync both ways again: 7 files each way, the three trees equal (`served` is where the
/// server keeps `/data`), nothing moved the second time.
pub async fn round_trip_sample_tree(ep: Endpoint, served: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, inbox) = (dir.path().join("outbox"), dir.path().join("inbox"));
    std::fs::create_dir_all(&outbox).unwrap();
    std::fs::create_dir_all(&inbox).unwrap();
    write_sample_tree(&outbox);
    let setup = Setup::new(
        ep,
        vec![
            job("push", Direction::Push, &outbox, "/data"),
            job("pull", Direction::Pull, &inbox, "/data"),
        ],
    );
    let pushed = setup.sync_ok("push").await;
    assert_eq!(pushed.execution.transferred, 7);
    assert_eq!(tree(&outbox), tree(served));
    let pulled = setup.sync_ok("pull").await;
    assert_eq!(pulled.execution.transferred, 7);
    assert_eq!(tree(&outbox), tree(&inbox));
    for name in ["push", "pull"] {
        let again = setup.sync_ok(name).await;
        assert_eq!(
            again.execution.transferred, 0,
            "{name}: {:?}",
            again.planned.plan.actions
        );
    }
}

/// The sample tree of the acceptance criteria: nested and empty directories, empty files, names
/// with spaces and UTF-8, a file of a few MiB.
pub fn write_sample_tree(root: &Path) {
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("top.txt", b"top level\n".to_vec()),
        ("empty file", Vec::new()),
        ("a/b/c/deep.csv", b"1,2,3\n".to_vec()),
        ("a/with  two spaces .txt", b"spaces\n".to_vec()),
        ("a/Ünïcødé – ✓.txt", "utf-8\n".as_bytes().to_vec()),
        ("日本/ファイル.bin", vec![7u8; 1000]),
        ("big/random.bin", pseudo_random(5 * 1024 * 1024 + 17, 1)),
    ];
    for (rel, data) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    std::fs::create_dir_all(root.join("empty dir/nested empty")).unwrap();
}

pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Every file's SHA-256 and every directory under `root`, by relative path.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let child = rel.join(entry.file_name());
            let key = child.to_string_lossy().into_owned();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                out.insert(key, "dir".to_owned());
                stack.push(child);
            } else if kind.is_file() {
                out.insert(
                    key,
                    hex::encode(Sha256::digest(std::fs::read(entry.path()).unwrap())),
                );
            } else {
                out.insert(key, "other".to_owned());
            }
        }
    }
    out
}
