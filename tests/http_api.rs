//! Every route of the HTTP contract with valid input: exact status codes,
//! bodies and content types; the seed API's form handling; byte-exact
//! round trips through /v1/keys.

mod common;

use common::*;
use std::sync::OnceLock;

static NODE: OnceLock<Node> = OnceLock::new();
fn node() -> &'static Node {
    shared(&NODE, &[])
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

fn post_form(c: &mut Conn, target: &str, body: &str) -> Response {
    c.request("POST", target, &[FORM], body.as_bytes())
}

fn assert_ok(r: &Response, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.describe());
    assert_eq!(r.body, b"ok\n", "{what}: {}", r.describe());
    assert!(
        r.content_type().starts_with("text/plain"),
        "{what}: {}",
        r.describe()
    );
}

fn assert_not_found(r: &Response, what: &str) {
    assert_eq!(r.status, 404, "{what}: {}", r.describe());
    assert_eq!(r.body, b"not found\n", "{what}: {}", r.describe());
    assert!(
        r.content_type().starts_with("text/plain"),
        "{what}: {}",
        r.describe()
    );
}

fn assert_seed_value(r: &Response, value: &[u8], what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.describe());
    assert_eq!(
        r.content_type(),
        "text/plain; charset=utf-8",
        "{what}: {}",
        r.describe()
    );
    let mut want = b"value=".to_vec();
    want.extend_from_slice(value);
    assert_eq!(r.body, want, "{what}: {}", r.describe());
}

#[test]
fn healthz_readyz() {
    let n = node();
    let _g = n.log_on_panic();
    let r = n.get("/healthz");
    assert_ok(&r, "GET /healthz");
    let r = n.get("/readyz");
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.body, b"ready\n");
    assert!(
        r.content_type().starts_with("text/plain"),
        "{}",
        r.describe()
    );
}

#[test]
fn metrics_route_content_type() {
    let n = node();
    let _g = n.log_on_panic();
    let r = n.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(
        r.content_type().starts_with("text/plain; version=0.0.4"),
        "metrics content-type: {}",
        r.content_type()
    );
    assert!(
        r.body_str().contains("nexuscache_build_info"),
        "metrics body lacks build info"
    );
}

/// The seed curl example: `curl -d 'key=foo&value=bar&expire=10&hot=true'
/// /api/set` then `curl '/api/get?key=foo'`.
#[test]
fn seed_curl_example() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    // Exactly what curl -d sends.
    let r = post_form(&mut c, "/api/set", "key=foo&value=bar&expire=10&hot=true");
    assert_ok(&r, "POST /api/set foo");
    let r = c.get("/api/get?key=foo");
    assert_seed_value(&r, b"bar", "GET /api/get?key=foo");
    // curl 'http://host/api/get?key=foo' on a fresh connection too.
    let r = n.get("/api/get?key=foo");
    assert_seed_value(&r, b"bar", "GET /api/get?key=foo (new connection)");
}

#[test]
fn seed_set_without_content_type_header() {
    // Some clients omit the content type; the body is still the form.
    let n = node();
    let _g = n.log_on_panic();
    let k = uniq("noct");
    let mut c = n.conn();
    let r = c.request(
        "POST",
        "/api/set",
        &[],
        format!("key={k}&value=v1").as_bytes(),
    );
    assert_ok(&r, "POST /api/set without Content-Type");
    assert_seed_value(&c.get(&format!("/api/get?key={k}")), b"v1", "get");
}

#[test]
fn seed_fields_in_query_string() {
    let n = node();
    let _g = n.log_on_panic();
    let k = uniq("q");
    let mut c = n.conn();
    let r = c.request(
        "POST",
        &format!("/api/set?key={k}&value=fromquery&expire=5&hot=false"),
        &[],
        b"",
    );
    assert_ok(&r, "POST /api/set with query fields and empty body");
    assert_seed_value(&c.get(&format!("/api/get?key={k}")), b"fromquery", "get");
    let r = c.request("POST", &format!("/api/delete?key={k}"), &[], b"");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"deleted\n"[..]),
        "{}",
        r.describe()
    );
    assert_not_found(&c.get(&format!("/api/get?key={k}")), "get after delete");
}

