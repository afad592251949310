//! Conditional and read-modify-write ops on one key: what each does to the
//! key's entry, decided from the entry as it is and the time (pure).
//!
//! A [`Mutation`] travels like a write: to the key's owner node, to the
//! key's home core there, where the engine reads the entry, asks
//! [`Mutation::apply`] what to do and writes the result before it looks at
//! the next op. One core runs one op at a time, so `SET NX`, `INCR`,
//! `APPEND` or `GETDEL` are atomic per key across the cluster, whichever
//! node and protocol they came in by. The engine then treats the change as
//! any other write (a hot key's copies are updated before the answer).
//!
//! The semantics are Redis's (the commands are named beside each variant)
//! with NexusCache's TTLs: absolute from when the owner applies the op,
//! stretched by `--ttl-jitter` only when they were given in seconds.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::store::{Found, TtlJitter};

/// Longest decimal form of an i64 (`-9223372036854775808`).
const MAX_INTEGER_DIGITS: usize = 20;

/// The key's live entry as the owner holds it: what a mutation decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Bytes,
    pub hot: bool,
    /// `None`: never expires.
    pub expires_at: Option<Instant>,
}

impl From<Found> for Entry {
    fn from(found: Found) -> Entry {
        Entry {
            value: found.value,
            hot: found.hot,
            expires_at: found.expires_at,
        }
    }
}

/// When a written entry expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Never.
    Forever,
    /// `ttl` after the owner applies the op. `jitter`: the TTL was given in
    /// seconds, so `--ttl-jitter` stretches it (as it does HTTP's `ttl`).
    For { ttl: Duration, jitter: bool },
    /// Already over (Redis: an expiry at or before now): the key goes.
    Over,
}

/// `SET`'s condition on the key's presence (`NX`, `XX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Any,
    /// `NX`, `SETNX`.
    Absent,
    /// `XX`.
    Present,
}

/// `EXPIRE`'s condition on the key's current expiry (Redis 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireIf {
    Always,
    /// `NX`: the key has no expiry.
    NoExpiry,
    /// `XX`: the key has one.
    HasExpiry,
    /// `GT`: the new expiry is later (no expiry counts as infinite).
    Later,
    /// `LT`: the new expiry is earlier (no expiry counts as infinite).
    Earlier,
    /// `XX LT`: the key has an expiry and the new one is earlier.
    HasExpiryAndEarlier,
}

/// What to do to one key, atomically on its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// `SET` with `NX|XX|GET|KEEPTTL|PX`, `SETNX`, `GETSET`, `SETEX`,
    /// `PSETEX`. `lifetime: None` keeps the key's expiry (`KEEPTTL`).
    Set {
        value: Bytes,
        lifetime: Option<Lifetime>,
        condition: Presence,
        /// Copied to every node's hot tier (`hot=true`).
        hot: bool,
        /// Answer with the value before (`GET`, `GETSET`).
        return_previous: bool,
    },
    /// `GETDEL`: remove the key, answering with its value.
    Take,
    /// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`, `PERSIST` (`Forever`
    /// if the key has an expiry), `GETEX` (answers with the value).
    Expire {
        lifetime: Lifetime,
        condition: ExpireIf,
    },
    /// `APPEND`: a missing key is created with `suffix`.
    Append { suffix: Bytes },
    /// `INCR`, `DECR`, `INCRBY`, `DECRBY`: a missing key counts as 0.
    IncrBy { delta: i64 },
}

/// What a mutation answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutated {
    /// `written`: the condition held. `previous`: the value before, when
    /// asked for and there was one.
    Set {
        written: bool,
        previous: Option<Bytes>,
    },
    /// The removed value; `None`: there was none.
    Taken(Option<Bytes>),
    /// `changed`: the key exists and the condition held. `value`: the
    /// key's value before the change (`GETEX`), if it exists.
    Expire { changed: bool, value: Option<Bytes> },
    /// The value's length after the append.
    Appended { len: u64 },
    /// The number after the increment.
    Counted(i64),
}

/// Why a mutation was refused; the entry is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Redis's words: the value is not a decimal i64 (or the increment is
    /// not one).
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    #[error("increment or decrement would overflow")]
    Overflow,
    /// `APPEND` would make the value longer than `--max-value-bytes`.
    #[error("string exceeds maximum allowed size ({len} bytes, limit {limit})")]
    ValueTooLarge { len: u64, limit: u64 },
}

