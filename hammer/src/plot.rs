//! `--plot FILE.svg`: what happened when. Throughput and p99 latency per
//! second (drawn as steps: each is one second's measure) on a time axis in
//! seconds; every window without a successful write
//! (the start and end of the run included) shaded and labelled with its
//! length; each leader change a dashed vertical line labelled with the new
//! leader's id. Plain SVG written by hand: one chart does not justify a
//! plotting dependency.

use std::fmt::Write;
use std::path::Path;

use crate::stats::GapEdge;
use crate::stats::Report;
use crate::stats::TimelinePoint;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
/// Top of the throughput panel; above it: title, key and leader labels.
const TOP: f64 = 100.0;
const PANEL: f64 = 200.0;
/// Between the two panels.
const SPACE: f64 = 50.0;
/// Partial seconds shorter than this (the tail of the run) are left out:
/// a rate over a sliver of a second is noise.
const SHORTEST_BUCKET_S: f64 = 0.25;

const THROUGHPUT_COLOR: &str = "#1f77b4";
const WRITES_COLOR: &str = "#2ca02c";
const LATENCY_COLOR: &str = "#d62728";
const GAP_COLOR: &str = "#ff9896";
const LEADER_COLOR: &str = "#555";

/// Draws `report` into `path` (SVG).
pub fn write_svg(report: &Report, path: &Path, title: &str) -> anyhow::Result<()> {
    if path.extension().and_then(|e| e.to_str()) != Some("svg") {
        anyhow::bail!(
            "--plot writes SVG: name the file something.svg (got {})",
            path.display()
        );
    }
    std::fs::write(path, svg(report, title))
        .map_err(|e| anyhow::anyhow!("cannot write plot {}: {e}", path.display()))
}

/// Where things go on the canvas.
struct Frame {
    /// Seconds shown on the time axis.
    seconds: f64,
}

impl Frame {
    fn x(&self, t: f64) -> f64 {
        LEFT + (t / self.seconds).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }

    fn bottom(&self) -> f64 {
        TOP + 2.0 * PANEL + SPACE
    }
}

/// One panel: a quantity per second.
struct Panel<'a> {
    top: f64,
    label: &'a str,
    /// Each line: its name, colour and one (from, to, value) step per
    /// second; `None` breaks the line (a second with nothing to measure).
    lines: Vec<(&'a str, &'a str, Vec<Step>)>,
    format_tick: fn(f64) -> String,
}

fn svg(report: &Report, title: &str) -> String {
    let frame = Frame {
        seconds: report.elapsed_s.max(1.0),
    };
    let height = frame.bottom() + 60.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>
"#,
        escape(title)
    );
    key(&mut out, report);
    write_gaps(&mut out, report, &frame);
    time_axis(&mut out, &frame);

    let buckets = buckets(report);
    let per_second = |value: fn(&TimelinePoint) -> f64| {
        buckets
            .iter()
            .map(|(from, to, point)| (*from, *to, Some(value(point) / (to - from))))
            .collect::<Vec<_>>()
    };
    let mut throughput = vec![("ops/s", THROUGHPUT_COLOR, per_second(|p| p.ops as f64))];
    if report.timeline.iter().any(|p| p.writes != p.ops) {
        throughput.push(("writes/s", WRITES_COLOR, per_second(|p| p.writes as f64)));
    }
    let latency = buckets
        .iter()
        .map(|(from, to, p)| (*from, *to, (p.ops > 0).then_some(p.p99_ms)))
        .collect();
    let panels = [
        Panel {
            top: TOP,
            label: "throughput, ops/s",
            lines: throughput,
            format_tick: format_count,
        },
        Panel {
            top: TOP + PANEL + SPACE,
            label: "p99 latency, ms",
            lines: vec![("p99", LATENCY_COLOR, latency)],
            format_tick: format_ms,
        },
    ];
    for panel in &panels {
        draw_panel(&mut out, panel, &frame);
    }
    leader_changes(&mut out, report, &frame);
    out.push_str("</svg>\n");
    out
}

/// The key under the title: what the shading and the dashed lines mean.
fn key(out: &mut String, report: &Report) {
    let y = 44.0;
    let mut x = LEFT;
    let _ = writeln!(
        out,
        r#"<rect x="{x}" y="{:.1}" width="18" height="10" fill="{GAP_COLOR}" opacity="0.5"/>"#,
        y - 9.0
    );
    x += 24.0;
    let gaps = format!(
        "no successful write for {:.0} ms or more",
        report.gap_threshold_ms
    );
    let _ = writeln!(out, r#"<text x="{x}" y="{y}">{}</text>"#, escape(&gaps));
    x += text_width(&gaps) + 20.0;
    if report.leader_changes.is_some() {
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{:.1}" x2="{x}" y2="{:.1}" stroke="{LEADER_COLOR}" stroke-dasharray="4 3"/>"#,
            y - 11.0,
            y + 2.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{y}">leader N: a new leader served its first operation</text>"#,
            x + 6.0
        );
    }
}

