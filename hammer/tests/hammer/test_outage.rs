//! Outages hammer must not hide: a cluster that loses its quorum for good
//! partway through a run, and one that never had a leader. Both must show as
//! write gaps reaching the end of the run, `ended_in_outage` and a failing
//! exit code (unless `--allow-outage`). Also `hammer report`, which prints the
//! text report from the JSON a run wrote.

use std::time::Duration;
use std::time::Instant;

use clap::Parser;
use hammer::stats::GapEdge;
use hammer::stats::Report;
use raftkv_testkit::TestCluster;
use raftkv_testkit::TestNode;
use tempfile::TempDir;

use crate::support::hammer_binary;

/// Length of the runs that lose their quorum.
const RUN: Duration = Duration::from_secs(10);

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_quorum_for_good_ends_the_run_in_an_outage() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let applied = cluster.applied_index(leader).await;
    let endpoints = cluster.endpoints();
    let run = |prefix: &str, flag: &str| {
        strings(&[
            "--endpoints",
            &endpoints,
            "--duration",
            &format!("{}s", RUN.as_secs()),
            "--clients",
            "4",
            "--timeout",
            "1s",
            "--key-prefix",
            prefix,
            flag,
        ])
    };
    // Two runs through the same outage: one strict (JSON), one that allows it (text).
    let started = Instant::now();
    let strict = tokio::spawn(hammer_binary(run("strict/", "--json")));
    let allowing = tokio::spawn(hammer_binary(run("allowing/", "--allow-outage")));
    cluster.wait_applied_beyond(leader, applied + 200).await;
    let follower = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.node(leader).kill();
    cluster.node(follower).kill();
    let killed_at = started.elapsed();
    assert!(
        killed_at + Duration::from_secs(2) < RUN,
        "writes took {killed_at:?} to start flowing: too late to test an outage in a {RUN:?} run"
    );
    // Both runs started after `started`, so at least this much of each was left.
    let remaining_ms = (RUN - killed_at).as_secs_f64() * 1000.0;

    let (code, stdout, stderr) = strict.await.expect("join");
    assert_ne!(code, 0, "an outage at the end must fail the run: {stderr}");
    assert!(stderr.contains("ended in an outage"), "{stderr}");
    let report: Report = serde_json::from_str(&stdout).expect("--json output is a report");
    assert!(report.ended_in_outage, "{}", report.render());
    assert!(report.operations > 0);
    let trailing = report.write_gaps.last().expect("write gaps");
    assert_eq!(trailing.edge, GapEdge::End, "{:?}", report.write_gaps);
    assert!(
        trailing.length_ms >= remaining_ms / 2.0,
        "the trailing gap ({} ms) should cover the {remaining_ms:.0} ms left after the kill",
        trailing.length_ms
    );
    assert!(report.longest_write_gap_ms.expect("writes") >= trailing.length_ms);
    let changes = report.leader_changes.as_ref().expect("leaders tracked");
    assert_eq!(
        changes.first().and_then(|c| c.leader_id),
        Some(leader),
        "{changes:?}"
    );

    let (code, text, stderr) = allowing.await.expect("join");
    assert_eq!(code, 0, "--allow-outage accepts an outage: {stderr}");
    assert!(text.contains("ENDED IN AN OUTAGE"), "{text}");
    assert!(text.contains("(until the end of the run)"), "{text}");

    // `hammer report` prints the text report of the saved JSON.
    let dir = TempDir::new().expect("temp dir");
    let saved = dir.path().join("report.json");
    std::fs::write(&saved, &stdout).expect("write report");
    let (code, text, stderr) =
        hammer_binary(strings(&["report", saved.to_str().expect("path")])).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(text, report.render());
    assert!(text.contains("ENDED IN AN OUTAGE"), "{text}");
    assert!(text.contains("(until the end of the run)"), "{text}");
    assert!(
        text.contains(&format!("node {leader}  {}", changes[0].address)),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_never_had_a_leader_is_one_gap_from_the_start() {
    let dir = TempDir::new().expect("temp dir");
    // Without --bootstrap nodes wait to be added to a cluster: nobody leads.
    let nodes: Vec<TestNode> = (1..=3)
        .map(|id| TestNode::start(dir.path(), id, &[]))
        .collect();
    let endpoints = nodes
        .iter()
        .map(|n| n.address.clone())
        .collect::<Vec<_>>()
        .join(",");
    let (code, stdout, stderr) = hammer_binary(strings(&[
        "--endpoints",
        &endpoints,
        "--duration",
        "3s",
        "--clients",
        "4",
        "--timeout",
        "1s",
        "--json",
    ]))
    .await;
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("no leader found"), "{stderr}");
    assert!(stderr.contains("ended in an outage"), "{stderr}");
    let report: Report = serde_json::from_str(&stdout).expect("--json output is a report");
    assert_whole_run_is_one_outage(&report, 3.0);
    // The run stops about one --timeout after its end even though every
    // client is retrying (generous: the machine may be slow).
    assert!(report.elapsed_s < 3.0 + 6.0, "{}", report.elapsed_s);
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_nobody_listens_on_is_one_gap_from_the_start() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    drop(listener);
    let run = hammer::Cli::parse_from([
        "hammer",
        "--endpoints",
        &address,
        "--duration",
        "1s",
        "--clients",
        "2",
        "--timeout",
        "500ms",
    ])
    .run;
    let report = hammer::load(&run).await.expect("the run itself works");
    assert_whole_run_is_one_outage(&report, 1.0);
}

/// One write gap covering the whole run, from the start, and nothing else.
fn assert_whole_run_is_one_outage(report: &Report, duration_s: f64) {
    assert_eq!(report.operations, 0);
    assert!(report.ended_in_outage, "{}", report.render());
    assert_eq!(report.write_gaps.len(), 1, "{:?}", report.write_gaps);
    let gap = &report.write_gaps[0];
    assert_eq!((gap.start_s, gap.edge), (0.0, GapEdge::Start));
    assert!(gap.length_ms >= duration_s * 1000.0, "{gap:?}");
    assert!((gap.length_ms / 1000.0 - report.elapsed_s).abs() < 0.001);
    assert_eq!(report.longest_write_gap_ms, Some(gap.length_ms));
    assert_eq!(report.leader_changes, Some(Vec::new()));
    assert!(report
        .render()
        .contains("no write succeeded in the whole run"));
}

#[tokio::test]
async fn hammer_report_refuses_what_is_not_a_report() {
    let dir = TempDir::new().expect("temp dir");
    let missing = dir.path().join("missing.json");
    let (code, _, stderr) =
        hammer_binary(strings(&["report", missing.to_str().expect("path")])).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot read"), "{stderr}");

    let history = dir.path().join("history.jsonl");
    std::fs::write(
        &history,
        r#"{"client":0,"kind":"put","key":"k","value":"v","invoke_ns":1,"complete_ns":2,"outcome":"ok"}"#,
    )
    .expect("write");
    let (code, _, stderr) =
        hammer_binary(strings(&["report", history.to_str().expect("path")])).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("is not a hammer report"), "{stderr}");
}
