//! Apply semantics as tables: a sequence of commands at revisions, and
//! what the key space holds after (no processes, a temporary sled).
use super::*;

/// The commands of one test apply as one batch does: their rows stay in
/// one buffer, read back from there, until a check of the tree flushes it.
struct Fixture {
    _db: sled::Db,
    space: KeySpace,
    leases: LeaseTrees,
    rows: RowBuffer,
    compacted: u64,
}

impl Fixture {
    fn new() -> Fixture {
        let db = sled::Config::new().temporary(true).open().unwrap();
        Fixture {
            space: KeySpace::open(&db, std::sync::Arc::default()).unwrap(),
            leases: LeaseTrees::open(&db).unwrap(),
            _db: db,
            rows: RowBuffer::default(),
            compacted: 0,
        }
    }

    fn apply(&mut self, revision: u64, command: Command) -> CommandResult {
        let mut entry = EntryApply::new(&self.space, &self.leases, &mut self.rows, revision);
        let result = entry.command(command, self.compacted).unwrap();
        if let Some(at) = entry.effects.compact {
            self.compacted = at;
        }
        result
    }

    /// The history rows of `revision`, once every row is in the tree.
    fn history(&mut self, revision: u64) -> (Vec<(u64, Row)>, bool) {
        self.space.flush_rows(&mut self.rows).unwrap();
        self.space.history(revision, revision, 1 << 20).unwrap()
    }

    /// (value, create, mod, version, lease) of `key` at `revision`.
    fn at(&self, key: &str, revision: u64) -> Option<(String, u64, u64, u64, u64)> {
        let kv = self
            .space
            .get_buffered(key.as_bytes(), revision, &self.rows)
            .unwrap()
            .found()?;
        Some((
            String::from_utf8(kv.value).unwrap(),
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.lease,
        ))
    }
}

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn delete(key: &str) -> Command {
    Command::Delete { key: key.into() }
}

fn txn_put(key: &str, value: &str) -> TxnOp {
    TxnOp::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn compare(key: &str, check: Check) -> Compare {
    Compare {
        key: key.into(),
        check,
    }
}

#[test]
fn versions_count_writes_since_creation() {
    let mut f = Fixture::new();
    // (revision, command, key, expected at that revision: value,
    // create, mod, version)
    type Expected<'a> = Option<(&'a str, u64, u64, u64)>;
    let table: Vec<(u64, Command, &str, Expected)> = vec![
        (2, put("k", "a"), "k", Some(("a", 2, 2, 1))),
        (3, put("k", "b"), "k", Some(("b", 2, 3, 2))),
        (4, delete("k"), "k", None),
        (5, put("k", "c"), "k", Some(("c", 5, 5, 1))),
        (6, delete("missing"), "missing", None),
    ];
    for (revision, command, key, expected) in table {
        f.apply(revision, command);
        let got = f.at(key, revision).map(|(v, c, m, ver, _)| (v, c, m, ver));
        let expected = expected.map(|(v, c, m, ver)| (v.to_string(), c, m, ver));
        assert_eq!(got, expected, "at {revision}");
    }
    // Older revisions still read as they were.
    assert_eq!(f.at("k", 3).unwrap().0, "b");
    assert_eq!(f.at("k", 4), None);
    // A delete of a missing key writes nothing.
    assert_eq!(f.history(6), (vec![], true));
}

