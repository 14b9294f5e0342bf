//! One measured child process: wall time, CPU time and peak memory, with a timeout.
//!
//! The child runs under GNU time (`/usr/bin/time -f '%e %U %S %M' -o FILE`): time waits for it
//! and writes its user and system CPU seconds and its peak resident set size (`ru_maxrss`, KiB)
//! from the rusage `wait4` returns, which covers the child and any process it waited for. The
//! wall time is the bench's own clock from spawn to exit (time's `%e` has only 10 ms steps).
//!
//! The child is the leader of a new process group; on timeout the whole group (time, the tool
//! and anything it forked) gets SIGKILL, by that group's id, and the step fails. Its stdout and
//! stderr go to files in the step's directory, quoted in the error when it fails.
//!
//! With `FERRY_BENCH_PERF=DIR` set, each ferry run is recorded by `perf record -g`, with
//! `FERRY_BENCH_CALLGRIND=DIR` it runs under callgrind (see [`run`]); the environment is
//! otherwise passed through (`FERRY_LOG=ferry=debug` with `--keep` leaves each run's log beside
//! its output).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{BenchResult, io};

pub const GNU_TIME: &str = "/usr/bin/time";

/// What one child cost.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub wall: Duration,
    /// User plus system CPU seconds.
    pub cpu: f64,
    /// Peak resident set size, KiB.
    pub max_rss_kib: u64,
    /// CPU seconds the whole machine was busy (every process, the kernel's interrupts
    /// included; `/proc/stat`) while the step ran: next to `wall` × cores, whether the step
    /// was bound by CPU, whoever spent it. `None` where `/proc/stat` cannot be read.
    pub machine_busy: Option<f64>,
}

/// The machine's busy CPU seconds since boot, from the `cpu` line of `/proc/stat` (all but
/// idle and iowait).
fn machine_busy_since_boot() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    busy_seconds(text.lines().next()?)
}

fn busy_seconds(cpu_line: &str) -> Option<f64> {
    let mut fields = cpu_line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let ticks: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if ticks.len() < 5 {
        return None;
    }
    let hz = 100.0; // USER_HZ, the unit of /proc/stat on Linux.
    let busy = ticks.iter().sum::<u64>() - ticks[3] - ticks[4];
    Some(busy as f64 / hz)
}

/// A command to measure: the program, its arguments and extra environment.
#[derive(Debug, Clone)]
pub struct Step {
    /// Short name for messages and the output files (`ferry-push-c8-r1`).
    pub label: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// A run expected to fail (a sync to a port nobody listens on): its exit status is not an
    /// error, the caller checks the reason.
    pub expect_failure: bool,
}

impl Step {
    pub fn new(label: impl Into<String>, program: impl Into<PathBuf>) -> Step {
        Step {
            label: label.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            expect_failure: false,
        }
    }

