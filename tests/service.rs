//! The shipped systemd unit runs the agent, is hardened, and agrees with `jobs.example.yaml`:
//! every local directory and `move_to` of the example is writable, every credential it names is
//! loaded, and nothing it refers to is missing from the repository.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

const UNIT: &str = include_str!("../systemd/ferry.service");
const EXAMPLE: &str = include_str!("../jobs.example.yaml");

/// The values of `key=` lines of the unit, split on whitespace.
fn unit_values(key: &str) -> Vec<String> {
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

fn example() -> serde_norway::Value {
    serde_norway::from_str(EXAMPLE).unwrap()
}

#[test]
fn the_unit_runs_the_agent_as_a_notify_service_with_a_watchdog() {
    assert_eq!(unit_values("Type"), ["notify"]);
    let exec = unit_values("ExecStart");
    assert_eq!(exec[0], "/usr/local/bin/ferry");
    assert_eq!(exec[1], "run");
    assert!(!unit_values("WatchdogSec").is_empty());
    assert_eq!(unit_values("ExecReload"), ["/bin/kill", "-HUP", "$MAINPID"]);
    // Longer than the example's shutdown grace, so a graceful stop is not cut short.
    let grace = humantime::parse_duration(example()["shutdown_grace"].as_str().unwrap()).unwrap();
    let stop = humantime::parse_duration(&unit_values("TimeoutStopSec")[0]).unwrap();
    assert!(
        stop > grace,
        "TimeoutStopSec {stop:?} <= shutdown_grace {grace:?}"
    );
}

#[test]
fn every_directory_of_the_example_is_writable_and_every_credential_loaded() {
    let example = example();
    let writable: BTreeSet<String> = unit_values("ReadWritePaths").into_iter().collect();
    let mut dirs = Vec::new();
    for (_, job) in example["jobs"].as_mapping().unwrap() {
        dirs.push(job["local"].as_str().unwrap().to_owned());
        if let Some(dir) = job["after_upload"]["move_to"].as_str() {
            dirs.push(dir.to_owned());
        }
        if let Some(dir) = job["backup_dir"].as_str() {
            dirs.push(dir.to_owned());
        }
    }
    assert!(dirs.len() >= 4, "{dirs:?}");
    for dir in &dirs {
        assert!(
            writable.contains(dir),
            "{dir} is not in ReadWritePaths={writable:?}"
        );
    }
    // Nothing writable that the example does not use.
    assert_eq!(writable, dirs.iter().cloned().collect::<BTreeSet<_>>());

    let loaded: Vec<String> = unit_values("LoadCredential")
        .into_iter()
        .chain(unit_values("LoadCredentialEncrypted"))
        .map(|v| v.split(':').next().unwrap().to_owned())
        .collect();
    let mut credentials = Vec::new();
    for (_, endpoint) in example["endpoints"].as_mapping().unwrap() {
        if let Some(name) = endpoint["password_credential"].as_str() {
            credentials.push(name.to_owned());
        }
    }
    assert!(!credentials.is_empty());
    assert_eq!(
        loaded.iter().collect::<BTreeSet<_>>(),
        credentials.iter().collect::<BTreeSet<_>>()
    );
    // password_env: the unit gives the service an environment file to hold the variable.
    let uses_env = example["endpoints"]
        .as_mapping()
        .unwrap()
        .values()
        .any(|e| e["password_env"].is_string());
    assert!(!uses_env || !unit_values("EnvironmentFile").is_empty());
}

#[test]
fn the_unit_refers_to_nothing_that_is_not_shipped() {
    assert!(unit_values("Documentation").is_empty());
    for line in UNIT.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains(".timer"), "{line}");
    }
    assert!(!Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/ferry.timer")).exists());
}

/// `systemd-analyze`, where this machine has it: the unit verifies (but for the binary not
/// being installed here) and its exposure is at most 2.5.
#[test]
fn systemd_analyze_finds_the_unit_sound_and_hardened() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/ferry.service");
    let Ok(verify) = std::process::Command::new("systemd-analyze")
        .args(["verify", unit])
        .output()
    else {
        println!("skipping: systemd-analyze is not installed");
        return;
    };
    let said = String::from_utf8_lossy(&verify.stderr).into_owned()
        + &String::from_utf8_lossy(&verify.stdout);
    for line in said.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains("/usr/local/bin/ferry is not executable"),
            "systemd-analyze verify: {line}"
        );
    }
    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", unit])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&security.stdout);
    let level = out
        .lines()
        .find_map(|l| l.split("exposure level for ferry.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    assert!(level <= 2.5, "exposure {level}:\n{out}");
}
