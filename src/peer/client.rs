//! [`PeerClient`]: one core's multiplexed HTTP/2 connection to one peer,
//! and the rule ([`Liveness`]) that finds a connection gone silently dead.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use futures_lite::future;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use glommio::timer::Timer;
use h2::client::SendRequest;
use h2::{Ping, PingPong};
use http::header::{HeaderValue, CONTENT_TYPE, TE};
use http::{HeaderMap, StatusCode, Uri};
use tracing::{debug, warn};

use super::streams::{read_unary, send_message, ReadError};
use super::{PeerConfig, PeerError};
use crate::auth::CLUSTER_SECRET_HEADER;
use crate::grpc::budget;
use crate::grpc::cache::{self, FramedMessage, Method};
use crate::grpc::io::TokioIo;
use crate::grpc::percent::decode_message;
use crate::grpc::reason::Reason;
use crate::grpc::status::Code;
use crate::grpc::{timeout, CONTENT_TYPE as GRPC_CONTENT_TYPE};
use crate::mutation::{Mutated, Mutation};
use crate::ops::{Hit, Op, ReplicaUpdate, Reply};
use crate::sockets::SendFirst;

/// How long a client connects without the home-core announcement after an
/// announced connection ended before any answer: a node from before
/// announcements takes the announcement for a broken HTTP/2 preface and
/// drops the connection, so during a rolling upgrade the new nodes reach
/// it plainly (at one failed call per this period and core) and try again
/// afterwards.
const PLAIN_AFTER_SILENT_ANNOUNCEMENT: Duration = Duration::from_secs(60);

/// A cheap, clonable handle to one core's connection to one peer node.
/// Clones share the connection. Not `Send`: it belongs to its core.
#[derive(Clone)]
pub struct PeerClient {
    inner: Rc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    /// The core of the peer this connection announces itself for (see
    /// [`super::announce`]); `None` sends plain HTTP/2.
    home_core: Option<u16>,
    /// Connect without the announcement until then: the last announced
    /// connection ended before the peer answered anything on it (see
    /// [`PLAIN_AFTER_SILENT_ANNOUNCEMENT`]).
    plain_until: Cell<Option<Instant>>,
    /// The connection generation that carried an announcement, and the
    /// latest one the peer answered a call on.
    announced_generation: Cell<u64>,
    answered_generation: Cell<u64>,
    config: PeerConfig,
    /// The URI of each method, in `Method::ALL` order.
    uris: [Uri; Method::ALL.len()],
    /// `grpc-timeout` of each method, in `Method::ALL` order.
    grpc_timeouts: [HeaderValue; Method::ALL.len()],
    state: RefCell<State>,
    /// Held while connecting, so concurrent first requests make one
    /// connection, not one each.
    connecting: tokio::sync::Mutex<()>,
    generation: Cell<u64>,
    /// Request bytes in flight: a request holds its message's size from
    /// before it is sent until the response head arrives (by then the
    /// peer has read all of it), so the peer never holds more than one
    /// connection budget of our partial messages.
    in_flight: tokio::sync::Semaphore,
    /// Permits of `in_flight`, the most one request may take.
    in_flight_limit: u32,
    /// Whether a liveness probe is running, and on which connection.
    liveness: RefCell<Liveness>,
}

enum State {
    /// Not connected: the next request connects.
    Idle,
    Ready {
        sender: SendRequest<Bytes>,
        /// Tells this connection apart from earlier ones, so news about an
        /// old connection never tears down a newer one.
        generation: u64,
        /// Sends PINGs on this connection; taken out while a probe runs.
        pings: Option<PingPong>,
        /// Sending `()` makes the task driving the connection drop it (and
        /// with it every stream still waiting on it). Dropping the sender
        /// does nothing.
        abort: Option<oneshot::Sender<()>>,
    },
    /// The last connect attempt failed, or the connection stopped
    /// answering PINGs: fail fast until `until`.
    Broken {
        until: Instant,
        reason: String,
        refused: bool,
    },
}

/// How one exchange went wrong, which decides what happens to the connection.
enum Failure {
    /// The connection was gone before the request left: safe to retry once
    /// on a fresh connection.
    NotSent(h2::Error),
    /// The connection failed under the request.
    Connection(h2::Error),
    /// An answer (or a protocol violation) that leaves the connection fine.
    Peer(PeerError),
    /// No answer within the call's time limit: the peer may be slow, or
    /// the connection may be dead ([`Liveness`] finds out which).
    TimedOut,
}

/// The dead-connection rule: when a call on an open connection times out,
/// the connection must answer an HTTP/2 PING within the connect timeout,
/// or it is dropped and the peer is backed off like after a failed connect.
///
/// Why a PING, and not "K timeouts in a row mean dead": a timeout alone
/// cannot tell a silently cut path from a peer that is merely slow (a read
/// waiting for the owner's origin load, a write waiting for its replica
/// updates, a large value on a slow link). Counting timeouts would tear
/// down healthy connections under load and still cost K full timeouts
/// before noticing a partition. The peer's HTTP/2 layer answers a PING
/// without touching the cache, so a PONG proves the path and the peer's
/// event loop alive, whatever the request is waiting for. It is bounded
/// by the connect timeout because that is how long a fresh connection's
/// round trips may take: a peer that cannot answer a PING in that time
/// could not be reconnected to either. Nothing happens on the request
/// path until a call times out, and at most one probe per connection
/// runs at a time, however many calls time out together.
///
/// This type holds only the decisions, with time passed in; the client
/// sends the PING and applies the verdict.
#[derive(Debug, Default)]
struct Liveness {
    /// The probe running, if any.
    probe: Option<Probe>,
}

