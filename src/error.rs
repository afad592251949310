//! Every error a request or start-up can end in, and the one place where an
//! error becomes an HTTP status.
//!
//! Handlers return `ApiError`; only [`ApiError::status`] (HTTP) and
//! [`ApiError::grpc_code`] (gRPC) decide the code a client sees, side by
//! side, so the mapping cannot drift between routes or protocols.

use std::path::PathBuf;

use crate::auth::{AuthError, CredentialError};
use crate::control::ControlError;
use crate::grpc::reason::{Reason, ReasonCode};
use crate::grpc::status::{Code, Status};
use crate::mutation::Refusal;
use crate::ops::{LimitError, OpError, Reply};

/// The challenge of a 401 for a token that was presented but is not valid.
pub const INVALID_TOKEN_CHALLENGE: &str = "Bearer realm=\"nexuscache\", error=\"invalid_token\"";

/// Why a client request was refused. Each variant names what was wrong so the
/// one-line body tells the client how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("missing or empty key")]
    MissingKey,
    #[error("key is {len} bytes, over the {limit}-byte limit")]
    KeyTooLong {
        len: usize,
        limit: usize,
        /// Keys that arrive in the URL get 414, keys in a body 400.
        in_url: bool,
    },
    #[error("value is {len} bytes, over the {limit}-byte limit")]
    ValueTooLarge { len: u64, limit: u64 },
    #[error("request body is {len} bytes, over the {limit}-byte limit")]
    BodyTooLarge { len: u64, limit: u64 },
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request head is over the {limit}-byte limit")]
    HeadTooLarge { limit: usize },
    #[error("chunked trailers are over the {limit}-byte limit")]
    TrailersTooLarge { limit: usize },
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("method {method} is not allowed on {path} (allowed: {allowed})")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    #[error("entry does not fit in the cache: {0}")]
    EntryTooLarge(String),
    /// A conditional or read-modify-write op the key's entry does not
    /// allow (`INCR` of a value that is not an integer, ...).
    #[error("{0}")]
    Refused(Refusal),
    #[error("server is shutting down")]
    Draining,
    /// The core's connections hold their whole share of
    /// `--max-connection-memory` and none gave any back in time.
    #[error("connection buffers are full on this node ({budget} bytes per core); retry later")]
    ConnectionMemoryExhausted { budget: u64 },
    #[error("owner node {peer} is unavailable: {reason}")]
    OwnerUnavailable { peer: String, reason: String },
    /// The read-through origin failed (error status, timeout, unreachable).
    #[error("origin failed: {0}")]
    Origin(String),
    /// A write to a key with hot copies reached the owner, but a live node's
    /// copy could not be updated, so the write is not acknowledged.
    #[error(
        "write stored on the owner, but the hot copy on node {peer} was not updated: {reason}"
    )]
    ReplicaNotUpdated { peer: String, reason: String },
    #[error("{0}")]
    PeerNotFound(String),
    #[error("membership change failed: {0}")]
    ControlUnavailable(String),
    /// A membership change this node's configuration forbids (`/setpeer`
    /// moving or adding a member without `--allow-setpeer-addr`).
    #[error("{0}")]
    MembershipForbidden(String),
    /// A membership change that contradicts the ring (removing this node).
    #[error("{0}")]
    MembershipConflict(String),
    /// The ring holds `--max-ring-members` already.
    #[error("{0}")]
    RingFull(String),
    /// No valid token, or a peer-only call from a caller without the
    /// cluster secret.
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status for this error: the only status mapping in the server.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::MissingKey | ApiError::InvalidField { .. } | ApiError::Malformed(_) => 400,
            ApiError::KeyTooLong { in_url: true, .. } => 414,
            ApiError::KeyTooLong { in_url: false, .. } => 400,
            ApiError::ValueTooLarge { .. }
            | ApiError::BodyTooLarge { .. }
            | ApiError::EntryTooLarge(_)
            | ApiError::Refused(Refusal::ValueTooLarge { .. }) => 413,
            ApiError::Refused(Refusal::NotAnInteger | Refusal::Overflow) => 409,
            ApiError::HeadTooLarge { .. } | ApiError::TrailersTooLarge { .. } => 431,
            ApiError::NoRoute(_) | ApiError::PeerNotFound(_) => 404,
            ApiError::MembershipForbidden(_) => 403,
            ApiError::MembershipConflict(_) => 409,
            ApiError::RingFull(_) => 507,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::Origin(_) => 502,
            ApiError::Draining
            | ApiError::ConnectionMemoryExhausted { .. }
            | ApiError::OwnerUnavailable { .. }
            | ApiError::ReplicaNotUpdated { .. }
            | ApiError::ControlUnavailable(_) => 503,
            ApiError::Auth(AuthError::MissingToken | AuthError::InvalidToken) => 401,
            ApiError::Auth(AuthError::PeerOnly(_)) => 403,
            ApiError::Internal(_) => 500,
        }
    }

    /// The gRPC status code for this error: the gRPC half of the one mapping.
    pub fn grpc_code(&self) -> Code {
        match self {
            ApiError::MissingKey
            | ApiError::KeyTooLong { .. }
            | ApiError::InvalidField { .. }
            | ApiError::Malformed(_) => Code::InvalidArgument,
            ApiError::ValueTooLarge { .. }
            | ApiError::BodyTooLarge { .. }
            | ApiError::EntryTooLarge(_)
            | ApiError::HeadTooLarge { .. }
            | ApiError::TrailersTooLarge { .. }
            | ApiError::ConnectionMemoryExhausted { .. }
            | ApiError::Refused(Refusal::ValueTooLarge { .. }) => Code::ResourceExhausted,
            ApiError::Refused(Refusal::NotAnInteger | Refusal::Overflow) => {
                Code::FailedPrecondition
            }
            ApiError::NoRoute(_) | ApiError::MethodNotAllowed { .. } => Code::Unimplemented,
            ApiError::PeerNotFound(_) => Code::NotFound,
            ApiError::MembershipForbidden(_) => Code::PermissionDenied,
            ApiError::MembershipConflict(_) => Code::FailedPrecondition,
            ApiError::RingFull(_) => Code::ResourceExhausted,
            ApiError::Draining
            | ApiError::OwnerUnavailable { .. }
            | ApiError::ReplicaNotUpdated { .. }
            | ApiError::Origin(_)
            | ApiError::ControlUnavailable(_) => Code::Unavailable,
            ApiError::Auth(AuthError::MissingToken | AuthError::InvalidToken) => {
                Code::Unauthenticated
            }
            ApiError::Auth(AuthError::PeerOnly(_)) => Code::PermissionDenied,
            ApiError::Internal(_) => Code::Internal,
        }
    }

    /// Errors after which the byte stream can no longer be trusted (we do not
    /// know where the next request starts) or where we refused to read a body.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ApiError::Malformed(_)
                | ApiError::HeadTooLarge { .. }
                | ApiError::TrailersTooLarge { .. }
                | ApiError::BodyTooLarge { .. }
                | ApiError::Draining
                | ApiError::ConnectionMemoryExhausted { .. }
        )
    }

    /// Extra header the status requires (RFC 9110: 405 must carry `Allow`).
    pub fn allow_header(&self) -> Option<&'static str> {
        match self {
            ApiError::MethodNotAllowed { allowed, .. } => Some(allowed),
            _ => None,
        }
    }

    /// `WWW-Authenticate` value a 401 must carry (RFC 9110 §11.6.1); a
    /// presented but wrong token adds `error="invalid_token"` (RFC 6750 §3).
    pub fn www_authenticate(&self) -> Option<&'static str> {
        match self {
            ApiError::Auth(AuthError::MissingToken) => Some(crate::auth::WWW_AUTHENTICATE),
            ApiError::Auth(AuthError::InvalidToken) => Some(INVALID_TOKEN_CHALLENGE),
            _ => None,
        }
    }

    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

