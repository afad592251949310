//! The owner-side atomic ops over HTTP, on a real 3-node static cluster:
//! `/api/set` with `if`/`get`/`keepttl`/`ttl_ms`, `/api/incr`,
//! `/api/append`, `/api/getdel` and `/api/expire`, each sent to a node that
//! does not own the key (so the op is forwarded to the owner and runs
//! there), their answers and statuses, atomicity under concurrent clients
//! on every node, the token, and bad input.

mod cluster_common;
mod common;

use std::sync::{Barrier, OnceLock};
use std::time::Duration;

use cluster_common::{
    grpc_client, keys_owned_by, peer_requests_op, start_static_nodes_with, value_body, wait_for,
    Client, ClusterNode, CLIENT_TIMEOUT,
};
use common::{assert_error, form, Conn, Node, Response};
use nexuscache::proto::GetRequest;

/// Small enough that an append can pass it.
const MAX_VALUE: usize = 1024;

struct Cluster {
    nodes: Vec<ClusterNode>,
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster {
        nodes: start_static_nodes_with(&["a", "b", "c"], &["--max-value-bytes", "1KiB"]),
    })
}

impl Cluster {
    fn node(&self, name: &str) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .expect("node name")
    }

    /// One key owned by `owner` per call, named after `what`.
    fn key_owned_by(&self, owner: &str, what: &str) -> String {
        let prefix = common::uniq(what);
        keys_owned_by(self.node("a"), &[owner], 1, &prefix)[0][0].clone()
    }
}

fn post(node: &ClusterNode, path: &str, fields: &[(&str, &[u8])]) -> Response {
    node.request("POST", path, form(fields).as_bytes())
}

fn expect(r: &Response, status: u16, body: &[u8], what: &str) {
    assert_eq!(
        (r.status, r.body.as_slice()),
        (status, body),
        "{what}: {}",
        r.describe()
    );
}

/// Milliseconds until `key` expires, as the owner reports it over gRPC
/// (0: never).
fn expires_in_ms(node: &ClusterNode, key: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let mut client = grpc_client(node).await;
        let got = client
            .get(GetRequest {
                key: key.as_bytes().to_vec(),
                forwarded: false,
                keep_copy: false,
            })
            .await
            .unwrap_or_else(|e| panic!("gRPC Get {key}: {e}"))
            .into_inner();
        assert!(got.found, "{key} should exist");
        got.expires_in_ms
    })
}

