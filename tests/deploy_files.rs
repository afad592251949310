//! The files under `deploy/` hang together and match the real binary:
//! compose references files that exist and configures nodes the binary
//! accepts; Prometheus scrapes exactly the compose nodes; the seccomp
//! profile allows io_uring; every metric the dashboard and the alert rules
//! use is exported by live nodes; the systemd unit and its environment file
//! agree. No Docker is needed: nothing here runs compose.

mod common;
mod deploy_common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use deploy_common::*;
use serde_json::Value;

/// Three nodes shared by the tests that need live ones, with traffic that
/// touched every op and every peer path.
fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let c = Cluster::start(3);
        c.traffic("deploy-files", 2);
        c
    })
}

fn services(compose: &Value) -> &serde_json::Map<String, Value> {
    compose["services"]
        .as_object()
        .expect("compose file has a services map")
}

fn http_port(name: &str, service: &Value) -> u16 {
    flag_value(&command_args(service), "--http-port")
        .unwrap_or_else(|| panic!("{name}: no --http-port in its command"))
        .parse()
        .unwrap_or_else(|_| panic!("{name}: --http-port is not a port"))
}

/// A service's `volumes:` entries as written (`source:target[:mode]`).
fn volume_mounts(service: &Value) -> Vec<String> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(scalar_string)
        .collect()
}

/// A compose path (relative to deploy/) as a path on this machine.
fn compose_path(rel: &str) -> PathBuf {
    deploy_dir().join(rel)
}

// ---------------------------------------------------------------------------
// docker-compose.yml and the Dockerfile
// ---------------------------------------------------------------------------

#[test]
fn compose_references_files_that_exist() {
    let compose = compose();
    for (name, svc) in services(&compose) {
        if let Some(build) = svc.get("build") {
            let context = compose_path(build["context"].as_str().expect("build.context"));
            assert!(
                context.join("Cargo.toml").is_file(),
                "{name}: build context {} holds no Cargo.toml",
                context.display()
            );
            let dockerfile = context.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
            assert!(
                dockerfile.is_file(),
                "{name}: Dockerfile {} missing",
                dockerfile.display()
            );
        }
        for opt in svc["security_opt"].as_array().into_iter().flatten() {
            let opt = opt.as_str().expect("security_opt entries are strings");
            if let Some(profile) = opt
                .strip_prefix("seccomp=")
                .or(opt.strip_prefix("seccomp:"))
            {
                assert!(
                    compose_path(profile).is_file(),
                    "{name}: seccomp profile {profile} missing"
                );
            }
        }
        for vol in svc["volumes"].as_array().into_iter().flatten() {
            let spec = scalar_string(vol);
            let source = spec.split(':').next().unwrap_or("");
            if source.starts_with("./") || source.starts_with("../") || source.starts_with('/') {
                assert!(
                    compose_path(source).exists(),
                    "{name}: bind-mount source {source} missing"
                );
            } else {
                assert!(
                    compose["volumes"].get(source).is_some(),
                    "{name}: named volume {source} is not declared under volumes:"
                );
            }
        }
    }
    // What the Prometheus and Grafana mounts must bring along.
    for file in [
        "prometheus/prometheus.yml",
        "grafana/provisioning/datasources",
        "grafana/provisioning/dashboards",
        "grafana/dashboards/nexuscache.json",
        "seccomp-io_uring.json",
    ] {
        assert!(compose_path(file).exists(), "deploy/{file} missing");
    }
}

