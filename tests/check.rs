//! `ferry check --connect` against the embedded libunftp FTPS server: one login per endpoint,
//! every job's remote root checked on it, and the exit code each outcome gives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use common::{Setup, endpoint, job};
use ferry::config::{Config, Direction, Endpoint, PasswordSource, Secret, TrustRoots};
use ferry::embedded::{EmbeddedOptions, EmbeddedServer, TEST_PASSWORD};
use tempfile::TempDir;

/// An embedded server whose root holds `data/` with two files, and a local directory for jobs.
struct World {
    server: EmbeddedServer,
    dir: TempDir,
}

async fn start() -> World {
    start_with(EmbeddedOptions::default()).await
}

async fn start_with(opts: EmbeddedOptions) -> World {
    let dir = tempfile::tempdir().unwrap();
    let server_root = dir.path().join("server");
    std::fs::create_dir_all(server_root.join("data")).unwrap();
    std::fs::write(server_root.join("data/a.txt"), b"a").unwrap();
    std::fs::write(server_root.join("data/b.txt"), b"bb").unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let server = EmbeddedServer::start(
        &server_root,
        &pki,
        EmbeddedOptions {
            passive_ports: support::embedded_passive_ports(),
            ..opts
        },
    )
    .await
    .unwrap();
    std::fs::create_dir_all(dir.path().join("local")).unwrap();
    World { server, dir }
}

impl World {
    fn endpoint(&self) -> Endpoint {
        endpoint(
            self.server.addr(),
            self.server.ca_pem(),
            "ferry",
            TEST_PASSWORD,
        )
    }

    fn local(&self) -> std::path::PathBuf {
        self.dir.path().join("local")
    }

    /// The first lines of an endpoint's block once logged in.
    fn logged_in(&self, name: &str) -> String {
        format!(
            "endpoint `{name}` ({}):\n  logged in as ferry\n  certificate: verified against ca_file {}, with hostname and expiry\n",
            self.server.addr(),
            self.server.ca_pem().display()
        )
    }
}

/// What the embedded server reports about itself, after a listing resumed the TLS session.
const CAPABILITIES: &str = "  TLS: TLSv1.3, TLS13_AES_128_GCM_SHA256
  data channel resumed TLS session: yes
  MLSD: yes
  MFMT: no (uploaded files show the time of the upload)
  SIZE: yes
  MDTM: yes
  REST STREAM: yes
  EPSV: yes
  UTF8: yes
  hash commands: SITE MD5
  transfers verified by: the server's SITE MD5 (MD5)
  banner: 220 ferry embedded FTPS server
";

