//! One core's cache shard: a map from key to value with per-entry expiry, a
//! hard byte budget and CLOCK-like segment eviction that approximates LRU.
//!
//! Every core owns exactly one [`Shard`] and is the only code that touches
//! it; other cores reach it by message. That single owner is why the shard is
//! plain data: no locks, no atomics, no interior mutability, and every
//! operation takes `&mut self`. It is also pure (no clock reads on the
//! request path: callers pass `now`), so it can be tested and benchmarked on
//! its own.
//!
//! Layout, chosen for a small per-entry footprint (after Pelikan's
//! segcache):
//! - Items are appended to large segments (up to 256 KiB, slices of one
//!   anonymous mapping per shard, see `segment.rs`): a 7-byte header (flags, key length, value
//!   length), an 8-byte expiry only when the entry expires, then the key
//!   and the value. No per-item pointers, no per-item allocation.
//! - Entries whose key and value exceed [`INLINE_PAYLOAD_LIMIT`] keep them
//!   in one exact-size `Bytes` of their own (the segment holds the header
//!   and an index into the shard's out-of-line table), so a read hands the value to
//!   another core or to the network without a copy. Smaller values are
//!   copied out on a read: at most 4 KiB, about what a pointer chase and a
//!   reference count cost, and it keeps segments free to be rewritten.
//! - `table: HashTable<u64>` maps a key to its item. A slot packs the
//!   item's address (segment id and offset) in its low bits and the top
//!   bits of the key's hash (the tag) above them, so the table grows and
//!   rehashes from its own memory and filters most non-matching candidates
//!   before a key is compared.
//! - Segments form a FIFO. Eviction recycles the oldest segment in place:
//!   items read since they were written (their accessed bit) are
//!   kept, moved to the front of the segment with the bit cleared, and the
//!   segment becomes the newest, open for writes; unread ones are evicted.
//!   This is CLOCK over segments, an approximation of LRU (see the
//!   simulation test in `lru_sim`). Deleted, overwritten and expired items
//!   leave holes that the same recycling compacts, and a segment whose items
//!   are all gone hands its pages back to the kernel at once.
//! - Each segment carries at most one segment's worth of charged bytes,
//!   out-of-line values included, so recycling one evicts at most that much
//!   and the segments in use never hold more than the budget plus an eighth
//!   plus two segments (the eighth because a segment is closed when the
//!   next entry would overfill it: with entries of up to 64 KiB the last
//!   few KiB of its weight stay unused, and without the slack that, not
//!   the byte budget, would limit what the shard holds).

pub mod ttl;

mod segment;

#[cfg(test)]
mod lru_sim;

pub use ttl::TtlJitter;

use std::fmt;
use std::mem::size_of;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use segment::{
    header_len, ItemHeader, Region, ACCESSED, EXPIRES, HOT, LIVE, NEVER, OUT_OF_LINE, REPLICATED,
};

/// Bytes charged per entry on top of `key.len() + value.len()`, for an
/// inline entry without expiry.
///
/// It estimates what an entry really costs, so that a shard's byte budget
/// tracks the process's resident memory (64-bit Linux):
/// - the item header in its segment (7 bytes: flags, key and value lengths);
/// - its share of the hash table: a `u64` slot plus one control byte per
///   bucket, with buckets kept between 7/16 and 7/8 full, i.e. about 9
///   bytes at 5/8 occupancy (`INDEX_BYTES_PER_ENTRY`, 14 bytes).
///
/// Total: 7 + 14 = 21 bytes. An entry with an expiry adds
/// [`EXPIRY_OVERHEAD`] (8); an out-of-line entry (key + value above
/// [`INLINE_PAYLOAD_LIMIT`]) adds [`OUT_OF_LINE_OVERHEAD`] (88).
pub const ENTRY_OVERHEAD: usize = segment::FIXED_HEADER_BYTES + INDEX_BYTES_PER_ENTRY;

/// The expiry tick stored with an entry that expires.
pub const EXPIRY_OVERHEAD: usize = segment::EXPIRY_BYTES;

/// What an out-of-line entry costs besides its header: its slot in the
/// out-of-line table (40 bytes), malloc's chunk header and rounding on the
/// key+value block (16 on average), and the reference-count block `bytes`
/// allocates the first time the value is handed to a reader (a 32-byte
/// chunk).
pub const OUT_OF_LINE_OVERHEAD: usize = size_of::<OutOfLine>() + 16 + 32;

/// Entries whose key plus value exceed this many bytes are stored out of
/// line (see the module documentation). Also limited to a quarter of the
/// segment so that little of a segment is lost at its end.
pub const INLINE_PAYLOAD_LIMIT: usize = 4096;

/// Hash-table bytes per entry: `(size_of::<u64>() + 1 control byte)`
/// divided by an average bucket occupancy of 5/8.
const INDEX_BYTES_PER_ENTRY: usize = (size_of::<u64>() + 1) * 8 / 5;

/// Largest and smallest segment; a shard aims at [`SEGMENTS_PER_SHARD`]
/// segments so that recycling one evicts a small share of the cache. The
/// largest is what one recycle walks: 256 KiB of 100-byte entries is some
/// 2,000 table updates, a pause of a few hundred microseconds on the core
/// (1 MiB segments made it about 2 ms at p99.99 of writes under eviction).
const MAX_SEGMENT_BYTES: usize = 256 << 10;
const MIN_SEGMENT_BYTES: usize = 4096;
const SEGMENTS_PER_SHARD: u64 = 32;
/// Segments may hold the budget plus `1 / SEGMENT_SLACK_DIVISOR` of it (see
/// the module documentation).
const SEGMENT_SLACK_DIVISOR: u64 = 8;

/// "No segment": the ends of the segment FIFO.
const NIL: u32 = u32::MAX;

/// Finite expiries and `now` are clamped below [`NEVER`], so "live" is
/// simply `now_tick < expires_tick`.
const LATEST_FINITE_TICK: i64 = NEVER - 1;

/// Spreads a hash tag over the 64 bits hashbrown reads: its low bits pick
/// the bucket and its top 7 bits are the in-group filter byte. Multiplying
/// by an odd constant is a bijection, keeps the low bits exactly as random
/// as the tag's, and mixes every tag bit into the top bits.
const TAG_SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

/// Counters and gauges of one shard, merged across cores for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub items: u64,
    /// What the live entries are charged (see [`ENTRY_OVERHEAD`]); never
    /// above `capacity_bytes`.
    pub bytes: u64,
    pub capacity_bytes: u64,
    pub hits: u64,
    /// Includes reads that found only an expired entry.
    pub misses: u64,
    /// Live entries removed to make room for a write.
    pub evictions: u64,
    /// Entries removed because their expiry had passed, however that was
    /// noticed: a read, a write or delete over them, a recycled segment, or
    /// a sweep.
    pub expired: u64,
}

/// A hit returned by [`Shard::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// A copy of a small value, or a reference to a large one's own
    /// allocation (cloning it is a reference-count bump).
    pub value: Bytes,
    pub hot: bool,
    /// `None` when the entry never expires.
    pub expires_at: Option<Instant>,
}

/// Copies of an entry that other nodes may hold (see [`Shard::copies`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copies {
    None,
    /// Handed out to a node that keeps an automatic copy
    /// ([`Shard::mark_replicated`]).
    Automatic,
    /// Written hot: every node holds one.
    Hot,
}

/// What [`Shard::set`] did besides storing the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOutcome {
    /// A live entry under the same key was overwritten.
    pub replaced: bool,
    /// Other entries evicted to make room.
    pub evicted: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("entry of {size} bytes cannot fit in a shard of {capacity} bytes")]
    EntryTooLarge { size: u64, capacity: u64 },
}

/// The key and value of an out-of-line entry, in one exact-size allocation:
/// one block instead of two, and copying into it guarantees the entry holds
/// no more memory than it is charged for (a caller's `Bytes` may be a small
/// window into a large network buffer). Empty when the slot is free.
struct OutOfLine {
    key_then_value: Bytes,
    key_len: u32,
}

/// One segment's bookkeeping (its bytes are in the shard's [`Region`]) and
/// its place in the FIFO.
struct Segment {
    /// In the FIFO; false while the id waits in `unused_segments`.
    in_use: bool,
    /// Bytes written from the start: items, live or not.
    used: u32,
    /// Items written, live or not.
    items: u32,
    live_items: u32,
    /// Charged bytes of the items written, live or not: a segment is closed
    /// for writes once this reaches the shard's segment weight.
    weight: u64,
    /// Towards the newer end; [`NIL`] at the tail.
    next: u32,
    /// Towards the older end; [`NIL`] at the head.
    prev: u32,
    /// Bumped whenever items move or the segment is emptied, so the sweep
    /// knows its position in it is stale.
    generation: u32,
}

impl Segment {
    fn unused() -> Segment {
        Segment {
            in_use: false,
            used: 0,
            items: 0,
            live_items: 0,
            weight: 0,
            next: NIL,
            prev: NIL,
            generation: 0,
        }
    }
}

/// Where the next [`Shard::sweep_expired`] resumes.
#[derive(Default, Clone, Copy)]
struct SweepCursor {
    segment: u32,
    offset: u32,
    generation: u32,
}