#[test]
fn compose_runs_three_nodes_ready_for_io_uring() {
    let compose = compose();
    let services = services(&compose);
    let nodes = node_services(&compose);
    let names: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 3, "three NexusCache services, got {names:?}");

    let mut host_ports = BTreeSet::new();
    let mut grpc_ports = BTreeSet::new();
    let mut resp_ports = BTreeSet::new();
    for (name, svc) in &nodes {
        let args = command_args(svc);
        assert_eq!(
            flag_value(&args, "--bind"),
            Some("0.0.0.0"),
            "{name}: --bind"
        );
        assert_eq!(
            flag_value(&args, "--advertise-host"),
            Some(name.as_str()),
            "{name}: peers reach it by its service name"
        );
        assert_eq!(flag_value(&args, "--node-name"), Some(name.as_str()));
        let etcd = flag_value(&args, "--etcd").unwrap_or_else(|| panic!("{name}: --etcd"));
        let (etcd_host, etcd_port) = etcd.split_once(':').expect("--etcd host:port");
        let etcd_svc = services
            .get(etcd_host)
            .unwrap_or_else(|| panic!("{name}: --etcd names {etcd_host}, not a service"));
        assert!(
            command_args(etcd_svc)
                .iter()
                .any(|a| a.contains(&format!(":{etcd_port}"))),
            "etcd service does not listen on {etcd_port}"
        );
        assert_eq!(
            svc["depends_on"][etcd_host]["condition"], "service_healthy",
            "{name}: waits for a healthy etcd"
        );

        let http = http_port(name, svc);
        let grpc: u16 = flag_value(&args, "--grpc-port")
            .unwrap_or_else(|| panic!("{name}: --grpc-port"))
            .parse()
            .expect("--grpc-port");
        assert!(grpc_ports.insert(grpc), "{name}: gRPC port {grpc} reused");
        let published = published_ports(svc);
        assert!(
            published.contains(&(http, http)),
            "{name}: HTTP port {http} published as {http}:{http}, got {published:?}"
        );
        host_ports.insert(http);
        let resp: u16 = flag_value(&args, "--resp-port")
            .unwrap_or_else(|| panic!("{name}: --resp-port (the Redis protocol)"))
            .parse()
            .expect("--resp-port");
        assert!(resp_ports.insert(resp), "{name}: RESP port {resp} reused");
        assert!(
            resp != http && resp != grpc,
            "{name}: RESP port {resp} clashes with HTTP or gRPC"
        );
        assert!(
            published.contains(&(resp, resp)),
            "{name}: RESP port {resp} published as {resp}:{resp}, got {published:?}"
        );

        let seccomp: Vec<&str> = svc["security_opt"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            seccomp,
            ["seccomp=./seccomp-io_uring.json"],
            "{name}: security_opt"
        );
        let memlock = &svc["ulimits"]["memlock"];
        assert!(
            memlock == -1 || (memlock["soft"] == -1 && memlock["hard"] == -1),
            "{name}: ulimits.memlock must be -1, got {memlock}"
        );

        let test = svc["healthcheck"]["test"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: healthcheck.test"));
        let joined: Vec<String> = test.iter().map(scalar_string).collect();
        let script = joined.join(" ");
        assert!(
            script.contains("/readyz"),
            "{name}: healthcheck probes /readyz"
        );
        assert!(
            script.contains(&format!("/{http} ")) || script.contains(&format!(":{http}/")),
            "{name}: healthcheck must probe its own port {http}: {script}"
        );
    }
    assert_eq!(
        host_ports,
        BTreeSet::from([9997, 9998, 9999]),
        "nodes on host ports 9999, 9998, 9997"
    );

    // Images come from pinned tags; only the locally built one is exempt.
    for (name, svc) in services {
        let image = svc["image"].as_str().unwrap_or("");
        if svc.get("build").is_some() {
            continue;
        }
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('/'),
            "{name}: image {image:?} must carry a pinned version tag"
        );
    }
    for wanted in ["etcd", "prometheus", "grafana"] {
        assert!(services.contains_key(wanted), "service {wanted} missing");
    }
    assert!(
        published_ports(&services["grafana"]).contains(&(3000, 3000)),
        "Grafana on port 3000"
    );
}

/// The demo runs its nodes without a client token, so it must not be
/// reachable from other hosts; the nodes still prove a generated cluster
/// secret to each other.
#[test]
fn compose_publishes_on_loopback_only_and_nodes_share_a_generated_secret() {
    let compose = compose();
    let services = services(&compose);
    for (name, svc) in services {
        for port in svc["ports"].as_array().into_iter().flatten() {
            let spec = scalar_string(port);
            assert!(
                spec.starts_with("127.0.0.1:"),
                "{name}: port {spec:?} must be published on the host's 127.0.0.1 only"
            );
        }
    }
    let generator = services
        .get("cluster-secret")
        .expect("a cluster-secret service generates the secret");
    let script: String = command_args(generator).join(" ");
    assert!(
        script.contains("/dev/urandom") && script.contains("/run/nexuscache/cluster-secret"),
        "cluster-secret writes random bytes to the shared file: {script}"
    );
    assert!(
        script.contains("chown 10001:10001"),
        "the secret must be readable by the image's user (uid 10001): {script}"
    );
    for (name, svc) in node_services(&compose) {
        let args = command_args(&svc);
        assert!(
            args.iter().any(|a| a == "--insecure-no-auth"),
            "{name}: bound to 0.0.0.0 without a token, it needs --insecure-no-auth"
        );
        assert_eq!(
            flag_value(&args, "--cluster-secret-file"),
            Some("/run/nexuscache/cluster-secret"),
            "{name}: reads the generated secret"
        );
        let mounts = volume_mounts(&svc);
        assert!(
            mounts
                .iter()
                .any(|m| m == "cluster-secret:/run/nexuscache:ro"),
            "{name}: mounts the secret volume read-only, got {mounts:?}"
        );
        assert_eq!(
            svc["depends_on"]["cluster-secret"]["condition"], "service_completed_successfully",
            "{name}: starts after the secret exists"
        );
    }
}

