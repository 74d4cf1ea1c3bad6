//! One `raftkv-node` process: how to start it ([`NodeSpec`]), and the
//! running node ([`TestNode`]) with its address, data, log and clients.
//!
//! Longer than most files on purpose: a spec starts exactly one kind of
//! process and fills the running node's fields, so the two are read (and
//! changed) together.

use std::io::BufRead;
use std::io::BufReader;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::ExitStatus;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use raftkv_client::ChannelOptions;
use raftkv_client::Channels;
use raftkv_client::Client;
use raftkv_client::ClientOptions;
use raftkv_proto::pb;
use raftkv_proto::pb::admin_client::AdminClient;
use raftkv_proto::pb::kv_client::KvClient;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;

use crate::node_binary;
use crate::poll_within;
use crate::wait_for;

/// Longest wait for a status answer: a node that is paused (SIGSTOP) accepts
/// connections but never answers.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for one call of a test's client bound to a node: only a
/// bound on a call that hangs, long enough for anything a node may take its
/// time over (adding a voter that catches up from a snapshot under load).
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest a clean stop (SIGTERM until exit) may take.
pub const CLEAN_STOP: Duration = Duration::from_secs(10);

/// Largest gRPC message the test clients send or accept (the node's limit
/// for a value is 1 MiB; tests send bigger ones to see them refused).
const MAX_MESSAGE_BYTES: usize = 8 << 20;

/// The options of the test's own clients of `endpoints`: each call within
/// `timeout`, messages up to [`MAX_MESSAGE_BYTES`].
pub(crate) fn test_client_options(endpoints: Vec<String>, timeout: Duration) -> ClientOptions {
    let mut options = ClientOptions::new(endpoints, timeout);
    options.max_message_bytes = Some(MAX_MESSAGE_BYTES);
    options
}

/// A channel cache for the test's own calls, connecting with `tls`.
pub(crate) fn test_channels(tls: Option<ClientTlsConfig>) -> Channels {
    Channels::new(ChannelOptions {
        connect_timeout: Duration::from_secs(5),
        tls,
        ..ChannelOptions::default()
    })
}

/// How to start one node. By default: on `127.0.0.1:0`, data in
/// `<dir>/node-<id>`, log in `<dir>/node-<id>.log`, no extra flags.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    id: u64,
    listen: String,
    data_dir: PathBuf,
    log: PathBuf,
    /// Flags for every start, restarts included.
    flags: Vec<String>,
    /// Flags for the first start only.
    once: Vec<String>,
    /// `FAILPOINTS` for the first start only.
    crash_points: Option<String>,
    /// Environment variables for every start (beyond the cleaned one).
    env: Vec<(String, String)>,
    /// How the test's own clients connect (TLS with this identity, or plain).
    client_tls: Option<ClientTlsConfig>,
    /// The `raftkv-node` binary to run (`None`: [`node_binary`]).
    binary: Option<PathBuf>,
}

impl NodeSpec {
    /// Node `id` with its data and log under `dir`.
    pub fn new(dir: &Path, id: u64) -> NodeSpec {
        NodeSpec {
            id,
            listen: "127.0.0.1:0".into(),
            data_dir: dir.join(format!("node-{id}")),
            log: dir.join(format!("node-{id}.log")),
            flags: Vec::new(),
            once: Vec::new(),
            crash_points: None,
            env: Vec::new(),
            client_tls: None,
            binary: None,
        }
    }

    /// Runs `binary` instead of this build's node (another release's).
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> NodeSpec {
        self.binary = Some(binary.into());
        self
    }