/// One liveness check of connection `generation`, abandoned at `deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    generation: u64,
    deadline: Instant,
}

/// What a finished probe means for its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// It answered: keep it (the peer was just slow).
    Alive,
    /// No answer in time: drop it and fail fast until `retry_at`.
    Dead { retry_at: Instant },
    /// The probe was superseded (a newer connection is probed): ignore it.
    Superseded,
}

impl Liveness {
    /// A call on connection `generation` timed out at `now`: the probe to
    /// start, or `None` while one already checks that connection.
    fn call_timed_out(&mut self, generation: u64, now: Instant, limit: Duration) -> Option<Probe> {
        if matches!(self.probe, Some(p) if p.generation == generation) {
            return None;
        }
        let probe = Probe {
            generation,
            deadline: now + limit,
        };
        self.probe = Some(probe);
        Some(probe)
    }

    /// `probe` finished at `now`; `answered` if its PONG came back before
    /// the probe gave up (a late PONG still counts: a busy executor may
    /// see the timer and the PONG at once).
    fn probe_finished(
        &mut self,
        probe: Probe,
        answered: bool,
        now: Instant,
        backoff: Duration,
    ) -> Verdict {
        if self.probe != Some(probe) {
            return Verdict::Superseded;
        }
        self.probe = None;
        if answered {
            Verdict::Alive
        } else {
            Verdict::Dead {
                retry_at: now + backoff,
            }
        }
    }

    /// The probe could not start (the connection is already gone).
    fn cancel(&mut self, probe: Probe) {
        if self.probe == Some(probe) {
            self.probe = None;
        }
    }
}

/// How long a call of `method` may take.
fn time_limit(config: &PeerConfig, method: Method) -> Duration {
    match method {
        Method::Get => config.read_timeout,
        Method::Set | Method::Delete | Method::Mutate => config.write_timeout,
        Method::Replicate | Method::Stats => config.request_timeout,
    }
}

impl PeerClient {
    /// A client for the node whose gRPC port is at `addr`; nothing happens
    /// on the network until the first request.
    pub fn new(addr: SocketAddr, config: PeerConfig) -> PeerClient {
        PeerClient::build(addr, None, config)
    }

    /// A client whose connection asks the peer to serve it on `core` (the
    /// home core there of every key this client will carry): the peer
    /// hands it to that core at accept, so no call on it takes a
    /// cross-core hop there. A peer with fewer cores serves it on the core
    /// that accepted it.
    pub fn on_core(addr: SocketAddr, core: u16, config: PeerConfig) -> PeerClient {
        PeerClient::build(addr, Some(core), config)
    }

    fn build(addr: SocketAddr, home_core: Option<u16>, config: PeerConfig) -> PeerClient {
        let uri = |method: Method| {
            Uri::builder()
                .scheme("http")
                .authority(addr.to_string().as_str())
                .path_and_query(method.path())
                .build()
                // A socket address is always a valid authority and the
                // paths are constants.
                .unwrap_or_default()
        };
        let header = |limit| {
            HeaderValue::from_str(&timeout::encode(limit))
                .unwrap_or_else(|_| HeaderValue::from_static("1S"))
        };
        let grpc_timeouts = Method::ALL.map(|m| header(time_limit(&config, m)));
        let in_flight_limit = budget::connection_budget(config.max_response_bytes)
            .min(tokio::sync::Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize) as u32;
        PeerClient {
            inner: Rc::new(Inner {
                addr,
                home_core,
                plain_until: Cell::new(None),
                announced_generation: Cell::new(0),
                answered_generation: Cell::new(0),
                uris: Method::ALL.map(uri),
                grpc_timeouts,
                config,
                state: RefCell::new(State::Idle),
                connecting: tokio::sync::Mutex::new(()),
                generation: Cell::new(0),
                in_flight: tokio::sync::Semaphore::new(in_flight_limit as usize),
                in_flight_limit,
                liveness: RefCell::new(Liveness::default()),
            }),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The peer core this client's connection announces, if any.
    pub fn home_core(&self) -> Option<u16> {
        self.inner.home_core
    }

    /// Whether a connection is currently established.
    pub fn is_connected(&self) -> bool {
        matches!(*self.inner.state.borrow(), State::Ready { .. })
    }

    /// The hit, or `None` on a miss.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Hit>, PeerError> {
        self.fetch(key, false).await
    }

    /// A read; `keep_copy` tells the owner this node will keep the answer
    /// as a hot copy (so the owner invalidates it on the next write).
    pub async fn fetch(&self, key: &[u8], keep_copy: bool) -> Result<Option<Hit>, PeerError> {
        let message = self
            .call(Method::Get, cache::encode_get_request(key, true, keep_copy))
            .await?;
        cache::decode_get_response(message)
            .map_err(|e| self.protocol(format!("bad GetResponse: {e}")))
    }

    /// Stores `value` under `key` on the peer; `ttl_secs == 0` never expires.
    pub async fn set(
        &self,
        key: &[u8],
        value: Bytes,
        ttl_secs: u64,
        hot: bool,
    ) -> Result<(), PeerError> {
        let message = cache::encode_set_request(key, &value, ttl_secs, hot, true);
        let reply = self.call(Method::Set, message).await?;
        cache::decode_set_response(reply)
            .map_err(|e| self.protocol(format!("bad SetResponse: {e}")))
    }

    /// Whether a live entry was removed.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, PeerError> {
        let message = self
            .call(Method::Delete, cache::encode_delete_request(key, true))
            .await?;
        cache::decode_delete_response(message)
            .map_err(|e| self.protocol(format!("bad DeleteResponse: {e}")))
    }

