//! Real node processes for tests, without depending on the node binary being
//! built: the test executable re-runs itself with `RAFTKV_TEST_NODE_ARGS`
//! set, and the ignored test [`node_process`] turns that process into a node.

use std::io::BufRead;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use clap::Parser;
use raftkv_node::NodeConfig;
use raftkv_proto::pb;
use raftkv_proto::pb::admin_client::AdminClient;
use tempfile::TempDir;

/// How long an awaited condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

const NODE_ARGS: &str = "RAFTKV_TEST_NODE_ARGS";

/// Not a test: the entry point of a node process started by [`TestNode`].
/// It runs only when asked for explicitly (`--ignored --exact`).
#[test]
#[ignore = "entry point of node processes started by the tests"]
fn node_process() {
    let Ok(args) = std::env::var(NODE_ARGS) else {
        return;
    };
    let config = NodeConfig::parse_from(std::iter::once("raftkv-node").chain(args.split('\u{1f}')));
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .expect("bind");
        println!(
            "raftkv-node {} listening on {}",
            config.id,
            listener.local_addr().expect("address")
        );
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        raftkv_node::run(listener, config, shutdown)
            .await
            .expect("node");
    });
    std::process::exit(0);
}

/// A node process.
pub struct TestNode {
    pub id: u64,
    pub address: String,
    data_dir: PathBuf,
    /// Where the node's log (stderr) goes; `None` discards it.
    log: Option<PathBuf>,
    child: Option<Child>,
}

impl TestNode {
    pub fn start(dir: &TempDir, id: u64, extra: &[&str]) -> TestNode {
        TestNode::start_at(dir, id, "127.0.0.1:0", extra)
    }

    /// Starts node `id` with crash points armed (`FAILPOINTS`) for this run only.
    pub fn start_with_crash_points(
        dir: &TempDir,
        id: u64,
        extra: &[&str],
        points: &str,
    ) -> TestNode {
        let data_dir = dir.path().join(format!("node-{id}"));
        let mut node = TestNode {
            id,
            address: String::new(),
            data_dir,
            log: None,
            child: None,
        };
        node.spawn_with("127.0.0.1:0", extra, Some(points));
        node
    }

    /// Starts node `id` with its data in `data_dir` and its log in `log`.
    pub fn start_logged(id: u64, data_dir: PathBuf, log: PathBuf, extra: &[&str]) -> TestNode {
        let mut node = TestNode {
            id,
            address: String::new(),
            data_dir,
            log: Some(log),
            child: None,
        };
        node.spawn("127.0.0.1:0", extra);
        node
    }

