//! Process lifecycle and configuration: SIGTERM/SIGINT drain and exit 0,
//! in-flight requests finishing, `--print-config`, flags > env > file >
//! defaults, invalid values rejected with a one-line error.
//!
//! What "draining" means here: after SIGTERM, within 2 s, a NEW connection
//! to the HTTP port is either refused/reset (listener closed) or answered
//! `503 draining\n` on /readyz. Either is accepted; a 200 ever after that
//! point is not. The process must then exit with code 0 within
//! `--shutdown-grace` + 2 s of the signal.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

#[derive(Debug, PartialEq)]
enum Drain {
    Refused,
    Reset,
    Draining503,
}

/// Polls new connections until the node shows it is draining.
fn observe_drain(port: u16, deadline: Duration) -> Drain {
    let start = Instant::now();
    loop {
        match Conn::try_connect(port) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Drain::Refused,
            Err(e) => panic!("connect during drain: {e}"),
            Ok(mut c) => {
                if c.try_send(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                    .is_err()
                {
                    return Drain::Reset;
                }
                match c.try_read_response() {
                    Ok(r) if r.status == 503 => {
                        assert_eq!(r.body, b"draining\n", "503 body: {}", r.describe());
                        return Drain::Draining503;
                    }
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => panic!("/readyz during drain answered {}", r.describe()),
                    Err(ReadError::Eof) | Err(ReadError::Io(..)) => return Drain::Reset,
                    Err(e) => panic!("/readyz during drain: {e:?}"),
                }
            }
        }
        assert!(
            start.elapsed() < deadline,
            "still ready {deadline:?} after SIGTERM"
        );
        std::thread::sleep(POLL);
    }
}