/// How an entry is laid out: decided from its sizes alone.
#[derive(Clone, Copy)]
struct Layout {
    out_of_line: bool,
    /// Bytes in the segment.
    item_len: usize,
    charge: u64,
}

fn table_hash(tag: u64) -> u64 {
    tag.wrapping_mul(TAG_SPREAD)
}

fn saturating_nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

/// What an entry with these sizes is charged, and where it is stored, in a
/// shard with segments of `segment_bytes`.
fn layout_for(key_len: usize, value_len: usize, expires: bool, segment_bytes: usize) -> Layout {
    let header = header_len(expires);
    let payload = key_len.saturating_add(value_len);
    let inline_len = header.saturating_add(payload);
    let out_of_line = payload > INLINE_PAYLOAD_LIMIT
        || inline_len > segment_bytes / 4
        || key_len > usize::from(u16::MAX)
        || u32::try_from(value_len).is_err();
    let mut charge = (payload as u64).saturating_add((header + INDEX_BYTES_PER_ENTRY) as u64);
    if out_of_line {
        charge = charge.saturating_add(OUT_OF_LINE_OVERHEAD as u64);
    }
    Layout {
        out_of_line,
        item_len: if out_of_line { header } else { inline_len },
        charge,
    }
}

/// Segment size for a shard of `capacity` bytes: a power of two between
/// [`MIN_SEGMENT_BYTES`] and [`MAX_SEGMENT_BYTES`], about a
/// [`SEGMENTS_PER_SHARD`]th of the capacity.
fn segment_bytes_for(capacity: u64) -> usize {
    let target = capacity / SEGMENTS_PER_SHARD;
    let floor = if target == 0 {
        1
    } else {
        1u64 << (63 - target.leading_zeros())
    };
    (floor as usize).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES)
}

#[derive(Default)]
struct Counters {
    hits: u64,
    misses: u64,
    evictions: u64,
    expired: u64,
}

/// One core's cache. See the module documentation.
pub struct Shard {
    table: HashTable<u64>,
    /// Mapped when the first segment is opened.
    region: Option<Region>,
    segments: Vec<Segment>,
    /// Ids of released segments (no pages), reused before new ids.
    unused_segments: Vec<u32>,
    /// Oldest segment: the next to be recycled.
    fifo_head: u32,
    /// Newest segment: the one open for writes.
    fifo_tail: u32,
    segments_in_fifo: u32,
    /// Segments that may be in use at once: the budget plus an eighth,
    /// divided by the segment weight, plus one.
    max_segments: u32,
    segment_bytes: usize,
    segment_shift: u32,
    /// Charged bytes a segment takes before it is closed for writes: the
    /// segment size, or less in a shard too small for
    /// [`SEGMENTS_PER_SHARD`] segments (there eviction works item by item).
    segment_weight: u64,
    /// Low bits of a table slot that hold the item's address.
    address_bits: u32,
    out_of_line: Vec<OutOfLine>,
    free_out_of_line: Vec<u32>,
    bytes: u64,
    capacity_bytes: u64,
    /// Per-shard random seed. It defeats crafted colliding keys, and it
    /// keeps this table's hash independent of the hash that routed the key
    /// to this core: with the same function, every key here would share its
    /// low bits and crowd a fraction of the buckets.
    hash_seed: u64,
    /// Origin of the expiry ticks (nanoseconds, signed, so any instant
    /// works).
    epoch: Instant,
    sweep: SweepCursor,
    counters: Counters,
    /// Keys of evicted entries that had copies on other nodes (hot or
    /// replicated), for the owner to invalidate; only collected when
    /// enabled with [`Shard::report_evicted_copies`].
    evicted_with_copies: Option<Vec<Box<[u8]>>>,
}

