//! A randomized model test of three engines wired by a simulated network
//! that delivers messages in any order and fails some: reads, writes,
//! loads landing, replica updates and peer failures interleave, seeded so
//! a failure replays. Checked against a simple model of the key's history:
//!
//! - every waiter is answered exactly once, and nothing is left in flight
//!   once the network is drained;
//! - a read that starts after a write was acknowledged never returns an
//!   older state of the key, unless the read depended on a failure the
//!   README allows to be stale (the owner unreachable, or a copy on a node
//!   that missed an update). A read that joins a load in flight shares its
//!   answer, so it is held to what was acknowledged when that load started
//!   (singleflight: the owner cannot know a node has a plain read in
//!   flight, so a write of a key without copies does not overtake it);
//! - after a quiet period and one more write of each key, every node reads
//!   that write: no copy escapes invalidation for good.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::mutation::{Lifetime, Mutation, Presence};
use crate::ops::{Op, ReplicaUpdate, Reply, Scope};

const NODES: [&str; 3] = ["a", "b", "c"];
const KEYS: [&str; 5] = ["a/0", "a/1", "b/0", "c/0", "c/1"];
const AUTO_TTL: Duration = Duration::from_millis(2_000);

/// Every node sees the same ring; a key `x/...` belongs to node `x`.
struct View {
    names: Vec<NodeId>,
    me: usize,
}

impl RingFacts for View {
    fn owner_of(&self, key: &[u8]) -> Option<usize> {
        NODES
            .iter()
            .position(|n| key.first() == n.as_bytes().first())
    }
    fn names(&self) -> &[NodeId] {
        &self.names
    }
    fn me(&self) -> Option<usize> {
        Some(self.me)
    }
}

fn owner_of(key: &str) -> usize {
    NODES
        .iter()
        .position(|n| key.as_bytes()[0] == n.as_bytes()[0])
        .expect("every key has an owner")
}

/// What a waiter stands for.
#[derive(Debug)]
enum Purpose {
    Read {
        node: usize,
        key: String,
        /// The key's newest acknowledged write when the read started.
        floor: u64,
        exempt: bool,
    },
    Write {
        key: String,
        write: u64,
    },
    /// The owner serving a peer's load.
    ServeLoad {
        requester: usize,
        load: LoadId,
    },
    /// The owner serving a forwarded write.
    ServeForward {
        owner: usize,
        token: Token,
    },
}

#[derive(Debug)]
enum Message {
    LoadRequest {
        node: usize,
        load: LoadId,
        key: Box<[u8]>,
        keep_copy: bool,
    },
    LoadReply {
        node: usize,
        load: LoadId,
        result: PeerLoad,
    },
    Origin {
        node: usize,
        load: LoadId,
        key: Box<[u8]>,
    },
    ForwardRequest {
        token: Token,
        owner: usize,
        op: Op,
    },
    ForwardReply {
        token: Token,
        owner: usize,
        result: Result<Reply, String>,
    },
    Updates {
        node: usize,
        key: Box<[u8]>,
        update: ReplicaUpdate,
        pending: Vec<NodeId>,
        outcomes: Vec<(NodeId, TargetOutcome)>,
    },
    UpdatesReport {
        node: usize,
        key: Box<[u8]>,
        outcomes: Vec<(NodeId, TargetOutcome)>,
    },
}

struct Sim {
    rng: fastrand::Rng,
    engines: Vec<Engine>,
    views: Vec<View>,
    now: Instant,
    next_token: Token,
    waiting: HashMap<Token, Purpose>,
    network: Vec<Message>,
    /// Failures are injected only while this is set.
    failures: bool,
    next_write: u64,
    /// Write id -> (key, the order the owner applied it in, a delete).
    applied: HashMap<u64, (String, u64, bool)>,
    last_seq: HashMap<String, u64>,
    floor: HashMap<String, u64>,
    /// (node, key): the node missed an update of the key and may serve
    /// its old copy until it takes a later one.
    tainted: HashSet<(usize, String)>,
    reads_checked: usize,
    /// How often a step delivers a message rather than starting an op:
    /// low for contention (queues, overtaken loads), high for calm.
    deliver_percent: u32,
    /// Loads started: (node, load) -> the floor of the read that started it.
    load_floors: HashMap<(usize, LoadId), u64>,
    load_keys: HashMap<(usize, LoadId), String>,
    /// The newest load started per (node, key).
    newest_load: HashMap<(usize, String), LoadId>,
    /// Loads a write overtook (an owner's update reached the node, or the
    /// node wrote the key): a reader after that must not share them.
    overtaken: HashSet<(usize, LoadId)>,
    /// Loads whose owner could not be asked: their readers may miss.
    degraded: HashSet<(usize, LoadId)>,
}

