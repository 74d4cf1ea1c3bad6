//! `top`: a live view of a cluster, refreshed every `--interval`.
//!
//! - Each node: role, term, vote, leader, last/committed/applied index, and
//!   its lag behind the leader's log; a node that does not answer shows why
//!   (and comes back when it answers again).
//! - On the leader: each peer's match index, lag and last contact.
//! - Writes per second on the leader and their mean time from proposal to
//!   answer, from its counters between two refreshes.
//! - The latest leader changes, as the nodes recorded them: an election is
//!   often over in less than a refresh, so polling alone would miss it.
//!   What the nodes saw of one change is laid side by side: it started when
//!   the first of them lost its leader and ended when the new leader took
//!   over (when the others learned it, if it did not answer).
//!
//! `--once` prints one view (after two samples, for the rates); `--json`
//! prints each view as one JSON document.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::Duration;
use std::time::Instant;

use raftkv_client::role_name;
use raftkv_proto::pb;
use serde_json::json;

use crate::status::cell;
use crate::status::clock;
use crate::status::collect;
use crate::status::endpoints;
use crate::status::leader_cell;
use crate::status::Row;
use crate::target::Target;

/// Leader changes shown.
const CHANGES_SHOWN: usize = 8;

/// One refresh: what every endpoint said, and when.
struct Sample {
    at: Instant,
    rows: Vec<Row>,
}

impl Sample {
    fn answered(&self) -> impl Iterator<Item = &pb::NodeStatus> {
        self.rows.iter().filter_map(|row| row.status.as_ref().ok())
    }

    /// The leader, by its own word, at the highest term any node claims.
    fn leader(&self) -> Option<&pb::NodeStatus> {
        self.answered()
            .filter(|s| s.role == pb::Role::Leader as i32)
            .max_by_key(|s| s.term)
    }
}

/// Writes on the leader between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Writes {
    per_second: f64,
    failed_per_second: f64,
    /// Mean time from proposal to answer; `None` without writes.
    mean_latency_ms: Option<f64>,
}

/// The leader's writes between `before` and `now`, if the same node led at
/// both in the same term (a node that restarted and leads again counts
/// afresh).
fn writes(before: &Sample, now: &Sample) -> Option<Writes> {
    let (old, new) = (before.leader()?, now.leader()?);
    if old.id != new.id || old.term != new.term || new.writes_committed < old.writes_committed {
        return None;
    }
    let seconds = now.at.duration_since(before.at).as_secs_f64();
    if seconds <= 0.0 {
        return None;
    }
    let committed = new.writes_committed - old.writes_committed;
    let failed = new.writes_failed.saturating_sub(old.writes_failed);
    let micros = new.write_micros.saturating_sub(old.write_micros);
    Some(Writes {
        per_second: committed as f64 / seconds,
        failed_per_second: failed as f64 / seconds,
        mean_latency_ms: (committed > 0).then(|| micros as f64 / committed as f64 / 1000.0),
    })
}

/// One leader change, from what every node that saw it recorded.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    term: u64,
    leader: u64,
    /// 0: none known before.
    previous: u64,
    started_unix_ms: u64,
    ended_unix_ms: u64,
    seen_by: BTreeSet<u64>,
    campaigned: BTreeSet<u64>,
}

impl Change {
    fn took_ms(&self) -> u64 {
        self.ended_unix_ms.saturating_sub(self.started_unix_ms)
    }
}