impl ApiError {
    /// The error for a key or value over the limits; `in_url`: the key came
    /// in the request target (414 rather than 400).
    pub fn from_limit(err: LimitError, in_url: bool) -> ApiError {
        match err {
            LimitError::EmptyKey => ApiError::MissingKey,
            LimitError::KeyTooLong { len, limit } => ApiError::KeyTooLong { len, limit, in_url },
            LimitError::ValueTooLarge { len, limit } => ApiError::ValueTooLarge { len, limit },
        }
    }
}

impl From<LimitError> for ApiError {
    fn from(err: LimitError) -> ApiError {
        ApiError::from_limit(err, false)
    }
}

impl From<OpError> for ApiError {
    fn from(err: OpError) -> ApiError {
        match err {
            OpError::TooLarge(reason) => ApiError::EntryTooLarge(reason),
            OpError::Draining => ApiError::Draining,
            OpError::OwnerUnavailable { peer, reason } => {
                ApiError::OwnerUnavailable { peer, reason }
            }
            OpError::OriginFailed(reason) => ApiError::Origin(reason),
            OpError::ReplicaNotUpdated { peer, reason } => {
                ApiError::ReplicaNotUpdated { peer, reason }
            }
            OpError::Refused(refusal) => ApiError::Refused(refusal),
            OpError::Mismatch { op, reply } => {
                ApiError::Internal(format!("the core answered a {op} with {reply}"))
            }
        }
    }
}

