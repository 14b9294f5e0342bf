//! `ferry demo`: a self-contained tour on loopback, with no server to install.
//!
//! It starts the embedded FTPS server (libunftp, throwaway CA, TLS 1.3) on 127.0.0.1, makes a
//! small sample tree (nested and empty directories, an empty file, names with spaces and UTF-8,
//! a few MiB of random bytes), then runs a push job and a pull job through [`crate::run`], the
//! same code as `ferry sync`, showing each plan, the progress and the summary. A second push
//! shows that nothing changed means nothing transferred. Finally it compares the SHA-256 of
//! every file that went out and came back, and removes everything it made.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::{
    AfterUpload, Config, DataMode, Direction, Endpoint, Filter, Job, Limits, MaxDelete,
    PasswordSource, RetryPolicy, Secret, TlsMode, TrustRoots, Verify,
};
use crate::embedded::{EmbeddedOptions, EmbeddedServer};
use crate::report::{self, ProgressObserver};
use crate::run::{self, Planned};
use crate::state::{SharedStore, Store};
use crate::transport::pool::Pools;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Job(#[from] run::JobError),
    #[error("round trip mismatch: {0}")]
    Mismatch(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> DemoError + '_ {
    move |e| DemoError::Setup(format!("{what}: {e}"))
}

/// Write the sample tree; returns the number of files and bytes.
pub fn make_sample_tree(root: &Path) -> std::io::Result<(usize, u64)> {
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "README.txt",
            b"ferry demo: files that arrive complete and verified\n".to_vec(),
        ),
        ("empty.dat", Vec::new()),
        (
            "reports/2026/daily report.csv",
            b"date,value\n2026-11-24,42\n".to_vec(),
        ),
        (
            "reports/2026/Übersicht – größe.txt",
            "UTF-8 names travel intact\n".as_bytes().to_vec(),
        ),
        ("reports/日本語/データ.json", b"{\"ok\": true}\n".to_vec()),
        (
            "images/random.bin",
            (0..3 * 1024 * 1024u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
    ];
    let mut bytes = 0;
    for (rel, data) in &files {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, data)?;
        bytes += data.len() as u64;
    }
    std::fs::create_dir_all(root.join("empty dir"))?;
    Ok((files.len(), bytes))
}

/// SHA-256 of every file under `root`, by relative path, plus every directory (hash "dir").
pub fn tree_digest(root: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&rel))? {
            let entry = entry?;
            let child = rel.join(entry.file_name());
            let key = child.to_string_lossy().replace('\\', "/");
            let kind = entry.file_type()?;
            if kind.is_dir() {
                out.insert(key, "dir".to_owned());
                stack.push(child);
            } else if kind.is_file() {
                let data = std::fs::read(entry.path())?;
                out.insert(key, hex::encode(Sha256::digest(&data)));
            }
        }
    }
    Ok(out)
}

fn demo_job(name: &str, direction: Direction, local: &Path) -> Job {
    Job {
        name: name.to_owned(),
        endpoint: "embedded".to_owned(),
        direction,
        local: local.to_path_buf(),
        remote: "/demo".to_owned(),
        schedule: None,
        timezone: None,
        filter: Filter::all(),
        delete: false,
        max_delete: MaxDelete::default(),
        verify: Verify::Hash,
        retry: RetryPolicy::default(),
        watch: false,
        settle: Duration::from_secs(2),
        after_upload: AfterUpload::Keep,
        checksum_sidecar: false,
        catch_up: false,
        jitter: None,
        rescan: std::time::Duration::from_secs(600),
        ready: crate::config::Ready::Immediate,
        hooks: crate::config::Hooks::default(),
        remote_after: crate::config::RemoteAfter::Keep,
        publish: None,
        backup_dir: None,
        conflict: crate::config::ConflictPolicy::KeepBoth,
        direct_upload: false,
    }
}

