//! HTTP/1.1 response framing for origin fetches: what the bytes received so
//! far amount to. Pure functions over byte slices, re-run on the whole buffer
//! after every read, so they can be tested without a runtime.
//!
//! Header parsing is `httparse`'s. The framing rules are RFC 9112 §6.3 for a
//! client that sent `Connection: close`: Content-Length, else chunked, else
//! the body runs to EOF. Anything ambiguous (both framings, several
//! different lengths, a transfer coding other than `chunked`) is refused.

use std::ops::Range;

use bytes::Bytes;

use crate::chunked::{self, ChunkedError};

/// Chunked framing may add this much over the body (besides the body's own
/// size again) before we call it abuse.
const MAX_CHUNK_OVERHEAD: u64 = 64 * 1024;

/// Response head bytes we accept (interim 1xx heads included).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

/// What a response amounts to so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// 404.
    NotFound,
    /// 200 and its whole body.
    Found(Body),
}

/// Where a 200's body is.
#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    /// These bytes of the buffer (Content-Length or EOF-delimited).
    Span(Range<usize>),
    /// Decoded from chunks.
    Decoded(Vec<u8>),
}

impl Body {
    /// The body as `Bytes`, given the buffer it was parsed from. A span is
    /// copied out: the value goes into the cache, and a slice would keep the
    /// whole read buffer (head, spare capacity) alive with it.
    pub fn into_bytes(self, buf: &[u8]) -> Bytes {
        match self {
            Body::Span(span) => buf
                .get(span)
                .map(Bytes::copy_from_slice)
                .unwrap_or_default(),
            // Allocated with exactly the body's length.
            Body::Decoded(body) => Bytes::from(body),
        }
    }
}

/// Why a response is not a value; the caller adds the origin's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// A final status other than 200 and 404.
    Status(u16),
    /// The body is over the limit.
    TooLarge,
    /// Not a well-formed HTTP/1.x response (a one-line reason).
    Protocol(String),
}

/// How the body of a 200 is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilEof,
}

struct Head {
    status: u16,
    /// Bytes of the head including the blank line.
    len: usize,
    framing: Framing,
}

/// Parses the response in `buf` (everything received so far); `eof` says
/// the origin closed the connection, so nothing more will come. A body over
/// `limit` bytes is refused as soon as that is known: from Content-Length
/// before any of it arrives, from chunk sizes before their data arrives.
///
/// With `eof` the answer is never `Incomplete`. 404 and other statuses are
/// decided by the head alone; their bodies are never read.
pub fn parse_response(buf: &[u8], eof: bool, limit: u64) -> Result<Parsed, Bad> {
    // Skip interim responses (100 Continue, 103 Early Hints, ...).
    let mut start = 0;
    let head = loop {
        let Some(head) = parse_head(&buf[start..])? else {
            if buf.len() > MAX_HEAD_BYTES {
                return Err(head_too_large());
            }
            if eof {
                return Err(Bad::Protocol(if buf.is_empty() {
                    "connection closed without a response".into()
                } else {
                    "connection closed in the middle of the response head".into()
                }));
            }
            return Ok(Parsed::Incomplete);
        };
        if start + head.len > MAX_HEAD_BYTES {
            return Err(head_too_large());
        }
        start += head.len;
        if (100..200).contains(&head.status) && head.status != 101 {
            continue;
        }
        break head;
    };
    match head.status {
        200 => {}
        404 => return Ok(Parsed::NotFound),
        status => return Err(Bad::Status(status)),
    }

    let body = &buf[start..];
    match head.framing {
        Framing::Length(len) => {
            let Some(len) = usize::try_from(len).ok().filter(|_| len <= limit) else {
                return Err(Bad::TooLarge);
            };
            if body.len() >= len {
                Ok(Parsed::Found(Body::Span(start..start + len)))
            } else if eof {
                Err(Bad::Protocol(format!(
                    "connection closed after {} of {len} body bytes",
                    body.len()
                )))
            } else {
                Ok(Parsed::Incomplete)
            }
        }
        Framing::UntilEof => {
            if body.len() as u64 > limit {
                Err(Bad::TooLarge)
            } else if eof {
                Ok(Parsed::Found(Body::Span(start..buf.len())))
            } else {
                Ok(Parsed::Incomplete)
            }
        }
        Framing::Chunked => match chunked::decode(body, limit) {
            Ok(Some((decoded, _))) => Ok(Parsed::Found(Body::Decoded(decoded))),
            Ok(None) if eof => Err(Bad::Protocol(
                "connection closed in the middle of the chunked body".into(),
            )),
            Ok(None) if body.len() as u64 > max_chunked_bytes(limit) => Err(Bad::Protocol(
                "chunked framing takes more bytes than the body allows".into(),
            )),
            Ok(None) => Ok(Parsed::Incomplete),
            Err(ChunkedError::TooLarge { .. }) => Err(Bad::TooLarge),
            Err(e) => Err(Bad::Protocol(e.to_string())),
        },
    }
}

