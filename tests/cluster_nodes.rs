//! A cluster of real `nexuscache` processes on loopback: etcd discovery
//! (a real etcd per test), routing to the key's owner over gRPC, a node
//! killed with SIGKILL under traffic, its restart, an etcd outage, and
//! static membership with `/setpeer`.
//!
//! Every test starts its own etcd and nodes on free ports, so tests run in
//! parallel. Nodes use `--cores 2 --no-pin`, short leases and the default
//! peer timeouts (200 ms connect, 500 ms request), given explicitly.
//! Timings are printed; run with `--nocapture` to see them.

mod cluster_common;
mod common;
mod etcd_common;
mod grpc_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_common::{
    grpc_client, keys_owned_by, peer_requests, peer_requests_op, start_etcd_nodes,
    start_static_nodes_with, static_node, value_body, wait_for, wait_ring_members, Client,
    ClusterNode, Outcome, StallWatch, MEMBERSHIP_DEADLINE, PEER_BOUND,
};
use common::{assert_error, Response};
use etcd_common::Etcd;
use grpc_common::runtime;
use nexuscache::proto::{DeleteRequest, GetRequest, SetRequest};

/// Lease TTL of the etcd-mode nodes, in seconds.
const LEASE_TTL: u64 = 2;
/// After a SIGKILL every request must succeed again within this long: the
/// lease runs out, etcd deletes the record, every node drops the member.
const HEAL: Duration = Duration::from_secs(LEASE_TTL + 2);

fn refs(nodes: &[ClusterNode]) -> Vec<&ClusterNode> {
    nodes.iter().collect()
}

fn assert_ok(r: &Response, what: &str) {
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"ok\n".as_slice()),
        "{what}: {}",
        r.describe()
    );
}

fn assert_value(r: &Response, value: &str, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.describe());
    assert_eq!(r.body_str(), format!("value={value}"), "{what}");
}

fn assert_miss(r: &Response, what: &str) {
    assert_eq!(r.status, 404, "{what}: expected a miss: {}", r.describe());
}

fn grpc_get(key: &str) -> GetRequest {
    GetRequest {
        key: key.as_bytes().to_vec(),
        forwarded: false,
        keep_copy: false,
    }
}

// ---------------------------------------------------------------------------
// 1. Three nodes, one keyspace
// ---------------------------------------------------------------------------

