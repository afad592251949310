//! The README's rules about hot keys, singleflight, coherence, ordering,
//! automatic copies, eviction and membership, one test each, with time
//! passed in: no process, no sleep.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::ops::{Hit, Op, ReplicaUpdate, Reply, Scope};

/// A ring where a key `x/...` belongs to the member named `x`, and any
/// other key (or one whose member is gone) to the first member.
struct Ring {
    names: Vec<NodeId>,
    me: Option<usize>,
}

fn ring(names: &[&str], me: &str) -> Ring {
    let names: Vec<NodeId> = names.iter().map(|n| NodeId::from(*n)).collect();
    let me = names.iter().position(|n| &**n == me);
    Ring { names, me }
}

impl RingFacts for Ring {
    fn owner_of(&self, key: &[u8]) -> Option<usize> {
        if self.names.is_empty() {
            return None;
        }
        let prefix = key.split(|&b| b == b'/').next().unwrap_or_default();
        Some(
            self.names
                .iter()
                .position(|n| n.as_bytes() == prefix)
                .unwrap_or(0),
        )
    }
    fn names(&self) -> &[NodeId] {
        &self.names
    }
    fn me(&self) -> Option<usize> {
        self.me
    }
}

fn settings() -> Settings {
    Settings {
        shard_capacity: 1 << 20,
        hot_capacity: 1 << 20,
        negative_capacity: 4096,
        negative_ttl: Duration::ZERO,
        hot_auto_threshold: 0,
        hot_auto_ttl: Duration::from_secs(5),
        has_origin: false,
        origin_ttl: Duration::from_secs(300),
        jitter: TtlJitter::new(0.0, Duration::ZERO),
        max_value_bytes: 1 << 20,
    }
}

/// One engine and the effects it produced.
struct Node {
    engine: Engine,
    next_token: Token,
    effects: Vec<Effect>,
    t0: Instant,
}

impl Node {
    fn new(settings: Settings) -> Node {
        let engine = Engine::with_rng(settings, fastrand::Rng::with_seed(7));
        Node {
            engine,
            next_token: 1,
            effects: Vec::new(),
            t0: Instant::now(),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// Runs `op`: `Ok(reply)` when answered at once, else the waiter.
    fn call(&mut self, op: Op, scope: Scope, view: &Ring, ms: u64) -> Result<Reply, Token> {
        let token = self.next_token;
        self.next_token += 1;
        let now = self.at(ms);
        match self
            .engine
            .call(token, op, scope, view, now, &mut self.effects)
        {
            Some(reply) => Ok(reply),
            None => Err(token),
        }
    }

    fn get(&mut self, key: &str, view: &Ring, ms: u64) -> Result<Reply, Token> {
        self.call(Op::get(key.as_bytes().into()), Scope::Cluster, view, ms)
    }

    fn set(
        &mut self,
        key: &str,
        value: &str,
        hot: bool,
        view: &Ring,
        ms: u64,
    ) -> Result<Reply, Token> {
        let op = Op::Set {
            key: key.as_bytes().into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ttl: Duration::ZERO,
            hot,
        };
        self.call(op, Scope::Cluster, view, ms)
    }

    fn delete(&mut self, key: &str, view: &Ring, ms: u64) -> Result<Reply, Token> {
        self.call(
            Op::Delete {
                key: key.as_bytes().into(),
            },
            Scope::Cluster,
            view,
            ms,
        )
    }

    fn replicate(&mut self, key: &str, update: ReplicaUpdate, view: &Ring, ms: u64) -> Reply {
        let op = Op::Replicate {
            key: key.as_bytes().into(),
            update,
        };
        self.call(op, Scope::Node, view, ms)
            .expect("replica updates answer at once")
    }

    fn take(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    fn peer_done(&mut self, load: LoadId, result: PeerLoad, view: &Ring, ms: u64) -> Vec<Effect> {
        let now = self.at(ms);
        self.engine
            .peer_load_done(load, result, view, now, &mut self.effects);
        self.take()
    }

    fn origin_done(
        &mut self,
        load: LoadId,
        result: OriginLoad,
        view: &Ring,
        ms: u64,
    ) -> Vec<Effect> {
        let now = self.at(ms);
        self.engine
            .origin_load_done(load, result, view, now, &mut self.effects);
        self.take()
    }

    fn updates_done(
        &mut self,
        key: &str,
        outcomes: &[(&str, TargetOutcome)],
        view: &Ring,
        ms: u64,
    ) -> Vec<Effect> {
        let now = self.at(ms);
        let outcomes = outcomes
            .iter()
            .map(|(n, o)| (NodeId::from(*n), o.clone()))
            .collect();
        self.engine
            .updates_done(key.as_bytes(), outcomes, view, now, &mut self.effects);
        self.take()
    }
}

fn value(reply: &Reply) -> Option<&[u8]> {
    match reply {
        Reply::Value(Some(hit)) => Some(&hit.value),
        Reply::Value(None) => None,
        other => panic!("expected a value, got {other:?}"),
    }
}

fn hit(v: &str) -> Reply {
    Reply::Value(Some(Hit {
        value: Bytes::copy_from_slice(v.as_bytes()),
        hot: false,
        expires_at: None,
    }))
}

/// The answers among `effects`, by token.
fn answers(effects: &[Effect]) -> HashMap<Token, &Reply> {
    let mut all = HashMap::new();
    for effect in effects {
        if let Effect::Answer { token, reply } = effect {
            assert!(
                all.insert(*token, reply).is_none(),
                "token {token} answered twice"
            );
        }
    }
    all
}

fn peer_load(effects: &[Effect]) -> (LoadId, usize, bool) {
    let loads: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::LoadFromPeer {
                load,
                owner,
                keep_copy,
                ..
            } => Some((*load, *owner, *keep_copy)),
            _ => None,
        })
        .collect();
    assert_eq!(loads.len(), 1, "{effects:?}");
    loads[0]
}

fn origin_load(effects: &[Effect]) -> LoadId {
    let loads: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::LoadFromOrigin { load, .. } => Some(*load),
            _ => None,
        })
        .collect();
    assert_eq!(loads.len(), 1, "{effects:?}");
    loads[0]
}

/// The `SendUpdates` among `effects`: (key, update, targets, strict).
fn sent(effects: &[Effect]) -> Vec<(String, ReplicaUpdate, Vec<String>, bool)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendUpdates {
                key,
                update,
                targets,
                strict,
            } => Some((
                String::from_utf8_lossy(key).into_owned(),
                update.clone(),
                targets.iter().map(|t| t.to_string()).collect(),
                *strict,
            )),
            _ => None,
        })
        .collect()
}

fn is_put(update: &ReplicaUpdate, v: &str) -> bool {
    matches!(update, ReplicaUpdate::Put { value, .. } if value == v.as_bytes())
}

