//! raftkv node: one member of a replicated key-value store.
//!
//! [`run`] serves the client, admin and Raft gRPC services on an already
//! bound listener until a shutdown future resolves.
//!
//! The folders are the parts of a node. In the order a request meets them:
//! - [`server`]: builds the node from its parts, serves every service on
//!   the listener, stops in a written order; waits out a full disk
//!   (`server::disk_full`); systemd readiness; the allocator's settings;
//! - [`network`]: accepted connections (bounded, TLS-handshaken, each with
//!   who is at its other end) and the Raft transport to peers;
//! - [`security`]: TLS material (reloaded on SIGHUP) and the role a
//!   certificate gives, checked before a call runs;
//! - [`grpc`]: the services; route-and-forward (`grpc::routing`) sends a
//!   call that must run on the leader there before any handler sees it;
//! - [`etcd`]: etcd's v3 API, the same node seen through etcd's services,
//!   errors and revisions (behind the same routing);
//! - [`node`]: what a node does (reads and writes, membership, leadership,
//!   backups), with openraft's errors translated into [`error::NodeError`];
//! - [`lease`]: leases, in one place (calls, countdowns, expiry);
//! - [`store`]: openraft's storage on sled: the log, the revisioned key
//!   space, apply semantics, snapshots;
//! - [`history`]: compaction of the history, and the hub watches read it from.
//!
//! Beside that path: [`config`] (flags → [`NodeConfig`] → openraft's
//! `Config`), [`error`] (the one error and its one mapping to a gRPC
//! status), [`types`] (the Raft type configuration and the replicated
//! commands, depending on nothing else in the crate), [`cluster`] (join,
//! `--force-new-cluster`, restore, failover), [`disk`] (quota, log purge,
//! hung disk), [`metrics`] (the Prometheus registry), [`codec`],
//! [`failpoint`].

pub mod cluster;
pub mod codec;
pub mod config;
pub mod disk;
pub mod entry;
pub mod error;
pub mod etcd;
pub mod failpoint;
pub mod grpc;
pub mod history;
pub mod lease;
pub mod metrics;
pub mod network;
pub mod node;
pub mod security;
pub mod server;
pub mod store;
pub mod types;
pub mod version;

pub use config::NodeConfig;
pub use server::run;
pub use server::RunError;
