//! `KV/Watch`: every change under a prefix, in log order, from a start index
//! on, from any node; resumable across a leader kill without gaps or
//! duplicates; bounded history and bounded slow watchers.

use raftkv_client::Client;
use raftkv_proto::pb;
use raftkv_proto::COMPACT_REVISION_METADATA;
use raftkv_proto::OLDEST_INDEX_METADATA;
use raftkv_proto::RESUME_INDEX_METADATA;
use raftkv_testkit::wait_for;
use raftkv_testkit::TestCluster;
use raftkv_testkit::PATIENCE;
use tonic::Code;
use tonic::Streaming;

use crate::support::watch;

/// One change as the test expects it: (index, key, value; `None` = delete).
type Seen = (u64, String, Option<String>);

fn seen(event: &pb::Event) -> Seen {
    let key = String::from_utf8(event.key.clone()).unwrap();
    let value = (event.kind == pb::EventKind::Put as i32)
        .then(|| String::from_utf8(event.value.clone()).unwrap());
    (event.index, key, value)
}

/// Reads `stream` until `count` events arrived; returns them and the last
/// resume index.
async fn collect(stream: &mut Streaming<pb::WatchResponse>, count: usize) -> (Vec<Seen>, u64) {
    let mut events = Vec::new();
    let mut resume = 0;
    while events.len() < count {
        let message = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .expect("not ended");
        assert!(message.resume_index > resume, "resume index moves forward");
        resume = message.resume_index;
        for event in &message.events {
            assert!(
                event.index < resume,
                "{event:?} at or after resume {resume}"
            );
        }
        events.extend(message.events.iter().map(seen));
    }
    (events, resume)
}

async fn put(kv: &Client, key: &str, value: &str) -> Seen {
    let index = crate::support::put(kv, key, value).await;
    (index, key.to_string(), Some(value.to_string()))
}

async fn delete(kv: &Client, key: &str) -> Seen {
    let index = kv
        .delete(key)
        .await
        .unwrap_or_else(|e| panic!("delete {key}: {e}"))
        .index;
    (index, key.to_string(), None)
}