fn is_remove(update: &ReplicaUpdate) -> bool {
    matches!(update, ReplicaUpdate::Remove)
}

const UPDATED: TargetOutcome = TargetOutcome::Updated;

// ---- hot keys -------------------------------------------------------------

#[test]
fn a_read_of_a_remote_key_without_a_copy_asks_the_owner() {
    let view = ring(&["a", "b", "c"], "a");
    let mut a = Node::new(settings());
    let token = a.get("b/k", &view, 0).unwrap_err();
    let effects = a.take();
    let (load, owner, keep_copy) = peer_load(&effects);
    assert_eq!((owner, keep_copy), (1, false));
    let done = a.peer_done(load, PeerLoad::Answered(hit("v")), &view, 1);
    assert_eq!(value(answers(&done)[&token]), Some(&b"v"[..]));
    // Nothing was kept: the next read asks again.
    assert!(a.get("b/k", &view, 2).is_err());
}

#[test]
fn a_hot_write_pushes_the_value_to_every_other_node_before_it_is_acknowledged() {
    let view = ring(&["a", "b", "c"], "a");
    let mut a = Node::new(settings());
    let token = a.set("a/k", "v", true, &view, 0).unwrap_err();
    let effects = a.take();
    let updates = sent(&effects);
    assert_eq!(updates.len(), 1);
    let (key, update, targets, strict) = &updates[0];
    assert_eq!(key, "a/k");
    assert!(is_put(update, "v"));
    assert_eq!(targets, &["b", "c"]);
    assert!(strict, "hot keys are strict");
    assert!(
        answers(&effects).is_empty(),
        "not acknowledged before the nodes answered"
    );
    let done = a.updates_done("a/k", &[("b", UPDATED), ("c", UPDATED)], &view, 1);
    assert!(matches!(answers(&done)[&token], Reply::Stored));
    assert_eq!(a.engine.keys_updating(), 0);
}

#[test]
fn a_pushed_copy_answers_reads_without_a_peer_request() {
    let view = ring(&["a", "b"], "b");
    let mut b = Node::new(settings());
    let expires_at = Some(b.at(10_000));
    let put = ReplicaUpdate::Put {
        value: Bytes::from_static(b"v"),
        expires_at,
    };
    assert!(matches!(b.replicate("a/k", put, &view, 0), Reply::Stored));
    let reply = b.get("a/k", &view, 1).expect("answered from the hot tier");
    let Reply::Value(Some(found)) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(&found.value[..], b"v");
    assert!(found.hot);
    assert_eq!(
        found.expires_at, expires_at,
        "the copy expires with the owner's entry"
    );
    assert!(b.take().is_empty());
    assert_eq!(b.engine.take_counters().replica_copies, 1);
    // And it expires with it.
    assert!(b.get("a/k", &view, 10_000).is_err());
}

#[test]
fn the_hot_write_carries_the_remaining_ttl_of_the_owner_entry() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(settings());
    let op = Op::Set {
        key: b"a/k"[..].into(),
        value: Bytes::from_static(b"v"),
        ttl: Duration::from_secs(60),
        hot: true,
    };
    a.call(op, Scope::Cluster, &view, 0).unwrap_err();
    let updates = sent(&a.take());
    let ReplicaUpdate::Put { expires_at, .. } = &updates[0].1 else {
        panic!("{updates:?}")
    };
    assert_eq!(*expires_at, Some(a.at(60_000)));
}

#[test]
fn without_a_hot_tier_copies_are_not_kept_but_hot_writes_succeed() {
    let view = ring(&["a", "b"], "b");
    let mut b = Node::new(Settings {
        hot_capacity: 0,
        hot_auto_threshold: 1,
        ..settings()
    });
    let put = ReplicaUpdate::Put {
        value: Bytes::from_static(b"v"),
        expires_at: None,
    };
    assert!(matches!(b.replicate("a/k", put, &view, 0), Reply::Stored));
    b.get("a/k", &view, 1).unwrap_err();
    let (load, _, keep_copy) = peer_load(&b.take());
    assert!(!keep_copy, "no automatic copy without a hot tier");
    b.peer_done(load, PeerLoad::Answered(hit("v")), &view, 2);
    assert!(b.get("a/k", &view, 3).is_err(), "still forwarded");
    // A hot write of a key it owns is pushed to the others as usual.
    let token = b.set("b/x", "v", true, &view, 4).unwrap_err();
    assert_eq!(sent(&b.take()).len(), 1);
    let done = b.updates_done("b/x", &[("a", UPDATED)], &view, 5);
    assert!(matches!(answers(&done)[&token], Reply::Stored));
}

#[test]
fn a_copy_too_large_for_the_hot_tier_is_dropped_and_reads_go_to_the_owner() {
    let view = ring(&["a", "b"], "b");
    let mut b = Node::new(Settings {
        hot_capacity: 200,
        ..settings()
    });
    let small = ReplicaUpdate::Put {
        value: Bytes::from_static(b"old"),
        expires_at: None,
    };
    b.replicate("a/k", small, &view, 0);
    let large = ReplicaUpdate::Put {
        value: Bytes::from(vec![b'x'; 1000]),
        expires_at: None,
    };
    assert!(matches!(b.replicate("a/k", large, &view, 1), Reply::Stored));
    assert!(
        b.engine.peek_copy(b"a/k", b.at(1)).is_none(),
        "the old copy is gone too"
    );
    assert!(b.get("a/k", &view, 2).is_err());
}

// ---- coherence ------------------------------------------------------------

#[test]
fn a_write_of_a_key_without_copies_is_acknowledged_at_once() {
    let view = ring(&["a", "b", "c"], "a");
    let mut a = Node::new(settings());
    assert!(matches!(
        a.set("a/k", "v", false, &view, 0),
        Ok(Reply::Stored)
    ));
    assert!(matches!(
        a.delete("a/k", &view, 1),
        Ok(Reply::Deleted(true))
    ));
    assert!(matches!(
        a.delete("a/k", &view, 2),
        Ok(Reply::Deleted(false))
    ));
    assert!(a.take().is_empty());
}

#[test]
fn a_plain_write_of_a_key_with_an_automatic_copy_removes_it_best_effort() {
    let view = ring(&["a", "b", "c"], "a");
    let mut a = Node::new(settings());
    a.set("a/k", "v1", false, &view, 0).unwrap();
    // b's read keeps a copy: the owner notes it.
    let op = Op::Get {
        key: b"a/k"[..].into(),
        keep_copy: true,
    };
    assert_eq!(
        value(&a.call(op, Scope::Node, &view, 1).unwrap()),
        Some(&b"v1"[..])
    );
    let token = a.set("a/k", "v2", false, &view, 2).unwrap_err();
    let effects = a.take();
    let updates = sent(&effects);
    assert_eq!(updates.len(), 1);
    assert!(is_remove(&updates[0].1));
    assert_eq!(updates[0].2, ["b", "c"]);
    assert!(!updates[0].3, "automatic copies are best effort");
    // b did not answer: acknowledged anyway.
    let done = a.updates_done(
        "a/k",
        &[
            ("b", TargetOutcome::Failed("timeout".into())),
            ("c", UPDATED),
        ],
        &view,
        3,
    );
    assert!(matches!(answers(&done)[&token], Reply::Stored));
    // The copy was removed: the next write needs no update.
    assert!(matches!(
        a.set("a/k", "v3", false, &view, 4),
        Ok(Reply::Stored)
    ));
}

