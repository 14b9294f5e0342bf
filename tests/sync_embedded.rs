//! End-to-end sync against the embedded libunftp FTPS server (MLSD, TLS 1.3) over loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

mod common;
mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{Setup, endpoint, job, pseudo_random, tree, write_sample_tree};
use ferry::config::{Direction, TrustRoots};
use ferry::embedded::{CertKind, EmbeddedOptions, EmbeddedServer};
use ferry::plan::ActionKind;
use ferry::transport::ErrorKind;
use tempfile::TempDir;

struct World {
    server: EmbeddedServer,
    server_root: std::path::PathBuf,
    dir: TempDir,
}

async fn start(opts: EmbeddedOptions) -> World {
    let dir = tempfile::tempdir().unwrap();
    let server_root = dir.path().join("server");
    std::fs::create_dir_all(server_root.join("data")).unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let opts = EmbeddedOptions {
        passive_ports: support::embedded_passive_ports(),
        ..opts
    };
    let server = EmbeddedServer::start(&server_root, &pki, opts)
        .await
        .unwrap();
    World {
        server,
        server_root,
        dir,
    }
}

impl World {
    fn local(&self, name: &str) -> std::path::PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn endpoint(&self) -> ferry::config::Endpoint {
        endpoint(
            self.server.addr(),
            self.server.ca_pem(),
            "ferry",
            ferry::embedded::TEST_PASSWORD,
        )
    }
}

fn set_mtime(p: &Path, t: SystemTime) {
    filetime::set_file_mtime(p, filetime::FileTime::from_system_time(t)).unwrap();
}

#[tokio::test]
async fn push_then_pull_round_trip_keeps_every_byte() {
    let w = start(EmbeddedOptions::default()).await;
    let (outbox, inbox) = (w.local("outbox"), w.local("inbox"));
    write_sample_tree(&outbox);
    let setup = Setup::new(
        w.endpoint(),
        vec![
            job("push", Direction::Push, &outbox, "/data"),
            job("pull", Direction::Pull, &inbox, "/data"),
        ],
    );
    let pushed = setup.sync_ok("push").await;
    assert_eq!(pushed.execution.transferred, 7);
    assert_eq!(pushed.execution.verified, 7, "every upload is verified");
    assert_eq!(tree(&outbox), tree(&w.server_root.join("data")));
    let pulled = setup.sync_ok("pull").await;
    assert_eq!(pulled.execution.transferred, 7);
    assert_eq!(tree(&outbox), tree(&inbox), "round trip changed something");
    // Downloads carry the remote modification time.
    let remote_t = std::fs::metadata(w.server_root.join("data/top.txt"))
        .unwrap()
        .modified()
        .unwrap();
    let local_t = std::fs::metadata(inbox.join("top.txt"))
        .unwrap()
        .modified()
        .unwrap();
    let diff = remote_t
        .duration_since(local_t)
        .unwrap_or_else(|e| e.duration());
    assert!(
        diff < Duration::from_secs(1),
        "mtime not carried over: {diff:?}"
    );
    // No temporary file is left on either side.
    for (name, _) in tree(&w.server_root).into_iter().chain(tree(&inbox)) {
        assert!(
            !name.contains(".ferry-tmp"),
            "leftover temporary file {name}"
        );
    }
    // Every transferred file has its SHA-256 in state.
    let records = setup.store.blocking(|s| s.records("pull")).unwrap();
    assert_eq!(records.len(), 7);
    for path in records.keys() {
        let digest = setup.store.blocking(|s| s.digest("pull", path)).unwrap();
        assert!(
            digest.as_ref().is_some_and(|h| h.len() == 64),
            "{path}: {digest:?}"
        );
    }
}

#[tokio::test]
async fn second_sync_with_nothing_changed_transfers_nothing() {
    let w = start(EmbeddedOptions::default()).await;
    let (outbox, inbox) = (w.local("outbox"), w.local("inbox"));
    write_sample_tree(&outbox);
    let setup = Setup::new(
        w.endpoint(),
        vec![
            job("push", Direction::Push, &outbox, "/data"),
            job("pull", Direction::Pull, &inbox, "/data"),
        ],
    );
    setup.sync_ok("push").await;
    setup.sync_ok("pull").await;
    let again = setup.sync_ok("push").await;
    assert_eq!(
        again.execution.transferred, 0,
        "{:?}",
        again.planned.plan.actions
    );
    assert_eq!(again.skipped(), 7);
    let again = setup.sync_ok("pull").await;
    assert_eq!(
        again.execution.transferred, 0,
        "{:?}",
        again.planned.plan.actions
    );
}

#[tokio::test]
async fn changed_file_of_same_size_is_transferred_again() {
    let w = start(EmbeddedOptions::default()).await;
    let (outbox, inbox) = (w.local("outbox"), w.local("inbox"));
    std::fs::write(outbox.join("a.txt"), b"version 1").unwrap();
    std::fs::write(outbox.join("b.txt"), b"unchanged").unwrap();
    let setup = Setup::new(
        w.endpoint(),
        vec![
            job("push", Direction::Push, &outbox, "/data"),
            job("pull", Direction::Pull, &inbox, "/data"),
        ],
    );
    setup.sync_ok("push").await;
    setup.sync_ok("pull").await;

    // The server stamps uploads with its clock at second precision (MLSD): let a second pass
    // so the re-upload below is visible to the pull job as a change, not a same-second rewrite.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Push side: same size, new content and mtime.
    std::fs::write(outbox.join("a.txt"), b"version 2").unwrap();
    set_mtime(
        &outbox.join("a.txt"),
        SystemTime::now() + Duration::from_secs(120),
    );
    let pushed = setup.sync_ok("push").await;
    assert_eq!(pushed.execution.transferred, 1);
    assert_eq!(pushed.planned.plan.actions[0].path.as_str(), "a.txt");
    assert_eq!(
        std::fs::read(w.server_root.join("data/a.txt")).unwrap(),
        b"version 2"
    );

    // Pull side: the server's copy changes (same size, later mtime).
    let remote_file = w.server_root.join("data/b.txt");
    std::fs::write(&remote_file, b"changed!!").unwrap();
    set_mtime(&remote_file, SystemTime::now() + Duration::from_secs(3600));
    let pulled = setup.sync_ok("pull").await;
    let paths: Vec<_> = pulled
        .planned
        .plan
        .actions
        .iter()
        .map(|a| a.path.as_str().to_owned())
        .collect();
    assert_eq!(paths, vec!["a.txt", "b.txt"]);
    assert_eq!(std::fs::read(inbox.join("b.txt")).unwrap(), b"changed!!");
}

#[tokio::test]
async fn delete_mirrors_removals_only_when_asked() {
    let w = start(EmbeddedOptions::default()).await;
    let outbox = w.local("outbox");
    std::fs::write(outbox.join("keep.txt"), b"keep").unwrap();
    std::fs::create_dir_all(w.server_root.join("data/old dir")).unwrap();
    std::fs::write(w.server_root.join("data/old dir/stale.txt"), b"stale").unwrap();
    let mut mirror = job("mirror", Direction::Push, &outbox, "/data");
    let plain = job("plain", Direction::Push, &outbox, "/data");
    mirror.delete = true;
    let setup = Setup::new(w.endpoint(), vec![mirror, plain]);
    setup.sync_ok("plain").await;
    assert!(
        w.server_root.join("data/old dir/stale.txt").exists(),
        "deleted without delete: true"
    );
    let report = setup.sync_ok("mirror").await;
    assert_eq!(report.execution.deleted, 2);
    assert!(!w.server_root.join("data/old dir").exists());
    assert!(w.server_root.join("data/keep.txt").exists());
}

