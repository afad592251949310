//! One data core: its engine (the per-key policy and the data it holds),
//! its counters, its senders to the other cores, and the [`Core::call`]
//! that runs an op wherever the key lives.
//!
//! A `Core` lives in an `Rc` on its own executor thread and is never shared
//! with another thread; other cores reach it only by sending an
//! [`Envelope`] through the channel mesh.
//!
//! Every op about a key runs on the key's home core (`core_of(key)`, the
//! same core on every node), whether the key is owned here or elsewhere:
//! that core's [`Engine`] alone holds the key's entry, its hot copy, its
//! load in flight and its replica-update queue. The engine decides; this
//! layer carries its effects out (`reads.rs`: loads from a peer or the
//! origin; `replicas.rs`: forwarded writes and replica updates) and hands
//! the results back. An op whose answer comes later waits on a oneshot
//! registered under the engine's token for it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;

use crate::config::Config;
use crate::control::{ControlClient, RingBoard};
use crate::engine::{Effect, Engine, RingFacts, Settings, Token};
use crate::error::ApiError;
use crate::metrics::{CopyKind, CoreMetrics, CoreSnapshot, OpKind, PeerOutcome};
use crate::mutation::Mutation;
use crate::ops::{DeleteAnswer, GetAnswer, Limits, MutateAnswer, Op, Reply, Scope, StoreAnswer};
use crate::origin::OriginClient;
use crate::peer::{PeerConfig, PeerError, PeerPool};
use crate::routing::{core_of, NodeId, Ring};
use crate::runtime::lifecycle::Lifecycle;
use crate::store::ShardStats;

fn peer_outcome(err: &PeerError) -> PeerOutcome {
    match err {
        PeerError::Connect { .. }
        | PeerError::ConnectTimeout { .. }
        | PeerError::Backoff { .. } => PeerOutcome::Unreachable,
        PeerError::Timeout { .. } => PeerOutcome::Timeout,
        _ => PeerOutcome::Error,
    }
}

/// When a connection must have made progress by, shared between the
/// connection (which moves it) and its core's reaper (which enforces it).
pub type Deadline = Rc<Cell<Option<Instant>>>;

/// An op on its way to the key's home core, with the channel its reply
/// takes back.
#[derive(Debug)]
pub struct Envelope {
    pub op: Op,
    pub scope: Scope,
    pub reply: oneshot::Sender<Reply>,
}

/// This core's view of the cluster: an immutable ring snapshot plus what
/// the core derived from it once (peer addresses, its own position), so a
/// request does one ring lookup and nothing else.
pub struct RingView {
    pub version: u64,
    pub ring: Arc<Ring>,
    /// Resolved gRPC address of each member, in `ring.members()` order.
    pub(super) grpc_addrs: Vec<Option<SocketAddr>>,
    pub(super) names: Vec<NodeId>,
    /// Index of this node in the ring, if it is a member.
    pub(super) me: Option<usize>,
}

impl RingView {
    fn new(version: u64, ring: Arc<Ring>, self_name: &str) -> RingView {
        let members = ring.members();
        RingView {
            version,
            grpc_addrs: members
                .iter()
                .map(|m| {
                    m.grpc_addr
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut a| a.next())
                })
                .collect(),
            names: members.iter().map(|m| m.name.clone()).collect(),
            me: members.iter().position(|m| &*m.name == self_name),
            ring,
        }
    }

    /// The index of the member called `name`, if it is one.
    pub(super) fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| &**n == name)
    }
}

impl RingFacts for RingView {
    fn owner_of(&self, key: &[u8]) -> Option<usize> {
        self.ring.owner_index(key)
    }
    fn names(&self) -> &[NodeId] {
        &self.names
    }
    fn me(&self) -> Option<usize> {
        self.me
    }
}