#[test]
fn conditional_sets_through_a_node_that_does_not_own_the_key() {
    let c = cluster();
    let (a, b) = (c.node("a"), c.node("b"));
    let key = c.key_owned_by("c", "setif");
    let k = key.as_bytes();

    let r = post(
        a,
        "/api/set",
        &[("key", k), ("value", b"v1"), ("if", b"present")],
    );
    expect(
        &r,
        412,
        b"not written: the key does not exist (if=present)\n",
        "xx on a missing key",
    );
    expect(&b.get(&key), 404, b"not found\n", "nothing was written");
    let r = post(
        a,
        "/api/set",
        &[("key", k), ("value", b"v1"), ("if", b"absent")],
    );
    expect(&r, 200, b"ok\n", "nx on a missing key");
    let r = post(
        b,
        "/api/set",
        &[("key", k), ("value", b"v2"), ("if", b"absent")],
    );
    expect(
        &r,
        412,
        b"not written: the key exists (if=absent)\n",
        "nx on an existing key",
    );
    let r = post(
        b,
        "/api/set",
        &[
            ("key", k),
            ("value", b"v2"),
            ("if", b"absent"),
            ("get", b"true"),
        ],
    );
    expect(&r, 412, b"value=v1", "nx get answers the value that stays");
    expect(
        &a.get(&key),
        200,
        &value_body("v1"),
        "the first writer's value",
    );
    let r = post(
        b,
        "/api/set",
        &[
            ("key", k),
            ("value", b"v3"),
            ("if", b"present"),
            ("get", b"1"),
        ],
    );
    expect(&r, 200, b"value=v1", "xx get answers the old value");
    expect(&a.get(&key), 200, &value_body("v3"), "xx wrote");
    let fresh = c.key_owned_by("b", "setget");
    let r = post(
        a,
        "/api/set",
        &[("key", fresh.as_bytes()), ("value", b"x"), ("get", b"true")],
    );
    expect(&r, 200, b"not found\n", "get=true on a new key");

    // TTLs: ttl_ms is exact, keepttl keeps it, a plain set clears it.
    let r = post(
        a,
        "/api/set",
        &[("key", k), ("value", b"t"), ("ttl_ms", b"60000")],
    );
    expect(&r, 200, b"ok\n", "ttl_ms");
    let left = expires_in_ms(b, &key);
    assert!(
        (50_000..=60_000).contains(&left),
        "ttl_ms=60000 left {left} ms"
    );
    let r = post(
        b,
        "/api/set",
        &[("key", k), ("value", b"kept"), ("keepttl", b"true")],
    );
    expect(&r, 200, b"ok\n", "keepttl");
    let left = expires_in_ms(a, &key);
    assert!((50_000..=60_000).contains(&left), "keepttl left {left} ms");
    expect(
        &b.get(&key),
        200,
        &value_body("kept"),
        "keepttl wrote the value",
    );
    let r = post(
        a,
        "/api/set",
        &[("key", k), ("value", b"plain"), ("ttl", b"30")],
    );
    expect(&r, 200, b"ok\n", "a plain set with ttl in seconds");
    let left = expires_in_ms(a, &key);
    // Seconds and minutes are stretched by --ttl-jitter (default: up to 10%).
    assert!((20_000..=33_000).contains(&left), "ttl=30 left {left} ms");
    expect(
        &post(a, "/api/set", &[("key", k), ("value", b"p")]),
        200,
        b"ok\n",
        "plain set",
    );
    assert_eq!(expires_in_ms(b, &key), 0, "a plain set clears the expiry");

    // A short exact TTL really ends the key on every node.
    let r = post(
        b,
        "/api/set",
        &[("key", k), ("value", b"brief"), ("ttl_ms", b"300")],
    );
    expect(&r, 200, b"ok\n", "ttl_ms=300");
    wait_for("the 300 ms key to expire", Duration::from_secs(5), || {
        let r = a.get(&key);
        (r.status == 404).then_some(()).ok_or(r.describe())
    });
}

