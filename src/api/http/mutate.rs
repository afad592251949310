//! The HTTP face of the owner-side atomic ops (`crate::mutation`): which
//! form fields of `/api/set`, `/api/incr`, `/api/append`, `/api/getdel` and
//! `/api/expire` make which [`Mutation`], and which status and body each
//! [`Mutated`] answer becomes (pure; `conn.rs` runs and writes them).
//!
//! The answers follow one rule a script can test with `curl -f`: 200 when
//! the op did what it was asked, 412 when a condition (`if=...`, or
//! `persist=true`'s "the key has an expiry") did not hold and nothing
//! changed, 404 when the key the op needs does not exist. With `get=true`
//! the body is the value as `/api/get` shows it (`value=<V>`, or `not
//! found`) and the status alone says whether the write happened.

use std::time::Duration;

use bytes::Bytes;

use super::form::{parse_bounded, parse_flag, Form, MAX_EXPIRE_MINUTES};
use crate::error::ApiError;
use crate::mutation::{parse_integer, ExpireIf, Lifetime, Mutated, Mutation, Presence};
use crate::ops::{Limits, MAX_TTL_SECONDS};

const MAX_TTL_MS: u64 = MAX_TTL_SECONDS * 1000;

/// How to show a route's [`Mutated`] answer: what the route asked for and
/// the condition it set, for the words of a 412.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `/api/set` with `if`, `get`, `keepttl` or `ttl_ms`.
    Set {
        condition: Presence,
        show_value: bool,
    },
    /// `/api/getdel`.
    Take,
    /// `/api/expire`; `persist`: asked with `persist=true`.
    Expire {
        condition: ExpireIf,
        persist: bool,
        show_value: bool,
    },
    /// `/api/append`.
    Length,
    /// `/api/incr`.
    Count,
}

/// What goes on the wire for an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// One line of text (a newline is added).
    Line(String),
    /// A value, as `/api/get` shows it: `value=<V>`.
    Value(Bytes),
}

/// A TTL as one of the form fields gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GivenTtl {
    pub ttl: Duration,
    /// Given in minutes or seconds, so `--ttl-jitter` stretches it.
    pub jitter: bool,
}

impl GivenTtl {
    fn lifetime(self) -> Lifetime {
        if self.ttl.is_zero() {
            Lifetime::Forever
        } else {
            Lifetime::For {
                ttl: self.ttl,
                jitter: self.jitter,
            }
        }
    }
}

/// `expire` (minutes), `ttl` (seconds) or `ttl_ms` (milliseconds): at most
/// one of them, 0 meaning "never" as `/api/set` has always read it.
pub(super) fn given_ttl(form: &Form) -> Result<Option<GivenTtl>, ApiError> {
    let given: Vec<&str> = ["expire", "ttl", "ttl_ms"]
        .into_iter()
        .filter(|f| form.get(f).is_some())
        .collect();
    if given.len() > 1 {
        return Err(ApiError::invalid(
            "expire",
            format!(
                "give one of expire (minutes), ttl (seconds), ttl_ms (milliseconds), not {}",
                given.join(" and ")
            ),
        ));
    }
    let ttl = if let Some(text) = form.get("expire") {
        let minutes = parse_bounded("expire", text, MAX_EXPIRE_MINUTES, "minutes")?;
        GivenTtl {
            ttl: Duration::from_secs(minutes * 60),
            jitter: true,
        }
    } else if let Some(text) = form.get("ttl") {
        GivenTtl {
            ttl: Duration::from_secs(parse_bounded("ttl", text, MAX_TTL_SECONDS, "seconds")?),
            jitter: true,
        }
    } else if let Some(text) = form.get("ttl_ms") {
        GivenTtl {
            ttl: Duration::from_millis(parse_bounded("ttl_ms", text, MAX_TTL_MS, "milliseconds")?),
            jitter: false,
        }
    } else {
        return Ok(None);
    };
    Ok(Some(ttl))
}

fn flag(form: &Form, field: &'static str) -> Result<bool, ApiError> {
    parse_flag(field, form.get(field))
}

/// `/api/set`'s fields beyond the seed API's (`if`, `get`, `keepttl`).
pub(super) struct SetOptions {
    pub condition: Presence,
    pub show_value: bool,
    pub keep_ttl: bool,
}

