//! Request framing: turns the bytes a Redis client sends into argument
//! vectors, one command at a time, many per read (pipelining).
//!
//! Two request forms, chosen by the first byte as Redis does: a multibulk
//! array (`*N\r\n$len\r\n...`, what client libraries send) or an inline
//! line (`SET k "a b"\r\n`, what telnet and a pasted redis-cli line send),
//! split with Redis's quoting rules (`"..."` with `\n`, `\xHH` escapes,
//! `'...'` with `\'`).
//!
//! Every length is checked when its line arrives, before any byte of the
//! payload is read: a bulk over the node's value limit, an argument count
//! over [`MAX_ARGS`], a length that is negative, not canonical decimal or
//! overflows, an inline line over [`MAX_INLINE_BYTES`]. A command cut short
//! keeps its progress in [`RequestParser`] (arguments already split off, the
//! length of the bulk being read, how far an inline line was searched), so a
//! large bulk arriving in many reads is never scanned again, and
//! [`Parsed::Incomplete`] says how many bytes the bulk still needs.
//!
//! Every [`ProtocolError`] means: reply with its text, then close the
//! connection (Redis sets `CLIENT_CLOSE_AFTER_REPLY`), because the stream
//! cannot be resynchronised.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Longest inline line (and, in Redis, length line) accepted, in bytes,
/// counting the `\r` but not the `\n` (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const MAX_INLINE_BYTES: usize = 64 * 1024;
/// Most arguments in one multibulk request (Redis's historical limit).
pub const MAX_ARGS: usize = 1024 * 1024;
/// Before authentication a client may send at most this many arguments...
pub const UNAUTHENTICATED_MAX_ARGS: usize = 10;
/// ...each at most this long (Redis's limits for unauthenticated clients,
/// so a client without the token cannot make the node buffer megabytes).
pub const UNAUTHENTICATED_MAX_BULK: u64 = 16 * 1024;
/// A length line: the type byte, a sign and at most 19 digits (i64).
const MAX_LENGTH_DIGITS: usize = 19;
/// Argument vectors start at most this large; a claimed count is not
/// trusted with an allocation before its arguments arrive.
const INITIAL_ARGS_CAPACITY: usize = 1024;
/// An argument vector handed back with [`RequestParser::recycle`] is kept
/// for the next request only up to this capacity (a 64-entry vector is
/// 2 KiB; one grown by a huge `MSET` is dropped, not held by an idle
/// connection).
pub const RECYCLED_ARGS_CAPACITY: usize = 64;

/// What a request may claim, checked before its bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string (the node's `--max-value-bytes`).
    pub max_bulk_bytes: u64,
    /// Most arguments in one request.
    pub max_args: usize,
    /// False until the connection authenticated (when a token is set):
    /// then the much smaller unauthenticated limits apply.
    pub authenticated: bool,
}

impl Limits {
    /// Limits for an authenticated connection (or a node without a token).
    pub fn new(max_bulk_bytes: u64) -> Limits {
        Limits {
            max_bulk_bytes,
            max_args: MAX_ARGS,
            authenticated: true,
        }
    }

    /// The same limits before the connection has authenticated.
    pub fn unauthenticated(self) -> Limits {
        Limits {
            authenticated: false,
            ..self
        }
    }
}

/// A malformed request. The text is Redis's where Redis has one; the
/// connection is closed after the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("ERR Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("ERR Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// Something other than a bulk string inside a request array (a nested
    /// array, an integer, an inline line after `*N`).
    #[error("ERR Protocol error: expected '$', got '{}'", printable(*.0))]
    ExpectedBulk(u8),
    /// A bulk string's bytes not followed by `\r\n` (Redis skips the two
    /// bytes unchecked; accepting them would desynchronise silently).
    #[error("ERR Protocol error: bulk string not terminated by CRLF")]
    UnterminatedBulk,
    #[error("ERR Protocol error: too big inline request")]
    InlineTooBig,
    #[error("ERR Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("ERR Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    #[error("ERR Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulkLength,
}

impl ProtocolError {
    /// Always: after a framing error the next command cannot be found.
    pub fn closes_connection(&self) -> bool {
        true
    }
}

