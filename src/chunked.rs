//! HTTP/1.1 chunked transfer coding (RFC 9112 §7.1), pure: the one decoder
//! for request bodies clients send (`api::http`) and response bodies origins
//! send (`origin`).
//!
//! A [`Progress`] remembers how far a body has been validated, so a caller
//! that gets the body a read at a time resumes where it stopped instead of
//! re-walking the whole buffer (which let an endless chunk extension stall a
//! core). Whatever a client controls is bounded before it is buffered: one
//! chunk-size line at most [`MAX_SIZE_LINE`] bytes, the trailer section at
//! most [`MAX_TRAILER_BYTES`], and the whole body on the wire at most the
//! caller's `max_wire`.

/// Longest chunk-size line (size, extensions, CRLF) accepted.
pub const MAX_SIZE_LINE: usize = 1024;
/// Largest trailer section (every trailer line and the final CRLF).
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Framing bytes a chunked body may take on top of its data: size lines,
/// chunk CRLFs and trailers (1 MiB sent in 4 KiB chunks takes ~2 KiB).
pub const FRAMING_ALLOWANCE: u64 = 64 * 1024;

/// The most wire bytes a chunked body of at most `limit` data bytes may take.
pub fn max_wire_bytes(limit: u64) -> u64 {
    limit.saturating_add(FRAMING_ALLOWANCE)
}

/// Why a chunked body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkedError {
    /// A chunk size line that is not hex digits (plus extensions) and CRLF.
    BadSizeLine,
    /// A chunk size line (with its extensions) over [`MAX_SIZE_LINE`].
    SizeLineTooLong,
    /// The trailer section is over [`MAX_TRAILER_BYTES`].
    TrailersTooLarge,
    /// The chunk sizes announced so far add up to `len`, over the limit
    /// (`u64::MAX` when they overflow). Decided from the size lines, before
    /// any of the data arrives.
    TooLarge { len: u64 },
    /// The body takes more than `limit` bytes on the wire (framing
    /// included); `len` is what had arrived when that was known.
    WireTooLarge { len: u64, limit: u64 },
    /// A chunk's data is not followed by CRLF.
    MissingCrlf,
}

impl std::fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkedError::BadSizeLine => f.write_str("bad chunk size line"),
            ChunkedError::SizeLineTooLong => {
                write!(f, "chunk size line over {MAX_SIZE_LINE} bytes")
            }
            ChunkedError::TrailersTooLarge => {
                write!(f, "chunked trailers over {MAX_TRAILER_BYTES} bytes")
            }
            ChunkedError::TooLarge { len } => write!(f, "chunked body of {len} bytes"),
            ChunkedError::WireTooLarge { len, limit } => write!(
                f,
                "chunked body takes {len} bytes on the wire, over the {limit}-byte limit"
            ),
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

/// How far a chunked body at the front of a buffer has been validated; the
/// buffer may only grow at its end between calls. `Default` is the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Start of the next size line or trailer line not yet accepted.
    pos: usize,
    /// Data bytes of the chunks accepted so far.
    total: u64,
    /// Where the trailer section starts, once the last chunk was seen.
    trailers_from: Option<usize>,
}

