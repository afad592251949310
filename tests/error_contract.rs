//! Errors that cross nodes keep their meaning: a client hears what went
//! wrong where it went wrong, with that failure's own status and message,
//! not a wrapper around the forwarding hop.
//!
//! Static three-node clusters with `--cores 1`; a node is frozen with
//! SIGSTOP (alive, not answering) to make a hot copy impossible to update.

mod cluster_common;
mod common;
mod grpc_common;
mod origin_common;

use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cluster_common::{
    grpc_client, keys_owned_by, start_static_nodes_with, static_node, wait_ring_members,
    ClusterNode, MEMBERSHIP_DEADLINE,
};
use common::{assert_error, form, uniq};
use grpc_common::runtime;
use nexuscache::proto::SetRequest;
use origin_common::Origin;

fn cluster(names: &[&str], extra: &[&str]) -> Vec<ClusterNode> {
    let mut flags = vec!["--cores", "1"];
    flags.extend_from_slice(extra);
    let nodes = start_static_nodes_with(names, &flags);
    let refs: Vec<&ClusterNode> = nodes.iter().collect();
    wait_ring_members(&refs, names.len() as u64, MEMBERSHIP_DEADLINE);
    nodes
}

/// A hot write sent to a node that does not own the key, while a third
/// node (alive but frozen) holds a copy the owner cannot update: the owner
/// stored the write and refused to acknowledge it. The client must hear
/// exactly that (503, naming the frozen node), over HTTP and over gRPC,
/// not that the owner was unavailable.
#[test]
fn a_forwarded_hot_write_whose_copy_missed_names_the_copy_not_the_owner() {
    let nodes = cluster(&["a", "b", "c"], &["--peer-timeout-ms", "300"]);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let keys = keys_owned_by(a, &["a"], 2, &uniq("nested"));
    let (http_key, grpc_key) = (&keys[0][0], &keys[0][1]);
    c.signal("STOP");
    let http = b.request(
        "POST",
        "/api/set",
        form(&[
            ("key", http_key.as_bytes()),
            ("value", b"v1"),
            ("hot", b"true"),
        ])
        .as_bytes(),
    );
    let grpc = runtime().block_on(async {
        let mut client = grpc_client(b).await;
        client
            .set(SetRequest {
                key: grpc_key.as_bytes().to_vec(),
                value: b"v1".to_vec(),
                ttl_seconds: 0,
                hot: true,
                forwarded: false,
            })
            .await
    });
    c.signal("CONT");

    assert_error(&http, 503, "forwarded hot set while c is frozen");
    let body = String::from_utf8_lossy(&http.body);
    assert!(
        body.contains("stored on the owner") && body.contains("node c"),
        "the 503 must say the write is stored and name node c: {body}"
    );
    assert!(
        !body.contains("owner node a is unavailable"),
        "the owner answered; it was not unavailable: {body}"
    );

    let status = grpc.expect_err("forwarded gRPC hot set while c is frozen");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let message = status.message();
    assert!(
        message.contains("stored on the owner") && message.contains("node c"),
        "the status must say the write is stored and name node c: {message}"
    );
    assert!(
        !message.contains("owner node a is unavailable"),
        "the owner answered; it was not unavailable: {message}"
    );
}

/// A stand-in for a node that is draining: it accepts gRPC calls and
/// answers each exactly as a draining NexusCache node does (`UNAVAILABLE`,
/// "server is shutting down", reason `draining`). Returns its gRPC port,
/// a port for its (unused) HTTP address and the count of calls answered.
fn draining_peer() -> (u16, u16, Arc<AtomicUsize>) {
    let grpc = StdListener::bind("127.0.0.1:0").expect("bind the fake peer");
    let http = StdListener::bind("127.0.0.1:0").expect("bind the fake peer's http port");
    let (grpc_port, http_port) = (
        grpc.local_addr().unwrap().port(),
        http.local_addr().unwrap().port(),
    );
    grpc.set_nonblocking(true).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let answered = calls.clone();
    std::thread::spawn(move || {
        let _http = http;
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(grpc).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let answered = answered.clone();
                tokio::spawn(serve_draining(stream, answered));
            }
        });
    });
    (grpc_port, http_port, calls)
}

async fn serve_draining(stream: tokio::net::TcpStream, answered: Arc<AtomicUsize>) {
    use tokio::io::AsyncReadExt;
    // A peer core announces the core it wants ("NXHOME" + u16) before
    // the HTTP/2 preface; a draining node reads it like any other.
    let mut stream = stream;
    let mut first = [0u8; 8];
    if matches!(stream.peek(&mut first).await, Ok(n) if n >= 1 && first[0] == b'N') {
        let _ = stream.read_exact(&mut first).await;
    }
    let Ok(mut connection) = h2::server::handshake(stream).await else {
        return;
    };
    while let Some(Ok((_request, mut respond))) = connection.accept().await {
        let response = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", "14")
            .header("grpc-message", "server is shutting down")
            .header("nexuscache-reason", "draining")
            .body(())
            .unwrap();
        let _ = respond.send_response(response, true);
        answered.fetch_add(1, Ordering::SeqCst);
    }
}

/// A read of a key whose owner answers that it is draining: the owner is
/// going away, like one that cannot be reached, so the reading node loads
/// the key from the origin itself (not kept: only owners cache origin
/// values) instead of reporting that the origin failed.
#[test]
fn a_read_whose_owner_is_draining_loads_from_the_origin_here() {
    let origin = Origin::start();
    let (grpc_port, http_port, calls) = draining_peer();
    let peers = format!("b=127.0.0.1:{http_port}/127.0.0.1:{grpc_port}");
    let mut a = static_node("a", &peers);
    let template = origin.url_template();
    a.start_with(&["--cores", "1", "--origin", &template]);
    wait_ring_members(&[&a], 2, MEMBERSHIP_DEADLINE);
    let key = (0..10_000)
        .map(|i| format!("{}-{i}", uniq("draining-owner")))
        .find(|k| a.owner(k).node == "b")
        .expect("a key owned by b");

    let r = a.get(&key);
    assert!(
        calls.load(Ordering::SeqCst) >= 1,
        "the read must have asked the owner first"
    );
    assert_eq!(
        r.status,
        200,
        "a draining owner is not an origin failure: {}",
        r.describe()
    );
    assert_eq!(r.body_str(), format!("value=origin:{key}"));
    assert_eq!(origin.count(&key), 1, "loaded from the origin once, here");
}
