//! The snapshot data format: the state at one revision, as snapshots,
//! their transfer to followers and backups carry it.
//!
//! [`SNAPSHOT_V4`] (this version): the marker, the lease table (see
//! `leases::encode_table`), then one record per live key in key order:
//! `u32 key length (BE), key, u32 length (BE), create_revision u64,
//! mod_revision u64, version u64, lease u64 (all BE), value`. Every key's
//! lease is 0 or one in the table.
//!
//! Earlier versions wrote [`SNAPSHOT_V3`] (the same table, values behind a
//! 17-byte header: format 1, modified index, lease), [`SNAPSHOT_V2`] (no
//! table) and, first, records of bare values without a marker. They load
//! with `create_revision` = `mod_revision` = 1 and version 1 for every key,
//! the same on every replica, since they never recorded more.

use std::io;
use std::io::Read;

use super::keyspace::KeyValue;
use super::leases;
use super::leases::LeaseTable;
use super::record;

/// The first bytes of data with value headers: a key length no key can have,
/// then the format number.
const SNAPSHOT_V2: &[u8] = &[0xff, 0xff, 0xff, 0xff, 2];
/// With a lease table.
const SNAPSHOT_V3: &[u8] = &[0xff, 0xff, 0xff, 0xff, 3];
/// With revisions: what this version writes.
pub const SNAPSHOT_V4: &[u8] = &[0xff, 0xff, 0xff, 0xff, 4];
/// The revisions given to keys loaded from formats without them.
pub const BEFORE_REVISIONS: u64 = 1;
/// Bytes of a v4 value before the value itself.
const V4_HEADER: usize = 32;

/// Snapshot data, decoded.
#[cfg(test)]
#[derive(Debug)]
pub struct Decoded {
    pub leases: LeaseTable,
    /// Live keys in key order.
    pub keys: Vec<KeyValue>,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Appends snapshot data, key by key; the bytes so far may be taken out
/// at any point, so data of any size streams through a small buffer.
pub struct Encoder {
    data: Vec<u8>,
}

impl Encoder {
    pub fn new(leases: &[(u64, u64)]) -> io::Result<Encoder> {
        let mut data = SNAPSHOT_V4.to_vec();
        leases::encode_table(leases, &mut data)?;
        Ok(Encoder { data })
    }

    /// Bytes of the marker and the lease table.
    pub fn start_len(leases: &[(u64, u64)]) -> u64 {
        (SNAPSHOT_V4.len() + 4 + 16 * leases.len()) as u64
    }

    /// Bytes [`Encoder::push`] appends for `kv`.
    pub fn record_len(kv: &KeyValue) -> u64 {
        (4 + kv.key.len() + 4 + V4_HEADER + kv.value.len()) as u64
    }

    /// Bytes encoded and not yet taken.
    pub fn buffered(&self) -> usize {
        self.data.len()
    }

    /// Takes the bytes encoded so far.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.data)
    }

    /// Appends `kv`; keys must come in increasing order.
    pub fn push(&mut self, kv: &KeyValue) -> io::Result<()> {
        let data = &mut self.data;
        let key_len = u32::try_from(kv.key.len()).map_err(io::Error::other)?;
        let value_len = u32::try_from(V4_HEADER + kv.value.len()).map_err(io::Error::other)?;
        data.extend_from_slice(&key_len.to_be_bytes());
        data.extend_from_slice(&kv.key);
        data.extend_from_slice(&value_len.to_be_bytes());
        for number in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
            data.extend_from_slice(&number.to_be_bytes());
        }
        data.extend_from_slice(&kv.value);
        Ok(())
    }
}

