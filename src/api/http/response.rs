//! Writing HTTP/1.1 responses into a connection's output buffer. Responses
//! are appended, not sent, so a batch of pipelined requests leaves in one
//! write.
//!
//! No byte a client chose reaches a status line or a header: reasons,
//! content types and header names are constants, header values are checked
//! here ([`header_value`]), and the one-line bodies of text answers have
//! their control bytes escaped, so a key or name with CR/LF in it can
//! neither add a header nor look like a second response.

use std::borrow::Cow;
use std::io::Write;

use crate::error::ApiError;

pub const TEXT: &str = "text/plain; charset=utf-8";
pub const OCTETS: &str = "application/octet-stream";
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Head of a response; the body (of `body_len` bytes) follows separately so
/// callers can write it in pieces without concatenating first.
pub fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body_len: usize,
    close: bool,
    extra: &[(&str, &str)],
) {
    // Writes into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {body_len}\r\n",
        reason(status)
    );
    for (name, value) in extra {
        let _ = write!(out, "{name}: {}\r\n", header_value(value));
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete response with a body.
pub fn write(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    close: bool,
    extra: &[(&str, &str)],
) {
    write_head(out, status, content_type, body.len(), close, extra);
    out.extend_from_slice(body);
}

/// A header value as it may go on the wire: control bytes (CR and LF
/// above all, which would end the header and start another) become `?`.
/// Every value the server sends today is a constant; this is the guard for
/// the day one is not.
pub fn header_value(value: &str) -> Cow<'_, str> {
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        Cow::Owned(
            value
                .chars()
                .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(value)
    }
}

/// The text of a one-line body: control bytes escaped (`\r`, `\n`,
/// `\u{1b}`...), so names and keys a client sent stay on one line.
pub fn one_line(line: &str) -> Cow<'_, str> {
    if line.chars().any(char::is_control) {
        Cow::Owned(
            line.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(line)
    }
}

/// A one-line text response.
pub fn write_text(out: &mut Vec<u8>, status: u16, line: &str, close: bool) {
    write_text_with(out, status, line, close, &[]);
}

fn write_text_with(
    out: &mut Vec<u8>,
    status: u16,
    line: &str,
    close: bool,
    extra: &[(&str, &str)],
) {
    let line = one_line(line);
    write_head(out, status, TEXT, line.len() + 1, close, extra);
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
}

/// The one place an error becomes bytes on the wire.
pub fn write_error(out: &mut Vec<u8>, err: &ApiError, close: bool) {
    let allow = err.allow_header().map(|a| ("Allow", a));
    let challenge = err.www_authenticate().map(|c| ("WWW-Authenticate", c));
    let extra: Vec<(&str, &str)> = allow.into_iter().chain(challenge).collect();
    write_text_with(
        out,
        err.status(),
        &err.to_string(),
        close || err.closes_connection(),
        &extra,
    );
}

/// Drops the body of the response that starts at `start` in `out`, keeping
/// its head (and so the `Content-Length` a `GET` would have): the answer to
/// a `HEAD` (RFC 9110 §9.3.2).
pub fn strip_body(out: &mut Vec<u8>, start: usize) {
    let Some(tail) = out.get(start..) else {
        return;
    };
    // Our heads never contain an empty line before their end (header values
    // are checked above), so the first one ends the head.
    if let Some(end) = tail.windows(4).position(|w| w == b"\r\n\r\n") {
        out.truncate(start + end + 4);
    }
}

pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_allow_and_close() {
        let mut out = Vec::new();
        let err = ApiError::MethodNotAllowed {
            method: "PATCH".into(),
            path: "/api/get".into(),
            allowed: "GET",
        };
        write_error(&mut out, &err, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("Allow: GET\r\n"));
        assert!(!text.contains("Connection: close"));
        assert!(text.ends_with("\r\n\r\nmethod PATCH is not allowed on /api/get (allowed: GET)\n"));

        let mut out = Vec::new();
        write_error(&mut out, &ApiError::Malformed("x".into()), false);
        assert!(String::from_utf8(out.clone())
            .unwrap()
            .contains("Connection: close\r\n"));
    }

    #[test]
    fn a_401_carries_the_bearer_challenge() {
        use crate::auth::AuthError;
        let mut out = Vec::new();
        write_error(&mut out, &ApiError::Auth(AuthError::MissingToken), false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
        assert!(text.contains("WWW-Authenticate: Bearer realm=\"nexuscache\"\r\n"));
        let mut out = Vec::new();
        write_error(&mut out, &ApiError::Auth(AuthError::InvalidToken), false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(
            "WWW-Authenticate: Bearer realm=\"nexuscache\", error=\"invalid_token\"\r\n"
        ));
    }

    #[test]
    fn client_bytes_cannot_split_a_response() {
        let mut out = Vec::new();
        let evil = "a\r\nSet-Cookie: x\r\n\r\nHTTP/1.1 200 OK";
        write_text(&mut out, 200, evil, false);
        write_head(&mut out, 200, TEXT, 0, false, &[("X-Test", evil)]);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("\r\nSet-Cookie"), "{text}");
        assert!(text.contains("\r\nX-Test: a??Set-Cookie: x????HTTP/1.1 200 OK\r\n"));
        let body_line = text.split("\r\n\r\n").nth(1).unwrap();
        assert!(body_line.starts_with("a\\r\\nSet-Cookie: x\\r\\n\\r\\nHTTP/1.1 200 OK\n"));
    }

    #[test]
    fn head_answers_keep_the_length_and_drop_the_body() {
        let mut out = b"earlier".to_vec();
        write(
            &mut out,
            200,
            OCTETS,
            b"HTTP/1.1 200 OK\r\n\r\n",
            false,
            &[],
        );
        strip_body(&mut out, 7);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("earlierHTTP/1.1 200 OK\r\n"));
        assert!(text.ends_with("Content-Length: 19\r\n\r\n"), "{text}");
    }
}
