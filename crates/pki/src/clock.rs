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
    offset: Option<std::sync::Arc<Offset>>,
}

/// What an adjustable clock adds to the system time, and who waits for it
/// to move.
#[derive(Debug)]
struct Offset {
    ms: std::sync::atomic::AtomicU64,
    moved: tokio::sync::watch::Sender<()>,
}

impl Default for Offset {
    fn default() -> Offset {
        Offset {
            ms: std::sync::atomic::AtomicU64::new(0),
            moved: tokio::sync::watch::Sender::new(()),
        }
    }
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
            offset: Some(std::sync::Arc::default()),
        }
    }

    /// Moves an adjustable clock (and its clones) forward by `by`; the
    /// system clock cannot be moved.
    pub fn advance(&self, by: std::time::Duration) {
        let Some(offset) = &self.offset else {
            return;
        };
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        offset.ms.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
        offset.moved.send_replace(());
    }

    /// Completes at the next [`Clock::advance`] (never for the system
    /// clock): a task that sleeps until a time on this clock (the GMS's
    /// rotation schedule) also waits for this, and looks again. Take it
    /// before reading the time, so that no advance is missed between.
    pub fn advanced(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        // Subscribed now: an advance from here on completes the future.
        let watch = self.offset.clone().map(|o| (o.moved.subscribe(), o));
        async move {
            match watch {
                // `_o` keeps the sender alive, so `changed` waits.
                Some((mut rx, _o)) => {
                    let _ = rx.changed().await;
                }
                None => std::future::pending().await,
            }
        }
    }

    /// How far [`Clock::advance`] moved this clock (zero for the system one).
    pub fn offset(&self) -> std::time::Duration {
        let ms = self
            .offset
            .as_ref()
            .map_or(0, |o| o.ms.load(std::sync::atomic::Ordering::SeqCst));
        std::time::Duration::from_millis(ms)
    }

    /// Unix time in milliseconds on this clock.
    pub fn now_ms(&self) -> u64 {
        let offset = u64::try_from(self.offset().as_millis()).unwrap_or(u64::MAX);
        now_ms().saturating_add(offset)
    }

    /// [`Clock::now_ms`] as the databases store it.
    pub fn now_ms_i64(&self) -> i64 {
        i64::try_from(self.now_ms()).unwrap_or(i64::MAX)
    }
}

/// A duration as people type it: a number with `s`, `m`, `h` or `d`
/// (`90s`, `30m`, `1h`, `2d`; no unit: seconds), in seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 30m or 1h"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: use s, m, h or d")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| "duration too long".to_owned())
}

/// The rate limiters' clock: monotonic time since the limiter was made,
/// plus what [`Clock::advance`] added, so that a test moves a limiter's
/// refill as it moves grace windows (D41).
#[derive(Debug, Clone)]
pub struct RateClock {
    base: std::time::Instant,
    clock: Clock,
}

impl governor::clock::Clock for RateClock {
    type Instant = governor::nanos::Nanos;

    fn now(&self) -> governor::nanos::Nanos {
        governor::nanos::Nanos::from(self.base.elapsed().saturating_add(self.clock.offset()))
    }
}

/// A per-key rate limiter (users, addresses) on a [`Clock`].
pub type KeyedLimiter<K> = governor::RateLimiter<
    K,
    governor::state::keyed::DefaultKeyedStateStore<K>,
    RateClock,
    governor::middleware::NoOpMiddleware<governor::nanos::Nanos>,
>;

/// A [`KeyedLimiter`] allowing each key `per_sec` requests a second in
/// bursts of up to `burst` (each at least 1), refilled on `clock`.
pub fn keyed_limiter<K: std::hash::Hash + Eq + Clone>(
    per_sec: u32,
    burst: u32,
    clock: &Clock,
) -> KeyedLimiter<K> {
    let at_least_one = |n: u32| std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN);
    governor::RateLimiter::dashmap_with_clock(
        governor::Quota::per_second(at_least_one(per_sec)).allow_burst(at_least_one(burst)),
        RateClock {
            base: std::time::Instant::now(),
            clock: clock.clone(),
        },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_people_type_them() {
        assert_eq!(super::parse_duration("90s"), Ok(90));
        assert_eq!(super::parse_duration("30m"), Ok(1800));
        assert_eq!(super::parse_duration("2d"), Ok(172_800));
        assert_eq!(super::parse_duration("15"), Ok(15));
        assert!(super::parse_duration("1w").is_err());
        assert!(super::parse_duration("h").is_err());
    }

    #[test]
    fn a_limiter_refills_when_the_clock_advances() {
        let clock = super::Clock::adjustable();
        let limiter = super::keyed_limiter::<u8>(0, 0, &clock);
        assert!(limiter.check_key(&1).is_ok());
        assert!(
            limiter.check_key(&1).is_err(),
            "one a second, bursts of one"
        );
        clock.advance(std::time::Duration::from_secs(1));
        assert!(limiter.check_key(&1).is_ok(), "refilled a second later");
    }

    #[tokio::test]
    async fn an_advance_wakes_who_waits_for_one() {
        let clock = super::Clock::adjustable();
        let waiting = clock.advanced();
        clock.advance(std::time::Duration::from_secs(1));
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("woken by the advance made after it was taken");
        let system = super::Clock::system();
        let never = tokio::time::timeout(std::time::Duration::from_millis(10), system.advanced());
        assert!(
            never.await.is_err(),
            "the system clock never moves by advance"
        );
    }

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
