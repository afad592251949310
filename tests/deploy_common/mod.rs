//! Shared by the deployment tests (`tests/deploy_files.rs`,
//! `tests/prometheus_scrape.rs`): loading the files under `deploy/`, the
//! PromQL a dashboard runs, and a small static cluster of real nodes to
//! check those queries against.
//!
//! YAML is read with `serde_yaml_ng` and turned into `serde_json::Value`,
//! so compose, Prometheus and Grafana files are all walked the same way.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{form, free_port, spawn, Conn, Node, Spec, StartError, READY_DEADLINE};

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `deploy/` in the repository.
pub fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A YAML file as JSON values, with `<<` merge keys applied (compose uses
/// them for the settings the nodes share).
pub fn load_yaml(path: &Path) -> Value {
    let text = read_text(path);
    let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    yaml.apply_merge()
        .unwrap_or_else(|e| panic!("{}: bad merge key: {e}", path.display()));
    serde_json::to_value(&yaml)
        .unwrap_or_else(|e| panic!("{}: not representable as JSON: {e}", path.display()))
}

pub fn load_json(path: &Path) -> Value {
    serde_json::from_str(&read_text(path))
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

pub fn compose() -> Value {
    load_yaml(&deploy_dir().join("docker-compose.yml"))
}

pub fn prometheus_config() -> Value {
    load_yaml(&deploy_dir().join("prometheus/prometheus.yml"))
}

pub fn dashboard() -> Value {
    load_json(&deploy_dir().join("grafana/dashboards/nexuscache.json"))
}

/// The rule files `prometheus.yml` names (globs relative to its directory).
pub fn rule_files() -> Vec<PathBuf> {
    let dir = deploy_dir().join("prometheus");
    let mut files = Vec::new();
    for pattern in prometheus_config()["rule_files"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let pattern = pattern.as_str().expect("rule_files entries are strings");
        let matched = glob_files(&dir, pattern);
        assert!(
            !matched.is_empty(),
            "rule_files pattern {pattern:?} matches no file under {}",
            dir.display()
        );
        files.extend(matched);
    }
    files
}

/// `dir/pattern` where only the last path segment may hold `*` (all
/// Prometheus' own examples and ours are of that form).
fn glob_files(dir: &Path, pattern: &str) -> Vec<PathBuf> {
    let (sub, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    assert!(
        !sub.contains('*'),
        "glob {pattern:?}: only the file name may hold '*'"
    );
    let base = dir.join(sub);
    let (prefix, suffix) = name.split_once('*').unwrap_or((name, ""));
    let exact = !name.contains('*');
    let mut out: Vec<PathBuf> = std::fs::read_dir(&base)
        .unwrap_or_else(|e| panic!("read dir {}: {e}", base.display()))
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if exact {
                n == name
            } else {
                n.len() >= prefix.len() + suffix.len()
                    && n.starts_with(prefix)
                    && n.ends_with(suffix)
            }
        })
        .collect();
    out.sort();
    out
}

/// Every `expr` of every rule group in the rule files.
pub fn rule_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in rule_files() {
        let rules = load_yaml(&file);
        for group in rules["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                let name = rule["alert"]
                    .as_str()
                    .or(rule["record"].as_str())
                    .unwrap_or("?")
                    .to_string();
                let expr = rule["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("rule {name} in {} has no expr", file.display()));
                out.push((name, expr.to_string()));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Dashboard queries
// ---------------------------------------------------------------------------

/// One PromQL query of a dashboard panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    pub panel: String,
    pub legend: String,
    pub expr: String,
}

/// Every panel, rows' nested panels included.
pub fn dashboard_panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for p in panels.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// Every query target of every panel.
pub fn dashboard_queries(dash: &Value) -> Vec<PanelQuery> {
    let mut out = Vec::new();
    for p in dashboard_panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(PanelQuery {
                panel: p["title"].as_str().unwrap_or("").to_string(),
                legend: t["legendFormat"].as_str().unwrap_or("").to_string(),
                expr: t["expr"].as_str().unwrap_or("").to_string(),
            });
        }
    }
    out
}

/// The query of the panel titled `panel` whose legend is `legend`.
pub fn find_query(dash: &Value, panel: &str, legend: &str) -> PanelQuery {
    let all = dashboard_queries(dash);
    all.iter()
        .find(|q| q.panel == panel && q.legend == legend)
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "dashboard has no query {legend:?} in panel {panel:?}; queries: {:#?}",
                all
            )
        })
}

