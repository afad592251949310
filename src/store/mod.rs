//! One core's cache shard: an LRU map from key to value with per-entry
//! expiry and a hard byte budget.
//!
//! Every core owns exactly one [`Shard`] and is the only code that touches
//! it; other cores reach it by message. That single owner is why the shard is
//! plain data: no locks, no atomics, no interior mutability, and every
//! operation takes `&mut self`. It is also pure (no I/O, no clock reads on
//! the request path: callers pass `now`), so it can be tested and
//! benchmarked on its own.
//!
//! Layout, chosen for a small per-entry footprint and O(1) operations:
//! - `slab: Vec<Node>` holds the entries. A node's key and value share one
//!   exact-size allocation, and the LRU list is threaded through the nodes
//!   as `u32` indices, so an entry costs one slab slot plus one heap block.
//! - `table: HashTable<TableSlot>` maps a key to its slab index. Each slot
//!   also keeps a 32-bit hash tag so the table can grow or rehash without
//!   touching the nodes or the keys (see [`TableSlot`]).
//! - Freed slab slots are chained into a free list and reused before the
//!   slab grows. The slab never shrinks: after a mass delete its slots (one
//!   node each, no payload) wait for the next writes.

pub mod ttl;

pub use ttl::TtlJitter;

use std::fmt;
use std::mem::size_of;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Bytes charged per entry on top of `key.len() + value.len()`.
///
/// It estimates what an entry really costs beyond its payload, so that a
/// shard's byte budget tracks the process's resident memory (64-bit Linux,
/// glibc malloc):
/// - the slab node (`size_of::<Node>()`, 56 bytes);
/// - its share of the hash table: a `TableSlot` plus one control byte per
///   bucket, with buckets kept between 7/16 and 7/8 full, i.e. about 9 bytes
///   at 5/8 occupancy ([`TABLE_BYTES_PER_ENTRY`], 14 bytes);
/// - malloc's 8-byte chunk header plus rounding to 16 bytes on the key+value
///   block ([`ALLOCATOR_BYTES_PER_ENTRY`], 16 bytes on average);
/// - the reference-count block `bytes` allocates the first time a stored
///   value is cloned for a reader: 24 bytes, a 32-byte malloc chunk
///   ([`SHARED_HANDLE_BYTES`]).
///
/// Total on 64-bit targets: 56 + 14 + 16 + 32 = 118 bytes.
pub const ENTRY_OVERHEAD: usize =
    size_of::<Node>() + TABLE_BYTES_PER_ENTRY + ALLOCATOR_BYTES_PER_ENTRY + SHARED_HANDLE_BYTES;

/// Hash-table bytes per entry: `(size_of::<TableSlot>() + 1 control byte)`
/// divided by an average bucket occupancy of 5/8.
const TABLE_BYTES_PER_ENTRY: usize = (size_of::<TableSlot>() + 1) * 8 / 5;
/// glibc malloc: 8-byte header, chunks rounded up to 16 bytes.
const ALLOCATOR_BYTES_PER_ENTRY: usize = 16;
/// `bytes::Shared` (24 bytes) in a 32-byte malloc chunk.
const SHARED_HANDLE_BYTES: usize = 32;

/// "No node": the end of the LRU list or of the free list.
const NIL: u32 = u32::MAX;
/// Slab indices are `u32` with [`NIL`] reserved.
const MAX_SLOTS: usize = NIL as usize;

/// Expiry tick of an entry that never expires. Finite expiries and `now`
/// are clamped below it, so "live" is simply `now_tick < expires_tick`.
const NEVER: i64 = i64::MAX;
const LATEST_FINITE_TICK: i64 = NEVER - 1;

/// Spreads a 32-bit hash tag over the 64 bits hashbrown reads: its low bits
/// pick the bucket and its top 7 bits are the in-group filter byte.
/// Multiplying by an odd constant is a bijection, keeps the low bits exactly
/// as random as the tag's, and mixes every tag bit into the top bits.
const TAG_SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

/// Counters and gauges of one shard, merged across cores for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub items: u64,
    /// Payload plus [`ENTRY_OVERHEAD`] per entry; never above `capacity_bytes`.
    pub bytes: u64,
    pub capacity_bytes: u64,
    pub hits: u64,
    /// Includes reads that found only an expired entry.
    pub misses: u64,
    /// Live entries removed to make room for a write.
    pub evictions: u64,
    /// Entries removed because their expiry had passed, however that was
    /// noticed: a read, a write or delete over them, or a sweep.
    pub expired: u64,
}