/// Run the tour. Everything is made in a temporary directory that is removed at the end.
pub async fn run(cancel: CancellationToken) -> Result<(), DemoError> {
    let work = tempfile::tempdir().map_err(setup("temporary directory"))?;
    let base = work.path();
    let (server_root, pki, outbox, inbox, state) = (
        base.join("server"),
        base.join("pki"),
        base.join("outbox"),
        base.join("inbox"),
        base.join("state"),
    );
    for d in [&server_root, &pki, &outbox, &inbox, &state] {
        std::fs::create_dir_all(d).map_err(setup("create demo directories"))?;
    }
    std::fs::create_dir_all(server_root.join("demo")).map_err(setup("create server root"))?;
    let (files, bytes) = make_sample_tree(&outbox).map_err(setup("write sample tree"))?;
    let options = EmbeddedOptions {
        password: format!("demo-{}", rand::random::<u32>()),
        ..EmbeddedOptions::default()
    };
    let server = EmbeddedServer::start(&server_root, &pki, options.clone())
        .await
        .map_err(setup("start embedded FTPS server"))?;
    println!(
        "ferry demo: embedded FTPS server on {} (explicit TLS, throwaway CA {})",
        server.addr(),
        server.ca_pem().display()
    );
    println!(
        "sample tree: {files} files, {} in {}\n",
        report::human_bytes(bytes),
        outbox.display()
    );
    let endpoint = Endpoint {
        name: "embedded".to_owned(),
        host: server.addr().ip().to_string(),
        port: server.addr().port(),
        tls: TlsMode::Explicit,
        user: options.user.clone(),
        password: PasswordSource::Literal(Secret::new(options.password.clone())),
        trust: TrustRoots::CaFile(server.ca_pem().to_path_buf()),
        pin_sha256: None,
        client_cert: None,
        client_key: None,
        data_mode: DataMode::Passive,
        max_connections: 2,
        timeout: Duration::from_secs(15),
        tls_max_version: None,
        active_ports: None,
        use_pasv_address: false,
        limits: Limits::default(),
    };
    let push = demo_job("demo-push", Direction::Push, &outbox);
    let pull = demo_job("demo-pull", Direction::Pull, &inbox);
    let config = Config {
        source: PathBuf::from("<demo>"),
        state_dir: state.clone(),
        endpoints: BTreeMap::from([("embedded".to_owned(), endpoint)]),
        jobs: BTreeMap::from([
            (push.name.clone(), push.clone()),
            (pull.name.clone(), pull.clone()),
        ]),
        agent: Default::default(),
        warnings: Vec::new(),
        notes: Vec::new(),
        unavailable: BTreeMap::new(),
        unavailable_findings: Vec::new(),
    };
    let store = SharedStore::new(Store::open(&state).map_err(setup("open state database"))?);
    let pools = Pools::new();
    let result = async {
        for (job, title) in [
            (&push, "1. push the sample tree to the server"),
            (&pull, "2. pull it back into an empty directory"),
            (&push, "3. push again: nothing changed, nothing moves"),
        ] {
            println!("== {title} ==");
            run_one(&config, job, &pools, store.clone(), cancel.clone()).await?;
            println!();
        }
        let sent = tree_digest(&outbox).map_err(setup("hash outbox"))?;
        let back = tree_digest(&inbox).map_err(setup("hash inbox"))?;
        if sent != back {
            let differ: Vec<_> = sent
                .keys()
                .chain(back.keys())
                .filter(|k| sent.get(*k) != back.get(*k))
                .cloned()
                .collect();
            return Err(DemoError::Mismatch(differ.join(", ")));
        }
        let nfiles = sent.values().filter(|v| *v != "dir").count();
        println!(
            "round trip verified: {nfiles} files and {} directories identical by SHA-256",
            sent.len() - nfiles
        );
        Ok(())
    }
    .await;
    let logins: u64 = config
        .jobs
        .values()
        .filter_map(|j| run::pool_for(&config, &pools, j).ok())
        .map(|p| p.logins())
        .max()
        .unwrap_or(0);
    println!("{logins} logins served the three runs (sessions are pooled and reused)");
    pools.close_all().await;
    server.shutdown().await;
    println!("cleaned up {}", base.display());
    result
}

async fn run_one(
    config: &Config,
    job: &Job,
    pools: &Pools,
    store: SharedStore,
    cancel: CancellationToken,
) -> Result<(), DemoError> {
    let progress = Arc::new(ProgressObserver::new(std::io::stderr().is_terminal()));
    let p = progress.clone();
    let on_plan = move |planned: &Planned| {
        let _ = report::print_plan(&job.name, planned, &mut std::io::stdout());
        let _ = std::io::stdout().flush();
        p.set_plan(&planned.plan);
    };
    let report = run::run_job(
        config,
        job,
        pools,
        store,
        "demo",
        cancel,
        progress.clone(),
        &on_plan,
    )
    .await;
    progress.finish();
    let report = report?;
    let _ = report::print_failures(&report, &mut std::io::stderr());
    println!("{}", report::summary_line(&report));
    if report.exit_code() != 0 {
        return Err(DemoError::Mismatch(format!(
            "job `{}` did not complete cleanly",
            job.name
        )));
    }
    Ok(())
}
