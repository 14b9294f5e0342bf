//! `ferry-bench`: figures measured on this machine, on loopback, against servers the bench starts
//! and stops itself. Speed and latency targets are checked here, never in timed unit tests.
//!
//! Scenarios (issue 8), each selectable, `all` runs every one:
//! - `push`: many small files into an empty remote, with 1, 2, 4 and 8 connections; ferry
//!   against `lftp mirror -R --parallel=N` and `rclone copy --transfers N --checkers N`;
//! - `pull`: the same files back into an empty local directory;
//! - `big`: one big file (2 GiB by default) pushed and pulled, SHA-256 computed; against `curl`;
//! - `noop`: a re-sync that finds nothing to do, 50,000 files in 500 directories, push and pull;
//!   against lftp, rclone and ferry's own bare recursive listing of the same tree;
//! - `memory`: ferry's peak memory in the no-op re-sync at 200,000 files, and bytes per file;
//! - `watch`: the agent's watch-folder latency (in-process, embedded server; see [`watch`]).
//!
//! How it measures ([`child`]): every tool, ferry included, is a child process run under
//! `/usr/bin/time` (wall time taken by the bench, user+sys CPU and peak RSS from the child's
//! rusage), with a timeout that kills its whole process group. ferry is the release `ferry`
//! binary next to this executable, run as `ferry sync JOB --config FILE`. Every result is checked
//! before its time counts: the SHA-256 of every file on the destination, and for a no-op that
//! nothing on the destination changed ([`data`]). Medians of `--runs` runs.
//!
//! The server ([`server`]): vsftpd (the tests' harness, `tests/support/vsftpd.rs`) when installed
//! and running as root, else the embedded libunftp server, on 127.0.0.1 only; stopped on every
//! exit path (Drop). With vsftpd, its protocol log gives ferry's control commands per file.

mod child;
mod data;
mod scenarios;
mod server;
mod table;
mod tools;
mod watch;

// The tests' vsftpd harness, used as it is. It is test code: it panics on a broken setup (the
// bench catches that at start) and unwraps freely.
#[allow(clippy::unwrap_used, clippy::expect_used, dead_code)]
#[path = "../../../tests/support/vsftpd.rs"]
mod vsftpd;

// The pure-ftpd harness, likewise (`--server pure-ftpd`).
#[allow(clippy::unwrap_used, clippy::expect_used, dead_code)]
#[path = "../../../tests/support/pureftpd.rs"]
mod pureftpd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "ferry-bench", about = "ferry's benchmarks, on loopback")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    opts: Options,
}

/// Sizes and switches shared by the scenarios; each can be given before or after the scenario.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// A run that finishes in about a minute: small sizes, 1 run each (explicit options win).
    #[arg(long, global = true)]
    pub quick: bool,
    /// Runs per measurement; the table shows medians (default 3, 1 with --quick).
    #[arg(long, global = true)]
    pub runs: Option<usize>,
    /// Which server: auto is vsftpd when installed and running as root, else embedded;
    /// pure-ftpd only when asked for.
    #[arg(long, global = true, value_enum, default_value_t = ServerChoice::Auto)]
    pub server: ServerChoice,
    /// Small files for push and pull (default 5000), or the stream of `watch` (default 1000).
    #[arg(long, global = true)]
    pub files: Option<usize>,
    /// Directories the small files are spread over (default 50).
    #[arg(long, global = true)]
    pub dirs: Option<usize>,
    /// Size of each small file, in bytes (default 4096).
    #[arg(long, global = true)]
    pub size: Option<usize>,
    /// Connection counts for push and pull, comma-separated (default 1,2,4,8).
    #[arg(long, global = true, value_delimiter = ',')]
    pub connections: Option<Vec<usize>>,
    /// Size of the big file, in MiB (default 2048).
    #[arg(long, global = true)]
    pub big_mib: Option<u64>,
    /// Files of the no-op re-sync (default 50000), 100 per directory.
    #[arg(long, global = true)]
    pub noop_files: Option<usize>,
    /// Files of the memory scenario (default 200000), 100 per directory.
    #[arg(long, global = true)]
    pub memory_files: Option<usize>,
    /// Connections (and lftp/rclone parallelism) of the no-op and memory scenarios.
    #[arg(long, global = true, default_value_t = 8)]
    pub noop_connections: usize,
    /// Longest any one child (a sync, a baseline) may run before it is killed.
    #[arg(long, global = true, default_value = "15m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// ferry's `tls_max_version` in the bench's job files (1.2 or 1.3; default: none, the
    /// highest both sides speak). The baselines are not affected.
    #[arg(long, global = true, value_parser = ["1.2", "1.3"])]
    pub ferry_tls_max: Option<String>,
    /// Leave out the baselines (lftp, rclone, curl): ferry alone.
    #[arg(long, global = true)]
    pub no_baselines: bool,
    /// Keep the working directory (data, job files, each child's output) and print its path.
    #[arg(long, global = true)]
    pub keep: bool,
    /// The watch job's `settle` (watch).
    #[arg(long, global = true, default_value = "2s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Pause between two files of the stream (watch).
    #[arg(long, global = true, default_value = "10ms", value_parser = humantime::parse_duration)]
    pub every: Duration,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerChoice {
    Auto,
    Vsftpd,
    /// pure-ftpd 1.0.50, installed or unpacked into /opt/ferry-test/pure-ftpd (never auto).
    #[value(name = "pure-ftpd")]
    PureFtpd,
    Embedded,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
enum Scenario {
    /// Push many small files into an empty remote with 1, 2, 4, 8 connections.
    Push,
    /// Pull the same small files into an empty local directory.
    Pull,
    /// Push, then pull, one big file with SHA-256 computed.
    Big,
    /// A no-op re-sync of a large tree, push and pull, and ferry's bare listing of it.
    Noop,
    /// Peak memory of the no-op re-sync at 200,000 files, and bytes per file.
    Memory,
    /// Watch-folder latency: file closed -> visible under its final name on the server.
    Watch,
    /// What a run costs before it connects: check, a sync refused at connect, a whole no-op.
    Startup,
    /// Every scenario above, in that order.
    All,
    /// (Internal) ferry's bare recursive remote listing of a job's tree: the no-op baseline.
    #[command(hide = true)]
    ListRemote {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        job: String,
    },
}

/// Every scenario's sizes, resolved from the options and the preset.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub runs: usize,
    pub files: usize,
    pub dirs: usize,
    pub size: usize,
    pub connections: Vec<usize>,
    pub big_mib: u64,
    pub noop_files: usize,
    pub memory_files: usize,
    pub watch_files: usize,
}

