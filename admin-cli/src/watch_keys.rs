//! `watch_keys [PREFIX]`: print every change under a prefix as it is applied
//! (one line, or one JSON document with `--json`, per change), like
//! `etcdctl watch --prefix`.
//!
//! It watches the addressed node (with `--leader`/`--endpoints`, the first
//! one that answers) and, if that node goes away, resumes on the next from
//! the last index it printed, so nothing is missed or printed twice. A start
//! before the node's history fails with the oldest index it keeps.

use std::time::Duration;

use anyhow::bail;
use raftkv_client::ClientError;
use raftkv_proto::pb;
use raftkv_proto::OLDEST_INDEX_METADATA;
use raftkv_proto::RESUME_INDEX_METADATA;
use serde_json::json;
use tonic::Code;

use crate::target::Target;

/// Pause before trying the next node after one went away.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

fn metadata_index(status: &tonic::Status, key: &str) -> Option<u64> {
    status.metadata().get(key)?.to_str().ok()?.parse().ok()
}

fn print(event: &pb::Event, json: bool) {
    let key = String::from_utf8_lossy(&event.key);
    let deleted = event.kind == pb::EventKind::Delete as i32;
    let value = String::from_utf8_lossy(&event.value);
    match (json, deleted) {
        (true, _) => println!(
            "{}",
            json!({
                "index": event.index,
                "kind": if deleted { "delete" } else { "put" },
                "key": key,
                "value": (!deleted).then_some(value),
            })
        ),
        (false, true) => println!("{} DELETE {key}", event.index),
        (false, false) => println!("{} PUT {key} {value}", event.index),
    }
}

/// watch_keys: runs until interrupted, or until `count` changes were printed.
pub async fn watch_keys(
    target: &mut Target,
    prefix: String,
    from: u64,
    count: u64,
) -> anyhow::Result<()> {
    let endpoints = target.client.endpoints().to_vec();
    let mut start = from;
    let mut printed = 0;
    // Every node in turn, each until it goes away; a full round in which no
    // node answered gives up after --timeout.
    let mut failed_since: Option<tokio::time::Instant> = None;
    let mut last_error = String::new();
    for address in endpoints.iter().cycle() {
        if failed_since.is_some_and(|since| since.elapsed() > target.timeout()) {
            bail!("no node serves the watch: {last_error}");
        }
        let connected = target
            .client
            .node(address)?
            .watch(prefix.clone(), start)
            .await;
        let mut stream = match connected {
            Ok(stream) => stream,
            Err(error) if error.code() == Some(Code::OutOfRange) => {
                let oldest = error
                    .status()
                    .and_then(|status| metadata_index(status, OLDEST_INDEX_METADATA));
                bail!(
                    "{address} no longer keeps changes from index {start} (oldest kept: {}): read \
                     the keys with scan, then watch from its applied index + 1",
                    oldest.map_or("unknown".into(), |o| o.to_string())
                );
            }
            Err(error) if matches!(error.error, ClientError::Timeout(_)) => {
                last_error = format!("{address}: no answer within {:?}", target.timeout());
                failed_since.get_or_insert_with(tokio::time::Instant::now);
                continue;
            }
            Err(error) => {
                last_error = format!("{address}: {error}");
                failed_since.get_or_insert_with(tokio::time::Instant::now);
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        failed_since = None;
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    for event in &message.events {
                        print(event, target.json);
                        printed += 1;
                        if count > 0 && printed >= count {
                            return Ok(());
                        }
                    }
                    start = message.resume_index;
                }
                Ok(None) => break,
                Err(status) if status.code() == Code::OutOfRange => {
                    let resume = metadata_index(&status, RESUME_INDEX_METADATA).unwrap_or(start);
                    let oldest = metadata_index(&status, OLDEST_INDEX_METADATA);
                    bail!(
                        "this watch fell behind {address} at index {resume}: the history before \
                         it was compacted (oldest kept: {}); read the keys with scan, then watch \
                         from its applied index + 1",
                        oldest.map_or("unknown".into(), |o| o.to_string())
                    );
                }
                Err(status) => {
                    // The node stopped or went away: resume elsewhere.
                    last_error = format!("{address}: {}", raftkv_client::describe_status(&status));
                    eprintln!("{address} stopped serving the watch; resuming from index {start}");
                    break;
                }
            }
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
    unreachable!("the endpoint list is never empty")
}
