//! The `nexuscache.v1.Cache` service on the wire, both sides, no I/O.
//!
//! Server: [`Method::from_path`] -> [`decode_request`] (decode and
//! validate into an [`Op`]) -> the core runs it -> [`encode_reply`].
//! Client: `encode_*_request` -> the peer answers -> `decode_*_response`.
//!
//! Every message is a generated [`wire`] type (the schema is
//! `proto/nexuscache/v1/cache.proto` and nowhere else). Values travel as
//! reference-counted [`Bytes`] end to end: a large value is sliced out of
//! the received frame, not copied, and is sent as its own chunk after the
//! rest of its message rather than copied into an encode buffer (protobuf
//! fields may come in any order; prost and every gRPC library accept it).

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;

use super::frame::{prefix, PREFIX_LEN};
use super::wire;
use crate::error::ApiError;
use crate::ops::{Hit, Limits, Op, ReplicaUpdate, Reply, MAX_TTL_SECONDS};

/// Fully qualified service name, as in request paths.
pub const SERVICE: &str = "nexuscache.v1.Cache";
/// The node-to-node service (replica updates).
pub const PEER_SERVICE: &str = "nexuscache.v1.Peer";
/// Room for the non-value fields of a request on top of the key and value
/// limits.
pub const MESSAGE_OVERHEAD: usize = 1024;
/// Values up to this size are copied into the message head (one DATA
/// frame); larger ones are sent as their own chunk, without a copy.
const INLINE_VALUE_MAX: usize = 4096;

/// A method of the Cache service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Set,
    Delete,
    Mutate,
    /// `nexuscache.v1.Peer/Replicate`: node to node only.
    Replicate,
    /// `nexuscache.v1.Peer/Stats`: node to node only (how many entries
    /// the node holds, for a cluster-wide `DBSIZE`).
    Stats,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Get,
        Method::Set,
        Method::Delete,
        Method::Mutate,
        Method::Replicate,
        Method::Stats,
    ];

    /// The method a request path names, `None` for anything else.
    pub fn from_path(path: &str) -> Option<Method> {
        match path {
            "/nexuscache.v1.Cache/Get" => Some(Method::Get),
            "/nexuscache.v1.Cache/Set" => Some(Method::Set),
            "/nexuscache.v1.Cache/Delete" => Some(Method::Delete),
            "/nexuscache.v1.Cache/Mutate" => Some(Method::Mutate),
            "/nexuscache.v1.Peer/Replicate" => Some(Method::Replicate),
            "/nexuscache.v1.Peer/Stats" => Some(Method::Stats),
            _ => None,
        }
    }

    /// The request path (`:path`).
    pub fn path(self) -> &'static str {
        match self {
            Method::Get => "/nexuscache.v1.Cache/Get",
            Method::Set => "/nexuscache.v1.Cache/Set",
            Method::Delete => "/nexuscache.v1.Cache/Delete",
            Method::Mutate => "/nexuscache.v1.Cache/Mutate",
            Method::Replicate => "/nexuscache.v1.Peer/Replicate",
            Method::Stats => "/nexuscache.v1.Peer/Stats",
        }
    }

    /// The service the method belongs to.
    pub fn service(self) -> &'static str {
        match self {
            Method::Replicate | Method::Stats => PEER_SERVICE,
            _ => SERVICE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "Get",
            Method::Set => "Set",
            Method::Delete => "Delete",
            Method::Mutate => "Mutate",
            Method::Replicate => "Replicate",
            Method::Stats => "Stats",
        }
    }

    /// Whether only another node of the cluster may call it (the server
    /// refuses it from its path, before reading the message, from a caller
    /// without the cluster secret).
    pub fn is_peer_only(self) -> bool {
        self.service() == PEER_SERVICE
    }
}

/// Largest request message accepted: anything bigger cannot be valid.
pub fn max_message_bytes(limits: &Limits) -> usize {
    let value = usize::try_from(limits.max_value_bytes).unwrap_or(usize::MAX);
    value
        .saturating_add(limits.max_key_bytes)
        .saturating_add(MESSAGE_OVERHEAD)
}

