//! Linearizability checking of `--history` files.
//!
//! The history is split by key (each key is an independent register), and
//! each key's operations are searched for a legal sequential order that
//! respects real time: the Wing–Gong–Lowe algorithm with a cache of visited
//! (linearized set, register value) states, as in Porcupine.
//!
//! Outcomes: `ok` operations must take effect between invoke and complete;
//! `fail` operations never took effect and are dropped; `unknown` writes may
//! take effect at any time after their invoke, or never (reads with an
//! unknown outcome constrain nothing and are dropped). The register starts
//! absent. The search is bounded in time and states; hitting a bound gives
//! the verdict "unknown", never a pass.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use std::time::Instant;

use serde::Serialize;

use crate::history;
use crate::history::Call;
use crate::history::Event;
use crate::history::Outcome;

/// What the checker concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Every key has a legal order.
    Linearizable { keys: usize, operations: usize },
    /// This key (the one with the fewest operations among failing keys) has none.
    NotLinearizable { key: String, operations: Vec<Event> },
    /// A bound was hit before an answer was found.
    Unknown { reason: String },
}

/// Limits of one check.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub time: Duration,
    pub states: u64,
}

/// An operation on one register, with values interned as numbers (0 = absent).
#[derive(Debug, Clone, Copy)]
enum Step {
    Put {
        value: u32,
    },
    Get {
        read: u32,
    },
    Cas {
        expected: u32,
        new_value: u32,
        succeeded: Option<bool>,
        read: u32,
    },
}

impl Step {
    /// Applies the step to `state`: the new state, or `None` if the step's
    /// recorded result is impossible from `state`.
    fn apply(&self, state: u32) -> Option<u32> {
        match *self {
            Step::Put { value } => Some(value),
            Step::Get { read } => (read == state).then_some(state),
            Step::Cas {
                expected,
                new_value,
                succeeded,
                read,
            } => match succeeded {
                Some(true) => (state == expected).then_some(new_value),
                Some(false) => (state != expected && state == read).then_some(state),
                // Unknown outcome: swaps if it matches, otherwise changes nothing.
                None => Some(if state == expected { new_value } else { state }),
            },
        }
    }
}

/// One operation prepared for the search.
struct Operation {
    step: Step,
    invoke: u64,
    /// `None`: outcome unknown (may never take effect).
    complete: Option<u64>,
}

/// The search outcome for one key.
enum KeyResult {
    Legal,
    Illegal,
    Bounded(String),
}

/// `hammer check FILE`: prints the verdict (text or JSON); exit 0 only for a
/// linearizable history.
pub(crate) fn run(file: &Path, limits: Limits, json: bool) -> anyhow::Result<ExitCode> {
    let events = history::read(file)?;
    let verdict = check(&events, limits);
    if json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        match &verdict {
            Verdict::Linearizable { keys, operations } => {
                println!("linearizable ({operations} operations on {keys} keys)")
            }
            Verdict::NotLinearizable { key, operations } => {
                println!("operations on key {key:?} that have no legal order:");
                for op in operations {
                    println!("  {}", serde_json::to_string(op)?);
                }
                println!("NOT linearizable: key {key:?}");
            }
            Verdict::Unknown { reason } => println!("unknown: {reason}"),
        }
    }
    Ok(if matches!(verdict, Verdict::Linearizable { .. }) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Checks a whole history.
pub fn check(events: &[Event], limits: Limits) -> Verdict {
    let started = Instant::now();
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for event in events {
        by_key.entry(event.key.as_str()).or_default().push(event);
    }
    let mut failing: Option<(&str, Vec<&Event>)> = None;
    let mut states_left = limits.states;
    let mut operations = 0;
    for (key, key_events) in &by_key {
        let mut values: HashMap<&str, u32> = HashMap::new();
        let mut intern = |value| intern(&mut values, value);
        let mut ops = Vec::new();
        let mut kept = Vec::new();
        for event in key_events {
            let unknown = event.outcome == Outcome::Unknown;
            if event.outcome == Outcome::Fail || (unknown && matches!(event.call, Call::Get { .. }))
            {
                continue;
            }
            let step = match &event.call {
                Call::Put { value } => Step::Put {
                    value: intern(Some(value)),
                },
                Call::Get { read } => Step::Get {
                    read: intern(read.as_deref()),
                },
                Call::Cas {
                    value,
                    expected,
                    succeeded,
                    read,
                } => Step::Cas {
                    expected: intern(expected.as_deref()),
                    new_value: intern(Some(value)),
                    succeeded: if unknown { None } else { *succeeded },
                    read: intern(read.as_deref()),
                },
            };
            ops.push(Operation {
                step,
                invoke: event.invoke_ns,
                complete: (!unknown).then_some(event.complete_ns),
            });
            kept.push(*event);
        }
        operations += ops.len();
        let deadline = started + limits.time;
        match search(&ops, deadline, &mut states_left) {
            KeyResult::Legal => {}
            KeyResult::Illegal => {
                if failing.as_ref().is_none_or(|(_, f)| kept.len() < f.len()) {
                    failing = Some((key, kept));
                }
            }
            KeyResult::Bounded(reason) => {
                return Verdict::Unknown {
                    reason: format!("key {key:?}: {reason}"),
                };
            }
        }
    }
    match failing {
        Some((key, events)) => Verdict::NotLinearizable {
            key: key.to_string(),
            operations: events.into_iter().cloned().collect(),
        },
        None => Verdict::Linearizable {
            keys: by_key.len(),
            operations,
        },
    }
}

/// The number standing for `value` (0: absent), assigned on first sight.
fn intern<'a>(values: &mut HashMap<&'a str, u32>, value: Option<&'a str>) -> u32 {
    match value {
        None => 0,
        Some(v) => {
            let next = values.len() as u32 + 1;
            *values.entry(v).or_insert(next)
        }
    }
}