impl Sizes {
    fn resolve(o: &Options) -> Sizes {
        let q = o.quick;
        let pick = |given: Option<usize>, full: usize, quick: usize| {
            given.unwrap_or(if q { quick } else { full })
        };
        Sizes {
            runs: pick(o.runs, 3, 1).max(1),
            files: pick(o.files, 5000, 200),
            dirs: pick(o.dirs, 50, 10).max(1),
            size: pick(o.size, 4096, 4096),
            connections: o.connections.clone().unwrap_or(if q {
                vec![1, 8]
            } else {
                vec![1, 2, 4, 8]
            }),
            big_mib: o.big_mib.unwrap_or(if q { 128 } else { 2048 }),
            noop_files: pick(o.noop_files, 50_000, 1_000).max(1),
            memory_files: pick(o.memory_files, 200_000, 4_000).max(1),
            watch_files: pick(o.files, 1000, 200),
        }
    }
}

type BenchResult<T> = Result<T, String>;

fn io<T>(what: &str, r: std::io::Result<T>) -> BenchResult<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The agent's own log lines, when asked for (FERRY_LOG=ferry=info), on stderr.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let result = match cli.scenario {
        Scenario::ListRemote { config, job } => list_remote(&config, &job).map(|()| true),
        Scenario::Watch => {
            let sizes = Sizes::resolve(&cli.opts);
            block_on(watch::watch(
                sizes.watch_files,
                cli.opts.settle,
                cli.opts.every,
                sizes.size,
            ))
        }
        scenario => run_scenarios(scenario, &cli.opts),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("ferry-bench: a target was missed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ferry-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn block_on<T>(f: impl std::future::Future<Output = BenchResult<T>>) -> BenchResult<T> {
    let runtime = io("start the runtime", tokio::runtime::Runtime::new())?;
    runtime.block_on(f)
}

/// The measured scenarios (all but `watch`), on one server, then the table.
fn run_scenarios(scenario: Scenario, opts: &Options) -> BenchResult<bool> {
    let sizes = Sizes::resolve(opts);
    let all = scenario == Scenario::All;
    let selected: Vec<Scenario> = match scenario {
        Scenario::All => vec![
            Scenario::Push,
            Scenario::Pull,
            Scenario::Big,
            Scenario::Noop,
            Scenario::Memory,
            Scenario::Startup,
        ],
        other => vec![other],
    };
    let mut bench = scenarios::Bench::start(opts, &sizes)?;
    let mut failed = Vec::new();
    for s in &selected {
        let outcome = match s {
            Scenario::Push => bench.small_files(true),
            Scenario::Pull => bench.small_files(false),
            Scenario::Big => bench.big(),
            Scenario::Noop => bench.noop(),
            Scenario::Memory => bench.memory(),
            Scenario::Startup => bench.startup(),
            _ => Ok(()),
        };
        if let Err(e) = outcome {
            eprintln!("ferry-bench: {s:?}: {e}");
            failed.push(format!("{s:?}"));
        }
    }
    bench.print_table();
    let ok = failed.is_empty();
    drop(bench);
    let watch_ok = if all {
        let watch = block_on(watch::watch(
            sizes.watch_files,
            opts.settle,
            opts.every,
            sizes.size,
        ));
        match watch {
            Ok(met) => met,
            Err(e) => {
                eprintln!("ferry-bench: watch: {e}");
                false
            }
        }
    } else {
        true
    };
    if !ok {
        return Err(format!("failed: {}", failed.join(", ")));
    }
    Ok(watch_ok)
}

/// ferry's bare recursive listing of a job's remote tree, the way a sync lists it (the pool of
/// the job's endpoint, `max_connections` directories at a time), and nothing else: no local
/// scan, no state, no plan. Prints the number of entries.
fn list_remote(config: &std::path::Path, job: &str) -> BenchResult<()> {
    block_on(async {
        let config = ferry::config::load(config).map_err(|e| e.to_string())?;
        let job = config
            .jobs
            .get(job)
            .ok_or_else(|| format!("no job `{job}`"))?;
        let limits = config
            .endpoints
            .get(&job.endpoint)
            .map(|e| e.limits)
            .unwrap_or_default();
        let pools = ferry::transport::pool::Pools::new();
        let pool = ferry::run::pool_for(&config, &pools, job).map_err(|e| e.to_string())?;
        let listing =
            ferry::scan::walk_pool(&pool, &job.remote, &job.filter, &limits, &job.retry).await;
        pools.close_all().await;
        let listing = listing.map_err(|e| e.to_string())?;
        if !listing.problems.is_empty() {
            return Err(format!(
                "{} listing problems, the first: {}",
                listing.problems.len(),
                listing.problems[0].message
            ));
        }
        println!("{} entries", listing.entries.len());
        Ok(())
    })
}
