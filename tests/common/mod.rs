//! Shared harness for the integration tests: start the real `nexuscache`
//! binary as a child process, talk raw HTTP/1.1 to it, read its metrics.
//!
//! Only `std` is used. The HTTP client is deliberately tiny and
//! byte-oriented so tests can send malformed, pipelined or partial requests.
#![allow(dead_code)]

mod ports;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_nexuscache");
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
pub const READY_DEADLINE: Duration = Duration::from_secs(20);
pub const POLL: Duration = Duration::from_millis(20);

/// Raises RLIMIT_MEMLOCK as far as allowed (glommio locks >= 512 KiB per
/// executor), then execs the binary so the PID we hold is the server's.
const WRAPPER: &str = "ulimit -l unlimited 2>/dev/null || ulimit -l \"$(ulimit -H -l)\" 2>/dev/null || true; exec \"$0\" \"$@\"";

/// Kills the server if the test process dies without running `Drop`
/// (e.g. nodes kept in a `static`): its stdin is a pipe from us, and when
/// the test process exits the pipe closes, `read` returns, and it kills.
const WATCHDOG: &str = "read _unused; kill -9 \"$1\" 2>/dev/null; exit 0";

// ---------------------------------------------------------------------------
// Ports and temp files
// ---------------------------------------------------------------------------

pub use ports::free_port;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh path in a per-process temp directory.
/// utime + stime of `pid` in clock ticks (1/100 s on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

pub fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nexuscache-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    dir.join(format!("{n}-{name}"))
}

// ---------------------------------------------------------------------------
// Node
// ---------------------------------------------------------------------------

/// What to spawn for a given port (so a retry with a new port can rebuild
/// the arguments, environment and config file).
#[derive(Default, Clone, Debug)]
pub struct Spec {
    /// Arguments after `nexuscache`, e.g. ["serve", "--http-port", "1234"].
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
}

impl Spec {
    /// `serve --http-port P --cores 2 <extra>`
    pub fn serve(port: u16, extra: &[&str]) -> Spec {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--http-port".into(),
            port.to_string(),
            "--cores".into(),
            "2".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Spec { args, envs: vec![] }
    }
}

pub struct Node {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
    watchdog: Option<(Child, ChildStdin)>,
    exited: Option<ExitStatus>,
}

#[derive(Debug)]
pub enum StartError {
    /// The server exited before becoming ready and its log mentions that
    /// the address was in use: retry with another port.
    PortInUse(String),
    Other(String),
}

