//! Forwarded ops land on the owner's home core: two real nodes with
//! `--cores 2` each and static `--peers`, sharing a cluster secret.
//!
//! Every peer connection announces the core it is for before its HTTP/2
//! preface, and the owner hands it to that core at accept, so reads,
//! writes, deletes and replica updates another node forwards arrive on the
//! key's home core: `nexuscache_forwarded_ops_received_total{landed="other_core"}`
//! stays at zero while `landed="home_core"` counts every one of them.
//!
//! The gRPC port stays open to anyone, so the announcement is untrusted
//! input: a bad magic, a core the node does not have, part of an
//! announcement or nothing at all must neither crash the node nor leave a
//! connection behind. (A Python grpcio client is checked by
//! `tests/grpc_python.rs`, tonic clients by every other gRPC test.)

mod cluster_common;
mod common;
mod grpc_common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_common::{
    grpc_client, start_static_nodes_with, start_static_nodes_with_cores, static_node, value_body,
    wait_for, wait_ring_members, ClusterNode, Discovery, MEMBERSHIP_DEADLINE,
};
use common::{form, pct, uniq, Metrics};
use grpc_common::runtime;
use nexuscache::peer::announce::announcement;
use nexuscache::proto::{DeleteRequest, GetRequest, GetResponse, SetRequest};
use prost::Message;

const FORWARDED: &str = "nexuscache_forwarded_ops_received_total";
const ANNOUNCEMENTS: &str = "nexuscache_peer_connection_announcements_total";
/// How long the bogus-client test's nodes wait for a connection's first
/// bytes (`--header-timeout`).
const HEADER_TIMEOUT_S: u64 = 1;

fn landed(nodes: &[ClusterNode], where_: &str) -> f64 {
    nodes
        .iter()
        .map(|n| n.metrics().sum(FORWARDED, &[("landed", where_)]))
        .sum()
}

fn owner_and_other<'a>(nodes: &'a [ClusterNode], key: &str) -> (&'a ClusterNode, &'a ClusterNode) {
    let owner = nodes[0].owner(key).node;
    let (o, n) = if owner == nodes[0].name {
        (0, 1)
    } else {
        (1, 0)
    };
    assert_eq!(nodes[o].name, owner, "{key}: owner {owner} is not a node");
    (&nodes[o], &nodes[n])
}

fn set(node: &ClusterNode, key: &str, value: &str, hot: bool) {
    let body = form(&[
        ("key", key.as_bytes()),
        ("value", value.as_bytes()),
        ("hot", if hot { b"true" } else { b"false" }),
    ]);
    let r = node.request("POST", "/api/set", body.as_bytes());
    assert_eq!(
        r.status,
        200,
        "set {key} via {}: {}",
        node.name,
        r.describe()
    );
}

fn expect_value(node: &ClusterNode, key: &str, value: &str) {
    let r = node.get(key);
    assert_eq!(
        r.status,
        200,
        "get {key} via {}: {}",
        node.name,
        r.describe()
    );
    assert_eq!(r.body, value_body(value), "get {key} via {}", node.name);
}

fn expect_miss(node: &ClusterNode, key: &str) {
    let r = node.v1_get(key);
    assert_eq!(
        r.status,
        404,
        "get {key} via {}: {}",
        node.name,
        r.describe()
    );
}

