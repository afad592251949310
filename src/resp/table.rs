//! The command table: every command NexusCache answers over RESP, with
//! Redis's arity, flags, key positions, key specs and documentation, and
//! the `COMMAND`, `COMMAND COUNT`, `COMMAND INFO` and `COMMAND DOCS` replies
//! built from it in the shapes redis-cli (hints, `help`) and client
//! libraries (redis-py's `parse_command`, cluster key routing) read.
//!
//! Arity counts the command name: `n` means exactly `n` arguments, `-n` at
//! least `n`. Key positions are Redis's legacy triple (first, last, step;
//! a negative last counts from the end) plus the equivalent key spec.

use bytes::BufMut;

use super::encode::ReplyWriter;

/// One command or subcommand.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    /// Lowercase full name, `container|sub` for a subcommand.
    pub name: &'static str,
    pub arity: i32,
    /// Redis's flag names as `COMMAND` shows them (`write`, `readonly`,
    /// `denyoom`, `fast`, `no_auth`, ...).
    pub flags: &'static [&'static str],
    /// The ACL category of the command's group (`@string`, `@keyspace`,
    /// `@connection`), besides those its flags imply.
    pub category: Option<&'static str>,
    /// Redis's command tips (`nondeterministic_output`, request policies).
    pub tips: &'static [&'static str],
    /// Where the keys are, when the command has any.
    pub keys: Option<KeySpec>,
    pub subcommands: &'static [CommandSpec],
    pub summary: &'static str,
    pub since: &'static str,
    pub group: &'static str,
    pub complexity: &'static str,
    pub doc_flags: &'static [&'static str],
    pub arguments: &'static [Arg],
}

/// Keys from argument 1 on: up to `last_key` (0: just the first; -1: to the
/// end) every `step` arguments.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// `RO`, `RW`, `OW`, `RM` and `access`, `update`, `insert`, `delete`.
    pub flags: &'static [&'static str],
    pub last_key: i32,
    pub step: i32,
}

impl KeySpec {
    const fn one(flags: &'static [&'static str]) -> Option<KeySpec> {
        Some(KeySpec {
            flags,
            last_key: 0,
            step: 1,
        })
    }

    const fn all(flags: &'static [&'static str], step: i32) -> Option<KeySpec> {
        Some(KeySpec {
            flags,
            last_key: -1,
            step,
        })
    }
}

/// One documented argument (`COMMAND DOCS`), which redis-cli turns into
/// hints such as `key value [NX|XX] [GET] [EX seconds|...]`.
#[derive(Debug, Clone, Copy)]
pub struct Arg {
    pub name: &'static str,
    /// `key`, `string`, `integer`, `unix-time`, `pure-token`, `oneof`, `block`.
    pub kind: &'static str,
    pub token: Option<&'static str>,
    pub optional: bool,
    pub multiple: bool,
    pub since: Option<&'static str>,
    /// The alternatives of a `oneof`, the parts of a `block`.
    pub args: &'static [Arg],
}

impl Arg {
    const fn new(name: &'static str, kind: &'static str) -> Arg {
        Arg {
            name,
            kind,
            token: None,
            optional: false,
            multiple: false,
            since: None,
            args: &[],
        }
    }
    const fn key(name: &'static str) -> Arg {
        Arg::new(name, "key")
    }
    const fn string(name: &'static str) -> Arg {
        Arg::new(name, "string")
    }
    const fn integer(name: &'static str) -> Arg {
        Arg::new(name, "integer")
    }
    const fn unix_time(name: &'static str) -> Arg {
        Arg::new(name, "unix-time")
    }
    const fn pure_token(name: &'static str, token: &'static str) -> Arg {
        Arg::new(name, "pure-token").token(token)
    }
    const fn oneof(name: &'static str, args: &'static [Arg]) -> Arg {
        Arg {
            args,
            ..Arg::new(name, "oneof")
        }
    }
    const fn block(name: &'static str, args: &'static [Arg]) -> Arg {
        Arg {
            args,
            ..Arg::new(name, "block")
        }
    }
    const fn token(self, token: &'static str) -> Arg {
        Arg {
            token: Some(token),
            ..self
        }
    }
    const fn optional(self) -> Arg {
        Arg {
            optional: true,
            ..self
        }
    }
    const fn multiple(self) -> Arg {
        Arg {
            multiple: true,
            ..self
        }
    }
    const fn since(self, version: &'static str) -> Arg {
        Arg {
            since: Some(version),
            ..self
        }
    }
}

const BASE: CommandSpec = CommandSpec {
    name: "",
    arity: 0,
    flags: &[],
    category: None,
    tips: &[],
    keys: None,
    subcommands: &[],
    summary: "",
    since: "1.0.0",
    group: "",
    complexity: "O(1)",
    doc_flags: &[],
    arguments: &[],
};

const CONNECTION: CommandSpec = CommandSpec {
    group: "connection",
    category: Some("@connection"),
    ..BASE
};
const SERVER: CommandSpec = CommandSpec {
    group: "server",
    ..BASE
};
const STRING: CommandSpec = CommandSpec {
    group: "string",
    category: Some("@string"),
    ..BASE
};
const GENERIC: CommandSpec = CommandSpec {
    group: "generic",
    category: Some("@keyspace"),
    ..BASE
};

