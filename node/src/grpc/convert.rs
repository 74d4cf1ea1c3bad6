//! Conversions between the wire's messages and the node's values that
//! more than one service uses (a get's answer is also a transaction's).

use raftkv_proto::pb;

use crate::types::Stored;

/// The answer to a get that found `found`, reading state applied up to `applied_index`.
pub fn get_response(found: Option<Stored>, applied_index: u64) -> pb::GetResponse {
    match found {
        Some(stored) => pb::GetResponse {
            found: true,
            value: stored.value,
            applied_index,
            modified_index: stored.modified,
            lease: stored.lease,
            create_revision: stored.created,
            version: stored.version,
        },
        None => pb::GetResponse {
            applied_index,
            ..Default::default()
        },
    }
}
