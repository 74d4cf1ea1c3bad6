//! The key space in bytes: what a version holds ([`KeyValue`], [`Row`],
//! [`Version`], [`Numbers`]), why a read at a revision fails
//! ([`ReadError`]), and the encoding of `revs` rows and their keys (see the
//! layout in `keyspace`).

use std::io;

use super::index::Entry;

/// A key's version as reads return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The revision that created the key (its first write since it was absent).
    pub create_revision: u64,
    /// The revision of its last write.
    pub mod_revision: u64,
    /// Writes since it was created, this one included (1 on creation).
    pub version: u64,
    /// The lease it is attached to (0: none).
    pub lease: u64,
}

/// One version of one key, as `revs` stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: Vec<u8>,
    /// `None`: the key was deleted at this revision (a tombstone).
    pub value: Option<Vec<u8>>,
    pub create_revision: u64,
    pub version: u64,
    pub lease: u64,
}

/// One row with where it sits, as a snapshot transfer carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub revision: u64,
    pub sub: u32,
    pub row: Row,
    /// Whether it is its key's live version at the snapshot's revision.
    pub live: bool,
}

/// Why a read at a revision cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The revision is older than the compaction point: its history is gone.
    #[error("revision {asked} is compacted; the oldest revision kept is {compacted}")]
    Compacted { asked: u64, compacted: u64 },
    /// The revision is not applied here yet.
    #[error("revision {asked} is in the future; the newest revision here is {current}")]
    Future { asked: u64, current: u64 },
    /// The node is replacing its state with a snapshot from the leader.
    #[error("this node is installing a snapshot")]
    Installing,
    /// Local storage failed.
    #[error("storage error")]
    Io(#[from] io::Error),
}

/// For callers that only pass a failure on: storage errors as they were,
/// the other refusals wrapped.
impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> io::Error {
        match e {
            ReadError::Io(e) => e,
            other => io::Error::other(other),
        }
    }
}

pub(super) const ROW_FORMAT: u8 = 1;
pub(super) const KIND_PUT: u8 = 0;
pub(super) const KIND_DELETE: u8 = 1;
/// `revs`' key of one row.
pub fn row_key(revision: u64, sub: u32) -> [u8; 12] {
    let mut out = [0; 12];
    out[..8].copy_from_slice(&revision.to_be_bytes());
    out[8..].copy_from_slice(&sub.to_be_bytes());
    out
}

pub(super) fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed {what}"))
}

pub(super) fn split_row_key(key: &[u8]) -> io::Result<(u64, u32)> {
    let key: &[u8; 12] = key.try_into().map_err(|_| malformed("row key"))?;
    let (revision, sub) = key.split_at(8);
    Ok((
        u64::from_be_bytes(revision.try_into().map_err(|_| malformed("row key"))?),
        u32::from_be_bytes(sub.try_into().map_err(|_| malformed("row key"))?),
    ))
}

impl Row {
    /// ```text
    /// format u8 (1), kind u8 (0 put, 1 delete), create_revision u64 BE,
    /// version u64 BE, lease u64 BE, key length u32 BE, key, value
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let value = self.value.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(30 + self.key.len() + value.len());
        out.push(ROW_FORMAT);
        out.push(if self.value.is_some() {
            KIND_PUT
        } else {
            KIND_DELETE
        });
        out.extend_from_slice(&self.create_revision.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.lease.to_be_bytes());
        out.extend_from_slice(&(self.key.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(value);
        out
    }

    /// Reads what [`Row::encode`] wrote; anything else is `InvalidData`.
    pub fn decode(bytes: &[u8]) -> io::Result<Row> {
        let (head, key, value) = split_row(bytes)?;
        Ok(Row {
            key: key.to_vec(),
            value: (!head.deleted).then(|| value.to_vec()),
            create_revision: head.create_revision,
            version: head.version,
            lease: head.lease,
        })
    }

    /// The key-value this row makes visible, written at `revision`.
    pub fn into_key_value(self, revision: u64) -> Option<KeyValue> {
        Some(KeyValue {
            value: self.value?,
            key: self.key,
            create_revision: self.create_revision,
            mod_revision: revision,
            version: self.version,
            lease: self.lease,
        })
    }

    /// Roughly what the row takes in a message.
    pub fn bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len) + 48
    }
}

/// A live version's numbers, as the index holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbers {
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    pub lease: u64,
}

/// A stored row's index entry at `revision`/`sub` and its key, read
/// without copying the value (the index is built from every row at open).
pub(super) fn row_entry(bytes: &[u8], revision: u64, sub: u32) -> io::Result<(&[u8], Entry)> {
    let (mut head, key, _) = split_row(bytes)?;
    head.revision = revision;
    head.sub = sub;
    Ok((key, head))
}

/// A row's numbers (revision and sub left 0: they are its tree key), key
/// and value.
fn split_row(bytes: &[u8]) -> io::Result<(Entry, &[u8], &[u8])> {
    let bad = || malformed("stored row");
    let (&[format, kind], rest) = bytes.split_first_chunk::<2>().ok_or_else(bad)?;
    if format != ROW_FORMAT || kind > KIND_DELETE {
        return Err(bad());
    }
    let mut numbers = [0u64; 3];
    let mut rest = rest;
    for number in &mut numbers {
        let (bytes, tail) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
        *number = u64::from_be_bytes(*bytes);
        rest = tail;
    }
    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len || (kind == KIND_DELETE && rest.len() != len) {
        return Err(bad());
    }
    let (key, value) = rest.split_at(len);
    let head = Entry {
        revision: 0,
        sub: 0,
        deleted: kind == KIND_DELETE,
        create_revision: numbers[0],
        version: numbers[1],
        lease: numbers[2],
    };
    Ok((head, key, value))
}