/// Validates more of a chunked body at the front of `buf`, resuming from
/// `progress`. `Ok(Some(_))` once the last chunk and the trailers are in,
/// `Ok(None)` while incomplete. Fails as soon as a chunk size takes the
/// data over `limit`, or the wire bytes (received, or announced) over
/// `max_wire`. Each call costs O(new bytes + one size line).
pub fn advance(
    buf: &[u8],
    progress: &mut Progress,
    limit: u64,
    max_wire: u64,
) -> Result<Option<Chunked>, ChunkedError> {
    let wire_error = |len: usize| ChunkedError::WireTooLarge {
        len: len as u64,
        limit: max_wire,
    };
    loop {
        if let Some(from) = progress.trailers_from {
            // Trailer section: header lines up to an empty line.
            let rest = &buf[progress.pos..];
            let Some(line_end) = find_crlf(rest) else {
                if progress.pos - from + rest.len() > MAX_TRAILER_BYTES {
                    return Err(ChunkedError::TrailersTooLarge);
                }
                if buf.len() as u64 > max_wire {
                    return Err(wire_error(buf.len()));
                }
                return Ok(None);
            };
            progress.pos += line_end + 2;
            if progress.pos - from > MAX_TRAILER_BYTES {
                return Err(ChunkedError::TrailersTooLarge);
            }
            if progress.pos as u64 > max_wire {
                return Err(wire_error(progress.pos));
            }
            if line_end == 0 {
                return Ok(Some(Chunked {
                    // total <= limit, and a body that size was in `buf`.
                    body_len: usize::try_from(progress.total).unwrap_or(usize::MAX),
                    wire_len: progress.pos,
                }));
            }
            continue;
        }
        let rest = &buf[progress.pos..];
        // RFC 9112: a chunk size is at least one hex digit. httparse reads
        // an empty size (or one that starts with `;`) as 0, the last chunk;
        // accepting that would be a framing difference with stricter
        // parsers, the stuff request smuggling is made of.
        if rest.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
            return Err(ChunkedError::BadSizeLine);
        }
        let (size_len, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => {
                if rest.len() > MAX_SIZE_LINE {
                    return Err(ChunkedError::SizeLineTooLong);
                }
                if buf.len() as u64 > max_wire {
                    return Err(wire_error(buf.len()));
                }
                return Ok(None);
            }
            Err(_) => return Err(ChunkedError::BadSizeLine),
        };
        if size_len > MAX_SIZE_LINE {
            return Err(ChunkedError::SizeLineTooLong);
        }
        let total = match progress.total.checked_add(size) {
            Some(total) if total <= limit => total,
            sum => {
                return Err(ChunkedError::TooLarge {
                    len: sum.unwrap_or(u64::MAX),
                })
            }
        };
        let data_start = progress.pos + size_len;
        if size == 0 {
            progress.pos = data_start;
            progress.total = total;
            progress.trailers_from = Some(data_start);
            continue;
        }
        // The chunk's end as announced, decided before its data arrives.
        let announced_end = (data_start as u64).saturating_add(size).saturating_add(2);
        if announced_end > max_wire {
            return Err(wire_error(
                usize::try_from(announced_end).unwrap_or(usize::MAX),
            ));
        }
        let Some(data_end) = usize::try_from(size)
            .ok()
            .and_then(|size| data_start.checked_add(size))
        else {
            return Err(ChunkedError::TooLarge { len: total });
        };
        let Some(after) = buf.get(data_end..data_end.saturating_add(2)) else {
            // Resume at this size line: re-parsing one bounded line is cheap.
            return Ok(None);
        };
        if after != b"\r\n" {
            return Err(ChunkedError::MissingCrlf);
        }
        progress.pos = data_end + 2;
        progress.total = total;
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Walks a chunked body at the front of `buf` from its start, handing each
/// chunk's data to `sink` in order. `Ok(Some(_))` once the last chunk and
/// the trailers are in, `Ok(None)` while incomplete. Fails as soon as a
/// chunk size takes the total over `limit`. Skipping over chunk data is
/// O(1), so a walk costs O(chunks), not O(bytes).
pub fn walk(
    buf: &[u8],
    limit: u64,
    mut sink: impl FnMut(&[u8]),
) -> Result<Option<Chunked>, ChunkedError> {
    let mut progress = Progress::default();
    let end = advance(buf, &mut progress, limit, u64::MAX)?;
    if end.is_some() {
        copy_data(buf, &mut sink);
    }
    Ok(end)
}

/// Hands the data of each chunk of a body already validated complete.
fn copy_data(buf: &[u8], sink: &mut impl FnMut(&[u8])) {
    let mut pos = 0;
    while let Ok(httparse::Status::Complete((size_len, size))) =
        httparse::parse_chunk_size(&buf[pos..])
    {
        let start = pos + size_len;
        let Some(end) = usize::try_from(size)
            .ok()
            .and_then(|s| start.checked_add(s))
            .filter(|&end| size > 0 && end <= buf.len())
        else {
            return;
        };
        sink(&buf[start..end]);
        pos = end + 2;
    }
}

/// The decoded body of a complete chunked body at the front of `buf`, and
/// the wire bytes it took; `Ok(None)` while incomplete.
pub fn decode(buf: &[u8], limit: u64) -> Result<Option<(Vec<u8>, usize)>, ChunkedError> {
    let mut progress = Progress::default();
    decode_from(buf, &mut progress, limit, u64::MAX)
}

/// [`advance`], then the decoded body once complete (allocated once, and
/// only for a complete message).
pub fn decode_from(
    buf: &[u8],
    progress: &mut Progress,
    limit: u64,
    max_wire: u64,
) -> Result<Option<(Vec<u8>, usize)>, ChunkedError> {
    let Some(end) = advance(buf, progress, limit, max_wire)? else {
        return Ok(None);
    };
    let mut body = Vec::with_capacity(end.body_len);
    copy_data(&buf[..end.wire_len], &mut |data| {
        body.extend_from_slice(data)
    });
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
        // An empty size line, or one that is only an extension, is not the
        // last chunk (found by the chunked_body fuzz target).
        assert_eq!(walk(b"\r\n\r\n", 5, |_| {}), Err(ChunkedError::BadSizeLine));
        assert_eq!(
            walk(b";ext\r\n\r\n", 5, |_| {}),
            Err(ChunkedError::BadSizeLine)
        );
        assert_eq!(
            walk(b"3\r\nabcX\r\n", 5, |_| {}),
            Err(ChunkedError::MissingCrlf)
        );
    }

    #[test]
    fn an_endless_extension_is_refused_at_the_line_bound() {
        let mut wire = b"5;ext=".to_vec();
        wire.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE - 10));
        let mut progress = Progress::default();
        assert_eq!(advance(&wire, &mut progress, 1 << 20, 1 << 21), Ok(None));
        wire.extend(std::iter::repeat_n(b'a', 20));
        assert_eq!(
            advance(&wire, &mut progress, 1 << 20, 1 << 21),
            Err(ChunkedError::SizeLineTooLong)
        );
    }

    #[test]
    fn endless_trailers_are_refused_at_the_trailer_bound() {
        let mut wire = b"1\r\nx\r\n0\r\n".to_vec();
        let mut progress = Progress::default();
        let mut outcome = Ok(None);
        for _ in 0..MAX_TRAILER_BYTES / 9 + 2 {
            wire.extend_from_slice(b"X-T: 12\r\n");
            outcome = advance(&wire, &mut progress, 100, 1 << 20);
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome, Err(ChunkedError::TrailersTooLarge));
        // One long trailer line without its CRLF counts too.
        let mut wire = b"0\r\nX: ".to_vec();
        wire.extend(std::iter::repeat_n(b'a', MAX_TRAILER_BYTES));
        assert_eq!(
            advance(&wire, &mut Progress::default(), 100, 1 << 20),
            Err(ChunkedError::TrailersTooLarge)
        );
    }

    #[test]
    fn wire_bytes_are_capped_including_framing() {
        // 1-byte chunks: 6 wire bytes per data byte.
        let wire: Vec<u8> = b"1\r\nx\r\n".repeat(20);
        assert!(matches!(
            advance(&wire, &mut Progress::default(), 100, 60),
            Err(ChunkedError::WireTooLarge { .. })
        ));
        // A chunk announced past the cap is refused before its data.
        assert!(matches!(
            advance(b"40\r\n", &mut Progress::default(), 1000, 50),
            Err(ChunkedError::WireTooLarge { .. })
        ));
        assert_eq!(max_wire_bytes(10), 10 + FRAMING_ALLOWANCE);
    }

    #[test]
    fn progress_resumes_and_matches_a_walk_from_the_start() {
        let wire = b"4;a=b\r\nWiki\r\n5\r\npedia\r\n0\r\nT: 1\r\n\r\nNEXT";
        let mut progress = Progress::default();
        let mut done = None;
        for cut in 0..=wire.len() {
            if let Some(end) = decode_from(&wire[..cut], &mut progress, 100, 1000).unwrap() {
                done = Some((cut, end));
                break;
            }
        }
        let (cut, (body, used)) = done.unwrap();
        assert_eq!(body, b"Wikipedia");
        assert_eq!(used, wire.len() - 4);
        assert_eq!(cut, used);
        assert_eq!(decode(wire, 100).unwrap().unwrap(), (body, used));
    }
}
