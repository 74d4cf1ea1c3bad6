//! Running `raft-admin` against nodes from `raftkv_testkit`: one run, retried
//! runs, and the configuration as the binary reports it.

use std::time::Duration;
use std::time::Instant;

use raftkv_testkit::run_program;
use raftkv_testkit::Run;
use raftkv_testkit::PATIENCE;

/// Runs `raft-admin args…`.
pub async fn raft_admin(args: &[&str]) -> Run {
    run_program(env!("CARGO_BIN_EXE_raft-admin"), args).await
}

/// Retries `raft-admin args` until `accept` holds for its result, failing after `PATIENCE`.
pub async fn wait_until(args: &[&str], what: &str, accept: impl Fn(&Run) -> bool) -> Run {
    let deadline = Instant::now() + PATIENCE;
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    loop {
        ticks.tick().await;
        let run = raft_admin(args).await;
        if accept(&run) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}: {}{}",
            run.stdout,
            run.stderr
        );
    }
}

/// The configuration as `[(id, address, suffrage)]`, from `get_configuration --json`.
pub async fn configuration(address: &str) -> Vec<(u64, String, String)> {
    configuration_from(&[address]).await
}

/// The configuration as the leader among `multi:///…` sees it (a follower's
/// view may trail a change that was just committed).
pub async fn leader_configuration(endpoints: &str) -> Vec<(u64, String, String)> {
    configuration_from(&["--leader", endpoints]).await
}

async fn configuration_from(target: &[&str]) -> Vec<(u64, String, String)> {
    let mut args = target.to_vec();
    args.extend(["get_configuration", "--json"]);
    let run = raft_admin(&args).await.ok();
    run.json()["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| {
            (
                s["id"].as_u64().expect("id"),
                s["address"].as_str().expect("address").to_string(),
                s["suffrage"].as_str().expect("suffrage").to_string(),
            )
        })
        .collect()
}
