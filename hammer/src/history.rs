//! `--history FILE`: every operation as one JSON line, for offline
//! linearizability checking.

use std::io::BufWriter;
use std::io::Write;
use std::path::Path;

use serde::Deserialize;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::op;
use crate::op::Op;
use crate::op::Reply;

/// One operation as recorded: one JSON line, e.g.
/// `{"client":3,"key":"hammer/00000042","kind":"put","value":"3-17:xx…","invoke_ns":…,"complete_ns":…,"outcome":"ok"}`.
/// Keys and values are written as (lossy) UTF-8: hammer only writes
/// printable keys and values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Which client ran it.
    pub client: u64,
    pub key: String,
    /// What was asked and what came back; its `kind` field says which operation.
    #[serde(flatten)]
    pub call: Call,
    /// When the client invoked it, ns since the run started.
    pub invoke_ns: u64,
    /// When the client saw it end (for `unknown`: when it gave up), ns since the start.
    pub complete_ns: u64,
    pub outcome: Outcome,
}

/// An operation and its result, as the fields next to `"kind"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Call {
    /// `"kind":"put"`: wrote `value`.
    Put { value: String },
    /// `"kind":"get"`: read `read` (absent: key not found, or no answer).
    Get {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        read: Option<String>,
    },
    /// `"kind":"cas"`: set `value` if the key held `expected`.
    Cas {
        /// The new value.
        value: String,
        /// The value expected; absent means "expected the key to be absent".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected: Option<String>,
        /// Whether it swapped (absent: no answer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        succeeded: Option<bool>,
        /// A failed swap: the value found (absent: the key was absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        read: Option<String>,
    },
}

/// How a recorded operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It took effect between invoke and complete (a read: returned this).
    Ok,
    /// It did not take effect.
    Fail,
    /// It may or may not have taken effect, at any time after its invoke.
    Unknown,
}

impl Outcome {
    /// The name written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Unknown => "unknown",
        }
    }
}

/// Compares with the name written in the file, so a history can be filtered
/// by the words a reader sees in it (`event.outcome == "unknown"`).
impl PartialEq<&str> for Outcome {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

impl Event {
    /// The event of `op` as it ended, invoked and completed at these times
    /// (ns since the run started).
    pub(crate) fn of(
        client: u64,
        op: &Op,
        outcome: &op::Outcome,
        invoke_ns: u64,
        complete_ns: u64,
    ) -> Event {
        let (read, succeeded) = match outcome {
            op::Outcome::Ok(Reply::Read(found)) => (found.as_deref().map(text), None),
            op::Outcome::Ok(Reply::Swapped { succeeded, current }) => {
                (current.as_deref().map(text), Some(*succeeded))
            }
            _ => (None, None),
        };
        let call = match op {
            Op::Put { value, .. } => Call::Put { value: text(value) },
            Op::Get { .. } => Call::Get { read },
            Op::Cas {
                expected,
                new_value,
                ..
            } => Call::Cas {
                value: text(new_value),
                expected: expected.as_deref().map(text),
                succeeded,
                read,
            },
        };
        Event {
            client,
            key: text(op.key()),
            call,
            invoke_ns,
            complete_ns,
            outcome: match outcome {
                op::Outcome::Ok(_) => Outcome::Ok,
                op::Outcome::Fail(_) => Outcome::Fail,
                op::Outcome::Unknown(_) => Outcome::Unknown,
            },
        }
    }
}

/// Bytes hammer wrote, as text.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as hammer has always written them: each reads back as an
    /// event, and that event writes the same JSON again.
    #[test]
    fn the_file_format_is_unchanged() {
        let lines = [
            r#"{"client":1,"kind":"put","key":"k","value":"1-1:xx","invoke_ns":1,"complete_ns":2,"outcome":"ok"}"#,
            r#"{"client":2,"kind":"get","key":"k","read":"1-1:xx","invoke_ns":3,"complete_ns":4,"outcome":"ok"}"#,
            r#"{"client":2,"kind":"get","key":"k","invoke_ns":5,"complete_ns":6,"outcome":"unknown"}"#,
            r#"{"client":3,"kind":"cas","key":"k","value":"3-1:xx","expected":"1-1:xx","read":"2-1:xx","succeeded":false,"invoke_ns":7,"complete_ns":8,"outcome":"ok"}"#,
            r#"{"client":3,"kind":"cas","key":"k","value":"3-2:xx","invoke_ns":9,"complete_ns":10,"outcome":"fail"}"#,
        ];
        for line in lines {
            let event: Event = serde_json::from_str(line).expect(line);
            let written = serde_json::to_value(&event).unwrap();
            let original: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(written, original, "{line}");
        }
        let event: Event = serde_json::from_str(lines[3]).unwrap();
        assert_eq!(event.outcome, "ok");
        assert_eq!(
            event.call,
            Call::Cas {
                value: "3-1:xx".into(),
                expected: Some("1-1:xx".into()),
                succeeded: Some(false),
                read: Some("2-1:xx".into()),
            }
        );
    }

    #[test]
    fn events_are_built_from_operations_and_their_outcomes() {
        let op = Op::Cas {
            key: b"k".to_vec(),
            expected: None,
            new_value: b"1-1:xx".to_vec(),
        };
        let swapped = op::Outcome::Ok(Reply::Swapped {
            succeeded: false,
            current: Some(b"0-1:xx".to_vec()),
        });
        let event = Event::of(1, &op, &swapped, 10, 20);
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"client":1,"key":"k","kind":"cas","value":"1-1:xx","succeeded":false,"read":"0-1:xx","invoke_ns":10,"complete_ns":20,"outcome":"ok"}"#
        );
        let lost = Event::of(1, &op, &op::Outcome::Unknown("timeout".into()), 10, 20);
        assert_eq!(lost.outcome, Outcome::Unknown);
    }
}
