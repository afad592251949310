//! Segment memory and the format of an item inside a segment.
//!
//! A shard's segments are slices of one [`Region`]: pages that were never
//! written cost no resident memory, and a released segment's pages go
//! straight back to the kernel, so segments come and go without fragmenting
//! the malloc heap (large `Vec`s would, once glibc's dynamic mmap threshold
//! has risen past them).
//!
//! Item layout, little-endian, no padding (items are read and written with
//! `from_le_bytes`, never through references, so alignment does not matter):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | flags ([`LIVE`], [`HOT`], [`REPLICATED`], [`ACCESSED`], [`EXPIRES`], [`OUT_OF_LINE`]) |
//! | 2 | key length (0 for an out-of-line item: the key lives with the value) |
//! | 4 | value length, or for an out-of-line item its index in the shard's out-of-line table |
//! | 8 | expiry tick, present only with [`EXPIRES`] |
//! | key length | key (inline items only) |
//! | value length | value (inline items only) |

use std::alloc::{handle_alloc_error, Layout};
use std::ptr::NonNull;

/// The item holds a current entry; cleared when it is deleted, overwritten,
/// expired or evicted (its bytes stay until the segment is recycled).
pub(super) const LIVE: u8 = 1;
/// Written hot: every node holds a copy.
pub(super) const HOT: u8 = 1 << 1;
/// A copy was handed to another node (an automatic hot copy).
pub(super) const REPLICATED: u8 = 1 << 2;
/// Read since it was written or last kept by a recycle: the CLOCK bit.
pub(super) const ACCESSED: u8 = 1 << 3;
/// An expiry tick follows the fixed header.
pub(super) const EXPIRES: u8 = 1 << 4;
/// Key and value live in their own allocation, handed out without a copy.
pub(super) const OUT_OF_LINE: u8 = 1 << 5;

/// Flags, key length, value length or out-of-line index.
pub(super) const FIXED_HEADER_BYTES: usize = 7;
/// The optional expiry tick.
pub(super) const EXPIRY_BYTES: usize = 8;

/// Expiry tick of an entry that never expires.
pub(super) const NEVER: i64 = i64::MAX;

/// The decoded header of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ItemHeader {
    pub flags: u8,
    pub key_len: u16,
    /// Value length (inline) or out-of-line index.
    pub word: u32,
    /// [`NEVER`] without [`EXPIRES`].
    pub expires_tick: i64,
}

impl ItemHeader {
    pub fn read(bytes: &[u8], at: usize) -> ItemHeader {
        let flags = bytes[at];
        let key_len = u16::from_le_bytes([bytes[at + 1], bytes[at + 2]]);
        let mut word = [0; 4];
        word.copy_from_slice(&bytes[at + 3..at + 7]);
        let expires_tick = if flags & EXPIRES != 0 {
            let mut tick = [0; 8];
            tick.copy_from_slice(&bytes[at + 7..at + 15]);
            i64::from_le_bytes(tick)
        } else {
            NEVER
        };
        ItemHeader {
            flags,
            key_len,
            word: u32::from_le_bytes(word),
            expires_tick,
        }
    }

    pub fn write(&self, bytes: &mut [u8], at: usize) {
        bytes[at] = self.flags;
        bytes[at + 1..at + 3].copy_from_slice(&self.key_len.to_le_bytes());
        bytes[at + 3..at + 7].copy_from_slice(&self.word.to_le_bytes());
        if self.flags & EXPIRES != 0 {
            bytes[at + 7..at + 15].copy_from_slice(&self.expires_tick.to_le_bytes());
        }
    }

    pub fn header_len(&self) -> usize {
        header_len(self.flags & EXPIRES != 0)
    }

    /// Bytes the whole item takes in its segment.
    pub fn len(&self) -> usize {
        if self.flags & OUT_OF_LINE != 0 {
            self.header_len()
        } else {
            self.header_len() + usize::from(self.key_len) + self.word as usize
        }
    }

    pub fn is_live_at(&self, now_tick: i64) -> bool {
        now_tick < self.expires_tick
    }

    /// Where an inline item's key starts, relative to the item.
    pub fn key_start(&self) -> usize {
        self.header_len()
    }

    /// Where an inline item's value starts, relative to the item.
    pub fn value_start(&self) -> usize {
        self.header_len() + usize::from(self.key_len)
    }
}

pub(super) fn header_len(expires: bool) -> usize {
    FIXED_HEADER_BYTES + if expires { EXPIRY_BYTES } else { 0 }
}

