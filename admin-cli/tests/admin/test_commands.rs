//! Every raft-admin workflow an operator needs, and its refusals: one test
//! per workflow on shared helpers, kept in one file so the list reads as the
//! operator's manual.

use raftkv_testkit::TestCluster;
use raftkv_testkit::TestNode;
use tempfile::TempDir;

use crate::support::configuration;
use crate::support::leader_configuration;
use crate::support::raft_admin;
use crate::support::wait_until;

fn voter(id: u64, address: &str) -> (u64, String, String) {
    (id, address.to_string(), "Voter".to_string())
}

/// Waits until node 1 (bootstrapped alone) leads.
async fn wait_for_leader(address: &str) {
    wait_until(&[address, "state"], "node 1 leads", |r| {
        r.stdout.trim() == "Leader"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_voter_from_two_terminals_at_once() {
    let dir = TempDir::new().expect("temp dir");
    let n1 = TestNode::start(dir.path(), 1, &["--bootstrap"]);
    let n2 = TestNode::start(dir.path(), 2, &[]);
    let n3 = TestNode::start(dir.path(), 3, &[]);
    let a1 = n1.address.as_str();
    wait_for_leader(a1).await;

    let add_two = [a1, "add_voter", "2", &n2.address];
    let add_three = [a1, "add_voter", "3", &n3.address];
    let (two, three) = tokio::join!(raft_admin(&add_two), raft_admin(&add_three));
    two.ok();
    three.ok();
    assert_eq!(
        leader_configuration(a1).await,
        vec![voter(1, a1), voter(2, &n2.address), voter(3, &n3.address)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grow_steer_and_shrink_a_cluster() {
    let dir = TempDir::new().expect("temp dir");
    let n1 = TestNode::start(dir.path(), 1, &["--bootstrap"]);
    let n2 = TestNode::start(dir.path(), 2, &[]);
    let n3 = TestNode::start(dir.path(), 3, &[]);
    let n4 = TestNode::start(dir.path(), 4, &[]);
    let a1 = n1.address.as_str();
    wait_for_leader(a1).await;

    let added = raft_admin(&[a1, "add_voter", "2", &n2.address]).await.ok();
    assert!(added.stdout.contains("is a voter"), "{}", added.stdout);
    raft_admin(&[a1, "add-voter", "3", &n3.address, "0"])
        .await
        .ok();
    assert_eq!(
        configuration(a1).await,
        vec![voter(1, a1), voter(2, &n2.address), voter(3, &n3.address)]
    );

    let voters = format!("multi:///{a1},{},{}", n2.address, n3.address);
    // Leadership moves where it is told, and `leader` sees it.
    let moved = raft_admin(&[a1, "leadership_transfer_to_server", "3", &n3.address])
        .await
        .ok();
    assert!(moved.stdout.contains("node 3"), "{}", moved.stdout);
    let leader = raft_admin(&[&n2.address, "leader", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(leader["leader_id"], 3);
    assert_eq!(leader["leader_address"], n3.address.as_str());
    let moved = raft_admin(&[a1, "leadership_transfer", "--json"])
        .await
        .ok()
        .json();
    assert_ne!(moved["leader_id"], 3);

    // A non-voter, then demotion and removal.
    raft_admin(&[a1, "add_nonvoter", "4", &n4.address])
        .await
        .ok();
    let config = leader_configuration(&voters).await;
    assert!(
        config.contains(&(4, n4.address.clone(), "Nonvoter".into())),
        "{config:?}"
    );
    raft_admin(&[a1, "demote_voter", "2"]).await.ok();
    let config = leader_configuration(&voters).await;
    assert!(
        config.contains(&(2, n2.address.clone(), "Nonvoter".into())),
        "{config:?}"
    );
    raft_admin(&[a1, "remove_server", "4"]).await.ok();
    raft_admin(&[a1, "remove-server", "2"]).await.ok();
    assert_eq!(
        leader_configuration(&voters)
            .await
            .iter()
            .map(|m| m.0)
            .collect::<Vec<_>>(),
        vec![1, 3]
    );

    // Reads and operations.
    let status = raft_admin(&[
        "--endpoints",
        &format!("{a1},{}", n3.address),
        "status",
        "--json",
    ])
    .await
    .ok()
    .json();
    let rows = status["endpoints"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows.iter().filter(|r| r["role"] == "leader").count(), 1);
    for row in rows {
        assert_eq!(row["lag"], 0, "{row}");
    }
    let stats = raft_admin(&[a1, "stats", "--json"]).await.ok().json();
    assert_eq!(stats["id"], 1);
    // The cluster's id is named by its first leader and shared.
    let cluster = stats["cluster_id"]
        .as_str()
        .expect("a cluster id")
        .to_string();
    assert_ne!(cluster, "0", "{stats}");
    let on_n3 = raft_admin(&[&n3.address, "stats", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(on_n3["cluster_id"].as_str(), Some(cluster.as_str()));
    raft_admin(&[a1, "put", "k", "v"]).await.ok();
    assert_eq!(
        raft_admin(&[&n3.address, "get", "k"])
            .await
            .ok()
            .stdout
            .trim(),
        "v"
    );
    let snapshot = raft_admin(&[a1, "snapshot", "--json"]).await.ok().json();
    assert!(
        snapshot["snapshot_index"].as_u64().unwrap_or(0) > 0,
        "{snapshot}"
    );
    raft_admin(&[
        "--leader",
        &format!("multi:///{a1},{}", n3.address),
        "barrier",
    ])
    .await
    .ok();
    raft_admin(&[
        "--leader",
        &format!("multi:///{a1},{}", n3.address),
        "verify_leader",
    ])
    .await
    .ok();
    let last = raft_admin(&[a1, "last_index"]).await.ok();
    let applied = raft_admin(&[a1, "applied_index"]).await.ok();
    assert!(last.stdout.trim().parse::<u64>().expect("index") > 0);
    assert!(applied.stdout.trim().parse::<u64>().expect("index") > 0);
    raft_admin(&["--leader", a1, "last_contact"]).await.ok();
    let watch = raft_admin(&[a1, "watch", "--count", "2", "--interval", "100ms"])
        .await
        .ok();
    assert_eq!(
        watch.stdout.matches("ENDPOINT").count(),
        2,
        "{}",
        watch.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_is_found_when_the_first_endpoint_is_a_follower_or_down() {
    let dir = TempDir::new().expect("temp dir");
    let n1 = TestNode::start(dir.path(), 1, &["--bootstrap"]);
    let n2 = TestNode::start(dir.path(), 2, &[]);
    let mut n3 = TestNode::start(dir.path(), 3, &[]);
    wait_for_leader(&n1.address).await;
    raft_admin(&[&n1.address, "add_voter", "2", &n2.address])
        .await
        .ok();
    raft_admin(&[&n1.address, "add_voter", "3", &n3.address])
        .await
        .ok();
    raft_admin(&[&n1.address, "leadership_transfer_to_server", "2"])
        .await
        .ok();

    // Node 3 is a follower and listed first.
    let list = format!("multi:///{},{},{}", n3.address, n1.address, n2.address);
    let leader = raft_admin(&["--leader", &list, "leader", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(leader["leader_id"], 2);
    let state = raft_admin(&["--leader", &list, "state"]).await.ok();
    assert_eq!(state.stdout.trim(), "Leader");

    // Node 3 is down and listed first: the command still reaches the leader.
    n3.stop();
    let plain = format!("{},{},{}", n3.address, n1.address, n2.address);
    raft_admin(&["--endpoints", &plain, "put", "after", "stop"])
        .await
        .ok();
    let status = raft_admin(&["--endpoints", &plain, "status", "--json"]).await;
    assert_ne!(status.code, 0, "a node is down: status must say so");
    let rows = status.json()["endpoints"].as_array().expect("rows").clone();
    assert_eq!(rows.len(), 3);
    assert!(rows[0]["error"].is_string(), "{:?}", rows[0]);
    // Leadership moves away from node 2 while the command follows it.
    raft_admin(&["--leader", &list, "leadership_transfer_to_server", "1"])
        .await
        .ok();
    let leader = raft_admin(&["--leader", &list, "leader", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(leader["leader_id"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_and_changes_nothing() {
    let dir = TempDir::new().expect("temp dir");
    let n1 = TestNode::start(dir.path(), 1, &["--bootstrap"]);
    let n2 = TestNode::start(dir.path(), 2, &[]);
    let a1 = n1.address.as_str();
    wait_for_leader(a1).await;
    raft_admin(&[a1, "add_nonvoter", "2", &n2.address])
        .await
        .ok();
    let before = configuration(a1).await;

    // Usage errors (clap): non-zero exit and a message naming the problem.
    for (args, what) in [
        (vec![a1, "frobnicate"], "unknown command"),
        (vec![a1, "add_voter", "5"], "missing address"),
        (vec![a1, "remove_server"], "missing id"),
        (vec![a1, "remove_server", "two"], "non-numeric id"),
        (
            vec![a1, "demote_voter", "1", "2", "3"],
            "too many arguments",
        ),
    ] {
        let run = raft_admin(&args).await;
        assert_ne!(run.code, 0, "{what}");
        assert!(run.stderr.starts_with("error:"), "{what}: {}", run.stderr);
    }

    let refusals: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec![a1, "add_voter", "5", "nonsense"],
            "malformed address",
            "host:port",
        ),
        (
            vec![a1, "add_voter", "2", "127.0.0.1:1"],
            "existing id, other address",
            "already a member",
        ),
        (
            vec!["not-an-endpoint", "state"],
            "malformed endpoint",
            "host:port",
        ),
        (
            vec!["127.0.0.1:1", "state", "--timeout", "1s"],
            "unreachable endpoint",
            "127.0.0.1:1",
        ),
        (
            vec![
                "--leader",
                "multi:///127.0.0.1:1",
                "--timeout",
                "1s",
                "barrier",
            ],
            "no leader",
            "127.0.0.1:1",
        ),
        (
            vec![a1, "remove_server", "42"],
            "unknown node",
            "not in the cluster",
        ),
        (
            vec![a1, "demote_voter", "42"],
            "unknown node",
            "not in the cluster",
        ),
        (vec![a1, "remove_server", "1"], "last voter", "last voter"),
        (
            vec![a1, "leadership_transfer_to_server", "2"],
            "transfer to a learner",
            "learner",
        ),
        (
            vec![a1, "leadership_transfer_to_server", "42"],
            "transfer to unknown id",
            "not in the cluster",
        ),
        (
            vec![a1, "leadership_transfer"],
            "no other voter",
            "no other voter",
        ),
        (
            vec![a1, "add_voter", "3", "127.0.0.1:2", "999"],
            "stale previous index",
            "index",
        ),
        (vec![a1, "get", "missing-key"], "missing key", "not found"),
    ];
    for (args, what, needle) in refusals {
        let run = raft_admin(&args).await.failed(what);
        assert!(
            run.stderr.contains(needle),
            "{what}: {:?} lacks {needle:?}",
            run.stderr
        );
    }
    assert_eq!(
        configuration(a1).await,
        before,
        "a refused command changed the configuration"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keys_prints_changes_under_a_prefix_and_refuses_a_start_it_cannot_serve() {
    let cluster = TestCluster::start(3).await;
    let endpoints = cluster.endpoints();
    let mut indexes = Vec::new();
    for (key, value) in [("cfg/a", "1"), ("other", "x"), ("cfg/b", "2")] {
        let run = raft_admin(&["--leader", &endpoints, "put", key, value, "--json"])
            .await
            .ok();
        indexes.push(run.json()["index"].as_u64().expect("index"));
    }
    let run = raft_admin(&["--leader", &endpoints, "delete", "cfg/a", "--json"])
        .await
        .ok();
    let deleted_at = run.json()["index"].as_u64().expect("index");
    let from = indexes[0].to_string();
    let run = raft_admin(&[
        "--endpoints",
        &endpoints,
        "watch_keys",
        "cfg/",
        "--from",
        &from,
        "--count",
        "3",
        "--json",
    ])
    .await
    .ok();
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON document per line"))
        .collect();
    let summary: Vec<(u64, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap(),
                e["kind"].as_str().unwrap(),
                e["key"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (indexes[0], "put", "cfg/a"),
            (indexes[2], "put", "cfg/b"),
            (deleted_at, "delete", "cfg/a"),
        ]
    );
    let address = cluster.nodes[0].address.clone();
    let run = raft_admin(&[
        &address,
        "watch_keys",
        "cfg/",
        "--from",
        &from,
        "--count",
        "1",
    ])
    .await
    .ok();
    assert_eq!(run.stdout.trim(), format!("{} PUT cfg/a 1", indexes[0]));

    // Compacted past the start: refused, with the oldest index kept.
    let compact_at = deleted_at.to_string();
    let run = raft_admin(&["--leader", &endpoints, "compact", &compact_at, "--json"])
        .await
        .ok();
    assert_eq!(run.json()["revision"].as_u64(), Some(deleted_at));
    let run = raft_admin(&[&address, "watch_keys", "cfg/", "--from", &from])
        .await
        .failed("watch from before the history");
    let oldest = format!("oldest kept: {}", deleted_at + 1);
    assert!(run.stderr.contains(&oldest), "{}", run.stderr);
    // Compacting there again is refused, and says where the history starts.
    let run = raft_admin(&["--leader", &endpoints, "compact", &compact_at])
        .await
        .failed("compact at the compaction point");
    assert!(run.stderr.contains("compacted"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_commands_grant_attach_keep_alive_inspect_and_revoke() {
    let cluster = TestCluster::start(3).await;
    let endpoints = cluster.endpoints();
    let leader = ["--leader", endpoints.as_str()];
    let run = raft_admin(&[&leader[..], &["lease_grant", "30s", "--json"]].concat())
        .await
        .ok();
    let id = run.json()["id"].as_u64().expect("lease id");
    assert_eq!(run.json()["ttl"], 30);
    let id_text = id.to_string();
    for key in ["dev/a", "dev/b"] {
        raft_admin(&[&leader[..], &["put", key, "up", "--lease", &id_text]].concat())
            .await
            .ok();
    }
    let run = raft_admin(&[&leader[..], &["get", "dev/a", "--json"]].concat())
        .await
        .ok();
    assert_eq!(run.json()["lease"].as_u64(), Some(id));
    let run = raft_admin(&[&leader[..], &["lease_keepalive", &id_text, "--count", "2"]].concat())
        .await
        .ok();
    let renewed = format!("lease {id} kept alive (TTL 30 s)");
    assert_eq!(run.stdout.lines().collect::<Vec<_>>(), [&renewed, &renewed]);
    let run = raft_admin(&[&leader[..], &["lease_ttl", &id_text, "--keys", "--json"]].concat())
        .await
        .ok();
    assert_eq!(run.json()["granted_ttl"], 30);
    assert_eq!(run.json()["keys"], serde_json::json!(["dev/a", "dev/b"]));
    let left = run.json()["ttl"].as_i64().expect("ttl");
    assert!((1..=30).contains(&left), "{left}");
    let run = raft_admin(&[&leader[..], &["lease_revoke", &id_text, "--json"]].concat())
        .await
        .ok();
    assert_eq!(run.json()["keys_deleted"], 2);
    raft_admin(&[&leader[..], &["get", "dev/a"]].concat())
        .await
        .failed("a key of a revoked lease");
    // Refusals: a gone lease, a bad TTL, a put naming a missing lease.
    let run = raft_admin(&[&leader[..], &["lease_ttl", &id_text]].concat())
        .await
        .failed("ttl of a revoked lease");
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
    raft_admin(&[&leader[..], &["lease_grant", "1500ms"]].concat())
        .await
        .failed("a TTL of a fraction of a second");
    raft_admin(&[&leader[..], &["put", "dev/c", "up", "--lease", &id_text]].concat())
        .await
        .failed("a put naming a revoked lease");
    raft_admin(&[&leader[..], &["get", "dev/c"]].concat())
        .await
        .failed("the refused put wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn top_shows_the_new_leader_and_the_election_after_a_leader_kill() {
    let mut cluster = TestCluster::start(3).await;
    let old = cluster.wait_for_leader().await;
    let endpoints = cluster.endpoints();
    cluster
        .client()
        .put("before", "the kill")
        .await
        .expect("a write");
    cluster.node(old).kill();
    let new = cluster
        .leader_within(std::time::Duration::from_secs(30), Some(old))
        .await;
    // The new leader's writes show on the rates.
    cluster
        .client()
        .put("after", "the kill")
        .await
        .expect("a write");

    let run = raft_admin(&[
        "--endpoints",
        &endpoints,
        "--json",
        "top",
        "--once",
        "--interval",
        "100ms",
    ])
    .await
    .ok();
    let view = run.json();
    assert_eq!(view["leader_id"].as_u64(), Some(new), "{view}");
    let nodes = view["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{view}");
    let killed = cluster.node(old).address.clone();
    for node in nodes {
        let is_killed = node["endpoint"].as_str() == Some(killed.as_str());
        assert_eq!(node["error"].is_string(), is_killed, "{node}");
    }
    let peers = view["replication"].as_array().expect("replication");
    assert_eq!(peers.len(), 2, "{view}");
    // The election the kill caused, recorded by the survivors.
    let changes = view["leader_changes"].as_array().expect("leader changes");
    let election = changes
        .iter()
        .find(|c| {
            c["leader_id"].as_u64() == Some(new) && c["previous_leader_id"].as_u64() == Some(old)
        })
        .unwrap_or_else(|| panic!("no change from {old} to {new} in {view}"));
    let term = view["term"].as_u64().expect("a term");
    assert_eq!(election["term"].as_u64(), Some(term));
    let (started, ended) = (
        election["started_unix_ms"].as_u64().expect("a start"),
        election["ended_unix_ms"].as_u64().expect("an end"),
    );
    assert!(started > 0 && started <= ended, "{election}");
    assert_eq!(election["took_ms"].as_u64(), Some(ended - started));
    assert_eq!(
        election["seen_by"].as_array().map(Vec::len),
        Some(2),
        "both survivors saw it: {election}"
    );
    let campaigned = election["campaigned"].as_array().expect("candidates");
    assert!(
        campaigned.iter().any(|id| id.as_u64() == Some(new)),
        "the winner stood: {election}"
    );

    // The text view says the same.
    let text = raft_admin(&[
        "--endpoints",
        &endpoints,
        "top",
        "--once",
        "--interval",
        "100ms",
    ])
    .await
    .ok();
    assert!(
        text.stdout
            .contains(&format!("leader {new} in term {term}")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains(&format!("node {old} → node {new}")),
        "{}",
        text.stdout
    );
}