impl fmt::Debug for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Entries are left out on purpose: a shard may hold millions.
        f.debug_struct("Shard")
            .field("stats", &self.stats())
            .field("segment_bytes", &self.segment_bytes)
            .field("segments_in_use", &self.segments_in_fifo)
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// An empty shard whose entries are charged at most `capacity_bytes`
    /// (see [`ENTRY_OVERHEAD`]). Address space for the segments is reserved
    /// at the first write; pages are backed as entries arrive.
    pub fn new(capacity_bytes: u64) -> Shard {
        let segment_bytes = segment_bytes_for(capacity_bytes);
        let segment_weight =
            (segment_bytes as u64).min((capacity_bytes / SEGMENTS_PER_SHARD).max(1));
        let max_segments = capacity_bytes
            .saturating_add(capacity_bytes / SEGMENT_SLACK_DIVISOR)
            .div_ceil(segment_weight)
            .saturating_add(1)
            .min(u64::from(NIL - 1)) as u32;
        let segment_shift = segment_bytes.trailing_zeros();
        let id_bits = (u32::BITS - (max_segments.max(2) - 1).leading_zeros()).max(1);
        Shard {
            table: HashTable::new(),
            region: None,
            segments: Vec::new(),
            unused_segments: Vec::new(),
            fifo_head: NIL,
            fifo_tail: NIL,
            segments_in_fifo: 0,
            max_segments,
            segment_bytes,
            segment_shift,
            segment_weight,
            address_bits: segment_shift + id_bits,
            out_of_line: Vec::new(),
            free_out_of_line: Vec::new(),
            bytes: 0,
            capacity_bytes,
            hash_seed: fastrand::u64(..),
            epoch: Instant::now(),
            sweep: SweepCursor::default(),
            counters: Counters::default(),
            evicted_with_copies: None,
        }
    }

    /// Collect the keys of evicted entries that have copies elsewhere
    /// (see [`Shard::take_evicted_with_copies`]). Off by default: a shard
    /// that nobody drains must not accumulate them.
    pub fn report_evicted_copies(mut self) -> Shard {
        self.evicted_with_copies = Some(Vec::new());
        self
    }

    /// Keys evicted since the last call whose entries were hot or
    /// replicated: their copies on other nodes must be invalidated, since
    /// the next write will find no entry telling it copies exist.
    pub fn take_evicted_with_copies(&mut self) -> Vec<Box<[u8]>> {
        self.evicted_with_copies
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// What an entry of these sizes is charged in this shard (what
    /// `nexuscache_cache_size_bytes` counts for it): `key + value +`
    /// [`ENTRY_OVERHEAD`], plus [`EXPIRY_OVERHEAD`] when it expires, plus
    /// [`OUT_OF_LINE_OVERHEAD`] when it is stored out of line.
    pub fn charge_for(&self, key_len: usize, value_len: usize, expires: bool) -> u64 {
        layout_for(key_len, value_len, expires, self.segment_bytes).charge
    }

    /// Which copies other nodes may hold of the live entry for `key`. Does
    /// not touch the recency bits or the counters.
    pub fn copies(&self, key: &[u8], now: Instant) -> Copies {
        match self.find_live(key, now) {
            Some(header) if header.flags & HOT != 0 => Copies::Hot,
            Some(header) if header.flags & REPLICATED != 0 => Copies::Automatic,
            _ => Copies::None,
        }
    }

    /// The live entry for `key`, without touching the recency bits or the
    /// counters (for background work that must not look like a read).
    pub fn peek(&self, key: &[u8], now: Instant) -> Option<Found> {
        let address = self.find(self.hash_of(key), key)?;
        let header = self.header_at(address);
        header
            .is_live_at(self.tick(now))
            .then(|| self.found(address, header))
    }

    /// Whether a live entry for `key` is held. No recency or counter
    /// effect.
    pub fn contains(&self, key: &[u8], now: Instant) -> bool {
        self.find_live(key, now).is_some()
    }

    /// Record that a copy of the live entry for `key` was handed to another
    /// node. Returns false when there is no live entry.
    pub fn mark_replicated(&mut self, key: &[u8], now: Instant) -> bool {
        let Some(address) = self.find(self.hash_of(key), key) else {
            return false;
        };
        if !self.header_at(address).is_live_at(self.tick(now)) {
            return false;
        }
        self.add_flags(address, REPLICATED);
        true
    }

    /// Every live entry written hot: `(key, value, expires_at)`. A full
    /// scan, for the rare moment a node joins and must receive them.
    pub fn hot_entries(&self, now: Instant) -> Vec<(Box<[u8]>, Bytes, Option<Instant>)> {
        let now_tick = self.tick(now);
        let mut hot = Vec::new();
        self.for_each_live_item(|address, header| {
            if header.flags & HOT != 0 && header.is_live_at(now_tick) {
                let found = self.found(address, header);
                hot.push((
                    self.key_at(address, header).into(),
                    found.value,
                    found.expires_at,
                ));
            }
        });
        hot
    }

    /// Remove every entry for which `drop(key, hot)` is true. A full scan,
    /// for membership changes. Returns how many entries went.
    pub fn remove_where(&mut self, mut drop: impl FnMut(&[u8], bool) -> bool) -> usize {
        let mut doomed = Vec::new();
        self.for_each_live_item(|address, header| {
            let key = self.key_at(address, header);
            if drop(key, header.flags & HOT != 0) {
                doomed.push((address, self.hash_of(key)));
            }
        });
        for &(address, hash) in &doomed {
            self.remove(address, hash);
        }
        doomed.len()
    }

    /// Drop every entry (memory is released), keeping the cumulative
    /// counters so metrics stay monotonic. Returns how many entries went.
    pub fn clear(&mut self) -> usize {
        let dropped = self.len();
        let counters = std::mem::take(&mut self.counters);
        let reports = self.evicted_with_copies.take().map(|_| Vec::new());
        *self = Shard::new(self.capacity_bytes);
        self.counters = counters;
        self.evicted_with_copies = reports;
        dropped
    }

    /// Hit: marks the entry accessed (it survives its segment's next
    /// recycle), counts a hit and returns its value. An expired entry is
    /// removed (its bytes leave the accounting and `expired` is counted) and
    /// reported as a miss. A read never extends a TTL.
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<Found> {
        let hash = self.hash_of(key);
        let Some(address) = self.find(hash, key) else {
            self.counters.misses += 1;
            return None;
        };
        let header = self.header_at(address);
        if !header.is_live_at(self.tick(now)) {
            self.remove(address, hash);
            self.counters.expired += 1;
            self.counters.misses += 1;
            return None;
        }
        if header.flags & ACCESSED == 0 {
            self.add_flags(address, ACCESSED);
        }
        self.counters.hits += 1;
        Some(self.found(address, header))
    }

    /// Inserts or replaces `key`. `expires_at: None` means no expiry.
    ///
    /// Recycles the oldest segments (evicting what was not read since it
    /// was written) until the new entry's charge fits. An entry larger than
    /// the whole capacity is refused and the shard is left exactly as it
    /// was, including any old value under `key`. An entry whose expiry is
    /// not after `now` is dead on arrival: it is not stored (it would only
    /// push out live entries) and any old value under `key` is removed, as a
    /// client overwriting with an expired entry intends.
    ///
    /// The key and value are copied (into a segment, or into one new
    /// allocation when large), so `value` may be a slice of a larger buffer
    /// without keeping that buffer alive.
    pub fn set(
        &mut self,
        key: &[u8],
        value: Bytes,
        expires_at: Option<Instant>,
        hot: bool,
        now: Instant,
    ) -> Result<SetOutcome, StoreError> {
        let expires_tick = expires_at.map_or(NEVER, |at| self.tick(at));
        let layout = layout_for(
            key.len(),
            value.len(),
            expires_tick != NEVER,
            self.segment_bytes,
        );
        if layout.charge > self.capacity_bytes {
            return Err(StoreError::EntryTooLarge {
                size: layout.charge,
                capacity: self.capacity_bytes,
            });
        }
        let now_tick = self.tick(now);
        let hash = self.hash_of(key);

        let mut outcome = SetOutcome::default();
        if let Some(address) = self.find(hash, key) {
            outcome.replaced = self.header_at(address).is_live_at(now_tick);
            if !outcome.replaced {
                self.counters.expired += 1;
            }
            self.remove(address, hash);
        }
        if expires_tick <= now_tick {
            return Ok(outcome);
        }

        outcome.evicted = self.make_room(layout, now_tick);

        let mut flags = LIVE;
        if hot {
            flags |= HOT;
        }
        if expires_tick != NEVER {
            flags |= EXPIRES;
        }
        let header = if layout.out_of_line {
            let mut key_then_value = Vec::with_capacity(key.len() + value.len());
            key_then_value.extend_from_slice(key);
            key_then_value.extend_from_slice(&value);
            let entry = OutOfLine {
                key_then_value: Bytes::from(key_then_value),
                key_len: key.len() as u32,
            };
            let index = match self.free_out_of_line.pop() {
                Some(index) => {
                    self.out_of_line[index as usize] = entry;
                    index
                }
                None => {
                    self.out_of_line.push(entry);
                    (self.out_of_line.len() - 1) as u32
                }
            };
            ItemHeader {
                flags: flags | OUT_OF_LINE,
                key_len: 0,
                word: index,
                expires_tick,
            }
        } else {
            ItemHeader {
                flags,
                key_len: key.len() as u16,
                word: value.len() as u32,
                expires_tick,
            }
        };

        let id = self.fifo_tail;
        let segment = &mut self.segments[id as usize];
        let offset = segment.used as usize;
        if let Some(region) = self.region.as_mut() {
            let bytes = region.segment_mut(id);
            header.write(bytes, offset);
            if !layout.out_of_line {
                let key_start = offset + header.key_start();
                bytes[key_start..key_start + key.len()].copy_from_slice(key);
                let value_start = offset + header.value_start();
                bytes[value_start..value_start + value.len()].copy_from_slice(&value);
            }
        }
        segment.used += layout.item_len as u32;
        segment.items += 1;
        segment.live_items += 1;
        segment.weight += layout.charge;
        let address = self.address(id, offset);
        let slot = self.slot(hash, address);
        let address_bits = self.address_bits;
        self.table
            .insert_unique(table_hash(hash >> address_bits), slot, |&slot| {
                table_hash(slot >> address_bits)
            });
        self.bytes += layout.charge;
        Ok(outcome)
    }

    /// Removes `key`. Returns true if a live (non-expired) entry was
    /// removed; an expired one is removed too but counted as `expired`.
    pub fn delete(&mut self, key: &[u8], now: Instant) -> bool {
        let hash = self.hash_of(key);
        let Some(address) = self.find(hash, key) else {
            return false;
        };
        let was_live = self.header_at(address).is_live_at(self.tick(now));
        self.remove(address, hash);
        if !was_live {
            self.counters.expired += 1;
        }
        was_live
    }

    /// Periodic reclamation of expired entries nobody reads any more.
    ///
    /// Examines at most `max_checks` items (dead ones and empty segments
    /// included, so the cost of a call is bounded by `max_checks` alone),
    /// resuming where the previous call stopped: a large shard is swept
    /// across many short calls instead of in one long pause, and repeated
    /// calls cover every entry. Returns how many entries were removed; they
    /// are also counted in `expired`.
    pub fn sweep_expired(&mut self, now: Instant, max_checks: usize) -> u64 {
        if self.segments.is_empty() {
            return 0;
        }
        let now_tick = self.tick(now);
        // About one lap per call: every item, plus a step per segment
        // (an empty one costs a check, and a segment emptied by this sweep
        // is passed once more).
        let lap: usize = self
            .segments
            .iter()
            .map(|segment| segment.items as usize + 1)
            .sum();
        let mut checks = max_checks.min(lap);
        let mut removed = 0;
        while checks > 0 {
            let mut cursor = self.sweep;
            if cursor.segment as usize >= self.segments.len() {
                cursor = SweepCursor::default();
                cursor.generation = self.segments[0].generation;
            }
            let segment = &self.segments[cursor.segment as usize];
            if segment.generation != cursor.generation {
                // Items moved or went since the cursor was placed: rescan
                // this segment from its start.
                cursor.offset = 0;
                cursor.generation = segment.generation;
            }
            if !segment.in_use || cursor.offset >= segment.used {
                if segment.items == 0 {
                    checks -= 1;
                }
                let next = (cursor.segment + 1) % self.segments.len() as u32;
                self.sweep = SweepCursor {
                    segment: next,
                    offset: 0,
                    generation: self.segments[next as usize].generation,
                };
                continue;
            }
            checks -= 1;
            let address = self.address(cursor.segment, cursor.offset as usize);
            let header = self.header_at(address);
            cursor.offset += header.len() as u32;
            self.sweep = cursor;
            if header.flags & LIVE != 0 && !header.is_live_at(now_tick) {
                let hash = self.hash_of(self.key_at(address, header));
                self.remove(address, hash);
                removed += 1;
            }
        }
        self.counters.expired += removed;
        removed
    }

    pub fn stats(&self) -> ShardStats {
        ShardStats {
            items: self.table.len() as u64,
            bytes: self.bytes,
            capacity_bytes: self.capacity_bytes,
            hits: self.counters.hits,
            misses: self.counters.misses,
            evictions: self.counters.evictions,
            expired: self.counters.expired,
        }
    }

    /// Entries held, including expired ones not yet noticed.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    fn hash_of(&self, key: &[u8]) -> u64 {
        xxh3_64_with_seed(key, self.hash_seed)
    }

    fn address(&self, segment: u32, offset: usize) -> u64 {
        (u64::from(segment) << self.segment_shift) | offset as u64
    }

    fn slot(&self, hash: u64, address: u64) -> u64 {
        (hash >> self.address_bits << self.address_bits) | address
    }

    fn address_of(&self, slot: u64) -> u64 {
        slot & ((1u64 << self.address_bits) - 1)
    }

    /// Segment id and offset of an address.
    fn split(&self, address: u64) -> (usize, usize) {
        (
            (address >> self.segment_shift) as usize,
            (address & ((1u64 << self.segment_shift) - 1)) as usize,
        )
    }

    fn segment_bytes_of(&self, segment: usize) -> &[u8] {
        self.region
            .as_ref()
            .map_or(&[], |region| region.segment(segment as u32))
    }

    fn header_at(&self, address: u64) -> ItemHeader {
        let (segment, offset) = self.split(address);
        ItemHeader::read(self.segment_bytes_of(segment), offset)
    }

    fn add_flags(&mut self, address: u64, flags: u8) {
        let (segment, offset) = self.split(address);
        if let Some(region) = self.region.as_mut() {
            region.segment_mut(segment as u32)[offset] |= flags;
        }
    }

    fn key_at(&self, address: u64, header: ItemHeader) -> &[u8] {
        if header.flags & OUT_OF_LINE != 0 {
            let entry = &self.out_of_line[header.word as usize];
            &entry.key_then_value[..entry.key_len as usize]
        } else {
            let (segment, offset) = self.split(address);
            let start = offset + header.key_start();
            &self.segment_bytes_of(segment)[start..start + usize::from(header.key_len)]
        }
    }

    fn found(&self, address: u64, header: ItemHeader) -> Found {
        let value = if header.flags & OUT_OF_LINE != 0 {
            let entry = &self.out_of_line[header.word as usize];
            entry.key_then_value.slice(entry.key_len as usize..)
        } else {
            let (segment, offset) = self.split(address);
            let start = offset + header.value_start();
            Bytes::copy_from_slice(
                &self.segment_bytes_of(segment)[start..start + header.word as usize],
            )
        };
        Found {
            value,
            hot: header.flags & HOT != 0,
            expires_at: self.instant_of(header.expires_tick),
        }
    }

    /// What the item's entry is charged.
    fn charge_of(&self, header: ItemHeader) -> u64 {
        let expires = header.flags & EXPIRES != 0;
        if header.flags & OUT_OF_LINE != 0 {
            let entry = &self.out_of_line[header.word as usize];
            let key_len = entry.key_len as usize;
            layout_for(
                key_len,
                entry.key_then_value.len() - key_len,
                expires,
                self.segment_bytes,
            )
            .charge
        } else {
            layout_for(
                usize::from(header.key_len),
                header.word as usize,
                expires,
                self.segment_bytes,
            )
            .charge
        }
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u64> {
        let tag = hash >> self.address_bits;
        self.table
            .find(table_hash(tag), |&slot| {
                if slot >> self.address_bits != tag {
                    return false;
                }
                let address = self.address_of(slot);
                self.key_at(address, self.header_at(address)) == key
            })
            .map(|&slot| self.address_of(slot))
    }

    fn find_live(&self, key: &[u8], now: Instant) -> Option<ItemHeader> {
        let address = self.find(self.hash_of(key), key)?;
        let header = self.header_at(address);
        header.is_live_at(self.tick(now)).then_some(header)
    }

    /// Calls `visit` with every live item, oldest segment first.
    fn for_each_live_item(&self, mut visit: impl FnMut(u64, ItemHeader)) {
        let mut id = self.fifo_head;
        while id != NIL {
            let bytes = self.segment_bytes_of(id as usize);
            let mut offset = 0;
            while offset < self.segments[id as usize].used as usize {
                let header = ItemHeader::read(bytes, offset);
                if header.flags & LIVE != 0 {
                    visit(self.address(id, offset), header);
                }
                offset += header.len();
            }
            id = self.segments[id as usize].next;
        }
    }

    fn tick(&self, at: Instant) -> i64 {
        match at.checked_duration_since(self.epoch) {
            Some(after) => saturating_nanos(after).min(LATEST_FINITE_TICK),
            // At least -i64::MAX, so negation cannot overflow.
            None => -saturating_nanos(self.epoch.duration_since(at)),
        }
    }

    /// `None` for [`NEVER`], and for a tick too far out to be an `Instant`
    /// (only reachable by clamping centuries-long expiries).
    fn instant_of(&self, tick: i64) -> Option<Instant> {
        if tick == NEVER {
            None
        } else if tick >= 0 {
            self.epoch
                .checked_add(Duration::from_nanos(tick.unsigned_abs()))
        } else {
            self.epoch
                .checked_sub(Duration::from_nanos(tick.unsigned_abs()))
        }
    }

    /// Takes a live item out of the table and the accounting, marks it dead
    /// in its segment, and releases the segment if that was its last live
    /// item.
    fn remove(&mut self, address: u64, hash: u64) {
        let header = self.header_at(address);
        self.bytes -= self.charge_of(header);
        self.forget(address, hash, header);
        let (id, offset) = self.split(address);
        if let Some(region) = self.region.as_mut() {
            region.segment_mut(id as u32)[offset] &= !LIVE;
        }
        let segment = &mut self.segments[id];
        segment.live_items -= 1;
        if segment.live_items == 0 {
            if id as u32 == self.fifo_tail {
                // Still open for writes: start it over instead.
                segment.used = 0;
                segment.items = 0;
                segment.weight = 0;
                segment.generation = segment.generation.wrapping_add(1);
            } else {
                self.release_segment(id as u32);
            }
        }
    }

    /// Drops the table slot and any out-of-line value of an item.
    fn forget(&mut self, address: u64, hash: u64, header: ItemHeader) {
        let address_bits = self.address_bits;
        let mask = (1u64 << address_bits) - 1;
        if let Ok(entry) = self
            .table
            .find_entry(table_hash(hash >> address_bits), |&slot| {
                slot & mask == address
            })
        {
            entry.remove();
        }
        if header.flags & OUT_OF_LINE != 0 {
            self.out_of_line[header.word as usize].key_then_value = Bytes::new();
            self.free_out_of_line.push(header.word);
        }
    }

    /// Unlinks a segment from the FIFO and returns its pages.
    fn release_segment(&mut self, id: u32) {
        self.unlink_segment(id);
        if let Some(region) = self.region.as_mut() {
            region.release(id);
        }
        let segment = &mut self.segments[id as usize];
        let generation = segment.generation.wrapping_add(1);
        *segment = Segment::unused();
        segment.generation = generation;
        self.unused_segments.push(id);
    }

    fn unlink_segment(&mut self, id: u32) {
        let (prev, next) = {
            let segment = &self.segments[id as usize];
            (segment.prev, segment.next)
        };
        if prev == NIL {
            self.fifo_head = next;
        } else {
            self.segments[prev as usize].next = next;
        }
        if next == NIL {
            self.fifo_tail = prev;
        } else {
            self.segments[next as usize].prev = prev;
        }
        let segment = &mut self.segments[id as usize];
        segment.prev = NIL;
        segment.next = NIL;
        self.segments_in_fifo -= 1;
    }

    fn push_segment(&mut self, id: u32) {
        let old_tail = self.fifo_tail;
        {
            let segment = &mut self.segments[id as usize];
            segment.prev = old_tail;
            segment.next = NIL;
        }
        if old_tail == NIL {
            self.fifo_head = id;
        } else {
            self.segments[old_tail as usize].next = id;
        }
        self.fifo_tail = id;
        self.segments_in_fifo += 1;
    }

    /// Maps a new segment and makes it the newest.
    fn open_segment(&mut self) {
        let id = match self.unused_segments.pop() {
            Some(id) => id,
            None => {
                self.segments.push(Segment::unused());
                (self.segments.len() - 1) as u32
            }
        };
        if self.region.is_none() {
            self.region = Some(Region::new(self.max_segments as usize, self.segment_bytes));
        }
        self.segments[id as usize].in_use = true;
        self.push_segment(id);
    }

    fn has_room(&self, id: u32, layout: Layout) -> bool {
        if id == NIL {
            return false;
        }
        let segment = &self.segments[id as usize];
        segment.used as usize + layout.item_len <= self.segment_bytes
            && (segment.items == 0 || segment.weight + layout.charge <= self.segment_weight)
    }

    /// Recycles segments until `layout` fits both the byte budget and the
    /// newest segment. Returns how many entries were evicted.
    fn make_room(&mut self, layout: Layout, now_tick: i64) -> u64 {
        let mut evicted = 0;
        // Each pass clears the accessed bits of what it keeps, so within one
        // lap over the segments everything becomes evictable: bounded.
        while self.bytes + layout.charge > self.capacity_bytes && self.fifo_head != NIL {
            evicted += self.recycle_oldest(now_tick);
        }
        while !self.has_room(self.fifo_tail, layout) {
            if self.segments_in_fifo < self.max_segments {
                self.open_segment();
            } else {
                evicted += self.recycle_oldest(now_tick);
            }
        }
        self.counters.evictions += evicted;
        evicted
    }

    /// The CLOCK step: compacts the oldest segment in place, keeping the
    /// live items read since they were last written or kept (with their
    /// accessed bit cleared) and evicting the rest, then makes it the
    /// newest segment, open for writes. Expired and dead items are dropped
    /// on the way. Returns how many live entries were evicted.
    fn recycle_oldest(&mut self, now_tick: i64) -> u64 {
        let id = self.fifo_head;
        self.unlink_segment(id);
        // Taken out while items move so the table can be updated alongside.
        let Some(mut region) = self.region.take() else {
            return 0;
        };
        let memory = region.segment_mut(id);
        let used = self.segments[id as usize].used as usize;
        let address_bits = self.address_bits;
        let mask = (1u64 << address_bits) - 1;
        let (mut read, mut write) = (0, 0);
        let (mut kept, mut kept_weight, mut evicted, mut expired) = (0u32, 0u64, 0u64, 0u64);
        while read < used {
            let mut header = ItemHeader::read(memory, read);
            let len = header.len();
            if header.flags & LIVE != 0 {
                let key = if header.flags & OUT_OF_LINE != 0 {
                    let entry = &self.out_of_line[header.word as usize];
                    &entry.key_then_value[..entry.key_len as usize]
                } else {
                    let start = read + header.key_start();
                    &memory[start..start + usize::from(header.key_len)]
                };
                let hash = self.hash_of(key);
                let old_address = self.address(id, read);
                let charge = self.charge_of(header);
                let live = header.is_live_at(now_tick);
                if live && header.flags & ACCESSED != 0 {
                    memory.copy_within(read..read + len, write);
                    header.flags &= !ACCESSED;
                    memory[write] = header.flags;
                    let new_address = self.address(id, write);
                    if let Some(slot) = self
                        .table
                        .find_mut(table_hash(hash >> address_bits), |&slot| {
                            slot & mask == old_address
                        })
                    {
                        *slot = (*slot & !mask) | new_address;
                    }
                    write += len;
                    kept += 1;
                    kept_weight += charge;
                } else {
                    if !live {
                        expired += 1;
                    } else {
                        evicted += 1;
                        if header.flags & (HOT | REPLICATED) != 0 {
                            if let Some(keys) = self.evicted_with_copies.as_mut() {
                                keys.push(key.into());
                            }
                        }
                    }
                    self.bytes -= charge;
                    self.forget(old_address, hash, header);
                }
            }
            read += len;
        }
        self.region = Some(region);
        // The newest segment may have been left empty by an earlier
        // recycle in this round: release it rather than leave it behind.
        let tail = self.fifo_tail;
        if tail != NIL && self.segments[tail as usize].live_items == 0 {
            self.release_segment(tail);
        }
        let segment = &mut self.segments[id as usize];
        segment.used = write as u32;
        segment.items = kept;
        segment.live_items = kept;
        segment.weight = kept_weight;
        segment.generation = segment.generation.wrapping_add(1);
        self.push_segment(id);
        self.counters.expired += expired;
        evicted
    }
}
#[cfg(test)]
mod clear_tests {
    use super::*;