/// The changes the nodes of `sample` recorded, oldest first, the same
/// change from several nodes made one.
fn changes(sample: &Sample) -> Vec<Change> {
    let mut merged: BTreeMap<(u64, u64), Change> = BTreeMap::new();
    // The winner's own end is when it took over; the others learned later.
    let mut winners_end: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for status in sample.answered() {
        for seen in &status.leader_changes {
            let key = (seen.term, seen.leader_id);
            if seen.leader_id == status.id {
                winners_end.insert(key, seen.ended_unix_ms);
            }
            let change = merged.entry(key).or_insert_with(|| Change {
                term: seen.term,
                leader: seen.leader_id,
                previous: seen.previous_leader_id,
                started_unix_ms: seen.started_unix_ms,
                ended_unix_ms: seen.ended_unix_ms,
                seen_by: BTreeSet::new(),
                campaigned: BTreeSet::new(),
            });
            change.started_unix_ms = change.started_unix_ms.min(seen.started_unix_ms);
            change.ended_unix_ms = change.ended_unix_ms.min(seen.ended_unix_ms);
            if change.previous == 0 {
                change.previous = seen.previous_leader_id;
            }
            change.seen_by.insert(status.id);
            if seen.campaigned {
                change.campaigned.insert(status.id);
            }
        }
    }
    for (key, ended) in winners_end {
        if let Some(change) = merged.get_mut(&key) {
            change.ended_unix_ms = ended.max(change.started_unix_ms);
        }
    }
    merged.into_values().collect()
}

/// The lag of `status` behind the leader's log.
fn lag(leader: Option<&pb::NodeStatus>, status: &pb::NodeStatus) -> Option<u64> {
    let last = leader?.last_log_index?;
    Some(last.saturating_sub(status.last_log_index.unwrap_or(0)))
}

fn ids(set: &BTreeSet<u64>) -> String {
    let list: Vec<String> = set.iter().map(u64::to_string).collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

/// Unix milliseconds as the time of day (UTC), like [`clock`].
fn time_of_day(unix_ms: u64) -> String {
    let secs = unix_ms / 1000 % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        unix_ms % 1000
    )
}