pub struct Core {
    /// This core's own `Rc`, for the tasks it spawns (loads, replica
    /// updates) that must outlive the request that started them.
    pub(super) this: Weak<Core>,
    pub id: usize,
    pub cores: usize,
    pub config: Arc<Config>,
    pub limits: Limits,
    /// This core's share of `--max-connection-memory`.
    connection_budget: u64,
    pub metrics: CoreMetrics,
    pub lifecycle: Arc<Lifecycle>,
    /// The keys of this core and the rules about them; borrowed only for
    /// one synchronous call at a time, never across an await.
    engine: RefCell<Engine>,
    /// Ops the engine answers later, by the token it knows them by.
    waiters: RefCell<HashMap<Token, oneshot::Sender<Reply>>>,
    next_token: Cell<Token>,
    pub(super) origin: Option<OriginClient>,
    senders: Senders<Envelope>,
    /// Clients to other nodes, one connection per peer on this core.
    pub(super) peers: PeerPool,
    board: Arc<RingBoard>,
    /// Asks the control thread to change membership (`/setpeer`).
    pub control: ControlClient,
    ring: RefCell<Rc<RingView>>,
    /// The board's flush epoch this core last carried out.
    flush_epoch: Cell<u64>,
    /// Local copy of the node-wide draining flag, refreshed by the
    /// housekeeping task, so requests never read a shared atomic.
    draining: Cell<bool>,
    /// Open client sockets and their deadlines, so draining can wake idle
    /// readers and the reaper can close connections that overstay.
    connections: RefCell<HashMap<u64, (RawFd, Deadline)>>,
    next_connection: Cell<u64>,
    /// Client connections (HTTP and gRPC) admitted by the accept loops and
    /// not yet finished; see [`Core::try_admit_connection`].
    admitted: Cell<usize>,
    /// This core's share of `--max-connections`.
    max_connections: usize,
}

impl Core {
    pub fn new(
        id: usize,
        config: Arc<Config>,
        lifecycle: Arc<Lifecycle>,
        senders: Senders<Envelope>,
        board: Arc<RingBoard>,
        control: ControlClient,
    ) -> Rc<Core> {
        let limits = Limits {
            max_key_bytes: config.max_key_bytes,
            max_value_bytes: config.max_value_bytes,
        };
        let peers = PeerPool::new(PeerConfig::for_node(&config));
        let (version, ring) = board.current();
        let flush_epoch = board.flush_epoch();
        let view = RingView::new(version, ring, &config.node_name);
        let metrics = CoreMetrics::default();
        metrics.set_ring_members(view.ring.len());
        let origin = config.origin.clone().map(|template| {
            OriginClient::new(
                template,
                config.origin_timeout(),
                config.origin_concurrency_per_core(),
                config.max_value_bytes,
            )
        });
        Rc::new_cyclic(|this| Core {
            this: this.clone(),
            engine: RefCell::new(Engine::new(Settings::from_config(&config))),
            waiters: RefCell::new(HashMap::new()),
            next_token: Cell::new(0),
            origin,
            peers,
            board,
            control,
            flush_epoch: Cell::new(flush_epoch),
            ring: RefCell::new(Rc::new(view)),
            id,
            cores: config.cores(),
            connection_budget: config.connection_memory_per_core(),
            limits,
            metrics,
            senders,
            draining: Cell::new(false),
            connections: RefCell::new(HashMap::new()),
            next_connection: Cell::new(0),
            admitted: Cell::new(0),
            max_connections: config.max_connections_per_core(),
            config,
            lifecycle,
        })
    }

    /// Run `op` wherever its key lives: on the owner node (found on the
    /// ring), then on the owner core there.
    pub async fn call(&self, op: Op) -> Reply {
        self.route(op, Scope::Cluster).await
    }

    /// A read of `key`, wherever it lives.
    pub async fn get(&self, key: Box<[u8]>) -> GetAnswer {
        self.call(Op::get(key)).await.into_get()
    }

    /// A write of `key`, wherever it lives; a zero `ttl` never expires.
    pub async fn set(&self, key: Box<[u8]>, value: Bytes, ttl: Duration, hot: bool) -> StoreAnswer {
        self.call(Op::Set {
            key,
            value,
            ttl,
            hot,
        })
        .await
        .into_stored()
    }

    /// A delete of `key`, wherever it lives: whether a live entry went.
    pub async fn delete(&self, key: Box<[u8]>) -> DeleteAnswer {
        self.call(Op::Delete { key }).await.into_deleted()
    }

    /// A conditional or read-modify-write op on `key`, run atomically on
    /// the key's owner, wherever it lives.
    pub async fn mutate(&self, key: Box<[u8]>, mutation: Mutation) -> MutateAnswer {
        self.call(Op::Mutate { key, mutation }).await.into_mutated()
    }

