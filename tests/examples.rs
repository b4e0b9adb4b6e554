//! Runs every program in `examples/` against the broker at AMQP_URL and checks what it prints.
//!
//! The programs are the example binaries Cargo builds beside this test
//! (`target/<profile>/examples/`): `cargo test` builds every example before it runs the tests.
//! Each test gives the examples it runs a WARREN_EXAMPLE_PREFIX of its own, so that the
//! tutorials' fixed queue and exchange names (`hello`, `logs`, …) do not collide between tests
//! running in parallel, and deletes what they declared when it ends, passed or failed. Every
//! wait is bounded: an example that hangs is killed and the test fails with its output.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use warren::{Connection, ExchangeDeleteOptions, QueueDeleteOptions};

/// The longest an example may run.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// The longest a long-running example may take to say it is ready.
const READY_LIMIT: Duration = Duration::from_secs(30);

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Every example, and the test that runs it. `every_example_is_tested` fails when a file in
/// `examples/` is missing here.
const TESTED: &[(&str, &str)] = &[
    ("quickstart", "quickstart"),
    ("tutorial_1_send", "tutorial_1_hello_world"),
    ("tutorial_1_receive", "tutorial_1_hello_world"),
    (
        "tutorial_2_new_task",
        "tutorial_2_work_queues_dispatch_fairly",
    ),
    (
        "tutorial_2_worker",
        "tutorial_2_work_queues_dispatch_fairly",
    ),
    ("tutorial_3_emit_log", "tutorial_3_publish_subscribe"),
    ("tutorial_3_receive_logs", "tutorial_3_publish_subscribe"),
    ("tutorial_4_emit_log_direct", "tutorial_4_routing"),
    ("tutorial_4_receive_logs_direct", "tutorial_4_routing"),
    ("tutorial_5_emit_log_topic", "tutorial_5_topics"),
    ("tutorial_5_receive_logs_topic", "tutorial_5_topics"),
    ("tutorial_6_rpc_server", "tutorial_6_rpc"),
    ("tutorial_6_rpc_client", "tutorial_6_rpc"),
    (
        "tutorial_7_publisher_confirms",
        "tutorial_7_publisher_confirms",
    ),
    ("rpc_server", "rpc_client_and_server"),
    ("rpc_client", "rpc_client_and_server"),
    ("stream_consume", "stream_consume"),
    ("aioamqp_connect", "aioamqp_connect"),
    ("aioamqp_publish", "aioamqp_publish_and_consume"),
    ("aioamqp_consume", "aioamqp_publish_and_consume"),
    ("aioamqp_exchange", "aioamqp_exchange"),
    ("publisher", "publisher"),
    // Built and run only with the feature (the CI runs this binary with it).
    ("opentelemetry", "opentelemetry"),
];

// ===== the harness =====

/// `target/<profile>`: the directory of the `deps/` directory this test runs from.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps")
        .to_owned()
}

/// Makes sure the examples are up to date, once per test run.
///
/// `cargo test` builds them before running any test, but `cargo test --test examples` does
/// not, so this asks Cargo (the one running the tests) to build them into the same target
/// directory and profile: a no-op after `cargo test`.
fn build_examples() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let Some(cargo) = std::env::var_os("CARGO") else {
            return; // not run by Cargo: use what is there
        };
        let profile_dir = profile_dir();
        let (Some(target_dir), Some(profile)) = (
            profile_dir.parent(),
            profile_dir.file_name().and_then(|p| p.to_str()),
        ) else {
            return;
        };
        let profile = match profile {
            "debug" => "dev",
            other => other,
        };
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--examples", "--profile", profile])
            .args(FEATURES)
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build --examples");
        assert!(status.success(), "cargo build --examples failed");
    });
}

/// The features this test binary was built with that examples need.
const FEATURES: &[&str] = if cfg!(feature = "opentelemetry") {
    &["--features", "opentelemetry"]
} else {
    &[]
};

/// Where Cargo put the example `name`: `target/<profile>/examples/`.
fn example_path(name: &str) -> PathBuf {
    build_examples();
    let path = profile_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "example {name} is not built at {}: run the tests with `cargo test` (which builds the \
         examples first), or `cargo build --examples` before `cargo test --test examples`",
        path.display()
    );
    path
}

/// What a running example printed so far, line by line.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

