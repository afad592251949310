//! One data core: its shard, its counters, its senders to the other cores,
//! and the [`Core::call`] that runs an op wherever the key lives.
//!
//! A `Core` lives in an `Rc` on its own executor thread and is never shared
//! with another thread; other cores reach its shard only by sending an
//! [`Envelope`] through the channel mesh.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;

use crate::api::http::route::Limits;
use crate::config::Config;
use crate::control::{ControlClient, RingBoard};
use crate::metrics::{CoreMetrics, CoreSnapshot, OpKind, PeerOutcome};
use crate::ops::{Op, Reply};
use crate::peer::{PeerConfig, PeerError, PeerPool, DEFAULT_RECONNECT_BACKOFF};
use crate::routing::{core_of, NodeId, Ring};
use crate::runtime::lifecycle::Lifecycle;
use crate::store::{Shard, ShardStats, TtlJitter};

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

/// An op on its way to the owning core, with the channel its reply takes back.
#[derive(Debug)]
pub struct Envelope {
    pub op: Op,
    pub reply: oneshot::Sender<Reply>,
}

/// This core's view of the cluster: an immutable ring snapshot plus what
/// the core derived from it once (peer addresses, its own position), so a
/// request does one ring lookup and nothing else.
pub struct RingView {
    pub version: u64,
    pub ring: Arc<Ring>,
    /// Resolved gRPC address of each member, in `ring.members()` order.
    grpc_addrs: Vec<Option<SocketAddr>>,
    names: Vec<NodeId>,
    /// Index of this node in the ring, if it is a member.
    me: Option<usize>,
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
    pub id: usize,
    pub cores: usize,
    pub config: Arc<Config>,
    pub limits: Limits,
    pub metrics: CoreMetrics,
    pub lifecycle: Arc<Lifecycle>,
    shard: RefCell<Shard>,
    jitter: TtlJitter,
    rng: RefCell<fastrand::Rng>,
    senders: Senders<Envelope>,
    /// Clients to other nodes, one connection per peer on this core.
    peers: PeerPool,
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
}

impl Core {
    pub fn new(
        id: usize,
        config: Arc<Config>,
        lifecycle: Arc<Lifecycle>,
        senders: Senders<Envelope>,
        board: Arc<RingBoard>,
        control: ControlClient,
    ) -> Core {
        let limits = Limits {
            max_key_bytes: config.max_key_bytes,
            max_value_bytes: config.max_value_bytes,
        };
        let peers = PeerPool::new(PeerConfig {
            connect_timeout: config.peer_connect_timeout(),
            request_timeout: config.peer_timeout(),
            reconnect_backoff: DEFAULT_RECONNECT_BACKOFF,
            max_response_bytes: crate::grpc::cache::max_message_bytes(&limits),
        });
        let (version, ring) = board.current();
        let flush_epoch = board.flush_epoch();
        let view = RingView::new(version, ring, &config.node_name);
        let metrics = CoreMetrics::default();
        metrics.set_ring_members(view.ring.len());
        Core {
            peers,
            board,
            control,
            flush_epoch: Cell::new(flush_epoch),
            ring: RefCell::new(Rc::new(view)),
            id,
            cores: config.cores(),
            limits,
            metrics,
            shard: RefCell::new(Shard::new(config.shard_capacity())),
            jitter: TtlJitter::new(config.ttl_jitter, config.ttl_jitter_max()),
            rng: RefCell::new(fastrand::Rng::new()),
            senders,
            draining: Cell::new(false),
            connections: RefCell::new(HashMap::new()),
            next_connection: Cell::new(0),
            config,
            lifecycle,
        }
    }

    /// Run `op` wherever its key lives: on the owner node (found on the
    /// ring), then on the owner core there.
    pub async fn call(&self, op: Op) -> Reply {
        if let Some(key) = op.key() {
            let view = self.ring.borrow().clone();
            if let Some(owner) = view.ring.owner_index(key) {
                if Some(owner) != view.me {
                    return self.forward(&view, owner, op).await;
                }
            }
        }
        self.call_here(op).await
    }

    /// Run `op` on the core of this node that owns its key, whatever the
    /// ring says (used for requests another node forwarded here).
    pub async fn call_here(&self, op: Op) -> Reply {
        let owner = op.key().map_or(self.id, |k| core_of(k, self.cores));
        if owner == self.id {
            return self.execute(op);
        }
        self.metrics.record_cross_core();
        self.send(owner, op).await
    }

