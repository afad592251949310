//! The gRPC front end of one core: `nexuscache.v1.Cache` over HTTP/2 on a
//! glommio socket.
//!
//! tonic wants `Send` handlers and a shard is core-local, so each core
//! serves gRPC itself with `h2` and the pure codec in [`crate::grpc`]:
//!
//! ```text
//! accept loop (this core) ─> serve_grpc_connection ─ h2 server ─┬─ stream ─> handle ─> core.call(op)
//!                                                                └─ stream ─> handle ─> ...
//! ```
//!
//! The connection task drives all of the connection's I/O; every request
//! stream gets a task of its own, so a slow op never holds up the others.
//! Unary calls only: one message in, one message and a `grpc-status` out.
//! When the node starts draining, each connection sends GOAWAY, finishes
//! the calls it has, and closes.
//!
//! Who may call: every call is authorised from its headers before its
//! message is read (`authorization` for clients, the cluster secret for
//! peer nodes; see [`crate::auth`]): `UNAUTHENTICATED` without a valid
//! token, `PERMISSION_DENIED` for `Peer/Replicate`, `Peer/Stats` or a `forwarded` /
//! `keep_copy` flag from a caller that is not a peer.
//!
//! What a connection may cost: at most [`MAX_CONCURRENT_STREAMS`] calls at
//! once, partly received messages within the connection's and the core's
//! [`budget`]s (a stream that would pass one is refused with
//! `RESOURCE_EXHAUSTED`), and a connection without calls for
//! `--idle-timeout` is sent GOAWAY and closed.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{future, AsyncReadExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use h2::server::SendResponse;
use h2::RecvStream;
use http::header::{HeaderName, HeaderValue, ALLOW, CONTENT_TYPE};
use http::{HeaderMap, Request, Response, StatusCode};
use tracing::debug;

use crate::auth::{AuthError, Caller, CLUSTER_SECRET_HEADER};
use crate::error::ApiError;
use crate::grpc::budget::{self, Budget, Hold};
use crate::grpc::cache::{self, CallRequest, FramedMessage, Method};
use crate::grpc::frame::FrameError;
use crate::grpc::h2_settings;
use crate::grpc::io::TokioIo;
use crate::grpc::percent::encode_message;
use crate::grpc::status::{Code, Status};
use crate::grpc::{timeout, CONTENT_TYPE as GRPC_CONTENT_TYPE};
use crate::metrics::{Landing, OpKind, Protocol};
use crate::ops::{Op, Reply};
use crate::peer::announce::{self, FirstBytes, Prefixed};
use crate::peer::streams::{read_unary_within, send_message, ReadError};
use crate::routing::core_of;
use crate::runtime::core::Core;
use crate::sockets::SendFirst;

pub use crate::grpc::h2_settings::MAX_CONCURRENT_STREAMS;
/// How often an open connection looks at the draining flag.
const DRAIN_POLL: Duration = Duration::from_millis(100);

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const CLUSTER_SECRET: HeaderName = HeaderName::from_static(CLUSTER_SECRET_HEADER);

thread_local! {
    /// This core's budget for partly received messages, shared by all its
    /// gRPC connections (a core is one thread); made by its first connection.
    static CORE_BUDGET: RefCell<Option<Rc<Budget>>> = const { RefCell::new(None) };
}

/// The core's partial-message budget (see [`budget::core_budget`]).
fn core_budget(core: &Core, connection_budget: usize) -> Rc<Budget> {
    CORE_BUDGET.with(|cell| {
        cell.borrow_mut()
            .get_or_insert_with(|| {
                Rc::new(Budget::new(budget::core_budget(
                    connection_budget,
                    core.config.connection_memory_per_core(),
                )))
            })
            .clone()
    })
}

/// What the streams of one connection share.
struct Connection {
    /// Bytes of its partly received messages.
    budget: Rc<Budget>,
    core_budget: Rc<Budget>,
    /// Calls being served, and when the last one ended (for the idle
    /// deadline).
    open_streams: Cell<usize>,
    last_active: Cell<Instant>,
}

impl Connection {
    /// When the connection will have been idle for `idle`; `None` while a
    /// call is open.
    fn idle_at(&self, idle: Duration) -> Option<Instant> {
        (self.open_streams.get() == 0).then(|| self.last_active.get() + idle)
    }
}

/// One call's share of its connection: counted as open until dropped, and
/// its partial message charged to the budgets (the gauge follows).
struct StreamGuard {
    core: Rc<Core>,
    connection: Rc<Connection>,
    hold: Hold,
}