/// The node command lines and environment of compose, as the binary reads
/// them (`--print-config` resolves and validates without binding).
#[test]
fn compose_node_settings_are_accepted_by_the_binary() {
    let compose = compose();
    // The secret file is made by the `cluster-secret` service at run time;
    // here a generated one stands in for it at the same flag.
    let secret = temp_path("compose-cluster-secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    for (name, svc) in node_services(&compose) {
        let mut args = command_args(&svc);
        let at = args
            .iter()
            .position(|a| a == "--cluster-secret-file")
            .unwrap_or_else(|| panic!("{name}: no --cluster-secret-file"));
        args[at + 1] = secret.display().to_string();
        args.push("--print-config".into());
        let env = environment(&svc);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (status, out, err) = run_bin(&argv, &envs, Duration::from_secs(20));
        assert!(
            status.success(),
            "{name}: `nexuscache {args:?}` failed: {err}"
        );
        let cfg: toml::Table = toml::from_str(&out).expect("--print-config output is TOML");
        assert_eq!(cfg["bind"].as_str(), Some("0.0.0.0"));
        assert_eq!(cfg["node_name"].as_str(), Some(name.as_str()));
        assert_eq!(cfg["advertise_host"].as_str(), Some(name.as_str()));
        assert_eq!(
            cfg["http_port"].as_integer(),
            Some(i64::from(http_port(&name, &svc)))
        );
        assert_eq!(cfg["etcd"].as_str(), Some("etcd:2379"));
        for (k, v) in &env {
            if k == "NEXUSCACHE_NO_PIN" {
                assert_eq!(cfg["no_pin"].as_bool(), Some(v == "true"), "{name}: {k}");
            }
            if k == "NEXUSCACHE_CORES" {
                assert_eq!(cfg["cores"].to_string(), *v, "{name}: {k}");
            }
        }
    }
}

#[test]
fn compose_healthcheck_passes_on_a_ready_node_and_fails_on_a_closed_port() {
    let compose = compose();
    let node = &cluster().nodes[0];
    let _log = node.log_on_panic();
    for (name, svc) in node_services(&compose) {
        let http = http_port(&name, &svc);
        let test: Vec<String> = svc["healthcheck"]["test"]
            .as_array()
            .expect("healthcheck.test")
            .iter()
            .map(scalar_string)
            .collect();
        assert_eq!(
            test[0], "CMD",
            "{name}: exec-form healthcheck (the image has no curl)"
        );
        let run = |port: u16| {
            let argv: Vec<String> = test[1..]
                .iter()
                .map(|a| a.replace(&format!("/{http}"), &format!("/{port}")))
                .collect();
            let mut child = Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run the healthcheck command");
            // Docker gives it `timeout`; give it more on a loaded machine.
            let start = Instant::now();
            let status = loop {
                if let Some(status) = child.try_wait().expect("wait for healthcheck") {
                    break status;
                }
                if start.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{name}: healthcheck against port {port} hung for 20 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            (status, stderr)
        };
        let (status, stderr) = run(node.port);
        assert!(
            status.success(),
            "{name}: healthcheck failed against a ready node: {stderr}"
        );
        let closed = free_port();
        assert!(
            !run(closed).0.success(),
            "{name}: healthcheck passed against a closed port"
        );
    }
}

#[test]
fn dockerfile_builds_in_a_rust_stage_and_ships_only_the_binary() {
    let text = read_text(&deploy_dir().join("Dockerfile"));
    // Join continuation lines so each instruction is one line.
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let instructions: Vec<(String, String)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (op, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (op.to_ascii_uppercase(), rest.trim().to_string())
        })
        .collect();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| op == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(stages.len(), 2, "a builder and a runtime stage");
    let builder = &instructions[stages[0]..stages[1]];
    let runtime = &instructions[stages[1]..];
    assert!(
        builder[0].1.starts_with("rust:1-bookworm") && builder[0].1.ends_with("AS builder"),
        "builder stage: {:?}",
        builder[0]
    );
    let run_text: String = builder
        .iter()
        .filter(|(op, _)| op == "RUN")
        .map(|(_, r)| r.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for needed in [
        "protobuf-compiler",
        "libprotobuf-dev",
        "cargo build --release",
        "-p nexuscache",
    ] {
        assert!(run_text.contains(needed), "builder RUN lacks {needed:?}");
    }
    assert_eq!(runtime[0].1, "debian:bookworm-slim", "runtime base");
    let copies: Vec<&String> = runtime
        .iter()
        .filter(|(op, _)| op == "COPY" || op == "ADD")
        .map(|(_, r)| r)
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "the runtime stage copies one thing: {copies:?}"
    );
    assert!(
        copies[0].starts_with("--from=builder") && copies[0].contains("nexuscache"),
        "runtime copies the binary from the builder: {}",
        copies[0]
    );
    let user = runtime
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, u)| u.as_str())
        .expect("the runtime stage sets USER");
    let user_name = user.split(':').next().unwrap_or("");
    assert!(
        user_name != "root" && user_name != "0",
        "runs as non-root, got USER {user}"
    );

    // BuildKit's per-Dockerfile ignore file keeps target/ out of the context
    // but nothing the build needs.
    let ignore = read_text(&deploy_dir().join("Dockerfile.dockerignore"));
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for p in ["target", ".git"] {
        assert!(
            patterns.contains(&p),
            "Dockerfile.dockerignore should exclude {p}"
        );
    }
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src",
        "proto",
        "bench",
    ] {
        assert!(
            !patterns
                .iter()
                .any(|p| *p == needed || p.trim_start_matches("**/") == needed),
            "Dockerfile.dockerignore excludes {needed}, which the build needs"
        );
        assert!(
            repo_root().join(needed).exists(),
            "the build context lacks {needed}"
        );
    }
}

