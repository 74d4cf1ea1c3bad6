//! The versioned encoding of a log entry's [`Command`]: protobuf, schema
//! `raftkv.entry` (`proto/proto/entry.proto`).
//!
//! bincode of the enum, the first release's encoding, cannot grow: a new
//! kind or field is garbage to an older node. Protobuf skips what it does
//! not know, and every entry names the oldest release that applies it as
//! meant ([`Command::requires`]), so an older node refuses an entry it
//! would apply differently from its peers instead of guessing.
//!
//! The mapping is one to one: every command has one encoding, and decoding
//! refuses what raftkv never writes rather than picking a default that an
//! apply would then act on.

use prost::Message;

use crate::etcd::txn::CompareResult;
use crate::etcd::txn::CompareTarget;
use crate::etcd::txn::EtcdCompare;
use crate::etcd::txn::EtcdOp;
use crate::etcd::txn::EtcdTxn;
use crate::etcd::txn::KeyRange;
use crate::types::Check;
use crate::types::Command;
use crate::types::Compare;
use crate::types::TxnOp;
use crate::version::Version;
use raftkv_proto::entry as pb;

/// Why bytes are not a command this node may apply.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a `raftkv.entry.Command` (prost's error).
    #[error("not an encoded command: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// A message without a kind, or with a field value raftkv never writes
    /// (named).
    #[error("not a command raftkv writes: {0}")]
    Invalid(&'static str),
    /// The entry needs a newer release than this node.
    #[error("the entry needs raftkv {needs} or newer; this node runs {ours}")]
    TooNew { needs: Version, ours: Version },
}

/// Encodes `command` as a `raftkv.entry.Command` whose header names `command.requires()`.
pub fn encode(command: &Command) -> Vec<u8> {
    match command {
        // Most entries: written from the command's own bytes, without the
        // copies building the message would take. Every entry is encoded
        // once per log append and once per follower it is sent to.
        Command::Put { key, value } => encode_put(command.requires(), key, value, None),
        Command::PutLeased { key, value, lease } => {
            encode_put(command.requires(), key, value, Some(*lease))
        }
        _ => encode_message(command),
    }
}

/// [`encode`] by building the message.
fn encode_message(command: &Command) -> Vec<u8> {
    pb::Command {
        requires: Some(version_to_pb(command.requires())),
        kind: Some(kind_to_pb(command)),
    }
    .encode_to_vec()
}

/// What [`encode_message`] writes for a put, byte for byte: the header,
/// then `put` (field 2) holding key (1), value (2) and, when present, the
/// lease (3). Empty bytes are left out, as protobuf does.
fn encode_put(requires: Version, key: &[u8], value: &[u8], lease: Option<u64>) -> Vec<u8> {
    use prost::encoding::encode_key;
    use prost::encoding::encode_varint;
    use prost::encoding::encoded_len_varint;
    use prost::encoding::key_len;
    use prost::encoding::WireType;
    let bytes_len = |tag: u32, bytes: &[u8]| {
        if bytes.is_empty() {
            0
        } else {
            key_len(tag) + encoded_len_varint(bytes.len() as u64) + bytes.len()
        }
    };
    let lease_len = lease.map_or(0, |lease| prost::encoding::uint64::encoded_len(3, &lease));
    let put_len = bytes_len(1, key) + bytes_len(2, value) + lease_len;
    let header = version_to_pb(requires);
    let mut out = Vec::with_capacity(
        prost::encoding::message::encoded_len(1, &header)
            + key_len(2)
            + encoded_len_varint(put_len as u64)
            + put_len,
    );
    prost::encoding::message::encode(1, &header, &mut out);
    encode_key(2, WireType::LengthDelimited, &mut out);
    encode_varint(put_len as u64, &mut out);
    for (tag, bytes) in [(1, key), (2, value)] {
        if !bytes.is_empty() {
            encode_key(tag, WireType::LengthDelimited, &mut out);
            encode_varint(bytes.len() as u64, &mut out);
            out.extend_from_slice(bytes);
        }
    }
    if let Some(lease) = lease {
        prost::encoding::uint64::encode(3, &lease, &mut out);
    }
    out
}

/// Decodes an encoded command. `ours` is this node's version.
pub fn decode(bytes: &[u8], ours: Version) -> Result<Command, DecodeError> {
    let message = pb::Command::decode(bytes);
    // What a newer release wrote may not decode here at all: its header
    // alone says whether that is "too new" rather than garbage.
    let requires = match &message {
        Ok(message) => message.requires,
        Err(_) => pb::Header::decode(bytes)?.requires,
    };
    let needs = requires.map_or(Version::FIRST, version_from_pb);
    if needs > ours {
        return Err(DecodeError::TooNew { needs, ours });
    }
    let kind = message?
        .kind
        .ok_or(DecodeError::Invalid("a command without a kind"))?;
    kind_from_pb(kind)
}

fn version_to_pb(version: Version) -> pb::Version {
    pb::Version {
        major: version.major,
        minor: version.minor,
    }
}

