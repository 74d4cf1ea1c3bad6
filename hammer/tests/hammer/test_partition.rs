//! A network partition under load: the leader is cut off from the other two
//! voters with nft rules, inside a network namespace this test creates (so no
//! rule ever touches the host's own network), then the partition heals.
//!
//! Needs root, `ip` and `nft`; without them the test says it was skipped and why.

use std::process::Command;
use std::process::Stdio;

use raftkv_testkit::TestCluster;

use crate::support::is_root;
use crate::support::run_isolated_driver;
use crate::test_faults::finish;
use crate::test_faults::start_load;
use crate::test_faults::LEADER_BACK;

const DRIVER: &str = "RAFTKV_TEST_PARTITION_DRIVER";
const TABLE: &str = "raftkv_partition";

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Why the scenario cannot run here, if it cannot.
fn missing_prerequisites() -> Option<String> {
    if !is_root() {
        return Some("network namespaces and nft rules need root".into());
    }
    if !succeeds("nft", &["--version"]) {
        return Some("the nft command is not installed (Debian package nftables)".into());
    }
    if !succeeds("ip", &["netns", "list"]) {
        return Some("`ip netns` is not available (Debian package iproute2)".into());
    }
    None
}

/// Deletes the namespace however the test ends.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolate_the_leader_then_heal() {
    if let Some(reason) = missing_prerequisites() {
        println!("SKIPPED isolate_the_leader_then_heal: {reason}");
        eprintln!("SKIPPED isolate_the_leader_then_heal: {reason}");
        return;
    }
    let namespace = Namespace(format!("raftkv-test-{}", std::process::id()));
    run("ip", &["netns", "add", &namespace.0]);
    run(
        "ip",
        &[
            "netns",
            "exec",
            &namespace.0,
            "ip",
            "link",
            "set",
            "lo",
            "up",
        ],
    );
    let wrapper = ["ip", "netns", "exec", &namespace.0]
        .map(String::from)
        .to_vec();
    run_isolated_driver(wrapper, "test_partition::partition_driver", DRIVER).await;
}

/// The scenario itself, run inside the namespace by `isolate_the_leader_then_heal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the network namespace created by isolate_the_leader_then_heal"]
async fn partition_driver() {
    assert!(
        std::env::var(DRIVER).is_ok(),
        "run through isolate_the_leader_then_heal"
    );
    // Nodes on 127.0.0.2-4, each connecting out from its own address; the
    // load comes from 127.0.0.1, which no rule touches.
    let ip = |id: u64| format!("127.0.0.{}", id + 1);
    let mut cluster = TestCluster::new();
    cluster
        .bootstrap(cluster.node_spec(1).listen(&format!("{}:0", ip(1))))
        .await;
    for id in 2..=3 {
        let spec = cluster.node_spec(id).listen(&format!("{}:0", ip(id)));
        cluster.add_voter_from(spec).await;
    }

    let load = start_load(&cluster, 8, &["--timeout", "1s"]);
    let leader = cluster.wait_for_leader().await;
    let applied = cluster.applied_index(leader).await;
    cluster.wait_applied_beyond(leader, applied + 200).await;

    run("nft", &["add", "table", "inet", TABLE]);
    run(
        "nft",
        &[
            "add", "chain", "inet", TABLE, "out", "{", "type", "filter", "hook", "output",
            "priority", "0", ";", "}",
        ],
    );
    for other in (1..=3).filter(|id| *id != leader) {
        for (from, to) in [(ip(leader), ip(other)), (ip(other), ip(leader))] {
            run(
                "nft",
                &[
                    "add", "rule", "inet", TABLE, "out", "ip", "saddr", &from, "ip", "daddr", &to,
                    "drop",
                ],
            );
        }
    }
    let new_leader = cluster.leader_within(LEADER_BACK, Some(leader)).await;
    let applied = cluster.applied_index(new_leader).await;
    cluster.wait_applied_beyond(new_leader, applied + 100).await;

    run("nft", &["delete", "table", "inet", TABLE]);
    cluster.leader_within(LEADER_BACK, None).await;
    let report = finish(load, &cluster).await;
    assert!(report.longest_write_gap_ms.expect("a run with writes") > 0.0);
}
