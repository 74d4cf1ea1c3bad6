//! The snapshot data format: the state at one revision, as snapshots,
//! their transfer to followers and backups carry it.
//!
//! One file over the usual length: one format, whose encoder, decoder and
//! checker must be read together to stay in agreement.
//!
//! [`SNAPSHOT_V7`] (what a leader sends once the cluster version is 0.2 or
//! later): [`SNAPSHOT_V6`] with the marker 7 and the cluster version
//! (major u32, minor u32, BE) after the cluster's id. A leader sends v6
//! while the cluster version is older, since 0.1 nodes read only that.
//!
//! [`SNAPSHOT_V6`] (what a 0.1 leader sends a follower): [`SNAPSHOT_V5`] with
//! the marker 6 and the cluster's id (u64 BE, 0: not named yet) after the
//! alarms.
//!
//! [`SNAPSHOT_V5`] (what earlier leaders sent): the marker, the
//! compaction point (u64 BE), the lease table (see `leases::encode_table`),
//! the members whose NOSPACE alarm is raised (u32 count, then u64 ids in
//! increasing order, all BE), then every version a read or watch at the compaction point or later can
//! see, through the snapshot's revision, in row order (revision, then sub):
//! `revision u64, sub u32, kind u8 (0 put, 1 delete, 2 put that is its
//! key's live version at the snapshot), create_revision u64, version u64,
//! lease u64 (all BE), u32 key length, key, u32 value length, value`. The
//! receiver's rows and compaction point are then the sender's, so every
//! node serves the same watch range. Live versions' leases are in the table.
//!
//! [`SNAPSHOT_V4`] (what a backup holds: the state without history): the
//! marker, the lease table, then one record per live key in key order:
//! `u32 key length (BE), key, u32 length (BE), create_revision u64,
//! mod_revision u64, version u64, lease u64 (all BE), value`. Every key's
//! lease is 0 or one in the table. Its history starts at its revision.
//!
//! Earlier versions wrote [`SNAPSHOT_V3`] (the same table, values behind a
//! 17-byte header: format 1, modified index, lease), [`SNAPSHOT_V2`] (no
//! table) and, first, records of bare values without a marker. They load
//! with `create_revision` = `mod_revision` = 1 and version 1 for every key,
//! the same on every replica, since they never recorded more.
//!
//! A marker of a format newer than these is refused, never read as data
//! without a marker.
//!
//! Integrity in transit is the stream's job (a CRC-32 trailer, see the Raft
//! service); this format checks structure only.

use std::io;
use std::io::Read;

use super::keyspace::KeyValue;
use super::keyspace::Row;
use super::keyspace::Version;
use super::leases;
use super::leases::LeaseTable;
use super::record;
use crate::store::disk::io_error;
use crate::version::Version as Release;

/// The first bytes of data with value headers: a key length no key can have,
/// then the format number.
const SNAPSHOT_V2: &[u8] = &[0xff, 0xff, 0xff, 0xff, 2];
/// With a lease table.
const SNAPSHOT_V3: &[u8] = &[0xff, 0xff, 0xff, 0xff, 3];
/// With revisions: the state alone (backups).
pub const SNAPSHOT_V4: &[u8] = &[0xff, 0xff, 0xff, 0xff, 4];
/// With revisions and history: what earlier leaders sent a follower.
pub const SNAPSHOT_V5: &[u8] = &[0xff, 0xff, 0xff, 0xff, 5];
/// v5 and the cluster's id: what a 0.1 leader sends a follower.
pub const SNAPSHOT_V6: &[u8] = &[0xff, 0xff, 0xff, 0xff, 6];
/// v6 and the cluster version.
pub const SNAPSHOT_V7: &[u8] = &[0xff, 0xff, 0xff, 0xff, 7];
/// The newest format this release reads (the marker's last byte).
pub const NEWEST_FORMAT: u8 = 7;
/// The revisions given to keys loaded from formats without them.
pub const BEFORE_REVISIONS: u64 = 1;
/// Bytes of a v4 value before the value itself.
const V4_HEADER: usize = 32;
/// Bytes of a v5 record before its key length.
const V5_HEADER: usize = 8 + 4 + 1 + 24;
const V5_PUT: u8 = 0;
const V5_DELETE: u8 = 1;
const V5_LIVE_PUT: u8 = 2;

