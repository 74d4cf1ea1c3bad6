//! `KV/Watch`: one task per watcher reads the node's history of applied
//! changes (see [`crate::history::hub`]) from its cursor and sends what falls under
//! its prefix, whole log entries at a time, through a small channel.
//!
//! The channel and one message are all a watcher holds: a client that reads
//! slowly makes the task wait, and it carries on from disk where it was. Only
//! a compaction past its cursor ends the stream, with OUT_OF_RANGE, the
//! compaction point and the revision to resume at. The stream also ends
//! when the node stops, read or not.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use futures::StreamExt;
use raftkv_proto::pb;
use raftkv_proto::COMPACT_REVISION_METADATA;
use raftkv_proto::OLDEST_INDEX_METADATA;
use raftkv_proto::RESUME_INDEX_METADATA;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tonic::Status;

use crate::history::hub::Applied;
use crate::history::hub::Behind;
use crate::history::hub::WatchHub;

/// Messages queued for one watcher's stream.
const QUEUED_MESSAGES: usize = 4;
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

/// OUT_OF_RANGE for a start at or before the compaction point.
fn compacted(start: u64, oldest: u64) -> Status {
    status_with(
        tonic::Code::OutOfRange,
        format!(
            "changes before revision {oldest} are compacted (asked from {start}): Scan, then \
             watch from the scan's revision + 1"
        ),
        &[
            (OLDEST_INDEX_METADATA, oldest),
            (COMPACT_REVISION_METADATA, oldest - 1),
        ],
    )
}

/// Why a watch cannot go on, as a status.
fn behind_status(cursor: u64, behind: Behind) -> Status {
    match behind {
        Behind::Compacted { oldest } => fell_behind(cursor, oldest),
        Behind::Storage(message) => status_with(
            tonic::Code::Unavailable,
            format!("this node cannot read its history ({message}); resume from revision {cursor} on another node"),
            &[(RESUME_INDEX_METADATA, cursor)],
        ),
    }
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
            other => behind_status(start_index, other),
        })?;
    let (tx, rx) = mpsc::channel(QUEUED_MESSAGES);
    tokio::spawn(feed(watches.clone(), prefix, cursor, tx));
    // A stopping node ends the stream even if the client reads nothing, so
    // graceful shutdown never waits on a watcher.
    let watches = watches.clone();
    let stop = async move { stopped(&watches).await };
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).take_until(stop);
    Ok(Box::pin(stream))
}