/// Spawns the binary (through the ulimit wrapper) with stdout+stderr going
/// to a log file. Does not wait for readiness.
pub fn spawn(port: u16, spec: &Spec) -> Node {
    let log = temp_path(&format!("node-{port}.log"));
    let out = File::create(&log).expect("create log file");
    let err = out.try_clone().unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(WRAPPER).arg(BIN).args(&spec.args);
    // Never let the developer's environment leak into the node's config.
    for (k, _) in std::env::vars() {
        if k.starts_with("NEXUSCACHE_") {
            cmd.env_remove(k);
        }
    }
    if std::env::var("RUST_LOG")
        .map(|v| v.trim().is_empty())
        .unwrap_or(true)
    {
        cmd.env("RUST_LOG", "info");
    }
    // Plain log text in the dump.
    cmd.env("NO_COLOR", "1");
    cmd.envs(spec.envs.iter().map(|(k, v)| (k, v)));
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let child = cmd.spawn().expect("spawn nexuscache via sh");
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("watchdog")
        .arg(child.id().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
        .map(|mut w| {
            let stdin = w.stdin.take().unwrap();
            (w, stdin)
        });
    Node {
        port,
        log,
        child,
        watchdog,
        exited: None,
    }
}

impl Node {
    /// `serve --http-port P --cores 2 <extra>`, ready, with port retries.
    pub fn start(extra: &[&str]) -> Node {
        Node::start_with(|port| Spec::serve(port, extra))
    }

    /// Spawns `make(port)` and waits for readiness; retries with a new port
    /// when the server reports that the address was in use.
    pub fn start_with(mut make: impl FnMut(u16) -> Spec) -> Node {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut node = spawn(port, &make(port));
            match node.wait_ready(READY_DEADLINE) {
                Ok(()) => return node,
                Err(StartError::PortInUse(log)) => last = log,
                Err(StartError::Other(msg)) => panic!("{msg}"),
            }
        }
        panic!("node could not bind a port in 5 attempts; last log:\n{last}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("<cannot read log: {e}>"))
    }

    /// Polls `GET /readyz` on fresh connections until `200 ready\n`.
    pub fn wait_ready(&mut self, deadline: Duration) -> Result<(), StartError> {
        let start = Instant::now();
        let mut last_err;
        loop {
            if let Some(status) = self.try_exit_status() {
                let log = self.log_text();
                let l = log.to_lowercase();
                if l.contains("in use") || l.contains("eaddrinuse") {
                    return Err(StartError::PortInUse(log));
                }
                return Err(StartError::Other(format!(
                    "nexuscache exited with {status} before becoming ready on port {}; log:\n{log}",
                    self.port
                )));
            }
            match Conn::try_connect(self.port) {
                Ok(mut c) => {
                    c.send(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
                    match c.try_read_response() {
                        Ok(r) if r.status == 200 && r.body == b"ready\n" => return Ok(()),
                        Ok(r) => {
                            last_err = format!("readyz answered {} {:?}", r.status, r.body_str())
                        }
                        Err(e) => last_err = format!("readyz read: {e:?}"),
                    }
                }
                Err(e) => last_err = format!("connect: {e}"),
            }
            if start.elapsed() > deadline {
                return Err(StartError::Other(format!(
                    "node on port {} not ready after {:?} (last: {last_err}); log:\n{}",
                    self.port,
                    deadline,
                    self.log_text()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exited = Some(s);
            }
        }
        self.exited
    }

    /// Polls for the process to exit, up to `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_exit_status() {
                return Some(s);
            }
            if start.elapsed() > deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends a signal by PID with the `kill` utility (e.g. "TERM", "INT").
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.pid());
    }

    pub fn conn(&self) -> Conn {
        Conn::connect(self.port)
    }

    /// One request on a fresh connection.
    pub fn req(&self, method: &str, target: &str, body: &[u8]) -> Response {
        self.conn().request(method, target, &[], body)
    }

    pub fn get(&self, target: &str) -> Response {
        self.req("GET", target, b"")
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics_with(&[])
    }

    /// `GET /metrics` with extra headers (e.g. `Authorization`).
    pub fn metrics_with(&self, headers: &[(&str, &str)]) -> Metrics {
        let r = self.conn().request("GET", "/metrics", headers, b"");
        assert_eq!(r.status, 200, "GET /metrics: {}", r.describe());
        Metrics::parse(&r.body_str())
    }

    /// A guard that prints this node's log if the current test panics
    /// (for nodes shared through a `static`, which are never dropped).
    pub fn log_on_panic(&self) -> LogOnPanic {
        LogOnPanic {
            log: self.log.clone(),
            port: self.port,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== nexuscache log (port {}, pid {}) =====\n{}\n===== end of log =====",
                self.port,
                self.pid(),
                self.log_text()
            );
        }
        if self.try_exit_status().is_none() {
            let _ = self.child.kill(); // SIGKILL to the PID we spawned (exec'd binary)
            let _ = self.child.wait();
        }
        if let Some((mut w, stdin)) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
            drop(stdin);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

pub struct LogOnPanic {
    log: PathBuf,
    port: u16,
}

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!(
                "===== nexuscache log (port {}) =====\n{text}\n===== end of log =====",
                self.port
            );
        }
    }
}