    /// Runs `mutation` of `key` on the peer (its owner). A refusal (not an
    /// integer, ...) comes back typed, as the owner's own core answers it.
    pub async fn mutate(&self, key: &[u8], mutation: &Mutation) -> Result<Mutated, PeerError> {
        let message = self
            .call(
                Method::Mutate,
                cache::encode_mutate_request(key, mutation, true),
            )
            .await?;
        crate::grpc::mutate::decode_response(message, mutation)
            .map_err(|e| self.protocol(format!("bad MutateResponse: {e}")))
    }

    /// Stores or drops the peer's hot copy of `key`.
    pub async fn replicate(&self, key: &[u8], update: &ReplicaUpdate) -> Result<(), PeerError> {
        let message = self
            .call(
                Method::Replicate,
                cache::encode_replicate_request(key, update),
            )
            .await?;
        cache::decode_replicate_response(message)
            .map_err(|e| self.protocol(format!("bad ReplicateResponse: {e}")))
    }

    /// How many entries the peer holds in its shards (the keys it owns, not
    /// its hot copies): its share of a cluster-wide `DBSIZE`.
    pub async fn stats(&self) -> Result<u64, PeerError> {
        let message = self
            .call(Method::Stats, cache::encode_stats_request())
            .await?;
        cache::decode_stats_response(message)
            .map_err(|e| self.protocol(format!("bad StatsResponse: {e}")))
    }

    /// Runs a key op on the peer and answers as the owning core would have.
    /// A value the peer refuses as too large becomes `Reply::TooLarge`, like
    /// a local shard's refusal; every other failure is an error.
    pub async fn forward(&self, op: Op) -> Result<Reply, PeerError> {
        match op {
            Op::Get { key, keep_copy } => self.fetch(&key, keep_copy).await.map(Reply::Value),
            Op::Set {
                key,
                value,
                ttl,
                hot,
            } => {
                // Round up: a TTL never shrinks on its way to the owner.
                let ttl_secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
                match self.set(&key, value, ttl_secs, hot).await {
                    Ok(()) => Ok(Reply::Stored),
                    Err(PeerError::Status {
                        code: Code::ResourceExhausted,
                        message,
                        ..
                    }) => Ok(Reply::TooLarge(message)),
                    Err(e) => Err(e),
                }
            }
            Op::Delete { key } => self.delete(&key).await.map(Reply::Deleted),
            // Refusals and an entry too large come back with their reason
            // (the runtime maps those once, for every forwarded write).
            Op::Mutate { key, mutation } => self.mutate(&key, &mutation).await.map(Reply::Mutated),
            Op::Replicate { key, update } => {
                self.replicate(&key, &update).await.map(|()| Reply::Stored)
            }
            Op::Snapshot => Err(PeerError::NotForwardable("Snapshot")),
        }
    }

    /// One unary call: the response message, or why there is none.
    async fn call(&self, method: Method, message: FramedMessage) -> Result<Bytes, PeerError> {
        let mut retried = false;
        let limit = time_limit(&self.inner.config, method);
        let deadline = Instant::now() + limit;
        loop {
            let (sender, generation) = self.connection().await?;
            let left = deadline.saturating_duration_since(Instant::now());
            let exchange = self.exchange(sender, method, message.clone());
            let timer = async {
                Timer::new(left).await;
                Err(Failure::TimedOut)
            };
            let outcome = future::or(exchange, timer).await;
            if matches!(outcome, Ok(_) | Err(Failure::Peer(_))) {
                self.inner.answered_generation.set(generation);
            }
            match outcome {
                Ok(message) => return Ok(message),
                Err(Failure::Peer(e)) => return Err(e),
                Err(Failure::TimedOut) => {
                    self.check_liveness(generation);
                    return Err(PeerError::Timeout {
                        addr: self.inner.addr,
                        after: limit,
                    });
                }
                Err(Failure::NotSent(e)) if !retried => {
                    debug!(peer = %self.inner.addr, "connection gone before the request; reconnecting: {e}");
                    self.inner.connection_ended(generation);
                    retried = true;
                }
                Err(Failure::NotSent(e) | Failure::Connection(e)) => {
                    self.inner.connection_ended(generation);
                    return Err(PeerError::ConnectionLost {
                        addr: self.inner.addr,
                        reason: e.to_string(),
                    });
                }
            }
        }
    }

    /// The current connection, connecting first if there is none.
    async fn connection(&self) -> Result<(SendRequest<Bytes>, u64), PeerError> {
        if let Some(ready) = self.inner.current()? {
            return Ok(ready);
        }
        let _connecting = self.inner.connecting.lock().await;
        // Someone else may have connected (or failed) while we waited.
        if let Some(ready) = self.inner.current()? {
            return Ok(ready);
        }
        match self.connect().await {
            Ok(ready) => Ok(ready),
            Err(e) => {
                debug!(peer = %self.inner.addr, "connect failed: {e}");
                *self.inner.state.borrow_mut() = State::Broken {
                    until: Instant::now() + self.inner.config.reconnect_backoff,
                    reason: e.to_string(),
                    refused: e.peer_is_down(),
                };
                Err(e)
            }
        }
    }

