//! Network-namespace lab for the fault tests: one namespace per node, a
//! bridge ("switch") namespace that carries node-to-node traffic, and a
//! separate veth from the root namespace to each node for client traffic;
//! nodes started inside their namespace; faults applied with iproute2
//! (`ip link set ... nomaster` cuts a node off the switch, `tc netem`
//! delays its peer link) or, where the kernel has no netem, a delaying TCP
//! relay in the test process.
//!
//! Topology for `n` nodes, in one private /24 `10.199.X.0/24` claimed per
//! lab (X is unique among the labs alive on this machine):
//!
//! ```text
//!   root namespace (test process)          switch namespace  <tag>-sw
//!     <tag>c<i> 10.199.X.(65+4i)/30           br0 (bridge, no address)
//!        |  route 10.199.X.(11+i)/32            |  <tag>q<i> (bridge port)
//!        |  via 10.199.X.(66+4i)                |
//!     <tag>d<i> 10.199.X.(66+4i)/30          <tag>p<i> 10.199.X.(11+i)/26
//!           \________ node namespace <tag>-n<i> ________/
//!                  node bound to 10.199.X.(11+i)
//! ```
//!
//! A node binds its HTTP and gRPC ports to its peer-link address
//! `10.199.X.(11+i)` (a non-loopback bind, so protected mode applies);
//! peers reach it over the bridge, the test reaches the same address over
//! the node's own client link. Detaching `<tag>q<i>` from the bridge drops
//! every frame between node i and its peers silently (as a pulled cable
//! on a switch would) while its client link keeps working.
//!
//! Every name carries the test process's PID and a per-process sequence
//! number; a [`Lab`] removes its namespaces (and with them every veth and
//! route it made) on drop, panicking or not, and namespaces left by a test
//! process that no longer exists are removed when the next lab starts.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::common::{build_request, pct, temp_path, Conn, Response, BIN, POLL, READY_DEADLINE};

/// Name prefix of every namespace this harness creates: `nxc<pid>x<seq>`.
const TAG_PREFIX: &str = "nxc";
/// First two octets of every lab's /24.
const NET: [u8; 2] = [10, 199];
/// Ports every node uses inside its own namespace (nothing else binds there).
pub const HTTP_PORT: u16 = 7100;
pub const GRPC_PORT: u16 = 7200;

/// Raises RLIMIT_MEMLOCK (glommio) and execs the binary, so the PID we hold
/// (`ip netns exec` execs `sh`, which execs this) is the server's.
const WRAPPER: &str = "ulimit -l unlimited 2>/dev/null || ulimit -l \"$(ulimit -H -l)\" 2>/dev/null || true; exec \"$0\" \"$@\"";
/// Kills the server if the test process dies without running `Drop`: its
/// stdin is a pipe from us that closes when we exit.
const WATCHDOG: &str = "read _unused; kill -9 \"$1\" 2>/dev/null; exit 0";

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Runs `program args`; its stdout, or an error naming the command and
/// its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// Why this machine cannot run namespace tests (not root, no iproute2,
/// namespaces refused), or `None` when it can.
pub fn unsupported_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Some(format!(
            "network namespaces need root (effective uid is {euid})"
        ));
    }
    if let Err(e) = ip(&["-V"]) {
        return Some(format!(
            "iproute2's `ip` is not usable ({e}); install the Debian package iproute2"
        ));
    }
    None
}

/// PID of the test process that created namespace `name`, if it is ours.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TAG_PREFIX)?;
    let (pid, _) = rest.split_once('x')?;
    pid.parse().ok()
}

