//! The backup file: what `raft-admin backup` writes and `raftkv-node restore`
//! reads.
//!
//! Layout (integers big-endian):
//!
//! ```text
//! "RAFTKVBK"                  8 bytes, the magic
//! version                     u32, 1
//! header length               u32
//! header                      raftkv.BackupHeader, protobuf
//! data                        header.data_bytes bytes, the snapshot data format
//! SHA-256                     32 bytes, of everything above
//! ```
//!
//! The checksum covers the whole file, header included, so a backup that was
//! cut short, padded or changed anywhere is refused before anything is made
//! from it.

use std::io;
use std::io::Write;
use std::path::Path;

use prost::Message;
use raftkv_proto::pb;
use sha2::Digest;
use sha2::Sha256;

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"RAFTKVBK";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// Longest header accepted: headers hold a membership, never megabytes.
const MAX_HEADER_BYTES: u32 = 1 << 20;
const CHECKSUM_BYTES: usize = 32;

/// Why a backup file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file cannot be read or written.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The file does not start like a raftkv backup.
    #[error(
        "not a raftkv backup (the file does not start with {:?})",
        String::from_utf8_lossy(MAGIC)
    )]
    NotABackup,
    /// The file was written by a format this code does not know.
    #[error("backup format version {0} is not supported (this build reads version {VERSION})")]
    Version(u32),
    /// The file is shorter or longer than its header says.
    #[error(
        "the backup is {actual} bytes long, its header says {expected}: it was cut short or padded"
    )]
    Length { expected: u64, actual: u64 },
    /// The header does not decode.
    #[error("the backup's header is malformed: {0}")]
    Header(String),
    /// The checksum does not match the contents.
    #[error("the backup's checksum does not match its contents: the file is corrupt")]
    Checksum,
}

/// A backup read back and verified.
#[derive(Debug)]
pub struct Backup {
    pub header: pb::BackupHeader,
    /// The key-value data, in the snapshot data format.
    pub data: Vec<u8>,
    /// The file's checksum (SHA-256 of everything before it).
    pub sha256: [u8; 32],
}

/// Writes a backup: the header first, then the data as it arrives, then
/// [`BackupWriter::finish`] appends the checksum.
pub struct BackupWriter<W: Write> {
    out: W,
    hash: Sha256,
    expected: u64,
    written: u64,
}

impl<W: Write> BackupWriter<W> {
    /// Starts a backup whose data will be `header.data_bytes` long.
    pub fn new(mut out: W, header: &pb::BackupHeader) -> io::Result<BackupWriter<W>> {
        let encoded = header.encode_to_vec();
        let len = u32::try_from(encoded.len())
            .ok()
            .filter(|len| *len <= MAX_HEADER_BYTES)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "backup header too long"))?;
        let mut hash = Sha256::new();
        for part in [
            &MAGIC[..],
            &VERSION.to_be_bytes(),
            &len.to_be_bytes(),
            &encoded,
        ] {
            out.write_all(part)?;
            hash.update(part);
        }
        Ok(BackupWriter {
            out,
            hash,
            expected: header.data_bytes,
            written: 0,
        })
    }

    /// What it writes to, to take the bytes written so far from a buffer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Appends a piece of the data.
    pub fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        self.written += data.len() as u64;
        if self.written > self.expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "more data than the header announced ({} bytes)",
                    self.expected
                ),
            ));
        }
        self.out.write_all(data)?;
        self.hash.update(data);
        Ok(())
    }

    /// Appends the checksum, once all the data is written; returns it with
    /// the writer.
    pub fn finish(mut self) -> io::Result<([u8; 32], W)> {
        if self.written != self.expected {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} bytes of data written, the header announced {}",
                    self.written, self.expected
                ),
            ));
        }
        let sum: [u8; 32] = self.hash.finalize().into();
        self.out.write_all(&sum)?;
        self.out.flush()?;
        Ok((sum, self.out))
    }
}

/// SHA-256 of data that arrives in pieces, to check what a node streamed.
#[derive(Default)]
pub struct DataHash(Sha256);

