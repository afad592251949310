//! gRPC message framing: every message on a stream is a 1-byte compressed
//! flag, a 4-byte big-endian length, then that many bytes of protobuf.
//!
//! A unary call carries exactly one message each way. [`UnaryDecoder`] is
//! fed the DATA frames of a stream as they arrive and refuses a message as
//! soon as its prefix says it is too large, so an oversized request is never
//! buffered.

use bytes::{BufMut, Bytes, BytesMut};

use super::status::{Code, Status};

/// Flag byte + big-endian `u32` length.
pub const PREFIX_LEN: usize = 5;
/// Most a decoder reserves up front for a message split over frames.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;

/// Why the one message of a unary stream could not be taken from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("compression not supported")]
    Compressed,
    #[error("invalid compressed-flag byte {0}")]
    BadFlag(u8),
    #[error("message is {len} bytes, over the {limit}-byte limit")]
    TooLarge { len: u64, limit: usize },
    #[error("more than one message on a unary call")]
    ExtraMessage,
    #[error("stream ended inside a message ({have} of {want} bytes)")]
    Truncated { have: usize, want: usize },
    #[error("stream ended without a message")]
    Missing,
    #[error(
        "too many bytes of unfinished messages on this connection or core: this message \
         needs {wanted} bytes buffered, {room} are free; finish or cancel other calls"
    )]
    OverBudget { wanted: usize, room: usize },
}

impl FrameError {
    /// The status a server answers with.
    pub fn status(&self) -> Status {
        let code = match self {
            FrameError::Compressed => Code::Unimplemented,
            FrameError::TooLarge { .. } | FrameError::OverBudget { .. } => Code::ResourceExhausted,
            FrameError::BadFlag(_)
            | FrameError::ExtraMessage
            | FrameError::Truncated { .. }
            | FrameError::Missing => Code::Internal,
        };
        Status::new(code, self.to_string())
    }
}

/// The prefix of an uncompressed message of `len` bytes.
pub fn prefix(len: usize) -> [u8; PREFIX_LEN] {
    // Messages are bounded far below 4 GiB by our limits; saturate rather
    // than wrap if a caller ever passes more.
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [0, len[0], len[1], len[2], len[3]]
}

/// A whole framed message in one buffer.
pub fn encode(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + len);
    buf.put_slice(&prefix(len));
    // Cannot fail: the buffer has room for exactly `encoded_len` bytes.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// Incremental decoder for the single message of a unary call.
#[derive(Debug)]
pub struct UnaryDecoder {
    limit: usize,
    header: [u8; PREFIX_LEN],
    header_len: usize,
    /// Length from the prefix, once the prefix is complete.
    want: Option<usize>,
    /// The message so far, grown explicitly (see `grow`) so its capacity,
    /// which is what it costs, is known before it is allocated.
    body: Vec<u8>,
    /// Most bytes `body` may hold (set per push by the caller's budget).
    room: usize,
    done: Option<Bytes>,
}

impl UnaryDecoder {
    /// `limit` is the largest message (without its prefix) accepted.
    pub fn new(limit: usize) -> UnaryDecoder {
        UnaryDecoder {
            limit,
            header: [0; PREFIX_LEN],
            header_len: 0,
            want: None,
            body: Vec::new(),
            room: usize::MAX,
            done: None,
        }
    }

    /// Whether the message is complete (more input would be an error).
    pub fn is_complete(&self) -> bool {
        self.done.is_some()
    }

    /// Bytes of buffer this decoder holds for a message not yet complete.
    pub fn held(&self) -> usize {
        self.body.capacity()
    }

    /// [`UnaryDecoder::push`], refusing to let the buffer of the partial
    /// message grow past `room` bytes ([`FrameError::OverBudget`]); nothing
    /// is allocated beyond it.
    pub fn push_within(&mut self, chunk: Bytes, room: usize) -> Result<(), FrameError> {
        self.room = room;
        let pushed = self.push(chunk);
        self.room = usize::MAX;
        pushed
    }

