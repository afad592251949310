//! [`KeyLocks`]: per-key FIFO mutual exclusion for an owner's replica
//! updates.

use std::collections::{HashMap, VecDeque};

use futures_channel::oneshot;

/// Per-key locks, granted in request order. An owner holds a key's lock
/// while it sends that key's replica updates, so two writes to one key can
/// never reach a node's copy in the opposite order; writes to different
/// keys never wait for each other.
#[derive(Debug, Default)]
pub struct KeyLocks {
    /// Present while the key is locked; the queue holds the waiters.
    held: HashMap<Box<[u8]>, VecDeque<oneshot::Sender<()>>>,
}

/// The outcome of asking for a key's lock.
#[derive(Debug)]
pub enum Acquire {
    /// Granted at once.
    Granted,
    /// Granted when this resolves; dropping it gives up the place.
    Queued(oneshot::Receiver<()>),
}

impl KeyLocks {
    pub fn acquire(&mut self, key: &[u8]) -> Acquire {
        match self.held.get_mut(key) {
            Some(queue) => {
                let (tx, rx) = oneshot::channel();
                queue.push_back(tx);
                Acquire::Queued(rx)
            }
            None => {
                self.held.insert(key.into(), VecDeque::new());
                Acquire::Granted
            }
        }
    }

    /// Passes the key's lock to the next waiter still waiting, or frees it.
    pub fn release(&mut self, key: &[u8]) {
        let Some(queue) = self.held.get_mut(key) else {
            return;
        };
        while let Some(next) = queue.pop_front() {
            if next.send(()).is_ok() {
                return;
            }
        }
        self.held.remove(key);
    }

    /// Whether someone holds the lock (an update of the key is in flight).
    pub fn is_locked(&self, key: &[u8]) -> bool {
        // Every owner write asks; usually no update is in flight.
        !self.held.is_empty() && self.held.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_in_order_and_freed_when_nobody_waits() {
        let mut locks = KeyLocks::default();
        assert!(matches!(locks.acquire(b"k"), Acquire::Granted));
        assert!(matches!(locks.acquire(b"other"), Acquire::Granted));
        let Acquire::Queued(mut second) = locks.acquire(b"k") else {
            panic!("second acquire must queue")
        };
        let Acquire::Queued(mut third) = locks.acquire(b"k") else {
            panic!("third acquire must queue")
        };
        assert_eq!(second.try_recv().unwrap(), None);
        locks.release(b"k");
        assert_eq!(second.try_recv().unwrap(), Some(()));
        assert_eq!(third.try_recv().unwrap(), None);
        locks.release(b"k");
        assert_eq!(third.try_recv().unwrap(), Some(()));
        assert!(locks.is_locked(b"k"));
        locks.release(b"k");
        assert!(!locks.is_locked(b"k"));
        locks.release(b"other");
        assert!(locks.is_empty());
    }

    #[test]
    fn a_waiter_that_gave_up_is_skipped() {
        let mut locks = KeyLocks::default();
        assert!(matches!(locks.acquire(b"k"), Acquire::Granted));
        drop(locks.acquire(b"k"));
        let Acquire::Queued(mut last) = locks.acquire(b"k") else {
            panic!("must queue")
        };
        locks.release(b"k");
        assert_eq!(last.try_recv().unwrap(), Some(()));
        locks.release(b"k");
        assert_eq!(locks.len(), 0);
    }
}
