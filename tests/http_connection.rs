//! Connection handling: keep-alive, pipelining, `Connection: close`,
//! HTTP/1.0, `Expect: 100-continue`, chunked request bodies, idle and
//! header timeouts.

mod common;

use common::*;
use std::io::Read;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static NODE: OnceLock<Node> = OnceLock::new();
fn node() -> &'static Node {
    shared(&NODE, &[])
}

/// A separate node with short timeouts (1 s idle, 1 s header).
static TIMEOUT_NODE: OnceLock<Node> = OnceLock::new();
fn timeout_node() -> &'static Node {
    shared(
        &TIMEOUT_NODE,
        &["--idle-timeout", "1", "--header-timeout", "1"],
    )
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

#[test]
fn keep_alive_many_requests() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("ka");
    for i in 0..300 {
        let key = format!("{k}-{i}");
        let val = format!("value-{i}");
        let r = c.request("PUT", &format!("/v1/keys/{key}"), &[], val.as_bytes());
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"ok\n"[..]),
            "PUT #{i}: {}",
            r.describe()
        );
        assert!(!r.says_close(), "keep-alive response #{i} says close");
        let r = c.get(&format!("/v1/keys/{key}"));
        assert_eq!(r.body, val.as_bytes(), "GET #{i}: {}", r.describe());
        let r = c.get(&format!("/api/get?key={key}"));
        assert_eq!(r.body, format!("value={val}").as_bytes(), "seed GET #{i}");
    }
}

struct Expect {
    status: u16,
    body: Vec<u8>,
}

fn exp(status: u16, body: &[u8]) -> Expect {
    Expect {
        status,
        body: body.to_vec(),
    }
}

/// Builds `groups` x 5 mixed requests and their expected responses.
fn mixed_pipeline(prefix: &str, groups: usize) -> (Vec<u8>, Vec<Expect>) {
    let mut raw = Vec::new();
    let mut want = Vec::new();
    for i in 0..groups {
        let k = format!("{prefix}-{i}");
        let v = format!("v{i}-{}", "x".repeat(i % 37));
        raw.extend(build_request(
            "PUT",
            &format!("/v1/keys/{k}"),
            &[],
            v.as_bytes(),
        ));
        want.push(exp(200, b"ok\n"));
        raw.extend(build_request("GET", &format!("/v1/keys/{k}"), &[], b""));
        want.push(exp(200, v.as_bytes()));
        raw.extend(build_request(
            "POST",
            "/api/set",
            &[FORM],
            format!("key={k}-s&value=s{i}").as_bytes(),
        ));
        want.push(exp(200, b"ok\n"));
        match i % 3 {
            0 => {
                raw.extend(build_request(
                    "GET",
                    &format!("/api/get?key={k}-s"),
                    &[],
                    b"",
                ));
                want.push(exp(200, format!("value=s{i}").as_bytes()));
            }
            1 => {
                raw.extend(build_request("GET", "/healthz", &[], b""));
                want.push(exp(200, b"ok\n"));
            }
            _ => {
                raw.extend(build_request(
                    "GET",
                    &format!("/v1/keys/{k}-missing"),
                    &[],
                    b"",
                ));
                want.push(exp(404, b"not found\n"));
            }
        }
        if i % 2 == 0 {
            raw.extend(build_request("DELETE", &format!("/v1/keys/{k}"), &[], b""));
            want.push(exp(200, b"deleted\n"));
        } else {
            raw.extend(build_request(
                "POST",
                "/api/delete",
                &[FORM],
                format!("key={k}-none").as_bytes(),
            ));
            want.push(exp(200, b"not found\n"));
        }
    }
    (raw, want)
}

fn check_responses(rs: &[Response], want: &[Expect]) {
    assert_eq!(rs.len(), want.len());
    for (i, (r, w)) in rs.iter().zip(want).enumerate() {
        assert_eq!(
            (r.status, r.body.as_slice()),
            (w.status, w.body.as_slice()),
            "pipelined response #{i} out of order or wrong: {}",
            r.describe()
        );
    }
}

#[test]
fn pipelining_50_in_one_write() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let (raw, want) = mixed_pipeline(&uniq("pl"), 10);
    assert_eq!(want.len(), 50);
    c.send(&raw); // one write
    let rs = c.read_responses(50);
    check_responses(&rs, &want);
    c.assert_usable("after pipeline");
}

#[test]
fn pipelining_1000_with_concurrent_reader() {
    // Large enough that the server must interleave reading and writing.
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let (raw, want) = mixed_pipeline(&uniq("plbig"), 200);
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        w.write_all(&raw)
    });
    let rs = c.read_responses(want.len());
    writer.join().unwrap().expect("write pipeline");
    check_responses(&rs, &want);
}

