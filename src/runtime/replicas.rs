//! The write path on a key's home core, and the hot copies it keeps
//! coherent.
//!
//! An owner that writes a key with copies on other nodes (written hot, or
//! read with `keep_copy`, or held in its own hot tier from a previous
//! owner) sends every other live node the new value (hot write) or a
//! removal, and acknowledges the write only when all of them answered:
//!
//! - Hot keys (this write or the entry it replaces is hot) are strict: a
//!   node that may be alive but did not take the update fails the write
//!   with 503 ([`Reply::ReplicaNotUpdated`]). The owner has the new value;
//!   that node may hold the old copy until it answers or leaves the ring.
//! - Automatic copies are best effort: the write is acknowledged anyway,
//!   and a node that missed the removal serves its copy at most until the
//!   copy's own expiry, `--hot-auto-ttl-ms` after it was taken.
//! - A node whose port refuses connections is down and holds no copy (a
//!   restarted node starts empty): it never fails a write.
//!
//! Updates of one key are queued per key ([`KeyLocks`](crate::hot::KeyLocks))
//! and sent from a task of their own, so two writes can never reach a copy
//! out of order and a caller that gives up cannot leave a key locked.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use super::core::{Core, RingView, Step};
use crate::hot::Acquire;
use crate::metrics::{CopyKind, ReplicaOutcome};
use crate::ops::{Op, ReplicaUpdate, Reply};
use crate::store::Copies;

/// What a write found out about the key's copies before it applied.
struct CopiesBefore {
    /// The entry was hot, or this node held a pushed copy of it.
    was_hot: bool,
    /// Some node may hold a copy (or an update of the key is in flight).
    had_copies: bool,
}

/// A node that did not take an update: its name and why.
type UpdateFailure = (String, String);

/// A write waiting for the network.
pub enum WriteWork {
    /// Another node owns the key.
    Forward {
        view: Rc<RingView>,
        owner: usize,
        op: Op,
    },
    /// Applied here; acknowledged once every copy is updated.
    Replicas {
        done: oneshot::Receiver<Result<(), UpdateFailure>>,
        reply: Reply,
    },
}

impl Core {
    /// A write of a key another node owns: drop our own copy at once (the
    /// owner would also tell us, but our next read should not wait for
    /// that) and forward.
    pub(super) fn start_remote_write(&self, op: Op, view: Rc<RingView>, owner: usize) -> Step {
        if let Some(key) = op.key() {
            self.drop_local_copy(key, Instant::now());
        }
        Step::Write(WriteWork::Forward { view, owner, op })
    }

    /// A set of a key this node owns.
    pub(super) fn start_owner_set(
        &self,
        key: Box<[u8]>,
        value: Bytes,
        ttl: Duration,
        hot: bool,
        now: Instant,
    ) -> Step {
        let before = self.before_owner_write(&key, now);
        let expires_at = self.jitter.expiry(now, ttl, &mut self.rng.borrow_mut());
        let stored = self
            .shard
            .borrow_mut()
            .set(&key, value.clone(), expires_at, hot, now);
        let (reply, update) = match stored {
            Ok(_) if hot => (
                Reply::Stored,
                Some(ReplicaUpdate::Put { value, expires_at }),
            ),
            Ok(_) => (
                Reply::Stored,
                before.had_copies.then_some(ReplicaUpdate::Remove),
            ),
            // The old entry, and so its copies, stay as they were.
            Err(e) => (Reply::TooLarge(e.to_string()), None),
        };
        self.after_owner_write(key, reply, update, before.was_hot || hot)
    }

    /// A delete of a key this node owns.
    pub(super) fn start_owner_delete(&self, key: Box<[u8]>, now: Instant) -> Step {
        let before = self.before_owner_write(&key, now);
        let deleted = self.shard.borrow_mut().delete(&key, now);
        let update = before.had_copies.then_some(ReplicaUpdate::Remove);
        self.after_owner_write(key, Reply::Deleted(deleted), update, before.was_hot)
    }

    /// What an owner must know about a key's copies before writing it, and
    /// the copies it drops itself (its own hot copy, a load in flight, a
    /// remembered origin 404).
    fn before_owner_write(&self, key: &[u8], now: Instant) -> CopiesBefore {
        let held_as_replica = self.drop_local_copy(key, now);
        if self.config.negative_ttl_secs > 0 {
            self.negative.borrow_mut().delete(key, now);
        }
        let copies = self.shard.borrow().copies(key, now);
        let was_hot = held_as_replica || copies == Copies::Hot;
        CopiesBefore {
            was_hot,
            had_copies: was_hot
                || copies == Copies::Automatic
                || self.key_locks.borrow().is_locked(key),
        }
    }