#[test]
fn forwarded_reads_writes_and_replica_updates_land_on_the_home_core() {
    let started = Instant::now();
    // `name=http/grpc@2`: the core count in `--peers`.
    let nodes = start_static_nodes_with_cores(&["a", "b"], &[]);
    let prefix = uniq("home");
    let keys: Vec<String> = (0..120).map(|i| format!("{prefix}-{i}")).collect();
    let before_home = landed(&nodes, "home_core");
    let before_other = landed(&nodes, "other_core");
    let mut forwarded = 0u32;

    // Writes and reads through the node that does not own the key: each is
    // forwarded to the owner.
    for (i, key) in keys.iter().enumerate() {
        let (_, other) = owner_and_other(&nodes, key);
        let value = format!("v{i}");
        set(other, key, &value, false);
        expect_value(other, key, &value);
        forwarded += 2;
    }
    // Hot keys: the owner pushes each write to the other node's hot tier
    // (a replica update the other node receives), which then answers
    // reads itself.
    for (i, key) in keys.iter().take(20).enumerate() {
        let (owner, other) = owner_and_other(&nodes, key);
        for round in 0..2 {
            let value = format!("hot{round}-{i}");
            set(owner, key, &value, true);
            forwarded += 1;
            expect_value(other, key, &value);
        }
    }
    // Deletes through the other node, hot keys among them (forwarded, and
    // the owner removes the other node's copy).
    for key in keys.iter().skip(10).take(20) {
        let (_, other) = owner_and_other(&nodes, key);
        let r = other.delete(key);
        assert_eq!(r.status, 200, "delete {key}: {}", r.describe());
        forwarded += 1;
        expect_miss(other, key);
        forwarded += 1;
    }
    // gRPC clients are served wherever the kernel puts them; what the node
    // forwards for them lands on the home core all the same.
    let rt = runtime();
    rt.block_on(async {
        for (i, key) in keys.iter().skip(40).take(40).enumerate() {
            let (_, other) = owner_and_other(&nodes, key);
            let mut client = grpc_client(other).await;
            let value = format!("grpc-{i}").into_bytes();
            client
                .set(SetRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("gRPC set {key}: {e}"));
            let hit = client
                .get(GetRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("gRPC get {key}: {e}"))
                .into_inner();
            assert!(hit.found && hit.value == value, "gRPC get {key}: {hit:?}");
            assert!(
                client
                    .delete(DeleteRequest {
                        key: key.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .await
                    .unwrap_or_else(|e| panic!("gRPC delete {key}: {e}"))
                    .into_inner()
                    .deleted,
                "gRPC delete {key}"
            );
            forwarded += 3;
        }
    });

    let home = landed(&nodes, "home_core") - before_home;
    let other = landed(&nodes, "other_core") - before_other;
    assert_eq!(
        other, 0.0,
        "{other} forwarded ops arrived on a core that is not the key's home"
    );
    assert!(
        home >= f64::from(forwarded),
        "only {home} forwarded ops counted on their home core, {forwarded} sent"
    );
    // Every peer connection was served where it asked to be.
    for node in &nodes {
        let m = node.metrics();
        assert_eq!(
            m.sum(ANNOUNCEMENTS, &[("result", "refused")]),
            0.0,
            "{}",
            node.name
        );
    }
    eprintln!(
        "{forwarded} forwarded ops, {home} on their home core, in {:?}",
        started.elapsed()
    );
}

/// One gRPC Get over a raw h2 connection that first sends `opening`
/// (an announcement, or anything else); `None` if the call failed.
async fn raw_get(addr: SocketAddr, opening: &[u8], key: &str) -> Option<GetResponse> {
    use tokio::io::AsyncWriteExt;
    let call = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        tcp.write_all(opening).await.ok()?;
        let (client, connection) = h2::client::handshake(tcp).await.ok()?;
        tokio::spawn(connection);
        let mut client = client.ready().await.ok()?;
        let message = GetRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }
        .encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        let request = http::Request::post(format!("http://{addr}/nexuscache.v1.Cache/Get"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .ok()?;
        let (response, mut send) = client.send_request(request, false).ok()?;
        send.send_data(Bytes::from(framed), true).ok()?;
        let mut body = response.await.ok()?.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.ok()?;
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        GetResponse::decode(bytes.get(5..)?).ok()
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .ok()
        .flatten()
}

/// Whether the server closes `stream` (end of file or reset) within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => return true,
        }
    }
    false
}

/// Nodes with different core counts: `a` has one core, `b` two, and each
/// names the other's count in `--peers` (`@N`). A key's home core at `b`
/// is `core_of(key, 2)`, which `a`'s single core is not for half the keys,
/// so `a` must pick the connection by the owner's core count.
#[test]
fn forwarded_ops_reach_the_home_core_of_an_owner_with_more_cores() {
    let mut a = static_node("a", "");
    let mut b = static_node("b", "");
    a.discovery = Discovery::Static {
        peers: format!("{}@2", b.peer_entry()),
    };
    b.discovery = Discovery::Static {
        peers: format!("{}@1", a.peer_entry()),
    };
    a.start_with(&["--cores", "1"]);
    b.start_with(&["--cores", "2"]);
    wait_ring_members(&[&a, &b], 2, MEMBERSHIP_DEADLINE);
    let prefix = uniq("unequal");
    let keys: Vec<String> = (0..200)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|k| a.owner(k).node == "b")
        .take(40)
        .collect();
    assert!(keys.len() >= 20, "keys owned by b: {}", keys.len());
    for (i, key) in keys.iter().enumerate() {
        let value = format!("v{i}");
        set(&a, key, &value, false);
        expect_value(&a, key, &value);
    }
    let m = b.metrics();
    assert_eq!(
        m.sum(FORWARDED, &[("landed", "other_core")]),
        0.0,
        "ops a forwarded landed off their home core at b:\n{}",
        m.text
    );
    assert!(
        m.sum(FORWARDED, &[("landed", "home_core")]) >= 2.0 * keys.len() as f64,
        "b received every forwarded op on its home core:\n{}",
        m.text
    );
}

