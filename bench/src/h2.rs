//! The few pieces of HTTP/2 (RFC 9113) a unary gRPC client needs, pure:
//! frame headers, SETTINGS / WINDOW_UPDATE / PING / GOAWAY / RST_STREAM
//! payloads, and an HPACK (RFC 7541) *encoder* for request header blocks.
//!
//! The encoder only ever sends a handful of distinct header fields (method,
//! scheme, path, authority, content-type, te, user-agent), so it keeps a
//! model of the peer's dynamic table and, after the first request of a
//! connection, sends each field as a one-byte index. Responses are decoded
//! with `loona-hpack` in `grpc.rs` (their fields are chosen by the server).

use std::collections::VecDeque;

/// Connection preface a client sends first.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const FRAME_HEADER_LEN: usize = 9;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// Flow-control window every stream and the connection start with.
pub const DEFAULT_WINDOW: u32 = 65_535;
/// Largest flow-control window (2^31 - 1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
/// Frame payload limit until the peer's SETTINGS say otherwise.
pub const DEFAULT_MAX_FRAME: usize = 16_384;
/// The highest SETTINGS_MAX_FRAME_SIZE allowed.
pub const MAX_MAX_FRAME: u32 = (1 << 24) - 1;
/// The HPACK dynamic table size both sides start with.
pub const DEFAULT_HEADER_TABLE: usize = 4096;
/// Highest stream identifier.
pub const MAX_STREAM_ID: u32 = (1 << 31) - 1;

/// Error codes (RFC 9113 section 7) named in messages.
pub const REFUSED_STREAM: u32 = 0x7;

/// The fixed 9-byte header of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8]) -> FrameHeader {
        FrameHeader {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & MAX_STREAM_ID,
        }
    }

    #[inline]
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

#[inline]
pub fn write_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_MAX_FRAME as usize);
    let l = (len as u32).to_be_bytes();
    out.extend_from_slice(&[l[1], l[2], l[3], kind, flags]);
    out.extend_from_slice(&(stream & MAX_STREAM_ID).to_be_bytes());
}

pub fn write_settings(out: &mut Vec<u8>, settings: &[(u16, u32)]) {
    write_frame_header(out, settings.len() * 6, SETTINGS, 0, 0);
    for &(id, value) in settings {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

pub fn write_settings_ack(out: &mut Vec<u8>) {
    write_frame_header(out, 0, SETTINGS, FLAG_ACK, 0);
}

pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    write_frame_header(out, 4, WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&(increment & MAX_WINDOW).to_be_bytes());
}

pub fn write_ping_ack(out: &mut Vec<u8>, payload: &[u8]) {
    write_frame_header(out, 8, PING, FLAG_ACK, 0);
    out.extend_from_slice(payload);
}

/// `(identifier, value)` pairs of a SETTINGS payload; `None` if its length
/// is not a multiple of 6.
pub fn parse_settings(payload: &[u8]) -> Option<impl Iterator<Item = (u16, u32)> + '_> {
    (payload.len() % 6 == 0).then(|| {
        payload.chunks_exact(6).map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
    })
}

/// A 32-bit big-endian value at the start of `b`, reserved bit cleared.
#[inline]
pub fn read_u31(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & MAX_STREAM_ID
}

/// HPACK integer with an N-bit prefix; `first` holds the pattern bits
/// above the prefix (RFC 7541 section 5.1).
pub fn write_hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u8, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// HPACK string literal without Huffman coding.
pub fn write_hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    write_hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// A header field the encoder may send. `static_name` is the HPACK static
/// table index of its name, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    pub static_name: Option<usize>,
    /// Static index of the whole field (name and value), if it has one:
    /// then it is always sent as that index and never enters the table.
    pub static_full: Option<usize>,
}

impl Field {
    pub fn new(name: &[u8], value: &[u8], static_name: Option<usize>) -> Field {
        Field {
            name: name.to_vec(),
            value: value.to_vec(),
            static_name,
            static_full: None,
        }
    }

    pub fn indexed(name: &[u8], value: &[u8], index: usize) -> Field {
        Field {
            name: name.to_vec(),
            value: value.to_vec(),
            static_name: Some(index),
            static_full: Some(index),
        }
    }

    /// What the field costs in the dynamic table (RFC 7541 section 4.1).
    fn table_size(&self) -> usize {
        self.name.len() + self.value.len() + 32
    }
}

/// Number of static table entries; dynamic indices start after it.
const STATIC_ENTRIES: usize = 61;

