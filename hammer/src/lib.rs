//! hammer: a load generator for raftkv that measures throughput, latency and
//! the cost of failures.
//!
//! Clients send every operation straight to the leader, follow leader
//! changes, and retry only what is safe to retry: reads, and writes rejected
//! before they were proposed. A write whose outcome is unknown (a timeout, a
//! connection lost after sending, a leader change after proposing) is
//! recorded as unknown and the client moves on with a fresh value.

// The modules, in the order a load run uses them; a blank line between
// each keeps rustfmt from sorting them.
/// The flags.
mod cli;

/// One run from start to finish, and its verdict.
mod load;

/// What each client asks for next (seeded).
mod workload;

/// One client's loop, and how a finished operation is recorded.
mod client;

/// The system under load, raftkv or etcd, behind one `execute`.
mod target;

/// Operations against raftkv, through raftkv-client.
mod raftkv;

/// Operations against etcd, to compare with.
mod etcd;

/// Operations and their outcomes.
mod op;

/// What a run measured, and the report.
pub mod stats;

/// The progress line on a terminal.
mod progress;

/// `--leases`: leases held through the run.
mod leases;

/// `--verify`: lost acknowledged writes.
pub mod verify;

/// `--history`: every operation, for `hammer check`.
pub mod history;

/// `--plot`'s SVG.
mod plot;

/// `hammer check`: is a history linearizable.
pub mod check;

/// `hammer noop-server`: the gRPC ceiling.
mod noop_server;

use std::process::ExitCode;

pub use cli::Cli;
pub use cli::RunArgs;
pub use cli::Target;
pub use load::load;

/// Runs hammer as `cli` says; the exit code says whether the run (or the
/// checked history) was sound.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => load::run(&cli.run).await,
        Some(cli::Command::Report { file }) => {
            print!("{}", stats::Report::read(&file)?.render());
            Ok(ExitCode::SUCCESS)
        }
        Some(cli::Command::Check {
            file,
            time_limit,
            state_limit,
            json,
        }) => {
            let limits = check::Limits {
                time: time_limit,
                states: state_limit,
            };
            check::run(&file, limits, json)
        }
        Some(cli::Command::NoopServer { listen }) => {
            noop_server::run(listen).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
