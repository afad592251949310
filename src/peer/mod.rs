//! Per-core gRPC clients to the other nodes of the cluster.
//!
//! When the ring says another node owns a key, the core that received the
//! request forwards it itself, over its own long-lived HTTP/2 connection to
//! that node: no lock, no connection shared between threads.
//!
//! ```text
//! core A ── PeerPool (one per core) ── PeerClient(node Y, core A) ══ h2 ══> node Y, core A
//!                                   └─ PeerClient(node Z, core A) ══ h2 ══> node Z, core A
//! ```
//!
//! Each connection announces the peer core it is for ([`announce`]), and
//! the peer serves it on that core: a key's home core is the same id on
//! every node with the same core count, so what core A forwards lands on
//! the key's home core at the owner with no further hop. The pool is keyed
//! by (address, target core): [`PeerPool::client`] targets this core's own
//! id, [`PeerPool::client_on`] any other, and [`PeerPool::client_for_key`]
//! picks the key's home core at an owner whose core count is known.
//!
//! A [`PeerClient`] connects on first use and keeps the connection; every
//! task on the core multiplexes its requests over it. Each request carries
//! `forwarded=true` (the receiver runs it and never forwards again) and a
//! `grpc-timeout`. Nothing waits unbounded: connecting is bounded by
//! [`PeerConfig::connect_timeout`], each request by
//! [`PeerConfig::request_timeout`]. A connection that fails is dropped and
//! the next request reconnects; a connect attempt that fails makes requests
//! fail fast for [`PeerConfig::reconnect_backoff`], so a dead peer costs
//! one connect timeout per backoff window, not one per request. An open
//! connection that goes silent (a partition drops its packets, no reset)
//! is found the same way: when a call on it times out, it must answer an
//! HTTP/2 PING within [`PeerConfig::connect_timeout`], or it is dropped
//! (failing the calls still on it) and the peer enters the same backoff.
//!
//! Every request proves this node is a member of the cluster with the
//! `x-nexuscache-cluster-secret` metadata ([`PeerConfig::cluster_secret`]);
//! peers need no client token. And every client keeps at most one
//! connection budget ([`crate::grpc::budget::connection_budget`]) of
//! request bytes in flight, so the node it forwards to never has to refuse
//! a stream of ours for holding too many partial messages.

pub mod announce;
mod client;
pub mod streams;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderValue;

pub use self::client::PeerClient;
use crate::config::{DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES};
use crate::grpc::reason::Reason;
use crate::grpc::status::Code;
use crate::routing::core_of;

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
pub const DEFAULT_RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// How a core talks to its peers.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Longest a TCP connect plus HTTP/2 handshake may take; also how long
    /// an open connection has to answer a PING after a call on it timed out.
    pub connect_timeout: Duration,
    /// Longest one request may take once a connection is there; also sent
    /// to the peer as `grpc-timeout`.
    pub request_timeout: Duration,
    /// The same for reads, which may wait for the owner's origin load.
    pub read_timeout: Duration,
    /// The same for writes, which may wait for the owner's replica updates
    /// (each bounded by `request_timeout`).
    pub write_timeout: Duration,
    /// After a failed connect (or a connection found dead), requests fail
    /// at once for this long.
    pub reconnect_backoff: Duration,
    /// Largest response message accepted (a peer's values obey the same
    /// limit as ours: use `grpc::cache::max_message_bytes(&core.limits)`).
    pub max_response_bytes: usize,
    /// Sent as `x-nexuscache-cluster-secret` on every request (see
    /// [`cluster_secret_header`]); `None` in a cluster without a secret.
    pub cluster_secret: Option<HeaderValue>,
}

/// The metadata value for this node's outgoing cluster secret
/// (`Credentials::outgoing_secret`), marked sensitive so it never shows in
/// `Debug` output. `None` without a secret (or for a value that cannot be
/// a header, which start-up validation already refuses).
pub fn cluster_secret_header(secret: Option<&[u8]>) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_bytes(secret?).ok()?;
    value.set_sensitive(true);
    Some(value)
}

impl PeerConfig {
    /// How a node configured with `config` talks to its peers (the same
    /// settings every core's pool is built with).
    pub fn for_node(config: &crate::config::Config) -> PeerConfig {
        let limits = crate::ops::Limits {
            max_key_bytes: config.max_key_bytes,
            max_value_bytes: config.max_value_bytes,
        };
        PeerConfig {
            connect_timeout: config.peer_connect_timeout(),
            request_timeout: config.peer_timeout(),
            read_timeout: config.peer_read_timeout(),
            // The owner may wait up to one peer timeout for replica updates.
            write_timeout: config.peer_timeout() * 2,
            reconnect_backoff: DEFAULT_RECONNECT_BACKOFF,
            max_response_bytes: crate::grpc::cache::max_message_bytes(&limits),
            cluster_secret: cluster_secret_header(config.credentials.outgoing_secret()),
        }
    }
}

