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

/// Opens the store in `dir` again once the one dropped before has let go of
/// it (its sync thread ends when it sees the store dropped).
async fn reopen(dir: &std::path::Path) -> (LogStore, crate::store::StateMachineStore) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match crate::store::open(dir, 1 << 20) {
            Ok(opened) => return opened,
            Err(e) if std::time::Instant::now() < deadline => {
                let cause = std::error::Error::source(&e).map(ToString::to_string);
                assert!(cause.is_some_and(|c| c.contains("lock")), "{e:?}");
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("reopen: {e}"),
        }
    }
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
    let (mut log, _sm) = reopen(dir.path()).await;
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index()), Some(boundary + 2));
    assert_eq!(
        indexes(&log.try_get_log_entries(0..).await.unwrap()),
        vec![boundary + 2]
    );
}

/// The database file is written with zeros ahead of the log (the vendored
/// sled's change 10: a log sync then overwrites blocks instead of appending
/// them), and a store reopened over those zeros finds every entry.
#[tokio::test]
async fn the_file_is_written_ahead_of_the_log_and_reopens_over_the_zeros() {
    use crate::entry::Encoding;
    use crate::entry::LogCommand;
    use crate::types::Command;
    use openraft::EntryPayload;

    let dir = tempfile::TempDir::new().unwrap();
    let (mut log, sm) = crate::store::open(dir.path(), 1 << 20).unwrap();
    let value = |index: u64| vec![index as u8; 4096];
    // About 2 MiB: a few of sled's 512 KiB segments, far fewer than the
    // 8 MiB written ahead.
    let written: Vec<Entry> = (1..=512)
        .map(|index| Entry {
            log_id: log_id::<TypeConfig>(1, 1, index),
            payload: EntryPayload::Normal(LogCommand::new(
                Command::Put {
                    key: format!("k{index}").into_bytes(),
                    value: value(index),
                },
                Encoding::Versioned,
            )),
        })
        .collect();
    log.append(written.clone(), IOFlushed::noop())
        .await
        .unwrap();
    log.sync().unwrap();

    // The fill runs on a thread of its own.
    let file_len = || std::fs::metadata(dir.path().join("db")).unwrap().len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while file_len() < 8 << 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the file stayed at {} bytes",
            file_len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    drop(log);
    drop(sm);
    let (mut log, _sm) = reopen(dir.path()).await;
    let read = log.try_get_log_entries(1..=512).await.unwrap();
    assert_eq!(indexes(&read), (1..=512).collect::<Vec<_>>());
    for (read, written) in read.iter().zip(&written) {
        assert_eq!(read.payload, written.payload, "entry {}", written.index());
    }
}

/// sled writes over a segment whose data was rewritten elsewhere only once
/// an `fdatasync` covers the rewrite (the vendored sled's change 12): a
/// power loss before that sync could keep the overwrite and lose the
/// rewrite. With `flush` alone nothing is ever synced, so the file keeps
/// growing; with `flush_and_sync` its segments are reused.
#[test]
fn sled_writes_over_a_segment_only_after_a_sync_covers_what_replaced_it() {
    const ROUNDS: u32 = 128;
    const KEYS: u32 = 32;
    const VALUE: usize = 16 << 10;
    let file_after = |sync: bool| {
        let dir = tempfile::TempDir::new().unwrap();
        // No periodic flush thread: it syncs too.
        let db = sled::Config::new()
            .path(dir.path())
            .flush_every_ms(None)
            .open()
            .unwrap();
        for round in 0..ROUNDS {
            // A new value each round: every insert writes it to the log.
            let value = vec![round as u8; VALUE];
            for key in 0..KEYS {
                db.insert(key.to_be_bytes(), value.clone()).unwrap();
            }
            if sync {
                db.flush_and_sync().unwrap();
            } else {
                db.flush().unwrap();
            }
        }
        std::fs::metadata(dir.path().join("db")).unwrap().len()
    };
    let written = u64::from(ROUNDS * KEYS) * VALUE as u64;
    let (unsynced, synced) = (file_after(false), file_after(true));
    assert!(
        unsynced >= written,
        "without a sync the file ({unsynced} bytes) holds every value written ({written}): no segment is written over"
    );
    assert!(
        synced < written / 4,
        "with syncs the file ({synced} bytes) reuses its segments instead of growing to {written}"
    );
}
