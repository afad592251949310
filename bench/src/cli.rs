//! Command line: flags (clap derive), their parsers, and validation into
//! a `Config` plus the per-worker connection layout.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Serialize;

use crate::http::ApiMode;
use crate::keys::{KeyFileError, KeyNames};
use crate::workload::KeyDistribution;

/// Wire protocol to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolKind {
    /// HTTP/1.1 keep-alive, optionally pipelined.
    Http,
    /// gRPC (`nexuscache.v1.Cache` Get/Set) over HTTP/2: unary calls, many
    /// concurrent streams per connection.
    Grpc,
}

impl ProtocolKind {
    pub const fn name(self) -> &'static str {
        match self {
            ProtocolKind::Http => "http",
            ProtocolKind::Grpc => "grpc",
        }
    }
}

/// NexusCache load generator: drives a cache node over HTTP/1.1 and reports
/// throughput, hit rate, errors by kind and HdrHistogram latency percentiles
/// per operation.
///
/// Closed loop by default (each connection sends its next request as soon as
/// the previous one is answered); `--rate` switches to an open loop where
/// latency counts from each request's intended send time (no coordinated
/// omission).
#[derive(Debug, Clone, Parser)]
#[command(name = "nexuscache-bench", version, about, long_about = None)]
#[command(
    after_help = "Durations accept ns/us/ms/s/m/h suffixes (e.g. 500ms, 30s, 2m) or plain seconds.\n\
Example: nexuscache-bench --targets 127.0.0.1:9999 --duration 30s --concurrency 64 --keys 100000 \\\n    --key-distribution zipf:0.99 --prefill --warmup 5s --json out.json"
)]
pub struct Args {
    /// Measured run time, after the warmup.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Requests in flight in total, over all connections and threads.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,

    /// TCP connections in total (default: http --concurrency, grpc one per
    /// thread). Each carries concurrency/connections requests at once: over
    /// HTTP/1.1 that needs --pipeline >= that, over gRPC they are concurrent
    /// HTTP/2 streams.
    #[arg(long)]
    pub connections: Option<usize>,

    /// Most requests one HTTP/1.1 connection may have outstanding
    /// (pipelining). Not used by --protocol grpc.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,

    /// Key space size: keys are <key-prefix>0 .. <key-prefix>(N-1)
    /// (ignored with --key-file).
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,

    /// Fraction of requests that are reads, 0..=1 (the rest are writes).
    #[arg(long, default_value_t = 0.8)]
    pub read_ratio: f64,

    /// Value size of writes, in bytes.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,

    /// `uniform` or `zipf:S` (e.g. zipf:0.99; key 0 is the hottest).
    #[arg(long, default_value = "uniform", value_parser = parse_distribution)]
    pub key_distribution: KeyDistribution,

    /// Prefix of every key name.
    #[arg(long, default_value = "key:")]
    pub key_prefix: String,

    /// Keys to use, one per line (empty lines skipped): overrides --keys and
    /// --key-prefix; the key distribution then draws indices into this list
    /// (zipf: the first line is the hottest) and --prefill writes each line.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// host:port[,host:port...]; connections are spread round-robin.
    #[arg(long, default_value = "127.0.0.1:9999", value_delimiter = ',')]
    pub targets: Vec<String>,

    /// Wire protocol.
    #[arg(long, value_enum, default_value_t = ProtocolKind::Http)]
    pub protocol: ProtocolKind,

    /// HTTP API: `api` (GET /api/get?key=K, POST /api/set form) or `v1`
    /// (GET/PUT /v1/keys/K with raw values). Not used by --protocol grpc.
    #[arg(long, value_enum, default_value_t = ApiMode::Api)]
    pub mode: ApiMode,

    /// Write every key once before measuring, so reads can hit.
    #[arg(long)]
    pub prefill: bool,

    /// Prefill only: writes each connection keeps outstanding (HTTP/1.1
    /// pipelining, gRPC concurrent streams), at least its measured depth.
    /// Bounds what is buffered while loading the keys.
    #[arg(long, default_value_t = DEFAULT_PREFILL_WINDOW)]
    pub prefill_window: usize,

    /// Load applied before the measured run and left out of the results.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Open loop: N requests/s in total at constant intervals; latency is
    /// measured from each request's intended send time. Without it: closed loop.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Worker threads (default: number of CPUs, at most one per connection).
    #[arg(long)]
    pub threads: Option<usize>,