/// A decoded, validated request.
#[derive(Debug)]
pub struct CallRequest {
    pub op: Op,
    /// Sent by a node forwarding to this one: run here, never forward again.
    pub forwarded: bool,
    /// The first node-to-node flag the message set (`forwarded = true` or
    /// `keep_copy = true`), whatever else it says: only a caller that
    /// proved the cluster secret may send one, and the server refuses the
    /// call otherwise rather than clearing the flag.
    pub peer_flag: Option<&'static str>,
}

/// How [`CallRequest::peer_flag`] names a flag.
fn peer_flag(forwarded: bool, keep_copy: bool) -> Option<&'static str> {
    if forwarded {
        Some("forwarded = true")
    } else if keep_copy {
        Some("keep_copy = true")
    } else {
        None
    }
}

/// Milliseconds from `now` until `expires_at`, rounded up so a copy never
/// outlives its original; 0 (the wire's "never") only for `None`.
pub fn expires_in_ms(expires_at: Option<Instant>, now: Instant) -> u64 {
    match expires_at {
        None => 0,
        Some(at) => {
            let left = at.saturating_duration_since(now);
            let ms = left.as_millis() + u128::from(left.subsec_nanos() % 1_000_000 > 0);
            u64::try_from(ms).unwrap_or(u64::MAX).max(1)
        }
    }
}

/// The inverse of [`expires_in_ms`] on the receiving node.
pub fn expires_at(expires_in_ms: u64, now: Instant) -> Option<Instant> {
    (expires_in_ms > 0).then(|| {
        now.checked_add(Duration::from_millis(expires_in_ms))
            .unwrap_or(now + Duration::from_secs(MAX_TTL_SECONDS))
    })
}

/// Decodes the message of a `method` call and checks it against `limits`.
pub fn decode_request(
    method: Method,
    message: Bytes,
    limits: &Limits,
) -> Result<CallRequest, ApiError> {
    let malformed = |e: prost::DecodeError| {
        ApiError::Malformed(format!("cannot decode {} request: {e}", method.name()))
    };
    match method {
        Method::Get => {
            let req = wire::GetRequest::decode(message).map_err(malformed)?;
            Ok(CallRequest {
                op: Op::Get {
                    key: checked_key(req.key, limits)?,
                    keep_copy: req.forwarded && req.keep_copy,
                },
                forwarded: req.forwarded,
                peer_flag: peer_flag(req.forwarded, req.keep_copy),
            })
        }
        Method::Set => {
            let req = wire::SetRequest::decode(message).map_err(malformed)?;
            let key = checked_key(req.key, limits)?;
            if req.ttl_seconds > MAX_TTL_SECONDS {
                return Err(ApiError::invalid(
                    "ttl_seconds",
                    format!(
                        "{} is over the maximum of {MAX_TTL_SECONDS} (three days)",
                        req.ttl_seconds
                    ),
                ));
            }
            limits.check_value(req.value.len())?;
            Ok(CallRequest {
                op: Op::Set {
                    key,
                    value: req.value,
                    ttl: Duration::from_secs(req.ttl_seconds),
                    hot: req.hot,
                },
                forwarded: req.forwarded,
                peer_flag: peer_flag(req.forwarded, false),
            })
        }
        Method::Delete => {
            let req = wire::DeleteRequest::decode(message).map_err(malformed)?;
            Ok(CallRequest {
                op: Op::Delete {
                    key: checked_key(req.key, limits)?,
                },
                forwarded: req.forwarded,
                peer_flag: peer_flag(req.forwarded, false),
            })
        }
        Method::Mutate => {
            let decoded = super::mutate::decode_request(message, limits)?;
            Ok(CallRequest {
                op: Op::Mutate {
                    key: checked_key(decoded.key, limits)?,
                    mutation: decoded.mutation,
                },
                forwarded: decoded.forwarded,
                peer_flag: peer_flag(decoded.forwarded, false),
            })
        }
        Method::Replicate => {
            let req = wire::ReplicateRequest::decode(message).map_err(malformed)?;
            let key = checked_key(req.key, limits)?;
            let update = if req.remove {
                ReplicaUpdate::Remove
            } else {
                limits.check_value(req.value.len())?;
                ReplicaUpdate::Put {
                    value: req.value,
                    expires_at: expires_at(req.expires_in_ms, Instant::now()),
                }
            };
            // Only an owner sends it, about a key it owns: always node scope.
            Ok(CallRequest {
                op: Op::Replicate { key, update },
                forwarded: true,
                // The whole method is peer-only; the server refuses it from
                // its path, before the body.
                peer_flag: None,
            })
        }
        Method::Stats => {
            wire::StatsRequest::decode(message).map_err(malformed)?;
            // One core's snapshot per op; the server asks every core and
            // answers their sum ([`encode_stats_response`]).
            Ok(CallRequest {
                op: Op::Snapshot,
                forwarded: true,
                peer_flag: None,
            })
        }
    }
}