#[test]
fn compare_and_swap_and_transactions_decide_on_the_state_before_them() {
    let mut f = Fixture::new();
    f.apply(2, put("a", "1"));
    let cas = |expected: Option<&str>, new: &str| Command::CompareAndSwap {
        key: b"a".to_vec(),
        expected: expected.map(|e| e.into()),
        new_value: new.into(),
    };
    let table: Vec<(u64, Command, CommandResult)> = vec![
        (
            3,
            cas(Some("1"), "2"),
            CommandResult::Swapped {
                succeeded: true,
                current: None,
            },
        ),
        (
            4,
            cas(Some("1"), "3"),
            CommandResult::Swapped {
                succeeded: false,
                current: Some(b"2".to_vec()),
            },
        ),
        (
            5,
            cas(None, "3"),
            CommandResult::Swapped {
                succeeded: false,
                current: Some(b"2".to_vec()),
            },
        ),
        (
            6,
            Command::Txn {
                compares: vec![
                    compare("a", Check::ModifiedIndex(3)),
                    compare("b", Check::Exists(false)),
                ],
                success: vec![
                    txn_put("a", "x"),
                    txn_put("b", "y"),
                    TxnOp::Get { key: b"a".to_vec() },
                ],
                failure: vec![],
            },
            CommandResult::Txn {
                succeeded: true,
                results: vec![
                    TxnOpResult::Put,
                    TxnOpResult::Put,
                    // Its own earlier write.
                    TxnOpResult::Got {
                        found: Some(Stored {
                            value: b"x".to_vec(),
                            modified: 6,
                            lease: 0,
                            created: 2,
                            version: 3,
                        }),
                    },
                ],
            },
        ),
        (
            7,
            Command::Txn {
                compares: vec![compare("a", Check::Value(b"1".to_vec()))],
                success: vec![txn_put("a", "never")],
                failure: vec![TxnOp::Delete { key: b"b".to_vec() }],
            },
            CommandResult::Txn {
                succeeded: false,
                results: vec![TxnOpResult::Deleted { existed: true }],
            },
        ),
    ];
    for (revision, command, expected) in table {
        assert_eq!(f.apply(revision, command), expected, "at {revision}");
    }
    // The transaction's writes share one revision.
    assert_eq!(f.at("a", 6).unwrap().2, 6);
    assert_eq!(f.at("b", 6).unwrap().2, 6);
    assert_eq!(f.at("b", 5), None);
    assert_eq!(f.at("b", 7), None);
}

#[test]
fn applying_an_entry_again_over_part_of_it_decides_and_writes_alike() {
    let mut f = Fixture::new();
    f.apply(2, put("a", "1"));
    let txn = || Command::Txn {
        compares: vec![compare("a", Check::Value(b"1".to_vec()))],
        success: vec![txn_put("a", "2"), txn_put("b", "2")],
        failure: vec![txn_put("c", "failed")],
    };
    let first = f.apply(3, txn());
    let rows = f.history(3);
    // A crash after part of it, then the log replays it: the state at
    // revision 2 still says a = 1.
    let again = f.apply(3, txn());
    assert_eq!(first, again);
    assert_eq!(f.history(3), rows);
    assert_eq!(f.at("a", 3).unwrap().3, 2, "version counted once");
}

#[test]
fn a_lease_revoke_deletes_its_keys_at_one_revision() {
    let mut f = Fixture::new();
    f.apply(2, Command::LeaseGrant { ttl_seconds: 10 });
    let leased = |key: &str| Command::PutLeased {
        key: key.into(),
        value: b"v".to_vec(),
        lease: 2,
    };
    f.apply(3, leased("x"));
    f.apply(4, leased("y"));
    f.apply(5, leased("moved"));
    f.apply(6, put("moved", "off"));
    let result = f.apply(
        7,
        Command::LeaseRevoke {
            id: 2,
            expired: true,
        },
    );
    assert_eq!(
        result,
        CommandResult::LeaseRevoked {
            found: true,
            keys_deleted: 2
        }
    );
    assert!(f.at("x", 6).is_some() && f.at("y", 6).is_some());
    assert!(f.at("x", 7).is_none() && f.at("y", 7).is_none());
    assert_eq!(f.at("moved", 7).unwrap().0, "off");
    // A write naming it now changes nothing.
    assert_eq!(
        f.apply(8, leased("z")),
        CommandResult::LeaseNotFound { id: 2 }
    );
    assert!(f.at("z", 8).is_none());
}

