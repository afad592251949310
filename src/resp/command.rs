//! Typed commands: an argument vector from the parser becomes a
//! [`Command`], checked against the [`table`](super::table) (name, arity,
//! subcommand) and then per command (options, integers, expire times,
//! key and value sizes), with Redis's error strings.
//!
//! Commands that mean the same operation share a variant, so the code that
//! runs them has one case each: `SETEX`, `PSETEX` and `GETSET` are [`Command::Set`]
//! (with an expiry, or `get`), `INCR`, `DECR`, `INCRBY`, `DECRBY` are
//! [`Command::IncrBy`], `UNLINK` is [`Command::Del`], `TTL`/`PTTL` one
//! variant with a unit. [`Command::to_args`] writes any command back as the
//! canonical request that parses to the same value.
//!
//! NexusCache's own commands live in a module-style namespace
//! (`NEXUS.SETHOT`, `NEXUS.OWNER`), as Redis modules name theirs
//! (`JSON.SET`): they cannot collide with a future Redis command, they
//! appear in `COMMAND` with their key positions (so cluster-aware clients
//! route them like `SET`), and `SET` itself keeps exactly Redis's grammar.

use bytes::Bytes;

use super::encode::Protocol;
use super::parse::parse_i64;
use super::table::{self, CommandSpec};

/// A key as the cores take it.
pub type Key = Box<[u8]>;

/// Errors the protocol layer does not decide but the command runner sends,
/// in Redis's words.
pub mod messages {
    pub const NOAUTH: &str = "NOAUTH Authentication required.";
    pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
    /// `AUTH` on a node without a token.
    pub const AUTH_WITHOUT_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";
    /// `HELLO` without `AUTH` on a connection that has not authenticated.
    pub const HELLO_NOAUTH: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";
    /// `INCR` of a value that is not a canonical i64.
    pub const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
    pub const INCR_OVERFLOW: &str = "ERR increment or decrement would overflow";
    /// `APPEND` past the node's value limit.
    pub const STRING_TOO_LONG: &str =
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
}

/// What a command may carry: the node's key and value limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandLimits {
    pub max_key_bytes: usize,
    pub max_value_bytes: u64,
}

/// A command refused before it runs. `Display` is the whole error line
/// (code first), one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("ERR unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand { name: String, args: String },
    #[error("ERR unknown subcommand '{subcommand}'. Try {container} HELP.")]
    UnknownSubcommand {
        subcommand: String,
        container: String,
    },
    #[error("ERR wrong number of arguments for '{command}' command")]
    WrongArity { command: &'static str },
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR value is not an integer or out of range")]
    NotAnInteger,
    #[error("ERR invalid expire time in '{command}' command")]
    InvalidExpireTime { command: &'static str },
    #[error("ERR Unsupported option {0}")]
    UnsupportedOption(String),
    #[error("ERR NX and XX, GT or LT options at the same time are not compatible")]
    ExpireNxConflict,
    #[error("ERR GT and LT options at the same time are not compatible")]
    ExpireGtLtConflict,
    #[error("ERR decrement would overflow")]
    DecrementOverflow,
    #[error("ERR DB index is out of range")]
    DbIndexOutOfRange,
    #[error("ERR Protocol version is not an integer or out of range")]
    ProtocolVersionNotInteger,
    #[error("NOPROTO unsupported protocol version")]
    UnsupportedProtocol,
    #[error("ERR Syntax error in HELLO option '{0}'")]
    HelloOption(String),
    #[error("ERR Client names cannot contain spaces, newlines or special characters.")]
    InvalidClientName,
    #[error("ERR Unrecognized option '{0}'")]
    UnrecognizedClientOption(String),
    #[error("ERR {0} cannot contain spaces, newlines or special characters.")]
    InvalidClientAttribute(String),
    /// NexusCache refuses empty keys on every protocol.
    #[error("ERR empty keys are not supported")]
    EmptyKey,
    #[error("ERR key is {len} bytes, over the {limit}-byte limit")]
    KeyTooLong { len: usize, limit: usize },
    #[error("ERR value is {len} bytes, over the {limit}-byte limit")]
    ValueTooLarge { len: u64, limit: u64 },
    /// `POST` or `Host:` as a command: an HTTP request sent to the RESP
    /// port, maybe by a browser tricked into cross-protocol scripting.
    /// Redis closes such a connection without a reply.
    #[error("cross-protocol request ({0}) closed without a reply")]
    CrossProtocol(String),
}

impl CommandError {
    /// Whether the connection closes after this error (only for what
    /// looks like an attack; a bad command leaves the connection usable).
    pub fn closes_connection(&self) -> bool {
        matches!(self, CommandError::CrossProtocol(_))
    }

    /// Whether the client gets the error line before anything else
    /// happens (false: close silently).
    pub fn replies(&self) -> bool {
        !matches!(self, CommandError::CrossProtocol(_))
    }
}

/// `AUTH [username] password`, `HELLO ... AUTH username password`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<Bytes>,
    pub password: Bytes,
}

impl std::fmt::Debug for Credentials {
    // Passwords stay out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAttribute {
    LibName,
    LibVer,
}

/// What `COMMAND` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandQuery {
    /// `COMMAND`: every command's info.
    All,
    Count,
    /// `COMMAND INFO [name...]` (no names: every command).
    Info(Vec<Bytes>),
    /// `COMMAND DOCS [name...]` (no names: every command).
    Docs(Vec<Bytes>),
}

/// `SET`'s NX and XX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCondition {
    /// Only if the key does not exist.
    Nx,
    /// Only if it exists.
    Xx,
}

/// A new expiry for `SET`, `GETEX` and `NEXUS.SETHOT`. Amounts are
/// validated as Redis does: positive, and seconds small enough to be
/// counted in milliseconds in an i64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Seconds from now (`EX`, `SETEX`).
    Ex(u64),
    /// Milliseconds from now (`PX`, `PSETEX`).
    Px(u64),
    /// A Unix time in seconds (`EXAT`).
    ExAt(u64),
    /// A Unix time in milliseconds (`PXAT`).
    PxAt(u64),
    /// `SET ... KEEPTTL`: keep the key's current expiry (SET only).
    KeepTtl,
    /// `GETEX ... PERSIST`: remove the expiry (GETEX only).
    Persist,
}

impl Expiry {
    /// The Unix time in milliseconds this expiry ends at, given the time
    /// now; `None` for `KeepTtl` and `Persist`. A deadline past `u64`
    /// saturates (the node's TTL limit applies after this anyway).
    pub fn deadline_unix_ms(self, now_unix_ms: u64) -> Option<u64> {
        match self {
            Expiry::Ex(seconds) => Some(now_unix_ms.saturating_add(seconds.saturating_mul(1000))),
            Expiry::Px(ms) => Some(now_unix_ms.saturating_add(ms)),
            Expiry::ExAt(seconds) => Some(seconds.saturating_mul(1000)),
            Expiry::PxAt(ms) => Some(ms),
            Expiry::KeepTtl | Expiry::Persist => None,
        }
    }

    /// Whether the amount was given in seconds (NexusCache's
    /// `--ttl-jitter` applies only to those).
    pub fn in_seconds(self) -> bool {
        matches!(self, Expiry::Ex(_) | Expiry::ExAt(_))
    }

    fn push_args(self, args: &mut Vec<Bytes>) {
        let (token, amount): (&'static [u8], Option<u64>) = match self {
            Expiry::Ex(n) => (b"EX", Some(n)),
            Expiry::Px(n) => (b"PX", Some(n)),
            Expiry::ExAt(n) => (b"EXAT", Some(n)),
            Expiry::PxAt(n) => (b"PXAT", Some(n)),
            Expiry::KeepTtl => (b"KEEPTTL", None),
            Expiry::Persist => (b"PERSIST", None),
        };
        args.push(Bytes::from_static(token));
        if let Some(amount) = amount {
            args.push(number(amount));
        }
    }
}

