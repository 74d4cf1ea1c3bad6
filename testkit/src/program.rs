//! Running a command-line program (`raft-admin`, `hammer`) to completion and
//! judging what it printed.

use std::ffi::OsStr;
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

/// What one run of a program produced.
#[derive(Debug)]
pub struct Run {
    /// The program's file name, for failure messages.
    pub program: String,
    /// Exit code (-1 if a signal ended it).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics unless the run succeeded.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "{} failed: {}{}",
            self.program, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the run failed with a clear first line of error output
    /// (`error: …`).
    pub fn failed(self, what: &str) -> Run {
        assert_ne!(
            self.code, 0,
            "{what}: expected failure, got success: {}",
            self.stdout
        );
        let first = self.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error:") && first.len() > 10,
            "{what}: unclear error {:?}",
            self.stderr
        );
        self
    }

    /// Standard output parsed as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `program args…` to completion, off the async worker threads (so
/// whatever else the test runs keeps running meanwhile).
pub async fn run_program<I, S>(program: impl AsRef<Path>, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let program = program.as_ref().to_path_buf();
    let args: Vec<OsString> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
    })
    .await
    .expect("join");
    Run {
        program: name,
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
