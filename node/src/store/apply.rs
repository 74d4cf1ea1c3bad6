//! What each command means: puts, deletes, compare-and-swaps, transactions
//! and lease effects, applied to the key space at one revision.
//!
//! Every decision reads the state as of the revision before the entry (plus
//! what the entry itself wrote so far), never anything newer. So applying an
//! entry decides alike on every replica, and applying it again over a state
//! that already holds part of it (rows at its own revision) decides as the
//! first time and writes the same rows.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io;

use super::keyspace::KeySpace;
use super::keyspace::KeyValue;
use super::keyspace::Lookup;
use super::keyspace::Numbers;
use super::keyspace::Row;
use super::keyspace::RowBuffer;
use super::leases;
use super::leases::LeaseTrees;
use crate::types::Check;
use crate::types::Command;
use crate::types::CommandResult;
use crate::types::Compare;
use crate::types::Stored;
use crate::types::TxnOp;
use crate::types::TxnOpResult;

/// What applying one entry did besides its result.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// The lease table changed (a grant or a revoke).
    pub leases_changed: bool,
    /// A compaction was decided at this revision.
    pub compact: Option<u64>,
    /// Keys created minus keys deleted.
    pub keys_added: i64,
    /// A NOSPACE alarm raised (`true`) or cleared for a member (`None`:
    /// every member's, when cleared).
    pub alarm: Option<(Option<u64>, bool)>,
    /// The cluster's id, if this entry names it (see `Command::ClusterId`).
    pub cluster_id: Option<u64>,
    /// The cluster version this entry raises to (see `Command::ClusterVersion`).
    pub cluster_version: Option<crate::version::Version>,
}

/// One entry being applied at `revision`.
pub struct EntryApply<'a> {
    space: &'a KeySpace,
    leases: &'a LeaseTrees,
    /// The rows written and not yet in sled, this entry's and its batch's.
    rows: &'a mut RowBuffer,
    revision: u64,
    /// The next write's sub-revision.
    sub: u32,
    /// Keys this entry wrote so far and the numbers of what they hold now
    /// (`None`: deleted).
    written: HashMap<Vec<u8>, Option<(Numbers, Vec<u8>)>>,
    pub effects: Effects,
}

impl From<KeyValue> for Stored {
    fn from(kv: KeyValue) -> Stored {
        Stored {
            value: kv.value,
            modified: kv.mod_revision,
            lease: kv.lease,
            created: kv.create_revision,
            version: kv.version,
        }
    }
}

impl<'a> EntryApply<'a> {
    pub fn new(
        space: &'a KeySpace,
        leases: &'a LeaseTrees,
        rows: &'a mut RowBuffer,
        revision: u64,
    ) -> Self {
        EntryApply {
            space,
            leases,
            rows,
            revision,
            sub: 0,
            written: HashMap::new(),
            effects: Effects::default(),
        }
    }

    /// `key` as this entry sees it: its own writes, else the state at the
    /// revision before it.
    fn current(&self, key: &[u8]) -> io::Result<Option<KeyValue>> {
        if let Some(written) = self.written.get(key) {
            return Ok(written.clone().map(|(numbers, value)| KeyValue {
                key: key.to_vec(),
                value,
                create_revision: numbers.create_revision,
                mod_revision: numbers.mod_revision,
                version: numbers.version,
                lease: numbers.lease,
            }));
        }
        match self
            .space
            .get_buffered(key, self.revision.saturating_sub(1), self.rows)?
        {
            Lookup::Found(kv) => Ok(Some(kv)),
            Lookup::Absent => Ok(None),
            // Compaction never passes the applied revision.
            Lookup::Lost => Err(io::Error::other(format!(
                "the key index names a version that is gone, reading at revision {}",
                self.revision - 1
            ))),
        }
    }

    /// [`Self::current`]'s numbers only: no value is read.
    fn current_numbers(&self, key: &[u8]) -> io::Result<Option<Numbers>> {
        if let Some(written) = self.written.get(key) {
            return Ok(written.as_ref().map(|(numbers, _)| *numbers));
        }
        Ok(self.space.numbers(key, self.revision.saturating_sub(1)))
    }

    fn write_row(&mut self, row: &Row) -> io::Result<()> {
        self.space
            .write_buffered(self.revision, self.sub, row, self.rows)?;
        self.sub += 1;
        Ok(())
    }

