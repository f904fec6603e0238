//! Times as people read them (UTC, as every time `duokey` shows): the time
//! alone for today, with the date otherwise.

use time::OffsetDateTime;

/// A Unix time in seconds as `YYYY-MM-DD`.
pub fn date(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .map_or_else(|_| format!("@{secs}"), |t| t.date().to_string())
}

/// A time in Unix milliseconds: `HH:MM:SS` on the day of `now_ms`,
/// `YYYY-MM-DD HH:MM` on any other day.
pub fn when(ms: u64, now_ms: u64) -> String {
    let at = |ms: u64| {
        OffsetDateTime::from_unix_timestamp(i64::try_from(ms / 1000).unwrap_or(i64::MAX)).ok()
    };
    match (at(ms), at(now_ms)) {
        (Some(t), Some(now)) if t.date() == now.date() => {
            format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
        }
        (Some(t), _) => format!("{} {:02}:{:02}", t.date(), t.hour(), t.minute()),
        (None, _) => format!("@{ms}"),
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_shows_the_time_other_days_the_date() {
        let noon = 1_764_504_000_000; // 2025-11-30 12:00:00 UTC
        assert_eq!(when(noon + 5_000, noon), "12:00:05");
        assert_eq!(when(noon - 13 * 3_600_000, noon), "2025-11-29 23:00");
        assert_eq!(when(noon, noon + 365 * 86_400_000), "2025-11-30 12:00");
        assert_eq!(date(1_764_504_000), "2025-11-30");
    }
}
