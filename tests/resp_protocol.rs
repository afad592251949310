//! The Redis protocol listener over raw TCP against the real binary:
//! pipelining, inline commands, RESP3, malformed input, limits checked
//! before bytes are read, authentication, connection limits and metrics.

mod common;
mod resp_common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{rss_kib, shared, Node};
use resp_common::{encode_str, resp_port, Client, Value};

static NODE: OnceLock<Node> = OnceLock::new();

/// A node with the default settings (1 MiB values), shared by the tests
/// that change nothing about it.
fn node() -> &'static Node {
    shared(&NODE, &["--no-pin", "--max-memory", "64MiB"])
}

fn client() -> Client {
    Client::connect(resp_port(node().port))
}

#[test]
fn a_thousand_pipelined_mixed_commands_are_answered_in_order() {
    let _log = node().log_on_panic();
    let mut c = client();
    let mut raw = Vec::new();
    let mut expected = Vec::new();
    for i in 0..250 {
        let key = format!("pipe:{i}");
        let value = format!("value-{i}");
        raw.extend(encode_str(&["SET", &key, &value]));
        expected.push(Value::ok());
        raw.extend(encode_str(&["GET", &key]));
        expected.push(Value::bulk(&value));
        match i % 3 {
            0 => {
                raw.extend(encode_str(&["ECHO", &key]));
                expected.push(Value::bulk(&key));
            }
            1 => {
                raw.extend(encode_str(&["EXISTS", &key, "pipe:none", &key]));
                expected.push(Value::Int(2));
            }
            _ => {
                raw.extend(encode_str(&["PING"]));
                expected.push(Value::Simple("PONG".into()));
            }
        }
        if i % 2 == 0 {
            raw.extend(encode_str(&["DEL", &key, "pipe:none"]));
            expected.push(Value::Int(1));
        } else {
            raw.extend(encode_str(&["STRLEN", &key]));
            expected.push(Value::Int(value.len() as i64));
        }
    }
    assert_eq!(expected.len(), 1000);
    // One write: the node reads many commands per read and answers them
    // in order.
    c.send(&raw);
    for (i, want) in expected.iter().enumerate() {
        let got = c.read().unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert_eq!(&got, want, "reply {i}");
    }
    assert_eq!(c.cmd(&["PING"]), Value::Simple("PONG".into()));
}

#[test]
fn inline_commands_work_as_redis_cli_and_telnet_send_them() {
    let _log = node().log_on_panic();
    let mut c = client();
    c.send(
        b"PING\r\nSET inline:k \"two words\\n\"\r\nGET inline:k\r\n\r\nget 'inline:k'\nQUIT\r\n",
    );
    assert_eq!(c.read().unwrap(), Value::Simple("PONG".into()));
    assert_eq!(c.read().unwrap(), Value::ok());
    assert_eq!(c.read().unwrap(), Value::bulk("two words\n"));
    assert_eq!(c.read().unwrap(), Value::bulk("two words\n"));
    assert_eq!(c.read().unwrap(), Value::ok());
    c.wait_closed(Duration::from_secs(5)).expect("QUIT closes");
}

