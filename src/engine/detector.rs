//! [`AutoHot`]: which remote keys are read often enough to keep a copy of.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Counting window: the threshold is "reads per second".
const WINDOW: Duration = Duration::from_secs(1);

/// Counts forwarded reads per key in one-second windows. A key that reaches
/// the threshold within a window earns an automatic hot copy, as
/// groupcache's hot cache does for keys it keeps fetching from peers.
///
/// The table is cleared at each new window and holds at most `max_keys`
/// keys, so a scan over millions of distinct keys costs bounded memory
/// (new keys are simply not tracked once the table is full until the
/// window ends; a really hot key is back within a second).
#[derive(Debug)]
pub struct AutoHot {
    threshold: u32,
    max_keys: usize,
    window_start: Option<Instant>,
    counts: HashMap<Box<[u8]>, u32>,
}

impl AutoHot {
    /// `threshold == 0` turns detection off.
    pub fn new(threshold: u32, max_keys: usize) -> AutoHot {
        AutoHot {
            threshold,
            max_keys,
            window_start: None,
            counts: HashMap::new(),
        }
    }

    /// Counts one forwarded read of `key` at `now`; true when the key has
    /// reached the threshold within the current window, i.e. this read's
    /// answer should be kept as a hot copy.
    pub fn record(&mut self, key: &[u8], now: Instant) -> bool {
        if self.threshold == 0 {
            return false;
        }
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < WINDOW => {}
            _ => {
                self.counts.clear();
                self.window_start = Some(now);
            }
        }
        let full = self.counts.len() >= self.max_keys;
        let count = match self.counts.get_mut(key) {
            Some(count) => count,
            None if full => return false,
            None => self.counts.entry(key.into()).or_insert(0),
        };
        *count = count.saturating_add(1);
        *count >= self.threshold
    }

    /// Keys tracked in the current window.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_becomes_hot_at_the_threshold_within_a_window() {
        let t0 = Instant::now();
        let mut d = AutoHot::new(3, 100);
        assert!(!d.record(b"k", t0));
        assert!(!d.record(b"other", t0));
        assert!(!d.record(b"k", t0 + Duration::from_millis(100)));
        assert!(d.record(b"k", t0 + Duration::from_millis(200)));
        assert!(d.record(b"k", t0 + Duration::from_millis(300)));
        assert!(!d.record(b"other", t0 + Duration::from_millis(300)));
    }

    #[test]
    fn counts_restart_each_window() {
        let t0 = Instant::now();
        let mut d = AutoHot::new(2, 100);
        assert!(!d.record(b"k", t0));
        // The second read comes a window later: the count starts over.
        assert!(!d.record(b"k", t0 + WINDOW));
        assert!(d.record(b"k", t0 + WINDOW + Duration::from_millis(1)));
        assert_eq!(d.tracked(), 1);
    }

    #[test]
    fn zero_threshold_is_off() {
        let mut d = AutoHot::new(0, 100);
        for _ in 0..1000 {
            assert!(!d.record(b"k", Instant::now()));
        }
        assert_eq!(d.tracked(), 0);
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let mut d = AutoHot::new(1, 2);
        assert!(d.record(b"a", t0));
        assert!(d.record(b"b", t0));
        // Full: a new key is not tracked, known keys still count.
        assert!(!d.record(b"c", t0));
        assert!(d.record(b"a", t0));
        assert_eq!(d.tracked(), 2);
        // A new window makes room again.
        assert!(d.record(b"c", t0 + WINDOW));
    }
}