    /// Waits until the process has exited by itself; returns whether it did in time.
    pub async fn wait_exit(&mut self, limit: Duration) -> bool {
        let started = Instant::now();
        let mut ticks = tokio::time::interval(Duration::from_millis(20));
        while started.elapsed() < limit {
            ticks.tick().await;
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return true;
                }
            }
        }
        false
    }

    /// Starts node `id` listening on `listen` (and connecting out from its IP).
    pub fn start_at(dir: &TempDir, id: u64, listen: &str, extra: &[&str]) -> TestNode {
        let data_dir = dir.path().join(format!("node-{id}"));
        let mut node = TestNode {
            id,
            address: String::new(),
            data_dir,
            log: None,
            child: None,
        };
        node.spawn(listen, extra);
        node
    }

    fn spawn(&mut self, listen: &str, extra: &[&str]) {
        self.spawn_with(listen, extra, None);
    }

    fn spawn_with(&mut self, listen: &str, extra: &[&str], crash_points: Option<&str>) {
        let mut args = vec![
            "--id".to_string(),
            self.id.to_string(),
            "--listen".into(),
            listen.into(),
        ];
        args.push("--data-dir".into());
        args.push(self.data_dir.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new(std::env::current_exe().expect("test executable"))
            .args([
                "--ignored",
                "--exact",
                "support::node_process",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(NODE_ARGS, args.join("\u{1f}"))
            .env("FAILPOINTS", crash_points.unwrap_or_default())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(match &self.log {
                Some(path) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .expect("node log"),
                ),
                None => Stdio::null(),
            })
            .spawn()
            .expect("start node process");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let address = loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening on") => {
                    break line.rsplit(' ').next().unwrap_or_default().to_string()
                }
                Some(Ok(_)) => continue,
                _ => panic!("node {} did not start", self.id),
            }
        };
        self.address = address;
        self.child = Some(child);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        let address = self.address.clone();
        self.spawn(&address, &[]);
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub async fn admin(&self) -> Option<AdminClient<tonic::transport::Channel>> {
        AdminClient::connect(format!("http://{}", self.address))
            .await
            .ok()
    }

    pub async fn status(&self) -> Option<pb::NodeStatus> {
        Some(
            self.admin()
                .await?
                .status(pb::Empty {})
                .await
                .ok()?
                .into_inner(),
        )
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` until it returns `Some`, failing after `PATIENCE`.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    let mut ticks = tokio::time::interval(Duration::from_millis(25));
    loop {
        ticks.tick().await;
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting until {what}"
        );
    }
}

/// A cluster of node processes in one temporary directory.
pub struct Cluster {
    pub dir: TempDir,
    pub nodes: Vec<TestNode>,
}

impl Cluster {
    /// `size` voters: node 1 bootstraps, the others join through the admin API.
    pub async fn start(size: u64) -> Cluster {
        Cluster::start_with(size, &[], None).await
    }

    /// `size` voters started with `flags`; node `crashing.0` (if any) also
    /// with the crash points `crashing.1` armed for its first run.
    pub async fn start_with(size: u64, flags: &[&str], crashing: Option<(u64, &str)>) -> Cluster {
        let dir = TempDir::new().expect("temp dir");
        let mut first = flags.to_vec();
        first.push("--bootstrap");
        let mut cluster = Cluster {
            nodes: vec![TestNode::start(&dir, 1, &first)],
            dir,
        };
        cluster.wait_for_leader().await;
        for id in 2..=size {
            let node = match crashing {
                Some((crash_id, points)) if crash_id == id => {
                    TestNode::start_with_crash_points(&cluster.dir, id, flags, points)
                }
                _ => TestNode::start(&cluster.dir, id, flags),
            };
            cluster.add_voter(node).await;
        }
        cluster
    }

    /// Adds the running `node` as a voter through node 1.
    pub async fn add_voter(&mut self, node: TestNode) {
        let request = pb::AddNodeRequest {
            node_id: node.id,
            address: node.address.clone(),
            previous_index: 0,
        };
        self.nodes.push(node);
        let mut admin = self.nodes[0].admin().await.expect("admin of node 1");
        admin.add_voter(request).await.expect("add voter");
    }

    /// host:port,host:port,…
    pub fn endpoints(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.address.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node(&mut self, id: u64) -> &mut TestNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("no such node")
    }

    /// Waits until a running node reports itself leader; returns its id.
    pub async fn wait_for_leader(&self) -> u64 {
        let running: Vec<&TestNode> = self.nodes.iter().filter(|n| n.is_running()).collect();
        wait_for("a leader is elected", || {
            let running = running.clone();
            async move {
                for node in running {
                    let Some(status) = node.status().await else {
                        continue;
                    };
                    if status.role == pb::Role::Leader as i32 && status.leader_id == node.id {
                        return Some(node.id);
                    }
                }
                None
            }
        })
        .await
    }

    /// Waits until node `id` has applied more than `index` entries.
    pub async fn wait_applied_beyond(&self, id: u64, index: u64) -> u64 {
        let node = self
            .nodes
            .iter()
            .find(|n| n.id == id)
            .expect("no such node");
        wait_for(
            &format!("node {id} applies beyond index {index}"),
            || async move {
                let applied = node.status().await?.applied_index?;
                (applied > index).then_some(applied)
            },
        )
        .await
    }
}

impl Cluster {
    /// Node `id`'s applied index (0 if none).
    pub async fn node_status_applied(&self, id: u64) -> u64 {
        let node = self
            .nodes
            .iter()
            .find(|n| n.id == id)
            .expect("no such node");
        node.status()
            .await
            .and_then(|s| s.applied_index)
            .unwrap_or(0)
    }
}

impl TestNode {
    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("node is running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }
}

impl Cluster {
    /// Waits (at most `limit`) until a running node other than `not` leads; returns it.
    pub async fn leader_within(&self, limit: Duration, not: Option<u64>) -> u64 {
        let started = Instant::now();
        let running: Vec<&TestNode> = self
            .nodes
            .iter()
            .filter(|n| n.is_running() && Some(n.id) != not)
            .collect();
        let mut ticks = tokio::time::interval(Duration::from_millis(20));
        loop {
            ticks.tick().await;
            for node in &running {
                if let Some(status) = node.status().await {
                    if status.role == pb::Role::Leader as i32 && status.leader_id == node.id {
                        return node.id;
                    }
                }
            }
            assert!(
                started.elapsed() < limit,
                "no leader within {limit:?} after the fault healed"
            );
        }
    }

    /// Waits until every running node has applied the same index, then
    /// asserts that their key-value states are identical.
    pub async fn assert_replicas_identical(&self) {
        let running: Vec<&TestNode> = self.nodes.iter().filter(|n| n.is_running()).collect();
        let leader = self.wait_for_leader().await;
        let leader_node = self.nodes.iter().find(|n| n.id == leader).expect("leader");
        let index = leader_node
            .admin()
            .await
            .expect("admin")
            .barrier(pb::Empty {})
            .await
            .expect("barrier")
            .into_inner()
            .index;
        let mut digests = Vec::new();
        for node in running {
            wait_for(
                &format!("node {} applies index {index}", node.id),
                || async move { (node.status().await?.applied_index? >= index).then_some(()) },
            )
            .await;
            let digest = wait_for(
                &format!("node {} digest at a stable index", node.id),
                || async move {
                    let digest = node
                        .admin()
                        .await?
                        .state_digest(pb::Empty {})
                        .await
                        .ok()?
                        .into_inner();
                    (digest.applied_index? >= index).then_some(digest)
                },
            )
            .await;
            digests.push((node.id, digest.digest, digest.key_count));
        }
        let first = digests[0];
        for d in &digests {
            assert_eq!(
                (d.1, d.2),
                (first.1, first.2),
                "replicas differ: {digests:?}"
            );
        }
    }
}

/// Runs the hammer binary with `args`; returns its exit code, stdout and stderr.
pub async fn hammer_binary(args: Vec<String>) -> (i32, String, String) {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_hammer"))
            .args(&args)
            .output()
            .expect("run hammer")
    })
    .await
    .expect("join");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Whether the tests run as root (namespaces, nft rules and mounts need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs the ignored test `driver` of this binary under `wrapper` (e.g.
/// `ip netns exec NS`, `unshare --mount`) with `env_key` set, and fails
/// unless it ran and passed.
pub async fn run_isolated_driver(
    wrapper: Vec<String>,
    driver: &'static str,
    env_key: &'static str,
) {
    let exe = std::env::current_exe().expect("test executable");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .arg(exe)
            .args([
                "--ignored",
                "--exact",
                driver,
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(env_key, "1")
            .output()
            .expect("run the isolated scenario")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{driver} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