#[test]
fn hello_3_switches_to_resp3_replies() {
    let _log = node().log_on_panic();
    // Pipelined: the GET before HELLO answers in RESP2, the one after in
    // RESP3 (both nil).
    let mut c = client();
    c.send(b"*2\r\n$3\r\nGET\r\n$10\r\nresp3:none\r\n*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*2\r\n$3\r\nGET\r\n$10\r\nresp3:none\r\n");
    let mut raw = [0u8; 5];
    std::io::Read::read_exact(&mut c.reader_mut(), &mut raw).unwrap();
    assert_eq!(&raw, b"$-1\r\n", "RESP2 nil before HELLO 3");
    let hello = c.read().unwrap();
    let Value::Map(_) = &hello else {
        panic!("HELLO 3 answers a RESP3 map, got {hello:?}")
    };
    assert_eq!(hello.field("proto"), Some(&Value::Int(3)));
    assert_eq!(
        hello.field("server").map(Value::text).as_deref(),
        Some("redis")
    );
    assert_eq!(
        hello.field("mode").map(Value::text).as_deref(),
        Some("standalone")
    );
    let mut raw = [0u8; 3];
    std::io::Read::read_exact(&mut c.reader_mut(), &mut raw).unwrap();
    assert_eq!(&raw, b"_\r\n", "RESP3 null after HELLO 3");
    let config = c.cmd(&["CONFIG", "GET", "maxmemory"]);
    assert!(matches!(config, Value::Map(_)), "{config:?}");
    assert_eq!(
        config.field("maxmemory").map(Value::text).as_deref(),
        Some("67108864")
    );
    let info = c.cmd(&["INFO", "keyspace"]);
    assert!(
        matches!(info, Value::Verbatim(ref f, _) if f == "txt"),
        "{info:?}"
    );
    assert_eq!(c.cmd(&["HELLO", "2"]).field("proto"), Some(&Value::Int(2)));
    assert!(matches!(c.cmd(&["CONFIG", "GET", "save"]), Value::Array(_)));
    assert_eq!(
        c.cmd(&["HELLO", "4"]),
        Value::Error("NOPROTO unsupported protocol version".into())
    );
}