#[test]
fn a_plain_write_or_delete_of_a_hot_key_removes_the_copies_strictly() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(settings());
    let t = a.set("a/k", "v1", true, &view, 0).unwrap_err();
    a.take();
    a.updates_done("a/k", &[("b", UPDATED)], &view, 1);
    let _ = t;
    let token = a.set("a/k", "v2", false, &view, 2).unwrap_err();
    let updates = sent(&a.take());
    assert!(is_remove(&updates[0].1));
    assert!(updates[0].3, "the entry it replaces was hot");
    let done = a.updates_done(
        "a/k",
        &[("b", TargetOutcome::Failed("frozen".into()))],
        &view,
        3,
    );
    let Reply::ReplicaNotUpdated { peer, reason } = answers(&done)[&token] else {
        panic!("{done:?}")
    };
    assert_eq!((peer.as_str(), reason.as_str()), ("b", "frozen"));
    // The owner has the new value anyway.
    assert_eq!(
        &a.engine.peek_owned(b"a/k", a.at(3)).unwrap().value[..],
        b"v2"
    );

    a.set("a/d", "v", true, &view, 4).unwrap_err();
    a.take();
    a.updates_done("a/d", &[("b", UPDATED)], &view, 5);
    let token = a.delete("a/d", &view, 6).unwrap_err();
    let updates = sent(&a.take());
    assert!(is_remove(&updates[0].1) && updates[0].3);
    let done = a.updates_done("a/d", &[("b", UPDATED)], &view, 7);
    assert!(matches!(answers(&done)[&token], Reply::Deleted(true)));
}

#[test]
fn a_node_proven_down_does_not_fail_a_hot_write() {
    let view = ring(&["a", "b", "c"], "a");
    let mut a = Node::new(settings());
    let token = a.set("a/k", "v", true, &view, 0).unwrap_err();
    a.take();
    let done = a.updates_done(
        "a/k",
        &[("b", TargetOutcome::Down), ("c", UPDATED)],
        &view,
        1,
    );
    assert!(matches!(answers(&done)[&token], Reply::Stored));
}

#[test]
fn a_node_alone_in_its_ring_sends_no_updates() {
    let view = ring(&["a"], "a");
    let mut a = Node::new(settings());
    assert!(matches!(
        a.set("a/k", "v", true, &view, 0),
        Ok(Reply::Stored)
    ));
    assert!(a.take().is_empty());
}

#[test]
fn a_write_of_a_remote_key_drops_the_local_copy_and_is_forwarded() {
    let view = ring(&["a", "b"], "b");
    let mut b = Node::new(settings());
    let put = ReplicaUpdate::Put {
        value: Bytes::from_static(b"v1"),
        expires_at: None,
    };
    b.replicate("a/k", put, &view, 0);
    let token = b.set("a/k", "v2", false, &view, 1).unwrap_err();
    let effects = b.take();
    assert!(matches!(
        &effects[..],
        [Effect::Forward { token: t, owner: 0, op: Op::Set { .. } }] if *t == token
    ));
    assert!(b.engine.peek_copy(b"a/k", b.at(1)).is_none());
    assert!(matches!(
        forwarded_reply("a", Err("refused".into())),
        Reply::OwnerUnavailable { peer, reason } if peer == "a" && reason == "refused"
    ));
    assert!(matches!(
        forwarded_reply("a", Ok(Reply::Stored)),
        Reply::Stored
    ));
}

#[test]
fn an_update_from_the_owner_drops_an_entry_from_when_this_node_owned_the_key() {
    let view = ring(&["a", "b"], "b");
    let mut b = Node::new(settings());
    // Written here when b owned it (Scope::Node: as a forwarded write).
    let op = Op::Set {
        key: b"a/k"[..].into(),
        value: Bytes::from_static(b"old"),
        ttl: Duration::ZERO,
        hot: false,
    };
    b.call(op, Scope::Node, &view, 0).unwrap();
    b.replicate("a/k", ReplicaUpdate::Remove, &view, 1);
    assert!(b.engine.peek_owned(b"a/k", b.at(1)).is_none());
}

#[test]
fn the_owner_serves_a_copy_pushed_by_the_previous_owner() {
    // The ring moved a/k... to b: b holds a pushed copy from a.
    let view = ring(&["b"], "b");
    let mut b = Node::new(settings());
    let put = ReplicaUpdate::Put {
        value: Bytes::from_static(b"v"),
        expires_at: None,
    };
    b.replicate("a/k", put, &view, 0);
    assert_eq!(value(&b.get("a/k", &view, 1).unwrap()), Some(&b"v"[..]));
    // Its next write treats the key as hot (a copy may be elsewhere).
    let wider = ring(&["b", "c"], "b");
    b.set("a/k", "v2", false, &wider, 2).unwrap_err();
    let updates = sent(&b.take());
    assert!(is_remove(&updates[0].1) && updates[0].3);
}

// ---- singleflight and read-through ---------------------------------------

#[test]
fn concurrent_misses_share_one_load_and_all_get_its_answer() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(settings());
    let tokens: Vec<Token> = (0..5)
        .map(|i| a.get("b/k", &view, i).unwrap_err())
        .collect();
    let effects = a.take();
    let (load, _, _) = peer_load(&effects);
    assert_eq!(a.engine.take_counters().singleflight_shared, 4);
    // Another key has its own load.
    a.get("b/other", &view, 5).unwrap_err();
    peer_load(&a.take());
    let done = a.peer_done(load, PeerLoad::Answered(hit("v")), &view, 6);
    let answered = answers(&done);
    assert_eq!(answered.len(), 5);
    for token in tokens {
        assert_eq!(value(answered[&token]), Some(&b"v"[..]));
    }
    // The next miss starts a new load.
    a.get("b/k", &view, 7).unwrap_err();
    peer_load(&a.take());
}