/// A call or return event in the doubly linked list the search walks.
#[derive(Clone, Copy)]
struct Node {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// Wing–Gong–Lowe search over one register's operations.
fn search(ops: &[Operation], deadline: Instant, states_left: &mut u64) -> KeyResult {
    const NONE: usize = usize::MAX;
    // Events sorted by time; at equal times calls come first (they overlap).
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoke, false, i));
        if let Some(complete) = op.complete {
            events.push((complete.max(op.invoke), true, i));
        }
    }
    events.sort_unstable();
    // Node 0 is the head sentinel; event k is node k + 1.
    let mut nodes = vec![Node {
        op: NONE,
        is_call: false,
        prev: NONE,
        next: NONE,
    }];
    let mut return_node = vec![NONE; ops.len()];
    for (k, (_, is_return, op)) in events.iter().enumerate() {
        let index = k + 1;
        nodes.push(Node {
            op: *op,
            is_call: !is_return,
            prev: index - 1,
            next: NONE,
        });
        nodes[index - 1].next = index;
        if *is_return {
            return_node[*op] = index;
        }
    }
    let mut returns_left = ops.iter().filter(|o| o.complete.is_some()).count();
    let words = ops.len().div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, u32)> = HashSet::new();
    let mut stack: Vec<(usize, u32)> = Vec::new();
    let mut state = 0u32;
    let mut entry = nodes[0].next;

    let unlink = |nodes: &mut Vec<Node>, i: usize| {
        let (prev, next) = (nodes[i].prev, nodes[i].next);
        nodes[prev].next = next;
        if next != NONE {
            nodes[next].prev = prev;
        }
    };
    let relink = |nodes: &mut Vec<Node>, i: usize| {
        let (prev, next) = (nodes[i].prev, nodes[i].next);
        nodes[prev].next = i;
        if next != NONE {
            nodes[next].prev = i;
        }
    };

    let mut steps = 0u64;
    while returns_left > 0 {
        steps += 1;
        if steps.is_multiple_of(4096) && Instant::now() > deadline {
            return KeyResult::Bounded("time limit reached".into());
        }
        if entry == NONE {
            // Only calls of unknown-outcome writes remain ahead: backtrack.
            let Some((call, previous)) = stack.pop() else {
                return KeyResult::Illegal;
            };
            let op = nodes[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = previous;
            if return_node[op] != NONE {
                relink(&mut nodes, return_node[op]);
                returns_left += 1;
            }
            relink(&mut nodes, call);
            entry = nodes[call].next;
            continue;
        }
        let node = nodes[entry];
        if node.is_call {
            let op = node.op;
            if let Some(next_state) = ops[op].step.apply(state) {
                let mut next_linearized = linearized.clone();
                next_linearized[op / 64] |= 1 << (op % 64);
                if seen.insert((next_linearized.clone(), next_state)) {
                    if *states_left == 0 {
                        return KeyResult::Bounded("state limit reached".into());
                    }
                    *states_left -= 1;
                    stack.push((entry, state));
                    state = next_state;
                    linearized = next_linearized;
                    unlink(&mut nodes, entry);
                    if return_node[op] != NONE {
                        unlink(&mut nodes, return_node[op]);
                        returns_left -= 1;
                    }
                    entry = nodes[0].next;
                    continue;
                }
            }
            entry = node.next;
        } else {
            // A completed operation that nothing so far could linearize: backtrack.
            let Some((call, previous)) = stack.pop() else {
                return KeyResult::Illegal;
            };
            let op = nodes[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = previous;
            if return_node[op] != NONE {
                relink(&mut nodes, return_node[op]);
                returns_left += 1;
            }
            relink(&mut nodes, call);
            entry = nodes[call].next;
        }
    }
    KeyResult::Legal
}

#[cfg(test)]
mod tests;
