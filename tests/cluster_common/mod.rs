//! Multi-node harness for the cluster tests: real `nexuscache` processes
//! (through `tests/common`), each with a fixed name and a known HTTP and
//! gRPC port, discovering each other through a real etcd
//! (`tests/etcd_common`) or a static `--peers` list.
//!
//! A node can be killed with SIGKILL and restarted on the same name and
//! ports. Killed instances are kept until the test ends, so that every
//! instance's log is printed if the test fails.
//!
//! Requests go to the nodes over plain HTTP/1.1 with bounded socket
//! timeouts and never panic on transport errors (the tests decide what a
//! failure means); waiting is always polling against a deadline.
//!
//! Every node gets the same `--cluster-secret` ([`test_cluster_secret`],
//! generated once per test process), so every cluster test also proves
//! that the peer client sends it: a node that did not would have its
//! forwarded calls refused. [`ClusterNode::set_cluster_secret`] starts a
//! node without it or with another one.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nexuscache::proto::cache_client::CacheClient;
use tonic::transport::Channel;

use crate::common::{
    form, free_port, pct, spawn, Conn, Metrics, Node, Response, Spec, StartError, POLL,
    READY_DEADLINE,
};

/// Peer timeouts every cluster node gets (the flags' defaults, given
/// explicitly because the timing assertions depend on them).
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 200;
pub const PEER_TIMEOUT_MS: u64 = 500;
/// Longest a client request may take while a peer is dead or slow: one
/// peer connect timeout plus one peer request timeout, plus slack for a
/// debug build on a loaded 2-CPU machine.
pub const PEER_BOUND: Duration = Duration::from_millis(1500);
/// Socket timeouts of the test clients: far above any bound a test asserts,
/// so a hung request shows up as a (too long) measured duration.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a membership change may take to show on every node's
/// `/metrics` when nothing else is going on (start-up, a join).
pub const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(15);

/// The cluster secret every node of this test process shares by default:
/// 32 hex digits from the clock and the process id (tests need no
/// unpredictability, only a value no other process's cluster shares).
pub fn test_cluster_secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!(
            "{:016x}{:016x}",
            nanos as u64,
            u64::from(std::process::id())
        )
    })
}

/// How a node finds the others.
#[derive(Clone, Debug)]
pub enum Discovery {
    /// `--etcd <endpoint> --lease-ttl <secs>`
    Etcd { endpoint: String, lease_ttl: u64 },
    /// `--peers <list>` (built from the other nodes' names and ports).
    Static { peers: String },
}

/// One node of a test cluster: a name, two ports, and the current process.
pub struct ClusterNode {
    pub name: String,
    pub http_port: u16,
    pub grpc_port: u16,
    pub discovery: Discovery,
    node: Option<Node>,
    /// Killed instances, kept so their logs are printed if the test fails.
    dead: Vec<Node>,
    /// `--cluster-secret`; [`test_cluster_secret`] unless changed.
    cluster_secret: Option<String>,
}

impl ClusterNode {
    /// A node with fresh ports, not started yet.
    pub fn new(name: &str, discovery: Discovery) -> ClusterNode {
        ClusterNode {
            name: name.to_string(),
            http_port: free_port(),
            grpc_port: free_port(),
            discovery,
            node: None,
            dead: Vec::new(),
            cluster_secret: Some(test_cluster_secret().to_string()),
        }
    }

    /// The `--cluster-secret` the node starts with from its next start
    /// (`None`: no secret, an open cluster).
    pub fn set_cluster_secret(&mut self, secret: Option<&str>) {
        self.cluster_secret = secret.map(str::to_string);
    }

    pub fn cluster_secret(&self) -> Option<&str> {
        self.cluster_secret.as_deref()
    }

    /// Starts an etcd-discovered node and waits until it serves.
    pub fn start_etcd(name: &str, endpoint: &str, lease_ttl: u64) -> ClusterNode {
        let mut nodes = start_etcd_nodes(&[name], endpoint, lease_ttl);
        nodes.pop().expect("one node")
    }

