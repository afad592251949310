//! A test origin for read-through caching: a tiny HTTP/1.1 server on
//! `127.0.0.1:0` (std only, one thread per connection, keep-alive and
//! `Connection: close`) that serves `GET /items/{percent-encoded key}` and
//! counts the requests per key.
//!
//! What it answers depends on the key's prefix:
//!
//! | key starts with | answer |
//! |---|---|
//! | `missing` | 404 `no such item` |
//! | `broken` | 500 `origin exploded` |
//! | `slow` | 200 `origin:<key>`, but only after [`OriginConfig::slow_delay`] (longer than the node's `--origin-timeout-ms`) |
//! | anything else | 200 `origin:<key>` after [`OriginConfig::delay`] |
//!
//! Any other path answers 404 and is recorded in [`Origin::unexpected`].
//! Dropping the [`Origin`] stops the accept thread, shuts every open
//! connection down and joins the connection threads.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the origin behaves.
#[derive(Clone, Debug)]
pub struct OriginConfig {
    /// How long a normal key's 200 takes.
    pub delay: Duration,
    /// How long a `slow...` key's 200 takes.
    pub slow_delay: Duration,
}

impl Default for OriginConfig {
    fn default() -> OriginConfig {
        OriginConfig {
            delay: Duration::ZERO,
            slow_delay: Duration::from_secs(3),
        }
    }
}

/// One request the origin received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// The request target as sent (still percent-encoded).
    pub target: String,
    /// The decoded key, for `/items/{key}` targets.
    pub key: Option<String>,
    pub at: Instant,
}

#[derive(Default)]
struct State {
    /// Requests per decoded key.
    counts: Mutex<HashMap<String, usize>>,
    /// Every request in arrival order.
    log: Mutex<Vec<Seen>>,
    /// Requests for anything but `GET /items/{key}`, or undecodable keys.
    unexpected: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    connections: AtomicUsize,
}