const KEY: &[Arg] = &[Arg::key("key")];
const KEY_VALUE: &[Arg] = &[Arg::key("key"), Arg::string("value")];
const KEYS: &[Arg] = &[Arg::key("key").multiple()];
const EXPIRE_CONDITION: Arg = Arg::oneof(
    "condition",
    &[
        Arg::pure_token("nx", "NX"),
        Arg::pure_token("xx", "XX"),
        Arg::pure_token("gt", "GT"),
        Arg::pure_token("lt", "LT"),
    ],
)
.optional()
.since("7.0.0");
const EX: Arg = Arg::integer("seconds").token("EX");
const PX: Arg = Arg::integer("milliseconds").token("PX");
const EXAT: Arg = Arg::unix_time("unix-time-seconds").token("EXAT");
const PXAT: Arg = Arg::unix_time("unix-time-milliseconds").token("PXAT");

const READ_FAST: &[&str] = &["readonly", "fast"];
const WRITE_FAST: &[&str] = &["write", "fast"];
const WRITE_DENYOOM: &[&str] = &["write", "denyoom"];
const WRITE_DENYOOM_FAST: &[&str] = &["write", "denyoom", "fast"];
const RW_ACCESS_UPDATE: &[&str] = &["RW", "access", "update"];
const RW_UPDATE: &[&str] = &["RW", "update"];
const OW_UPDATE: &[&str] = &["OW", "update"];

const CLIENT_SUBCOMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "client|setname",
        arity: 3,
        flags: &["noscript", "loading", "stale"],
        tips: &["request_policy:all_nodes", "response_policy:all_succeeded"],
        summary: "Sets the connection name.",
        since: "2.6.9",
        arguments: &[Arg::string("connection-name")],
        ..CONNECTION
    },
    CommandSpec {
        name: "client|getname",
        arity: 2,
        flags: &["noscript", "loading", "stale"],
        summary: "Returns the name of the connection.",
        since: "2.6.9",
        ..CONNECTION
    },
    CommandSpec {
        name: "client|id",
        arity: 2,
        flags: &["noscript", "loading", "stale"],
        summary: "Returns the unique client ID of the connection.",
        since: "5.0.0",
        ..CONNECTION
    },
    CommandSpec {
        name: "client|setinfo",
        arity: 4,
        flags: &["noscript", "loading", "stale"],
        tips: &["request_policy:all_nodes", "response_policy:all_succeeded"],
        summary: "Sets information specific to the client or connection.",
        since: "7.2.0",
        arguments: &[Arg::oneof(
            "attr",
            &[
                Arg::string("libname").token("LIB-NAME"),
                Arg::string("libver").token("LIB-VER"),
            ],
        )],
        ..CONNECTION
    },
    CommandSpec {
        name: "client|info",
        arity: 2,
        flags: &["noscript", "loading", "stale"],
        tips: &["nondeterministic_output"],
        summary: "Returns information about the connection.",
        since: "6.2.0",
        ..CONNECTION
    },
    CommandSpec {
        name: "client|help",
        arity: 2,
        flags: &["loading", "stale"],
        summary: "Returns helpful text about the different subcommands.",
        since: "5.0.0",
        ..CONNECTION
    },
];

const COMMAND_SUBCOMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "command|count",
        arity: 2,
        flags: &["loading", "stale"],
        category: Some("@connection"),
        summary: "Returns a count of commands.",
        since: "2.8.13",
        ..SERVER
    },
    CommandSpec {
        name: "command|docs",
        arity: -2,
        flags: &["loading", "stale"],
        category: Some("@connection"),
        tips: &["nondeterministic_output_order"],
        summary: "Returns documentary information about one, multiple or all commands.",
        since: "7.0.0",
        complexity: "O(N) where N is the number of commands to look up",
        arguments: &[Arg::string("command-name").optional().multiple()],
        ..SERVER
    },
    CommandSpec {
        name: "command|info",
        arity: -2,
        flags: &["loading", "stale"],
        category: Some("@connection"),
        tips: &["nondeterministic_output_order"],
        summary: "Returns information about one, multiple or all commands.",
        since: "2.8.13",
        complexity: "O(N) where N is the number of commands to look up",
        arguments: &[Arg::string("command-name").optional().multiple()],
        ..SERVER
    },
    CommandSpec {
        name: "command|help",
        arity: 2,
        flags: &["loading", "stale"],
        category: Some("@connection"),
        summary: "Returns helpful text about the different subcommands.",
        since: "5.0.0",
        ..SERVER
    },
];

const CONFIG_SUBCOMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "config|get",
        arity: -3,
        flags: &["admin", "noscript", "loading", "stale"],
        summary: "Returns the effective values of configuration parameters.",
        since: "2.0.0",
        complexity: "O(N) when N is the number of configuration parameters provided",
        arguments: &[Arg::string("parameter").multiple()],
        ..SERVER
    },
    CommandSpec {
        name: "config|help",
        arity: 2,
        flags: &["loading", "stale"],
        summary: "Returns helpful text about the different subcommands.",
        since: "5.0.0",
        ..SERVER
    },
];

