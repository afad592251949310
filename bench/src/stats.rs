//! Measurements one worker gathers in one reporting interval, and how
//! they are merged. Each worker owns its own `IntervalStats` (no sharing on
//! the hot path); the coordinator merges them once per interval.
//!
//! Latencies are recorded in nanoseconds into HdrHistograms with 3
//! significant digits (0.1% resolution) from 1 ns to one hour. Only
//! answered requests are recorded: successful ones and read misses (a 404
//! on a read is a correct cache answer, not an error). Failures are counted
//! by kind and kept out of the latency distribution.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::transport::ResponseClass;
use crate::workload::OpKind;

/// Highest latency a histogram tracks; larger values are clamped to it.
pub const MAX_LATENCY_NS: u64 = 3_600 * 1_000_000_000;
const SIGFIGS: u8 = 3;

pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, SIGFIGS).expect("valid histogram bounds")
}

/// Adds `b` into `a`. Histograms made by `new_histogram` share bounds, so
/// `add` cannot fail; the fallback keeps this infallible regardless.
pub fn merge_histogram(a: &mut Histogram<u64>, b: &Histogram<u64>) {
    if a.add(b).is_err() {
        for v in b.iter_recorded() {
            a.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// Non-OK gRPC statuses by code (0..=16); serialized as a map from the
/// code's lower-case name to its count, non-zero codes only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrpcCodes(pub [u64; 17]);

impl Serialize for GrpcCodes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let nonzero: Vec<(usize, u64)> = self
            .0
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, n)| n > 0)
            .collect();
        let mut map = s.serialize_map(Some(nonzero.len()))?;
        for (code, n) in nonzero {
            map.serialize_entry(GRPC_ERROR_NAMES[code], &n)?;
        }
        map.end()
    }
}

/// `grpc_<code name>`, the error kinds of non-OK gRPC statuses.
const GRPC_ERROR_NAMES: [&str; 17] = [
    "grpc_ok",
    "grpc_cancelled",
    "grpc_unknown",
    "grpc_invalid_argument",
    "grpc_deadline_exceeded",
    "grpc_not_found",
    "grpc_already_exists",
    "grpc_permission_denied",
    "grpc_resource_exhausted",
    "grpc_failed_precondition",
    "grpc_aborted",
    "grpc_out_of_range",
    "grpc_unimplemented",
    "grpc_internal",
    "grpc_unavailable",
    "grpc_data_loss",
    "grpc_unauthenticated",
];

/// Failures by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    /// TCP connect failed or timed out.
    pub connect: u64,
    /// No response within `--timeout`.
    pub timeout: u64,
    /// Socket read/write failure, or the server closed the connection with
    /// requests outstanding.
    pub io: u64,
    /// Unparseable response.
    pub parse: u64,
    /// 4xx other than a read's 404 (and any 404 on a write).
    pub http_4xx: u64,
    pub http_5xx: u64,
    /// Any other unexpected status (1xx/3xx, 2xx other than 200).
    pub http_other: u64,
    /// gRPC calls answered with a non-OK `grpc-status` (a Get's NOT_FOUND
    /// is a miss, not an error).
    pub grpc: u64,
    /// `grpc` by status code.
    pub grpc_codes: GrpcCodes,
    /// HTTP/2 streams reset by the server or refused by its GOAWAY.
    pub stream_reset: u64,
}

impl ErrorCounts {
    pub fn total(&self) -> u64 {
        self.connect
            + self.timeout
            + self.io
            + self.parse
            + self.http_4xx
            + self.http_5xx
            + self.http_other
            + self.grpc
            + self.stream_reset
    }

    pub fn merge(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.io += o.io;
        self.parse += o.parse;
        self.http_4xx += o.http_4xx;
        self.http_5xx += o.http_5xx;
        self.http_other += o.http_other;
        self.grpc += o.grpc;
        for (a, b) in self.grpc_codes.0.iter_mut().zip(o.grpc_codes.0) {
            *a += b;
        }
        self.stream_reset += o.stream_reset;
    }

    /// Counts one call answered with gRPC status `code`.
    pub fn add_grpc(&mut self, code: u8) {
        self.grpc += 1;
        self.grpc_codes.0[usize::from(code).min(16)] += 1;
    }

    /// `(name, count)` for every non-zero kind; gRPC statuses one per
    /// code (`grpc_unavailable`, ...).
    pub fn nonzero(&self) -> Vec<(&'static str, u64)> {
        [
            ("connect", self.connect),
            ("timeout", self.timeout),
            ("io", self.io),
            ("parse", self.parse),
            ("http_4xx", self.http_4xx),
            ("http_5xx", self.http_5xx),
            ("http_other", self.http_other),
        ]
        .into_iter()
        .chain(
            self.grpc_codes
                .0
                .iter()
                .enumerate()
                .map(|(code, &n)| (GRPC_ERROR_NAMES[code], n)),
        )
        .chain([("stream_reset", self.stream_reset)])
        .filter(|&(_, n)| n > 0)
        .collect()
    }
}

