//! The control plane: cluster membership and the ring snapshots the data
//! cores route with.
//!
//! ```text
//!  control thread "nc-control" (tokio current_thread)            data cores (glommio)
//!  ┌──────────────────────────────────────────────┐
//!  │ etcd: lease + keep-alive, our record,         │   publish   ┌──────────────┐  every ~25 ms:
//!  │       list + watch /nexuscache/nodes/         │────────────>│  RingBoard   │<─ version() changed?
//!  │ or static peers (--peers), published once     │             │ (version,Arc)│   -> current(), swap
//!  │ commands: set_peer (from any thread/executor) │             └──────────────┘      the local Arc<Ring>
//!  └──────────────────────────────────────────────┘
//! ```
//!
//! * [`RingBoard`](crate::control::RingBoard) hands immutable
//!   [`Ring`](crate::routing::Ring) snapshots to the cores; cores poll its
//!   version from a timer, never per request.
//! * [`membership`](crate::control::membership) is the pure part: the etcd
//!   record format, the member map that etcd events update, and the
//!   `--peers` syntax.
//! * [`spawn_control`](crate::control::spawn_control) starts the thread.
//!   With etcd endpoints it registers this node under a lease, lists and
//!   watches the prefix, and publishes a ring on every change; it survives
//!   etcd restarts and outages by re-creating its streams with backoff
//!   (etcd-client's streams do not recover by themselves) and keeps the last
//!   ring while etcd is away. Without endpoints it publishes this node plus
//!   the static peers once.
//! * [`ControlHandle`](crate::control::ControlHandle) and
//!   [`ControlClient`](crate::control::ControlClient) send commands to the
//!   thread; the reply comes back on a `futures_channel::oneshot`, so a
//!   glommio task can `.await` it without blocking its core.

pub mod board;
mod error;
mod etcd;
pub mod membership;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

pub use self::board::RingBoard;
pub use self::error::ControlError;
pub use self::membership::{
    parse_peer, parse_static_peers, Membership, MembershipError, NodeRecord, PeerSpecError,
    RecordError, DEFAULT_PREFIX,
};
use crate::routing::{Member, Ring};

/// Lease TTL of our etcd record unless configured (`--lease-ttl`): a node
/// that dies without revoking its lease leaves the ring after this long.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// Members a ring may have, so `/setpeer` or etcd cannot grow it unbounded
/// (`--max-ring-members`).
pub const DEFAULT_MAX_RING_MEMBERS: usize = 256;

/// How the control thread finds the other members.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// This node; always a member of the ring it publishes.
    pub self_member: Member,
    /// etcd client URLs or `host:port`s; empty means static membership.
    pub etcd_endpoints: Vec<String>,
    /// TTL of the lease our record is attached to (whole seconds, at least
    /// 1; etcd may round it up to its minimum, typically 2 s). Keep-alives
    /// go out every third of it.
    pub lease_ttl: Duration,
    /// Key prefix of the node records; must end with `/`.
    pub prefix: String,
    /// Virtual nodes per member on the ring.
    pub vnodes: usize,
    /// Members besides this node in static mode (see
    /// [`parse_static_peers`]); ignored when etcd is used.
    pub static_peers: Vec<Member>,
    /// Static mode: let `set_peer` add members that are not in
    /// `static_peers`, or move one to another address
    /// (`--allow-setpeer-addr`). Without it `set_peer` only re-adds a
    /// configured peer at its configured address.
    pub allow_setpeer_addr: bool,
    /// Most members a ring may hold, this node included
    /// (`--max-ring-members`).
    pub max_ring_members: usize,
}

impl ControlConfig {
    /// Static membership of `self_member` alone, with the default lease
    /// TTL, prefix and vnodes; set the public fields to change them.
    pub fn new(self_member: Member) -> ControlConfig {
        ControlConfig {
            self_member,
            etcd_endpoints: Vec::new(),
            lease_ttl: DEFAULT_LEASE_TTL,
            prefix: DEFAULT_PREFIX.to_owned(),
            vnodes: crate::routing::DEFAULT_VNODES,
            static_peers: Vec::new(),
            allow_setpeer_addr: false,
            max_ring_members: DEFAULT_MAX_RING_MEMBERS,
        }
    }