/// One step of a line: from, to (seconds) and the value, if any.
type Step = (f64, f64, Option<f64>);

/// Timeline seconds with where they start and end (the last may be partial).
fn buckets(report: &Report) -> Vec<(f64, f64, &TimelinePoint)> {
    report
        .timeline
        .iter()
        .filter_map(|point| {
            let from = point.second as f64;
            let to = (from + 1.0).min(report.elapsed_s.max(from));
            (to - from >= SHORTEST_BUCKET_S).then_some((from, to, point))
        })
        .collect()
}

fn draw_panel(out: &mut String, panel: &Panel, frame: &Frame) {
    let max = panel
        .lines
        .iter()
        .flat_map(|(_, _, steps)| steps.iter().filter_map(|(_, _, v)| *v))
        .fold(0.0, f64::max);
    let (top_value, step) = nice_scale(max);
    let y = |v: f64| panel.top + PANEL - (v / top_value) * PANEL;
    let right = WIDTH - RIGHT;
    let mut tick = 0.0;
    while tick <= top_value + step / 1000.0 {
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{right}" y2="{0:.1}" stroke="#e4e4e4"/><text x="{1}" y="{2:.1}" text-anchor="end">{3}</text>"##,
            y(tick),
            LEFT - 6.0,
            y(tick) + 4.0,
            (panel.format_tick)(tick)
        );
        tick += step;
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{}" width="{:.1}" height="{PANEL}" fill="none" stroke="#888"/>"##,
        panel.top,
        WIDTH - LEFT - RIGHT
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-weight="bold">{}</text>"#,
        LEFT + 6.0,
        panel.top + 14.0,
        escape(panel.label)
    );
    let mut legend_x = WIDTH - RIGHT - 6.0;
    for (name, color, steps) in panel.lines.iter().rev() {
        // Each run of measured seconds is one polyline; a second without
        // a value breaks it.
        for run in steps.split(|(_, _, v)| v.is_none()) {
            let coordinates: Vec<String> = run
                .iter()
                .filter_map(|(from, to, v)| {
                    v.map(|v| {
                        format!(
                            "{:.1},{2:.1} {:.1},{2:.1}",
                            frame.x(*from),
                            frame.x(*to),
                            y(v)
                        )
                    })
                })
                .collect();
            if !coordinates.is_empty() {
                let _ = writeln!(
                    out,
                    r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                    coordinates.join(" ")
                );
            }
        }
        if panel.lines.len() > 1 {
            let _ = writeln!(
                out,
                r#"<text x="{legend_x:.1}" y="{:.1}" text-anchor="end" fill="{color}" font-weight="bold">{name}</text>"#,
                panel.top + 14.0
            );
            legend_x -= text_width(name) + 20.0;
        }
    }
}

/// Shades every write gap across both panels, each labelled with its length
/// where the label does not run into the previous one.
fn write_gaps(out: &mut String, report: &Report, frame: &Frame) {
    let mut last_label_end = f64::NEG_INFINITY;
    for gap in &report.write_gaps {
        let end_s = gap.start_s + gap.length_ms / 1000.0;
        let start = frame.x(gap.start_s);
        let width = (frame.x(end_s) - start).max(1.5);
        let what = match gap.edge {
            GapEdge::Start => " (from the start)",
            GapEdge::End => " (until the end)",
            GapEdge::Inside => "",
        };
        let _ = writeln!(
            out,
            r#"<rect x="{start:.1}" y="{TOP}" width="{width:.1}" height="{:.1}" fill="{GAP_COLOR}" opacity="0.5"><title>no successful write for {:.0} ms from t={:.2}s{what}</title></rect>"#,
            frame.bottom() - TOP,
            gap.length_ms,
            gap.start_s
        );
        // The whole label inside the shading if it fits, else just the
        // length (the tooltip has the rest).
        let length = format_duration_ms(gap.length_ms);
        let full = format!("no writes {length}");
        let label = if width >= text_width(&full) + 4.0 {
            full
        } else {
            length
        };
        let middle = start + width / 2.0;
        if middle - text_width(&label) / 2.0 > last_label_end + 4.0 {
            last_label_end = middle + text_width(&label) / 2.0;
            let _ = writeln!(
                out,
                r##"<text x="{middle:.1}" y="{:.1}" text-anchor="middle" fill="#a00">{label}</text>"##,
                TOP + PANEL - 8.0
            );
        }
    }
}