/// Every top-level command, in the order `COMMAND` lists them.
pub static COMMANDS: &[CommandSpec] = &[
    // Connection.
    CommandSpec {
        name: "ping",
        arity: -1,
        flags: &["fast"],
        tips: &["request_policy:all_shards", "response_policy:all_succeeded"],
        summary: "Returns the server's liveliness response.",
        arguments: &[Arg::string("message").optional()],
        ..CONNECTION
    },
    CommandSpec {
        name: "echo",
        arity: 2,
        flags: &["loading", "stale", "fast"],
        summary: "Returns the given string.",
        arguments: &[Arg::string("message")],
        ..CONNECTION
    },
    CommandSpec {
        name: "quit",
        arity: -1,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        summary: "Closes the connection.",
        doc_flags: &["deprecated"],
        ..CONNECTION
    },
    CommandSpec {
        name: "reset",
        arity: 1,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        summary: "Resets the connection.",
        since: "6.2.0",
        ..CONNECTION
    },
    CommandSpec {
        name: "hello",
        arity: -1,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        summary: "Handshakes with the server.",
        since: "6.0.0",
        arguments: &[Arg::block(
            "arguments",
            &[
                Arg::integer("protover"),
                Arg::block(
                    "auth",
                    &[Arg::string("username"), Arg::string("password")],
                )
                .token("AUTH")
                .optional(),
                Arg::string("clientname").token("SETNAME").optional(),
            ],
        )
        .optional()],
        ..CONNECTION
    },
    CommandSpec {
        name: "auth",
        arity: -2,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        summary: "Authenticates the connection.",
        arguments: &[
            Arg::string("username").optional().since("6.0.0"),
            Arg::string("password"),
        ],
        ..CONNECTION
    },
    CommandSpec {
        name: "client",
        arity: -2,
        summary: "A container for client connection commands.",
        since: "2.4.0",
        complexity: "Depends on subcommand.",
        category: None,
        subcommands: CLIENT_SUBCOMMANDS,
        ..CONNECTION
    },
    CommandSpec {
        name: "select",
        arity: 2,
        flags: &["loading", "stale", "fast"],
        summary: "Changes the selected database (NexusCache has only database 0).",
        arguments: &[Arg::integer("index")],
        ..CONNECTION
    },
    // Server.
    CommandSpec {
        name: "command",
        arity: -1,
        flags: &["loading", "stale"],
        category: Some("@connection"),
        tips: &["nondeterministic_output_order"],
        summary: "Returns detailed information about all commands.",
        since: "2.8.13",
        complexity: "O(N) where N is the total number of commands",
        subcommands: COMMAND_SUBCOMMANDS,
        ..SERVER
    },
    CommandSpec {
        name: "info",
        arity: -1,
        flags: &["loading", "stale"],
        category: Some("@dangerous"),
        tips: &[
            "nondeterministic_output",
            "request_policy:all_shards",
            "response_policy:special",
        ],
        summary: "Returns information and statistics about the server.",
        arguments: &[Arg::string("section").optional().multiple()],
        ..SERVER
    },
    CommandSpec {
        name: "config",
        arity: -2,
        summary: "A container for server configuration commands.",
        since: "2.0.0",
        complexity: "Depends on subcommand.",
        subcommands: CONFIG_SUBCOMMANDS,
        ..SERVER
    },
    CommandSpec {
        name: "dbsize",
        arity: 1,
        flags: READ_FAST,
        category: Some("@keyspace"),
        tips: &["request_policy:all_shards", "response_policy:agg_sum"],
        summary: "Returns the number of keys in the cluster (every node's shards).",
        ..SERVER
    },
    CommandSpec {
        name: "time",
        arity: 1,
        flags: &["loading", "stale", "fast"],
        tips: &["nondeterministic_output"],
        summary: "Returns the server time.",
        since: "2.6.0",
        ..SERVER
    },
    // Strings.
    CommandSpec {
        name: "get",
        arity: 2,
        flags: READ_FAST,
        keys: KeySpec::one(&["RO", "access"]),
        summary: "Returns the string value of a key.",
        arguments: KEY,
        ..STRING
    },
    CommandSpec {
        name: "set",
        arity: -3,
        flags: WRITE_DENYOOM,
        keys: KeySpec::one(&["RW", "access", "update", "variable_flags"]),
        summary: "Sets the string value of a key. The key is created if it doesn't exist.",
        arguments: &[
            Arg::key("key"),
            Arg::string("value"),
            Arg::oneof(
                "condition",
                &[Arg::pure_token("nx", "NX"), Arg::pure_token("xx", "XX")],
            )
            .optional()
            .since("2.6.12"),
            Arg::pure_token("get", "GET").optional().since("6.2.0"),
            Arg::oneof(
                "expiration",
                &[
                    EX,
                    PX,
                    EXAT,
                    PXAT,
                    Arg::pure_token("keepttl", "KEEPTTL"),
                ],
            )
            .optional(),
        ],
        ..STRING
    },
    CommandSpec {
        name: "setex",
        arity: 4,
        flags: WRITE_DENYOOM,
        keys: KeySpec::one(OW_UPDATE),
        summary: "Sets the string value and expiration time in seconds of a key.",
        since: "2.0.0",
        doc_flags: &["deprecated"],
        arguments: &[
            Arg::key("key"),
            Arg::integer("seconds"),
            Arg::string("value"),
        ],
        ..STRING
    },
    CommandSpec {
        name: "psetex",
        arity: 4,
        flags: WRITE_DENYOOM,
        keys: KeySpec::one(OW_UPDATE),
        summary: "Sets the string value and expiration time in milliseconds of a key.",
        since: "2.6.0",
        doc_flags: &["deprecated"],
        arguments: &[
            Arg::key("key"),
            Arg::integer("milliseconds"),
            Arg::string("value"),
        ],
        ..STRING
    },
    CommandSpec {
        name: "setnx",
        arity: 3,
        flags: WRITE_DENYOOM_FAST,
        keys: KeySpec::one(&["OW", "insert"]),
        summary: "Sets the string value of a key only when the key doesn't exist.",
        doc_flags: &["deprecated"],
        arguments: KEY_VALUE,
        ..STRING
    },
    CommandSpec {
        name: "getset",
        arity: 3,
        flags: WRITE_DENYOOM_FAST,
        keys: KeySpec::one(RW_ACCESS_UPDATE),
        summary: "Returns the previous string value of a key after setting it to a new value.",
        doc_flags: &["deprecated"],
        arguments: KEY_VALUE,
        ..STRING
    },
    CommandSpec {
        name: "getdel",
        arity: 2,
        flags: WRITE_FAST,
        keys: KeySpec::one(&["RW", "access", "delete"]),
        summary: "Returns the string value of a key after deleting the key.",
        since: "6.2.0",
        arguments: KEY,
        ..STRING
    },
    CommandSpec {
        name: "getex",
        arity: -2,
        flags: WRITE_FAST,
        keys: KeySpec::one(RW_ACCESS_UPDATE),
        summary: "Returns the string value of a key after setting its expiration time.",
        since: "6.2.0",
        arguments: &[
            Arg::key("key"),
            Arg::oneof(
                "expiration",
                &[
                    EX,
                    PX,
                    EXAT,
                    PXAT,
                    Arg::pure_token("persist", "PERSIST"),
                ],
            )
            .optional(),
        ],
        ..STRING
    },
    CommandSpec {
        name: "mget",
        arity: -2,
        flags: READ_FAST,
        tips: &["request_policy:multi_shard"],
        keys: KeySpec::all(&["RO", "access"], 1),
        summary: "Returns the string values of one or more keys.",
        complexity: "O(N) where N is the number of keys to retrieve.",
        arguments: KEYS,
        ..STRING
    },
    CommandSpec {
        name: "mset",
        arity: -3,
        flags: WRITE_DENYOOM,
        tips: &["request_policy:multi_shard", "response_policy:all_succeeded"],
        keys: KeySpec::all(OW_UPDATE, 2),
        summary: "Creates or modifies the string values of one or more keys.",
        since: "1.0.1",
        complexity: "O(N) where N is the number of keys to set.",
        arguments: &[Arg::block("data", KEY_VALUE).multiple()],
        ..STRING
    },
    CommandSpec {
        name: "append",
        arity: 3,
        flags: WRITE_DENYOOM_FAST,
        keys: KeySpec::one(&["RW", "insert"]),
        summary: "Appends a string to the value of a key. Creates the key if it doesn't exist.",
        since: "2.0.0",
        arguments: KEY_VALUE,
        ..STRING
    },
    CommandSpec {
        name: "incr",
        arity: 2,
        flags: WRITE_DENYOOM_FAST,
        keys: KeySpec::one(RW_ACCESS_UPDATE),
        summary: "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.",
        arguments: KEY,
        ..STRING
    },
    CommandSpec {
        name: "decr",
        arity: 2,
        flags: WRITE_DENYOOM_FAST,
        keys: KeySpec::one(RW_ACCESS_UPDATE),
        summary: "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.",
        arguments: KEY,
        ..STRING
    },
    CommandSpec {
        name: "incrby",
        arity: 3,
        flags: WRITE_DENYOOM_FAST,
        keys: KeySpec::one(RW_ACCESS_UPDATE),
        summary: "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.",
        arguments: &[Arg::key("key"), Arg::integer("increment")],
        ..STRING
    },
    CommandSpec {
        name: "decrby",
        arity: 3,
        flags: WRITE_DENYOOM_FAST,
        keys: KeySpec::one(RW_ACCESS_UPDATE),
        summary: "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.",
        arguments: &[Arg::key("key"), Arg::integer("decrement")],
        ..STRING
    },
    CommandSpec {
        name: "strlen",
        arity: 2,
        flags: READ_FAST,
        keys: KeySpec::one(&["RO"]),
        summary: "Returns the length of a string value.",
        since: "2.2.0",
        arguments: KEY,
        ..STRING
    },
    // Keys.
    CommandSpec {
        name: "del",
        arity: -2,
        flags: &["write"],
        tips: &["request_policy:multi_shard", "response_policy:agg_sum"],
        keys: KeySpec::all(&["RM", "delete"], 1),
        summary: "Deletes one or more keys.",
        complexity: "O(N) where N is the number of keys that will be removed.",
        arguments: KEYS,
        ..GENERIC
    },
    CommandSpec {
        name: "unlink",
        arity: -2,
        flags: WRITE_FAST,
        tips: &["request_policy:multi_shard", "response_policy:agg_sum"],
        keys: KeySpec::all(&["RM", "delete"], 1),
        summary: "Deletes one or more keys (the same as DEL in NexusCache).",
        since: "4.0.0",
        complexity: "O(N) where N is the number of keys that will be removed.",
        arguments: KEYS,
        ..GENERIC
    },
    CommandSpec {
        name: "exists",
        arity: -2,
        flags: READ_FAST,
        tips: &["request_policy:multi_shard", "response_policy:agg_sum"],
        keys: KeySpec::all(&["RO"], 1),
        summary: "Determines whether one or more keys exist.",
        complexity: "O(N) where N is the number of keys to check.",
        arguments: KEYS,
        ..GENERIC
    },
    CommandSpec {
        name: "type",
        arity: 2,
        flags: READ_FAST,
        keys: KeySpec::one(&["RO"]),
        summary: "Determines the type of value stored at a key.",
        arguments: KEY,
        ..GENERIC
    },
    CommandSpec {
        name: "ttl",
        arity: 2,
        flags: READ_FAST,
        tips: &["nondeterministic_output"],
        keys: KeySpec::one(&["RO", "access"]),
        summary: "Returns the expiration time in seconds of a key.",
        arguments: KEY,
        ..GENERIC
    },
    CommandSpec {
        name: "pttl",
        arity: 2,
        flags: READ_FAST,
        tips: &["nondeterministic_output"],
        keys: KeySpec::one(&["RO", "access"]),
        summary: "Returns the expiration time in milliseconds of a key.",
        since: "2.6.0",
        arguments: KEY,
        ..GENERIC
    },
    CommandSpec {
        name: "expire",
        arity: -3,
        flags: WRITE_FAST,
        keys: KeySpec::one(RW_UPDATE),
        summary: "Sets the expiration time of a key in seconds.",
        arguments: &[Arg::key("key"), Arg::integer("seconds"), EXPIRE_CONDITION],
        ..GENERIC
    },
    CommandSpec {
        name: "pexpire",
        arity: -3,
        flags: WRITE_FAST,
        keys: KeySpec::one(RW_UPDATE),
        summary: "Sets the expiration time of a key in milliseconds.",
        since: "2.6.0",
        arguments: &[
            Arg::key("key"),
            Arg::integer("milliseconds"),
            EXPIRE_CONDITION,
        ],
        ..GENERIC
    },
    CommandSpec {
        name: "expireat",
        arity: -3,
        flags: WRITE_FAST,
        keys: KeySpec::one(RW_UPDATE),
        summary: "Sets the expiration time of a key to a Unix timestamp.",
        since: "1.2.0",
        arguments: &[
            Arg::key("key"),
            Arg::unix_time("unix-time-seconds"),
            EXPIRE_CONDITION,
        ],
        ..GENERIC
    },
    CommandSpec {
        name: "pexpireat",
        arity: -3,
        flags: WRITE_FAST,
        keys: KeySpec::one(RW_UPDATE),
        summary: "Sets the expiration time of a key to a Unix milliseconds timestamp.",
        since: "2.6.0",
        arguments: &[
            Arg::key("key"),
            Arg::unix_time("unix-time-milliseconds"),
            EXPIRE_CONDITION,
        ],
        ..GENERIC
    },
    CommandSpec {
        name: "persist",
        arity: 2,
        flags: WRITE_FAST,
        keys: KeySpec::one(RW_UPDATE),
        summary: "Removes the expiration time of a key.",
        since: "2.2.0",
        arguments: KEY,
        ..GENERIC
    },
    // NexusCache's own, in a module-style namespace so they can never
    // collide with a future Redis command.
    CommandSpec {
        name: "nexus.sethot",
        arity: -3,
        flags: WRITE_DENYOOM,
        keys: KeySpec::one(OW_UPDATE),
        summary: "NexusCache: sets a key as a hot key, copied to every node (like hot=true over HTTP).",
        arguments: &[
            Arg::key("key"),
            Arg::string("value"),
            Arg::oneof(
                "expiration",
                &[EX, PX, EXAT, PXAT],
            )
            .optional(),
        ],
        ..STRING
    },
    CommandSpec {
        name: "nexus.owner",
        arity: 2,
        flags: READ_FAST,
        category: Some("@keyspace"),
        keys: KeySpec::one(&["RO"]),
        summary: "NexusCache: returns the node and core that own a key.",
        group: "cluster",
        arguments: KEY,
        ..BASE
    },
];

