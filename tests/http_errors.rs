//! Every bad input of the contract: status codes, one-line text/plain
//! bodies, and whether the connection survives (it must, except after
//! malformed requests, 431 and a PUT rejected with 413).
//!
//! The shared node runs with `--max-value-bytes 1000` and the default
//! `--max-key-bytes 1024`.

mod common;

use common::*;
use std::sync::OnceLock;
use std::time::Duration;

const MAX_VALUE: usize = 1000;
const MAX_KEY: usize = 1024;

static NODE: OnceLock<Node> = OnceLock::new();
fn node() -> &'static Node {
    shared(&NODE, &["--max-value-bytes", "1000"])
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// Sends `raw`, expects an error `status` with a one-line body, then checks
/// that the same connection still serves /healthz.
fn expect_error_keepalive(c: &mut Conn, raw: &[u8], status: u16, what: &str) -> Response {
    c.send(raw);
    let r = c.read_response();
    assert_error(&r, status, what);
    assert!(
        !r.says_close(),
        "{what}: this error must not close the connection: {}",
        r.describe()
    );
    c.assert_usable(what);
    r
}

/// Sends `raw`, expects `status` with a one-line body, then EOF.
fn expect_error_close(n: &Node, raw: &[u8], status: u16, what: &str) {
    let mut c = n.conn();
    c.send(raw);
    let r = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("{what}: no {status} response: {e:?}"));
    assert_error(&r, status, what);
    c.assert_closed(what);
}

fn get(target: &str) -> Vec<u8> {
    build_request("GET", target, &[], b"")
}

fn post(target: &str, body: &str) -> Vec<u8> {
    build_request("POST", target, &[FORM], body.as_bytes())
}

fn put(target: &str, body: &[u8]) -> Vec<u8> {
    build_request("PUT", target, &[], body)
}

fn del(target: &str) -> Vec<u8> {
    build_request("DELETE", target, &[], b"")
}

#[test]
fn missing_or_empty_key_is_400() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("GET /api/get no key", get("/api/get")),
        ("GET /api/get empty key", get("/api/get?key=")),
        ("GET /api/get other field only", get("/api/get?value=1")),
        ("POST /api/set no key", post("/api/set", "value=x")),
        ("POST /api/set empty key", post("/api/set", "key=&value=x")),
        (
            "POST /api/set empty key in query",
            post("/api/set?key=", "value=x"),
        ),
        ("POST /api/set no body no query", post("/api/set", "")),
        ("POST /api/delete no key", post("/api/delete", "")),
        ("POST /api/delete empty key", post("/api/delete", "key=")),
        (
            "POST /api/delete empty key in query",
            post("/api/delete?key=", ""),
        ),
        ("GET /v1/keys/ empty", get("/v1/keys/")),
        ("PUT /v1/keys/ empty", put("/v1/keys/", b"v")),
        ("DELETE /v1/keys/ empty", del("/v1/keys/")),
    ];
    for (what, raw) in cases {
        expect_error_keepalive(&mut c, &raw, 400, what);
    }
    // Body key empty overrides a good query key: still an empty key.
    let k = uniq("good");
    expect_error_keepalive(
        &mut c,
        &post(&format!("/api/set?key={k}"), "key=&value=x"),
        400,
        "empty body key wins",
    );
}

#[test]
fn long_key_414_in_url_400_in_form() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let long = "k".repeat(MAX_KEY + 1);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "GET /api/get long query key",
            get(&format!("/api/get?key={long}")),
            414,
        ),
        (
            "POST /api/set long query key",
            post(&format!("/api/set?key={long}&value=v"), ""),
            414,
        ),
        (
            "POST /api/delete long query key",
            post(&format!("/api/delete?key={long}"), ""),
            414,
        ),
        (
            "GET /v1/keys long path key",
            get(&format!("/v1/keys/{long}")),
            414,
        ),
        (
            "PUT /v1/keys long path key",
            put(&format!("/v1/keys/{long}"), b"v"),
            414,
        ),
        (
            "DELETE /v1/keys long path key",
            del(&format!("/v1/keys/{long}")),
            414,
        ),
        (
            "POST /api/set long form key",
            post("/api/set", &format!("key={long}&value=v")),
            400,
        ),
        (
            "POST /api/delete long form key",
            post("/api/delete", &format!("key={long}")),
            400,
        ),
    ];
    for (what, raw, status) in cases {
        expect_error_keepalive(&mut c, &raw, status, what);
    }
    // Percent-encoded: the decoded length counts. 1025 bytes encoded as %XX.
    let enc_long = pct(&vec![0xAB; MAX_KEY + 1]);
    expect_error_keepalive(
        &mut c,
        &get(&format!("/v1/keys/{enc_long}")),
        414,
        "encoded long path key",
    );
}