impl Default for PeerConfig {
    fn default() -> PeerConfig {
        PeerConfig {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            read_timeout: DEFAULT_REQUEST_TIMEOUT,
            write_timeout: DEFAULT_REQUEST_TIMEOUT,
            reconnect_backoff: DEFAULT_RECONNECT_BACKOFF,
            max_response_bytes: DEFAULT_MAX_VALUE_BYTES as usize
                + DEFAULT_MAX_KEY_BYTES
                + crate::grpc::cache::MESSAGE_OVERHEAD,
            cluster_secret: None,
        }
    }
}

/// Why a call to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("cannot connect to peer {addr}: {reason}")]
    Connect {
        addr: SocketAddr,
        reason: String,
        /// The peer's host answered that nothing listens on the port.
        refused: bool,
    },
    #[error("connecting to peer {addr} took over {after:?}")]
    ConnectTimeout { addr: SocketAddr, after: Duration },
    #[error("peer {addr} is unreachable ({reason}); next connect attempt in {retry_in:?}")]
    Backoff {
        addr: SocketAddr,
        reason: String,
        retry_in: Duration,
        /// The failed connect was refused (see [`PeerError::peer_is_down`]).
        refused: bool,
    },
    #[error("peer {addr} did not answer within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("peer {addr} answered {code}: {message}")]
    Status {
        addr: SocketAddr,
        code: Code,
        message: String,
        /// What failed, when the peer is one of ours and said (see
        /// `grpc::reason`).
        reason: Option<Reason>,
    },
    #[error("connection to peer {addr} failed: {reason}")]
    ConnectionLost { addr: SocketAddr, reason: String },
    #[error("peer {addr} broke the gRPC protocol: {reason}")]
    Protocol { addr: SocketAddr, reason: String },
    #[error("{0} ops are core-local and cannot be forwarded")]
    NotForwardable(&'static str),
}

impl PeerError {
    /// The peer's port refused the connection: no process serves there, so
    /// it holds no hot copies (a node that restarts starts empty). Unlike a
    /// timeout, which may hide a live but unreachable node.
    pub fn peer_is_down(&self) -> bool {
        matches!(
            self,
            PeerError::Connect { refused: true, .. } | PeerError::Backoff { refused: true, .. }
        )
    }

    /// The gRPC code that best describes the failure: `Unavailable` when
    /// the peer cannot be reached, `DeadlineExceeded` when it was too slow,
    /// the peer's own code when it answered with one.
    pub fn code(&self) -> Code {
        match self {
            PeerError::Connect { .. }
            | PeerError::ConnectTimeout { .. }
            | PeerError::Backoff { .. }
            | PeerError::ConnectionLost { .. } => Code::Unavailable,
            PeerError::Timeout { .. } => Code::DeadlineExceeded,
            PeerError::Status { code, .. } => *code,
            PeerError::Protocol { .. } => Code::Internal,
            PeerError::NotForwardable(_) => Code::Unimplemented,
        }
    }
}

/// One core's clients, one per (peer address, target core), created on
/// first use and kept.
#[derive(Debug, Default)]
pub struct PeerPool {
    config: PeerConfig,
    /// The id of the core this pool belongs to: what [`PeerPool::client`]
    /// targets at the peer.
    local_core: Cell<usize>,
    clients: RefCell<HashMap<(SocketAddr, usize), PeerClient>>,
}

impl PeerPool {
    pub fn new(config: PeerConfig) -> PeerPool {
        PeerPool {
            config,
            local_core: Cell::new(0),
            clients: RefCell::new(HashMap::new()),
        }
    }

    /// Tells the pool which core it belongs to (0 until told). Set once at
    /// start-up, before the first request.
    pub fn set_local_core(&self, core: usize) {
        self.local_core.set(core);
    }

    pub fn local_core(&self) -> usize {
        self.local_core.get()
    }

    /// The client for the node whose gRPC address is `addr`, on the peer
    /// core with this core's id (cheap clone of a shared handle; it
    /// connects on its first request). That core is the key's home there
    /// whenever both nodes have the same number of cores.
    pub fn client(&self, addr: SocketAddr) -> PeerClient {
        self.client_on(addr, self.local_core.get())
    }

