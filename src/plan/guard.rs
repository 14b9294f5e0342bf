//! Guards on deletes, beyond "never after an incomplete listing" (which lives beside the
//! planner's reasons): a cap on how many files one run may delete.
//!
//! `max_delete` is a count of files, or a percentage of the files ferry knows from state (the
//! records of the last verified sync); with no records yet it is a percentage of the files the
//! destination lists. Over the cap the run deletes nothing at all, and says so with the
//! numbers, so that an operator can see that 80 of 100 files went missing before anything is
//! lost. Pure, like the planner.

use crate::config::MaxDelete;

/// Why the planned file deletes are over the cap, or `None` when they are within it.
pub fn over_max_delete(
    file_deletes: usize,
    known_files: usize,
    dest_files: usize,
    max: MaxDelete,
) -> Option<String> {
    let (limit, of) = match max {
        MaxDelete::Count(n) => (n, String::new()),
        MaxDelete::Percent(p) => {
            let (base, what) = if known_files > 0 {
                (known_files, "known from the last sync")
            } else {
                (dest_files, "on the destination")
            };
            (
                (base as u64 * u64::from(p)) / 100,
                format!(" ({p}% of {base} files {what})"),
            )
        }
    };
    (file_deletes as u64 > limit).then(|| {
        format!(
            "{file_deletes} files would be deleted, more than max_delete allows: {limit}{of}; nothing deleted (raise max_delete to allow it)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_a_count_or_a_share_of_the_known_files() {
        let cases: &[(usize, usize, usize, MaxDelete, Option<&str>)] = &[
            (3, 100, 100, MaxDelete::Count(5), None),
            (5, 100, 100, MaxDelete::Count(5), None),
            (
                6,
                100,
                100,
                MaxDelete::Count(5),
                Some(
                    "6 files would be deleted, more than max_delete allows: 5; nothing deleted (raise max_delete to allow it)",
                ),
            ),
            (50, 100, 100, MaxDelete::Percent(50), None),
            (
                80,
                100,
                100,
                MaxDelete::Percent(50),
                Some(
                    "80 files would be deleted, more than max_delete allows: 50 (50% of 100 files known from the last sync); nothing deleted (raise max_delete to allow it)",
                ),
            ),
            // No state yet: a share of what the destination lists.
            (
                2,
                0,
                3,
                MaxDelete::Percent(50),
                Some(
                    "2 files would be deleted, more than max_delete allows: 1 (50% of 3 files on the destination); nothing deleted (raise max_delete to allow it)",
                ),
            ),
            (100, 100, 100, MaxDelete::Percent(100), None),
            (0, 0, 0, MaxDelete::Percent(0), None),
        ];
        for (deletes, known, dest, max, want) in cases {
            assert_eq!(
                over_max_delete(*deletes, *known, *dest, *max).as_deref(),
                *want,
                "{deletes} deletes, {known} known, {dest} on the destination, max {max}"
            );
        }
    }
}
