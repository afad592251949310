//! The HTTP/2 settings both ends of a NexusCache gRPC connection use: the
//! server on every core (`api/grpc.rs`) and the peer client (`peer/`). One
//! set, so a window or a header limit cannot differ between the side that
//! sends and the side that receives.

/// Per-stream receive window: a whole value of the default size limit
/// arrives without waiting for a window update.
pub const STREAM_WINDOW: u32 = 1 << 20;
/// Receive window shared by all streams of a connection.
pub const CONNECTION_WINDOW: u32 = 4 << 20;
/// Largest header block accepted, request or response.
pub const MAX_HEADER_LIST: u32 = 16 << 10;
/// Calls in flight per connection the server allows. A peer core
/// multiplexes all its forwarded requests over one connection, and its h2
/// client queues calls past this limit instead of failing them; 128 in
/// flight at ~0.5 ms per call on a LAN is ~250k calls/s, far above what one
/// core can forward. The limit bounds per connection what budgets do not:
/// tasks, timers and header blocks (128 x [`MAX_HEADER_LIST`] = 2 MiB at
/// most).
pub const MAX_CONCURRENT_STREAMS: u32 = 128;

/// The server side's settings.
pub fn server() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST);
    builder
}

/// The peer client's settings.
pub fn client() -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST);
    builder
}
