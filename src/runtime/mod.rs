//! Process start-up and shutdown: one pinned glommio executor per data core,
//! a full channel mesh between them, and the control thread (this one) that
//! waits for signals.
//!
//! ```text
//! main thread (control): start cores -> wait until all bound -> wait for SIGTERM/SIGINT
//!   core i (glommio, pinned): join meshes -> bind the HTTP, gRPC and RESP ports
//!                             (SO_REUSEPORT) -> accept loops
//!                             mesh receivers: execute ops other cores send here
//!                             handoff receivers: serve peer connections other cores accepted for us
//!                             housekeeping: TTL sweep, watch the lifecycle flags
//! ```
//!
//! The kernel spreads connections on the shared gRPC port over the cores;
//! a peer connection that announces its target core
//! ([`crate::peer::announce`]) is moved to that core once, at accept,
//! through a second channel mesh that carries sockets, so the ops on it
//! never hop between cores here.

pub mod core;
pub mod lifecycle;
pub mod log_limit;
pub mod platform;
mod reads;
mod replicas;
pub mod uring_flags;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{debug, error, info, warn};

use self::core::{Core, Envelope};
use self::lifecycle::Lifecycle;
use self::log_limit::{Backoff, LogLimiter};
use crate::api::grpc::{read_opening, serve_grpc_connection_after, Opening};
use crate::api::http::conn::serve_connection;
use crate::api::resp::serve_resp_connection;
use crate::config::Config;
use crate::control::{self, ControlClient, ControlConfig, RingBoard};
use crate::error::StartupError;
use crate::metrics::Announcement;
use crate::routing::Member;

/// Depth of each core-to-core channel; a full channel makes the sender wait.
const MESH_CHANNEL_DEPTH: usize = 1024;
/// Peer connections waiting to be taken over by their target core; a full
/// channel makes the accepting core serve the connection itself.
const HANDOFF_CHANNEL_DEPTH: usize = 64;
/// Pending connections per core's listener before the kernel refuses more.
const LISTEN_BACKLOG: i32 = 4096;
/// How often cores look at the lifecycle flags.
const LIFECYCLE_POLL: Duration = Duration::from_millis(25);
/// How long start-up waits for etcd's membership before serving anyway.
const ETCD_SYNC_WAIT: Duration = Duration::from_secs(2);
/// How long /readyz answers 503 before listeners close, so load balancers
/// stop sending new connections before they would be refused.
const PRE_STOP_DELAY: Duration = Duration::from_millis(300);
/// First and longest pause after a failed accept (EMFILE: the process is
/// out of file descriptors and the connection stays in the backlog, so an
/// immediate retry would spin). Doubles while accepts keep failing.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(1);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(100);
/// At most one "accept failed" line per core per this period, carrying the
/// count of failures it stands for.
const ACCEPT_WARN_PERIOD: Duration = Duration::from_secs(1);

/// What every core gets a handle to: read-mostly state owned by the control
/// thread, which cores look at from their housekeeping timer.
#[derive(Clone)]
struct NodeShared {
    config: Arc<Config>,
    lifecycle: Arc<Lifecycle>,
    board: Arc<RingBoard>,
    control: ControlClient,
}

/// A peer connection on its way from the core that accepted it to the core
/// it announced: the socket (a duplicate of the accepting core's fd, which
/// that core closes) and the bytes read after the announcement.
struct Handoff {
    socket: OwnedFd,
    rest: Vec<u8>,
}

/// What a core reports to the control thread once it can serve.
type StartReport = Result<usize, StartupError>;

