//! What a client asks for next: which key, which operation, which value.
//!
//! Choices come from a generator seeded per client from the run's `--seed`,
//! so a seed repeats every client's sequence of choices (what the cluster
//! answers, and so how far each client gets, may still differ). Each value
//! starts with a tag unique in the run (`client-sequence:`), which `--verify`
//! and `hammer check` use to tell writes apart. A client remembers what it
//! last saw of each key, to aim its compare-and-swaps at a value that may
//! still be there.

use std::collections::HashMap;

use crate::cli::RunArgs;
use crate::op::Op;
use crate::op::Outcome;
use crate::op::Reply;

/// A seed for a run without `--seed`: from the clock, so runs differ.
pub(crate) fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// One seed per client, drawn in client order from the run's seed.
pub(crate) fn client_seeds(run_seed: u64, clients: u64) -> Vec<u64> {
    let mut seeds = fastrand::Rng::with_seed(run_seed);
    (0..clients).map(|_| seeds.u64(..)).collect()
}

/// The next operation and the tag of the value it writes.
pub(crate) struct Planned {
    pub op: Op,
    /// `client-sequence`: unique in the run, the start of the value written.
    pub tag: String,
}

/// One client's source of operations.
pub(crate) struct Workload {
    /// The client's id: the first half of every tag.
    client: u64,
    /// Operations planned so far: the second half of every tag.
    sequence: u64,
    rng: fastrand::Rng,
    /// `--keys`: keys are `key_prefix` followed by a number below this.
    keys: u64,
    key_prefix: String,
    /// `--value-size`: values are padded to this length.
    value_size: usize,
    /// `--read-ratio` and `--cas-ratio`; the rest are puts.
    read_ratio: f64,
    cas_ratio: f64,
    /// What this client last saw per key (`None`: absent), to aim its
    /// compare-and-swaps. A key it is unsure of is not in the map.
    last_seen: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Workload {
    /// The workload of client `client`, choosing by `seed`.
    pub fn new(args: &RunArgs, client: u64, seed: u64) -> Workload {
        Workload {
            client,
            sequence: 0,
            rng: fastrand::Rng::with_seed(seed),
            keys: args.keys,
            key_prefix: args.key_prefix.clone(),
            value_size: args.value_size,
            read_ratio: args.read_ratio,
            cas_ratio: args.cas_ratio,
            last_seen: HashMap::new(),
        }
    }

    /// Chooses the next operation.
    pub fn next(&mut self) -> Planned {
        self.sequence += 1;
        let key = format!("{}{:08}", self.key_prefix, self.rng.u64(..self.keys)).into_bytes();
        let tag = format!("{}-{}", self.client, self.sequence);
        let mut value = format!("{tag}:").into_bytes();
        value.resize(self.value_size.max(value.len()), b'x');
        let roll = self.rng.f64();
        let op = if roll < self.read_ratio {
            Op::Get { key }
        } else if roll < self.read_ratio + self.cas_ratio {
            let expected = self.last_seen.get(&key).cloned().flatten();
            Op::Cas {
                key,
                expected,
                new_value: value,
            }
        } else {
            Op::Put { key, value }
        };
        Planned { op, tag }
    }

    /// Learns what `op`'s outcome says about its key.
    pub fn observe(&mut self, op: &Op, outcome: &Outcome) {
        match (op, outcome) {
            (Op::Get { key }, Outcome::Ok(Reply::Read(found))) => {
                self.last_seen.insert(key.clone(), found.clone());
            }
            (Op::Put { key, value }, Outcome::Ok(_)) => {
                self.last_seen.insert(key.clone(), Some(value.clone()));
            }
            (
                Op::Cas { key, new_value, .. },
                Outcome::Ok(Reply::Swapped { succeeded, current }),
            ) => {
                let now = if *succeeded {
                    Some(new_value.clone())
                } else {
                    current.clone()
                };
                self.last_seen.insert(key.clone(), now);
            }
            (op, Outcome::Unknown(_)) => {
                self.last_seen.remove(op.key());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn args(list: &[&str]) -> RunArgs {
        Cli::parse_from(std::iter::once("hammer").chain(list.iter().copied())).run
    }

    fn choices(workload: &mut Workload, count: usize) -> Vec<(String, Vec<u8>)> {
        (0..count)
            .map(|_| {
                let planned = workload.next();
                (planned.op.kind().to_string(), planned.op.key().to_vec())
            })
            .collect()
    }

    #[test]
    fn a_seed_repeats_the_choices() {
        let args = args(&[
            "--keys",
            "1000",
            "--read-ratio",
            "0.3",
            "--cas-ratio",
            "0.3",
        ]);
        let seeds = client_seeds(42, 4);
        assert_eq!(seeds, client_seeds(42, 4));
        assert_ne!(seeds, client_seeds(43, 4));
        let first = choices(&mut Workload::new(&args, 3, seeds[3]), 100);
        let again = choices(&mut Workload::new(&args, 3, seeds[3]), 100);
        assert_eq!(first, again);
        let other = choices(&mut Workload::new(&args, 2, seeds[2]), 100);
        assert_ne!(first, other);
        for kind in ["get", "put", "cas"] {
            assert!(
                first.iter().any(|(k, _)| k == kind),
                "no {kind} in {first:?}"
            );
        }
    }

    #[test]
    fn values_carry_a_unique_tag_and_cas_aims_at_what_was_seen() {
        let args = args(&["--keys", "1", "--cas-ratio", "1", "--value-size", "8"]);
        let mut workload = Workload::new(&args, 7, 1);
        let first = workload.next();
        assert_eq!(first.tag, "7-1");
        let Op::Cas {
            expected,
            new_value,
            ..
        } = &first.op
        else {
            panic!("{:?}", first.op)
        };
        assert_eq!(expected, &None);
        assert_eq!(new_value, b"7-1:xxxx");
        workload.observe(
            &first.op,
            &Outcome::Ok(Reply::Swapped {
                succeeded: true,
                current: None,
            }),
        );
        let second = workload.next();
        assert!(
            matches!(&second.op, Op::Cas { expected: Some(v), .. } if v == b"7-1:xxxx"),
            "{:?}",
            second.op
        );
        workload.observe(&second.op, &Outcome::Unknown("timeout".into()));
        assert!(matches!(workload.next().op, Op::Cas { expected: None, .. }));
    }
}