#[test]
fn key_at_limit_is_accepted() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let prefix = uniq("lim");
    let key = format!("{prefix}{}", "x".repeat(MAX_KEY - prefix.len()));
    assert_eq!(key.len(), MAX_KEY);
    let r = c.request("PUT", &format!("/v1/keys/{key}"), &[], b"v");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"ok\n"[..]),
        "1024-byte key PUT: {}",
        r.describe()
    );
    let r = c.get(&format!("/v1/keys/{key}"));
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"v"[..]),
        "{}",
        r.describe()
    );
    let r = c.request(
        "POST",
        "/api/set",
        &[FORM],
        format!("key={key}&value=w").as_bytes(),
    );
    assert_eq!(r.status, 200, "1024-byte form key: {}", r.describe());
    // A 1024-byte key of percent-encoded bytes is 3072 URL characters but
    // only 1024 key bytes: allowed.
    let mut bkey = prefix.clone().into_bytes();
    bkey.resize(MAX_KEY, 0xC3);
    let r = c.request("PUT", &format!("/v1/keys/{}", pct(&bkey)), &[], b"b");
    assert_eq!(r.status, 200, "1024 decoded key bytes: {}", r.describe());
    let r = c.get(&format!("/v1/keys/{}", pct(&bkey)));
    assert_eq!(r.body, b"b", "{}", r.describe());
}

/// PUT with Content-Length over the limit: 413 decided from the header,
/// before any body byte is sent, with `Connection: close`, then EOF.
#[test]
fn put_over_limit_413_before_body() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("big");
    c.send(
        format!(
            "PUT /v1/keys/{k} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            MAX_VALUE + 1
        )
        .as_bytes(),
    );
    // No body sent: the server must answer anyway.
    let r = c.try_read_response().unwrap_or_else(|e| {
        panic!("no 413 without the body being sent (server waits for the body?): {e:?}")
    });
    assert_error(&r, 413, "PUT over limit");
    assert!(
        r.says_close(),
        "413 for PUT must carry Connection: close: {}",
        r.describe()
    );
    c.assert_closed("after PUT 413");
    // Nothing was stored.
    assert_eq!(n.get(&format!("/v1/keys/{k}")).status, 404);

    // Huge declared length, same treatment.
    let mut c = n.conn();
    c.send(
        format!("PUT /v1/keys/{k} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n")
            .as_bytes(),
    );
    let r = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("no 413 for 10 GB PUT: {e:?}"));
    assert_error(&r, 413, "PUT 10 GB");
    c.assert_closed("after 10 GB PUT 413");
}

#[test]
fn put_with_expect_over_limit_gets_413_not_100() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("big100");
    c.send(
        format!(
            "PUT /v1/keys/{k} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            MAX_VALUE + 1
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_error(&r, 413, "PUT over limit with Expect");
    c.assert_closed("after 413");
}

#[test]
fn put_at_limit_ok() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("atlimit");
    let v = vec![b'z'; MAX_VALUE];
    let r = c.request("PUT", &format!("/v1/keys/{k}"), &[], &v);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"ok\n"[..]),
        "PUT of exactly the limit: {}",
        r.describe()
    );
    assert_eq!(c.get(&format!("/v1/keys/{k}")).body, v);
}

