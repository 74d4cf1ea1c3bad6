//! Python's `etcd3` client (PyPI) against a raftkv cluster, through
//! `etcd3_client.py`: put, get, prefix, transactions, a watch and a lease.
//! The client is installed once into a virtual environment under cargo's
//! test directory (`support::python_tools`); where Python or pip cannot
//! install it, the test says so and is skipped.

use std::path::Path;
use std::process::Command;

use crate::support::python_tools;
use crate::support::run_client_check;

#[tokio::test]
async fn pythons_etcd3_client_works_against_a_follower_and_the_leader() {
    let python = match python_tools() {
        Ok(tools) => tools.python,
        Err(why) => {
            eprintln!("SKIPPED: Python's etcd3 client cannot be installed here: {why}");
            return;
        }
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/etcd3_client.py");
    let mut check = Command::new(python);
    check.arg(script);
    run_client_check(check).await;
}
