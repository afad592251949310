//! `nexuscache.v1.Cache/Mutate` from a real gRPC client (the generated
//! tonic client, as programs use it) on a 3-node static cluster: every op
//! kind, each sent to a node that does not own the key so the call is
//! forwarded to the owner, and the refusals a client must tell apart
//! (FAILED_PRECONDITION, RESOURCE_EXHAUSTED, INVALID_ARGUMENT).

mod cluster_common;
mod common;

use std::sync::OnceLock;

use cluster_common::{
    grpc_client, keys_owned_by, peer_requests_op, start_static_nodes_with, ClusterNode,
};
use nexuscache::proto::cache_client::CacheClient;
use nexuscache::proto::mutate_request::{self as req, expire, set_if, Op};
use nexuscache::proto::{lifetime, GetRequest, Lifetime, MutateRequest, MutateResponse};
use tonic::transport::Channel;
use tonic::Code;

const MAX_VALUE: usize = 1024;

fn cluster() -> &'static [ClusterNode] {
    static CLUSTER: OnceLock<Vec<ClusterNode>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| start_static_nodes_with(&["a", "b", "c"], &["--max-value-bytes", "1KiB"]))
}

fn node(name: &str) -> &'static ClusterNode {
    cluster()
        .iter()
        .find(|n| n.name == name)
        .expect("node name")
}

