//! From a parsed request to a [`Command`]: which endpoint, which key, which
//! value and TTL. Validation of everything the client sent happens here, so
//! the executing core only ever sees well-formed ops.

use std::time::Duration;

use bytes::Bytes;

use super::endpoint::{Endpoint, Found};
use super::form::{checked_key, parse_bounded, parse_flag, percent_decode, Form};
use super::mutate::{self, Answer, SetOptions};
use super::parse::{Method, RequestHead};
use crate::error::ApiError;
use crate::mutation::Mutation;
use crate::ops::{Limits, MAX_TTL_SECONDS};

/// Which API shape a reply must take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `/api/*`: text bodies, `value=<V>`.
    Seed,
    /// `/v1/keys/*`: raw bytes.
    V1,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Get {
        key: Box<[u8]>,
        style: Style,
    },
    Set {
        key: Box<[u8]>,
        value: Bytes,
        ttl: Duration,
        hot: bool,
        style: Style,
    },
    Delete {
        key: Box<[u8]>,
        style: Style,
    },
    /// A conditional or read-modify-write op, run on the key's owner;
    /// `answer` says how to show what it answers.
    Mutate {
        key: Box<[u8]>,
        mutation: Mutation,
        answer: Answer,
    },
    /// Which node and core own a key (for operators and benchmarks).
    Owner {
        key: Box<[u8]>,
    },
    /// Re-add a recovered node to the ring (`addr` only in static mode).
    SetPeer {
        name: String,
        addr: Option<String>,
    },
    /// Take a member out of the ring.
    RemovePeer {
        name: String,
    },
    Health,
    Ready,
    Metrics,
}

/// Route a complete request to `found`, the endpoint its path names
/// ([`Endpoint::find`]).
pub fn route(
    head: &RequestHead<'_>,
    found: Option<Found<'_>>,
    body: &[u8],
    limits: &Limits,
) -> Result<Command, ApiError> {
    let path = head.path();
    let Some(Found { endpoint, rest }) = found else {
        return Err(ApiError::NoRoute(path.to_string()));
    };
    let method = head.method;
    let not_allowed = || ApiError::MethodNotAllowed {
        method: head.method_text.to_string(),
        path: path.to_string(),
        allowed: endpoint.allowed(),
    };
    let reading = matches!(method, Method::Get | Method::Head);
    match endpoint {
        Endpoint::V1Key => return route_v1(head, rest, body, limits, not_allowed),
        Endpoint::SeedGet
        | Endpoint::Health
        | Endpoint::Ready
        | Endpoint::Metrics
        | Endpoint::V1Owner
            if !reading =>
        {
            return Err(not_allowed())
        }
        Endpoint::SeedSet
        | Endpoint::SeedDelete
        | Endpoint::SeedIncr
        | Endpoint::SeedAppend
        | Endpoint::SeedGetDel
        | Endpoint::SeedExpire
        | Endpoint::SetPeer
        | Endpoint::RemovePeer
            if method != Method::Post =>
        {
            return Err(not_allowed())
        }
        _ => {}
    }
    match endpoint {
        Endpoint::SeedGet => {
            let form = Form::parse(head.query().as_bytes(), &[])?;
            let key = form.key(limits, true)?;
            Ok(Command::Get {
                key,
                style: Style::Seed,
            })
        }
        Endpoint::SeedSet => {
            let form = Form::parse(head.query().as_bytes(), body)?;
            let key = form.key(limits, form.key_from_query)?;
            let value = form.get("value").unwrap_or_default();
            limits.check_value(value.len())?;
            let value = Bytes::copy_from_slice(value);
            let ttl = mutate::given_ttl(&form)?;
            let hot = parse_hot(form.get("hot"))?;
            let options = SetOptions::parse(&form)?;
            if options.is_plain(ttl) {
                return Ok(Command::Set {
                    key,
                    value,
                    ttl: ttl.map_or(Duration::ZERO, |t| t.ttl),
                    hot,
                    style: Style::Seed,
                });
            }
            let (mutation, answer) = options.mutation(value, ttl, hot)?;
            Ok(Command::Mutate {
                key,
                mutation,
                answer,
            })
        }
        Endpoint::SeedIncr | Endpoint::SeedAppend | Endpoint::SeedGetDel | Endpoint::SeedExpire => {
            let form = Form::parse(head.query().as_bytes(), body)?;
            let key = form.key(limits, form.key_from_query)?;
            let (mutation, answer) = match endpoint {
                Endpoint::SeedIncr => mutate::incr(&form)?,
                Endpoint::SeedAppend => mutate::append(&form, limits)?,
                Endpoint::SeedExpire => mutate::expire(&form)?,
                _ => (Mutation::Take, Answer::Take),
            };
            Ok(Command::Mutate {
                key,
                mutation,
                answer,
            })
        }
        Endpoint::SeedDelete => {
            let form = Form::parse(head.query().as_bytes(), body)?;
            let key = form.key(limits, form.key_from_query)?;
            Ok(Command::Delete {
                key,
                style: Style::Seed,
            })
        }
        Endpoint::SetPeer | Endpoint::RemovePeer => {
            let form = Form::parse(head.query().as_bytes(), body)?;
            let text = |field: &'static str| -> Result<Option<String>, ApiError> {
                form.get(field)
                    .filter(|v| !v.is_empty())
                    .map(|v| {
                        String::from_utf8(v.to_vec())
                            .map_err(|_| ApiError::invalid(field, "not UTF-8"))
                    })
                    .transpose()
            };
            let name = text("peer")?
                .ok_or_else(|| ApiError::invalid("peer", "missing (the node's name)"))?;
            if endpoint == Endpoint::RemovePeer {
                return Ok(Command::RemovePeer { name });
            }
            Ok(Command::SetPeer {
                name,
                addr: text("addr")?,
            })
        }
        Endpoint::Health => Ok(Command::Health),
        Endpoint::Ready => Ok(Command::Ready),
        Endpoint::Metrics => Ok(Command::Metrics),
        Endpoint::V1Owner => {
            let key = checked_key(&percent_decode(rest.as_bytes(), false)?, limits, true)?;
            Ok(Command::Owner { key })
        }
        Endpoint::V1Key => route_v1(head, rest, body, limits, not_allowed),
    }
}

