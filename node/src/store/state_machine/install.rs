//! Snapshots on the state machine's side: the state taken for one (pinned,
//! not copied: see `snapshot`), and the state replaced by one, whether
//! received from elsewhere, resumed after a crash, or this node's own
//! (forced recovery). The order of writes and syncs here is what the
//! durability rules in `state_machine` describe for `install_snapshot`.

use std::collections::BTreeSet;
use std::io;
use std::sync::MutexGuard;

use super::StateMachineStore;
use crate::codec::encode;
use crate::store::disk::io_error;
use crate::store::keyspace::RowBuffer;
use crate::store::keyspace::Version;
use crate::store::sm_meta::read_applied;
use crate::store::sm_meta::write_applied;
use crate::store::sm_meta::write_u64;
use crate::store::sm_meta::Applied;
use crate::store::sm_meta::ALARMS;
use crate::store::sm_meta::CLUSTER_ID;
use crate::store::sm_meta::CLUSTER_VERSION;
use crate::store::sm_meta::COMPACT_DONE;
use crate::store::sm_meta::INSTALLING;
use crate::store::sm_meta::MEMBERSHIP;
use crate::store::snapshot::Received;
use crate::store::snapshot::StateAt;
use crate::store::snapshot_data;
use crate::types::SnapshotMeta;

impl StateMachineStore {
    /// The state at the last applied revision, pinned, as snapshot data with
    /// its meta (the empty state at revision 0 before anything is applied).
    /// Call between two applies
    /// (on the state-machine task), where the revision, membership and lease
    /// table agree.
    pub(super) fn state_now(&self) -> io::Result<(SnapshotMeta, StateAt)> {
        let reader = &self.reader;
        let last_log_id = reader.last_applied()?;
        let epoch = reader.revisions.epoch()?;
        let pin = reader.revisions.pin(last_log_id.map_or(0, |l| l.index))?;
        // The history a follower gets with the state starts here; pinned
        // too, so compaction cannot remove it while the state streams.
        let history = reader.revisions.pin(reader.revisions.compacted())?;
        let state = StateAt::new(
            reader.clone(),
            pin,
            history,
            epoch,
            reader.leases.all()?,
            reader.alarms(),
            (reader.cluster_id(), reader.cluster_version()),
        );
        let meta = SnapshotMeta {
            last_log_id,
            last_membership: reader.membership()?,
        };
        Ok((meta, state))
    }

    /// Replaces the key-value state and `applied` with the snapshot's, and
    /// `membership` (not atomically: see `install_snapshot`). History starts
    /// at the data's compaction point (data with history: the sender's), or
    /// else at the snapshot's revision.
    pub(super) fn load_snapshot(
        &self,
        _gate: &MutexGuard<'_, bool>,
        meta: &SnapshotMeta,
        data: impl io::Read,
    ) -> io::Result<()> {
        // Empty data (no snapshot yet) decodes as the empty state.
        let mut decoder = snapshot_data::Decoder::new(data)?;
        let (space, lease_trees) = (&self.reader.space, &self.reader.leases);
        space.clear()?;
        lease_trees.clear()?;
        for (id, ttl) in decoder.leases() {
            lease_trees.grant(*id, *ttl, 0)?;
        }
        let mut keys = 0;
        let mut rows = RowBuffer::default();
        while let Some(Version {
            revision,
            sub,
            row,
            live,
        }) = decoder.next_version()?
        {
            if live {
                keys += 1;
                if row.lease != 0 {
                    lease_trees.attach(row.lease, &row.key)?;
                }
            }
            space.write_buffered(revision, sub, &row, &mut rows)?;
        }
        space.flush_rows(&mut rows)?;
        self.lease_changes.send_modify(|count| *count += 1);
        let sm_meta = &self.reader.meta;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let compacted = decoder.compacted().unwrap_or(index).min(index);
        write_u64(sm_meta, COMPACT_DONE, compacted)?;
        let alarms: BTreeSet<u64> = decoder.alarms().iter().copied().collect();
        sm_meta.insert(ALARMS, encode(&alarms)?).map_err(io_error)?;
        // Data of earlier versions names no cluster: the id this node has
        // stays (a cluster keeps its id; a new leader names one if none).
        if decoder.cluster_id() != 0 {
            write_u64(sm_meta, CLUSTER_ID, decoder.cluster_id())?;
        }
        // The state at the snapshot's index had this version; entries after
        // it raise it again. Data without one was sent at the first release's.
        match decoder.cluster_version() {
            Some(version) => write_u64(sm_meta, CLUSTER_VERSION, version.to_u64())?,
            None => {
                sm_meta.remove(CLUSTER_VERSION).map_err(io_error)?;
            }
        }
        sm_meta
            .insert(MEMBERSHIP, encode(&meta.last_membership)?)
            .map_err(io_error)?;
        write_applied(
            sm_meta,
            &Applied {
                log_id: meta.last_log_id,
                compacted,
                keys,
            },
        )
    }

    /// Installs snapshot data received from elsewhere (see the module's
    /// durability rules): checked in one pass over its file, recorded as
    /// the install under way, loaded in a second pass. Blocks.
    pub(super) fn install_received(
        &self,
        meta: &SnapshotMeta,
        mut received: Received,
    ) -> io::Result<()> {
        // Reject malformed data before anything is changed.
        snapshot_data::check_from(received.reader()?, meta.last_log_id.map_or(0, |l| l.index))?;
        let name = received
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.reader
            .meta
            .insert(INSTALLING, encode(&(meta, name))?)
            .map_err(io_error)?;
        self.disk.sync()?;
        received.keep();
        crate::crash_point!("snapshot-install-before-load");
        self.load_installed(meta, received)
    }

    /// Replaces the state with the snapshot in `received`, syncs it, then
    /// ends the install: the marker goes, and the file.
    pub(super) fn load_installed(&self, meta: &SnapshotMeta, received: Received) -> io::Result<()> {
        {
            let _installing = self.reader.revisions.installing();
            self.load_snapshot(&self.write_gate()?, meta, received.reader()?)?;
            self.disk.sync()?;
            self.publish()?;
        }
        // The marker's removal is on disk before the file goes: sled keeps
        // an unsynced removal in memory, so a crash after the file went
        // would otherwise find a marker naming a file that is gone, and the
        // node could not start.
        self.reader.meta.remove(INSTALLING).map_err(io_error)?;
        self.disk.sync()?;
        received.remove()?;
        crate::crash_point!("snapshot-install-after-load");
        Ok(())
    }

    /// "Installs" this node's own state at its applied revision under `meta`
    /// (forced recovery does, with a new membership): only `membership` and
    /// the applied log id change. Blocks.
    pub(super) fn install_own(&self, meta: &SnapshotMeta, state: &StateAt) -> io::Result<()> {
        let gate = self.write_gate()?;
        let mut applied = read_applied(&self.reader.meta)?;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        if state.revision() != applied.revision() || index != applied.revision() {
            return Err(io::Error::other(format!(
                "cannot install this node's own state at revision {} as a snapshot at index \
                 {index}: the state is at {}",
                state.revision(),
                applied.revision()
            )));
        }
        self.reader
            .meta
            .insert(MEMBERSHIP, encode(&meta.last_membership)?)
            .map_err(io_error)?;
        applied.log_id = meta.last_log_id;
        write_applied(&self.reader.meta, &applied)?;
        drop(gate);
        self.disk.sync()
    }
}
