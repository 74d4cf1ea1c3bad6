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
    let writes: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(40_000);
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
    let (entry, row) = (vec![7u8; 400], vec![9u8; 300]);
    let started = std::time::Instant::now();
    let mut log = db.open_tree(segment(0)).expect("log segment");
    for index in 0..writes {
        if index % SEGMENT_ENTRIES == 0 {
            log = db.open_tree(segment(index)).expect("log segment");
        }
        log.insert(index.to_be_bytes(), entry.as_slice())
            .expect("append");
        revs.insert(row_key(index, 0), row.as_slice()).expect("row");
        if let Some(behind) = index.checked_sub(KEPT) {
            revs.remove(row_key(behind, 0)).expect("compaction");
            if behind % SEGMENT_ENTRIES == SEGMENT_ENTRIES - 1 {
                db.drop_tree(segment(behind)).expect("purge");
            }
        }
        if index % 64 == 63 {
            db.flush().expect("flush");
        }
    }
    let micros = started.elapsed().as_secs_f64() * 1e6 / writes as f64;
    println!("{writes} writes, {micros:.1} µs each (wall clock)");
}
