//! openraft's side of the state machine: [`RaftStateMachine`] (the apply
//! of committed entries, and snapshots handed to and taken from openraft)
//! and the [`SnapshotBuilder`]. The apply writes each entry's rows, then
//! `membership`, then `applied`, and publishes the revision to readers only
//! once the whole batch is written (see the durability rules in
//! `state_machine`).

use std::collections::BTreeSet;
use std::io;

use futures::Stream;
use futures::TryStreamExt;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;

use super::StateMachineStore;
use crate::codec::encode;
use crate::store::apply::EntryApply;
use crate::store::disk::io_error;
use crate::store::keyspace::RowBuffer;
use crate::store::sm_meta::write_applied;
use crate::store::sm_meta::write_u64;
use crate::store::sm_meta::Applied;
use crate::store::sm_meta::ALARMS;
use crate::store::sm_meta::CLUSTER_ID;
use crate::store::sm_meta::CLUSTER_VERSION;
use crate::store::sm_meta::MEMBERSHIP;
use crate::store::snapshot::Incoming;
use crate::store::snapshot::Snapshot;
use crate::store::snapshot::SnapshotData;
use crate::store::snapshot::StateAt;
use crate::types::CommandResult;
use crate::types::LogId;
use crate::types::SnapshotMeta;
use crate::types::StoredMembership;
use crate::types::TypeConfig;

