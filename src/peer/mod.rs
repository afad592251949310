//! Per-core gRPC clients to the other nodes of the cluster.
//!
//! When the ring says another node owns a key, the core that received the
//! request forwards it itself, over its own long-lived HTTP/2 connection to
//! that node: no lock, no connection shared between threads.
//!
//! ```text
//! core A ── PeerPool (one per core) ── PeerClient(node Y) ══ h2 ══> node Y, any core
//!                                   └─ PeerClient(node Z) ══ h2 ══> node Z
//! ```
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

mod client;
pub mod streams;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderValue;

pub use self::client::PeerClient;
use crate::config::{DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES};
use crate::grpc::status::Code;

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

/// One core's clients, one per peer address, created on first use and kept.
#[derive(Debug, Default)]
pub struct PeerPool {
    config: PeerConfig,
    clients: RefCell<HashMap<SocketAddr, PeerClient>>,
}

impl PeerPool {
    pub fn new(config: PeerConfig) -> PeerPool {
        PeerPool {
            config,
            clients: RefCell::new(HashMap::new()),
        }
    }

    /// The client for the node whose gRPC address is `addr` (cheap clone of
    /// a shared handle; it connects on its first request).
    pub fn client(&self, addr: SocketAddr) -> PeerClient {
        self.clients
            .borrow_mut()
            .entry(addr)
            .or_insert_with(|| PeerClient::new(addr, self.config.clone()))
            .clone()
    }

    /// Drops the clients of nodes that left (their connections close once
    /// in-flight requests finish).
    pub fn retain(&self, mut keep: impl FnMut(&SocketAddr) -> bool) {
        self.clients.borrow_mut().retain(|addr, _| keep(addr));
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
        };
        assert_eq!(answered.code(), Code::InvalidArgument);
        assert_eq!(
            answered.to_string(),
            "peer 127.0.0.1:1 answered INVALID_ARGUMENT: missing or empty key"
        );
    }
}