    /// Feeds the next DATA frame. A frame that holds the whole message is
    /// sliced, not copied.
    pub fn push(&mut self, mut chunk: Bytes) -> Result<(), FrameError> {
        while !chunk.is_empty() {
            if self.done.is_some() {
                return Err(FrameError::ExtraMessage);
            }
            let want = match self.want {
                Some(want) => want,
                None => {
                    let take = (PREFIX_LEN - self.header_len).min(chunk.len());
                    self.header[self.header_len..self.header_len + take]
                        .copy_from_slice(&chunk[..take]);
                    self.header_len += take;
                    let _ = chunk.split_to(take);
                    if self.header_len < PREFIX_LEN {
                        return Ok(());
                    }
                    let want = self.parse_header()?;
                    self.want = Some(want);
                    if want == 0 {
                        self.done = Some(Bytes::new());
                        continue;
                    }
                    want
                }
            };
            let missing = want - self.body.len();
            if self.body.is_empty() && chunk.len() >= missing {
                self.done = Some(chunk.split_to(missing));
                continue;
            }
            let take = missing.min(chunk.len());
            self.grow(want, take)?;
            self.body.extend_from_slice(&chunk.split_to(take));
            if self.body.len() == want {
                // Capacity is exactly `want` here (see `grow`): no waste.
                self.done = Some(Bytes::from(std::mem::take(&mut self.body)));
            }
        }
        Ok(())
    }

    /// Makes room for `take` more bytes of a `want`-byte message. Grows
    /// with what arrives rather than trusting the prefix (a client could
    /// claim the limit and send one byte): doubling, from at most
    /// [`INITIAL_BODY_CAPACITY`], never past `want` or `self.room`.
    fn grow(&mut self, want: usize, take: usize) -> Result<(), FrameError> {
        let needed = self.body.len() + take;
        let capacity = self.body.capacity();
        if needed <= capacity {
            return Ok(());
        }
        let target = needed
            .max(capacity.saturating_mul(2))
            .max(INITIAL_BODY_CAPACITY)
            .min(want);
        if target > self.room {
            return Err(FrameError::OverBudget {
                wanted: target,
                room: self.room,
            });
        }
        self.body.reserve_exact(target - self.body.len());
        Ok(())
    }

    fn parse_header(&self) -> Result<usize, FrameError> {
        match self.header[0] {
            0 => {}
            1 => return Err(FrameError::Compressed),
            flag => return Err(FrameError::BadFlag(flag)),
        }
        let len = u32::from_be_bytes([
            self.header[1],
            self.header[2],
            self.header[3],
            self.header[4],
        ]);
        match usize::try_from(len) {
            Ok(len) if len <= self.limit => Ok(len),
            _ => Err(FrameError::TooLarge {
                len: u64::from(len),
                limit: self.limit,
            }),
        }
    }

    /// At end of stream: the message, or `None` if the stream carried no
    /// bytes at all (an error status usually comes with no message).
    pub fn finish_optional(self) -> Result<Option<Bytes>, FrameError> {
        if let Some(message) = self.done {
            return Ok(Some(message));
        }
        if self.header_len == 0 {
            return Ok(None);
        }
        Err(FrameError::Truncated {
            have: self.header_len + self.body.len(),
            want: PREFIX_LEN + self.want.unwrap_or(0),
        })
    }

