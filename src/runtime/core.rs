//! One data core: its shard, hot tier and counters, its senders to the other
//! cores, and the [`Core::call`] that runs an op wherever the key lives.
//!
//! A `Core` lives in an `Rc` on its own executor thread and is never shared
//! with another thread; other cores reach it only by sending an
//! [`Envelope`] through the channel mesh.
//!
//! Every op about a key runs on the key's home core (`core_of(key)`, the
//! same core on every node), whether the key is owned here or elsewhere:
//! that core alone holds the key's entry, its hot copy, its in-flight load
//! and its replica-update queue, so all of them are plain single-threaded
//! state. The read path is in `reads.rs`, the write and replica path in
//! `replicas.rs`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;

use super::reads::{Loaded, ReadWork};
use super::replicas::WriteWork;
use crate::api::http::route::Limits;
use crate::config::Config;
use crate::control::{ControlClient, RingBoard};
use crate::hot::{AutoHot, Flights, KeyLocks};
use crate::metrics::{CoreMetrics, CoreSnapshot, OpKind, PeerOutcome};
use crate::ops::{Op, Reply, Scope};
use crate::origin::OriginClient;
use crate::peer::{PeerConfig, PeerError, PeerPool, DEFAULT_RECONNECT_BACKOFF};
use crate::routing::{core_of, NodeId, Ring};
use crate::runtime::lifecycle::Lifecycle;
use crate::store::{Shard, ShardStats, TtlJitter};

/// Most distinct remote keys the auto-hot detector tracks per core and
/// second.
const AUTO_HOT_TRACKED_KEYS: usize = 10_000;

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

