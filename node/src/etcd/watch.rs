//! etcd's `Watch` service: one bidirectional stream carries many watches.
//! Each watch is a task that reads the node's history (see
//! `history::hub`) from its start revision and sends the events in its key
//! range, whole revisions at a time, into the stream's one queue; a slow
//! client makes the tasks wait, and they carry on from disk. Watches are
//! served by the node asked, from its applied state.
//!
//! As in etcd: a watch created with no start revision starts after the
//! newest revision; one that starts at or before the compaction point, or
//! that a compaction passes, is cancelled with `compact_revision`; the
//! NOPUT and NODELETE filters and `prev_kv` apply per watch; a progress
//! request is answered at once with the node's revision and watch id -1.
//! A revision's events travel in one message; for a watch created with
//! `fragment`, a message over the message limit is split as etcd splits it
//! (see [`fragments`]). A revision's writes are bounded by the message
//! limit when proposed, and a lease's revoke by its key budget (see
//! `store::leases`), which the stream's limit allows for.
//! `progress_notify` watches get an empty message after
//! [`PROGRESS_NOTIFY_EVERY`] without events, etcd's default interval. A
//! watch whose call carries `hasleader: true` is refused with etcd's "no
//! leader" when the node knows no leader.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use futures::StreamExt;
use raftkv_proto::etcd::etcdserverpb as pb;
use raftkv_proto::etcd::etcdserverpb::watch_create_request::FilterType;
use raftkv_proto::etcd::etcdserverpb::watch_request::RequestUnion;
use raftkv_proto::etcd::etcdserverpb::watch_server::Watch;
use raftkv_proto::etcd::mvccpb;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use super::header;
use super::key_value;
use super::signed;
use super::txn::KeyRange;
use crate::grpc::watch::Watches;
use crate::history::hub::Applied;
use crate::history::hub::Behind;
use crate::node::RaftNode;

/// Messages queued for one stream.
const QUEUED_MESSAGES: usize = 16;
/// History read at a time by one watch.
const READ_BYTES: usize = 256 << 10;
/// The request metadata etcd's clients set to need a member with a leader.
pub const HAS_LEADER_METADATA: &str = "hasleader";
/// etcd's default `--experimental-watch-progress-notify-interval`.
pub const PROGRESS_NOTIFY_EVERY: Duration = Duration::from_secs(600);

/// The answers of one stream (the generated service's stream type).
pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;

/// etcd's watch API of one node.
pub struct EtcdWatch {
    node: Arc<RaftNode>,
    watches: Watches,
    /// Largest message a `fragment` watch is sent (see [`fragments`]).
    fragment_bytes: usize,
}

impl EtcdWatch {
    /// The service, splitting `fragment` watches' messages at
    /// `fragment_bytes`.
    pub fn new(node: Arc<RaftNode>, watches: Watches, fragment_bytes: usize) -> EtcdWatch {
        EtcdWatch {
            node,
            watches,
            fragment_bytes,
        }
    }
}

/// What one watch sends.
struct WatchSpec {
    id: i64,
    keys: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    /// Split messages over this many bytes (`None`: send them whole).
    fragment: Option<usize>,
}

type Sender = mpsc::Sender<Result<pb::WatchResponse, Status>>;

#[tonic::async_trait]
impl Watch for EtcdWatch {
    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        // etcd's clients ask for a member that has a leader this way
        // (clientv3.WithRequireLeader), so a watch on a cut-off member fails
        // rather than going silent.
        let requires_leader = request
            .metadata()
            .get(HAS_LEADER_METADATA)
            .is_some_and(|value| value == "true");
        if requires_leader && self.node.metrics().current_leader.is_none() {
            return Err(super::errors::EtcdError::NoLeader.into());
        }
        let requests = request.into_inner();
        let (tx, rx) = mpsc::channel(QUEUED_MESSAGES);
        tokio::spawn(serve(
            self.node.clone(),
            self.watches.clone(),
            self.fragment_bytes,
            requests,
            tx,
        ));
        // A stopping node ends the stream even if the client reads nothing.
        let mut stopping = self.watches.stopping.clone();
        let stop = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).take_until(stop);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Answers the requests of one stream until the client ends it.
