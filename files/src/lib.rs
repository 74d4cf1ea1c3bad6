//! What raftkv's programs share besides talking to a cluster, each behind a
//! feature so a program builds only what it uses:
//!
//! - `backup` ([`backup`]): the backup file that `raft-admin backup` writes
//!   and `raftkv-node restore` reads;
//! - `certs` ([`certs`]): making a CA and certificates (`raft-admin certs`,
//!   the tests);
//! - `cli` ([`cli`]): the TLS flags of raft-admin and hammer (etcdctl's
//!   names), read into the client's [`raftkv_client::TlsFiles`].
//!
//! Talking to a cluster is `raftkv-client`'s alone.

#[cfg(feature = "backup")]
pub mod backup;
#[cfg(feature = "certs")]
pub mod certs;
#[cfg(feature = "cli")]
pub mod cli;
