//! The seam between the engine and a wire protocol.
//!
//! The engine owns sockets, buffers, timing and statistics; a transport
//! only turns operations into bytes and bytes back into completions. That
//! keeps codecs pure (testable without sockets) and lets a gRPC/HTTP-2
//! transport be added later as one more module: HTTP/2 multiplexes, so a
//! completion names the request it answers (`RequestId`) instead of relying
//! on HTTP/1.1's in-order responses, and `decode` may emit protocol
//! replies (SETTINGS ACK, WINDOW_UPDATE, PING ACK) into the output buffer.

use crate::workload::Op;

/// Identifies a request on one connection (HTTP/1.1: a sequence number).
pub type RequestId = u64;

/// Protocol-neutral class of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseClass {
    /// Success (HTTP 200, gRPC OK; for a gRPC Get, OK with `found=true`).
    Ok,
    /// The key does not exist (HTTP 404; gRPC Get answered OK with
    /// `found=false`, or NOT_FOUND).
    NotFound,
    /// Another client-side error (HTTP 4xx).
    ClientError(u16),
    /// A server-side error (HTTP 5xx).
    ServerError(u16),
    /// Anything else (HTTP 1xx/3xx, 2xx other than 200).
    Other(u16),
    /// A gRPC call answered with a non-OK `grpc-status` (0..=16), other
    /// than NOT_FOUND on a read (a miss).
    GrpcStatus(u8),
    /// An HTTP/2 stream reset by the server (RST_STREAM), or refused by
    /// GOAWAY; the HTTP/2 error code.
    StreamReset(u32),
}

/// One finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub id: RequestId,
    pub class: ResponseClass,
    /// The peer will close the connection after this response: requests
    /// still in flight on it will never be answered.
    pub close_after: bool,
}

/// Result of feeding received bytes to a codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// No complete response yet; `consumed` leading bytes were used up
    /// (e.g. body bytes skipped) and must not be offered again.
    NeedMore { consumed: usize },
    /// One response completed after `consumed` bytes; call again with the rest.
    Done {
        consumed: usize,
        completion: Completion,
    },
}

/// Wire-level failures a codec can report.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("malformed response head: {0}")]
    Head(String),
    #[error("response head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("bad Content-Length header")]
    BadContentLength,
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
    #[error("response without status code")]
    NoStatus,
    #[error("connection closed in the middle of a response")]
    TruncatedResponse,
    #[error("HTTP/2 protocol error: {0}")]
    Http2(&'static str),
    #[error("HPACK decoding error: {0}")]
    Hpack(String),
    #[error("malformed gRPC response: {0}")]
    Grpc(&'static str),
}

/// A protocol: builds one codec per connection.
pub trait Transport: Send + Sync + 'static {
    type Codec: ConnCodec;

    /// A fresh codec for a connection to `target` (an index into `--targets`).
    fn codec(&self, target: usize) -> Self::Codec;
}

/// Per-connection protocol state.
pub trait ConnCodec: Send + 'static {
    /// Bytes to send as soon as the connection is up (HTTP/2 preface).
    fn on_connect(&mut self, _out: &mut Vec<u8>) {}

    /// Appends the request for `op` to `out` and returns its id.
    fn encode(&mut self, op: Op, out: &mut Vec<u8>) -> RequestId;

    /// Parses received bytes. `out` receives protocol-level replies, if any.
    fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Decoded, CodecError>;

    /// The peer closed the stream: a response delimited by the close
    /// completes here; `Err` if a response was cut short.
    fn on_eof(&mut self) -> Result<Option<Completion>, CodecError>;

    /// Forgets all state, ready for a new connection.
    fn reset(&mut self);
}