/// Snapshot data, decoded.
#[cfg(test)]
#[derive(Debug)]
pub struct Decoded {
    /// v5: where the history starts.
    pub compacted: Option<u64>,
    pub alarms: Vec<u64>,
    pub cluster_id: u64,
    pub cluster_version: Option<Release>,
    pub leases: LeaseTable,
    /// Live keys (in key order for data without history).
    pub keys: Vec<KeyValue>,
    /// Every record, as versions.
    pub versions: Vec<Version>,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Appends snapshot data, record by record; the bytes so far may be taken
/// out at any point, so data of any size streams through a small buffer.
pub struct Encoder {
    data: Vec<u8>,
}

impl Encoder {
    /// The state alone ([`SNAPSHOT_V4`], for backups): then [`Encoder::push`].
    pub fn new(leases: &[(u64, u64)]) -> io::Result<Encoder> {
        let mut data = SNAPSHOT_V4.to_vec();
        leases::encode_table(leases, &mut data)?;
        Ok(Encoder { data })
    }

    /// The state with its history back to `compacted`, the raised alarms,
    /// the cluster's id and version ([`SNAPSHOT_V7`], or [`SNAPSHOT_V6`]
    /// while the cluster version is the first release's), for followers:
    /// then [`Encoder::push_version`].
    pub fn with_history(
        leases: &[(u64, u64)],
        alarms: &[u64],
        cluster: (u64, Release),
        compacted: u64,
    ) -> io::Result<Encoder> {
        let (cluster_id, cluster_version) = cluster;
        let versioned = cluster_version > Release::FIRST;
        let mut data = if versioned {
            SNAPSHOT_V7.to_vec()
        } else {
            SNAPSHOT_V6.to_vec()
        };
        data.extend_from_slice(&compacted.to_be_bytes());
        leases::encode_table(leases, &mut data)?;
        let count = u32::try_from(alarms.len()).map_err(io_error)?;
        data.extend_from_slice(&count.to_be_bytes());
        for member in alarms {
            data.extend_from_slice(&member.to_be_bytes());
        }
        data.extend_from_slice(&cluster_id.to_be_bytes());
        if versioned {
            data.extend_from_slice(&cluster_version.major.to_be_bytes());
            data.extend_from_slice(&cluster_version.minor.to_be_bytes());
        }
        Ok(Encoder { data })
    }

    /// Bytes encoded and not yet taken.
    pub fn buffered(&self) -> usize {
        self.data.len()
    }

    /// Takes the bytes encoded so far.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.data)
    }