    /// `name=127.0.0.1:<http>/127.0.0.1:<grpc>`, one entry of `--peers`.
    pub fn peer_entry(&self) -> String {
        format!("{}={}", self.name, self.peer_addr())
    }

    /// `127.0.0.1:<http>/127.0.0.1:<grpc>`, the `addr` of `/setpeer`.
    pub fn peer_addr(&self) -> String {
        format!("127.0.0.1:{}/127.0.0.1:{}", self.http_port, self.grpc_port)
    }

    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The RESP port: the default, HTTP port + 2000 (the harness never
    /// gives `--resp-port` unless a test's extra flags do).
    pub fn resp_port(&self) -> u16 {
        self.http_port + 2000
    }

    pub fn resp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.resp_port())
    }

    /// `name=127.0.0.1:<http>/127.0.0.1:<grpc>/127.0.0.1:<resp>`: a
    /// `--peers` entry that also tells the node's RESP address.
    pub fn peer_entry_with_resp(&self) -> String {
        format!("{}/{}", self.peer_entry(), self.resp_addr())
    }

    /// `http://127.0.0.1:G`, for tonic.
    pub fn grpc_uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    fn spec(&self) -> Spec {
        let grpc = self.grpc_port.to_string();
        let connect = PEER_CONNECT_TIMEOUT_MS.to_string();
        let timeout = PEER_TIMEOUT_MS.to_string();
        let mut extra: Vec<&str> = vec![
            "--grpc-port",
            &grpc,
            "--node-name",
            &self.name,
            "--no-pin",
            "--max-memory",
            "64MiB",
            "--peer-connect-timeout-ms",
            &connect,
            "--peer-timeout-ms",
            &timeout,
        ];
        if let Some(secret) = &self.cluster_secret {
            extra.extend(["--cluster-secret", secret]);
        }
        let ttl;
        match &self.discovery {
            Discovery::Etcd {
                endpoint,
                lease_ttl,
            } => {
                ttl = lease_ttl.to_string();
                extra.extend(["--etcd", endpoint, "--lease-ttl", &ttl]);
            }
            Discovery::Static { peers } => {
                if !peers.is_empty() {
                    extra.extend(["--peers", peers]);
                }
            }
        }
        // `serve --http-port P --cores 2 <extra>`
        let mut spec = Spec::serve(self.http_port, &extra);
        // Peer connects, connection losses and failed connects are logged
        // at debug: rare events that explain a failed forward.
        if std::env::var("RUST_LOG").map_or(true, |v| v.trim().is_empty()) {
            spec.envs
                .push(("RUST_LOG".into(), "info,nexuscache::peer=debug".into()));
        }
        spec
    }

    /// Spawns the process (does not wait). Panics if one is running.
    pub fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    /// Waits until `/readyz` answers and the gRPC port accepts connections.
    pub fn wait_ready(&mut self) -> Result<(), StartError> {
        let node = self.node.as_mut().expect("node spawned");
        node.wait_ready(READY_DEADLINE)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.grpc_port));
        let start = Instant::now();
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > READY_DEADLINE => {
                    return Err(StartError::Other(format!(
                        "node {} is ready on HTTP port {} but its gRPC port {} refuses \
                         connections ({e}); log:\n{}",
                        self.name,
                        self.http_port,
                        self.grpc_port,
                        node.log_text()
                    )))
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// Spawns the node (unless already spawned) and waits until it serves;
    /// if its port was taken meanwhile, retries on new ports (only for
    /// nodes that nobody names by address yet).
    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Moves a process that failed to start to the dead list and picks new
    /// ports (only for nodes nobody names by address: etcd mode).
    fn repick_ports(&mut self) {
        if let Some(node) = self.node.take() {
            self.dead.push(node);
        }
        self.http_port = free_port();
        self.grpc_port = free_port();
    }

    pub fn is_running(&self) -> bool {
        self.node.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.node.as_ref().expect("node is running").pid()
    }

    pub fn log_text(&self) -> String {
        match &self.node {
            Some(node) => node.log_text(),
            None => "<not running>".into(),
        }
    }

    /// Sends a signal by PID with the `kill` utility ("STOP", "CONT", ...).
    pub fn signal(&self, sig: &str) {
        self.node.as_ref().expect("node is running").signal(sig);
    }

    /// SIGSTOP, then wait until every thread is stopped: `kill` returns
    /// once the signal is queued, and a thread that was running stops only
    /// when it next enters the kernel, so a request sent at once could
    /// still be answered.
    pub fn freeze(&self) {
        let node = self.node.as_ref().expect("node is running");
        node.signal("STOP");
        let pid = node.pid();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|tasks| {
                    tasks.flatten().all(|task| {
                        std::fs::read_to_string(task.path().join("stat"))
                            .ok()
                            .and_then(|stat| {
                                let (_, rest) = stat.rsplit_once(") ")?;
                                rest.split(' ').next().map(|s| s == "T" || s == "t")
                            })
                            .unwrap_or(true)
                    })
                })
                .unwrap_or(true);
            if stopped {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {} (pid {pid}) not stopped 5 s after SIGSTOP",
                self.name
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILL by PID (no lease revoke, no drain), then reap it.
    pub fn kill9(&mut self) {
        let mut node = self.node.take().expect("node is running");
        node.signal("KILL");
        assert!(
            node.wait_exit(Duration::from_secs(10)).is_some(),
            "node {} (pid {}) survived SIGKILL",
            self.name,
            node.pid()
        );
        self.dead.push(node);
    }

    /// Starts the node again with the same name, ports and flags.
    pub fn restart(&mut self) {
        self.spawn();
        if let Err(e) = self.wait_ready() {
            panic!(
                "node {} did not restart on HTTP port {} / gRPC port {}: {e:?}",
                self.name, self.http_port, self.grpc_port
            );
        }
    }

    // -- requests --------------------------------------------------------

    /// One request on a fresh connection; transport errors are `Err`.
    pub fn try_request(&self, method: &str, target: &str, body: &[u8]) -> Result<Response, String> {
        http_request(self.http_port, method, target, body)
    }

    /// The node's thread stacks if `error` says a request to it timed out.
    pub fn dump_if_stuck(&self, error: &str) -> String {
        match &self.node {
            Some(node) if error.contains("WouldBlock") || error.contains("TimedOut") => {
                thread_dump(node.pid())
            }
            _ => String::new(),
        }
    }

    /// One request on a fresh connection; panics on transport errors (with
    /// the node's thread stacks if it did not answer in time).
    pub fn request(&self, method: &str, target: &str, body: &[u8]) -> Response {
        self.try_request(method, target, body).unwrap_or_else(|e| {
            let dump = self.dump_if_stuck(&e);
            panic!("node {}: {method} {target}: {e}\n{dump}", self.name)
        })
    }

    /// `POST /api/set` with `key` and `value` form fields.
    pub fn set(&self, key: &str, value: &str) -> Response {
        self.request("POST", "/api/set", set_form(key, value).as_bytes())
    }

    /// `GET /api/get?key=K`.
    pub fn get(&self, key: &str) -> Response {
        self.request("GET", &get_target(key), b"")
    }

    /// `GET /v1/keys/K`.
    pub fn v1_get(&self, key: &str) -> Response {
        self.request("GET", &format!("/v1/keys/{}", pct(key.as_bytes())), b"")
    }

    /// `POST /api/delete` with a `key` form field.
    pub fn delete(&self, key: &str) -> Response {
        let body = form(&[("key", key.as_bytes())]);
        self.request("POST", "/api/delete", body.as_bytes())
    }

    /// `POST /setpeer` with the given form body.
    pub fn setpeer(&self, body: &str) -> Response {
        self.request("POST", "/setpeer", body.as_bytes())
    }

    /// `GET /v1/owner/K`, parsed.
    pub fn owner(&self, key: &str) -> Owner {
        let r = self.request("GET", &format!("/v1/owner/{}", pct(key.as_bytes())), b"");
        assert_eq!(
            r.status,
            200,
            "node {}: GET /v1/owner/{key}: {}",
            self.name,
            r.describe()
        );
        Owner::parse(&r.body_str()).unwrap_or_else(|| {
            panic!(
                "node {}: unparsable owner line {:?}",
                self.name,
                r.body_str()
            )
        })
    }

    pub fn try_metrics(&self) -> Result<Metrics, String> {
        let r = self.try_request("GET", "/metrics", b"")?;
        if r.status != 200 {
            return Err(format!("GET /metrics: {}", r.describe()));
        }
        Ok(Metrics::parse(&r.body_str()))
    }

    pub fn metrics(&self) -> Metrics {
        self.try_metrics()
            .unwrap_or_else(|e| panic!("node {}: {e}", self.name))
    }

    /// `nexuscache_ring_members`, if the node answers.
    pub fn ring_members(&self) -> Option<u64> {
        let m = self.try_metrics().ok()?;
        m.find("nexuscache_ring_members", &[])
            .first()
            .map(|s| s.value as u64)
    }
}

/// Spawns etcd-discovered nodes together, then waits for each; a node whose
/// port was taken meanwhile is retried on new ports.
pub fn start_etcd_nodes(names: &[&str], endpoint: &str, lease_ttl: u64) -> Vec<ClusterNode> {
    start_etcd_nodes_with(names, endpoint, lease_ttl, &[])
}

/// [`start_etcd_nodes`] with `extra` flags on every node. (`--cores 1`
/// makes [`wait_ring_members`] exact: it reads core 0's gauge, and another
/// core adopts a ring change up to one housekeeping tick later.)
pub fn start_etcd_nodes_with(
    names: &[&str],
    endpoint: &str,
    lease_ttl: u64,
    extra: &[&str],
) -> Vec<ClusterNode> {
    let discovery = Discovery::Etcd {
        endpoint: endpoint.to_string(),
        lease_ttl,
    };
    let mut nodes: Vec<ClusterNode> = names
        .iter()
        .map(|name| ClusterNode::new(name, discovery.clone()))
        .collect();
    // Spawn all first so they start up side by side.
    for node in &mut nodes {
        node.spawn_with(extra);
    }
    for node in &mut nodes {
        node.start_with(extra);
    }
    nodes
}

/// Static nodes naming each other in `--peers`; all ports are chosen first
/// (each node's flags name the others'), and the whole set is started again
/// on new ports if one was taken meanwhile.
pub fn start_static_nodes(names: &[&str]) -> Vec<ClusterNode> {
    start_static_nodes_with(names, &[])
}

/// A static node with `--peers <peers>` (not started).
pub fn static_node(name: &str, peers: &str) -> ClusterNode {
    ClusterNode::new(
        name,
        Discovery::Static {
            peers: peers.to_string(),
        },
    )
}

/// The threads of a live process that looks stuck: name, kernel wait
/// channel and state of each, then their stacks if `gdb` is installed.
pub fn thread_dump(pid: u32) -> String {
    let mut out = format!("===== threads of pid {pid} =====\n");
    let read = |path: String| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let dir = task.path().display().to_string();
            let stat = read(format!("{dir}/stat"));
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').next())
                .unwrap_or("?")
                .to_string();
            out.push_str(&format!(
                "{} {} state={state} wchan={}\n",
                task.file_name().to_string_lossy(),
                read(format!("{dir}/comm")),
                read(format!("{dir}/wchan"))
            ));
        }
    }
    let gdb = std::process::Command::new("timeout")
        .args(["60", "gdb", "-p", &pid.to_string(), "-batch", "-ex"])
        .arg("thread apply all bt 30")
        .stdin(std::process::Stdio::null())
        .output();
    match gdb {
        Ok(o) if o.status.code() == Some(127) => {
            out.push_str("(no stacks: gdb is not installed)\n")
        }
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            for line in text
                .lines()
                .filter(|l| l.starts_with("Thread ") || l.starts_with('#'))
            {
                out.push_str(line);
                out.push('\n');
            }
        }
        Err(e) => out.push_str(&format!("(no stacks: cannot run gdb: {e})\n")),
    }
    out
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

