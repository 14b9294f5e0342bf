//! Smoke tests of the test servers themselves (embedded libunftp, vsftpd, hostile), driven with
//! suppaftp directly so a failure here points at the server set-up, not at ferry's transport.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use ferry::embedded::{CertKind, EmbeddedOptions, EmbeddedServer};
use rustls::ProtocolVersion;
use sha2::{Digest, Sha256};
use suppaftp::tokio::{AsyncFtpStream, AsyncRustlsConnector, AsyncRustlsFtpStream};
use support::hostile::{HOSTILE_CONTENT, Hostile};
use support::vsftpd::{Vsftpd, VsftpdOptions};
use support::{ClientTls, client_config, get_bytes, login_explicit, probe_tls, put_bytes};

const PAYLOAD: &[u8] = b"ferry smoke test\r\nbinary \x00\xff bytes stay as they are\n";

async fn start_embedded(
    root: &std::path::Path,
    pki: &std::path::Path,
    opts: EmbeddedOptions,
) -> EmbeddedServer {
    let opts = EmbeddedOptions {
        passive_ports: support::embedded_passive_ports(),
        ..opts
    };
    EmbeddedServer::start(root, pki, opts).await.unwrap()
}

/// Put a file, list it, get it back: the whole path a sync takes, over one control connection.
async fn round_trip(ftp: &mut AsyncRustlsFtpStream, name: &str) {
    put_bytes(ftp, name, PAYLOAD).await;
    let listing = ftp.list(None).await.unwrap();
    assert!(
        listing.iter().any(|line| line.ends_with(name)),
        "{name} not in {listing:?}"
    );
    assert_eq!(ftp.size(name).await.unwrap(), PAYLOAD.len());
    assert_eq!(get_bytes(ftp, name).await, PAYLOAD);
}

#[tokio::test]
async fn embedded_round_trip_over_tls13_and_tls12() {
    for (tls13, expected) in [
        (true, ProtocolVersion::TLSv1_3),
        (false, ProtocolVersion::TLSv1_2),
    ] {
        let root = tempfile::tempdir().unwrap();
        let pki = tempfile::tempdir().unwrap();
        let opts = EmbeddedOptions {
            tls13,
            ..EmbeddedOptions::default()
        };
        let server = start_embedded(root.path(), pki.path(), opts).await;
        let (version, leaf) = probe_tls(
            server.addr(),
            client_config(server.ca_pem(), ClientTls::Any, None),
        )
        .await;
        assert_eq!(version, expected, "tls13: {tls13}");
        let leaf_sha: [u8; 32] = Sha256::digest(&leaf).into();
        assert_eq!(leaf_sha, server.server_cert_sha256());

        let config = client_config(server.ca_pem(), ClientTls::Any, None);
        let mut ftp = login_explicit(
            server.addr(),
            config,
            "ferry",
            ferry::embedded::TEST_PASSWORD,
        )
        .await;
        round_trip(&mut ftp, "hello.bin").await;
        ftp.quit().await.unwrap();
        assert_eq!(
            std::fs::read(root.path().join("hello.bin")).unwrap(),
            PAYLOAD
        );
        server.shutdown().await;
    }
}

#[tokio::test]
async fn embedded_refuses_a_wrong_password_and_a_cleartext_login() {
    let root = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let server = start_embedded(root.path(), pki.path(), EmbeddedOptions::default()).await;

    let config = client_config(server.ca_pem(), ClientTls::Any, None);
    let connector = AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(config));
    let mut ftp = AsyncRustlsFtpStream::connect(server.addr())
        .await
        .unwrap()
        .into_secure(connector, "127.0.0.1")
        .await
        .unwrap();
    let err = ftp.login("ferry", "wrong").await.unwrap_err();
    assert!(
        err.to_string().contains("530 Authentication failed"),
        "{err}"
    );

    let mut plain = AsyncFtpStream::connect(server.addr()).await.unwrap();
    let err = plain
        .login("ferry", ferry::embedded::TEST_PASSWORD)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("534 A TLS connection is required on the control channel"),
        "{err}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn embedded_certificates_are_refused_for_the_reason_their_kind_names() {
    for (kind, reason) in [
        (
            CertKind::WrongHost,
            "certificate not valid for name \"127.0.0.1\"",
        ),
        (CertKind::Expired, "certificate expired"),
    ] {
        let root = tempfile::tempdir().unwrap();
        let pki = tempfile::tempdir().unwrap();
        let opts = EmbeddedOptions {
            cert: kind,
            ..EmbeddedOptions::default()
        };
        let server = start_embedded(root.path(), pki.path(), opts).await;
        let config = client_config(server.ca_pem(), ClientTls::Any, None);
        let connector = AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(config));
        let secured = AsyncRustlsFtpStream::connect(server.addr())
            .await
            .unwrap()
            .into_secure(connector, "127.0.0.1")
            .await;
        let Err(err) = secured else {
            panic!("{kind:?}: the certificate was accepted");
        };
        assert!(err.to_string().contains(reason), "{kind:?}: {err}");
        server.shutdown().await;
    }
}

