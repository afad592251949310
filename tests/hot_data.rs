//! Hot data on a cluster of real `nexuscache` processes: hot keys
//! replicated to every node's hot tier, coherent writes and deletes, the
//! automatic hot copies of a node that keeps forwarding reads of one key,
//! hot keys handed to a node that joins, singleflight, and read-through
//! from an origin (`tests/origin_common`).
//!
//! Clusters use static `--peers` (no etcd) and `--cores 1 --no-pin`; each
//! test starts its own nodes (and origin) on free ports. Whether a read
//! was answered locally is read from the peer counters
//! (`nexuscache_peer_requests_total{op="get"}` of the reading node) and the
//! hot-tier counters.

mod cluster_common;
mod common;
mod grpc_common;
mod origin_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cluster_common::{
    grpc_client, keys_owned_by, start_static_nodes_with, static_node, value_body, wait_for,
    wait_ring_members, Client, ClusterNode, StallWatch, MEMBERSHIP_DEADLINE,
};
use common::{assert_error, build_request, form, free_port, pct, uniq, Conn, Metrics, Response};
use grpc_common::runtime;
use nexuscache::proto::{GetRequest, SetRequest};
use origin_common::{Origin, OriginConfig};

/// Every node of every test.
const CORES_1: [&str; 2] = ["--cores", "1"];
/// The node default for `--max-memory` in the cluster harness.
const MAX_MEMORY: f64 = 64.0 * 1024.0 * 1024.0;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn refs(nodes: &[ClusterNode]) -> Vec<&ClusterNode> {
    nodes.iter().collect()
}

/// Static nodes `names` with `--cores 1` and `extra`, all in one ring.
fn cluster(names: &[&str], extra: &[&str]) -> Vec<ClusterNode> {
    let mut flags: Vec<&str> = CORES_1.to_vec();
    flags.extend_from_slice(extra);
    let nodes = start_static_nodes_with(names, &flags);
    wait_ring_members(&refs(&nodes), names.len() as u64, MEMBERSHIP_DEADLINE);
    nodes
}

fn node<'a>(nodes: &'a [ClusterNode], name: &str) -> &'a ClusterNode {
    nodes
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// The node that owns `key` according to `nodes[0]`.
fn owner_of<'a>(nodes: &'a [ClusterNode], key: &str) -> &'a ClusterNode {
    let name = nodes[0].owner(key).node;
    node(nodes, &name)
}

/// Some node that does not own `key`.
fn non_owner_of<'a>(nodes: &'a [ClusterNode], key: &str) -> &'a ClusterNode {
    let name = nodes[0].owner(key).node;
    nodes
        .iter()
        .find(|n| n.name != name)
        .expect("a node that does not own the key")
}

fn hot_form(key: &str, value: &str, hot: bool) -> String {
    form(&[
        ("key", key.as_bytes()),
        ("value", value.as_bytes()),
        ("hot", if hot { b"true" } else { b"false" }),
    ])
}

fn v1_target(key: &str) -> String {
    format!("/v1/keys/{}", pct(key.as_bytes()))
}

/// `POST /api/set` with `hot=<hot>`.
fn set_form(n: &ClusterNode, key: &str, value: &str, hot: bool) -> Response {
    n.request("POST", "/api/set", hot_form(key, value, hot).as_bytes())
}

/// `PUT /v1/keys/K?hot=<hot>`.
fn set_v1(n: &ClusterNode, key: &str, value: &str, hot: bool) -> Response {
    n.request(
        "PUT",
        &format!("{}?hot={hot}", v1_target(key)),
        value.as_bytes(),
    )
}

fn assert_ok(r: &Response, what: &str) {
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "ok\n"),
        "{what}: {}",
        r.describe()
    );
}

fn assert_value(r: &Response, value: &str, what: &str) {
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, value_body(value).as_slice()),
        "{what}: {}",
        r.describe()
    );
}

fn assert_miss(r: &Response, what: &str) {
    assert_eq!(r.status, 404, "{what}: expected a miss: {}", r.describe());
}

/// Sum over every series of `name` matching `labels`.
fn sum(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.sum(name, labels)
}

/// Forwarded GETs of this node, to any peer, any status.
fn peer_gets(m: &Metrics) -> f64 {
    sum(m, "nexuscache_peer_requests_total", &[("op", "get")])
}

fn hot_hits(m: &Metrics) -> f64 {
    sum(m, "nexuscache_hot_hits_total", &[])
}

fn auto_copies(m: &Metrics) -> f64 {
    sum(m, "nexuscache_hot_copies_total", &[("kind", "auto")])
}

fn replica_copies(m: &Metrics) -> f64 {
    sum(m, "nexuscache_hot_copies_total", &[("kind", "replica")])
}

fn origin_results(nodes: &[ClusterNode], result: &str) -> f64 {
    nodes
        .iter()
        .map(|n| {
            sum(
                &n.metrics(),
                "nexuscache_origin_requests_total",
                &[("result", result)],
            )
        })
        .sum()
}

fn metrics_all(nodes: &[ClusterNode]) -> Vec<Metrics> {
    nodes.iter().map(ClusterNode::metrics).collect()
}

fn assert_family(m: &Metrics, name: &str, ty: &str, who: &str) {
    assert_eq!(
        m.types.get(name).map(String::as_str),
        Some(ty),
        "node {who}: # TYPE of {name}; metrics:\n{}",
        m.text
    );
}