fn connect(port: u16) -> Result<Conn, String> {
    let conn = Conn::try_connect(port).map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
    conn.set_read_timeout(CLIENT_TIMEOUT);
    Ok(conn)
}

/// One request on a fresh connection; transport errors are `Err`.
pub fn http_request(
    port: u16,
    method: &str,
    target: &str,
    body: &[u8],
) -> Result<Response, String> {
    let mut conn = connect(port)?;
    exchange(&mut conn, method, target, body)
}

fn exchange(conn: &mut Conn, method: &str, target: &str, body: &[u8]) -> Result<Response, String> {
    let raw = crate::common::build_request(method, target, &[], body);
    conn.try_send(&raw)
        .map_err(|e| format!("{method} {target}: write: {e}"))?;
    conn.try_read_response()
        .map_err(|e| format!("{method} {target}: read: {e:?}"))
}

/// A keep-alive client for one node that reconnects after any failure.
pub struct Client {
    port: u16,
    conn: Option<Conn>,
}

impl Client {
    pub fn new(port: u16) -> Client {
        Client { port, conn: None }
    }

    pub fn request(&mut self, method: &str, target: &str, body: &[u8]) -> Result<Response, String> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => connect(self.port)?,
        };
        let r = exchange(&mut conn, method, target, body)?;
        if !r.says_close() {
            self.conn = Some(conn);
        }
        Ok(r)
    }

    pub fn set(&mut self, key: &str, value: &str) -> Result<Response, String> {
        self.request("POST", "/api/set", set_form(key, value).as_bytes())
    }

    pub fn get(&mut self, key: &str) -> Result<Response, String> {
        self.request("GET", &get_target(key), b"")
    }
}

