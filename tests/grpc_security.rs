//! Issue 11 on the gRPC port of real nodes: who may call what, and what
//! one connection may cost.
//!
//! - `--auth-token`: every `Cache` method without a valid token is
//!   `UNAUTHENTICATED` and changes nothing;
//! - `--cluster-secret`: `Peer/Replicate` and the `forwarded` / `keep_copy`
//!   flags from a caller without the secret are `PERMISSION_DENIED` and
//!   change nothing; nodes sharing the secret (and a token) still forward
//!   and replicate hot writes; a node with another secret cannot;
//! - one HTTP/2 connection of never-finished 1 MiB `Set` streams keeps the
//!   node's RSS within the budget while another client is served;
//! - a gRPC connection without calls is closed after `--idle-timeout`.

mod cluster_common;
mod common;
mod grpc_common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_common::{
    start_static_nodes_with, static_node, wait_ring_members, ClusterNode, MEMBERSHIP_DEADLINE,
};
use common::Metrics;
use grpc_common::{runtime, GrpcNode};
use nexuscache::proto::cache_client::CacheClient;
use nexuscache::proto::peer_client::PeerClient;
use nexuscache::proto::{DeleteRequest, GetRequest, ReplicateRequest, SetRequest};
use tonic::transport::Channel;
use tonic::{Code, Request};

const TOKEN: &str = "client-token-0123456789abcdef";
const WRONG_TOKEN: &str = "client-token-0123456789abcdeX";
const SECRET: &str = "cluster-secret-0123456789abcdef";
const OTHER_SECRET: &str = "another-cluster-secret-987654321";
const SECRET_HEADER: &str = "x-nexuscache-cluster-secret";
const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Who a request claims to be.
#[derive(Clone, Copy, Debug)]
struct As {
    token: Option<&'static str>,
    secret: Option<&'static str>,
}

const NOBODY: As = As {
    token: None,
    secret: None,
};
const CLIENT: As = As {
    token: Some(TOKEN),
    secret: None,
};
const WRONG_CLIENT: As = As {
    token: Some(WRONG_TOKEN),
    secret: None,
};
const PEER: As = As {
    token: None,
    secret: Some(SECRET),
};

fn request<T>(message: T, who: As) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = who.token {
        let value = format!("Bearer {token}").parse().expect("token header");
        request.metadata_mut().insert("authorization", value);
    }
    if let Some(secret) = who.secret {
        let value = secret.parse().expect("secret header");
        request.metadata_mut().insert(SECRET_HEADER, value);
    }
    request
}

async fn channel(uri: String) -> Channel {
    Channel::from_shared(uri.clone())
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {uri}: {e}"))
}

fn set(key: &str, value: &str, hot: bool) -> SetRequest {
    SetRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ttl_seconds: 0,
        hot,
        forwarded: false,
    }
}

fn get(key: &str) -> GetRequest {
    GetRequest {
        key: key.as_bytes().to_vec(),
        forwarded: false,
        keep_copy: false,
    }
}

fn delete(key: &str) -> DeleteRequest {
    DeleteRequest {
        key: key.as_bytes().to_vec(),
        forwarded: false,
    }
}

fn replicate_put(key: &str, value: &str) -> ReplicateRequest {
    ReplicateRequest {
        key: key.as_bytes().to_vec(),
        remove: false,
        value: value.as_bytes().to_vec(),
        expires_in_ms: 0,
    }
}

fn replicate_remove(key: &str) -> ReplicateRequest {
    ReplicateRequest {
        key: key.as_bytes().to_vec(),
        remove: true,
        value: Vec::new(),
        expires_in_ms: 0,
    }
}

/// The value under `key` (read as `who`), `None` on a miss.
async fn value_of(c: &mut CacheClient<Channel>, key: &str, who: As) -> Option<String> {
    let hit = c
        .get(request(get(key), who))
        .await
        .unwrap_or_else(|e| panic!("get {key} as {who:?}: {e}"))
        .into_inner();
    hit.found
        .then(|| String::from_utf8_lossy(&hit.value).into_owned())
}

