//! Operations, their outcomes and how failures are classified.

/// One operation a client performs.
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Get {
        key: Vec<u8>,
    },
    Cas {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new_value: Vec<u8>,
    },
}

impl Op {
    /// The operation kind as reported: `put`, `get` or `cas`.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Put { .. } => "put",
            Op::Get { .. } => "get",
            Op::Cas { .. } => "cas",
        }
    }

    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Get { key } | Op::Cas { key, .. } => key,
        }
    }

    /// Whether the operation changes state (so an unclear failure leaves its
    /// outcome unknown instead of retrying it).
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. })
    }
}

/// What a completed operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Written,
    Read(Option<Vec<u8>>),
    Swapped {
        succeeded: bool,
        current: Option<Vec<u8>>,
    },
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It took effect (or, for a read, returned this).
    Ok(Reply),
    /// It definitely did not take effect; the kind of error.
    Fail(String),
    /// It may or may not have taken effect (timeout, connection lost after
    /// sending, leader change after proposing); the kind of error.
    Unknown(String),
}