fn checked_key(key: Bytes, limits: &Limits) -> Result<Box<[u8]>, ApiError> {
    limits.check_key(&key)?;
    Ok(Box::from(&key[..]))
}

/// The response message for the reply a core gave to a `method` op, or the
/// error to answer with instead (each method takes its own typed answer).
pub fn encode_reply(method: Method, reply: Reply) -> Result<FramedMessage, ApiError> {
    Ok(match method {
        Method::Get => match reply.into_get()? {
            Some(hit) => framed_with_value(
                &wire::GetResponse {
                    found: true,
                    hot: hit.hot,
                    expires_in_ms: expires_in_ms(hit.expires_at, Instant::now()),
                    ..Default::default()
                },
                GET_RESPONSE_VALUE_TAG,
                &hit.value,
            ),
            None => framed(&wire::GetResponse::default()),
        },
        Method::Set => {
            reply.into_stored()?;
            framed(&wire::SetResponse {})
        }
        Method::Replicate => {
            reply.into_stored()?;
            framed(&wire::ReplicateResponse {})
        }
        Method::Delete => framed(&wire::DeleteResponse {
            deleted: reply.into_deleted()?,
        }),
        Method::Mutate => framed(&super::mutate::encode_response(reply.into_mutated()?)),
        Method::Stats => match reply.failure()? {
            Reply::Snapshot(snapshot) => encode_stats_response(snapshot.0.items),
            _ => {
                return Err(ApiError::Internal(
                    "the core answered a stats request with something other than a snapshot"
                        .to_owned(),
                ))
            }
        },
    })
}

/// Server side: a framed `StatsResponse` holding `items` (the node's sum
/// over its cores).
pub fn encode_stats_response(items: u64) -> FramedMessage {
    framed(&wire::StatsResponse { items })
}

/// Client side: a framed (empty) `StatsRequest`.
pub fn encode_stats_request() -> FramedMessage {
    framed(&wire::StatsRequest {})
}

/// Client side: the entries the peer holds.
pub fn decode_stats_response(message: Bytes) -> Result<u64, prost::DecodeError> {
    wire::StatsResponse::decode(message).map(|r| r.items)
}

/// Client side: a framed `GetRequest`.
pub fn encode_get_request(key: &[u8], forwarded: bool, keep_copy: bool) -> FramedMessage {
    framed(&wire::GetRequest {
        key: Bytes::copy_from_slice(key),
        forwarded,
        keep_copy,
    })
}

/// Client side: a framed `ReplicateRequest`; a large value is not copied.
pub fn encode_replicate_request(key: &[u8], update: &ReplicaUpdate) -> FramedMessage {
    match update {
        ReplicaUpdate::Remove => framed(&wire::ReplicateRequest {
            key: Bytes::copy_from_slice(key),
            remove: true,
            ..Default::default()
        }),
        ReplicaUpdate::Put { value, expires_at } => framed_with_value(
            &wire::ReplicateRequest {
                key: Bytes::copy_from_slice(key),
                expires_in_ms: expires_in_ms(*expires_at, Instant::now()),
                ..Default::default()
            },
            REPLICATE_REQUEST_VALUE_TAG,
            value,
        ),
    }
}

