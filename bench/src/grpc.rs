//! gRPC client codec: unary `nexuscache.v1.Cache/Get` and `/Set` calls over
//! HTTP/2 with the standard gRPC wire format (5-byte length prefix,
//! `content-type: application/grpc`, `grpc-status` in the trailers), many
//! concurrent streams per connection. Pure: no sockets, no clocks; the
//! engine drives it through `transport::ConnCodec` like the HTTP/1.1 codec.
//!
//! Request path: `encode` gives the call the next odd stream id (its
//! `RequestId`) and writes a HEADERS frame (HPACK, fields indexed after the
//! first call, see `h2::HeaderEncoder`) and DATA frame(s) carrying the
//! framed protobuf message with END_STREAM. A call waits in a queue when
//! the server's SETTINGS_MAX_CONCURRENT_STREAMS is reached or its flow
//! control windows are short; it leaves the queue as streams finish or
//! WINDOW_UPDATEs arrive. Queueing time is part of the measured latency.
//!
//! Response path: `decode` parses frames incrementally. HEADERS and
//! CONTINUATION blocks go through one HPACK decoder per connection (its
//! dynamic table must see every block). DATA is never buffered: the gRPC
//! length prefix and the protobuf fields of a `GetResponse` are scanned
//! byte by byte as they arrive, only to learn `found`. A stream completes
//! on END_STREAM (or RST_STREAM) and is classified:
//!
//! | response | class |
//! |---|---|
//! | `:status` 200, `grpc-status` 0, Get `found=true` / Set | `Ok` |
//! | `:status` 200, `grpc-status` 0, Get `found=false` | `NotFound` (a miss, not an error) |
//! | `grpc-status` 5 NOT_FOUND on a Get | `NotFound` |
//! | any other `grpc-status` (absent: UNKNOWN) | `GrpcStatus(code)` |
//! | `:status` other than 200 | as HTTP (4xx / 5xx / other) |
//! | RST_STREAM, or refused by GOAWAY | `StreamReset(error code)` |
//!
//! Connection-level replies (SETTINGS ACK, PING ACK, connection
//! WINDOW_UPDATE) are written to `decode`'s output buffer. The client
//! advertises the largest stream window, so responses never wait for a
//! stream WINDOW_UPDATE, and tops up the connection window as DATA arrives.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::h2::{self, Field, FrameHeader, HeaderEncoder};
use crate::http::{classify as classify_http, make_value};
use crate::keys::KeyNames;
use crate::transport::{
    CodecError, Completion, ConnCodec, Decoded, RequestId, ResponseClass, Transport,
};
use crate::workload::{Op, OpKind};

pub const GET_PATH: &str = "/nexuscache.v1.Cache/Get";
pub const SET_PATH: &str = "/nexuscache.v1.Cache/Set";

/// gRPC status codes by number (index) as lower-case names.
pub const CODE_NAMES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];
const CODE_OK: u8 = 0;
const CODE_UNKNOWN: u8 = 2;
const CODE_NOT_FOUND: u8 = 5;

/// Largest frame we accept: we keep the default SETTINGS_MAX_FRAME_SIZE,
/// so a complete HEADERS frame always fits the engine's read buffer.
const OUR_MAX_FRAME: usize = h2::DEFAULT_MAX_FRAME;
/// Top up the connection receive window once this much DATA arrived.
const RECV_WINDOW_REFILL: u64 = (h2::MAX_WINDOW / 2) as u64;
/// Largest header block (HEADERS + CONTINUATION) accepted.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Field ids of `HeaderEncoder`'s list, in the order of `request_fields`.
const F_METHOD: usize = 0;
const F_SCHEME: usize = 1;
const F_PATH_GET: usize = 2;
const F_PATH_SET: usize = 3;
const F_AUTHORITY: usize = 4;
const F_CONTENT_TYPE: usize = 5;
const F_TE: usize = 6;
const F_USER_AGENT: usize = 7;
/// Only in the list with `--auth-token`.
const F_AUTHORIZATION: usize = 8;
/// HPACK static table index of the `authorization` name (RFC 7541 A).
const STATIC_AUTHORIZATION: usize = 23;

/// The header fields of a call (`path` is `F_PATH_GET` or `F_PATH_SET`):
/// pseudo-headers first, then the rest, `authorization` when a token is set.
fn call_fields(path: usize, with_auth: bool) -> Vec<usize> {
    let mut ids = vec![
        F_METHOD,
        F_SCHEME,
        path,
        F_AUTHORITY,
        F_CONTENT_TYPE,
        F_TE,
        F_USER_AGENT,
    ];
    if with_auth {
        ids.push(F_AUTHORIZATION);
    }
    ids
}

fn request_fields(authority: &str, auth_token: Option<&str>) -> Vec<Field> {
    // Static table indices from RFC 7541 appendix A.
    let mut fields = vec![
        Field::indexed(b":method", b"POST", 3),
        Field::indexed(b":scheme", b"http", 6),
        Field::new(b":path", GET_PATH.as_bytes(), Some(4)),
        Field::new(b":path", SET_PATH.as_bytes(), Some(4)),
        Field::new(b":authority", authority.as_bytes(), Some(1)),
        Field::new(b"content-type", b"application/grpc", Some(31)),
        Field::new(b"te", b"trailers", None),
        Field::new(
            b"user-agent",
            concat!("nexuscache-bench/", env!("CARGO_PKG_VERSION")).as_bytes(),
            Some(58),
        ),
    ];
    if let Some(token) = auth_token {
        // Indexed after its first use like every other field: the same
        // token goes on every call of the connection.
        fields.push(Field::new(
            b"authorization",
            format!("Bearer {token}").as_bytes(),
            Some(STATIC_AUTHORIZATION),
        ));
    }
    fields
}

/// What every connection to one target shares.
#[derive(Debug)]
struct Shared {
    authority: String,
    /// `--auth-token`, sent as `authorization: Bearer <token>`.
    auth_token: Option<String>,
    /// Header field ids of a Get and of a Set call.
    get_fields: Vec<usize>,
    set_fields: Vec<usize>,
    /// Raw key names (gRPC keys are bytes: no encoding).
    keys: KeyNames,
    value: Vec<u8>,
}

/// gRPC over HTTP/2 against one or more targets.
#[derive(Debug, Clone)]
pub struct GrpcTransport {
    targets: Vec<Arc<Shared>>,
}

impl GrpcTransport {
    /// `authorities` are the `:authority` values, one per target. With
    /// `auth_token` every call carries `authorization: Bearer <token>`.
    pub fn new(
        authorities: &[String],
        auth_token: Option<&str>,
        keys: &KeyNames,
        value_size: usize,
    ) -> GrpcTransport {
        let value = make_value(value_size);
        let with_auth = auth_token.is_some();
        GrpcTransport {
            targets: authorities
                .iter()
                .map(|a| {
                    Arc::new(Shared {
                        authority: a.clone(),
                        auth_token: auth_token.map(str::to_string),
                        get_fields: call_fields(F_PATH_GET, with_auth),
                        set_fields: call_fields(F_PATH_SET, with_auth),
                        keys: keys.clone(),
                        value: value.clone(),
                    })
                })
                .collect(),
        }
    }
}

impl Transport for GrpcTransport {
    type Codec = GrpcCodec;

    fn codec(&self, target: usize) -> GrpcCodec {
        GrpcCodec::new(Arc::clone(&self.targets[target % self.targets.len()]))
    }
}

/// Stream ids are small odd integers: hash them with one multiply.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type StreamMap = HashMap<u32, Stream, BuildHasherDefault<IdHasher>>;

/// Incremental scanner of a protobuf message: learns field 1 (`found` of a
/// `GetResponse`) and skips everything else, across any split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    Tag { acc: u64, shift: u32 },
    Varint { field: u64, acc: u64, shift: u32 },
    Len { acc: u64, shift: u32 },
    Skip(u64),
}