/// Which of the four expire commands, which fixes the unit and whether
/// the amount is relative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireCommand {
    Expire,
    PExpire,
    ExpireAt,
    PExpireAt,
}

impl ExpireCommand {
    /// The command's name as Redis's error lines give it.
    pub fn name(self) -> &'static str {
        match self {
            ExpireCommand::Expire => "expire",
            ExpireCommand::PExpire => "pexpire",
            ExpireCommand::ExpireAt => "expireat",
            ExpireCommand::PExpireAt => "pexpireat",
        }
    }

    /// Whether the amount is in seconds (NexusCache's `--ttl-jitter`
    /// applies only to those).
    pub fn in_seconds(self) -> bool {
        matches!(self, ExpireCommand::Expire | ExpireCommand::ExpireAt)
    }

    /// The deadline `amount` names as a Unix time in milliseconds (at or
    /// before now: delete the key), or Redis's error when adding the
    /// current time overflows.
    pub fn deadline_unix_ms(self, amount: i64, now_unix_ms: i64) -> Result<i64, CommandError> {
        // Parsing checked that seconds fit in milliseconds.
        let ms = if self.in_seconds() {
            amount.saturating_mul(1000)
        } else {
            amount
        };
        if self.relative() {
            ms.checked_add(now_unix_ms)
                .ok_or(CommandError::InvalidExpireTime {
                    command: self.name(),
                })
        } else {
            Ok(ms)
        }
    }

    fn relative(self) -> bool {
        matches!(self, ExpireCommand::Expire | ExpireCommand::PExpire)
    }
}

/// `EXPIRE`'s NX, XX, GT and LT (Redis 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireCondition {
    /// Only if the key has no expiry.
    Nx,
    /// Only if it has one.
    Xx,
    /// Only if the new expiry is later (no expiry counts as infinite).
    Gt,
    /// Only if the new expiry is earlier (no expiry counts as infinite,
    /// so a key without one gets it).
    Lt,
    /// `XX LT`: only if the key has an expiry and the new one is earlier.
    XxLt,
}

/// `TTL` answers in seconds, `PTTL` in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Milliseconds,
}

/// A request, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    // Connection.
    Ping {
        message: Option<Bytes>,
    },
    Echo {
        message: Bytes,
    },
    Quit,
    Reset,
    Hello {
        protocol: Option<Protocol>,
        auth: Option<Credentials>,
        client_name: Option<Bytes>,
    },
    Auth(Credentials),
    /// An empty name clears it.
    ClientSetName {
        name: Bytes,
    },
    ClientGetName,
    ClientId,
    ClientInfo,
    ClientSetInfo {
        attribute: ClientAttribute,
        value: Bytes,
    },
    /// `CLIENT HELP`, `COMMAND HELP`, `CONFIG HELP`: answer with
    /// [`table::help_lines`] of the container.
    Help {
        container: &'static str,
    },
    /// `SELECT 0` (the only database).
    Select,
    // Server.
    Command(CommandQuery),
    Info {
        sections: Vec<Bytes>,
    },
    ConfigGet {
        parameters: Vec<Bytes>,
    },
    DbSize,
    Time,
    // Strings.
    Get {
        key: Key,
    },
    /// `SET`, and `SETEX`, `PSETEX` (an expiry), `GETSET` (`get`).
    Set {
        key: Key,
        value: Bytes,
        expiry: Option<Expiry>,
        condition: Option<SetCondition>,
        /// Answer with the old value (nil if none) instead of OK.
        get: bool,
    },
    /// `SETNX`: answers 1 or 0, where `SET NX` answers OK or nil.
    SetNx {
        key: Key,
        value: Bytes,
    },
    GetDel {
        key: Key,
    },
    /// `GETEX key [EX|PX|EXAT|PXAT n | PERSIST]`.
    GetEx {
        key: Key,
        expiry: Option<Expiry>,
    },
    MGet {
        keys: Vec<Key>,
    },
    MSet {
        pairs: Vec<(Key, Bytes)>,
    },
    Append {
        key: Key,
        value: Bytes,
    },
    /// `INCR` (1), `DECR` (-1), `INCRBY n`, `DECRBY n` (-n).
    IncrBy {
        key: Key,
        delta: i64,
    },
    StrLen {
        key: Key,
    },
    // Keys.
    /// `DEL` and `UNLINK`.
    Del {
        keys: Vec<Key>,
    },
    Exists {
        keys: Vec<Key>,
    },
    Type {
        key: Key,
    },
    Ttl {
        key: Key,
        unit: TimeUnit,
    },
    /// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`: `amount` as given
    /// (seconds or milliseconds, relative or absolute; may be negative,
    /// which deletes the key). See [`Command::expire_deadline_unix_ms`].
    Expire {
        key: Key,
        command: ExpireCommand,
        amount: i64,
        condition: Option<ExpireCondition>,
    },
    Persist {
        key: Key,
    },
    // NexusCache.
    /// `NEXUS.SETHOT key value [EX|PX|EXAT|PXAT n]`: a write copied to
    /// every node's hot tier (HTTP's `hot=true`). Answers OK.
    SetHot {
        key: Key,
        value: Bytes,
        expiry: Option<Expiry>,
    },
    /// `NEXUS.OWNER key`: which node and core own the key.
    Owner {
        key: Key,
    },
}

/// The arguments after the name, with the limits keys and values are
/// checked against.
struct Args<'a> {
    all: &'a [Bytes],
    limits: &'a CommandLimits,
}

impl Args<'_> {
    fn key(&self, index: usize) -> Result<Key, CommandError> {
        check_key(&self.all[index], self.limits)
    }

    fn value(&self, index: usize) -> Result<Bytes, CommandError> {
        let value = &self.all[index];
        let len = value.len() as u64;
        if len > self.limits.max_value_bytes {
            return Err(CommandError::ValueTooLarge {
                len,
                limit: self.limits.max_value_bytes,
            });
        }
        Ok(value.clone())
    }

    fn keys_from(&self, index: usize) -> Result<Vec<Key>, CommandError> {
        self.all[index..]
            .iter()
            .map(|key| check_key(key, self.limits))
            .collect()
    }

    fn integer(&self, index: usize) -> Result<i64, CommandError> {
        parse_i64(&self.all[index]).ok_or(CommandError::NotAnInteger)
    }
}

fn check_key(key: &[u8], limits: &CommandLimits) -> Result<Key, CommandError> {
    if key.is_empty() {
        return Err(CommandError::EmptyKey);
    }
    if key.len() > limits.max_key_bytes {
        return Err(CommandError::KeyTooLong {
            len: key.len(),
            limit: limits.max_key_bytes,
        });
    }
    Ok(Box::from(key))
}