/// HPACK encoder over a fixed set of fields, mirroring the peer decoder's
/// dynamic table. Every field not in the table is sent as a literal *with
/// incremental indexing*, so it is an index from then on. Entries are
/// evicted exactly as the decoder does (oldest first, RFC 7541 section 4.4),
/// which keeps indices right even with a tiny table.
#[derive(Debug, Clone)]
pub struct HeaderEncoder {
    fields: Vec<Field>,
    /// Field ids in the peer's dynamic table, newest first.
    table: VecDeque<usize>,
    size: usize,
    /// Table size in force (what the last size update said; 4096 at start).
    max: usize,
    /// Size updates to send at the start of the next block: the smallest
    /// value since the last block, then the final one (RFC 7541 4.2).
    pending_update: Option<(usize, usize)>,
    /// Bumped whenever the table changes; cached blocks carry the value
    /// they were made with.
    generation: u64,
    cache: Vec<Option<(u64, Vec<u8>)>>,
}

impl HeaderEncoder {
    pub fn new(fields: Vec<Field>) -> HeaderEncoder {
        HeaderEncoder {
            fields,
            table: VecDeque::new(),
            size: 0,
            max: DEFAULT_HEADER_TABLE,
            pending_update: None,
            generation: 0,
            cache: Vec::new(),
        }
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE. The encoder uses
    /// `min(limit, 4096)` and announces a change in the next block.
    pub fn set_peer_limit(&mut self, limit: u32) {
        let new_max = (limit as usize).min(DEFAULT_HEADER_TABLE);
        if new_max == self.max && self.pending_update.is_none() {
            return;
        }
        let smallest = self
            .pending_update
            .map_or(new_max, |(low, _)| low.min(new_max));
        self.pending_update = Some((smallest, new_max));
        self.max = new_max;
        self.evict_to(smallest);
        self.generation += 1;
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            let Some(old) = self.table.pop_back() else {
                break;
            };
            self.size -= self.fields[old].table_size();
        }
    }

    /// Appends the header block for the fields `ids` (indices into the
    /// field list), in order. `key` names the block for caching: the same
    /// key must always mean the same `ids`.
    pub fn encode(&mut self, key: usize, ids: &[usize], out: &mut Vec<u8>) {
        if let Some(Some((generation, block))) = self.cache.get(key) {
            if *generation == self.generation {
                out.extend_from_slice(block);
                return;
            }
        }
        let start = out.len();
        if let Some((low, fin)) = self.pending_update.take() {
            write_hpack_int(out, 0x20, 5, low);
            if fin != low {
                write_hpack_int(out, 0x20, 5, fin);
            }
        }
        let before = self.generation;
        for &id in ids {
            self.encode_field(id, out);
        }
        if self.generation == before {
            if self.cache.len() <= key {
                self.cache.resize(key + 1, None);
            }
            self.cache[key] = Some((self.generation, out[start..].to_vec()));
        }
    }

