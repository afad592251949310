//! The Redis protocol front end: one RESP2/RESP3 client connection on one
//! core, from bytes to typed commands ([`crate::resp`]) to ops
//! ([`Core::call`]) and back to reply bytes.
//!
//! Framing, pipelining and bounds follow the HTTP connection loop: every
//! whole command already read is answered, in order, before the next read,
//! and the replies of a batch leave in one write. Within a batch, the
//! commands that wait on the cluster run at once ([`pipeline`]); the
//! session's part of every command is done in order first
//! ([`commands::prepare`]). A batch stops once its
//! unsent replies pass `Config::max_unsent_bytes` (nothing more is read or
//! answered until they are written), and a command still arriving may hold
//! at most that many bytes too (its length lines are checked before the
//! bytes come: see [`crate::resp::parse`]). What a connection holds is
//! charged to the core's share of `--max-connection-memory`. Values are
//! copied into the output buffer (no vectored write yet).
//!
//! Every key command runs through the engine (`Core::call`), so hot
//! copies, singleflight and read-through apply as they do to HTTP. Multi-key
//! commands (`MGET`, `MSET`, `DEL`, `EXISTS`) run their keys concurrently,
//! each on its owner, and answer in the order of the keys.
//!
//! Commands that read, decide and write one key atomically (`SET NX|XX|GET|
//! KEEPTTL`, `SETNX`, `GETSET`, `GETDEL`, `GETEX`, `APPEND`, `INCR*`,
//! `DECR*`, `EXPIRE*`, `PERSIST`) are one `Op::Mutate` each, decided on the
//! key's owner node on its home core (see [`crate::mutation`]): atomic per
//! key across the cluster, never emulated with a racy read-then-write.

mod cluster;
mod commands;
mod pipeline;

use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use tracing::debug;

use crate::metrics::{BufferCharge, OpKind, Protocol as MetricProtocol};
use crate::resp::command::CommandLimits;
use crate::resp::{Limits, Parsed, Protocol, ReplyWriter, RequestParser};
use crate::runtime::core::{Core, Deadline};
use crate::sockets;
use commands::{api_error_line, prepare, Prepared};
use pipeline::Pipeline;

/// What a connection reads per system call.
pub const READ_CHUNK: usize = 16 * 1024;
/// The input and output buffers of an idle connection, and what they
/// shrink back to after a large command or batch (with the read chunk, an
/// idle RESP connection holds 24 KiB; most commands and replies of a batch
/// fit in 4 KiB).
pub const IDLE_BUFFER: usize = 4 * 1024;
/// The Redis version clients are told they talk to: the command set and
/// replies follow Redis 7.2.
pub const REDIS_VERSION: &str = "7.2.0";

/// When the process started, for `INFO`'s uptime.
static STARTED: OnceLock<(Instant, SystemTime)> = OnceLock::new();

/// Records the start time (called once by the runtime at start-up; the
/// first connection does it otherwise).
pub fn mark_started() {
    STARTED.get_or_init(|| (Instant::now(), SystemTime::now()));
}

fn uptime() -> Duration {
    STARTED
        .get_or_init(|| (Instant::now(), SystemTime::now()))
        .0
        .elapsed()
}

/// One connection's protocol state (what `RESET` clears).
struct Session {
    /// Unique on this node: `CLIENT ID`.
    id: u64,
    protocol: Protocol,
    authenticated: bool,
    name: Option<Bytes>,
    lib_name: Option<Bytes>,
    lib_ver: Option<Bytes>,
    opened: Instant,
    peer: String,
    local: String,
    fd: i32,
    /// The last command's full name, for `CLIENT INFO`.
    last_command: &'static str,
}

impl Session {
    fn reset(&mut self, token_required: bool) {
        self.protocol = Protocol::Resp2;
        self.authenticated = !token_required;
        self.name = None;
        self.lib_name = None;
        self.lib_ver = None;
    }
}

/// Whether the connection goes on after a command's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// A command's outcome for the request metrics, in HTTP status terms so
/// the protocols share one family (`nexuscache_requests_total`).
struct Outcome {
    op: OpKind,
    status: u16,
    flow: Flow,
}

impl Outcome {
    fn new(op: OpKind, status: u16) -> Outcome {
        Outcome {
            op,
            status,
            flow: Flow::Continue,
        }
    }
}

pub async fn serve_resp_connection(core: Rc<Core>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let (id, deadline) = core.register_connection(fd);
    let mut session = Session {
        id: id
            .saturating_mul(core.cores as u64)
            .saturating_add(core.id as u64 + 1),
        protocol: Protocol::Resp2,
        authenticated: !core.config.credentials.token_required(),
        name: None,
        lib_name: None,
        lib_ver: None,
        opened: Instant::now(),
        peer: stream
            .peer_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string()),
        local: stream
            .local_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string()),
        fd,
        last_command: "NULL",
    };
    let mut buffers = Buffers::new(&core);
    if let Err(e) = run(&core, &mut stream, &deadline, &mut buffers, &mut session).await {
        debug!(core = core.id, "RESP connection ended: {e}");
    }
    drop(buffers);
    core.unregister_connection(id);
}