#[test]
fn seed_body_overrides_query() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    // value in both: body wins.
    let k = uniq("ov");
    let r = post_form(
        &mut c,
        &format!("/api/set?key={k}&value=fromquery"),
        "value=frombody",
    );
    assert_ok(&r, "set");
    assert_seed_value(
        &c.get(&format!("/api/get?key={k}")),
        b"frombody",
        "body value wins",
    );

    // key in both: body wins, the query key is not written.
    let kq = uniq("ov-query");
    let kb = uniq("ov-body");
    let r = post_form(
        &mut c,
        &format!("/api/set?key={kq}&value=x"),
        &format!("key={kb}"),
    );
    assert_ok(&r, "set");
    assert_seed_value(&c.get(&format!("/api/get?key={kb}")), b"x", "body key wins");
    assert_not_found(
        &c.get(&format!("/api/get?key={kq}")),
        "query key must not be written",
    );

    // delete: body key wins.
    let r = post_form(
        &mut c,
        &format!("/api/delete?key={kq}"),
        &format!("key={kb}"),
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"deleted\n"[..]),
        "{}",
        r.describe()
    );
    assert_not_found(&c.get(&format!("/api/get?key={kb}")), "deleted by body key");
}

#[test]
fn seed_form_decoding() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("dec");
    // '+' is a space in forms, %XX decodes, '=' inside the value is kept.
    let r = post_form(&mut c, "/api/set", &format!("key={k}&value=a+b%26c%3Dd=e"));
    assert_ok(&r, "set");
    assert_seed_value(
        &c.get(&format!("/api/get?key={k}")),
        b"a b&c=d=e",
        "form-decoded value",
    );

    // Key with spaces and unicode, percent-encoded in the query of the GET.
    let key = format!("{} ключ/ä?&=", uniq("k"));
    let r = post_form(
        &mut c,
        "/api/set",
        &form(&[("key", key.as_bytes()), ("value", b"u")]),
    );
    assert_ok(&r, "set unicode key");
    assert_seed_value(
        &c.get(&format!("/api/get?key={}", pct(key.as_bytes()))),
        b"u",
        "unicode key",
    );
}

#[test]
fn seed_all_byte_values() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("bytes");
    let v = all_bytes();
    let r = post_form(
        &mut c,
        "/api/set",
        &form(&[("key", k.as_bytes()), ("value", &v)]),
    );
    assert_ok(&r, "set all bytes");
    assert_seed_value(
        &c.get(&format!("/api/get?key={k}")),
        &v,
        "raw value bytes, no newline",
    );
}

#[test]
fn seed_expire_and_hot_accepted_values() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    for extra in [
        "expire=0",
        "expire=1",
        "expire=4320",
        "hot=true",
        "hot=false",
        "hot=1",
        "hot=0",
        "expire=4320&hot=1",
    ] {
        let k = uniq("ok");
        let r = post_form(&mut c, "/api/set", &format!("key={k}&value=v&{extra}"));
        assert_ok(&r, extra);
        assert_seed_value(&c.get(&format!("/api/get?key={k}")), b"v", extra);
    }
}

#[test]
fn seed_empty_value_allowed() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("empty");
    let r = post_form(&mut c, "/api/set", &format!("key={k}&value="));
    assert_ok(&r, "set empty value");
    assert_seed_value(&c.get(&format!("/api/get?key={k}")), b"", "empty value");
}