#[test]
fn three_etcd_nodes_serve_every_key_from_its_owner() {
    let etcd = Etcd::start();
    let started = Instant::now();
    let nodes = start_etcd_nodes(&["a", "b", "c"], &etcd.endpoint(), LEASE_TTL);
    let took = wait_ring_members(&refs(&nodes), 3, MEMBERSHIP_DEADLINE);
    eprintln!(
        "three nodes ready and ring_members 3 everywhere {:?} after spawning ({took:?} of \
         waiting for the ring)",
        started.elapsed()
    );
    let names = ["a", "b", "c"];

    // Every node names the same owner for a key, with its addresses.
    let keys: Vec<String> = keys_owned_by(&nodes[0], &names, 1, "route")
        .into_iter()
        .map(|mut k| k.remove(0))
        .collect();
    for (o, key) in keys.iter().enumerate() {
        for via in &nodes {
            let owner = via.owner(key);
            assert_eq!(owner.node, names[o], "node {} on {key}", via.name);
            assert_eq!(
                owner.http,
                nodes[o].http_addr(),
                "node {} on {key}",
                via.name
            );
            assert_eq!(
                owner.grpc,
                nodes[o].grpc_addr(),
                "node {} on {key}",
                via.name
            );
            assert!(
                owner.core == "0" || owner.core == "1",
                "node {} on {key}: core {:?} of a 2-core owner",
                via.name,
                owner.core
            );
        }
    }

    let rt = runtime();
    let mut grpc = rt.block_on(async {
        let mut clients = Vec::new();
        for node in &nodes {
            clients.push(grpc_client(node).await);
        }
        clients
    });

    for (o, key) in keys.iter().enumerate() {
        let owner = names[o];
        let value = format!("value-of-{key}");
        let before: Vec<_> = nodes.iter().map(ClusterNode::metrics).collect();

        // Written through A, read through B and C by HTTP (both APIs), and
        // through every node by gRPC.
        assert_ok(&nodes[0].set(key, &value), &format!("set {key} via a"));
        for via in &nodes[1..] {
            assert_value(
                &via.get(key),
                &value,
                &format!("get {key} via {}", via.name),
            );
            let r = via.v1_get(key);
            assert_eq!(
                r.status,
                200,
                "v1 get {key} via {}: {}",
                via.name,
                r.describe()
            );
            assert_eq!(r.body, value.as_bytes(), "v1 get {key} via {}", via.name);
        }
        rt.block_on(async {
            for (i, client) in grpc.iter_mut().enumerate() {
                let hit = client
                    .get(grpc_get(key))
                    .await
                    .unwrap_or_else(|e| panic!("gRPC get {key} via {}: {e}", names[i]))
                    .into_inner();
                assert!(hit.found, "gRPC get {key} via {}: not found", names[i]);
                assert_eq!(
                    hit.value,
                    value.as_bytes(),
                    "gRPC get {key} via {}",
                    names[i]
                );
            }
        });

        // The peer counters moved on the non-owners only, by exactly the
        // requests they forwarded: A forwarded the set and its gRPC get; B
        // and C their two HTTP gets and one gRPC get.
        let after: Vec<_> = nodes.iter().map(ClusterNode::metrics).collect();
        for (i, node) in nodes.iter().enumerate() {
            let moved = |op: &str, status: &str| {
                peer_requests_op(&after[i], owner, op, status)
                    - peer_requests_op(&before[i], owner, op, status)
            };
            let total = peer_requests(&after[i], None, Outcome::Any)
                - peer_requests(&before[i], None, Outcome::Any);
            if i == o {
                assert_eq!(
                    total, 0.0,
                    "owner {owner} forwarded requests for its own key {key}:\n{}",
                    after[i].text
                );
                continue;
            }
            let (sets, gets) = if i == 0 { (1.0, 1.0) } else { (0.0, 3.0) };
            assert_eq!(
                (moved("set", "ok"), moved("get", "ok"), total),
                (sets, gets, sets + gets),
                "node {}: peer requests to {owner} for {key} (set ok, get ok, all)",
                node.name
            );
        }

        // A gRPC write through the next node, read by HTTP on the one after.
        let (w, r) = ((o + 1) % 3, (o + 2) % 3);
        let value2 = format!("{value}-via-grpc");
        rt.block_on(async {
            grpc[w]
                .set(SetRequest {
                    key: key.as_bytes().to_vec(),
                    value: value2.as_bytes().to_vec(),
                    ttl_seconds: 0,
                    hot: false,
                    forwarded: false,
                })
                .await
                .unwrap_or_else(|e| panic!("gRPC set {key} via {}: {e}", names[w]));
        });
        assert_value(
            &nodes[r].get(key),
            &value2,
            &format!(
                "get {key} via {} after a gRPC set via {}",
                names[r], names[w]
            ),
        );

        // Deleted through C, gone on A (both APIs and gRPC).
        let r = nodes[2].delete(key);
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, b"deleted\n".as_slice()),
            "delete {key} via c: {}",
            r.describe()
        );
        assert_miss(&nodes[0].get(key), &format!("get {key} via a after delete"));
        assert_miss(
            &nodes[0].v1_get(key),
            &format!("v1 get {key} via a after delete"),
        );
        rt.block_on(async {
            let miss = grpc[0]
                .get(grpc_get(key))
                .await
                .expect("gRPC get")
                .into_inner();
            assert!(!miss.found, "gRPC get {key} via a after delete: {miss:?}");
            let gone = grpc[1]
                .delete(DeleteRequest {
                    key: key.as_bytes().to_vec(),
                    forwarded: false,
                })
                .await
                .expect("gRPC delete")
                .into_inner();
            assert!(!gone.deleted, "gRPC delete {key} via b after delete via c");
        });
    }

    // No forward failed anywhere.
    for node in &nodes {
        let m = node.metrics();
        assert_eq!(
            peer_requests(&m, None, Outcome::Failed),
            0.0,
            "node {}: failed peer requests:\n{}",
            node.name,
            m.text
        );
    }

    // /setpeer in etcd mode: etcd is the source of truth.
    let r = nodes[0].setpeer("peer=unknown");
    assert_error(&r, 404, "setpeer of a name etcd does not know");
    assert!(r.body_str().contains("unknown"), "{}", r.describe());
    let r = nodes[0].setpeer("peer=b");
    assert_eq!(r.status, 200, "setpeer of a live member: {}", r.describe());
    assert_eq!(
        r.body_str(),
        format!(
            "ok: b is in the ring (http {}, grpc {})\n",
            nodes[1].http_addr(),
            nodes[1].grpc_addr()
        )
    );
    assert_error(&nodes[0].setpeer(""), 400, "setpeer without peer");
    assert_error(
        &nodes[0].setpeer("addr=127.0.0.1:1"),
        400,
        "setpeer without peer",
    );
    wait_ring_members(&refs(&nodes), 3, MEMBERSHIP_DEADLINE);
    drop(grpc);
}

// ---------------------------------------------------------------------------
// 2. SIGKILL (and SIGSTOP) under traffic
// ---------------------------------------------------------------------------

/// One request of the traffic thread.
#[derive(Debug)]
struct Sample {
    /// When it started and ended.
    t0: Instant,
    t1: Instant,
    /// Index of the key's owner at the start of the test.
    owner: usize,
    key: String,
    op: &'static str,
    result: Result<(u16, String), String>,
    /// For a SET: the value; for a GET after a SET: the value expected.
    value: String,
}

impl Sample {
    fn took(&self) -> Duration {
        self.t1 - self.t0
    }

    fn status(&self) -> Option<u16> {
        self.result.as_ref().ok().map(|(s, _)| *s)
    }