/// ACL categories in the order Redis lists them.
const CATEGORY_ORDER: &[&str] = &[
    "@keyspace",
    "@read",
    "@write",
    "@string",
    "@admin",
    "@fast",
    "@slow",
    "@dangerous",
    "@connection",
];

impl CommandSpec {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    /// May run before the connection authenticated (`AUTH`, `HELLO`,
    /// `QUIT`, `RESET`).
    pub fn allowed_without_auth(&self) -> bool {
        self.has_flag("no_auth")
    }

    /// Changes data (what a read-only replica or a draining node refuses).
    pub fn is_write(&self) -> bool {
        self.has_flag("write")
    }

    /// Whether `argc` arguments (the name included) satisfy the arity.
    pub fn arity_allows(&self, argc: usize) -> bool {
        let argc = i64::try_from(argc).unwrap_or(i64::MAX);
        let arity = i64::from(self.arity);
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }

    /// Redis's legacy key triple: first key, last key, step.
    pub fn key_positions(&self) -> (i64, i64, i64) {
        match self.keys {
            None => (0, 0, 0),
            Some(spec) => {
                let last = if spec.last_key >= 0 {
                    1 + spec.last_key
                } else {
                    spec.last_key
                };
                (1, i64::from(last), i64::from(spec.step))
            }
        }
    }

