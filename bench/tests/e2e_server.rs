//! End-to-end: the generator against real `nexuscache` nodes, over HTTP and
//! gRPC, checking the JSON results (hits, misses, errors).
//!
//! The server binary is the workspace's `nexuscache` built in the same
//! profile (`cargo test --workspace` and `cargo nextest run --workspace`
//! build it; `cargo build -p nexuscache` otherwise), or `$NEXUSCACHE_BIN`.
//! Without it the tests say so and pass without running: the generator's
//! own unit tests do not need a server.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BENCH: &str = env!("CARGO_BIN_EXE_nexuscache-bench");

fn server_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NEXUSCACHE_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(BENCH).with_file_name("nexuscache");
    p.is_file().then_some(p)
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ncb-e2e-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One node; killed on drop.
struct Node {
    child: Child,
    http: u16,
    grpc: u16,
    log: PathBuf,
}

impl Node {
    fn spawn(bin: &Path, dir: &Path, name: &str, http: u16, grpc: u16, peers: &str) -> Node {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut args: Vec<String> = [
            "serve",
            "--http-port",
            &http.to_string(),
            "--grpc-port",
            &grpc.to_string(),
            "--cores",
            "1",
            "--no-pin",
            "--node-name",
            name,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !peers.is_empty() {
            args.extend(["--peers".to_string(), peers.to_string()]);
        }
        // glommio needs locked memory: raise the soft limit to the hard one.
        let child = Command::new("sh")
            .arg("-c")
            .arg("ulimit -l unlimited 2>/dev/null || ulimit -l \"$(ulimit -H -l)\" 2>/dev/null; exec \"$0\" \"$@\"")
            .arg(bin)
            .args(&args)
            .env_remove("NEXUSCACHE_ETCD")
            .env_remove("NEXUSCACHE_PEERS")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn nexuscache");
        Node {
            child,
            http,
            grpc,
            log,
        }
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.http)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let status = text.get(9..12)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n")?.1.to_string();
        Some((status, body))
    }