#[test]
fn bogus_announcements_neither_crash_the_node_nor_linger() {
    let timeout = HEADER_TIMEOUT_S.to_string();
    // The plain `--peers` syntax, without core counts.
    let nodes = start_static_nodes_with(&["a", "b"], &["--header-timeout", &timeout]);
    let a = &nodes[0];
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, a.grpc_port));
    let key = uniq("bogus");
    set(a, &key, "there", false);
    let before = a.metrics();

    // Valid announcements, one per core, and cores the node does not have:
    // every one is served (by the named core, or the accepting one).
    let rt = runtime();
    rt.block_on(async {
        for core in [0u16, 1, 2, 9, u16::MAX] {
            let hit = raw_get(addr, &announcement(core), &key).await;
            let hit = hit.unwrap_or_else(|| panic!("announcing core {core}: call failed"));
            assert!(hit.found && hit.value == b"there", "core {core}: {hit:?}");
        }
        // No announcement at all: a plain HTTP/2 client.
        let hit = raw_get(addr, b"", &key)
            .await
            .expect("plain h2 call failed");
        assert!(hit.found, "{hit:?}");
    });
    let after = a.metrics();
    let count = |m: &Metrics, result: &str| m.sum(ANNOUNCEMENTS, &[("result", result)]);
    assert_eq!(
        count(&after, "refused") - count(&before, "refused"),
        3.0,
        "cores 2, 9 and 65535 are not cores of a 2-core node"
    );
    assert_eq!(
        count(&after, "here") + count(&after, "handed_off")
            - count(&before, "here")
            - count(&before, "handed_off"),
        2.0,
        "cores 0 and 1 are served where they asked"
    );

    // Garbage: a bad magic, an out-of-range core followed by junk, a
    // partial announcement, and nothing at all. Each is closed.
    let mut bad_magic = b"NXHOMX\x00\x01".to_vec();
    bad_magic.extend_from_slice(b"not http/2 at all");
    let mut junk_after = announcement(7).to_vec();
    junk_after.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    let openings: [(&str, Vec<u8>); 5] = [
        ("bad magic", bad_magic),
        ("out-of-range core then junk", junk_after),
        ("valid core then junk", {
            let mut v = announcement(1).to_vec();
            v.extend_from_slice(&[0xff; 64]);
            v
        }),
        ("partial announcement", b"NXHO".to_vec()),
        ("nothing", Vec::new()),
    ];
    let mut sockets = Vec::new();
    for (what, bytes) in &openings {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{what}: connect: {e}"));
        s.write_all(bytes)
            .unwrap_or_else(|e| panic!("{what}: write: {e}"));
        sockets.push((what, s));
    }
    // Closed within the header timeout plus slack for a loaded machine.
    let limit = Duration::from_secs(HEADER_TIMEOUT_S) + Duration::from_secs(5);
    for (what, s) in &mut sockets {
        assert!(
            closed_within(s, limit),
            "{what}: still open after {limit:?}"
        );
    }

    // The node is fine: it answers HTTP and gRPC, and holds no connection
    // for the garbage (only the peer connections it had, if any).
    let target = format!("/v1/keys/{}", pct(key.as_bytes()));
    let r = a.request("GET", &target, b"");
    assert_eq!(r.status, 200, "{}", r.describe());
    rt.block_on(async {
        let hit = raw_get(addr, &announcement(1), &key).await;
        assert!(hit.is_some_and(|h| h.found), "announced call after garbage");
    });
    let active = |m: &Metrics| m.sum("nexuscache_connections_active", &[]);
    let baseline = active(&before);
    // This request's own HTTP connection counts once.
    wait_for("connections back to the baseline", limit, || {
        let now = active(&a.metrics());
        if now <= baseline + 1.0 {
            Ok(())
        } else {
            Err(format!("{now} active, {baseline} before"))
        }
    });
    assert!(a.is_running());
    let log = a.log_text();
    assert!(!log.contains("panicked"), "node a panicked:\n{log}");
}
