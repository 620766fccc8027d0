//! The keep rules of full mode as the configuration states them (`keep last`, `keep daily`,
//! `keep weekly`, `keep monthly`); what they keep is [`crate::backup::retention`]'s.

use std::fmt;

/// The keep rules of a full-mode section; a rule that is not set is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepRules {
    pub last: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
}

/// The period a keep rule counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Every backup is its own period (`keep last`).
    Backup,
    Day,
    /// ISO 8601 weeks (Monday to Sunday; the week of 31 December can belong to the next year).
    Week,
    Month,
}

impl KeepRules {
    /// True when any rule is set: without one, full mode keeps every backup, as it always did.
    pub fn is_set(&self) -> bool {
        self.rules().next().is_some()
    }

    /// The rules that are set, with their counts, in a fixed order.
    pub fn rules(&self) -> impl Iterator<Item = (Period, u32)> {
        [
            (Period::Backup, self.last),
            (Period::Day, self.daily),
            (Period::Week, self.weekly),
            (Period::Month, self.monthly),
        ]
        .into_iter()
        .filter_map(|(period, count)| count.map(|count| (period, count)))
    }
}

impl Period {
    /// The configuration key of the rule that counts in this period.
    pub fn key(self) -> &'static str {
        match self {
            Period::Backup => "keep last",
            Period::Day => "keep daily",
            Period::Week => "keep weekly",
            Period::Month => "keep monthly",
        }
    }
}

impl fmt::Display for KeepRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self
            .rules()
            .map(|(period, count)| format!("{} = {count}", period.key()))
            .collect();
        if shown.is_empty() {
            f.write_str("no keep rules")
        } else {
            f.write_str(&shown.join(", "))
        }
    }
}