/// A connection's buffers, charged to the core's connection budget;
/// dropping it gives the charge back.
struct Buffers<'a> {
    core: &'a Core,
    input: BytesMut,
    /// Reads land here first: only the bytes received are copied into
    /// `input`, never a zero-filled spare area per read.
    scratch: Vec<u8>,
    out: Vec<u8>,
    /// Bytes of the command being read that the parser already moved out
    /// of `input` (whole arguments of a command cut short).
    partial: usize,
    /// Commands still running or waiting to answer.
    pipeline: Pipeline,
    charge: BufferCharge,
}

impl<'a> Buffers<'a> {
    fn new(core: &'a Core) -> Buffers<'a> {
        let mut buffers = Buffers {
            core,
            input: BytesMut::with_capacity(IDLE_BUFFER),
            scratch: vec![0; READ_CHUNK],
            out: Vec::with_capacity(IDLE_BUFFER),
            partial: 0,
            pipeline: Pipeline::default(),
            charge: BufferCharge::default(),
        };
        buffers.account();
        buffers
    }

    fn held(&self) -> usize {
        self.input.capacity()
            + self.scratch.len()
            + self.out.capacity()
            + self.partial
            + self.pipeline.held()
    }

    fn account(&mut self) {
        let held = self.held();
        self.core
            .metrics
            .charge_connection_buffers(&mut self.charge, held);
    }

    /// After a write: buffers that grew for one large command or batch go
    /// back to their idle size.
    fn settle(&mut self) {
        self.out.clear();
        self.pipeline.settle();
        if self.out.capacity() > 4 * IDLE_BUFFER {
            self.out = Vec::with_capacity(IDLE_BUFFER);
        }
        if self.input.capacity() > 4 * READ_CHUNK && self.input.len() <= IDLE_BUFFER {
            let mut small = BytesMut::with_capacity(IDLE_BUFFER);
            small.extend_from_slice(&self.input);
            self.input = small;
        }
        self.account();
    }
}

impl Drop for Buffers<'_> {
    fn drop(&mut self) {
        self.core
            .metrics
            .charge_connection_buffers(&mut self.charge, 0);
    }
}

