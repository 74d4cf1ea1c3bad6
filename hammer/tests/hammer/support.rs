//! Helpers only hammer's tests need: running the hammer binary, and running
//! one scenario of this test binary inside a namespace. Clusters come from
//! `raftkv_testkit`.

use std::process::Command;

use raftkv_testkit::run_program;

/// Runs the hammer binary with `args`; returns its exit code, stdout and stderr.
pub async fn hammer_binary(args: Vec<String>) -> (i32, String, String) {
    let run = run_program(env!("CARGO_BIN_EXE_hammer"), args).await;
    (run.code, run.stdout, run.stderr)
}

/// Whether the tests run as root (namespaces, nft rules and mounts need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs the ignored test `driver` of this binary under `wrapper` (e.g.
/// `ip netns exec NS`, `unshare --mount`) with `env_key` set, and fails
/// unless it ran and passed.
pub async fn run_isolated_driver(
    wrapper: Vec<String>,
    driver: &'static str,
    env_key: &'static str,
) {
    let exe = std::env::current_exe().expect("test executable");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .arg(exe)
            .args([
                "--ignored",
                "--exact",
                driver,
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(env_key, "1")
            .output()
            .expect("run the isolated scenario")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{driver} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