impl Scan {
    const START: Scan = Scan::Tag { acc: 0, shift: 0 };

    /// Feeds `bytes`; sets `found` when field 1 is a non-zero varint.
    fn feed(&mut self, mut bytes: &[u8], found: &mut bool) -> Result<(), CodecError> {
        while !bytes.is_empty() {
            if let Scan::Skip(n) = *self {
                let take = n.min(bytes.len() as u64);
                bytes = &bytes[take as usize..];
                *self = if take == n {
                    Scan::START
                } else {
                    Scan::Skip(n - take)
                };
                continue;
            }
            let b = bytes[0];
            bytes = &bytes[1..];
            let bits = u64::from(b & 0x7f);
            let more = b & 0x80 != 0;
            *self = match *self {
                Scan::Tag { acc, shift } => {
                    let acc = acc | bits.checked_shl(shift).unwrap_or(0);
                    if more {
                        next_shift(shift).map(|shift| Scan::Tag { acc, shift })?
                    } else {
                        let field = acc >> 3;
                        if field == 0 {
                            return Err(CodecError::Grpc("protobuf field number 0"));
                        }
                        match acc & 7 {
                            0 => Scan::Varint {
                                field,
                                acc: 0,
                                shift: 0,
                            },
                            1 => Scan::Skip(8),
                            2 => Scan::Len { acc: 0, shift: 0 },
                            5 => Scan::Skip(4),
                            _ => return Err(CodecError::Grpc("unsupported protobuf wire type")),
                        }
                    }
                }
                Scan::Varint { field, acc, shift } => {
                    let acc = acc | bits.checked_shl(shift).unwrap_or(0);
                    if more {
                        next_shift(shift).map(|shift| Scan::Varint { field, acc, shift })?
                    } else {
                        if field == 1 {
                            *found = acc != 0;
                        }
                        Scan::START
                    }
                }
                Scan::Len { acc, shift } => {
                    let acc = acc | bits.checked_shl(shift).unwrap_or(0);
                    if more {
                        next_shift(shift).map(|shift| Scan::Len { acc, shift })?
                    } else if acc == 0 {
                        Scan::START
                    } else {
                        Scan::Skip(acc)
                    }
                }
                Scan::Skip(_) => unreachable!("handled above"),
            };
        }
        Ok(())
    }
}

fn next_shift(shift: u32) -> Result<u32, CodecError> {
    if shift >= 63 {
        Err(CodecError::Grpc("protobuf varint longer than 10 bytes"))
    } else {
        Ok(shift + 7)
    }
}

/// Parses the gRPC messages of one response stream (5-byte prefix, body).
#[derive(Debug, Clone, Copy)]
struct MessageParser {
    prefix: [u8; 5],
    have: u8,
    /// Body bytes left of the current message; `None` while in a prefix.
    left: Option<u32>,
    scan: Scan,
    found: bool,
}

impl MessageParser {
    fn new() -> MessageParser {
        MessageParser {
            prefix: [0; 5],
            have: 0,
            left: None,
            scan: Scan::START,
            found: false,
        }
    }

    /// `scan`: look into the protobuf fields (Get); otherwise skip them.
    fn feed(&mut self, mut bytes: &[u8], scan: bool) -> Result<(), CodecError> {
        while !bytes.is_empty() {
            match self.left {
                None => {
                    let take = (5 - self.have as usize).min(bytes.len());
                    self.prefix[self.have as usize..self.have as usize + take]
                        .copy_from_slice(&bytes[..take]);
                    self.have += take as u8;
                    bytes = &bytes[take..];
                    if self.have == 5 {
                        if self.prefix[0] != 0 {
                            return Err(CodecError::Grpc(
                                "compressed message, but no grpc-encoding was offered",
                            ));
                        }
                        let len = u32::from_be_bytes([
                            self.prefix[1],
                            self.prefix[2],
                            self.prefix[3],
                            self.prefix[4],
                        ]);
                        self.left = Some(len);
                        self.have = 0;
                        self.scan = Scan::START;
                    }
                }
                Some(0) => self.end_message()?,
                Some(left) => {
                    let take = (left as usize).min(bytes.len());
                    if scan {
                        self.scan.feed(&bytes[..take], &mut self.found)?;
                    }
                    bytes = &bytes[take..];
                    self.left = Some(left - take as u32);
                }
            }
        }
        if self.left == Some(0) {
            self.end_message()?;
        }
        Ok(())
    }

    fn end_message(&mut self) -> Result<(), CodecError> {
        if self.scan != Scan::START {
            return Err(CodecError::Grpc("protobuf message ends inside a field"));
        }
        self.left = None;
        Ok(())
    }

    /// At END_STREAM: between messages?
    fn complete(&self) -> bool {
        self.left.is_none() && self.have == 0
    }
}

/// One call in flight on the connection.
#[derive(Debug, Clone, Copy)]
struct Stream {
    kind: OpKind,
    /// `:status` of the first header block; 0 before it.
    http_status: u16,
    grpc_status: Option<u8>,
    msg: MessageParser,
}

impl Stream {
    fn class(&self) -> ResponseClass {
        if self.http_status != 200 {
            return classify_http(self.http_status);
        }
        let code = self.grpc_status.unwrap_or(CODE_UNKNOWN);
        match (self.kind, code) {
            (OpKind::Read, CODE_OK) if self.msg.found => ResponseClass::Ok,
            (OpKind::Read, CODE_OK | CODE_NOT_FOUND) => ResponseClass::NotFound,
            (OpKind::Write, CODE_OK) => ResponseClass::Ok,
            (_, code) => ResponseClass::GrpcStatus(code),
        }
    }
}

/// A call whose DATA could not all be sent yet (flow control).
#[derive(Debug)]
struct Partial {
    id: u32,
    data: Vec<u8>,
    sent: usize,
    /// The stream's send window.
    window: i64,
}

/// Frame-level receive state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    /// Expecting a 9-byte frame header.
    Header,
    /// Inside a DATA frame's payload.
    Data {
        stream: u32,
        /// Padded frame whose pad-length byte is still to come.
        need_pad_len: bool,
        /// Payload bytes left to read (including padding).
        left: usize,
        /// Of `left`, trailing padding bytes.
        pad: usize,
        end_stream: bool,
    },
    /// Payload of a frame type we ignore.
    Skip { left: usize },
}

