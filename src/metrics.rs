//! Request and cache metrics, recorded per core without atomics and merged
//! only when `/metrics` is scraped.
//!
//! Each data core owns a [`CoreMetrics`] made of plain `Cell`s: recording a
//! request is a few non-atomic adds on memory no other core touches. A scrape
//! asks every core for a [`CoreSnapshot`] (a message, like any other op) and
//! [`render`] turns the snapshots into Prometheus text through the
//! `prometheus` crate's encoder, one family per name with a `core` label.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

use crate::store::ShardStats;

/// What a request did, as a bounded label value (never a key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    Get,
    Set,
    Delete,
    /// Conditional and read-modify-write ops (`INCR`, `SET NX`, ...).
    Mutate,
    Health,
    Ready,
    Metrics,
    Other,
}

impl OpKind {
    pub const ALL: [OpKind; 8] = [
        OpKind::Get,
        OpKind::Set,
        OpKind::Delete,
        OpKind::Mutate,
        OpKind::Health,
        OpKind::Ready,
        OpKind::Metrics,
        OpKind::Other,
    ];
    pub fn label(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Set => "set",
            OpKind::Delete => "delete",
            OpKind::Mutate => "mutate",
            OpKind::Health => "health",
            OpKind::Ready => "ready",
            OpKind::Metrics => "metrics",
            OpKind::Other => "other",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// The status codes the server sends; anything else is counted as "other".
const STATUSES: [u16; 12] = [200, 400, 404, 405, 411, 413, 414, 431, 500, 502, 503, 504];
const STATUS_SLOTS: usize = STATUSES.len() + 1;

fn status_slot(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(STATUSES.len())
}

fn status_label(slot: usize) -> String {
    STATUSES
        .get(slot)
        .map_or_else(|| "other".to_string(), |s| s.to_string())
}

/// Upper bounds in seconds: from 5 µs (a local hit) to 5 s (a stuck peer).
pub const LATENCY_BUCKETS: [f64; 20] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_075, 0.000_1, 0.000_25, 0.000_5, 0.000_75,
    0.001, 0.002_5, 0.005, 0.007_5, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];
const N_OPS: usize = OpKind::ALL.len();

/// The client protocol a request came in on (the `protocol` label of
/// `nexuscache_requests_total` and its histogram).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http = 0,
    Grpc = 1,
    /// The Redis protocol; its outcomes are counted under the HTTP status
    /// the same outcome gets (200 done, 404 nil read, 400 refused command,
    /// 401 NOAUTH/WRONGPASS, 5xx failures), so one family covers all.
    Resp = 2,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Http, Protocol::Grpc, Protocol::Resp];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::Resp => "resp",
        }
    }
}

const N_PROTOCOLS: usize = Protocol::ALL.len();

/// How a request to a peer node ended, as a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerOutcome {
    Ok,
    /// Could not connect (or the connection is in its back-off window).
    Unreachable,
    Timeout,
    /// The peer answered with an error status or broke the protocol.
    Error,
}

impl PeerOutcome {
    pub fn label(self) -> &'static str {
        match self {
            PeerOutcome::Ok => "ok",
            PeerOutcome::Unreachable => "unreachable",
            PeerOutcome::Timeout => "timeout",
            PeerOutcome::Error => "error",
        }
    }
}

/// Which kind of copy landed in this node's hot tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// Pushed by the owner of a key written with `hot=true`.
    Replica,
    /// Kept by this node after forwarding many reads for the key.
    Auto,
}

/// How an origin request ended, as a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginResult {
    Found,
    NotFound,
    Error,
    Timeout,
}

impl OriginResult {
    const ALL: [OriginResult; 4] = [
        OriginResult::Found,
        OriginResult::NotFound,
        OriginResult::Error,
        OriginResult::Timeout,
    ];
    fn label(self) -> &'static str {
        match self {
            OriginResult::Found => "found",
            OriginResult::NotFound => "not_found",
            OriginResult::Error => "error",
            OriginResult::Timeout => "timeout",
        }
    }
}

/// How one replica update an owner sent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaOutcome {
    Ok,
    /// Timed out, unreachable or refused by a node that may be alive.
    Failed,
    /// The node's port refused the connection: it is down and holds no copy.
    NodeDown,
}

const REPLICA_OUTCOMES: [&str; 3] = ["ok", "failed", "node_down"];

