//! etcd's API on a raftkv cluster, through etcd's own generated clients:
//! put, range, delete-range, txn and compact with etcd's semantics,
//! answered by a follower as well as by the leader, and etcd's errors with
//! etcd's exact text; the status, member list, hash and leader moves that
//! `etcdctl endpoint` and `member` use.

use raftkv_proto::etcd::etcdserverpb as pb;
use raftkv_proto::etcd::etcdserverpb::auth_client::AuthClient;
use raftkv_proto::etcd::etcdserverpb::cluster_client::ClusterClient;
use raftkv_proto::etcd::etcdserverpb::compare::CompareResult;
use raftkv_proto::etcd::etcdserverpb::compare::CompareTarget;
use raftkv_proto::etcd::etcdserverpb::compare::TargetUnion;
use raftkv_proto::etcd::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcd::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcd::etcdserverpb::maintenance_client::MaintenanceClient;
use raftkv_proto::etcd::etcdserverpb::range_request::SortOrder;
use raftkv_proto::etcd::etcdserverpb::range_request::SortTarget;
use raftkv_proto::etcd::etcdserverpb::request_op::Request;
use raftkv_proto::etcd::etcdserverpb::response_op::Response as OpResponse;
use raftkv_proto::etcd::etcdserverpb::watch_client::WatchClient;
use raftkv_proto::etcd::etcdserverpb::watch_create_request::FilterType;
use raftkv_proto::etcd::etcdserverpb::watch_request::RequestUnion;
use raftkv_proto::etcd::mvccpb;
use raftkv_testkit::wait_for;

