//! Memory: every node of a 3-node cluster runs inside a 64 MiB memory cgroup
//! of its own (no swap) through a minute of 64 clients writing, and keeps
//! serving: no node is killed, every second of the run has successful
//! writes, nothing acknowledged is lost.

use raftkv_testkit::MemoryCgroup;
use raftkv_testkit::TestCluster;

use crate::support::hammer_binary;
use crate::support::is_root;

/// What a small device gives a node (as `MemoryMax=64M` would).
const LIMIT_BYTES: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_keeps_serving_inside_64_mib_through_a_minute_of_64_clients() {
    if !is_root() {
        println!("SKIPPED the 64 MiB cgroup run: creating cgroups needs root");
        eprintln!("SKIPPED the 64 MiB cgroup run: creating cgroups needs root");
        return;
    }
    // Declared before the cluster, so the nodes are gone when they are removed.
    let cgroups: Vec<MemoryCgroup> = (1..=3)
        .map(|id| {
            MemoryCgroup::create(
                &format!("raftkv-test-{}-{id}", std::process::id()),
                LIMIT_BYTES,
            )
            .unwrap_or_else(|e| panic!("cannot make a memory cgroup as root: {e}"))
        })
        .collect();
    let mut cluster = TestCluster::start(3).await;
    for (cgroup, node) in cgroups.iter().zip(&cluster.nodes) {
        let pid = node.pid().expect("node running");
        cgroup.add(pid);
        assert_eq!(cgroup.processes(), vec![pid]);
        assert_eq!(cgroup.limit_bytes(), Some(LIMIT_BYTES));
    }
    cluster.wait_for_leader().await;
    let args = [
        "--endpoints",
        &cluster.endpoints(),
        "--duration",
        "60s",
        "--clients",
        "64",
        "--keys",
        "10000",
        "--value-size",
        "256",
        "--verify",
        "--json",
    ];
    let (code, stdout, stderr) = hammer_binary(args.iter().map(|s| s.to_string()).collect()).await;
    for (cgroup, node) in cgroups.iter().zip(&mut cluster.nodes) {
        // The cgroup's peak counts the page cache of the node's writes too,
        // which the kernel reclaims at the limit; the process's own peak is
        // VmHWM.
        let peak = cgroup.peak_bytes().unwrap_or(0);
        let status = node
            .pid()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .unwrap_or_default();
        let hwm = status
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .unwrap_or("VmHWM: ?");
        println!(
            "node {}: cgroup peak {} KiB of {} KiB; process {hwm}",
            node.id,
            peak >> 10,
            LIMIT_BYTES >> 10
        );
        assert!(
            node.is_running(),
            "node {} died under the limit: {}",
            node.id,
            node.log_tail()
        );
        assert_eq!(
            cgroup.oom_kills().unwrap_or(0),
            0,
            "the OOM killer struck in node {}'s cgroup",
            node.id
        );
    }
    assert_eq!(code, 0, "hammer failed: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("--json output parses");
    assert_eq!(report["verify"]["lost_acknowledged_writes"], 0, "{report}");
    let timeline = report["timeline"].as_array().expect("timeline");
    assert!(
        timeline.len() >= 55,
        "a minute of load: {} seconds",
        timeline.len()
    );
    // The last second may be cut short by the end of the run.
    for point in &timeline[..timeline.len() - 1] {
        assert!(
            point["writes"].as_u64().unwrap_or(0) > 0,
            "a second without a write: {point} in {report}"
        );
    }
}