    #[test]
    fn clear_drops_entries_and_keeps_counters() {
        let now = Instant::now();
        let mut shard = Shard::new(10_000);
        shard
            .set(b"a", Bytes::from_static(b"1"), None, false, now)
            .unwrap();
        assert!(shard.get(b"a", now).is_some());
        assert!(shard.get(b"b", now).is_none());
        assert_eq!(shard.clear(), 1);
        let stats = shard.stats();
        assert_eq!((stats.items, stats.bytes), (0, 0));
        assert_eq!((stats.hits, stats.misses), (1, 1));
        assert!(shard.get(b"a", now).is_none());
        assert_eq!(shard.capacity_bytes(), 10_000);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn value(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn charge(key: &str, value: &str) -> u64 {
        (key.len() + value.len() + ENTRY_OVERHEAD) as u64
    }

    /// A shard with room for exactly `entries` entries of a 1-byte key and
    /// 1-byte value.
    fn shard_for_small_entries(entries: u64) -> Shard {
        Shard::new(entries * charge("k", "v"))
    }

    fn get_value(shard: &mut Shard, key: &str, now: Instant) -> Option<Bytes> {
        shard.get(key.as_bytes(), now).map(|found| found.value)
    }

    fn set_forever(shard: &mut Shard, key: &str, val: &str, now: Instant) -> SetOutcome {
        shard
            .set(key.as_bytes(), value(val), None, false, now)
            .expect("entry fits")
    }

    /// Checks every structural invariant against the raw parts: the FIFO
    /// links, each segment's counters against its items, every live item's
    /// table slot, the byte accounting and the memory bound.
    pub(super) fn assert_consistent(shard: &Shard) {
        let mut in_fifo = 0;
        let mut prev = NIL;
        let mut cursor = shard.fifo_head;
        let mut live_total = 0;
        let mut charged = 0;
        while cursor != NIL {
            let segment = &shard.segments[cursor as usize];
            assert!(segment.in_use, "segment {cursor} in the FIFO is not in use");
            assert_eq!(segment.prev, prev, "broken back link at {cursor}");
            in_fifo += 1;
            assert!(in_fifo <= shard.segments.len(), "FIFO has a cycle");
            let bytes = shard.segment_bytes_of(cursor as usize);
            let (mut offset, mut items, mut live) = (0, 0, 0);
            while offset < segment.used as usize {
                let header = ItemHeader::read(bytes, offset);
                let address = shard.address(cursor, offset);
                if header.flags & LIVE != 0 {
                    live += 1;
                    let key = shard.key_at(address, header);
                    assert_eq!(
                        shard.find(shard.hash_of(key), key),
                        Some(address),
                        "slot of a live item"
                    );
                    charged += shard.charge_of(header);
                }
                items += 1;
                offset += header.len();
            }
            assert_eq!(
                offset, segment.used as usize,
                "items overrun the used bytes"
            );
            assert_eq!(
                (items, live),
                (segment.items, segment.live_items),
                "segment {cursor} counters"
            );
            assert!(
                live > 0 || cursor == shard.fifo_tail,
                "empty segment {cursor} kept in the FIFO"
            );
            assert!(
                segment.weight <= shard.segment_weight || items == 1,
                "segment {cursor} overweight"
            );
            live_total += live as usize;
            prev = cursor;
            cursor = segment.next;
        }
        assert_eq!(shard.fifo_tail, prev, "tail is not the last segment");
        assert_eq!(in_fifo as u32, shard.segments_in_fifo);
        assert!(
            shard.segments_in_fifo <= shard.max_segments,
            "too many segments"
        );
        assert_eq!(
            in_fifo + shard.unused_segments.len(),
            shard.segments.len(),
            "leaked segments"
        );
        for &id in &shard.unused_segments {
            assert!(
                !shard.segments[id as usize].in_use,
                "unused segment {id} marked in use"
            );
        }
        assert_eq!(
            live_total,
            shard.table.len(),
            "live items and table disagree"
        );
        assert_eq!(shard.bytes, charged, "byte accounting drifted");
        assert!(shard.bytes <= shard.capacity_bytes, "over capacity");
        for &index in &shard.free_out_of_line {
            assert!(
                shard.out_of_line[index as usize].key_then_value.is_empty(),
                "a free out-of-line slot still holds a value"
            );
        }
    }

    #[test]
    fn node_and_overhead_stay_small() {
        if size_of::<usize>() == 8 {
            assert_eq!(ENTRY_OVERHEAD, 21);
            assert_eq!(EXPIRY_OVERHEAD, 8);
            assert_eq!(OUT_OF_LINE_OVERHEAD, 88);
        }
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let t0 = Instant::now();
        let mut shard = shard_for_small_entries(3);
        for key in ["a", "b", "c"] {
            assert_eq!(set_forever(&mut shard, key, "v", t0).evicted, 0);
        }
        let outcome = set_forever(&mut shard, "d", "v", t0);
        assert_eq!(
            outcome,
            SetOutcome {
                replaced: false,
                evicted: 1
            }
        );
        assert_eq!(get_value(&mut shard, "a", t0), None);
        for key in ["b", "c", "d"] {
            assert!(get_value(&mut shard, key, t0).is_some(), "{key} evicted");
        }
        assert_eq!(shard.stats().evictions, 1);
        assert_consistent(&shard);
    }

    #[test]
    fn get_refreshes_recency() {
        let t0 = Instant::now();
        let mut shard = shard_for_small_entries(3);
        for key in ["a", "b", "c"] {
            set_forever(&mut shard, key, "v", t0);
        }
        assert!(get_value(&mut shard, "a", t0).is_some());
        set_forever(&mut shard, "d", "v", t0);
        assert_eq!(
            get_value(&mut shard, "b", t0),
            None,
            "b was least recently used"
        );
        assert!(
            get_value(&mut shard, "a", t0).is_some(),
            "a was refreshed by get"
        );
        set_forever(&mut shard, "e", "v", t0);
        assert_eq!(get_value(&mut shard, "c", t0), None);
        assert_consistent(&shard);
    }

    #[test]
    fn replace_refreshes_recency_and_reports_replaced() {
        let t0 = Instant::now();
        let mut shard = shard_for_small_entries(2);
        set_forever(&mut shard, "a", "1", t0);
        set_forever(&mut shard, "b", "1", t0);
        let outcome = set_forever(&mut shard, "a", "2", t0);
        assert_eq!(
            outcome,
            SetOutcome {
                replaced: true,
                evicted: 0
            }
        );
        set_forever(&mut shard, "c", "1", t0);
        assert_eq!(get_value(&mut shard, "b", t0), None);
        assert_eq!(get_value(&mut shard, "a", t0), Some(value("2")));
        assert_eq!(shard.len(), 2);
        assert_consistent(&shard);
    }

    #[test]
    fn one_write_can_evict_several_entries() {
        let t0 = Instant::now();
        let mut shard = Shard::new(4 * charge("k", "v"));
        for key in ["a", "b", "c", "d"] {
            set_forever(&mut shard, key, "v", t0);
        }
        // Needs the room of three small entries.
        let big = "x".repeat(2 * ENTRY_OVERHEAD + 3);
        let outcome = set_forever(&mut shard, "e", &big, t0);
        assert_eq!(outcome.evicted, 3);
        assert!(get_value(&mut shard, "d", t0).is_some());
        assert_eq!(shard.len(), 2);
        assert_eq!(shard.stats().evictions, 3);
        assert_consistent(&shard);
    }

    #[test]
    fn byte_accounting_follows_insert_replace_delete_and_eviction() {
        let t0 = Instant::now();
        let mut shard = Shard::new(3 * charge("key", "0123456789"));
        assert_eq!(shard.stats().bytes, 0);

        set_forever(&mut shard, "key", "0123456789", t0);
        assert_eq!(shard.stats().bytes, charge("key", "0123456789"));

        set_forever(&mut shard, "key", "01", t0);
        assert_eq!(
            shard.stats().bytes,
            charge("key", "01"),
            "replace must not double count"
        );

        set_forever(&mut shard, "other", "0123456789", t0);
        assert_eq!(
            shard.stats().bytes,
            charge("key", "01") + charge("other", "0123456789")
        );

        assert!(shard.delete(b"key", t0));
        assert!(!shard.delete(b"key", t0), "second delete finds nothing");
        assert_eq!(shard.stats().bytes, charge("other", "0123456789"));

        // Fill past capacity: bytes stay exact and within the budget.
        for i in 0..10 {
            set_forever(&mut shard, &format!("k{i}"), "0123456789", t0);
            assert!(shard.stats().bytes <= shard.capacity_bytes());
            assert_consistent(&shard);
        }
        let stats = shard.stats();
        assert_eq!(stats.items, 3);
        assert_eq!(stats.bytes, 3 * charge("k0", "0123456789"));
        assert_eq!(stats.capacity_bytes, shard.capacity_bytes());
    }

    #[test]
    fn an_entry_exactly_the_capacity_fits() {
        let t0 = Instant::now();
        let mut shard = Shard::new(charge("key", "value"));
        set_forever(&mut shard, "other", "x", t0);
        let outcome = set_forever(&mut shard, "key", "value", t0);
        assert_eq!(outcome.evicted, 1);
        assert_eq!(shard.stats().bytes, shard.capacity_bytes());
        assert_consistent(&shard);
    }

    #[test]
    fn entry_too_large_leaves_the_shard_unchanged() {
        let t0 = Instant::now();
        let capacity = 4 * charge("k", "v");
        let mut shard = Shard::new(capacity);
        set_forever(&mut shard, "a", "old", t0);
        set_forever(&mut shard, "b", "v", t0);
        let before = shard.stats();

        let huge = Bytes::from(vec![0u8; capacity as usize]);
        for key in ["a", "new"] {
            let err = shard.set(key.as_bytes(), huge.clone(), None, false, t0);
            assert_eq!(
                err,
                Err(StoreError::EntryTooLarge {
                    size: shard.charge_for(key.len(), huge.len(), false),
                    capacity
                })
            );
            assert_eq!(shard.stats(), before);
        }
        assert_eq!(get_value(&mut shard, "a", t0), Some(value("old")));
        assert_eq!(get_value(&mut shard, "b", t0), Some(value("v")));
        assert_consistent(&shard);
    }

    #[test]
    fn zero_capacity_refuses_everything() {
        let t0 = Instant::now();
        let mut shard = Shard::new(0);
        assert!(shard.set(b"", Bytes::new(), None, false, t0).is_err());
        assert!(shard.is_empty());
        assert_eq!(shard.get(b"", t0), None);
    }

    #[test]
    fn empty_key_and_value_are_ordinary_entries() {
        let t0 = Instant::now();
        let mut shard = shard_for_small_entries(4);
        set_forever(&mut shard, "", "", t0);
        set_forever(&mut shard, "k", "", t0);
        assert_eq!(get_value(&mut shard, "", t0), Some(Bytes::new()));
        assert_eq!(get_value(&mut shard, "k", t0), Some(Bytes::new()));
        assert_eq!(shard.stats().bytes, 2 * ENTRY_OVERHEAD as u64 + 1);
        assert_consistent(&shard);
    }

    #[test]
    fn found_carries_hot_flag_and_exact_expiry() {
        let t0 = Instant::now();
        let mut shard = shard_for_small_entries(4);
        let expiry = t0 + 5 * SECOND;
        shard
            .set(b"k", value("v"), Some(expiry), true, t0)
            .expect("fits");
        let found = shard.get(b"k", t0).expect("live");
        assert_eq!(
            found,
            Found {
                value: value("v"),
                hot: true,
                expires_at: Some(expiry)
            }
        );
        set_forever(&mut shard, "k", "v", t0);
        let found = shard.get(b"k", t0).expect("live");
        assert!(!found.hot);
        assert_eq!(found.expires_at, None);
    }

    #[test]
    fn value_may_be_a_slice_of_a_larger_buffer() {
        let t0 = Instant::now();
        let mut shard = shard_for_small_entries(4);
        let buffer = Bytes::from(b"header:payload:trailer".to_vec());
        shard
            .set(b"k", buffer.slice(7..14), None, false, t0)
            .expect("fits");
        drop(buffer);
        assert_eq!(get_value(&mut shard, "k", t0), Some(value("payload")));
    }

    #[test]
    fn expired_entries_are_misses_and_counted() {
        let t0 = Instant::now();
        let mut shard = shard_for_small_entries(4);
        let expiry = t0 + 5 * SECOND;
        shard
            .set(b"k", value("v"), Some(expiry), false, t0)
            .expect("fits");
        assert!(shard.get(b"k", expiry - Duration::from_nanos(1)).is_some());
        assert_eq!(shard.get(b"k", expiry), None, "expiry instant is exclusive");
        let stats = shard.stats();
        assert_eq!(
            (stats.items, stats.bytes),
            (0, 0),
            "expired entry left the accounting"
        );
        assert_eq!((stats.hits, stats.misses, stats.expired), (1, 1, 1));
        assert_eq!(shard.get(b"k", expiry), None);
        assert_eq!(
            shard.stats().expired,
            1,
            "already removed, not counted twice"
        );
        assert_consistent(&shard);
    }

    #[test]
    fn read_does_not_extend_ttl() {
        let t0 = Instant::now();
        let mut shard = shard_for_small_entries(4);
        let expiry = t0 + 5 * SECOND;
        shard
            .set(b"k", value("v"), Some(expiry), false, t0)
            .expect("fits");
        for second in 0..5 {
            let found = shard.get(b"k", t0 + second * SECOND).expect("still live");
            assert_eq!(found.expires_at, Some(expiry));
        }
        assert_eq!(shard.get(b"k", t0 + 5 * SECOND), None);
    }

    #[test]
    fn set_replaces_ttl_and_counts_an_expired_predecessor() {
        let t0 = Instant::now();
        let mut shard = shard_for_small_entries(4);
        shard
            .set(b"k", value("1"), Some(t0 + SECOND), false, t0)
            .expect("fits");
        let later = t0 + 2 * SECOND;
        let outcome = shard
            .set(b"k", value("2"), None, false, later)
            .expect("fits");
        assert!(!outcome.replaced, "the old entry was already dead");
        assert_eq!(shard.stats().expired, 1);
        let found = shard.get(b"k", t0 + 1000 * SECOND).expect("no expiry now");
        assert_eq!(found.value, value("2"));
        assert_consistent(&shard);
    }

    #[test]
    fn set_with_a_past_expiry_stores_nothing_and_drops_the_old_value() {
        let t0 = Instant::now();
        let now = t0 + 10 * SECOND;
        let mut shard = Shard::new(charge("a", "new") + charge("keep", "v"));
        set_forever(&mut shard, "a", "v", now);
        set_forever(&mut shard, "keep", "v", now);
        let outcome = shard
            .set(b"a", value("new"), Some(now), false, now)
            .expect("fits");
        assert_eq!(
            outcome,
            SetOutcome {
                replaced: true,
                evicted: 0
            }
        );
        let outcome = shard
            .set(b"b", value("v"), Some(t0), false, now)
            .expect("fits");
        assert_eq!(outcome, SetOutcome::default());
        assert_eq!(get_value(&mut shard, "a", now), None);
        assert_eq!(get_value(&mut shard, "b", now), None);
        assert!(
            get_value(&mut shard, "keep", now).is_some(),
            "dead entry evicted a live one"
        );
        assert_eq!(shard.stats().evictions, 0);
        assert_consistent(&shard);
    }

    #[test]
    fn delete_of_an_expired_entry_reports_false_and_counts_it() {
        let t0 = Instant::now();
        let mut shard = shard_for_small_entries(4);
        shard
            .set(b"k", value("v"), Some(t0 + SECOND), false, t0)
            .expect("fits");
        assert!(!shard.delete(b"k", t0 + SECOND));
        assert_eq!(shard.stats().expired, 1);
        assert!(shard.is_empty());
        assert_eq!(shard.stats().bytes, 0);
    }

    #[test]
    fn instants_before_the_shard_was_created_work() {
        // t0 precedes the shard's internal epoch, so these ticks are negative.
        let t0 = Instant::now();
        let mut shard = shard_for_small_entries(4);
        let expiry = t0 + Duration::from_nanos(1);
        shard
            .set(b"k", value("v"), Some(expiry), false, t0)
            .expect("fits");
        let found = shard.get(b"k", t0).expect("live before its expiry");
        assert_eq!(found.expires_at, Some(expiry));
        assert_eq!(shard.get(b"k", expiry), None);
    }

    #[test]
    fn sweep_is_incremental_and_covers_everything_across_calls() {
        let t0 = Instant::now();
        let mut shard = Shard::new(1 << 20);
        for i in 0..200 {
            let expiry = (i % 2 == 0).then_some(t0 + SECOND);
            shard
                .set(format!("k{i}").as_bytes(), value("v"), expiry, false, t0)
                .expect("fits");
        }
        assert_eq!(
            shard.sweep_expired(t0, usize::MAX),
            0,
            "nothing expired yet"
        );

        let later = t0 + 2 * SECOND;
        let mut total = 0;
        for _ in 0..20 {
            let removed = shard.sweep_expired(later, 10);
            assert!(removed <= 10, "a call examined more than max_checks");
            total += removed;
            assert_consistent(&shard);
        }
        assert_eq!(total, 100);
        assert_eq!(shard.len(), 100);
        assert_eq!(shard.stats().expired, 100);
        let survivors_bytes: u64 = (1..200)
            .step_by(2)
            .map(|i| charge(&format!("k{i}"), "v"))
            .sum();
        assert_eq!(shard.stats().bytes, survivors_bytes);
        assert_eq!(shard.sweep_expired(later, usize::MAX), 0);
        assert_eq!(shard.sweep_expired(later, 0), 0);
    }

    #[test]
    fn sweep_resumes_after_slots_are_freed_and_reused() {
        let t0 = Instant::now();
        let mut shard = Shard::new(1 << 20);
        for i in 0..10 {
            set_forever(&mut shard, &format!("k{i}"), "v", t0);
        }
        for i in 0..10 {
            shard.delete(format!("k{i}").as_bytes(), t0);
        }
        shard
            .set(b"dies", value("v"), Some(t0 + SECOND), false, t0)
            .expect("fits");
        assert_eq!(shard.segments.len(), 1, "one segment so far");
        assert_eq!(
            shard.segments[0].used as usize,
            layout_for(4, 1, true, shard.segment_bytes).item_len,
            "the emptied open segment is reused from its start"
        );
        shard.sweep_expired(t0, 7);
        let later = t0 + 2 * SECOND;
        let removed: u64 = (0..2).map(|_| shard.sweep_expired(later, 5)).sum();
        assert_eq!(removed, 1);
        assert!(shard.is_empty());
        assert_consistent(&shard);
    }

    #[test]
    fn hits_and_misses_are_counted() {
        let t0 = Instant::now();
        let mut shard = shard_for_small_entries(4);
        set_forever(&mut shard, "k", "v", t0);
        shard.get(b"k", t0);
        shard.get(b"k", t0);
        shard.get(b"missing", t0);
        let stats = shard.stats();
        assert_eq!((stats.hits, stats.misses), (2, 1));
        assert_eq!(stats.items, 1);
    }

    #[test]
    fn debug_prints_stats_not_entries() {
        let shard = Shard::new(1024);
        let printed = format!("{shard:?}");
        assert!(printed.contains("capacity_bytes: 1024"), "{printed}");
    }

    /// Straightforward reference for everything but the choice of victims:
    /// a list of entries scanned linearly. Which entries an eviction takes
    /// is the shard's CLOCK policy (tested on its own above and in
    /// `lru_sim`); after each write the model drops what the shard evicted
    /// and checks the count, the accounting and every value, flag and
    /// expiry that remains.
    struct Model {
        capacity: u64,
        entries: Vec<(Vec<u8>, Bytes, Option<Instant>, bool)>,
        stats: ShardStats,
    }

    impl Model {
        fn charge(shard: &Shard, entry: &(Vec<u8>, Bytes, Option<Instant>, bool)) -> u64 {
            shard.charge_for(entry.0.len(), entry.1.len(), entry.2.is_some())
        }

        fn bytes(&self, shard: &Shard) -> u64 {
            self.entries
                .iter()
                .map(|entry| Self::charge(shard, entry))
                .sum()
        }

        fn position(&self, key: &[u8]) -> Option<usize> {
            self.entries.iter().position(|entry| entry.0 == key)
        }

        fn live(expires_at: Option<Instant>, now: Instant) -> bool {
            expires_at.is_none_or(|at| now < at)
        }

        fn get(&mut self, key: &[u8], now: Instant) -> Option<Found> {
            let Some(position) = self.position(key) else {
                self.stats.misses += 1;
                return None;
            };
            let entry = &self.entries[position];
            if !Self::live(entry.2, now) {
                self.entries.remove(position);
                self.stats.expired += 1;
                self.stats.misses += 1;
                return None;
            }
            self.stats.hits += 1;
            Some(Found {
                value: entry.1.clone(),
                hot: entry.3,
                expires_at: entry.2,
            })
        }

        /// The write without its evictions (see [`Model::follow_evictions`]).
        fn set(
            &mut self,
            shard: &Shard,
            key: &[u8],
            value: Bytes,
            expires_at: Option<Instant>,
            hot: bool,
            now: Instant,
        ) -> Result<SetOutcome, StoreError> {
            let entry = (key.to_vec(), value, expires_at, hot);
            let size = Self::charge(shard, &entry);
            if size > self.capacity {
                return Err(StoreError::EntryTooLarge {
                    size,
                    capacity: self.capacity,
                });
            }
            let mut outcome = SetOutcome::default();
            if let Some(position) = self.position(key) {
                let old = self.entries.remove(position);
                outcome.replaced = Self::live(old.2, now);
                if !outcome.replaced {
                    self.stats.expired += 1;
                }
            }
            if Self::live(expires_at, now) {
                self.entries.push(entry);
            }
            Ok(outcome)
        }

        /// Drops the entries the shard no longer holds: expired ones count
        /// as expired (a recycled segment drops them), live ones as evicted.
        /// Returns how many live entries went.
        fn follow_evictions(&mut self, shard: &Shard, now: Instant) -> u64 {
            let mut evicted = 0;
            let mut expired = 0;
            self.entries.retain(|entry| {
                if shard.find(shard.hash_of(&entry.0), &entry.0).is_some() {
                    return true;
                }
                if Self::live(entry.2, now) {
                    evicted += 1;
                } else {
                    expired += 1;
                }
                false
            });
            self.stats.evictions += evicted;
            self.stats.expired += expired;
            evicted
        }

        fn delete(&mut self, key: &[u8], now: Instant) -> bool {
            let Some(old) = self.position(key).map(|p| self.entries.remove(p)) else {
                return false;
            };
            let live = Self::live(old.2, now);
            if !live {
                self.stats.expired += 1;
            }
            live
        }

        fn sweep_all(&mut self, now: Instant) -> u64 {
            let before = self.entries.len();
            self.entries.retain(|entry| Self::live(entry.2, now));
            let removed = (before - self.entries.len()) as u64;
            self.stats.expired += removed;
            removed
        }

        fn stats(&self, shard: &Shard) -> ShardStats {
            ShardStats {
                items: self.entries.len() as u64,
                bytes: self.bytes(shard),
                capacity_bytes: self.capacity,
                ..self.stats.clone()
            }
        }
    }

    #[test]
    fn randomized_workload_matches_a_simple_model() {
        for seed in 0..8 {
            let mut rng = fastrand::Rng::with_seed(seed);
            // Small shards (item-by-item eviction) and larger ones (several
            // entries per segment, some values out of line).
            let capacity = if seed % 2 == 0 {
                rng.u64(0..25) * 150 + rng.u64(0..150)
            } else {
                rng.u64(20_000..200_000)
            };
            let max_value = if seed % 2 == 0 { 300 } else { 3_000 };
            let mut shard = Shard::new(capacity);
            let mut model = Model {
                capacity,
                entries: Vec::new(),
                stats: ShardStats::default(),
            };
            let t0 = Instant::now();
            let mut now = t0;
            for step in 0..4_000 {
                now += Duration::from_micros(rng.u64(0..2_000));
                let key = format!("key{}", rng.u32(0..60)).into_bytes();
                let context = format!("seed {seed} step {step}");
                match rng.u32(0..100) {
                    0..=39 => {
                        assert_eq!(shard.get(&key, now), model.get(&key, now), "{context}");
                    }
                    40..=84 => {
                        let value = Bytes::from(vec![rng.u8(..); rng.usize(0..max_value)]);
                        let expires_at = match rng.u32(0..4) {
                            0 => None,
                            1 => now.checked_sub(Duration::from_millis(1)),
                            _ => Some(now + Duration::from_micros(rng.u64(0..50_000))),
                        };
                        let hot = rng.bool();
                        let expected = model.set(&shard, &key, value.clone(), expires_at, hot, now);
                        let mut outcome = shard.set(&key, value, expires_at, hot, now);
                        let evicted = model.follow_evictions(&shard, now);
                        if let Ok(outcome) = outcome.as_mut() {
                            assert_eq!(outcome.evicted, evicted, "{context}");
                            outcome.evicted = 0;
                        }
                        assert_eq!(outcome, expected, "{context}");
                    }
                    85..=96 => {
                        assert_eq!(
                            shard.delete(&key, now),
                            model.delete(&key, now),
                            "{context}"
                        );
                    }
                    _ => {
                        assert_eq!(
                            shard.sweep_expired(now, usize::MAX),
                            model.sweep_all(now),
                            "{context}"
                        );
                    }
                }
                assert_eq!(shard.stats(), model.stats(&shard), "{context}");
                assert_eq!(shard.len(), model.entries.len(), "{context}");
                for entry in &model.entries {
                    let found = shard.peek(&entry.0, t0).expect("held");
                    assert_eq!(
                        (&found.value, found.hot, found.expires_at),
                        (&entry.1, entry.3, entry.2),
                        "{context}"
                    );
                }
                assert_consistent(&shard);
            }
        }
    }

    #[test]
    fn copies_are_tracked_for_hot_and_replicated_entries() {
        let now = Instant::now();
        let mut shard = Shard::new(10_000);
        let v = || Bytes::from_static(b"v");
        shard.set(b"plain", v(), None, false, now).unwrap();
        shard.set(b"hot", v(), None, true, now).unwrap();
        assert_eq!(shard.copies(b"hot", now), Copies::Hot);
        assert_eq!(shard.copies(b"plain", now), Copies::None);
        assert_ne!(shard.copies(b"hot", now), Copies::None);
        assert_eq!(shard.copies(b"absent", now), Copies::None);
        assert!(shard.mark_replicated(b"plain", now));
        assert!(!shard.mark_replicated(b"absent", now));
        assert_ne!(shard.copies(b"plain", now), Copies::None);
        assert_eq!(shard.copies(b"plain", now), Copies::Automatic);
        // A rewrite is a new entry: whoever rewrote it invalidated the copies.
        shard.set(b"plain", v(), None, false, now).unwrap();
        assert_eq!(shard.copies(b"plain", now), Copies::None);
        // An expired entry has no live copies either (they expire with it).
        let soon = now + Duration::from_millis(5);
        shard.set(b"brief", v(), Some(soon), true, now).unwrap();
        assert_ne!(shard.copies(b"brief", now), Copies::None);
        assert_eq!(shard.copies(b"brief", soon), Copies::None);
        assert!(shard.contains(b"brief", now) && !shard.contains(b"brief", soon));
        let before = shard.stats();
        assert_eq!(shard.peek(b"brief", now).map(|f| f.hot), Some(true));
        assert!(shard.peek(b"brief", soon).is_none());
        assert!(shard.peek(b"absent", now).is_none());
        assert_eq!(shard.stats(), before, "peek is not a read");
    }

    #[test]
    fn evicted_entries_with_copies_are_reported_once() {
        let now = Instant::now();
        let each = charge("k1", "0123456789");
        let mut shard = Shard::new(each * 3).report_evicted_copies();
        let v = || Bytes::from(vec![b'x'; 10]);
        shard.set(b"k1", v(), None, true, now).unwrap();
        shard.set(b"k2", v(), None, false, now).unwrap();
        shard.set(b"k3", v(), None, false, now).unwrap();
        shard.mark_replicated(b"k2", now);
        shard.set(b"k4", v(), None, false, now).unwrap();
        shard.set(b"k5", v(), None, false, now).unwrap();
        shard.set(b"k6", v(), None, false, now).unwrap();
        let reported = shard.take_evicted_with_copies();
        assert_eq!(reported, vec![Box::from(&b"k1"[..]), Box::from(&b"k2"[..])]);
        assert!(shard.take_evicted_with_copies().is_empty());
        // Without opting in nothing accumulates.
        let mut quiet = Shard::new(each);
        quiet.set(b"k1", v(), None, true, now).unwrap();
        quiet.set(b"k2", v(), None, true, now).unwrap();
        assert!(quiet.take_evicted_with_copies().is_empty());
    }

    #[test]
    fn hot_entries_and_remove_where_scan_live_entries() {
        let now = Instant::now();
        let mut shard = Shard::new(100_000);
        let v = || Bytes::from_static(b"v");
        shard.set(b"a", v(), None, true, now).unwrap();
        shard.set(b"b", v(), None, false, now).unwrap();
        let gone = now - Duration::from_secs(1);
        shard
            .set(b"c", v(), Some(now + Duration::from_millis(1)), true, gone)
            .unwrap();
        let hot = shard.hot_entries(now + Duration::from_millis(2));
        assert_eq!(hot.len(), 1);
        assert_eq!(&*hot[0].0, b"a");
        assert_eq!(shard.remove_where(|key, hot| !hot && key == b"b"), 1);
        assert_eq!(shard.len(), 2);
        assert_eq!(shard.remove_where(|_, _| true), 2);
        assert!(shard.is_empty());
        assert_eq!(shard.stats().bytes, 0);
    }
}

#[cfg(test)]
mod segment_tests {
    use super::tests::assert_consistent;
    use super::*;

    fn key(i: usize) -> Vec<u8> {
        format!("key:{i:06}").into_bytes()
    }

    #[test]
    fn recycling_keeps_entries_read_since_written() {
        let now = Instant::now();
        let value = Bytes::from(vec![b'v'; 100]);
        let mut shard = Shard::new(1 << 20);
        assert!(
            shard.segment_bytes >= 16 * 1024,
            "several entries per segment"
        );
        let fits = (shard.capacity_bytes / shard.charge_for(10, 100, false)) as usize;
        for i in 0..fits / 2 {
            shard.set(&key(i), value.clone(), None, false, now).unwrap();
        }
        // Read every tenth of the oldest half, then keep writing new keys
        // that are never read, reading the tenth again between rounds.
        for i in (0..fits / 2).step_by(10) {
            assert!(shard.get(&key(i), now).is_some());
        }
        for i in fits / 2..fits {
            shard.set(&key(i), value.clone(), None, false, now).unwrap();
        }
        for round in 0..3 {
            for i in (0..fits / 2).step_by(10) {
                assert!(
                    shard.get(&key(i), now).is_some(),
                    "read entry {i} evicted in round {round}"
                );
            }
            // Half the capacity per round: under exact LRU the entries read
            // before it would survive too.
            for i in 0..fits / 2 {
                let fresh = key(1_000_000 + round * fits + i);
                shard.set(&fresh, value.clone(), None, false, now).unwrap();
            }
            assert_consistent(&shard);
        }
        for i in (1..fits / 2).step_by(10) {
            assert!(
                !shard.contains(&key(i), now),
                "unread old entry {i} survived"
            );
        }
        assert!(shard.stats().evictions > fits as u64);
    }

    #[test]
    fn large_values_are_shared_not_copied() {
        let now = Instant::now();
        let mut shard = Shard::new(1 << 20);
        let large = Bytes::from(vec![7u8; INLINE_PAYLOAD_LIMIT + 1]);
        shard
            .set(b"large", large.clone(), None, false, now)
            .unwrap();
        let first = shard.get(b"large", now).unwrap().value;
        let second = shard.get(b"large", now).unwrap().value;
        assert_eq!(first, large);
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "both reads share the stored value"
        );
        assert_ne!(
            first.as_ptr(),
            large.as_ptr(),
            "the stored value is the shard's own copy"
        );
        let small = Bytes::from(vec![8u8; 100]);
        shard
            .set(b"small", small.clone(), None, false, now)
            .unwrap();
        assert_eq!(shard.get(b"small", now).unwrap().value, small);
        assert_eq!(
            shard.charge_for(5, INLINE_PAYLOAD_LIMIT + 1, false),
            (5 + INLINE_PAYLOAD_LIMIT + 1 + ENTRY_OVERHEAD + OUT_OF_LINE_OVERHEAD) as u64
        );
        assert_consistent(&shard);
    }

    #[test]
    fn overwrite_and_delete_churn_stays_within_the_segment_budget() {
        let start = Instant::now();
        let mut rng = fastrand::Rng::with_seed(11);
        let capacity = 2 << 20;
        let mut shard = Shard::new(capacity);
        let bound = capacity + capacity / 8 + 2 * shard.segment_bytes as u64;
        for step in 0..60_000u64 {
            let now = start + Duration::from_millis(step);
            let k = key(rng.usize(0..20_000));
            match rng.u32(0..10) {
                0 => {
                    shard.delete(&k, now);
                }
                1 => {
                    shard.get(&k, now);
                }
                _ => {
                    // Sizes from 1 byte to 16 KiB, log-uniform.
                    let len = 1usize << rng.u32(0..15);
                    let len = rng.usize(len..=len * 2);
                    let expires = rng
                        .bool()
                        .then(|| now + Duration::from_millis(rng.u64(1..5_000)));
                    shard
                        .set(&k, Bytes::from(vec![1u8; len]), expires, false, now)
                        .unwrap();
                }
            }
            let mapped = u64::from(shard.segments_in_fifo) * shard.segment_bytes as u64;
            assert!(
                mapped <= bound,
                "step {step}: {mapped} bytes of segments mapped"
            );
            if step % 5_000 == 0 {
                assert_consistent(&shard);
            }
        }
        assert_consistent(&shard);
        assert!(shard.stats().evictions > 0);
        let end = start + Duration::from_secs(3600);
        shard.remove_where(|_, _| true);
        assert_eq!(shard.sweep_expired(end, usize::MAX), 0);
        assert!(shard.is_empty());
        assert!(shard.segments_in_fifo <= 1, "emptied segments are released");
        assert_consistent(&shard);
    }

    #[test]
    fn long_keys_and_keys_beyond_a_segment_are_stored() {
        let now = Instant::now();
        let mut shard = Shard::new(64 * 1024);
        let long_key = vec![b'k'; 70_000];
        let v = Bytes::from_static(b"v");
        assert!(
            shard.set(&long_key, v.clone(), None, true, now).is_err(),
            "over the capacity"
        );
        let key_4k = vec![b'k'; 4000];
        shard.set(&key_4k, v.clone(), None, true, now).unwrap();
        assert_eq!(shard.get(&key_4k, now).map(|f| f.value), Some(v));
        assert_eq!(shard.hot_entries(now).len(), 1);
        assert_consistent(&shard);
    }
}