/// Reads up to `len` bytes; fewer only at the end of `input`. Allocates
/// no more than the bytes that are there (a length read from the data is
/// not trusted).
fn read_up_to(input: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input.take(len as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Which layout the records have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// v4: revisions in a 32-byte header.
    Revisions,
    /// v2 and v3: a `record` header (format, modified index, lease).
    Headers,
    /// v1: bare values.
    Bare,
}

/// Decodes snapshot data of any version from `input`, one key at a time,
/// so data of any size is read through a small buffer. Malformed data (a
/// cut record, keys out of order or repeated, a bad header, a bad lease
/// table, a key attached to a lease not in it, impossible revisions) is
/// `InvalidData`.
pub struct Decoder<R> {
    input: R,
    layout: Layout,
    leases: LeaseTable,
    /// Key weight attached to each lease so far (same order as `leases`).
    weights: Vec<u64>,
    last_key: Option<Vec<u8>>,
}

impl<R: Read> Decoder<R> {
    /// Reads the format marker and the lease table.
    pub fn new(input: R) -> io::Result<Decoder<io::Chain<io::Cursor<Vec<u8>>, R>>> {
        let mut input = input;
        let start = read_up_to(&mut input, SNAPSHOT_V4.len())?;
        let (layout, has_table, unread) = match start.as_slice() {
            s if s == SNAPSHOT_V4 => (Layout::Revisions, true, Vec::new()),
            s if s == SNAPSHOT_V3 => (Layout::Headers, true, Vec::new()),
            s if s == SNAPSHOT_V2 => (Layout::Headers, false, Vec::new()),
            // No marker: the bytes read are the first record's.
            _ => (Layout::Bare, false, start),
        };
        let mut input = io::Cursor::new(unread).chain(input);
        let leases = if has_table {
            let count = read_up_to(&mut input, 4)?;
            let count_bytes: [u8; 4] = count
                .as_slice()
                .try_into()
                .map_err(|_| invalid("malformed snapshot lease table"))?;
            let len = u32::from_be_bytes(count_bytes) as usize;
            let mut table = count;
            table.extend(read_up_to(&mut input, len.saturating_mul(16))?);
            let (leases, rest) = leases::decode_table(&table)?;
            if !rest.is_empty() {
                return Err(invalid("malformed snapshot lease table"));
            }
            leases
        } else {
            Vec::new()
        };
        Ok(Decoder {
            input,
            layout,
            weights: vec![0; leases.len()],
            leases,
            last_key: None,
        })
    }
}

impl<R: Read> Decoder<R> {
    /// The lease table.
    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// One length-prefixed part of a record; `None` at the very end.
    fn part(&mut self, at_start: bool) -> io::Result<Option<Vec<u8>>> {
        let len = read_up_to(&mut self.input, 4)?;
        if len.is_empty() && at_start {
            return Ok(None);
        }
        let len: [u8; 4] = len
            .as_slice()
            .try_into()
            .map_err(|_| invalid("malformed snapshot data"))?;
        let len = u32::from_be_bytes(len) as usize;
        let part = read_up_to(&mut self.input, len)?;
        if part.len() != len {
            return Err(invalid("malformed snapshot data"));
        }
        Ok(Some(part))
    }

    /// The next key in key order, or `None` after the last.
    pub fn next_key(&mut self) -> io::Result<Option<KeyValue>> {
        let Some(key) = self.part(true)? else {
            return Ok(None);
        };
        let Some(value) = self.part(false)? else {
            return Err(invalid("malformed snapshot data"));
        };
        if self.last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err(invalid("snapshot keys out of order"));
        }
        let kv = match self.layout {
            Layout::Revisions => {
                if value.len() < V4_HEADER {
                    return Err(invalid("malformed snapshot value"));
                }
                let kv = KeyValue {
                    create_revision: u64_at(&value, 0),
                    mod_revision: u64_at(&value, 8),
                    version: u64_at(&value, 16),
                    lease: u64_at(&value, 24),
                    value: value[V4_HEADER..].to_vec(),
                    key,
                };
                if kv.version == 0
                    || kv.create_revision == 0
                    || kv.create_revision > kv.mod_revision
                {
                    return Err(invalid("snapshot data holds impossible revisions"));
                }
                kv
            }
            Layout::Headers => {
                let record = record::decode(&value)?;
                KeyValue {
                    value: record.value.to_vec(),
                    create_revision: BEFORE_REVISIONS,
                    mod_revision: BEFORE_REVISIONS,
                    version: 1,
                    lease: record.lease,
                    key,
                }
            }
            Layout::Bare => KeyValue {
                key,
                value,
                create_revision: BEFORE_REVISIONS,
                mod_revision: BEFORE_REVISIONS,
                version: 1,
                lease: 0,
            },
        };
        if kv.lease != 0 {
            let Ok(at) = self.leases.binary_search_by_key(&kv.lease, |(id, _)| *id) else {
                return Err(invalid(
                    "snapshot data attaches a key to a lease it does not hold",
                ));
            };
            self.weights[at] = self.weights[at].saturating_add(leases::key_weight(&kv.key));
            if self.weights[at] > leases::MAX_LEASE_KEY_BYTES {
                return Err(invalid(
                    "snapshot data attaches more keys to a lease than one may carry",
                ));
            }
        }
        self.last_key = Some(kv.key.clone());
        Ok(Some(kv))
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut number = [0; 8];
    number.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(number)
}

/// Decodes snapshot data of any version, whole (see [`Decoder`]).
#[cfg(test)]
pub fn decode(data: &[u8]) -> io::Result<Decoded> {
    let mut decoder = Decoder::new(data)?;
    let mut keys = Vec::new();
    while let Some(kv) = decoder.next_key()? {
        keys.push(kv);
    }
    Ok(Decoded {
        leases: decoder.leases,
        keys,
    })
}

/// Checks that the snapshot data `input` yields is data this state machine
/// can load, for a snapshot up to log index `last_index`: no lease granted
/// and no key written after it. Returns the number of keys.
pub fn check_from(input: impl Read, last_index: u64) -> io::Result<usize> {
    let mut decoder = Decoder::new(input)?;
    if decoder
        .leases()
        .last()
        .is_some_and(|(id, _)| *id > last_index)
    {
        return Err(invalid(
            "snapshot data holds a lease granted after the snapshot's last index",
        ));
    }
    let mut count = 0;
    while let Some(kv) = decoder.next_key()? {
        if kv.mod_revision > last_index {
            return Err(invalid(
                "snapshot data holds a key written after the snapshot's last index",
            ));
        }
        count += 1;
    }
    Ok(count)
}

/// [`check_from`] over data in memory.
pub fn check(data: &[u8], last_index: u64) -> io::Result<usize> {
    check_from(data, last_index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(
        key: &[u8],
        value: &[u8],
        create: u64,
        modified: u64,
        version: u64,
        lease: u64,
    ) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: create,
            mod_revision: modified,
            version,
            lease,
        }
    }

    fn encode(leases: &[(u64, u64)], keys: &[KeyValue]) -> Vec<u8> {
        let mut encoder = Encoder::new(leases).unwrap();
        for key in keys {
            encoder.push(key).unwrap();
        }
        let data = encoder.take();
        // The sizes a sender announces before streaming are exact.
        let announced =
            Encoder::start_len(leases) + keys.iter().map(Encoder::record_len).sum::<u64>();
        assert_eq!(announced, data.len() as u64);
        data
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let keys = vec![
            kv(b"", b"empty key", 2, 5, 3, 0),
            kv(b"a", b"1", 6, 6, 1, 6),
        ];
        let data = encode(&[(6, 30)], &keys);
        let decoded = decode(&data).unwrap();
        assert_eq!(decoded.leases, vec![(6, 30)]);
        assert_eq!(decoded.keys, keys);
        assert_eq!(check(&data, 6).unwrap(), 2);
        assert!(check(&data, 5).is_err(), "written after the snapshot");
        assert!(decode(&data[..data.len() - 1]).is_err());
        assert!(decode(&[0, 0, 0, 9, 1]).is_err());
        // A key attached to a lease the table does not hold.
        assert!(decode(&encode(&[(8, 30)], &[kv(b"a", b"1", 1, 1, 1, 7)])).is_err());
        // Impossible revisions.
        for bad in [
            kv(b"a", b"", 0, 1, 1, 0),
            kv(b"a", b"", 3, 2, 1, 0),
            kv(b"a", b"", 1, 1, 0, 0),
        ] {
            assert!(
                decode(&encode(&[], std::slice::from_ref(&bad))).is_err(),
                "{bad:?}"
            );
        }
        // Keys out of order or repeated.
        for keys in [[&b"b"[..], b"a"], [b"a", b"a"]] {
            let keys: Vec<_> = keys.iter().map(|k| kv(k, b"v", 1, 1, 1, 0)).collect();
            assert!(decode(&encode(&[], &keys)).is_err(), "{keys:?}");
        }
    }

    #[test]
    fn earlier_formats_load_with_revision_one_for_every_key() {
        let before = |lease| kv(b"k", b"v", BEFORE_REVISIONS, BEFORE_REVISIONS, 1, lease);
        // The third format: lease table, values behind a header.
        let value = record::encode(9, 4, b"v");
        let len = (value.len() as u32).to_be_bytes();
        let mut v3 = SNAPSHOT_V3.to_vec();
        leases::encode_table(&[(4, 30)], &mut v3).unwrap();
        v3.extend_from_slice(&[0, 0, 0, 1, b'k']);
        v3.extend_from_slice(&len);
        v3.extend_from_slice(&value);
        assert_eq!(decode(&v3).unwrap().keys, vec![before(4)]);
        // The second: no table, so no lease either.
        let plain = record::encode(9, 0, b"v");
        let len = (plain.len() as u32).to_be_bytes();
        let v2 = [SNAPSHOT_V2, &[0, 0, 0, 1, b'k'], &len, &plain].concat();
        assert_eq!(decode(&v2).unwrap().keys, vec![before(0)]);
        // The first: bare values, no marker.
        let v1 = [&[0, 0, 0, 1, b'k', 0, 0, 0, 1][..], b"v"].concat();
        assert_eq!(decode(&v1).unwrap().keys, vec![before(0)]);
    }
}
