//! The gRPC API of a real node, from the outside: the generated tonic
//! client (what programs use), a raw tonic call for an unknown method, and
//! raw h2 for what a gRPC library would never send.
//!
//! One node serves every test in this file (`--cores 2`, so keys are owned
//! by both cores and requests cross the core mesh).

mod common;
mod grpc_common;

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use grpc_common::{runtime, GrpcNode};
use nexuscache::proto::cache_client::CacheClient;
use nexuscache::proto::{DeleteRequest, GetRequest, GetResponse, SetRequest};
use tonic::transport::Channel;
use tonic::Code;

const MAX_VALUE: usize = 64 * 1024;
const MAX_KEY: usize = 64;

static NODE: OnceLock<GrpcNode> = OnceLock::new();

fn node() -> &'static GrpcNode {
    NODE.get_or_init(|| GrpcNode::start(&["--max-value-bytes", "64KiB", "--max-key-bytes", "64"]))
}

async fn client(node: &GrpcNode) -> CacheClient<Channel> {
    let channel = Channel::from_shared(node.grpc_uri())
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to gRPC port {}: {e}", node.grpc_port));
    CacheClient::new(channel)
}

fn set(key: &[u8], value: &[u8], ttl_seconds: u64, hot: bool) -> SetRequest {
    SetRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ttl_seconds,
        hot,
        forwarded: false,
    }
}

fn get(key: &[u8]) -> GetRequest {
    GetRequest {
        key: key.to_vec(),
        forwarded: false,
        keep_copy: false,
    }
}

fn delete(key: &[u8]) -> DeleteRequest {
    DeleteRequest {
        key: key.to_vec(),
        forwarded: false,
    }
}

#[test]
fn set_get_delete_round_trip() {
    let node = node();
    let _log = node.node.log_on_panic();
    runtime().block_on(async {
        let mut c = client(node).await;
        let miss = c.get(get(b"grpc-rt")).await.unwrap().into_inner();
        assert_eq!(
            miss,
            GetResponse::default(),
            "a miss is OK with found=false"
        );

        c.set(set(b"grpc-rt", b"hello", 60, true)).await.unwrap();
        let hit = c.get(get(b"grpc-rt")).await.unwrap().into_inner();
        assert!(hit.found);
        assert_eq!(hit.value, b"hello");
        assert!(hit.hot);

        // Overwrite, with a binary value at the size limit.
        let big: Vec<u8> = (0..MAX_VALUE).map(|i| (i % 251) as u8).collect();
        c.set(set(b"grpc-rt", &big, 0, false)).await.unwrap();
        let hit = c.get(get(b"grpc-rt")).await.unwrap().into_inner();
        assert_eq!(hit.value, big);
        assert!(!hit.hot);

        assert!(
            c.delete(delete(b"grpc-rt"))
                .await
                .unwrap()
                .into_inner()
                .deleted
        );
        assert!(
            !c.delete(delete(b"grpc-rt"))
                .await
                .unwrap()
                .into_inner()
                .deleted
        );
        assert!(!c.get(get(b"grpc-rt")).await.unwrap().into_inner().found);
    });
}

#[test]
fn forwarded_requests_are_served_here() {
    let node = node();
    let _log = node.node.log_on_panic();
    runtime().block_on(async {
        let mut c = client(node).await;
        let mut req = set(b"grpc-fwd", b"v", 0, false);
        req.forwarded = true;
        c.set(req).await.unwrap();
        let mut req = get(b"grpc-fwd");
        req.forwarded = true;
        assert_eq!(c.get(req).await.unwrap().into_inner().value, b"v");
    });
}

#[test]
fn many_keys_across_cores_and_connections() {
    let node = node();
    let _log = node.node.log_on_panic();
    runtime().block_on(async {
        let mut writer = client(node).await;
        let mut reader = client(node).await;
        for i in 0..200 {
            let key = format!("grpc-many-{i}");
            writer
                .set(set(key.as_bytes(), key.as_bytes(), 0, false))
                .await
                .unwrap();
        }
        for i in 0..200 {
            let key = format!("grpc-many-{i}");
            let hit = reader.get(get(key.as_bytes())).await.unwrap().into_inner();
            assert_eq!(hit.value, key.as_bytes(), "{key}");
        }
    });
}

#[test]
fn grpc_and_http_share_the_cache() {
    let node = node();
    let _log = node.node.log_on_panic();
    runtime().block_on(async {
        let mut c = client(node).await;
        c.set(set(b"grpc-http", b"from-grpc", 0, false))
            .await
            .unwrap();
    });
    let r = node.node.get("/v1/keys/grpc-http");
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.body, b"from-grpc");
    let r = node.node.req("PUT", "/v1/keys/http-grpc", b"from-http");
    assert_eq!(r.status, 200, "{}", r.describe());
    runtime().block_on(async {
        let mut c = client(node).await;
        let hit = c.get(get(b"http-grpc")).await.unwrap().into_inner();
        assert_eq!(hit.value, b"from-http");
    });
}

