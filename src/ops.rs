//! The only values that travel between cores: an [`Op`] for a shard and the
//! [`Reply`] it produces, and the [`Limits`] every front end checks an op
//! against before it is sent.
//!
//! Everything here is `Send` plain data. A front end turns a request into an
//! `Op`; the key's home core (the same core on every node: `core_of(key)`)
//! runs it and sends back a `Reply`. Values are `Bytes`, so a reply hands
//! over a reference-counted buffer instead of copying the value between
//! cores.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::metrics::CoreSnapshot;
use crate::mutation::{Mutated, Mutation, Refusal};
use crate::store::ShardStats;

/// The longest TTL any protocol accepts: three days.
pub const MAX_TTL_SECONDS: u64 = 3 * 24 * 60 * 60;

/// The sizes an op must respect, whatever protocol it came in by
/// (`--max-key-bytes`, `--max-value-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: u64,
}

/// Why a key or value does not fit the [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitError {
    EmptyKey,
    KeyTooLong { len: usize, limit: usize },
    ValueTooLarge { len: u64, limit: u64 },
}

impl Limits {
    /// A key is present and within `--max-key-bytes`.
    pub fn check_key(&self, key: &[u8]) -> Result<(), LimitError> {
        if key.is_empty() {
            return Err(LimitError::EmptyKey);
        }
        if key.len() > self.max_key_bytes {
            return Err(LimitError::KeyTooLong {
                len: key.len(),
                limit: self.max_key_bytes,
            });
        }
        Ok(())
    }

    /// A value of `len` bytes is within `--max-value-bytes`.
    pub fn check_value(&self, len: usize) -> Result<(), LimitError> {
        let len = len as u64;
        if len > self.max_value_bytes {
            return Err(LimitError::ValueTooLarge {
                len,
                limit: self.max_value_bytes,
            });
        }
        Ok(())
    }
}

/// Work for the core that owns `key` (or, for `Snapshot`, for every core).
#[derive(Debug)]
pub enum Op {
    Get {
        key: Box<[u8]>,
        /// The asking node will keep a copy in its hot tier (set only on
        /// forwarded reads): the owner must invalidate it on the next write.
        keep_copy: bool,
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
    /// A conditional or read-modify-write op, run atomically on the key's
    /// owner (`crate::mutation`).
    Mutate {
        key: Box<[u8]>,
        mutation: Mutation,
    },
    /// From the key's owner: store or drop this node's hot-tier copy.
    Replicate {
        key: Box<[u8]>,
        update: ReplicaUpdate,
    },
    /// Report this core's shard statistics and request counters (for /metrics).
    Snapshot,
}

impl Op {
    /// A plain read of `key`.
    pub fn get(key: Box<[u8]>) -> Op {
        Op::Get {
            key,
            keep_copy: false,
        }
    }

    /// The key the op is routed by; `None` for ops addressed to a core.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Op::Get { key, .. }
            | Op::Set { key, .. }
            | Op::Delete { key }
            | Op::Mutate { key, .. }
            | Op::Replicate { key, .. } => Some(key),
            Op::Snapshot => None,
        }
    }
}

/// What an owner tells a node to do with its hot-tier copy of a key.
#[derive(Debug, Clone)]
pub enum ReplicaUpdate {
    Put {
        value: Bytes,
        /// `None`: never expires.
        expires_at: Option<Instant>,
    },
    Remove,
}

/// Where an op may run. A request from a client is routed by the ring; a
/// request another node forwarded (or an owner's replica update) runs on
/// this node whatever this node's ring says, so it never bounces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Node,
}

/// A found value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub value: Bytes,
    /// Written with `hot=true`.
    pub hot: bool,
    /// `None`: never expires.
    pub expires_at: Option<Instant>,
}

impl From<crate::store::Found> for Hit {
    fn from(found: crate::store::Found) -> Hit {
        Hit {
            value: found.value,
            hot: found.hot,
            expires_at: found.expires_at,
        }
    }
}

#[derive(Debug)]
pub enum Reply {
    /// Result of `Get`.
    Value(Option<Hit>),
    /// Result of `Set` and `Replicate`.
    Stored,
    /// Result of `Delete`: whether a live entry was removed.
    Deleted(bool),
    /// Result of `Mutate`.
    Mutated(Mutated),
    /// A `Mutate` refused (the entry is unchanged).
    Refused(Refusal),
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
    /// A miss could not be loaded: the origin failed, timed out or was
    /// unreachable (here or on the owner). Nothing was cached.
    OriginFailed(String),
    /// The write is stored on the owner but the hot-tier copy on `peer`
    /// could not be updated, so it is not acknowledged.
    ReplicaNotUpdated {
        peer: String,
        reason: String,
    },
}

