//! One RESP command, from parsed arguments to the reply bytes: each
//! command's Redis semantics over the typed ops ([`Core::call`]), its error
//! lines, and the server-side answers (`INFO`, `CONFIG GET`, `CLIENT`).
//!
//! Conditional and read-modify-write commands (`SET NX|XX|GET|KEEPTTL`,
//! `SETNX`, `GETSET`, `GETDEL`, `GETEX` with an option, `APPEND`, `INCR*`,
//! `DECR*`, `EXPIRE*`, `PERSIST`) become one [`Op::Mutate`], decided on the
//! key's owner on its home core: atomic per key across the cluster, never
//! a read-then-write here. `SET` with `PX`/`PXAT`/`EXAT` (and `PSETEX`) is
//! a mutation too, so its TTL reaches the owner with millisecond precision;
//! a plain `SET` or one with `EX` stays a plain write.

use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{cluster, uptime, Flow, Outcome, Session, REDIS_VERSION};
use crate::error::ApiError;
use crate::metrics::{OpKind, Protocol as MetricProtocol};
use crate::mutation::{ExpireIf, Lifetime, Mutated, Mutation, Presence, Refusal};
use crate::ops::MAX_TTL_SECONDS;
use crate::ops::{Hit, Op, OpError, Reply};
use crate::resp::command::{
    messages, ClientAttribute, Command, CommandError, CommandLimits, CommandQuery, Credentials,
    ExpireCondition, Expiry, Key, SetCondition, TimeUnit,
};
use crate::resp::table;
use crate::resp::{Protocol, ReplyWriter};
use crate::runtime::core::Core;

/// The one-line error a failed op is answered with: `ApiError`'s text
/// (the same words HTTP and gRPC use) after Redis's `ERR` code.
pub(super) fn api_error_line(err: &ApiError) -> String {
    format!("ERR {err}")
}

/// The error line for a reply that is not the answer the op should get,
/// and the HTTP status the same failure gets (for the request metrics).
fn failure(reply: Reply) -> (String, u16) {
    let err = ApiError::from_reply(reply)
        .unwrap_or_else(|| ApiError::Internal("unexpected reply from the owning core".into()));
    (api_error_line(&err), err.status())
}

fn op_kind_of(command: &Command) -> OpKind {
    match command {
        Command::Get { .. }
        | Command::GetEx { expiry: None, .. }
        | Command::MGet { .. }
        | Command::Exists { .. }
        | Command::Type { .. }
        | Command::StrLen { .. }
        | Command::Ttl { .. } => OpKind::Get,
        Command::Set {
            expiry,
            condition,
            get,
            ..
        } if plain_write(*expiry, *condition, *get) => OpKind::Set,
        Command::SetHot { expiry, .. } if plain_write(*expiry, None, false) => OpKind::Set,
        Command::MSet { .. } => OpKind::Set,
        Command::Del { .. } => OpKind::Delete,
        Command::Set { .. }
        | Command::SetHot { .. }
        | Command::SetNx { .. }
        | Command::GetDel { .. }
        | Command::GetEx { .. }
        | Command::Append { .. }
        | Command::IncrBy { .. }
        | Command::Expire { .. }
        | Command::Persist { .. } => OpKind::Mutate,
        _ => OpKind::Other,
    }
}

/// Whether a `SET` is a plain write ([`Op::Set`]): no condition, no `GET`,
/// and no expiry or one in whole seconds from now (`EX`, `SETEX`), which a
/// forwarded `Op::Set` carries exactly. Anything else is a mutation.
fn plain_write(expiry: Option<Expiry>, condition: Option<SetCondition>, get: bool) -> bool {
    condition.is_none() && !get && matches!(expiry, None | Some(Expiry::Ex(_)))
}

/// Room for a command's name in [`execute`] (the longest in the table,
/// `nexus.sethot`, takes 12 bytes).
const NAME_BUFFER: usize = 32;

/// `name` in ASCII lower case, in `buf`. A name that parsed is a table
/// name (ASCII, shorter than the buffer); anything else comes out cut
/// short or empty, never a panic.
fn lowercase_name<'a>(name: &[u8], buf: &'a mut [u8; NAME_BUFFER]) -> &'a str {
    let len = name.len().min(NAME_BUFFER);
    for (to, from) in buf.iter_mut().zip(&name[..len]) {
        *to = from.to_ascii_lowercase();
    }
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

/// A command left to run once [`prepare`] answered what needs the session:
/// it needs the cluster (a key, `INFO`, `DBSIZE`) but no session state, so
/// a connection may run several at once ([`run`]).
pub(super) struct Job {
    command: Command,
    protocol: Protocol,
    op: OpKind,
    /// The name as the client typed it, lowercased, for the error lines of
    /// the commands that share a variant (`SETEX` is a `Set`).
    name: [u8; NAME_BUFFER],
    name_len: usize,
}

impl Job {
    /// The keys the job reads or writes: single ones, and those of pairs.
    fn key_lists(&self) -> (&[Key], &[(Key, Bytes)]) {
        match &self.command {
            Command::Get { key }
            | Command::Set { key, .. }
            | Command::SetNx { key, .. }
            | Command::GetDel { key }
            | Command::GetEx { key, .. }
            | Command::Append { key, .. }
            | Command::IncrBy { key, .. }
            | Command::StrLen { key }
            | Command::Type { key }
            | Command::Ttl { key, .. }
            | Command::Expire { key, .. }
            | Command::Persist { key }
            | Command::SetHot { key, .. } => (std::slice::from_ref(key), &[]),
            Command::MGet { keys } | Command::Del { keys } | Command::Exists { keys } => {
                (keys, &[])
            }
            Command::MSet { pairs } => (&[], pairs),
            _ => (&[], &[]),
        }
    }

    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        let (keys, pairs) = self.key_lists();
        keys.iter()
            .map(|k| &k[..])
            .chain(pairs.iter().map(|(k, _)| &k[..]))
    }

    /// Whether the job answers without waiting: every key lives on this
    /// core of this node, and there is no origin a miss would be loaded
    /// from. `INFO` and `DBSIZE` ask the other cores and nodes.
    pub(super) fn is_local(&self, core: &Core) -> bool {
        core.config.origin.is_none()
            && !matches!(self.command, Command::Info { .. } | Command::DbSize)
            && self.keys().all(|key| core.owns_here(key))
    }

    /// The hashes of the keys the job reads or writes (commands of one
    /// pipeline on the same key must run in order; two keys sharing a hash
    /// only make a command wait when it need not).
    pub(super) fn key_hashes(&self) -> KeyHashes {
        let hash = xxhash_rust::xxh3::xxh3_64;
        match self.key_lists() {
            ([key], []) => KeyHashes::One(hash(key)),
            _ => KeyHashes::Many(self.keys().map(hash).collect()),
        }
    }
}

