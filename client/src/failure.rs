//! What a failed call means for the caller, decided from data only: the
//! status code, the `raftkv-reason` and leader metadata a node attaches, and
//! whether the call's connection was ever made. A message's wording never
//! decides anything: messages are for people and may change.

use std::error::Error;
use std::io;

use raftkv_proto::LEADER_ADDR_METADATA;
use raftkv_proto::LEADER_ID_METADATA;
use raftkv_proto::REASON_DISK_FULL;
use raftkv_proto::REASON_METADATA;
use raftkv_proto::REASON_NOT_LEADER;
use raftkv_proto::REASON_NO_SPACE;
use tonic::Code;
use tonic::Status;

/// A failed call, as its caller must treat it. The `&'static str` is a short
/// snake_case label for counting (e.g. in hammer's report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nothing was done; the same call may be sent again, to `leader` (id,
    /// address) when the answer named one, else wherever the leader is now.
    Retry {
        leader: Option<(u64, String)>,
        kind: &'static str,
    },
    /// The call may or may not have taken effect (a write that timed out, a
    /// connection lost mid-call): repeating it is not safe unless it is
    /// idempotent, and its result must be found out by reading.
    Unknown(&'static str),
    /// The call was refused for a reason that retrying will not change.
    Failed(&'static str),
}

/// The leader's id and address carried by a not-leader answer, if any.
pub fn leader_hint(status: &Status) -> Option<(u64, String)> {
    let metadata = status.metadata();
    let id = metadata
        .get(LEADER_ID_METADATA)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    let address = metadata
        .get(LEADER_ADDR_METADATA)?
        .to_str()
        .ok()?
        .to_string();
    Some((id, address))
}

/// Whether `status` comes from a call that never reached a server: the TCP
/// connection was refused or could not be made. Found from the error chain
/// the transport attached (an `io::Error` of a connect kind), not from text.
pub fn never_sent(status: &Status) -> bool {
    let mut cause: Option<&(dyn Error + 'static)> = status.source();
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::AddrNotAvailable
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
            );
        }
        cause = error.source();
    }
    false
}

