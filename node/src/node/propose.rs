//! Writes proposed from any member. A follower that serves a client's write
//! itself (etcd's `Put`, `DeleteRange` and `Txn`) builds the command and
//! passes only the command to the leader, on the forwarding stream; the
//! leader proposes it and sends back its outcome, from which the follower
//! answers the client. This is how etcd's followers write (a proposal to
//! the leader, not the client's call), and it spares both nodes the work of
//! passing a whole call on: the leader does not serve an HTTP request
//! rebuilt from the follower's, and neither node copies its headers.
//!
//! The leader proposes only etcd's key-value writes this way (see
//! [`RaftNode::propose_for_follower`]); every other write reaches the
//! leader as the client's call.
//!
//! The outcome travels as bincode of [`Proposed`], which both ends must
//! read alike: followers send commands only while the cluster version is at
//! least [`PROPOSALS`], and a release that changes [`CommandResult`] or
//! [`Refusal`] must gate its new form by the cluster version as a new entry
//! kind is gated.

use std::time::Duration;

use bincode::Options;
use serde::Deserialize;
use serde::Serialize;

use super::RaftNode;
use crate::error::NodeError;
use crate::types::Command;
use crate::types::CommandResult;
use crate::types::NodeId;
use crate::version::Version;

/// The cluster version from which followers send proposals: every member
/// then runs a release whose leader proposes them.
pub const PROPOSALS: Version = Version::VERSIONED_ENTRIES;

/// How long a leader gives a follower's proposal; the client's own deadline
/// ends its wait on the follower sooner.
pub const PROPOSAL_DEADLINE: Duration = Duration::from_secs(30);

/// A proposal's outcome as it travels back: its log index and the state
/// machine's result, or why it was refused.
pub type Proposed = Result<(u64, CommandResult), Refusal>;

/// Why a follower's proposal ended without its result: refused (nothing
/// written), or with an outcome left open (`Stopping`, `Timeout`,
/// `OutcomeUnknown`, `Failed`: it may have been applied). The
/// [`NodeError`]s a write can end with, as data that reads back on the
/// follower.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The node asked no longer leads (`leader` is who it thinks does).
    NotLeader {
        leader: Option<(NodeId, String)>,
    },
    /// The leader cannot reach a quorum.
    NoQuorum,
    NoSpace {
        used: u64,
        quota: u64,
        alarmed: Vec<NodeId>,
    },
    ClusterVersionTooOld {
        needs: Version,
        cluster: Version,
    },
    LeaseNotFound {
        id: u64,
    },
    LeaseFull {
        id: u64,
    },
    LeaseExists {
        id: u64,
    },
    Stopping,
    BadRequest(String),
    Timeout(String),
    OutcomeUnknown(String),
    /// Anything else that stopped the write; it may have been applied.
    Failed(String),
}

impl From<NodeError> for Refusal {
    fn from(e: NodeError) -> Refusal {
        match e {
            NodeError::NotLeader { leader } => Refusal::NotLeader { leader },
            NodeError::NoQuorum(_) => Refusal::NoQuorum,
            NodeError::NoSpace {
                used,
                quota,
                alarmed,
            } => Refusal::NoSpace {
                used,
                quota,
                alarmed,
            },
            NodeError::ClusterVersionTooOld { needs, cluster } => {
                Refusal::ClusterVersionTooOld { needs, cluster }
            }
            NodeError::LeaseNotFound { id } => Refusal::LeaseNotFound { id },
            NodeError::LeaseFull { id } => Refusal::LeaseFull { id },
            NodeError::LeaseExists { id } => Refusal::LeaseExists { id },
            NodeError::Stopping(_) => Refusal::Stopping,
            NodeError::BadRequest(why) => Refusal::BadRequest(why),
            NodeError::Timeout(why) => Refusal::Timeout(why),
            NodeError::OutcomeUnknown(why) => Refusal::OutcomeUnknown(why),
            other => Refusal::Failed(other.to_string()),
        }
    }
}

impl From<Refusal> for NodeError {
    fn from(refusal: Refusal) -> NodeError {
        match refusal {
            Refusal::NotLeader { leader } => NodeError::NotLeader { leader },
            // What a client can do is the same: find a leader that can.
            Refusal::NoQuorum => NodeError::NotLeader { leader: None },
            Refusal::NoSpace {
                used,
                quota,
                alarmed,
            } => NodeError::NoSpace {
                used,
                quota,
                alarmed,
            },
            Refusal::ClusterVersionTooOld { needs, cluster } => {
                NodeError::ClusterVersionTooOld { needs, cluster }
            }
            Refusal::LeaseNotFound { id } => NodeError::LeaseNotFound { id },
            Refusal::LeaseFull { id } => NodeError::LeaseFull { id },
            Refusal::LeaseExists { id } => NodeError::LeaseExists { id },
            Refusal::Stopping => NodeError::Stopping(None),
            Refusal::BadRequest(why) => NodeError::BadRequest(why),
            Refusal::Timeout(why) => NodeError::Timeout(why),
            Refusal::OutcomeUnknown(why) => NodeError::OutcomeUnknown(why),
            Refusal::Failed(why) => NodeError::OutcomeUnknown(format!("the leader: {why}")),
        }
    }
}

