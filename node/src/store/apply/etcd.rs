//! etcd's transactions in the apply ([`EtcdTxn`]), decided as etcd decides
//! them: every compare of the whole transaction, nested ones included, is
//! read against the state before it; then the branch taken is checked (a
//! put's lease must exist, a put that keeps the value or lease needs the
//! key), and only if every check passes are its operations run, in order,
//! each seeing the writes before it.

use std::collections::BTreeMap;
use std::io;

use super::EntryApply;
use crate::etcd::txn::EtcdCompare;
use crate::etcd::txn::EtcdOp;
use crate::etcd::txn::EtcdOpResult;
use crate::etcd::txn::EtcdRefusal;
use crate::etcd::txn::EtcdTxn;
use crate::etcd::txn::KeyRange;
use crate::etcd::txn::Pair;
use crate::store::keyspace::KeyValue;
use crate::types::CommandResult;
use crate::types::Stored;

/// The branch each transaction takes, the outer one first, then its nested
/// ones in the order they appear in that branch (depth first).
type Path = Vec<bool>;

fn pair(kv: KeyValue) -> Pair {
    (kv.key.clone(), Stored::from(kv))
}

impl EntryApply<'_> {
    /// The live pairs of `keys` as this entry sees them, the first `limit`
    /// of them (0: all), and how many there are.
    fn range_now(&self, keys: &KeyRange, limit: u64) -> io::Result<(Vec<KeyValue>, u64)> {
        let bounds = keys.bounds();
        let limit = match limit {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let before = self.revision.saturating_sub(1);
        let written: Vec<_> = self
            .written
            .keys()
            .filter(|key| keys.contains(key))
            .collect();
        let read = |limit| {
            // Not capped here: every replica applies this, and the answer
            // is only the leader's to send.
            let ranged =
                self.space
                    .range_buffered(bounds, before, limit, true, usize::MAX, self.rows)?;
            if ranged.lost {
                // Compaction never passes the applied revision.
                return Err(io::Error::other(format!(
                    "the key index names a version that is gone, reading at revision {before}"
                )));
            }
            Ok(ranged)
        };
        if written.is_empty() {
            let ranged = read(limit)?;
            return Ok((ranged.pairs, ranged.count));
        }
        // This entry wrote in the range: the state before it, then its writes.
        let mut pairs: BTreeMap<Vec<u8>, KeyValue> = read(usize::MAX)?
            .pairs
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        for key in written {
            match self.current(key)? {
                Some(kv) => pairs.insert(key.clone(), kv),
                None => pairs.remove(key),
            };
        }
        let count = pairs.len() as u64;
        Ok((pairs.into_values().take(limit).collect(), count))
    }

    fn compare_holds(&self, compare: &EtcdCompare) -> io::Result<bool> {
        let holds = |found: Option<&Stored>| {
            compare
                .target
                .ordering(found)
                .is_some_and(|ordering| compare.result.holds(ordering))
        };
        if compare.keys.end.is_empty() {
            let found = self.current(&compare.keys.key)?.map(Stored::from);
            return Ok(holds(found.as_ref()));
        }
        let (pairs, _) = self.range_now(&compare.keys, 0)?;
        Ok(pairs.into_iter().all(|kv| holds(Some(&Stored::from(kv)))))
    }

    /// Decides the branch of `txn` and of every transaction nested in the
    /// branch it takes, against the state now.
    fn decide(&self, txn: &EtcdTxn, path: &mut Path) -> io::Result<()> {
        let mut succeeded = true;
        for compare in &txn.compares {
            if !self.compare_holds(compare)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in branch {
            if let EtcdOp::Txn(inner) = op {
                self.decide(inner, path)?;
            }
        }
        Ok(())
    }

    /// Why the branches of `path` may not run, if they may not.
    fn refusal(
        &self,
        txn: &EtcdTxn,
        path: &mut std::slice::Iter<'_, bool>,
    ) -> io::Result<Option<EtcdRefusal>> {
        let branch = if path.next().copied().unwrap_or(false) {
            &txn.success
        } else {
            &txn.failure
        };
        for op in branch {
            match op {
                EtcdOp::Put {
                    key, value, lease, ..
                } => {
                    if (value.is_none() || lease.is_none()) && self.current_numbers(key)?.is_none()
                    {
                        return Ok(Some(EtcdRefusal::KeyNotFound));
                    }
                    if let Some(lease) = lease.filter(|lease| *lease != 0) {
                        match self.lease_refusal(lease, &[key])? {
                            Some(CommandResult::LeaseNotFound { id }) => {
                                return Ok(Some(EtcdRefusal::LeaseNotFound(id)))
                            }
                            Some(_) => return Ok(Some(EtcdRefusal::LeaseFull(lease))),
                            None => {}
                        }
                    }
                }
                EtcdOp::Txn(inner) => {
                    if let Some(refusal) = self.refusal(inner, path)? {
                        return Ok(Some(refusal));
                    }
                }
                EtcdOp::Range { .. } | EtcdOp::DeleteRange { .. } => {}
            }
        }
        Ok(None)
    }

    /// Runs the branches of `path`.
    fn run(
        &mut self,
        txn: EtcdTxn,
        path: &mut std::vec::IntoIter<bool>,
    ) -> io::Result<EtcdOpResult> {
        let succeeded = path.next().unwrap_or(false);
        let branch = if succeeded { txn.success } else { txn.failure };
        let mut results = Vec::with_capacity(branch.len());
        for op in branch {
            results.push(match op {
                EtcdOp::Range {
                    keys,
                    limit,
                    count_only,
                } => {
                    let (pairs, count) =
                        self.range_now(&keys, if count_only { 1 } else { limit })?;
                    let pairs = if count_only {
                        Vec::new()
                    } else {
                        pairs.into_iter().map(pair).collect()
                    };
                    EtcdOpResult::Range { pairs, count }
                }
                EtcdOp::Put {
                    key,
                    value,
                    lease,
                    prev_kv,
                } => {
                    // The value is read only when it is returned or kept:
                    // the index has the rest.
                    let previous = if prev_kv || value.is_none() {
                        self.current(&key)?
                    } else {
                        None
                    };
                    let value = match (value, &previous) {
                        (Some(value), _) => value,
                        (None, Some(kv)) => kv.value.clone(),
                        // Refused before anything ran (see `refusal`).
                        (None, None) => Vec::new(),
                    };
                    let lease = match lease {
                        Some(lease) => lease,
                        None => self.current_numbers(&key)?.map_or(0, |n| n.lease),
                    };
                    self.put(key, value, lease)?;
                    EtcdOpResult::Put {
                        prev: previous.filter(|_| prev_kv).map(pair),
                    }
                }
                EtcdOp::DeleteRange { keys, prev_kv } => {
                    let (pairs, deleted) = self.range_now(&keys, 0)?;
                    let mut prev = Vec::new();
                    for kv in pairs {
                        self.delete(kv.key.clone())?;
                        if prev_kv {
                            prev.push(pair(kv));
                        }
                    }
                    EtcdOpResult::DeleteRange { deleted, prev }
                }
                EtcdOp::Txn(inner) => self.run(inner, path)?,
            });
        }
        Ok(EtcdOpResult::Txn { succeeded, results })
    }

    /// Deletes every live key that starts with `prefix`; returns how many.
    pub(super) fn delete_prefix(&mut self, prefix: &[u8]) -> io::Result<u64> {
        let keys = KeyRange {
            key: prefix.to_vec(),
            // "\0": every key from the prefix on, when no key follows them.
            end: crate::store::keyspace::prefix_end(prefix).unwrap_or_else(|| vec![0]),
        };
        let (pairs, deleted) = self.range_now(&keys, 0)?;
        for kv in pairs {
            self.delete(kv.key)?;
        }
        Ok(deleted)
    }

    /// Applies etcd's transaction `txn`: its outcome, or why it wrote nothing.
    pub(super) fn etcd_txn(&mut self, txn: EtcdTxn) -> io::Result<CommandResult> {
        let mut path = Path::new();
        self.decide(&txn, &mut path)?;
        if let Some(refusal) = self.refusal(&txn, &mut path.iter())? {
            return Ok(CommandResult::Etcd(Err(refusal)));
        }
        let result = self.run(txn, &mut path.into_iter())?;
        Ok(CommandResult::Etcd(Ok(result)))
    }
}
