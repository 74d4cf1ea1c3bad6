//! Nodes sharing one temporary directory: forming a cluster, and waiting on
//! what the nodes report (leader, applied index, identical replicas).

use std::path::Path;
use std::time::Duration;

use raftkv_client::Client;
use raftkv_proto::pb;
use tempfile::TempDir;

use crate::node::test_channels;
use crate::node::test_client_options;
use crate::poll_within;
use crate::wait_for;
use crate::NodeSpec;
use crate::TestNode;
use crate::PATIENCE;

/// How to form a cluster: flags for every node, and crash points for one.
#[derive(Debug, Default)]
pub struct ClusterBuilder {
    flags: Vec<String>,
    /// The test's own clients' TLS settings, when the nodes serve TLS.
    client_tls: Option<tonic::transport::ClientTlsConfig>,
    /// Node id and the crash points armed for its first start.
    crash_points: Option<(u64, String)>,
    /// The `raftkv-node` binary every node runs (`None`: this build's).
    binary: Option<std::path::PathBuf>,
}

impl ClusterBuilder {
    /// Starts every node (and every node added later) with `flags`.
    pub fn flags(mut self, flags: &[&str]) -> ClusterBuilder {
        self.flags.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// Every node serves mutual TLS with `certs`' `node` certificate, which
    /// the test's own clients present too.
    pub fn tls(mut self, certs: &crate::TestCerts) -> ClusterBuilder {
        self.flags.extend(certs.node_flags("node"));
        self.client_tls = Some(certs.client("node"));
        self
    }

    /// Every node runs `binary` (another release's node) instead of this build's.
    pub fn binary(mut self, binary: impl Into<std::path::PathBuf>) -> ClusterBuilder {
        self.binary = Some(binary.into());
        self
    }

    /// Starts node `id` with the crash points `points` armed (first start only).
    pub fn crash_points(mut self, id: u64, points: &str) -> ClusterBuilder {
        self.crash_points = Some((id, points.to_string()));
        self
    }

    /// Forms a cluster of `voters` voters: node 1 bootstraps, the others are
    /// started and added as voters through node 1's admin API.
    pub async fn start(self, voters: u64) -> TestCluster {
        let mut cluster = TestCluster {
            nodes: Vec::new(),
            dir: TempDir::new().expect("temp dir"),
            flags: self.flags,
            client_tls: self.client_tls.clone(),
        };
        let spec = |cluster: &TestCluster, id: u64| {
            let spec = cluster.node_spec(id);
            let spec = match &self.binary {
                Some(binary) => spec.binary(binary),
                None => spec,
            };
            match &self.crash_points {
                Some((crashing, points)) if *crashing == id => spec.crash_points(points),
                _ => spec,
            }
        };
        cluster.bootstrap(spec(&cluster, 1)).await;
        for id in 2..=voters {
            cluster.add_voter_from(spec(&cluster, id)).await;
        }
        cluster
    }
}

/// Nodes sharing one temporary directory (each node's data in `node-<id>`,
/// its log in `node-<id>.log`); every node is killed on drop, then the
/// directory is removed.
pub struct TestCluster {
    /// The nodes, in the order they were started.
    pub nodes: Vec<TestNode>,
    dir: TempDir,
    /// Flags every node of this cluster starts with.
    flags: Vec<String>,
    /// How the test's own clients connect to every node.
    client_tls: Option<tonic::transport::ClientTlsConfig>,
}

impl TestCluster {
    /// A cluster with no node yet.
    pub fn new() -> TestCluster {
        TestCluster {
            nodes: Vec::new(),
            dir: TempDir::new().expect("temp dir"),
            flags: Vec::new(),
            client_tls: None,
        }
    }

    /// How to form a cluster with flags or crash points.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// A cluster of `voters` voters with default flags (see [`ClusterBuilder::start`]).
    pub async fn start(voters: u64) -> TestCluster {
        TestCluster::builder().start(voters).await
    }

    /// The directory holding the nodes' data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How to start node `id` here: in this cluster's directory, with its flags.
    pub fn node_spec(&self, id: u64) -> NodeSpec {
        NodeSpec::new(self.dir(), id)
            .flags(&self.flags)
            .client_tls(self.client_tls.clone())
    }

    /// Starts a node as `spec` says and keeps it with the others; it joins
    /// nothing by itself (unless its flags say `--join`).
    pub fn start_node(&mut self, spec: NodeSpec) -> &mut TestNode {
        self.nodes.push(spec.start());
        self.nodes.last_mut().expect("a node")
    }

    /// Starts a node as `spec` says with `--bootstrap` and waits until it leads.
    pub async fn bootstrap(&mut self, spec: NodeSpec) -> &mut TestNode {
        self.start_node(spec.once(&["--bootstrap"]));
        self.wait_for_leader().await;
        self.nodes.last_mut().expect("a node")
    }

    /// Starts node `id` and adds it as a voter through node 1's admin API.
    pub async fn add_voter(&mut self, id: u64) -> &mut TestNode {
        let spec = self.node_spec(id);
        self.add_voter_from(spec).await
    }

    /// Starts a node as `spec` says and adds it as a voter through the first
    /// node's admin API (followers forward it to the leader).
    pub async fn add_voter_from(&mut self, spec: NodeSpec) -> &mut TestNode {
        self.start_node(spec);
        let node = self.nodes.last().expect("a node");
        self.nodes[0]
            .client()
            .add_voter(node.id, node.address.clone(), 0)
            .await
            .expect("add voter");
        self.nodes.last_mut().expect("a node")
    }