/// The events of `entries` under `prefix`, whole entries up to
/// [`MESSAGE_BYTES`] (an entry bigger than that travels alone, within the
/// message limit: a transaction's keys and values are bounded like one
/// put's); and the index after the last entry taken.
fn events(entries: &[Applied], prefix: &[u8], next: u64) -> (Vec<pb::Event>, u64) {
    let mut events = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        let matching: Vec<_> = entry
            .changes
            .iter()
            .filter(|c| c.key.starts_with(prefix))
            .collect();
        let entry_bytes: usize = matching.iter().map(|c| c.bytes()).sum();
        if !events.is_empty() && bytes + entry_bytes > MESSAGE_BYTES {
            return (events, entry.index);
        }
        bytes += entry_bytes;
        for change in matching {
            let (kind, value) = match &change.value {
                Some(value) => (pb::EventKind::Put, value.clone()),
                None => (pb::EventKind::Delete, Vec::new()),
            };
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

/// Sends the history from `cursor` on, then what gets applied, until the
/// client goes away, a compaction passes it, or the node stops.
async fn feed(
    watches: Watches,
    prefix: Vec<u8>,
    mut cursor: u64,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
) {
    let mut last_sent = tokio::time::Instant::now();
    let mut told = cursor;
    loop {
        let (entries, read_next, read_all) = match watches.hub.read(cursor, MESSAGE_BYTES) {
            Ok(read) => read,
            Err(behind) => {
                end(&watches, &tx, behind_status(cursor, behind)).await;
                return;
            }
        };
        let (events, next) = events(&entries, &prefix, read_next);
        let read_all = read_all && next == read_next;
        drop(entries);
        let progress_due = next > told && last_sent.elapsed() >= PROGRESS_EVERY;
        if !events.is_empty() || progress_due {
            let message = pb::WatchResponse {
                events,
                resume_index: next,
            };
            match deliver(&watches, &tx, message, cursor).await {
                Delivered::Yes => {}
                Delivered::No(Some(status)) => {
                    end(&watches, &tx, status).await;
                    return;
                }
                Delivered::No(None) => return,
            }
            last_sent = tokio::time::Instant::now();
            told = next;
        }
        cursor = next;
        if !read_all {
            continue;
        }
        tokio::select! {
            () = watches.hub.applied_beyond(cursor.saturating_sub(1)) => {}
            () = tokio::time::sleep(PROGRESS_EVERY) => {}
            () = tx.closed() => return,
            () = stopped(&watches) => {
                end(&watches, &tx, stopping(cursor)).await;
                return;
            }
        }
    }
}

/// Whether a message reached the stream's queue; if not, the status to end
/// the stream with (`None`: the client is gone).
enum Delivered {
    Yes,
    No(Option<Status>),
}

/// Queues `message`, which covers the changes from `cursor` on. While the
/// client does not read, checks about once a second whether a compaction
/// has passed `cursor` (then the watcher has fallen behind for good) and
/// whether the node stops.
async fn deliver(
    watches: &Watches,
    tx: &mpsc::Sender<Result<pb::WatchResponse, Status>>,
    message: pb::WatchResponse,
    cursor: u64,
) -> Delivered {
    let send = tx.send(Ok(message));
    tokio::pin!(send);
    loop {
        tokio::select! {
            sent = &mut send => {
                return match sent {
                    Ok(()) => Delivered::Yes,
                    Err(_) => Delivered::No(None),
                };
            }
            () = tokio::time::sleep(PROGRESS_EVERY) => {
                let (oldest, _) = watches.hub.bounds();
                if oldest > cursor {
                    return Delivered::No(Some(fell_behind(cursor, oldest)));
                }
            }
            () = stopped(watches) => return Delivered::No(Some(stopping(cursor))),
        }
    }
}

/// Ends the stream with `status`, once the client has read what is queued
/// before it (or has gone, or the node stops: the server then ends the
/// stream itself).
async fn end(
    watches: &Watches,
    tx: &mpsc::Sender<Result<pb::WatchResponse, Status>>,
    status: Status,
) {
    tokio::select! {
        _ = tx.send(Err(status)) => {}
        () = stopped(watches) => {}
    }
}

/// Resolves once the node is stopping.
async fn stopped(watches: &Watches) {
    let mut stopping = watches.stopping.clone();
    // The guard `wait_for` returns must not live across an await.
    let _ = stopping.wait_for(|stopping| *stopping).await.is_ok();
}

/// OUT_OF_RANGE: a compaction passed `cursor`, the watcher's next revision.
fn fell_behind(cursor: u64, oldest: u64) -> Status {
    status_with(
        tonic::Code::OutOfRange,
        format!(
            "this watcher fell behind: the changes from revision {cursor} on are compacted \
             (oldest kept: {oldest}); Scan and watch from the scan's revision + 1"
        ),
        &[
            (RESUME_INDEX_METADATA, cursor),
            (OLDEST_INDEX_METADATA, oldest),
            (COMPACT_REVISION_METADATA, oldest - 1),
        ],
    )
}

/// UNAVAILABLE: the node stops; resume elsewhere from `cursor`.
fn stopping(cursor: u64) -> Status {
    status_with(
        tonic::Code::Unavailable,
        format!("the node is stopping; resume from index {cursor} on another node"),
        &[(RESUME_INDEX_METADATA, cursor)],
    )
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::history::hub::Change;
    use crate::store::key_weight;
    use crate::store::MAX_LEASE_KEY_BYTES;

    /// The smallest message limit a node has (`NodeConfig::max_message_bytes`
    /// with the smallest key and value limits).
    const SMALLEST_MESSAGE_LIMIT: usize = (4 << 20) + (64 << 10);

    /// The revoke of a lease carrying its whole budget of `key_len`-byte keys.
    fn full_lease_revoke(key_len: usize) -> Applied {
        let mut changes = Vec::new();
        let mut weight = 0;
        let mut i = 0u64;
        loop {
            let mut key = vec![b'k'; key_len];
            let tail = i.to_be_bytes();
            let n = key_len.min(8);
            key[key_len - n..].copy_from_slice(&tail[8 - n..]);
            if weight + key_weight(&key) > MAX_LEASE_KEY_BYTES {
                break;
            }
            weight += key_weight(&key);
            changes.push(Change {
                key,
                value: None,
                create_revision: 0,
                version: 0,
                lease: 0,
            });
            i += 1;
        }
        Applied {
            index: u64::MAX,
            changes,
        }
    }

    #[test]
    fn a_full_leases_revoke_fits_one_watch_message() {
        // 3-byte keys are the shortest that can fill the budget with
        // distinct keys; the longest index makes the largest events.
        for key_len in [3, 16, 100, 4096] {
            let entry = full_lease_revoke(key_len);
            let keys = entry.changes.len();
            let (events, next) = events(&[entry], b"", u64::MAX);
            assert_eq!(events.len(), keys, "one message carries every delete");
            let message = pb::WatchResponse {
                events,
                resume_index: next,
            };
            let bytes = message.encoded_len();
            assert!(
                bytes <= SMALLEST_MESSAGE_LIMIT,
                "{keys} keys of {key_len} bytes: {bytes} bytes"
            );
        }
    }
}