#[test]
fn a_lease_takes_keys_up_to_its_budget_and_refuses_more_changing_nothing() {
    let mut f = Fixture::new();
    f.apply(2, Command::LeaseGrant { ttl_seconds: 10 });
    // Keys of 4,080 bytes weigh 4,096: the budget holds exactly this many.
    let fits = usize::try_from(leases::MAX_LEASE_KEY_BYTES / 4096).unwrap();
    let key = |i: usize| format!("{i:04080}");
    let leased = |key: String| Command::PutLeased {
        key: key.into_bytes(),
        value: b"v".to_vec(),
        lease: 2,
    };
    let mut revision = 3;
    for i in 0..fits {
        assert_eq!(f.apply(revision, leased(key(i))), CommandResult::Done);
        revision += 1;
    }
    assert_eq!(
        f.apply(revision, leased(key(fits))),
        CommandResult::LeaseFull { id: 2 }
    );
    assert!(f.at(&key(fits), revision).is_none(), "nothing written");
    // A key it carries already costs nothing more.
    assert_eq!(f.apply(revision, leased(key(0))), CommandResult::Done);
    // Moved off the lease, a key frees its weight.
    assert_eq!(
        f.apply(revision + 1, put(&key(1), "off")),
        CommandResult::Done
    );
    assert_eq!(
        f.apply(revision + 2, leased(key(fits))),
        CommandResult::Done
    );
    let revoked = f.apply(
        revision + 3,
        Command::LeaseRevoke {
            id: 2,
            expired: false,
        },
    );
    assert_eq!(
        revoked,
        CommandResult::LeaseRevoked {
            found: true,
            keys_deleted: u64::try_from(fits).unwrap()
        }
    );
}

#[test]
fn compaction_moves_forward_only_and_never_past_the_state_before_it() {
    let mut f = Fixture::new();
    f.apply(2, put("a", "1"));
    let compact = |revision| Command::Compact { revision };
    let table = [(3, 2, 2), (4, 1, 2), (5, 99, 4), (6, 4, 4)];
    for (revision, asked, expected) in table {
        assert_eq!(
            f.apply(revision, compact(asked)),
            CommandResult::Compacted { revision: expected },
            "at {revision}"
        );
        assert_eq!(f.compacted, expected);
    }
}

mod etcd {
    use super::*;
    use crate::etcd::txn::CompareResult;
    use crate::etcd::txn::CompareTarget;
    use crate::etcd::txn::EtcdCompare;
    use crate::etcd::txn::EtcdOp;
    use crate::etcd::txn::EtcdOpResult;
    use crate::etcd::txn::EtcdRefusal;
    use crate::etcd::txn::EtcdTxn;
    use crate::etcd::txn::KeyRange;

    fn put(key: &str, value: &str) -> EtcdOp {
        EtcdOp::Put {
            key: key.into(),
            value: Some(value.into()),
            lease: Some(0),
            prev_kv: false,
        }
    }

    fn mod_is(key: &str, revision: i64) -> EtcdCompare {
        EtcdCompare {
            keys: KeyRange {
                key: key.into(),
                end: Vec::new(),
            },
            result: CompareResult::Equal,
            target: CompareTarget::Mod(revision),
        }
    }

    #[test]
    fn nested_compares_read_the_state_before_the_transaction() {
        let mut f = Fixture::new();
        f.apply(
            2,
            Command::Put {
                key: "a".into(),
                value: "1".into(),
            },
        );
        // The outer branch writes a; the nested compare still sees a at 2.
        let txn = EtcdTxn {
            compares: vec![],
            success: vec![
                put("a", "2"),
                EtcdOp::Txn(EtcdTxn {
                    compares: vec![mod_is("a", 2)],
                    success: vec![put("b", "seen-before")],
                    failure: vec![put("b", "seen-after")],
                }),
            ],
            failure: vec![],
        };
        let CommandResult::Etcd(Ok(EtcdOpResult::Txn { succeeded, results })) =
            f.apply(3, Command::Etcd(txn))
        else {
            panic!("a transaction result");
        };
        assert!(succeeded);
        assert!(matches!(
            results[1],
            EtcdOpResult::Txn {
                succeeded: true,
                ..
            }
        ));
        assert_eq!(f.at("b", 3).unwrap().0, "seen-before");
        assert_eq!(f.at("a", 3).unwrap().0, "2");
    }

