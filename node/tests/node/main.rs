//! Integration tests of raftkv-node: storage conformance and real clusters of
//! `raftkv-node` processes (started through `raftkv_testkit`) on 127.0.0.1
//! with temporary data directories.

mod support;
mod test_bad_input;
mod test_cluster;
mod test_dashboard;
mod test_etcd;
mod test_etcd_python;
mod test_etcd_rust;
mod test_etcdctl;
mod test_fuzz;
mod test_join;
mod test_lease;
mod test_metrics;
mod test_quota;
mod test_recovery;
mod test_revisions;
mod test_service;
mod test_storage;
mod test_tls;
mod test_txn;
mod test_versions;
mod test_watch;
