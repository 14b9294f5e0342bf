//! The `ferry` command line: parses arguments, sets up logging and signals, and calls into the
//! library. All logic lives in the library; this file only wires it to a terminal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use ferry::config::{self, Config};
use ferry::report::{self, ProgressObserver};
use ferry::run::{self, JobError};
use ferry::state::Store;
use ferry::transport::pool::Pools;

#[derive(Parser, Debug)]
#[command(name = "ferry", version, about = "Scheduled FTPS sync agent")]
struct Cli {
    /// The job file (else $FERRY_CONFIG, else /etc/ferry/jobs.yaml).
    #[arg(long, global = true, env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// More detail in logs (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the job file; with --connect, log in to each endpoint and report what it supports.
    Check {
        /// Log in to each endpoint: TLS, features, each job's root (and, in a push job's root,
        /// whether renames work, probed with two small temporary files that are removed).
        #[arg(long)]
        connect: bool,
    },
    /// The agent: run scheduled jobs at their times and watch jobs as files come, until SIGTERM
    /// (SIGHUP reloads the job file).
    Run,
    /// Run jobs once now.
    Sync {
        /// Jobs to run.
        jobs: Vec<String>,
        /// Run every job in the file.
        #[arg(long, conflicts_with = "jobs")]
        all: bool,
        /// When a job is running already (in the agent or another sync), wait for it instead of
        /// refusing.
        #[arg(long)]
        wait: bool,
    },
    /// Show what a sync would do, changing nothing.
    Plan {
        job: String,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Each job's last run, last success, next run and outbox.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), made from this same command line definition.
    Man,
    /// A self-contained tour on loopback: embedded FTPS server, push, pull, verify.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(run(cli));
    ExitCode::from(code)
}

fn init_logging(format: LogFormat, verbose: u8) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // By default ferry's own lines at info and above, nothing from libraries; -v adds ferry's
    // debug lines, -vv everything at debug.
    let default = match verbose {
        0 => "off,ferry=info",
        1 => "off,ferry=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // suppaftp traces every command line it sends, PASS included: its trace level is dropped
    // whatever FERRY_LOG asks for (a directive would only add to it). Every line is also
    // scrubbed of known secrets on its way out.
    let no_library_trace = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with("suppaftp") && *meta.level() == tracing::Level::TRACE)
    });
    // Colours only on a terminal: the journal and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(ferry::text::RedactingStderr);
    let layer = match format {
        LogFormat::Human => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter).with_filter(no_library_trace))
        .init();
}

/// A token cancelled on the first Ctrl-C/SIGTERM; a second signal exits at once.
fn cancellation_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("ferry: stopping after the current step (signal again to exit now)");
        t.cancel();
        wait_for_signal().await;
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/ferry/jobs.yaml"))
}

/// Load the job file, printing its warnings and notes. A file that is wrong is exit 2; jobs
/// that cannot run here ([`Config::unavailable`]) are each command's business.
fn load_config(cli: &Cli) -> Result<Config, u8> {
    match config::load(&config_path(cli)) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            for n in &c.notes {
                eprintln!("note: {n}");
            }
            Ok(c)
        }
        Err(e) => {
            eprintln!("{e}");
            Err(2)
        }
    }
}

async fn run(cli: Cli) -> u8 {
    match &cli.command {
        Command::Demo => {
            let cancel = cancellation_on_signals();
            match ferry::demo::run(cancel).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("ferry demo failed: {e}");
                    1
                }
            }
        }
        Command::Check { connect } => {
            let config = match load_config(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let code = check_here(&config);
            if *connect {
                // The worse of the two: a server that cannot be reached (3) over jobs that
                // cannot run here (2) over a remote root that cannot be read (1).
                let connected = ferry::check::connect_all(&config, &mut std::io::stdout()).await;
                return code.max(connected as u8);
            }
            code
        }
        Command::Plan { job, json } => {
            let config = match load_config(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            plan_one(&config, job, *json).await
        }
        Command::Run => {
            let config = match load_config(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            run_agent(config, config_path(&cli)).await
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "ferry", &mut std::io::stdout());
            0
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("ferry man: {e}");
                    1
                }
            }
        }
        Command::Sync { jobs, all, wait } => {
            let config = match load_config(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let names: Vec<String> = if *all {
                config.jobs.keys().cloned().collect()
            } else {
                jobs.clone()
            };
            if names.is_empty() {
                eprintln!("ferry sync: name at least one job, or --all");
                return 2;
            }
            sync_jobs(&config, &names, *wait).await
        }
        Command::Status { json } => {
            let config = match load_config(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            status(&config, *json)
        }
    }
}

/// `ferry check` without `--connect`: the file is valid (else it did not load); print what
/// keeps jobs from running on this machine, if anything: then exit 2, else 0.
fn check_here(config: &Config) -> u8 {
    let head = format!(
        "{}: {} endpoint(s), {} job(s)",
        config.source.display(),
        config.endpoints.len(),
        config.jobs.len()
    );
    if config.unavailable_findings.is_empty() {
        println!("{head}: valid");
        return 0;
    }
    for line in &config.unavailable_findings {
        eprintln!("{line}");
    }
    let names: Vec<&str> = config.unavailable.keys().map(String::as_str).collect();
    let which = if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    };
    println!(
        "{head}: {} job(s) cannot run here{which}, {} problem(s) of this machine",
        names.len(),
        config.unavailable_findings.len()
    );
    2
}