    async fn connect(&self) -> Result<(SendRequest<Bytes>, u64), PeerError> {
        let addr = self.inner.addr;
        let announce = self.inner.home_core.filter(|_| {
            self.inner
                .plain_until
                .get()
                .is_none_or(|until| Instant::now() >= until)
        });
        let limit = self.inner.config.connect_timeout;
        let timed_out = PeerError::ConnectTimeout { addr, after: limit };
        let attempt = async {
            let stream = TcpStream::connect_timeout(addr, limit).await.map_err(|e| {
                match std::io::Error::from(e) {
                    e if e.kind() == std::io::ErrorKind::TimedOut => timed_out.clone(),
                    e => PeerError::Connect {
                        addr,
                        reason: e.to_string(),
                        refused: e.kind() == std::io::ErrorKind::ConnectionRefused,
                    },
                }
            })?;
            let _ = stream.set_nodelay(true);
            let mut stream = stream;
            if let Some(core) = announce {
                // Before the HTTP/2 preface, within the connect time limit.
                stream
                    .write_all(&super::announce::announcement(core))
                    .await
                    .map_err(|e| PeerError::Connect {
                        addr,
                        reason: format!("sending the home-core announcement: {e}"),
                        refused: false,
                    })?;
            }
            crate::grpc::h2_settings::client()
                .handshake::<_, Bytes>(TokioIo(SendFirst::new(stream)))
                .await
                .map_err(|e| PeerError::Connect {
                    addr,
                    reason: format!("HTTP/2 handshake: {e}"),
                    refused: false,
                })
        };
        let timer = async {
            Timer::new(limit).await;
            Err(timed_out.clone())
        };
        let (sender, mut connection) = future::or(attempt, timer).await?;
        let pings = connection.ping_pong();

        let generation = self.inner.generation.get() + 1;
        self.inner.generation.set(generation);
        if announce.is_some() {
            self.inner.announced_generation.set(generation);
        }
        // The connection does its I/O only while polled: a task of its own
        // drives it for as long as it lives (or until told to drop it), and
        // reports when it ends.
        let (abort, aborted) = oneshot::channel::<()>();
        let inner: Weak<Inner> = Rc::downgrade(&self.inner);
        glommio::spawn_local(async move {
            let run = async { connection.await.map_err(|e| e.to_string()) };
            let abort = async {
                match aborted.await {
                    Ok(()) => Err("dropped: it stopped answering".to_string()),
                    // The state let go of the sender: keep running.
                    Err(oneshot::Canceled) => future::pending().await,
                }
            };
            // Dropping the connection here fails the streams still on it.
            if let Err(e) = future::or(run, abort).await {
                debug!(peer = %addr, "connection ended: {e}");
            }
            if let Some(inner) = inner.upgrade() {
                inner.connection_ended(generation);
            }
        })
        .detach();
        *self.inner.state.borrow_mut() = State::Ready {
            sender: sender.clone(),
            generation,
            pings,
            abort: Some(abort),
        };
        debug!(peer = %addr, generation, "connected");
        Ok((sender, generation))
    }

    /// A call on connection `generation` timed out: unless a probe already
    /// runs, PING the peer in the background (the caller returns its
    /// timeout now) and drop the connection if no PONG comes back within
    /// the connect timeout (see [`Liveness`]).
    fn check_liveness(&self, generation: u64) {
        let inner = &self.inner;
        let limit = inner.config.connect_timeout;
        let Some(probe) =
            inner
                .liveness
                .borrow_mut()
                .call_timed_out(generation, Instant::now(), limit)
        else {
            return;
        };
        let pings = match &mut *inner.state.borrow_mut() {
            State::Ready {
                generation: current,
                pings,
                ..
            } if *current == generation => pings.take(),
            _ => None,
        };
        let Some(mut pings) = pings else {
            // Already replaced or gone (h2 hands out one `PingPong` per
            // connection, and it is ours): nothing left to check.
            inner.liveness.borrow_mut().cancel(probe);
            return;
        };
        let weak: Weak<Inner> = Rc::downgrade(inner);
        glommio::spawn_local(async move {
            let answered = {
                let pong = async { pings.ping(Ping::opaque()).await.is_ok() };
                let give_up = async {
                    Timer::new(limit).await;
                    false
                };
                future::or(pong, give_up).await
            };
            if let Some(inner) = weak.upgrade() {
                inner.probe_finished(probe, answered, pings);
            }
        })
        .detach();
    }

    /// Sends one request on the connection and reads its answer.
    async fn exchange(
        &self,
        sender: SendRequest<Bytes>,
        method: Method,
        message: FramedMessage,
    ) -> Result<Bytes, Failure> {
        let bytes = u32::try_from(message.len()).unwrap_or(u32::MAX);
        // The semaphore is never closed, so acquiring only waits.
        let in_flight = self
            .inner
            .in_flight
            .acquire_many(bytes.min(self.inner.in_flight_limit))
            .await
            .ok();
        let mut sender = sender.ready().await.map_err(Failure::NotSent)?;
        let (response, mut body) = sender
            .send_request(self.request(method), false)
            .map_err(Failure::NotSent)?;
        send_message(&mut body, message, true)
            .await
            .map_err(|e| self.h2_failure(e))?;
        let response = response.await.map_err(|e| self.h2_failure(e))?;
        // The peer has read the whole request (or refused it).
        drop(in_flight);
        let (head, mut body) = response.into_parts();

        if let Some(status) = head.headers.get("grpc-status") {
            // Trailers-only: the status came in the headers, no message.
            return Err(Failure::Peer(self.status_error(status, &head.headers)));
        }
        if head.status != StatusCode::OK {
            return Err(Failure::Peer(PeerError::Status {
                addr: self.inner.addr,
                code: Code::from_http_status(head.status.as_u16()),
                message: format!("HTTP status {}", head.status),
                reason: None,
            }));
        }
        let content_type = head
            .headers
            .get(CONTENT_TYPE)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !content_type.starts_with(GRPC_CONTENT_TYPE.as_bytes()) {
            return Err(Failure::Peer(self.protocol(format!(
                "content-type {:?} is not gRPC",
                String::from_utf8_lossy(content_type)
            ))));
        }
        let message = match read_unary(&mut body, self.inner.config.max_response_bytes).await {
            Ok(message) => message,
            Err(ReadError::Stream(e)) => return Err(self.h2_failure(e)),
            Err(ReadError::Frame(e)) => return Err(Failure::Peer(self.protocol(e.to_string()))),
        };
        let trailers = body
            .trailers()
            .await
            .map_err(|e| self.h2_failure(e))?
            .unwrap_or_default();
        match trailers.get("grpc-status") {
            None => Err(Failure::Peer(
                self.protocol("response ended without grpc-status"),
            )),
            Some(status) if status.as_bytes() != b"0" => {
                Err(Failure::Peer(self.status_error(status, &trailers)))
            }
            Some(_) => message.ok_or_else(|| {
                Failure::Peer(self.protocol("status OK without a response message"))
            }),
        }
    }

