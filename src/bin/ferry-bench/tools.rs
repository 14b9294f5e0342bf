//! The command lines of ferry and of the baselines, each trusting the server's throwaway CA.
//!
//! - ferry: the release binary next to this executable, `ferry sync bench --config FILE`, with a
//!   job file (and state directory) per measured run;
//! - ferry's bare listing: this executable's hidden `list-remote` (ferry's transport and pool,
//!   the same recursive walk a sync does, nothing else);
//! - lftp: a script (`lftp -f`) with `ftp:ssl-force`, `ftp:ssl-protect-data` and `ssl:ca-file`,
//!   then `mirror` (`-R` to push) with `--parallel=N`;
//! - rclone: `rclone copy` on an on-the-fly `:ftp:` remote with `--ftp-explicit-tls`; rclone
//!   1.60's FTP backend has no CA option (`--ca-cert` is for HTTP), but Go reads extra trust
//!   anchors from `SSL_CERT_FILE`, which the bench points at the CA, so certificates are still
//!   verified (`--ftp-no-check-certificate` is not used). Against vsftpd 3.0.3 it needs
//!   `--ftp-disable-tls13` (its TLS 1.3 session tickets are refused on data connections);
//! - curl: `curl --ssl-reqd --cacert CA -T FILE` / `-o FILE`, the login from a netrc file.

use std::path::{Path, PathBuf};

use crate::child::Step;
use crate::server::Server;
use crate::watch::write_private;
use crate::{BenchResult, io};

pub const LFTP: &str = "/usr/bin/lftp";
pub const RCLONE: &str = "/usr/bin/rclone";
pub const CURL: &str = "/usr/bin/curl";

/// Which way data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Push,
    Pull,
}

impl Way {
    pub fn as_str(self) -> &'static str {
        match self {
            Way::Push => "push",
            Way::Pull => "pull",
        }
    }
}

/// Everything the command lines need: where the tools are, and how to reach the server.
pub struct Tools {
    pub ferry: PathBuf,
    bench: PathBuf,
    pub lftp: bool,
    pub rclone: bool,
    pub curl: bool,
    host: String,
    port: u16,
    user: String,
    password: String,
    password_file: PathBuf,
    netrc: PathBuf,
    rclone_config: PathBuf,
    rclone_pass: String,
    ca: PathBuf,
    /// `tls_max_version` of ferry's jobs, when the bench was asked for one.
    tls_max: Option<String>,
    vsftpd: bool,
}

impl Tools {
    /// Find ferry (next to this executable) and the baselines; write the secrets files into
    /// `work`.
    pub fn find(
        server: &Server,
        work: &Path,
        baselines: bool,
        tls_max: Option<String>,
    ) -> BenchResult<Tools> {
        let bench = io("current executable", std::env::current_exe())?;
        let ferry = bench.with_file_name("ferry");
        if !ferry.is_file() {
            return Err(format!(
                "{} is missing: run `cargo build --release --bins` first",
                ferry.display()
            ));
        }
        let have = |p: &str| baselines && Path::new(p).is_file();
        let addr = server.addr();
        let password_file = work.join("password");
        write_private(&password_file, server.password())?;
        let netrc = work.join("netrc");
        write_private(
            &netrc,
            &format!(
                "machine {} login {} password {}\n",
                addr.ip(),
                server.user(),
                server.password()
            ),
        )?;
        let rclone_config = work.join("rclone.conf");
        io("rclone config", std::fs::write(&rclone_config, ""))?;
        let rclone = have(RCLONE);
        let rclone_pass = if rclone {
            obscure(server.password())?
        } else {
            String::new()
        };
        Ok(Tools {
            ferry,
            bench,
            lftp: have(LFTP),
            rclone,
            curl: have(CURL),
            host: addr.ip().to_string(),
            port: addr.port(),
            user: server.user().to_owned(),
            password: server.password().to_owned(),
            password_file,
            netrc,
            rclone_config,
            rclone_pass,
            ca: server.ca_pem(),
            vsftpd: server.is_vsftpd(),
            tls_max,
        })
    }

    /// Write a ferry job file `bench` (state in `dir/state`) and return its path.
    pub fn ferry_job(
        &self,
        dir: &Path,
        way: Way,
        local: &Path,
        remote: &str,
        connections: usize,
        verify: &str,
    ) -> BenchResult<PathBuf> {
        io("job directory", std::fs::create_dir_all(dir.join("state")))?;
        let job = dir.join("jobs.yaml");
        let yaml = format!(
            "version: 1
state_dir: {state}
endpoints:
  bench:
    host: {host}
    port: {port}
    user: {user}
    password_file: {password}
    ca_file: {ca}
    max_connections: {connections}
{tls_max}jobs:
  bench:
    endpoint: bench
    direction: {way}
    local: {local}
    remote: {remote}
    verify: {verify}
{ready}",
            // The bench's data is complete before a pull starts: no waiting for stability.
            ready = if way.as_str() == "pull" {
                "    ready: immediate\n"
            } else {
                ""
            },
            tls_max = match &self.tls_max {
                Some(v) => format!("    tls_max_version: \"{v}\"\n"),
                None => String::new(),
            },
            state = dir.join("state").display(),
            host = self.host,
            port = self.port,
            user = self.user,
            password = self.password_file.display(),
            ca = self.ca.display(),
            way = way.as_str(),
            local = local.display(),
        );
        io("job file", std::fs::write(&job, yaml))?;
        Ok(job)
    }

    pub fn ferry_sync(&self, label: &str, job: &Path) -> Step {
        Step::new(label, &self.ferry)
            .args(["sync", "bench", "--config"])
            .arg(job.display().to_string())
    }