    /// Writes `value` to `key`, attached to `lease` (0: none; the caller
    /// has checked that it exists).
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>, lease: u64) -> io::Result<()> {
        let previous = self.current_numbers(&key)?;
        let (create_revision, version) = match &previous {
            Some(numbers) => (numbers.create_revision, numbers.version + 1),
            None => {
                self.effects.keys_added += 1;
                (self.revision, 1)
            }
        };
        self.reattach(&key, previous.map_or(0, |numbers| numbers.lease), lease)?;
        let mut row = Row {
            key,
            value: Some(value),
            create_revision,
            version,
            lease,
        };
        self.write_row(&row)?;
        let numbers = Numbers {
            create_revision,
            mod_revision: self.revision,
            version,
            lease,
        };
        let value = row.value.take().unwrap_or_default();
        self.written.insert(row.key, Some((numbers, value)));
        Ok(())
    }

    /// Deletes `key`; returns whether it existed. Deleting a missing key
    /// writes nothing, so watchers see no event for it.
    fn delete(&mut self, key: Vec<u8>) -> io::Result<bool> {
        let Some(previous) = self.current_numbers(&key)? else {
            return Ok(false);
        };
        self.reattach(&key, previous.lease, 0)?;
        self.effects.keys_added -= 1;
        self.write_row(&Row {
            key: key.clone(),
            value: None,
            create_revision: 0,
            version: 0,
            lease: 0,
        })?;
        self.written.insert(key, None);
        Ok(true)
    }

    /// Moves `key`'s entry in the lease index from lease `from` to `to` (0: none).
    fn reattach(&self, key: &[u8], from: u64, to: u64) -> io::Result<()> {
        if from != to {
            if from != 0 {
                self.leases.detach(from, key)?;
            }
            if to != 0 {
                self.leases.attach(to, key)?;
            }
        }
        Ok(())
    }

    /// Why attaching `keys` to `lease` may not happen, if it may not: the
    /// lease does not exist, or the keys not yet attached to it would take
    /// it past [`leases::MAX_LEASE_KEY_BYTES`].
    fn lease_refusal(&self, lease: u64, keys: &[&[u8]]) -> io::Result<Option<CommandResult>> {
        let Some(info) = self.leases.live_at(lease, self.revision)? else {
            return Ok(Some(CommandResult::LeaseNotFound { id: lease }));
        };
        let mut weight = 0u64;
        for key in keys {
            if self.current_numbers(key)?.is_none_or(|n| n.lease != lease) {
                weight = weight.saturating_add(leases::key_weight(key));
            }
        }
        Ok((!info.has_room_for(weight)).then_some(CommandResult::LeaseFull { id: lease }))
    }

    /// Sets `key` to `new_value` (attached to `lease`) if it holds `expected`.
    fn compare_and_swap(
        &mut self,
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new_value: Vec<u8>,
        lease: u64,
    ) -> io::Result<CommandResult> {
        let current = self.current(&key)?.map(|kv| kv.value);
        Ok(if current == expected {
            self.put(key, new_value, lease)?;
            CommandResult::Swapped {
                succeeded: true,
                current: None,
            }
        } else {
            CommandResult::Swapped {
                succeeded: false,
                current,
            }
        })
    }

    fn holds(&self, compare: &Compare) -> io::Result<bool> {
        let key = &compare.key;
        Ok(match &compare.check {
            Check::Value(expected) => self.current(key)?.is_some_and(|kv| kv.value == *expected),
            Check::Exists(exists) => self.current_numbers(key)?.is_some() == *exists,
            Check::ModifiedIndex(0) => self.current_numbers(key)?.is_none(),
            Check::ModifiedIndex(at) => self
                .current_numbers(key)?
                .is_some_and(|n| n.mod_revision == *at),
        })
    }

    /// A transaction: every comparison against the state before it, then one
    /// branch's operations in order.
    fn txn(
        &mut self,
        compares: &[Compare],
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    ) -> io::Result<CommandResult> {
        let mut succeeded = true;
        for compare in compares {
            if !self.holds(compare)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { success } else { failure };
        // No operation of a transaction ends a lease, so checking them all
        // first keeps the transaction all or nothing (its deletes are not
        // counted as making room).
        let mut by_lease: BTreeMap<u64, Vec<&[u8]>> = BTreeMap::new();
        for op in &ops {
            if let TxnOp::PutLeased { key, lease, .. } = op {
                by_lease.entry(*lease).or_default().push(key);
            }
        }
        for (lease, keys) in &by_lease {
            if let Some(refusal) = self.lease_refusal(*lease, keys)? {
                return Ok(refusal);
            }
        }
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(match op {
                TxnOp::Put { key, value } => {
                    self.put(key, value, 0)?;
                    TxnOpResult::Put
                }
                TxnOp::PutLeased { key, value, lease } => {
                    self.put(key, value, lease)?;
                    TxnOpResult::Put
                }
                TxnOp::Delete { key } => TxnOpResult::Deleted {
                    existed: self.delete(key)?,
                },
                TxnOp::Get { key } => TxnOpResult::Got {
                    found: self.current(&key)?.map(Stored::from),
                },
            });
        }
        Ok(CommandResult::Txn { succeeded, results })
    }

    /// Applies `command`. `compacted` is the compaction point before it.
    /// Every outcome is decided by the state and the command alone.
    pub fn command(&mut self, command: Command, compacted: u64) -> io::Result<CommandResult> {
        Ok(match command {
            Command::Put { key, value } => {
                self.put(key, value, 0)?;
                CommandResult::Done
            }
            Command::PutLeased { key, value, lease } => {
                if let Some(refusal) = self.lease_refusal(lease, &[&key])? {
                    return Ok(refusal);
                }
                self.put(key, value, lease)?;
                CommandResult::Done
            }
            Command::Delete { key } => CommandResult::Deleted {
                existed: self.delete(key)?,
            },
            Command::CompareAndSwap {
                key,
                expected,
                new_value,
            } => self.compare_and_swap(key, expected, new_value, 0)?,
            Command::CompareAndSwapLeased {
                key,
                expected,
                new_value,
                lease,
            } => {
                if let Some(refusal) = self.lease_refusal(lease, &[&key])? {
                    return Ok(refusal);
                }
                self.compare_and_swap(key, expected, new_value, lease)?
            }
            Command::Txn {
                compares,
                success,
                failure,
            } => self.txn(&compares, success, failure)?,
            Command::LeaseGrant { ttl_seconds } => {
                // The leader refuses TTLs out of range; one that reached the
                // log anyway is clamped, so the table holds only what
                // snapshots accept.
                let ttl = ttl_seconds.clamp(leases::MIN_TTL_SECONDS, leases::MAX_TTL_SECONDS);
                let id = self.leases.server_chosen_id(self.revision)?;
                self.leases.grant(id, ttl, self.revision)?;
                self.effects.leases_changed = true;
                if id == self.revision {
                    CommandResult::LeaseGranted
                } else {
                    CommandResult::LeaseGrantedAs { id }
                }
            }
            Command::LeaseGrantId { id, ttl_seconds } => {
                // Id 0 asks the cluster to choose; the leader sends that as
                // `LeaseGrant`, and one that reached the log anyway is refused.
                if id == 0 || !self.leases.is_free(id)? {
                    return Ok(CommandResult::LeaseExists { id });
                }
                let ttl = ttl_seconds.clamp(leases::MIN_TTL_SECONDS, leases::MAX_TTL_SECONDS);
                self.leases.grant(id, ttl, self.revision)?;
                self.effects.leases_changed = true;
                CommandResult::LeaseGrantedAs { id }
            }
            Command::LeaseRevoke { id, expired } => {
                let Some(keys) = self.leases.revoke(id, self.revision)? else {
                    return Ok(CommandResult::LeaseRevoked {
                        found: false,
                        keys_deleted: 0,
                    });
                };
                self.effects.leases_changed = true;
                let mut keys_deleted = 0;
                for key in keys {
                    // The value's lease slot decides: a key is never deleted
                    // for a lease it left.
                    if self.current_numbers(&key)?.is_some_and(|n| n.lease == id) {
                        self.delete(key)?;
                        keys_deleted += 1;
                    }
                }
                self.leases.forget_keys(id)?;
                tracing::debug!(lease = id, expired, keys_deleted, "lease ended");
                CommandResult::LeaseRevoked {
                    found: true,
                    keys_deleted,
                }
            }
            Command::Compact { revision } => {
                // Never past the state before this entry, never backwards.
                let at = revision.min(self.revision.saturating_sub(1));
                if at > compacted {
                    self.effects.compact = Some(at);
                }
                CommandResult::Compacted {
                    revision: at.max(compacted),
                }
            }
            Command::Alarm { member, raise } => {
                self.effects.alarm = Some((member, raise));
                CommandResult::Done
            }
            Command::ClusterId { id } => {
                self.effects.cluster_id = Some(id);
                CommandResult::Done
            }
            Command::Etcd(txn) => self.etcd_txn(txn)?,
            Command::DeletePrefix { prefix } => CommandResult::DeletedPrefix {
                deleted: self.delete_prefix(&prefix)?,
            },
            Command::ClusterVersion { version } => {
                self.effects.cluster_version = Some(version);
                CommandResult::Done
            }
        })
    }
}

mod etcd;
#[cfg(test)]
mod tests;