    /// The ACL categories: the group's, plus those the flags imply (as
    /// Redis's `setImplicitACLCategories` derives them).
    pub fn acl_categories(&self) -> impl Iterator<Item = &'static str> + '_ {
        let fast = self.has_flag("fast");
        CATEGORY_ORDER.iter().copied().filter(move |&category| {
            self.category == Some(category)
                || match category {
                    "@read" => self.has_flag("readonly"),
                    "@write" => self.has_flag("write"),
                    "@admin" | "@dangerous" => self.has_flag("admin"),
                    "@fast" => fast,
                    "@slow" => !fast,
                    _ => false,
                }
        })
    }

    /// The subcommand `sub` (any case) of this container.
    pub fn subcommand(&self, sub: &[u8]) -> Option<&'static CommandSpec> {
        let prefix = self.name.len() + 1;
        self.subcommands
            .iter()
            .find(|spec| spec.name.as_bytes()[prefix..].eq_ignore_ascii_case(sub))
    }
}

/// The top-level command called `name`, in any case.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
}

/// A command by its full name as `COMMAND INFO` and `COMMAND DOCS` take
/// it: `get`, or `client|setname` for a subcommand.
pub fn lookup_full_name(name: &[u8]) -> Option<&'static CommandSpec> {
    match name.iter().position(|&b| b == b'|') {
        None => lookup(name),
        Some(bar) => lookup(&name[..bar])?.subcommand(&name[bar + 1..]),
    }
}

