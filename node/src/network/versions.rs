//! Which release each peer runs, and the version every Raft call carries.
//!
//! Every Raft call and every answer to one names the sender's release in
//! [`VERSION_METADATA`] and the encoding of its Raft messages in
//! [`RAFT_WIRE_METADATA`]. A 0.1 node names neither: it runs
//! [`Version::FIRST`] and speaks wire 1.
//!
//! - A node refuses a call in a wire it does not know (`FAILED_PRECONDITION`)
//!   instead of misreading it, and says so when a newer peer sent something
//!   it cannot decode (see `grpc::raft`).
//! - The leader learns each member's release from their answers
//!   ([`PeerVersions`]); the cluster version follows from them
//!   (`node::upgrade`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use tonic::metadata::MetadataMap;
use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::types::NodeId;
use crate::version::Version;
use crate::version::OURS_TEXT;
use crate::version::VERSION_METADATA;

/// Request and response metadata on every Raft call: the encoding of the
/// Raft messages it carries ([`RAFT_WIRE`] for this release).
pub const RAFT_WIRE_METADATA: &str = "raftkv-raft-wire";

/// The Raft wire this release speaks and reads: bincode of openraft 0.10's
/// messages, entries as `entry` encodes them. A change a peer could misread
/// takes a new number.
pub const RAFT_WIRE: u32 = 1;

/// Names this node's release and wire in `metadata`.
pub fn stamp(metadata: &mut MetadataMap) {
    metadata.insert(VERSION_METADATA, MetadataValue::from_static(OURS_TEXT));
    metadata.insert(RAFT_WIRE_METADATA, RAFT_WIRE.into());
}

/// The release `metadata` names; none (or one that does not parse) is a
/// 0.1 node's.
pub fn version_of(metadata: &MetadataMap) -> Version {
    metadata
        .get(VERSION_METADATA)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(Version::FIRST)
}

/// Refuses a call in a Raft wire this release does not read.
pub fn check_wire(metadata: &MetadataMap) -> Result<(), Status> {
    let Some(value) = metadata.get(RAFT_WIRE_METADATA) else {
        return Ok(());
    };
    match value
        .to_str()
        .ok()
        .and_then(|text| text.parse::<u32>().ok())
    {
        Some(RAFT_WIRE) => Ok(()),
        wire => Err(Status::failed_precondition(format!(
            "the peer (raftkv {}) speaks Raft wire {}; this node (raftkv {}) reads wire \
             {RAFT_WIRE}: upgrade this node",
            version_of(metadata),
            wire.map_or_else(|| "?".to_string(), |w| w.to_string()),
            Version::ours()
        ))),
    }
}

/// The release each peer named in its last answer to a Raft call, the term
/// of that call, and whether a call to it failed since (the peer may come
/// back as another release).
#[derive(Debug, Default)]
pub struct PeerVersions {
    seen: Mutex<BTreeMap<NodeId, Heard>>,
}

#[derive(Debug, Clone, Copy)]
struct Heard {
    version: Version,
    term: u64,
    /// No call to the peer failed since.
    current: bool,
}

impl PeerVersions {
    /// `peer` answered a call of `term` with `metadata`.
    pub fn note(&self, peer: NodeId, metadata: &MetadataMap, term: u64) {
        let version = version_of(metadata);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let before = seen.get(&peer).copied();
        if before.is_some_and(|heard| heard.term > term) {
            // A late answer to an older term's call says less than one
            // already heard.
            return;
        }
        seen.insert(
            peer,
            Heard {
                version,
                term,
                current: true,
            },
        );
        if before.map(|heard| heard.version) != Some(version) {
            tracing::info!(peer, %version, "peer runs raftkv {version}");
        }
    }

    /// A call to `peer` failed: what it runs is unknown until it answers.
    pub fn forget(&self, peer: NodeId) {
        if let Some(heard) = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&peer)
        {
            heard.current = false;
        }
    }

    /// What `peer` named in its last answer, even if calls failed since: a
    /// peer that cannot read the log fails every call after naming it.
    pub fn last_named(&self, peer: NodeId) -> Option<Version> {
        self.heard(peer).map(|heard| heard.version)
    }

    /// What `peer` last said it runs; `None`: not since its last failure.
    pub fn get(&self, peer: NodeId) -> Option<Version> {
        self.heard_in(peer, None)
    }

    /// What `peer` said it runs in answer to a call of `term` (`None`: of
    /// any term), with no call to it failed since.
    pub fn heard_in(&self, peer: NodeId, term: Option<u64>) -> Option<Version> {
        let heard = self.heard(peer)?;
        (heard.current && term.is_none_or(|term| heard.term == term)).then_some(heard.version)
    }

    fn heard(&self, peer: NodeId) -> Option<Heard> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_names_nothing_runs_the_first_release_and_speaks_wire_1() {
        let empty = MetadataMap::new();
        assert_eq!(version_of(&empty), Version::FIRST);
        assert!(check_wire(&empty).is_ok());
        let mut ours = MetadataMap::new();
        stamp(&mut ours);
        assert_eq!(version_of(&ours), Version::ours());
        assert!(check_wire(&ours).is_ok());
        let versions = PeerVersions::default();
        assert_eq!(versions.get(2), None);
        versions.note(2, &empty, 4);
        versions.note(3, &ours, 4);
        assert_eq!(versions.get(2), Some(Version::FIRST));
        assert_eq!(versions.get(3), Some(Version::ours()));
        // Only what was heard in the term asked counts, and a failed call
        // forgets.
        assert_eq!(versions.heard_in(3, Some(5)), None);
        versions.note(3, &ours, 5);
        assert_eq!(versions.heard_in(3, Some(5)), Some(Version::ours()));
        versions.note(3, &empty, 4);
        assert_eq!(
            versions.get(3),
            Some(Version::ours()),
            "an older term's answer"
        );
        versions.forget(3);
        assert_eq!(versions.get(3), None);
        assert_eq!(versions.last_named(3), Some(Version::ours()));
    }

    #[test]
    fn a_wire_this_release_does_not_read_is_refused_with_what_to_do() {
        let mut newer = MetadataMap::new();
        newer.insert(RAFT_WIRE_METADATA, (RAFT_WIRE + 1).into());
        newer.insert(VERSION_METADATA, "9.9".parse().unwrap());
        let refused = check_wire(&newer).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(
            refused.message().contains("upgrade this node"),
            "{refused:?}"
        );
        assert!(refused.message().contains("raftkv 9.9"), "{refused:?}");
        newer.insert(RAFT_WIRE_METADATA, "x".parse().unwrap());
        assert!(check_wire(&newer).is_err());
    }
}