async fn check(config: &Config) -> (i32, String) {
    let mut out = Vec::new();
    let code = ferry::check::connect_all(config, &mut out).await;
    (code, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn every_job_root_is_checked_on_one_login_and_a_missing_push_root_is_fine() {
    let w = start().await;
    let local = w.local();
    let setup = Setup::new(
        w.endpoint(),
        vec![
            job("drop", Direction::Push, &local, "/outgoing/new"),
            job("fetch", Direction::Pull, &local, "/data"),
            job("send", Direction::Push, &local, "/data"),
        ],
    );
    let (code, text) = check(&setup.config).await;
    assert_eq!(
        text,
        format!(
            "{}  job `drop` (push): /outgoing/new: does not exist yet; the first sync creates it
  job `fetch` (pull): /data: ok, 2 entries
  job `send` (push): /data: ok, 2 entries; renames: yes, onto existing names too; modification times: not settable here (uploads show the upload time) (probed with files under temporary names, removed)
{CAPABILITIES}",
            w.logged_in("server")
        )
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        !w.dir.path().join("server/outgoing").exists(),
        "check creates no root on the server"
    );
    assert_eq!(
        std::fs::read_dir(w.dir.path().join("server/data"))
            .unwrap()
            .count(),
        2,
        "the rename probe's files are gone"
    );
}

/// In a push root, check --connect says whether the server renames, and onto existing names:
/// what a sync will do about it.
#[tokio::test]
async fn renames_are_probed_in_push_roots() {
    for (opts, want, left) in [
        (
            EmbeddedOptions {
                refuse_rename_over_existing: true,
                ..EmbeddedOptions::default()
            },
            "renames: yes, but not onto an existing name: an update deletes the old file first",
            0,
        ),
        (
            EmbeddedOptions {
                write_only: true,
                ..EmbeddedOptions::default()
            },
            "the server refuses renames (550 Permission denied): uploads go straight to final names (`upload: direct` says so from the start); modification times: not settable here (uploads show the upload time) (probe files the server would not let ferry remove: .ferry-check-",
            1,
        ),
    ] {
        let w = start_with(opts).await;
        let local = w.local();
        let setup = Setup::new(
            w.endpoint(),
            vec![
                job("fetch", Direction::Pull, &local, "/data"),
                job("send", Direction::Push, &local, "/data"),
            ],
        );
        let (code, text) = check(&setup.config).await;
        assert_eq!(code, 0, "{text}");
        let send = text
            .lines()
            .find(|l| l.contains("job `send`"))
            .unwrap_or_default();
        assert!(send.contains(want), "{text}");
        // A pull root is never written to.
        let fetch = text
            .lines()
            .find(|l| l.contains("job `fetch`"))
            .unwrap_or_default();
        assert!(!fetch.contains("renames"), "{text}");
        let probes = std::fs::read_dir(w.dir.path().join("server/data"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".ferry-check-")
            })
            .count();
        assert_eq!(probes, left, "{text}");
    }
}

#[tokio::test]
async fn a_missing_pull_root_is_an_error_with_the_server_reply_and_exit_1() {
    let w = start().await;
    let local = w.local();
    let setup = Setup::new(
        w.endpoint(),
        vec![
            job("fetch", Direction::Pull, &local, "/nowhere"),
            job("fine", Direction::Pull, &local, "/data"),
        ],
    );
    let (code, text) = check(&setup.config).await;
    assert_eq!(
        text,
        format!(
            "{}  job `fetch` (pull): /nowhere: error: 550 File not found
  job `fine` (pull): /data: ok, 2 entries
{CAPABILITIES}",
            w.logged_in("server")
        )
    );
    assert_eq!(code, 1, "{text}");
}

#[tokio::test]
async fn a_wrong_password_is_exit_3_and_the_other_endpoints_are_still_checked() {
    let w = start().await;
    let local = w.local();
    let mut setup = Setup::new(
        w.endpoint(),
        vec![job("fetch", Direction::Pull, &local, "/data")],
    );
    let mut wrong = w.endpoint();
    wrong.name = "a-wrong".to_owned();
    wrong.password = PasswordSource::Literal(Secret::new("not-the-password"));
    setup.config.endpoints.insert("a-wrong".to_owned(), wrong);
    let (code, text) = check(&setup.config).await;
    assert_eq!(
        text,
        format!(
            "endpoint `a-wrong` ({}):\n  error: login as ferry: 530 Authentication failed\n{}  job `fetch` (pull): /data: ok, 2 entries\n{CAPABILITIES}",
            w.server.addr(),
            w.logged_in("server")
        )
    );
    assert_eq!(code, 3, "{text}");
}

/// A password that only the systemd unit provides (here: an environment variable nobody set)
/// means that endpoint cannot log in: reported, exit 3, and the others go on.
#[tokio::test]
async fn a_password_that_cannot_be_read_is_reported_and_the_others_go_on() {
    let w = start().await;
    let local = w.local();
    let mut setup = Setup::new(
        w.endpoint(),
        vec![job("fetch", Direction::Pull, &local, "/data")],
    );
    let mut unset = w.endpoint();
    unset.name = "a-unit".to_owned();
    unset.password = PasswordSource::Env("FERRY_CHECK_TEST_NEVER_SET".to_owned());
    setup.config.endpoints.insert("a-unit".to_owned(), unset);
    let (code, text) = check(&setup.config).await;
    assert_eq!(
        text,
        format!(
            "endpoint `a-unit` ({}):\n  error: endpoint `a-unit`: environment variable `FERRY_CHECK_TEST_NEVER_SET` (password_env) is not set\n{}  job `fetch` (pull): /data: ok, 2 entries\n{CAPABILITIES}",
            w.server.addr(),
            w.logged_in("server")
        )
    );
    assert_eq!(code, 3, "{text}");
}

/// A certificate from a CA the endpoint does not trust: exit 3, and the error says what the
/// certificate is and how to trust or pin it. (Both throwaway CAs bear the same name, so
/// webpki finds the other one and reports its signature as bad rather than the issuer as
/// unknown.)
#[tokio::test]
async fn an_untrusted_certificate_is_exit_3_and_described() {
    let w = start().await;
    let other = start().await;
    let local = w.local();
    let mut ep = w.endpoint();
    ep.trust = TrustRoots::CaFile(other.server.ca_pem().to_path_buf());
    let setup = Setup::new(ep, vec![job("fetch", Direction::Pull, &local, "/data")]);
    let (code, text) = check(&setup.config).await;
    let fingerprint: Vec<String> = w
        .server
        .server_cert_sha256()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let fingerprint = fingerprint.join(":");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        lines[1],
        format!(
            "  error: AUTH TLS: Secure error: invalid peer certificate: BadSignature; the server's certificate: \
             subject \"CN=ferry test server\", issuer \"CN=ferry throwaway test CA\", \
             not before 1975-01-01 00:00:00 UTC, not after 4096-01-01 00:00:00 UTC, \
             SHA-256 {fingerprint}; trust it with ca_file: <the issuer's CA file> or pin it with \
             pin_sha256: \"{fingerprint}\" (and no ca_file)"
        )
    );
    assert_eq!(code, 3, "{text}");
}

/// `check --connect` says how the certificate is trusted when a pin is set: alone, exactly that
/// certificate (hostname and expiry not checked, like known_hosts); with a ca_file, both.
#[tokio::test]
async fn a_pinned_certificate_is_described_as_pinned() {
    let w = start().await;
    let local = w.local();
    let mut ep = w.endpoint();
    ep.trust = TrustRoots::System;
    ep.pin_sha256 = Some(w.server.server_cert_sha256());
    let setup = Setup::new(
        ep.clone(),
        vec![job("fetch", Direction::Pull, &local, "/data")],
    );
    let (code, text) = check(&setup.config).await;
    assert!(
        text.contains(
            "  certificate: pinned by pin_sha256: exactly that certificate is accepted; \
             hostname and expiry are not checked\n"
        ),
        "{text}"
    );
    assert_eq!(code, 0, "{text}");

    ep.trust = TrustRoots::CaFile(w.server.ca_pem().to_path_buf());
    let setup = Setup::new(ep, vec![job("fetch", Direction::Pull, &local, "/data")]);
    let (code, text) = check(&setup.config).await;
    assert!(
        text.contains(&format!(
            "  certificate: verified against ca_file {}, with hostname and expiry, and pinned by \
             pin_sha256\n",
            w.server.ca_pem().display()
        )),
        "{text}"
    );
    assert_eq!(code, 0, "{text}");
}