/// Run a node until SIGTERM/SIGINT; returns after a clean drain.
pub fn serve(config: Config) -> Result<(), StartupError> {
    let config = Arc::new(config);
    platform::ensure_memlock(config.cores())?;
    platform::probe_io_uring()?;
    platform::raise_nofile(config.max_connections);
    ensure_port_free(config.http_addr())?;
    ensure_port_free(config.grpc_addr())?;
    if let Some(addr) = config.resp_addr() {
        ensure_port_free(addr)?;
    }
    crate::api::resp::mark_started();

    let me = Member {
        name: config.node_name.as_str().into(),
        http_addr: config.advertised_http(),
        grpc_addr: config.advertised_grpc(),
        cores: config.cores() as u32,
        resp_addr: config.advertised_resp(),
    };
    let board = RingBoard::new(control::initial_ring(&me, config.vnodes));
    let mut control_config = ControlConfig::new(me);
    control_config.etcd_endpoints = config.etcd.clone();
    control_config.lease_ttl = config.lease_ttl();
    control_config.vnodes = config.vnodes;
    control_config.static_peers = control::parse_static_peers(&config.peers)
        .map_err(|e| StartupError::Config(format!("--peers: {e}")))?;
    control_config.allow_setpeer_addr = config.allow_setpeer_addr;
    control_config.max_ring_members = config.max_ring_members;
    let control = control::spawn_control(control_config, board.clone()).map_err(|e| match e {
        control::ControlError::Config(reason) => StartupError::Config(reason),
        other => StartupError::Other(format!("cannot start the control thread: {other}")),
    })?;

    let lifecycle = Arc::new(Lifecycle::default());
    let signals = install_signal_handler(lifecycle.clone())?;
    let node = NodeShared {
        config: config.clone(),
        lifecycle: lifecycle.clone(),
        board,
        control: control.client(),
    };
    let mesh = MeshBuilder::<Envelope, _>::full(config.cores(), MESH_CHANNEL_DEPTH);
    let handoffs = MeshBuilder::<Handoff, _>::full(config.cores(), HANDOFF_CHANNEL_DEPTH);
    let (report_tx, report_rx) = crossbeam_channel::unbounded::<StartReport>();

    let mut handles = Vec::with_capacity(config.cores());
    for (id, &cpu) in config.cpus.iter().enumerate() {
        let placement = if config.pin {
            Placement::Fixed(cpu)
        } else {
            Placement::Unbound
        };
        let (node, mesh, report) = (node.clone(), mesh.clone(), report_tx.clone());
        let handoffs = handoffs.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("nc-core-{id}"))
            .io_memory(platform::IO_MEMORY)
            .spawn(move || run_core(id, node, mesh, handoffs, report))
            .map_err(|e| StartupError::Executor {
                core: id,
                message: format!(
                    "{e}; glommio needs io_uring and locked memory (`ulimit -l unlimited`)"
                ),
            })?;
        handles.push(handle);
    }
    drop(report_tx);

    let mut started = 0;
    while started < config.cores() {
        match report_rx.recv() {
            Ok(Ok(_)) => started += 1,
            Ok(Err(e)) => {
                lifecycle.start_closing();
                join_cores(handles);
                return Err(e);
            }
            Err(_) => {
                join_cores(handles);
                return Err(StartupError::Other(
                    "a data core exited during start-up".into(),
                ));
            }
        }
    }
    // Serve with the membership etcd has now rather than a lonely ring, but
    // never wait long: a node must start while etcd is down.
    if !config.etcd.is_empty() && !control.wait_synced(ETCD_SYNC_WAIT) {
        warn!("etcd not reachable yet; serving with the last known ring and retrying");
    }
    let (coop_rings, plain_rings) = uring_flags::rings_created();
    if plain_rings > 0 {
        warn!(
            coop_rings,
            plain_rings,
            "the kernel rejected IORING_SETUP_COOP_TASKRUN (Linux 5.19+): every I/O \
             completion will interrupt a busy core, costing throughput"
        );
    }
    info!(
        node = %config.node_name,
        http = %config.http_addr(),
        grpc = %config.grpc_addr(),
        resp = %config.resp_addr().map_or_else(|| "off".to_string(), |a| a.to_string()),
        cores = config.cores(),
        cpus = ?config.cpus,
        max_memory = config.max_memory,
        coop_rings,
        "nexuscache ready"
    );

    // The control thread has nothing else to do yet: wait for a signal.
    let signal = signals.recv();
    info!(?signal, "draining: /readyz now 503, leaving the ring");
    // Leave the ring first (revokes the lease) so peers stop forwarding to
    // us while our in-flight requests finish.
    control.shutdown();
    std::thread::sleep(PRE_STOP_DELAY);
    lifecycle.start_closing();
    join_cores(handles);
    info!("all cores drained; exiting");
    Ok(())
}

fn join_cores(handles: Vec<glommio::ExecutorJoinHandle<()>>) {
    for handle in handles {
        if let Err(e) = handle.join() {
            error!("data core failed: {e}");
        }
    }
}

/// SO_REUSEPORT would let us share a port with a stray process of the same
/// user and silently split its traffic; a plain bind first rules that out.
fn ensure_port_free(addr: SocketAddr) -> Result<(), StartupError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| StartupError::Bind { addr, source })
}

/// A listening socket on the shared port. Every core binds its own with
/// SO_REUSEPORT and the kernel spreads new connections across them.
fn bind_shared(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket)
}

