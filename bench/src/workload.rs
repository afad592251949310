//! Workload generation: which operation to send next and on which key.
//!
//! Keys are indices `0..keys`; the wire name is `<key-prefix><index>` (see
//! `http.rs`). Under `zipf:S` the rank-1 (hottest) key is index 0, rank 2 is
//! index 1, and so on: the server hashes keys onto cores, so the position of
//! hot keys in the index space does not matter to it.
//!
//! The Zipf sampler is the rejection-inversion method of Hörmann and
//! Derflinger ("Rejection-inversion to generate variates from monotone
//! discrete distributions", 1996), as used by Apache Commons RNG: O(1) time
//! and memory per sample for any key-space size, no precomputed table, and
//! exact for every exponent `S > 0` (`S = 0` is plain uniform).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Errors in workload parameters.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WorkloadError {
    #[error("key space must hold at least one key")]
    EmptyKeySpace,
    #[error("zipf exponent must be a finite number >= 0, got {0}")]
    BadExponent(f64),
    #[error("unknown key distribution {0:?}: expected `uniform` or `zipf:S` (e.g. zipf:0.99)")]
    UnknownDistribution(String),
}

/// The two cache operations the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Read,
    Write,
}

impl OpKind {
    /// Dense index for per-operation arrays.
    pub const fn index(self) -> usize {
        match self {
            OpKind::Read => 0,
            OpKind::Write => 1,
        }
    }

    pub const ALL: [OpKind; 2] = [OpKind::Read, OpKind::Write];

    pub const fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
        }
    }
}

/// One request to send: an operation on a key index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub key: u64,
}

/// How keys are drawn from the key space.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum KeyDistribution {
    Uniform,
    Zipf { exponent: f64 },
}

impl FromStr for KeyDistribution {
    type Err = WorkloadError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("uniform") {
            return Ok(KeyDistribution::Uniform);
        }
        let Some(rest) = s.strip_prefix("zipf:").or_else(|| s.strip_prefix("ZIPF:")) else {
            return Err(WorkloadError::UnknownDistribution(s.to_string()));
        };
        let exponent: f64 = rest
            .trim()
            .parse()
            .map_err(|_| WorkloadError::UnknownDistribution(s.to_string()))?;
        if !exponent.is_finite() || exponent < 0.0 {
            return Err(WorkloadError::BadExponent(exponent));
        }
        Ok(KeyDistribution::Zipf { exponent })
    }
}

impl fmt::Display for KeyDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDistribution::Uniform => write!(f, "uniform"),
            KeyDistribution::Zipf { exponent } => write!(f, "zipf:{exponent}"),
        }
    }
}

/// Zipf sampler over ranks `1..=n` with P(k) proportional to `1 / k^exponent`.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    n_int: u64,
    exponent: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    s: f64,
}

impl Zipf {
    pub fn new(n: u64, exponent: f64) -> Result<Self, WorkloadError> {
        if n == 0 {
            return Err(WorkloadError::EmptyKeySpace);
        }
        if !exponent.is_finite() || exponent <= 0.0 {
            return Err(WorkloadError::BadExponent(exponent));
        }
        let mut z = Zipf {
            n: n as f64,
            n_int: n,
            exponent,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            s: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(z.n + 0.5);
        z.s = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        Ok(z)
    }

    /// A rank in `1..=n`.
    #[inline]
    pub fn sample(&self, rng: &mut fastrand::Rng) -> u64 {
        loop {
            let u = self.h_integral_n + rng.f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            // Saturating float->int cast; clamp into the valid rank range.
            let k = ((x + 0.5) as u64).clamp(1, self.n_int);
            let kf = k as f64;
            if kf - x <= self.s || u >= self.h_integral(kf + 0.5) - self.h(kf) {
                return k;
            }
        }
    }

    /// H(x) = (x^(1-e) - 1) / (1 - e), or ln(x) for e = 1, computed stably.
    #[inline]
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.exponent) * log_x) * log_x
    }

    /// h(x) = x^-e
    #[inline]
    fn h(&self, x: f64) -> f64 {
        (-self.exponent * x.ln()).exp()
    }

    #[inline]
    fn h_integral_inverse(&self, x: f64) -> f64 {
        let mut t = x * (1.0 - self.exponent);
        if t < -1.0 {
            // Guards against rounding pushing t below the domain of log1p.
            t = -1.0;
        }
        (helper1(t) * x).exp()
    }
}

