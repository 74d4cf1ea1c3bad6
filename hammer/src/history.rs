//! `--history FILE`: every operation as one JSON line, for offline
//! linearizability checking.

use std::io::BufWriter;
use std::io::Write;
use std::path::Path;

use serde::Deserialize;
use serde::Serialize;
use tokio::sync::mpsc;

/// One operation as recorded. Keys and values are written as (lossy) UTF-8:
/// hammer only writes printable keys and values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Which client ran it.
    pub client: u64,
    /// `put`, `get` or `cas`.
    pub kind: String,
    pub key: String,
    /// The value written (put), or the new value (cas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// cas only: the value expected; absent means "expected the key to be absent".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// get: the value read (absent: key not found); failed cas: the value found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
    /// cas only: whether it swapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<bool>,
    /// When the client invoked it, ns since the run started.
    pub invoke_ns: u64,
    /// When the client saw it end (for `unknown`: when it gave up), ns since the start.
    pub complete_ns: u64,
    /// `ok`, `fail` (did not take effect) or `unknown` (may or may not have).
    pub outcome: String,
}

/// Writes events to a file from a background task.
pub struct HistoryWriter {
    sender: mpsc::UnboundedSender<Event>,
    task: tokio::task::JoinHandle<std::io::Result<u64>>,
}

impl HistoryWriter {
    /// Creates `path` (truncating it).
    pub fn create(path: &Path) -> anyhow::Result<HistoryWriter> {
        let file = std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("cannot create history file {}: {e}", path.display()))?;
        let (sender, mut events) = mpsc::unbounded_channel::<Event>();
        let task = tokio::task::spawn_blocking(move || {
            let mut out = BufWriter::new(file);
            let mut count = 0;
            while let Some(event) = events.blocking_recv() {
                serde_json::to_writer(&mut out, &event)?;
                out.write_all(b"\n")?;
                count += 1;
            }
            out.flush()?;
            Ok(count)
        });
        Ok(HistoryWriter { sender, task })
    }

    /// A handle clients record through.
    pub fn sender(&self) -> mpsc::UnboundedSender<Event> {
        self.sender.clone()
    }

    /// Flushes everything recorded; returns the number of events written.
    pub async fn finish(self) -> anyhow::Result<u64> {
        drop(self.sender);
        Ok(self.task.await??)
    }
}

/// Reads a history file.
pub fn read(path: &Path) -> anyhow::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read history file {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|e| {
                anyhow::anyhow!("{}:{}: not a history event: {e}", path.display(), n + 1)
            })
        })
        .collect()
}