/// A hit returned by [`Shard::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Shares the shard's allocation: cloning it is a reference-count bump.
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

/// A slab slot: one entry, or a link in the free list when `occupied` is
/// false.
struct Node {
    /// The key immediately followed by the value, in one allocation of
    /// exactly their size. One block instead of two saves a malloc chunk
    /// per entry, and copying into it guarantees the entry holds no more
    /// memory than it is charged for (a caller's `Bytes` may be a small
    /// window into a large network buffer).
    key_then_value: Bytes,
    /// Nanoseconds from [`Shard::epoch`], or [`NEVER`]. Half the size of an
    /// `Instant`, and signed so instants before the epoch still work.
    expires_tick: i64,
    /// Towards the most recently used end; [`NIL`] at the head.
    prev: u32,
    /// Towards the least recently used end; [`NIL`] at the tail. In a free
    /// slot, the next free slot.
    next: u32,
    key_len: u32,
    hot: bool,
    /// Another node was sent a copy of this entry (an automatic hot copy):
    /// writes to the key must invalidate it.
    replicated: bool,
    occupied: bool,
}

impl Node {
    fn vacant(next_free: u32) -> Node {
        Node {
            key_then_value: Bytes::new(),
            expires_tick: NEVER,
            prev: NIL,
            next: next_free,
            key_len: 0,
            hot: false,
            replicated: false,
            occupied: false,
        }
    }

    fn key(&self) -> &[u8] {
        let key_len = self.key_len as usize;
        &self.key_then_value[..key_len]
    }

    fn value(&self) -> Bytes {
        self.key_then_value.slice(self.key_len as usize..)
    }

    fn charged_bytes(&self) -> u64 {
        charge_for(self.key_then_value.len(), 0)
    }

    fn is_live_at(&self, now_tick: i64) -> bool {
        now_tick < self.expires_tick
    }
}

/// A hash-table entry. The tag lets the table rehash from its own memory:
/// recomputing hashes from keys would cost two cache misses per entry (node,
/// then key) on every grow and on the periodic in-place rehash that clears
/// tombstones in a table with constant churn, a pause of hundreds of
/// milliseconds at ten million entries. It also filters most
/// non-matching candidates before a key is compared.
#[derive(Clone, Copy)]
struct TableSlot {
    index: u32,
    tag: u32,
}

fn table_hash(tag: u32) -> u64 {
    u64::from(tag).wrapping_mul(TAG_SPREAD)
}

fn charge_for(key_len: usize, value_len: usize) -> u64 {
    (key_len as u64)
        .saturating_add(value_len as u64)
        .saturating_add(ENTRY_OVERHEAD as u64)
}

fn saturating_nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

#[derive(Default)]
struct Counters {
    hits: u64,
    misses: u64,
    evictions: u64,
    expired: u64,
}