#[test]
fn a_load_belongs_to_no_reader_and_its_result_is_kept_for_later_ones() {
    // The runtime runs a load on its own; a reader that goes away only
    // drops its channel. The engine's side: the load ends the same way
    // and what it loaded is cached, whoever is left to answer.
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(Settings {
        has_origin: true,
        ..settings()
    });
    let first = a.get("a/k", &view, 0).unwrap_err();
    let second = a.get("a/k", &view, 1).unwrap_err();
    let load = origin_load(&a.take());
    let done = a.origin_done(load, OriginLoad::Found(Bytes::from_static(b"v")), &view, 2);
    let answered = answers(&done);
    assert!(answered.contains_key(&first) && answered.contains_key(&second));
    assert_eq!(value(&a.get("a/k", &view, 3).unwrap()), Some(&b"v"[..]));
    assert_eq!(a.engine.loads_in_flight(), 0);
}

#[test]
fn an_owner_miss_loads_from_the_origin_and_caches_for_the_origin_ttl() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(Settings {
        has_origin: true,
        ..settings()
    });
    let token = a.get("a/k", &view, 0).unwrap_err();
    let load = origin_load(&a.take());
    let done = a.origin_done(load, OriginLoad::Found(Bytes::from_static(b"v")), &view, 10);
    let Reply::Value(Some(found)) = answers(&done)[&token] else {
        panic!("{done:?}")
    };
    assert_eq!(found.expires_at, Some(a.at(10 + 300_000)));
    assert!(a.get("a/k", &view, 20).is_ok());
    assert!(
        a.get("a/k", &view, 10 + 300_000).is_err(),
        "expired: loaded again"
    );
}

#[test]
fn without_an_origin_an_owner_miss_is_answered_at_once() {
    let view = ring(&["a"], "a");
    let mut a = Node::new(settings());
    assert!(matches!(a.get("a/k", &view, 0), Ok(Reply::Value(None))));
    assert!(a.take().is_empty());
}

#[test]
fn an_origin_404_is_remembered_for_the_negative_ttl_and_a_write_ends_it() {
    let view = ring(&["a"], "a");
    let mut a = Node::new(Settings {
        has_origin: true,
        negative_ttl: Duration::from_secs(30),
        ..settings()
    });
    a.get("a/k", &view, 0).unwrap_err();
    let load = origin_load(&a.take());
    a.origin_done(load, OriginLoad::NotFound, &view, 1);
    assert!(matches!(a.get("a/k", &view, 2), Ok(Reply::Value(None))));
    assert_eq!(a.engine.take_counters().negative_hits, 1);
    // Past the negative TTL the origin is asked again.
    assert!(a.get("a/k", &view, 1 + 30_000).is_err());
    let load = origin_load(&a.take());
    a.origin_done(load, OriginLoad::NotFound, &view, 40_000);
    assert!(a.get("a/k", &view, 40_001).is_ok());
    a.set("a/k", "v", false, &view, 40_002).unwrap();
    a.delete("a/k", &view, 40_003).unwrap();
    assert!(
        a.get("a/k", &view, 40_004).is_err(),
        "the write ended the 404"
    );
}

#[test]
fn without_negative_ttl_every_404_asks_the_origin() {
    let view = ring(&["a"], "a");
    let mut a = Node::new(Settings {
        has_origin: true,
        ..settings()
    });
    a.get("a/k", &view, 0).unwrap_err();
    let load = origin_load(&a.take());
    a.origin_done(load, OriginLoad::NotFound, &view, 1);
    assert!(a.get("a/k", &view, 2).is_err());
}

#[test]
fn an_origin_failure_is_answered_and_nothing_is_cached() {
    let view = ring(&["a"], "a");
    let mut a = Node::new(Settings {
        has_origin: true,
        negative_ttl: Duration::from_secs(30),
        ..settings()
    });
    let token = a.get("a/k", &view, 0).unwrap_err();
    let load = origin_load(&a.take());
    let done = a.origin_done(load, OriginLoad::Failed("refused".into()), &view, 1);
    assert!(matches!(answers(&done)[&token], Reply::OriginFailed(r) if r == "refused"));
    assert!(a.get("a/k", &view, 2).is_err());
}

#[test]
fn an_unreachable_owner_is_replaced_by_the_origin_here_without_caching() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(Settings {
        has_origin: true,
        ..settings()
    });
    let token = a.get("b/k", &view, 0).unwrap_err();
    let (load, _, _) = peer_load(&a.take());
    let effects = a.peer_done(load, PeerLoad::Unreachable, &view, 1);
    assert!(answers(&effects).is_empty());
    let again = origin_load(&effects);
    assert_eq!(again, load, "the same load goes on");
    let follower = a.get("b/k", &view, 2).unwrap_err();
    assert!(a.take().is_empty(), "a reader meanwhile joins it");
    let done = a.origin_done(load, OriginLoad::Found(Bytes::from_static(b"v")), &view, 3);
    let answered = answers(&done);
    assert_eq!(value(answered[&token]), Some(&b"v"[..]));
    assert_eq!(value(answered[&follower]), Some(&b"v"[..]));
    assert!(
        a.engine.peek_owned(b"b/k", a.at(3)).is_none(),
        "only owners cache"
    );
    assert!(a.get("b/k", &view, 4).is_err());
}

#[test]
fn a_draining_owner_is_not_an_origin_failure() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(Settings {
        has_origin: true,
        ..settings()
    });
    for draining in [PeerLoad::NotServing, PeerLoad::Answered(Reply::Unavailable)] {
        let token = a.get("b/k", &view, 0).unwrap_err();
        let (load, _, _) = peer_load(&a.take());
        let effects = a.peer_done(load, draining, &view, 1);
        assert_eq!(origin_load(&effects), load, "loaded from the origin here");
        let done = a.origin_done(load, OriginLoad::Found(Bytes::from_static(b"v")), &view, 2);
        assert_eq!(value(answers(&done)[&token]), Some(&b"v"[..]));
    }
    // Without an origin it is a miss, as for an unreachable owner.
    let mut plain = Node::new(settings());
    let token = plain.get("b/k", &view, 0).unwrap_err();
    let (load, _, _) = peer_load(&plain.take());
    let done = plain.peer_done(load, PeerLoad::NotServing, &view, 1);
    assert!(matches!(answers(&done)[&token], Reply::Value(None)));
}

#[test]
fn an_unreachable_owner_without_an_origin_is_a_miss() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(settings());
    let token = a.get("b/k", &view, 0).unwrap_err();
    let (load, _, _) = peer_load(&a.take());
    let done = a.peer_done(load, PeerLoad::Unreachable, &view, 1);
    assert!(matches!(answers(&done)[&token], Reply::Value(None)));
}