/// How the entry changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing is written (a condition did not hold).
    Keep,
    Write {
        value: Bytes,
        expires_at: Option<Instant>,
        hot: bool,
    },
    Remove,
}

/// The change to make and the answer to give once it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub change: Change,
    pub answer: Mutated,
}

/// What a mutation needs besides the entry: the time, the jitter policy and
/// its random source, and the value limit.
pub struct Context<'a> {
    pub now: Instant,
    pub jitter: &'a TtlJitter,
    pub rng: &'a mut fastrand::Rng,
    pub max_value_bytes: u64,
}

impl Context<'_> {
    /// When an entry given `lifetime` now expires; `Err` for `Over`.
    fn expiry(&mut self, lifetime: Lifetime) -> Result<Option<Instant>, Over> {
        match lifetime {
            Lifetime::Forever => Ok(None),
            Lifetime::For { ttl, jitter: true } => Ok(self.jitter.expiry(self.now, ttl, self.rng)),
            Lifetime::For { ttl, jitter: false } if ttl.is_zero() => Ok(None),
            Lifetime::For { ttl, jitter: false } => Ok(self.now.checked_add(ttl)),
            Lifetime::Over => Err(Over),
        }
    }

    /// The deadline conditions compare (`None`: never); jitter is not
    /// drawn for a comparison.
    fn deadline(&self, lifetime: Lifetime) -> Option<Instant> {
        match lifetime {
            Lifetime::Forever => None,
            Lifetime::For { ttl, .. } if ttl.is_zero() => None,
            Lifetime::For { ttl, .. } => self.now.checked_add(ttl),
            Lifetime::Over => Some(self.now),
        }
    }
}

/// The lifetime is already over.
struct Over;

impl Mutation {
    /// The command family, for logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Mutation::Set { .. } => "set",
            Mutation::Take => "getdel",
            Mutation::Expire { .. } => "expire",
            Mutation::Append { .. } => "append",
            Mutation::IncrBy { .. } => "incrby",
        }
    }

    /// Decide what this mutation does to `current` (the key's live entry,
    /// if any).
    pub fn apply(
        &self,
        current: Option<&Entry>,
        cx: &mut Context<'_>,
    ) -> Result<Decision, Refusal> {
        match self {
            Mutation::Set {
                value,
                lifetime,
                condition,
                hot,
                return_previous,
            } => {
                let holds = match condition {
                    Presence::Any => true,
                    Presence::Absent => current.is_none(),
                    Presence::Present => current.is_some(),
                };
                let previous = if *return_previous {
                    current.map(|hit| hit.value.clone())
                } else {
                    None
                };
                let change = if !holds {
                    Change::Keep
                } else {
                    let expires_at = match lifetime {
                        None => Ok(current.and_then(|hit| hit.expires_at)),
                        Some(lifetime) => cx.expiry(*lifetime),
                    };
                    match expires_at {
                        Ok(expires_at) => Change::Write {
                            value: value.clone(),
                            expires_at,
                            hot: *hot,
                        },
                        Err(Over) => Change::Remove,
                    }
                };
                Ok(Decision {
                    change,
                    answer: Mutated::Set {
                        written: holds,
                        previous,
                    },
                })
            }
            Mutation::Take => Ok(Decision {
                change: if current.is_some() {
                    Change::Remove
                } else {
                    Change::Keep
                },
                answer: Mutated::Taken(current.map(|hit| hit.value.clone())),
            }),
            Mutation::Expire {
                lifetime,
                condition,
            } => Ok(expire(current, *lifetime, *condition, cx)),
            Mutation::Append { suffix } => {
                let (mut value, expires_at, hot) = match current {
                    Some(hit) => {
                        let mut value = BytesMut::with_capacity(hit.value.len() + suffix.len());
                        value.extend_from_slice(&hit.value);
                        (value, hit.expires_at, hit.hot)
                    }
                    None => (BytesMut::with_capacity(suffix.len()), None, false),
                };
                let len = (value.len() + suffix.len()) as u64;
                if len > cx.max_value_bytes {
                    return Err(Refusal::ValueTooLarge {
                        len,
                        limit: cx.max_value_bytes,
                    });
                }
                value.extend_from_slice(suffix);
                Ok(Decision {
                    change: Change::Write {
                        value: value.freeze(),
                        expires_at,
                        hot,
                    },
                    answer: Mutated::Appended { len },
                })
            }
            Mutation::IncrBy { delta } => {
                let (number, expires_at, hot) = match current {
                    Some(hit) => (parse_integer(&hit.value)?, hit.expires_at, hit.hot),
                    None => (0, None, false),
                };
                let number = number.checked_add(*delta).ok_or(Refusal::Overflow)?;
                Ok(Decision {
                    change: Change::Write {
                        value: Bytes::from(number.to_string()),
                        expires_at,
                        hot,
                    },
                    answer: Mutated::Counted(number),
                })
            }
        }
    }
}

