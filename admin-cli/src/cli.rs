//! The command line: global options and every command, named as in
//! Hashicorp's raftadmin (snake_case) with kebab-case aliases.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::Subcommand;
use raftkv_client::parse_duration;
use raftkv_files::cli::TlsArgs;

/// Grow, shrink, steer and inspect a raftkv cluster.
#[derive(Debug, Parser)]
#[command(
    name = "raft-admin",
    version,
    after_help = "Examples:\n  \
        raft-admin 127.0.0.1:50051 add_voter 2 127.0.0.1:50052\n  \
        raft-admin --leader multi:///127.0.0.1:50051,127.0.0.1:50052 leadership_transfer\n  \
        raft-admin --endpoints 127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053 status"
)]
pub struct Cli {
    /// The node to talk to (host:port). Changes are forwarded to the leader by the node itself.
    #[arg(value_name = "ADDR")]
    pub address: Option<String>,

    /// Find the leader among these nodes and send the command there
    /// (multi:///host:port,host:port,… or a plain comma-separated list).
    #[arg(long, value_name = "multi:///A,B,…", conflicts_with = "endpoints")]
    pub leader: Option<String>,

    /// The cluster's nodes, comma-separated: same as --leader.
    #[arg(long, value_name = "A,B,…")]
    pub endpoints: Option<String>,