    /// Sets the environment variable `key` to `value` for every start.
    pub fn env(mut self, key: &str, value: &str) -> NodeSpec {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Serves mutual TLS with `certs`' `node` certificate; the test's own
    /// clients connect with it too (the node role may call everything).
    pub fn tls(self, certs: &crate::TestCerts) -> NodeSpec {
        let mut spec = self.flags(&certs.node_flags("node"));
        spec.client_tls = Some(certs.client("node"));
        spec
    }

    /// The test's own clients connect with `tls` (`None`: plain text).
    pub fn client_tls(mut self, tls: Option<ClientTlsConfig>) -> NodeSpec {
        self.client_tls = tls;
        self
    }

    /// Listens on `address` (`ip:0` for a port the OS picks); the node also
    /// connects out from that IP.
    pub fn listen(mut self, address: &str) -> NodeSpec {
        self.listen = address.to_string();
        self
    }

    /// Keeps the node's data in `path` instead.
    pub fn data_dir(mut self, path: impl Into<PathBuf>) -> NodeSpec {
        self.data_dir = path.into();
        self
    }

    /// Adds `flags` to every start of the node, restarts included.
    pub fn flags<S: AsRef<str>>(mut self, flags: &[S]) -> NodeSpec {
        self.flags
            .extend(flags.iter().map(|f| f.as_ref().to_string()));
        self
    }

    /// Adds `flags` to the first start only (e.g. `--bootstrap`).
    pub fn once(mut self, flags: &[&str]) -> NodeSpec {
        self.once.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// Arms crash points (`FAILPOINTS`, e.g. `name=return`) for the first
    /// start only; needs a binary built with the node's `failpoints` feature.
    pub fn crash_points(mut self, points: &str) -> NodeSpec {
        self.crash_points = Some(points.to_string());
        self
    }

    /// Starts the node and waits until it prints the address it listens on.
    pub fn start(self) -> TestNode {
        let mut node = TestNode {
            id: self.id,
            address: String::new(),
            metrics_address: None,
            data_dir: self.data_dir,
            log: self.log,
            flags: self.flags,
            env: self.env,
            child: Mutex::new(None),
            channels: Channels::default(),
            client_tls: self.client_tls,
            binary: self.binary,
        };
        node.spawn(&self.listen, &self.once, self.crash_points.as_deref());
        node
    }
}

/// One `raftkv-node` process (killed on drop).
pub struct TestNode {
    pub id: u64,
    /// host:port it listens on and advertises, kept across restarts.
    pub address: String,
    /// host:port of its metrics endpoint, if started with `--metrics-listen`.
    pub metrics_address: Option<String>,
    pub data_dir: PathBuf,
    /// Where the node's log (stderr) goes, appended across restarts.
    log: PathBuf,
    /// Flags beyond id/listen/data-dir, reused on restart.
    flags: Vec<String>,
    /// Environment variables, reused on restart.
    env: Vec<(String, String)>,
    /// The running process; behind a lock so that whether it still runs can
    /// be asked through a shared reference.
    child: Mutex<Option<Child>>,
    /// Channels to this process; replaced on every start, so that no client
    /// ever holds a connection to a previous process.
    channels: Channels,
    /// How those channels connect.
    client_tls: Option<ClientTlsConfig>,
    /// The binary it runs (`None`: [`node_binary`]), kept across restarts.
    binary: Option<PathBuf>,
}

impl TestNode {
    /// Node `id` with its data and log under `dir`, started with `flags`.
    pub fn start(dir: &Path, id: u64, flags: &[&str]) -> TestNode {
        NodeSpec::new(dir, id).flags(flags).start()
    }

    fn spawn(&mut self, listen: &str, extra: &[String], crash_points: Option<&str>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("node log {}: {e}", self.log.display()));
        let binary = self
            .binary
            .clone()
            .unwrap_or_else(|| node_binary().to_path_buf());
        let mut command = Command::new(&binary);
        command
            .args(["--id", &self.id.to_string(), "--listen", listen])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.flags)
            .args(extra)
            .env_remove("RUST_LOG")
            .env_remove("FAILPOINTS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        // The node reads every flag from RAFTKV_* too: none may leak in from
        // the environment the tests run in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RAFTKV_") {
                command.env_remove(name);
            }
        }
        if let Some(points) = crash_points {
            command.env("FAILPOINTS", points);
        }
        command.env_remove("NOTIFY_SOCKET");
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start {}: {e}", binary.display());
        });
        // The node's line on stdout: "raftkv-node <id> listening on <address>",
        // after "… serving metrics on <address>" with --metrics-listen.
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let last_word = |line: &str| {
            line.trim()
                .rsplit(' ')
                .next()
                .unwrap_or_default()
                .to_string()
        };
        let address = loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("serving metrics on") => {
                    self.metrics_address = Some(last_word(&line));
                }
                Some(Ok(line)) if line.contains("listening on") => break last_word(&line),
                Some(Ok(_)) => continue,
                _ => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!(
                        "node {} did not start ({status:?}); log:\n{}",
                        self.id,
                        self.log_tail()
                    );
                }
            }
        };
        assert!(!address.is_empty(), "node {} printed no address", self.id);
        self.address = address;
        self.channels = test_channels(self.client_tls.clone());
        *self.child.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(child);
    }

    fn child(&mut self) -> &mut Option<Child> {
        self.child.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything the node has logged so far (all its runs).
    pub fn log(&self) -> String {
        // Lossy: a kill -9 can cut a line inside a multi-byte character
        // ("µs"), and the rest of the log must still be readable.
        std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last lines of the node's log, for failure messages. A node that
    /// exits on an error ends its log with the error's backtrace: the lines
    /// shown are those before it, which say what went wrong.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let end = lines
            .iter()
            .rposition(|line| line.trim().eq_ignore_ascii_case("stack backtrace:"))
            .unwrap_or(lines.len());
        lines[end.saturating_sub(30)..end].join("\n")
    }

    /// `kill -9`: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit; returns whether it
    /// exited successfully within [`CLEAN_STOP`] (a clean stop). A process
    /// still running then is killed, and the stop was not clean.
    ///
    /// It blocks. A node's graceful stop waits for its clients' connections
    /// to answer its goodbye, so a test holding a connection to the node
    /// (a channel it called through) on a runtime this blocks makes the
    /// node wait out its drain time (3 s). Calling it off the runtime's
    /// threads (`tokio::task::block_in_place` on a multi-thread runtime)
    /// avoids the wait.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child().take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + CLEAN_STOP;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.as_ref().map(Child::id)
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the running process.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("node is running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The exit status if the process has exited by itself (then it is no
    /// longer this node's process).
    fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child();
        let status = child.as_mut()?.try_wait().expect("try_wait")?;
        *child = None;
        Some(status)
    }

    /// Waits until the process exits by itself, failing after
    /// [`PATIENCE`](crate::PATIENCE);
    /// returns its exit status.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        assert!(self.child().is_some(), "node {} is not running", self.id);
        let what = format!("node {} exits", self.id);
        wait_for(&what, || std::future::ready(self.exited())).await
    }

    /// Whether the process exits by itself within `limit`.
    pub async fn exits_within(&mut self, limit: Duration) -> bool {
        poll_within(limit, || std::future::ready(self.exited()))
            .await
            .is_some()
    }

    /// From the next start on, runs `binary` (`None`: this build's node),
    /// as an upgrade or a downgrade does.
    pub fn set_binary(&mut self, binary: Option<PathBuf>) {
        self.binary = binary;
    }

    /// Starts the node again on its address and data, with its flags.
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// Starts the node again on its address and data, with its flags and,
    /// for this start only, `extra`.
    pub fn restart_with(&mut self, extra: &[&str]) {
        assert!(!self.is_running(), "restart of running node {}", self.id);
        *self.child() = None;
        let address = self.address.clone();
        let extra: Vec<String> = extra.iter().map(|f| f.to_string()).collect();
        self.spawn(&address, &extra, None);
    }

    /// Starts the node again on its data at a new `address` (a node moved
    /// to another address), with its flags.
    pub fn restart_at(&mut self, address: &str) {
        assert!(!self.is_running(), "restart of running node {}", self.id);
        *self.child() = None;
        self.spawn(address, &[], None);
    }

    /// `GET path` on the node's metrics endpoint: the status code and body
    /// (`None`: no endpoint, or it does not answer).
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::Read;
        use std::io::Write;
        let address = self.metrics_address.as_ref()?;
        let mut socket = std::net::TcpStream::connect(address).ok()?;
        socket.set_read_timeout(Some(STATUS_TIMEOUT)).ok()?;
        write!(
            socket,
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        socket.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    /// A channel to this process (connected on first use, then reused).
    pub fn channel(&self) -> Channel {
        self.channels.get(&self.address).expect("node address")
    }

    /// A new channel to this process connecting with `tls` (`None`: plain
    /// text), for calls as another identity than the test's own.
    pub fn channel_as(&self, tls: Option<ClientTlsConfig>) -> Channel {
        test_channels(tls).get(&self.address).expect("node address")
    }

    /// A client bound to this node: each call goes here, once, without
    /// following the leader (a follower forwards what it must). Accepts
    /// messages up to 8 MiB.
    pub fn client(&self) -> Client {
        self.client_within(CALL_TIMEOUT)
    }

    /// A client bound to this node connecting with `tls` (`None`: plain
    /// text), for calls as another identity than the test's own.
    pub fn client_as(&self, tls: Option<ClientTlsConfig>) -> Client {
        let options = test_client_options(vec![self.address.clone()], CALL_TIMEOUT);
        Client::with_channels(options, test_channels(tls))
            .and_then(|client| client.node(&self.address))
            .expect("node address")
    }

    fn client_within(&self, timeout: Duration) -> Client {
        let options = test_client_options(vec![self.address.clone()], timeout);
        Client::with_channels(options, self.channels.clone())
            .and_then(|client| client.node(&self.address))
            .expect("node address")
    }

    /// A raw KV stub, accepting messages up to 8 MiB, for tests that send
    /// malformed requests on purpose; everything else uses [`TestNode::client`].
    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// A raw Admin stub, for tests that send malformed requests on purpose;
    /// everything else uses [`TestNode::client`].
    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel())
    }

    /// This node's status, or `None` if it does not answer (in time).
    pub async fn status(&self) -> Option<pb::NodeStatus> {
        self.client_within(STATUS_TIMEOUT).status().await.ok()
    }

    /// Waits until the node has purged a prefix of its log (so a member
    /// that needs that prefix gets a snapshot instead).
    pub async fn wait_log_purged(&self) {
        crate::wait_for("the node purges a prefix of its log", || async {
            let status = self.status().await?;
            (status.purged_index.unwrap_or(0) > 0).then_some(())
        })
        .await;
    }

    /// Whether the health service reports `raftkv.Leader` as SERVING here
    /// (`None`: the node does not answer).
    pub async fn serves_leader_health(&self) -> Option<bool> {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        let mut health = HealthClient::new(self.channel());
        let request = tonic_health::pb::HealthCheckRequest {
            service: raftkv_proto::LEADER_HEALTH_SERVICE.into(),
        };
        let answer = tokio::time::timeout(STATUS_TIMEOUT, health.check(request))
            .await
            .ok()?
            .ok()?
            .into_inner();
        Some(answer.status == ServingStatus::Serving as i32)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for TestNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNode")
            .field("id", &self.id)
            .field("address", &self.address)
            .field("data_dir", &self.data_dir)
            .field("pid", &self.pid())
            .finish()
    }
}