fn assert_exit_zero(n: &mut Node, within: Duration, what: &str) {
    match n.wait_exit(within) {
        Some(s) => assert_eq!(
            s.code(),
            Some(0),
            "{what}: exit status {s:?}; log:\n{}",
            n.log_text()
        ),
        None => panic!(
            "{what}: process still running {within:?} after the signal; log:\n{}",
            n.log_text()
        ),
    }
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let mut n = Node::start(&["--shutdown-grace", "2"]);
    let mut idle = n.conn();
    idle.assert_usable("keep-alive before SIGTERM");
    let t0 = Instant::now();
    n.signal("TERM");
    let how = observe_drain(n.port, Duration::from_secs(2));
    eprintln!("drain observed as {how:?}");
    // Once draining, never ready again.
    if how == Drain::Draining503 {
        if let Ok(mut c) = Conn::try_connect(n.port) {
            if c.try_send(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                .is_ok()
            {
                if let Ok(r) = c.try_read_response() {
                    assert_eq!(
                        r.status,
                        503,
                        "ready again after draining: {}",
                        r.describe()
                    );
                }
            }
        }
    }
    let left = Duration::from_secs(4).saturating_sub(t0.elapsed());
    assert_exit_zero(
        &mut n,
        left,
        "SIGTERM with an idle keep-alive connection open",
    );
    // The idle keep-alive connection was closed, not left hanging.
    match idle.wait_closed(Duration::from_secs(1)) {
        Ok(_) => {}
        Err(e) => panic!("idle connection after exit: {e}"),
    }
}

#[test]
fn sigterm_lets_in_flight_request_finish() {
    let mut n = Node::start(&["--shutdown-grace", "5"]);
    let k = uniq("inflight");
    let mut c = n.conn();
    // Expect: 100-continue proves the server has parsed the head, so the
    // request is in flight when the signal arrives.
    c.send(format!("PUT /v1/keys/{k} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 100, "{}", r.describe());
    let t0 = Instant::now();
    n.signal("TERM");
    let how = observe_drain(n.port, Duration::from_secs(2));
    eprintln!("drain observed as {how:?}");
    c.send(b"hello");
    let r = c.try_read_response().unwrap_or_else(|e| {
        panic!(
            "in-flight request was not finished after SIGTERM: {e:?}; log:\n{}",
            n.log_text()
        )
    });
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"ok\n"[..]),
        "in-flight PUT: {}",
        r.describe()
    );
    // The server then closes this connection (it is shutting down).
    if let Err(e) = c.wait_closed(Duration::from_secs(5)) {
        panic!("connection not closed after the in-flight response during drain: {e}");
    }
    let left = Duration::from_secs(7).saturating_sub(t0.elapsed());
    assert_exit_zero(&mut n, left, "SIGTERM with an in-flight request");
}

#[test]
fn sigint_exits_zero() {
    let mut n = Node::start(&["--shutdown-grace", "1"]);
    n.signal("INT");
    assert_exit_zero(&mut n, Duration::from_secs(3), "SIGINT");
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// Top-level `key = value` pairs of a TOML document (values raw, strings
/// unquoted). Panics on lines that are not TOML.
fn toml_pairs(text: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        assert!(
            !t.starts_with('['),
            "--print-config should print a flat table, got section {t:?}"
        );
        let (k, v) = t
            .split_once('=')
            .unwrap_or_else(|| panic!("not a TOML key/value line: {line:?}\n{text}"));
        let k = k.trim();
        assert!(
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad TOML key {k:?}"
        );
        let v = v.trim();
        let v = v.split(" #").next().unwrap().trim();
        let v = if v.starts_with('"') {
            assert!(
                v.ends_with('"') && v.len() >= 2,
                "unterminated string in {line:?}"
            );
            v[1..v.len() - 1].to_string()
        } else {
            assert!(
                v == "true" || v == "false" || v.parse::<f64>().is_ok() || v.starts_with('['),
                "not a TOML value: {line:?}"
            );
            v.to_string()
        };
        assert!(map.insert(k.to_string(), v).is_none(), "duplicate key {k}");
    }
    map
}

fn print_config(args: &[&str], envs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut a = vec!["serve"];
    a.extend_from_slice(args);
    a.push("--print-config");
    let (st, out, err) = run_bin(&a, envs, Duration::from_secs(10));
    assert!(
        st.success(),
        "`nexuscache {}` exited {st:?}; stderr:\n{err}",
        a.join(" ")
    );
    toml_pairs(&out)
}

fn num(map: &HashMap<String, String>, k: &str) -> f64 {
    let v = map
        .get(k)
        .unwrap_or_else(|| panic!("--print-config lacks {k}: {map:?}"));
    v.parse()
        .unwrap_or_else(|_| panic!("{k} = {v:?} is not a number"))
}

/// `max_memory` may be printed as bytes or as a size string.
fn bytes(map: &HashMap<String, String>, k: &str) -> f64 {
    let v = map
        .get(k)
        .unwrap_or_else(|| panic!("--print-config lacks {k}"));
    if let Ok(n) = v.parse::<f64>() {
        return n;
    }
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("{k} = {v:?}"));
    n * match unit.trim() {
        "KiB" => 1024.0,
        "MiB" => 1048576.0,
        "GiB" => 1073741824.0,
        "" | "B" => 1.0,
        u => panic!("{k}: unit {u:?} in printed config"),
    }
}

#[test]
fn print_config_defaults() {
    let m = print_config(&[], &[]);
    assert_eq!(m.get("bind").map(String::as_str), Some("127.0.0.1"));
    assert_eq!(num(&m, "http_port"), 9999.0);
    assert!(num(&m, "cores") >= 1.0);
    assert_eq!(bytes(&m, "max_memory"), 268_435_456.0);
    assert_eq!(num(&m, "max_key_bytes"), 1024.0);
    assert_eq!(bytes(&m, "max_value_bytes"), 1_048_576.0);
    assert_eq!(num(&m, "ttl_jitter"), 0.1);
    assert_eq!(num(&m, "ttl_jitter_max"), 180.0);
    assert_eq!(num(&m, "sweep_interval_ms"), 1000.0);
    assert_eq!(num(&m, "idle_timeout"), 60.0);
    assert_eq!(num(&m, "header_timeout"), 10.0);
    assert_eq!(num(&m, "shutdown_grace"), 10.0);
}