/// Counters of the hot tier, singleflight and the read-through origin.
#[derive(Debug, Default)]
struct TierCounters {
    /// Indexed by `CopyKind as usize`.
    copies: [Cell<u64>; 2],
    /// `[put, remove] x ReplicaOutcome` replica updates this core sent.
    replica_updates: [[Cell<u64>; 3]; 2],
    singleflight_shared: Cell<u64>,
    /// Indexed like `OriginResult::ALL`.
    origin: [Cell<u64>; 4],
    negative_hits: Cell<u64>,
}

/// [`TierCounters`] at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierSnapshot {
    /// Stats of the hot tier's own shard.
    pub hot: ShardStats,
    pub copies: [u64; 2],
    pub replica_updates: [[u64; 3]; 2],
    pub singleflight_shared: u64,
    pub origin: [u64; 4],
    pub negative_hits: u64,
}

/// Latency histogram counts: non-cumulative buckets (last is +Inf) and sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyCounts {
    pub buckets: Vec<u64>,
    pub sum: f64,
}

impl LatencyCounts {
    fn observe(&mut self, elapsed: Duration) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; LATENCY_BUCKETS.len() + 1];
        }
        let secs = elapsed.as_secs_f64();
        self.buckets[bucket_of(secs)] += 1;
        self.sum += secs;
    }
}

fn bucket_of(secs: f64) -> usize {
    LATENCY_BUCKETS
        .iter()
        .position(|&le| secs <= le)
        .unwrap_or(LATENCY_BUCKETS.len())
}

/// Peer series are keyed by peer name: bounded by the cluster size.
type PeerKey = (Arc<str>, OpKind);
type PeerOutcomeKey = (Arc<str>, OpKind, PeerOutcome);

/// Where an op forwarded by another node arrived: on the key's home core
/// (its peer connection announced that core), or on another core of this
/// node, which then takes one more cross-core hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    HomeCore = 0,
    OtherCore = 1,
}

impl Landing {
    pub const ALL: [Landing; 2] = [Landing::HomeCore, Landing::OtherCore];

    pub fn label(self) -> &'static str {
        match self {
            Landing::HomeCore => "home_core",
            Landing::OtherCore => "other_core",
        }
    }
}

/// What the accepting core did with a peer connection that announced its
/// target core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcement {
    /// The target was the accepting core: served here.
    Here = 0,
    /// Handed to the target core.
    HandedOff = 1,
    /// The target is not a core of this node (or could not take it):
    /// served on the accepting core.
    Refused = 2,
}

impl Announcement {
    pub const ALL: [Announcement; 3] = [
        Announcement::Here,
        Announcement::HandedOff,
        Announcement::Refused,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Announcement::Here => "here",
            Announcement::HandedOff => "handed_off",
            Announcement::Refused => "refused",
        }
    }
}

/// One core's counters. Not `Sync` on purpose: only its core writes it.
#[derive(Debug)]
pub struct CoreMetrics {
    peer_requests: RefCell<HashMap<PeerOutcomeKey, u64>>,
    peer_latency: RefCell<HashMap<PeerKey, LatencyCounts>>,
    ring_members: Cell<u64>,
    /// Per protocol, op and status slot.
    requests: [[[Cell<u64>; STATUS_SLOTS]; N_OPS]; N_PROTOCOLS],
    /// Per protocol and op: non-cumulative bucket counts, the last slot is
    /// +Inf.
    latency_buckets: [[[Cell<u64>; LATENCY_BUCKETS.len() + 1]; N_OPS]; N_PROTOCOLS],
    latency_sum: [[Cell<f64>; N_OPS]; N_PROTOCOLS],
    cross_core: Cell<u64>,
    /// Ops other nodes forwarded here (reads, writes, replica updates), by
    /// [`Landing`].
    forwarded_landed: [Cell<u64>; 2],
    /// Announcing peer connections this core accepted, by [`Announcement`].
    announcements: [Cell<u64>; 3],
    connections_active: Cell<u64>,
    connections_total: Cell<u64>,
    connections_rejected: Cell<u64>,
    /// Bytes held in connection buffers (HTTP in/out, h2 partial messages).
    connection_buffer_bytes: Cell<u64>,
    auth_failures: Cell<u64>,
    tiers: TierCounters,
}

