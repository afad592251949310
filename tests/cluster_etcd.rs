//! Membership through a real etcd: the control module (`nexuscache::control`)
//! driven directly, one `ControlHandle` per simulated node, each publishing
//! to its own `RingBoard` the way a node's data cores would read it.
//!
//! Every test starts its own etcd (see `etcd_common`) on free loopback
//! ports, so they run in parallel. Timings are printed; run with
//! `--nocapture` to see them.

mod etcd_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_common::Etcd;
use nexuscache::control::membership::{encode, record_key};
use nexuscache::control::{
    initial_ring, parse_static_peers, spawn_control, ControlConfig, ControlError, ControlHandle,
    RingBoard, DEFAULT_PREFIX,
};
use nexuscache::routing::{Member, Ring};

const VNODES: usize = 16;
/// Short leases keep the expiry tests quick (keep-alives every 667 ms).
const TTL: Duration = Duration::from_secs(2);
/// Membership changes must reach every core within a second; cores poll the
/// board every 25 ms, so the board itself must change well within it.
const PROPAGATION: Duration = Duration::from_secs(1);
/// After etcd comes back: the reconnect backoff is at most 2 s, plus a
/// session set-up and possibly a lease re-grant.
const RECOVERY: Duration = Duration::from_secs(8);

fn member(name: &str, port: u16) -> Member {
    Member {
        name: name.into(),
        http_addr: format!("127.0.0.1:{port}"),
        grpc_addr: format!("127.0.0.1:{}", port + 1000),
        cores: 2,
        resp_addr: None,
    }
}

struct Node {
    name: &'static str,
    handle: ControlHandle,
    board: Arc<RingBoard>,
}

/// Control-thread logs on stderr when RUST_LOG is set (e.g.
/// `RUST_LOG=nexuscache=debug cargo test --test cluster_etcd -- --nocapture`).
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn start_node(etcd: &Etcd, name: &'static str, port: u16) -> Node {
    init_logs();
    let me = member(name, port);
    let board = RingBoard::new(initial_ring(&me, VNODES));
    let mut cfg = ControlConfig::new(me);
    cfg.etcd_endpoints = vec![etcd.endpoint()];
    cfg.lease_ttl = TTL;
    cfg.vnodes = VNODES;
    let handle = spawn_control(cfg, Arc::clone(&board)).expect("control thread starts");
    Node {
        name,
        handle,
        board,
    }
}

fn names(board: &RingBoard) -> Vec<String> {
    board
        .ring()
        .members()
        .iter()
        .map(|m| m.name.to_string())
        .collect()
}