/// A push mirror must never empty the server because the local side went missing: an
/// emptied or missing local root, or 80 of 100 files gone, deletes nothing, exits 1 and lists
/// what it would have deleted.
#[tokio::test]
async fn a_mirror_never_deletes_more_than_max_delete_or_from_an_empty_source() {
    let w = start(EmbeddedOptions::default()).await;
    let outbox = w.local("outbox");
    for i in 0..100 {
        std::fs::write(outbox.join(format!("f{i:03}.csv")), b"row").unwrap();
    }
    let mut mirror = job("mirror", Direction::Push, &outbox, "/data");
    mirror.delete = true;
    let setup = Setup::new(w.endpoint(), vec![mirror]);
    assert_eq!(setup.sync_ok("mirror").await.execution.transferred, 100);
    let on_server = || {
        std::fs::read_dir(w.server_root.join("data"))
            .unwrap()
            .count()
    };

    // 80 of 100 deleted locally: over the default 50%.
    for i in 0..80 {
        std::fs::remove_file(outbox.join(format!("f{i:03}.csv"))).unwrap();
    }
    let report = setup.run("mirror").await.unwrap();
    assert_eq!(report.exit_code(), 1);
    assert_eq!(report.execution.deleted, 0);
    assert_eq!(on_server(), 100);
    assert_eq!(report.planned.plan.withheld.len(), 80);
    let why = report.planned.plan.deletes_blocked.clone().unwrap();
    assert!(
        why.contains("80 files would be deleted, more than max_delete allows: 50 (50% of 100 files known from the last sync)"),
        "{why}"
    );
    let mut shown = Vec::new();
    ferry::report::print_failures(&report, &mut shown).unwrap();
    let shown = String::from_utf8(shown).unwrap();
    assert!(shown.contains("would delete (remote) f000.csv"), "{shown}");

    // The local root emptied (an unmounted disk): nothing deleted, whatever max_delete says.
    for i in 80..100 {
        std::fs::remove_file(outbox.join(format!("f{i:03}.csv"))).unwrap();
    }
    let mut unlimited = setup.config.jobs["mirror"].clone();
    unlimited.max_delete = ferry::config::MaxDelete::Percent(100);
    let setup2 = Setup::new(w.endpoint(), vec![unlimited]);
    let report = setup2.run("mirror").await.unwrap();
    assert_eq!(report.exit_code(), 1);
    assert_eq!(on_server(), 100);
    assert!(
        report
            .planned
            .plan
            .deletes_blocked
            .as_deref()
            .unwrap_or("")
            .contains("the local root is empty"),
        "{:?}",
        report.planned.plan.deletes_blocked
    );

    // The local root missing altogether: the run fails before planning anything.
    std::fs::remove_dir(&outbox).unwrap();
    let err = setup2.run("mirror").await.expect_err("no local root");
    assert_eq!(err.exit_code(), 1, "{err}");
    assert_eq!(on_server(), 100);
}

/// A directory that holds only files the filter leaves out is not empty: a mirror must not
/// plan its removal (which would fail on every run), on either side.
#[tokio::test]
async fn a_directory_holding_only_excluded_files_is_not_removed() {
    let w = start(EmbeddedOptions::default()).await;
    let exclude = || {
        let mut b = globset::GlobSetBuilder::new();
        b.add(globset::Glob::new("**/*.tmp").unwrap());
        Some(b.build().unwrap())
    };
    // Push: the server's `logs` holds only an excluded file.
    let outbox = w.local("outbox");
    std::fs::write(outbox.join("keep.txt"), b"keep").unwrap();
    std::fs::create_dir_all(w.server_root.join("data/logs")).unwrap();
    std::fs::write(w.server_root.join("data/logs/x.tmp"), b"theirs").unwrap();
    let mut push = job("push", Direction::Push, &outbox, "/data");
    push.delete = true;
    push.filter = ferry::config::Filter::new(None, exclude());
    // Pull: the local `cache` holds only an excluded file.
    let inbox = w.local("inbox");
    std::fs::create_dir_all(inbox.join("cache")).unwrap();
    std::fs::write(inbox.join("cache/y.tmp"), b"mine").unwrap();
    let mut pull = job("pull", Direction::Pull, &inbox, "/data");
    pull.delete = true;
    pull.filter = ferry::config::Filter::new(None, exclude());
    let setup = Setup::new(w.endpoint(), vec![push, pull]);
    for _ in 0..2 {
        let report = setup.sync_ok("push").await;
        assert_eq!(report.planned.plan.count(ActionKind::RemoveRemoteDir), 0);
        let report = setup.sync_ok("pull").await;
        assert_eq!(report.planned.plan.count(ActionKind::RemoveLocalDir), 0);
    }
    assert!(w.server_root.join("data/logs/x.tmp").exists());
    assert!(inbox.join("cache/y.tmp").exists());
}

#[tokio::test]
async fn certificate_problems_stop_the_run_with_exit_code_3() {
    for kind in [CertKind::WrongHost, CertKind::Expired] {
        let w = start(EmbeddedOptions {
            cert: kind,
            ..EmbeddedOptions::default()
        })
        .await;
        let inbox = w.local("inbox");
        let setup = Setup::new(
            w.endpoint(),
            vec![job("pull", Direction::Pull, &inbox, "/data")],
        );
        let err = setup
            .run("pull")
            .await
            .expect_err("a bad certificate must be refused");
        assert_eq!(err.exit_code(), 3, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("pull") && text.to_lowercase().contains("certificate"),
            "{kind:?}: {text}"
        );
    }
    // A valid certificate from a CA we do not trust.
    let w = start(EmbeddedOptions::default()).await;
    let other = start(EmbeddedOptions::default()).await;
    let inbox = w.local("inbox");
    let mut ep = w.endpoint();
    ep.trust = TrustRoots::CaFile(other.server.ca_pem().to_path_buf());
    let setup = Setup::new(ep, vec![job("pull", Direction::Pull, &inbox, "/data")]);
    let err = setup
        .run("pull")
        .await
        .expect_err("unknown CA must be refused");
    assert_eq!(err.exit_code(), 3);
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
}

/// A refused certificate is described in the error: subject, issuer, validity, its SHA-256 as
/// `openssl x509 -fingerprint -sha256` prints it, and what would make it accepted.
#[tokio::test]
async fn a_refused_certificate_is_described_with_what_to_trust_or_pin() {
    fn colons(digest: [u8; 32]) -> String {
        let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
        hex.join(":")
    }
    let names = "subject \"CN=ferry test server\", issuer \"CN=ferry throwaway test CA\"";
    let cases = [
        (
            CertKind::Expired,
            "not before 2000-01-01 00:00:00 UTC, not after 2001-01-01 00:00:00 UTC",
            "have it renewed, or accept exactly this certificate whatever its dates with",
        ),
        (
            CertKind::WrongHost,
            "not before 1975-01-01 00:00:00 UTC, not after 4096-01-01 00:00:00 UTC",
            "connect by a name it was issued for, or accept exactly this certificate whatever its name with",
        ),
    ];
    for (kind, validity, advice) in cases {
        let w = start(EmbeddedOptions {
            cert: kind,
            ..EmbeddedOptions::default()
        })
        .await;
        let inbox = w.local("inbox");
        let setup = Setup::new(
            w.endpoint(),
            vec![job("pull", Direction::Pull, &inbox, "/data")],
        );
        let err = setup.run("pull").await.expect_err("refused");
        assert_eq!(err.exit_code(), 3, "{err}");
        let fp = colons(w.server.server_cert_sha256());
        let text = err.to_string();
        assert!(
            text.ends_with(&format!(
                "; the server's certificate: {names}, {validity}, SHA-256 {fp}; \
                 {advice} pin_sha256: \"{fp}\" (and no ca_file)"
            )),
            "{kind:?}: {text}"
        );
        assert!(!text.contains('\n'), "one line: {text}");
    }

    // A certificate from a CA the endpoint does not trust.
    let w = start(EmbeddedOptions::default()).await;
    let other = start(EmbeddedOptions::default()).await;
    let inbox = w.local("inbox");
    let mut ep = w.endpoint();
    ep.trust = TrustRoots::CaFile(other.server.ca_pem().to_path_buf());
    let setup = Setup::new(ep, vec![job("pull", Direction::Pull, &inbox, "/data")]);
    let err = setup.run("pull").await.expect_err("unknown CA");
    assert_eq!(err.exit_code(), 3, "{err}");
    let fp = colons(w.server.server_cert_sha256());
    let text = err.to_string();
    for want in [
        "subject ",
        "issuer ",
        "not after ",
        &format!("SHA-256 {fp}"),
        &format!(
            "trust it with ca_file: <the issuer's CA file> or pin it with pin_sha256: \"{fp}\""
        ),
    ] {
        assert!(text.contains(want), "missing {want:?} in {text}");
    }

    // A pin that names another certificate: the advice is to pin the new one.
    let mut ep = w.endpoint();
    ep.trust = TrustRoots::System;
    ep.pin_sha256 = Some(other.server.server_cert_sha256());
    let setup = Setup::new(ep, vec![job("pull", Direction::Pull, &inbox, "/data")]);
    let err = setup.run("pull").await.expect_err("wrong pin");
    let text = err.to_string();
    assert!(
        text.ends_with(&format!(
            "SHA-256 {fp}; if it was replaced on purpose, pin the new one with pin_sha256: \"{fp}\""
        )),
        "{text}"
    );
}