#[test]
fn the_owners_error_with_an_origin_is_an_origin_failure_naming_the_owner() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(Settings {
        has_origin: true,
        ..settings()
    });
    let token = a.get("b/k", &view, 0).unwrap_err();
    let (load, _, _) = peer_load(&a.take());
    let status = PeerLoad::Status("origin failed: timed out".into());
    let done = a.peer_done(load, status, &view, 1);
    assert!(matches!(
        answers(&done)[&token],
        Reply::OriginFailed(r) if r == "timed out (loaded by owner b)"
    ));
    // The owner's own origin failure passes through as is.
    a.get("b/k", &view, 2).unwrap_err();
    let (load, _, _) = peer_load(&a.take());
    let failed = PeerLoad::Answered(Reply::OriginFailed("x".into()));
    let done = a.peer_done(load, failed, &view, 3);
    assert!(matches!(answers(&done).values().next(), Some(Reply::OriginFailed(r)) if r == "x"));
}

// ---- write during load ----------------------------------------------------

#[test]
fn a_write_during_an_origin_load_wins_and_waiting_readers_get_the_load() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(Settings {
        has_origin: true,
        ..settings()
    });
    let reader = a.get("a/k", &view, 0).unwrap_err();
    let load = origin_load(&a.take());
    assert!(matches!(
        a.set("a/k", "written", false, &view, 1),
        Ok(Reply::Stored)
    ));
    let done = a.origin_done(
        load,
        OriginLoad::Found(Bytes::from_static(b"loaded")),
        &view,
        2,
    );
    assert_eq!(value(answers(&done)[&reader]), Some(&b"loaded"[..]));
    assert_eq!(
        value(&a.get("a/k", &view, 3).unwrap()),
        Some(&b"written"[..])
    );
}

#[test]
fn a_keep_copy_reader_gets_the_value_the_shard_holds_when_the_load_lands() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(Settings {
        has_origin: true,
        ..settings()
    });
    let keep = Op::Get {
        key: b"a/k"[..].into(),
        keep_copy: true,
    };
    let copier = a.call(keep, Scope::Node, &view, 0).unwrap_err();
    let plain = a.get("a/k", &view, 0).unwrap_err();
    let load = origin_load(&a.take());
    a.set("a/k", "written", false, &view, 1).unwrap();
    let done = a.origin_done(
        load,
        OriginLoad::Found(Bytes::from_static(b"loaded")),
        &view,
        2,
    );
    let answered = answers(&done);
    assert_eq!(value(answered[&copier]), Some(&b"written"[..]));
    assert_eq!(value(answered[&plain]), Some(&b"loaded"[..]));
    // The owner now knows a copy exists: the next write removes it.
    a.set("a/k", "again", false, &view, 3).unwrap_err();
    assert!(is_remove(&sent(&a.take())[0].1));
}

#[test]
fn a_keep_copy_reader_of_a_key_deleted_during_the_load_gets_a_miss() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(Settings {
        has_origin: true,
        ..settings()
    });
    let keep = Op::Get {
        key: b"a/k"[..].into(),
        keep_copy: true,
    };
    let copier = a.call(keep, Scope::Node, &view, 0).unwrap_err();
    let load = origin_load(&a.take());
    a.delete("a/k", &view, 1).unwrap();
    let done = a.origin_done(
        load,
        OriginLoad::Found(Bytes::from_static(b"loaded")),
        &view,
        2,
    );
    assert!(matches!(answers(&done)[&copier], Reply::Value(None)));
    assert!(
        a.engine.peek_owned(b"a/k", a.at(2)).is_none(),
        "not cached over the delete"
    );
}

#[test]
fn an_owner_update_during_a_peer_load_means_its_answer_is_not_kept() {
    let view = ring(&["a", "b"], "b");
    let mut b = Node::new(Settings {
        hot_auto_threshold: 1,
        ..settings()
    });
    let reader = b.get("a/k", &view, 0).unwrap_err();
    let (load, _, keep_copy) = peer_load(&b.take());
    assert!(keep_copy);
    b.replicate("a/k", ReplicaUpdate::Remove, &view, 1);
    let done = b.peer_done(load, PeerLoad::Answered(hit("old")), &view, 2);
    assert_eq!(value(answers(&done)[&reader]), Some(&b"old"[..]));
    assert!(b.engine.peek_copy(b"a/k", b.at(2)).is_none());
    assert_eq!(b.engine.take_counters().auto_copies, 0);
}

#[test]
fn a_read_after_a_write_does_not_join_the_load_the_write_overtook() {
    let view = ring(&["a", "b"], "b");
    let mut b = Node::new(settings());
    let before = b.get("a/k", &view, 0).unwrap_err();
    let (old_load, _, _) = peer_load(&b.take());
    // The owner's write reaches b (and is then acknowledged).
    b.replicate("a/k", ReplicaUpdate::Remove, &view, 1);
    let after = b.get("a/k", &view, 2).unwrap_err();
    let (new_load, _, _) = peer_load(&b.take());
    assert_ne!(old_load, new_load);
    let done = b.peer_done(old_load, PeerLoad::Answered(hit("old")), &view, 3);
    assert_eq!(answers(&done).keys().copied().collect::<Vec<_>>(), [before]);
    let done = b.peer_done(new_load, PeerLoad::Answered(hit("new")), &view, 4);
    assert_eq!(value(answers(&done)[&after]), Some(&b"new"[..]));
    assert_eq!(b.engine.loads_in_flight(), 0);
}

// ---- order of a key's updates ----------------------------------------------

#[test]
fn a_second_writes_updates_wait_for_the_firsts() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(settings());
    let first = a.set("a/k", "v1", true, &view, 0).unwrap_err();
    let second = a.set("a/k", "v2", true, &view, 1).unwrap_err();
    let updates = sent(&a.take());
    assert_eq!(updates.len(), 1, "the second waits");
    assert!(is_put(&updates[0].1, "v1"));
    let done = a.updates_done("a/k", &[("b", UPDATED)], &view, 2);
    assert!(matches!(answers(&done)[&first], Reply::Stored));
    assert!(!answers(&done).contains_key(&second));
    let updates = sent(&done);
    assert_eq!(updates.len(), 1);
    assert!(is_put(&updates[0].1, "v2"));
    let done = a.updates_done("a/k", &[("b", UPDATED)], &view, 3);
    assert!(matches!(answers(&done)[&second], Reply::Stored));
    assert_eq!(a.engine.keys_updating(), 0);
}

#[test]
fn a_write_while_an_update_is_queued_sends_a_removal_even_without_copies() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(settings());
    a.set("a/k", "v1", true, &view, 0).unwrap_err();
    // A delete of the key (no entry left to say copies exist) then a set.
    let delete = a.delete("a/k", &view, 1).unwrap_err();
    let set = a.set("a/k", "v2", false, &view, 2).unwrap_err();
    a.take();
    let done = a.updates_done("a/k", &[("b", UPDATED)], &view, 3);
    assert!(is_remove(&sent(&done)[0].1));
    let done = a.updates_done("a/k", &[("b", UPDATED)], &view, 4);
    assert!(matches!(answers(&done)[&delete], Reply::Deleted(true)));
    assert!(is_remove(&sent(&done)[0].1), "the set's removal follows");
    let done = a.updates_done("a/k", &[("b", UPDATED)], &view, 5);
    assert!(matches!(answers(&done)[&set], Reply::Stored));
}

