//! Faults under load: each run records a history and verifies every
//! acknowledged write; what must hold afterwards: no acknowledged write lost,
//! the history linearizable, a leader back within 5 s of each healed fault,
//! and every replica's state identical.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use hammer::check;
use hammer::history;
use hammer::stats::Report;
use raftkv_proto::pb;
use raftkv_testkit::wait_for;
use raftkv_testkit::TestCluster;
use raftkv_testkit::TestNode;
use tempfile::TempDir;
use tokio::task::JoinHandle;

/// Bound on re-election after a healed fault (the requirement, not a benchmark).
pub const LEADER_BACK: Duration = Duration::from_secs(5);

pub struct Load {
    task: JoinHandle<anyhow::Result<Report>>,
    history: PathBuf,
    _dir: TempDir,
}

/// Starts hammer against `cluster` for `seconds`, recording a history.
pub fn start_load(cluster: &TestCluster, seconds: u64, extra: &[&str]) -> Load {
    let dir = TempDir::new().expect("temp dir");
    let history = dir.path().join("history.jsonl");
    let duration = format!("{seconds}s");
    let mut args = vec![
        "hammer",
        "--endpoints",
        "",
        "--duration",
        &duration,
        "--clients",
        "8",
        "--keys",
        "200",
        "--read-ratio",
        "0.3",
        "--cas-ratio",
        "0.1",
        "--verify",
        "--history",
        history.to_str().expect("path"),
    ];
    let endpoints = cluster.endpoints();
    args[2] = &endpoints;
    if extra.windows(2).any(|pair| pair == ["--target", "etcd"]) {
        // etcd's API has no compare-and-swap call in hammer.
        let cas = args.iter().position(|a| *a == "--cas-ratio").expect("cas") + 1;
        args[cas] = "0";
    }
    args.extend_from_slice(extra);
    let run = hammer::Cli::parse_from(args).run;
    Load {
        task: tokio::spawn(async move { hammer::load(&run).await }),
        history,
        _dir: dir,
    }
}

/// Waits until node `id` has purged part of its log, so a node that joins
/// now can only catch up from a snapshot. (Waiting for a fixed amount of
/// progress instead raced the six-second load on a slow machine: the load
/// could end before the target was reached.)
pub async fn wait_until_purged(cluster: &TestCluster, id: u64) {
    let node = cluster.get(id);
    wait_for(&format!("node {id} purges part of its log"), || async {
        let purged = node.status().await?.purged_index?;
        (purged > 0).then_some(())
    })
    .await;
}

/// Waits for the load to end and checks everything that must hold.
pub async fn finish(load: Load, cluster: &TestCluster) -> Report {
    let report = load.task.await.expect("join").expect("hammer run");
    let verify = report.verify.as_ref().unwrap_or_else(|| {
        panic!(
            "verify did not run ({:?}); write gaps {:?}; errors {:?}",
            report.verify_skipped, report.write_gaps, report.errors
        )
    });
    assert_eq!(
        verify.lost_acknowledged_writes, 0,
        "lost writes: {:?}",
        verify.examples
    );
    assert!(report.operations > 0);
    let events = history::read(&load.history).expect("history");
    let verdict = check::check(
        &events,
        check::Limits {
            time: Duration::from_secs(120),
            states: 20_000_000,
        },
    );
    assert!(
        matches!(verdict, check::Verdict::Linearizable { .. }),
        "{verdict:?}"
    );
    cluster.assert_replicas_identical().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_leader_under_load() {
    kill_the_leader_under(&[]).await;
}

/// The same through etcd's API on the same nodes: each hammer client talks
/// to one node, which forwards writes to the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_leader_under_load_through_etcds_api() {
    kill_the_leader_under(&["--target", "etcd"]).await;
}