/// A fresh key owned by `owner`.
fn key_owned_by(owner: &str, what: &str) -> Vec<u8> {
    let prefix = common::uniq(what);
    keys_owned_by(node("a"), &[owner], 1, &prefix)[0][0]
        .clone()
        .into_bytes()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn millis(ttl_ms: u64) -> Option<Lifetime> {
    Some(Lifetime {
        kind: lifetime::Kind::For.into(),
        ttl_ms,
        jitter: false,
    })
}

fn set_if(value: &[u8], condition: set_if::Presence, lifetime: Option<Lifetime>) -> Op {
    Op::Set(req::SetIf {
        value: value.to_vec(),
        lifetime,
        condition: condition.into(),
        hot: false,
        return_previous: true,
    })
}

fn expire_op(lifetime: Option<Lifetime>, condition: expire::Condition) -> Op {
    Op::Expire(req::Expire {
        lifetime,
        condition: condition.into(),
    })
}

async fn mutate(
    client: &mut CacheClient<Channel>,
    key: &[u8],
    op: Op,
) -> Result<MutateResponse, tonic::Status> {
    client
        .mutate(MutateRequest {
            key: key.to_vec(),
            forwarded: false,
            op: Some(op),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn ok(client: &mut CacheClient<Channel>, key: &[u8], op: Op) -> MutateResponse {
    let what = format!("{op:?}");
    mutate(client, key, op)
        .await
        .unwrap_or_else(|e| panic!("Mutate {what}: {e:?}"))
}

fn answer(applied: bool, value: Option<&[u8]>, number: i64) -> MutateResponse {
    MutateResponse {
        applied,
        found: value.is_some(),
        value: value.unwrap_or_default().to_vec(),
        number,
    }
}

/// (found, value, expires_in_ms) as a plain Get through `client` sees it.
async fn read(client: &mut CacheClient<Channel>, key: &[u8]) -> (bool, Vec<u8>, u64) {
    let r = client
        .get(GetRequest {
            key: key.to_vec(),
            forwarded: false,
            keep_copy: false,
        })
        .await
        .expect("Get")
        .into_inner();
    (r.found, r.value, r.expires_in_ms)
}

#[test]
fn every_op_kind_runs_on_the_owner_through_another_node() {
    use set_if::Presence;
    let set_key = key_owned_by("b", "g-set");
    let count_key = key_owned_by("c", "g-incr");
    let log_key = key_owned_by("b", "g-append");
    let ttl_key = key_owned_by("c", "g-expire");
    runtime().block_on(async {
        let mut a = grpc_client(node("a")).await;
        let mut c = grpc_client(node("c")).await;

        // SET NX / XX / GET through a, owned by b.
        let k = &set_key;
        assert_eq!(
            ok(&mut a, k, set_if(b"v1", Presence::Present, None)).await,
            answer(false, None, 0),
            "xx on a missing key"
        );
        assert_eq!(
            ok(&mut a, k, set_if(b"v1", Presence::Absent, millis(60_000))).await,
            answer(true, None, 0),
            "nx on a missing key"
        );
        assert_eq!(
            ok(&mut c, k, set_if(b"v2", Presence::Absent, None)).await,
            answer(false, Some(b"v1"), 0),
            "nx on an existing key answers the value that stays"
        );
        // Lifetime absent: KEEPTTL.
        assert_eq!(
            ok(&mut c, k, set_if(b"v3", Presence::Present, None)).await,
            answer(true, Some(b"v1"), 0),
            "xx keeps the expiry"
        );
        let (found, value, left) = read(&mut a, k).await;
        assert!(found && value == b"v3", "{value:?}");
        assert!((50_000..=60_000).contains(&left), "kept {left} ms");

        // INCRBY through a, owned by c.
        let k = &count_key;
        for (delta, want) in [(1, 1), (41, 42), (-50, -8)] {
            let r = ok(&mut a, k, Op::IncrBy(req::IncrBy { delta })).await;
            // `applied` is always true for an answer with a number.
            assert_eq!(r, answer(true, None, want), "incr by {delta}");
        }
        let (_, value, _) = read(&mut a, k).await;
        assert_eq!(value, b"-8");

        // APPEND through c, owned by b.
        let k = &log_key;
        let append = |s: &[u8]| Op::Append(req::Append { suffix: s.to_vec() });
        assert_eq!(ok(&mut c, k, append(b"abc")).await.number, 3);
        assert_eq!(ok(&mut c, k, append(b"de")).await.number, 5);

        // GETDEL (Take) through a, owned by b.
        assert_eq!(
            ok(&mut a, k, Op::Take(req::Take {})).await,
            answer(true, Some(b"abcde"), 0)
        );
        assert_eq!(
            ok(&mut a, k, Op::Take(req::Take {})).await,
            answer(false, None, 0)
        );
        assert!(!read(&mut c, k).await.0, "taken on every node");

        // EXPIRE family through a, owned by c.
        let k = &ttl_key;
        use expire::Condition as C;
        assert_eq!(
            ok(&mut a, k, expire_op(millis(1000), C::Always)).await,
            answer(false, None, 0),
            "expire of a missing key"
        );
        ok(&mut a, k, set_if(b"v", Presence::Any, None)).await;
        let forever = Some(Lifetime::default());
        assert_eq!(
            ok(&mut a, k, expire_op(millis(100_000), C::HasExpiry)).await,
            answer(false, Some(b"v"), 0),
            "xx without an expiry"
        );
        assert_eq!(
            ok(&mut a, k, expire_op(millis(100_000), C::NoExpiry)).await,
            answer(true, Some(b"v"), 0),
            "nx without an expiry"
        );
        assert!(
            !ok(&mut a, k, expire_op(millis(200_000), C::Earlier))
                .await
                .applied
        );
        assert!(
            ok(&mut a, k, expire_op(millis(200_000), C::Later))
                .await
                .applied
        );
        let left = read(&mut a, k).await.2;
        assert!((190_000..=200_000).contains(&left), "gt left {left} ms");
        assert!(
            ok(&mut a, k, expire_op(forever, C::HasExpiry))
                .await
                .applied,
            "persist"
        );
        assert_eq!(read(&mut a, k).await.2, 0, "persisted");
        let over = Some(Lifetime {
            kind: lifetime::Kind::Over.into(),
            ..Default::default()
        });
        assert!(ok(&mut a, k, expire_op(over, C::Always)).await.applied);
        assert!(
            !read(&mut c, k).await.0,
            "an expiry already over removes the key"
        );
    });
    // The calls through a ran on the owners: a forwarded them.
    let m = node("a").metrics();
    for owner in ["b", "c"] {
        let forwarded = peer_requests_op(&m, owner, "mutate", "ok");
        assert!(
            forwarded >= 4.0,
            "a forwarded {forwarded} mutations to {owner}"
        );
    }
}

#[test]
fn refusals_carry_their_codes_through_the_forwarding_node() {
    let text_key = key_owned_by("b", "g-text");
    let max_key = key_owned_by("c", "g-max");
    let log_key = key_owned_by("c", "g-long");
    runtime().block_on(async {
        let mut a = grpc_client(node("a")).await;
        let incr = || Op::IncrBy(req::IncrBy { delta: 1 });

        ok(
            &mut a,
            &text_key,
            set_if(b"abc", set_if::Presence::Any, None),
        )
        .await;
        let e = mutate(&mut a, &text_key, incr()).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "incr of text: {e:?}");
        assert!(e.message().contains("not an integer"), "{e:?}");

        let max = i64::MAX.to_string();
        ok(
            &mut a,
            &max_key,
            set_if(max.as_bytes(), set_if::Presence::Any, None),
        )
        .await;
        let e = mutate(&mut a, &max_key, incr()).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "overflow: {e:?}");
        assert!(e.message().contains("overflow"), "{e:?}");
        assert_eq!(read(&mut a, &max_key).await.1, max.as_bytes(), "unchanged");

        let half = vec![b'x'; MAX_VALUE / 2 + 1];
        let append = |s: &[u8]| Op::Append(req::Append { suffix: s.to_vec() });
        ok(&mut a, &log_key, append(&half)).await;
        let e = mutate(&mut a, &log_key, append(&half)).await.unwrap_err();
        assert_eq!(
            e.code(),
            Code::ResourceExhausted,
            "append past the limit: {e:?}"
        );

        // Bad lifetimes and requests, refused before anything runs.
        let bad = [
            (
                "FOR with ttl_ms 0",
                set_if(b"v", set_if::Presence::Any, millis(0)),
            ),
            (
                "FOR over three days",
                set_if(b"v", set_if::Presence::Any, millis(259_200_001)),
            ),
            (
                "an unknown lifetime kind",
                set_if(
                    b"v",
                    set_if::Presence::Any,
                    Some(Lifetime {
                        kind: 7,
                        ttl_ms: 1,
                        jitter: false,
                    }),
                ),
            ),
            (
                "an expire without a lifetime",
                expire_op(None, expire::Condition::Always),
            ),
            (
                "an unknown condition",
                Op::Expire(req::Expire {
                    lifetime: millis(5),
                    condition: 99,
                }),
            ),
        ];
        for (what, op) in bad {
            let e = mutate(&mut a, &text_key, op).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        }
        let no_op = a
            .mutate(MutateRequest {
                key: text_key.clone(),
                forwarded: false,
                op: None,
            })
            .await
            .unwrap_err();
        assert_eq!(no_op.code(), Code::InvalidArgument, "no op: {no_op:?}");
        let e = mutate(&mut a, b"", incr()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "empty key: {e:?}");
        assert_eq!(read(&mut a, &text_key).await.1, b"abc", "nothing ran");
    });
}