/// The keys a [`Job`] touches, hashed; one key (the usual case) without
/// an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KeyHashes {
    One(u64),
    Many(Vec<u64>),
}

impl KeyHashes {
    fn as_slice(&self) -> &[u64] {
        match self {
            KeyHashes::One(hash) => std::slice::from_ref(hash),
            KeyHashes::Many(hashes) => hashes,
        }
    }

    /// Whether the two share a key (or a hash).
    pub(super) fn overlaps(&self, other: &KeyHashes) -> bool {
        let theirs = other.as_slice();
        self.as_slice().iter().any(|hash| theirs.contains(hash))
    }
}

/// What [`prepare`] left to do.
pub(super) enum Prepared {
    /// Answered: the reply is written.
    Done(Outcome),
    Run(Job),
}

/// The part of a request that needs the connection's session, done at
/// once in the order the requests came: authentication, parsing, and the
/// connection and server commands (their replies are written to `out`).
/// A command that needs the cluster comes back as a [`Job`].
pub(super) fn prepare(
    core: &Core,
    session: &mut Session,
    args: &[Bytes],
    limits: &CommandLimits,
    out: &mut Vec<u8>,
) -> Prepared {
    let protocol = session.protocol;
    // Redis answers an unknown command or a wrong arity before it asks
    // for authentication; any other command needs it first.
    if !session.authenticated {
        if let Some(spec) = args.first().and_then(|name| table::lookup(name)) {
            if spec.arity_allows(args.len()) && !spec.allowed_without_auth() {
                core.metrics.record_auth_failure();
                ReplyWriter::new(out, protocol).error(messages::NOAUTH);
                return Prepared::Done(Outcome::new(OpKind::Other, 401));
            }
        }
    }
    let command = match Command::parse(args, limits) {
        Ok(command) => command,
        Err(e) => return Prepared::Done(refuse(out, protocol, &e)),
    };
    session.last_command = command.name();
    let op = op_kind_of(&command);
    let mut outcome = Outcome::new(op, 200);
    match command {
        Command::Ping { message } => {
            let mut w = ReplyWriter::new(out, protocol);
            match message {
                None => w.simple(b"PONG"),
                Some(message) => w.bulk(&message),
            }
        }
        Command::Echo { message } => ReplyWriter::new(out, protocol).bulk(&message),
        Command::Quit => {
            ReplyWriter::new(out, protocol).simple(b"OK");
            outcome.flow = Flow::Close;
        }
        Command::Reset => {
            session.reset(core.config.credentials.token_required());
            ReplyWriter::new(out, protocol).simple(b"RESET");
        }
        Command::Hello {
            protocol: wanted,
            auth,
            client_name,
        } => {
            if let Some(credentials) = &auth {
                if let Err(line) = authenticate(core, session, credentials) {
                    ReplyWriter::new(out, protocol).error(line);
                    return Prepared::Done(Outcome::new(OpKind::Other, 401));
                }
            } else if !session.authenticated {
                core.metrics.record_auth_failure();
                ReplyWriter::new(out, protocol).error(messages::HELLO_NOAUTH);
                return Prepared::Done(Outcome::new(OpKind::Other, 401));
            }
            if let Some(wanted) = wanted {
                session.protocol = wanted;
            }
            if let Some(name) = client_name {
                session.name = Some(name);
            }
            write_hello(&mut ReplyWriter::new(out, session.protocol), session);
        }
        Command::Auth(credentials) => match authenticate(core, session, &credentials) {
            Ok(()) => ReplyWriter::new(out, protocol).simple(b"OK"),
            Err(line) => {
                ReplyWriter::new(out, protocol).error(line);
                outcome.status = 401;
            }
        },
        Command::ClientSetName { name } => {
            session.name = (!name.is_empty()).then_some(name);
            ReplyWriter::new(out, protocol).simple(b"OK");
        }
        Command::ClientGetName => {
            let mut w = ReplyWriter::new(out, protocol);
            match &session.name {
                Some(name) => w.bulk(name),
                None => w.null(),
            }
        }
        Command::ClientId => {
            ReplyWriter::new(out, protocol).integer(i64::try_from(session.id).unwrap_or(i64::MAX))
        }
        Command::ClientInfo => {
            let line = client_info(session);
            ReplyWriter::new(out, protocol).verbatim(b"txt", line.as_bytes());
        }
        Command::ClientSetInfo { attribute, value } => {
            match attribute {
                ClientAttribute::LibName => session.lib_name = Some(value),
                ClientAttribute::LibVer => session.lib_ver = Some(value),
            }
            ReplyWriter::new(out, protocol).simple(b"OK");
        }
        Command::Help { container } => {
            table::write_help(&mut ReplyWriter::new(out, protocol), container)
        }
        Command::Select => ReplyWriter::new(out, protocol).simple(b"OK"),
        Command::Command(query) => {
            let mut w = ReplyWriter::new(out, protocol);
            match query {
                CommandQuery::All => table::write_command_info(&mut w, &[] as &[Bytes]),
                CommandQuery::Count => {
                    w.integer(i64::try_from(table::command_count()).unwrap_or(i64::MAX))
                }
                CommandQuery::Info(names) => table::write_command_info(&mut w, &names),
                CommandQuery::Docs(names) => table::write_command_docs(&mut w, &names),
            }
        }
        command => {
            let mut name = [0u8; NAME_BUFFER];
            let name_len = lowercase_name(args.first().map_or(&[][..], |n| n), &mut name).len();
            return Prepared::Run(Job {
                command,
                protocol,
                op,
                name,
                name_len,
            });
        }
    }
    Prepared::Done(outcome)
}

