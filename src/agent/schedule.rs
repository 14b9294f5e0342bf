//! When a scheduled job fires: a pure function of the cron expression, the job's time zone and
//! the instant to count from.
//!
//! Cron expressions are croner's (5 fields, or 6 with seconds first, `@hourly` and friends,
//! POSIX weekdays, day-of-month OR day-of-week). Times are read in the job's `timezone`, else the
//! host's. Daylight saving follows croner: a wall-clock time that does not exist on the day the
//! clocks go forward fires at the first instant after the gap (02:30 becomes 03:00), and one
//! that happens twice on the day they go back fires once, at its first occurrence.
//!
//! What it does not do: sleep, or know about the agent. The timer (`agent::mod`) asks it for
//! the next instant and waits on tokio's clock, which tests pause.

use chrono::{DateTime, Local, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// The first time after `after` (exclusive) that `cron` fires, read in `tz` (else the host's
/// time zone). `None` when it never fires again.
pub fn next_fire(cron: &Cron, tz: Option<Tz>, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match tz {
        Some(tz) => cron
            .find_next_occurrence(&after.with_timezone(&tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        None => cron
            .find_next_occurrence(&after.with_timezone(&Local), false)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// The last time at or before `before` that `cron` fired (for catch-up after downtime).
pub fn previous_fire(cron: &Cron, tz: Option<Tz>, before: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match tz {
        Some(tz) => cron
            .find_previous_occurrence(&before.with_timezone(&tz), true)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        None => cron
            .find_previous_occurrence(&before.with_timezone(&Local), true)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// Whether a run missed while the agent was down is due at start-up: the schedule fired after
/// the job last started (or the job never ran and the schedule fired at all before `now`).
pub fn missed(
    cron: &Cron,
    tz: Option<Tz>,
    last_started: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    match (previous_fire(cron, tz, now), last_started) {
        (Some(fired), Some(started)) => fired > started,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_schedule;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn next_fire_table() {
        let berlin: Tz = "Europe/Berlin".parse().expect("tz");
        let ny: Tz = "America/New_York".parse().expect("tz");
        let cases: &[(&str, Option<Tz>, &str, &str)] = &[
            // 5 fields, in UTC.
            (
                "30 2 * * *",
                Some(Tz::UTC),
                "2026-12-01T10:00:00Z",
                "2026-12-02T02:30:00Z",
            ),
            // 6 fields, seconds first: every 2 s.
            (
                "*/2 * * * * *",
                Some(Tz::UTC),
                "2026-12-01T10:00:01Z",
                "2026-12-01T10:00:02Z",
            ),
            (
                "*/2 * * * * *",
                Some(Tz::UTC),
                "2026-12-01T10:00:02Z",
                "2026-12-01T10:00:04Z",
            ),
            // Nicknames.
            (
                "@hourly",
                Some(Tz::UTC),
                "2026-12-01T10:00:00Z",
                "2026-12-01T11:00:00Z",
            ),
            (
                "@daily",
                Some(Tz::UTC),
                "2026-12-01T10:00:00Z",
                "2026-12-02T00:00:00Z",
            ),
            // Read in the job's time zone: 02:30 in Berlin (UTC+1 in winter).
            (
                "30 2 * * *",
                Some(berlin),
                "2026-12-01T10:00:00Z",
                "2026-12-02T01:30:00Z",
            ),
            // POSIX weekdays: 1 is Monday (2026-12-07 is a Monday).
            (
                "0 9 * * 1",
                Some(Tz::UTC),
                "2026-12-01T10:00:00Z",
                "2026-12-07T09:00:00Z",
            ),
            // Day of month OR day of week, as Vixie cron: the 15th, or any Friday (Dec 4).
            (
                "0 0 15 * 5",
                Some(Tz::UTC),
                "2026-12-01T10:00:00Z",
                "2026-12-04T00:00:00Z",
            ),
            // DST gap: 2027-03-28 02:30 does not exist in Berlin; it fires at 03:00 CEST.
            (
                "30 2 * * *",
                Some(berlin),
                "2027-03-27T12:00:00Z",
                "2027-03-28T01:00:00Z",
            ),
            // DST repeat: 2026-10-25 02:30 happens twice in Berlin; it fires once, at the
            // first (CEST, UTC+2), and next on the 26th.
            (
                "30 2 * * *",
                Some(berlin),
                "2026-10-24T12:00:00Z",
                "2026-10-25T00:30:00Z",
            ),
            (
                "30 2 * * *",
                Some(berlin),
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z",
            ),
            // New York's gap (2027-03-14 02:00-03:00).
            (
                "15 2 * * *",
                Some(ny),
                "2027-03-13T12:00:00Z",
                "2027-03-14T07:00:00Z",
            ),
        ];
        for (expr, tz, after, want) in cases {
            let cron = parse_schedule(expr).expect("valid");
            assert_eq!(
                next_fire(&cron, *tz, utc(after)),
                Some(utc(want)),
                "{expr} in {tz:?} after {after}"
            );
        }
    }

    #[test]
    fn a_run_missed_while_down_is_found() {
        let cron = parse_schedule("0 2 * * *").expect("valid");
        let tz = Some(Tz::UTC);
        let now = utc("2026-12-01T10:00:00Z");
        // Last run yesterday at 02:00: today's 02:00 was missed.
        assert!(missed(&cron, tz, Some(utc("2026-11-30T02:00:05Z")), now));
        // Last run today after 02:00: nothing missed.
        assert!(!missed(&cron, tz, Some(utc("2026-12-01T02:00:01Z")), now));
        // Never ran: the schedule has fired before, so one run is due.
        assert!(missed(&cron, tz, None, now));
        assert_eq!(
            previous_fire(&cron, tz, now),
            Some(utc("2026-12-01T02:00:00Z"))
        );
    }
}
