//! The wall clock, read in one place for every role: certificates' validity
//! (SPEC §2), grants' and items' times, retention and rate windows.

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// [`now_ms`] as the databases store it (a signed 64-bit integer).
pub fn now_ms_i64() -> i64 {
    i64::try_from(now_ms()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_forms_read_the_same_clock() {
        let a = super::now_ms();
        let b = u64::try_from(super::now_ms_i64()).unwrap();
        let c = super::now_ms();
        assert!(a <= b && b <= c && a > 1_700_000_000_000);
    }
}