/// Runs a [`Job`] and writes its reply to `out`.
pub(super) async fn run(core: &Rc<Core>, job: Job, out: &mut Vec<u8>) -> Outcome {
    let Job {
        command,
        protocol,
        op,
        name,
        name_len,
    } = job;
    let mut outcome = Outcome::new(op, 200);
    let name = std::str::from_utf8(&name[..name_len]).unwrap_or_default();
    match command {
        Command::Info { sections } => {
            let text = info_text(core, &sections).await;
            ReplyWriter::new(out, protocol).verbatim(b"txt", text.as_bytes());
        }
        Command::ConfigGet { parameters } => {
            let pairs = config_get(core, &parameters);
            let mut w = ReplyWriter::new(out, protocol);
            w.map(pairs.len());
            for (name, value) in pairs {
                w.bulk(name.as_bytes());
                w.bulk(value.as_bytes());
            }
        }
        Command::DbSize => {
            let items = cluster::db_size(core).await;
            ReplyWriter::new(out, protocol).integer(i64::try_from(items).unwrap_or(i64::MAX));
        }
        Command::Time => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let mut w = ReplyWriter::new(out, protocol);
            w.array(2);
            w.bulk(now.as_secs().to_string().as_bytes());
            w.bulk(now.subsec_micros().to_string().as_bytes());
        }
        Command::Get { key } => match core.call(Op::get(key)).await {
            Reply::Value(Some(hit)) => ReplyWriter::new(out, protocol).bulk(&hit.value),
            Reply::Value(None) => {
                ReplyWriter::new(out, protocol).null();
                outcome.status = 404;
            }
            other => fail(out, protocol, &mut outcome, other),
        },
        Command::Set {
            key,
            value,
            expiry,
            condition,
            get,
        } => {
            if !plain_write(expiry, condition, get) {
                let condition = match condition {
                    None => Presence::Any,
                    Some(SetCondition::Nx) => Presence::Absent,
                    Some(SetCondition::Xx) => Presence::Present,
                };
                set_mutation(
                    core,
                    out,
                    protocol,
                    &mut outcome,
                    static_name(name),
                    key,
                    value,
                    expiry,
                    condition,
                    false,
                    get,
                )
                .await;
                return outcome;
            }
            write_one(
                core,
                out,
                protocol,
                &mut outcome,
                name,
                key,
                value,
                expiry,
                false,
            )
            .await;
        }
        Command::SetHot { key, value, expiry } => {
            if !plain_write(expiry, None, false) {
                set_mutation(
                    core,
                    out,
                    protocol,
                    &mut outcome,
                    "nexus.sethot",
                    key,
                    value,
                    expiry,
                    Presence::Any,
                    true,
                    false,
                )
                .await;
                return outcome;
            }
            write_one(
                core,
                out,
                protocol,
                &mut outcome,
                name,
                key,
                value,
                expiry,
                true,
            )
            .await;
        }
        Command::SetNx { key, value } => {
            let mutation = Mutation::Set {
                value,
                lifetime: Some(Lifetime::Forever),
                condition: Presence::Absent,
                hot: false,
                return_previous: false,
            };
            match mutate(core, out, protocol, &mut outcome, key, mutation).await {
                Some(Mutated::Set { written, .. }) => {
                    ReplyWriter::new(out, protocol).integer(i64::from(written))
                }
                Some(other) => mismatch(out, protocol, &mut outcome, &other),
                None => {}
            }
        }
        Command::GetDel { key } => {
            match mutate(core, out, protocol, &mut outcome, key, Mutation::Take).await {
                Some(Mutated::Taken(taken)) => write_optional(out, protocol, taken.as_deref()),
                Some(other) => mismatch(out, protocol, &mut outcome, &other),
                None => {}
            }
        }
        Command::GetEx { key, expiry: None } => match core.call(Op::get(key)).await {
            Reply::Value(found) => {
                write_optional(out, protocol, found.as_ref().map(|hit| &hit.value[..]))
            }
            other => fail(out, protocol, &mut outcome, other),
        },
        Command::GetEx {
            key,
            expiry: Some(expiry),
        } => {
            let (lifetime, condition) = match expiry {
                // Only a key with an expiry changes (no write otherwise).
                Expiry::Persist => (Lifetime::Forever, ExpireIf::HasExpiry),
                timed => match lifetime_of(timed, unix_ms(SystemTime::now())) {
                    Ok(lifetime) => (lifetime, ExpireIf::Always),
                    Err(TooLong) => {
                        let e = CommandError::InvalidExpireTime { command: "getex" };
                        return refuse(out, protocol, &e);
                    }
                },
            };
            let mutation = Mutation::Expire {
                lifetime,
                condition,
            };
            match mutate(core, out, protocol, &mut outcome, key, mutation).await {
                Some(Mutated::Expire { value, .. }) => {
                    write_optional(out, protocol, value.as_deref())
                }
                Some(other) => mismatch(out, protocol, &mut outcome, &other),
                None => {}
            }
        }
        Command::Append { key, value } => {
            let mutation = Mutation::Append { suffix: value };
            match mutate(core, out, protocol, &mut outcome, key, mutation).await {
                Some(Mutated::Appended { len }) => {
                    ReplyWriter::new(out, protocol).integer(i64::try_from(len).unwrap_or(i64::MAX))
                }
                Some(other) => mismatch(out, protocol, &mut outcome, &other),
                None => {}
            }
        }
        Command::IncrBy { key, delta } => {
            let mutation = Mutation::IncrBy { delta };
            match mutate(core, out, protocol, &mut outcome, key, mutation).await {
                Some(Mutated::Counted(number)) => ReplyWriter::new(out, protocol).integer(number),
                Some(other) => mismatch(out, protocol, &mut outcome, &other),
                None => {}
            }
        }
        Command::Expire {
            key,
            command,
            amount,
            condition,
        } => {
            let now_ms = unix_ms(SystemTime::now());
            let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
            let lifetime = command.deadline_unix_ms(amount, now).and_then(|deadline| {
                lifetime_until(deadline, now_ms, command.in_seconds()).map_err(|TooLong| {
                    CommandError::InvalidExpireTime {
                        command: command.name(),
                    }
                })
            });
            let lifetime = match lifetime {
                Ok(lifetime) => lifetime,
                Err(e) => return refuse(out, protocol, &e),
            };
            let condition = match condition {
                None => ExpireIf::Always,
                Some(ExpireCondition::Nx) => ExpireIf::NoExpiry,
                Some(ExpireCondition::Xx) => ExpireIf::HasExpiry,
                Some(ExpireCondition::Gt) => ExpireIf::Later,
                Some(ExpireCondition::Lt) => ExpireIf::Earlier,
                Some(ExpireCondition::XxLt) => ExpireIf::HasExpiryAndEarlier,
            };
            let mutation = Mutation::Expire {
                lifetime,
                condition,
            };
            expire_reply(core, out, protocol, &mut outcome, key, mutation).await;
        }
        Command::Persist { key } => {
            let mutation = Mutation::Expire {
                lifetime: Lifetime::Forever,
                condition: ExpireIf::HasExpiry,
            };
            expire_reply(core, out, protocol, &mut outcome, key, mutation).await;
        }
        Command::MGet { keys } => {
            let replies = fan_out(core, keys.into_iter().map(Op::get).collect()).await;
            if let Some(failed) = first_failure(&replies) {
                return fail_line(out, protocol, failure(failed_reply(failed)));
            }
            let mut w = ReplyWriter::new(out, protocol);
            w.array(replies.len());
            for reply in replies {
                match reply {
                    Reply::Value(Some(hit)) => w.bulk(&hit.value),
                    _ => w.null(),
                }
            }
        }
        Command::MSet { pairs } => {
            let ops = pairs
                .into_iter()
                .map(|(key, value)| Op::Set {
                    key,
                    value,
                    ttl: Duration::ZERO,
                    hot: false,
                })
                .collect();
            let replies = fan_out(core, ops).await;
            match replies.into_iter().find(|r| !matches!(r, Reply::Stored)) {
                None => ReplyWriter::new(out, protocol).simple(b"OK"),
                Some(other) => fail(out, protocol, &mut outcome, other),
            }
        }
        Command::Del { keys } => {
            let ops = keys.into_iter().map(|key| Op::Delete { key }).collect();
            let replies = fan_out(core, ops).await;
            let mut deleted = 0i64;
            for reply in replies {
                match reply {
                    Reply::Deleted(true) => deleted += 1,
                    Reply::Deleted(false) => {}
                    other => return fail_line(out, protocol, failure(other)),
                }
            }
            ReplyWriter::new(out, protocol).integer(deleted);
        }
        Command::Exists { keys } => {
            let replies = fan_out(core, keys.into_iter().map(Op::get).collect()).await;
            let mut found = 0i64;
            for reply in replies {
                match reply {
                    Reply::Value(Some(_)) => found += 1,
                    Reply::Value(None) => {}
                    other => return fail_line(out, protocol, failure(other)),
                }
            }
            ReplyWriter::new(out, protocol).integer(found);
        }
        Command::Type { key } => match core.call(Op::get(key)).await {
            Reply::Value(found) => {
                let kind: &[u8] = if found.is_some() { b"string" } else { b"none" };
                ReplyWriter::new(out, protocol).simple(kind);
            }
            other => fail(out, protocol, &mut outcome, other),
        },
        Command::StrLen { key } => match core.call(Op::get(key)).await {
            Reply::Value(found) => {
                let len = found.map_or(0, |hit| hit.value.len());
                ReplyWriter::new(out, protocol).integer(i64::try_from(len).unwrap_or(i64::MAX));
            }
            other => fail(out, protocol, &mut outcome, other),
        },
        Command::Ttl { key, unit } => match core.call(Op::get(key)).await {
            Reply::Value(found) => {
                let ttl = ttl_reply(found.as_ref(), unit, Instant::now());
                ReplyWriter::new(out, protocol).integer(ttl);
            }
            other => fail(out, protocol, &mut outcome, other),
        },
        Command::Owner { key } => cluster::write_owner(core, out, protocol, &key),
        // Answered by `prepare`.
        _ => {
            ReplyWriter::new(out, protocol)
                .error("ERR internal error: a session command ran as a job");
            outcome.status = 500;
        }
    }
    outcome
}

