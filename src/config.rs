//! Node configuration: command-line flags, `NEXUSCACHE_*` environment
//! variables, an optional TOML file and defaults, merged in that order of
//! precedence and validated once into [`Config`].
//!
//! Flags are `Option`s without clap defaults so that "not given" can fall
//! through to the file; clap itself handles flag-over-env.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::auth::Credentials;
use crate::error::StartupError;
use crate::ops::MAX_TTL_SECONDS;
use crate::origin::OriginTemplate;

pub const DEFAULT_HTTP_PORT: u16 = 9999;
pub const DEFAULT_MAX_MEMORY: u64 = 256 << 20;
pub const DEFAULT_MAX_KEY_BYTES: usize = 1024;
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 1 << 20;
pub const DEFAULT_TTL_JITTER: f64 = 0.10;
pub const DEFAULT_TTL_JITTER_MAX_SECS: u64 = 180;
pub const DEFAULT_SWEEP_INTERVAL_MS: u64 = 1000;
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// The gRPC port defaults to the HTTP port plus this, so local nodes on
/// 9999/9998/9997 get 10999/10998/10997 without more flags.
/// Smallest per-core budget accepted for `--max-memory`.
pub const MIN_SHARD_BYTES: u64 = 4096;
pub const GRPC_PORT_OFFSET: u16 = 1000;
/// The Redis protocol (RESP) port is the HTTP port plus this, next to
/// gRPC's + 1000, so several nodes on one host keep distinct ports.
pub const RESP_PORT_OFFSET: u16 = 2000;
pub const DEFAULT_VNODES: usize = 50;
pub const DEFAULT_LEASE_TTL_SECS: u64 = 10;
pub const DEFAULT_PEER_CONNECT_TIMEOUT_MS: u64 = 200;
pub const DEFAULT_PEER_TIMEOUT_MS: u64 = 500;
/// The hot tier gets this fraction of `--max-memory` unless told otherwise.
pub const DEFAULT_HOT_MEMORY_DIVISOR: u64 = 8;
pub const DEFAULT_HOT_AUTO_THRESHOLD: u32 = 20;
pub const DEFAULT_HOT_AUTO_TTL_MS: u64 = 5000;
pub const DEFAULT_ORIGIN_TTL_SECS: u64 = 300;
pub const DEFAULT_ORIGIN_TIMEOUT_MS: u64 = 1000;
pub const DEFAULT_ORIGIN_CONCURRENCY: usize = 64;
/// Client connections (HTTP and gRPC together) a node holds at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Smallest default connection-buffer budget of a node.
pub const DEFAULT_MIN_CONNECTION_MEMORY: u64 = 64 << 20;
pub use crate::control::DEFAULT_MAX_RING_MEMBERS;

/// Upper bounds checked at start-up, so no duration can overflow an
/// `Instant` and no size an allocation later.
pub mod bounds {
    /// Idle, header and shutdown timeouts, the lease: one day.
    pub const MAX_TIMEOUT_SECS: u64 = 86_400;
    /// Peer timeouts, the sweep period and automatic-copy lifetime: one hour.
    pub const MAX_MILLIS: u64 = 3_600_000;
    /// The whole node's cache budget: 1 TiB.
    pub const MAX_MEMORY_BYTES: u64 = 1 << 40;
    /// Connections one node accepts.
    pub const MAX_CONNECTIONS: usize = 1_000_000;
    /// Members a ring may be configured to hold.
    pub const MAX_RING_MEMBERS: usize = 4096;
    /// Tokens and cluster secrets: how many, how long (owned by `auth`).
    pub use crate::auth::{MAX_CREDENTIALS, MAX_CREDENTIAL_BYTES, MIN_CREDENTIAL_BYTES};
}