    fn body(&self) -> &str {
        self.result.as_ref().map_or("", |(_, b)| b.as_str())
    }

    /// SET answered 200, GET-after answered the value just set, GET-before
    /// answered a value or a miss.
    fn succeeded(&self) -> bool {
        match (self.op, &self.result) {
            ("set", Ok((200, body))) => body == "ok\n",
            ("get-after", Ok((200, body))) => *body == format!("value={}", self.value),
            ("get-before", Ok((200, body))) => body.starts_with("value="),
            ("get-before", Ok((404, _))) => true,
            _ => false,
        }
    }

    /// What a key whose owner is unreachable answers: a miss, or a refused
    /// write naming the owner (`owner`, or any node if `None`).
    fn owner_unavailable(&self, owner: Option<&str>) -> bool {
        match (self.op, self.status()) {
            ("get-after", Some(404)) => true,
            ("set", Some(503)) => {
                let body = self.body();
                match owner {
                    Some(owner) => {
                        body.starts_with(&format!("owner node {owner} is unavailable: "))
                    }
                    None => body.starts_with("owner node ") && body.contains(" is unavailable: "),
                }
            }
            _ => false,
        }
    }
}

fn secs_since(t: Instant, origin: Instant) -> f64 {
    if t >= origin {
        (t - origin).as_secs_f64()
    } else {
        -(origin - t).as_secs_f64()
    }
}

/// Rounds of GET, SET, GET on every key through one node until `stop`.
fn traffic(port: u16, keys: Vec<(usize, String)>, stop: Arc<AtomicBool>) -> Vec<Sample> {
    let mut client = Client::new(port);
    let mut out = Vec::new();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for (owner, key) in &keys {
            let value = format!("{key}-r{round}");
            for op in ["get-before", "set", "get-after"] {
                let t0 = Instant::now();
                let r = if op == "set" {
                    client.set(key, &value)
                } else {
                    client.get(key)
                };
                out.push(Sample {
                    t0,
                    t1: Instant::now(),
                    owner: *owner,
                    key: key.clone(),
                    op,
                    result: r.map(|r| (r.status, r.body_str())),
                    value: value.clone(),
                });
            }
        }
        round += 1;
        // Leave CPU to the nodes and to other tests.
        std::thread::sleep(Duration::from_millis(5));
    }
    out
}

/// At most this share of the requests may be excused by machine stalls.
const MAX_EXCUSED: f64 = 0.02;

fn first<T>(v: &[T]) -> &[T] {
    &v[..v.len().min(10)]
}

/// How the victim is taken out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hit {
    /// SIGKILL: connections are reset, connects refused.
    Kill,
    /// SIGSTOP: connects hang in the backlog, requests are never answered.
    Freeze,
}