#[tokio::test]
async fn embedded_client_certificate_is_required_when_asked() {
    let root = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions {
        require_client_cert: true,
        ..EmbeddedOptions::default()
    };
    let server = start_embedded(root.path(), pki.path(), opts).await;

    let with_cert = client_config(
        server.ca_pem(),
        ClientTls::Any,
        Some((server.client_cert_pem(), server.client_key_pem())),
    );
    let mut ftp = login_explicit(
        server.addr(),
        with_cert,
        "ferry",
        ferry::embedded::TEST_PASSWORD,
    )
    .await;
    round_trip(&mut ftp, "mtls.bin").await;
    ftp.quit().await.unwrap();

    // Without a certificate the server aborts the handshake; with TLS 1.3 the client only sees
    // that at its next read, so either step may fail, but login never succeeds.
    let without_cert = client_config(server.ca_pem(), ClientTls::Any, None);
    let connector = AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(without_cert));
    let plain = AsyncRustlsFtpStream::connect(server.addr()).await.unwrap();
    let login = async {
        let mut ftp = plain.into_secure(connector, "127.0.0.1").await?;
        ftp.login("ferry", ferry::embedded::TEST_PASSWORD).await
    };
    assert!(login.await.is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn vsftpd_explicit_round_trip_resumes_the_session_over_tls13_and_tls12() {
    for (tls13, expected) in [
        (true, ProtocolVersion::TLSv1_3),
        (false, ProtocolVersion::TLSv1_2),
    ] {
        let opts = VsftpdOptions {
            tls13,
            ..VsftpdOptions::default()
        };
        let Some(server) = Vsftpd::start(opts) else {
            return;
        };
        let (version, _) = probe_tls(
            server.addr(),
            client_config(server.ca_pem(), ClientTls::Any, None),
        )
        .await;
        assert_eq!(version, expected, "tls13: {tls13}");

        let config = client_config(server.ca_pem(), ClientTls::Any, None);
        let mut ftp = login_explicit(server.addr(), config, server.user(), server.password()).await;
        round_trip(&mut ftp, "hello.bin").await;
        ftp.quit().await.unwrap();
        assert_eq!(
            std::fs::read(server.root().join("hello.bin")).unwrap(),
            PAYLOAD
        );
        let log = server.log_text();
        assert!(log.contains("OK UPLOAD"), "{log}");
        assert!(log.contains("OK DOWNLOAD"), "{log}");
        // debug_ssl logs one line per TLS handshake; the three data connections (STOR, LIST,
        // RETR) must each have resumed the control connection's session.
        let vsftpd_version = if tls13 { "TLSv1.3" } else { "TLSv1.2" };
        let resumed: Vec<&str> = log.lines().filter(|l| l.contains(", reused,")).collect();
        assert_eq!(resumed.len(), 3, "{log}");
        assert!(
            resumed
                .iter()
                .all(|l| l.contains(&format!("SSL version: {vsftpd_version},"))),
            "{log}"
        );
    }
}

#[tokio::test]
async fn vsftpd_implicit_round_trip() {
    let opts = VsftpdOptions {
        implicit: true,
        ..VsftpdOptions::default()
    };
    let Some(server) = Vsftpd::start(opts) else {
        return;
    };
    let config = client_config(server.ca_pem(), ClientTls::Any, None);
    let mut ftp =
        support::login_implicit(server.addr(), config, server.user(), server.password()).await;
    round_trip(&mut ftp, "implicit.bin").await;
    ftp.quit().await.unwrap();
}

#[tokio::test]
async fn vsftpd_refuses_a_data_connection_that_does_not_resume_the_session() {
    let Some(server) = Vsftpd::start(VsftpdOptions::default()) else {
        return;
    };
    let mut config = (*client_config(server.ca_pem(), ClientTls::Tls12, None)).clone();
    config.resumption = rustls::client::Resumption::disabled();
    let mut ftp = login_explicit(
        server.addr(),
        std::sync::Arc::new(config),
        server.user(),
        server.password(),
    )
    .await;
    assert!(ftp.list(None).await.is_err());
    let log = server.log_text();
    assert!(log.contains("session reuse required"), "{log}");
}

#[tokio::test]
async fn vsftpd_drop_ends_open_sessions() {
    let Some(server) = Vsftpd::start(VsftpdOptions::default()) else {
        return;
    };
    let config = client_config(server.ca_pem(), ClientTls::Any, None);
    let mut ftp = login_explicit(server.addr(), config, server.user(), server.password()).await;
    ftp.noop().await.unwrap();
    drop(server);
    let after = tokio::time::timeout(Duration::from_secs(5), ftp.noop()).await;
    assert!(
        matches!(after, Ok(Err(_))),
        "the session survived: {after:?}"
    );
}

fn hostile_lines() -> Vec<String> {
    let names = [
        "..",
        ".",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "../../escape",
        "nul\0name",
        "ok.txt",
    ];
    names
        .iter()
        .map(|name| format!("-rw-r--r--    1 1000     1000            7 Jan 02 03:04 {name}"))
        .collect()
}

#[tokio::test]
async fn hostile_listing_sends_the_raw_lines_and_records_retr_names() {
    let server = Hostile::listing(hostile_lines(), true).await;
    let config = client_config(server.ca_pem(), ClientTls::Any, None);
    let mut ftp = login_explicit(server.addr(), config, server.user(), server.password()).await;

    assert_eq!(ftp.list(None).await.unwrap(), hostile_lines());
    assert_eq!(ftp.list(Some("/any/dir")).await.unwrap(), hostile_lines());
    assert_eq!(ftp.mlsd(None).await.unwrap(), hostile_lines());
    let feat = ftp.feat().await.unwrap();
    assert!(feat.contains_key("MLSD"), "{feat:?}");

    assert_eq!(get_bytes(&mut ftp, "../../escape").await, HOSTILE_CONTENT);
    assert_eq!(get_bytes(&mut ftp, "ok.txt").await, HOSTILE_CONTENT);
    assert_eq!(server.requested_paths(), ["../../escape", "ok.txt"]);
    let commands = server.commands();
    assert!(
        commands.contains(&"RETR ../../escape".to_string()),
        "{commands:?}"
    );
    assert!(
        commands.contains(&"PASS <hidden>".to_string()),
        "{commands:?}"
    );
    ftp.quit().await.unwrap();
}

#[tokio::test]
async fn hostile_without_mlsd_answers_502_and_does_not_advertise_it() {
    let server =
        Hostile::listing(vec!["-rw-r--r-- 1 0 0 7 Jan 02 03:04 ok.txt".into()], false).await;
    let config = client_config(server.ca_pem(), ClientTls::Any, None);
    let mut ftp = login_explicit(server.addr(), config, server.user(), server.password()).await;
    let feat = ftp.feat().await.unwrap();
    assert!(!feat.contains_key("MLSD"), "{feat:?}");
    let err = ftp.mlsd(None).await.unwrap_err();
    assert!(err.to_string().contains("502"), "{err}");
}

#[tokio::test]
async fn hostile_stall_after_login_never_answers() {
    let server = Hostile::stall_after_login().await;
    let config = client_config(server.ca_pem(), ClientTls::Any, None);
    let connector = AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(config));
    let mut ftp = AsyncRustlsFtpStream::connect(server.addr())
        .await
        .unwrap()
        .into_secure(connector, "127.0.0.1")
        .await
        .unwrap();
    ftp.login(server.user(), server.password()).await.unwrap();
    let pwd = tokio::time::timeout(Duration::from_millis(500), ftp.pwd()).await;
    assert!(pwd.is_err(), "PWD was answered: {pwd:?}");
}

#[tokio::test]
async fn hostile_stall_data_opens_the_data_connection_and_sends_nothing() {
    use tokio::io::AsyncReadExt;
    let server = Hostile::stall_data().await;
    let config = client_config(server.ca_pem(), ClientTls::Any, None);
    let mut ftp = login_explicit(server.addr(), config, server.user(), server.password()).await;
    let mut stream = ftp.retr_as_stream("ok.txt").await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
    assert!(read.is_err(), "the data connection delivered: {read:?}");
    assert_eq!(server.requested_paths(), ["ok.txt"]);
}
