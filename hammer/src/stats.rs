//! What a run measured: latency histograms per operation kind, a per-second
//! timeline, errors and retries by kind, the leaders that served it, and the
//! windows without a successful write (the measured cost of a failover, a
//! transfer or an outage).
//!
//! Write gaps cover the whole run: the time from the start to the first
//! successful write and from the last one to the end count as gaps too, so a
//! cluster that never took a write, or stopped taking them, cannot look
//! healthy.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Deserialize;
use serde::Serialize;

/// Highest latency tracked exactly, in microseconds (longer ones are clamped).
const MAX_LATENCY_US: u64 = 120_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// One second of the run.
pub struct Second {
    pub ops: u64,
    pub writes: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
}

/// Everything recorded during a run (behind one lock: at tens of thousands of
/// operations per second an uncontended mutex costs nothing that shows).
#[derive(Default)]
pub struct Recorder {
    by_kind: BTreeMap<&'static str, (u64, Histogram<u64>)>,
    pub errors: BTreeMap<String, u64>,
    pub retries: BTreeMap<String, u64>,
    pub unknown: u64,
    pub seconds: Vec<Second>,
    /// Completion time of every successful write, µs since the start.
    write_times: Vec<u64>,
    /// The latest time (µs since the start) an operation failed or an attempt
    /// was retried: what tells an outage from a run that merely wrote rarely.
    last_trouble_us: Option<u64>,
}

impl Recorder {
    fn second(&mut self, at: Duration) -> &mut Second {
        let index = at.as_secs() as usize;
        while self.seconds.len() <= index {
            self.seconds.push(Second {
                ops: 0,
                writes: 0,
                errors: 0,
                latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
                    .expect("valid histogram bounds"),
            });
        }
        &mut self.seconds[index]
    }

    /// A successful operation of `kind` that took `latency` and completed at `at`.
    pub fn success(&mut self, kind: &'static str, is_write: bool, latency: Duration, at: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        let (count, hist) = self.by_kind.entry(kind).or_insert_with(|| (0, histogram()));
        *count += 1;
        hist.saturating_record(micros);
        let second = self.second(at);
        second.ops += 1;
        second.latency.saturating_record(micros);
        if is_write {
            second.writes += 1;
            self.write_times.push(at.as_micros() as u64);
        }
    }

    /// A failed (or unknown-outcome) operation that ended at `at`.
    pub fn failure(&mut self, kind: &str, unknown: bool, at: Duration) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
        if unknown {
            self.unknown += 1;
        }
        self.second(at).errors += 1;
        self.trouble(at);
    }

    /// An attempt of `kind` retried at `at`.
    pub fn retry(&mut self, kind: &str, at: Duration) {
        *self.retries.entry(kind.to_string()).or_default() += 1;
        self.trouble(at);
    }

    fn trouble(&mut self, at: Duration) {
        let micros = at.as_micros() as u64;
        self.last_trouble_us = Some(self.last_trouble_us.map_or(micros, |t| t.max(micros)));
    }

    /// Operations completed so far and the p99 (ms) of the last full second.
    pub fn progress(&self, now: Duration) -> (u64, u64, f64, u64) {
        let total: u64 = self.by_kind.values().map(|(c, _)| *c).sum();
        let errors: u64 = self.errors.values().sum();
        let last = (now.as_secs() as usize)
            .checked_sub(1)
            .and_then(|i| self.seconds.get(i));
        let (rate, p99) = last.map_or((0, 0.0), |s| {
            (s.ops, s.latency.value_at_quantile(0.99) as f64 / 1000.0)
        });
        (total, rate, p99, errors)
    }

    /// The report of a run that lasted `elapsed`; `writes_expected` says
    /// whether the workload wrote at all (a read-only run has no write gaps).
    pub fn report(
        &mut self,
        elapsed: Duration,
        gap_threshold: Duration,
        writes_expected: bool,
    ) -> Report {
        let total: u64 = self.by_kind.values().map(|(c, _)| *c).sum();
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let by_kind = self
            .by_kind
            .iter()
            .map(|(kind, (count, hist))| {
                let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
                (
                    kind.to_string(),
                    KindReport {
                        count: *count,
                        throughput: *count as f64 / seconds,
                        p50_ms: ms(0.5),
                        p90_ms: ms(0.9),
                        p99_ms: ms(0.99),
                        p999_ms: ms(0.999),
                        max_ms: hist.max() as f64 / 1000.0,
                    },
                )
            })
            .collect();
        self.write_times.sort_unstable();
        let threshold_ms = gap_threshold.as_secs_f64() * 1000.0;
        let (write_gaps, longest_write_gap_ms, ended_in_outage) = if writes_expected {
            let mut gaps = write_gaps(&self.write_times, elapsed.as_micros() as u64);
            let longest = gaps.iter().map(|g| g.length_ms).fold(0.0, f64::max);
            let ended_in_outage = ended_in_outage(
                &gaps,
                self.write_times.last().copied(),
                self.last_trouble_us,
                threshold_ms,
            );
            gaps.retain(|g| g.length_ms >= threshold_ms);
            (gaps, Some(longest), ended_in_outage)
        } else {
            (Vec::new(), None, false)
        };
        let timeline = self
            .seconds
            .iter()
            .enumerate()
            .map(|(second, s)| TimelinePoint {
                second: second as u64,
                ops: s.ops,
                writes: s.writes,
                errors: s.errors,
                p99_ms: if s.ops == 0 {
                    0.0
                } else {
                    s.latency.value_at_quantile(0.99) as f64 / 1000.0
                },
            })
            .collect();
        Report {
            elapsed_s: elapsed.as_secs_f64(),
            operations: total,
            throughput: total as f64 / seconds,
            seed: None,
            by_kind,
            errors: self.errors.clone(),
            retries: self.retries.clone(),
            unknown_outcomes: self.unknown,
            longest_write_gap_ms,
            gap_threshold_ms: threshold_ms,
            write_gaps,
            ended_in_outage,
            leader_changes: None,
            timeline,
            verify: None,
            verify_skipped: None,
            leases: None,
        }
    }
}