/// The view as one JSON document.
fn view_json(now: &Sample, writes: Option<Writes>) -> serde_json::Value {
    let leader = now.leader();
    let nodes: Vec<_> = now
        .rows
        .iter()
        .map(|row| match &row.status {
            Ok(s) => json!({
                "endpoint": row.endpoint,
                "id": s.id,
                "role": role_name(s.role),
                "term": s.term,
                "vote_term": s.vote_term,
                "voted_for": s.voted_for,
                "leader_id": s.leader_id,
                "last_log_index": s.last_log_index,
                "commit_index": s.committed_index,
                "applied_index": s.applied_index,
                "lag": lag(leader, s),
                "error": null,
            }),
            Err(e) => json!({ "endpoint": row.endpoint, "error": e }),
        })
        .collect();
    let peers: Vec<_> = leader
        .map(|leader| {
            leader
                .peers
                .iter()
                .map(|p| {
                    json!({
                        "id": p.id,
                        "address": p.address,
                        "matched_index": p.matched_index,
                        "lag": leader.last_log_index.map(|last| last.saturating_sub(p.matched_index.unwrap_or(0))),
                        "last_contact_ms": p.last_contact_ms,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let changes: Vec<_> = changes(now)
        .iter()
        .rev()
        .take(CHANGES_SHOWN)
        .rev()
        .map(|c| {
            json!({
                "term": c.term,
                "leader_id": c.leader,
                "previous_leader_id": c.previous,
                "started_unix_ms": c.started_unix_ms,
                "ended_unix_ms": c.ended_unix_ms,
                "took_ms": c.took_ms(),
                "seen_by": c.seen_by,
                "campaigned": c.campaigned,
            })
        })
        .collect();
    json!({
        "time": clock(),
        "leader_id": leader.map(|l| l.id),
        "term": leader.map(|l| l.term),
        "nodes": nodes,
        "replication": peers,
        "writes": writes.map(|w| json!({
            "per_second": w.per_second,
            "failed_per_second": w.failed_per_second,
            "mean_latency_ms": w.mean_latency_ms,
        })),
        "leader_changes": changes,
    })
}

/// The view as text; rows whose role or term moved since the last refresh
/// (`moved`, by endpoint) are marked, in reverse video on a terminal.
fn view_text(
    now: &Sample,
    writes: Option<Writes>,
    moved: &BTreeSet<String>,
    terminal: bool,
) -> String {
    let leader = now.leader();
    let mut out = format!("raft-admin top  {}  (Ctrl-C to stop)\n", clock());
    match leader {
        Some(l) => out.push_str(&format!("leader {} in term {}", l.id, l.term)),
        None => out.push_str("no leader"),
    }
    match writes {
        Some(w) => out.push_str(&format!(
            "   writes {:.0}/s, mean {} (failed {:.0}/s)\n\n",
            w.per_second,
            w.mean_latency_ms
                .map_or_else(|| "-".into(), |ms| format!("{ms:.1} ms")),
            w.failed_per_second
        )),
        None => out.push_str("\n\n"),
    }
    out.push_str(&format!(
        "{:<22} {:>4} {:<10} {:>5} {:>9} {:>6} {:>8} {:>8} {:>8} {:>6}  {}\n",
        "ENDPOINT",
        "ID",
        "ROLE",
        "TERM",
        "VOTE",
        "LEADER",
        "LAST",
        "COMMIT",
        "APPLIED",
        "LAG",
        "ERROR"
    ));
    for row in &now.rows {
        let line = match &row.status {
            Ok(s) => format!(
                "{:<22} {:>4} {:<10} {:>5} {:>9} {:>6} {:>8} {:>8} {:>8} {:>6}",
                row.endpoint,
                s.id,
                role_name(s.role),
                s.term,
                if s.voted_for == 0 {
                    "-".into()
                } else {
                    format!("{}@{}", s.voted_for, s.vote_term)
                },
                leader_cell(s),
                cell(s.last_log_index),
                cell(s.committed_index),
                cell(s.applied_index),
                cell(lag(leader, s)),
            ),
            Err(e) => format!(
                "{:<22} {:>4} {:<10} {:>5} {:>9} {:>6} {:>8} {:>8} {:>8} {:>6}  {e}",
                row.endpoint, "-", "-", "-", "-", "-", "-", "-", "-", "-"
            ),
        };
        match (moved.contains(&row.endpoint), terminal) {
            (true, true) => out.push_str(&format!("\x1b[1;7m{line}\x1b[0m\n")),
            (true, false) => out.push_str(&format!("{line}  *changed*\n")),
            (false, _) => {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    if let Some(leader) = leader.filter(|l| !l.peers.is_empty()) {
        out.push_str(&format!("\nreplication from leader {}:\n", leader.id));
        out.push_str(&format!(
            "  {:>4} {:<22} {:>8} {:>6} {:>9}\n",
            "PEER", "ADDRESS", "MATCH", "LAG", "CONTACT"
        ));
        for p in &leader.peers {
            let lag = leader
                .last_log_index
                .map(|last| last.saturating_sub(p.matched_index.unwrap_or(0)));
            out.push_str(&format!(
                "  {:>4} {:<22} {:>8} {:>6} {:>9}\n",
                p.id,
                p.address,
                cell(p.matched_index),
                cell(lag),
                p.last_contact_ms
                    .map_or_else(|| "-".into(), |ms| format!("{ms} ms ago")),
            ));
        }
    }
    let changes = changes(now);
    if !changes.is_empty() {
        out.push_str("\nleader changes (newest last):\n");
        for c in changes.iter().rev().take(CHANGES_SHOWN).rev() {
            let from = if c.previous == 0 {
                "none".to_string()
            } else {
                format!("node {}", c.previous)
            };
            out.push_str(&format!(
                "  {}  term {:>4}  {} → node {}  took {} ms  candidates {}  seen by {}\n",
                time_of_day(c.started_unix_ms),
                c.term,
                from,
                c.leader,
                c.took_ms(),
                ids(&c.campaigned),
                ids(&c.seen_by),
            ));
        }
    }
    out
}

/// top: the view every `interval` (`count` times, or until Ctrl-C; once,
/// after two samples, with `once`).
pub async fn top(
    target: &mut Target,
    count: u64,
    interval: Duration,
    once: bool,
) -> anyhow::Result<()> {
    let endpoints = endpoints(target).await;
    let terminal = std::io::stdout().is_terminal() && !once;
    let mut roles: BTreeMap<String, (i32, u64)> = BTreeMap::new();
    let mut previous: Option<Sample> = None;
    let mut ticks = tokio::time::interval(interval);
    let mut shown = 0;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let now = Sample {
            rows: collect(target, &endpoints).await,
            at: Instant::now(),
        };
        let mut moved = BTreeSet::new();
        for row in &now.rows {
            let Ok(s) = &row.status else { continue };
            if let Some(before) = roles.insert(row.endpoint.clone(), (s.role, s.term)) {
                if before != (s.role, s.term) {
                    moved.insert(row.endpoint.clone());
                }
            }
        }
        let Some(before) = previous.replace(now) else {
            if once {
                continue;
            }
            // The first refresh has no rates yet; show it anyway.
            let first = previous.as_ref().expect("just set");
            print_view(target, first, None, &moved, terminal);
            shown += 1;
            if count != 0 && shown >= count {
                return Ok(());
            }
            continue;
        };
        let now = previous.as_ref().expect("just set");
        print_view(target, now, writes(&before, now), &moved, terminal);
        shown += 1;
        if once || (count != 0 && shown >= count) {
            return Ok(());
        }
    }
}

fn print_view(
    target: &Target,
    now: &Sample,
    writes: Option<Writes>,
    moved: &BTreeSet<String>,
    terminal: bool,
) {
    if target.json {
        println!("{}", view_json(now, writes));
        return;
    }
    if terminal {
        print!("\x1b[2J\x1b[H");
    }
    print!("{}", view_text(now, writes, moved, terminal));
    if !terminal {
        println!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, role: pb::Role, term: u64, changes: Vec<pb::LeaderChange>) -> Row {
        Row {
            endpoint: format!("n{id}"),
            status: Ok(pb::NodeStatus {
                id,
                role: role as i32,
                term,
                leader_changes: changes,
                ..Default::default()
            }),
        }
    }

    fn seen(
        term: u64,
        leader: u64,
        started: u64,
        ended: u64,
        campaigned: bool,
    ) -> pb::LeaderChange {
        pb::LeaderChange {
            term,
            leader_id: leader,
            previous_leader_id: 1,
            started_unix_ms: started,
            ended_unix_ms: ended,
            campaigned,
        }
    }

    #[test]
    fn what_nodes_saw_of_one_change_is_laid_side_by_side() {
        // Node 1 led term 1 and is gone; node 3 won term 3 after node 2
        // lost its leader first.
        let sample = Sample {
            at: Instant::now(),
            rows: vec![
                Row {
                    endpoint: "n1".into(),
                    status: Err("no answer".into()),
                },
                node(2, pb::Role::Follower, 3, vec![seen(3, 3, 1000, 1450, true)]),
                node(3, pb::Role::Leader, 3, vec![seen(3, 3, 1100, 1400, true)]),
            ],
        };
        let changes = changes(&sample);
        assert_eq!(changes.len(), 1);
        let change = &changes[0];
        assert_eq!((change.term, change.leader, change.previous), (3, 3, 1));
        assert_eq!(change.started_unix_ms, 1000, "the first node to lose it");
        assert_eq!(change.ended_unix_ms, 1400, "when the winner took over");
        assert_eq!(change.took_ms(), 400);
        assert_eq!(change.seen_by, BTreeSet::from([2, 3]));
        assert_eq!(change.campaigned, BTreeSet::from([2, 3]));
        assert_eq!(sample.leader().map(|l| l.id), Some(3));
    }

    #[test]
    fn writes_come_from_the_leaders_counters_between_two_samples() {
        let leader = |id, committed, micros| Sample {
            at: Instant::now(),
            rows: vec![Row {
                endpoint: "n".into(),
                status: Ok(pb::NodeStatus {
                    id,
                    role: pb::Role::Leader as i32,
                    writes_committed: committed,
                    write_micros: micros,
                    ..Default::default()
                }),
            }],
        };
        let before = leader(1, 100, 1_000_000);
        let mut now = leader(1, 300, 3_000_000);
        now.at = before.at + Duration::from_secs(2);
        let rates = writes(&before, &now).expect("rates");
        assert_eq!(rates.per_second, 100.0);
        assert_eq!(rates.mean_latency_ms, Some(10.0));
        let mut elsewhere = leader(2, 300, 3_000_000);
        elsewhere.at = now.at;
        assert_eq!(writes(&before, &elsewhere), None, "another leader");
        let mut restarted = leader(1, 5, 50);
        restarted.at = now.at;
        assert_eq!(writes(&before, &restarted), None, "counters restarted");
    }
}
