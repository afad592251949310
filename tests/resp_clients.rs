//! Real Redis clients against a 3-node cluster's RESP ports: `redis-cli`
//! (Debian redis-tools) in scripted sessions, and the Python `redis`
//! package through `tests/resp_clients.py` (RESP2 and RESP3; installed into
//! a venv under the target directory on first run, which needs PyPI).

mod cluster_common;
mod common;
mod resp_common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use cluster_common::{start_static_nodes, wait_ring_members, ClusterNode};
use common::Node;
use resp_common::resp_port;

/// First run downloads and installs redis-py.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(600);
const TOKEN: &str = "resp-clients-token-0123";

struct Cluster {
    nodes: Vec<ClusterNode>,
    auth: Node,
}

/// One cluster for the file (never dropped: the harness's watchdogs stop
/// the processes when the test process exits).
fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let nodes = start_static_nodes(&["a", "b", "c"]);
        let refs: Vec<&ClusterNode> = nodes.iter().collect();
        wait_ring_members(&refs, 3, Duration::from_secs(20));
        let auth = Node::start(&["--no-pin", "--max-memory", "64MiB", "--auth-token", TOKEN]);
        Cluster { nodes, auth }
    })
}

fn ports(cluster: &Cluster) -> Vec<u16> {
    cluster
        .nodes
        .iter()
        .map(|n| resp_port(n.http_port))
        .collect()
}

/// `redis-cli -p PORT args...` with `input` on stdin.
fn redis_cli(port: u16, args: &[&str], input: &str) -> Output {
    let mut child = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-cli (Debian: redis-tools; scripts/setup.sh installs it): {e}")
        });
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .expect("write to redis-cli");
    drop(stdin);
    child.wait_with_output().expect("redis-cli output")
}

/// The non-empty lines redis-cli printed (it follows an error with an
/// empty line).
fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn redis_cli_scripted_sessions_across_the_cluster() {
    let cluster = cluster();
    let p = ports(cluster);
    let key = format!("cli:{}", std::process::id());
    // One session on node a: commands from stdin, one reply per line.
    let script = format!(
        "PING\nSET {key} hello\nGET {key}\nSET {key}:t v EX 100\nTTL {key}:t\n\
         MSET {key}:1 one {key}:2 two\nGET\nNOSUCH x\nINCR {key}:n\nSETEX {key}:x soon v\n"
    );
    let out = redis_cli(p[0], &[], &script);
    let lines = stdout_lines(&out);
    assert_eq!(lines[0], "PONG", "{lines:?}");
    assert_eq!(lines[1], "OK");
    assert_eq!(lines[2], "hello");
    assert_eq!(lines[3], "OK");
    let ttl: i64 = lines[4].parse().unwrap_or(-100);
    assert!((95..=111).contains(&ttl), "TTL {ttl}");
    assert_eq!(lines[5], "OK");
    assert_eq!(
        lines[6], "ERR wrong number of arguments for 'get' command",
        "{lines:?}"
    );
    assert!(
        lines[7].starts_with("ERR unknown command 'NOSUCH'"),
        "{lines:?}"
    );
    assert_eq!(lines[8], "1", "INCR of a missing key: {lines:?}");
    assert_eq!(lines[9], "ERR value is not an integer or out of range");

    // Read through the other nodes; MGET gathers in order.
    let out = redis_cli(
        p[1],
        &["MGET", &format!("{key}:1"), "nope", &format!("{key}:2")],
        "",
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text, "one\n\ntwo\n", "nil in the middle");
    let out = redis_cli(p[2], &["GET", &key], "");
    assert_eq!(stdout_lines(&out), ["hello"]);
    // RESP3 session on node c.
    let out = redis_cli(
        p[2],
        &["-3"],
        &format!("HELLO 3\nGET {key}\nGET {key}:none\n"),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("proto") && text.contains('3'), "{text}");
    assert!(text.contains("hello"), "{text}");
    // Delete through b; gone through a.
    let out = redis_cli(
        p[1],
        &["DEL", &key, &format!("{key}:1"), &format!("{key}:2")],
        "",
    );
    assert_eq!(stdout_lines(&out), ["3"]);
    let out = redis_cli(p[0], &["EXISTS", &key], "");
    assert_eq!(stdout_lines(&out), ["0"]);
    // NEXUS.OWNER names one of the three nodes.
    let out = redis_cli(p[0], &["NEXUS.OWNER", &key], "");
    let owner = stdout_lines(&out);
    assert_eq!(owner.first().map(String::as_str), Some("node"), "{owner:?}");
    assert!(["a", "b", "c"].contains(&owner[1].as_str()), "{owner:?}");
}