/// Grafana's variables replaced the way Grafana would for "all nodes":
/// `$instance` becomes a regex matching every instance, the rate interval a
/// fixed window. Panics if any other variable is left.
pub fn expand_grafana_vars(expr: &str, rate_interval: &str) -> String {
    let out = expr
        .replace("${__rate_interval}", rate_interval)
        .replace("$__rate_interval", rate_interval)
        .replace("${instance}", ".+")
        .replace("$instance", ".+");
    assert!(
        !out.contains('$'),
        "query uses a Grafana variable the tests do not know: {expr}"
    );
    out
}

const PROMQL_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
    // Aggregation operators: also written `sum by (x) (...)`, not a call.
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Metric names a PromQL expression selects: identifiers that are neither
/// functions, keywords, label names nor inside strings, label matchers or
/// range brackets. Enough for dashboards and rules, not a full parser.
pub fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // The last identifier seen was a grouping keyword whose `( ... )` holds
    // label names, not metrics.
    let mut label_list_next = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' && c != '`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                // Strings inside matchers may hold braces; skip them whole.
                i += 1;
                while i < chars.len() && chars[i] != close {
                    if chars[i] == '"' || chars[i] == '\'' {
                        let q = chars[i];
                        i += 1;
                        while i < chars.len() && chars[i] != q {
                            if chars[i] == '\\' {
                                i += 1;
                            }
                            i += 1;
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            '(' if label_list_next => {
                label_list_next = false;
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let is_call = chars.get(j) == Some(&'(');
                let lower = word.to_ascii_lowercase();
                if matches!(
                    lower.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) {
                    label_list_next = true;
                } else if !is_call && !PROMQL_KEYWORDS.contains(&lower.as_str()) {
                    names.insert(word);
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // Numbers and durations (5m, 1e3, 0x1f) are not names.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

// ---------------------------------------------------------------------------
// Compose helpers
// ---------------------------------------------------------------------------

/// The value after `flag` in a command given as a list.
pub fn flag_value<'a>(command: &'a [String], flag: &str) -> Option<&'a str> {
    let mut it = command.iter();
    while let Some(arg) = it.next() {
        if arg == flag {
            return it.next().map(String::as_str);
        }
        if let Some(v) = arg.strip_prefix(&format!("{flag}=")) {
            return Some(v);
        }
    }
    None
}

/// A compose `command` (list or string) as a list of arguments.
pub fn command_args(service: &Value) -> Vec<String> {
    match &service["command"] {
        Value::Array(a) => a.iter().map(scalar_string).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        Value::Null => Vec::new(),
        other => panic!("unexpected command {other}"),
    }
}

/// A compose `environment` (map or `KEY=VALUE` list) as pairs.
pub fn environment(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), scalar_string(v)))
            .collect(),
        Value::Array(a) => a
            .iter()
            .map(|e| {
                let s = scalar_string(e);
                let (k, v) = s.split_once('=').unwrap_or((&s, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        Value::Null => Vec::new(),
        other => panic!("unexpected environment {other}"),
    }
}

/// A YAML scalar as the string compose would pass on.
pub fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other}"),
    }
}

/// Container-side ports a service publishes (`ports`) or exposes (`expose`).
pub fn container_ports(service: &Value) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for p in service["ports"].as_array().into_iter().flatten() {
        let s = match p {
            Value::Object(m) => scalar_string(&m["target"]),
            v => scalar_string(v),
        };
        let target = s.rsplit(':').next().unwrap_or(&s);
        let target = target.split('/').next().unwrap_or(target);
        out.insert(target.parse().unwrap_or_else(|_| panic!("port {s:?}")));
    }
    for p in service["expose"].as_array().into_iter().flatten() {
        let s = scalar_string(p);
        out.insert(s.parse().unwrap_or_else(|_| panic!("expose {s:?}")));
    }
    out
}

/// Published ports as (host, container) pairs.
pub fn published_ports(service: &Value) -> Vec<(u16, u16)> {
    service["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let s = scalar_string(p);
            let parts: Vec<&str> = s.split(':').collect();
            let n = parts.len();
            assert!(n >= 2, "port {s:?} is not published on the host");
            let parse = |x: &str| -> u16 {
                x.split('/')
                    .next()
                    .unwrap_or(x)
                    .parse()
                    .unwrap_or_else(|_| panic!("port {s:?}"))
            };
            (parse(parts[n - 2]), parse(parts[n - 1]))
        })
        .collect()
}

/// The NexusCache services: the ones that run `serve`.
pub fn node_services(compose: &Value) -> Vec<(String, Value)> {
    compose["services"]
        .as_object()
        .expect("compose has services")
        .iter()
        .filter(|(_, s)| command_args(s).first().map(String::as_str) == Some("serve"))
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect()
}

// ---------------------------------------------------------------------------
// A static cluster of real nodes
// ---------------------------------------------------------------------------

/// `n` nodes on loopback that know each other through `--peers` (no etcd).
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub names: Vec<String>,
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        let mut last = String::new();
        for _ in 0..5 {
            let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
            let names: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
            let peers = names
                .iter()
                .zip(&ports)
                .map(|(name, (http, grpc))| format!("{name}=127.0.0.1:{http}/127.0.0.1:{grpc}"))
                .collect::<Vec<_>>()
                .join(",");
            let mut nodes: Vec<Node> = names
                .iter()
                .zip(&ports)
                .map(|(name, (http, grpc))| {
                    let grpc = grpc.to_string();
                    spawn(
                        *http,
                        &Spec::serve(
                            *http,
                            &[
                                "--grpc-port",
                                &grpc,
                                "--no-pin",
                                "--node-name",
                                name,
                                "--peers",
                                &peers,
                                // A loaded 2-CPU CI machine can stall a
                                // forward past the 500 ms default.
                                "--peer-timeout-ms",
                                "10000",
                                "--peer-connect-timeout-ms",
                                "5000",
                            ],
                        ),
                    )
                })
                .collect();
            let mut retry = false;
            for node in &mut nodes {
                match node.wait_ready(READY_DEADLINE) {
                    Ok(()) => {}
                    Err(StartError::PortInUse(log)) => {
                        last = log;
                        retry = true;
                        break;
                    }
                    Err(StartError::Other(msg)) => panic!("{msg}"),
                }
            }
            if retry {
                continue;
            }
            let cluster = Cluster { nodes, names };
            cluster.wait_grpc_ports(&ports);
            return cluster;
        }
        panic!("cluster could not bind its ports in 5 attempts; last log:\n{last}");
    }

    fn wait_grpc_ports(&self, ports: &[(u16, u16)]) {
        for (node, (_, grpc)) in self.nodes.iter().zip(ports) {
            let start = Instant::now();
            while Conn::try_connect(*grpc).is_err() {
                assert!(
                    start.elapsed() < READY_DEADLINE,
                    "gRPC port {grpc} of node on {} never accepted; log:\n{}",
                    node.port,
                    node.log_text()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Writes, reads (hits and misses), deletes and one bad request through
    /// every node, so each node answers for keys it owns and forwards the
    /// rest to their owners. Bounded: `rounds` passes over 30 keys.
    pub fn traffic(&self, tag: &str, rounds: usize) {
        traffic(
            &self.nodes.iter().map(|n| n.port).collect::<Vec<_>>(),
            tag,
            rounds,
        );
    }
}

/// See [`Cluster::traffic`]; takes ports so a thread can run it.
pub fn traffic(ports: &[u16], tag: &str, rounds: usize) {
    const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
    let mut conns: Vec<Conn> = ports
        .iter()
        .map(|&p| {
            let c = Conn::connect(p);
            // Latency is not under test here, and a shared 2-CPU machine
            // can stall a forwarded request past the harness' 5 s default.
            c.set_read_timeout(Duration::from_secs(30));
            c
        })
        .collect();
    for round in 0..rounds {
        for (i, c) in conns.iter_mut().enumerate() {
            for k in 0..30 {
                let key = format!("{tag}-{k}");
                if round == 0 && k % ports.len() == i {
                    let body = form(&[("key", key.as_bytes()), ("value", b"v")]);
                    let r = c.request("POST", "/api/set", &[FORM], body.as_bytes());
                    assert_eq!(r.status, 200, "set {key}: {}", r.describe());
                }
                let r = c.get(&format!("/v1/keys/{key}"));
                assert!(
                    r.status == 200 || r.status == 404,
                    "get {key}: {}",
                    r.describe()
                );
                let r = c.get(&format!("/v1/keys/{key}-absent"));
                assert_eq!(r.status, 404, "get absent {key}: {}", r.describe());
            }
            let r = c.get("/api/get?key=");
            assert_eq!(r.status, 400, "empty key: {}", r.describe());
            let r = c.request("DELETE", &format!("/v1/keys/{tag}-gone-{round}"), &[], b"");
            assert_eq!(r.status, 200, "delete: {}", r.describe());
        }
    }
}

/// Sample names a node's `/metrics` carries (with `_bucket`, `_sum`, ...).
pub fn exported_names(node: &Node) -> BTreeSet<String> {
    node.metrics()
        .samples
        .iter()
        .map(|s| s.name.clone())
        .collect()
}