fn collect(stream: impl Read + Send + 'static, into: Arc<Lines>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            into.lines.lock().unwrap().push(line);
            into.changed.notify_all();
        }
    })
}

/// The queues and exchanges a test's examples declare, under the test's prefix; deleted when
/// the test ends.
struct Scope {
    prefix: String,
    queues: &'static [&'static str],
    exchanges: &'static [&'static str],
}

impl Scope {
    fn new(
        test: &str,
        queues: &'static [&'static str],
        exchanges: &'static [&'static str],
    ) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self {
            prefix: format!("warren-example-{test}-{}-{nanos}-", std::process::id()),
            queues,
            exchanges,
        }
    }

    /// Starts example `name` with `args` under this scope's prefix.
    fn spawn(&self, name: &str, args: &[&str]) -> Running {
        self.spawn_with(name, args, &[])
    }

    fn spawn_with(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut command = Command::new(example_path(name));
        command
            .args(args)
            .env("WARREN_EXAMPLE_PREFIX", &self.prefix)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting example {name}: {e}"));
        let stdout = Arc::new(Lines::default());
        let stderr = Arc::new(Lines::default());
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Running {
            name: format!("{name} {}", args.join(" ")),
            child,
            stdout,
            stderr,
            readers,
        }
    }

    /// Runs example `name` to the end and checks that it succeeded.
    fn run(&self, name: &str, args: &[&str]) -> Output {
        self.spawn(name, args).success()
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the cleanup");
        runtime.block_on(async {
            let Ok(connection) = Connection::connect(&broker_url()).await else {
                return;
            };
            let Ok(channel) = connection.open_channel().await else {
                return;
            };
            for queue in self.queues {
                let name = format!("{}{queue}", self.prefix);
                let _ = channel
                    .queue_delete(&name, QueueDeleteOptions::default())
                    .await;
            }
            for exchange in self.exchanges {
                let name = format!("{}{exchange}", self.prefix);
                let _ = channel
                    .exchange_delete(&name, ExchangeDeleteOptions::default())
                    .await;
            }
            let _ = connection.close().await;
        });
    }
}

fn broker_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// An example that runs.
struct Running {
    name: String,
    child: Child,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    readers: Vec<JoinHandle<()>>,
}

/// What an example printed, and how it ended.
#[derive(Debug)]
struct Output {
    status: ExitStatus,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Output {
    /// The stdout lines that start with `prefix`, without it.
    fn after(&self, prefix: &str) -> Vec<&str> {
        self.stdout
            .iter()
            .filter_map(|line| line.strip_prefix(prefix))
            .collect()
    }

    fn has(&self, line: &str) -> bool {
        self.stdout.iter().any(|l| l == line)
    }
}

impl Running {
    fn printed(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.lines.lock().unwrap().join("\n"),
            self.stderr.lines.lock().unwrap().join("\n")
        )
    }

    /// Waits until the example prints `line` on stdout; fails if it exits or takes too long.
    fn wait_for(&mut self, line: &str) {
        let deadline = Instant::now() + READY_LIMIT;
        let mut lines = self.stdout.lines.lock().unwrap();
        loop {
            if lines.iter().any(|l| l == line) {
                return;
            }
            let now = Instant::now();
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || now >= deadline {
                drop(lines);
                let _ = self.child.kill();
                panic!(
                    "{} {} before printing {line:?}\n{}",
                    self.name,
                    if exited { "exited" } else { "timed out" },
                    self.printed()
                );
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            lines = self.stdout.changed.wait_timeout(lines, wait).unwrap().0;
        }
    }

    /// Waits for the example to exit, killing it after [`RUN_LIMIT`].
    fn finish(mut self) -> Output {
        let deadline = Instant::now() + RUN_LIMIT;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "{} did not finish within {RUN_LIMIT:?}\n{}",
                        self.name,
                        self.printed()
                    );
                }
                Err(e) => panic!("waiting for {}: {e}", self.name),
            }
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Output {
            status,
            stdout: std::mem::take(&mut *self.stdout.lines.lock().unwrap()),
            stderr: std::mem::take(&mut *self.stderr.lines.lock().unwrap()),
        }
    }

    /// Waits for the example to exit and checks that it succeeded.
    fn success(self) -> Output {
        let name = self.name.clone();
        let output = self.finish();
        assert!(
            output.status.success(),
            "{name} failed with {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            output.stdout.join("\n"),
            output.stderr.join("\n")
        );
        output
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A test that failed half-way must not leave examples running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A URL where nothing listens: a port the system gave out and that is closed again.
fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("amqp://guest:secret-password@127.0.0.1:{port}/%2f")
}