/// A node shared by all tests of one file:
/// `static N: OnceLock<Node> = OnceLock::new(); shared(&N, &["--flag", "v"])`.
/// Never dropped: the watchdog kills it when the test process exits.
pub fn shared(cell: &'static OnceLock<Node>, extra: &[&str]) -> &'static Node {
    cell.get_or_init(|| Node::start(extra))
}

// ---------------------------------------------------------------------------
// HTTP/1.1 client
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Lower-cased names, values trimmed, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body was delimited by the server closing the connection.
    pub read_to_eof: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    /// `Connection: close` present.
    pub fn says_close(&self) -> bool {
        self.header_all("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    pub fn describe(&self) -> String {
        format!(
            "{} {} {} headers={:?} body={:?}",
            self.version,
            self.status,
            self.reason,
            self.headers,
            self.body_str()
        )
    }
}

#[derive(Debug)]
pub enum ReadError {
    /// The server closed the connection before sending any byte.
    Eof,
    /// Closed in the middle of a response.
    Truncated(String),
    Io(io::ErrorKind, String),
    Malformed(String),
}

pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

fn io_is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    pub fn try_connect(port: u16) -> io::Result<Conn> {
        Conn::try_connect_ip(Ipv4Addr::LOCALHOST, port)
    }

    pub fn try_connect_ip(ip: Ipv4Addr, port: u16) -> io::Result<Conn> {
        let addr = SocketAddr::from((ip, port));
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn connect(port: u16) -> Conn {
        Conn::try_connect(port).unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
    }

    pub fn set_read_timeout(&self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).unwrap();
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream
            .write_all(raw)
            .unwrap_or_else(|e| panic!("write {} bytes: {e}", raw.len()));
    }

    pub fn try_send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.stream.write_all(raw)
    }

    /// Sends one request. POST and PUT always carry a Content-Length.
    pub fn send_request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let raw = build_request(method, target, headers, body);
        self.send(&raw);
    }

    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send_request(method, target, headers, body);
        self.read_response()
    }

    pub fn get(&mut self, target: &str) -> Response {
        self.request("GET", target, &[], b"")
    }

    pub fn read_response(&mut self) -> Response {
        self.try_read_response().unwrap_or_else(|e| {
            panic!(
                "reading response: {e:?} (buffered: {:?})",
                String::from_utf8_lossy(&self.buf)
            )
        })
    }

    /// Reads `n` responses (pipelining).
    pub fn read_responses(&mut self, n: usize) -> Vec<Response> {
        (0..n)
            .map(|i| {
                self.try_read_response()
                    .unwrap_or_else(|e| panic!("reading pipelined response #{i} of {n}: {e:?}"))
            })
            .collect()
    }

    /// Reads more bytes into the buffer; Ok(0) on EOF.
    fn fill(&mut self) -> Result<usize, ReadError> {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e) => Err(ReadError::Io(e.kind(), e.to_string())),
        }
    }

    fn need(&mut self, n: usize) -> Result<(), ReadError> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(ReadError::Truncated(format!(
                    "EOF with {} of {n} bytes buffered",
                    self.buf.len()
                )));
            }
        }
        Ok(())
    }

    fn read_line(&mut self) -> Result<Vec<u8>, ReadError> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(ReadError::Truncated(
                    "EOF inside a chunked body line".into(),
                ));
            }
        }
    }

    pub fn try_read_response(&mut self) -> Result<Response, ReadError> {
        // Head.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            let n = self.fill()?;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    ReadError::Eof
                } else {
                    ReadError::Truncated(format!(
                        "EOF inside head: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ))
                });
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut resp = parse_response_head(&head)?;
        if (100..200).contains(&resp.status) || resp.status == 204 || resp.status == 304 {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .map(|v| v.to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false);
        if chunked {
            loop {
                let line = self.read_line()?;
                let line = String::from_utf8_lossy(&line).into_owned();
                let size_str = line.split(';').next().unwrap().trim();
                let size = usize::from_str_radix(size_str, 16)
                    .map_err(|_| ReadError::Malformed(format!("chunk size {line:?}")))?;
                if size == 0 {
                    // trailers until empty line
                    loop {
                        if self.read_line()?.is_empty() {
                            break;
                        }
                    }
                    break;
                }
                self.need(size + 2)?;
                resp.body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
            }
        } else if let Some(cl) = resp.header("content-length") {
            let cl: usize = cl
                .parse()
                .map_err(|_| ReadError::Malformed(format!("content-length {cl:?}")))?;
            self.need(cl)?;
            resp.body = self.buf[..cl].to_vec();
            self.buf.drain(..cl);
        } else {
            // Delimited by close.
            loop {
                match self.fill() {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            resp.body = std::mem::take(&mut self.buf);
            resp.read_to_eof = true;
        }
        Ok(resp)
    }

    /// Reads the response to a `HEAD`: its head only, whatever its
    /// Content-Length says (RFC 9110 §9.3.2); `body` stays empty, so any body
    /// bytes the server wrongly sent are read as the next response.
    pub fn read_head_response(&mut self) -> Response {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            match self.fill() {
                Ok(0) => panic!(
                    "EOF inside a HEAD response: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(_) => {}
                Err(e) => panic!("reading a HEAD response: {e:?}"),
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        parse_response_head(&head).expect("parse HEAD response head")
    }

    /// Bytes the server sent that no response read so far consumed,
    /// waiting up to `wait` for more.
    pub fn unread_bytes(&mut self, wait: Duration) -> Vec<u8> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let _ = self.fill();
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        std::mem::take(&mut self.buf)
    }

    /// Waits (up to `timeout`) for the server to close: Ok(extra bytes
    /// received before EOF/reset), Err if it stays open.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<Vec<u8>, String> {
        let start = Instant::now();
        let mut extra = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 4096];
        loop {
            let left = timeout
                .checked_sub(start.elapsed())
                .unwrap_or(Duration::from_millis(1));
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(extra),
                Ok(n) => extra.extend_from_slice(&chunk[..n]),
                Err(e) if io_is_reset(&e) => return Ok(extra),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(format!(
                        "connection still open after {:?} (received meanwhile: {:?})",
                        start.elapsed(),
                        String::from_utf8_lossy(&extra)
                    ))
                }
                Err(e) => return Err(format!("read error {e}")),
            }
        }
    }

    /// Asserts the server closes the connection without sending more.
    pub fn assert_closed(&mut self, what: &str) {
        match self.wait_closed(IO_TIMEOUT) {
            Ok(extra) => assert!(
                extra.is_empty(),
                "{what}: server sent unexpected bytes before closing: {:?}",
                String::from_utf8_lossy(&extra)
            ),
            Err(e) => panic!("{what}: expected the server to close the connection: {e}"),
        }
    }

    /// Asserts the connection is still usable: GET /healthz -> 200 ok.
    pub fn assert_usable(&mut self, what: &str) {
        self.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        match self.try_read_response() {
            Ok(r) => assert!(
                r.status == 200 && r.body == b"ok\n",
                "{what}: connection should still work, but /healthz answered {}",
                r.describe()
            ),
            Err(e) => panic!("{what}: connection should still work, but /healthz failed: {e:?}"),
        }
    }
}

