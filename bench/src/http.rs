//! Minimal HTTP/1.1 client codec: pre-formatted requests and an
//! incremental response decoder. Pure: no sockets, no clocks.
//!
//! Requests are assembled from byte templates built once per target, so
//! encoding one costs two or three `memcpy`s and formatting the key number.
//! Responses are parsed with `httparse` (status line and headers), then the
//! body is *skipped*, never buffered: Content-Length bodies, chunked bodies
//! and close-delimited bodies are all consumed incrementally, so a 1 MiB
//! value needs no 1 MiB buffer. Responses arrive in request order
//! (HTTP/1.1 pipelining), so the n-th completion answers the n-th request.

use std::sync::Arc;

use crate::keys::{push_decimal, KeyNames};
use crate::transport::{
    CodecError, Completion, ConnCodec, Decoded, RequestId, ResponseClass, Transport,
};
use crate::workload::{Op, OpKind};

/// Largest response head accepted (the server's own limit for requests).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE_BYTES: usize = 4096;
const MAX_HEADERS: usize = 32;

/// Which of the server's two HTTP APIs to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ApiMode {
    /// `GET /api/get?key=K`, `POST /api/set` with a form body `key=K&value=V`.
    Api,
    /// `GET /v1/keys/K`, `PUT /v1/keys/K` with the raw value as body.
    V1,
}

/// Percent-encodes everything but RFC 3986 unreserved characters; valid
/// both in a path segment and in `application/x-www-form-urlencoded`.
pub fn percent_encode(input: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(input.len());
    for &b in input {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
    out
}

/// A deterministic value of `len` bytes, alphanumeric so it needs no
/// escaping in a form body.
pub fn make_value(len: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|i| ALPHABET[(i * 7 + i / 62) % ALPHABET.len()])
        .collect()
}

/// Request byte templates for one target. The key goes between a head
/// and a tail, written by `KeyNames` (already percent-encoded).
#[derive(Debug)]
struct Templates {
    /// `GET <path up to the key>`
    read_head: Vec<u8>,
    /// ` HTTP/1.1\r\nHost: ...\r\n[Authorization: ...\r\n]\r\n`
    read_tail: Vec<u8>,
    write: WriteTemplate,
}

#[derive(Debug)]
enum WriteTemplate {
    /// `POST /api/set`: head ends at `Content-Length: `, then the length,
    /// then `mid` (`\r\n\r\nkey=`), the key, then `tail`
    /// (`&value=<value>`). `body_fixed` is the body length minus the key.
    Form {
        head: Vec<u8>,
        mid: Vec<u8>,
        tail: Vec<u8>,
        body_fixed: usize,
    },
    /// `PUT /v1/keys/`, key, then ` HTTP/1.1 ... \r\n\r\n<value>`.
    Raw { head: Vec<u8>, tail: Vec<u8> },
}

