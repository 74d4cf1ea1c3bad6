//! `--verify`: remembers, per key, which writes could be the last one, then
//! reads every key back and counts acknowledged writes that were lost.
//!
//! A write's value starts with a unique tag (`client-sequence:`). After the
//! run the stored value must be the tag of an acknowledged write that no
//! other acknowledged write definitely followed (one that was invoked after
//! it completed), or of a write whose outcome is unknown (it may have taken
//! effect at any time after it was invoked). A key with acknowledged writes
//! must not be missing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use crate::op::Op;
use crate::op::Outcome;
use crate::op::Reply;
use crate::stats::VerifyReport;
use crate::target::SystemUnderLoad;

/// How long reading back one key may take, retries included.
const READ_BACK: Duration = Duration::from_secs(30);

/// A write that may be the key's last.
#[derive(Debug, Clone)]
struct Candidate {
    tag: String,
    invoke_us: u64,
    /// `None`: outcome unknown.
    complete_us: Option<u64>,
}

/// Writes per key that may still be the latest.
#[derive(Default)]
pub struct Tracker {
    keys: Mutex<HashMap<Vec<u8>, Vec<Candidate>>>,
}

/// The tag at the start of a value hammer wrote.
pub fn tag_of(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == b':').unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

impl Tracker {
    /// An acknowledged write of `tag` to `key`, invoked and completed at these times.
    pub fn acknowledged(&self, key: &[u8], tag: String, invoke_us: u64, complete_us: u64) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let candidates = keys.entry(key.to_vec()).or_default();
        // Already followed by an acknowledged write invoked after this one completed?
        if candidates
            .iter()
            .any(|c| c.complete_us.is_some() && c.invoke_us > complete_us)
        {
            return;
        }
        candidates.retain(|c| c.complete_us.is_none_or(|done| done >= invoke_us));
        candidates.push(Candidate {
            tag,
            invoke_us,
            complete_us: Some(complete_us),
        });
    }

    /// A write of `tag` to `key` whose outcome is unknown.
    pub fn unknown(&self, key: &[u8], tag: String, invoke_us: u64) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.entry(key.to_vec()).or_default().push(Candidate {
            tag,
            invoke_us,
            complete_us: None,
        });
    }

    /// Every key written, with its candidates.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Checks what was read back for `key`; `Err` describes a lost write.
    pub fn check(&self, key: &[u8], stored: Option<&[u8]>) -> Result<(), String> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let Some(candidates) = keys.get(key) else {
            return Ok(());
        };
        let acknowledged: Vec<&str> = candidates
            .iter()
            .filter(|c| c.complete_us.is_some())
            .map(|c| c.tag.as_str())
            .collect();
        match stored {
            None if acknowledged.is_empty() => Ok(()),
            None => Err(format!(
                "{}: missing, expected one of {acknowledged:?}",
                String::from_utf8_lossy(key)
            )),
            Some(value) => {
                let tag = tag_of(value);
                if candidates.iter().any(|c| c.tag == tag) {
                    Ok(())
                } else if acknowledged.is_empty() {
                    // Only failed writes: the stored value must be from an earlier run.
                    Ok(())
                } else {
                    Err(format!(
                        "{}: holds {tag:?}, expected one of {acknowledged:?}",
                        String::from_utf8_lossy(key)
                    ))
                }
            }
        }
    }
}

/// Reads back every written key (linearizable reads, one at a time) and
/// checks each against `tracker`.
pub(crate) async fn read_back(target: &SystemUnderLoad, tracker: &Tracker) -> VerifyReport {
    let keys = tracker.keys();
    let mut lost = 0;
    let mut examples = Vec::new();
    for key in &keys {
        let op = Op::Get { key: key.clone() };
        let outcome = target
            .execute(0, &op, Instant::now() + READ_BACK, |_| {})
            .await;
        let problem = match outcome {
            Outcome::Ok(Reply::Read(stored)) => tracker.check(key, stored.as_deref()).err(),
            other => Some(format!(
                "{}: could not be read back ({other:?})",
                String::from_utf8_lossy(key)
            )),
        };
        if let Some(problem) = problem {
            lost += 1;
            if examples.len() < 10 {
                examples.push(problem);
            }
        }
    }
    VerifyReport {
        keys_checked: keys.len() as u64,
        lost_acknowledged_writes: lost,
        examples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superseded_writes_stop_counting_and_unknown_ones_stay_possible() {
        let tracker = Tracker::default();
        tracker.acknowledged(b"k", "1-1".into(), 0, 10);
        tracker.acknowledged(b"k", "2-1".into(), 5, 20); // concurrent with 1-1
        assert!(tracker.check(b"k", Some(b"1-1:xx")).is_ok());
        assert!(tracker.check(b"k", Some(b"2-1:xx")).is_ok());
        tracker.acknowledged(b"k", "1-2".into(), 30, 40); // after both
        assert!(tracker.check(b"k", Some(b"1-1:xx")).is_err());
        assert!(tracker.check(b"k", Some(b"1-2:xx")).is_ok());
        assert!(tracker.check(b"k", None).is_err());
        tracker.unknown(b"k", "3-1".into(), 35);
        assert!(tracker.check(b"k", Some(b"3-1:xx")).is_ok());
        // A late-arriving record of an older write does not revive it.
        tracker.acknowledged(b"k", "4-1".into(), 1, 2);
        assert!(tracker.check(b"k", Some(b"4-1:xx")).is_err());
        assert!(tracker.check(b"never-written", None).is_ok());
    }
}
