//! `/setpeer` and `/removepeer` cannot rewire the ring: they need the token,
//! in static mode they only re-add members of `--peers` at their configured
//! addresses (unless `--allow-setpeer-addr`), a member can be taken out and
//! put back, this node cannot be removed, and the ring is capped at
//! `--max-ring-members`.

mod cluster_common;
mod common;

use std::time::{Duration, Instant};

use cluster_common::{start_static_nodes_with, ClusterNode, Owner};
use common::{form, free_port, pct, spawn, Conn, Metrics, Node, Response, Spec};

const TOKEN: &str = "setpeer-test-token-0123456789";
const BEARER: &str = "Bearer setpeer-test-token-0123456789";

fn call(port: u16, method: &str, target: &str, body: &str) -> Response {
    Conn::connect(port).request(
        method,
        target,
        &[("Authorization", BEARER)],
        body.as_bytes(),
    )
}

fn setpeer(port: u16, peer: &str, addr: Option<&str>) -> Response {
    let mut fields: Vec<(&str, &[u8])> = vec![("peer", peer.as_bytes())];
    if let Some(addr) = addr {
        fields.push(("addr", addr.as_bytes()));
    }
    call(port, "POST", "/setpeer", &form(&fields))
}

fn removepeer(port: u16, peer: &str) -> Response {
    call(
        port,
        "POST",
        "/removepeer",
        &form(&[("peer", peer.as_bytes())]),
    )
}

fn ring_members(port: u16) -> u64 {
    let r = call(port, "GET", "/metrics", "");
    assert_eq!(r.status, 200, "{}", r.describe());
    Metrics::parse(&r.body_str()).sum("nexuscache_ring_members", &[]) as u64
}