/// SIGTERM/SIGINT set the draining flag and wake the control thread.
fn install_signal_handler(
    lifecycle: Arc<Lifecycle>,
) -> Result<crossbeam_channel::Receiver<i32>, StartupError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| StartupError::Other(format!("cannot install signal handlers: {e}")))?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("nc-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                lifecycle.start_draining();
                let _ = tx.send(signal);
            }
        })
        .map_err(|e| StartupError::Other(format!("cannot start signal thread: {e}")))?;
    Ok(rx)
}

async fn run_core(
    id: usize,
    node: NodeShared,
    mesh: MeshBuilder<Envelope, Full>,
    handoffs: MeshBuilder<Handoff, Full>,
    report: crossbeam_channel::Sender<StartReport>,
) {
    let NodeShared {
        config,
        lifecycle,
        board,
        control,
    } = node;
    let (senders, mut receivers) = match mesh.join().await {
        Ok(joined) => joined,
        Err(_) => {
            let _ = report.send(Err(StartupError::Executor {
                core: id,
                message: "could not join the core mesh".into(),
            }));
            return;
        }
    };
    let (handoff_senders, mut handoff_receivers) = match handoffs.join().await {
        Ok(joined) => joined,
        Err(_) => {
            let _ = report.send(Err(StartupError::Executor {
                core: id,
                message: "could not join the connection handoff mesh".into(),
            }));
            return;
        }
    };
    let core = Core::new(
        id,
        config.clone(),
        lifecycle.clone(),
        senders,
        board,
        control,
    );
    // This core's peer connections announce this core's id: the home core
    // at the peer of every key this core forwards (equal core counts).
    core.peers.set_local_core(id);

    // Serve ops from every other core for as long as any core may send.
    let mut mesh_tasks = Vec::new();
    for (_, mut stream) in receivers.streams() {
        let core = core.clone();
        mesh_tasks.push(glommio::spawn_local(async move {
            while let Some(envelope) = stream.next().await {
                core.serve_envelope(envelope);
            }
        }));
    }
    for (_, mut stream) in handoff_receivers.streams() {
        let core = core.clone();
        mesh_tasks.push(glommio::spawn_local(async move {
            while let Some(handoff) = stream.next().await {
                adopt_connection(&core, handoff);
            }
        }));
    }
    let handoff_senders = Rc::new(handoff_senders);

    let listener = match bind_shared(config.http_addr()) {
        Ok(l) => l,
        Err(source) => {
            let _ = report.send(Err(StartupError::Bind {
                addr: config.http_addr(),
                source,
            }));
            return;
        }
    };
    let listener_fd = listener.as_raw_fd();
    // SAFETY: the fd is a bound, listening socket that the glommio listener
    // takes ownership of; `listener` (the socket2 handle) is forgotten below
    // so the fd is closed exactly once, by glommio.
    let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
    let grpc_listener = match bind_shared(config.grpc_addr()) {
        Ok(l) => l,
        Err(source) => {
            let _ = report.send(Err(StartupError::Bind {
                addr: config.grpc_addr(),
                source,
            }));
            return;
        }
    };
    let grpc_fd = grpc_listener.as_raw_fd();
    // SAFETY: as for the HTTP listener above.
    let grpc_listener = unsafe { TcpListener::from_raw_fd(grpc_listener.into_raw_fd()) };
    let mut listener_fds = vec![listener_fd, grpc_fd];
    let resp_listener = match config.resp_addr().map(|addr| (addr, bind_shared(addr))) {
        None => None,
        Some((_, Ok(l))) => {
            listener_fds.push(l.as_raw_fd());
            // SAFETY: as for the HTTP listener above.
            Some(unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) })
        }
        Some((addr, Err(source))) => {
            let _ = report.send(Err(StartupError::Bind { addr, source }));
            return;
        }
    };
    // One warning budget for every port: a core out of fds fails them all.
    let accept_warnings = Rc::new(RefCell::new(LogLimiter::new(ACCEPT_WARN_PERIOD)));
    let grpc_accept = glommio::spawn_local(accept_loop(
        core.clone(),
        grpc_listener,
        Port::Grpc(handoff_senders),
        accept_warnings.clone(),
    ));
    let resp_accept = resp_listener.map(|listener| {
        glommio::spawn_local(accept_loop(
            core.clone(),
            listener,
            Port::Resp,
            accept_warnings.clone(),
        ))
    });
    let housekeeping = glommio::spawn_local(housekeeping(core.clone(), listener_fds));
    let _ = report.send(Ok(id));

    accept_loop(core.clone(), listener, Port::Http, accept_warnings).await;
    grpc_accept.await;
    if let Some(resp_accept) = resp_accept {
        resp_accept.await;
    }
    debug!(core = id, "listener closed; draining connections");

    let deadline = Instant::now() + config.shutdown_grace();
    while core.open_connections() > 0 && Instant::now() < deadline {
        core.stop_reading_connections();
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if core.open_connections() > 0 {
        warn!(
            core = id,
            open = core.open_connections(),
            "shutdown grace passed with connections still open"
        );
    }
    // Other cores may still forward ops for their last requests; keep
    // answering until every core has drained its clients.
    lifecycle.core_drained();
    while lifecycle.cores_drained() < core.cores && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    housekeeping.cancel().await;
    for task in mesh_tasks {
        task.cancel().await;
    }
}

