//! `hammer`: load a raftkv cluster and report what it did and what failures cost.

use clap::Parser;
use hammer::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match hammer::run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