impl Command {
    /// Parses one request (`args[0]` is the name, any case).
    pub fn parse(args: &[Bytes], limits: &CommandLimits) -> Result<Command, CommandError> {
        let Some(name) = args.first() else {
            return Err(unknown_command(args));
        };
        let Some(spec) = table::lookup(name) else {
            if name.eq_ignore_ascii_case(b"post") || name.eq_ignore_ascii_case(b"host:") {
                return Err(CommandError::CrossProtocol(lossy(name, 16)));
            }
            return Err(unknown_command(args));
        };
        if !spec.arity_allows(args.len()) {
            return Err(CommandError::WrongArity { command: spec.name });
        }
        if !spec.subcommands.is_empty() && args.len() >= 2 {
            let Some(sub) = spec.subcommand(&args[1]) else {
                return Err(CommandError::UnknownSubcommand {
                    subcommand: lossy(&args[1], 128),
                    container: spec.name.to_ascii_uppercase(),
                });
            };
            if !sub.arity_allows(args.len()) {
                return Err(CommandError::WrongArity { command: sub.name });
            }
            return parse_subcommand(spec, sub, &args[2..]);
        }
        let a = Args { all: args, limits };
        let argc = args.len();
        Ok(match spec.name {
            "ping" => match argc {
                1 => Command::Ping { message: None },
                2 => Command::Ping {
                    message: Some(args[1].clone()),
                },
                _ => return Err(CommandError::WrongArity { command: spec.name }),
            },
            "echo" => Command::Echo {
                message: args[1].clone(),
            },
            "quit" => Command::Quit,
            "reset" => Command::Reset,
            "hello" => parse_hello(&args[1..])?,
            "auth" => match argc {
                2 => Command::Auth(Credentials {
                    username: None,
                    password: args[1].clone(),
                }),
                3 => Command::Auth(Credentials {
                    username: Some(args[1].clone()),
                    password: args[2].clone(),
                }),
                _ => return Err(CommandError::Syntax),
            },
            "select" => {
                let index = a.integer(1)?;
                if i32::try_from(index).is_err() {
                    return Err(CommandError::NotAnInteger);
                }
                if index != 0 {
                    return Err(CommandError::DbIndexOutOfRange);
                }
                Command::Select
            }
            // Containers called without a subcommand.
            "command" => Command::Command(CommandQuery::All),
            "info" => Command::Info {
                sections: args[1..].to_vec(),
            },
            "dbsize" => Command::DbSize,
            "time" => Command::Time,
            "get" => Command::Get { key: a.key(1)? },
            "set" | "nexus.sethot" => {
                let key = a.key(1)?;
                let value = a.value(2)?;
                let hot = spec.name == "nexus.sethot";
                let allowed = if hot {
                    Allowed::EXPIRY_ONLY
                } else {
                    Allowed::SET
                };
                let options = parse_string_options(&args[3..], allowed, spec.name)?;
                if hot {
                    Command::SetHot {
                        key,
                        value,
                        expiry: options.expiry,
                    }
                } else {
                    Command::Set {
                        key,
                        value,
                        expiry: options.expiry,
                        condition: options.condition,
                        get: options.get,
                    }
                }
            }
            "setex" | "psetex" => {
                let key = a.key(1)?;
                let amount = a.integer(2)?;
                let value = a.value(3)?;
                let kind = if spec.name == "setex" {
                    ExpiryKind::Ex
                } else {
                    ExpiryKind::Px
                };
                Command::Set {
                    key,
                    value,
                    expiry: Some(kind.with_amount(amount, spec.name)?),
                    condition: None,
                    get: false,
                }
            }
            "setnx" => Command::SetNx {
                key: a.key(1)?,
                value: a.value(2)?,
            },
            "getset" => Command::Set {
                key: a.key(1)?,
                value: a.value(2)?,
                expiry: None,
                condition: None,
                get: true,
            },
            "getdel" => Command::GetDel { key: a.key(1)? },
            "getex" => {
                let key = a.key(1)?;
                let options = parse_string_options(&args[2..], Allowed::GETEX, spec.name)?;
                Command::GetEx {
                    key,
                    expiry: options.expiry,
                }
            }
            "mget" => Command::MGet {
                keys: a.keys_from(1)?,
            },
            "mset" => {
                if argc % 2 == 0 {
                    return Err(CommandError::WrongArity { command: spec.name });
                }
                let pairs = (1..argc)
                    .step_by(2)
                    .map(|i| Ok((a.key(i)?, a.value(i + 1)?)))
                    .collect::<Result<_, CommandError>>()?;
                Command::MSet { pairs }
            }
            "append" => Command::Append {
                key: a.key(1)?,
                value: a.value(2)?,
            },
            "incr" => Command::IncrBy {
                key: a.key(1)?,
                delta: 1,
            },
            "decr" => Command::IncrBy {
                key: a.key(1)?,
                delta: -1,
            },
            "incrby" => {
                let key = a.key(1)?;
                Command::IncrBy {
                    key,
                    delta: a.integer(2)?,
                }
            }
            "decrby" => {
                let key = a.key(1)?;
                let decrement = a.integer(2)?;
                let delta = decrement
                    .checked_neg()
                    .ok_or(CommandError::DecrementOverflow)?;
                Command::IncrBy { key, delta }
            }
            "strlen" => Command::StrLen { key: a.key(1)? },
            "del" | "unlink" => Command::Del {
                keys: a.keys_from(1)?,
            },
            "exists" => Command::Exists {
                keys: a.keys_from(1)?,
            },
            "type" => Command::Type { key: a.key(1)? },
            "ttl" => Command::Ttl {
                key: a.key(1)?,
                unit: TimeUnit::Seconds,
            },
            "pttl" => Command::Ttl {
                key: a.key(1)?,
                unit: TimeUnit::Milliseconds,
            },
            "expire" | "pexpire" | "expireat" | "pexpireat" => {
                let command = match spec.name {
                    "expire" => ExpireCommand::Expire,
                    "pexpire" => ExpireCommand::PExpire,
                    "expireat" => ExpireCommand::ExpireAt,
                    _ => ExpireCommand::PExpireAt,
                };
                let key = a.key(1)?;
                let condition = parse_expire_condition(&args[3..])?;
                let amount = a.integer(2)?;
                // The unit conversion must fit an i64 of milliseconds.
                if command.in_seconds() && amount.checked_mul(1000).is_none() {
                    return Err(CommandError::InvalidExpireTime {
                        command: command.name(),
                    });
                }
                Command::Expire {
                    key,
                    command,
                    amount,
                    condition,
                }
            }
            "persist" => Command::Persist { key: a.key(1)? },
            "nexus.owner" => Command::Owner { key: a.key(1)? },
            // A table entry without a parser is a bug caught by the
            // every_table_command_parses test, never a panic here.
            _ => return Err(unknown_command(args)),
        })
    }

