//! The gRPC services a node serves on its one port, with the layers in
//! front of them: call tracking for every service; for `raftkv.Admin` and
//! `raftkv.Raft`, the role check; behind it, for `raftkv.KV`,
//! `raftkv.Admin` and etcd's `KV`, route-and-forward (see `grpc::routing`).

use std::sync::Arc;
use std::time::Duration;

use raftkv_proto::etcd::etcdserverpb::auth_server::AuthServer as EtcdAuthServer;
use raftkv_proto::etcd::etcdserverpb::cluster_server::ClusterServer as EtcdClusterServer;
use raftkv_proto::etcd::etcdserverpb::kv_server::KvServer as EtcdKvServer;
use raftkv_proto::etcd::etcdserverpb::lease_server::LeaseServer as EtcdLeaseServer;
use raftkv_proto::etcd::etcdserverpb::maintenance_server::MaintenanceServer as EtcdMaintenanceServer;
use raftkv_proto::etcd::etcdserverpb::watch_server::WatchServer as EtcdWatchServer;
use raftkv_proto::pb::admin_server::AdminServer;
use raftkv_proto::pb::kv_server::KvServer;
use raftkv_proto::pb::raft_server::RaftServer;
use raftkv_proto::FILE_DESCRIPTOR_SET;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Router;
use tonic_health::server::HealthReporter;

use crate::cluster::failover::LeaderLink;
use crate::config::NodeConfig;
use crate::etcd::auth::EtcdAuth;
use crate::etcd::cluster::EtcdCluster;
use crate::etcd::kv::EtcdKv;
use crate::etcd::lease::EtcdLease;
use crate::etcd::maintenance::EtcdMaintenance;
use crate::etcd::watch::EtcdWatch;
use crate::grpc::admin::AdminService;
use crate::grpc::forwarding::ForwardTargets;
use crate::grpc::forwarding::FORWARD_OVERHEAD_BYTES;
use crate::grpc::kv::KvService;
use crate::grpc::raft::RaftService;
use crate::grpc::routing::routed;
use crate::grpc::watch::Watches;
use crate::network::calls::TrackCalls;
use crate::node::RaftNode;
use crate::security::Authorize;
use crate::security::Role;
use crate::security::RolePolicy;

/// Largest snapshot a node accepts from a peer.
const MAX_SNAPSHOT_BYTES: u64 = 4 << 30;

/// HTTP/2 pings to callers, and how long an answer may take: a caller that
/// vanished without closing its connection is dropped within both.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The services behind their layers, ready to serve.
pub type Served = Router<tower_layer::Stack<TrackCalls, tower_layer::Identity>>;

/// What the services are built over.
pub struct ServiceParts {
    pub node: Arc<RaftNode>,
    pub watches: Watches,
    pub leader_link: Arc<LeaderLink>,
    pub policy: RolePolicy,
}

/// Every service, ready to serve; and the health reporter that says
/// whether this node leads (see `grpc::health`).
pub fn build(
    config: &NodeConfig,
    parts: ServiceParts,
) -> Result<(Served, HealthReporter), tonic_reflection::server::Error> {
    let ServiceParts {
        node,
        watches,
        leader_link,
        policy,
    } = parts;
    let max_message = config.max_message_bytes();
    let kv = routed(
        KvServer::new(KvService::new(node.clone(), watches.clone()))
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message),
        node.clone(),
        crate::grpc::kv::placement,
    );
    let etcd_kv = routed(
        EtcdKvServer::new(EtcdKv::new(node.clone(), max_message))
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message),
        node.clone(),
        crate::etcd::kv::placement,
    );
    // One revision's events travel in one message unless the watch asks
    // for fragments: room for a full lease's revoke (its delete events take
    // at most 1.4 times the lease's key weight, for 3-byte keys) beyond
    // the largest write.
    let watch_message = max_message + 2 * crate::store::MAX_LEASE_KEY_BYTES as usize;
    let etcd_watch = routed(
        EtcdWatchServer::new(EtcdWatch::new(node.clone(), watches.clone(), max_message))
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(watch_message),
        node.clone(),
        |_| crate::grpc::routing::Placement::Here,
    );
    let etcd_lease = routed(
        EtcdLeaseServer::new(EtcdLease::new(node.clone())),
        node.clone(),
        crate::etcd::lease::placement,
    );
    let etcd_maintenance = routed(
        EtcdMaintenanceServer::new(EtcdMaintenance::new(node.clone(), policy.clone())),
        node.clone(),
        crate::etcd::maintenance::placement,
    );
    let etcd_cluster = routed(
        EtcdClusterServer::new(EtcdCluster::new(
            node.clone(),
            config.tls_cert.is_some(),
            policy.clone(),
        )),
        node.clone(),
        crate::etcd::cluster::placement,
    );
    // Calls followers forward on their streams reach the same services.
    let forward_targets = ForwardTargets {
        node: node.clone(),
        kv: kv.clone(),
        etcd_kv: etcd_kv.clone(),
        max_answer_bytes: max_message + FORWARD_OVERHEAD_BYTES,
    };
    let admin = InterceptedService::new(
        routed(
            AdminServer::new(AdminService::new(node.clone())),
            node.clone(),
            crate::grpc::admin::placement,
        ),
        Authorize::new("raftkv.Admin", Role::Admin, policy.clone()),
    );
    let raft = InterceptedService::new(
        RaftServer::new(RaftService::new(
            node.raft().clone(),
            MAX_SNAPSHOT_BYTES,
            config.data_dir.clone(),
            leader_link,
            watches.stopping,
            forward_targets,
        ))
        .max_decoding_message_size(max_message + FORWARD_OVERHEAD_BYTES)
        .max_encoding_message_size(max_message + FORWARD_OVERHEAD_BYTES),
        Authorize::new("raftkv.Raft", Role::Node, policy),
    );
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(config.max_streams)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(TrackCalls)
        .add_service(kv)
        .add_service(etcd_kv)
        .add_service(etcd_watch)
        .add_service(etcd_lease)
        .add_service(etcd_maintenance)
        .add_service(etcd_cluster)
        .add_service(EtcdAuthServer::new(EtcdAuth::new(node.clone())))
        .add_service(admin)
        .add_service(raft)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok((router, health_reporter))
}

/// Server reflection over every service served, so `grpcurl` needs no
/// `.proto` files.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(raftkv_proto::etcd::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}
