//! The home-core announcement: the first bytes a peer connection sends, so
//! the receiving node serves it on the core that owns the keys it carries.
//!
//! Every node's gRPC port is shared by all its cores (SO_REUSEPORT), and
//! the kernel picks the core that accepts a connection. A peer core only
//! ever sends ops for keys whose home is one core id (its own, when both
//! nodes have the same core count), so its connection is worth moving to
//! that core once, at accept: afterwards no forwarded op or replica update
//! on it needs a cross-core hop at the owner.
//!
//! ```text
//! peer core c ── connect ── "NXHOME" c:u16be ── HTTP/2 preface ── calls...
//! owner: accepting core reads the first bytes ─┬─ announcement, c < cores ─> hand the socket to core c
//!                                              ├─ announcement, c invalid ─> serve here
//!                                              └─ anything else (grpcio, tonic, curl) ─> serve here,
//!                                                 replaying the bytes already read
//! ```
//!
//! The magic starts with `N`, the HTTP/2 preface with `P` (`PRI * HTTP/2.0`),
//! so one byte tells a normal gRPC client apart and nothing is awaited for
//! it beyond what it sends anyway. [`classify`] is the pure decision;
//! [`Prefixed`] replays the bytes read while deciding.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};

/// What an announcing connection sends before anything else.
pub const MAGIC: &[u8; 6] = b"NXHOME";
/// Magic plus a big-endian `u16` core id.
pub const ANNOUNCEMENT_LEN: usize = MAGIC.len() + 2;

/// The announcement asking the receiver to serve this connection on `core`.
pub fn announcement(core: u16) -> [u8; ANNOUNCEMENT_LEN] {
    let mut bytes = [0u8; ANNOUNCEMENT_LEN];
    bytes[..MAGIC.len()].copy_from_slice(MAGIC);
    bytes[MAGIC.len()..].copy_from_slice(&core.to_be_bytes());
    bytes
}

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// A prefix of the announcement so far: read more.
    NeedMore,
    /// Not an announcement (a normal client): serve every byte as read.
    Plain,
    /// An announcement for `core`; the bytes after [`ANNOUNCEMENT_LEN`]
    /// belong to HTTP/2.
    Announced { core: u16 },
}

/// Classifies the bytes read so far from a new connection.
pub fn classify(read: &[u8]) -> FirstBytes {
    let seen = read.len().min(MAGIC.len());
    if read[..seen] != MAGIC[..seen] {
        return FirstBytes::Plain;
    }
    if read.len() < ANNOUNCEMENT_LEN {
        return FirstBytes::NeedMore;
    }
    FirstBytes::Announced {
        core: u16::from_be_bytes([read[MAGIC.len()], read[MAGIC.len() + 1]]),
    }
}

/// A stream whose first reads return `prefix` (bytes already taken from
/// it), then read from the stream itself. Writes go straight through.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    /// How much of `prefix` was read.
    consumed: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            consumed: 0,
            inner,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let left = &this.prefix[this.consumed..];
        if !left.is_empty() {
            let n = left.len().min(buf.len());
            buf[..n].copy_from_slice(&left[..n]);
            this.consumed += n;
            if this.consumed == this.prefix.len() {
                // Done with it: give the memory back.
                this.prefix = Vec::new();
                this.consumed = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures_lite::future::block_on;
    use futures_lite::io::{AsyncReadExt, AsyncWriteExt, Cursor};

    use super::*;

    const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    #[test]
    fn an_announcement_round_trips() {
        for core in [0u16, 1, 7, 255, 256, u16::MAX] {
            let bytes = announcement(core);
            assert_eq!(classify(&bytes), FirstBytes::Announced { core });
            let mut with_preface = bytes.to_vec();
            with_preface.extend_from_slice(H2_PREFACE);
            assert_eq!(classify(&with_preface), FirstBytes::Announced { core });
        }
    }

    #[test]
    fn partial_announcements_ask_for_more() {
        let bytes = announcement(3);
        for len in 1..ANNOUNCEMENT_LEN {
            assert_eq!(classify(&bytes[..len]), FirstBytes::NeedMore, "{len}");
        }
        assert_eq!(classify(b""), FirstBytes::NeedMore);
    }

    #[test]
    fn anything_else_is_plain_from_its_first_differing_byte() {
        // A normal HTTP/2 client: its first byte already differs.
        assert_eq!(classify(&H2_PREFACE[..1]), FirstBytes::Plain);
        assert_eq!(classify(H2_PREFACE), FirstBytes::Plain);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), FirstBytes::Plain);
        assert_eq!(classify(&[0x16, 0x03, 0x01]), FirstBytes::Plain);
        // A bad magic is found where it goes wrong, without waiting for 8 bytes.
        assert_eq!(classify(b"NXHOMX"), FirstBytes::Plain);
        assert_eq!(classify(b"NXh"), FirstBytes::Plain);
        assert_eq!(classify(b"NX"), FirstBytes::NeedMore);
    }

    #[test]
    fn prefixed_replays_then_reads_on_and_writes_through() {
        block_on(async {
            let mut stream = Prefixed::new(b"abc".to_vec(), Cursor::new(b"defgh".to_vec()));
            let mut two = [0u8; 2];
            stream.read_exact(&mut two).await.unwrap();
            assert_eq!(&two, b"ab");
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"cdefgh");

            let mut empty = Prefixed::new(Vec::new(), Cursor::new(Vec::new()));
            empty.write_all(b"out").await.unwrap();
            empty.flush().await.unwrap();
            assert_eq!(empty.get_ref().get_ref().as_slice(), b"out");
        });
    }
}
