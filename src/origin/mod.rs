//! The read-through origin: on a cache miss, the key's owner fetches the
//! value from an HTTP origin named by a URL template.
//!
//! This module owns the template ([`OriginTemplate`]: parsed and resolved
//! once, at start-up, so no data core ever blocks on DNS), the response
//! framing (`response`, pure), and the per-core client ([`OriginClient`]):
//!
//! ```text
//! miss on owner core ── OriginClient::fetch(key) ── slot (≤ concurrency) ──
//!     TCP connect ── GET /items/{percent-encoded key} ── 200 body | 404 | error
//! ```
//!
//! Each fetch is one HTTP/1.1 request on its own connection, with
//! `Connection: close`. Misses are rare next to hits, so a connection pool
//! would buy little and cost idle sockets, stale-connection retries and
//! keep-alive framing bugs; a fresh connection per fetch is simple and
//! robust. Everything a fetch does (waiting for a slot, connecting,
//! sending, reading the whole response) is bounded by one timeout.

pub mod response;
mod template;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use glommio::timer::Timer;

use self::response::{parse_response, Bad, Parsed};
pub use self::template::OriginTemplate;

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 16 * 1024;

/// What the origin said about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// 200: the value is the body.
    Found(Bytes),
    /// 404: the origin has no such key.
    NotFound,
}

/// Why a fetch gave neither a value nor a 404. Messages are one line and
/// name the origin's address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("cannot connect to origin {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    /// The connection failed after it was made (reset, write error, ...).
    #[error("connection to origin {addr} failed: {reason}")]
    Io { addr: SocketAddr, reason: String },
    /// The fetch (connect, request and whole response) took over `after`.
    #[error("origin {addr} did not answer within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    /// The timeout passed while waiting for one of this core's fetch slots:
    /// the origin was never asked.
    #[error("no free fetch slot for origin {addr} within {after:?} (too many fetches at once)")]
    Busy { addr: SocketAddr, after: Duration },
    /// A status other than 200 and 404.
    #[error("origin {addr} answered HTTP {status}")]
    Status { addr: SocketAddr, status: u16 },
    #[error("origin {addr} sent a value over the {limit}-byte limit")]
    TooLarge { addr: SocketAddr, limit: u64 },
    /// Not a well-formed HTTP/1.x response.
    #[error("bad response from origin {addr}: {reason}")]
    Protocol { addr: SocketAddr, reason: String },
}

impl OriginError {
    /// Whether the fetch ran out of time ([`OriginError::Timeout`], or
    /// [`OriginError::Busy`]: out of time before it could start).
    pub fn is_timeout(&self) -> bool {
        matches!(self, OriginError::Timeout { .. } | OriginError::Busy { .. })
    }
}

/// One data core's client for the origin. Not `Send`: each core makes its
/// own from a cloned [`OriginTemplate`].
#[derive(Debug)]
pub struct OriginClient {
    template: OriginTemplate,
    timeout: Duration,
    max_value_bytes: u64,
    /// One unit per fetch in flight.
    slots: Semaphore,
}

impl OriginClient {
    /// `concurrency`: most fetches this core runs at once (0 is taken as 1);
    /// further fetches wait for a slot, and the wait counts against
    /// `timeout`. Values over `max_value_bytes` are refused.
    pub fn new(
        template: OriginTemplate,
        timeout: Duration,
        concurrency: usize,
        max_value_bytes: u64,
    ) -> OriginClient {
        OriginClient {
            template,
            timeout,
            max_value_bytes,
            slots: Semaphore::new(concurrency.max(1) as u64),
        }
    }

    /// GETs the key's URL: 200 is `Found(body)`, 404 `NotFound`, any other
    /// status a [`OriginError::Status`]. A body over `max_value_bytes` is
    /// [`OriginError::TooLarge`] (decided from Content-Length before reading
    /// it, when there is one). The whole fetch, slot wait included, is
    /// bounded by the timeout.
    pub async fn fetch(&self, key: &[u8]) -> Result<Fetched, OriginError> {
        let addr = self.template.addr();
        let started = std::cell::Cell::new(false);
        let work = async {
            let _slot = {
                let _rewake = Rewake(&self.slots);
                self.slots
                    .acquire_permit(1)
                    .await
                    // Only `close` fails this, and nothing closes `slots`.
                    .map_err(|_| OriginError::Busy {
                        addr,
                        after: self.timeout,
                    })?
            };
            started.set(true);
            self.exchange(key).await
        };
        let deadline = async {
            Timer::new(self.timeout).await;
            let after = self.timeout;
            Err(if started.get() {
                OriginError::Timeout { addr, after }
            } else {
                OriginError::Busy { addr, after }
            })
        };
        // When the deadline wins, `work` is dropped: its connection closes
        // and its slot is released.
        future::or(work, deadline).await
    }

