//! `raftkv-node restore`: a data directory made from a backup file, holding
//! the backup's state as a new cluster whose only voter is the given node.
//! The node then starts from it as usual, and others join it.
//!
//! Nothing is made from a file that fails its checks: the checksum, the
//! header's length and key count, and the data itself (whole records, keys in
//! order) are verified first. The directory is built under a temporary name
//! beside the target and renamed into place only when complete and synced,
//! so a failure or a crash half-way leaves no data directory behind.
//!
//! What the directory holds: the backup as the node's snapshot, its log id
//! the backup's (so the state keeps its log indexes, and watchers or clients
//! that compare indexes see them go on rising), a membership of this node
//! alone at that log id, an empty log purged up to it, and a vote for the
//! backup's leader in the backup's term, so the node's first election is in a
//! later term than any entry it holds.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::path::PathBuf;

use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use openraft::vote::RaftLeaderId;
use openraft::Membership;
use raftkv_files::backup::Backup;
use raftkv_files::backup::BackupError;

use crate::store::OpenError;
use crate::types::LogId;
use crate::types::Node;
use crate::types::NodeId;
use crate::types::SnapshotMeta;
use crate::types::StoredMembership;
use crate::types::Vote;

/// Page cache of the short-lived database restore opens.
const RESTORE_CACHE_BYTES: u64 = 4 << 20;

/// `raftkv-node restore`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "raftkv-node restore",
    bin_name = "raftkv-node restore",
    about = "Make a data directory from a backup file (raft-admin backup): the backup's keys as a \
             new cluster whose only voter is node --id at --advertise.",
    long_about = "Make a data directory from a backup file (raft-admin backup): the backup's keys \
                  as a new cluster whose only voter is node --id at --advertise.\n\n\
                  The file's checksum and contents are verified first; a corrupt or truncated \
                  file is refused and nothing is created. --data-dir must not exist yet (or be \
                  empty). Then start the node from it with the same --id and an address that \
                  --advertise names, and add the other nodes afresh (empty data directories).",
    after_help = "Example:\n  \
        raft-admin --leader multi:///10.0.0.5:50051,10.0.0.6:50051 backup cluster.backup\n  \
        raftkv-node restore --from cluster.backup --data-dir /var/lib/raftkv --id 1 --advertise 10.0.0.5:50051\n  \
        raftkv-node --id 1 --listen 0.0.0.0:50051 --advertise 10.0.0.5:50051 --data-dir /var/lib/raftkv"
)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// The data directory to create.
    #[arg(long, env = "RAFTKV_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The id of the node that will start from it (a positive integer).
    #[arg(long, env = "RAFTKV_ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    /// The address (host:port) other nodes and clients will reach it at.
    #[arg(long, env = "RAFTKV_ADVERTISE")]
    pub advertise: String,
}

/// Why a restore made nothing.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The backup file is unreadable, corrupt or truncated.
    #[error("{}", .file.display())]
    Backup { file: PathBuf, source: BackupError },
    /// The file passed its checksum but its contents are inconsistent.
    #[error("{}: {reason}", .file.display())]
    Contents { file: PathBuf, reason: String },
    /// The data directory exists already.
    #[error("{} exists and is not empty: restore creates a new data directory (move the old one away first)", .0.display())]
    Exists(PathBuf),
    /// A flag is wrong.
    #[error("{0}")]
    Usage(String),
    /// Writing the new data directory failed.
    #[error("writing {}", .dir.display())]
    Write { dir: PathBuf, source: io::Error },
    #[error(transparent)]
    Open(#[from] OpenError),
}

/// What a restore made.
#[derive(Debug)]
pub struct Restored {
    pub data_dir: PathBuf,
    pub index: u64,
    pub term: u64,
    pub key_count: u64,
}

