//! HTTP/1.1 chunked transfer coding (RFC 9112 §7.1), pure: the one decoder
//! for request bodies clients send (`api::http`) and response bodies origins
//! send (`origin`).
//!
//! Both callers re-run it on their whole buffer after every read, so it
//! never needs state between calls, and skipping over chunk data is O(1):
//! a re-walk costs O(chunks), not O(bytes).

/// Why a chunked body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkedError {
    /// A chunk size line that is not hex digits (plus extensions) and CRLF.
    BadSizeLine,
    /// The chunk sizes announced so far add up to `len`, over the limit
    /// (`u64::MAX` when they overflow). Decided from the size lines, before
    /// any of the data arrives.
    TooLarge { len: u64 },
    /// A chunk's data is not followed by CRLF.
    MissingCrlf,
}

impl std::fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkedError::BadSizeLine => f.write_str("bad chunk size line"),
            ChunkedError::TooLarge { len } => write!(f, "chunked body of {len} bytes"),
            ChunkedError::MissingCrlf => f.write_str("chunk data not followed by CRLF"),
        }
    }
}

/// A complete chunked body at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunked {
    /// Decoded body bytes.
    pub body_len: usize,
    /// Wire bytes it took, last chunk and trailers included.
    pub wire_len: usize,
}

/// Walks a chunked body at the front of `buf`, handing each chunk's data to
/// `sink` in order. `Ok(Some(_))` once the last chunk and the trailers are
/// in, `Ok(None)` while incomplete. Fails as soon as a chunk size takes the
/// total over `limit`.
pub fn walk(
    buf: &[u8],
    limit: u64,
    mut sink: impl FnMut(&[u8]),
) -> Result<Option<Chunked>, ChunkedError> {
    let mut total: u64 = 0;
    let mut pos = 0;
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ChunkedError::BadSizeLine),
        };
        pos += size_len;
        total = match total.checked_add(size) {
            Some(total) if total <= limit => total,
            sum => {
                return Err(ChunkedError::TooLarge {
                    len: sum.unwrap_or(u64::MAX),
                })
            }
        };
        if size == 0 {
            // Trailer section: header lines up to an empty line.
            loop {
                let rest = &buf[pos..];
                let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                pos += line_end + 2;
                if line_end == 0 {
                    return Ok(Some(Chunked {
                        // total <= limit, and a body that size was in `buf`.
                        body_len: usize::try_from(total).unwrap_or(usize::MAX),
                        wire_len: pos,
                    }));
                }
            }
        }
        let Some(data_end) = usize::try_from(size)
            .ok()
            .and_then(|size| pos.checked_add(size))
        else {
            return Err(ChunkedError::TooLarge { len: total });
        };
        let Some(after) = buf.get(data_end..data_end.saturating_add(2)) else {
            return Ok(None);
        };
        if after != b"\r\n" {
            return Err(ChunkedError::MissingCrlf);
        }
        sink(&buf[pos..data_end]);
        pos = data_end + 2;
    }
}

/// The decoded body of a complete chunked body at the front of `buf`, and
/// the wire bytes it took; `Ok(None)` while incomplete.
pub fn decode(buf: &[u8], limit: u64) -> Result<Option<(Vec<u8>, usize)>, ChunkedError> {
    // Walk once to learn the size, so the body is allocated once and only
    // for a complete message.
    let Some(end) = walk(buf, limit, |_| {})? else {
        return Ok(None);
    };
    let mut body = Vec::with_capacity(end.body_len);
    walk(buf, limit, |data| body.extend_from_slice(data))?;
    Ok(Some((body, end.wire_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let wire = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (body, used) = decode(wire, 100).unwrap().unwrap();
        assert_eq!(body, b"Wikipedia");
        assert_eq!(used, wire.len() - 4);
        for cut in 0..used {
            assert_eq!(decode(&wire[..cut], 100), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn the_limit_is_decided_from_size_lines() {
        // 10 bytes announced, none sent yet.
        assert_eq!(
            walk(b"A\r\n", 5, |_| {}),
            Err(ChunkedError::TooLarge { len: 10 })
        );
        assert_eq!(
            walk(b"3\r\nabc\r\n3\r\n", 5, |_| {}),
            Err(ChunkedError::TooLarge { len: 6 })
        );
    }

    #[test]
    fn sizes_that_overflow_are_too_large_not_a_panic() {
        for wire in [
            &b"ffffffffffffffff\r\nabc\r\n"[..],
            b"1\r\nk\r\nffffffffffffffff\r\nabc\r\n",
            b"1\r\nk\r\nfffffffffffffffe\r\nabc\r\n",
        ] {
            assert!(
                matches!(
                    walk(wire, u64::MAX, |_| {}),
                    Err(ChunkedError::TooLarge { .. }) | Ok(None)
                ),
                "{wire:?}"
            );
            assert!(matches!(
                walk(wire, 1 << 20, |_| {}),
                Err(ChunkedError::TooLarge { .. })
            ));
        }
    }

    #[test]
    fn malformed_framing_is_refused() {
        assert_eq!(walk(b"zz\r\n", 5, |_| {}), Err(ChunkedError::BadSizeLine));
        assert_eq!(
            walk(b"3\r\nabcX\r\n", 5, |_| {}),
            Err(ChunkedError::MissingCrlf)
        );
    }
}