async fn serve(
    node: Arc<RaftNode>,
    watches: Watches,
    fragment_bytes: usize,
    mut requests: Streaming<pb::WatchRequest>,
    tx: Sender,
) {
    let mut running: HashMap<i64, JoinHandle<()>> = HashMap::new();
    let mut next_id = 0i64;
    loop {
        let request = tokio::select! {
            request = requests.message() => request,
            () = tx.closed() => break,
        };
        let Ok(Some(request)) = request else { break };
        running.retain(|_, task| !task.is_finished());
        let answer = match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
                let id = match create.watch_id {
                    0 => {
                        while running.contains_key(&next_id) {
                            next_id += 1;
                        }
                        next_id
                    }
                    id => id,
                };
                if running.contains_key(&id) || id < 0 {
                    pb::WatchResponse {
                        header: header(&node, node.revisions().current()),
                        watch_id: id,
                        created: true,
                        canceled: true,
                        cancel_reason: "etcdserver: duplicate watch ID".into(),
                        ..Default::default()
                    }
                } else {
                    let spec = WatchSpec {
                        id,
                        keys: KeyRange {
                            key: create.key.clone(),
                            end: create.range_end.clone(),
                        },
                        no_put: create.filters.contains(&(FilterType::Noput as i32)),
                        no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
                        prev_kv: create.prev_kv,
                        progress_notify: create.progress_notify,
                        fragment: create.fragment.then_some(fragment_bytes),
                    };
                    let start = u64::try_from(create.start_revision).unwrap_or(0);
                    // Created first, so the client knows the id before any event.
                    let created = pb::WatchResponse {
                        header: header(&node, node.revisions().current()),
                        watch_id: id,
                        created: true,
                        ..Default::default()
                    };
                    if tx.send(Ok(created)).await.is_err() {
                        break;
                    }
                    let task =
                        tokio::spawn(feed(node.clone(), watches.clone(), spec, start, tx.clone()));
                    running.insert(id, task);
                    continue;
                }
            }
            Some(RequestUnion::CancelRequest(cancel)) => {
                let Some(task) = running.remove(&cancel.watch_id) else {
                    continue;
                };
                task.abort();
                pb::WatchResponse {
                    header: header(&node, node.revisions().current()),
                    watch_id: cancel.watch_id,
                    canceled: true,
                    ..Default::default()
                }
            }
            Some(RequestUnion::ProgressRequest(_)) => pb::WatchResponse {
                header: header(&node, node.revisions().current()),
                watch_id: -1,
                ..Default::default()
            },
            None => continue,
        };
        if tx.send(Ok(answer)).await.is_err() {
            break;
        }
    }
    for task in running.into_values() {
        task.abort();
    }
}

/// The events of `entries` that `spec` sends, each revision's together.
fn events(
    node: &RaftNode,
    spec: &WatchSpec,
    entries: Vec<Applied>,
) -> Vec<(u64, Vec<mvccpb::Event>)> {
    let reader = node.kv();
    entries
        .into_iter()
        .map(|entry| {
            let revision = entry.index;
            let events = entry
                .changes
                .into_iter()
                .filter(|change| spec.keys.contains(&change.key))
                .filter(|change| !(change.value.is_some() && spec.no_put))
                .filter(|change| !(change.value.is_none() && spec.no_delete))
                .map(|change| {
                    let prev_kv = spec
                        .prev_kv
                        .then(|| reader.get(&change.key, Some(revision - 1)).ok())
                        .flatten()
                        .and_then(|(found, _)| found)
                        .map(|stored| key_value(change.key.clone(), stored));
                    let deleted = change.value.is_none();
                    let kv = mvccpb::KeyValue {
                        key: change.key,
                        create_revision: signed(change.create_revision),
                        mod_revision: signed(revision),
                        version: signed(change.version),
                        value: change.value.unwrap_or_default(),
                        lease: signed(change.lease),
                    };
                    let kind = if deleted {
                        mvccpb::event::EventType::Delete
                    } else {
                        mvccpb::event::EventType::Put
                    };
                    mvccpb::Event {
                        r#type: kind.into(),
                        kv: Some(kv),
                        prev_kv,
                    }
                })
                .collect();
            (revision, events)
        })
        .collect()
}

/// `message` in the parts it is sent in: whole, unless a limit is given,
/// it is over that limit and it has more than one event; then in parts
/// each within the limit (or of one event, if that event alone is over
/// it), every part but the last marked `fragment`. The rule of etcd's
/// `sendFragments`, so its clients put the revision back together.
fn fragments(message: pb::WatchResponse, limit: Option<usize>) -> Vec<pb::WatchResponse> {
    use prost::Message;
    let Some(limit) = limit else {
        return vec![message];
    };
    if message.encoded_len() <= limit || message.events.len() < 2 {
        return vec![message];
    }
    // An event's bytes in the message: its field tag (events = 11, one
    // byte), its length, itself.
    let event_bytes = |event: &mvccpb::Event| {
        let len = event.encoded_len();
        1 + prost::length_delimiter_len(len) + len
    };
    let mut rest = message;
    let events = std::mem::take(&mut rest.events);
    rest.fragment = true;
    let empty = rest.encoded_len();
    let mut parts = Vec::new();
    let mut part = rest.clone();
    let mut bytes = empty;
    for event in events {
        let more = event_bytes(&event);
        if !part.events.is_empty() && bytes + more > limit {
            parts.push(std::mem::replace(&mut part, rest.clone()));
            bytes = empty;
        }
        bytes += more;
        part.events.push(event);
    }
    part.fragment = false;
    parts.push(part);
    parts
}