#[test]
fn seed_get_miss_and_delete() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("del");
    assert_not_found(&c.get(&format!("/api/get?key={k}")), "miss");
    let r = post_form(&mut c, "/api/delete", &format!("key={k}"));
    assert_eq!(r.status, 200, "delete of absent key: {}", r.describe());
    assert_eq!(
        r.body,
        b"not found\n",
        "delete of absent key: {}",
        r.describe()
    );
    assert_ok(
        &post_form(&mut c, "/api/set", &format!("key={k}&value=1")),
        "set",
    );
    let r = post_form(&mut c, "/api/delete", &format!("key={k}"));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.body, b"deleted\n", "{}", r.describe());
    assert!(
        r.content_type().starts_with("text/plain"),
        "{}",
        r.describe()
    );
    let r = post_form(&mut c, "/api/delete", &format!("key={k}"));
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"not found\n"[..]),
        "second delete: {}",
        r.describe()
    );
    assert_not_found(&c.get(&format!("/api/get?key={k}")), "get after delete");
}

#[test]
fn seed_overwrite() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("ow");
    assert_ok(
        &post_form(&mut c, "/api/set", &format!("key={k}&value=first")),
        "set 1",
    );
    assert_ok(
        &post_form(&mut c, "/api/set", &format!("key={k}&value=second")),
        "set 2",
    );
    assert_seed_value(
        &c.get(&format!("/api/get?key={k}")),
        b"second",
        "overwritten",
    );
}

#[test]
fn v1_put_get_delete() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("v1");
    let path = format!("/v1/keys/{k}");
    let r = c.get(&path);
    assert_not_found(&r, "v1 miss");

    let r = c.request("PUT", &path, &[], b"hello world");
    assert_ok(&r, "PUT");
    let r = c.get(&path);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        r.content_type(),
        "application/octet-stream",
        "{}",
        r.describe()
    );
    assert_eq!(r.body, b"hello world");
    assert_eq!(
        r.header("x-nexuscache-hot"),
        Some("false"),
        "{}",
        r.describe()
    );

    let r = c.request("DELETE", &path, &[], b"");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"deleted\n"[..]),
        "{}",
        r.describe()
    );
    let r = c.request("DELETE", &path, &[], b"");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"not found\n"[..]),
        "{}",
        r.describe()
    );
    assert_not_found(&c.get(&path), "after delete");
}

#[test]
fn v1_hot_flag_and_ttl_params() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    for (q, hot) in [
        ("?hot=true", "true"),
        ("?hot=1", "true"),
        ("?hot=false", "false"),
        ("?hot=0", "false"),
        ("?ttl=0", "false"),
        ("?ttl=259200&hot=true", "true"),
        ("?ttl=60", "false"),
        ("", "false"),
    ] {
        let k = uniq("hot");
        let path = format!("/v1/keys/{k}");
        assert_ok(&c.request("PUT", &format!("{path}{q}"), &[], b"v"), q);
        let r = c.get(&path);
        assert_eq!(r.status, 200, "{q}: {}", r.describe());
        assert_eq!(
            r.header("x-nexuscache-hot"),
            Some(hot),
            "{q}: {}",
            r.describe()
        );
        assert_eq!(r.body, b"v");
    }
    // Seed API hot=true shows through the v1 header (one keyspace).
    let k = uniq("seedhot");
    assert_ok(
        &c.request(
            "POST",
            "/api/set",
            &[FORM],
            format!("key={k}&value=h&hot=true").as_bytes(),
        ),
        "seed set hot",
    );
    let r = c.get(&format!("/v1/keys/{k}"));
    assert_eq!(r.status, 200, "seed-written key via v1: {}", r.describe());
    assert_eq!(
        r.header("x-nexuscache-hot"),
        Some("true"),
        "{}",
        r.describe()
    );
    assert_eq!(r.body, b"h");
}

#[test]
fn v1_and_seed_share_keyspace() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("shared");
    assert_ok(
        &c.request("PUT", &format!("/v1/keys/{k}"), &[], b"via-v1"),
        "PUT",
    );
    assert_seed_value(
        &c.get(&format!("/api/get?key={k}")),
        b"via-v1",
        "seed GET of v1 key",
    );
    let r = c.request(
        "POST",
        "/api/delete",
        &[FORM],
        format!("key={k}").as_bytes(),
    );
    assert_eq!(r.body, b"deleted\n", "{}", r.describe());
    assert_not_found(&c.get(&format!("/v1/keys/{k}")), "v1 GET after seed delete");
}

