//! Fragmentation under churn, through the real server: with
//! `--max-memory 256MiB`, random writes of values from 10 B to 64 KiB
//! (log-uniform, so both small inline entries and large out-of-line ones
//! churn) over a key space several times what fits, mixed with reads of
//! random keys. The node's RSS must stay at most 1.15 x `--max-memory` plus
//! its RSS when empty, and the hit ratio must not drift.
//!
//! The default run lasts 45 s (the test binary's server is a debug build,
//! so that is some two to three times `--max-memory` of writes).
//! `NEXUSCACHE_CHURN_SECS=600` gives the 10-minute variant (run with
//! `--no-capture` to see its figures).

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_MEMORY: u64 = 256 << 20;
const RSS_FACTOR: f64 = 1.15;
const MIN_VALUE: f64 = 10.0;
const MAX_VALUE: f64 = 65_536.0;
/// Mean of the log-uniform sizes is about 7.4 KiB, so some 34,000 entries
/// fit in the main shards: the key space is six times that.
const KEYS: u64 = 200_000;
/// Writes (and reads) sent before waiting for their answers.
const PIPELINE: usize = 32;
/// Reads per pipelined batch of writes.
const READS_PER_BATCH: usize = 8;
const WRITERS: usize = 2;

#[derive(Default)]
struct Totals {
    written_bytes: AtomicU64,
    writes: AtomicU64,
    reads: AtomicU64,
    hits: AtomicU64,
}

/// One connection writing random sizes to random keys and reading random
/// keys, until `stop`.
fn churn(port: u16, seed: u64, stop: Arc<AtomicBool>, totals: Arc<Totals>) {
    let mut rng = Rng(seed | 1);
    let payload = vec![b'c'; MAX_VALUE as usize];
    let mut conn = Conn::connect(port);
    let (ln_min, ln_max) = (MIN_VALUE.ln(), MAX_VALUE.ln());
    while !stop.load(Ordering::Relaxed) {
        let mut raw = Vec::new();
        let mut written = 0;
        for _ in 0..PIPELINE {
            let len = (ln_min + rng.unit() * (ln_max - ln_min)).exp() as usize;
            let len = len.clamp(MIN_VALUE as usize, MAX_VALUE as usize);
            let key = rng.below(KEYS);
            raw.extend(build_request(
                "PUT",
                &format!("/v1/keys/churn-{key}"),
                &[],
                &payload[..len],
            ));
            written += len as u64;
        }
        for _ in 0..READS_PER_BATCH {
            let key = rng.below(KEYS);
            raw.extend(build_request(
                "GET",
                &format!("/v1/keys/churn-{key}"),
                &[],
                b"",
            ));
        }
        conn.send(&raw);
        let responses = conn.read_responses(PIPELINE + READS_PER_BATCH);
        for r in &responses[..PIPELINE] {
            assert_eq!(r.status, 200, "PUT: {}", r.describe());
        }
        let hits = responses[PIPELINE..]
            .iter()
            .filter(|r| {
                assert!(r.status == 200 || r.status == 404, "GET: {}", r.describe());
                r.status == 200
            })
            .count();
        totals.written_bytes.fetch_add(written, Ordering::Relaxed);
        totals.writes.fetch_add(PIPELINE as u64, Ordering::Relaxed);
        totals
            .reads
            .fetch_add(READS_PER_BATCH as u64, Ordering::Relaxed);
        totals.hits.fetch_add(hits as u64, Ordering::Relaxed);
    }
}

/// xorshift64*: enough randomness for sizes and keys, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Window {
    at: Duration,
    rss: u64,
    written: u64,
    hit_ratio: f64,
    items: f64,
}