impl SetOptions {
    pub(super) fn parse(form: &Form) -> Result<SetOptions, ApiError> {
        let condition = match form.get("if") {
            None => Presence::Any,
            Some(b"absent") => Presence::Absent,
            Some(b"present") => Presence::Present,
            Some(other) => {
                return Err(ApiError::invalid(
                    "if",
                    format!(
                        "{:?} is not a condition of /api/set (absent, present)",
                        String::from_utf8_lossy(other)
                    ),
                ))
            }
        };
        Ok(SetOptions {
            condition,
            show_value: flag(form, "get")?,
            keep_ttl: flag(form, "keepttl")?,
        })
    }

    /// A write `/api/set` has always done (the plain write path, with
    /// jitter on every TTL): no condition, no old value, no kept or exact TTL.
    pub fn is_plain(&self, ttl: Option<GivenTtl>) -> bool {
        self.condition == Presence::Any
            && !self.show_value
            && !self.keep_ttl
            && ttl.is_none_or(|t| t.jitter)
    }

    /// The mutation and how to show its answer.
    pub fn mutation(
        self,
        value: Bytes,
        ttl: Option<GivenTtl>,
        hot: bool,
    ) -> Result<(Mutation, Answer), ApiError> {
        let lifetime = match (self.keep_ttl, ttl) {
            (true, Some(_)) => {
                return Err(ApiError::invalid(
                    "keepttl",
                    "keeps the key's expiry, so expire, ttl and ttl_ms cannot be given with it",
                ))
            }
            (true, None) => None,
            (false, ttl) => Some(ttl.map_or(Lifetime::Forever, GivenTtl::lifetime)),
        };
        Ok((
            Mutation::Set {
                value,
                lifetime,
                condition: self.condition,
                hot,
                return_previous: self.show_value,
            },
            Answer::Set {
                condition: self.condition,
                show_value: self.show_value,
            },
        ))
    }
}

/// `/api/incr`: `by`, a decimal i64 (default 1).
pub(super) fn incr(form: &Form) -> Result<(Mutation, Answer), ApiError> {
    let delta = match form.get("by") {
        None => 1,
        Some(text) => parse_integer(text).map_err(|_| {
            ApiError::invalid(
                "by",
                format!(
                    "{:?} is not a whole number between {} and {}",
                    String::from_utf8_lossy(text),
                    i64::MIN,
                    i64::MAX
                ),
            )
        })?,
    };
    Ok((Mutation::IncrBy { delta }, Answer::Count))
}

/// `/api/append`: `value`, the bytes to append (required, may be empty).
pub(super) fn append(form: &Form, limits: &Limits) -> Result<(Mutation, Answer), ApiError> {
    let suffix = form
        .get("value")
        .ok_or_else(|| ApiError::invalid("value", "missing (the bytes to append)"))?;
    limits.check_value(suffix.len())?;
    Ok((
        Mutation::Append {
            suffix: Bytes::copy_from_slice(suffix),
        },
        Answer::Length,
    ))
}

/// `/api/expire`: one of `expire`/`ttl`/`ttl_ms` (more than 0) or
/// `persist=true`; `if` (Redis's `nx`, `xx`, `gt`, `lt`, `xx,lt`);
/// `get=true` to answer with the value (`GETEX`).
pub(super) fn expire(form: &Form) -> Result<(Mutation, Answer), ApiError> {
    let ttl = given_ttl(form)?;
    let persist = flag(form, "persist")?;
    let show_value = flag(form, "get")?;
    let condition = expire_condition(form.get("if"))?;
    let (lifetime, condition) =
        match (ttl, persist) {
            (Some(_), true) => {
                return Err(ApiError::invalid(
                    "persist",
                    "removes the expiry, so expire, ttl and ttl_ms cannot be given with it",
                ))
            }
            (None, false) => {
                return Err(ApiError::invalid(
                    "expire",
                    "missing: give expire (minutes), ttl (seconds), ttl_ms (milliseconds) \
                 or persist=true",
                ))
            }
            (Some(ttl), false) if ttl.ttl.is_zero() => return Err(ApiError::invalid(
                "expire",
                "0 is not an expiry here (persist=true removes the expiry, /api/delete the key)",
            )),
            (Some(ttl), false) => (ttl.lifetime(), condition),
            (None, true) if condition != ExpireIf::Always => {
                return Err(ApiError::invalid(
                    "if",
                    "persist=true takes no condition (it applies when the key has an expiry)",
                ))
            }
            // Redis's PERSIST: only a key with an expiry changes.
            (None, true) => (Lifetime::Forever, ExpireIf::HasExpiry),
        };
    Ok((
        Mutation::Expire {
            lifetime,
            condition,
        },
        Answer::Expire {
            condition,
            persist,
            show_value,
        },
    ))
}