#[test]
fn chunked_put_over_limit_413() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("chunkbig");
    let mut raw =
        format!("PUT /v1/keys/{k} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    for _ in 0..2 {
        raw.extend_from_slice(format!("{:x}\r\n", 600).as_bytes());
        raw.extend_from_slice(&[b'c'; 600]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    c.send(&raw);
    let r = c.read_response();
    assert_error(&r, 413, "chunked PUT of 1200 bytes over 1000 limit");
    assert_eq!(
        n.get(&format!("/v1/keys/{k}")).status,
        404,
        "over-limit chunked value must not be stored"
    );
}

/// Chunk sizes whose sum overflows 64 bits are over any limit: a 413, and
/// the core that parsed them keeps serving (a wrapped sum once let the
/// second size through and panicked the core on a reversed slice).
#[test]
fn chunk_sizes_that_overflow_413_and_the_core_lives() {
    let n = node();
    let _g = n.log_on_panic();
    let k = uniq("chunkwrap");
    for sizes in ["1\r\nk\r\nffffffffffffffff", "ffffffffffffffff"] {
        let raw = format!(
            "PUT /v1/keys/{k} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{sizes}\r\nabc\r\n"
        );
        let mut c = n.conn();
        c.send(raw.as_bytes());
        let r = c.read_response();
        assert_error(&r, 413, &format!("chunk sizes {sizes:?}"));
    }
    // Every core still answers (connections spread over all of them).
    for _ in 0..16 {
        assert_eq!(n.conn().get("/healthz").status, 200);
    }
    assert_eq!(n.get(&format!("/v1/keys/{k}")).status, 404);
}

#[test]
fn form_value_over_limit_413() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("formbig");
    // Exactly the limit: accepted (the form body itself is longer than the
    // limit; only the decoded value counts).
    let r = c.request(
        "POST",
        "/api/set",
        &[FORM],
        format!("key={k}&value={}", "v".repeat(MAX_VALUE)).as_bytes(),
    );
    assert_eq!(
        r.status,
        200,
        "form value of exactly the limit: {}",
        r.describe()
    );
    // One over: 413.
    let k2 = uniq("formbig");
    c.send(&post(
        "/api/set",
        &format!("key={k2}&value={}", "v".repeat(MAX_VALUE + 1)),
    ));
    let r = c.read_response();
    assert_error(&r, 413, "form value over limit");
    // The spec lists no close for this case; if the server announces one,
    // accept it, else the connection must keep working.
    if r.says_close() {
        c.assert_closed("after form 413 with Connection: close");
    } else {
        c.assert_usable("after form 413");
    }
    assert_eq!(
        n.get(&format!("/api/get?key={k2}")).status,
        404,
        "rejected value must not be stored"
    );
    // Value over the limit in the query string: also 413.
    let mut c = n.conn();
    let k3 = uniq("qbig");
    c.send(&post(
        &format!("/api/set?key={k3}&value={}", "q".repeat(MAX_VALUE + 1)),
        "",
    ));
    let r = c.read_response();
    assert_error(&r, 413, "query value over limit");
}

#[test]
fn bad_expire_ttl_hot_400() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("bad");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "expire=abc",
            post("/api/set", &format!("key={k}&value=v&expire=abc")),
        ),
        (
            "expire=-1",
            post("/api/set", &format!("key={k}&value=v&expire=-1")),
        ),
        (
            "expire=4321",
            post("/api/set", &format!("key={k}&value=v&expire=4321")),
        ),
        (
            "expire= (empty)",
            post("/api/set", &format!("key={k}&value=v&expire=")),
        ),
        (
            "expire=99999999999999999999",
            post(
                "/api/set",
                &format!("key={k}&value=v&expire=99999999999999999999"),
            ),
        ),
        (
            "expire=abc in query",
            post(&format!("/api/set?key={k}&value=v&expire=abc"), ""),
        ),
        (
            "hot=maybe",
            post("/api/set", &format!("key={k}&value=v&hot=maybe")),
        ),
        ("hot=2", post("/api/set", &format!("key={k}&value=v&hot=2"))),
        ("ttl=abc", put(&format!("/v1/keys/{k}?ttl=abc"), b"v")),
        ("ttl=259201", put(&format!("/v1/keys/{k}?ttl=259201"), b"v")),
        ("ttl=-1", put(&format!("/v1/keys/{k}?ttl=-1"), b"v")),
        ("ttl=1.5", put(&format!("/v1/keys/{k}?ttl=1.5"), b"v")),
        (
            "PUT hot=maybe",
            put(&format!("/v1/keys/{k}?hot=maybe"), b"v"),
        ),
    ];
    for (what, raw) in cases {
        expect_error_keepalive(&mut c, &raw, 400, what);
    }
    // None of the rejected writes stored anything.
    assert_eq!(
        n.get(&format!("/api/get?key={k}")).status,
        404,
        "rejected writes must not store the key"
    );
}