/// What a response means for the operation that asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Stored,
    Http4xx,
    Http5xx,
    HttpOther,
    Grpc(u8),
    StreamReset,
}

/// 200 on a read is a hit, 404 on a read a miss; a write must get 200.
pub fn outcome(kind: OpKind, class: ResponseClass) -> Outcome {
    match (kind, class) {
        (OpKind::Read, ResponseClass::Ok) => Outcome::Hit,
        (OpKind::Read, ResponseClass::NotFound) => Outcome::Miss,
        (OpKind::Write, ResponseClass::Ok) => Outcome::Stored,
        (_, ResponseClass::NotFound | ResponseClass::ClientError(_)) => Outcome::Http4xx,
        (_, ResponseClass::ServerError(_)) => Outcome::Http5xx,
        (_, ResponseClass::Other(_)) => Outcome::HttpOther,
        (_, ResponseClass::GrpcStatus(code)) => Outcome::Grpc(code),
        (_, ResponseClass::StreamReset(_)) => Outcome::StreamReset,
    }
}

/// Answered requests of one operation.
#[derive(Debug, Clone)]
pub struct OpStats {
    pub latency_ns: Histogram<u64>,
    /// Reads answered 200.
    pub hits: u64,
    /// Reads answered 404.
    pub misses: u64,
    /// Writes answered 200.
    pub stored: u64,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            latency_ns: new_histogram(),
            hits: 0,
            misses: 0,
            stored: 0,
        }
    }
}

impl OpStats {
    /// Requests answered without error.
    pub fn count(&self) -> u64 {
        self.hits + self.misses + self.stored
    }

    pub fn merge(&mut self, o: &OpStats) {
        merge_histogram(&mut self.latency_ns, &o.latency_ns);
        self.hits += o.hits;
        self.misses += o.misses;
        self.stored += o.stored;
    }
}

/// Everything one worker measured in one interval.
#[derive(Debug, Clone)]
pub struct IntervalStats {
    pub ops: [OpStats; 2],
    pub errors: ErrorCounts,
    /// Open loop only: how late each request left relative to its intended
    /// send time. Large values mean the generator (or its CPU) fell behind,
    /// or every connection was busy (server slower than the rate).
    pub send_lag_ns: Histogram<u64>,
}

impl Default for IntervalStats {
    fn default() -> Self {
        IntervalStats {
            ops: Default::default(),
            errors: ErrorCounts::default(),
            send_lag_ns: new_histogram(),
        }
    }
}

impl IntervalStats {
    pub fn op(&self, kind: OpKind) -> &OpStats {
        &self.ops[kind.index()]
    }

    /// Records an answered request.
    #[inline]
    pub fn record(&mut self, kind: OpKind, class: ResponseClass, latency_ns: u64) {
        let op = &mut self.ops[kind.index()];
        match outcome(kind, class) {
            Outcome::Hit => op.hits += 1,
            Outcome::Miss => op.misses += 1,
            Outcome::Stored => op.stored += 1,
            Outcome::Http4xx => {
                self.errors.http_4xx += 1;
                return;
            }
            Outcome::Http5xx => {
                self.errors.http_5xx += 1;
                return;
            }
            Outcome::HttpOther => {
                self.errors.http_other += 1;
                return;
            }
            Outcome::Grpc(code) => {
                self.errors.add_grpc(code);
                return;
            }
            Outcome::StreamReset => {
                self.errors.stream_reset += 1;
                return;
            }
        }
        op.latency_ns.saturating_record(latency_ns.max(1));
    }

    /// Requests answered without error, all operations.
    pub fn completed(&self) -> u64 {
        self.ops.iter().map(OpStats::count).sum()
    }

    pub fn merge(&mut self, o: &IntervalStats) {
        for (a, b) in self.ops.iter_mut().zip(o.ops.iter()) {
            a.merge(b);
        }
        self.errors.merge(&o.errors);
        merge_histogram(&mut self.send_lag_ns, &o.send_lag_ns);
    }

