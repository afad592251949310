//! `nexuscache-bench`: the NexusCache load generator.
//!
//! Module map, in the order a request flows:
//! - `cli`       flags -> validated `Config` and the per-thread connection layout
//! - `workload`  which op and key comes next (uniform or Zipf keys, read ratio)
//! - `schedule`  open-loop intended send times; reporting intervals
//! - `keys`      key index -> key name (`<prefix><n>` or a `--key-file` line)
//! - `transport` the engine/protocol seam
//! - `http`      HTTP/1.1 request templates and response decoder (pure)
//! - `grpc`      gRPC unary Get/Set over HTTP/2 (pure), on `h2` framing/HPACK
//! - `engine`    worker threads, epoll loops, connections, coordinator
//! - `clock`     monotonic ns clock and timerfd wake-ups
//! - `stats`     per-worker histograms and counters, merged per interval
//! - `report`    progress lines, final table, JSON and HdrHistogram log

mod cli;
mod clock;
mod engine;
mod grpc;
mod h2;
mod http;
mod keys;
mod report;
mod schedule;
mod stats;
mod transport;
mod workload;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Args, Config, ConfigError, ProtocolKind};
use crate::engine::{EngineError, RunOutcome};
use crate::grpc::GrpcTransport;
use crate::http::HttpTransport;
use crate::report::{HdrLog, Progress, Report, ReportError};

/// Everything that ends the program with a non-zero status.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Report(#[from] ReportError),
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nexuscache-bench: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), BenchError> {
    let cfg = Config::from_args(args)?;
    raise_fd_limit(cfg.connections as u64 + 64);
    let hdr_log = cfg.hdr_log.as_deref().map(HdrLog::create).transpose()?;
    eprintln!("{}", banner(&cfg));
    let names: Vec<String> = cfg.targets.iter().map(|t| t.name.clone()).collect();
    let mut progress = Progress::new(cfg.quiet, cfg.rate.is_some(), hdr_log);
    let outcome: RunOutcome = match cfg.protocol {
        ProtocolKind::Http => {
            let transport = HttpTransport::new(
                cfg.mode,
                &names,
                cfg.auth_token.as_deref(),
                &cfg.key_names,
                cfg.value_size,
            );
            engine::run(&cfg, transport, &mut progress)?
        }
        ProtocolKind::Grpc => {
            let transport = GrpcTransport::new(
                &names,
                cfg.auth_token.as_deref(),
                &cfg.key_names,
                cfg.value_size,
            );
            engine::run(&cfg, transport, &mut progress)?
        }
    };
    let report = Report::new(&cfg, &outcome, std::mem::take(&mut progress.intervals));
    print!("{}", report.to_text());
    if let Some(path) = &cfg.json {
        report.write_json(path)?;
    }
    if let Some(e) = progress.hdr_error.take() {
        return Err(e.into());
    }
    if let Some(log) = progress.hdr_log.take() {
        log.finish()?;
    }
    Ok(())
}

/// Lifts the soft open-files limit towards the hard one when the run
/// needs more descriptors than the soft limit allows (often 1024).
fn raise_fd_limit(needed: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= needed {
            return;
        }
        lim.rlim_cur = needed.min(lim.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur < needed {
            eprintln!(
                "nexuscache-bench: warning: open-files limit {} is below the {needed} this run needs (raise `ulimit -n`)",
                lim.rlim_cur
            );
        }
    }
}

fn banner(cfg: &Config) -> String {
    let targets: Vec<&str> = cfg.targets.iter().map(|t| t.name.as_str()).collect();
    let load = match cfg.rate {
        Some(r) => format!("open loop at {r} req/s"),
        None => "closed loop".to_string(),
    };
    let (protocol, depth) = match cfg.protocol {
        ProtocolKind::Http => (
            format!(
                "http/{}",
                match cfg.mode {
                    http::ApiMode::Api => "api",
                    http::ApiMode::V1 => "v1",
                }
            ),
            format!("pipeline {}", cfg.pipeline),
        ),
        ProtocolKind::Grpc => (
            "grpc".to_string(),
            format!(
                "up to {} streams per connection",
                cfg.concurrency.div_ceil(cfg.connections)
            ),
        ),
    };
    let source = match &cfg.key_file {
        Some(path) => format!("from {}", path.display()),
        None => format!("prefix {:?}", cfg.key_prefix),
    };
    // Whether a token is sent, never the token itself.
    let protocol = match cfg.auth_token {
        Some(_) => format!("{protocol} (bearer token)"),
        None => protocol,
    };
    format!(
        "nexuscache-bench: {protocol} -> {} | {} threads, {} connections, {} in flight ({depth}) | {load} | \
         {} keys {}, {source}, read ratio {}, value {} B | warmup {:?}, duration {:?} | seed {}",
        targets.join(","),
        cfg.threads,
        cfg.connections,
        cfg.concurrency,
        cfg.keys,
        cfg.distribution,
        cfg.read_ratio,
        cfg.value_size,
        cfg.warmup,
        cfg.duration,
        cfg.seed,
    )
}