#[test]
fn incr_append_getdel_and_expire_through_non_owners() {
    let c = cluster();
    let (a, b, cn) = (c.node("a"), c.node("b"), c.node("c"));
    let before = a.metrics().sum(
        "nexuscache_requests_total",
        &[("op", "mutate"), ("status", "200")],
    );

    // INCR: a missing key counts from 0; the answer is the number.
    let counter = c.key_owned_by("b", "incr");
    let ck = counter.as_bytes();
    expect(
        &post(a, "/api/incr", &[("key", ck)]),
        200,
        b"1\n",
        "incr of a missing key",
    );
    expect(
        &post(cn, "/api/incr", &[("key", ck), ("by", b"41")]),
        200,
        b"42\n",
        "by=41",
    );
    expect(
        &post(a, "/api/incr", &[("key", ck), ("by", b"-50")]),
        200,
        b"-8\n",
        "by=-50",
    );
    expect(
        &cn.get(&counter),
        200,
        &value_body("-8"),
        "the number is the value",
    );
    expect(
        &post(a, "/api/set", &[("key", ck), ("value", b"abc")]),
        200,
        b"ok\n",
        "set text",
    );
    let r = post(cn, "/api/incr", &[("key", ck)]);
    assert_error(&r, 409, "incr of text");
    assert!(r.body_str().contains("not an integer"), "{}", r.describe());
    let max = i64::MAX.to_string();
    post(a, "/api/set", &[("key", ck), ("value", max.as_bytes())]);
    let r = post(cn, "/api/incr", &[("key", ck)]);
    assert_error(&r, 409, "incr past i64::MAX");
    assert!(r.body_str().contains("overflow"), "{}", r.describe());
    expect(
        &a.get(&counter),
        200,
        &value_body(&max),
        "a refused incr changes nothing",
    );

    // APPEND: answers the new length, bounded by --max-value-bytes.
    let log = c.key_owned_by("c", "append");
    let lk = log.as_bytes();
    expect(
        &post(a, "/api/append", &[("key", lk), ("value", b"abc")]),
        200,
        b"3\n",
        "create",
    );
    expect(
        &post(b, "/api/append", &[("key", lk), ("value", b"d e")]),
        200,
        b"6\n",
        "append",
    );
    expect(&a.get(&log), 200, &value_body("abcd e"), "appended bytes");
    let big = vec![b'x'; MAX_VALUE - 3];
    let r = post(b, "/api/append", &[("key", lk), ("value", &big)]);
    assert_error(&r, 413, "append past the value limit");
    expect(
        &a.get(&log),
        200,
        &value_body("abcd e"),
        "a refused append changes nothing",
    );

    // GETDEL: the value once, then 404, on every node.
    let r = post(b, "/api/getdel", &[("key", lk)]);
    expect(&r, 200, b"value=abcd e", "getdel answers the value");
    expect(
        &post(a, "/api/getdel", &[("key", lk)]),
        404,
        b"not found\n",
        "getdel again",
    );
    expect(&cn.get(&log), 404, b"not found\n", "gone on the owner");

    // EXPIRE: Redis 7's conditions; 412 when one does not hold.
    let key = c.key_owned_by("a", "expire");
    let k = key.as_bytes();
    let r = post(b, "/api/expire", &[("key", k), ("ttl", b"100")]);
    expect(&r, 404, b"not found\n", "expire of a missing key");
    post(cn, "/api/set", &[("key", k), ("value", b"v")]);
    let r = post(b, "/api/expire", &[("key", k), ("persist", b"true")]);
    expect(
        &r,
        412,
        b"not changed: the key has no expiry\n",
        "persist without expiry",
    );
    let r = post(
        b,
        "/api/expire",
        &[("key", k), ("ttl_ms", b"100000"), ("if", b"xx")],
    );
    expect(
        &r,
        412,
        b"not changed: the key has no expiry (if=xx)\n",
        "xx without expiry",
    );
    let r = post(
        b,
        "/api/expire",
        &[("key", k), ("ttl_ms", b"100000"), ("if", b"nx")],
    );
    expect(&r, 200, b"ok\n", "nx without expiry");
    let r = post(
        cn,
        "/api/expire",
        &[("key", k), ("ttl_ms", b"200000"), ("if", b"lt")],
    );
    expect(
        &r,
        412,
        b"not changed: the new expiry is not earlier (if=lt)\n",
        "lt later",
    );
    let r = post(
        cn,
        "/api/expire",
        &[("key", k), ("expire", b"3"), ("if", b"gt")],
    );
    expect(&r, 200, b"ok\n", "gt later, in minutes");
    let left = expires_in_ms(b, &key);
    assert!(
        (170_000..=198_000).contains(&left),
        "expire=3 left {left} ms"
    );
    let r = post(
        b,
        "/api/expire",
        &[
            ("key", k),
            ("ttl", b"50"),
            ("if", b"xx,lt"),
            ("get", b"true"),
        ],
    );
    expect(&r, 200, b"value=v", "xx,lt with get answers the value");
    let left = expires_in_ms(cn, &key);
    assert!((40_000..=55_000).contains(&left), "ttl=50 left {left} ms");
    let r = post(cn, "/api/expire", &[("key", k), ("persist", b"1")]);
    expect(&r, 200, b"ok\n", "persist");
    assert_eq!(expires_in_ms(b, &key), 0, "persist removed the expiry");
    let r = post(b, "/api/expire", &[("key", k), ("ttl_ms", b"200")]);
    expect(&r, 200, b"ok\n", "a short expiry");
    wait_for("the expired key to go", Duration::from_secs(5), || {
        let r = cn.get(&key);
        (r.status == 404).then_some(()).ok_or(r.describe())
    });

    let after = a.metrics().sum(
        "nexuscache_requests_total",
        &[("op", "mutate"), ("status", "200")],
    );
    assert!(
        after - before >= 5.0,
        "node a counted {} mutate requests answered 200",
        after - before
    );
    // The counter (b's) and the log (c's) went through a: a forwarded them.
    let m = a.metrics();
    for owner in ["b", "c"] {
        let forwarded = peer_requests_op(&m, owner, "mutate", "ok");
        assert!(
            forwarded >= 2.0,
            "a forwarded {forwarded} mutations to {owner}"
        );
    }
}

