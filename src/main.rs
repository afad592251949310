//! The `nexuscache` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nexuscache::config::{Config, ServeArgs};

#[derive(Debug, Parser)]
#[command(
    name = "nexuscache",
    version,
    about = "A thread-per-core distributed in-memory cache"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a cache node (HTTP API on --http-port, one pinned executor per core).
    Serve(ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Before any other thread starts: a panic anywhere ends the process.
    nexuscache::runtime::lifecycle::install_crash_stop();

    match cli.command {
        Command::Serve(args) => {
            let online: Vec<usize> = core_affinity::get_core_ids()
                .map(|ids| ids.into_iter().map(|c| c.id).collect())
                .unwrap_or_else(|| {
                    (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
                });
            let config = match Config::resolve(&args, &online) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            if args.print_config {
                print!("{}", config.to_toml());
                return ExitCode::SUCCESS;
            }
            match nexuscache::runtime::serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
    }
}

fn fail(err: impl std::fmt::Display) -> ExitCode {
    eprintln!("nexuscache: {err}");
    ExitCode::FAILURE
}