async fn kill_the_leader_under(extra: &[&str]) {
    let mut cluster = TestCluster::start(3).await;
    let load = start_load(&cluster, 5, extra);
    let leader = cluster.wait_for_leader().await;
    let applied = cluster.applied_index(leader).await;
    cluster.wait_applied_beyond(leader, applied + 200).await;
    cluster.node(leader).kill();
    cluster.leader_within(LEADER_BACK, Some(leader)).await;
    cluster.node(leader).restart();
    finish(load, &cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_the_leader_longer_than_the_election_timeout() {
    let cluster = TestCluster::start(3).await;
    let load = start_load(&cluster, 5, &[]);
    let leader = cluster.wait_for_leader().await;
    let applied = cluster.applied_index(leader).await;
    cluster.wait_applied_beyond(leader, applied + 200).await;
    let paused = cluster.get(leader);
    paused.signal("STOP");
    let new_leader = cluster.leader_within(LEADER_BACK, Some(leader)).await;
    paused.signal("CONT");
    assert_ne!(new_leader, leader);
    finish(load, &cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_and_restart_the_whole_cluster() {
    let mut cluster = TestCluster::start(3).await;
    let load = start_load(&cluster, 6, &["--timeout", "4s"]);
    let leader = cluster.wait_for_leader().await;
    let applied = cluster.applied_index(leader).await;
    cluster.wait_applied_beyond(leader, applied + 200).await;
    for id in 1..=3 {
        cluster.node(id).kill();
    }
    for id in 1..=3 {
        cluster.node(id).restart();
    }
    cluster.leader_within(LEADER_BACK, None).await;
    finish(load, &cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_and_restart_a_single_node_cluster() {
    let mut cluster = TestCluster::start(1).await;
    let load = start_load(&cluster, 4, &["--timeout", "4s"]);
    let applied = cluster.applied_index(1).await;
    cluster.wait_applied_beyond(1, applied + 200).await;
    cluster.node(1).kill();
    cluster.node(1).restart();
    cluster.leader_within(LEADER_BACK, None).await;
    finish(load, &cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_and_re_add_a_voter_under_load() {
    let mut cluster = TestCluster::start(3).await;
    let load = start_load(&cluster, 6, &[]);
    let leader = cluster.wait_for_leader().await;
    let applied = cluster.applied_index(leader).await;
    cluster.wait_applied_beyond(leader, applied + 200).await;
    let victim = if leader == 3 { 2 } else { 3 };
    let admin = cluster.node(leader).client();
    admin.remove_node(victim, 0).await.expect("remove voter");
    // Its old state is stale by now: start it afresh and add it back.
    cluster.node(victim).kill();
    let dir = TempDir::new().expect("temp dir");
    let mut fresh = TestNode::start(dir.path(), victim, &[]);
    admin
        .add_voter(victim, fresh.address.clone(), 0)
        .await
        .expect("re-add voter");
    std::mem::swap(cluster.node(victim), &mut fresh);
    let config = admin.configuration().await.expect("config");
    assert_eq!(
        config
            .members
            .iter()
            .filter(|m| m.suffrage == pb::Suffrage::Voter as i32)
            .count(),
        3
    );
    finish(load, &cluster).await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_a_snapshot_under_load() {
    let flags = ["--snapshot-after", "100", "--snapshot-keep", "10"];
    let mut cluster = TestCluster::builder().flags(&flags).start(3).await;
    let load = start_load(&cluster, 6, &[]);
    let leader = cluster.wait_for_leader().await;
    wait_until_purged(&cluster, leader).await;
    // Node 4 joins after the log was compacted: it must take a snapshot while writes go on.
    let node = cluster.start_node(cluster.node_spec(4));
    let address = node.address.clone();
    let admin = cluster.node(leader).client();
    admin.add_voter(4, address, 0).await.expect("add voter 4");
    let status = cluster.node(4).status().await.expect("status");
    assert!(
        status.snapshot_index.unwrap_or(0) > 0,
        "node 4 did not install a snapshot: {status:?}"
    );
    finish(load, &cluster).await;
}
