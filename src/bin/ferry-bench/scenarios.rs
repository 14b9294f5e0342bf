//! The measured scenarios of issue 8, on one server and one working directory.
//!
//! Each measured run starts from the same state for every tool (an empty remote directory, an
//! empty local one, or for a no-op the tree already in sync), the tools take turns within a run
//! in an order that moves by one at each run ([`in_turn`]: ferry, lftp, rclone, then lftp,
//! rclone, ferry, ...), and a result is checked before its cost is kept. The no-op
//! scenarios make the destination in sync with ferry itself first (a real first sync, so that
//! ferry's state holds what a second run would find); that setup is timed and noted, not
//! tabled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::child::{self, Cost, Step};
use crate::data::{self, Tree};
use crate::server::{Server, remove_tree};
use crate::table::{self, Row, Work};
use crate::tools::{Tools, Way};
use crate::{BenchResult, Options, Sizes, io};

/// Seeds of the trees: the same tree on both sides when it must be.
const SMALL_SEED: u64 = 0x5eed_0001;
const BIG_SEED: u64 = 0x5eed_0002;
const NOOP_SEED: u64 = 0x5eed_0003;
/// Size of each file of the no-op and memory trees (only the count matters there).
const NOOP_FILE_SIZE: usize = 1024;
const FILES_PER_DIR: usize = 100;