/// Three etcd nodes a, b, c; traffic on keys of all three owners through a;
/// c is hit after a second of steady traffic; traffic goes on until two
/// seconds past the heal deadline. Checks every request's time and answer,
/// then returns the cluster and keys of c that the traffic never touched
/// (written before the hit).
fn hit_under_traffic(hit: Hit) -> HitOutcome {
    let watch = StallWatch::start();
    let etcd = Etcd::start();
    let mut nodes = start_etcd_nodes(&["a", "b", "c"], &etcd.endpoint(), LEASE_TTL);
    wait_ring_members(&refs(&nodes), 3, MEMBERSHIP_DEADLINE);
    let names = ["a", "b", "c"];
    let (survivor, victim) = (0, 2);

    // Keys of every owner for the traffic, and keys of the victim nobody
    // touches after the hit.
    let mut owned = keys_owned_by(&nodes[survivor], &names, 3, "hit");
    let keys: Vec<(usize, String)> = owned
        .iter()
        .enumerate()
        .flat_map(|(o, ks)| ks.iter().map(move |k| (o, k.clone())))
        .collect();
    let quiet = keys_owned_by(&nodes[survivor], &["c"], 3, "quiet").remove(0);
    for key in &quiet {
        assert_ok(&nodes[survivor].set(key, "before-the-hit"), key);
        assert_value(&nodes[1].get(key), "before-the-hit", key);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (port, keys, stop) = (nodes[survivor].http_port, keys.clone(), stop.clone());
        std::thread::spawn(move || traffic(port, keys, stop))
    };

    // Steady traffic first, then the hit, then traffic past the heal
    // deadline long enough to see every key written and read back.
    std::thread::sleep(Duration::from_secs(1));
    let victim_pid = nodes[victim].pid();
    let hit_at = Instant::now();
    match hit {
        Hit::Kill => nodes[victim].kill9(),
        Hit::Freeze => nodes[victim].signal("STOP"),
    }
    wait_for(
        "survivors drop the victim",
        HEAL + Duration::from_secs(10),
        || {
            let seen: Vec<Option<u64>> = nodes[..2].iter().map(|n| n.ring_members()).collect();
            if seen.iter().all(|m| *m == Some(2)) {
                Ok(())
            } else {
                Err(format!("ring_members of a, b: {seen:?}"))
            }
        },
    );
    let dropped_after = hit_at.elapsed();
    // The heal deadline, pushed back by any machine stall before it.
    while Instant::now() < watch.stretch(hit_at, HEAL) + Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let heal_at = watch.stretch(hit_at, HEAL);
    stop.store(true, Ordering::Relaxed);
    let samples = worker.join().expect("traffic thread");

    let heal = secs_since(heal_at, hit_at);
    let after_hit: Vec<&Sample> = samples.iter().filter(|s| s.t1 > hit_at).collect();
    let last_failure = after_hit
        .iter()
        .filter(|s| !s.succeeded())
        .map(|s| secs_since(s.t1, hit_at))
        .fold(None, |m: Option<f64>, e| Some(m.map_or(e, |m| m.max(e))));
    let slowest = samples.iter().map(Sample::took).max().unwrap_or_default();
    let slowest_failed = after_hit
        .iter()
        .filter(|s| !s.succeeded())
        .map(|s| s.took())
        .max()
        .unwrap_or_default();
    let (stalled, longest_stall) = watch.summary();
    eprintln!(
        "{hit:?} of c (pid {victim_pid}): {} requests ({} after the hit), slowest {slowest:?} \
         (slowest failed {slowest_failed:?}), survivors' rings at 2 after {dropped_after:?}, \
         last failed request ended {last_failure:?} s after the hit (heal deadline {heal:.2} s); \
         this process stalled {stalled:?} in all, at most {longest_stall:?} at once",
        samples.len(),
        after_hit.len(),
    );

    // No request stalled: each ended within one connect + one request
    // timeout (plus slack), before, during and after the hit.
    let slow: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.took() > watch.allowed(s.t0, s.t1, PEER_BOUND))
        .collect();
    assert!(
        slow.is_empty(),
        "{} requests took over {PEER_BOUND:?} (more if the machine stalled near them): \
         {:#?}\n{}",
        slow.len(),
        first(&slow),
        watch.describe()
    );
    let broken: Vec<&Sample> = samples.iter().filter(|s| s.result.is_err()).collect();
    assert!(broken.is_empty(), "transport errors: {broken:#?}");

    // Before the hit everything worked; the keys of the live owners kept
    // working throughout; after the heal deadline everything works again.
    let failed: Vec<&Sample> = samples
        .iter()
        .filter(|s| (s.t1 < hit_at || s.owner != victim || s.t0 >= heal_at) && !s.succeeded())
        .collect();
    let (excusable, bad): (Vec<&Sample>, Vec<&Sample>) = failed
        .into_iter()
        .partition(|s| watch.disturbed(s.t0, s.t1));
    let slow_disturbed = samples.iter().filter(|s| s.took() > PEER_BOUND).count();
    assert!(
        bad.is_empty(),
        "requests failed before the hit, on keys of live owners, or after the heal deadline \
         ({heal:.2} s after the hit): {:#?}\n{}",
        first(&bad),
        watch.describe()
    );
    // A failure during a stall of the machine must still be an owner
    // answering late, never a wrong value.
    for s in &excusable {
        assert!(
            s.owner_unavailable(None),
            "unexpected answer during a machine stall: {s:#?}"
        );
    }
    assert!(
        ((excusable.len() + slow_disturbed) as f64) <= MAX_EXCUSED * samples.len() as f64,
        "{} of {} requests failed and {slow_disturbed} were slow during machine stalls: \
         {:#?}\n{}",
        excusable.len(),
        samples.len(),
        first(&excusable),
        watch.describe()
    );
    if !excusable.is_empty() || slow_disturbed > 0 {
        eprintln!(
            "{} requests failed and {slow_disturbed} took over {PEER_BOUND:?} during machine \
             stalls (excused): {:#?}\n{}",
            excusable.len(),
            first(&excusable),
            watch.describe()
        );
    }

    // Between the hit and the heal deadline, the victim's keys answer
    // misses and writes refused for c, nothing else (or refused for their
    // new owner when the machine stalled).
    for s in after_hit
        .iter()
        .filter(|s| s.owner == victim && !s.succeeded())
    {
        assert!(
            s.owner_unavailable(Some("c"))
                || (watch.disturbed(s.t0, s.t1) && s.owner_unavailable(None)),
            "unexpected answer for a key of the victim: {s:#?}"
        );
    }
    // Unless the machine stalled through the hit (then etcd may drop the
    // victim before the traffic thread runs again), some request noticed.
    assert!(
        after_hit
            .iter()
            .any(|s| s.owner == victim && !s.succeeded())
            || watch.disturbed(hit_at, hit_at + dropped_after),
        "no request on the victim's keys failed: the {hit:?} went unnoticed?\n{}",
        watch.describe()
    );
    for (owner, key) in &keys {
        assert!(
            samples
                .iter()
                .any(|s| s.t0 >= heal_at && s.key == *key && s.op == "get-after" && s.succeeded()),
            "key {key} (owner {}) was not written and read back after the heal deadline",
            names[*owner]
        );
    }

    // The failed forwards were counted against c on the survivor.
    let m = nodes[survivor].metrics();
    let failed = peer_requests(&m, Some("c"), Outcome::Failed);
    assert!(
        failed > 0.0,
        "no failed peer request to c counted:\n{}",
        m.text
    );
    let victim_keys = owned.swap_remove(victim);
    HitOutcome {
        _etcd: etcd,
        nodes,
        quiet,
        victim_keys,
        samples,
    }
}