impl Templates {
    fn new(mode: ApiMode, host: &str, auth_token: Option<&str>, value: &[u8]) -> Templates {
        // Every request carries the same headers after the request line.
        let host = match auth_token {
            Some(token) => format!("{host}\r\nAuthorization: Bearer {token}"),
            None => host.to_string(),
        };
        let read_tail = format!(" HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
        match mode {
            ApiMode::Api => {
                let read_head = b"GET /api/get?key=".to_vec();
                let head = format!(
                    "POST /api/set HTTP/1.1\r\nHost: {host}\r\n\
                     Content-Type: application/x-www-form-urlencoded\r\nContent-Length: "
                )
                .into_bytes();
                let mid = b"\r\n\r\nkey=".to_vec();
                let mut tail = b"&value=".to_vec();
                tail.extend_from_slice(value);
                let body_fixed = 4 + tail.len();
                Templates {
                    read_head,
                    read_tail,
                    write: WriteTemplate::Form {
                        head,
                        mid,
                        tail,
                        body_fixed,
                    },
                }
            }
            ApiMode::V1 => {
                let read_head = b"GET /v1/keys/".to_vec();
                let head = b"PUT /v1/keys/".to_vec();
                let mut tail = format!(
                    " HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
                    value.len()
                )
                .into_bytes();
                tail.extend_from_slice(value);
                Templates {
                    read_head,
                    read_tail,
                    write: WriteTemplate::Raw { head, tail },
                }
            }
        }
    }

    #[inline]
    fn encode(&self, keys: &KeyNames, op: Op, out: &mut Vec<u8>) {
        match op.kind {
            OpKind::Read => {
                out.extend_from_slice(&self.read_head);
                keys.write(op.key, out);
                out.extend_from_slice(&self.read_tail);
            }
            OpKind::Write => match &self.write {
                WriteTemplate::Form {
                    head,
                    mid,
                    tail,
                    body_fixed,
                } => {
                    out.extend_from_slice(head);
                    push_decimal(out, (body_fixed + keys.len(op.key)) as u64);
                    out.extend_from_slice(mid);
                    keys.write(op.key, out);
                    out.extend_from_slice(tail);
                }
                WriteTemplate::Raw { head, tail } => {
                    out.extend_from_slice(head);
                    keys.write(op.key, out);
                    out.extend_from_slice(tail);
                }
            },
        }
    }
}

/// HTTP/1.1 against one or more targets.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    templates: Vec<Arc<Templates>>,
    /// Percent-encoded key names.
    keys: Arc<KeyNames>,
}

impl HttpTransport {
    /// `hosts` are the `Host` header values, one per target, in target
    /// order; `keys` are the raw key names (percent-encoded here). With
    /// `auth_token` every request carries `Authorization: Bearer <token>`
    /// (the token was checked to be visible ASCII: see `cli`).
    pub fn new(
        mode: ApiMode,
        hosts: &[String],
        auth_token: Option<&str>,
        keys: &KeyNames,
        value_size: usize,
    ) -> Self {
        let value = make_value(value_size);
        HttpTransport {
            templates: hosts
                .iter()
                .map(|h| Arc::new(Templates::new(mode, h, auth_token, &value)))
                .collect(),
            keys: Arc::new(keys.map(percent_encode)),
        }
    }
}

impl Transport for HttpTransport {
    type Codec = HttpCodec;

    fn codec(&self, target: usize) -> HttpCodec {
        HttpCodec {
            templates: Arc::clone(&self.templates[target % self.templates.len()]),
            keys: Arc::clone(&self.keys),
            decoder: ResponseDecoder::default(),
            next_request: 0,
            next_response: 0,
        }
    }
}

/// Per-connection HTTP/1.1 state.
#[derive(Debug)]
pub struct HttpCodec {
    templates: Arc<Templates>,
    keys: Arc<KeyNames>,
    decoder: ResponseDecoder,
    next_request: RequestId,
    next_response: RequestId,
}

impl ConnCodec for HttpCodec {
    #[inline]
    fn encode(&mut self, op: Op, out: &mut Vec<u8>) -> RequestId {
        self.templates.encode(&self.keys, op, out);
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    #[inline]
    fn decode(&mut self, input: &[u8], _out: &mut Vec<u8>) -> Result<Decoded, CodecError> {
        Ok(match self.decoder.decode(input)? {
            Progress::NeedMore { consumed } => Decoded::NeedMore { consumed },
            Progress::Done { consumed, response } => Decoded::Done {
                consumed,
                completion: self.complete(response),
            },
        })
    }

    fn on_eof(&mut self) -> Result<Option<Completion>, CodecError> {
        Ok(self.decoder.on_eof()?.map(|r| self.complete(r)))
    }

    fn reset(&mut self) {
        self.decoder = ResponseDecoder::default();
        self.next_request = 0;
        self.next_response = 0;
    }
}

impl HttpCodec {
    fn complete(&mut self, response: Response) -> Completion {
        let id = self.next_response;
        self.next_response += 1;
        Completion {
            id,
            class: classify(response.status),
            close_after: response.close,
        }
    }
}

/// Maps an HTTP status to its protocol-neutral class.
pub fn classify(status: u16) -> ResponseClass {
    match status {
        200 => ResponseClass::Ok,
        404 => ResponseClass::NotFound,
        400..=499 => ResponseClass::ClientError(status),
        500..=599 => ResponseClass::ServerError(status),
        _ => ResponseClass::Other(status),
    }
}

/// What the decoder learnt about one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The server closes the connection after this response.
    pub close: bool,
    /// Body bytes skipped (decoded size for chunked bodies).
    pub body_len: u64,
}