    /// Run `op` on this node, on the key's home core, whatever the ring
    /// says (used for requests another node forwarded here).
    pub async fn call_here(&self, op: Op) -> Reply {
        self.route(op, Scope::Node).await
    }

    async fn route(&self, op: Op, scope: Scope) -> Reply {
        let home = op.key().map_or(self.id, |k| core_of(k, self.cores));
        if home == self.id {
            return self.serve(op, scope).await;
        }
        self.metrics.record_cross_core();
        self.send(home, op, scope).await
    }

    /// Run an op whose home is this core, to the end.
    pub async fn serve(&self, op: Op, scope: Scope) -> Reply {
        if let Op::Snapshot = op {
            return self.snapshot();
        }
        let token = self.next_token();
        let view = self.ring_view();
        let mut effects = Vec::new();
        let answered =
            self.engine
                .borrow_mut()
                .call(token, op, scope, &*view, Instant::now(), &mut effects);
        self.record_engine_counters();
        if let Some(reply) = answered {
            self.carry_out(&view, effects);
            return reply;
        }
        let (reply, answer) = oneshot::channel();
        self.waiters.borrow_mut().insert(token, reply);
        self.carry_out(&view, effects);
        answer.await.unwrap_or(Reply::Unavailable)
    }

    /// Serve an op another core sent here: answered at once when possible,
    /// otherwise the envelope's channel waits for the engine's answer, so
    /// the mesh receiver never waits on the network.
    pub fn serve_envelope(&self, envelope: Envelope) {
        let Envelope { op, scope, reply } = envelope;
        if let Op::Snapshot = op {
            let _ = reply.send(self.snapshot());
            return;
        }
        let token = self.next_token();
        let view = self.ring_view();
        let mut effects = Vec::new();
        let answered =
            self.engine
                .borrow_mut()
                .call(token, op, scope, &*view, Instant::now(), &mut effects);
        self.record_engine_counters();
        match answered {
            Some(answer) => {
                let _ = reply.send(answer);
            }
            None => {
                self.waiters.borrow_mut().insert(token, reply);
            }
        }
        self.carry_out(&view, effects);
    }

    fn next_token(&self) -> Token {
        let token = self.next_token.get();
        self.next_token.set(token.wrapping_add(1));
        token
    }

    /// Hand a result back to the engine (`step` calls it with the current
    /// ring view and time) and carry out what it asks for next.
    pub(super) fn engine_step(
        &self,
        step: impl FnOnce(&mut Engine, &dyn RingFacts, Instant, &mut Vec<Effect>),
    ) {
        let view = self.ring_view();
        let mut effects = Vec::new();
        step(
            &mut self.engine.borrow_mut(),
            &*view,
            Instant::now(),
            &mut effects,
        );
        self.record_engine_counters();
        self.carry_out(&view, effects);
    }

    /// Answers go to their waiters now; everything else runs in a task of
    /// its own (a load or an update outlives the request that started it)
    /// and reports back through [`Core::engine_step`]. Indices in the
    /// effects refer to `view`, the view the engine was given.
    fn carry_out(&self, view: &Rc<RingView>, effects: Vec<Effect>) {
        for effect in effects {
            if let Effect::Answer { token, reply } = effect {
                self.answer(token, reply);
                continue;
            }
            let Some(this) = self.this.upgrade() else {
                // Shutting down: the waiters' channels close with the core.
                continue;
            };
            let view = Rc::clone(view);
            glommio::spawn_local(async move { this.run_effect(&view, effect).await }).detach();
        }
    }