/// Removes namespaces (and claim files) left by test processes that are
/// gone: a test killed with SIGKILL cannot run its `Drop`.
fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(pid) = owner_pid(name) {
            if !PathBuf::from(format!("/proc/{pid}")).exists() {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(claims_dir()) {
        for entry in dir.flatten() {
            let pid = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let alive = pid
                .trim()
                .parse::<u32>()
                .is_ok_and(|p| PathBuf::from(format!("/proc/{p}")).exists());
            if !alive {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn claims_dir() -> PathBuf {
    std::env::temp_dir().join("nexuscache-netns-claims")
}

/// Claims a third octet X no other live lab uses and no route or address
/// of the root namespace mentions: returns it and its claim file.
fn claim_octet() -> Result<(u8, PathBuf), String> {
    let dir = claims_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let routes = ip(&["-4", "route", "show", "table", "all"]).unwrap_or_default();
    let addrs = ip(&["-4", "-o", "addr", "show"]).unwrap_or_default();
    let start = (std::process::id() as usize * 7 + SEQ.load(Ordering::Relaxed)) % 250;
    for i in 0..250 {
        let octet = ((start + i) % 250 + 1) as u8;
        let prefix = format!("{}.{}.{octet}.", NET[0], NET[1]);
        if routes.contains(&prefix) || addrs.contains(&prefix) {
            continue;
        }
        let path = dir.join(format!("{}.{}.{octet}", NET[0], NET[1]));
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            let _ = write!(f, "{}", std::process::id());
            return Ok((octet, path));
        }
    }
    Err(format!("no free {}.{}.X.0/24 left", NET[0], NET[1]))
}

/// The namespaces, links and addresses of one test's cluster.
pub struct Lab {
    pub tag: String,
    pub octet: u8,
    /// Namespaces created so far (switch first), removed on drop.
    namespaces: Vec<String>,
    /// Root-namespace ends of the client links.
    root_links: Vec<String>,
    claim: Option<PathBuf>,
    nodes: usize,
}

impl Lab {
    /// Builds the topology for `nodes` nodes (see the module docs).
    pub fn create(nodes: usize) -> Result<Lab, String> {
        assert!((1..=8).contains(&nodes), "a lab has 1..=8 nodes");
        remove_stale();
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let (octet, claim) = claim_octet()?;
        let mut lab = Lab {
            tag: format!("{TAG_PREFIX}{}x{seq}", std::process::id()),
            octet,
            namespaces: Vec::new(),
            root_links: Vec::new(),
            claim: Some(claim),
            nodes,
        };
        // On any error `lab` is dropped here, removing what was built.
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), String> {
        let sw = self.switch_ns();
        self.add_namespace(&sw)?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for i in 0..self.nodes {
            let ns = self.node_ns(i);
            self.add_namespace(&ns)?;
            // Peer link: node namespace <-> bridge port in the switch.
            let (p, q) = (self.peer_link(i), self.bridge_port(i));
            ip(&[
                "link", "add", &p, "netns", &ns, "type", "veth", "peer", "name", &q, "netns", &sw,
            ])?;
            let peer_cidr = format!("{}/26", self.node_ip(i));
            ip(&["-n", &ns, "addr", "add", &peer_cidr, "dev", &p])?;
            ip(&["-n", &ns, "link", "set", &p, "up"])?;
            ip(&["-n", &sw, "link", "set", &q, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &q, "up"])?;
            // Client link: root namespace <-> node namespace.
            let (c, d) = (self.client_link(i), format!("{}d{i}", self.tag));
            ip(&[
                "link", "add", &c, "type", "veth", "peer", "name", &d, "netns", &ns,
            ])?;
            self.root_links.push(c.clone());
            let root_cidr = format!("{}/30", self.client_root_ip(i));
            let node_cidr = format!("{}/30", self.client_node_ip(i));
            ip(&["addr", "add", &root_cidr, "dev", &c])?;
            ip(&["link", "set", &c, "up"])?;
            ip(&["-n", &ns, "addr", "add", &node_cidr, "dev", &d])?;
            ip(&["-n", &ns, "link", "set", &d, "up"])?;
            let node_host = format!("{}/32", self.node_ip(i));
            let via = self.client_node_ip(i).to_string();
            ip(&["route", "add", &node_host, "via", &via, "dev", &c])?;
        }
        Ok(())
    }

    fn add_namespace(&mut self, ns: &str) -> Result<(), String> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(NET[0], NET[1], self.octet, host)
    }

    pub fn switch_ns(&self) -> String {
        format!("{}-sw", self.tag)
    }

    pub fn node_ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.tag)
    }

    /// Node i's peer-facing interface (in its namespace).
    pub fn peer_link(&self, i: usize) -> String {
        format!("{}p{i}", self.tag)
    }

    /// The switch's port for node i.
    pub fn bridge_port(&self, i: usize) -> String {
        format!("{}q{i}", self.tag)
    }

    /// The root namespace's end of node i's client link.
    pub fn client_link(&self, i: usize) -> String {
        format!("{}c{i}", self.tag)
    }

    /// The address node i binds and peers reach it at.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        self.addr(11 + i as u8)
    }

    /// The root namespace's address on node i's client link.
    pub fn client_root_ip(&self, i: usize) -> Ipv4Addr {
        self.addr(65 + 4 * i as u8)
    }

    fn client_node_ip(&self, i: usize) -> Ipv4Addr {
        self.addr(66 + 4 * i as u8)
    }

    /// Cuts node i off the switch: frames to and from its peers are lost
    /// without an error to either side; its client link is untouched.
    pub fn isolate(&self, i: usize) -> Result<(), String> {
        ip(&[
            "-n",
            &self.switch_ns(),
            "link",
            "set",
            &self.bridge_port(i),
            "nomaster",
        ])?;
        Ok(())
    }

    /// Plugs node i back into the switch.
    pub fn reconnect(&self, i: usize) -> Result<(), String> {
        ip(&[
            "-n",
            &self.switch_ns(),
            "link",
            "set",
            &self.bridge_port(i),
            "master",
            "br0",
        ])?;
        Ok(())
    }

    /// Runs `tc <args>` inside node i's namespace.
    fn tc(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let ns = self.node_ns(i);
        let mut full = vec!["netns", "exec", ns.as_str(), "tc"];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Whether `tc netem` works here: adds and removes a 1 ms delay on node
    /// 0's peer link. `Err` says why not (e.g. a kernel without sch_netem).
    pub fn netem_works(&self) -> Result<(), String> {
        let dev = self.peer_link(0);
        self.tc(
            0,
            &["qdisc", "add", "dev", &dev, "root", "netem", "delay", "1ms"],
        )?;
        self.tc(0, &["qdisc", "del", "dev", &dev, "root"])?;
        Ok(())
    }

    /// Delays everything node i sends to its peers by `ms` (netem).
    pub fn delay_peer_link(&self, i: usize, ms: u64) -> Result<(), String> {
        let dev = self.peer_link(i);
        let delay = format!("{ms}ms");
        self.tc(
            i,
            &[
                "qdisc", "replace", "dev", &dev, "root", "netem", "delay", &delay,
            ],
        )?;
        Ok(())
    }

    /// Removes node i's peer-link delay.
    pub fn clear_peer_link(&self, i: usize) -> Result<(), String> {
        let dev = self.peer_link(i);
        self.tc(i, &["qdisc", "del", "dev", &dev, "root"])?;
        Ok(())
    }

    /// `name=ip:http/ip:grpc` for node i at its own address.
    pub fn peer_entry(&self, name: &str, i: usize) -> String {
        let ip = self.node_ip(i);
        format!("{name}={ip}:{HTTP_PORT}/{ip}:{GRPC_PORT}")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a veth end deletes its pair and the routes through it;
        // deleting a namespace deletes every interface in it.
        for link in self.root_links.drain(..) {
            let _ = ip(&["link", "del", &link]);
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("netns lab: {e}");
            }
        }
        if let Some(claim) = self.claim.take() {
            let _ = std::fs::remove_file(claim);
        }
    }
}

