//! Rate limits for warnings that a flood can repeat many times a second
//! (accept failures, membership records past the ring cap): at most one
//! line per period, carrying how many were suppressed since the last one.
//! Pure: the caller passes the time in.

use std::time::{Duration, Instant};

/// One warning stream: call [`LogLimiter::hit`] every time the event
/// happens and log only when it returns `Some`.
#[derive(Debug, Clone)]
pub struct LogLimiter {
    period: Duration,
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// At most one line per `period`.
    pub fn new(period: Duration) -> LogLimiter {
        LogLimiter {
            period,
            last_logged: None,
            suppressed: 0,
        }
    }

    /// Record one event at `now`. `Some(n)`: log it now, mentioning the `n`
    /// events suppressed since the previous line. `None`: stay quiet.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last_logged
            .is_none_or(|last| now.saturating_duration_since(last) >= self.period);
        if due {
            self.last_logged = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Exponential backoff between retries of a failing operation, reset by a
/// success: `start`, then doubling up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(start: Duration, max: Duration) -> Backoff {
        Backoff {
            start,
            max,
            next: start,
        }
    }

    /// The delay to wait now; the following one is twice as long (bounded).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// After a success: start again from the shortest delay.
    pub fn reset(&mut self) {
        self.next = self.start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_suppressed_count() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::new(Duration::from_secs(1));
        assert_eq!(limiter.hit(t0), Some(0));
        for ms in 1..1000 {
            assert_eq!(limiter.hit(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(limiter.hit(t0 + Duration::from_millis(1000)), Some(999));
        assert_eq!(limiter.hit(t0 + Duration::from_millis(1500)), None);
        assert_eq!(limiter.hit(t0 + Duration::from_millis(2100)), Some(1));
        // A clock that goes backwards never panics and never floods.
        assert_eq!(limiter.hit(t0), None);
    }

    #[test]
    fn backoff_doubles_up_to_its_bound_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(100));
        let delays: Vec<u64> = (0..10)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 100, 100, 100]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(1));
    }
}
