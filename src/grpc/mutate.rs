//! `nexuscache.v1.Cache/Mutate` on the wire: a [`Mutation`] and its
//! [`Mutated`] answer as the generated messages, both directions, with the
//! request checked against the node's limits (no I/O).

use std::time::Duration;

use bytes::Bytes;
use prost::Message;

use super::wire::{self, lifetime, mutate_request as req};
use crate::error::ApiError;
use crate::mutation::{ExpireIf, Lifetime, Mutated, Mutation, Presence};
use crate::ops::{Limits, MAX_TTL_SECONDS};

/// A request's key and mutation, validated.
pub struct Decoded {
    pub key: Bytes,
    pub mutation: Mutation,
    pub forwarded: bool,
}

/// Decodes a `MutateRequest` and checks its values and TTLs (the key is
/// the caller's to check, as for the other methods).
pub fn decode_request(message: Bytes, limits: &Limits) -> Result<Decoded, ApiError> {
    let request = wire::MutateRequest::decode(message)
        .map_err(|e| ApiError::Malformed(format!("cannot decode Mutate request: {e}")))?;
    let Some(op) = request.op else {
        return Err(ApiError::invalid(
            "op",
            "one of set, take, expire, append, incr_by is required",
        ));
    };
    let mutation = match op {
        req::Op::Set(set) => {
            limits.check_value(set.value.len())?;
            let condition = match req::set_if::Presence::try_from(set.condition) {
                Ok(req::set_if::Presence::Any) => Presence::Any,
                Ok(req::set_if::Presence::Absent) => Presence::Absent,
                Ok(req::set_if::Presence::Present) => Presence::Present,
                Err(_) => return Err(unknown("set.condition", set.condition)),
            };
            Mutation::Set {
                value: set.value,
                lifetime: set.lifetime.map(decode_lifetime).transpose()?,
                condition,
                hot: set.hot,
                return_previous: set.return_previous,
            }
        }
        req::Op::Take(req::Take {}) => Mutation::Take,
        req::Op::Expire(expire) => {
            use req::expire::Condition as C;
            let condition = match C::try_from(expire.condition) {
                Ok(C::Always) => ExpireIf::Always,
                Ok(C::NoExpiry) => ExpireIf::NoExpiry,
                Ok(C::HasExpiry) => ExpireIf::HasExpiry,
                Ok(C::Later) => ExpireIf::Later,
                Ok(C::Earlier) => ExpireIf::Earlier,
                Ok(C::HasExpiryAndEarlier) => ExpireIf::HasExpiryAndEarlier,
                Err(_) => return Err(unknown("expire.condition", expire.condition)),
            };
            let Some(lifetime) = expire.lifetime else {
                return Err(ApiError::invalid("expire.lifetime", "is required"));
            };
            Mutation::Expire {
                lifetime: decode_lifetime(lifetime)?,
                condition,
            }
        }
        req::Op::Append(append) => {
            limits.check_value(append.suffix.len())?;
            Mutation::Append {
                suffix: append.suffix,
            }
        }
        req::Op::IncrBy(incr) => Mutation::IncrBy { delta: incr.delta },
    };
    Ok(Decoded {
        key: request.key,
        mutation,
        forwarded: request.forwarded,
    })
}

fn unknown(field: &'static str, value: i32) -> ApiError {
    ApiError::invalid(field, format!("unknown value {value}"))
}

fn decode_lifetime(wire: wire::Lifetime) -> Result<Lifetime, ApiError> {
    match lifetime::Kind::try_from(wire.kind) {
        Ok(lifetime::Kind::Forever) => Ok(Lifetime::Forever),
        Ok(lifetime::Kind::Over) => Ok(Lifetime::Over),
        Ok(lifetime::Kind::For) => {
            if wire.ttl_ms == 0 || wire.ttl_ms > MAX_TTL_SECONDS * 1000 {
                return Err(ApiError::invalid(
                    "lifetime.ttl_ms",
                    format!(
                        "{} is not between 1 and {} (three days)",
                        wire.ttl_ms,
                        MAX_TTL_SECONDS * 1000
                    ),
                ));
            }
            Ok(Lifetime::For {
                ttl: Duration::from_millis(wire.ttl_ms),
                jitter: wire.jitter,
            })
        }
        Err(_) => Err(unknown("lifetime.kind", wire.kind)),
    }
}