/// The memory of every segment of a shard: one anonymous private mapping of
/// `segments x segment_bytes`, reserved up front (`MAP_NORESERVE`: address
/// space only) and backed by pages as segments are written. A released
/// segment's pages go back to the kernel (`MADV_DONTNEED`), so segments come
/// and go without fragmenting the malloc heap, and the whole shard is one
/// kernel mapping however many segments it has (a mapping per segment
/// would run into `vm.max_map_count` on a large node).
pub(super) struct Region {
    start: NonNull<u8>,
    len: usize,
    segment_bytes: usize,
}

// SAFETY: the mapping is owned exclusively by this value, like a
// `Box<[u8]>`; nothing else aliases it.
unsafe impl Send for Region {}
// SAFETY: shared access only reads through `&[u8]`.
unsafe impl Sync for Region {}

impl Region {
    /// Reserves `segments` segments of `segment_bytes` (a multiple of the
    /// page size). Failure aborts, as a failed `Vec` allocation does.
    pub fn new(segments: usize, segment_bytes: usize) -> Region {
        let len = segments.saturating_mul(segment_bytes);
        // SAFETY: an anonymous private mapping at an address of the
        // kernel's choosing touches no existing memory.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        match NonNull::new(start.cast::<u8>()) {
            Some(start) if start.as_ptr() != libc::MAP_FAILED.cast::<u8>() => Region {
                start,
                len,
                segment_bytes,
            },
            _ => handle_alloc_error(
                Layout::from_size_align(len, 4096).unwrap_or(Layout::new::<u8>()),
            ),
        }
    }

    pub fn segment(&self, id: u32) -> &[u8] {
        let offset = self.offset_of(id);
        // SAFETY: `offset_of` keeps the range inside the live read-write
        // mapping owned by `self`, borrowed immutably for the slice's
        // lifetime.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr().add(offset), self.segment_bytes) }
    }

    pub fn segment_mut(&mut self, id: u32) -> &mut [u8] {
        let offset = self.offset_of(id);
        // SAFETY: as in `segment`, borrowed mutably and exclusively.
        unsafe {
            std::slice::from_raw_parts_mut(self.start.as_ptr().add(offset), self.segment_bytes)
        }
    }

    /// Hands a segment's pages back to the kernel; it reads as zeroes
    /// afterwards.
    pub fn release(&mut self, id: u32) {
        let offset = self.offset_of(id);
        // SAFETY: the range is inside the mapping and page aligned; no
        // slice borrows it (this takes `&mut self`). DONTNEED on a private
        // anonymous mapping only drops the pages' contents.
        unsafe {
            libc::madvise(
                self.start.as_ptr().add(offset).cast(),
                self.segment_bytes,
                libc::MADV_DONTNEED,
            );
        }
    }

    fn offset_of(&self, id: u32) -> usize {
        let offset = id as usize * self.segment_bytes;
        assert!(
            offset + self.segment_bytes <= self.len,
            "segment {id} outside the region"
        );
        offset
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`, which no
        // slice outlives (they borrow `self`).
        unsafe {
            libc::munmap(self.start.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_with_and_without_expiry() {
        let mut region = Region::new(2, 4096);
        let memory = region.segment_mut(1);
        let plain = ItemHeader {
            flags: LIVE | HOT,
            key_len: 300,
            word: 70_000,
            expires_tick: NEVER,
        };
        plain.write(memory, 5);
        assert_eq!(ItemHeader::read(memory, 5), plain);
        assert_eq!(plain.len(), 7 + 300 + 70_000);
        let expiring = ItemHeader {
            flags: LIVE | EXPIRES | OUT_OF_LINE,
            key_len: 0,
            word: 9,
            expires_tick: -42,
        };
        expiring.write(memory, 100);
        assert_eq!(ItemHeader::read(memory, 100), expiring);
        assert_eq!(expiring.len(), 15, "out of line: the header alone");
        assert!(expiring.is_live_at(-43) && !expiring.is_live_at(-42));
    }

    #[test]
    fn released_segments_read_as_zeroes_and_segments_do_not_overlap() {
        let mut region = Region::new(3, 8192);
        assert!(region.segment(2).iter().all(|&b| b == 0));
        region.segment_mut(0).fill(1);
        region.segment_mut(1).fill(2);
        region.segment_mut(2).fill(3);
        region.release(1);
        assert!(region.segment(0).iter().all(|&b| b == 1));
        assert!(region.segment(1).iter().all(|&b| b == 0));
        assert!(region.segment(2).iter().all(|&b| b == 3));
        assert_eq!(region.segment(2).len(), 8192);
    }
}