/// Which listener an accept loop serves; the gRPC one can hand peer
/// connections to the other cores.
enum Port {
    Http,
    Grpc(Rc<Senders<Handoff>>),
    /// The Redis protocol.
    Resp,
}

impl Port {
    fn name(&self) -> &'static str {
        match self {
            Port::Http => "http",
            Port::Grpc(_) => "grpc",
            Port::Resp => "resp",
        }
    }
}

/// Serves a gRPC connection this core accepted: on the core its first
/// bytes announce, if that is another core of this node, else here.
///
/// The first bytes come from an untrusted client: waiting for them is
/// bounded by `--header-timeout` (as the HTTP/2 preface is), a connection
/// that sends nothing in that time is closed, and an announcement of a
/// core this node does not have is served here like any client.
async fn serve_grpc(core: Rc<Core>, mut stream: TcpStream, handoffs: Rc<Senders<Handoff>>) {
    let opening = read_opening(&mut stream, core.config.header_timeout()).await;
    let (target, read) = match opening {
        Opening::Gone => return,
        Opening::Plain { read } => (None, read),
        Opening::Announced { core: target, rest } => (Some(usize::from(target)), rest),
    };
    let Some(target) = target else {
        return serve_grpc_connection_after(core, stream, read).await;
    };
    if target == core.id {
        core.metrics.record_announcement(Announcement::Here);
        return serve_grpc_connection_after(core, stream, read).await;
    }
    if target >= core.cores {
        debug!(
            core = core.id,
            target, "peer connection announced a core this node does not have; serving it here"
        );
        core.metrics.record_announcement(Announcement::Refused);
        return serve_grpc_connection_after(core, stream, read).await;
    }
    // SAFETY: the fd is the open socket `stream` owns, alive for this call.
    let duplicate = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }.try_clone_to_owned();
    let handoff = match duplicate {
        // A copy of the bytes: a failed send does not give them back.
        Ok(socket) => Handoff {
            socket,
            rest: read.clone(),
        },
        Err(e) => {
            debug!(
                core = core.id,
                "cannot duplicate a peer socket ({e}); serving it here"
            );
            core.metrics.record_announcement(Announcement::Refused);
            return serve_grpc_connection_after(core, stream, read).await;
        }
    };
    match handoffs.try_send_to(target, handoff) {
        Ok(()) => {
            // The target core owns the socket now (through the duplicate);
            // dropping `stream` closes only this core's fd.
            core.metrics.record_announcement(Announcement::HandedOff);
        }
        Err(e) => {
            // The channel is full or closed; the duplicate fd went with it.
            debug!(
                core = core.id,
                target, "cannot hand a peer connection over ({e}); serving it here"
            );
            core.metrics.record_announcement(Announcement::Refused);
            serve_grpc_connection_after(core, stream, read).await;
        }
    }
}

/// Takes over a peer connection another core accepted for this one.
fn adopt_connection(core: &Rc<Core>, handoff: Handoff) {
    let Handoff { socket, rest } = handoff;
    if core.lifecycle.is_closing() {
        return;
    }
    // Counted against this core's share of --max-connections like one it
    // accepted itself (the accepting core has let go of its place).
    let Some(permit) = core.try_admit_connection() else {
        return;
    };
    // SAFETY: `socket` is an open, connected TCP socket whose only owner
    // was the handoff; the glommio stream takes that ownership over.
    let stream = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
    let core = core.clone();
    glommio::spawn_local(async move {
        serve_grpc_connection_after(core, stream, rest).await;
        drop(permit);
    })
    .detach();
}

