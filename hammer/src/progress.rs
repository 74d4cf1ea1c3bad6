//! The progress line on a terminal: ops/s, p99 and errors, rewritten each
//! second on stderr (stdout carries the report), wiped when the run ends.

use std::io::IsTerminal;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::client::Shared;

/// The task drawing the line.
pub(crate) struct Progress {
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts the line, unless stdout is not a terminal or carries JSON:
    /// then nobody watches, or the line would be in the way.
    pub fn start(shared: &Arc<Shared>) -> Option<Progress> {
        (std::io::stdout().is_terminal() && !shared.args.json).then(|| Progress {
            task: tokio::spawn(show(shared.clone())),
        })
    }

    /// Stops the line and wipes it.
    pub fn stop(self) {
        self.task.abort();
        eprint!("\r{:80}\r", "");
    }
}

/// One line, rewritten each second: ops/s, p99, errors.
async fn show(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let now = shared.start.elapsed();
        let (total, rate, p99, errors) = shared.recorder().progress(now);
        eprint!(
            "\r[{:>4}s] {total} ops, {rate} ops/s, p99 {p99:.2} ms, errors {errors}   ",
            now.as_secs()
        );
        let _ = std::io::stderr().flush();
    }
}
