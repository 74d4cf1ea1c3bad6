//! The size quota (`--quota-bytes`) and its NOSPACE alarm: past it, writes
//! that add data are refused everywhere, reads, deletes and compaction go
//! on, every node agrees on the alarm, and it clears by itself once room is
//! made.

use raftkv_client::CallError;
use raftkv_proto::pb;
use raftkv_proto::pb::alarm_request::Action;
use raftkv_proto::QUOTA_BYTES_METADATA;
use raftkv_proto::REASON_METADATA;
use raftkv_proto::REASON_NO_SPACE;
use raftkv_proto::STORE_BYTES_METADATA;
use raftkv_testkit::wait_for;
use raftkv_testkit::TestCluster;
use raftkv_testkit::TestNode;
use tonic::Code;

use crate::support::get;

const QUOTA: u64 = 150_000;

fn metadata<'a>(error: &'a CallError, key: &str) -> &'a str {
    error
        .status()
        .unwrap_or_else(|| panic!("no node answered: {error:?}"))
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {key} in {error:?}"))
}

fn assert_no_space(status: &CallError) {
    assert_eq!(status.code(), Some(Code::ResourceExhausted), "{status:?}");
    assert_eq!(metadata(status, REASON_METADATA), REASON_NO_SPACE);
    assert_eq!(metadata(status, QUOTA_BYTES_METADATA), QUOTA.to_string());
    let used: u64 = metadata(status, STORE_BYTES_METADATA).parse().unwrap();
    assert!(used > 0, "{status:?}");
}

async fn alarms(node: &TestNode) -> Option<pb::AlarmResponse> {
    node.client().alarm(Action::List, 0).await.ok()
}

async fn put(node: &TestNode, key: &str, value: &str) -> Result<u64, CallError> {
    node.client()
        .put(key, value)
        .await
        .map(|answer| answer.index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_quota_writes_are_refused_everywhere_until_room_is_made() {
    let quota = QUOTA.to_string();
    let flags = [
        "--quota-bytes",
        &quota,
        "--snapshot-after",
        "20",
        "--snapshot-keep",
        "0",
    ];
    let mut cluster = TestCluster::builder().flags(&flags).start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let value = "v".repeat(1024);
    let mut written = Vec::new();
    let refusal = loop {
        let key = format!("q/{:04}", written.len());
        match put(cluster.node(leader), &key, &value).await {
            Ok(_) => written.push(key),
            Err(status) => break status,
        }
        assert!(written.len() < 2_000, "no write was refused");
    };
    assert_no_space(&refusal);
    assert!(written.len() > 20, "refused after {} writes", written.len());

    // Every node learns of the alarm through the log, and every node
    // refuses growth: through a follower (forwarded) too.
    for id in 1..=3 {
        let node = &*cluster.node(id);
        let answer = wait_for(&format!("node {id} lists the alarm"), || async move {
            alarms(node).await.filter(|a| !a.nospace_members.is_empty())
        })
        .await;
        assert_eq!(answer.quota_bytes, QUOTA);
    }
    assert_no_space(
        &put(cluster.node(follower), "q/more", "x")
            .await
            .unwrap_err(),
    );
    let grant = cluster
        .node(follower)
        .client()
        .lease_grant(10)
        .await
        .unwrap_err();
    assert_no_space(&grant);

    // Reads and deletes go on; compaction drops the history.
    let kv = cluster.node(follower).client();
    assert_eq!(
        get(&kv, &written[0], false).await,
        Some(value.clone().into_bytes())
    );
    let mut last = 0;
    for key in &written {
        last = kv
            .delete(key.clone())
            .await
            .expect("deletes go on past the quota")
            .index;
    }
    cluster
        .node(leader)
        .client()
        .compact(last)
        .await
        .expect("compaction goes on past the quota");

    // The alarm clears by itself on every node, and writes resume.
    for id in 1..=3 {
        let node = &*cluster.node(id);
        wait_for(&format!("node {id} clears the alarm"), || async move {
            alarms(node).await.filter(|a| a.nospace_members.is_empty())
        })
        .await;
    }
    put(cluster.node(follower), "q/after", "room again")
        .await
        .expect("writes resume once the alarm is cleared");
    cluster.assert_replicas_identical().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_raises_and_disarms_alarms() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let admin = cluster.node(follower).client();
    let raised = admin
        .alarm(Action::Raise, 3)
        .await
        .expect("raise, forwarded to the leader");
    assert_eq!(raised.nospace_members, vec![3]);
    let refused = put(cluster.node(leader), "k", "v").await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::ResourceExhausted));
    assert_eq!(metadata(&refused, REASON_METADATA), REASON_NO_SPACE);
    // Bad requests change nothing (an action no client sends goes raw).
    let unknown = admin.alarm(Action::Raise, 9).await.unwrap_err();
    assert_eq!(unknown.code(), Some(Code::NotFound), "{unknown:?}");
    let bad = cluster
        .node(follower)
        .admin()
        .alarm(pb::AlarmRequest {
            action: 7,
            member_id: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let disarmed = admin.alarm(Action::Disarm, 0).await.expect("disarm");
    assert!(disarmed.nospace_members.is_empty());
    // The store is far below its quota: nothing raises it again.
    put(cluster.node(leader), "k", "v")
        .await
        .expect("writes resume after the disarm");
    let node = &*cluster.node(follower);
    let listed = alarms(node).await.expect("list");
    assert!(listed.nospace_members.is_empty(), "{listed:?}");
    assert!(listed.store_bytes > 0 && listed.quota_bytes > listed.store_bytes);
}

/// Writes in `etcdctl check perf --load=l`: 8,000 a second for 60 s.
const CHECK_PERF_L_WRITES: u64 = 8_000 * 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_quota_holds_what_etcds_check_perf_l_writes() {
    // etcdctl's check perf puts 1 KiB values under 256-byte random keys
    // below `/etcdctl-check-perf/`, a new key each time. Measured here: the
    // store's own count of a sample of such writes, log entries included
    // (a run purges its log at each snapshot, so this overestimates),
    // scaled to the 480,000 writes of `--load=l`.
    let mut cluster = TestCluster::start(1).await;
    let leader = cluster.wait_for_leader().await;
    let node = cluster.node(leader);
    let before = alarms(node).await.expect("the node answers").store_bytes;
    let sample: u64 = 2_000;
    let writers = 16;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let client = node.client();
        tasks.push(tokio::spawn(async move {
            for i in (writer..sample).step_by(writers as usize) {
                let mut key = b"/etcdctl-check-perf/".to_vec();
                let mut random = [0u8; 256];
                random[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
                key.extend_from_slice(&random);
                client
                    .put(key, vec![0u8; 1024])
                    .await
                    .unwrap_or_else(|e| panic!("put {i}: {e}"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("a writer");
    }
    let answer = alarms(node).await.expect("the node answers");
    let per_write = (answer.store_bytes - before) as f64 / sample as f64;
    let projected = (per_write * CHECK_PERF_L_WRITES as f64) as u64;
    let default = raftkv_node::disk::quota::DEFAULT_QUOTA_BYTES;
    println!(
        "check perf -l: {per_write:.0} counted bytes a write, {projected} for \
         {CHECK_PERF_L_WRITES} writes; default quota {default}, this node's {}",
        answer.quota_bytes
    );
    assert!(per_write >= 1024.0 + 256.0, "{per_write} bytes a write");
    // Below the line where a raised alarm clears, with room to spare.
    assert!(
        projected < default / 10 * 9,
        "{projected} bytes would not fit the default quota of {default}"
    );
}
