//! Test harness: real `raftkv-node` processes on 127.0.0.1 ports picked by
//! the OS, each with its own data directory under one temporary directory;
//! helpers that wait on conditions with a deadline.

use std::future::Future;
use std::io::BufRead;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use raftkv_proto::pb;
use raftkv_proto::pb::admin_client::AdminClient;
use raftkv_proto::pb::kv_client::KvClient;
use tempfile::TempDir;
use tonic::transport::Channel;

/// How long any awaited condition may take before the test fails. Generous:
/// tests must pass on a slow, loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` until it returns `Some`, failing the test after `PATIENCE`.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
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

/// One `raftkv-node` process.
pub struct TestNode {
    pub id: u64,
    /// host:port it listens on (and advertises).
    pub address: String,
    pub data_dir: PathBuf,
    log: PathBuf,
    /// Flags beyond id/listen/data-dir, reused on restart.
    flags: Vec<String>,
    child: Option<Child>,
}

impl TestNode {
    /// Starts node `id` storing data in `dir/node-<id>`, listening on `listen`,
    /// with `flags` (kept for restarts) and `once` (this start only).
    pub fn start(dir: &TempDir, id: u64, listen: &str, flags: &[&str], once: &[&str]) -> TestNode {
        let mut node = TestNode {
            id,
            address: String::new(),
            data_dir: dir.path().join(format!("node-{id}")),
            log: dir.path().join(format!("node-{id}.log")),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            child: None,
        };
        node.spawn(listen, once);
        node
    }