    /// Node `id`.
    pub fn node(&mut self, id: u64) -> &mut TestNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("no such node")
    }

    /// Node `id`, to read from or call (see [`TestCluster::node`] to stop,
    /// restart or signal it).
    pub fn get(&self, id: u64) -> &TestNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("no such node")
    }

    /// A client of the whole cluster (every node's address as it is now):
    /// it finds and follows the leader, each operation within [`PATIENCE`].
    pub fn client(&self) -> Client {
        let endpoints = self.nodes.iter().map(|n| n.address.clone()).collect();
        let options = test_client_options(endpoints, PATIENCE);
        Client::with_channels(options, test_channels(self.client_tls.clone()))
            .expect("node addresses")
    }

    /// Every node's address: `host:port,host:port,…`.
    pub fn endpoints(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.address.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn running(&self) -> impl Iterator<Item = &TestNode> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    /// A running node (other than `except`) that reports itself leader.
    async fn find_leader(&self, except: Option<u64>) -> Option<u64> {
        for node in self.running().filter(|n| Some(n.id) != except) {
            let Some(status) = node.status().await else {
                continue;
            };
            if status.role == pb::Role::Leader as i32 && status.leader_id == node.id {
                return Some(node.id);
            }
        }
        None
    }

    /// Waits until a running node reports itself leader; returns its id.
    pub async fn wait_for_leader(&self) -> u64 {
        wait_for("a leader is elected", || self.find_leader(None)).await
    }

    /// Waits (at most `limit`) until a running node other than `not` leads;
    /// returns its id. For tests that bound how long a failover may take.
    pub async fn leader_within(&self, limit: Duration, not: Option<u64>) -> u64 {
        poll_within(limit, || self.find_leader(not))
            .await
            .unwrap_or_else(|| panic!("no leader within {limit:?} after the fault healed"))
    }

    /// Waits until every running node names the same leader in the same term
    /// and that node reports itself leader; returns its id. Stricter than
    /// [`TestCluster::wait_for_leader`]: right after a restart a node may
    /// briefly resume leading an old term until a newer term reaches it.
    pub async fn wait_for_agreed_leader(&self) -> u64 {
        wait_for("the running nodes agree on one leader", || async move {
            let mut seen = Vec::new();
            for node in self.running() {
                let status = node.status().await?;
                seen.push((status.id, status.role, status.leader_id, status.term));
            }
            let (_, _, leader, term) = *seen.first()?;
            let agreed = leader != 0
                && seen.iter().all(|s| s.2 == leader && s.3 == term)
                && seen
                    .iter()
                    .any(|s| s.0 == leader && s.1 == pb::Role::Leader as i32);
            agreed.then_some(leader)
        })
        .await
    }

    /// Waits until `raftkv.Leader` is SERVING on exactly one running node,
    /// which also reports itself leader; returns its id.
    pub async fn wait_for_single_serving_leader(&self) -> u64 {
        let leader = self.wait_for_leader().await;
        wait_for(
            "raftkv.Leader is SERVING on the leader only",
            || async move {
                let mut serving = Vec::new();
                for node in self.running() {
                    if node.serves_leader_health().await? {
                        serving.push(node.id);
                    }
                }
                (serving == vec![leader]).then_some(())
            },
        )
        .await;
        leader
    }

    /// Node `id`'s applied index (0 if none, or if it does not answer).
    pub async fn applied_index(&self, id: u64) -> u64 {
        let node = self.get(id);
        node.status()
            .await
            .and_then(|s| s.applied_index)
            .unwrap_or(0)
    }

    /// Waits until every running node has applied at least `index`.
    pub async fn wait_applied(&self, index: u64) {
        for node in self.running() {
            wait_for(
                &format!("node {} applies index {index}", node.id),
                || async move {
                    (node.status().await?.applied_index.unwrap_or(0) >= index).then_some(())
                },
            )
            .await;
        }
    }

    /// Waits until node `id` has applied beyond `index`; returns what it applied.
    pub async fn wait_applied_beyond(&self, id: u64, index: u64) -> u64 {
        let node = self.get(id);
        wait_for(
            &format!("node {id} applies beyond index {index}"),
            || async move {
                let applied = node.status().await?.applied_index?;
                (applied > index).then_some(applied)
            },
        )
        .await
    }

    /// Waits until every running node has applied the leader's barrier
    /// index, then asserts that their key-value states are identical.
    pub async fn assert_replicas_identical(&self) {
        let leader = self.wait_for_leader().await;
        let index = self
            .get(leader)
            .client()
            .barrier()
            .await
            .expect("barrier")
            .index;
        let mut digests = Vec::new();
        for node in self.running() {
            wait_for(
                &format!("node {} applies index {index}", node.id),
                || async move { (node.status().await?.applied_index? >= index).then_some(()) },
            )
            .await;
            let digest = wait_for(
                &format!("node {} digest at a stable index", node.id),
                || async move {
                    let digest = node.client().state_digest().await.ok()?;
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

impl Default for TestCluster {
    fn default() -> TestCluster {
        TestCluster::new()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Every process ends before its data directory is removed.
        for node in &mut self.nodes {
            node.kill();
        }
        // A failed test loses the directory: show what the nodes said first.
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "--- the last lines node {} logged ---\n{}",
                    node.id,
                    node.log_tail()
                );
            }
        }
    }
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("dir", &self.dir.path())
            .field("nodes", &self.nodes)
            .finish()
    }
}