/// Every window without a successful write in a run of `run_us` µs, in
/// order, given the sorted completion times (µs since the start) of the
/// successful writes: from the start to the first write, between writes, and
/// from the last write to the end. With no write at all, one window covers
/// the whole run (marked as the start edge: the first write never came).
pub fn write_gaps(write_times_us: &[u64], run_us: u64) -> Vec<Gap> {
    let gap = |from: u64, to: u64, edge: GapEdge| Gap {
        start_s: from as f64 / 1e6,
        length_ms: to.saturating_sub(from) as f64 / 1000.0,
        edge,
    };
    let (Some(&first), Some(&last)) = (write_times_us.first(), write_times_us.last()) else {
        return vec![gap(0, run_us, GapEdge::Start)];
    };
    let mut gaps = vec![gap(0, first, GapEdge::Start)];
    gaps.extend(
        write_times_us
            .windows(2)
            .map(|w| gap(w[0], w[1], GapEdge::Inside)),
    );
    gaps.push(gap(last, run_us.max(last), GapEdge::End));
    gaps
}

/// Whether a run ended in an outage: its last gap (the one that reaches the
/// end of the run) is at least the threshold, and operations failed or were
/// retried after the last successful write. The second condition keeps a
/// healthy run that simply wrote rarely (a low `--rate`, mostly reads) from
/// counting as an outage; a cluster that cannot take writes makes clients
/// retry and fail.
pub fn ended_in_outage(
    gaps: &[Gap],
    last_write_us: Option<u64>,
    last_trouble_us: Option<u64>,
    threshold_ms: f64,
) -> bool {
    let Some(trailing) = gaps.last() else {
        return false;
    };
    let troubled = match (last_trouble_us, last_write_us) {
        (Some(trouble), Some(write)) => trouble > write,
        (Some(_), None) => true,
        (None, _) => false,
    };
    trailing.length_ms >= threshold_ms && troubled
}

/// Latency and throughput of one operation kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KindReport {
    pub count: u64,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// A window with no successful write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// When it began, seconds after the start.
    pub start_s: f64,
    pub length_ms: f64,
    /// Whether it touches an edge of the run.
    #[serde(default)]
    pub edge: GapEdge,
}

/// Where a write gap lies in the run (JSON: "start", "end" or "").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GapEdge {
    /// Between two successful writes.
    #[default]
    #[serde(rename = "")]
    Inside,
    /// From the start of the run to the first successful write (or, if there
    /// was none, to the end).
    #[serde(rename = "start")]
    Start,
    /// From the last successful write to the end of the run.
    #[serde(rename = "end")]
    End,
}

