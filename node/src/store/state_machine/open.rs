//! Opening the state machine: the trees as a clean stop left them, or after
//! a crash rolled back to the applied revision with the derived data
//! recounted, or with an install cut short loaded again (see the durability
//! rules in `state_machine`); and the conversion of what earlier versions
//! stored (the `kv` tree, the stored snapshot, the older `sm_meta` values).

use std::io;
use std::sync::Arc;
use std::sync::Mutex;

use super::StateMachineStore;
use crate::codec::decode;
use crate::store::disk::io_error;
use crate::store::disk::Disk;
use crate::store::keyspace::KeySpace;
use crate::store::keyspace::Row;
use crate::store::keyspace::RowBuffer;
use crate::store::leases::LeaseTrees;
use crate::store::reader::KvReader;
use crate::store::record;
use crate::store::revisions::Revisions;
use crate::store::size::StoreSize;
use crate::store::sm_meta::read_applied;
use crate::store::sm_meta::write_applied;
use crate::store::sm_meta::write_u64;
use crate::store::sm_meta::Applied;
use crate::store::sm_meta::CLEAN;
use crate::store::sm_meta::COMPACTED;
use crate::store::sm_meta::COMPACT_DONE;
use crate::store::sm_meta::INSTALLING;
use crate::store::sm_meta::KEY_COUNT;
use crate::store::sm_meta::KV_FORMAT;
use crate::store::sm_meta::LAST_APPLIED;
use crate::store::sm_meta::REVISIONED;
use crate::store::sm_meta::REVISIONED_DISK_INDEX;
use crate::store::sm_meta::REVISIONED_LEASE_BY_ID;
use crate::store::sm_meta::REVISIONED_V2;
use crate::store::sm_meta::SPACE_BYTES;
use crate::store::sm_meta::STORE_FORMAT;
use crate::store::snapshot::Received;
use crate::store::snapshot::INCOMING_PREFIX;
use crate::store::snapshot_data;
use crate::types::SnapshotMeta;

/// Earlier versions' stored snapshot: `u32 meta length (BE)`, meta, data.
const SNAPSHOT: &[u8] = b"current";
/// Where earlier versions kept the snapshot's meta and data, read if `current` is absent.
const OLD_SNAPSHOT_META: &[u8] = b"meta";
const OLD_SNAPSHOT_DATA: &[u8] = b"data";

