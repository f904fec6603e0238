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

/// `--since`: a date (`2026-11-30`, midnight UTC) or a duration back from
/// `now_ms` (`90m`, `2h`, `3d`); Unix milliseconds.
pub fn since(arg: &str, now_ms: u64) -> Result<u64, String> {
    if let Ok(secs) = crate::parse_duration(arg) {
        return Ok(now_ms.saturating_sub(secs.saturating_mul(1000)));
    }
    let bad = || format!("{arg:?} is neither a date like 2026-11-30 nor a duration like 2h or 3d");
    let mut parts = arg.splitn(3, '-').map(str::parse::<u32>);
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(d))) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let month = u8::try_from(m)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok());
    let date = month
        .zip(u8::try_from(d).ok())
        .zip(i32::try_from(y).ok())
        .and_then(|((m, d), y)| time::Date::from_calendar_date(y, m, d).ok())
        .ok_or_else(bad)?;
    let secs = date.midnight().assume_utc().unix_timestamp();
    Ok(u64::try_from(secs).unwrap_or(0).saturating_mul(1000))
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

    #[test]
    fn since_takes_a_date_or_a_duration_back() {
        let noon = 1_764_504_000_000; // 2025-11-30 12:00:00 UTC
        assert_eq!(since("2025-11-30", noon), Ok(noon - 12 * 3_600_000));
        assert_eq!(since("2h", noon), Ok(noon - 2 * 3_600_000));
        assert_eq!(since("3d", noon), Ok(noon - 3 * 86_400_000));
        for bad in ["yesterday", "2025-13-01", "2025-11", ""] {
            assert!(since(bad, noon).is_err(), "{bad}");
        }
    }
}
