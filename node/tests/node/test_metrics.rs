//! The metrics endpoint: Prometheus text that parses, with the families an
//! operator needs and values that follow what the cluster did; liveness and
//! readiness.

use std::collections::HashMap;

use raftkv_testkit::wait_for;
use raftkv_testkit::NodeSpec;
use raftkv_testkit::TestCluster;
use raftkv_testkit::TestNode;

use crate::support::put;

/// One scrape: every sample as `name{labels}` → value. Panics on a line
/// that is not Prometheus text format.
fn scrape(node: &TestNode) -> HashMap<String, f64> {
    let (status, body) = node
        .http_get("/metrics")
        .expect("the metrics endpoint answers");
    assert_eq!(status, 200, "{body}");
    let mut samples = HashMap::new();
    for line in body.lines() {
        if line.is_empty() || line.starts_with('#') {
            assert!(
                line.is_empty()
                    || line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("# UNIT ")
                    || line == "# EOF",
                "not Prometheus text: {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            name.starts_with("raftkv_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_string(), value);
    }
    samples
}

fn sample(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} among {:?}", samples.keys().collect::<Vec<_>>()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_cluster_and_readiness_tells_members_apart() {
    let mut cluster = TestCluster::builder()
        .flags(&["--metrics-listen", "127.0.0.1:0"])
        .start(3)
        .await;
    let leader = cluster.wait_for_leader().await;
    let writes = 20;
    for i in 0..writes {
        put(&cluster.node(leader).client(), &format!("k{i}"), "v").await;
    }
    cluster
        .node(leader)
        .client()
        .snapshot()
        .await
        .expect("snapshot");
    let status = cluster.node(leader).status().await.expect("status");
    cluster
        .wait_applied(status.applied_index.unwrap_or(0))
        .await;

    let on_leader = wait_for("the leader's snapshot shows in its metrics", || {
        let samples = scrape(cluster.node(leader));
        async move {
            (samples.get("raftkv_snapshot_build_seconds_count").copied() >= Some(1.0))
                .then_some(samples)
        }
    })
    .await;
    assert_eq!(sample(&on_leader, "raftkv_is_leader"), 1.0);
    assert_eq!(sample(&on_leader, "raftkv_has_leader"), 1.0);
    assert_eq!(sample(&on_leader, "raftkv_term"), status.term as f64);
    assert!(sample(&on_leader, "raftkv_leader_changes_total") >= 1.0);
    assert!(sample(&on_leader, "raftkv_proposals_committed_total") >= writes as f64);
    assert!(sample(&on_leader, "raftkv_entries_applied_total") >= writes as f64);
    assert!(sample(&on_leader, "raftkv_applied_index") >= writes as f64);
    assert!(sample(&on_leader, "raftkv_committed_index") >= writes as f64);
    assert!(sample(&on_leader, "raftkv_log_append_seconds_count") >= 1.0);
    assert!(sample(&on_leader, "raftkv_fsync_seconds_count") >= 1.0);
    assert_eq!(sample(&on_leader, "raftkv_keys"), writes as f64);
    assert_eq!(sample(&on_leader, "raftkv_compact_revision"), 0.0);
    // A compaction moves the gauge on every node.
    let at = status.applied_index.unwrap_or(0);
    cluster
        .node(leader)
        .client()
        .compact(at)
        .await
        .expect("compact");
    for node in &cluster.nodes {
        wait_for("the compaction shows in the metrics", || {
            let samples = scrape(node);
            async move {
                (samples.get("raftkv_compact_revision").copied() == Some(at as f64)).then_some(())
            }
        })
        .await;
    }
    assert!(sample(&on_leader, "raftkv_db_bytes") > 0.0);
    let puts = r#"raftkv_grpc_requests_total{service="raftkv.KV",method="Put",code="OK"}"#;
    assert!(sample(&on_leader, puts) >= writes as f64);
    assert!(
        sample(
            &on_leader,
            r#"raftkv_grpc_request_seconds_count{service="raftkv.KV",method="Put"}"#
        ) >= writes as f64
    );
    for follower in cluster.nodes.iter().filter(|n| n.id != leader) {
        // The leader tracks each follower's lag; a follower does not lead.
        let lag = format!(
            r#"raftkv_replication_lag_entries{{peer="{}"}}"#,
            follower.id
        );
        assert!(sample(&on_leader, &lag) >= 0.0);
        let samples = scrape(follower);
        assert_eq!(sample(&samples, "raftkv_is_leader"), 0.0);
        assert_eq!(sample(&samples, "raftkv_has_leader"), 1.0);
        assert!(sample(&samples, "raftkv_entries_applied_total") >= writes as f64);
        assert!(!samples
            .keys()
            .any(|k| k.starts_with("raftkv_replication_lag_entries")));
    }

    // Alive and ready everywhere; a node outside any cluster is alive, not ready.
    for node in &cluster.nodes {
        assert_eq!(node.http_get("/healthz").map(|r| r.0), Some(200));
        assert_eq!(node.http_get("/readyz").map(|r| r.0), Some(200));
    }
    let loner = cluster
        .start_node(NodeSpec::new(cluster.dir(), 9).flags(&["--metrics-listen", "127.0.0.1:0"]));
    assert_eq!(loner.http_get("/healthz").map(|r| r.0), Some(200));
    let (code, why) = loner.http_get("/readyz").expect("readyz answers");
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("not a member"), "{why}");
    assert_eq!(loner.http_get("/nothing").map(|r| r.0), Some(404));
}

