//! raftkv node: one member of a replicated key-value store.
//!
//! [`run`] serves the client, admin and Raft gRPC services on an already
//! bound listener until a shutdown future resolves.

pub mod allocator;
pub mod codec;
pub mod config;
pub mod error;
pub mod failover;
pub mod failpoint;
pub mod grpc;
pub mod join;
pub mod network;
pub mod node;
pub mod server;
pub mod store;
pub mod types;

pub use config::NodeConfig;
pub use server::run;
pub use server::RunError;