    /// The client for core `core` of the node at `addr`. A core id the peer
    /// does not have (or past `u16::MAX`) is served by whichever core
    /// accepts the connection.
    pub fn client_on(&self, addr: SocketAddr, core: usize) -> PeerClient {
        self.clients
            .borrow_mut()
            .entry((addr, core))
            .or_insert_with(|| match u16::try_from(core) {
                Ok(core) => PeerClient::on_core(addr, core, self.config.clone()),
                Err(_) => PeerClient::new(addr, self.config.clone()),
            })
            .clone()
    }

    /// The client that reaches `key`'s home core at the node at `addr`,
    /// which has `owner_cores` data cores (a member's `cores`; 0 when
    /// unknown, as for a `--peers` entry without a core count, falls back
    /// to [`PeerPool::client`]).
    pub fn client_for_key(&self, addr: SocketAddr, key: &[u8], owner_cores: u32) -> PeerClient {
        match owner_cores {
            0 => self.client(addr),
            cores => self.client_on(addr, core_of(key, cores as usize)),
        }
    }

    /// Drops the clients of nodes that left (their connections close once
    /// in-flight requests finish).
    pub fn retain(&self, mut keep: impl FnMut(&SocketAddr) -> bool) {
        self.clients.borrow_mut().retain(|(addr, _), _| keep(addr));
    }

    pub fn len(&self) -> usize {
        self.clients.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_keeps_one_client_per_address() {
        let pool = PeerPool::new(PeerConfig::default());
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(pool.client(a).addr(), a);
        let _ = pool.client(a);
        let _ = pool.client(b);
        assert_eq!(pool.len(), 2);
        pool.retain(|addr| *addr == b);
        assert_eq!(pool.len(), 1);
        assert!(!pool.client(b).is_connected());
    }

    #[test]
    fn pool_keys_clients_by_address_and_target_core() {
        let pool = PeerPool::new(PeerConfig::default());
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(pool.client(a).home_core(), Some(0));
        pool.set_local_core(3);
        assert_eq!(pool.local_core(), 3);
        assert_eq!(pool.client(a).home_core(), Some(3));
        assert_eq!(pool.client_on(a, 1).home_core(), Some(1));
        assert_eq!(pool.client_on(a, 1).home_core(), Some(1));
        assert_eq!(pool.len(), 3);
        // An id no announcement can carry gets a plain connection.
        assert_eq!(pool.client_on(a, 70_000).home_core(), None);
        pool.retain(|_| false);
        assert!(pool.is_empty());
    }

    #[test]
    fn client_for_key_targets_the_home_core_at_the_owner() {
        let pool = PeerPool::new(PeerConfig::default());
        pool.set_local_core(1);
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for i in 0..64 {
            let key = format!("key-{i}");
            for owner_cores in [1u32, 2, 3, 8] {
                let home = core_of(key.as_bytes(), owner_cores as usize) as u16;
                assert_eq!(
                    pool.client_for_key(a, key.as_bytes(), owner_cores)
                        .home_core(),
                    Some(home)
                );
            }
            // Unknown core count: this core's own id.
            assert_eq!(
                pool.client_for_key(a, key.as_bytes(), 0).home_core(),
                Some(1)
            );
        }
    }

    #[test]
    fn the_secret_header_never_shows_in_debug_output() {
        let secret = b"secret-value-0123456789";
        let value = cluster_secret_header(Some(secret)).unwrap();
        assert_eq!(value.as_bytes(), secret);
        let config = PeerConfig {
            cluster_secret: Some(value),
            ..PeerConfig::default()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("secret-value"), "{text}");
        assert_eq!(cluster_secret_header(None), None);
        assert_eq!(cluster_secret_header(Some(b"bad\nvalue")), None);
    }

    #[test]
    fn errors_name_a_grpc_code() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let unreachable = PeerError::Backoff {
            addr,
            reason: "refused".into(),
            retry_in: Duration::from_millis(5),
            refused: true,
        };
        assert_eq!(unreachable.code(), Code::Unavailable);
        let slow = PeerError::Timeout {
            addr,
            after: Duration::from_millis(5),
        };
        assert_eq!(slow.code(), Code::DeadlineExceeded);
        let answered = PeerError::Status {
            addr,
            code: Code::InvalidArgument,
            message: "missing or empty key".into(),
            reason: None,
        };
        assert_eq!(answered.code(), Code::InvalidArgument);
        assert_eq!(
            answered.to_string(),
            "peer 127.0.0.1:1 answered INVALID_ARGUMENT: missing or empty key"
        );
    }
}
