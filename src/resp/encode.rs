//! Reply encoding for RESP2 and RESP3: one [`ReplyWriter`] method per reply
//! type, writing straight into the connection's output buffer (any
//! `BufMut`: `Vec<u8>`, `BytesMut`) with no allocation per reply.
//!
//! The RESP3-only types degrade the way Redis degrades them for a RESP2
//! client: null is `$-1` (or `*-1` for a missing array), a map is a flat
//! array of key, value, key, value, a set is an array, a double is a bulk
//! string, a boolean is the integer 1 or 0, a verbatim string is a bulk
//! string of its text.

use std::fmt::Write as _;

use bytes::BufMut;

use super::parse::put_decimal;

/// The protocol a connection speaks: RESP2 until `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

impl Protocol {
    /// The number `HELLO` takes and answers with.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// Writes replies in one protocol into `out`. Aggregates are written as
/// a header (`array`, `map`, `set` with their element count) followed by
/// their elements, so nothing is collected first.
pub struct ReplyWriter<'a, B: BufMut> {
    out: &'a mut B,
    protocol: Protocol,
}

impl<'a, B: BufMut> ReplyWriter<'a, B> {
    pub fn new(out: &'a mut B, protocol: Protocol) -> Self {
        ReplyWriter { out, protocol }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// `+text`: a status such as `OK`, `PONG` or a type name. A CR or LF in
    /// `text` becomes a space (a simple string cannot hold them).
    pub fn simple(&mut self, text: &[u8]) {
        self.out.put_u8(b'+');
        self.put_line(text);
    }

    /// `-text`: `text` starts with the error code (`ERR ...`, `WRONGTYPE
    /// ...`, `NOAUTH ...`). A CR or LF becomes a space, as in Redis.
    pub fn error(&mut self, text: &str) {
        self.out.put_u8(b'-');
        self.put_line(text.as_bytes());
    }

    /// `:n`.
    pub fn integer(&mut self, n: i64) {
        self.out.put_u8(b':');
        put_signed(self.out, n);
        self.out.put_slice(b"\r\n");
    }

    /// `$len\r\nbytes`.
    pub fn bulk(&mut self, bytes: &[u8]) {
        self.out.put_u8(b'$');
        put_decimal(self.out, bytes.len() as u64);
        self.out.put_slice(b"\r\n");
        self.out.put_slice(bytes);
        self.out.put_slice(b"\r\n");
    }

    /// An integer as a bulk string (what `INCR`'s value looks like to `GET`).
    pub fn bulk_integer(&mut self, n: i64) {
        let mut text = [0u8; 20];
        let mut slot = &mut text[..];
        put_signed(&mut slot, n);
        let written = 20 - slot.len();
        self.bulk(&text[..written]);
    }

    /// A missing value: RESP2 `$-1`, RESP3 `_`.
    pub fn null(&mut self) {
        match self.protocol {
            Protocol::Resp2 => self.out.put_slice(b"$-1\r\n"),
            Protocol::Resp3 => self.out.put_slice(b"_\r\n"),
        }
    }

    /// A missing array: RESP2 `*-1`, RESP3 `_`.
    pub fn null_array(&mut self) {
        match self.protocol {
            Protocol::Resp2 => self.out.put_slice(b"*-1\r\n"),
            Protocol::Resp3 => self.out.put_slice(b"_\r\n"),
        }
    }

    /// The header of an array of `len` elements.
    pub fn array(&mut self, len: usize) {
        self.header(b'*', len as u64);
    }

    /// The header of a map of `len` key-value pairs (write 2 * `len`
    /// elements after it): RESP3 `%len`, RESP2 `*2len`.
    pub fn map(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => self.header(b'*', (len as u64).saturating_mul(2)),
            Protocol::Resp3 => self.header(b'%', len as u64),
        }
    }

