//! One binary encoding for everything raftkv stores on disk or sends between
//! nodes (log entries, votes, snapshots, Raft messages): bincode over serde.

use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes `value`; an encoding failure is reported as an I/O error because
/// every caller is writing to disk or to the network.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> io::Result<Vec<u8>> {
    bincode::serialize(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Decodes bytes produced by [`encode`]; garbage yields `InvalidData`, never a panic.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    bincode::deserialize(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
