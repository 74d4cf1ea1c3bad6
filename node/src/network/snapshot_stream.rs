//! The stream that sends a snapshot to a peer: the header, then the data
//! in chunks as a blocking reader produces them (from the live state with
//! its history, or from a received snapshot's file), then a trailer with
//! the size and CRC-32 of everything sent.

use futures::stream;
use futures::Stream;
use futures::StreamExt;
use prost::bytes::Bytes;
use raftkv_proto::pb;

use crate::store::ReadError;
use crate::store::Received;
use crate::store::StateAt;

/// Size of one snapshot chunk on the wire.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// What the blocking reader hands the stream: data, then the trailer.
type Part = pb::snapshot_chunk::Payload;

/// Adds up what a snapshot stream sends, for its trailer.
#[derive(Default)]
struct Sent {
    size: u64,
    crc: crc32fast::Hasher,
}

impl Sent {
    /// Counts `chunk` and hands it to the stream; `BrokenPipe` once the
    /// call has ended.
    fn send(
        &mut self,
        parts: &tokio::sync::mpsc::Sender<Part>,
        chunk: Vec<u8>,
    ) -> std::io::Result<()> {
        self.size += chunk.len() as u64;
        self.crc.update(&chunk);
        parts
            .blocking_send(Part::Chunk(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }

    /// The trailer, sent only after every byte was read and sent.
    fn finish(self, parts: &tokio::sync::mpsc::Sender<Part>) {
        crate::metrics::global()
            .snapshot_bytes
            .set(self.size as i64);
        let trailer = pb::SnapshotTrailer {
            size: self.size,
            crc32: self.crc.finalize(),
        };
        let _ = parts.blocking_send(Part::Trailer(trailer));
    }
}

/// The state with its history, encoded in chunks as the stream is read: one
/// pass on a blocking thread, at most two chunks ahead of the network, then
/// the trailer. An error midway ends the stream without a trailer, which
/// the receiver refuses.
pub(super) fn stream_state(state: StateAt) -> tokio::sync::mpsc::Receiver<Part> {
    let (parts_tx, parts_rx) = tokio::sync::mpsc::channel::<Part>(2);
    tokio::task::spawn_blocking(move || {
        let mut sent = Sent::default();
        let result = state.encode_with_history(SNAPSHOT_CHUNK_BYTES, |chunk| {
            sent.send(&parts_tx, chunk)?;
            crate::crash_point!("snapshot-send-after-chunk");
            Ok(())
        });
        match result {
            Ok(()) => sent.finish(&parts_tx),
            // The call ended first (refused, cancelled, timed out): it says why.
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => {
                tracing::warn!(revision = state.revision(), error = ?e, "reading the state to send stopped")
            }
        }
    });
    parts_rx
}

/// Received snapshot data, read from its file in chunks as the stream is
/// read (a node sends what it received only if openraft asks it to).
pub(super) fn stream_file(received: Received) -> tokio::sync::mpsc::Receiver<Part> {
    let (parts_tx, parts_rx) = tokio::sync::mpsc::channel::<Part>(2);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut reader = received.reader()?;
        let mut sent = Sent::default();
        loop {
            let mut chunk = Vec::with_capacity(SNAPSHOT_CHUNK_BYTES);
            (&mut reader)
                .take(SNAPSHOT_CHUNK_BYTES as u64)
                .read_to_end(&mut chunk)?;
            if chunk.is_empty() {
                sent.finish(&parts_tx);
                return Ok::<_, std::io::Error>(());
            }
            sent.send(&parts_tx, chunk)?;
        }
    });
    parts_rx
}

/// The messages of a snapshot stream: the header, then the data and the
/// trailer.
pub(super) fn snapshot_messages(
    header: pb::SnapshotHeader,
    mut parts: tokio::sync::mpsc::Receiver<Part>,
) -> impl Stream<Item = pb::SnapshotChunk> + Send + 'static {
    let header = pb::SnapshotChunk {
        payload: Some(pb::snapshot_chunk::Payload::Header(header)),
    };
    let data = stream::poll_fn(move |cx| parts.poll_recv(cx)).map(|part| pb::SnapshotChunk {
        payload: Some(part),
    });
    stream::iter(std::iter::once(header)).chain(data)
}
