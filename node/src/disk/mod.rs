//! The limits of the disk: the size quota and its alarm, how much of the
//! Raft log is kept, what a hung disk makes a leader do, and the free space
//! of a file system. (Waiting out a full disk wraps the whole node: it is
//! `server::disk_full`.)

pub mod filesystem;
pub mod hung_disk;
pub mod log_purge;
pub mod quota;
