//! The checks behind every fuzz target: one function per parser that reads
//! bytes from the network. Each runs its parser the way the server does and
//! panics when an invariant breaks (a panic inside the parser is a finding
//! too): consumed lengths within the input, decoded lengths within the
//! limits, results that do not depend on how the bytes were split.
//!
//! Compiled twice: by the `fuzz/` crate for libFuzzer (nightly, `cargo
//! fuzz`), and by `tests/fuzz_corpus.rs` (stable `cargo test`), which replays
//! `fuzz/corpus/<target>/*` through the same functions. So this file uses
//! only `nexuscache`'s public API and `bytes`.

use std::time::Duration;

use bytes::Bytes;
use nexuscache::api::http::endpoint::{self, Endpoint};
use nexuscache::api::http::form;
use nexuscache::api::http::parse::{self, BodyFraming, RequestHead};
use nexuscache::api::http::route::{self, Command};
use nexuscache::chunked;
use nexuscache::error::ApiError;
use nexuscache::grpc::cache::{self, CallRequest, Method};
use nexuscache::grpc::frame::{self, FrameError, UnaryDecoder};
use nexuscache::mutation::Mutation;
use nexuscache::ops::{Limits, MAX_TTL_SECONDS};
use nexuscache::ops::{Op, ReplicaUpdate};
use nexuscache::origin::response::{self as origin, Bad, Body, Parsed};
use nexuscache::resp::{self, Command as RespCommand, CommandLimits, RequestParser};

/// The checks of one target: panics on a broken invariant.
pub type Check = fn(&[u8]);

/// Every target by name: the name is its `fuzz_targets/<name>.rs` and its
/// `corpus/<name>/` directory.
pub const TARGETS: &[(&str, Check)] = &[
    ("http_head", http_head),
    ("chunked_body", chunked_body),
    ("http_request", http_request),
    ("form_query", form_query),
    ("grpc_frame", grpc_frame),
    ("grpc_messages", grpc_messages),
    ("origin_response", origin_response),
    ("resp_parse", resp_parse),
];

/// Tiny limits reach the "too large" paths with short inputs; the defaults
/// (`--max-key-bytes 250`, `--max-value-bytes 1MiB`) are what nodes run with.
const LIMITS: [Limits; 2] = [
    Limits {
        max_key_bytes: 8,
        max_value_bytes: 16,
    },
    Limits {
        max_key_bytes: 250,
        max_value_bytes: 1 << 20,
    },
];

/// The request head parser alone.
pub fn http_head(data: &[u8]) {
    match parse::parse_head(data) {
        Ok(Some(head)) => {
            check_head(data, &head);
            // A head is self-delimiting: its own bytes give the same head,
            // and without its last byte it is not complete yet.
            let alone = parse::parse_head(&data[..head.head_len]);
            assert_eq!(alone, Ok(Some(head.clone())), "head alone");
            let short = parse::parse_head(&data[..head.head_len - 1]);
            assert!(!matches!(short, Ok(Some(_))), "complete one byte early");
        }
        Ok(None) => assert!(data.len() <= parse::MAX_HEAD_BYTES, "waits past the cap"),
        Err(e) => {
            assert!(matches!(e.status(), 400 | 431), "{e:?}");
            assert!(e.closes_connection(), "{e:?}");
            check_one_line(&e.to_string());
        }
    }
}