    fn request(&self, method: Method) -> http::Request<()> {
        let index = Method::ALL.iter().position(|m| *m == method).unwrap_or(0);
        let mut request = http::Request::new(());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.inner.uris[index].clone();
        *request.version_mut() = http::Version::HTTP_2;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert("grpc-timeout", self.inner.grpc_timeouts[index].clone());
        if let Some(secret) = &self.inner.config.cluster_secret {
            headers.insert(CLUSTER_SECRET_HEADER, secret.clone());
        }
        request
    }

    /// A stream-level reset leaves the connection alone; anything else
    /// (I/O error, GOAWAY) means the connection is finished.
    fn h2_failure(&self, e: h2::Error) -> Failure {
        if e.is_reset() && !e.is_go_away() {
            let reason = e.reason().map_or_else(
                || e.to_string(),
                |r| format!("stream reset by peer ({r:?})"),
            );
            return Failure::Peer(self.protocol(reason));
        }
        Failure::Connection(e)
    }

    fn status_error(&self, status: &HeaderValue, headers: &HeaderMap) -> PeerError {
        let Some(code) = Code::from_header(status.as_bytes()) else {
            return self.protocol(format!("invalid grpc-status {status:?}"));
        };
        if code == Code::Ok {
            return self.protocol("status OK without a response message");
        }
        PeerError::Status {
            addr: self.inner.addr,
            code,
            message: headers
                .get("grpc-message")
                .map(|m| decode_message(m.as_bytes()))
                .unwrap_or_default(),
            reason: Reason::read(headers),
        }
    }

    fn protocol(&self, reason: impl Into<String>) -> PeerError {
        PeerError::Protocol {
            addr: self.inner.addr,
            reason: reason.into(),
        }
    }
}

impl fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.inner.state.borrow() {
            State::Idle => "idle",
            State::Ready { .. } => "connected",
            State::Broken { .. } => "backing off",
        };
        f.debug_struct("PeerClient")
            .field("addr", &self.inner.addr)
            .field("home_core", &self.inner.home_core)
            .field("state", &state)
            .finish()
    }
}

impl Inner {
    /// The live connection, `None` if a connect is due, or the fail-fast
    /// error while backing off.
    fn current(&self) -> Result<Option<(SendRequest<Bytes>, u64)>, PeerError> {
        match &*self.state.borrow() {
            State::Ready {
                sender, generation, ..
            } => Ok(Some((sender.clone(), *generation))),
            State::Broken {
                until,
                reason,
                refused,
            } => {
                let now = Instant::now();
                if now < *until {
                    Err(PeerError::Backoff {
                        addr: self.addr,
                        reason: reason.clone(),
                        retry_in: *until - now,
                        refused: *refused,
                    })
                } else {
                    Ok(None)
                }
            }
            State::Idle => Ok(None),
        }
    }

    /// Applies a finished probe's verdict to its connection.
    fn probe_finished(&self, probe: Probe, answered: bool, pings: PingPong) {
        let now = Instant::now();
        let verdict = self.liveness.borrow_mut().probe_finished(
            probe,
            answered,
            now,
            self.config.reconnect_backoff,
        );
        let mut state = self.state.borrow_mut();
        let State::Ready {
            generation,
            pings: slot,
            abort,
            ..
        } = &mut *state
        else {
            return;
        };
        if *generation != probe.generation {
            return;
        }
        match verdict {
            Verdict::Alive => *slot = Some(pings),
            Verdict::Superseded => {}
            Verdict::Dead { retry_at } => {
                let limit = self.config.connect_timeout;
                warn!(
                    peer = %self.addr,
                    "peer connection dropped: no answer to a PING within {limit:?} after a \
                     request timed out; failing fast for {:?}",
                    self.config.reconnect_backoff
                );
                if let Some(abort) = abort.take() {
                    let _ = abort.send(());
                }
                *state = State::Broken {
                    until: retry_at,
                    reason: format!("no answer to a PING within {limit:?}"),
                    refused: false,
                };
            }
        }
    }

