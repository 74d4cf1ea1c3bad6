//! The cluster's life cycle around one node: joining it (`--join`),
//! recovering from a lost quorum (`--force-new-cluster`), making a data
//! directory from a backup (`raftkv-node restore`), and campaigning as soon
//! as the leader's connection closes (failover).

pub mod failover;
pub mod join;
pub mod recovery;
pub mod restore;
