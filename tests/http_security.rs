//! Issue 11 on the HTTP/1.1 front end, against the real binary: bearer
//! tokens on every route but the health checks, `/metrics` opened only by
//! `--metrics-public`, and the memory one connection can make a node hold
//! (pipelined answers never read, endless chunk extensions and trailers,
//! buffers kept after a large request), with RSS read from /proc. Also
//! `HEAD` without a body and client bytes that must not reach a header.
//!
//! Each test starts its own node (nextest runs each test in its own
//! process), so RSS figures are not mixed between tests.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const TOKEN_A: &str = "token-alpha-0123456789abcdef";
const TOKEN_B: &str = "token-bravo-0123456789abcdef";
const WRONG: &str = "token-wrong-0123456789abcdef";
const MIB: u64 = 1 << 20;
/// `Config::max_unsent_bytes()` for the default `--max-value-bytes` (1 MiB):
/// max(2 x 1 MiB, 4 MiB).
const MAX_UNSENT: u64 = 4 * MIB;
/// What one connection that never reads may hold (see `api::http::conn`):
/// the output buffer stops taking answers once past `MAX_UNSENT`, so its
/// length is under `MAX_UNSENT` + one response (1 MiB value + head), and
/// its capacity, grown by doubling from 16 KiB, under the next power of two
/// (8 MiB); plus the 16 KiB input buffer and one value in flight (1 MiB).
const PER_CONNECTION_BOUND: u64 = (MAX_UNSENT + MIB).next_power_of_two() + 16 * 1024 + MIB;
/// Allocator slack, thread stacks touched, the test's own other requests.
const SLACK: u64 = 24 * MIB;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn token_node(extra: &[&str]) -> Node {
    let tokens = format!("{TOKEN_A},{TOKEN_B}");
    let mut args = vec!["--auth-token", tokens.as_str()];
    args.extend_from_slice(extra);
    Node::start(&args)
}