    /// Both operations' latencies in one histogram.
    pub fn combined_latency(&self) -> Histogram<u64> {
        let mut all = self.ops[0].clone();
        all.merge(&self.ops[1]);
        all.latency_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        use ResponseClass::*;
        assert_eq!(outcome(OpKind::Read, Ok), Outcome::Hit);
        assert_eq!(outcome(OpKind::Read, NotFound), Outcome::Miss);
        assert_eq!(outcome(OpKind::Write, Ok), Outcome::Stored);
        assert_eq!(outcome(OpKind::Write, NotFound), Outcome::Http4xx);
        assert_eq!(outcome(OpKind::Read, ClientError(400)), Outcome::Http4xx);
        assert_eq!(outcome(OpKind::Write, ServerError(503)), Outcome::Http5xx);
        assert_eq!(outcome(OpKind::Read, Other(302)), Outcome::HttpOther);
        assert_eq!(outcome(OpKind::Read, GrpcStatus(14)), Outcome::Grpc(14));
        assert_eq!(outcome(OpKind::Write, StreamReset(7)), Outcome::StreamReset);
    }

    #[test]
    fn grpc_errors_by_code() {
        let mut s = IntervalStats::default();
        s.record(OpKind::Read, ResponseClass::GrpcStatus(14), 1);
        s.record(OpKind::Write, ResponseClass::GrpcStatus(14), 1);
        s.record(OpKind::Write, ResponseClass::GrpcStatus(3), 1);
        s.record(OpKind::Read, ResponseClass::StreamReset(7), 1);
        assert_eq!(s.completed(), 0);
        let mut t = IntervalStats::default();
        t.merge(&s);
        t.merge(&s);
        assert_eq!(
            (t.errors.grpc, t.errors.stream_reset, t.errors.total()),
            (6, 2, 8)
        );
        assert_eq!(
            t.errors.nonzero(),
            vec![
                ("grpc_invalid_argument", 2),
                ("grpc_unavailable", 4),
                ("stream_reset", 2)
            ]
        );
        let v = serde_json::to_value(t.errors).unwrap();
        assert_eq!(v["grpc"], 6);
        assert_eq!(
            v["grpc_codes"],
            serde_json::json!({"grpc_invalid_argument": 2, "grpc_unavailable": 4})
        );
    }

    #[test]
    fn record_counts_hits_misses_and_errors() {
        let mut s = IntervalStats::default();
        s.record(OpKind::Read, ResponseClass::Ok, 1000);
        s.record(OpKind::Read, ResponseClass::NotFound, 2000);
        s.record(OpKind::Write, ResponseClass::Ok, 3000);
        s.record(OpKind::Write, ResponseClass::ServerError(500), 4000);
        s.record(OpKind::Read, ResponseClass::ClientError(400), 4000);
        let r = s.op(OpKind::Read);
        assert_eq!((r.hits, r.misses, r.latency_ns.len()), (1, 1, 2));
        assert_eq!(s.op(OpKind::Write).stored, 1);
        assert_eq!(s.op(OpKind::Write).latency_ns.len(), 1);
        assert_eq!(s.completed(), 3);
        assert_eq!(
            (s.errors.http_5xx, s.errors.http_4xx, s.errors.total()),
            (1, 1, 2)
        );
    }

    #[test]
    fn merge_combines_histograms_and_counters() {
        let mut a = IntervalStats::default();
        let mut b = IntervalStats::default();
        for v in 1..=1000u64 {
            a.record(OpKind::Read, ResponseClass::Ok, v * 1000);
            b.record(OpKind::Read, ResponseClass::Ok, (v + 1000) * 1000);
        }
        b.record(OpKind::Write, ResponseClass::Ok, 5);
        b.errors.timeout = 2;
        b.send_lag_ns.saturating_record(7);
        a.errors.io = 1;
        a.merge(&b);
        let r = a.op(OpKind::Read);
        assert_eq!(r.latency_ns.len(), 2000);
        assert_eq!(r.hits, 2000);
        // The median of 1..=2000 us is ~1000 us; max ~2000 us (within 0.1%).
        let p50 = r.latency_ns.value_at_quantile(0.5) as f64;
        assert!((p50 - 1_000_000.0).abs() / 1e6 < 0.002, "{p50}");
        let max = r.latency_ns.max() as f64;
        assert!((max - 2_000_000.0).abs() / 2e6 < 0.002, "{max}");
        assert_eq!(a.op(OpKind::Write).stored, 1);
        assert_eq!(a.errors.total(), 3);
        assert_eq!(a.errors.nonzero(), vec![("timeout", 2), ("io", 1)]);
        assert_eq!(a.combined_latency().len(), 2001);
        assert_eq!(a.send_lag_ns.len(), 1);
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let mut s = IntervalStats::default();
        s.record(OpKind::Read, ResponseClass::Ok, u64::MAX);
        s.record(OpKind::Read, ResponseClass::Ok, 0);
        assert_eq!(s.op(OpKind::Read).latency_ns.len(), 2);
    }
}
