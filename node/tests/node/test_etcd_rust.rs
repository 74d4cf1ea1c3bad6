//! etcd's Rust client (crates.io `etcd-client`) against a raftkv cluster,
//! through the program in `compat/etcd-client-check`: put, get, prefix,
//! transactions, a watch, leases, status and the member list. That program
//! is a package outside the workspace because `etcd-client` needs a system
//! `protoc` to build (raftkv never does); where `protoc` is missing the test
//! says so and is skipped. It is built once, under cargo's test directory.

use std::path::Path;
use std::process::Command;

use crate::support::run_client_check;

/// `protoc`, as `etcd-client`'s build finds it: `$PROTOC`, else on `PATH`.
fn protoc() -> Result<(), String> {
    let protoc = std::env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    match Command::new(&protoc).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{} --version failed: {}",
            protoc.to_string_lossy(),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Err(format!(
            "no {} ({e}); install Debian's protobuf-compiler",
            protoc.to_string_lossy()
        )),
    }
}

#[tokio::test]
async fn rusts_etcd_client_works_against_a_follower_and_the_leader() {
    if let Err(why) = protoc() {
        eprintln!("SKIPPED: etcd's Rust client cannot be built here: {why}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = root.join("compat/etcd-client-check/Cargo.toml");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("etcd-client-check");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    // Built before the cluster starts, so the nodes do not wait on it.
    let built = tokio::task::spawn_blocking({
        let (manifest, target) = (manifest.clone(), target.clone());
        move || {
            Command::new(cargo)
                .args(["build", "--quiet", "--locked", "--manifest-path"])
                .arg(&manifest)
                .arg("--target-dir")
                .arg(&target)
                .output()
                .expect("cargo runs")
        }
    })
    .await
    .expect("the build ends");
    assert!(
        built.status.success(),
        "building {}: {}",
        manifest.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    run_client_check(Command::new(target.join("debug/etcd-client-check"))).await;
}
