//! etcd's `Range` rules, in one place for a range on its own and one
//! inside a transaction: which keys to fetch and how many, then the
//! filters, the sort, the limit with `more`, and `keys_only` (as etcd's
//! `applierV3backend.Range` applies them, in that order). `count` is the
//! number of keys in the range before any filter, as etcd's is.

use raftkv_proto::etcd::etcdserverpb::range_request::SortOrder;
use raftkv_proto::etcd::etcdserverpb::range_request::SortTarget;
use raftkv_proto::etcd::etcdserverpb::RangeRequest;
use raftkv_proto::etcd::mvccpb::KeyValue;

use super::key_value;
use super::txn::KeyRange;
use super::txn::Pair;

/// How many keys to fetch for `request` (0: all): every key when a filter
/// or a sort must see them all, else one more than the limit, to tell
/// whether more follow.
pub fn fetch_limit(request: &RangeRequest) -> u64 {
    let sees_all = request.sort_order != SortOrder::None as i32
        || request.sort_target != SortTarget::Key as i32
        || request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0;
    match u64::try_from(request.limit) {
        Ok(limit) if limit > 0 && !sees_all => limit + 1,
        _ => 0,
    }
}

/// The keys `request` names.
pub fn keys(request: &RangeRequest) -> KeyRange {
    KeyRange {
        key: request.key.clone(),
        end: request.range_end.clone(),
    }
}

/// The pairs fetched for `request` (in key order), as its answer: the
/// kvs, whether more follow, and the count.
pub fn finish(request: &RangeRequest, pairs: Vec<Pair>, count: u64) -> (Vec<KeyValue>, bool, i64) {
    let count = super::signed(count);
    if request.count_only {
        return (Vec::new(), false, count);
    }
    let in_bounds = |n: i64, min: i64, max: i64| (min == 0 || n >= min) && (max == 0 || n <= max);
    let mut kvs: Vec<KeyValue> = pairs
        .into_iter()
        .map(|(key, stored)| key_value(key, stored))
        .filter(|kv| {
            in_bounds(
                kv.mod_revision,
                request.min_mod_revision,
                request.max_mod_revision,
            ) && in_bounds(
                kv.create_revision,
                request.min_create_revision,
                request.max_create_revision,
            )
        })
        .collect();
    let target = SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(request.sort_order).unwrap_or(SortOrder::None);
    // etcd sorts ascending when only a target other than the key is given.
    if order == SortOrder::None && target != SortTarget::Key {
        order = SortOrder::Ascend;
    }
    if order != SortOrder::None && !(order == SortOrder::Ascend && target == SortTarget::Key) {
        // Stable, so equal targets stay in key order.
        match target {
            SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
            SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
            SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
            SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
            SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
        }
        if order == SortOrder::Descend {
            kvs.reverse();
        }
    }
    let mut more = false;
    if let Ok(limit) = usize::try_from(request.limit) {
        if limit > 0 && kvs.len() > limit {
            kvs.truncate(limit);
            more = true;
        }
    }
    if request.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    (kvs, more, count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Stored;

    fn pair(key: &str, value: &str, created: u64, modified: u64) -> Pair {
        let stored = Stored {
            value: value.into(),
            modified,
            lease: 0,
            created,
            version: modified - created + 1,
        };
        (key.into(), stored)
    }

    fn pairs() -> Vec<Pair> {
        vec![
            pair("a", "3", 2, 9),
            pair("b", "1", 3, 3),
            pair("c", "2", 1, 5),
        ]
    }

    fn keys_of(kvs: &[KeyValue]) -> Vec<&[u8]> {
        kvs.iter().map(|kv| kv.key.as_slice()).collect()
    }

    #[test]
    fn a_limit_fetches_one_more_to_tell_whether_more_follow() {
        let request = RangeRequest {
            limit: 2,
            ..Default::default()
        };
        assert_eq!(fetch_limit(&request), 3);
        let (kvs, more, count) = finish(&request, pairs(), 3);
        assert_eq!(
            (keys_of(&kvs), more, count),
            (vec![&b"a"[..], b"b"], true, 3)
        );
        let request = RangeRequest {
            limit: 3,
            ..Default::default()
        };
        let (_, more, _) = finish(&request, pairs(), 3);
        assert!(!more);
    }

    #[test]
    fn filters_and_sorts_see_every_key_and_count_counts_before_filters() {
        let request = RangeRequest {
            limit: 1,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Mod as i32,
            min_create_revision: 2,
            ..Default::default()
        };
        assert_eq!(fetch_limit(&request), 0);
        let (kvs, more, count) = finish(&request, pairs(), 3);
        assert_eq!((keys_of(&kvs), more, count), (vec![&b"a"[..]], true, 3));
        // A target alone sorts ascending.
        let request = RangeRequest {
            sort_target: SortTarget::Value as i32,
            ..Default::default()
        };
        let (kvs, _, _) = finish(&request, pairs(), 3);
        assert_eq!(keys_of(&kvs), vec![&b"b"[..], b"c", b"a"]);
    }

    #[test]
    fn keys_only_and_count_only_drop_what_they_say() {
        let request = RangeRequest {
            keys_only: true,
            ..Default::default()
        };
        let (kvs, _, _) = finish(&request, pairs(), 3);
        assert!(kvs
            .iter()
            .all(|kv| kv.value.is_empty() && kv.mod_revision > 0));
        let request = RangeRequest {
            count_only: true,
            ..Default::default()
        };
        assert_eq!(finish(&request, pairs(), 3), (vec![], false, 3));
    }
}