impl ApiError {
    /// The error a core's reply stands for, `None` for replies that are
    /// answers rather than failures.
    pub fn from_reply(reply: Reply) -> Option<ApiError> {
        reply.failure().err().map(ApiError::from)
    }
}

/// The gRPC status a request error is answered with: the gRPC front end
/// and the HTTP one refuse the same input for the same reason.
impl From<&ApiError> for Status {
    fn from(err: &ApiError) -> Status {
        Status {
            code: err.grpc_code(),
            message: err.to_string(),
            reason: err.reason(),
        }
    }
}

impl ApiError {
    /// The machine-readable reason another node of ours needs to answer
    /// its own client with this same error (see `grpc::reason`); `None`
    /// for errors the gRPC code already says everything about.
    pub fn reason(&self) -> Option<Reason> {
        let reason = |code, node: Option<&str>, detail: &str| Some(Reason::new(code, node, detail));
        match self {
            ApiError::Draining => reason(ReasonCode::Draining, None, ""),
            ApiError::EntryTooLarge(detail) => reason(ReasonCode::EntryTooLarge, None, detail),
            ApiError::Origin(detail) => reason(ReasonCode::OriginFailed, None, detail),
            ApiError::ReplicaNotUpdated {
                peer,
                reason: detail,
            } => reason(ReasonCode::ReplicaNotUpdated, Some(peer), detail),
            ApiError::OwnerUnavailable {
                peer,
                reason: detail,
            } => reason(ReasonCode::OwnerUnavailable, Some(peer), detail),
            ApiError::Refused(Refusal::NotAnInteger) => reason(ReasonCode::NotAnInteger, None, ""),
            ApiError::Refused(Refusal::Overflow) => reason(ReasonCode::Overflow, None, ""),
            ApiError::Refused(Refusal::ValueTooLarge { len, limit }) => {
                reason(ReasonCode::ValueTooLarge, None, &format!("{len}/{limit}"))
            }
            _ => None,
        }
    }

