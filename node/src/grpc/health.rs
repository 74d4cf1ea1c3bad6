//! The standard gRPC health service. Besides the server as a whole (`""`) it
//! reports `raftkv.Leader`: SERVING only on the node that currently leads, so
//! a load balancer or a plain health probe can find the leader.

use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::ServerState;
use raftkv_proto::pb::kv_server::KvServer;
use raftkv_proto::LEADER_HEALTH_SERVICE;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::grpc::kv::KvService;
use crate::node::Raft;

/// Keeps `raftkv.Leader` in step with this node's role until Raft stops.
pub async fn track_leadership(raft: Raft, reporter: HealthReporter) {
    reporter.set_serving::<KvServer<KvService>>().await;
    // The server metrics change with role and leader only, not with
    // every write as `Raft::metrics` does: no wake-up per write.
    let mut metrics = raft.server_metrics();
    let mut serving = None;
    loop {
        let leading = {
            let m = metrics.borrow_and_update();
            m.state == ServerState::Leader && m.current_leader == Some(m.id)
        };
        if serving != Some(leading) {
            let status = if leading {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter
                .set_service_status(LEADER_HEALTH_SERVICE, status)
                .await;
            tracing::info!(leading, "leader health status updated");
            serving = Some(leading);
        }
        if metrics.changed().await.is_err() {
            break;
        }
    }
    reporter
        .set_service_status(LEADER_HEALTH_SERVICE, ServingStatus::NotServing)
        .await;
    reporter.set_not_serving::<KvServer<KvService>>().await;
}