pub struct Bench {
    // Field order is drop order: the server stops before the working directory goes.
    server: Server,
    tools: Tools,
    sizes: Sizes,
    timeout: Duration,
    noop_connections: usize,
    rows: Vec<Row>,
    notes: Vec<String>,
    /// Small-file trees made so far: the local source (push) and the remote one (pull).
    small_local: Option<Tree>,
    small_remote: Option<Tree>,
    /// ferry's median peak RSS (KiB) of each no-op re-sync measured, by files and direction.
    noop_rss: BTreeMap<(usize, &'static str), f64>,
    work: PathBuf,
    _work_dir: Option<tempfile::TempDir>,
    /// Every file's modification time in the trees the bench makes: a whole minute (vsftpd
    /// lists minutes), an hour ago.
    mtime: SystemTime,
}

impl Bench {
    pub fn start(opts: &Options, sizes: &Sizes) -> BenchResult<Bench> {
        let dir = io(
            "working directory",
            tempfile::Builder::new().prefix("ferry-bench-").tempdir(),
        )?;
        let work = dir.path().to_path_buf();
        // Readable by vsftpd's login user (pull sources are hard links made from here).
        io(
            "working directory",
            std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o755)),
        )?;
        let work_dir = if opts.keep {
            println!("working directory (kept): {}", work.display());
            let _ = dir.keep();
            None
        } else {
            Some(dir)
        };
        let server = Server::start(opts.server, &work)?;
        let tools = Tools::find(
            &server,
            &work,
            !opts.no_baselines,
            opts.ferry_tls_max.clone(),
        )?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(now / 60 * 60 - 3600);
        println!(
            "ferry-bench: {} on {}; ferry {}{}; baselines: {}; {} run(s) each",
            server.describe(),
            server.addr(),
            tools.ferry.display(),
            match &opts.ferry_tls_max {
                Some(v) => format!(" (tls_max_version: {v})"),
                None => String::new(),
            },
            [
                (tools.lftp, "lftp"),
                (tools.rclone, "rclone"),
                (tools.curl, "curl")
            ]
            .iter()
            .filter(|(have, _)| *have)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(", "),
            sizes.runs
        );
        Ok(Bench {
            server,
            tools,
            sizes: sizes.clone(),
            timeout: opts.timeout,
            noop_connections: opts.noop_connections.max(1),
            rows: Vec::new(),
            notes: Vec::new(),
            small_local: None,
            small_remote: None,
            noop_rss: BTreeMap::new(),
            work,
            _work_dir: work_dir,
            mtime,
        })
    }

    fn logs(&self) -> PathBuf {
        self.work.join("logs")
    }

    /// Run one step; print its cost as it comes.
    fn measure(&self, step: &Step) -> BenchResult<Cost> {
        // What the previous step left dirty in the page cache is written out first (not
        // timed): otherwise one tool's 2 GiB is flushed during the next one's run.
        let _ = std::process::Command::new("sync").status();
        let cost = child::run(step, &self.logs(), self.timeout)?;
        eprintln!(
            "  {:<28} {:>8.2} s  cpu {:>6.2} s  rss {:>5.0} MiB{}",
            step.label,
            cost.wall.as_secs_f64(),
            cost.cpu,
            cost.max_rss_kib as f64 / 1024.0,
            cost.machine_busy
                .map(|b| format!("  machine busy {b:.2} s"))
                .unwrap_or_default()
        );
        Ok(cost)
    }

    /// [`measure`](Self::measure), and the CPU the server's sessions used for the step (vsftpd
    /// and pure-ftpd: a session counts once it is over and reaped).
    fn measure_with_server(&self, step: &Step) -> BenchResult<(Cost, Option<f64>)> {
        let before = self.server.sessions_cpu();
        let cost = self.measure(step)?;
        if before.is_none() {
            return Ok((cost, None));
        }
        // A session's CPU counts once it is reaped, which can come after the tool has
        // exited (a session still closing, or writing out a big upload): read too early, it
        // went to the next tool's figure (curl's 1 GiB push once read 0.04 s). So wait for the
        // sessions to be over (at most 10 s), then a little for the reaping.
        let waiting = std::time::Instant::now();
        while self.server.sessions_alive() && waiting.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        let used = before.zip(self.server.sessions_cpu()).map(|(a, b)| b - a);
        Ok((cost, used))
    }

    /// A note of the server's median CPU for each tool of one scenario.
    fn note_server_cpu(&mut self, scenario: &str, server_cpu: &BTreeMap<&str, Vec<f64>>) {
        let each: Vec<String> = server_cpu
            .iter()
            .filter_map(|(tool, v)| Some(format!("{tool} {:.2} s", table::median(v.clone())?)))
            .collect();
        if each.is_empty() {
            return;
        }
        self.note(format!(
            "{scenario}: the server's CPU, user+sys, for each tool: {} (on {} cores, the \
             server's CPU and the tool's share them)",
            each.join(", "),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ));
    }

    /// A note of how busy the whole machine was during each tool's runs (median share of the
    /// cores over the wall time): near every core, the scenario is bound by CPU, whether the
    /// tool's, the server's or the kernel's. The server's own figure misses what its processes
    /// spend before they are reaped and what the kernel does for the loopback on no one's
    /// account; this one misses nothing, noise from other processes included.
    fn note_machine_busy(&mut self, scenario: &str, costs: &BTreeMap<&str, Vec<Cost>>) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let each: Vec<String> = costs
            .iter()
            .filter_map(|(tool, runs)| {
                let shares: Vec<f64> = runs
                    .iter()
                    .filter_map(|c| Some(c.machine_busy? / c.wall.as_secs_f64().max(1e-3)))
                    .collect();
                let cores_busy = table::median(shares)?;
                Some(format!(
                    "{tool} {cores_busy:.2} cores ({:.0} %)",
                    cores_busy * 100.0 / cores as f64
                ))
            })
            .collect();
        if each.is_empty() {
            return;
        }
        self.note(format!(
            "{scenario}: the machine's busy CPU over each tool's wall time (every process and \
             the kernel, of {cores} cores): {}",
            each.join(", ")
        ));
    }

    fn note(&mut self, text: String) {
        eprintln!("  note: {text}");
        self.notes.push(text);
    }

    /// A row; ferry's own rows (`ferry ...`, not its bare listing) are what the others are
    /// compared with.
    fn push_row(&mut self, scenario: &str, tool: &str, costs: Vec<Cost>, work: Work) {
        if costs.is_empty() {
            return;
        }
        self.rows.push(Row {
            scenario: scenario.to_owned(),
            tool: tool.to_owned(),
            costs,
            work,
            is_ferry: tool.starts_with("ferry") && !tool.starts_with("ferry's"),
        });
    }

    /// Scenarios 1 and 2: small files pushed into an empty remote directory, or pulled into an
    /// empty local one, at each connection count.
    pub fn small_files(&mut self, push: bool) -> BenchResult<()> {
        let (files, dirs, size) = (self.sizes.files, self.sizes.dirs, self.sizes.size);
        let way = if push { Way::Push } else { Way::Pull };
        eprintln!(
            "{}: {files} files of {size} B in {dirs} directories",
            way.as_str()
        );
        let tree = self.small_tree(way)?;
        let src_local = self.work.join("small-src");
        let tools = self.baseline_names(&["lftp", "rclone"]);
        // Every run's destination stays until the scenario is over. On ext4 without a journal
        // (this bench's machines), creating a file skips, one by one, the inodes freed in the
        // last minute (six while their inode table block is dirty): a pull right after 5,000
        // files were removed spent 23 % of ferry's samples in `recently_deleted`
        // (`FERRY_BENCH_PERF`), and which tool follows which removal would decide the figures.
        let mut done: Vec<PathBuf> = Vec::new();
        let outcome = self.small_runs(way, &tree, &tools, &src_local, &mut done);
        for dest in &done {
            remove_tree(dest)?;
        }
        outcome
    }

    /// The runs of [`Self::small_files`]; each destination, once verified, goes into `done`.
    fn small_runs(
        &mut self,
        way: Way,
        tree: &Tree,
        tools: &[&'static str],
        src_local: &Path,
        done: &mut Vec<PathBuf>,
    ) -> BenchResult<()> {
        let (files, size) = (self.sizes.files, self.sizes.size);
        let push = way == Way::Push;
        for n in self.sizes.connections.clone() {
            let mut costs: BTreeMap<&str, Vec<Cost>> = BTreeMap::new();
            let mut commands: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
            let mut server_cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for run in 0..self.sizes.runs {
                for tool in in_turn(tools, run) {
                    let label = format!("{}-{tool}-c{n}-r{run}", way.as_str());
                    let (dest, local, remote) = match way {
                        Way::Push => {
                            let dest = self.server.fresh_dir(&label)?;
                            (dest, src_local.to_owned(), format!("/{label}"))
                        }
                        Way::Pull => {
                            let dest = self.work.join(&label);
                            remove_tree(&dest)?;
                            io("local directory", std::fs::create_dir_all(&dest))?;
                            (dest.clone(), dest, "/small-src".to_owned())
                        }
                    };
                    let step = self.small_step(tool, way, &label, &local, &remote, n)?;
                    let mark = self.server.log_mark();
                    let (cost, used) = self.measure_with_server(&step)?;
                    if let Some(used) = used {
                        server_cpu.entry(tool).or_default().push(used);
                    }
                    done.push(dest.clone());
                    data::verify(&dest, tree).map_err(|e| format!("{label}: {e}"))?;
                    if run == 0
                        && let Some(seen) = mark.and_then(|m| self.server.commands_since(m))
                    {
                        commands.insert(tool, seen);
                    }
                    costs.entry(tool).or_default().push(cost);
                }
            }
            let scenario = format!(
                "{} {} × {} KiB, {n} conn.",
                way.as_str(),
                thousands(files),
                size / 1024
            );
            self.note_machine_busy(&format!("{} with {n} conn.", way.as_str()), &costs);
            for &tool in tools {
                let name = match tool {
                    "lftp" => format!(
                        "lftp `mirror {}--parallel={n}`",
                        if push { "-R " } else { "" }
                    ),
                    "rclone" => format!("rclone `copy --transfers {n} --checkers {n}`"),
                    other => other.to_owned(),
                };
                self.push_row(
                    &scenario,
                    &name,
                    costs.remove(tool).unwrap_or_default(),
                    Work::Files(files),
                );
            }
            if !server_cpu.is_empty() {
                let each: Vec<String> = server_cpu
                    .iter()
                    .filter_map(|(tool, v)| {
                        let median = table::median(v.clone())?;
                        Some(format!(
                            "{tool} {:.2} s ({:.2} ms per file)",
                            median,
                            median * 1000.0 / files as f64
                        ))
                    })
                    .collect();
                self.note(format!(
                    "{} with {n} conn.: the server's CPU, user+sys, for each tool: {} \
                     (on {} cores; what the server needs bounds every tool's wall time)",
                    way.as_str(),
                    each.join(", "),
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                ));
            }
            for (tool, seen) in commands {
                if tool == "ferry" || Some(&n) == self.sizes.connections.iter().max() {
                    let text = per_file_commands(tool, way, n, files, &seen);
                    self.note(text);
                }
            }
        }
        if self.server.is_vsftpd() {
            return Ok(());
        }
        self.note(
            "control commands per file: not counted on the embedded server (it has no protocol \
             log); run with vsftpd"
                .into(),
        );
        Ok(())
    }

    /// The small-file source: a local tree for a push, a tree on the server for a pull.
    fn small_tree(&mut self, way: Way) -> BenchResult<Tree> {
        let (files, dirs, size) = (self.sizes.files, self.sizes.dirs, self.sizes.size);
        let made = match way {
            Way::Push => &self.small_local,
            Way::Pull => &self.small_remote,
        };
        if let Some(tree) = made {
            return Ok(tree.clone());
        }
        let tree = match way {
            Way::Push => data::make_tree(
                &self.work.join("small-src"),
                files,
                dirs,
                size,
                SMALL_SEED,
                self.mtime,
            )?,
            Way::Pull => {
                let root = self.server.disk("small-src");
                remove_tree(&root)?;
                let tree = data::make_tree(&root, files, dirs, size, SMALL_SEED, self.mtime)?;
                self.server.give(&root)?;
                tree
            }
        };
        match way {
            Way::Push => self.small_local = Some(tree.clone()),
            Way::Pull => self.small_remote = Some(tree.clone()),
        }
        Ok(tree)
    }

    fn small_step(
        &self,
        tool: &str,
        way: Way,
        label: &str,
        local: &Path,
        remote: &str,
        n: usize,
    ) -> BenchResult<Step> {
        let jobs = self.work.join("jobs").join(label);
        Ok(match tool {
            "ferry" => {
                let job = self.tools.ferry_job(&jobs, way, local, remote, n, "size")?;
                self.tools.ferry_sync(label, &job)
            }
            "lftp" => self
                .tools
                .lftp_mirror(label, &jobs, way, local, remote, n)?,
            _ => self.tools.rclone_copy(label, way, local, remote, n, n),
        })
    }

    /// ferry, then whichever of `baselines` are installed (and not left out).
    fn baseline_names(&self, baselines: &[&'static str]) -> Vec<&'static str> {
        let mut out = vec!["ferry"];
        for &b in baselines {
            let have = match b {
                "lftp" => self.tools.lftp,
                "rclone" => self.tools.rclone,
                "curl" => self.tools.curl,
                _ => false,
            };
            if have {
                out.push(b);
            }
        }
        out
    }

    /// Scenario 3: one big file pushed into an empty remote directory, then pulled into an
    /// empty local one. ferry computes SHA-256 while streaming either way; a second push row
    /// has `verify: hash`, which on a server without a hash command (vsftpd) reads the upload
    /// back.
    pub fn big(&mut self) -> BenchResult<()> {
        let mib = self.sizes.big_mib;
        let bytes = mib << 20;
        let need = bytes * 3 + (512 << 20);
        let free = data::free_bytes(&self.work)?;
        if free < need {
            return Err(format!(
                "big: {mib} MiB needs about {} MiB free in {} (a local copy, the server's, and \
                 the pulled one), only {} MiB are; try --big-mib",
                need >> 20,
                self.work.display(),
                free >> 20
            ));
        }
        eprintln!("big: one file of {mib} MiB");
        let src_dir = self.work.join("big-src");
        io("big source", std::fs::create_dir_all(&src_dir))?;
        let src = src_dir.join("big.bin");
        let sha = data::make_big(&src, mib, BIG_SEED)?;
        let mut tree = Tree::default();
        tree.files.insert("big.bin".into(), sha);
        tree.bytes = bytes;
        let label_size = if mib.is_multiple_of(1024) {
            format!("{} GiB", mib / 1024)
        } else {
            format!("{mib} MiB")
        };

        // Push.
        let tools = self.baseline_names(&["curl"]);
        let mut costs: BTreeMap<&str, Vec<Cost>> = BTreeMap::new();
        let mut server_cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let pushes: Vec<&str> = tools
            .iter()
            .copied()
            .chain(Some("ferry-readback"))
            .collect();
        for run in 0..self.sizes.runs {
            for tool in in_turn(&pushes, run) {
                let label = format!("big-push-{tool}-r{run}");
                let dest = self.server.fresh_dir(&label)?;
                let remote = format!("/{label}");
                let jobs = self.work.join("jobs").join(&label);
                let step = match tool {
                    "curl" => {
                        self.tools
                            .curl(&label, Way::Push, &src, &format!("{remote}/big.bin"))
                    }
                    _ => {
                        let verify = if tool == "ferry" { "size" } else { "hash" };
                        let job =
                            self.tools
                                .ferry_job(&jobs, Way::Push, &src_dir, &remote, 1, verify)?;
                        self.tools.ferry_sync(&label, &job)
                    }
                };
                let (cost, used) = self.measure_with_server(&step)?;
                data::verify(&dest, &tree).map_err(|e| format!("{label}: {e}"))?;
                costs.entry(tool).or_default().push(cost);
                if let Some(used) = used {
                    server_cpu.entry(tool).or_default().push(used);
                }
                remove_tree(&dest)?;
            }
        }
        let scenario = format!("push 1 × {label_size}");
        self.note_server_cpu(&scenario, &server_cpu);
        self.note_machine_busy(&scenario, &costs);
        self.push_row(
            &scenario,
            "ferry (`verify: size`, SHA-256 computed)",
            costs.remove("ferry").unwrap_or_default(),
            Work::Bytes(bytes),
        );
        self.push_row(
            &scenario,
            "curl `-T`",
            costs.remove("curl").unwrap_or_default(),
            Work::Bytes(bytes),
        );
        let readback = if !self.server.is_embedded() {
            "ferry `verify: hash` (no server hash: read back)"
        } else {
            "ferry `verify: hash`"
        };
        self.push_row(
            &format!("push 1 × {label_size}, verify: hash"),
            readback,
            costs.remove("ferry-readback").unwrap_or_default(),
            Work::Bytes(bytes),
        );

        // Pull, from a hard link of the source in the served tree (a copy across filesystems).
        let served = self.server.fresh_dir("big-src")?;
        if std::fs::hard_link(&src, served.join("big.bin")).is_err() {
            io(
                "copy the big file",
                std::fs::copy(&src, served.join("big.bin")),
            )?;
        }
        self.server.give(&served)?;
        let mut costs: BTreeMap<&str, Vec<Cost>> = BTreeMap::new();
        let mut server_cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for run in 0..self.sizes.runs {
            for tool in in_turn(&tools, run) {
                let label = format!("big-pull-{tool}-r{run}");
                let dest = self.work.join(&label);
                remove_tree(&dest)?;
                io("local directory", std::fs::create_dir_all(&dest))?;
                let step = match tool {
                    "curl" => self.tools.curl(
                        &label,
                        Way::Pull,
                        &dest.join("big.bin"),
                        "/big-src/big.bin",
                    ),
                    _ => {
                        let jobs = self.work.join("jobs").join(&label);
                        let job =
                            self.tools
                                .ferry_job(&jobs, Way::Pull, &dest, "/big-src", 1, "size")?;
                        self.tools.ferry_sync(&label, &job)
                    }
                };
                let (cost, used) = self.measure_with_server(&step)?;
                data::verify(&dest, &tree).map_err(|e| format!("{label}: {e}"))?;
                costs.entry(tool).or_default().push(cost);
                if let Some(used) = used {
                    server_cpu.entry(tool).or_default().push(used);
                }
                remove_tree(&dest)?;
            }
        }
        let scenario = format!("pull 1 × {label_size}");
        self.note_server_cpu(&scenario, &server_cpu);
        self.note_machine_busy(&scenario, &costs);
        self.push_row(
            &scenario,
            "ferry (SHA-256 computed)",
            costs.remove("ferry").unwrap_or_default(),
            Work::Bytes(bytes),
        );
        self.push_row(
            &scenario,
            "curl `-o`",
            costs.remove("curl").unwrap_or_default(),
            Work::Bytes(bytes),
        );
        remove_tree(&served)?;
        remove_tree(&src_dir)?;
        Ok(())
    }

    /// Scenario 4: the no-op re-sync, with the baselines.
    pub fn noop(&mut self) -> BenchResult<()> {
        let files = self.sizes.noop_files;
        self.noop_at(files, "noop", true)
    }

    /// Scenario 5: ferry's peak memory in the no-op re-sync at a large tree, and what each file
    /// costs: the slope between this size and a smaller no-op (the `noop` scenario's when it
    /// ran in this invocation, else a quarter of this size).
    pub fn memory(&mut self) -> BenchResult<()> {
        let files = self.sizes.memory_files;
        self.noop_at(files, "memory", false)?;
        let small = self
            .noop_rss
            .keys()
            .map(|(n, _)| *n)
            .filter(|&n| n < files)
            .max();
        let small = match small {
            Some(n) => n,
            None => {
                let n = (files / 4).max(1);
                self.noop_at(n, "memory-small", false)?;
                n
            }
        };
        for way in ["push", "pull"] {
            let (Some(big), Some(little)) = (
                self.noop_rss.get(&(files, way)),
                self.noop_rss.get(&(small, way)),
            ) else {
                continue;
            };
            let slope = (big - little) * 1024.0 / (files - small) as f64;
            self.note(format!(
                "memory, no-op {way}: ferry's peak RSS {:.0} MiB at {} files, {:.0} MiB at {}: \
                 {slope:.0} bytes per additional file ({:.0} bytes per file overall)",
                big / 1024.0,
                thousands(files),
                little / 1024.0,
                thousands(small),
                big * 1024.0 / files as f64
            ));
        }
        Ok(())
    }

    /// Scenario 6: what a run costs before it talks to the server, for a push job of 10 files
    /// already in sync. Three rows, CPU (user+sys) being the figure: `ferry check` (the job file
    /// loaded and validated, nothing opened); `ferry sync` of the job pointed at a port where
    /// nothing listens, with one attempt (everything up to the first connect: config, CA file,
    /// state database, local scan; then the refusal, reported); and the whole no-op `ferry
    /// sync` (connect, TLS, login, listing, plan).
    pub fn startup(&mut self) -> BenchResult<()> {
        const FILES: usize = 10;
        eprintln!("startup: a push job of {FILES} files, already in sync");
        let side = "startup";
        let local = self.work.join("startup-local");
        remove_tree(&local)?;
        self.server.fresh_dir(side)?;
        let tree = data::make_tree(&local, FILES, 1, NOOP_FILE_SIZE, NOOP_SEED, self.mtime)?;
        let jobs = self.work.join("jobs").join(side);
        let job = self
            .tools
            .ferry_job(&jobs, Way::Push, &local, &format!("/{side}"), 1, "size")?;
        self.measure(&self.tools.ferry_sync("startup-first", &job))?;
        let dest = self.server.disk(side);
        data::verify(&dest, &tree).map_err(|e| format!("startup first sync: {e}"))?;
        let before = data::snapshot(&dest)?;

        // The same job, its endpoint on a port nobody listens on, one attempt.
        let closed = {
            let listener = io(
                "a closed port",
                std::net::TcpListener::bind(("127.0.0.1", 0)),
            )?;
            io("a closed port", listener.local_addr())?.port()
        };
        let refused_dir = self.work.join("jobs").join("startup-refused");
        let refused = self.tools.ferry_job(
            &refused_dir,
            Way::Push,
            &local,
            &format!("/{side}"),
            1,
            "size",
        )?;
        let text = io("job file", std::fs::read_to_string(&refused))?
            .replace(
                &format!("    port: {}\n", self.server.addr().port()),
                &format!("    port: {closed}\n"),
            )
            .replace(
                "    verify: size\n",
                "    verify: size\n    retry: { attempts: 1 }\n",
            );
        io("job file", std::fs::write(&refused, text))?;

        let mut costs: BTreeMap<&str, Vec<Cost>> = BTreeMap::new();
        for run in 0..self.sizes.runs.max(5) {
            for what in ["check", "refused", "noop"] {
                let label = format!("startup-{what}-r{run}");
                let step = match what {
                    "check" => Step::new(&label, &self.tools.ferry)
                        .args(["check", "--config"])
                        .arg(job.display().to_string()),
                    "refused" => self.tools.ferry_sync(&label, &refused).expecting_failure(),
                    _ => self.tools.ferry_sync(&label, &job),
                };
                let cost = self.measure(&step)?;
                if what == "refused" {
                    let said = std::fs::read_to_string(self.logs().join(format!("{label}.stderr")))
                        .unwrap_or_default();
                    if !said.to_lowercase().contains("refused") {
                        return Err(format!(
                            "{label}: failed, but not for a refused connection: {said}"
                        ));
                    }
                }
                if what == "noop" {
                    let after = data::snapshot(&dest)?;
                    if let Some(change) = data::first_change(&before, &after) {
                        return Err(format!("{label}: not a no-op: {change}"));
                    }
                }
                costs.entry(what).or_default().push(cost);
            }
        }
        let scenario = format!("start-up, push job of {FILES} files");
        for (what, name) in [
            ("check", "ferry check (load, validate)"),
            ("refused", "ferry sync to the first connect (refused)"),
            ("noop", "ferry sync, whole no-op"),
        ] {
            let costs = costs.remove(what).unwrap_or_default();
            let cpu: Vec<f64> = costs.iter().map(|c| c.cpu).collect();
            if let Some(median) = table::median(cpu) {
                self.note(format!(
                    "start-up, {name}: CPU (user+sys) {:.0} ms, median of {} (GNU time counts \
                     CPU in steps of 10 ms)",
                    median * 1000.0,
                    costs.len()
                ));
            }
            self.push_row(&scenario, name, costs, Work::Checked(FILES));
        }
        remove_tree(&local)?;
        remove_tree(&dest)?;
        Ok(())
    }

    /// A tree of `files` in sync on both sides, then no-op re-syncs of it, push and pull.
    fn noop_at(&mut self, files: usize, prefix: &str, baselines: bool) -> BenchResult<()> {
        let dirs = files.div_ceil(FILES_PER_DIR).max(1);
        let c = self.noop_connections;
        eprintln!(
            "{prefix}: no-op re-sync of {files} files in {dirs} directories, {c} connections"
        );
        let mut tools = if baselines {
            self.baseline_names(&["lftp", "rclone"])
        } else {
            vec!["ferry"]
        };
        tools.push("listing");

        for way in [Way::Push, Way::Pull] {
            let side = format!("{prefix}-{}", way.as_str());
            let remote = format!("/{side}");
            let local = self.work.join(format!("{side}-local"));
            remove_tree(&local)?;
            // The source, and the destination made in sync by a first ferry run.
            let tree = match way {
                Way::Push => {
                    self.server.fresh_dir(&side)?;
                    data::make_tree(&local, files, dirs, NOOP_FILE_SIZE, NOOP_SEED, self.mtime)?
                }
                Way::Pull => {
                    let root = self.server.disk(&side);
                    remove_tree(&root)?;
                    let tree =
                        data::make_tree(&root, files, dirs, NOOP_FILE_SIZE, NOOP_SEED, self.mtime)?;
                    self.server.give(&root)?;
                    io("local directory", std::fs::create_dir_all(&local))?;
                    tree
                }
            };
            let dest = match way {
                Way::Push => self.server.disk(&side),
                Way::Pull => local.clone(),
            };
            let jobs = self.work.join("jobs").join(&side);
            let job = self
                .tools
                .ferry_job(&jobs, way, &local, &remote, c, "size")?;
            let first = self.measure(&self.tools.ferry_sync(&format!("{side}-first"), &job))?;
            data::verify(&dest, &tree).map_err(|e| format!("{side} first sync: {e}"))?;
            self.note(format!(
                "{side}: the first sync (setup, not in the table): {} files in {:.1} s, {:.0} \
                 files/s, peak RSS {:.0} MiB",
                thousands(files),
                first.wall.as_secs_f64(),
                files as f64 / first.wall.as_secs_f64().max(1e-6),
                first.max_rss_kib as f64 / 1024.0
            ));
            let before = data::snapshot(&dest)?;

            let mut costs: BTreeMap<&str, Vec<Cost>> = BTreeMap::new();
            let mut server_cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for run in 0..self.sizes.runs {
                for tool in in_turn(&tools, run) {
                    let label = format!("{side}-{tool}-r{run}");
                    let step = match tool {
                        "ferry" => self.tools.ferry_sync(&label, &job),
                        "listing" => self.tools.bare_listing(&label, &job),
                        "lftp" => self
                            .tools
                            .lftp_mirror(&label, &jobs, way, &local, &remote, c)?,
                        _ => self.tools.rclone_copy(&label, way, &local, &remote, c, c),
                    };
                    let mark = self.server.log_mark();
                    let (cost, used) = self.measure_with_server(&step)?;
                    if let Some(used) = used {
                        server_cpu.entry(tool).or_default().push(used);
                    }
                    self.check_noop(&label, &dest, &before, &tree, mark)?;
                    if run == 0
                        && tool == "ferry"
                        && let Some(seen) = mark.and_then(|m| self.server.commands_since(m))
                    {
                        let all: Vec<String> =
                            seen.iter().map(|(v, n)| format!("{v} {n}")).collect();
                        self.note(format!(
                            "{side}: ferry's no-op sent {} commands: {}",
                            seen.values().sum::<usize>(),
                            all.join(", ")
                        ));
                    }
                    if tool == "listing" {
                        check_listing(&self.logs(), &label, files + dirs)?;
                    }
                    costs.entry(tool).or_default().push(cost);
                }
            }
            let scenario = format!(
                "no-op {}, {} files in {} dirs",
                way.as_str(),
                thousands(files),
                thousands(dirs)
            );
            self.note_server_cpu(&scenario, &server_cpu);
            self.note_machine_busy(&scenario, &costs);
            if let Some(ferry) = costs.get("ferry") {
                let rss = table::median(
                    ferry
                        .iter()
                        .map(|c| c.max_rss_kib as f64)
                        .collect::<Vec<_>>(),
                )
                .unwrap_or_default();
                self.noop_rss.insert((files, way.as_str()), rss);
            }
            for &tool in &tools {
                let name = match tool {
                    "ferry" => format!("ferry ({c} conn.)"),
                    "listing" => format!("ferry's bare listing ({c} conn.)"),
                    "lftp" => format!(
                        "lftp `mirror {}--parallel={c}`",
                        if way == Way::Push { "-R " } else { "" }
                    ),
                    _ => format!("rclone `copy --checkers {c}`"),
                };
                self.push_row(
                    &scenario,
                    &name,
                    costs.remove(tool).unwrap_or_default(),
                    Work::Checked(files),
                );
            }
            remove_tree(&local)?;
            remove_tree(&self.server.disk(&side))?;
        }
        Ok(())
    }

    /// A no-op run must leave the destination as it was (same files, inodes, sizes, times, and
    /// content), and on vsftpd send no STOR, RETR, DELE or rename at all (an MKD of a directory
    /// that exists, as lftp sends, fails and changes nothing).
    fn check_noop(
        &self,
        label: &str,
        dest: &Path,
        before: &data::Snapshot,
        tree: &Tree,
        mark: Option<usize>,
    ) -> BenchResult<()> {
        let after = data::snapshot(dest)?;
        if let Some(change) = data::first_change(before, &after) {
            return Err(format!("{label}: not a no-op: {change}"));
        }
        data::verify(dest, tree).map_err(|e| format!("{label}: {e}"))?;
        if let Some(seen) = mark.and_then(|m| self.server.commands_since(m)) {
            let moved: usize = ["STOR", "RETR", "APPE", "DELE", "RNFR", "RNTO"]
                .iter()
                .filter_map(|v| seen.get(*v))
                .sum();
            if moved > 0 {
                return Err(format!(
                    "{label}: not a no-op: {moved} transfer or change commands sent ({seen:?})"
                ));
            }
        }
        Ok(())
    }

    pub fn print_table(&self) {
        if self.rows.is_empty() {
            return;
        }
        println!();
        println!(
            "ferry-bench, {} on {}, {} core(s), {}",
            self.server.describe(),
            self.server.addr(),
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            today()
        );
        println!();
        print!("{}", table::render(&self.rows, self.sizes.runs));
        if !self.notes.is_empty() {
            println!();
            for note in &self.notes {
                println!("- {note}");
            }
        }
    }
}

/// The bare listing prints `N entries`: it must have seen the whole tree.
fn check_listing(logs: &Path, label: &str, want: usize) -> BenchResult<()> {
    let out = std::fs::read_to_string(logs.join(format!("{label}.stdout"))).unwrap_or_default();
    let got: Option<usize> = out.split_whitespace().next().and_then(|n| n.parse().ok());
    if got != Some(want) {
        return Err(format!(
            "{label}: the listing saw {got:?} entries, the tree has {want}"
        ));
    }
    Ok(())
}

/// One line about the FTP commands a tool sent for `files` files: per file, in all and by verb,
/// and beyond the data connection itself (EPSV/PASV/EPRT/PORT and the STOR/RETR on it).
fn per_file_commands(
    tool: &str,
    way: Way,
    n: usize,
    files: usize,
    seen: &BTreeMap<String, usize>,
) -> String {
    let total: usize = seen.values().sum();
    let data: usize = ["EPSV", "PASV", "EPRT", "PORT", "STOR", "RETR", "APPE"]
        .iter()
        .filter_map(|v| seen.get(*v))
        .sum();
    let per = |c: usize| c as f64 / files.max(1) as f64;
    let mut by_verb: Vec<(&String, &usize)> = seen.iter().collect();
    by_verb.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let detail: Vec<String> = by_verb
        .iter()
        .map(|(v, c)| format!("{v} {:.2}", per(**c)))
        .collect();
    format!(
        "control commands per file, {tool} {} with {n} conn.: {:.2} in all, {:.2} beyond the \
         data connection (all but EPSV/PASV and {}); by verb: {}",
        way.as_str(),
        per(total),
        per(total - data),
        if way == Way::Push { "STOR" } else { "RETR" },
        detail.join(", ")
    )
}

/// The order of the tools in run `run`: the list turned left by `run`, so that over as many runs
/// as tools each one goes first once. What one tool leaves behind (dirty pages still being
/// written out, inodes just freed on this machine's journal-less ext4) then weighs on every
/// tool's median alike, not always on the one that comes after the same neighbour.
fn in_turn<'a>(tools: &[&'a str], run: usize) -> Vec<&'a str> {
    let mut order = tools.to_vec();
    if !order.is_empty() {
        let by = run % order.len();
        order.rotate_left(by);
    }
    order
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Today's date (UTC), `YYYY-MM-DD`.
fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(5), "5");
        assert_eq!(thousands(5000), "5,000");
        assert_eq!(thousands(200_000), "200,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn each_tool_goes_first_once_in_as_many_runs_as_tools() {
        let tools = ["ferry", "lftp", "rclone"];
        assert_eq!(in_turn(&tools, 0), ["ferry", "lftp", "rclone"]);
        assert_eq!(in_turn(&tools, 1), ["lftp", "rclone", "ferry"]);
        assert_eq!(in_turn(&tools, 2), ["rclone", "ferry", "lftp"]);
        assert_eq!(in_turn(&tools, 3), in_turn(&tools, 0), "then round again");
        assert!(in_turn(&[], 4).is_empty());
    }
}