/// A running test origin; stops when dropped.
pub struct Origin {
    port: u16,
    config: OriginConfig,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    /// Clones of every accepted stream, to shut them down on drop.
    streams: Arc<Mutex<Vec<TcpStream>>>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Origin {
    /// Starts an origin with the default behaviour (no delay, `slow` keys
    /// take 3 s).
    pub fn start() -> Origin {
        Origin::start_with(OriginConfig::default())
    }

    /// Starts an origin whose normal keys answer after `delay`.
    pub fn with_delay(delay: Duration) -> Origin {
        Origin::start_with(OriginConfig {
            delay,
            ..OriginConfig::default()
        })
    }

    pub fn start_with(config: OriginConfig) -> Origin {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("origin: bind 127.0.0.1:0");
        let port = listener.local_addr().expect("origin: local addr").port();
        let state = Arc::new(State::default());
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let workers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (state, stop, streams, workers, config) = (
                state.clone(),
                stop.clone(),
                streams.clone(),
                workers.clone(),
                config.clone(),
            );
            std::thread::Builder::new()
                .name(format!("origin-{port}"))
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        state.connections.fetch_add(1, Ordering::SeqCst);
                        if let Ok(clone) = stream.try_clone() {
                            streams.lock().unwrap().push(clone);
                        }
                        let (state, stop, config) = (state.clone(), stop.clone(), config.clone());
                        let worker = std::thread::Builder::new()
                            .name(format!("origin-{port}-conn"))
                            .spawn(move || serve_connection(stream, &state, &stop, &config));
                        if let Ok(worker) = worker {
                            workers.lock().unwrap().push(worker);
                        }
                    }
                })
                .expect("origin: spawn accept thread")
        };
        Origin {
            port,
            config,
            state,
            stop,
            streams,
            workers,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/items/{key}`, for `--origin`.
    pub fn url_template(&self) -> String {
        format!("http://127.0.0.1:{}/items/{{key}}", self.port)
    }

    pub fn config(&self) -> &OriginConfig {
        &self.config
    }

    /// How many requests reached the origin for `key`.
    pub fn count(&self, key: &str) -> usize {
        self.state
            .counts
            .lock()
            .unwrap()
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Requests over all keys.
    pub fn total(&self) -> usize {
        self.state.counts.lock().unwrap().values().sum()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.log.lock().unwrap().clone()
    }

    /// Requests that were not `GET /items/{key}`.
    pub fn unexpected(&self) -> Vec<String> {
        self.state.unexpected.lock().unwrap().clone()
    }

    /// Most requests being answered at once since the start (or the last
    /// [`Origin::reset_max_in_flight`]).
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn reset_max_in_flight(&self) {
        self.state.max_in_flight.store(
            self.state.in_flight.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Polls (every 10 ms, up to `limit`) until `key` was requested at least
    /// `n` times; returns the count reached.
    pub fn wait_count(&self, key: &str, n: usize, limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            let c = self.count(key);
            if c >= n || start.elapsed() > limit {
                return c;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(
            &(Ipv4Addr::LOCALHOST, self.port).into(),
            Duration::from_secs(1),
        );
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let workers: Vec<JoinHandle<()>> = self.workers.lock().unwrap().drain(..).collect();
        for w in workers {
            let _ = w.join();
        }
    }
}

// ---------------------------------------------------------------------------
// One connection
// ---------------------------------------------------------------------------

struct Request {
    method: String,
    target: String,
    /// HTTP/1.0 without keep-alive, or `Connection: close`.
    close: bool,
}

/// Reads requests and answers them in order until the peer closes, asks
/// to close, sends garbage, or the origin stops.
fn serve_connection(
    mut stream: TcpStream,
    state: &State,
    stop: &AtomicBool,
    config: &OriginConfig,
) {
    let _ = stream.set_nodelay(true);
    // Short read timeouts so an idle connection notices `stop`.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let req = match read_request(&mut stream, &mut buf, stop) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(msg) => {
                state.unexpected.lock().unwrap().push(msg);
                let _ = respond(&mut stream, 400, "bad request\n", true);
                return;
            }
        };
        let n = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(n, Ordering::SeqCst);
        let (status, body) = answer(&req, state, stop, config);
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if respond(&mut stream, status, &body, req.close).is_err() || req.close {
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
    }
}

/// Decides the answer to one request (sleeping as configured).
fn answer(req: &Request, state: &State, stop: &AtomicBool, config: &OriginConfig) -> (u16, String) {
    let path = req.target.split('?').next().unwrap_or("");
    let key = path
        .strip_prefix("/items/")
        .and_then(|k| percent_decode(k).ok());
    state.log.lock().unwrap().push(Seen {
        method: req.method.clone(),
        target: req.target.clone(),
        key: key.clone(),
        at: Instant::now(),
    });
    let key = match key {
        Some(key) if req.method == "GET" && !key.is_empty() => key,
        _ => {
            state
                .unexpected
                .lock()
                .unwrap()
                .push(format!("{} {}", req.method, req.target));
            return (404, "unknown path\n".into());
        }
    };
    *state.counts.lock().unwrap().entry(key.clone()).or_insert(0) += 1;
    if key.starts_with("missing") {
        (404, "no such item\n".into())
    } else if key.starts_with("broken") {
        (500, "origin exploded\n".into())
    } else if key.starts_with("slow") {
        sleep_unless_stopped(config.slow_delay, stop);
        (200, format!("origin:{key}"))
    } else {
        sleep_unless_stopped(config.delay, stop);
        (200, format!("origin:{key}"))
    }
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

fn respond(stream: &mut TcpStream, status: u16, body: &str, close: bool) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Other",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
        body.len()
    );
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one request head (and skips a `Content-Length` body). `Ok(None)`
/// when the peer closed between requests or the origin is stopping.
fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    stop: &AtomicBool,
) -> Result<Option<Request>, String> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Err("request head over 64 KiB".into());
        }
        match fill(stream, buf, stop)? {
            0 if buf.is_empty() => return Ok(None),
            0 => {
                return Err(format!(
                    "EOF inside a request head: {:?}",
                    String::from_utf8_lossy(buf)
                ))
            }
            _ => {}
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") => {
            (m.to_string(), t.to_string(), v.to_string())
        }
        _ => return Err(format!("bad request line {line:?}")),
    };
    let mut content_length = 0usize;
    let mut connection = String::new();
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            return Err(format!("bad header line {l:?}"));
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => {
                content_length = value
                    .parse()
                    .map_err(|_| format!("bad content-length {value:?}"))?
            }
            "transfer-encoding" => return Err(format!("unsupported transfer-encoding {value:?}")),
            "connection" => connection = value.to_ascii_lowercase(),
            _ => {}
        }
    }
    while buf.len() < content_length {
        if fill(stream, buf, stop)? == 0 {
            return Err("EOF inside a request body".into());
        }
    }
    buf.drain(..content_length);
    let tokens: Vec<&str> = connection.split(',').map(str::trim).collect();
    let close =
        tokens.contains(&"close") || (version == "HTTP/1.0" && !tokens.contains(&"keep-alive"));
    Ok(Some(Request {
        method,
        target,
        close,
    }))
}

/// Reads more bytes; `Ok(0)` on EOF or when stopping.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, stop: &AtomicBool) -> Result<usize, String> {
    let mut chunk = [0u8; 8192];
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(0);
        }
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                ) =>
            {
                return Ok(0)
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// `%XX` decoding of a path segment (no `+` rule: this is a path).
pub fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("key in {s:?} is not UTF-8"))
}