    /// Whether membership comes from etcd.
    pub fn uses_etcd(&self) -> bool {
        !self.etcd_endpoints.is_empty()
    }

    fn validate(&self) -> Result<(), ControlError> {
        membership::validate_name(&self.self_member.name)?;
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(ControlError::Config(format!(
                "lease TTL {:?} is under one second",
                self.lease_ttl
            )));
        }
        if !self.prefix.starts_with('/') || !self.prefix.ends_with('/') || self.prefix.len() < 2 {
            return Err(ControlError::Config(format!(
                "etcd prefix {:?} must start and end with '/', e.g. {DEFAULT_PREFIX:?}",
                self.prefix
            )));
        }
        if self.vnodes == 0 {
            return Err(ControlError::Config("vnodes must be at least 1".into()));
        }
        if self.etcd_endpoints.iter().any(|e| e.trim().is_empty()) {
            return Err(ControlError::Config("an etcd endpoint is empty".into()));
        }
        if self.max_ring_members == 0 {
            return Err(ControlError::Config(
                "max ring members must be at least 1".into(),
            ));
        }
        let static_members = 1 + self
            .static_peers
            .iter()
            .filter(|p| p.name != self.self_member.name)
            .count();
        if !self.uses_etcd() && static_members > self.max_ring_members {
            return Err(ControlError::Config(format!(
                "--peers lists {static_members} members with this node, over \
                 --max-ring-members {}",
                self.max_ring_members
            )));
        }
        Ok(())
    }
}

/// A request to the control thread.
enum Command {
    SetPeer {
        name: String,
        addr: Option<String>,
        reply: oneshot::Sender<Result<Member, ControlError>>,
    },
    /// Take a member out of this node's ring (`/removepeer`).
    RemovePeer {
        name: String,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
}

/// What the control thread reports about itself, readable from any thread.
#[derive(Debug, Default)]
struct Status {
    /// An etcd session is established (always false in static mode).
    connected: AtomicBool,
    /// The first membership (etcd listing or static list) is published.
    synced: Mutex<bool>,
    synced_changed: Condvar,
}

impl Status {
    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    fn set_synced(&self) {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if !*synced {
            *synced = true;
            self.synced_changed.notify_all();
        }
    }

    fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        while !*synced {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            synced = match self.synced_changed.wait_timeout(synced, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

/// A cheap, cloneable, `Send` sender of commands to the control thread;
/// hand one to each data core.
#[derive(Clone)]
pub struct ControlClient {
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("closed", &self.commands.is_closed())
            .finish()
    }
}

impl ControlClient {
    /// Put node `name` (back) into the ring and republish it, returning the
    /// member as it now is in the ring. The command is sent at once; the
    /// returned future (executor-agnostic: await it on glommio, or
    /// `block_on` it) resolves when the control thread has answered.
    ///
    /// * etcd mode: the record is read from `<prefix><name>`; an absent
    ///   record is [`ControlError::PeerNotFound`]. `addr` is ignored: etcd
    ///   is the source of truth for addresses.
    /// * static mode: `addr` is `http_addr[/grpc_addr]` (see
    ///   [`parse_peer`]) and adds or replaces the peer; without `addr` the
    ///   peer must already be known ([`ControlError::AddrRequired`]).
    ///
    /// For this node's own name the result is this node, unchanged. A
    /// successful call always publishes a new ring version, so cores that
    /// dropped the peer from their local copy pick it up again.
    pub fn set_peer(
        &self,
        name: &str,
        addr: Option<&str>,
    ) -> impl Future<Output = Result<Member, ControlError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self.commands.send(Command::SetPeer {
            name: name.to_owned(),
            addr: addr.map(str::to_owned),
            reply,
        });
        async move {
            sent.map_err(|_| ControlError::Stopped)?;
            answer.await.map_err(|_| ControlError::Stopped)?
        }
    }
}

impl ControlClient {
    /// Takes `name` out of this node's ring (`/removepeer`) and republishes
    /// it. This node itself cannot be removed ([`MembershipError::IsSelf`]);
    /// a name not in the ring is [`MembershipError::NotMember`]. Only this
    /// node's ring changes. In etcd mode the member stays out until
    /// `set_peer` re-adds it or etcd shows it registering anew (its record
    /// deleted, or written with new content); see [`Membership`]. Works
    /// while etcd is unreachable too.
    pub fn remove_peer(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(), ControlError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self.commands.send(Command::RemovePeer {
            name: name.to_owned(),
            reply,
        });
        async move {
            sent.map_err(|_| ControlError::Stopped)?;
            answer.await.map_err(|_| ControlError::Stopped)?
        }
    }
}

/// Owner of the control thread: send commands, wait for the first sync,
/// shut it down. Dropping it shuts the thread down too.
pub struct ControlHandle {
    client: ControlClient,
    shutdown: watch::Sender<bool>,
    status: Arc<Status>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ControlHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlHandle")
            .field("connected", &self.is_connected())
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl ControlHandle {
    /// A command sender for another thread or a data core.
    pub fn client(&self) -> ControlClient {
        self.client.clone()
    }

    /// Blocking form of [`ControlClient::set_peer`] for plain threads (do
    /// not call it on a data core: it would stall the core for up to an etcd
    /// round trip; await the client's future there instead).
    pub fn set_peer(&self, name: &str, addr: Option<&str>) -> Result<Member, ControlError> {
        futures_lite::future::block_on(self.client.set_peer(name, addr))
    }

    /// Wait until the first membership is published (the first etcd listing
    /// after registering, or at once in static mode); false on timeout.
    /// Useful before declaring the node ready.
    pub fn wait_synced(&self, timeout: Duration) -> bool {
        self.status.wait_synced(timeout)
    }

    /// Whether an etcd session (lease, keep-alive, watch) is up right now.
    pub fn is_connected(&self) -> bool {
        self.status.connected.load(Ordering::Acquire)
    }

    /// Revoke our lease (peers drop this node at once instead of after the
    /// TTL; best effort, bounded to about a second when etcd is away), stop
    /// the thread and join it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                error!("the control thread panicked");
            }
        }
    }
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start the control thread (named `nc-control`) for `cfg`, publishing to
/// `board`.
///
/// Before returning it publishes this node's initial ring (this node plus
/// the static peers, or this node alone in etcd mode) unless the board
/// already holds exactly that. In etcd mode it then registers, lists and
/// watches in the background; use [`ControlHandle::wait_synced`] to wait for
/// the first listing. Errors here are configuration or thread start-up
/// failures only: an unreachable etcd is retried in the background.
pub fn spawn_control(
    cfg: ControlConfig,
    board: Arc<RingBoard>,
) -> Result<ControlHandle, ControlError> {
    cfg.validate()?;
    let mut members = Membership::new(cfg.self_member.clone(), cfg.prefix.clone(), cfg.vnodes)
        .with_max_members(cfg.max_ring_members);
    if !cfg.uses_etcd() {
        for peer in &cfg.static_peers {
            members.upsert(peer.clone());
        }
    }
    let initial = members.ring();
    if *board.ring() != initial {
        board.publish(initial);
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("nc-control")
        .build()
        .map_err(ControlError::Spawn)?;
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let status = Arc::new(Status::default());

    let thread_status = Arc::clone(&status);
    let thread = std::thread::Builder::new()
        .name("nc-control".into())
        .spawn(move || {
            let status = thread_status;
            if cfg.uses_etcd() {
                info!(endpoints = ?cfg.etcd_endpoints, prefix = %cfg.prefix,
                      lease_ttl = ?cfg.lease_ttl, node = %cfg.self_member.name,
                      "membership from etcd");
                runtime.block_on(etcd::run(
                    cfg,
                    members,
                    board,
                    command_rx,
                    shutdown_rx,
                    status,
                ));
            } else {
                info!(members = members.members().len(), node = %cfg.self_member.name,
                      "static membership");
                let peers = StaticPeers {
                    configured: cfg.static_peers.clone(),
                    allow_addr: cfg.allow_setpeer_addr,
                };
                runtime.block_on(run_static(
                    members,
                    peers,
                    board,
                    command_rx,
                    shutdown_rx,
                    status,
                ));
            }
        })
        .map_err(ControlError::Spawn)?;

    Ok(ControlHandle {
        client: ControlClient { commands },
        shutdown,
        status,
        thread: Some(thread),
    })
}

/// Resolves once shutdown is requested (or the handle is gone).
/// Cancel-safe, so it can sit in a `select!`.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// What static mode trusts `set_peer` with.
struct StaticPeers {
    /// `--peers`: the only members `set_peer` may re-add, at these
    /// addresses, unless `allow_addr`.
    configured: Vec<Member>,
    /// `--allow-setpeer-addr`.
    allow_addr: bool,
}

/// Static mode: the ring was published by `spawn_control`; only commands
/// change it.
async fn run_static(
    mut members: Membership,
    peers: StaticPeers,
    board: Arc<RingBoard>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut shutdown: watch::Receiver<bool>,
    status: Arc<Status>,
) {
    status.set_synced();
    loop {
        tokio::select! {
            biased;
            _ = shutdown_requested(&mut shutdown) => break,
            Some(command) = commands.recv() => match command {
                Command::SetPeer { name, addr, reply } => {
                    let result = static_set_peer(&mut members, &peers, &name, addr.as_deref());
                    match &result {
                        Ok(_) => board.publish(members.ring()),
                        Err(e) => warn!(peer = %name, "set_peer refused: {e}"),
                    }
                    let _ = reply.send(result);
                }
                Command::RemovePeer { name, reply } => {
                    let result = members.take_out(&name).map_err(ControlError::from);
                    match &result {
                        Ok(()) => {
                            board.publish(members.ring());
                            info!(member = %name, "remove_peer: member taken out of the ring");
                        }
                        Err(e) => warn!(peer = %name, "remove_peer refused: {e}"),
                    }
                    let _ = reply.send(result);
                }
            },
        }
    }
}

/// Whether a requested description of a peer points at the node already
/// `known` (a request that leaves out the RESP address keeps the known one).
fn same_addresses(known: &Member, requested: &Member) -> bool {
    known.http_addr == requested.http_addr
        && known.grpc_addr == requested.grpc_addr
        && (requested.resp_addr.is_none() || requested.resp_addr == known.resp_addr)
}

/// `http/grpc[/resp]`, as `--peers` writes a member's addresses.
fn addresses(member: &Member) -> String {
    match &member.resp_addr {
        Some(resp) => format!("{}/{}/{resp}", member.http_addr, member.grpc_addr),
        None => format!("{}/{}", member.http_addr, member.grpc_addr),
    }
}

/// `set_peer` in static mode (see [`ControlClient::set_peer`]).
fn static_set_peer(
    members: &mut Membership,
    peers: &StaticPeers,
    name: &str,
    addr: Option<&str>,
) -> Result<Member, ControlError> {
    membership::validate_name(name)?;
    if members.is_self(name) {
        return Ok(members.self_member().clone());
    }
    let requested = addr.map(|addr| parse_peer(name, addr)).transpose()?;
    let configured = peers.configured.iter().find(|p| &*p.name == name);
    // Where the peer is now: in the ring, else where --peers put it.
    let known = members.get(name).or(configured);
    let target = match (known, requested) {
        (Some(known), None) => known.clone(),
        (Some(known), Some(requested)) if same_addresses(known, &requested) => known.clone(),
        (_, Some(requested)) if peers.allow_addr => requested,
        (Some(known), Some(requested)) => {
            return Err(ControlError::AddrChangeForbidden {
                name: name.to_owned(),
                what: format!(
                    "peer {name:?} is at {}; moving it to {} is not allowed",
                    addresses(known),
                    addresses(&requested)
                ),
            })
        }
        (None, Some(_)) => {
            return Err(ControlError::AddrChangeForbidden {
                name: name.to_owned(),
                what: format!(
                    "peer {name:?} is not in --peers; adding a new member is not allowed"
                ),
            })
        }
        (None, None) if peers.allow_addr => {
            return Err(ControlError::AddrRequired {
                name: name.to_owned(),
            })
        }
        (None, None) => {
            return Err(ControlError::UnknownPeer {
                name: name.to_owned(),
            })
        }
    };
    members.admit(target.clone())?;
    info!(member = name, http = %target.http_addr, grpc = %target.grpc_addr,
          "set_peer: static peer is in the ring");
    Ok(target)
}

/// The ring a node starts with before discovery has run: itself alone.
pub fn initial_ring(self_member: &Member, vnodes: usize) -> Ring {
    Ring::new(vec![self_member.clone()], vnodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, port: u16) -> Member {
        Member {
            name: name.into(),
            http_addr: format!("127.0.0.1:{port}"),
            grpc_addr: format!("127.0.0.1:{}", port + 1000),
            cores: 1,
            resp_addr: None,
        }
    }

    #[test]
    fn config_is_validated() {
        let ok = ControlConfig::new(member("a", 1));
        assert!(ok.validate().is_ok());
        let mut bad = ok.clone();
        bad.prefix = "/nexuscache/nodes".into();
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.lease_ttl = Duration::from_millis(500);
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.self_member.name = "a/b".into();
        assert!(bad.validate().is_err());
        let mut bad = ok;
        bad.etcd_endpoints = vec![" ".into()];
        assert!(bad.validate().is_err());
    }

    #[test]
    fn config_caps_the_static_list() {
        let mut cfg = ControlConfig::new(member("a", 1));
        cfg.static_peers = parse_static_peers("a=127.0.0.1:1,b=127.0.0.1:2").expect("parses");
        cfg.max_ring_members = 2;
        assert!(
            cfg.validate().is_ok(),
            "this node listed in --peers counts once"
        );
        cfg.static_peers = parse_static_peers("b=127.0.0.1:2,c=127.0.0.1:3").expect("parses");
        let err = cfg.validate().expect_err("three members, cap two");
        assert!(err.to_string().contains("--max-ring-members 2"), "{err}");
        cfg.etcd_endpoints = vec!["127.0.0.1:2379".into()];
        assert!(cfg.validate().is_ok(), "etcd mode ignores --peers");
    }

    #[test]
    fn membership_refusals_map_to_distinct_http_statuses() {
        use crate::error::ApiError;
        let status = |e: ControlError| ApiError::from(e).status();
        let name = || "b".to_owned();
        assert_eq!(status(ControlError::UnknownPeer { name: name() }), 404);
        assert_eq!(
            status(MembershipError::NotMember { name: name() }.into()),
            404
        );
        assert_eq!(
            status(ControlError::PeerNotFound {
                name: name(),
                prefix: DEFAULT_PREFIX.into()
            }),
            404
        );
        assert_eq!(
            status(ControlError::AddrChangeForbidden {
                name: name(),
                what: "x".into()
            }),
            403
        );
        assert_eq!(status(MembershipError::IsSelf { name: name() }.into()), 409);
        assert_eq!(
            status(
                MembershipError::RingFull {
                    name: name(),
                    max: 2
                }
                .into()
            ),
            507
        );
        assert_eq!(status(ControlError::AddrRequired { name: name() }), 400);
        assert_eq!(status(ControlError::Stopped), 503);
    }

    fn static_node(allow_addr: bool, max: usize) -> (Arc<RingBoard>, ControlHandle) {
        let board = RingBoard::new(Ring::default());
        let mut cfg = ControlConfig::new(member("a", 1));
        cfg.static_peers = parse_static_peers("b=127.0.0.1:2,c=127.0.0.1:3").expect("parses");
        cfg.allow_setpeer_addr = allow_addr;
        cfg.max_ring_members = max;
        let handle = spawn_control(cfg, Arc::clone(&board)).expect("starts");
        assert!(handle.wait_synced(Duration::from_secs(5)));
        (board, handle)
    }

    fn remove(handle: &ControlHandle, name: &str) -> Result<(), ControlError> {
        futures_lite::future::block_on(handle.client().remove_peer(name))
    }

    fn ring_names(board: &RingBoard) -> Vec<String> {
        board
            .ring()
            .members()
            .iter()
            .map(|m| m.name.to_string())
            .collect()
    }

    #[test]
    fn a_request_without_a_resp_address_keeps_the_known_one() {
        let mut known = member("b", 2);
        known.resp_addr = Some("127.0.0.1:2002".into());
        let mut requested = member("b", 2);
        assert!(same_addresses(&known, &requested), "no RESP address given");
        requested.resp_addr = known.resp_addr.clone();
        assert!(same_addresses(&known, &requested));
        requested.resp_addr = Some("127.0.0.1:3003".into());
        assert!(!same_addresses(&known, &requested), "a RESP move is a move");
        assert!(!same_addresses(&known, &member("b", 3)));
    }

    #[test]
    fn static_set_peer_only_re_adds_configured_members_at_their_addresses() {
        let (board, handle) = static_node(false, 8);
        let (v1, ring) = board.current();
        assert_eq!(ring.len(), 3);

        // New members and moves are refused, the ring untouched.
        assert!(matches!(
            handle.set_peer("evil", Some("10.9.9.9:80")),
            Err(ControlError::AddrChangeForbidden { .. })
        ));
        let moved = handle.set_peer("b", Some("10.9.9.9:80"));
        assert!(
            matches!(&moved, Err(ControlError::AddrChangeForbidden { what, .. })
                if what.contains("127.0.0.1:2") && what.contains("10.9.9.9:80")),
            "{moved:?}"
        );
        assert!(matches!(
            handle.set_peer("evil", None),
            Err(ControlError::UnknownPeer { .. })
        ));
        assert!(matches!(
            handle.set_peer("b", Some("nope")),
            Err(ControlError::PeerSpec(_))
        ));
        assert!(matches!(
            handle.set_peer("a/b", None),
            Err(ControlError::Record(_))
        ));
        assert_eq!(board.version(), v1);
        assert_eq!(ring_names(&board), ["a", "b", "c"]);

        // Its own address, or none: re-added and republished.
        assert_eq!(
            handle
                .set_peer("b", Some("127.0.0.1:2"))
                .expect("same")
                .http_addr,
            "127.0.0.1:2"
        );
        let v2 = board.version();
        assert!(v2 > v1);

        // Removed, then re-added at its configured address.
        remove(&handle, "b").expect("member");
        assert_eq!(ring_names(&board), ["a", "c"]);
        assert!(matches!(
            remove(&handle, "b"),
            Err(ControlError::Membership(MembershipError::NotMember { .. }))
        ));
        assert!(matches!(
            remove(&handle, "a"),
            Err(ControlError::Membership(MembershipError::IsSelf { .. }))
        ));
        let b = handle.set_peer("b", None).expect("configured");
        assert_eq!(b.grpc_addr, "127.0.0.1:1002");
        assert_eq!(ring_names(&board), ["a", "b", "c"]);
        assert_eq!(
            handle.set_peer("a", None).expect("self").http_addr,
            "127.0.0.1:1"
        );

        let client = handle.client();
        handle.shutdown();
        assert!(matches!(
            futures_lite::future::block_on(client.set_peer("c", None)),
            Err(ControlError::Stopped)
        ));
    }

    #[test]
    fn allow_setpeer_addr_adds_and_moves_within_the_cap() {
        let (board, handle) = static_node(true, 4);
        let d = handle.set_peer("d", Some("127.0.0.1:4")).expect("allowed");
        assert_eq!(board.ring().member("d"), Some(&d));
        let moved = handle.set_peer("b", Some("127.0.0.1:9")).expect("allowed");
        assert_eq!(board.ring().member("b"), Some(&moved));
        // A re-add without address keeps where it is now.
        assert_eq!(
            handle.set_peer("b", None).expect("known").http_addr,
            "127.0.0.1:9"
        );
        assert!(matches!(
            handle.set_peer("z", None),
            Err(ControlError::AddrRequired { .. })
        ));
        // Four members: the cap.
        assert!(matches!(
            handle.set_peer("e", Some("127.0.0.1:5")),
            Err(ControlError::Membership(MembershipError::RingFull {
                max: 4,
                ..
            }))
        ));
        assert_eq!(ring_names(&board), ["a", "b", "c", "d"]);
        remove(&handle, "d").expect("member");
        handle
            .set_peer("e", Some("127.0.0.1:5"))
            .expect("room again");
        // A member removed and not configured needs its address again.
        remove(&handle, "e").expect("member");
        assert!(matches!(
            handle.set_peer("e", None),
            Err(ControlError::AddrRequired { .. })
        ));
    }
}
