//! The Grafana dashboard in `packaging/grafana/raftkv.json`: it has the shape
//! Grafana imports (panels placed on the grid, each with its queries), it
//! reads from whichever Prometheus the `datasource` variable names (never a
//! fixed datasource), and every metric its PromQL names (panels, annotations,
//! variables) is one a live cluster exports, spelled as Prometheus stores it.

use std::collections::BTreeSet;

use serde_json::Value;

use raftkv_testkit::wait_for;
use raftkv_testkit::TestCluster;
use raftkv_testkit::TestNode;

use crate::support::put;

/// The dashboard, relative to this package.
const DASHBOARD: &str = "../packaging/grafana/raftkv.json";

/// The one datasource the dashboard may name: the `datasource` variable.
const DATASOURCE_UID: &str = "${datasource}";

/// PromQL's functions: a name followed by `(` is a call, not a metric. A
/// call of a name not listed here is refused, so that a typo in a function
/// cannot hide a metric name.
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "double_exponential_smoothing",
    "end",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_by_label",
    "sort_by_label_desc",
    "sort_desc",
    "sqrt",
    "start",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

/// Aggregation operators: `sum by (le) (…)` puts the grouping between the
/// name and its parenthesis.
const AGGREGATIONS: &[&str] = &[
    "avg",
    "bottomk",
    "count",
    "count_values",
    "group",
    "limit_ratio",
    "limitk",
    "max",
    "min",
    "quantile",
    "stddev",
    "stdvar",
    "sum",
    "topk",
];

/// Keywords that may be followed by a parenthesized list of label names.
const GROUPINGS: &[&str] = &[
    "by",
    "group_left",
    "group_right",
    "ignoring",
    "on",
    "without",
];

/// Binary operators and modifiers spelled as words, and the float literals.
const KEYWORDS: &[&str] = &[
    "and", "atan2", "bool", "inf", "nan", "offset", "or", "unless",
];

/// The dashboard as Grafana would import it.
fn load() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DASHBOARD);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, those inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("a panels array") {
        all.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            all.extend(inner);
        }
    }
    all
}

/// The string at `key` in `value` ("" if none), to name things in messages.
fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

/// Every PromQL query in the dashboard, with where it is: panel targets,
/// annotation queries, and the selectors of `label_values(…)` variables.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            found.push((
                format!("panel {:?}", text(panel, "title")),
                expr.to_string(),
            ));
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            found.push((
                format!("annotation {:?}", text(annotation, "name")),
                expr.into(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
    {
        let query = variable["query"].as_str().expect("a variable's query");
        // label_values(selector, label): the label is not a metric.
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|args| args.rsplit_once(','))
            .map(|(selector, _label)| selector)
            .unwrap_or_else(|| {
                panic!(
                    "variable {:?}: not label_values(…, …)",
                    text(variable, "name")
                )
            });
        found.push((
            format!("variable {:?}", text(variable, "name")),
            selector.into(),
        ));
    }
    found
}

/// The end (exclusive) of the string literal opening at `start`.
fn skip_string(chars: &[char], start: usize) -> Result<usize, String> {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err("unterminated string".into())
}

/// The end (exclusive) of the bracketed group opening at `start` and
/// closed by `close`, strings inside it skipped whole.
fn skip_group(chars: &[char], start: usize, close: char) -> Result<usize, String> {
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i)?,
            c if c == close => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(format!("no {close:?} closes the group at {start}"))
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names in one PromQL expression: what is left once function
/// and aggregation names, keywords, label matchers (`{…}`), grouping label
/// lists (`by (…)`, `on (…)`, …), strings, numbers, durations, ranges
/// (`[5m]`) and Grafana variables (`$__rate_interval`) are dropped.
fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let next_char = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        (i, chars.get(i).copied())
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i)?;
        } else if c == '{' {
            let end = skip_group(&chars, i, '}')?;
            let matchers: String = chars[i..end].iter().collect();
            // A metric named by a matcher would escape the check.
            if matchers.contains("__name__") {
                return Err(format!("a metric named through __name__: {matchers}"));
            }
            i = end;
        } else if c == '[' {
            i = skip_group(&chars, i, ']')?;
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_group(&chars, i, '}')?;
            } else {
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers and durations (0.99, 1e-3, 0x1f, 5m, 1h30m).
            while i < chars.len() {
                let d = chars[i];
                let exponent_sign = (d == '-' || d == '+') && matches!(chars[i - 1], 'e' | 'E');
                if !(d.is_ascii_alphanumeric() || d == '.' || exponent_sign) {
                    break;
                }
                i += 1;
            }
        } else if is_name_start(c) {
            let start = i;
            while i < chars.len() && is_name_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let (after, next) = next_char(i);
            let lower = word.to_ascii_lowercase();
            if GROUPINGS.contains(&lower.as_str()) {
                if next == Some('(') {
                    i = skip_group(&chars, after, ')')?;
                }
            } else if AGGREGATIONS.contains(&lower.as_str()) || KEYWORDS.contains(&lower.as_str()) {
                // Not a metric.
            } else if next == Some('(') {
                if !FUNCTIONS.contains(&word.as_str()) {
                    return Err(format!("{word}(…) is not a PromQL function"));
                }
            } else {
                names.insert(word);
            }
        } else {
            // Operators, parentheses, commas, whitespace.
            i += 1;
        }
    }
    Ok(names)
}

