//! /metrics: every documented family with its labels and type, counters
//! and gauges that move with traffic, and `promtool check metrics` clean.
//!
//! Each test starts its own node so counter deltas are exact.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// (family, TYPE, labels every sample must carry besides the histogram `le`)
const FAMILIES: &[(&str, &str, &[&str])] = &[
    (
        "nexuscache_requests_total",
        "counter",
        &["op", "status", "core", "protocol"],
    ),
    (
        "nexuscache_request_duration_seconds",
        "histogram",
        &["op", "core", "protocol"],
    ),
    ("nexuscache_cache_size_bytes", "gauge", &["core"]),
    ("nexuscache_cache_capacity_bytes", "gauge", &["core"]),
    ("nexuscache_cache_items", "gauge", &["core"]),
    ("nexuscache_cache_hits_total", "counter", &["core"]),
    ("nexuscache_cache_misses_total", "counter", &["core"]),
    ("nexuscache_evictions_total", "counter", &["core"]),
    ("nexuscache_expired_total", "counter", &["core"]),
    ("nexuscache_cross_core_requests_total", "counter", &["core"]),
    (
        "nexuscache_forwarded_ops_received_total",
        "counter",
        &["core", "landed"],
    ),
    (
        "nexuscache_peer_connection_announcements_total",
        "counter",
        &["core", "result"],
    ),
    ("nexuscache_connections_active", "gauge", &["core"]),
    ("nexuscache_connections_total", "counter", &["core"]),
    ("nexuscache_build_info", "gauge", &["version"]),
];

/// Drives one request of every op so every labelled series exists.
fn exercise(n: &Node) {
    let mut c = n.conn();
    let k = uniq("m");
    assert_eq!(
        c.request("PUT", &format!("/v1/keys/{k}"), &[], b"v").status,
        200
    );
    assert_eq!(
        c.request(
            "POST",
            "/api/set",
            &[FORM],
            format!("key={k}-s&value=v").as_bytes()
        )
        .status,
        200
    );
    assert_eq!(c.get(&format!("/v1/keys/{k}")).status, 200);
    assert_eq!(c.get(&format!("/api/get?key={k}-s")).status, 200);
    assert_eq!(c.get(&format!("/v1/keys/{k}-miss")).status, 404);
    assert_eq!(
        c.request("DELETE", &format!("/v1/keys/{k}"), &[], b"")
            .status,
        200
    );
    assert_eq!(
        c.request(
            "POST",
            "/api/delete",
            &[FORM],
            format!("key={k}-s").as_bytes()
        )
        .status,
        200
    );
    assert_eq!(c.get("/healthz").status, 200);
    assert_eq!(c.get("/readyz").status, 200);
    assert_eq!(c.get("/metrics").status, 200);
    assert_eq!(c.get("/no-such-route").status, 404);
}