impl Default for CoreMetrics {
    fn default() -> Self {
        CoreMetrics {
            peer_requests: Default::default(),
            peer_latency: Default::default(),
            ring_members: Cell::new(1),
            requests: Default::default(),
            latency_buckets: Default::default(),
            latency_sum: Default::default(),
            cross_core: Cell::new(0),
            forwarded_landed: Default::default(),
            announcements: Default::default(),
            connections_active: Cell::new(0),
            connections_total: Cell::new(0),
            connections_rejected: Cell::new(0),
            connection_buffer_bytes: Cell::new(0),
            auth_failures: Cell::new(0),
            tiers: TierCounters::default(),
        }
    }
}

fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get().wrapping_add(by));
}

impl CoreMetrics {
    /// An HTTP request answered.
    pub fn record_request(&self, op: OpKind, status: u16, elapsed: Duration) {
        self.record_request_on(Protocol::Http, op, status, elapsed);
    }

    /// A request answered on `protocol`.
    pub fn record_request_on(
        &self,
        protocol: Protocol,
        op: OpKind,
        status: u16,
        elapsed: Duration,
    ) {
        let p = protocol as usize;
        bump(&self.requests[p][op.index()][status_slot(status)], 1);
        let secs = elapsed.as_secs_f64();
        bump(&self.latency_buckets[p][op.index()][bucket_of(secs)], 1);
        let sum = &self.latency_sum[p][op.index()];
        sum.set(sum.get() + secs);
    }

    pub fn record_peer_request(
        &self,
        peer: &Arc<str>,
        op: OpKind,
        outcome: PeerOutcome,
        elapsed: Duration,
    ) {
        *self
            .peer_requests
            .borrow_mut()
            .entry((peer.clone(), op, outcome))
            .or_default() += 1;
        self.peer_latency
            .borrow_mut()
            .entry((peer.clone(), op))
            .or_default()
            .observe(elapsed);
    }

    pub fn set_ring_members(&self, members: usize) {
        self.ring_members.set(members as u64);
    }

    pub fn record_cross_core(&self) {
        bump(&self.cross_core, 1);
    }

    /// An op another node forwarded, which arrived on this core.
    pub fn record_forwarded_op(&self, landing: Landing) {
        bump(&self.forwarded_landed[landing as usize], 1);
    }

    /// A peer connection that announced its target core arrived here.
    pub fn record_announcement(&self, result: Announcement) {
        bump(&self.announcements[result as usize], 1);
    }

    pub fn record_copy(&self, kind: CopyKind) {
        bump(&self.tiers.copies[kind as usize], 1);
    }

    /// A replica update this core sent as the key's owner.
    pub fn record_replica_update(&self, remove: bool, outcome: ReplicaOutcome) {
        bump(
            &self.tiers.replica_updates[usize::from(remove)][outcome as usize],
            1,
        );
    }

    /// A request that waited for a load another request had started.
    pub fn record_singleflight_shared(&self) {
        bump(&self.tiers.singleflight_shared, 1);
    }

    pub fn record_origin(&self, result: OriginResult) {
        bump(&self.tiers.origin[result as usize], 1);
    }

    pub fn record_negative_hit(&self) {
        bump(&self.tiers.negative_hits, 1);
    }

    pub fn connection_opened(&self) {
        bump(&self.connections_total, 1);
        bump(&self.connections_active, 1);
    }

    pub fn connection_closed(&self) {
        self.connections_active
            .set(self.connections_active.get().saturating_sub(1));
    }

    /// A connection closed at once because the core is at its share of
    /// `--max-connections` or the process ran out of file descriptors.
    pub fn connection_rejected(&self) {
        bump(&self.connections_rejected, 1);
    }

    /// A connection's buffers grew (`grown`) or shrank (`shrunk`) by bytes.
    pub fn connection_buffers_changed(&self, grown: usize, shrunk: usize) {
        let held = self.connection_buffer_bytes.get() + grown as u64;
        self.connection_buffer_bytes
            .set(held.saturating_sub(shrunk as u64));
    }

    /// Moves `charge` to `held` bytes, reporting the difference.
    pub fn charge_connection_buffers(&self, charge: &mut BufferCharge, held: usize) {
        if held != charge.reported {
            let grown = held.saturating_sub(charge.reported);
            let shrunk = charge.reported.saturating_sub(held);
            self.connection_buffers_changed(grown, shrunk);
            charge.reported = held;
        }
    }