fn rss(node: &Node) -> u64 {
    rss_kib(node.pid()) * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// A request that must be refused with 401 and the Bearer challenge.
fn assert_401(r: &Response, wrong_token: bool, what: &str) {
    assert_error(r, 401, what);
    let challenge = r
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: 401 without WWW-Authenticate: {}", r.describe()));
    assert!(
        challenge.starts_with("Bearer realm=\"nexuscache\""),
        "{what}: {challenge}"
    );
    assert_eq!(
        challenge.contains("error=\"invalid_token\""),
        wrong_token,
        "{what}: {challenge}"
    );
}

/// Every route that needs the token: (method, target, body).
fn protected_routes() -> Vec<(&'static str, &'static str, &'static [u8])> {
    vec![
        ("GET", "/api/get?key=k", b""),
        ("POST", "/api/set", b"key=k&value=evil"),
        ("POST", "/api/delete", b"key=k"),
        ("GET", "/v1/keys/k", b""),
        ("HEAD", "/v1/keys/k", b""),
        ("PUT", "/v1/keys/k", b"evil"),
        ("DELETE", "/v1/keys/k", b""),
        ("GET", "/v1/owner/k", b""),
        ("POST", "/setpeer", b"peer=evil&addr=127.0.0.1:1"),
        ("POST", "/removepeer", b"peer=evil"),
        ("GET", "/metrics", b""),
        ("GET", "/no/such/route", b""),
    ]
}

fn send_as(node: &Node, method: &str, target: &str, body: &[u8], token: Option<&str>) -> Response {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    let mut c = node.conn();
    c.send_request(method, target, &headers, body);
    if method == "HEAD" {
        c.read_head_response()
    } else {
        c.read_response()
    }
}

#[test]
fn every_route_but_health_needs_the_token_and_refusals_change_nothing() {
    let node = token_node(&[]);
    let ok = |r: Response, what: &str| {
        assert_eq!(r.status, 200, "{what}: {}", r.describe());
        r
    };
    ok(
        send_as(&node, "PUT", "/v1/keys/k", b"good", Some(TOKEN_A)),
        "PUT with token A",
    );
    let metrics = || node.metrics_with(&[("Authorization", &bearer(TOKEN_A))]);
    let members_before = metrics().sum("nexuscache_ring_members", &[]);
    let failures_before = metrics().sum("nexuscache_auth_failures_total", &[]);

    let mut refused = 0.0;
    for (method, target, body) in protected_routes() {
        for (token, wrong) in [(None, false), (Some(WRONG), true)] {
            let what = format!("{method} {target} with token {token:?}");
            let r = send_as(&node, method, target, body, token);
            if method == "HEAD" {
                assert_eq!(r.status, 401, "{what}: {}", r.describe());
                assert!(r.header("www-authenticate").is_some(), "{what}");
            } else {
                assert_401(&r, wrong, &what);
            }
            refused += 1.0;
        }
    }
    // Nothing changed: the value, the ring.
    let r = ok(
        send_as(&node, "GET", "/v1/keys/k", b"", Some(TOKEN_B)),
        "GET with token B (rotation: both valid)",
    );
    assert_eq!(r.body, b"good", "a refused write must not store");
    let m = metrics();
    assert_eq!(m.sum("nexuscache_ring_members", &[]), members_before);
    assert_eq!(
        m.sum("nexuscache_auth_failures_total", &[]) - failures_before,
        refused,
        "every refusal is counted"
    );

    // The health checks stay open.
    assert_eq!(send_as(&node, "GET", "/healthz", b"", None).status, 200);
    assert_eq!(send_as(&node, "GET", "/readyz", b"", None).status, 200);

    // With a valid token every route answers as it did before tokens.
    let r = ok(
        send_as(&node, "POST", "/api/set", b"key=s&value=v", Some(TOKEN_A)),
        "seed set",
    );
    assert_eq!(r.body, b"ok\n");
    let r = ok(
        send_as(&node, "GET", "/api/get?key=s", b"", Some(TOKEN_B)),
        "seed get",
    );
    assert_eq!(r.body, b"value=v");
    ok(
        send_as(&node, "POST", "/api/delete", b"key=s", Some(TOKEN_A)),
        "seed delete",
    );
    ok(
        send_as(&node, "GET", "/v1/owner/k", b"", Some(TOKEN_A)),
        "owner",
    );
    ok(
        send_as(&node, "DELETE", "/v1/keys/k", b"", Some(TOKEN_A)),
        "v1 delete",
    );
    // /setpeer and /removepeer get past authentication (a single node has
    // no such peer to add or remove: not a 401, an answer about the peer).
    for target in ["/setpeer", "/removepeer"] {
        let r = send_as(&node, "POST", target, b"peer=nobody", Some(TOKEN_A));
        assert_ne!(r.status, 401, "{target} with token: {}", r.describe());
        assert_one_line(&r, target);
    }
}

#[test]
fn unauthenticated_bodies_are_never_waited_for() {
    let node = token_node(&[]);
    // A 1 MiB PUT that sends only its head: refused at once, closed (the
    // body is not read), and not stored.
    let mut c = node.conn();
    c.send(b"PUT /v1/keys/big HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n");
    let started = Instant::now();
    let r = c.read_response();
    assert_401(&r, false, "PUT head only");
    assert!(r.says_close(), "{}", r.describe());
    assert!(started.elapsed() < Duration::from_secs(2));
    c.assert_closed("after a 401 with a pending body");

    // Expect: 100-continue gets the 401, never the 100.
    let mut c = node.conn();
    c.send(
        b"PUT /v1/keys/big HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\
          Content-Length: 1048576\r\n\r\n",
    );
    assert_401(&c.read_response(), false, "PUT with Expect");

    // Chunked: the body's length is unknown, so the connection closes.
    let mut c = node.conn();
    c.send(
        b"POST /api/set HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nkey=a\r\n",
    );
    assert_401(&c.read_response(), false, "chunked POST");
    c.assert_closed("after a 401 on a chunked body");

    // A small body that arrived whole is skipped; the connection stays.
    let mut c = node.conn();
    c.send_request("PUT", "/v1/keys/small", &[], b"data");
    assert_401(&c.read_response(), false, "small PUT");
    c.assert_usable("after a 401 whose body had arrived");

    let r = send_as(&node, "GET", "/v1/keys/big", b"", Some(TOKEN_A));
    assert_eq!(r.status, 404, "{}", r.describe());
    let r = send_as(&node, "GET", "/v1/keys/small", b"", Some(TOKEN_A));
    assert_eq!(r.status, 404, "{}", r.describe());
}

#[test]
fn metrics_public_opens_only_metrics() {
    let node = token_node(&["--metrics-public"]);
    let r = send_as(&node, "GET", "/metrics", b"", None);
    assert_eq!(r.status, 200, "{}", r.describe());
    for (method, target, body) in protected_routes() {
        if target == "/metrics" || method == "HEAD" {
            continue;
        }
        let r = send_as(&node, method, target, body, None);
        assert_401(
            &r,
            false,
            &format!("{method} {target} with --metrics-public"),
        );
    }
}

#[test]
fn head_answers_have_no_body_so_the_next_response_is_read_right() {
    let node = Node::start(&[]);
    // A value that is itself a response: if HEAD sent it, a client would
    // read it as the answer to its next request.
    let forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged";
    assert_eq!(node.req("PUT", "/v1/keys/h", forged).status, 200);
    assert_eq!(node.req("PUT", "/v1/keys/real", b"real").status, 200);

    let mut c = node.conn();
    let mut batch = build_request("HEAD", "/v1/keys/h", &[], b"");
    batch.extend(build_request("GET", "/v1/keys/real", &[], b""));
    batch.extend(build_request("HEAD", "/v1/keys/missing", &[], b""));
    batch.extend(build_request("HEAD", "/api/get?key=h", &[], b""));
    batch.extend(build_request("GET", "/v1/keys/real", &[], b""));
    c.send(&batch);
    let head = c.read_head_response();
    assert_eq!(head.status, 200, "{}", head.describe());
    assert_eq!(
        head.header("content-length"),
        Some(forged.len().to_string().as_str()),
        "HEAD keeps the GET's Content-Length"
    );
    let next = c.read_response();
    assert_eq!(
        (next.status, next.body.as_slice()),
        (200, &b"real"[..]),
        "{}",
        next.describe()
    );
    let missing = c.read_head_response();
    assert_eq!(missing.status, 404, "{}", missing.describe());
    let seed = c.read_head_response();
    assert_eq!(seed.status, 200, "{}", seed.describe());
    let last = c.read_response();
    assert_eq!(
        (last.status, last.body.as_slice()),
        (200, &b"real"[..]),
        "{}",
        last.describe()
    );
    assert!(
        c.unread_bytes(Duration::from_millis(200)).is_empty(),
        "no stray body bytes after the HEAD answers"
    );
}

#[test]
fn client_bytes_never_reach_a_header_or_split_a_line() {
    let node = Node::start(&[]);
    let evil = "%0D%0AX-Evil:%20yes%0D%0A%0D%0AHTTP/1.1%20200%20OK";
    let mut c = node.conn();
    for (method, target, body) in [
        ("GET", format!("/v1/owner/{evil}"), String::new()),
        ("GET", format!("/v1/keys/{evil}"), String::new()),
        ("PUT", format!("/v1/keys/k?ttl={evil}"), "v".into()),
        ("PUT", format!("/v1/keys/k?hot={evil}"), "v".into()),
        (
            "POST",
            "/setpeer".into(),
            format!("peer={evil}&addr={evil}"),
        ),
        ("POST", "/removepeer".into(), format!("peer={evil}")),
        ("POST", "/api/set".into(), format!("key=k&expire={evil}")),
        ("GET", format!("/api/get?key={evil}"), String::new()),
    ] {
        let what = format!("{method} {target} {body}");
        let r = c.request(method, &target, &[], body.as_bytes());
        assert!(
            r.headers
                .iter()
                .all(|(n, v)| n != "x-evil" && !v.contains("X-Evil")),
            "{what}: {}",
            r.describe()
        );
        if r.status != 200 || r.content_type().starts_with("text/plain") {
            assert_one_line(&r, &what);
        }
    }
    c.assert_usable("after the injection attempts");
}

/// A connection that pipelines GETs of a 1 MiB value and never reads.
fn pipeline_without_reading(port: u16, requests: usize) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let one = build_request("GET", "/v1/keys/big", &[], b"");
    let batch: Vec<u8> = one.repeat(requests);
    let mut writer = stream.try_clone().unwrap();
    // The server stops reading once its output is over the cap, so the
    // write may block when the socket buffers fill: that is the point.
    let _ = writer.write_all(&batch);
    stream
}