/// bincode with a bound: what a peer sent never allocates more than its
/// own length says it can hold.
fn options(limit: usize) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(u64::try_from(limit).unwrap_or(u64::MAX))
}

/// `proposed` as it travels back to the follower.
pub fn encode_outcome(proposed: &Proposed) -> Vec<u8> {
    match options(usize::MAX).serialize(proposed) {
        Ok(bytes) => bytes,
        // Serializing these types into memory cannot fail; were it to, the
        // follower still hears something true.
        Err(e) => options(usize::MAX)
            .serialize(&Proposed::Err(Refusal::Failed(format!(
                "the outcome cannot be encoded: {e}"
            ))))
            .unwrap_or_default(),
    }
}

/// An outcome from the leader; one that does not read is an unknown outcome
/// (the leader may have applied the write).
pub fn decode_outcome(bytes: &[u8]) -> Result<(u64, CommandResult), NodeError> {
    match options(bytes.len()).deserialize::<Proposed>(bytes) {
        Ok(proposed) => proposed.map_err(NodeError::from),
        Err(e) => Err(NodeError::OutcomeUnknown(format!(
            "the leader's answer to a proposal does not read ({e}); the write may have been applied"
        ))),
    }
}

impl RaftNode {
    /// Whether a follower passes its proposals (rather than its clients'
    /// calls) to the leader: every member runs a release whose leader
    /// proposes them.
    pub fn proposes_through_leader(&self) -> bool {
        self.kv().cluster_version() >= PROPOSALS
    }

    /// Writes `command` from whichever member this is: on the leader as
    /// [`RaftNode::write`]; on a follower, the leader proposes it for this
    /// node, on the forwarding stream. Returns once it is applied, with its
    /// log index and result; an error that leaves the outcome open is
    /// [`NodeError::OutcomeUnknown`].
    ///
    /// Only for commands [`RaftNode::propose_for_follower`] accepts.
    pub async fn propose(&self, command: Command) -> Result<(u64, CommandResult), NodeError> {
        if self.names_itself_leader() {
            return self.write(command).await;
        }
        let Some((leader, address)) = self.leader().filter(|(id, _)| *id != self.id) else {
            return Err(NodeError::NotLeader { leader: None });
        };
        // A call that routing served here as leader, or as a follower, while
        // some member's release takes no proposals: the leader may not read
        // one. Nothing was written.
        if !self.proposes_through_leader() {
            return Err(NodeError::NotLeader {
                leader: Some((leader, address)),
            });
        }
        let bytes = crate::entry::protobuf::encode(&command);
        let deadline = tokio::time::Instant::now() + PROPOSAL_DEADLINE;
        // Boxed, as openraft's futures are in `write`: the stream's and the
        // leader watch's futures are large.
        Box::pin(async {
            tokio::select! {
                outcome = self.forwarder().propose(&address, bytes, deadline) => decode_outcome(&outcome?),
                // A leader that hangs (paused, its disk stalled) keeps its
                // connections open: the answer would come at the client's
                // deadline. Once this node stops following it, what was sent
                // may or may not commit under the next leader, and waiting
                // tells nothing more.
                () = self.stops_following(leader) => Err(NodeError::OutcomeUnknown(format!(
                    "node {leader} stopped leading while the write was in flight; it may or may \
                     not be applied"
                ))),
            }
        })
        .await
    }

    /// Returns once this node no longer follows `leader` (an election
    /// started, or another node leads), or Raft stopped.
    async fn stops_following(&self, leader: NodeId) {
        use openraft::type_config::async_runtime::WatchReceiver as _;
        // Role, vote and leader only: no wake-up per write.
        let mut server = self.raft.server_metrics();
        while server.borrow_watched().current_leader == Some(leader) {
            if server.changed().await.is_err() {
                return;
            }
        }
    }