/// How a byte that broke the framing is shown in the one-line error:
/// itself when printable, a space for CR or LF (as Redis maps them), `?`
/// for any other byte (Redis sends it raw, which need not be UTF-8).
fn printable(byte: u8) -> char {
    match byte {
        b'\r' | b'\n' => ' ',
        b' ' => ' ',
        _ if byte.is_ascii_graphic() => char::from(byte),
        _ => '?',
    }
}

/// The outcome of one [`RequestParser::parse`] call that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// One command's arguments (never empty; the name is `args[0]`).
    Request(Vec<Bytes>),
    /// Read more. `needed` is how many more bytes the bulk being read
    /// needs (with its CRLF), when a bulk length is known: a connection can
    /// reserve that much at once. `None` while waiting for a line.
    Incomplete { needed: Option<usize> },
}

/// Where a request cut short stopped; kept between reads.
#[derive(Debug, Default)]
enum State {
    /// At the start of a request.
    #[default]
    Idle,
    /// An inline line whose first `searched` bytes hold no `\n`.
    Inline { searched: usize },
    /// A multibulk request with `remaining` arguments to read after
    /// `args`; `bulk` is the length of the next one once its line was read.
    Multibulk {
        remaining: usize,
        args: Vec<Bytes>,
        bulk: Option<usize>,
    },
}

/// An incremental request parser, one per connection. Feed it the
/// connection's read buffer; it splits whole commands off the front.
#[derive(Debug, Default)]
pub struct RequestParser {
    state: State,
    /// An empty argument vector from the last request (see
    /// [`RequestParser::recycle`]): the next multibulk request fills it
    /// instead of allocating one per command.
    spare_args: Vec<Bytes>,
}

impl RequestParser {
    pub fn new() -> RequestParser {
        RequestParser::default()
    }

    /// True when no part of a request has been taken from the buffer (a
    /// connection may close cleanly, or count an idle client).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Hands back the argument vector of a request that has been answered,
    /// so the next request reuses its allocation (a connection answering
    /// pipelined commands otherwise allocates one vector per command).
    /// Its arguments are dropped here; a vector grown past
    /// [`RECYCLED_ARGS_CAPACITY`] is freed instead.
    pub fn recycle(&mut self, mut args: Vec<Bytes>) {
        args.clear();
        if args.capacity() <= RECYCLED_ARGS_CAPACITY && args.capacity() > self.spare_args.capacity()
        {
            self.spare_args = args;
        }
    }

