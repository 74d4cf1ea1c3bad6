//! The newest Raft log entries, kept in memory as well as in sled.
//!
//! Right after an entry is appended the leader reads it back twice more, to
//! send it to each follower and to apply it, and a follower once, to apply
//! it. Reading those from sled means a tree lookup and a decode each; a copy
//! of the log's tail answers them with a clone. The copy is only ever a
//! contiguous suffix of the log: every append extends it, every truncation
//! and purge cuts it, and a read it does not fully cover goes to sled.

use std::collections::VecDeque;

use openraft::entry::RaftEntry;
use openraft::EntryPayload;

use crate::entry::Encoding;
use crate::types::Check;
use crate::types::Command;
use crate::types::Entry;
use crate::types::TxnOp;

/// Most entries kept.
const MAX_ENTRIES: usize = 4096;

/// Most bytes (roughly: keys, values, their encoded copy and a fixed
/// overhead per entry) kept.
const MAX_BYTES: usize = 4 << 20;

/// Rough memory use of one entry. A versioned entry also holds its encoded
/// bytes (made when it is appended, or kept from its decode), about as many
/// as its keys and values: counted whether made yet or not, so an entry
/// counts the same when it leaves as when it came.
fn size_of(entry: &Entry) -> usize {
    const OVERHEAD: usize = 96;
    let EntryPayload::Normal(command) = &entry.payload else {
        return OVERHEAD;
    };
    let copies = match command.encoding() {
        Encoding::FirstRelease => 1,
        Encoding::Versioned => 2,
    };
    OVERHEAD + copies * command_bytes(command.command())
}

/// The bytes of keys and values `command` holds, roughly.
fn command_bytes(command: &Command) -> usize {
    match command {
        Command::Put { key, value } | Command::PutLeased { key, value, .. } => {
            key.len() + value.len()
        }
        Command::Delete { key } => key.len(),
        Command::CompareAndSwap {
            key,
            expected,
            new_value,
        }
        | Command::CompareAndSwapLeased {
            key,
            expected,
            new_value,
            ..
        } => key.len() + expected.as_ref().map_or(0, Vec::len) + new_value.len(),
        Command::Txn {
            compares,
            success,
            failure,
        } => {
            let compares = compares.iter().map(|c| {
                c.key.len()
                    + match &c.check {
                        Check::Value(value) => value.len(),
                        Check::Exists(_) | Check::ModifiedIndex(_) => 8,
                    }
            });
            let ops = success.iter().chain(failure).map(|op| match op {
                TxnOp::Put { key, value } | TxnOp::PutLeased { key, value, .. } => {
                    key.len() + value.len()
                }
                TxnOp::Delete { key } | TxnOp::Get { key } => key.len(),
            });
            compares.chain(ops).map(|bytes| bytes + 16).sum()
        }
        Command::Etcd(txn) => txn.bytes(),
        Command::DeletePrefix { prefix } => prefix.len(),
        Command::LeaseGrant { .. }
        | Command::LeaseGrantId { .. }
        | Command::LeaseRevoke { .. }
        | Command::Compact { .. }
        | Command::Alarm { .. }
        | Command::ClusterId { .. }
        | Command::ClusterVersion { .. } => 16,
    }
}

/// A contiguous run of the log's newest entries, bounded in count and bytes.
#[derive(Default)]
pub struct RecentEntries {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl RecentEntries {
    /// Index of the first entry kept.
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index())
    }

    /// Records `entry`, just appended to the log. An entry that does not
    /// follow the newest one kept (the log was cut or replaced meanwhile)
    /// starts the run afresh.
    pub fn push(&mut self, entry: Entry) {
        if let Some(last) = self.entries.back() {
            if last.index() + 1 != entry.index() {
                self.entries.clear();
                self.bytes = 0;
            }
        }
        self.bytes += size_of(&entry);
        self.entries.push_back(entry);
        while self.entries.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= size_of(&old),
                None => break,
            }
        }
    }

    /// Forgets entries at `index` and after (the log was truncated there).
    pub fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.index() >= index) {
            if let Some(old) = self.entries.pop_back() {
                self.bytes -= size_of(&old);
            }
        }
    }

    /// Forgets entries up to and including `index` (the log was purged there).
    pub fn purge_upto(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index() <= index) {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= size_of(&old);
            }
        }
    }

    /// Copies of the entries `start..end`, if every one of them is kept.
    pub fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let last = first + self.entries.len() as u64 - 1;
        if start >= end || start < first || end - 1 > last {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(self.entries.range(from..to).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::blank_ent;

    use super::*;
    use crate::types::TypeConfig;

    fn entry(index: u64) -> Entry {
        blank_ent::<TypeConfig>(1, 1, index)
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|v| v.iter().map(|e| e.index()).collect())
    }

    #[test]
    fn serves_only_what_it_fully_holds_and_follows_truncation_and_purge() {
        let mut recent = RecentEntries::default();
        assert_eq!(indexes(recent.get(1, 2)), None);
        for i in 5..10 {
            recent.push(entry(i));
        }
        assert_eq!(indexes(recent.get(6, 9)), Some(vec![6, 7, 8]));
        assert_eq!(indexes(recent.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(recent.get(4, 6)), None, "starts before the run");
        assert_eq!(indexes(recent.get(8, 11)), None, "ends after the run");
        assert_eq!(indexes(recent.get(7, 7)), None, "empty range");

        recent.truncate_from(8);
        assert_eq!(indexes(recent.get(7, 9)), None);
        recent.push(entry(8));
        assert_eq!(indexes(recent.get(5, 9)), Some(vec![5, 6, 7, 8]));

        recent.purge_upto(6);
        assert_eq!(indexes(recent.get(6, 8)), None);
        assert_eq!(indexes(recent.get(7, 9)), Some(vec![7, 8]));

        // A gap (the log was replaced, e.g. by a snapshot) starts afresh.
        recent.push(entry(20));
        assert_eq!(indexes(recent.get(7, 9)), None);
        assert_eq!(indexes(recent.get(20, 21)), Some(vec![20]));
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut recent = RecentEntries::default();
        let n = MAX_ENTRIES as u64 + 10;
        for i in 1..=n {
            recent.push(entry(i));
        }
        assert_eq!(recent.entries.len(), MAX_ENTRIES);
        assert_eq!(recent.first_index(), Some(11));
        assert_eq!(indexes(recent.get(n, n + 1)), Some(vec![n]));

        // 1 MiB values: three fit in 4 MiB; one when each also holds its
        // encoded copy.
        for (encoding, kept) in [
            (crate::entry::Encoding::FirstRelease, 3),
            (crate::entry::Encoding::Versioned, 1),
        ] {
            let mut recent = RecentEntries::default();
            let big = |index| Entry {
                log_id: entry(index).log_id,
                payload: EntryPayload::Normal(crate::entry::LogCommand::new(
                    Command::Put {
                        key: b"k".to_vec(),
                        value: vec![0; 1 << 20],
                    },
                    encoding,
                )),
            };
            for i in 1..=10 {
                recent.push(big(i));
            }
            assert!(recent.bytes <= MAX_BYTES, "{} bytes kept", recent.bytes);
            assert_eq!(recent.entries.len(), kept, "{encoding:?}");
            assert_eq!(recent.bytes, recent.entries.iter().map(size_of).sum());
        }
    }
}