/// Status line and headers of a response head (without the blank line).
fn parse_response_head(head: &str) -> Result<Response, ReadError> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("").to_string();
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Malformed(format!("status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ReadError::Malformed(format!("status line {status_line:?}")))?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for l in lines {
        let (n, v) = l
            .split_once(':')
            .ok_or_else(|| ReadError::Malformed(format!("header line {l:?}")))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(Response {
        version,
        status,
        reason,
        headers,
        body: Vec::new(),
        read_to_eof: false,
    })
}

pub fn build_request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    let has_cl = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    let has_te = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    for (n, v) in headers {
        raw.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if !has_cl && !has_te && (!body.is_empty() || method == "POST" || method == "PUT") {
        raw.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    raw
}

/// A form POST with `Content-Type: application/x-www-form-urlencoded`.
pub fn form_request(target: &str, form: &str) -> Vec<u8> {
    build_request(
        "POST",
        target,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
}

// ---------------------------------------------------------------------------
// Encoding helpers
// ---------------------------------------------------------------------------

/// Percent-encodes every byte except RFC 3986 unreserved characters.
pub fn pct(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// `k1=v1&k2=v2` with both sides percent-encoded.
pub fn form(pairs: &[(&str, &[u8])]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k.as_bytes()), pct(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn all_bytes() -> Vec<u8> {
    (0u8..=255).collect()
}

/// A unique key prefix for a test (shared nodes serve parallel tests).
pub fn uniq(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// Asserts an error response: status, text/plain, one non-empty line ending in "\n".
pub fn assert_error(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: wrong status: {}", r.describe());
    assert_one_line(r, what);
}

pub fn assert_one_line(r: &Response, what: &str) {
    assert!(
        r.content_type().starts_with("text/plain"),
        "{what}: error content-type should be text/plain: {}",
        r.describe()
    );
    let b = &r.body;
    assert!(
        b.len() >= 2 && b.ends_with(b"\n") && !b[..b.len() - 1].contains(&b'\n'),
        "{what}: error body must be exactly one non-empty line ending in \\n: {}",
        r.describe()
    );
}

// ---------------------------------------------------------------------------
// Prometheus text format
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    /// family name -> TYPE
    pub types: HashMap<String, String>,
    pub helps: HashMap<String, String>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut m = Metrics {
            text: text.to_string(),
            ..Default::default()
        };
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.splitn(2, ' ');
                let n = it.next().unwrap().to_string();
                m.types
                    .insert(n, it.next().unwrap_or("").trim().to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let mut it = rest.splitn(2, ' ');
                let n = it.next().unwrap().to_string();
                m.helps.insert(n, it.next().unwrap_or("").to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            m.samples.push(
                parse_sample(line).unwrap_or_else(|| panic!("unparsable metrics line {line:?}")),
            );
        }
        m
    }

    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(|x| x == v).unwrap_or(false))
            })
            .collect()
    }

    /// Sum over all samples of `name` matching `labels` (0 if none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).iter().map(|s| s.value).sum()
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i..]),
        None => {
            let i = line.find(' ')?;
            (&line[..i], &line[i..])
        }
    };
    let mut labels = BTreeMap::new();
    let mut rest = rest;
    if rest.starts_with('{') {
        let bytes: Vec<char> = rest.chars().collect();
        let mut i = 1;
        loop {
            while i < bytes.len() && (bytes[i] == ',' || bytes[i] == ' ') {
                i += 1;
            }
            if i >= bytes.len() {
                return None;
            }
            if bytes[i] == '}' {
                i += 1;
                break;
            }
            let mut key = String::new();
            while i < bytes.len() && bytes[i] != '=' {
                key.push(bytes[i]);
                i += 1;
            }
            i += 1; // '='
            if bytes.get(i) != Some(&'"') {
                return None;
            }
            i += 1;
            let mut val = String::new();
            while i < bytes.len() && bytes[i] != '"' {
                if bytes[i] == '\\' {
                    i += 1;
                    match bytes.get(i)? {
                        'n' => val.push('\n'),
                        c => val.push(*c),
                    }
                } else {
                    val.push(bytes[i]);
                }
                i += 1;
            }
            i += 1; // closing quote
            labels.insert(key.trim().to_string(), val);
        }
        let consumed: usize = bytes[..i].iter().map(|c| c.len_utf8()).sum();
        rest = &rest[consumed..];
    }
    let value_str = rest.split_whitespace().next()?;
    let value = match value_str {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.trim().to_string(),
        labels,
        value,
    })
}

