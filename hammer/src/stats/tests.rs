//! What a run measured, against runs whose numbers are known.

use super::*;

const MS: u64 = 1000;
const SECOND: u64 = 1_000_000;

fn edges(gaps: &[Gap]) -> Vec<(f64, f64, GapEdge)> {
    gaps.iter()
        .map(|g| (g.start_s, g.length_ms, g.edge))
        .collect()
}

#[test]
fn gaps_run_from_the_start_to_the_first_write_and_from_the_last_to_the_end() {
    let gaps = write_gaps(&[20 * MS, 30 * MS, 3 * SECOND], 8 * SECOND);
    assert_eq!(
        edges(&gaps),
        vec![
            (0.0, 20.0, GapEdge::Start),
            (0.02, 10.0, GapEdge::Inside),
            (0.03, 2970.0, GapEdge::Inside),
            (3.0, 5000.0, GapEdge::End),
        ]
    );
}

#[test]
fn a_run_without_a_successful_write_is_one_gap_from_the_start() {
    let gaps = write_gaps(&[], 8 * SECOND);
    assert_eq!(edges(&gaps), vec![(0.0, 8000.0, GapEdge::Start)]);
    assert!(ended_in_outage(&gaps, None, Some(7 * SECOND), 100.0));
}

fn recorder_with_writes(at_ms: &[u64]) -> Recorder {
    let mut recorder = Recorder::default();
    for at in at_ms {
        recorder.success(
            "put",
            true,
            Duration::from_millis(1),
            Duration::from_millis(*at),
        );
    }
    recorder
}

#[test]
fn writes_that_stop_while_clients_retry_end_the_run_in_an_outage() {
    let mut recorder = recorder_with_writes(&[5, 10, 2990, 3000]);
    recorder.retry("no_leader", Duration::from_millis(3500));
    let report = recorder.report(Duration::from_secs(8), Duration::from_millis(100), true);
    assert!(report.ended_in_outage);
    assert_eq!(report.longest_write_gap_ms, Some(5000.0));
    assert_eq!(
        edges(&report.write_gaps),
        vec![(0.01, 2980.0, GapEdge::Inside), (3.0, 5000.0, GapEdge::End)]
    );
    let text = report.render();
    assert!(
        text.contains("ENDED IN AN OUTAGE: no write succeeded after t=3.00s"),
        "{text}"
    );
    assert!(text.contains("(until the end of the run)"), "{text}");
}

#[test]
fn a_quiet_end_without_failures_or_retries_is_no_outage() {
    // A low --rate: the last write came a while before the end, but
    // nothing failed after it.
    let mut recorder = recorder_with_writes(&[100, 600, 1100]);
    recorder.failure("timeout", true, Duration::from_millis(50));
    let report = recorder.report(
        Duration::from_millis(1500),
        Duration::from_millis(100),
        true,
    );
    assert!(!report.ended_in_outage);
    assert_eq!(report.write_gaps.last().map(|g| g.edge), Some(GapEdge::End));
}

#[test]
fn a_healthy_run_lists_no_gaps_and_no_outage() {
    let mut recorder = recorder_with_writes(&[3, 6, 9, 12]);
    recorder.retry("not_leader", Duration::from_millis(4));
    let report = recorder.report(Duration::from_millis(13), Duration::from_millis(100), true);
    assert!(!report.ended_in_outage);
    assert!(report.write_gaps.is_empty());
    assert_eq!(report.longest_write_gap_ms, Some(3.0));
}

#[test]
fn a_read_only_run_has_no_write_gaps() {
    let mut recorder = Recorder::default();
    recorder.success(
        "get",
        false,
        Duration::from_millis(1),
        Duration::from_millis(5),
    );
    let report = recorder.report(Duration::from_secs(2), Duration::from_millis(100), false);
    assert_eq!(report.longest_write_gap_ms, None);
    assert!(report.write_gaps.is_empty());
    assert!(!report.ended_in_outage);
    assert!(report
        .render()
        .contains("longest window with no successful write: none (the run did no writes)"));
}

#[test]
fn the_json_report_renders_the_same_text_when_read_back() {
    let mut recorder = recorder_with_writes(&[5, 10, 2990]);
    recorder.retry("connect", Duration::from_millis(4000));
    let mut report = recorder.report(Duration::from_secs(5), Duration::from_millis(100), true);
    report.leader_changes = Some(vec![LeaderChange {
        at_s: 0.005,
        leader_id: Some(2),
        address: "127.0.0.1:50052".into(),
    }]);
    let json = serde_json::to_string_pretty(&report).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["ended_in_outage"], true);
    assert_eq!(value["write_gaps"][1]["edge"], "end");
    assert_eq!(value["write_gaps"][0]["edge"], "");
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back.render(), report.render());
    assert!(back.render().contains("node 2  127.0.0.1:50052"));
}
