//! Who may connect and what they may call.
//!
//! - [`tls`]: the node's certificate, key and CA, loaded into rustls and
//!   reloaded on SIGHUP without a restart;
//! - [`certificate`]: the subject's common name of a peer's certificate;
//! - [`roles`]: the role that common name gives (node, admin, client) and the
//!   check each service makes before a call runs.
//!
//! With TLS on, every connection is mutual TLS: the handshake proves that the
//! caller holds a certificate signed by the cluster's CA, and the certificate's
//! common name decides which services it may call (CockroachDB's convention).

pub mod certificate;
pub mod roles;
pub mod tls;

pub use roles::require;
pub use roles::Authorize;
pub use roles::Caller;
pub use roles::Identity;
pub use roles::Role;
pub use roles::RolePolicy;
pub use tls::Tls;
pub use tls::TlsError;