#[test]
fn writes_of_different_keys_do_not_wait_for_each_other() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(settings());
    a.set("a/k1", "v", true, &view, 0).unwrap_err();
    a.set("a/k2", "v", true, &view, 0).unwrap_err();
    let keys: Vec<String> = sent(&a.take()).into_iter().map(|u| u.0).collect();
    assert_eq!(keys, ["a/k1", "a/k2"]);
}

// ---- automatic copies -------------------------------------------------------

#[test]
fn a_key_read_often_enough_earns_an_automatic_copy() {
    let view = ring(&["a", "b"], "b");
    let mut b = Node::new(Settings {
        hot_auto_threshold: 3,
        ..settings()
    });
    for ms in 0..2 {
        let token = b.get("a/k", &view, ms).unwrap_err();
        let (load, _, keep_copy) = peer_load(&b.take());
        assert!(!keep_copy);
        let done = b.peer_done(load, PeerLoad::Answered(hit("v")), &view, ms);
        assert!(answers(&done).contains_key(&token));
    }
    b.get("a/k", &view, 2).unwrap_err();
    let (load, _, keep_copy) = peer_load(&b.take());
    assert!(keep_copy, "the third read tells the owner it keeps a copy");
    b.peer_done(load, PeerLoad::Answered(hit("v")), &view, 3);
    assert_eq!(b.engine.take_counters().auto_copies, 1);
    assert_eq!(value(&b.get("a/k", &view, 4).unwrap()), Some(&b"v"[..]));
}

#[test]
fn an_automatic_copy_lives_hot_auto_ttl_at_most_and_never_past_its_expiry() {
    let view = ring(&["a", "b"], "b");
    let mut b = Node::new(Settings {
        hot_auto_threshold: 1,
        ..settings()
    });
    // No expiry at the owner: the copy lives 5 s.
    b.get("a/long", &view, 0).unwrap_err();
    let (load, _, _) = peer_load(&b.take());
    b.peer_done(load, PeerLoad::Answered(hit("v")), &view, 100);
    assert!(b.get("a/long", &view, 5_099).is_ok());
    assert!(b.get("a/long", &view, 5_100).is_err());
    b.take();
    // Expiring in 1 s at the owner: the copy too.
    b.get("a/short", &view, 0).unwrap_err();
    let (load, _, _) = peer_load(&b.take());
    let expiring = Reply::Value(Some(Hit {
        value: Bytes::from_static(b"v"),
        hot: false,
        expires_at: Some(b.at(1_000)),
    }));
    b.peer_done(load, PeerLoad::Answered(expiring), &view, 100);
    assert!(b.get("a/short", &view, 999).is_ok());
    assert!(b.get("a/short", &view, 1_000).is_err());
}

#[test]
fn a_zero_threshold_turns_automatic_copies_off() {
    let view = ring(&["a", "b"], "b");
    let mut b = Node::new(settings());
    for ms in 0..50 {
        b.get("a/k", &view, ms).unwrap_err();
        let (load, _, keep_copy) = peer_load(&b.take());
        assert!(!keep_copy);
        b.peer_done(load, PeerLoad::Answered(hit("v")), &view, ms);
    }
}

// ---- eviction ---------------------------------------------------------------

#[test]
fn evicting_an_entry_with_copies_removes_them_in_the_background() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(Settings {
        shard_capacity: 400,
        ..settings()
    });
    let hot = a.set("a/hot", "v", true, &view, 0).unwrap_err();
    a.take();
    a.updates_done("a/hot", &[("b", UPDATED)], &view, 1);
    // Plain writes fill the shard until the hot entry is evicted.
    let mut removal = None;
    for i in 0..20 {
        let reply = a.set(&format!("a/filler{i}"), "0123456789", false, &view, 2 + i);
        assert!(
            matches!(reply, Ok(Reply::Stored)),
            "nobody waits on the removal"
        );
        let updates = sent(&a.take());
        if let Some(update) = updates.into_iter().next() {
            removal = Some(update);
            break;
        }
    }
    let (key, update, targets, strict) = removal.expect("the hot entry was evicted");
    assert_eq!(key, "a/hot");
    assert!(is_remove(&update));
    assert_eq!(targets, ["b"]);
    assert!(!strict);
    let _ = hot;
}

// ---- membership ---------------------------------------------------------------

#[test]
fn automatic_copies_whose_owner_moved_are_dropped_on_a_ring_change() {
    let before = ring(&["a", "b", "c"], "b");
    let mut b = Node::new(Settings {
        hot_auto_threshold: 1,
        ..settings()
    });
    for key in ["a/k", "c/k"] {
        b.get(key, &before, 0).unwrap_err();
        let (load, _, _) = peer_load(&b.take());
        b.peer_done(load, PeerLoad::Answered(hit("v")), &before, 1);
    }
    let pushed = ReplicaUpdate::Put {
        value: Bytes::from_static(b"v"),
        expires_at: None,
    };
    b.replicate("c/pushed", pushed, &before, 2);
    // c leaves: its keys move to a (the first member).
    let after = ring(&["a", "b"], "b");
    b.engine
        .ring_changed(&before, &after, b.at(3), &mut b.effects);
    assert!(b.take().is_empty());
    assert!(
        b.engine.peek_copy(b"a/k", b.at(3)).is_some(),
        "owner unchanged"
    );
    assert!(b.engine.peek_copy(b"c/k", b.at(3)).is_none(), "owner moved");
    assert!(
        b.engine.peek_copy(b"c/pushed", b.at(3)).is_some(),
        "pushed copies stay: the next write to the new owner removes them"
    );
}