// ---------------------------------------------------------------------------
// Prometheus and Grafana
// ---------------------------------------------------------------------------

#[test]
fn prometheus_scrapes_exactly_the_compose_nodes() {
    let compose = compose();
    let services = services(&compose);
    let prom = prometheus_config();
    let jobs = prom["scrape_configs"]
        .as_array()
        .expect("scrape_configs list");
    let targets_of = |job: &Value| -> Vec<String> {
        job["static_configs"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|sc| sc["targets"].as_array().into_iter().flatten())
            .map(scalar_string)
            .collect()
    };
    let node_job = jobs
        .iter()
        .find(|j| j["job_name"] == "nexuscache")
        .expect("a scrape job named nexuscache (the dashboard selects on it)");
    assert_eq!(
        node_job["metrics_path"].as_str().unwrap_or("/metrics"),
        "/metrics"
    );
    let node_targets: BTreeSet<String> = targets_of(node_job).into_iter().collect();
    let expected: BTreeSet<String> = node_services(&compose)
        .iter()
        .map(|(n, s)| format!("{n}:{}", http_port(n, s)))
        .collect();
    assert_eq!(node_targets, expected, "nexuscache targets = compose nodes");

    let prom_svc = &services["prometheus"];
    for job in jobs {
        for target in targets_of(job) {
            let (host, port) = target.rsplit_once(':').expect("target host:port");
            let port: u16 = port.parse().expect("target port");
            let svc = if host == "localhost" {
                prom_svc
            } else {
                services.get(host).unwrap_or_else(|| {
                    panic!(
                        "target {target} of job {} is not a compose service",
                        job["job_name"]
                    )
                })
            };
            let ports = if command_args(svc).first().map(String::as_str) == Some("serve") {
                BTreeSet::from([http_port(host, svc)])
            } else {
                container_ports(svc)
            };
            assert!(
                ports.contains(&port),
                "target {target}: service {host} serves {ports:?}"
            );
        }
    }

    // The config directory is mounted where --config.file points.
    let config_flag = command_args(prom_svc)
        .iter()
        .find_map(|a| a.strip_prefix("--config.file=").map(str::to_string))
        .expect("prometheus --config.file");
    let config_dir = Path::new(&config_flag).parent().unwrap().to_str().unwrap();
    let mounts = volume_mounts(prom_svc);
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with(&format!("./prometheus:{config_dir}"))),
        "./prometheus mounted at {config_dir}: {mounts:?}"
    );
}

