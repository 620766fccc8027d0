//! The wall clock a backup run reads: the system's, or, in a build for the cluster tests, one that
//! starts at a second the test names.
//!
//! Some behaviour only shows when two runs meet within one second (the second run finds its
//! snapshot name taken and waits for the next second). A loaded machine cannot promise that two
//! real runs meet, so the tests start the second run's clock at the very second of the first
//! run's snapshot instead.

use chrono::{DateTime, Utc};

/// The environment variable that starts the clock of a test build at a Unix second.
#[cfg(feature = "test-support")]
pub const TEST_START: &str = "CEPHBACKUP_TEST_CLOCK_START";

/// Now. In a `test-support` build with [`TEST_START`] set, the first call answers exactly that
/// second and later calls move on from it in step with the real clock.
#[must_use]
pub fn now() -> DateTime<Utc> {
    #[cfg(feature = "test-support")]
    if let Some(now) = test_clock() {
        return now;
    }
    Utc::now()
}

#[cfg(feature = "test-support")]
fn test_clock() -> Option<DateTime<Utc>> {
    use std::sync::OnceLock;
    use std::time::Instant;
    static STARTED: OnceLock<Option<(DateTime<Utc>, Instant)>> = OnceLock::new();
    let (start, at) = (*STARTED.get_or_init(|| {
        let second = std::env::var(TEST_START).ok()?.parse().ok()?;
        Some((DateTime::from_timestamp(second, 0)?, Instant::now()))
    }))?;
    let elapsed = chrono::Duration::from_std(at.elapsed()).ok()?;
    Some(start + elapsed)
}
