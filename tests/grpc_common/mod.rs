//! gRPC additions to the shared harness (`tests/common`): start a node with
//! a known `--grpc-port` and wait until that port accepts connections, and
//! a tokio runtime for the tonic and h2 clients.
#![allow(dead_code)]

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{free_port, Node, Spec, POLL, READY_DEADLINE};

/// A running node and its gRPC port.
pub struct GrpcNode {
    pub node: Node,
    pub grpc_port: u16,
}

impl GrpcNode {
    /// `serve --http-port P --grpc-port G --cores 2 <extra>`, ready on both
    /// ports (retries with new ports if either was taken).
    pub fn start(extra: &[&str]) -> GrpcNode {
        let chosen = Cell::new(0u16);
        let node = Node::start_with(|http_port| {
            let grpc_port = free_port();
            chosen.set(grpc_port);
            let grpc = grpc_port.to_string();
            let mut args = vec!["--grpc-port", grpc.as_str()];
            args.extend_from_slice(extra);
            Spec::serve(http_port, &args)
        });
        let grpc_port = chosen.get();
        wait_for_port(&node, grpc_port);
        GrpcNode { node, grpc_port }
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.grpc_port))
    }

    /// `http://127.0.0.1:G`, for tonic.
    pub fn grpc_uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }
}

/// Polls until the gRPC port accepts a TCP connection.
fn wait_for_port(node: &Node, port: u16) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let start = Instant::now();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(_) => return,
            Err(e) if start.elapsed() > READY_DEADLINE => panic!(
                "node is ready on HTTP port {} but its gRPC port {port} refuses connections \
                 ({e}); is `--grpc-port` wired to `api::grpc::serve_grpc_connection`? log:\n{}",
                node.port,
                node.log_text()
            ),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// A current-thread tokio runtime with I/O and timers, for one test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