impl StateMachineStore {
    /// Opens the state-machine trees of `db`: after a clean stop as they
    /// are; after a crash as they are too, with the derived data recounted;
    /// with a snapshot install cut short, loads that snapshot again (see
    /// the module's durability rules). Converts the state of earlier
    /// versions; refuses the state of a newer version.
    pub fn open(
        db: &sled::Db,
        disk: Arc<Disk>,
        size: Arc<StoreSize>,
    ) -> io::Result<StateMachineStore> {
        let open = |name: &str| db.open_tree(name).map_err(io_error);
        let meta = open("sm_meta")?;
        let format = meta.get(STORE_FORMAT).map_err(io_error)?;
        let format = match format.as_deref() {
            None => None,
            Some([f])
                if [
                    REVISIONED,
                    REVISIONED_LEASE_BY_ID,
                    REVISIONED_DISK_INDEX,
                    REVISIONED_V2,
                ]
                .contains(f) =>
            {
                Some(*f)
            }
            Some(other) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the data directory holds key-value state of format {other:?}, written \
                         by a newer raftkv; this version reads formats up to {REVISIONED} only: \
                         run the newer version, or restore a backup into a new data directory"
                    ),
                ))
            }
        };
        let store = StateMachineStore {
            reader: KvReader {
                space: KeySpace::open(db, size.clone())?,
                meta,
                leases: LeaseTrees::open(db)?,
                revisions: Arc::new(Revisions::new()),
                alarms: Arc::default(),
                cluster_id: Arc::default(),
                cluster_version: Arc::default(),
                size: size.clone(),
            },
            snapshot: open("snapshot")?,
            disk,
            closed: Arc::new(Mutex::new(false)),
            lease_changes: Arc::new(tokio::sync::watch::Sender::new(0)),
            size,
        };
        let meta = &store.reader.meta;
        let clean = meta.remove(CLEAN).map_err(io_error)?.is_some();
        // On disk before anything is rewritten: a crash during the rewrite
        // must not find the marker that vouches for the trees.
        store.disk.sync()?;
        let old_kv = db.tree_names().iter().any(|name| name.as_ref() == b"kv");
        // The same rows; only the index moved to memory (built by `KeySpace::open`).
        let disk_index = format == Some(REVISIONED_DISK_INDEX);
        // Lease rows of format 4 decode with their id as their grant's
        // revision, which is what their ids were.
        let format = if disk_index || format == Some(REVISIONED_LEASE_BY_ID) {
            Some(REVISIONED)
        } else {
            format
        };
        let stored = store.stored_snapshot()?;
        let installing = meta.get(INSTALLING).map_err(io_error)?;
        match format {
            // An install cut short by a crash: its data file is complete and
            // synced, the key-value state may be half replaced.
            Some(REVISIONED) if installing.is_some() => store.resume_install(&installing)?,
            Some(REVISIONED) if !clean => store.recover()?,
            Some(REVISIONED) => {}
            // Earlier versions trusted their trees only after a clean stop,
            // and rebuilt from their stored snapshot otherwise.
            _ if !clean => store.reload(stored)?,
            Some(_) => {}
            None => store.convert_kv(db)?,
        }
        if old_kv {
            db.drop_tree("kv").map_err(io_error)?;
        }
        if disk_index {
            db.drop_tree("key_index").map_err(io_error)?;
        }
        // In this version's layout from here on; a crash before the sync
        // below redoes the conversion.
        write_applied(meta, &read_applied(meta)?)?;
        // The key space's count is made by `KeySpace::open` (and kept through
        // the recovery above); earlier versions stored it at a clean stop.
        for old in [LAST_APPLIED, COMPACTED, KEY_COUNT, SPACE_BYTES] {
            meta.remove(old).map_err(io_error)?;
        }
        meta.insert(STORE_FORMAT, &[REVISIONED]).map_err(io_error)?;
        store.disk.sync()?;
        store.forget_stored_snapshot()?;
        store.remove_incoming_files()?;
        store.publish()?;
        Ok(store)
    }

    /// Loads the snapshot an install cut short was loading, then ends the
    /// install as it would have ended.
    fn resume_install(&self, marker: &Option<sled::IVec>) -> io::Result<()> {
        let Some(marker) = marker else {
            return Ok(());
        };
        let (meta, name): (SnapshotMeta, String) = decode(marker)?;
        let path = self.disk.dir().join(&name);
        tracing::warn!(
            last_log_id = ?meta.last_log_id,
            file = %path.display(),
            "a snapshot install was cut short: loading the snapshot again"
        );
        let received = Received::left_at(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "the data directory records an unfinished snapshot install from {name}, \
                     which cannot be read ({e}): restore a backup or re-add this node with an \
                     empty data directory"
                ),
            )
        })?;
        self.load_installed(&meta, received)
    }

    /// Removes snapshot files left by receptions a crash cut short.
    fn remove_incoming_files(&self) -> io::Result<()> {
        for entry in std::fs::read_dir(self.disk.dir())? {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(INCOMING_PREFIX)
            {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Moves the key-value state of a version before revisions (tree `kv`)
    /// into the key space: every key gets `create_revision` = `mod_revision`
    /// = 1 and version 1, and history starts at the applied index. A crash
    /// midway leaves no `store_format`, and no `clean` marker: the next open
    /// rebuilds from the snapshot.
    fn convert_kv(&self, db: &sled::Db) -> io::Result<()> {
        let kv = db.open_tree("kv").map_err(io_error)?;
        let headers = self.reader.meta.get(KV_FORMAT).map_err(io_error)?.is_some();
        self.reader.space.clear()?;
        let mut count: u32 = 0;
        let mut rows = RowBuffer::default();
        for item in kv.iter() {
            let (key, stored) = item.map_err(io_error)?;
            let (lease, value) = if headers {
                let record = record::decode(&stored)?;
                (record.lease, record.value.to_vec())
            } else {
                (0, stored.to_vec())
            };
            let row = Row {
                key: key.to_vec(),
                value: Some(value),
                create_revision: snapshot_data::BEFORE_REVISIONS,
                version: 1,
                lease,
            };
            self.reader.space.write_buffered(
                snapshot_data::BEFORE_REVISIONS,
                count,
                &row,
                &mut rows,
            )?;
            count += 1;
        }
        self.reader.space.flush_rows(&mut rows)?;
        let log_id = read_applied(&self.reader.meta)?.log_id;
        let applied = log_id.map_or(0, |l| l.index);
        write_u64(&self.reader.meta, COMPACT_DONE, applied)?;
        write_applied(
            &self.reader.meta,
            &Applied {
                log_id,
                compacted: applied,
                keys: u64::from(count),
            },
        )?;
        tracing::info!(
            keys = count,
            "stored values converted to the revisioned format"
        );
        Ok(())
    }

    /// Loads `stored` (a snapshot, or nothing: the empty state) in place of
    /// the key-value state.
    fn reload(&self, stored: Option<(SnapshotMeta, sled::IVec)>) -> io::Result<()> {
        let applied = self.reader.last_applied()?;
        let snapshot_index = stored.as_ref().and_then(|(meta, _)| meta.last_log_id);
        if applied.is_some() || stored.is_some() {
            tracing::warn!(
                applied = ?applied,
                snapshot = ?snapshot_index,
                "loading the key-value state from the stored snapshot (an install was cut short, \
                 or an earlier version did not stop cleanly); the log replays the rest"
            );
        }
        let gate = self.write_gate()?;
        match stored {
            Some((meta, data)) => self.load_snapshot(&gate, &meta, &data[..]),
            None => self.load_snapshot(&gate, &SnapshotMeta::default(), &[][..]),
        }
    }

    /// After a crash: puts the key-value state back exactly as it was at
    /// the applied revision, then recounts what is derived from it. Rows of
    /// later revisions (a batch cut short) are removed rather than trusted
    /// to be rewritten alike: the log replays those entries from `applied`
    /// onto the state they were first applied to. Leases granted or revoked
    /// later are undone (see `leases`); the live key count and the lease key
    /// index are counted again from the keys at that revision.
    fn recover(&self) -> io::Result<()> {
        let reader = &self.reader;
        let mut applied = read_applied(&reader.meta)?;
        let revision = applied.revision();
        tracing::warn!(
            applied = revision,
            "the node did not stop cleanly: rolling the stored state back to the last applied \
             entry; the log replays the rest"
        );
        let started = std::time::Instant::now();
        let removed = reader.space.truncate_after(revision)?;
        reader.leases.reset_to(revision)?;
        let mut keys = 0;
        reader.walk(revision, |kv| {
            keys += 1;
            if kv.lease != 0 && reader.leases.info(kv.lease)?.is_some() {
                reader.leases.attach(kv.lease, &kv.key)?;
            }
            Ok(())
        })?;
        applied.keys = keys;
        write_applied(&reader.meta, &applied)?;
        tracing::info!(keys, rows_removed = removed, elapsed = ?started.elapsed(), "state recovered");
        Ok(())
    }

    /// A stored snapshot's meta, and its data as sled holds it (not copied).
    fn stored_snapshot(&self) -> io::Result<Option<(SnapshotMeta, sled::IVec)>> {
        let get = |key| self.snapshot.get(key).map_err(io_error);
        if let Some(stored) = get(SNAPSHOT)? {
            let malformed =
                || io::Error::new(io::ErrorKind::InvalidData, "malformed stored snapshot");
            let (len, rest) = stored.split_first_chunk::<4>().ok_or_else(malformed)?;
            let len = u32::from_be_bytes(*len) as usize;
            if rest.len() < len {
                return Err(malformed());
            }
            let meta = decode(&rest[..len])?;
            let data_start = 4 + len;
            let data = stored.subslice(data_start, stored.len() - data_start);
            return Ok(Some((meta, data)));
        }
        match (get(OLD_SNAPSHOT_META)?, get(OLD_SNAPSHOT_DATA)?) {
            (Some(meta), Some(data)) => Ok(Some((decode(&meta)?, data))),
            _ => Ok(None),
        }
    }

    /// Removes a stored snapshot once the state it was loaded into is synced.
    fn forget_stored_snapshot(&self) -> io::Result<()> {
        let mut removed = false;
        for key in [SNAPSHOT, OLD_SNAPSHOT_META, OLD_SNAPSHOT_DATA] {
            removed |= self.snapshot.remove(key).map_err(io_error)?.is_some();
        }
        if removed {
            // sled frees the removed value through crossbeam-epoch, which
            // batches garbage per thread and releases a batch only when 64
            // items are in it; this runs on a rarely used thread. Flushing
            // hands it to the global queue, freed once no reader can see it.
            crossbeam_epoch::pin().flush();
        }
        Ok(())
    }
}
