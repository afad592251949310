//! One client connection on one core: read, frame, authenticate, route,
//! execute, answer.
//!
//! Every complete request already in the buffer is answered before the next
//! read, and their responses leave in one write: pipelined requests are
//! answered in order at the cost of one syscall per batch. A batch stops
//! once its unsent responses pass `Config::max_unsent_bytes`, and nothing
//! more is read or answered until they are written, so a client that never
//! reads holds at most that cap plus one response plus its input buffer.
//! Buffers that grew for one large request shrink back once drained, and
//! what each connection holds is reported to the core's
//! `connection_buffer_bytes` gauge.

use std::borrow::Cow;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use tracing::debug;

use super::endpoint::{self, Endpoint};
use super::mutate::{self, Body};
use super::parse::{decode_chunked, parse_head, BodyFraming, Method, RequestHead, MAX_HEAD_BYTES};
use super::response::{self, CONTINUE, OCTETS, PROMETHEUS, TEXT};
use super::route::{route, Command, Style};
use crate::chunked;
use crate::error::ApiError;
use crate::metrics::{render, BufferCharge, OpKind};
use crate::ops::{Hit, OpError};
use crate::runtime::core::{Core, Deadline};
use crate::sockets;

/// Size of a connection's input and output buffers while idle; what they
/// shrink back to after a larger request or batch.
pub const INITIAL_BUFFER: usize = 16 * 1024;

pub async fn serve_connection(core: Rc<Core>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (id, deadline) = core.register_connection(stream.as_raw_fd());
    let mut buffers = Buffers::new(&core);
    if let Err(e) = run(&core, &mut stream, &deadline, &mut buffers).await {
        debug!(core = core.id, "connection ended: {e}");
    }
    drop(buffers);
    core.unregister_connection(id);
}

/// Bytes received but not yet consumed live in `buf[start..end]`.
struct InBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes the request at the front needs in all (head and
    /// Content-Length body), when known: room is made for it at once
    /// instead of doubling towards it.
    want: usize,
}

