//! End-to-end sync against a real pure-ftpd 1.0.50 (TLS required on control and data, MLSD)
//! over loopback, with no option for it in the job file. Like the vsftpd tests: pure-ftpd must be
//! there (`.ci/test` unpacks it) and the tests run as root, else they fail, unless
//! `FERRY_SKIP_VSFTPD=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use common::{endpoint, round_trip_sample_tree};
use support::pureftpd::PureFtpd;

/// Passive ports of this binary's servers: outside every other block (vsftpd 40000-47999, the
/// bench 48000-48399, proftpd 49000-49999, embedded 52000+).
const PASSIVE: std::ops::RangeInclusive<u16> = 50000..=50019;

#[tokio::test]
async fn round_trip_and_no_op_re_syncs_with_no_server_specific_option() {
    let Some(p) = PureFtpd::start(PASSIVE) else {
        return;
    };
    let ep = endpoint(p.addr(), p.ca_pem(), p.user(), p.password());
    round_trip_sample_tree(ep, &p.root().join("data")).await;
}
