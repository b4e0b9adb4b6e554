//! `warren perf` against the broker: the summary and its fields, counts that add up, and the
//! queue it creates is gone afterwards.

mod common;

use common::{Cleanup, warren};

/// The number after `label` on the line that starts with it, e.g. `sent:` in
/// `sent:       1000 msgs, 5000 msgs/s`.
fn count(summary: &str, label: &str) -> u64 {
    let line = summary
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label} line in:\n{summary}"));
    line[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count on {line:?}"))
}

#[test]
fn a_short_run_prints_a_summary_with_rates_and_percentiles() {
    let output = warren(&[
        "perf",
        "--producers",
        "1",
        "--consumers",
        "1",
        "--size",
        "16",
        "--duration",
        "1500ms",
        "--confirm",
        "100",
    ])
    .ok();
    let summary = &output.stdout;
    assert!(
        summary.starts_with("warren perf on queue warren-perf-"),
        "{summary}"
    );
    assert!(
        summary
            .contains("1 producer, 1 consumer, 16-byte bodies, confirms (window 100), manual ack"),
        "{summary}"
    );
    for label in [
        "time:",
        "sent:",
        "confirmed:",
        "received:",
        "publish-to-confirm latency:",
        "end-to-end latency:",
    ] {
        assert!(
            summary.lines().any(|l| l.starts_with(label)),
            "no {label} in:\n{summary}"
        );
    }
    let sent = count(summary, "sent:");
    assert!(sent > 0, "{summary}");
    assert_eq!(count(summary, "confirmed:"), sent, "{summary}");
    assert_eq!(count(summary, "received:"), sent, "{summary}");
    for line in summary.lines().filter(|l| l.contains("latency:")) {
        for field in ["p50 ", "p95 ", "p99 ", "max ", " ms", "samples"] {
            assert!(line.contains(field), "{field} missing from {line:?}");
        }
    }
    for line in summary
        .lines()
        .filter(|l| l.starts_with("sent:") || l.starts_with("received:"))
    {
        assert!(
            line.ends_with(" msgs/s") || line.contains(" msgs/s"),
            "{line:?}"
        );
    }
    // A progress line per second on stderr (one line each, as stderr is not a terminal).
    assert!(
        output.stderr.contains("warren perf:   1 s | sent "),
        "{output:#?}"
    );
    assert!(output.stderr.contains("| confirmed "), "{output:#?}");
    assert!(output.stderr.contains("| received "), "{output:#?}");

    // The queue it made is deleted.
    let queue = summary["warren perf on queue ".len()..]
        .split(':')
        .next()
        .unwrap();
    let gone = warren(&["declare", "queue", queue, "--passive"]);
    assert_eq!(gone.code(), Some(1), "{gone:#?}");
}

#[test]
fn counts_add_up_with_several_producers_and_consumers() {
    let mut cleanup = Cleanup::new();
    let queue = cleanup.queue("perf");
    let output = warren(&[
        "perf",
        "-x",
        "2",
        "-y",
        "2",
        "-s",
        "100",
        "-C",
        "500",
        "-c",
        "50",
        "-u",
        &queue,
        "--prefetch",
        "50",
        "--multiple-ack",
        "10",
        "--persistent",
    ])
    .ok();
    let summary = &output.stdout;
    assert!(summary.contains(&format!("on queue {queue}:")), "{summary}");
    assert!(
        summary.contains("manual ack every 10, prefetch 50, persistent"),
        "{summary}"
    );
    assert_eq!(count(summary, "sent:"), 1000, "{summary}");
    assert_eq!(count(summary, "confirmed:"), 1000, "{summary}");
    assert_eq!(count(summary, "received:"), 1000, "{summary}");
    // Everything was acknowledged: the queue, kept because it was named, is empty.
    let counts = warren(&["declare", "queue", &queue, "--passive"]).ok();
    assert!(
        counts.stdout.contains(": 0 messages, 0 consumers"),
        "{counts:#?}"
    );
}

/// Waits too long for the clock to add are as good as forever, not a panic.
#[test]
fn a_drain_timeout_beyond_the_clock_is_taken() {
    let output = warren(&[
        "perf",
        "--count",
        "50",
        "--drain-timeout",
        "10000000000000000000s",
    ])
    .ok();
    assert_eq!(count(&output.stdout, "received:"), 50, "{output:#?}");
}