fn pipelined_gets_are_bounded(connections: usize) {
    let node = Node::start(&["--max-memory", "64MiB", "--idle-timeout", "3"]);
    let value = vec![b'v'; MIB as usize];
    assert_eq!(node.req("PUT", "/v1/keys/big", &value).status, 200);
    assert_eq!(node.req("PUT", "/v1/keys/small", b"s").status, 200);
    let before = rss(&node);
    let attackers: Vec<TcpStream> = (0..connections)
        .map(|_| pipeline_without_reading(node.port, 3000))
        .collect();
    // Let the node answer all it will (it stops once each connection's
    // unsent answers pass the cap), sampling RSS as it goes.
    let mut peak = before;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(1500) {
        peak = peak.max(rss(&node));
        let t = Instant::now();
        let r = node.get("/v1/keys/small");
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.body, b"s", "{}", r.describe());
        thread::sleep(Duration::from_millis(50));
    }
    let bound = connections as u64 * PER_CONNECTION_BOUND + SLACK;
    eprintln!(
        "pipelined GETs of 1 MiB, {connections} connection(s): RSS {:.1} -> peak {:.1} MiB \
         (growth {:.1} MiB, bound {:.1} MiB); slowest other GET {slowest:?}",
        mib(before),
        mib(peak),
        mib(peak - before),
        mib(bound)
    );
    assert!(
        peak - before < bound,
        "RSS grew {:.1} MiB with {connections} connection(s) that never read (bound {:.1})",
        mib(peak - before),
        mib(bound)
    );
    assert!(
        slowest < Duration::from_secs(1),
        "another client waited {slowest:?} during the attack"
    );
    // The blocked writes do not keep the connections: the idle timeout (3 s)
    // closes them although the node is stuck writing to them.
    for mut stream in attackers {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut sink = vec![0u8; 1 << 20];
        let deadline = Instant::now() + Duration::from_secs(12);
        thread::sleep(Duration::from_secs(4).saturating_sub(started.elapsed()));
        let mut received = 0u64;
        loop {
            assert!(
                Instant::now() < deadline,
                "connection not closed by the idle timeout"
            );
            match stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n as u64,
            }
        }
        assert!(
            received < 3000 * MIB,
            "the node answered every pipelined request instead of timing out"
        );
    }
}