    /// Proposes a command a follower sent (`bytes`, a `raftkv.entry.Command`)
    /// and returns its outcome for the follower. Only etcd's key-value
    /// writes are taken: they need nothing of the follower but the command,
    /// and the follower's role check already judged its client.
    pub async fn propose_for_follower(&self, bytes: &[u8]) -> Proposed {
        let command = match crate::entry::protobuf::decode(bytes, Version::ours()) {
            Ok(command @ Command::Etcd(_)) => command,
            Ok(_) => {
                return Err(Refusal::BadRequest(
                    "a follower may propose only etcd's key-value writes".into(),
                ))
            }
            Err(e) => return Err(Refusal::BadRequest(format!("a proposed command: {e}"))),
        };
        match tokio::time::timeout(PROPOSAL_DEADLINE, self.write(command)).await {
            Ok(written) => written.map_err(Refusal::from),
            Err(_) => Err(Refusal::Timeout(format!(
                "the leader did not apply the proposal within {PROPOSAL_DEADLINE:?}; it may still be applied"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::txn::EtcdOpResult;

    #[test]
    fn outcomes_read_back_as_they_were_sent() {
        let applied: Proposed = Ok((
            42,
            CommandResult::Etcd(Ok(EtcdOpResult::Txn {
                succeeded: true,
                results: vec![EtcdOpResult::Put { prev: None }],
            })),
        ));
        let again = decode_outcome(&encode_outcome(&applied)).expect("applied");
        assert_eq!(Ok(again), applied);
        let refusals = [
            Refusal::NotLeader {
                leader: Some((2, "127.0.0.1:1".into())),
            },
            Refusal::NoSpace {
                used: 10,
                quota: 5,
                alarmed: vec![3],
            },
            Refusal::ClusterVersionTooOld {
                needs: Version::new(0, 3),
                cluster: Version::new(0, 2),
            },
            Refusal::LeaseNotFound { id: 7 },
            Refusal::Stopping,
            Refusal::OutcomeUnknown("lost".into()),
        ];
        for refusal in refusals {
            let e = decode_outcome(&encode_outcome(&Err(refusal.clone())))
                .expect_err("a refusal reads back as an error");
            assert_eq!(Refusal::from(e), refusal);
        }
    }

    #[test]
    fn an_outcome_that_does_not_read_leaves_the_write_open() {
        // A length prefix far beyond what was sent allocates nothing.
        let mut bytes = encode_outcome(&Ok((1, CommandResult::Done)));
        bytes.truncate(6);
        let e = decode_outcome(&bytes).expect_err("cut short");
        assert!(matches!(e, NodeError::OutcomeUnknown(_)), "{e:?}");
        let huge = [
            0u8, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        let e = decode_outcome(&huge).expect_err("a length past the message");
        assert!(matches!(e, NodeError::OutcomeUnknown(_)), "{e:?}");
    }

    /// An outcome whose transaction results nest `depth` deep, built as
    /// bytes: a value that deep could not be built, encoded or dropped
    /// without overflowing the stack itself.
    fn nested_outcome(depth: usize) -> Vec<u8> {
        let nest = |inner: Vec<EtcdOpResult>| EtcdOpResult::Txn {
            succeeded: true,
            results: inner,
        };
        let outcome =
            |result: EtcdOpResult| -> Proposed { Ok((9, CommandResult::Etcd(Ok(result)))) };
        let one = encode_outcome(&outcome(nest(vec![])));
        let two = encode_outcome(&outcome(nest(vec![nest(vec![])])));
        // `two` is `one` with one level's bytes inserted where `one`'s
        // results begin.
        let level = two.len() - one.len();
        let at = (0..one.len())
            .find(|&at| two[..at] == one[..at] && two[at + level..] == one[at..])
            .expect("one level's bytes");
        let mut bytes = one[..at].to_vec();
        for _ in 1..depth {
            bytes.extend_from_slice(&two[at..at + level]);
        }
        bytes.extend_from_slice(&one[at..]);
        bytes
    }

    #[test]
    fn results_nested_past_the_limit_leave_the_write_open_without_recursing() {
        use crate::etcd::txn::MAX_NESTED_RESULTS;
        let deepest =
            decode_outcome(&nested_outcome(MAX_NESTED_RESULTS)).expect("within the limit");
        let mut levels = 0;
        let mut result = match deepest.1 {
            CommandResult::Etcd(Ok(result)) => result,
            other => panic!("{other:?}"),
        };
        while let EtcdOpResult::Txn { mut results, .. } = result {
            levels += 1;
            match results.pop() {
                Some(inner) => result = inner,
                None => break,
            }
        }
        assert_eq!(levels, MAX_NESTED_RESULTS);
        for depth in [MAX_NESTED_RESULTS + 1, 200_000] {
            let e = decode_outcome(&nested_outcome(depth)).expect_err("too deep");
            assert!(matches!(e, NodeError::OutcomeUnknown(_)), "{e:?}");
        }
        // The count of levels is per read: a refused read leaves none behind.
        decode_outcome(&nested_outcome(MAX_NESTED_RESULTS)).expect("within the limit again");
    }
}
