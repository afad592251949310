//! Which data core of a node owns a key.
//!
//! The ring (see [`super::ring`]) decides which node owns a key; this module
//! decides which of that node's cores does. The two decisions must be
//! independent: a node owns keys whose ring hash falls in its arcs, so if the
//! core were derived from the same hash, every key of that node would share
//! high bits and land on a few cores. Using xxh3 with a different seed gives
//! an unrelated 64-bit value for the same key.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed for the per-node core hash. It must differ from the ring's seed
/// (`ring::RING_SEED`) so the core choice is independent of ring position.
/// Changing it reshuffles keys between the cores of a node, which is only
/// safe on a node restart (each core's shard starts empty anyway).
const CORE_SEED: u64 = 0xC03E_5EED_9E37_79B9;

/// Which data core of this node owns `key`, in `0..cores`.
///
/// Hashes `key` with xxh3 (seed independent of the ring's) and maps the
/// 64-bit hash onto `0..cores` with Lemire's multiply-shift reduction
/// (`(hash * cores) >> 64`): no division on the hot path and no modulo bias.
///
/// `cores` should be at least 1; `cores == 0` is treated as 1 and yields 0
/// rather than panicking, because the value comes from configuration.
#[inline]
pub fn core_of(key: &[u8], cores: usize) -> usize {
    let hash = xxh3_64_with_seed(key, CORE_SEED);
    reduce(hash, cores.max(1))
}

/// Lemire's fast range reduction: maps a uniform `u64` onto `0..range`.
///
/// The product of a 64-bit hash and `range` fits in 128 bits; its high 64
/// bits are `floor(hash * range / 2^64)`, which is `< range` for every hash.
#[inline]
fn reduce(hash: u64, range: usize) -> usize {
    // usize -> u64 is lossless on every supported target (<= 64-bit); the
    // result is < range, so the cast back is lossless too.
    ((u128::from(hash) * range as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::ring::{Member, Ring};

    const KEYS: usize = 100_000;

    fn random_keys(seed: u64, count: usize) -> Vec<Vec<u8>> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..count)
            .map(|_| format!("user:{:016x}", rng.u64(..)).into_bytes())
            .collect()
    }

    /// Asserts every bucket holds `expected * (1 ± tolerance)` keys.
    fn assert_even(counts: &[usize], tolerance: f64, what: &str) {
        let total: usize = counts.iter().sum();
        let expected = total as f64 / counts.len() as f64;
        for (bucket, &count) in counts.iter().enumerate() {
            let ratio = count as f64 / expected;
            assert!(
                (1.0 - tolerance..=1.0 + tolerance).contains(&ratio),
                "{what}: bucket {bucket} has {count} keys, {ratio:.3}x of even ({counts:?})"
            );
        }
    }

    #[test]
    fn result_is_always_in_range() {
        let keys = random_keys(1, 10_000);
        for cores in [1, 2, 3, 5, 7, 8, 16, 63, 64, 1000, usize::MAX] {
            for key in &keys {
                assert!(core_of(key, cores) < cores, "cores={cores}");
            }
        }
        // Degenerate keys.
        assert!(core_of(b"", 4) < 4);
        assert!(core_of(&[0u8; 1024], 4) < 4);
    }

    #[test]
    fn reduce_covers_the_extremes() {
        assert_eq!(reduce(0, 8), 0);
        assert_eq!(reduce(u64::MAX, 8), 7);
        assert_eq!(reduce(u64::MAX, 1), 0);
        assert_eq!(reduce(1 << 63, 2), 1);
        assert_eq!(reduce((1 << 63) - 1, 2), 0);
    }

    #[test]
    fn one_core_owns_everything_and_zero_is_treated_as_one() {
        for key in random_keys(2, 1000) {
            assert_eq!(core_of(&key, 1), 0);
            assert_eq!(core_of(&key, 0), 0);
        }
    }

    #[test]
    fn is_deterministic() {
        for key in random_keys(3, 1000) {
            assert_eq!(core_of(&key, 8), core_of(&key, 8));
        }
    }

    #[test]
    fn spreads_evenly_over_cores() {
        for seed in [10, 11, 12] {
            let keys = random_keys(seed, KEYS);
            for cores in [2, 3, 4, 8] {
                let mut counts = vec![0usize; cores];
                for key in &keys {
                    counts[core_of(key, cores)] += 1;
                }
                assert_even(&counts, 0.10, &format!("seed {seed}, {cores} cores"));
            }
        }
    }

    #[test]
    fn sequential_keys_spread_evenly() {
        // Real workloads use structured keys ("item:1", "item:2", ...), not
        // random ones.
        let mut counts = [0usize; 4];
        for n in 0..KEYS {
            counts[core_of(format!("item:{n}").as_bytes(), 4)] += 1;
        }
        assert_even(&counts, 0.10, "sequential keys");
    }

    #[test]
    fn is_independent_of_ring_position() {
        let names = ["node-a", "node-b", "node-c"];
        let members = names
            .iter()
            .map(|&name| Member {
                name: name.into(),
                http_addr: format!("{name}:8080"),
                grpc_addr: format!("{name}:9090"),
                cores: 2,
                resp_addr: None,
            })
            .collect();
        let ring = Ring::new(members, 50);
        let keys = random_keys(20, KEYS);
        for node in 0..ring.len() {
            for cores in [2, 4] {
                let mut counts = vec![0usize; cores];
                for key in &keys {
                    if ring.owner_index(key) == Some(node) {
                        counts[core_of(key, cores)] += 1;
                    }
                }
                assert!(counts.iter().sum::<usize>() > KEYS / 5);
                assert_even(&counts, 0.10, &format!("node {node}, {cores} cores"));
            }
        }
    }
}
