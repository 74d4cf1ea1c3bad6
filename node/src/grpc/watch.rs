//! `KV/Watch`: one task per watcher reads the node's window of applied
//! changes (see [`crate::watch`]) from its cursor and sends what falls under
//! its prefix, whole log entries at a time, through a small channel.
//!
//! The channel is all a watcher holds: a client that reads slowly makes the
//! task wait, the window moves on without it, and once the window has
//! dropped the task's cursor the stream ends with RESOURCE_EXHAUSTED and the
//! index to resume at. The stream also ends when the node stops.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use raftkv_proto::pb;
use raftkv_proto::OLDEST_INDEX_METADATA;
use raftkv_proto::RESUME_INDEX_METADATA;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tonic::Status;

use crate::watch::Applied;
use crate::watch::Behind;
use crate::watch::WatchHub;

/// Messages queued for one watcher's stream.
const QUEUED_MESSAGES: usize = 4;
/// Entries read from the window at a time.
const ENTRIES_PER_READ: usize = 256;
/// A message grows past this only by a single entry bigger than it.
const MESSAGE_BYTES: usize = 256 << 10;
/// How often a watcher whose prefix sees no change is told how far the node
/// has applied, so it can resume from there.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The messages of one `Watch` stream.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// What every watch needs from the node.
#[derive(Clone)]
pub struct Watches {
    pub hub: Arc<WatchHub>,
    /// Turns `true` when the node stops.
    pub stopping: watch::Receiver<bool>,
}

fn status_with(code: tonic::Code, message: String, metadata: &[(&'static str, u64)]) -> Status {
    let mut status = Status::new(code, message);
    for (key, value) in metadata {
        if let Ok(value) = value.to_string().parse() {
            status.metadata_mut().insert(*key, value);
        }
    }
    status
}

/// OUT_OF_RANGE for a start before the window.
fn compacted(start: u64, oldest: u64) -> Status {
    status_with(
        tonic::Code::OutOfRange,
        format!(
            "changes before index {oldest} are no longer kept (asked from {start}): Scan, then \
             watch from the scan's applied_index + 1"
        ),
        &[(OLDEST_INDEX_METADATA, oldest)],
    )
}

/// Starts the stream of `request`, or refuses a start the node cannot serve.
pub fn start(watches: &Watches, request: pb::WatchRequest) -> Result<WatchStream, Status> {
    let pb::WatchRequest {
        prefix,
        start_index,
    } = request;
    let cursor = watches
        .hub
        .start_at(start_index)
        .map_err(|behind| match behind {
            Behind::Compacted { oldest } => compacted(start_index, oldest),
        })?;
    let (tx, rx) = mpsc::channel(QUEUED_MESSAGES);
    tokio::spawn(feed(watches.clone(), prefix, cursor, tx));
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// The events of `entries` under `prefix`, whole entries up to about
/// [`MESSAGE_BYTES`]; and the index after the last entry taken.
fn events(entries: &[Arc<Applied>], prefix: &[u8], next: u64) -> (Vec<pb::Event>, u64) {
    let mut events = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        if bytes >= MESSAGE_BYTES {
            return (events, entry.index);
        }
        for change in entry.changes.iter().filter(|c| c.key.starts_with(prefix)) {
            let (kind, value) = match &change.value {
                Some(value) => (pb::EventKind::Put, value.clone()),
                None => (pb::EventKind::Delete, Vec::new()),
            };
            bytes += change.key.len() + value.len();
            events.push(pb::Event {
                kind: kind.into(),
                key: change.key.clone(),
                value,
                index: entry.index,
            });
        }
    }
    (events, next)
}

/// Sends what the window holds from `cursor` on, then what gets applied,
/// until the client goes away, falls behind, or the node stops.
async fn feed(
    mut watches: Watches,
    prefix: Vec<u8>,
    mut cursor: u64,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
) {
    let mut last_sent = tokio::time::Instant::now();
    let mut told = cursor;
    loop {
        let (entries, next) = match watches.hub.read(cursor, ENTRIES_PER_READ) {
            Ok(read) => read,
            Err(Behind::Compacted { oldest }) => {
                let status = status_with(
                    tonic::Code::ResourceExhausted,
                    format!(
                        "this watcher fell behind: the node no longer keeps the changes from \
                         index {cursor} on (oldest kept: {oldest}); resume from {cursor} if the \
                         node still has it, else Scan and watch from the scan's applied_index + 1"
                    ),
                    &[
                        (RESUME_INDEX_METADATA, cursor),
                        (OLDEST_INDEX_METADATA, oldest),
                    ],
                );
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let (events, next) = events(&entries, &prefix, next);
        let progress_due = next > told && last_sent.elapsed() >= PROGRESS_EVERY;
        if !events.is_empty() || progress_due {
            let message = pb::WatchResponse {
                events,
                resume_index: next,
            };
            if tx.send(Ok(message)).await.is_err() {
                return;
            }
            last_sent = tokio::time::Instant::now();
            told = next;
        }
        cursor = next;
        if entries.len() == ENTRIES_PER_READ {
            continue;
        }
        let stopping = async {
            // The guard it returns must not live across the send below.
            let _ = watches.stopping.wait_for(|stopping| *stopping).await;
        };
        tokio::select! {
            () = watches.hub.applied_beyond(cursor.saturating_sub(1)) => {}
            () = tokio::time::sleep(PROGRESS_EVERY) => {}
            () = tx.closed() => return,
            () = stopping => {
                let status = status_with(
                    tonic::Code::Unavailable,
                    format!("the node is stopping; resume from index {cursor} on another node"),
                    &[(RESUME_INDEX_METADATA, cursor)],
                );
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
    }
}