fn version_from_pb(version: pb::Version) -> Version {
    Version::new(version.major, version.minor)
}

fn kind_to_pb(command: &Command) -> pb::command::Kind {
    use pb::command::Kind;
    match command {
        Command::Put { key, value } => Kind::Put(pb::Put {
            key: key.clone(),
            value: value.clone(),
            lease: None,
        }),
        Command::PutLeased { key, value, lease } => Kind::Put(pb::Put {
            key: key.clone(),
            value: value.clone(),
            lease: Some(*lease),
        }),
        Command::Delete { key } => Kind::Delete(pb::Delete { key: key.clone() }),
        Command::CompareAndSwap {
            key,
            expected,
            new_value,
        } => Kind::CompareAndSwap(pb::CompareAndSwap {
            key: key.clone(),
            expected: expected.clone(),
            new_value: new_value.clone(),
            lease: None,
        }),
        Command::CompareAndSwapLeased {
            key,
            expected,
            new_value,
            lease,
        } => Kind::CompareAndSwap(pb::CompareAndSwap {
            key: key.clone(),
            expected: expected.clone(),
            new_value: new_value.clone(),
            lease: Some(*lease),
        }),
        Command::Txn {
            compares,
            success,
            failure,
        } => Kind::Txn(pb::Txn {
            compares: compares.iter().map(compare_to_pb).collect(),
            success: success.iter().map(txn_op_to_pb).collect(),
            failure: failure.iter().map(txn_op_to_pb).collect(),
        }),
        Command::LeaseGrant { ttl_seconds } => Kind::LeaseGrant(pb::LeaseGrant {
            ttl_seconds: *ttl_seconds,
            id: None,
        }),
        Command::LeaseGrantId { id, ttl_seconds } => Kind::LeaseGrant(pb::LeaseGrant {
            ttl_seconds: *ttl_seconds,
            id: Some(*id),
        }),
        Command::LeaseRevoke { id, expired } => Kind::LeaseRevoke(pb::LeaseRevoke {
            id: *id,
            expired: *expired,
        }),
        Command::Compact { revision } => Kind::Compact(pb::Compact {
            revision: *revision,
        }),
        Command::Alarm { member, raise } => Kind::Alarm(pb::Alarm {
            member: *member,
            raise: *raise,
        }),
        Command::Etcd(txn) => Kind::Etcd(etcd_txn_to_pb(txn)),
        Command::ClusterId { id } => Kind::ClusterId(pb::ClusterId { id: *id }),
        Command::DeletePrefix { prefix } => Kind::DeletePrefix(pb::DeletePrefix {
            prefix: prefix.clone(),
        }),
        Command::ClusterVersion { version } => Kind::ClusterVersion(pb::ClusterVersion {
            version: Some(version_to_pb(*version)),
        }),
    }
}

fn kind_from_pb(kind: pb::command::Kind) -> Result<Command, DecodeError> {
    use pb::command::Kind;
    Ok(match kind {
        Kind::Put(pb::Put { key, value, lease }) => match lease {
            None => Command::Put { key, value },
            Some(lease) => Command::PutLeased { key, value, lease },
        },
        Kind::Delete(pb::Delete { key }) => Command::Delete { key },
        Kind::CompareAndSwap(pb::CompareAndSwap {
            key,
            expected,
            new_value,
            lease,
        }) => match lease {
            None => Command::CompareAndSwap {
                key,
                expected,
                new_value,
            },
            Some(lease) => Command::CompareAndSwapLeased {
                key,
                expected,
                new_value,
                lease,
            },
        },
        Kind::Txn(pb::Txn {
            compares,
            success,
            failure,
        }) => Command::Txn {
            compares: compares
                .into_iter()
                .map(compare_from_pb)
                .collect::<Result<_, _>>()?,
            success: txn_ops_from_pb(success)?,
            failure: txn_ops_from_pb(failure)?,
        },
        Kind::LeaseGrant(pb::LeaseGrant { ttl_seconds, id }) => match id {
            None => Command::LeaseGrant { ttl_seconds },
            Some(id) => Command::LeaseGrantId { id, ttl_seconds },
        },
        Kind::LeaseRevoke(pb::LeaseRevoke { id, expired }) => Command::LeaseRevoke { id, expired },
        Kind::Compact(pb::Compact { revision }) => Command::Compact { revision },
        Kind::Alarm(pb::Alarm { member, raise }) => Command::Alarm { member, raise },
        Kind::Etcd(txn) => Command::Etcd(etcd_txn_from_pb(txn)?),
        Kind::ClusterId(pb::ClusterId { id }) => Command::ClusterId { id },
        Kind::DeletePrefix(pb::DeletePrefix { prefix }) => Command::DeletePrefix { prefix },
        Kind::ClusterVersion(pb::ClusterVersion { version }) => Command::ClusterVersion {
            version: version
                .map(version_from_pb)
                .ok_or(DecodeError::Invalid("a cluster version without a version"))?,
        },
    })
}