/// log1p(x) / x, accurate near 0.
#[inline]
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// expm1(x) / x, accurate near 0.
#[inline]
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x))
    }
}

/// Draws key indices in `0..keys`.
#[derive(Debug, Clone)]
pub enum KeySampler {
    Uniform { keys: u64 },
    Zipf(Zipf),
}

impl KeySampler {
    pub fn new(keys: u64, dist: KeyDistribution) -> Result<Self, WorkloadError> {
        if keys == 0 {
            return Err(WorkloadError::EmptyKeySpace);
        }
        match dist {
            KeyDistribution::Uniform => Ok(KeySampler::Uniform { keys }),
            KeyDistribution::Zipf { exponent: 0.0 } => Ok(KeySampler::Uniform { keys }),
            KeyDistribution::Zipf { exponent } => Ok(KeySampler::Zipf(Zipf::new(keys, exponent)?)),
        }
    }

    #[inline]
    pub fn sample(&self, rng: &mut fastrand::Rng) -> u64 {
        match self {
            KeySampler::Uniform { keys } => rng.u64(0..*keys),
            KeySampler::Zipf(z) => z.sample(rng) - 1,
        }
    }
}

/// The random operation stream of one worker: reads with probability
/// `read_ratio`, otherwise writes, keys from the sampler.
#[derive(Debug, Clone)]
pub struct OpGenerator {
    rng: fastrand::Rng,
    sampler: KeySampler,
    read_ratio: f64,
}

impl OpGenerator {
    pub fn new(seed: u64, sampler: KeySampler, read_ratio: f64) -> Self {
        OpGenerator {
            rng: fastrand::Rng::with_seed(seed),
            sampler,
            read_ratio,
        }
    }

    #[inline]
    pub fn next_op(&mut self) -> Op {
        let kind = if self.rng.f64() < self.read_ratio {
            OpKind::Read
        } else {
            OpKind::Write
        };
        Op {
            kind,
            key: self.sampler.sample(&mut self.rng),
        }
    }
}

