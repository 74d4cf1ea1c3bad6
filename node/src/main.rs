//! `raftkv-node`: parse flags, start logging, bind the listener, run the node
//! until SIGINT or SIGTERM.

use anyhow::Context;
use clap::Parser;
use raftkv_node::NodeConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = NodeConfig::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn,sled=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    raftkv_node::allocator::return_large_blocks_to_the_system();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let metrics = match config.metrics_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for metrics on {address}"))?;
            // Before the line below, which scripts and tests wait for.
            println!(
                "raftkv-node {} serving metrics on {}",
                config.id,
                listener.local_addr()?
            );
            Some(listener)
        }
        None => None,
    };
    // Scripts and tests read the bound address from this line.
    println!(
        "raftkv-node {} listening on {}",
        config.id,
        listener.local_addr()?
    );
    raftkv_node::run(listener, metrics, config, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(cause = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(cause = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