#[test]
fn rate_limits_autoack_and_no_confirms() {
    let output = warren(&["perf", "--rate", "200", "--count", "100", "--autoack"]).ok();
    let summary = &output.stdout;
    assert!(
        summary.contains("200 msg/s per producer, no confirms, autoack"),
        "{summary}"
    );
    assert!(!summary.contains("confirmed:"), "{summary}");
    assert!(!summary.contains("publish-to-confirm"), "{summary}");
    assert_eq!(count(summary, "sent:"), 100, "{summary}");
    assert_eq!(count(summary, "received:"), 100, "{summary}");
    // 100 messages at 200/s take about half a second.
    let time: f64 = summary
        .lines()
        .find_map(|l| l.strip_prefix("time:"))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap();
    assert!((0.4..3.0).contains(&time), "{summary}");
}

#[test]
fn producers_only_and_consumers_only() {
    let mut cleanup = Cleanup::new();
    let queue = cleanup.queue("backlog");
    let produced = warren(&[
        "perf",
        "--consumers",
        "0",
        "-u",
        &queue,
        "-C",
        "300",
        "-c",
        "100",
    ])
    .ok();
    assert_eq!(count(&produced.stdout, "sent:"), 300, "{produced:#?}");
    assert!(!produced.stdout.contains("received:"), "{produced:#?}");
    let consumed = warren(&[
        "perf",
        "--producers",
        "0",
        "-u",
        &queue,
        "-C",
        "300",
        "-q",
        "100",
        "-A",
        "50",
    ])
    .ok();
    assert_eq!(count(&consumed.stdout, "received:"), 300, "{consumed:#?}");
    assert!(
        consumed.stdout.contains("end-to-end latency:         p50"),
        "{consumed:#?}"
    );
}

/// `--json`: the final report as one JSON object on one line of stdout, with the counts the
/// text shows and the longest pauses.
#[test]
fn json_prints_the_report_as_one_object() {
    let output = warren(&[
        "perf",
        "--producers",
        "1",
        "--consumers",
        "1",
        "--count",
        "500",
        "--confirm",
        "50",
        "--json",
    ])
    .ok();
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{output:#?}");
    let report: serde_json::Value = serde_json::from_str(lines[0]).expect("valid JSON");
    assert_eq!(report["sent"], 500, "{report}");
    assert_eq!(report["confirmed"], 500, "{report}");
    assert_eq!(report["nacked"], 0, "{report}");
    assert_eq!(report["unconfirmed"], 0, "{report}");
    assert_eq!(report["received"], 500, "{report}");
    for check in ["lost", "duplicated", "reordered", "unknown"] {
        assert_eq!(report[check], 0, "{check}: {report}");
    }
    assert!(
        report["queue"]
            .as_str()
            .unwrap()
            .starts_with("warren-perf-"),
        "{report}"
    );
    assert!(report["elapsed_s"].as_f64().unwrap() > 0.0, "{report}");
    for rate in ["sent_per_s", "confirmed_per_s", "received_per_s"] {
        assert!(report[rate].as_f64().unwrap() > 0.0, "{rate}: {report}");
    }
    for latency in ["confirm_latency_ms", "end_to_end_latency_ms"] {
        let latency = &report[latency];
        assert_eq!(latency["samples"], 500, "{report}");
        let p50 = latency["p50"].as_f64().unwrap();
        assert!(p50 <= latency["p99"].as_f64().unwrap(), "{report}");
        assert!(latency["p99"].as_f64().unwrap() <= latency["max"].as_f64().unwrap());
    }
    for pause in ["max_publish_pause_ms", "max_consume_pause_ms"] {
        assert!(report[pause].as_f64().unwrap() >= 0.0, "{pause}: {report}");
    }

    // Without consumers or confirms, what was not measured is null.
    let mut cleanup = Cleanup::new();
    let queue = cleanup.queue("perf-json");
    let output = warren(&[
        "perf",
        "--producers",
        "1",
        "--consumers",
        "0",
        "--count",
        "10",
        "--queue",
        &queue,
        "--json",
    ])
    .ok();
    let report: serde_json::Value = serde_json::from_str(output.stdout.trim()).unwrap();
    assert_eq!(report["sent"], 10, "{report}");
    for absent in [
        "confirmed",
        "received",
        "confirm_latency_ms",
        "max_consume_pause_ms",
        "lost",
    ] {
        assert!(report[absent].is_null(), "{absent}: {report}");
    }
}
