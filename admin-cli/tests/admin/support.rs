//! Nodes run in-process (a `raftkv_node::run` task each, stopped on drop);
//! `raft-admin` runs as the real binary.

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;
use std::time::Instant;

use raftkv_node::NodeConfig;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long an awaited condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A node running in this process.
pub struct TestNode {
    pub address: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestNode {
    /// Starts node `id` with its data under `dir`.
    pub async fn start(dir: &TempDir, id: u64, bootstrap: bool) -> TestNode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let listen: SocketAddr = address.parse().expect("socket address");
        let mut config = NodeConfig::new(id, listen, dir.path().join(format!("node-{id}")));
        config.bootstrap = bootstrap;
        config.cache_mb = 4;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = raftkv_node::run(listener, config, shutdown).await {
                panic!("node {id} failed: {e}");
            }
        });
        TestNode {
            address,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the node and waits until it has shut down.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("node task");
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What one raft-admin run produced.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics unless the run succeeded.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "raft-admin failed: {}{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the run failed with exactly one line of error output.
    pub fn failed(self, what: &str) -> Run {
        assert_ne!(
            self.code, 0,
            "{what}: expected failure, got success: {}",
            self.stdout
        );
        let first = self.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error:") && first.len() > 10,
            "{what}: unclear error {:?}",
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `raft-admin args…` (off the async threads, so the nodes keep running).
pub async fn raft_admin(args: &[&str]) -> Run {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output: Output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_raft-admin"))
            .args(&args)
            .output()
            .expect("run raft-admin")
    })
    .await
    .expect("join");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
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
