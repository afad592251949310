//! A real Prometheus (Debian's `prometheus`, installed by scripts/setup.sh)
//! scrapes a real three-node cluster with the scrape job and rules of
//! `deploy/prometheus/prometheus.yml`, only the targets swapped for the
//! local nodes. Then, through Prometheus' HTTP API: every node is up, every
//! dashboard query parses and runs, the hit-rate and p99 panels (queries
//! taken from the dashboard JSON) return numbers, and the rules evaluate.

mod common;
mod deploy_common;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use deploy_common::*;
use serde_json::Value;

/// The rate window the dashboard's `$__rate_interval` becomes: several
/// 1-second scrapes.
const RATE_WINDOW: &str = "20s";
const DEADLINE: Duration = Duration::from_secs(60);

/// Kills Prometheus if the test process dies without running `Drop`.
const WATCHDOG: &str = "read _unused; kill -9 \"$1\" 2>/dev/null; exit 0";

struct Prometheus {
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Child,
    watchdog: Option<(Child, ChildStdin)>,
}

impl Prometheus {
    /// Writes the config built by `config(port)` and starts Prometheus on a
    /// free port (retrying if the port was taken meanwhile).
    fn start(config: &Value) -> Prometheus {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = temp_path("prometheus");
            std::fs::create_dir_all(dir.join("data")).expect("create prometheus dir");
            let config_path = dir.join("prometheus.yml");
            // JSON is YAML: Prometheus reads it as it is.
            std::fs::write(&config_path, serde_json::to_string_pretty(config).unwrap())
                .expect("write prometheus config");
            let port = free_port();
            let log = dir.join("prometheus.log");
            let out = File::create(&log).expect("prometheus log");
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--storage.tsdb.retention.time=1h")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run `prometheus` ({e}); install it with `apt-get install -y \
                         prometheus` (scripts/setup.sh does)"
                    )
                });
            let watchdog = Command::new("sh")
                .args([
                    "-c",
                    WATCHDOG,
                    "prometheus-watchdog",
                    &child.id().to_string(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()
                .map(|mut w| {
                    let stdin = w.stdin.take().unwrap();
                    (w, stdin)
                });
            let mut prom = Prometheus {
                port,
                dir,
                log,
                child,
                watchdog,
            };
            match prom.wait_ready() {
                Ok(()) => return prom,
                Err(log) if log.contains("address already in use") => last = log,
                Err(log) => panic!("prometheus did not become ready; log:\n{log}"),
            }
        }
        panic!("prometheus could not bind a port in 5 attempts; last log:\n{last}");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}\n{}", self.log_text()));
            }
            if let Ok(mut c) = Conn::try_connect(self.port) {
                c.send(&build_request("GET", "/-/ready", &[], b""));
                if matches!(c.try_read_response(), Ok(r) if r.status == 200) {
                    return Ok(());
                }
            }
            if start.elapsed() > DEADLINE {
                return Err(format!("not ready after {DEADLINE:?}\n{}", self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET an API path; the JSON body with `status: success`.
    fn api(&self, path_and_query: &str) -> Value {
        let r = Conn::connect(self.port).get(path_and_query);
        let body: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{path_and_query}: not JSON ({e}): {}", r.describe()));
        assert_eq!(
            body["status"], "success",
            "{path_and_query} answered {}: {body}",
            r.status
        );
        body["data"].clone()
    }

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", pct(promql.as_bytes())));
        assert_eq!(data["resultType"], "vector", "{promql}: {data}");
        data["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== prometheus log =====\n{}\n===== end of log =====",
                self.log_text()
            );
        }
        let _ = self.child.kill(); // by PID: the process we spawned
        let _ = self.child.wait();
        if let Some((mut w, stdin)) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
            drop(stdin);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `deploy/prometheus/prometheus.yml` with a 1 s scrape interval, only the
/// `nexuscache` job, its targets replaced by `targets`, and the rule files
/// made absolute.
fn local_config(targets: &[String]) -> Value {
    let mut config = prometheus_config();
    config["global"]["scrape_interval"] = "1s".into();
    config["global"]["evaluation_interval"] = "1s".into();
    let mut job = config["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["job_name"] == "nexuscache")
        .expect("job nexuscache")
        .clone();
    job["scrape_interval"] = "1s".into();
    job["static_configs"] = serde_json::json!([{ "targets": targets }]);
    config["scrape_configs"] = Value::Array(vec![job]);
    let rules_dir = deploy_dir().join("prometheus");
    if let Some(files) = config["rule_files"].as_array_mut() {
        for f in files {
            *f = rules_dir
                .join(f.as_str().unwrap())
                .display()
                .to_string()
                .into();
        }
    }
    config
}

/// The single numeric value of an instant-vector sample.
fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn prometheus_scrapes_the_cluster_and_the_dashboard_queries_return_data() {
    let cluster = Cluster::start(3);
    let _logs: Vec<LogOnPanic> = cluster.nodes.iter().map(Node::log_on_panic).collect();
    let targets: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let prom = Prometheus::start(&local_config(&targets));

    // Traffic across several scrapes, so rates have two points to differ.
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    let load = std::thread::spawn(move || {
        let start = Instant::now();
        let mut round = 0;
        while start.elapsed() < Duration::from_secs(6) {
            traffic(&ports, &format!("scrape-{round}"), 1);
            round += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        round
    });

    // Every node up.
    let start = Instant::now();
    loop {
        let up = prom.query(r#"up{job="nexuscache"}"#);
        let ready = up.len() == targets.len() && up.iter().all(|s| sample_value(s) == 1.0);
        if ready {
            let mut seen: Vec<String> = up
                .iter()
                .map(|s| s["metric"]["instance"].as_str().unwrap().to_string())
                .collect();
            seen.sort();
            let mut want = targets.clone();
            want.sort();
            assert_eq!(seen, want, "up series are the three nodes");
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "not every node is up after {DEADLINE:?}: {up:?}\ntargets: {}",
            serde_json::to_string_pretty(&prom.api("/api/v1/targets")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let rounds = load.join().expect("traffic thread");
    assert!(rounds >= 2, "traffic ran {rounds} rounds");

    // The dashboard's node picker finds the three nodes.
    let instances = prom.api(&format!(
        "/api/v1/label/instance/values?match[]={}",
        pct(b"nexuscache_build_info")
    ));
    assert_eq!(
        instances.as_array().map(Vec::len),
        Some(3),
        "label_values(nexuscache_build_info, instance): {instances}"
    );

    // Hit rate and p99 from the dashboard itself return real numbers.
    let dash = dashboard();
    let hit_rate = find_query(&dash, "Hit rate", "all nodes");
    let p99 = find_query(&dash, "Latency p50 / p95 / p99 (get/set/delete)", "p99");
    for q in [&hit_rate, &p99] {
        let promql = expand_grafana_vars(&q.expr, RATE_WINDOW);
        let start = Instant::now();
        loop {
            let result = prom.query(&promql);
            let values: Vec<f64> = result.iter().map(sample_value).collect();
            if !values.is_empty() && values.iter().all(|v| v.is_finite()) {
                if q.panel == "Hit rate" {
                    assert!(
                        values.iter().all(|v| (0.0..=1.0).contains(v) && *v > 0.0),
                        "hit rate {values:?} (the traffic hits half its reads)"
                    );
                } else {
                    assert!(
                        values.iter().all(|v| *v > 0.0 && *v <= 5.0),
                        "p99 {values:?} seconds"
                    );
                }
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{:?}/{:?} returned no number within {DEADLINE:?}: {result:?}\nquery: {promql}",
                q.panel,
                q.legend
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    // Every dashboard query is valid PromQL for this Prometheus, and all
    // but the 5xx one (no server errors here) return series.
    for q in dashboard_queries(&dash) {
        let promql = expand_grafana_vars(&q.expr, RATE_WINDOW);
        let result = prom.query(&promql);
        if !promql.contains(r#"status=~"5..""#) {
            assert!(
                !result.is_empty(),
                "{:?}/{:?} returned no series: {promql}",
                q.panel,
                q.legend
            );
        }
    }

    // The alert rules load and evaluate without errors.
    let start = Instant::now();
    loop {
        let groups = prom.api("/api/v1/rules");
        let rules: Vec<&Value> = groups["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        assert_eq!(
            rules.len(),
            rule_exprs().len(),
            "every rule loaded: {groups}"
        );
        let bad: Vec<&&Value> = rules.iter().filter(|r| r["health"] != "ok").collect();
        if bad.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE && bad.iter().all(|r| r["health"] == "unknown"),
            "rules not healthy: {bad:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
