//! Why a call failed, machine-readable, in trailers beside `grpc-status`.
//!
//! A gRPC code alone is too coarse between our own nodes: `UNAVAILABLE`
//! covers an owner that is draining, an origin that failed and a write the
//! owner stored but could not copy to a hot replica, and each needs a
//! different answer at the node that forwarded the op. So a failure also
//! carries:
//!
//! - `nexuscache-reason`: one of the [`ReasonCode`] tokens;
//! - `nexuscache-reason-node`: the node the failure is about (the replica
//!   that missed an update, the owner that could not be reached), if any;
//! - `nexuscache-reason-detail`: the underlying cause as text,
//!   percent-encoded like `grpc-message`.
//!
//! Other gRPC clients can ignore them; `grpc-message` stays the readable
//! one-line explanation. Values are bounded and decoded leniently: a peer
//! is not trusted to send well-formed ones, and an unknown token is no
//! reason at all (the code alone decides), never an error.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::percent::{decode_message, encode_message};

pub const REASON: HeaderName = HeaderName::from_static("nexuscache-reason");
pub const REASON_NODE: HeaderName = HeaderName::from_static("nexuscache-reason-node");
pub const REASON_DETAIL: HeaderName = HeaderName::from_static("nexuscache-reason-detail");

/// Longest node name and detail text taken from a peer (the header block
/// itself is bounded by the h2 settings; this bounds what we keep).
const MAX_NODE_LEN: usize = 256;
const MAX_DETAIL_LEN: usize = 4096;

/// What failed, in a form a forwarding node acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonCode {
    /// The node (or the core serving the op) is shutting down.
    Draining,
    /// The entry can never fit in the owning shard.
    EntryTooLarge,
    /// The read-through origin failed at the owner.
    OriginFailed,
    /// The owner stored the write, but a hot copy on `node` missed it.
    ReplicaNotUpdated,
    /// The node this one forwarded to could not be reached or failed.
    OwnerUnavailable,
    /// `INCR` of a value that is not a decimal i64.
    NotAnInteger,
    /// `INCR` past the i64 range.
    Overflow,
    /// `APPEND` past `--max-value-bytes`; detail `len/limit`.
    ValueTooLarge,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 8] = [
        ReasonCode::Draining,
        ReasonCode::EntryTooLarge,
        ReasonCode::OriginFailed,
        ReasonCode::ReplicaNotUpdated,
        ReasonCode::OwnerUnavailable,
        ReasonCode::NotAnInteger,
        ReasonCode::Overflow,
        ReasonCode::ValueTooLarge,
    ];

    /// The token on the wire.
    pub fn token(self) -> &'static str {
        match self {
            ReasonCode::Draining => "draining",
            ReasonCode::EntryTooLarge => "entry-too-large",
            ReasonCode::OriginFailed => "origin-failed",
            ReasonCode::ReplicaNotUpdated => "replica-not-updated",
            ReasonCode::OwnerUnavailable => "owner-unavailable",
            ReasonCode::NotAnInteger => "not-an-integer",
            ReasonCode::Overflow => "overflow",
            ReasonCode::ValueTooLarge => "value-too-large",
        }
    }

    pub fn from_token(token: &[u8]) -> Option<ReasonCode> {
        ReasonCode::ALL
            .into_iter()
            .find(|c| c.token().as_bytes() == token)
    }
}

/// A failure's reason code with the node it names and its cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: ReasonCode,
    pub node: Option<String>,
    pub detail: String,
}

impl Reason {
    pub fn new(code: ReasonCode, node: Option<&str>, detail: impl Into<String>) -> Reason {
        Reason {
            code,
            node: node.map(str::to_owned),
            detail: detail.into(),
        }
    }

    /// Adds the reason's headers to a trailer (or trailers-only) block.
    pub fn write(&self, headers: &mut HeaderMap) {
        headers.insert(REASON, HeaderValue::from_static(self.code.token()));
        for (name, text) in [
            (REASON_NODE, self.node.as_deref()),
            (REASON_DETAIL, Some(self.detail.as_str())),
        ] {
            let Some(text) = text.filter(|t| !t.is_empty()) else {
                continue;
            };
            // Percent-encoding leaves only visible ASCII: always valid.
            if let Ok(value) = HeaderValue::from_str(&encode_message(text)) {
                headers.insert(name, value);
            }
        }
    }

    /// The reason a peer's trailers carry; `None` when they carry none or
    /// an unknown token.
    pub fn read(headers: &HeaderMap) -> Option<Reason> {
        let code = ReasonCode::from_token(headers.get(REASON)?.as_bytes())?;
        let text = |name: &HeaderName, max: usize| {
            headers
                .get(name)
                .map(|v| truncate(decode_message(v.as_bytes()), max))
        };
        Some(Reason {
            code,
            node: text(&REASON_NODE, MAX_NODE_LEN).filter(|n| !n.is_empty()),
            detail: text(&REASON_DETAIL, MAX_DETAIL_LEN).unwrap_or_default(),
        })
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_token() {
        for code in ReasonCode::ALL {
            assert_eq!(ReasonCode::from_token(code.token().as_bytes()), Some(code));
        }
        assert_eq!(ReasonCode::from_token(b"Draining"), None);
        assert_eq!(ReasonCode::from_token(b""), None);
    }

    #[test]
    fn reasons_round_trip_through_trailers() {
        let reasons = [
            Reason::new(ReasonCode::Draining, None, ""),
            Reason::new(
                ReasonCode::ReplicaNotUpdated,
                Some("node-c"),
                "peer 10.0.0.3:7947 did not answer within 300ms",
            ),
            Reason::new(ReasonCode::OriginFailed, None, "caf\u{e9}\r\n100% down"),
        ];
        for reason in reasons {
            let mut headers = HeaderMap::new();
            reason.write(&mut headers);
            assert_eq!(Reason::read(&headers), Some(reason));
        }
    }

    #[test]
    fn untrusted_trailers_are_bounded_and_unknown_tokens_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(REASON, HeaderValue::from_static("replica-not-updated"));
        headers.insert(
            REASON_NODE,
            HeaderValue::from_str(&"n".repeat(10_000)).unwrap(),
        );
        headers.insert(
            REASON_DETAIL,
            HeaderValue::from_str(&"%C3%A9".repeat(5_000)).unwrap(),
        );
        let reason = Reason::read(&headers).unwrap();
        assert_eq!(reason.node.unwrap().len(), MAX_NODE_LEN);
        assert!(reason.detail.len() <= MAX_DETAIL_LEN);
        assert!(reason.detail.chars().all(|c| c == '\u{e9}'));

        headers.insert(REASON, HeaderValue::from_static("something-new"));
        assert_eq!(Reason::read(&headers), None);
        assert_eq!(Reason::read(&HeaderMap::new()), None);
    }
}