/// `SET`, `SETEX`, `PSETEX`, `NEXUS.SETHOT`: one write, with the expiry
/// turned into a TTL from now. An expiry already past deletes the key (as
/// Redis does); one past NexusCache's three-day limit is refused.
#[allow(clippy::too_many_arguments)]
async fn write_one(
    core: &Core,
    out: &mut Vec<u8>,
    protocol: Protocol,
    outcome: &mut Outcome,
    name: &str,
    key: Key,
    value: Bytes,
    expiry: Option<Expiry>,
    hot: bool,
) {
    // The wall clock only for an expiry (most writes have none).
    let ttl = match expiry.map(|e| ttl_from_now(e, unix_ms(SystemTime::now()))) {
        None => Duration::ZERO,
        Some(TtlFromNow::Ttl(ttl)) => ttl,
        Some(TtlFromNow::Past) => {
            return match core.call(Op::Delete { key }).await {
                Reply::Deleted(_) => ReplyWriter::new(out, protocol).simple(b"OK"),
                other => fail(out, protocol, outcome, other),
            };
        }
        Some(TtlFromNow::TooLong) => {
            let e = CommandError::InvalidExpireTime {
                command: static_name(name),
            };
            ReplyWriter::new(out, protocol).error(&e.to_string());
            outcome.status = 400;
            return;
        }
    };
    match core
        .call(Op::Set {
            key,
            value,
            ttl,
            hot,
        })
        .await
    {
        Reply::Stored => ReplyWriter::new(out, protocol).simple(b"OK"),
        other => fail(out, protocol, outcome, other),
    }
}

/// The command names `InvalidExpireTime` can carry (it takes a static
/// string, as Redis's own names are).
fn static_name(name: &str) -> &'static str {
    match name {
        "setex" => "setex",
        "psetex" => "psetex",
        "nexus.sethot" => "nexus.sethot",
        "getex" => "getex",
        "getset" => "getset",
        _ => "set",
    }
}

