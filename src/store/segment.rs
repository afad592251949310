//! Segment memory and the format of an item inside a segment.
//!
//! A segment is one anonymous private mapping. Pages that were never
//! written cost no resident memory, and dropping a segment hands its pages
//! straight back to the kernel, so segments can come and go without
//! fragmenting the malloc heap (a 1 MiB `Vec` would, once glibc's dynamic
//! mmap threshold has risen past it).
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

/// The bytes of one segment: an anonymous private mapping of `len` bytes,
/// zero-filled on first touch and unmapped on drop.
pub(super) struct SegmentMemory {
    start: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned exclusively by this value, like a
// `Box<[u8]>`; nothing else aliases it.
unsafe impl Send for SegmentMemory {}
// SAFETY: shared access only reads through `&[u8]`.
unsafe impl Sync for SegmentMemory {}

impl SegmentMemory {
    /// Maps `len` bytes (a positive multiple of the page size). Out of
    /// memory aborts, as a failed `Vec` allocation does.
    pub fn new(len: usize) -> SegmentMemory {
        // SAFETY: an anonymous private mapping at an address of the
        // kernel's choosing touches no existing memory.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        match NonNull::new(start.cast::<u8>()) {
            Some(start) if start.as_ptr() != libc::MAP_FAILED.cast::<u8>() => {
                SegmentMemory { start, len }
            }
            _ => handle_alloc_error(
                Layout::from_size_align(len, 4096).unwrap_or(Layout::new::<u8>()),
            ),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `start..start + len` is a live read-write mapping owned by
        // `self`, borrowed immutably for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, borrowed mutably and exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }
}

impl Drop for SegmentMemory {
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
        let mut memory = SegmentMemory::new(4096);
        let plain = ItemHeader {
            flags: LIVE | HOT,
            key_len: 300,
            word: 70_000,
            expires_tick: NEVER,
        };
        plain.write(memory.bytes_mut(), 5);
        assert_eq!(ItemHeader::read(memory.bytes(), 5), plain);
        assert_eq!(plain.len(), 7 + 300 + 70_000);
        let expiring = ItemHeader {
            flags: LIVE | EXPIRES | OUT_OF_LINE,
            key_len: 0,
            word: 9,
            expires_tick: -42,
        };
        expiring.write(memory.bytes_mut(), 100);
        assert_eq!(ItemHeader::read(memory.bytes(), 100), expiring);
        assert_eq!(expiring.len(), 15, "out of line: the header alone");
        assert!(expiring.is_live_at(-43) && !expiring.is_live_at(-42));
    }

    #[test]
    fn fresh_memory_reads_as_zeroes() {
        let memory = SegmentMemory::new(8192);
        assert!(memory.bytes().iter().all(|&b| b == 0));
        assert_eq!(memory.bytes().len(), 8192);
    }
}
