//! gRPC status codes and the percent-encoding of the `grpc-message`
//! trailer: the wire format only. Which error becomes which code is decided
//! in `crate::error`, beside the HTTP statuses.

use std::fmt;

use super::reason::Reason;

/// The canonical gRPC status codes (grpc/grpc `doc/statuscodes.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The number sent in `grpc-status`.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The `grpc-status` header value: a decimal number.
    pub fn header_value(self) -> &'static str {
        const VALUES: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        VALUES[self as usize]
    }

    /// Parses a `grpc-status` value. Numbers we do not know become
    /// `Unknown`, as the spec asks; a value that is not a number is `None`.
    pub fn from_header(value: &[u8]) -> Option<Code> {
        if value.is_empty() || value.len() > 3 || !value.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = value
            .iter()
            .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
        Some(Code::ALL.get(n).copied().unwrap_or(Code::Unknown))
    }

    /// The status a client infers from a non-200 HTTP response that has no
    /// `grpc-status` (grpc/grpc `doc/http-grpc-status-mapping.md`).
    pub fn from_http_status(status: u16) -> Code {
        match status {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }

    /// The upper-case name used in the gRPC documentation.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A non-OK outcome of a call: what goes into `grpc-status` and
/// `grpc-message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Status {
    pub code: Code,
    pub message: String,
    /// The machine-readable reason sent beside the code, for our own
    /// nodes (see [`super::reason`]).
    pub reason: Option<Reason>,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            reason: None,
        }
    }

    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::Unimplemented, message)
    }

    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }

    pub fn deadline_exceeded(message: impl Into<String>) -> Status {
        Status::new(Code::DeadlineExceeded, message)
    }
}

/// Percent-encodes a `grpc-message`: UTF-8 bytes outside printable ASCII
/// (0x20..=0x7E), and `%` itself, become `%XX`.
pub fn encode_message(message: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// Decodes a `grpc-message`. As the spec asks of receivers, a `%` not
/// followed by two hex digits is kept as it is, and bytes that are not
/// UTF-8 after decoding are replaced, never an error.
pub fn decode_message(value: &[u8]) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if b == b'%' {
            if let (Some(hi), Some(lo)) = (
                value.get(i + 1).copied().and_then(hex),
                value.get(i + 2).copied().and_then(hex),
            ) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_the_header() {
        for code in Code::ALL {
            assert_eq!(
                Code::from_header(code.header_value().as_bytes()),
                Some(code)
            );
            assert_eq!(code.header_value(), code.as_u8().to_string());
        }
        assert_eq!(Code::from_header(b"17"), Some(Code::Unknown));
        assert_eq!(Code::from_header(b"999"), Some(Code::Unknown));
        assert_eq!(Code::from_header(b""), None);
        assert_eq!(Code::from_header(b"-1"), None);
        assert_eq!(Code::from_header(b"1000"), None);
        assert_eq!(Code::from_header(b" 3"), None);
    }

    #[test]
    fn http_statuses_map_as_documented() {
        assert_eq!(Code::from_http_status(404), Code::Unimplemented);
        assert_eq!(Code::from_http_status(503), Code::Unavailable);
        assert_eq!(Code::from_http_status(400), Code::Internal);
        assert_eq!(Code::from_http_status(415), Code::Unknown);
    }

    #[test]
    fn messages_are_percent_encoded_and_decoded() {
        assert_eq!(encode_message("key is empty"), "key is empty");
        assert_eq!(encode_message("100% sure"), "100%25 sure");
        assert_eq!(encode_message("a\nb"), "a%0Ab");
        assert_eq!(encode_message("caf\u{e9}"), "caf%C3%A9");
        for text in [
            "plain",
            "100% sure",
            "line\r\nbreak",
            "caf\u{e9} \u{1F600}",
            "",
        ] {
            assert_eq!(decode_message(encode_message(text).as_bytes()), text);
        }
        // Lenient on malformed escapes.
        assert_eq!(decode_message(b"50%"), "50%");
        assert_eq!(decode_message(b"%zz"), "%zz");
        assert_eq!(decode_message(b"%4"), "%4");
        assert_eq!(decode_message(b"%FF"), "\u{FFFD}");
    }

    #[test]
    fn encoded_messages_are_valid_header_values() {
        let encoded = encode_message("bad \u{0}\u{7f} input \u{e9}");
        assert!(http::HeaderValue::from_str(&encoded).is_ok());
    }
}