    /// At end of stream: the message, which must be there.
    pub fn finish(self) -> Result<Bytes, FrameError> {
        self.finish_optional()?.ok_or(FrameError::Missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = prefix(body.len()).to_vec();
        v.extend_from_slice(body);
        v
    }

    fn decode_in_pieces(input: &[u8], piece: usize, limit: usize) -> Result<Bytes, FrameError> {
        let mut d = UnaryDecoder::new(limit);
        for chunk in input.chunks(piece.max(1)) {
            d.push(Bytes::copy_from_slice(chunk))?;
        }
        d.finish()
    }

    #[test]
    fn a_partial_message_never_grows_past_its_room() {
        let message = vec![9u8; 200_000];
        let input = framed(&message);
        let mut d = UnaryDecoder::new(1 << 20);
        // Prefix plus 1,000 bytes: the first buffer is 64 KiB.
        d.push_within(Bytes::copy_from_slice(&input[..1005]), 64 * 1024)
            .unwrap();
        assert_eq!(d.held(), 64 * 1024);
        // Doubling to 128 KiB would pass a room of 100,000 bytes.
        let refused = d.push_within(Bytes::copy_from_slice(&input[1005..70_000]), 100_000);
        assert_eq!(
            refused,
            Err(FrameError::OverBudget {
                wanted: 128 * 1024,
                room: 100_000
            })
        );
        assert_eq!(refused.unwrap_err().status().code, Code::ResourceExhausted);
        assert_eq!(d.held(), 64 * 1024, "nothing was allocated past the room");

        // With room, the buffer ends at exactly the message's size.
        let mut d = UnaryDecoder::new(1 << 20);
        for piece in input.chunks(16_384) {
            d.push_within(Bytes::copy_from_slice(piece), 200_000)
                .unwrap();
            assert!(d.held() <= 200_000);
        }
        assert_eq!(d.held(), 0, "a complete message is no longer partial");
        assert_eq!(d.finish().unwrap(), &message[..]);
    }

    #[test]
    fn prefix_is_flag_and_big_endian_length() {
        assert_eq!(prefix(0), [0, 0, 0, 0, 0]);
        assert_eq!(prefix(0x0102_0304), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn encode_matches_prost_with_prefix() {
        let msg = crate::proto::GetRequest {
            key: b"k".to_vec(),
            forwarded: true,
            keep_copy: false,
        };
        let framed = encode(&msg);
        assert_eq!(
            &framed[..PREFIX_LEN],
            &prefix(prost::Message::encoded_len(&msg))
        );
        let back: crate::proto::GetRequest = prost::Message::decode(&framed[PREFIX_LEN..]).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn decodes_whatever_the_frame_boundaries() {
        let body: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let input = framed(&body);
        for piece in [1, 2, 4, 5, 6, 7, 100, 1004, 1005, 5000] {
            assert_eq!(
                decode_in_pieces(&input, piece, 1000).unwrap(),
                body,
                "{piece}"
            );
        }
    }

    #[test]
    fn whole_message_in_one_frame_is_not_copied() {
        let input = Bytes::from(framed(b"hello"));
        let mut d = UnaryDecoder::new(100);
        d.push(input.clone()).unwrap();
        let out = d.finish().unwrap();
        assert_eq!(out.as_ptr(), input[PREFIX_LEN..].as_ptr());
    }

    #[test]
    fn empty_message_is_valid() {
        assert_eq!(decode_in_pieces(&framed(b""), 5, 0).unwrap(), Bytes::new());
    }

    #[test]
    fn oversized_message_is_refused_from_its_prefix() {
        let mut d = UnaryDecoder::new(10);
        let err = d.push(Bytes::from_static(&[0, 0, 0, 0, 11])).unwrap_err();
        assert_eq!(err, FrameError::TooLarge { len: 11, limit: 10 });
        assert_eq!(err.status().code, Code::ResourceExhausted);
        let mut d = UnaryDecoder::new(10);
        assert!(d.push(Bytes::from_static(&[0, 0xff, 0xff])).is_ok());
        assert!(matches!(
            d.push(Bytes::from_static(&[0xff, 0xff])),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn compressed_and_bad_flags_are_refused() {
        let mut d = UnaryDecoder::new(10);
        let err = d.push(Bytes::from_static(&[1, 0, 0, 0, 1, 9])).unwrap_err();
        assert_eq!(err, FrameError::Compressed);
        assert_eq!(err.status().code, Code::Unimplemented);
        assert_eq!(err.status().message, "compression not supported");
        let mut d = UnaryDecoder::new(10);
        assert_eq!(
            d.push(Bytes::from_static(&[7, 0, 0, 0, 0])),
            Err(FrameError::BadFlag(7))
        );
    }

    #[test]
    fn a_second_message_is_refused() {
        let mut input = framed(b"ab");
        input.extend_from_slice(&framed(b"c"));
        let err = decode_in_pieces(&input, 3, 10).unwrap_err();
        assert_eq!(err, FrameError::ExtraMessage);
        let err = decode_in_pieces(&input, 100, 10).unwrap_err();
        assert_eq!(err, FrameError::ExtraMessage);
    }

    #[test]
    fn truncated_and_missing_messages_are_reported() {
        let input = framed(b"abcdef");
        assert_eq!(
            decode_in_pieces(&input[..8], 3, 10),
            Err(FrameError::Truncated { have: 8, want: 11 })
        );
        assert_eq!(
            decode_in_pieces(&input[..3], 3, 10),
            Err(FrameError::Truncated { have: 3, want: 5 })
        );
        assert_eq!(UnaryDecoder::new(1).finish(), Err(FrameError::Missing));
        assert_eq!(UnaryDecoder::new(1).finish_optional(), Ok(None));
    }
}