#[test]
fn malformed_request_line_400_then_close() {
    let n = node();
    let _g = n.log_on_panic();
    expect_error_close(n, b"this is not http\r\n\r\n", 400, "garbage request line");
    expect_error_close(
        n,
        b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        400,
        "extra token in request line",
    );
    expect_error_close(
        n,
        b"GET /healthz HTTP/7.0\r\nHost: x\r\n\r\n",
        400,
        "unknown HTTP version",
    );
    expect_error_close(
        n,
        b"GET /healthz HTTP/1.1\r\nBad Header Line\r\n\r\n",
        400,
        "header line without colon",
    );
    expect_error_close(
        n,
        b"GET /healthz HTTP/1.1\r\nHo st: x\r\n\r\n",
        400,
        "space in header name",
    );
}

#[test]
fn bad_content_length_400_then_close() {
    let n = node();
    let _g = n.log_on_panic();
    let k = uniq("cl");
    for (what, cl) in [
        ("non-numeric", "abc"),
        ("negative", "-1"),
        ("with sign", "+5"),
        ("hex", "0x10"),
    ] {
        let raw =
            format!("PUT /v1/keys/{k} HTTP/1.1\r\nHost: x\r\nContent-Length: {cl}\r\n\r\nhello");
        expect_error_close(n, raw.as_bytes(), 400, &format!("Content-Length {what}"));
    }
    let raw = format!("PUT /v1/keys/{k} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 3\r\n\r\nhello");
    expect_error_close(
        n,
        raw.as_bytes(),
        400,
        "conflicting duplicate Content-Length",
    );
    let raw = format!(
        "POST /api/set HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: zz\r\n\r\nkey={k}&value=1"
    );
    expect_error_close(n, raw.as_bytes(), 400, "form POST with bad Content-Length");
    assert_eq!(n.get(&format!("/v1/keys/{k}")).status, 404);
}

#[test]
fn bad_percent_encoding_400_then_close() {
    let n = node();
    let _g = n.log_on_panic();
    expect_error_close(n, &get("/api/get?key=%zz"), 400, "bad %-escape in query");
    expect_error_close(
        n,
        &get("/api/get?key=abc%4"),
        400,
        "truncated %-escape in query",
    );
    expect_error_close(n, &get("/v1/keys/%G1"), 400, "bad %-escape in path");
    expect_error_close(n, &get("/v1/keys/abc%"), 400, "lone % in path");
    expect_error_close(
        n,
        &post("/api/set", "key=%zz&value=1"),
        400,
        "bad %-escape in form key",
    );
    expect_error_close(
        n,
        &post("/api/set", "key=ok&value=%x1"),
        400,
        "bad %-escape in form value",
    );
}

#[test]
fn head_over_64k_431_then_close() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let big = "a".repeat(70 * 1024);
    let raw = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    // The server may close while we still write: ignore write errors.
    let _ = c.try_send(raw.as_bytes());
    let r = c.try_read_response().unwrap_or_else(|e| {
        panic!("no 431 response to a 70 KiB head (reset before the response was read?): {e:?}")
    });
    assert_error(&r, 431, "70 KiB head");
    c.assert_closed("after 431");

    // Many headers adding up to > 64 KiB.
    let mut c = n.conn();
    let mut raw = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..90 {
        raw.push_str(&format!("X-H{i}: {}\r\n", "b".repeat(800)));
    }
    raw.push_str("\r\n");
    let _ = c.try_send(raw.as_bytes());
    let r = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("no response to 90 x 800-byte headers: {e:?}"));
    // 90 headers may also exceed a header-count limit: 431 either way.
    assert_error(&r, 431, "~72 KiB of headers");
    c.assert_closed("after 431 (many headers)");
}