#[test]
fn hot_keys_are_handed_to_nodes_that_join_one_key_at_a_time() {
    let before = ring(&["a", "b"], "a");
    let mut a = Node::new(settings());
    for key in ["a/hot1", "a/hot2", "a/written-over"] {
        a.set(key, "v", true, &before, 0).unwrap_err();
        a.take();
        a.updates_done(key, &[("b", UPDATED)], &before, 1);
    }
    a.set("a/plain", "v", false, &before, 2).unwrap();
    // Owned by b: not this node's to hand over.
    let op = Op::Set {
        key: b"b/hot"[..].into(),
        value: Bytes::from_static(b"v"),
        ttl: Duration::ZERO,
        hot: true,
    };
    a.call(op, Scope::Node, &before, 2).unwrap_err();
    a.take();
    a.updates_done("b/hot", &[("b", UPDATED)], &before, 2);
    let after = ring(&["a", "b", "d"], "a");
    a.engine
        .ring_changed(&before, &after, a.at(3), &mut a.effects);
    let mut handed = Vec::new();
    let first = sent(&a.take());
    assert_eq!(first.len(), 1, "one key at a time: {first:?}");
    // Written over as a plain value before its turn: it will be skipped.
    let plain = a
        .set("a/written-over", "plain", false, &after, 3)
        .unwrap_err();
    let mut pending = first;
    pending.extend(sent(&a.take()));
    let mut ms = 4;
    while let Some((key, update, targets, strict)) = pending.pop() {
        if targets == ["d"] {
            assert!(is_put(&update, "v"));
            assert!(!strict);
            handed.push(key.clone());
        }
        let outcomes: Vec<(&str, TargetOutcome)> = targets
            .iter()
            .map(|t| (if t == "b" { "b" } else { "d" }, UPDATED))
            .collect();
        let effects = a.updates_done(&key, &outcomes, &after, ms);
        ms += 1;
        if let Some(reply) = answers(&effects).get(&plain) {
            assert!(matches!(reply, Reply::Stored));
        }
        let next = sent(&effects);
        assert!(next.len() <= 1, "one key at a time: {next:?}");
        pending.extend(next);
        assert!(ms < 20);
    }
    handed.sort();
    assert_eq!(handed, ["a/hot1", "a/hot2"]);
    assert_eq!(a.engine.keys_updating(), 0);
}

#[test]
fn a_handoff_waits_for_the_keys_update_in_flight_and_sends_the_value_then() {
    let before = ring(&["a", "b"], "a");
    let mut a = Node::new(settings());
    let first = a.set("a/k", "v1", true, &before, 0).unwrap_err();
    a.take();
    let after = ring(&["a", "b", "d"], "a");
    a.engine
        .ring_changed(&before, &after, a.at(1), &mut a.effects);
    assert!(a.take().is_empty(), "queued behind v1's update");
    // Another write comes before the handoff's turn: it is queued after it.
    let second = a.set("a/k", "v2", true, &after, 2).unwrap_err();
    assert!(a.take().is_empty());
    let done = a.updates_done("a/k", &[("b", UPDATED)], &after, 3);
    assert!(matches!(answers(&done)[&first], Reply::Stored));
    let handoff = sent(&done);
    assert!(
        is_put(&handoff[0].1, "v2"),
        "the value as it is when its turn comes"
    );
    assert_eq!(handoff[0].2, ["d"]);
    let done = a.updates_done("a/k", &[("d", UPDATED)], &after, 4);
    assert_eq!(sent(&done)[0].2, ["b", "d"]);
    let done = a.updates_done("a/k", &[("b", UPDATED), ("d", UPDATED)], &after, 5);
    assert!(matches!(answers(&done)[&second], Reply::Stored));
}

#[test]
fn a_handoff_of_a_key_no_longer_hot_is_skipped() {
    let before = ring(&["a", "b"], "a");
    let mut a = Node::new(settings());
    a.set("a/k", "v1", true, &before, 0).unwrap_err();
    a.take();
    let after = ring(&["a", "b", "d"], "a");
    a.engine
        .ring_changed(&before, &after, a.at(1), &mut a.effects);
    let plain = a.set("a/k", "v2", false, &after, 2).unwrap_err();
    a.take();
    let done = a.updates_done("a/k", &[("b", UPDATED)], &after, 3);
    // The handoff found no hot value and went; the plain write's removal is next.
    let updates = sent(&done);
    assert_eq!(updates.len(), 1);
    assert!(is_remove(&updates[0].1));
    let done = a.updates_done("a/k", &[("b", UPDATED), ("d", UPDATED)], &after, 4);
    assert!(matches!(answers(&done)[&plain], Reply::Stored));
}

#[test]
fn a_lost_lease_drops_everything_cached() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(settings());
    a.set("a/k", "v", false, &view, 0).unwrap();
    let put = ReplicaUpdate::Put {
        value: Bytes::from_static(b"v"),
        expires_at: None,
    };
    a.replicate("b/k", put, &view, 0);
    assert_eq!(a.engine.clear(), 2);
    assert!(matches!(a.get("a/k", &view, 1), Ok(Reply::Value(None))));
}

#[test]
fn no_runtime_type_lives_in_the_engine() {
    // Spelled in pieces so that this file can be searched too.
    let forbidden = [
        ["glom", "mio"].concat(),
        ["futures", "_channel"].concat(),
        ["spawn", "_local"].concat(),
        ["async", " fn"].concat(),
        ["tokio", "::"].concat(),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("src/engine is readable") {
        let path = entry.expect("a directory entry").path();
        let source = std::fs::read_to_string(&path).expect("a source file");
        files += 1;
        for word in &forbidden {
            assert!(
                !source.contains(word.as_str()),
                "{word} in {}",
                path.display()
            );
        }
    }
    assert!(files >= 4, "read {files} files of {}", dir.display());
}

#[test]
fn after_a_failed_removal_of_hot_copies_the_next_write_removes_them_again() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(settings());
    a.set("a/k", "v1", true, &view, 0).unwrap_err();
    a.take();
    a.updates_done("a/k", &[("b", UPDATED)], &view, 1);
    // A plain write must remove b's hot copy; b does not answer.
    let failed = a.set("a/k", "v2", false, &view, 2).unwrap_err();
    a.take();
    let done = a.updates_done(
        "a/k",
        &[("b", TargetOutcome::Failed("frozen".into()))],
        &view,
        3,
    );
    assert!(matches!(
        answers(&done)[&failed],
        Reply::ReplicaNotUpdated { .. }
    ));
    // Repeating the write must try b again, strictly, or b keeps v1 for good.
    let again = a.set("a/k", "v2", false, &view, 4).unwrap_err();
    let updates = sent(&a.take());
    assert_eq!(updates.len(), 1);
    assert!(is_remove(&updates[0].1) && updates[0].3);
    let done = a.updates_done("a/k", &[("b", UPDATED)], &view, 5);
    assert!(matches!(answers(&done)[&again], Reply::Stored));
    // Once b took it, writes are plain again.
    assert!(matches!(
        a.set("a/k", "v3", false, &view, 6),
        Ok(Reply::Stored)
    ));
}

// ---- conditional and read-modify-write ops ---------------------------------

fn mutated(reply: Result<Reply, Token>) -> crate::mutation::Mutated {
    match reply {
        Ok(Reply::Mutated(m)) => m,
        other => panic!("expected a mutation's answer, got {other:?}"),
    }
}

fn incr(delta: i64) -> crate::mutation::Mutation {
    crate::mutation::Mutation::IncrBy { delta }
}

impl Node {
    fn mutate(
        &mut self,
        key: &str,
        mutation: crate::mutation::Mutation,
        view: &Ring,
        ms: u64,
    ) -> Result<Reply, Token> {
        let op = Op::Mutate {
            key: key.as_bytes().into(),
            mutation,
        };
        self.call(op, Scope::Cluster, view, ms)
    }
}