// ===== the tests =====

#[test]
fn every_example_is_tested() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut untested = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("reading examples/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if !TESTED.iter().any(|(example, _)| *example == name) {
                untested.push(name);
            }
        }
    }
    assert!(
        untested.is_empty(),
        "examples without a test in tests/examples.rs: {untested:?}"
    );
}

#[test]
fn quickstart() {
    let scope = Scope::new("quickstart", &[], &[]);
    let output = scope.run("quickstart", &[]);
    assert!(output.has("published and confirmed"), "{output:#?}");
    assert!(
        output
            .stdout
            .iter()
            .any(|l| l.starts_with("received \"Hello from warren!\"")),
        "{output:#?}"
    );
    assert!(output.has("done"), "{output:#?}");
}

#[cfg(feature = "opentelemetry")]
#[test]
fn opentelemetry() {
    let scope = Scope::new("otel", &[], &[]);
    let output = scope.run("opentelemetry", &[]);
    let published = output
        .stdout
        .iter()
        .find_map(|line| line.strip_prefix("published in trace "))
        .unwrap_or_else(|| panic!("no trace id printed: {output:#?}"))
        .to_owned();
    let span = |name: &str| {
        output
            .stdout
            .iter()
            .any(|line| line.starts_with("span ") && line.contains(name))
    };
    for name in [
        "place-order",
        "amq.default publish",
        " process ",
        "ship-order",
        "ack ",
    ] {
        assert!(span(name), "no span {name:?}: {output:#?}");
    }
    assert_eq!(
        output.stdout.last().map(String::as_str),
        Some(format!("trace continued: {published}").as_str()),
        "{output:#?}"
    );
}

#[test]
fn an_example_without_a_broker_says_so() {
    let scope = Scope::new("nobroker", &[], &[]);
    let url = refused_url();
    let output = scope
        .spawn_with("tutorial_1_send", &[], &[("AMQP_URL", &url)])
        .finish();
    assert_eq!(output.status.code(), Some(1), "{output:#?}");
    let stderr = output.stderr.join("\n");
    assert!(
        stderr.starts_with("cannot connect to the broker: cannot connect to 127.0.0.1:"),
        "{output:#?}"
    );
    assert!(stderr.contains("scripts/start-rabbitmq.sh"), "{output:#?}");
    assert!(!stderr.contains("secret-password"), "{output:#?}");
}

#[test]
fn tutorial_1_hello_world() {
    let scope = Scope::new("t1", &["hello"], &[]);
    let mut receiver = scope.spawn("tutorial_1_receive", &["--count", "1"]);
    receiver.wait_for(" [*] Waiting for messages. To exit press CTRL+C");
    let sent = scope.run("tutorial_1_send", &[]);
    assert!(sent.has(" [x] Sent 'Hello World!'"), "{sent:#?}");
    let received = receiver.success();
    assert_eq!(received.after(" [x] Received "), ["Hello World!"]);
}

/// Fair dispatch, observed: worker A is busy with a three-second task when three one-second
/// tasks arrive. With a prefetch of 1, A gets none of them and worker B does all three in
/// order. Without it, the broker would deal A one of them round-robin; A stops after its first
/// task, so that one would reach B last, requeued.
#[test]
fn tutorial_2_work_queues_dispatch_fairly() {
    let scope = Scope::new("t2", &["task_queue"], &[]);
    let mut a = scope.spawn("tutorial_2_worker", &["--count", "1"]);
    a.wait_for(" [*] Waiting for messages. To exit press CTRL+C");
    let sent = scope.run("tutorial_2_new_task", &["long", "task..."]);
    assert!(sent.has(" [x] Sent \"long task...\""), "{sent:#?}");
    a.wait_for(" [x] Received long task...");

    let mut b = scope.spawn("tutorial_2_worker", &["--count", "3"]);
    b.wait_for(" [*] Waiting for messages. To exit press CTRL+C");
    for task in ["short.", "shorter.", "shortest."] {
        scope.run("tutorial_2_new_task", &[task]);
    }
    let b = b.success();
    assert_eq!(
        b.after(" [x] Received "),
        ["short.", "shorter.", "shortest."],
        "{b:#?}"
    );
    assert_eq!(b.after(" [x] Done").len(), 3, "{b:#?}");
    let a = a.success();
    assert_eq!(a.after(" [x] Received "), ["long task..."], "{a:#?}");
    assert!(a.has(" [x] Done"), "{a:#?}");
}