/// `SET` with a condition, `GET`, `KEEPTTL` or an expiry not in whole
/// seconds from now; `GETSET`; `PSETEX`; `NEXUS.SETHOT` with such an
/// expiry: one [`Mutation::Set`] on the key's owner. Answers as Redis
/// does: with `GET`, the old value or nil; else OK, or nil when the
/// condition did not hold.
#[allow(clippy::too_many_arguments)]
async fn set_mutation(
    core: &Core,
    out: &mut Vec<u8>,
    protocol: Protocol,
    outcome: &mut Outcome,
    name: &'static str,
    key: Key,
    value: Bytes,
    expiry: Option<Expiry>,
    condition: Presence,
    hot: bool,
    return_previous: bool,
) {
    let lifetime = match expiry {
        None => Some(Lifetime::Forever),
        Some(Expiry::KeepTtl) => None,
        Some(timed) => match lifetime_of(timed, unix_ms(SystemTime::now())) {
            Ok(lifetime) => Some(lifetime),
            Err(TooLong) => {
                *outcome = refuse(
                    out,
                    protocol,
                    &CommandError::InvalidExpireTime { command: name },
                );
                return;
            }
        },
    };
    let mutation = Mutation::Set {
        value,
        lifetime,
        condition,
        hot,
        return_previous,
    };
    match mutate(core, out, protocol, outcome, key, mutation).await {
        Some(Mutated::Set { previous, .. }) if return_previous => {
            write_optional(out, protocol, previous.as_deref())
        }
        Some(Mutated::Set { written: true, .. }) => ReplyWriter::new(out, protocol).simple(b"OK"),
        Some(Mutated::Set { written: false, .. }) => ReplyWriter::new(out, protocol).null(),
        Some(other) => mismatch(out, protocol, outcome, &other),
        None => {}
    }
}

/// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`, `PERSIST`: 1 if the
/// expiry changed (or the key went), 0 if the key is missing or the
/// condition did not hold.
async fn expire_reply(
    core: &Core,
    out: &mut Vec<u8>,
    protocol: Protocol,
    outcome: &mut Outcome,
    key: Key,
    mutation: Mutation,
) {
    match mutate(core, out, protocol, outcome, key, mutation).await {
        Some(Mutated::Expire { changed, .. }) => {
            ReplyWriter::new(out, protocol).integer(i64::from(changed))
        }
        Some(other) => mismatch(out, protocol, outcome, &other),
        None => {}
    }
}

/// Runs `mutation` on the key's owner. A failure is answered here (with
/// Redis's words for a refusal) and gives `None`.
async fn mutate(
    core: &Core,
    out: &mut Vec<u8>,
    protocol: Protocol,
    outcome: &mut Outcome,
    key: Key,
    mutation: Mutation,
) -> Option<Mutated> {
    match core.mutate(key, mutation).await {
        Ok(mutated) => Some(mutated),
        Err(err) => {
            let (line, status) = mutate_failure(err);
            outcome.status = status;
            ReplyWriter::new(out, protocol).error(&line);
            None
        }
    }
}

/// The error line and HTTP-equivalent status of a failed mutation: a
/// refusal in Redis's words, anything else as [`failure`] words it.
fn mutate_failure(err: OpError) -> (String, u16) {
    let err = ApiError::from(err);
    let line = match &err {
        ApiError::Refused(Refusal::NotAnInteger) => messages::NOT_AN_INTEGER.to_owned(),
        ApiError::Refused(Refusal::Overflow) => messages::INCR_OVERFLOW.to_owned(),
        ApiError::Refused(Refusal::ValueTooLarge { .. }) => messages::STRING_TOO_LONG.to_owned(),
        other => api_error_line(other),
    };
    (line, err.status())
}

/// The owner answered a mutation with the answer of another kind: a bug,
/// answered as an internal error rather than a wrong reply type.
fn mismatch(out: &mut Vec<u8>, protocol: Protocol, outcome: &mut Outcome, answer: &Mutated) {
    let kind = match answer {
        Mutated::Set { .. } => "set",
        Mutated::Taken(_) => "getdel",
        Mutated::Expire { .. } => "expire",
        Mutated::Appended { .. } => "append",
        Mutated::Counted(_) => "incrby",
    };
    let (line, status) = mutate_failure(OpError::Mismatch {
        op: "mutation",
        reply: format!("the answer of {kind}"),
    });
    outcome.status = status;
    ReplyWriter::new(out, protocol).error(&line);
}

/// A bulk string, or nil (RESP2 `$-1`, RESP3 `_`).
fn write_optional(out: &mut Vec<u8>, protocol: Protocol, value: Option<&[u8]>) {
    let mut w = ReplyWriter::new(out, protocol);
    match value {
        Some(value) => w.bulk(value),
        None => w.null(),
    }
}

/// An expiry past NexusCache's three-day limit ([`MAX_TTL_SECONDS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

/// A `SET`/`GETEX` expiry as the lifetime a mutation writes: relative to
/// the owner's clock, jittered only when given in seconds (`EX`, `EXAT`).
/// `KEEPTTL` and `PERSIST` carry no amount and come out `Forever`.
pub fn lifetime_of(expiry: Expiry, now_unix_ms: u64) -> Result<Lifetime, TooLong> {
    match ttl_from_now(expiry, now_unix_ms) {
        TtlFromNow::Ttl(ttl) if ttl.is_zero() => Ok(Lifetime::Forever),
        TtlFromNow::Ttl(ttl) => Ok(Lifetime::For {
            ttl,
            jitter: expiry.in_seconds(),
        }),
        TtlFromNow::Past => Ok(Lifetime::Over),
        TtlFromNow::TooLong => Err(TooLong),
    }
}

/// An `EXPIRE`-family deadline (Unix milliseconds, possibly negative) as
/// a lifetime: at or before now the key goes, as in Redis.
pub fn lifetime_until(
    deadline_unix_ms: i64,
    now_unix_ms: u64,
    in_seconds: bool,
) -> Result<Lifetime, TooLong> {
    let Ok(deadline) = u64::try_from(deadline_unix_ms) else {
        return Ok(Lifetime::Over);
    };
    if deadline <= now_unix_ms {
        return Ok(Lifetime::Over);
    }
    let ms = deadline - now_unix_ms;
    if ms > MAX_TTL_SECONDS * 1000 {
        return Err(TooLong);
    }
    Ok(Lifetime::For {
        ttl: Duration::from_millis(ms),
        jitter: in_seconds,
    })
}

/// A Redis expiry as NexusCache's TTL from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlFromNow {
    Ttl(Duration),
    /// At or before now: the key is deleted.
    Past,
    /// Past the three-day limit ([`MAX_TTL_SECONDS`]).
    TooLong,
}

