//! Budgets for the bytes of partly received request messages (pure).
//!
//! A unary call's message is buffered until it is complete, so a client
//! that opens many streams and never finishes their messages could make a
//! node hold gigabytes (the issue measured 525 MiB from one connection in
//! under 2 s). Every byte a stream's decoder holds is charged to two
//! [`Budget`]s, its connection's and its core's; a stream whose message
//! would push either over its limit is refused (`RESOURCE_EXHAUSTED`)
//! instead of buffering more. The charge is released the moment the
//! message is complete or the stream dies.
//!
//! The same per-connection figure bounds the client side: a peer client
//! keeps at most that many request bytes in flight on one connection, so
//! a node forwarding over one multiplexed connection never trips the
//! budget of the node it forwards to (if both run the same limits).

use std::cell::Cell;
use std::rc::Rc;

/// The smallest per-connection budget, whatever the message limit.
pub const MIN_CONNECTION_BUDGET: usize = 4 << 20;

/// Bytes the partly received messages of one connection may hold: two of
/// the largest messages, at least [`MIN_CONNECTION_BUDGET`]. One message of
/// the largest size always fits.
pub fn connection_budget(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_mul(2)
        .max(MIN_CONNECTION_BUDGET)
}

/// Bytes the partly received messages of all gRPC connections of one core
/// may hold: the core's share of `--max-connection-memory`, at least one
/// connection's budget.
pub fn core_budget(connection_budget: usize, connection_memory_per_core: u64) -> usize {
    usize::try_from(connection_memory_per_core)
        .unwrap_or(usize::MAX)
        .max(connection_budget)
}

/// A byte count with a ceiling, shared by the streams it covers.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    held: Cell<usize>,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget {
            limit,
            held: Cell::new(0),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn held(&self) -> usize {
        self.held.get()
    }

    /// Bytes that can still be charged.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.held.get())
    }
}

/// What one stream holds against its connection's budget and, unless it
/// is exempt, its core's. Dropping it releases the charge.
#[derive(Debug)]
pub struct Hold {
    connection: Rc<Budget>,
    core: Option<Rc<Budget>>,
    held: usize,
}

/// The budget a stream could not be charged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// Bytes the stream asked to hold in all.
    pub wanted: usize,
    /// What it could have held: its own charge plus the room left.
    pub room: usize,
}

impl Hold {
    /// `core: None` for a stream charged to its connection only (a peer
    /// node that proved the cluster secret, which keeps its own requests
    /// within one connection's budget).
    pub fn new(connection: Rc<Budget>, core: Option<Rc<Budget>>) -> Hold {
        Hold {
            connection,
            core,
            held: 0,
        }
    }

    fn budgets(&self) -> impl Iterator<Item = &Budget> {
        std::iter::once(&*self.connection).chain(self.core.as_deref())
    }

    pub fn held(&self) -> usize {
        self.held
    }

    /// The most this stream may hold now: what it holds plus the room left
    /// in the tighter of its two budgets.
    pub fn room(&self) -> usize {
        let left = self.budgets().map(Budget::room).min().unwrap_or(0);
        self.held.saturating_add(left)
    }

    /// Moves this stream's charge to `bytes`. Growing past
    /// [`Hold::room`] is refused and changes nothing. Returns the change as
    /// `(grown, shrunk)`, the form a metrics gauge takes.
    pub fn set(&mut self, bytes: usize) -> Result<(usize, usize), OverBudget> {
        if bytes > self.held {
            let room = self.room();
            if bytes > room {
                return Err(OverBudget {
                    wanted: bytes,
                    room,
                });
            }
            let grown = bytes - self.held;
            for budget in self.budgets() {
                budget.held.set(budget.held.get() + grown);
            }
            self.held = bytes;
            Ok((grown, 0))
        } else {
            let shrunk = self.held - bytes;
            for budget in self.budgets() {
                budget.held.set(budget.held.get().saturating_sub(shrunk));
            }
            self.held = bytes;
            Ok((0, shrunk))
        }
    }

    /// Releases the whole charge; the bytes released.
    pub fn release(&mut self) -> usize {
        let released = self.held;
        // Shrinking cannot fail.
        let _ = self.set(0);
        released
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn budgets_follow_the_message_limit_and_memory() {
        assert_eq!(connection_budget(1024), 4 * MIB);
        assert_eq!(connection_budget(MIB + 100), 4 * MIB);
        assert_eq!(connection_budget(3 * MIB), 6 * MIB);
        assert_eq!(connection_budget(usize::MAX), usize::MAX);
        // --max-connection-memory 64MiB over 2 cores: 32 MiB per core.
        assert_eq!(core_budget(4 * MIB, 32 * MIB as u64), 32 * MIB);
        assert_eq!(core_budget(4 * MIB, 2 * MIB as u64), 4 * MIB);
    }

    #[test]
    fn streams_share_their_connection_and_core_budgets() {
        let core = Rc::new(Budget::new(10));
        let conn_a = Rc::new(Budget::new(6));
        let conn_b = Rc::new(Budget::new(6));
        let mut a1 = Hold::new(conn_a.clone(), Some(core.clone()));
        let mut a2 = Hold::new(conn_a.clone(), Some(core.clone()));
        let mut b1 = Hold::new(conn_b.clone(), Some(core.clone()));

        assert_eq!(a1.set(4), Ok((4, 0)));
        assert_eq!(a2.room(), 2);
        assert_eq!(a2.set(3), Err(OverBudget { wanted: 3, room: 2 }));
        assert_eq!(a2.held(), 0, "a refused charge changes nothing");
        assert_eq!(conn_a.held(), 4);
        assert_eq!(a2.set(2), Ok((2, 0)));
        // Connection B has room of its own, but the core has only 4 left.
        assert_eq!(b1.room(), 4);
        assert_eq!(b1.set(5), Err(OverBudget { wanted: 5, room: 4 }));
        assert_eq!(b1.set(4), Ok((4, 0)));
        assert_eq!(core.held(), 10);
        // Shrinking and dropping release both budgets.
        assert_eq!(a1.set(1), Ok((0, 3)));
        assert_eq!((conn_a.held(), core.held()), (3, 7));
        drop(a2);
        assert_eq!((conn_a.held(), core.held()), (1, 5));
        assert_eq!(b1.release(), 4);
        drop(a1);
        assert_eq!((conn_a.held(), conn_b.held(), core.held()), (0, 0, 0));

        // A stream exempt from the core budget is held to its connection's.
        let mut peer = Hold::new(conn_b.clone(), None);
        core.held.set(10);
        assert_eq!(peer.set(6), Ok((6, 0)));
        assert_eq!(peer.set(7), Err(OverBudget { wanted: 7, room: 6 }));
        drop(peer);
        assert_eq!((conn_b.held(), core.held()), (0, 10));
    }
}