/// `COMMAND COUNT`: the top-level commands.
pub fn command_count() -> usize {
    COMMANDS.len()
}

/// The reply of `COMMAND` (every command) or `COMMAND INFO name...` (one
/// entry per name, null for an unknown one).
pub fn write_command_info<B: BufMut>(w: &mut ReplyWriter<'_, B>, names: &[impl AsRef<[u8]>]) {
    if names.is_empty() {
        w.array(COMMANDS.len());
        for spec in COMMANDS {
            write_info(w, spec);
        }
        return;
    }
    w.array(names.len());
    for name in names {
        match lookup_full_name(name.as_ref()) {
            Some(spec) => write_info(w, spec),
            None => w.null_array(),
        }
    }
}

/// The reply of `COMMAND DOCS [name...]`: a map from full name to docs,
/// without the names that are not commands.
pub fn write_command_docs<B: BufMut>(w: &mut ReplyWriter<'_, B>, names: &[impl AsRef<[u8]>]) {
    if names.is_empty() {
        w.map(COMMANDS.len());
        for spec in COMMANDS {
            w.bulk(spec.name.as_bytes());
            write_docs(w, spec);
        }
        return;
    }
    let found: Vec<&CommandSpec> = names
        .iter()
        .filter_map(|name| lookup_full_name(name.as_ref()))
        .collect();
    w.map(found.len());
    for spec in found {
        w.bulk(spec.name.as_bytes());
        write_docs(w, spec);
    }
}

/// One command's 10-element `COMMAND INFO` entry (Redis 7 shape).
fn write_info<B: BufMut>(w: &mut ReplyWriter<'_, B>, spec: &CommandSpec) {
    let (first, last, step) = spec.key_positions();
    w.array(10);
    w.bulk(spec.name.as_bytes());
    w.integer(i64::from(spec.arity));
    w.set(spec.flags.len());
    for flag in spec.flags {
        w.simple(flag.as_bytes());
    }
    w.integer(first);
    w.integer(last);
    w.integer(step);
    w.set(spec.acl_categories().count());
    for category in spec.acl_categories() {
        w.simple(category.as_bytes());
    }
    w.set(spec.tips.len());
    for tip in spec.tips {
        w.bulk(tip.as_bytes());
    }
    match spec.keys {
        None => w.set(0),
        Some(keys) => {
            w.set(1);
            w.map(3);
            w.bulk(b"flags");
            w.set(keys.flags.len());
            for flag in keys.flags {
                w.simple(flag.as_bytes());
            }
            w.bulk(b"begin_search");
            w.map(2);
            w.bulk(b"type");
            w.bulk(b"index");
            w.bulk(b"spec");
            w.map(1);
            w.bulk(b"index");
            w.integer(1);
            w.bulk(b"find_keys");
            w.map(2);
            w.bulk(b"type");
            w.bulk(b"range");
            w.bulk(b"spec");
            w.map(3);
            w.bulk(b"lastkey");
            w.integer(i64::from(keys.last_key));
            w.bulk(b"keystep");
            w.integer(i64::from(keys.step));
            w.bulk(b"limit");
            w.integer(0);
        }
    }
    if spec.subcommands.is_empty() {
        w.set(0);
    } else {
        w.array(spec.subcommands.len());
        for sub in spec.subcommands {
            write_info(w, sub);
        }
    }
}

/// One command's `COMMAND DOCS` map.
fn write_docs<B: BufMut>(w: &mut ReplyWriter<'_, B>, spec: &CommandSpec) {
    let fields = 4
        + usize::from(!spec.doc_flags.is_empty())
        + usize::from(!spec.arguments.is_empty())
        + usize::from(!spec.subcommands.is_empty());
    w.map(fields);
    w.bulk(b"summary");
    w.bulk(spec.summary.as_bytes());
    w.bulk(b"since");
    w.bulk(spec.since.as_bytes());
    w.bulk(b"group");
    w.bulk(spec.group.as_bytes());
    w.bulk(b"complexity");
    w.bulk(spec.complexity.as_bytes());
    if !spec.doc_flags.is_empty() {
        w.bulk(b"doc_flags");
        w.set(spec.doc_flags.len());
        for flag in spec.doc_flags {
            w.simple(flag.as_bytes());
        }
    }
    if !spec.arguments.is_empty() {
        w.bulk(b"arguments");
        write_args(w, spec.arguments);
    }
    if !spec.subcommands.is_empty() {
        w.bulk(b"subcommands");
        w.map(spec.subcommands.len());
        for sub in spec.subcommands {
            w.bulk(sub.name.as_bytes());
            write_docs(w, sub);
        }
    }
}

