//! The HTTP route table: every endpoint the server has, and the one place a
//! request path is matched. Routing (`route.rs`), the metric label, the
//! body limit known before the body is read, and whether a token is needed
//! all read the [`Endpoint`] found here, so they cannot disagree about a
//! path.

use super::parse::Method;
use crate::error::ApiError;
use crate::metrics::OpKind;
use crate::ops::Limits;

/// An endpoint of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /api/get?key=K`
    SeedGet,
    /// `POST /api/set` (form: key, value, expire | ttl | ttl_ms, hot, if, get, keepttl)
    SeedSet,
    /// `POST /api/delete` (form: key)
    SeedDelete,
    /// `POST /api/incr` (form: key, by)
    SeedIncr,
    /// `POST /api/append` (form: key, value)
    SeedAppend,
    /// `POST /api/getdel` (form: key)
    SeedGetDel,
    /// `POST /api/expire` (form: key, expire | ttl | ttl_ms | persist, if, get)
    SeedExpire,
    /// `POST /setpeer` (form: peer, addr)
    SetPeer,
    /// `POST /removepeer` (form: peer)
    RemovePeer,
    Health,
    Ready,
    Metrics,
    /// `GET|PUT|DELETE /v1/keys/{K}`
    V1Key,
    /// `GET /v1/owner/{K}`
    V1Owner,
}

/// How a table entry matches a path.
enum Pattern {
    Exact(&'static str),
    /// The path starts with this; the rest is the endpoint's argument.
    Prefix(&'static str),
}

/// Every endpoint and its path, the only path strings the server knows.
const TABLE: [(Pattern, Endpoint); 14] = [
    (Pattern::Exact("/api/get"), Endpoint::SeedGet),
    (Pattern::Exact("/api/set"), Endpoint::SeedSet),
    (Pattern::Exact("/api/delete"), Endpoint::SeedDelete),
    (Pattern::Exact("/api/incr"), Endpoint::SeedIncr),
    (Pattern::Exact("/api/append"), Endpoint::SeedAppend),
    (Pattern::Exact("/api/getdel"), Endpoint::SeedGetDel),
    (Pattern::Exact("/api/expire"), Endpoint::SeedExpire),
    (Pattern::Exact("/setpeer"), Endpoint::SetPeer),
    (Pattern::Exact("/removepeer"), Endpoint::RemovePeer),
    (Pattern::Exact("/healthz"), Endpoint::Health),
    (Pattern::Exact("/readyz"), Endpoint::Ready),
    (Pattern::Exact("/metrics"), Endpoint::Metrics),
    (Pattern::Prefix("/v1/keys/"), Endpoint::V1Key),
    (Pattern::Prefix("/v1/owner/"), Endpoint::V1Owner),
];

/// Most bytes a body may have on endpoints that take no value.
const SMALL_BODY: u64 = 64 * 1024;
/// Room for the form's field names and separators besides key and value.
const FORM_OVERHEAD: u64 = 4096;

/// An endpoint found for a path, with what follows a prefix (still
/// percent-encoded; empty for exact paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'a> {
    pub endpoint: Endpoint,
    pub rest: &'a str,
}

impl Endpoint {
    /// The endpoint `path` names, `None` for anything else (404).
    pub fn find(path: &str) -> Option<Found<'_>> {
        TABLE.iter().find_map(|(pattern, endpoint)| {
            let rest = match pattern {
                Pattern::Exact(p) => (path == *p).then_some(""),
                Pattern::Prefix(p) => path.strip_prefix(p),
            }?;
            Some(Found {
                endpoint: *endpoint,
                rest,
            })
        })
    }

    /// The methods the endpoint answers, as `Allow` lists them.
    pub fn allowed(self) -> &'static str {
        match self {
            Endpoint::SeedSet
            | Endpoint::SeedDelete
            | Endpoint::SeedIncr
            | Endpoint::SeedAppend
            | Endpoint::SeedGetDel
            | Endpoint::SeedExpire
            | Endpoint::SetPeer
            | Endpoint::RemovePeer => "POST",
            Endpoint::V1Key => "GET, PUT, DELETE",
            Endpoint::SeedGet
            | Endpoint::Health
            | Endpoint::Ready
            | Endpoint::Metrics
            | Endpoint::V1Owner => "GET",
        }
    }

    /// The `op` label of `nexuscache_requests_total` for `method` here.
    pub fn op_kind(self, method: Method) -> OpKind {
        match self {
            Endpoint::SeedGet => OpKind::Get,
            Endpoint::SeedSet => OpKind::Set,
            Endpoint::SeedDelete => OpKind::Delete,
            Endpoint::SeedIncr
            | Endpoint::SeedAppend
            | Endpoint::SeedGetDel
            | Endpoint::SeedExpire => OpKind::Mutate,
            Endpoint::Health => OpKind::Health,
            Endpoint::Ready => OpKind::Ready,
            Endpoint::Metrics => OpKind::Metrics,
            Endpoint::SetPeer | Endpoint::RemovePeer | Endpoint::V1Owner => OpKind::Other,
            Endpoint::V1Key => match method {
                Method::Put => OpKind::Set,
                Method::Delete => OpKind::Delete,
                _ => OpKind::Get,
            },
        }
    }

    /// The largest body a request here may carry, known before reading it.
    /// A form body percent-encodes each byte in at most three.
    pub fn max_body(self, limits: &Limits) -> u64 {
        match self {
            Endpoint::SeedSet | Endpoint::SeedDelete | Endpoint::SeedAppend => {
                3 * (limits.max_value_bytes + limits.max_key_bytes as u64) + FORM_OVERHEAD
            }
            // A key and a few small fields.
            Endpoint::SeedIncr | Endpoint::SeedGetDel | Endpoint::SeedExpire => {
                3 * limits.max_key_bytes as u64 + FORM_OVERHEAD
            }
            Endpoint::V1Key => limits.max_value_bytes,
            _ => SMALL_BODY,
        }
    }

    /// The error for a body of `len` bytes over [`Endpoint::max_body`]: on
    /// `/v1/keys/` the body is the value.
    pub fn body_error(self, limits: &Limits, len: u64) -> ApiError {
        let limit = self.max_body(limits);
        match self {
            Endpoint::V1Key => ApiError::ValueTooLarge { len, limit },
            _ => ApiError::BodyTooLarge { len, limit },
        }
    }

    /// Whether a client token is needed here (when one is configured): all
    /// but the health checks, and `/metrics` unless it was made public.
    pub fn needs_token(self, metrics_public: bool) -> bool {
        match self {
            Endpoint::Health | Endpoint::Ready => false,
            Endpoint::Metrics => !metrics_public,
            _ => true,
        }
    }
}

