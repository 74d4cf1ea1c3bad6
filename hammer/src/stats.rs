//! What a run measured: latency histograms per operation kind, a per-second
//! timeline, errors and retries by kind, and the gaps between successful
//! writes (the measured cost of a failover or a transfer).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
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

    /// A failed (or unknown-outcome) operation.
    pub fn failure(&mut self, kind: &str, unknown: bool, at: Duration) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
        if unknown {
            self.unknown += 1;
        }
        self.second(at).errors += 1;
    }

    pub fn retry(&mut self, kind: &str) {
        *self.retries.entry(kind.to_string()).or_default() += 1;
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

    /// The report of a run that lasted `elapsed`.
    pub fn report(&mut self, elapsed: Duration, gap_threshold: Duration) -> Report {
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
        let mut gaps: Vec<Gap> = self
            .write_times
            .windows(2)
            .map(|w| Gap {
                start_s: w[0] as f64 / 1e6,
                length_ms: (w[1] - w[0]) as f64 / 1000.0,
            })
            .collect();
        let longest = gaps.iter().map(|g| g.length_ms).fold(0.0, f64::max);
        gaps.retain(|g| g.length_ms >= gap_threshold.as_secs_f64() * 1000.0);
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
            by_kind,
            errors: self.errors.clone(),
            retries: self.retries.clone(),
            unknown_outcomes: self.unknown,
            longest_write_gap_ms: longest,
            write_gaps: gaps,
            timeline,
            verify: None,
        }
    }
}

/// Latency and throughput of one operation kind.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    /// When it began, seconds after the start.
    pub start_s: f64,
    pub length_ms: f64,
}

/// One second of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub second: u64,
    pub ops: u64,
    pub writes: u64,
    pub errors: u64,
    pub p99_ms: f64,
}

/// What `--verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub keys_checked: u64,
    pub lost_acknowledged_writes: u64,
    /// Up to ten examples: key, what was expected, what was found.
    pub examples: Vec<String>,
}

/// The whole report of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub elapsed_s: f64,
    pub operations: u64,
    pub throughput: f64,
    pub by_kind: BTreeMap<String, KindReport>,
    pub errors: BTreeMap<String, u64>,
    pub retries: BTreeMap<String, u64>,
    pub unknown_outcomes: u64,
    pub longest_write_gap_ms: f64,
    pub write_gaps: Vec<Gap>,
    pub timeline: Vec<TimelinePoint>,
    pub verify: Option<VerifyReport>,
}

impl Report {
    /// The report for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out += &format!(
            "{} operations in {:.1}s: {:.0} ops/s\n\n",
            self.operations, self.elapsed_s, self.throughput
        );
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
        out += &format!(
            "longest window with no successful write: {:.1} ms\n",
            self.longest_write_gap_ms
        );
        for gap in &self.write_gaps {
            out += &format!(
                "  no write for {:>8.1} ms from t={:.2}s\n",
                gap.length_ms, gap.start_s
            );
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
        out
    }
}
