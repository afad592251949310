//! [`Engine`]: the state of one core's keys and the rules that change it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use super::{
    AutoHot, Counters, Effect, LoadId, OriginLoad, PeerLoad, RingFacts, Settings, TargetOutcome,
    Token, AUTO_HOT_TRACKED_KEYS,
};
use crate::mutation::{self, Change, Entry, Mutation};
use crate::ops::{Hit, Op, ReplicaUpdate, Reply, Scope};
use crate::routing::NodeId;
use crate::store::{Copies, Shard, ShardStats};

/// Most keys remembered as having a copy that missed a strict update.
const MAX_UNCONFIRMED_KEYS: usize = 65_536;

/// The result of one load, shared by every reader waiting on it.
#[derive(Debug, Clone)]
enum Loaded {
    Value(Option<Hit>),
    OriginFailed(String),
}

impl From<Loaded> for Reply {
    fn from(loaded: Loaded) -> Reply {
        match loaded {
            Loaded::Value(hit) => Reply::Value(hit),
            Loaded::OriginFailed(reason) => Reply::OriginFailed(reason),
        }
    }
}

/// Where a load gets the key from, and what it may keep.
#[derive(Debug)]
enum Source {
    /// From the owner node; `keep_copy`: keep the answer as an automatic
    /// copy (the owner was told).
    Peer {
        /// Index in the ring view of the read that started the load.
        owner: usize,
        owner_name: NodeId,
        keep_copy: bool,
    },
    /// From the origin; `keep`: cache the answer (only owners do).
    Origin { keep: bool },
}

#[derive(Debug)]
struct Waiter {
    token: Token,
    /// A forwarded read whose node keeps a copy: answer with what the
    /// shard holds once the load is in, and mark it replicated.
    keep_copy: bool,
}

#[derive(Debug)]
struct Load {
    key: Box<[u8]>,
    source: Source,
    waiters: Vec<Waiter>,
    /// A write overtook the load: its result may predate the write, so it
    /// is handed to the readers already waiting but not kept, and later
    /// readers start a load of their own.
    stale: bool,
}

/// One entry of a key's update queue; the front one is being sent.
#[derive(Debug)]
enum Queued {
    /// A write's update of every other node; `answer` is the write's
    /// waiter and its reply, given once the update is through.
    Write {
        update: ReplicaUpdate,
        strict: bool,
        answer: Option<(Token, Reply)>,
    },
    /// Give nodes that joined the key's current hot value, if it is still
    /// hot when its turn comes.
    Handoff { targets: Vec<NodeId> },
    /// An answer that reveals the key's state (a mutation whose condition
    /// did not hold, or a refusal) but sends nothing: given only once the
    /// updates queued before it are through, or a client could see the
    /// key's new state here and then an older copy elsewhere.
    Barrier { answer: (Token, Reply) },
}

/// What a write found out about the key's copies before it applied.
struct CopiesBefore {
    /// The entry was hot, or this node held a pushed copy of it.
    was_hot: bool,
    /// Some node may hold a copy (or an update of the key is queued).
    had_copies: bool,
}

/// One core's keys: see the module documentation.
#[derive(Debug)]
pub struct Engine {
    settings: Settings,
    shard: Shard,
    /// Copies of keys other nodes own: pushed replicas of hot keys and
    /// automatic copies of keys read often through this node.
    hot: Shard,
    /// Keys the origin answered 404 for, while `negative_ttl` lasts.
    negative: Shard,
    auto_hot: AutoHot,
    loads: HashMap<LoadId, Load>,
    /// The load a new reader of a key joins (not overtaken by a write).
    joinable: HashMap<Box<[u8]>, LoadId>,
    next_load: LoadId,
    /// Present while an update of the key is being sent.
    updates: HashMap<Box<[u8]>, VecDeque<Queued>>,
    /// Keys whose last strict update some node did not take: that node
    /// may still hold a hot copy the entry no longer speaks of, so the
    /// key's writes stay strict until every node has taken one.
    unconfirmed: HashSet<Box<[u8]>>,
    /// Hot keys to hand to nodes that joined, sent one key at a time (a
    /// join must not start an update per hot key at once).
    handoffs: VecDeque<(Box<[u8]>, Vec<NodeId>)>,
    /// A handoff is queued or being sent.
    handoff_running: bool,
    rng: fastrand::Rng,
    counters: Counters,
}