#[test]
fn concurrent_incr_on_every_node_sums_exactly() {
    const PER_THREAD: i64 = 250;
    let c = cluster();
    let key = c.key_owned_by("b", "count");
    let threads: Vec<(u16, i64)> = c
        .nodes
        .iter()
        .flat_map(|n| [(n.http_port, 1), (n.http_port, 3)])
        .collect();
    let start = Barrier::new(threads.len());
    std::thread::scope(|s| {
        for &(port, by) in &threads {
            let (key, start) = (&key, &start);
            s.spawn(move || {
                let mut client = Client::new(port);
                let body = form(&[("key", key.as_bytes()), ("by", by.to_string().as_bytes())]);
                start.wait();
                for _ in 0..PER_THREAD {
                    let r = client
                        .request("POST", "/api/incr", body.as_bytes())
                        .unwrap_or_else(|e| panic!("incr via port {port}: {e}"));
                    assert_eq!(r.status, 200, "incr via port {port}: {}", r.describe());
                }
            });
        }
    });
    let total: i64 = threads.iter().map(|(_, by)| by * PER_THREAD).sum();
    for node in &c.nodes {
        expect(
            &node.get(&key),
            200,
            &value_body(&total.to_string()),
            &format!("the sum read through {}", node.name),
        );
    }
}

