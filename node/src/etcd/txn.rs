//! etcd's writes as one log entry kind: a transaction of compares and
//! operations ([`EtcdTxn`]), which also carries etcd's `Put` and
//! `DeleteRange` (one operation, no compare). What each field means is
//! etcd's (`etcdserverpb.TxnRequest`); the apply (`store::apply`) decides
//! every outcome from the state before the entry and the entry's own
//! writes, so every replica decides alike.
//!
//! Ranges inside a transaction are read at the entry's own state. What a
//! range returns is only what must be decided there (which keys, how many);
//! sorting, filters and dropping values are applied by the node that
//! answers, from the request it kept.

use std::cmp::Ordering;
use std::ops::Bound;

use serde::Deserialize;
use serde::Serialize;

use crate::types::Stored;

/// A range of keys as etcd names one: `end` empty is the key alone, `end`
/// `"\0"` is every key from `key` on, otherwise `[key, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub key: Vec<u8>,
    pub end: Vec<u8>,
}

/// etcd's transaction: if every compare holds, `success` runs, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdTxn {
    pub compares: Vec<EtcdCompare>,
    pub success: Vec<EtcdOp>,
    pub failure: Vec<EtcdOp>,
}

/// One compare: every key of `keys` that exists (or, for the numbers
/// other than a value, also a missing key, which has them all 0) compares
/// `result` to `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdCompare {
    pub keys: KeyRange,
    pub result: CompareResult,
    pub target: CompareTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// What a compare looks at, and the value it compares with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(i64),
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EtcdOp {
    /// The live keys of `keys`: the first `limit` (0: all) unless
    /// `count_only`, and how many there are.
    Range {
        keys: KeyRange,
        limit: u64,
        count_only: bool,
    },
    /// `value` (`None`: keep the current one) attached to `lease` (`None`:
    /// keep the current one; `Some(0)`: none). Keeping requires the key.
    Put {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        lease: Option<u64>,
        prev_kv: bool,
    },
    DeleteRange {
        keys: KeyRange,
        prev_kv: bool,
    },
    Txn(EtcdTxn),
}

/// A key and its version, as results carry them.
pub type Pair = (Vec<u8>, Stored);

/// What one operation produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EtcdOpResult {
    Range {
        pairs: Vec<Pair>,
        count: u64,
    },
    Put {
        prev: Option<Pair>,
    },
    DeleteRange {
        deleted: u64,
        prev: Vec<Pair>,
    },
    Txn {
        succeeded: bool,
        #[serde(deserialize_with = "nested_results")]
        results: Vec<EtcdOpResult>,
    },
}

/// Deepest nesting of transaction results that reads back. Results travel
/// from the leader to the follower that proposed the write (bincode, see
/// `node::propose`), and bincode reads nested values by recursion with no
/// limit of its own: a peer's answer nested a hundred thousand deep would
/// overflow the stack. The transactions themselves nest at most 48 deep
/// (protobuf's decoder stops at 100 levels of messages, see
/// `entry::protobuf`), so no result a leader makes comes near this.
pub const MAX_NESTED_RESULTS: usize = 64;

/// Reads a transaction's results, refusing them once they nest deeper than
/// [`MAX_NESTED_RESULTS`].
fn nested_results<'de, D>(deserializer: D) -> Result<Vec<EtcdOpResult>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    thread_local! {
        /// How many transactions' results are being read on this thread.
        static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
    /// Leaves a level, whether its results read or not.
    struct Level;
    impl Drop for Level {
        fn drop(&mut self) {
            DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
        }
    }
    let depth = DEPTH.with(|depth| {
        depth.set(depth.get() + 1);
        depth.get()
    });
    let _level = Level;
    if depth > MAX_NESTED_RESULTS {
        return Err(serde::de::Error::custom(format!(
            "transaction results nested more than {MAX_NESTED_RESULTS} deep"
        )));
    }
    Vec::<EtcdOpResult>::deserialize(deserializer)
}

/// Why a transaction wrote nothing, as etcd refuses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EtcdRefusal {
    /// A put named a lease that does not exist.
    LeaseNotFound(u64),
    /// A put kept the value or lease of a key that does not exist.
    KeyNotFound,
    /// A put would attach more keys to the lease than one may carry.
    LeaseFull(u64),
}

impl EtcdTxn {
    /// Roughly the bytes of its keys and values, each part with a fixed
    /// overhead.
    pub fn bytes(&self) -> usize {
        let range = |keys: &KeyRange| keys.key.len() + keys.end.len() + 16;
        let compares = self.compares.iter().map(|c| {
            range(&c.keys)
                + match &c.target {
                    CompareTarget::Value(value) => value.len(),
                    _ => 8,
                }
        });
        let ops = self.success.iter().chain(&self.failure).map(|op| match op {
            EtcdOp::Range { keys, .. } | EtcdOp::DeleteRange { keys, .. } => range(keys),
            EtcdOp::Put { key, value, .. } => key.len() + value.as_ref().map_or(0, Vec::len) + 16,
            EtcdOp::Txn(inner) => inner.bytes(),
        });
        compares.chain(ops).sum()
    }

    /// The key and value of each of its puts, in every branch (an empty
    /// value for a put that keeps the current one), for the quota.
    pub fn puts(&self) -> Vec<(&[u8], &[u8])> {
        let mut puts = Vec::new();
        for op in self.success.iter().chain(&self.failure) {
            match op {
                EtcdOp::Put { key, value, .. } => {
                    puts.push((key.as_slice(), value.as_deref().unwrap_or_default()))
                }
                EtcdOp::Txn(inner) => puts.extend(inner.puts()),
                EtcdOp::Range { .. } | EtcdOp::DeleteRange { .. } => {}
            }
        }
        puts
    }
}

impl KeyRange {
    /// Whether it names `key`.
    pub fn contains(&self, key: &[u8]) -> bool {
        std::ops::RangeBounds::<[u8]>::contains(&self.bounds(), key)
    }

    /// The keys it names, as bounds.
    pub fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        let key = Bound::Included(self.key.as_slice());
        match self.end.as_slice() {
            [] => (key, key),
            [0] => (key, Bound::Unbounded),
            end => (key, Bound::Excluded(end)),
        }
    }
}

impl CompareResult {
    /// Whether `ordering` (the key's number or value against the target) holds.
    pub fn holds(self, ordering: Ordering) -> bool {
        match self {
            CompareResult::Equal => ordering == Ordering::Equal,
            CompareResult::NotEqual => ordering != Ordering::Equal,
            CompareResult::Greater => ordering == Ordering::Greater,
            CompareResult::Less => ordering == Ordering::Less,
        }
    }
}

impl CompareTarget {
    /// How `found` (`None`: a missing key, whose numbers are all 0)
    /// compares with the target; `None` if it cannot (a value compare on a
    /// missing key, which fails whatever the result asked).
    pub fn ordering(&self, found: Option<&Stored>) -> Option<Ordering> {
        let number = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Some(match self {
            CompareTarget::Value(value) => found?.value.as_slice().cmp(value),
            CompareTarget::Version(v) => number(found.map_or(0, |f| f.version)).cmp(v),
            CompareTarget::Create(v) => number(found.map_or(0, |f| f.created)).cmp(v),
            CompareTarget::Mod(v) => number(found.map_or(0, |f| f.modified)).cmp(v),
            CompareTarget::Lease(v) => number(found.map_or(0, |f| f.lease)).cmp(v),
        })
    }
}