    /// Appends `kv` (v4); keys must come in increasing order.
    pub fn push(&mut self, kv: &KeyValue) -> io::Result<()> {
        let data = &mut self.data;
        let key_len = u32::try_from(kv.key.len()).map_err(io_error)?;
        let value_len = u32::try_from(V4_HEADER + kv.value.len()).map_err(io_error)?;
        data.extend_from_slice(&key_len.to_be_bytes());
        data.extend_from_slice(&kv.key);
        data.extend_from_slice(&value_len.to_be_bytes());
        for number in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
            data.extend_from_slice(&number.to_be_bytes());
        }
        data.extend_from_slice(&kv.value);
        Ok(())
    }

    /// Appends `version` (v5); versions must come in row order.
    pub fn push_version(&mut self, version: &Version) -> io::Result<()> {
        let row = &version.row;
        let value = row.value.as_deref().unwrap_or_default();
        let key_len = u32::try_from(row.key.len()).map_err(io_error)?;
        let value_len = u32::try_from(value.len()).map_err(io_error)?;
        let kind = match (&row.value, version.live) {
            (None, _) => V5_DELETE,
            (Some(_), false) => V5_PUT,
            (Some(_), true) => V5_LIVE_PUT,
        };
        let data = &mut self.data;
        data.extend_from_slice(&version.revision.to_be_bytes());
        data.extend_from_slice(&version.sub.to_be_bytes());
        data.push(kind);
        for number in [row.create_revision, row.version, row.lease] {
            data.extend_from_slice(&number.to_be_bytes());
        }
        data.extend_from_slice(&key_len.to_be_bytes());
        data.extend_from_slice(&row.key);
        data.extend_from_slice(&value_len.to_be_bytes());
        data.extend_from_slice(value);
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

/// Reads one u64 (BE); data cut short is `InvalidData` saying `malformed`.
fn read_u64(input: &mut impl Read, malformed: &str) -> io::Result<u64> {
    let bytes = read_up_to(input, 8)?;
    if bytes.len() != 8 {
        return Err(invalid(malformed));
    }
    Ok(u64_at(&bytes, 0))
}

/// Which layout the records have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// v5: every visible version, in row order.
    History,
    /// v4: live keys, revisions in a 32-byte header.
    Revisions,
    /// v2 and v3: a `record` header (format, modified index, lease).
    Headers,
    /// v1: bare values.
    Bare,
}

/// Decodes snapshot data of any version from `input`, one record at a
/// time, so data of any size is read through a small buffer. Malformed data
/// (a cut record, records out of order or repeated, a bad header, a bad
/// lease table, a live key attached to a lease not in it, impossible
/// revisions) is `InvalidData`.
pub struct Decoder<R> {
    input: R,
    layout: Layout,
    /// v5: the compaction point the data's history starts at.
    compacted: Option<u64>,
    leases: LeaseTable,
    /// v5: members whose NOSPACE alarm is raised.
    alarms: Vec<u64>,
    /// v6: the cluster's id (0 for earlier versions: not carried).
    cluster_id: u64,
    /// v7: the cluster version (`None` for earlier versions: the first
    /// release's, which they do not carry).
    cluster_version: Option<Release>,
    /// Key weight attached to each lease so far (same order as `leases`).
    weights: Vec<u64>,
    /// v1–v4: the last key, which the next must follow.
    last_key: Option<Vec<u8>>,
    /// v5: the last row's place, which the next must follow.
    last_row: Option<(u64, u32)>,
    /// v1–v4: the sub-revision the next key gets (keys of one revision
    /// need distinct rows).
    next_sub: u32,
}