/// Ring changes reach the cores on their next timer tick (about 25 ms).
fn wait_ring_members(port: u16, expected: u64) {
    let start = Instant::now();
    while ring_members(port) != expected {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "nexuscache_ring_members stays {} (expected {expected})",
            ring_members(port)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn owner(port: u16, key: &str) -> Owner {
    let r = call(
        port,
        "GET",
        &format!("/v1/owner/{}", pct(key.as_bytes())),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    Owner::parse(&r.body_str()).expect("owner line")
}

/// Owners of a fixed set of keys as `node http` strings.
fn owners(port: u16) -> Vec<String> {
    (0..64)
        .map(|i| {
            let o = owner(port, &format!("key-{i}"));
            format!("{} {}", o.node, o.http)
        })
        .collect()
}

/// [`owners`] once `settled` holds for them, or after 5 s: every core picks
/// up a new ring within its next ring check (25 ms), so answers from
/// different cores can differ for a moment after a membership change.
fn owners_once(port: u16, settled: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let owners = owners(port);
        if settled(&owners) || Instant::now() >= deadline {
            return owners;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn expect(r: &Response, status: u16, mentions: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.describe());
    assert!(
        r.body_str().contains(mentions),
        "{what}: body {:?} should mention {mentions:?}",
        r.body_str()
    );
}

#[test]
fn static_setpeer_refuses_hijacks_and_removepeer_takes_members_out() {
    let nodes: Vec<ClusterNode> = start_static_nodes_with(&["a", "b"], &["--auth-token", TOKEN]);
    let (a, b) = (&nodes[0], &nodes[1]);
    let port = a.http_port;
    wait_ring_members(port, 2);
    let before = owners(port);
    assert!(before.iter().any(|o| o.starts_with("b ")), "{before:?}");

    // No token: refused before anything else.
    let evil = form(&[("peer", b"evil"), ("addr", b"127.0.0.1:9")]);
    for target in ["/setpeer", "/removepeer"] {
        let r = a.request("POST", target, evil.as_bytes());
        assert_eq!(r.status, 401, "{target} without token: {}", r.describe());
    }

    // With the token, still no new member and no move.
    let elsewhere = format!("127.0.0.1:{}", free_port());
    let r = setpeer(port, "evil", Some(&elsewhere));
    expect(&r, 403, "--allow-setpeer-addr", "adding a stranger");
    let r = setpeer(port, "b", Some(&elsewhere));
    expect(&r, 403, "--allow-setpeer-addr", "moving b");
    let r = setpeer(port, "evil", None);
    expect(&r, 404, "evil", "an unknown name");
    assert_eq!(ring_members(port), 2);
    assert_eq!(owners(port), before, "the ring must not change");

    // Re-adding a configured member, with its own address or none: fine.
    assert_eq!(setpeer(port, "b", None).status, 200);
    assert_eq!(setpeer(port, "b", Some(&b.peer_addr())).status, 200);

    // This node cannot be removed; a member can.
    let r = removepeer(port, "a");
    expect(&r, 409, "this node", "removing itself");
    let r = removepeer(port, "b");
    assert_eq!(r.status, 200, "{}", r.describe());
    wait_ring_members(port, 1);
    let alone = |o: &[String]| o.iter().all(|o| o.starts_with("a "));
    assert!(alone(&owners_once(port, alone)));
    let r = removepeer(port, "b");
    expect(&r, 404, "not a member", "removing it twice");

    // Keys b owned are served by a alone now.
    let moved: Vec<String> = (0..64)
        .map(|i| format!("key-{i}"))
        .filter(|k| before[k[4..].parse::<usize>().expect("index")].starts_with("b "))
        .take(5)
        .collect();
    for key in &moved {
        let set = call(
            port,
            "POST",
            "/api/set",
            &form(&[("key", key.as_bytes()), ("value", b"served-by-a")]),
        );
        assert_eq!(set.status, 200, "set {key}: {}", set.describe());
        let get = call(
            port,
            "GET",
            &format!("/v1/keys/{}", pct(key.as_bytes())),
            "",
        );
        assert_eq!(get.status, 200, "get {key}: {}", get.describe());
        assert_eq!(get.body_str(), "served-by-a");
    }
    // b never saw those writes: they stayed on a.
    for key in &moved {
        let direct = call(
            b.http_port,
            "GET",
            &format!("/v1/keys/{}", pct(key.as_bytes())),
            "",
        );
        assert_eq!(direct.status, 404, "{key} on b: {}", direct.describe());
    }

    // Put back without an address: at its configured one.
    let r = setpeer(port, "b", None);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(r.body_str().contains(&b.http_addr()), "{}", r.body_str());
    wait_ring_members(port, 2);
    assert_eq!(owners_once(port, |o| o == before.as_slice()), before);
}

fn start_node(name: &str, extra: &[&str]) -> Node {
    let mut args = vec!["--node-name", name, "--auth-token", TOKEN];
    args.extend_from_slice(extra);
    Node::start(&args)
}

#[test]
fn allow_setpeer_addr_adds_and_moves_and_the_cap_holds() {
    let b_addr = format!("127.0.0.1:{}", free_port());
    let peers = format!("b={b_addr}");
    let node = start_node(
        "a",
        &[
            "--peers",
            &peers,
            "--allow-setpeer-addr",
            "--max-ring-members",
            "3",
            "--insecure-no-auth",
        ],
    );
    let port = node.port;
    wait_ring_members(port, 2);

    let c_addr = format!("127.0.0.1:{}", free_port());
    let r = setpeer(port, "c", Some(&c_addr));
    assert_eq!(r.status, 200, "{}", r.describe());
    let moved = format!("127.0.0.1:{}", free_port());
    let r = setpeer(port, "b", Some(&moved));
    assert_eq!(r.status, 200, "{}", r.describe());
    wait_ring_members(port, 3);
    // The member count is 3 as soon as c is in; b's move may reach some
    // cores a moment later.
    let owners = owners_once(port, |o| {
        o.iter().any(|o| o == &format!("b {moved}")) && !o.iter().any(|o| o.contains(&b_addr))
    });
    assert!(
        owners.iter().any(|o| o == &format!("b {moved}")),
        "{owners:?}"
    );
    assert!(!owners.iter().any(|o| o.contains(&b_addr)), "{owners:?}");

    // A fourth member is past the cap.
    let r = setpeer(port, "d", Some(&format!("127.0.0.1:{}", free_port())));
    expect(&r, 507, "--max-ring-members", "a member past the cap");
    assert_eq!(ring_members(port), 3);
    assert_eq!(removepeer(port, "c").status, 200);
    let r = setpeer(port, "d", Some(&format!("127.0.0.1:{}", free_port())));
    assert_eq!(r.status, 200, "room again: {}", r.describe());
    wait_ring_members(port, 3);
}

#[test]
fn a_peers_list_past_the_cap_is_refused_at_start() {
    let port = free_port();
    let spec = Spec::serve(
        port,
        &[
            "--node-name",
            "a",
            "--peers",
            "b=127.0.0.1:1,c=127.0.0.1:2",
            "--max-ring-members",
            "2",
        ],
    );
    let mut node = spawn(port, &spec);
    let status = node
        .wait_exit(Duration::from_secs(10))
        .expect("the node must refuse to start");
    assert!(!status.success());
    let log = node.log_text();
    assert!(log.contains("--max-ring-members 2"), "{log}");
    assert_eq!(log.lines().count(), 1, "one line: {log}");
}
