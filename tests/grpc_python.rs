//! Interop with the reference gRPC implementation: `tests/grpc_interop.py`
//! (Python grpcio, stubs generated from `proto/` at run time) against a real
//! node. The script installs grpcio into a venv under the target directory
//! on first run, which needs PyPI.

mod common;
mod grpc_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use grpc_common::GrpcNode;

/// First run downloads and installs grpcio and grpcio-tools.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(900);
/// The script's exit code when it cannot install its dependencies.
const DEPS_FAILED: i32 = 3;
const MAX_VALUE_BYTES: usize = 64 * 1024;

#[test]
fn python_grpcio_client_interoperates() {
    let node = GrpcNode::start(&["--max-value-bytes", &MAX_VALUE_BYTES.to_string()]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc_interop.py");
    // <target>/grpc-interop-venv, kept between runs (the script's default
    // location when the target directory is the usual one).
    let target_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = target_tmp
        .parent()
        .unwrap_or(target_tmp)
        .join("grpc-interop-venv");
    let out = common::temp_path("grpc-interop.out");
    let log = std::fs::File::create(&out).expect("create output file");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("--target")
        .arg(format!("127.0.0.1:{}", node.grpc_port))
        .arg("--max-value-bytes")
        .arg(MAX_VALUE_BYTES.to_string())
        .arg("--venv")
        .arg(&venv)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup output file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 (needed for the grpcio interop test; Debian: python3 python3-venv): {e}")
        });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python3") {
            break status;
        }
        if started.elapsed() > SCRIPT_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "grpc_interop.py did not finish within {SCRIPT_DEADLINE:?}; output:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&out).unwrap_or_default();
    match status.code() {
        Some(0) => {}
        Some(DEPS_FAILED) => panic!(
            "the Python gRPC dependencies (grpcio, grpcio-tools) could not be installed \
             into {}; output:\n{output}",
            venv.display()
        ),
        _ => panic!(
            "grpc_interop.py failed ({status}); output:\n{output}\nnode log:\n{}",
            node.node.log_text()
        ),
    }
}