/// Flags of `nexuscache serve`. Every one can also come from the environment
/// variable named beside it, or from the `--config` file under the same name
/// with underscores.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flags and env win over it).
    #[arg(long, env = "NEXUSCACHE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long, env = "NEXUSCACHE_BIND", value_name = "IP")]
    pub bind: Option<IpAddr>,
    /// HTTP port, shared by every core through SO_REUSEPORT [default: 9999].
    #[arg(long, env = "NEXUSCACHE_HTTP_PORT", value_name = "PORT")]
    pub http_port: Option<u16>,
    /// Number of data cores (one pinned executor and one shard each)
    /// [default: every CPU in --cpuset, or every online CPU].
    #[arg(long, env = "NEXUSCACHE_CORES", value_name = "N")]
    pub cores: Option<usize>,
    /// CPUs to pin data cores to, e.g. "0-3" or "0,2,4" [default: online CPUs].
    #[arg(long, env = "NEXUSCACHE_CPUSET", value_name = "LIST")]
    pub cpuset: Option<String>,
    /// Do not pin executors to CPUs (useful when several nodes share a host).
    #[arg(long, env = "NEXUSCACHE_NO_PIN")]
    pub no_pin: bool,
    /// Memory for cached entries across all cores, in bytes or with a
    /// KiB/MiB/GiB (or KB/MB/GB) suffix; split evenly over cores [default: 256MiB].
    #[arg(long, env = "NEXUSCACHE_MAX_MEMORY", value_name = "SIZE")]
    pub max_memory: Option<String>,
    /// Longest accepted key, in bytes [default: 1024].
    #[arg(long, env = "NEXUSCACHE_MAX_KEY_BYTES", value_name = "BYTES")]
    pub max_key_bytes: Option<usize>,
    /// Largest accepted value, in bytes or with a size suffix [default: 1MiB].
    #[arg(long, env = "NEXUSCACHE_MAX_VALUE_BYTES", value_name = "SIZE")]
    pub max_value_bytes: Option<String>,
    /// Random extra TTL as a fraction of the TTL, 0 to 1 [default: 0.1].
    #[arg(long, env = "NEXUSCACHE_TTL_JITTER", value_name = "FRACTION")]
    pub ttl_jitter: Option<f64>,
    /// Cap on the random extra TTL, in seconds [default: 180].
    #[arg(long, env = "NEXUSCACHE_TTL_JITTER_MAX", value_name = "SECONDS")]
    pub ttl_jitter_max: Option<u64>,
    /// How often each core sweeps expired entries, in milliseconds [default: 1000].
    #[arg(long, env = "NEXUSCACHE_SWEEP_INTERVAL_MS", value_name = "MS")]
    pub sweep_interval_ms: Option<u64>,
    /// Close keep-alive connections idle this long, in seconds [default: 60].
    #[arg(long, env = "NEXUSCACHE_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,
    /// A request whose head or body stalls this long is dropped, in seconds [default: 10].
    #[arg(long, env = "NEXUSCACHE_HEADER_TIMEOUT", value_name = "SECONDS")]
    pub header_timeout: Option<u64>,
    /// After SIGTERM/SIGINT, wait at most this long for in-flight requests, in seconds [default: 10].
    #[arg(long, env = "NEXUSCACHE_SHUTDOWN_GRACE", value_name = "SECONDS")]
    pub shutdown_grace: Option<u64>,
    /// gRPC port for peers and programs, shared by every core [default: HTTP port + 1000].
    #[arg(long, env = "NEXUSCACHE_GRPC_PORT", value_name = "PORT")]
    pub grpc_port: Option<u16>,
    /// Redis protocol (RESP2/RESP3) port, shared by every core; 0 turns it off [default: HTTP port + 2000].
    #[arg(long, env = "NEXUSCACHE_RESP_PORT", value_name = "PORT")]
    pub resp_port: Option<u16>,
    /// This node's name in the cluster [default: <advertise-host>:<http-port>].
    #[arg(long, env = "NEXUSCACHE_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Host or IP other nodes use to reach this one [default: the --bind address].
    #[arg(long, env = "NEXUSCACHE_ADVERTISE_HOST", value_name = "HOST")]
    pub advertise_host: Option<String>,
    /// etcd endpoints for discovery, comma-separated host:port [default: none].
    #[arg(long, env = "NEXUSCACHE_ETCD", value_name = "HOST:PORT,...")]
    pub etcd: Option<String>,
    /// Static membership when etcd is not used: name=http_host:port[/grpc_host:port[/resp_host:port]][@cores],...
    #[arg(long, env = "NEXUSCACHE_PEERS", value_name = "LIST")]
    pub peers: Option<String>,
    /// Virtual nodes per member on the consistent-hash ring [default: 50].
    #[arg(long, env = "NEXUSCACHE_VNODES", value_name = "N")]
    pub vnodes: Option<usize>,
    /// etcd lease TTL for this node's registration, in seconds [default: 10].
    #[arg(long, env = "NEXUSCACHE_LEASE_TTL", value_name = "SECONDS")]
    pub lease_ttl: Option<u64>,
    /// Give up connecting to a peer after this long, in milliseconds [default: 200].
    #[arg(long, env = "NEXUSCACHE_PEER_CONNECT_TIMEOUT_MS", value_name = "MS")]
    pub peer_connect_timeout_ms: Option<u64>,
    /// Give up on a request to a peer after this long, in milliseconds [default: 500].
    #[arg(long, env = "NEXUSCACHE_PEER_TIMEOUT_MS", value_name = "MS")]
    pub peer_timeout_ms: Option<u64>,
    /// Memory for the hot tier (copies of other nodes' hot keys), taken out
    /// of --max-memory; 0 turns hot copies off [default: --max-memory / 8].
    #[arg(long, env = "NEXUSCACHE_HOT_MAX_MEMORY", value_name = "SIZE")]
    pub hot_max_memory: Option<String>,
    /// Forwarded GETs for one remote key within one second after which this
    /// node keeps its own short-lived copy; 0 turns automatic copies off [default: 20].
    #[arg(long, env = "NEXUSCACHE_HOT_AUTO_THRESHOLD", value_name = "N")]
    pub hot_auto_threshold: Option<u32>,
    /// Lifetime of an automatic hot copy, in milliseconds (never past the
    /// owner's own expiry) [default: 5000].
    #[arg(long, env = "NEXUSCACHE_HOT_AUTO_TTL_MS", value_name = "MS")]
    pub hot_auto_ttl_ms: Option<u64>,
    /// Read-through origin for misses: an http:// URL with a {key}
    /// placeholder (the key is percent-encoded), e.g.
    /// http://127.0.0.1:8000/items/{key} [default: none, a miss is a 404].
    #[arg(long, env = "NEXUSCACHE_ORIGIN", value_name = "URL")]
    pub origin: Option<String>,
    /// TTL of values loaded from the origin, in seconds (jitter applies; 0 never expires) [default: 300].
    #[arg(long, env = "NEXUSCACHE_ORIGIN_TTL", value_name = "SECONDS")]
    pub origin_ttl: Option<u64>,
    /// Remember an origin 404 for this long, in seconds; 0 asks the origin every time [default: 0].
    #[arg(long, env = "NEXUSCACHE_NEGATIVE_TTL", value_name = "SECONDS")]
    pub negative_ttl: Option<u64>,
    /// Give up on an origin request after this long (waiting for a free
    /// slot included), in milliseconds [default: 1000].
    #[arg(long, env = "NEXUSCACHE_ORIGIN_TIMEOUT_MS", value_name = "MS")]
    pub origin_timeout_ms: Option<u64>,
    /// Most origin requests in flight from this node, split over its cores
    /// (at least one each) [default: 64].
    #[arg(long, env = "NEXUSCACHE_ORIGIN_CONCURRENCY", value_name = "N")]
    pub origin_concurrency: Option<usize>,
    /// Bearer token(s) every client must send (`Authorization: Bearer
    /// <token>`, gRPC metadata `authorization`), comma-separated: all are
    /// valid at once, so a token can be rotated [default: none, no auth].
    #[arg(long, env = "NEXUSCACHE_AUTH_TOKEN", value_name = "TOKEN[,TOKEN]")]
    pub auth_token: Option<String>,
    /// File with the bearer token(s), one per line (`#` comments); read at
    /// start-up, merged with --auth-token.
    #[arg(long, env = "NEXUSCACHE_AUTH_TOKEN_FILE", value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Secret shared by the nodes of a cluster, comma-separated for
    /// rotation (this node sends the first, accepts any): only callers that
    /// prove it may replicate, forward or keep copies [default: none].
    #[arg(
        long,
        env = "NEXUSCACHE_CLUSTER_SECRET",
        value_name = "SECRET[,SECRET]"
    )]
    pub cluster_secret: Option<String>,
    /// File with the cluster secret(s), one per line, merged with --cluster-secret.
    #[arg(long, env = "NEXUSCACHE_CLUSTER_SECRET_FILE", value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Serve /metrics without the token even when one is set.
    #[arg(long, env = "NEXUSCACHE_METRICS_PUBLIC")]
    pub metrics_public: bool,
    /// Start on a non-loopback address without a token or cluster secret
    /// (protected mode refuses to otherwise).
    #[arg(long, env = "NEXUSCACHE_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Let `/setpeer addr=...` add members that are not in --peers, or move
    /// one to another address (static membership only).
    #[arg(long, env = "NEXUSCACHE_ALLOW_SETPEER_ADDR")]
    pub allow_setpeer_addr: bool,
    /// Most members a ring may hold; more are refused [default: 256].
    #[arg(long, env = "NEXUSCACHE_MAX_RING_MEMBERS", value_name = "N")]
    pub max_ring_members: Option<usize>,
    /// Most client connections (HTTP and gRPC) the node holds at once,
    /// split evenly over its cores; more are closed at once [default: 4096].
    #[arg(long, env = "NEXUSCACHE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Bytes all client connections of the node may hold in buffers (HTTP
    /// input and unsent output, HTTP/2 partly received messages), split
    /// over cores; past it connections wait before growing or answering
    /// [default: the larger of 64MiB and --max-memory / 4].
    #[arg(long, env = "NEXUSCACHE_MAX_CONNECTION_MEMORY", value_name = "SIZE")]
    pub max_connection_memory: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// The `--config` file: the same names as the flags, all optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<IpAddr>,
    pub http_port: Option<u16>,
    pub cores: Option<usize>,
    pub cpuset: Option<String>,
    pub no_pin: Option<bool>,
    pub max_memory: Option<SizeValue>,
    pub max_key_bytes: Option<usize>,
    pub max_value_bytes: Option<SizeValue>,
    pub ttl_jitter: Option<f64>,
    pub ttl_jitter_max: Option<u64>,
    pub sweep_interval_ms: Option<u64>,
    pub idle_timeout: Option<u64>,
    pub header_timeout: Option<u64>,
    pub shutdown_grace: Option<u64>,
    pub grpc_port: Option<u16>,
    pub resp_port: Option<u16>,
    pub node_name: Option<String>,
    pub advertise_host: Option<String>,
    pub etcd: Option<String>,
    pub peers: Option<String>,
    pub vnodes: Option<usize>,
    pub lease_ttl: Option<u64>,
    pub peer_connect_timeout_ms: Option<u64>,
    pub peer_timeout_ms: Option<u64>,
    pub hot_max_memory: Option<SizeValue>,
    pub hot_auto_threshold: Option<u32>,
    pub hot_auto_ttl_ms: Option<u64>,
    pub origin: Option<String>,
    pub origin_ttl: Option<u64>,
    pub negative_ttl: Option<u64>,
    pub origin_timeout_ms: Option<u64>,
    pub origin_concurrency: Option<usize>,
    pub auth_token: Option<String>,
    pub auth_token_file: Option<PathBuf>,
    pub cluster_secret: Option<String>,
    pub cluster_secret_file: Option<PathBuf>,
    pub metrics_public: Option<bool>,
    pub insecure_no_auth: Option<bool>,
    pub allow_setpeer_addr: Option<bool>,
    pub max_ring_members: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connection_memory: Option<SizeValue>,
}

