//! The RESP commands that answer for the whole cluster, against real
//! processes: `DBSIZE` sums every ring member's entries (asked over
//! `nexuscache.v1.Peer/Stats`, never counting hot copies), and
//! `NEXUS.OWNER` names the owner's RESP address for every member, from
//! `--peers name=http/grpc/resp` or from the etcd record.

mod cluster_common;
mod common;
mod etcd_common;
mod grpc_common;
mod origin_common;
mod resp_common;

use std::time::{Duration, Instant};

use cluster_common::{
    start_etcd_nodes_with, start_static_nodes_listed, test_cluster_secret, wait_for,
    wait_ring_members, ClusterNode, MEMBERSHIP_DEADLINE, PEER_BOUND,
};
use etcd_common::Etcd;
use grpc_common::runtime;
use nexuscache::proto::peer_client::PeerClient;
use nexuscache::proto::StatsRequest;
use origin_common::{Origin, OriginConfig};
use resp_common::{encode_str, Client, Value};
use tonic::transport::Channel;

const SECRET_HEADER: &str = "x-nexuscache-cluster-secret";
const PLAIN_KEYS: usize = 60;
const HOT_KEYS: usize = 6;

fn resp(node: &ClusterNode) -> Client {
    let client = Client::connect(node.resp_port());
    client.set_read_timeout(Duration::from_secs(10));
    client
}

fn db_size(node: &ClusterNode) -> i64 {
    match resp(node).cmd(&["DBSIZE"]) {
        Value::Int(n) => n,
        other => panic!("node {}: DBSIZE answered {other:?}", node.name),
    }
}

/// `NEXUS.OWNER key` through `node`: (owner name, its RESP address).
fn owner_of(node: &ClusterNode, key: &str) -> (String, Option<String>) {
    let reply = resp(node).cmd(&["NEXUS.OWNER", key]);
    let name = reply
        .field("node")
        .unwrap_or_else(|| panic!("node {}: NEXUS.OWNER {key}: {reply:?}", node.name))
        .text();
    let addr = match reply.field("resp") {
        Some(Value::Nil) => None,
        Some(v) => Some(v.text()),
        None => panic!(
            "node {}: NEXUS.OWNER {key} has no resp: {reply:?}",
            node.name
        ),
    };
    (name, addr)
}

/// The node's own name as its `INFO server` says.
fn node_name_at(client: &mut Client) -> String {
    let info = client.cmd(&["INFO", "server"]).text();
    info.lines()
        .find_map(|l| l.strip_prefix("nexuscache_node:"))
        .unwrap_or_else(|| panic!("INFO server without nexuscache_node: {info:?}"))
        .trim()
        .to_owned()
}

fn hot_copies(nodes: &[ClusterNode]) -> f64 {
    nodes
        .iter()
        .map(|n| n.metrics().sum("nexuscache_hot_items", &[]))
        .sum()
}

/// Writes the plain keys through `plain_via` and the hot ones through
/// `hot_via`; waits until every hot key has its copies (one per other node).
fn write_keys(nodes: &[ClusterNode], plain_via: &ClusterNode, hot_via: &ClusterNode) {
    let mut c = resp(plain_via);
    for i in 0..PLAIN_KEYS {
        let key = format!("plain:{i}");
        assert_eq!(c.cmd(&["SET", &key, "v"]), Value::ok(), "SET {key}");
    }
    let mut h = resp(hot_via);
    for i in 0..HOT_KEYS {
        let key = format!("hot:{i}");
        assert_eq!(
            h.cmd(&["NEXUS.SETHOT", &key, "hv"]),
            Value::ok(),
            "SETHOT {key}"
        );
    }
    // A hot write is acknowledged after every copy is stored, so they are
    // all there already; the check only proves the test counts something.
    let copies = hot_copies(nodes);
    let expected = (HOT_KEYS * (nodes.len() - 1)) as f64;
    assert!(
        copies >= expected,
        "expected at least {expected} hot copies over the nodes, metrics say {copies}"
    );
}

async fn peer_client(node: &ClusterNode) -> PeerClient<Channel> {
    let channel = Channel::from_shared(node.grpc_uri())
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", node.grpc_uri()));
    PeerClient::new(channel)
}

/// `Peer/Stats` of `node` as a peer (with the cluster secret).
async fn stats_as_peer(node: &ClusterNode) -> u64 {
    let mut request = tonic::Request::new(StatsRequest {});
    request.metadata_mut().insert(
        SECRET_HEADER,
        test_cluster_secret().parse().expect("metadata value"),
    );
    peer_client(node)
        .await
        .stats(request)
        .await
        .unwrap_or_else(|e| panic!("node {}: Peer/Stats: {e}", node.name))
        .into_inner()
        .items
}