/// `pin_sha256` without `ca_file` accepts exactly that certificate, expiry and hostname aside
/// (like known_hosts); with a `ca_file`, the chain (name and validity included) and the pin must
/// both hold.
#[tokio::test]
async fn pin_sha256_alone_accepts_exactly_its_certificate_and_with_a_ca_file_both_must_hold() {
    let w = start(EmbeddedOptions::default()).await;
    let other = start(EmbeddedOptions::default()).await;
    let expired = start(EmbeddedOptions {
        cert: CertKind::Expired,
        ..EmbeddedOptions::default()
    })
    .await;
    let inbox = w.local("inbox");
    let outcome = |ep: ferry::config::Endpoint, inbox: std::path::PathBuf| async move {
        let setup = Setup::new(ep, vec![job("pull", Direction::Pull, &inbox, "/data")]);
        setup
            .run("pull")
            .await
            .map(|r| r.exit_code())
            .map_err(|e| e.to_string())
    };
    let pinned = |world: &World, trust: TrustRoots, pin: [u8; 32]| {
        let mut ep = world.endpoint();
        ep.trust = trust;
        ep.pin_sha256 = Some(pin);
        ep
    };
    let own_ca = TrustRoots::CaFile(w.server.ca_pem().to_path_buf());
    let other_ca = TrustRoots::CaFile(other.server.ca_pem().to_path_buf());

    // The pin alone (the system's roots would refuse this throwaway CA).
    let ep = pinned(&w, TrustRoots::System, w.server.server_cert_sha256());
    assert_eq!(outcome(ep, inbox.clone()).await, Ok(0));
    let ep = pinned(&w, TrustRoots::System, other.server.server_cert_sha256());
    let err = outcome(ep, inbox.clone()).await.expect_err("wrong pin");
    assert!(err.contains("does not match pin_sha256"), "{err}");
    // Expiry aside: an expired certificate is accepted by its pin alone.
    let ep = pinned(
        &expired,
        TrustRoots::System,
        expired.server.server_cert_sha256(),
    );
    assert_eq!(outcome(ep, inbox.clone()).await, Ok(0));

    // With a ca_file, both must hold.
    let ep = pinned(&w, own_ca.clone(), w.server.server_cert_sha256());
    assert_eq!(outcome(ep, inbox.clone()).await, Ok(0));
    let ep = pinned(&w, other_ca, w.server.server_cert_sha256());
    let err = outcome(ep, inbox.clone())
        .await
        .expect_err("the CA must hold too");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let ep = pinned(&w, own_ca, other.server.server_cert_sha256());
    let err = outcome(ep, inbox.clone())
        .await
        .expect_err("the pin must hold too");
    assert!(err.contains("does not match pin_sha256"), "{err}");
    let expired_ca = TrustRoots::CaFile(expired.server.ca_pem().to_path_buf());
    let ep = pinned(&expired, expired_ca, expired.server.server_cert_sha256());
    let err = outcome(ep, inbox)
        .await
        .expect_err("expired, with a ca_file");
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

#[tokio::test]
async fn client_certificate_authentication() {
    let w = start(EmbeddedOptions {
        require_client_cert: true,
        ..EmbeddedOptions::default()
    })
    .await;
    std::fs::write(w.server_root.join("data/x.txt"), b"x").unwrap();
    let inbox = w.local("inbox");
    let setup = Setup::new(
        w.endpoint(),
        vec![job("pull", Direction::Pull, &inbox, "/data")],
    );
    let err = setup
        .run("pull")
        .await
        .expect_err("no client certificate must be refused");
    assert_eq!(err.exit_code(), 3, "{err}");

    // The key, copied owner-only: accepted. Opened to other users after the job file was
    // checked, it is refused when the connection is made, naming the file.
    let key = w.local("keys").join("client.key");
    std::fs::copy(w.server.client_key_pem(), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut ep = w.endpoint();
    ep.client_cert = Some(w.server.client_cert_pem().to_path_buf());
    ep.client_key = Some(key.clone());
    let setup = Setup::new(
        ep.clone(),
        vec![job("pull", Direction::Pull, &inbox, "/data")],
    );
    assert_eq!(setup.sync_ok("pull").await.execution.transferred, 1);

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o604)).unwrap();
    std::fs::write(w.server_root.join("data/y.txt"), b"y").unwrap();
    // A new process (a new pool): its first connection reads the key.
    let setup = Setup::new(ep, vec![job("pull", Direction::Pull, &inbox, "/data")]);
    let err = setup
        .run("pull")
        .await
        .expect_err("a client key open to other users must be refused");
    let text = err.to_string();
    assert!(
        text.contains("client_key") && text.contains("is open to other users (mode 0604)"),
        "{text}"
    );
    assert!(
        !inbox.join("y.txt").exists(),
        "nothing moved with the refused key"
    );
}

#[tokio::test]
async fn wrong_password_is_an_authentication_failure() {
    let w = start(EmbeddedOptions::default()).await;
    let inbox = w.local("inbox");
    let mut ep = w.endpoint();
    ep.password = ferry::config::PasswordSource::Literal(ferry::config::Secret::new("nope"));
    let setup = Setup::new(ep, vec![job("pull", Direction::Pull, &inbox, "/data")]);
    let err = setup.run("pull").await.expect_err("bad password");
    assert_eq!(err.exit_code(), 3);
    match err {
        ferry::run::JobError::Transport { error, .. } => {
            assert_eq!(error.kind, ErrorKind::Auth, "{error}")
        }
        other => panic!("unexpected {other}"),
    }
}

#[cfg(unix)]
#[tokio::test]
async fn local_symlinks_are_never_followed() {
    let w = start(EmbeddedOptions::default()).await;
    let outbox = w.local("outbox");
    let secret = w.local("outside").join("secret.txt");
    std::fs::write(&secret, b"do not ship").unwrap();
    std::fs::write(outbox.join("real.txt"), b"real").unwrap();
    std::os::unix::fs::symlink(&secret, outbox.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(w.local("outside"), outbox.join("leakdir")).unwrap();
    std::os::unix::fs::symlink(outbox.join("real.txt"), outbox.join("alias.txt")).unwrap();
    let setup = Setup::new(
        w.endpoint(),
        vec![job("push", Direction::Push, &outbox, "/data")],
    );
    let report = setup.sync_ok("push").await;
    let remote = tree(&w.server_root.join("data"));
    assert_eq!(
        remote.keys().cloned().collect::<Vec<_>>(),
        vec!["real.txt"],
        "links are not followed, not even to a file inside the root"
    );
    let skipped: Vec<String> = report
        .planned
        .plan
        .skipped
        .iter()
        .map(|s| format!("{}: {}", s.path, s.reason))
        .collect();
    assert_eq!(
        skipped,
        vec![
            "alias.txt: symlink not followed",
            "leak.txt: symlink not followed",
            "leakdir: symlink not followed"
        ]
    );
}

#[cfg(unix)]
#[tokio::test]
async fn pull_never_writes_through_a_local_symlink() {
    let w = start(EmbeddedOptions::default()).await;
    let inbox = w.local("inbox");
    let outside = w.local("outside");
    std::os::unix::fs::symlink(&outside, inbox.join("sub")).unwrap();
    std::fs::create_dir_all(w.server_root.join("data/sub")).unwrap();
    std::fs::write(w.server_root.join("data/sub/evil.txt"), b"evil").unwrap();
    let setup = Setup::new(
        w.endpoint(),
        vec![job("pull", Direction::Pull, &inbox, "/data")],
    );
    let report = setup.run("pull").await.unwrap();
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "wrote outside the root"
    );
    let skipped: Vec<String> = report
        .planned
        .plan
        .skipped
        .iter()
        .map(|s| format!("{}: {}", s.path, s.reason))
        .collect();
    assert!(
        skipped
            .iter()
            .any(|s| s.starts_with("sub: ") && s.contains("symlink")),
        "the link must be reported as skipped: {skipped:?}"
    );
}