#[test]
fn promtool_accepts_the_config_and_rules() {
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(deploy_dir().join("prometheus/prometheus.yml"))
        .output()
        .expect("run promtool (Debian package prometheus; scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "promtool check config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!rule_exprs().is_empty(), "rule files hold rules");
}

#[test]
fn grafana_provisioning_matches_the_compose_mounts() {
    let compose = compose();
    let grafana = &services(&compose)["grafana"];
    let mounts: BTreeMap<String, String> = grafana["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(scalar_string)
        .filter_map(|m| {
            let mut parts = m.split(':');
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect();
    assert_eq!(
        mounts.get("./grafana/provisioning").map(String::as_str),
        Some("/etc/grafana/provisioning")
    );
    let dashboards_at = mounts
        .get("./grafana/dashboards")
        .expect("./grafana/dashboards is mounted");

    let ds = load_yaml(&deploy_dir().join("grafana/provisioning/datasources/prometheus.yml"));
    let sources = ds["datasources"].as_array().expect("datasources list");
    let prom = sources
        .iter()
        .find(|d| d["type"] == "prometheus")
        .expect("a prometheus datasource");
    let url = prom["url"].as_str().expect("datasource url");
    let (host, port) = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .split_once(':')
        .expect("url http://host:port");
    let svc = services(&compose)
        .get(host)
        .unwrap_or_else(|| panic!("datasource host {host} is not a service"));
    assert!(container_ports(svc).contains(&port.parse().unwrap()));

    let providers = load_yaml(&deploy_dir().join("grafana/provisioning/dashboards/nexuscache.yml"));
    let provider = &providers["providers"][0];
    assert_eq!(provider["type"], "file");
    assert_eq!(
        provider["options"]["path"].as_str(),
        Some(dashboards_at.as_str()),
        "the dashboard provider reads where ./grafana/dashboards is mounted"
    );
}

#[test]
fn dashboard_has_the_panels_and_variables_operators_need() {
    let dash = dashboard();
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let vars = dash["templating"]["list"].as_array().expect("templating");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("variable ${name} missing"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(var("instance")["type"], "query");

    let mut ids = BTreeSet::new();
    for p in dashboard_panels(&dash) {
        let title = p["title"].as_str().unwrap_or("");
        assert!(ids.insert(p["id"].to_string()), "panel id reused: {title}");
        assert!(p["gridPos"]["w"].as_u64().is_some(), "{title}: gridPos");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: datasource"
        );
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "{title}: target datasource"
            );
            let expr = t["expr"].as_str().expect("expr");
            assert!(
                expr.contains(r#"instance=~"$instance""#),
                "{title}: every query filters on $instance: {expr}"
            );
        }
    }

    let queries = dashboard_queries(&dash);
    let any = |pred: &dyn Fn(&PanelQuery) -> bool, what: &str| {
        assert!(queries.iter().any(pred), "no panel shows {what}");
    };
    any(
        &|q| q.expr.contains("rate(nexuscache_requests_total"),
        "request rate",
    );
    any(
        &|q| {
            q.expr.contains("nexuscache_requests_total")
                && q.expr.contains("by (protocol")
                && q.legend.contains("{{protocol}}")
        },
        "request rate by protocol (http, grpc, resp)",
    );
    any(
        &|q| {
            q.expr.contains("nexuscache_cache_hits_total")
                && q.expr.contains("nexuscache_cache_misses_total")
                && q.expr.contains(" / ")
        },
        "hit rate",
    );
    for quantile in ["0.5", "0.95", "0.99"] {
        any(
            &|q| {
                q.expr
                    .starts_with(&format!("histogram_quantile({quantile}, sum by (le) ("))
                    && q.expr
                        .contains("nexuscache_request_duration_seconds_bucket")
            },
            &format!("latency quantile {quantile}"),
        );
    }
    for class in ["4..", "5.."] {
        any(
            &|q| {
                q.expr.contains("nexuscache_requests_total")
                    && q.expr.contains(&format!("status=~\"{class}\""))
            },
            &format!("{class} errors"),
        );
    }
    for metric in [
        "nexuscache_cache_size_bytes",
        "process_resident_memory_bytes",
        "nexuscache_cache_items",
        "nexuscache_evictions_total",
        "nexuscache_peer_requests_total",
        "nexuscache_ring_members",
    ] {
        any(&|q| q.expr.contains(metric), metric);
    }
    any(
        &|q| q.expr.contains("nexuscache_peer_requests_total") && q.expr.contains("status"),
        "peer requests by status",
    );
    // The queries the scrape test runs must exist under these names.
    find_query(&dash, "Hit rate", "all nodes");
    find_query(&dash, "Latency p50 / p95 / p99 (get/set/delete)", "p99");
}

#[test]
fn promql_names_are_extracted_from_expressions() {
    let names = promql_metric_names(
        r#"histogram_quantile(0.99, sum by (le, instance) (rate(a_bucket{op=~"get|set", x="}"}[$__rate_interval]))) / on (instance) group_left (version) b_info offset 5m > bool 0.5 or absent(c:rule)"#,
    );
    assert_eq!(
        names,
        BTreeSet::from(["a_bucket".into(), "b_info".into(), "c:rule".into()])
    );
    let names =
        promql_metric_names("sum(up{job=\"x\"} == 1) and max(nexuscache_ring_members) != 3e2");
    assert_eq!(
        names,
        BTreeSet::from(["nexuscache_ring_members".into(), "up".into()])
    );
}

/// Names Prometheus makes up itself rather than scraping.
const SYNTHETIC: &[&str] = &["up", "scrape_duration_seconds", "scrape_samples_scraped"];

#[test]
fn every_metric_the_dashboard_and_rules_use_is_exported_by_a_live_node() {
    let dash = dashboard();
    let mut used: BTreeMap<String, String> = BTreeMap::new();
    for q in dashboard_queries(&dash) {
        for name in promql_metric_names(&q.expr) {
            used.entry(name)
                .or_insert_with(|| format!("panel {:?}", q.panel));
        }
    }
    for (rule, expr) in rule_exprs() {
        for name in promql_metric_names(&expr) {
            used.entry(name).or_insert_with(|| format!("rule {rule}"));
        }
    }
    assert!(used.len() > 5, "suspiciously few metric names: {used:?}");

    let cluster = cluster();
    let mut exported = BTreeSet::new();
    for node in &cluster.nodes {
        exported.extend(exported_names(node));
    }
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !SYNTHETIC.contains(&name.as_str()) && !exported.contains(*name))
        .map(|(name, by)| format!("{name} (used by {by})"))
        .collect();
    assert!(
        missing.is_empty(),
        "used but not exported by a live node (histograms are exported as _bucket/_sum/_count):\n  {}\nexported: {exported:?}",
        missing.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// seccomp
// ---------------------------------------------------------------------------

#[test]
fn seccomp_profile_is_dockers_default_plus_io_uring() {
    let profile = load_json(&deploy_dir().join("seccomp-io_uring.json"));
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    let arches: Vec<&str> = profile["archMap"]
        .as_array()
        .expect("archMap")
        .iter()
        .filter_map(|a| a["architecture"].as_str())
        .collect();
    for arch in ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"] {
        assert!(arches.contains(&arch), "archMap lacks {arch}");
    }

    let actions = [
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    ];
    // Allowed whatever the arguments, architecture or capabilities.
    let mut always = BTreeSet::new();
    let mut anywhere = BTreeSet::new();
    for rule in profile["syscalls"].as_array().expect("syscalls") {
        let action = rule["action"].as_str().expect("rule action");
        assert!(actions.contains(&action), "unknown action {action}");
        let names: Vec<&str> = rule["names"]
            .as_array()
            .expect("rule names")
            .iter()
            .map(|n| n.as_str().expect("names are strings"))
            .collect();
        assert!(!names.is_empty(), "rule without names: {rule}");
        anywhere.extend(names.iter().copied());
        let unconditional = rule
            .get("args")
            .is_none_or(|a| a.as_array().is_some_and(Vec::is_empty))
            && rule
                .get("includes")
                .is_none_or(|i| i.as_object().is_some_and(|o| o.is_empty()))
            && rule
                .get("excludes")
                .is_none_or(|e| e.as_object().is_some_and(|o| o.is_empty()));
        if action == "SCMP_ACT_ALLOW" && unconditional {
            for n in names {
                assert!(always.insert(n), "{n} allowed twice");
            }
        }
    }
    for n in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(always.contains(n), "{n} must be allowed unconditionally");
    }
    // What the node and glommio call at start-up and on every request.
    for n in [
        "read",
        "write",
        "mmap",
        "munmap",
        "madvise",
        "futex",
        "epoll_pwait",
        "eventfd2",
        "timerfd_create",
        "sched_setaffinity",
        "sched_getaffinity",
        "mlock",
        "setrlimit",
        "prlimit64",
        "getrlimit",
        "accept4",
        "bind",
        "listen",
        "setsockopt",
        "rt_sigaction",
        "sigaltstack",
        "membarrier",
        "rseq",
        "exit_group",
    ] {
        assert!(
            always.contains(n),
            "{n} must be allowed (Docker's default allows it)"
        );
    }
    // Thread creation is allowed through clone (argument-checked) and
    // clone3 answers ENOSYS so glibc falls back to clone.
    assert!(anywhere.contains("clone") && anywhere.contains("clone3"));
    assert!(
        always.len() > 300,
        "Docker's allow-list has 300+ names, got {}",
        always.len()
    );
    for n in [
        "mount",
        "umount2",
        "unshare",
        "setns",
        "bpf",
        "init_module",
        "reboot",
        "kexec_load",
        "swapon",
        "clone3",
    ] {
        assert!(
            !always.contains(n),
            "{n} must not be allowed unconditionally"
        );
    }
}

// ---------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------

/// `Key=Value` lines of a unit file, in order (keys repeat).
fn unit_entries(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `KEY=VALUE` lines of an environment file.
fn env_entries(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("env line {l:?} is not KEY=VALUE"));
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

fn cpu_list(text: &str) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for part in text.split([',', ' ']).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => {
                out.insert(part.parse().unwrap());
            }
        }
    }
    out
}