/// One core's accept loop for one port, until the listener is shut down.
///
/// Every connection counts against the core's share of `--max-connections`
/// (HTTP, gRPC and RESP together); one past it is closed at once, before any
/// task or buffer exists for it. A failed accept (EMFILE/ENFILE when the
/// process is out of file descriptors) pauses this loop for 1 ms, doubling
/// up to 100 ms while failures go on, so the core keeps serving its other
/// clients instead of spinning; the warning is limited to one line per
/// second per core.
async fn accept_loop(
    core: Rc<Core>,
    listener: TcpListener,
    port: Port,
    warnings: Rc<RefCell<LogLimiter>>,
) {
    let mut backoff = Backoff::new(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
    #[cfg(feature = "fault-injection")]
    let panic_here = fault::panics_on_connection(core.id);
    loop {
        match listener.accept().await {
            Ok(stream) => {
                backoff.reset();
                let Some(permit) = core.try_admit_connection() else {
                    drop(stream);
                    continue;
                };
                #[cfg(feature = "fault-injection")]
                if panic_here {
                    glommio::spawn_local(fault::panic_in_a_task(core.id)).detach();
                }
                let task_core = core.clone();
                match &port {
                    Port::Http => glommio::spawn_local(async move {
                        serve_connection(task_core, stream).await;
                        drop(permit);
                    })
                    .detach(),
                    Port::Resp => glommio::spawn_local(async move {
                        serve_resp_connection(task_core, stream).await;
                        drop(permit);
                    })
                    .detach(),
                    Port::Grpc(handoffs) => {
                        let handoffs = handoffs.clone();
                        glommio::spawn_local(async move {
                            serve_grpc(task_core, stream, handoffs).await;
                            drop(permit);
                        })
                        .detach()
                    }
                };
            }
            Err(e) => {
                if core.lifecycle.is_closing() {
                    break;
                }
                let retry_in = backoff.next_delay();
                if let Some(suppressed) = warnings.borrow_mut().hit(Instant::now()) {
                    let hint = match e.raw_os_error() {
                        Some(libc::EMFILE) | Some(libc::ENFILE) => {
                            "; out of file descriptors: raise the limit (LimitNOFILE=, \
                             ulimit -n) or lower --max-connections"
                        }
                        _ => "",
                    };
                    warn!(
                        core = core.id,
                        port = port.name(),
                        suppressed,
                        ?retry_in,
                        "accept failed: {e}{hint}"
                    );
                }
                glommio::timer::sleep(retry_in).await;
            }
        }
    }
}

/// Test-only fault injection (the `fault-injection` feature, enabled for
/// the crate's own tests through its self dev-dependency; release builds
/// do not contain it).
#[cfg(feature = "fault-injection")]
mod fault {
    /// `NEXUSCACHE_FAULT_PANIC_CORE=<id>`: core `<id>` panics in a task
    /// spawned for its first client connection.
    pub const PANIC_CORE_ENV: &str = "NEXUSCACHE_FAULT_PANIC_CORE";

    pub fn panics_on_connection(core: usize) -> bool {
        std::env::var(PANIC_CORE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            == Some(core)
    }

    pub async fn panic_in_a_task(core: usize) {
        panic!("fault injection: {PANIC_CORE_ENV}={core} panics this core on a connection");
    }
}

/// Per-core background work: expire entries and follow the lifecycle.
async fn housekeeping(core: Rc<Core>, listener_fds: Vec<std::os::fd::RawFd>) {
    let sweep_every = core.config.sweep_interval();
    let mut next_sweep = Instant::now() + sweep_every;
    let mut listeners_shut = false;
    loop {
        glommio::timer::sleep(LIFECYCLE_POLL.min(sweep_every)).await;
        core.refresh_ring();
        if !core.is_draining() && core.lifecycle.is_draining() {
            core.set_draining();
        }
        if core.lifecycle.is_closing() {
            // Wakes the accept loop: accept on a shut-down listener fails.
            // SAFETY: the listener outlives this task (cancelled after the
            // accept loop ends); shutdown(2) does not close the fd.
            // Once only: after the accept loops end their listeners are
            // closed, and the fd numbers may belong to new sockets (peer
            // connections made while draining).
            if !listeners_shut {
                for &fd in &listener_fds {
                    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                }
                listeners_shut = true;
            }
            core.stop_reading_connections();
        }
        core.reap_expired_connections(Instant::now());
        if Instant::now() >= next_sweep {
            // Cover the whole shard in about 16 sweeps, in slices that keep
            // each pause short. Yield after every slice: glommio's own
            // preemption signal is a timer completion, which (with
            // COOP_TASKRUN, see uring_flags.rs) only lands at a syscall, and
            // the sweep makes none.
            let mut budget = (core.shard_len() / 16).max(4096);
            while budget > 0 {
                let slice = budget.min(4096);
                core.sweep(slice);
                budget -= slice;
                if budget > 0 {
                    futures_lite::future::yield_now().await;
                }
            }
            next_sweep = Instant::now() + sweep_every;
        }
    }
}