#[test]
fn tutorial_3_publish_subscribe() {
    let scope = Scope::new("t3", &[], &["logs"]);
    let mut receivers: Vec<Running> = (0..2)
        .map(|_| scope.spawn("tutorial_3_receive_logs", &["--count", "1"]))
        .collect();
    for receiver in &mut receivers {
        receiver.wait_for(" [*] Waiting for logs. To exit press CTRL+C");
    }
    let sent = scope.run("tutorial_3_emit_log", &["info:", "from", "the", "test"]);
    assert!(sent.has(" [x] Sent info: from the test"), "{sent:#?}");
    // Each subscriber has its own queue, so each gets a copy.
    for receiver in receivers {
        let output = receiver.success();
        assert_eq!(
            output.after(" [x] "),
            ["info: from the test"],
            "{output:#?}"
        );
    }
}

#[test]
fn tutorial_4_routing() {
    let scope = Scope::new("t4", &[], &["direct_logs"]);
    let mut errors = scope.spawn("tutorial_4_receive_logs_direct", &["--count", "1", "error"]);
    let mut all = scope.spawn(
        "tutorial_4_receive_logs_direct",
        &["--count", "2", "info", "warning", "error"],
    );
    errors.wait_for(" [*] Waiting for logs. To exit press CTRL+C");
    all.wait_for(" [*] Waiting for logs. To exit press CTRL+C");

    let sent = scope.run(
        "tutorial_4_emit_log_direct",
        &["info", "an", "info", "line"],
    );
    assert!(sent.has(" [x] Sent info:an info line"), "{sent:#?}");
    scope.run("tutorial_4_emit_log_direct", &["error", "Run. Run."]);

    // The info line went only to the subscriber bound to `info`.
    let errors = errors.success();
    assert_eq!(errors.after(" [x] "), ["error:Run. Run."], "{errors:#?}");
    let all = all.success();
    assert_eq!(
        all.after(" [x] "),
        ["info:an info line", "error:Run. Run."],
        "{all:#?}"
    );

    let usage = scope.spawn("tutorial_4_receive_logs_direct", &[]).finish();
    assert_eq!(usage.status.code(), Some(2), "{usage:#?}");
    assert!(usage.stderr[0].starts_with("usage: "), "{usage:#?}");
}

#[test]
fn tutorial_5_topics() {
    let scope = Scope::new("t5", &[], &["topic_logs"]);
    let mut kern = scope.spawn("tutorial_5_receive_logs_topic", &["--count", "2", "kern.*"]);
    let mut critical = scope.spawn(
        "tutorial_5_receive_logs_topic",
        &["--count", "1", "*.critical"],
    );
    let mut everything = scope.spawn("tutorial_5_receive_logs_topic", &["--count", "3", "#"]);
    for receiver in [&mut kern, &mut critical, &mut everything] {
        receiver.wait_for(" [*] Waiting for logs. To exit press CTRL+C");
    }
    let sent = scope.run("tutorial_5_emit_log_topic", &[]);
    assert!(
        sent.has(" [x] Sent anonymous.info:Hello World!"),
        "{sent:#?}"
    );
    scope.run("tutorial_5_emit_log_topic", &["kern.info", "booted"]);
    scope.run(
        "tutorial_5_emit_log_topic",
        &["kern.critical", "A critical kernel error"],
    );

    let kern = kern.success();
    assert_eq!(
        kern.after(" [x] "),
        ["kern.info:booted", "kern.critical:A critical kernel error"],
        "{kern:#?}"
    );
    let critical = critical.success();
    assert_eq!(
        critical.after(" [x] "),
        ["kern.critical:A critical kernel error"],
        "{critical:#?}"
    );
    let everything = everything.success();
    assert_eq!(everything.after(" [x] ").len(), 3, "{everything:#?}");
}

