//! Presenting results: per-second progress lines, the final table, the
//! `--json` document and the `--hdr-log` interval log.
//!
//! Latencies are stored in nanoseconds and shown in microseconds (JSON:
//! `*_us` fields) or with an explicit unit (text: `us`, `ms`, `s`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::Config;
use crate::engine::{Observer, PrefillReport, RunOutcome};
use crate::schedule::IntervalSpan;
use crate::stats::{ErrorCounts, IntervalStats, OpStats};
use crate::workload::OpKind;

/// Failures while writing result files.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot serialize JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write histogram to {path}: {reason}")]
    Hdr { path: PathBuf, reason: String },
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Percentiles> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Percentiles {
            min: us(h.min()),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p95: us(h.value_at_quantile(0.95)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        })
    }
}

/// Results of one operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpSummary {
    /// Answered without error (reads: hits + misses).
    pub count: u64,
    pub throughput_rps: f64,
    /// Reads only: 200 answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hits: Option<u64>,
    /// Reads only: 404 answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub misses: Option<u64>,
    /// Reads only: hits / (hits + misses); null if there were no reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hit_rate: Option<f64>,
    /// Null if nothing was answered.
    pub latency_us: Option<Percentiles>,
}

impl OpSummary {
    fn new(kind: OpKind, op: &OpStats, secs: f64) -> OpSummary {
        let count = op.count();
        let is_read = kind == OpKind::Read;
        OpSummary {
            count,
            throughput_rps: rate(count, secs),
            hits: is_read.then_some(op.hits),
            misses: is_read.then_some(op.misses),
            hit_rate: if is_read && op.hits + op.misses > 0 {
                Some(op.hits as f64 / (op.hits + op.misses) as f64)
            } else {
                None
            },
            latency_us: Percentiles::from_histogram(&op.latency_ns),
        }
    }
}

fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Errors with their total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ErrorSummary {
    #[serde(flatten)]
    pub by_kind: ErrorCounts,
    pub total: u64,
}

/// One progress interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntervalSummary {
    /// End of the interval, seconds from the start of the measurement
    /// (warmup intervals are <= 0).
    pub t_s: f64,
    pub warmup: bool,
    pub requests: u64,
    pub rps: f64,
    pub errors: u64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
}

/// The flags that shaped the run, echoed into the JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigEcho {
    pub targets: Vec<String>,
    pub protocol: &'static str,
    pub mode: crate::http::ApiMode,
    pub threads: usize,
    pub connections: usize,
    pub concurrency: usize,
    pub pipeline: usize,
    pub keys: u64,
    pub key_prefix: String,
    /// `--key-file`, if keys came from one (then `key_prefix` is unused).
    pub key_file: Option<String>,
    pub key_distribution: String,
    pub read_ratio: f64,
    pub value_size: usize,
    pub prefill: bool,
    /// Writes in flight per connection during the prefill.
    pub prefill_window: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub timeout_s: f64,
    /// Open loop target in requests/s; null for closed loop.
    pub rate: Option<f64>,
    pub seed: u64,
}

impl ConfigEcho {
    pub fn new(cfg: &Config) -> ConfigEcho {
        ConfigEcho {
            targets: cfg.targets.iter().map(|t| t.name.clone()).collect(),
            protocol: cfg.protocol.name(),
            mode: cfg.mode,
            threads: cfg.threads,
            connections: cfg.connections,
            concurrency: cfg.concurrency,
            pipeline: cfg.pipeline,
            keys: cfg.keys,
            key_prefix: cfg.key_prefix.clone(),
            key_file: cfg.key_file.as_ref().map(|p| p.display().to_string()),
            key_distribution: cfg.distribution.to_string(),
            read_ratio: cfg.read_ratio,
            value_size: cfg.value_size,
            prefill: cfg.prefill,
            prefill_window: cfg.prefill_window,
            warmup_s: cfg.warmup.as_secs_f64(),
            duration_s: cfg.duration.as_secs_f64(),
            timeout_s: cfg.timeout.as_secs_f64(),
            rate: cfg.rate,
            seed: cfg.seed,
        }
    }
}

