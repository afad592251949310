//! The gRPC wire format, without a runtime.
//!
//! Everything a gRPC server or client on a data core needs that is pure
//! bytes-in, bytes-out lives here, so it can be unit-tested and fuzzed with
//! no executor and no socket (`src/api/grpc.rs` and `src/peer/` add the h2
//! streams on glommio):
//!
//! - [`frame`]: the 5-byte length prefix (1 flag byte + big-endian `u32`)
//!   and an incremental decoder for the one message of a unary call, which
//!   refuses an oversized message from its prefix alone.
//! - [`status`]: the grpc-status codes (which error gets which code is
//!   `crate::error`'s).
//! - [`percent`]: the percent-encoding of `grpc-message` and our trailers.
//! - [`reason`]: the machine-readable reason of a failure, in trailers
//!   beside `grpc-status`, so errors cross nodes typed.
//! - [`timeout`]: the `grpc-timeout` header (`<= 8 digits` + `H M S m u n`).
//! - [`cache`]: the `nexuscache.v1.Cache` methods: request decoding and
//!   validation into an [`crate::ops::Op`], reply encoding, and the client
//!   side of the same messages, all on the generated [`wire`] types.
//! - [`mutate`]: the `Mutate` method's messages (conditional and
//!   read-modify-write ops) to and from [`crate::mutation`]'s types.
//! - [`wire`]: the prost messages generated from `proto/` with `Bytes`
//!   fields.
//! - [`budget`]: the per-connection and per-core budgets for the bytes of
//!   partly received messages.
//! - [`h2_settings`]: the HTTP/2 windows and limits both ends use.
//! - [`io`]: an adapter from `futures-io` streams (glommio's) to the
//!   `tokio::io` traits that `h2` is written against.
//!
//! Reference: grpc/grpc `doc/PROTOCOL-HTTP2.md`.

pub mod budget;
pub mod cache;
pub mod frame;
pub mod h2_settings;
pub mod io;
pub mod mutate;
pub mod percent;
pub mod reason;
pub mod status;
pub mod timeout;
pub mod wire;

/// `content-type` of every gRPC request and response we send. Requests are
/// accepted with any `application/grpc` prefix (`application/grpc+proto`).
pub const CONTENT_TYPE: &str = "application/grpc";
