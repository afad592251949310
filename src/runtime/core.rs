//! One data core: its shard, its counters, its senders to the other cores,
//! and the [`Core::call`] that runs an op wherever the key lives.
//!
//! A `Core` lives in an `Rc` on its own executor thread and is never shared
//! with another thread; other cores reach its shard only by sending an
//! [`Envelope`] through the channel mesh.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;

use crate::api::http::route::Limits;
use crate::config::Config;
use crate::metrics::{CoreMetrics, CoreSnapshot};
use crate::ops::{Op, Reply};
use crate::routing::core_of;
use crate::runtime::lifecycle::Lifecycle;
use crate::store::{Shard, ShardStats, TtlJitter};

/// An op on its way to the owning core, with the channel its reply takes back.
#[derive(Debug)]
pub struct Envelope {
    pub op: Op,
    pub reply: oneshot::Sender<Reply>,
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
    /// Local copy of the node-wide draining flag, refreshed by the
    /// housekeeping task, so requests never read a shared atomic.
    draining: Cell<bool>,
    /// Open client sockets, so draining can wake idle readers.
    connections: RefCell<HashMap<u64, RawFd>>,
    next_connection: Cell<u64>,
}

impl Core {
    pub fn new(
        id: usize,
        config: Arc<Config>,
        lifecycle: Arc<Lifecycle>,
        senders: Senders<Envelope>,
    ) -> Core {
        Core {
            id,
            cores: config.cores(),
            limits: Limits {
                max_key_bytes: config.max_key_bytes,
                max_value_bytes: config.max_value_bytes,
            },
            metrics: CoreMetrics::default(),
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

    /// Run `op` on the core that owns its key: here, or by message.
    pub async fn call(&self, op: Op) -> Reply {
        let owner = op.key().map_or(self.id, |k| core_of(k, self.cores));
        if owner == self.id {
            return self.execute(op);
        }
        self.metrics.record_cross_core();
        self.send(owner, op).await
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

    pub fn register_connection(&self, fd: RawFd) -> u64 {
        let id = self.next_connection.get();
        self.next_connection.set(id + 1);
        self.connections.borrow_mut().insert(id, fd);
        self.metrics.connection_opened();
        id
    }

    pub fn unregister_connection(&self, id: u64) {
        self.connections.borrow_mut().remove(&id);
        self.metrics.connection_closed();
    }

    pub fn open_connections(&self) -> usize {
        self.connections.borrow().len()
    }

    /// Make every idle connection's pending read return end-of-file, so each
    /// connection finishes what it has already received and then closes.
    pub fn stop_reading_connections(&self) {
        for &fd in self.connections.borrow().values() {
            // SAFETY: the fd belongs to a live connection task on this core
            // (it is unregistered before the stream is dropped), and
            // shutdown(2) neither closes nor invalidates it.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RD);
            }
        }
    }
}
