//! The report for people: how a [`Report`] prints.

use std::collections::BTreeMap;

use super::GapEdge;
use super::Report;

impl Report {
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
}