/// Every malformed request gets Redis's protocol error (or nothing) and
/// a closed connection; the node goes on serving.
#[test]
fn malformed_input_gets_an_error_and_a_close_never_a_hang() {
    let _log = node().log_on_panic();
    let cases: [(&str, &[u8], Option<&str>); 8] = [
        (
            "negative multibulk",
            b"*-5\r\n",
            Some("-ERR Protocol error: invalid multibulk length"),
        ),
        (
            "overflowing multibulk",
            b"*99999999999999999999999\r\n",
            Some("-ERR Protocol error: invalid multibulk length"),
        ),
        (
            "negative bulk",
            b"*1\r\n$-5\r\n",
            Some("-ERR Protocol error: invalid bulk length"),
        ),
        (
            "huge bulk",
            b"*2\r\n$3\r\nGET\r\n$9223372036854775807\r\n",
            Some("-ERR Protocol error: invalid bulk length"),
        ),
        (
            "overflowing bulk",
            b"*1\r\n$92233720368547758070\r\n",
            Some("-ERR Protocol error: invalid bulk length"),
        ),
        (
            "missing CRLF after a bulk",
            b"*1\r\n$4\r\nPINGxx",
            Some("-ERR Protocol error: bulk string not terminated by CRLF"),
        ),
        (
            "nested array",
            b"*1\r\n*1\r\n$4\r\nPING\r\n",
            Some("-ERR Protocol error: expected '$', got '*'"),
        ),
        (
            "an HTTP request on the RESP port",
            b"POST / HTTP/1.1\r\nHost: x\r\n\r\n",
            None,
        ),
    ];
    for (what, raw, reply) in cases {
        let mut c = client();
        c.send(raw);
        let got = c
            .wait_closed(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let got = String::from_utf8_lossy(&got).into_owned();
        match reply {
            Some(line) => assert_eq!(got, format!("{line}\r\n"), "{what}"),
            None => assert_eq!(got, "", "{what}: closed without a reply"),
        }
    }
    // A bulk cut short, then the client closes: nothing to answer.
    let mut c = client();
    c.send(b"*2\r\n$3\r\nGET\r\n$10\r\nab");
    c.shutdown_write();
    let got = c
        .wait_closed(Duration::from_secs(5))
        .expect("closed after EOF");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    // Unknown commands and wrong arity keep the connection.
    let mut c = client();
    assert!(c
        .cmd(&["NOSUCH", "a"])
        .is_error_starting("ERR unknown command 'NOSUCH', with args beginning with: 'a'"));
    assert_eq!(
        c.cmd(&["GET"]),
        Value::Error("ERR wrong number of arguments for 'get' command".into())
    );
    assert_eq!(c.cmd(&["PING"]), Value::Simple("PONG".into()));
}

/// A bulk over `--max-value-bytes` is refused from its length line: the
/// node neither waits for nor buffers its bytes, and a command that
/// trickles in is cut off by the header timeout.
#[test]
fn a_bulk_over_the_value_limit_is_refused_before_its_bytes_arrive() {
    let node = Node::start(&[
        "--no-pin",
        "--max-memory",
        "64MiB",
        "--max-value-bytes",
        "1MiB",
        "--header-timeout",
        "2",
    ]);
    let _log = node.log_on_panic();
    let port = resp_port(node.port);
    let before = rss_kib(node.pid());
    // Several clients claim 2 GB values and push 8 MiB each right away.
    let junk = vec![b'x'; 8 << 20];
    for _ in 0..8 {
        let mut c = Client::connect(port);
        c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000000\r\n");
        // The node closes after the length line; the rest may fail.
        let _ = c.try_send(&junk);
        let got = c.wait_closed(Duration::from_secs(5)).expect("closed");
        assert!(
            String::from_utf8_lossy(&got).starts_with("-ERR Protocol error: invalid bulk length"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let grown = rss_kib(node.pid()).saturating_sub(before);
    assert!(grown < 8 * 1024, "RSS grew {grown} KiB for refused bulks");

    // A value within the limit that trickles in: closed by the header
    // timeout (2 s), not held forever.
    let mut c = Client::connect(port);
    c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n");
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(8) {
        if c.try_send(b"abcd").is_err() {
            closed = true;
            break;
        }
        if c.wait_closed(Duration::from_millis(200)).is_ok() {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickled command outlived the header timeout");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed too early"
    );
    // A whole 1 MiB value is fine.
    let mut c = Client::connect(port);
    let value = "v".repeat(1 << 20);
    assert_eq!(c.cmd(&["SET", "big", &value]), Value::ok());
    assert_eq!(c.cmd(&["STRLEN", "big"]), Value::Int(1 << 20));
    assert_eq!(c.cmd(&["GET", "big"]), Value::bulk(&value));
    let over = "v".repeat((1 << 20) + 1);
    let mut c = Client::connect(port);
    c.send(&encode_str(&["SET", "big", &over]));
    let got = c.wait_closed(Duration::from_secs(5)).expect("closed");
    assert!(String::from_utf8_lossy(&got).starts_with("-ERR Protocol error: invalid bulk length"));
}

#[test]
fn a_token_makes_every_command_but_auth_wait_for_auth() {
    let node = Node::start(&[
        "--no-pin",
        "--max-memory",
        "64MiB",
        "--auth-token",
        "s3cret-token-1234",
    ]);
    let _log = node.log_on_panic();
    let port = resp_port(node.port);
    let mut c = Client::connect(port);
    assert_eq!(
        c.cmd(&["GET", "k"]),
        Value::Error("NOAUTH Authentication required.".into())
    );
    assert!(c.cmd(&["NOSUCH"]).is_error_starting("ERR unknown command"));
    let wrongpass =
        Value::Error("WRONGPASS invalid username-password pair or user is disabled.".into());
    assert_eq!(c.cmd(&["AUTH", "wrong"]), wrongpass);
    assert_eq!(c.cmd(&["AUTH", "default", "wrong"]), wrongpass);
    assert_eq!(c.cmd(&["AUTH", "alice", "s3cret-token-1234"]), wrongpass);
    assert!(c
        .cmd(&["HELLO", "3"])
        .is_error_starting("NOAUTH HELLO must be called"));
    assert_eq!(c.cmd(&["AUTH", "s3cret-token-1234"]), Value::ok());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Value::ok());
    assert_eq!(c.cmd(&["GET", "k"]), Value::bulk("v"));
    // RESET forgets the authentication.
    assert_eq!(c.cmd(&["RESET"]), Value::Simple("RESET".into()));
    assert!(c.cmd(&["GET", "k"]).is_error_starting("NOAUTH"));

    let mut c = Client::connect(port);
    let hello = c.cmd(&[
        "HELLO",
        "3",
        "AUTH",
        "default",
        "s3cret-token-1234",
        "SETNAME",
        "t1",
    ]);
    assert_eq!(hello.field("proto"), Some(&Value::Int(3)), "{hello:?}");
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Value::bulk("t1"));
    assert_eq!(c.cmd(&["GET", "k"]), Value::bulk("v"));

    // Before authentication a client may not claim large requests.
    let mut c = Client::connect(port);
    c.send(b"*20\r\n");
    let got = c.wait_closed(Duration::from_secs(5)).expect("closed");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    let mut c = Client::connect(port);
    c.send(b"*2\r\n$4\r\nAUTH\r\n$100000\r\n");
    let got = c.wait_closed(Duration::from_secs(5)).expect("closed");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: unauthenticated bulk length\r\n"
    );

    let metrics = node.metrics_with(&[("Authorization", "Bearer s3cret-token-1234")]);
    assert!(
        metrics.sum("nexuscache_auth_failures_total", &[]) >= 5.0,
        "NOAUTH and WRONGPASS are counted as auth failures"
    );
}

#[test]
fn auth_without_a_token_answers_as_redis_does() {
    let _log = node().log_on_panic();
    let mut c = client();
    assert!(c
        .cmd(&["AUTH", "x"])
        .is_error_starting("ERR AUTH <password> called without any password configured"));
    assert_eq!(c.cmd(&["AUTH", "default", "anything"]), Value::ok());
    assert_eq!(c.cmd(&["SELECT", "0"]), Value::ok());
    assert_eq!(
        c.cmd(&["SELECT", "1"]),
        Value::Error("ERR DB index is out of range".into())
    );
}

#[test]
fn connections_over_the_limit_are_closed_at_once() {
    // 2 cores: one connection each.
    let node = Node::start(&[
        "--no-pin",
        "--max-memory",
        "64MiB",
        "--max-connections",
        "2",
    ]);
    let _log = node.log_on_panic();
    let port = resp_port(node.port);
    let mut clients: Vec<Client> = (0..6).map(|_| Client::connect(port)).collect();
    let mut usable = 0;
    for c in &mut clients {
        c.set_read_timeout(Duration::from_secs(3));
        if c.try_send(&encode_str(&["PING"])).is_ok()
            && c.read().ok() == Some(Value::Simple("PONG".into()))
        {
            usable += 1;
        }
    }
    assert!((1..=2).contains(&usable), "{usable} connections served");
    drop(clients);
    // Places come back once the connections close.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Client::connect(port);
        c.set_read_timeout(Duration::from_secs(1));
        if c.try_send(&encode_str(&["PING"])).is_ok()
            && c.read().ok() == Some(Value::Simple("PONG".into()))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no place came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Counted (read over HTTP once places are free: the limit is shared).
    let rejected = loop {
        // A place may still be taken by a connection the node has not seen
        // close yet: then this one is closed at once, and we retry.
        if let Ok(mut conn) = common::Conn::try_connect(node.port) {
            let sent = conn.try_send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            if let (Ok(()), Ok(r)) = (sent, conn.try_read_response()) {
                if r.status == 200 {
                    break common::Metrics::parse(&r.body_str())
                        .sum("nexuscache_connections_rejected_total", &[]);
                }
            }
        }
        assert!(Instant::now() < deadline, "no place for /metrics");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(rejected >= 4.0, "rejected {rejected}");
}

#[test]
fn commands_are_counted_with_the_resp_protocol_label() {
    let node = node();
    let _log = node.log_on_panic();
    let mut c = client();
    assert_eq!(c.cmd(&["SET", "metrics:k", "v"]), Value::ok());
    assert_eq!(c.cmd(&["GET", "metrics:k"]), Value::bulk("v"));
    assert_eq!(c.cmd(&["GET", "metrics:none"]), Value::Nil);
    let m = node.metrics();
    let resp = |op: &str, status: &str| {
        m.sum(
            "nexuscache_requests_total",
            &[("protocol", "resp"), ("op", op), ("status", status)],
        )
    };
    assert!(resp("set", "200") >= 1.0);
    assert!(resp("get", "200") >= 1.0);
    assert!(resp("get", "404") >= 1.0);
    assert!(
        m.sum(
            "nexuscache_request_duration_seconds_count",
            &[("protocol", "resp"), ("op", "get")]
        ) >= 2.0
    );
}

#[test]
fn set_expiries_follow_redis_within_the_three_day_limit() {
    let _log = node().log_on_panic();
    let mut c = client();
    assert_eq!(c.cmd(&["SET", "exp:px", "v", "PX", "300"]), Value::ok());
    let Value::Int(pttl) = c.cmd(&["PTTL", "exp:px"]) else {
        panic!("PTTL")
    };
    // Jitter (--ttl-jitter, 10%) only lengthens.
    assert!((1..=330).contains(&pttl), "pttl {pttl}");
    assert_eq!(c.cmd(&["TTL", "exp:none"]), Value::Int(-2));
    assert_eq!(c.cmd(&["SET", "exp:forever", "v"]), Value::ok());
    assert_eq!(c.cmd(&["TTL", "exp:forever"]), Value::Int(-1));
    assert_eq!(
        c.cmd(&["TYPE", "exp:forever"]),
        Value::Simple("string".into())
    );
    assert_eq!(c.cmd(&["TYPE", "exp:none"]), Value::Simple("none".into()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let at = (now.as_secs() + 100).to_string();
    assert_eq!(c.cmd(&["SET", "exp:at", "v", "EXAT", &at]), Value::ok());
    let Value::Int(ttl) = c.cmd(&["TTL", "exp:at"]) else {
        panic!("TTL")
    };
    assert!((98..=111).contains(&ttl), "ttl {ttl}");
    // An absolute time in the past deletes the key, as in Redis.
    let past = (now.as_millis() - 1000).to_string();
    assert_eq!(
        c.cmd(&["SET", "exp:forever", "v", "PXAT", &past]),
        Value::ok()
    );
    assert_eq!(c.cmd(&["EXISTS", "exp:forever"]), Value::Int(0));
    let too_long = (3 * 24 * 3600 + 1).to_string();
    assert_eq!(
        c.cmd(&["SET", "exp:k", "v", "EX", &too_long]),
        Value::Error("ERR invalid expire time in 'set' command".into())
    );
    assert_eq!(
        c.cmd(&["SETEX", "exp:k", &too_long, "v"]),
        Value::Error("ERR invalid expire time in 'setex' command".into())
    );
    assert_eq!(
        c.cmd(&["SETEX", "exp:k", "0", "v"]),
        Value::Error("ERR invalid expire time in 'setex' command".into())
    );
    assert_eq!(c.cmd(&["PSETEX", "exp:k", "200", "v"]), Value::ok());
    // Gone once the TTL passed (the jitter adds at most 10%).
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(c.cmd(&["GET", "exp:px"]), Value::Nil);
    assert_eq!(c.cmd(&["GET", "exp:k"]), Value::Nil);
}

/// Sends `args` and checks that the reply is exactly `want`, byte for byte.
fn exact(c: &mut Client, args: &[&str], want: &[u8]) {
    c.send(&encode_str(args));
    let mut got = vec![0u8; want.len()];
    std::io::Read::read_exact(&mut c.reader_mut(), &mut got)
        .unwrap_or_else(|e| panic!("reply to {args:?}: {e}"));
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(want),
        "reply to {args:?}"
    );
}

/// An integer reply's value.
fn int(c: &mut Client, args: &[&str]) -> i64 {
    match c.cmd(args) {
        Value::Int(n) => n,
        other => panic!("{args:?} answered {other:?}"),
    }
}

/// The atomic commands' replies, as Redis 7.2 writes them, in RESP2 and
/// RESP3: `SET ... GET` answers the old value or nil, a `SET NX|XX` whose
/// condition fails answers nil, `SETNX` an integer, `INCR` Redis's error
/// lines, `GETDEL`/`GETSET` the old value.
#[test]
fn atomic_string_commands_answer_redis_bytes() {
    let _log = node().log_on_panic();
    for (proto, nil) in [("2", &b"$-1\r\n"[..]), ("3", &b"_\r\n"[..])] {
        let mut c = client();
        let version: i64 = proto.parse().unwrap();
        assert_eq!(
            c.cmd(&["HELLO", proto]).field("proto"),
            Some(&Value::Int(version))
        );
        let k = format!("atomic:{proto}");
        let k = k.as_str();
        let n = format!("atomic:{proto}:n");
        let n = n.as_str();
        exact(&mut c, &["DEL", k, n], b":0\r\n");
        exact(&mut c, &["SET", k, "v1", "GET"], nil);
        exact(&mut c, &["SET", k, "v2", "GET"], b"$2\r\nv1\r\n");
        exact(&mut c, &["SET", k, "v3", "NX"], nil);
        // NX fails, GET still answers the value, which stays.
        exact(&mut c, &["SET", k, "v3", "NX", "GET"], b"$2\r\nv2\r\n");
        exact(&mut c, &["GET", k], b"$2\r\nv2\r\n");
        exact(&mut c, &["SET", k, "v3", "XX"], b"+OK\r\n");
        exact(&mut c, &["SET", "atomic:none", "v", "XX"], nil);
        exact(&mut c, &["SETNX", k, "x"], b":0\r\n");
        exact(&mut c, &["SETNX", n, "41"], b":1\r\n");
        exact(&mut c, &["GETSET", k, "v4"], b"$2\r\nv3\r\n");
        exact(&mut c, &["INCR", n], b":42\r\n");
        exact(&mut c, &["DECRBY", n, "50"], b":-8\r\n");
        exact(&mut c, &["DECR", n], b":-9\r\n");
        exact(&mut c, &["INCRBY", n, "9"], b":0\r\n");
        exact(
            &mut c,
            &["INCR", k],
            b"-ERR value is not an integer or out of range\r\n",
        );
        exact(
            &mut c,
            &["INCRBY", n, "1.5"],
            b"-ERR value is not an integer or out of range\r\n",
        );
        exact(&mut c, &["SET", n, "9223372036854775806"], b"+OK\r\n");
        exact(&mut c, &["INCR", n], b":9223372036854775807\r\n");
        exact(
            &mut c,
            &["INCR", n],
            b"-ERR increment or decrement would overflow\r\n",
        );
        exact(
            &mut c,
            &["DECRBY", n, "-9223372036854775808"],
            b"-ERR decrement would overflow\r\n",
        );
        exact(&mut c, &["GET", n], b"$19\r\n9223372036854775807\r\n");
        exact(&mut c, &["APPEND", n, "x"], b":20\r\n");
        exact(&mut c, &["GETDEL", n], b"$20\r\n9223372036854775807x\r\n");
        exact(&mut c, &["GETDEL", n], nil);
        exact(&mut c, &["APPEND", n, "ab"], b":2\r\n");
        exact(&mut c, &["GETEX", n], b"$2\r\nab\r\n");
        exact(&mut c, &["GETEX", "atomic:none", "EX", "10"], nil);
        exact(&mut c, &["DEL", k, n], b":2\r\n");
        exact(&mut c, &["PING"], b"+PONG\r\n");
    }
}

/// `EXPIRE` and its kin: 1 when the expiry changed, 0 when the key is
/// missing or NX/XX/GT/LT did not hold (no expiry counts as infinite); a
/// time at or before now deletes the key (1 if it existed); `PERSIST`;
/// `GETEX` with an option; `SET KEEPTTL`; `APPEND` past the value limit.
#[test]
fn expire_conditions_and_persist_follow_redis_7() {
    let _log = node().log_on_panic();
    let mut c = client();
    let k = "expire:k";
    assert_eq!(c.cmd(&["SET", k, "v"]), Value::ok());
    exact(&mut c, &["EXPIRE", "expire:none", "100"], b":0\r\n");
    exact(&mut c, &["EXPIRE", k, "100", "XX"], b":0\r\n");
    exact(&mut c, &["EXPIRE", k, "100", "GT"], b":0\r\n");
    exact(&mut c, &["EXPIRE", k, "100", "NX"], b":1\r\n");
    exact(&mut c, &["EXPIRE", k, "200", "NX"], b":0\r\n");
    // Seconds get --ttl-jitter (10% here), so the margins are wide.
    assert!((99..=110).contains(&int(&mut c, &["TTL", k])));
    exact(&mut c, &["EXPIRE", k, "50", "GT"], b":0\r\n");
    exact(&mut c, &["EXPIRE", k, "200", "XX", "GT"], b":1\r\n");
    exact(&mut c, &["EXPIRE", k, "300", "LT"], b":0\r\n");
    // Milliseconds are exact.
    exact(&mut c, &["PEXPIRE", k, "150000", "LT"], b":1\r\n");
    let pttl = int(&mut c, &["PTTL", k]);
    assert!((140_000..=150_000).contains(&pttl), "PTTL {pttl}");
    exact(&mut c, &["PERSIST", k], b":1\r\n");
    exact(&mut c, &["PERSIST", k], b":0\r\n");
    exact(&mut c, &["PERSIST", "expire:none"], b":0\r\n");
    exact(&mut c, &["TTL", k], b":-1\r\n");
    exact(&mut c, &["EXPIRE", k, "10", "XX", "LT"], b":0\r\n");
    exact(&mut c, &["EXPIRE", k, "100", "LT"], b":1\r\n");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let at_ms = (now.as_millis() + 60_000).to_string();
    exact(&mut c, &["PEXPIREAT", k, &at_ms], b":1\r\n");
    let pttl = int(&mut c, &["PTTL", k]);
    assert!((50_000..=60_000).contains(&pttl), "PTTL {pttl}");
    let at = (now.as_secs() + 120).to_string();
    exact(&mut c, &["EXPIREAT", k, &at, "GT"], b":1\r\n");
    assert!((110..=132).contains(&int(&mut c, &["TTL", k])));
    // NexusCache keeps entries at most three days.
    exact(
        &mut c,
        &["EXPIRE", k, "259201"],
        b"-ERR invalid expire time in 'expire' command\r\n",
    );
    exact(
        &mut c,
        &["EXPIRE", k, "9223372036854775807"],
        b"-ERR invalid expire time in 'expire' command\r\n",
    );
    exact(
        &mut c,
        &["EXPIRE", k, "10", "NX", "XX"],
        b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n",
    );
    exact(
        &mut c,
        &["EXPIRE", k, "10", "GT", "LT"],
        b"-ERR GT and LT options at the same time are not compatible\r\n",
    );
    exact(
        &mut c,
        &["EXPIRE", k, "10", "SOON"],
        b"-ERR Unsupported option SOON\r\n",
    );
    // GETEX: a plain read without an option, an expiry change with one.
    exact(&mut c, &["GETEX", k, "PERSIST"], b"$1\r\nv\r\n");
    exact(&mut c, &["TTL", k], b":-1\r\n");
    exact(&mut c, &["GETEX", k, "PX", "80000"], b"$1\r\nv\r\n");
    let pttl = int(&mut c, &["PTTL", k]);
    assert!((70_000..=80_000).contains(&pttl), "PTTL {pttl}");
    exact(
        &mut c,
        &["GETEX", k, "EX", "0"],
        b"-ERR invalid expire time in 'getex' command\r\n",
    );
    exact(&mut c, &["GETEX", k, "EX", "100"], b"$1\r\nv\r\n");
    // KEEPTTL keeps it; a plain SET clears it.
    exact(&mut c, &["SET", k, "w", "KEEPTTL"], b"+OK\r\n");
    assert!((99..=110).contains(&int(&mut c, &["TTL", k])));
    exact(&mut c, &["SET", k, "v"], b"+OK\r\n");
    exact(&mut c, &["TTL", k], b":-1\r\n");
    // At or before now: the key goes, and the answer says it existed.
    exact(&mut c, &["EXPIRE", k, "-1"], b":1\r\n");
    exact(&mut c, &["EXISTS", k], b":0\r\n");
    exact(&mut c, &["EXPIRE", k, "-1"], b":0\r\n");
    assert_eq!(c.cmd(&["SET", k, "v"]), Value::ok());
    exact(&mut c, &["PEXPIREAT", k, "1000"], b":1\r\n");
    exact(&mut c, &["GET", k], b"$-1\r\n");
    assert_eq!(c.cmd(&["SET", k, "v"]), Value::ok());
    exact(&mut c, &["GETEX", k, "PXAT", "1000"], b"$1\r\nv\r\n");
    exact(&mut c, &["EXISTS", k], b":0\r\n");
    // APPEND past --max-value-bytes (1 MiB) is refused; the value stays.
    let half = "x".repeat(600 * 1024);
    exact(&mut c, &["APPEND", "expire:big", &half], b":614400\r\n");
    exact(
        &mut c,
        &["APPEND", "expire:big", &half],
        b"-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n",
    );
    exact(&mut c, &["STRLEN", "expire:big"], b":614400\r\n");
    exact(&mut c, &["DEL", "expire:big"], b":1\r\n");
}

/// SIGTERM: idle RESP connections are closed, a command already sent is
/// answered before its connection closes, and the node exits 0.
#[test]
fn draining_closes_resp_connections_after_answering_what_was_read() {
    let mut node = Node::start(&["--no-pin", "--max-memory", "64MiB", "--shutdown-grace", "2"]);
    let _log = node.log_on_panic();
    let port = resp_port(node.port);
    let mut idle = Client::connect(port);
    assert_eq!(idle.cmd(&["PING"]), Value::Simple("PONG".into()));
    let mut busy = Client::connect(port);
    assert_eq!(busy.cmd(&["SET", "drain:k", "v"]), Value::ok());
    node.signal("TERM");
    // Sent right after the signal: answered (if the node read it before it
    // stopped reading), then closed; never left hanging.
    let _ = busy.try_send(&encode_str(&["GET", "drain:k"]));
    let got = busy
        .wait_closed(Duration::from_secs(5))
        .expect("a busy connection closes while draining");
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(got.is_empty() || got == "$1\r\nv\r\n", "{got:?}");
    idle.wait_closed(Duration::from_secs(5))
        .expect("an idle connection closes while draining");
    let status = node
        .wait_exit(Duration::from_secs(6))
        .expect("exits after draining");
    assert_eq!(status.code(), Some(0), "exit status");
}

/// An idle RESP connection is charged what it holds (read chunk plus small
/// input and output buffers, 24 KiB), and gives it back when it closes.
#[test]
fn idle_connections_are_charged_to_the_connection_budget() {
    let node = Node::start(&["--no-pin", "--max-memory", "64MiB"]);
    let _log = node.log_on_panic();
    let held = || {
        node.metrics()
            .sum("nexuscache_connection_buffer_bytes", &[])
    };
    let before = held();
    let mut clients: Vec<Client> = (0..10)
        .map(|_| Client::connect(resp_port(node.port)))
        .collect();
    for c in &mut clients {
        assert_eq!(c.cmd(&["PING"]), Value::Simple("PONG".into()));
    }
    let per_connection = (held() - before) / 10.0;
    // The input buffer is counted by its capacity from the first unread
    // byte, so the command just read may be left out.
    assert!(
        (23.0 * 1024.0..=24.0 * 1024.0).contains(&per_connection),
        "{per_connection} bytes charged per idle connection"
    );
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(5);
    while held() > before {
        assert!(Instant::now() < deadline, "buffers not given back");
        std::thread::sleep(Duration::from_millis(20));
    }
}