    /// A request unanswered for this long counts as a timeout error and its
    /// connection is re-opened; also the connect timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write an HdrHistogram interval log (one entry per second and
    /// operation, tagged read/write, values in nanoseconds) to FILE.
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,

    /// Random seed (default: derived from the clock; printed for reruns).
    #[arg(long)]
    pub seed: Option<u64>,

    /// No per-second progress lines.
    #[arg(long)]
    pub quiet: bool,

    /// Send `Authorization: Bearer TOKEN` on every HTTP request and gRPC
    /// call, for a node started with --auth-token. Default: the
    /// NEXUSCACHE_AUTH_TOKEN environment variable, if set and not empty
    /// (prefer it: a flag shows in `ps`).
    #[arg(long, value_name = "TOKEN")]
    pub auth_token: Option<String>,
}

/// The environment variable read when `--auth-token` is not given (the
/// node reads the same name).
pub const AUTH_TOKEN_ENV: &str = "NEXUSCACHE_AUTH_TOKEN";
/// Longest token accepted; the node's own limit is 512 bytes.
const MAX_AUTH_TOKEN_BYTES: usize = 4096;

/// Invalid combinations of flags.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    #[error("--duration must be longer than zero")]
    ZeroDuration,
    #[error("--read-ratio must be between 0 and 1, got {0}")]
    ReadRatio(f64),
    #[error("--rate must be a positive number of requests per second, got {0}")]
    Rate(f64),
    #[error("--concurrency {concurrency} is less than --connections {connections}: every connection needs at least one request in flight")]
    ConcurrencyBelowConnections {
        concurrency: usize,
        connections: usize,
    },
    #[error("--concurrency {concurrency} over --connections {connections} puts up to {depth} requests on one connection, but --pipeline is {pipeline}: pass --pipeline {depth} or raise --connections")]
    NeedsPipelining {
        concurrency: usize,
        connections: usize,
        depth: usize,
        pipeline: usize,
    },
    #[error("--targets is empty")]
    NoTargets,
    #[error("cannot resolve target {target:?}: {reason}")]
    BadTarget { target: String, reason: String },
    #[error("--auth-token (or {AUTH_TOKEN_ENV}) must be 1-{MAX_AUTH_TOKEN_BYTES} visible ASCII characters (no spaces or control characters), got {len} bytes")]
    BadAuthToken { len: usize },
}

/// `--prefill-window` default: enough writes in flight per connection that
/// the load is bound by the server, not by round trips, while the buffered
/// requests stay small (64 x ~200 B per connection).
pub const DEFAULT_PREFILL_WINDOW: usize = 64;

/// One server to send to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// As given on the command line; also the `Host` header.
    pub name: String,
    pub addr: SocketAddr,
}

/// One connection of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnSpec {
    /// Index into `Config::targets`.
    pub target: usize,
    /// Requests this connection keeps in flight.
    pub depth: usize,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub duration: Duration,
    pub warmup: Duration,
    pub timeout: Duration,
    pub concurrency: usize,
    pub connections: usize,
    pub pipeline: usize,
    pub threads: usize,
    pub keys: u64,
    pub read_ratio: f64,
    pub value_size: usize,
    pub distribution: KeyDistribution,
    pub key_prefix: String,
    /// `--key-file`, if given (then `keys` is its number of keys).
    pub key_file: Option<PathBuf>,
    /// Raw key names: numbered with `key_prefix`, or the key file's lines.
    pub key_names: KeyNames,
    pub targets: Vec<Target>,
    pub protocol: ProtocolKind,
    pub mode: ApiMode,
    pub prefill: bool,
    /// `--prefill-window`: writes in flight per connection while prefilling.
    pub prefill_window: usize,
    pub rate: Option<f64>,
    pub json: Option<PathBuf>,
    pub hdr_log: Option<PathBuf>,
    pub seed: u64,
    pub quiet: bool,
    /// Bearer token sent with every request (`--auth-token` or the env).
    pub auth_token: Option<String>,
    /// Connections of each worker thread.
    pub layout: Vec<Vec<ConnSpec>>,
}