    /// The header of a set of `len` elements: RESP3 `~len`, RESP2 `*len`.
    pub fn set(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => self.header(b'*', len as u64),
            Protocol::Resp3 => self.header(b'~', len as u64),
        }
    }

    /// A double: RESP3 `,1.5` (`inf`, `-inf`, `nan`), RESP2 a bulk string
    /// of the same text.
    pub fn double(&mut self, value: f64) {
        let mut text = StackText::default();
        if value.is_nan() {
            text.push_str("nan");
        } else if value.is_infinite() {
            text.push_str(if value > 0.0 { "inf" } else { "-inf" });
        } else {
            // Debug is the shortest text that reads back to the same f64,
            // with an exponent for very large or small values, which the
            // RESP3 double grammar allows.
            let _ = write!(text, "{value:?}");
        }
        match self.protocol {
            Protocol::Resp2 => self.bulk(text.as_bytes()),
            Protocol::Resp3 => {
                self.out.put_u8(b',');
                self.out.put_slice(text.as_bytes());
                self.out.put_slice(b"\r\n");
            }
        }
    }

    /// RESP3 `#t`/`#f`; RESP2 `:1`/`:0`.
    pub fn boolean(&mut self, value: bool) {
        match self.protocol {
            Protocol::Resp2 => self.integer(i64::from(value)),
            Protocol::Resp3 => self
                .out
                .put_slice(if value { b"#t\r\n" } else { b"#f\r\n" }),
        }
    }

    /// RESP3 verbatim string `=len\r\ntxt:text` (`format` is `txt` or
    /// `mkd`); RESP2 a bulk string of `text`. `INFO` and `CLIENT INFO`
    /// answer with one.
    pub fn verbatim(&mut self, format: &[u8; 3], text: &[u8]) {
        match self.protocol {
            Protocol::Resp2 => self.bulk(text),
            Protocol::Resp3 => {
                self.out.put_u8(b'=');
                put_decimal(self.out, text.len() as u64 + 4);
                self.out.put_slice(b"\r\n");
                self.out.put_slice(format);
                self.out.put_u8(b':');
                self.out.put_slice(text);
                self.out.put_slice(b"\r\n");
            }
        }
    }

    fn header(&mut self, kind: u8, len: u64) {
        self.out.put_u8(kind);
        put_decimal(self.out, len);
        self.out.put_slice(b"\r\n");
    }

    /// `text` up to its CRLF, with any CR or LF inside replaced by a space.
    fn put_line(&mut self, text: &[u8]) {
        let mut rest = text;
        while let Some(at) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            self.out.put_slice(&rest[..at]);
            self.out.put_u8(b' ');
            rest = &rest[at + 1..];
        }
        self.out.put_slice(rest);
        self.out.put_slice(b"\r\n");
    }
}

fn put_signed(out: &mut impl BufMut, n: i64) {
    if n < 0 {
        out.put_u8(b'-');
    }
    put_decimal(out, n.unsigned_abs());
}

/// A few dozen bytes of formatted text on the stack (the longest f64 in
/// Debug form is 24 bytes).
struct StackText {
    bytes: [u8; 40],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            bytes: [0; 40],
            len: 0,
        }
    }
}

