//! The sled workload behind the index fan-out in `vendor/sled/PATCHED.md`,
//! to count instructions with (the figures there are callgrind's `Ir`
//! total):
//!
//! ```text
//! cargo build --release -p raftkv-node --example sled_trees
//! valgrind --tool=callgrind target/release/examples/sled_trees 40000
//! ```
//!
//! Per write, what a raftkv node does to sled: append to a log tree and to
//! a history tree (keys that only grow), overwrite one of 10,000 keys in a
//! state tree, and, 10,000 writes behind, remove from the two growing trees;
//! a flush every 64 writes. Prints the CPU time per write, which on a shared
//! machine moves too much between runs to compare builds by.

fn main() {
    let writes: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(40_000);
    let dir = std::env::temp_dir().join(format!("raftkv-sled-trees-{}", std::process::id()));
    let db = sled::Config::new().path(&dir).open().expect("open");
    let log = db.open_tree("log").expect("log tree");
    let history = db.open_tree("history").expect("history tree");
    let state = db.open_tree("state").expect("state tree");
    let (entry, row) = (vec![7u8; 400], vec![9u8; 300]);
    let started = std::time::Instant::now();
    for i in 0..writes {
        log.insert(i.to_be_bytes(), entry.as_slice())
            .expect("insert");
        history
            .insert(i.to_be_bytes(), row.as_slice())
            .expect("insert");
        let key = format!("key-{:05}", (i * 7919) % 10_000);
        state
            .insert(key.as_bytes(), row.as_slice())
            .expect("insert");
        if i >= 10_000 {
            log.remove((i - 10_000).to_be_bytes()).expect("remove");
            history.remove((i - 10_000).to_be_bytes()).expect("remove");
        }
        if i % 64 == 63 {
            db.flush().expect("flush");
        }
    }
    println!(
        "{writes} writes, {:.1} µs each",
        started.elapsed().as_secs_f64() * 1e6 / writes as f64
    );
    drop((log, history, state, db));
    let _ = std::fs::remove_dir_all(&dir);
}