    /// Answer at once, or once `update` reached the other nodes; `strict`
    /// when a hot key is involved (see the module documentation).
    fn after_owner_write(
        &self,
        key: Box<[u8]>,
        reply: Reply,
        update: Option<ReplicaUpdate>,
        strict: bool,
    ) -> Step {
        self.invalidate_evicted_copies();
        match update {
            Some(update) if self.has_other_members() => Step::Write(WriteWork::Replicas {
                done: self.update_copies(key, update, strict),
                reply,
            }),
            _ => Step::Done(reply),
        }
    }

    pub(super) async fn finish_write(&self, work: WriteWork) -> Reply {
        match work {
            WriteWork::Forward { view, owner, op } => match self.forward(&view, owner, op).await {
                Ok(reply) => reply,
                Err((_, e)) => Reply::OwnerUnavailable {
                    peer: view.names[owner].to_string(),
                    reason: e.to_string(),
                },
            },
            WriteWork::Replicas { done, reply } => match done.await {
                Ok(Ok(())) => reply,
                Ok(Err((peer, reason))) => Reply::ReplicaNotUpdated { peer, reason },
                Err(_) => Reply::Unavailable,
            },
        }
    }

    /// An owner's update of this node's copy of `key`.
    pub(super) fn apply_replica(
        &self,
        key: Box<[u8]>,
        update: ReplicaUpdate,
        now: Instant,
    ) -> Reply {
        // A load running here started before the owner's write.
        self.flights.borrow_mut().mark_stale(&key);
        // An entry from when this node owned the key is outdated now.
        self.shard.borrow_mut().delete(&key, now);
        if self.config.negative_ttl_secs > 0 {
            self.negative.borrow_mut().delete(&key, now);
        }
        if !self.hot_enabled {
            return Reply::Stored;
        }
        let mut hot = self.hot.borrow_mut();
        match update {
            ReplicaUpdate::Put { value, expires_at } => {
                match hot.set(&key, value, expires_at, true, now) {
                    Ok(_) => self.metrics.record_copy(CopyKind::Replica),
                    Err(e) => {
                        // Without room the copy is dropped: reads go to the
                        // owner, which is slower but never stale.
                        hot.delete(&key, now);
                        tracing::debug!("hot copy not kept: {e}");
                    }
                }
            }
            ReplicaUpdate::Remove => {
                hot.delete(&key, now);
            }
        }
        Reply::Stored
    }

    /// Forget this node's copy of `key` and any load of it in flight;
    /// whether a live copy was there.
    fn drop_local_copy(&self, key: &[u8], now: Instant) -> bool {
        self.flights.borrow_mut().mark_stale(key);
        self.hot_enabled && self.hot.borrow_mut().delete(key, now)
    }

    fn has_other_members(&self) -> bool {
        let view = self.ring_view();
        view.names.len() > usize::from(view.me.is_some())
    }

    /// Evicted entries that had copies: remove the copies, in the
    /// background (no write is waiting), in order with later writes.
    pub(super) fn invalidate_evicted_copies(&self) {
        let keys = self.shard.borrow_mut().take_evicted_with_copies();
        if keys.is_empty() || !self.has_other_members() {
            return;
        }
        for key in keys {
            drop(self.update_copies(key, ReplicaUpdate::Remove, false));
        }
    }

    /// Sends `update` to every other live node from a task of its own,
    /// after the updates of `key` queued before it. With `strict`, a node
    /// that may be alive and did not take it makes the result an error.
    fn update_copies(
        &self,
        key: Box<[u8]>,
        update: ReplicaUpdate,
        strict: bool,
    ) -> oneshot::Receiver<Result<(), UpdateFailure>> {
        let (done, result) = oneshot::channel();
        let Some(this) = self.this.upgrade() else {
            let _ = done.send(Err(("this node".into(), "shutting down".into())));
            return result;
        };
        // Queue now, not in the task: the order of writes is the order of
        // this call, whatever order the tasks happen to start in.
        let acquired = self.key_locks.borrow_mut().acquire(&key);
        glommio::spawn_local(async move {
            if let Acquire::Queued(turn) = acquired {
                let _ = turn.await;
            }
            let view = this.ring_view();
            let others: Vec<usize> = (0..view.names.len())
                .filter(|&i| Some(i) != view.me)
                .collect();
            let outcome = match this.send_update(&view, &others, &key, &update).await {
                Err((node, reason)) if !strict => {
                    tracing::debug!(
                        node,
                        "automatic copy not invalidated, it expires on its own: {reason}"
                    );
                    Ok(())
                }
                outcome => outcome,
            };
            this.key_locks.borrow_mut().release(&key);
            let _ = done.send(outcome);
        })
        .detach();
        result
    }