#[test]
fn pipelining_split_at_awkward_boundaries() {
    // Requests split mid-line and mid-body across writes.
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let (raw, want) = mixed_pipeline(&uniq("split"), 4);
    for piece in raw.chunks(7) {
        c.send(piece);
    }
    let rs = c.read_responses(want.len());
    check_responses(&rs, &want);
}

#[test]
fn connection_close_honoured() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let r = c.request("GET", "/healthz", &[("Connection", "close")], b"");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"ok\n"[..]),
        "{}",
        r.describe()
    );
    c.assert_closed("after Connection: close");

    // A request pipelined after the closing one is not answered.
    let mut c = n.conn();
    let k = uniq("afterclose");
    let mut raw = build_request("GET", "/healthz", &[("Connection", "close")], b"");
    raw.extend(build_request(
        "PUT",
        &format!("/v1/keys/{k}"),
        &[],
        b"must-not-be-written",
    ));
    c.send(&raw);
    let r = c.read_response();
    assert_eq!(r.status, 200);
    c.assert_closed("pipelined request after Connection: close");
    assert_eq!(
        n.get(&format!("/v1/keys/{k}")).status,
        404,
        "request after close must not run"
    );

    // Close on a PUT: the write happens, then the connection closes.
    let mut c = n.conn();
    let r = c.request(
        "PUT",
        &format!("/v1/keys/{k}-2"),
        &[("Connection", "close")],
        b"x",
    );
    assert_eq!(r.body, b"ok\n");
    c.assert_closed("after PUT with Connection: close");
    assert_eq!(n.get(&format!("/v1/keys/{k}-2")).body, b"x");
}

#[test]
fn http10_closes_after_response() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"ok\n"[..]),
        "{}",
        r.describe()
    );
    c.assert_closed("after HTTP/1.0 request");

    let k = uniq("h10");
    let mut c = n.conn();
    c.send(format!("PUT /v1/keys/{k} HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc").as_bytes());
    let r = c.read_response();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"ok\n"[..]),
        "{}",
        r.describe()
    );
    c.assert_closed("after HTTP/1.0 PUT");
    let mut c = n.conn();
    c.send(format!("GET /v1/keys/{k} HTTP/1.0\r\n\r\n").as_bytes());
    let r = c.read_response();
    assert_eq!(r.body, b"abc");
}

#[test]
fn expect_100_continue() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("exp");
    c.send(
        format!("PUT /v1/keys/{k} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            .as_bytes(),
    );
    let r = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("no interim response to Expect: 100-continue: {e:?}"));
    assert_eq!(
        r.status,
        100,
        "expected 100 Continue first: {}",
        r.describe()
    );
    c.send(b"hello");
    let r = c.read_response();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"ok\n"[..]),
        "final response: {}",
        r.describe()
    );
    assert_eq!(c.get(&format!("/v1/keys/{k}")).body, b"hello");

    // Form POST with Expect.
    let body = format!("key={k}-f&value=form");
    c.send(
        format!(
            "POST /api/set HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status, 100, "{}", r.describe());
    c.send(body.as_bytes());
    let r = c.read_response();
    assert_eq!(r.body, b"ok\n", "{}", r.describe());
    assert_eq!(c.get(&format!("/api/get?key={k}-f")).body, b"value=form");
}

#[test]
fn expect_100_continue_client_sends_body_anyway() {
    // curl-like clients send the body without waiting: the server must not
    // get confused (one final response, connection in sync).
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("exp2");
    c.send(
        format!("PUT /v1/keys/{k} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello")
            .as_bytes(),
    );
    let mut r = c.read_response();
    if r.status == 100 {
        r = c.read_response();
    }
    assert_eq!(r.body, b"ok\n", "{}", r.describe());
    c.assert_usable("after Expect with eager body");
    assert_eq!(c.get(&format!("/v1/keys/{k}")).body, b"hello");
}

fn chunked(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[test]
fn chunked_put_byte_exact() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("chunk");
    let a = all_bytes();
    let b: Vec<u8> = b"\r\n0\r\n\r\n".to_vec(); // looks like a terminator, is data
    let big = vec![0x5Au8; 40_000];
    let parts: Vec<&[u8]> = vec![&a, &b, b"x", &big, &a[..17]];
    let mut head =
        format!("PUT /v1/keys/{k} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    head.extend(chunked(&parts));
    c.send(&head);
    let r = c.read_response();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"ok\n"[..]),
        "chunked PUT: {}",
        r.describe()
    );
    let want: Vec<u8> = parts.concat();
    let r = c.get(&format!("/v1/keys/{k}"));
    assert_eq!(r.status, 200);
    assert!(
        r.body == want,
        "chunked value differs: got {} bytes, want {}",
        r.body.len(),
        want.len()
    );
    c.assert_usable("after chunked PUT");
}

