//! A memory cgroup of the test's own, to run a node under a memory limit as
//! a device (or systemd's `MemoryMax=`) would. Works with cgroup v2 and with
//! v1's memory controller; needs root.

use std::path::Path;
use std::path::PathBuf;

/// Which cgroup interface the limit is set through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// A memory cgroup with a limit; removed on drop (once its processes are gone:
/// declare it before the nodes that go in it, so they are dropped first).
#[derive(Debug)]
pub struct MemoryCgroup {
    path: PathBuf,
    version: Version,
}

impl MemoryCgroup {
    /// Creates cgroup `name` limited to `limit_bytes`, beside the test's own
    /// cgroup (v1) or under the root (v2). `Err` says why it cannot be made.
    pub fn create(name: &str, limit_bytes: u64) -> Result<MemoryCgroup, String> {
        let unified = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let (path, version) = if unified.is_file() {
            let root = Path::new("/sys/fs/cgroup");
            let controllers = std::fs::read_to_string(root.join("cgroup.subtree_control"))
                .map_err(|e| format!("cannot read cgroup.subtree_control: {e}"))?;
            if !controllers.split_whitespace().any(|c| c == "memory") {
                return Err("the memory controller is not enabled for child cgroups".into());
            }
            (root.join(name), Version::V2)
        } else {
            let own = std::fs::read_to_string("/proc/self/cgroup")
                .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
            let own = own
                .lines()
                .find_map(|line| {
                    // hierarchy-id:controllers:path
                    let mut parts = line.splitn(3, ':');
                    let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                    controllers
                        .split(',')
                        .any(|c| c == "memory")
                        .then(|| path.trim_start_matches('/').to_string())
                })
                .ok_or("no memory cgroup (v1) and no unified hierarchy (v2)")?;
            let base = Path::new("/sys/fs/cgroup/memory").join(own);
            (base.join(name), Version::V1)
        };
        std::fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let cgroup = MemoryCgroup { path, version };
        let limit_file = match version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        };
        cgroup.write(limit_file, &limit_bytes.to_string())?;
        if version == Version::V2 {
            // No swap either: the limit is on memory, as on a device without swap.
            let _ = cgroup.write("memory.swap.max", "0");
        } else {
            let _ = cgroup.write("memory.memsw.limit_in_bytes", &limit_bytes.to_string());
        }
        Ok(cgroup)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        std::fs::write(self.path.join(file), value).map_err(|e| {
            format!(
                "cannot write {value} to {}/{file}: {e}",
                self.path.display()
            )
        })
    }

    fn read(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.path.join(file)).ok()
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: u32) {
        self.write("cgroup.procs", &pid.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The limit as the kernel holds it.
    pub fn limit_bytes(&self) -> Option<u64> {
        let file = match self.version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        };
        self.read(file)?.trim().parse().ok()
    }

    /// The most memory the cgroup has held (page cache included).
    pub fn peak_bytes(&self) -> Option<u64> {
        let file = match self.version {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        };
        self.read(file)?.trim().parse().ok()
    }

    /// How many processes the kernel's OOM killer killed in the cgroup
    /// (`None`: this kernel does not say).
    pub fn oom_kills(&self) -> Option<u64> {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        self.read(file)?
            .lines()
            .find_map(|line| line.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// The processes in the cgroup now.
    pub fn processes(&self) -> Vec<u32> {
        self.read("cgroup.procs")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}
