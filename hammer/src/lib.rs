//! hammer: a load generator for raftkv that measures throughput, latency and
//! the cost of failures.
//!
//! Clients send every operation straight to the leader, follow leader
//! changes, and retry only what is safe to retry: reads, and writes rejected
//! before they were proposed. A write whose outcome is unknown (a timeout, a
//! connection lost after sending, a leader change after proposing) is
//! recorded as unknown and the client moves on with a fresh value.

pub mod check;
mod cli;
mod etcd;
pub mod history;
mod noop_server;
mod op;
mod plot;
mod raftkv;
pub mod stats;
pub mod verify;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

pub use cli::Cli;
pub use cli::RunArgs;
pub use cli::Target;
use history::Event;
use history::HistoryWriter;
use op::Op;
use op::Outcome;
use op::Reply;
use raftkv::Cluster;
use stats::Recorder;
use stats::Report;
use stats::VerifyReport;
use tokio::sync::mpsc::UnboundedSender;
use verify::Tracker;

/// Runs hammer; the exit code says whether the run was sound.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(cli::Command::Check {
            file,
            time_limit,
            state_limit,
            json,
        }) => check::run(
            &file,
            check::Limits {
                time: time_limit,
                states: state_limit,
            },
            json,
        ),
        Some(cli::Command::Report { file }) => {
            print!("{}", Report::read(&file)?.render());
            Ok(ExitCode::SUCCESS)
        }
        Some(cli::Command::NoopServer { listen }) => {
            run_noop_server(listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        None => run_load(&cli.run).await,
    }
}