/// Sends watch `spec`'s events from `start` (0: after the newest revision)
/// until it is cancelled, a compaction passes it, or the client goes.
async fn feed(node: Arc<RaftNode>, watches: Watches, spec: WatchSpec, start: u64, tx: Sender) {
    // Why the watch cannot go on, as its last message: etcd's cancel with
    // the compaction point, or the stream's end.
    let ended = |behind: Behind| match behind {
        Behind::Compacted { oldest } => Ok(pb::WatchResponse {
            header: header(&node, node.revisions().current()),
            watch_id: spec.id,
            canceled: true,
            compact_revision: signed(oldest - 1),
            ..Default::default()
        }),
        Behind::Storage(message) => Err(Status::unavailable(message)),
    };
    let mut cursor = match watches.hub.start_at(start) {
        Ok(cursor) => cursor,
        Err(behind) => {
            let _ = tx.send(ended(behind)).await;
            return;
        }
    };
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        let (entries, next, read_all) = match watches.hub.read(cursor, READ_BYTES) {
            Ok(read) => read,
            Err(behind) => {
                let _ = tx.send(ended(behind)).await;
                return;
            }
        };
        for (revision, events) in events(&node, &spec, entries) {
            if events.is_empty() {
                continue;
            }
            let message = pb::WatchResponse {
                header: header(&node, revision),
                watch_id: spec.id,
                events,
                ..Default::default()
            };
            for part in fragments(message, spec.fragment) {
                if tx.send(Ok(part)).await.is_err() {
                    return;
                }
            }
            quiet_since = tokio::time::Instant::now();
        }
        cursor = next;
        if !read_all {
            continue;
        }
        if spec.progress_notify && quiet_since.elapsed() >= PROGRESS_NOTIFY_EVERY {
            let progress = pb::WatchResponse {
                header: header(&node, cursor.saturating_sub(1)),
                watch_id: spec.id,
                ..Default::default()
            };
            if tx.send(Ok(progress)).await.is_err() {
                return;
            }
            quiet_since = tokio::time::Instant::now();
        }
        tokio::select! {
            () = watches.hub.applied_beyond(cursor.saturating_sub(1)) => {}
            () = tokio::time::sleep(PROGRESS_NOTIFY_EVERY) => {}
            () = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn message(values: &[usize]) -> pb::WatchResponse {
        let events = values
            .iter()
            .enumerate()
            .map(|(i, len)| mvccpb::Event {
                r#type: mvccpb::event::EventType::Delete.into(),
                kv: Some(mvccpb::KeyValue {
                    key: format!("k{i}").into_bytes(),
                    mod_revision: 9,
                    ..Default::default()
                }),
                prev_kv: Some(mvccpb::KeyValue {
                    key: format!("k{i}").into_bytes(),
                    value: vec![b'v'; *len],
                    ..Default::default()
                }),
            })
            .collect();
        pb::WatchResponse {
            watch_id: 3,
            events,
            ..Default::default()
        }
    }

    #[test]
    fn a_message_over_the_limit_is_split_as_etcd_splits_it() {
        let whole = message(&[400, 400, 400, 400, 400]);
        // Whole: no limit asked, under the limit, or a single event.
        assert_eq!(fragments(whole.clone(), None), vec![whole.clone()]);
        assert_eq!(fragments(whole.clone(), Some(1 << 20)), vec![whole.clone()]);
        let single = message(&[5000]);
        assert_eq!(fragments(single.clone(), Some(100)), vec![single]);

        let parts = fragments(whole.clone(), Some(1000));
        assert_eq!(parts.len(), 3, "two events of ~420 bytes per part");
        for part in &parts {
            assert!(part.encoded_len() <= 1000, "{}", part.encoded_len());
            assert_eq!(part.watch_id, 3);
        }
        let marks: Vec<bool> = parts.iter().map(|p| p.fragment).collect();
        assert_eq!(marks, [true, true, false]);
        let events: Vec<_> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(events, whole.events, "every event once, in order");

        // An event larger than the limit travels alone.
        let parts = fragments(message(&[100, 5000, 100]), Some(1000));
        let sizes: Vec<usize> = parts.iter().map(|p| p.events.len()).collect();
        assert_eq!(sizes, [1, 1, 1]);
    }
}