/// Why an op failed, typed: what a front end turns into its protocol's
/// error (`crate::error` maps it), whichever core or node failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// The entry can never fit in the owning shard.
    TooLarge(String),
    /// The core or node that had to answer is shutting down.
    Draining,
    /// The key's owner node could not be reached or failed the request.
    OwnerUnavailable { peer: String, reason: String },
    /// A miss could not be loaded from the origin; nothing was cached.
    OriginFailed(String),
    /// The owner stored the write but the hot copy on `peer` missed it.
    ReplicaNotUpdated { peer: String, reason: String },
    /// A mutation the key's entry does not allow (not an integer, ...).
    Refused(Refusal),
    /// The core answered with a reply of another op: a bug, never the
    /// client's doing.
    Mismatch { op: &'static str, reply: String },
}

/// What a read answers: the value, or none (a miss).
pub type GetAnswer = Result<Option<Hit>, OpError>;
/// What a write answers (`Set`, `Replicate`).
pub type StoreAnswer = Result<(), OpError>;
/// What a delete answers: whether a live entry was removed.
pub type DeleteAnswer = Result<bool, OpError>;
/// What a mutation answers.
pub type MutateAnswer = Result<Mutated, OpError>;

impl Reply {
    /// The failure this reply stands for, or the reply itself when it is
    /// an answer.
    pub fn failure(self) -> Result<Reply, OpError> {
        match self {
            Reply::TooLarge(reason) => Err(OpError::TooLarge(reason)),
            Reply::Unavailable => Err(OpError::Draining),
            Reply::OwnerUnavailable { peer, reason } => {
                Err(OpError::OwnerUnavailable { peer, reason })
            }
            Reply::OriginFailed(reason) => Err(OpError::OriginFailed(reason)),
            Reply::ReplicaNotUpdated { peer, reason } => {
                Err(OpError::ReplicaNotUpdated { peer, reason })
            }
            Reply::Refused(refusal) => Err(OpError::Refused(refusal)),
            answer => Ok(answer),
        }
    }

    /// The reply to a `Get`, typed.
    pub fn into_get(self) -> GetAnswer {
        match self.failure()? {
            Reply::Value(hit) => Ok(hit),
            other => Err(mismatch("get", &other)),
        }
    }

    /// The reply to a `Set` or `Replicate`, typed.
    pub fn into_stored(self) -> StoreAnswer {
        match self.failure()? {
            Reply::Stored => Ok(()),
            other => Err(mismatch("set", &other)),
        }
    }

    /// The reply to a `Delete`, typed.
    pub fn into_deleted(self) -> DeleteAnswer {
        match self.failure()? {
            Reply::Deleted(deleted) => Ok(deleted),
            other => Err(mismatch("delete", &other)),
        }
    }

    /// The reply to a `Mutate`, typed.
    pub fn into_mutated(self) -> MutateAnswer {
        match self.failure()? {
            Reply::Mutated(mutated) => Ok(mutated),
            other => Err(mismatch("mutate", &other)),
        }
    }
}

fn mismatch(op: &'static str, reply: &Reply) -> OpError {
    let reply = match reply {
        Reply::Value(_) => "a value",
        Reply::Stored => "stored",
        Reply::Deleted(_) => "deleted",
        Reply::Mutated(_) => "mutated",
        Reply::Snapshot(_) => "a snapshot",
        _ => "a failure",
    };
    OpError::Mismatch {
        op,
        reply: reply.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_bound_keys_and_values_whatever_the_protocol() {
        let limits = Limits {
            max_key_bytes: 4,
            max_value_bytes: 8,
        };
        assert_eq!(limits.check_key(b""), Err(LimitError::EmptyKey));
        assert_eq!(limits.check_key(b"abcd"), Ok(()));
        assert_eq!(
            limits.check_key(b"abcde"),
            Err(LimitError::KeyTooLong { len: 5, limit: 4 })
        );
        assert_eq!(limits.check_value(8), Ok(()));
        assert_eq!(
            limits.check_value(9),
            Err(LimitError::ValueTooLarge { len: 9, limit: 8 })
        );
        assert_eq!(MAX_TTL_SECONDS, 259_200);
    }

    #[test]
    fn every_op_gets_its_own_answer_and_failures_stay_typed() {
        assert_eq!(Reply::Value(None).into_get(), Ok(None));
        assert_eq!(Reply::Stored.into_stored(), Ok(()));
        assert_eq!(Reply::Deleted(true).into_deleted(), Ok(true));
        assert_eq!(Reply::Unavailable.into_get(), Err(OpError::Draining));
        assert_eq!(
            Reply::ReplicaNotUpdated {
                peer: "c".into(),
                reason: "timeout".into()
            }
            .into_stored(),
            Err(OpError::ReplicaNotUpdated {
                peer: "c".into(),
                reason: "timeout".into()
            })
        );
        assert!(matches!(
            Reply::Stored.into_get(),
            Err(OpError::Mismatch { op: "get", .. })
        ));
    }
}