/// Client side: a `ReplicateResponse` has no fields; this checks it parses.
pub fn decode_replicate_response(message: Bytes) -> Result<(), prost::DecodeError> {
    wire::ReplicateResponse::decode(message).map(drop)
}

/// Client side: a framed `SetRequest`; a large value is not copied.
pub fn encode_set_request(
    key: &[u8],
    value: &Bytes,
    ttl_seconds: u64,
    hot: bool,
    forwarded: bool,
) -> FramedMessage {
    framed_with_value(
        &wire::SetRequest {
            key: Bytes::copy_from_slice(key),
            ttl_seconds,
            hot,
            forwarded,
            ..Default::default()
        },
        SET_REQUEST_VALUE_TAG,
        value,
    )
}

/// Client side: a framed `MutateRequest`.
pub fn encode_mutate_request(
    key: &[u8],
    mutation: &crate::mutation::Mutation,
    forwarded: bool,
) -> FramedMessage {
    framed(&super::mutate::encode_request(key, mutation, forwarded))
}

/// Client side: a framed `DeleteRequest`.
pub fn encode_delete_request(key: &[u8], forwarded: bool) -> FramedMessage {
    framed(&wire::DeleteRequest {
        key: Bytes::copy_from_slice(key),
        forwarded,
    })
}

/// Client side: the hit (its expiry turned into this node's clock), or
/// `None` for a miss.
pub fn decode_get_response(message: Bytes) -> Result<Option<Hit>, prost::DecodeError> {
    let resp = wire::GetResponse::decode(message)?;
    Ok(resp.found.then(|| Hit {
        value: resp.value,
        hot: resp.hot,
        expires_at: expires_at(resp.expires_in_ms, Instant::now()),
    }))
}

/// Client side: a `SetResponse` has no fields; this checks it parses.
pub fn decode_set_response(message: Bytes) -> Result<(), prost::DecodeError> {
    wire::SetResponse::decode(message).map(drop)
}

/// Client side: whether a live entry was removed.
pub fn decode_delete_response(message: Bytes) -> Result<bool, prost::DecodeError> {
    wire::DeleteResponse::decode(message).map(|r| r.deleted)
}

/// One length-prefixed message as a list of buffers to send in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FramedMessage {
    chunks: Vec<Bytes>,
}

impl FramedMessage {
    /// Bytes on the wire, prefix included.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// The whole message in one buffer (copies when there are several chunks).
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [one] => one.clone(),
            chunks => {
                let mut all = BytesMut::with_capacity(self.len());
                for c in chunks {
                    all.put_slice(c);
                }
                all.freeze()
            }
        }
    }
}

/// The field number of the value in the messages that carry one, for
/// [`framed_with_value`]; the tests check each against the generated type.
const GET_RESPONSE_VALUE_TAG: u32 = 2;
const SET_REQUEST_VALUE_TAG: u32 = 2;
const REPLICATE_REQUEST_VALUE_TAG: u32 = 3;

/// `message` with its length prefix, in one buffer.
fn framed(message: &impl Message) -> FramedMessage {
    FramedMessage {
        chunks: vec![super::frame::encode(message)],
    }
}

