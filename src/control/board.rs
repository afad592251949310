//! [`RingBoard`]: how ring snapshots travel from the control thread to the
//! data cores.
//!
//! The control thread builds a new immutable [`Ring`] on every membership
//! change and [`publish`](RingBoard::publish)es it. Each data core keeps its
//! own `Arc<Ring>` and, from a timer (about every 25 ms, never per request),
//! compares [`RingBoard::version`] with the version it holds; only when they
//! differ does it take the lock once in [`RingBoard::current`] to swap its
//! snapshot. The request path therefore touches no lock and no shared
//! atomic: it reads the core's own `Arc<Ring>`.
//!
//! A `Mutex<Arc<Ring>>` is enough here: it is taken once per membership
//! change by the writer and once per change per core by the readers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::routing::Ring;

/// The latest ring snapshot and its version number.
#[derive(Debug)]
pub struct RingBoard {
    /// Bumped (while `ring`'s lock is held) after every publish, so a reader
    /// that sees a new version and then takes the lock gets that snapshot or
    /// a newer one, never an older one.
    version: AtomicU64,
    /// The current snapshot; replaced whole, never mutated.
    ring: Mutex<Arc<Ring>>,
    /// Bumped when this node lost its etcd lease: the other nodes dropped it
    /// from their rings and may have taken writes for its keys, so whatever
    /// the cores hold may be stale and must go before they serve as owners
    /// again.
    flush_epoch: AtomicU64,
}

impl RingBoard {
    /// A board holding `initial` at version 0.
    pub fn new(initial: Ring) -> Arc<RingBoard> {
        Arc::new(RingBoard {
            version: AtomicU64::new(0),
            ring: Mutex::new(Arc::new(initial)),
            flush_epoch: AtomicU64::new(0),
        })
    }

    /// Replace the snapshot and bump the version (even if `ring` equals the
    /// current one: a re-publish tells cores to drop any local override).
    pub fn publish(&self, ring: Ring) {
        let mut slot = self.lock();
        *slot = Arc::new(ring);
        // Release pairs with the Acquire in `version`: a core that sees the
        // new number also sees the stored snapshot once it takes the lock.
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Version of the current snapshot: one atomic load, cheap enough to poll
    /// from every core's timer.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The current snapshot with its version (read consistently together).
    pub fn current(&self) -> (u64, Arc<Ring>) {
        let slot = self.lock();
        // The version only moves while the lock is held, so this pair is
        // consistent.
        (self.version.load(Ordering::Acquire), Arc::clone(&slot))
    }

    /// Ask every core to drop its cached entries (see `flush_epoch`).
    pub fn request_flush(&self) {
        self.flush_epoch.fetch_add(1, Ordering::Release);
    }

    /// How many flushes were requested; cores compare it with the last one
    /// they carried out, from their timer.
    #[inline]
    pub fn flush_epoch(&self) -> u64 {
        self.flush_epoch.load(Ordering::Acquire)
    }

    /// The current snapshot without its version.
    pub fn ring(&self) -> Arc<Ring> {
        Arc::clone(&self.lock())
    }

    /// The critical sections only swap an `Arc`, so they cannot leave the
    /// value half-written: a poisoned lock (a panic elsewhere while holding
    /// it) still guards a valid snapshot and is used as is.
    fn lock(&self) -> MutexGuard<'_, Arc<Ring>> {
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Member;

    fn ring_of(names: &[&str]) -> Ring {
        Ring::new(
            names
                .iter()
                .map(|name| Member {
                    name: (*name).into(),
                    http_addr: format!("{name}:1"),
                    grpc_addr: format!("{name}:2"),
                    cores: 1,
                    resp_addr: None,
                })
                .collect(),
            8,
        )
    }

    #[test]
    fn starts_at_version_zero_with_the_initial_ring() {
        let board = RingBoard::new(ring_of(&["a"]));
        assert_eq!(board.version(), 0);
        let (version, ring) = board.current();
        assert_eq!(version, 0);
        assert_eq!(*ring, ring_of(&["a"]));
    }

    #[test]
    fn publish_bumps_the_version_and_swaps_the_snapshot() {
        let board = RingBoard::new(Ring::default());
        let (_, before) = board.current();
        board.publish(ring_of(&["a", "b"]));
        assert_eq!(board.version(), 1);
        let (version, after) = board.current();
        assert_eq!(version, 1);
        assert_eq!(after.len(), 2);
        // Holders of the old snapshot keep it intact.
        assert!(before.is_empty());
        // Re-publishing an equal ring still bumps the version.
        board.publish(ring_of(&["a", "b"]));
        assert_eq!(board.version(), 2);
        assert_eq!(*board.ring(), ring_of(&["a", "b"]));
    }

    #[test]
    fn readers_on_other_threads_never_see_an_older_snapshot_than_the_version() {
        // Snapshot i has i members: a reader that saw version v must get a
        // ring with at least v members.
        let names: Vec<String> = (0..200).map(|i| format!("n{i}")).collect();
        let board = RingBoard::new(Ring::default());
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let board = Arc::clone(&board);
                std::thread::spawn(move || {
                    let mut last = 0;
                    while last < 200 {
                        let seen = board.version();
                        let (version, ring) = board.current();
                        assert!(version >= seen);
                        assert_eq!(ring.len() as u64, version);
                        assert!(version >= last, "version went backwards");
                        last = version;
                    }
                })
            })
            .collect();
        for i in 1..=200 {
            let members: Vec<&str> = names.iter().take(i).map(String::as_str).collect();
            board.publish(ring_of(&members));
        }
        for reader in readers {
            reader.join().expect("reader thread panicked");
        }
    }
}