fn grpc_get(key: &str) -> GetRequest {
    GetRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A small xorshift generator (the seed is printed so a failure can be
/// replayed with `HOT_DATA_SEED`).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("HOT_DATA_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("HOT_DATA_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One request per thread, all sent at once (connections are opened first,
/// then a barrier releases every send): `(node index, answer)`.
fn concurrent_gets(ports: &[u16], key: &str, n: usize) -> Vec<(usize, Result<Response, String>)> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let port = ports[i % ports.len()];
            let barrier = barrier.clone();
            let raw = build_request(
                "GET",
                &format!("/api/get?key={}", pct(key.as_bytes())),
                &[],
                b"",
            );
            std::thread::Builder::new()
                .name(format!("get-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || {
                    let conn = Conn::try_connect(port);
                    barrier.wait();
                    let mut conn = conn.map_err(|e| format!("connect {port}: {e}"))?;
                    conn.set_read_timeout(Duration::from_secs(10));
                    conn.try_send(&raw).map_err(|e| format!("write: {e}"))?;
                    conn.try_read_response().map_err(|e| format!("read: {e:?}"))
                })
                .expect("spawn a client thread")
        })
        .collect();
    threads
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            (
                i % ports.len(),
                t.join()
                    .unwrap_or_else(|_| Err("client thread panicked".into())),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// a. Hot keys are answered locally on every node
// ---------------------------------------------------------------------------

#[test]
fn a_hot_set_is_answered_locally_on_every_node() {
    let nodes = cluster(&["a", "b", "c"], &[]);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let keys = keys_owned_by(a, &["a"], 4, &uniq("hot")).remove(0);
    let rt = runtime();
    let mut grpc_b = rt.block_on(grpc_client(b));
    let mut grpc_c = rt.block_on(grpc_client(c));

    let ways = [
        "form via a",
        "v1 via a",
        "gRPC via a",
        "form via b (not the owner)",
    ];
    for (i, key) in keys.iter().enumerate() {
        let how = ways[i];
        let value = format!("hot-value-{i}");
        let before = metrics_all(&nodes);
        match i {
            0 => assert_ok(&set_form(a, key, &value, true), how),
            1 => assert_ok(&set_v1(a, key, &value, true), how),
            2 => {
                rt.block_on(async {
                    let mut grpc_a = grpc_client(a).await;
                    grpc_a
                        .set(SetRequest {
                            key: key.as_bytes().to_vec(),
                            value: value.as_bytes().to_vec(),
                            ttl_seconds: 0,
                            hot: true,
                            ..Default::default()
                        })
                        .await
                        .unwrap_or_else(|e| panic!("{how}: gRPC set {key}: {e}"));
                });
            }
            _ => assert_ok(&set_form(b, key, &value, true), how),
        }
        let written = metrics_all(&nodes);

        // The write reached every other node's hot tier before its ack.
        let sent = sum(
            &written[0],
            "nexuscache_replica_updates_total",
            &[("op", "put"), ("status", "ok")],
        ) - sum(
            &before[0],
            "nexuscache_replica_updates_total",
            &[("op", "put"), ("status", "ok")],
        );
        assert_eq!(
            sent, 2.0,
            "{how}: owner a should have sent one replica put to each of b and c:\n{}",
            written[0].text
        );
        for j in [1, 2] {
            assert_eq!(
                replica_copies(&written[j]) - replica_copies(&before[j]),
                1.0,
                "{how}: node {} stored one replica of {key}:\n{}",
                nodes[j].name,
                written[j].text
            );
        }

        // Read on b and c through /api/get, /v1/keys and gRPC: all local.
        for (j, n) in [(1, b), (2, c)] {
            assert_value(
                &n.get(key),
                &value,
                &format!("{how}: get {key} via {}", n.name),
            );
            let r = n.v1_get(key);
            assert_eq!(
                (r.status, r.body.as_slice()),
                (200, value.as_bytes()),
                "{how}: v1 get {key} via {}: {}",
                n.name,
                r.describe()
            );
            assert_eq!(
                r.header("x-nexuscache-hot"),
                Some("true"),
                "{how}: v1 get {key} via {}: {}",
                n.name,
                r.describe()
            );
            let grpc = if j == 1 { &mut grpc_b } else { &mut grpc_c };
            let hit = rt
                .block_on(grpc.get(grpc_get(key)))
                .unwrap_or_else(|e| panic!("{how}: gRPC get {key} via {}: {e}", n.name))
                .into_inner();
            assert!(
                hit.found && hit.value == value.as_bytes() && hit.hot,
                "{how}: gRPC get {key} via {}: {hit:?}",
                n.name
            );
        }
        let after = metrics_all(&nodes);
        for j in [1, 2] {
            let who = &nodes[j].name;
            assert_eq!(
                peer_gets(&after[j]) - peer_gets(&written[j]),
                0.0,
                "{how}: node {who} forwarded a GET of hot key {key}:\n{}",
                after[j].text
            );
            assert!(
                hot_hits(&after[j]) - hot_hits(&written[j]) >= 3.0,
                "{how}: node {who} answered 3 GETs of hot key {key}, but hot hits grew by {}:\n{}",
                hot_hits(&after[j]) - hot_hits(&written[j]),
                after[j].text
            );
        }
        // The owner answers too.
        assert_value(&a.get(key), &value, &format!("{how}: get {key} via a"));
    }

    // The new metric families, on a node holding replicas and on the owner.
    let mb = b.metrics();
    for name in [
        "nexuscache_hot_items",
        "nexuscache_hot_size_bytes",
        "nexuscache_hot_capacity_bytes",
    ] {
        assert_family(&mb, name, "gauge", "b");
    }
    for name in [
        "nexuscache_hot_hits_total",
        "nexuscache_hot_misses_total",
        "nexuscache_hot_copies_total",
        "nexuscache_singleflight_shared_total",
        "nexuscache_negative_hits_total",
    ] {
        assert_family(&mb, name, "counter", "b");
    }
    assert_family(
        &a.metrics(),
        "nexuscache_replica_updates_total",
        "counter",
        "a",
    );
    assert!(
        sum(&mb, "nexuscache_hot_items", &[]) >= keys.len() as f64,
        "b holds {} hot keys:\n{}",
        keys.len(),
        mb.text
    );
    assert!(
        sum(&mb, "nexuscache_hot_size_bytes", &[]) > 0.0,
        "b's hot tier holds bytes:\n{}",
        mb.text
    );
    // Default hot tier: --max-memory / 8.
    let cap = sum(&mb, "nexuscache_hot_capacity_bytes", &[]);
    assert!(
        (cap - MAX_MEMORY / 8.0).abs() <= MAX_MEMORY / 8.0 * 0.01,
        "hot capacity {cap} should be --max-memory/8 = {}:\n{}",
        MAX_MEMORY / 8.0,
        mb.text
    );
    drop((grpc_b, grpc_c));
}

// ---------------------------------------------------------------------------
// b. No stale read after an acknowledged write or delete
// ---------------------------------------------------------------------------

#[test]
fn b_no_node_returns_an_old_value_after_a_write_or_delete_is_acknowledged() {
    let nodes = cluster(&["a", "b", "c"], &[]);
    let names = ["a", "b", "c"];
    // One key per owner.
    let keys: Vec<String> = keys_owned_by(&nodes[0], &names, 1, &uniq("coherent"))
        .into_iter()
        .flatten()
        .collect();
    let mut clients: Vec<Client> = nodes.iter().map(|n| Client::new(n.http_port)).collect();
    let mut rng = Rng::new();
    let req = |clients: &mut [Client], n: usize, method: &str, target: &str, body: &[u8]| {
        clients[n]
            .request(method, target, body)
            .unwrap_or_else(|e| panic!("node {}: {method} {target}: {e}", names[n]))
    };
    // `GET /api/get?key=<key>` through node `n`.
    let get_via = |clients: &mut [Client], n: usize, key: &str| {
        req(clients, n, "GET", &cluster_common::get_target(key), b"")
    };

    // 100 hot writes, each through a random node and API, each read back
    // through every node right after its ack.
    for i in 0..100 {
        let key = &keys[i % keys.len()];
        let w = rng.below(3);
        let value = format!("v{i}");
        let r = if rng.below(2) == 0 {
            req(
                &mut clients,
                w,
                "POST",
                "/api/set",
                hot_form(key, &value, true).as_bytes(),
            )
        } else {
            req(
                &mut clients,
                w,
                "PUT",
                &format!("{}?hot=true", v1_target(key)),
                value.as_bytes(),
            )
        };
        assert_ok(&r, &format!("#{i}: hot set {key}={value} via {}", names[w]));
        for (n, name) in names.iter().enumerate() {
            let r = get_via(&mut clients, n, key);
            assert_value(
                &r,
                &value,
                &format!(
                    "#{i}: get {key} via {name} right after the hot set via {}",
                    names[w]
                ),
            );
        }
    }

    // Deletes: gone everywhere once acknowledged.
    for key in &keys {
        let w = rng.below(3);
        let r = req(
            &mut clients,
            w,
            "POST",
            "/api/delete",
            form(&[("key", key.as_bytes())]).as_bytes(),
        );
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, "deleted\n"),
            "delete hot {key} via {}: {}",
            names[w],
            r.describe()
        );
        for (n, name) in names.iter().enumerate() {
            let r = get_via(&mut clients, n, key);
            assert_miss(
                &r,
                &format!("get {key} via {name} after the delete via {}", names[w]),
            );
            let r = req(&mut clients, n, "GET", &v1_target(key), b"");
            assert_miss(
                &r,
                &format!("v1 get {key} via {name} after the delete via {}", names[w]),
            );
        }
    }

    // A plain (not hot) write over a hot key replaces every copy; so does
    // a v1 DELETE.
    for (k, key) in keys.iter().enumerate() {
        let (w1, w2) = (k % 3, (k + 1) % 3);
        let r = req(
            &mut clients,
            w1,
            "POST",
            "/api/set",
            hot_form(key, "hot-one", true).as_bytes(),
        );
        assert_ok(&r, &format!("hot set {key} via {}", names[w1]));
        for (n, name) in names.iter().enumerate() {
            let r = get_via(&mut clients, n, key);
            assert_value(
                &r,
                "hot-one",
                &format!("get {key} via {name} after the hot set"),
            );
        }
        let r = req(
            &mut clients,
            w2,
            "POST",
            "/api/set",
            hot_form(key, "plain-two", false).as_bytes(),
        );
        assert_ok(&r, &format!("plain set {key} via {}", names[w2]));
        for (n, name) in names.iter().enumerate() {
            let r = get_via(&mut clients, n, key);
            assert_value(
                &r,
                "plain-two",
                &format!(
                    "get {key} via {name} after a plain set via {} over a hot value",
                    names[w2]
                ),
            );
            let r = req(&mut clients, n, "GET", &v1_target(key), b"");
            assert_eq!(
                (r.status, r.body.as_slice(), r.header("x-nexuscache-hot")),
                (200, b"plain-two".as_slice(), Some("false")),
                "v1 get {key} via {name} after a plain set over a hot value: {}",
                r.describe()
            );
        }
        // Hot again, then a v1 DELETE through the third node.
        let w3 = (k + 2) % 3;
        let r = req(
            &mut clients,
            w1,
            "POST",
            "/api/set",
            hot_form(key, "hot-three", true).as_bytes(),
        );
        assert_ok(&r, &format!("hot set {key} via {}", names[w1]));
        let r = req(&mut clients, w3, "DELETE", &v1_target(key), b"");
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, "deleted\n"),
            "v1 delete {key} via {}: {}",
            names[w3],
            r.describe()
        );
        for (n, name) in names.iter().enumerate() {
            let r = get_via(&mut clients, n, key);
            assert_miss(
                &r,
                &format!("get {key} via {name} after a v1 delete via {}", names[w3]),
            );
        }
    }

    // Without an origin a miss stays a 404 on every node.
    let never = uniq("never-set");
    for (n, name) in names.iter().enumerate() {
        let r = get_via(&mut clients, n, &never);
        assert_miss(
            &r,
            &format!("get of a never-set key via {name} without an origin"),
        );
    }

    // Every replica update the owners sent succeeded.
    for n in &nodes {
        let m = n.metrics();
        assert_eq!(
            sum(
                &m,
                "nexuscache_replica_updates_total",
                &[("status", "failed")]
            ),
            0.0,
            "node {}: failed replica updates:\n{}",
            n.name,
            m.text
        );
    }
}

