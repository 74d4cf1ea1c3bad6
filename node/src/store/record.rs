//! How a key's value is stored in the `kv` tree: a fixed header, then the
//! value as the client wrote it.
//!
//! ```text
//! format          u8, 1
//! modified index  u64 (big-endian): the log index of the write that set it
//! lease           u64: the lease the key is attached to (0: none)
//! value           the rest
//! ```
//!
//! The header travels with the value everywhere the stored bytes go (the
//! snapshot data, backups), so a transaction's "modified at index" compare
//! means the same on every replica and after a restore.

use std::io;

/// The header's format byte.
const FORMAT: u8 = 1;
/// Bytes before the value.
pub const HEADER_BYTES: usize = 17;

/// A stored value, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub modified: u64,
    pub lease: u64,
    pub value: &'a [u8],
}

/// The stored bytes of `value`, written at log index `modified`.
pub fn encode(modified: u64, lease: u64, value: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(HEADER_BYTES + value.len());
    stored.push(FORMAT);
    stored.extend_from_slice(&modified.to_be_bytes());
    stored.extend_from_slice(&lease.to_be_bytes());
    stored.extend_from_slice(value);
    stored
}

/// Reads stored bytes; anything else is `InvalidData`.
pub fn decode(stored: &[u8]) -> io::Result<Record<'_>> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed stored value");
    let (&format, rest) = stored.split_first().ok_or_else(malformed)?;
    if format != FORMAT {
        return Err(malformed());
    }
    let (modified, rest) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
    let (lease, value) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
    Ok(Record {
        modified: u64::from_be_bytes(*modified),
        lease: u64::from_be_bytes(*lease),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_did_not_write() {
        let stored = encode(42, 7, b"hello");
        assert_eq!(stored.len(), HEADER_BYTES + 5);
        assert_eq!(
            decode(&stored).unwrap(),
            Record {
                modified: 42,
                lease: 7,
                value: b"hello"
            }
        );
        assert_eq!(decode(&encode(1, 0, b"")).unwrap().value, b"");
        for len in 0..HEADER_BYTES {
            assert!(decode(&stored[..len]).is_err(), "cut at {len}");
        }
        let mut other = stored.clone();
        other[0] = 2;
        assert!(decode(&other).is_err());
    }
}
