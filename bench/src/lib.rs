//! Benchmark programs; see `benches/` (the codec against amq-protocol) and `src/bin/` (the
//! clients side by side: warren, lapin, amqprs and the `ceiling`, run by `compare`).
//!
//! Each `runner-*` binary runs one scenario with one client against the broker at `AMQP_URL`
//! and prints one JSON line, a [`Report`]. `compare` runs them as separate processes,
//! interleaved, and writes the table. This library holds what they share: the command line
//! ([`Params`]), the measurements ([`meter`]), the result line ([`Report`]) and a minimal raw
//! AMQP connection ([`raw`]) on warren's codec, used by the ceiling and by every runner for
//! setup and checks outside the measured interval (declaring and pre-filling queues,
//! verifying that a consumed queue is empty, deleting).
//!
//! The rules every runner follows:
//! - setup (connecting, declaring, pre-filling) and teardown happen outside the measured
//!   interval, which [`meter::Meter`] brackets: wall time, the process's own CPU (user + sys,
//!   all threads), the broker's CPU and the peak RSS from its start;
//! - every scenario checks that the work was done (every message counted by the broker,
//!   every confirm an ack, every delivery received and acknowledged, every reply matched to
//!   its request) and fails with exit status 1 otherwise;
//! - queues get unique names (`bench-<client>-<scenario>-<pid>-<n>`), are declared with an
//!   `x-expires` of ten minutes as a safety net, and are deleted at the end.

pub mod args;
pub mod delay;
pub mod meter;
pub mod raw;
pub mod report;
pub mod rpc_server;
pub mod url;

pub use args::{Params, Scenario};
pub use meter::{Measured, Meter};
pub use report::{Outcome, Report};
pub use url::AmqpUrl;

use std::sync::atomic::{AtomicU32, Ordering};

/// Errors of the runners: anything, with a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Result of the runners.
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// The URL used when `AMQP_URL` is not set (the same default as warren's tests).
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Queues live at most this long without use (`x-expires`), in case a runner dies before it
/// deletes them.
pub const QUEUE_EXPIRES_MS: i32 = 600_000;

/// A queue name no other run uses: `bench-<client>-<what>-<pid>-<n>`.
pub fn queue_name(client: &str, what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("bench-{client}-{what}-{}-{n}", std::process::id())
}

/// The message body of `size` bytes every client publishes.
pub fn body(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// The correlation id of request `i` in the RPC scenario: fixed width, so that the ceiling
/// can patch it into pre-encoded frames at a fixed offset.
pub fn correlation_id(i: u64) -> String {
    format!("{i:016}")
}

/// Length of [`correlation_id`]'s result.
pub const CORRELATION_ID_LEN: usize = 16;

/// The error of a runner asked for a scenario only warren's runner has (`publisher`).
pub fn only_warren(params: &Params) -> BoxError {
    format!(
        "the {} scenario measures warren's Publisher; only runner-warren runs it",
        params.scenario.name()
    )
    .into()
}

/// Fails with `message` unless `condition` holds.
pub fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<()> {
    if condition {
        Ok(())
    } else {
        Err(message().into())
    }
}

/// Runs an async runner on a tokio runtime built as `params` say, prints its report line and
/// exits with status 1 (after printing the error) if it failed.
pub fn run_async<F, Fut>(client: &str, run: F)
where
    F: FnOnce(Params) -> Fut,
    Fut: std::future::Future<Output = Result<Outcome>> + Send + 'static,
{
    let params = Params::from_env_args();
    let mut builder = if params.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if !params.current_thread && params.worker_threads > 0 {
        builder.worker_threads(params.worker_threads);
    }
    let runtime = builder.enable_all().build().expect("a tokio runtime");
    let scenario = run(params.clone());
    // By default the scenario runs as a service's consumers and handlers do: in a task on the
    // runtime's workers, where a task woken by another (a client's connection task handing it
    // a delivery) runs next on the same thread. `block_on` runs it on the main thread, which is
    // not a worker, so every hand-over between it and the connection's task wakes a thread.
    let result = if params.block_on {
        runtime.block_on(scenario)
    } else {
        runtime.block_on(async {
            tokio::spawn(scenario)
                .await
                .unwrap_or_else(|e| Err(format!("the scenario's task failed: {e}").into()))
        })
    };
    // Do not wait for tasks a client left behind (heartbeat timers, I/O loops).
    runtime.shutdown_background();
    finish(client, &params, result);
}

/// Runs a blocking runner (the ceiling); see [`run_async`].
pub fn run_blocking(client: &str, run: impl FnOnce(&Params) -> Result<Outcome>) {
    let params = Params::from_env_args();
    let result = run(&params);
    finish(client, &params, result);
}

fn finish(client: &str, params: &Params, result: Result<Outcome>) {
    match result {
        Ok(outcome) => {
            let report = Report::new(client, params, outcome);
            println!(
                "{}",
                serde_json::to_string(&report).expect("a report serializes")
            );
        }
        Err(error) => {
            eprintln!(
                "runner-{client} {}: FAILED: {error}",
                params.scenario.name()
            );
            std::process::exit(1);
        }
    }
}

/// A field-table value as text (long strings as UTF-8, anything else in its debug form), for
/// the broker's server properties.
pub fn wire_value_string(value: &warren::wire::FieldValue) -> String {
    match value {
        warren::wire::FieldValue::LongString(s) => {
            String::from_utf8_lossy(s.as_bytes()).into_owned()
        }
        other => format!("{other:?}"),
    }
}