pub fn set_form(key: &str, value: &str) -> String {
    form(&[("key", key.as_bytes()), ("value", value.as_bytes())])
}

pub fn get_target(key: &str) -> String {
    format!("/api/get?key={}", pct(key.as_bytes()))
}

/// The body `/api/get` answers for a hit (no newline after the value).
pub fn value_body(value: &str) -> Vec<u8> {
    format!("value={value}").into_bytes()
}

// ---------------------------------------------------------------------------
// Ownership, membership, metrics
// ---------------------------------------------------------------------------

/// `GET /v1/owner/K`: `node=<name> http=<addr> grpc=<addr> core=<n>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub http: String,
    pub grpc: String,
    pub core: String,
}

impl Owner {
    pub fn parse(line: &str) -> Option<Owner> {
        let mut fields = BTreeMap::new();
        for part in line.trim_end().split(' ') {
            let (k, v) = part.split_once('=')?;
            fields.insert(k, v);
        }
        Some(Owner {
            node: fields.get("node")?.to_string(),
            http: fields.get("http")?.to_string(),
            grpc: fields.get("grpc")?.to_string(),
            core: fields.get("core")?.to_string(),
        })
    }
}

/// `per_owner` keys named `<prefix>-<i>` owned by each of `owners`, as
/// `via`'s ring says, in the order of `owners`.
pub fn keys_owned_by(
    via: &ClusterNode,
    owners: &[&str],
    per_owner: usize,
    prefix: &str,
) -> Vec<Vec<String>> {
    let mut found: Vec<Vec<String>> = vec![Vec::new(); owners.len()];
    for i in 0..10_000 {
        if found.iter().all(|keys| keys.len() >= per_owner) {
            return found;
        }
        let key = format!("{prefix}-{i}");
        let owner = via.owner(&key);
        if let Some(slot) = owners.iter().position(|o| *o == owner.node) {
            if found[slot].len() < per_owner {
                found[slot].push(key);
            }
        }
    }
    panic!(
        "node {}: no {per_owner} keys for each of {owners:?} among 10000 (found {found:?})",
        via.name
    );
}