    /// The table entry of the command as `COMMAND` names it (`set` for
    /// `SETEX`, `incrby` for `INCR`, `del` for `UNLINK`: the canonical
    /// form [`Command::to_args`] writes). For metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ping { .. } => "ping",
            Command::Echo { .. } => "echo",
            Command::Quit => "quit",
            Command::Reset => "reset",
            Command::Hello { .. } => "hello",
            Command::Auth(_) => "auth",
            Command::ClientSetName { .. } => "client|setname",
            Command::ClientGetName => "client|getname",
            Command::ClientId => "client|id",
            Command::ClientInfo => "client|info",
            Command::ClientSetInfo { .. } => "client|setinfo",
            Command::Help { container } => match *container {
                "client" => "client|help",
                "command" => "command|help",
                _ => "config|help",
            },
            Command::Select => "select",
            Command::Command(CommandQuery::All) => "command",
            Command::Command(CommandQuery::Count) => "command|count",
            Command::Command(CommandQuery::Info(_)) => "command|info",
            Command::Command(CommandQuery::Docs(_)) => "command|docs",
            Command::Info { .. } => "info",
            Command::ConfigGet { .. } => "config|get",
            Command::DbSize => "dbsize",
            Command::Time => "time",
            Command::Get { .. } => "get",
            Command::Set { .. } => "set",
            Command::SetNx { .. } => "setnx",
            Command::GetDel { .. } => "getdel",
            Command::GetEx { .. } => "getex",
            Command::MGet { .. } => "mget",
            Command::MSet { .. } => "mset",
            Command::Append { .. } => "append",
            Command::IncrBy { .. } => "incrby",
            Command::StrLen { .. } => "strlen",
            Command::Del { .. } => "del",
            Command::Exists { .. } => "exists",
            Command::Type { .. } => "type",
            Command::Ttl {
                unit: TimeUnit::Seconds,
                ..
            } => "ttl",
            Command::Ttl { .. } => "pttl",
            Command::Expire { command, .. } => command.name(),
            Command::Persist { .. } => "persist",
            Command::SetHot { .. } => "nexus.sethot",
            Command::Owner { .. } => "nexus.owner",
        }
    }

    /// The deadline of an `EXPIRE`-family command as a Unix time in
    /// milliseconds (at or before now: delete the key), or Redis's error
    /// when adding the current time overflows. `None` for other commands.
    pub fn expire_deadline_unix_ms(&self, now_unix_ms: i64) -> Option<Result<i64, CommandError>> {
        let Command::Expire {
            command, amount, ..
        } = self
        else {
            return None;
        };
        Some(command.deadline_unix_ms(*amount, now_unix_ms))
    }

    /// The canonical request for this command: parsing it gives back an
    /// equal `Command` (the fuzz target checks this for every input).
    pub fn to_args(&self) -> Vec<Bytes> {
        let mut args: Vec<Bytes> = Vec::new();
        let mut push = |arg: &[u8]| args.push(Bytes::copy_from_slice(arg));
        match self {
            Command::Ping { message } => {
                push(b"PING");
                if let Some(message) = message {
                    push(message);
                }
            }
            Command::Echo { message } => {
                push(b"ECHO");
                push(message);
            }
            Command::Quit => push(b"QUIT"),
            Command::Reset => push(b"RESET"),
            Command::Hello {
                protocol,
                auth,
                client_name,
            } => {
                push(b"HELLO");
                // Options need the version before them; 2 is the default.
                let version = match protocol {
                    Some(p) => Some(p.version()),
                    None if auth.is_some() || client_name.is_some() => {
                        Some(Protocol::Resp2.version())
                    }
                    None => None,
                };
                if let Some(version) = version {
                    push(version.to_string().as_bytes());
                }
                if let Some(auth) = auth {
                    push(b"AUTH");
                    push(auth.username.as_deref().unwrap_or(b"default"));
                    push(&auth.password);
                }
                if let Some(name) = client_name {
                    push(b"SETNAME");
                    push(name);
                }
            }
            Command::Auth(credentials) => {
                push(b"AUTH");
                if let Some(username) = &credentials.username {
                    push(username);
                }
                push(&credentials.password);
            }
            Command::ClientSetName { name } => {
                push(b"CLIENT");
                push(b"SETNAME");
                push(name);
            }
            Command::ClientGetName => {
                push(b"CLIENT");
                push(b"GETNAME");
            }
            Command::ClientId => {
                push(b"CLIENT");
                push(b"ID");
            }
            Command::ClientInfo => {
                push(b"CLIENT");
                push(b"INFO");
            }
            Command::ClientSetInfo { attribute, value } => {
                push(b"CLIENT");
                push(b"SETINFO");
                push(match attribute {
                    ClientAttribute::LibName => b"LIB-NAME",
                    ClientAttribute::LibVer => b"LIB-VER",
                });
                push(value);
            }
            Command::Help { container } => {
                push(container.to_ascii_uppercase().as_bytes());
                push(b"HELP");
            }
            Command::Select => {
                push(b"SELECT");
                push(b"0");
            }
            Command::Command(query) => {
                push(b"COMMAND");
                match query {
                    CommandQuery::All => {}
                    CommandQuery::Count => push(b"COUNT"),
                    CommandQuery::Info(names) | CommandQuery::Docs(names) => {
                        push(if matches!(query, CommandQuery::Info(_)) {
                            b"INFO"
                        } else {
                            b"DOCS"
                        });
                        for name in names {
                            push(name);
                        }
                    }
                }
            }
            Command::Info { sections } => {
                push(b"INFO");
                for section in sections {
                    push(section);
                }
            }
            Command::ConfigGet { parameters } => {
                push(b"CONFIG");
                push(b"GET");
                for parameter in parameters {
                    push(parameter);
                }
            }
            Command::DbSize => push(b"DBSIZE"),
            Command::Time => push(b"TIME"),
            Command::Get { key } => {
                push(b"GET");
                push(key);
            }
            Command::Set {
                key,
                value,
                expiry,
                condition,
                get,
            } => {
                push(b"SET");
                push(key);
                args.push(value.clone());
                match condition {
                    Some(SetCondition::Nx) => args.push(Bytes::from_static(b"NX")),
                    Some(SetCondition::Xx) => args.push(Bytes::from_static(b"XX")),
                    None => {}
                }
                if *get {
                    args.push(Bytes::from_static(b"GET"));
                }
                if let Some(expiry) = expiry {
                    expiry.push_args(&mut args);
                }
            }
            Command::SetNx { key, value } => {
                push(b"SETNX");
                push(key);
                args.push(value.clone());
            }
            Command::GetDel { key } => {
                push(b"GETDEL");
                push(key);
            }
            Command::GetEx { key, expiry } => {
                push(b"GETEX");
                push(key);
                if let Some(expiry) = expiry {
                    expiry.push_args(&mut args);
                }
            }
            Command::MGet { keys } => {
                push(b"MGET");
                keys.iter().for_each(|key| push(key));
            }
            Command::MSet { pairs } => {
                push(b"MSET");
                for (key, value) in pairs {
                    args.push(Bytes::copy_from_slice(key));
                    args.push(value.clone());
                }
            }
            Command::Append { key, value } => {
                push(b"APPEND");
                push(key);
                args.push(value.clone());
            }
            Command::IncrBy { key, delta } => {
                push(b"INCRBY");
                push(key);
                push(delta.to_string().as_bytes());
            }
            Command::StrLen { key } => {
                push(b"STRLEN");
                push(key);
            }
            Command::Del { keys } => {
                push(b"DEL");
                keys.iter().for_each(|key| push(key));
            }
            Command::Exists { keys } => {
                push(b"EXISTS");
                keys.iter().for_each(|key| push(key));
            }
            Command::Type { key } => {
                push(b"TYPE");
                push(key);
            }
            Command::Ttl { key, unit } => {
                push(match unit {
                    TimeUnit::Seconds => b"TTL",
                    TimeUnit::Milliseconds => b"PTTL",
                });
                push(key);
            }
            Command::Expire {
                key,
                command,
                amount,
                condition,
            } => {
                push(command.name().to_ascii_uppercase().as_bytes());
                push(key);
                push(amount.to_string().as_bytes());
                match condition {
                    None => {}
                    Some(ExpireCondition::Nx) => push(b"NX"),
                    Some(ExpireCondition::Xx) => push(b"XX"),
                    Some(ExpireCondition::Gt) => push(b"GT"),
                    Some(ExpireCondition::Lt) => push(b"LT"),
                    Some(ExpireCondition::XxLt) => {
                        push(b"XX");
                        push(b"LT");
                    }
                }
            }
            Command::Persist { key } => {
                push(b"PERSIST");
                push(key);
            }
            Command::SetHot { key, value, expiry } => {
                push(b"NEXUS.SETHOT");
                push(key);
                args.push(value.clone());
                if let Some(expiry) = expiry {
                    expiry.push_args(&mut args);
                }
            }
            Command::Owner { key } => {
                push(b"NEXUS.OWNER");
                push(key);
            }
        }
        args
    }
}

