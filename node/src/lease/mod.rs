//! Leases, in one place: a lease is a TTL that keys can be attached to;
//! when it ends (revoked, or expired on the leader's clock) its keys are
//! deleted through the log.
//!
//! - [`calls`]: grant, revoke, keep-alive, time-to-live on the node;
//! - [`countdowns`]: the leader's countdowns, when each lease expires;
//! - [`expiry`]: the leader's task that proposes the revoke of expired leases;
//! - the lease table itself is storage: `store::leases` (grants and revokes
//!   applied at a revision, the keys attached to each lease, the bound on
//!   them), applied by `store::apply`.
//!
//! Not to be confused with openraft's *leader tenure* (`election_timeout_max`:
//! how long followers refuse to elect another leader after hearing from
//! this one), which `cluster::failover` deals with.
//!
//! Expiry is decided by the leader alone, on its monotonic clock; no
//! deadline is stored or replicated, only grants and revokes are (see
//! `store::leases`). The rules:
//! - A new leader starts counting only after a read fence, which waits until
//!   it has applied everything before its own first entry. So a revoke an
//!   earlier leader proposed is applied before this leader answers a single
//!   keep-alive, and a lease it renews cannot be ended by a leftover entry.
//! - It then starts every lease's countdown at the lease's full TTL. A
//!   lease can outlive its TTL by up to one failover; a failover never cuts
//!   it short.
//! - A lease granted later starts when the leader sees the grant applied, or
//!   at its first keep-alive, whichever comes first.
//! - At zero the leader proposes the lease's revoke (marked `expired`). From
//!   then on keep-alives for it are refused as not found, since the revoke
//!   may already be committed. A proposal that fails is proposed again on
//!   the next tick (a revoke of a lease already gone changes nothing).
//! - A node that stops leading drops every countdown.

pub mod calls;
pub mod countdowns;
pub mod expiry;

pub use calls::LeaseStatus;
pub use countdowns::Countdowns;
pub use countdowns::KeepAlive;
pub use countdowns::Remaining;
pub use expiry::run;