/// What the home core made of an op: answered at once, or work that needs
/// the network (a peer, the origin, replica updates) and finishes later.
pub enum Step {
    Done(Reply),
    Read(ReadWork),
    Write(WriteWork),
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
    pub(super) shard: RefCell<Shard>,
    /// Copies of keys other nodes own: pushed replicas of hot keys and
    /// automatic copies of keys read often through this node.
    pub(super) hot: RefCell<Shard>,
    pub(super) hot_enabled: bool,
    /// Keys the origin answered 404 for, while `--negative-ttl` lasts.
    pub(super) negative: RefCell<Shard>,
    pub(super) auto_hot: RefCell<AutoHot>,
    pub(super) flights: RefCell<Flights<Loaded>>,
    pub(super) key_locks: RefCell<KeyLocks>,
    pub(super) origin: Option<OriginClient>,
    pub(super) jitter: TtlJitter,
    pub(super) rng: RefCell<fastrand::Rng>,
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
        let peers = PeerPool::new(PeerConfig {
            connect_timeout: config.peer_connect_timeout(),
            request_timeout: config.peer_timeout(),
            read_timeout: config.peer_read_timeout(),
            // The owner may wait up to one peer timeout for replica updates.
            write_timeout: config.peer_timeout() * 2,
            reconnect_backoff: DEFAULT_RECONNECT_BACKOFF,
            max_response_bytes: crate::grpc::cache::max_message_bytes(&limits),
            cluster_secret: crate::peer::cluster_secret_header(
                config.credentials.outgoing_secret(),
            ),
        });
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
        // The negative cache holds keys only: a small fraction suffices.
        let negative_capacity = (config.shard_capacity() / 64).max(4096);
        Rc::new_cyclic(|this| Core {
            this: this.clone(),
            hot: RefCell::new(Shard::new(config.hot_capacity())),
            hot_enabled: config.hot_capacity() > 0,
            negative: RefCell::new(Shard::new(negative_capacity)),
            auto_hot: RefCell::new(AutoHot::new(
                config.hot_auto_threshold,
                AUTO_HOT_TRACKED_KEYS,
            )),
            flights: RefCell::new(Flights::default()),
            key_locks: RefCell::new(KeyLocks::default()),
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
            shard: RefCell::new(Shard::new(config.shard_capacity()).report_evicted_copies()),
            jitter: TtlJitter::new(config.ttl_jitter, config.ttl_jitter_max()),
            rng: RefCell::new(fastrand::Rng::new()),
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
        self.finish(self.start(op, scope)).await
    }

    async fn finish(&self, step: Step) -> Reply {
        match step {
            Step::Done(reply) => reply,
            Step::Read(work) => self.finish_read(work).await,
            Step::Write(work) => self.finish_write(work).await,
        }
    }

    /// Serve an op another core sent here: answered at once when possible,
    /// otherwise in a task of its own, so the mesh receiver never waits on
    /// the network.
    pub fn serve_envelope(&self, envelope: Envelope) {
        let Envelope { op, scope, reply } = envelope;
        let step = match self.start(op, scope) {
            Step::Done(answer) => {
                let _ = reply.send(answer);
                return;
            }
            step => step,
        };
        let Some(this) = self.this.upgrade() else {
            let _ = reply.send(Reply::Unavailable);
            return;
        };
        glommio::spawn_local(async move {
            let _ = reply.send(this.finish(step).await);
        })
        .detach();
    }

    /// The first, synchronous part of serving an op on its home core.
    fn start(&self, op: Op, scope: Scope) -> Step {
        let now = Instant::now();
        let remote = match scope {
            Scope::Cluster => op.key().and_then(|key| self.remote_owner(key)),
            Scope::Node => None,
        };
        match (op, remote) {
            (Op::Snapshot, _) => Step::Done(self.snapshot()),
            (Op::Replicate { key, update }, _) => Step::Done(self.apply_replica(key, update, now)),
            (Op::Get { key, .. }, Some((view, owner))) => {
                self.start_remote_get(key, view, owner, now)
            }
            (Op::Get { key, keep_copy }, None) => self.start_owner_get(key, keep_copy, now),
            (op @ (Op::Set { .. } | Op::Delete { .. }), Some((view, owner))) => {
                self.start_remote_write(op, view, owner)
            }
            (
                Op::Set {
                    key,
                    value,
                    ttl,
                    hot,
                },
                None,
            ) => self.start_owner_set(key, value, ttl, hot, now),
            (Op::Delete { key }, None) => self.start_owner_delete(key, now),
        }
    }

    /// The ring view and the owner's index when another node owns `key`.
    fn remote_owner(&self, key: &[u8]) -> Option<(Rc<RingView>, usize)> {
        let view = self.ring.borrow().clone();
        match view.ring.owner_index(key) {
            Some(owner) if Some(owner) != view.me => Some((view, owner)),
            _ => None,
        }
    }

    /// Send `op` to the node at `owner` over this core's connection to it,
    /// counting the outcome per peer.
    pub(super) async fn forward(
        &self,
        view: &RingView,
        owner: usize,
        op: Op,
    ) -> Result<Reply, (PeerOutcome, PeerError)> {
        let peer = &view.names[owner];
        let op_kind = match op {
            Op::Get { .. } => OpKind::Get,
            Op::Set { .. } => OpKind::Set,
            Op::Delete { .. } => OpKind::Delete,
            Op::Replicate { .. } | Op::Snapshot => OpKind::Other,
        };
        let started = Instant::now();
        let result = match view.grpc_addrs[owner] {
            Some(addr) => self.peers.client(addr).forward(op).await,
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
        result.map_err(|e| (outcome, e))
    }

    /// Adopt the newest ring snapshot if the control thread published one,
    /// and drop this shard's entries if the node lost its lease meanwhile.
    /// Called from the housekeeping timer, never per request.
    pub fn refresh_ring(&self) {
        let epoch = self.board.flush_epoch();
        if epoch != self.flush_epoch.get() {
            self.flush_epoch.set(epoch);
            let dropped = self.shard.borrow_mut().clear()
                + self.hot.borrow_mut().clear()
                + self.negative.borrow_mut().clear();
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
        self.ring_changed(&previous, &view);
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
        snapshot.tiers = self.metrics.tier_snapshot(self.hot.borrow().stats());
        Reply::Snapshot(Box::new((self.shard.borrow().stats(), snapshot)))
    }

    /// Every core's statistics, this one's included, in core order.
    pub async fn snapshot_all(&self) -> Vec<(ShardStats, CoreSnapshot)> {
        let mut all = Vec::with_capacity(self.cores);
        for core in 0..self.cores {
            let reply = if core == self.id {
                self.snapshot()
            } else {
                self.send(core, Op::Snapshot, Scope::Node).await
            };
            if let Reply::Snapshot(snapshot) = reply {
                all.push(*snapshot);
            }
        }
        all
    }

    /// Reclaim expired entries, at most `budget` checks per tier.
    pub fn sweep(&self, budget: usize) -> u64 {
        let now = Instant::now();
        let mut removed = self.shard.borrow_mut().sweep_expired(now, budget);
        if self.hot_enabled {
            removed += self.hot.borrow_mut().sweep_expired(now, budget);
        }
        self.negative.borrow_mut().sweep_expired(now, budget);
        removed
    }

    pub fn shard_len(&self) -> usize {
        self.shard.borrow().len()
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