fn check_head(data: &[u8], head: &RequestHead<'_>) {
    assert!(head.head_len > 0 && head.head_len <= data.len());
    assert!(head.head_len <= parse::MAX_HEAD_BYTES);
    assert!(head.target.starts_with('/'), "{:?}", head.target);
    // The target is a slice of the head, never of the body after it.
    let start = (head.target.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
    assert!(start.saturating_add(head.target.len()) <= head.head_len);
    let (path, query) = (head.path(), head.query());
    assert!(!path.contains('?'));
    if head.target.contains('?') {
        assert_eq!(head.target.len(), path.len() + 1 + query.len());
    } else {
        assert_eq!((path, query), (head.target, ""));
    }
}

/// Chunked body framing, decoded in one call and a read at a time.
pub fn chunked_body(data: &[u8]) {
    for limit in [0, 1, 16, 4096, 1 << 20, u64::MAX] {
        let whole = parse::decode_chunked(data, &mut chunked::Progress::default(), limit);
        match &whole {
            Ok(Some((body, used))) => {
                let used = *used;
                assert!(used <= data.len(), "consumed {used} of {}", data.len());
                assert!(body.len() as u64 <= limit);
                // At least "0\r\n\r\n" besides the data (chunk-size is
                // 1*HEXDIG, RFC 9112 §7.1: an empty size line is not "0").
                assert!(
                    body.len() + 5 <= used,
                    "{} body bytes in {used}",
                    body.len()
                );
                assert!(used as u64 <= chunked::max_wire_bytes(limit));
                // Self-delimiting: its own bytes decode the same; one byte
                // fewer is incomplete.
                let alone =
                    parse::decode_chunked(&data[..used], &mut chunked::Progress::default(), limit);
                assert_eq!(alone, whole, "body alone");
                let short = parse::decode_chunked(
                    &data[..used - 1],
                    &mut chunked::Progress::default(),
                    limit,
                );
                assert_eq!(short, Ok(None), "complete one byte early");
            }
            Ok(None) => {}
            Err(e) => {
                assert!(matches!(e.status(), 400 | 413 | 431), "{e:?}");
                assert!(e.closes_connection(), "{e:?}");
                check_one_line(&e.to_string());
            }
        }
        // The connection feeds the same body a read at a time, resuming with
        // one `Progress`: the outcome must not depend on where reads end.
        // (Reads of a few bytes cost O(n^2) over a long line: only two of
        // the limits, and fewer steps for long inputs.)
        if ![16, 1 << 20].contains(&limit) {
            continue;
        }
        let steps = if data.len() <= 256 {
            [1, 7, 64]
        } else if data.len() <= 2048 {
            [7, 64, 509]
        } else {
            [data.len() / 97 + 1, data.len() / 13 + 1, data.len() / 2 + 1]
        };
        for step in steps {
            let in_reads = decode_in_reads(data, step, limit);
            match (&in_reads, &whole) {
                // Which reason a refusal names may depend on where reads
                // end (a long size line can be refused for its length
                // before a bad byte in it arrives); that it is refused,
                // and the connection closed, may not.
                (Err(e), Err(_)) => assert!(e.closes_connection(), "{e:?}"),
                _ => assert_eq!(in_reads, whole, "reads of {step} bytes, limit {limit}"),
            }
        }
    }
}

/// What the connection loop sees feeding `data` in reads of `step` bytes:
/// the first decided answer, else the answer once everything is in.
fn decode_in_reads(
    data: &[u8],
    step: usize,
    limit: u64,
) -> Result<Option<(Vec<u8>, usize)>, ApiError> {
    let mut progress = chunked::Progress::default();
    let mut end = 0;
    loop {
        end = (end + step).min(data.len());
        match parse::decode_chunked(&data[..end], &mut progress, limit) {
            Ok(None) if end < data.len() => continue,
            decided => return decided,
        }
    }
}

/// Whole requests, pipelined, as the connection loop frames them: head,
/// then a Content-Length or chunked body within the route's limit, then
/// routing (which decodes forms, queries and percent-encoded keys).
pub fn http_request(data: &[u8]) {
    for limits in &LIMITS {
        let mut rest = data;
        // Each round consumes at least one head byte.
        while !rest.is_empty() {
            let head = match parse::parse_head(rest) {
                Ok(Some(head)) => head,
                Ok(None) | Err(_) => break,
            };
            let after_head = &rest[head.head_len..];
            let found = Endpoint::find(head.path());
            let max_body = endpoint::max_body(found, limits);
            let (body, used) = match head.framing {
                BodyFraming::Length(len) => {
                    if len > max_body {
                        let e = match found {
                            Some(f) => f.endpoint.body_error(limits, len),
                            None => nexuscache::error::ApiError::BodyTooLarge {
                                len,
                                limit: max_body,
                            },
                        };
                        assert_eq!(e.status(), 413, "{e:?}");
                        break;
                    }
                    // len <= max_body, far below usize::MAX.
                    match after_head.get(..len as usize) {
                        Some(body) => (body.to_vec(), body.len()),
                        None => break,
                    }
                }
                BodyFraming::Chunked => {
                    let progress = &mut chunked::Progress::default();
                    match parse::decode_chunked(after_head, progress, max_body) {
                        Ok(Some((body, used))) => {
                            assert!(body.len() as u64 <= max_body);
                            (body, used)
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            };
            assert!(used <= after_head.len());
            check_route(&head, &body, limits);
            rest = &after_head[used..];
        }
    }
}

/// Routes one request and checks what came out against `limits`.
fn check_route(head: &RequestHead<'_>, body: &[u8], limits: &Limits) {
    match route::route(head, Endpoint::find(head.path()), body, limits) {
        Ok(command) => check_command(&command, limits),
        Err(e) => {
            assert!((400..500).contains(&e.status()), "{e:?}");
            check_one_line(&e.to_string());
        }
    }
}

fn check_command(command: &Command, limits: &Limits) {
    let check_key = |key: &[u8]| {
        assert!(
            !key.is_empty() && key.len() <= limits.max_key_bytes,
            "{key:?}"
        );
    };
    match command {
        Command::Get { key, .. } | Command::Delete { key, .. } | Command::Owner { key } => {
            check_key(key)
        }
        Command::Set {
            key, value, ttl, ..
        } => {
            check_key(key);
            assert!(value.len() as u64 <= limits.max_value_bytes);
            assert!(*ttl <= Duration::from_secs(MAX_TTL_SECONDS));
        }
        Command::SetPeer { name, addr } => {
            assert!(!name.is_empty());
            assert!(addr.as_ref().is_none_or(|a| !a.is_empty()));
        }
        // Health, readiness, metrics, membership removal: nothing sized.
        // (A wildcard: routes are added by other work, and this file must
        // keep compiling.)
        _ => {}
    }
}

/// Form and query decoding: the input's first line is a query string (and
/// a `/v1/keys/` key), the rest a form body, sent to every route that reads
/// them. Also `percent_decode` on its own, both flavours.
pub fn form_query(data: &[u8]) {
    let (query, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let query = as_request_target(query);
    let len = body.len();
    let requests = [
        format!("GET /api/get?{query} HTTP/1.1\r\n\r\n"),
        format!("POST /api/set?{query} HTTP/1.1\r\nContent-Length: {len}\r\n\r\n"),
        format!("POST /api/delete?{query} HTTP/1.1\r\nContent-Length: {len}\r\n\r\n"),
        format!("POST /setpeer?{query} HTTP/1.1\r\nContent-Length: {len}\r\n\r\n"),
        format!("POST /removepeer?{query} HTTP/1.1\r\nContent-Length: {len}\r\n\r\n"),
        format!("PUT /v1/keys/{query} HTTP/1.1\r\nContent-Length: {len}\r\n\r\n"),
        format!("GET /v1/keys/{query} HTTP/1.1\r\n\r\n"),
        format!("GET /v1/owner/{query} HTTP/1.1\r\n\r\n"),
    ];
    for request in &requests {
        let head = match parse::parse_head(request.as_bytes()) {
            Ok(Some(head)) => head,
            other => panic!("built an unparsable request {request:?}: {other:?}"),
        };
        for limits in &LIMITS {
            check_route(&head, body, limits);
        }
    }

    for plus_is_space in [false, true] {
        if let Ok(decoded) = form::percent_decode(data, plus_is_space) {
            assert!(decoded.len() <= data.len());
            let escapes = data.contains(&b'%') || (plus_is_space && data.contains(&b'+'));
            if !escapes {
                assert_eq!(decoded, data, "nothing to decode");
            }
        }
    }
    // Every byte escaped decodes back to the input.
    let escaped: Vec<u8> = data
        .iter()
        .flat_map(|b| format!("%{b:02X}").into_bytes())
        .collect();
    assert_eq!(form::percent_decode(&escaped, true).as_deref(), Ok(data));
}

/// Makes `raw` usable as a request target (httparse refuses controls,
/// spaces and some punctuation there) by percent-escaping every other byte.
/// `%` itself stays raw, so malformed escapes still reach the decoder.
fn as_request_target(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len() * 3);
    for &b in raw {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// gRPC message framing: the one message of a unary call, fed as the DATA
/// frames of a stream, however the stream is split into frames.
pub fn grpc_frame(data: &[u8]) {
    for limit in [0, 5, 64, 1 << 20] {
        let whole = unary_in_frames(data, data.len().max(1), limit);
        match &whole {
            Ok(Some(message)) => {
                assert!(message.len() <= limit);
                assert_eq!(data.len(), frame::PREFIX_LEN + message.len());
                assert_eq!(&data[..frame::PREFIX_LEN], frame::prefix(message.len()));
                assert_eq!(&message[..], &data[frame::PREFIX_LEN..]);
            }
            Ok(None) => assert!(data.is_empty()),
            Err(FrameError::TooLarge { len, limit: l }) => assert!(*len > *l as u64),
            Err(FrameError::Truncated { have, want }) => {
                assert!(have < want);
                assert_eq!(*have, data.len());
            }
            Err(_) => {}
        }
        if let Err(e) = &whole {
            check_one_line(&e.status().message);
        }
        for piece in [1, 2, 3, 5, 7, 64] {
            assert_eq!(
                unary_in_frames(data, piece, limit),
                whole,
                "frames of {piece} bytes, limit {limit}"
            );
        }
        // Under a connection's budget for partial messages the buffer never
        // holds more than the room it was given, and the budget changes
        // nothing but an `OverBudget` refusal.
        for room in [0, 16, 100_000] {
            for piece in [1, 7, 64] {
                let (budgeted, held) = unary_within(data, piece, limit, room);
                assert!(held <= room, "held {held} with room {room}");
                match budgeted {
                    Err(FrameError::OverBudget { wanted, room: r }) => {
                        assert!(r == room && wanted > room, "{wanted} > {r}");
                    }
                    other => assert_eq!(other, whole, "room {room}, frames of {piece}"),
                }
            }
        }
    }
    // The input framed as a message comes back whole.
    let mut framed = frame::prefix(data.len()).to_vec();
    framed.extend_from_slice(data);
    assert_eq!(
        unary_in_frames(&framed, 3, data.len()),
        Ok(Some(Bytes::copy_from_slice(data)))
    );
}

/// [`unary_in_frames`] with `push_within(room)`, and the most buffer bytes
/// the decoder held after any push.
fn unary_within(
    data: &[u8],
    piece: usize,
    limit: usize,
    room: usize,
) -> (Result<Option<Bytes>, FrameError>, usize) {
    let mut decoder = UnaryDecoder::new(limit);
    let mut held = 0;
    for chunk in data.chunks(piece) {
        let pushed = decoder.push_within(Bytes::copy_from_slice(chunk), room);
        held = held.max(decoder.held());
        if let Err(e) = pushed {
            return (Err(e), held);
        }
    }
    (decoder.finish_optional(), held)
}

fn unary_in_frames(data: &[u8], piece: usize, limit: usize) -> Result<Option<Bytes>, FrameError> {
    let mut decoder = UnaryDecoder::new(limit);
    for chunk in data.chunks(piece) {
        decoder.push(Bytes::copy_from_slice(chunk))?;
    }
    decoder.finish_optional()
}

/// The `nexuscache.v1` messages: every request decoder (server side) with
/// its validation, and every response decoder (client side).
pub fn grpc_messages(data: &[u8]) {
    let message = Bytes::copy_from_slice(data);
    for limits in &LIMITS {
        for method in Method::ALL {
            match cache::decode_request(method, message.clone(), limits) {
                Ok(request) => check_call(method, &request.op, request.forwarded, limits),
                Err(e) => {
                    assert!((400..500).contains(&e.status()), "{method:?}: {e:?}");
                    check_one_line(&e.to_string());
                }
            }
        }
    }
    if let Ok(Some(hit)) = cache::decode_get_response(message.clone()) {
        assert!(hit.value.len() <= data.len());
    }
    let _ = cache::decode_set_response(message.clone());
    let _ = cache::decode_delete_response(message);
}

fn check_call(method: Method, op: &Op, forwarded: bool, limits: &Limits) {
    if method == Method::Stats {
        // Addressed to the node, not a key: the cores' snapshot.
        assert!(matches!(op, Op::Snapshot), "Stats decoded into {op:?}");
        return;
    }
    let key = op.key().unwrap_or_default();
    assert!(!key.is_empty() && key.len() <= limits.max_key_bytes);
    match (method, op) {
        (Method::Get, Op::Get { keep_copy, .. }) => {
            // A copy is kept only by a node that forwarded the read.
            assert!(!keep_copy || forwarded);
            // What a forwarding node would send decodes to the same call.
            let again = cache::encode_get_request(key, forwarded, *keep_copy).to_bytes();
            let again = again.slice(frame::PREFIX_LEN..);
            let decoded = cache::decode_request(Method::Get, again, limits);
            assert!(
                matches!(&decoded, Ok(r) if r.op.key() == Some(key) && r.forwarded == forwarded),
                "re-encoded Get: {decoded:?}"
            );
        }
        (Method::Set, Op::Set { value, ttl, .. }) => {
            assert!(value.len() as u64 <= limits.max_value_bytes);
            assert!(*ttl <= Duration::from_secs(MAX_TTL_SECONDS));
        }
        (Method::Delete, Op::Delete { .. }) => {}
        (Method::Mutate, Op::Mutate { mutation, .. }) => {
            match mutation {
                Mutation::Set { value, .. } => {
                    assert!(value.len() as u64 <= limits.max_value_bytes)
                }
                Mutation::Append { suffix } => {
                    assert!(suffix.len() as u64 <= limits.max_value_bytes)
                }
                _ => {}
            }
            // What a forwarding node would send decodes to the same op.
            let again = cache::encode_mutate_request(key, mutation, forwarded).to_bytes();
            let again = again.slice(frame::PREFIX_LEN..);
            let decoded = cache::decode_request(Method::Mutate, again, limits);
            assert!(
                matches!(&decoded, Ok(CallRequest { op: Op::Mutate { mutation: m, .. }, .. }) if m == mutation),
                "re-encoded Mutate: {decoded:?}"
            );
        }
        (Method::Replicate, Op::Replicate { update, .. }) => {
            assert!(forwarded, "a replica update always has node scope");
            if let ReplicaUpdate::Put { value, .. } = update {
                assert!(value.len() as u64 <= limits.max_value_bytes);
            }
        }
        (method, op) => panic!("{method:?} decoded into {op:?}"),
    }
}

/// The origin's HTTP/1.1 response, with and without EOF, at several
/// limits.
pub fn origin_response(data: &[u8]) {
    for limit in [0, 8, 4096, 1 << 20] {
        let open = origin::parse_response(data, false, limit);
        let closed = origin::parse_response(data, true, limit);
        for (result, eof) in [(&open, false), (&closed, true)] {
            match result {
                Ok(Parsed::Incomplete) => assert!(!eof, "incomplete at EOF"),
                Ok(Parsed::NotFound) => {}
                Ok(Parsed::Found(Body::Span(span))) => {
                    assert!(span.start <= span.end && span.end <= data.len(), "{span:?}");
                    assert!(span.len() as u64 <= limit);
                }
                Ok(Parsed::Found(Body::Decoded(body))) => {
                    assert!(body.len() as u64 <= limit);
                    assert!(body.len() < data.len());
                }
                Err(Bad::Status(status)) => {
                    assert!(![200, 404].contains(status), "{status}");
                    assert!(*status == 101 || !(100..200).contains(status), "{status}");
                }
                Err(Bad::TooLarge) => {}
                Err(Bad::Protocol(reason)) => check_one_line(reason),
            }
        }
        // What is decided before EOF stays decided when EOF comes.
        match &open {
            Ok(Parsed::Incomplete) => {}
            Ok(_) => assert_eq!(open, closed, "changed at EOF"),
            Err(_) => assert!(closed.is_err(), "error before EOF, {closed:?} at EOF"),
        }
        if let Ok(Parsed::Found(body)) = closed {
            let value = body.into_bytes(data);
            assert!(value.len() as u64 <= limit);
        }
    }
}

/// RESP framing limits: tiny ones reach the refusals with short inputs,
/// the defaults are what nodes run with; each also before authentication.
const RESP_LIMITS: [resp::Limits; 4] = [
    resp::Limits {
        max_bulk_bytes: 16,
        max_args: 8,
        authenticated: true,
    },
    resp::Limits {
        max_bulk_bytes: 16,
        max_args: 8,
        authenticated: false,
    },
    resp::Limits {
        max_bulk_bytes: 1 << 20,
        max_args: resp::parse::MAX_ARGS,
        authenticated: true,
    },
    resp::Limits {
        max_bulk_bytes: 1 << 20,
        max_args: resp::parse::MAX_ARGS,
        authenticated: false,
    },
];

const RESP_COMMAND_LIMITS: [CommandLimits; 2] = [
    CommandLimits {
        max_key_bytes: 8,
        max_value_bytes: 16,
    },
    CommandLimits {
        max_key_bytes: 250,
        max_value_bytes: 1 << 20,
    },
];

/// What a RESP connection makes of a byte stream: the requests it split
/// off, then how it stopped (waiting for more, or a protocol error), and
/// how many bytes it consumed.
type RespOutcome = (
    Vec<Vec<Bytes>>,
    Result<resp::Parsed, resp::ProtocolError>,
    usize,
);

/// RESP requests, pipelined, as the connection reads them (multibulk and
/// inline), then the typed command parse of each. Checks: no panic;
/// consumed <= input; argument counts and bulk lengths within the limits;
/// the same requests and the same ending whatever the read sizes; a
/// request re-encoded as multibulk parses back to the same arguments; a
/// command written back with `to_args` parses to the same command; errors
/// are one line.
pub fn resp_parse(data: &[u8]) {
    for (index, limits) in RESP_LIMITS.iter().enumerate() {
        let whole = resp_in_reads(data, data.len().max(1), limits);
        let (requests, ending, consumed) = &whole;
        assert!(
            *consumed <= data.len(),
            "consumed {consumed} of {}",
            data.len()
        );
        match ending {
            Ok(resp::Parsed::Incomplete { needed }) => {
                if let Some(needed) = needed {
                    assert!(*needed > 0);
                    assert!(*needed as u64 <= limits.max_bulk_bytes + 2, "{needed}");
                }
            }
            Ok(resp::Parsed::Request(_)) => panic!("a request left in the ending"),
            Err(e) => {
                assert!(e.closes_connection());
                check_one_line(&e.to_string());
            }
        }
        for args in requests {
            check_resp_request(args, limits);
        }
        // Reads of a few bytes: the parser resumes where it stopped. (Reads
        // of one byte cost a parse call per byte: only for the tiny
        // authenticated and the default unauthenticated limits.)
        if ![0, 3].contains(&index) {
            continue;
        }
        let steps: &[usize] = if data.len() <= 512 {
            &[1, 7, 64]
        } else {
            &[61, 509]
        };
        for &step in steps {
            let split = resp_in_reads(data, step, limits);
            assert_eq!(split, whole, "reads of {step} bytes");
        }
    }
}

fn resp_in_reads(data: &[u8], step: usize, limits: &resp::Limits) -> RespOutcome {
    let mut parser = RequestParser::new();
    let mut buf = bytes::BytesMut::new();
    let mut requests = Vec::new();
    let mut fed = 0;
    loop {
        match parser.parse(&mut buf, limits) {
            Ok(resp::Parsed::Request(args)) => requests.push(args),
            Ok(resp::Parsed::Incomplete { .. }) if fed < data.len() => {
                let end = (fed + step).min(data.len());
                buf.extend_from_slice(&data[fed..end]);
                fed = end;
            }
            ending => {
                let consumed = fed - buf.len();
                return (requests, ending, consumed);
            }
        }
    }
}

fn check_resp_request(args: &[Bytes], limits: &resp::Limits) {
    assert!(!args.is_empty(), "an empty request was returned");
    let (max_args, max_bulk) = if limits.authenticated {
        (limits.max_args, limits.max_bulk_bytes)
    } else {
        (
            limits.max_args.min(resp::parse::UNAUTHENTICATED_MAX_ARGS),
            limits
                .max_bulk_bytes
                .min(resp::parse::UNAUTHENTICATED_MAX_BULK),
        )
    };
    // Inline requests are bounded by their line instead.
    let inline_bound = resp::parse::MAX_INLINE_BYTES as u64;
    assert!(args.len() <= max_args.max(resp::parse::MAX_INLINE_BYTES / 2 + 1));
    for arg in args {
        assert!(arg.len() as u64 <= max_bulk.max(inline_bound));
    }
    // Re-encoded as multibulk, the request parses back alone and whole.
    let mut wire = bytes::BytesMut::new();
    resp::encode_request(args, &mut wire);
    let wire_len = wire.len();
    let generous = resp::Limits::new(u64::MAX);
    let again = RequestParser::new().parse(&mut wire, &generous);
    assert_eq!(
        again,
        Ok(resp::Parsed::Request(args.to_vec())),
        "re-encoded"
    );
    assert!(wire.is_empty(), "{} of {wire_len} bytes left", wire.len());

    for limits in &RESP_COMMAND_LIMITS {
        match RespCommand::parse(args, limits) {
            Ok(command) => {
                let canonical = command.to_args();
                let reparsed = RespCommand::parse(&canonical, limits);
                assert_eq!(reparsed.as_ref(), Ok(&command), "to_args {canonical:?}");
                assert!(resp::table::lookup_full_name(command.name().as_bytes()).is_some());
                check_resp_command(&command, limits);
            }
            Err(e) => {
                check_one_line(&e.to_string());
                assert_eq!(e.closes_connection(), !e.replies());
            }
        }
    }
}

fn check_resp_command(command: &RespCommand, limits: &CommandLimits) {
    use nexuscache::resp::command::Expiry;
    let key_ok = |key: &[u8]| !key.is_empty() && key.len() <= limits.max_key_bytes;
    let value_ok = |value: &[u8]| value.len() as u64 <= limits.max_value_bytes;
    let expiry_ok = |expiry: &Option<Expiry>| match expiry {
        Some(Expiry::Ex(n) | Expiry::ExAt(n)) => *n > 0 && *n <= i64::MAX as u64 / 1000,
        Some(Expiry::Px(n) | Expiry::PxAt(n)) => *n > 0 && *n <= i64::MAX as u64,
        _ => true,
    };
    match command {
        RespCommand::Set {
            key, value, expiry, ..
        }
        | RespCommand::SetHot { key, value, expiry } => {
            assert!(key_ok(key) && value_ok(value) && expiry_ok(expiry));
            assert!(!matches!(expiry, Some(Expiry::Persist)));
        }
        RespCommand::GetEx { key, expiry } => {
            assert!(key_ok(key) && expiry_ok(expiry));
            assert!(!matches!(expiry, Some(Expiry::KeepTtl)));
        }
        RespCommand::MSet { pairs } => {
            assert!(!pairs.is_empty());
            assert!(pairs.iter().all(|(k, v)| key_ok(k) && value_ok(v)));
        }
        RespCommand::MGet { keys } | RespCommand::Del { keys } | RespCommand::Exists { keys } => {
            assert!(!keys.is_empty() && keys.iter().all(|k| key_ok(k)));
        }
        RespCommand::Get { key }
        | RespCommand::GetDel { key }
        | RespCommand::StrLen { key }
        | RespCommand::Type { key }
        | RespCommand::Ttl { key, .. }
        | RespCommand::Persist { key }
        | RespCommand::Owner { key }
        | RespCommand::IncrBy { key, .. }
        | RespCommand::Expire { key, .. } => assert!(key_ok(key)),
        RespCommand::SetNx { key, value } | RespCommand::Append { key, value } => {
            assert!(key_ok(key) && value_ok(value))
        }
        // Connection and server commands carry nothing sized.
        _ => {}
    }
}

/// A reason that goes into a log line or a response line.
fn check_one_line(text: &str) {
    assert!(!text.contains(['\r', '\n']), "{text:?}");
}
