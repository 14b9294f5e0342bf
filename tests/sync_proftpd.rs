//! End-to-end sync against a real proftpd 1.3.8 with mod_tls (MLSD, MFMT, TLS session reuse
//! required on data connections) over loopback. Like the vsftpd tests: proftpd must be
//! installed and the tests run as root, else they fail, unless `FERRY_SKIP_VSFTPD=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::time::{Duration, UNIX_EPOCH};

use common::{Setup, endpoint, job, round_trip_sample_tree, tree};
use ferry::config::Direction;
use support::proftpd::Proftpd;

fn ep(p: &Proftpd) -> ferry::config::Endpoint {
    endpoint(p.addr(), p.ca_pem(), p.user(), p.password())
}

#[tokio::test]
async fn round_trip_with_mlsd_and_required_session_reuse() {
    let Some(p) = Proftpd::start() else {
        return;
    };
    round_trip_sample_tree(ep(&p), &p.root().join("data")).await;
}

/// An uploaded file shows its local modification time on the server (MFMT), not the time of
/// the upload, from the moment it has its final name.
#[tokio::test]
async fn an_uploaded_file_keeps_its_modification_time_on_a_server_with_mfmt() {
    let Some(p) = Proftpd::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(outbox.join("sub")).unwrap();
    let made = UNIX_EPOCH + Duration::from_secs(1_700_000_007);
    for name in ["report.csv", "sub/data.bin"] {
        std::fs::write(outbox.join(name), format!("contents of {name}")).unwrap();
        filetime::set_file_mtime(
            outbox.join(name),
            filetime::FileTime::from_system_time(made),
        )
        .unwrap();
    }
    let setup = Setup::new(ep(&p), vec![job("push", Direction::Push, &outbox, "/data")]);
    let pushed = setup.sync_ok("push").await;
    assert_eq!(pushed.execution.transferred, 2);
    for name in ["report.csv", "sub/data.bin"] {
        let on_server = std::fs::metadata(p.root().join("data").join(name))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(on_server, made, "{name}: the server shows {on_server:?}");
    }
    // And the next run finds nothing to do.
    let again = setup.sync_ok("push").await;
    assert_eq!(
        again.execution.transferred, 0,
        "{:?}",
        again.planned.plan.actions
    );
}

/// `ferry check --connect` says that MFMT is there and what it is used for.
#[tokio::test]
async fn check_connect_reports_mfmt_and_mlsd() {
    let Some(p) = Proftpd::start() else {
        return;
    };
    std::fs::create_dir_all(p.root().join("data")).unwrap();
    std::fs::write(p.root().join("data/today.csv"), b"1,2\n").unwrap();
    p.give_root_to_user();
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(
        ep(&p),
        vec![job("pull", Direction::Pull, dir.path(), "/data")],
    );
    let mut out = Vec::new();
    let code = ferry::check::connect_all(&setup.config, &mut out).await;
    let text = String::from_utf8(out).unwrap();
    assert_eq!(code, 0, "{text}");
    for want in [
        "data channel resumed TLS session: yes",
        "MLSD: yes",
        "MFMT: yes (uploads keep their local modification time)",
        "job `pull` (pull): /data: ok, 1 entry",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

/// proftpd sends no TLS 1.3 session ticket on an upload's data connection, and each data
/// connection uses one up: one control connection can resume for two uploads, after which
/// proftpd refuses the data connection. ferry logs in anew before that; 30 uploads on one
/// connection, with no retry to hide a refusal, all arrive.
#[tokio::test]
async fn many_uploads_over_tls13_on_one_connection_all_resume_their_session() {
    let Some(p) = Proftpd::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    for i in 0..30 {
        std::fs::write(outbox.join(format!("f{i:02}.txt")), format!("file {i}\n")).unwrap();
    }
    let mut e = ep(&p);
    e.max_connections = 1;
    let mut j = job("push", Direction::Push, &outbox, "/data");
    j.retry.attempts = 1;
    let setup = Setup::new(e, vec![j]);
    let pushed = setup.sync_ok("push").await;
    assert_eq!(pushed.execution.transferred, 30);
    assert_eq!(tree(&outbox), tree(&p.root().join("data")));
    assert!(
        !p.log_text().contains("client did not reuse TLS session"),
        "{}",
        p.log_text()
    );
}

/// Without MFMT in FEAT, proftpd's `SITE UTIME` (mod_site_misc) sets the time, and check
/// --connect says which is used.
#[tokio::test]
async fn without_mfmt_site_utime_sets_the_time_and_check_says_so() {
    let Some(p) = Proftpd::start_with("LoadModule mod_site_misc.c\nFactsAdvertise off") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let made = UNIX_EPOCH + Duration::from_secs(1_700_000_007);
    std::fs::write(outbox.join("report.csv"), b"1,2,3\n").unwrap();
    filetime::set_file_mtime(
        outbox.join("report.csv"),
        filetime::FileTime::from_system_time(made),
    )
    .unwrap();
    std::fs::create_dir_all(p.root().join("data")).unwrap();
    p.give_root_to_user();
    let setup = Setup::new(ep(&p), vec![job("push", Direction::Push, &outbox, "/data")]);
    let mut out = Vec::new();
    let code = ferry::check::connect_all(&setup.config, &mut out).await;
    let text = String::from_utf8(out).unwrap();
    assert_eq!(code, 0, "{text}");
    for want in ["MFMT: no", "modification times: set with SITE UTIME"] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    setup.sync_ok("push").await;
    let on_server = std::fs::metadata(p.root().join("data/report.csv"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(on_server, made);
}