/// What [`hit_under_traffic`] leaves for the rest of a test.
struct HitOutcome {
    _etcd: Etcd,
    nodes: Vec<ClusterNode>,
    /// Keys of the victim written before the hit and not touched since.
    quiet: Vec<String>,
    /// Keys of the victim in the traffic.
    victim_keys: Vec<String>,
    samples: Vec<Sample>,
}

/// Keys of the victim that nobody touched since: a miss on their new
/// owner (through either survivor), then writable.
fn assert_moved_and_writable(nodes: &[ClusterNode], quiet: &[String], value: &str) {
    for key in quiet {
        let owner = nodes[0].owner(key);
        assert!(
            owner.node == "a" || owner.node == "b",
            "{key} still owned by {owner:?}"
        );
        assert_eq!(nodes[1].owner(key), owner, "a and b disagree on {key}");
        assert_miss(&nodes[0].get(key), &format!("{key} after its owner left"));
        assert_miss(&nodes[1].get(key), &format!("{key} after its owner left"));
        assert_ok(&nodes[1].set(key, value), key);
        assert_value(&nodes[0].get(key), value, key);
    }
}

#[test]
fn a_node_killed_under_traffic_never_stalls_requests_and_its_keys_heal_after_the_lease() {
    let out = hit_under_traffic(Hit::Kill);
    assert_moved_and_writable(&out.nodes, &out.quiet, "after-the-kill");
}

#[test]
fn a_frozen_node_costs_each_request_at_most_the_peer_timeouts_and_rejoins_when_thawed() {
    let HitOutcome {
        _etcd,
        nodes,
        quiet,
        victim_keys,
        samples,
    } = hit_under_traffic(Hit::Freeze);
    assert_moved_and_writable(&nodes, &quiet, "while-c-was-frozen");

    // Thawed, c finds its lease gone, registers again and gets its keys
    // back.
    let thawed = Instant::now();
    nodes[2].signal("CONT");
    let rejoined = wait_ring_members(&refs(&nodes), 3, MEMBERSHIP_DEADLINE);
    eprintln!("c thawed; ring_members 3 everywhere after {rejoined:?}");
    for key in &quiet {
        for via in &nodes {
            assert_eq!(
                via.owner(key).node,
                "c",
                "owner of {key} according to {}",
                via.name
            );
        }
        // c lost its lease while frozen, so it must have dropped what it
        // held: its pre-freeze value was overwritten elsewhere meanwhile
        // and must never be served again (cores carry out the flush on
        // their next 25 ms tick).
        wait_for(
            "c to stop serving its stale entry",
            Duration::from_secs(2),
            || {
                let body = nodes[0].get(key).body_str();
                if body == "value=before-the-hit" {
                    Err(format!("{key} still served stale as {body:?}"))
                } else {
                    Ok(())
                }
            },
        );
    }
    // The same for the victim's keys in the traffic: what c holds now, and
    // what the client was told about the write of that value.
    for key in &victim_keys {
        let now = nodes[2].get(key).body_str();
        let told = samples
            .iter()
            .rev()
            .find(|s| s.op == "set" && now == format!("value={}", s.value))
            .map(|s| format!("{:?}", s.result));
        eprintln!("{key} on the thawed c: {now:?}; the write of that value answered {told:?}");
    }
    let key = &quiet[0];
    let (_, first) = wait_for(
        "a write through a to the thawed c",
        Duration::from_secs(5),
        || {
            let r = nodes[0].set(key, "after-the-thaw");
            if r.status == 200 {
                Ok(())
            } else {
                Err(r.describe())
            }
        },
    );
    assert_value(&nodes[1].get(key), "after-the-thaw", "get via b");
    assert_value(&nodes[2].get(key), "after-the-thaw", "get on c");
    eprintln!(
        "first write to the thawed c went through {first:?} after the ring healed, {:?} after \
         SIGCONT",
        thawed.elapsed()
    );
}

// ---------------------------------------------------------------------------
// 3. Restart with the same name and ports
// ---------------------------------------------------------------------------

