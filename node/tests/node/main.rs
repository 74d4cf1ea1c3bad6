//! Integration tests of raftkv-node: storage conformance and real clusters on
//! 127.0.0.1:0 with temporary data directories.

mod test_storage;
