//! The Redis protocol (RESP2/RESP3) with no I/O: request framing
//! ([`parse`]), reply encoding ([`encode`]), the command table that
//! `COMMAND` describes ([`table`]) and the typed commands a request becomes
//! ([`command`]). The connection loop that wires these to the cores lives
//! elsewhere; everything here is pure and fuzzed (`fuzz/fuzz_targets/resp_parse.rs`).
//!
//! ```text
//!  bytes ─RequestParser::parse─> Vec<Bytes> ─Command::parse─> Command ─(cores)─> ReplyWriter ─> bytes
//! ```

pub mod encode;
pub mod parse;

pub use encode::{Protocol, ReplyWriter};
pub use parse::{encode_request, Limits, Parsed, ProtocolError, RequestParser};
