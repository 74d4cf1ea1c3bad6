//! Joining a cluster: nodes booting together with `--join`, concurrent
//! `add_voter` calls, a join that waits for its cluster to come up, and a
//! join that gives up (the node exits with the reason instead of running on
//! outside the cluster).

use raftkv_testkit::wait_for;
use raftkv_testkit::TestCluster;
use raftkv_testkit::TestNode;

use crate::support::committed_voters;
use crate::support::unused_address;
use crate::support::wait_for_voters;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_booting_together_all_become_voters() {
    // Formation is racy by nature: repeat it so a lost race would show.
    for round in 1..=3 {
        let mut cluster = TestCluster::start(1).await;
        let seed = cluster.nodes[0].address.clone();
        let joiners: Vec<TestNode> = std::thread::scope(|scope| {
            let starts: Vec<_> = (2..=5)
                .map(|id| {
                    let spec = cluster.node_spec(id).flags(&["--join", &seed]);
                    scope.spawn(move || spec.start())
                })
                .collect();
            starts
                .into_iter()
                .map(|s| s.join().expect("start"))
                .collect()
        });
        cluster.nodes.extend(joiners);
        wait_for_voters(&cluster, &[1, 2, 3, 4, 5]).await;
        for node in &mut cluster.nodes {
            assert!(
                node.is_running(),
                "round {round}: node {} stopped; log:\n{}",
                node.id,
                node.log_tail()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_add_voter_calls_both_succeed() {
    let mut cluster = TestCluster::start(1).await;
    let address_2 = cluster.start_node(cluster.node_spec(2)).address.clone();
    let address_3 = cluster.start_node(cluster.node_spec(3)).address.clone();
    let first = cluster.nodes[0].client();
    let second = cluster.nodes[0].client();
    let (a, b) = tokio::join!(
        first.add_voter(2, address_2, 0),
        second.add_voter(3, address_3, 0),
    );
    a.expect("add voter 2");
    b.expect("add voter 3");
    wait_for_voters(&cluster, &[1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_waits_for_its_cluster_to_come_up() {
    let seed = unused_address();
    let mut cluster = TestCluster::new();
    let joiner = cluster.start_node(cluster.node_spec(2).flags(&["--join", &seed]));
    wait_for(
        "the joiner has failed to reach the seed at least once",
        || {
            let log = joiner.log();
            async move { log.contains("join attempt failed").then_some(()) }
        },
    )
    .await;
    assert!(
        joiner.is_running(),
        "the joiner gave up:\n{}",
        joiner.log_tail()
    );

    cluster.start_node(cluster.node_spec(1).listen(&seed).once(&["--bootstrap"]));
    cluster.wait_for_leader().await;
    wait_for_voters(&cluster, &[1, 2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_cannot_succeed_stops_the_node() {
    // Nobody ever answers: the node gives up after --join-timeout.
    let dir = tempfile::TempDir::new().expect("temp dir");
    let nobody = unused_address();
    let mut lonely = TestNode::start(dir.path(), 2, &["--join", &nobody, "--join-timeout", "1s"]);
    let status = lonely.wait_exit().await;
    assert!(!status.success(), "a failed join must exit non-zero");
    let log = lonely.log();
    assert!(
        log.contains("cannot join the cluster") && log.contains("--join-timeout"),
        "the reason is logged:\n{log}"
    );

    // The cluster refuses for good (id 1 is a member at another address):
    // the node stops at once, without waiting for the timeout.
    let cluster = TestCluster::start(1).await;
    let seed = cluster.nodes[0].address.clone();
    // The same id as node 1, but a data dir of its own.
    let elsewhere = tempfile::TempDir::new().expect("temp dir");
    let mut impostor = TestNode::start(elsewhere.path(), 1, &["--join", &seed]);
    let status = impostor.wait_exit().await;
    assert!(!status.success(), "a refused join must exit non-zero");
    let log = impostor.log();
    assert!(
        log.contains("refused to add this node") && log.contains("already a member"),
        "the refusal is logged:\n{log}"
    );
    let admin = cluster.nodes[0].client();
    assert_eq!(committed_voters(&admin).await, Some(vec![1]));
}