fn parse_subcommand(
    container: &CommandSpec,
    sub: &'static CommandSpec,
    rest: &[Bytes],
) -> Result<Command, CommandError> {
    let short = &sub.name[container.name.len() + 1..];
    Ok(match (container.name, short) {
        (_, "help") => Command::Help {
            container: container.name,
        },
        ("client", "setname") => {
            let name = &rest[0];
            if !valid_client_attribute(name) {
                return Err(CommandError::InvalidClientName);
            }
            Command::ClientSetName { name: name.clone() }
        }
        ("client", "getname") => Command::ClientGetName,
        ("client", "id") => Command::ClientId,
        ("client", "info") => Command::ClientInfo,
        ("client", "setinfo") => {
            let (attribute, value) = (&rest[0], &rest[1]);
            let parsed = if attribute.eq_ignore_ascii_case(b"lib-name") {
                ClientAttribute::LibName
            } else if attribute.eq_ignore_ascii_case(b"lib-ver") {
                ClientAttribute::LibVer
            } else {
                return Err(CommandError::UnrecognizedClientOption(lossy(
                    attribute, 128,
                )));
            };
            if !valid_client_attribute(value) {
                return Err(CommandError::InvalidClientAttribute(lossy(attribute, 128)));
            }
            Command::ClientSetInfo {
                attribute: parsed,
                value: value.clone(),
            }
        }
        ("command", "count") => Command::Command(CommandQuery::Count),
        ("command", "info") => Command::Command(CommandQuery::Info(rest.to_vec())),
        ("command", "docs") => Command::Command(CommandQuery::Docs(rest.to_vec())),
        ("config", "get") => Command::ConfigGet {
            parameters: rest.to_vec(),
        },
        _ => {
            return Err(CommandError::UnknownSubcommand {
                subcommand: short.to_string(),
                container: container.name.to_ascii_uppercase(),
            })
        }
    })
}

/// `HELLO [protover [AUTH username password] [SETNAME name]]`.
fn parse_hello(rest: &[Bytes]) -> Result<Command, CommandError> {
    let Some((version, options)) = rest.split_first() else {
        return Ok(Command::Hello {
            protocol: None,
            auth: None,
            client_name: None,
        });
    };
    let protocol = match parse_i64(version).ok_or(CommandError::ProtocolVersionNotInteger)? {
        2 => Protocol::Resp2,
        3 => Protocol::Resp3,
        _ => return Err(CommandError::UnsupportedProtocol),
    };
    let (mut auth, mut client_name) = (None, None);
    let mut at = 0;
    while at < options.len() {
        let option = &options[at];
        let more = options.len() - at - 1;
        if option.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            auth = Some(Credentials {
                username: Some(options[at + 1].clone()),
                password: options[at + 2].clone(),
            });
            at += 3;
        } else if option.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            let name = &options[at + 1];
            if !valid_client_attribute(name) {
                return Err(CommandError::InvalidClientName);
            }
            client_name = Some(name.clone());
            at += 2;
        } else {
            return Err(CommandError::HelloOption(lossy(option, 128)));
        }
    }
    Ok(Command::Hello {
        protocol: Some(protocol),
        auth,
        client_name,
    })
}

/// Client names and library attributes are printable ASCII without
/// spaces (they are shown space-separated in `CLIENT INFO`).
fn valid_client_attribute(value: &[u8]) -> bool {
    value.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpiryKind {
    Ex,
    Px,
    ExAt,
    PxAt,
}

impl ExpiryKind {
    /// Redis's checks: an integer, positive, and seconds that fit in
    /// milliseconds.
    fn with_amount(self, amount: i64, command: &'static str) -> Result<Expiry, CommandError> {
        let seconds = matches!(self, ExpiryKind::Ex | ExpiryKind::ExAt);
        if amount <= 0 || (seconds && amount > i64::MAX / 1000) {
            return Err(CommandError::InvalidExpireTime { command });
        }
        let amount = amount.unsigned_abs();
        Ok(match self {
            ExpiryKind::Ex => Expiry::Ex(amount),
            ExpiryKind::Px => Expiry::Px(amount),
            ExpiryKind::ExAt => Expiry::ExAt(amount),
            ExpiryKind::PxAt => Expiry::PxAt(amount),
        })
    }
}

/// Which options a string command takes.
#[derive(Debug, Clone, Copy)]
struct Allowed {
    conditions: bool,
    get: bool,
    keep_ttl: bool,
    persist: bool,
}

impl Allowed {
    const SET: Allowed = Allowed {
        conditions: true,
        get: true,
        keep_ttl: true,
        persist: false,
    };
    const GETEX: Allowed = Allowed {
        conditions: false,
        get: false,
        keep_ttl: false,
        persist: true,
    };
    const EXPIRY_ONLY: Allowed = Allowed {
        conditions: false,
        get: false,
        keep_ttl: false,
        persist: false,
    };
}

#[derive(Debug, Default)]
struct StringOptions {
    expiry: Option<Expiry>,
    condition: Option<SetCondition>,
    get: bool,
}

/// `SET`/`GETEX` options as Redis reads them: NX and XX exclude each
/// other, the expiry forms (EX, PX, EXAT, PXAT, KEEPTTL, PERSIST) exclude
/// each other but one may repeat (the last amount counts), GET and NX may
/// repeat; anything else, or a timed form without its amount, is a syntax
/// error. The amount is checked after every option was read.
fn parse_string_options(
    options: &[Bytes],
    allowed: Allowed,
    command: &'static str,
) -> Result<StringOptions, CommandError> {
    #[derive(PartialEq)]
    enum Form {
        Timed(ExpiryKind),
        KeepTtl,
        Persist,
    }
    let mut parsed = StringOptions::default();
    let mut form: Option<(Form, Option<&Bytes>)> = None;
    let mut at = 0;
    while at < options.len() {
        let option = options[at].to_ascii_uppercase();
        let next = options.get(at + 1);
        let compatible = |wanted: &Form| form.as_ref().is_none_or(|(f, _)| f == wanted);
        match option.as_slice() {
            b"NX" if allowed.conditions && parsed.condition != Some(SetCondition::Xx) => {
                parsed.condition = Some(SetCondition::Nx);
            }
            b"XX" if allowed.conditions && parsed.condition != Some(SetCondition::Nx) => {
                parsed.condition = Some(SetCondition::Xx);
            }
            b"GET" if allowed.get => parsed.get = true,
            b"KEEPTTL" if allowed.keep_ttl && compatible(&Form::KeepTtl) => {
                form = Some((Form::KeepTtl, None));
            }
            b"PERSIST" if allowed.persist && compatible(&Form::Persist) => {
                form = Some((Form::Persist, None));
            }
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if next.is_some() => {
                let kind = match option.as_slice() {
                    b"EX" => ExpiryKind::Ex,
                    b"PX" => ExpiryKind::Px,
                    b"EXAT" => ExpiryKind::ExAt,
                    _ => ExpiryKind::PxAt,
                };
                if !compatible(&Form::Timed(kind)) {
                    return Err(CommandError::Syntax);
                }
                form = Some((Form::Timed(kind), next));
                at += 1;
            }
            _ => return Err(CommandError::Syntax),
        }
        at += 1;
    }
    parsed.expiry = match form {
        None => None,
        Some((Form::KeepTtl, _)) => Some(Expiry::KeepTtl),
        Some((Form::Persist, _)) => Some(Expiry::Persist),
        Some((Form::Timed(kind), amount)) => {
            let amount = amount.map(|a| parse_i64(a)).ok_or(CommandError::Syntax)?;
            let amount = amount.ok_or(CommandError::NotAnInteger)?;
            Some(kind.with_amount(amount, command)?)
        }
    };
    Ok(parsed)
}

/// `EXPIRE`'s trailing NX, XX, GT, LT with Redis's compatibility rules.
fn parse_expire_condition(options: &[Bytes]) -> Result<Option<ExpireCondition>, CommandError> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in options {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => return Err(CommandError::UnsupportedOption(lossy(option, 128))),
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CommandError::ExpireNxConflict);
    }
    if gt && lt {
        return Err(CommandError::ExpireGtLtConflict);
    }
    // XX with GT is GT (a key without expiry counts as infinite, which no
    // new expiry is greater than); XX with LT is its own condition.
    Ok(match (nx, xx, gt, lt) {
        (true, ..) => Some(ExpireCondition::Nx),
        (_, _, true, _) => Some(ExpireCondition::Gt),
        (_, true, _, true) => Some(ExpireCondition::XxLt),
        (_, _, _, true) => Some(ExpireCondition::Lt),
        (_, true, ..) => Some(ExpireCondition::Xx),
        _ => None,
    })
}