impl StreamGuard {
    fn new(core: Rc<Core>, connection: Rc<Connection>) -> StreamGuard {
        connection
            .open_streams
            .set(connection.open_streams.get() + 1);
        // Charged to both budgets until the caller is known.
        let hold = Hold::new(
            connection.budget.clone(),
            Some(connection.core_budget.clone()),
        );
        StreamGuard {
            core,
            connection,
            hold,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let released = self.hold.release();
        self.core.metrics.connection_buffers_changed(0, released);
        let open = &self.connection.open_streams;
        open.set(open.get().saturating_sub(1));
        self.connection.last_active.set(Instant::now());
    }
}

/// Serves one client connection until it closes (or, while the node
/// drains, until its calls are done). Call it from the core's accept loop
/// on the gRPC port: `spawn_local(serve_grpc_connection(core, stream)).detach()`.
pub async fn serve_grpc_connection(core: Rc<Core>, stream: TcpStream) {
    serve_grpc_connection_after(core, stream, Vec::new()).await
}

/// [`serve_grpc_connection`] for a connection whose first bytes were
/// already read (`read`, looking for a home-core announcement): HTTP/2
/// sees them first, then the socket.
pub async fn serve_grpc_connection_after(core: Rc<Core>, stream: TcpStream, read: Vec<u8>) {
    let _ = stream.set_nodelay(true);
    // The deadline stays unset while the connection behaves; it is the
    // reaper's backstop once the connection was asked to go away.
    let (id, deadline) = core.register_connection(stream.as_raw_fd());
    if let Err(e) = run(
        &core,
        Prefixed::new(read, SendFirst::new(stream)),
        &deadline,
    )
    .await
    {
        debug!(core = core.id, "gRPC connection ended: {e}");
    }
    core.unregister_connection(id);
}

/// How a new gRPC connection opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Opening {
    /// A peer asked to be served on `core`; `rest` is what it sent after
    /// the announcement (the start of HTTP/2).
    Announced { core: u16, rest: Vec<u8> },
    /// A normal client; `read` is what it sent so far, to replay.
    Plain { read: Vec<u8> },
    /// Closed, failed, or sent nothing (or only part of an announcement)
    /// within `limit`: drop it.
    Gone,
}

/// Bytes read from a new connection at once while looking for an
/// announcement: a client's HTTP/2 preface and first frames fit.
const OPENING_READ: usize = 512;

/// Reads the first bytes of a new gRPC connection, for at most `limit`,
/// until they show whether it announces a home core
/// ([`crate::peer::announce`]). A normal client is told apart by its first
/// byte, so it waits for nothing it would not send anyway.
pub async fn read_opening(stream: &mut TcpStream, limit: Duration) -> Opening {
    let read = async {
        let mut read = Vec::with_capacity(OPENING_READ);
        let mut chunk = [0u8; OPENING_READ];
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Opening::Gone,
                Ok(n) => n,
            };
            read.extend_from_slice(&chunk[..n]);
            match announce::classify(&read) {
                FirstBytes::NeedMore => continue,
                FirstBytes::Plain => return Opening::Plain { read },
                FirstBytes::Announced { core } => {
                    let rest = read.split_off(announce::ANNOUNCEMENT_LEN);
                    return Opening::Announced { core, rest };
                }
            }
        }
    };
    future::or(read, async {
        Timer::new(limit).await;
        Opening::Gone
    })
    .await
}

async fn run(
    core: &Rc<Core>,
    stream: Prefixed<SendFirst<TcpStream>>,
    deadline: &crate::runtime::core::Deadline,
) -> Result<(), h2::Error> {
    let limit = cache::max_message_bytes(&core.limits);
    let connection_budget = budget::connection_budget(limit);
    let handshake = h2_settings::server().handshake::<_, Bytes>(TokioIo(stream));
    // A client that connects and never says anything must not keep the
    // task (and the socket) forever.
    let preface_timeout = core.config.header_timeout();
    let handshake = future::or(async { Some(handshake.await) }, async {
        Timer::new(preface_timeout).await;
        None
    });
    let Some(connection) = handshake.await else {
        debug!(
            core = core.id,
            "gRPC client sent no HTTP/2 preface within {preface_timeout:?}"
        );
        return Ok(());
    };
    let mut connection = connection?;
    let shared = Rc::new(Connection {
        budget: Rc::new(Budget::new(connection_budget)),
        core_budget: core_budget(core, connection_budget),
        open_streams: Cell::new(0),
        last_active: Cell::new(Instant::now()),
    });

    let idle = core.config.idle_timeout();
    let mut idle_timer = Box::pin(Timer::new(idle));
    let mut drain = pin!(wait_for_drain(core.clone()));
    let mut going_away = false;
    loop {
        let next = poll_fn(|cx| {
            if !going_away && drain.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Next::Drain);
            }
            if !going_away && idle_timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Next::IdleCheck);
            }
            connection
                .poll_accept(cx)
                .map(|accepted| Next::Accepted(Box::new(accepted)))
        })
        .await;
        match next {
            Next::Drain => {
                // GOAWAY, then finish the calls already accepted (the
                // node's shutdown grace bounds how long that may take).
                connection.graceful_shutdown();
                going_away = true;
            }
            Next::IdleCheck => {
                let now = Instant::now();
                match shared.idle_at(idle) {
                    Some(at) if at <= now => {
                        debug!(
                            core = core.id,
                            "gRPC connection idle for {idle:?} (--idle-timeout); going away"
                        );
                        connection.graceful_shutdown();
                        going_away = true;
                        // A client that never lets the connection end (no
                        // PING answer, a call opened as GOAWAY crossed it
                        // that never finishes) is cut by the core's reaper.
                        deadline.set(Some(now + core.config.header_timeout()));
                    }
                    // Idle since `at - idle`: look again when that is over.
                    Some(at) => idle_timer = Box::pin(Timer::new(at - now)),
                    // Calls are open: look again an idle period from now.
                    None => idle_timer = Box::pin(Timer::new(idle)),
                }
            }
            Next::Accepted(accepted) => match *accepted {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok((request, respond))) => {
                    let guard = StreamGuard::new(core.clone(), shared.clone());
                    glommio::spawn_local(handle(core.clone(), request, respond, limit, guard))
                        .detach();
                }
            },
        }
    }
}

