//! One client's loop: take the next operation from its workload, wait for
//! its slot (open loop, `--rate`) or go at once (closed loop), run it against
//! the target, and record how it ended in the statistics, the `--verify`
//! tracker and the `--history`.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use crate::cli::RunArgs;
use crate::history::Event;
use crate::op::Op;
use crate::op::Outcome;
use crate::op::Reply;
use crate::stats::Recorder;
use crate::target::SystemUnderLoad;
use crate::verify::Tracker;
use crate::workload::Workload;

/// What every client of a run shares.
pub(crate) struct Shared {
    pub args: RunArgs,
    pub target: SystemUnderLoad,
    /// Statistics, behind one lock (see [`Recorder`]).
    pub recorder: Mutex<Recorder>,
    /// `--verify`: the writes that may be each key's last.
    pub tracker: Option<Tracker>,
    /// `--history`: where finished operations go to be written.
    pub history: Option<UnboundedSender<Event>>,
    /// Every time in the report counts from here.
    pub start: Instant,
    /// When a timed run (no `--ops`) stops starting operations.
    pub end: Instant,
    /// Operations started, against `--ops`.
    pub started: AtomicU64,
}

impl Shared {
    /// The statistics; a client that panicked while holding them left
    /// nothing half-done that matters, so a poisoned lock is used as is.
    pub fn recorder(&self) -> MutexGuard<'_, Recorder> {
        self.recorder.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Client `id`: picks, schedules and runs operations until the run ends.
pub(crate) async fn run(shared: Arc<Shared>, id: u64, mut workload: Workload) {
    let args = &shared.args;
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.clients as f64 / rate));
    // Open loop: clients start evenly spread over one interval.
    let mut next_at = shared.start
        + interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(id as f64 / args.clients as f64)
        });
    let op_budget = args.timeout * 5;
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
        let planned = workload.next();

        let invoke = Instant::now();
        // A timed run ends on time: an operation still retrying at the end
        // gets one more call timeout, not its whole budget.
        let deadline = match args.ops {
            None => (invoke + op_budget).min(shared.end + args.timeout),
            Some(_) => invoke + op_budget,
        };
        let outcome = shared
            .target
            .execute(id, &planned.op, deadline, |kind| {
                shared.recorder().retry(kind, shared.start.elapsed())
            })
            .await;
        let complete = Instant::now();
        shared.record(&Finished {
            client: id,
            op: &planned.op,
            tag: &planned.tag,
            outcome: &outcome,
            scheduled,
            invoke,
            complete,
        });
        workload.observe(&planned.op, &outcome);
    }
}

/// One finished operation, as [`Shared::record`] files it.
struct Finished<'a> {
    client: u64,
    op: &'a Op,
    /// The tag its value starts with (see [`crate::workload`]).
    tag: &'a str,
    outcome: &'a Outcome,
    /// When it was due: its latency counts from here, so an open-loop run
    /// charges the wait of an operation that started late.
    scheduled: Instant,
    /// When it was sent (first attempt).
    invoke: Instant,
    /// When its outcome was known (or the client gave up).
    complete: Instant,
}

impl Shared {
    /// Records one finished operation in the statistics, the verify tracker
    /// and the history.
    fn record(&self, done: &Finished) {
        let since_start = |t: Instant| t.saturating_duration_since(self.start);
        let wrote = matches!(
            (done.op, done.outcome),
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
            let mut recorder = self.recorder();
            let at = since_start(done.complete);
            match done.outcome {
                Outcome::Ok(_) => {
                    recorder.success(done.op.kind(), wrote, done.complete - done.scheduled, at)
                }
                Outcome::Fail(kind) => recorder.failure(kind, false, at),
                Outcome::Unknown(kind) => recorder.failure(kind, true, at),
            }
        }
        if let Some(tracker) = &self.tracker {
            let invoke_us = since_start(done.invoke).as_micros() as u64;
            match done.outcome {
                _ if wrote => tracker.acknowledged(
                    done.op.key(),
                    done.tag.to_string(),
                    invoke_us,
                    since_start(done.complete).as_micros() as u64,
                ),
                Outcome::Unknown(_) if done.op.is_write() => {
                    tracker.unknown(done.op.key(), done.tag.to_string(), invoke_us)
                }
                _ => {}
            }
        }
        if let Some(history) = &self.history {
            let event = Event::of(
                done.client,
                done.op,
                done.outcome,
                since_start(done.invoke).as_nanos() as u64,
                since_start(done.complete).as_nanos() as u64,
            );
            // A send fails only if the writer stopped on an I/O error,
            // which `HistoryWriter::finish` reports.
            let _ = history.send(event);
        }
    }
}
