//! Where a key lives.
//!
//! Routing is two independent steps:
//!
//! 1. [`Ring::owner`] picks the NODE: a consistent-hash ring with virtual
//!    nodes, so a membership change only moves the keys of the node that
//!    joined or left.
//! 2. [`core_of`] picks the CORE inside that node with a second hash whose
//!    seed differs from the ring's, so the keys one node owns (a narrow,
//!    structured slice of the ring's hash space) still spread evenly over its
//!    cores.
//!
//! Everything here is pure: no I/O, no threads, no clocks. A [`Ring`] is an
//! immutable snapshot built once per membership change and shared read-only
//! (behind an `Arc`) by every core.

pub mod core;
pub mod ring;

pub use self::core::core_of;
pub use ring::{Member, NodeId, Ring, DEFAULT_VNODES};
