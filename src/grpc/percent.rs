//! The percent-encoding gRPC uses for `grpc-message` (and we use for our
//! reason trailers): header values stay visible ASCII whatever the text.

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