fn write_args<B: BufMut>(w: &mut ReplyWriter<'_, B>, args: &[Arg]) {
    w.array(args.len());
    for arg in args {
        let nested = matches!(arg.kind, "oneof" | "block");
        let flags = usize::from(arg.optional) + usize::from(arg.multiple);
        let fields = 2
            + usize::from(arg.kind == "key")
            + usize::from(arg.token.is_some())
            + usize::from(arg.since.is_some())
            + usize::from(flags > 0)
            + 1; // display_text, or the nested arguments
        w.map(fields);
        w.bulk(b"name");
        w.bulk(arg.name.as_bytes());
        w.bulk(b"type");
        w.bulk(arg.kind.as_bytes());
        if !nested {
            w.bulk(b"display_text");
            w.bulk(arg.name.as_bytes());
        }
        if arg.kind == "key" {
            // Every command here has one key spec.
            w.bulk(b"key_spec_index");
            w.integer(0);
        }
        if let Some(token) = arg.token {
            w.bulk(b"token");
            w.bulk(token.as_bytes());
        }
        if let Some(since) = arg.since {
            w.bulk(b"since");
            w.bulk(since.as_bytes());
        }
        if flags > 0 {
            w.bulk(b"flags");
            w.set(flags);
            if arg.optional {
                w.simple(b"optional");
            }
            if arg.multiple {
                w.simple(b"multiple");
            }
        }
        if nested {
            w.bulk(b"arguments");
            write_args(w, arg.args);
        }
    }
}

/// The lines `CLIENT HELP`, `COMMAND HELP` and `CONFIG HELP` answer with
/// (one simple string each), for a container's full name.
pub fn help_lines(container: &str) -> &'static [&'static str] {
    match container {
        "client" => &[
            "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GETNAME",
            "    Return the name of the current connection.",
            "ID",
            "    Return the ID of the current connection.",
            "INFO",
            "    Return information about the current client connection.",
            "SETINFO <option> <value>",
            "    Set client meta attr. Options are:",
            "    * LIB-NAME: the client lib name.",
            "    * LIB-VER: the client lib version.",
            "SETNAME <name>",
            "    Assign the name <name> to the current connection.",
            "HELP",
            "    Print this help.",
        ],
        "command" => &[
            "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "(no subcommand)",
            "    Return details about all commands.",
            "COUNT",
            "    Return the total number of commands.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple commands.",
            "INFO [<command-name> ...]",
            "    Return details about multiple commands.",
            "HELP",
            "    Print this help.",
        ],
        "config" => &[
            "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "HELP",
            "    Print this help.",
        ],
        _ => &[],
    }
}