/// A new stream, the end of the connection, or its error.
type Accepted = Option<Result<(Request<RecvStream>, SendResponse<Bytes>), h2::Error>>;

/// What woke a connection's task.
enum Next {
    Drain,
    IdleCheck,
    Accepted(Box<Accepted>),
}

/// The caller the call's `authorization` and cluster-secret metadata prove.
fn authorize(core: &Core, headers: &HeaderMap) -> Result<Caller, AuthError> {
    core.config.credentials.authorize(
        headers
            .get(http::header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
        headers.get(&CLUSTER_SECRET).map(HeaderValue::as_bytes),
    )
}

async fn wait_for_drain(core: Rc<Core>) {
    while !core.is_draining() {
        Timer::new(DRAIN_POLL).await;
    }
}

/// Answers one call on its own stream.
async fn handle(
    core: Rc<Core>,
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    limit: usize,
    guard: StreamGuard,
) {
    let started = Instant::now();
    let (op, code) = answer(&core, request, respond, limit, guard).await;
    core.metrics
        .record_request_on(Protocol::Grpc, op, code.http_status(), started.elapsed());
}

/// Answers one call; the op it was and the code it ended with.
async fn answer(
    core: &Rc<Core>,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    limit: usize,
    mut guard: StreamGuard,
) -> (OpKind, Code) {
    let (head, mut body) = request.into_parts();
    let is_grpc = head
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(GRPC_CONTENT_TYPE.as_bytes()));
    if !is_grpc {
        // Not a gRPC request at all: the spec's answer is HTTP 415. The
        // grpc-status is for gRPC clients that sent a wrong content-type.
        let status = Status::new(
            Code::InvalidArgument,
            format!(
                "content-type {:?} is not application/grpc",
                head.headers
                    .get(CONTENT_TYPE)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default()
            ),
        );
        send_status(&mut respond, StatusCode::UNSUPPORTED_MEDIA_TYPE, &status);
        return (OpKind::Other, status.code);
    }
    if head.method != http::Method::POST {
        let status = Status::unimplemented(format!(
            "method {} is not allowed: gRPC calls use POST",
            head.method
        ));
        send_status(&mut respond, StatusCode::METHOD_NOT_ALLOWED, &status);
        return (OpKind::Other, status.code);
    }
    // Who is calling, from the headers alone: nothing of an unauthorised
    // call's message is read or buffered.
    let caller = match authorize(core, &head.headers) {
        Ok(caller) => caller,
        Err(e) => {
            core.metrics.record_auth_failure();
            let status = Status::from(ApiError::Auth(e));
            send_status(&mut respond, StatusCode::OK, &status);
            return (OpKind::Other, status.code);
        }
    };
    if caller == Caller::Peer && core.config.credentials.has_cluster_secret() {
        // A node that proved the secret keeps its requests on one
        // connection within that connection's budget (see `peer`); it
        // must not be starved by clients filling the core's budget.
        guard.hold = Hold::new(guard.connection.budget.clone(), None);
    }
    let Some(method) = Method::from_path(head.uri.path()) else {
        let status = Status::unimplemented(format!("unknown method {}", head.uri.path()));
        send_status(&mut respond, StatusCode::OK, &status);
        return (OpKind::Other, status.code);
    };
    if method.is_peer_only() && caller != Caller::Peer {
        core.metrics.record_auth_failure();
        let refused = ApiError::Auth(AuthError::PeerOnly(method.path().trim_start_matches('/')));
        let status = Status::from(refused);
        send_status(&mut respond, StatusCode::OK, &status);
        return (op_kind(method), status.code);
    }
    let deadline = match head
        .headers
        .get(GRPC_TIMEOUT)
        .map(|v| timeout::parse(v.as_bytes()))
    {
        None => None,
        Some(Ok(deadline)) => Some(deadline),
        Some(Err(e)) => {
            let status = Status::internal(e.to_string());
            send_status(&mut respond, StatusCode::OK, &status);
            return (op_kind(method), status.code);
        }
    };

    let call = serve_call(core, caller, method, &mut body, limit, &mut guard.hold);
    let outcome = match deadline {
        None => call.await,
        Some(deadline) => {
            future::or(call, async {
                Timer::new(deadline).await;
                Err(Status::deadline_exceeded(format!(
                    "deadline of {deadline:?} (grpc-timeout) passed"
                )))
            })
            .await
        }
    };
    match outcome {
        Ok(message) => {
            // A client that never opens its flow-control window must not
            // hold the task and the value forever.
            let stall = core.config.header_timeout();
            let sent = future::or(
                async {
                    send_message_and_ok(respond, message).await;
                    true
                },
                async {
                    Timer::new(stall).await;
                    false
                },
            )
            .await;
            if !sent {
                debug!(
                    core = core.id,
                    "gRPC client took no response bytes for {stall:?}; stream reset"
                );
            }
        }
        Err(status) => {
            send_status(&mut respond, StatusCode::OK, &status);
            return (op_kind(method), status.code);
        }
    }
    (op_kind(method), Code::Ok)
}

