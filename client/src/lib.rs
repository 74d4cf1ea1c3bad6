//! The one way to talk to a raftkv cluster, shared by the node (peer
//! connections, `--join`), `raft-admin`, `hammer` and the tests.
//!
//! Callers use [`Client`]: built from [`ClientOptions`] (endpoints, TLS,
//! timeouts), it offers one typed method per call (`put`, `get`, `scan`,
//! `compare_and_swap`, `txn`, `watch`, the lease calls, the admin calls),
//! sends them to the leader and follows it. A failed call is a [`CallError`]:
//! its [`Failure`] says what the caller may do (retry, where; outcome
//! unknown; failed), its [`ClientError`] what happened (with the node's
//! status and metadata). [`Client::node`] binds a client to one node;
//! [`Client::run`] is one operation with its own deadline, telling the
//! caller about each retry and which node answered (hammer measures it).
//!
//! Read in this order:
//!
//! - [`client`]: [`Client`], its options and the retry loop; its typed
//!   methods (`methods.rs`) and [`CallError`] (`call_error.rs`) beside it;
//! - [`call`]: [`Call`], each RPC built once, and whether it may repeat;
//! - [`address`]: what a node address is, and the endpoint built from it;
//! - [`Channels`]: one lazily connected channel per address, reused;
//! - [`Backoff`]: the pause between retries;
//! - [`Failure`]: what a failed call means for its caller (retry, where;
//!   outcome unknown; failed for good), decided from the status code and the
//!   `raftkv-reason` metadata, never from a message's wording;
//! - [`ClusterClient`]: leader discovery;
//! - [`lease`]: keeping a lease alive through leader changes;
//! - [`TlsFiles`]: the CA, certificate and key of a mutual-TLS client.
//!
//! The backup file format, certificates and the TLS flags live in
//! `raftkv-files`: they are not about talking to a cluster.

pub mod address;
mod backoff;
pub mod call;
mod call_error;
mod channels;
pub mod client;
pub mod cluster;
mod describe;
mod duration;
mod failure;
pub mod lease;
mod methods;
mod tls;

pub use address::check_address;
pub use address::parse_endpoints;
pub use backoff::Backoff;
pub use call::Call;
pub use call_error::CallError;
pub use channels::ChannelOptions;
pub use channels::Channels;
pub use client::Client;
pub use client::ClientOptions;
pub use client::Served;
pub use cluster::ClusterClient;
pub use describe::describe_status;
pub use describe::role_name;
pub use duration::parse_duration;
pub use failure::leader_hint;
pub use failure::never_sent;
pub use failure::Failure;
pub use tls::read_certificates;
pub use tls::read_key;
pub use tls::TlsFiles;

use std::time::Duration;

/// Why a cluster request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An endpoint is not `host:port` (or a `multi:///` list of them).
    #[error("bad endpoint {0:?}: expected host:port (e.g. 127.0.0.1:50051)")]
    BadEndpoint(String),
    /// No endpoint was given.
    #[error("no endpoints given")]
    NoEndpoints,
    /// None of the endpoints knows a leader (or none answers).
    #[error("no leader found among {endpoints}: {details}")]
    NoLeader { endpoints: String, details: String },
    /// The request failed with this status.
    #[error("{}", describe_status(.0))]
    Rpc(tonic::Status),
    /// TLS settings are missing or unreadable (which file, and why).
    #[error("TLS: {0}")]
    Tls(String),
    /// A call to a leader that did not answer was given up: another node
    /// leads now.
    #[error("gave up waiting on {from}: {to} leads now")]
    LeaderMoved { from: String, to: String },
    /// The request did not complete in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}
