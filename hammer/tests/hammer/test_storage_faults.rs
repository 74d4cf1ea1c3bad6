//! Crashes in the middle of snapshot creation and snapshot installation
//! (crash points armed through `FAILPOINTS`): the node restarts from its data
//! directory and converges; nothing acknowledged is lost, the history stays
//! linearizable and every replica ends identical.

use std::time::Duration;

use raftkv_testkit::wait_for;
use raftkv_testkit::TestCluster;

use crate::support::is_root;
use crate::support::run_isolated_driver;
use crate::test_faults::finish;
use crate::test_faults::start_load;
use crate::test_faults::wait_until_purged;

const SNAPSHOT_FLAGS: [&str; 4] = ["--snapshot-after", "100", "--snapshot-keep", "0"];

/// A 3-voter cluster snapshotting every 100 entries; node `crashing` (if any)
/// starts with its crash points armed.
async fn cluster_with(crashing: Option<(u64, &str)>) -> TestCluster {
    let builder = TestCluster::builder().flags(&SNAPSHOT_FLAGS);
    match crashing {
        Some((id, points)) => builder.crash_points(id, points),
        None => builder,
    }
    .start(3)
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_while_building_a_snapshot() {
    // Node 2 dies as it takes its first snapshot, before syncing the state.
    let mut cluster = cluster_with(Some((2, "snapshot-build-before-sync=return"))).await;
    let load = start_load(&cluster, 6, &[]);
    assert!(
        cluster.node(2).exits_within(Duration::from_secs(30)).await,
        "node 2 never reached its crash point"
    );
    cluster.node(2).restart();
    let status = cluster
        .node(2)
        .status()
        .await
        .expect("node 2 answers after the restart");
    assert_eq!(status.id, 2);
    finish(load, &cluster).await;
    // Building a snapshot works again after the crash.
    let admin = cluster.node(2).client();
    let snapshot = admin.snapshot().await.expect("snapshot after the restart");
    let applied = cluster.applied_index(2).await;
    assert!(
        snapshot.index.unwrap_or(0) >= applied,
        "{snapshot:?} vs applied {applied}"
    );
}

/// Node 2 dies at `point` (after `skip` passes through it) under load,
/// restarts from its data directory, and the cluster converges.
async fn crash_at(point: &str, skip: u32) {
    let flags = [
        "--snapshot-after",
        "100",
        "--snapshot-keep",
        "0",
        "--history-revisions",
        "50",
    ];
    let mut cluster = TestCluster::builder()
        .flags(&flags)
        .crash_points(2, &format!("{point}={skip}*off->return"))
        .start(3)
        .await;
    let load = start_load(&cluster, 6, &[]);
    assert!(
        cluster.node(2).exits_within(Duration::from_secs(30)).await,
        "node 2 never reached {point}"
    );
    assert!(
        cluster.node(2).log().contains(point),
        "node 2 stopped, but not at {point}"
    );
    cluster.node(2).restart();
    finish(load, &cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_inside_an_apply_batch() {
    // Some rows of a batch are written, `applied` is not.
    crash_at("apply-after-entry", 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_inside_a_compaction_step() {
    crash_at("compaction-after-step", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_a_snapshot_and_the_log_purge() {
    crash_at("log-purge-before", 2).await;
}

/// Makes node 4 (at `address`) a voter through node `leader`, and checks
/// it caught up from a snapshot.
async fn promote_node_4(cluster: &mut TestCluster, leader: u64, address: String) {
    cluster
        .node(leader)
        .client()
        .add_voter(4, address, 0)
        .await
        .expect("node 4 catches up and becomes a voter");
    let status = cluster.node(4).status().await.expect("status");
    assert!(status.snapshot_index.unwrap_or(0) > 0, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_while_installing_a_snapshot() {
    // Node 4 receives a snapshot, and dies after storing it but before
    // loading it into its state machine.
    crash_in_a_snapshot_install("snapshot-install-before-load=return").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_right_after_installing_a_snapshot() {
    // Node 4 dies as soon as the install has ended: the marker that names
    // the received file is removed, and the file. The node starts again.
    crash_in_a_snapshot_install("snapshot-install-after-load=return").await;
}

/// Node 4 joins a loaded cluster that has purged its log, so it catches up
/// from a snapshot, dies at the crash point `point` of the install, starts
/// again, and becomes a voter; nothing acknowledged is lost.
async fn crash_in_a_snapshot_install(point: &str) {
    let mut cluster = cluster_with(None).await;
    let load = start_load(&cluster, 6, &[]);
    let leader = cluster.wait_for_leader().await;
    wait_until_purged(&cluster, leader).await;
    let spec = cluster.node_spec(4).crash_points(point);
    let address = cluster.start_node(spec).address.clone();
    cluster
        .node(leader)
        .client()
        .add_learner(4, address.clone(), 0)
        .await
        .expect("add learner");
    assert!(
        cluster.node(4).exits_within(Duration::from_secs(30)).await,
        "node 4 never reached its crash point"
    );
    cluster.node(4).restart();
    promote_node_4(&mut cluster, leader, address).await;
    finish(load, &cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_cut_short_by_the_senders_crash_is_sent_again_by_the_next_leader() {
    // Node 1 dies right after streaming the first chunk of a snapshot.
    let mut cluster = cluster_with(Some((1, "snapshot-send-after-chunk=return"))).await;
    let load = start_load(&cluster, 6, &[]);
    if cluster.wait_for_leader().await != 1 {
        cluster
            .node(1)
            .client()
            .transfer_leader(1, std::time::Duration::from_millis(10_000))
            .await
            .expect("node 1 takes the lead");
    }
    wait_until_purged(&cluster, 1).await;
    // Node 4 can only catch up from a snapshot; node 1 starts sending it
    // (or one to a lagging follower) and dies midway.
    let address = cluster.start_node(cluster.node_spec(4)).address.clone();
    let _ = cluster
        .node(1)
        .client()
        .add_learner(4, address.clone(), 0)
        .await;
    assert!(
        cluster.node(1).exits_within(Duration::from_secs(30)).await,
        "node 1 never reached its crash point"
    );
    assert!(cluster.node(1).log().contains("snapshot-send-after-chunk"));
    cluster.node(1).restart();
    // The next leader sends node 4 a whole snapshot.
    let leader = cluster.wait_for_leader().await;
    promote_node_4(&mut cluster, leader, address).await;
    finish(load, &cluster).await;
}

const DISK_DRIVER: &str = "RAFTKV_TEST_DISK_FULL_DRIVER";
/// The size quota of nodes on a small disk in these tests (1 GiB): above
/// what the disk holds, so the disk itself fills (the default would be an
/// eighth of the disk, and the quota's alarm would stop writes first).
const BIG_QUOTA: &str = "1073741824";

/// Why the disk-full scenario cannot run here, if it cannot.
fn disk_full_prerequisites() -> Option<String> {
    if !is_root() {
        return Some("mounting a small tmpfs needs root".into());
    }
    let unshare = std::process::Command::new("unshare")
        .arg("--version")
        .output();
    if !unshare.is_ok_and(|o| o.status.success()) {
        return Some("the unshare command is not available (Debian package util-linux)".into());
    }
    None
}

/// Disk full on one node: it stops serving without exiting, answers
/// UNAVAILABLE with reason disk-full and says why in its log; the other two
/// carry on; once space is freed it runs again by itself and catches up,
/// with nothing acknowledged lost.
/// The small disk is a tmpfs mounted in a private mount namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_on_one_node() {
    if let Some(reason) = disk_full_prerequisites() {
        println!("SKIPPED disk_full_on_one_node: {reason}");
        eprintln!("SKIPPED disk_full_on_one_node: {reason}");
        return;
    }
    let wrapper = ["unshare", "--mount", "--propagation", "private"]
        .map(String::from)
        .to_vec();
    run_isolated_driver(
        wrapper,
        "test_storage_faults::disk_full_driver",
        DISK_DRIVER,
    )
    .await;
}

/// The scenario itself, run in a private mount namespace by `disk_full_on_one_node`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the mount namespace created by disk_full_on_one_node"]
async fn disk_full_driver() {
    assert!(
        std::env::var(DISK_DRIVER).is_ok(),
        "run through disk_full_on_one_node"
    );
    let mut cluster = TestCluster::new();
    let small = cluster.dir().join("small");
    let _disk = small_disk(&small, SMALL_DISK_MIB);

    cluster.bootstrap(cluster.node_spec(1)).await;
    cluster.add_voter(2).await;
    // Node 3 keeps its data on the small disk, its log elsewhere.
    // The quota above what the disk holds: the disk fills for real.
    let spec = cluster
        .node_spec(3)
        .data_dir(small.join("node-3"))
        .flags(&["--quota-bytes", BIG_QUOTA]);
    cluster.add_voter_from(spec).await;
    let load = start_load(&cluster, 8, &[]);
    let leader = cluster.wait_for_leader().await;
    let applied = cluster.applied_index(leader).await;
    cluster.wait_applied_beyond(leader, applied + 200).await;

    let filler = fill(&small);
    let small_node = cluster.get(3);
    write_until(&cluster, || async move {
        says_disk_full(small_node).await.is_some()
    })
    .await;
    // Node 3 does not exit: it says why it stopped serving, to clients and
    // in its log, and waits for room.
    wait_disk_full(&mut cluster, 3).await;
    assert!(cluster.node(3).is_running(), "node 3 exited on a full disk");
    let text = cluster.node(3).log();
    assert!(
        text.contains("the disk is full")
            && (text.contains("No space left on device") || text.contains("os error 28")),
        "node 3 did not say why it stopped:\n{text}"
    );
    // The other two keep a leader and keep writing.
    cluster
        .leader_within(crate::test_faults::LEADER_BACK, Some(3))
        .await;
    cluster
        .client()
        .put("after-disk-full", "written by two")
        .await
        .expect("the other two take a write");

    // Space is freed: node 3 reopens its store by itself, with no restart,
    // and catches up.
    std::fs::remove_file(&filler).expect("free space");
    let node_3 = &*cluster.node(3);
    wait_for(
        "node 3 serves again",
        || async move { node_3.status().await },
    )
    .await;
    assert!(cluster.node(3).log().contains("reopening the store"));
    finish(load, &cluster).await;
}

/// Every node's disk full under load: no node exits, the leader answers
/// disk-full; once room is given back, every node runs again by itself, the
/// cluster elects a leader and takes writes, and nothing acknowledged is
/// lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_everywhere() {
    if let Some(reason) = disk_full_prerequisites() {
        println!("SKIPPED disk_full_everywhere: {reason}");
        return;
    }
    let wrapper = ["unshare", "--mount", "--propagation", "private"]
        .map(String::from)
        .to_vec();
    run_isolated_driver(
        wrapper,
        "test_storage_faults::disk_full_everywhere_driver",
        DISK_DRIVER,
    )
    .await;
}

/// Mounts a tmpfs of `megabytes` at a new directory `dir`.
#[must_use = "the disk is unmounted when this is dropped"]
fn small_disk(dir: &std::path::Path, megabytes: usize) -> SmallDisk {
    std::fs::create_dir(dir).expect("mount point");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
        .arg(dir)
        .status()
        .expect("mount");
    assert!(mounted.success(), "cannot mount a tmpfs");
    SmallDisk(dir.to_path_buf())
}

/// A small disk mounted for a test; unmounted when dropped. Declared after
/// the cluster, it is dropped first, so the cluster's directory (the mount
/// point inside it included) can be removed: a lazy unmount detaches it
/// although the nodes, stopped after it, still hold files open there.
struct SmallDisk(std::path::PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(&self.0)
            .status();
    }
}

/// Fills the filesystem of `dir` to the last byte; returns the file to
/// remove to give the room back.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    while file
        .write_all(&chunk)
        .and_then(|()| file.sync_data())
        .is_ok()
    {}
    filler
}

/// The size of the small disks, in MiB.
const SMALL_DISK_MIB: usize = 24;

/// Writes values the small disks cannot hold, one at a time, until
/// `noticed` says a node found its disk full, or twice a disk's size has
/// been sent. The load alone is not enough: it overwrites a few keys, sled
/// reuses the room it freed, and on a slow machine it can end before a node
/// needs a new page of its disk. Distinct keys of this size do need it,
/// however slow the machine. An attempt may fail or never end (with every
/// disk full no quorum can write): whether the disk filled is what
/// `noticed` and the waits after it check.
async fn write_until<F, Fut>(cluster: &TestCluster, mut noticed: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    const VALUE_BYTES: usize = 256 << 10;
    let client = cluster.client();
    let value = vec![0x5a_u8; VALUE_BYTES];
    for round in 0..2 * (SMALL_DISK_MIB << 20) / VALUE_BYTES {
        if noticed().await {
            return;
        }
        let put = client.put(format!("bulk/{round}"), value.clone());
        let _ = tokio::time::timeout(Duration::from_secs(2), put).await;
    }
}

/// Whether `node` answers UNAVAILABLE with reason disk-full.
async fn says_disk_full(node: &raftkv_testkit::TestNode) -> Option<()> {
    let refused = node.client().status().await.err()?;
    let refused = refused.status()?;
    let reason = refused.metadata().get(raftkv_proto::REASON_METADATA)?;
    (refused.code() == tonic::Code::Unavailable
        && reason.to_str().ok()? == raftkv_proto::REASON_DISK_FULL)
        .then_some(())
}

/// Waits until node `id` answers UNAVAILABLE with reason disk-full.
async fn wait_disk_full(cluster: &mut TestCluster, id: u64) {
    let node = &*cluster.node(id);
    wait_for(&format!("node {id} answers that its disk is full"), || {
        says_disk_full(node)
    })
    .await;
}

/// The scenario itself, run in a private mount namespace by `disk_full_everywhere`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the mount namespace created by disk_full_everywhere"]
async fn disk_full_everywhere_driver() {
    assert!(
        std::env::var(DISK_DRIVER).is_ok(),
        "run through disk_full_everywhere"
    );
    let mut cluster = TestCluster::new();
    let disks: Vec<_> = (1..=3)
        .map(|id| cluster.dir().join(format!("small-{id}")))
        .collect();
    let _mounted: Vec<SmallDisk> = disks
        .iter()
        .map(|disk| small_disk(disk, SMALL_DISK_MIB))
        .collect();
    let spec = |cluster: &TestCluster, id: u64| {
        cluster
            .node_spec(id)
            .data_dir(disks[id as usize - 1].join(format!("node-{id}")))
            .flags(&["--quota-bytes", BIG_QUOTA])
    };
    cluster.bootstrap(spec(&cluster, 1)).await;
    cluster.add_voter_from(spec(&cluster, 2)).await;
    cluster.add_voter_from(spec(&cluster, 3)).await;
    let load = start_load(&cluster, 30, &[]);
    let leader = cluster.wait_for_leader().await;
    let applied = cluster.applied_index(leader).await;
    cluster.wait_applied_beyond(leader, applied + 200).await;

    let fillers: Vec<_> = disks.iter().map(|disk| fill(disk)).collect();
    let nodes = &cluster.nodes;
    write_until(&cluster, || async move {
        for node in nodes {
            if says_disk_full(node).await.is_some() {
                return true;
            }
        }
        false
    })
    .await;
    // Some node fails a write first and says so: which one depends on
    // whose sync runs out of room first (a follower syncs the same entries
    // as the leader). Once no quorum can write, the others may write
    // nothing more and never notice.
    let nodes = &cluster.nodes;
    wait_for("a node answers that its disk is full", || async move {
        for node in nodes {
            if says_disk_full(node).await.is_some() {
                return Some(());
            }
        }
        None
    })
    .await;
    for id in 1..=3 {
        assert!(
            cluster.node(id).is_running(),
            "node {id} exited on a full disk"
        );
    }
    // Room is given back: every node runs again by itself, a leader is
    // elected, and writes resume before the load ends.
    for filler in &fillers {
        std::fs::remove_file(filler).expect("free space");
    }
    for id in 1..=3 {
        let node = &*cluster.node(id);
        wait_for(&format!("node {id} serves again"), || async move {
            node.status().await
        })
        .await;
    }
    cluster.wait_for_leader().await;
    cluster
        .client()
        .put("after-disk-full", "written again")
        .await
        .expect("the cluster takes writes again");
    finish(load, &cluster).await;
}