impl Config {
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let from_env = std::env::var(AUTH_TOKEN_ENV).ok();
        Config::from_args_and_env(args, from_env)
    }

    /// [`Config::from_args`] with the value of `NEXUSCACHE_AUTH_TOKEN`
    /// passed in, so tests do not depend on the environment.
    pub fn from_args_and_env(
        args: Args,
        auth_token_env: Option<String>,
    ) -> Result<Config, ConfigError> {
        let auth_token = auth_token(args.auth_token.clone(), auth_token_env)?;
        if args.duration.is_zero() {
            return Err(ConfigError::ZeroDuration);
        }
        for (name, v) in [
            ("concurrency", args.concurrency),
            ("pipeline", args.pipeline),
            ("prefill-window", args.prefill_window),
            ("connections", args.connections.unwrap_or(1)),
            ("threads", args.threads.unwrap_or(1)),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        let (keys, key_names) = match &args.key_file {
            Some(path) => {
                let names = KeyNames::from_file(path)?;
                (names.list_len().unwrap_or(0), names)
            }
            None => (args.keys, KeyNames::numbered(&args.key_prefix)),
        };
        if keys == 0 {
            return Err(ConfigError::Zero("keys"));
        }
        if !(0.0..=1.0).contains(&args.read_ratio) {
            return Err(ConfigError::ReadRatio(args.read_ratio));
        }
        if let Some(rate) = args.rate {
            if !(rate.is_finite() && rate >= 0.001) {
                return Err(ConfigError::Rate(rate));
            }
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let grpc = args.protocol == ProtocolKind::Grpc;
        let connections = match (args.connections, grpc) {
            (Some(n), _) => n,
            (None, false) => args.concurrency,
            // HTTP/2 multiplexes: one connection per worker thread.
            (None, true) => args.threads.unwrap_or(cpus).min(args.concurrency),
        };
        if args.concurrency < connections {
            return Err(ConfigError::ConcurrencyBelowConnections {
                concurrency: args.concurrency,
                connections,
            });
        }
        let depth = args.concurrency.div_ceil(connections);
        if depth > args.pipeline && !grpc {
            return Err(ConfigError::NeedsPipelining {
                concurrency: args.concurrency,
                connections,
                depth,
                pipeline: args.pipeline,
            });
        }
        let targets = resolve_targets(&args.targets)?;
        let threads = args.threads.unwrap_or(cpus).min(connections);
        let layout = layout(args.concurrency, connections, threads, targets.len());
        let seed = args.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x5eed, |d| d.as_nanos() as u64)
        });
        Ok(Config {
            duration: args.duration,
            warmup: args.warmup,
            timeout: args.timeout.max(Duration::from_millis(1)),
            concurrency: args.concurrency,
            connections,
            pipeline: args.pipeline,
            threads,
            keys,
            read_ratio: args.read_ratio,
            value_size: args.value_size,
            distribution: args.key_distribution,
            key_prefix: args.key_prefix,
            key_file: args.key_file,
            key_names,
            targets,
            protocol: args.protocol,
            mode: args.mode,
            prefill: args.prefill,
            prefill_window: args.prefill_window,
            rate: args.rate,
            json: args.json,
            hdr_log: args.hdr_log,
            seed,
            quiet: args.quiet,
            auth_token,
            layout,
        })
    }
}

/// The token to send: the flag, else a non-empty env value. It goes into a
/// header line verbatim, so anything but visible ASCII is refused (a CR or
/// LF would split the request).
fn auth_token(flag: Option<String>, env: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(token) = flag.or(env.filter(|t| !t.is_empty())) else {
        return Ok(None);
    };
    let visible = token.bytes().all(|b| b.is_ascii_graphic());
    if token.is_empty() || token.len() > MAX_AUTH_TOKEN_BYTES || !visible {
        return Err(ConfigError::BadAuthToken { len: token.len() });
    }
    Ok(Some(token))
}

/// Spreads `connections` over `threads` workers and `targets` round-robin;
/// connection `i` carries `concurrency / connections` requests, plus one
/// for the first `concurrency % connections` connections.
pub fn layout(
    concurrency: usize,
    connections: usize,
    threads: usize,
    targets: usize,
) -> Vec<Vec<ConnSpec>> {
    let threads = threads.clamp(1, connections.max(1));
    let base = concurrency / connections.max(1);
    let extra = concurrency % connections.max(1);
    let mut out = vec![Vec::new(); threads];
    for i in 0..connections {
        out[i % threads].push(ConnSpec {
            target: i % targets.max(1),
            depth: base + usize::from(i < extra),
        });
    }
    out
}

fn resolve_targets(names: &[String]) -> Result<Vec<Target>, ConfigError> {
    let names: Vec<&str> = names
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        return Err(ConfigError::NoTargets);
    }
    names
        .into_iter()
        .map(|name| {
            let bad = |reason: String| ConfigError::BadTarget {
                target: name.to_string(),
                reason,
            };
            let mut addrs = name.to_socket_addrs().map_err(|e| bad(e.to_string()))?;
            let addr = addrs.next().ok_or_else(|| bad("no address".to_string()))?;
            Ok(Target {
                name: name.to_string(),
                addr,
            })
        })
        .collect()
}

