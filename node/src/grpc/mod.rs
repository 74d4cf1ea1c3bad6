//! The gRPC services one node serves on its single port: `raftkv.KV`
//! ([`kv`]), `raftkv.Admin` ([`admin`]), `raftkv.Raft` ([`raft`]), the
//! standard health service ([`health`]) and server reflection.

pub mod admin;
pub mod backup;
pub mod convert;
pub mod describe;
pub mod forwarding;
pub mod health;
pub mod kv;
pub mod raft;
pub mod raft_guard;
pub mod routing;
pub mod txn;
pub mod watch;