#[test]
fn print_config_reflects_flags_and_exits_without_serving() {
    let port = free_port();
    let p = port.to_string();
    let m = print_config(
        &[
            "--http-port",
            &p,
            "--cores",
            "2",
            "--max-memory",
            "8MiB",
            "--ttl-jitter",
            "0",
            "--max-key-bytes",
            "77",
        ],
        &[],
    );
    assert_eq!(num(&m, "http_port"), port as f64);
    assert_eq!(num(&m, "cores"), 2.0);
    assert_eq!(bytes(&m, "max_memory"), 8.0 * 1_048_576.0);
    assert_eq!(num(&m, "ttl_jitter"), 0.0);
    assert_eq!(num(&m, "max_key_bytes"), 77.0);
    // It did not leave a server behind on that port.
    assert!(
        Conn::try_connect(port).is_err(),
        "--print-config left something listening on {port}"
    );
}

#[test]
fn precedence_flag_env_file_default() {
    let file = temp_path("prec.toml");
    std::fs::write(&file, "max_key_bytes = 100\nidle_timeout = 7\n").unwrap();
    let f = file.to_str().unwrap();
    let m = print_config(&["--config", f], &[]);
    assert_eq!(num(&m, "max_key_bytes"), 100.0, "file beats default");
    assert_eq!(num(&m, "idle_timeout"), 7.0, "file beats default");
    assert_eq!(
        num(&m, "header_timeout"),
        10.0,
        "default when nobody sets it"
    );
    let m = print_config(&["--config", f], &[("NEXUSCACHE_MAX_KEY_BYTES", "200")]);
    assert_eq!(num(&m, "max_key_bytes"), 200.0, "env beats file");
    assert_eq!(num(&m, "idle_timeout"), 7.0);
    let m = print_config(
        &["--config", f, "--max-key-bytes", "300"],
        &[("NEXUSCACHE_MAX_KEY_BYTES", "200")],
    );
    assert_eq!(num(&m, "max_key_bytes"), 300.0, "flag beats env");
    let m = print_config(
        &["--max-key-bytes", "300"],
        &[("NEXUSCACHE_MAX_KEY_BYTES", "200")],
    );
    assert_eq!(num(&m, "max_key_bytes"), 300.0, "flag beats env (no file)");
    let m = print_config(
        &[],
        &[
            ("NEXUSCACHE_TTL_JITTER_MAX", "5"),
            ("NEXUSCACHE_SWEEP_INTERVAL_MS", "50"),
        ],
    );
    assert_eq!(num(&m, "ttl_jitter_max"), 5.0, "multi-word env name");
    assert_eq!(num(&m, "sweep_interval_ms"), 50.0);
    // The config file may also be named in the environment.
    let m = print_config(&[], &[("NEXUSCACHE_CONFIG", f)]);
    assert_eq!(
        num(&m, "max_key_bytes"),
        100.0,
        "NEXUSCACHE_CONFIG names the file"
    );
}

#[test]
fn size_suffixes_accepted() {
    // Small --max-value-bytes so every size below leaves room for one
    // largest entry per core (this test is about parsing only).
    let small = [
        "--max-value-bytes",
        "1KiB",
        "--max-key-bytes",
        "16",
        "--cores",
        "2",
    ];
    for s in ["1048576", "1024KiB", "1MiB", "1GiB", "1000KB", "1MB", "1GB"] {
        let mut a = small.to_vec();
        a.extend_from_slice(&["--max-memory", s]);
        let m = print_config(&a, &[]);
        assert!(m.contains_key("max_memory"), "{s}");
    }
    let mut a = small.to_vec();
    a.extend_from_slice(&["--max-memory", "3MiB"]);
    assert_eq!(bytes(&print_config(&a, &[]), "max_memory"), 3.0 * 1048576.0);
    assert_eq!(
        bytes(
            &print_config(&["--max-value-bytes", "2KiB"], &[]),
            "max_value_bytes"
        ),
        2048.0
    );
}