/// Resident memory of a process in KiB (`VmRSS` in /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Reads a whole file as string (helper for config tests).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Runs the binary to completion (through the ulimit wrapper), with a
/// deadline; returns (status, stdout, stderr). Kills it past the deadline.
pub fn run_bin(
    args: &[&str],
    envs: &[(&str, &str)],
    deadline: Duration,
) -> (ExitStatus, String, String) {
    let out_p = temp_path("run.stdout");
    let err_p = temp_path("run.stderr");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(WRAPPER).arg(BIN).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("NEXUSCACHE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().copied());
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_p).unwrap())
        .stderr(File::create(&err_p).unwrap());
    let mut child = cmd.spawn().expect("spawn nexuscache");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`nexuscache {}` did not exit within {deadline:?}; stdout:\n{}\nstderr:\n{}",
                args.join(" "),
                read(&out_p),
                read(&err_p)
            );
        }
        std::thread::sleep(POLL);
    };
    (status, read(&out_p), read(&err_p))
}

// ---------------------------------------------------------------------------
// Python client scripts
// ---------------------------------------------------------------------------

/// Exit code of a Python test script whose PyPI packages could not be
/// installed (`tests/pyvenv.py`).
pub const PYTHON_DEPS_FAILED: i32 = 3;

/// `<target>/<name>`: a virtual environment kept between runs (the
/// scripts' default location when the target directory is the usual one).
pub fn python_venv(name: &str) -> PathBuf {
    let target_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    target_tmp.parent().unwrap_or(target_tmp).join(name)
}

/// Runs `python3 tests/<script> <args>` with its output in a temp file,
/// killed after `deadline` (the test then fails with the output so far);
/// its exit status and output.
pub fn run_python_script(
    script: &str,
    args: &[String],
    deadline: Duration,
) -> (ExitStatus, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = temp_path(&format!("{script}.out"));
    let log = File::create(&out).expect("create output file");
    let mut child = Command::new("python3")
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup output file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 for {script} (Debian: python3 python3-venv): {e}")
        });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python3") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{script} did not finish within {deadline:?}; output:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&out).unwrap_or_default())
}
