//! The one test kit of raftkv, like raft-rs's `harness/`: every crate's
//! integration tests start clusters through it.
//!
//! - [`TestCluster`]: nodes sharing one temporary directory; bootstrap, add
//!   voters, wait for a leader (or for the nodes to agree on one) and for
//!   applied indexes, compare replicas; every node is stopped on drop.
//! - [`TestNode`] and [`NodeSpec`]: one real `raftkv-node` process on a port
//!   the OS picks, its data directory and its log file; kill -9, SIGTERM,
//!   signals, restart on the same address and data, gRPC clients.
//! - [`wait_for`] and [`PATIENCE`]: the one way to wait on a condition.
//! - [`run_program`] and [`Run`]: run a command-line program to completion;
//! - [`TestCerts`]: a CA of the test's own and certificates it signs, for
//!   clusters that serve mutual TLS;
//! - [`MemoryCgroup`]: a memory limit to run a node under.
//!
//! Nodes are processes of the `raftkv-node` binary (see [`node_binary`]), so
//! tests depend on the node's flags, its one stdout line and its gRPC API,
//! never on its internals; a node can be killed like a power cut would.

mod binary;
mod certs;
mod cgroup;
mod cluster;
mod node;
mod program;
mod wait;

pub use binary::node_binary;
pub use binary::NODE_BINARY_ENV;
pub use certs::TestCerts;
pub use cgroup::MemoryCgroup;
pub use cluster::ClusterBuilder;
pub use cluster::TestCluster;
pub use node::NodeSpec;
pub use node::TestNode;
pub use node::CLEAN_STOP;
pub use program::run_program;
pub use program::Run;
pub use wait::poll_within;
pub use wait::wait_for;
pub use wait::PATIENCE;