    /// Bytes this core's connections hold in buffers right now.
    pub fn connection_buffer_bytes(&self) -> u64 {
        self.connection_buffer_bytes.get()
    }

    /// A request refused for a missing or wrong token or cluster secret.
    pub fn record_auth_failure(&self) {
        bump(&self.auth_failures, 1);
    }

    pub fn snapshot(&self, core: usize) -> CoreSnapshot {
        CoreSnapshot {
            core,
            requests: self
                .requests
                .iter()
                .map(|ops| {
                    ops.iter()
                        .map(|row| row.iter().map(Cell::get).collect())
                        .collect()
                })
                .collect(),
            latency_buckets: self
                .latency_buckets
                .iter()
                .map(|ops| {
                    ops.iter()
                        .map(|row| row.iter().map(Cell::get).collect())
                        .collect()
                })
                .collect(),
            latency_sum: self
                .latency_sum
                .iter()
                .map(|ops| ops.iter().map(Cell::get).collect())
                .collect(),
            cross_core: self.cross_core.get(),
            forwarded_landed: self.forwarded_landed.each_ref().map(Cell::get),
            announcements: self.announcements.each_ref().map(Cell::get),
            connections_active: self.connections_active.get(),
            connections_total: self.connections_total.get(),
            connections_rejected: self.connections_rejected.get(),
            connection_buffer_bytes: self.connection_buffer_bytes.get(),
            auth_failures: self.auth_failures.get(),
            peer_requests: self
                .peer_requests
                .borrow()
                .iter()
                .map(|((peer, op, outcome), n)| (peer.to_string(), *op, *outcome, *n))
                .collect(),
            peer_latency: self
                .peer_latency
                .borrow()
                .iter()
                .map(|((peer, op), counts)| (peer.to_string(), *op, counts.clone()))
                .collect(),
            ring_members: self.ring_members.get(),
            tiers: TierSnapshot::default(),
        }
    }

    /// The tier counters, with the hot tier's shard stats (which the caller
    /// owns) attached.
    pub fn tier_snapshot(&self, hot: ShardStats) -> TierSnapshot {
        let t = &self.tiers;
        TierSnapshot {
            hot,
            copies: [t.copies[0].get(), t.copies[1].get()],
            replica_updates: [0, 1].map(|op| [0, 1, 2].map(|o| t.replica_updates[op][o].get())),
            singleflight_shared: t.singleflight_shared.get(),
            origin: [
                t.origin[0].get(),
                t.origin[1].get(),
                t.origin[2].get(),
                t.origin[3].get(),
            ],
            negative_hits: t.negative_hits.get(),
        }
    }
}

/// A core's counters at one instant, sent to the core answering the scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoreSnapshot {
    pub core: usize,
    /// Indexed `[protocol][op][status slot]`.
    pub requests: Vec<Vec<Vec<u64>>>,
    /// Indexed `[protocol][op][bucket]`.
    pub latency_buckets: Vec<Vec<Vec<u64>>>,
    pub latency_sum: Vec<Vec<f64>>,
    pub cross_core: u64,
    pub forwarded_landed: [u64; 2],
    pub announcements: [u64; 3],
    pub connections_active: u64,
    pub connections_total: u64,
    pub connections_rejected: u64,
    pub connection_buffer_bytes: u64,
    pub auth_failures: u64,
    pub peer_requests: Vec<(String, OpKind, PeerOutcome, u64)>,
    pub peer_latency: Vec<(String, OpKind, LatencyCounts)>,
    pub ring_members: u64,
    pub tiers: TierSnapshot,
}