impl Failure {
    /// What `status` means for a call that `may_repeat` (a read, or a write
    /// that is harmless to apply twice) or not (a write).
    pub fn of(status: &Status, may_repeat: bool) -> Failure {
        let reason = status
            .metadata()
            .get(REASON_METADATA)
            .and_then(|v| v.to_str().ok());
        if reason == Some(REASON_NOT_LEADER) {
            return match leader_hint(status) {
                Some(leader) => Failure::Retry {
                    leader: Some(leader),
                    kind: "not_leader",
                },
                None => Failure::Retry {
                    leader: None,
                    kind: "no_leader",
                },
            };
        }
        // The node's disk is full: it did nothing, and serves nothing until
        // there is room; another node may lead.
        if reason == Some(REASON_DISK_FULL) {
            return Failure::Retry {
                leader: None,
                kind: "disk_full",
            };
        }
        if reason == Some(REASON_NO_SPACE) {
            return Failure::Failed("no_space");
        }
        if never_sent(status) {
            return Failure::Retry {
                leader: None,
                kind: "connect",
            };
        }
        match status.code() {
            Code::InvalidArgument => Failure::Failed("invalid_argument"),
            Code::FailedPrecondition => Failure::Failed("failed_precondition"),
            Code::NotFound => Failure::Failed("not_found"),
            // A revision compacted away, or not applied yet: the answer
            // names where the history is; asking again at once changes nothing.
            Code::OutOfRange => Failure::Failed("out_of_range"),
            Code::ResourceExhausted => Failure::Failed("resource_exhausted"),
            Code::PermissionDenied | Code::Unauthenticated => Failure::Failed("denied"),
            // Refused before anything changed: nothing to lose by asking again.
            Code::Aborted => Failure::Retry {
                leader: None,
                kind: "aborted",
            },
            Code::Unavailable if may_repeat => Failure::Retry {
                leader: None,
                kind: "unavailable",
            },
            _ if may_repeat => Failure::Retry {
                leader: None,
                kind: "read_error",
            },
            Code::Unavailable => Failure::Unknown("unavailable"),
            Code::DeadlineExceeded | Code::Cancelled => Failure::Unknown("timeout"),
            Code::Unknown => Failure::Unknown("outcome_unknown"),
            _ => Failure::Unknown("transport"),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    fn not_leader(leader: Option<(u64, &str)>) -> Status {
        let mut status = Status::unavailable("any wording at all");
        let metadata = status.metadata_mut();
        metadata.insert(
            REASON_METADATA,
            MetadataValue::from_static(REASON_NOT_LEADER),
        );
        if let Some((id, address)) = leader {
            metadata.insert(LEADER_ID_METADATA, id.to_string().parse().unwrap());
            metadata.insert(LEADER_ADDR_METADATA, address.parse().unwrap());
        }
        status
    }

    #[test]
    fn not_leader_answers_are_retried_whatever_their_message() {
        assert_eq!(
            Failure::of(&not_leader(Some((2, "10.0.0.2:5000"))), false),
            Failure::Retry {
                leader: Some((2, "10.0.0.2:5000".to_string())),
                kind: "not_leader"
            }
        );
        assert_eq!(
            Failure::of(&not_leader(None), false),
            Failure::Retry {
                leader: None,
                kind: "no_leader"
            }
        );
    }

    #[test]
    fn a_full_disk_is_retried_elsewhere_and_a_full_quota_is_not_retried() {
        let with_reason = |mut status: Status, reason: &'static str| {
            status
                .metadata_mut()
                .insert(REASON_METADATA, MetadataValue::from_static(reason));
            status
        };
        let disk_full = with_reason(Status::unavailable("whatever"), REASON_DISK_FULL);
        assert_eq!(
            Failure::of(&disk_full, false),
            Failure::Retry {
                leader: None,
                kind: "disk_full"
            }
        );
        let no_space = with_reason(Status::resource_exhausted("whatever"), REASON_NO_SPACE);
        assert_eq!(Failure::of(&no_space, false), Failure::Failed("no_space"));
        assert_eq!(Failure::of(&no_space, true), Failure::Failed("no_space"));
    }

    #[test]
    fn a_write_whose_fate_is_open_is_unknown_and_a_read_is_retried() {
        // The wording of an old not-leader message no longer matters.
        let bare = Status::unavailable("not the leader; no leader is known");
        assert_eq!(Failure::of(&bare, false), Failure::Unknown("unavailable"));
        assert!(matches!(Failure::of(&bare, true), Failure::Retry { .. }));
        assert_eq!(
            Failure::of(&Status::deadline_exceeded("slow"), false),
            Failure::Unknown("timeout")
        );
        assert_eq!(
            Failure::of(&Status::unknown("dropped"), false),
            Failure::Unknown("outcome_unknown")
        );
        assert_eq!(
            Failure::of(&Status::invalid_argument("empty key"), true),
            Failure::Failed("invalid_argument")
        );
        assert_eq!(
            Failure::of(&Status::out_of_range("compacted"), true),
            Failure::Failed("out_of_range")
        );
        assert!(matches!(
            Failure::of(&Status::aborted("race"), false),
            Failure::Retry {
                kind: "aborted",
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_refused_connection_is_known_never_sent() {
        // A port that was just free: nobody listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let channels = crate::Channels::default();
        let channel = channels.get(&format!("127.0.0.1:{port}")).unwrap();
        let status = raftkv_proto::pb::kv_client::KvClient::new(channel)
            .put(raftkv_proto::pb::PutRequest {
                lease: 0,
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            })
            .await
            .unwrap_err();
        assert!(never_sent(&status), "{status:?}");
        assert_eq!(
            Failure::of(&status, false),
            Failure::Retry {
                leader: None,
                kind: "connect"
            }
        );
        assert!(!never_sent(&Status::unavailable("tcp connect error")));
    }
}
