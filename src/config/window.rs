//! The backup window of incremental mode: when a backup has left it, in fixed units or calendar
//! months, exactly as the original's strict `now - taken > window` decided.

use std::fmt;

use chrono::{DateTime, Months, TimeDelta, Utc};

/// The longest window, about a century, in days. Nothing longer means anything for backups, and
/// the bound keeps window arithmetic far from the limits of the date types.
pub(crate) const MAX_WINDOW_DAYS: u32 = 36_525;

/// How long incremental backups are kept before the chain is re-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub size: u32,
    pub unit: WindowUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowUnit {
    Minutes,
    Hours,
    Days,
    Weeks,
    Months,
}

impl Window {
    /// The oldest instant still inside the window: a backup taken at `t` is outside iff
    /// `t < cutoff(now)`.
    ///
    /// Fixed-length units subtract `size * unit`, which makes "outside" exactly the original's
    /// strict `now - t > window`. Months are calendar months, clamped to the end of a shorter
    /// month (31 March minus one month is 28 February). A window reaching before the earliest
    /// representable instant saturates there, so nothing is ever outside it.
    pub fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let count = i64::from(self.size);
        let fixed =
            |length: Option<TimeDelta>| length.and_then(|length| now.checked_sub_signed(length));
        let cutoff = match self.unit {
            WindowUnit::Minutes => fixed(TimeDelta::try_minutes(count)),
            WindowUnit::Hours => fixed(TimeDelta::try_hours(count)),
            WindowUnit::Days => fixed(TimeDelta::try_days(count)),
            WindowUnit::Weeks => fixed(TimeDelta::try_weeks(count)),
            WindowUnit::Months => now.checked_sub_months(Months::new(self.size)),
        };
        cutoff.unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Whether a backup taken at `taken` has fallen out of the window at `now`.
    pub fn is_outside(&self, now: DateTime<Utc>, taken: DateTime<Utc>) -> bool {
        taken < self.cutoff(now)
    }

    /// Refuses a window longer than about a century ([`MAX_WINDOW_DAYS`]).
    pub(crate) fn check_length(&self) -> Result<(), String> {
        let longest = Window {
            size: self.unit.longest_window(),
            unit: self.unit,
        };
        if self.size <= longest.size {
            Ok(())
        } else {
            Err(format!(
                "window of {self} is longer than 100 years (at most {longest})"
            ))
        }
    }
}

impl WindowUnit {
    /// The largest `window size` in this unit: [`MAX_WINDOW_DAYS`], or 1200 calendar months.
    pub(crate) fn longest_window(self) -> u32 {
        match self {
            WindowUnit::Minutes => MAX_WINDOW_DAYS * 24 * 60,
            WindowUnit::Hours => MAX_WINDOW_DAYS * 24,
            WindowUnit::Days => MAX_WINDOW_DAYS,
            WindowUnit::Weeks => MAX_WINDOW_DAYS / 7,
            WindowUnit::Months => 100 * 12,
        }
    }

    pub(crate) fn singular(self) -> &'static str {
        match self {
            WindowUnit::Minutes => "minute",
            WindowUnit::Hours => "hour",
            WindowUnit::Days => "day",
            WindowUnit::Weeks => "week",
            WindowUnit::Months => "month",
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.size == 1 { "" } else { "s" };
        write!(f, "{} {}{}", self.size, self.unit.singular(), plural)
    }
}