impl CoreSnapshot {
    /// Requests this core answered on `protocol`, every op and status.
    pub fn requests_of(&self, protocol: Protocol) -> u64 {
        self.requests
            .get(protocol as usize)
            .map_or(0, |ops| ops.iter().flatten().sum())
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(labels: Vec<LabelPair>, value: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value as f64);
    let mut m = Metric::from_label(labels);
    m.set_counter(c);
    m
}

fn gauge(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_label(labels);
    m.set_gauge(g);
    m
}

fn histogram(labels: Vec<LabelPair>, buckets: &[u64], sum: f64) -> Metric {
    let mut cumulative = 0;
    let mut hist = Histogram::default();
    hist.set_bucket(
        LATENCY_BUCKETS
            .iter()
            .zip(buckets)
            .map(|(&le, &n)| {
                cumulative += n;
                let mut b = Bucket::default();
                b.set_upper_bound(le);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect(),
    );
    hist.set_sample_count(buckets.iter().sum());
    hist.set_sample_sum(sum);
    let mut m = Metric::from_label(labels);
    m.set_histogram(hist);
    m
}

/// Name, help, type and value of a family with one sample per core.
type PerCoreSpec = (
    &'static str,
    &'static str,
    MetricType,
    fn(&ShardStats, &CoreSnapshot) -> u64,
);

/// One gauge or counter family with one sample per core.
fn per_core(
    name: &str,
    help: &str,
    kind: MetricType,
    cores: &[(ShardStats, CoreSnapshot)],
    value: impl Fn(&ShardStats, &CoreSnapshot) -> u64,
) -> MetricFamily {
    let metrics = cores
        .iter()
        .map(|(stats, snap)| {
            let labels = vec![label("core", &snap.core.to_string())];
            let v = value(stats, snap);
            match kind {
                MetricType::COUNTER => counter(labels, v),
                _ => gauge(labels, v as f64),
            }
        })
        .collect();
    family(name, help, kind, metrics)
}

/// Render every core's snapshot as Prometheus text exposition format.
pub fn render(cores: &[(ShardStats, CoreSnapshot)]) -> String {
    let mut families = Vec::new();

    let mut requests = Vec::new();
    let mut latencies = Vec::new();
    for (_, snap) in cores {
        let core = snap.core.to_string();
        for protocol in Protocol::ALL {
            let p = protocol as usize;
            for op in OpKind::ALL {
                let Some(row) = snap.requests.get(p).and_then(|ops| ops.get(op.index())) else {
                    continue;
                };
                for (slot, &n) in row.iter().enumerate().filter(|(_, n)| **n > 0) {
                    requests.push(counter(
                        vec![
                            label("core", &core),
                            label("protocol", protocol.label()),
                            label("op", op.label()),
                            label("status", &status_label(slot)),
                        ],
                        n,
                    ));
                }
                let Some(buckets) = snap
                    .latency_buckets
                    .get(p)
                    .and_then(|ops| ops.get(op.index()))
                else {
                    continue;
                };
                let total: u64 = buckets.iter().sum();
                // Series for ops a core never served would be noise; keep
                // the ones that carry data, plus HTTP get/set so dashboards
                // always resolve.
                if total == 0
                    && !(protocol == Protocol::Http && matches!(op, OpKind::Get | OpKind::Set))
                {
                    continue;
                }
                let sum = snap
                    .latency_sum
                    .get(p)
                    .and_then(|ops| ops.get(op.index()))
                    .copied()
                    .unwrap_or(0.0);
                let m = histogram(
                    vec![
                        label("core", &core),
                        label("protocol", protocol.label()),
                        label("op", op.label()),
                    ],
                    buckets,
                    sum,
                );
                latencies.push(m);
            }
        }
    }
    families.push(family(
        "nexuscache_requests_total",
        "Client requests answered, by protocol (http, grpc, resp), operation and status code (Redis commands: the HTTP status of the same outcome).",
        MetricType::COUNTER,
        requests,
    ));
    families.push(family(
        "nexuscache_request_duration_seconds",
        "Time from a request's complete arrival to its response being queued, by protocol and operation.",
        MetricType::HISTOGRAM,
        latencies,
    ));
    let c = MetricType::COUNTER;
    let g = MetricType::GAUGE;
    let specs: [PerCoreSpec; 20] = [
        (
            "nexuscache_cache_size_bytes",
            "Bytes charged to cached entries (key + value + per-entry overhead).",
            g,
            |s, _| s.bytes,
        ),
        (
            "nexuscache_cache_capacity_bytes",
            "Byte budget of the core's shard (--max-memory divided by cores).",
            g,
            |s, _| s.capacity_bytes,
        ),
        (
            "nexuscache_cache_items",
            "Entries held, including expired ones not yet reclaimed.",
            g,
            |s, _| s.items,
        ),
        (
            "nexuscache_cache_hits_total",
            "Lookups that found a live entry.",
            c,
            |s, _| s.hits,
        ),
        (
            "nexuscache_cache_misses_total",
            "Lookups that found no live entry.",
            c,
            |s, _| s.misses,
        ),
        (
            "nexuscache_evictions_total",
            "Entries evicted to stay within the memory limit.",
            c,
            |s, _| s.evictions,
        ),
        (
            "nexuscache_expired_total",
            "Entries removed because their TTL passed (on access or by the sweep).",
            c,
            |s, _| s.expired,
        ),
        (
            "nexuscache_cross_core_requests_total",
            "Operations this core sent to the core owning the key.",
            c,
            |_, m| m.cross_core,
        ),
        (
            "nexuscache_connections_active",
            "Client connections open on this core.",
            g,
            |_, m| m.connections_active,
        ),
        (
            "nexuscache_connections_total",
            "Client connections accepted by this core.",
            c,
            |_, m| m.connections_total,
        ),
        (
            "nexuscache_connections_rejected_total",
            "Connections closed at accept: the core's share of --max-connections was in use, or the process was out of file descriptors.",
            c,
            |_, m| m.connections_rejected,
        ),
        (
            "nexuscache_connection_buffer_bytes",
            "Bytes held in this core's connection buffers (HTTP input and unsent output, HTTP/2 partly received messages).",
            g,
            |_, m| m.connection_buffer_bytes,
        ),
        (
            "nexuscache_auth_failures_total",
            "Requests refused for a missing or wrong token, or a peer-only call without the cluster secret.",
            c,
            |_, m| m.auth_failures,
        ),
        (
            "nexuscache_hot_items",
            "Copies of other nodes' hot keys held in this core's hot tier.",
            g,
            |_, m| m.tiers.hot.items,
        ),
        (
            "nexuscache_hot_size_bytes",
            "Bytes charged to the hot tier (key + value + per-entry overhead).",
            g,
            |_, m| m.tiers.hot.bytes,
        ),
        (
            "nexuscache_hot_capacity_bytes",
            "Byte budget of the core's hot tier (--hot-max-memory divided by cores).",
            g,
            |_, m| m.tiers.hot.capacity_bytes,
        ),
        (
            "nexuscache_hot_hits_total",
            "Reads of keys owned elsewhere answered from the hot tier, without a peer request.",
            c,
            |_, m| m.tiers.hot.hits,
        ),
        (
            "nexuscache_hot_misses_total",
            "Reads of keys owned elsewhere that the hot tier did not have.",
            c,
            |_, m| m.tiers.hot.misses,
        ),
        (
            "nexuscache_singleflight_shared_total",
            "Reads that waited for a load (peer or origin) another read of the same key had started.",
            c,
            |_, m| m.tiers.singleflight_shared,
        ),
        (
            "nexuscache_negative_hits_total",
            "Reads answered 404 from a remembered origin 404 (--negative-ttl).",
            c,
            |_, m| m.tiers.negative_hits,
        ),
    ];
    for (name, help, kind, value) in specs {
        families.push(per_core(name, help, kind, cores, value));
    }
    families.extend(tier_families(cores));
    let mut peer_requests = Vec::new();
    let mut peer_latency = Vec::new();
    for (_, snap) in cores {
        let core = snap.core.to_string();
        for (peer, op, outcome, n) in &snap.peer_requests {
            peer_requests.push(counter(
                vec![
                    label("core", &core),
                    label("peer", peer),
                    label("op", op.label()),
                    label("status", outcome.label()),
                ],
                *n,
            ));
        }
        for (peer, op, counts) in &snap.peer_latency {
            peer_latency.push(histogram(
                vec![
                    label("core", &core),
                    label("peer", peer),
                    label("op", op.label()),
                ],
                &counts.buckets,
                counts.sum,
            ));
        }
    }
    families.push(family(
        "nexuscache_peer_requests_total",
        "Requests this node forwarded to the key's owner node, by peer, operation and outcome.",
        MetricType::COUNTER,
        peer_requests,
    ));
    families.push(family(
        "nexuscache_peer_request_duration_seconds",
        "Time for a forwarded request to come back from the owner node.",
        MetricType::HISTOGRAM,
        peer_latency,
    ));
    families.push(family(
        "nexuscache_ring_members",
        "Nodes in this node's current view of the consistent-hash ring.",
        g,
        vec![gauge(
            vec![],
            cores.first().map_or(1, |(_, s)| s.ring_members) as f64,
        )],
    ));
    families.push(family(
        "nexuscache_cores",
        "Data cores (executors) of this node.",
        g,
        vec![gauge(vec![], cores.len() as f64)],
    ));
    families.push(family(
        "nexuscache_build_info",
        "Always 1; the version label tells which build is running.",
        MetricType::GAUGE,
        vec![gauge(
            vec![label("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        )],
    ));

    families.extend(process_families());
    // The encoder rejects a family without samples (say, peer requests on a
    // single node, or the very first scrape): leave those out.
    families.retain(|f| !f.get_metric().is_empty());

    let mut out = Vec::with_capacity(16 * 1024);
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        return format!("# metrics encoding failed: {e}\n");
    }
    String::from_utf8(out).unwrap_or_else(|_| "# metrics were not UTF-8\n".to_string())
}

/// The labelled hot-tier and origin counters.
fn tier_families(cores: &[(ShardStats, CoreSnapshot)]) -> Vec<MetricFamily> {
    let mut copies = Vec::new();
    let mut updates = Vec::new();
    let mut origin = Vec::new();
    let mut forwarded = Vec::new();
    let mut announcements = Vec::new();
    for (_, snap) in cores {
        let core = snap.core.to_string();
        for (landing, n) in Landing::ALL.iter().zip(snap.forwarded_landed) {
            forwarded.push(counter(
                vec![label("core", &core), label("landed", landing.label())],
                n,
            ));
        }
        for (result, n) in Announcement::ALL.iter().zip(snap.announcements) {
            announcements.push(counter(
                vec![label("core", &core), label("result", result.label())],
                n,
            ));
        }
        let t = &snap.tiers;
        for (kind, n) in ["replica", "auto"].iter().zip(t.copies) {
            copies.push(counter(vec![label("core", &core), label("kind", kind)], n));
        }
        for (op, row) in ["put", "remove"].iter().zip(t.replica_updates) {
            for (status, n) in REPLICA_OUTCOMES.iter().zip(row) {
                updates.push(counter(
                    vec![
                        label("core", &core),
                        label("op", op),
                        label("status", status),
                    ],
                    n,
                ));
            }
        }
        for (result, n) in OriginResult::ALL.iter().zip(t.origin) {
            origin.push(counter(
                vec![label("core", &core), label("result", result.label())],
                n,
            ));
        }
    }
    vec![
        family(
            "nexuscache_hot_copies_total",
            "Copies stored in this node's hot tier: pushed by a key's owner (replica) or kept after repeated forwarded reads (auto).",
            MetricType::COUNTER,
            copies,
        ),
        family(
            "nexuscache_replica_updates_total",
            "Hot-copy updates this node sent to other nodes as a key's owner, by operation and outcome.",
            MetricType::COUNTER,
            updates,
        ),
        family(
            "nexuscache_origin_requests_total",
            "Requests to the read-through origin, by result.",
            MetricType::COUNTER,
            origin,
        ),
        family(
            "nexuscache_forwarded_ops_received_total",
            "Ops other nodes forwarded here (reads, writes, replica updates), by where they arrived: on the key's home core (landed=home_core), or on another core, which then sends them on (landed=other_core, also counted in nexuscache_cross_core_requests_total).",
            MetricType::COUNTER,
            forwarded,
        ),
        family(
            "nexuscache_peer_connection_announcements_total",
            "Peer connections that asked to be served on a given core, by what the accepting core did: served here (its own id), handed_off to that core, or refused (no such core, or the handoff failed) and served here.",
            MetricType::COUNTER,
            announcements,
        ),
    ]
}

/// Process-wide resident memory and CPU, read from /proc at scrape time.
fn process_families() -> Vec<MetricFamily> {
    use prometheus::core::Collector;
    prometheus::process_collector::ProcessCollector::for_self().collect()
}

/// What one connection last reported holding in buffers (see
/// [`CoreMetrics::charge_connection_buffers`]); a connection charges its
/// buffers through it and moves it to 0 when it ends.
#[derive(Debug, Default)]
pub struct BufferCharge {
    reported: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(ShardStats, CoreSnapshot)> {
        let m = CoreMetrics::default();
        m.record_request(OpKind::Get, 200, Duration::from_micros(3));
        m.record_request(OpKind::Get, 404, Duration::from_millis(2));
        m.record_request(OpKind::Set, 999, Duration::from_secs(10));
        m.record_cross_core();
        let stats = ShardStats {
            items: 2,
            bytes: 300,
            capacity_bytes: 1000,
            hits: 1,
            misses: 1,
            ..Default::default()
        };
        vec![(stats.clone(), m.snapshot(0)), (stats, m.snapshot(1))]
    }

    #[test]
    fn renders_every_documented_family_once() {
        let text = render(&sample());
        for name in [
            "nexuscache_requests_total",
            "nexuscache_request_duration_seconds",
            "nexuscache_cache_size_bytes",
            "nexuscache_cache_items",
            "nexuscache_evictions_total",
            "nexuscache_expired_total",
            "nexuscache_cache_hits_total",
            "nexuscache_cache_misses_total",
            "nexuscache_cross_core_requests_total",
            "nexuscache_build_info",
        ] {
            let type_lines = text
                .lines()
                .filter(|l| l.starts_with(&format!("# TYPE {name} ")))
                .count();
            assert_eq!(type_lines, 1, "{name} declared once");
        }
        assert!(text.contains(
            r#"nexuscache_requests_total{core="1",protocol="http",op="get",status="404"} 1"#
        ));
        assert!(text.contains(r#"op="set",status="other"} 1"#));
        assert!(text.contains(r#"nexuscache_cache_size_bytes{core="0"} 300"#));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_resolve_microseconds() {
        let text = render(&sample());
        assert!(text.contains(
            r#"nexuscache_request_duration_seconds_bucket{core="0",protocol="http",op="get",le="0.000005"} 1"#
        ));
        assert!(text.contains(
            r#"nexuscache_request_duration_seconds_bucket{core="0",protocol="http",op="get",le="0.0025"} 2"#
        ));
        assert!(text.contains(
            r#"nexuscache_request_duration_seconds_bucket{core="0",protocol="http",op="set",le="+Inf"} 1"#
        ));
    }

    #[test]
    fn requests_are_labelled_by_protocol() {
        let m = CoreMetrics::default();
        m.record_request(OpKind::Get, 200, Duration::from_micros(3));
        m.record_request_on(Protocol::Resp, OpKind::Get, 404, Duration::from_micros(3));
        m.record_request_on(Protocol::Resp, OpKind::Set, 200, Duration::from_micros(3));
        let snap = m.snapshot(0);
        assert_eq!(snap.requests_of(Protocol::Resp), 2);
        assert_eq!(snap.requests_of(Protocol::Http), 1);
        assert_eq!(snap.requests_of(Protocol::Grpc), 0);
        let text = render(&[(ShardStats::default(), snap)]);
        assert!(text.contains(
            r#"nexuscache_requests_total{core="0",protocol="resp",op="get",status="404"} 1"#
        ));
        assert!(text.contains(
            r#"nexuscache_requests_total{core="0",protocol="http",op="get",status="200"} 1"#
        ));
        assert!(text.contains(
            r#"nexuscache_request_duration_seconds_count{core="0",protocol="resp",op="set"} 1"#
        ));
        // No empty series for a protocol that served nothing.
        assert!(!text.contains(r#"protocol="grpc""#));
    }

    #[test]
    fn a_fresh_node_renders_valid_text() {
        let m = CoreMetrics::default();
        let text = render(&[(ShardStats::default(), m.snapshot(0))]);
        assert!(!text.contains("encoding failed"), "{text}");
        assert!(text.contains("nexuscache_cache_items{core=\"0\"} 0"));
    }

    #[test]
    fn peer_series_are_labelled_by_peer_op_and_outcome() {
        let m = CoreMetrics::default();
        let peer: Arc<str> = Arc::from("node-b");
        m.record_peer_request(
            &peer,
            OpKind::Get,
            PeerOutcome::Timeout,
            Duration::from_millis(3),
        );
        m.set_ring_members(3);
        let text = render(&[(ShardStats::default(), m.snapshot(0))]);
        assert!(text.contains(
            r#"nexuscache_peer_requests_total{core="0",peer="node-b",op="get",status="timeout"} 1"#
        ));
        assert!(text.contains("nexuscache_peer_request_duration_seconds_count{"));
        assert!(text.contains("nexuscache_ring_members 3"));
    }

    #[test]
    fn metric_names_are_unique_and_well_formed() {
        let text = render(&sample());
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let before = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate family");
        for n in names {
            assert!(n
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
    }
}