impl InBuf {
    fn new() -> InBuf {
        InBuf {
            buf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            want: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Between requests: a buffer that grew for one large request goes back
    /// to the initial size once what it still holds fits there.
    fn settle(&mut self) {
        if self.buf.len() > INITIAL_BUFFER
            && self.end - self.start <= INITIAL_BUFFER
            && self.want <= INITIAL_BUFFER
        {
            let mut small = vec![0; INITIAL_BUFFER];
            small[..self.end - self.start].copy_from_slice(self.pending());
            self.buf = small;
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Bytes [`InBuf::spare`] would add to the buffer right now (the same
    /// decision, without making it).
    fn growth_needed(&self) -> usize {
        let len = self.buf.len();
        let (start, end) = if self.start == self.end {
            (0, 0)
        } else {
            (self.start, self.end)
        };
        if end != len && len - start >= self.want {
            return 0;
        }
        let needed = if self.want > len {
            self.want
        } else if end - start == len {
            len * 2
        } else {
            len
        };
        needed - len
    }

    /// Room for the next read: reuse consumed space first, grow if a single
    /// request is larger than the buffer (to its known size if it has one).
    fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() || self.buf.len() - self.start < self.want {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let needed = if self.want > self.buf.len() {
                self.want
            } else if self.end == self.buf.len() {
                self.buf.len() * 2
            } else {
                self.buf.len()
            };
            self.buf.resize(needed, 0);
        }
        &mut self.buf[self.end..]
    }
}

/// A connection's buffers and what of them was last reported to the core's
/// gauge; dropping it reports their release.
struct Buffers<'a> {
    core: &'a Core,
    input: InBuf,
    out: Vec<u8>,
    charge: BufferCharge,
}

impl<'a> Buffers<'a> {
    fn new(core: &'a Core) -> Buffers<'a> {
        let mut buffers = Buffers {
            core,
            input: InBuf::new(),
            out: Vec::with_capacity(INITIAL_BUFFER),
            charge: BufferCharge::default(),
        };
        buffers.account();
        buffers
    }

    /// Report the change in bytes held since the last report.
    fn account(&mut self) {
        let held = self.input.buf.len() + self.out.capacity();
        self.core
            .metrics
            .charge_connection_buffers(&mut self.charge, held);
    }

    /// After a write: an output buffer that grew for a large batch goes
    /// back to the initial size.
    fn settle(&mut self) {
        self.out.clear();
        if self.out.capacity() > INITIAL_BUFFER {
            self.out = Vec::with_capacity(INITIAL_BUFFER);
        }
        self.input.settle();
    }
}

impl Drop for Buffers<'_> {
    fn drop(&mut self) {
        self.core
            .metrics
            .charge_connection_buffers(&mut self.charge, 0);
    }
}

/// Per-request framing state kept across reads, so that a request that
/// arrives a few bytes per read costs O(new bytes) per read, not a parse
/// of everything received so far (up to a 64 KiB head) on every read.
#[derive(Default)]
struct Framing {
    continue_sent: bool,
    /// How far the chunked body at the front has been validated.
    chunked: chunked::Progress,
    /// Bytes the request takes in all, once its head gave a Content-Length:
    /// the head is parsed again only when they are all in.
    complete_at: usize,
    /// While a chunked body arrives: its head's length and the body limit,
    /// so a read validates only the new body bytes.
    chunked_after: Option<(usize, u64)>,
    /// How far the head has been searched for its end without finding it,
    /// once a parse found it incomplete (until then a request is parsed at
    /// once: most heads arrive whole, and need no search of their own).
    head_scanned: Option<usize>,
}

impl Framing {
    /// Whether parsing the request at the front of `pending` can get
    /// further than last time; cheap, and resumes where it stopped.
    fn worth_parsing(&mut self, pending: &[u8]) -> bool {
        if pending.len() < self.complete_at {
            return false;
        }
        if let Some((head_len, limit)) = self.chunked_after {
            // On a copy: once the body is complete (or bad) the full parse
            // below redoes the last step from the saved progress.
            let mut probe = self.chunked;
            let body = pending.get(head_len..).unwrap_or_default();
            return match chunked::advance(body, &mut probe, limit, chunked::max_wire_bytes(limit)) {
                Ok(None) => {
                    self.chunked = probe;
                    false
                }
                Ok(Some(_)) | Err(_) => true,
            };
        }
        match &mut self.head_scanned {
            None => true,
            Some(scanned) => pending.len() > MAX_HEAD_BYTES || head_ended(pending, scanned),
        }
    }
}

/// Whether `buf` holds the empty line that ends a request head (CRLF or
/// bare LF line ends, as the head parser accepts), searching only what
/// `scanned` says was not searched yet.
fn head_ended(buf: &[u8], scanned: &mut usize) -> bool {
    // A line end split over the last search's edge is found again.
    let from = scanned.saturating_sub(2);
    let found = (from..buf.len()).any(|i| {
        buf[i] == b'\n'
            && match buf.get(i + 1) {
                Some(b'\n') => true,
                Some(b'\r') => buf.get(i + 2) == Some(&b'\n'),
                _ => false,
            }
    });
    if !found {
        *scanned = buf.len();
    }
    found
}

async fn run(
    core: &Core,
    stream: &mut TcpStream,
    deadline: &Deadline,
    buffers: &mut Buffers<'_>,
) -> io::Result<()> {
    let max_unsent = core.config.max_unsent_bytes();
    let mut framing = Framing::default();
    let mut partial_since: Option<Instant> = None;
    loop {
        let mut close = false;
        let mut over_cap = false;
        while !buffers.input.is_empty() {
            if buffers.out.len() >= max_unsent
                || (!buffers.out.is_empty() && core.connection_memory_exhausted(0))
            {
                // Answer the rest only once these left: a client that
                // pipelines and never reads is held to the cap, and
                // while the core's connections hold their whole budget
                // nobody adds to it before writing what it has.
                over_cap = true;
                break;
            }
            if buffers.out.is_empty() && core.connection_memory_exhausted(0) {
                if let Err(e) = core.wait_for_connection_memory(0).await {
                    response::write_error(&mut buffers.out, &e, true);
                    close = true;
                    break;
                }
            }
            let step = next_request(
                core,
                buffers.input.pending(),
                &mut buffers.out,
                &mut framing,
            )
            .await;
            match step {
                Step::Answered {
                    consumed,
                    keep_alive,
                } => {
                    buffers.input.start += consumed;
                    buffers.input.want = 0;
                    framing = Framing::default();
                    // The core's budget check above must see this batch grow.
                    buffers.account();
                    if !keep_alive {
                        close = true;
                        break;
                    }
                }
                Step::NeedMore { want } => {
                    buffers.input.want = want;
                    break;
                }
                Step::Close => {
                    close = true;
                    break;
                }
            }
        }
        buffers.account();
        if !buffers.out.is_empty() {
            sockets::write_out(stream, &buffers.out, deadline, core.config.idle_timeout()).await?;
        }
        if close {
            if !buffers.input.is_empty() {
                linger(stream, deadline, &mut buffers.input.buf).await;
            }
            return Ok(());
        }
        buffers.settle();
        buffers.account();
        if over_cap {
            continue;
        }
        // A started request must be complete within the header timeout as a
        // whole (not per read), or a client trickling bytes could hold the
        // connection forever. The core's reaper enforces the deadline.
        let now = Instant::now();
        deadline.set(Some(core.next_read_deadline(
            now,
            !buffers.input.is_empty(),
            &mut partial_since,
        )?));
        let growth = buffers.input.growth_needed();
        if growth > 0 && core.connection_memory_exhausted(growth) {
            if let Err(e) = core.wait_for_connection_memory(growth).await {
                buffers.out.clear();
                response::write_error(&mut buffers.out, &e, true);
                sockets::write_out(stream, &buffers.out, deadline, core.config.idle_timeout())
                    .await?;
                return Ok(());
            }
        }
        let spare = buffers.input.spare();
        let n = stream.read(spare).await;
        buffers.account();
        let n = n?;
        if n == 0 {
            return Ok(());
        }
        buffers.input.end += n;
    }
}

/// Closes a connection whose client may still be sending (a refused body):
/// the answer is followed by a FIN, and what the client still sends is read
/// and dropped for a moment, because closing a socket with unread bytes
/// sends a reset that can destroy the answer before the client reads it
/// (RFC 9112, section 9.6). Bounded: at most [`LINGER`] and
/// [`LINGER_BYTES`].
async fn linger(stream: &mut TcpStream, deadline: &Deadline, scratch: &mut [u8]) {
    const LINGER: Duration = Duration::from_secs(1);
    const LINGER_BYTES: usize = 1 << 20;
    // SAFETY: the fd belongs to this live connection; shutdown(2) neither
    // closes nor invalidates it.
    unsafe {
        libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR);
    }
    // The core's reaper ends the wait (its shutdown makes the read return 0).
    deadline.set(Some(Instant::now() + LINGER));
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match stream.read(scratch).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

enum Step {
    Answered {
        consumed: usize,
        keep_alive: bool,
    },
    /// `want`: bytes the whole request takes, when known (0 otherwise).
    NeedMore {
        want: usize,
    },
    Close,
}

/// Frame and answer the request at the front of `pending`, if complete.
async fn next_request(
    core: &Core,
    pending: &[u8],
    out: &mut Vec<u8>,
    framing: &mut Framing,
) -> Step {
    if !framing.worth_parsing(pending) {
        return Step::NeedMore {
            want: framing.complete_at,
        };
    }
    let head = match parse_head(pending) {
        Ok(Some(head)) => head,
        Ok(None) => {
            // No end of head in what arrived: later reads search only
            // their new bytes for it before parsing again.
            framing.head_scanned = Some(pending.len());
            return Step::NeedMore { want: 0 };
        }
        Err(e) => return refuse(core, &e, out, OpKind::Other),
    };
    let response_start = out.len();
    let is_head = head.method == Method::Head;
    let step = answer(core, &head, pending, out, framing).await;
    if is_head {
        response::strip_body(out, response_start);
    }
    step
}

async fn answer(
    core: &Core,
    head: &RequestHead<'_>,
    pending: &[u8],
    out: &mut Vec<u8>,
    framing: &mut Framing,
) -> Step {
    let found = Endpoint::find(head.path());
    let op_kind = endpoint::op_kind(found, head.method);
    let after_head = &pending[head.head_len..];
    let needs_token = found.is_none_or(|f| f.endpoint.needs_token(core.config.metrics_public));
    if needs_token {
        if let Err(e) = core.config.credentials.check_bearer(head.authorization) {
            return refuse_unauthenticated(core, head, after_head, ApiError::Auth(e), out, op_kind);
        }
    }
    let limit = endpoint::max_body(found, &core.limits);
    let (body, consumed): (Cow<'_, [u8]>, usize) = match head.framing {
        BodyFraming::Length(len) if len > limit => {
            let error = match found {
                Some(f) => f.endpoint.body_error(&core.limits, len),
                None => ApiError::BodyTooLarge { len, limit },
            };
            return refuse(core, &error, out, op_kind);
        }
        BodyFraming::Length(len) => {
            // len <= limit, which fits in memory.
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if after_head.len() < len {
                let want = head.head_len.saturating_add(len);
                framing.complete_at = want;
                return await_body(head, want, out, framing);
            }
            (Cow::Borrowed(&after_head[..len]), head.head_len + len)
        }
        BodyFraming::Chunked => match decode_chunked(after_head, &mut framing.chunked, limit) {
            Ok(Some((body, used))) => (Cow::Owned(body), head.head_len + used),
            Ok(None) => {
                framing.chunked_after = Some((head.head_len, limit));
                return await_body(head, 0, out, framing);
            }
            Err(e) => return refuse(core, &e, out, op_kind),
        },
    };
    let keep_alive = head.keep_alive && !core.is_draining();
    let started = Instant::now();
    let status = match route(head, found, &body, &core.limits) {
        Ok(command) => execute(core, command, out, !keep_alive).await,
        Err(e) => {
            response::write_error(out, &e, !keep_alive);
            if e.closes_connection() {
                core.metrics
                    .record_request(op_kind, e.status(), started.elapsed());
                return Step::Close;
            }
            e.status()
        }
    };
    core.metrics
        .record_request(op_kind, status, started.elapsed());
    Step::Answered {
        consumed,
        keep_alive,
    }
}

/// A 401, decided from the head alone: the body is never buffered for an
/// unauthenticated request. If all of it already arrived it is skipped and
/// the connection stays usable; otherwise the connection closes.
fn refuse_unauthenticated(
    core: &Core,
    head: &RequestHead<'_>,
    after_head: &[u8],
    err: ApiError,
    out: &mut Vec<u8>,
    op: OpKind,
) -> Step {
    core.metrics.record_auth_failure();
    let body_received = match head.framing {
        BodyFraming::Length(len) => usize::try_from(len)
            .ok()
            .filter(|&len| len <= after_head.len()),
        BodyFraming::Chunked => None,
    };
    let keep_alive = head.keep_alive && !core.is_draining() && body_received.is_some();
    response::write_error(out, &err, !keep_alive);
    core.metrics
        .record_request(op, err.status(), Duration::ZERO);
    match body_received {
        Some(len) if keep_alive => Step::Answered {
            consumed: head.head_len + len,
            keep_alive,
        },
        _ => Step::Close,
    }
}

/// Tell a client that waits for `100 Continue` to send its body.
fn await_body(
    head: &RequestHead<'_>,
    want: usize,
    out: &mut Vec<u8>,
    framing: &mut Framing,
) -> Step {
    if head.expect_continue && !framing.continue_sent {
        out.extend_from_slice(CONTINUE);
        framing.continue_sent = true;
    }
    Step::NeedMore { want }
}

fn refuse(core: &Core, err: &ApiError, out: &mut Vec<u8>, op: OpKind) -> Step {
    response::write_error(out, err, true);
    core.metrics
        .record_request(op, err.status(), Duration::ZERO);
    Step::Close
}

/// Run a command and write its response; returns the status sent.
async fn execute(core: &Core, command: Command, out: &mut Vec<u8>, close: bool) -> u16 {
    match command {
        Command::Get { key, style } => match core.get(key).await {
            Ok(Some(Hit { value, hot, .. })) => {
                match style {
                    Style::Seed => write_value(out, 200, &value, close),
                    Style::V1 => {
                        let hot = if hot { "true" } else { "false" };
                        response::write(
                            out,
                            200,
                            OCTETS,
                            &value,
                            close,
                            &[("x-nexuscache-hot", hot)],
                        );
                    }
                }
                200
            }
            Ok(None) => text(out, 404, "not found", close),
            Err(e) => failed(out, e, close),
        },
        Command::Set {
            key,
            value,
            ttl,
            hot,
            style: _,
        } => match core.set(key, value, ttl, hot).await {
            Ok(()) => text(out, 200, "ok", close),
            Err(e) => failed(out, e, close),
        },
        Command::Delete { key, style: _ } => match core.delete(key).await {
            Ok(true) => text(out, 200, "deleted", close),
            Ok(false) => text(out, 200, "not found", close),
            Err(e) => failed(out, e, close),
        },
        Command::Mutate {
            key,
            mutation,
            answer,
        } => match core.mutate(key, mutation).await {
            Ok(mutated) => match mutate::respond(answer, mutated) {
                Ok((status, Body::Value(value))) => {
                    write_value(out, status, &value, close);
                    status
                }
                Ok((status, Body::Line(line))) => text(out, status, &line, close),
                Err(e) => {
                    response::write_error(out, &e, close);
                    e.status()
                }
            },
            Err(e) => failed(out, e, close),
        },
        Command::Owner { key } => {
            let view = core.ring_view();
            let line = match view.ring.owner(&key) {
                Some(m) => format!(
                    "node={} http={} grpc={} core={}",
                    m.name,
                    m.http_addr,
                    m.grpc_addr,
                    // Only meaningful when the owner has as many cores as we
                    // do; static peers report 0 cores (unknown).
                    if m.cores > 0 {
                        crate::routing::core_of(&key, m.cores as usize).to_string()
                    } else {
                        "unknown".to_string()
                    }
                ),
                None => "node=none".to_string(),
            };
            text(out, 200, &line, close)
        }
        Command::SetPeer { name, addr } => {
            match core.control.set_peer(&name, addr.as_deref()).await {
                Ok(member) => {
                    let line = format!(
                        "ok: {} is in the ring (http {}, grpc {})",
                        member.name, member.http_addr, member.grpc_addr
                    );
                    text(out, 200, &line, close)
                }
                Err(e) => {
                    let err = ApiError::from(e);
                    response::write_error(out, &err, close);
                    err.status()
                }
            }
        }
        Command::RemovePeer { name } => match core.control.remove_peer(&name).await {
            Ok(()) => text(out, 200, &format!("removed: {name}"), close),
            Err(e) => {
                let err = ApiError::from(e);
                response::write_error(out, &err, close);
                err.status()
            }
        },
        Command::Health => text(out, 200, "ok", close),
        Command::Ready => {
            if core.is_draining() {
                text(out, 503, "draining", close)
            } else {
                text(out, 200, "ready", close)
            }
        }
        Command::Metrics => {
            let body = render(&core.snapshot_all().await);
            response::write(out, 200, PROMETHEUS, body.as_bytes(), close, &[]);
            200
        }
    }
}

/// A value as the seed API shows it: `value=<V>`, no newline.
fn write_value(out: &mut Vec<u8>, status: u16, value: &[u8], close: bool) {
    response::write_head(out, status, TEXT, value.len() + 6, close, &[]);
    out.extend_from_slice(b"value=");
    out.extend_from_slice(value);
}

fn text(out: &mut Vec<u8>, status: u16, line: &str, close: bool) -> u16 {
    response::write_text(out, status, line, close);
    status
}

/// A reply that is a failure (or, by a bug, the wrong kind of answer).
fn failed(out: &mut Vec<u8>, error: OpError, close: bool) -> u16 {
    let err = ApiError::from(error);
    response::write_error(out, &err, close);
    err.status()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `growth_needed` is what the memory budget is checked against: it
    /// must predict exactly what `spare` then allocates.
    #[test]
    fn growth_needed_predicts_what_spare_allocates() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..10_000 {
            let len = INITIAL_BUFFER << rng.usize(0..4);
            let end = rng.usize(0..=len);
            let start = rng.usize(0..=end);
            let want = match rng.u8(0..3) {
                0 => 0,
                1 => rng.usize(0..=len),
                _ => rng.usize(0..4 * len),
            };
            let mut input = InBuf {
                buf: vec![0; len],
                start,
                end,
                want,
            };
            let predicted = input.growth_needed();
            let spare = input.spare().len();
            assert!(spare > 0, "spare always leaves room to read");
            assert_eq!(
                input.buf.len() - len,
                predicted,
                "len {len} start {start} end {end} want {want}"
            );
        }
    }

    /// Fed a byte at a time, the head's end is found exactly when it
    /// arrives, with each search starting near where the last one stopped.
    #[test]
    fn head_end_is_found_incrementally() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"[..],
            b"GET / HTTP/1.1\nHost: a\n\nrest",
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        ] {
            let end = head
                .windows(2)
                .position(|w| w == b"\n\n")
                .or_else(|| head.windows(3).position(|w| w == b"\n\r\n"))
                .map(|i| i + if head[i + 1] == b'\n' { 2 } else { 3 })
                .unwrap();
            let mut scanned = 0;
            for len in 0..=head.len() {
                let before = scanned;
                let found = head_ended(&head[..len], &mut scanned);
                assert_eq!(found, len >= end, "{head:?} at {len}");
                assert!(found || scanned == len);
                assert!(before <= scanned || found);
            }
        }
        let mut scanned = 0;
        assert!(!head_ended(b"GET / HTTP/1.1\r\nHost: a\r\n", &mut scanned));
    }
}