    /// Takes the next whole command off the front of `buf`. Bytes of a
    /// command cut short are consumed as far as they are understood (whole
    /// bulk strings move into the parser), so call again with the same
    /// buffer once more bytes were appended to it. Empty requests (`*0`,
    /// `*-1`, a blank inline line) are consumed and skipped, as Redis does.
    ///
    /// After an error the parser and the buffer are in no defined state:
    /// reply with the error and close.
    pub fn parse(&mut self, buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, ProtocolError> {
        loop {
            match &mut self.state {
                State::Idle => match buf.first() {
                    None => return Ok(Parsed::Incomplete { needed: None }),
                    Some(b'*') => {
                        let Some((count, line_len)) =
                            length_line(buf).map_err(|()| ProtocolError::InvalidMultibulkLength)?
                        else {
                            return Ok(Parsed::Incomplete { needed: None });
                        };
                        // `*0` and `*-1` (a null array) carry no command.
                        let count = match count {
                            0 | -1 => 0,
                            n => usize::try_from(n)
                                .ok()
                                .filter(|&n| n <= limits.max_args)
                                .ok_or(ProtocolError::InvalidMultibulkLength)?,
                        };
                        if !limits.authenticated && count > UNAUTHENTICATED_MAX_ARGS {
                            return Err(ProtocolError::UnauthenticatedMultibulkLength);
                        }
                        buf.advance(line_len);
                        if count > 0 {
                            let mut args = std::mem::take(&mut self.spare_args);
                            args.reserve(count.min(INITIAL_ARGS_CAPACITY));
                            self.state = State::Multibulk {
                                remaining: count,
                                args,
                                bulk: None,
                            };
                        }
                    }
                    Some(_) => self.state = State::Inline { searched: 0 },
                },
                State::Inline { searched } => {
                    // Only the first MAX_INLINE_BYTES + 1 bytes can hold the
                    // `\n` of an acceptable line; earlier reads were searched.
                    let window = buf.len().min(MAX_INLINE_BYTES + 1);
                    // (`min`: a caller that shrank the buffer gets a rescan,
                    // not a panic.)
                    let from = (*searched).min(window);
                    let found = buf[from..window].iter().position(|&b| b == b'\n');
                    let Some(at) = found.map(|i| from + i) else {
                        if buf.len() > MAX_INLINE_BYTES {
                            return Err(ProtocolError::InlineTooBig);
                        }
                        *searched = buf.len();
                        return Ok(Parsed::Incomplete { needed: None });
                    };
                    let line = &buf[..at];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let args = split_inline(line)?;
                    buf.advance(at + 1);
                    self.state = State::Idle;
                    if !args.is_empty() {
                        return Ok(Parsed::Request(args));
                    }
                }
                State::Multibulk {
                    remaining,
                    args,
                    bulk,
                } => {
                    let len = match *bulk {
                        Some(len) => len,
                        None => {
                            match buf.first() {
                                None => return Ok(Parsed::Incomplete { needed: None }),
                                Some(b'$') => {}
                                Some(&other) => return Err(ProtocolError::ExpectedBulk(other)),
                            }
                            let Some((len, line_len)) =
                                length_line(buf).map_err(|()| ProtocolError::InvalidBulkLength)?
                            else {
                                return Ok(Parsed::Incomplete { needed: None });
                            };
                            let len = u64::try_from(len)
                                .ok()
                                .filter(|&len| len <= limits.max_bulk_bytes)
                                .and_then(|len| usize::try_from(len).ok())
                                .ok_or(ProtocolError::InvalidBulkLength)?;
                            if !limits.authenticated && len as u64 > UNAUTHENTICATED_MAX_BULK {
                                return Err(ProtocolError::UnauthenticatedBulkLength);
                            }
                            buf.advance(line_len);
                            *bulk = Some(len);
                            len
                        }
                    };
                    // len <= max_bulk_bytes, far from usize::MAX.
                    let wanted = len.saturating_add(2);
                    if buf.len() < wanted {
                        // A wrong byte where the CR belongs is an error now,
                        // not after the rest of the read.
                        if buf.len() > len && buf[len] != b'\r' {
                            return Err(ProtocolError::UnterminatedBulk);
                        }
                        return Ok(Parsed::Incomplete {
                            needed: Some(wanted - buf.len()),
                        });
                    }
                    if &buf[len..wanted] != b"\r\n" {
                        return Err(ProtocolError::UnterminatedBulk);
                    }
                    args.push(buf.split_to(len).freeze());
                    buf.advance(2);
                    *bulk = None;
                    *remaining -= 1;
                    if *remaining == 0 {
                        let args = std::mem::take(args);
                        self.state = State::Idle;
                        return Ok(Parsed::Request(args));
                    }
                }
            }
        }
    }
}

/// Reads `<type byte><integer>\r\n` at the start of `buf`: the integer and
/// the line's length with its CRLF, `Ok(None)` while the line is not all
/// there. The integer must be canonical decimal (what `string2ll` accepts:
/// no sign but `-`, no leading zero, no `-0`) and fit an i64; a byte that
/// cannot belong to one fails at once, so a length line never grows past
/// 23 bytes while waiting for its CR.
fn length_line(buf: &[u8]) -> Result<Option<(i64, usize)>, ()> {
    let mut at = 1;
    let negative = buf.get(at) == Some(&b'-');
    if negative {
        at += 1;
    }
    let digits_start = at;
    let mut magnitude: i64 = 0;
    loop {
        match buf.get(at) {
            None => return Ok(None),
            Some(b'\r') => break,
            Some(&digit @ b'0'..=b'9') => {
                if at - digits_start == MAX_LENGTH_DIGITS {
                    return Err(());
                }
                if at > digits_start && magnitude == 0 {
                    return Err(()); // a leading zero
                }
                magnitude = magnitude
                    .checked_mul(10)
                    .and_then(|m| m.checked_add(i64::from(digit - b'0')))
                    .ok_or(())?;
                at += 1;
            }
            Some(_) => return Err(()),
        }
    }
    if at == digits_start || (negative && magnitude == 0) {
        return Err(());
    }
    match buf.get(at + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((
            if negative { -magnitude } else { magnitude },
            at + 2,
        ))),
        Some(_) => Err(()),
    }
}

