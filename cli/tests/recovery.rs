//! `warren consume` when the connection is lost: by default it reconnects, consumes on and says
//! so on stderr; with `--no-recover` the loss is a one-line error. The loss is a relay in front
//! of the broker dropping the link (the broker itself is not touched).

mod common;
#[path = "../../tests/faults/relay.rs"]
#[allow(dead_code)]
mod relay;

use std::io::Read;
use std::net::ToSocketAddrs;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cleanup, broker_url, warren};
use relay::Relay;

/// A `warren` run in the background whose output is collected as it comes.
struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting warren");
        let collect = |mut pipe: Box<dyn Read + Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let sink = text.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            });
            text
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits until `pipe` holds `text`.
    async fn wait_for(&self, what: &str, pipe: &Arc<Mutex<String>>, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pipe.lock().unwrap().contains(text) {
            assert!(
                Instant::now() < deadline,
                "{what}: {text:?} did not show; stdout {:?}, stderr {:?}",
                self.stdout.lock().unwrap(),
                self.stderr.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the run to end; returns its exit code.
    async fn finish(mut self) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "warren did not finish; stdout {:?}, stderr {:?}",
                    self.stdout.lock().unwrap(),
                    self.stderr.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The reader threads end with the pipes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stdout = self.stdout.lock().unwrap().clone();
        let stderr = self.stderr.lock().unwrap().clone();
        (status.code(), stdout, stderr)
    }
}

/// A relay in front of the test broker, and the URL that goes through it.
async fn relay() -> (Relay, String) {
    let options: warren::ConnectionOptions = broker_url().parse().unwrap();
    let address = (options.get_host(), options.get_port())
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let relay = Relay::start(address).await;
    let url = relay.uri();
    (relay, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn consume_reconnects_after_a_dropped_link_and_says_so() {
    let mut cleanup = Cleanup::new();
    let queue = cleanup.queue("recovering");
    warren(&["declare", "queue", &queue]).ok();
    let (relay, url) = relay().await;
    let consuming = Running::start(&["consume", &queue, "--count", "2", "--url", &url]);
    warren(&["publish", "-k", &queue, "before the loss"]).ok();
    consuming
        .wait_for("the first message", &consuming.stdout, "before the loss")
        .await;

    relay.cut();
    consuming
        .wait_for("the loss", &consuming.stderr, "connection lost")
        .await;
    consuming
        .wait_for("the recovery", &consuming.stderr, "connection back")
        .await;
    warren(&["publish", "-k", &queue, "after the loss"]).ok();

    let (code, stdout, stderr) = consuming.finish().await;
    assert_eq!(code, Some(0), "stdout {stdout:?}, stderr {stderr:?}");
    assert!(stdout.contains("before the loss") && stdout.contains("after the loss"));
    assert!(
        stderr.starts_with("warren: connection lost (connection lost: "),
        "{stderr:?}"
    );
    assert!(!stderr.contains("guest:guest"));
}

#[tokio::test(flavor = "multi_thread")]
async fn consume_with_no_recover_ends_with_the_loss() {
    let mut cleanup = Cleanup::new();
    let queue = cleanup.queue("not-recovering");
    warren(&["declare", "queue", &queue]).ok();
    let (relay, url) = relay().await;
    let consuming = Running::start(&["consume", &queue, "--no-recover", "--url", &url]);
    warren(&["publish", "-k", &queue, "the only one"]).ok();
    consuming
        .wait_for("the message", &consuming.stdout, "the only one")
        .await;
    relay.cut();
    let (code, _, stderr) = consuming.finish().await;
    assert_eq!(code, Some(1), "{stderr:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr:?}");
    assert!(
        lines[0].starts_with("warren: connection lost"),
        "{stderr:?}"
    );
}

/// `warren perf` through a link that drops mid-run: its connections come back, and the loss
/// check finds every confirmed message received (what was in flight is counted as unknown or
/// duplicated, never as lost).
#[tokio::test(flavor = "multi_thread")]
async fn perf_counts_no_loss_across_a_dropped_link() {
    let (relay, url) = relay().await;
    let running = Running::start(&[
        "perf",
        "--url",
        &url,
        "--duration",
        "3",
        "--confirm",
        "50",
        "--rate",
        "500",
        "--persistent",
        "--json",
    ]);
    running
        .wait_for("a second of traffic", &running.stderr, "warren perf:   1 s")
        .await;
    relay.cut();
    running
        .wait_for("the loss", &running.stderr, "connection lost")
        .await;
    running
        .wait_for("the recovery", &running.stderr, "connection back")
        .await;

    let (code, stdout, stderr) = running.finish().await;
    assert_eq!(code, Some(0), "stdout {stdout:?}, stderr {stderr:?}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["lost"], 0, "{report}");
    let count = |field: &str| {
        report[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}: {report}"))
    };
    assert!(count("confirmed") > 0, "{report}");
    assert!(count("received") >= count("confirmed"), "{report}");
    assert_eq!(
        count("sent"),
        count("confirmed") + count("nacked") + count("unconfirmed") + count("unknown"),
        "{report}"
    );
    // Traffic went on after the loss: more than the one second before it.
    assert!(count("sent") > 600, "{report}");
}