/// The op label of a path that names no endpoint.
pub fn op_kind(found: Option<Found<'_>>, method: Method) -> OpKind {
    found.map_or(OpKind::Other, |f| f.endpoint.op_kind(method))
}

/// The body limit of a path that names no endpoint (answered 404 once read).
pub fn max_body(found: Option<Found<'_>>, limits: &Limits) -> u64 {
    found.map_or(SMALL_BODY, |f| f.endpoint.max_body(limits))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_key_bytes: 10,
        max_value_bytes: 100,
    };

    #[test]
    fn every_path_finds_its_endpoint_and_nothing_else_does() {
        let cases = [
            ("/api/get", Endpoint::SeedGet, ""),
            ("/api/set", Endpoint::SeedSet, ""),
            ("/api/delete", Endpoint::SeedDelete, ""),
            ("/api/incr", Endpoint::SeedIncr, ""),
            ("/api/append", Endpoint::SeedAppend, ""),
            ("/api/getdel", Endpoint::SeedGetDel, ""),
            ("/api/expire", Endpoint::SeedExpire, ""),
            ("/setpeer", Endpoint::SetPeer, ""),
            ("/removepeer", Endpoint::RemovePeer, ""),
            ("/healthz", Endpoint::Health, ""),
            ("/readyz", Endpoint::Ready, ""),
            ("/metrics", Endpoint::Metrics, ""),
            ("/v1/keys/a%20b", Endpoint::V1Key, "a%20b"),
            ("/v1/owner/k", Endpoint::V1Owner, "k"),
            ("/v1/keys/", Endpoint::V1Key, ""),
        ];
        for (path, endpoint, rest) in cases {
            assert_eq!(
                Endpoint::find(path),
                Some(Found { endpoint, rest }),
                "{path}"
            );
        }
        for path in [
            "/",
            "/api/get/",
            "/api",
            "/API/get",
            "/v1/keys",
            "/metricsx",
            "",
        ] {
            assert_eq!(Endpoint::find(path), None, "{path}");
        }
    }

    #[test]
    fn labels_limits_and_tokens_follow_the_endpoint() {
        let v1 = Endpoint::V1Key;
        assert_eq!(v1.op_kind(Method::Put), OpKind::Set);
        assert_eq!(v1.op_kind(Method::Delete), OpKind::Delete);
        assert_eq!(v1.op_kind(Method::Head), OpKind::Get);
        assert_eq!(op_kind(Endpoint::find("/nope"), Method::Get), OpKind::Other);
        assert_eq!(v1.max_body(&LIMITS), 100);
        assert_eq!(Endpoint::SeedSet.max_body(&LIMITS), 3 * 110 + 4096);
        assert_eq!(max_body(Endpoint::find("/nope"), &LIMITS), SMALL_BODY);
        assert!(matches!(
            v1.body_error(&LIMITS, 101),
            ApiError::ValueTooLarge {
                len: 101,
                limit: 100
            }
        ));
        assert!(matches!(
            Endpoint::SetPeer.body_error(&LIMITS, SMALL_BODY + 1),
            ApiError::BodyTooLarge { .. }
        ));
        assert!(!Endpoint::Health.needs_token(false));
        assert!(Endpoint::Metrics.needs_token(false));
        assert!(!Endpoint::Metrics.needs_token(true));
        assert!(Endpoint::V1Owner.needs_token(true));
        for rmw in [
            Endpoint::SeedIncr,
            Endpoint::SeedAppend,
            Endpoint::SeedGetDel,
            Endpoint::SeedExpire,
        ] {
            assert_eq!(rmw.op_kind(Method::Post), OpKind::Mutate);
            assert_eq!(rmw.allowed(), "POST");
            assert!(rmw.needs_token(true));
        }
        assert_eq!(Endpoint::SeedAppend.max_body(&LIMITS), 3 * 110 + 4096);
        assert_eq!(Endpoint::SeedIncr.max_body(&LIMITS), 3 * 10 + 4096);
    }
}
