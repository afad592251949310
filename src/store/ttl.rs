//! TTL jitter: turns a client's TTL into an absolute expiry with a small
//! random extension.
//!
//! Keys written together (a warm-up, a batch job, a deploy) would otherwise
//! expire together and send a synchronized wave of misses to the backing
//! store. Stretching each TTL by a random extra spreads that wave out. The
//! extra is only ever added, never subtracted, so a client can rely on its
//! entry living at least as long as it asked for.

use std::time::{Duration, Instant};

/// TTL jitter policy: each TTL gets a uniformly random extra in
/// `[0, min(ttl * fraction, cap)]` so keys written together do not expire
/// together. A TTL of zero means "no expiry".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TtlJitter {
    /// Largest extra as a share of the TTL (0.10 = up to 10% longer).
    pub fraction: f64,
    /// Upper bound on the extra, so a day-long TTL is not stretched by hours.
    pub cap: Duration,
}

impl Default for TtlJitter {
    fn default() -> Self {
        TtlJitter::new(0.10, Duration::from_secs(180))
    }
}

impl TtlJitter {
    pub fn new(fraction: f64, cap: Duration) -> Self {
        TtlJitter { fraction, cap }
    }

    /// `None` when `ttl` is zero; otherwise `Some(now + ttl + jitter)`.
    ///
    /// Also `None` when the sum does not fit in an `Instant` (a TTL of
    /// centuries): such an entry is, for every practical purpose, immortal.
    pub fn expiry(&self, now: Instant, ttl: Duration, rng: &mut fastrand::Rng) -> Option<Instant> {
        if ttl.is_zero() {
            return None;
        }
        let max_extra_nanos = u64::try_from(self.max_extra(ttl).as_nanos()).unwrap_or(u64::MAX);
        let extra = Duration::from_nanos(rng.u64(0..=max_extra_nanos));
        now.checked_add(ttl.checked_add(extra)?)
    }

    /// The largest extra [`TtlJitter::expiry`] may add to `ttl`.
    ///
    /// The fields are public, so this tolerates any `fraction`: negative or
    /// NaN disables jitter instead of panicking, and an extra too large to
    /// represent is held to `cap`.
    pub fn max_extra(&self, ttl: Duration) -> Duration {
        let scaled_secs = ttl.as_secs_f64() * self.fraction;
        if scaled_secs.is_nan() || scaled_secs <= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(scaled_secs).map_or(self.cap, |extra| extra.min(self.cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded_rng() -> fastrand::Rng {
        fastrand::Rng::with_seed(0x5eed)
    }

    #[test]
    fn default_is_ten_percent_capped_at_three_minutes() {
        let jitter = TtlJitter::default();
        assert_eq!(jitter.fraction, 0.10);
        assert_eq!(jitter.cap, Duration::from_secs(180));
    }

    #[test]
    fn zero_ttl_means_no_expiry() {
        let mut rng = seeded_rng();
        let t0 = Instant::now();
        assert_eq!(
            TtlJitter::default().expiry(t0, Duration::ZERO, &mut rng),
            None
        );
    }

    #[test]
    fn extra_stays_within_fraction_of_short_ttls() {
        let jitter = TtlJitter::default();
        let mut rng = seeded_rng();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        assert_eq!(jitter.max_extra(ttl), Duration::from_secs(6));
        for _ in 0..10_000 {
            let expires_at = jitter
                .expiry(t0, ttl, &mut rng)
                .expect("non-zero ttl expires");
            let extra = expires_at - (t0 + ttl);
            assert!(
                extra <= Duration::from_secs(6),
                "extra {extra:?} beyond 10% of 60 s"
            );
        }
    }

    #[test]
    fn cap_bounds_the_extra_for_long_ttls() {
        let jitter = TtlJitter::default();
        let mut rng = seeded_rng();
        let t0 = Instant::now();
        let day = Duration::from_secs(86_400);
        assert_eq!(jitter.max_extra(day), Duration::from_secs(180));
        for _ in 0..10_000 {
            let expires_at = jitter
                .expiry(t0, day, &mut rng)
                .expect("non-zero ttl expires");
            assert!(expires_at >= t0 + day, "jitter must never shorten a TTL");
            assert!(expires_at <= t0 + day + Duration::from_secs(180));
        }
    }

    #[test]
    fn spread_is_not_degenerate() {
        let jitter = TtlJitter::default();
        let mut rng = seeded_rng();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(100);
        let extras: Vec<Duration> = (0..10_000)
            .map(|_| jitter.expiry(t0, ttl, &mut rng).expect("expires") - (t0 + ttl))
            .collect();
        let min = extras.iter().min().copied().unwrap_or_default();
        let max = extras.iter().max().copied().unwrap_or_default();
        let mean_secs = extras.iter().map(Duration::as_secs_f64).sum::<f64>() / extras.len() as f64;
        // Uniform on [0, 10 s]: the sample should reach near both ends and
        // centre near 5 s.
        assert!(min < Duration::from_millis(100), "min extra {min:?}");
        assert!(max > Duration::from_millis(9_900), "max extra {max:?}");
        assert!((4.8..5.2).contains(&mean_secs), "mean extra {mean_secs} s");
        let mut distinct = extras.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() > 9_000,
            "only {} distinct extras",
            distinct.len()
        );
    }

    #[test]
    fn nonsense_fractions_disable_jitter_instead_of_panicking() {
        let ttl = Duration::from_secs(10);
        let cap = Duration::from_secs(180);
        for fraction in [0.0, -1.0, f64::NAN, f64::NEG_INFINITY] {
            assert_eq!(
                TtlJitter::new(fraction, cap).max_extra(ttl),
                Duration::ZERO,
                "{fraction}"
            );
        }
        assert_eq!(TtlJitter::new(f64::INFINITY, cap).max_extra(ttl), cap);
        assert_eq!(TtlJitter::new(1e300, cap).max_extra(ttl), cap);
        let mut rng = seeded_rng();
        let t0 = Instant::now();
        assert_eq!(
            TtlJitter::new(0.0, cap).expiry(t0, ttl, &mut rng),
            Some(t0 + ttl)
        );
    }

    #[test]
    fn absurd_ttl_saturates_to_no_expiry() {
        let mut rng = seeded_rng();
        let t0 = Instant::now();
        let jitter = TtlJitter::new(0.1, Duration::MAX);
        assert_eq!(jitter.expiry(t0, Duration::MAX, &mut rng), None);
    }
}