#[test]
fn systemd_unit_pins_cpus_locks_memory_and_keeps_io_uring() {
    let dir = deploy_dir().join("systemd");
    let unit_text = read_text(&dir.join("nexuscache.service"));
    let unit = unit_entries(&unit_text);
    let get = |key: &str| -> Vec<&str> {
        unit.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let one = |key: &str| -> &str {
        let v = get(key);
        assert_eq!(v.len(), 1, "{key}= set once, got {v:?}");
        v[0]
    };
    assert_eq!(one("LimitMEMLOCK"), "infinity");
    assert!(one("LimitNOFILE").parse::<u64>().unwrap() >= 65536);
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(
        one("EnvironmentFile").trim_start_matches('-'),
        "/etc/nexuscache/nexuscache.env"
    );
    let exec = one("ExecStart");
    assert!(
        exec.starts_with('/') && exec.split_whitespace().nth(1) == Some("serve"),
        "ExecStart runs `<absolute path> serve`: {exec}"
    );
    // Hardening that would break the node.
    for (key, bad) in [
        ("ProcSubset", "pid"),
        ("LimitMEMLOCK", "0"),
        ("PrivateNetwork", "yes"),
    ] {
        assert!(!get(key).contains(&bad), "{key}={bad} breaks the node");
    }
    for filter in get("SystemCallFilter") {
        if let Some(denied) = filter.strip_prefix('~') {
            for group in denied.split_whitespace() {
                assert!(
                    ![
                        "@aio",
                        "@resources",
                        "@memlock",
                        "@system-service",
                        "@io-event",
                        "@network-io",
                        "io_uring_setup",
                        "io_uring_enter",
                        "io_uring_register",
                        "sched_setaffinity",
                        "setrlimit",
                        "mlock",
                    ]
                    .contains(&group),
                    "SystemCallFilter denies {group}, which the node needs"
                );
            }
        }
    }
    let allows: Vec<&str> = get("SystemCallFilter")
        .into_iter()
        .filter(|f| !f.starts_with('~'))
        .flat_map(str::split_whitespace)
        .collect();
    assert!(
        allows.contains(&"@system-service") || allows.contains(&"@aio"),
        "an allow-list SystemCallFilter must include io_uring (@aio): {allows:?}"
    );

    // CPUAffinity and NEXUSCACHE_CPUSET agree: the node accepts only CPUs
    // it may run on, and data cores should be exactly NEXUSCACHE_CPUSET.
    let affinity = cpu_list(one("CPUAffinity"));
    let env = env_entries(&read_text(&dir.join("nexuscache.env.example")));
    let env_map: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cpuset = cpu_list(
        env_map
            .get("NEXUSCACHE_CPUSET")
            .expect("NEXUSCACHE_CPUSET set"),
    );
    assert!(
        cpuset.is_subset(&affinity),
        "NEXUSCACHE_CPUSET {cpuset:?} must lie within CPUAffinity {affinity:?}"
    );
    assert!(
        !affinity.contains(&0) && !cpuset.contains(&0),
        "CPU 0 is left to the OS and IRQs in the example"
    );
}

#[test]
fn systemd_env_example_names_real_settings_the_binary_accepts() {
    let dir = deploy_dir().join("systemd");
    let env = env_entries(&read_text(&dir.join("nexuscache.env.example")));
    let (status, help, err) = run_bin(&["serve", "--help"], &[], Duration::from_secs(20));
    assert!(status.success(), "serve --help: {err}");
    for (k, _) in &env {
        if k.starts_with("NEXUSCACHE_") {
            assert!(
                help.contains(&format!("[env: {k}=")),
                "{k} is not a variable `nexuscache serve` reads"
            );
        } else {
            assert_eq!(k, "RUST_LOG", "unexpected variable {k}");
        }
    }
    // The example's CPUs need not exist here: check the rest with CPU 0.
    // Its token and secret files are systemd credentials that exist only
    // in the running unit: generated stand-ins take their place.
    let online_cpu = "0".to_string();
    let token = temp_path("systemd-token");
    std::fs::write(&token, "example-token-0123456789abcdef\n").unwrap();
    let secret = temp_path("systemd-secret");
    std::fs::write(&secret, "example-secret-0123456789abcdef\n").unwrap();
    let (token, secret) = (token.display().to_string(), secret.display().to_string());
    let envs: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| {
            let v = match k.as_str() {
                "NEXUSCACHE_CPUSET" => &online_cpu,
                "NEXUSCACHE_AUTH_TOKEN_FILE" => &token,
                "NEXUSCACHE_CLUSTER_SECRET_FILE" => &secret,
                _ => v,
            };
            (k.as_str(), v.as_str())
        })
        .collect();
    let (status, out, err) = run_bin(&["serve", "--print-config"], &envs, Duration::from_secs(20));
    assert!(status.success(), "the example settings are rejected: {err}");
    let cfg: toml::Table = toml::from_str(&out).expect("TOML");
    let env_map: BTreeMap<&str, &str> = envs.iter().copied().collect();
    assert_eq!(
        cfg["node_name"].as_str(),
        env_map.get("NEXUSCACHE_NODE_NAME").copied()
    );
    assert_eq!(
        cfg["etcd"].as_str(),
        env_map.get("NEXUSCACHE_ETCD").copied()
    );
}