    async fn run_effect(&self, view: &RingView, effect: Effect) {
        match effect {
            Effect::Answer { token, reply } => self.answer(token, reply),
            Effect::LoadFromPeer {
                load,
                key,
                owner,
                keep_copy,
            } => {
                let result = self.load_from_peer(view, owner, key, keep_copy).await;
                self.engine_step(|engine, view, now, out| {
                    engine.peer_load_done(load, result, view, now, out)
                });
            }
            Effect::LoadFromOrigin { load, key } => {
                let result = self.load_from_origin(&key).await;
                self.engine_step(|engine, view, now, out| {
                    engine.origin_load_done(load, result, view, now, out)
                });
            }
            Effect::Forward { token, owner, op } => {
                let reply = self.forward_write(view, owner, op).await;
                self.answer(token, reply);
            }
            Effect::SendUpdates {
                key,
                update,
                targets,
                strict: _,
            } => {
                let outcomes = self.send_update(view, &targets, &key, &update).await;
                self.engine_step(|engine, view, now, out| {
                    engine.updates_done(&key, outcomes, view, now, out)
                });
            }
        }
    }

    fn answer(&self, token: Token, reply: Reply) {
        // A waiter whose client went away has dropped its receiver.
        if let Some(waiter) = self.waiters.borrow_mut().remove(&token) {
            let _ = waiter.send(reply);
        }
    }

    /// Add the engine's decisions since the last call to the metrics.
    fn record_engine_counters(&self) {
        let counters = self.engine.borrow_mut().take_counters();
        for _ in 0..counters.singleflight_shared {
            self.metrics.record_singleflight_shared();
        }
        for _ in 0..counters.negative_hits {
            self.metrics.record_negative_hit();
        }
        for _ in 0..counters.auto_copies {
            self.metrics.record_copy(CopyKind::Auto);
        }
        for _ in 0..counters.replica_copies {
            self.metrics.record_copy(CopyKind::Replica);
        }
    }

    /// Send `op` to the node at `owner` over this core's connection to it,
    /// counting the outcome per peer.
    pub(super) async fn forward(
        &self,
        view: &RingView,
        owner: usize,
        op: Op,
    ) -> Result<Reply, PeerError> {
        let peer = &view.names[owner];
        let op_kind = match op {
            Op::Get { .. } => OpKind::Get,
            Op::Set { .. } => OpKind::Set,
            Op::Delete { .. } => OpKind::Delete,
            Op::Mutate { .. } => OpKind::Mutate,
            Op::Replicate { .. } | Op::Snapshot => OpKind::Other,
        };
        let started = Instant::now();
        let result = match view.grpc_addrs[owner] {
            Some(addr) => {
                // The connection that reaches the key's home core at the
                // owner, whose core count may differ from ours.
                let cores = view.ring.members()[owner].cores;
                let client = match op.key() {
                    Some(key) => self.peers.client_for_key(addr, key, cores),
                    None => self.peers.client(addr),
                };
                client.forward(op).await
            }
            None => Err(PeerError::Connect {
                refused: false,
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                reason: format!(
                    "cannot resolve its gRPC address {:?}",
                    view.ring.members()[owner].grpc_addr
                ),
            }),
        };
        let outcome = result
            .as_ref()
            .map_or_else(peer_outcome, |_| PeerOutcome::Ok);
        self.metrics
            .record_peer_request(peer, op_kind, outcome, started.elapsed());
        result
    }

    /// How many entries every other ring member's shards hold, asked
    /// concurrently over this core's peer connections (`Peer/Stats`, each
    /// bounded by the peer timeouts); a member that does not answer comes
    /// back with why.
    pub async fn member_item_counts(&self) -> Vec<(NodeId, Result<u64, String>)> {
        let view = self.ring_view();
        let asks: Vec<_> = (0..view.names.len())
            .filter(|&i| Some(i) != view.me)
            .map(|i| {
                let name = view.names[i].clone();
                let client = view.grpc_addrs[i].map(|addr| self.peers.client(addr));
                glommio::spawn_local(async move {
                    let answer = match client {
                        Some(client) => client.stats().await.map_err(|e| e.to_string()),
                        None => Err("its gRPC address does not resolve".to_owned()),
                    };
                    (name, answer)
                })
            })
            .collect();
        let mut counts = Vec::with_capacity(asks.len());
        for ask in asks {
            counts.push(ask.await);
        }
        counts
    }

