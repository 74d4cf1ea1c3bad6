//! The sled workload behind the index fan-out in `vendor/sled/PATCHED.md`:
//! the trees a node writes per write, laid out as the node lays them out, to
//! count instructions with (`PATCHED.md` quotes callgrind's `Ir` total):
//!
//! ```text
//! cargo build --release -p raftkv-node --example sled_trees
//! valgrind --tool=callgrind target/release/examples/sled_trees 40000
//! ```
//!
//! Per write: the Raft entry appended to the log's segment tree (16,384
//! entries each, dropped whole once behind, as `store::log_store` does) and
//! a history row appended to the revision tree, whose row 10,000 revisions
//! behind is removed (compaction at the default `--history-revisions`). A
//! flush every 64 writes stands for group commit; sled's own timed flush is
//! off, so the count does not depend on timing. The database is opened with
//! the node's mode and cache size. Prints the wall-clock time per write,
//! which on a shared machine moves too much to compare builds by.

use raftkv_node::store::keyspace::row_key;

/// Entries per log segment tree (`store::log_store`'s `SEGMENT_BITS`).
const SEGMENT_ENTRIES: u64 = 1 << 14;
/// How far behind the newest write history rows and log segments go.
const KEPT: u64 = 10_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let writes: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(40_000);
    // Writes per batch: 1 writes key by key (`insert`, `remove`), more
    // writes each run of neighbouring keys with one `apply_sorted`, as a
    // node does with an append, an applied batch and a compaction step.
    let batch: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1).max(1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(32 << 20)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(None)
        .open()
        .expect("open");
    let revs = db.open_tree("revs").expect("revision tree");
    let segment = |index: u64| format!("log-{:016x}", index / SEGMENT_ENTRIES);
    let (entry, row) = (
        sled::IVec::from(vec![7u8; 400]),
        sled::IVec::from(vec![9u8; 300]),
    );
    let started = std::time::Instant::now();
    let mut log = db.open_tree(segment(0)).expect("log segment");
    let mut start = 0;
    while start < writes {
        // A batch never spans two log segments, as an append is split.
        let end = (start + batch)
            .min(writes)
            .min((start / SEGMENT_ENTRIES + 1) * SEGMENT_ENTRIES);
        if start % SEGMENT_ENTRIES == 0 {
            log = db.open_tree(segment(start)).expect("log segment");
        }
        let behind: Vec<u64> = (start..end).filter_map(|i| i.checked_sub(KEPT)).collect();
        if batch == 1 {
            log.insert(start.to_be_bytes(), entry.clone())
                .expect("append");
            revs.insert(row_key(start, 0), row.clone()).expect("row");
            for b in &behind {
                revs.remove(row_key(*b, 0)).expect("compaction");
            }
        } else {
            let entries: Vec<_> = (start..end)
                .map(|i| (i.to_be_bytes(), Some(entry.clone())))
                .collect();
            log.apply_sorted(&entries).expect("append");
            let rows: Vec<_> = (start..end)
                .map(|i| (row_key(i, 0), Some(row.clone())))
                .collect();
            revs.apply_sorted(&rows).expect("rows");
            let gone: Vec<_> = behind.iter().map(|b| (row_key(*b, 0), None)).collect();
            revs.apply_sorted(&gone).expect("compaction");
        }
        for b in &behind {
            if b % SEGMENT_ENTRIES == SEGMENT_ENTRIES - 1 {
                db.drop_tree(segment(*b)).expect("purge");
            }
        }
        for i in start..end {
            if i % 64 == 63 {
                db.flush().expect("flush");
            }
        }
        start = end;
    }
    let micros = started.elapsed().as_secs_f64() * 1e6 / writes as f64;
    println!("{writes} writes in batches of {batch}, {micros:.1} µs each (wall clock)");
}