/// Parses a whole argument as a canonical decimal i64, as Redis's
/// `string2ll` does (no spaces, no `+`, no leading zeros, no `-0`).
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    match digits {
        [] => return None,
        [b'0'] => return (!negative).then_some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(digit - b'0');
        // Accumulate negatively so i64::MIN parses too.
        value = value.checked_mul(10)?.checked_sub(digit)?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// C's `isspace` in the "C" locale, which Redis skips between arguments.
fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_value(byte: Option<&u8>) -> Option<u8> {
    char::from(*byte?)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Splits an inline line into arguments with Redis's rules (`sdssplitargs`):
/// blanks separate arguments; `"..."` takes `\n \r \t \b \a`, `\xHH` and
/// `\<any>` escapes; `'...'` takes only `\'`; a closing quote must be
/// followed by a blank or the end of the line. One difference: a NUL byte
/// is an ordinary byte here (Redis's C string ends the line at it).
pub fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut at = 0;
    loop {
        while line.get(at).is_some_and(|&b| is_c_space(b)) {
            at += 1;
        }
        if at == line.len() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        let mut quote: Option<u8> = None;
        loop {
            let Some(&byte) = line.get(at) else {
                if quote.is_some() {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                break;
            };
            match quote {
                Some(b'"') => {
                    if byte == b'\\' && line.get(at + 1) == Some(&b'x') {
                        if let (Some(high), Some(low)) =
                            (hex_value(line.get(at + 2)), hex_value(line.get(at + 3)))
                        {
                            arg.push(high * 16 + low);
                            at += 4;
                            continue;
                        }
                    }
                    if byte == b'\\' && at + 1 < line.len() {
                        arg.push(match line[at + 1] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        at += 2;
                    } else if byte == b'"' {
                        at += 1;
                        if line.get(at).is_some_and(|&b| !is_c_space(b)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        break;
                    } else {
                        arg.push(byte);
                        at += 1;
                    }
                }
                Some(_) => {
                    if byte == b'\\' && line.get(at + 1) == Some(&b'\'') {
                        arg.push(b'\'');
                        at += 2;
                    } else if byte == b'\'' {
                        at += 1;
                        if line.get(at).is_some_and(|&b| !is_c_space(b)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        break;
                    } else {
                        arg.push(byte);
                        at += 1;
                    }
                }
                None => {
                    at += 1;
                    match byte {
                        b' ' | b'\n' | b'\r' | b'\t' => break,
                        b'"' | b'\'' => quote = Some(byte),
                        _ => arg.push(byte),
                    }
                }
            }
        }
        args.push(Bytes::from(arg));
    }
}

/// Writes `args` as a multibulk request (what a client sends; used by
/// tests, the fuzz target and anything that forwards a command verbatim).
pub fn encode_request<A: AsRef<[u8]>>(args: &[A], out: &mut impl BufMut) {
    out.put_u8(b'*');
    put_decimal(out, args.len() as u64);
    out.put_slice(b"\r\n");
    for arg in args {
        let arg = arg.as_ref();
        out.put_u8(b'$');
        put_decimal(out, arg.len() as u64);
        out.put_slice(b"\r\n");
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

/// Writes `n` in decimal without allocating.
pub(crate) fn put_decimal(out: &mut impl BufMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bulk_bytes: 1 << 20,
        max_args: MAX_ARGS,
        authenticated: true,
    };

    fn args(list: &[&str]) -> Vec<Bytes> {
        list.iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    /// Every outcome of parsing `input` whole, until it is used up or fails.
    fn parse_all(
        input: &[u8],
        limits: &Limits,
    ) -> (Vec<Vec<Bytes>>, Result<Parsed, ProtocolError>) {
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::from(input);
        let mut requests = Vec::new();
        loop {
            match parser.parse(&mut buf, limits) {
                Ok(Parsed::Request(args)) => requests.push(args),
                other => return (requests, other),
            }
        }
    }

    #[test]
    fn multibulk_and_inline_requests_pipelined_in_one_buffer() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nset a \"b c\"\n";
        let (requests, rest) = parse_all(input, &LIMITS);
        assert_eq!(
            requests,
            vec![
                args(&["GET", "k"]),
                args(&["PING"]),
                args(&["SET", "k", ""]),
                args(&["set", "a", "b c"]),
            ]
        );
        assert_eq!(rest, Ok(Parsed::Incomplete { needed: None }));
    }

    #[test]
    fn empty_requests_are_skipped() {
        let (requests, rest) =
            parse_all(b"*0\r\n*-1\r\n\r\n   \r\n\n*1\r\n$4\r\nPING\r\n", &LIMITS);
        assert_eq!(requests, vec![args(&["PING"])]);
        assert_eq!(rest, Ok(Parsed::Incomplete { needed: None }));
    }

    #[test]
    fn binary_bulk_strings_are_kept_byte_for_byte() {
        let value: Vec<u8> = (0..=255).collect();
        let mut input = BytesMut::new();
        encode_request(&[&b"SET"[..], b"k\r\n\0", &value], &mut input);
        let (requests, _) = parse_all(&input, &LIMITS);
        assert_eq!(requests.len(), 1);
        assert_eq!(&requests[0][1][..], b"k\r\n\0");
        assert_eq!(&requests[0][2][..], &value[..]);
    }

    #[test]
    fn malformed_requests_get_redis_errors() {
        use ProtocolError::*;
        let huge = format!("*1\r\n${}\r\n", (1u64 << 20) + 1);
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*-2\r\n", InvalidMultibulkLength),
            (b"*x\r\n", InvalidMultibulkLength),
            (b"*\r\n", InvalidMultibulkLength),
            (b"*01\r\n", InvalidMultibulkLength),
            (b"*-0\r\n", InvalidMultibulkLength),
            (b"*+1\r\n", InvalidMultibulkLength),
            (b"*1 \r\n", InvalidMultibulkLength),
            (b"*99999999999999999999\r\n", InvalidMultibulkLength),
            (b"*9223372036854775808\r\n", InvalidMultibulkLength),
            (b"*1048577\r\n", InvalidMultibulkLength),
            (b"*1\n$4\r\nPING\r\n", InvalidMultibulkLength),
            (b"*1\rx", InvalidMultibulkLength),
            (b"*1\r\n$-1\r\n", InvalidBulkLength),
            (b"*1\r\n$-5\r\n", InvalidBulkLength),
            (b"*1\r\n$x\r\n", InvalidBulkLength),
            (b"*1\r\n$\r\n", InvalidBulkLength),
            (b"*1\r\n$18446744073709551616\r\n", InvalidBulkLength),
            (huge.as_bytes(), InvalidBulkLength),
            (b"*1\r\n$4\nPING\r\n", InvalidBulkLength),
            (b"*2\r\n*1\r\n$1\r\na\r\n", ExpectedBulk(b'*')),
            (b"*1\r\n:1\r\n", ExpectedBulk(b':')),
            (b"*1\r\nPING\r\n", ExpectedBulk(b'P')),
            (b"*1\r\n$4\r\nPINGxx", UnterminatedBulk),
            (b"*1\r\n$4\r\nPING\rx", UnterminatedBulk),
            (b"*1\r\n$4\r\nPINGG", UnterminatedBulk),
            (b"SET k \"v\n", UnbalancedQuotes),
            (b"SET k 'v\r\n", UnbalancedQuotes),
            (b"SET k \"v\"x\r\n", UnbalancedQuotes),
            (b"SET k 'v'x\r\n", UnbalancedQuotes),
            (b"SET k \"v\\\"\r\n", UnbalancedQuotes),
        ];
        for (input, want) in cases {
            let (_, got) = parse_all(input, &LIMITS);
            assert_eq!(got, Err(*want), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn error_texts_are_redis_strings() {
        assert_eq!(
            ProtocolError::InvalidMultibulkLength.to_string(),
            "ERR Protocol error: invalid multibulk length"
        );
        assert_eq!(
            ProtocolError::InvalidBulkLength.to_string(),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            ProtocolError::ExpectedBulk(b'x').to_string(),
            "ERR Protocol error: expected '$', got 'x'"
        );
        assert_eq!(
            ProtocolError::ExpectedBulk(b'\r').to_string(),
            "ERR Protocol error: expected '$', got ' '"
        );
        assert_eq!(
            ProtocolError::ExpectedBulk(0xff).to_string(),
            "ERR Protocol error: expected '$', got '?'"
        );
        assert_eq!(
            ProtocolError::InlineTooBig.to_string(),
            "ERR Protocol error: too big inline request"
        );
        assert_eq!(
            ProtocolError::UnbalancedQuotes.to_string(),
            "ERR Protocol error: unbalanced quotes in request"
        );
        assert!(ProtocolError::InvalidBulkLength.closes_connection());
    }

    #[test]
    fn limits_are_checked_on_the_length_line_before_the_payload() {
        // Only the length line arrived: the refusal does not wait for bytes.
        let small = Limits::new(16);
        assert_eq!(
            parse_all(b"*1\r\n$17\r\n", &small).1,
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            parse_all(b"*1\r\n$16\r\n", &small).1,
            Ok(Parsed::Incomplete { needed: Some(18) })
        );
        let few = Limits {
            max_args: 3,
            ..LIMITS
        };
        assert_eq!(
            parse_all(b"*4\r\n", &few).1,
            Err(ProtocolError::InvalidMultibulkLength)
        );
        let anonymous = LIMITS.unauthenticated();
        assert_eq!(
            parse_all(b"*11\r\n", &anonymous).1,
            Err(ProtocolError::UnauthenticatedMultibulkLength)
        );
        assert_eq!(
            parse_all(b"*10\r\n$16385\r\n", &anonymous).1,
            Err(ProtocolError::UnauthenticatedBulkLength)
        );
        assert_eq!(
            parse_all(b"*10\r\n$16384\r\n", &anonymous).1,
            Ok(Parsed::Incomplete {
                needed: Some(16386)
            })
        );
    }

    #[test]
    fn an_inline_line_over_64_kib_is_refused_however_it_arrives() {
        let mut long = vec![b'a'; MAX_INLINE_BYTES];
        // Exactly the limit (counting the CR) is accepted.
        let mut at_limit = long.clone();
        at_limit[MAX_INLINE_BYTES - 1] = b'\r';
        at_limit.push(b'\n');
        let (requests, _) = parse_all(&at_limit, &LIMITS);
        assert_eq!(requests.len(), 1);
        // One byte more, with or without its newline, is not.
        long.push(b'a');
        assert_eq!(
            parse_all(&long, &LIMITS).1,
            Err(ProtocolError::InlineTooBig)
        );
        long.push(b'\n');
        assert_eq!(
            parse_all(&long, &LIMITS).1,
            Err(ProtocolError::InlineTooBig)
        );
        // Fed in small reads the answer is the same, and the line is
        // searched once (the parser remembers how far it looked).
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::new();
        let mut outcome = Ok(Parsed::Incomplete { needed: None });
        for chunk in long.chunks(1000) {
            buf.extend_from_slice(chunk);
            outcome = parser.parse(&mut buf, &LIMITS);
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome, Err(ProtocolError::InlineTooBig));
    }

    #[test]
    fn inline_quoting_follows_redis() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"set k v", &[b"set", b"k", b"v"]),
            (b"  set\tk   v  ", &[b"set", b"k", b"v"]),
            (b"set \"a b\" 'c d'", &[b"set", b"a b", b"c d"]),
            (
                b"\"\\x41\\x7a\\n\\r\\t\\b\\a\\\\\\\"\\q\"",
                &[b"Az\n\r\t\x08\x07\\\"q"],
            ),
            (b"\"\\x4\"", &[b"x4"]),
            (b"\"\\xZZ\"", &[b"xZZ"]),
            (b"'it\\'s' '\\n'", &[b"it's", b"\\n"]),
            (b"a\"b c\"d", &[]), // closing quote followed by a byte: error below
            (b"a\"b c\" d", &[b"ab c", b"d"]),
            (b"\"\" ''", &[b"", b""]),
            (b"a\x0bb c\x0cd", &[b"a\x0bb", b"c\x0cd"]),
            (b"a\0b", &[b"a\0b"]),
            (b"\x0b\x0c", &[]),
        ];
        for (line, want) in cases {
            let got = split_inline(line);
            if want.is_empty() && !line.iter().all(|&b| is_c_space(b)) {
                assert_eq!(got, Err(ProtocolError::UnbalancedQuotes), "{line:?}");
                continue;
            }
            let want: Vec<Bytes> = want.iter().map(|a| Bytes::copy_from_slice(a)).collect();
            assert_eq!(got, Ok(want), "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn a_bulk_cut_short_at_every_byte_resumes_and_reports_what_is_missing() {
        let mut whole = BytesMut::new();
        encode_request(&[&b"SET"[..], b"key", b"0123456789"], &mut whole);
        encode_request(&[&b"GET"[..], b"key"], &mut whole);
        let want = vec![args(&["SET", "key", "0123456789"]), args(&["GET", "key"])];
        for cut in 0..=whole.len() {
            // The first read ends at `cut`, the rest arrives in a second read.
            let mut parser = RequestParser::new();
            let mut buf = BytesMut::from(&whole[..cut]);
            let mut got = Vec::new();
            loop {
                match parser.parse(&mut buf, &LIMITS) {
                    Ok(Parsed::Request(args)) => got.push(args),
                    Ok(Parsed::Incomplete { needed }) => {
                        assert_ne!(needed, Some(0), "cut at {cut}");
                        break;
                    }
                    Err(e) => panic!("cut at {cut}: {e}"),
                }
            }
            buf.extend_from_slice(&whole[cut..]);
            loop {
                match parser.parse(&mut buf, &LIMITS) {
                    Ok(Parsed::Request(args)) => got.push(args),
                    Ok(Parsed::Incomplete { .. }) => break,
                    Err(e) => panic!("cut at {cut}, resumed: {e}"),
                }
            }
            assert_eq!(got, want, "cut at {cut}");
            assert!(buf.is_empty() && parser.is_idle(), "cut at {cut}");
        }
        // Byte by byte too.
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &byte in whole.iter() {
            buf.put_u8(byte);
            while let Ok(Parsed::Request(args)) = parser.parse(&mut buf, &LIMITS) {
                got.push(args);
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn a_recycled_argument_vector_carries_the_next_request() {
        let mut parser = RequestParser::new();
        let limits = Limits::new(1024);
        let mut buf = BytesMut::from(
            &b"*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\nc\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n"[..],
        );
        let Ok(Parsed::Request(first)) = parser.parse(&mut buf, &limits) else {
            panic!("the first request is whole");
        };
        assert_eq!(first, args(&["SET", "b", "c"]));
        let reused = first.as_ptr();
        parser.recycle(first);
        let Ok(Parsed::Request(second)) = parser.parse(&mut buf, &limits) else {
            panic!("the second request is whole");
        };
        assert_eq!(second, args(&["GET", "a"]));
        assert_eq!(second.as_ptr(), reused, "the recycled vector was reused");
        // A vector grown past the bound is freed, not kept.
        parser.recycle(Vec::with_capacity(RECYCLED_ARGS_CAPACITY + 1));
        assert!(parser.spare_args.capacity() <= RECYCLED_ARGS_CAPACITY);
    }

    #[test]
    fn a_large_bulk_says_how_many_bytes_it_still_needs() {
        let value = vec![b'v'; 100_000];
        let mut whole = BytesMut::new();
        encode_request(&[&b"SET"[..], b"k", &value], &mut whole);
        let header_len = whole.len() - value.len() - 2;
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::from(&whole[..header_len + 10]);
        assert_eq!(
            parser.parse(&mut buf, &LIMITS),
            Ok(Parsed::Incomplete {
                needed: Some(value.len() + 2 - 10)
            })
        );
        // The arguments before it and the length line were consumed: only
        // the bulk's own bytes stay in the buffer.
        assert_eq!(buf.len(), 10);
        buf.extend_from_slice(&whole[header_len + 10..header_len + 50_000]);
        assert_eq!(
            parser.parse(&mut buf, &LIMITS),
            Ok(Parsed::Incomplete {
                needed: Some(value.len() + 2 - 50_000)
            })
        );
        buf.extend_from_slice(&whole[header_len + 50_000..]);
        match parser.parse(&mut buf, &LIMITS) {
            Ok(Parsed::Request(args)) => assert_eq!(&args[2][..], &value[..]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parse_i64_is_redis_string2ll() {
        for (text, want) in [
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("-0", None),
            ("01", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("", None),
            ("-", None),
            ("1.0", None),
        ] {
            assert_eq!(parse_i64(text.as_bytes()), want, "{text:?}");
        }
    }
}