fn compare_to_pb(compare: &Compare) -> pb::Compare {
    use pb::compare::Check as PbCheck;
    pb::Compare {
        key: compare.key.clone(),
        check: Some(match &compare.check {
            Check::Value(value) => PbCheck::Value(value.clone()),
            Check::Exists(exists) => PbCheck::Exists(*exists),
            Check::ModifiedIndex(index) => PbCheck::ModifiedIndex(*index),
        }),
    }
}

fn compare_from_pb(compare: pb::Compare) -> Result<Compare, DecodeError> {
    use pb::compare::Check as PbCheck;
    let check = match compare.check {
        Some(PbCheck::Value(value)) => Check::Value(value),
        Some(PbCheck::Exists(exists)) => Check::Exists(exists),
        Some(PbCheck::ModifiedIndex(index)) => Check::ModifiedIndex(index),
        None => return Err(DecodeError::Invalid("a compare without a check")),
    };
    Ok(Compare {
        key: compare.key,
        check,
    })
}

fn txn_op_to_pb(op: &TxnOp) -> pb::TxnOp {
    use pb::txn_op;
    let op = match op {
        TxnOp::Put { key, value } => txn_op::Op::Put(txn_op::Put {
            key: key.clone(),
            value: value.clone(),
            lease: None,
        }),
        TxnOp::PutLeased { key, value, lease } => txn_op::Op::Put(txn_op::Put {
            key: key.clone(),
            value: value.clone(),
            lease: Some(*lease),
        }),
        TxnOp::Delete { key } => txn_op::Op::Delete(txn_op::Delete { key: key.clone() }),
        TxnOp::Get { key } => txn_op::Op::Get(txn_op::Get { key: key.clone() }),
    };
    pb::TxnOp { op: Some(op) }
}

fn txn_ops_from_pb(ops: Vec<pb::TxnOp>) -> Result<Vec<TxnOp>, DecodeError> {
    use pb::txn_op;
    ops.into_iter()
        .map(|op| {
            Ok(match op.op {
                Some(txn_op::Op::Put(txn_op::Put { key, value, lease })) => match lease {
                    None => TxnOp::Put { key, value },
                    Some(lease) => TxnOp::PutLeased { key, value, lease },
                },
                Some(txn_op::Op::Delete(txn_op::Delete { key })) => TxnOp::Delete { key },
                Some(txn_op::Op::Get(txn_op::Get { key })) => TxnOp::Get { key },
                None => {
                    return Err(DecodeError::Invalid(
                        "a transaction operation without a kind",
                    ))
                }
            })
        })
        .collect()
}

fn etcd_txn_to_pb(txn: &EtcdTxn) -> pb::EtcdTxn {
    pb::EtcdTxn {
        compares: txn.compares.iter().map(etcd_compare_to_pb).collect(),
        success: txn.success.iter().map(etcd_op_to_pb).collect(),
        failure: txn.failure.iter().map(etcd_op_to_pb).collect(),
    }
}

fn etcd_txn_from_pb(txn: pb::EtcdTxn) -> Result<EtcdTxn, DecodeError> {
    Ok(EtcdTxn {
        compares: txn
            .compares
            .into_iter()
            .map(etcd_compare_from_pb)
            .collect::<Result<_, _>>()?,
        success: etcd_ops_from_pb(txn.success)?,
        failure: etcd_ops_from_pb(txn.failure)?,
    })
}

fn key_range_to_pb(keys: &KeyRange) -> Option<pb::KeyRange> {
    Some(pb::KeyRange {
        key: keys.key.clone(),
        end: keys.end.clone(),
    })
}

fn key_range_from_pb(keys: Option<pb::KeyRange>) -> Result<KeyRange, DecodeError> {
    let keys = keys.ok_or(DecodeError::Invalid("an etcd range without keys"))?;
    Ok(KeyRange {
        key: keys.key,
        end: keys.end,
    })
}

fn etcd_compare_to_pb(compare: &EtcdCompare) -> pb::EtcdCompare {
    use pb::etcd_compare::CompareResult as PbResult;
    use pb::etcd_compare::Target;
    let result = match compare.result {
        CompareResult::Equal => PbResult::Equal,
        CompareResult::Greater => PbResult::Greater,
        CompareResult::Less => PbResult::Less,
        CompareResult::NotEqual => PbResult::NotEqual,
    };
    let target = match &compare.target {
        CompareTarget::Version(version) => Target::Version(*version),
        CompareTarget::Create(revision) => Target::Create(*revision),
        CompareTarget::Mod(revision) => Target::Mod(*revision),
        CompareTarget::Value(value) => Target::Value(value.clone()),
        CompareTarget::Lease(lease) => Target::Lease(*lease),
    };
    pb::EtcdCompare {
        keys: key_range_to_pb(&compare.keys),
        result: result.into(),
        target: Some(target),
    }
}

