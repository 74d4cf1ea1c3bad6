use super::*;
use crate::codec::decode;
use crate::codec::encode;
use crate::types::Entry;
use crate::types::LogId;

fn entry(command: Command, encoding: Encoding) -> Entry {
    Entry {
        log_id: LogId {
            leader_id: openraft::vote::RaftLeaderId::new(3, 1),
            index: 7,
        },
        payload: openraft::EntryPayload::Normal(LogCommand::new(command, encoding)),
    }
}

#[test]
fn the_first_releases_encoding_is_bincode_of_the_command_as_it_declared_it() {
    // A put as 0.1 wrote it: kind 0 (u32 LE), then key and value, each a
    // u64 LE length and the bytes. Changing this breaks every 0.1 log.
    let put = LogCommand::new(
        Command::Put {
            key: b"k".to_vec(),
            value: b"vv".to_vec(),
        },
        Encoding::FirstRelease,
    );
    let bytes = encode(&put).unwrap();
    assert_eq!(
        bytes,
        [
            &[0, 0, 0, 0][..],
            &[1, 0, 0, 0, 0, 0, 0, 0],
            b"k",
            &[2, 0, 0, 0, 0, 0, 0, 0],
            b"vv",
        ]
        .concat()
    );
    assert_eq!(decode::<LogCommand>(&bytes).unwrap(), put);
}

#[test]
fn entries_read_back_in_the_encoding_they_were_written_in() {
    let commands = [
        Command::Put {
            key: b"a".to_vec(),
            value: vec![7; 300],
        },
        Command::Delete { key: b"a".to_vec() },
        Command::Compact { revision: 9 },
        Command::ClusterId { id: 0xc1 },
    ];
    for command in commands {
        for encoding in [Encoding::FirstRelease, Encoding::Versioned] {
            let written = entry(command.clone(), encoding);
            let read: Entry = decode(&encode(&written).unwrap()).unwrap();
            assert_eq!(read, written, "{command} in {encoding:?}");
        }
    }
}

#[test]
fn kinds_the_first_release_lacks_are_written_only_in_the_versioned_encoding() {
    for command in [
        Command::DeletePrefix {
            prefix: b"p/".to_vec(),
        },
        Command::ClusterVersion {
            version: Version::VERSIONED_ENTRIES,
        },
    ] {
        assert!(encode(&entry(command.clone(), Encoding::FirstRelease)).is_err());
        let written = entry(command, Encoding::Versioned);
        let read: Entry = decode(&encode(&written).unwrap()).unwrap();
        assert_eq!(read, written);
    }
    // Read as the first release's, kind 13 (DeletePrefix in the enum) is
    // one 0.1 never wrote, and no later kind is either.
    for kind in [FIRST_RELEASE_KINDS, FIRST_RELEASE_KINDS + 1, 1000] {
        let mut bytes = kind.to_le_bytes().to_vec();
        bytes.extend_from_slice(&2u64.to_le_bytes());
        bytes.extend_from_slice(b"p/");
        assert!(decode::<LogCommand>(&bytes).is_err(), "kind {kind}");
    }
}

#[test]
fn the_first_releases_kinds_keep_their_numbers() {
    use crate::etcd::txn::EtcdTxn;
    // 0.1's declaration order: the kind number each was written with.
    let kinds = [
        Command::Put {
            key: vec![],
            value: vec![],
        },
        Command::Delete { key: vec![] },
        Command::CompareAndSwap {
            key: vec![],
            expected: None,
            new_value: vec![],
        },
        Command::Txn {
            compares: vec![],
            success: vec![],
            failure: vec![],
        },
        Command::LeaseGrant { ttl_seconds: 1 },
        Command::LeaseRevoke {
            id: 1,
            expired: false,
        },
        Command::PutLeased {
            key: vec![],
            value: vec![],
            lease: 1,
        },
        Command::CompareAndSwapLeased {
            key: vec![],
            expected: None,
            new_value: vec![],
            lease: 1,
        },
        Command::Compact { revision: 1 },
        Command::Alarm {
            member: None,
            raise: true,
        },
        Command::Etcd(EtcdTxn::default()),
        Command::LeaseGrantId {
            id: 1,
            ttl_seconds: 1,
        },
        Command::ClusterId { id: 1 },
    ];
    assert_eq!(kinds.len() as u32, FIRST_RELEASE_KINDS);
    for (number, command) in kinds.into_iter().enumerate() {
        assert_eq!(command.requires(), Version::FIRST, "{command}");
        let bytes = encode(&LogCommand::new(command.clone(), Encoding::FirstRelease)).unwrap();
        assert_eq!(bytes[..4], (number as u32).to_le_bytes(), "{command}");
        assert_eq!(
            *decode::<LogCommand>(&bytes).unwrap().command(),
            command,
            "{command}"
        );
    }
}

#[test]
fn a_versioned_entry_starts_with_a_kind_number_the_first_release_refuses() {
    let bytes = encode(&LogCommand::new(
        Command::Delete { key: b"k".to_vec() },
        Encoding::Versioned,
    ))
    .unwrap();
    assert_eq!(bytes[..4], VERSIONED_KIND.to_le_bytes());
}

#[test]
fn no_cut_or_garbage_input_panics() {
    let bytes = encode(&entry(
        Command::Put {
            key: b"key".to_vec(),
            value: b"value".to_vec(),
        },
        Encoding::Versioned,
    ))
    .unwrap();
    for end in 0..bytes.len() {
        assert!(decode::<Entry>(&bytes[..end]).is_err(), "cut at {end}");
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        let len = (state % 64) as usize;
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let _ = decode::<LogCommand>(&garbage);
    }
}

/// A versioned entry is written again in the bytes it was read from: a
/// field this release does not know (one a newer release added without
/// raising `requires`) survives a node that stores or forwards the entry.
#[test]
fn a_versioned_entry_is_written_again_in_the_bytes_it_was_read_from() {
    let put = LogCommand::new(
        Command::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        },
        Encoding::Versioned,
    );
    let bytes = encode(&put).unwrap();
    // kind (4 bytes), the message's length (u64 LE), the message.
    let mut message = bytes[12..].to_vec();
    prost::encoding::uint64::encode(99, &7, &mut message);
    let mut newer = bytes[..4].to_vec();
    newer.extend_from_slice(&(message.len() as u64).to_le_bytes());
    newer.extend_from_slice(&message);
    let read: LogCommand = decode(&newer).unwrap();
    assert_eq!(read, put);
    assert_eq!(encode(&read).unwrap(), newer);
    assert_eq!(
        encode(&read.clone()).unwrap(),
        newer,
        "a clone shares the bytes"
    );
    // Made afresh from the command, the unknown field is gone.
    let again = LogCommand::new(read.into_command(), Encoding::Versioned);
    assert_eq!(encode(&again).unwrap(), bytes);
}