/// Three static nodes; `a` and `b` are listed with their RESP address, `c`
/// the old way (no RESP address), so the others do not know c's.
fn static_cluster() -> Vec<ClusterNode> {
    let nodes = start_static_nodes_listed(&["a", "b", "c"], &[], |node| {
        if node.name == "c" {
            node.peer_entry()
        } else {
            node.peer_entry_with_resp()
        }
    });
    let refs: Vec<&ClusterNode> = nodes.iter().collect();
    wait_ring_members(&refs, 3, MEMBERSHIP_DEADLINE);
    nodes
}

/// DBSIZE through any node is the cluster's key count: every node's
/// owned entries, hot copies not counted again; Peer/Stats is for peers
/// only; a member that is down is left out at once rather than failing.
#[test]
fn dbsize_is_the_whole_clusters_count_without_hot_copies() {
    let mut nodes = static_cluster();
    write_keys(&nodes, &nodes[0], &nodes[1]);
    let total = (PLAIN_KEYS + HOT_KEYS) as i64;
    for node in &nodes {
        assert_eq!(db_size(node), total, "DBSIZE through {}", node.name);
    }

    let rt = runtime();
    let per_node: Vec<u64> = rt.block_on(async {
        // Without the cluster secret the method is refused before its
        // message is read.
        let refused = peer_client(&nodes[0])
            .await
            .stats(StatsRequest {})
            .await
            .expect_err("Peer/Stats without the cluster secret");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        let mut counts = Vec::new();
        for node in &nodes {
            counts.push(stats_as_peer(node).await);
        }
        counts
    });
    assert_eq!(per_node.iter().sum::<u64>() as i64, total, "{per_node:?}");
    assert!(
        per_node.iter().all(|&n| n > 0),
        "every node owns some of the keys: {per_node:?}"
    );

    // c freezes: the others answer within the peer timeouts with what the
    // members that answered hold (an integer, as clients expect).
    nodes[2].freeze();
    for node in &nodes[..2] {
        let started = Instant::now();
        let size = db_size(node);
        let took = started.elapsed();
        nodes[2].signal("CONT");
        assert_eq!(
            size,
            total - per_node[2] as i64,
            "DBSIZE through {} with c frozen",
            node.name
        );
        assert!(
            took < PEER_BOUND,
            "DBSIZE with a member frozen took {took:?}"
        );
        nodes[2].freeze();
    }
    nodes[2].signal("CONT");
    // Once thawed, c counts again (after at most the reconnect back-off, if
    // the timed-out connection failed its liveness PING meanwhile).
    wait_for(
        "DBSIZE through a counts c again",
        Duration::from_secs(5),
        || match db_size(&nodes[0]) {
            n if n == total => Ok(()),
            n => Err(format!("DBSIZE {n}, expected {total}")),
        },
    );

    // c dies: the survivors answer at once with what they hold.
    nodes[2].kill9();
    for node in &nodes[..2] {
        let started = Instant::now();
        let size = db_size(node);
        let took = started.elapsed();
        assert_eq!(
            size,
            total - per_node[2] as i64,
            "DBSIZE through {} with c down",
            node.name
        );
        assert!(took < PEER_BOUND, "DBSIZE with a member down took {took:?}");
    }
}

/// NEXUS.OWNER through every node names the owner's RESP address (null for
/// the member whose --peers entry does not give one, except through that
/// member itself), and a client connecting there finds the key on the
/// node that owns it.
#[test]
fn nexus_owner_gives_every_members_resp_address() {
    let nodes = static_cluster();
    let mut seen_owner = std::collections::BTreeSet::new();
    let mut writer = resp(&nodes[0]);
    for i in 0..30 {
        let key = format!("owned:{i}");
        assert_eq!(writer.cmd(&["SET", &key, &format!("v{i}")]), Value::ok());
        let (owner_name, _) = owner_of(&nodes[0], &key);
        let owner = nodes
            .iter()
            .find(|n| n.name == owner_name)
            .unwrap_or_else(|| panic!("{key}: owner {owner_name:?} is not a node"));
        seen_owner.insert(owner.name.clone());
        for via in &nodes {
            let (name, addr) = owner_of(via, &key);
            assert_eq!(name, owner.name, "owner of {key} through {}", via.name);
            let expected = (owner.name != "c" || via.name == "c").then(|| owner.resp_addr());
            assert_eq!(addr, expected, "resp of {key}'s owner through {}", via.name);
        }
        let mut there = Client::connect(owner.resp_port());
        there.set_read_timeout(Duration::from_secs(10));
        assert_eq!(node_name_at(&mut there), owner.name);
        assert_eq!(there.cmd(&["GET", &key]), Value::bulk(&format!("v{i}")));
        let (name, _) = owner_of(owner, &key);
        assert_eq!(name, owner.name, "the owner names itself");
    }
    assert_eq!(
        seen_owner.len(),
        3,
        "30 keys should land on all three nodes: {seen_owner:?}"
    );
}

