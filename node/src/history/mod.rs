//! The history of applied changes above the store: when it is compacted
//! ([`compaction`]) and the hub that watches read it from ([`hub`]).

pub mod compaction;
pub mod hub;