fn encode_lifetime(lifetime: Lifetime) -> wire::Lifetime {
    match lifetime {
        Lifetime::Forever => wire::Lifetime::default(),
        Lifetime::Over => wire::Lifetime {
            kind: lifetime::Kind::Over.into(),
            ..Default::default()
        },
        Lifetime::For { ttl, jitter } => wire::Lifetime {
            kind: lifetime::Kind::For.into(),
            // Round up: a TTL never shrinks on its way to the owner.
            ttl_ms: u64::try_from(ttl.as_millis())
                .unwrap_or(u64::MAX)
                .saturating_add(u64::from(ttl.subsec_nanos() % 1_000_000 > 0)),
            jitter,
        },
    }
}

/// Client side: the `MutateRequest` for `mutation` of `key`.
pub fn encode_request(key: &[u8], mutation: &Mutation, forwarded: bool) -> wire::MutateRequest {
    let op = match mutation {
        Mutation::Set {
            value,
            lifetime,
            condition,
            hot,
            return_previous,
        } => req::Op::Set(req::SetIf {
            value: value.clone(),
            lifetime: lifetime.map(encode_lifetime),
            condition: match condition {
                Presence::Any => req::set_if::Presence::Any,
                Presence::Absent => req::set_if::Presence::Absent,
                Presence::Present => req::set_if::Presence::Present,
            }
            .into(),
            hot: *hot,
            return_previous: *return_previous,
        }),
        Mutation::Take => req::Op::Take(req::Take {}),
        Mutation::Expire {
            lifetime,
            condition,
        } => {
            use req::expire::Condition as C;
            req::Op::Expire(req::Expire {
                lifetime: Some(encode_lifetime(*lifetime)),
                condition: match condition {
                    ExpireIf::Always => C::Always,
                    ExpireIf::NoExpiry => C::NoExpiry,
                    ExpireIf::HasExpiry => C::HasExpiry,
                    ExpireIf::Later => C::Later,
                    ExpireIf::Earlier => C::Earlier,
                    ExpireIf::HasExpiryAndEarlier => C::HasExpiryAndEarlier,
                }
                .into(),
            })
        }
        Mutation::Append { suffix } => req::Op::Append(req::Append {
            suffix: suffix.clone(),
        }),
        Mutation::IncrBy { delta } => req::Op::IncrBy(req::IncrBy { delta: *delta }),
    };
    wire::MutateRequest {
        key: Bytes::copy_from_slice(key),
        forwarded,
        op: Some(op),
    }
}

/// Server side: the response for an answer.
pub fn encode_response(answer: Mutated) -> wire::MutateResponse {
    let with_value = |applied: bool, value: Option<Bytes>| wire::MutateResponse {
        applied,
        found: value.is_some(),
        value: value.unwrap_or_default(),
        number: 0,
    };
    match answer {
        Mutated::Set { written, previous } => with_value(written, previous),
        Mutated::Taken(value) => with_value(value.is_some(), value),
        Mutated::Expire { changed, value } => with_value(changed, value),
        Mutated::Appended { len } => wire::MutateResponse {
            applied: true,
            number: i64::try_from(len).unwrap_or(i64::MAX),
            ..Default::default()
        },
        Mutated::Counted(number) => wire::MutateResponse {
            applied: true,
            number,
            ..Default::default()
        },
    }
}