/// About how wide `text` is at the chart's font size.
fn text_width(text: &str) -> f64 {
    7.0 * text.chars().count() as f64
}

/// A dashed vertical line per leader change, its id above the panels;
/// labels that would overlap move up a row.
fn leader_changes(out: &mut String, report: &Report, frame: &Frame) {
    let Some(changes) = &report.leader_changes else {
        return;
    };
    const ROWS: [f64; 3] = [TOP - 8.0, TOP - 22.0, TOP - 36.0];
    let mut row_ends = [f64::NEG_INFINITY; 3];
    for change in changes {
        let x = frame.x(change.at_s);
        let name = change
            .leader_id
            .map_or("leader ?".to_string(), |id| format!("leader {id}"));
        let width = text_width(&name);
        let row = (0..ROWS.len())
            .find(|&row| row_ends[row] < x - width / 2.0 - 4.0)
            .unwrap_or(ROWS.len() - 1);
        row_ends[row] = x + width / 2.0;
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{LEADER_COLOR}" stroke-width="1.5" stroke-dasharray="4 3"><title>t={:.2}s: {name} at {}</title></line>"#,
            ROWS[row] + 3.0,
            frame.bottom(),
            change.at_s,
            escape(&change.address)
        );
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="{LEADER_COLOR}">{name}</text>"#,
            ROWS[row]
        );
    }
}

/// Seconds along the bottom, with light vertical grid lines.
fn time_axis(out: &mut String, frame: &Frame) {
    let (_, step) = nice_scale(frame.seconds / 2.0);
    let labels = frame.bottom() + 16.0;
    let mut t = 0.0;
    while t <= frame.seconds + 1e-9 {
        let x = frame.x(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#f0f0f0"/><text x="{x:.1}" y="{labels:.1}" text-anchor="middle">{}</text>"##,
            frame.bottom(),
            format_count(t)
        );
        t += step;
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since the start of the run, s</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        labels + 20.0
    );
}

/// An axis from 0 to a round number at least `max`, and a round step that
/// divides it into four to eight ticks (steps of 1, 2, 2.5 or 5 × 10ⁿ).
fn nice_scale(max: f64) -> (f64, f64) {
    let max = if max > 0.0 && max.is_finite() {
        max
    } else {
        1.0
    };
    let rough = max / 4.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

/// 0, 500, 2k, 2.5k, 1.2M: counts per second as people read them.
fn format_count(value: f64) -> String {
    let (scaled, suffix) = if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    format!("{}{suffix}", trim_decimals(scaled))
}

/// Milliseconds as plain round numbers: 0, 0.5, 250, 1000.
fn format_ms(value: f64) -> String {
    trim_decimals(value)
}

/// "120 ms" or "4.3 s".
fn format_duration_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

fn trim_decimals(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::LeaderChange;
    use crate::stats::Recorder;
    use std::time::Duration;

    #[test]
    fn scales_are_round_numbers() {
        assert_eq!(nice_scale(3700.0), (4000.0, 1000.0));
        assert_eq!(nice_scale(9.0), (10.0, 2.5));
        assert_eq!(nice_scale(0.0), (1.0, 0.25));
        assert_eq!(nice_scale(130.0), (150.0, 50.0));
        assert_eq!(format_count(2000.0), "2k");
        assert_eq!(format_count(2500.0), "2.5k");
        assert_eq!(format_count(250.0), "250");
        assert_eq!(format_ms(0.5), "0.5");
    }

    #[test]
    fn the_chart_shows_gaps_and_leader_changes() {
        let mut recorder = Recorder::default();
        for ms in (10..3000).step_by(10) {
            recorder.success(
                "put",
                true,
                Duration::from_millis(2),
                Duration::from_millis(ms),
            );
        }
        recorder.retry("no_leader", Duration::from_millis(4000));
        let mut report = recorder.report(Duration::from_secs(8), Duration::from_millis(100), true);
        report.leader_changes = Some(vec![LeaderChange {
            at_s: 0.01,
            leader_id: Some(3),
            address: "127.0.0.1:3".into(),
        }]);
        let chart = svg(&report, "test");
        assert!(chart.contains(">leader 3</text>"), "{chart}");
        assert!(chart.contains("no writes 5.0 s"), "{chart}");
        assert!(chart.contains("(until the end)"), "{chart}");
        assert!(chart.contains(">4</text>"), "no time axis: {chart}");
    }
}