/// The `op` label of a method in `nexuscache_requests_total`.
fn op_kind(method: Method) -> OpKind {
    match method {
        Method::Get => OpKind::Get,
        Method::Set => OpKind::Set,
        Method::Delete => OpKind::Delete,
        Method::Mutate => OpKind::Mutate,
        Method::Replicate | Method::Stats => OpKind::Other,
    }
}

/// Reads, validates and runs one call; the response message or the status
/// to answer with.
async fn serve_call(
    core: &Core,
    caller: Caller,
    method: Method,
    body: &mut RecvStream,
    limit: usize,
    hold: &mut Hold,
) -> Result<FramedMessage, Status> {
    let stall = core.config.header_timeout();
    let on_change = |grown, shrunk| core.metrics.connection_buffers_changed(grown, shrunk);
    let read = future::or(
        async { Some(read_unary_within(body, limit, hold, on_change).await) },
        async {
            Timer::new(stall).await;
            None
        },
    );
    let message = match read.await {
        Some(Ok(Some(message))) => message,
        Some(Ok(None)) => return Err(FrameError::Missing.status()),
        Some(Err(ReadError::Frame(e))) => return Err(e.status()),
        Some(Err(ReadError::Stream(e))) => {
            // The client reset the stream; nobody will read the answer.
            return Err(Status::new(
                Code::Cancelled,
                format!("request stream failed: {e}"),
            ));
        }
        None => {
            return Err(Status::deadline_exceeded(format!(
                "request message not received within {stall:?}"
            )))
        }
    };
    let request = cache::decode_request(method, message, &core.limits)?;
    if let (Some(flag), Caller::Client) = (request.peer_flag, caller) {
        // Never obeyed and never silently cleared: the caller learns that
        // only a node of the cluster may send it.
        core.metrics.record_auth_failure();
        return Err(ApiError::Auth(AuthError::PeerOnly(flag)).into());
    }
    if method == Method::Stats {
        // The node's count, not one core's: every core's shard.
        let items = core.snapshot_all().await.iter().map(|(s, _)| s.items).sum();
        return Ok(cache::encode_stats_response(items));
    }
    let reply = run_op(core, request).await;
    Ok(cache::encode_reply(method, reply)?)
}

/// Runs a decoded call. A call another node forwarded here must run on this
/// node whatever this node's ring says (views can differ briefly while
/// membership changes), so it never goes back out.
async fn run_op(core: &Core, request: CallRequest) -> Reply {
    if request.forwarded {
        run_forwarded(core, request.op).await
    } else {
        core.call(request.op).await
    }
}

/// The op of a forwarded call: on this node, on the core that owns the key,
/// without consulting the ring again. The sender already chose us; ring
/// views can differ for a moment during a membership change, and a second
/// hop could bounce the request between two nodes.
async fn run_forwarded(core: &Core, op: Op) -> Reply {
    // Proof that peer connections reach the key's home core: a forwarded
    // op that arrives elsewhere costs the cross-core hop `call_here` takes.
    let landing = match op.key() {
        Some(key) if core_of(key, core.cores) != core.id => Landing::OtherCore,
        _ => Landing::HomeCore,
    };
    core.metrics.record_forwarded_op(landing);
    core.call_here(op).await
}