#[test]
fn a_mutation_of_an_owned_key_applies_before_the_next_op() {
    use crate::mutation::Mutated;
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(settings());
    for expected in 1..=3 {
        assert_eq!(
            mutated(a.mutate("a/n", incr(1), &view, expected as u64)),
            Mutated::Counted(expected)
        );
    }
    assert_eq!(value(&a.get("a/n", &view, 4).unwrap()), Some(&b"3"[..]));
    assert!(a.take().is_empty(), "no copies: no update, no effect");
    a.set("a/s", "x", false, &view, 5).unwrap();
    assert!(matches!(
        a.mutate("a/s", incr(1), &view, 6),
        Ok(Reply::Refused(crate::mutation::Refusal::NotAnInteger))
    ));
    assert_eq!(value(&a.get("a/s", &view, 7).unwrap()), Some(&b"x"[..]));
}

#[test]
fn a_mutation_of_a_remote_key_is_forwarded_and_drops_the_local_copy() {
    let view = ring(&["a", "b"], "b");
    let mut b = Node::new(settings());
    let put = ReplicaUpdate::Put {
        value: Bytes::from_static(b"1"),
        expires_at: None,
    };
    b.replicate("a/n", put, &view, 0);
    let token = b.mutate("a/n", incr(1), &view, 1).unwrap_err();
    let effects = b.take();
    let [Effect::Forward {
        token: forwarded,
        owner: 0,
        op: Op::Mutate { .. },
    }] = &effects[..]
    else {
        panic!("{effects:?}")
    };
    assert_eq!(*forwarded, token);
    assert!(b.engine.peek_copy(b"a/n", b.at(1)).is_none());
}

#[test]
fn a_mutation_of_a_hot_key_pushes_the_new_value_strictly_before_answering() {
    use crate::mutation::Mutated;
    let view = ring(&["a", "b", "c"], "a");
    let mut a = Node::new(settings());
    a.set("a/n", "41", true, &view, 0).unwrap_err();
    a.take();
    a.updates_done("a/n", &[("b", UPDATED), ("c", UPDATED)], &view, 1);
    let token = a.mutate("a/n", incr(1), &view, 2).unwrap_err();
    let effects = a.take();
    let updates = sent(&effects);
    assert_eq!(updates.len(), 1);
    assert!(is_put(&updates[0].1, "42"), "{updates:?}");
    assert!(updates[0].3, "the key stays hot, so the update is strict");
    assert!(answers(&effects).is_empty());
    let done = a.updates_done(
        "a/n",
        &[
            ("b", UPDATED),
            ("c", TargetOutcome::Failed("frozen".into())),
        ],
        &view,
        3,
    );
    assert!(matches!(
        answers(&done)[&token],
        Reply::ReplicaNotUpdated { peer, .. } if peer == "c"
    ));
    // GETDEL of the hot key removes every copy, strictly.
    let token = a
        .mutate("a/n", crate::mutation::Mutation::Take, &view, 4)
        .unwrap_err();
    let updates = sent(&a.take());
    assert!(is_remove(&updates[0].1) && updates[0].3);
    let done = a.updates_done("a/n", &[("b", UPDATED), ("c", UPDATED)], &view, 5);
    assert!(matches!(
        answers(&done)[&token],
        Reply::Mutated(Mutated::Taken(Some(v))) if v == "42"
    ));
}

#[test]
fn a_condition_that_fails_writes_nothing_and_sends_nothing() {
    use crate::mutation::{Lifetime, Mutated, Mutation, Presence};
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(settings());
    a.set("a/k", "v1", true, &view, 0).unwrap_err();
    a.take();
    a.updates_done("a/k", &[("b", UPDATED)], &view, 1);
    let nx = Mutation::Set {
        value: Bytes::from_static(b"v2"),
        lifetime: Some(Lifetime::Forever),
        condition: Presence::Absent,
        hot: false,
        return_previous: false,
    };
    assert_eq!(
        mutated(a.mutate("a/k", nx.clone(), &view, 2)),
        Mutated::Set {
            written: false,
            previous: None
        }
    );
    assert!(a.take().is_empty());
    let found = a.engine.peek_owned(b"a/k", a.at(2)).unwrap();
    assert!(found.hot && found.value == "v1", "{found:?}");
    // Once it is gone, the same SET NX wins.
    a.delete("a/k", &view, 3).unwrap_err();
    a.take();
    a.updates_done("a/k", &[("b", UPDATED)], &view, 4);
    assert_eq!(
        mutated(a.mutate("a/k", nx, &view, 5)),
        Mutated::Set {
            written: true,
            previous: None
        }
    );
}

#[test]
fn a_mutation_overtakes_a_load_like_any_write() {
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(Settings {
        has_origin: true,
        ..settings()
    });
    let reader = a.get("a/n", &view, 0).unwrap_err();
    let load = origin_load(&a.take());
    assert!(matches!(
        a.mutate("a/n", incr(5), &view, 1),
        Ok(Reply::Mutated(_))
    ));
    let done = a.origin_done(
        load,
        OriginLoad::Found(Bytes::from_static(b"100")),
        &view,
        2,
    );
    assert_eq!(value(answers(&done)[&reader]), Some(&b"100"[..]));
    assert_eq!(
        value(&a.get("a/n", &view, 3).unwrap()),
        Some(&b"5"[..]),
        "the load the mutation overtook is not kept"
    );
}

#[test]
fn a_mutation_that_writes_nothing_answers_after_the_keys_queued_updates() {
    use crate::mutation::{Mutated, Mutation};
    let view = ring(&["a", "b"], "a");
    let mut a = Node::new(settings());
    a.set("a/k", "v", true, &view, 0).unwrap_err();
    a.take();
    a.updates_done("a/k", &[("b", UPDATED)], &view, 1);
    // The delete's removal of b's copy is in flight...
    let delete = a.delete("a/k", &view, 2).unwrap_err();
    assert_eq!(sent(&a.take()).len(), 1);
    // ...so a GETDEL that finds nothing must not answer before it: its
    // client could then read b's old copy after seeing the key gone.
    let take = a.mutate("a/k", Mutation::Take, &view, 3).unwrap_err();
    assert!(a.take().is_empty());
    let done = a.updates_done("a/k", &[("b", UPDATED)], &view, 4);
    let order: Vec<Token> = done
        .iter()
        .filter_map(|e| match e {
            Effect::Answer { token, .. } => Some(*token),
            _ => None,
        })
        .collect();
    assert_eq!(order, [delete, take]);
    assert!(matches!(
        answers(&done)[&take],
        Reply::Mutated(Mutated::Taken(None))
    ));
    assert_eq!(a.engine.keys_updating(), 0);
}
