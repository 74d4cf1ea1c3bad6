//! Fuzzing what a node decodes from the network: every gRPC request type,
//! every Raft message (decoded, then checked as the node checks it), and the
//! snapshot data format, with random and with corrupted valid inputs. No
//! input may panic. `RAFTKV_FUZZ_CASES` sets the inputs per target (default
//! 2,000 here; `scripts/fuzz.sh` runs a long campaign).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::Config;
use proptest::test_runner::TestRunner;
use prost::Message;
use raftkv_node::codec::decode;
use raftkv_node::codec::encode;
use raftkv_node::grpc::raft_guard;
use raftkv_node::grpc::raft_guard::Local;
use raftkv_node::store::check_snapshot_data;
use raftkv_node::types::AppendEntriesRequest;
use raftkv_node::types::Entry;
use raftkv_node::types::LogId;
use raftkv_node::types::SnapshotMeta;
use raftkv_node::types::TransferLeaderRequest;
use raftkv_node::types::Vote;
use raftkv_node::types::VoteRequest;
use raftkv_proto::pb;
use raftkv_testkit::TestCluster;

fn cases() -> u32 {
    std::env::var("RAFTKV_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// Runs `check` on `cases()` inputs drawn from `strategy`; a panic fails
/// the test with the (shrunk) input. Prints how many inputs were tried.
fn fuzz<S: Strategy>(target: &str, strategy: S, check: impl Fn(S::Value)) {
    let tried = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |input| {
            tried.fetch_add(1, Ordering::Relaxed);
            check(input);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("fuzz {target}: {e}"));
    println!(
        "fuzz {target}: {} inputs, none panicked",
        tried.load(Ordering::Relaxed)
    );
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// `valid` with bytes overwritten and the tail cut: inputs close enough to
/// real messages to get past the first few fields.
fn corrupted(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len().max(1);
    (
        proptest::collection::vec((0..len, any::<u8>()), 0..4),
        0..len,
    )
        .prop_map(move |(writes, cut)| {
            let mut input = valid.clone();
            for (at, value) in writes {
                if at < input.len() {
                    input[at] = value;
                }
            }
            input.truncate(input.len() - cut.min(input.len()) / 2);
            input
        })
}

fn log_id(term: u64, leader: u64, index: u64) -> LogId {
    use openraft::vote::RaftLeaderId;
    LogId {
        leader_id: openraft::vote::leader_id_adv::LeaderId::new(term, leader),
        index,
    }
}

fn local() -> Local {
    Local {
        id: 1,
        committed: Some(log_id(3, 2, 40)),
        last: Some(log_id(3, 2, 50)),
    }
}

/// Decodes `input` as every Raft message and checks what decodes, as the
/// node's Raft service does.
fn decode_raft_message(input: &[u8]) {
    let local = local();
    if let Ok(append) = decode::<AppendEntriesRequest>(input) {
        let _ = raft_guard::check_append(&append, &local);
    }
    if let Ok(vote) = decode::<VoteRequest>(input) {
        let _ = raft_guard::check_vote_request(&vote.vote, vote.last_log_id.as_ref(), &local);
    }
    if let Ok(transfer) = decode::<TransferLeaderRequest>(input) {
        let _ = raft_guard::check_transfer(transfer.from_leader(), transfer.last_log_id(), &local);
    }
    if let (Ok(vote), Ok(meta)) = (decode::<Vote>(input), decode::<SnapshotMeta>(input)) {
        let _ = raft_guard::check_snapshot(&vote, &meta, &local);
    }
}

fn a_valid_append() -> Vec<u8> {
    let entries = (41..44)
        .map(|index| Entry {
            log_id: log_id(3, 2, index),
            payload: openraft::EntryPayload::Normal(raftkv_node::entry::LogCommand::new(
                raftkv_node::types::Command::Put {
                    key: b"key".to_vec(),
                    value: b"value".to_vec(),
                },
                // Both encodings, one entry each.
                if index % 2 == 0 {
                    raftkv_node::entry::Encoding::Versioned
                } else {
                    raftkv_node::entry::Encoding::FirstRelease
                },
            )),
        })
        .collect();
    encode(&AppendEntriesRequest {
        vote: Vote::new_committed(3, 2),
        prev_log_id: Some(log_id(3, 2, 40)),
        entries,
        leader_commit: Some(log_id(3, 2, 42)),
    })
    .expect("encode")
}

#[test]
fn grpc_request_decoders_never_panic() {
    fuzz("gRPC requests", bytes(256), |input| {
        let input = &input[..];
        let _ = pb::PutRequest::decode(input);
        let _ = pb::GetRequest::decode(input);
        let _ = pb::DeleteRequest::decode(input);
        let _ = pb::ScanRequest::decode(input);
        let _ = pb::CompareAndSwapRequest::decode(input);
        let _ = pb::InitializeRequest::decode(input);
        let _ = pb::AddNodeRequest::decode(input);
        let _ = pb::NodeRequest::decode(input);
        let _ = pb::TransferLeaderRequest::decode(input);
        let _ = pb::Empty::decode(input);
        let _ = pb::RaftPayload::decode(input);
        let _ = pb::SnapshotChunk::decode(input);
        let _ = pb::SnapshotHeader::decode(input);
    });
}

#[test]
fn raft_message_decoders_and_checks_never_panic() {
    fuzz("raft messages (random)", bytes(512), |input| {
        decode_raft_message(&input)
    });
    fuzz(
        "raft messages (corrupted AppendEntries)",
        corrupted(a_valid_append()),
        |input| decode_raft_message(&input),
    );
}

#[test]
fn append_checks_never_panic_on_any_log_ids() {
    let id = (
        0..4u64,
        0..4u64,
        prop_oneof![0..64u64, Just(u64::MAX), Just(u64::MAX - 1)],
    );
    let strategy = (
        (0..6u64, 0..4u64, any::<bool>()),
        proptest::option::of(id.clone()),
        proptest::collection::vec(id.clone(), 0..5),
        proptest::option::of(id),
    );
    fuzz(
        "AppendEntries checks (structured)",
        strategy,
        |((term, leader, committed), prev, entries, commit)| {
            let to_id = |(t, l, i): (u64, u64, u64)| log_id(t, l, i);
            let mut vote = Vote::new(term, leader);
            vote.committed = committed;
            let request = AppendEntriesRequest {
                vote,
                prev_log_id: prev.map(to_id),
                entries: entries
                    .into_iter()
                    .map(|id| Entry {
                        log_id: to_id(id),
                        payload: openraft::EntryPayload::Blank,
                    })
                    .collect(),
                leader_commit: commit.map(to_id),
            };
            let _ = raft_guard::check_append(&request, &local());
        },
    );
}

#[test]
fn the_snapshot_decoder_never_panics() {
    let valid = {
        let mut data = Vec::new();
        for (key, value) in [(&b"a"[..], &b"1"[..]), (b"b", b"22"), (b"c", b"")] {
            for part in [key, value] {
                data.extend_from_slice(&(part.len() as u32).to_be_bytes());
                data.extend_from_slice(part);
            }
        }
        data
    };
    assert_eq!(check_snapshot_data(&valid, 9).expect("valid data"), 3);
    // The current format: marker, a lease table (lease 5, 10 s), a key on it.
    let with_leases = {
        let mut data = vec![0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0, 1];
        data.extend_from_slice(&5u64.to_be_bytes());
        data.extend_from_slice(&10u64.to_be_bytes());
        let stored = raftkv_node::store::record::encode(4, 5, b"v");
        for part in [&b"k"[..], &stored] {
            data.extend_from_slice(&(part.len() as u32).to_be_bytes());
            data.extend_from_slice(part);
        }
        data
    };
    assert_eq!(check_snapshot_data(&with_leases, 9).expect("valid data"), 1);
    // With history (v5): compaction point 2, lease 5, a put, a delete,
    // and a live put on the lease.
    let with_history = {
        let mut data = vec![0xff, 0xff, 0xff, 0xff, 5];
        data.extend_from_slice(&2u64.to_be_bytes());
        data.extend_from_slice(&1u32.to_be_bytes());
        data.extend_from_slice(&5u64.to_be_bytes());
        data.extend_from_slice(&10u64.to_be_bytes());
        // One member's alarm raised: node 2.
        data.extend_from_slice(&1u32.to_be_bytes());
        data.extend_from_slice(&2u64.to_be_bytes());
        // (revision, kind, create_revision, version, lease, value)
        type Row<'a> = (u64, u8, u64, u64, u64, &'a [u8]);
        let rows: [Row; 3] = [
            (1, 0, 1, 1, 0, b"v"),
            (3, 1, 0, 0, 0, b""),
            (6, 2, 6, 1, 5, b"w"),
        ];
        for (revision, kind, create, version, lease, value) in rows {
            data.extend_from_slice(&revision.to_be_bytes());
            data.extend_from_slice(&0u32.to_be_bytes());
            data.push(kind);
            for number in [create, version, lease] {
                data.extend_from_slice(&number.to_be_bytes());
            }
            for part in [&b"k"[..], value] {
                data.extend_from_slice(&(part.len() as u32).to_be_bytes());
                data.extend_from_slice(part);
            }
        }
        data
    };
    assert_eq!(
        check_snapshot_data(&with_history, 9).expect("valid data"),
        1
    );
    fuzz(
        "snapshot data with history (corrupted)",
        corrupted(with_history),
        |input| {
            let _ = check_snapshot_data(&input, 9);
        },
    );
    fuzz("snapshot data (random)", bytes(256), |input| {
        let _ = check_snapshot_data(&input, 9);
    });
    fuzz("snapshot data (corrupted)", corrupted(valid), |input| {
        let _ = check_snapshot_data(&input, 9);
    });
    fuzz(
        "snapshot data with leases (corrupted)",
        corrupted(with_leases),
        |input| {
            let _ = check_snapshot_data(&input, 9);
        },
    );
}

/// The same, end to end: random Raft messages sent to a live node, which
/// must refuse them all and keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_node_survives_random_raft_messages() {
    let mut cluster = TestCluster::start(1).await;
    let node = cluster.node(1);
    let before = node.status().await.expect("status");
    let mut raft = pb::raft_client::RaftClient::new(node.channel());
    let mut runner = TestRunner::new(Config {
        cases: 1,
        failure_persistence: None,
        ..Config::default()
    });
    let inputs = proptest::collection::vec(bytes(128), 200)
        .new_tree(&mut runner)
        .expect("inputs")
        .current();
    let mut refused = 0;
    for input in &inputs {
        let payload = || pb::RaftPayload {
            data: input.clone().into(),
        };
        for result in [
            raft.append_entries(payload()).await,
            raft.vote(payload()).await,
            raft.pre_vote(payload()).await,
            raft.transfer_leader(payload()).await,
        ] {
            if result.is_err() {
                refused += 1;
            }
        }
    }
    println!(
        "sent {} random raft messages, {refused} refused",
        inputs.len() * 4
    );
    assert!(node.is_running(), "the node died");
    let after = node.status().await.expect("status");
    assert_eq!((after.role, after.term), (before.role, before.term));
}
