//! Crash-stop: a panic on a data core ends the whole process with a
//! non-zero status and one log line naming the thread and the panic, so a
//! supervisor and etcd's lease see a dead node; and a config value that
//! used to panic every core (`--idle-timeout u64::MAX`) is refused at start.
//!
//! The panic comes from the test-only fault-injection hook
//! (`NEXUSCACHE_FAULT_PANIC_CORE`, compiled in through the crate's self
//! dev-dependency with the `fault-injection` feature).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{free_port, spawn, Spec};

#[test]
fn a_panic_on_a_core_ends_the_process_with_one_line_naming_it() {
    let port = free_port();
    let mut spec = Spec::serve(port, &[]);
    spec.envs
        .push(("NEXUSCACHE_FAULT_PANIC_CORE".into(), "1".into()));
    let mut node = spawn(port, &spec);

    // Connections land on either core (SO_REUSEPORT); the first one core 1
    // accepts makes it panic. Keep connecting until the process is gone.
    let started = Instant::now();
    let mut connected = 0;
    let status = loop {
        if let Some(status) = node.try_exit_status() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the node did not exit after {connected} connections; log:\n{}",
            node.log_text()
        );
        if let Ok(mut stream) = TcpStream::connect(node.addr()) {
            connected += 1;
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut answer = [0u8; 256];
            let _ = stream.read(&mut answer);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = node.log_text();
    assert!(!status.success(), "exit status {status} must be a failure");
    assert_eq!(
        status.code(),
        Some(101),
        "crash-stop exits with 101: {status}"
    );
    let crash_lines: Vec<&str> = log.lines().filter(|l| l.contains("panicked at")).collect();
    assert_eq!(crash_lines.len(), 1, "one crash line; log:\n{log}");
    let line = crash_lines[0];
    for expected in [
        "thread 'nc-core-1-",
        "src/runtime/mod.rs:",
        "fault injection: NEXUSCACHE_FAULT_PANIC_CORE=1",
        "crash-stop",
    ] {
        assert!(line.contains(expected), "{expected:?} missing in {line:?}");
    }
    // The default hook's multi-line report is replaced.
    assert!(!log.contains("RUST_BACKTRACE"), "log:\n{log}");
    // Both ports are closed: the process is gone, not half-alive.
    assert!(TcpStream::connect(node.addr()).is_err());
}

#[test]
fn an_idle_timeout_that_would_overflow_is_refused_at_start() {
    let port = free_port();
    let spec = Spec::serve(port, &["--idle-timeout", "18446744073709551615"]);
    let mut node = spawn(port, &spec);
    let status = node
        .wait_exit(Duration::from_secs(10))
        .expect("the node must refuse to start");
    assert!(!status.success(), "{status}");
    let log = node.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line; log:\n{log}");
    assert!(lines[0].contains("--idle-timeout"), "{log}");
    assert!(TcpStream::connect(node.addr()).is_err());
}
