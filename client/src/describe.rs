//! Failed calls and node roles as operators read them.

use raftkv_proto::pb;
use tonic::Code;
use tonic::Status;

use crate::never_sent;

/// A one-line description of a failed call.
pub fn describe_status(status: &Status) -> String {
    let code = match status.code() {
        Code::InvalidArgument => "invalid argument",
        Code::FailedPrecondition => "refused",
        Code::Aborted => "conflict, nothing changed (retry)",
        Code::NotFound => "not found",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::Unknown => "outcome unknown",
        Code::Internal => "internal error",
        Code::PermissionDenied => "permission denied",
        _ => "failed",
    };
    let message = status.message();
    if never_sent(status) {
        return format!("{code}: cannot connect ({message})");
    }
    let transport = std::error::Error::source(status)
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
    if transport {
        return format!("{code}: connection failed ({message})");
    }
    format!("{code}: {message}")
}

/// A role's name as operators read it.
pub fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Leader) => "leader",
        Ok(pb::Role::Follower) => "follower",
        Ok(pb::Role::Candidate) => "candidate",
        Ok(pb::Role::Learner) => "learner",
        Ok(pb::Role::Shutdown) => "shut down",
        _ => "unknown",
    }
}
