//! warren's `Publisher` (10 tasks, one publisher over a pool of confirm channels) beside the
//! single-channel confirmed publish, in the same run.
//!
//! ```sh
//! cargo build --release -p warren-bench --bins
//! target/release/publisher-pool --rounds 5 --messages 200000
//! ```
//!
//! Each round runs `runner-warren confirm` (one channel, one task, at most `--window`
//! unconfirmed publishes: the `confirm` row of BENCHMARKS.md) and `runner-warren publisher`
//! (`--tasks` tasks publishing through one `Publisher` of `--pool` channels, each task keeping
//! its share of the same window in flight, every publish awaited for its ack), one after the
//! other, as separate processes, 16 B bodies. Prints each run, then the medians and the ratio
//! of the publisher's rate to the single channel's as markdown.

use std::path::PathBuf;
use std::process::Command;

use warren_bench::{Report, Result};

struct Args {
    rounds: usize,
    messages: u64,
    window: usize,
    tasks: usize,
    pool: usize,
    /// Passed on to the runners.
    url: Option<String>,
}

fn args() -> Result<Args> {
    let mut args = Args {
        rounds: 3,
        messages: 200_000,
        window: 1000,
        tasks: 10,
        pool: 4,
        url: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        let mut value = || given.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => args.rounds = value()?.parse()?,
            "--messages" => args.messages = value()?.parse()?,
            "--window" => args.window = value()?.parse()?,
            "--tasks" => args.tasks = value()?.parse()?,
            "--pool" => args.pool = value()?.parse()?,
            "--url" => args.url = Some(value()?),
            _ => {
                return Err(format!(
                    "unknown option {arg}\nusage: publisher-pool [--rounds N] [--messages N] \
                     [--window N] [--tasks N] [--pool N] [--url URL]"
                )
                .into());
            }
        }
    }
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    Ok(args)
}

/// `runner-warren`, built beside this program.
fn runner() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let runner = exe.with_file_name("runner-warren");
    if !runner.exists() {
        return Err(format!(
            "{} is missing; build it with `cargo build --release -p warren-bench --bins`",
            runner.display()
        )
        .into());
    }
    Ok(runner)
}

fn run(runner: &PathBuf, scenario: &[String], url: Option<&str>) -> Result<Report> {
    let mut command = Command::new(runner);
    command.args(scenario);
    if let Some(url) = url {
        command.args(["--url", url]);
    }
    let output = command.output()?;
    if !output.status.success() {
        return Err(format!(
            "runner-warren {} failed: {}",
            scenario.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Client CPU per message, in microseconds.
fn cpu_us(report: &Report) -> f64 {
    (report.cpu_user_s + report.cpu_sys_s) / report.messages as f64 * 1e6
}

fn main() -> Result<()> {
    let a = args()?;
    let runner = runner()?;
    let (m, w) = (a.messages.to_string(), a.window.to_string());
    let single: Vec<String> = ["confirm", "--size", "16", "--messages", &m, "--window", &w]
        .map(String::from)
        .into();
    let (tasks, pool) = (a.tasks.to_string(), a.pool.to_string());
    let publisher: Vec<String> = [
        "publisher",
        "--size",
        "16",
        "--messages",
        &m,
        "--window",
        &w,
        "--tasks",
        &tasks,
        "--pool",
        &pool,
    ]
    .map(String::from)
    .into();
    let (mut channel_runs, mut publisher_runs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=a.rounds {
        let one = run(&runner, &single, a.url.as_deref())?;
        let many = run(&runner, &publisher, a.url.as_deref())?;
        let ratio = many.msgs_per_s / one.msgs_per_s;
        eprintln!(
            "round {round}: single channel {:.0} msgs/s ({:.2} µs CPU/msg), publisher {:.0} \
             msgs/s ({:.2} µs CPU/msg), ratio {ratio:.2}",
            one.msgs_per_s,
            cpu_us(&one),
            many.msgs_per_s,
            cpu_us(&many)
        );
        ratios.push(ratio);
        channel_runs.push(one);
        publisher_runs.push(many);
    }
    let rate = |runs: &[Report]| median(runs.iter().map(|r| r.msgs_per_s).collect());
    let cpu = |runs: &[Report]| median(runs.iter().map(cpu_us).collect());
    let broker = |runs: &[Report]| {
        median(
            runs.iter()
                .filter_map(|r| r.broker_cpu_s.map(|s| s / r.messages as f64 * 1e6))
                .collect::<Vec<_>>(),
        )
    };
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    println!("| how | msgs/s (median) | client CPU µs/msg | broker CPU µs/msg |");
    println!("| --- | --: | --: | --: |");
    println!(
        "| one channel, one task, window {} | {:.0} | {:.2} | {:.1} |",
        a.window,
        rate(&channel_runs),
        cpu(&channel_runs),
        broker(&channel_runs)
    );
    println!(
        "| `Publisher` of {} channels, {} tasks, window {} | {:.0} | {:.2} | {:.1} |",
        a.pool,
        a.tasks,
        a.window,
        rate(&publisher_runs),
        cpu(&publisher_runs),
        broker(&publisher_runs)
    );
    println!(
        "\nPublisher ÷ one channel, msgs/s: {:.2} (median of {} rounds; {lo:.2}-{hi:.2})",
        median(ratios),
        a.rounds
    );
    Ok(())
}
