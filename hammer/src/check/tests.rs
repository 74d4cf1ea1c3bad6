//! The linearizability checker against small histories with known answers.

use super::*;

fn event(client: u64, call: Call, at: (u64, u64), outcome: Outcome) -> Event {
    Event {
        client,
        key: "k".into(),
        call,
        invoke_ns: at.0,
        complete_ns: at.1,
        outcome,
    }
}

fn put(client: u64, value: &str, at: (u64, u64)) -> Event {
    let call = Call::Put {
        value: value.into(),
    };
    event(client, call, at, Outcome::Ok)
}

fn get(client: u64, read: Option<&str>, at: (u64, u64)) -> Event {
    let call = Call::Get {
        read: read.map(String::from),
    };
    event(client, call, at, Outcome::Ok)
}

fn cas(
    client: u64,
    expected: Option<&str>,
    new: &str,
    succeeded: bool,
    read: Option<&str>,
    at: (u64, u64),
) -> Event {
    let call = Call::Cas {
        value: new.into(),
        expected: expected.map(String::from),
        succeeded: Some(succeeded),
        read: read.map(String::from),
    };
    event(client, call, at, Outcome::Ok)
}

const LIMITS: Limits = Limits {
    time: Duration::from_secs(10),
    states: 1_000_000,
};

fn verdict(events: &[Event]) -> Verdict {
    check(events, LIMITS)
}

#[test]
fn legal_histories_pass() {
    // Sequential, then concurrent writes read in either order.
    let history = vec![
        get(1, None, (0, 1)),
        put(1, "a", (2, 3)),
        get(2, Some("a"), (4, 5)),
        put(1, "b", (6, 10)),
        put(2, "c", (7, 9)),
        get(3, Some("b"), (11, 12)),
        cas(1, Some("b"), "d", true, None, (13, 14)),
        cas(2, Some("b"), "e", false, Some("d"), (15, 16)),
        get(3, Some("d"), (17, 18)),
    ];
    assert!(matches!(
        verdict(&history),
        Verdict::Linearizable { operations: 9, .. }
    ));
    // A read concurrent with a write may see either value.
    let history = vec![
        put(1, "a", (0, 1)),
        put(1, "b", (2, 10)),
        get(2, Some("a"), (3, 4)),
        get(3, Some("b"), (5, 6)),
    ];
    assert!(matches!(verdict(&history), Verdict::Linearizable { .. }));
}

#[test]
fn a_stale_read_fails() {
    let history = vec![
        put(1, "a", (0, 1)),
        put(1, "b", (2, 3)),
        get(2, Some("a"), (4, 5)),
    ];
    assert!(matches!(verdict(&history), Verdict::NotLinearizable { .. }));
}

#[test]
fn a_lost_write_fails() {
    let history = vec![put(1, "a", (0, 1)), get(2, None, (2, 3))];
    assert!(matches!(verdict(&history), Verdict::NotLinearizable { .. }));
}

#[test]
fn a_read_of_a_never_written_value_fails() {
    let history = vec![put(1, "a", (0, 1)), get(2, Some("zzz"), (2, 3))];
    let Verdict::NotLinearizable { key, operations } = verdict(&history) else {
        panic!("passed")
    };
    assert_eq!(key, "k");
    assert_eq!(operations.len(), 2);
}

#[test]
fn a_compare_and_swap_that_succeeded_twice_fails() {
    let history = vec![
        put(1, "a", (0, 1)),
        cas(1, Some("a"), "b", true, None, (2, 5)),
        cas(2, Some("a"), "c", true, None, (3, 6)),
    ];
    assert!(matches!(verdict(&history), Verdict::NotLinearizable { .. }));
}

#[test]
fn unknown_writes_may_or_may_not_take_effect_and_failures_never_do() {
    let mut lost = put(1, "b", (2, 3));
    lost.outcome = Outcome::Unknown;
    // Seen later...
    let history = vec![
        put(1, "a", (0, 1)),
        lost.clone(),
        get(2, Some("b"), (10, 11)),
    ];
    assert!(matches!(verdict(&history), Verdict::Linearizable { .. }));
    // ...or never.
    let history = vec![
        put(1, "a", (0, 1)),
        lost.clone(),
        get(2, Some("a"), (10, 11)),
    ];
    assert!(matches!(verdict(&history), Verdict::Linearizable { .. }));
    // But not before it was invoked.
    let history = vec![put(1, "a", (5, 6)), get(2, Some("b"), (0, 1)), lost];
    assert!(matches!(verdict(&history), Verdict::NotLinearizable { .. }));
    // A failed write never shows.
    let mut failed = put(1, "b", (2, 3));
    failed.outcome = Outcome::Fail;
    let history = vec![put(1, "a", (0, 1)), failed, get(2, Some("b"), (10, 11))];
    assert!(matches!(verdict(&history), Verdict::NotLinearizable { .. }));
}

#[test]
fn the_smallest_failing_key_is_reported_and_bounds_give_unknown() {
    let mut other = vec![
        put(1, "x", (0, 1)),
        put(1, "y", (2, 3)),
        put(1, "z", (4, 5)),
        get(2, Some("x"), (6, 7)),
    ];
    for e in &mut other {
        e.key = "big".into();
    }
    let mut history = vec![put(1, "a", (0, 1)), get(2, None, (2, 3))];
    history.extend(other);
    let Verdict::NotLinearizable { key, .. } = verdict(&history) else {
        panic!("passed")
    };
    assert_eq!(key, "k");
    let many: Vec<Event> = (0..40)
        .map(|i| put(i, &format!("v{i}"), (0, 100)))
        .collect();
    let bounded = check(
        &many,
        Limits {
            time: Duration::from_secs(10),
            states: 10,
        },
    );
    assert!(matches!(bounded, Verdict::Unknown { .. }), "{bounded:?}");
}