impl DataHash {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// SHA-256 of `data`, for checking what a node streamed.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Reads and verifies the backup at `path`.
pub fn read_file(path: &Path) -> Result<Backup, BackupError> {
    parse(std::fs::read(path)?)
}

/// Verifies and splits a whole backup file.
pub fn parse(mut file: Vec<u8>) -> Result<Backup, BackupError> {
    let fixed = MAGIC.len() + 8;
    if file.len() < fixed || &file[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotABackup);
    }
    let word = |at: usize| u32::from_be_bytes(file[at..at + 4].try_into().expect("4 bytes"));
    let version = word(MAGIC.len());
    if version != VERSION {
        return Err(BackupError::Version(version));
    }
    let header_len = word(MAGIC.len() + 4);
    if header_len > MAX_HEADER_BYTES {
        return Err(BackupError::Header(format!(
            "it claims to be {header_len} bytes long"
        )));
    }
    let header_end = fixed + header_len as usize;
    let actual = file.len() as u64;
    if file.len() < header_end + CHECKSUM_BYTES {
        return Err(BackupError::Length {
            expected: (header_end + CHECKSUM_BYTES) as u64,
            actual,
        });
    }
    // The checksum first: a header is decoded only once it is known intact.
    let body_end = file.len() - CHECKSUM_BYTES;
    let sum = sha256(&file[..body_end]);
    if sum[..] != file[body_end..] {
        // Tell a cut or padded file from a corrupt one when the header says so.
        if let Ok(header) = pb::BackupHeader::decode(&file[fixed..header_end]) {
            let expected = ((header_end + CHECKSUM_BYTES) as u64).saturating_add(header.data_bytes);
            if expected != actual {
                return Err(BackupError::Length { expected, actual });
            }
        }
        return Err(BackupError::Checksum);
    }
    let header = pb::BackupHeader::decode(&file[fixed..header_end])
        .map_err(|e| BackupError::Header(e.to_string()))?;
    let expected = ((header_end + CHECKSUM_BYTES) as u64).saturating_add(header.data_bytes);
    if expected != actual {
        return Err(BackupError::Length { expected, actual });
    }
    file.truncate(body_end);
    let data = file.split_off(header_end);
    Ok(Backup {
        header,
        data,
        sha256: sum,
    })
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(data_bytes: u64) -> pb::BackupHeader {
        pb::BackupHeader {
            index: 42,
            term: 3,
            leader_id: 1,
            key_count: 2,
            data_bytes,
            ..Default::default()
        }
    }

    fn file(data: &[u8]) -> Vec<u8> {
        let mut writer = BackupWriter::new(Vec::new(), &header(data.len() as u64)).unwrap();
        for piece in data.chunks(3) {
            writer.write_data(piece).unwrap();
        }
        writer.finish().unwrap().1
    }

    #[test]
    fn round_trip() {
        let bytes = file(b"some key-value data");
        let backup = parse(bytes.clone()).unwrap();
        assert_eq!(backup.header, header(19));
        assert_eq!(backup.data, b"some key-value data");
        assert_eq!(backup.sha256[..], bytes[bytes.len() - 32..]);
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_refused() {
        let bytes = file(b"0123456789abcdef");
        for len in 0..bytes.len() {
            assert!(parse(bytes[..len].to_vec()).is_err(), "cut at {len}");
        }
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] ^= 0x20;
            assert!(parse(changed).is_err(), "byte {at} changed");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(matches!(parse(padded), Err(BackupError::Length { .. })));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(matches!(
            parse(b"hello world, not a backup".to_vec()),
            Err(BackupError::NotABackup)
        ));
        let mut other_version = file(b"x");
        other_version[11] = 9;
        assert!(matches!(parse(other_version), Err(BackupError::Version(9))));
        let bytes = file(b"abcdef");
        let cut = bytes[..bytes.len() - 4].to_vec();
        assert!(matches!(parse(cut), Err(BackupError::Length { .. })));
        let mut flipped = bytes;
        let last_data = flipped.len() - 33;
        flipped[last_data] ^= 1;
        assert!(matches!(parse(flipped), Err(BackupError::Checksum)));
    }

    #[test]
    fn the_writer_holds_the_data_to_its_announced_length() {
        let mut writer = BackupWriter::new(Vec::new(), &header(4)).unwrap();
        writer.write_data(b"abc").unwrap();
        assert!(writer.write_data(b"de").is_err());
        let mut short = BackupWriter::new(Vec::new(), &header(4)).unwrap();
        short.write_data(b"abc").unwrap();
        assert!(short.finish().is_err());
    }
}