#[test]
fn pipelined_answers_never_read_cost_at_most_the_cap_one_connection() {
    pipelined_gets_are_bounded(1);
}

#[test]
fn pipelined_answers_never_read_cost_at_most_the_cap_four_connections() {
    pipelined_gets_are_bounded(4);
}

/// Sends `head` then `filler` forever (up to 256 MiB), reading concurrently;
/// returns the response and how long it took.
fn endless_body(port: u16, head: &[u8], filler: &[u8]) -> (Response, Duration) {
    let mut conn = Conn::connect(port);
    let mut writer = conn.stream.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let head = head.to_vec();
    let filler = filler.repeat((64 * 1024 / filler.len()).max(1));
    let started = Instant::now();
    let sender = thread::spawn(move || {
        if writer.write_all(&head).is_err() {
            return;
        }
        for _ in 0..(256 * MIB as usize / filler.len()) {
            if writer.write_all(&filler).is_err() {
                return;
            }
        }
    });
    let r = conn.read_response();
    let took = started.elapsed();
    let _ = conn.stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    (r, took)
}

#[test]
fn endless_chunk_extensions_and_trailers_are_refused_early() {
    let node = Node::start(&["--max-memory", "64MiB"]);
    assert_eq!(node.req("PUT", "/v1/keys/small", b"s").status, 200);
    let before = rss(&node);
    let chunked_put = b"PUT /v1/keys/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let cases: [(&str, Vec<u8>, &[u8], u16); 4] = [
        (
            "endless chunk extension",
            [&chunked_put[..], b"5;ext="].concat(),
            b"a",
            400,
        ),
        (
            "endless trailer lines",
            [&chunked_put[..], b"1\r\nx\r\n0\r\n"].concat(),
            b"X-Trailer: aaaaaaaaaaaaaaaa\r\n",
            431,
        ),
        (
            "one endless trailer line",
            [&chunked_put[..], b"1\r\nx\r\n0\r\nX-T: "].concat(),
            b"a",
            431,
        ),
        (
            "endless one-byte chunks",
            chunked_put.to_vec(),
            b"1\r\nx\r\n",
            413,
        ),
    ];
    for (what, head, filler, status) in cases {
        let (r, took) = endless_body(node.port, &head, filler);
        let growth = rss(&node).saturating_sub(before);
        eprintln!(
            "{what}: {} after {took:?}, RSS growth {:.1} MiB",
            r.status,
            mib(growth)
        );
        assert_error(&r, status, what);
        assert!(
            took < Duration::from_secs(2),
            "{what}: refused after {took:?}"
        );
        assert!(growth < 16 * MIB, "{what}: RSS grew {:.1} MiB", mib(growth));
        let t = Instant::now();
        assert_eq!(
            node.get("/v1/keys/small").body,
            b"s",
            "{what}: others served"
        );
        assert!(t.elapsed() < Duration::from_secs(1));
    }
    assert_eq!(node.get("/v1/keys/x").status, 404, "nothing stored");
}