/// Prefill results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrefillSummary {
    pub keys: u64,
    pub stored: u64,
    pub elapsed_s: f64,
    pub throughput_rps: f64,
    pub errors: ErrorSummary,
}

/// The whole result document (`--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub config: ConfigEcho,
    /// "closed" or "open".
    pub load_model: &'static str,
    pub duration_s: f64,
    pub requests: u64,
    pub throughput_rps: f64,
    /// "read" and "write".
    pub operations: BTreeMap<&'static str, OpSummary>,
    pub errors: ErrorSummary,
    /// Open loop only: delay from intended to actual send time. Its tail
    /// should be far below the latency tail; if not, the generator's CPU or
    /// too few connections (all busy) are part of what was measured.
    pub send_lag_us: Option<Percentiles>,
    pub in_flight_at_end: u64,
    pub backlog_at_end: u64,
    pub prefill: Option<PrefillSummary>,
    pub intervals: Vec<IntervalSummary>,
}

impl Report {
    pub fn new(cfg: &Config, outcome: &RunOutcome, intervals: Vec<IntervalSummary>) -> Report {
        let secs = outcome.measured_duration.as_secs_f64();
        let m = &outcome.measured;
        let requests = m.completed();
        Report {
            tool: "nexuscache-bench",
            version: env!("CARGO_PKG_VERSION"),
            config: ConfigEcho::new(cfg),
            load_model: if cfg.rate.is_some() { "open" } else { "closed" },
            duration_s: secs,
            requests,
            throughput_rps: rate(requests, secs),
            operations: OpKind::ALL
                .iter()
                .map(|&k| (k.name(), OpSummary::new(k, m.op(k), secs)))
                .collect(),
            errors: ErrorSummary {
                by_kind: m.errors,
                total: m.errors.total(),
            },
            send_lag_us: if cfg.rate.is_some() {
                Percentiles::from_histogram(&m.send_lag_ns)
            } else {
                None
            },
            in_flight_at_end: outcome.in_flight_at_end,
            backlog_at_end: outcome.backlog_at_end,
            prefill: outcome.prefill.as_ref().map(prefill_summary),
            intervals,
        }
    }

    pub fn write_json(&self, path: &Path) -> Result<(), ReportError> {
        let io_err = |source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut out = BufWriter::new(File::create(path).map_err(io_err)?);
        serde_json::to_writer_pretty(&mut out, self)?;
        out.write_all(b"\n").map_err(io_err)?;
        out.flush().map_err(io_err)
    }

    /// The human-readable summary.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        use std::fmt::Write as _;
        let _ = writeln!(
            w,
            "\nResults over {:.2} s ({} loop{}):",
            self.duration_s,
            self.load_model,
            self.config
                .rate
                .map(|r| format!(", target {r} req/s"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            w,
            "  {:<6} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  hit rate",
            "op", "count", "req/s", "p50", "p90", "p95", "p99", "p99.9", "max"
        );
        for (name, op) in &self.operations {
            let lat = |f: fn(&Percentiles) -> f64| {
                op.latency_us
                    .as_ref()
                    .map_or("-".to_string(), |p| fmt_us(f(p)))
            };
            let hit = match (op.hit_rate, op.hits, op.misses) {
                (Some(r), Some(h), Some(m)) => format!("{:.2}% ({h} hits, {m} misses)", r * 100.0),
                (None, Some(_), _) => "-".to_string(),
                _ => String::new(),
            };
            let _ = writeln!(
                w,
                "  {:<6} {:>10} {:>11.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {hit}",
                name,
                op.count,
                op.throughput_rps,
                lat(|p| p.p50),
                lat(|p| p.p90),
                lat(|p| p.p95),
                lat(|p| p.p99),
                lat(|p| p.p99_9),
                lat(|p| p.max),
            );
        }
        let _ = writeln!(
            w,
            "  {:<6} {:>10} {:>11.1}",
            "total", self.requests, self.throughput_rps
        );
        let _ = writeln!(w, "  errors: {}", fmt_errors(&self.errors.by_kind));
        if let Some(lag) = &self.send_lag_us {
            let _ = writeln!(
                w,
                "  send lag (intended -> sent): p50 {} p99 {} p99.9 {} max {}",
                fmt_us(lag.p50),
                fmt_us(lag.p99),
                fmt_us(lag.p99_9),
                fmt_us(lag.max)
            );
        }
        if self.in_flight_at_end > 0 || self.backlog_at_end > 0 {
            let _ = writeln!(
                w,
                "  unfinished at end (not counted): {} in flight{}",
                self.in_flight_at_end,
                if self.load_model == "open" {
                    format!(
                        ", {} due but never sent (server slower than --rate)",
                        self.backlog_at_end
                    )
                } else {
                    String::new()
                }
            );
        }
        s
    }
}

fn prefill_summary(p: &PrefillReport) -> PrefillSummary {
    let stored = p.stats.op(OpKind::Write).stored;
    let secs = p.elapsed.as_secs_f64();
    PrefillSummary {
        keys: p.keys,
        stored,
        elapsed_s: secs,
        throughput_rps: rate(stored, secs),
        errors: ErrorSummary {
            by_kind: p.stats.errors,
            total: p.stats.errors.total(),
        },
    }
}

/// `412.3us`, `12.35ms`, `1.234s`.
pub fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.1}us")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.3}s", us / 1_000_000.0)
    }
}