/// Polls `check` every 20 ms until it returns `Ok`; panics with the last
/// error after `limit`. Returns the value and how long it took.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return (v, start.elapsed()),
            Err(e) if start.elapsed() > limit => {
                panic!("{what}: not within {limit:?}; last: {e}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Waits until every node's `nexuscache_ring_members` is `n` at once.
pub fn wait_ring_members(nodes: &[&ClusterNode], n: u64, limit: Duration) -> Duration {
    let what = format!(
        "ring_members == {n} on {:?}",
        nodes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>()
    );
    wait_for(&what, limit, || {
        let seen: Vec<(String, Option<u64>)> = nodes
            .iter()
            .map(|c| (c.name.clone(), c.ring_members()))
            .collect();
        if seen.iter().all(|(_, m)| *m == Some(n)) {
            Ok(())
        } else {
            Err(format!("ring_members per node: {seen:?}"))
        }
    })
    .1
}

/// Sum of `nexuscache_peer_requests_total` over cores and ops, for one
/// peer (or all) and outcome filter.
pub fn peer_requests(m: &Metrics, peer: Option<&str>, outcome: Outcome) -> f64 {
    m.find("nexuscache_peer_requests_total", &[])
        .into_iter()
        .filter(|s| peer.is_none_or(|p| s.labels.get("peer").map(String::as_str) == Some(p)))
        .filter(|s| {
            let ok = s.labels.get("status").map(String::as_str) == Some("ok");
            match outcome {
                Outcome::Any => true,
                Outcome::Ok => ok,
                Outcome::Failed => !ok,
            }
        })
        .map(|s| s.value)
        .sum()
}

/// Which `status` labels of the peer counter to count.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    Any,
    Ok,
    Failed,
}

/// Sum of `nexuscache_peer_requests_total` for one peer, op and outcome.
pub fn peer_requests_op(m: &Metrics, peer: &str, op: &str, status: &str) -> f64 {
    m.sum(
        "nexuscache_peer_requests_total",
        &[("peer", peer), ("op", op), ("status", status)],
    )
}

// ---------------------------------------------------------------------------
// gRPC
// ---------------------------------------------------------------------------

/// A tonic client for `node`'s gRPC port, with bounded connect and call
/// timeouts.
pub async fn grpc_client(node: &ClusterNode) -> CacheClient<Channel> {
    let channel = Channel::from_shared(node.grpc_uri())
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .timeout(CLIENT_TIMEOUT)
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "node {}: connect to gRPC port {}: {e}",
                node.name, node.grpc_port
            )
        });
    CacheClient::new(channel)
}

