//! HTTP/1.1 request framing: where a request's head ends, how long its body
//! is, and whether the connection stays open. Pure functions over byte
//! slices, so they can be unit-tested and fuzzed without a runtime.
//!
//! Header parsing itself is `httparse`'s; this module adds the framing rules
//! a server must enforce (RFC 9112 §6): one Content-Length or chunked, never
//! both, and limits on everything a client controls.

use crate::chunked::{self, ChunkedError};
use crate::error::ApiError;

/// Head bytes we accept before answering 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Other,
}

impl Method {
    fn from_bytes(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Length(u64),
    Chunked,
}

/// A parsed request head; `target` borrows from the connection buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead<'a> {
    pub method: Method,
    pub method_text: &'a str,
    /// Path plus query, exactly as sent.
    pub target: &'a str,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// The `Authorization` header's value, if sent (once; a repeated one
    /// is refused as malformed).
    pub authorization: Option<&'a [u8]>,
    /// Bytes of the head including the blank line.
    pub head_len: usize,
}

impl RequestHead<'_> {
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }
    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }
}

/// Parse a request head from the front of `buf`. `Ok(None)` means more
/// bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead<'_>>, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD_BYTES {
                return Err(ApiError::HeadTooLarge {
                    limit: MAX_HEAD_BYTES,
                });
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ApiError::HeadTooLarge {
                limit: MAX_HEAD_BYTES,
            })
        }
        Err(e) => return Err(ApiError::Malformed(e.to_string())),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(ApiError::HeadTooLarge {
            limit: MAX_HEAD_BYTES,
        });
    }
    let method_text = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let version = req.version.unwrap_or(1);
    if !target.starts_with('/') {
        return Err(ApiError::Malformed(format!(
            "request target must start with '/', got {:?}",
            truncate(target)
        )));
    }

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut keep_alive = version >= 1;
    let mut expect_continue = false;
    let mut authorization: Option<&[u8]> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value)
                .map_err(|_| ApiError::Malformed("Content-Length is not text".into()))?
                .trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::Malformed(format!(
                    "bad Content-Length {:?}",
                    truncate(text)
                )));
            }
            let n: u64 = text
                .parse()
                .map_err(|_| ApiError::Malformed("Content-Length out of range".into()))?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(ApiError::Malformed(
                    "conflicting Content-Length headers".into(),
                ));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if value.trim() != "chunked" {
                return Err(ApiError::Malformed(format!(
                    "unsupported Transfer-Encoding {:?}",
                    truncate(&value)
                )));
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("authorization") {
            if authorization.is_some() {
                return Err(ApiError::Malformed(
                    "more than one Authorization header".into(),
                ));
            }
            authorization = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("expect") {
            if h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(ApiError::Malformed("unsupported Expect header".into()));
            }
        }
    }
    // Both framings at once is how requests get smuggled; refuse it.
    let framing = match (content_length, chunked) {
        (Some(_), true) => {
            return Err(ApiError::Malformed(
                "both Content-Length and Transfer-Encoding".into(),
            ))
        }
        (_, true) => BodyFraming::Chunked,
        (n, false) => BodyFraming::Length(n.unwrap_or(0)),
    };
    Ok(Some(RequestHead {
        method: Method::from_bytes(method_text),
        method_text,
        target,
        framing,
        keep_alive,
        expect_continue,
        authorization,
        head_len,
    }))
}

/// Decodes more of a chunked request body at the front of `buf` (see
/// [`crate::chunked`]), resuming from `progress`: `Ok(Some((body, bytes
/// consumed)))`, `Ok(None)` while incomplete. A body over `limit` is refused
/// from the chunk sizes, before its data arrives; its wire bytes are capped
/// at [`chunked::max_wire_bytes`]`(limit)`, size lines and trailers included.
pub fn decode_chunked(
    buf: &[u8],
    progress: &mut chunked::Progress,
    limit: u64,
) -> Result<Option<(Vec<u8>, usize)>, ApiError> {
    chunked::decode_from(buf, progress, limit, chunked::max_wire_bytes(limit)).map_err(
        |e| match e {
            ChunkedError::TooLarge { len } => ApiError::BodyTooLarge { len, limit },
            ChunkedError::WireTooLarge { len, limit } => ApiError::BodyTooLarge { len, limit },
            ChunkedError::TrailersTooLarge => ApiError::TrailersTooLarge {
                limit: chunked::MAX_TRAILER_BYTES,
            },
            other => ApiError::Malformed(other.to_string()),
        },
    )
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> RequestHead<'_> {
        parse_head(raw.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn parses_a_simple_get() {
        let h = head("GET /api/get?key=a HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.authorization, None);
        let h = head("GET / HTTP/1.1\r\nauthorization: Bearer t\r\n\r\n");
        assert_eq!(h.authorization, Some(&b"Bearer t"[..]));
        let twice = "GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n";
        assert_eq!(parse_head(twice.as_bytes()).unwrap_err().status(), 400);
        let h = head("GET /api/get?key=a HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path(), "/api/get");
        assert_eq!(h.query(), "key=a");
        assert_eq!(h.framing, BodyFraming::Length(0));
        assert!(h.keep_alive);
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost"), Ok(None));
    }

    #[test]
    fn connection_semantics_follow_the_version() {
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
    }

    #[test]
    fn framing_errors_are_refused() {
        for raw in [
            "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "GARBAGE\r\n\r\n",
            "GET nope HTTP/1.1\r\n\r\n",
        ] {
            let err = parse_head(raw.as_bytes()).unwrap_err();
            assert_eq!(err.status(), 400, "{raw:?}");
            assert!(err.closes_connection());
        }
    }

    #[test]
    fn oversized_heads_get_431() {
        let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES + 10));
        assert_eq!(parse_head(&raw).unwrap_err().status(), 431);
    }

    #[test]
    fn chunked_bodies_decode_incrementally() {
        let wire = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let mut progress = chunked::Progress::default();
        for cut in 0..wire.len() - 4 {
            assert_eq!(
                decode_chunked(&wire[..cut], &mut progress, 100),
                Ok(None),
                "cut {cut}"
            );
        }
        let (body, used) = decode_chunked(wire, &mut progress, 100).unwrap().unwrap();
        assert_eq!(body, b"Wikipedia");
        assert_eq!(&wire[used..], b"NEXT");
        let fresh = &mut chunked::Progress::default();
        assert_eq!(decode_chunked(wire, fresh, 5).unwrap_err().status(), 413);
        let fresh = &mut chunked::Progress::default();
        assert!(decode_chunked(b"zz\r\n", fresh, 5).is_err());
    }

    #[test]
    fn chunked_framing_abuse_gets_the_right_status() {
        let mut endless_extension = b"1;x=".to_vec();
        endless_extension.extend(std::iter::repeat_n(b'a', 2000));
        let fresh = &mut chunked::Progress::default();
        let err = decode_chunked(&endless_extension, fresh, 1 << 20).unwrap_err();
        assert_eq!(err.status(), 400);
        let mut endless_trailer = b"0\r\nX: ".to_vec();
        endless_trailer.extend(std::iter::repeat_n(b'a', 20_000));
        let fresh = &mut chunked::Progress::default();
        let err = decode_chunked(&endless_trailer, fresh, 1 << 20).unwrap_err();
        assert_eq!(err.status(), 431);
        assert!(err.closes_connection());
        let tiny_chunks = b"1\r\nx\r\n".repeat(30_000);
        let fresh = &mut chunked::Progress::default();
        let err = decode_chunked(&tiny_chunks, fresh, 100_000).unwrap_err();
        assert_eq!(err.status(), 413);
    }
}
