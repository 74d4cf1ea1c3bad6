//! `--plot FILE.svg`: throughput and p99 latency per second, with the
//! windows that saw no successful write shaded, so a failover shows as a dip.

use std::fmt::Write;
use std::path::Path;

use crate::stats::Report;

const WIDTH: f64 = 960.0;
const PANEL: f64 = 200.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const GAP: f64 = 50.0;

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

fn svg(report: &Report, title: &str) -> String {
    let height = TOP + 2.0 * PANEL + GAP + 40.0;
    let seconds = report.elapsed_s.max(1.0);
    let x = |t: f64| LEFT + (t / seconds) * (WIDTH - LEFT - RIGHT);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="20" font-size="14">{}</text>
"#,
        escape(title)
    );
    let panels = [
        (
            "ops/s",
            report
                .timeline
                .iter()
                .map(|p| p.ops as f64)
                .collect::<Vec<_>>(),
            "#1f77b4",
            TOP,
        ),
        (
            "p99 ms",
            report.timeline.iter().map(|p| p.p99_ms).collect::<Vec<_>>(),
            "#d62728",
            TOP + PANEL + GAP,
        ),
    ];
    for (label, values, color, top) in panels {
        let max = values.iter().copied().fold(0.0, f64::max).max(1e-9) * 1.1;
        let y = |v: f64| top + PANEL - (v / max) * PANEL;
        for gap in &report.write_gaps {
            let start = x(gap.start_s);
            let width = (x(gap.start_s + gap.length_ms / 1000.0) - start).max(1.0);
            let _ = writeln!(
                out,
                r##"<rect x="{start:.1}" y="{top}" width="{width:.1}" height="{PANEL}" fill="#ff9896" opacity="0.5"><title>no write for {:.0} ms</title></rect>"##,
                gap.length_ms
            );
        }
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{top}" width="{:.1}" height="{PANEL}" fill="none" stroke="#888"/>"##,
            WIDTH - LEFT - RIGHT
        );
        let _ = writeln!(
            out,
            r#"<text x="5" y="{:.1}">{label}</text>"#,
            top + PANEL / 2.0
        );
        let _ = writeln!(
            out,
            r#"<text x="5" y="{:.1}">{:.0}</text>"#,
            top + 10.0,
            max / 1.1
        );
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(second, v)| format!("{:.1},{:.1}", x(second as f64 + 0.5), y(*v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            points.join(" ")
        );
    }
    let axis = TOP + 2.0 * PANEL + GAP + 20.0;
    let step = (seconds / 10.0).ceil().max(1.0);
    let mut t = 0.0;
    while t <= seconds {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{axis}" text-anchor="middle">{t:.0}s</text>"#,
            x(t)
        );
        t += step;
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