async fn run(
    core: &Rc<Core>,
    stream: &mut TcpStream,
    deadline: &Deadline,
    buffers: &mut Buffers<'_>,
    session: &mut Session,
) -> io::Result<()> {
    let max_unsent = core.config.max_unsent_bytes();
    // A command may hold as much as a batch of replies may: two of the
    // largest values (at least 4 MiB), what the node's connection budget
    // is validated to give every connection.
    let max_command = max_unsent;
    let node_limits = Limits::new(core.config.max_value_bytes);
    let command_limits = CommandLimits {
        max_key_bytes: core.config.max_key_bytes,
        max_value_bytes: core.config.max_value_bytes,
    };
    let mut parser = RequestParser::new();
    let mut partial_since: Option<Instant> = None;
    let mut needed: Option<usize> = None;
    loop {
        let mut close = false;
        let mut over_cap = false;
        // One clock read per command: a command's latency runs from the
        // previous command's end (or the read) to its own end, which
        // differs from a start taken after parsing by the parse alone.
        let mut command_start = Instant::now();
        loop {
            let unsent = buffers.out.len() + buffers.pipeline.ready_bytes();
            if unsent >= max_unsent || (unsent > 0 && core.connection_memory_exhausted(0)) {
                over_cap = true;
                break;
            }
            let limits = if session.authenticated {
                node_limits
            } else {
                node_limits.unauthenticated()
            };
            let before = buffers.input.len();
            match parser.parse(&mut buffers.input, &limits) {
                Ok(Parsed::Request(args)) => {
                    buffers.partial = 0;
                    needed = None;
                    // A reply that cannot go out yet (commands before it
                    // still run) is written aside.
                    let mut aside =
                        (!buffers.pipeline.is_empty()).then(|| buffers.pipeline.buffer());
                    let out = aside.as_mut().unwrap_or(&mut buffers.out);
                    let prepared = prepare(core, session, &args, &command_limits, out);
                    parser.recycle(args);
                    let flow = match prepared {
                        Prepared::Done(outcome) => {
                            let command_end = Instant::now();
                            let took = command_end.saturating_duration_since(command_start);
                            command_start = command_end;
                            let flow = outcome.flow;
                            match aside {
                                Some(reply) => buffers.pipeline.push_ready(reply, outcome, took),
                                None => core.metrics.record_request_on(
                                    MetricProtocol::Resp,
                                    outcome.op,
                                    outcome.status,
                                    took,
                                ),
                            }
                            flow
                        }
                        Prepared::Run(job) if buffers.pipeline.is_empty() && job.is_local(core) => {
                            // Nothing waits before it and it waits on no
                            // other core or node: run it in place (no task,
                            // no boxed future).
                            let outcome = commands::run(core, job, &mut buffers.out).await;
                            let command_end = Instant::now();
                            core.metrics.record_request_on(
                                MetricProtocol::Resp,
                                outcome.op,
                                outcome.status,
                                command_end.saturating_duration_since(command_start),
                            );
                            command_start = command_end;
                            Flow::Continue
                        }
                        Prepared::Run(job) => {
                            if buffers.pipeline.must_wait(&job) {
                                buffers.pipeline.finish(core, &mut buffers.out).await;
                            }
                            buffers.pipeline.start(core, job, &mut buffers.out).await;
                            command_start = Instant::now();
                            Flow::Continue
                        }
                    };
                    buffers.pipeline.drain_ready(core, &mut buffers.out).await;
                    buffers.account();
                    if flow == Flow::Close {
                        close = true;
                        break;
                    }
                }
                Ok(Parsed::Incomplete { needed: more }) => {
                    buffers.partial += before.saturating_sub(buffers.input.len());
                    needed = more;
                    let claimed = buffers
                        .partial
                        .saturating_add(buffers.input.len())
                        .saturating_add(more.unwrap_or(0));
                    if claimed > max_command {
                        buffers.pipeline.finish(core, &mut buffers.out).await;
                        let mut w = ReplyWriter::new(&mut buffers.out, session.protocol);
                        w.error(&format!(
                            "ERR Protocol error: command over the {max_command}-byte limit"
                        ));
                        core.metrics.record_request_on(
                            MetricProtocol::Resp,
                            OpKind::Other,
                            413,
                            Duration::ZERO,
                        );
                        close = true;
                    }
                    break;
                }
                Err(e) => {
                    buffers.pipeline.finish(core, &mut buffers.out).await;
                    ReplyWriter::new(&mut buffers.out, session.protocol).error(&e.to_string());
                    core.metrics.record_request_on(
                        MetricProtocol::Resp,
                        OpKind::Other,
                        400,
                        Duration::ZERO,
                    );
                    close = true;
                    break;
                }
            }
        }
        // Every command read is answered before the batch is written.
        if !buffers.pipeline.is_empty() {
            buffers.pipeline.finish(core, &mut buffers.out).await;
            command_start = Instant::now();
        }
        buffers.account();
        // Whether `command_start`, the last clock read, is still "now": it
        // is unless the write had to wait for the socket.
        let mut clock_current = true;
        if !buffers.out.is_empty() {
            clock_current =
                sockets::write_out(stream, &buffers.out, deadline, core.config.idle_timeout())
                    .await?;
        }
        // Draining: what was read is answered; then the connection closes.
        if close || core.is_draining() {
            return Ok(());
        }
        buffers.settle();
        if over_cap {
            continue;
        }
        // A command started must arrive whole within the header timeout
        // (not per read), or a client trickling bytes holds the connection.
        // (Reading the clock costs as much as parsing a small command: the
        // last command's end is used when nothing waited since.)
        let now = if clock_current {
            command_start
        } else {
            Instant::now()
        };
        let under_way = !(buffers.input.is_empty() && parser.is_idle());
        deadline.set(Some(core.next_read_deadline(
            now,
            under_way,
            &mut partial_since,
        )?));
        // What the next read may add to the input buffer: room for the rest
        // of a bulk whose length is known is made at once; otherwise the
        // buffer grows (doubling) only if a full read does not fit.
        let spare = buffers.input.capacity() - buffers.input.len();
        let reserve = needed.filter(|&more| more > spare);
        let growth = match reserve {
            Some(more) => more.max(buffers.input.capacity()),
            None if spare < READ_CHUNK => READ_CHUNK.max(buffers.input.capacity()),
            None => 0,
        };
        if growth > 0 && core.connection_memory_exhausted(growth) {
            if let Err(e) = core.wait_for_connection_memory(growth).await {
                buffers.out.clear();
                ReplyWriter::new(&mut buffers.out, session.protocol).error(&api_error_line(&e));
                sockets::write_out(stream, &buffers.out, deadline, core.config.idle_timeout())
                    .await?;
                return Ok(());
            }
        }
        if let Some(more) = reserve {
            buffers.input.reserve(more);
            buffers.account();
        }
        let n = stream.read(&mut buffers.scratch).await?;
        if n == 0 {
            return Ok(());
        }
        buffers.input.extend_from_slice(&buffers.scratch[..n]);
        buffers.account();
    }
}