#[test]
fn tutorial_6_rpc() {
    let scope = Scope::new("t6", &["rpc_queue"], &[]);
    let mut server = scope.spawn("tutorial_6_rpc_server", &["--count", "3"]);
    server.wait_for(" [x] Awaiting RPC requests");

    let client = scope.run("tutorial_6_rpc_client", &[]);
    assert!(client.has(" [x] Requesting fib(30)"), "{client:#?}");
    assert!(client.has(" [.] Got fib(30) = 832040"), "{client:#?}");

    // Direct reply-to: no reply queue, the broker routes replies straight to the consumer.
    let direct = scope.run("tutorial_6_rpc_client", &["--direct-reply-to", "10", "20"]);
    assert!(direct.has(" [.] Got fib(10) = 55"), "{direct:#?}");
    assert!(direct.has(" [.] Got fib(20) = 6765"), "{direct:#?}");

    let server = server.success();
    assert_eq!(
        server.after(" [.] "),
        ["fib(30)", "fib(10)", "fib(20)"],
        "{server:#?}"
    );
}

#[test]
fn rpc_client_and_server() {
    let scope = Scope::new(
        "rpc",
        &["rpc_requests", "rpc_requests.failed"],
        &["rpc_requests.dlx"],
    );
    // No server yet, so no queue: the request comes back at once, and the client says so.
    let unroutable = scope.spawn("rpc_client", &["5"]).finish();
    assert!(!unroutable.status.success(), "{unroutable:#?}");
    let failure = unroutable.after(" [!] fib(5) failed: ");
    assert!(
        failure.len() == 1 && failure[0].starts_with("the broker returned the request"),
        "{unroutable:#?}"
    );

    let mut server = scope.spawn("rpc_server", &["--count", "3"]);
    server.wait_for(&format!(
        " [x] Awaiting RPC requests on {}rpc_requests",
        scope.prefix
    ));

    // A request the handler refuses is dead-lettered, and its call runs into its deadline.
    let refused = scope
        .spawn("rpc_client", &["--timeout-ms", "1000", "41"])
        .finish();
    assert!(!refused.status.success(), "{refused:#?}");
    let failure = refused.after(" [!] fib(41) failed: ");
    assert!(
        failure.len() == 1 && failure[0].starts_with("no reply within 1s"),
        "{refused:#?}"
    );

    // Three calls in flight at once, each answered.
    let client = scope.run("rpc_client", &["10", "20", "30"]);
    for line in [
        " [.] Got fib(10) = 55",
        " [.] Got fib(20) = 6765",
        " [.] Got fib(30) = 832040",
    ] {
        assert!(client.has(line), "{client:#?}");
    }
    let server = server.success();
    let mut handled = server.after(" [.] ");
    handled.sort_unstable();
    assert_eq!(handled, ["fib(10)", "fib(20)", "fib(30)"], "{server:#?}");
    assert!(
        server.has(" [!] not a number from 0 to 40: \"41\""),
        "{server:#?}"
    );
}

#[test]
fn stream_consume() {
    let scope = Scope::new("stream", &["events"], &[]);
    let first = scope.run("stream_consume", &["--publish", "10", "--count", "10"]);
    let read = first.after(" [x] offset ");
    let expected: Vec<String> = (0..10).map(|i| format!("{i}: event {i}")).collect();
    assert_eq!(read, expected, "{first:#?}");

    // From an offset: the stream still holds everything (it is read, not drained).
    let from_5 = scope.run("stream_consume", &["--offset", "5", "--count", "5"]);
    assert_eq!(from_5.after(" [x] offset "), expected[5..], "{from_5:#?}");
}

#[test]
fn tutorial_7_publisher_confirms() {
    let scope = Scope::new("t7", &[], &[]);
    let output = scope.run("tutorial_7_publisher_confirms", &["--messages", "1000"]);
    let strategies = [
        "Published 1,000 messages individually in ",
        "Published 1,000 messages in batch in ",
        "Published 1,000 messages and handled confirms asynchronously in ",
    ];
    assert_eq!(output.stdout.len(), 3, "{output:#?}");
    for (line, strategy) in output.stdout.iter().zip(strategies) {
        let millis = line
            .strip_prefix(strategy)
            .and_then(|rest| rest.strip_suffix(" ms"))
            .unwrap_or_else(|| panic!("{line:?} is not {strategy:?}<n> ms"));
        assert!(
            millis.replace(',', "").parse::<u64>().is_ok(),
            "{line:?} has no time in ms"
        );
    }
}