impl StackText {
    fn push_str(&mut self, s: &str) {
        let _ = self.write_str(s);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Write = fn(&mut ReplyWriter<'_, Vec<u8>>);

    fn both(write: Write) -> (String, String) {
        let mut out = [Vec::new(), Vec::new()];
        for (buf, protocol) in out.iter_mut().zip([Protocol::Resp2, Protocol::Resp3]) {
            write(&mut ReplyWriter::new(buf, protocol));
        }
        let [two, three] = out;
        (
            String::from_utf8(two).expect("utf-8"),
            String::from_utf8(three).expect("utf-8"),
        )
    }

    #[test]
    fn every_reply_type_in_both_protocols() {
        let cases: &[(Write, &str, &str)] = &[
            (|w| w.simple(b"OK"), "+OK\r\n", "+OK\r\n"),
            (|w| w.simple(b"a\r\nb"), "+a  b\r\n", "+a  b\r\n"),
            (
                |w| w.error("ERR syntax error"),
                "-ERR syntax error\r\n",
                "-ERR syntax error\r\n",
            ),
            (|w| w.error("ERR a\nb"), "-ERR a b\r\n", "-ERR a b\r\n"),
            (|w| w.integer(0), ":0\r\n", ":0\r\n"),
            (
                |w| w.integer(i64::MIN),
                ":-9223372036854775808\r\n",
                ":-9223372036854775808\r\n",
            ),
            (
                |w| w.integer(i64::MAX),
                ":9223372036854775807\r\n",
                ":9223372036854775807\r\n",
            ),
            (|w| w.bulk(b""), "$0\r\n\r\n", "$0\r\n\r\n"),
            (
                |w| w.bulk(b"a\r\nb"),
                "$4\r\na\r\nb\r\n",
                "$4\r\na\r\nb\r\n",
            ),
            (|w| w.bulk_integer(-42), "$3\r\n-42\r\n", "$3\r\n-42\r\n"),
            (|w| w.null(), "$-1\r\n", "_\r\n"),
            (|w| w.null_array(), "*-1\r\n", "_\r\n"),
            (|w| w.array(0), "*0\r\n", "*0\r\n"),
            (
                |w| {
                    w.map(2);
                    w.bulk(b"a");
                    w.integer(1);
                    w.bulk(b"b");
                    w.null();
                },
                "*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n$-1\r\n",
                "%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n_\r\n",
            ),
            (
                |w| {
                    w.set(1);
                    w.simple(b"fast");
                },
                "*1\r\n+fast\r\n",
                "~1\r\n+fast\r\n",
            ),
            (|w| w.double(1.5), "$3\r\n1.5\r\n", ",1.5\r\n"),
            (|w| w.double(-0.25), "$5\r\n-0.25\r\n", ",-0.25\r\n"),
            (|w| w.double(1e300), "$5\r\n1e300\r\n", ",1e300\r\n"),
            (|w| w.double(f64::INFINITY), "$3\r\ninf\r\n", ",inf\r\n"),
            (
                |w| w.double(f64::NEG_INFINITY),
                "$4\r\n-inf\r\n",
                ",-inf\r\n",
            ),
            (|w| w.double(f64::NAN), "$3\r\nnan\r\n", ",nan\r\n"),
            (|w| w.boolean(true), ":1\r\n", "#t\r\n"),
            (|w| w.boolean(false), ":0\r\n", "#f\r\n"),
            (
                |w| w.verbatim(b"txt", b"a\r\nb"),
                "$4\r\na\r\nb\r\n",
                "=8\r\ntxt:a\r\nb\r\n",
            ),
        ];
        for (i, (write, resp2, resp3)) in cases.iter().enumerate() {
            assert_eq!(
                both(*write),
                (resp2.to_string(), resp3.to_string()),
                "case {i}"
            );
        }
    }

    #[test]
    fn the_longest_doubles_fit_the_stack_buffer() {
        for value in [
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            -5e-324,
        ] {
            let mut out = Vec::new();
            ReplyWriter::new(&mut out, Protocol::Resp3).double(value);
            let text = std::str::from_utf8(&out[1..out.len() - 2]).expect("utf-8");
            assert_eq!(text.parse::<f64>(), Ok(value), "{text}");
        }
    }

    #[test]
    fn writes_into_bytes_mut_too() {
        let mut out = bytes::BytesMut::new();
        let mut w = ReplyWriter::new(&mut out, Protocol::Resp3);
        w.array(2);
        w.bulk(b"x");
        w.null();
        assert_eq!(&out[..], b"*2\r\n$1\r\nx\r\n_\r\n");
    }
}