    /// Adopt the newest ring snapshot if the control thread published one,
    /// and drop this shard's entries if the node lost its lease meanwhile.
    /// Called from the housekeeping timer, never per request.
    pub fn refresh_ring(&self) {
        let epoch = self.board.flush_epoch();
        if epoch != self.flush_epoch.get() {
            self.flush_epoch.set(epoch);
            let dropped = self.engine.borrow_mut().clear();
            tracing::warn!(
                core = self.id,
                dropped,
                "lease was lost: dropped cached entries that may have been rewritten elsewhere"
            );
        }
        if self.board.version() == self.ring.borrow().version {
            return;
        }
        let (version, ring) = self.board.current();
        let view = Rc::new(RingView::new(version, ring, &self.config.node_name));
        self.metrics.set_ring_members(view.ring.len());
        let previous = self.ring.borrow().clone();
        let mut effects = Vec::new();
        self.engine
            .borrow_mut()
            .ring_changed(&*previous, &*view, Instant::now(), &mut effects);
        self.record_engine_counters();
        self.carry_out(&view, effects);
        let live: Vec<SocketAddr> = view.grpc_addrs.iter().flatten().copied().collect();
        self.peers.retain(|addr| live.contains(addr));
        tracing::debug!(
            core = self.id,
            version,
            members = view.ring.len(),
            "ring updated"
        );
        *self.ring.borrow_mut() = view;
    }

    /// Whether `key` lives on this core of this node as the ring stands:
    /// an op on it runs here without a hop (unless it loads a miss).
    pub fn owns_here(&self, key: &[u8]) -> bool {
        if core_of(key, self.cores) != self.id {
            return false;
        }
        let ring = self.ring.borrow();
        ring.me.is_some() && ring.ring.owner_index(key) == ring.me
    }

    pub fn ring_view(&self) -> Rc<RingView> {
        self.ring.borrow().clone()
    }

    async fn send(&self, core: usize, op: Op, scope: Scope) -> Reply {
        let (reply, answer) = oneshot::channel();
        if self
            .senders
            .send_to(core, Envelope { op, scope, reply })
            .await
            .is_err()
        {
            return Reply::Unavailable;
        }
        answer.await.unwrap_or(Reply::Unavailable)
    }

    /// This core's shard statistics and counters, for /metrics.
    fn snapshot(&self) -> Reply {
        let mut snapshot = self.metrics.snapshot(self.id);
        let engine = self.engine.borrow();
        snapshot.tiers = self.metrics.tier_snapshot(engine.hot_stats());
        Reply::Snapshot(Box::new((engine.shard_stats(), snapshot)))
    }

    /// Every core's statistics, this one's included, in core order.
    pub async fn snapshot_all(&self) -> Vec<(ShardStats, CoreSnapshot)> {
        // Ask every other core at once: a scrape waits for the slowest core,
        // not for the sum of them.
        let others: Vec<_> = (0..self.cores)
            .filter(|&core| core != self.id)
            .map(|core| glommio::spawn_local(self.snapshot_of(core)))
            .collect();
        let mut all = Vec::with_capacity(self.cores);
        if let Reply::Snapshot(mine) = self.snapshot() {
            all.push((self.id, *mine));
        }
        for task in others {
            if let Some(snapshot) = task.await {
                all.push(snapshot);
            }
        }
        all.sort_by_key(|(core, _)| *core);
        all.into_iter().map(|(_, snapshot)| snapshot).collect()
    }

    /// Core `core`'s statistics, asked for through the mesh.
    fn snapshot_of(
        &self,
        core: usize,
    ) -> impl std::future::Future<Output = Option<(usize, (ShardStats, CoreSnapshot))>> + 'static
    {
        let this = self.this.upgrade();
        async move {
            let reply = this?.send(core, Op::Snapshot, Scope::Node).await;
            match reply {
                Reply::Snapshot(snapshot) => Some((core, *snapshot)),
                _ => None,
            }
        }
    }

    /// Reclaim expired entries, at most `budget` checks per tier.
    pub fn sweep(&self, budget: usize) -> u64 {
        self.engine.borrow_mut().sweep(Instant::now(), budget)
    }

