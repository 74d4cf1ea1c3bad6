//! Integration tests of raft-admin: the real binary against real
//! `raftkv-node` processes (started through `raftkv_testkit`) on
//! 127.0.0.1:0 with temporary data directories.

mod support;
mod test_backup;
mod test_commands;
mod test_tls;