#[test]
fn idle_connections_after_a_large_put_give_their_buffers_back() {
    const CONNECTIONS: usize = 200;
    let node = Node::start(&["--max-memory", "64MiB"]);
    let value = vec![b'p'; MIB as usize];
    // Fill the store to its budget first, so what grows below is the
    // connections, not the cache.
    let mut filler = node.conn();
    for i in 0..80 {
        let r = filler.request("PUT", &format!("/v1/keys/fill-{i}"), &[], &value);
        assert_eq!(r.status, 200, "{}", r.describe());
    }
    drop(filler);
    let buffer_gauge = || {
        node.metrics()
            .sum("nexuscache_connection_buffer_bytes", &[])
    };
    let gauge_before = buffer_gauge();
    let before = rss(&node);

    let mut idle = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let mut c = node.conn();
        let r = c.request("PUT", &format!("/v1/keys/conn-{i}"), &[], &value);
        assert_eq!(r.status, 200, "PUT #{i}: {}", r.describe());
        idle.push(c);
    }
    let after = rss(&node);
    let gauge_idle = buffer_gauge();
    // Each idle connection holds its two initial buffers (16 KiB each).
    let per_idle = 2.0 * 16.0 * 1024.0;
    eprintln!(
        "{CONNECTIONS} idle connections after a 1 MiB PUT each: RSS {:.1} -> {:.1} MiB \
         (growth {:.1} MiB); buffer gauge {gauge_before} -> {gauge_idle}",
        mib(before),
        mib(after),
        mib(after.saturating_sub(before))
    );
    assert!(
        after.saturating_sub(before) < 40 * MIB,
        "RSS grew {:.1} MiB for {CONNECTIONS} idle connections",
        mib(after.saturating_sub(before))
    );
    let held = gauge_idle - gauge_before;
    assert!(
        held >= CONNECTIONS as f64 * per_idle - 2.0 * per_idle
            && held <= CONNECTIONS as f64 * per_idle + 256.0 * 1024.0,
        "buffer gauge grew by {held} bytes for {CONNECTIONS} idle connections"
    );
    for c in &mut idle {
        c.assert_usable("an idle connection");
    }
    drop(idle);
    // Closed connections release all they held.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = buffer_gauge();
        if now <= gauge_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "buffer gauge still {now} after closing (before {gauge_before})"
        );
        thread::sleep(POLL);
    }
}