/// A size in a TOML file may be a number of bytes or a string with a suffix.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    fn to_bytes(&self, field: &str) -> Result<u64, StartupError> {
        match self {
            SizeValue::Bytes(n) => Ok(*n),
            SizeValue::Text(s) => parse_size(s).map_err(|e| invalid(field, e)),
        }
    }
}

/// Validated settings of one node; built once at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub http_port: u16,
    /// The CPU each data core is pinned to, one entry per core.
    pub cpus: Vec<usize>,
    pub pin: bool,
    pub max_memory: u64,
    pub max_key_bytes: usize,
    pub max_value_bytes: u64,
    pub ttl_jitter: f64,
    pub ttl_jitter_max_secs: u64,
    pub sweep_interval_ms: u64,
    pub idle_timeout_secs: u64,
    pub header_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
    pub grpc_port: u16,
    /// 0: no Redis protocol listener.
    pub resp_port: u16,
    pub node_name: String,
    pub advertise_host: String,
    /// Empty: no etcd (static peers or a single node).
    pub etcd: Vec<String>,
    /// Unparsed static membership list (parsed by the control module).
    pub peers: String,
    pub vnodes: usize,
    pub lease_ttl_secs: u64,
    pub peer_connect_timeout_ms: u64,
    pub peer_timeout_ms: u64,
    /// Taken out of `max_memory`: the primary shards share the rest.
    pub hot_max_memory: u64,
    /// 0: automatic hot copies are off.
    pub hot_auto_threshold: u32,
    pub hot_auto_ttl_ms: u64,
    /// The `--origin` template as given, and parsed (address resolved once).
    pub origin_url: Option<String>,
    pub origin: Option<OriginTemplate>,
    pub origin_ttl_secs: u64,
    pub negative_ttl_secs: u64,
    pub origin_timeout_ms: u64,
    pub origin_concurrency: usize,
    /// Client tokens and cluster secrets, as loaded (never printed).
    pub credentials: Credentials,
    /// Where the credentials came from, so `--print-config` round-trips
    /// without writing a secret into its output.
    pub credential_sources: CredentialSources,
    pub metrics_public: bool,
    pub insecure_no_auth: bool,
    pub allow_setpeer_addr: bool,
    pub max_ring_members: usize,
    pub max_connections: usize,
    /// Budget of every connection buffer of the node together.
    pub max_connection_memory: u64,
}