#[test]
fn publisher() {
    let scope = Scope::new("publisher", &["publisher_demo"], &[]);
    let output = scope.run("publisher", &["--messages", "2000"]);
    assert_eq!(output.stdout.len(), 3, "{output:#?}");
    assert!(
        output.stdout[0]
            .starts_with("2000 messages published from 10 tasks, every one confirmed, in "),
        "{output:#?}"
    );
    assert!(
        output.stdout[1].starts_with("publishing to a missing exchange failed with 404: "),
        "{output:#?}"
    );
    assert!(output.stdout[1].contains("NOT_FOUND"), "{output:#?}");
    assert_eq!(
        output.stdout[2],
        "the publisher went on: the queue holds 2001 messages"
    );
}

#[test]
fn aioamqp_connect() {
    let scope = Scope::new("aioconnect", &[], &[]);
    let output = scope.run("aioamqp_connect", &[]);
    assert!(
        output.stdout[0].starts_with("connected to RabbitMQ "),
        "{output:#?}"
    );
    assert!(output.has("closing the connection"), "{output:#?}");

    // Each way of failing gives one line and exit status 1, without the password.
    let url = refused_url();
    let refused = scope
        .spawn_with("aioamqp_connect", &[], &[("AMQP_URL", &url)])
        .finish();
    let broker: warren::ConnectionOptions = broker_url().parse().expect("AMQP_URL parses");
    let unknown_user = format!(
        "amqp://warren-no-such-user:wrong-password@{}:{}/%2f",
        broker.get_host(),
        broker.get_port()
    );
    let refused_login = scope
        .spawn_with("aioamqp_connect", &[], &[("AMQP_URL", &unknown_user)])
        .finish();
    let bad_uri = scope
        .spawn_with("aioamqp_connect", &[], &[("AMQP_URL", "http://localhost")])
        .finish();
    // The broker's URL, credentials included, with a virtual host that does not exist.
    let url = broker_url();
    let authority = url.find("://").expect("AMQP_URL is a URL") + 3;
    let path = url[authority..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority + i);
    let unknown_vhost = format!("{}/warren-no-such-vhost", &url[..path]);
    let refused_vhost = scope
        .spawn_with("aioamqp_connect", &[], &[("AMQP_URL", &unknown_vhost)])
        .finish();
    for (output, start, says) in [
        (
            refused,
            "nothing answers at 127.0.0.1:",
            "is RabbitMQ running?",
        ),
        (refused_login, "login refused: ", "ACCESS_REFUSED"),
        (bad_uri, "AMQP_URL: invalid AMQP URI", "scheme"),
        (
            refused_vhost,
            "amqp://",
            "refused the virtual host: NOT_ALLOWED - vhost warren-no-such-vhost not found",
        ),
    ] {
        assert_eq!(output.status.code(), Some(1), "{output:#?}");
        assert_eq!(output.stderr.len(), 1, "{output:#?}");
        assert!(output.stderr[0].starts_with(start), "{output:#?}");
        assert!(output.stderr[0].contains(says), "{output:#?}");
        assert!(!output.stderr[0].contains("secret-password"), "{output:#?}");
        assert!(!output.stderr[0].contains("wrong-password"), "{output:#?}");
    }
}

#[test]
fn aioamqp_publish_and_consume() {
    let scope = Scope::new("aiopubsub", &["my_queue"], &[]);
    let published = scope.run("aioamqp_publish", &[]);
    assert!(
        published.stdout[0].starts_with("published \"aioamqp hello\" to "),
        "{published:#?}"
    );
    let consumed = scope.run("aioamqp_consume", &["--count", "1"]);
    assert_eq!(consumed.after("body: "), ["aioamqp hello"], "{consumed:#?}");
    let envelope = consumed.after("envelope: ");
    assert!(
        envelope[0].contains("delivery tag 1, exchange \"\""),
        "{consumed:#?}"
    );
    assert_eq!(consumed.after("properties: BasicProperties").len(), 1);
}

#[test]
fn aioamqp_exchange() {
    let scope = Scope::new("aioexchange", &["my_queue"], &["my_exchange"]);
    let output = scope.run("aioamqp_exchange", &[]);
    assert!(
        output.stdout[0].starts_with("bound queue warren-example-aioexchange-"),
        "{output:#?}"
    );
    assert!(
        output.stdout[1].contains("received \"through the exchange\" from exchange"),
        "{output:#?}"
    );
}