#[test]
fn rss_stays_bounded_and_hit_ratio_stable_under_size_churn() {
    let duration = Duration::from_secs(
        std::env::var("NEXUSCACHE_CHURN_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(45),
    );
    let n = Node::start(&["--max-memory", "256MiB", "--max-value-bytes", "64KiB"]);
    let _g = n.log_on_panic();
    let empty_rss = rss_kib(n.pid()) * 1024;
    let bound = (RSS_FACTOR * MAX_MEMORY as f64) as u64 + empty_rss;

    let stop = Arc::new(AtomicBool::new(false));
    let totals = Arc::new(Totals::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (stop, totals, port) = (stop.clone(), totals.clone(), n.port);
            std::thread::spawn(move || churn(port, 0x5eed + i as u64, stop, totals))
        })
        .collect();

    let start = Instant::now();
    let mut windows = Vec::new();
    let mut peak_rss = 0;
    let mut last = (0u64, 0u64);
    let mut next_window = start + duration / 20;
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(200));
        if writers.iter().any(|w| w.is_finished()) {
            break;
        }
        let rss = rss_kib(n.pid()) * 1024;
        peak_rss = peak_rss.max(rss);
        if Instant::now() >= next_window {
            next_window += duration / 20;
            let (reads, hits) = (
                totals.reads.load(Ordering::Relaxed),
                totals.hits.load(Ordering::Relaxed),
            );
            let hit_ratio = (hits - last.1) as f64 / (reads - last.0).max(1) as f64;
            last = (reads, hits);
            windows.push(Window {
                at: start.elapsed(),
                rss,
                written: totals.written_bytes.load(Ordering::Relaxed),
                hit_ratio,
                items: n.metrics().sum("nexuscache_cache_items", &[]),
            });
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer panicked");
    }
    let m = n.metrics();
    let size = m.sum("nexuscache_cache_size_bytes", &[]);
    let evictions = m.sum("nexuscache_evictions_total", &[]);
    let written = totals.written_bytes.load(Ordering::Relaxed);
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "churn {:.0} s: {} writes ({:.0} MiB of values, {:.1} x --max-memory), {} reads; \
         RSS empty {:.1} MiB, peak {:.1} MiB (bound {:.1} MiB = 1.15 x 256 MiB + empty); \
         cache_size_bytes {:.1} MiB, evictions {evictions}",
        start.elapsed().as_secs_f64(),
        totals.writes.load(Ordering::Relaxed),
        mib(written),
        written as f64 / MAX_MEMORY as f64,
        totals.reads.load(Ordering::Relaxed),
        mib(empty_rss),
        mib(peak_rss),
        mib(bound),
        size / 1048576.0,
    );
    for w in &windows {
        println!(
            "  {:6.1} s: RSS {:7.1} MiB, written {:8.0} MiB, items {:6}, hit ratio {:.3}",
            w.at.as_secs_f64(),
            mib(w.rss),
            mib(w.written),
            w.items,
            w.hit_ratio
        );
    }

    assert!(
        written > 2 * MAX_MEMORY,
        "only {:.0} MiB written: too little churn to judge",
        mib(written)
    );
    assert!(
        peak_rss <= bound,
        "RSS peaked at {:.1} MiB, above 1.15 x --max-memory + {:.1} MiB empty",
        mib(peak_rss),
        mib(empty_rss)
    );
    assert!(
        size <= MAX_MEMORY as f64,
        "cache_size_bytes {size} over --max-memory"
    );
    assert!(evictions > 0.0, "nothing evicted: the key space fits");
    // Stable: once the cache has been full and evicting for a while, the
    // hit ratios of the first and the second half of what remains agree.
    let settled: Vec<&Window> = windows
        .iter()
        .filter(|w| w.written > MAX_MEMORY * 5 / 4)
        .collect();
    assert!(
        settled.len() >= 4,
        "too few windows after warm-up: {}",
        settled.len()
    );
    let half = settled.len() / 2;
    let mean = |ws: &[&Window]| ws.iter().map(|w| w.hit_ratio).sum::<f64>() / ws.len() as f64;
    let (early, late) = (mean(&settled[..half]), mean(&settled[half..]));
    println!("hit ratio after warm-up: first half {early:.3}, second half {late:.3}");
    assert!(
        early > 0.05,
        "hit ratio {early:.3}: the cache holds almost nothing"
    );
    assert!(
        (early - late).abs() <= 0.03,
        "hit ratio drifted from {early:.3} to {late:.3}"
    );
}