/// One core's LRU + TTL cache. See the module documentation.
pub struct Shard {
    table: HashTable<TableSlot>,
    slab: Vec<Node>,
    free_head: u32,
    /// Most recently used entry.
    lru_head: u32,
    /// Least recently used entry: the next eviction victim.
    lru_tail: u32,
    bytes: u64,
    capacity_bytes: u64,
    /// Per-shard random seed. It defeats crafted colliding keys, and it
    /// keeps this table's hash independent of the hash that routed the key
    /// to this core: with the same function, every key here would share its
    /// low bits and crowd a fraction of the buckets.
    hash_seed: u64,
    /// Origin of the compact expiry ticks. Any instant works; ticks are
    /// signed.
    epoch: Instant,
    /// Where the next [`Shard::sweep_expired`] resumes.
    sweep_cursor: usize,
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
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// An empty shard that will hold at most `capacity_bytes` of payload
    /// plus [`ENTRY_OVERHEAD`] per entry. Memory is allocated as entries
    /// arrive, not up front.
    pub fn new(capacity_bytes: u64) -> Shard {
        Shard {
            table: HashTable::new(),
            slab: Vec::new(),
            free_head: NIL,
            lru_head: NIL,
            lru_tail: NIL,
            bytes: 0,
            capacity_bytes,
            hash_seed: fastrand::u64(..),
            epoch: Instant::now(),
            sweep_cursor: 0,
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

    /// Which copies other nodes may hold of the live entry for `key`. Does
    /// not touch the LRU order or the counters.
    pub fn copies(&self, key: &[u8], now: Instant) -> Copies {
        let tag = self.tag_of(key);
        match self.find(tag, key).map(|index| &self.slab[index as usize]) {
            Some(node) if node.is_live_at(self.tick(now)) => {
                if node.hot {
                    Copies::Hot
                } else if node.replicated {
                    Copies::Automatic
                } else {
                    Copies::None
                }
            }
            _ => Copies::None,
        }
    }

    /// The live entry for `key`, without touching the LRU order or the
    /// counters (for background work that must not look like a read).
    pub fn peek(&self, key: &[u8], now: Instant) -> Option<Found> {
        let tag = self.tag_of(key);
        let node = &self.slab[self.find(tag, key)? as usize];
        node.is_live_at(self.tick(now)).then(|| Found {
            value: node.value(),
            hot: node.hot,
            expires_at: self.instant_of(node.expires_tick),
        })
    }

    /// Whether a live entry for `key` is held. No LRU or counter effect.
    pub fn contains(&self, key: &[u8], now: Instant) -> bool {
        let tag = self.tag_of(key);
        self.find(tag, key)
            .is_some_and(|index| self.slab[index as usize].is_live_at(self.tick(now)))
    }

    /// Record that a copy of the live entry for `key` was handed to another
    /// node. Returns false when there is no live entry.
    pub fn mark_replicated(&mut self, key: &[u8], now: Instant) -> bool {
        let tag = self.tag_of(key);
        let now_tick = self.tick(now);
        match self.find(tag, key) {
            Some(index) if self.slab[index as usize].is_live_at(now_tick) => {
                self.slab[index as usize].replicated = true;
                true
            }
            _ => false,
        }
    }

    /// Every live entry written hot: `(key, value, expires_at)`. A full
    /// scan, for the rare moment a node joins and must receive them.
    pub fn hot_entries(&self, now: Instant) -> Vec<(Box<[u8]>, Bytes, Option<Instant>)> {
        let now_tick = self.tick(now);
        self.slab
            .iter()
            .filter(|n| n.occupied && n.hot && n.is_live_at(now_tick))
            .map(|n| (n.key().into(), n.value(), self.instant_of(n.expires_tick)))
            .collect()
    }

    /// Remove every entry for which `drop(key, hot)` is true. A full scan,
    /// for membership changes. Returns how many entries went.
    pub fn remove_where(&mut self, mut drop: impl FnMut(&[u8], bool) -> bool) -> usize {
        let mut removed = 0;
        for index in 0..self.slab.len() {
            let node = &self.slab[index];
            if node.occupied && drop(node.key(), node.hot) {
                let tag = self.tag_of(node.key());
                self.remove(index as u32, tag);
                removed += 1;
            }
        }
        removed
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

    /// Hit: moves the entry to most-recently-used, counts a hit and returns
    /// a cheap clone of the value. An expired entry is removed (its bytes
    /// leave the accounting and `expired` is counted) and reported as a
    /// miss. A read never extends a TTL.
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<Found> {
        let tag = self.tag_of(key);
        let Some(index) = self.find(tag, key) else {
            self.counters.misses += 1;
            return None;
        };
        if !self.slab[index as usize].is_live_at(self.tick(now)) {
            self.remove(index, tag);
            self.counters.expired += 1;
            self.counters.misses += 1;
            return None;
        }
        self.move_to_front(index);
        self.counters.hits += 1;
        let node = &self.slab[index as usize];
        Some(Found {
            value: node.value(),
            hot: node.hot,
            expires_at: self.instant_of(node.expires_tick),
        })
    }

    /// Inserts or replaces `key`. `expires_at: None` means no expiry.
    ///
    /// Evicts least-recently-used entries until the new entry
    /// (`key.len() + value.len() + ENTRY_OVERHEAD`) fits. An entry larger
    /// than the whole capacity is refused and the shard is left exactly as
    /// it was, including any old value under `key`. An entry whose expiry is
    /// not after `now` is dead on arrival: it is not stored (it would only
    /// push out live entries) and any old value under `key` is removed, as a
    /// client overwriting with an expired entry intends.
    ///
    /// The key and value are copied into one new allocation, so `value` may
    /// be a slice of a larger buffer without keeping that buffer alive.
    pub fn set(
        &mut self,
        key: &[u8],
        value: Bytes,
        expires_at: Option<Instant>,
        hot: bool,
        now: Instant,
    ) -> Result<SetOutcome, StoreError> {
        let size = charge_for(key.len(), value.len());
        let key_len = match u32::try_from(key.len()) {
            Ok(key_len) if size <= self.capacity_bytes => key_len,
            // A key of 4 GiB or more cannot be indexed; it is refused as the
            // oversized entry it is.
            _ => {
                return Err(StoreError::EntryTooLarge {
                    size,
                    capacity: self.capacity_bytes,
                })
            }
        };
        let now_tick = self.tick(now);
        let expires_tick = expires_at.map_or(NEVER, |at| self.tick(at));
        let tag = self.tag_of(key);
        let existing = self.find(tag, key);

        let mut outcome = SetOutcome::default();
        if let Some(index) = existing {
            let old = &self.slab[index as usize];
            outcome.replaced = old.is_live_at(now_tick);
            if !outcome.replaced {
                self.counters.expired += 1;
            }
            // The old entry leaves the accounting and the LRU list, but its
            // slot and table entry stay for the new value to reuse.
            self.bytes -= old.charged_bytes();
            self.unlink(index);
        }

        if expires_tick <= now_tick {
            if let Some(index) = existing {
                self.forget_unlinked(index, tag);
            }
            return Ok(outcome);
        }

        outcome.evicted = self.evict_until_fits(size, existing.is_none());

        let mut key_then_value = Vec::with_capacity(key.len() + value.len());
        key_then_value.extend_from_slice(key);
        key_then_value.extend_from_slice(&value);
        let node = Node {
            key_then_value: Bytes::from(key_then_value),
            expires_tick,
            prev: NIL,
            next: NIL,
            key_len,
            hot,
            replicated: false,
            occupied: true,
        };
        let index = match existing {
            Some(index) => {
                self.slab[index as usize] = node;
                index
            }
            None => {
                let index = self.occupy_slot(node);
                self.table
                    .insert_unique(table_hash(tag), TableSlot { index, tag }, |slot| {
                        table_hash(slot.tag)
                    });
                index
            }
        };
        self.push_front(index);
        self.bytes += size;
        Ok(outcome)
    }

    /// Removes `key`. Returns true if a live (non-expired) entry was
    /// removed; an expired one is removed too but counted as `expired`.
    pub fn delete(&mut self, key: &[u8], now: Instant) -> bool {
        let tag = self.tag_of(key);
        let Some(index) = self.find(tag, key) else {
            return false;
        };
        let was_live = self.slab[index as usize].is_live_at(self.tick(now));
        self.remove(index, tag);
        if !was_live {
            self.counters.expired += 1;
        }
        was_live
    }

    /// Periodic reclamation of expired entries nobody reads any more.
    ///
    /// Examines at most `max_checks` slab slots (free ones included, so the
    /// cost of a call is bounded by `max_checks` alone), resuming where the
    /// previous call stopped: a large shard is swept across many short calls
    /// instead of in one long pause, and repeated calls cover every entry.
    /// Returns how many entries were removed; they are also counted in
    /// `expired`.
    pub fn sweep_expired(&mut self, now: Instant, max_checks: usize) -> u64 {
        let now_tick = self.tick(now);
        let slots = self.slab.len();
        let mut removed = 0;
        // Never more than one lap per call, so no slot is examined twice.
        for _ in 0..max_checks.min(slots) {
            if self.sweep_cursor >= slots {
                self.sweep_cursor = 0;
            }
            let index = self.sweep_cursor;
            self.sweep_cursor += 1;
            let node = &self.slab[index];
            if node.occupied && !node.is_live_at(now_tick) {
                let tag = self.tag_of(node.key());
                self.remove(index as u32, tag);
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

    fn tag_of(&self, key: &[u8]) -> u32 {
        // Truncation is the point: the tag is the low half of the hash.
        xxh3_64_with_seed(key, self.hash_seed) as u32
    }

    fn find(&self, tag: u32, key: &[u8]) -> Option<u32> {
        let slab = &self.slab;
        self.table
            .find(table_hash(tag), |slot| {
                slot.tag == tag && slab[slot.index as usize].key() == key
            })
            .map(|slot| slot.index)
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

    /// Evicts from the LRU tail until `size` more bytes fit, and, when the
    /// write needs a fresh slot and the slab has run out of indices, until a
    /// slot is free. Returns how many entries were evicted.
    fn evict_until_fits(&mut self, size: u64, needs_slot: bool) -> u64 {
        let mut evicted = 0;
        loop {
            let room = self.capacity_bytes.saturating_sub(self.bytes);
            let out_of_slots = needs_slot && self.free_head == NIL && self.slab.len() >= MAX_SLOTS;
            if size <= room && !out_of_slots {
                break;
            }
            let victim = self.lru_tail;
            if victim == NIL {
                break;
            }
            let node = &self.slab[victim as usize];
            if node.hot || node.replicated {
                if let Some(keys) = self.evicted_with_copies.as_mut() {
                    keys.push(node.key().into());
                }
            }
            let tag = self.tag_of(node.key());
            self.remove(victim, tag);
            evicted += 1;
        }
        self.counters.evictions += evicted;
        evicted
    }

    /// Removes a linked, accounted entry entirely.
    fn remove(&mut self, index: u32, tag: u32) {
        self.unlink(index);
        self.bytes -= self.slab[index as usize].charged_bytes();
        self.forget_unlinked(index, tag);
    }

    /// Drops the table entry and frees the slot of an entry already out of
    /// the LRU list and the byte accounting.
    fn forget_unlinked(&mut self, index: u32, tag: u32) {
        if let Ok(slot) = self
            .table
            .find_entry(table_hash(tag), |slot| slot.index == index)
        {
            slot.remove();
        }
        self.slab[index as usize] = Node::vacant(self.free_head);
        self.free_head = index;
    }

    fn occupy_slot(&mut self, node: Node) -> u32 {
        if self.free_head != NIL {
            let index = self.free_head;
            self.free_head = self.slab[index as usize].next;
            self.slab[index as usize] = node;
            index
        } else {
            // evict_until_fits made sure an index is left.
            let index = self.slab.len() as u32;
            self.slab.push(node);
            index
        }
    }

    fn unlink(&mut self, index: u32) {
        let (prev, next) = {
            let node = &self.slab[index as usize];
            (node.prev, node.next)
        };
        if prev == NIL {
            self.lru_head = next;
        } else {
            self.slab[prev as usize].next = next;
        }
        if next == NIL {
            self.lru_tail = prev;
        } else {
            self.slab[next as usize].prev = prev;
        }
        let node = &mut self.slab[index as usize];
        node.prev = NIL;
        node.next = NIL;
    }

    fn push_front(&mut self, index: u32) {
        let old_head = self.lru_head;
        {
            let node = &mut self.slab[index as usize];
            node.prev = NIL;
            node.next = old_head;
        }
        if old_head == NIL {
            self.lru_tail = index;
        } else {
            self.slab[old_head as usize].prev = index;
        }
        self.lru_head = index;
    }

    fn move_to_front(&mut self, index: u32) {
        if self.lru_head != index {
            self.unlink(index);
            self.push_front(index);
        }
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
mod tests {
    use super::*;
    use std::collections::VecDeque;

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

    /// Checks every structural invariant against the raw parts.
    fn assert_consistent(shard: &Shard) {
        let mut forward = Vec::new();
        let mut prev = NIL;
        let mut cursor = shard.lru_head;
        while cursor != NIL {
            let node = &shard.slab[cursor as usize];
            assert!(node.occupied, "free slot {cursor} in the LRU list");
            assert_eq!(node.prev, prev, "broken back link at {cursor}");
            forward.push(cursor);
            assert!(forward.len() <= shard.slab.len(), "LRU list has a cycle");
            prev = cursor;
            cursor = node.next;
        }
        assert_eq!(shard.lru_tail, prev, "tail is not the last node");
        assert_eq!(forward.len(), shard.table.len(), "list and table disagree");

        let mut charged = 0;
        for slot in shard.table.iter() {
            let node = &shard.slab[slot.index as usize];
            assert!(node.occupied);
            assert_eq!(slot.tag, shard.tag_of(node.key()), "stale tag");
            charged += node.charged_bytes();
        }
        assert_eq!(shard.bytes, charged, "byte accounting drifted");
        assert!(shard.bytes <= shard.capacity_bytes, "over capacity");

        let mut free = 0;
        let mut cursor = shard.free_head;
        while cursor != NIL {
            assert!(!shard.slab[cursor as usize].occupied);
            free += 1;
            assert!(free <= shard.slab.len(), "free list has a cycle");
            cursor = shard.slab[cursor as usize].next;
        }
        assert_eq!(free + shard.table.len(), shard.slab.len(), "leaked slots");
    }

    #[test]
    fn node_and_overhead_stay_small() {
        if size_of::<usize>() == 8 {
            assert_eq!(size_of::<Node>(), 56);
            assert_eq!(size_of::<TableSlot>(), 8);
            assert_eq!(ENTRY_OVERHEAD, 118);
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
                    size: (key.len() + huge.len() + ENTRY_OVERHEAD) as u64,
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
        assert_eq!(shard.slab.len(), 10, "freed slots are reused");
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

    /// Straightforward reference: a deque in recency order, scanned
    /// linearly.
    struct Model {
        capacity: u64,
        /// Front is least recently used.
        entries: VecDeque<(Vec<u8>, Bytes, Option<Instant>, bool)>,
        stats: ShardStats,
    }

    impl Model {
        fn bytes(&self) -> u64 {
            self.entries
                .iter()
                .map(|(key, value, _, _)| (key.len() + value.len() + ENTRY_OVERHEAD) as u64)
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
            let entry = self.entries.remove(position)?;
            if !Self::live(entry.2, now) {
                self.stats.expired += 1;
                self.stats.misses += 1;
                return None;
            }
            self.stats.hits += 1;
            let found = Found {
                value: entry.1.clone(),
                hot: entry.3,
                expires_at: entry.2,
            };
            self.entries.push_back(entry);
            Some(found)
        }

        fn set(
            &mut self,
            key: &[u8],
            value: Bytes,
            expires_at: Option<Instant>,
            hot: bool,
            now: Instant,
        ) -> Result<SetOutcome, StoreError> {
            let size = (key.len() + value.len() + ENTRY_OVERHEAD) as u64;
            if size > self.capacity {
                return Err(StoreError::EntryTooLarge {
                    size,
                    capacity: self.capacity,
                });
            }
            let mut outcome = SetOutcome::default();
            if let Some(position) = self.position(key) {
                let old = self.entries.remove(position);
                outcome.replaced = old.is_some_and(|old| Self::live(old.2, now));
                if !outcome.replaced {
                    self.stats.expired += 1;
                }
            }
            if !Self::live(expires_at, now) {
                return Ok(outcome);
            }
            while self.bytes() + size > self.capacity {
                self.entries.pop_front();
                outcome.evicted += 1;
            }
            self.stats.evictions += outcome.evicted;
            self.entries
                .push_back((key.to_vec(), value, expires_at, hot));
            Ok(outcome)
        }

        fn delete(&mut self, key: &[u8], now: Instant) -> bool {
            let Some(old) = self.position(key).and_then(|p| self.entries.remove(p)) else {
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

        fn stats(&self) -> ShardStats {
            ShardStats {
                items: self.entries.len() as u64,
                bytes: self.bytes(),
                capacity_bytes: self.capacity,
                ..self.stats.clone()
            }
        }
    }

    #[test]
    fn randomized_workload_matches_a_simple_model() {
        for seed in 0..8 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let capacity = rng.u64(0..25) * 150 + rng.u64(0..150);
            let mut shard = Shard::new(capacity);
            let mut model = Model {
                capacity,
                entries: VecDeque::new(),
                stats: ShardStats::default(),
            };
            let t0 = Instant::now();
            let mut now = t0;
            for step in 0..4_000 {
                now += Duration::from_micros(rng.u64(0..2_000));
                let key = format!("key{}", rng.u32(0..40)).into_bytes();
                let context = format!("seed {seed} step {step}");
                match rng.u32(0..100) {
                    0..=39 => {
                        assert_eq!(shard.get(&key, now), model.get(&key, now), "{context}");
                    }
                    40..=84 => {
                        let value = Bytes::from(vec![rng.u8(..); rng.usize(0..300)]);
                        let expires_at = match rng.u32(0..4) {
                            0 => None,
                            1 => now.checked_sub(Duration::from_millis(1)),
                            _ => Some(now + Duration::from_micros(rng.u64(0..50_000))),
                        };
                        let hot = rng.bool();
                        assert_eq!(
                            shard.set(&key, value.clone(), expires_at, hot, now),
                            model.set(&key, value, expires_at, hot, now),
                            "{context}"
                        );
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
                assert_eq!(shard.stats(), model.stats(), "{context}");
                assert_eq!(shard.len(), model.entries.len(), "{context}");
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
        let each = charge_for(2, 10);
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