/// Most bytes a chunked body of at most `limit` bytes may take on the wire
/// (chunk size lines, extensions and trailers included).
fn max_chunked_bytes(limit: u64) -> u64 {
    limit.saturating_mul(2).saturating_add(MAX_CHUNK_OVERHEAD)
}

fn head_too_large() -> Bad {
    Bad::Protocol(format!("response head over {} KiB", MAX_HEAD_BYTES / 1024))
}

/// One response head from the front of `buf`; `None` until it is complete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Bad> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Bad::Protocol(format!(
                "more than {MAX_HEADERS} header fields"
            )))
        }
        Err(e) => return Err(Bad::Protocol(format!("malformed response head: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    if status != 200 {
        // Interim responses have no body, and other statuses are answered
        // from the head alone: their framing does not matter.
        return Ok(Some(Head {
            status,
            len,
            framing: Framing::Length(0),
        }));
    }

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let text = header.value.trim_ascii();
            let length = std::str::from_utf8(text)
                .ok()
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| {
                    Bad::Protocol(format!("bad Content-Length {:?}", quote(header.value)))
                })?;
            if content_length.is_some_and(|previous| previous != length) {
                return Err(Bad::Protocol("conflicting Content-Length headers".into()));
            }
            content_length = Some(length);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // We send no TE header and no Accept-Encoding, so `chunked`,
            // once, is the only coding allowed.
            let mut codings = header
                .value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .filter(|coding| !coding.is_empty());
            let only_chunked = codings
                .next()
                .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"))
                && codings.next().is_none();
            if !only_chunked || chunked {
                return Err(Bad::Protocol(format!(
                    "unsupported Transfer-Encoding {:?}",
                    quote(header.value)
                )));
            }
            chunked = true;
        }
    }
    let framing = match (content_length, chunked) {
        (Some(_), true) => {
            return Err(Bad::Protocol(
                "both Content-Length and Transfer-Encoding".into(),
            ))
        }
        (_, true) => Framing::Chunked,
        (Some(length), false) => Framing::Length(length),
        (None, false) => Framing::UntilEof,
    };
    Ok(Some(Head {
        status,
        len,
        framing,
    }))
}

