//! NexusCache: a thread-per-core, shared-nothing distributed cache.
//!
//! Every data core runs a pinned glommio executor that owns one shard of the
//! cache and its own accept loop on the shared HTTP port (SO_REUSEPORT). A key
//! belongs to exactly one core (`routing::core_of`); a request that arrives on
//! another core travels there as an [`ops::Op`] over the channel mesh and its
//! [`ops::Reply`] comes back on a oneshot. No lock and no shared mutable map
//! sits on the request path: only messages cross cores.
//!
//! ```text
//!  client ──HTTP──> core A ──core_of(key)==A──> A's shard
//!                        └──────────else──Op──> core B ──> B's shard ──Reply──> A
//! ```

/// HTTP front end: parse -> route -> op -> response.
pub mod api;
/// Client tokens and the cluster secret: who may call what (pure).
pub mod auth;
/// HTTP/1.1 chunked transfer coding, for requests and origin responses (pure).
pub mod chunked;
/// Flags, environment and TOML file, validated once.
pub mod config;
/// Control thread: etcd or static membership, ring snapshots for the cores.
pub mod control;
/// The per-key policy of one core: pure, synchronous, time passed in.
pub mod engine;
/// Error enums and the one place statuses are mapped.
pub mod error;
/// The gRPC wire format (framing, statuses, timeouts, Cache messages); no I/O.
pub mod grpc;
/// Per-core counters merged at scrape into Prometheus text.
pub mod metrics;
/// Conditional and read-modify-write ops on one key (pure).
pub mod mutation;
/// The messages that cross cores.
pub mod ops;
/// Read-through origin: the HTTP client a key's owner loads misses with.
pub mod origin;
/// Per-core gRPC clients to other nodes, over h2 on glommio.
pub mod peer;
/// The Redis protocol: RESP parsing, encoding and commands (pure).
pub mod resp;
/// Where a key lives: node ring and core hash (pure).
pub mod routing;
/// Executors, pinning, the core mesh, start-up checks and shutdown.
pub mod runtime;
/// Socket writes that skip the ring when the kernel takes the bytes at once.
pub mod sockets;
/// One core's LRU + TTL shard (pure).
pub mod store;

/// Generated protobuf messages and tonic client for `nexuscache.v1`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("nexuscache.v1");
}