/// Client side: the answer to `mutation` a response carries.
pub fn decode_response(message: Bytes, mutation: &Mutation) -> Result<Mutated, prost::DecodeError> {
    let resp = wire::MutateResponse::decode(message)?;
    let value = resp.found.then_some(resp.value);
    Ok(match mutation {
        Mutation::Set { .. } => Mutated::Set {
            written: resp.applied,
            previous: value,
        },
        Mutation::Take => Mutated::Taken(value),
        Mutation::Expire { .. } => Mutated::Expire {
            changed: resp.applied,
            value,
        },
        Mutation::Append { .. } => Mutated::Appended {
            len: u64::try_from(resp.number).unwrap_or(0),
        },
        Mutation::IncrBy { .. } => Mutated::Counted(resp.number),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_key_bytes: 250,
        max_value_bytes: 1024,
    };

    fn round_trip(mutation: Mutation) -> Mutation {
        let bytes = Bytes::from(encode_request(b"k", &mutation, true).encode_to_vec());
        let decoded = decode_request(bytes, &LIMITS).unwrap();
        assert_eq!(&decoded.key[..], b"k");
        assert!(decoded.forwarded);
        decoded.mutation
    }

    #[test]
    fn every_mutation_crosses_the_wire_unchanged() {
        let all = [
            Mutation::Set {
                value: Bytes::from_static(b"v"),
                lifetime: None,
                condition: Presence::Absent,
                hot: true,
                return_previous: true,
            },
            Mutation::Set {
                value: Bytes::from_static(b"v"),
                lifetime: Some(Lifetime::For {
                    ttl: Duration::from_millis(1500),
                    jitter: false,
                }),
                condition: Presence::Present,
                hot: false,
                return_previous: false,
            },
            Mutation::Take,
            Mutation::Expire {
                lifetime: Lifetime::Over,
                condition: ExpireIf::HasExpiryAndEarlier,
            },
            Mutation::Expire {
                lifetime: Lifetime::Forever,
                condition: ExpireIf::HasExpiry,
            },
            Mutation::Expire {
                lifetime: Lifetime::For {
                    ttl: Duration::from_secs(10),
                    jitter: true,
                },
                condition: ExpireIf::Later,
            },
            Mutation::Append {
                suffix: Bytes::from_static(b"xyz"),
            },
            Mutation::IncrBy { delta: i64::MIN },
        ];
        for mutation in all {
            assert_eq!(round_trip(mutation.clone()), mutation);
        }
    }

    #[test]
    fn a_ttl_never_shrinks_on_the_wire() {
        let m = Mutation::Expire {
            lifetime: Lifetime::For {
                ttl: Duration::from_micros(1_500),
                jitter: false,
            },
            condition: ExpireIf::Always,
        };
        let Mutation::Expire { lifetime, .. } = round_trip(m) else {
            panic!("not an expire");
        };
        assert_eq!(
            lifetime,
            Lifetime::For {
                ttl: Duration::from_millis(2),
                jitter: false
            }
        );
    }

    #[test]
    fn answers_cross_the_wire_unchanged() {
        let cases = [
            (
                Mutation::Take,
                Mutated::Taken(Some(Bytes::from_static(b"v"))),
            ),
            (Mutation::Take, Mutated::Taken(None)),
            (Mutation::IncrBy { delta: 1 }, Mutated::Counted(-7)),
            (
                Mutation::Append {
                    suffix: Bytes::new(),
                },
                Mutated::Appended { len: 12 },
            ),
            (
                Mutation::Expire {
                    lifetime: Lifetime::Forever,
                    condition: ExpireIf::Always,
                },
                Mutated::Expire {
                    changed: false,
                    value: Some(Bytes::new()),
                },
            ),
        ];
        for (mutation, answer) in cases {
            let bytes = Bytes::from(encode_response(answer.clone()).encode_to_vec());
            assert_eq!(decode_response(bytes, &mutation).unwrap(), answer);
        }
    }

    #[test]
    fn invalid_requests_are_refused_with_the_field() {
        let decode = |request: wire::MutateRequest| {
            decode_request(Bytes::from(request.encode_to_vec()), &LIMITS)
                .err()
                .map(|e| e.to_string())
        };
        let no_op = wire::MutateRequest {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        };
        assert!(decode(no_op).unwrap().contains("invalid op"));
        let mut long_ttl = encode_request(
            b"k",
            &Mutation::Expire {
                lifetime: Lifetime::For {
                    ttl: Duration::from_secs(MAX_TTL_SECONDS + 1),
                    jitter: true,
                },
                condition: ExpireIf::Always,
            },
            false,
        );
        assert!(decode(long_ttl.clone())
            .unwrap()
            .contains("invalid lifetime.ttl_ms"));
        if let Some(req::Op::Expire(e)) = &mut long_ttl.op {
            e.condition = 42;
        }
        assert!(decode(long_ttl).unwrap().contains("expire.condition"));
        let big = encode_request(
            b"k",
            &Mutation::Append {
                suffix: Bytes::from(vec![0; 1025]),
            },
            false,
        );
        assert!(decode(big).unwrap().contains("over the 1024-byte limit"));
    }
}
