//! A load run from start to finish: check the flags, connect to the target,
//! start the clients (and the progress line), then build the report: leader
//! changes, `--verify`'s read-back, the `--history` file, the `--plot`; and
//! finally judge whether the run was sound.

use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;

use crate::cli::RunArgs;
use crate::client;
use crate::client::Shared;
use crate::history::HistoryWriter;
use crate::leases;
use crate::plot;
use crate::progress::Progress;
use crate::stats::Recorder;
use crate::stats::Report;
use crate::target::SystemUnderLoad;
use crate::verify;
use crate::verify::Tracker;
use crate::workload;
use crate::workload::Workload;

/// `hammer [flags]`: the report on stdout (text or JSON), the verdict as exit code.
pub(crate) async fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let report = load(args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(verdict(&report, args))
}

/// Runs the load and builds the report.
pub async fn load(args: &RunArgs) -> anyhow::Result<Report> {
    let endpoints = raftkv_client::parse_endpoints(&args.endpoints)?;
    check_flags(args)?;
    let target = SystemUnderLoad::connect(args, &endpoints).await?;
    let history = args
        .history
        .as_deref()
        .map(HistoryWriter::create)
        .transpose()?;
    let seed = args.seed.unwrap_or_else(workload::seed_from_clock);
    let held = if args.leases > 0 {
        Some(leases::hold(args, &endpoints).await?)
    } else {
        None
    };
    let start = Instant::now();
    let shared = Arc::new(Shared {
        args: args.clone(),
        target,
        recorder: Mutex::new(Recorder::default()),
        tracker: args.verify.then(Tracker::default),
        history: history.as_ref().map(HistoryWriter::sender),
        start,
        end: start + args.duration,
        started: AtomicU64::new(0),
    });
    let progress = Progress::start(&shared);
    let clients: Vec<_> = workload::client_seeds(seed, args.clients)
        .into_iter()
        .zip(0..)
        .map(|(client_seed, id)| {
            let workload = Workload::new(args, id, client_seed);
            tokio::spawn(client::run(shared.clone(), id, workload))
        })
        .collect();
    for client in clients {
        client.await?;
    }
    let elapsed = start.elapsed();
    if let Some(progress) = progress {
        progress.stop();
    }
    let mut report = shared
        .recorder()
        .report(elapsed, args.gap_threshold, args.read_ratio < 1.0);
    report.seed = Some(seed);
    report.leader_changes = shared.target.leader_changes(start);
    if let Some(held) = held {
        report.leases = Some(held.finish().await?);
    }
    if let Some(tracker) = &shared.tracker {
        if report.ended_in_outage {
            // Reading every key back would wait out each read's deadline.
            report.verify_skipped =
                Some("the run ended in an outage, so the written keys cannot be read back".into());
        } else {
            report.verify = Some(verify::read_back(&shared.target, tracker).await);
        }
    }
    // The clients' history senders go with it: the writer can finish.
    drop(shared);
    if let Some(history) = history {
        history.finish().await?;
    }
    if let Some(file) = &args.plot {
        plot::write_svg(&report, file, &plot_title(&report, args))?;
    }
    Ok(report)
}

/// Refuses flag values that cannot make a run.
fn check_flags(args: &RunArgs) -> anyhow::Result<()> {
    if args.read_ratio + args.cas_ratio > 1.0 {
        anyhow::bail!("--read-ratio plus --cas-ratio must not exceed 1");
    }
    if args.leases > 0 {
        if args.target != crate::cli::Target::Raftkv {
            anyhow::bail!("--leases needs --target raftkv");
        }
        if raftkv_client::lease::ttl_seconds(args.lease_ttl).is_none() {
            anyhow::bail!(
                "--lease-ttl must be whole seconds, at least 1s (got {:?})",
                args.lease_ttl
            );
        }
    }
    if let Some(rate) = args.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            anyhow::bail!("--rate must be a positive number of operations per second");
        }
    }
    if let Some(plot) = &args.plot {
        if plot.extension().and_then(|e| e.to_str()) != Some("svg") {
            anyhow::bail!(
                "--plot writes SVG: name the file something.svg (got {})",
                plot.display()
            );
        }
    }
    Ok(())
}

/// The plot's title: the run's shape and what it cost.
fn plot_title(report: &Report, args: &RunArgs) -> String {
    let mut title = format!(
        "hammer: {} clients, {:.0} ops/s",
        args.clients, report.throughput
    );
    if let Some(longest) = report.longest_write_gap_ms {
        title += &format!(", longest write gap {longest:.0} ms");
    }
    if report.ended_in_outage {
        title += ", ENDED IN AN OUTAGE";
    }
    title
}

/// Whether a finished run was sound, with the reason on stderr if not.
fn verdict(report: &Report, args: &RunArgs) -> ExitCode {
    let mut sound = true;
    let lost = report
        .verify
        .as_ref()
        .map_or(0, |v| v.lost_acknowledged_writes);
    if lost > 0 {
        eprintln!("error: {lost} acknowledged writes were lost");
        sound = false;
    }
    if let Some(leases) = &report.leases {
        if leases.unexpected_expiries > 0 || leases.keys_left_after_revoke > 0 {
            eprintln!(
                "error: {} leases ended unexpectedly, {} keys outlived their revoked lease",
                leases.unexpected_expiries, leases.keys_left_after_revoke
            );
            sound = false;
        }
    }
    if report.operations == 0 {
        eprintln!("error: no operation succeeded");
        sound = false;
    }
    if let Some(outage) = report.outage_summary() {
        if args.allow_outage {
            eprintln!("warning: the run ended in an outage: {outage}");
        } else {
            eprintln!("error: the run ended in an outage: {outage} (--allow-outage accepts this)");
            sound = false;
        }
    }
    if sound {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
