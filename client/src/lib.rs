//! The one way to talk to a raftkv cluster, shared by the node (peer
//! connections, `--join`), `raft-admin`, `hammer` and the tests:
//!
//! - [`address`]: what a node address is, and the endpoint built from it;
//! - [`Channels`]: one lazily connected channel per address, reused;
//! - [`Backoff`]: the pause between retries;
//! - [`Failure`]: what a failed call means for its caller (retry, where;
//!   outcome unknown; failed for good), decided from the status code and the
//!   `raftkv-reason` metadata, never from a message's wording;
//! - [`ClusterClient`]: leader discovery and following;
//! - [`lease`]: keeping a lease alive through leader changes;
//! - [`TlsFiles`]: the CA, certificate and key of a mutual-TLS client.
//!
//! The backup file format, certificates and the TLS flags live in
//! `raftkv-files`: they are not about talking to a cluster.

pub mod address;
mod backoff;
mod channels;
pub mod cluster;
mod describe;
mod duration;
mod failure;
pub mod lease;
mod tls;

pub use address::check_address;
pub use address::parse_endpoints;
pub use backoff::Backoff;
pub use channels::ChannelOptions;
pub use channels::Channels;
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
    /// The request did not complete in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}
