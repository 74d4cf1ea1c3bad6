//! Release versions, as nodes compare them during a rolling upgrade: the
//! `major.minor` of the package version. Patch releases never change what a
//! node writes or reads, so they do not count.
//!
//! A node names its version on every Raft call and answer (metadata
//! [`VERSION_METADATA`]); a peer that names none runs a release from before
//! versions were named, [`Version::FIRST`]. The cluster version, the lowest
//! version among all members, is agreed through the log
//! ([`crate::types::Command::ClusterVersion`]) and gates what the leader
//! writes: see `node::upgrade`.

use std::fmt;
use std::str::FromStr;

/// Request and response metadata on every Raft call: the sender's version.
pub const VERSION_METADATA: &str = "raftkv-version";

/// [`Version::ours`] as text, as [`VERSION_METADATA`] carries it.
pub const OURS_TEXT: &str = concat!(
    env!("CARGO_PKG_VERSION_MAJOR"),
    ".",
    env!("CARGO_PKG_VERSION_MINOR")
);

/// A release's `major.minor`; ordered as releases are.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    /// Releases before versions were named (0.1): their log entries are
    /// bincode of `Command`'s first thirteen kinds, their snapshots format 6.
    pub const FIRST: Version = Version::new(0, 1);
    /// Log entries in the versioned (protobuf) encoding, the cluster version
    /// in the log and in snapshots (format 7), `DeletePrefix`.
    pub const VERSIONED_ENTRIES: Version = Version::new(0, 2);

    pub const fn new(major: u32, minor: u32) -> Version {
        Version { major, minor }
    }

    /// Packed into one number (major in the high half), as stored.
    pub const fn to_u64(self) -> u64 {
        ((self.major as u64) << 32) | self.minor as u64
    }

    /// Unpacks [`Version::to_u64`]; 0 (nothing stored) is [`Version::FIRST`].
    pub const fn from_u64(packed: u64) -> Version {
        if packed == 0 {
            return Version::FIRST;
        }
        Version::new((packed >> 32) as u32, packed as u32)
    }

    /// The version of this build.
    pub const fn ours() -> Version {
        Version::new(
            parse_u32(env!("CARGO_PKG_VERSION_MAJOR")),
            parse_u32(env!("CARGO_PKG_VERSION_MINOR")),
        )
    }
}

/// Digits only; the package version's parts are checked by Cargo.
const fn parse_u32(digits: &str) -> u32 {
    let bytes = digits.as_bytes();
    let mut value: u32 = 0;
    let mut i = 0;
    while i < bytes.len() {
        value = value * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    value
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// `major.minor`, or a full `major.minor.patch` (the patch is dropped).
#[derive(Debug, thiserror::Error)]
#[error("not a version (expected major.minor): {0:?}")]
pub struct BadVersion(String);

impl FromStr for Version {
    type Err = BadVersion;

    fn from_str(text: &str) -> Result<Version, BadVersion> {
        let bad = || BadVersion(text.chars().take(32).collect());
        let mut parts = text.trim().split('.');
        let major = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let minor = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        match parts.next() {
            None => {}
            Some(patch) if patch.parse::<u32>().is_ok() && parts.next().is_none() => {}
            Some(_) => return Err(bad()),
        }
        Ok(Version::new(major, minor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_as_releases_and_read_back_from_text() {
        assert!(Version::new(0, 2) > Version::new(0, 1));
        assert!(Version::new(1, 0) > Version::new(0, 10));
        assert_eq!("0.2".parse::<Version>().unwrap(), Version::new(0, 2));
        assert_eq!("1.12.3".parse::<Version>().unwrap(), Version::new(1, 12));
        assert_eq!(Version::new(3, 14).to_string(), "3.14");
        for bad in ["", "1", "a.b", "1.2.x", "1.2.3.4", "-1.2"] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn our_version_reads_back_from_its_text() {
        assert_eq!(OURS_TEXT.parse::<Version>().unwrap(), Version::ours());
    }

    #[test]
    fn this_build_writes_the_versioned_entries() {
        assert!(Version::ours() >= Version::VERSIONED_ENTRIES);
    }
}