/// Runs `restore`: verifies the backup, then creates the data directory.
pub async fn restore(args: &RestoreArgs) -> Result<Restored, RestoreError> {
    raftkv_client::check_address(&args.advertise)
        .map_err(|e| RestoreError::Usage(format!("--advertise: {e}")))?;
    let file = args.from.clone();
    let backup = raftkv_files::backup::read_file(&file).map_err(|source| RestoreError::Backup {
        file: file.clone(),
        source,
    })?;
    let contents = |reason: String| RestoreError::Contents {
        file: file.clone(),
        reason,
    };
    let keys = crate::store::check_snapshot_data(&backup.data, backup.header.index)
        .map_err(|e| contents(format!("its data does not decode: {e}")))?;
    if keys as u64 != backup.header.key_count {
        return Err(contents(format!(
            "its header counts {} keys, its data holds {keys}",
            backup.header.key_count
        )));
    }
    if backup.header.term == 0 || backup.header.index == 0 {
        return Err(contents("its header names no log position".into()));
    }
    let target = args.data_dir.clone();
    if is_non_empty_dir(&target).map_err(|source| RestoreError::Write {
        dir: target.clone(),
        source,
    })? {
        return Err(RestoreError::Exists(target));
    }
    let building = building_dir(&target)?;
    let Backup { header, data, .. } = backup;
    let written = async {
        // Left over from a restore that crashed: ours, by its name.
        if building.exists() {
            std::fs::remove_dir_all(&building)?;
        }
        write_data_dir(&building, args.id, &args.advertise, &header, data).await?;
        sync_dir(&building)?;
        // An empty target directory (made for the service, say) is replaced
        // by the rename, atomically.
        std::fs::rename(&building, &target)?;
        let parent = target.parent().filter(|p| !p.as_os_str().is_empty());
        if let Err(e) = sync_dir(parent.unwrap_or(Path::new("."))) {
            // Complete, but its name may not survive a power cut: keep to
            // the promise that a failed restore leaves nothing.
            let _ = std::fs::remove_dir_all(&target);
            return Err(e.into());
        }
        Ok::<(), WriteError>(())
    }
    .await;
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&building);
        return Err(match e {
            WriteError::Io(source) => RestoreError::Write {
                dir: target,
                source,
            },
            WriteError::Open(e) => RestoreError::Open(e),
        });
    }
    tracing::info!(
        data_dir = %target.display(),
        index = header.index,
        term = header.term,
        keys,
        id = args.id,
        address = %args.advertise,
        "restored a backup as a new one-voter cluster"
    );
    Ok(Restored {
        data_dir: target,
        index: header.index,
        term: header.term,
        key_count: keys as u64,
    })
}

enum WriteError {
    Io(io::Error),
    Open(OpenError),
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> WriteError {
        WriteError::Io(e)
    }
}

/// Writes the restored state into the empty directory `dir`.
async fn write_data_dir(
    dir: &Path,
    id: NodeId,
    address: &str,
    header: &raftkv_proto::pb::BackupHeader,
    data: Vec<u8>,
) -> Result<(), WriteError> {
    let (mut log, mut machine) =
        crate::store::open(dir, RESTORE_CACHE_BYTES).map_err(WriteError::Open)?;
    let last = LogId {
        leader_id: openraft::vote::leader_id_adv::LeaderId::new(header.term, header.leader_id),
        index: header.index,
    };
    let alone = Membership::new(
        vec![BTreeSet::from([id])],
        BTreeMap::from([(id, Node::new(address))]),
    )
    .map_err(io::Error::other)?;
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), alone),
    };
    // The install loads the backup's keys and syncs them.
    let received = crate::store::Incoming::from_bytes(dir, &data)?;
    machine
        .install_snapshot(&meta, crate::store::SnapshotData::Received(received))
        .await?;
    log.save_vote(&Vote::new_committed(header.term, header.leader_id))
        .await?;
    log.save_committed(Some(last)).await?;
    log.purge(last).await?;
    log.sync()?;
    machine.close_cleanly()?;
    Ok(())
}

/// `target`'s sibling where the directory is built.
fn building_dir(target: &Path) -> Result<PathBuf, RestoreError> {
    let name = target.file_name().ok_or_else(|| {
        RestoreError::Usage(format!(
            "--data-dir {}: not a directory name",
            target.display()
        ))
    })?;
    let mut building = std::ffi::OsString::from(".");
    building.push(name);
    building.push(".restoring");
    Ok(target.with_file_name(building))
}

fn is_non_empty_dir(path: &Path) -> io::Result<bool> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        // A file, or unreadable: not something to replace.
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => Ok(true),
        Err(e) => Err(e),
    }
}

/// Makes the entries of `dir` (a rename, new files) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
