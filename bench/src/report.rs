//! The one JSON line a runner prints.

use serde::{Deserialize, Serialize};

use crate::{Measured, Params};

/// What a scenario measured, before it is turned into a [`Report`].
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The interval.
    pub measured: Measured,
    /// Messages (round trips, consumers) done in it.
    pub messages: u64,
    /// Round-trip latencies in nanoseconds (`rpc`).
    pub latencies_ns: Vec<u64>,
}

impl Outcome {
    /// An outcome without latencies.
    pub fn new(measured: Measured, messages: u64) -> Self {
        Self {
            measured,
            messages,
            latencies_ns: Vec::new(),
        }
    }
}

/// A runner's result line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// `warren`, `lapin`, `amqprs` or `ceiling`.
    pub client: String,
    /// The scenario's name.
    pub scenario: String,
    /// Its parameters, for people.
    pub params: String,
    /// Body size in bytes.
    pub size: usize,
    /// Messages (round trips for `rpc`, consumers for `idle`) in the interval.
    pub messages: u64,
    /// Wall time of the interval.
    pub elapsed_s: f64,
    /// `messages / elapsed_s` (0 for `idle`).
    pub msgs_per_s: f64,
    /// The runner's user CPU in the interval, all threads.
    pub cpu_user_s: f64,
    /// The runner's system CPU in the interval.
    pub cpu_sys_s: f64,
    /// The broker's CPU in the interval, if visible.
    pub broker_cpu_s: Option<f64>,
    /// Peak RSS (KiB) during the interval (`idle`: of the whole run).
    pub peak_rss_kb: u64,
    /// Median round trip, microseconds (`rpc`).
    pub p50_us: Option<f64>,
    /// 99th percentile round trip, microseconds (`rpc`).
    pub p99_us: Option<f64>,
    /// Slowest round trip, microseconds (`rpc`).
    pub max_us: Option<f64>,
}

impl Report {
    /// Builds the report of `outcome`.
    pub fn new(client: &str, params: &Params, outcome: Outcome) -> Self {
        let m = outcome.measured;
        let mut latencies = outcome.latencies_ns;
        latencies.sort_unstable();
        let us = |q: f64| percentile(&latencies, q).map(|ns| ns as f64 / 1e3);
        let throughput = params.scenario != crate::Scenario::Idle && m.elapsed_s > 0.0;
        Self {
            client: client.to_owned(),
            scenario: params.scenario.name().to_owned(),
            params: params.describe(),
            size: params.size,
            messages: outcome.messages,
            elapsed_s: m.elapsed_s,
            msgs_per_s: if throughput {
                outcome.messages as f64 / m.elapsed_s
            } else {
                0.0
            },
            cpu_user_s: m.cpu.user,
            cpu_sys_s: m.cpu.sys,
            broker_cpu_s: m.broker_cpu_s,
            peak_rss_kb: m.peak_rss_kb,
            p50_us: us(0.50),
            p99_us: us(0.99),
            max_us: latencies.last().map(|&ns| ns as f64 / 1e3),
        }
    }

    /// Client CPU (user + sys) seconds.
    pub fn cpu_s(&self) -> f64 {
        self.cpu_user_s + self.cpu_sys_s
    }
}

/// The `q` quantile (nearest rank) of sorted values.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}
