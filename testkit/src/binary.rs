//! Where the `raftkv-node` binary is. Cargo tells only the node crate's own
//! tests where its binaries are (`CARGO_BIN_EXE_*`), so the kit looks where
//! Cargo puts them and builds the binary if it is not there.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Environment variable naming the `raftkv-node` binary the tests run, when
/// it is not (or should not be) the one in this build's target directory.
pub const NODE_BINARY_ENV: &str = "RAFTKV_NODE_BIN";

/// The `raftkv-node` binary tests run, in this order:
///
/// 1. the path in [`NODE_BINARY_ENV`], if set;
/// 2. `raftkv-node` in the profile directory of the running test executable
///    (`target/debug/deps/<test>` → `target/debug/raftkv-node`), where
///    `cargo test --workspace` has just built it;
/// 3. otherwise it is built there once, with `cargo build -p raftkv-node
///    --features failpoints` (crash-point tests need that feature).
///
/// When only one crate's tests are run (`cargo test -p hammer`) a binary
/// already present is used as it is: rebuild it, or run the workspace's
/// tests, after changing the node.
pub fn node_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(locate)
}

fn locate() -> PathBuf {
    if let Some(path) = std::env::var_os(NODE_BINARY_ENV) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{NODE_BINARY_ENV}={} is not a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let binary = profile_dir.join(format!("raftkv-node{}", std::env::consts::EXE_SUFFIX));
    if !binary.is_file() {
        build(profile_dir);
    }
    assert!(
        binary.is_file(),
        "no raftkv-node binary at {}: build it with `cargo build -p raftkv-node --features failpoints` \
         or name one in {NODE_BINARY_ENV}",
        binary.display()
    );
    binary
}

/// Builds `raftkv-node` into `profile_dir` (target/<profile>).
fn build(profile_dir: &Path) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ lives in the workspace root");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "-p", "raftkv-node", "--bin", "raftkv-node"])
        .args(["--features", "failpoints"]);
    if let Some(target_dir) = profile_dir.parent() {
        command.arg("--target-dir").arg(target_dir);
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(profile) => {
            command.args(["--profile", profile]);
        }
    }
    let status = command.status().expect("run cargo build");
    assert!(status.success(), "cargo build of raftkv-node failed");
}