/// A random credential of 32 hex characters (tokens and secrets must be
/// 16..512 visible ASCII bytes).
pub fn random_credential() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A node process inside a lab namespace, reached over its client link.
pub struct NsNode {
    pub name: String,
    pub ip: Ipv4Addr,
    token: String,
    log: PathBuf,
    child: Child,
    watchdog: Option<(Child, ChildStdin)>,
}

/// One timed request: the response or the transport error, and how long
/// it took from connect to the end of the response.
pub struct Timed {
    pub result: Result<Response, String>,
    pub t0: Instant,
    pub t1: Instant,
}

impl Timed {
    pub fn took(&self) -> Duration {
        self.t1 - self.t0
    }

    pub fn status(&self) -> Option<u16> {
        self.result.as_ref().ok().map(|r| r.status)
    }

    pub fn body(&self) -> String {
        self.result
            .as_ref()
            .map_or_else(|e| format!("<{e}>"), Response::body_str)
    }

    pub fn describe(&self) -> String {
        match &self.result {
            Ok(r) => format!("{} {:?} in {:?}", r.status, r.body_str(), self.took()),
            Err(e) => format!("transport error {e} after {:?}", self.took()),
        }
    }
}

impl NsNode {
    /// Spawns `nexuscache serve <args>` in namespace `ns` through
    /// `ip netns exec` (does not wait for readiness).
    pub fn spawn(ns: &str, name: &str, ip: Ipv4Addr, token: &str, args: &[String]) -> NsNode {
        let log = temp_path(&format!("netns-{name}.log"));
        let out = std::fs::File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "sh", "-c", WRAPPER, BIN, "serve"])
            .args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("NEXUSCACHE_") {
                cmd.env_remove(k);
            }
        }
        if std::env::var("RUST_LOG").map_or(true, |v| v.trim().is_empty()) {
            cmd.env("RUST_LOG", "info,nexuscache::peer=debug");
        }
        cmd.env("NO_COLOR", "1");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().expect("spawn nexuscache via ip netns exec");
        let watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "watchdog", &child.id().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .map(|mut w| {
                let stdin = w.stdin.take().expect("piped stdin");
                (w, stdin)
            });
        NsNode {
            name: name.to_string(),
            ip,
            token: token.to_string(),
            log,
            child,
            watchdog,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("<cannot read log: {e}>"))
    }

    /// Polls `/readyz` and the gRPC port over the client link until both
    /// answer; panics with the log if the process exits or time runs out.
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "node {} exited with {status} before becoming ready; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            let ready = self
                .try_request("GET", "/readyz", b"")
                .is_ok_and(|r| r.status == 200 && r.body == b"ready\n");
            let grpc = SocketAddr::from((self.ip, GRPC_PORT));
            if ready && TcpStream::connect_timeout(&grpc, Duration::from_secs(1)).is_ok() {
                return;
            }
            assert!(
                start.elapsed() < READY_DEADLINE,
                "node {} not ready on {}:{HTTP_PORT} after {READY_DEADLINE:?}; log:\n{}",
                self.name,
                self.ip,
                self.log_text()
            );
            std::thread::sleep(POLL);
        }
    }

    /// One request with the node's bearer token, on a fresh connection.
    pub fn try_request(&self, method: &str, target: &str, body: &[u8]) -> Result<Response, String> {
        let auth = format!("Bearer {}", self.token);
        self.try_request_with(method, target, &[("Authorization", &auth)], body)
    }

    /// One request with exactly `headers` (no token unless given).
    pub fn try_request_with(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, String> {
        let mut conn = Conn::try_connect_ip(self.ip, HTTP_PORT)
            .map_err(|e| format!("connect {}:{HTTP_PORT}: {e}", self.ip))?;
        let raw = build_request(method, target, headers, body);
        conn.try_send(&raw)
            .map_err(|e| format!("send {method} {target}: {e}"))?;
        conn.try_read_response()
            .map_err(|e| format!("read {method} {target}: {e:?}"))
    }

    pub fn timed(&self, method: &str, target: &str, body: &[u8]) -> Timed {
        let t0 = Instant::now();
        let result = self.try_request(method, target, body);
        Timed {
            result,
            t0,
            t1: Instant::now(),
        }
    }

    /// `GET /api/get?key=K`, timed.
    pub fn get(&self, key: &str) -> Timed {
        self.timed("GET", &format!("/api/get?key={}", pct(key.as_bytes())), b"")
    }

    /// `POST /api/set` with `key` and `value`, timed.
    pub fn set(&self, key: &str, value: &str) -> Timed {
        let body = crate::common::form(&[("key", key.as_bytes()), ("value", value.as_bytes())]);
        self.timed("POST", "/api/set", body.as_bytes())
    }

    /// The name of the node owning `key` in this node's ring.
    pub fn owner_of(&self, key: &str) -> Result<String, String> {
        let r = self.try_request("GET", &format!("/v1/owner/{}", pct(key.as_bytes())), b"")?;
        if r.status != 200 {
            return Err(format!("/v1/owner answered {}", r.describe()));
        }
        r.body_str()
            .split(' ')
            .find_map(|f| f.strip_prefix("node="))
            .map(str::to_string)
            .ok_or_else(|| format!("no node= in {:?}", r.body_str()))
    }

    /// `nexuscache_peer_requests_total` for `peer` with a status other than
    /// `ok` (timeouts, unreachable, errors).
    pub fn peer_failures(&self, peer: &str) -> f64 {
        let r = self
            .try_request("GET", "/metrics", b"")
            .unwrap_or_else(|e| panic!("node {}: GET /metrics: {e}", self.name));
        assert_eq!(
            r.status,
            200,
            "node {}: /metrics: {}",
            self.name,
            r.describe()
        );
        let m = crate::common::Metrics::parse(&r.body_str());
        m.find("nexuscache_peer_requests_total", &[("peer", peer)])
            .into_iter()
            .filter(|s| s.labels.get("status").map(String::as_str) != Some("ok"))
            .map(|s| s.value)
            .sum()
    }
}