// ---------------------------------------------------------------------------
// Machine stalls
// ---------------------------------------------------------------------------

/// How often the stall watch wakes up.
const STALL_TICK: Duration = Duration::from_millis(10);
/// A wake-up this much later than asked for counts as a stall.
const STALL_MIN: Duration = Duration::from_millis(100);
/// A stall this long near a request disturbs it...
const DISTURBED: Duration = Duration::from_millis(200);
/// ...when it is this close to the request.
const DISTURB_WINDOW: Duration = Duration::from_secs(2);

/// Notices when this test process could not run: a thread that sleeps
/// 10 ms at a time and records every wake-up that came 100 ms or more late.
///
/// On a loaded 2-CPU machine (parallel test binaries, builds, benchmarks)
/// every process can be descheduled for a second or more; during such a
/// stall a 500 ms peer timeout fires without any fault of the server, and a
/// request takes as long as the stall. The nodes do not stall at exactly
/// the moments this process does, so a request counts as disturbed by the
/// machine when this process saw a stall of 200 ms or more within two
/// seconds of it ([`StallWatch::disturbed`]). Tests report disturbed
/// failures apart, cap their number, and still bound the time of every
/// request by [`StallWatch::allowed`], so a server that hangs fails however
/// busy the machine is.
pub struct StallWatch {
    stop: Arc<AtomicBool>,
    /// (asleep since, woke up at) of every late wake-up.
    gaps: Arc<Mutex<Vec<(Instant, Instant)>>>,
    started: Instant,
    thread: Option<JoinHandle<()>>,
}