#[tokio::test]
async fn plan_changes_nothing_and_gives_reasons() {
    let w = start(EmbeddedOptions::default()).await;
    let outbox = w.local("outbox");
    write_sample_tree(&outbox);
    let setup = Setup::new(
        w.endpoint(),
        vec![job("push", Direction::Push, &outbox, "/data/not yet")],
    );
    let job = setup.config.jobs.get("push").unwrap();
    let pool = ferry::run::pool_for(&setup.config, &setup.pools, job).unwrap();
    let records = setup.store.blocking(|s| s.records("push")).unwrap();
    let planned = ferry::run::plan_job(
        job,
        &Default::default(),
        &pool,
        &records,
        ferry::run::MissingRoot::PlanAsEmpty,
    )
    .await
    .unwrap();
    assert_eq!(planned.plan.count(ActionKind::Upload), 7);
    assert!(
        planned
            .plan
            .actions
            .iter()
            .all(|a| a.reason.to_string() == "missing on remote")
    );
    assert!(
        tree(&w.server_root.join("data")).is_empty(),
        "plan must not change the server"
    );
    assert!(
        !w.server_root.join("data/not yet").exists(),
        "plan must not create a missing remote root"
    );
    let json = ferry::report::plan_json("push", &planned);
    assert_eq!(json["plan"]["actions"][0]["kind"], "make_remote_dir");
}

#[tokio::test]
async fn big_file_round_trip() {
    let w = start(EmbeddedOptions::default()).await;
    let (outbox, inbox) = (w.local("outbox"), w.local("inbox"));
    std::fs::write(outbox.join("big.bin"), pseudo_random(96 * 1024 * 1024, 3)).unwrap();
    let setup = Setup::new(
        w.endpoint(),
        vec![
            job("push", Direction::Push, &outbox, "/data"),
            job("pull", Direction::Pull, &inbox, "/data"),
        ],
    );
    setup.sync_ok("push").await;
    setup.sync_ok("pull").await;
    assert_eq!(tree(&outbox), tree(&inbox));
}

#[tokio::test]
async fn a_conflict_is_reported_and_blocks_deletes() {
    let w = start(EmbeddedOptions::default()).await;
    let outbox = w.local("outbox");
    std::fs::write(outbox.join("clash"), b"a file here").unwrap();
    std::fs::create_dir_all(w.server_root.join("data/clash")).unwrap();
    std::fs::write(w.server_root.join("data/remote-only.txt"), b"extra").unwrap();
    let mut mirror = job("mirror", Direction::Push, &outbox, "/data");
    mirror.delete = true;
    // The delete is planned (no cap), so that the conflict is what blocks it.
    mirror.max_delete = ferry::config::MaxDelete::Count(u64::MAX);
    let setup = Setup::new(w.endpoint(), vec![mirror]);
    let report = setup.run("mirror").await.unwrap();
    assert_eq!(report.exit_code(), 1);
    assert_eq!(report.planned.plan.conflicts[0].path.as_str(), "clash");
    assert!(report.execution.deletes_skipped.is_some());
    assert!(w.server_root.join("data/remote-only.txt").exists());
}

#[tokio::test]
async fn after_upload_deletes_or_archives_verified_files() {
    use ferry::config::AfterUpload;
    let w = start(EmbeddedOptions::default()).await;
    let (outbox, archive, drop_box) = (w.local("outbox"), w.local("archive"), w.local("drop"));
    std::fs::create_dir_all(outbox.join("sub")).unwrap();
    std::fs::write(outbox.join("sub/a.csv"), b"a").unwrap();
    std::fs::write(archive.join("placeholder"), b"").unwrap();
    std::fs::create_dir_all(archive.join("sub")).unwrap();
    std::fs::write(archive.join("sub/a.csv"), b"older archived copy").unwrap();
    std::fs::write(drop_box.join("b.csv"), b"b").unwrap();
    let mut archiving = job("archiving", Direction::Push, &outbox, "/data");
    archiving.after_upload = AfterUpload::MoveTo(archive.clone());
    let mut deleting = job("deleting", Direction::Push, &drop_box, "/data");
    deleting.after_upload = AfterUpload::Delete;
    let setup = Setup::new(w.endpoint(), vec![archiving, deleting]);
    setup.sync_ok("archiving").await;
    setup.sync_ok("deleting").await;
    assert_eq!(
        std::fs::read(w.server_root.join("data/sub/a.csv")).unwrap(),
        b"a"
    );
    assert_eq!(
        std::fs::read(w.server_root.join("data/b.csv")).unwrap(),
        b"b"
    );
    assert!(!outbox.join("sub/a.csv").exists() && !drop_box.join("b.csv").exists());
    // Archived beside the older copy, never over it.
    assert_eq!(
        std::fs::read(archive.join("sub/a.csv")).unwrap(),
        b"older archived copy"
    );
    assert_eq!(std::fs::read(archive.join("sub/a.csv.1")).unwrap(), b"a");
    // The next run sees nothing to do and deletes nothing on the server.
    let again = setup.sync_ok("archiving").await;
    assert_eq!(again.execution.transferred + again.execution.deleted, 0);
    assert!(w.server_root.join("data/sub/a.csv").exists());
}

#[tokio::test]
async fn push_creates_a_missing_remote_root_and_pull_reports_it() {
    let w = start(EmbeddedOptions::default()).await;
    let (outbox, inbox) = (w.local("outbox"), w.local("inbox"));
    std::fs::write(outbox.join("a.txt"), b"a").unwrap();
    let setup = Setup::new(
        w.endpoint(),
        vec![
            job("pull", Direction::Pull, &inbox, "/new/deeper"),
            job("push", Direction::Push, &outbox, "/new/deeper"),
        ],
    );
    let err = setup.run("pull").await.expect_err("nothing to pull from");
    assert_eq!(
        err.exit_code(),
        1,
        "a missing directory is not a connection failure"
    );
    assert!(err.to_string().contains("/new/deeper"), "{err}");
    setup.sync_ok("push").await;
    assert_eq!(
        std::fs::read(w.server_root.join("new/deeper/a.txt")).unwrap(),
        b"a"
    );
    assert_eq!(setup.sync_ok("pull").await.execution.transferred, 1);
}

/// After a crash mid-transfer (simulated: a partial temporary file and its note in state), the
/// next run sends or fetches only the rest, and the result is whole.
#[tokio::test]
async fn a_partial_transfer_left_by_a_crash_is_resumed_by_the_next_run() {
    use ferry::state::PartialSource;
    let w = start(EmbeddedOptions::default()).await;
    let data = pseudo_random(3_000_000, 21);
    // Upload: the server holds the first third under the temporary name.
    let outbox = w.local("outbox");
    std::fs::write(outbox.join("big.bin"), &data).unwrap();
    std::fs::write(
        w.server_root.join("data/.big.bin.ferry-tmp"),
        &data[..1_000_000],
    )
    .unwrap();
    let setup = Setup::new(
        w.endpoint(),
        vec![job("push", Direction::Push, &outbox, "/data")],
    );
    let scanned = ferry::local_fs::LocalRoot::open(&outbox)
        .unwrap()
        .stat(&ferry::path::RelPath::parse("big.bin").unwrap())
        .unwrap()
        .unwrap();
    let big = ferry::path::RelPath::parse("big.bin").unwrap();
    setup
        .store
        .blocking(|s| {
            s.put_partial(
                "push",
                &big,
                &PartialSource::Local {
                    id: scanned.id,
                    size: scanned.size,
                    mtime: scanned.mtime,
                },
            )
        })
        .unwrap();
    let report = setup.sync_ok("push").await;
    assert_eq!(report.execution.bytes, 2_000_000, "only the rest was sent");
    assert_eq!(
        std::fs::read(w.server_root.join("data/big.bin")).unwrap(),
        data
    );
    assert!(!w.server_root.join("data/.big.bin.ferry-tmp").exists());

    // Download: the local temporary file holds the first half.
    let inbox = w.local("inbox");
    std::fs::write(inbox.join(".big.bin.ferry-tmp"), &data[..1_500_000]).unwrap();
    let setup = Setup::new(
        w.endpoint(),
        vec![job("pull", Direction::Pull, &inbox, "/data")],
    );
    let planned = {
        let job = &setup.config.jobs["pull"];
        let pool = ferry::run::pool_for(&setup.config, &setup.pools, job).unwrap();
        ferry::run::plan_job(
            job,
            &Default::default(),
            &pool,
            &Default::default(),
            ferry::run::MissingRoot::PlanAsEmpty,
        )
        .await
        .unwrap()
    };
    let listed = planned.remote.get(&big).unwrap().clone();
    setup
        .store
        .blocking(|s| {
            s.put_partial(
                "pull",
                &big,
                &PartialSource::Remote {
                    size: listed.size,
                    mtime: listed.mtime,
                },
            )
        })
        .unwrap();
    let report = setup.sync_ok("pull").await;
    assert_eq!(
        report.execution.bytes, 1_500_000,
        "only the rest was fetched"
    );
    assert_eq!(std::fs::read(inbox.join("big.bin")).unwrap(), data);
    assert!(!inbox.join(".big.bin.ferry-tmp").exists());
}

