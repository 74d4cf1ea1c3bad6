//! etcd's `Auth` service. raftkv's security is mutual TLS with roles (see
//! `security`), not etcd's users, passwords and tokens, so etcd's auth is
//! always disabled here: `AuthStatus` says so, `AuthDisable` has nothing
//! to do, `AuthEnable` is refused as etcd refuses it without a root user,
//! and every user, role and token call is refused with etcd's "not
//! enabled" error. Nothing in this service changes state.

use std::sync::Arc;

use raftkv_proto::etcd::etcdserverpb as pb;
use raftkv_proto::etcd::etcdserverpb::auth_server::Auth;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::errors::EtcdError;
use super::header;
use crate::node::RaftNode;

/// etcd's auth API of one node: always disabled.
pub struct EtcdAuth {
    node: Arc<RaftNode>,
}

impl EtcdAuth {
    pub fn new(node: Arc<RaftNode>) -> EtcdAuth {
        EtcdAuth { node }
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        header(&self.node, self.node.revisions().current())
    }
}

#[tonic::async_trait]
impl Auth for EtcdAuth {
    async fn auth_status(
        &self,
        _: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        Ok(Response::new(pb::AuthStatusResponse {
            header: self.header(),
            enabled: false,
            auth_revision: 0,
        }))
    }

    async fn auth_disable(
        &self,
        _: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        Ok(Response::new(pb::AuthDisableResponse {
            header: self.header(),
        }))
    }

    async fn auth_enable(
        &self,
        _: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        Err(EtcdError::RootUserNotExist.into())
    }

    // Users, roles and tokens: refused, auth is not enabled.
    async fn authenticate(
        &self,
        _: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn user_add(
        &self,
        _: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn user_get(
        &self,
        _: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn user_list(
        &self,
        _: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn user_delete(
        &self,
        _: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn user_change_password(
        &self,
        _: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn user_grant_role(
        &self,
        _: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn user_revoke_role(
        &self,
        _: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn role_add(
        &self,
        _: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn role_get(
        &self,
        _: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn role_list(
        &self,
        _: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn role_delete(
        &self,
        _: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn role_grant_permission(
        &self,
        _: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn role_revoke_permission(
        &self,
        _: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        Err(EtcdError::AuthNotEnabled.into())
    }
}