/// With etcd, the registration record carries the RESP address: NEXUS.OWNER
/// through one node names the other's, and DBSIZE sums both.
#[test]
fn etcd_records_carry_the_resp_address() {
    let etcd = Etcd::start();
    // One core each: the ring-members gauge waited for is then every
    // core's view.
    let nodes = start_etcd_nodes_with(&["a", "b"], &etcd.endpoint(), 5, &["--cores", "1"]);
    let refs: Vec<&ClusterNode> = nodes.iter().collect();
    wait_ring_members(&refs, 2, MEMBERSHIP_DEADLINE);
    let mut c = resp(&nodes[0]);
    for i in 0..20 {
        assert_eq!(c.cmd(&["SET", &format!("e:{i}"), "v"]), Value::ok());
    }
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..20 {
        let key = format!("e:{i}");
        let (name, addr) = owner_of(&nodes[0], &key);
        let owner = nodes.iter().find(|n| n.name == name).expect("a member");
        assert_eq!(addr, Some(owner.resp_addr()), "{key} through a");
        assert_eq!(
            owner_of(&nodes[1], &key).1,
            Some(owner.resp_addr()),
            "{key} through b"
        );
        owners.insert(name);
    }
    assert_eq!(owners.len(), 2, "20 keys should land on both nodes");
    // Writes are acknowledged by the owner, so both counts are there.
    assert_eq!(db_size(&nodes[1]), 20);
    assert_eq!(db_size(&nodes[0]), 20);
}

/// A pipeline's commands that wait on the cluster run at once, and their
/// replies still come in order: 16 reads of keys that every owner must
/// load from a slow origin reach it together (one after another they
/// would take 16 origin delays), and commands on one key, interleaved with
/// them, keep their order (SET, INCR, INCR, GET, GETDEL, GET).
#[test]
fn a_pipeline_waits_on_the_cluster_once_and_answers_in_order() {
    const DELAY: Duration = Duration::from_millis(250);
    let origin = Origin::start_with(OriginConfig {
        delay: DELAY,
        slow_delay: Duration::from_secs(3),
    });
    let template = origin.url_template();
    let nodes = start_static_nodes_listed(
        &["a", "b", "c"],
        &["--origin", &template, "--origin-timeout-ms", "5000"],
        ClusterNode::peer_entry_with_resp,
    );
    let refs: Vec<&ClusterNode> = nodes.iter().collect();
    wait_ring_members(&refs, 3, MEMBERSHIP_DEADLINE);
    // A key the origin does not have ("missing..."), owned by b.
    let counter = (0..)
        .map(|i| format!("missing:counter:{i}"))
        .find(|key| owner_of(&nodes[0], key).0 == "b")
        .expect("a key owned by b");
    let loaded: Vec<String> = (0..16).map(|i| format!("item:{i}")).collect();
    let mut commands: Vec<Vec<String>> = Vec::new();
    let on_counter: [&[&str]; 6] = [
        &["SET", "", "1"],
        &["INCR", ""],
        &["INCR", ""],
        &["GET", ""],
        &["GETDEL", ""],
        &["GET", ""],
    ];
    let mut expected = Vec::new();
    let answers = [
        Value::ok(),
        Value::Int(2),
        Value::Int(3),
        Value::bulk("3"),
        Value::bulk("3"),
        Value::Nil,
    ];
    for (i, key) in loaded.iter().enumerate() {
        commands.push(vec!["GET".into(), key.clone()]);
        expected.push(Value::bulk(&format!("origin:{key}")));
        if let (Some(command), Some(answer)) = (on_counter.get(i), answers.get(i)) {
            let mut command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
            command[1] = counter.clone();
            commands.push(command);
            expected.push(answer.clone());
        }
    }
    let mut raw = Vec::new();
    for command in &commands {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        raw.extend(encode_str(&args));
    }
    let mut client = resp(&nodes[0]);
    origin.reset_max_in_flight();
    let started = Instant::now();
    client.send(&raw);
    for (command, want) in commands.iter().zip(&expected) {
        let got = client.read().expect("a reply");
        assert_eq!(&got, want, "{command:?}");
    }
    let took = started.elapsed();
    assert!(
        origin.max_in_flight() >= 4,
        "the pipeline's loads did not overlap: at most {} at once",
        origin.max_in_flight()
    );
    assert!(
        took < DELAY * 8,
        "16 slow loads in one pipeline took {took:?} (one after another: {:?})",
        DELAY * 16
    );
}