    /// Connection `generation` is finished: the next request reconnects
    /// (a connect failure then starts the backoff).
    fn connection_ended(&self, generation: u64) {
        let mut state = self.state.borrow_mut();
        if matches!(*state, State::Ready { generation: g, .. } if g == generation) {
            *state = State::Idle;
            if self.announced_generation.get() == generation
                && self.answered_generation.get() != generation
            {
                debug!(
                    peer = %self.addr,
                    "announced connection ended before any answer (a node from before \
                     home-core announcements?); connecting without it for \
                     {PLAIN_AFTER_SILENT_ANNOUNCEMENT:?}"
                );
                self.plain_until
                    .set(Some(Instant::now() + PLAIN_AFTER_SILENT_ANNOUNCEMENT));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use std::cell::RefCell;
    use std::future::Future;

    use bytes::Bytes;
    use futures_lite::AsyncWriteExt;
    use glommio::net::TcpListener;

    use super::*;
    use crate::api::grpc::testing::{self, Server};

    fn config(request_timeout_ms: u64, backoff_ms: u64) -> PeerConfig {
        PeerConfig {
            connect_timeout: Duration::from_millis(200),
            request_timeout: Duration::from_millis(request_timeout_ms),
            read_timeout: Duration::from_millis(request_timeout_ms),
            write_timeout: Duration::from_millis(request_timeout_ms),
            reconnect_backoff: Duration::from_millis(backoff_ms),
            ..PeerConfig::default()
        }
    }

    /// A gRPC server for `core` whose open connections can be frozen: a
    /// frozen connection is never polled again but stays open, so its
    /// client sees no answer, no PONG and no close (a silent partition as
    /// far as HTTP/2 can tell). Connections accepted later work.
    struct FreezableServer {
        addr: SocketAddr,
        accepted: Rc<Cell<usize>>,
        frozen: Rc<RefCell<Vec<Rc<Cell<bool>>>>>,
        _accept: glommio::Task<()>,
    }

    impl FreezableServer {
        fn start(core: Rc<crate::runtime::core::Core>) -> FreezableServer {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let accepted = Rc::new(Cell::new(0));
            let frozen = Rc::new(RefCell::new(Vec::new()));
            let (count, flags) = (accepted.clone(), frozen.clone());
            let accept = glommio::spawn_local(async move {
                while let Ok(stream) = listener.accept().await {
                    count.set(count.get() + 1);
                    let flag = Rc::new(Cell::new(false));
                    flags.borrow_mut().push(flag.clone());
                    let serve = crate::api::grpc::serve_grpc_connection(core.clone(), stream);
                    glommio::spawn_local(async move {
                        let mut serve = std::pin::pin!(serve);
                        std::future::poll_fn(|cx| {
                            if flag.get() {
                                return std::task::Poll::Pending;
                            }
                            serve.as_mut().poll(cx)
                        })
                        .await
                    })
                    .detach();
                }
            });
            FreezableServer {
                addr,
                accepted,
                frozen,
                _accept: accept,
            }
        }

        fn freeze_open_connections(&self) {
            for flag in self.frozen.borrow().iter() {
                flag.set(true);
            }
        }
    }

    /// Polls (bounded) until `done`; how long that took.
    async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) -> Duration {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
        started.elapsed()
    }

    #[test]
    fn a_silently_dead_connection_is_dropped_and_the_peer_backed_off() {
        testing::run(|| async {
            let server = FreezableServer::start(testing::core("1KiB").await);
            // Reads give up after 150 ms, writes after 3 s; PINGs get the
            // 200 ms connect timeout; the backoff lasts 400 ms.
            let peer = PeerClient::new(
                server.addr,
                PeerConfig {
                    write_timeout: Duration::from_secs(3),
                    ..config(150, 400)
                },
            );
            peer.set(b"k", Bytes::from_static(b"v"), 0, false)
                .await
                .unwrap();
            server.freeze_open_connections();

            // A slow write is in flight on the dead connection when a read
            // times out.
            let write = {
                let peer = peer.clone();
                glommio::spawn_local(async move {
                    let started = Instant::now();
                    let result = peer.set(b"w", Bytes::from_static(b"x"), 0, false).await;
                    (result, started.elapsed())
                })
            };
            let started = Instant::now();
            let read = peer.get(b"k").await;
            assert!(matches!(read, Err(PeerError::Timeout { .. })), "{read:?}");
            assert!(started.elapsed() >= Duration::from_millis(140));
            // No PONG within the connect timeout: the connection is dropped.
            let verdict = wait_until(
                "the dead connection dropped",
                Duration::from_secs(2),
                || !peer.is_connected(),
            )
            .await;
            assert!(verdict < Duration::from_millis(600), "{verdict:?}");
            // ... failing the write waiting on it at once, not after 3 s.
            let (written, took) = write.await;
            assert!(
                matches!(written, Err(PeerError::ConnectionLost { .. })),
                "{written:?}"
            );
            assert!(took < Duration::from_millis(1500), "{took:?}");

            // During the backoff every call fails at once, without claiming
            // the peer is down (it may be alive behind the partition).
            let fast = Instant::now();
            for _ in 0..50 {
                let next = peer.get(b"k").await;
                assert!(matches!(next, Err(PeerError::Backoff { .. })), "{next:?}");
                let e = next.unwrap_err();
                assert!(!e.peer_is_down());
                assert_eq!(e.code(), Code::Unavailable);
            }
            assert!(
                fast.elapsed() < Duration::from_millis(100),
                "{:?}",
                fast.elapsed()
            );

            // After the backoff a fresh connection is made and works.
            let healed = Instant::now();
            let value = loop {
                match peer.get(b"k").await {
                    Ok(hit) => break hit.map(|h| h.value),
                    Err(PeerError::Backoff { .. }) => {
                        assert!(healed.elapsed() < Duration::from_secs(2));
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => panic!("after the backoff: {e}"),
                }
            };
            assert_eq!(value, Some(Bytes::from_static(b"v")));
            assert_eq!(server.accepted.get(), 2);
        });
    }

    #[test]
    fn a_slow_peer_that_answers_pings_keeps_its_connection() {
        testing::run(|| async {
            // An HTTP/2 server that accepts every request and never answers
            // one, while its connection (and so its PONGs) keeps running.
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let accepted = Rc::new(Cell::new(0));
            let count = accepted.clone();
            let _server = glommio::spawn_local(async move {
                while let Ok(stream) = listener.accept().await {
                    count.set(count.get() + 1);
                    glommio::spawn_local(async move {
                        let Ok(mut connection) = h2::server::handshake(TokioIo(stream)).await
                        else {
                            return;
                        };
                        let mut held = Vec::new();
                        while let Some(Ok(request)) = connection.accept().await {
                            held.push(request);
                        }
                    })
                    .detach();
                }
            });
            let peer = PeerClient::new(addr, config(150, 400));
            for round in 0..3 {
                let result = peer.get(b"k").await;
                assert!(
                    matches!(result, Err(PeerError::Timeout { .. })),
                    "round {round}: {result:?}"
                );
                wait_until("the probe finished", Duration::from_secs(2), || {
                    peer.inner.liveness.borrow().probe.is_none()
                })
                .await;
                assert!(
                    peer.is_connected(),
                    "round {round}: a live connection dropped"
                );
            }
            assert_eq!(accepted.get(), 1);
        });
    }

    #[test]
    fn one_probe_per_connection_however_many_calls_time_out() {
        let t0 = Instant::now();
        let limit = Duration::from_millis(200);
        let mut liveness = Liveness::default();
        let first = liveness.call_timed_out(1, t0, limit).unwrap();
        assert_eq!(first.deadline, t0 + limit);
        for later in [1, 50, 199, 500] {
            let now = t0 + Duration::from_millis(later);
            assert_eq!(liveness.call_timed_out(1, now, limit), None);
        }
        // A newer connection gets its own probe; the old one's result is
        // then ignored.
        let t1 = t0 + Duration::from_millis(300);
        let second = liveness.call_timed_out(2, t1, limit).unwrap();
        let backoff = Duration::from_secs(1);
        assert_eq!(
            liveness.probe_finished(first, false, t1, backoff),
            Verdict::Superseded
        );
        assert_eq!(liveness.call_timed_out(2, t1, limit), None);
        assert_eq!(
            liveness.probe_finished(second, true, t1, backoff),
            Verdict::Alive
        );
    }

    #[test]
    fn a_pong_keeps_the_connection_and_silence_backs_the_peer_off() {
        let t0 = Instant::now();
        let limit = Duration::from_millis(200);
        let backoff = Duration::from_secs(1);
        let mut liveness = Liveness::default();
        let probe = liveness.call_timed_out(7, t0, limit).unwrap();
        let answered_at = t0 + Duration::from_millis(3);
        assert_eq!(
            liveness.probe_finished(probe, true, answered_at, backoff),
            Verdict::Alive
        );
        // The next timeout probes again (a live connection may die later).
        let t1 = t0 + Duration::from_secs(5);
        let probe = liveness.call_timed_out(7, t1, limit).unwrap();
        let gave_up = t1 + limit;
        assert_eq!(
            liveness.probe_finished(probe, false, gave_up, backoff),
            Verdict::Dead {
                retry_at: gave_up + backoff
            }
        );
        // Finished probes are forgotten; so is a cancelled one.
        assert_eq!(
            liveness.probe_finished(probe, false, gave_up, backoff),
            Verdict::Superseded
        );
        let probe = liveness.call_timed_out(8, gave_up, limit).unwrap();
        liveness.cancel(probe);
        assert!(liveness.call_timed_out(8, gave_up, limit).is_some());
    }

    /// A loopback port with nothing listening on it.
    fn closed_port() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[test]
    fn concurrent_requests_share_one_connection() {
        testing::run(|| async {
            let server = Server::start(testing::core("1MiB").await);
            let peer = PeerClient::new(server.addr, config(5000, 100));
            let done = Rc::new(Cell::new(0));
            let tasks: Vec<_> = (0..64)
                .map(|i| {
                    let (peer, done) = (peer.clone(), done.clone());
                    glommio::spawn_local(async move {
                        let key = format!("key-{i}");
                        let value = Bytes::from(format!("value-{i}"));
                        peer.set(key.as_bytes(), value.clone(), 0, false)
                            .await
                            .unwrap();
                        assert_eq!(
                            peer.get(key.as_bytes())
                                .await
                                .unwrap()
                                .map(|h| (h.value, h.hot)),
                            Some((value, false))
                        );
                        done.set(done.get() + 1);
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
            assert_eq!(done.get(), 64);
            assert_eq!(
                server.accepted.get(),
                1,
                "requests must share one connection"
            );
        });
    }

    #[test]
    fn concurrent_large_writes_stay_within_the_peers_budget() {
        testing::run(|| async {
            // The server holds at most 4 MiB of partial messages per
            // connection; eight 1 MiB writes at once would pass it if all
            // were sent at once (h2 interleaves their frames).
            let server = Server::start(testing::core("1MiB").await);
            let peer = PeerClient::new(server.addr, config(10_000, 100));
            let value = Bytes::from(vec![7u8; 1 << 20]);
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let (peer, value) = (peer.clone(), value.clone());
                    glommio::spawn_local(async move {
                        peer.set(format!("big-{i}").as_bytes(), value, 0, false)
                            .await
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("no write refused for the peer's budget");
            }
            assert_eq!(server.accepted.get(), 1);
            assert_eq!(
                peer.inner.in_flight.available_permits(),
                peer.inner.in_flight_limit as usize,
                "every request gave its bytes back"
            );
        });
    }

    #[test]
    fn a_dead_peer_fails_fast_during_the_backoff() {
        testing::run(|| async {
            let addr = closed_port();
            let peer = PeerClient::new(addr, config(500, 300));
            let started = Instant::now();
            let first = peer.get(b"k").await;
            assert!(matches!(first, Err(PeerError::Connect { .. })), "{first:?}");
            assert!(
                first.unwrap_err().peer_is_down(),
                "a closed port proves the peer down"
            );
            for _ in 0..100 {
                let next = peer.get(b"k").await;
                assert!(matches!(next, Err(PeerError::Backoff { .. })), "{next:?}");
                assert!(next.as_ref().unwrap_err().peer_is_down());
                assert_eq!(next.unwrap_err().code(), Code::Unavailable);
            }
            assert!(started.elapsed() < Duration::from_millis(300));
            glommio::timer::sleep(Duration::from_millis(320)).await;
            // The window passed: one new attempt, which fails again.
            let again = peer.get(b"k").await;
            assert!(matches!(again, Err(PeerError::Connect { .. })), "{again:?}");
        });
    }

    #[test]
    fn a_silent_peer_times_out_instead_of_hanging() {
        testing::run(|| async {
            // Accepts connections and never says a word.
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let _hold = glommio::spawn_local(async move {
                let mut held = Vec::new();
                while let Ok(stream) = listener.accept().await {
                    held.push(stream);
                }
            });
            let peer = PeerClient::new(addr, config(150, 100));
            for _ in 0..2 {
                let started = Instant::now();
                let result = peer.get(b"k").await;
                let took = started.elapsed();
                assert!(
                    matches!(result, Err(PeerError::Timeout { .. })),
                    "{result:?}"
                );
                assert!(took >= Duration::from_millis(140), "{took:?}");
                assert!(took < Duration::from_secs(1), "{took:?}");
            }
        });
    }

    #[test]
    fn a_peer_that_is_not_grpc_is_an_error_not_a_hang() {
        testing::run(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let _server = glommio::spawn_local(async move {
                while let Ok(mut stream) = listener.accept().await {
                    let _ = stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
                        .await;
                    let _ = stream.close().await;
                }
            });
            let peer = PeerClient::new(addr, config(1000, 100));
            let started = Instant::now();
            let result = peer.get(b"k").await;
            assert!(
                matches!(
                    result,
                    Err(PeerError::ConnectionLost { .. } | PeerError::Protocol { .. })
                ),
                "{result:?}"
            );
            assert!(started.elapsed() < Duration::from_millis(900));
        });
    }

    #[test]
    fn reconnects_after_the_connection_drops() {
        testing::run(|| async {
            let server = Server::start(testing::core("1KiB").await);
            let peer = PeerClient::new(server.addr, config(2000, 100));
            peer.set(b"k", Bytes::from_static(b"v"), 0, false)
                .await
                .unwrap();
            assert!(peer.is_connected());
            server.cut_connections();
            let started = Instant::now();
            while peer.is_connected() && started.elapsed() < Duration::from_secs(2) {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            assert!(
                !peer.is_connected(),
                "the closed connection was not noticed"
            );
            // No backoff after a connection (not a connect) failed.
            assert_eq!(
                peer.get(b"k").await.unwrap().map(|h| (h.value, h.hot)),
                Some((Bytes::from_static(b"v"), false))
            );
            assert_eq!(server.accepted.get(), 2);
        });
    }

    /// A node from before home-core announcements (it serves HTTP/2 only,
    /// like `testing::Server`) drops an announced connection as a bad
    /// preface: the client falls back to plain HTTP/2 at once.
    #[test]
    fn a_peer_that_does_not_understand_announcements_is_reached_plainly() {
        testing::run(|| async {
            let server = Server::start(testing::core("1KiB").await);
            let peer = PeerClient::on_core(server.addr, 1, config(2000, 100));
            let mut failed = 0;
            let mut stored = false;
            for _ in 0..3 {
                match peer.set(b"k", Bytes::from_static(b"v"), 0, false).await {
                    Ok(()) => {
                        stored = true;
                        break;
                    }
                    Err(e) => {
                        failed += 1;
                        assert!(!e.peer_is_down(), "{e}");
                    }
                }
            }
            assert!(stored, "never reached the peer");
            assert!(failed <= 1, "{failed} calls failed before the fallback");
            assert_eq!(
                peer.get(b"k").await.unwrap().map(|h| h.value),
                Some(Bytes::from_static(b"v"))
            );
            assert!(peer.inner.plain_until.get().is_some());
        });
    }

    #[test]
    fn forward_maps_ops_and_refuses_snapshots() {
        testing::run(|| async {
            let server = Server::start(testing::core("1KiB").await);
            let peer = PeerClient::new(server.addr, config(2000, 100));
            let set = Op::Set {
                key: Box::from(&b"k"[..]),
                value: Bytes::from_static(b"v"),
                ttl: Duration::from_millis(1500),
                hot: true,
            };
            assert!(matches!(peer.forward(set).await, Ok(Reply::Stored)));
            let get = Op::get(Box::from(&b"k"[..]));
            match peer.forward(get).await {
                Ok(Reply::Value(Some(hit))) => assert!(hit.value == "v" && hit.hot),
                other => panic!("{other:?}"),
            }
            let delete = Op::Delete {
                key: Box::from(&b"k"[..]),
            };
            assert!(matches!(
                peer.forward(delete).await,
                Ok(Reply::Deleted(true))
            ));
            assert!(matches!(
                peer.forward(Op::Snapshot).await,
                Err(PeerError::NotForwardable(_))
            ));
        });
    }
}
