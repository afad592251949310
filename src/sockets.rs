//! Socket writes that skip the io_uring round trip when the kernel can take
//! the bytes at once.
//!
//! A response or an HTTP/2 frame almost always fits in the socket's send
//! buffer. Sending it with one `send(2)` that never blocks (`MSG_DONTWAIT`)
//! costs the same kernel work as the ring's send, without a submission, a
//! completion and a wake-up of the task that waits for it. What the socket
//! does not take right away goes through the ring as before.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Sends what the socket `fd` takes right now; how much that was (0 when
/// its buffer is full).
pub fn send_now(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    if buf.is_empty() {
        return Ok(0);
    }
    // SAFETY: `buf` is valid for `buf.len()` bytes for the whole call; a
    // closed or wrong fd makes send(2) fail, which is returned.
    let sent = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if sent >= 0 {
        return Ok(sent as usize);
    }
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
        _ => Err(err),
    }
}

/// Writes `out` whole: [`send_now`] first, the ring for the rest. Each
/// ring write that makes progress moves `deadline` an idle timeout on, so
/// a client that reads slowly is served while one that stops reading is
/// closed by the core's reaper (its shutdown(2) fails the blocked write).
///
/// `Ok(true)` when the one direct send took it all (the write did not
/// wait: a clock read just before it is still current), `Ok(false)` when
/// the ring carried the rest.
pub async fn write_out<S: AsyncWrite + AsRawFd + Unpin>(
    stream: &mut S,
    out: &[u8],
    deadline: &Cell<Option<Instant>>,
    idle_timeout: Duration,
) -> io::Result<bool> {
    let mut written = send_now(stream.as_raw_fd(), out)?;
    if written == out.len() {
        return Ok(true);
    }
    while written < out.len() {
        deadline.set(Some(Instant::now() + idle_timeout));
        let n = stream.write(&out[written..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        written += n;
    }
    Ok(false)
}

/// A stream whose writes try [`send_now`] first and use the stream's own
/// (ring) write only for what the socket did not take. A ring write once
/// started is always finished through the ring before the next direct
/// send, so bytes never overtake each other.
#[derive(Debug)]
pub struct SendFirst<T> {
    inner: T,
    /// The inner stream has a write in flight (it answered `Pending`).
    ring_write_pending: bool,
}

impl<T> SendFirst<T> {
    pub fn new(inner: T) -> SendFirst<T> {
        SendFirst {
            inner,
            ring_write_pending: false,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsRawFd> AsRawFd for SendFirst<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendFirst<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + AsRawFd + Unpin> AsyncWrite for SendFirst<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.ring_write_pending {
            match send_now(self.inner.as_raw_fd(), buf) {
                Ok(0) => {}
                Ok(sent) => return Poll::Ready(Ok(sent)),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.ring_write_pending = polled.is_pending();
        polled
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
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn a_send_now_delivers_what_the_socket_takes_and_never_blocks() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(send_now(client.as_raw_fd(), b"hello").unwrap(), 5);
        let mut got = [0u8; 5];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        // Fill the socket's buffers: send_now stops at 0 instead of waiting.
        let chunk = vec![7u8; 1 << 20];
        let mut total = 0;
        loop {
            match send_now(client.as_raw_fd(), &chunk).unwrap() {
                0 => break,
                n => total += n,
            }
            assert!(total < 1 << 30, "the socket never filled up");
        }
        assert!(total > 0);
        drop(server);
        // A socket whose peer is gone reports the error.
        let mut failed = false;
        for _ in 0..100 {
            if send_now(client.as_raw_fd(), b"x").is_err() {
                failed = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(failed, "a send to a closed peer must fail");
    }

    /// A blocking socket seen as an async writer: its writes stand in for
    /// the ring's.
    struct BlockingWriter(TcpStream);

    impl AsRawFd for BlockingWriter {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
    }

    impl AsyncWrite for BlockingWriter {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(std::io::Write::write(&mut self.0, buf))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn write_out_says_whether_the_direct_send_took_everything() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut writer = BlockingWriter(client);
        let deadline = Cell::new(None);
        let idle = Duration::from_secs(5);
        let small =
            futures_lite::future::block_on(write_out(&mut writer, b"+OK\r\n", &deadline, idle));
        assert!(small.unwrap(), "a short reply leaves in one direct send");
        assert_eq!(deadline.get(), None, "no ring write, no deadline moved");
        let mut got = [0u8; 5];
        server.read_exact(&mut got).unwrap();
        // More than the socket buffers hold: the rest goes the slow way
        // while a reader drains the other end.
        let big = vec![b'x'; 32 << 20];
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            server.read_to_end(&mut all).unwrap();
            all.len()
        });
        let result = futures_lite::future::block_on(write_out(&mut writer, &big, &deadline, idle));
        assert!(!result.unwrap(), "a write that waited is reported");
        assert!(deadline.get().is_some(), "the slow path moves the deadline");
        drop(writer);
        assert_eq!(reader.join().unwrap(), big.len());
    }
}