#[test]
fn set_if_absent_races_have_exactly_one_winner() {
    const ROUNDS: usize = 20;
    let c = cluster();
    let keys: Vec<String> = (0..ROUNDS)
        .map(|i| {
            let owner = ["a", "b", "c"][i % 3];
            c.key_owned_by(owner, "race")
        })
        .collect();
    let start = Barrier::new(c.nodes.len());
    let outcomes: Vec<Vec<u16>> = std::thread::scope(|s| {
        let handles: Vec<_> = c
            .nodes
            .iter()
            .map(|node| {
                let (keys, start) = (&keys, &start);
                s.spawn(move || {
                    let mut client = Client::new(node.http_port);
                    keys.iter()
                        .map(|key| {
                            let body = form(&[
                                ("key", key.as_bytes()),
                                ("value", node.name.as_bytes()),
                                ("if", b"absent"),
                            ]);
                            start.wait();
                            let r = client
                                .request("POST", "/api/set", body.as_bytes())
                                .unwrap_or_else(|e| panic!("{}: {e}", node.name));
                            r.status
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("racer"))
            .collect()
    });
    for (i, key) in keys.iter().enumerate() {
        let statuses: Vec<u16> = outcomes.iter().map(|o| o[i]).collect();
        let winners: Vec<&str> = c
            .nodes
            .iter()
            .zip(&statuses)
            .filter(|(_, &s)| s == 200)
            .map(|(n, _)| n.name.as_str())
            .collect();
        assert_eq!(winners.len(), 1, "{key}: statuses per node {statuses:?}");
        assert!(
            statuses.iter().all(|&s| s == 200 || s == 412),
            "{key}: {statuses:?}"
        );
        expect(
            &c.node("a").get(key),
            200,
            &value_body(winners[0]),
            &format!("{key} holds the winner's value"),
        );
    }
}

#[test]
fn bad_input_is_400_with_a_one_line_reason() {
    let c = cluster();
    let a = c.node("a");
    let cases: &[(&str, &str, &str)] = &[
        ("/api/set", "key=k&if=nx", "if"),
        ("/api/set", "key=k&get=maybe", "get"),
        ("/api/set", "key=k&keepttl=true&ttl=5", "keepttl"),
        ("/api/set", "key=k&ttl=5&ttl_ms=5", "expire"),
        ("/api/set", "key=k&ttl_ms=259200001", "ttl_ms"),
        ("/api/set", "key=k&ttl=-1", "ttl"),
        ("/api/incr", "key=k&by=1.5", "by"),
        ("/api/incr", "key=k&by=", "by"),
        ("/api/incr", "key=k&by=99999999999999999999", "by"),
        ("/api/incr", "by=1", "key"),
        ("/api/append", "key=k", "value"),
        ("/api/getdel", "", "key"),
        ("/api/expire", "key=k", "expire"),
        ("/api/expire", "key=k&ttl=0", "expire"),
        ("/api/expire", "key=k&ttl=5&persist=true", "persist"),
        ("/api/expire", "key=k&persist=true&if=xx", "if"),
        ("/api/expire", "key=k&ttl=5&if=nx,gt", "if"),
        ("/api/expire", "key=k&ttl=5&if=sometimes", "if"),
        ("/api/expire", "key=k&expire=4321", "expire"),
    ];
    let mut conn = Conn::connect(a.http_port);
    conn.set_read_timeout(CLIENT_TIMEOUT);
    for (path, body, field) in cases {
        let r = conn.request("POST", path, &[], body.as_bytes());
        assert_error(&r, 400, &format!("{path} {body}"));
        assert!(
            r.body_str().contains(field),
            "{path} {body}: the reason should name {field}: {}",
            r.describe()
        );
    }
    for path in ["/api/incr", "/api/append", "/api/getdel", "/api/expire"] {
        let r = conn.request("GET", &format!("{path}?key=k"), &[], b"");
        assert_error(&r, 405, path);
        assert_eq!(r.header("allow"), Some("POST"), "{path}");
    }
    expect(
        &a.get("k"),
        404,
        b"not found\n",
        "no bad request wrote anything",
    );
}

#[test]
fn the_new_routes_need_the_token() {
    const TOKEN: &str = "mutate-token-0123456789abcdef0123";
    let node = Node::start(&["--auth-token", TOKEN]);
    let bearer = format!("Bearer {TOKEN}");
    let with = [("Authorization", bearer.as_str())];
    let cases: &[(&str, &str, u16, &[u8])] = &[
        ("/api/set", "key=t&value=1&if=absent", 200, b"ok\n"),
        ("/api/incr", "key=t", 200, b"2\n"),
        ("/api/append", "key=t&value=0", 200, b"2\n"),
        ("/api/expire", "key=t&ttl=60", 200, b"ok\n"),
        ("/api/getdel", "key=t", 200, b"value=20"),
    ];
    // A fresh connection each: a 401 may close one whose body it skipped.
    let send = |path: &str, headers: &[(&str, &str)], body: &str| {
        node.conn().request("POST", path, headers, body.as_bytes())
    };
    for (path, body, status, answer) in cases {
        let r = send(path, &[], body);
        assert_error(&r, 401, &format!("{path} without a token"));
        let wrong = [("Authorization", "Bearer wrong-token-wrong-token-wrong")];
        let r = send(path, &wrong, body);
        assert_error(&r, 401, &format!("{path} with a wrong token"));
        let r = send(path, &with, body);
        expect(&r, *status, answer, &format!("{path} with the token"));
    }
}
