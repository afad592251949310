//! The Redis protocol (RESP2/RESP3): parsing, encoding and the command
//! table, with no I/O (being built; see issue 13).