    pub fn shard_len(&self) -> usize {
        self.engine.borrow().shard_len()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    pub fn set_draining(&self) {
        self.draining.set(true);
    }

    /// Count a client connection (HTTP or gRPC) the accept loop just took
    /// against this core's share of `--max-connections`. `None` (counted in
    /// `nexuscache_connections_rejected_total`): the core is full and the
    /// caller closes the socket at once, before spawning anything for it.
    /// The permit lives as long as the connection's task.
    pub fn try_admit_connection(self: &Rc<Self>) -> Option<ConnectionPermit> {
        if self.admitted.get() >= self.max_connections {
            self.metrics.connection_rejected();
            return None;
        }
        self.admitted.set(self.admitted.get() + 1);
        Some(ConnectionPermit { core: self.clone() })
    }

    /// Client connections admitted and not yet finished.
    pub fn admitted_connections(&self) -> usize {
        self.admitted.get()
    }

    /// Track a client socket. The returned deadline starts unset (never
    /// reaped); a connection that wants timeouts keeps it up to date.
    pub fn register_connection(&self, fd: RawFd) -> (u64, Deadline) {
        let id = self.next_connection.get();
        self.next_connection.set(id + 1);
        let deadline = Deadline::default();
        self.connections
            .borrow_mut()
            .insert(id, (fd, deadline.clone()));
        self.metrics.connection_opened();
        (id, deadline)
    }

    pub fn unregister_connection(&self, id: u64) {
        self.connections.borrow_mut().remove(&id);
        self.metrics.connection_closed();
    }

    /// Shut down sockets whose deadline has passed: their pending read
    /// returns end-of-file and the connection closes itself. One timer tick
    /// per core replaces a timer per read on the request path.
    pub fn reap_expired_connections(&self, now: Instant) -> usize {
        let mut reaped = 0;
        for (fd, deadline) in self.connections.borrow().values() {
            if deadline.get().is_some_and(|d| d <= now) {
                deadline.set(None);
                // SAFETY: as in `stop_reading_connections`.
                unsafe {
                    libc::shutdown(*fd, libc::SHUT_RDWR);
                }
                reaped += 1;
            }
        }
        reaped
    }

    /// Whether this core's connections hold more buffer bytes than its
    /// share of `--max-connection-memory` (or would, after `extra` more):
    /// a connection then waits before it grows a buffer or answers.
    pub fn connection_memory_exhausted(&self, extra: usize) -> bool {
        self.metrics.connection_buffer_bytes() + extra as u64 > self.connection_budget
    }

    /// Waits until this core's connections hold less than their share of
    /// `--max-connection-memory` (with `extra` more bytes), at most a
    /// header timeout.
    pub async fn wait_for_connection_memory(&self, extra: usize) -> Result<(), ApiError> {
        const POLL: Duration = Duration::from_millis(2);
        let give_up = Instant::now() + self.config.header_timeout();
        while self.connection_memory_exhausted(extra) {
            if Instant::now() >= give_up {
                return Err(ApiError::ConnectionMemoryExhausted {
                    budget: self.config.connection_memory_per_core(),
                });
            }
            glommio::timer::sleep(POLL).await;
        }
        Ok(())
    }

    /// When a connection's next read must have come: an idle timeout from
    /// `now` if no request is under way, else a header timeout from when
    /// the request began (`started`, set here), so a client trickling
    /// bytes cannot hold the connection. An error once that has passed.
    pub fn next_read_deadline(
        &self,
        now: Instant,
        request_under_way: bool,
        started: &mut Option<Instant>,
    ) -> std::io::Result<Instant> {
        let until = if request_under_way {
            *started.get_or_insert(now) + self.config.header_timeout()
        } else {
            *started = None;
            now + self.config.idle_timeout()
        };
        if until <= now {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request not completed within the header timeout",
            ));
        }
        Ok(until)
    }

    pub fn open_connections(&self) -> usize {
        self.connections.borrow().len()
    }

    /// Make every idle connection's pending read return end-of-file, so each
    /// connection finishes what it has already received and then closes.
    pub fn stop_reading_connections(&self) {
        for &(fd, _) in self.connections.borrow().values() {
            // SAFETY: the fd belongs to a live connection task on this core
            // (it is unregistered before the stream is dropped), and
            // shutdown(2) neither closes nor invalidates it.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RD);
            }
        }
    }
}

/// One admitted client connection; dropping it (when the connection's task
/// ends) frees its place under `--max-connections`.
pub struct ConnectionPermit {
    core: Rc<Core>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let admitted = &self.core.admitted;
        admitted.set(admitted.get().saturating_sub(1));
    }
}
