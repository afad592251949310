//! [`Flights`]: singleflight, one load per key however many ask at once.

use std::collections::HashMap;

use futures_channel::oneshot;

/// Loads in progress on one core, by key. The first caller for a key
/// becomes the leader and starts the load; later callers join and wait for
/// the leader's result, which every caller receives as a clone.
#[derive(Debug)]
pub struct Flights<T> {
    in_flight: HashMap<Box<[u8]>, Flight<T>>,
}

/// One load in progress.
#[derive(Debug)]
pub struct Flight<T> {
    waiters: Vec<oneshot::Sender<T>>,
    /// The key was written or invalidated while the load was running, so
    /// its result may predate the write: answer the waiters (their reads
    /// were concurrent with the write) but do not keep a copy of it.
    pub stale: bool,
}

impl<T: Clone> Flight<T> {
    /// Hands `result` to every caller still waiting.
    pub fn deliver(self, result: T) {
        for waiter in self.waiters {
            // A waiter whose client went away has dropped its receiver.
            let _ = waiter.send(result.clone());
        }
    }

    #[cfg(test)]
    fn waiters(&self) -> usize {
        self.waiters.len()
    }
}

/// How a caller joined the flight for its key.
#[derive(Debug)]
pub enum Joined<T> {
    /// No load was running: the caller must start it and call
    /// [`Flights::land`] when it ends.
    Leader(oneshot::Receiver<T>),
    /// A load was running: wait for its result.
    Follower(oneshot::Receiver<T>),
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            in_flight: HashMap::new(),
        }
    }
}

impl<T: Clone> Flights<T> {
    pub fn join(&mut self, key: &[u8]) -> Joined<T> {
        let (tx, rx) = oneshot::channel();
        match self.in_flight.get_mut(key) {
            Some(flight) => {
                flight.waiters.push(tx);
                Joined::Follower(rx)
            }
            None => {
                self.in_flight.insert(
                    key.into(),
                    Flight {
                        waiters: vec![tx],
                        stale: false,
                    },
                );
                Joined::Leader(rx)
            }
        }
    }

    /// Marks the load of `key`, if one is running, as overtaken by a write.
    pub fn mark_stale(&mut self, key: &[u8]) -> bool {
        // Every write asks; usually nothing is loading, so skip hashing.
        if self.in_flight.is_empty() {
            return false;
        }
        match self.in_flight.get_mut(key) {
            Some(flight) => {
                flight.stale = true;
                true
            }
            None => false,
        }
    }

    /// The leader's load ended: the flight leaves the table (the next miss
    /// starts a new load) and is returned for its result to be delivered.
    pub fn land(&mut self, key: &[u8]) -> Option<Flight<T>> {
        self.in_flight.remove(key)
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(joined: Joined<u32>) -> oneshot::Receiver<u32> {
        match joined {
            Joined::Leader(rx) | Joined::Follower(rx) => rx,
        }
    }

    #[test]
    fn one_leader_and_everyone_gets_the_result() {
        let mut f = Flights::default();
        let first = f.join(b"k");
        assert!(matches!(first, Joined::Leader(_)));
        let others: Vec<_> = (0..5).map(|_| f.join(b"k")).collect();
        assert!(others.iter().all(|j| matches!(j, Joined::Follower(_))));
        assert!(matches!(f.join(b"other"), Joined::Leader(_)));
        let flight = f.land(b"k").unwrap();
        assert_eq!(flight.waiters(), 6);
        assert!(!flight.stale);
        flight.deliver(7);
        let mut all = vec![receiver(first)];
        all.extend(others.into_iter().map(receiver));
        for mut rx in all {
            assert_eq!(rx.try_recv().unwrap(), Some(7));
        }
        // The next miss starts a new load.
        assert!(matches!(f.join(b"k"), Joined::Leader(_)));
    }

    #[test]
    fn a_write_during_the_load_marks_it_stale() {
        let mut f: Flights<u32> = Flights::default();
        assert!(!f.mark_stale(b"k"));
        let _leader = f.join(b"k");
        assert!(f.mark_stale(b"k"));
        assert!(f.land(b"k").unwrap().stale);
        assert!(f.is_empty());
    }

    #[test]
    fn gone_waiters_do_not_stop_delivery() {
        let mut f = Flights::default();
        let leader = f.join(b"k");
        drop(f.join(b"k"));
        let last = f.join(b"k");
        f.land(b"k").unwrap().deliver(1);
        assert_eq!(receiver(leader).try_recv().unwrap(), Some(1));
        assert_eq!(receiver(last).try_recv().unwrap(), Some(1));
    }
}