/// The reply of `CLIENT HELP`, `COMMAND HELP`, `CONFIG HELP`: an array of
/// simple strings, as Redis answers.
pub fn write_help<B: BufMut>(w: &mut ReplyWriter<'_, B>, container: &str) {
    let lines = help_lines(container);
    w.array(lines.len());
    for line in lines {
        w.simple(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::encode::Protocol;

    #[test]
    fn names_are_unique_lowercase_and_subcommands_are_prefixed() {
        let mut seen = std::collections::HashSet::new();
        for spec in COMMANDS {
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            assert!(seen.insert(spec.name), "{} twice", spec.name);
            assert!(
                !spec.summary.is_empty() && !spec.group.is_empty(),
                "{}",
                spec.name
            );
            for sub in spec.subcommands {
                assert!(
                    sub.name.starts_with(&format!("{}|", spec.name)),
                    "{}",
                    sub.name
                );
                assert!(sub.arity.unsigned_abs() >= 2, "{}", sub.name);
                assert!(seen.insert(sub.name), "{} twice", sub.name);
            }
        }
        assert_eq!(command_count(), COMMANDS.len());
    }

    #[test]
    fn arity_and_key_positions_match_redis() {
        let cases: &[(&str, i32, (i64, i64, i64))] = &[
            ("get", 2, (1, 1, 1)),
            ("set", -3, (1, 1, 1)),
            ("mget", -2, (1, -1, 1)),
            ("mset", -3, (1, -1, 2)),
            ("del", -2, (1, -1, 1)),
            ("ping", -1, (0, 0, 0)),
            ("client|setname", 3, (0, 0, 0)),
            ("config|get", -3, (0, 0, 0)),
            ("expire", -3, (1, 1, 1)),
            ("nexus.sethot", -3, (1, 1, 1)),
        ];
        for (name, arity, keys) in cases {
            let spec = lookup_full_name(name.as_bytes()).expect(name);
            assert_eq!(spec.arity, *arity, "{name}");
            assert_eq!(spec.key_positions(), *keys, "{name}");
        }
        let get = lookup(b"GeT").expect("get");
        assert!(get.arity_allows(2) && !get.arity_allows(1) && !get.arity_allows(3));
        let mget = lookup(b"mget").expect("mget");
        assert!(mget.arity_allows(2) && mget.arity_allows(100) && !mget.arity_allows(1));
        assert!(lookup(b"auth").expect("auth").allowed_without_auth());
        assert!(!get.allowed_without_auth());
        assert!(lookup(b"set").expect("set").is_write() && !get.is_write());
        assert!(lookup_full_name(b"client|nope").is_none());
        assert!(lookup_full_name(b"CLIENT|SetName").is_some());
    }

    #[test]
    fn acl_categories_follow_the_flags() {
        let categories = |name: &str| -> Vec<&str> {
            lookup_full_name(name.as_bytes())
                .expect(name)
                .acl_categories()
                .collect()
        };
        assert_eq!(categories("get"), ["@read", "@string", "@fast"]);
        assert_eq!(categories("set"), ["@write", "@string", "@slow"]);
        assert_eq!(categories("del"), ["@keyspace", "@write", "@slow"]);
        assert_eq!(categories("ping"), ["@fast", "@connection"]);
        assert_eq!(categories("config|get"), ["@admin", "@slow", "@dangerous"]);
    }

    #[test]
    fn command_info_for_get_has_the_redis_7_shape() {
        let mut out = Vec::new();
        write_command_info(&mut ReplyWriter::new(&mut out, Protocol::Resp2), &["get"]);
        let want = concat!(
            "*1\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n",
            "*3\r\n+@read\r\n+@string\r\n+@fast\r\n*0\r\n",
            "*1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+RO\r\n+access\r\n",
            "$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n",
            "$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n",
            "*6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n",
            "*0\r\n",
        );
        assert_eq!(String::from_utf8_lossy(&out), want);
        // An unknown name is a null entry.
        let mut out = Vec::new();
        write_command_info(&mut ReplyWriter::new(&mut out, Protocol::Resp3), &["nope"]);
        assert_eq!(out, b"*1\r\n_\r\n");
    }

    #[test]
    fn command_docs_skip_unknown_names_and_nest_subcommands() {
        let mut out = Vec::new();
        write_command_docs(
            &mut ReplyWriter::new(&mut out, Protocol::Resp3),
            &["nope", "ECHO"],
        );
        let want = concat!(
            "%1\r\n$4\r\necho\r\n%5\r\n",
            "$7\r\nsummary\r\n$25\r\nReturns the given string.\r\n",
            "$5\r\nsince\r\n$5\r\n1.0.0\r\n$5\r\ngroup\r\n$10\r\nconnection\r\n",
            "$10\r\ncomplexity\r\n$4\r\nO(1)\r\n",
            "$9\r\narguments\r\n*1\r\n%3\r\n$4\r\nname\r\n$7\r\nmessage\r\n",
            "$4\r\ntype\r\n$6\r\nstring\r\n$12\r\ndisplay_text\r\n$7\r\nmessage\r\n",
        );
        assert_eq!(String::from_utf8_lossy(&out), want);
        let mut out = Vec::new();
        write_command_docs(
            &mut ReplyWriter::new(&mut out, Protocol::Resp3),
            &["client"],
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("$11\r\nsubcommands\r\n%6\r\n$14\r\nclient|setname\r\n"),
            "{text}"
        );
    }

    #[test]
    fn every_container_has_help() {
        for spec in COMMANDS.iter().filter(|s| !s.subcommands.is_empty()) {
            let mut out = Vec::new();
            write_help(&mut ReplyWriter::new(&mut out, Protocol::Resp2), spec.name);
            let first = format!("+{} <subcommand>", spec.name.to_ascii_uppercase());
            assert!(
                String::from_utf8_lossy(&out).contains(&first),
                "{}",
                spec.name
            );
            assert!(skip_value(&out).is_empty());
        }
    }

    /// Every reply these functions write is well-formed RESP: counted
    /// element by element with a small reader.
    #[test]
    fn every_command_and_docs_reply_is_well_formed() {
        for protocol in [Protocol::Resp2, Protocol::Resp3] {
            let mut out = Vec::new();
            let mut w = ReplyWriter::new(&mut out, protocol);
            write_command_info(&mut w, &[] as &[&[u8]]);
            write_command_docs(&mut w, &[] as &[&[u8]]);
            let mut rest = &out[..];
            for _ in 0..2 {
                rest = skip_value(rest);
            }
            assert!(rest.is_empty(), "{} bytes left", rest.len());
        }
    }

    /// Skips one RESP value and returns what follows it.
    fn skip_value(input: &[u8]) -> &[u8] {
        let end = input.windows(2).position(|w| w == b"\r\n").expect("a line");
        let (line, mut rest) = (&input[..end], &input[end + 2..]);
        let count = || -> usize {
            std::str::from_utf8(&line[1..])
                .expect("utf-8")
                .parse()
                .expect("count")
        };
        match line[0] {
            b'+' | b'-' | b':' | b',' | b'#' | b'_' => rest,
            b'$' => {
                let len = count();
                assert_eq!(&rest[len..len + 2], b"\r\n");
                &rest[len + 2..]
            }
            b'*' | b'~' | b'%' => {
                let elements = count() * if line[0] == b'%' { 2 } else { 1 };
                for _ in 0..elements {
                    rest = skip_value(rest);
                }
                rest
            }
            other => panic!("unexpected type byte {}", char::from(other)),
        }
    }
}
