//! Unit tests of the log store, opened in a temporary directory: reads
//! across segment boundaries, purge and truncation.

use openraft::entry::RaftEntry;
use openraft::storage::RaftLogStorage;
use openraft::testing::blank_ent;
use openraft::testing::log_id;
use openraft::RaftLogReader;

use super::*;
use crate::types::Entry;

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.index()).collect()
}

#[tokio::test]
async fn segments_are_read_across_boundaries_dropped_on_purge_and_cut_on_truncate() {
    let dir = tempfile::TempDir::new().unwrap();
    let (mut log, _sm) = crate::store::open(dir.path(), 1 << 20).unwrap();
    let boundary = 1u64 << SEGMENT_BITS;
    let first = boundary - 5;
    let entries: Vec<Entry> = (first..boundary + 5)
        .map(|i| blank_ent::<TypeConfig>(1, 1, i))
        .collect();
    log.append(entries, IOFlushed::noop()).await.unwrap();
    assert_eq!(log.segments().len(), 2);
    let all = log.try_get_log_entries(first..boundary + 5).await.unwrap();
    assert_eq!(indexes(&all), (first..boundary + 5).collect::<Vec<_>>());
    let across = log
        .try_get_log_entries(boundary - 2..=boundary + 1)
        .await
        .unwrap();
    assert_eq!(
        indexes(&across),
        vec![boundary - 2, boundary - 1, boundary, boundary + 1]
    );
    assert!(log
        .try_get_log_entries(boundary + 3..boundary + 1)
        .await
        .unwrap()
        .is_empty());

    // Purging into the second segment drops the first tree and hides the rest.
    log.purge(log_id::<TypeConfig>(1, 1, boundary + 1))
        .await
        .unwrap();
    assert_eq!(log.segments().keys().copied().collect::<Vec<_>>(), vec![1]);
    let left = log.try_get_log_entries(0..).await.unwrap();
    assert_eq!(
        indexes(&left),
        vec![boundary + 2, boundary + 3, boundary + 4]
    );
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index()), Some(boundary + 4));
    assert_eq!(
        state.last_purged_log_id.map(|l| l.index()),
        Some(boundary + 1)
    );

    // Truncating keeps the prefix; reopening finds the same state.
    log.truncate_after(Some(log_id::<TypeConfig>(1, 1, boundary + 2)))
        .await
        .unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index()), Some(boundary + 2));
    drop(log);
    drop(_sm);
    // The sync thread lets go of the database once it sees the store dropped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (mut log, _sm) = loop {
        match crate::store::open(dir.path(), 1 << 20) {
            Ok(opened) => break opened,
            Err(e) if std::time::Instant::now() < deadline => {
                let cause = std::error::Error::source(&e).map(ToString::to_string);
                assert!(cause.is_some_and(|c| c.contains("lock")), "{e:?}");
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("reopen: {e}"),
        }
    };
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index()), Some(boundary + 2));
    assert_eq!(
        indexes(&log.try_get_log_entries(0..).await.unwrap()),
        vec![boundary + 2]
    );
}