/// The status code of a failed call, with a one-line message.
fn refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) -> Code {
    match result {
        Ok(ok) => panic!("{what}: expected a refusal, got {ok:?}"),
        Err(status) => {
            assert!(
                !status.message().is_empty() && !status.message().contains('\n'),
                "{what}: the message must be one line: {:?}",
                status.message()
            );
            status.code()
        }
    }
}

fn auth_failures(m: &Metrics) -> f64 {
    m.sum("nexuscache_auth_failures_total", &[])
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

// ---------------------------------------------------------------------------
// Tokens and the cluster secret on one node
// ---------------------------------------------------------------------------

/// `--auth-token` and `--cluster-secret`: the token guards every method,
/// the secret the node-to-node ones, and a refusal changes nothing.
#[test]
fn tokens_guard_every_method_and_the_secret_guards_peer_calls() {
    let node = GrpcNode::start(&[
        "--auth-token",
        TOKEN,
        "--cluster-secret",
        SECRET,
        "--metrics-public",
    ]);
    let _log = node.node.log_on_panic();
    let failures_before = auth_failures(&node.node.metrics());
    runtime().block_on(async {
        let mut c = CacheClient::new(channel(node.grpc_uri()).await);
        let mut p = PeerClient::new(channel(node.grpc_uri()).await);
        c.set(request(set("k", "v0", false), CLIENT))
            .await
            .expect("set with the token");

        for who in [NOBODY, WRONG_CLIENT] {
            let what = format!("as {who:?}");
            let code = refused(c.get(request(get("k"), who)).await, &what);
            assert_eq!(code, Code::Unauthenticated, "get {what}");
            let code = refused(c.set(request(set("k", "v1", false), who)).await, &what);
            assert_eq!(code, Code::Unauthenticated, "set {what}");
            let code = refused(c.delete(request(delete("k"), who)).await, &what);
            assert_eq!(code, Code::Unauthenticated, "delete {what}");
            let code = refused(
                p.replicate(request(replicate_remove("k"), who)).await,
                &what,
            );
            assert_eq!(code, Code::Unauthenticated, "replicate {what}");
        }
        assert_eq!(value_of(&mut c, "k", CLIENT).await.as_deref(), Some("v0"));

        // A valid token is a client, not a peer.
        let code = refused(
            p.replicate(request(replicate_put("k", "evil"), CLIENT))
                .await,
            "replicate put with the token only",
        );
        assert_eq!(code, Code::PermissionDenied);
        let code = refused(
            p.replicate(request(replicate_remove("k"), CLIENT)).await,
            "replicate remove with the token only",
        );
        assert_eq!(code, Code::PermissionDenied);
        let mut forwarded = set("k", "evil", false);
        forwarded.forwarded = true;
        let code = refused(
            c.set(request(forwarded, CLIENT)).await,
            "forwarded set with the token only",
        );
        assert_eq!(code, Code::PermissionDenied);
        let mut forwarded = delete("k");
        forwarded.forwarded = true;
        let code = refused(
            c.delete(request(forwarded, CLIENT)).await,
            "forwarded delete with the token only",
        );
        assert_eq!(code, Code::PermissionDenied);
        for (forwarded, keep_copy) in [(true, false), (false, true), (true, true)] {
            let mut g = get("k");
            g.forwarded = forwarded;
            g.keep_copy = keep_copy;
            let what = format!("get forwarded={forwarded} keep_copy={keep_copy} with the token");
            assert_eq!(
                refused(c.get(request(g, CLIENT)).await, &what),
                Code::PermissionDenied,
                "{what}"
            );
        }
        assert_eq!(value_of(&mut c, "k", CLIENT).await.as_deref(), Some("v0"));

        // The secret proves a peer, which needs no token.
        assert_eq!(value_of(&mut c, "k", PEER).await.as_deref(), Some("v0"));
        let mut forwarded = set("k", "v2", false);
        forwarded.forwarded = true;
        c.set(request(forwarded, PEER))
            .await
            .expect("forwarded set from a peer");
        assert_eq!(value_of(&mut c, "k", CLIENT).await.as_deref(), Some("v2"));
        // A wrong secret proves nothing: without a token it is refused.
        let impostor = As {
            token: None,
            secret: Some(OTHER_SECRET),
        };
        assert_eq!(
            refused(c.get(request(get("k"), impostor)).await, "wrong secret"),
            Code::Unauthenticated
        );

        // With the token: every method works.
        c.delete(request(delete("k"), CLIENT))
            .await
            .expect("delete with the token");
        assert_eq!(value_of(&mut c, "k", CLIENT).await, None);
    });
    // 4 x 2 unauthenticated + 2 replicate + 2 forwarded + 3 get flags + 1.
    let failures = auth_failures(&node.node.metrics()) - failures_before;
    assert_eq!(failures, 16.0, "nexuscache_auth_failures_total");
}

/// `--cluster-secret` without a token: clients need nothing, but
/// `Replicate` and the peer flags still need the secret.
#[test]
fn replicate_and_peer_flags_need_the_secret_without_a_token() {
    let node = GrpcNode::start(&["--cluster-secret", SECRET]);
    let _log = node.node.log_on_panic();
    runtime().block_on(async {
        let mut c = CacheClient::new(channel(node.grpc_uri()).await);
        let mut p = PeerClient::new(channel(node.grpc_uri()).await);
        c.set(request(set("k", "v0", false), NOBODY))
            .await
            .expect("set without credentials");
        let wrong = As {
            token: None,
            secret: Some(OTHER_SECRET),
        };
        for who in [NOBODY, wrong] {
            let what = format!("replicate as {who:?}");
            let put = p.replicate(request(replicate_put("k", "evil"), who)).await;
            assert_eq!(refused(put, &what), Code::PermissionDenied, "{what}");
            let remove = p.replicate(request(replicate_remove("k"), who)).await;
            assert_eq!(refused(remove, &what), Code::PermissionDenied, "{what}");
            let mut forwarded = set("k", "evil", false);
            forwarded.forwarded = true;
            let r = c.set(request(forwarded, who)).await;
            assert_eq!(refused(r, "forwarded set"), Code::PermissionDenied);
            let mut keep = get("k");
            keep.keep_copy = true;
            let r = c.get(request(keep, who)).await;
            assert_eq!(refused(r, "keep_copy get"), Code::PermissionDenied);
        }
        assert_eq!(value_of(&mut c, "k", NOBODY).await.as_deref(), Some("v0"));
        // The secret lets a peer replicate (here: drop the key's copy).
        p.replicate(request(replicate_remove("k"), PEER))
            .await
            .expect("replicate from a peer");
    });
}

// ---------------------------------------------------------------------------
// Clusters
// ---------------------------------------------------------------------------

/// Three static nodes sharing the harness's cluster secret and a token:
/// forwarded calls and hot writes work, refused by nobody. A fourth node
/// with another secret can neither forward into them nor replicate.
#[test]
fn nodes_sharing_the_secret_forward_and_replicate_and_others_cannot() {
    let flags = ["--cores", "1", "--auth-token", TOKEN, "--metrics-public"];
    let nodes = start_static_nodes_with(&["a", "b", "c"], &flags);
    let refs: Vec<&ClusterNode> = nodes.iter().collect();
    wait_ring_members(&refs, 3, MEMBERSHIP_DEADLINE);
    let metrics = |n: &ClusterNode| n.metrics();
    let replica_copies = |m: &Metrics| m.sum("nexuscache_hot_copies_total", &[("kind", "replica")]);
    let peer_calls = |m: &Metrics| m.sum("nexuscache_peer_requests_total", &[]);
    let rt = runtime();

    // Forwarding: keys written through b land on their owners and read
    // back through c.
    let before: Vec<Metrics> = nodes.iter().map(metrics).collect();
    rt.block_on(async {
        let mut via_b = CacheClient::new(channel(nodes[1].grpc_uri()).await);
        let mut via_c = CacheClient::new(channel(nodes[2].grpc_uri()).await);
        for i in 0..12 {
            let key = format!("fwd-{i}");
            via_b
                .set(request(set(&key, &key, false), CLIENT))
                .await
                .unwrap_or_else(|e| panic!("set {key} via b: {e}"));
            assert_eq!(value_of(&mut via_c, &key, CLIENT).await, Some(key.clone()));
        }
        // A hot write through a reaches b's and c's hot tiers.
        let mut via_a = CacheClient::new(channel(nodes[0].grpc_uri()).await);
        via_a
            .set(request(set("hot-key", "hot-value", true), CLIENT))
            .await
            .expect("hot set via a");
        for c in [&mut via_b, &mut via_c] {
            let hit = c
                .get(request(get("hot-key"), CLIENT))
                .await
                .expect("get hot key")
                .into_inner();
            assert!(hit.found && hit.hot && hit.value == b"hot-value", "{hit:?}");
        }
    });
    let after: Vec<Metrics> = nodes.iter().map(metrics).collect();
    assert!(
        peer_calls(&after[1]) - peer_calls(&before[1]) > 0.0
            && peer_calls(&after[2]) - peer_calls(&before[2]) > 0.0,
        "b and c forwarded nothing in 12 keys:\n{}",
        after[1].text
    );
    for j in [1, 2] {
        assert!(
            replica_copies(&after[j]) - replica_copies(&before[j]) >= 1.0,
            "node {} got no replica of the hot write:\n{}",
            nodes[j].name,
            after[j].text
        );
    }
    for (n, m) in nodes.iter().zip(&after) {
        assert_eq!(
            auth_failures(m),
            0.0,
            "node {} refused a call of its own cluster:\n{}",
            n.name,
            m.text
        );
    }

    // Node d names a, b and c as peers but has another secret.
    let peers: Vec<String> = nodes.iter().map(ClusterNode::peer_entry).collect();
    let mut d = static_node("d", &peers.join(","));
    d.set_cluster_secret(Some(OTHER_SECRET));
    d.start_with(&flags);
    wait_ring_members(&[&d], 4, MEMBERSHIP_DEADLINE);
    let before: Vec<Metrics> = nodes.iter().map(metrics).collect();
    let failed = rt.block_on(async {
        let mut via_d = CacheClient::new(channel(d.grpc_uri()).await);
        let mut failed = 0;
        for i in 0..12 {
            let key = format!("from-d-{i}");
            failed += usize::from(
                via_d
                    .set(request(set(&key, "planted", true), CLIENT))
                    .await
                    .is_err(),
            );
        }
        let mut via_a = CacheClient::new(channel(nodes[0].grpc_uri()).await);
        for i in 0..12 {
            let key = format!("from-d-{i}");
            assert_eq!(
                value_of(&mut via_a, &key, CLIENT).await,
                None,
                "{key} written through d (another secret) is visible in a, b, c"
            );
        }
        failed
    });
    assert!(failed > 0, "d forwarded 12 keys and none failed");
    let after: Vec<Metrics> = nodes.iter().map(metrics).collect();
    let refusals: f64 = (0..3)
        .map(|j| auth_failures(&after[j]) - auth_failures(&before[j]))
        .sum();
    assert!(refusals > 0.0, "a, b and c refused nothing from d");
    for j in 0..3 {
        assert_eq!(
            replica_copies(&after[j]),
            replica_copies(&before[j]),
            "node {} took a replica from d:\n{}",
            nodes[j].name,
            after[j].text
        );
    }
}

/// A node that joins gets the current hot keys pushed to it (`Replicate`
/// from a and b): the pushes carry the cluster secret, so x takes them.
#[test]
fn hot_keys_are_pushed_to_a_joining_node_that_shares_the_secret() {
    let flags = ["--cores", "1", "--allow-setpeer-addr"];
    let nodes = start_static_nodes_with(&["a", "b"], &flags);
    let refs: Vec<&ClusterNode> = nodes.iter().collect();
    wait_ring_members(&refs, 2, MEMBERSHIP_DEADLINE);
    let rt = runtime();
    rt.block_on(async {
        let mut via_a = CacheClient::new(channel(nodes[0].grpc_uri()).await);
        for i in 0..12 {
            let key = format!("join-{i}");
            via_a
                .set(request(set(&key, &key, true), NOBODY))
                .await
                .unwrap_or_else(|e| panic!("hot set {key} via a: {e}"));
        }
    });
    let peers: Vec<String> = nodes.iter().map(ClusterNode::peer_entry).collect();
    let mut x = static_node("x", &peers.join(","));
    x.start_with(&flags);
    for n in &nodes {
        let r = n.setpeer(&format!("peer=x&addr={}", x.peer_addr()));
        assert_eq!(r.status, 200, "setpeer x on {}: {}", n.name, r.describe());
    }
    let mut all = refs.clone();
    all.push(&x);
    wait_ring_members(&all, 3, MEMBERSHIP_DEADLINE);
    let started = Instant::now();
    loop {
        let m = x.metrics();
        let copies = m.sum("nexuscache_hot_copies_total", &[("kind", "replica")]);
        assert_eq!(auth_failures(&m), 0.0, "x refused a push:\n{}", m.text);
        if copies > 0.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "x received no hot key in 10 s:\n{}",
            m.text
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// HTTP/2 bounds
// ---------------------------------------------------------------------------

/// The attack: one connection opening hundreds of `Set` streams,
/// each sending 900 KB of a 1 MB message and never finishing. Before: 525
/// MiB RSS in under 2 s. Now each connection holds at most 4 MiB of
/// partial messages (its budget) plus its 4 MiB receive window.
#[test]
fn unfinished_messages_on_one_connection_are_bounded() {
    /// What the node may grow by during the attack: the connection's
    /// budget and window (8 MiB), stream state and allocator slack.
    const RSS_GROWTH_BOUND: u64 = 40 * MIB;
    const STREAMS: usize = 400;
    const SCRAPE_SLACK: u64 = 64 * 1024;
    // GrpcNode runs `--cores 2`.
    let node = GrpcNode::start(&["--max-memory", "64MiB"]);
    let _log = node.node.log_on_panic();
    let pid = node.node.pid();
    let rt = runtime();
    let (growth, peak_gauge) = rt.block_on(async {
        // Warm up both cores' gRPC paths, then take the baseline.
        let mut other = CacheClient::new(channel(node.grpc_uri()).await);
        for i in 0..8 {
            let key = format!("warm-{i}");
            other
                .set(request(set(&key, "v", false), NOBODY))
                .await
                .expect("warm-up set");
        }
        let baseline = rss_bytes(pid);

        let tcp = tokio::net::TcpStream::connect(node.grpc_addr())
            .await
            .expect("connect");
        let (h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        // One buffer shared by every stream (Bytes clones), so the test
        // itself stays small: a prefix claiming 1,000,000 bytes, then
        // 900,000 of them.
        let mut partial = vec![0u8, 0, 0x0f, 0x42, 0x40];
        partial.resize(5 + 900_000, b'x');
        let partial = Bytes::from(partial);
        let opener = tokio::spawn(async move {
            let mut open = Vec::new();
            for _ in 0..STREAMS {
                let Ok(mut sender) = h2.clone().ready().await else {
                    break;
                };
                let request = http::Request::builder()
                    .method("POST")
                    .uri("http://127.0.0.1/nexuscache.v1.Cache/Set")
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(())
                    .expect("request");
                let Ok((response, mut stream)) = sender.send_request(request, false) else {
                    break;
                };
                let _ = stream.send_data(partial.clone(), false);
                open.push((response, stream));
            }
            open
        });

        let started = Instant::now();
        let mut peak = baseline;
        let mut peak_gauge = 0.0f64;
        let mut slowest = Duration::ZERO;
        while started.elapsed() < Duration::from_millis(2500) {
            let asked = Instant::now();
            assert_eq!(
                value_of(&mut other, "warm-0", NOBODY).await.as_deref(),
                Some("v"),
                "a second client's Get during the attack"
            );
            slowest = slowest.max(asked.elapsed());
            peak = peak.max(rss_bytes(pid));
            let gauge = node
                .node
                .metrics()
                .sum("nexuscache_connection_buffer_bytes", &[]);
            peak_gauge = peak_gauge.max(gauge);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            slowest < Duration::from_secs(1),
            "the second client waited {slowest:?} for a Get"
        );
        opener.abort();
        driver.abort();
        let growth = peak.saturating_sub(baseline);
        eprintln!(
            "RSS baseline {:.1} MiB, peak {:.1} MiB (+{:.1} MiB) with {STREAMS} unfinished \
             1 MB Set streams; peak nexuscache_connection_buffer_bytes {:.1} MiB; slowest \
             other Get {slowest:?}",
            baseline as f64 / MIB as f64,
            peak as f64 / MIB as f64,
            growth as f64 / MIB as f64,
            peak_gauge / MIB as f64,
        );
        (growth, peak_gauge)
    });
    // Dropping the runtime drops the aborted tasks, and with them the
    // attack's connection.
    drop(rt);
    assert!(
        growth < RSS_GROWTH_BOUND,
        "RSS grew by {} MiB, over the {} MiB bound",
        growth / MIB,
        RSS_GROWTH_BOUND / MIB
    );
    assert!(
        peak_gauge > 0.0,
        "the gauge never showed the partial messages"
    );
    // The gauge also counts HTTP buffers (the /metrics scrapes): a little
    // slack over the connection's 4 MiB budget.
    assert!(
        peak_gauge <= (4 * MIB + SCRAPE_SLACK) as f64,
        "partial messages of one connection held {peak_gauge} bytes, over its 4 MiB budget"
    );
    // The connection is gone: every charge was released.
    let released = Instant::now();
    loop {
        let held = node
            .node
            .metrics()
            .sum("nexuscache_connection_buffer_bytes", &[]);
        if held <= SCRAPE_SLACK as f64 {
            break;
        }
        assert!(
            released.elapsed() < Duration::from_secs(5),
            "{held} bytes still charged after the connection closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A gRPC connection without calls is sent GOAWAY and closed after
/// `--idle-timeout`, like an HTTP one (before: kept forever, so idle
/// connections could use up the node's file descriptors).
#[test]
fn idle_grpc_connections_are_closed() {
    let node = GrpcNode::start(&["--idle-timeout", "1"]);
    let _log = node.node.log_on_panic();
    runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(node.grpc_addr())
            .await
            .expect("connect");
        let (h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        let opened = Instant::now();
        let driver = tokio::spawn(async move {
            let _ = connection.await;
            opened.elapsed()
        });
        // One call, so the connection has been used, then nothing.
        let request = http::Request::builder()
            .method("POST")
            .uri("http://127.0.0.1/nexuscache.v1.Cache/Get")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        // Holding a handle keeps the client side from closing the
        // connection itself.
        let keep_open = h2.clone();
        let mut sender = h2.ready().await.expect("ready");
        let (response, mut stream) = sender.send_request(request, false).expect("send");
        let message = prost::Message::encode_to_vec(&get("k"));
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        stream
            .send_data(Bytes::from(framed), true)
            .expect("send message");
        let response = response.await.expect("response");
        assert_eq!(response.status(), 200);
        drop((response, stream, sender));

        let closed_after = tokio::time::timeout(Duration::from_secs(8), driver)
            .await
            .expect("the idle connection was still open 8 s later (--idle-timeout 1)")
            .expect("driver task");
        assert!(
            closed_after >= Duration::from_millis(900),
            "closed after {closed_after:?}, before the idle timeout"
        );
        drop(keep_open);
    });
}