/// The count of calls `node` forwarded one `way` (0 before the first).
fn forwarded(node: &TestNode, way: &str) -> f64 {
    let series = format!(r#"raftkv_forwarded_calls_total{{way="{way}"}}"#);
    scrape(node).get(&series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_calls_on_its_stream_and_large_ones_on_their_own() {
    let mut cluster = TestCluster::builder()
        .flags(&["--metrics-listen", "127.0.0.1:0"])
        .start(3)
        .await;
    let leader = cluster.wait_for_leader().await;
    let on_leader = cluster.node(leader).client();
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("a follower");
    let on_follower = follower.client();

    // Small writes and linearizable reads travel on the stream, and their
    // answers come back whole.
    for i in 0..5 {
        put(&on_follower, &format!("small{i}"), "v").await;
    }
    assert_eq!(
        crate::support::get(&on_follower, "small4", false)
            .await
            .as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(forwarded(follower, "stream"), 6.0);
    assert_eq!(forwarded(follower, "call"), 0.0);
    // So do refusals, with their code and metadata.
    let refused = on_follower
        .compare_and_swap("small0", Some("not this".into()), "w")
        .await
        .expect("a compare-and-swap answers");
    assert!(!refused.succeeded);
    assert_eq!(refused.current_value.as_deref(), Some(&b"v"[..]));
    let too_long = "k".repeat(8 << 10);
    let error = on_follower
        .put(too_long, "v")
        .await
        .expect_err("a key over the limit is refused");
    match error.error {
        raftkv_client::ClientError::Rpc(status) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}")
        }
        other => panic!("refused by the node, not {other}"),
    }
    assert_eq!(forwarded(follower, "stream"), 8.0);

    // A write larger than a stream message goes as a call of its own.
    let large = "x".repeat(300 << 10);
    put(&on_follower, "large", &large).await;
    assert_eq!(forwarded(follower, "call"), 1.0);
    assert_eq!(
        crate::support::get(&on_leader, "large", false)
            .await
            .map(|v| v.len()),
        Some(large.len())
    );
    // The leader forwards nothing.
    assert_eq!(forwarded(cluster.get(leader), "stream"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_etcds_writes_itself_and_proposes_them_through_the_leader() {
    use raftkv_proto::etcd::etcdserverpb as pb;
    use raftkv_proto::etcd::etcdserverpb::kv_client::KvClient;
    use raftkv_proto::etcd::etcdserverpb::request_op::Request;
    use raftkv_proto::etcd::etcdserverpb::response_op::Response;

    let mut cluster = TestCluster::builder()
        .flags(&["--metrics-listen", "127.0.0.1:0"])
        .start(3)
        .await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("a follower");
    let mut kv = KvClient::new(follower.channel());
    let put = |key: &str, value: &str| pb::PutRequest {
        key: key.into(),
        value: value.into(),
        prev_kv: true,
        ..Default::default()
    };

    // The first write goes to the leader whole, which opens the stream;
    // the leader answered it.
    let first = kv.put(put("a", "1")).await.expect("a put").into_inner();
    assert_eq!(first.header.expect("a header").member_id, leader);
    assert_eq!(forwarded(follower, "stream"), 1.0);
    assert_eq!(forwarded(follower, "proposal"), 0.0);

    // Later ones are served here and proposed through the leader: this
    // follower answers, with what the leader's state machine returned.
    let second = kv.put(put("a", "2")).await.expect("a put").into_inner();
    let header = second.header.expect("a header");
    assert_eq!(header.member_id, follower.id);
    assert!(header.revision > 0 && header.raft_term > 0);
    let prev = second.prev_kv.expect("the value replaced");
    assert_eq!((prev.value.as_slice(), prev.version), (&b"1"[..], 1));
    let txn = kv
        .txn(pb::TxnRequest {
            compare: vec![pb::Compare {
                key: "a".into(),
                target: pb::compare::CompareTarget::Value as i32,
                result: pb::compare::CompareResult::Equal as i32,
                target_union: Some(pb::compare::TargetUnion::Value("2".into())),
                ..Default::default()
            }],
            success: vec![
                pb::RequestOp {
                    request: Some(Request::RequestPut(put("b", "3"))),
                },
                pb::RequestOp {
                    request: Some(Request::RequestRange(pb::RangeRequest {
                        key: "a".into(),
                        range_end: vec![0],
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        })
        .await
        .expect("a txn")
        .into_inner();
    assert!(txn.succeeded);
    let read: Vec<_> = match &txn.responses[1].response {
        Some(Response::ResponseRange(range)) => range.kvs.iter().map(|kv| kv.key.clone()).collect(),
        other => panic!("a range's answer, not {other:?}"),
    };
    assert_eq!(read, vec![b"a".to_vec(), b"b".to_vec()]);
    let deleted = kv
        .delete_range(pb::DeleteRangeRequest {
            key: "a".into(),
            range_end: vec![0],
            prev_kv: true,
        })
        .await
        .expect("a delete")
        .into_inner();
    assert_eq!(deleted.deleted, 2);
    assert_eq!(deleted.prev_kvs.len(), 2);
    // What the state machine refuses comes back as etcd's error.
    let refused = kv
        .put(pb::PutRequest {
            lease: 12345,
            ..put("c", "4")
        })
        .await
        .expect_err("no such lease");
    assert_eq!(
        (refused.code(), refused.message()),
        (
            tonic::Code::NotFound,
            "etcdserver: requested lease not found"
        )
    );
    assert_eq!(forwarded(follower, "proposal"), 4.0);
    assert_eq!(forwarded(follower, "stream"), 1.0);
    // A write too large for the shared stream is proposed on one of its own.
    let large = "x".repeat(300 << 10);
    kv.put(put("large", &large)).await.expect("a large put");
    assert_eq!(forwarded(follower, "proposal"), 5.0);
    assert_eq!(forwarded(follower, "call"), 0.0);

    // A write the follower proposed reads back on the leader.
    let on_leader = cluster.node(leader).channel();
    let got = KvClient::new(on_leader)
        .range(pb::RangeRequest {
            key: "b".into(),
            ..Default::default()
        })
        .await
        .expect("a range")
        .into_inner();
    assert!(got.kvs.is_empty(), "the delete removed it: {got:?}");
    assert!(got.header.expect("a header").revision >= deleted.header.expect("a header").revision);
}