    /// One replica update to each of `targets`, concurrently; the first
    /// failure, if any. A node proven down is not a failure.
    async fn send_update(
        &self,
        view: &RingView,
        targets: &[usize],
        key: &[u8],
        update: &ReplicaUpdate,
    ) -> Result<(), UpdateFailure> {
        let remove = matches!(update, ReplicaUpdate::Remove);
        let mut pending = Vec::with_capacity(targets.len());
        let mut failure = None;
        for &i in targets {
            let name = view.names[i].to_string();
            let Some(addr) = view.grpc_addrs[i] else {
                self.metrics
                    .record_replica_update(remove, ReplicaOutcome::Failed);
                failure.get_or_insert((name, "its gRPC address does not resolve".to_string()));
                continue;
            };
            let client = self.peers.client(addr);
            let key: Box<[u8]> = key.into();
            let update = update.clone();
            let task = glommio::spawn_local(async move { client.replicate(&key, &update).await });
            pending.push((name, task));
        }
        for (name, task) in pending {
            let outcome = match task.await {
                Ok(()) => ReplicaOutcome::Ok,
                Err(e) if e.peer_is_down() => ReplicaOutcome::NodeDown,
                Err(e) => {
                    failure.get_or_insert((name, e.to_string()));
                    ReplicaOutcome::Failed
                }
            };
            self.metrics.record_replica_update(remove, outcome);
        }
        failure.map_or(Ok(()), Err)
    }

    /// Membership changed from `previous` to `view`: drop automatic copies
    /// whose owner moved (the new owner does not know about them), and
    /// hand the hot keys this node owns to the nodes that joined.
    pub(super) fn ring_changed(&self, previous: &RingView, view: &Rc<RingView>) {
        let owner_in =
            |v: &RingView, key: &[u8]| v.ring.owner_index(key).map(|i| v.names[i].clone());
        if self.hot_enabled && !self.hot.borrow().is_empty() {
            self.hot.borrow_mut().remove_where(|key, replica| {
                !replica && owner_in(previous, key) != owner_in(view, key)
            });
        }
        let joined: Vec<usize> = (0..view.names.len())
            .filter(|&i| Some(i) != view.me && !previous.names.contains(&view.names[i]))
            .collect();
        if joined.is_empty() {
            return;
        }
        let now = Instant::now();
        let mine = |v: &RingView, key: &[u8]| v.me.is_some() && v.ring.owner_index(key) == v.me;
        let keys: Vec<Box<[u8]>> = self
            .shard
            .borrow()
            .hot_entries(now)
            .into_iter()
            .map(|(key, _, _)| key)
            .filter(|key| mine(previous, key) || mine(view, key))
            .collect();
        if keys.is_empty() {
            return;
        }
        let Some(this) = self.this.upgrade() else {
            return;
        };
        let view = Rc::clone(view);
        tracing::info!(
            core = self.id,
            keys = keys.len(),
            nodes = joined.len(),
            "sending hot keys to nodes that joined"
        );
        glommio::spawn_local(async move {
            for key in keys {
                let acquired = this.key_locks.borrow_mut().acquire(&key);
                if let Acquire::Queued(turn) = acquired {
                    let _ = turn.await;
                }
                // The value as it is now: a write may have come meanwhile.
                let current = this.shard.borrow().peek(&key, Instant::now());
                if let Some(found) = current.filter(|f| f.hot) {
                    let update = ReplicaUpdate::Put {
                        value: found.value,
                        expires_at: found.expires_at,
                    };
                    if let Err((node, reason)) =
                        this.send_update(&view, &joined, &key, &update).await
                    {
                        tracing::warn!(node, "hot key not sent to a node that joined: {reason}");
                    }
                }
                this.key_locks.borrow_mut().release(&key);
            }
        })
        .detach();
    }
}
