//! The per-key policy of one core as plain, synchronous, single-threaded
//! code with time passed in: the main shard, the hot tier and the negative
//! cache, loads in flight and their waiters, each key's queue of replica
//! updates, and the automatic-copy detector.
//!
//! The engine never does I/O. Given an op, the ring as this core sees it
//! and the time, [`Engine::call`] either answers at once or says, as
//! [`Effect`]s, what must happen next: load from this peer, load from the
//! origin, forward this write to its owner, send these replica updates,
//! answer this waiter. The runtime carries each effect out (its executor,
//! the peer pool, the origin client) and hands the result back
//! ([`Engine::peer_load_done`], [`Engine::origin_load_done`],
//! [`Engine::updates_done`], [`Engine::ring_changed`]), which may answer
//! waiters and ask for more. Waiters are [`Token`]s the runtime chose and
//! maps to its own reply channels, so no runtime type lives here and every
//! rule below is unit-tested in milliseconds.
//!
//! ```text
//! owner here:   shard ─hit─> answer
//!                 └─miss─> hot copy? ─> negative? ─> LoadFromOrigin (one per key)
//! owner remote: hot copy ─hit─> answer (no network)
//!                 └─miss─> LoadFromPeer (one per key) ─> maybe keep an auto copy
//! owner write:  shard ─copies elsewhere?─> SendUpdates (queued per key) ─> answer
//! remote write: drop own copy ─> Forward
//! ```

mod detector;
mod policy;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::Bytes;

pub use detector::AutoHot;
pub use policy::Engine;

use crate::config::Config;
use crate::ops::{Op, ReplicaUpdate, Reply};
use crate::routing::NodeId;
use crate::store::TtlJitter;

/// Most distinct remote keys the auto-hot detector tracks per core and
/// second.
pub const AUTO_HOT_TRACKED_KEYS: usize = 10_000;

/// A waiter: the runtime's name for one op whose answer comes later (it
/// maps the token to the channel the answer goes back on).
pub type Token = u64;

/// One load in flight. Loads outlive the readers that started them, and a
/// load a write overtook is kept apart from the key's next load, so its
/// result must be handed back by id.
pub type LoadId = u64;

/// The engine's settings, taken from the configuration once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub shard_capacity: u64,
    /// Zero turns hot copies off.
    pub hot_capacity: u64,
    pub negative_capacity: u64,
    /// How long an origin 404 is remembered; zero: not at all.
    pub negative_ttl: Duration,
    /// Forwarded reads per second that earn an automatic copy; zero: off.
    pub hot_auto_threshold: u32,
    /// Longest life of an automatic copy.
    pub hot_auto_ttl: Duration,
    /// An origin is configured: owners load misses from it.
    pub has_origin: bool,
    pub origin_ttl: Duration,
    pub jitter: TtlJitter,
    /// `--max-value-bytes`: what `APPEND` may grow a value to.
    pub max_value_bytes: u64,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            shard_capacity: config.shard_capacity(),
            hot_capacity: config.hot_capacity(),
            // The negative cache holds keys only: a small fraction suffices.
            negative_capacity: (config.shard_capacity() / 64).max(4096),
            negative_ttl: config.negative_ttl(),
            hot_auto_threshold: config.hot_auto_threshold,
            hot_auto_ttl: config.hot_auto_ttl(),
            has_origin: config.origin.is_some(),
            origin_ttl: config.origin_ttl(),
            jitter: TtlJitter::new(config.ttl_jitter, config.ttl_jitter_max()),
            max_value_bytes: config.max_value_bytes,
        }
    }
}

/// What the engine needs to know about the ring: who owns a key and who
/// the members are. Indices are positions in [`RingFacts::names`].
pub trait RingFacts {
    /// Index of the member that owns `key`; `None` for an empty ring.
    fn owner_of(&self, key: &[u8]) -> Option<usize>;
    fn names(&self) -> &[NodeId];
    /// This node's index, if it is a member.
    fn me(&self) -> Option<usize>;
}

/// What the runtime must do next. Indices (`owner`) refer to the ring view
/// passed to the call that produced the effect.
#[derive(Debug)]
pub enum Effect {
    /// Hand `reply` to the waiter `token`.
    Answer { token: Token, reply: Reply },
    /// Read `key` from the node that owns it (`Op::Get` with `keep_copy`),
    /// then call [`Engine::peer_load_done`] with `load`.
    LoadFromPeer {
        load: LoadId,
        key: Box<[u8]>,
        owner: usize,
        keep_copy: bool,
    },
    /// Fetch `key` from the origin, then call [`Engine::origin_load_done`].
    LoadFromOrigin { load: LoadId, key: Box<[u8]> },
    /// Send the write `op` to the node that owns its key and answer
    /// `token` with [`forwarded_reply`] of the result.
    Forward { token: Token, owner: usize, op: Op },
    /// Send `update` of `key` to each of `targets` (concurrently), then
    /// call [`Engine::updates_done`] with every target's outcome. A target
    /// no longer in the ring counts as [`TargetOutcome::Down`]. With
    /// `strict`, a failure fails the write waiting on it.
    SendUpdates {
        key: Box<[u8]>,
        update: ReplicaUpdate,
        targets: Vec<NodeId>,
        strict: bool,
    },
}

/// How a read forwarded to the owner node ended.
#[derive(Debug)]
pub enum PeerLoad {
    /// The owner answered.
    Answered(Reply),
    /// The owner answered with an error status (its message).
    Status(String),
    /// The owner is draining (or shutting a core down) and did not look
    /// at the key: like an owner that cannot be reached, not an error of
    /// its origin.
    NotServing,
    /// The owner could not be reached or did not answer.
    Unreachable,
}

/// How an origin fetch ended.
#[derive(Debug, Clone)]
pub enum OriginLoad {
    Found(Bytes),
    NotFound,
    Failed(String),
}

/// How one node took a replica update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetOutcome {
    Updated,
    /// Proven down (its port refused): it holds no copy, not a failure.
    Down,
    /// May be alive and did not take it.
    Failed(String),
}

/// Counters of policy decisions since the last [`Engine::take_counters`];
/// the runtime adds them to its metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Reads that joined a load already in flight.
    pub singleflight_shared: u64,
    /// Misses answered from the negative cache.
    pub negative_hits: u64,
    /// Automatic copies kept.
    pub auto_copies: u64,
    /// Copies pushed by an owner and kept.
    pub replica_copies: u64,
}

/// The answer to a write forwarded to `owner`: its reply, or why the owner
/// could not be asked.
pub fn forwarded_reply(owner: &str, result: Result<Reply, String>) -> Reply {
    match result {
        Ok(reply) => reply,
        Err(reason) => Reply::OwnerUnavailable {
            peer: owner.to_string(),
            reason,
        },
    }
}
