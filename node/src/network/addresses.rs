//! Where each peer is now, for connections that outlive an address change.
//!
//! openraft hands the transport a peer's address when it makes the
//! connection, and keeps a replication stream's connection for as long as
//! the node leads, even after a membership change gives that peer a new
//! address (etcd's `MemberUpdate`). So the transport also reads this book,
//! which follows the effective membership through Raft's server metrics,
//! and moves a connection to the new address on its next call.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::RwLock;

use openraft::type_config::async_runtime::WatchReceiver as _;

use crate::node::Raft;
use crate::types::NodeId;

/// The address of every member, with a count of the changes made to it.
#[derive(Debug, Default)]
pub struct PeerAddresses {
    /// Moves after every change of `addresses` (0: never filled).
    generation: AtomicU64,
    addresses: RwLock<BTreeMap<NodeId, String>>,
}

impl PeerAddresses {
    /// How many times the book has changed: a connection that saw this
    /// value has nothing new to read.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The address of `id`, if it is a member.
    pub fn get(&self, id: NodeId) -> Option<String> {
        let book = self.addresses.read().unwrap_or_else(|e| e.into_inner());
        book.get(&id).cloned()
    }

    /// Replaces the book with `addresses`, if they differ.
    pub fn set(&self, addresses: BTreeMap<NodeId, String>) {
        let mut book = self.addresses.write().unwrap_or_else(|e| e.into_inner());
        if *book != addresses {
            *book = addresses;
            self.generation.fetch_add(1, Ordering::Release);
        }
    }
}

/// Keeps `book` equal to the addresses of `raft`'s effective membership,
/// until Raft stops.
pub async fn follow_membership(raft: Raft, book: std::sync::Arc<PeerAddresses>) {
    let mut server = raft.server_metrics();
    loop {
        let addresses = {
            let metrics = server.borrow_watched();
            metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect()
        };
        book.set(addresses);
        if server.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_moves_only_when_an_address_changes() {
        let book = PeerAddresses::default();
        assert_eq!(book.generation(), 0);
        assert_eq!(book.get(1), None);
        let first = BTreeMap::from([(1, "127.0.0.1:1".to_string())]);
        book.set(first.clone());
        assert_eq!(book.generation(), 1);
        book.set(first);
        assert_eq!(book.generation(), 1, "the same addresses again");
        book.set(BTreeMap::from([(1, "127.0.0.1:2".to_string())]));
        assert_eq!(book.generation(), 2);
        assert_eq!(book.get(1).as_deref(), Some("127.0.0.1:2"));
    }
}