    /// One request on a fresh connection, read to the end of the response.
    async fn exchange(&self, key: &[u8]) -> Result<Fetched, OriginError> {
        let addr = self.template.addr();
        let io = |e: std::io::Error| OriginError::Io {
            addr,
            reason: e.to_string(),
        };
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| OriginError::Connect {
                addr,
                reason: std::io::Error::from(e).to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: nexuscache\r\n\r\n",
            self.template.target_for(key),
            self.template.authority(),
        );
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        stream.flush().await.map_err(io)?;

        let bad = |bad: Bad| match bad {
            Bad::Status(status) => OriginError::Status { addr, status },
            Bad::TooLarge => OriginError::TooLarge {
                addr,
                limit: self.max_value_bytes,
            },
            Bad::Protocol(reason) => OriginError::Protocol { addr, reason },
        };
        let mut buf: Vec<u8> = Vec::with_capacity(READ_SIZE);
        loop {
            let filled = buf.len();
            buf.resize(filled + READ_SIZE, 0);
            let n = match stream.read(&mut buf[filled..]).await {
                Ok(n) => n,
                Err(e) => return Err(io(e)),
            };
            buf.truncate(filled + n);
            let eof = n == 0;
            match parse_response(&buf, eof, self.max_value_bytes).map_err(bad)? {
                Parsed::Found(body) => return Ok(Fetched::Found(body.into_bytes(&buf))),
                Parsed::NotFound => return Ok(Fetched::NotFound),
                Parsed::Incomplete if !eof => {}
                // `parse_response` never says Incomplete at EOF; never spin.
                Parsed::Incomplete => {
                    return Err(OriginError::Protocol {
                        addr,
                        reason: "connection closed before the response ended".into(),
                    })
                }
            }
        }
    }
}

/// Dropped when a slot wait ends, however it ends. glommio's semaphore
/// hands a released slot to the first waiter by waking it and unlinking it
/// from the queue, but only takes the unit when that waiter is polled
/// again: a waiter cancelled in between (its fetch dropped by the caller)
/// would strand the slot while the others sleep on. `signal(0)` re-runs the
/// hand-over, waking whoever can go now; with no free slot it does nothing.
struct Rewake<'a>(&'a Semaphore);