    #[test]
    fn a_refused_branch_writes_nothing_and_a_range_sees_earlier_writes() {
        let mut f = Fixture::new();
        f.apply(
            2,
            Command::Put {
                key: "a".into(),
                value: "1".into(),
            },
        );
        // A put on a lease that does not exist, after a put that would have
        // run first: nothing is written.
        let refused = EtcdTxn {
            success: vec![
                put("c", "x"),
                EtcdOp::Put {
                    key: "d".into(),
                    value: Some("y".into()),
                    lease: Some(99),
                    prev_kv: false,
                },
            ],
            ..EtcdTxn::default()
        };
        assert_eq!(
            f.apply(3, Command::Etcd(refused)),
            CommandResult::Etcd(Err(EtcdRefusal::LeaseNotFound(99)))
        );
        assert_eq!(f.at("c", 3), None);
        // Keeping the value of a key that does not exist is refused too.
        let keep = EtcdTxn {
            success: vec![EtcdOp::Put {
                key: "missing".into(),
                value: None,
                lease: Some(0),
                prev_kv: false,
            }],
            ..EtcdTxn::default()
        };
        assert_eq!(
            f.apply(4, Command::Etcd(keep)),
            CommandResult::Etcd(Err(EtcdRefusal::KeyNotFound))
        );
        // A range after a put and a delete in the same transaction.
        let txn = EtcdTxn {
            success: vec![
                put("b", "2"),
                EtcdOp::DeleteRange {
                    keys: KeyRange {
                        key: "a".into(),
                        end: Vec::new(),
                    },
                    prev_kv: true,
                },
                EtcdOp::Range {
                    keys: KeyRange {
                        key: "a".into(),
                        end: vec![0],
                    },
                    limit: 0,
                    count_only: false,
                },
            ],
            ..EtcdTxn::default()
        };
        let CommandResult::Etcd(Ok(EtcdOpResult::Txn { results, .. })) =
            f.apply(5, Command::Etcd(txn))
        else {
            panic!("a transaction result");
        };
        let EtcdOpResult::DeleteRange { deleted, prev } = &results[1] else {
            panic!("{results:?}");
        };
        assert_eq!((*deleted, prev[0].1.value.as_slice()), (1, &b"1"[..]));
        let EtcdOpResult::Range { pairs, count } = &results[2] else {
            panic!("{results:?}");
        };
        let keys: Vec<&[u8]> = pairs.iter().map(|(key, _)| key.as_slice()).collect();
        assert_eq!((keys, *count), (vec![&b"b"[..]], 1));
    }
}

#[test]
fn a_client_chosen_lease_id_is_granted_once_and_server_chosen_ids_step_around_it() {
    let mut f = Fixture::new();
    let grant_id = |id| Command::LeaseGrantId {
        id,
        ttl_seconds: 10,
    };
    // A client takes id 5, before the log reaches index 5.
    assert_eq!(
        f.apply(2, grant_id(5)),
        CommandResult::LeaseGrantedAs { id: 5 }
    );
    assert_eq!(
        f.apply(3, grant_id(5)),
        CommandResult::LeaseExists { id: 5 }
    );
    assert_eq!(
        f.apply(4, grant_id(0)),
        CommandResult::LeaseExists { id: 0 }
    );
    // A server-chosen grant at index 4 keeps its index; at index 5 the id
    // is taken, so it gets the next free one (6), and the grant at index 6
    // then gets 7: the same on every replica, since only the table decides.
    let grant = || Command::LeaseGrant { ttl_seconds: 10 };
    assert_eq!(f.apply(4, grant()), CommandResult::LeaseGranted);
    assert_eq!(f.apply(5, grant()), CommandResult::LeaseGrantedAs { id: 6 });
    assert_eq!(f.apply(6, grant()), CommandResult::LeaseGrantedAs { id: 7 });
    let ids: Vec<u64> = f
        .leases
        .all()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, [4, 5, 6, 7]);
    // A key attached to the client's lease goes with its revoke.
    f.apply(
        8,
        Command::PutLeased {
            key: "k".into(),
            value: b"v".to_vec(),
            lease: 5,
        },
    );
    assert_eq!(
        f.apply(
            9,
            Command::LeaseRevoke {
                id: 5,
                expired: false
            }
        ),
        CommandResult::LeaseRevoked {
            found: true,
            keys_deleted: 1
        }
    );
    assert!(f.at("k", 9).is_none());
    // Its row is kept (marked) until compaction passes the revoke: the id
    // is not free again before.
    assert_eq!(
        f.apply(10, grant_id(5)),
        CommandResult::LeaseExists { id: 5 }
    );
    assert_eq!(f.leases.remove_revoked(9).unwrap(), 1);
    assert_eq!(
        f.apply(11, grant_id(5)),
        CommandResult::LeaseGrantedAs { id: 5 }
    );
}