/// `0` or `3 (timeout 2, io 1)`.
pub fn fmt_errors(e: &ErrorCounts) -> String {
    let nonzero = e.nonzero();
    if nonzero.is_empty() {
        return "0".to_string();
    }
    let parts: Vec<String> = nonzero.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!("{} ({})", e.total(), parts.join(", "))
}

/// Writes one histogram per operation and interval to an HdrHistogram
/// interval log (compressed V2 encoding, tags `read`/`write`, values in
/// nanoseconds). Readable by HdrHistogram's `HistogramLogProcessor` and the
/// `hdrhistogram` crate's `IntervalLogIterator`.
pub struct HdrLog {
    path: PathBuf,
    out: BufWriter<File>,
    serializer: V2DeflateSerializer,
    header_written: bool,
}

impl HdrLog {
    pub fn create(path: &Path) -> Result<HdrLog, ReportError> {
        let file = File::create(path).map_err(|source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(HdrLog {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            serializer: V2DeflateSerializer::new(),
            header_written: false,
        })
    }

    fn hdr_err(&self, reason: impl ToString) -> ReportError {
        ReportError::Hdr {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// `offset` is the interval's start relative to the measurement start.
    pub fn write_interval(
        &mut self,
        offset: Duration,
        length: Duration,
        stats: &IntervalStats,
    ) -> Result<(), ReportError> {
        if !self.header_written {
            let start = SystemTime::now()
                .checked_sub(offset + length)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let header = IntervalLogWriterBuilder::new()
                .add_comment("nexuscache-bench latency log: values in nanoseconds, one histogram per second per operation (Tag=read / Tag=write)")
                .with_start_time(start)
                .begin_log_with(&mut self.out, &mut self.serializer)
                .map(drop);
            header.map_err(|e| self.hdr_err(e))?;
            self.out
                .write_all(b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n")
                .map_err(|e| self.hdr_err(e))?;
            self.header_written = true;
        }
        for kind in OpKind::ALL {
            let tag = Tag::new(kind.name());
            let result = IntervalLogWriterBuilder::new()
                .begin_log_with(&mut self.out, &mut self.serializer)
                .map_err(|e| e.to_string())
                .and_then(|mut w| {
                    w.write_histogram(&stats.op(kind).latency_ns, offset, length, tag)
                        .map_err(|e| e.to_string())
                });
            result.map_err(|e| self.hdr_err(e))?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<(), ReportError> {
        self.out.flush().map_err(|e| self.hdr_err(e))
    }
}

/// Prints progress lines, keeps interval summaries, feeds the hdr log.
pub struct Progress {
    quiet: bool,
    open_loop: bool,
    pub intervals: Vec<IntervalSummary>,
    pub hdr_log: Option<HdrLog>,
    pub hdr_error: Option<ReportError>,
}

impl Progress {
    pub fn new(quiet: bool, open_loop: bool, hdr_log: Option<HdrLog>) -> Progress {
        Progress {
            quiet,
            open_loop,
            intervals: Vec::new(),
            hdr_log,
            hdr_error: None,
        }
    }
}

impl Observer for Progress {
    fn prefill_done(&mut self, report: &PrefillReport) {
        let p = prefill_summary(report);
        eprintln!(
            "prefill: {} of {} keys stored in {:.2} s ({:.0} writes/s), errors {}",
            p.stored,
            p.keys,
            p.elapsed_s,
            p.throughput_rps,
            fmt_errors(&report.stats.errors)
        );
    }

    fn interval(&mut self, span: &IntervalSpan, offset_ns: i64, stats: &IntervalStats) {
        let length_ns = span.end_ns - span.start_ns;
        let secs = length_ns as f64 / 1e9;
        let requests = stats.completed();
        let latency = stats.combined_latency();
        let pct = Percentiles::from_histogram(&latency);
        let summary = IntervalSummary {
            t_s: (offset_ns + length_ns as i64) as f64 / 1e9,
            warmup: span.warmup,
            requests,
            rps: rate(requests, secs),
            errors: stats.errors.total(),
            p50_us: pct.map(|p| p.p50),
            p99_us: pct.map(|p| p.p99),
        };
        if !self.quiet {
            let reads = stats.op(OpKind::Read);
            let hit = if reads.hits + reads.misses > 0 {
                format!(
                    "{:.1}%",
                    100.0 * reads.hits as f64 / (reads.hits + reads.misses) as f64
                )
            } else {
                "-".to_string()
            };
            let lag = if self.open_loop {
                let p99 = stats.send_lag_ns.value_at_quantile(0.99) as f64 / 1000.0;
                format!("  lag p99 {}", fmt_us(p99))
            } else {
                String::new()
            };
            eprintln!(
                "[{}{:>6.1}s] {:>9.0} req/s  read {:>9.0}/s hit {:>6}  write {:>9.0}/s  p50 {:>8} p99 {:>8}{lag}  errors {}",
                if span.warmup { "warmup " } else { "" },
                summary.t_s,
                summary.rps,
                rate(reads.count(), secs),
                hit,
                rate(stats.op(OpKind::Write).count(), secs),
                summary.p50_us.map_or("-".to_string(), fmt_us),
                summary.p99_us.map_or("-".to_string(), fmt_us),
                fmt_errors(&stats.errors),
            );
        }
        if !span.warmup && self.hdr_error.is_none() {
            if let Some(log) = self.hdr_log.as_mut() {
                let offset = Duration::from_nanos(offset_ns.max(0) as u64);
                if let Err(e) = log.write_interval(offset, Duration::from_nanos(length_ns), stats) {
                    self.hdr_error = Some(e);
                }
            }
        }
        self.intervals.push(summary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Args, Config};
    use crate::transport::ResponseClass;
    use clap::Parser;

    fn sample_outcome() -> RunOutcome {
        let mut m = IntervalStats::default();
        for i in 1..=900u64 {
            m.record(OpKind::Read, ResponseClass::Ok, i * 1000);
        }
        for _ in 0..100 {
            m.record(OpKind::Read, ResponseClass::NotFound, 50_000);
        }
        for _ in 0..250 {
            m.record(OpKind::Write, ResponseClass::Ok, 80_000);
        }
        m.errors.timeout = 3;
        m.record(OpKind::Write, ResponseClass::ServerError(503), 1);
        RunOutcome {
            prefill: None,
            measured: m,
            measured_duration: Duration::from_secs(2),
            in_flight_at_end: 5,
            backlog_at_end: 0,
        }
    }

    fn config() -> Config {
        Config::from_args(
            Args::try_parse_from(["x", "--seed", "1", "--targets", "127.0.0.1:1"]).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn json_shape() {
        let report = Report::new(&config(), &sample_outcome(), vec![]);
        let v: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(v["tool"], "nexuscache-bench");
        assert_eq!(v["load_model"], "closed");
        assert_eq!(v["requests"], 1250);
        assert_eq!(v["throughput_rps"], 625.0);
        let read = &v["operations"]["read"];
        assert_eq!(read["count"], 1000);
        assert_eq!(read["hits"], 900);
        assert_eq!(read["misses"], 100);
        assert_eq!(read["hit_rate"], 0.9);
        for p in ["min", "mean", "p50", "p90", "p95", "p99", "p99_9", "max"] {
            assert!(read["latency_us"][p].is_number(), "{p}");
        }
        let write = &v["operations"]["write"];
        assert_eq!(write["count"], 250);
        assert!(write.get("hit_rate").is_none());
        assert!((write["latency_us"]["p50"].as_f64().unwrap() - 80.0).abs() < 0.1);
        assert_eq!(v["errors"]["timeout"], 3);
        assert_eq!(v["errors"]["http_5xx"], 1);
        assert_eq!(v["errors"]["total"], 4);
        for k in [
            "connect",
            "io",
            "parse",
            "http_4xx",
            "http_other",
            "grpc",
            "stream_reset",
        ] {
            assert_eq!(v["errors"][k], 0, "{k}");
        }
        assert_eq!(v["errors"]["grpc_codes"], serde_json::json!({}));
        assert_eq!(v["config"]["protocol"], "http");
        assert!(v["config"]["key_file"].is_null());
        assert_eq!(v["config"]["seed"], 1);
        assert_eq!(v["config"]["key_distribution"], "uniform");
        assert_eq!(v["in_flight_at_end"], 5);
        assert!(v["prefill"].is_null());
        assert!(v["send_lag_us"].is_null());
        assert!(v["intervals"].is_array());
    }

    #[test]
    fn empty_operations_have_null_latency() {
        let outcome = RunOutcome {
            measured: IntervalStats::default(),
            ..sample_outcome()
        };
        let v = serde_json::to_value(Report::new(&config(), &outcome, vec![])).unwrap();
        assert!(v["operations"]["write"]["latency_us"].is_null());
        assert!(v["operations"]["read"].get("hit_rate").is_none());
        assert_eq!(v["throughput_rps"], 0.0);
    }

    #[test]
    fn text_mentions_units_and_hit_rate() {
        let text = Report::new(&config(), &sample_outcome(), vec![]).to_text();
        assert!(text.contains("90.00% (900 hits, 100 misses)"), "{text}");
        assert!(text.contains("us"));
        assert!(text.contains("errors: 4 (timeout 3, http_5xx 1)"), "{text}");
    }

    #[test]
    fn formats_latencies() {
        assert_eq!(fmt_us(41.25), "41.2us");
        assert_eq!(fmt_us(1234.0), "1.23ms");
        assert_eq!(fmt_us(2_500_000.0), "2.500s");
    }

    #[test]
    fn hdr_log_round_trips() {
        let dir = std::env::temp_dir().join(format!("ncb-hdr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.hlog");
        let mut log = HdrLog::create(&path).unwrap();
        let outcome = sample_outcome();
        log.write_interval(Duration::ZERO, Duration::from_secs(1), &outcome.measured)
            .unwrap();
        log.write_interval(
            Duration::from_secs(1),
            Duration::from_secs(1),
            &outcome.measured,
        )
        .unwrap();
        log.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut tags = Vec::new();
        let mut deserializer = hdrhistogram::serialization::Deserializer::new();
        for item in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&bytes) {
            if let hdrhistogram::serialization::interval_log::LogEntry::Interval(h) = item.unwrap()
            {
                tags.push(h.tag().unwrap().as_str().to_string());
                let raw = base64_decode(h.encoded_histogram());
                let hist: Histogram<u64> = deserializer.deserialize(&mut raw.as_slice()).unwrap();
                let expected = if tags.last().unwrap() == "read" {
                    1000
                } else {
                    250
                };
                assert_eq!(hist.len(), expected);
            }
        }
        assert_eq!(tags, vec!["read", "write", "read", "write"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Minimal standard base64 decoder for the round-trip test.
    fn base64_decode(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64"),
        };
        let clean: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
        let mut out = Vec::new();
        for chunk in clean.chunks(4) {
            let mut n = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                n |= u32::from(val(c)) << (18 - 6 * i);
            }
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..chunk.len() - 1]);
        }
        out
    }
}
