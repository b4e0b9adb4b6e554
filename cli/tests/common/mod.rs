//! Shared helpers of the `warren` binary's tests: run it with a deadline, unique names, and
//! cleanup of what a test declared.
//!
//! Every test uses the broker at AMQP_URL (the local default otherwise), gives what it creates
//! a unique name, and deletes it when it ends, passed or failed, so tests run in parallel.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest one run of the binary may take.
const LIMIT: Duration = Duration::from_secs(60);

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Checks that the run succeeded, and returns it.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(self.status.success(), "warren failed: {self:#?}");
        self
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Checks that the run failed with `code` and exactly one line on stderr, starting with
    /// `start`, and returns that line.
    #[track_caller]
    pub fn one_line_error(&self, code: i32, start: &str) -> &str {
        assert_eq!(self.code(), Some(code), "{self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "not one line on stderr: {self:#?}");
        assert!(lines[0].starts_with(start), "{self:#?}");
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
        assert!(!self.stderr.contains("RUST_BACKTRACE"), "{self:#?}");
        lines[0]
    }
}

/// Runs `warren` with `args` and no input.
pub fn warren(args: &[&str]) -> Output {
    run(args, None, &[])
}

/// Runs `warren` with `args`, `input` on stdin.
pub fn warren_with_input(args: &[&str], input: &[u8]) -> Output {
    run(args, Some(input), &[])
}

/// Runs `warren` with `args` and extra environment variables.
pub fn warren_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    run(args, None, env)
}

fn run(args: &[&str], input: Option<&[u8]>, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
    command
        .args(args)
        .env("AMQP_URL", broker_url())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("starting warren");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).expect("writing warren's stdin");
    }
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for warren") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("warren {args:?} did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    }
}

/// The broker the tests use.
pub fn broker_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A name no other test (or test run) uses: `warren-cli-test-{what}-{pid}-{time}-{n}`.
pub fn unique(what: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("warren-cli-test-{what}-{}-{nanos}-{n}", std::process::id())
}

/// Deletes the queues and exchanges it names when dropped.
#[derive(Default)]
pub struct Cleanup {
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Cleanup {
    pub fn new() -> Self {
        Self::default()
    }

    /// A unique queue name, deleted at the end.
    pub fn queue(&mut self, what: &str) -> String {
        let name = unique(what);
        self.queues.push(name.clone());
        name
    }

    /// A unique exchange name, deleted at the end.
    pub fn exchange(&mut self, what: &str) -> String {
        let name = unique(what);
        self.exchanges.push(name.clone());
        name
    }

    /// Deletes `name` at the end too.
    pub fn also_queue(&mut self, name: &str) {
        self.queues.push(name.to_owned());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for queue in &self.queues {
            let _ = run(&["delete", "queue", queue], None, &[]);
        }
        for exchange in &self.exchanges {
            let _ = run(&["delete", "exchange", exchange], None, &[]);
        }
    }
}

/// A URL where nothing listens: a port the system gave out and that is closed again.
pub fn refused_url(password: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("amqp://guest:{password}@127.0.0.1:{port}/%2f")
}