/// `head` (a message whose value field is left empty) followed by the value
/// field `tag` holding `value`. A value over [`INLINE_VALUE_MAX`] becomes a
/// chunk of its own, shared with the caller rather than copied.
fn framed_with_value(head: &impl Message, tag: u32, value: &Bytes) -> FramedMessage {
    let head_len = head.encoded_len();
    let field_head = if value.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(value.len() as u64)
    };
    let body_len = head_len + field_head + value.len();
    let inline = value.len() <= INLINE_VALUE_MAX;
    let mut buf = BytesMut::with_capacity(
        PREFIX_LEN + head_len + field_head + if inline { value.len() } else { 0 },
    );
    buf.put_slice(&prefix(body_len));
    // Cannot fail: the buffer has room for `encoded_len` bytes.
    let _ = head.encode(&mut buf);
    if value.is_empty() {
        return FramedMessage {
            chunks: vec![buf.freeze()],
        };
    }
    encode_key(tag, WireType::LengthDelimited, &mut buf);
    encode_varint(value.len() as u64, &mut buf);
    if inline {
        buf.put_slice(value);
        FramedMessage {
            chunks: vec![buf.freeze()],
        }
    } else {
        FramedMessage {
            chunks: vec![buf.freeze(), value.clone()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::frame;
    use crate::proto;

    const LIMITS: Limits = Limits {
        max_key_bytes: 8,
        max_value_bytes: 16,
    };

    fn hit(value: Bytes, hot: bool) -> Hit {
        Hit {
            value,
            hot,
            expires_at: None,
        }
    }

    #[test]
    fn expiry_travels_as_milliseconds_rounded_up() {
        let now = Instant::now();
        assert_eq!(expires_in_ms(None, now), 0);
        assert_eq!(expires_in_ms(Some(now), now), 1);
        assert_eq!(expires_in_ms(Some(now - Duration::from_secs(1)), now), 1);
        assert_eq!(
            expires_in_ms(Some(now + Duration::from_micros(1500)), now),
            2
        );
        assert_eq!(expires_in_ms(Some(now + Duration::from_secs(3)), now), 3000);
        assert_eq!(expires_at(0, now), None);
        assert_eq!(expires_at(250, now), Some(now + Duration::from_millis(250)));
        let later = now + Duration::from_secs(2);
        let framed = encode_reply(
            Method::Get,
            Reply::Value(Some(Hit {
                value: Bytes::from_static(b"v"),
                hot: false,
                expires_at: Some(later),
            })),
        )
        .unwrap();
        let back = decode_get_response(body(&framed)).unwrap().unwrap();
        let at = back.expires_at.unwrap();
        assert!(at >= later && at <= Instant::now() + Duration::from_millis(2001));
    }

    #[test]
    fn replicate_requests_match_prost_and_decode_to_ops() {
        use crate::grpc::status::Code;
        let put = ReplicaUpdate::Put {
            value: Bytes::from_static(b"val"),
            expires_at: None,
        };
        let theirs = proto::ReplicateRequest {
            key: b"k".to_vec(),
            remove: false,
            value: b"val".to_vec(),
            expires_in_ms: 0,
        };
        assert_eq!(
            proto::ReplicateRequest::decode(body(&encode_replicate_request(b"k", &put))).unwrap(),
            theirs
        );
        let remove = encode_replicate_request(b"k", &ReplicaUpdate::Remove);
        let request = decode_request(Method::Replicate, body(&remove), &LIMITS).unwrap();
        assert!(request.forwarded);
        assert!(matches!(
            request.op,
            Op::Replicate {
                update: ReplicaUpdate::Remove,
                ..
            }
        ));
        let request = decode_request(Method::Replicate, body(&put_framed()), &LIMITS).unwrap();
        match request.op {
            Op::Replicate {
                key,
                update: ReplicaUpdate::Put { value, expires_at },
            } => {
                assert_eq!((&*key, &value[..]), (&b"k"[..], &b"val"[..]));
                assert!(expires_at.is_some());
            }
            other => panic!("unexpected {other:?}"),
        }
        let too_big = encode_replicate_request(
            b"k",
            &ReplicaUpdate::Put {
                value: Bytes::from(vec![0u8; 17]),
                expires_at: None,
            },
        );
        assert_eq!(
            decode_request(Method::Replicate, body(&too_big), &LIMITS)
                .unwrap_err()
                .grpc_code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            encode_reply(Method::Replicate, Reply::Stored)
                .unwrap()
                .to_bytes(),
            frame::encode(&proto::ReplicateResponse {})
        );
    }

    #[test]
    fn stats_is_peer_only_and_round_trips_with_prost() {
        assert!(Method::Stats.is_peer_only() && Method::Replicate.is_peer_only());
        assert!(!Method::Get.is_peer_only() && !Method::Mutate.is_peer_only());
        assert_eq!(Method::Stats.path(), "/nexuscache.v1.Peer/Stats");
        let request =
            decode_request(Method::Stats, body(&encode_stats_request()), &LIMITS).unwrap();
        assert!(matches!(request.op, Op::Snapshot) && request.forwarded);
        assert!(decode_request(Method::Stats, Bytes::from_static(b"\xff"), &LIMITS).is_err());
        let framed = encode_stats_response(1_234_567);
        assert_eq!(
            proto::StatsResponse::decode(body(&framed)).unwrap(),
            proto::StatsResponse { items: 1_234_567 }
        );
        assert_eq!(decode_stats_response(body(&framed)).unwrap(), 1_234_567);
        assert!(encode_reply(Method::Stats, Reply::Stored).is_err());
    }

    fn put_framed() -> FramedMessage {
        encode_replicate_request(
            b"k",
            &ReplicaUpdate::Put {
                value: Bytes::from_static(b"val"),
                expires_at: Some(Instant::now() + Duration::from_secs(5)),
            },
        )
    }

    fn body(framed: &FramedMessage) -> Bytes {
        let all = framed.to_bytes();
        let mut d = frame::UnaryDecoder::new(usize::MAX);
        d.push(all).unwrap();
        d.finish().unwrap()
    }

    #[test]
    fn node_to_node_flags_are_reported_never_dropped() {
        let get = |forwarded, keep_copy| {
            let framed = encode_get_request(b"k", forwarded, keep_copy);
            decode_request(Method::Get, body(&framed), &LIMITS).unwrap()
        };
        assert_eq!(get(false, false).peer_flag, None);
        assert_eq!(get(true, false).peer_flag, Some("forwarded = true"));
        // keep_copy alone used to be cleared silently; it is reported now.
        let lone_keep_copy = get(false, true);
        assert_eq!(lone_keep_copy.peer_flag, Some("keep_copy = true"));
        assert!(!lone_keep_copy.forwarded);
        assert_eq!(get(true, true).peer_flag, Some("forwarded = true"));
        let set = encode_set_request(b"k", &Bytes::from_static(b"v"), 0, false, true);
        let set = decode_request(Method::Set, body(&set), &LIMITS).unwrap();
        assert_eq!(set.peer_flag, Some("forwarded = true"));
        let delete = decode_request(
            Method::Delete,
            body(&encode_delete_request(b"k", false)),
            &LIMITS,
        )
        .unwrap();
        assert_eq!(delete.peer_flag, None);
    }

    #[test]
    fn paths_round_trip() {
        for m in Method::ALL {
            assert_eq!(Method::from_path(m.path()), Some(m));
            assert_eq!(m.path(), format!("/{}/{}", m.service(), m.name()));
        }
        assert_eq!(Method::from_path("/nexuscache.v1.Cache/Nope"), None);
        assert_eq!(Method::from_path("/nexuscache.v1.Cache/get"), None);
    }

    #[test]
    fn message_limit_covers_key_value_and_overhead() {
        assert_eq!(max_message_bytes(&LIMITS), 8 + 16 + 1024);
    }

    #[test]
    fn client_encoders_decode_as_the_generated_messages() {
        let big = Bytes::from(vec![7u8; INLINE_VALUE_MAX + 1]);
        for value in [Bytes::new(), Bytes::from_static(b"v"), big] {
            for (ttl, hot, fwd) in [
                (0, false, false),
                (300, true, true),
                (u64::MAX, false, true),
            ] {
                let ours = encode_set_request(b"key", &value, ttl, hot, fwd);
                let theirs = proto::SetRequest {
                    key: b"key".to_vec(),
                    value: value.to_vec(),
                    ttl_seconds: ttl,
                    hot,
                    forwarded: fwd,
                };
                assert_eq!(proto::SetRequest::decode(body(&ours)).unwrap(), theirs);
                assert_eq!(ours.len(), ours.to_bytes().len());
            }
        }
        for fwd in [false, true] {
            for keep_copy in [false, true] {
                let theirs = frame::encode(&proto::GetRequest {
                    key: b"k".to_vec(),
                    forwarded: fwd,
                    keep_copy,
                });
                assert_eq!(encode_get_request(b"k", fwd, keep_copy).to_bytes(), theirs);
            }
            let theirs = frame::encode(&proto::DeleteRequest {
                key: b"k".to_vec(),
                forwarded: fwd,
            });
            assert_eq!(encode_delete_request(b"k", fwd).to_bytes(), theirs);
        }
    }

    #[test]
    fn value_tags_are_the_generated_messages_own() {
        let key_of = |tag: u32| ((tag << 3) | 2) as u8;
        let value = Bytes::from_static(b"x");
        let first = |bytes: Vec<u8>| bytes[0];
        assert_eq!(
            first(
                wire::GetResponse {
                    value: value.clone(),
                    ..Default::default()
                }
                .encode_to_vec()
            ),
            key_of(GET_RESPONSE_VALUE_TAG)
        );
        assert_eq!(
            first(
                wire::SetRequest {
                    value: value.clone(),
                    ..Default::default()
                }
                .encode_to_vec()
            ),
            key_of(SET_REQUEST_VALUE_TAG)
        );
        assert_eq!(
            first(
                wire::ReplicateRequest {
                    value,
                    ..Default::default()
                }
                .encode_to_vec()
            ),
            key_of(REPLICATE_REQUEST_VALUE_TAG)
        );
    }

    #[test]
    fn large_values_are_sent_without_a_copy() {
        let big = Bytes::from(vec![1u8; INLINE_VALUE_MAX * 2]);
        let framed = encode_set_request(b"k", &big, 0, false, true);
        assert!(framed.chunks().iter().any(|c| c.as_ptr() == big.as_ptr()));
        let reply = encode_reply(Method::Get, Reply::Value(Some(hit(big.clone(), false)))).unwrap();
        assert!(reply.chunks().iter().any(|c| c.as_ptr() == big.as_ptr()));
        assert_eq!(framed.len(), framed.to_bytes().len());
    }

    #[test]
    fn replies_decode_as_the_generated_messages() {
        let big = Bytes::from(vec![9u8; INLINE_VALUE_MAX + 10]);
        for (value, hot) in [
            (Bytes::from_static(b"v"), true),
            (Bytes::new(), false),
            (big, false),
        ] {
            let ours =
                encode_reply(Method::Get, Reply::Value(Some(hit(value.clone(), hot)))).unwrap();
            let theirs = proto::GetResponse {
                found: true,
                value: value.to_vec(),
                hot,
                expires_in_ms: 0,
            };
            assert_eq!(proto::GetResponse::decode(body(&ours)).unwrap(), theirs);
            assert_eq!(
                decode_get_response(body(&ours)).unwrap(),
                Some(hit(value, hot))
            );
        }
        let miss = encode_reply(Method::Get, Reply::Value(None)).unwrap();
        assert_eq!(
            miss.to_bytes(),
            frame::encode(&proto::GetResponse::default())
        );
        assert_eq!(decode_get_response(body(&miss)).unwrap(), None);

        let stored = encode_reply(Method::Set, Reply::Stored).unwrap();
        assert_eq!(stored.to_bytes(), frame::encode(&proto::SetResponse {}));
        decode_set_response(body(&stored)).unwrap();

        for deleted in [false, true] {
            let ours = encode_reply(Method::Delete, Reply::Deleted(deleted)).unwrap();
            assert_eq!(
                ours.to_bytes(),
                frame::encode(&proto::DeleteResponse { deleted })
            );
            assert_eq!(decode_delete_response(body(&ours)).unwrap(), deleted);
        }
    }

    #[test]
    fn reply_errors_become_statuses() {
        use crate::grpc::status::{Code, Status};
        let err = encode_reply(Method::Set, Reply::TooLarge("too big".into())).unwrap_err();
        assert_eq!(Status::from(err).code, Code::ResourceExhausted);
        let err = encode_reply(Method::Get, Reply::Unavailable).unwrap_err();
        assert_eq!(Status::from(err).code, Code::Unavailable);
        let err = encode_reply(Method::Get, Reply::Stored).unwrap_err();
        assert_eq!(Status::from(err).code, Code::Internal);
    }

    fn decode(method: Method, msg: &impl prost::Message) -> Result<CallRequest, ApiError> {
        decode_request(method, Bytes::from(msg.encode_to_vec()), &LIMITS)
    }

    #[test]
    fn valid_requests_become_ops() {
        let req = decode(
            Method::Get,
            &proto::GetRequest {
                key: b"k".to_vec(),
                forwarded: true,
                keep_copy: false,
            },
        )
        .unwrap();
        assert!(req.forwarded);
        assert!(matches!(req.op, Op::Get { ref key, keep_copy: false } if &key[..] == b"k"));

        let req = decode(
            Method::Set,
            &proto::SetRequest {
                key: b"k".to_vec(),
                value: b"value".to_vec(),
                ttl_seconds: MAX_TTL_SECONDS,
                hot: true,
                forwarded: false,
            },
        )
        .unwrap();
        assert!(!req.forwarded);
        match req.op {
            Op::Set {
                key,
                value,
                ttl,
                hot,
            } => {
                assert_eq!(&key[..], b"k");
                assert_eq!(value, Bytes::from_static(b"value"));
                assert_eq!(ttl, Duration::from_secs(MAX_TTL_SECONDS));
                assert!(hot);
            }
            other => panic!("{other:?}"),
        }

        let req = decode(
            Method::Delete,
            &proto::DeleteRequest {
                key: vec![b'x'; 8],
                forwarded: false,
            },
        )
        .unwrap();
        assert!(matches!(req.op, Op::Delete { ref key } if key.len() == 8));
    }

    #[test]
    fn set_value_is_sliced_from_the_message() {
        let message = Bytes::from(
            proto::SetRequest {
                key: b"k".to_vec(),
                value: b"0123456789".to_vec(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let req = decode_request(Method::Set, message.clone(), &LIMITS).unwrap();
        let Op::Set { value, .. } = req.op else {
            panic!("not a set")
        };
        let range = message.as_ptr_range();
        assert!(range.contains(&value.as_ptr()));
    }

    #[test]
    fn invalid_requests_are_refused_with_the_documented_errors() {
        use crate::grpc::status::{Code, Status};
        let code = |r: Result<CallRequest, ApiError>| Status::from(r.unwrap_err()).code;

        assert_eq!(
            code(decode(Method::Get, &proto::GetRequest::default())),
            Code::InvalidArgument
        );
        assert_eq!(
            code(decode(
                Method::Delete,
                &proto::DeleteRequest {
                    key: vec![b'x'; 9],
                    forwarded: false
                }
            )),
            Code::InvalidArgument
        );
        let set = |ttl_seconds, value_len| proto::SetRequest {
            key: b"k".to_vec(),
            value: vec![0; value_len],
            ttl_seconds,
            ..Default::default()
        };
        assert_eq!(
            code(decode(Method::Set, &set(MAX_TTL_SECONDS + 1, 1))),
            Code::InvalidArgument
        );
        assert_eq!(
            code(decode(Method::Set, &set(0, 17))),
            Code::ResourceExhausted
        );
        assert!(decode(Method::Set, &set(0, 16)).is_ok());
        let err =
            decode_request(Method::Get, Bytes::from_static(&[0xff, 0xff]), &LIMITS).unwrap_err();
        assert!(matches!(err, ApiError::Malformed(_)), "{err:?}");
        assert_eq!(Status::from(err).code, Code::InvalidArgument);
    }
}
