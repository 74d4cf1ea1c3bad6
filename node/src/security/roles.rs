//! Roles from certificates. With TLS on, a caller's role is fixed when its
//! connection is accepted, from its certificate's common name:
//!
//! | common name        | role     | may call                                  |
//! |--------------------|----------|-------------------------------------------|
//! | `--peer-cn`        | node     | raftkv.Raft, raftkv.Admin, raftkv.KV      |
//! | one of `--admin-cn`| admin    | raftkv.Admin, raftkv.KV                   |
//! | any other          | client   | raftkv.KV                                 |
//!
//! Health and reflection are open to every caller the handshake let in.
//! Without TLS nobody is authenticated and every call is allowed.

use std::fmt;

use tonic::service::Interceptor;
use tonic::Request;
use tonic::Status;

/// What a caller may do; each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads and writes keys.
    Client,
    /// Also steers the cluster (membership, leadership, snapshots, shutdown).
    Admin,
    /// Another node of the cluster: also Raft's own messages.
    Node,
}

impl Role {
    /// The role named as [`fmt::Display`] writes it.
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "client" => Some(Role::Client),
            "admin" => Some(Role::Admin),
            "node" => Some(Role::Node),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Client => "client",
            Role::Admin => "admin",
            Role::Node => "node",
        })
    }
}

/// Which common names give which role (`--peer-cn`, `--admin-cn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolePolicy {
    pub node: String,
    pub admins: Vec<String>,
}

impl RolePolicy {
    /// The role of a certificate whose subject's common name is `name`
    /// (`None`: it has no single one, and gets the least role).
    pub fn role_of(&self, name: Option<&str>) -> Role {
        match name {
            Some(name) if name == self.node => Role::Node,
            Some(name) if self.admins.iter().any(|admin| admin == name) => Role::Admin,
            _ => Role::Client,
        }
    }

    /// The names a role needs, for refusals.
    fn names_for(&self, role: Role) -> String {
        match role {
            Role::Node => format!("{:?}", self.node),
            Role::Admin => {
                let mut names: Vec<String> =
                    self.admins.iter().map(|name| format!("{name:?}")).collect();
                names.push(format!("{:?}", self.node));
                names.join(" or ")
            }
            Role::Client => "any name".to_string(),
        }
    }
}

/// Who is at the other end of a TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The common name of the certificate it presented.
    pub common_name: Option<String>,
    pub role: Role,
}

/// The check a service makes on every call before it runs: the caller's
/// role must be at least `required`. Refusals are `PERMISSION_DENIED`, naming
/// the role and certificate names needed.
#[derive(Debug, Clone)]
pub struct Authorize {
    service: &'static str,
    required: Role,
    policy: RolePolicy,
}

impl Authorize {
    /// Calls to `service` need the role `required`, named as `policy` says.
    pub fn new(service: &'static str, required: Role, policy: RolePolicy) -> Authorize {
        Authorize {
            service,
            required,
            policy,
        }
    }
}

/// Who made a call, as its connection knows it: the identity its
/// certificate proves, or `None` when TLS is off. Put on every call by the
/// connection layer (`network::calls::TrackCalls`).
#[derive(Debug, Clone)]
pub struct Caller(pub Option<std::sync::Arc<Identity>>);

impl Interceptor for Authorize {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        require(
            request.extensions().get::<Caller>(),
            self.required,
            self.service,
            &self.policy,
        )?;
        Ok(request)
    }
}

/// Whether the caller of a call to `what` (a service or a method) has the
/// role `required`; refusals are `PERMISSION_DENIED`, naming the role and
/// certificate names needed. For services whose methods need different
/// roles, called by the handler; [`Authorize`] makes it for a whole service.
pub fn require(
    caller: Option<&Caller>,
    required: Role,
    what: &str,
    policy: &RolePolicy,
) -> Result<(), Status> {
    // A call that did not come through the connection layer has no caller
    // at all: refused, so a change in how the server is layered cannot open
    // it up. A caller without identity: TLS is off, nobody is authenticated.
    let identity = match caller {
        None => {
            return Err(Status::permission_denied(
                "the caller of this call is unknown; refused",
            ))
        }
        Some(Caller(None)) => return Ok(()),
        Some(Caller(Some(identity))) => identity,
    };
    if identity.role >= required {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "{what} needs the {required} role (a certificate with common name {}); this certificate ({}) has the {} role",
        policy.names_for(required),
        identity
            .common_name
            .as_deref()
            .map_or_else(|| "no common name".to_string(), |name| format!("common name {name:?}")),
        identity.role,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_the_common_name() {
        let policy = RolePolicy {
            node: "node".into(),
            admins: vec!["admin".into(), "ops".into()],
        };
        assert_eq!(policy.role_of(Some("node")), Role::Node);
        assert_eq!(policy.role_of(Some("ops")), Role::Admin);
        assert_eq!(policy.role_of(Some("admin")), Role::Admin);
        assert_eq!(policy.role_of(Some("Node")), Role::Client);
        assert_eq!(policy.role_of(None), Role::Client);
        assert!(Role::Node > Role::Admin && Role::Admin > Role::Client);
    }
}