impl Drop for Rewake<'_> {
    fn drop(&mut self) {
        self.0.signal(0);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::rc::Rc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};
    use std::thread;
    use std::time::Instant;

    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;

    fn run<F: std::future::Future>(test: impl FnOnce() -> F) -> F::Output {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(crate::runtime::platform::IO_MEMORY)
            .make()
            .expect("glommio executor (needs io_uring and `ulimit -l` >= 512 KiB)")
            .run(test())
    }

    /// Reads one request head; returns it as text.
    fn read_request(stream: &mut StdStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    /// An origin on 127.0.0.1 that serves `connections` connections, one
    /// thread each, with `handle(connection index, stream)`; each request
    /// head is sent on the returned channel.
    fn origin<H>(connections: usize, handle: H) -> (SocketAddr, mpsc::Receiver<String>)
    where
        H: Fn(usize, &mut StdStream) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (heads, received) = mpsc::channel();
        let handle = Arc::new(handle);
        thread::spawn(move || {
            for i in 0..connections {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let (heads, handle) = (heads.clone(), handle.clone());
                thread::spawn(move || {
                    let _ = heads.send(read_request(&mut stream));
                    handle(i, &mut stream);
                });
            }
        });
        (addr, received)
    }

    fn client(addr: SocketAddr, path: &str, timeout_ms: u64, concurrency: usize) -> OriginClient {
        let template = OriginTemplate::parse(&format!("http://{addr}{path}")).unwrap();
        OriginClient::new(
            template,
            Duration::from_millis(timeout_ms),
            concurrency,
            1024,
        )
    }

    #[test]
    fn fetches_a_value_and_sends_a_proper_request() {
        let (addr, heads) = origin(1, |_, s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nvalue");
        });
        let got = run(|| async move {
            client(addr, "/items/{key}?v=1", 2000, 4)
                .fetch(b"a/b c\xff")
                .await
        });
        assert_eq!(got, Ok(Fetched::Found(Bytes::from_static(b"value"))));
        let head = heads.recv().unwrap();
        assert_eq!(
            head,
            format!(
                "GET /items/a%2Fb%20c%FF?v=1 HTTP/1.1\r\nHost: {addr}\r\n\
                 Connection: close\r\nUser-Agent: nexuscache\r\n\r\n"
            )
        );
    }

    #[test]
    fn not_found_errors_and_framings() {
        let answers: [&[u8]; 5] = [
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nto the end",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1025\r\n\r\n",
        ];
        let (addr, _heads) = origin(answers.len() + 1, move |i, s| match answers.get(i) {
            Some(answer) => {
                let _ = s.write_all(answer);
            }
            None => {
                let _ = s.write_all(b"SPDY/9 nonsense\r\n\r\n");
            }
        });
        let refused = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        run(|| async move {
            let client = client(addr, "/{key}", 2000, 1);
            assert_eq!(client.fetch(b"k").await, Ok(Fetched::NotFound));
            let err = client.fetch(b"k").await.unwrap_err();
            assert_eq!(err, OriginError::Status { addr, status: 500 });
            assert_eq!(err.to_string(), format!("origin {addr} answered HTTP 500"));
            assert!(!err.is_timeout());
            assert_eq!(
                client.fetch(b"k").await,
                Ok(Fetched::Found(Bytes::from_static(b"abcde")))
            );
            assert_eq!(
                client.fetch(b"k").await,
                Ok(Fetched::Found(Bytes::from_static(b"to the end")))
            );
            assert_eq!(
                client.fetch(b"k").await,
                Err(OriginError::TooLarge { addr, limit: 1024 })
            );
            let err = client.fetch(b"k").await.unwrap_err();
            assert!(matches!(err, OriginError::Protocol { .. }), "{err:?}");
            assert!(err.to_string().contains(&addr.to_string()), "{err}");

            let err = self::client(refused, "/{key}", 2000, 1)
                .fetch(b"k")
                .await
                .unwrap_err();
            assert!(matches!(err, OriginError::Connect { .. }), "{err:?}");
            assert!(err
                .to_string()
                .starts_with(&format!("cannot connect to origin {refused}: ")));
        });
    }

    #[test]
    fn a_slow_origin_times_out_promptly() {
        let (release, hold) = mpsc::channel::<()>();
        let hold = std::sync::Mutex::new(hold);
        let (addr, _heads) = origin(1, move |_, s| {
            // Answer only after the test is over (or in 10 s).
            let _ = hold.lock().map(|h| h.recv_timeout(Duration::from_secs(10)));
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
        });
        let (got, took) = run(|| async move {
            let start = Instant::now();
            let got = client(addr, "/{key}", 200, 1).fetch(b"slow").await;
            (got, start.elapsed())
        });
        drop(release);
        let err = got.unwrap_err();
        assert_eq!(
            err,
            OriginError::Timeout {
                addr,
                after: Duration::from_millis(200)
            }
        );
        assert!(err.is_timeout());
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }

    #[test]
    fn concurrency_one_makes_the_second_fetch_wait() {
        let open = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (o, m) = (open.clone(), most.clone());
        let (addr, _heads) = origin(2, move |i, s| {
            let now = o.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(150));
            // Count the connection as closed before the client can see the
            // answer and start the next one.
            o.fetch_sub(1, Ordering::SeqCst);
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n{i}");
        });
        let (first, second, took) = run(|| async move {
            let client = client(addr, "/{key}", 3000, 1);
            let start = Instant::now();
            let timed = |key: &'static [u8]| {
                let client = &client;
                async move {
                    let got = client.fetch(key).await;
                    (got, start.elapsed())
                }
            };
            let (first, second) = future::zip(timed(b"a"), timed(b"b")).await;
            (first, second, start.elapsed())
        });
        assert_eq!(most.load(Ordering::SeqCst), 1);
        let (first, first_at) = first;
        let (second, second_at) = second;
        assert_eq!(first, Ok(Fetched::Found(Bytes::from_static(b"0"))));
        assert_eq!(second, Ok(Fetched::Found(Bytes::from_static(b"1"))));
        assert!(first_at >= Duration::from_millis(150), "{first_at:?}");
        assert!(
            second_at >= first_at + Duration::from_millis(150),
            "{second_at:?}"
        );
        assert!(took < Duration::from_millis(2500), "{took:?}");
    }

    #[test]
    fn waiting_past_the_timeout_for_a_slot_is_busy() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let err = run(|| async move {
            let client = client(addr, "/{key}", 100, 1);
            let _taken = client.slots.acquire_permit(1).await.unwrap();
            client.fetch(b"k").await.unwrap_err()
        });
        assert_eq!(
            err,
            OriginError::Busy {
                addr,
                after: Duration::from_millis(100)
            }
        );
        assert!(err.is_timeout());
        drop(listener);
    }

    #[test]
    fn a_cancelled_waiter_does_not_strand_the_slot() {
        let (addr, _heads) = origin(1, |_, s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        });
        let (got, took) = run(|| async move {
            let client = Rc::new(client(addr, "/{key}", 3000, 1));
            let taken = client.slots.acquire_permit(1).await.unwrap();
            let start = Instant::now();
            let spawn = |key: &'static [u8]| {
                let client = client.clone();
                glommio::spawn_local(async move { client.fetch(key).await })
            };
            let cancelled = spawn(b"cancelled");
            let waiting = spawn(b"waiting");
            // Let both queue up for the slot.
            glommio::timer::sleep(Duration::from_millis(20)).await;
            // Hands the slot to `cancelled`, which is cancelled before it
            // can take it.
            drop(taken);
            drop(cancelled);
            let got = waiting.await;
            (got, start.elapsed())
        });
        assert_eq!(got, Ok(Fetched::Found(Bytes::from_static(b"ok"))));
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }
}