/// The unit starts protected: it binds every interface, so it carries a
/// client token and a cluster secret, as systemd credentials the dynamic
/// user can read; without them the node would refuse to start.
#[test]
fn systemd_unit_starts_protected_with_token_and_secret_credentials() {
    let dir = deploy_dir().join("systemd");
    let unit = unit_entries(&read_text(&dir.join("nexuscache.service")));
    let env = env_entries(&read_text(&dir.join("nexuscache.env.example")));
    let env_map: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(env_map.get("NEXUSCACHE_BIND"), Some(&"0.0.0.0"));
    assert!(
        !env_map.contains_key("NEXUSCACHE_INSECURE_NO_AUTH"),
        "the production example must not turn protected mode off"
    );
    let credentials: BTreeMap<&str, &str> = unit
        .iter()
        .filter(|(k, _)| k == "LoadCredential")
        .filter_map(|(_, v)| v.split_once(':'))
        .collect();
    for (var, name) in [
        ("NEXUSCACHE_AUTH_TOKEN_FILE", "auth-token"),
        ("NEXUSCACHE_CLUSTER_SECRET_FILE", "cluster-secret"),
    ] {
        assert!(
            credentials.contains_key(name),
            "LoadCredential={name}:... missing, got {credentials:?}"
        );
        assert_eq!(
            env_map.get(var).copied(),
            Some(format!("/run/credentials/nexuscache.service/{name}").as_str()),
            "{var} reads the unit's {name} credential"
        );
    }
    // Without the token file the same settings are refused (protected mode).
    let envs: Vec<(&str, &str)> = env
        .iter()
        .filter(|(k, _)| !k.ends_with("_FILE") && k != "NEXUSCACHE_CPUSET")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, _, err) = run_bin(&["serve", "--print-config"], &envs, Duration::from_secs(20));
    assert!(!status.success(), "an open node on 0.0.0.0 must be refused");
    assert!(err.contains("protected mode"), "{err}");
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: unit syntax not verified here");
        return;
    }
    // verify insists that ExecStart exists: point it at the test binary.
    let text = read_text(&deploy_dir().join("systemd/nexuscache.service"));
    let text = text.replace("/usr/local/bin/nexuscache", BIN);
    let dir = temp_path("systemd");
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("nexuscache.service");
    std::fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about other units on this machine are not ours to judge.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("nexuscache.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