/// The owner's index when it is another node.
fn remote_owner(view: &dyn RingFacts, key: &[u8]) -> Option<usize> {
    match view.owner_of(key) {
        Some(owner) if Some(owner) != view.me() => Some(owner),
        _ => None,
    }
}

fn has_other_members(view: &dyn RingFacts) -> bool {
    view.names().len() > usize::from(view.me().is_some())
}

fn others(view: &dyn RingFacts) -> Vec<NodeId> {
    let me = view.me();
    (0..view.names().len())
        .filter(|&i| Some(i) != me)
        .map(|i| view.names()[i].clone())
        .collect()
}

fn owner_name(view: &dyn RingFacts, key: &[u8]) -> Option<NodeId> {
    view.owner_of(key).map(|i| view.names()[i].clone())
}

fn is_mine(view: &dyn RingFacts, key: &[u8]) -> bool {
    view.me().is_some() && view.owner_of(key) == view.me()
}

impl Engine {
    pub fn new(settings: Settings) -> Engine {
        Engine::with_rng(settings, fastrand::Rng::new())
    }

    /// With a given random source (TTL jitter), for reproducible tests.
    pub fn with_rng(settings: Settings, rng: fastrand::Rng) -> Engine {
        Engine {
            shard: Shard::new(settings.shard_capacity).report_evicted_copies(),
            hot: Shard::new(settings.hot_capacity),
            negative: Shard::new(settings.negative_capacity),
            auto_hot: AutoHot::new(settings.hot_auto_threshold, AUTO_HOT_TRACKED_KEYS),
            loads: HashMap::new(),
            joinable: HashMap::new(),
            next_load: 0,
            updates: HashMap::new(),
            unconfirmed: HashSet::new(),
            handoffs: VecDeque::new(),
            handoff_running: false,
            rng,
            counters: Counters::default(),
            settings,
        }
    }

    fn hot_enabled(&self) -> bool {
        self.settings.hot_capacity > 0
    }

    fn negative_enabled(&self) -> bool {
        !self.settings.negative_ttl.is_zero()
    }

