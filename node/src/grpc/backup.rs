//! The messages of `raftkv.Admin/Backup`: a header, the snapshot data in
//! chunks read from the staged file, and the checksum of the whole file.

use raftkv_proto::pb;
use tonic::Status;

use super::describe::configuration_of;
use super::describe::millis;
use crate::error::NodeError;
use crate::node::BackupSnapshot;
use crate::types::NodeId;

/// Data bytes per message of a backup stream.
const BACKUP_CHUNK_BYTES: usize = 1 << 20;

/// The messages of `Backup`.
pub type BackupStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

/// `backup` as the messages of a backup stream: header, data, checksum.
pub(crate) fn backup_stream(
    source: NodeId,
    backup: BackupSnapshot,
) -> Result<BackupStream, Status> {
    use pb::backup_chunk::Part;
    let last = backup.meta.last_log_id.ok_or(NodeError::NothingApplied)?;
    // Everything a snapshot holds is committed.
    let configuration = configuration_of(&backup.meta.last_membership, true);
    let created_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis);
    let header = pb::BackupHeader {
        index: last.index,
        term: last.leader_id.term,
        leader_id: last.leader_id.node_id,
        configuration: Some(configuration),
        key_count: backup.key_count as u64,
        data_bytes: backup.data.len(),
        created_unix_ms,
        source_node_id: source,
        padding: Vec::new(),
    };
    tracing::info!(
        index = last.index,
        keys = backup.key_count,
        bytes = backup.data.len(),
        "streaming a backup"
    );
    // The data is read from its file as the stream is read, at most two
    // pieces ahead of the network; the file goes when the reader ends.
    let (pieces_tx, mut pieces_rx) = tokio::sync::mpsc::channel::<Result<Part, Status>>(2);
    let sum = backup.sha256;
    let data = backup.data;
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let send = |part| pieces_tx.blocking_send(part).is_ok();
        let mut reader = match data.reader() {
            Ok(reader) => reader,
            Err(e) => {
                send(Err(Status::unavailable(format!(
                    "cannot read the backup: {e}"
                ))));
                return;
            }
        };
        loop {
            let mut piece = Vec::with_capacity(BACKUP_CHUNK_BYTES);
            match (&mut reader)
                .take(BACKUP_CHUNK_BYTES as u64)
                .read_to_end(&mut piece)
            {
                Ok(0) => break,
                Ok(_) => {
                    if !send(Ok(Part::Data(piece))) {
                        return;
                    }
                }
                Err(e) => {
                    send(Err(Status::unavailable(format!(
                        "cannot read the backup: {e}"
                    ))));
                    return;
                }
            }
        }
        send(Ok(Part::DataSha256(sum.to_vec())));
        drop(data);
    });
    use futures::StreamExt as _;
    let pieces = futures::stream::poll_fn(move |cx| pieces_rx.poll_recv(cx));
    let parts = futures::stream::iter(std::iter::once(Ok::<_, Status>(Part::Header(header))))
        .chain(pieces)
        .map(|part| part.map(|part| pb::BackupChunk { part: Some(part) }));
    Ok(Box::pin(parts))
}