/// `now_unix_ms`: the wall clock, which `EXAT`/`PXAT` are given in.
pub fn ttl_from_now(expiry: Expiry, now_unix_ms: u64) -> TtlFromNow {
    let Some(deadline) = expiry.deadline_unix_ms(now_unix_ms) else {
        return TtlFromNow::Ttl(Duration::ZERO);
    };
    if deadline <= now_unix_ms {
        return TtlFromNow::Past;
    }
    let ms = deadline - now_unix_ms;
    if ms > MAX_TTL_SECONDS * 1000 {
        return TtlFromNow::TooLong;
    }
    TtlFromNow::Ttl(Duration::from_millis(ms))
}

fn unix_ms(at: SystemTime) -> u64 {
    u64::try_from(
        at.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// `TTL`/`PTTL` from a read: -2 missing, -1 no expiry, else what is left
/// (seconds rounded to nearest, as Redis does).
pub fn ttl_reply(found: Option<&Hit>, unit: TimeUnit, now: Instant) -> i64 {
    let Some(hit) = found else { return -2 };
    let Some(at) = hit.expires_at else { return -1 };
    let left_ms = i64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(i64::MAX);
    match unit {
        TimeUnit::Milliseconds => left_ms,
        TimeUnit::Seconds => (left_ms + 500) / 1000,
    }
}

/// Runs `ops` concurrently, each on its key's owner; replies in order.
/// An op that completes at once (a key of this core) is answered inline;
/// only one that must wait (another core, another node, a load) gets a
/// task of its own, so a multi-key command on local keys spawns nothing.
async fn fan_out(core: &Rc<Core>, ops: Vec<Op>) -> Vec<Reply> {
    enum Slot {
        Done(Reply),
        Waiting(glommio::Task<Reply>),
    }
    let mut slots = Vec::with_capacity(ops.len());
    for op in ops {
        let core = Rc::clone(core);
        let mut call = Box::pin(async move { core.call(op).await });
        slots.push(match futures_lite::future::poll_once(&mut call).await {
            Some(reply) => Slot::Done(reply),
            None => Slot::Waiting(glommio::spawn_local(call)),
        });
    }
    let mut replies = Vec::with_capacity(slots.len());
    for slot in slots {
        replies.push(match slot {
            Slot::Done(reply) => reply,
            Slot::Waiting(task) => task.await,
        });
    }
    replies
}

fn first_failure(replies: &[Reply]) -> Option<&Reply> {
    replies.iter().find(|r| !matches!(r, Reply::Value(_)))
}

/// A copy of a failed reply's meaning, to build its error line.
fn failed_reply(reply: &Reply) -> Reply {
    match reply {
        Reply::TooLarge(reason) => Reply::TooLarge(reason.clone()),
        Reply::OwnerUnavailable { peer, reason } => Reply::OwnerUnavailable {
            peer: peer.clone(),
            reason: reason.clone(),
        },
        Reply::OriginFailed(reason) => Reply::OriginFailed(reason.clone()),
        Reply::ReplicaNotUpdated { peer, reason } => Reply::ReplicaNotUpdated {
            peer: peer.clone(),
            reason: reason.clone(),
        },
        _ => Reply::Unavailable,
    }
}

fn fail(out: &mut Vec<u8>, protocol: Protocol, outcome: &mut Outcome, reply: Reply) {
    let (line, status) = failure(reply);
    outcome.status = status;
    ReplyWriter::new(out, protocol).error(&line);
}

fn fail_line(out: &mut Vec<u8>, protocol: Protocol, (line, status): (String, u16)) -> Outcome {
    ReplyWriter::new(out, protocol).error(&line);
    Outcome::new(OpKind::Other, status)
}

fn refuse(out: &mut Vec<u8>, protocol: Protocol, err: &CommandError) -> Outcome {
    if !err.replies() {
        let mut outcome = Outcome::new(OpKind::Other, 400);
        outcome.flow = Flow::Close;
        return outcome;
    }
    ReplyWriter::new(out, protocol).error(&err.to_string());
    let mut outcome = Outcome::new(OpKind::Other, 400);
    if err.closes_connection() {
        outcome.flow = Flow::Close;
    }
    outcome
}

/// Checks `AUTH`/`HELLO AUTH` credentials against the node's tokens. The
/// only user is `default`. Without a token, `AUTH <password>` is Redis's
/// "no password configured" error and `AUTH default <anything>` succeeds
/// (the default user has no password), as in Redis.
fn authenticate(
    core: &Core,
    session: &mut Session,
    credentials: &Credentials,
) -> Result<(), &'static str> {
    let user_ok = credentials
        .username
        .as_ref()
        .is_none_or(|user| &user[..] == b"default");
    let tokens = &core.config.credentials;
    if !tokens.token_required() {
        return match (&credentials.username, user_ok) {
            (None, _) => Err(messages::AUTH_WITHOUT_PASSWORD),
            (Some(_), true) => Ok(()),
            (Some(_), false) => {
                core.metrics.record_auth_failure();
                Err(messages::WRONGPASS)
            }
        };
    }
    let mut bearer = Vec::with_capacity(7 + credentials.password.len());
    bearer.extend_from_slice(b"Bearer ");
    bearer.extend_from_slice(&credentials.password);
    if user_ok && tokens.check_bearer(Some(&bearer)).is_ok() {
        session.authenticated = true;
        Ok(())
    } else {
        core.metrics.record_auth_failure();
        Err(messages::WRONGPASS)
    }
}

/// `HELLO`'s map: what Redis answers, with this node's figures.
fn write_hello(w: &mut ReplyWriter<'_, Vec<u8>>, session: &Session) {
    w.map(7);
    w.bulk(b"server");
    w.bulk(b"redis");
    w.bulk(b"version");
    w.bulk(REDIS_VERSION.as_bytes());
    w.bulk(b"proto");
    w.integer(session.protocol.version());
    w.bulk(b"id");
    w.integer(i64::try_from(session.id).unwrap_or(i64::MAX));
    w.bulk(b"mode");
    w.bulk(b"standalone");
    w.bulk(b"role");
    w.bulk(b"master");
    w.bulk(b"modules");
    w.array(0);
}

fn client_info(session: &Session) -> String {
    let text = |v: &Option<Bytes>| {
        v.as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    format!(
        "id={} addr={} laddr={} fd={} name={} age={} idle=0 flags=N db=0 sub=0 psub=0 \
         ssub=0 multi=-1 watch=0 user=default redir=-1 resp={} lib-name={} lib-ver={} cmd={}\n",
        session.id,
        session.peer,
        session.local,
        session.fd,
        text(&session.name),
        session.opened.elapsed().as_secs(),
        session.protocol.version(),
        text(&session.lib_name),
        text(&session.lib_ver),
        session.last_command,
    )
}

/// `CONFIG GET pattern...`: the settings clients and tools ask for, with
/// this node's values (glob patterns as Redis takes them). Secrets are
/// never listed.
fn config_get(core: &Core, patterns: &[Bytes]) -> Vec<(&'static str, String)> {
    let config = &core.config;
    let all: [(&'static str, String); 14] = [
        ("maxmemory", config.max_memory.to_string()),
        ("maxmemory-policy", "allkeys-lru".into()),
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("databases", "1".into()),
        ("timeout", config.idle_timeout_secs.to_string()),
        ("port", config.resp_port.to_string()),
        ("bind", config.bind.to_string()),
        ("maxclients", config.max_connections.to_string()),
        ("proto-max-bulk-len", config.max_value_bytes.to_string()),
        ("cluster-enabled", "no".into()),
        ("io-threads", config.cores().to_string()),
        ("tcp-keepalive", "0".into()),
        (
            "client-query-buffer-limit",
            config.max_unsent_bytes().to_string(),
        ),
    ];
    all.into_iter()
        .filter(|(name, _)| patterns.iter().any(|p| glob_match(p, name.as_bytes())))
        .collect()
}

/// Redis's glob subset for `CONFIG GET`: `*`, `?`, literal bytes, case
/// insensitive.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

const INFO_SECTIONS: [&str; 6] = [
    "server", "clients", "memory", "stats", "keyspace", "cluster",
];

/// `INFO [section...]` with this node's figures (every core's).
async fn info_text(core: &Core, sections: &[Bytes]) -> String {
    let wanted = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|s| {
                s.eq_ignore_ascii_case(name.as_bytes())
                    || s.eq_ignore_ascii_case(b"all")
                    || s.eq_ignore_ascii_case(b"default")
                    || s.eq_ignore_ascii_case(b"everything")
            })
    };
    let snapshots = core.snapshot_all().await;
    let sum =
        |f: &dyn Fn(&(crate::store::ShardStats, crate::metrics::CoreSnapshot)) -> u64| -> u64 {
            snapshots.iter().map(f).sum()
        };
    let config = &core.config;
    let mut text = String::new();
    for section in INFO_SECTIONS.iter().filter(|s| wanted(s)) {
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        match *section {
            "server" => {
                let up = uptime().as_secs();
                let _ = write!(
                    text,
                    "# Server\r\nredis_version:{REDIS_VERSION}\r\nnexuscache_version:{}\r\n\
                     redis_mode:standalone\r\nos:{} {}\r\narch_bits:{}\r\n\
                     multiplexing_api:io_uring\r\nprocess_id:{}\r\ntcp_port:{}\r\n\
                     server_time_usec:{}\r\nuptime_in_seconds:{up}\r\nuptime_in_days:{}\r\n\
                     nexuscache_node:{}\r\nnexuscache_cores:{}\r\n",
                    env!("CARGO_PKG_VERSION"),
                    std::env::consts::OS,
                    std::env::consts::ARCH,
                    usize::BITS,
                    std::process::id(),
                    config.resp_port,
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_micros(),
                    up / 86_400,
                    config.node_name,
                    config.cores(),
                );
            }
            "clients" => {
                let _ = write!(
                    text,
                    "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n",
                    sum(&|(_, m)| m.connections_active),
                    config.max_connections,
                );
            }
            "memory" => {
                let used = sum(&|(s, m)| s.bytes + m.tiers.hot.bytes);
                let _ = write!(
                    text,
                    "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\n\
                     used_memory_rss:{}\r\nmaxmemory:{}\r\nmaxmemory_human:{}\r\n\
                     maxmemory_policy:allkeys-lru\r\nnexuscache_connection_buffer_bytes:{}\r\n",
                    human(used),
                    rss_bytes().unwrap_or(0),
                    config.max_memory,
                    human(config.max_memory),
                    sum(&|(_, m)| m.connection_buffer_bytes),
                );
            }
            "stats" => {
                let _ = write!(
                    text,
                    "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
                     rejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\n\
                     keyspace_hits:{}\r\nkeyspace_misses:{}\r\nacl_access_denied_auth:{}\r\n",
                    sum(&|(_, m)| m.connections_total),
                    sum(&|(_, m)| m.requests_of(MetricProtocol::Resp)),
                    sum(&|(_, m)| m.connections_rejected),
                    sum(&|(s, _)| s.expired),
                    sum(&|(s, _)| s.evictions),
                    sum(&|(s, _)| s.hits),
                    sum(&|(s, _)| s.misses),
                    sum(&|(_, m)| m.auth_failures),
                );
            }
            "keyspace" => {
                text.push_str("# Keyspace\r\n");
                let keys = sum(&|(s, _)| s.items);
                if keys > 0 {
                    let _ = write!(text, "db0:keys={keys}\r\n");
                }
            }
            _ => {
                let view = core.ring_view();
                let _ = write!(
                    text,
                    "# Cluster\r\ncluster_enabled:0\r\nnexuscache_ring_members:{}\r\n\
                     nexuscache_ring_version:{}\r\n",
                    view.ring.len(),
                    view.version,
                );
                text.push_str(&cluster::info_members(core));
            }
        }
    }
    text
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2}{}", UNITS[unit])
}