#[test]
fn bad_input_gets_the_documented_statuses() {
    let node = node();
    let _log = node.node.log_on_panic();
    runtime().block_on(async {
        let mut c = client(node).await;
        let code = |r: Result<_, tonic::Status>| match r {
            Ok(_) => panic!("expected an error status"),
            Err(s) => (s.code(), s.message().to_string()),
        };

        let (status, message) = code(c.get(get(b"")).await.map(drop));
        assert_eq!(status, Code::InvalidArgument, "{message}");
        assert_eq!(
            code(c.set(set(b"", b"v", 0, false)).await.map(drop)).0,
            Code::InvalidArgument
        );
        assert_eq!(
            code(c.delete(delete(b"")).await.map(drop)).0,
            Code::InvalidArgument
        );

        let long = vec![b'k'; MAX_KEY + 1];
        assert_eq!(
            code(c.get(get(&long)).await.map(drop)).0,
            Code::InvalidArgument
        );
        c.get(get(&long[..MAX_KEY])).await.unwrap();

        let (status, message) = code(c.set(set(b"k", b"v", 259_201, false)).await.map(drop));
        assert_eq!(status, Code::InvalidArgument);
        assert!(message.contains("ttl"), "{message}");
        c.set(set(b"grpc-ttl-max", b"v", 259_200, false))
            .await
            .unwrap();

        // One byte over --max-value-bytes: the message fits, the value not.
        let over = vec![0u8; MAX_VALUE + 1];
        let (status, message) = code(c.set(set(b"k", &over, 0, false)).await.map(drop));
        assert_eq!(status, Code::ResourceExhausted, "{message}");
        // Far over: refused from the length prefix.
        let huge = vec![0u8; 4 * MAX_VALUE];
        let (status, message) = code(c.set(set(b"k", &huge, 0, false)).await.map(drop));
        assert_eq!(status, Code::ResourceExhausted, "{message}");

        // The channel still works after every refusal.
        c.set(set(b"grpc-after", b"ok", 0, false)).await.unwrap();
    });
}

#[test]
fn unknown_method_is_unimplemented() {
    let node = node();
    let _log = node.node.log_on_panic();
    runtime().block_on(async {
        let channel = Channel::from_shared(node.grpc_uri())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<GetRequest, GetResponse>::default();
        let path = http::uri::PathAndQuery::from_static("/nexuscache.v1.Cache/Nope");
        let status = grpc
            .unary(tonic::Request::new(get(b"k")), path, codec)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
        assert!(status.message().contains("Nope"), "{status:?}");
    });
}

/// What a gRPC library never sends, over a raw HTTP/2 connection.
#[test]
fn raw_http2_protocol_checks() {
    let node = node();
    let _log = node.node.log_on_panic();
    runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(node.grpc_addr())
            .await
            .unwrap();
        let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let message = framed(&prost::Message::encode_to_vec(&get(b"k")));

        let r = raw(&h2, "text/plain", &message).await;
        assert_eq!(r.status, 415, "{r:?}");

        let mut compressed = message.clone();
        compressed[0] = 1;
        let r = raw(&h2, "application/grpc", &compressed).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.grpc_status.as_deref(), Some("12"), "{r:?}");

        let r = raw(&h2, "application/grpc", &message).await;
        assert_eq!(r.grpc_status.as_deref(), Some("0"), "{r:?}");
        assert_eq!(r.content_type.as_deref(), Some("application/grpc"));
    });
}

#[derive(Debug)]
struct Raw {
    status: u16,
    content_type: Option<String>,
    grpc_status: Option<String>,
}

async fn raw(h2: &h2::client::SendRequest<Bytes>, content_type: &str, body: &[u8]) -> Raw {
    let request = http::Request::builder()
        .method("POST")
        .uri("http://127.0.0.1/nexuscache.v1.Cache/Get")
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut h2 = h2.clone().ready().await.unwrap();
    let (response, mut stream) = h2.send_request(request, false).unwrap();
    stream
        .send_data(Bytes::copy_from_slice(body), true)
        .unwrap();
    let response = response.await.unwrap();
    let (head, mut body) = response.into_parts();
    let header = |map: &http::HeaderMap, name: &str| {
        map.get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut grpc_status = header(&head.headers, "grpc-status");
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if let Some(trailers) = body.trailers().await.unwrap() {
        grpc_status = grpc_status.or_else(|| header(&trailers, "grpc-status"));
    }
    Raw {
        status: head.status.as_u16(),
        content_type: header(&head.headers, "content-type"),
        grpc_status,
    }
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&(message.len() as u32).to_be_bytes());
    v.extend_from_slice(message);
    v
}

#[test]
fn sigterm_with_open_grpc_connections_exits_cleanly() {
    let mut node = GrpcNode::start(&[]);
    let rt = runtime();
    let mut c = rt.block_on(client(&node));
    rt.block_on(c.set(set(b"k", b"v", 0, false))).unwrap();
    // The connection stays open (idle) while the node drains.
    node.node.signal("TERM");
    let status = node
        .node
        .wait_exit(Duration::from_secs(10))
        .expect("node still running 10 s after SIGTERM with a gRPC client connected");
    assert!(status.success(), "exit status {status}");
    drop(c);
}

/// gRPC calls count in `nexuscache_requests_total{protocol="grpc"}` under
/// the op and the HTTP status that means the same as their code.
#[test]
fn grpc_calls_are_counted_per_protocol() {
    let node = node();
    let _log = node.node.log_on_panic();
    let count = |op: &str, status: &str| {
        node.node.metrics().sum(
            "nexuscache_requests_total",
            &[("protocol", "grpc"), ("op", op), ("status", status)],
        )
    };
    let (sets, gets, refused) = (
        count("set", "200"),
        count("get", "200"),
        count("get", "400"),
    );
    runtime().block_on(async {
        let mut c = client(node).await;
        c.set(set(b"counted", b"v", 0, false)).await.unwrap();
        c.get(get(b"counted")).await.unwrap();
        let empty = c.get(get(b"")).await.expect_err("an empty key is refused");
        assert_eq!(empty.code(), Code::InvalidArgument);
    });
    assert!(count("set", "200") >= sets + 1.0, "the Set was not counted");
    assert!(count("get", "200") >= gets + 1.0, "the Get was not counted");
    assert!(
        count("get", "400") >= refused + 1.0,
        "the refused Get was not counted"
    );
}
