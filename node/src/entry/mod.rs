//! A log entry's command and the two encodings it may be stored and sent in.
//!
//! - **First release (0.1).** bincode of [`Command`]'s first thirteen kinds,
//!   as that release declared them: a `u32` kind number, then the fields in
//!   order. Nothing can be added to it, and a node of that release refuses
//!   anything else (it cannot decode the entry, so it never applies it).
//! - **Versioned (0.2 on).** The `raftkv.entry.Command` protobuf message
//!   ([`protobuf`]), whose header names the lowest release that applies it
//!   faithfully; it takes the kind number [`VERSIONED_KIND`], which no
//!   release ever gave a kind. New kinds and fields go there.
//!
//! Which one an entry uses is decided once, when the leader proposes it (see
//! `node::upgrade`): the first release's until every member reads the
//! versioned one, which the cluster version says. The entry keeps its
//! encoding from then on, whoever stores or sends it, so a node that reads
//! only the first release's never meets one it cannot read. A versioned
//! entry is written again in the bytes it was read from, fields this node
//! does not know included. (Were it encoded again, those fields would be
//! dropped; but any field that changes what an entry does raises the
//! entry's `requires`, so no node that would drop it ever applies it.)

pub mod protobuf;

use std::fmt;
use std::sync::Arc;
use std::sync::OnceLock;

use serde::de;
use serde::de::IntoDeserializer;
use serde::ser;
use serde::Deserialize;
use serde::Deserializer;
use serde::Serialize;
use serde::Serializer;

use crate::types::Command;
use crate::types::FIRST_RELEASE_KINDS;
use crate::version::Version;

/// The kind number of a versioned entry, in the place where the first
/// release's encoding puts its kind number.
pub const VERSIONED_KIND: u32 = u32::MAX;

/// How an entry's command is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// bincode of [`Command`], as the first release wrote it.
    FirstRelease,
    /// `raftkv.entry.Command` (protobuf).
    Versioned,
}

impl Encoding {
    /// The encoding a leader writes while the cluster version is `cluster`.
    pub fn for_cluster(cluster: Version) -> Encoding {
        if cluster >= Version::VERSIONED_ENTRIES {
            Encoding::Versioned
        } else {
            Encoding::FirstRelease
        }
    }
}

/// The application data of raftkv's log entries: a command and the
/// encoding it travels in.
///
/// Shared, not copied: the leader hands one entry to its log, to each
/// follower's replication and to the apply, and each clone is a reference
/// count. The versioned bytes are made once, on first use, or kept from
/// the bytes the entry was decoded from, and every later write of the
/// entry (to the log, to each follower) reuses them.
#[derive(Clone)]
pub struct LogCommand(Arc<Shared>);

struct Shared {
    command: Command,
    encoding: Encoding,
    /// The command in the versioned encoding, once made or read.
    versioned: OnceLock<Vec<u8>>,
}

impl LogCommand {
    pub fn new(command: Command, encoding: Encoding) -> LogCommand {
        LogCommand(Arc::new(Shared {
            command,
            encoding,
            versioned: OnceLock::new(),
        }))
    }

    /// A versioned command with the bytes it was decoded from.
    fn decoded(command: Command, bytes: &[u8]) -> LogCommand {
        LogCommand(Arc::new(Shared {
            command,
            encoding: Encoding::Versioned,
            versioned: OnceLock::from(bytes.to_vec()),
        }))
    }

    pub fn command(&self) -> &Command {
        &self.0.command
    }

    pub fn encoding(&self) -> Encoding {
        self.0.encoding
    }

    /// The command, owned: moved out of the last handle, copied otherwise
    /// (the apply mostly copies: the log's in-memory tail still holds the
    /// entry then).
    pub fn into_command(self) -> Command {
        match Arc::try_unwrap(self.0) {
            Ok(shared) => shared.command,
            Err(shared) => shared.command.clone(),
        }
    }

    /// The versioned encoding of the command, made on first use.
    fn versioned(&self) -> &[u8] {
        self.0
            .versioned
            .get_or_init(|| protobuf::encode(&self.0.command))
    }
}

