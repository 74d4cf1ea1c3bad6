//! etcd's errors, as etcd's clients expect them. Here, and only here,
//! outcomes travel as message text: etcd's clients decide on the exact
//! text of some errors (clientv3's `rpctypes.ErrorDesc` and the table
//! behind `errStringToError`), so the text is part of the protocol. Each
//! row is etcd v3.5's `api/v3rpc/rpctypes/error.go`.

use tonic::Code;
use tonic::Status;

use crate::error::NodeError;

/// The etcd errors a node answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdError {
    EmptyKey,
    KeyNotFound,
    ValueProvided,
    LeaseProvided,
    TooManyOps,
    DuplicateKey,
    Compacted,
    FutureRev,
    NoSpace,
    LeaseNotFound,
    LeaseExist,
    LeaseTtlTooLarge,
    RequestTooLarge,
    NoLeader,
    NotLeader,
    LeaderChanged,
    Stopped,
    Timeout,
    TimeoutDueToLeaderFail,
    Unhealthy,
    AuthNotEnabled,
    RootUserNotExist,
    BadLeaderTransferee,
    MemberNotFound,
    MemberNotLearner,
    PeerUrlExist,
    MemberBadUrls,
}

/// Every row, for the tests.
pub const ALL: [EtcdError; 27] = [
    EtcdError::EmptyKey,
    EtcdError::KeyNotFound,
    EtcdError::ValueProvided,
    EtcdError::LeaseProvided,
    EtcdError::TooManyOps,
    EtcdError::DuplicateKey,
    EtcdError::Compacted,
    EtcdError::FutureRev,
    EtcdError::NoSpace,
    EtcdError::LeaseNotFound,
    EtcdError::LeaseExist,
    EtcdError::LeaseTtlTooLarge,
    EtcdError::RequestTooLarge,
    EtcdError::NoLeader,
    EtcdError::NotLeader,
    EtcdError::LeaderChanged,
    EtcdError::Stopped,
    EtcdError::Timeout,
    EtcdError::TimeoutDueToLeaderFail,
    EtcdError::Unhealthy,
    EtcdError::AuthNotEnabled,
    EtcdError::RootUserNotExist,
    EtcdError::BadLeaderTransferee,
    EtcdError::MemberNotFound,
    EtcdError::MemberNotLearner,
    EtcdError::PeerUrlExist,
    EtcdError::MemberBadUrls,
];

impl EtcdError {
    /// etcd's code and text.
    pub fn parts(self) -> (Code, &'static str) {
        use EtcdError::*;
        match self {
            EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided"),
            KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found"),
            ValueProvided => (Code::InvalidArgument, "etcdserver: value is provided"),
            LeaseProvided => (Code::InvalidArgument, "etcdserver: lease is provided"),
            TooManyOps => (
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            DuplicateKey => (
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            Compacted => (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            FutureRev => (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            NoSpace => (
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found"),
            LeaseExist => (Code::FailedPrecondition, "etcdserver: lease already exists"),
            LeaseTtlTooLarge => (Code::OutOfRange, "etcdserver: too large lease TTL"),
            RequestTooLarge => (Code::InvalidArgument, "etcdserver: request is too large"),
            NoLeader => (Code::Unavailable, "etcdserver: no leader"),
            NotLeader => (Code::FailedPrecondition, "etcdserver: not leader"),
            LeaderChanged => (Code::Unavailable, "etcdserver: leader changed"),
            Stopped => (Code::Unavailable, "etcdserver: server stopped"),
            Timeout => (Code::Unavailable, "etcdserver: request timed out"),
            TimeoutDueToLeaderFail => (
                Code::Unavailable,
                "etcdserver: request timed out, possibly due to previous leader failure",
            ),
            Unhealthy => (Code::Unavailable, "etcdserver: unhealthy cluster"),
            AuthNotEnabled => (
                Code::FailedPrecondition,
                "etcdserver: authentication is not enabled",
            ),
            RootUserNotExist => (
                Code::FailedPrecondition,
                "etcdserver: root user does not exist",
            ),
            BadLeaderTransferee => (
                Code::FailedPrecondition,
                "etcdserver: bad leader transferee",
            ),
            MemberNotFound => (Code::NotFound, "etcdserver: member not found"),
            MemberNotLearner => (
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member",
            ),
            PeerUrlExist => (
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ),
            MemberBadUrls => (
                Code::InvalidArgument,
                "etcdserver: given member URLs are invalid",
            ),
        }
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Status {
        let (code, message) = e.parts();
        Status::new(code, message)
    }
}

/// A node's failure as etcd would answer it: etcd's error where etcd has
/// one, else the node's own status (its code and metadata).
pub fn status(e: NodeError) -> Status {
    let etcd = match &e {
        NodeError::Compacted { .. } => EtcdError::Compacted,
        NodeError::FutureRevision { .. } => EtcdError::FutureRev,
        NodeError::NoSpace { .. } => EtcdError::NoSpace,
        NodeError::LeaseNotFound { .. } => EtcdError::LeaseNotFound,
        NodeError::LeaseExists { .. } => EtcdError::LeaseExist,
        NodeError::NotLeader { leader: None } | NodeError::NoQuorum(_) => EtcdError::NoLeader,
        NodeError::Stopping(_) => EtcdError::Stopped,
        NodeError::Timeout(_) => EtcdError::Timeout,
        _ => return e.into(),
    };
    etcd.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_etcds_text_under_its_prefix_and_the_texts_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for error in ALL {
            let (_, message) = error.parts();
            assert!(message.starts_with("etcdserver: "), "{error:?}");
            assert!(seen.insert(message), "{error:?} repeats a text");
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), error.parts());
        }
        // The rows clients match on most, spelled out once more.
        assert_eq!(
            EtcdError::Compacted.parts(),
            (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            )
        );
        assert_eq!(
            EtcdError::LeaseNotFound.parts(),
            (Code::NotFound, "etcdserver: requested lease not found")
        );
        assert_eq!(
            EtcdError::NoLeader.parts(),
            (Code::Unavailable, "etcdserver: no leader")
        );
    }

    #[test]
    fn node_failures_become_etcds_errors() {
        let compacted = status(NodeError::Compacted {
            asked: 1,
            compacted: 5,
        });
        assert_eq!(compacted.message(), EtcdError::Compacted.parts().1);
        let future = status(NodeError::FutureRevision {
            asked: 9,
            current: 5,
        });
        assert_eq!(future.code(), Code::OutOfRange);
        assert_eq!(future.message(), EtcdError::FutureRev.parts().1);
        let lease = status(NodeError::LeaseNotFound { id: 7 });
        assert_eq!(lease.message(), EtcdError::LeaseNotFound.parts().1);
        let none = status(NodeError::NotLeader { leader: None });
        assert_eq!(none.message(), EtcdError::NoLeader.parts().1);
        // Not etcd's: the node's own answer.
        let other = status(NodeError::BadRequest("no".into()));
        assert_eq!(other.code(), Code::InvalidArgument);
    }
}