/// redis-cli prints a nil as an empty line and follows an error with one.
#[test]
fn redis_cli_scripted_session_of_atomic_commands_across_the_cluster() {
    let cluster = cluster();
    let p = ports(cluster);
    let key = format!("cli-atomic:{}", std::process::id());
    let script = format!(
        "SET {key} 10 NX\nSET {key} 11 NX\nSETNX {key} 12\nINCR {key}\nINCRBY {key} 5\n\
         DECR {key}\nDECRBY {key} 2\nSET {key} 20 XX GET\nGETSET {key} abc\nINCR {key}\n\
         EXPIRE {key} 100 NX\nEXPIRE {key} 100 NX\nEXPIRE {key} 50 GT\nTTL {key}\n\
         PERSIST {key}\nTTL {key}\nAPPEND {key} def\nGETEX {key} PX 60000\n\
         GETDEL {key}\nGETDEL {key}\nSET {key} 9223372036854775807\nINCR {key}\n\
         PEXPIRE {key} -1\nEXISTS {key}\n"
    );
    // Each command through a node of its own, in turn.
    let mut lines = Vec::new();
    let commands: Vec<&str> = script.lines().collect();
    for (i, chunk) in commands.chunks(8).enumerate() {
        let out = redis_cli(p[i % 3], &[], &format!("{}\n", chunk.join("\n")));
        assert!(out.status.success(), "redis-cli: {out:?}");
        lines.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>(),
        );
    }
    let ttl = lines.get(14).and_then(|l| l.parse::<i64>().ok());
    assert!(
        ttl.is_some_and(|t| (95..=111).contains(&t)),
        "TTL after EXPIRE NX: {lines:?}"
    );
    lines[14] = "<ttl>".into();
    let want = [
        "OK",
        "",
        "0",
        "11",
        "16",
        "15",
        "13",
        "13",
        "20",
        "ERR value is not an integer or out of range",
        "",
        "1",
        "0",
        "0",
        "<ttl>",
        "1",
        "-1",
        "6",
        "abcdef",
        "abcdef",
        "",
        "OK",
        "ERR increment or decrement would overflow",
        "",
        "1",
        "0",
    ];
    assert_eq!(lines, want);
}

#[test]
fn redis_cli_pipe_mode_sends_a_thousand_commands() {
    let cluster = cluster();
    let p = ports(cluster);
    let mut raw = String::new();
    for i in 0..1000 {
        match i % 4 {
            0 => raw.push_str(&format!("SET pipe:{i} v{i}\r\n")),
            1 => raw.push_str(&format!("GET pipe:{}\r\n", i - 1)),
            2 => raw.push_str(&format!("DEL pipe:{}\r\n", i - 2)),
            _ => raw.push_str("PING\r\n"),
        }
    }
    let out = redis_cli(p[1], &["--pipe"], &raw);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("errors: 0, replies: 1000"), "{text}");
}

#[test]
fn redis_cli_noauth_and_wrongpass() {
    let cluster = cluster();
    let port = resp_port(cluster.auth.port);
    let out = redis_cli(port, &["GET", "k"], "");
    assert_eq!(stdout_lines(&out), ["NOAUTH Authentication required."]);
    let out = redis_cli(port, &["--no-auth-warning", "-a", "wrong", "GET", "k"], "");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("WRONGPASS invalid username-password pair or user is disabled."),
        "{all}"
    );
    let out = redis_cli(
        port,
        &["--no-auth-warning", "-a", TOKEN, "SET", "k", "v"],
        "",
    );
    assert_eq!(stdout_lines(&out), ["OK"]);
    let out = redis_cli(
        port,
        &[
            "--no-auth-warning",
            "--user",
            "default",
            "--pass",
            TOKEN,
            "GET",
            "k",
        ],
        "",
    );
    assert_eq!(stdout_lines(&out), ["v"]);
}

/// redis-py, RESP2 and RESP3: every command of the issue across the three
/// nodes (atomic ones included), pipelines of 1,000 mixed commands, and
/// Redis's errors.
#[test]
fn python_redis_client_resp2_and_resp3() {
    run_python_checks("commands");
}

/// redis-py clients racing over the cluster: 8 clients on the 3 nodes each
/// INCR one key 10,000 times (exactly 80,000); clients on every node race
/// SET NX on the same keys (exactly one winner per key).
#[test]
fn python_redis_clients_are_atomic_across_the_cluster() {
    run_python_checks("atomicity");
}

/// Runs `tests/resp_clients.py --only <part>` against the cluster and
/// fails with its output (and the nodes' logs) unless every check passed.
fn run_python_checks(part: &str) {
    let cluster = cluster();
    let p = ports(cluster);
    let venv = common::python_venv("resp-clients-venv");
    let nodes = p.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    let args = [
        "--nodes".to_string(),
        nodes,
        "--auth-port".to_string(),
        resp_port(cluster.auth.port).to_string(),
        "--token".to_string(),
        TOKEN.to_string(),
        "--venv".to_string(),
        venv.display().to_string(),
        "--only".to_string(),
        part.to_string(),
    ];
    let (status, output) = common::run_python_script("resp_clients.py", &args, SCRIPT_DEADLINE);
    match status.code() {
        // The per-check lines and the atomicity timings, for --nocapture.
        Some(0) => println!("{output}"),
        Some(common::PYTHON_DEPS_FAILED) => panic!(
            "redis-py could not be installed into {}; output:\n{output}",
            venv.display()
        ),
        _ => {
            let logs: Vec<String> = cluster.nodes.iter().map(|n| n.log_text()).collect();
            panic!(
                "resp_clients.py failed ({status}); output:\n{output}\nnode logs:\n{}",
                logs.join("\n---\n")
            )
        }
    }
}