/// One read of the concurrent coherence test: when it was sent, through
/// which node, and the version it answered (0 for a miss).
struct Read {
    node: usize,
    sent: Instant,
    answered: Instant,
    version: u64,
}

fn version_of(r: &Response, what: &str) -> u64 {
    match r.status {
        404 => 0,
        200 => r
            .body_str()
            .strip_prefix("value=")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{what}: unexpected value: {}", r.describe())),
        _ => panic!("{what}: {}", r.describe()),
    }
}

#[test]
fn b_concurrent_readers_never_see_a_value_older_than_the_last_acknowledged_write() {
    // Automatic copies after 2 forwarded reads, kept long: every reader
    // races its copies against the owner's invalidations.
    let nodes = cluster(
        &["a", "b", "c"],
        &["--hot-auto-threshold", "2", "--hot-auto-ttl-ms", "3000"],
    );
    let names = ["a", "b", "c"];
    let key = keys_owned_by(&nodes[0], &["a"], 1, &uniq("race"))
        .remove(0)
        .remove(0);
    assert_ok(&set_form(&nodes[0], &key, "0", false), "initial set");
    let ports: Vec<u16> = nodes.iter().map(|n| n.http_port).collect();
    let stop = Arc::new(AtomicBool::new(false));

    // Readers: one per node, back to back on a keep-alive connection.
    let readers: Vec<_> = (0..3)
        .map(|n| {
            let (key, port, stop) = (key.clone(), ports[n], stop.clone());
            std::thread::spawn(move || {
                let mut client = Client::new(port);
                let mut reads = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let sent = Instant::now();
                    let r = client
                        .get(&key)
                        .unwrap_or_else(|e| panic!("reader via {}: {e}", ["a", "b", "c"][n]));
                    let version = version_of(&r, "reader");
                    reads.push(Read {
                        node: n,
                        sent,
                        answered: Instant::now(),
                        version,
                    });
                }
                reads
            })
        })
        .collect();

    // One writer: versions 1..=200 through random nodes, hot or not.
    let mut rng = Rng::new();
    let mut clients: Vec<Client> = ports.iter().map(|p| Client::new(*p)).collect();
    let mut acked: Vec<Instant> = Vec::new();
    for v in 1..=200u64 {
        let (w, hot) = (rng.below(3), rng.below(2) == 0);
        let r = clients[w]
            .request(
                "POST",
                "/api/set",
                hot_form(&key, &v.to_string(), hot).as_bytes(),
            )
            .unwrap_or_else(|e| panic!("set {v} via {}: {e}", names[w]));
        assert_ok(&r, &format!("set {key}={v} (hot {hot}) via {}", names[w]));
        acked.push(Instant::now());
    }
    stop.store(true, Ordering::SeqCst);
    let reads: Vec<Read> = readers
        .into_iter()
        .flat_map(|t| t.join().expect("reader thread"))
        .collect();

    // A read sent after version v was acknowledged answers v or newer.
    let start = acked[0];
    let stale: Vec<String> = reads
        .iter()
        .filter_map(|r| {
            let newest = acked.iter().take_while(|t| **t < r.sent).count() as u64;
            (r.version < newest).then(|| {
                format!(
                    "via {}: sent at {:.1} ms, answered {} at {:.1} ms, but {newest} was acked \
                     at {:.1} ms",
                    names[r.node],
                    r.sent.saturating_duration_since(start).as_secs_f64() * 1e3,
                    r.version,
                    r.answered.saturating_duration_since(start).as_secs_f64() * 1e3,
                    acked[newest as usize - 1]
                        .saturating_duration_since(start)
                        .as_secs_f64()
                        * 1e3,
                )
            })
        })
        .collect();
    let per_node: Vec<usize> = (0..3)
        .map(|n| reads.iter().filter(|r| r.node == n).count())
        .collect();
    let auto: Vec<f64> = nodes.iter().map(|n| auto_copies(&n.metrics())).collect();
    eprintln!("reads per node {per_node:?}; auto copies per node {auto:?}");
    assert!(
        stale.is_empty(),
        "{} of {} reads answered a value older than an acknowledged write: {:#?}",
        stale.len(),
        reads.len(),
        &stale[..stale.len().min(20)]
    );
    assert!(
        per_node.iter().all(|n| *n >= 20),
        "too few reads to mean anything: {per_node:?}"
    );

    // Two writers at once: once both are acknowledged every node answers
    // the same value (the owner's).
    for round in 0..30 {
        let hot = [round % 3 != 1, round % 3 != 2];
        let barrier = Arc::new(Barrier::new(2));
        let writers: Vec<_> = [1usize, 2]
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                let (key, port, barrier) = (key.clone(), ports[n], barrier.clone());
                let value = format!("{}", 1000 + round * 10 + i);
                let hot = hot[i];
                std::thread::spawn(move || {
                    let body = hot_form(&key, &value, hot);
                    let mut conn = Conn::try_connect(port).map_err(|e| e.to_string())?;
                    let raw = build_request("POST", "/api/set", &[], body.as_bytes());
                    barrier.wait();
                    conn.try_send(&raw).map_err(|e| e.to_string())?;
                    conn.try_read_response().map_err(|e| format!("{e:?}"))
                })
            })
            .collect();
        for (i, t) in writers.into_iter().enumerate() {
            let r = t
                .join()
                .expect("writer thread")
                .unwrap_or_else(|e| panic!("round {round}: writer {i}: {e}"));
            assert_ok(&r, &format!("round {round}: concurrent set #{i}"));
        }
        let seen: Vec<Response> = clients
            .iter_mut()
            .enumerate()
            .map(|(n, c)| {
                c.get(&key)
                    .unwrap_or_else(|e| panic!("round {round}: get via {}: {e}", names[n]))
            })
            .collect();
        let bodies: Vec<String> = seen.iter().map(Response::body_str).collect();
        assert!(
            seen.iter().all(|r| r.status == 200) && bodies.iter().all(|b| *b == bodies[0]),
            "round {round} (hot {hot:?}): after two concurrent writes via b and c were \
             acknowledged, a, b and c answered {bodies:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// c. Automatic hot copies
// ---------------------------------------------------------------------------

const AUTO_THRESHOLD: usize = 5;
const AUTO_TTL: Duration = Duration::from_millis(800);

/// Reads `key` through `client` (node `n`) until a GET is answered without
/// a forward (so `n` holds a copy: the key is not hot); returns how many
/// GETs it took and when a new automatic copy was first counted (`None` if
/// the copy was made before this call, e.g. by the read just before it).
fn read_until_local(
    n: &ClusterNode,
    client: &mut Client,
    key: &str,
    value: &str,
    what: &str,
) -> (usize, Option<Instant>) {
    let m0 = n.metrics();
    let (copies0, mut gets) = (auto_copies(&m0), peer_gets(&m0));
    let mut copy_seen: Option<Instant> = None;
    for i in 1..=40 {
        let r = client
            .get(key)
            .unwrap_or_else(|e| panic!("{what}: get {key} via {}: {e}", n.name));
        assert_value(
            &r,
            value,
            &format!("{what}: get #{i} of {key} via {}", n.name),
        );
        let m = n.metrics();
        let forwarded = peer_gets(&m) - gets;
        gets = peer_gets(&m);
        if copy_seen.is_none() && auto_copies(&m) > copies0 {
            copy_seen = Some(Instant::now());
        }
        if forwarded == 0.0 {
            return (i, copy_seen);
        }
    }
    panic!(
        "{what}: node {} still forwards GETs of {key} after 40 GETs (threshold \
         {AUTO_THRESHOLD}):\n{}",
        n.name,
        n.metrics().text
    );
}

#[test]
fn c_repeated_remote_reads_make_an_auto_copy_that_expires_and_is_invalidated() {
    let threshold = AUTO_THRESHOLD.to_string();
    let ttl = AUTO_TTL.as_millis().to_string();
    let nodes = cluster(
        &["a", "b", "c"],
        &[
            "--hot-auto-threshold",
            &threshold,
            "--hot-auto-ttl-ms",
            &ttl,
        ],
    );
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let key = keys_owned_by(a, &["a"], 1, &uniq("auto"))
        .remove(0)
        .remove(0);
    assert_ok(&set_form(a, &key, "v1", false), "plain set via a");
    let mut client = Client::new(b.http_port);

    // Reads through b: the first ones are forwarded, then b keeps a copy.
    let started = Instant::now();
    let (reads, seen) = read_until_local(b, &mut client, &key, "v1", "first copy");
    let seen = seen.unwrap_or_else(|| {
        panic!(
            "b answered {key} without forwarding after {reads} GETs, but \
             nexuscache_hot_copies_total{{kind=\"auto\"}} did not grow:\n{}",
            b.metrics().text
        )
    });
    let took = started.elapsed();
    eprintln!("auto copy after {reads} GETs in {took:?}");
    if took < Duration::from_millis(800) {
        assert!(
            (AUTO_THRESHOLD..=AUTO_THRESHOLD + 2).contains(&reads),
            "with --hot-auto-threshold {AUTO_THRESHOLD} the first GET answered from b's copy \
             was #{reads} (in {took:?}); expected #{} (a copy of the answer to forward \
             #{AUTO_THRESHOLD}), give or take one:\n{}",
            AUTO_THRESHOLD + 1,
            b.metrics().text
        );
    }

    // While the copy lives, reads stay on b.
    let m0 = b.metrics();
    let t0 = Instant::now();
    for i in 0..10 {
        assert_value(
            &client.get(&key).expect("get via b"),
            "v1",
            &format!("local read #{i} via b"),
        );
    }
    let m1 = b.metrics();
    if seen.elapsed() < AUTO_TTL - Duration::from_millis(200) {
        assert_eq!(
            peer_gets(&m1) - peer_gets(&m0),
            0.0,
            "b forwarded GETs of {key} while holding an auto copy (10 reads in {:?}):\n{}",
            t0.elapsed(),
            m1.text
        );
        assert!(
            hot_hits(&m1) - hot_hits(&m0) >= 10.0,
            "b's hot hits grew by {} over 10 local reads:\n{}",
            hot_hits(&m1) - hot_hits(&m0),
            m1.text
        );
    } else {
        eprintln!("(skipped the local-read check: the machine was too slow)");
    }
    // No copy on c, which never read the key; none on the owner either.
    assert_eq!(auto_copies(&c.metrics()), 0.0, "auto copy on c");
    assert_eq!(auto_copies(&a.metrics()), 0.0, "auto copy on the owner a");

    // After the auto TTL the next read goes to the owner again.
    let expiry = seen + AUTO_TTL + Duration::from_millis(100);
    std::thread::sleep(expiry.saturating_duration_since(Instant::now()));
    let m2 = b.metrics();
    assert_value(
        &client.get(&key).expect("get via b"),
        "v1",
        "read after the auto TTL",
    );
    let m3 = b.metrics();
    assert_eq!(
        peer_gets(&m3) - peer_gets(&m2),
        1.0,
        "the first read of {key} via b {:?} after its auto copy was made should go to the \
         owner (auto TTL {AUTO_TTL:?}):\n{}",
        seen.elapsed(),
        m3.text
    );

    // A write through the owner invalidates b's copy before it is acked.
    read_until_local(b, &mut client, &key, "v1", "second copy");
    assert_ok(
        &set_form(a, &key, "v2", false),
        "plain set v2 via the owner a",
    );
    for i in 0..3 {
        assert_value(
            &client.get(&key).expect("get via b"),
            "v2",
            &format!("read #{i} via b right after the write via the owner"),
        );
    }
    // So does a write through c (forwarded to the owner) and a delete.
    read_until_local(b, &mut client, &key, "v2", "third copy");
    assert_ok(&set_v1(c, &key, "v3", false), "v1 set v3 via c");
    assert_value(
        &client.get(&key).expect("get via b"),
        "v3",
        "read via b right after the write via c",
    );
    read_until_local(b, &mut client, &key, "v3", "fourth copy");
    let r = c.delete(&key);
    assert_eq!(r.status, 200, "delete via c: {}", r.describe());
    assert_miss(
        &client.get(&key).expect("get via b"),
        "read via b right after the delete via c",
    );
}

// ---------------------------------------------------------------------------
// d. A node that joins receives the current hot keys
// ---------------------------------------------------------------------------

#[test]
fn d_a_node_that_joins_receives_the_current_hot_keys() {
    // x is not in a's and b's --peers: adding it needs the opt-in.
    let nodes = cluster(&["a", "b"], &["--allow-setpeer-addr"]);
    let (a, b) = (&nodes[0], &nodes[1]);
    let prefix = uniq("join");
    let keys: Vec<String> = (0..12).map(|i| format!("{prefix}-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let via = if i % 2 == 0 { a } else { b };
        assert_ok(
            &set_form(via, key, &format!("hot-{i}"), true),
            &format!("hot set {key} via {}", via.name),
        );
    }

    // x joins: it names a and b, and they learn about it through /setpeer.
    let peers = format!("{},{}", a.peer_entry(), b.peer_entry());
    let mut x = static_node("x", &peers);
    x.start_with(&CORES_1);
    for n in [a, b] {
        let r = n.setpeer(&format!("peer=x&addr={}", x.peer_addr()));
        assert_eq!(r.status, 200, "setpeer x on {}: {}", n.name, r.describe());
    }
    let mut all = refs(&nodes);
    all.push(&x);
    wait_ring_members(&all, 3, MEMBERSHIP_DEADLINE);

    // The hot keys that a and b still own must be in x's hot tier.
    let kept: Vec<(usize, &String)> = keys
        .iter()
        .enumerate()
        .filter(|(_, k)| x.owner(k).node != "x")
        .collect();
    assert!(!kept.is_empty(), "x took every key");
    let (_, took) = wait_for(
        "x holds the hot keys of a and b",
        Duration::from_secs(10),
        || {
            let m = x.metrics();
            let items = sum(&m, "nexuscache_hot_items", &[]);
            if items >= kept.len() as f64 {
                Ok(())
            } else {
                Err(format!("x: hot_items {items} of {}", kept.len()))
            }
        },
    );
    eprintln!(
        "x held the {} hot keys {took:?} after the ring had 3 members",
        kept.len()
    );
    let m0 = x.metrics();
    for (i, key) in &kept {
        assert_value(&x.get(key), &format!("hot-{i}"), &format!("get {key} on x"));
    }
    let m1 = x.metrics();
    assert_eq!(
        peer_gets(&m1) - peer_gets(&m0),
        0.0,
        "x forwarded GETs of hot keys it should hold:\n{}",
        m1.text
    );
    assert!(
        hot_hits(&m1) - hot_hits(&m0) >= kept.len() as f64,
        "x's hot hits grew by {} for {} reads:\n{}",
        hot_hits(&m1) - hot_hits(&m0),
        kept.len(),
        m1.text
    );

    // A hot write after the join reaches x as well.
    let key = keys_owned_by(a, &["a"], 1, &uniq("after-join"))
        .remove(0)
        .remove(0);
    assert_ok(
        &set_form(b, &key, "late", true),
        "hot set after the join via b",
    );
    let m2 = x.metrics();
    assert_value(
        &x.get(&key),
        "late",
        "get on x of a hot key set after the join",
    );
    assert_eq!(
        peer_gets(&x.metrics()) - peer_gets(&m2),
        0.0,
        "x forwarded a GET of a hot key set after it joined"
    );
}

// ---------------------------------------------------------------------------
// e. Singleflight
// ---------------------------------------------------------------------------

#[test]
fn e_200_concurrent_gets_of_a_cold_key_make_one_origin_request() {
    let origin = Origin::with_delay(Duration::from_millis(300));
    let url = origin.url_template();
    let nodes = cluster(
        &["a", "b", "c"],
        &[
            "--origin",
            &url,
            "--origin-concurrency",
            "2",
            "--origin-timeout-ms",
            "2000",
        ],
    );
    let ports: Vec<u16> = nodes.iter().map(|n| n.http_port).collect();
    let key = uniq("cold");
    let before = metrics_all(&nodes);
    let started = Instant::now();
    let answers = concurrent_gets(&ports, &key, 200);
    let took = started.elapsed();
    let after = metrics_all(&nodes);
    let want = value_body(&format!("origin:{key}"));
    let wrong: Vec<String> = answers
        .iter()
        .filter(|(_, r)| !matches!(r, Ok(r) if r.status == 200 && r.body == want))
        .map(|(n, r)| match r {
            Ok(r) => format!("via {}: {}", nodes[*n].name, r.describe()),
            Err(e) => format!("via {}: {e}", nodes[*n].name),
        })
        .collect();
    let forwarded: Vec<f64> = (0..3)
        .map(|i| peer_gets(&after[i]) - peer_gets(&before[i]))
        .collect();
    let shared: f64 = (0..3)
        .map(|i| {
            sum(&after[i], "nexuscache_singleflight_shared_total", &[])
                - sum(&before[i], "nexuscache_singleflight_shared_total", &[])
        })
        .sum();
    eprintln!(
        "200 concurrent GETs in {took:?}; owner {}; forwarded GETs per node {forwarded:?}; \
         singleflight shared {shared}",
        nodes[0].owner(&key).node
    );
    assert!(
        wrong.is_empty(),
        "{} of 200 answers were not {:?}: {wrong:#?}",
        wrong.len(),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(
        origin.count(&key),
        1,
        "origin requests for {key} (requests: {:?})",
        origin.requests()
    );
    assert!(
        shared > 0.0,
        "no request waited for another's load (nexuscache_singleflight_shared_total)"
    );
    assert_eq!(origin_results(&nodes, "found"), 1.0, "origin found results");
    assert!(origin.unexpected().is_empty(), "{:?}", origin.unexpected());

    // --origin-concurrency 2: six cold keys of one owner, loaded at once,
    // never more than two at the origin.
    let a = &nodes[0];
    let keys = keys_owned_by(a, &["a"], 6, &uniq("bounded")).remove(0);
    origin.reset_max_in_flight();
    let threads: Vec<_> = keys
        .iter()
        .map(|key| {
            let (key, port) = (key.clone(), a.http_port);
            std::thread::spawn(move || {
                (
                    cluster_common::http_request(
                        port,
                        "GET",
                        &cluster_common::get_target(&key),
                        b"",
                    ),
                    key,
                )
            })
        })
        .collect();
    for t in threads {
        let (r, key) = t.join().expect("client thread");
        let r = r.unwrap_or_else(|e| panic!("get {key} via a: {e}"));
        assert_value(&r, &format!("origin:{key}"), &format!("get {key} via a"));
        assert_eq!(origin.count(&key), 1, "origin requests for {key}");
    }
    assert!(
        origin.max_in_flight() <= 2,
        "{} origin requests at once with --origin-concurrency 2",
        origin.max_in_flight()
    );
}

// ---------------------------------------------------------------------------
// f. Read-through
// ---------------------------------------------------------------------------

const ORIGIN_TIMEOUT: Duration = Duration::from_millis(300);

#[test]
fn f_read_through_caches_found_values_and_reports_origin_failures() {
    let origin = Origin::start_with(OriginConfig {
        delay: Duration::ZERO,
        slow_delay: Duration::from_secs(3),
    });
    let url = origin.url_template();
    let timeout = ORIGIN_TIMEOUT.as_millis().to_string();
    let nodes = cluster(
        &["a", "b", "c"],
        &["--origin", &url, "--origin-timeout-ms", &timeout],
    );
    let watch = StallWatch::start();

    // Found: loaded once by the owner, then cached.
    let key = uniq("item");
    let (owner, other) = (owner_of(&nodes, &key), non_owner_of(&nodes, &key));
    let value = format!("origin:{key}");
    assert_value(&other.get(&key), &value, "first get via a non-owner");
    assert_eq!(origin.count(&key), 1, "origin requests after the first get");
    assert_value(&owner.get(&key), &value, "get via the owner");
    assert_value(&other.get(&key), &value, "second get via the non-owner");
    for n in &nodes {
        let r = n.v1_get(&key);
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, value.as_bytes()),
            "v1 get via {}: {}",
            n.name,
            r.describe()
        );
    }
    assert_eq!(
        origin.count(&key),
        1,
        "origin requests after the value was cached"
    );
    assert_eq!(origin_results(&nodes, "found"), 1.0, "origin found results");
    assert_eq!(
        sum(
            &owner.metrics(),
            "nexuscache_origin_requests_total",
            &[("result", "found")]
        ),
        1.0,
        "the owner {} made the origin request",
        owner.name
    );

    // The key reaches the origin percent-encoded and decodes back.
    let odd = format!("{} with space/slash?&=%+é", uniq("odd"));
    assert_value(
        &non_owner_of(&nodes, &odd).get(&odd),
        &format!("origin:{odd}"),
        "get of a key that needs percent-encoding",
    );
    assert_eq!(
        origin.count(&odd),
        1,
        "origin requests for {odd:?} (requests: {:?})",
        origin.requests()
    );

    // 404: a miss, counted, not cached (no --negative-ttl).
    let missing = uniq("missing");
    let other = non_owner_of(&nodes, &missing);
    assert_miss(
        &other.get(&missing),
        "get of a key the origin does not have",
    );
    assert_eq!(origin.count(&missing), 1, "origin requests for {missing}");
    assert_miss(
        &owner_of(&nodes, &missing).get(&missing),
        "second get of the missing key",
    );
    assert_eq!(
        origin.count(&missing),
        2,
        "without --negative-ttl the second get of a missing key reaches the origin"
    );
    assert_eq!(
        origin_results(&nodes, "not_found"),
        2.0,
        "origin not_found results"
    );
    let negative: f64 = nodes
        .iter()
        .map(|n| sum(&n.metrics(), "nexuscache_negative_hits_total", &[]))
        .sum();
    assert_eq!(negative, 0.0, "negative hits without --negative-ttl");

    // 500: 502 with a reason, nothing cached.
    let broken = uniq("broken");
    let r = non_owner_of(&nodes, &broken).get(&broken);
    assert_error(&r, 502, "get of a key the origin fails on, via a non-owner");
    assert_eq!(origin.count(&broken), 1, "origin requests for {broken}");
    let r = owner_of(&nodes, &broken).get(&broken);
    assert_error(&r, 502, "get of a key the origin fails on, via the owner");
    assert_eq!(
        origin.count(&broken),
        2,
        "a failed origin answer must not be cached"
    );
    let r = non_owner_of(&nodes, &broken).v1_get(&broken);
    assert_error(&r, 502, "v1 get of a key the origin fails on");
    assert_eq!(origin_results(&nodes, "error"), 3.0, "origin error results");

    // Timeout: 502 within the origin timeout (plus slack), nothing cached.
    let slow = uniq("slow");
    for (i, via) in [non_owner_of(&nodes, &slow), owner_of(&nodes, &slow)]
        .into_iter()
        .enumerate()
    {
        let t0 = Instant::now();
        let r = via.get(&slow);
        let t1 = Instant::now();
        assert_error(&r, 502, &format!("get #{i} of a slow key via {}", via.name));
        let bound = watch.allowed(t0, t1, ORIGIN_TIMEOUT + Duration::from_millis(1000));
        assert!(
            t1 - t0 <= bound,
            "get #{i} of a slow key via {} took {:?} (origin timeout {ORIGIN_TIMEOUT:?}, \
             allowed {bound:?}; the origin answers after {:?})",
            via.name,
            t1 - t0,
            origin.config().slow_delay
        );
        assert_eq!(
            origin.count(&slow),
            i + 1,
            "a timed-out origin request must not be cached"
        );
    }
    assert_eq!(
        origin_results(&nodes, "timeout"),
        2.0,
        "origin timeout results"
    );
    assert!(origin.unexpected().is_empty(), "{:?}", origin.unexpected());
}

#[test]
fn f_negative_ttl_caches_misses_and_origin_ttl_expires_values() {
    let origin = Origin::start();
    let url = origin.url_template();
    let nodes = cluster(
        &["a", "b", "c"],
        &[
            "--origin",
            &url,
            "--negative-ttl",
            "2",
            "--origin-ttl",
            "2",
            "--ttl-jitter",
            "0",
        ],
    );
    let missing = uniq("missing");
    let found = uniq("item");
    // A hot key with a 2 s TTL (the origin does not have it).
    let hot = uniq("missing-hot");
    let r = nodes[1].request(
        "PUT",
        &format!("{}?ttl=2&hot=true", v1_target(&hot)),
        b"hot-value",
    );
    assert_ok(&r, "hot set with ttl=2");
    for n in &nodes {
        assert_value(
            &n.get(&hot),
            "hot-value",
            &format!("get of the hot key via {}", n.name),
        );
    }
    assert_miss(
        &non_owner_of(&nodes, &missing).get(&missing),
        "first get of a missing key",
    );
    assert_value(
        &non_owner_of(&nodes, &found).get(&found),
        &format!("origin:{found}"),
        "first get of a found key",
    );
    let loaded = Instant::now();
    for n in &nodes {
        assert_miss(
            &n.get(&missing),
            &format!("get of the missing key via {}", n.name),
        );
        assert_value(
            &n.get(&found),
            &format!("origin:{found}"),
            &format!("get of the found key via {}", n.name),
        );
    }
    assert_eq!(
        (origin.count(&missing), origin.count(&found)),
        (1, 1),
        "origin requests (missing, found) within the TTLs"
    );
    let negative: f64 = nodes
        .iter()
        .map(|n| sum(&n.metrics(), "nexuscache_negative_hits_total", &[]))
        .sum();
    assert!(
        negative >= 1.0,
        "the repeated gets of {missing} should be negative hits"
    );

    // Both expire after 2 s (no jitter).
    let expiry = loaded + Duration::from_millis(2200);
    std::thread::sleep(expiry.saturating_duration_since(Instant::now()));
    assert_miss(
        &owner_of(&nodes, &missing).get(&missing),
        "get of the missing key after --negative-ttl",
    );
    assert_value(
        &owner_of(&nodes, &found).get(&found),
        &format!("origin:{found}"),
        "get of the found key after --origin-ttl",
    );
    assert_eq!(
        (origin.count(&missing), origin.count(&found)),
        (2, 2),
        "origin requests (missing, found) after the TTLs"
    );
    // The hot copies expired with the owner's entry.
    for n in &nodes {
        assert_miss(
            &n.get(&hot),
            &format!("get of the hot key via {} after its 2 s TTL", n.name),
        );
    }
}

#[test]
fn f_an_unreachable_origin_is_a_502_and_no_origin_is_a_404() {
    // A cluster of one without an origin: a miss is a 404.
    let mut plain = static_node("plain", "");
    plain.start_with(&CORES_1);
    let key = uniq("nothing");
    assert_miss(&plain.get(&key), "get without an origin");
    assert_miss(&plain.v1_get(&key), "v1 get without an origin");

    // An origin nobody listens on: 502 at once, nothing cached.
    let dead = format!("http://127.0.0.1:{}/items/{{key}}", free_port());
    let mut n = static_node("dead-origin", "");
    n.start_with(&["--cores", "1", "--origin", &dead]);
    for i in 0..2 {
        let t0 = Instant::now();
        let r = n.get(&key);
        assert_error(&r, 502, &format!("get #{i} with an unreachable origin"));
        assert!(
            t0.elapsed() < Duration::from_millis(1500),
            "get #{i} with an unreachable origin took {:?}",
            t0.elapsed()
        );
    }
    assert_eq!(
        sum(
            &n.metrics(),
            "nexuscache_origin_requests_total",
            &[("result", "error")]
        ),
        2.0,
        "origin errors"
    );
}

// ---------------------------------------------------------------------------
// Hot writes that cannot reach a replica; a disabled hot tier
// ---------------------------------------------------------------------------

#[test]
fn a_hot_write_whose_replica_cannot_be_updated_is_a_503_and_the_owner_keeps_it() {
    let nodes = cluster(&["a", "b", "c"], &["--peer-timeout-ms", "300"]);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let key = keys_owned_by(a, &["a"], 1, &uniq("stuck"))
        .remove(0)
        .remove(0);
    let watch = StallWatch::start();
    c.signal("STOP");
    let t0 = Instant::now();
    let r = set_form(a, &key, "new", true);
    let t1 = Instant::now();
    c.signal("CONT");
    assert_error(&r, 503, "hot set while c is frozen");
    let bound = watch.allowed(t0, t1, Duration::from_millis(200 + 300 + 1000));
    assert!(
        t1 - t0 <= bound,
        "hot set while c is frozen took {:?}",
        t1 - t0
    );
    assert_value(&a.get(&key), "new", "the owner keeps the refused hot write");
    assert_value(&b.get(&key), "new", "get via b after the refused hot write");
    let m = a.metrics();
    assert!(
        sum(
            &m,
            "nexuscache_replica_updates_total",
            &[("op", "put"), ("status", "failed")]
        ) >= 1.0,
        "a failed replica update on the owner:\n{}",
        m.text
    );
}

#[test]
fn a_disabled_hot_tier_still_serves_hot_writes_through_the_owner() {
    let nodes = cluster(&["a", "b"], &["--hot-max-memory", "0"]);
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = keys_owned_by(a, &["a"], 1, &uniq("cold-tier"))
        .remove(0)
        .remove(0);
    assert_ok(&set_form(a, &key, "v", true), "hot set with no hot tier");
    let m0 = b.metrics();
    assert_value(&b.get(&key), "v", "get via b");
    let m1 = b.metrics();
    assert_eq!(
        peer_gets(&m1) - peer_gets(&m0),
        1.0,
        "with --hot-max-memory 0 b forwards the GET:\n{}",
        m1.text
    );
    assert_eq!(
        sum(&m1, "nexuscache_hot_capacity_bytes", &[]),
        0.0,
        "{}",
        m1.text
    );
    assert_eq!(sum(&m1, "nexuscache_hot_items", &[]), 0.0, "{}", m1.text);
}

#[test]
fn a_bounded_hot_tier_evicts_and_auto_copies_can_be_turned_off() {
    let nodes = cluster(
        &["a", "b"],
        &["--hot-max-memory", "64KiB", "--hot-auto-threshold", "0"],
    );
    let (a, b) = (&nodes[0], &nodes[1]);
    // 150 hot values of 1000 bytes, written through both nodes: far more
    // than either hot tier holds.
    let prefix = uniq("big");
    let value = |i: usize| format!("{i:04}{}", "x".repeat(996));
    for i in 0..150 {
        let via = &nodes[i % 2];
        assert_ok(
            &set_v1(via, &format!("{prefix}-{i}"), &value(i), true),
            &format!("hot set #{i} via {}", via.name),
        );
    }
    for n in [a, b] {
        let m = n.metrics();
        let (size, cap) = (
            sum(&m, "nexuscache_hot_size_bytes", &[]),
            sum(&m, "nexuscache_hot_capacity_bytes", &[]),
        );
        assert_eq!(cap, 65536.0, "node {}: hot capacity:\n{}", n.name, m.text);
        assert!(
            size > 0.0 && size <= cap,
            "node {}: hot tier holds {size} bytes of {cap}:\n{}",
            n.name,
            m.text
        );
    }
    // Every value is still served, from the hot tier or by the owner.
    for n in [a, b] {
        let mut client = Client::new(n.http_port);
        for i in 0..150 {
            let key = format!("{prefix}-{i}");
            let r = client
                .get(&key)
                .unwrap_or_else(|e| panic!("get {key} via {}: {e}", n.name));
            assert_value(&r, &value(i), &format!("get {key} via {}", n.name));
        }
    }

    // --hot-auto-threshold 0: reads never make an automatic copy.
    let key = keys_owned_by(a, &["a"], 1, &uniq("no-auto"))
        .remove(0)
        .remove(0);
    assert_ok(&set_form(a, &key, "plain", false), "plain set via a");
    let m0 = b.metrics();
    let mut client = Client::new(b.http_port);
    for i in 0..30 {
        assert_value(
            &client.get(&key).expect("get via b"),
            "plain",
            &format!("get #{i} via b"),
        );
    }
    let m1 = b.metrics();
    assert_eq!(
        (peer_gets(&m1) - peer_gets(&m0), auto_copies(&m1)),
        (30.0, 0.0),
        "b with --hot-auto-threshold 0: (forwarded GETs, auto copies) after 30 reads:\n{}",
        m1.text
    );
}