    fn encode_field(&mut self, id: usize, out: &mut Vec<u8>) {
        let field = &self.fields[id];
        if let Some(index) = field.static_full {
            write_hpack_int(out, 0x80, 7, index);
            return;
        }
        if let Some(pos) = self.table.iter().position(|&f| f == id) {
            write_hpack_int(out, 0x80, 7, STATIC_ENTRIES + 1 + pos);
            return;
        }
        match field.static_name {
            Some(index) => write_hpack_int(out, 0x40, 6, index),
            None => {
                out.push(0x40);
                write_hpack_str(out, &field.name);
            }
        }
        write_hpack_str(out, &field.value);
        let need = field.table_size();
        self.generation += 1;
        if need > self.max {
            // Too big for the table: the decoder empties it.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max - need);
        self.table.push_front(id);
        self.size += need;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(dec: &mut loona_hpack::Decoder<'static>, block: &[u8]) -> Vec<(String, String)> {
        dec.decode(block)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    fn fields() -> Vec<Field> {
        vec![
            Field::indexed(b":method", b"POST", 3),
            Field::new(b":path", b"/svc/Get", Some(4)),
            Field::new(b":path", b"/svc/Set", Some(4)),
            Field::new(b"te", b"trailers", None),
            Field::new(b":authority", b"127.0.0.1:10999", Some(1)),
        ]
    }

    #[test]
    fn frame_header_round_trip() {
        let mut out = Vec::new();
        write_frame_header(&mut out, 0x01_02_03, HEADERS, FLAG_END_HEADERS, 7);
        assert_eq!(out, [1, 2, 3, 1, 4, 0, 0, 0, 7]);
        let h = FrameHeader::parse(&out);
        assert_eq!(
            h,
            FrameHeader {
                len: 0x01_02_03,
                kind: HEADERS,
                flags: FLAG_END_HEADERS,
                stream: 7
            }
        );
        assert!(h.has(FLAG_END_HEADERS) && !h.has(FLAG_END_STREAM));
        // The reserved bit is ignored.
        let h = FrameHeader::parse(&[0, 0, 0, 0, 0, 0x80, 0, 0, 1]);
        assert_eq!(h.stream, 1);
    }

    #[test]
    fn control_frames() {
        let mut out = Vec::new();
        write_settings(
            &mut out,
            &[
                (SETTINGS_ENABLE_PUSH, 0),
                (SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW),
            ],
        );
        assert_eq!(FrameHeader::parse(&out).len, 12);
        let s: Vec<_> = parse_settings(&out[9..]).unwrap().collect();
        assert_eq!(s, vec![(2, 0), (4, MAX_WINDOW)]);
        assert!(parse_settings(&[0; 5]).is_none());
        out.clear();
        write_window_update(&mut out, 3, 1000);
        assert_eq!(&out[..9], &[0, 0, 4, WINDOW_UPDATE, 0, 0, 0, 0, 3]);
        assert_eq!(read_u31(&out[9..]), 1000);
        out.clear();
        write_ping_ack(&mut out, b"12345678");
        assert_eq!(FrameHeader::parse(&out).flags, FLAG_ACK);
        assert_eq!(&out[9..], b"12345678");
    }

    #[test]
    fn hpack_integers() {
        // RFC 7541 C.1.1-C.1.3.
        let mut out = Vec::new();
        write_hpack_int(&mut out, 0, 5, 10);
        assert_eq!(out, [10]);
        out.clear();
        write_hpack_int(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        write_hpack_int(&mut out, 0, 8, 42);
        assert_eq!(out, [42]);
    }

    #[test]
    fn encoder_indexes_after_first_use_and_decodes_right() {
        let mut enc = HeaderEncoder::new(fields());
        let mut dec = loona_hpack::Decoder::new();
        let get = [0, 1, 3, 4];
        let set = [0, 2, 3, 4];
        let mut first = Vec::new();
        enc.encode(0, &get, &mut first);
        let expect_get = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), "/svc/Get".to_string()),
            ("te".to_string(), "trailers".to_string()),
            (":authority".to_string(), "127.0.0.1:10999".to_string()),
        ];
        assert_eq!(decode_all(&mut dec, &first), expect_get);
        let mut second = Vec::new();
        enc.encode(0, &get, &mut second);
        assert_eq!(second.len(), 4, "all indexed now: {second:?}");
        assert_eq!(decode_all(&mut dec, &second), expect_get);
        // A new field shifts the dynamic indices of the older ones.
        for _ in 0..3 {
            let mut b = Vec::new();
            enc.encode(1, &set, &mut b);
            assert_eq!(decode_all(&mut dec, &b)[1].1, "/svc/Set");
            let mut b = Vec::new();
            enc.encode(0, &get, &mut b);
            assert_eq!(decode_all(&mut dec, &b), expect_get);
        }
    }

    #[test]
    fn encoder_follows_a_shrinking_and_tiny_table() {
        for limit in [0u32, 60, 100, 200] {
            let mut enc = HeaderEncoder::new(fields());
            let mut dec = loona_hpack::Decoder::new();
            let get = [0, 1, 3, 4];
            let mut b = Vec::new();
            enc.encode(0, &get, &mut b);
            decode_all(&mut dec, &b);
            enc.set_peer_limit(limit);
            for round in 0..4 {
                let ids: &[usize] = if round % 2 == 0 { &get } else { &[0, 2, 3, 4] };
                let mut b = Vec::new();
                enc.encode(round % 2, ids, &mut b);
                let got = decode_all(&mut dec, &b);
                assert_eq!(got.len(), 4, "limit {limit}");
                assert_eq!(got[3].1, "127.0.0.1:10999");
            }
        }
        // Growing back above 4096 keeps 4096 and needs no update.
        let mut enc = HeaderEncoder::new(fields());
        enc.set_peer_limit(65_536);
        let mut b = Vec::new();
        enc.encode(0, &[0], &mut b);
        assert_eq!(b, [0x83]);
    }
}