    /// Serve `op` for the waiter `token`: `Some` answers it now; `None`
    /// means an [`Effect::Answer`] for `token` comes later (from this call's
    /// effects or from a result handed back). `Op::Snapshot` is not the
    /// engine's: the runtime holds the counters and answers it.
    pub fn call(
        &mut self,
        token: Token,
        op: Op,
        scope: Scope,
        view: &dyn RingFacts,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> Option<Reply> {
        let remote = match scope {
            Scope::Cluster => op.key().and_then(|key| remote_owner(view, key)),
            Scope::Node => None,
        };
        match (op, remote) {
            (Op::Snapshot, _) => Some(Reply::Unavailable),
            (Op::Replicate { key, update }, _) => Some(self.apply_replica(&key, update, now)),
            (Op::Get { key, .. }, Some(owner)) => {
                self.remote_get(token, key, owner, view, now, out)
            }
            (Op::Get { key, keep_copy }, None) => self.owner_get(token, key, keep_copy, now, out),
            (op @ (Op::Set { .. } | Op::Delete { .. } | Op::Mutate { .. }), Some(owner)) => {
                if let Some(key) = op.key() {
                    // The owner will tell us too, but our next read should
                    // not wait for that.
                    self.drop_local_copy(key, now);
                }
                out.push(Effect::Forward { token, owner, op });
                None
            }
            (
                Op::Set {
                    key,
                    value,
                    ttl,
                    hot,
                },
                None,
            ) => {
                let before = self.before_owner_write(&key, now);
                let expires_at = self.settings.jitter.expiry(now, ttl, &mut self.rng);
                let stored = self.shard.set(&key, value.clone(), expires_at, hot, now);
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
                let strict = before.was_hot || hot;
                self.after_owner_write(token, key, reply, update, strict, view, now, out)
            }
            (Op::Delete { key }, None) => {
                let before = self.before_owner_write(&key, now);
                let deleted = self.shard.delete(&key, now);
                let update = before.had_copies.then_some(ReplicaUpdate::Remove);
                let reply = Reply::Deleted(deleted);
                self.after_owner_write(token, key, reply, update, before.was_hot, view, now, out)
            }
            (Op::Mutate { key, mutation }, None) => {
                self.owner_mutate(token, key, &mutation, view, now, out)
            }
        }
    }

    /// A conditional or read-modify-write op on a key this node owns:
    /// decided on the entry as it is, written before the next op runs (so
    /// atomic per key), and then a write like any other for the key's
    /// copies. It acts on what the cache holds: a miss is not loaded from
    /// the origin first.
    fn owner_mutate(
        &mut self,
        token: Token,
        key: Box<[u8]>,
        mutation: &Mutation,
        view: &dyn RingFacts,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> Option<Reply> {
        // As a read sees it: the entry, or the previous owner's pushed copy.
        let current = self.shard.peek(&key, now).map(Entry::from).or_else(|| {
            (self.hot_enabled() && self.hot.contains(&key, now))
                .then(|| self.hot.peek(&key, now).map(Entry::from))
                .flatten()
        });
        let mut cx = mutation::Context {
            now,
            jitter: &self.settings.jitter,
            rng: &mut self.rng,
            max_value_bytes: self.settings.max_value_bytes,
        };
        let decision = match mutation.apply(current.as_ref(), &mut cx) {
            Ok(decision) => decision,
            Err(refusal) => return self.answer_after_queued(token, key, Reply::Refused(refusal)),
        };
        let reply = Reply::Mutated(decision.answer);
        match decision.change {
            Change::Keep => self.answer_after_queued(token, key, reply),
            Change::Write {
                value,
                expires_at,
                hot,
            } => {
                let before = self.before_owner_write(&key, now);
                let (reply, update) =
                    match self.shard.set(&key, value.clone(), expires_at, hot, now) {
                        Ok(_) if hot => (reply, Some(ReplicaUpdate::Put { value, expires_at })),
                        Ok(_) => (reply, before.had_copies.then_some(ReplicaUpdate::Remove)),
                        Err(e) => (Reply::TooLarge(e.to_string()), None),
                    };
                let strict = before.was_hot || hot;
                self.after_owner_write(token, key, reply, update, strict, view, now, out)
            }
            Change::Remove => {
                let before = self.before_owner_write(&key, now);
                self.shard.delete(&key, now);
                let update = before.had_copies.then_some(ReplicaUpdate::Remove);
                self.after_owner_write(token, key, reply, update, before.was_hot, view, now, out)
            }
        }
    }

    /// A read of a key this node owns.
    fn owner_get(
        &mut self,
        token: Token,
        key: Box<[u8]>,
        keep_copy: bool,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> Option<Reply> {
        if let Some(found) = self.shard.get(&key, now) {
            if keep_copy {
                self.shard.mark_replicated(&key, now);
            }
            return Some(Reply::Value(Some(Hit::from(found))));
        }
        // A replica pushed by the previous owner before the ring moved the
        // key here: still current, since writes now come here and drop it.
        // (`contains` first: a miss here is not a miss of the hot tier.)
        if self.hot_enabled() && self.hot.contains(&key, now) {
            if let Some(found) = self.hot.get(&key, now) {
                return Some(Reply::Value(Some(Hit::from(found))));
            }
        }
        if !self.settings.has_origin {
            return Some(Reply::Value(None));
        }
        if self.negative_enabled() && self.negative.contains(&key, now) {
            self.counters.negative_hits += 1;
            return Some(Reply::Value(None));
        }
        let waiter = Waiter { token, keep_copy };
        self.join_load(key, waiter, || Source::Origin { keep: true }, out);
        None
    }

    /// A read of a key another node owns.
    fn remote_get(
        &mut self,
        token: Token,
        key: Box<[u8]>,
        owner: usize,
        view: &dyn RingFacts,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> Option<Reply> {
        if self.hot_enabled() {
            if let Some(found) = self.hot.get(&key, now) {
                return Some(Reply::Value(Some(Hit::from(found))));
            }
        }
        let keep_copy = self.hot_enabled() && self.auto_hot.record(&key, now);
        let waiter = Waiter {
            token,
            keep_copy: false,
        };
        let source = || Source::Peer {
            owner,
            owner_name: view.names()[owner].clone(),
            keep_copy,
        };
        self.join_load(key, waiter, source, out);
        None
    }

    /// Joins the load of `key` readers may still join, or starts one (the
    /// effect is pushed to `out`).
    fn join_load(
        &mut self,
        key: Box<[u8]>,
        waiter: Waiter,
        source: impl FnOnce() -> Source,
        out: &mut Vec<Effect>,
    ) {
        if let Some(load) = self
            .joinable
            .get(&key)
            .and_then(|id| self.loads.get_mut(id))
        {
            load.waiters.push(waiter);
            self.counters.singleflight_shared += 1;
            return;
        }
        let id = self.next_load;
        self.next_load += 1;
        let source = source();
        out.push(match &source {
            Source::Peer {
                owner, keep_copy, ..
            } => Effect::LoadFromPeer {
                load: id,
                key: key.clone(),
                owner: *owner,
                keep_copy: *keep_copy,
            },
            Source::Origin { .. } => Effect::LoadFromOrigin {
                load: id,
                key: key.clone(),
            },
        });
        self.joinable.insert(key.clone(), id);
        self.loads.insert(
            id,
            Load {
                key,
                source,
                waiters: vec![waiter],
                stale: false,
            },
        );
    }

    /// The owner node answered (or not) the read of load `load`. Without
    /// an origin a failure is a miss; with one, the owner's error is an
    /// origin failure and an owner that cannot be reached or is draining
    /// is replaced by loading from the origin here (not kept: only owners
    /// cache origin values).
    pub fn peer_load_done(
        &mut self,
        load: LoadId,
        result: PeerLoad,
        view: &dyn RingFacts,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        let Some(flight) = self.loads.get_mut(&load) else {
            return;
        };
        let Source::Peer {
            owner_name,
            keep_copy,
            ..
        } = &flight.source
        else {
            return;
        };
        let keep_copy = *keep_copy;
        let result = match result {
            PeerLoad::Answered(Reply::Unavailable) => PeerLoad::NotServing,
            other => other,
        };
        let loaded = match result {
            PeerLoad::Answered(Reply::Value(hit)) => Loaded::Value(hit),
            PeerLoad::Answered(Reply::OriginFailed(reason)) => Loaded::OriginFailed(reason),
            PeerLoad::Answered(_) => Loaded::Value(None),
            PeerLoad::Status(_) | PeerLoad::NotServing | PeerLoad::Unreachable
                if !self.settings.has_origin =>
            {
                Loaded::Value(None)
            }
            PeerLoad::Status(message) => {
                // From a node that does not say why (no reason code): its
                // error is taken as its origin's.
                let reason = message.strip_prefix("origin failed: ").unwrap_or(&message);
                Loaded::OriginFailed(format!("{reason} (loaded by owner {owner_name})"))
            }
            PeerLoad::NotServing | PeerLoad::Unreachable => {
                flight.source = Source::Origin { keep: false };
                out.push(Effect::LoadFromOrigin {
                    load,
                    key: flight.key.clone(),
                });
                return;
            }
        };
        let Some(flight) = self.end_load(load) else {
            return;
        };
        if keep_copy && !flight.stale {
            self.keep_auto_copy(&flight.key, &loaded, now);
        }
        self.answer_waiters(flight, loaded, view, now, out);
    }

    /// The origin answered (or not) the fetch of load `load`.
    pub fn origin_load_done(
        &mut self,
        load: LoadId,
        result: OriginLoad,
        view: &dyn RingFacts,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        if !matches!(
            self.loads.get(&load),
            Some(Load {
                source: Source::Origin { .. },
                ..
            })
        ) {
            return;
        }
        let Some(flight) = self.end_load(load) else {
            return;
        };
        let loaded = match result {
            OriginLoad::Found(value) => Loaded::Value(Some(Hit {
                value,
                hot: false,
                expires_at: self.settings.jitter.expiry(
                    now,
                    self.settings.origin_ttl,
                    &mut self.rng,
                ),
            })),
            OriginLoad::NotFound => Loaded::Value(None),
            OriginLoad::Failed(reason) => Loaded::OriginFailed(reason),
        };
        if matches!(flight.source, Source::Origin { keep: true }) && !flight.stale {
            self.keep_loaded(&flight.key, &loaded, now);
        }
        self.answer_waiters(flight, loaded, view, now, out);
        self.invalidate_evicted_copies(view, now, out);
    }

    fn end_load(&mut self, load: LoadId) -> Option<Load> {
        let flight = self.loads.remove(&load)?;
        if self.joinable.get(&flight.key) == Some(&load) {
            self.joinable.remove(&flight.key);
        }
        Some(flight)
    }

    fn answer_waiters(
        &mut self,
        flight: Load,
        loaded: Loaded,
        _view: &dyn RingFacts,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        for waiter in flight.waiters {
            let reply = if waiter.keep_copy {
                self.answer_to_copy(&flight.key, &loaded, now)
            } else {
                loaded.clone().into()
            };
            out.push(Effect::Answer {
                token: waiter.token,
                reply,
            });
        }
    }

    /// The asking node keeps what we answer, so answer with what the shard
    /// holds now (a write may have overtaken the load) and record that a
    /// copy exists, so the next write invalidates it.
    fn answer_to_copy(&mut self, key: &[u8], loaded: &Loaded, now: Instant) -> Reply {
        // Not `get`: this read was already counted when it missed.
        if let Some(found) = self.shard.peek(key, now) {
            self.shard.mark_replicated(key, now);
            return Reply::Value(Some(Hit::from(found)));
        }
        match loaded {
            // Written over (deleted) while loading, or loaded but not kept:
            // nothing the other node may hold on to.
            Loaded::Value(Some(_)) => Reply::Value(None),
            other => other.clone().into(),
        }
    }

    /// Cache what the origin answered: the value in the shard, a 404 in
    /// the negative cache when `negative_ttl` asks for it.
    fn keep_loaded(&mut self, key: &[u8], loaded: &Loaded, now: Instant) {
        match loaded {
            Loaded::Value(Some(hit)) => {
                if let Err(e) = self
                    .shard
                    .set(key, hit.value.clone(), hit.expires_at, false, now)
                {
                    tracing::debug!("origin value not cached: {e}");
                }
            }
            Loaded::Value(None) if self.negative_enabled() => {
                let until = now.checked_add(self.settings.negative_ttl);
                let _ = self.negative.set(key, Bytes::new(), until, false, now);
            }
            _ => {}
        }
    }

    /// Keep an automatic copy of a value this node keeps asking the owner
    /// for, for at most `hot_auto_ttl` and never past its own expiry.
    fn keep_auto_copy(&mut self, key: &[u8], loaded: &Loaded, now: Instant) {
        let Loaded::Value(Some(hit)) = loaded else {
            return;
        };
        let limit = now.checked_add(self.settings.hot_auto_ttl);
        let expires_at = match (hit.expires_at, limit) {
            (Some(at), Some(limit)) => Some(at.min(limit)),
            (at, limit) => at.or(limit),
        };
        let stored = self.hot.set(key, hit.value.clone(), expires_at, false, now);
        if stored.is_ok() {
            self.counters.auto_copies += 1;
        }
    }

    /// An owner's update of this node's copy of `key`.
    fn apply_replica(&mut self, key: &[u8], update: ReplicaUpdate, now: Instant) -> Reply {
        // A load running here started before the owner's write.
        self.mark_load_stale(key);
        // An entry from when this node owned the key is outdated now.
        self.shard.delete(key, now);
        if self.negative_enabled() {
            self.negative.delete(key, now);
        }
        if !self.hot_enabled() {
            return Reply::Stored;
        }
        match update {
            ReplicaUpdate::Put { value, expires_at } => {
                match self.hot.set(key, value, expires_at, true, now) {
                    Ok(_) => self.counters.replica_copies += 1,
                    Err(e) => {
                        // Without room the copy is dropped: reads go to the
                        // owner, which is slower but never stale.
                        self.hot.delete(key, now);
                        tracing::debug!("hot copy not kept: {e}");
                    }
                }
            }
            ReplicaUpdate::Remove => {
                self.hot.delete(key, now);
            }
        }
        Reply::Stored
    }

    /// A write overtook the load of `key`, if one runs: readers from now
    /// on start their own.
    fn mark_load_stale(&mut self, key: &[u8]) {
        // Every write asks; usually nothing is loading, so skip hashing.
        if self.joinable.is_empty() {
            return;
        }
        if let Some(id) = self.joinable.remove(key) {
            if let Some(load) = self.loads.get_mut(&id) {
                load.stale = true;
            }
        }
    }

    /// Forget this node's copy of `key` and any load of it in flight;
    /// whether a live copy was there.
    fn drop_local_copy(&mut self, key: &[u8], now: Instant) -> bool {
        self.mark_load_stale(key);
        self.hot_enabled() && self.hot.delete(key, now)
    }

    /// What an owner must know about a key's copies before writing it, and
    /// the copies it drops itself (its own hot copy, a load in flight, a
    /// remembered origin 404).
    fn before_owner_write(&mut self, key: &[u8], now: Instant) -> CopiesBefore {
        let held_as_replica = self.drop_local_copy(key, now);
        if self.negative_enabled() {
            self.negative.delete(key, now);
        }
        let copies = self.shard.copies(key, now);
        let was_hot = held_as_replica
            || copies == Copies::Hot
            || (!self.unconfirmed.is_empty() && self.unconfirmed.contains(key));
        CopiesBefore {
            was_hot,
            had_copies: was_hot || copies == Copies::Automatic || self.updates.contains_key(key),
        }
    }

    /// Answer `reply` (which wrote nothing) now, or after the key's
    /// queued updates.
    fn answer_after_queued(&mut self, token: Token, key: Box<[u8]>, reply: Reply) -> Option<Reply> {
        match self.updates.get_mut(&key) {
            Some(queue) => {
                queue.push_back(Queued::Barrier {
                    answer: (token, reply),
                });
                None
            }
            None => Some(reply),
        }
    }

    /// Answer at once, or once `update` reached the other nodes; `strict`
    /// when a hot key is involved: a node that may be alive and did not
    /// take the update fails the write. Automatic copies are best effort.
    #[allow(clippy::too_many_arguments)]
    fn after_owner_write(
        &mut self,
        token: Token,
        key: Box<[u8]>,
        reply: Reply,
        update: Option<ReplicaUpdate>,
        strict: bool,
        view: &dyn RingFacts,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> Option<Reply> {
        self.invalidate_evicted_copies(view, now, out);
        match update {
            Some(update) if has_other_members(view) => {
                let write = Queued::Write {
                    update,
                    strict,
                    answer: Some((token, reply)),
                };
                self.enqueue(key, write, view, now, out);
                None
            }
            _ => Some(reply),
        }
    }

    /// Evicted entries that had copies: remove the copies, in the
    /// background (no write waits), in order with later writes.
    fn invalidate_evicted_copies(
        &mut self,
        view: &dyn RingFacts,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        let keys = self.shard.take_evicted_with_copies();
        if keys.is_empty() || !has_other_members(view) {
            return;
        }
        for key in keys {
            let remove = Queued::Write {
                update: ReplicaUpdate::Remove,
                strict: false,
                answer: None,
            };
            self.enqueue(key, remove, view, now, out);
        }
    }

    /// Queue `item` after the key's updates already queued; sent at once
    /// when none is.
    fn enqueue(
        &mut self,
        key: Box<[u8]>,
        item: Queued,
        view: &dyn RingFacts,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        if let Some(queue) = self.updates.get_mut(&key) {
            queue.push_back(item);
            return;
        }
        self.updates.insert(key.clone(), VecDeque::from([item]));
        self.send_next(&key, view, now, out);
    }

    /// Start sending the front update of `key`, skipping (and finishing)
    /// those with nothing to send; frees the queue when it runs empty.
    fn send_next(&mut self, key: &[u8], view: &dyn RingFacts, now: Instant, out: &mut Vec<Effect>) {
        loop {
            let Some(queue) = self.updates.get_mut(key) else {
                return;
            };
            let send = match queue.front() {
                None => {
                    self.updates.remove(key);
                    return;
                }
                Some(Queued::Write { update, strict, .. }) => {
                    let targets = others(view);
                    (!targets.is_empty()).then(|| (update.clone(), targets, *strict))
                }
                Some(Queued::Barrier { .. }) => None,
                Some(Queued::Handoff { targets }) => {
                    // The value as it is now: a write may have come meanwhile.
                    self.shard.peek(key, now).filter(|f| f.hot).map(|found| {
                        let update = ReplicaUpdate::Put {
                            value: found.value,
                            expires_at: found.expires_at,
                        };
                        (update, targets.clone(), false)
                    })
                }
            };
            match send {
                Some((update, targets, strict)) => {
                    out.push(Effect::SendUpdates {
                        key: key.into(),
                        update,
                        targets,
                        strict,
                    });
                    return;
                }
                None => self.finish_front(key, Vec::new(), out),
            }
        }
    }

    /// The front update of `key` is through: answer its write.
    fn finish_front(
        &mut self,
        key: &[u8],
        outcomes: Vec<(NodeId, TargetOutcome)>,
        out: &mut Vec<Effect>,
    ) {
        let Some(front) = self.updates.get_mut(key).and_then(VecDeque::pop_front) else {
            return;
        };
        let failure = outcomes
            .into_iter()
            .find_map(|(node, outcome)| match outcome {
                TargetOutcome::Failed(reason) => Some((node, reason)),
                TargetOutcome::Updated | TargetOutcome::Down => None,
            });
        match front {
            Queued::Write { strict, answer, .. } => {
                if strict && failure.is_some() {
                    // Bounded: past the cap a key falls back to what its
                    // entry says (its copy may then stay until the node
                    // takes a later update or leaves the ring).
                    if self.unconfirmed.len() < MAX_UNCONFIRMED_KEYS {
                        self.unconfirmed.insert(key.into());
                    }
                } else if strict {
                    self.unconfirmed.remove(key);
                }
                let reply = match failure {
                    Some((node, reason)) if strict => answer.map(|(token, _)| {
                        (
                            token,
                            Reply::ReplicaNotUpdated {
                                peer: node.to_string(),
                                reason,
                            },
                        )
                    }),
                    Some((node, reason)) => {
                        tracing::debug!(
                            node = &*node,
                            "automatic copy not invalidated, it expires on its own: {reason}"
                        );
                        answer
                    }
                    None => answer,
                };
                if let Some((token, reply)) = reply {
                    out.push(Effect::Answer { token, reply });
                }
            }
            Queued::Barrier {
                answer: (token, reply),
            } => out.push(Effect::Answer { token, reply }),
            Queued::Handoff { .. } => {
                self.handoff_running = false;
                if let Some((node, reason)) = failure {
                    tracing::warn!(
                        node = &*node,
                        "hot key not sent to a node that joined: {reason}"
                    );
                }
            }
        }
    }

    /// The update of `key` from the last [`Effect::SendUpdates`] for it
    /// ended with `outcomes` (one per target): answer its write and send
    /// the key's next update.
    pub fn updates_done(
        &mut self,
        key: &[u8],
        outcomes: Vec<(NodeId, TargetOutcome)>,
        view: &dyn RingFacts,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        if !self.updates.contains_key(key) {
            return;
        }
        self.finish_front(key, outcomes, out);
        self.send_next(key, view, now, out);
        self.start_handoffs(view, now, out);
    }

    /// Queue the next hot key's handoff, unless one is under way.
    fn start_handoffs(&mut self, view: &dyn RingFacts, now: Instant, out: &mut Vec<Effect>) {
        // A handoff with nothing to send finishes inside `enqueue`, which
        // frees the turn for the next one.
        while !self.handoff_running {
            let Some((key, targets)) = self.handoffs.pop_front() else {
                return;
            };
            self.handoff_running = true;
            self.enqueue(key, Queued::Handoff { targets }, view, now, out);
        }
    }

    /// Membership changed from `previous` to `view`: drop automatic copies
    /// whose owner moved (the new owner does not know about them), and
    /// hand the hot keys this node owns to the nodes that joined.
    pub fn ring_changed(
        &mut self,
        previous: &dyn RingFacts,
        view: &dyn RingFacts,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        if self.hot_enabled() && !self.hot.is_empty() {
            self.hot.remove_where(|key, replica| {
                !replica && owner_name(previous, key) != owner_name(view, key)
            });
        }
        let me = view.me();
        let joined: Vec<NodeId> = (0..view.names().len())
            .filter(|&i| Some(i) != me && !previous.names().contains(&view.names()[i]))
            .map(|i| view.names()[i].clone())
            .collect();
        if joined.is_empty() {
            return;
        }
        let keys: Vec<Box<[u8]>> = self
            .shard
            .hot_entries(now)
            .into_iter()
            .map(|(key, _, _)| key)
            .filter(|key| is_mine(previous, key) || is_mine(view, key))
            .collect();
        if !keys.is_empty() {
            tracing::info!(
                keys = keys.len(),
                nodes = joined.len(),
                "sending hot keys to nodes that joined"
            );
        }
        self.handoffs
            .extend(keys.into_iter().map(|key| (key, joined.clone())));
        self.start_handoffs(view, now, out);
    }

    /// The node lost its lease: drop everything cached (it may have been
    /// rewritten elsewhere meanwhile). How many entries went.
    pub fn clear(&mut self) -> usize {
        self.shard.clear() + self.hot.clear() + self.negative.clear()
    }

    /// Reclaim expired entries, at most `budget` checks per tier.
    pub fn sweep(&mut self, now: Instant, budget: usize) -> u64 {
        let mut removed = self.shard.sweep_expired(now, budget);
        if self.hot_enabled() {
            removed += self.hot.sweep_expired(now, budget);
        }
        self.negative.sweep_expired(now, budget);
        removed
    }

    /// Policy decisions counted since the last call.
    pub fn take_counters(&mut self) -> Counters {
        std::mem::take(&mut self.counters)
    }

    pub fn shard_stats(&self) -> ShardStats {
        self.shard.stats()
    }

    pub fn hot_stats(&self) -> ShardStats {
        self.hot.stats()
    }

    pub fn shard_len(&self) -> usize {
        self.shard.len()
    }

    /// Loads in flight (overtaken ones included).
    pub fn loads_in_flight(&self) -> usize {
        self.loads.len()
    }

    /// Keys with replica updates queued or being sent.
    pub fn keys_updating(&self) -> usize {
        self.updates.len()
    }

    /// This node's copy of a key another node owns, without counting a read.
    pub fn peek_copy(&self, key: &[u8], now: Instant) -> Option<Hit> {
        self.hot.peek(key, now).map(Hit::from)
    }

    /// The owned entry of a key, without counting a read.
    pub fn peek_owned(&self, key: &[u8], now: Instant) -> Option<Hit> {
        self.shard.peek(key, now).map(Hit::from)
    }
}