    /// ferry's bare recursive listing of the job's remote tree.
    pub fn bare_listing(&self, label: &str, job: &Path) -> Step {
        Step::new(label, &self.bench)
            .args(["list-remote", "--job", "bench", "--config"])
            .arg(job.display().to_string())
    }

    /// `lftp -f SCRIPT` running `mirror [-R] --parallel=N SOURCE TARGET`; the script is
    /// written into `dir`.
    pub fn lftp_mirror(
        &self,
        label: &str,
        dir: &Path,
        way: Way,
        local: &Path,
        remote: &str,
        parallel: usize,
    ) -> BenchResult<Step> {
        io("lftp directory", std::fs::create_dir_all(dir))?;
        let (reverse, from, to) = match way {
            Way::Push => ("-R ", quote(&local.display().to_string()), quote(remote)),
            Way::Pull => ("", quote(remote), quote(&local.display().to_string())),
        };
        let script = format!(
            "set cmd:fail-exit yes
set net:max-retries 2
set net:timeout 60
set ftp:ssl-force yes
set ftp:ssl-protect-data yes
set ssl:verify-certificate yes
set ssl:ca-file {ca}
open -u {user},{password} -p {port} ftp://{host}
mirror {reverse}--parallel={parallel} {from} {to}
",
            ca = quote(&self.ca.display().to_string()),
            user = quote(&self.user),
            password = quote(&self.password),
            port = self.port,
            host = self.host,
        );
        let path = dir.join(format!("{label}.lftp"));
        write_private(&path, &script)
            .or_else(|_| io("lftp script", std::fs::write(&path, &script)))?;
        Ok(Step::new(label, LFTP)
            .arg("-f")
            .arg(path.display().to_string()))
    }

    /// `rclone copy SOURCE TARGET --transfers T --checkers C`.
    pub fn rclone_copy(
        &self,
        label: &str,
        way: Way,
        local: &Path,
        remote: &str,
        transfers: usize,
        checkers: usize,
    ) -> Step {
        let remote = format!(":ftp:{remote}");
        let local = local.display().to_string();
        let (from, to) = match way {
            Way::Push => (local, remote),
            Way::Pull => (remote, local),
        };
        let mut step = Step::new(label, RCLONE)
            .args(["copy", &from, &to])
            .args(["--transfers", &transfers.to_string()])
            .args(["--checkers", &checkers.to_string()])
            .args(["--config", &self.rclone_config.display().to_string()])
            .args(["--retries", "1"])
            .args(["--ftp-host", &self.host])
            .args(["--ftp-port", &self.port.to_string()])
            .args(["--ftp-user", &self.user])
            .arg("--ftp-explicit-tls")
            .env("RCLONE_FTP_PASS", self.rclone_pass.clone())
            .env("SSL_CERT_FILE", self.ca.display().to_string());
        if self.vsftpd {
            step = step.arg("--ftp-disable-tls13");
        }
        step
    }

    /// `curl -T FILE URL` (push) or `curl -o FILE URL` (pull).
    pub fn curl(&self, label: &str, way: Way, local: &Path, remote: &str) -> Step {
        let url = format!("ftp://{}:{}{remote}", self.host, self.port);
        let flag = match way {
            Way::Push => "-T",
            Way::Pull => "-o",
        };
        Step::new(label, CURL)
            .args(["-sS", "--fail", "--ssl-reqd", "--cacert"])
            .arg(self.ca.display().to_string())
            .arg("--netrc-file")
            .arg(self.netrc.display().to_string())
            .arg(flag)
            .arg(local.display().to_string())
            .arg(url)
    }
}

/// A double-quoted lftp word.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `rclone obscure PASSWORD`: the form rclone takes a password in.
fn obscure(password: &str) -> BenchResult<String> {
    let out = io(
        "rclone obscure",
        std::process::Command::new(RCLONE)
            .args(["obscure", password])
            .output(),
    )?;
    if !out.status.success() {
        return Err("rclone obscure failed".into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(dir: &Path, tls_max: Option<&str>) -> Tools {
        let password_file = dir.join("password");
        write_private(&password_file, "secret-password").unwrap();
        let ca = dir.join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        Tools {
            ferry: dir.join("ferry"),
            bench: dir.join("ferry-bench"),
            lftp: false,
            rclone: false,
            curl: false,
            host: "127.0.0.1".into(),
            port: 2121,
            user: "bench".into(),
            password: "secret-password".into(),
            password_file,
            netrc: dir.join("netrc"),
            rclone_config: dir.join("rclone.conf"),
            rclone_pass: String::new(),
            ca,
            vsftpd: false,
            tls_max: tls_max.map(str::to_owned),
        }
    }

    /// `--ferry-tls-max` reaches ferry: the job file it writes is one ferry accepts, with the
    /// endpoint's `tls_max_version` set; without the option there is none.
    #[test]
    fn the_job_file_carries_the_tls_ceiling() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("local");
        std::fs::create_dir_all(&local).unwrap();
        let tools = |tls_max| {
            let each = dir.path().join(format!("{tls_max:?}"));
            std::fs::create_dir_all(&each).unwrap();
            tools(&each, tls_max)
        };
        for (asked, expect) in [
            (Some("1.2"), Some(ferry::config::TlsVersion::V1_2)),
            (Some("1.3"), Some(ferry::config::TlsVersion::V1_3)),
            (None, None),
        ] {
            let jobs = dir.path().join(format!("jobs-{asked:?}"));
            let job = tools(asked)
                .ferry_job(&jobs, Way::Push, &local, "/remote", 4, "size")
                .unwrap();
            let config = ferry::config::load(&job).unwrap();
            assert_eq!(
                config.endpoints["bench"].tls_max_version, expect,
                "{asked:?}"
            );
        }
    }
}
