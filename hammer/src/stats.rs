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

    /// The report for people: what `hammer` prints without `--json`, and
    /// what `hammer report` prints from a saved JSON report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out += &format!(
            "{} operations in {:.1}s: {:.0} ops/s\n",
            self.operations, self.elapsed_s, self.throughput
        );
        if let Some(outage) = self.outage_summary() {
            out += &format!("ENDED IN AN OUTAGE: {outage}\n");
        }
        if let Some(seed) = self.seed {
            out += &format!("workload seed {seed} (--seed {seed} makes the same choices)\n");
        }
        out += "\n";
        out += &format!(
            "{:<6} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "op", "count", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for (kind, k) in &self.by_kind {
            out += &format!(
                "{:<6} {:>9} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                kind, k.count, k.throughput, k.p50_ms, k.p90_ms, k.p99_ms, k.p999_ms, k.max_ms
            );
        }
        let list = |map: &BTreeMap<String, u64>| {
            if map.is_empty() {
                "none".to_string()
            } else {
                map.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        out += &format!("\nerrors: {}\n", list(&self.errors));
        out += &format!("retries: {}\n", list(&self.retries));
        out += &format!("writes with unknown outcome: {}\n", self.unknown_outcomes);
        match self.longest_write_gap_ms {
            None => {
                out += "longest window with no successful write: none (the run did no writes)\n"
            }
            Some(longest) => {
                out += &format!("longest window with no successful write: {longest:.1} ms\n");
                if self.write_gaps.is_empty() {
                    out += &format!(
                        "  no window of {:.0} ms or more, from the start to the end of the run\n",
                        self.gap_threshold_ms
                    );
                }
            }
        }
        for gap in &self.write_gaps {
            // Gap lengths are whole microseconds: allow for the rounding.
            let whole_run =
                gap.edge == GapEdge::Start && gap.length_ms / 1000.0 >= self.elapsed_s - 0.001;
            let note = match gap.edge {
                _ if whole_run => "  (the whole run: no write succeeded)",
                GapEdge::Start => "  (from the start of the run)",
                GapEdge::End => "  (until the end of the run)",
                GapEdge::Inside => "",
            };
            out += &format!(
                "  no write for {:>8.1} ms from t={:.2}s{note}\n",
                gap.length_ms, gap.start_s
            );
        }
        if let Some(changes) = &self.leader_changes {
            if changes.is_empty() {
                out += "leaders seen: none (no operation succeeded)\n";
            } else {
                out += "leaders seen (when each first served an operation):\n";
                for change in changes {
                    out += &format!(
                        "  t={:>7.2}s  node {}  {}\n",
                        change.at_s,
                        change
                            .leader_id
                            .map_or("?".to_string(), |id| id.to_string()),
                        change.address
                    );
                }
            }
        }
        out += "\ntimeline (per second):\n";
        for point in &self.timeline {
            out += &format!(
                "  {:>4}s {:>8} ops/s {:>8} writes  p99 {:>8.2} ms  errors {}\n",
                point.second, point.ops, point.writes, point.p99_ms, point.errors
            );
        }
        if let Some(verify) = &self.verify {
            out += &format!(
                "\nverify: {} keys checked; lost acknowledged writes: {}\n",
                verify.keys_checked, verify.lost_acknowledged_writes
            );
            for example in &verify.examples {
                out += &format!("  {example}\n");
            }
        }
        if let Some(reason) = &self.verify_skipped {
            out += &format!("\nverify: skipped: {reason}\n");
        }
        if let Some(leases) = &self.leases {
            out += &format!(
                "\nleases: {} held ({} s TTL), {} renewals ({} failed and retried); \
                 unexpected expiries: {}; revoked {}, keys left after revoke: {}\n",
                leases.held,
                leases.ttl_s,
                leases.renewals,
                leases.failed_renewals,
                leases.unexpected_expiries,
                leases.revoked,
                leases.keys_left_after_revoke
            );
            for example in &leases.examples {
                out += &format!("  {example}\n");
            }
        }
        out
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;
    const SECOND: u64 = 1_000_000;

    fn edges(gaps: &[Gap]) -> Vec<(f64, f64, GapEdge)> {
        gaps.iter()
            .map(|g| (g.start_s, g.length_ms, g.edge))
            .collect()
    }

    #[test]
    fn gaps_run_from_the_start_to_the_first_write_and_from_the_last_to_the_end() {
        let gaps = write_gaps(&[20 * MS, 30 * MS, 3 * SECOND], 8 * SECOND);
        assert_eq!(
            edges(&gaps),
            vec![
                (0.0, 20.0, GapEdge::Start),
                (0.02, 10.0, GapEdge::Inside),
                (0.03, 2970.0, GapEdge::Inside),
                (3.0, 5000.0, GapEdge::End),
            ]
        );
    }

    #[test]
    fn a_run_without_a_successful_write_is_one_gap_from_the_start() {
        let gaps = write_gaps(&[], 8 * SECOND);
        assert_eq!(edges(&gaps), vec![(0.0, 8000.0, GapEdge::Start)]);
        assert!(ended_in_outage(&gaps, None, Some(7 * SECOND), 100.0));
    }

    fn recorder_with_writes(at_ms: &[u64]) -> Recorder {
        let mut recorder = Recorder::default();
        for at in at_ms {
            recorder.success(
                "put",
                true,
                Duration::from_millis(1),
                Duration::from_millis(*at),
            );
        }
        recorder
    }

    #[test]
    fn writes_that_stop_while_clients_retry_end_the_run_in_an_outage() {
        let mut recorder = recorder_with_writes(&[5, 10, 2990, 3000]);
        recorder.retry("no_leader", Duration::from_millis(3500));
        let report = recorder.report(Duration::from_secs(8), Duration::from_millis(100), true);
        assert!(report.ended_in_outage);
        assert_eq!(report.longest_write_gap_ms, Some(5000.0));
        assert_eq!(
            edges(&report.write_gaps),
            vec![(0.01, 2980.0, GapEdge::Inside), (3.0, 5000.0, GapEdge::End)]
        );
        let text = report.render();
        assert!(
            text.contains("ENDED IN AN OUTAGE: no write succeeded after t=3.00s"),
            "{text}"
        );
        assert!(text.contains("(until the end of the run)"), "{text}");
    }

    #[test]
    fn a_quiet_end_without_failures_or_retries_is_no_outage() {
        // A low --rate: the last write came a while before the end, but
        // nothing failed after it.
        let mut recorder = recorder_with_writes(&[100, 600, 1100]);
        recorder.failure("timeout", true, Duration::from_millis(50));
        let report = recorder.report(
            Duration::from_millis(1500),
            Duration::from_millis(100),
            true,
        );
        assert!(!report.ended_in_outage);
        assert_eq!(report.write_gaps.last().map(|g| g.edge), Some(GapEdge::End));
    }

    #[test]
    fn a_healthy_run_lists_no_gaps_and_no_outage() {
        let mut recorder = recorder_with_writes(&[3, 6, 9, 12]);
        recorder.retry("not_leader", Duration::from_millis(4));
        let report = recorder.report(Duration::from_millis(13), Duration::from_millis(100), true);
        assert!(!report.ended_in_outage);
        assert!(report.write_gaps.is_empty());
        assert_eq!(report.longest_write_gap_ms, Some(3.0));
    }

    #[test]
    fn a_read_only_run_has_no_write_gaps() {
        let mut recorder = Recorder::default();
        recorder.success(
            "get",
            false,
            Duration::from_millis(1),
            Duration::from_millis(5),
        );
        let report = recorder.report(Duration::from_secs(2), Duration::from_millis(100), false);
        assert_eq!(report.longest_write_gap_ms, None);
        assert!(report.write_gaps.is_empty());
        assert!(!report.ended_in_outage);
        assert!(report
            .render()
            .contains("longest window with no successful write: none (the run did no writes)"));
    }

    #[test]
    fn the_json_report_renders_the_same_text_when_read_back() {
        let mut recorder = recorder_with_writes(&[5, 10, 2990]);
        recorder.retry("connect", Duration::from_millis(4000));
        let mut report = recorder.report(Duration::from_secs(5), Duration::from_millis(100), true);
        report.leader_changes = Some(vec![LeaderChange {
            at_s: 0.005,
            leader_id: Some(2),
            address: "127.0.0.1:50052".into(),
        }]);
        let json = serde_json::to_string_pretty(&report).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["ended_in_outage"], true);
        assert_eq!(value["write_gaps"][1]["edge"], "end");
        assert_eq!(value["write_gaps"][0]["edge"], "");
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.render(), report.render());
        assert!(back.render().contains("node 2  127.0.0.1:50052"));
    }
}