/// The first operation served by a different node than the one before:
/// when hammer saw a new leader at work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderChange {
    /// When that first operation completed, seconds after the start.
    pub at_s: f64,
    /// The new leader's node id, if hammer learned it.
    pub leader_id: Option<u64>,
    /// The new leader's address.
    pub address: String,
}

/// One second of the timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelinePoint {
    pub second: u64,
    pub ops: u64,
    pub writes: u64,
    pub errors: u64,
    pub p99_ms: f64,
}

/// What `--leases` found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaseReport {
    /// Leases held through the run, one key on each.
    pub held: u64,
    /// Their TTL, in seconds.
    pub ttl_s: u64,
    /// Renewals the leader confirmed.
    pub renewals: u64,
    /// Renewals that failed for another reason and were tried again.
    pub failed_renewals: u64,
    /// Leases that ended without hammer asking: a renewal found the lease
    /// gone, or at the end the lease or its key was.
    pub unexpected_expiries: u64,
    /// Leases revoked at the end.
    pub revoked: u64,
    /// Keys still present after their lease was revoked.
    pub keys_left_after_revoke: u64,
    /// Up to ten examples of what went wrong.
    pub examples: Vec<String>,
}

/// What `--verify` found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyReport {
    pub keys_checked: u64,
    pub lost_acknowledged_writes: u64,
    /// Up to ten examples: key, what was expected, what was found.
    pub examples: Vec<String>,
}

/// The whole report of a run (`--json` prints it; `hammer report` reads it
/// back, so fields added later carry `#[serde(default)]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// From the start of the load until the last client stopped.
    pub elapsed_s: f64,
    /// Successful operations.
    pub operations: u64,
    pub throughput: f64,
    /// The seed of the workload's choices (`--seed`, or drawn from the
    /// clock): `--seed` with it makes the same choices again. `None` in
    /// reports of older hammers, which did not state it.
    #[serde(default)]
    pub seed: Option<u64>,
    pub by_kind: BTreeMap<String, KindReport>,
    pub errors: BTreeMap<String, u64>,
    pub retries: BTreeMap<String, u64>,
    pub unknown_outcomes: u64,
    /// The longest window without a successful write, the start and end of
    /// the run included; `None` for a run that did not write (read-only).
    pub longest_write_gap_ms: Option<f64>,
    /// `--gap-threshold`: the shortest window listed in `write_gaps`.
    #[serde(default)]
    pub gap_threshold_ms: f64,
    /// Windows without a successful write of at least the threshold, in order.
    pub write_gaps: Vec<Gap>,
    /// No write succeeded at the end of the run while operations failed or
    /// were retried (see [`ended_in_outage`]).
    #[serde(default)]
    pub ended_in_outage: bool,
    /// Each time a different node served an operation, the first being the
    /// leader at the start; `None` where hammer cannot see leaders (etcd).
    #[serde(default)]
    pub leader_changes: Option<Vec<LeaderChange>>,
    pub timeline: Vec<TimelinePoint>,
    pub verify: Option<VerifyReport>,
    /// Why `--verify` did not run, when it was asked for but could not.
    #[serde(default)]
    pub verify_skipped: Option<String>,
    /// What became of the leases held with `--leases`.
    #[serde(default)]
    pub leases: Option<LeaseReport>,
}

impl Report {
    /// Reads a report that `hammer --json` wrote.
    pub fn read(file: &Path) -> anyhow::Result<Report> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a hammer report (the JSON that `hammer --json` prints): {e}",
                file.display()
            )
        })
    }

    /// One line on how the run ended in an outage, if it did.
    pub fn outage_summary(&self) -> Option<String> {
        if !self.ended_in_outage {
            return None;
        }
        let trailing = self.write_gaps.last()?;
        Some(if trailing.edge == GapEdge::Start {
            format!(
                "no write succeeded in the whole run ({:.2} s)",
                trailing.length_ms / 1000.0
            )
        } else {
            format!(
                "no write succeeded after t={:.2}s, the last {:.2} s of the run",
                trailing.start_s,
                trailing.length_ms / 1000.0
            )
        })
    }
}

mod render;

#[cfg(test)]
mod tests;
