//! `status`: one row per node, like `etcdctl endpoint status` plus lag;
//! and the collection of every node's status that `top` refreshes.

use std::time::SystemTime;

use raftkv_client::role_name;
use raftkv_client::ClientError;
use raftkv_proto::pb;
use serde_json::json;

use crate::configuration::configuration;
use crate::target::Target;

/// What one endpoint said.
pub(crate) struct Row {
    /// The address as given (or as the configuration lists it).
    pub endpoint: String,
    /// Its status, or why it gave none.
    pub status: Result<pb::NodeStatus, String>,
}

/// The nodes to show: the given endpoints, or, for a single ADDR, every
/// member of the configuration it knows.
pub(crate) async fn endpoints(target: &mut Target) -> Vec<String> {
    let mut endpoints = target.client.endpoints().to_vec();
    if !target.follow_leader {
        if let Ok(config) = configuration(target).await {
            for member in config.members {
                if !endpoints.contains(&member.address) {
                    endpoints.push(member.address);
                }
            }
        }
    }
    endpoints
}

/// Asks every endpoint for its status at once, each within `--timeout`; a
/// node that does not answer becomes a row with the reason.
pub(crate) async fn collect(target: &Target, endpoints: &[String]) -> Vec<Row> {
    let asks = endpoints.iter().map(|endpoint| async move {
        let status = match target.client.node(endpoint) {
            Ok(node) => node.status().await.map_err(|e| e.error),
            Err(e) => Err(e),
        };
        let status = status.map_err(|e| match e {
            ClientError::Timeout(timeout) => format!("no answer within {timeout:?}"),
            e => e.to_string(),
        });
        Row {
            endpoint: endpoint.clone(),
            status,
        }
    });
    futures::future::join_all(asks).await
}

/// How far `status` trails the leader's log, if a leader answered.
fn lag(rows: &[Row], status: &pb::NodeStatus) -> Option<u64> {
    let leader = rows
        .iter()
        .filter_map(|r| r.status.as_ref().ok())
        .find(|s| s.role == pb::Role::Leader as i32)?;
    Some(
        leader
            .last_log_index?
            .saturating_sub(status.last_log_index.unwrap_or(0)),
    )
}

/// The release a node runs: what it says, or 0.1 for a node that says
/// nothing (releases before 0.2 did not).
fn version(status: &pb::NodeStatus) -> &str {
    if status.version.is_empty() {
        "0.1"
    } else {
        &status.version
    }
}

/// The cluster version a node applied (`-` from a 0.1 node, which has none).
fn cluster_version(status: &pb::NodeStatus) -> &str {
    if status.cluster_version.is_empty() {
        "-"
    } else {
        &status.cluster_version
    }
}

/// A table cell for the leader a node knows (`-`: none).
pub(crate) fn leader_cell(status: &pb::NodeStatus) -> String {
    if status.leader_id == 0 {
        "-".into()
    } else {
        status.leader_id.to_string()
    }
}

/// A table cell for an index that may not exist yet.
pub(crate) fn cell(value: Option<u64>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The rows as `status --json` prints them; `role` in the words of `role_name`.
fn rows_json(rows: &[Row]) -> serde_json::Value {
    let endpoints: Vec<_> = rows
        .iter()
        .map(|row| match &row.status {
            Ok(s) => json!({
                "endpoint": row.endpoint,
                "id": s.id,
                "address": s.address,
                "role": role_name(s.role),
                "term": s.term,
                "leader_id": s.leader_id,
                "last_log_index": s.last_log_index,
                "commit_index": s.committed_index,
                "applied_index": s.applied_index,
                "snapshot_index": s.snapshot_index,
                "lag": lag(rows, s),
                "version": version(s),
                "cluster_version": (!s.cluster_version.is_empty()).then_some(&s.cluster_version),
                "error": null,
            }),
            Err(e) => json!({ "endpoint": row.endpoint, "error": e }),
        })
        .collect();
    json!({ "endpoints": endpoints })
}

/// Renders the table.
fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<22} {:>4} {:<10} {:>5} {:>6} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7} {:>7}  {}\n",
        "ENDPOINT",
        "ID",
        "ROLE",
        "TERM",
        "LEADER",
        "LAST",
        "COMMIT",
        "APPLIED",
        "SNAPSHOT",
        "LAG",
        "VERSION",
        "CLUSTER",
        "ERROR"
    );
    for row in rows {
        let line = match &row.status {
            Ok(s) => format!(
                "{:<22} {:>4} {:<10} {:>5} {:>6} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7} {:>7}",
                row.endpoint,
                s.id,
                role_name(s.role),
                s.term,
                leader_cell(s),
                cell(s.last_log_index),
                cell(s.committed_index),
                cell(s.applied_index),
                cell(s.snapshot_index),
                cell(lag(rows, s)),
                version(s),
                cluster_version(s),
            ),
            Err(e) => format!(
                "{:<22} {:>4} {:<10} {:>5} {:>6} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7} {:>7}  {e}",
                row.endpoint, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-"
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// status: the table once; fails if any endpoint did not answer, so a
/// script notices a node that is down.
pub async fn status(target: &mut Target) -> anyhow::Result<()> {
    let endpoints = endpoints(target).await;
    let rows = collect(target, &endpoints).await;
    if target.json {
        println!("{}", rows_json(&rows));
    } else {
        print!("{}", table(&rows));
    }
    let failed = rows.iter().filter(|r| r.status.is_err()).count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} endpoints did not answer", rows.len());
    }
    Ok(())
}

/// The wall-clock time of day (UTC), to date top's refreshes.
pub(crate) fn clock() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_millis()
    )
}
