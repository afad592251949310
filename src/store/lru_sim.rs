//! How well the shard's segment CLOCK approximates LRU: hit ratios of the
//! real [`Shard`] and of an exact LRU on the same zipf(0.99) trace, with the
//! cache holding 10% and 50% of the key space; a miss fills the key, as a
//! read-through cache would.
//!
//! The default run (debug test builds, a few seconds) uses 1M requests over
//! 100K keys, the same shape at a tenth of the size. The full trace of 10M
//! requests over 1M keys takes a release build:
//! `NEXUSCACHE_LRU_SIM_FULL=1 cargo test --release --lib store::lru_sim -- --nocapture`.

use std::time::Instant;

use bytes::Bytes;

use super::Shard;

const ZIPF_EXPONENT: f64 = 0.99;
const KEY_BYTES: usize = 8;
const VALUE: &[u8] = b"0123456789abcdef";

/// Samples ranks `0..n` with probability proportional to `1 / (rank + 1)^s`
/// by binary search in the cumulative distribution.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, exponent: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|rank| {
                total += 1.0 / ((rank + 1) as f64).powf(exponent);
                total
            })
            .collect::<Vec<_>>();
        Zipf { cumulative }
    }

    fn sample(&self, rng: &mut fastrand::Rng) -> u32 {
        let total = self.cumulative[self.cumulative.len() - 1];
        let target = rng.f64() * total;
        self.cumulative
            .partition_point(|&c| c <= target)
            .min(self.cumulative.len() - 1) as u32
    }
}

/// Exact LRU over integer keys: a doubly linked list threaded through
/// arrays indexed by key.
struct ExactLru {
    prev: Vec<u32>,
    next: Vec<u32>,
    cached: Vec<bool>,
    head: u32,
    tail: u32,
    len: usize,
    capacity: usize,
}

const NONE: u32 = u32::MAX;

impl ExactLru {
    fn new(keys: usize, capacity: usize) -> ExactLru {
        ExactLru {
            prev: vec![NONE; keys],
            next: vec![NONE; keys],
            cached: vec![false; keys],
            head: NONE,
            tail: NONE,
            len: 0,
            capacity,
        }
    }

    fn unlink(&mut self, key: u32) {
        let (prev, next) = (self.prev[key as usize], self.next[key as usize]);
        if prev == NONE {
            self.head = next;
        } else {
            self.next[prev as usize] = next;
        }
        if next == NONE {
            self.tail = prev;
        } else {
            self.prev[next as usize] = prev;
        }
    }

    fn push_front(&mut self, key: u32) {
        self.prev[key as usize] = NONE;
        self.next[key as usize] = self.head;
        if self.head == NONE {
            self.tail = key;
        } else {
            self.prev[self.head as usize] = key;
        }
        self.head = key;
    }

    /// True on a hit; a miss inserts the key.
    fn access(&mut self, key: u32) -> bool {
        if self.cached[key as usize] {
            self.unlink(key);
            self.push_front(key);
            return true;
        }
        if self.len == self.capacity {
            let victim = self.tail;
            self.unlink(victim);
            self.cached[victim as usize] = false;
            self.len -= 1;
        }
        self.cached[key as usize] = true;
        self.push_front(key);
        self.len += 1;
        false
    }
}

fn key_of(rank: u32) -> [u8; KEY_BYTES] {
    let mut key = [b'0'; KEY_BYTES];
    let mut rest = rank;
    for digit in key.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    key
}

/// Hit ratios (shard, exact LRU) on `requests` zipf requests over `keys`
/// keys with room for `cached` entries.
fn hit_ratios(zipf: &Zipf, keys: usize, requests: usize, cached: usize, seed: u64) -> (f64, f64) {
    let now = Instant::now();
    let value = Bytes::from_static(VALUE);
    let probe = Shard::new(u64::MAX / 4);
    let charge = probe.charge_for(KEY_BYTES, VALUE.len(), false);
    let mut shard = Shard::new(charge * cached as u64);
    let mut lru = ExactLru::new(keys, cached);
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut shard_hits, mut lru_hits) = (0u64, 0u64);
    for _ in 0..requests {
        let rank = zipf.sample(&mut rng);
        let key = key_of(rank);
        if shard.get(&key, now).is_some() {
            shard_hits += 1;
        } else {
            shard
                .set(&key, value.clone(), None, false, now)
                .expect("an entry fits");
        }
        lru_hits += u64::from(lru.access(rank));
    }
    assert!(
        shard.len() <= cached,
        "shard holds more entries than the budget allows"
    );
    (
        shard_hits as f64 / requests as f64,
        lru_hits as f64 / requests as f64,
    )
}

#[test]
fn segment_clock_is_within_one_point_of_exact_lru_on_zipf() {
    let full = std::env::var_os("NEXUSCACHE_LRU_SIM_FULL").is_some_and(|v| v == "1");
    let (keys, requests) = if full {
        (1_000_000, 10_000_000)
    } else {
        (100_000, 1_000_000)
    };
    let zipf = Zipf::new(keys, ZIPF_EXPONENT);
    for share in [10, 50] {
        let cached = keys * share / 100;
        let (clock, lru) = hit_ratios(&zipf, keys, requests, cached, 0x5eed + share as u64);
        println!(
            "zipf {ZIPF_EXPONENT}, {requests} requests over {keys} keys, cache {share}% of keys: \
             segment CLOCK hit ratio {:.2}%, exact LRU {:.2}% (difference {:+.2} points)",
            clock * 100.0,
            lru * 100.0,
            (clock - lru) * 100.0
        );
        assert!(
            (clock - lru).abs() <= 0.01,
            "cache {share}%: CLOCK {clock:.4} vs LRU {lru:.4}"
        );
    }
}

#[test]
fn exact_lru_reference_evicts_the_least_recent() {
    let mut lru = ExactLru::new(10, 2);
    assert!(!lru.access(1));
    assert!(!lru.access(2));
    assert!(lru.access(1));
    assert!(!lru.access(3), "evicts 2, the least recent");
    assert!(lru.access(1));
    assert!(!lru.access(2));
    assert!(!lru.access(3), "3 went when 2 came back");
}

#[test]
fn zipf_sampler_favours_low_ranks() {
    let zipf = Zipf::new(1000, ZIPF_EXPONENT);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut counts = [0u32; 1000];
    for _ in 0..100_000 {
        counts[zipf.sample(&mut rng) as usize] += 1;
    }
    // P(rank 0) = 1 / H(1000, 0.99), about 0.13; rank 1 about half of it.
    assert!(
        (11_000..15_000).contains(&counts[0]),
        "rank 0: {}",
        counts[0]
    );
    assert!((5_000..8_000).contains(&counts[1]), "rank 1: {}", counts[1]);
    assert!(counts[999] < 100, "rank 999: {}", counts[999]);
}
