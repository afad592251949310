//! Writing HTTP/1.1 responses into a connection's output buffer. Responses
//! are appended, not sent, so a batch of pipelined requests leaves in one
//! write.

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
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
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
        let _ = write!(out, "{name}: {value}\r\n");
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

/// A one-line text response.
pub fn write_text(out: &mut Vec<u8>, status: u16, line: &str, close: bool) {
    write_head(out, status, TEXT, line.len() + 1, close, &[]);
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
}

/// The one place an error becomes bytes on the wire.
pub fn write_error(out: &mut Vec<u8>, err: &ApiError, close: bool) {
    let line = err.to_string();
    let allow = err.allow_header().map(|a| ("Allow", a));
    write_head(
        out,
        err.status(),
        TEXT,
        line.len() + 1,
        close || err.closes_connection(),
        allow.as_slice(),
    );
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
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
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("Connection: close\r\n"));
    }
}