/// The names of the samples on `node`'s `/metrics`: what Prometheus stores,
/// `_total` of a counter and `_bucket`, `_sum`, `_count` of a histogram
/// included. Panics on a sample of no declared family.
fn exported(node: &TestNode) -> BTreeSet<String> {
    let (status, body) = node
        .http_get("/metrics")
        .expect("the metrics endpoint answers");
    assert_eq!(status, 200, "{body}");
    let mut families = BTreeSet::new();
    let mut samples = BTreeSet::new();
    for line in body.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            families.insert(declared.split(' ').next().unwrap_or_default().to_string());
        } else if !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            samples.insert(name.to_string());
        }
    }
    for name in &samples {
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|family| families.contains(*family));
        assert!(
            families.contains(name) || family.is_some(),
            "sample {name} of no declared family on node {}",
            node.id
        );
    }
    samples
}

#[test]
fn the_dashboard_imports_into_grafana_and_reads_the_chosen_datasource() {
    let dashboard = load();
    for field in ["title", "uid"] {
        assert!(
            dashboard[field].as_str().is_some_and(|s| !s.is_empty()),
            "no {field}"
        );
    }
    let schema = dashboard["schemaVersion"]
        .as_u64()
        .expect("a schemaVersion");
    assert!(schema >= 36, "schemaVersion {schema}: older than Grafana 9");
    // A fixed id would overwrite whichever dashboard has it on import.
    assert!(dashboard["id"].is_null(), "a fixed dashboard id");

    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating variables");
    assert!(
        variables.iter().any(|v| v["type"] == "datasource"
            && v["name"] == "datasource"
            && v["query"] == "prometheus"),
        "no datasource variable of type prometheus"
    );

    let panels = panels(&dashboard);
    let shown: Vec<&Value> = panels.iter().copied().filter(|p| !is_row(p)).collect();
    assert!(!shown.is_empty(), "no panels");
    let mut ids = BTreeSet::new();
    let mut placed: Vec<(u64, u64, u64, u64, String)> = Vec::new();
    for panel in &panels {
        let title = text(panel, "title").to_string();
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "{title}: id {id} taken twice");
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            grid[k]
                .as_u64()
                .unwrap_or_else(|| panic!("{title}: no gridPos.{k}"))
        });
        assert!(
            w > 0 && h > 0 && x + w <= 24,
            "{title}: off the grid {grid}"
        );
        for (ox, oy, ow, oh, other) in &placed {
            let apart = x + w <= *ox || *ox + ow <= x || y + h <= *oy || *oy + oh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        placed.push((x, y, w, h, title.clone()));
        if is_row(panel) {
            continue;
        }
        assert!(panel["type"].is_string(), "{title}: no type");
        assert!(panel["fieldConfig"].is_object(), "{title}: no fieldConfig");
        let targets = panel["targets"]
            .as_array()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| panic!("{title}: no targets"));
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: a target without expr");
            assert!(
                target["refId"].is_string(),
                "{title}: a target without refId"
            );
        }
    }

    // Every datasource anywhere (panels, targets, annotations, variables)
    // is the variable: a uid or name fixed here exists in no other Grafana.
    let mut datasources = Vec::new();
    collect_datasources(&dashboard, &mut datasources);
    assert!(!datasources.is_empty());
    for datasource in datasources {
        assert_eq!(datasource["type"], "prometheus", "{datasource}");
        assert_eq!(datasource["uid"], DATASOURCE_UID, "{datasource}");
    }
    for panel in &shown {
        assert!(
            panel["datasource"].is_object(),
            "{}: no datasource",
            text(panel, "title")
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert!(
                target["datasource"].is_object(),
                "{}: a target without datasource",
                text(panel, "title")
            );
        }
    }
    let annotations = dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations");
    assert!(
        annotations
            .iter()
            .any(|a| a["enable"] == true
                && a["expr"].as_str().is_some_and(|e| e.contains("raftkv_"))),
        "no annotation query on raftkv's metrics"
    );
}