/// Whether job `name` cannot run here ([`Config::unavailable`]); if so its findings are printed,
/// then a line saying what the command `what` does about it (`consequence`: "skipped", ...).
fn report_unavailable(config: &Config, name: &str, what: &str, consequence: &str) -> bool {
    let Some(findings) = config.unavailable(name) else {
        return false;
    };
    for line in findings {
        eprintln!("{line}");
    }
    eprintln!("{what}: job `{name}` {consequence}: it cannot run here (see above)");
    true
}

fn open_store(config: &Config) -> Result<Store, u8> {
    Store::open(&config.state_dir).map_err(|e| {
        eprintln!("ferry: {e}");
        1
    })
}

async fn plan_one(config: &Config, name: &str, json: bool) -> u8 {
    let Some(job) = config.jobs.get(name) else {
        eprintln!("ferry plan: no job `{name}` in {}", config.source.display());
        return 2;
    };
    if report_unavailable(config, name, "ferry plan", "not planned") {
        return 2;
    }
    let store = match open_store(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = async {
        let pools = Pools::new();
        let pool = run::pool_for(config, &pools, job)?;
        let records = store.records(&job.name).map_err(|error| JobError::State {
            job: job.name.clone(),
            error,
        })?;
        let limits = config
            .endpoints
            .get(&job.endpoint)
            .map(|e| e.limits)
            .unwrap_or_default();
        let planned =
            run::plan_job(job, &limits, &pool, &records, run::MissingRoot::PlanAsEmpty).await;
        pools.close_all().await;
        let mut planned = planned?;
        // What a sync would hold back now (`plan` records nothing); markers shown where a sync
        // takes them, after the rest.
        let shared = ferry::state::SharedStore::new(store);
        let markers = run::hold_not_ready(job, &mut planned, &shared, false)
            .await
            .map_err(|error| JobError::State {
                job: job.name.clone(),
                error,
            })?;
        planned.plan.actions.extend(markers);
        Ok::<_, JobError>(planned)
    }
    .await;
    match result {
        Ok(planned) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report::plan_json(name, &planned))
                        .unwrap_or_default()
                );
            } else {
                let _ = report::print_plan(name, &planned, &mut std::io::stdout());
            }
            0
        }
        Err(e) => {
            eprintln!("ferry: {e}");
            e.exit_code() as u8
        }
    }
}

/// `ferry run`: the agent until SIGTERM/SIGINT (a second one exits at once); SIGHUP reloads.
async fn run_agent(config: Config, path: PathBuf) -> u8 {
    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received: stopping (signal again to exit now)");
            shutdown.cancel();
            wait_for_signal().await;
            std::process::exit(130);
        });
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    if reload_tx.send(()).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
    let clock = Arc::new(ferry::agent::timer::SystemClock);
    match ferry::agent::run(config, path, clock, shutdown, reload_rx).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ferry run: {e}");
            1
        }
    }
}

async fn sync_jobs(config: &Config, names: &[String], wait: bool) -> u8 {
    for name in names {
        if !config.jobs.contains_key(name) {
            eprintln!("ferry sync: no job `{name}` in {}", config.source.display());
            return 2;
        }
    }
    let store = match open_store(config) {
        Ok(s) => ferry::state::SharedStore::new(s),
        Err(code) => return code,
    };
    let cancel = cancellation_on_signals();
    // One pool per endpoint for every job of this invocation: a job's sessions serve the next.
    let pools = Pools::new();
    // The exit code is the worst of the jobs': 3 (could not connect) over 2 (a job skipped as
    // it cannot run here, or a job that could not be set up) over 1 (some files failed).
    let mut worst = 0;
    for name in names {
        let Some(job) = config.jobs.get(name) else {
            continue;
        };
        if report_unavailable(config, name, "ferry sync", "skipped") {
            worst = worst.max(2);
            continue;
        }
        // Never beside another run of the same job (the agent's, or another sync's).
        let lock = if wait {
            ferry::agent::lock::lock(
                &config.state_dir,
                name,
                "ferry sync",
                std::time::Duration::from_secs(1),
            )
            .await
        } else {
            ferry::agent::lock::try_lock(&config.state_dir, name, "ferry sync")
        };
        let _lock = match lock {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ferry sync: {e} (add --wait to wait for it)");
                worst = worst.max(1);
                continue;
            }
        };
        let progress = Arc::new(ProgressObserver::new(std::io::stderr().is_terminal()));
        let p = progress.clone();
        let on_plan = move |planned: &run::Planned| {
            p.set_plan(&planned.plan);
        };
        let result = run::run_job(
            config,
            job,
            &pools,
            store.clone(),
            "cli",
            cancel.clone(),
            progress.clone(),
            &on_plan,
        )
        .await;
        progress.finish();
        let code = match result {
            Ok(report) => {
                let _ = report::print_failures(&report, &mut std::io::stderr());
                println!("{}", report::summary_line(&report));
                report.exit_code()
            }
            Err(e) => {
                eprintln!("ferry: {e}");
                e.exit_code()
            }
        };
        worst = worst.max(code);
        if cancel.is_cancelled() {
            break;
        }
    }
    pools.close_all().await;
    worst as u8
}

fn status(config: &Config, json: bool) -> u8 {
    let store = match open_store(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let statuses = match report::status::collect(config, &store, chrono::Utc::now()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferry: {e}");
            return 1;
        }
    };
    if json {
        match serde_json::to_string_pretty(&statuses) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("ferry: {e}");
                return 1;
            }
        }
    } else if let Err(e) = report::status::print(&statuses, &mut std::io::stdout()) {
        eprintln!("ferry: {e}");
        return 1;
    }
    0
}