fn route_v1(
    head: &RequestHead<'_>,
    encoded_key: &str,
    body: &[u8],
    limits: &Limits,
    not_allowed: impl Fn() -> ApiError,
) -> Result<Command, ApiError> {
    let key = checked_key(
        &percent_decode(encoded_key.as_bytes(), false)?,
        limits,
        true,
    )?;
    match head.method {
        Method::Get | Method::Head => Ok(Command::Get {
            key,
            style: Style::V1,
        }),
        Method::Delete => Ok(Command::Delete {
            key,
            style: Style::V1,
        }),
        Method::Put => {
            let query = Form::parse(head.query().as_bytes(), &[])?;
            let ttl = match query.get("ttl") {
                Some(text) => parse_bounded("ttl", text, MAX_TTL_SECONDS, "seconds")?,
                None => 0,
            };
            limits.check_value(body.len())?;
            Ok(Command::Set {
                key,
                value: Bytes::copy_from_slice(body),
                ttl: Duration::from_secs(ttl),
                hot: parse_hot(query.get("hot"))?,
                style: Style::V1,
            })
        }
        _ => Err(not_allowed()),
    }
}

fn parse_hot(text: Option<&[u8]>) -> Result<bool, ApiError> {
    parse_flag("hot", text)
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse_head;
    use super::*;

    const LIMITS: Limits = Limits {
        max_key_bytes: 8,
        max_value_bytes: 16,
    };

    fn run(raw: &str, body: &str) -> Result<Command, ApiError> {
        let head = parse_head(raw.as_bytes()).unwrap().unwrap();
        route(&head, Endpoint::find(head.path()), body.as_bytes(), &LIMITS)
    }

    #[test]
    fn seed_set_reads_form_body_and_query() {
        let cmd = run(
            "POST /api/set?hot=true HTTP/1.1\r\n\r\n",
            "key=foo&value=b+r%21&expire=10",
        )
        .unwrap();
        assert_eq!(
            cmd,
            Command::Set {
                key: b"foo".to_vec().into(),
                value: Bytes::from_static(b"b r!"),
                ttl: Duration::from_secs(600),
                hot: true,
                style: Style::Seed
            }
        );
        let Command::Set { value, .. } =
            run("POST /api/set?key=k&value=q HTTP/1.1\r\n\r\n", "value=b").unwrap()
        else {
            panic!()
        };
        assert_eq!(&value[..], b"b", "body wins over query");
    }

    #[test]
    fn bad_fields_are_400_with_the_field_named() {
        for (body, field) in [
            ("key=a&expire=abc", "expire"),
            ("key=a&expire=-1", "expire"),
            ("key=a&expire=4321", "expire"),
            ("key=a&hot=maybe", "hot"),
        ] {
            let err = run("POST /api/set HTTP/1.1\r\n\r\n", body).unwrap_err();
            assert_eq!(err.status(), 400);
            assert!(err.to_string().contains(field), "{err}");
        }
        assert_eq!(
            run("POST /api/set HTTP/1.1\r\n\r\n", "value=x").unwrap_err(),
            ApiError::MissingKey
        );
        assert_eq!(
            run("GET /api/get?key= HTTP/1.1\r\n\r\n", "").unwrap_err(),
            ApiError::MissingKey
        );
    }

    #[test]
    fn conditional_sets_and_new_routes_become_mutations() {
        use crate::mutation::{Lifetime, Presence};
        let plain = run("POST /api/set HTTP/1.1\r\n\r\n", "key=a&value=v&ttl=7").unwrap();
        assert!(
            matches!(plain, Command::Set { ttl, .. } if ttl == Duration::from_secs(7)),
            "a plain set keeps the write path: {plain:?}"
        );
        let nx = run("POST /api/set?if=absent HTTP/1.1\r\n\r\n", "key=a&value=v").unwrap();
        assert_eq!(
            nx,
            Command::Mutate {
                key: b"a".to_vec().into(),
                mutation: Mutation::Set {
                    value: Bytes::from_static(b"v"),
                    lifetime: Some(Lifetime::Forever),
                    condition: Presence::Absent,
                    hot: false,
                    return_previous: false
                },
                answer: Answer::Set {
                    condition: Presence::Absent,
                    show_value: false
                }
            }
        );
        let take = run("POST /api/getdel HTTP/1.1\r\n\r\n", "key=a").unwrap();
        assert!(matches!(
            take,
            Command::Mutate {
                mutation: Mutation::Take,
                ..
            }
        ));
        for path in ["/api/incr", "/api/append", "/api/getdel", "/api/expire"] {
            let err = run(&format!("GET {path}?key=a HTTP/1.1\r\n\r\n"), "").unwrap_err();
            assert_eq!((err.status(), err.allow_header()), (405, Some("POST")));
            let err = run(&format!("POST {path} HTTP/1.1\r\n\r\n"), "by=1").unwrap_err();
            assert_eq!(err, ApiError::MissingKey, "{path}");
        }
    }

    #[test]
    fn key_limits_depend_on_where_the_key_came_from() {
        let err = run("GET /api/get?key=123456789 HTTP/1.1\r\n\r\n", "").unwrap_err();
        assert_eq!(err.status(), 414);
        let err = run("POST /api/set HTTP/1.1\r\n\r\n", "key=123456789").unwrap_err();
        assert_eq!(err.status(), 400);
        let err = run(
            "POST /api/set HTTP/1.1\r\n\r\n",
            "key=a&value=12345678901234567",
        )
        .unwrap_err();
        assert_eq!(err.status(), 413);
    }

    #[test]
    fn v1_keys_are_byte_exact() {
        let cmd = run("PUT /v1/keys/a%00%FF+b?ttl=5 HTTP/1.1\r\n\r\n", "raw").unwrap();
        assert_eq!(
            cmd,
            Command::Set {
                key: b"a\x00\xff+b".to_vec().into(),
                value: Bytes::from_static(b"raw"),
                ttl: Duration::from_secs(5),
                hot: false,
                style: Style::V1
            }
        );
        assert_eq!(
            run("PUT /v1/keys/a?ttl=259201 HTTP/1.1\r\n\r\n", "")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            run("GET /v1/keys/ HTTP/1.1\r\n\r\n", "")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            run("GET /v1/keys/%zz HTTP/1.1\r\n\r\n", "")
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(
            run("GET /nope HTTP/1.1\r\n\r\n", "").unwrap_err().status(),
            404
        );
        let err = run("GET /api/set HTTP/1.1\r\n\r\n", "").unwrap_err();
        assert_eq!((err.status(), err.allow_header()), (405, Some("POST")));
        let err = run("POST /v1/keys/a HTTP/1.1\r\n\r\n", "").unwrap_err();
        assert_eq!(err.allow_header(), Some("GET, PUT, DELETE"));
    }

    #[test]
    fn removepeer_takes_the_name_from_body_or_query() {
        assert_eq!(
            run("POST /removepeer HTTP/1.1\r\n\r\n", "peer=n2").unwrap(),
            Command::RemovePeer { name: "n2".into() }
        );
        assert_eq!(
            run("POST /removepeer?peer=n3 HTTP/1.1\r\n\r\n", "").unwrap(),
            Command::RemovePeer { name: "n3".into() }
        );
        assert_eq!(
            run("POST /removepeer HTTP/1.1\r\n\r\n", "")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            run("GET /removepeer?peer=n2 HTTP/1.1\r\n\r\n", "")
                .unwrap_err()
                .status(),
            405
        );
    }
}
