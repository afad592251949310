//! The pure bookkeeping behind hot copies, singleflight and coherent
//! replica updates: no I/O and no runtime, so each piece is unit-tested
//! alone. The home core of a key (`core_of(key)`, the same core on every
//! node) owns one of each for all its keys, which is what makes them
//! single-threaded:
//!
//! - [`AutoHot`] notices a remote key this node keeps forwarding reads for;
//! - [`Flights`] lets concurrent misses for one key share one load;
//! - [`KeyLocks`] queues an owner's replica updates per key, so copies on
//!   other nodes receive a key's writes in the order the owner applied them.

mod detector;
mod flights;
mod locks;

pub use detector::AutoHot;
pub use flights::{Flight, Flights, Joined};
pub use locks::{Acquire, KeyLocks};
