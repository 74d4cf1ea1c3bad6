//! The cluster's life cycle around one node: joining it (`--join`),
//! recovering from a lost quorum (`--force-new-cluster`), making a data
//! directory from a backup (`raftkv-node restore`), campaigning as soon
//! as the leader's connection closes (failover), naming the cluster (its
//! id), and recording the leader changes it sees (elections).

pub mod elections;
pub mod failover;
pub mod identity;
pub mod join;
pub mod recovery;
pub mod restore;