fn node_index(name: &NodeId) -> usize {
    NODES
        .iter()
        .position(|n| *n == &**name)
        .expect("a known node")
}

/// A write that leaves the key absent.
fn is_delete(op: &Op) -> bool {
    matches!(
        op,
        Op::Delete { .. }
            | Op::Mutate {
                mutation: Mutation::Take,
                ..
            }
    )
}

fn key_of(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = fastrand::Rng::with_seed(seed);
        let settings = Settings {
            shard_capacity: 1 << 20,
            hot_capacity: [0, 300, 1 << 20][rng.usize(0..3)],
            negative_capacity: 4096,
            negative_ttl: [Duration::ZERO, Duration::from_millis(500)][rng.usize(0..2)],
            hot_auto_threshold: rng.u32(1..4),
            hot_auto_ttl: AUTO_TTL,
            has_origin: rng.bool(),
            origin_ttl: Duration::from_secs(3_600),
            jitter: TtlJitter::new(0.1, Duration::from_secs(60)),
            max_value_bytes: 1 << 20,
        };
        let names: Vec<NodeId> = NODES.iter().map(|n| NodeId::from(*n)).collect();
        Sim {
            engines: (0..NODES.len())
                .map(|i| {
                    Engine::with_rng(settings.clone(), fastrand::Rng::with_seed(seed + i as u64))
                })
                .collect(),
            views: (0..NODES.len())
                .map(|me| View {
                    names: names.clone(),
                    me,
                })
                .collect(),
            rng,
            now: Instant::now(),
            next_token: 1,
            waiting: HashMap::new(),
            network: Vec::new(),
            failures: true,
            next_write: 1,
            applied: HashMap::new(),
            last_seq: HashMap::new(),
            floor: HashMap::new(),
            tainted: HashSet::new(),
            reads_checked: 0,
            deliver_percent: 0,
            load_floors: HashMap::new(),
            load_keys: HashMap::new(),
            newest_load: HashMap::new(),
            degraded: HashSet::new(),
            overtaken: HashSet::new(),
        }
    }

    fn token(&mut self, purpose: Purpose) -> Token {
        let token = self.next_token;
        self.next_token += 1;
        self.waiting.insert(token, purpose);
        token
    }

    fn fail(&mut self, percent: u32) -> bool {
        self.failures && self.rng.u32(0..100) < percent
    }

    /// Runs `op` on `node`'s engine for `token`, recording the order in
    /// which the owner applies writes.
    fn call(&mut self, node: usize, token: Token, op: Op, scope: Scope) {
        if let (Some(key), Some(Purpose::Write { write, .. })) =
            (op.key(), self.waiting.get(&token))
        {
            let key = key_of(key);
            if owner_of(&key) == node && !matches!(op, Op::Get { .. }) {
                let seq = self.last_seq.entry(key.clone()).or_insert(0);
                *seq += 1;
                let delete = is_delete(&op);
                self.applied.insert(*write, (key, *seq, delete));
            }
        }
        if std::env::var_os("MODEL_TRACE").is_some() {
            eprintln!("call {} {token} {op:?} {scope:?}", NODES[node]);
        }
        let key = op.key().map(key_of);
        if let (Some(key), false) = (&key, matches!(op, Op::Get { .. })) {
            self.overtake(node, key);
        }
        let mut out = Vec::new();
        let answered =
            self.engines[node].call(token, op, scope, &self.views[node], self.now, &mut out);
        let joined = self.engines[node].take_counters().singleflight_shared > 0;
        if let (true, Some(key)) = (joined, key) {
            self.joined_load(node, &key, token);
        }
        self.note_loads(node, token, &out);
        if let Some(reply) = answered {
            self.answer(token, reply);
        }
        self.carry_out(node, out);
    }

    /// The read `token` joined the newest load of `key` on `node`: it is
    /// held to what was acknowledged when that load started.
    fn joined_load(&mut self, node: usize, key: &str, token: Token) {
        let load = self.newest_load[&(node, key.to_string())];
        let started = self.load_floors[&(node, load)];
        let degraded = self.degraded.contains(&(node, load));
        let overtaken = self.overtaken.contains(&(node, load));
        if let Some(Purpose::Read { floor, exempt, .. }) = self.waiting.get_mut(&token) {
            if !overtaken {
                *floor = (*floor).min(started);
            }
            *exempt |= degraded;
        }
    }

    /// A write of `key` reached `node`: its loads in flight are overtaken.
    fn overtake(&mut self, node: usize, key: &str) {
        if let Some(load) = self.newest_load.get(&(node, key.to_string())) {
            self.overtaken.insert((node, *load));
        }
    }

    /// Remember the floor of the reader that started each new load.
    fn note_loads(&mut self, node: usize, token: Token, effects: &[Effect]) {
        let floor = match self.waiting.get(&token) {
            Some(Purpose::Read { floor, .. }) => *floor,
            // An owner serving a peer: that peer's reader is held to it.
            _ => 0,
        };
        for effect in effects {
            if let Effect::LoadFromPeer { load, key, .. } | Effect::LoadFromOrigin { load, key } =
                effect
            {
                self.load_floors.insert((node, *load), floor);
                self.load_keys.insert((node, *load), key_of(key));
                self.newest_load.insert((node, key_of(key)), *load);
            }
        }
    }

    fn carry_out(&mut self, node: usize, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Answer { token, reply } => self.answer(token, reply),
                Effect::LoadFromPeer {
                    load,
                    key,
                    owner,
                    keep_copy,
                } => {
                    assert_eq!(owner, owner_of(&key_of(&key)));
                    self.network.push(Message::LoadRequest {
                        node,
                        load,
                        key,
                        keep_copy,
                    });
                }
                Effect::LoadFromOrigin { load, key } => {
                    self.network.push(Message::Origin { node, load, key })
                }
                Effect::Forward { token, owner, op } => self
                    .network
                    .push(Message::ForwardRequest { token, owner, op }),
                Effect::SendUpdates {
                    key,
                    update,
                    targets,
                    strict: _,
                } => {
                    assert!(
                        !targets.iter().any(|t| node_index(t) == node),
                        "never to itself"
                    );
                    self.network.push(Message::Updates {
                        node,
                        key,
                        update,
                        pending: targets,
                        outcomes: Vec::new(),
                    });
                }
            }
        }
    }

    fn answer(&mut self, token: Token, reply: Reply) {
        if std::env::var_os("MODEL_TRACE").is_some() {
            eprintln!("answer {token} {:?}: {reply:?}", self.waiting.get(&token));
        }
        let purpose = self
            .waiting
            .remove(&token)
            .unwrap_or_else(|| panic!("token {token} answered twice or never asked: {reply:?}"));
        match purpose {
            Purpose::Read {
                node,
                key,
                floor,
                exempt,
            } => {
                if !exempt {
                    self.check_read(node, &key, floor, &reply);
                }
            }
            Purpose::Write { key, write } => {
                if matches!(reply, Reply::Stored | Reply::Deleted(_) | Reply::Mutated(_)) {
                    let (_, seq, _) = self.applied[&write];
                    let floor = self.floor.entry(key).or_insert(0);
                    *floor = (*floor).max(seq);
                }
            }
            Purpose::ServeLoad { requester, load } => self.network.push(Message::LoadReply {
                node: requester,
                load,
                result: PeerLoad::Answered(reply),
            }),
            Purpose::ServeForward { owner, token } => self.network.push(Message::ForwardReply {
                token,
                owner,
                result: Ok(reply),
            }),
        }
    }

    fn check_read(&mut self, node: usize, key: &str, floor: u64, reply: &Reply) {
        self.reads_checked += 1;
        let absent_allowed = floor == 0
            || self
                .applied
                .values()
                .any(|(k, seq, delete)| k == key && *delete && *seq >= floor);
        match reply {
            Reply::Value(Some(hit)) if hit.value.starts_with(b"w") => {
                let write: u64 = std::str::from_utf8(&hit.value[1..])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("a value the model wrote");
                let (written_key, seq, _) = &self.applied[&write];
                assert_eq!(written_key, key);
                assert!(
                    *seq >= floor,
                    "stale read of {key} on {}: write #{seq}, but #{floor} was acknowledged",
                    NODES[node]
                );
            }
            // The origin's value or a miss: the key holds no written value.
            Reply::Value(_) => assert!(
                absent_allowed,
                "read of {key} on {} found nothing after write #{floor} was acknowledged: {reply:?}",
                NODES[node]
            ),
            Reply::OriginFailed(_) => {}
            other => panic!("unexpected answer to a read: {other:?}"),
        }
    }

    fn read(&mut self, node: usize, key: &str, exempt_allowed: bool) {
        let floor = self.floor.get(key).copied().unwrap_or(0);
        let exempt = exempt_allowed && self.tainted.contains(&(node, key.to_string()));
        let token = self.token(Purpose::Read {
            node,
            key: key.to_string(),
            floor,
            exempt,
        });
        self.call(node, token, Op::get(key.as_bytes().into()), Scope::Cluster);
    }

    /// A write of `key` from `node`: `kind` 0..=3 a plain set, 4..=7 a hot
    /// set, 8..=9 a delete; 10 and 11 the same plain and hot sets as a
    /// mutation (`SET` through `Op::Mutate`), 12 a `GETDEL`: mutations must
    /// keep the same coherence as the writes they stand for.
    fn write(&mut self, node: usize, key: &str, kind: u32) {
        let write = self.next_write;
        self.next_write += 1;
        let op = match kind {
            0..=3 => Op::Set {
                key: key.as_bytes().into(),
                value: Bytes::from(format!("w{write}")),
                ttl: Duration::ZERO,
                hot: false,
            },
            4..=7 => Op::Set {
                key: key.as_bytes().into(),
                value: Bytes::from(format!("w{write}")),
                ttl: Duration::ZERO,
                hot: true,
            },
            8..=9 => Op::Delete {
                key: key.as_bytes().into(),
            },
            10 | 11 => Op::Mutate {
                key: key.as_bytes().into(),
                mutation: Mutation::Set {
                    value: Bytes::from(format!("w{write}")),
                    lifetime: Some(Lifetime::Forever),
                    condition: Presence::Any,
                    hot: kind == 11,
                    return_previous: false,
                },
            },
            _ => Op::Mutate {
                key: key.as_bytes().into(),
                mutation: Mutation::Take,
            },
        };
        let token = self.token(Purpose::Write {
            key: key.to_string(),
            write,
        });
        self.call(node, token, op, Scope::Cluster);
    }

    /// Readers of `key` on `node` waiting now depend on a load that failed.
    fn exempt_waiting_reads(&mut self, on: usize, of: &str) {
        for purpose in self.waiting.values_mut() {
            if let Purpose::Read {
                node, key, exempt, ..
            } = purpose
            {
                if *node == on && key == of {
                    *exempt = true;
                }
            }
        }
    }

    fn deliver(&mut self, index: usize) {
        let message = self.network.swap_remove(index);
        if std::env::var_os("MODEL_TRACE").is_some() {
            eprintln!("deliver {message:?}");
        }
        match message {
            Message::LoadRequest {
                node,
                load,
                key,
                keep_copy,
            } => {
                if self.fail(10) {
                    let result = if self.rng.bool() {
                        PeerLoad::Unreachable
                    } else {
                        PeerLoad::Status("origin failed: injected".into())
                    };
                    self.network.push(Message::LoadReply { node, load, result });
                    return;
                }
                let owner = owner_of(&key_of(&key));
                let token = self.token(Purpose::ServeLoad {
                    requester: node,
                    load,
                });
                self.call(owner, token, Op::Get { key, keep_copy }, Scope::Node);
            }
            Message::LoadReply { node, load, result } => {
                if !matches!(result, PeerLoad::Answered(_)) {
                    self.degraded.insert((node, load));
                    let key = self.load_keys[&(node, load)].clone();
                    self.exempt_waiting_reads(node, &key);
                }
                let mut out = Vec::new();
                self.engines[node].peer_load_done(
                    load,
                    result,
                    &self.views[node],
                    self.now,
                    &mut out,
                );
                self.carry_out(node, out);
            }
            Message::Origin { node, load, key } => {
                if self.degraded.contains(&(node, load)) {
                    self.exempt_waiting_reads(node, &key_of(&key));
                }
                let result = if self.fail(10) {
                    OriginLoad::Failed("injected".into())
                } else if key.ends_with(b"1") {
                    OriginLoad::NotFound
                } else {
                    OriginLoad::Found(Bytes::from_static(b"origin"))
                };
                let mut out = Vec::new();
                self.engines[node].origin_load_done(
                    load,
                    result,
                    &self.views[node],
                    self.now,
                    &mut out,
                );
                self.carry_out(node, out);
            }
            Message::ForwardRequest { token, owner, op } => {
                if self.fail(10) {
                    self.network.push(Message::ForwardReply {
                        token,
                        owner,
                        result: Err("injected".into()),
                    });
                    return;
                }
                // The owner's waiter stands for the requester's; the write's
                // identity is the requester's.
                let write = match self.waiting.get(&token) {
                    Some(Purpose::Write { key, write }) => (key.clone(), *write),
                    other => panic!("a forwarded write without its writer: {other:?}"),
                };
                let served = self.next_token;
                self.next_token += 1;
                // Recorded as a write while it is applied, then as the
                // owner serving the requester.
                self.waiting.insert(
                    served,
                    Purpose::Write {
                        key: write.0,
                        write: write.1,
                    },
                );
                let mut out = Vec::new();
                self.call_recorded(owner, served, op, &mut out);
                self.waiting
                    .insert(served, Purpose::ServeForward { owner, token });
                if let Some(reply) = out.pop_if_answer(served) {
                    self.answer(served, reply);
                }
                self.carry_out(owner, out);
            }
            Message::ForwardReply {
                token,
                owner,
                result,
            } => {
                let reply = forwarded_reply(NODES[owner], result);
                self.answer(token, reply);
            }
            Message::Updates {
                node,
                key,
                update,
                mut pending,
                mut outcomes,
            } => {
                let Some(target) = pending.pop() else {
                    self.network.push(Message::UpdatesReport {
                        node,
                        key,
                        outcomes,
                    });
                    return;
                };
                let t = node_index(&target);
                if self.fail(15) {
                    self.tainted.insert((t, key_of(&key)));
                    outcomes.push((target, TargetOutcome::Failed("injected".into())));
                } else {
                    self.tainted.remove(&(t, key_of(&key)));
                    self.overtake(t, &key_of(&key));
                    let token = self.next_token;
                    self.next_token += 1;
                    let op = Op::Replicate {
                        key: key.clone(),
                        update: update.clone(),
                    };
                    let mut out = Vec::new();
                    let reply = self.engines[t].call(
                        token,
                        op,
                        Scope::Node,
                        &self.views[t],
                        self.now,
                        &mut out,
                    );
                    assert!(matches!(reply, Some(Reply::Stored)), "{reply:?}");
                    assert!(out.is_empty(), "a replica update asks for nothing");
                    outcomes.push((target, TargetOutcome::Updated));
                }
                self.network.push(Message::Updates {
                    node,
                    key,
                    update,
                    pending,
                    outcomes,
                });
            }
            Message::UpdatesReport {
                node,
                key,
                outcomes,
            } => {
                let mut out = Vec::new();
                self.engines[node].updates_done(
                    &key,
                    outcomes,
                    &self.views[node],
                    self.now,
                    &mut out,
                );
                self.carry_out(node, out);
            }
        }
    }

    /// Like [`Sim::call`] but leaves the effects in `out` (the caller
    /// rewires the waiter first).
    fn call_recorded(&mut self, node: usize, token: Token, op: Op, out: &mut Vec<Effect>) {
        if let (Some(key), Some(Purpose::Write { write, .. })) =
            (op.key(), self.waiting.get(&token))
        {
            let key = key_of(key);
            let seq = self.last_seq.entry(key.clone()).or_insert(0);
            *seq += 1;
            let delete = is_delete(&op);
            self.applied.insert(*write, (key.clone(), *seq, delete));
            self.overtake(node, &key);
        }
        if let Some(reply) =
            self.engines[node].call(token, op, Scope::Node, &self.views[node], self.now, out)
        {
            out.push(Effect::Answer { token, reply });
        }
    }

    fn step(&mut self) {
        if !self.network.is_empty() && self.rng.u32(0..100) < self.deliver_percent {
            let index = self.rng.usize(0..self.network.len());
            self.deliver(index);
            return;
        }
        let (node, key) = (
            self.rng.usize(0..NODES.len()),
            KEYS[self.rng.usize(0..KEYS.len())],
        );
        match self.rng.u32(0..10) {
            0..=5 => self.read(node, key, true),
            6..=8 => {
                let kind = self.rng.u32(0..13);
                self.write(node, key, kind);
            }
            _ => {
                self.now += Duration::from_millis(self.rng.u64(0..700));
                for engine in &mut self.engines {
                    engine.sweep(self.now, 16);
                }
            }
        }
    }

    /// Delivers every message, in random order, without failures.
    fn drain(&mut self) {
        let failures = std::mem::replace(&mut self.failures, false);
        for _ in 0..100_000 {
            if self.network.is_empty() {
                break;
            }
            let index = self.rng.usize(0..self.network.len());
            self.deliver(index);
        }
        assert!(self.network.is_empty(), "the network does not drain");
        self.failures = failures;
    }

    fn assert_quiet(&self) {
        assert!(
            self.waiting.is_empty(),
            "waiters never answered: {:?}",
            self.waiting
        );
        for (i, engine) in self.engines.iter().enumerate() {
            assert_eq!(engine.loads_in_flight(), 0, "loads left on {}", NODES[i]);
            assert_eq!(engine.keys_updating(), 0, "updates left on {}", NODES[i]);
        }
    }
}

