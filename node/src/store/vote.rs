//! The Raft vote in a file of its own, `raft-vote` in the data directory, so
//! an election never waits behind the log: a vote kept in sled would be
//! durable only through sled's flush, which first writes out every log
//! entry buffered before it (seconds on a slow disk). This file is a few
//! dozen bytes: one small write and one `fsync`.
//!
//! Layout: the CRC-32 (IEEE, u32 big-endian) of the rest, then the encoded
//! vote.
//!
//! Durability: [`VoteFile::write`] writes `raft-vote.tmp`, syncs it, renames
//! it over `raft-vote` and syncs the directory before it returns, so the
//! file holds the old vote or the new one, whole, whatever a crash cuts. A
//! data directory of an earlier version holds its vote in sled (`raft_meta`
//! `vote`): it is read from there until the first vote is written here.

use std::fs::File;
use std::io;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use crate::codec::decode;
use crate::codec::encode;
use crate::types::Vote;

const NAME: &str = "raft-vote";
const TEMPORARY: &str = "raft-vote.tmp";

/// The vote's file in a data directory.
#[derive(Debug, Clone)]
pub struct VoteFile {
    dir: PathBuf,
}

impl VoteFile {
    pub fn new(dir: &Path) -> VoteFile {
        VoteFile {
            dir: dir.to_path_buf(),
        }
    }

    /// The vote written last, or `None` if none was written here. A file
    /// that fails its checksum is `InvalidData`: never a silently lost vote.
    pub fn read(&self) -> io::Result<Option<Vote>> {
        let bytes = match std::fs::read(self.dir.join(NAME)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let corrupt = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is damaged (its checksum does not match): this node cannot know whom it \
                     voted for; restore a backup or re-add the node with an empty data directory",
                    self.dir.join(NAME).display()
                ),
            )
        };
        let (crc, vote) = bytes.split_first_chunk::<4>().ok_or_else(corrupt)?;
        if u32::from_be_bytes(*crc) != crc32fast::hash(vote) {
            return Err(corrupt());
        }
        Ok(Some(decode(vote).map_err(|_| corrupt())?))
    }

    /// Replaces the vote; on stable storage when it returns. Blocks.
    pub fn write(&self, vote: &Vote) -> io::Result<()> {
        // A full disk is waited out, not fatal (see `server::disk_full`).
        self.replace(vote)
            .inspect_err(crate::disk::filesystem::note_write_error)
    }

    fn replace(&self, vote: &Vote) -> io::Result<()> {
        let encoded = encode(vote)?;
        let temporary = self.dir.join(TEMPORARY);
        let mut file = File::create(&temporary)?;
        file.write_all(&crc32fast::hash(&encoded).to_be_bytes())?;
        file.write_all(&encoded)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, self.dir.join(NAME))?;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_vote_written_is_read_back_and_damage_is_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let file = VoteFile::new(dir.path());
        assert_eq!(file.read().unwrap(), None);
        file.write(&Vote::new(3, 1)).unwrap();
        file.write(&Vote::new_committed(4, 2)).unwrap();
        assert_eq!(file.read().unwrap(), Some(Vote::new_committed(4, 2)));
        assert!(!dir.path().join(TEMPORARY).exists());
        // A temporary file left by a crash is not the vote.
        std::fs::write(dir.path().join(TEMPORARY), b"garbage").unwrap();
        assert_eq!(file.read().unwrap(), Some(Vote::new_committed(4, 2)));
        let path = dir.path().join(NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(file.read().unwrap_err().kind(), io::ErrorKind::InvalidData);
        std::fs::write(&path, b"ab").unwrap();
        assert_eq!(file.read().unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