/// Redis 7's `EXPIRE` options as a comma-separated `if`.
fn expire_condition(text: Option<&[u8]>) -> Result<ExpireIf, ApiError> {
    let Some(text) = text else {
        return Ok(ExpireIf::Always);
    };
    let mut words: Vec<&[u8]> = text.split(|&b| b == b',').collect();
    words.sort_unstable();
    let condition = match words.as_slice() {
        [b"nx"] => ExpireIf::NoExpiry,
        [b"xx"] => ExpireIf::HasExpiry,
        // No expiry counts as infinite: a later one needs an expiry already.
        [b"gt"] | [b"gt", b"xx"] => ExpireIf::Later,
        [b"lt"] => ExpireIf::Earlier,
        [b"lt", b"xx"] => ExpireIf::HasExpiryAndEarlier,
        _ => {
            return Err(ApiError::invalid(
                "if",
                format!(
                    "{:?} is not a condition of /api/expire (nx, xx, gt, lt, xx,lt)",
                    String::from_utf8_lossy(text)
                ),
            ))
        }
    };
    Ok(condition)
}

/// The status and body for `mutated`, the answer to a mutation `answer`
/// describes. `Err` only if the answer is not the kind the op gives (a bug).
pub fn respond(answer: Answer, mutated: Mutated) -> Result<(u16, Body), ApiError> {
    let value_or_not_found = |value: Option<Bytes>| match value {
        Some(value) => Body::Value(value),
        None => Body::Line("not found".into()),
    };
    let reply = match (answer, mutated) {
        (
            Answer::Set {
                condition,
                show_value,
            },
            Mutated::Set { written, previous },
        ) => {
            let status = if written { 200 } else { 412 };
            let body = if show_value {
                value_or_not_found(previous)
            } else if written {
                Body::Line("ok".into())
            } else if condition == Presence::Absent {
                Body::Line("not written: the key exists (if=absent)".into())
            } else {
                Body::Line("not written: the key does not exist (if=present)".into())
            };
            (status, body)
        }
        (Answer::Take, Mutated::Taken(Some(value))) => (200, Body::Value(value)),
        (Answer::Take, Mutated::Taken(None)) => (404, Body::Line("not found".into())),
        (_, Mutated::Expire { value: None, .. }) => (404, Body::Line("not found".into())),
        (
            Answer::Expire {
                condition,
                persist,
                show_value,
            },
            Mutated::Expire { changed, value },
        ) => {
            let status = if changed { 200 } else { 412 };
            let body = if show_value {
                value_or_not_found(value)
            } else if changed {
                Body::Line("ok".into())
            } else if persist {
                Body::Line("not changed: the key has no expiry".into())
            } else {
                Body::Line(format!("not changed: {}", unmet(condition)))
            };
            (status, body)
        }
        (Answer::Length, Mutated::Appended { len }) => (200, Body::Line(len.to_string())),
        (Answer::Count, Mutated::Counted(n)) => (200, Body::Line(n.to_string())),
        (answer, mutated) => {
            return Err(ApiError::Internal(format!(
                "{answer:?} answered with {mutated:?}"
            )))
        }
    };
    Ok(reply)
}

