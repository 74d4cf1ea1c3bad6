//! Slow disks: one node's data directory on its own loop-mounted ext4,
//! throttled to a few write operations a second by a cgroup v1 blkio limit
//! (`blkio.throttle.write_iops_device`). The cluster keeps what works: the
//! other two form the quorum, a slow follower costs no leader change, and
//! nothing acknowledged is lost. The throughput against the same cluster
//! unthrottled, the leader changes and the writes the cgroup throttled are
//! printed (timing is measured, never asserted). Runs as root in a private
//! mount namespace; skipped, with the reason, where the kernel or the tools
//! lack what it needs.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

use raftkv_testkit::TestCluster;

use crate::support::is_root;
use crate::support::run_isolated_driver;
use crate::test_faults::finish;
use crate::test_faults::start_load;

const DRIVER: &str = "RAFTKV_TEST_SLOW_DISK_DRIVER";
const BLKIO: &str = "/sys/fs/cgroup/blkio";
/// Write operations a second the slow disk allows.
const WRITE_IOPS: u32 = 5;
/// Seconds of load before and while the disk is slow.
const LOAD_SECONDS: u64 = 6;

/// Why the slow-disk scenarios cannot run here, if they cannot.
fn prerequisites() -> Option<String> {
    if !is_root() {
        return Some("loop devices, mounts and cgroups need root".into());
    }
    for tool in ["unshare", "losetup", "mkfs.ext4", "mount"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    let free_loop = Command::new("losetup")
        .arg("--find")
        .output()
        .is_ok_and(|o| o.status.success());
    if !free_loop {
        return Some("no free loop device (losetup --find failed)".into());
    }
    if !Path::new(BLKIO)
        .join("blkio.throttle.write_iops_device")
        .exists()
    {
        return Some(format!("no cgroup v1 blkio controller at {BLKIO}"));
    }
    None
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("run a command");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// An ext4 filesystem on a loop device, mounted, with a blkio cgroup that
/// throttles writes to it. Removed when dropped (after the nodes on it).
struct SlowDisk {
    mount: PathBuf,
    device: String,
    /// `major:minor` of the loop device.
    numbers: String,
    cgroup: PathBuf,
}

impl SlowDisk {
    fn create(dir: &Path) -> SlowDisk {
        let image = dir.join("disk.img");
        let file = std::fs::File::create(&image).expect("image");
        file.set_len(256 << 20).expect("image size");
        drop(file);
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        let device = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image));
        let mount = dir.join("slow");
        std::fs::create_dir(&mount).expect("mount point");
        run(Command::new("mount").arg(&device).arg(&mount));
        let name = Path::new(&device).file_name().expect("device name");
        let numbers = std::fs::read_to_string(Path::new("/sys/class/block").join(name).join("dev"))
            .expect("device numbers")
            .trim()
            .to_string();
        let cgroup = Path::new(BLKIO).join(format!("raftkv-slow-{}", std::process::id()));
        std::fs::create_dir_all(&cgroup).expect("blkio cgroup");
        SlowDisk {
            mount,
            device,
            numbers,
            cgroup,
        }
    }

    /// Limits writes to the disk by `pid` to `iops` a second.
    fn throttle(&self, pid: u32, iops: u32) {
        std::fs::write(
            self.cgroup.join("blkio.throttle.write_iops_device"),
            format!("{} {iops}", self.numbers),
        )
        .expect("set the write limit");
        std::fs::write(self.cgroup.join("cgroup.procs"), pid.to_string()).expect("join the cgroup");
    }

    /// Limits the bytes `pid` may write to the disk a second (1: a hung
    /// disk; 0: no limit).
    fn limit_bytes(&self, pid: u32, bytes: u64) {
        std::fs::write(
            self.cgroup.join("blkio.throttle.write_bps_device"),
            format!("{} {bytes}", self.numbers),
        )
        .expect("set the byte limit");
        std::fs::write(self.cgroup.join("cgroup.procs"), pid.to_string()).expect("join the cgroup");
    }

    /// Write operations to the disk the cgroup has seen.
    fn writes(&self) -> u64 {
        let serviced = std::fs::read_to_string(self.cgroup.join("blkio.throttle.io_serviced"))
            .unwrap_or_default();
        serviced
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let (device, kind, count) = (parts.next()?, parts.next()?, parts.next()?);
                (device == self.numbers && kind == "Write").then(|| count.parse::<u64>().ok())?
            })
            .sum()
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        // Processes left in the cgroup go back to the root one first.
        if let Ok(pids) = std::fs::read_to_string(self.cgroup.join("cgroup.procs")) {
            for pid in pids.lines() {
                let _ = std::fs::write(Path::new(BLKIO).join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.cgroup);
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// Which node's disk is slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slow {
    Follower,
    Leader,
}

/// Resident memory of `pid` in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Three voters, node 3's data on a [`SlowDisk`] (not throttled yet), node
/// 3 leading if `lead`.
async fn cluster_with_a_slow_node(lead: bool) -> (TestCluster, SlowDisk) {
    let mut cluster = TestCluster::new();
    let disk = SlowDisk::create(cluster.dir());
    cluster.bootstrap(cluster.node_spec(1)).await;
    cluster.add_voter(2).await;
    // A named quota, not an eighth of the small disk.
    let spec = cluster
        .node_spec(3)
        .data_dir(disk.mount.join("node-3"))
        .flags(&["--quota-bytes", "1073741824"]);
    cluster.add_voter_from(spec).await;
    if lead {
        cluster
            .node(1)
            .client()
            .transfer_leader(3, std::time::Duration::from_millis(10_000))
            .await
            .expect("node 3 takes the lead");
    }
    (cluster, disk)
}

/// The leader's disk hangs (1 byte a second): it hands leadership over
/// within seconds, clients keep writing, and its memory stays bounded.
async fn hung_leader() {
    let (mut cluster, disk) = cluster_with_a_slow_node(true).await;
    let pid = cluster.node(3).pid().expect("node 3 runs");
    let load = start_load(&cluster, 3 * LOAD_SECONDS, &[]);
    let rss_before = rss_mib(pid);
    disk.limit_bytes(pid, 1);
    let started = std::time::Instant::now();
    let new_leader = cluster
        .leader_within(std::time::Duration::from_secs(60), Some(3))
        .await;
    let handed_over = started.elapsed();
    let rss_at_handover = rss_mib(pid);
    assert!(
        cluster.node(3).log().contains("handing leadership over"),
        "node 3 did not say why it handed over"
    );
    // The disk answers again; node 3 catches up, and nothing is lost.
    disk.limit_bytes(pid, 0);
    let report = finish(load, &cluster).await;
    println!(
        "hung leader disk: leadership went to node {new_leader} {:.1} s after the disk hung; \
         node 3 RSS {rss_before:.1} MiB before, {rss_at_handover:.1} at the handover, {:.1} at \
         the end; {} operations, longest write gap {:?} ms; lost 0",
        handed_over.as_secs_f64(),
        rss_mib(pid),
        report.operations,
        report.longest_write_gap_ms,
    );
    for id in [1, 2, 3] {
        cluster.node(id).kill();
    }
    drop(disk);
}

/// Three nodes, node 3's data on the slow disk; a load unthrottled, then
/// the same load with node 3 (made leader first if `slow` says so) limited
/// to [`WRITE_IOPS`].
async fn scenario(slow: Slow) {
    let (mut cluster, disk) = cluster_with_a_slow_node(slow == Slow::Leader).await;
    let before = finish(start_load(&cluster, LOAD_SECONDS, &[]), &cluster).await;
    let leader_before = cluster.wait_for_leader().await;
    let pid = cluster.node(3).pid().expect("node 3 runs");
    disk.throttle(pid, WRITE_IOPS);
    let writes_before = disk.writes();
    // Keys of their own: the history check starts from an empty key space.
    let during = finish(
        start_load(&cluster, LOAD_SECONDS, &["--key-prefix", "slow/"]),
        &cluster,
    )
    .await;
    let leader_after = cluster.wait_for_leader().await;
    let throttled = disk.writes() - writes_before;
    println!(
        "slow {slow:?} ({WRITE_IOPS} write IOPS): {:.0} ops/s before, {:.0} while slow ({:.2}x); \
         leader {leader_before} -> {leader_after}; {throttled} writes went through the throttle; \
         longest write gap {:?} ms; lost 0",
        before.throughput,
        during.throughput,
        during.throughput / before.throughput.max(1.0),
        during.longest_write_gap_ms,
    );
    assert!(
        throttled > 0,
        "no write of node 3 went through the throttled cgroup"
    );
    if slow == Slow::Follower {
        assert_eq!(
            leader_before, leader_after,
            "a slow follower cost a leader change"
        );
    }
    for id in [1, 2, 3] {
        cluster.node(id).kill();
    }
    drop(disk);
}

/// Runs `driver` in a private mount namespace, or says why `test` is skipped.
async fn run_in_a_mount_namespace(test: &str, driver: &'static str) {
    if let Some(reason) = prerequisites() {
        println!("SKIPPED {test}: {reason}");
        return;
    }
    let wrapper = ["unshare", "--mount", "--propagation", "private"]
        .map(String::from)
        .to_vec();
    run_isolated_driver(wrapper, driver, DRIVER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_follower_disk() {
    run_in_a_mount_namespace(
        "a_slow_follower_disk",
        "test_slow_disk::slow_follower_driver",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_leader_disk() {
    run_in_a_mount_namespace("a_slow_leader_disk", "test_slow_disk::slow_leader_driver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_leader_disk() {
    run_in_a_mount_namespace("a_hung_leader_disk", "test_slow_disk::hung_leader_driver").await;
}

/// The hung-leader scenario, run in a private mount namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the mount namespace created by a_hung_leader_disk"]
async fn hung_leader_driver() {
    assert!(
        std::env::var(DRIVER).is_ok(),
        "run through a_hung_leader_disk"
    );
    hung_leader().await;
}

/// The slow-follower scenario, run in a private mount namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the mount namespace created by a_slow_follower_disk"]
async fn slow_follower_driver() {
    assert!(
        std::env::var(DRIVER).is_ok(),
        "run through a_slow_follower_disk"
    );
    scenario(Slow::Follower).await;
}

/// The slow-leader scenario, run in a private mount namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the mount namespace created by a_slow_leader_disk"]
async fn slow_leader_driver() {
    assert!(
        std::env::var(DRIVER).is_ok(),
        "run through a_slow_leader_disk"
    );
    scenario(Slow::Leader).await;
}