/// The files tokens and secrets were read from (inline values are not
/// kept here: `--print-config` must not print a secret).
#[derive(Debug, Clone, Default)]
pub struct CredentialSources {
    pub auth_token_file: Option<PathBuf>,
    pub cluster_secret_file: Option<PathBuf>,
    /// A token or secret was given inline (flag, env or file field).
    pub inline: bool,
}

impl Config {
    pub fn grpc_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.grpc_port)
    }
    /// The Redis protocol listener's address, when it is on.
    pub fn resp_addr(&self) -> Option<SocketAddr> {
        (self.resp_port != 0).then(|| SocketAddr::new(self.bind, self.resp_port))
    }
    /// The address Redis clients use to reach this node, when RESP is on.
    pub fn advertised_resp(&self) -> Option<String> {
        (self.resp_port != 0).then(|| format!("{}:{}", self.advertise_host, self.resp_port))
    }
    /// The addresses other nodes use to reach this one.
    pub fn advertised_http(&self) -> String {
        format!("{}:{}", self.advertise_host, self.http_port)
    }
    pub fn advertised_grpc(&self) -> String {
        format!("{}:{}", self.advertise_host, self.grpc_port)
    }
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }
    pub fn peer_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.peer_connect_timeout_ms)
    }
    pub fn peer_timeout(&self) -> Duration {
        Duration::from_millis(self.peer_timeout_ms)
    }
    pub fn cores(&self) -> usize {
        self.cpus.len()
    }
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.http_port)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }
    pub fn ttl_jitter_max(&self) -> Duration {
        Duration::from_secs(self.ttl_jitter_max_secs)
    }
    /// Each core's share of `max_memory` minus the hot tier; with
    /// [`Config::hot_capacity`], the sum over cores never exceeds `max_memory`.
    pub fn shard_capacity(&self) -> u64 {
        self.max_memory.saturating_sub(self.hot_max_memory) / self.cores() as u64
    }
    /// Each core's share of the hot tier; 0 when hot copies are off.
    pub fn hot_capacity(&self) -> u64 {
        self.hot_max_memory / self.cores() as u64
    }
    pub fn hot_auto_ttl(&self) -> Duration {
        Duration::from_millis(self.hot_auto_ttl_ms)
    }
    pub fn origin_ttl(&self) -> Duration {
        Duration::from_secs(self.origin_ttl_secs)
    }
    pub fn negative_ttl(&self) -> Duration {
        Duration::from_secs(self.negative_ttl_secs)
    }
    pub fn origin_timeout(&self) -> Duration {
        Duration::from_millis(self.origin_timeout_ms)
    }
    /// Origin requests one core may have in flight.
    pub fn origin_concurrency_per_core(&self) -> usize {
        self.origin_concurrency.div_ceil(self.cores()).max(1)
    }
    /// How long a forwarded read may take: the owner may have to load the
    /// value from the origin first.
    pub fn peer_read_timeout(&self) -> Duration {
        match self.origin {
            Some(_) => self.peer_timeout() + self.origin_timeout(),
            None => self.peer_timeout(),
        }
    }

    /// Each core's share of `--max-connections` (at least one).
    pub fn max_connections_per_core(&self) -> usize {
        (self.max_connections / self.cores()).max(1)
    }

    /// Each core's share of `--max-connection-memory`.
    pub fn connection_memory_per_core(&self) -> u64 {
        self.max_connection_memory / self.cores() as u64
    }

    /// Unsent response bytes after which an HTTP connection stops reading
    /// until the client takes them: two of the largest values, at least
    /// 4 MiB.
    pub fn max_unsent_bytes(&self) -> usize {
        usize::try_from(unsent_cap(self.max_value_bytes)).unwrap_or(usize::MAX)
    }

    /// The effective settings in the `--config` file format, so the output
    /// can be saved and loaded back as it is.
    pub fn to_toml(&self) -> String {
        let mut cpus = self.cpus.clone();
        cpus.sort_unstable();
        cpus.dedup();
        let cpuset = cpus
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let file = FileConfig {
            bind: Some(self.bind),
            http_port: Some(self.http_port),
            cores: Some(self.cores()),
            cpuset: Some(cpuset),
            no_pin: Some(!self.pin),
            max_memory: Some(SizeValue::Bytes(self.max_memory)),
            max_key_bytes: Some(self.max_key_bytes),
            max_value_bytes: Some(SizeValue::Bytes(self.max_value_bytes)),
            ttl_jitter: Some(self.ttl_jitter),
            ttl_jitter_max: Some(self.ttl_jitter_max_secs),
            sweep_interval_ms: Some(self.sweep_interval_ms),
            idle_timeout: Some(self.idle_timeout_secs),
            header_timeout: Some(self.header_timeout_secs),
            shutdown_grace: Some(self.shutdown_grace_secs),
            grpc_port: Some(self.grpc_port),
            resp_port: Some(self.resp_port),
            node_name: Some(self.node_name.clone()),
            advertise_host: Some(self.advertise_host.clone()),
            etcd: Some(self.etcd.join(",")),
            peers: Some(self.peers.clone()),
            vnodes: Some(self.vnodes),
            lease_ttl: Some(self.lease_ttl_secs),
            peer_connect_timeout_ms: Some(self.peer_connect_timeout_ms),
            peer_timeout_ms: Some(self.peer_timeout_ms),
            hot_max_memory: Some(SizeValue::Bytes(self.hot_max_memory)),
            hot_auto_threshold: Some(self.hot_auto_threshold),
            hot_auto_ttl_ms: Some(self.hot_auto_ttl_ms),
            origin: self.origin_url.clone(),
            origin_ttl: Some(self.origin_ttl_secs),
            negative_ttl: Some(self.negative_ttl_secs),
            origin_timeout_ms: Some(self.origin_timeout_ms),
            origin_concurrency: Some(self.origin_concurrency),
            // Secrets are never printed: files are named, inline values are
            // left out (a note in the output says so).
            auth_token: None,
            auth_token_file: self.credential_sources.auth_token_file.clone(),
            cluster_secret: None,
            cluster_secret_file: self.credential_sources.cluster_secret_file.clone(),
            metrics_public: Some(self.metrics_public),
            insecure_no_auth: Some(self.insecure_no_auth),
            allow_setpeer_addr: Some(self.allow_setpeer_addr),
            max_ring_members: Some(self.max_ring_members),
            max_connections: Some(self.max_connections),
            max_connection_memory: Some(SizeValue::Bytes(self.max_connection_memory)),
        };
        let body =
            toml::to_string(&file).unwrap_or_else(|e| format!("# cannot render config: {e}\n"));
        if self.credential_sources.inline {
            format!(
                "# a token or cluster secret was given inline; it is not printed: \
                 give it again, or use auth_token_file / cluster_secret_file\n{body}"
            )
        } else {
            body
        }
    }

    /// Resolve flags (with env already folded in by clap) over the optional
    /// file over defaults, then validate.
    pub fn resolve(args: &ServeArgs, online_cpus: &[usize]) -> Result<Config, StartupError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };

        let max_memory = match (&args.max_memory, &file.max_memory) {
            (Some(s), _) => parse_size(s).map_err(|e| invalid("--max-memory", e))?,
            (None, Some(v)) => v.to_bytes("max_memory")?,
            (None, None) => DEFAULT_MAX_MEMORY,
        };
        let max_value_bytes = match (&args.max_value_bytes, &file.max_value_bytes) {
            (Some(s), _) => parse_size(s).map_err(|e| invalid("--max-value-bytes", e))?,
            (None, Some(v)) => v.to_bytes("max_value_bytes")?,
            (None, None) => DEFAULT_MAX_VALUE_BYTES,
        };

        let hot_max_memory = match (&args.hot_max_memory, &file.hot_max_memory) {
            (Some(s), _) => parse_size(s).map_err(|e| invalid("--hot-max-memory", e))?,
            (None, Some(v)) => v.to_bytes("hot_max_memory")?,
            (None, None) => max_memory / DEFAULT_HOT_MEMORY_DIVISOR,
        };
        let max_connection_memory = match (&args.max_connection_memory, &file.max_connection_memory)
        {
            (Some(s), _) => Some(parse_size(s).map_err(|e| invalid("--max-connection-memory", e))?),
            (None, Some(v)) => Some(v.to_bytes("max_connection_memory")?),
            (None, None) => None,
        };
        let origin_url = args.origin.clone().or(file.origin.clone());
        let origin = match &origin_url {
            Some(url) => Some(OriginTemplate::parse(url).map_err(|e| invalid("--origin", e))?),
            None => None,
        };

        let cpuset = args.cpuset.clone().or(file.cpuset);
        let allowed: Vec<usize> = match &cpuset {
            Some(list) => parse_cpu_list(list).map_err(|e| invalid("--cpuset", e))?,
            None => online_cpus.to_vec(),
        };
        if allowed.is_empty() {
            return Err(invalid("--cpuset", "no CPUs to run on"));
        }
        if let Some(bad) = allowed.iter().find(|c| !online_cpus.contains(c)) {
            return Err(invalid(
                "--cpuset",
                format!("CPU {bad} is not online (online: {online_cpus:?})"),
            ));
        }
        let cores = args.cores.or(file.cores).unwrap_or(allowed.len());
        if cores == 0 || cores > 1024 {
            return Err(invalid("--cores", "must be between 1 and 1024"));
        }
        // More cores than CPUs is allowed (tests run several nodes on two
        // CPUs); cores then share CPUs round-robin.
        let cpus = (0..cores).map(|i| allowed[i % allowed.len()]).collect();

        let bind = args
            .bind
            .or(file.bind)
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let http_port = args
            .http_port
            .or(file.http_port)
            .unwrap_or(DEFAULT_HTTP_PORT);
        let grpc_port = match args.grpc_port.or(file.grpc_port) {
            Some(p) => p,
            None => http_port.checked_add(GRPC_PORT_OFFSET).ok_or_else(|| {
                invalid(
                    "--grpc-port",
                    "HTTP port + 1000 is past 65535; set it explicitly",
                )
            })?,
        };
        let resp_port = match args.resp_port.or(file.resp_port) {
            Some(p) => p,
            None => http_port.checked_add(RESP_PORT_OFFSET).ok_or_else(|| {
                invalid(
                    "--resp-port",
                    "HTTP port + 2000 is past 65535; set it explicitly (0 turns RESP off)",
                )
            })?,
        };
        let advertise_host = match args.advertise_host.clone().or(file.advertise_host) {
            Some(h) => h,
            None if bind.is_unspecified() => {
                return Err(invalid(
                    "--advertise-host",
                    "required when binding to an unspecified address",
                ))
            }
            None => bind.to_string(),
        };
        let node_name = args
            .node_name
            .clone()
            .or(file.node_name)
            .unwrap_or_else(|| format!("{advertise_host}:{http_port}"));
        let etcd: Vec<String> = args
            .etcd
            .clone()
            .or(file.etcd)
            .unwrap_or_default()
            .split(',')
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();

        let auth_token_file = args.auth_token_file.clone().or(file.auth_token_file);
        let cluster_secret_file = args
            .cluster_secret_file
            .clone()
            .or(file.cluster_secret_file);
        let auth_token = args.auth_token.clone().or(file.auth_token);
        let cluster_secret = args.cluster_secret.clone().or(file.cluster_secret);
        let credentials = Credentials::load(
            auth_token.as_deref(),
            auth_token_file.as_deref(),
            cluster_secret.as_deref(),
            cluster_secret_file.as_deref(),
        )?;
        let credential_sources = CredentialSources {
            auth_token_file,
            cluster_secret_file,
            inline: auth_token.is_some() || cluster_secret.is_some(),
        };

        let config = Config {
            credentials,
            credential_sources,
            metrics_public: args.metrics_public || file.metrics_public.unwrap_or(false),
            insecure_no_auth: args.insecure_no_auth || file.insecure_no_auth.unwrap_or(false),
            allow_setpeer_addr: args.allow_setpeer_addr || file.allow_setpeer_addr.unwrap_or(false),
            max_ring_members: args
                .max_ring_members
                .or(file.max_ring_members)
                .unwrap_or(DEFAULT_MAX_RING_MEMBERS),
            max_connection_memory: max_connection_memory
                .unwrap_or_else(|| default_connection_memory(max_memory, max_value_bytes, cores)),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            bind,
            http_port,
            grpc_port,
            resp_port,
            node_name,
            advertise_host,
            etcd,
            peers: args.peers.clone().or(file.peers).unwrap_or_default(),
            vnodes: args.vnodes.or(file.vnodes).unwrap_or(DEFAULT_VNODES),
            lease_ttl_secs: args
                .lease_ttl
                .or(file.lease_ttl)
                .unwrap_or(DEFAULT_LEASE_TTL_SECS),
            peer_connect_timeout_ms: args
                .peer_connect_timeout_ms
                .or(file.peer_connect_timeout_ms)
                .unwrap_or(DEFAULT_PEER_CONNECT_TIMEOUT_MS),
            peer_timeout_ms: args
                .peer_timeout_ms
                .or(file.peer_timeout_ms)
                .unwrap_or(DEFAULT_PEER_TIMEOUT_MS),
            hot_max_memory,
            hot_auto_threshold: args
                .hot_auto_threshold
                .or(file.hot_auto_threshold)
                .unwrap_or(DEFAULT_HOT_AUTO_THRESHOLD),
            hot_auto_ttl_ms: args
                .hot_auto_ttl_ms
                .or(file.hot_auto_ttl_ms)
                .unwrap_or(DEFAULT_HOT_AUTO_TTL_MS),
            origin_url,
            origin,
            origin_ttl_secs: args
                .origin_ttl
                .or(file.origin_ttl)
                .unwrap_or(DEFAULT_ORIGIN_TTL_SECS),
            negative_ttl_secs: args.negative_ttl.or(file.negative_ttl).unwrap_or(0),
            origin_timeout_ms: args
                .origin_timeout_ms
                .or(file.origin_timeout_ms)
                .unwrap_or(DEFAULT_ORIGIN_TIMEOUT_MS),
            origin_concurrency: args
                .origin_concurrency
                .or(file.origin_concurrency)
                .unwrap_or(DEFAULT_ORIGIN_CONCURRENCY),
            cpus,
            pin: !(args.no_pin || file.no_pin.unwrap_or(false)),
            max_memory,
            max_key_bytes: args
                .max_key_bytes
                .or(file.max_key_bytes)
                .unwrap_or(DEFAULT_MAX_KEY_BYTES),
            max_value_bytes,
            ttl_jitter: args
                .ttl_jitter
                .or(file.ttl_jitter)
                .unwrap_or(DEFAULT_TTL_JITTER),
            ttl_jitter_max_secs: args
                .ttl_jitter_max
                .or(file.ttl_jitter_max)
                .unwrap_or(DEFAULT_TTL_JITTER_MAX_SECS),
            sweep_interval_ms: args
                .sweep_interval_ms
                .or(file.sweep_interval_ms)
                .unwrap_or(DEFAULT_SWEEP_INTERVAL_MS),
            idle_timeout_secs: args
                .idle_timeout
                .or(file.idle_timeout)
                .unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS),
            header_timeout_secs: args
                .header_timeout
                .or(file.header_timeout)
                .unwrap_or(DEFAULT_HEADER_TIMEOUT_SECS),
            shutdown_grace_secs: args
                .shutdown_grace
                .or(file.shutdown_grace)
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), StartupError> {
        if self.http_port == 0 || self.grpc_port == 0 {
            return Err(invalid("--http-port/--grpc-port", "must be 1-65535"));
        }
        if self.http_port == self.grpc_port {
            return Err(invalid("--grpc-port", "must differ from --http-port"));
        }
        if self.resp_port != 0
            && (self.resp_port == self.http_port || self.resp_port == self.grpc_port)
        {
            return Err(invalid(
                "--resp-port",
                "must differ from --http-port and --grpc-port",
            ));
        }
        if self.node_name.is_empty() || self.node_name.contains('/') {
            return Err(invalid(
                "--node-name",
                "must be non-empty and contain no '/'",
            ));
        }
        if self.vnodes == 0 || self.vnodes > 4096 {
            return Err(invalid("--vnodes", "must be 1 to 4096"));
        }
        if self.lease_ttl_secs < 2 {
            return Err(invalid("--lease-ttl", "must be at least 2 seconds"));
        }
        if self.peer_connect_timeout_ms == 0 || self.peer_timeout_ms == 0 {
            return Err(invalid(
                "--peer-connect-timeout-ms/--peer-timeout-ms",
                "must be at least 1 ms",
            ));
        }
        if self.max_key_bytes == 0 || self.max_key_bytes > 64 * 1024 {
            return Err(invalid("--max-key-bytes", "must be 1 to 65536"));
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > 512 << 20 {
            return Err(invalid("--max-value-bytes", "must be 1 byte to 512MiB"));
        }
        if !(0.0..=1.0).contains(&self.ttl_jitter) {
            return Err(invalid("--ttl-jitter", "must be a fraction from 0 to 1"));
        }
        if self.sweep_interval_ms == 0 {
            return Err(invalid("--sweep-interval-ms", "must be at least 1"));
        }
        if self.idle_timeout_secs == 0 || self.header_timeout_secs == 0 {
            return Err(invalid(
                "--idle-timeout/--header-timeout",
                "must be at least 1 second",
            ));
        }
        if self.hot_max_memory >= self.max_memory {
            return Err(invalid(
                "--hot-max-memory",
                format!(
                    "{} bytes leaves nothing of --max-memory ({} bytes) for the cache itself",
                    self.hot_max_memory, self.max_memory
                ),
            ));
        }
        if self.hot_auto_ttl_ms == 0 {
            return Err(invalid("--hot-auto-ttl-ms", "must be at least 1 ms"));
        }
        if self.origin_ttl_secs > MAX_TTL_SECONDS || self.negative_ttl_secs > MAX_TTL_SECONDS {
            return Err(invalid(
                "--origin-ttl/--negative-ttl",
                format!("must be at most {MAX_TTL_SECONDS} seconds (three days)"),
            ));
        }
        if self.origin_timeout_ms == 0 || self.origin_timeout_ms > 60_000 {
            return Err(invalid("--origin-timeout-ms", "must be 1 to 60000 ms"));
        }
        if self.origin_concurrency == 0 || self.origin_concurrency > 65_536 {
            return Err(invalid("--origin-concurrency", "must be 1 to 65536"));
        }
        self.validate_bounds()?;
        self.validate_protected_mode()?;
        // A shard smaller than the largest entry is allowed (such writes
        // get 413), but a shard that cannot hold anything is a mistake.
        if self.shard_capacity() < MIN_SHARD_BYTES {
            return Err(invalid(
                "--max-memory",
                format!(
                    "{} bytes over {} cores leaves {} bytes per core; give each core at least {} bytes",
                    self.max_memory,
                    self.cores(),
                    self.shard_capacity(),
                    MIN_SHARD_BYTES
                ),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Upper bounds on every duration, size and count, so nothing
    /// overflows an `Instant` or an allocation once the node runs.
    fn validate_bounds(&self) -> Result<(), StartupError> {
        use bounds::*;
        if self.ttl_jitter_max_secs > MAX_TTL_SECONDS {
            return Err(invalid(
                "--ttl-jitter-max",
                format!("must be at most {MAX_TTL_SECONDS} seconds (three days)"),
            ));
        }
        let secs = [
            ("--idle-timeout", self.idle_timeout_secs),
            ("--header-timeout", self.header_timeout_secs),
            ("--shutdown-grace", self.shutdown_grace_secs),
            ("--lease-ttl", self.lease_ttl_secs),
        ];
        for (flag, value) in secs {
            if value > MAX_TIMEOUT_SECS {
                return Err(invalid(
                    flag,
                    format!("{value} s is over the {MAX_TIMEOUT_SECS} s (one day) limit"),
                ));
            }
        }
        let millis = [
            ("--sweep-interval-ms", self.sweep_interval_ms),
            ("--peer-connect-timeout-ms", self.peer_connect_timeout_ms),
            ("--peer-timeout-ms", self.peer_timeout_ms),
            ("--hot-auto-ttl-ms", self.hot_auto_ttl_ms),
        ];
        for (flag, value) in millis {
            if value > MAX_MILLIS {
                return Err(invalid(
                    flag,
                    format!("{value} ms is over the {MAX_MILLIS} ms (one hour) limit"),
                ));
            }
        }
        if self.max_memory > MAX_MEMORY_BYTES {
            return Err(invalid("--max-memory", "must be at most 1TiB"));
        }
        // Each core must be able to hold at least one connection answering
        // the largest value, or such requests would wait forever.
        let one_connection = self.max_unsent_bytes() as u64 + 2 * self.max_value_bytes;
        if self.connection_memory_per_core() < one_connection
            || self.max_connection_memory > MAX_MEMORY_BYTES
        {
            return Err(invalid(
                "--max-connection-memory",
                format!(
                    "must give each of the {} cores at least {} bytes (the unsent-output cap \
                     plus two values), and be at most 1TiB",
                    self.cores(),
                    one_connection
                ),
            ));
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            return Err(invalid(
                "--max-connections",
                format!("must be 1 to {MAX_CONNECTIONS}"),
            ));
        }
        if self.max_connections < self.cores() {
            return Err(invalid(
                "--max-connections",
                format!("must be at least one per core ({})", self.cores()),
            ));
        }
        if self.max_ring_members < 1 || self.max_ring_members > MAX_RING_MEMBERS {
            return Err(invalid(
                "--max-ring-members",
                format!("must be 1 to {MAX_RING_MEMBERS}"),
            ));
        }
        Ok(())
    }

    /// Redis's protected mode: a node that other hosts can reach does not
    /// start open unless the operator says so.
    fn validate_protected_mode(&self) -> Result<(), StartupError> {
        if self.insecure_no_auth || self.bind.is_loopback() {
            return Ok(());
        }
        if !self.credentials.token_required() {
            return Err(StartupError::Config(format!(
                "protected mode: --bind {} is reachable from other hosts and no client token \
                 is set; set --auth-token-file (or --auth-token), or pass --insecure-no-auth \
                 to serve without authentication",
                self.bind
            )));
        }
        let clustered = !self.etcd.is_empty() || !self.peers.trim().is_empty();
        if clustered && !self.credentials.has_cluster_secret() {
            return Err(StartupError::Config(format!(
                "protected mode: --bind {} is reachable from other hosts and this node has \
                 peers but no cluster secret; set --cluster-secret-file (or \
                 --cluster-secret) on every node, or pass --insecure-no-auth",
                self.bind
            )));
        }
        Ok(())
    }
}

/// Unsent response bytes after which an HTTP connection stops answering:
/// two of the largest values, at least 4 MiB.
fn unsent_cap(max_value_bytes: u64) -> u64 {
    max_value_bytes.saturating_mul(2).max(4 << 20)
}

/// A quarter of the cache budget, at least 64 MiB, and always enough for
/// one connection per core to answer the largest value (see
/// `validate_bounds`), so the default never refuses to start.
fn default_connection_memory(max_memory: u64, max_value_bytes: u64, cores: usize) -> u64 {
    let per_core = unsent_cap(max_value_bytes).saturating_add(max_value_bytes.saturating_mul(2));
    (max_memory / 4)
        .max(DEFAULT_MIN_CONNECTION_MEMORY)
        .max(per_core.saturating_mul(cores as u64))
}

fn invalid(field: &str, reason: impl std::fmt::Display) -> StartupError {
    StartupError::Config(format!("{field}: {reason}"))
}

fn load_file(path: &Path) -> Result<FileConfig, StartupError> {
    let text = std::fs::read_to_string(path).map_err(|source| StartupError::ConfigFile {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| StartupError::ConfigParse {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}

/// Parse "1048576", "512KiB", "256MiB", "1GiB", "64KB", "1.5GiB".
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let number: f64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a size (examples: 1048576, 512KiB, 256MiB)"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown size unit '{other}' in '{text}'")),
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(bytes as u64)
}

/// Parse a Linux-style CPU list: "0-3,6,8-9". Result is sorted and unique.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{s}' is not a CPU number"))
        };
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (parse(lo)?, parse(hi)?);
                if lo > hi || hi - lo > 4096 {
                    return Err(format!("bad CPU range '{part}'"));
                }
                cpus.extend(lo..=hi);
            }
            None => cpus.push(parse(part)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12XB").is_err());
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-2,5"), Ok(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpu_list("3,1,1"), Ok(vec![1, 3]));
        assert!(parse_cpu_list("2-1").is_err());
        assert!(parse_cpu_list("a").is_err());
    }

    #[test]
    fn resp_port_defaults_beside_grpc_and_can_be_turned_off() {
        let online = [0, 1];
        let args = ServeArgs {
            http_port: Some(7000),
            ..Default::default()
        };
        let c = Config::resolve(&args, &online).unwrap();
        assert_eq!((c.grpc_port, c.resp_port), (8000, 9000));
        assert_eq!(
            c.resp_addr(),
            Some(SocketAddr::from(([127, 0, 0, 1], 9000)))
        );
        assert!(c.to_toml().contains("resp_port = 9000"));
        let off = ServeArgs {
            resp_port: Some(0),
            ..args.clone()
        };
        let c = Config::resolve(&off, &online).unwrap();
        assert_eq!((c.resp_addr(), c.advertised_resp()), (None, None));
        let clash = ServeArgs {
            resp_port: Some(8000),
            ..args.clone()
        };
        let err = Config::resolve(&clash, &online).unwrap_err().to_string();
        assert!(err.contains("--resp-port"), "{err}");
        let past = ServeArgs {
            http_port: Some(64000),
            grpc_port: Some(1000),
            ..Default::default()
        };
        let err = Config::resolve(&past, &online).unwrap_err().to_string();
        assert!(err.contains("--resp-port"), "{err}");
    }

    #[test]
    fn defaults_and_precedence() {
        let online = [0, 1];
        let c = Config::resolve(&ServeArgs::default(), &online).unwrap();
        assert_eq!(c.http_port, DEFAULT_HTTP_PORT);
        assert_eq!(c.cores(), 2);
        assert_eq!(c.max_memory, DEFAULT_MAX_MEMORY);
        assert_eq!(c.bind, IpAddr::from([127, 0, 0, 1]));

        let dir = std::env::temp_dir().join(format!("nc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "http_port = 7000\nmax_memory = \"64MiB\"\ncores = 1\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        let c = Config::resolve(&args, &online).unwrap();
        assert_eq!((c.http_port, c.max_memory, c.cores()), (7000, 64 << 20, 1));
        args.http_port = Some(7001);
        let c = Config::resolve(&args, &online).unwrap();
        assert_eq!(c.http_port, 7001, "flag beats file");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn invalid_values_name_the_flag() {
        let online = [0];
        let args = ServeArgs {
            max_memory: Some("1KiB".into()),
            ..Default::default()
        };
        let err = Config::resolve(&args, &online).unwrap_err().to_string();
        assert!(err.contains("--max-memory"), "{err}");
        let args = ServeArgs {
            cpuset: Some("7".into()),
            ..Default::default()
        };
        assert!(Config::resolve(&args, &online).is_err());
        let args = ServeArgs {
            ttl_jitter: Some(2.0),
            ..Default::default()
        };
        assert!(Config::resolve(&args, &online).is_err());
    }

    #[test]
    fn every_duration_and_count_has_an_upper_bound() {
        let online = [0];
        let cases: [(&str, ServeArgs); 7] = [
            (
                "--idle-timeout",
                ServeArgs {
                    idle_timeout: Some(u64::MAX),
                    ..Default::default()
                },
            ),
            (
                "--header-timeout",
                ServeArgs {
                    header_timeout: Some(86_401),
                    ..Default::default()
                },
            ),
            (
                "--shutdown-grace",
                ServeArgs {
                    shutdown_grace: Some(u64::MAX),
                    ..Default::default()
                },
            ),
            (
                "--peer-timeout-ms",
                ServeArgs {
                    peer_timeout_ms: Some(u64::MAX),
                    ..Default::default()
                },
            ),
            (
                "--sweep-interval-ms",
                ServeArgs {
                    sweep_interval_ms: Some(u64::MAX),
                    ..Default::default()
                },
            ),
            (
                "--max-connections",
                ServeArgs {
                    max_connections: Some(0),
                    ..Default::default()
                },
            ),
            (
                "--max-ring-members",
                ServeArgs {
                    max_ring_members: Some(1 << 20),
                    ..Default::default()
                },
            ),
        ];
        for (flag, args) in cases {
            let err = Config::resolve(&args, &online).unwrap_err().to_string();
            assert!(err.contains(flag), "{flag}: {err}");
        }
    }

    #[test]
    fn protected_mode_refuses_an_open_node_on_a_shared_network() {
        let online = [0];
        let open = ServeArgs {
            bind: Some(IpAddr::from([10, 0, 0, 1])),
            ..Default::default()
        };
        let err = Config::resolve(&open, &online).unwrap_err().to_string();
        assert!(
            err.contains("--auth-token-file") && err.contains("--insecure-no-auth"),
            "{err}"
        );
        let with_token = ServeArgs {
            auth_token: Some("a-token-of-enough-length".into()),
            ..open.clone()
        };
        Config::resolve(&with_token, &online).expect("a token is enough for one node");
        let clustered = ServeArgs {
            peers: Some("b=10.0.0.2:9999".into()),
            ..with_token.clone()
        };
        let err = Config::resolve(&clustered, &online)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--cluster-secret"), "{err}");
        let insecure = ServeArgs {
            insecure_no_auth: true,
            ..open
        };
        Config::resolve(&insecure, &online).expect("explicitly insecure");
        let loopback = ServeArgs::default();
        assert!(!Config::resolve(&loopback, &online)
            .unwrap()
            .credentials
            .token_required());
    }

    #[test]
    fn print_config_never_prints_a_secret() {
        let args = ServeArgs {
            auth_token: Some("a-token-of-enough-length".into()),
            cluster_secret: Some("a-secret-of-enough-length".into()),
            ..Default::default()
        };
        let text = Config::resolve(&args, &[0]).unwrap().to_toml();
        assert!(!text.contains("enough-length"), "{text}");
        assert!(
            text.starts_with("# a token or cluster secret was given inline"),
            "{text}"
        );
    }
}