/// `hammer noop-server`: binds `listen`, prints the bound address (the one
/// line on stdout, for scripts), serves until SIGINT or SIGTERM.
async fn run_noop_server(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    println!("{}", listener.local_addr()?);
    // Scripts read the address while the server runs: it must not wait in a buffer.
    std::io::stdout().flush()?;
    noop_server::serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("warning: cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::signal;
        use tokio::signal::unix::SignalKind;
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(e) => {
                eprintln!("warning: cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// A load run: the report on stdout (text or JSON), the verdict as exit code.
async fn run_load(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let report = load(args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(verdict(&report, args))
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

/// The system under load.
enum SystemUnderLoad {
    Raftkv(Box<Cluster>),
    Etcd(etcd::Etcd),
}

impl SystemUnderLoad {
    async fn execute(
        &self,
        client: u64,
        op: &Op,
        deadline: Instant,
        on_retry: impl FnMut(&'static str),
    ) -> Outcome {
        match self {
            SystemUnderLoad::Raftkv(cluster) => cluster.execute(op, deadline, on_retry).await,
            SystemUnderLoad::Etcd(etcd) => etcd.execute(client, op, deadline, on_retry).await,
        }
    }
}

/// What every client shares.
struct Shared {
    args: RunArgs,
    target: SystemUnderLoad,
    recorder: Mutex<Recorder>,
    tracker: Option<Tracker>,
    history: Option<UnboundedSender<Event>>,
    start: Instant,
    end: Instant,
    /// Operations started, against `--ops`.
    started: AtomicU64,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the load and builds the report.
pub async fn load(args: &RunArgs) -> anyhow::Result<Report> {
    let endpoints = raftkv_client::parse_endpoints(&args.endpoints)?;
    if args.read_ratio + args.cas_ratio > 1.0 {
        anyhow::bail!("--read-ratio plus --cas-ratio must not exceed 1");
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
    let target = if args.target == Target::Etcd {
        if args.cas_ratio > 0.0 {
            anyhow::bail!("--cas-ratio is not supported with --target etcd");
        }
        let etcd = etcd::Etcd::new(&endpoints, args.timeout)?;
        if !etcd.reachable().await {
            anyhow::bail!("no etcd member answers at {}", endpoints.join(","));
        }
        SystemUnderLoad::Etcd(etcd)
    } else {
        let cluster = Cluster::new(endpoints.clone(), args.timeout)?;
        // No leader is an outage to measure, not a reason to stop: the run
        // goes on and the report shows how long writes waited for one.
        if cluster.leader().await.is_none() {
            eprintln!(
                "warning: no leader found among {} (is the cluster up?); \
                 running anyway, the wait for one counts as a write gap",
                endpoints.join(",")
            );
        }
        SystemUnderLoad::Raftkv(Box::new(cluster))
    };
    let history = args
        .history
        .as_deref()
        .map(HistoryWriter::create)
        .transpose()?;
    let seed = args.seed.unwrap_or_else(seed_from_clock);
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
    let progress = (std::io::stdout().is_terminal() && !args.json)
        .then(|| tokio::spawn(show_progress(shared.clone())));
    // One seed per client, drawn in client order from the run's seed.
    let mut seeds = fastrand::Rng::with_seed(seed);
    let clients: Vec<_> = (0..args.clients)
        .map(|id| tokio::spawn(client(shared.clone(), id, seeds.u64(..))))
        .collect();
    for client in clients {
        client.await?;
    }
    let elapsed = start.elapsed();
    if let Some(progress) = progress {
        progress.abort();
        eprint!("\r{:80}\r", "");
    }
    let mut report = shared
        .recorder
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .report(elapsed, args.gap_threshold, args.read_ratio < 1.0);
    report.seed = Some(seed);
    if let SystemUnderLoad::Raftkv(cluster) = &shared.target {
        report.leader_changes = Some(cluster.leader_changes(start));
    }
    if let Some(tracker) = &shared.tracker {
        if report.ended_in_outage {
            // Reading every key back would wait out each read's deadline.
            report.verify_skipped =
                Some("the run ended in an outage, so the written keys cannot be read back".into());
        } else {
            report.verify = Some(verify_all(&shared, tracker).await);
        }
    }
    drop(shared);
    if let Some(history) = history {
        history.finish().await?;
    }
    if let Some(plot) = &args.plot {
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
        plot::write_svg(&report, plot, &title)?;
    }
    Ok(report)
}

/// One line, rewritten each second: ops/s, p99, errors.
async fn show_progress(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let now = shared.start.elapsed();
        let (total, rate, p99, errors) = shared
            .recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .progress(now);
        eprint!(
            "\r[{:>4}s] {total} ops, {rate} ops/s, p99 {p99:.2} ms, errors {errors}   ",
            now.as_secs()
        );
        let _ = std::io::stderr().flush();
    }
}

/// One client: picks, schedules and runs operations until the run ends.
async fn client(shared: Arc<Shared>, id: u64, seed: u64) {
    let args = &shared.args;
    let mut rng = fastrand::Rng::with_seed(seed);
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.clients as f64 / rate));
    // Open loop: clients start evenly spread over one interval.
    let mut next_at = shared.start
        + interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(id as f64 / args.clients as f64)
        });
    // What this client last saw per key, to aim its compare-and-swaps.
    let mut last_seen: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    let op_budget = args.timeout * 5;
    let mut sequence = 0u64;
    loop {
        let scheduled = match interval {
            Some(interval) => {
                tokio::time::sleep_until(next_at.into()).await;
                let at = next_at;
                next_at += interval;
                at
            }
            None => Instant::now(),
        };
        if args.ops.is_none() && Instant::now() >= shared.end {
            break;
        }
        if let Some(limit) = args.ops {
            if shared.started.fetch_add(1, Ordering::Relaxed) >= limit {
                break;
            }
        }
        sequence += 1;
        let key = format!("{}{:08}", args.key_prefix, rng.u64(..args.keys)).into_bytes();
        let tag = format!("{id}-{sequence}");
        let mut value = format!("{tag}:").into_bytes();
        value.resize(args.value_size.max(value.len()), b'x');
        let roll = rng.f64();
        let op = if roll < args.read_ratio {
            Op::Get { key }
        } else if roll < args.read_ratio + args.cas_ratio {
            let expected = last_seen.get(&key).cloned().flatten();
            Op::Cas {
                key,
                expected,
                new_value: value,
            }
        } else {
            Op::Put { key, value }
        };

        let invoke = Instant::now();
        // A timed run ends on time: an operation still retrying at the end
        // gets one more call timeout, not its whole budget.
        let deadline = match args.ops {
            None => (invoke + op_budget).min(shared.end + args.timeout),
            Some(_) => invoke + op_budget,
        };
        let outcome = shared
            .target
            .execute(id, &op, deadline, |kind| {
                shared
                    .recorder
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retry(kind, shared.start.elapsed())
            })
            .await;
        let complete = Instant::now();
        record(
            &shared, id, &op, &tag, &outcome, scheduled, invoke, complete,
        );
        match (&op, &outcome) {
            (Op::Get { key }, Outcome::Ok(Reply::Read(found))) => {
                last_seen.insert(key.clone(), found.clone());
            }
            (Op::Put { key, value }, Outcome::Ok(_)) => {
                last_seen.insert(key.clone(), Some(value.clone()));
            }
            (
                Op::Cas { key, new_value, .. },
                Outcome::Ok(Reply::Swapped { succeeded, current }),
            ) => {
                last_seen.insert(
                    key.clone(),
                    if *succeeded {
                        Some(new_value.clone())
                    } else {
                        current.clone()
                    },
                );
            }
            (op, Outcome::Unknown(_)) => {
                last_seen.remove(op.key());
            }
            _ => {}
        }
    }
}

/// A seed for a run without `--seed`: from the clock, so runs differ.
fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// Records one finished operation in the statistics, the verify tracker and the history.
#[allow(clippy::too_many_arguments)]
fn record(
    shared: &Shared,
    client: u64,
    op: &Op,
    tag: &str,
    outcome: &Outcome,
    scheduled: Instant,
    invoke: Instant,
    complete: Instant,
) {
    let since_start = |t: Instant| t.saturating_duration_since(shared.start);
    let wrote = matches!(
        (op, outcome),
        (Op::Put { .. }, Outcome::Ok(_))
            | (
                Op::Cas { .. },
                Outcome::Ok(Reply::Swapped {
                    succeeded: true,
                    ..
                })
            )
    );
    {
        let mut recorder = shared.recorder.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Outcome::Ok(_) => recorder.success(
                op.kind(),
                wrote,
                complete - scheduled,
                since_start(complete),
            ),
            Outcome::Fail(kind) => recorder.failure(kind, false, since_start(complete)),
            Outcome::Unknown(kind) => recorder.failure(kind, true, since_start(complete)),
        }
    }
    if let Some(tracker) = &shared.tracker {
        let invoke_us = since_start(invoke).as_micros() as u64;
        match outcome {
            _ if wrote => tracker.acknowledged(
                op.key(),
                tag.to_string(),
                invoke_us,
                since_start(complete).as_micros() as u64,
            ),
            Outcome::Unknown(_) if op.is_write() => {
                tracker.unknown(op.key(), tag.to_string(), invoke_us)
            }
            _ => {}
        }
    }
    if let Some(history) = &shared.history {
        let event = Event::of(
            client,
            op,
            outcome,
            since_start(invoke).as_nanos() as u64,
            since_start(complete).as_nanos() as u64,
        );
        let _ = history.send(event);
    }
}

/// Reads back every written key (linearizable reads) and checks it.
async fn verify_all(shared: &Shared, tracker: &Tracker) -> VerifyReport {
    let keys = tracker.keys();
    let mut lost = 0;
    let mut examples = Vec::new();
    for key in &keys {
        let op = Op::Get { key: key.clone() };
        let outcome = shared
            .target
            .execute(0, &op, Instant::now() + Duration::from_secs(30), |_| {})
            .await;
        let problem = match outcome {
            Outcome::Ok(Reply::Read(stored)) => tracker.check(key, stored.as_deref()).err(),
            other => Some(format!("{}: could not be read back ({other:?})", text(key))),
        };
        if let Some(problem) = problem {
            lost += 1;
            if examples.len() < 10 {
                examples.push(problem);
            }
        }
    }
    VerifyReport {
        keys_checked: keys.len() as u64,
        lost_acknowledged_writes: lost,
        examples,
    }
}
