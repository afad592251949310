//! The only values that travel between cores: an [`Op`] for a shard and the
//! [`Reply`] it produces.
//!
//! Everything here is `Send` plain data. A front end turns a request into an
//! `Op`; whichever core owns the key executes it against its own shard and
//! sends back a `Reply`. Values are `Bytes`, so a reply hands over a
//! reference-counted buffer instead of copying the value between cores.

use std::time::Duration;

use bytes::Bytes;

use crate::metrics::CoreSnapshot;
use crate::store::ShardStats;

/// Work for the core that owns `key` (or, for `Snapshot`, for every core).
#[derive(Debug)]
pub enum Op {
    Get {
        key: Box<[u8]>,
    },
    Set {
        key: Box<[u8]>,
        value: Bytes,
        /// Zero means the entry never expires.
        ttl: Duration,
        hot: bool,
    },
    Delete {
        key: Box<[u8]>,
    },
    /// Report this core's shard statistics and request counters (for /metrics).
    Snapshot,
}

impl Op {
    /// The key the op is routed by; `None` for ops addressed to a core.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Op::Get { key } | Op::Set { key, .. } | Op::Delete { key } => Some(key),
            Op::Snapshot => None,
        }
    }
}

#[derive(Debug)]
pub enum Reply {
    /// Result of `Get`: the value and whether it was written as hot.
    Value(Option<(Bytes, bool)>),
    Stored,
    /// Result of `Delete`: whether a live entry was removed.
    Deleted(bool),
    Snapshot(Box<(ShardStats, CoreSnapshot)>),
    /// The entry can never fit in the owning shard.
    TooLarge(String),
    /// The owning core is gone (only during shutdown).
    Unavailable,
    /// The key's owner node could not be reached or failed the request.
    OwnerUnavailable {
        peer: String,
        reason: String,
    },
}
