//! One client connection on one core: read, frame, route, execute, answer.
//!
//! Every complete request already in the buffer is answered before the next
//! read, and all their responses leave in one write: pipelined requests are
//! answered in order at the cost of one syscall per batch.

use std::borrow::Cow;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use tracing::debug;

use super::parse::{decode_chunked, parse_head, BodyFraming, RequestHead};
use super::response::{self, CONTINUE, OCTETS, PROMETHEUS, TEXT};
use super::route::{route, Command, Style};
use crate::error::ApiError;
use crate::metrics::{render, OpKind};
use crate::ops::{Hit, Op, Reply};
use crate::runtime::core::{Core, Deadline};

const INITIAL_BUFFER: usize = 16 * 1024;

pub async fn serve_connection(core: Rc<Core>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (id, deadline) = core.register_connection(stream.as_raw_fd());
    if let Err(e) = run(&core, &mut stream, &deadline).await {
        debug!(core = core.id, "connection ended: {e}");
    }
    core.unregister_connection(id);
}

/// Bytes received but not yet consumed live in `buf[start..end]`.
struct InBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuf {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Room for the next read: reuse consumed space first, grow if a single
    /// request is larger than the buffer.
    fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let bigger = self.buf.len() * 2;
                self.buf.resize(bigger, 0);
            }
        }
        &mut self.buf[self.end..]
    }
}

async fn run(core: &Core, stream: &mut TcpStream, deadline: &Deadline) -> io::Result<()> {
    let mut input = InBuf {
        buf: vec![0; INITIAL_BUFFER],
        start: 0,
        end: 0,
    };
    let mut out = Vec::with_capacity(INITIAL_BUFFER);
    let mut continue_sent = false;
    let mut partial_since: Option<Instant> = None;
    loop {
        let mut close = false;
        while input.start < input.end {
            match next_request(core, input.pending(), &mut out, &mut continue_sent).await {
                Step::Answered {
                    consumed,
                    keep_alive,
                } => {
                    input.start += consumed;
                    continue_sent = false;
                    if !keep_alive {
                        close = true;
                        break;
                    }
                }
                Step::NeedMore => break,
                Step::Close => {
                    close = true;
                    break;
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if close {
            return Ok(());
        }
        // A started request must be complete within the header timeout as a
        // whole (not per read), or a client trickling bytes could hold the
        // connection forever. The core's reaper enforces the deadline.
        let now = Instant::now();
        let until = if input.start < input.end {
            *partial_since.get_or_insert(now) + core.config.header_timeout()
        } else {
            partial_since = None;
            now + core.config.idle_timeout()
        };
        if until <= now {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request not completed within the header timeout",
            ));
        }
        deadline.set(Some(until));
        let n = stream.read(input.spare()).await?;
        if n == 0 {
            return Ok(());
        }
        input.end += n;
    }
}

enum Step {
    Answered { consumed: usize, keep_alive: bool },
    NeedMore,
    Close,
}

/// Frame and answer the request at the front of `pending`, if complete.
async fn next_request(
    core: &Core,
    pending: &[u8],
    out: &mut Vec<u8>,
    continue_sent: &mut bool,
) -> Step {
    let head = match parse_head(pending) {
        Ok(Some(head)) => head,
        Ok(None) => return Step::NeedMore,
        Err(e) => return refuse(core, &e, out, OpKind::Other),
    };
    let op_kind = op_kind(&head);
    let limit = core.limits.max_body(&head);
    let after_head = &pending[head.head_len..];
    let (body, consumed): (Cow<'_, [u8]>, usize) = match head.framing {
        BodyFraming::Length(len) if len > limit => {
            return refuse(core, &core.limits.body_error(&head, len), out, op_kind);
        }
        BodyFraming::Length(len) => {
            let len = len as usize;
            if after_head.len() < len {
                return await_body(&head, out, continue_sent);
            }
            (Cow::Borrowed(&after_head[..len]), head.head_len + len)
        }
        BodyFraming::Chunked => match decode_chunked(after_head, limit) {
            Ok(Some((body, used))) => (Cow::Owned(body), head.head_len + used),
            Ok(None) => return await_body(&head, out, continue_sent),
            Err(e) => return refuse(core, &e, out, op_kind),
        },
    };
    let keep_alive = head.keep_alive && !core.is_draining();
    let started = Instant::now();
    let status = match route(&head, &body, &core.limits) {
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

/// Tell a client that waits for `100 Continue` to send its body.
fn await_body(head: &RequestHead<'_>, out: &mut Vec<u8>, continue_sent: &mut bool) -> Step {
    if head.expect_continue && !*continue_sent {
        out.extend_from_slice(CONTINUE);
        *continue_sent = true;
    }
    Step::NeedMore
}

fn refuse(core: &Core, err: &ApiError, out: &mut Vec<u8>, op: OpKind) -> Step {
    response::write_error(out, err, true);
    core.metrics
        .record_request(op, err.status(), std::time::Duration::ZERO);
    Step::Close
}

fn op_kind(head: &RequestHead<'_>) -> OpKind {
    match head.path() {
        "/api/get" => OpKind::Get,
        "/api/set" => OpKind::Set,
        "/api/delete" => OpKind::Delete,
        "/healthz" => OpKind::Health,
        "/readyz" => OpKind::Ready,
        "/metrics" => OpKind::Metrics,
        "/setpeer" => OpKind::Other,
        p if p.starts_with("/v1/owner/") => OpKind::Other,
        p if p.starts_with("/v1/keys/") => match head.method {
            super::parse::Method::Put => OpKind::Set,
            super::parse::Method::Delete => OpKind::Delete,
            _ => OpKind::Get,
        },
        _ => OpKind::Other,
    }
}

/// Run a command and write its response; returns the status sent.
async fn execute(core: &Core, command: Command, out: &mut Vec<u8>, close: bool) -> u16 {
    match command {
        Command::Get { key, style } => match core.call(Op::get(key)).await {
            Reply::Value(Some(Hit { value, hot, .. })) => {
                match style {
                    Style::Seed => {
                        response::write_head(out, 200, TEXT, value.len() + 6, close, &[]);
                        out.extend_from_slice(b"value=");
                        out.extend_from_slice(&value);
                    }
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
            Reply::Value(None) => text(out, 404, "not found", close),
            other => unexpected(out, other, close),
        },
        Command::Set {
            key,
            value,
            ttl,
            hot,
            style: _,
        } => match core
            .call(Op::Set {
                key,
                value,
                ttl,
                hot,
            })
            .await
        {
            Reply::Stored => text(out, 200, "ok", close),
            other => unexpected(out, other, close),
        },
        Command::Delete { key, style: _ } => match core.call(Op::Delete { key }).await {
            Reply::Deleted(true) => text(out, 200, "deleted", close),
            Reply::Deleted(false) => text(out, 200, "not found", close),
            other => unexpected(out, other, close),
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

fn text(out: &mut Vec<u8>, status: u16, line: &str, close: bool) -> u16 {
    response::write_text(out, status, line, close);
    status
}

/// A reply that is a failure (or, by a bug, the wrong kind of answer).
fn unexpected(out: &mut Vec<u8>, reply: Reply, close: bool) -> u16 {
    let err = ApiError::from_reply(reply)
        .unwrap_or_else(|| ApiError::Internal("unexpected reply from the owning core".into()));
    response::write_error(out, &err, close);
    err.status()
}
