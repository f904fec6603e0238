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

/// Where a role or a terminal reads the time for its own stamps and
/// decisions — grants' and posts' times, grace windows, `rn1_wait`, erasure
/// (D41): the system clock, or in tests a clock that reads the system time
/// plus an offset the test raises with [`Clock::advance`], so that a test
/// jumps over a window instead of sleeping through it. Certificate validity
/// stays on the system clock (rustls reads it).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that tests move forward: the system time plus what
    /// [`Clock::advance`] added (shared by its clones).
    pub fn adjustable() -> Clock {
        Clock {
            offset_ms: Some(std::sync::Arc::default()),
        }
    }

    /// Moves an adjustable clock (and its clones) forward by `by`; the
    /// system clock cannot be moved.
    pub fn advance(&self, by: std::time::Duration) {
        let Some(offset) = &self.offset_ms else {
            return;
        };
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        offset.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Unix time in milliseconds on this clock.
    pub fn now_ms(&self) -> u64 {
        let offset = self
            .offset_ms
            .as_ref()
            .map_or(0, |o| o.load(std::sync::atomic::Ordering::SeqCst));
        now_ms().saturating_add(offset)
    }

    /// [`Clock::now_ms`] as the databases store it.
    pub fn now_ms_i64(&self) -> i64 {
        i64::try_from(self.now_ms()).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_adjustable_clock_moves_with_its_clones_and_the_system_one_does_not() {
        let clock = super::Clock::adjustable();
        let copy = clock.clone();
        let before = copy.now_ms();
        clock.advance(std::time::Duration::from_secs(3600));
        assert!(copy.now_ms() >= before + 3_600_000);
        let system = super::Clock::system();
        system.advance(std::time::Duration::from_secs(3600));
        assert!(system.now_ms() < before + 3_600_000);
    }

    #[test]
    fn both_forms_read_the_same_clock() {
        let a = super::now_ms();
        let b = u64::try_from(super::now_ms_i64()).unwrap();
        let c = super::now_ms();
        assert!(a <= b && b <= c && a > 1_700_000_000_000);
    }
}