/// Up to 64 bytes of network data, for a one-line message (quote it with
/// `{:?}`).
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]);
    text.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 100;

    fn parse(wire: &[u8], eof: bool) -> Result<Parsed, Bad> {
        parse_response(wire, eof, LIMIT)
    }

    /// The value a complete response carries.
    fn found(wire: &[u8]) -> Vec<u8> {
        match parse(wire, true) {
            Ok(Parsed::Found(body)) => body.into_bytes(wire).to_vec(),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(wire)),
        }
    }

    fn protocol(wire: &[u8], eof: bool) -> String {
        match parse(wire, eof) {
            Err(Bad::Protocol(reason)) => {
                assert!(!reason.contains('\n'), "{reason:?}");
                reason
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(wire)),
        }
    }

    /// Every strict prefix of `wire` is incomplete (without EOF).
    fn incomplete_until_the_end(wire: &[u8]) {
        for cut in 0..wire.len() {
            assert_eq!(
                parse(&wire[..cut], false),
                Ok(Parsed::Incomplete),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn content_length_bodies() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
        incomplete_until_the_end(wire);
        assert_eq!(found(wire), b"hello");
        // Without waiting for EOF, and ignoring anything after the body.
        let more = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloEXTRA";
        match parse(more, false) {
            Ok(Parsed::Found(body)) => assert_eq!(body, Body::Span(38..43)),
            other => panic!("{other:?}"),
        }
        assert_eq!(found(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"), b"");
        // Repeated identical lengths are fine.
        assert_eq!(
            found(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"),
            b"ok"
        );
        // Exactly the limit is allowed.
        let mut at_limit = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
        at_limit.extend([b'v'; 100]);
        assert_eq!(found(&at_limit), [b'v'; 100]);
    }

    #[test]
    fn chunked_bodies() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                     4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\n";
        incomplete_until_the_end(wire);
        assert_eq!(found(wire), b"Wikipedia");
        assert_eq!(
            found(b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n0\r\n\r\n"),
            b""
        );
        assert_eq!(
            found(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n"),
            b"0123456789"
        );
    }

    #[test]
    fn eof_delimited_bodies() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end";
        for cut in 0..=wire.len() {
            assert_eq!(
                parse(&wire[..cut], false),
                Ok(Parsed::Incomplete),
                "cut {cut}"
            );
        }
        assert_eq!(found(wire), b"until the end");
        assert_eq!(found(b"HTTP/1.0 200 OK\r\n\r\n"), b"");
    }

    #[test]
    fn statuses_are_decided_by_the_head() {
        let not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n";
        assert_eq!(parse(not_found, false), Ok(Parsed::NotFound));
        assert_eq!(
            parse(
                b"HTTP/1.1 500 Oops\r\nContent-Length: 99999\r\n\r\nx",
                false
            ),
            Err(Bad::Status(500))
        );
        assert_eq!(
            parse(b"HTTP/1.1 204 No Content\r\n\r\n", true),
            Err(Bad::Status(204))
        );
        assert_eq!(
            parse(b"HTTP/1.1 301 Moved\r\n\r\n", false),
            Err(Bad::Status(301))
        );
        assert_eq!(
            parse(b"HTTP/1.1 101 Switching\r\n\r\n", false),
            Err(Bad::Status(101))
        );
        // Statuses other than 200 do not depend on their (bad) framing.
        assert_eq!(
            parse(
                b"HTTP/1.1 503 Busy\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                true
            ),
            Err(Bad::Status(503))
        );
        assert_eq!(
            parse(b"HTTP/1.1 404 Nope\r\nContent-Length: x\r\n\r\n", false),
            Ok(Parsed::NotFound)
        );
    }

    #[test]
    fn interim_responses_are_skipped() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
                     HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        incomplete_until_the_end(wire);
        assert_eq!(found(wire), b"ok");
        assert_eq!(
            parse(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Nope\r\n\r\n",
                false
            ),
            Ok(Parsed::NotFound)
        );
    }

    #[test]
    fn oversize_bodies_are_refused_early() {
        // From Content-Length, before any of the body arrives.
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n", false),
            Err(Bad::TooLarge)
        );
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n",
                false
            ),
            Err(Bad::TooLarge)
        );
        // From a chunk size, before its data arrives.
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n32\r\n",
                false
            ),
            Ok(Parsed::Incomplete)
        );
        let mut two = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n32\r\n".to_vec();
        two.extend([b'a'; 50]);
        two.extend(b"\r\n33\r\n");
        assert_eq!(parse(&two, false), Err(Bad::TooLarge));
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
                false
            ),
            Err(Bad::TooLarge)
        );
        // Until EOF: as soon as the bytes so far pass the limit.
        let mut eof_body = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        eof_body.extend([b'z'; 100]);
        assert_eq!(parse(&eof_body, false), Ok(Parsed::Incomplete));
        eof_body.push(b'z');
        assert_eq!(parse(&eof_body, false), Err(Bad::TooLarge));
    }

    #[test]
    fn endless_chunk_framing_is_cut_off() {
        let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        wire.extend(std::iter::repeat_n(b'e', 70 * 1024));
        let reason = protocol(&wire, false);
        assert!(reason.contains("chunk size line over"), "{reason}");
    }

    #[test]
    fn truncated_responses() {
        assert!(protocol(b"", true).contains("without a response"));
        assert!(protocol(b"HTTP/1.1 200 OK\r\nContent-Le", true).contains("response head"));
        assert_eq!(
            protocol(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", true),
            "connection closed after 3 of 5 body bytes"
        );
        assert!(protocol(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            true
        )
        .contains("chunked body"));
        assert!(protocol(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n",
            true
        )
        .contains("chunked body"));
    }

    #[test]
    fn garbage_is_refused() {
        for wire in [
            &b"garbage\r\n\r\n"[..],
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 2OO OK\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"\0\0\0\0",
            b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n",
        ] {
            for eof in [false, true] {
                protocol(wire, eof);
            }
        }
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..100 {
            many.extend(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend(b"\r\n");
        assert!(protocol(&many, false).contains("header fields"));
        let mut huge = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        assert!(protocol(&huge, false).contains("KiB"));
        huge.extend(b"\r\n\r\n");
        assert!(protocol(&huge, false).contains("KiB"));
    }

    #[test]
    fn never_panics_on_any_prefix_or_byte_flip() {
        let samples: [&[u8]; 3] = [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;e=1\r\npedia\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\n\r\nbody",
        ];
        for sample in samples {
            for cut in 0..=sample.len() {
                for eof in [false, true] {
                    let _ = parse_response(&sample[..cut], eof, 8);
                    let _ = parse_response(&sample[..cut], eof, 0);
                }
            }
            let mut wire = sample.to_vec();
            for i in 0..wire.len() {
                for flip in [0x00, 0xff, b'\r', b'\n', b'0', b'f', b';'] {
                    let keep = wire[i];
                    wire[i] = flip;
                    let _ = parse_response(&wire, true, 8);
                    let _ = parse_response(&wire, false, u64::MAX);
                    wire[i] = keep;
                }
            }
        }
    }
}
