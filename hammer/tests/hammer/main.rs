//! Integration tests of hammer against real raftkv clusters (and against its
//! own no-op etcd server): each node is a `raftkv-node` process started
//! through `raftkv_testkit`, so a node can be killed with SIGKILL.

mod support;
mod test_faults;
mod test_load;
mod test_memory;
mod test_noop_server;
mod test_outage;
mod test_partition;
mod test_slow_disk;
mod test_storage_faults;
mod test_tls;
mod test_upgrade;
