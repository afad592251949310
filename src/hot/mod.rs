//! Hot copies, singleflight and per-key update order (being moved into
//! `engine/`).

mod flights;
mod locks;

pub use crate::engine::AutoHot;
pub use flights::{Flight, Flights, Joined};
pub use locks::{Acquire, KeyLocks};