/// `200`, the message, then the OK trailers.
async fn send_message_and_ok(mut respond: SendResponse<Bytes>, message: FramedMessage) {
    let mut stream = match respond.send_response(grpc_response(StatusCode::OK), false) {
        Ok(stream) => stream,
        Err(e) => {
            debug!("cannot send gRPC response headers: {e}");
            return;
        }
    };
    if let Err(e) = send_message(&mut stream, message, false).await {
        debug!("cannot send gRPC response message: {e}");
        return;
    }
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert(
        GRPC_STATUS,
        HeaderValue::from_static(Code::Ok.header_value()),
    );
    if let Err(e) = stream.send_trailers(trailers) {
        debug!("cannot send gRPC trailers: {e}");
    }
}

/// A trailers-only response: the status in the one header block, no body.
fn send_status(respond: &mut SendResponse<Bytes>, http_status: StatusCode, status: &Status) {
    let mut response = grpc_response(http_status);
    let headers = response.headers_mut();
    headers.insert(
        GRPC_STATUS,
        HeaderValue::from_static(status.code.header_value()),
    );
    if let Ok(message) = HeaderValue::from_str(&encode_message(&status.message)) {
        headers.insert(GRPC_MESSAGE, message);
    }
    if let Some(reason) = &status.reason {
        reason.write(headers);
    }
    if http_status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("POST"));
    }
    if let Err(e) = respond.send_response(response, true) {
        debug!("cannot send gRPC status {}: {e}", status.code);
    }
}

fn grpc_response(status: StatusCode) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
    response
}

/// In-process test support: a one-core node on a loopback port and a raw
/// h2 client, both on the test's own glommio executor.
#[cfg(test)]
pub(crate) mod testing {
    use std::cell::{Cell, RefCell};
    use std::future::Future;
    use std::net::SocketAddr;
    use std::rc::Rc;
    use std::sync::Arc;

    use bytes::Bytes;
    use glommio::channels::channel_mesh::MeshBuilder;
    use glommio::net::{TcpListener, TcpStream};
    use glommio::{LocalExecutorBuilder, Placement, Task};
    use h2::client::SendRequest;
    use http::{HeaderMap, StatusCode};

    use super::serve_grpc_connection;
    use crate::config::{Config, ServeArgs};
    use crate::grpc::io::TokioIo;
    use crate::grpc::percent::decode_message;
    use crate::grpc::status::Code;
    use crate::runtime::core::{Core, Envelope};
    use crate::runtime::lifecycle::Lifecycle;

    /// Runs `test` on a fresh single-thread glommio executor.
    pub fn run<F: Future>(test: impl FnOnce() -> F) -> F::Output {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(crate::runtime::platform::IO_MEMORY)
            .make()
            .expect("glommio executor (needs io_uring and `ulimit -l` >= 512 KiB)")
            .run(test())
    }

    /// A one-core node's `Core`, with `--max-key-bytes 64` and the given
    /// `--max-value-bytes`.
    pub async fn core(max_value_bytes: &str) -> Rc<Core> {
        let args = ServeArgs {
            cores: Some(1),
            max_key_bytes: Some(64),
            max_value_bytes: Some(max_value_bytes.to_string()),
            ..ServeArgs::default()
        };
        let config = Config::resolve(&args, &[0]).expect("test config");
        let (senders, _receivers) = MeshBuilder::<Envelope, _>::full(1, 16)
            .join()
            .await
            .expect("one-core mesh");
        // A single-node ring; the control thread is only needed for
        // /setpeer, which these tests do not use, so it is stopped at once.
        let me = crate::routing::Member {
            name: config.node_name.as_str().into(),
            http_addr: config.advertised_http(),
            grpc_addr: config.advertised_grpc(),
            cores: 1,
            resp_addr: config.advertised_resp(),
        };
        let board = crate::control::RingBoard::new(crate::control::initial_ring(&me, 50));
        let control =
            crate::control::spawn_control(crate::control::ControlConfig::new(me), board.clone())
                .expect("static control thread");
        let client = control.client();
        control.shutdown();
        Core::new(
            0,
            Arc::new(config),
            Arc::new(Lifecycle::default()),
            senders,
            board,
            client,
        )
    }

    /// A gRPC server for `core` on 127.0.0.1, counting connections and able
    /// to cut them all.
    pub struct Server {
        pub addr: SocketAddr,
        pub accepted: Rc<Cell<usize>>,
        connections: Rc<RefCell<Vec<Task<()>>>>,
        _accept: Task<()>,
    }

    impl Server {
        pub fn start(core: Rc<Core>) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            let addr = listener.local_addr().expect("local addr");
            let accepted = Rc::new(Cell::new(0));
            let connections = Rc::new(RefCell::new(Vec::new()));
            let (count, tasks) = (accepted.clone(), connections.clone());
            let accept = glommio::spawn_local(async move {
                while let Ok(stream) = listener.accept().await {
                    count.set(count.get() + 1);
                    let task = glommio::spawn_local(serve_grpc_connection(core.clone(), stream));
                    tasks.borrow_mut().push(task);
                }
            });
            Server {
                addr,
                accepted,
                connections,
                _accept: accept,
            }
        }