/// `30s`, `500ms`, `2m`, `1h`, `250us`, `1.5s` or plain seconds (`30`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("invalid duration {s:?}: expected e.g. 30s, 500ms, 2m or plain seconds")
    })?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {s:?}: use ns, us, ms, s, m or h"
            ))
        }
    };
    let secs = value * scale;
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_distribution(s: &str) -> Result<KeyDistribution, String> {
    s.parse()
        .map_err(|e: crate::workload::WorkloadError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["nexuscache-bench", "--targets", "127.0.0.1:9999"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn defaults_are_sane() {
        let c = Config::from_args(args(&[])).unwrap();
        assert_eq!(c.concurrency, 64);
        assert_eq!(c.connections, 64);
        assert_eq!(c.read_ratio, 0.8);
        assert_eq!(c.value_size, 64);
        assert_eq!(c.distribution, KeyDistribution::Uniform);
        assert_eq!(c.mode, ApiMode::Api);
        assert!(c.rate.is_none());
        assert_eq!(c.layout.iter().map(Vec::len).sum::<usize>(), 64);
        assert_eq!(c.targets[0].addr, "127.0.0.1:9999".parse().unwrap());
    }

    #[test]
    fn parses_every_flag() {
        let c = Config::from_args(args(&[
            "--duration",
            "3",
            "--concurrency",
            "8",
            "--connections",
            "4",
            "--pipeline",
            "2",
            "--keys",
            "10",
            "--read-ratio",
            "0.5",
            "--value-size",
            "100",
            "--key-distribution",
            "zipf:0.99",
            "--key-prefix",
            "k-",
            "--protocol",
            "http",
            "--mode",
            "v1",
            "--prefill",
            "--warmup",
            "1s",
            "--rate",
            "1000",
            "--threads",
            "2",
            "--timeout",
            "2s",
            "--json",
            "out.json",
            "--hdr-log",
            "out.hlog",
            "--seed",
            "9",
            "--quiet",
        ]))
        .unwrap();
        assert_eq!(c.duration, Duration::from_secs(3));
        assert_eq!(
            (c.concurrency, c.connections, c.pipeline, c.threads),
            (8, 4, 2, 2)
        );
        assert_eq!(c.distribution, KeyDistribution::Zipf { exponent: 0.99 });
        assert_eq!(c.mode, ApiMode::V1);
        assert!(c.prefill && c.quiet);
        assert_eq!(c.rate, Some(1000.0));
        assert_eq!(c.seed, 9);
        assert_eq!(
            c.layout,
            vec![
                vec![
                    ConnSpec {
                        target: 0,
                        depth: 2
                    };
                    2
                ];
                2
            ]
        );
    }

    #[test]
    fn rejects_bad_combinations() {
        let err = |a: &[&str]| Config::from_args(args(a)).unwrap_err();
        assert_eq!(
            err(&["--concurrency", "4", "--connections", "8"]),
            ConfigError::ConcurrencyBelowConnections {
                concurrency: 4,
                connections: 8
            }
        );
        assert_eq!(
            err(&["--concurrency", "10", "--connections", "4"]),
            ConfigError::NeedsPipelining {
                concurrency: 10,
                connections: 4,
                depth: 3,
                pipeline: 1
            }
        );
        assert_eq!(err(&["--read-ratio", "1.5"]), ConfigError::ReadRatio(1.5));
        assert_eq!(err(&["--rate", "0"]), ConfigError::Rate(0.0));
        assert_eq!(err(&["--keys", "0"]), ConfigError::Zero("keys"));
        assert_eq!(err(&["--duration", "0s"]), ConfigError::ZeroDuration);
        assert!(matches!(
            Config::from_args(Args::try_parse_from(["x", "--targets", "nonsense"]).unwrap()),
            Err(ConfigError::BadTarget { .. })
        ));
        assert!(Args::try_parse_from(["x", "--key-distribution", "zipf:-2"]).is_err());
        assert!(Args::try_parse_from(["x", "--mode", "rest"]).is_err());
    }

    #[test]
    fn grpc_multiplexes_without_pipelining() {
        let c = Config::from_args(args(&["--protocol", "grpc", "--threads", "2"])).unwrap();
        assert_eq!(c.protocol, ProtocolKind::Grpc);
        // One connection per thread by default, 32 streams each.
        assert_eq!((c.connections, c.threads), (2, 2));
        assert!(c.layout.iter().flatten().all(|s| s.depth == 32));
        let c = Config::from_args(args(&[
            "--protocol",
            "grpc",
            "--concurrency",
            "10",
            "--connections",
            "4",
        ]))
        .unwrap();
        assert_eq!(
            c.layout.iter().flatten().map(|s| s.depth).sum::<usize>(),
            10
        );
        // Fewer in flight than threads: one connection per request.
        let c = Config::from_args(args(&["--protocol", "grpc", "--concurrency", "1"])).unwrap();
        assert_eq!((c.connections, c.threads), (1, 1));
        assert_eq!(ProtocolKind::Grpc.name(), "grpc");
    }

    #[test]
    fn key_file_overrides_keys_and_prefix() {
        let dir = std::env::temp_dir().join(format!("ncb-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.txt");
        std::fs::write(&path, "alpha\nbeta\n\ngamma\n").unwrap();
        let p = path.to_str().unwrap();
        let c = Config::from_args(args(&["--key-file", p, "--keys", "99"])).unwrap();
        assert_eq!(c.keys, 3);
        assert_eq!(c.key_file.as_deref(), Some(path.as_path()));
        let mut name = Vec::new();
        c.key_names.write(2, &mut name);
        assert_eq!(name, b"gamma");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            Config::from_args(args(&["--key-file", p])),
            Err(ConfigError::KeyFile(KeyFileError::Empty(_)))
        ));
        let missing = dir.join("missing.txt");
        let err = Config::from_args(args(&["--key-file", missing.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("missing.txt"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn layout_spreads_connections_targets_and_depth() {
        // 10 in flight over 4 connections: depths 3,3,2,2; 2 threads; 3 targets.
        let l = layout(10, 4, 2, 3);
        assert_eq!(
            l,
            vec![
                vec![
                    ConnSpec {
                        target: 0,
                        depth: 3
                    },
                    ConnSpec {
                        target: 2,
                        depth: 2
                    }
                ],
                vec![
                    ConnSpec {
                        target: 1,
                        depth: 3
                    },
                    ConnSpec {
                        target: 0,
                        depth: 2
                    }
                ],
            ]
        );
        let total: usize = l.iter().flatten().map(|c| c.depth).sum();
        assert_eq!(total, 10);
        // More threads than connections: one thread per connection.
        assert_eq!(layout(2, 2, 8, 1).len(), 2);
    }

    #[test]
    fn auth_token_from_the_flag_or_the_environment() {
        let with_env = |extra: &[&str], env: Option<&str>| {
            Config::from_args_and_env(args(extra), env.map(str::to_string))
        };
        let token = "0123456789abcdef-token";
        assert_eq!(with_env(&[], None).unwrap().auth_token, None);
        assert_eq!(
            with_env(&["--auth-token", token], None)
                .unwrap()
                .auth_token
                .as_deref(),
            Some(token)
        );
        assert_eq!(
            with_env(&[], Some(token)).unwrap().auth_token.as_deref(),
            Some(token)
        );
        // The flag wins; an empty variable counts as unset.
        assert_eq!(
            with_env(&["--auth-token", "from-flag"], Some(token))
                .unwrap()
                .auth_token
                .as_deref(),
            Some("from-flag")
        );
        assert_eq!(with_env(&[], Some("")).unwrap().auth_token, None);
        // Anything that could break the header line is refused.
        for bad in ["", "a b", "tok\r\nX-Evil: 1", "tok\u{e9}"] {
            let err = with_env(&["--auth-token", bad], None).unwrap_err();
            assert_eq!(err, ConfigError::BadAuthToken { len: bad.len() }, "{bad:?}");
            assert!(!err.to_string().contains(bad) || bad.is_empty(), "{err}");
        }
        let err = with_env(&[], Some("a\nb")).unwrap_err();
        assert_eq!(err, ConfigError::BadAuthToken { len: 3 });
        let long = "t".repeat(MAX_AUTH_TOKEN_BYTES + 1);
        assert!(with_env(&["--auth-token", &long], None).is_err());
    }

    #[test]
    fn multiple_targets() {
        let a = Args::try_parse_from([
            "x",
            "--targets",
            "127.0.0.1:1,127.0.0.1:2",
            "--concurrency",
            "4",
        ])
        .unwrap();
        let c = Config::from_args(a).unwrap();
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.targets[1].name, "127.0.0.1:2");
    }
}