/// Every value of a `datasource` key, anywhere in `value`.
fn collect_datasources<'a>(value: &'a Value, found: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "datasource" {
                    found.push(inner);
                }
                collect_datasources(inner, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_datasources(v, found)),
        _ => {}
    }
}

#[test]
fn promql_metric_names_are_told_from_functions_labels_and_literals() {
    let names = |expr: &str| {
        metric_names(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le, instance) (rate(raftkv_fsync_seconds_bucket{job=~"$job",instance=~"$instance"}[$__rate_interval])))"#
        ),
        ["raftkv_fsync_seconds_bucket"]
    );
    assert_eq!(
        names(
            r#"max by (job) (a_total{job=~"$job"}) - on (job) group_right b{code!="OK", x="sum(c)"}"#
        ),
        ["a_total", "b"]
    );
    assert_eq!(
        names("(x == 1) unless (x offset 1m == 1) and bool 1e-3 > y [5m:1m]"),
        ["x", "y"]
    );
    assert_eq!(
        names("sum(rate(z[${__range}])) without (peer) / ignoring(instance) group_left(peer) w"),
        ["w", "z"]
    );
    assert_eq!(names("vector(0) + .5 * scalar(v)"), ["v"]);
    assert!(metric_names("rat(x[1m])").is_err(), "an unknown function");
    assert!(metric_names(r#"{__name__="x"}"#).is_err(), "a hidden name");
    assert!(metric_names(r#"x{a="b}"#).is_err(), "an open string");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exported_by_a_live_cluster() {
    let dashboard = load();
    let mut wanted: Vec<(String, String)> = Vec::new();
    for (place, expr) in queries(&dashboard) {
        let names = metric_names(&expr).unwrap_or_else(|e| panic!("{place}: {e} in {expr}"));
        assert!(!names.is_empty(), "{place}: no metric in {expr}");
        wanted.extend(names.into_iter().map(|name| (name, place.clone())));
    }

    // Replication lag is exported by a leader with followers, and the gRPC
    // families once calls were served: three nodes, some writes, and a
    // snapshot for the snapshot panels to show.
    let cluster = TestCluster::builder()
        .flags(&["--metrics-listen", "127.0.0.1:0"])
        .start(3)
        .await;
    let leader = cluster.get(cluster.wait_for_leader().await);
    for i in 0..10 {
        put(&leader.client(), &format!("k{i}"), "v").await;
    }
    leader.client().snapshot().await.expect("snapshot");
    let followers: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| *id != leader.id)
        .collect();
    wait_for(
        "the leader's metrics show its followers, its snapshot and the writes' calls",
        || {
            let text = leader.http_get("/metrics").map(|r| r.1).unwrap_or_default();
            let followers = &followers;
            async move {
                let value = |series: &str| {
                    text.lines()
                        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
                        .and_then(|v| v.parse::<f64>().ok())
                };
                let lags = followers.iter().all(|peer| {
                    value(&format!(
                        "raftkv_replication_lag_entries{{peer=\"{peer}\"}}"
                    ))
                    .is_some()
                });
                let puts = value(
                    r#"raftkv_grpc_requests_total{service="raftkv.KV",method="Put",code="OK"}"#,
                );
                let snapshots = value("raftkv_snapshot_build_seconds_count");
                (lags && puts >= Some(1.0) && snapshots >= Some(1.0)).then_some(())
            }
        },
    )
    .await;

    // What a Prometheus scraping every node would store.
    let mut stored = BTreeSet::new();
    for node in &cluster.nodes {
        stored.extend(exported(node));
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(name, _)| !stored.contains(name))
        .map(|(name, place)| format!("{name} ({place})"))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no node exports: {missing:#?}\nexported: {stored:#?}"
    );
}