/// Many connections that never read share one budget: past the core's share
/// of `--max-connection-memory`, connections write what they hold before
/// answering more, and wait before answering anew, so the node's buffers
/// stay near the budget however many connections the attack uses. Without
/// the node budget each connection would hold up to the 4 MiB cap.
#[test]
fn connections_that_never_read_share_the_node_budget() {
    const ATTACKERS: usize = 24;
    let node = Node::start(&[
        "--max-memory",
        "64MiB",
        "--max-connection-memory",
        "16MiB",
        "--idle-timeout",
        "2",
    ]);
    let value = vec![b'v'; MIB as usize];
    assert_eq!(node.req("PUT", "/v1/keys/big", &value).status, 200);
    assert_eq!(node.req("PUT", "/v1/keys/small", b"s").status, 200);
    let before = rss(&node);
    let started = Instant::now();
    let attackers: Vec<TcpStream> = (0..ATTACKERS)
        .map(|_| pipeline_without_reading(node.port, 20))
        .collect();
    let mut peak = before;
    while started.elapsed() < Duration::from_millis(1500) {
        peak = peak.max(rss(&node));
        thread::sleep(Duration::from_millis(50));
    }
    // The budget (8 MiB on each of the 2 cores) + one response crossing it
    // per core + allocator slack; 24 connections at the 4 MiB cap would be
    // ~100 MiB.
    let bound = 16 * MIB + 2 * 2 * MIB + SLACK;
    eprintln!(
        "{ATTACKERS} connections never reading, node budget 16 MiB: RSS {:.1} -> peak {:.1} MiB \
         (growth {:.1} MiB, bound {:.1} MiB)",
        mib(before),
        mib(peak),
        mib(peak - before),
        mib(bound)
    );
    assert!(
        peak - before < bound,
        "RSS grew {:.1} MiB (bound {:.1})",
        mib(peak - before),
        mib(bound)
    );
    // An honest client waits while the budget is spent, and is answered once
    // the idle timeout (2 s) has closed the connections that never read.
    let mut honest = Conn::connect(node.port);
    honest.set_read_timeout(Duration::from_secs(12));
    let asked = Instant::now();
    let r = honest.get("/v1/keys/small");
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.body, b"s");
    eprintln!("honest GET answered after {:?}", asked.elapsed());
    drop(attackers);
    let gauge = node
        .metrics()
        .sum("nexuscache_connection_buffer_bytes", &[]);
    assert!(
        gauge <= 16.0 * MIB as f64,
        "connection buffers back under the budget after the attack: {gauge}"
    );
}

/// A refused request whose body is still arriving gets its answer: the node
/// sends a FIN and drops what the client still sends for a moment instead
/// of closing with unread bytes, which would reset the connection and can
/// destroy the 401 before the client reads it.
#[test]
fn a_refused_upload_still_reads_its_answer() {
    let node = token_node(&[]);
    let head = b"PUT /v1/keys/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n";
    let chunk = vec![b'u'; 64 * 1024];
    for attempt in 0..20 {
        let mut stream = TcpStream::connect(("127.0.0.1", node.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(head).expect("head");
        // Keep sending body bytes while the node answers and closes.
        for _ in 0..8 {
            if stream.write_all(&chunk).is_err() {
                break;
            }
        }
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "attempt {attempt}: reading the answer failed ({e}) after {} bytes",
                    answer.len()
                ),
            }
        }
        assert!(
            answer.starts_with(b"HTTP/1.1 401"),
            "attempt {attempt}: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
}