#[test]
fn a_killed_node_restarted_on_the_same_ports_rejoins_by_itself() {
    let etcd = Etcd::start();
    let mut nodes = start_etcd_nodes(&["a", "b", "c"], &etcd.endpoint(), LEASE_TTL);
    wait_ring_members(&refs(&nodes), 3, MEMBERSHIP_DEADLINE);
    let keys = keys_owned_by(&nodes[0], &["c"], 3, "rejoin").remove(0);
    for key in &keys {
        assert_ok(&nodes[0].set(key, "first-life"), key);
        assert_value(&nodes[1].get(key), "first-life", key);
    }

    let killed = Instant::now();
    nodes[2].kill9();
    wait_ring_members(&[&nodes[0], &nodes[1]], 2, HEAL + Duration::from_secs(10));
    let dropped = killed.elapsed();
    for key in &keys {
        assert_ne!(nodes[0].owner(key).node, "c", "{key} after c left");
    }

    let restarted = Instant::now();
    nodes[2].restart();
    let ready = restarted.elapsed();
    let rejoined = wait_ring_members(&refs(&nodes), 3, MEMBERSHIP_DEADLINE);
    eprintln!(
        "c dropped from the ring {dropped:?} after the kill; restarted and ready in {ready:?}, \
         ring_members 3 everywhere {:?} after the restart ({rejoined:?} after ready)",
        restarted.elapsed()
    );

    let c = &nodes[2];
    for key in &keys {
        for via in &nodes {
            let owner = via.owner(key);
            assert_eq!(
                (
                    owner.node.as_str(),
                    owner.http.as_str(),
                    owner.grpc.as_str()
                ),
                ("c", c.http_addr().as_str(), c.grpc_addr().as_str()),
                "owner of {key} according to {}",
                via.name
            );
        }
        // Served by the new c: it holds nothing from its first life.
        assert_miss(
            &nodes[0].get(key),
            &format!("{key} after c restarted empty"),
        );
    }

    // The survivors' clients to c may still be in their reconnect back-off
    // (1 s) from the failures before the restart; once a write goes
    // through, every round trip must.
    let before_c = c.metrics();
    let (_, first_write) = wait_for(
        "a write through a to the restarted c",
        Duration::from_secs(5),
        || {
            let r = nodes[0].set(&keys[0], "second-life");
            if r.status == 200 {
                Ok(())
            } else {
                Err(r.describe())
            }
        },
    );
    eprintln!("first write through a reached the restarted c after {first_write:?}");
    for round in 0..10 {
        for key in &keys {
            let value = format!("second-life-{round}");
            let (w, r) = (&nodes[round % 2], &nodes[(round + 1) % 2]);
            assert_ok(&w.set(key, &value), &format!("set {key} via {}", w.name));
            assert_value(&r.get(key), &value, &format!("get {key} via {}", r.name));
            assert_value(&c.get(key), &value, &format!("get {key} on c itself"));
        }
    }
    // c served its keys itself, the survivors forwarded them to c.
    let after_c = c.metrics();
    assert_eq!(
        peer_requests(&after_c, None, Outcome::Any) - peer_requests(&before_c, None, Outcome::Any),
        0.0,
        "the restarted c forwarded requests for its own keys:\n{}",
        after_c.text
    );
    for via in &nodes[..2] {
        let m = via.metrics();
        assert!(
            peer_requests_op(&m, "c", "set", "ok") >= 10.0,
            "node {}: no successful forwards to the restarted c:\n{}",
            via.name,
            m.text
        );
    }
}

// ---------------------------------------------------------------------------
// 4. etcd outage
// ---------------------------------------------------------------------------

/// A failed request's outcome in one line (and the node's thread stacks if
/// it did not answer at all).
fn answered(answer: &Result<Response, String>, node: &ClusterNode) -> String {
    match answer {
        Ok(r) => format!("{} {:?}", r.status, r.body_str()),
        Err(e) => format!("{e}\n{}", node.dump_if_stuck(e)),
    }
}

/// How long etcd stays down.
const OUTAGE: Duration = Duration::from_secs(30);