impl<R: Read> Decoder<R> {
    /// Reads the format marker, the compaction point (v5) and the lease table.
    pub fn new(input: R) -> io::Result<Decoder<io::Chain<io::Cursor<Vec<u8>>, R>>> {
        let mut input = input;
        let start = read_up_to(&mut input, SNAPSHOT_V4.len())?;
        let has_cluster_id = start.as_slice() == SNAPSHOT_V6 || start.as_slice() == SNAPSHOT_V7;
        let has_cluster_version = start.as_slice() == SNAPSHOT_V7;
        if let [0xff, 0xff, 0xff, 0xff, format] = start.as_slice() {
            if *format > NEWEST_FORMAT {
                return Err(invalid(&format!(
                    "snapshot data of format {format}: this release reads up to {NEWEST_FORMAT}; \
                     upgrade this node"
                )));
            }
        }
        let (layout, has_table, unread) = match start.as_slice() {
            s if s == SNAPSHOT_V7 || s == SNAPSHOT_V6 || s == SNAPSHOT_V5 => {
                (Layout::History, true, Vec::new())
            }
            s if s == SNAPSHOT_V4 => (Layout::Revisions, true, Vec::new()),
            s if s == SNAPSHOT_V3 => (Layout::Headers, true, Vec::new()),
            s if s == SNAPSHOT_V2 => (Layout::Headers, false, Vec::new()),
            // No marker: the bytes read are the first record's.
            _ => (Layout::Bare, false, start),
        };
        let mut input = io::Cursor::new(unread).chain(input);
        let compacted = if layout == Layout::History {
            Some(read_u64(&mut input, "malformed snapshot data")?)
        } else {
            None
        };
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
        let mut alarms = Vec::new();
        if layout == Layout::History {
            let count = read_up_to(&mut input, 4)?;
            let count: [u8; 4] = count
                .as_slice()
                .try_into()
                .map_err(|_| invalid("malformed snapshot alarms"))?;
            let count = u32::from_be_bytes(count) as usize;
            let ids = read_up_to(&mut input, count.saturating_mul(8))?;
            if ids.len() != count * 8 {
                return Err(invalid("malformed snapshot alarms"));
            }
            for at in (0..ids.len()).step_by(8) {
                let member = u64_at(&ids, at);
                if alarms.last().is_some_and(|last| *last >= member) {
                    return Err(invalid("snapshot alarms out of order"));
                }
                alarms.push(member);
            }
        }
        let cluster_id = if has_cluster_id {
            read_u64(&mut input, "malformed snapshot cluster id")?
        } else {
            0
        };
        let cluster_version = if has_cluster_version {
            let packed = read_u64(&mut input, "malformed snapshot cluster version")?;
            Some(Release::from_u64(packed))
        } else {
            None
        };
        Ok(Decoder {
            input,
            layout,
            compacted,
            alarms,
            cluster_id,
            cluster_version,
            weights: vec![0; leases.len()],
            leases,
            last_key: None,
            last_row: None,
            next_sub: 0,
        })
    }
}

impl<R: Read> Decoder<R> {
    /// The lease table.
    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// Members whose NOSPACE alarm is raised (none for data without history).
    pub fn alarms(&self) -> &[u64] {
        &self.alarms
    }

    /// The cluster's id (0: not named, or data of an earlier version).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The cluster version (`None`: data of a format without it, which a
    /// cluster at the first release's version sends).
    pub fn cluster_version(&self) -> Option<Release> {
        self.cluster_version
    }