    /// This run is meant to fail: a non-zero exit is its result, not an error (a zero exit is).
    pub fn expecting_failure(mut self) -> Step {
        self.expect_failure = true;
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Step {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Step {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<String>) -> Step {
        self.env.push((k.to_owned(), v.into()));
        self
    }
}

/// Run `step` to completion (at most `timeout`), its output in `logs`; its cost, or why it
/// failed (a non-zero exit, a timeout), with the end of its stderr.
pub fn run(step: &Step, logs: &Path, timeout: Duration) -> BenchResult<Cost> {
    io("log directory", std::fs::create_dir_all(logs))?;
    let out = logs.join(format!("{}.stdout", step.label));
    let err = logs.join(format!("{}.stderr", step.label));
    let times = logs.join(format!("{}.time", step.label));
    let mut command = Command::new(GNU_TIME);
    command.arg("-f").arg("%e %U %S %M").arg("-o").arg(&times);
    // FERRY_BENCH_PERF=DIR: ferry's own runs are recorded by `perf record -g` into
    // DIR/LABEL.data, to read with `perf report -i`. The figures of those runs include perf's
    // cost: profile in one invocation, measure in another.
    if let Some(dir) = std::env::var_os("FERRY_BENCH_PERF")
        && step.program.file_name().is_some_and(|n| n == "ferry")
    {
        let data = Path::new(&dir).join(format!("{}.data", step.label));
        command
            .args(["perf", "record", "-F", "1999", "-g", "-q", "-o"])
            .arg(data)
            .arg("--");
    }
    // FERRY_BENCH_CALLGRIND=DIR: ferry's runs under `valgrind --tool=callgrind`, into
    // DIR/LABEL.out: instructions in ferry's own code, the same from run to run whatever else the
    // machine does (its wall and CPU figures mean nothing then), to compare two builds by.
    if let Some(dir) = std::env::var_os("FERRY_BENCH_CALLGRIND")
        && step.program.file_name().is_some_and(|n| n == "ferry")
    {
        let data = Path::new(&dir).join(format!("{}.out", step.label));
        let mut out_file = std::ffi::OsString::from("--callgrind-out-file=");
        out_file.push(data);
        command
            .args(["valgrind", "--tool=callgrind", "-q"])
            .arg(out_file)
            .arg("--");
    }
    if let Some(dir) = std::env::var_os("FERRY_BENCH_STRACE")
        && step.program.file_name().is_some_and(|n| n == "ferry")
    {
        let data = Path::new(&dir).join(format!("{}.strace", step.label));
        command
            .args(["strace", "-f", "-ttt", "-s", "80", "-e", "trace=network,read,write,writev,readv,recvfrom,sendto,openat,fsync,fdatasync,rename,renameat,futex", "-o"])
            .arg(data)
            .arg("--");
    }
    command
        .arg(&step.program)
        .args(&step.args)
        .stdin(Stdio::null())
        .stdout(io("stdout file", std::fs::File::create(&out))?)
        .stderr(io("stderr file", std::fs::File::create(&err))?);
    for (k, v) in &step.env {
        command.env(k, v);
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let machine_before = machine_busy_since_boot();
    let started = Instant::now();
    let mut child = io(&format!("start {}", step.label), command.spawn())?;
    let pid = child.id();
    // A waiting thread, so that the exit is seen at once and the timeout still holds.
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(status);
    });
    let status = match rx.recv_timeout(timeout) {
        Ok(status) => status,
        Err(_) => {
            kill_group(pid);
            let _ = waiter.join();
            return Err(format!(
                "{} did not finish within {}; killed{}",
                step.label,
                humantime::format_duration(timeout),
                tail(&err)
            ));
        }
    };
    let wall = started.elapsed();
    let machine_busy = machine_before
        .zip(machine_busy_since_boot())
        .map(|(before, after)| after - before);
    let _ = waiter.join();
    let status = io(&format!("wait for {}", step.label), status)?;
    if status.success() == step.expect_failure {
        return Err(format!(
            "{} failed ({status}){}{}",
            step.label,
            tail(&err),
            tail(&out)
        ));
    }
    let text = io("time's output", std::fs::read_to_string(&times))?;
    parse_time(&text, wall)
        .map(|cost| Cost {
            machine_busy,
            ..cost
        })
        .ok_or_else(|| format!("{}: cannot read time's output {text:?}", step.label))
}

/// The last line of GNU time's output: `%e %U %S %M`.
fn parse_time(text: &str, wall: Duration) -> Option<Cost> {
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 4 {
        return None;
    }
    let user: f64 = f[1].parse().ok()?;
    let sys: f64 = f[2].parse().ok()?;
    let max_rss_kib: u64 = f[3].parse().ok()?;
    Some(Cost {
        wall,
        cpu: user + sys,
        max_rss_kib,
        machine_busy: None,
    })
}

/// SIGKILL to every process of the group `pgid` (the child made it its own group).
fn kill_group(pgid: u32) {
    // sh's builtin kill: a negative id names the process group.
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -s KILL -- -{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// The last lines of a child's output file, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(12);
    if lines.is_empty() {
        String::new()
    } else {
        format!(
            "\n  --- {}:\n  {}",
            path.display(),
            lines[start..].join("\n  ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gnu_time_lines() {
        let c = parse_time("1.02 0.50 0.25 20480\n", Duration::from_secs(1)).unwrap();
        assert!((c.cpu - 0.75).abs() < 1e-9);
        assert_eq!(c.max_rss_kib, 20480);
        let failed = "Command exited with non-zero status 1\n0.00 0.00 0.00 1000\n";
        assert_eq!(
            parse_time(failed, Duration::ZERO).unwrap().max_rss_kib,
            1000
        );
        assert!(parse_time("garbage", Duration::ZERO).is_none());
    }

    #[test]
    fn the_machine_is_busy_in_all_but_idle_and_iowait() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let busy = busy_seconds("cpu  1000 50 600 9000 300 20 30 0 0 0").expect("a cpu line");
        assert!((busy - 17.0).abs() < 1e-9, "{busy}");
        assert!(
            busy_seconds("cpu0 1 2 3 4 5").is_none(),
            "one core's line is not the sum"
        );
        assert!(busy_seconds("cpu 1 2").is_none());
    }
}
