//! Time plans: the open-loop send schedule and the reporting intervals.
//!
//! Open loop (`--rate`): each worker owns a share of the total rate and
//! schedules its k-th request at `start + floor(k * period)`. Latency is
//! taken from that *intended* time, not from the moment a busy connection
//! finally got to send it, so a server stall shows up in the percentiles
//! instead of silently slowing the client down (coordinated omission, as
//! wrk2 corrects it). The maths is exact integer arithmetic on nanoseconds,
//! so `due_count` and `intended` agree at every boundary and never drift.

/// The constant-rate schedule of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    start_ns: u64,
    /// Requests per `den` nanoseconds: period = den / num ns.
    num: u128,
    den: u128,
}

impl Schedule {
    /// A worker's schedule: `rate` requests/s in total, of which this worker
    /// sends the fraction `share_num / share_den`. `None` if the share is
    /// zero (nothing to send) or the rate is not a positive number.
    pub fn new(start_ns: u64, rate: f64, share_num: u64, share_den: u64) -> Option<Schedule> {
        if !(rate.is_finite() && rate > 0.0) || share_num == 0 || share_den == 0 {
            return None;
        }
        // Millirequests per second keep fractional rates (e.g. 0.5/s) exact enough.
        let milli = (rate * 1000.0).round() as u128;
        if milli == 0 {
            return None;
        }
        Some(Schedule {
            start_ns,
            num: milli * share_num as u128,
            den: 1_000_000_000_000u128 * share_den as u128,
        })
    }

    /// Intended send time of request `k` (0-based).
    #[inline]
    pub fn intended(&self, k: u64) -> u64 {
        let offset = (k as u128 * self.den) / self.num;
        self.start_ns
            .saturating_add(offset.min(u64::MAX as u128) as u64)
    }

    /// How many requests are due at `now`: the number of `k` with
    /// `intended(k) <= now`.
    #[inline]
    pub fn due_count(&self, now: u64) -> u64 {
        if now < self.start_ns {
            return 0;
        }
        let d = (now - self.start_ns) as u128;
        // intended(k) <= d  <=>  k*den/num < d+1  <=>  k < (d+1)*num/den
        let count = ((d + 1) * self.num).div_ceil(self.den);
        count.min(u64::MAX as u128) as u64
    }

    /// Mean period in nanoseconds.
    #[cfg(test)]
    pub fn period_ns(&self) -> f64 {
        self.den as f64 / self.num as f64
    }
}

/// One reporting interval: progress lines, `--hdr-log` entries and the
/// warmup/measurement split all follow these boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalSpan {
    pub start_ns: u64,
    pub end_ns: u64,
    pub warmup: bool,
}

/// Splits `[start, start + warmup + duration)` into steps of `step_ns`,
/// with a boundary exactly at the end of the warmup; the last warmup and
/// the last measured interval may be shorter than a step.
pub fn interval_plan(
    start_ns: u64,
    warmup_ns: u64,
    duration_ns: u64,
    step_ns: u64,
) -> Vec<IntervalSpan> {
    let step = step_ns.max(1);
    let mut out = Vec::new();
    let mut push_range = |from: u64, to: u64, warmup: bool| {
        let mut t = from;
        while t < to {
            let end = (t + step).min(to);
            out.push(IntervalSpan {
                start_ns: t,
                end_ns: end,
                warmup,
            });
            t = end;
        }
    };
    let measure_start = start_ns + warmup_ns;
    push_range(start_ns, measure_start, true);
    push_range(measure_start, measure_start + duration_ns, false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_are_evenly_spaced() {
        // 1000 req/s over 4 workers of equal share: 250/s each, 4 ms apart.
        let s = Schedule::new(1_000, 1000.0, 1, 4).unwrap();
        assert_eq!(s.intended(0), 1_000);
        assert_eq!(s.intended(1), 1_000 + 4_000_000);
        assert_eq!(s.intended(250), 1_000 + 1_000_000_000);
        assert!((s.period_ns() - 4e6).abs() < 1e-6);
    }

    #[test]
    fn due_count_matches_intended_at_every_boundary() {
        for &(rate, num, den) in &[
            (1000.0, 1u64, 1u64),
            (3.0, 1, 7),
            (123_456.7, 3, 5),
            (1e9, 1, 1),
            (5e9, 2, 3),
        ] {
            let s = Schedule::new(500, rate, num, den).unwrap();
            assert_eq!(s.due_count(499), 0);
            let mut rng = fastrand::Rng::with_seed(5);
            for _ in 0..10_000 {
                let k = rng.u64(0..10_000_000);
                let t = s.intended(k);
                // Request k is due at its intended time ...
                assert!(s.due_count(t) > k, "rate {rate}: k {k}");
                // ... and not a nanosecond before it.
                if t > s.intended(k.saturating_sub(1)) || k == 0 {
                    assert!(s.due_count(t - 1) <= k, "rate {rate}: k {k}");
                }
            }
        }
    }

    #[test]
    fn long_runs_do_not_drift() {
        // 3 req/s: intended times are k/3 s exactly (floor in ns).
        let s = Schedule::new(0, 3.0, 1, 1).unwrap();
        assert_eq!(s.intended(3), 1_000_000_000);
        assert_eq!(s.intended(3 * 3600 * 24), 24 * 3600 * 1_000_000_000);
        assert_eq!(s.due_count(3600 * 1_000_000_000), 3 * 3600 + 1);
    }

    #[test]
    fn shares_add_up_to_total_rate() {
        // 3 workers with 1, 2 and 2 of 5 connections: counts over 10 s sum to the total.
        let total: u64 = [1u64, 2, 2]
            .iter()
            .map(|&n| {
                Schedule::new(0, 1000.0, n, 5)
                    .unwrap()
                    .due_count(10_000_000_000 - 1)
            })
            .sum();
        assert!((9_997..=10_003).contains(&total), "{total}");
    }

    #[test]
    fn rejects_nonsense() {
        assert!(Schedule::new(0, 0.0, 1, 1).is_none());
        assert!(Schedule::new(0, -5.0, 1, 1).is_none());
        assert!(Schedule::new(0, f64::NAN, 1, 1).is_none());
        assert!(Schedule::new(0, 10.0, 0, 1).is_none());
    }

    #[test]
    fn interval_plan_splits_warmup_and_measurement() {
        let s = 1_000_000_000u64;
        let plan = interval_plan(100, 1_500_000_000, 2 * s + 250_000_000, s);
        let spans: Vec<(u64, u64, bool)> = plan
            .iter()
            .map(|p| (p.start_ns, p.end_ns, p.warmup))
            .collect();
        assert_eq!(
            spans,
            vec![
                (100, 100 + s, true),
                (100 + s, 100 + 1_500_000_000, true),
                (100 + 1_500_000_000, 100 + 2_500_000_000, false),
                (100 + 2_500_000_000, 100 + 3_500_000_000, false),
                (100 + 3_500_000_000, 100 + 3_750_000_000, false),
            ]
        );
        assert!(interval_plan(0, 0, 0, s).is_empty());
        assert_eq!(interval_plan(0, 0, 3 * s, s).len(), 3);
    }
}