use crate::support::unused_address;
use raftkv_testkit::TestCluster;
use tonic::transport::Channel;
use tonic::Code;

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> pb::PutResponse {
    kv.put(pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
    .await
    .expect("put")
    .into_inner()
}

fn prefix(key: &str) -> pb::RangeRequest {
    let mut end = key.as_bytes().to_vec();
    *end.last_mut().expect("a prefix") += 1;
    pb::RangeRequest {
        key: key.into(),
        range_end: end,
        ..Default::default()
    }
}

fn keys(response: &pb::RangeResponse) -> Vec<String> {
    response
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

#[tokio::test]
async fn etcds_kv_calls_keep_etcds_rules_on_a_follower_and_the_leader() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut kv = KvClient::new(cluster.node(follower).channel());

    // Put: each write a revision; prev_kv returns what it replaced.
    let first = put(&mut kv, "app/a", "1").await;
    let header = first.header.expect("a header");
    // The follower passed the first write on whole: the leader answered
    // it. Later ones it serves itself, proposing them through the leader.
    assert_eq!(header.member_id, leader);
    assert!(header.raft_term > 0);
    let created = header.revision;
    let second = put(&mut kv, "app/b", "2").await;
    assert_eq!(second.header.expect("a header").member_id, follower);
    put(&mut kv, "app/c", "3").await;
    put(&mut kv, "other", "x").await;
    let replaced = kv
        .put(pb::PutRequest {
            key: "app/a".into(),
            value: "1b".into(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let prev = replaced.prev_kv.expect("the value replaced");
    assert_eq!(
        (prev.value.as_slice(), prev.mod_revision),
        (&b"1"[..], created)
    );
    let now = replaced.header.unwrap().revision;
    assert!(now > created);

    // Range: a prefix, with a limit, count and more; keys only; sorted.
    let page = kv
        .range(pb::RangeRequest {
            limit: 2,
            ..prefix("app/")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (keys(&page), page.more, page.count),
        (vec!["app/a".into(), "app/b".into()], true, 3)
    );
    let a = &page.kvs[0];
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version),
        (created, now, 2)
    );
    let sorted = kv
        .range(pb::RangeRequest {
            keys_only: true,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Mod as i32,
            ..prefix("app/")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys(&sorted), vec!["app/a", "app/c", "app/b"]);
    assert!(sorted.kvs.iter().all(|kv| kv.value.is_empty()));
    // "\0" as the end: every key from the key on.
    let from_b = kv
        .range(pb::RangeRequest {
            key: "app/b".into(),
            range_end: vec![0],
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((from_b.kvs.len(), from_b.count), (0, 3));
    // At an older revision, serializable (this follower's own state).
    let old = kv
        .range(pb::RangeRequest {
            key: "app/a".into(),
            revision: created,
            serializable: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.kvs[0].value, b"1");
    assert!(
        old.header.unwrap().revision >= now,
        "the header names the store's revision"
    );

    // Txn: compares read the state before it; the branch runs at one revision.
    let txn = |compare_mod: i64| pb::TxnRequest {
        compare: vec![pb::Compare {
            key: "app/a".into(),
            target: CompareTarget::Mod as i32,
            result: CompareResult::Equal as i32,
            target_union: Some(TargetUnion::ModRevision(compare_mod)),
            ..Default::default()
        }],
        success: vec![
            pb::RequestOp {
                request: Some(Request::RequestPut(pb::PutRequest {
                    key: "app/d".into(),
                    value: "4".into(),
                    ..Default::default()
                })),
            },
            pb::RequestOp {
                request: Some(Request::RequestRange(prefix("app/"))),
            },
        ],
        failure: vec![pb::RequestOp {
            request: Some(Request::RequestRange(pb::RangeRequest {
                key: "app/a".into(),
                ..Default::default()
            })),
        }],
    };
    let lost = kv.txn(txn(created)).await.unwrap().into_inner();
    assert!(!lost.succeeded);
    let Some(OpResponse::ResponseRange(found)) = &lost.responses[0].response else {
        panic!("the failure branch's range: {lost:?}");
    };
    assert_eq!(found.kvs[0].mod_revision, now);
    let won = kv.txn(txn(now)).await.unwrap().into_inner();
    assert!(won.succeeded);
    let Some(OpResponse::ResponseRange(seen)) = &won.responses[1].response else {
        panic!("the success branch's range: {won:?}");
    };
    // The range sees the put before it in the same transaction.
    assert_eq!(keys(seen), vec!["app/a", "app/b", "app/c", "app/d"]);
    let txn_revision = won.header.unwrap().revision;
    assert_eq!(seen.kvs[3].mod_revision, txn_revision);

    // DeleteRange over the prefix, with what it deleted.
    let deleted = kv
        .delete_range(pb::DeleteRangeRequest {
            key: "app/".into(),
            range_end: prefix("app/").range_end,
            prev_kv: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 4);
    assert_eq!(deleted.prev_kvs.len(), 4);
    let gone = kv.range(prefix("app/")).await.unwrap().into_inner();
    assert_eq!((gone.kvs.len(), gone.count), (0, 0));
    let still = kv
        .range(pb::RangeRequest {
            key: "other".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.kvs[0].value, b"x");

    // etcd's errors, with etcd's text.
    let missing = kv
        .put(pb::PutRequest {
            key: "nothing-here".into(),
            ignore_value: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (missing.code(), missing.message()),
        (Code::InvalidArgument, "etcdserver: key not found")
    );
    let no_lease = kv
        .put(pb::PutRequest {
            key: "k".into(),
            value: "v".into(),
            lease: 987_654,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (no_lease.code(), no_lease.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );
    let empty = kv.range(pb::RangeRequest::default()).await.unwrap_err();
    assert_eq!(empty.message(), "etcdserver: key is not provided");
    let twice = kv
        .txn(pb::TxnRequest {
            success: vec![
                pb::RequestOp {
                    request: Some(Request::RequestPut(pb::PutRequest {
                        key: "k".into(),
                        ..Default::default()
                    })),
                };
                2
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        twice.message(),
        "etcdserver: duplicate key given in txn request"
    );
    let future = kv
        .range(pb::RangeRequest {
            key: "other".into(),
            revision: txn_revision + 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (future.code(), future.message()),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision"
        )
    );

    // Compact, then the history before it is refused as etcd refuses it.
    kv.compact(pb::CompactionRequest {
        revision: txn_revision,
        physical: false,
    })
    .await
    .unwrap();
    let compacted = kv
        .range(pb::RangeRequest {
            key: "other".into(),
            revision: created,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (compacted.code(), compacted.message()),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted"
        )
    );
    let again = kv
        .compact(pb::CompactionRequest {
            revision: created,
            physical: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        again.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
}

#[tokio::test]
async fn etcds_status_member_list_hash_and_move_leader_describe_and_steer_the_cluster() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut kv = KvClient::new(cluster.node(follower).channel());
    let written = put(&mut kv, "k", "v").await.header.unwrap().revision;

    let mut hashes = Vec::new();
    for id in 1..=3 {
        let channel = cluster.node(id).channel();
        let mut maintenance = MaintenanceClient::new(channel.clone());
        let status = maintenance
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.header.as_ref().unwrap().member_id, id);
        assert_eq!(status.leader, leader);
        assert_eq!(status.version, "3.5.13");
        assert!(!status.is_learner);
        assert!(status.raft_term >= 1 && status.raft_index >= status.raft_applied_index);
        assert!(status.db_size > 0 && status.errors.is_empty());
        let members = ClusterClient::new(channel)
            .member_list(pb::MemberListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .members;
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        let address = cluster.node(id).address.clone();
        let own = &members[usize::try_from(id).unwrap() - 1];
        assert_eq!(own.client_ur_ls, vec![format!("http://{address}")]);
        // A member that has not applied the put yet hashes an older state
        // (its own applied index, as Status gave it, may be older too).
        let (hash, revision) = loop {
            let answer = maintenance
                .hash_kv(pb::HashKvRequest { revision: 0 })
                .await
                .unwrap()
                .into_inner();
            let revision = answer.header.as_ref().unwrap().revision;
            if revision >= written {
                break (answer.hash, revision);
            }
            tokio::task::yield_now().await;
        };
        // etcd's older Hash is the same digest here, of the same state: no
        // write follows the put.
        let older = maintenance
            .hash(pb::HashRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(older.header.unwrap().revision, revision);
        assert_eq!(older.hash, hash);
        hashes.push(hash);
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");

    let alarms = MaintenanceClient::new(cluster.node(follower).channel())
        .alarm(pb::AlarmRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(alarms.alarms.is_empty());

    // MoveLeader, sent to a follower, moves leadership to that follower.
    MaintenanceClient::new(cluster.node(follower).channel())
        .move_leader(pb::MoveLeaderRequest {
            target_id: follower,
        })
        .await
        .unwrap();
    assert_eq!(
        cluster
            .leader_within(raftkv_testkit::PATIENCE, Some(leader))
            .await,
        follower
    );
    let unknown = MaintenanceClient::new(cluster.node(follower).channel())
        .move_leader(pb::MoveLeaderRequest { target_id: 0 })
        .await
        .unwrap_err();
    assert_eq!(unknown.message(), "etcdserver: bad leader transferee");
}

/// The stream's next answer (within the test kit's patience).
async fn next(answers: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(raftkv_testkit::PATIENCE, answers.message())
        .await
        .expect("an answer in time")
        .unwrap()
        .expect("the stream goes on")
}

fn create(key: &str, range_end: &[u8], start: i64, id: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: key.into(),
            range_end: range_end.to_vec(),
            start_revision: start,
            watch_id: id,
            ..Default::default()
        })),
    }
}

#[tokio::test]
async fn etcds_watch_stream_carries_many_watches_from_a_revision_and_cancels_compacted_ones() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let channel = cluster.node(follower).channel();
    let mut kv = KvClient::new(channel.clone());
    let start = put(&mut kv, "w/a", "1").await.header.unwrap().revision;
    put(&mut kv, "w/b", "2").await;

    let (requests, rx) = tokio::sync::mpsc::channel(8);
    let mut answers = WatchClient::new(channel)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // A prefix watch from the first put, with previous values.
    let mut prefix_watch = create("w/", &prefix("w/").range_end, start, 7);
    if let Some(RequestUnion::CreateRequest(c)) = &mut prefix_watch.request_union {
        c.prev_kv = true;
    }
    requests.send(prefix_watch).await.unwrap();
    let created = next(&mut answers).await;
    assert!(created.created && created.watch_id == 7);
    let history = next(&mut answers).await;
    assert_eq!(history.events[0].kv.as_ref().unwrap().key, b"w/a");
    let b = next(&mut answers).await;
    assert_eq!(b.events[0].kv.as_ref().unwrap().value, b"2");

    // A second watch on the same stream: deletes of w/a only (NOPUT), an id
    // chosen by the server.
    let mut deletes = create("w/a", b"", 0, 0);
    if let Some(RequestUnion::CreateRequest(c)) = &mut deletes.request_union {
        c.filters = vec![FilterType::Noput as i32];
    }
    requests.send(deletes).await.unwrap();
    let second = next(&mut answers).await;
    assert!(second.created);
    let second_id = second.watch_id;
    assert_ne!(second_id, 7);
    put(&mut kv, "w/a", "3").await;
    kv.delete_range(pb::DeleteRangeRequest {
        key: "w/a".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let answer = next(&mut answers).await;
        for event in answer.events {
            seen.push((
                answer.watch_id,
                event.r#type,
                event.prev_kv.map(|kv| kv.value),
            ));
        }
    }
    let delete = mvccpb::event::EventType::Delete as i32;
    let put_event = mvccpb::event::EventType::Put as i32;
    assert!(
        seen.contains(&(7, put_event, Some(b"1".to_vec()))),
        "{seen:?}"
    );
    assert!(seen.contains(&(7, delete, Some(b"3".to_vec()))), "{seen:?}");
    assert!(seen.contains(&(second_id, delete, None)), "{seen:?}");

    // Cancel, progress, and a start the compaction passed.
    requests
        .send(pb::WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(pb::WatchCancelRequest {
                watch_id: second_id,
            })),
        })
        .await
        .unwrap();
    let cancelled = next(&mut answers).await;
    assert!(cancelled.canceled && cancelled.watch_id == second_id);
    requests
        .send(pb::WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
        })
        .await
        .unwrap();
    let progress = next(&mut answers).await;
    assert_eq!(progress.watch_id, -1);
    let now = progress.header.unwrap().revision;
    kv.compact(pb::CompactionRequest {
        revision: now,
        physical: false,
    })
    .await
    .unwrap();
    // The call returns once the leader has applied it: the watch's node (a
    // follower) must have too, or the watch is valid there and, on a key
    // never written, silent.
    wait_for("the follower applies the compaction", || {
        let mut kv = kv.clone();
        async move {
            let refused = kv
                .range(pb::RangeRequest {
                    key: "w/a".into(),
                    revision: start,
                    serializable: true,
                    ..Default::default()
                })
                .await
                .err()?;
            (refused.message() == "etcdserver: mvcc: required revision has been compacted")
                .then_some(())
        }
    })
    .await;
    requests.send(create("w/", b"", start, 9)).await.unwrap();
    assert!(next(&mut answers).await.created);
    let refused = next(&mut answers).await;
    assert!(refused.canceled && refused.watch_id == 9, "{refused:?}");
    assert!(refused.compact_revision >= now - 1, "{refused:?}");
}

#[tokio::test]
async fn a_watch_that_needs_a_leader_is_refused_by_a_node_without_one() {
    // A node that was never bootstrapped or joined knows no leader.
    let mut cluster = TestCluster::new();
    let spec = cluster.node_spec(1);
    let channel = cluster.start_node(spec).channel();
    let (_requests, rx) = tokio::sync::mpsc::channel::<pb::WatchRequest>(1);
    let mut call = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    call.metadata_mut()
        .insert("hasleader", "true".parse().unwrap());
    let refused = WatchClient::new(channel.clone())
        .watch(call)
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::Unavailable, "etcdserver: no leader")
    );
    // Without the requirement the node serves the watch from its own state.
    let (requests, rx) = tokio::sync::mpsc::channel(1);
    let mut answers = WatchClient::new(channel)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    requests.send(create("k", b"", 0, 0)).await.unwrap();
    assert!(next(&mut answers).await.created);
}

#[tokio::test]
async fn etcds_member_promote_and_remove_change_the_membership() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let spec = cluster.node_spec(4);
    let address = cluster.start_node(spec).address.clone();
    cluster
        .node(leader)
        .admin()
        .add_learner(raftkv_proto::pb::AddNodeRequest {
            node_id: 4,
            address,
            previous_index: 0,
        })
        .await
        .expect("node 4 joins as a learner");
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut members = ClusterClient::new(cluster.node(follower).channel());
    let learners = |list: &[pb::Member]| {
        list.iter()
            .filter(|m| m.is_learner)
            .map(|m| m.id)
            .collect::<Vec<_>>()
    };
    let listed = members
        .member_list(pb::MemberListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(learners(&listed), vec![4]);

    // Promoted through a follower: every member a voter.
    let promoted = members
        .member_promote(pb::MemberPromoteRequest { id: 4 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promoted.members.len(), 4);
    assert!(learners(&promoted.members).is_empty());
    let again = members
        .member_promote(pb::MemberPromoteRequest { id: 4 })
        .await
        .unwrap_err();
    assert_eq!(
        (again.code(), again.message()),
        (
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member"
        )
    );

    // Removed: three members again; an unknown id is etcd's "member not found".
    let removed = members
        .member_remove(pb::MemberRemoveRequest { id: 4 })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<u64> = removed.members.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let unknown = members
        .member_remove(pb::MemberRemoveRequest { id: 99 })
        .await
        .unwrap_err();
    assert_eq!(
        (unknown.code(), unknown.message()),
        (Code::NotFound, "etcdserver: member not found")
    );
}

#[tokio::test]
async fn a_range_larger_than_one_answer_is_refused_and_a_limited_one_pages_through_it() {
    let mut cluster = TestCluster::start(1).await;
    let leader = cluster.wait_for_leader().await;
    let mut kv = KvClient::new(cluster.node(leader).channel());
    // Five values of 1 MiB: more than the 4 MiB a node sends in one
    // message by default.
    let value = vec![b'v'; 1 << 20];
    for i in 0..5 {
        kv.put(pb::PutRequest {
            key: format!("big/{i}").into(),
            value: value.clone(),
            ..Default::default()
        })
        .await
        .expect("put");
    }
    let refused = kv.range(prefix("big/")).await.expect_err("too large");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    // Counting them, or asking for fewer, is answered.
    let counted = kv
        .range(pb::RangeRequest {
            count_only: true,
            ..prefix("big/")
        })
        .await
        .expect("count")
        .into_inner();
    assert_eq!(counted.count, 5);
    let page = kv
        .range(pb::RangeRequest {
            limit: 2,
            ..prefix("big/")
        })
        .await
        .expect("a page")
        .into_inner();
    assert_eq!(keys(&page), ["big/0", "big/1"]);
    assert!(page.more);
    assert_eq!(page.count, 5);
    assert!(page.kvs.iter().all(|kv| kv.value == value));
}

#[tokio::test]
async fn etcds_auth_is_disabled_and_its_calls_are_refused_with_etcds_errors() {
    let mut cluster = TestCluster::start(1).await;
    let leader = cluster.wait_for_leader().await;
    let mut auth = AuthClient::new(cluster.node(leader).channel());
    let status = auth
        .auth_status(pb::AuthStatusRequest {})
        .await
        .expect("auth status")
        .into_inner();
    assert!(!status.enabled);
    assert_eq!(status.header.expect("a header").member_id, leader);
    // Disabling what is disabled is a no-op, as in etcd.
    auth.auth_disable(pb::AuthDisableRequest {})
        .await
        .expect("auth disable");
    let enable = auth
        .auth_enable(pb::AuthEnableRequest {})
        .await
        .expect_err("no root user");
    assert_eq!(
        (enable.code(), enable.message()),
        (
            Code::FailedPrecondition,
            "etcdserver: root user does not exist"
        )
    );
    let user = auth
        .user_add(pb::AuthUserAddRequest {
            name: "root".into(),
            password: "secret".into(),
            ..Default::default()
        })
        .await
        .expect_err("auth is not enabled");
    let token = auth
        .authenticate(pb::AuthenticateRequest {
            name: "root".into(),
            password: "secret".into(),
        })
        .await
        .expect_err("auth is not enabled");
    for refused in [user, token] {
        assert_eq!(
            (refused.code(), refused.message()),
            (
                Code::FailedPrecondition,
                "etcdserver: authentication is not enabled"
            )
        );
    }
}

#[tokio::test]
async fn etcds_member_add_picks_the_next_id_for_a_member_started_later() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut members = ClusterClient::new(cluster.node(follower).channel());
    // The address of the node to come: reserved by starting it later
    // under the id MemberAdd picks (one above every member's).
    let spec = cluster.node_spec(4);
    let url = |address: &str| vec![format!("http://{address}")];
    let bad = |urls: Vec<String>, is_learner| pb::MemberAddRequest {
        peer_ur_ls: urls,
        is_learner,
    };
    for urls in [
        vec![],
        vec!["ftp://127.0.0.1:1".to_string()],
        url("127.0.0.1:1/path"),
    ] {
        let refused = members
            .member_add(bad(urls.clone(), true))
            .await
            .expect_err("bad URLs");
        assert_eq!(
            (refused.code(), refused.message()),
            (
                Code::InvalidArgument,
                "etcdserver: given member URLs are invalid"
            ),
            "{urls:?}"
        );
    }
    let taken = cluster.node(leader).address.clone();
    let refused = members
        .member_add(bad(url(&taken), true))
        .await
        .expect_err("an address in use");
    assert_eq!(
        (refused.code(), refused.message()),
        (
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists"
        )
    );

    let node = cluster.start_node(spec);
    let address = node.address.clone();
    let added = members
        .member_add(bad(url(&address), true))
        .await
        .expect("member add --learner")
        .into_inner();
    let member = added.member.expect("the new member");
    assert_eq!(member.id, 4);
    assert!(member.is_learner);
    assert_eq!(member.peer_ur_ls, url(&address));
    assert_eq!(added.members.len(), 4);
    // The learner receives the log: a write through etcd's API reaches it.
    let mut kv = KvClient::new(cluster.node(leader).channel());
    let written = put(&mut kv, "joined", "yes").await;
    let index = u64::try_from(written.header.expect("a header").revision).expect("a revision");
    cluster.wait_applied(index).await;
    let promoted = members
        .member_promote(pb::MemberPromoteRequest { id: 4 })
        .await
        .expect("member promote")
        .into_inner();
    assert!(promoted.members.iter().all(|m| !m.is_learner));
}

#[tokio::test]
async fn etcds_member_add_of_a_voter_makes_it_vote_once_it_has_started_and_caught_up() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let mut members = ClusterClient::new(cluster.node(leader).channel());
    let address = unused_address();
    let spec = cluster.node_spec(4).listen(&address);
    // Added before it runs: a learner, so the quorum does not wait for it.
    let added = members
        .member_add(pb::MemberAddRequest {
            peer_ur_ls: vec![format!("http://{address}")],
            is_learner: false,
        })
        .await
        .expect("member add")
        .into_inner();
    let member = added.member.expect("the new member");
    assert_eq!(member.id, 4);
    assert!(member.is_learner, "not a voter before it has started");
    let mut kv = KvClient::new(cluster.node(leader).channel());
    put(&mut kv, "before", "it started").await;
    cluster.start_node(spec);
    wait_for("node 4 votes", || {
        let mut members = members.clone();
        async move {
            let list = members
                .member_list(pb::MemberListRequest::default())
                .await
                .ok()?
                .into_inner();
            list.members
                .iter()
                .any(|m| m.id == 4 && !m.is_learner)
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_call_for_the_leader_on_a_node_without_one_gets_etcds_no_leader() {
    // A node that was never initialised knows no leader.
    let mut cluster = raftkv_testkit::TestCluster::new();
    let spec = cluster.node_spec(1);
    let node = cluster.start_node(spec);
    let mut kv = KvClient::new(node.channel());
    let refused = kv
        .put(pb::PutRequest {
            key: "k".into(),
            value: "v".into(),
            ..Default::default()
        })
        .await
        .expect_err("no leader");
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::Unavailable, "etcdserver: no leader")
    );
    let mut leases = LeaseClient::new(node.channel());
    let refused = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 10, id: 0 })
        .await
        .expect_err("no leader");
    assert_eq!(refused.message(), "etcdserver: no leader");
}

#[tokio::test]
async fn etcds_member_update_moves_a_member_and_the_leader_follows_it() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let moved = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut members = ClusterClient::new(cluster.node(leader).channel());
    let url = |address: &str| vec![format!("http://{address}")];
    let update = |id, address: &str| pb::MemberUpdateRequest {
        id,
        peer_ur_ls: url(address),
    };

    // Refused, changing nothing: an unknown member, another member's
    // address, a URL that is not one host and port.
    let taken = cluster.node(leader).address.clone();
    let refusals = [
        (
            update(99, "127.0.0.1:1"),
            (Code::NotFound, "etcdserver: member not found"),
        ),
        (
            update(moved, &taken),
            (
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ),
        ),
        (
            pb::MemberUpdateRequest {
                id: moved,
                peer_ur_ls: vec!["127.0.0.1:1".into()],
            },
            (
                Code::InvalidArgument,
                "etcdserver: given member URLs are invalid",
            ),
        ),
    ];
    for (request, expected) in refusals {
        let refused = members
            .member_update(request.clone())
            .await
            .expect_err("refused");
        assert_eq!((refused.code(), refused.message()), expected, "{request:?}");
    }

    // The follower moves: stopped, started on its data at a new address,
    // then updated. The leader's replication to it, made for the old
    // address, must find it at the new one.
    let old = cluster.node(moved).address.clone();
    assert!(cluster.node(moved).stop(), "a clean stop");
    let new = unused_address();
    cluster.node(moved).restart_at(&new);
    let mut kv = KvClient::new(cluster.node(leader).channel());
    put(&mut kv, "before", "the move").await;
    let updated = members
        .member_update(update(moved, &new))
        .await
        .expect("member update")
        .into_inner();
    let member = updated
        .members
        .iter()
        .find(|m| m.id == moved)
        .expect("still a member");
    assert_eq!(member.peer_ur_ls, url(&new));
    assert_eq!(member.client_ur_ls, url(&new));
    assert!(!member.is_learner, "a voter stays a voter");
    assert!(updated.members.iter().all(|m| m.peer_ur_ls != url(&old)));
    let written = put(&mut kv, "after", "the move").await;
    let index = u64::try_from(written.header.expect("a header").revision).expect("a revision");
    cluster.wait_applied(index).await;
    let listed = ClusterClient::new(cluster.node(moved).channel())
        .member_list(pb::MemberListRequest::default())
        .await
        .expect("member list on the moved node")
        .into_inner();
    let member = listed
        .members
        .iter()
        .find(|m| m.id == moved)
        .expect("listed");
    assert_eq!(member.peer_ur_ls, url(&new));
}

#[tokio::test]
async fn a_revoke_larger_than_one_message_reaches_a_fragment_watch_in_parts_and_others_whole() {
    let mut cluster = TestCluster::start(1).await;
    let leader = cluster.wait_for_leader().await;
    let channel = cluster.node(leader).channel();
    // 80 keys of 64 KiB on one lease: their revoke's events with previous
    // values take 5 MiB, over the 4 MiB + 64 KiB message limit.
    let lease = LeaseClient::new(channel.clone())
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("lease grant")
        .into_inner()
        .id;
    let mut kv = KvClient::new(channel.clone());
    const KEYS: usize = 80;
    for i in 0..KEYS {
        kv.put(pb::PutRequest {
            key: format!("big/{i:03}").into_bytes(),
            value: vec![b'v'; 64 << 10],
            lease,
            ..Default::default()
        })
        .await
        .expect("put");
    }

    let (requests, rx) = tokio::sync::mpsc::channel(8);
    let mut answers = WatchClient::new(channel.clone())
        .max_decoding_message_size(usize::MAX)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for (id, fragment) in [(1, true), (2, false)] {
        let mut watch = create("big/", &prefix("big/").range_end, 0, id);
        if let Some(RequestUnion::CreateRequest(c)) = &mut watch.request_union {
            c.prev_kv = true;
            c.fragment = fragment;
        }
        requests.send(watch).await.unwrap();
        let created = next(&mut answers).await;
        assert!(created.created && created.watch_id == id);
    }
    let revoked = LeaseClient::new(channel)
        .lease_revoke(pb::LeaseRevokeRequest { id: lease })
        .await
        .expect("lease revoke")
        .into_inner();
    let revision = revoked.header.expect("a header").revision;

    let (mut parts, mut whole) = (Vec::new(), Vec::new());
    while parts
        .iter()
        .map(|p: &pb::WatchResponse| p.events.len())
        .sum::<usize>()
        < KEYS
        || whole.is_empty()
    {
        let answer = next(&mut answers).await;
        assert_eq!(answer.header.as_ref().unwrap().revision, revision);
        match answer.watch_id {
            1 => parts.push(answer),
            2 => whole.push(answer),
            other => panic!("an answer for watch {other}"),
        }
    }
    assert!(
        parts.len() >= 2,
        "the fragment watch got {} parts",
        parts.len()
    );
    let marks: Vec<bool> = parts.iter().map(|p| p.fragment).collect();
    let mut expected = vec![true; parts.len() - 1];
    expected.push(false);
    assert_eq!(marks, expected);
    let [whole] = whole.as_slice() else {
        panic!("the other watch got {} messages", whole.len())
    };
    assert!(!whole.fragment);
    let keys = |events: &[mvccpb::Event]| -> Vec<Vec<u8>> {
        events
            .iter()
            .map(|e| {
                assert_eq!(e.r#type, mvccpb::event::EventType::Delete as i32);
                assert_eq!(e.prev_kv.as_ref().expect("prev_kv").value.len(), 64 << 10);
                e.kv.as_ref().unwrap().key.clone()
            })
            .collect()
    };
    let pieced: Vec<mvccpb::Event> = parts.iter().flat_map(|p| p.events.clone()).collect();
    assert_eq!(keys(&pieced), keys(&whole.events));
    assert_eq!(keys(&whole.events).len(), KEYS);
}

/// The `cluster_id` node `id` answers in etcd's headers, once it has one.
async fn cluster_id(cluster: &mut TestCluster, id: u64) -> u64 {
    let channel = cluster.node(id).channel();
    wait_for("the node knows the cluster's id", || {
        let mut maintenance = MaintenanceClient::new(channel.clone());
        async move {
            let status = maintenance
                .status(pb::StatusRequest::default())
                .await
                .ok()?
                .into_inner();
            Some(status.header?.cluster_id).filter(|id| *id != 0)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_answers_one_cluster_id_for_the_clusters_life() {
    let flags = ["--snapshot-after", "20", "--snapshot-keep", "0"];
    let mut cluster = TestCluster::builder().flags(&flags).start(3).await;
    let leader = cluster.wait_for_leader().await;
    let named = cluster_id(&mut cluster, leader).await;
    for id in 1..=3 {
        assert_eq!(cluster_id(&mut cluster, id).await, named, "node {id}");
    }
    // Another cluster is another id.
    let mut other = TestCluster::start(1).await;
    let other_leader = other.wait_for_leader().await;
    assert_ne!(cluster_id(&mut other, other_leader).await, named);

    // A member that joins once the log is purged gets it in the snapshot;
    // a restarted one reads it back; a new leader keeps it.
    let mut kv = KvClient::new(cluster.node(leader).channel());
    for i in 0..100 {
        put(&mut kv, &format!("fill/{i}"), "x").await;
    }
    cluster.node(leader).wait_log_purged().await;
    cluster.add_voter(4).await;
    let status = cluster.node(4).status().await.expect("status of node 4");
    assert!(
        status.snapshot_index.unwrap_or(0) > 0,
        "node 4 did not install a snapshot: {status:?}"
    );
    assert_eq!(cluster_id(&mut cluster, 4).await, named);
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    // The test's own connection to the node must answer the node's
    // goodbye while `stop` blocks: off the runtime's threads.
    let stopped = tokio::task::block_in_place(|| cluster.node(follower).stop());
    assert!(stopped, "a clean stop");
    cluster.node(follower).restart();
    assert_eq!(cluster_id(&mut cluster, follower).await, named);
    cluster.node(leader).kill();
    let next = cluster.wait_for_leader().await;
    assert_ne!(next, leader);
    assert_eq!(cluster_id(&mut cluster, next).await, named);
}

#[tokio::test]
async fn a_follower_ends_a_write_to_a_hung_leader_once_it_stops_following_it() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut kv = KvClient::new(cluster.get(follower).channel());
    // The first write opens the follower's stream; the second is proposed
    // on it, so the one below is proposed too.
    put(&mut kv, "k", "1").await;
    let proposed = put(&mut kv, "k", "2").await;
    assert_eq!(proposed.header.expect("a header").member_id, follower);

    // A hung leader keeps its connections open. A write the follower
    // proposed to it ends once the follower stops following it (an
    // election starts), not at the client's deadline: its outcome is
    // unknown. One that reached the follower after the election began is
    // refused for want of a leader instead.
    let hung = cluster.get(leader);
    hung.signal("STOP");
    let mut request = tonic::Request::new(pb::PutRequest {
        key: "k".into(),
        value: "3".into(),
        ..Default::default()
    });
    request.set_timeout(std::time::Duration::from_secs(60));
    let ended = kv.put(request).await;
    hung.signal("CONT");
    let status = ended.expect_err("no leader answered while it was stopped");
    match status.code() {
        Code::Unknown => assert!(status.message().contains("stopped leading"), "{status:?}"),
        Code::Unavailable => {
            assert_eq!(status.message(), "etcdserver: no leader", "{status:?}")
        }
        _ => panic!("the write waited for its deadline or failed otherwise: {status:?}"),
    }
    // The cluster goes on under a leader, and the key holds one of the
    // values written.
    cluster.wait_for_leader().await;
    let value = wait_for("the key reads back", || {
        let mut kv = kv.clone();
        async move {
            let range = kv
                .range(pb::RangeRequest {
                    key: "k".into(),
                    ..Default::default()
                })
                .await
                .ok()?;
            range.into_inner().kvs.first().map(|kv| kv.value.clone())
        }
    })
    .await;
    assert!(value == b"2" || value == b"3", "{value:?}");
}