// Named to sort first: test runners start tests in name order, and this
// long one then overlaps the others instead of running alone at the end.
#[test]
fn a_30s_etcd_outage_leaves_the_cluster_serving_and_joins_are_seen_after_it() {
    let watch = StallWatch::start();
    let mut etcd = Etcd::start();
    let ttl = 3;
    let nodes = start_etcd_nodes(&["a", "b", "c"], &etcd.endpoint(), ttl);
    wait_ring_members(&refs(&nodes), 3, MEMBERSHIP_DEADLINE);
    let names = ["a", "b", "c"];
    let keys: Vec<String> = keys_owned_by(&nodes[0], &names, 4, "outage")
        .into_iter()
        .flatten()
        .collect();

    etcd.kill();
    let down = Instant::now();
    let mut clients: Vec<Client> = nodes.iter().map(|n| Client::new(n.http_port)).collect();
    // Every request: (start, end, what, failure if it failed).
    let mut log: Vec<(Instant, Instant, String, Option<String>)> = Vec::new();
    let mut next_ring_check = Instant::now();
    let mut ring_checks = 0;
    let mut i = 0usize;
    while down.elapsed() < OUTAGE {
        let key = &keys[i % keys.len()];
        let value = format!("{key}-{i}");
        let (w, r) = (i % 3, (i + 1) % 3);
        let t0 = Instant::now();
        let answer = clients[w].set(key, &value);
        let what = format!("set {key} via {}", names[w]);
        let set_ok = matches!(&answer, Ok(resp) if resp.status == 200);
        let failure = (!set_ok).then(|| answered(&answer, &nodes[w]));
        log.push((t0, Instant::now(), what, failure));
        let t0 = Instant::now();
        let answer = clients[r].get(key);
        let what = format!("get {key} via {}", names[r]);
        let failure = match &answer {
            Ok(resp) if resp.status == 200 && resp.body == value_body(&value) => None,
            // After a refused write the old value or a miss is right.
            Ok(resp) if !set_ok && (resp.status == 200 || resp.status == 404) => None,
            other => Some(answered(other, &nodes[r])),
        };
        log.push((t0, Instant::now(), what, failure));
        i += 1;
        // The ring must never shrink while etcd is away (a scrape that
        // times out is tried again).
        if Instant::now() >= next_ring_check {
            for node in &nodes {
                let members = (0..3).find_map(|_| node.ring_members());
                assert_eq!(
                    members,
                    Some(3),
                    "node {} changed its ring {:?} into the etcd outage",
                    node.name,
                    down.elapsed()
                );
            }
            ring_checks += 1;
            next_ring_check = Instant::now() + Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let outage = down.elapsed();
    let at = |t: &Instant| t.saturating_duration_since(down);
    let slowest = log
        .iter()
        .map(|(t0, t1, _, _)| *t1 - *t0)
        .max()
        .unwrap_or_default();
    let slow: Vec<String> = log
        .iter()
        .filter(|(t0, t1, _, _)| *t1 - *t0 > watch.allowed(*t0, *t1, PEER_BOUND))
        .map(|(t0, t1, what, _)| {
            format!("{:?} into the outage: {what} took {:?}", at(t0), *t1 - *t0)
        })
        .collect();
    let failed: Vec<_> = log.iter().filter(|(_, _, _, f)| f.is_some()).collect();
    let (excusable, bad): (Vec<_>, Vec<_>) = failed
        .into_iter()
        .partition(|(t0, t1, _, _)| watch.disturbed(*t0, *t1));
    let show = |v: &[&(Instant, Instant, String, Option<String>)]| -> Vec<String> {
        v.iter()
            .take(10)
            .map(|(t0, t1, what, f)| {
                format!(
                    "{:?} into the outage: {what} (took {:?}): {}",
                    at(t0),
                    *t1 - *t0,
                    f.as_deref().unwrap_or("")
                )
            })
            .collect()
    };
    let (stalled, longest_stall) = watch.summary();
    eprintln!(
        "etcd down for {outage:?}: {} requests through all nodes, {} failed ({} during machine \
         stalls), slowest {slowest:?}, {} over {PEER_BOUND:?} (plus nearby stalls), \
         {ring_checks} ring checks; this process stalled {stalled:?} in all, at most \
         {longest_stall:?} at once",
        log.len(),
        bad.len() + excusable.len(),
        excusable.len(),
        slow.len(),
    );
    assert!(
        bad.is_empty(),
        "{} requests failed during the etcd outage: {:#?}\n{}",
        bad.len(),
        show(&bad),
        watch.describe()
    );
    assert!(
        (excusable.len() as f64) <= MAX_EXCUSED * log.len() as f64,
        "{} of {} requests failed during machine stalls: {:#?}\n{}",
        excusable.len(),
        log.len(),
        show(&excusable),
        watch.describe()
    );
    if !excusable.is_empty() {
        eprintln!("excused (machine stalls): {:#?}", show(&excusable));
    }
    assert!(
        slow.is_empty(),
        "requests over {PEER_BOUND:?} during the etcd outage: {slow:#?}\n{}",
        watch.describe()
    );

    etcd.restart();
    let up = Instant::now();
    let mut d = ClusterNode::start_etcd("d", &etcd.endpoint(), ttl);
    let d_ready = up.elapsed();
    let mut all: Vec<&ClusterNode> = refs(&nodes);
    all.push(&d);
    let joined = wait_ring_members(&all, 4, MEMBERSHIP_DEADLINE);
    eprintln!(
        "etcd back; d ready {d_ready:?} later, ring_members 4 on every node {:?} after etcd \
         restarted ({joined:?} after d was ready)",
        up.elapsed()
    );
    assert!(d.is_running());

    // The new member owns keys, and they go to it from every node.
    let key = keys_owned_by(&d, &["d"], 1, "joined").remove(0).remove(0);
    for via in &nodes {
        assert_eq!(
            via.owner(&key).node,
            "d",
            "owner of {key} according to {}",
            via.name
        );
    }
    let (_, took) = wait_for(
        "a write through a to the new d",
        Duration::from_secs(5),
        || {
            let r = nodes[0].set(&key, "after-the-outage");
            if r.status == 200 {
                Ok(())
            } else {
                Err(r.describe())
            }
        },
    );
    assert!(
        took < Duration::from_secs(2),
        "first write to d took {took:?}"
    );
    assert_value(&nodes[1].get(&key), "after-the-outage", "get via b");
    assert_value(&d.get(&key), "after-the-outage", "get on d");
    d.kill9();
}

// ---------------------------------------------------------------------------
// 5. Static membership
// ---------------------------------------------------------------------------

#[test]
fn static_peers_route_to_each_other_and_setpeer_adds_a_node() {
    // Adding a node that is not in --peers needs the operator's opt-in
    // (tests/setpeer_security.rs covers the refusal without it).
    let nodes = start_static_nodes_with(&["a", "b"], &["--allow-setpeer-addr"]);
    wait_ring_members(&refs(&nodes), 2, MEMBERSHIP_DEADLINE);
    let names = ["a", "b"];
    let keys: Vec<String> = keys_owned_by(&nodes[0], &names, 2, "static")
        .into_iter()
        .flatten()
        .collect();
    for key in &keys {
        let (oa, ob) = (nodes[0].owner(key), nodes[1].owner(key));
        assert_eq!(
            (&oa.node, &oa.http, &oa.grpc),
            (&ob.node, &ob.http, &ob.grpc),
            "a and b disagree on the owner of {key}"
        );
        // A node knows its own core count; a static peer's is unknown.
        for (via, o) in [("a", &oa), ("b", &ob)] {
            let want: &[&str] = if o.node == via {
                &["0", "1"]
            } else {
                &["unknown"]
            };
            assert!(
                want.contains(&o.core.as_str()),
                "owner of {key} according to {via}: {o:?}"
            );
        }
    }
    for (i, key) in keys.iter().enumerate() {
        let (w, r) = (&nodes[i % 2], &nodes[(i + 1) % 2]);
        let value = format!("static-{i}");
        assert_ok(&w.set(key, &value), &format!("set {key} via {}", w.name));
        assert_value(&r.get(key), &value, &format!("get {key} via {}", r.name));
        assert_value(&w.get(key), &value, &format!("get {key} via {}", w.name));
    }
    for (i, node) in nodes.iter().enumerate() {
        let m = node.metrics();
        let other = names[1 - i];
        assert!(
            peer_requests(&m, Some(other), Outcome::Ok) > 0.0,
            "node {}: no forwards to {other}:\n{}",
            node.name,
            m.text
        );
        assert_eq!(peer_requests(&m, None, Outcome::Failed), 0.0, "{}", m.text);
    }

    // A third node, known to a and b only through /setpeer.
    let peers = format!("{},{}", nodes[0].peer_entry(), nodes[1].peer_entry());
    let mut x = static_node("x", &peers);
    x.start();
    wait_ring_members(&[&x], 3, MEMBERSHIP_DEADLINE);
    wait_ring_members(&refs(&nodes), 2, MEMBERSHIP_DEADLINE);
    for node in &nodes {
        let r = node.setpeer(&format!("peer=x&addr={}", x.peer_addr()));
        assert_eq!(
            r.status,
            200,
            "setpeer x on {}: {}",
            node.name,
            r.describe()
        );
        assert_eq!(
            r.body_str(),
            format!(
                "ok: x is in the ring (http {}, grpc {})\n",
                x.http_addr(),
                x.grpc_addr()
            )
        );
    }
    let mut all = refs(&nodes);
    all.push(&x);
    let took = wait_ring_members(&all, 3, MEMBERSHIP_DEADLINE);
    eprintln!("static ring of 3 on every node {took:?} after /setpeer");

    let x_keys = keys_owned_by(&nodes[0], &["x"], 2, "static-x").remove(0);
    for key in &x_keys {
        for via in [&nodes[1], &x] {
            assert_eq!(
                via.owner(key).node,
                "x",
                "owner of {key} according to {}",
                via.name
            );
        }
        assert_ok(&nodes[0].set(key, "on-x"), &format!("set {key} via a"));
        assert_value(&nodes[1].get(key), "on-x", &format!("get {key} via b"));
        assert_value(&x.get(key), "on-x", &format!("get {key} on x"));
    }
    let m = x.metrics();
    assert_eq!(
        peer_requests(&m, None, Outcome::Any),
        0.0,
        "x forwarded requests for its own keys:\n{}",
        m.text
    );

    // Refusals.
    let a = &nodes[0];
    assert_error(&a.setpeer(""), 400, "setpeer without peer");
    assert_error(&a.setpeer("peer="), 400, "setpeer with an empty peer");
    assert_error(
        &a.setpeer("addr=127.0.0.1:1"),
        400,
        "setpeer with addr only",
    );
    assert_error(
        &a.setpeer("peer=y"),
        400,
        "static setpeer of an unknown name without addr",
    );
    assert_error(
        &a.setpeer("peer=y&addr=nonsense"),
        400,
        "setpeer with a bad addr",
    );
    let r = a.request("GET", "/setpeer?peer=x", b"");
    assert_eq!(r.status, 405, "GET /setpeer: {}", r.describe());
    wait_ring_members(&all, 3, MEMBERSHIP_DEADLINE);
}