fn metadata_index(status: &tonic::Status, key: &str) -> u64 {
    status
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {status:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_streams_every_change_under_the_prefix_in_log_order() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.nodes.iter().find(|n| n.id != leader).unwrap().id;
    let writer = cluster.node(leader).client();
    let mut expected = vec![put(&writer, "cfg/a", "1").await];
    let first = expected[0].0;
    put(&writer, "other/x", "not watched").await;
    expected.push(put(&writer, "cfg/b", "2").await);
    // A delete of a missing key changes nothing, so it is no event.
    writer.delete("cfg/none").await.unwrap();

    // From the past: what was written since `first`, then live.
    let mut stream = watch(&cluster.node(follower).client(), "cfg/", first)
        .await
        .unwrap();
    // From now: only what comes after.
    let mut live = watch(&cluster.node(follower).client(), "cfg/", 0)
        .await
        .unwrap();
    expected.push(put(&writer, "cfg/a", "3").await);
    expected.push(delete(&writer, "cfg/b").await);
    put(&writer, "cfh", "outside the prefix").await;
    expected.push(put(&writer, "cfg/c", "4").await);
    let (events, _) = collect(&mut stream, expected.len()).await;
    assert_eq!(events, expected);
    let (events, resume) = collect(&mut live, 3).await;
    assert_eq!(events, expected[2..]);

    // An open watch does not hold up a graceful stop: the stream ends (with
    // UNAVAILABLE and where to resume when that status gets out first).
    assert!(
        cluster.node(follower).stop(),
        "clean stop with a watch open"
    );
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match live.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the stream ends when its node stops");
    if let Some(status) = ended {
        if status.metadata().contains_key(RESUME_INDEX_METADATA) {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert!(metadata_index(&status, RESUME_INDEX_METADATA) >= resume);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_node_after_the_leader_dies_without_gaps_or_duplicates() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let writer = cluster.node(leader).client();
    let mut expected = Vec::new();
    for i in 0..20 {
        expected.push(put(&writer, &format!("k/{i}"), &format!("v{i}")).await);
    }
    // Watch on the leader, read part of it, and lose the leader.
    let mut stream = watch(&cluster.node(leader).client(), "k/", expected[0].0)
        .await
        .unwrap();
    let (mut events, resume) = collect(&mut stream, 5).await;
    cluster.node(leader).kill();
    let next = cluster.wait_for_leader().await;
    assert_ne!(next, leader);
    let writer = cluster.node(next).client();
    for i in 20..30 {
        expected.push(put(&writer, &format!("k/{i}"), &format!("v{i}")).await);
    }
    // The old stream ends; resuming elsewhere from its resume index misses
    // nothing and repeats nothing.
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the dead leader's stream ends");
    assert!(!matches!(ended, Ok(Some(_))));
    let survivor = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader && n.id != next)
        .unwrap()
        .id;
    let mut resumed = watch(&cluster.node(survivor).client(), "k/", resume)
        .await
        .unwrap();
    let (rest, _) = collect(&mut resumed, expected.len() - events.len()).await;
    events.extend(rest);
    assert_eq!(events, expected);
}

/// Compacts the history before `revision` through node 0's Admin API.
async fn compact(cluster: &TestCluster, revision: u64) {
    cluster.nodes[0]
        .client()
        .compact(revision)
        .await
        .unwrap_or_else(|e| panic!("compact at {revision}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_ends_at_the_compaction_and_a_slow_watcher_catches_up_from_disk() {
    let cluster = TestCluster::start(1).await;
    cluster.wait_for_leader().await;
    let kv = cluster.nodes[0].client();
    let mut written = Vec::new();
    for i in 0..30 {
        written.push(put(&kv, &format!("h/{i}"), "x").await);
    }
    compact(&cluster, written[20].0).await;
    // The first writes are compacted: OUT_OF_RANGE with the oldest revision.
    let status = watch(&kv, "h/", written[0].0).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let oldest = metadata_index(&status, OLDEST_INDEX_METADATA);
    assert_eq!(oldest, written[20].0 + 1, "history after the compaction");
    assert_eq!(
        metadata_index(&status, COMPACT_REVISION_METADATA),
        written[20].0
    );
    let mut stream = watch(&kv, "h/", oldest).await.unwrap();
    let (events, _) = collect(&mut stream, 9).await;
    assert_eq!(events, written[21..]);

    // A watcher that reads nothing while big values go by: flow control
    // stops its stream, and it carries on from disk when it reads again.
    let mut slow = watch(&kv, "big/", 0).await.unwrap();
    let value = "v".repeat(256 << 10);
    let mut big = Vec::new();
    for i in 0..40 {
        big.push(put(&kv, &format!("big/{i}"), &value).await);
    }
    let (events, _) = collect(&mut slow, 40).await;
    assert_eq!(events, big, "every change, in order, read from disk");

    // One that falls behind a compaction is ended with where to resume.
    let mut behind = watch(&kv, "big/", 0).await.unwrap();
    let mut last = 0;
    for i in 0..40 {
        last = put(&kv, &format!("big/{i}"), &value).await.0;
    }
    compact(&cluster, last).await;
    let mut received = 0;
    let mut resume_seen = 0;
    let status = tokio::time::timeout(PATIENCE, async {
        loop {
            match behind.message().await {
                Ok(Some(message)) => {
                    received += message.events.len();
                    resume_seen = message.resume_index;
                }
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the watcher behind the compaction is ended");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        received < 40,
        "all {received} events arrived: the watcher was not behind"
    );
    let resume = metadata_index(&status, RESUME_INDEX_METADATA);
    assert!(
        resume >= resume_seen && resume <= last,
        "{resume} vs {resume_seen}..{last}"
    );
    assert_eq!(metadata_index(&status, COMPACT_REVISION_METADATA), last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_before_a_restart_resumes_after_it() {
    let mut cluster = TestCluster::start(1).await;
    cluster.wait_for_leader().await;
    let kv = cluster.nodes[0].client();
    let mut written = Vec::new();
    for i in 0..5 {
        written.push(put(&kv, &format!("r/{i}"), "before").await);
    }
    // A graceful stop, then the same data directory again.
    assert!(cluster.node(1).stop(), "node 1 stops gracefully");
    cluster.node(1).restart();
    cluster.wait_for_leader().await;
    let kv = cluster.nodes[0].client();
    written.push(put(&kv, "r/after", "after").await);
    let mut stream = watch(&kv, "r/", written[0].0).await.unwrap();
    let (events, _) = collect(&mut stream, written.len()).await;
    assert_eq!(events, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joined_by_snapshot_serves_the_same_watch_range() {
    let flags = ["--snapshot-after", "50", "--snapshot-keep", "0"];
    let mut cluster = TestCluster::builder().flags(&flags).start(3).await;
    let leader = cluster.wait_for_leader().await;
    let kv = cluster.node(leader).client();
    let mut written = Vec::new();
    for i in 0..40 {
        written.push(put(&kv, &format!("s/{}", i % 7), &format!("v{i}")).await);
        if i % 5 == 4 {
            written.push(delete(&kv, &format!("s/{}", i % 7)).await);
        }
    }
    let compacted = written[10].0;
    compact(&cluster, compacted).await;
    // Enough entries after it that the leader purges its log: a newcomer
    // needs a snapshot, which must carry the history from `compacted`.
    for i in 0..80 {
        written.push(put(&kv, &format!("s/{}", i % 7), &format!("w{i}")).await);
    }
    let leader_node = &*cluster.node(leader);
    wait_for("the leader purges its log", || async move {
        let status = leader_node.status().await?;
        (status.purged_index.unwrap_or(0) > compacted).then_some(())
    })
    .await;

    cluster.add_voter(4).await;
    let last = written.last().expect("writes").0;
    cluster.wait_applied(last).await;
    let status = cluster.node(4).status().await.expect("status of node 4");
    assert!(
        status.snapshot_index.unwrap_or(0) > compacted,
        "node 4 did not install a snapshot: {status:?}"
    );

    let expected: Vec<Seen> = written
        .iter()
        .filter(|(index, _, _)| *index > compacted)
        .cloned()
        .collect();
    for id in [leader, 4] {
        let on = cluster.node(id).client();
        let status = watch(&on, "s/", compacted).await.unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange, "node {id}: {status:?}");
        assert_eq!(
            metadata_index(&status, COMPACT_REVISION_METADATA),
            compacted,
            "node {id}"
        );
        let mut stream = watch(&on, "s/", compacted + 1).await.unwrap();
        let (events, _) = collect(&mut stream, expected.len()).await;
        assert_eq!(events, expected, "node {id} from the compaction point");
    }
}