impl StallWatch {
    pub fn start() -> StallWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let gaps = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, gaps) = (stop.clone(), gaps.clone());
            std::thread::Builder::new()
                .name("stall-watch".into())
                .spawn(move || {
                    let mut last = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(STALL_TICK);
                        let now = Instant::now();
                        if now - last >= STALL_TICK + STALL_MIN {
                            gaps.lock().unwrap().push((last + STALL_TICK, now));
                        }
                        last = now;
                    }
                })
                .expect("spawn stall watch")
        };
        StallWatch {
            stop,
            gaps,
            started: Instant::now(),
            thread: Some(thread),
        }
    }

    /// How long this process was seen stalled within `[from, to]`.
    pub fn stalled(&self, from: Instant, to: Instant) -> Duration {
        self.gaps
            .lock()
            .unwrap()
            .iter()
            .map(|&(a, b)| {
                let (a, b) = (a.max(from), b.min(to));
                b.saturating_duration_since(a)
            })
            .sum()
    }

    /// The longest stall that touches `[from - 2 s, to + 2 s]`.
    pub fn near(&self, from: Instant, to: Instant) -> Duration {
        let (from, to) = (from - DISTURB_WINDOW, to + DISTURB_WINDOW);
        self.gaps
            .lock()
            .unwrap()
            .iter()
            .filter(|&&(a, b)| b > from && a < to)
            .map(|&(a, b)| b - a)
            .max()
            .unwrap_or_default()
    }

    /// Whether the machine stalled near a request that ran from `from` to `to`.
    pub fn disturbed(&self, from: Instant, to: Instant) -> bool {
        self.near(from, to) >= DISTURBED
    }

    /// How long a request from `from` to `to` may take: `bound`, plus the
    /// nearby stall and a second when the machine stalled near it.
    pub fn allowed(&self, from: Instant, to: Instant, bound: Duration) -> Duration {
        if self.disturbed(from, to) {
            bound + self.near(from, to) + Duration::from_secs(1)
        } else {
            bound
        }
    }

    /// `deadline` after `from`, pushed back by the stalls inside it (and
    /// inside the time it was pushed back by).
    pub fn stretch(&self, from: Instant, deadline: Duration) -> Instant {
        let mut d = deadline;
        loop {
            let next = deadline + self.stalled(from, from + d);
            if next == d {
                return from + d;
            }
            d = next;
        }
    }

    /// Total stall time and the longest stall so far.
    pub fn summary(&self) -> (Duration, Duration) {
        let gaps = self.gaps.lock().unwrap();
        let total = gaps.iter().map(|(a, b)| *b - *a).sum();
        let longest = gaps.iter().map(|(a, b)| *b - *a).max().unwrap_or_default();
        (total, longest)
    }

    /// Every stall as (seconds since the watch started, length).
    pub fn describe(&self) -> String {
        let gaps = self.gaps.lock().unwrap();
        let list: Vec<String> = gaps
            .iter()
            .map(|(a, b)| {
                format!(
                    "{:.2}s+{:?}",
                    a.saturating_duration_since(self.started).as_secs_f64(),
                    *b - *a
                )
            })
            .collect();
        format!(
            "{} stalls of this test process: [{}]",
            list.len(),
            list.join(", ")
        )
    }
}

impl Drop for StallWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.describe());
        }
    }
}

// ---------------------------------------------------------------------------
// Extra flags (hot data and read-through tests)
// ---------------------------------------------------------------------------

/// `["--flag", "value", "--switch", ...]` as (flag, value) pairs; a flag
/// not followed by a value (the next item starts with `--`) is a switch.
fn flag_pairs<'a>(extra: &[&'a str]) -> Vec<(&'a str, Option<&'a str>)> {
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < extra.len() {
        let flag = extra[i];
        match extra.get(i + 1) {
            Some(v) if !v.starts_with("--") => {
                pairs.push((flag, Some(*v)));
                i += 2;
            }
            _ => {
                pairs.push((flag, None));
                i += 1;
            }
        }
    }
    pairs
}