        /// Drops every open connection abruptly (as a crashed peer would).
        pub fn cut_connections(&self) {
            self.connections.borrow_mut().clear();
        }
    }

    /// A raw h2 client connection, driven by a task of its own.
    pub async fn connect(addr: SocketAddr) -> SendRequest<Bytes> {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, connection) = h2::client::handshake(TokioIo(stream))
            .await
            .expect("h2 handshake");
        glommio::spawn_local(async move {
            let _ = connection.await;
        })
        .detach();
        sender
    }

    #[derive(Debug)]
    pub struct RawResponse {
        pub status: StatusCode,
        pub headers: HeaderMap,
        pub body: Vec<u8>,
        pub trailers: Option<HeaderMap>,
    }

    impl RawResponse {
        /// grpc-status from the trailers, or from the headers of a
        /// trailers-only response.
        pub fn code(&self) -> Option<Code> {
            self.trailers
                .as_ref()
                .and_then(|t| t.get("grpc-status"))
                .or_else(|| self.headers.get("grpc-status"))
                .and_then(|v| Code::from_header(v.as_bytes()))
        }

        pub fn message(&self) -> String {
            self.trailers
                .as_ref()
                .and_then(|t| t.get("grpc-message"))
                .or_else(|| self.headers.get("grpc-message"))
                .map(|v| decode_message(v.as_bytes()))
                .unwrap_or_default()
        }
    }

    /// Sends one request with `body` and, if `end`, ends the request stream
    /// (else keeps it open until the response is complete).
    pub async fn call(
        sender: &SendRequest<Bytes>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        end: bool,
    ) -> RawResponse {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(()).expect("request");
        let mut sender = sender.clone().ready().await.expect("ready");
        let (response, mut stream) = sender.send_request(request, false).expect("send");
        stream
            .send_data(Bytes::copy_from_slice(body), end)
            .expect("send body");
        let response = response.await.expect("response");
        let (head, mut recv) = response.into_parts();
        let mut body = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.expect("response body");
            let _ = recv.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        let trailers = recv.trailers().await.expect("trailers");
        drop(stream);
        RawResponse {
            status: head.status,
            headers: head.headers,
            body,
            trailers,
        }
    }

    /// `bytes` with a gRPC length prefix.
    pub fn framed(bytes: &[u8]) -> Vec<u8> {
        let mut v = crate::grpc::frame::prefix(bytes.len()).to_vec();
        v.extend_from_slice(bytes);
        v
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use prost::Message;

    use super::testing::{self, call, framed, Server};
    use crate::grpc::status::Code;
    use crate::peer::{PeerClient, PeerConfig, PeerError};
    use crate::proto;

    const GRPC: (&str, &str) = ("content-type", "application/grpc");
    const GET: &str = "/nexuscache.v1.Cache/Get";
    const SET: &str = "/nexuscache.v1.Cache/Set";

    fn client(server: &Server) -> PeerClient {
        PeerClient::new(
            server.addr,
            PeerConfig {
                request_timeout: Duration::from_secs(5),
                ..PeerConfig::default()
            },
        )
    }

    fn status(result: Result<impl std::fmt::Debug, PeerError>) -> Code {
        match result {
            Err(PeerError::Status { code, .. }) => code,
            other => panic!("expected a gRPC status, got {other:?}"),
        }
    }

    #[test]
    fn set_get_delete_round_trip() {
        testing::run(|| async {
            let server = Server::start(testing::core("1MiB").await);
            let peer = client(&server);
            assert_eq!(peer.get(b"k").await.unwrap(), None);
            peer.set(b"k", Bytes::from_static(b"v1"), 0, true)
                .await
                .unwrap();
            assert_eq!(
                peer.get(b"k").await.unwrap().map(|h| (h.value, h.hot)),
                Some((Bytes::from_static(b"v1"), true))
            );
            // A value far over the initial 64 KiB window and the direct-send
            // size takes the flow-controlled path both ways.
            let big = Bytes::from((0..700_000u32).map(|i| i as u8).collect::<Vec<_>>());
            peer.set(b"big", big.clone(), 60, false).await.unwrap();
            assert_eq!(
                peer.get(b"big").await.unwrap().map(|h| (h.value, h.hot)),
                Some((big, false))
            );
            assert!(peer.delete(b"k").await.unwrap());
            assert!(!peer.delete(b"k").await.unwrap());
            assert_eq!(peer.get(b"k").await.unwrap(), None);
            assert_eq!(server.accepted.get(), 1);
        });
    }

    #[test]
    fn invalid_requests_get_the_documented_statuses() {
        testing::run(|| async {
            let server = Server::start(testing::core("1KiB").await);
            let peer = client(&server);
            assert_eq!(status(peer.get(b"").await), Code::InvalidArgument);
            assert_eq!(
                status(peer.delete(&[b'k'; 65]).await),
                Code::InvalidArgument
            );
            let small = Bytes::from_static(b"v");
            assert_eq!(
                status(peer.set(b"k", small.clone(), 259_201, false).await),
                Code::InvalidArgument
            );
            peer.set(b"k", small, 259_200, false).await.unwrap();
            let big = Bytes::from(vec![0u8; 1025]);
            assert_eq!(
                status(peer.set(b"k", big.clone(), 0, false).await),
                Code::ResourceExhausted
            );
            // Over the whole-message limit: refused from the prefix.
            let huge = Bytes::from(vec![0u8; 4096]);
            match peer.set(b"k", huge, 0, false).await {
                Err(PeerError::Status { code, message, .. }) => {
                    assert_eq!(code, Code::ResourceExhausted);
                    assert!(message.contains("limit"), "{message}");
                }
                other => panic!("{other:?}"),
            }
            // forward() turns a refused value into the shard's TooLarge.
            let op = crate::ops::Op::Set {
                key: Box::from(&b"k"[..]),
                value: big,
                ttl: Duration::ZERO,
                hot: false,
            };
            assert!(matches!(
                peer.forward(op).await,
                Ok(crate::ops::Reply::TooLarge(_))
            ));
            // The connection survived every refusal.
            assert_eq!(server.accepted.get(), 1);
        });
    }

    #[test]
    fn protocol_errors_on_the_raw_stream() {
        testing::run(|| async {
            let server = Server::start(testing::core("1KiB").await);
            let h2 = testing::connect(server.addr).await;
            let get = framed(
                &proto::GetRequest {
                    key: b"k".to_vec(),
                    forwarded: false,
                    keep_copy: false,
                }
                .encode_to_vec(),
            );

            let r = call(
                &h2,
                "POST",
                "/nexuscache.v1.Cache/Nope",
                &[GRPC],
                &get,
                true,
            )
            .await;
            assert_eq!(r.status, 200);
            assert_eq!(r.code(), Some(Code::Unimplemented), "{r:?}");
            assert!(r.message().contains("/nexuscache.v1.Cache/Nope"));

            let r = call(
                &h2,
                "POST",
                GET,
                &[("content-type", "text/plain")],
                &get,
                true,
            )
            .await;
            assert_eq!(r.status, 415, "{r:?}");

            let r = call(&h2, "POST", GET, &[], &get, true).await;
            assert_eq!(r.status, 415, "{r:?}");

            let r = call(&h2, "GET", GET, &[GRPC], b"", true).await;
            assert_eq!(r.status, 405, "{r:?}");
            assert_eq!(r.code(), Some(Code::Unimplemented));

            // application/grpc+proto is gRPC too.
            let r = call(
                &h2,
                "POST",
                GET,
                &[("content-type", "application/grpc+proto")],
                &get,
                true,
            )
            .await;
            assert_eq!(r.code(), Some(Code::Ok), "{r:?}");
            assert_eq!(r.headers.get("content-type").unwrap(), "application/grpc");

            let mut compressed = get.clone();
            compressed[0] = 1;
            let r = call(&h2, "POST", GET, &[GRPC], &compressed, true).await;
            assert_eq!(r.code(), Some(Code::Unimplemented));
            assert_eq!(r.message(), "compression not supported");

            let r = call(
                &h2,
                "POST",
                GET,
                &[GRPC],
                &framed(&[0xff, 0xff, 0xff]),
                true,
            )
            .await;
            assert_eq!(r.code(), Some(Code::InvalidArgument), "{r:?}");

            let r = call(&h2, "POST", GET, &[GRPC], b"", true).await;
            assert_eq!(r.code(), Some(Code::Internal), "{r:?}");

            let mut two = get.clone();
            two.extend_from_slice(&get);
            let r = call(&h2, "POST", GET, &[GRPC], &two, true).await;
            assert_eq!(r.code(), Some(Code::Internal), "{r:?}");

            let r = call(&h2, "POST", GET, &[GRPC], &get[..7], true).await;
            assert_eq!(r.code(), Some(Code::Internal), "{r:?}");

            let r = call(
                &h2,
                "POST",
                GET,
                &[GRPC, ("grpc-timeout", "soon")],
                &get,
                true,
            )
            .await;
            assert_eq!(r.code(), Some(Code::Internal), "{r:?}");

            // A prefix claiming 100 MiB is refused at once, while the client
            // is still "sending": nothing is buffered or awaited.
            let started = Instant::now();
            let r = call(&h2, "POST", SET, &[GRPC], &[0, 0x06, 0x40, 0, 0], false).await;
            assert_eq!(r.code(), Some(Code::ResourceExhausted), "{r:?}");
            assert!(started.elapsed() < Duration::from_secs(2));

            // The connection is still good after all of that.
            let r = call(&h2, "POST", GET, &[GRPC], &get, true).await;
            assert_eq!(r.code(), Some(Code::Ok), "{r:?}");
            assert_eq!(
                r.trailers.as_ref().unwrap().get("grpc-status").unwrap(),
                "0"
            );
            let resp = proto::GetResponse::decode(&r.body[5..]).unwrap();
            assert!(!resp.found);
            assert_eq!(server.accepted.get(), 1);
        });
    }

    #[test]
    fn grpc_timeout_answers_deadline_exceeded() {
        testing::run(|| async {
            let server = Server::start(testing::core("1KiB").await);
            let h2 = testing::connect(server.addr).await;
            // Half a message and no end of stream: the call cannot finish,
            // so only the deadline can answer it.
            let get = framed(
                &proto::GetRequest {
                    key: b"k".to_vec(),
                    forwarded: false,
                    keep_copy: false,
                }
                .encode_to_vec(),
            );
            for timeout in ["100m", "100000u", "99999999n"] {
                let started = Instant::now();
                let r = call(
                    &h2,
                    "POST",
                    GET,
                    &[GRPC, ("grpc-timeout", timeout)],
                    &get[..6],
                    false,
                )
                .await;
                let took = started.elapsed();
                assert_eq!(r.code(), Some(Code::DeadlineExceeded), "{r:?}");
                assert!(took >= Duration::from_millis(90), "{took:?}");
                assert!(took < Duration::from_secs(3), "{took:?}");
            }
        });
    }

    /// The generated tonic client (what programs use) against this server,
    /// in-process: the server on a glommio thread, tonic on tokio.
    #[test]
    fn tonic_client_interoperates() {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = futures_channel::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            testing::run(|| async move {
                let server = Server::start(testing::core("64KiB").await);
                addr_tx.send(server.addr).expect("report address");
                let _ = stop_rx.await;
            })
        });
        let addr = addr_rx.recv().expect("server address");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async {
            use proto::cache_client::CacheClient;
            let mut c = CacheClient::connect(format!("http://{addr}"))
                .await
                .expect("connect");
            let set = |key: &[u8], value: Vec<u8>| proto::SetRequest {
                key: key.to_vec(),
                value,
                ttl_seconds: 0,
                hot: true,
                forwarded: false,
            };
            let get = |key: &[u8]| proto::GetRequest {
                key: key.to_vec(),
                forwarded: false,
                keep_copy: false,
            };
            c.set(set(b"k", b"v".to_vec())).await.expect("set");
            let hit = c.get(get(b"k")).await.expect("get").into_inner();
            assert!(hit.found && hit.hot && hit.value == b"v", "{hit:?}");
            let deleted = c
                .delete(proto::DeleteRequest {
                    key: b"k".to_vec(),
                    forwarded: false,
                })
                .await
                .expect("delete");
            assert!(deleted.into_inner().deleted);
            assert!(!c.get(get(b"k")).await.expect("get").into_inner().found);

            let err = c.get(get(b"")).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
            let err = c.set(set(b"k", vec![0; 64 * 1024 + 1])).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
            let err = c.set(set(b"k", vec![0; 1 << 20])).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

            let mut req = tonic::Request::new(get(b"k"));
            req.set_timeout(Duration::from_secs(2));
            assert!(
                !c.get(req)
                    .await
                    .expect("get with deadline")
                    .into_inner()
                    .found
            );

            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect()
                .await
                .expect("connect");
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.expect("ready");
            let err = grpc
                .unary(
                    tonic::Request::new(get(b"k")),
                    http::uri::PathAndQuery::from_static("/nexuscache.v1.Cache/Nope"),
                    tonic_prost::ProstCodec::<proto::GetRequest, proto::GetResponse>::default(),
                )
                .await
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
        });
        drop(stop_tx);
        server.join().expect("server thread");
    }

    #[test]
    fn draining_closes_connections_after_their_calls() {
        testing::run(|| async {
            let core = testing::core("1KiB").await;
            let server = Server::start(core.clone());
            let peer = client(&server);
            peer.set(b"k", Bytes::from_static(b"v"), 0, false)
                .await
                .unwrap();
            assert!(peer.is_connected());
            assert_eq!(core.open_connections(), 1);
            core.set_draining();
            let started = Instant::now();
            while (peer.is_connected() || core.open_connections() > 0)
                && started.elapsed() < Duration::from_secs(3)
            {
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            assert!(!peer.is_connected(), "client still connected after GOAWAY");
            assert_eq!(core.open_connections(), 0);
        });
    }
}