    fn wait_until(&mut self, what: &str, ok: impl Fn(&Node) -> bool) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "node exited ({status}) while waiting for {what}:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if ok(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "node not {what} after 20 s:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the generator and returns its JSON result.
fn bench(args: &[&str], dir: &Path) -> serde_json::Value {
    let json = dir.join(format!("run-{}.json", free_port()));
    let out = Command::new(BENCH)
        .args(args)
        .args(["--quiet", "--seed", "7", "--json"])
        .arg(&json)
        .output()
        .expect("run nexuscache-bench");
    assert!(
        out.status.success(),
        "nexuscache-bench {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

fn errors(v: &serde_json::Value) -> u64 {
    v["errors"]["total"].as_u64().unwrap()
}

fn read_counts(v: &serde_json::Value) -> (u64, u64) {
    let r = &v["operations"]["read"];
    (r["hits"].as_u64().unwrap(), r["misses"].as_u64().unwrap())
}

#[test]
fn http_and_grpc_against_one_node() {
    let Some(bin) = server_bin() else {
        eprintln!("SKIPPED: no nexuscache binary next to {BENCH} (cargo build -p nexuscache)");
        return;
    };
    let dir = scratch_dir("single");
    let (http, grpc) = (free_port(), free_port());
    let mut node = Node::spawn(&bin, &dir, "solo", http, grpc, "");
    node.wait_until("ready", |n| n.get("/readyz").is_some_and(|(s, _)| s == 200));
    let h = format!("127.0.0.1:{http}");
    let g = format!("127.0.0.1:{grpc}");

    for (protocol, target, prefix) in [("grpc", &g, "g:"), ("http", &h, "h:")] {
        // Prefill then read: every read hits.
        let v = bench(
            &[
                "--protocol",
                protocol,
                "--targets",
                target,
                "--keys",
                "300",
                "--key-prefix",
                prefix,
                "--prefill",
                "--read-ratio",
                "1",
                "--duration",
                "500ms",
                "--concurrency",
                "16",
                "--connections",
                "2",
                "--threads",
                "1",
                "--pipeline",
                "8",
            ],
            &dir,
        );
        assert_eq!(errors(&v), 0, "{protocol}: {v}");
        assert_eq!(v["config"]["protocol"], protocol);
        assert_eq!(v["prefill"]["stored"], 300, "{protocol}: {v}");
        let (hits, misses) = read_counts(&v);
        assert!(
            hits > 100 && misses == 0,
            "{protocol}: {hits} hits, {misses} misses"
        );
    }

    // Keys nobody wrote: found=false is a miss, not an error.
    let v = bench(
        &[
            "--protocol",
            "grpc",
            "--targets",
            &g,
            "--keys",
            "1000",
            "--key-prefix",
            "absent:",
            "--read-ratio",
            "1",
            "--duration",
            "300ms",
            "--concurrency",
            "8",
            "--threads",
            "1",
        ],
        &dir,
    );
    assert_eq!(errors(&v), 0, "{v}");
    let (hits, misses) = read_counts(&v);
    assert!(hits == 0 && misses > 50, "{hits} hits, {misses} misses");

    // --key-file: the gRPC prefill writes exactly the listed keys (with
    // bytes HTTP must percent-encode), which HTTP then reads back.
    let keys = dir.join("keys.txt");
    std::fs::write(&keys, "file key/1\nfile%key 2\nfile:key:3\n").unwrap();
    let keys = keys.to_str().unwrap();
    let v = bench(
        &[
            "--protocol",
            "grpc",
            "--targets",
            &g,
            "--key-file",
            keys,
            "--prefill",
            "--read-ratio",
            "1",
            "--duration",
            "200ms",
            "--concurrency",
            "4",
            "--threads",
            "1",
        ],
        &dir,
    );
    assert_eq!(
        (errors(&v), v["prefill"]["stored"].as_u64()),
        (0, Some(3)),
        "{v}"
    );
    assert_eq!(v["config"]["keys"], 3);
    let v = bench(
        &[
            "--targets",
            &h,
            "--key-file",
            keys,
            "--read-ratio",
            "1",
            "--mode",
            "v1",
            "--duration",
            "200ms",
            "--concurrency",
            "4",
            "--threads",
            "1",
        ],
        &dir,
    );
    assert_eq!(errors(&v), 0, "{v}");
    let (hits, misses) = read_counts(&v);
    assert!(hits > 10 && misses == 0, "{hits} hits, {misses} misses");
    assert_eq!(node.get("/v1/keys/file%20key%2F1").map(|r| r.0), Some(200));

    // Over the value limit: RESOURCE_EXHAUSTED, counted by code.
    let v = bench(
        &[
            "--protocol",
            "grpc",
            "--targets",
            &g,
            "--keys",
            "4",
            "--read-ratio",
            "0",
            "--value-size",
            "1100000",
            "--duration",
            "300ms",
            "--concurrency",
            "2",
            "--threads",
            "1",
        ],
        &dir,
    );
    let e = &v["errors"];
    assert!(e["grpc"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(e["grpc"], e["grpc_codes"]["grpc_resource_exhausted"], "{v}");
    assert_eq!(e["total"], e["grpc"], "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn grpc_reads_of_keys_owned_by_another_node() {
    let Some(bin) = server_bin() else {
        eprintln!("SKIPPED: no nexuscache binary next to {BENCH} (cargo build -p nexuscache)");
        return;
    };
    let dir = scratch_dir("pair");
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let peers = format!(
        "a=127.0.0.1:{}/127.0.0.1:{},b=127.0.0.1:{}/127.0.0.1:{}",
        ports[0], ports[1], ports[2], ports[3]
    );
    let mut a = Node::spawn(&bin, &dir, "a", ports[0], ports[1], &peers);
    let mut b = Node::spawn(&bin, &dir, "b", ports[2], ports[3], &peers);
    for n in [&mut a, &mut b] {
        n.wait_until("ready", |n| n.get("/readyz").is_some_and(|(s, _)| s == 200));
    }
    // Keys b owns, as a's /v1/owner says.
    let mut remote = Vec::new();
    for i in 0..200 {
        let key = format!("pair:{i}");
        let (status, body) = a.get(&format!("/v1/owner/pair%3A{i}")).unwrap();
        assert_eq!(status, 200, "{body}");
        if body.contains("node=b") {
            remote.push(key);
        }
    }
    assert!(remote.len() > 30, "b owns {} of 200 keys", remote.len());
    let file = dir.join("remote.txt");
    std::fs::write(&file, remote.join("\n")).unwrap();
    let file = file.to_str().unwrap();
    let g = format!("127.0.0.1:{}", a.grpc);
    let h = format!("127.0.0.1:{}", a.http);
    // Written through a (forwarded to b), read back through a over both
    // protocols.
    let v = bench(
        &[
            "--protocol",
            "grpc",
            "--targets",
            &g,
            "--key-file",
            file,
            "--prefill",
            "--read-ratio",
            "1",
            "--duration",
            "300ms",
            "--concurrency",
            "8",
            "--threads",
            "1",
        ],
        &dir,
    );
    assert_eq!(errors(&v), 0, "{v}");
    assert_eq!(v["prefill"]["stored"].as_u64(), Some(remote.len() as u64));
    let (hits, misses) = read_counts(&v);
    assert!(hits > 20 && misses == 0, "{hits} hits, {misses} misses");
    let v = bench(
        &[
            "--targets",
            &h,
            "--key-file",
            file,
            "--read-ratio",
            "1",
            "--duration",
            "300ms",
            "--concurrency",
            "8",
            "--threads",
            "1",
        ],
        &dir,
    );
    assert_eq!(errors(&v), 0, "{v}");
    let (hits, misses) = read_counts(&v);
    assert!(hits > 20 && misses == 0, "{hits} hits, {misses} misses");
    // The values really live on b.
    let (status, _) = b
        .get(&format!("/v1/keys/{}", remote[0].replace(':', "%3A")))
        .unwrap();
    assert_eq!(status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}
