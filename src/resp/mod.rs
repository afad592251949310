//! The Redis protocol (RESP2/RESP3) with no I/O: request framing
//! ([`parse`]), reply encoding ([`encode`]), the command table that
//! `COMMAND` describes ([`table`]) and the typed commands a request becomes
//! ([`command`]). The connection loop that wires these to the cores lives
//! elsewhere; everything here is pure, unit-tested and fuzzed
//! (`fuzz/fuzz_targets/resp_parse.rs`).
//!
//! ```text
//!  read buffer ──RequestParser::parse──> Vec<Bytes> ──Command::parse──> Command
//!       (ProtocolError: reply, close)        (CommandError: reply, keep going)
//!  Command ──(cores: ops::Op / Reply)──> ReplyWriter (RESP2 or RESP3) ──> write buffer
//! ```

pub mod command;
pub mod encode;
pub mod parse;
pub mod table;

pub use command::{Command, CommandError, CommandLimits};
pub use encode::{Protocol, ReplyWriter};
pub use parse::{encode_request, Limits, Parsed, ProtocolError, RequestParser};