/// Per-connection gRPC/HTTP-2 state.
pub struct GrpcCodec {
    shared: Arc<Shared>,
    encoder: HeaderEncoder,
    decoder: loona_hpack::Decoder<'static>,
    /// Next stream id to hand out (odd); above `MAX_STREAM_ID` when spent.
    next_stream: u64,
    streams: StreamMap,
    /// Calls not started yet (no HEADERS sent), oldest first.
    queue: VecDeque<(u32, OpKind, u64)>,
    partial: Option<Partial>,
    conn_send_window: i64,
    peer_initial_window: i64,
    peer_max_frame: usize,
    peer_max_streams: usize,
    /// Lowest last-stream-id of the GOAWAYs received.
    going_away: Option<u32>,
    rx: Rx,
    /// Header block being assembled from HEADERS + CONTINUATION.
    block: Vec<u8>,
    /// Stream and END_STREAM flag of that block, while one is open.
    block_open: Option<(u32, bool)>,
    recv_unacked: u64,
    /// `RECV_WINDOW_REFILL` (a field so tests can lower it).
    recv_refill: u64,
    /// Completions decided outside a frame (GOAWAY refusals).
    ready: VecDeque<Completion>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for GrpcCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcCodec")
            .field("authority", &self.shared.authority)
            .field("next_stream", &self.next_stream)
            .field("streams", &self.streams.len())
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl GrpcCodec {
    fn new(shared: Arc<Shared>) -> GrpcCodec {
        GrpcCodec {
            encoder: HeaderEncoder::new(request_fields(
                &shared.authority,
                shared.auth_token.as_deref(),
            )),
            shared,
            decoder: loona_hpack::Decoder::new(),
            next_stream: 1,
            streams: StreamMap::default(),
            queue: VecDeque::new(),
            partial: None,
            conn_send_window: i64::from(h2::DEFAULT_WINDOW),
            peer_initial_window: i64::from(h2::DEFAULT_WINDOW),
            peer_max_frame: h2::DEFAULT_MAX_FRAME,
            // Unlimited until the server's SETTINGS say otherwise.
            peer_max_streams: usize::MAX,
            going_away: None,
            rx: Rx::Header,
            block: Vec::new(),
            block_open: None,
            recv_unacked: 0,
            recv_refill: RECV_WINDOW_REFILL,
            ready: VecDeque::new(),
            scratch: Vec::with_capacity(256),
        }
    }

    /// Whether a queued call may open its stream now.
    fn can_start(&self) -> bool {
        self.partial.is_none()
            && self.going_away.is_none()
            && self.streams.len() < self.peer_max_streams
    }

    /// Writes HEADERS and as much DATA as the windows allow for call `id`.
    fn start(&mut self, id: u32, kind: OpKind, key: u64, out: &mut Vec<u8>) {
        // Header block.
        self.scratch.clear();
        let (cache_key, fields) = match kind {
            OpKind::Read => (0, &self.shared.get_fields),
            OpKind::Write => (1, &self.shared.set_fields),
        };
        self.encoder.encode(cache_key, fields, &mut self.scratch);
        let max = self.peer_max_frame;
        let mut chunks = self.scratch.chunks(max).peekable();
        let mut kind_byte = h2::HEADERS;
        while let Some(chunk) = chunks.next() {
            let flags = if chunks.peek().is_none() {
                h2::FLAG_END_HEADERS
            } else {
                0
            };
            h2::write_frame_header(out, chunk.len(), kind_byte, flags, id);
            out.extend_from_slice(chunk);
            kind_byte = h2::CONTINUATION;
        }
        self.streams.insert(
            id,
            Stream {
                kind,
                http_status: 0,
                grpc_status: None,
                msg: MessageParser::new(),
            },
        );

        // The framed message.
        self.scratch.clear();
        encode_message(&self.shared, kind, key, &mut self.scratch);
        let len = self.scratch.len() as i64;
        let window = self.peer_initial_window;
        if len <= self.conn_send_window && len <= window && self.scratch.len() <= max {
            // The usual case: one DATA frame, straight into the output.
            h2::write_frame_header(out, self.scratch.len(), h2::DATA, h2::FLAG_END_STREAM, id);
            out.extend_from_slice(&self.scratch);
            self.conn_send_window -= len;
            return;
        }
        self.partial = Some(Partial {
            id,
            data: std::mem::take(&mut self.scratch),
            sent: 0,
            window,
        });
        self.send_partial(out);
    }

    /// Sends what flow control allows of the partial call's DATA.
    fn send_partial(&mut self, out: &mut Vec<u8>) {
        let Some(p) = self.partial.as_mut() else {
            return;
        };
        loop {
            let left = p.data.len() - p.sent;
            let allowed = self.conn_send_window.min(p.window).max(0) as usize;
            let take = left.min(allowed).min(self.peer_max_frame);
            if take == 0 && left > 0 {
                return;
            }
            let last = take == left;
            let flags = if last { h2::FLAG_END_STREAM } else { 0 };
            h2::write_frame_header(out, take, h2::DATA, flags, p.id);
            out.extend_from_slice(&p.data[p.sent..p.sent + take]);
            p.sent += take;
            self.conn_send_window -= take as i64;
            p.window -= take as i64;
            if last {
                break;
            }
        }
        if let Some(p) = self.partial.take() {
            // Keep the allocation for the next message.
            self.scratch = p.data;
        }
    }

    /// Starts queued calls while allowed.
    fn pump(&mut self, out: &mut Vec<u8>) {
        self.send_partial(out);
        while self.can_start() {
            let Some((id, kind, key)) = self.queue.pop_front() else {
                break;
            };
            self.start(id, kind, key, out);
        }
    }

    fn completion(&self, id: u32, class: ResponseClass) -> Completion {
        Completion {
            id: RequestId::from(id),
            class,
            close_after: false,
        }
    }

    /// Marks the completion that leaves a going-away (or out of stream
    /// ids) connection without streams: the engine then reconnects; calls
    /// still queued are lost (and counted as `io` errors by the engine).
    fn finish(&mut self, mut c: Completion) -> Completion {
        let spent = self.next_stream > u64::from(h2::MAX_STREAM_ID);
        if (self.going_away.is_some() || spent) && self.streams.is_empty() && self.ready.is_empty()
        {
            c.close_after = true;
        }
        c
    }

    /// Handles a complete non-DATA frame. Returns a finished call, if any.
    fn on_frame(
        &mut self,
        h: FrameHeader,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<Completion>, CodecError> {
        if let Some((open, _)) = self.block_open {
            if h.kind != h2::CONTINUATION || h.stream != open {
                return Err(CodecError::Http2(
                    "header block interrupted by another frame",
                ));
            }
        }
        match h.kind {
            h2::HEADERS => {
                if h.stream == 0 {
                    return Err(CodecError::Http2("HEADERS on stream 0"));
                }
                let mut p = payload;
                let mut pad = 0;
                if h.has(h2::FLAG_PADDED) {
                    let (&n, rest) = p
                        .split_first()
                        .ok_or(CodecError::Http2("padded HEADERS without pad length"))?;
                    pad = usize::from(n);
                    p = rest;
                }
                if h.has(h2::FLAG_PRIORITY) {
                    p = p
                        .get(5..)
                        .ok_or(CodecError::Http2("HEADERS too short for its priority"))?;
                }
                if pad > p.len() {
                    return Err(CodecError::Http2("HEADERS padding longer than the frame"));
                }
                let fragment = &p[..p.len() - pad];
                let end_stream = h.has(h2::FLAG_END_STREAM);
                if h.has(h2::FLAG_END_HEADERS) {
                    return self.on_header_block(h.stream, fragment, end_stream, out);
                }
                self.block.clear();
                self.block.extend_from_slice(fragment);
                self.block_open = Some((h.stream, end_stream));
                Ok(None)
            }
            h2::CONTINUATION => {
                let Some((stream, end_stream)) = self.block_open else {
                    return Err(CodecError::Http2("CONTINUATION without HEADERS"));
                };
                if self.block.len() + payload.len() > MAX_HEADER_BLOCK {
                    return Err(CodecError::Http2("header block too large"));
                }
                self.block.extend_from_slice(payload);
                if !h.has(h2::FLAG_END_HEADERS) {
                    return Ok(None);
                }
                self.block_open = None;
                let block = std::mem::take(&mut self.block);
                let result = self.on_header_block(stream, &block, end_stream, out);
                self.block = block;
                result
            }
            h2::SETTINGS => {
                if h.stream != 0 {
                    return Err(CodecError::Http2("SETTINGS on a stream"));
                }
                if h.has(h2::FLAG_ACK) {
                    return Ok(None);
                }
                let settings =
                    h2::parse_settings(payload).ok_or(CodecError::Http2("bad SETTINGS length"))?;
                for (id, value) in settings {
                    match id {
                        h2::SETTINGS_HEADER_TABLE_SIZE => self.encoder.set_peer_limit(value),
                        h2::SETTINGS_MAX_CONCURRENT_STREAMS => {
                            self.peer_max_streams = value as usize;
                        }
                        h2::SETTINGS_INITIAL_WINDOW_SIZE => {
                            if value > h2::MAX_WINDOW {
                                return Err(CodecError::Http2("INITIAL_WINDOW_SIZE above 2^31-1"));
                            }
                            let delta = i64::from(value) - self.peer_initial_window;
                            self.peer_initial_window = i64::from(value);
                            if let Some(p) = self.partial.as_mut() {
                                p.window += delta;
                            }
                        }
                        h2::SETTINGS_MAX_FRAME_SIZE => {
                            if !(h2::DEFAULT_MAX_FRAME as u32..=h2::MAX_MAX_FRAME).contains(&value)
                            {
                                return Err(CodecError::Http2("MAX_FRAME_SIZE out of range"));
                            }
                            self.peer_max_frame = value as usize;
                        }
                        _ => {} // ENABLE_PUSH, MAX_HEADER_LIST_SIZE, unknown: nothing to do
                    }
                }
                h2::write_settings_ack(out);
                self.pump(out);
                Ok(None)
            }
            h2::PING => {
                if payload.len() != 8 {
                    return Err(CodecError::Http2("PING payload is not 8 bytes"));
                }
                if !h.has(h2::FLAG_ACK) {
                    h2::write_ping_ack(out, payload);
                }
                Ok(None)
            }
            h2::WINDOW_UPDATE => {
                if payload.len() != 4 {
                    return Err(CodecError::Http2("WINDOW_UPDATE payload is not 4 bytes"));
                }
                let inc = i64::from(h2::read_u31(payload));
                if h.stream == 0 {
                    self.conn_send_window += inc;
                } else if let Some(p) = self.partial.as_mut().filter(|p| p.id == h.stream) {
                    p.window += inc;
                }
                self.pump(out);
                Ok(None)
            }
            h2::RST_STREAM => {
                if payload.len() != 4 {
                    return Err(CodecError::Http2("RST_STREAM payload is not 4 bytes"));
                }
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                if self.partial.as_ref().is_some_and(|p| p.id == h.stream) {
                    self.partial = None;
                }
                match self.streams.remove(&h.stream) {
                    Some(_) => {
                        self.pump(out);
                        let c = self.completion(h.stream, ResponseClass::StreamReset(code));
                        Ok(Some(self.finish(c)))
                    }
                    // A reset after the response was complete changes nothing.
                    None => Ok(None),
                }
            }
            h2::GOAWAY => {
                if payload.len() < 8 {
                    return Err(CodecError::Http2("GOAWAY payload shorter than 8 bytes"));
                }
                let last = h2::read_u31(payload);
                let last = self.going_away.map_or(last, |old| old.min(last));
                self.going_away = Some(last);
                // Streams above `last` were never processed and never will be.
                let mut refused: Vec<u32> = self
                    .streams
                    .keys()
                    .copied()
                    .filter(|&id| id > last)
                    .collect();
                refused.sort_unstable();
                for id in refused {
                    self.streams.remove(&id);
                    if self.partial.as_ref().is_some_and(|p| p.id == id) {
                        self.partial = None;
                    }
                    let c = self.completion(id, ResponseClass::StreamReset(h2::REFUSED_STREAM));
                    self.ready.push_back(c);
                }
                // So were the calls still queued. Calls made from now on
                // wait in the queue until the connection is replaced.
                while let Some((id, _, _)) = self.queue.pop_front() {
                    let c = self.completion(id, ResponseClass::StreamReset(h2::REFUSED_STREAM));
                    self.ready.push_back(c);
                }
                Ok(None)
            }
            h2::PUSH_PROMISE => Err(CodecError::Http2("PUSH_PROMISE although push is disabled")),
            _ => Ok(None), // PRIORITY and unknown types are ignored
        }
    }

    /// Decodes a complete header block (the HPACK table must see them all).
    fn on_header_block(
        &mut self,
        stream: u32,
        block: &[u8],
        end_stream: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<Completion>, CodecError> {
        let mut status: Option<u16> = None;
        let mut grpc_status: Option<u8> = None;
        self.decoder
            .decode_with_cb(block, |name, value| match &*name {
                b":status" => status = parse_number(&value).map(|n| n.min(999) as u16),
                b"grpc-status" => {
                    grpc_status = Some(parse_number(&value).map_or(CODE_UNKNOWN, |n| {
                        if n < CODE_NAMES.len() as u64 {
                            n as u8
                        } else {
                            CODE_UNKNOWN
                        }
                    }));
                }
                _ => {}
            })
            .map_err(|e| CodecError::Hpack(e.to_string()))?;
        let Some(s) = self.streams.get_mut(&stream) else {
            return Ok(None);
        };
        if s.http_status == 0 {
            s.http_status = status.ok_or(CodecError::NoStatus)?;
        }
        if grpc_status.is_some() {
            s.grpc_status = grpc_status;
        }
        if end_stream {
            return Ok(Some(self.end_stream(stream, out)?));
        }
        Ok(None)
    }

    /// The server finished stream `id`: its slot goes to a queued call.
    fn end_stream(&mut self, id: u32, out: &mut Vec<u8>) -> Result<Completion, CodecError> {
        let s = self
            .streams
            .remove(&id)
            .ok_or(CodecError::Http2("END_STREAM on an unknown stream"))?;
        if s.http_status == 200 && !s.msg.complete() {
            return Err(CodecError::Grpc("stream ended inside a message"));
        }
        if self.partial.as_ref().is_some_and(|p| p.id == id) {
            // Answered before its request was all sent (an error status):
            // the rest is not needed (the server resets the stream).
            self.partial = None;
        }
        self.pump(out);
        let c = self.completion(id, s.class());
        Ok(self.finish(c))
    }

    fn on_data(&mut self, stream: u32, bytes: &[u8]) -> Result<(), CodecError> {
        if let Some(s) = self.streams.get_mut(&stream) {
            let scan = s.kind == OpKind::Read;
            s.msg.feed(bytes, scan)?;
        }
        Ok(())
    }
}

/// The framed request message: 5-byte gRPC prefix, then `GetRequest{key}`
/// or `SetRequest{key, value}` (ttl 0 and hot false are proto3 defaults,
/// so they are not sent).
fn encode_message(shared: &Shared, kind: OpKind, key: u64, out: &mut Vec<u8>) {
    let klen = shared.keys.len(key);
    let mut body = 1 + varint_len(klen as u64) + klen;
    if kind == OpKind::Write {
        body += 1 + varint_len(shared.value.len() as u64) + shared.value.len();
    }
    out.push(0);
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.push(0x0a); // field 1, length-delimited
    push_varint(out, klen as u64);
    shared.keys.write(key, out);
    if kind == OpKind::Write {
        out.push(0x12); // field 2, length-delimited
        push_varint(out, shared.value.len() as u64);
        out.extend_from_slice(&shared.value);
    }
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// ASCII digits as a number (at most 19 digits).
fn parse_number(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

impl ConnCodec for GrpcCodec {
    fn on_connect(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(h2::PREFACE);
        h2::write_settings(
            out,
            &[
                (h2::SETTINGS_ENABLE_PUSH, 0),
                (h2::SETTINGS_INITIAL_WINDOW_SIZE, h2::MAX_WINDOW),
            ],
        );
        h2::write_window_update(out, 0, h2::MAX_WINDOW - h2::DEFAULT_WINDOW);
    }

    #[inline]
    fn encode(&mut self, op: Op, out: &mut Vec<u8>) -> RequestId {
        let id = self.next_stream;
        self.next_stream += 2;
        if id > u64::from(h2::MAX_STREAM_ID) {
            // Out of stream ids: never sent; the connection is replaced
            // once its streams are done (see `finish`).
            return id;
        }
        let id32 = id as u32;
        if self.queue.is_empty() && self.can_start() {
            self.start(id32, op.kind, op.key, out);
        } else {
            self.queue.push_back((id32, op.kind, op.key));
        }
        id
    }

    fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Decoded, CodecError> {
        if let Some(c) = self.ready.pop_front() {
            let completion = self.finish(c);
            return Ok(Decoded::Done {
                consumed: 0,
                completion,
            });
        }
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.rx {
                Rx::Header => {
                    if rest.len() < h2::FRAME_HEADER_LEN {
                        return Ok(Decoded::NeedMore { consumed: pos });
                    }
                    let h = FrameHeader::parse(rest);
                    if h.len > OUR_MAX_FRAME {
                        return Err(CodecError::Http2(
                            "frame larger than SETTINGS_MAX_FRAME_SIZE",
                        ));
                    }
                    match h.kind {
                        h2::DATA => {
                            if self.block_open.is_some() {
                                return Err(CodecError::Http2("header block interrupted by DATA"));
                            }
                            if h.stream == 0 {
                                return Err(CodecError::Http2("DATA on stream 0"));
                            }
                            pos += h2::FRAME_HEADER_LEN;
                            // Flow control counts the whole payload, padding included.
                            self.recv_unacked += h.len as u64;
                            if self.recv_unacked >= self.recv_refill {
                                h2::write_window_update(out, 0, self.recv_unacked as u32);
                                self.recv_unacked = 0;
                            }
                            self.rx = Rx::Data {
                                stream: h.stream,
                                need_pad_len: h.has(h2::FLAG_PADDED),
                                left: h.len,
                                pad: 0,
                                end_stream: h.has(h2::FLAG_END_STREAM),
                            };
                        }
                        h2::HEADERS
                        | h2::CONTINUATION
                        | h2::SETTINGS
                        | h2::PING
                        | h2::WINDOW_UPDATE
                        | h2::RST_STREAM
                        | h2::GOAWAY
                        | h2::PUSH_PROMISE
                        | h2::PRIORITY => {
                            let total = h2::FRAME_HEADER_LEN + h.len;
                            if rest.len() < total {
                                return Ok(Decoded::NeedMore { consumed: pos });
                            }
                            pos += total;
                            let payload = &rest[h2::FRAME_HEADER_LEN..total];
                            if let Some(c) = self.on_frame(h, payload, out)? {
                                return Ok(Decoded::Done {
                                    consumed: pos,
                                    completion: c,
                                });
                            }
                            if let Some(c) = self.ready.pop_front() {
                                let completion = self.finish(c);
                                return Ok(Decoded::Done {
                                    consumed: pos,
                                    completion,
                                });
                            }
                        }
                        _ => {
                            if self.block_open.is_some() {
                                return Err(CodecError::Http2(
                                    "header block interrupted by another frame",
                                ));
                            }
                            pos += h2::FRAME_HEADER_LEN;
                            self.rx = Rx::Skip { left: h.len };
                        }
                    }
                }
                Rx::Data {
                    stream,
                    need_pad_len,
                    left,
                    pad,
                    end_stream,
                } => {
                    if need_pad_len {
                        let Some(&n) = rest.first() else {
                            return Ok(Decoded::NeedMore { consumed: pos });
                        };
                        let n = usize::from(n);
                        if left == 0 || n > left - 1 {
                            return Err(CodecError::Http2("DATA padding longer than the frame"));
                        }
                        pos += 1;
                        self.rx = Rx::Data {
                            stream,
                            need_pad_len: false,
                            left: left - 1,
                            pad: n,
                            end_stream,
                        };
                        continue;
                    }
                    let data_left = left - pad;
                    let take = data_left.min(rest.len());
                    if take > 0 {
                        self.on_data(stream, &rest[..take])?;
                    }
                    let skip_pad = if take == data_left {
                        pad.min(rest.len() - take)
                    } else {
                        0
                    };
                    pos += take + skip_pad;
                    let left = left - take - skip_pad;
                    if left > 0 {
                        self.rx = Rx::Data {
                            stream,
                            need_pad_len: false,
                            left,
                            pad: pad - skip_pad,
                            end_stream,
                        };
                        return Ok(Decoded::NeedMore { consumed: pos });
                    }
                    self.rx = Rx::Header;
                    if end_stream && self.streams.contains_key(&stream) {
                        let c = self.end_stream(stream, out)?;
                        return Ok(Decoded::Done {
                            consumed: pos,
                            completion: c,
                        });
                    }
                }
                Rx::Skip { left } => {
                    let take = left.min(rest.len());
                    pos += take;
                    if take < left {
                        self.rx = Rx::Skip { left: left - take };
                        return Ok(Decoded::NeedMore { consumed: pos });
                    }
                    self.rx = Rx::Header;
                }
            }
        }
    }

    fn on_eof(&mut self) -> Result<Option<Completion>, CodecError> {
        // HTTP/2 never delimits a response by closing: calls still open are
        // lost, and the engine counts them.
        Ok(None)
    }

    fn reset(&mut self) {
        *self = GrpcCodec::new(Arc::clone(&self.shared));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: &str = "127.0.0.1:10999";

    fn codec() -> GrpcCodec {
        codec_with(KeyNames::numbered("key:"), 5)
    }

    fn codec_with(keys: KeyNames, value_size: usize) -> GrpcCodec {
        GrpcTransport::new(&[AUTH.to_string()], None, &keys, value_size).codec(0)
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        h2::write_frame_header(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out
    }

    /// Splits client output into frames (after an optional preface).
    fn frames(mut b: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
        if let Some(rest) = b.strip_prefix(h2::PREFACE) {
            b = rest;
        }
        let mut v = Vec::new();
        while !b.is_empty() {
            let h = FrameHeader::parse(b);
            v.push((h, b[9..9 + h.len].to_vec()));
            b = &b[9 + h.len..];
        }
        v
    }

    /// The server's half: encodes responses with a real HPACK encoder.
    struct Server {
        enc: loona_hpack::Encoder<'static>,
    }

    impl Server {
        fn new() -> Server {
            Server {
                enc: loona_hpack::Encoder::new(),
            }
        }

        fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
            let block = self
                .enc
                .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
            let flags = h2::FLAG_END_HEADERS | if end_stream { h2::FLAG_END_STREAM } else { 0 };
            frame(h2::HEADERS, flags, stream, &block)
        }

        /// A complete unary response carrying `message` (protobuf bytes).
        fn response(&mut self, stream: u32, message: &[u8], grpc_status: &str) -> Vec<u8> {
            let mut out = self.headers(
                stream,
                &[(":status", "200"), ("content-type", "application/grpc")],
                false,
            );
            let mut data = vec![0];
            data.extend_from_slice(&(message.len() as u32).to_be_bytes());
            data.extend_from_slice(message);
            out.extend(frame(h2::DATA, 0, stream, &data));
            out.extend(self.headers(stream, &[("grpc-status", grpc_status)], true));
            out
        }

        fn trailers_only(&mut self, stream: u32, status: &str, grpc_status: &str) -> Vec<u8> {
            self.headers(
                stream,
                &[
                    (":status", status),
                    ("content-type", "application/grpc"),
                    ("grpc-status", grpc_status),
                    ("grpc-message", "nope"),
                ],
                true,
            )
        }
    }

    /// A hit: found=true, value "abc", hot=false.
    const HIT: &[u8] = &[0x08, 0x01, 0x12, 0x03, b'a', b'b', b'c'];

    /// Feeds `input` `step` bytes at a time the way the engine does.
    fn feed(c: &mut GrpcCodec, input: &[u8], step: usize) -> (Vec<Completion>, Vec<u8>) {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut done = Vec::new();
        for chunk in input.chunks(step.max(1)) {
            buf.extend_from_slice(chunk);
            loop {
                match c.decode(&buf, &mut out).unwrap() {
                    Decoded::NeedMore { consumed } => {
                        buf.drain(..consumed);
                        break;
                    }
                    Decoded::Done {
                        consumed,
                        completion,
                    } => {
                        buf.drain(..consumed);
                        done.push(completion);
                    }
                }
            }
        }
        assert!(buf.len() < 9 + OUR_MAX_FRAME);
        (done, out)
    }

    fn classes(done: &[Completion]) -> Vec<(RequestId, ResponseClass)> {
        done.iter().map(|c| (c.id, c.class)).collect()
    }

    fn read(key: u64) -> Op {
        Op {
            kind: OpKind::Read,
            key,
        }
    }

    fn write(key: u64) -> Op {
        Op {
            kind: OpKind::Write,
            key,
        }
    }

    #[test]
    fn connection_preface() {
        let mut out = Vec::new();
        codec().on_connect(&mut out);
        assert!(out.starts_with(h2::PREFACE));
        let f = frames(&out);
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].0.kind, f[0].0.stream), (h2::SETTINGS, 0));
        let settings: Vec<_> = h2::parse_settings(&f[0].1).unwrap().collect();
        assert_eq!(
            settings,
            vec![
                (h2::SETTINGS_ENABLE_PUSH, 0),
                (h2::SETTINGS_INITIAL_WINDOW_SIZE, h2::MAX_WINDOW)
            ]
        );
        assert_eq!((f[1].0.kind, f[1].0.stream), (h2::WINDOW_UPDATE, 0));
        assert_eq!(h2::read_u31(&f[1].1), h2::MAX_WINDOW - h2::DEFAULT_WINDOW);
    }

    #[test]
    fn requests_are_standard_grpc() {
        let mut c = codec();
        let mut out = Vec::new();
        assert_eq!(c.encode(read(42), &mut out), 1);
        assert_eq!(c.encode(write(7), &mut out), 3);
        assert_eq!(c.encode(read(42), &mut out), 5);
        let f = frames(&out);
        assert_eq!(f.len(), 6);
        let mut dec = loona_hpack::Decoder::new();
        let mut sizes = Vec::new();
        for (i, (path, stream)) in [(GET_PATH, 1), (SET_PATH, 3), (GET_PATH, 5)]
            .into_iter()
            .enumerate()
        {
            let (h, block) = &f[2 * i];
            assert_eq!(
                (h.kind, h.flags, h.stream),
                (h2::HEADERS, h2::FLAG_END_HEADERS, stream)
            );
            sizes.push(block.len());
            let fields: Vec<(String, String)> = dec
                .decode(block)
                .unwrap()
                .into_iter()
                .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
                .collect();
            let get = |name: &str| {
                fields
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(get(":method"), Some("POST"));
            assert_eq!(get(":scheme"), Some("http"));
            assert_eq!(get(":path"), Some(path));
            assert_eq!(get(":authority"), Some(AUTH));
            assert_eq!(get("content-type"), Some("application/grpc"));
            assert_eq!(get("te"), Some("trailers"));
            assert!(get("user-agent").unwrap().starts_with("nexuscache-bench/"));
            // Pseudo-headers come first.
            assert!(fields[..4].iter().all(|(n, _)| n.starts_with(':')));
            let (d, data) = &f[2 * i + 1];
            assert_eq!(
                (d.kind, d.flags, d.stream),
                (h2::DATA, h2::FLAG_END_STREAM, stream)
            );
            assert_eq!(data[0], 0, "uncompressed");
            let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
            assert_eq!(len, data.len() - 5);
            if path == GET_PATH {
                assert_eq!(&data[5..], b"\x0a\x06key:42");
            } else {
                let value = make_value(5);
                let mut expect = b"\x0a\x05key:7\x12\x05".to_vec();
                expect.extend_from_slice(&value);
                assert_eq!(&data[5..], &expect[..]);
            }
        }
        // The third request's fields are all indexed by now.
        assert!(sizes[2] <= 7, "{sizes:?}");
    }

    #[test]
    fn every_call_carries_the_bearer_token() {
        let keys = KeyNames::numbered("key:");
        let token = "tok-0123456789abcdef";
        let mut c = GrpcTransport::new(&[AUTH.to_string()], Some(token), &keys, 5).codec(0);
        let mut out = Vec::new();
        for op in [read(1), write(2), read(3), write(4)] {
            c.encode(op, &mut out);
        }
        let mut dec = loona_hpack::Decoder::new();
        let headers: Vec<_> = frames(&out)
            .into_iter()
            .filter(|(h, _)| h.kind == h2::HEADERS)
            .collect();
        assert_eq!(headers.len(), 4);
        let bearer = format!("Bearer {token}");
        for (_, block) in &headers {
            let fields = dec.decode(block).unwrap();
            let auth: Vec<_> = fields
                .iter()
                .filter(|(n, _)| n.as_slice() == b"authorization")
                .map(|(_, v)| v.as_slice())
                .collect();
            assert_eq!(auth, [bearer.as_bytes()]);
            // Regular fields after the pseudo-headers.
            assert!(fields[..4].iter().all(|(n, _)| n.starts_with(b":")));
        }
        // Without a token no call has the field.
        let mut c = codec();
        let mut out = Vec::new();
        c.encode(read(1), &mut out);
        let mut dec = loona_hpack::Decoder::new();
        for (h, block) in frames(&out) {
            if h.kind == h2::HEADERS {
                let fields = dec.decode(&block).unwrap();
                assert!(fields.iter().all(|(n, _)| n.as_slice() != b"authorization"));
            }
        }
    }

    #[test]
    fn listed_keys_are_sent_raw() {
        let keys = KeyNames::list(vec![b"a b/%".to_vec(), vec![0xff; 200]]);
        let mut c = codec_with(keys, 1);
        let mut out = Vec::new();
        c.encode(read(0), &mut out);
        c.encode(read(1), &mut out);
        let f = frames(&out);
        assert_eq!(&f[1].1[5..], b"\x0a\x05a b/%");
        // A 200-byte key needs a two-byte length varint.
        assert_eq!(&f[3].1[5..8], &[0x0a, 0xc8, 0x01]);
        assert_eq!(f[3].1.len(), 5 + 3 + 200);
    }

    #[test]
    fn responses_at_every_split_point() {
        let mut s = Server::new();
        let mut input = Vec::new();
        input.extend(frame(
            h2::SETTINGS,
            0,
            0,
            &[0, 3, 0, 0, 2, 0, 0, 4, 0, 0x10, 0, 0],
        ));
        // Stream 3 (a miss: empty message) answers before stream 1 (a hit).
        input.extend(s.response(3, &[], "0"));
        input.extend(s.response(1, HIT, "0"));
        input.extend(s.response(5, &[], "0")); // Set OK
        input.extend(s.trailers_only(7, "200", "14"));
        input.extend(s.trailers_only(9, "503", "14"));
        input.extend(s.response(11, &[], "5")); // NOT_FOUND on a Get: a miss
        input.extend(frame(h2::RST_STREAM, 0, 13, &[0, 0, 0, 2]));
        input.extend(s.response(15, &[0x08, 0x00], "0")); // explicit found=false
        for step in [1, 2, 3, 7, 13, input.len()] {
            let mut c = codec();
            let mut out = Vec::new();
            for op in [
                read(1),
                read(2),
                write(3),
                read(4),
                write(5),
                read(6),
                read(7),
                read(8),
            ] {
                c.encode(op, &mut out);
            }
            let (done, replies) = feed(&mut c, &input, step);
            assert_eq!(
                classes(&done),
                vec![
                    (3, ResponseClass::NotFound),
                    (1, ResponseClass::Ok),
                    (5, ResponseClass::Ok),
                    (7, ResponseClass::GrpcStatus(14)),
                    (9, ResponseClass::ServerError(503)),
                    (11, ResponseClass::NotFound),
                    (13, ResponseClass::StreamReset(2)),
                    (15, ResponseClass::NotFound),
                ],
                "step {step}"
            );
            assert!(done.iter().all(|c| !c.close_after));
            // The SETTINGS were acknowledged.
            let f = frames(&replies);
            assert_eq!((f[0].0.kind, f[0].0.flags), (h2::SETTINGS, h2::FLAG_ACK));
            assert!(c.streams.is_empty());
        }
    }

    #[test]
    fn get_found_is_read_from_any_field_order_and_split() {
        // value (field 2) of 300 bytes first, unknown fields, then found.
        let mut msg = vec![0x12, 0xac, 0x02];
        msg.extend(std::iter::repeat_n(b'v', 300));
        msg.extend([0x18, 0x01]); // hot = true
        msg.extend([0x25, 1, 2, 3, 4]); // field 4, fixed32
        msg.extend([0x29, 1, 2, 3, 4, 5, 6, 7, 8]); // field 5, fixed64
        msg.extend([0x08, 0x81, 0x00]); // found = 1 as a two-byte varint
        for step in [1, 5, 64] {
            let mut s = Server::new();
            let mut c = codec();
            c.encode(read(1), &mut Vec::new());
            let (done, _) = feed(&mut c, &s.response(1, &msg, "0"), step);
            assert_eq!(classes(&done), vec![(1, ResponseClass::Ok)]);
        }
        let mut found = false;
        let mut scan = Scan::START;
        assert!(scan.feed(&[0x0b], &mut found).is_err(), "group wire type");
        let mut scan = Scan::START;
        assert!(scan.feed(&[0x00], &mut found).is_err(), "field 0");
        let mut scan = Scan::START;
        let overlong: Vec<u8> = [0x08].into_iter().chain([0xff; 11]).collect();
        assert!(
            scan.feed(&overlong, &mut found).is_err(),
            "varint over 10 bytes"
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        for (msg, grpc_prefix) in [
            (vec![0x08], 0u8),        // message ends inside a varint
            (vec![0x12, 0x05, 1], 0), // ...inside a length-delimited field
            (vec![0x08, 0x01], 1),    // compressed flag
        ] {
            let mut s = Server::new();
            let mut c = codec();
            c.encode(read(1), &mut Vec::new());
            let mut input = s.headers(1, &[(":status", "200")], false);
            let mut data = vec![grpc_prefix];
            data.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            data.extend_from_slice(&msg);
            input.extend(frame(h2::DATA, 0, 1, &data));
            input.extend(s.headers(1, &[("grpc-status", "0")], true));
            let mut out = Vec::new();
            let mut r = Ok(Decoded::NeedMore { consumed: 0 });
            let mut pos = 0;
            while pos < input.len() {
                r = c.decode(&input[pos..], &mut out);
                match r {
                    Ok(Decoded::NeedMore { consumed }) | Ok(Decoded::Done { consumed, .. }) => {
                        pos += consumed;
                        if consumed == 0 {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            assert!(matches!(r, Err(CodecError::Grpc(_))), "{msg:?}: {r:?}");
        }
        // A stream that ends in the middle of a message's prefix.
        let mut s = Server::new();
        let mut c = codec();
        c.encode(read(1), &mut Vec::new());
        let mut input = s.headers(1, &[(":status", "200")], false);
        input.extend(frame(h2::DATA, h2::FLAG_END_STREAM, 1, &[0, 0, 0]));
        let mut pos = 0;
        let err = loop {
            match c.decode(&input[pos..], &mut Vec::new()) {
                Ok(Decoded::NeedMore { consumed }) => pos += consumed,
                Ok(Decoded::Done { .. }) => panic!("completed"),
                Err(e) => break e,
            }
        };
        assert_eq!(err, CodecError::Grpc("stream ended inside a message"));
    }

    #[test]
    fn padding_priority_and_continuation() {
        let mut s = Server::new();
        let mut c = codec();
        c.encode(read(1), &mut Vec::new());
        // HEADERS padded + priority, split over a CONTINUATION.
        let block = s.enc.encode([(&b":status"[..], &b"200"[..])]);
        let mut p = vec![3]; // pad length
        p.extend([0, 0, 0, 0, 16]); // priority
        p.extend_from_slice(&block[..1]);
        p.extend([0, 0, 0]);
        let mut input = frame(h2::HEADERS, h2::FLAG_PADDED | h2::FLAG_PRIORITY, 1, &p);
        input.extend(frame(
            h2::CONTINUATION,
            h2::FLAG_END_HEADERS,
            1,
            &block[1..],
        ));
        // Padded DATA with the message, then an empty padded DATA, then trailers.
        let mut d = vec![4, 0, 0, 0, 0, HIT.len() as u8];
        d.extend_from_slice(HIT);
        d.extend([0; 4]);
        input.extend(frame(h2::DATA, h2::FLAG_PADDED, 1, &d));
        input.extend(frame(h2::DATA, h2::FLAG_PADDED, 1, &[2, 0, 0]));
        // An unknown frame type is skipped.
        input.extend(frame(0xfa, 0, 0, b"whatever"));
        input.extend(s.headers(1, &[("grpc-status", "0")], true));
        for step in [1, 4, input.len()] {
            let mut c2 = codec();
            c2.encode(read(1), &mut Vec::new());
            let (done, _) = feed(&mut c2, &input, step);
            assert_eq!(classes(&done), vec![(1, ResponseClass::Ok)], "step {step}");
        }
        // Another frame inside a header block is a protocol error.
        let mut bad = frame(h2::HEADERS, 0, 1, &block);
        bad.extend(frame(h2::PING, 0, 0, &[0; 8]));
        let mut pos = 0;
        let err = loop {
            match c.decode(&bad[pos..], &mut Vec::new()) {
                Ok(Decoded::NeedMore { consumed }) => pos += consumed,
                Ok(Decoded::Done { .. }) => panic!("completed"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, CodecError::Http2(_)), "{err}");
    }

    #[test]
    fn ping_settings_and_receive_window() {
        let mut c = codec();
        let mut input = frame(h2::PING, 0, 0, b"abcdefgh");
        input.extend(frame(h2::PING, h2::FLAG_ACK, 0, b"ignored!"));
        input.extend(frame(h2::SETTINGS, h2::FLAG_ACK, 0, &[]));
        let (done, out) = feed(&mut c, &input, 3);
        assert!(done.is_empty());
        let f = frames(&out);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].0.kind, f[0].0.flags), (h2::PING, h2::FLAG_ACK));
        assert_eq!(f[0].1, b"abcdefgh");

        // Big responses: the connection window is topped up once enough
        // DATA arrived (half the window; lowered here to keep the test small).
        let mut s = Server::new();
        let mut c = codec();
        c.recv_refill = 40_000;
        // A Set, so the filler bytes are skipped, not parsed as protobuf.
        c.encode(write(1), &mut Vec::new());
        let mut input = s.headers(1, &[(":status", "200")], false);
        let value = vec![b'x'; 16_000];
        let mut data = vec![0];
        data.extend_from_slice(&(5 * 16_000u32 - 5).to_be_bytes());
        data.extend_from_slice(&value[5..]);
        input.extend(frame(h2::DATA, 0, 1, &data));
        for _ in 0..4 {
            input.extend(frame(h2::DATA, 0, 1, &value));
        }
        input.extend(s.headers(1, &[("grpc-status", "0")], true));
        let (done, out) = feed(&mut c, &input, 5000);
        assert_eq!(classes(&done), vec![(1, ResponseClass::Ok)]);
        let updates: Vec<u32> = frames(&out)
            .into_iter()
            .filter(|(h, _)| h.kind == h2::WINDOW_UPDATE && h.stream == 0)
            .map(|(_, p)| h2::read_u31(&p))
            .collect();
        assert_eq!(updates, vec![48_000]);
    }

    #[test]
    fn max_concurrent_streams_queues_calls() {
        let mut s = Server::new();
        let mut c = codec();
        let (_, _) = feed(&mut c, &frame(h2::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 2]), 100);
        let mut out = Vec::new();
        let ids: Vec<_> = (0..5).map(|k| c.encode(read(k), &mut out)).collect();
        assert_eq!(ids, vec![1, 3, 5, 7, 9]);
        let started = |b: &[u8]| {
            frames(b)
                .into_iter()
                .filter(|(h, _)| h.kind == h2::HEADERS)
                .map(|(h, _)| h.stream)
                .collect::<Vec<_>>()
        };
        assert_eq!(started(&out), vec![1, 3]);
        let (done, out) = feed(&mut c, &s.response(3, HIT, "0"), 1000);
        assert_eq!(classes(&done), vec![(3, ResponseClass::Ok)]);
        assert_eq!(started(&out), vec![5]);
        let mut input = s.response(1, HIT, "0");
        input.extend(s.response(5, HIT, "0"));
        let (done, out) = feed(&mut c, &input, 1000);
        assert_eq!(done.len(), 2);
        assert_eq!(started(&out), vec![7, 9]);
    }

    #[test]
    fn flow_control_splits_large_requests() {
        // A 100 kB value: more than the default 65 535-byte windows.
        let mut s = Server::new();
        let mut c = codec_with(KeyNames::numbered("k"), 100_000);
        let mut out = Vec::new();
        c.encode(write(1), &mut out);
        c.encode(read(2), &mut out); // waits behind the partial call
        let data_of = |b: &[u8], stream: u32| -> (usize, bool) {
            let mut n = 0;
            let mut end = false;
            for (h, p) in frames(b) {
                if h.kind == h2::DATA && h.stream == stream {
                    assert!(p.len() <= h2::DEFAULT_MAX_FRAME);
                    n += p.len();
                    end |= h.has(h2::FLAG_END_STREAM);
                }
            }
            (n, end)
        };
        let first = data_of(&out, 1);
        assert_eq!(first, (65_535, false));
        assert!(!frames(&out).iter().any(|(h, _)| h.stream == 3));
        // The server raises its windows: stream via SETTINGS, connection
        // via WINDOW_UPDATE.
        let mut input = frame(h2::SETTINGS, 0, 0, &[0, 4, 0, 0x10, 0, 0]);
        input.extend(frame(h2::WINDOW_UPDATE, 0, 0, &1_000_000u32.to_be_bytes()));
        let (_, out) = feed(&mut c, &input, 1000);
        let total = 5 + (1 + 1 + 2) + (1 + 3 + 100_000); // prefix, key field, value field
        assert_eq!(data_of(&out, 1), (total - 65_535, true));
        assert!(data_of(&out, 3).1, "the queued call went out");
        let mut input = s.response(1, &[], "0");
        input.extend(s.response(3, HIT, "0"));
        let (done, _) = feed(&mut c, &input, 1000);
        assert_eq!(
            classes(&done),
            vec![(1, ResponseClass::Ok), (3, ResponseClass::Ok)]
        );

        // An early error answer ends the partial call and frees the queue.
        let mut s = Server::new();
        let mut c = codec_with(KeyNames::numbered("k"), 100_000);
        let mut out = Vec::new();
        c.encode(write(1), &mut out);
        c.encode(read(2), &mut out);
        let (done, out) = feed(&mut c, &s.trailers_only(1, "200", "8"), 1000);
        assert_eq!(classes(&done), vec![(1, ResponseClass::GrpcStatus(8))]);
        // Stream 3 opened, but the connection window is spent: its DATA
        // follows the server's WINDOW_UPDATE.
        assert!(frames(&out)
            .iter()
            .any(|(h, _)| h.kind == h2::HEADERS && h.stream == 3));
        assert_eq!(data_of(&out, 3), (0, false));
        let (_, out) = feed(&mut c, &frame(h2::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]), 100);
        assert_eq!(data_of(&out, 3), (5 + 1 + 1 + 2, true));
    }

    #[test]
    fn goaway_refuses_later_streams_and_ends_the_connection() {
        let mut s = Server::new();
        let mut c = codec();
        let mut out = Vec::new();
        for k in 0..3 {
            c.encode(read(k), &mut out);
        }
        // Streams 1 and 3 will be answered; 5 was not processed.
        let mut input = frame(h2::GOAWAY, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0]);
        input.extend(s.response(1, HIT, "0"));
        input.extend(s.response(3, HIT, "0"));
        let mut out = Vec::new();
        let mut pos = 0;
        let mut done = Vec::new();
        loop {
            match c.decode(&input[pos..], &mut out).unwrap() {
                Decoded::NeedMore { consumed } => {
                    pos += consumed;
                    break;
                }
                Decoded::Done {
                    consumed,
                    completion,
                } => {
                    pos += consumed;
                    done.push(completion);
                    // The engine sends a new call per completion: it must
                    // not start on a going-away connection.
                    let before = out.len();
                    c.encode(read(9), &mut out);
                    assert_eq!(out.len(), before);
                }
            }
        }
        assert_eq!(
            done.iter()
                .map(|c| (c.id, c.class, c.close_after))
                .collect::<Vec<_>>(),
            vec![
                (5, ResponseClass::StreamReset(h2::REFUSED_STREAM), false),
                (1, ResponseClass::Ok, false),
                (3, ResponseClass::Ok, true),
            ]
        );
        assert_eq!(pos, input.len());
    }

    #[test]
    fn protocol_errors() {
        let check = |input: Vec<u8>| {
            let mut c = codec();
            c.encode(read(1), &mut Vec::new());
            let mut pos = 0;
            loop {
                match c.decode(&input[pos..], &mut Vec::new()) {
                    Ok(Decoded::NeedMore { consumed: 0 }) => {
                        panic!("no error for {input:?}")
                    }
                    Ok(Decoded::NeedMore { consumed }) | Ok(Decoded::Done { consumed, .. }) => {
                        pos += consumed
                    }
                    Err(e) => return e,
                }
            }
        };
        let mut big = Vec::new();
        h2::write_frame_header(&mut big, OUR_MAX_FRAME + 1, h2::DATA, 0, 1);
        assert!(matches!(check(big), CodecError::Http2(_)));
        assert!(matches!(
            check(frame(h2::PUSH_PROMISE, 4, 1, &[0, 0, 0, 2])),
            CodecError::Http2(_)
        ));
        assert!(matches!(
            check(frame(h2::DATA, 0, 0, &[])),
            CodecError::Http2(_)
        ));
        assert!(matches!(
            check(frame(h2::SETTINGS, 0, 0, &[0; 5])),
            CodecError::Http2(_)
        ));
        assert!(matches!(
            check(frame(h2::PING, 0, 0, &[0; 4])),
            CodecError::Http2(_)
        ));
        assert!(matches!(
            check(frame(h2::HEADERS, 4, 1, &[0xff, 0xff])),
            CodecError::Hpack(_)
        ));
        // First header block without :status.
        let block = loona_hpack::Encoder::new().encode([(&b"grpc-status"[..], &b"0"[..])]);
        assert_eq!(
            check(frame(h2::HEADERS, 5, 1, &block)),
            CodecError::NoStatus
        );
    }

    #[test]
    fn reset_starts_a_fresh_connection() {
        let mut c = codec();
        let mut out = Vec::new();
        c.encode(read(1), &mut out);
        c.encode(read(1), &mut out);
        c.reset();
        let mut out = Vec::new();
        assert_eq!(c.encode(read(1), &mut out), 1);
        // The first block on a fresh connection carries literals again.
        assert!(frames(&out)[0].1.len() > 20);
    }

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u64::MAX] {
            let mut out = Vec::new();
            push_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut scan = Scan::Varint {
                field: 1,
                acc: 0,
                shift: 0,
            };
            let mut found = false;
            scan.feed(&out, &mut found).unwrap();
            assert_eq!(found, v != 0);
            assert_eq!(scan, Scan::START);
        }
        assert_eq!(parse_number(b"200"), Some(200));
        assert_eq!(parse_number(b""), None);
        assert_eq!(parse_number(b"2x"), None);
    }
}