#[test]
fn v1_empty_value() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("empty");
    let path = format!("/v1/keys/{k}");
    assert_ok(
        &c.request("PUT", &path, &[("Content-Length", "0")], b""),
        "PUT empty",
    );
    let r = c.get(&path);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.header("content-length"), Some("0"), "{}", r.describe());
    assert!(r.body.is_empty());
}

#[test]
fn v1_binary_value_all_bytes() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("binval");
    let path = format!("/v1/keys/{k}");
    let mut v = all_bytes();
    v.extend(all_bytes().iter().rev());
    v.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    assert_ok(&c.request("PUT", &path, &[], &v), "PUT binary");
    let r = c.get(&path);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.body, v, "binary value must round-trip byte-exactly");
    // The connection is still in sync after a body containing CRLFs.
    c.assert_usable("after binary PUT/GET");
}

#[test]
fn v1_binary_key_all_bytes() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    // All 256 byte values in one key, including '/', '%', '?', '#', NUL.
    let mut key = uniq("binkey").into_bytes();
    key.extend(all_bytes());
    let path = format!("/v1/keys/{}", pct(&key));
    assert_ok(
        &c.request("PUT", &path, &[], b"binary-key-value"),
        "PUT binary key",
    );
    let r = c.get(&path);
    assert_eq!(r.status, 200, "GET binary key: {}", r.describe());
    assert_eq!(r.body, b"binary-key-value");
    // The same bytes via the seed API's query string.
    let r = c.get(&format!("/api/get?key={}", pct(&key)));
    assert_seed_value(&r, b"binary-key-value", "seed GET of binary key");
    // A key differing in one byte is a different key.
    let mut other = key.clone();
    *other.last_mut().unwrap() = 0xFE;
    assert_not_found(
        &c.get(&format!("/v1/keys/{}", pct(&other))),
        "neighbour key",
    );
    let r = c.request("DELETE", &path, &[], b"");
    assert_eq!(r.body, b"deleted\n", "{}", r.describe());
    assert_not_found(&c.get(&path), "binary key after delete");
}

#[test]
fn v1_key_with_encoded_slash_is_one_key() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let base = uniq("sl");
    let key = format!("{base}/a/b");
    let path = format!("/v1/keys/{}", pct(key.as_bytes()));
    assert_ok(&c.request("PUT", &path, &[], b"slashy"), "PUT");
    let r = c.get(&path);
    assert_eq!(r.body, b"slashy", "{}", r.describe());
    assert_seed_value(
        &c.get(&format!("/api/get?key={}", pct(key.as_bytes()))),
        b"slashy",
        "seed view",
    );
}

#[test]
fn v1_overwrite_and_large_value() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("big");
    let path = format!("/v1/keys/{k}");
    // 1 MiB = the default --max-value-bytes: allowed.
    let v: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    assert_ok(&c.request("PUT", &path, &[], &v), "PUT 1 MiB");
    let r = c.get(&path);
    assert_eq!(r.status, 200);
    assert!(
        r.body == v,
        "1 MiB value mismatch (len {} vs {})",
        r.body.len(),
        v.len()
    );
    assert_ok(&c.request("PUT", &path, &[], b"small"), "overwrite");
    assert_eq!(c.get(&path).body, b"small");
}

#[test]
fn response_framing_headers() {
    let n = node();
    let _g = n.log_on_panic();
    let mut c = n.conn();
    // Every response carries an explicit Content-Length (or chunked framing)
    // so keep-alive clients can find its end.
    for target in [
        "/healthz",
        "/readyz",
        "/api/get?key=none-such",
        "/v1/keys/none-such",
        "/nope",
    ] {
        let r = c.get(target);
        assert!(
            r.header("content-length").is_some() || r.header("transfer-encoding").is_some(),
            "{target}: no framing header: {}",
            r.describe()
        );
        assert!(!r.read_to_eof, "{target}: body delimited by close");
    }
}