#[test]
fn every_family_with_labels_and_types() {
    let n = Node::start(&[]);
    let _g = n.log_on_panic();
    exercise(&n);
    let m = n.metrics();
    for (fam, ty, labels) in FAMILIES {
        assert_eq!(
            m.types.get(*fam).map(String::as_str),
            Some(*ty),
            "# TYPE of {fam} (all TYPE lines: {:?})",
            m.types
        );
        assert!(
            m.helps
                .get(*fam)
                .map(|h| !h.trim().is_empty())
                .unwrap_or(false),
            "{fam} lacks # HELP"
        );
        let samples: Vec<&Sample> = m
            .samples
            .iter()
            .filter(|s| {
                s.name == *fam
                    || (*ty == "histogram"
                        && [
                            format!("{fam}_bucket"),
                            format!("{fam}_sum"),
                            format!("{fam}_count"),
                        ]
                        .contains(&s.name))
            })
            .collect();
        assert!(!samples.is_empty(), "no samples for {fam}");
        for s in &samples {
            for l in *labels {
                assert!(
                    s.labels.contains_key(*l),
                    "{fam}: sample {s:?} lacks label {l}"
                );
            }
            let mut extra: Vec<&String> = s
                .labels
                .keys()
                .filter(|k| {
                    let documented = labels.contains(&k.as_str());
                    let bucket_le = s.name.ends_with("_bucket") && *k == "le";
                    !documented && !bucket_le
                })
                .collect();
            extra.sort();
            assert!(
                extra.is_empty(),
                "{fam}: sample {s:?} has undocumented labels {extra:?}"
            );
        }
        if *fam != "nexuscache_build_info" {
            for core in ["0", "1"] {
                // Per-core families exist for every core (requests_total and
                // the histogram only once a request ran there).
                if matches!(
                    *fam,
                    "nexuscache_requests_total" | "nexuscache_request_duration_seconds"
                ) {
                    continue;
                }
                assert!(
                    samples.iter().any(|s| s
                        .labels
                        .get("core")
                        .map(|c| c == core)
                        .unwrap_or(false)),
                    "{fam} has no series for core=\"{core}\""
                );
            }
            for s in &samples {
                let core = &s.labels["core"];
                assert!(
                    core == "0" || core == "1",
                    "{fam}: core label {core:?} with --cores 2"
                );
            }
        }
    }
    // build_info{version} == 1, version is the crate version.
    let bi = m.find("nexuscache_build_info", &[]);
    assert_eq!(bi.len(), 1, "{bi:?}");
    assert_eq!(
        bi[0].labels.get("version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(bi[0].value, 1.0);

    // ops and statuses use the documented vocabulary.
    let ops = [
        "get", "set", "delete", "health", "ready", "metrics", "other",
    ];
    for s in m.find("nexuscache_requests_total", &[]) {
        let protocol = &s.labels["protocol"];
        assert!(
            ["http", "grpc", "resp"].contains(&protocol.as_str()),
            "unknown protocol label {protocol:?}"
        );
        let op = &s.labels["op"];
        assert!(ops.contains(&op.as_str()), "unknown op label {op:?}");
        let st = &s.labels["status"];
        assert!(
            st.len() == 3 && st.parse::<u16>().is_ok(),
            "status label {st:?} is not an HTTP code"
        );
    }
    for op in [
        "get", "set", "delete", "health", "ready", "metrics", "other",
    ] {
        assert!(
            !m.find("nexuscache_requests_total", &[("op", op)])
                .is_empty(),
            "no requests_total series for op={op} after exercising it"
        );
    }
    // Capacity: default 256 MiB, of which the hot tier takes 1/8, split
    // evenly over 2 cores.
    for core in ["0", "1"] {
        assert_eq!(
            m.sum("nexuscache_cache_capacity_bytes", &[("core", core)]),
            117_440_512.0
        );
        assert_eq!(
            m.sum("nexuscache_hot_capacity_bytes", &[("core", core)]),
            16_777_216.0
        );
    }
}

#[test]
fn histogram_buckets_resolve_microseconds() {
    let n = Node::start(&[]);
    let _g = n.log_on_panic();
    exercise(&n);
    let m = n.metrics();
    let buckets = m.find(
        "nexuscache_request_duration_seconds_bucket",
        &[("op", "get")],
    );
    assert!(!buckets.is_empty(), "no get histogram buckets");
    let mut les: Vec<f64> = buckets
        .iter()
        .filter(|s| s.labels["core"] == buckets[0].labels["core"])
        .map(|s| s.labels["le"].parse::<f64>().unwrap_or(f64::INFINITY))
        .collect();
    les.sort_by(|a, b| a.partial_cmp(b).unwrap());
    les.dedup();
    assert!(
        (les[0] - 5e-6).abs() < 1e-12,
        "smallest bucket should be 5e-6 s, is {}",
        les[0]
    );
    assert!(les.last().unwrap().is_infinite(), "+Inf bucket missing");
    assert!(les.len() >= 8, "too few buckets: {les:?}");
    // count equals the +Inf bucket, and GET requests were counted.
    let count = m.sum(
        "nexuscache_request_duration_seconds_count",
        &[("op", "get")],
    );
    let inf: f64 = m
        .find(
            "nexuscache_request_duration_seconds_bucket",
            &[("op", "get"), ("le", "+Inf")],
        )
        .iter()
        .map(|s| s.value)
        .sum();
    assert!(count >= 3.0, "get histogram count {count}");
    assert_eq!(count, inf);
}

#[test]
fn counters_move_exactly() {
    let n = Node::start(&[]);
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("cnt");
    assert_eq!(
        c.request("PUT", &format!("/v1/keys/{k}"), &[], b"12345")
            .status,
        200
    );

    let m0 = n.metrics();
    let get200 = |m: &Metrics| {
        m.sum(
            "nexuscache_requests_total",
            &[("op", "get"), ("status", "200")],
        )
    };
    let get404 = |m: &Metrics| {
        m.sum(
            "nexuscache_requests_total",
            &[("op", "get"), ("status", "404")],
        )
    };
    let hits = |m: &Metrics| m.sum("nexuscache_cache_hits_total", &[]);
    let misses = |m: &Metrics| m.sum("nexuscache_cache_misses_total", &[]);
    let set200 = |m: &Metrics| {
        m.sum(
            "nexuscache_requests_total",
            &[("op", "set"), ("status", "200")],
        )
    };
    let del200 = |m: &Metrics| {
        m.sum(
            "nexuscache_requests_total",
            &[("op", "delete"), ("status", "200")],
        )
    };
    let health = |m: &Metrics| {
        m.sum(
            "nexuscache_requests_total",
            &[("op", "health"), ("status", "200")],
        )
    };

    // GET hit.
    assert_eq!(c.get(&format!("/v1/keys/{k}")).status, 200);
    let m1 = n.metrics();
    assert_eq!(
        get200(&m1),
        get200(&m0) + 1.0,
        "requests_total{{op=get,status=200}} after a hit"
    );
    assert_eq!(hits(&m1), hits(&m0) + 1.0, "cache_hits_total after a hit");
    assert_eq!(misses(&m1), misses(&m0), "cache_misses_total after a hit");

    // GET miss (seed API).
    assert_eq!(c.get(&format!("/api/get?key={k}-nope")).status, 404);
    let m2 = n.metrics();
    assert_eq!(
        get404(&m2),
        get404(&m1) + 1.0,
        "requests_total{{op=get,status=404}} after a miss"
    );
    assert_eq!(
        misses(&m2),
        misses(&m1) + 1.0,
        "cache_misses_total after a miss"
    );
    assert_eq!(hits(&m2), hits(&m1));

    // set, delete, health.
    assert_eq!(
        c.request(
            "POST",
            "/api/set",
            &[FORM],
            format!("key={k}-2&value=x").as_bytes()
        )
        .status,
        200
    );
    assert_eq!(
        c.request("PUT", &format!("/v1/keys/{k}-3"), &[], b"y")
            .status,
        200
    );
    assert_eq!(
        c.request("DELETE", &format!("/v1/keys/{k}-3"), &[], b"")
            .status,
        200
    );
    assert_eq!(c.get("/healthz").status, 200);
    let m3 = n.metrics();
    assert_eq!(
        set200(&m3),
        set200(&m2) + 2.0,
        "set counts POST /api/set and PUT"
    );
    assert_eq!(del200(&m3), del200(&m2) + 1.0);
    assert_eq!(health(&m3), health(&m2) + 1.0);
    // A 400 is counted with its status.
    assert_eq!(c.get("/api/get").status, 400);
    let m4 = n.metrics();
    assert_eq!(
        m4.sum(
            "nexuscache_requests_total",
            &[("op", "get"), ("status", "400")]
        ),
        m3.sum(
            "nexuscache_requests_total",
            &[("op", "get"), ("status", "400")]
        ) + 1.0
    );
    // Scrapes are counted as op=metrics.
    assert!(
        m4.sum(
            "nexuscache_requests_total",
            &[("op", "metrics"), ("status", "200")]
        ) >= 4.0
    );
}

#[test]
fn items_and_size_gauges_track_contents() {
    let n = Node::start(&[]);
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = uniq("g");
    let m0 = n.metrics();
    assert_eq!(m0.sum("nexuscache_cache_items", &[]), 0.0);
    assert_eq!(m0.sum("nexuscache_cache_size_bytes", &[]), 0.0);
    for i in 0..10 {
        assert_eq!(
            c.request("PUT", &format!("/v1/keys/{k}-{i}"), &[], &[b'x'; 500])
                .status,
            200
        );
    }
    let m1 = n.metrics();
    assert_eq!(m1.sum("nexuscache_cache_items", &[]), 10.0);
    let size = m1.sum("nexuscache_cache_size_bytes", &[]);
    assert!(
        size >= 10.0 * (500.0 + (k.len() + 2) as f64),
        "size {size} below key+value bytes"
    );
    // Overwrite with a smaller value: size shrinks, items unchanged.
    assert_eq!(
        c.request("PUT", &format!("/v1/keys/{k}-0"), &[], b"x")
            .status,
        200
    );
    let m2 = n.metrics();
    assert_eq!(m2.sum("nexuscache_cache_items", &[]), 10.0);
    assert_eq!(
        m2.sum("nexuscache_cache_size_bytes", &[]),
        size - 499.0,
        "overwrite accounting"
    );
    for i in 0..10 {
        assert_eq!(
            c.request("DELETE", &format!("/v1/keys/{k}-{i}"), &[], b"")
                .status,
            200
        );
    }
    let m3 = n.metrics();
    assert_eq!(m3.sum("nexuscache_cache_items", &[]), 0.0);
    assert_eq!(
        m3.sum("nexuscache_cache_size_bytes", &[]),
        0.0,
        "size must return to 0 after deleting all"
    );
}

#[test]
fn connection_gauges() {
    let n = Node::start(&[]);
    let _g = n.log_on_panic();
    let total0 = n.metrics().sum("nexuscache_connections_total", &[]);
    let mut conns: Vec<Conn> = (0..5).map(|_| n.conn()).collect();
    for c in conns.iter_mut() {
        c.assert_usable("open"); // make sure each was accepted
    }
    // 5 idle + the scrape's own connection (earlier readiness-probe
    // connections may take a moment to be noticed as closed).
    let start = Instant::now();
    loop {
        let m = n.metrics();
        let active = m.sum("nexuscache_connections_active", &[]);
        if active == 6.0 {
            assert!(m.sum("nexuscache_connections_total", &[]) >= total0 + 6.0);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "connections_active is {active} with 5 open connections + 1 scrape (want 6)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(conns);
    let start = Instant::now();
    loop {
        let active = n.metrics().sum("nexuscache_connections_active", &[]);
        if active == 1.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "connections_active stays {active} after closing 5"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn keys_never_become_label_values() {
    let n = Node::start(&[]);
    let _g = n.log_on_panic();
    let mut c = n.conn();
    let k = "secret-key-label-probe-7f3a";
    assert_eq!(
        c.request("PUT", &format!("/v1/keys/{k}"), &[], b"v").status,
        200
    );
    assert_eq!(c.get(&format!("/v1/keys/{k}")).status, 200);
    assert_eq!(c.get("/some/unknown/path-label-probe-9c2b").status, 404);
    let text = n.metrics().text;
    assert!(!text.contains(k), "a key appears in /metrics");
    assert!(
        !text.contains("path-label-probe-9c2b"),
        "a request path appears in /metrics"
    );
}

#[test]
fn promtool_check_metrics_is_clean() {
    let n = Node::start(&[]);
    let _g = n.log_on_panic();
    exercise(&n);
    let text = n.get("/metrics").body;
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("promtool is not on PATH: run scripts/setup.sh (installs the Debian package `prometheus`)")
        }
        Err(e) => panic!("running promtool: {e}"),
    };
    child.stdin.take().unwrap().write_all(&text).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics: status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}