fn etcd_compare_from_pb(compare: pb::EtcdCompare) -> Result<EtcdCompare, DecodeError> {
    use pb::etcd_compare::CompareResult as PbResult;
    use pb::etcd_compare::Target;
    // No default: a compare that holds where its writer meant it to fail
    // (or the reverse) would make this node's state differ from its peers'.
    let result = match PbResult::try_from(compare.result) {
        Ok(PbResult::Equal) => CompareResult::Equal,
        Ok(PbResult::Greater) => CompareResult::Greater,
        Ok(PbResult::Less) => CompareResult::Less,
        Ok(PbResult::NotEqual) => CompareResult::NotEqual,
        Ok(PbResult::Unspecified) | Err(_) => {
            return Err(DecodeError::Invalid(
                "an etcd compare without a known result",
            ))
        }
    };
    let target = match compare.target {
        Some(Target::Version(version)) => CompareTarget::Version(version),
        Some(Target::Create(revision)) => CompareTarget::Create(revision),
        Some(Target::Mod(revision)) => CompareTarget::Mod(revision),
        Some(Target::Value(value)) => CompareTarget::Value(value),
        Some(Target::Lease(lease)) => CompareTarget::Lease(lease),
        None => return Err(DecodeError::Invalid("an etcd compare without a target")),
    };
    Ok(EtcdCompare {
        keys: key_range_from_pb(compare.keys)?,
        result,
        target,
    })
}

fn etcd_op_to_pb(op: &EtcdOp) -> pb::EtcdOp {
    use pb::etcd_op;
    let op = match op {
        EtcdOp::Range {
            keys,
            limit,
            count_only,
        } => etcd_op::Op::Range(etcd_op::Range {
            keys: key_range_to_pb(keys),
            limit: *limit,
            count_only: *count_only,
        }),
        EtcdOp::Put {
            key,
            value,
            lease,
            prev_kv,
        } => etcd_op::Op::Put(etcd_op::Put {
            key: key.clone(),
            value: value.clone(),
            lease: *lease,
            prev_kv: *prev_kv,
        }),
        EtcdOp::DeleteRange { keys, prev_kv } => etcd_op::Op::DeleteRange(etcd_op::DeleteRange {
            keys: key_range_to_pb(keys),
            prev_kv: *prev_kv,
        }),
        EtcdOp::Txn(txn) => etcd_op::Op::Txn(etcd_txn_to_pb(txn)),
    };
    pb::EtcdOp { op: Some(op) }
}

