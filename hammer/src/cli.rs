//! hammer's command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::Parser;
use clap::Subcommand;
use clap::ValueEnum;
use raftkv_client::parse_duration;
use raftkv_files::cli::TlsArgs;

/// Load a raftkv cluster: throughput, latency, errors and the cost of failovers.
#[derive(Debug, Parser)]
#[command(
    name = "hammer",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  \
        hammer --endpoints 127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053 --duration 30s\n  \
        hammer --endpoints multi:///127.0.0.1:50051 --clients 64 --read-ratio 0.5 --verify --plot run.svg"
)]
pub struct Cli {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands besides the default load run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that a --history file is linearizable (exit 0 only if it is).
    Check {
        /// The history file (JSON lines) written by `hammer --history`.
        file: PathBuf,
        /// Give up (verdict "unknown") after this long.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        time_limit: Duration,
        /// Give up (verdict "unknown") after visiting this many search states.
        #[arg(long, default_value_t = 10_000_000)]
        state_limit: u64,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the text report of a run from the JSON report it wrote (--json).
    Report {
        /// The JSON report (`hammer --json > report.json`).
        file: PathBuf,
    },
    /// Serve etcd's KV.Put and KV.Range, answering at once and storing
    /// nothing: `hammer --target etcd` against it measures the gRPC ceiling
    /// (the client and one gRPC hop). Prints the bound address on stdout;
    /// stops on SIGINT or SIGTERM.
    NoopServer {
        /// Address to listen on (port 0: any free port, printed on stdout).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

/// What a load run does.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The cluster's nodes (host:port,host:port,… or multi:///…).
    #[arg(
        long,
        default_value = "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053"
    )]
    pub endpoints: String,

    /// Concurrent clients.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub clients: u64,

    /// How long to run (e.g. 30s, 2m); ignored when --ops is given.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Stop after this many operations in total instead of after --duration.
    #[arg(long)]
    pub ops: Option<u64>,

    /// Size of the key space.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,

    /// Bytes per written value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,

    /// Fraction of operations that are linearizable reads (0..1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub read_ratio: f64,

    /// Fraction of operations that are compare-and-swaps (0..1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub cas_ratio: f64,

    /// Send each compare-and-swap as a transaction (KV/Txn: one comparison on
    /// the key, a put if it holds, a get if not). The history records it as
    /// the compare-and-swap it is, so `hammer check` covers transactions.
    #[arg(long)]
    pub cas_as_txn: bool,

    /// Hold this many leases alive through the run, one key on each,
    /// renewed every third of --lease-ttl through leader changes; the
    /// report counts leases that ended without hammer asking (raftkv only).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub leases: u64,

    /// TTL of the --leases leases (whole seconds, at least 1s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub lease_ttl: Duration,

    /// Open loop: start this many operations per second in total, on
    /// schedule, and measure latency from the scheduled time. Without it each
    /// client starts its next operation when the previous one ends.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Deadline of one call; an operation retries what is safe to retry
    /// until this runs out.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Prefix of every key hammer writes.
    #[arg(long, default_value = "hammer/")]
    pub key_prefix: String,

    /// What to load: a raftkv cluster, or etcd (v3 KV over gRPC) to compare with.
    #[arg(long, value_enum, default_value_t = Target::Raftkv)]
    pub target: Target,

    /// Seed of the workload's choices (keys, operations), so a run's choices
    /// can be repeated; default: from the clock. The report states the seed used.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// At the end, read back every key and count acknowledged writes that were lost.
    #[arg(long)]
    pub verify: bool,

    /// Record every operation as a JSON line in FILE (for `hammer check`).
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,

    /// Draw throughput and p99 latency over time into FILE.svg.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// Print the report as one JSON document.
    #[arg(long)]
    pub json: bool,

    /// Windows without a successful write at least this long are listed as
    /// write gaps; the start of the run to the first write and the last
    /// write to the end of the run count too.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub gap_threshold: Duration,

    /// Exit 0 even if the run ended in an outage (the report still says so).
    /// A run ends in an outage when its last --gap-threshold or more saw no
    /// successful write while operations failed or were retried. A run in
    /// which no operation succeeded at all still fails.
    #[arg(long)]
    pub allow_outage: bool,
}

/// The kind of system `--target` loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// A raftkv cluster: calls go to the leader and follow it.
    Raftkv,
    /// etcd's v3 KV API (or `hammer noop-server`); no compare-and-swap.
    Etcd,
}

/// A number between 0 and 1, for the `--…-ratio` flags.
fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("{value} is not between 0 and 1"));
    }
    Ok(value)
}
