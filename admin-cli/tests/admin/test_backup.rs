//! `raft-admin backup` and `raftkv-node restore`: a backup taken from a
//! live cluster comes back, every key of it, as a new cluster that others
//! join; a corrupt or truncated backup is refused and creates nothing.

use std::path::Path;

use raftkv_proto::pb;
use raftkv_testkit::node_binary;
use raftkv_testkit::run_program;
use raftkv_testkit::Run;
use raftkv_testkit::TestCluster;

use crate::support::raft_admin;

async fn restore(file: &Path, dir: &Path, id: u64, address: &str) -> Run {
    let (file, dir, id) = (
        file.to_str().unwrap(),
        dir.to_str().unwrap(),
        id.to_string(),
    );
    let args = [
        "restore",
        "--from",
        file,
        "--data-dir",
        dir,
        "--id",
        &id,
        "--advertise",
        address,
    ];
    run_program(node_binary(), args).await
}

async fn digest(cluster: &mut TestCluster, id: u64) -> pb::StateDigestResponse {
    cluster
        .node(id)
        .client()
        .state_digest()
        .await
        .expect("state digest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_every_key_as_a_new_cluster() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let kv = cluster.node(leader).client();
    for i in 0..300u32 {
        let value = format!("value-{i}").repeat(1 + (i % 7) as usize);
        kv.put(format!("key-{i:04}"), value).await.expect("put");
    }
    for i in (0..300u32).step_by(10) {
        kv.delete(format!("key-{i:04}")).await.expect("delete");
    }
    // A binary key and value, and an empty value.
    kv.put(vec![0, 255, 1], vec![0; 3000]).await.expect("put");
    kv.put("empty", Vec::new()).await.expect("put");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.backup");
    let file_arg = file.to_str().unwrap();
    let endpoints = format!("multi:///{}", cluster.endpoints());
    let run = raft_admin(&["--leader", &endpoints, "backup", file_arg, "--json"])
        .await
        .ok();
    let report = run.json();
    assert_eq!(report["key_count"].as_u64(), Some(272), "{report}");
    let backup_index = report["index"].as_u64().expect("index");
    assert_eq!(
        report["configuration"]["servers"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
    assert_eq!(
        report["file_bytes"].as_u64(),
        Some(std::fs::metadata(&file).unwrap().len())
    );
    assert!(!dir.path().join("cluster.backup.partial").exists());
    let source = digest(&mut cluster, leader).await;
    assert_eq!(source.key_count, 272);

    // An existing file is never overwritten; a follower forwards to the leader.
    raft_admin(&["--leader", &endpoints, "backup", file_arg])
        .await
        .failed("backup over an existing file");
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("a follower")
        .address
        .clone();
    let through_follower = dir.path().join("via-follower.backup");
    let run = raft_admin(&[&follower, "backup", through_follower.to_str().unwrap()])
        .await
        .ok();
    assert!(run.stdout.contains("272 keys"), "{}", run.stdout);

    // The whole old cluster is gone; a new node comes up from the backup.
    for node in &mut cluster.nodes {
        node.kill();
    }
    let mut restored = TestCluster::new();
    let spec = restored.node_spec(7);
    let data_dir = spec_data_dir(&mut restored, spec);
    let address = restored.node(7).address.clone();
    let run = restore(&file, &data_dir, 7, &address).await;
    assert_eq!(run.code, 0, "restore failed: {}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("restored 272 keys"), "{}", run.stdout);
    restored.node(7).restart();
    assert_eq!(restored.wait_for_leader().await, 7);
    let copy = digest(&mut restored, 7).await;
    assert_eq!(
        (copy.key_count, copy.digest),
        (source.key_count, source.digest)
    );
    assert!(copy.applied_index >= Some(backup_index));
    let kv = restored.node(7).client();
    let value = kv
        .get_with(pb::GetRequest {
            key: vec![0, 255, 1],
            stale: false,
            revision: 0,
        })
        .await
        .expect("get");
    assert_eq!(value.value, vec![0; 3000]);
    let written = kv
        .put("after-restore", "yes")
        .await
        .expect("put on the restored cluster");
    assert!(written.index > backup_index, "indexes go on rising");

    // Others join it afresh and get the same state.
    restored.add_voter(8).await;
    restored.add_voter(9).await;
    restored.wait_applied(written.index).await;
    restored.assert_replicas_identical().await;
    let run = raft_admin(&[&address, "get_configuration", "--json"])
        .await
        .ok();
    assert_eq!(run.json()["servers"].as_array().map(Vec::len), Some(3));
}

/// Starts node `spec` (so it gets an address), stops it and empties its data
/// directory, which restore then fills; returns that directory.
fn spec_data_dir(cluster: &mut TestCluster, spec: raftkv_testkit::NodeSpec) -> std::path::PathBuf {
    let node = cluster.start_node(spec);
    assert!(node.stop());
    std::fs::remove_dir_all(&node.data_dir).unwrap();
    node.data_dir.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backup_is_refused_and_creates_nothing() {
    let mut cluster = TestCluster::start(1).await;
    cluster.wait_for_leader().await;
    let kv = cluster.node(1).client();
    for i in 0..50u32 {
        kv.put(format!("k{i}"), format!("v{i}")).await.expect("put");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("good.backup");
    let address = cluster.node(1).address.clone();
    raft_admin(&[&address, "backup", file.to_str().unwrap()])
        .await
        .ok();
    let good = std::fs::read(&file).unwrap();

    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("truncated", good[..good.len() - 100].to_vec(), "cut short"),
        (
            "flipped",
            {
                let mut bad = good.clone();
                let middle = bad.len() / 2;
                bad[middle] ^= 0x01;
                bad
            },
            "checksum",
        ),
        ("empty", Vec::new(), "not a raftkv backup"),
        (
            "padded",
            [good.clone(), vec![0; 8]].concat(),
            "cut short or padded",
        ),
    ];
    for (name, bytes, reason) in cases {
        let bad = dir.path().join(format!("{name}.backup"));
        std::fs::write(&bad, bytes).unwrap();
        let target = dir.path().join(format!("data-{name}"));
        let run = restore(&bad, &target, 1, "127.0.0.1:1").await;
        assert_ne!(run.code, 0, "{name}: restored from a damaged file");
        assert!(
            run.stderr.starts_with("error:") && run.stderr.contains(reason),
            "{name}: unclear error: {}",
            run.stderr
        );
        assert!(!target.exists(), "{name}: created {}", target.display());
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");

    // A data directory that holds something is never written over.
    let occupied = dir.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("keep-me"), "x").unwrap();
    let run = restore(&file, &occupied, 1, "127.0.0.1:1").await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("not empty"), "{}", run.stderr);
    assert_eq!(std::fs::read_dir(&occupied).unwrap().count(), 1);
    // A bad address is refused before anything is read.
    let run = restore(&file, &dir.path().join("x"), 1, "no-port").await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("--advertise"), "{}", run.stderr);
    assert!(!dir.path().join("x").exists());
    // The good file restores into an empty directory that exists already.
    let empty = dir.path().join("empty-dir");
    std::fs::create_dir(&empty).unwrap();
    let run = restore(&file, &empty, 1, "127.0.0.1:1").await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("restored 50 keys"), "{}", run.stdout);
}
