//! Fault injection for the integration tests: real faults against real brokers, for the
//! recovery and failover tests.
//!
//! - [`Relay`]: a TCP proxy in front of a broker that can drop every link at once
//!   ([`Relay::cut`]), go silent without closing anything ([`Relay::blackhole`]), refuse new
//!   connections ([`Relay::refuse`]) and move to another upstream ([`Relay::set_upstream`]).
//! - [`ExtraNode`]: a standalone RabbitMQ node of the test's own (`scripts/rabbitmq-node.sh`),
//!   to crash (`kill -9`), freeze (`SIGSTOP`), restart, and administer with `rabbitmqctl`.
//! - [`Cluster`]: the 3-node cluster of `scripts/rabbitmq-cluster.sh`, from the environment
//!   its `env` command prints: kill and restart nodes, find which node serves a connection
//!   and which nodes hold a quorum queue.
//! - [`LossChecker`]: the ledger of a publish/consume run with unique message ids; its
//!   [`LossReport`] says what was lost, unexpected or duplicated.
//! - [`Workload`]: confirmed persistent publishes and a consumer acking each while a fault
//!   runs, checked with a [`LossChecker`]; its [`Outcome`] also gives recovery times and the
//!   longest pauses.
//!
//! Use it from a test file with `mod faults;`. Everything runs on tokio and std: commands
//! (`rabbitmqctl`, the scripts, `kill`) run on tokio's blocking pool, so they do not stall the
//! connections under test on a single-threaded runtime. A failing command fails the test with
//! its output; no password reaches a message.
//!
//! Tests that need a node or the cluster and cannot have one print a line starting with
//! `SKIPPED:` and return, unless `WARREN_REQUIRE_EXTRA_NODES` (for [`ExtraNode`]) or
//! `WARREN_REQUIRE_CLUSTER` (for [`Cluster`]) is set, as `.ci/run` does: then they fail.

#![allow(dead_code)]

mod cluster;
mod loss;
mod node;
mod relay;
mod workload;

// Each test binary uses its own part of the toolkit.
#[allow(unused_imports)]
pub use cluster::Cluster;
#[allow(unused_imports)]
pub use loss::{LossChecker, LossReport};
#[allow(unused_imports)]
pub use node::ExtraNode;
#[allow(unused_imports)]
pub use relay::Relay;
#[allow(unused_imports)]
pub use workload::{Outcome, Progress, Workload, percentile};

use std::path::PathBuf;
use std::process::Command;

/// A path inside the repository (e.g. `scripts/rabbitmq-node.sh`).
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Whether the environment variable `name` asks for the resource (set, not empty, not `0`).
fn required(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| !value.is_empty() && value != "0")
}

/// Says why a test cannot run: fails it if `require_var` is set, else prints `SKIPPED: why`.
fn skip(require_var: &str, why: &str) {
    assert!(!required(require_var), "{why} (and {require_var} is set)");
    eprintln!("SKIPPED: {why}");
}

/// Whether `program` is on the PATH.
fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// A command to run, and how to show it in messages (with any password replaced).
#[derive(Debug, Clone)]
struct Cmd {
    program: String,
    args: Vec<String>,
    shown: String,
}

impl Cmd {
    fn new<S: AsRef<str>>(program: &str, args: &[S]) -> Self {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = format!("{program} {}", args.join(" "));
        Self {
            program: program.to_owned(),
            args,
            shown,
        }
    }

    /// The same command, shown with `secret` replaced by `***`.
    fn hiding(mut self, secret: &str) -> Self {
        if !secret.is_empty() {
            self.shown = self.shown.replace(secret, "***");
        }
        self
    }

    /// Runs it to completion (blocking) and returns its standard output, or a message with
    /// its exit status and output.
    fn output_blocking(&self) -> Result<String, String> {
        let output = Command::new(&self.program)
            .args(&self.args)
            .output()
            .map_err(|e| format!("`{}` could not run: {e}", self.shown))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        Err(format!(
            "`{}` failed ({}):\n{}{}",
            self.shown,
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        ))
    }

    /// [`Cmd::output_blocking`] on tokio's blocking pool.
    async fn output(&self) -> Result<String, String> {
        let cmd = self.clone();
        tokio::task::spawn_blocking(move || cmd.output_blocking())
            .await
            .unwrap_or_else(|e| Err(format!("running a command: {e}")))
    }

    /// Runs it and returns its standard output; fails the test if it fails.
    async fn run(&self) -> String {
        self.output()
            .await
            .unwrap_or_else(|message| panic!("{message}"))
    }
}

/// The node an Erlang pid as rabbitmqctl prints it (`<rabbit@host.1765000000.1234.0>`) lives
/// on (`rabbit@host`); `None` if it is not such a pid. Node names with dots (long names) are
/// not supported.
pub fn node_of_pid(pid: &str) -> Option<&str> {
    let inner = pid.trim().strip_prefix('<')?.strip_suffix('>')?;
    let at = inner.find('@')?;
    let end = inner[at..].find('.').map_or(inner.len(), |dot| at + dot);
    Some(&inner[..end])
}

/// Connections of `list_connections pid client_properties` output whose client-provided
/// `connection_name` is `name`: their pids.
fn pids_of_named_connections(list: &str, name: &str) -> Vec<String> {
    let needle = format!("{{\"connection_name\",\"{name}\"}}");
    list.lines()
        .filter(|line| line.contains(&needle))
        .filter_map(|line| line.split('\t').next())
        .map(|pid| pid.trim().to_owned())
        .collect()
}