impl PartialEq for LogCommand {
    fn eq(&self, other: &LogCommand) -> bool {
        self.command() == other.command() && self.encoding() == other.encoding()
    }
}

impl Eq for LogCommand {}

impl fmt::Debug for LogCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogCommand")
            .field("command", self.command())
            .field("encoding", &self.encoding())
            .finish()
    }
}

impl fmt::Display for LogCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.command(), f)
    }
}

/// Bytes that serialize as one length-prefixed run (not a sequence of
/// numbers, which would cost a call per byte); read back by [`Versioned`].
struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl Serialize for LogCommand {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.encoding() {
            Encoding::FirstRelease => {
                // A kind the first release does not know cannot be written
                // in its encoding; the leader never asks for that.
                if self.command().requires() > Version::FIRST {
                    return Err(ser::Error::custom(format!(
                        "{} needs the versioned entry encoding",
                        self.command()
                    )));
                }
                self.command().serialize(serializer)
            }
            Encoding::Versioned => serializer.serialize_newtype_variant(
                "Command",
                VERSIONED_KIND,
                "Versioned",
                &RawBytes(self.versioned()),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for LogCommand {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<LogCommand, D::Error> {
        deserializer.deserialize_enum("Command", &[], LogCommandVisitor)
    }
}

struct LogCommandVisitor;

impl<'de> de::Visitor<'de> for LogCommandVisitor {
    type Value = LogCommand;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a raftkv log command")
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<LogCommand, A::Error> {
        let (kind, variant): (u32, A::Variant) = data.variant()?;
        if kind == VERSIONED_KIND {
            let Versioned(command) = de::VariantAccess::newtype_variant(variant)?;
            return Ok(command);
        }
        if kind >= FIRST_RELEASE_KINDS {
            return Err(de::Error::custom(format!(
                "command kind {kind} is not one the first release's encoding has"
            )));
        }
        // The kind number is read; hand it and the fields still to read to
        // the enum's own decoding.
        let command = Command::deserialize(KindRead { kind, variant })?;
        if command.requires() > Version::FIRST {
            // The kinds are counted above; this keeps a miscount from ever
            // letting in an entry that cannot be written back.
            return Err(de::Error::custom(format!(
                "{command} is not a kind of the first release's encoding"
            )));
        }
        Ok(LogCommand::new(command, Encoding::FirstRelease))
    }
}

/// A versioned command, decoded straight from the bytes that carry it
/// (borrowed from the input where the format allows, never copied first),
/// which it keeps.
struct Versioned(LogCommand);

impl<'de> Deserialize<'de> for Versioned {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Versioned, D::Error> {
        struct Bytes;
        impl<'de> de::Visitor<'de> for Bytes {
            type Value = Versioned;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an encoded raftkv.entry.Command")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Versioned, E> {
                protobuf::decode(bytes, Version::ours())
                    .map(|command| Versioned(LogCommand::decoded(command, bytes)))
                    .map_err(E::custom)
            }
            fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<Versioned, S::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(byte) = seq.next_element()? {
                    bytes.push(byte);
                }
                self.visit_bytes(&bytes)
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

/// An enum whose kind number was already read: replays it to a derived
/// `Deserialize`, then lets it read the kind's fields from the input.
struct KindRead<V> {
    kind: u32,
    variant: V,
}

impl<'de, A: de::VariantAccess<'de>> Deserializer<'de> for KindRead<A> {
    type Error = A::Error;

    fn deserialize_any<W: de::Visitor<'de>>(self, visitor: W) -> Result<W::Value, A::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, A: de::VariantAccess<'de>> de::EnumAccess<'de> for KindRead<A> {
    type Error = A::Error;
    type Variant = A;

    fn variant_seed<S: de::DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, A), A::Error> {
        let kind = seed.deserialize(self.kind.into_deserializer())?;
        Ok((kind, self.variant))
    }
}

#[cfg(test)]
mod tests;
