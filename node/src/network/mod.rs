//! The node's network: the connections it accepts ([`connection`]: bounded,
//! TLS-handshaken, each knowing who is at its other end and when it
//! closes) and the Raft traffic it sends to its peers ([`transport`], with
//! snapshots streamed by `snapshot_stream`, and each peer's current address
//! from [`addresses`]); the release each peer runs ([`versions`]).

pub mod addresses;
pub mod calls;
pub mod connection;
mod snapshot_stream;
pub mod transport;
pub mod versions;

pub use transport::Network;