/// Decoder output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    NeedMore { consumed: usize },
    Done { consumed: usize, response: Response },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Head,
    /// Content-Length body, `remaining` bytes to skip.
    Body {
        resp: Response,
        remaining: u64,
    },
    Chunked {
        resp: Response,
        chunk: ChunkState,
    },
    /// No length: the body runs until the server closes.
    UntilClose {
        resp: Response,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataCrlf,
    Trailer,
}

/// Incremental HTTP/1.1 response decoder.
#[derive(Debug, Clone, Default)]
pub struct ResponseDecoder {
    state: State,
}

/// Index of the first `\r\n` in `buf`.
#[inline]
fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Parses the digits of a Content-Length value.
fn parse_content_length(v: &[u8]) -> Result<u64, CodecError> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(CodecError::BadContentLength);
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

impl ResponseDecoder {
    /// Whether the decoder is between responses.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.state == State::Head
    }

    /// Consumes bytes from the front of `input` until one response is
    /// complete or the input runs out.
    pub fn decode(&mut self, input: &[u8]) -> Result<Progress, CodecError> {
        let mut pos = 0usize;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Head => match self.parse_head(rest)? {
                    None => return Ok(Progress::NeedMore { consumed: pos }),
                    Some((n, None)) => pos += n, // informational 1xx: skip
                    Some((n, Some(state))) => {
                        pos += n;
                        self.state = state;
                        if let State::Body { resp, remaining: 0 } = state {
                            self.state = State::Head;
                            return Ok(Progress::Done {
                                consumed: pos,
                                response: resp,
                            });
                        }
                    }
                },
                State::Body {
                    mut resp,
                    remaining,
                } => {
                    let take = remaining.min(rest.len() as u64);
                    pos += take as usize;
                    if take == remaining {
                        self.state = State::Head;
                        resp.body_len += take;
                        return Ok(Progress::Done {
                            consumed: pos,
                            response: resp,
                        });
                    }
                    resp.body_len += take;
                    self.state = State::Body {
                        resp,
                        remaining: remaining - take,
                    };
                    return Ok(Progress::NeedMore { consumed: pos });
                }
                State::UntilClose { mut resp } => {
                    resp.body_len += rest.len() as u64;
                    self.state = State::UntilClose { resp };
                    return Ok(Progress::NeedMore {
                        consumed: input.len(),
                    });
                }
                State::Chunked { mut resp, chunk } => match chunk {
                    ChunkState::Size => {
                        let Some(eol) = find_crlf(rest) else {
                            if rest.len() > MAX_LINE_BYTES {
                                return Err(CodecError::Chunked("chunk size line too long"));
                            }
                            return Ok(Progress::NeedMore { consumed: pos });
                        };
                        let line = &rest[..eol];
                        // Chunk extensions (";name=value") are ignored.
                        let digits = line
                            .split(|&b| b == b';')
                            .next()
                            .unwrap_or(&[])
                            .trim_ascii();
                        if digits.is_empty() || digits.len() > 15 {
                            return Err(CodecError::Chunked("bad chunk size"));
                        }
                        let mut size = 0u64;
                        for &d in digits {
                            let v = (d as char)
                                .to_digit(16)
                                .ok_or(CodecError::Chunked("bad chunk size"))?;
                            size = size * 16 + u64::from(v);
                        }
                        pos += eol + 2;
                        let chunk = if size == 0 {
                            ChunkState::Trailer
                        } else {
                            ChunkState::Data(size)
                        };
                        self.state = State::Chunked { resp, chunk };
                    }
                    ChunkState::Data(remaining) => {
                        let take = remaining.min(rest.len() as u64);
                        pos += take as usize;
                        resp.body_len += take;
                        let chunk = if take == remaining {
                            ChunkState::DataCrlf
                        } else {
                            ChunkState::Data(remaining - take)
                        };
                        self.state = State::Chunked { resp, chunk };
                        if take < remaining {
                            return Ok(Progress::NeedMore { consumed: pos });
                        }
                    }
                    ChunkState::DataCrlf => {
                        if rest.len() < 2 {
                            return Ok(Progress::NeedMore { consumed: pos });
                        }
                        if &rest[..2] != b"\r\n" {
                            return Err(CodecError::Chunked("missing CRLF after chunk data"));
                        }
                        pos += 2;
                        self.state = State::Chunked {
                            resp,
                            chunk: ChunkState::Size,
                        };
                    }
                    ChunkState::Trailer => {
                        let Some(eol) = find_crlf(rest) else {
                            if rest.len() > MAX_LINE_BYTES {
                                return Err(CodecError::Chunked("trailer line too long"));
                            }
                            return Ok(Progress::NeedMore { consumed: pos });
                        };
                        pos += eol + 2;
                        if eol == 0 {
                            self.state = State::Head;
                            return Ok(Progress::Done {
                                consumed: pos,
                                response: resp,
                            });
                        }
                    }
                },
            }
        }
    }

    /// Parses a response head at the start of `buf`. `None`: incomplete.
    /// `Some((n, None))`: an informational response of `n` bytes to skip.
    fn parse_head(&self, buf: &[u8]) -> Result<Option<(usize, Option<State>)>, CodecError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let n = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD_BYTES {
                    return Err(CodecError::HeadTooLarge(MAX_HEAD_BYTES));
                }
                return Ok(None);
            }
            Err(e) => return Err(CodecError::Head(e.to_string())),
        };
        if n > MAX_HEAD_BYTES {
            return Err(CodecError::HeadTooLarge(MAX_HEAD_BYTES));
        }
        let status = parsed.code.ok_or(CodecError::NoStatus)?;
        if (100..200).contains(&status) && status != 101 {
            return Ok(Some((n, None)));
        }
        let http10 = parsed.version == Some(0);
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut conn_close = false;
        let mut conn_keep_alive = false;
        for h in parsed.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let len = parse_content_length(h.value)?;
                if content_length.is_some_and(|old| old != len) {
                    return Err(CodecError::BadContentLength);
                }
                content_length = Some(len);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // Chunked must be the final coding; earlier ones don't change framing.
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(&[]);
                chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            } else if h.name.eq_ignore_ascii_case("connection") {
                conn_close |= has_token(h.value, "close");
                conn_keep_alive |= has_token(h.value, "keep-alive");
            }
        }
        let close = conn_close || (http10 && !conn_keep_alive);
        let resp = Response {
            status,
            close,
            body_len: 0,
        };
        // RFC 9112 6.3: no body for 1xx/204/304; chunked wins over Content-Length.
        let state = if status == 204 || status == 304 || status == 101 {
            State::Body { resp, remaining: 0 }
        } else if chunked {
            State::Chunked {
                resp,
                chunk: ChunkState::Size,
            }
        } else if let Some(len) = content_length {
            State::Body {
                resp,
                remaining: len,
            }
        } else {
            State::UntilClose {
                resp: Response {
                    close: true,
                    ..resp
                },
            }
        };
        Ok(Some((n, Some(state))))
    }

    /// The connection reached end of stream.
    pub fn on_eof(&mut self) -> Result<Option<Response>, CodecError> {
        match std::mem::take(&mut self.state) {
            State::Head => Ok(None),
            State::UntilClose { resp } => Ok(Some(resp)),
            _ => Err(CodecError::TruncatedResponse),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK_RESP: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nvalue=abcdef";
    const MISS_RESP: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nnot found\n";

    /// Feeds `input` in pieces of `step` bytes the way the engine does
    /// (keeping unconsumed bytes) and collects the responses.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<Vec<Response>, CodecError> {
        let mut dec = ResponseDecoder::default();
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode(&buf)? {
                    Progress::NeedMore { consumed } => {
                        buf.drain(..consumed);
                        break;
                    }
                    Progress::Done { consumed, response } => {
                        buf.drain(..consumed);
                        out.push(response);
                    }
                }
            }
        }
        if let Some(r) = dec.on_eof()? {
            out.push(r);
        }
        assert!(
            buf.is_empty(),
            "left over: {:?}",
            String::from_utf8_lossy(&buf)
        );
        Ok(out)
    }

    #[test]
    fn single_response_in_one_piece() {
        let r = decode_in_steps(OK_RESP, OK_RESP.len()).unwrap();
        assert_eq!(
            r,
            vec![Response {
                status: 200,
                close: false,
                body_len: 12
            }]
        );
    }

    #[test]
    fn partial_reads_at_every_split_point() {
        let mut both = OK_RESP.to_vec();
        both.extend_from_slice(MISS_RESP);
        for step in 1..=both.len() {
            let r = decode_in_steps(&both, step).unwrap();
            assert_eq!(r.len(), 2, "step {step}");
            assert_eq!((r[0].status, r[0].body_len), (200, 12));
            assert_eq!((r[1].status, r[1].body_len), (404, 10));
        }
    }

    #[test]
    fn pipelined_responses_in_one_buffer() {
        let mut input = Vec::new();
        for i in 0..50 {
            input.extend_from_slice(if i % 3 == 0 { MISS_RESP } else { OK_RESP });
        }
        let mut dec = ResponseDecoder::default();
        let mut pos = 0;
        let mut statuses = Vec::new();
        while let Progress::Done { consumed, response } = dec.decode(&input[pos..]).unwrap() {
            pos += consumed;
            statuses.push(response.status);
        }
        assert_eq!(pos, input.len());
        assert_eq!(statuses.len(), 50);
        assert_eq!(statuses.iter().filter(|&&s| s == 404).count(), 17);
    }

    #[test]
    fn body_is_skipped_without_buffering() {
        // A 1 MiB body offered 1000 bytes at a time is consumed as it comes.
        let mut dec = ResponseDecoder::default();
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
        assert_eq!(
            dec.decode(head).unwrap(),
            Progress::NeedMore {
                consumed: head.len()
            }
        );
        let chunk = [b'x'; 1000];
        let mut total = 0;
        loop {
            match dec.decode(&chunk).unwrap() {
                Progress::NeedMore { consumed } => {
                    assert_eq!(consumed, 1000);
                    total += consumed;
                }
                Progress::Done { consumed, response } => {
                    total += consumed;
                    assert_eq!(response.body_len, 1_048_576);
                    break;
                }
            }
        }
        assert_eq!(total, 1_048_576);
        assert!(dec.is_idle());
    }

    #[test]
    fn empty_bodies_and_no_body_statuses() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\
                      HTTP/1.1 204 No Content\r\n\r\n\
                      HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n";
        let r = decode_in_steps(input, 7).unwrap();
        let s: Vec<u16> = r.iter().map(|r| r.status).collect();
        assert_eq!(s, vec![200, 204, 304]);
        assert!(r.iter().all(|r| r.body_len == 0));
    }

    #[test]
    fn informational_responses_are_skipped() {
        let input =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
        let r = decode_in_steps(input, 5).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, 200);
    }

    #[test]
    fn chunked_bodies() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                      5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n\
                      HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nnot found\n";
        for step in 1..=input.len() {
            let r = decode_in_steps(input, step).unwrap();
            assert_eq!(r.len(), 2, "step {step}");
            assert_eq!((r[0].status, r[0].body_len), (200, 11));
            assert_eq!(r[1].status, 404);
        }
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(
            decode_in_steps(bad, bad.len()),
            Err(CodecError::Chunked(_))
        ));
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY";
        assert!(matches!(
            decode_in_steps(bad, bad.len()),
            Err(CodecError::Chunked(_))
        ));
    }

    #[test]
    fn connection_close_and_http10() {
        let r = decode_in_steps(
            b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbad\n",
            3,
        )
        .unwrap();
        assert!(r[0].close);
        let r = decode_in_steps(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 100).unwrap();
        assert!(r[0].close);
        let r = decode_in_steps(
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok",
            100,
        )
        .unwrap();
        assert!(!r[0].close);
    }

    #[test]
    fn close_delimited_body_completes_at_eof() {
        let input = b"HTTP/1.1 200 OK\r\n\r\nsome body bytes";
        let r = decode_in_steps(input, 4).unwrap();
        assert_eq!(
            r,
            vec![Response {
                status: 200,
                close: true,
                body_len: 15
            }]
        );
    }

    #[test]
    fn truncated_and_malformed_responses_are_errors() {
        let mut dec = ResponseDecoder::default();
        dec.decode(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        assert_eq!(dec.on_eof(), Err(CodecError::TruncatedResponse));
        assert!(matches!(
            ResponseDecoder::default().decode(b"HTTX/1.1 200 OK\r\n\r\n"),
            Err(CodecError::Head(_))
        ));
        assert_eq!(
            ResponseDecoder::default().decode(b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n"),
            Err(CodecError::BadContentLength)
        );
        assert_eq!(
            ResponseDecoder::default()
                .decode(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(CodecError::BadContentLength)
        );
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        while huge.len() <= MAX_HEAD_BYTES {
            huge.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(ResponseDecoder::default().decode(&huge).is_err());
        // Nothing at all is simply "need more".
        assert_eq!(
            ResponseDecoder::default().decode(b"").unwrap(),
            Progress::NeedMore { consumed: 0 }
        );
    }

    #[test]
    fn classification() {
        assert_eq!(classify(200), ResponseClass::Ok);
        assert_eq!(classify(404), ResponseClass::NotFound);
        assert_eq!(classify(400), ResponseClass::ClientError(400));
        assert_eq!(classify(413), ResponseClass::ClientError(413));
        assert_eq!(classify(503), ResponseClass::ServerError(503));
        assert_eq!(classify(201), ResponseClass::Other(201));
        assert_eq!(classify(301), ResponseClass::Other(301));
    }

    fn encode(mode: ApiMode, op: Op) -> String {
        encode_with(mode, None, op)
    }

    fn encode_with(mode: ApiMode, auth_token: Option<&str>, op: Op) -> String {
        let t = HttpTransport::new(
            mode,
            &["127.0.0.1:9999".to_string()],
            auth_token,
            &KeyNames::numbered("key:"),
            5,
        );
        let mut codec = t.codec(0);
        let mut out = Vec::new();
        let id0 = codec.encode(op, &mut out);
        let id1 = codec.encode(op, &mut Vec::new());
        assert_eq!((id0, id1), (0, 1));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encodes_api_requests() {
        assert_eq!(
            encode(
                ApiMode::Api,
                Op {
                    kind: OpKind::Read,
                    key: 42
                }
            ),
            "GET /api/get?key=key%3A42 HTTP/1.1\r\nHost: 127.0.0.1:9999\r\n\r\n"
        );
        let value = String::from_utf8(make_value(5)).unwrap();
        let body = format!("key=key%3A1234567&value={value}");
        assert_eq!(
            encode(ApiMode::Api, Op { kind: OpKind::Write, key: 1_234_567 }),
            format!(
                "POST /api/set HTTP/1.1\r\nHost: 127.0.0.1:9999\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        );
    }

    #[test]
    fn encodes_v1_requests() {
        assert_eq!(
            encode(
                ApiMode::V1,
                Op {
                    kind: OpKind::Read,
                    key: 0
                }
            ),
            "GET /v1/keys/key%3A0 HTTP/1.1\r\nHost: 127.0.0.1:9999\r\n\r\n"
        );
        let value = String::from_utf8(make_value(5)).unwrap();
        assert_eq!(
            encode(ApiMode::V1, Op { kind: OpKind::Write, key: 7 }),
            format!("PUT /v1/keys/key%3A7 HTTP/1.1\r\nHost: 127.0.0.1:9999\r\nContent-Length: 5\r\n\r\n{value}")
        );
    }

    #[test]
    fn every_request_carries_the_bearer_token() {
        let read = Op {
            kind: OpKind::Read,
            key: 3,
        };
        let write = Op {
            kind: OpKind::Write,
            key: 3,
        };
        let auth = "Host: 127.0.0.1:9999\r\nAuthorization: Bearer tok-0123456789abcdef\r\n";
        for mode in [ApiMode::Api, ApiMode::V1] {
            for op in [read, write] {
                let with = encode_with(mode, Some("tok-0123456789abcdef"), op);
                assert!(with.contains(auth), "{with:?}");
                // Nothing else changes: the same request without the line.
                let without = encode(mode, op);
                assert_eq!(
                    with.replace("Authorization: Bearer tok-0123456789abcdef\r\n", ""),
                    without
                );
                assert!(!without.contains("Authorization"));
            }
        }
    }

    #[test]
    fn codec_numbers_responses_in_order() {
        let t = HttpTransport::new(
            ApiMode::Api,
            &["h".to_string()],
            None,
            &KeyNames::numbered("k"),
            1,
        );
        let mut codec = t.codec(0);
        let mut both = OK_RESP.to_vec();
        both.extend_from_slice(MISS_RESP);
        let mut sink = Vec::new();
        let Decoded::Done {
            consumed,
            completion,
        } = codec.decode(&both, &mut sink).unwrap()
        else {
            panic!("first response not decoded");
        };
        assert_eq!((completion.id, completion.class), (0, ResponseClass::Ok));
        let Decoded::Done { completion, .. } = codec.decode(&both[consumed..], &mut sink).unwrap()
        else {
            panic!("second response not decoded");
        };
        assert_eq!(
            (completion.id, completion.class),
            (1, ResponseClass::NotFound)
        );
        codec.reset();
        let Decoded::Done { completion, .. } = codec.decode(OK_RESP, &mut sink).unwrap() else {
            panic!("response after reset not decoded");
        };
        assert_eq!(completion.id, 0);
    }

    #[test]
    fn helpers() {
        assert_eq!(
            percent_encode(b"a-b_c.d~e:f/g h"),
            b"a-b_c.d~e%3Af%2Fg%20h".to_vec()
        );
        let v = make_value(1000);
        assert_eq!(v.len(), 1000);
        assert!(v.iter().all(u8::is_ascii_alphanumeric));
    }

    #[test]
    fn listed_keys_are_percent_encoded_and_sized() {
        let keys = KeyNames::list(vec![b"a b/c".to_vec(), b"x".to_vec()]);
        let t = HttpTransport::new(ApiMode::Api, &["h".to_string()], None, &keys, 3);
        let mut c = t.codec(0);
        let mut out = Vec::new();
        c.encode(
            Op {
                kind: OpKind::Read,
                key: 0,
            },
            &mut out,
        );
        assert!(out.starts_with(b"GET /api/get?key=a%20b%2Fc HTTP/1.1\r\n"));
        out.clear();
        c.encode(
            Op {
                kind: OpKind::Write,
                key: 0,
            },
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        let body = format!(
            "key=a%20b%2Fc&value={}",
            String::from_utf8(make_value(3)).unwrap()
        );
        assert!(
            text.ends_with(&format!("Content-Length: {}\r\n\r\n{body}", body.len())),
            "{text}"
        );
        let t = HttpTransport::new(ApiMode::V1, &["h".to_string()], None, &keys, 1);
        let mut out = Vec::new();
        t.codec(0).encode(
            Op {
                kind: OpKind::Write,
                key: 1,
            },
            &mut out,
        );
        assert!(out.starts_with(b"PUT /v1/keys/x HTTP/1.1\r\n"));
    }
}