/// What a snapshot needs from the state-machine task: its meta and the
/// pinned state, taken between two applies.
pub struct SnapshotBuilder {
    store: StateMachineStore,
    state: io::Result<(SnapshotMeta, StateAt)>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let state = std::mem::replace(
            &mut self.state,
            Err(io::Error::other("snapshot already built")),
        )?;
        let started = std::time::Instant::now();
        crate::crash_point!("snapshot-build-before-sync");
        // The trees through the snapshot's revision reach the disk before
        // openraft purges the log up to it. Nothing is copied.
        let disk = self.store.disk.clone();
        tokio::task::spawn_blocking(move || disk.sync())
            .await
            .map_err(io_error)??;
        let metrics = crate::metrics::global();
        crate::metrics::observe_since(&metrics.snapshot_build, started);
        let (meta, state) = state;
        let data = SnapshotData::State(state);
        tracing::info!(last_log_id = ?meta.last_log_id, "snapshot taken");
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.reader.last_applied()?, self.reader.membership()?))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        while let Some(item) = entries.try_next().await? {
            batch.push(item);
        }
        let Some((last, _)) = batch.last() else {
            return Ok(());
        };
        crate::metrics::global()
            .entries_applied
            .inc_by(batch.len() as u64);
        let last = last.log_id;
        let reader = &self.reader;
        let meta = &reader.meta;
        let gate = self.write_gate()?;
        let mut compacted = reader.revisions.compacted();
        let mut results = Vec::with_capacity(batch.len());
        let mut leases_changed = false;
        let mut keys = reader.revisions.key_count();
        // Alarms changed by this batch, published with it.
        let mut alarms: Option<BTreeSet<u64>> = None;
        // The cluster's id, named by this batch (published with it) or before.
        let mut cluster_id = reader.cluster_id();
        // The cluster version, raised by this batch or before.
        let mut cluster_version = reader.cluster_version();
        // The batch's rows go to sled together, before `applied` says so.
        let mut rows = RowBuffer::default();
        for (entry, responder) in batch {
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::Done,
                EntryPayload::Normal(command) => {
                    let mut apply = EntryApply::new(
                        &reader.space,
                        &reader.leases,
                        &mut rows,
                        entry.log_id.index,
                    );
                    let result = apply.command(command.into_command(), compacted)?;
                    leases_changed |= apply.effects.leases_changed;
                    if let Some(at) = apply.effects.compact {
                        compacted = at;
                    }
                    keys = keys.saturating_add_signed(apply.effects.keys_added);
                    if let Some((member, raise)) = apply.effects.alarm {
                        let set = alarms.get_or_insert_with(|| reader.alarms());
                        match (member, raise) {
                            (Some(member), true) => set.insert(member),
                            (Some(member), false) => set.remove(&member),
                            (None, false) => {
                                set.clear();
                                true
                            }
                            (None, true) => false,
                        };
                        // Replayed after a crash, the same entries end in
                        // the same set, whatever part of this was kept.
                        meta.insert(ALARMS, encode(&*set)?).map_err(io_error)?;
                    }
                    if let Some(id) = apply.effects.cluster_id {
                        // The first name wins; replayed after a crash, the
                        // entry finds its own name stored and keeps it.
                        if cluster_id == 0 {
                            cluster_id = id;
                            write_u64(meta, CLUSTER_ID, id)?;
                        }
                    }
                    if let Some(version) = apply.effects.cluster_version {
                        // Never lowered: an entry proposed before a higher
                        // one applied changes nothing.
                        if version > cluster_version {
                            cluster_version = version;
                            write_u64(meta, CLUSTER_VERSION, version.to_u64())?;
                            tracing::info!(%version, "cluster version raised");
                        }
                    }
                    // Rows of this entry written or buffered, `applied`
                    // not yet.
                    crate::crash_point!("apply-after-entry");
                    result
                }
                EntryPayload::Membership(membership) => {
                    let stored = StoredMembership::new(Some(entry.log_id), membership);
                    meta.insert(MEMBERSHIP, encode(&stored)?)
                        .map_err(io_error)?;
                    CommandResult::Done
                }
            };
            results.push((responder, result));
        }
        reader.space.flush_rows(&mut rows)?;
        write_applied(
            meta,
            &Applied {
                log_id: Some(last),
                compacted,
                keys,
            },
        )?;
        drop(gate);
        // Every row of the batch is written: readers may see it now, and a
        // client that saw its write applied at `i` and watches from `i` sees it.
        if let Some(alarms) = alarms {
            *reader.alarms.lock().unwrap_or_else(|e| e.into_inner()) = alarms;
        }
        reader
            .cluster_id
            .store(cluster_id, std::sync::atomic::Ordering::Release);
        reader.cluster_version.store(
            cluster_version.to_u64(),
            std::sync::atomic::Ordering::Release,
        );
        reader.revisions.publish(last.index, compacted, keys);
        if leases_changed {
            self.lease_changes.send_modify(|count| *count += 1);
        }
        for (responder, result) in results {
            if let Some(responder) = responder {
                responder.send(result);
            }
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<SnapshotBuilder> {
        Some(self.get_snapshot_builder().await)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: self.clone(),
            state: self.state_now(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let store = self.clone();
        let meta = meta.clone();
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || {
            let received = match snapshot {
                SnapshotData::State(state) if state.is_of(&store.reader) => {
                    return store.install_own(&meta, &state);
                }
                // Another store's state (in one process: tests).
                SnapshotData::State(state) => {
                    let mut incoming = Incoming::create(store.disk.dir())?;
                    state.encode_with_history(1 << 20, |chunk| incoming.write(&chunk))?;
                    incoming.finish()?
                }
                SnapshotData::Received(received) => received,
            };
            let bytes = received.len();
            store.install_received(&meta, received)?;
            let metrics = crate::metrics::global();
            crate::metrics::observe_since(&metrics.snapshot_install, started);
            metrics.snapshot_bytes.set(bytes as i64);
            tracing::info!(last_log_id = ?meta.last_log_id, bytes, "snapshot installed");
            Ok(())
        })
        .await
        .map_err(io_error)?
    }

    /// The state now: a snapshot covers the last applied entry, and there
    /// is nothing older to keep.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let (meta, state) = self.state_now()?;
        Ok(meta.last_log_id.is_some().then(|| Snapshot {
            meta,
            snapshot: SnapshotData::State(state),
        }))
    }
}