    /// The error a peer's reason stands for, as this node's own client must
    /// hear it: the inverse of [`ApiError::reason`]. `peer` names the node
    /// that answered, for reasons that name no node of their own.
    pub fn from_reason(reason: Reason, peer: &str) -> ApiError {
        let Reason { code, node, detail } = reason;
        let node = node.unwrap_or_else(|| peer.to_owned());
        match code {
            ReasonCode::Draining => ApiError::Draining,
            ReasonCode::EntryTooLarge => ApiError::EntryTooLarge(detail),
            ReasonCode::OriginFailed => ApiError::Origin(detail),
            ReasonCode::ReplicaNotUpdated => ApiError::ReplicaNotUpdated {
                peer: node,
                reason: detail,
            },
            ReasonCode::OwnerUnavailable => ApiError::OwnerUnavailable {
                peer: node,
                reason: detail,
            },
            ReasonCode::NotAnInteger => ApiError::Refused(Refusal::NotAnInteger),
            ReasonCode::Overflow => ApiError::Refused(Refusal::Overflow),
            ReasonCode::ValueTooLarge => {
                // "len/limit"; a peer that sends something else still
                // refused the value, by its own limit.
                let mut parts = detail.split('/').map(|n| n.parse::<u64>().unwrap_or(0));
                ApiError::Refused(Refusal::ValueTooLarge {
                    len: parts.next().unwrap_or(0),
                    limit: parts.next().unwrap_or(0),
                })
            }
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        Status::from(&err)
    }
}

/// `/setpeer` and `/removepeer` outcomes:
/// * 404: the member is unknown (not in etcd, not in `--peers`, not in the
///   ring);
/// * 403: the configuration forbids the change (`addr=` adding or moving a
///   member without `--allow-setpeer-addr`): asking again cannot succeed;
/// * 409: removing this node itself contradicts the ring it serves (it is
///   always a member of its own ring), though the request is well formed;
/// * 507: the ring holds `--max-ring-members` already. Not 503, which
///   invites retries that cannot succeed until a member is removed, and not
///   400, since the request is valid: the node lacks room to store it;
/// * 400: a malformed name or address, or a missing `addr=`;
/// * 503: the control thread or etcd is unavailable (retry later).
impl From<ControlError> for ApiError {
    fn from(err: ControlError) -> ApiError {
        use crate::control::MembershipError;
        match err {
            ControlError::PeerNotFound { .. }
            | ControlError::UnknownPeer { .. }
            | ControlError::Membership(MembershipError::NotMember { .. }) => {
                ApiError::PeerNotFound(err.to_string())
            }
            ControlError::AddrChangeForbidden { .. } => {
                ApiError::MembershipForbidden(err.to_string())
            }
            ControlError::Membership(MembershipError::IsSelf { .. }) => {
                ApiError::MembershipConflict(err.to_string())
            }
            ControlError::Membership(MembershipError::RingFull { .. }) => {
                ApiError::RingFull(err.to_string())
            }
            ControlError::AddrRequired { .. }
            | ControlError::PeerSpec(_)
            | ControlError::Record(_)
            | ControlError::Config(_) => ApiError::invalid("peer", err.to_string()),
            other => ApiError::ControlUnavailable(other.to_string()),
        }
    }
}

impl From<CredentialError> for StartupError {
    fn from(err: CredentialError) -> StartupError {
        StartupError::Config(err.to_string())
    }
}

/// Why the server could not start. Each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot read config file {path}: {source}")]
    ConfigFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse config file {path}: {message}")]
    ConfigParse { path: PathBuf, message: String },
    #[error("io_uring is unavailable: {0}")]
    IoUring(String),
    #[error("locked-memory limit too low: {0}")]
    Memlock(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start executor for core {core}: {message}")]
    Executor { core: usize, message: String },
    #[error("{0}")]
    Other(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_documented_contract() {
        assert_eq!(ApiError::MissingKey.status(), 400);
        let long = |in_url| ApiError::KeyTooLong {
            len: 2000,
            limit: 1024,
            in_url,
        };
        assert_eq!(long(true).status(), 414);
        assert_eq!(long(false).status(), 400);
        assert_eq!(ApiError::ValueTooLarge { len: 2, limit: 1 }.status(), 413);
        assert_eq!(ApiError::HeadTooLarge { limit: 1 }.status(), 431);
        assert_eq!(ApiError::NoRoute("/x".into()).status(), 404);
        assert!(ApiError::Malformed("x".into()).closes_connection());
        assert!(!ApiError::MissingKey.closes_connection());
    }

    #[test]
    fn messages_are_one_line() {
        let e = ApiError::invalid("expire", "not a number");
        assert_eq!(e.to_string(), "invalid expire: not a number");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn api_errors_map_to_the_documented_codes() {
        let cases = [
            (ApiError::MissingKey, Code::InvalidArgument),
            (
                ApiError::KeyTooLong {
                    len: 2,
                    limit: 1,
                    in_url: false,
                },
                Code::InvalidArgument,
            ),
            (ApiError::invalid("ttl_seconds", "x"), Code::InvalidArgument),
            (ApiError::Malformed("x".into()), Code::InvalidArgument),
            (
                ApiError::ValueTooLarge { len: 2, limit: 1 },
                Code::ResourceExhausted,
            ),
            (
                ApiError::BodyTooLarge { len: 2, limit: 1 },
                Code::ResourceExhausted,
            ),
            (ApiError::EntryTooLarge("x".into()), Code::ResourceExhausted),
            (ApiError::NoRoute("/x".into()), Code::Unimplemented),
            (ApiError::Draining, Code::Unavailable),
            (ApiError::Internal("x".into()), Code::Internal),
        ];
        for (err, code) in cases {
            let status = Status::from(&err);
            assert_eq!(status.code, code, "{err:?}");
            assert_eq!(status.message, err.to_string());
        }
    }

    #[test]
    fn errors_that_cross_nodes_come_back_as_themselves() {
        let errors = [
            ApiError::Draining,
            ApiError::EntryTooLarge("12 MiB over a 8 MiB shard".into()),
            ApiError::Origin("origin 127.0.0.1:9 answered 500".into()),
            ApiError::ReplicaNotUpdated {
                peer: "c".into(),
                reason: "did not answer within 300ms".into(),
            },
            ApiError::OwnerUnavailable {
                peer: "d".into(),
                reason: "connection refused".into(),
            },
        ];
        for err in errors {
            let status = Status::from(&err);
            let reason = status.reason.clone().expect("a reason");
            let back = ApiError::from_reason(reason, "b");
            assert_eq!(back, err);
            assert_eq!(back.status(), err.status());
            assert_eq!(Status::from(&back).message, status.message);
        }
        assert_eq!(Status::from(&ApiError::MissingKey).reason, None);
    }
}