    fn spawn(&mut self, listen: &str, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_raftkv-node"))
            .args(["--id", &self.id.to_string(), "--listen", listen])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.flags)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start raftkv-node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read stdout");
        let address = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(
            line.contains("listening on") && !address.is_empty(),
            "node {} did not start: {line:?}; log:\n{}",
            self.id,
            self.log_tail()
        );
        self.address = address;
        self.child = Some(child);
    }

    /// Everything the node has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the node's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `kill -9`: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until the process exits by itself; returns its exit status.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("the node was started");
        let status = wait_for(&format!("node {} exits", self.id), || {
            let status = child.try_wait().expect("try_wait");
            async move { status }
        })
        .await;
        self.child = None;
        status
    }

    /// Starts the node again on its previous address and data, with `extra` flags.
    pub fn restart(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "restart of a running node");
        let address = self.address.clone();
        self.spawn(&address, extra);
    }

    pub async fn kv(&self) -> KvClient<Channel> {
        KvClient::new(channel(&self.address).await)
            .max_decoding_message_size(8 << 20)
            .max_encoding_message_size(8 << 20)
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(channel(&self.address).await)
    }

    /// Whether the health service reports `raftkv.Leader` as SERVING here
    /// (`None`: the node does not answer).
    pub async fn serves_leader_health(&self) -> Option<bool> {
        use tonic_health::pb::health_check_response::ServingStatus;
        let channel = Channel::from_shared(format!("http://{}", self.address))
            .ok()?
            .connect()
            .await
            .ok()?;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let request = tonic_health::pb::HealthCheckRequest {
            service: raftkv_proto::LEADER_HEALTH_SERVICE.into(),
        };
        let answer = health.check(request).await.ok()?.into_inner();
        Some(answer.status == ServingStatus::Serving as i32)
    }

    /// This node's status, or `None` if it does not answer.
    pub async fn status(&self) -> Option<pb::NodeStatus> {
        let mut admin = AdminClient::connect(format!("http://{}", self.address))
            .await
            .ok()?;
        admin
            .status(pb::Empty {})
            .await
            .ok()
            .map(|r| r.into_inner())
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A channel to `address` (the node is up once it printed its address).
pub async fn channel(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .expect("address")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect")
}

/// Nodes sharing one temporary directory.
pub struct Cluster {
    pub dir: TempDir,
    pub nodes: Vec<TestNode>,
    flags: Vec<String>,
}

impl Cluster {
    /// A cluster of `size` voters with extra node `flags`: node 1 bootstraps,
    /// the others are added through the admin API.
    pub async fn start(size: u64, flags: &[&str]) -> Cluster {
        let mut cluster = Cluster {
            dir: TempDir::new().expect("temp dir"),
            nodes: Vec::new(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        let flags: Vec<&str> = cluster.flags.iter().map(String::as_str).collect();
        cluster.nodes.push(TestNode::start(
            &cluster.dir,
            1,
            "127.0.0.1:0",
            &flags,
            &["--bootstrap"],
        ));
        cluster.wait_for_leader().await;
        for id in 2..=size {
            cluster.add_voter(id).await;
        }
        cluster
    }

    /// A cluster of nodes started by hand in `dir` (the first one is asked for
    /// the configuration).
    pub fn adopt(dir: TempDir, nodes: Vec<TestNode>) -> Cluster {
        Cluster {
            dir,
            nodes,
            flags: Vec::new(),
        }
    }

    /// Starts node `id` and adds it as a voter through the leader's admin API.
    pub async fn add_voter(&mut self, id: u64) -> &TestNode {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let node = TestNode::start(&self.dir, id, "127.0.0.1:0", &flags, &[]);
        let address = node.address.clone();
        self.nodes.push(node);
        let request = pb::AddNodeRequest {
            node_id: id,
            address,
            previous_index: 0,
        };
        self.nodes[0]
            .admin()
            .await
            .add_voter(request)
            .await
            .expect("add voter");
        self.nodes.last().expect("node")
    }

    pub fn node(&mut self, id: u64) -> &mut TestNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("no such node")
    }

    /// Waits until a running node reports itself leader; returns its id.
    pub async fn wait_for_leader(&mut self) -> u64 {
        let addresses: Vec<(u64, String)> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then(|| (n.id, n.address.clone())))
            .collect();
        wait_for("a leader is elected", || {
            let addresses = addresses.clone();
            async move {
                for (id, address) in addresses {
                    let mut admin = AdminClient::connect(format!("http://{address}"))
                        .await
                        .ok()?;
                    let Ok(status) = admin.status(pb::Empty {}).await else {
                        continue;
                    };
                    let status = status.into_inner();
                    if status.role == pb::Role::Leader as i32 && status.leader_id == id {
                        return Some(id);
                    }
                }
                None
            }
        })
        .await
    }

    /// Waits until every running node names the same leader in the same term
    /// and that node reports itself leader; returns its id. Stricter than
    /// [`Cluster::wait_for_leader`]: right after a restart a node may briefly
    /// resume leading an old term until a newer term reaches it.
    pub async fn wait_for_agreed_leader(&mut self) -> u64 {
        let addresses: Vec<String> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then(|| n.address.clone()))
            .collect();
        wait_for("the running nodes agree on one leader", || {
            let addresses = addresses.clone();
            async move {
                let mut seen = Vec::new();
                for address in addresses {
                    let mut admin = AdminClient::connect(format!("http://{address}"))
                        .await
                        .ok()?;
                    let status = admin.status(pb::Empty {}).await.ok()?.into_inner();
                    seen.push((status.id, status.role, status.leader_id, status.term));
                }
                let (_, _, leader, term) = *seen.first()?;
                let agreed = leader != 0
                    && seen.iter().all(|s| s.2 == leader && s.3 == term)
                    && seen
                        .iter()
                        .any(|s| s.0 == leader && s.1 == pb::Role::Leader as i32);
                agreed.then_some(leader)
            }
        })
        .await
    }

    /// Waits until `raftkv.Leader` is SERVING on exactly one running node,
    /// which also reports itself leader; returns its id.
    pub async fn wait_for_single_serving_leader(&mut self) -> u64 {
        let leader = self.wait_for_leader().await;
        let running: Vec<&TestNode> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
        wait_for("raftkv.Leader is SERVING on the leader only", || {
            let running = running.clone();
            async move {
                let mut serving = Vec::new();
                for node in running {
                    if node.serves_leader_health().await? {
                        serving.push(node.id);
                    }
                }
                (serving == vec![leader]).then_some(())
            }
        })
        .await;
        leader
    }

    /// Waits until every running node has applied at least `index`.
    pub async fn wait_applied(&mut self, index: u64) {
        let nodes: Vec<(u64, String)> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then(|| (n.id, n.address.clone())))
            .collect();
        for (id, address) in nodes {
            wait_for(&format!("node {id} applies index {index}"), || {
                let address = address.clone();
                async move {
                    let mut admin = AdminClient::connect(format!("http://{address}"))
                        .await
                        .ok()?;
                    let status = admin.status(pb::Empty {}).await.ok()?.into_inner();
                    (status.applied_index.unwrap_or(0) >= index).then_some(())
                }
            })
            .await;
        }
    }
}

/// Puts `key` = `value` through `client`; returns the log index.
pub async fn put(client: &mut KvClient<Channel>, key: &str, value: &str) -> u64 {
    client
        .put(pb::PutRequest {
            key: key.into(),
            value: value.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"))
        .into_inner()
        .index
}

/// Reads `key` through `client` (linearizable unless `stale`).
pub async fn get(client: &mut KvClient<Channel>, key: &str, stale: bool) -> Option<Vec<u8>> {
    let answer = client
        .get(pb::GetRequest {
            key: key.into(),
            stale,
        })
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .into_inner();
    answer.found.then_some(answer.value)
}
