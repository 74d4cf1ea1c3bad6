//! Bad input gets a clear error with the right code and changes nothing.

use std::io::Write;

use raftkv_proto::pb;
use raftkv_testkit::TestCluster;
use tonic::Code;

use crate::support::get;
use crate::support::put;

fn assert_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    what: &str,
) -> String {
    match result {
        Ok(answer) => panic!("{what}: expected {code:?}, got success {answer:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{what}: {}", status.message());
            assert!(!status.message().is_empty(), "{what}: empty error message");
            status.message().to_string()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_requests_are_rejected_without_effect() {
    let mut cluster = TestCluster::start(1).await;
    let mut kv = cluster.node(1).kv();
    let client = cluster.node(1).client();
    put(&client, "kept", "original").await;

    let put_request = |key: Vec<u8>, value: Vec<u8>| pb::PutRequest {
        lease: 0,
        key,
        value,
    };
    let message = assert_code(
        kv.put(put_request(vec![], b"v".to_vec())).await,
        Code::InvalidArgument,
        "empty key",
    );
    assert!(message.contains("empty"), "{message}");
    let message = assert_code(
        kv.put(put_request(vec![b'k'; 4097], b"v".to_vec())).await,
        Code::InvalidArgument,
        "long key",
    );
    assert!(
        message.contains("4097") && message.contains("4096"),
        "{message}"
    );
    let message = assert_code(
        kv.put(put_request(b"kept".to_vec(), vec![0; (1 << 20) + 1]))
            .await,
        Code::InvalidArgument,
        "big value",
    );
    assert!(message.contains("limit"), "{message}");
    assert_code(
        kv.get(pb::GetRequest {
            key: vec![],
            stale: false,
            revision: 0,
        })
        .await,
        Code::InvalidArgument,
        "get empty key",
    );
    assert_code(
        kv.delete(pb::DeleteRequest { key: vec![] }).await,
        Code::InvalidArgument,
        "delete empty key",
    );
    assert_code(
        kv.compare_and_swap(pb::CompareAndSwapRequest {
            lease: 0,
            key: b"kept".to_vec(),
            expected_value: Some(b"original".to_vec()),
            new_value: vec![0; (1 << 20) + 1],
        })
        .await,
        Code::InvalidArgument,
        "cas with big value",
    );
    assert_code(
        kv.scan(pb::ScanRequest {
            prefix: vec![b'p'; 5000],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "scan with long prefix",
    );
    assert_eq!(
        get(&client, "kept", false).await.as_deref(),
        Some(&b"original"[..])
    );
    let status = cluster.node(1).status().await.expect("status");
    assert_eq!(status.key_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_requests_are_rejected_without_effect() {
    let mut cluster = TestCluster::start(1).await;
    let mut admin = cluster.node(1).admin();
    // Node 2 joins as a learner only.
    let learner_address = cluster.start_node(cluster.node_spec(2)).address.clone();
    admin
        .add_learner(pb::AddNodeRequest {
            node_id: 2,
            address: learner_address.clone(),
            previous_index: 0,
        })
        .await
        .expect("add learner");
    // The leader reports the new configuration committed a moment after
    // answering: compare from then on.
    let before = raftkv_testkit::wait_for("the learner's configuration is committed", || {
        let mut admin = admin.clone();
        async move {
            let config = admin
                .get_configuration(pb::Empty {})
                .await
                .ok()?
                .into_inner();
            config.committed.then_some(config)
        }
    })
    .await;

    let add = |node_id: u64, address: &str, previous_index: u64| pb::AddNodeRequest {
        node_id,
        address: address.to_string(),
        previous_index,
    };
    assert_code(
        admin.add_voter(add(3, "not-an-address", 0)).await,
        Code::InvalidArgument,
        "address without port",
    );
    assert_code(
        admin.add_voter(add(3, "127.0.0.1:99999", 0)).await,
        Code::InvalidArgument,
        "port out of range",
    );
    assert_code(
        admin.add_voter(add(3, "", 0)).await,
        Code::InvalidArgument,
        "empty address",
    );
    assert_code(
        admin.add_voter(add(0, "127.0.0.1:1", 0)).await,
        Code::InvalidArgument,
        "node id 0",
    );
    let message = assert_code(
        admin.add_voter(add(2, "127.0.0.1:1", 0)).await,
        Code::FailedPrecondition,
        "existing id, new address",
    );
    assert!(message.contains(&learner_address), "{message}");
    assert_code(
        admin.add_learner(add(3, &learner_address, 0)).await,
        Code::FailedPrecondition,
        "address of another node",
    );
    assert_code(
        admin
            .add_voter(add(3, "127.0.0.1:1", before.index + 100))
            .await,
        Code::FailedPrecondition,
        "stale previous index",
    );

    let node = |node_id: u64| pb::NodeRequest {
        node_id,
        previous_index: 0,
    };
    assert_code(
        admin.remove_node(node(42)).await,
        Code::NotFound,
        "remove unknown node",
    );
    assert_code(
        admin.demote_voter(node(42)).await,
        Code::NotFound,
        "demote unknown node",
    );
    assert_code(
        admin.demote_voter(node(2)).await,
        Code::FailedPrecondition,
        "demote a learner",
    );
    let message = assert_code(
        admin.remove_node(node(1)).await,
        Code::FailedPrecondition,
        "remove last voter",
    );
    assert!(message.contains("last voter"), "{message}");
    assert_code(
        admin.demote_voter(node(1)).await,
        Code::FailedPrecondition,
        "demote last voter",
    );

    let transfer = |node_id: u64| pb::TransferLeaderRequest {
        node_id,
        timeout_ms: 2000,
    };
    assert_code(
        admin.transfer_leader(transfer(42)).await,
        Code::NotFound,
        "transfer to unknown node",
    );
    let message = assert_code(
        admin.transfer_leader(transfer(2)).await,
        Code::FailedPrecondition,
        "transfer to learner",
    );
    assert!(message.contains("learner"), "{message}");
    assert_code(
        admin.transfer_leader(transfer(0)).await,
        Code::FailedPrecondition,
        "transfer with no other voter",
    );
    assert_code(
        admin
            .initialize(pb::InitializeRequest { members: vec![] })
            .await,
        Code::FailedPrecondition,
        "initialise twice",
    );

    let after = admin
        .get_configuration(pb::Empty {})
        .await
        .expect("config")
        .into_inner();
    assert_eq!(
        before, after,
        "a rejected request changed the configuration"
    );
    assert_eq!(cluster.wait_for_leader().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_port_does_not_hurt_the_node() {
    let mut cluster = TestCluster::start(1).await;
    let address = cluster.node(1).address.clone();

    // Raw bytes that are not HTTP/2 at all.
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xff; 4096][..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00"[..],
    ] {
        let mut socket = std::net::TcpStream::connect(&address).expect("connect");
        let _ = socket.write_all(garbage);
    }

    // Well-formed gRPC carrying undecodable Raft messages.
    let mut raft = pb::raft_client::RaftClient::new(cluster.node(1).channel());
    let garbage = || pb::RaftPayload {
        data: vec![0xde, 0xad, 0xbe, 0xef, 7, 7, 7].into(),
    };
    assert_code(
        raft.append_entries(garbage()).await,
        Code::InvalidArgument,
        "garbage append",
    );
    // The pipelined form: the stream opens, then ends with the code.
    let mut answers = raft
        .stream_append(futures::stream::iter(vec![garbage()]))
        .await
        .expect("a StreamAppend call opens")
        .into_inner();
    assert_code(
        answers.message().await,
        Code::InvalidArgument,
        "garbage stream append",
    );
    assert_code(
        raft.vote(garbage()).await,
        Code::InvalidArgument,
        "garbage vote",
    );
    assert_code(
        raft.transfer_leader(garbage()).await,
        Code::InvalidArgument,
        "garbage transfer",
    );
    let chunks = futures::stream::iter(vec![pb::SnapshotChunk {
        payload: Some(pb::snapshot_chunk::Payload::Chunk(vec![1, 2, 3].into())),
    }]);
    assert_code(
        raft.install_snapshot(chunks).await,
        Code::InvalidArgument,
        "snapshot without header",
    );
    let header = pb::SnapshotHeader {
        vote: vec![1],
        meta: vec![2],
    };
    let chunks = futures::stream::iter(vec![pb::SnapshotChunk {
        payload: Some(pb::snapshot_chunk::Payload::Header(header)),
    }]);
    assert_code(
        raft.install_snapshot(chunks).await,
        Code::InvalidArgument,
        "snapshot with garbage header",
    );

    assert!(cluster.node(1).is_running(), "the node died");
    let client = cluster.node(1).client();
    put(&client, "still", "alive").await;
    assert_eq!(
        get(&client, "still", false).await.as_deref(),
        Some(&b"alive"[..])
    );
}

/// A log id of raftkv's types: `index` as proposed by `leader` in `term`.
fn log_id(term: u64, leader: u64, index: u64) -> raftkv_node::types::LogId {
    use openraft::vote::RaftLeaderId;
    raftkv_node::types::LogId {
        leader_id: openraft::vote::leader_id_adv::LeaderId::new(term, leader),
        index,
    }
}

/// The trailer that vouches for `data`.
fn trailer_of(data: &[u8]) -> pb::SnapshotTrailer {
    pb::SnapshotTrailer {
        size: data.len() as u64,
        crc32: crc32fast::hash(data),
    }
}

/// An InstallSnapshot stream: the header, then `data` as one chunk (none
/// if empty), then `trailer` if there is one.
fn snapshot_chunks(
    vote: &raftkv_node::types::Vote,
    meta: &raftkv_node::types::SnapshotMeta,
    data: Vec<u8>,
    trailer: Option<pb::SnapshotTrailer>,
) -> Vec<pb::SnapshotChunk> {
    use pb::snapshot_chunk::Payload;
    let header = pb::SnapshotHeader {
        vote: raftkv_node::codec::encode(vote).expect("encode"),
        meta: raftkv_node::codec::encode(meta).expect("encode"),
    };
    let mut parts = vec![Payload::Header(header)];
    if !data.is_empty() {
        parts.push(Payload::Chunk(data.into()));
    }
    parts.extend(trailer.map(Payload::Trailer));
    parts
        .into_iter()
        .map(|part| pb::SnapshotChunk {
            payload: Some(part),
        })
        .collect()
}

fn payload<T: serde::Serialize>(message: &T) -> pb::RaftPayload {
    pb::RaftPayload {
        data: raftkv_node::codec::encode(message).expect("encode").into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_raft_messages_are_refused_and_the_node_keeps_leading() {
    use raftkv_node::types::AppendEntriesRequest;
    use raftkv_node::types::Entry;
    use raftkv_node::types::SnapshotMeta;
    use raftkv_node::types::StoredMembership;
    use raftkv_node::types::Vote;
    use raftkv_node::types::VoteRequest;

    let mut cluster = TestCluster::start(1).await;
    let node = cluster.node(1);
    let before = node.status().await.expect("status");
    let mut raft = pb::raft_client::RaftClient::new(node.channel());
    let term = before.term + 5;
    let leader = Vote::new_committed(term, 9);

    // Entries with a gap, going back to an older term, at absurd indexes.
    let entry = |id| Entry {
        log_id: id,
        payload: openraft::EntryPayload::Blank,
    };
    let appends = [
        AppendEntriesRequest {
            vote: leader,
            prev_log_id: None,
            entries: vec![entry(log_id(term, 9, 5))],
            leader_commit: None,
        },
        AppendEntriesRequest {
            vote: leader,
            prev_log_id: Some(log_id(term, 9, 1)),
            entries: vec![entry(log_id(term - 1, 9, 2))],
            leader_commit: None,
        },
        AppendEntriesRequest {
            vote: leader,
            prev_log_id: Some(log_id(term, 9, u64::MAX - 1)),
            entries: vec![entry(log_id(term, 9, u64::MAX))],
            leader_commit: Some(log_id(term, 9, u64::MAX)),
        },
    ];
    for append in &appends {
        let message = assert_code(
            raft.append_entries(payload(append)).await,
            Code::InvalidArgument,
            "forged append",
        );
        assert!(message.contains("refused raft message"), "{message}");
        let mut answers = raft
            .stream_append(futures::stream::iter(vec![payload(append)]))
            .await
            .expect("a StreamAppend call opens")
            .into_inner();
        assert_code(
            answers.message().await,
            Code::InvalidArgument,
            "forged stream append",
        );
    }
    // Votes already granted, or with a term that overflows.
    for vote in [
        VoteRequest::new(Vote::new_committed(term, 9), None),
        VoteRequest::new(Vote::new(u64::MAX, 9), None),
    ] {
        assert_code(
            raft.vote(payload(&vote)).await,
            Code::InvalidArgument,
            "forged vote",
        );
        assert_code(
            raft.pre_vote(payload(&vote)).await,
            Code::InvalidArgument,
            "forged pre-vote",
        );
    }

    // Snapshots: garbage data under a valid header, no last log id, and a
    // membership from after the snapshot's last entry.
    let membership = openraft::Membership::new(
        vec![[9].into()],
        std::collections::BTreeMap::from([(9, openraft::BasicNode::new("127.0.0.1:1"))]),
    )
    .expect("membership");
    let meta = |last: Option<_>, membership_at| SnapshotMeta {
        last_log_id: last,
        last_membership: StoredMembership::new(Some(membership_at), membership.clone()),
    };
    let snapshots = [
        (
            meta(Some(log_id(term, 9, 100)), log_id(term, 9, 1)),
            vec![0, 0, 0, 9, 1],
        ),
        (meta(None, log_id(term, 9, 1)), Vec::new()),
        (
            meta(Some(log_id(term, 9, 100)), log_id(term, 9, 200)),
            Vec::new(),
        ),
    ];
    for (meta, data) in snapshots {
        let trailer = trailer_of(&data);
        let chunks = snapshot_chunks(&leader, &meta, data, Some(trailer));
        let message = assert_code(
            raft.install_snapshot(futures::stream::iter(chunks)).await,
            Code::InvalidArgument,
            "forged snapshot",
        );
        assert!(message.contains("refused"), "{message}");
    }

    // Data the trailer does not vouch for: cut short, longer, changed on
    // the way, no trailer at all, or more data after it.
    let valid = meta(Some(log_id(term, 9, 100)), log_id(term, 9, 1));
    let data = vec![0xffu8, 0xff, 0xff, 0xff, 4, 0, 0, 0, 0];
    let good = trailer_of(&data);
    let wrong = [
        Some(pb::SnapshotTrailer {
            size: good.size + 1,
            ..good
        }),
        Some(pb::SnapshotTrailer {
            size: good.size - 1,
            ..good
        }),
        Some(pb::SnapshotTrailer {
            crc32: good.crc32 ^ 1,
            ..good
        }),
        None,
    ];
    for trailer in wrong {
        let chunks = snapshot_chunks(&leader, &valid, data.clone(), trailer);
        let message = assert_code(
            raft.install_snapshot(futures::stream::iter(chunks)).await,
            Code::InvalidArgument,
            "snapshot data its trailer does not vouch for",
        );
        assert!(message.contains("trailer"), "{trailer:?}: {message}");
    }
    let mut chunks = snapshot_chunks(&leader, &valid, data.clone(), Some(good));
    chunks.push(pb::SnapshotChunk {
        payload: Some(pb::snapshot_chunk::Payload::Chunk(data.clone().into())),
    });
    assert_code(
        raft.install_snapshot(futures::stream::iter(chunks)).await,
        Code::InvalidArgument,
        "data after the trailer",
    );

    // Nothing reached Raft: same leader, same term, still serving.
    assert!(node.is_running(), "the node died");
    let after = node.status().await.expect("status");
    assert_eq!((after.role, after.term), (before.role, before.term));
    let client = node.client();
    put(&client, "after", "forgery").await;
    assert_eq!(
        get(&client, "after", true).await.as_deref(),
        Some(&b"forgery"[..])
    );
}

/// Reads from `socket` until the node closes it; whether it did within `limit`.
fn closed_within(socket: &mut std::net::TcpStream, limit: std::time::Duration) -> bool {
    use std::io::Read;
    socket.set_read_timeout(Some(limit)).expect("read timeout");
    let mut buffer = [0; 1024];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_bounded_in_number_and_idle_time() {
    let mut cluster = TestCluster::builder()
        .flags(&["--max-connections", "3", "--idle-timeout", "1s"])
        .start(1)
        .await;
    let address = cluster.node(1).address.clone();
    // The test's own channel is one connection; two more fill the node.
    put(&cluster.node(1).client(), "one", "1").await;
    let mut held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(&address).expect("connect"))
        .collect();
    let mut extra = std::net::TcpStream::connect(&address).expect("connect");
    assert!(
        closed_within(&mut extra, raftkv_testkit::PATIENCE),
        "a connection beyond --max-connections stayed open"
    );
    // Connections that never make a call are closed once idle.
    for socket in &mut held {
        assert!(
            closed_within(socket, raftkv_testkit::PATIENCE),
            "an idle connection stayed open"
        );
    }
    // With their places free again, a new client is served.
    put(&cluster.node(1).client_as(None), "two", "2").await;
    assert!(cluster.node(1).log().contains("too many connections"));
}

#[tokio::test]
async fn proposals_the_leader_does_not_take_are_refused_and_change_nothing() {
    use raftkv_node::entry::protobuf::encode;
    use raftkv_node::etcd::txn::EtcdOp;
    use raftkv_node::etcd::txn::EtcdTxn;
    use raftkv_node::node::propose::decode_outcome;
    use raftkv_node::types::Command;

    let mut cluster = TestCluster::start(1).await;
    let node = cluster.node(1);
    let mut raft = pb::raft_client::RaftClient::new(node.channel());
    let etcd_put = |key: &str| {
        Command::Etcd(EtcdTxn {
            compares: Vec::new(),
            success: vec![EtcdOp::Put {
                key: key.into(),
                value: Some(b"v".to_vec()),
                lease: Some(0),
                prev_kv: false,
            }],
            failure: Vec::new(),
        })
    };
    let proposals = [
        // Not a command at all.
        vec![0xff, 0xff, 0xff],
        // A command of raftkv's own API: it reaches the leader as a call.
        encode(&Command::Put {
            key: b"own".to_vec(),
            value: b"v".to_vec(),
        }),
        // etcd's put, which a follower may propose.
        encode(&etcd_put("etcd")),
    ];
    let calls = proposals
        .into_iter()
        .enumerate()
        .map(|(id, command)| pb::ForwardedCall {
            id: id as u64,
            command: command.into(),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let mut answers = raft
        .forward(futures::stream::iter(calls))
        .await
        .expect("the stream opens")
        .into_inner();
    let mut outcomes = std::collections::BTreeMap::new();
    while let Some(answer) = answers.message().await.expect("an answer") {
        outcomes.insert(answer.id, decode_outcome(&answer.outcome));
    }
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    for refused in [0, 1] {
        match &outcomes[&refused] {
            Err(raftkv_node::error::NodeError::BadRequest(_)) => {}
            other => panic!("proposal {refused}: {other:?}"),
        }
    }
    assert!(
        matches!(
            outcomes[&2],
            Ok((_, raftkv_node::types::CommandResult::Etcd(Ok(_))))
        ),
        "{:?}",
        outcomes[&2]
    );

    // The refused ones wrote nothing; the node still serves.
    assert!(node.is_running(), "the node died");
    let client = node.client();
    assert_eq!(get(&client, "own", true).await, None);
    assert_eq!(get(&client, "etcd", true).await.as_deref(), Some(&b"v"[..]));
}