#[test]
fn chunked_put_split_writes_and_uppercase_hex() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("chunksplit");
    let mut raw =
        format!("PUT /v1/keys/{k} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    let data = vec![b'q'; 0x1AB];
    raw.extend_from_slice(b"1AB\r\n");
    raw.extend_from_slice(&data);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    for piece in raw.chunks(5) {
        c.send(piece);
    }
    let r = c.read_response();
    assert_eq!(r.body, b"ok\n", "{}", r.describe());
    assert_eq!(c.get(&format!("/v1/keys/{k}")).body, data);
}

#[test]
fn chunked_with_extension_and_trailer() {
    // RFC 9112 7.1: chunk extensions are ignored, trailer fields allowed.
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("chunkext");
    let raw = format!(
        "PUT /v1/keys/{k} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;name=value\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
    );
    c.send(raw.as_bytes());
    let r = c.read_response();
    assert_eq!(r.body, b"ok\n", "{}", r.describe());
    assert_eq!(c.get(&format!("/v1/keys/{k}")).body, b"abcde");
    c.assert_usable("after chunked trailer");
}

#[test]
fn chunked_form_post() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("chunkform");
    let body = format!("key={k}&value=chunked+form");
    let mut raw = b"POST /api/set HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let (x, y) = body.as_bytes().split_at(7);
    raw.extend(chunked(&[x, y]));
    c.send(&raw);
    let r = c.read_response();
    assert_eq!(r.body, b"ok\n", "{}", r.describe());
    assert_eq!(
        c.get(&format!("/api/get?key={k}")).body,
        b"value=chunked form"
    );
}

#[test]
fn many_concurrent_connections() {
    let n = node();
    let _g = n.log_on_panic();
    let port = n.port;
    let prefix = uniq("conc");
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let prefix = prefix.clone();
            std::thread::spawn(move || {
                let mut c = Conn::connect(port);
                for i in 0..50 {
                    let k = format!("{prefix}-{t}-{i}");
                    let r = c.request("PUT", &format!("/v1/keys/{k}"), &[], k.as_bytes());
                    assert_eq!(r.body, b"ok\n", "{}", r.describe());
                    let r = c.get(&format!("/v1/keys/{k}"));
                    assert_eq!(r.body, k.as_bytes(), "{}", r.describe());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread panicked");
    }
}

#[test]
fn idle_keepalive_connection_closed_after_idle_timeout() {
    let n = timeout_node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    c.assert_usable("first request");
    let start = Instant::now();
    match c.wait_closed(Duration::from_secs(4)) {
        Ok(extra) => {
            // A 408 before closing is acceptable; nothing else is.
            let s = String::from_utf8_lossy(&extra);
            assert!(
                extra.is_empty() || s.starts_with("HTTP/1.1 408"),
                "unexpected bytes on idle close: {s:?}"
            );
        }
        Err(e) => panic!("--idle-timeout 1: {e}"),
    }
    let el = start.elapsed();
    assert!(
        el >= Duration::from_millis(800),
        "idle connection closed too early: {el:?}"
    );
    assert!(
        el <= Duration::from_millis(3500),
        "idle connection closed too late: {el:?}"
    );
}

#[test]
fn active_connection_outlives_idle_timeout() {
    let n = timeout_node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let start = Instant::now();
    // A request every ~300 ms for 2.4 s: idle never exceeds 1 s.
    while start.elapsed() < Duration::from_millis(2400) {
        c.assert_usable("periodic request");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn new_silent_connection_is_closed() {
    // A connection that never sends anything is not kept forever.
    let n = timeout_node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let start = Instant::now();
    if let Err(e) = c.wait_closed(Duration::from_secs(4)) {
        panic!("silent connection with --idle-timeout 1 --header-timeout 1: {e}");
    }
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "closed too early: {:?}",
        start.elapsed()
    );
}

#[test]
fn slow_header_trickle_is_cut_by_header_timeout() {
    // Slowloris: one byte every 100 ms never completes the head; the
    // header timeout bounds the whole head, not each read.
    let n = timeout_node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let start = Instant::now();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: {}",
        "s".repeat(1000)
    );
    let mut closed = false;
    let mut received = Vec::new();
    c.set_read_timeout(Duration::from_millis(100));
    for b in head.bytes() {
        if c.try_send(&[b]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 1024];
        match c.stream.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(k) => received.extend_from_slice(&buf[..k]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let el = start.elapsed();
    assert!(
        closed,
        "--header-timeout 1: trickled head still open after {el:?}"
    );
    assert!(el >= Duration::from_millis(800), "closed too early: {el:?}");
    assert!(el <= Duration::from_millis(3500), "closed too late: {el:?}");
    let s = String::from_utf8_lossy(&received);
    assert!(
        received.is_empty() || s.starts_with("HTTP/1.1 408"),
        "unexpected reply to a timed-out head: {s:?}"
    );
}