#[test]
fn env_http_port_serves() {
    let n = Node::start_with(|port| Spec {
        args: vec!["serve".into(), "--cores".into(), "2".into()],
        envs: vec![("NEXUSCACHE_HTTP_PORT".into(), port.to_string())],
    });
    // start_with polled /readyz on the env port: it is serving there.
    assert_eq!(n.get("/healthz").body, b"ok\n");
}

#[test]
fn flag_beats_env_when_serving() {
    let env_port = free_port();
    let n = Node::start_with(|port| {
        let mut s = Spec::serve(port, &[]);
        s.envs
            .push(("NEXUSCACHE_HTTP_PORT".into(), env_port.to_string()));
        s
    });
    assert_eq!(n.get("/healthz").body, b"ok\n");
    assert!(
        Conn::try_connect(env_port).is_err(),
        "also listening on the env port {env_port}"
    );
}

#[test]
fn bind_flag_selects_the_address() {
    // 127.0.0.2 is loopback on Linux: listening there, not on 127.0.0.1.
    let ip = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let port = free_port();
    let mut n = spawn(port, &Spec::serve(port, &["--bind", "127.0.0.2"]));
    let start = Instant::now();
    let mut c = loop {
        if let Some(st) = n.try_exit_status() {
            panic!(
                "exited {st:?} with --bind 127.0.0.2; log:\n{}",
                n.log_text()
            );
        }
        if let Ok(mut c) = Conn::try_connect_ip(ip, port) {
            if c.try_send(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                .is_ok()
            {
                if let Ok(r) = c.try_read_response() {
                    if r.status == 200 {
                        break c;
                    }
                }
            }
        }
        assert!(
            start.elapsed() < READY_DEADLINE,
            "not ready on 127.0.0.2:{port}; log:\n{}",
            n.log_text()
        );
        std::thread::sleep(POLL);
    };
    c.assert_usable("on 127.0.0.2");
    assert!(
        Conn::try_connect(port).is_err(),
        "--bind 127.0.0.2 but 127.0.0.1:{port} accepts"
    );
}

#[test]
fn config_file_serves_and_env_beats_file() {
    // File only.
    let n = Node::start_with(|port| {
        let file = temp_path("serve.toml");
        std::fs::write(
            &file,
            format!("http_port = {port}\ncores = 2\nmax_value_bytes = 10\n"),
        )
        .unwrap();
        Spec {
            args: vec![
                "serve".into(),
                "--config".into(),
                file.to_str().unwrap().into(),
            ],
            envs: vec![],
        }
    });
    let k = uniq("cfg");
    let mut c = n.conn();
    let r = c.request("PUT", &format!("/v1/keys/{k}"), &[], b"0123456789");
    assert_eq!(
        r.status,
        200,
        "10 bytes within file's max_value_bytes: {}",
        r.describe()
    );
    let r = c.request("PUT", &format!("/v1/keys/{k}"), &[], b"0123456789A");
    assert_eq!(
        r.status,
        413,
        "max_value_bytes = 10 from the file: {}",
        r.describe()
    );
    drop(n);

    // Env beats file.
    let file_port = free_port();
    let n = Node::start_with(|port| {
        let file = temp_path("serve2.toml");
        std::fs::write(&file, format!("http_port = {file_port}\ncores = 2\n")).unwrap();
        Spec {
            args: vec![
                "serve".into(),
                "--config".into(),
                file.to_str().unwrap().into(),
            ],
            envs: vec![("NEXUSCACHE_HTTP_PORT".into(), port.to_string())],
        }
    });
    assert_eq!(n.get("/healthz").body, b"ok\n");
    assert!(
        Conn::try_connect(file_port).is_err(),
        "also listening on the file's port {file_port}"
    );
}

#[test]
fn printed_config_round_trips_as_config_file() {
    let n = Node::start_with(|port| {
        let p = port.to_string();
        let (st, out, err) = run_bin(
            &[
                "serve",
                "--http-port",
                &p,
                "--cores",
                "2",
                "--max-value-bytes",
                "20",
                "--print-config",
            ],
            &[],
            Duration::from_secs(10),
        );
        assert!(st.success(), "print-config: {err}");
        let file = temp_path("roundtrip.toml");
        std::fs::write(&file, out).unwrap();
        Spec {
            args: vec![
                "serve".into(),
                "--config".into(),
                file.to_str().unwrap().into(),
            ],
            envs: vec![],
        }
    });
    let r = n.req("PUT", &format!("/v1/keys/{}", uniq("rt")), &[b'x'; 21]);
    assert_eq!(
        r.status,
        413,
        "max_value_bytes from the printed config: {}",
        r.describe()
    );
}

/// Runs a command that must fail fast with a one-line error naming `flag`.
fn assert_rejected(args: &[&str], envs: &[(&str, &str)], names: &[&str], what: &str) {
    let (st, out, err) = run_bin(args, envs, Duration::from_secs(10));
    assert!(
        !st.success(),
        "{what}: exited successfully; stdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "{what}: panicked instead of a clean error:\n{err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "{what}: no error message on stderr");
    let first = lines[0];
    assert!(
        names.iter().any(|n| first.contains(n)),
        "{what}: first stderr line should name {names:?}: {first:?}\nfull stderr:\n{err}"
    );
    // One error line, optionally followed by clap's "For more information" hint.
    assert!(
        lines.len() == 1 || (lines.len() == 2 && lines[1].contains("--help")),
        "{what}: error should be one line, got:\n{err}"
    );
}

#[test]
fn invalid_values_rejected() {
    let p = free_port().to_string();
    let flag_cases: &[(&[&str], &str)] = &[
        (&["--max-memory", "lots"], "max-memory"),
        (&["--max-memory=-5MiB"], "max-memory"),
        (&["--max-value-bytes", "10XB"], "max-value-bytes"),
        (&["--cores", "0"], "cores"),
        (&["--cores", "many"], "cores"),
        (&["--ttl-jitter", "abc"], "ttl-jitter"),
        (&["--idle-timeout=-5"], "idle-timeout"),
        (&["--max-key-bytes", "x"], "max-key-bytes"),
        (&["--cpuset", "99"], "cpuset"),
        (&["--bind", "localhost:80"], "bind"),
        (&["--ttl-jitter", "1.5"], "ttl-jitter"),
    ];
    for (args, flag) in flag_cases {
        let mut a = vec!["serve", "--http-port", &p];
        a.extend_from_slice(args);
        assert_rejected(&a, &[], &[flag], &a.join(" "));
    }
    assert_rejected(
        &["serve", "--http-port", "0"],
        &[],
        &["http-port"],
        "--http-port 0",
    );
    assert_rejected(
        &["serve", "--http-port", "70000"],
        &[],
        &["http-port"],
        "--http-port 70000",
    );
    assert_rejected(
        &["serve", "--http-port", &p],
        &[("NEXUSCACHE_MAX_MEMORY", "lots")],
        &["max-memory", "MAX_MEMORY", "max_memory"],
        "NEXUSCACHE_MAX_MEMORY=lots",
    );
    let file = temp_path("bad.toml");
    std::fs::write(&file, "max_memory = \"lots\"\n").unwrap();
    assert_rejected(
        &[
            "serve",
            "--http-port",
            &p,
            "--config",
            file.to_str().unwrap(),
        ],
        &[],
        &["max_memory", "max-memory"],
        "config file max_memory = \"lots\"",
    );
    let missing = temp_path("does-not-exist.toml");
    let (st, _, err) = run_bin(
        &[
            "serve",
            "--http-port",
            &p,
            "--config",
            missing.to_str().unwrap(),
        ],
        &[],
        Duration::from_secs(10),
    );
    assert!(!st.success(), "missing config file accepted");
    assert!(
        err.contains("does-not-exist.toml"),
        "error should name the missing file: {err}"
    );
    let (st, _, _) = run_bin(&["serve", "--no-such-flag"], &[], Duration::from_secs(10));
    assert!(!st.success(), "unknown flag accepted");
}
