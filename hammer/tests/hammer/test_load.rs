//! hammer against real 3-node clusters: reports, verification, history, and
//! runs through a leadership transfer and a leader crash.

use std::path::Path;

use clap::Parser;
use hammer::history;
use raftkv_proto::pb;
use raftkv_testkit::TestCluster;

use crate::support::hammer_binary;

fn args(list: &[&str]) -> hammer::RunArgs {
    hammer::Cli::parse_from(std::iter::once("hammer").chain(list.iter().copied())).run
}

/// The leader ids hammer saw serve, in order (`None`: an id it did not learn).
fn leaders_seen(report: &hammer::stats::Report) -> Vec<Option<u64>> {
    report
        .leader_changes
        .iter()
        .flatten()
        .map(|change| change.leader_id)
        .collect()
}

fn count_outcomes(path: &Path) -> (u64, u64, u64) {
    let events = history::read(path).expect("history parses");
    let count = |outcome: &str| events.iter().filter(|e| e.outcome == outcome).count() as u64;
    (count("ok"), count("fail"), count("unknown"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_reports_throughput_and_loses_nothing() {
    let cluster = TestCluster::start(3).await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let history_file = dir.path().join("history.jsonl");
    let plot = dir.path().join("run.svg");
    let (code, stdout, stderr) = hammer_binary(
        [
            "--endpoints",
            &cluster.endpoints(),
            "--duration",
            "2s",
            "--clients",
            "8",
            "--keys",
            "50",
            "--read-ratio",
            "0.3",
            "--cas-ratio",
            "0.2",
            "--verify",
            "--json",
            "--history",
            history_file.to_str().expect("path"),
            "--plot",
            plot.to_str().expect("path"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert_eq!(code, 0, "hammer failed: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("--json output parses");
    assert!(report["throughput"].as_f64().expect("throughput") > 0.0);
    for kind in ["put", "get", "cas"] {
        assert!(
            report["by_kind"][kind]["count"].as_u64().unwrap_or(0) > 0,
            "no {kind}: {report}"
        );
        assert!(report["by_kind"][kind]["p99_ms"].as_f64().is_some());
    }
    assert_eq!(report["verify"]["lost_acknowledged_writes"], 0);
    assert!(report["verify"]["keys_checked"].as_u64().expect("keys") > 0);
    assert!(!report["timeline"].as_array().expect("timeline").is_empty());

    let (ok, fail, unknown) = count_outcomes(&history_file);
    let errors: u64 = report["errors"]
        .as_object()
        .expect("errors")
        .values()
        .map(|v| v.as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        ok,
        report["operations"].as_u64().expect("operations"),
        "history ok lines vs operations"
    );
    assert_eq!(fail + unknown, errors, "history failures vs errors");
    assert_eq!(
        unknown,
        report["unknown_outcomes"].as_u64().expect("unknown")
    );
    let (code, verdict, _) = hammer_binary(vec![
        "check".into(),
        history_file.display().to_string(),
        "--json".into(),
    ])
    .await;
    assert_eq!(code, 0, "history not linearizable: {verdict}");
    let verdict: serde_json::Value = serde_json::from_str(&verdict).expect("verdict JSON");
    assert_eq!(verdict["verdict"], "linearizable");
    assert_eq!(verdict["operations"], ok + unknown);
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(
        svg.starts_with("<svg") && svg.contains("polyline"),
        "not an SVG chart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_through_a_leadership_transfer_loses_nothing_and_reports_the_gap() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let applied = cluster.applied_index(leader).await;
    let run = args(&[
        "--endpoints",
        &cluster.endpoints(),
        "--duration",
        "4s",
        "--clients",
        "8",
        "--verify",
    ]);
    let load = tokio::spawn(async move { hammer::load(&run).await });
    // Transfer once the load is flowing.
    cluster.wait_applied_beyond(leader, applied + 200).await;
    let admin = cluster.nodes[0].client();
    let moved = admin
        .transfer_leader(0, std::time::Duration::from_millis(10_000))
        .await
        .expect("transfer");
    assert_ne!(moved.leader_id, leader);
    let report = load.await.expect("join").expect("hammer run");
    let verify = report.verify.as_ref().expect("verify ran");
    assert_eq!(verify.lost_acknowledged_writes, 0, "{:?}", verify.examples);
    assert!(report.longest_write_gap_ms.expect("a run with writes") > 0.0);
    assert!(!report.ended_in_outage, "{}", report.render());
    // hammer saw the transfer: the first leader served first, the new one last.
    let changes = report
        .leader_changes
        .as_ref()
        .expect("raftkv tracks leaders");
    let ids: Vec<Option<u64>> = changes.iter().map(|c| c.leader_id).collect();
    assert!(changes.len() >= 2, "{changes:?}");
    assert_eq!(ids.first(), Some(&Some(leader)), "{changes:?}");
    assert_eq!(ids.last(), Some(&Some(moved.leader_id)), "{changes:?}");
    let after = report
        .timeline
        .iter()
        .rev()
        .skip(1)
        .take(1)
        .map(|p| p.writes)
        .sum::<u64>();
    assert!(
        after > 0,
        "no writes after the transfer: {:?}",
        report.timeline
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_run_records_unknown_outcomes_and_loses_nothing() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let applied = cluster.applied_index(leader).await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let history_file = dir.path().join("history.jsonl");
    let run = args(&[
        "--endpoints",
        &cluster.endpoints(),
        "--duration",
        "5s",
        "--clients",
        "16",
        "--verify",
        "--history",
        history_file.to_str().expect("path"),
    ]);
    let load = tokio::spawn(async move { hammer::load(&run).await });
    cluster.wait_applied_beyond(leader, applied + 300).await;
    cluster.node(leader).kill();
    let report = load.await.expect("join").expect("hammer run");
    let verify = report.verify.as_ref().expect("verify ran");
    assert_eq!(verify.lost_acknowledged_writes, 0, "{:?}", verify.examples);
    // Writes in flight when the leader died have an unknown outcome: recorded
    // as such in the report and the history, never retried as failures.
    let (ok, _, unknown) = count_outcomes(&history_file);
    assert!(
        report.unknown_outcomes > 0,
        "no write was in flight? errors: {:?}",
        report.errors
    );
    assert_eq!(unknown, report.unknown_outcomes);
    assert_eq!(ok, report.operations);
    // The kill really happened: hammer saw the killed node lead, then another.
    let leaders = leaders_seen(&report);
    assert_eq!(
        leaders.first(),
        Some(&Some(leader)),
        "leaders seen: {leaders:?}"
    );
    assert!(
        leaders.last().is_some_and(|last| *last != Some(leader)),
        "no other leader after the kill: {leaders:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swaps_sent_as_transactions_stay_linearizable_through_a_leader_kill() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let applied = cluster.applied_index(leader).await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let history_file = dir.path().join("history.jsonl");
    let run = args(&[
        "--endpoints",
        &cluster.endpoints(),
        "--duration",
        "5s",
        "--clients",
        "8",
        "--keys",
        "20",
        "--read-ratio",
        "0.3",
        "--cas-ratio",
        "0.5",
        "--cas-as-txn",
        "--verify",
        "--history",
        history_file.to_str().expect("path"),
    ]);
    let load = tokio::spawn(async move { hammer::load(&run).await });
    cluster.wait_applied_beyond(leader, applied + 200).await;
    cluster.node(leader).kill();
    let report = load.await.expect("join").expect("hammer run");
    assert_eq!(
        report
            .verify
            .as_ref()
            .expect("verify ran")
            .lost_acknowledged_writes,
        0
    );
    let cas = report.by_kind.get("cas").map_or(0, |k| k.count);
    assert!(cas > 50, "too few transactions to judge: {cas}");
    // Both outcomes happened: some comparisons held, some did not.
    let events = history::read(&history_file).expect("history parses");
    let swapped = |yes: bool| {
        events
            .iter()
            .filter(|e| {
                e.outcome == history::Outcome::Ok
                    && matches!(e.call, history::Call::Cas { succeeded: Some(s), .. } if s == yes)
            })
            .count()
    };
    assert!(
        swapped(true) > 0 && swapped(false) > 0,
        "{} / {}",
        swapped(true),
        swapped(false)
    );
    let (code, verdict, _) = hammer_binary(vec![
        "check".into(),
        history_file.display().to_string(),
        "--json".into(),
    ])
    .await;
    assert_eq!(code, 0, "history not linearizable: {verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_held_through_a_leader_kill_survive_and_a_revoked_one_is_reported() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let applied = cluster.applied_index(leader).await;
    let run = args(&[
        "--endpoints",
        &cluster.endpoints(),
        "--duration",
        "8s",
        "--clients",
        "8",
        "--leases",
        "4",
        "--lease-ttl",
        "5s",
        "--verify",
    ]);
    let load = tokio::spawn(async move { hammer::load(&run).await });
    cluster.wait_applied_beyond(leader, applied + 300).await;
    // One lease ends behind hammer's back: the report must name it.
    let kv = cluster.node(leader).client();
    let held = kv
        .get_with(pb::GetRequest {
            key: "hammer/lease/0".into(),
            stale: false,
            revision: 0,
        })
        .await
        .expect("read a held key");
    assert!(held.found && held.lease != 0, "{held:?}");
    kv.lease_revoke(held.lease).await.expect("revoke");
    cluster.node(leader).kill();
    let report = load.await.expect("join").expect("hammer run");
    let leases = report.leases.as_ref().expect("lease report");
    assert_eq!(leases.held, 4);
    assert_eq!(
        leases.unexpected_expiries, 1,
        "only the revoked lease ended: {leases:?}"
    );
    assert!(
        leases
            .examples
            .iter()
            .any(|e| e.contains(&held.lease.to_string())),
        "{leases:?}"
    );
    assert!(leases.renewals >= 4, "{leases:?}");
    assert_eq!((leases.revoked, leases.keys_left_after_revoke), (3, 0));
    assert_eq!(
        report
            .verify
            .as_ref()
            .expect("verify ran")
            .lost_acknowledged_writes,
        0
    );
    // The kill really happened: another node served after it.
    let leaders = leaders_seen(&report);
    assert!(
        leaders.last().is_some_and(|last| *last != Some(leader)),
        "no other leader after the kill: {leaders:?}"
    );
}
