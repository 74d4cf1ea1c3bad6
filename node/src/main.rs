//! `raftkv-node`: parse flags, start logging, bind the listener, run the node
//! until SIGINT or SIGTERM. `raftkv-node restore …` makes a data directory
//! from a backup instead.

use anyhow::Context;
use clap::Parser;
use raftkv_node::cluster::restore::RestoreArgs;
use raftkv_node::NodeConfig;

fn main() -> anyhow::Result<()> {
    // Before the runtime starts its threads: see `allocator`.
    let allocator_set = raftkv_node::server::allocator::return_large_blocks_to_the_system();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(allocator_set))
}

async fn run(allocator_set: bool) -> anyhow::Result<()> {
    // `restore` is a step before a node runs, not a mode of it: it has its
    // own flags, and the node's required ones do not apply.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|arg| arg == "restore") {
        args.remove(1);
        let restore = RestoreArgs::parse_from(args);
        init_logging();
        if let Err(e) = restore_backup(&restore).await {
            // One clear line, as raft-admin prints its errors.
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
    let config = NodeConfig::parse_from(args);
    init_logging();
    if !allocator_set {
        tracing::warn!(
            "the C library refused an allocator setting; memory may stay high after load"
        );
    }
    run_node(config).await
}

/// Logs go to stderr, filtered by `RUST_LOG` in the `target=level,…` form
/// (a bare level sets the default). The filter is `Targets`, not `EnvFilter`:
/// the latter's regular-expression engine costs the device build about
/// 300 KiB, and per-span field filters are not needed here.
fn init_logging() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    const DEFAULT: &str = "info,openraft=warn,sled=warn";
    let default = || {
        DEFAULT
            .parse::<Targets>()
            .expect("the default filter parses")
    };
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match spec.parse::<Targets>() {
            Ok(filter) => (filter, None),
            Err(e) => (default(), Some((spec, e))),
        },
        _ => (default(), None),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
    if let Some((spec, e)) = bad {
        tracing::warn!(rust_log = %spec, error = %e, "RUST_LOG is not a valid filter; using {DEFAULT}");
    }
}

/// `raftkv-node restore`.
async fn restore_backup(args: &RestoreArgs) -> anyhow::Result<()> {
    let restored = raftkv_node::cluster::restore::restore(args)
        .await
        .context("restore failed; nothing was created")?;
    println!(
        "restored {} keys (index {}, term {}) into {}: a new cluster whose only voter is node {} at {}",
        restored.key_count,
        restored.index,
        restored.term,
        restored.data_dir.display(),
        args.id,
        args.advertise
    );
    println!(
        "start it with: raftkv-node --id {} --advertise {} --data-dir {} (and --listen)",
        args.id,
        args.advertise,
        restored.data_dir.display()
    );
    Ok(())
}

async fn run_node(config: NodeConfig) -> anyhow::Result<()> {
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
    let shutdown = shutdown_signal()?;
    // Scripts and tests read the bound address from this line.
    println!(
        "raftkv-node {} listening on {}",
        config.id,
        listener.local_addr()?
    );
    raftkv_node::server::disk_full::run_through_full_disks(listener, metrics, config, shutdown)
        .await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a signal that arrives as soon
/// as the node has printed its address (scripts and tests stop nodes that
/// fast) must stop it cleanly, not kill it.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::signal;
    use tokio::signal::unix::SignalKind;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
