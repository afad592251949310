//! Interop with the reference gRPC implementation: `tests/grpc_interop.py`
//! (Python grpcio, stubs generated from `proto/` at run time) against a real
//! node. The script installs grpcio into a venv under the target directory
//! on first run, which needs PyPI.

mod common;
mod grpc_common;

use std::time::Duration;

use grpc_common::GrpcNode;

/// First run downloads and installs grpcio and grpcio-tools.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(900);
const MAX_VALUE_BYTES: usize = 64 * 1024;

#[test]
fn python_grpcio_client_interoperates() {
    let node = GrpcNode::start(&["--max-value-bytes", &MAX_VALUE_BYTES.to_string()]);
    let venv = common::python_venv("grpc-interop-venv");
    let args = [
        "--target".to_string(),
        format!("127.0.0.1:{}", node.grpc_port),
        "--max-value-bytes".to_string(),
        MAX_VALUE_BYTES.to_string(),
        "--venv".to_string(),
        venv.display().to_string(),
    ];
    let (status, output) = common::run_python_script("grpc_interop.py", &args, SCRIPT_DEADLINE);
    match status.code() {
        Some(0) => {}
        Some(common::PYTHON_DEPS_FAILED) => panic!(
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