/// Derives independent per-worker seeds from the run seed (SplitMix64).
pub fn derive_seed(seed: u64, worker: u64) -> u64 {
    let mut z = seed ^ worker.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The contiguous key range worker `w` of `workers` writes during prefill.
pub fn prefill_range(keys: u64, worker: usize, workers: usize) -> std::ops::Range<u64> {
    let w = worker as u128;
    let n = workers.max(1) as u128;
    let k = keys as u128;
    let start = (k * w / n) as u64;
    let end = (k * (w + 1) / n) as u64;
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn harmonic(n: u64, s: f64) -> f64 {
        (1..=n).map(|k| 1.0 / (k as f64).powf(s)).sum()
    }

    #[test]
    fn parses_distributions() {
        assert_eq!(
            "uniform".parse::<KeyDistribution>(),
            Ok(KeyDistribution::Uniform)
        );
        assert_eq!(
            "zipf:0.99".parse::<KeyDistribution>(),
            Ok(KeyDistribution::Zipf { exponent: 0.99 })
        );
        assert!(matches!(
            "zipf:-1".parse::<KeyDistribution>(),
            Err(WorkloadError::BadExponent(_))
        ));
        assert!(matches!(
            "zipf:x".parse::<KeyDistribution>(),
            Err(WorkloadError::UnknownDistribution(_))
        ));
        assert!(matches!(
            "normal".parse::<KeyDistribution>(),
            Err(WorkloadError::UnknownDistribution(_))
        ));
    }

    fn rank_frequencies(n: u64, s: f64, samples: usize) -> Vec<u64> {
        let sampler = KeySampler::new(n, KeyDistribution::Zipf { exponent: s }).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = vec![0u64; n as usize];
        for _ in 0..samples {
            counts[sampler.sample(&mut rng) as usize] += 1;
        }
        counts
    }

    #[test]
    fn zipf_rank_frequencies_match_theory() {
        for &(n, s) in &[(1000u64, 0.99f64), (1000, 1.0), (100, 1.5), (10_000, 0.5)] {
            let samples = 400_000;
            let counts = rank_frequencies(n, s, samples);
            let h = harmonic(n, s);
            for rank in [1u64, 2, 10] {
                let expected = samples as f64 / (rank as f64).powf(s) / h;
                let got = counts[(rank - 1) as usize] as f64;
                let rel = (got - expected).abs() / expected;
                // 5 sigma of a binomial count, plus 1% for good measure.
                let tol = 5.0 * expected.sqrt() / expected + 0.01;
                assert!(
                    rel < tol,
                    "n={n} s={s} rank {rank}: got {got}, expected {expected:.0} (rel {rel:.4})"
                );
            }
            // Frequencies must be non-increasing in rank, on average.
            let head: u64 = counts[..(n as usize / 10)].iter().sum();
            let tail: u64 = counts[(n as usize * 9 / 10)..].iter().sum();
            assert!(head > tail);
        }
    }

    #[test]
    fn zipf_exponent_zero_is_uniform() {
        let n = 100u64;
        let samples = 200_000usize;
        let sampler = KeySampler::new(n, KeyDistribution::Zipf { exponent: 0.0 }).unwrap();
        let mut rng = fastrand::Rng::with_seed(11);
        let mut counts = vec![0u64; n as usize];
        for _ in 0..samples {
            counts[sampler.sample(&mut rng) as usize] += 1;
        }
        let expected = samples as f64 / n as f64;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        // 99 degrees of freedom: the 99.9th percentile of chi^2 is ~148.
        assert!(chi2 < 148.0, "chi2 {chi2}");
        // A tiny exponent must be close to uniform as well (and not blow up).
        let counts = rank_frequencies(n, 1e-9, samples);
        let max = *counts.iter().max().unwrap() as f64;
        let min = *counts.iter().min().unwrap() as f64;
        assert!(max / min < 1.3, "min {min} max {max}");
    }

    #[test]
    fn keys_stay_in_range() {
        for dist in [
            KeyDistribution::Uniform,
            KeyDistribution::Zipf { exponent: 0.99 },
            KeyDistribution::Zipf { exponent: 3.0 },
            KeyDistribution::Zipf { exponent: 0.01 },
        ] {
            for n in [1u64, 2, 17, 1_000_000] {
                let sampler = KeySampler::new(n, dist).unwrap();
                let mut rng = fastrand::Rng::with_seed(n);
                let mut seen_last = false;
                for _ in 0..20_000 {
                    let k = sampler.sample(&mut rng);
                    assert!(k < n, "{dist} n={n}: {k}");
                    seen_last |= k == n - 1;
                }
                if n <= 2 {
                    assert!(seen_last, "{dist} n={n} never drew the last key");
                }
            }
        }
        assert_eq!(
            KeySampler::new(0, KeyDistribution::Uniform).unwrap_err(),
            WorkloadError::EmptyKeySpace
        );
    }

    #[test]
    fn read_ratio_is_respected() {
        let sampler = KeySampler::new(10, KeyDistribution::Uniform).unwrap();
        for ratio in [0.0, 0.8, 1.0] {
            let mut g = OpGenerator::new(3, sampler.clone(), ratio);
            let reads = (0..100_000)
                .filter(|_| g.next_op().kind == OpKind::Read)
                .count();
            let got = reads as f64 / 100_000.0;
            assert!((got - ratio).abs() < 0.01, "ratio {ratio}: {got}");
        }
    }

    #[test]
    fn prefill_ranges_cover_key_space_exactly() {
        for keys in [0u64, 1, 7, 100, 1_000_003] {
            for workers in 1..6 {
                let mut next = 0;
                for w in 0..workers {
                    let r = prefill_range(keys, w, workers);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, keys);
            }
        }
    }

    #[test]
    fn derived_seeds_differ() {
        let a = derive_seed(1, 0);
        let b = derive_seed(1, 1);
        let c = derive_seed(2, 0);
        assert!(a != b && a != c && b != c);
    }
}
