//! `h2` reads and writes through the `tokio::io` traits; glommio's sockets
//! implement the `futures-io` ones. [`TokioIo`] bridges the two (what
//! `tokio-util`'s `compat` does, without the dependency). It needs no tokio
//! runtime: only the traits.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use tokio::io::ReadBuf;

/// A `futures-io` stream seen through the `tokio::io` traits.
#[derive(Debug)]
pub struct TokioIo<T>(pub T);

impl<T> TokioIo<T> {
    pub fn into_inner(self) -> T {
        self.0
    }

    pub fn get_ref(&self) -> &T {
        &self.0
    }
}

impl<T: AsyncRead + Unpin> tokio::io::AsyncRead for TokioIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // futures-io reads into initialised memory only.
        let unfilled = buf.initialize_unfilled();
        let n = ready!(Pin::new(&mut self.0).poll_read(cx, unfilled))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> tokio::io::AsyncWrite for TokioIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use futures_lite::future::block_on;
    use futures_lite::io::Cursor;

    use super::*;

    #[test]
    fn reads_and_writes_pass_through() {
        block_on(async {
            let mut io = TokioIo(Cursor::new(b"hello world".to_vec()));
            let mut storage = [0u8; 5];
            let mut buf = ReadBuf::new(&mut storage);
            poll_fn(|cx| tokio::io::AsyncRead::poll_read(Pin::new(&mut io), cx, &mut buf))
                .await
                .unwrap();
            assert_eq!(buf.filled(), b"hello");

            let mut io = TokioIo(Cursor::new(Vec::new()));
            let n = poll_fn(|cx| tokio::io::AsyncWrite::poll_write(Pin::new(&mut io), cx, b"abc"))
                .await
                .unwrap();
            assert_eq!(n, 3);
            poll_fn(|cx| tokio::io::AsyncWrite::poll_flush(Pin::new(&mut io), cx))
                .await
                .unwrap();
            poll_fn(|cx| tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut io), cx))
                .await
                .unwrap();
            assert_eq!(io.into_inner().into_inner(), b"abc");
        });
    }

    #[test]
    fn end_of_stream_reads_nothing() {
        block_on(async {
            let mut io = TokioIo(Cursor::new(Vec::new()));
            let mut storage = [0u8; 4];
            let mut buf = ReadBuf::new(&mut storage);
            poll_fn(|cx| tokio::io::AsyncRead::poll_read(Pin::new(&mut io), cx, &mut buf))
                .await
                .unwrap();
            assert!(buf.filled().is_empty());
        });
    }
}