    /// The compaction point the data's history starts at; `None` for data
    /// without history, whose history starts at its own revision.
    pub fn compacted(&self) -> Option<u64> {
        self.compacted
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

    /// Counts `key`'s weight against `lease`, which must be in the table.
    fn attach(&mut self, lease: u64, key: &[u8]) -> io::Result<()> {
        let Ok(at) = self.leases.binary_search_by_key(&lease, |(id, _)| *id) else {
            return Err(invalid(
                "snapshot data attaches a key to a lease it does not hold",
            ));
        };
        self.weights[at] = self.weights[at].saturating_add(leases::key_weight(key));
        if self.weights[at] > leases::MAX_LEASE_KEY_BYTES {
            return Err(invalid(
                "snapshot data attaches more keys to a lease than one may carry",
            ));
        }
        Ok(())
    }

    /// The next record, or `None` after the last: for data without history,
    /// each live key as a version at its mod revision.
    pub fn next_version(&mut self) -> io::Result<Option<Version>> {
        if self.layout == Layout::History {
            return self.next_history_row();
        }
        let Some(kv) = self.next_key()? else {
            return Ok(None);
        };
        let sub = self.next_sub;
        self.next_sub = sub
            .checked_add(1)
            .ok_or_else(|| invalid("snapshot data holds too many keys"))?;
        Ok(Some(Version {
            revision: kv.mod_revision,
            sub,
            row: Row {
                key: kv.key,
                value: Some(kv.value),
                create_revision: kv.create_revision,
                version: kv.version,
                lease: kv.lease,
            },
            live: true,
        }))
    }

    /// A v5 record.
    fn next_history_row(&mut self) -> io::Result<Option<Version>> {
        let header = read_up_to(&mut self.input, V5_HEADER)?;
        if header.is_empty() {
            return Ok(None);
        }
        if header.len() != V5_HEADER {
            return Err(invalid("malformed snapshot data"));
        }
        let revision = u64_at(&header, 0);
        let sub = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let kind = header[12];
        let (create_revision, version, lease) = (
            u64_at(&header, 13),
            u64_at(&header, 21),
            u64_at(&header, 29),
        );
        let (Some(key), Some(value)) = (self.part(false)?, self.part(false)?) else {
            return Err(invalid("malformed snapshot data"));
        };
        if self.last_row.is_some_and(|last| last >= (revision, sub)) || revision == 0 {
            return Err(invalid("snapshot rows out of order"));
        }
        self.last_row = Some((revision, sub));
        let compacted = self.compacted.unwrap_or(0);
        let row = match kind {
            V5_DELETE => {
                if !value.is_empty() || create_revision != 0 || version != 0 || lease != 0 {
                    return Err(invalid("malformed snapshot delete"));
                }
                if revision <= compacted {
                    return Err(invalid(
                        "snapshot data holds a delete the compaction point removed",
                    ));
                }
                Row {
                    key,
                    value: None,
                    create_revision,
                    version,
                    lease,
                }
            }
            V5_PUT | V5_LIVE_PUT => {
                if version == 0 || create_revision == 0 || create_revision > revision {
                    return Err(invalid("snapshot data holds impossible revisions"));
                }
                Row {
                    key,
                    value: Some(value),
                    create_revision,
                    version,
                    lease,
                }
            }
            _ => return Err(invalid("malformed snapshot data")),
        };
        let live = kind == V5_LIVE_PUT;
        if live && lease != 0 {
            self.attach(lease, &row.key)?;
        }
        Ok(Some(Version {
            revision,
            sub,
            row,
            live,
        }))
    }

    /// The next key of data without history, in key order.
    fn next_key(&mut self) -> io::Result<Option<KeyValue>> {
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
            Layout::Bare | Layout::History => KeyValue {
                key,
                value,
                create_revision: BEFORE_REVISIONS,
                mod_revision: BEFORE_REVISIONS,
                version: 1,
                lease: 0,
            },
        };
        if kv.lease != 0 {
            self.attach(kv.lease, &kv.key)?;
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
    let mut versions = Vec::new();
    while let Some(version) = decoder.next_version()? {
        versions.push(version);
    }
    let keys = versions
        .iter()
        .filter(|v| v.live)
        .filter_map(|v| v.row.clone().into_key_value(v.revision))
        .collect();
    Ok(Decoded {
        alarms: decoder.alarms.clone(),
        cluster_id: decoder.cluster_id,
        cluster_version: decoder.cluster_version,
        compacted: decoder.compacted,
        leases: decoder.leases,
        keys,
        versions,
    })
}

/// Checks that the snapshot data `input` yields is data this state machine
/// can load, for a snapshot up to log index `last_index`: no key written
/// and no compaction point after it. (A lease's id says nothing about when
/// it was granted: a client may choose it.) Returns the number of live
/// keys.
pub fn check_from(input: impl Read, last_index: u64) -> io::Result<usize> {
    let mut decoder = Decoder::new(input)?;
    if decoder.compacted().is_some_and(|c| c > last_index) {
        return Err(invalid(
            "snapshot data is compacted past the snapshot's last index",
        ));
    }
    let mut count = 0;
    while let Some(version) = decoder.next_version()? {
        if version.revision > last_index {
            return Err(invalid(
                "snapshot data holds a key written after the snapshot's last index",
            ));
        }
        count += usize::from(version.live);
    }
    Ok(count)
}

/// [`check_from`] over data in memory.
pub fn check(data: &[u8], last_index: u64) -> io::Result<usize> {
    check_from(data, last_index)
}

#[cfg(test)]
mod tests;