#[test]
fn head_under_64k_is_fine() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(60 * 1024)
    );
    c.send(raw.as_bytes());
    let r = c.read_response();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"ok\n"[..]),
        "60 KiB head: {}",
        r.describe()
    );
    c.assert_usable("after 60 KiB head");
}

#[test]
fn unknown_path_404() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    for target in [
        "/nope",
        "/",
        "/api",
        "/api/gett?key=a",
        "/v1/key/a",
        "/v2/keys/a",
        "/healthz/x",
        "/metricsx",
    ] {
        expect_error_keepalive(&mut c, &get(target), 404, &format!("GET {target}"));
    }
}

#[test]
fn wrong_method_405_with_allow() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let cases: &[(&str, &str, &[&str])] = &[
        ("POST", "/api/get?key=a", &["GET"]),
        ("PUT", "/api/get?key=a", &["GET"]),
        ("GET", "/api/set?key=a&value=b", &["POST"]),
        ("DELETE", "/api/set", &["POST"]),
        ("GET", "/api/delete?key=a", &["POST"]),
        ("POST", "/v1/keys/a", &["GET", "PUT", "DELETE"]),
        ("PATCH", "/v1/keys/a", &["GET", "PUT", "DELETE"]),
        ("POST", "/healthz", &["GET"]),
        ("DELETE", "/readyz", &["GET"]),
        ("PUT", "/metrics", &["GET"]),
    ];
    for (method, target, allowed) in cases {
        let what = format!("{method} {target}");
        let raw = build_request(method, target, &[], b"");
        let r = expect_error_keepalive(&mut c, &raw, 405, &what);
        let allow = r
            .header("allow")
            .unwrap_or_else(|| panic!("{what}: 405 without Allow header: {}", r.describe()));
        let listed: Vec<String> = allow
            .split(',')
            .map(|s| s.trim().to_ascii_uppercase())
            .collect();
        for a in *allowed {
            assert!(
                listed.iter().any(|l| l == a),
                "{what}: Allow {allow:?} lacks {a}"
            );
        }
        assert!(
            !listed.iter().any(|l| l == method),
            "{what}: Allow {allow:?} lists the method that was refused"
        );
    }
    // A refused method did not write.
    assert_eq!(
        n.get("/api/get?key=a").status,
        404,
        "GET /api/set must not have set key a"
    );
}

#[test]
fn errors_do_not_desync_pipelined_connection() {
    // Non-closing errors in the middle of a pipeline: later requests still
    // answered in order.
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("pe");
    let mut raw = Vec::new();
    raw.extend(put(&format!("/v1/keys/{k}"), b"one"));
    raw.extend(get("/api/get")); // 400
    raw.extend(post("/api/set", &format!("key={k}&value=v&expire=abc"))); // 400
    raw.extend(get("/nope")); // 404
    raw.extend(build_request("POST", "/healthz", &[], b"ignored-body")); // 405 with a body to skip
    raw.extend(get(&format!("/v1/keys/{k}"))); // 200 one
    c.send(&raw);
    let rs = c.read_responses(6);
    let got: Vec<u16> = rs.iter().map(|r| r.status).collect();
    assert_eq!(
        got,
        vec![200, 400, 400, 404, 405, 200],
        "{:?}",
        rs.iter().map(|r| r.describe()).collect::<Vec<_>>()
    );
    assert_eq!(rs[5].body, b"one");
}

#[test]
fn post_with_body_on_error_path_keeps_framing() {
    // A 404/405 on a request with a body: the server must skip the body
    // (not parse it as the next request).
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let smuggled = b"GET /nope-smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let r = c.request("POST", "/nope", &[], smuggled);
    assert_eq!(r.status, 404, "{}", r.describe());
    c.assert_usable("after 404 with body");
    // No stray response for the smuggled request is waiting.
    c.set_read_timeout(Duration::from_millis(300));
    let mut probe = [0u8; 1];
    use std::io::Read;
    match c.stream.read(&mut probe) {
        Ok(0) => panic!("connection closed after a 404 with body"),
        Ok(_) => panic!("server answered the body as a request (smuggling)"),
        Err(_) => {} // timeout: nothing extra, good
    }
}