    /// Send `op` to the node at `owner` over this core's connection to it.
    /// A read that fails is answered as a miss (the cache is allowed to
    /// forget); a write that fails must tell the client it did not happen.
    async fn forward(&self, view: &RingView, owner: usize, op: Op) -> Reply {
        let peer = &view.names[owner];
        let op_kind = match op {
            Op::Get { .. } => OpKind::Get,
            Op::Set { .. } => OpKind::Set,
            Op::Delete { .. } => OpKind::Delete,
            Op::Snapshot => OpKind::Other,
        };
        let is_read = matches!(op, Op::Get { .. });
        let started = Instant::now();
        let result = match view.grpc_addrs[owner] {
            Some(addr) => self.peers.client(addr).forward(op).await.map_err(|e| {
                let outcome = peer_outcome(&e);
                (outcome, e.to_string())
            }),
            None => Err((
                PeerOutcome::Unreachable,
                format!(
                    "cannot resolve its gRPC address {:?}",
                    view.ring.members()[owner].grpc_addr
                ),
            )),
        };
        let outcome = result
            .as_ref()
            .map_or_else(|(o, _)| *o, |_| PeerOutcome::Ok);
        self.metrics
            .record_peer_request(peer, op_kind, outcome, started.elapsed());
        match result {
            Ok(reply) => reply,
            Err(_) if is_read => Reply::Value(None),
            Err((_, reason)) => Reply::OwnerUnavailable {
                peer: peer.to_string(),
                reason,
            },
        }
    }

    /// Adopt the newest ring snapshot if the control thread published one,
    /// and drop this shard's entries if the node lost its lease meanwhile.
    /// Called from the housekeeping timer, never per request.
    pub fn refresh_ring(&self) {
        let epoch = self.board.flush_epoch();
        if epoch != self.flush_epoch.get() {
            self.flush_epoch.set(epoch);
            let dropped = self.shard.borrow_mut().clear();
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
        let view = RingView::new(version, ring, &self.config.node_name);
        self.metrics.set_ring_members(view.ring.len());
        let live: Vec<SocketAddr> = view.grpc_addrs.iter().flatten().copied().collect();
        self.peers.retain(|addr| live.contains(addr));
        tracing::debug!(
            core = self.id,
            version,
            members = view.ring.len(),
            "ring updated"
        );
        *self.ring.borrow_mut() = Rc::new(view);
    }

    pub fn ring_view(&self) -> Rc<RingView> {
        self.ring.borrow().clone()
    }

    async fn send(&self, core: usize, op: Op) -> Reply {
        let (reply, answer) = oneshot::channel();
        if self
            .senders
            .send_to(core, Envelope { op, reply })
            .await
            .is_err()
        {
            return Reply::Unavailable;
        }
        answer.await.unwrap_or(Reply::Unavailable)
    }

    /// Execute an op against this core's own shard.
    pub fn execute(&self, op: Op) -> Reply {
        let now = Instant::now();
        let mut shard = self.shard.borrow_mut();
        match op {
            Op::Get { key } => Reply::Value(shard.get(&key, now).map(|f| (f.value, f.hot))),
            Op::Set {
                key,
                value,
                ttl,
                hot,
            } => {
                let expires_at = self.jitter.expiry(now, ttl, &mut self.rng.borrow_mut());
                match shard.set(&key, value, expires_at, hot, now) {
                    Ok(_) => Reply::Stored,
                    Err(e) => Reply::TooLarge(e.to_string()),
                }
            }
            Op::Delete { key } => Reply::Deleted(shard.delete(&key, now)),
            Op::Snapshot => {
                Reply::Snapshot(Box::new((shard.stats(), self.metrics.snapshot(self.id))))
            }
        }
    }

    /// Every core's statistics, this one's included, in core order.
    pub async fn snapshot_all(&self) -> Vec<(ShardStats, CoreSnapshot)> {
        let mut all = Vec::with_capacity(self.cores);
        for core in 0..self.cores {
            let reply = if core == self.id {
                self.execute(Op::Snapshot)
            } else {
                self.send(core, Op::Snapshot).await
            };
            if let Reply::Snapshot(snapshot) = reply {
                all.push(*snapshot);
            }
        }
        all
    }

    /// Reclaim expired entries, at most `budget` checks.
    pub fn sweep(&self, budget: usize) -> u64 {
        self.shard
            .borrow_mut()
            .sweep_expired(Instant::now(), budget)
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