impl ClusterNode {
    /// The node's usual flags with `extra` applied: a flag the node already
    /// gets (`--cores`, `--max-memory`, `--peer-timeout-ms`, ...) takes the
    /// value given here (the binary refuses a flag given twice); any other
    /// flag is appended.
    pub fn spec_with(&self, extra: &[&str]) -> Spec {
        let mut spec = self.spec();
        for (flag, value) in flag_pairs(extra) {
            match (spec.args.iter().position(|a| a == flag), value) {
                (Some(i), Some(v)) if i + 1 < spec.args.len() => spec.args[i + 1] = v.to_string(),
                (Some(_), None) => {}
                _ => {
                    spec.args.push(flag.to_string());
                    spec.args.extend(value.map(str::to_string));
                }
            }
        }
        spec
    }

    /// Like [`ClusterNode::spawn`], with `extra` flags ([`ClusterNode::spec_with`]).
    pub fn spawn_with(&mut self, extra: &[&str]) {
        assert!(self.node.is_none(), "node {} is already running", self.name);
        self.node = Some(spawn(self.http_port, &self.spec_with(extra)));
    }

    /// Like [`ClusterNode::start`], with `extra` flags: spawns (unless
    /// running), waits until it serves, retries on new ports if its port
    /// was taken (only for nodes nobody names by address yet).
    pub fn start_with(&mut self, extra: &[&str]) {
        if !self.is_running() {
            self.spawn_with(extra);
        }
        let mut attempts = 0;
        loop {
            match self.wait_ready() {
                Ok(()) => return,
                Err(StartError::PortInUse(log)) if attempts < 5 => {
                    attempts += 1;
                    eprintln!(
                        "node {}: port in use, retrying on new ports:\n{log}",
                        self.name
                    );
                    self.repick_ports();
                    self.spawn_with(extra);
                }
                Err(e) => {
                    let dump = match self.node.as_mut() {
                        Some(node) => match node.try_exit_status() {
                            None => thread_dump(node.pid()),
                            Some(_) => String::new(),
                        },
                        None => String::new(),
                    };
                    panic!("node {} did not start: {e:?}\n{dump}", self.name)
                }
            }
        }
    }
}

/// [`start_static_nodes`] with `extra` flags on every node (see
/// [`ClusterNode::spec_with`]), e.g. `&["--cores", "1", "--origin", url]`;
/// the whole set is started again on new ports if one was taken meanwhile.
pub fn start_static_nodes_with(names: &[&str], extra: &[&str]) -> Vec<ClusterNode> {
    start_static_nodes_listed(names, extra, ClusterNode::peer_entry)
}

/// [`start_static_nodes_with`] whose `--peers` entries also give each
/// node's core count (`name=http/grpc@2`, the harness's `--cores 2`).
pub fn start_static_nodes_with_cores(names: &[&str], extra: &[&str]) -> Vec<ClusterNode> {
    start_static_nodes_listed(names, extra, |node| format!("{}@2", node.peer_entry()))
}

/// Static nodes whose `--peers` entries are `entry(node)` for every other
/// node (see [`start_static_nodes_with`]).
pub fn start_static_nodes_listed(
    names: &[&str],
    extra: &[&str],
    entry: impl Fn(&ClusterNode) -> String,
) -> Vec<ClusterNode> {
    for _ in 0..5 {
        let mut nodes: Vec<ClusterNode> = names.iter().map(|name| static_node(name, "")).collect();
        let entries: Vec<String> = nodes.iter().map(&entry).collect();
        for (i, node) in nodes.iter_mut().enumerate() {
            let peers: Vec<&str> = entries
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, e)| e.as_str())
                .collect();
            node.discovery = Discovery::Static {
                peers: peers.join(","),
            };
            node.spawn_with(extra);
        }
        let mut port_taken = false;
        for node in &mut nodes {
            match node.wait_ready() {
                Ok(()) => {}
                Err(StartError::PortInUse(log)) => {
                    eprintln!(
                        "node {}: port in use, restarting the set:\n{log}",
                        node.name
                    );
                    port_taken = true;
                    break;
                }
                Err(e) => panic!("node {} did not start: {e:?}", node.name),
            }
        }
        if !port_taken {
            return nodes;
        }
    }
    panic!("static nodes could not bind their ports in 5 attempts");
}