/// `text` as a one-line string of at most `limit` bytes (Redis's `%.128s`;
/// CR and LF become spaces).
fn lossy(text: &[u8], limit: usize) -> String {
    String::from_utf8_lossy(&text[..text.len().min(limit)]).replace(['\r', '\n'], " ")
}

/// Redis's unknown-command error: the name, then the arguments quoted
/// while fewer than 128 bytes of them were written.
fn unknown_command(args: &[Bytes]) -> CommandError {
    let name = args.first().map(|n| lossy(n, 128)).unwrap_or_default();
    let mut listed = String::new();
    for arg in args.iter().skip(1) {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push('\'');
        listed.push_str(&lossy(arg, room));
        listed.push_str("' ");
    }
    CommandError::UnknownCommand { name, args: listed }
}

/// A decimal number as an argument.
fn number(n: u64) -> Bytes {
    Bytes::from(n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CommandLimits = CommandLimits {
        max_key_bytes: 16,
        max_value_bytes: 32,
    };

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    fn parse(line: &str) -> Result<Command, CommandError> {
        Command::parse(&args(line), &LIMITS)
    }

    fn key(k: &str) -> Key {
        Box::from(k.as_bytes())
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn set(
        value: &str,
        expiry: Option<Expiry>,
        condition: Option<SetCondition>,
        get: bool,
    ) -> Command {
        Command::Set {
            key: key("k"),
            value: b(value),
            expiry,
            condition,
            get,
        }
    }

    #[test]
    fn valid_commands_parse_into_their_typed_form_and_back() {
        use Command as C;
        let cases: Vec<(&str, Command)> = vec![
            ("PING", C::Ping { message: None }),
            (
                "ping hi",
                C::Ping {
                    message: Some(b("hi")),
                },
            ),
            ("ECHO x", C::Echo { message: b("x") }),
            ("QUIT", C::Quit),
            ("quit now", C::Quit),
            ("RESET", C::Reset),
            (
                "HELLO",
                C::Hello {
                    protocol: None,
                    auth: None,
                    client_name: None,
                },
            ),
            (
                "HELLO 3",
                C::Hello {
                    protocol: Some(Protocol::Resp3),
                    auth: None,
                    client_name: None,
                },
            ),
            (
                "hello 2 auth default secret setname app",
                C::Hello {
                    protocol: Some(Protocol::Resp2),
                    auth: Some(Credentials {
                        username: Some(b("default")),
                        password: b("secret"),
                    }),
                    client_name: Some(b("app")),
                },
            ),
            (
                "AUTH secret",
                C::Auth(Credentials {
                    username: None,
                    password: b("secret"),
                }),
            ),
            (
                "AUTH default secret",
                C::Auth(Credentials {
                    username: Some(b("default")),
                    password: b("secret"),
                }),
            ),
            (
                "CLIENT SETNAME app-1",
                C::ClientSetName { name: b("app-1") },
            ),
            ("client getname", C::ClientGetName),
            ("CLIENT ID", C::ClientId),
            ("CLIENT INFO", C::ClientInfo),
            (
                "CLIENT SETINFO lib-name redis-py",
                C::ClientSetInfo {
                    attribute: ClientAttribute::LibName,
                    value: b("redis-py"),
                },
            ),
            (
                "CLIENT SETINFO LIB-VER 5.0.1",
                C::ClientSetInfo {
                    attribute: ClientAttribute::LibVer,
                    value: b("5.0.1"),
                },
            ),
            (
                "CLIENT HELP",
                C::Help {
                    container: "client",
                },
            ),
            ("SELECT 0", C::Select),
            ("COMMAND", C::Command(CommandQuery::All)),
            ("COMMAND COUNT", C::Command(CommandQuery::Count)),
            (
                "command info get set",
                C::Command(CommandQuery::Info(vec![b("get"), b("set")])),
            ),
            ("COMMAND DOCS", C::Command(CommandQuery::Docs(vec![]))),
            (
                "COMMAND HELP",
                C::Help {
                    container: "command",
                },
            ),
            ("INFO", C::Info { sections: vec![] }),
            (
                "INFO server memory",
                C::Info {
                    sections: vec![b("server"), b("memory")],
                },
            ),
            (
                "CONFIG GET save appendonly",
                C::ConfigGet {
                    parameters: vec![b("save"), b("appendonly")],
                },
            ),
            (
                "CONFIG HELP",
                C::Help {
                    container: "config",
                },
            ),
            ("DBSIZE", C::DbSize),
            ("TIME", C::Time),
            ("GET k", C::Get { key: key("k") }),
            ("SET k v", set("v", None, None, false)),
            ("set k v nx", set("v", None, Some(SetCondition::Nx), false)),
            (
                "SET k v XX GET",
                set("v", None, Some(SetCondition::Xx), true),
            ),
            (
                "SET k v NX NX GET GET",
                set("v", None, Some(SetCondition::Nx), true),
            ),
            ("SET k v EX 10", set("v", Some(Expiry::Ex(10)), None, false)),
            (
                "SET k v ex 10 EX 20",
                set("v", Some(Expiry::Ex(20)), None, false),
            ),
            (
                "SET k v PX 1500",
                set("v", Some(Expiry::Px(1500)), None, false),
            ),
            (
                "SET k v EXAT 1700000000",
                set("v", Some(Expiry::ExAt(1_700_000_000)), None, false),
            ),
            (
                "SET k v PXAT 1700000000000 NX",
                set(
                    "v",
                    Some(Expiry::PxAt(1_700_000_000_000)),
                    Some(SetCondition::Nx),
                    false,
                ),
            ),
            (
                "SET k v KEEPTTL",
                set("v", Some(Expiry::KeepTtl), None, false),
            ),
            (
                "SET k v EX 9223372036854775",
                set("v", Some(Expiry::Ex(9_223_372_036_854_775)), None, false),
            ),
            ("SETEX k 10 v", set("v", Some(Expiry::Ex(10)), None, false)),
            ("PSETEX k 10 v", set("v", Some(Expiry::Px(10)), None, false)),
            ("GETSET k v", set("v", None, None, true)),
            (
                "SETNX k v",
                C::SetNx {
                    key: key("k"),
                    value: b("v"),
                },
            ),
            ("GETDEL k", C::GetDel { key: key("k") }),
            (
                "GETEX k",
                C::GetEx {
                    key: key("k"),
                    expiry: None,
                },
            ),
            (
                "GETEX k PERSIST",
                C::GetEx {
                    key: key("k"),
                    expiry: Some(Expiry::Persist),
                },
            ),
            (
                "GETEX k px 5",
                C::GetEx {
                    key: key("k"),
                    expiry: Some(Expiry::Px(5)),
                },
            ),
            (
                "MGET a b a",
                C::MGet {
                    keys: vec![key("a"), key("b"), key("a")],
                },
            ),
            (
                "MSET a 1 b 2",
                C::MSet {
                    pairs: vec![(key("a"), b("1")), (key("b"), b("2"))],
                },
            ),
            (
                "APPEND k v",
                C::Append {
                    key: key("k"),
                    value: b("v"),
                },
            ),
            (
                "INCR k",
                C::IncrBy {
                    key: key("k"),
                    delta: 1,
                },
            ),
            (
                "DECR k",
                C::IncrBy {
                    key: key("k"),
                    delta: -1,
                },
            ),
            (
                "INCRBY k -9223372036854775808",
                C::IncrBy {
                    key: key("k"),
                    delta: i64::MIN,
                },
            ),
            (
                "DECRBY k 5",
                C::IncrBy {
                    key: key("k"),
                    delta: -5,
                },
            ),
            (
                "DECRBY k -9223372036854775807",
                C::IncrBy {
                    key: key("k"),
                    delta: i64::MAX,
                },
            ),
            ("STRLEN k", C::StrLen { key: key("k") }),
            (
                "DEL a b",
                C::Del {
                    keys: vec![key("a"), key("b")],
                },
            ),
            (
                "UNLINK a",
                C::Del {
                    keys: vec![key("a")],
                },
            ),
            (
                "EXISTS a a",
                C::Exists {
                    keys: vec![key("a"), key("a")],
                },
            ),
            ("TYPE k", C::Type { key: key("k") }),
            (
                "TTL k",
                C::Ttl {
                    key: key("k"),
                    unit: TimeUnit::Seconds,
                },
            ),
            (
                "PTTL k",
                C::Ttl {
                    key: key("k"),
                    unit: TimeUnit::Milliseconds,
                },
            ),
            (
                "EXPIRE k 10",
                C::Expire {
                    key: key("k"),
                    command: ExpireCommand::Expire,
                    amount: 10,
                    condition: None,
                },
            ),
            (
                "EXPIRE k -1 nx",
                C::Expire {
                    key: key("k"),
                    command: ExpireCommand::Expire,
                    amount: -1,
                    condition: Some(ExpireCondition::Nx),
                },
            ),
            (
                "PEXPIRE k 10 XX GT",
                C::Expire {
                    key: key("k"),
                    command: ExpireCommand::PExpire,
                    amount: 10,
                    condition: Some(ExpireCondition::Gt),
                },
            ),
            (
                "PEXPIRE k 10 LT XX",
                C::Expire {
                    key: key("k"),
                    command: ExpireCommand::PExpire,
                    amount: 10,
                    condition: Some(ExpireCondition::XxLt),
                },
            ),
            (
                "EXPIREAT k 1700000000 LT",
                C::Expire {
                    key: key("k"),
                    command: ExpireCommand::ExpireAt,
                    amount: 1_700_000_000,
                    condition: Some(ExpireCondition::Lt),
                },
            ),
            (
                "PEXPIREAT k 0 XX",
                C::Expire {
                    key: key("k"),
                    command: ExpireCommand::PExpireAt,
                    amount: 0,
                    condition: Some(ExpireCondition::Xx),
                },
            ),
            ("PERSIST k", C::Persist { key: key("k") }),
            (
                "NEXUS.SETHOT k v",
                C::SetHot {
                    key: key("k"),
                    value: b("v"),
                    expiry: None,
                },
            ),
            (
                "nexus.sethot k v EX 60",
                C::SetHot {
                    key: key("k"),
                    value: b("v"),
                    expiry: Some(Expiry::Ex(60)),
                },
            ),
            ("NEXUS.OWNER k", C::Owner { key: key("k") }),
        ];
        for (line, want) in cases {
            let got = parse(line);
            assert_eq!(got.as_ref(), Ok(&want), "{line}");
            // The canonical form parses to the same command.
            let again = Command::parse(&want.to_args(), &LIMITS);
            assert_eq!(again.as_ref(), Ok(&want), "{line} -> {:?}", want.to_args());
            // And it names a table entry.
            assert!(
                table::lookup_full_name(want.name().as_bytes()).is_some(),
                "{line}"
            );
        }
    }

    #[test]
    fn refusals_carry_redis_error_strings() {
        let long_key = "k".repeat(17);
        let long_value = "v".repeat(33);
        let cases: Vec<(String, &str)> = [
            ("GET", "ERR wrong number of arguments for 'get' command"),
            ("GET a b", "ERR wrong number of arguments for 'get' command"),
            ("set k", "ERR wrong number of arguments for 'set' command"),
            (
                "PING a b",
                "ERR wrong number of arguments for 'ping' command",
            ),
            (
                "MSET a 1 b",
                "ERR wrong number of arguments for 'mset' command",
            ),
            (
                "CLIENT",
                "ERR wrong number of arguments for 'client' command",
            ),
            (
                "CLIENT SETNAME",
                "ERR wrong number of arguments for 'client|setname' command",
            ),
            (
                "CONFIG GET",
                "ERR wrong number of arguments for 'config|get' command",
            ),
            (
                "COMMAND COUNT x",
                "ERR wrong number of arguments for 'command|count' command",
            ),
            (
                "CLIENT KILL x",
                "ERR unknown subcommand 'KILL'. Try CLIENT HELP.",
            ),
            (
                "config set save x",
                "ERR unknown subcommand 'set'. Try CONFIG HELP.",
            ),
            (
                "FOO",
                "ERR unknown command 'FOO', with args beginning with: ",
            ),
            (
                "foo a b",
                "ERR unknown command 'foo', with args beginning with: 'a' 'b' ",
            ),
            ("SET k v NX XX", "ERR syntax error"),
            ("SET k v XX NX", "ERR syntax error"),
            ("SET k v EX", "ERR syntax error"),
            ("SET k v EX 10 PX 10", "ERR syntax error"),
            ("SET k v KEEPTTL EX 10", "ERR syntax error"),
            ("SET k v EX 10 KEEPTTL", "ERR syntax error"),
            ("SET k v PERSIST", "ERR syntax error"),
            ("SET k v FOO", "ERR syntax error"),
            (
                "SET k v EX ten",
                "ERR value is not an integer or out of range",
            ),
            (
                "SET k v EX 1.5",
                "ERR value is not an integer or out of range",
            ),
            ("SET k v EX 0", "ERR invalid expire time in 'set' command"),
            ("SET k v PX -5", "ERR invalid expire time in 'set' command"),
            (
                "SET k v EX 9223372036854776",
                "ERR invalid expire time in 'set' command",
            ),
            ("SETEX k 0 v", "ERR invalid expire time in 'setex' command"),
            ("SETEX k x v", "ERR value is not an integer or out of range"),
            (
                "PSETEX k -1 v",
                "ERR invalid expire time in 'psetex' command",
            ),
            ("GETEX k EX 0", "ERR invalid expire time in 'getex' command"),
            ("GETEX k KEEPTTL", "ERR syntax error"),
            ("GETEX k NX", "ERR syntax error"),
            ("GETEX k PERSIST EX 5", "ERR syntax error"),
            ("NEXUS.SETHOT k v NX", "ERR syntax error"),
            (
                "NEXUS.SETHOT k v EX 0",
                "ERR invalid expire time in 'nexus.sethot' command",
            ),
            ("INCRBY k x", "ERR value is not an integer or out of range"),
            (
                "INCRBY k 9223372036854775808",
                "ERR value is not an integer or out of range",
            ),
            ("INCRBY k 01", "ERR value is not an integer or out of range"),
            (
                "DECRBY k -9223372036854775808",
                "ERR decrement would overflow",
            ),
            ("EXPIRE k x", "ERR value is not an integer or out of range"),
            ("EXPIRE k 10 FOO", "ERR Unsupported option FOO"),
            (
                "EXPIRE k 10 NX XX",
                "ERR NX and XX, GT or LT options at the same time are not compatible",
            ),
            (
                "EXPIRE k 10 GT NX",
                "ERR NX and XX, GT or LT options at the same time are not compatible",
            ),
            (
                "EXPIRE k 10 GT LT",
                "ERR GT and LT options at the same time are not compatible",
            ),
            (
                "EXPIRE k 9223372036854776",
                "ERR invalid expire time in 'expire' command",
            ),
            (
                "EXPIREAT k -9223372036854776",
                "ERR invalid expire time in 'expireat' command",
            ),
            ("SELECT 1", "ERR DB index is out of range"),
            ("SELECT -1", "ERR DB index is out of range"),
            ("SELECT x", "ERR value is not an integer or out of range"),
            (
                "SELECT 2147483648",
                "ERR value is not an integer or out of range",
            ),
            (
                "HELLO x",
                "ERR Protocol version is not an integer or out of range",
            ),
            ("HELLO 4", "NOPROTO unsupported protocol version"),
            ("HELLO 1", "NOPROTO unsupported protocol version"),
            (
                "HELLO 3 AUTH user",
                "ERR Syntax error in HELLO option 'AUTH'",
            ),
            (
                "HELLO 3 SETNAME",
                "ERR Syntax error in HELLO option 'SETNAME'",
            ),
            ("HELLO 3 FOO", "ERR Syntax error in HELLO option 'FOO'"),
            (
                "HELLO 3 SETNAME a\tb",
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ),
            (
                "CLIENT SETNAME a\nb",
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ),
            (
                "CLIENT SETINFO lib-foo x",
                "ERR Unrecognized option 'lib-foo'",
            ),
            (
                "CLIENT SETINFO lib-name a\u{7f}",
                "ERR lib-name cannot contain spaces, newlines or special characters.",
            ),
            ("AUTH a b c", "ERR syntax error"),
            ("GET ", "ERR empty keys are not supported"),
            ("MGET a ", "ERR empty keys are not supported"),
        ]
        .iter()
        .map(|(line, want)| (line.to_string(), *want))
        .chain([
            (
                format!("GET {long_key}"),
                "ERR key is 17 bytes, over the 16-byte limit",
            ),
            (
                format!("SET k {long_value}"),
                "ERR value is 33 bytes, over the 32-byte limit",
            ),
            (
                format!("MSET a 1 {long_key} 2"),
                "ERR key is 17 bytes, over the 16-byte limit",
            ),
        ])
        .collect();
        for (line, want) in cases {
            let got = parse(&line);
            let got = got.map_err(|e| e.to_string());
            assert_eq!(got, Err(want.to_string()), "{line:?}");
        }
    }

    #[test]
    fn unknown_command_lists_at_most_128_bytes_of_arguments_on_one_line() {
        let long = "a".repeat(200);
        let err =
            Command::parse(&[b("x\r\ny"), b(&long), b("b")], &LIMITS).map_err(|e| e.to_string());
        assert_eq!(
            err,
            Err(format!(
                "ERR unknown command 'x  y', with args beginning with: '{}' ",
                "a".repeat(128)
            ))
        );
        let err = Command::parse(
            &[b("x"), b(&"a".repeat(100)), b(&"b".repeat(100)), b("c")],
            &LIMITS,
        );
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err(format!(
                "ERR unknown command 'x', with args beginning with: '{}' '{}' ",
                "a".repeat(100),
                "b".repeat(25)
            ))
        );
    }

    #[test]
    fn http_requests_on_the_resp_port_close_without_a_reply() {
        for line in ["POST / HTTP/1.1", "Host: example.com", "post"] {
            let err = parse(line).expect_err(line);
            assert!(err.closes_connection() && !err.replies(), "{line}: {err:?}");
        }
        // A GET from a browser is an ordinary (wrong-arity) GET in Redis too.
        let err = parse("GET / HTTP/1.1").expect_err("get");
        assert!(!err.closes_connection() && err.replies());
    }

    #[test]
    fn every_command_in_the_table_has_a_parser() {
        for spec in table::COMMANDS {
            let subcommands: Vec<&CommandSpec> = if spec.subcommands.is_empty() {
                vec![spec]
            } else {
                spec.subcommands.iter().collect()
            };
            for sub in subcommands {
                // The smallest request the arity allows, with arguments
                // every parser accepts where it takes a key, value or number.
                let mut request: Vec<Bytes> = sub.name.split('|').map(b).collect();
                let wanted = sub.arity.unsigned_abs() as usize;
                let fillers = match sub.name {
                    "hello" | "select" => vec!["0"],
                    "client|setinfo" => vec!["lib-name", "x"],
                    "setex" | "psetex" => vec!["k", "1", "v"],
                    "incrby" | "decrby" | "expire" | "pexpire" | "expireat" | "pexpireat" => {
                        vec!["k", "1"]
                    }
                    _ => vec!["k", "v", "1"],
                };
                request.extend(
                    fillers
                        .iter()
                        .take(wanted.saturating_sub(request.len()))
                        .map(|f| b(f)),
                );
                let parsed = Command::parse(&request, &LIMITS);
                match (sub.name, &parsed) {
                    ("hello", Err(CommandError::UnsupportedProtocol)) => {}
                    ("select", Ok(Command::Select)) => {}
                    (_, Ok(command)) => {
                        // Folded commands (SETEX is a SET) name their
                        // canonical form; the rest name themselves.
                        let canonical = table::lookup_full_name(command.name().as_bytes());
                        assert!(canonical.is_some(), "{request:?}");
                        assert_eq!(
                            Command::parse(&command.to_args(), &LIMITS).as_ref(),
                            Ok(command)
                        );
                    }
                    _ => panic!("{}: {request:?} -> {parsed:?}", sub.name),
                }
            }
        }
    }

    #[test]
    fn expire_deadlines_are_computed_from_the_time_passed_in() {
        let now = 1_700_000_000_000;
        let deadline = |line: &str| parse(line).expect(line).expire_deadline_unix_ms(now);
        assert_eq!(deadline("EXPIRE k 10"), Some(Ok(now + 10_000)));
        assert_eq!(deadline("PEXPIRE k -5"), Some(Ok(now - 5)));
        assert_eq!(deadline("EXPIREAT k 100"), Some(Ok(100_000)));
        assert_eq!(deadline("PEXPIREAT k 100"), Some(Ok(100)));
        assert_eq!(
            deadline("PEXPIRE k 9223372036854775807").map(|r| r.map_err(|e| e.to_string())),
            Some(Err(
                "ERR invalid expire time in 'pexpire' command".to_string()
            ))
        );
        assert_eq!(deadline("GET k"), None);

        assert_eq!(Expiry::Ex(2).deadline_unix_ms(1000), Some(3000));
        assert_eq!(Expiry::Px(2).deadline_unix_ms(1000), Some(1002));
        assert_eq!(Expiry::ExAt(2).deadline_unix_ms(1000), Some(2000));
        assert_eq!(Expiry::PxAt(2).deadline_unix_ms(1000), Some(2));
        assert_eq!(Expiry::KeepTtl.deadline_unix_ms(1000), None);
        assert_eq!(Expiry::Px(u64::MAX).deadline_unix_ms(1000), Some(u64::MAX));
        assert!(Expiry::Ex(1).in_seconds() && !Expiry::Px(1).in_seconds());
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let command = parse("AUTH user hunter2").expect("auth");
        let shown = format!("{command:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[test]
    fn binary_keys_and_values_are_kept_exactly() {
        let key_bytes = Bytes::from_static(b"\0\xff\r\n");
        let value = Bytes::from_static(b"\x00\x01\xfe");
        let command = Command::parse(&[b("SET"), key_bytes.clone(), value.clone()], &LIMITS);
        assert_eq!(
            command,
            Ok(Command::Set {
                key: Box::from(&key_bytes[..]),
                value,
                expiry: None,
                condition: None,
                get: false
            })
        );
    }
}