/// Temporary files nothing will resume (an older ferry's, or a crash's before its note) are
/// removed after the run, on the side the run writes to.
#[tokio::test]
async fn stale_temporary_files_are_removed() {
    let w = start(EmbeddedOptions::default()).await;
    let outbox = w.local("outbox");
    std::fs::write(outbox.join("a.txt"), b"a").unwrap();
    std::fs::create_dir_all(w.server_root.join("data/sub")).unwrap();
    std::fs::write(w.server_root.join("data/sub/.gone.csv.ferry-tmp"), b"half").unwrap();
    let inbox = w.local("inbox");
    std::fs::write(inbox.join(".old.bin.ferry-tmp"), b"half").unwrap();
    let setup = Setup::new(
        w.endpoint(),
        vec![
            job("push", Direction::Push, &outbox, "/data"),
            job("pull", Direction::Pull, &inbox, "/data"),
        ],
    );
    setup.sync_ok("push").await;
    assert!(!w.server_root.join("data/sub/.gone.csv.ferry-tmp").exists());
    setup.sync_ok("pull").await;
    assert!(!inbox.join(".old.bin.ferry-tmp").exists());
    assert_eq!(std::fs::read(inbox.join("a.txt")).unwrap(), b"a");
}

/// A server that computes MD5 only (libunftp's SITE MD5): each upload and download is compared
/// with ferry's own MD5 of the bytes, and the summary says so.
#[tokio::test]
async fn transfers_are_verified_with_the_servers_md5_and_the_summary_says_how() {
    let w = start(EmbeddedOptions {
        site_md5: true,
        ..EmbeddedOptions::default()
    })
    .await;
    let (outbox, inbox) = (w.local("outbox"), w.local("inbox"));
    std::fs::write(outbox.join("a.bin"), pseudo_random(300_000, 8)).unwrap();
    std::fs::write(outbox.join("b.txt"), b"b").unwrap();
    let setup = Setup::new(
        w.endpoint(),
        vec![
            job("push", Direction::Push, &outbox, "/data"),
            job("pull", Direction::Pull, &inbox, "/data"),
        ],
    );
    for name in ["push", "pull"] {
        let report = setup.sync_ok(name).await;
        assert_eq!(
            report.execution.verified_by.get("server SITE MD5 (MD5)"),
            Some(&2),
            "{name}: {:?}",
            report.execution.verified_by
        );
        let line = ferry::report::summary_line(&report);
        assert!(
            line.contains("2 verified (2 by server SITE MD5 (MD5))"),
            "{line}"
        );
    }
    assert_eq!(tree(&outbox), tree(&inbox));
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

/// A partner's checksum files (`x.sha256`, `x.md5`, `SHA256SUMS`) check the files they cover;
/// a file that does not match is fetched again, then reported, and the earlier local copy
/// stays.
#[tokio::test]
async fn pulled_files_are_checked_against_the_partners_checksum_files() {
    let w = start(EmbeddedOptions::default()).await;
    let data = w.server_root.join("data");
    std::fs::write(data.join("a.csv"), b"alpha").unwrap();
    std::fs::write(
        data.join("a.csv.sha256"),
        format!("{}  a.csv\n", sha256_hex(b"alpha")),
    )
    .unwrap();
    std::fs::write(data.join("b.csv"), b"bravo, but damaged").unwrap();
    std::fs::write(
        data.join("b.csv.md5"),
        "0123456789abcdef0123456789abcdef  b.csv\n",
    )
    .unwrap();
    std::fs::create_dir_all(data.join("batch")).unwrap();
    std::fs::write(data.join("batch/c.csv"), b"charlie").unwrap();
    std::fs::write(
        data.join("batch/SHA256SUMS"),
        format!(
            "{}  other.csv\n{} *c.csv\n",
            sha256_hex(b"x"),
            sha256_hex(b"charlie")
        ),
    )
    .unwrap();
    let inbox = w.local("inbox");
    std::fs::write(inbox.join("b.csv"), b"bravo, the earlier copy").unwrap();
    let setup = Setup::new(
        w.endpoint(),
        vec![job("pull", Direction::Pull, &inbox, "/data")],
    );
    let report = setup.run("pull").await.unwrap();
    assert_eq!(report.exit_code(), 1);
    let by = &report.execution.verified_by;
    assert_eq!(by.get("a.csv.sha256 (SHA-256)"), Some(&1), "{by:?}");
    assert_eq!(by.get("SHA256SUMS (SHA-256)"), Some(&1), "{by:?}");
    assert_eq!(report.execution.failures.len(), 1);
    let failure = &report.execution.failures[0];
    assert_eq!(failure.path.as_str(), "b.csv");
    assert!(
        failure
            .error
            .to_string()
            .contains("b.csv.md5 gives MD5 0123456789abcdef0123456789abcdef"),
        "{}",
        failure.error
    );
    assert_eq!(
        std::fs::read(inbox.join("b.csv")).unwrap(),
        b"bravo, the earlier copy"
    );
    assert!(!inbox.join(".b.csv.ferry-tmp").exists());
    assert_eq!(std::fs::read(inbox.join("a.csv")).unwrap(), b"alpha");
    assert_eq!(
        std::fs::read(inbox.join("batch/c.csv")).unwrap(),
        b"charlie"
    );
}

/// `checksum_sidecar: true` writes `x.sha256` beside each pushed `x`; ferry's own checksum
/// files are never mirrored away, and a missing one is written again.
#[tokio::test]
async fn a_push_writes_checksum_files_beside_its_files() {
    let w = start(EmbeddedOptions::default()).await;
    let outbox = w.local("outbox");
    std::fs::create_dir_all(outbox.join("sub")).unwrap();
    std::fs::write(outbox.join("sub/x.csv"), b"x,y\n").unwrap();
    let mut push = job("push", Direction::Push, &outbox, "/data");
    push.checksum_sidecar = true;
    push.delete = true;
    push.max_delete = ferry::config::MaxDelete::Count(u64::MAX);
    let setup = Setup::new(w.endpoint(), vec![push]);
    setup.sync_ok("push").await;
    let sidecar = w.server_root.join("data/sub/x.csv.sha256");
    assert_eq!(
        std::fs::read_to_string(&sidecar).unwrap(),
        format!("{}  x.csv\n", sha256_hex(b"x,y\n"))
    );
    // Nothing to do, and the checksum file is not deleted as remote-only.
    let again = setup.sync_ok("push").await;
    assert!(
        again.planned.plan.is_empty(),
        "{:?}",
        again.planned.plan.actions
    );
    assert!(sidecar.exists());
    // A checksum file that went missing is written again, with its file.
    std::fs::remove_file(&sidecar).unwrap();
    let again = setup.sync_ok("push").await;
    assert_eq!(again.execution.transferred, 1);
    assert_eq!(
        again.planned.plan.actions[0].reason.to_string(),
        "its checksum file is missing on remote"
    );
    assert!(sidecar.exists());
}

/// A state write that fails (here SQLite refuses every record, through a trigger another
/// connection installed) is an error of the run, never ignored: each file whose record could
/// not be written is reported with the state database named, the run exits 1, and the next run,
/// with the database writable again, records them without sending anything twice.
#[tokio::test]
async fn a_failed_state_write_is_an_error_of_the_run() {
    let w = start(EmbeddedOptions::default()).await;
    let outbox = w.local("outbox");
    write_sample_tree(&outbox);
    let files = tree(&outbox).values().filter(|v| *v != "dir").count();
    let setup = Setup::new(
        w.endpoint(),
        vec![job("push", Direction::Push, &outbox, "/data")],
    );
    let db = rusqlite::Connection::open(setup.config.state_dir.join("ferry.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_insert BEFORE INSERT ON synced
             BEGIN SELECT RAISE(ABORT, 'injected: the disk is failing'); END;
         CREATE TRIGGER refuse_update BEFORE UPDATE ON synced
             BEGIN SELECT RAISE(ABORT, 'injected: the disk is failing'); END;",
    )
    .unwrap();
    let report = setup.run("push").await.expect("the run itself starts");
    assert_eq!(
        report.exit_code(),
        1,
        "a run whose state was not written is not ok"
    );
    let failures = &report.execution.failures;
    assert_eq!(failures.len(), files, "{failures:?}");
    for f in failures {
        assert_eq!(f.error.kind, ErrorKind::State, "{f:?}");
        assert!(
            f.error.message.contains("injected: the disk is failing"),
            "the cause is named: {f:?}"
        );
    }
    let row = setup
        .store
        .call(|s| s.last_run("push"))
        .await
        .unwrap()
        .unwrap();
    // Recorded as a run with failed files (the run row itself could be written).
    assert_eq!(row.outcome.as_deref(), Some("partial"), "{row:?}");
    assert_eq!(row.totals.failed, files as u64, "{row:?}");
    // Writable again: the next run records what is on the server, and sends nothing again.
    db.execute_batch("DROP TRIGGER refuse_insert; DROP TRIGGER refuse_update;")
        .unwrap();
    let again = setup.sync_ok("push").await;
    assert_eq!(again.execution.failures.len(), 0);
    assert_eq!(tree(&w.server_root.join("data")), tree(&outbox));
    let third = setup.sync_ok("push").await;
    assert_eq!(third.execution.transferred, 0, "recorded by the second run");
}

/// A partner appends to a file on the server every 0.5 s while `ferry sync` runs every second
/// with `ready: stable, stable_for: 3s`: the local drop directory never holds the file at a size
/// other than its final one (a reader polls it), each run counts it as waiting (exit 0), and a
/// sync once it has been still for 4 s brings it complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_never_takes_a_file_still_being_written_and_takes_it_once_still() {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    const STEP: usize = 64 * 1024;
    const STEPS: u64 = 12;
    let w = start(EmbeddedOptions::default()).await;
    let inbox = w.local("inbox");
    let mut j = job("pull", Direction::Pull, &inbox, "/data");
    j.ready = ferry::config::Ready::Stable(Duration::from_secs(3));
    let setup = Setup::new(w.endpoint(), vec![j]);
    let remote = w.server_root.join("data/growing.bin");
    let writer = tokio::spawn({
        let remote = remote.clone();
        async move {
            for i in 0..STEPS {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&remote)
                    .unwrap();
                f.write_all(&pseudo_random(STEP, i)).unwrap();
                drop(f);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    let sizes = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let watching = Arc::new(AtomicBool::new(true));
    let reader = std::thread::spawn({
        let (sizes, watching, local) = (sizes.clone(), watching.clone(), inbox.join("growing.bin"));
        move || {
            while watching.load(Ordering::Relaxed) {
                if let Ok(m) = std::fs::metadata(&local) {
                    sizes.lock().unwrap().insert(m.len());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    let mut runs = 0;
    while !writer.is_finished() {
        let report = setup.run("pull").await.expect("runs");
        assert_eq!(report.exit_code(), 0, "waiting is not failing");
        assert_eq!(report.execution.transferred, 0, "taken while growing");
        if remote.exists() {
            assert_eq!(report.planned.plan.waiting.len(), 1);
            runs += 1;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(runs >= 2, "only {runs} runs saw the file grow");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let report = setup.sync_ok("pull").await;
    assert_eq!(report.execution.transferred, 1);
    assert!(report.planned.plan.waiting.is_empty());
    let final_size = STEP as u64 * STEPS;
    assert_eq!(
        std::fs::read(inbox.join("growing.bin")).unwrap(),
        std::fs::read(&remote).unwrap()
    );
    // Let the reader see the final file too before it stops.
    let seen_final = std::time::Instant::now();
    while !sizes.lock().unwrap().contains(&final_size) {
        assert!(
            seen_final.elapsed() < Duration::from_secs(10),
            "the reader never saw it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    watching.store(false, Ordering::Relaxed);
    reader.join().unwrap();
    assert_eq!(
        sizes.lock().unwrap().iter().copied().collect::<Vec<_>>(),
        vec![final_size],
        "the reader saw the file at other sizes"
    );
}

/// `remote_after_download`: once the local copy is verified and in place, the partner's copy
/// is deleted, or moved to the archive directory keeping its path; an older archived copy is
/// never replaced.
#[tokio::test]
async fn the_partners_copy_is_deleted_or_archived_only_after_the_download() {
    let w = start(EmbeddedOptions::default()).await;
    let data = w.server_root.join("data");
    let put = |rel: &str, body: &[u8]| put_file(&data, rel, body);
    put("a.csv", b"alpha");
    put("sub/b.csv", b"beta");
    let (deleting_to, archiving_to) = (w.local("deleting"), w.local("archiving"));
    let mut deleting = job("deleting", Direction::Pull, &deleting_to, "/data");
    deleting.remote_after = ferry::config::RemoteAfter::Delete;
    let setup = Setup::new(w.endpoint(), vec![deleting]);
    let report = setup.sync_ok("deleting").await;
    assert_eq!(report.execution.transferred, 2);
    assert_eq!(
        std::fs::read(deleting_to.join("sub/b.csv")).unwrap(),
        b"beta"
    );
    assert!(!data.join("a.csv").exists() && !data.join("sub/b.csv").exists());
    // Nothing comes back, nothing is deleted locally.
    let again = setup.sync_ok("deleting").await;
    assert_eq!(again.execution.transferred, 0);
    assert!(deleting_to.join("a.csv").exists());

    put("a.csv", b"alpha");
    put("sub/b.csv", b"beta");
    std::fs::create_dir_all(w.server_root.join("archive/sub")).unwrap();
    std::fs::write(w.server_root.join("archive/sub/b.csv"), b"older").unwrap();
    let mut archiving = job("archiving", Direction::Pull, &archiving_to, "/data");
    archiving.remote_after = ferry::config::RemoteAfter::MoveTo("/archive".into());
    let setup = Setup::new(w.endpoint(), vec![archiving]);
    let report = setup.sync_ok("archiving").await;
    assert_eq!(report.execution.transferred, 2);
    let archive = tree(&w.server_root.join("archive"));
    assert_eq!(
        std::fs::read(w.server_root.join("archive/a.csv")).unwrap(),
        b"alpha"
    );
    assert_eq!(
        std::fs::read(w.server_root.join("archive/sub/b.csv")).unwrap(),
        b"older",
        "an older archived copy is never replaced"
    );
    let suffixed: Vec<&String> = archive
        .keys()
        .filter(|k| k.starts_with("sub/b.csv.") && k.ends_with('Z'))
        .collect();
    assert_eq!(suffixed.len(), 1, "{archive:?}");
    assert!(!data.join("a.csv").exists() && !data.join("sub/b.csv").exists());
    assert_eq!(std::fs::read(archiving_to.join("a.csv")).unwrap(), b"alpha");
}

/// `ready: { marker: _SUCCESS }`: a directory's files are taken only once the partner has put
/// `_SUCCESS` in it, and the marker itself comes last, after every file of its directory.
#[tokio::test]
async fn a_pull_with_a_marker_takes_a_directory_only_once_marked_and_the_marker_last() {
    let w = start(EmbeddedOptions::default()).await;
    let data = w.server_root.join("data");
    let put = |rel: &str, body: &[u8]| put_file(&data, rel, body);
    put("day1/a.csv", b"a");
    put("day1/b.csv", b"b");
    put("day2/c.csv", b"c");
    put("day2/_SUCCESS", b"");
    let inbox = w.local("inbox");
    let mut j = job("pull", Direction::Pull, &inbox, "/data");
    j.ready = ferry::config::Ready::Marker("_SUCCESS".into());
    let setup = Setup::new(w.endpoint(), vec![j]);
    let first = setup.sync_ok("pull").await;
    let done: Vec<&str> = first.execution.done.iter().map(|p| p.as_str()).collect();
    assert_eq!(done, ["day2/c.csv", "day2/_SUCCESS"], "the marker last");
    let waiting: Vec<&str> = first
        .planned
        .plan
        .waiting
        .iter()
        .map(|w| w.path.as_str())
        .collect();
    assert_eq!(waiting, ["day1/a.csv", "day1/b.csv"]);
    assert!(!inbox.join("day1/a.csv").exists());
    assert!(ferry::report::summary_line(&first).contains("2 waiting"));

    put("day1/_SUCCESS", b"");
    let second = setup.sync_ok("pull").await;
    let done: Vec<&str> = second.execution.done.iter().map(|p| p.as_str()).collect();
    assert_eq!(done.len(), 3, "{done:?}");
    assert_eq!(done[2], "day1/_SUCCESS", "the marker last: {done:?}");
    assert!(second.planned.plan.waiting.is_empty());
    assert_eq!(tree(&inbox), tree(&data));
}

/// `ready: sidecar`: a file is taken only once its `x.sha256` (or `x.md5`) is beside it on the
/// server, and is checked against it: a file whose checksum file is wrong is not kept.
#[tokio::test]
async fn a_pull_with_ready_sidecar_takes_a_file_once_its_checksum_file_is_there() {
    use sha2::{Digest, Sha256};
    let w = start(EmbeddedOptions::default()).await;
    let data = w.server_root.join("data");
    std::fs::write(data.join("a.csv"), b"alpha").unwrap();
    std::fs::write(data.join("b.csv"), b"beta").unwrap();
    let inbox = w.local("inbox");
    let mut j = job("pull", Direction::Pull, &inbox, "/data");
    j.ready = ferry::config::Ready::Sidecar;
    let setup = Setup::new(w.endpoint(), vec![j]);
    let first = setup.sync_ok("pull").await;
    assert_eq!(first.execution.transferred, 0);
    assert_eq!(first.planned.plan.waiting.len(), 2);

    let sum = |b: &[u8]| hex::encode(Sha256::digest(b));
    std::fs::write(
        data.join("a.csv.sha256"),
        format!("{}  a.csv\n", sum(b"alpha")),
    )
    .unwrap();
    let second = setup.sync_ok("pull").await;
    let done: Vec<&str> = second.execution.done.iter().map(|p| p.as_str()).collect();
    assert_eq!(done, ["a.csv", "a.csv.sha256"]);
    assert_eq!(std::fs::read(inbox.join("a.csv")).unwrap(), b"alpha");
    assert!(
        !inbox.join("b.csv").exists(),
        "b.csv still has no checksum file"
    );

    // A checksum file that does not match: the file is refused, not kept.
    std::fs::write(
        data.join("b.csv.md5"),
        "00000000000000000000000000000000  b.csv\n",
    )
    .unwrap();
    let third = setup.run("pull").await.expect("runs");
    assert_eq!(third.exit_code(), 1);
    assert!(
        third
            .execution
            .failures
            .iter()
            .any(|f| f.path.as_str() == "b.csv"),
        "{:?}",
        third.execution.failures
    );
    assert!(!inbox.join("b.csv").exists());
}

/// `publish: batch` with `marker: READY`: 60 files of 1 MiB, a consumer polling the server's
/// disk every 20 ms. READY is never visible before all 60 are complete; on a second run with 10
/// changed files, whenever READY is visible the 10 are all old or all new. With `manifest`, the
/// manifest lists the batch with its SHA-256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_published_whole_and_its_marker_last() {
    use std::os::unix::fs::MetadataExt as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    const N: usize = 60;
    const SIZE: u64 = (1 << 20) + 1;
    let w = start(EmbeddedOptions::default()).await;
    let outbox = w.local("outbox");
    let body = |i: usize, version: u8| {
        let mut b = vec![version];
        b.extend(pseudo_random(1 << 20, i as u64));
        b
    };
    for i in 0..N {
        std::fs::write(outbox.join(format!("f{i:02}.bin")), body(i, 1)).unwrap();
    }
    let mut j = job("push", Direction::Push, &outbox, "/data");
    j.publish = Some(ferry::config::Publish {
        marker: "READY".into(),
        manifest: false,
    });
    let setup = Setup::new(w.endpoint(), vec![j]);
    let remote = w.server_root.join("data");
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<std::collections::BTreeSet<u8>>::new()));
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let consumer = std::thread::spawn({
        let (stop, seen, violations, remote) = (
            stop.clone(),
            seen.clone(),
            violations.clone(),
            remote.clone(),
        );
        move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                let Ok(before) = std::fs::metadata(remote.join("READY")) else {
                    continue;
                };
                let complete = (0..N).all(|i| {
                    std::fs::metadata(remote.join(format!("f{i:02}.bin")))
                        .is_ok_and(|m| m.len() == SIZE)
                });
                let versions: std::collections::BTreeSet<u8> = (0..10)
                    .filter_map(|i| std::fs::read(remote.join(format!("f{i:02}.bin"))).ok())
                    .filter_map(|b| b.first().copied())
                    .collect();
                // Only a look during which the same READY stood counts.
                let same = std::fs::metadata(remote.join("READY"))
                    .is_ok_and(|after| after.ino() == before.ino());
                if !same {
                    continue;
                }
                if !complete {
                    violations
                        .lock()
                        .unwrap()
                        .push("READY beside an incomplete batch".into());
                }
                if versions.len() != 1 {
                    violations
                        .lock()
                        .unwrap()
                        .push(format!("READY beside old and new files: {versions:?}"));
                }
                seen.lock().unwrap().push(versions);
            }
        }
    });
    let first = setup.sync_ok("push").await;
    assert_eq!(first.execution.transferred, N as u64);
    let saw = |v: u8| seen.lock().unwrap().iter().any(|s| s.contains(&v));
    let waited = std::time::Instant::now();
    while !saw(1) {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "READY never seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..10 {
        std::fs::write(outbox.join(format!("f{i:02}.bin")), body(i, 2)).unwrap();
    }
    let second = setup.sync_ok("push").await;
    assert_eq!(second.execution.transferred, 10);
    let waited = std::time::Instant::now();
    while !saw(2) {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the new READY never seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    consumer.join().unwrap();
    assert!(
        violations.lock().unwrap().is_empty(),
        "{:?}",
        violations.lock().unwrap()
    );
    assert_eq!(std::fs::read(remote.join("READY")).unwrap(), b"");
    // A third run with nothing changed leaves the marker alone.
    let third = setup.sync_ok("push").await;
    assert_eq!(third.execution.transferred, 0);
    assert!(remote.join("READY").exists());

    // The manifest variant: the batch's files with their SHA-256, written last.
    let mut j = job("manifest", Direction::Push, &outbox, "/sums");
    j.publish = Some(ferry::config::Publish {
        marker: "SHA256SUMS".into(),
        manifest: true,
    });
    let setup = Setup::new(w.endpoint(), vec![j]);
    setup.sync_ok("manifest").await;
    let manifest = std::fs::read_to_string(w.server_root.join("sums/SHA256SUMS")).unwrap();
    let lines: Vec<&str> = manifest.lines().collect();
    assert_eq!(lines.len(), N);
    let want = format!(
        "{}  f00.bin",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body(0, 2)))
    );
    assert!(lines.contains(&want.as_str()), "{manifest}");
}

/// `backup_dir` (pull): the local copy a new download replaces, and the one a mirror deletes,
/// are moved into the backup directory at their relative place with a UTC time suffix.
#[tokio::test]
async fn a_pull_with_backup_dir_keeps_replaced_and_deleted_local_copies() {
    let w = start(EmbeddedOptions::default()).await;
    let data = w.server_root.join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/a.csv"), b"version one").unwrap();
    std::fs::write(data.join("gone.csv"), b"short-lived").unwrap();
    let (inbox, kept) = (w.local("inbox"), w.local("kept"));
    let mut j = job("pull", Direction::Pull, &inbox, "/data");
    j.backup_dir = Some(kept.clone());
    j.delete = true;
    j.max_delete = ferry::config::MaxDelete::Count(10);
    let setup = Setup::new(w.endpoint(), vec![j]);
    setup.sync_ok("pull").await;
    assert!(tree(&kept).is_empty(), "nothing replaced yet");

    std::fs::write(data.join("sub/a.csv"), b"version two!").unwrap();
    std::fs::remove_file(data.join("gone.csv")).unwrap();
    let report = setup.sync_ok("pull").await;
    assert_eq!(report.execution.transferred, 1);
    assert_eq!(report.execution.deleted, 1);
    assert_eq!(
        std::fs::read(inbox.join("sub/a.csv")).unwrap(),
        b"version two!"
    );
    assert!(!inbox.join("gone.csv").exists());
    let kept_files: Vec<(String, Vec<u8>)> = tree(&kept)
        .into_iter()
        .filter(|(_, v)| v != "dir")
        .map(|(k, _)| {
            let body = std::fs::read(kept.join(&k)).unwrap();
            (k, body)
        })
        .collect();
    assert_eq!(kept_files.len(), 2, "{kept_files:?}");
    let find = |prefix: &str| {
        kept_files
            .iter()
            .find(|(k, _)| k.starts_with(prefix) && k.ends_with('Z'))
            .map(|(_, b)| b.clone())
    };
    assert_eq!(find("sub/a.csv.").as_deref(), Some(&b"version one"[..]));
    assert_eq!(find("gone.csv.").as_deref(), Some(&b"short-lived"[..]));
}

/// `backup_dir` on a push job: the server's copy an upload replaces, and the one a mirror
/// deletes, are moved to the backup directory on the server with a UTC time suffix.
#[tokio::test]
async fn a_push_with_backup_dir_keeps_the_servers_replaced_and_deleted_copies() {
    let w = start(EmbeddedOptions::default()).await;
    let outbox = w.local("outbox");
    std::fs::create_dir_all(outbox.join("sub")).unwrap();
    std::fs::write(outbox.join("sub/a.csv"), b"version one").unwrap();
    std::fs::write(outbox.join("gone.csv"), b"short-lived").unwrap();
    let mut j = job("push", Direction::Push, &outbox, "/data");
    j.backup_dir = Some("/old".into());
    j.delete = true;
    j.max_delete = ferry::config::MaxDelete::Count(10);
    let setup = Setup::new(w.endpoint(), vec![j]);
    setup.sync_ok("push").await;
    assert!(!w.server_root.join("old").exists(), "nothing replaced yet");

    std::fs::write(outbox.join("sub/a.csv"), b"version two!").unwrap();
    std::fs::remove_file(outbox.join("gone.csv")).unwrap();
    let report = setup.sync_ok("push").await;
    assert_eq!(report.execution.transferred, 1);
    assert_eq!(report.execution.deleted, 1);
    let data = w.server_root.join("data");
    assert_eq!(
        std::fs::read(data.join("sub/a.csv")).unwrap(),
        b"version two!"
    );
    assert!(!data.join("gone.csv").exists());
    let old = w.server_root.join("old");
    let kept: Vec<String> = tree(&old)
        .into_iter()
        .filter(|(_, v)| v != "dir")
        .map(|(k, _)| k)
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let body = |prefix: &str| {
        let name = kept
            .iter()
            .find(|k| k.starts_with(prefix) && k.ends_with('Z'))
            .unwrap_or_else(|| panic!("no {prefix}* in {kept:?}"));
        std::fs::read(old.join(name)).unwrap()
    };
    assert_eq!(body("sub/a.csv."), b"version one");
    assert_eq!(body("gone.csv."), b"short-lived");
}

/// A server that refuses to rename onto an existing file (as IIS and FileZilla Server do): an
/// updated file still gets to its final name, the old one deleted first.
#[tokio::test]
async fn a_server_refusing_rename_onto_an_existing_file_still_gets_the_new_version() {
    let w = start(EmbeddedOptions {
        refuse_rename_over_existing: true,
        ..EmbeddedOptions::default()
    })
    .await;
    let outbox = w.local("outbox");
    std::fs::write(outbox.join("a.csv"), b"version one").unwrap();
    let setup = Setup::new(
        w.endpoint(),
        vec![job("push", Direction::Push, &outbox, "/data")],
    );
    setup.sync_ok("push").await;
    std::fs::write(outbox.join("a.csv"), b"version two!").unwrap();
    let report = setup.sync_ok("push").await;
    assert_eq!(report.execution.transferred, 1);
    assert_eq!(
        std::fs::read(w.server_root.join("data/a.csv")).unwrap(),
        b"version two!"
    );
    assert!(temp_files_on(&w.server_root.join("data")).is_empty());
    // And the summary says how it got there.
    assert_eq!(report.execution.deleted_first, 1);
    assert!(
        ferry::report::summary_line(&report).contains("1 replaced by delete-then-rename"),
        "{}",
        ferry::report::summary_line(&report)
    );
}

/// A write-only drop box (uploads only; no rename, no delete): the first upload's rename is
/// refused, and from then on the run writes straight to final names; every file arrives whole,
/// and the summary says so.
#[tokio::test]
async fn a_write_only_drop_box_gets_every_file_written_straight_to_its_name() {
    let w = start(EmbeddedOptions {
        write_only: true,
        ..EmbeddedOptions::default()
    })
    .await;
    let outbox = w.local("outbox");
    for i in 0..5 {
        std::fs::write(outbox.join(format!("f{i}.csv")), format!("file {i}")).unwrap();
    }
    let mut j = job("push", Direction::Push, &outbox, "/data");
    j.retry.attempts = 3;
    let mut ep = w.endpoint();
    // One connection: the first refusal is seen before any other upload starts.
    ep.max_connections = 1;
    let setup = Setup::new(ep, vec![j]);
    let report = setup.sync_ok("push").await;
    assert_eq!(report.execution.transferred, 5);
    let data = w.server_root.join("data");
    for i in 0..5 {
        assert_eq!(
            std::fs::read(data.join(format!("f{i}.csv"))).unwrap(),
            format!("file {i}").as_bytes()
        );
    }
    assert_eq!(report.execution.direct, 5);
    let line = ferry::report::summary_line(&report);
    assert!(
        line.contains("5 written straight to the final name"),
        "{line}"
    );
    // The refused first try left its temporary file: a drop box refuses deletes too.
    assert_eq!(temp_files_on(&data).len(), 1, "{:?}", tree(&data));

    // With `upload: direct`, no temporary name is ever made.
    let w = start(EmbeddedOptions {
        write_only: true,
        ..EmbeddedOptions::default()
    })
    .await;
    let outbox = w.local("outbox");
    std::fs::write(outbox.join("only.csv"), b"straight in").unwrap();
    let mut j = job("push", Direction::Push, &outbox, "/data");
    j.direct_upload = true;
    let setup = Setup::new(w.endpoint(), vec![j]);
    let report = setup.sync_ok("push").await;
    assert_eq!(report.execution.direct, 1);
    let data = w.server_root.join("data");
    assert_eq!(
        std::fs::read(data.join("only.csv")).unwrap(),
        b"straight in"
    );
    assert!(temp_files_on(&data).is_empty(), "{:?}", tree(&data));
    let again = setup.sync_ok("push").await;
    assert_eq!(again.execution.transferred, 0);
}

fn temp_files_on(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_keys()
        .filter(|k| k.ends_with(ferry::execute::TEMP_SUFFIX))
        .collect()
}

/// Write `body` at `rel` under `root`, making its directories.
fn put_file(root: &Path, rel: &str, body: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}