fn expire(
    current: Option<&Entry>,
    lifetime: Lifetime,
    condition: ExpireIf,
    cx: &mut Context<'_>,
) -> Decision {
    let Some(hit) = current else {
        return Decision {
            change: Change::Keep,
            answer: Mutated::Expire {
                changed: false,
                value: None,
            },
        };
    };
    let new = cx.deadline(lifetime);
    // `None` is "never", which is later than any deadline.
    let later = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a > b,
    };
    let holds = match condition {
        ExpireIf::Always => true,
        ExpireIf::NoExpiry => hit.expires_at.is_none(),
        ExpireIf::HasExpiry => hit.expires_at.is_some(),
        ExpireIf::Later => later(new, hit.expires_at),
        ExpireIf::Earlier => later(hit.expires_at, new),
        ExpireIf::HasExpiryAndEarlier => hit.expires_at.is_some() && later(hit.expires_at, new),
    };
    let change = if !holds {
        Change::Keep
    } else {
        match cx.expiry(lifetime) {
            Ok(expires_at) => Change::Write {
                value: hit.value.clone(),
                expires_at,
                hot: hit.hot,
            },
            Err(Over) => Change::Remove,
        }
    };
    Decision {
        change,
        answer: Mutated::Expire {
            changed: holds,
            value: Some(hit.value.clone()),
        },
    }
}