/// Pops the answer to `token` if it is the only effect that answers it.
trait PopAnswer {
    fn pop_if_answer(&mut self, token: Token) -> Option<Reply>;
}

impl PopAnswer for Vec<Effect> {
    fn pop_if_answer(&mut self, token: Token) -> Option<Reply> {
        let index = self
            .iter()
            .position(|e| matches!(e, Effect::Answer { token: t, .. } if *t == token))?;
        match self.remove(index) {
            Effect::Answer { reply, .. } => Some(reply),
            _ => None,
        }
    }
}

fn run(seed: u64, steps: usize) -> usize {
    let mut sim = Sim::new(seed);
    sim.deliver_percent = sim.rng.u32(40..95);
    for _ in 0..steps {
        sim.step();
    }
    sim.drain();
    sim.assert_quiet();
    // A quiet period (automatic copies expire), then one clean plain write
    // of each key from its owner: every node must read it afterwards.
    sim.now += AUTO_TTL + Duration::from_millis(1);
    for key in KEYS {
        sim.write(owner_of(key), key, 0);
    }
    sim.drain();
    sim.assert_quiet();
    for key in KEYS {
        for node in 0..NODES.len() {
            sim.read(node, key, false);
        }
    }
    sim.drain();
    sim.assert_quiet();
    sim.reads_checked
}

#[test]
fn interleaved_reads_writes_loads_and_failures_never_read_stale() {
    let mut checked = 0;
    let seeds = match std::env::var("MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => seed..seed + 1,
        None => 0..200,
    };
    for seed in seeds {
        if std::env::var_os("MODEL_TRACE").is_some() {
            eprintln!("seed {seed}");
        }
        checked += run(seed, 400);
    }
    assert!(
        checked > 10_000 || std::env::var_os("MODEL_SEED").is_some(),
        "only {checked} reads were checked"
    );
}