/// Why an `EXPIRE` condition did not hold, in words.
fn unmet(condition: ExpireIf) -> &'static str {
    match condition {
        ExpireIf::Always => "the key does not exist",
        ExpireIf::NoExpiry => "the key has an expiry (if=nx)",
        ExpireIf::HasExpiry => "the key has no expiry (if=xx)",
        ExpireIf::Later => "the new expiry is not later (if=gt)",
        ExpireIf::Earlier => "the new expiry is not earlier (if=lt)",
        ExpireIf::HasExpiryAndEarlier => {
            "the key has no expiry, or the new one is not earlier (if=xx,lt)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_key_bytes: 8,
        max_value_bytes: 16,
    };

    fn form(body: &str) -> Form {
        Form::parse(b"", body.as_bytes()).unwrap()
    }

    fn bad(result: Result<(Mutation, Answer), ApiError>, field: &str) {
        let err = result.unwrap_err();
        assert_eq!(err.status(), 400, "{err}");
        assert!(err.to_string().contains(field), "{err} should name {field}");
    }

    #[test]
    fn ttl_fields_carry_their_unit_and_jitter() {
        let ttl = |body| given_ttl(&form(body)).unwrap();
        assert_eq!(ttl("key=a"), None);
        assert_eq!(
            ttl("expire=2"),
            Some(GivenTtl {
                ttl: Duration::from_secs(120),
                jitter: true
            })
        );
        assert_eq!(
            ttl("ttl=5"),
            Some(GivenTtl {
                ttl: Duration::from_secs(5),
                jitter: true
            })
        );
        assert_eq!(
            ttl("ttl_ms=1500"),
            Some(GivenTtl {
                ttl: Duration::from_millis(1500),
                jitter: false
            })
        );
        for body in ["ttl=1&ttl_ms=1", "ttl_ms=259200001", "ttl=x", "ttl_ms=-1"] {
            assert_eq!(given_ttl(&form(body)).unwrap_err().status(), 400, "{body}");
        }
    }

    #[test]
    fn set_options_make_the_redis_set() {
        let options = SetOptions::parse(&form("if=absent&get=true")).unwrap();
        assert!(!options.is_plain(None));
        let (m, a) = options
            .mutation(Bytes::from_static(b"v"), None, true)
            .unwrap();
        assert_eq!(
            m,
            Mutation::Set {
                value: Bytes::from_static(b"v"),
                lifetime: Some(Lifetime::Forever),
                condition: Presence::Absent,
                hot: true,
                return_previous: true
            }
        );
        assert_eq!(
            a,
            Answer::Set {
                condition: Presence::Absent,
                show_value: true
            }
        );
        let plain = SetOptions::parse(&form("key=a")).unwrap();
        let seconds = given_ttl(&form("ttl=5")).unwrap();
        assert!(plain.is_plain(seconds));
        let millis = given_ttl(&form("ttl_ms=5")).unwrap();
        assert!(!plain.is_plain(millis), "exact TTLs need the mutation path");
        let (m, _) = plain.mutation(Bytes::new(), millis, false).unwrap();
        assert!(matches!(
            m,
            Mutation::Set { lifetime: Some(Lifetime::For { ttl, jitter: false }), .. }
                if ttl == Duration::from_millis(5)
        ));
        let keep = SetOptions::parse(&form("keepttl=1&if=present")).unwrap();
        let (m, _) = keep.mutation(Bytes::new(), None, false).unwrap();
        assert!(matches!(
            m,
            Mutation::Set {
                lifetime: None,
                condition: Presence::Present,
                ..
            }
        ));
        let keep = SetOptions::parse(&form("keepttl=true")).unwrap();
        bad(keep.mutation(Bytes::new(), seconds, false), "keepttl");
        for (body, field) in [
            ("if=nx", "if"),
            ("get=yes", "get"),
            ("keepttl=2", "keepttl"),
        ] {
            let err = SetOptions::parse(&form(body)).err().unwrap();
            assert_eq!(err.status(), 400);
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn incr_and_append_fields() {
        assert_eq!(
            incr(&form("key=a")).unwrap().0,
            Mutation::IncrBy { delta: 1 }
        );
        assert_eq!(
            incr(&form("by=-9223372036854775808")).unwrap().0,
            Mutation::IncrBy { delta: i64::MIN }
        );
        for by in ["by=", "by=1.5", "by=x", "by=%2B1", "by=9223372036854775808"] {
            bad(incr(&form(by)), "by");
        }
        assert_eq!(
            append(&form("value=ab+c"), &LIMITS).unwrap().0,
            Mutation::Append {
                suffix: Bytes::from_static(b"ab c")
            }
        );
        assert!(append(&form("value="), &LIMITS).is_ok(), "empty is allowed");
        bad(append(&form("key=a"), &LIMITS), "value");
        let err = append(&form("value=12345678901234567"), &LIMITS).unwrap_err();
        assert_eq!(err.status(), 413);
    }

    #[test]
    fn expire_fields_follow_redis_7() {
        let (m, a) = expire(&form("ttl=10&if=xx,lt&get=1")).unwrap();
        assert_eq!(
            m,
            Mutation::Expire {
                lifetime: Lifetime::For {
                    ttl: Duration::from_secs(10),
                    jitter: true
                },
                condition: ExpireIf::HasExpiryAndEarlier
            }
        );
        assert_eq!(
            a,
            Answer::Expire {
                condition: ExpireIf::HasExpiryAndEarlier,
                persist: false,
                show_value: true
            }
        );
        for (cond, want) in [
            ("nx", ExpireIf::NoExpiry),
            ("xx", ExpireIf::HasExpiry),
            ("gt", ExpireIf::Later),
            ("xx,gt", ExpireIf::Later),
            ("lt", ExpireIf::Earlier),
            ("lt,xx", ExpireIf::HasExpiryAndEarlier),
        ] {
            let (m, _) = expire(&form(&format!("ttl_ms=5&if={cond}"))).unwrap();
            assert!(
                matches!(m, Mutation::Expire { condition, .. } if condition == want),
                "{cond}"
            );
        }
        let (m, _) = expire(&form("persist=true")).unwrap();
        assert_eq!(
            m,
            Mutation::Expire {
                lifetime: Lifetime::Forever,
                condition: ExpireIf::HasExpiry
            }
        );
        for (body, field) in [
            ("key=a", "expire"),
            ("ttl=0", "expire"),
            ("ttl=5&persist=true", "persist"),
            ("persist=true&if=nx", "if"),
            ("ttl=5&if=nx,gt", "if"),
            ("ttl=5&if=gt,lt", "if"),
            ("ttl=5&if=", "if"),
            ("ttl=5&if=NX", "if"),
            ("expire=1&ttl=5", "expire"),
        ] {
            bad(expire(&form(body)), field);
        }
    }

    fn line(s: &str) -> Body {
        Body::Line(s.into())
    }

    #[test]
    fn answers_are_200_412_or_404() {
        let v = || Bytes::from_static(b"old");
        let set = |condition, show_value| Answer::Set {
            condition,
            show_value,
        };
        let wrote = |written, previous| Mutated::Set { written, previous };
        let cases = [
            (
                set(Presence::Any, false),
                wrote(true, None),
                200,
                line("ok"),
            ),
            (
                set(Presence::Absent, false),
                wrote(false, None),
                412,
                line("not written: the key exists (if=absent)"),
            ),
            (
                set(Presence::Present, false),
                wrote(false, None),
                412,
                line("not written: the key does not exist (if=present)"),
            ),
            (
                set(Presence::Absent, true),
                wrote(false, Some(v())),
                412,
                Body::Value(v()),
            ),
            (
                set(Presence::Any, true),
                wrote(true, None),
                200,
                line("not found"),
            ),
            (
                Answer::Take,
                Mutated::Taken(Some(v())),
                200,
                Body::Value(v()),
            ),
            (Answer::Take, Mutated::Taken(None), 404, line("not found")),
            (Answer::Count, Mutated::Counted(-3), 200, line("-3")),
            (Answer::Length, Mutated::Appended { len: 7 }, 200, line("7")),
        ];
        for (answer, mutated, status, body) in cases {
            assert_eq!(
                respond(answer, mutated.clone()).unwrap(),
                (status, body),
                "{answer:?} {mutated:?}"
            );
        }
        let expire = |condition, persist, show_value| Answer::Expire {
            condition,
            persist,
            show_value,
        };
        let changed = |changed, value| Mutated::Expire { changed, value };
        let cases = [
            (
                expire(ExpireIf::Always, false, false),
                changed(true, Some(v())),
                200,
                line("ok"),
            ),
            (
                expire(ExpireIf::Always, false, false),
                changed(false, None),
                404,
                line("not found"),
            ),
            (
                expire(ExpireIf::Later, false, false),
                changed(false, Some(v())),
                412,
                line("not changed: the new expiry is not later (if=gt)"),
            ),
            (
                expire(ExpireIf::HasExpiry, true, false),
                changed(false, Some(v())),
                412,
                line("not changed: the key has no expiry"),
            ),
            (
                expire(ExpireIf::Always, false, true),
                changed(true, Some(v())),
                200,
                Body::Value(v()),
            ),
        ];
        for (answer, mutated, status, body) in cases {
            assert_eq!(
                respond(answer, mutated.clone()).unwrap(),
                (status, body),
                "{answer:?} {mutated:?}"
            );
        }
        assert_eq!(
            respond(Answer::Count, Mutated::Taken(None))
                .unwrap_err()
                .status(),
            500
        );
    }
}