/// A value as Redis's `INCR` reads it: a decimal i64 with an optional
/// `-`, no spaces, no `+`, no leading zeros (except `0` itself).
pub fn parse_integer(value: &[u8]) -> Result<i64, Refusal> {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    let canonical = !digits.is_empty()
        && value.len() <= MAX_INTEGER_DIGITS
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || value == b"0");
    if !canonical {
        return Err(Refusal::NotAnInteger);
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(Refusal::NotAnInteger)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Clock {
        now: Instant,
        jitter: TtlJitter,
        rng: fastrand::Rng,
    }

    impl Clock {
        fn new(jitter: TtlJitter) -> Clock {
            Clock {
                now: Instant::now(),
                jitter,
                rng: fastrand::Rng::with_seed(7),
            }
        }

        fn apply(&mut self, m: &Mutation, current: Option<&Entry>) -> Result<Decision, Refusal> {
            let mut cx = Context {
                now: self.now,
                jitter: &self.jitter,
                rng: &mut self.rng,
                max_value_bytes: 16,
            };
            m.apply(current, &mut cx)
        }
    }

    fn no_jitter() -> Clock {
        Clock::new(TtlJitter::new(0.0, Duration::ZERO))
    }

    fn hit(value: &'static str, expires_at: Option<Instant>, hot: bool) -> Entry {
        Entry {
            value: Bytes::from_static(value.as_bytes()),
            hot,
            expires_at,
        }
    }

    fn set(value: &'static str, condition: Presence) -> Mutation {
        Mutation::Set {
            value: Bytes::from_static(value.as_bytes()),
            lifetime: Some(Lifetime::Forever),
            condition,
            hot: false,
            return_previous: true,
        }
    }

    fn secs(n: u64) -> Lifetime {
        Lifetime::For {
            ttl: Duration::from_secs(n),
            jitter: true,
        }
    }

    fn millis(n: u64) -> Lifetime {
        Lifetime::For {
            ttl: Duration::from_millis(n),
            jitter: false,
        }
    }

    #[test]
    fn set_conditions_decide_on_presence_and_answer_the_old_value() {
        let mut c = no_jitter();
        let old = hit("old", None, false);
        let nx = c.apply(&set("new", Presence::Absent), Some(&old)).unwrap();
        assert_eq!(nx.change, Change::Keep);
        assert_eq!(
            nx.answer,
            Mutated::Set {
                written: false,
                previous: Some(Bytes::from_static(b"old"))
            }
        );
        let nx = c.apply(&set("new", Presence::Absent), None).unwrap();
        assert!(matches!(nx.change, Change::Write { .. }));
        assert_eq!(
            nx.answer,
            Mutated::Set {
                written: true,
                previous: None
            }
        );
        let xx = c.apply(&set("new", Presence::Present), None).unwrap();
        assert_eq!(xx.change, Change::Keep);
        let xx = c.apply(&set("new", Presence::Present), Some(&old)).unwrap();
        assert_eq!(
            xx.change,
            Change::Write {
                value: Bytes::from_static(b"new"),
                expires_at: None,
                hot: false
            }
        );
    }

    #[test]
    fn keepttl_keeps_the_expiry_and_a_plain_set_clears_it() {
        let mut c = no_jitter();
        let at = c.now + Duration::from_secs(30);
        let old = hit("old", Some(at), false);
        let keep = Mutation::Set {
            value: Bytes::from_static(b"new"),
            lifetime: None,
            condition: Presence::Any,
            hot: false,
            return_previous: false,
        };
        let d = c.apply(&keep, Some(&old)).unwrap();
        assert!(matches!(d.change, Change::Write { expires_at: Some(x), .. } if x == at));
        let d = c.apply(&set("new", Presence::Any), Some(&old)).unwrap();
        assert!(matches!(
            d.change,
            Change::Write {
                expires_at: None,
                ..
            }
        ));
    }

    #[test]
    fn jitter_stretches_seconds_only() {
        let mut c = Clock::new(TtlJitter::new(0.5, Duration::from_secs(100)));
        let mut stretched = false;
        for _ in 0..20 {
            let m = Mutation::Set {
                value: Bytes::from_static(b"v"),
                lifetime: Some(secs(10)),
                condition: Presence::Any,
                hot: false,
                return_previous: false,
            };
            let Change::Write {
                expires_at: Some(at),
                ..
            } = c.apply(&m, None).unwrap().change
            else {
                panic!("not written");
            };
            assert!(at >= c.now + Duration::from_secs(10));
            assert!(at <= c.now + Duration::from_secs(15));
            stretched |= at > c.now + Duration::from_secs(10);
            let m = Mutation::Set {
                value: Bytes::from_static(b"v"),
                lifetime: Some(millis(10_000)),
                condition: Presence::Any,
                hot: false,
                return_previous: false,
            };
            let Change::Write { expires_at, .. } = c.apply(&m, None).unwrap().change else {
                panic!("not written");
            };
            assert_eq!(expires_at, Some(c.now + Duration::from_secs(10)));
        }
        assert!(stretched, "20 draws of up to 5 s extra were all zero");
    }

    #[test]
    fn an_expiry_already_over_removes_the_key() {
        let mut c = no_jitter();
        let old = hit("old", None, false);
        let m = Mutation::Set {
            value: Bytes::from_static(b"v"),
            lifetime: Some(Lifetime::Over),
            condition: Presence::Any,
            hot: false,
            return_previous: false,
        };
        assert_eq!(c.apply(&m, Some(&old)).unwrap().change, Change::Remove);
        let m = Mutation::Expire {
            lifetime: Lifetime::Over,
            condition: ExpireIf::Always,
        };
        let d = c.apply(&m, Some(&old)).unwrap();
        assert_eq!(d.change, Change::Remove);
        assert!(matches!(d.answer, Mutated::Expire { changed: true, .. }));
    }

    #[test]
    fn getdel_takes_the_value_once() {
        let mut c = no_jitter();
        let old = hit("v", None, false);
        let d = c.apply(&Mutation::Take, Some(&old)).unwrap();
        assert_eq!(d.change, Change::Remove);
        assert_eq!(d.answer, Mutated::Taken(Some(Bytes::from_static(b"v"))));
        let d = c.apply(&Mutation::Take, None).unwrap();
        assert_eq!(d.change, Change::Keep);
        assert_eq!(d.answer, Mutated::Taken(None));
    }

    #[test]
    fn expire_conditions_follow_redis_7() {
        let mut c = no_jitter();
        let now = c.now;
        let persistent = hit("v", None, true);
        let in_10s = hit("v", Some(now + Duration::from_secs(10)), false);
        let cases = [
            // (condition, entry, new ttl in s, changed)
            (ExpireIf::Always, &persistent, 5, true),
            (ExpireIf::NoExpiry, &persistent, 5, true),
            (ExpireIf::NoExpiry, &in_10s, 5, false),
            (ExpireIf::HasExpiry, &persistent, 5, false),
            (ExpireIf::HasExpiry, &in_10s, 5, true),
            (ExpireIf::Later, &persistent, 500, false),
            (ExpireIf::Later, &in_10s, 20, true),
            (ExpireIf::Later, &in_10s, 5, false),
            (ExpireIf::Earlier, &persistent, 500, true),
            (ExpireIf::Earlier, &in_10s, 5, true),
            (ExpireIf::Earlier, &in_10s, 20, false),
            (ExpireIf::HasExpiryAndEarlier, &persistent, 5, false),
            (ExpireIf::HasExpiryAndEarlier, &in_10s, 5, true),
        ];
        for (condition, entry, ttl, changed) in cases {
            let m = Mutation::Expire {
                lifetime: millis(ttl * 1000),
                condition,
            };
            let d = c.apply(&m, Some(entry)).unwrap();
            assert_eq!(
                d.answer,
                Mutated::Expire {
                    changed,
                    value: Some(Bytes::from_static(b"v"))
                },
                "{condition:?} on {:?} with {ttl}s",
                entry.expires_at
            );
            match d.change {
                Change::Write {
                    expires_at, hot, ..
                } => {
                    assert!(changed);
                    assert_eq!(expires_at, Some(now + Duration::from_secs(ttl)));
                    assert_eq!(hot, entry.hot, "an expire keeps the entry hot or not");
                }
                Change::Keep => assert!(!changed),
                Change::Remove => panic!("removed"),
            }
        }
        let persist = Mutation::Expire {
            lifetime: Lifetime::Forever,
            condition: ExpireIf::HasExpiry,
        };
        let d = c.apply(&persist, Some(&in_10s)).unwrap();
        assert!(matches!(
            d.change,
            Change::Write {
                expires_at: None,
                ..
            }
        ));
        let d = c.apply(&persist, None).unwrap();
        assert_eq!(
            d.answer,
            Mutated::Expire {
                changed: false,
                value: None
            }
        );
    }

    #[test]
    fn incr_counts_from_zero_keeps_the_expiry_and_refuses_non_integers() {
        let mut c = no_jitter();
        let at = Some(c.now + Duration::from_secs(9));
        let d = c.apply(&Mutation::IncrBy { delta: 5 }, None).unwrap();
        assert_eq!(d.answer, Mutated::Counted(5));
        let d = c
            .apply(&Mutation::IncrBy { delta: -3 }, Some(&hit("10", at, true)))
            .unwrap();
        assert_eq!(d.answer, Mutated::Counted(7));
        assert_eq!(
            d.change,
            Change::Write {
                value: Bytes::from_static(b"7"),
                expires_at: at,
                hot: true
            }
        );
        for bad in [
            "",
            "abc",
            "1.5",
            " 1",
            "+1",
            "01",
            "-0",
            "-",
            "99999999999999999999",
        ] {
            assert_eq!(
                c.apply(&Mutation::IncrBy { delta: 1 }, Some(&hit(bad, None, false))),
                Err(Refusal::NotAnInteger),
                "{bad:?}"
            );
        }
        let max = hit("9223372036854775807", None, false);
        assert_eq!(
            c.apply(&Mutation::IncrBy { delta: 1 }, Some(&max)),
            Err(Refusal::Overflow)
        );
        let min = hit("-9223372036854775808", None, false);
        assert_eq!(
            c.apply(&Mutation::IncrBy { delta: 0 }, Some(&min))
                .unwrap()
                .answer,
            Mutated::Counted(i64::MIN)
        );
    }

    #[test]
    fn append_grows_within_the_value_limit() {
        let mut c = no_jitter();
        let at = Some(c.now + Duration::from_secs(9));
        let m = Mutation::Append {
            suffix: Bytes::from_static(b"def"),
        };
        let d = c.apply(&m, Some(&hit("abc", at, false))).unwrap();
        assert_eq!(d.answer, Mutated::Appended { len: 6 });
        assert_eq!(
            d.change,
            Change::Write {
                value: Bytes::from_static(b"abcdef"),
                expires_at: at,
                hot: false
            }
        );
        assert_eq!(
            c.apply(&m, None).unwrap().answer,
            Mutated::Appended { len: 3 }
        );
        let full = hit("0123456789abcde", None, false);
        assert_eq!(
            c.apply(&m, Some(&full)),
            Err(Refusal::ValueTooLarge { len: 18, limit: 16 })
        );
    }
}