    /// Give up on the command after this long (e.g. 500ms, 5s, 1m).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Print the result as one JSON document (top: one per refresh).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Every raft-admin command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add a voter: the leader adds it as a learner, waits until it has caught up, then
    /// promotes it.
    ///
    /// Waits at least 150 s for the leader's answer, whatever --timeout says: catching up
    /// may take the leader up to two minutes. Finding the leader takes at most --timeout.
    #[command(name = "add_voter", visible_alias = "add-voter")]
    AddVoter {
        /// The new node's id (a positive integer).
        id: u64,
        /// The new node's host:port.
        address: String,
        /// The configuration index the change expects (0 = any).
        previous_index: Option<u64>,
    },
    /// Add a non-voting member (a learner) that receives the log.
    #[command(name = "add_nonvoter", visible_alias = "add-nonvoter")]
    AddNonvoter {
        /// The new node's id (a positive integer).
        id: u64,
        /// The new node's host:port.
        address: String,
        /// The configuration index the change expects (0 = any).
        previous_index: Option<u64>,
    },
    /// Turn a voter into a non-voting member.
    #[command(name = "demote_voter", visible_alias = "demote-voter")]
    DemoteVoter {
        /// The voter's id.
        id: u64,
        /// The configuration index the change expects (0 = any).
        previous_index: Option<u64>,
    },
    /// Remove a node from the cluster (removing the leader moves leadership first).
    #[command(name = "remove_server", visible_alias = "remove-server")]
    RemoveServer {
        /// The node's id.
        id: u64,
        /// The configuration index the change expects (0 = any).
        previous_index: Option<u64>,
    },
    /// Move leadership to the most up-to-date other voter and wait for it.
    #[command(name = "leadership_transfer", visible_alias = "leadership-transfer")]
    LeadershipTransfer,
    /// Move leadership to node ID and wait for it.
    #[command(
        name = "leadership_transfer_to_server",
        visible_alias = "leadership-transfer-to-server"
    )]
    LeadershipTransferToServer {
        /// The voter that is to lead.
        id: u64,
        /// If given, must match the node's address in the configuration.
        address: Option<String>,
    },
    /// The cluster configuration: id, address and suffrage of every member.
    #[command(name = "get_configuration", visible_alias = "get-configuration")]
    GetConfiguration,
    /// The node's role: Leader, Follower, Candidate, Learner.
    State,
    /// The current leader's id and address.
    Leader,
    /// The node's last log index.
    #[command(name = "last_index", visible_alias = "last-index")]
    LastIndex,
    /// The node's last applied index.
    #[command(name = "applied_index", visible_alias = "applied-index")]
    AppliedIndex,
    /// How long ago each peer last answered the leader.
    #[command(name = "last_contact", visible_alias = "last-contact")]
    LastContact,
    /// Everything the node knows: term, indexes, snapshot, peers and their progress.
    Stats,
    /// Build a snapshot now and print the index it covers.
    Snapshot,
    /// Wait until everything committed so far is applied on the leader.
    Barrier,
    /// Drop the history before REVISION on every node: reads at an older
    /// revision, and watches from one, are refused from then on.
    ///
    /// The leader also compacts on its own, keeping --history-revisions (and
    /// --history-age) of history; this is for the rest, as `etcdctl compact`.
    Compact {
        /// The oldest revision to keep: at most the newest applied revision,
        /// after the current compaction point.
        revision: u64,
    },
    /// The size quota's NOSPACE alarms, as `etcdctl alarm`: while any
    /// member's is raised, writes that add data are refused (reads,
    /// deletes, lease revokes and compaction go on).
    #[command(subcommand)]
    Alarm(AlarmCommand),
    /// Confirm the leader still holds a quorum.
    #[command(name = "verify_leader", visible_alias = "verify-leader")]
    VerifyLeader,
    /// Stop the node gracefully.
    Shutdown,
    /// Write a consistent copy of every key, taken on the leader, to FILE
    /// (restore it with `raftkv-node restore`).
    ///
    /// The leader confirms it leads, builds a snapshot that includes every write
    /// committed before the call and streams it; FILE gets a header (index, term,
    /// membership) and a SHA-256 checksum of the whole file. FILE must not exist.
    /// Waits at least 5 minutes for the leader, whatever --timeout says.
    #[command(after_help = "Example:\n  \
        raft-admin --leader multi:///127.0.0.1:50051,127.0.0.1:50052 backup raftkv.backup\n  \
        raftkv-node restore --from raftkv.backup --data-dir data1 --id 1 --advertise 127.0.0.1:50051")]
    Backup {
        /// The file to write.
        file: PathBuf,
    },
    /// One row per node: role, term, leader, indexes and lag behind the leader.
    Status,
    /// A live view of the cluster, refreshed every --interval (four times a second by
    /// default) until Ctrl-C: each node's role, term, vote, indexes and lag; each peer's
    /// match index and lag on the leader; writes per second and their mean latency on
    /// the leader; and the latest leader changes with how long each took, as the nodes
    /// recorded them (elections are often shorter than a refresh).
    ///
    /// Nodes that stop answering show why, and come back when they answer again. Give
    /// every node with --endpoints, or one ADDR (its configuration names the others).
    #[command(
        visible_alias = "watch",
        after_help = "Examples:\n  \
        raft-admin --endpoints 127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053 top\n  \
        raft-admin 127.0.0.1:50051 top --once --json"
    )]
    Top {
        /// Stop after this many refreshes (0: run until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// Time between refreshes.
        #[arg(long, default_value = "250ms", value_parser = parse_duration)]
        interval: Duration,
        /// Print one view and stop (it takes two samples, --interval apart, for the rates).
        #[arg(long, conflicts_with = "count")]
        once: bool,
    },
    /// Print every change to keys under PREFIX as it is applied: `INDEX PUT KEY VALUE` or
    /// `INDEX DELETE KEY` (one JSON document per change with --json).
    ///
    /// Runs until interrupted (or --count changes). Watches the node named (or the first
    /// of --endpoints that answers), from its applied state; if it goes away, resumes on the
    /// next node from the last index printed, missing nothing and repeating nothing.
    #[command(name = "watch_keys", visible_alias = "watch-keys")]
    WatchKeys {
        /// Only keys starting with this (empty: every key).
        #[arg(default_value = "")]
        prefix: String,
        /// Start at this log index (changes from it on, then live); 0: from now.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Stop after this many changes (0: run until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Make certificates for a cluster: a CA, then one certificate per node,
    /// operator or client (no node address is needed).
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Write KEY = VALUE.
    Put {
        /// The key (UTF-8 text).
        key: String,
        /// The value (UTF-8 text).
        value: String,
        /// Attach the key to this lease: it is deleted when the lease ends.
        #[arg(long, default_value_t = 0)]
        lease: u64,
    },
    /// Grant a lease of TTL (whole seconds, e.g. 30s); prints its id. Keys
    /// attached to it (`put --lease ID`) are deleted when it expires or is
    /// revoked; `lease_keepalive` keeps it alive.
    #[command(name = "lease_grant", visible_alias = "lease-grant")]
    LeaseGrant {
        /// The TTL, e.g. 10s or 1m.
        #[arg(value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Revoke a lease now, deleting its keys.
    #[command(name = "lease_revoke", visible_alias = "lease-revoke")]
    LeaseRevoke {
        /// The lease id.
        id: u64,
    },
    /// How long a lease has left on the leader's clock.
    #[command(name = "lease_ttl", visible_alias = "lease-ttl")]
    LeaseTtl {
        /// The lease id.
        id: u64,
        /// Also list its keys.
        #[arg(long)]
        keys: bool,
    },
    /// Keep a lease alive, renewing every third of its TTL until Ctrl-C.
    #[command(name = "lease_keepalive", visible_alias = "lease-keepalive")]
    LeaseKeepalive {
        /// The lease id.
        id: u64,
        /// Stop after this many renewals (0: run until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Read KEY (linearizable unless --stale).
    Get {
        /// The key (UTF-8 text).
        key: String,
        /// Read the node's local state without asking the leader.
        #[arg(long)]
        stale: bool,
        /// Read the key as it was at this revision (a log index; refused
        /// before the compaction point).
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Delete KEY, or with --prefix every key starting with it.
    Delete {
        /// The key (UTF-8 text).
        key: String,
        /// Delete every key starting with KEY, at one revision (needs every
        /// member to run raftkv 0.2 or newer).
        #[arg(long)]
        prefix: bool,
    },
    /// List keys starting with PREFIX.
    Scan {
        /// The prefix (empty: every key).
        #[arg(default_value = "")]
        prefix: String,
        /// List at most this many keys.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// List the keys as they were at this revision (a log index;
        /// refused before the compaction point).
        #[arg(long)]
        revision: Option<u64>,
    },
}

/// `raft-admin certs …`: a CA and the certificates it signs, written as
/// `<DIR>/<NAME>.crt` and `<DIR>/<NAME>.key` (keys readable by their owner
/// only). Existing files are never overwritten.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a new CA: DIR/ca.crt (give it to every node and client) and
    /// DIR/ca.key (keep it safe: it signs new certificates).
    Ca {
        /// Where to write the files.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "raftkv CA")]
        cn: String,
        /// Days of validity.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Make a certificate signed by the CA. Its common name is its role:
    /// `node` for cluster members (add --ip/--dns for every address the node
    /// is reached at), `admin` for operators, any other name for clients.
    #[command(after_help = "Examples:\n  \
        raft-admin certs ca\n  \
        raft-admin certs issue --cn node --name node1 --ip 10.0.0.5\n  \
        raft-admin certs issue --cn admin\n  \
        raft-admin certs issue --cn sensor-17")]
    Issue {
        /// The certificate's common name (its role).
        #[arg(long)]
        cn: String,
        /// An IP address the holder is reached at (repeat for more).
        #[arg(long = "ip", value_name = "IP")]
        ips: Vec<std::net::IpAddr>,
        /// A DNS name the holder is reached at (repeat for more).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// File name (without extension) to write; default: the common name.
        #[arg(long)]
        name: Option<String>,
        /// Where to write the files (and where the CA is, by default).
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The CA certificate (default: DIR/ca.crt).
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        /// The CA key (default: DIR/ca.key).
        #[arg(long)]
        ca_key: Option<PathBuf>,
        /// Days of validity.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

/// `alarm` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum AlarmCommand {
    /// List the members whose NOSPACE alarm is raised, with the addressed
    /// node's store size and quota.
    List,
    /// Clear alarms through the log (every member's, or one's). A member
    /// still past its quota raises its alarm again; make room first
    /// (delete, compact).
    Disarm {
        /// Only this member's alarm.
        #[arg(long)]
        member: Option<u64>,
    },
}