/// Poll until `board` holds exactly `expected` (sorted names); returns how
/// long after `since` that happened, or panics at `since + limit`.
fn wait_for(node: &Node, expected: &[&str], since: Instant, limit: Duration) -> Duration {
    loop {
        if names(&node.board) == expected {
            return since.elapsed();
        }
        if since.elapsed() > limit {
            panic!(
                "node {}: ring is {:?}, expected {expected:?} within {limit:?}",
                node.name,
                names(&node.board)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until `node`'s etcd session (lease, keep-alive and watch) is up.
fn wait_connected(node: &Node, limit: Duration) {
    let since = Instant::now();
    while !node.handle.is_connected() {
        assert!(
            since.elapsed() < limit,
            "node {} never connected",
            node.name
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Check for `period` that every node's ring stays `expected` (an outage
/// must never shrink or empty it).
fn hold_steady(nodes: &[&Node], expected: &[&str], period: Duration) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        for node in nodes {
            assert_eq!(names(&node.board), expected, "node {} changed", node.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain etcd client for the test's own reads and writes.
struct Admin {
    runtime: tokio::runtime::Runtime,
    client: etcd_client::Client,
}

impl Admin {
    fn new(etcd: &Etcd) -> Admin {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let client = runtime
            .block_on(etcd_client::Client::connect([etcd.endpoint()], None))
            .expect("connect to etcd");
        Admin { runtime, client }
    }

    fn put(&mut self, member: &Member, lease: Option<i64>) {
        let key = record_key(DEFAULT_PREFIX, &member.name);
        let value = encode(member).expect("encode");
        let options = lease.map(|id| etcd_client::PutOptions::new().with_lease(id));
        self.runtime
            .block_on(self.client.put(key, value, options))
            .expect("put");
    }

    fn put_raw(&mut self, key: &str, value: &str) {
        self.runtime
            .block_on(self.client.put(key, value, None))
            .expect("put");
    }

    fn grant(&mut self, ttl_secs: i64) -> i64 {
        self.runtime
            .block_on(self.client.lease_grant(ttl_secs, None))
            .expect("grant")
            .id()
    }

    fn revoke(&mut self, lease: i64) {
        self.runtime
            .block_on(self.client.lease_revoke(lease))
            .expect("revoke");
    }

    /// The lease `name`'s record is attached to, if it is registered.
    fn lease_of(&mut self, name: &str) -> Option<i64> {
        let key = record_key(DEFAULT_PREFIX, name);
        let found = self
            .runtime
            .block_on(self.client.get(key, None))
            .expect("get");
        found.kvs().first().map(|kv| kv.lease())
    }

    /// Names registered under the prefix, sorted.
    fn registered(&mut self) -> Vec<String> {
        let options = etcd_client::GetOptions::new().with_prefix();
        let listing = self
            .runtime
            .block_on(self.client.get(DEFAULT_PREFIX, Some(options)))
            .expect("list");
        listing
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key()[DEFAULT_PREFIX.len()..]).into_owned())
            .collect()
    }

    /// Wait until exactly `expected` are registered; returns the time since
    /// `since`.
    fn wait_registered(&mut self, expected: &[&str], since: Instant, limit: Duration) -> Duration {
        loop {
            let now = self.registered();
            if now == expected {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < limit,
                "etcd holds {now:?}, expected {expected:?} within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn members_join_and_leave_within_a_second_and_set_peer_reads_etcd() {
    let etcd = Etcd::start();
    let mut admin = Admin::new(&etcd);
    let a = start_node(&etcd, "a", 7001);
    assert!(
        a.handle.wait_synced(Duration::from_secs(5)),
        "a never synced"
    );
    assert!(a.handle.is_connected());

    let joined = Instant::now();
    let b = start_node(&etcd, "b", 7002);
    let seen_by_a = wait_for(&a, &["a", "b"], joined, PROPAGATION);
    let seen_by_b = wait_for(&b, &["a", "b"], joined, PROPAGATION);
    eprintln!("join: a saw b after {seen_by_a:?}, b saw both after {seen_by_b:?}");
    let ring = a.board.ring();
    assert_eq!(ring.member("b"), Some(&member("b", 7002)));
    assert_eq!(ring.vnodes(), VNODES);
    // Both nodes route identically.
    assert_eq!(*ring, *b.board.ring());

    // set_peer in etcd mode reads the record under the prefix.
    let before = a.board.version();
    assert_eq!(
        a.handle.set_peer("b", None).expect("b is registered"),
        member("b", 7002)
    );
    assert!(a.board.version() > before, "set_peer republishes");
    match a.handle.set_peer("nobody", Some("127.0.0.1:1")) {
        Err(ControlError::PeerNotFound { name, .. }) => assert_eq!(name, "nobody"),
        other => panic!("expected PeerNotFound, got {other:?}"),
    }
    // A record written by hand is seen through the watch; junk is skipped.
    admin.put_raw(&record_key(DEFAULT_PREFIX, "junk"), "{not json");
    admin.put(&member("c", 7003), None);
    wait_for(&a, &["a", "b", "c"], Instant::now(), PROPAGATION);
    assert!(matches!(
        a.handle.set_peer("junk", None),
        Err(ControlError::Record(_))
    ));
    let via_client = futures_lite::future::block_on(a.handle.client().set_peer("c", None));
    assert_eq!(via_client.expect("c is registered"), member("c", 7003));

    // A clean shutdown revokes the lease: peers drop the node at once.
    let left = Instant::now();
    b.handle.shutdown();
    let shutdown_took = left.elapsed();
    let dropped_after = wait_for(&a, &["a", "c"], left, PROPAGATION);
    eprintln!("leave: shutdown took {shutdown_took:?}, a dropped b after {dropped_after:?}");
    match a.handle.set_peer("b", None) {
        Err(ControlError::PeerNotFound { .. }) => {}
        other => panic!("b left, expected PeerNotFound, got {other:?}"),
    }
    a.handle.shutdown();
}

#[test]
fn records_whose_lease_is_not_kept_alive_expire_and_a_lost_lease_is_regranted() {
    let etcd = Etcd::start();
    let mut admin = Admin::new(&etcd);
    let a = start_node(&etcd, "a", 7011);
    let b = start_node(&etcd, "b", 7012);
    let start = Instant::now();
    wait_for(&a, &["a", "b"], start, Duration::from_secs(5));
    wait_for(&b, &["a", "b"], start, Duration::from_secs(5));

    // A node that registers with a 1 s lease and then goes silent.
    let lease = admin.grant(1);
    let registered = Instant::now();
    admin.put(&member("ghost", 7013), Some(lease));
    wait_for(&a, &["a", "b", "ghost"], registered, PROPAGATION);
    let gone = wait_for(&a, &["a", "b"], registered, Duration::from_millis(2500));
    wait_for(&b, &["a", "b"], registered, Duration::from_millis(2500));
    eprintln!("expiry: a 1 s lease left the ring {gone:?} after the put");

    // a's own lease vanishes (as after a long outage): a notices the delete
    // of its record, grants a new lease and registers again.
    let old = admin.lease_of("a").expect("a is registered");
    let revoked = Instant::now();
    admin.revoke(old);
    let regranted = loop {
        match admin.lease_of("a") {
            Some(new) if new != old => break revoked.elapsed(),
            _ => assert!(revoked.elapsed() < PROPAGATION, "a did not re-register"),
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    wait_for(&b, &["a", "b"], revoked, PROPAGATION);
    eprintln!("lost lease: a re-registered {regranted:?} after its lease was revoked");
    // The new lease is kept alive past its TTL.
    std::thread::sleep(TTL + Duration::from_millis(500));
    assert_eq!(admin.registered(), ["a", "b"]);
    assert_eq!(names(&b.board), ["a", "b"]);
}

#[test]
fn rings_survive_etcd_freezes_and_restarts() {
    let mut etcd = Etcd::start();
    let mut admin = Admin::new(&etcd);
    let a = start_node(&etcd, "a", 7021);
    let b = start_node(&etcd, "b", 7022);
    let start = Instant::now();
    wait_for(&a, &["a", "b"], start, Duration::from_secs(5));
    wait_for(&b, &["a", "b"], start, Duration::from_secs(5));
    wait_connected(&a, Duration::from_secs(5));
    wait_connected(&b, Duration::from_secs(5));

    // Frozen etcd (connections open, nothing answers) for longer than the
    // lease TTL: the sessions notice (keep-alives go unanswered), but the
    // rings stay as they were.
    etcd.pause();
    hold_steady(&[&a, &b], &["a", "b"], Duration::from_millis(2500));
    assert!(!a.handle.is_connected(), "a did not notice the freeze");
    assert!(!b.handle.is_connected(), "b did not notice the freeze");
    etcd.resume();
    let resumed = Instant::now();
    let c = start_node(&etcd, "c", 7023);
    let mut recovery = Vec::new();
    for node in [&a, &b, &c] {
        recovery.push(wait_for(node, &["a", "b", "c"], resumed, RECOVERY));
    }
    // a and b may have lost their leases while etcd was frozen; they must
    // be registered again.
    let registered = admin.wait_registered(&["a", "b", "c"], resumed, RECOVERY);
    eprintln!("freeze: rings whole {recovery:?} and etcd complete {registered:?} after resume");

    // Killed and restarted on the same ports and data: every node reconnects
    // (new lease keep-alive, listing, watch), so a newcomer is seen by all.
    for node in [&a, &b, &c] {
        wait_connected(node, RECOVERY);
    }
    etcd.kill();
    hold_steady(&[&a, &b, &c], &["a", "b", "c"], Duration::from_millis(1500));
    etcd.restart();
    let restarted = Instant::now();
    let mut admin = Admin::new(&etcd);
    let d = start_node(&etcd, "d", 7024);
    let mut recovery = Vec::new();
    for node in [&a, &b, &c, &d] {
        recovery.push(wait_for(node, &["a", "b", "c", "d"], restarted, RECOVERY));
    }
    let registered = admin.wait_registered(&["a", "b", "c", "d"], restarted, RECOVERY);
    eprintln!("restart: rings whole {recovery:?} and etcd complete {registered:?} after restart");
    // The listing publishes the ring a moment before the watch is confirmed.
    for node in [&a, &b, &c, &d] {
        wait_connected(node, PROPAGATION);
    }

    // Leaving still works after all that.
    let left = Instant::now();
    d.handle.shutdown();
    wait_for(&a, &["a", "b", "c"], left, PROPAGATION);
}

#[test]
fn nodes_repopulate_an_etcd_that_lost_its_data() {
    let mut etcd = Etcd::start();
    let a = start_node(&etcd, "a", 7041);
    let b = start_node(&etcd, "b", 7042);
    let start = Instant::now();
    wait_for(&a, &["a", "b"], start, Duration::from_secs(5));
    wait_for(&b, &["a", "b"], start, Duration::from_secs(5));
    // Push the revision well past what the empty etcd will reach, so a
    // watch resumed from the old revision would wait for nothing.
    let mut admin = Admin::new(&etcd);
    for _ in 0..20 {
        admin.put_raw("/unrelated", "x");
    }
    wait_connected(&a, Duration::from_secs(5));
    wait_connected(&b, Duration::from_secs(5));

    etcd.wipe_and_restart();
    let restarted = Instant::now();
    let mut admin = Admin::new(&etcd);
    // Both re-grant and re-register; their watches start from a fresh
    // listing, not from the old (now future) revision.
    let registered = admin.wait_registered(&["a", "b"], restarted, RECOVERY);
    let c = start_node(&etcd, "c", 7043);
    for node in [&a, &b, &c] {
        wait_for(node, &["a", "b", "c"], restarted, RECOVERY);
    }
    let whole = restarted.elapsed();
    eprintln!("wiped etcd: re-registered {registered:?}, rings whole {whole:?} after restart");
}

#[test]
fn static_membership_and_set_peer_awaited_on_a_glommio_core() {
    let board = RingBoard::new(Ring::default());
    let mut cfg = ControlConfig::new(member("a", 7031));
    cfg.vnodes = VNODES;
    cfg.static_peers =
        parse_static_peers("b=127.0.0.1:7032/127.0.0.1:8032,c=127.0.0.1:7033").expect("peers");
    // d is added by address below, which static mode allows only on request.
    cfg.allow_setpeer_addr = true;
    let handle = spawn_control(cfg, Arc::clone(&board)).expect("control thread starts");
    assert!(handle.wait_synced(Duration::from_secs(1)));
    assert!(!handle.is_connected());
    assert_eq!(names(&board), ["a", "b", "c"]);
    assert_eq!(
        board.ring().member("c").map(|m| m.grpc_addr.clone()),
        Some("127.0.0.1:8033".to_owned())
    );

    // A data core awaits the reply without blocking its executor.
    raise_memlock();
    let client = handle.client();
    let version = board.version();
    let (added, unknown, known) = glommio::LocalExecutorBuilder::default()
        .name("test-core")
        .io_memory(128 << 10)
        .spawn(move || async move {
            (
                client
                    .set_peer("d", Some("127.0.0.1:7034/127.0.0.1:9034"))
                    .await,
                client.set_peer("e", None).await,
                client.set_peer("b", None).await,
            )
        })
        .expect("glommio executor (needs io_uring and 512 KiB of locked memory)")
        .join()
        .expect("executor ran");
    assert_eq!(added.expect("d added").grpc_addr, "127.0.0.1:9034");
    assert!(matches!(unknown, Err(ControlError::AddrRequired { .. })));
    assert_eq!(known.expect("b is known").http_addr, "127.0.0.1:7032");
    assert!(board.version() >= version + 2);
    assert_eq!(names(&board), ["a", "b", "c", "d"]);
    handle.shutdown();
}

/// glommio locks memory for its rings; raise the soft limit to the hard one.
fn raise_memlock() {
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
        }
    }
}