impl Drop for NsNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== nexuscache log (node {}, {}, pid {}) =====\n{}\n===== end of log =====",
                self.name,
                self.ip,
                self.pid(),
                self.log_text()
            );
        }
        if let Ok(None) = self.child.try_wait() {
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

// ---------------------------------------------------------------------------
// Delaying relay (for kernels without netem)
// ---------------------------------------------------------------------------

/// A TCP relay in the test process that forwards every byte after a delay
/// (the same delay each way), preserving order and pipelining: a stand-in
/// for `tc netem delay` when the kernel has no sch_netem. Unlike netem it
/// does not delay the TCP handshake to the relay itself.
pub struct DelayRelay {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl DelayRelay {
    /// Listens on `listen_ip` (a free port) and relays each connection to
    /// `upstream`, each way delayed by the current value of `delay_ms`.
    pub fn start(
        listen_ip: Ipv4Addr,
        upstream: SocketAddr,
        delay_ms: Arc<AtomicU64>,
    ) -> Result<DelayRelay, String> {
        let listener = TcpListener::bind(SocketAddrV4::new(listen_ip, 0))
            .map_err(|e| format!("relay bind {listen_ip}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("relay nonblocking: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("relay-{addr}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((downstream, _)) => {
                                let _ = downstream.set_nonblocking(false);
                                if let Ok(up) =
                                    TcpStream::connect_timeout(&upstream, Duration::from_secs(2))
                                {
                                    relay_pair(downstream, up, delay_ms.clone(), stop.clone());
                                }
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
                .map_err(|e| format!("spawn relay thread: {e}"))?
        };
        Ok(DelayRelay {
            addr,
            stop,
            accept: Some(accept),
        })
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Two delayed pumps (one per direction) for one relayed connection.
fn relay_pair(a: TcpStream, b: TcpStream, delay_ms: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let pairs = [
        (a.try_clone(), b.try_clone()),
        (b.try_clone(), a.try_clone()),
    ];
    for (from, to) in pairs {
        if let (Ok(from), Ok(to)) = (from, to) {
            delayed_pump(from, to, delay_ms.clone(), stop.clone());
        }
    }
}

/// Reads `from` and writes each chunk to `to` once `delay_ms` has passed
/// since it was read; end of stream is passed on (delayed) as a shutdown.
fn delayed_pump(
    mut from: TcpStream,
    mut to: TcpStream,
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let (tx, rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>();
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let due = || Instant::now() + Duration::from_millis(delay_ms.load(Ordering::Relaxed));
        while !stop.load(Ordering::Relaxed) {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send((due(), Some(buf[..n].to_vec()))).is_err() {
                        return;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = tx.send((due(), None));
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).is_err() {
                        break;
                    }
                }
                None => break,
            }
        }
        let _ = to.shutdown(Shutdown::Write);
        let _ = reader.join();
    });
}

// ---------------------------------------------------------------------------
// A protected static cluster in a lab
// ---------------------------------------------------------------------------

/// Peer connect timeout a lab node gets unless its plan says otherwise
/// (also how long an open peer connection has to answer a PING after a
/// request on it timed out).
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 200;

/// Nodes started in a [`Lab`], one per namespace, with a shared generated
/// token and cluster secret. Nodes are declared before the lab so they are
/// killed before their namespaces are removed.
pub struct NsCluster {
    pub nodes: Vec<NsNode>,
    pub lab: Lab,
}

/// How one node of an [`NsCluster`] is started.
pub struct NodePlan {
    pub name: String,
    /// `--peers` value.
    pub peers: String,
    pub peer_timeout_ms: u64,
    /// `--peer-connect-timeout-ms`.
    pub peer_connect_timeout_ms: u64,
}

impl NsCluster {
    /// Starts node i of `plans` in namespace i of `lab`, bound to its lab
    /// address, with `--auth-token` and `--cluster-secret` (protected mode,
    /// since the bind is not loopback); waits until every node serves.
    pub fn start(lab: Lab, plans: &[NodePlan]) -> NsCluster {
        let token = random_credential();
        let secret = random_credential();
        let mut nodes: Vec<NsNode> = plans
            .iter()
            .enumerate()
            .map(|(i, plan)| {
                let ip = lab.node_ip(i);
                let args: Vec<String> = [
                    "--bind",
                    &ip.to_string(),
                    "--http-port",
                    &HTTP_PORT.to_string(),
                    "--grpc-port",
                    &GRPC_PORT.to_string(),
                    "--node-name",
                    &plan.name,
                    "--peers",
                    &plan.peers,
                    "--cores",
                    "1",
                    "--no-pin",
                    "--max-memory",
                    "64MiB",
                    "--peer-connect-timeout-ms",
                    &plan.peer_connect_timeout_ms.to_string(),
                    "--peer-timeout-ms",
                    &plan.peer_timeout_ms.to_string(),
                    "--auth-token",
                    &token,
                    "--cluster-secret",
                    &secret,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                NsNode::spawn(&lab.node_ns(i), &plan.name, ip, &token, &args)
            })
            .collect();
        for node in &mut nodes {
            node.wait_ready();
        }
        NsCluster { nodes, lab }
    }

    /// `per_owner` keys `<prefix>-<n>` owned by each node, in node order,
    /// as node 0's ring says.
    pub fn keys_by_owner(&self, prefix: &str, per_owner: usize) -> Vec<Vec<String>> {
        let mut found: Vec<Vec<String>> = vec![Vec::new(); self.nodes.len()];
        for n in 0..10_000 {
            if found.iter().all(|k| k.len() >= per_owner) {
                return found;
            }
            let key = format!("{prefix}-{n}");
            let owner = self.nodes[0]
                .owner_of(&key)
                .unwrap_or_else(|e| panic!("owner of {key}: {e}"));
            if let Some(i) = self.nodes.iter().position(|node| node.name == owner) {
                if found[i].len() < per_owner {
                    found[i].push(key);
                }
            }
        }
        panic!("no {per_owner} keys per node among 10000: {found:?}");
    }
}
