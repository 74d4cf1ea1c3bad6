//! The cluster's life cycle around one node: joining it (`--join`),
//! recovering from a lost quorum (`--force-new-cluster`), making a data
//! directory from a backup (`raftkv-node restore`), campaigning as soon
//! as the leader's connection closes (failover), and naming the cluster
//! (its id).

pub mod failover;
pub mod identity;
pub mod join;
pub mod recovery;
pub mod restore;