fn etcd_ops_from_pb(ops: Vec<pb::EtcdOp>) -> Result<Vec<EtcdOp>, DecodeError> {
    use pb::etcd_op;
    ops.into_iter()
        .map(|op| {
            Ok(match op.op {
                Some(etcd_op::Op::Range(etcd_op::Range {
                    keys,
                    limit,
                    count_only,
                })) => EtcdOp::Range {
                    keys: key_range_from_pb(keys)?,
                    limit,
                    count_only,
                },
                Some(etcd_op::Op::Put(etcd_op::Put {
                    key,
                    value,
                    lease,
                    prev_kv,
                })) => EtcdOp::Put {
                    key,
                    value,
                    lease,
                    prev_kv,
                },
                Some(etcd_op::Op::DeleteRange(etcd_op::DeleteRange { keys, prev_kv })) => {
                    EtcdOp::DeleteRange {
                        keys: key_range_from_pb(keys)?,
                        prev_kv,
                    }
                }
                Some(etcd_op::Op::Txn(txn)) => EtcdOp::Txn(etcd_txn_from_pb(txn)?),
                None => return Err(DecodeError::Invalid("an etcd operation without a kind")),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn a_put_is_written_as_the_message_would_be() {
        // `encode_put` writes these fields by hand: a field added to `Put`
        // stops this from compiling until it is written there too.
        let pb::Put {
            key: _,
            value: _,
            lease: _,
        } = pb::Put::default();
        let sizes = [0, 1, 127, 128, 300, 20_000];
        for key_len in sizes {
            for value_len in sizes {
                for lease in [None, Some(0), Some(7), Some(u64::MAX)] {
                    let key = vec![b'k'; key_len];
                    let value = vec![b'v'; value_len];
                    let command = match lease {
                        None => Command::Put { key, value },
                        Some(lease) => Command::PutLeased { key, value, lease },
                    };
                    assert_eq!(
                        encode(&command),
                        encode_message(&command),
                        "{key_len} {value_len} {lease:?}"
                    );
                }
            }
        }
    }

    fn b(text: &str) -> Vec<u8> {
        text.as_bytes().to_vec()
    }

    fn keys(key: &str, end: &str) -> KeyRange {
        KeyRange {
            key: b(key),
            end: b(end),
        }
    }

    /// An etcd transaction with every compare and operation, and a nested one.
    fn etcd_sample() -> EtcdTxn {
        let compare = |result, target| EtcdCompare {
            keys: keys("a", ""),
            result,
            target,
        };
        EtcdTxn {
            compares: vec![
                compare(CompareResult::Equal, CompareTarget::Version(0)),
                compare(CompareResult::Greater, CompareTarget::Create(i64::MAX)),
                compare(CompareResult::Less, CompareTarget::Mod(-1)),
                compare(CompareResult::NotEqual, CompareTarget::Value(b("v"))),
                compare(CompareResult::Equal, CompareTarget::Value(Vec::new())),
                EtcdCompare {
                    keys: keys("a", "\0"),
                    result: CompareResult::Less,
                    target: CompareTarget::Lease(i64::MIN),
                },
            ],
            success: vec![
                EtcdOp::Range {
                    keys: keys("a", "b"),
                    limit: 0,
                    count_only: false,
                },
                EtcdOp::Range {
                    keys: keys("", "\0"),
                    limit: u64::MAX,
                    count_only: true,
                },
                EtcdOp::Put {
                    key: b("k"),
                    value: None,
                    lease: None,
                    prev_kv: false,
                },
                EtcdOp::Put {
                    key: b("k"),
                    value: Some(Vec::new()),
                    lease: Some(0),
                    prev_kv: true,
                },
                EtcdOp::Put {
                    key: Vec::new(),
                    value: Some(b("v")),
                    lease: Some(7),
                    prev_kv: false,
                },
                EtcdOp::DeleteRange {
                    keys: keys("a", ""),
                    prev_kv: true,
                },
                EtcdOp::Txn(EtcdTxn {
                    compares: vec![compare(CompareResult::Equal, CompareTarget::Mod(3))],
                    success: vec![EtcdOp::DeleteRange {
                        keys: keys("x", "y"),
                        prev_kv: false,
                    }],
                    failure: vec![EtcdOp::Txn(EtcdTxn::default())],
                }),
            ],
            failure: vec![EtcdOp::Range {
                keys: keys("z", ""),
                limit: 1,
                count_only: false,
            }],
        }
    }

    /// Every kind, nested variant and optional field, both present and absent.
    fn samples() -> Vec<Command> {
        vec![
            Command::Put {
                key: b("k"),
                value: b("v"),
            },
            Command::Put {
                key: Vec::new(),
                value: Vec::new(),
            },
            Command::PutLeased {
                key: b("k"),
                value: b("v"),
                lease: 7,
            },
            Command::PutLeased {
                key: b("k"),
                value: b("v"),
                lease: 0,
            },
            Command::Delete { key: b("k") },
            Command::CompareAndSwap {
                key: b("k"),
                expected: None,
                new_value: b("new"),
            },
            Command::CompareAndSwap {
                key: b("k"),
                expected: Some(Vec::new()),
                new_value: Vec::new(),
            },
            Command::CompareAndSwapLeased {
                key: b("k"),
                expected: Some(b("old")),
                new_value: b("new"),
                lease: u64::MAX,
            },
            Command::CompareAndSwapLeased {
                key: b("k"),
                expected: None,
                new_value: b("new"),
                lease: 0,
            },
            Command::Txn {
                compares: vec![
                    Compare {
                        key: b("a"),
                        check: Check::Value(b("1")),
                    },
                    Compare {
                        key: b("b"),
                        check: Check::Exists(true),
                    },
                    Compare {
                        key: b("c"),
                        check: Check::Exists(false),
                    },
                    Compare {
                        key: b("d"),
                        check: Check::ModifiedIndex(0),
                    },
                    Compare {
                        key: Vec::new(),
                        check: Check::Value(Vec::new()),
                    },
                ],
                success: vec![
                    TxnOp::Put {
                        key: b("a"),
                        value: b("2"),
                    },
                    TxnOp::PutLeased {
                        key: b("b"),
                        value: b("2"),
                        lease: 0,
                    },
                    TxnOp::PutLeased {
                        key: b("b"),
                        value: b("2"),
                        lease: 9,
                    },
                    TxnOp::Delete { key: b("c") },
                ],
                failure: vec![TxnOp::Get { key: b("a") }],
            },
            Command::Txn {
                compares: Vec::new(),
                success: Vec::new(),
                failure: Vec::new(),
            },
            Command::LeaseGrant { ttl_seconds: 60 },
            Command::LeaseGrantId {
                id: 0,
                ttl_seconds: 0,
            },
            Command::LeaseGrantId {
                id: u64::MAX,
                ttl_seconds: 5,
            },
            Command::LeaseRevoke {
                id: 3,
                expired: false,
            },
            Command::LeaseRevoke {
                id: 3,
                expired: true,
            },
            Command::Compact { revision: 42 },
            Command::Alarm {
                member: None,
                raise: false,
            },
            Command::Alarm {
                member: Some(0),
                raise: true,
            },
            Command::Etcd(etcd_sample()),
            Command::Etcd(EtcdTxn::default()),
            Command::ClusterId { id: 0xdead_beef },
            Command::DeletePrefix { prefix: b("dir/") },
            Command::DeletePrefix { prefix: Vec::new() },
            Command::ClusterVersion {
                version: Version::VERSIONED_ENTRIES,
            },
            // Every field 0: the version must still be there on decode.
            Command::ClusterVersion {
                version: Version::new(0, 0),
            },
        ]
    }

    /// Names what `command` exercises. No match here has a wildcard arm, so a
    /// new variant fails to compile until it has a name; `every_variant_…`
    /// then fails until a sample has it.
    fn cover(command: &Command, seen: &mut BTreeSet<String>) {
        let mut see = |name: &str| {
            seen.insert(name.to_owned());
        };
        let variant = match command {
            Command::Put { .. } => "Put",
            Command::PutLeased { lease, .. } => {
                if *lease == 0 {
                    see("PutLeased with lease 0");
                }
                "PutLeased"
            }
            Command::Delete { .. } => "Delete",
            Command::CompareAndSwap { expected, .. } => {
                see(match expected {
                    Some(_) => "CompareAndSwap expecting a value",
                    None => "CompareAndSwap expecting absence",
                });
                "CompareAndSwap"
            }
            Command::CompareAndSwapLeased {
                expected, lease, ..
            } => {
                see(match expected {
                    Some(_) => "CompareAndSwapLeased expecting a value",
                    None => "CompareAndSwapLeased expecting absence",
                });
                if *lease == 0 {
                    see("CompareAndSwapLeased with lease 0");
                }
                "CompareAndSwapLeased"
            }
            Command::Txn {
                compares,
                success,
                failure,
            } => {
                for compare in compares {
                    see(match compare.check {
                        Check::Value(_) => "Check::Value",
                        Check::Exists(_) => "Check::Exists",
                        Check::ModifiedIndex(_) => "Check::ModifiedIndex",
                    });
                }
                for op in success.iter().chain(failure) {
                    see(match op {
                        TxnOp::Put { .. } => "TxnOp::Put",
                        TxnOp::Delete { .. } => "TxnOp::Delete",
                        TxnOp::Get { .. } => "TxnOp::Get",
                        TxnOp::PutLeased { lease: 0, .. } => "TxnOp::PutLeased with lease 0",
                        TxnOp::PutLeased { .. } => "TxnOp::PutLeased",
                    });
                }
                "Txn"
            }
            Command::LeaseGrant { .. } => "LeaseGrant",
            Command::LeaseGrantId { id, .. } => {
                if *id == 0 {
                    see("LeaseGrantId with id 0");
                }
                "LeaseGrantId"
            }
            Command::LeaseRevoke { .. } => "LeaseRevoke",
            Command::Compact { .. } => "Compact",
            Command::Alarm { member, .. } => {
                see(match member {
                    Some(_) => "Alarm of a member",
                    None => "Alarm of every member",
                });
                "Alarm"
            }
            Command::Etcd(txn) => {
                cover_etcd(txn, seen);
                "Etcd"
            }
            Command::ClusterId { .. } => "ClusterId",
            Command::DeletePrefix { .. } => "DeletePrefix",
            Command::ClusterVersion { .. } => "ClusterVersion",
        };
        seen.insert(format!("Command::{variant}"));
    }

    fn cover_etcd(txn: &EtcdTxn, seen: &mut BTreeSet<String>) {
        for compare in &txn.compares {
            seen.insert(
                match compare.result {
                    CompareResult::Equal => "CompareResult::Equal",
                    CompareResult::Greater => "CompareResult::Greater",
                    CompareResult::Less => "CompareResult::Less",
                    CompareResult::NotEqual => "CompareResult::NotEqual",
                }
                .to_owned(),
            );
            seen.insert(
                match compare.target {
                    CompareTarget::Version(_) => "CompareTarget::Version",
                    CompareTarget::Create(_) => "CompareTarget::Create",
                    CompareTarget::Mod(_) => "CompareTarget::Mod",
                    CompareTarget::Value(_) => "CompareTarget::Value",
                    CompareTarget::Lease(_) => "CompareTarget::Lease",
                }
                .to_owned(),
            );
        }
        for op in txn.success.iter().chain(&txn.failure) {
            let variant = match op {
                EtcdOp::Range { .. } => "Range",
                EtcdOp::Put { value, lease, .. } => {
                    seen.insert(
                        match value {
                            Some(_) => "EtcdOp::Put with a value",
                            None => "EtcdOp::Put keeping the value",
                        }
                        .to_owned(),
                    );
                    seen.insert(
                        match lease {
                            Some(0) => "EtcdOp::Put with lease 0",
                            Some(_) => "EtcdOp::Put with a lease",
                            None => "EtcdOp::Put keeping the lease",
                        }
                        .to_owned(),
                    );
                    "Put"
                }
                EtcdOp::DeleteRange { .. } => "DeleteRange",
                EtcdOp::Txn(inner) => {
                    cover_etcd(inner, seen);
                    "Txn"
                }
            };
            seen.insert(format!("EtcdOp::{variant}"));
        }
    }

    /// The names of `T`'s variants, as its derived `Deserialize` lists them:
    /// the list grows with the enum, whatever the tests remember to name.
    fn variants<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
        use serde::de::value::Error;
        use serde::de::Error as _;
        struct Listing(&'static [&'static str]);
        impl<'de> serde::Deserializer<'de> for &mut Listing {
            type Error = Error;
            fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
                Err(Error::custom("not an enum"))
            }
            fn deserialize_enum<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                variants: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Error> {
                self.0 = variants;
                Err(Error::custom("listed"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map struct identifier ignored_any
            }
        }
        let mut listing = Listing(&[]);
        let _ = T::deserialize(&mut listing);
        listing.0
    }

    #[test]
    fn every_variant_and_optional_field_has_a_sample() {
        let mut seen = BTreeSet::new();
        for command in samples() {
            cover(&command, &mut seen);
        }
        let mut wanted: BTreeSet<String> = [
            ("Command", variants::<Command>()),
            ("Check", variants::<Check>()),
            ("TxnOp", variants::<TxnOp>()),
            ("CompareResult", variants::<CompareResult>()),
            ("CompareTarget", variants::<CompareTarget>()),
            ("EtcdOp", variants::<EtcdOp>()),
        ]
        .into_iter()
        .flat_map(|(name, variants)| variants.iter().map(move |v| format!("{name}::{v}")))
        .collect();
        assert_eq!(wanted.len(), 15 + 3 + 4 + 4 + 5 + 4, "{wanted:?}");
        wanted.extend(
            [
                "PutLeased with lease 0",
                "CompareAndSwap expecting a value",
                "CompareAndSwap expecting absence",
                "CompareAndSwapLeased expecting a value",
                "CompareAndSwapLeased expecting absence",
                "CompareAndSwapLeased with lease 0",
                "TxnOp::PutLeased with lease 0",
                "LeaseGrantId with id 0",
                "Alarm of a member",
                "Alarm of every member",
                "EtcdOp::Put with a value",
                "EtcdOp::Put keeping the value",
                "EtcdOp::Put with lease 0",
                "EtcdOp::Put with a lease",
                "EtcdOp::Put keeping the lease",
            ]
            .map(str::to_owned),
        );
        let missing: Vec<_> = wanted.difference(&seen).collect();
        assert!(missing.is_empty(), "no sample has {missing:?}");
    }

    #[test]
    fn every_sample_decodes_to_itself() {
        for command in samples() {
            let bytes = encode(&command);
            let decoded = decode(&bytes, Version::ours())
                .unwrap_or_else(|e| panic!("{command:?} does not decode: {e}"));
            assert_eq!(decoded, command);
        }
    }

    #[test]
    fn the_header_names_what_the_command_requires() {
        for command in samples() {
            let bytes = encode(&command);
            let header = pb::Header::decode(bytes.as_slice()).unwrap();
            assert_eq!(
                header.requires.map(version_from_pb),
                Some(command.requires()),
                "{command:?}"
            );
            assert_eq!(decode(&bytes, command.requires()).unwrap(), command);
        }
        let prefix = encode(&Command::DeletePrefix { prefix: b("p/") });
        match decode(&prefix, Version::FIRST) {
            Err(DecodeError::TooNew { needs, ours }) => {
                assert_eq!(needs, Version::VERSIONED_ENTRIES);
                assert_eq!(ours, Version::FIRST);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_entry_for_a_newer_release_is_refused_before_its_kind_is_read() {
        let ours = Version::ours();
        let header = |requires: Version| {
            pb::Command {
                requires: Some(version_to_pb(requires)),
                kind: None,
            }
            .encode_to_vec()
        };
        let newer = Version::new(ours.major, ours.minor + 1);
        // A kind this release does not know (field 100, bytes), and a known
        // field written as another type (field 2 as a number).
        let unknown_kind = [0xa2, 0x06, 0x02, b'x', b'y'];
        let retyped_kind = [0x10, 0x01];
        for body in [&[][..], &unknown_kind[..], &retyped_kind[..]] {
            let mut bytes = header(newer);
            bytes.extend_from_slice(body);
            match decode(&bytes, ours) {
                Err(DecodeError::TooNew { needs, ours: o }) => {
                    assert_eq!((needs, o), (newer, ours));
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }
        let known = pb::Command {
            requires: Some(version_to_pb(Version::new(ours.major + 1, 0))),
            kind: Some(kind_to_pb(&Command::Delete { key: b("k") })),
        };
        assert!(matches!(
            decode(&known.encode_to_vec(), ours),
            Err(DecodeError::TooNew { .. })
        ));

        // Not newer: the body is read, and judged.
        let mut bytes = header(ours);
        bytes.extend_from_slice(&unknown_kind);
        assert!(matches!(decode(&bytes, ours), Err(DecodeError::Invalid(_))));
        let mut bytes = header(ours);
        bytes.extend_from_slice(&retyped_kind);
        assert!(matches!(
            decode(&bytes, ours),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn a_missing_header_is_the_first_release() {
        let bytes = pb::Command {
            requires: None,
            kind: Some(kind_to_pb(&Command::Delete { key: b("k") })),
        }
        .encode_to_vec();
        assert_eq!(
            decode(&bytes, Version::FIRST).unwrap(),
            Command::Delete { key: b("k") }
        );
    }

    #[test]
    fn what_raftkv_never_writes_is_invalid() {
        use pb::command::Kind;
        let etcd_compare = |compare: pb::EtcdCompare| {
            Kind::Etcd(pb::EtcdTxn {
                compares: vec![compare],
                ..Default::default()
            })
        };
        let valid_compare = etcd_compare_to_pb(&EtcdCompare {
            keys: keys("a", ""),
            result: CompareResult::Equal,
            target: CompareTarget::Version(1),
        });
        let etcd_op = |op: Option<pb::etcd_op::Op>| {
            Kind::Etcd(pb::EtcdTxn {
                failure: vec![pb::EtcdOp { op }],
                ..Default::default()
            })
        };
        let cases = [
            None,
            Some(Kind::Txn(pb::Txn {
                compares: vec![pb::Compare {
                    key: b("k"),
                    check: None,
                }],
                ..Default::default()
            })),
            Some(Kind::Txn(pb::Txn {
                success: vec![pb::TxnOp { op: None }],
                ..Default::default()
            })),
            Some(Kind::ClusterVersion(pb::ClusterVersion { version: None })),
            Some(etcd_compare(pb::EtcdCompare {
                result: pb::etcd_compare::CompareResult::Unspecified.into(),
                ..valid_compare.clone()
            })),
            Some(etcd_compare(pb::EtcdCompare {
                result: 99,
                ..valid_compare.clone()
            })),
            Some(etcd_compare(pb::EtcdCompare {
                target: None,
                ..valid_compare.clone()
            })),
            Some(etcd_compare(pb::EtcdCompare {
                keys: None,
                ..valid_compare.clone()
            })),
            Some(etcd_op(None)),
            Some(etcd_op(Some(pb::etcd_op::Op::Range(pb::etcd_op::Range {
                keys: None,
                limit: 0,
                count_only: false,
            })))),
            Some(etcd_op(Some(pb::etcd_op::Op::DeleteRange(
                pb::etcd_op::DeleteRange {
                    keys: None,
                    prev_kv: false,
                },
            )))),
        ];
        for kind in cases {
            let bytes = pb::Command {
                requires: Some(version_to_pb(Version::FIRST)),
                kind: kind.clone(),
            }
            .encode_to_vec();
            match decode(&bytes, Version::ours()) {
                Err(DecodeError::Invalid(_)) => {}
                other => panic!("{kind:?}: {other:?}"),
            }
        }
        assert!(matches!(
            decode(&[], Version::ours()),
            Err(DecodeError::Invalid(_))
        ));
        // The compare above is valid on its own.
        let bytes = pb::Command {
            requires: None,
            kind: Some(etcd_compare(valid_compare)),
        }
        .encode_to_vec();
        assert!(decode(&bytes, Version::ours()).is_ok());
    }

    #[test]
    fn garbage_is_malformed() {
        let garbage: [&[u8]; 4] = [
            &[0xff],
            &[0xff; 11],
            &[0x0a, 0x05, 0x10],
            b"not a protobuf message",
        ];
        for bytes in garbage {
            match decode(bytes, Version::ours()) {
                Err(DecodeError::Malformed(_)) => {}
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn no_truncation_panics() {
        for command in samples() {
            let bytes = encode(&command);
            for len in 0..bytes.len() {
                let _ = decode(&bytes[..len], Version::ours());
            }
        }
    }

    /// etcd transactions nest; protobuf's decoder stops at 100 levels of
    /// messages, which this schema reaches at this depth.
    #[test]
    fn etcd_transactions_decode_to_48_levels_of_nesting() {
        let nested = |depth: usize| {
            let mut txn = EtcdTxn {
                compares: vec![EtcdCompare {
                    keys: keys("a", "b"),
                    result: CompareResult::Equal,
                    target: CompareTarget::Value(b("v")),
                }],
                success: vec![EtcdOp::Range {
                    keys: keys("a", "b"),
                    limit: 0,
                    count_only: false,
                }],
                failure: Vec::new(),
            };
            for _ in 0..depth {
                txn = EtcdTxn {
                    success: vec![EtcdOp::Txn(txn)],
                    ..Default::default()
                };
            }
            Command::Etcd(txn)
        };
        let deepest = nested(48);
        assert_eq!(decode(&encode(&deepest), Version::ours()).unwrap(), deepest);
        assert!(matches!(
            decode(&encode(&nested(49)), Version::ours()),
            Err(DecodeError::Malformed(_))
        ));
    }

    /// The exact bytes of a put. Every log on disk holds entries like it:
    /// if this changes, nodes stop reading their own logs.
    #[test]
    fn a_put_encodes_to_these_bytes() {
        let put = Command::Put {
            key: b("k"),
            value: b("v"),
        };
        let hex: String = encode(&put).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "0a02100112060a016b120176");
    }
}