/// Resident set size from /proc (Linux); `None` elsewhere or on error.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_become_ttls_from_now() {
        let now = 1_700_000_000_000;
        assert_eq!(
            ttl_from_now(Expiry::Ex(10), now),
            TtlFromNow::Ttl(Duration::from_secs(10))
        );
        assert_eq!(
            ttl_from_now(Expiry::Px(1500), now),
            TtlFromNow::Ttl(Duration::from_millis(1500))
        );
        assert_eq!(
            ttl_from_now(Expiry::ExAt(now / 1000 + 60), now),
            TtlFromNow::Ttl(Duration::from_secs(60))
        );
        assert_eq!(
            ttl_from_now(Expiry::PxAt(now + 250), now),
            TtlFromNow::Ttl(Duration::from_millis(250))
        );
        assert_eq!(ttl_from_now(Expiry::PxAt(now), now), TtlFromNow::Past);
        assert_eq!(ttl_from_now(Expiry::ExAt(1), now), TtlFromNow::Past);
        assert_eq!(
            ttl_from_now(Expiry::Ex(MAX_TTL_SECONDS), now),
            TtlFromNow::Ttl(Duration::from_secs(MAX_TTL_SECONDS))
        );
        assert_eq!(
            ttl_from_now(Expiry::Ex(MAX_TTL_SECONDS + 1), now),
            TtlFromNow::TooLong
        );
        assert_eq!(ttl_from_now(Expiry::Ex(u64::MAX), now), TtlFromNow::TooLong);
    }

    #[test]
    fn expiries_in_seconds_are_jittered_and_milliseconds_are_not() {
        let now = 1_700_000_000_000;
        assert_eq!(
            lifetime_of(Expiry::Ex(10), now),
            Ok(Lifetime::For {
                ttl: Duration::from_secs(10),
                jitter: true
            })
        );
        assert_eq!(
            lifetime_of(Expiry::ExAt(now / 1000 + 60), now),
            Ok(Lifetime::For {
                ttl: Duration::from_secs(60),
                jitter: true
            })
        );
        assert_eq!(
            lifetime_of(Expiry::Px(1500), now),
            Ok(Lifetime::For {
                ttl: Duration::from_millis(1500),
                jitter: false
            })
        );
        assert_eq!(
            lifetime_of(Expiry::PxAt(now + 250), now),
            Ok(Lifetime::For {
                ttl: Duration::from_millis(250),
                jitter: false
            })
        );
        assert_eq!(lifetime_of(Expiry::PxAt(now), now), Ok(Lifetime::Over));
        assert_eq!(lifetime_of(Expiry::ExAt(1), now), Ok(Lifetime::Over));
        assert_eq!(
            lifetime_of(Expiry::Ex(MAX_TTL_SECONDS + 1), now),
            Err(TooLong)
        );
        assert_eq!(lifetime_of(Expiry::Persist, now), Ok(Lifetime::Forever));
    }

    #[test]
    fn expire_deadlines_at_or_before_now_remove_the_key() {
        let now = 1_700_000_000_000u64;
        let now_i = now as i64;
        assert_eq!(lifetime_until(now_i, now, true), Ok(Lifetime::Over));
        assert_eq!(lifetime_until(-5000, now, false), Ok(Lifetime::Over));
        assert_eq!(lifetime_until(i64::MIN, now, true), Ok(Lifetime::Over));
        assert_eq!(
            lifetime_until(now_i + 1, now, false),
            Ok(Lifetime::For {
                ttl: Duration::from_millis(1),
                jitter: false
            })
        );
        assert_eq!(
            lifetime_until(now_i + 10_000, now, true),
            Ok(Lifetime::For {
                ttl: Duration::from_secs(10),
                jitter: true
            })
        );
        let limit = now_i + (MAX_TTL_SECONDS * 1000) as i64;
        assert!(lifetime_until(limit, now, true).is_ok());
        assert_eq!(lifetime_until(limit + 1, now, true), Err(TooLong));
    }

    #[test]
    fn only_unconditional_sets_in_whole_seconds_stay_plain_writes() {
        assert!(plain_write(None, None, false));
        assert!(plain_write(Some(Expiry::Ex(5)), None, false));
        assert!(!plain_write(Some(Expiry::Px(5)), None, false));
        assert!(!plain_write(Some(Expiry::PxAt(5)), None, false));
        assert!(!plain_write(Some(Expiry::ExAt(5)), None, false));
        assert!(!plain_write(Some(Expiry::KeepTtl), None, false));
        assert!(!plain_write(None, Some(SetCondition::Nx), false));
        assert!(!plain_write(None, None, true));
    }

    #[test]
    fn refusals_are_answered_in_redis_words() {
        let line = |refusal| mutate_failure(OpError::Refused(refusal));
        assert_eq!(
            line(Refusal::NotAnInteger),
            ("ERR value is not an integer or out of range".into(), 409)
        );
        assert_eq!(
            line(Refusal::Overflow),
            ("ERR increment or decrement would overflow".into(), 409)
        );
        assert_eq!(
            line(Refusal::ValueTooLarge { len: 9, limit: 8 }),
            (
                "ERR string exceeds maximum allowed size (proto-max-bulk-len)".into(),
                413
            )
        );
    }

    #[test]
    fn ttl_replies_follow_redis() {
        let now = Instant::now();
        let hit = |expires_at| Hit {
            value: Bytes::from_static(b"v"),
            hot: false,
            expires_at,
        };
        assert_eq!(ttl_reply(None, TimeUnit::Seconds, now), -2);
        assert_eq!(ttl_reply(Some(&hit(None)), TimeUnit::Milliseconds, now), -1);
        let later = Some(now + Duration::from_millis(1499));
        assert_eq!(ttl_reply(Some(&hit(later)), TimeUnit::Seconds, now), 1);
        assert_eq!(
            ttl_reply(Some(&hit(later)), TimeUnit::Milliseconds, now),
            1499
        );
        let later = Some(now + Duration::from_millis(1500));
        assert_eq!(ttl_reply(Some(&hit(later)), TimeUnit::Seconds, now), 2);
    }

    #[test]
    fn config_patterns_are_globs() {
        assert!(glob_match(b"maxmemory", b"maxmemory"));
        assert!(glob_match(b"MAXMEMORY", b"maxmemory"));
        assert!(glob_match(b"max*", b"maxmemory-policy"));
        assert!(glob_match(b"*", b"save"));
        assert!(glob_match(b"*max-*-len", b"proto-max-bulk-len"));
        assert!(glob_match(b"sav?", b"save"));
        assert!(!glob_match(b"maxmemory", b"maxmemory-policy"));
        assert!(!glob_match(b"sav", b"save"));
        assert!(!glob_match(b"", b"save"));
    }

    #[test]
    fn failures_are_one_line_errors_with_the_api_text() {
        let (line, status) = failure(Reply::OwnerUnavailable {
            peer: "b".into(),
            reason: "connection refused".into(),
        });
        assert_eq!(line, "ERR owner node b is unavailable: connection refused");
        assert_eq!(status, 503);
        let (line, status) = failure(Reply::OriginFailed("timed out".into()));
        assert_eq!(line, "ERR origin failed: timed out");
        assert_eq!(status, 502);
        let (line, _) = failure(Reply::TooLarge("5 bytes over\nsecond line".into()));
        assert!(line.starts_with("ERR entry does not fit"));
    }
}
