//! raftkv node: one member of a replicated key-value store.
//!
//! [`run`] serves the client, admin and Raft gRPC services on an already
//! bound listener until a shutdown future resolves.
//!
//! The modules, in the order a request meets them:
//! - [`config`]: flags → [`NodeConfig`] → openraft's `Config`;
//! - [`server`]: opens storage, starts Raft, serves every service, stops cleanly;
//! - [`connection`]: accepted connections, bounded, TLS-handshaken, each
//!   with who is at its other end;
//! - [`security`]: TLS material (reloaded on SIGHUP) and the role a
//!   certificate gives, checked before a call runs;
//! - [`grpc`]: the services; each handler decodes the request, forwards it to
//!   the leader if it must run there, and calls the node;
//! - [`node`]: what a node does (reads and writes, membership, leadership),
//!   with openraft's errors translated into [`error::NodeError`];
//! - [`error`]: that error, and its one mapping to a gRPC status;
//! - [`store`], [`network`]: openraft's storage (sled) and transport (gRPC);
//! - [`watch`]: the history of applied changes that `Watch` streams read;
//! - [`types`]: the Raft type configuration and the replicated commands,
//!   depending on nothing else in the crate.
//!
//! Beside that path: [`metrics`] (Prometheus, `/healthz`, `/readyz`),
//! [`disk_full`] (waiting out a full disk instead of exiting), [`hung_disk`]
//! (a leader whose disk hangs hands leadership over),
//! [`systemd`] (readiness for `Type=notify`), [`recovery`]
//! (`--force-new-cluster`), [`restore`] (`raftkv-node restore`, a data
//! directory from a backup), [`join`] (`--join`), [`failover`] (campaigning as soon as
//! the leader's connection closes), [`history`] (compaction), [`log_purge`]
//! (when the Raft log is purged), [`quota`] (the size quota and its
//! alarm), [`filesystem`], [`codec`], [`failpoint`], [`allocator`].

pub mod allocator;
pub mod codec;
pub mod config;
pub mod connection;
pub mod disk_full;
pub mod error;
pub mod failover;
pub mod failpoint;
pub mod filesystem;
pub mod grpc;
pub mod history;
pub mod hung_disk;
pub mod join;
pub mod lease;
pub mod log_purge;
pub mod metrics;
pub mod network;
pub mod node;
pub mod quota;
pub mod recovery;
pub mod restore;
pub mod security;
pub mod server;
pub mod store;
pub mod systemd;
pub mod types;
pub mod watch;

pub use config::NodeConfig;
pub use server::run;
pub use server::RunError;
