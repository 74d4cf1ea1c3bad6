//! Python's `etcd3` client (PyPI) against a raftkv cluster, through
//! `etcd3_client.py`: put, get, prefix, transactions, a watch and a lease.
//! The client is installed once into a virtual environment under cargo's
//! test directory (`support::python_tools`); where Python or pip cannot
//! install it, the test says so and is skipped.

use std::path::Path;
use std::process::Command;

use raftkv_testkit::TestCluster;

use crate::support::python_tools;

#[tokio::test]
async fn pythons_etcd3_client_works_against_a_follower_and_the_leader() {
    let python = match python_tools() {
        Ok(tools) => tools.python,
        Err(why) => {
            eprintln!("SKIPPED: Python's etcd3 client cannot be installed here: {why}");
            return;
        }
    };
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let follower = cluster.node(follower).address.clone();
    let leader = cluster.node(leader).address.clone();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/etcd3_client.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([follower, leader])
            .output()
            .expect("python runs")
    })
    .await
    .expect("the script ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}{stderr}");
}
