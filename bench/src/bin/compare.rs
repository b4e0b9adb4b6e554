//! Runs every scenario for the ceiling, warren, lapin and amqprs as separate processes,
//! interleaved (ceiling warren lapin amqprs, ceiling warren lapin amqprs, ...), and writes the
//! medians as a markdown table (and BENCHMARKS.md with `--output`).
//!
//! ```text
//! cargo run --release -p warren-bench --bin compare -- [--rounds 3] [--messages 200000]
//!     [--scenario publish,consume,...] [--output BENCHMARKS.md]
//! ```
//!
//! Run through cargo, it first builds the runners with the same profile (`--no-build` skips
//! that). Each runner measures its own interval (wall time, its CPU, the broker's CPU, its peak
//! RSS); this program also takes each child's whole-run CPU and peak RSS from `wait4`, as a
//! check, and stops a child that runs longer than `--timeout`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use warren_bench::meter::{listener_pid, timeval};
use warren_bench::raw::RawConnection;
use warren_bench::wire_value_string;
use warren_bench::{AmqpUrl, DEFAULT_URL, Report, Result};

const CLIENTS: [&str; 4] = ["ceiling", "warren", "lapin", "amqprs"];
/// Clients that run only some scenarios, chosen with `--clients` (never by default): the
/// client, and the one scenario it runs.
const EXTRA_CLIENTS: [(&str, &str); 1] = [("warren-rpc", "rpc")];
const PEERS: [&str; 2] = ["lapin", "amqprs"];
/// The suffix of a client name that runs it in `block_on` (`warren:block-on`), so that one
/// run interleaves both modes of a client.
const BLOCK_ON: &str = ":block-on";
const NOTES_START: &str = "<!-- notes: kept when compare rewrites this file -->";
const NOTES_END: &str = "<!-- /notes -->";

#[derive(Debug, Clone)]
struct Options {
    rounds: usize,
    messages: u64,
    large_messages: Option<u64>,
    rpc_messages: Option<u64>,
    scenarios: Vec<String>,
    clients: Vec<String>,
    output: Option<PathBuf>,
    pause: f64,
    timeout: u64,
    build: bool,
    url: String,
    /// Pass `--block-on` to the runners: the scenario on the main thread, not in a task.
    block_on: bool,
}

fn usage() -> &'static str {
    "usage: compare [options]
  --rounds N           rounds of every client per scenario [3]
  --messages N         messages per throughput scenario [200000]
  --large-messages N   messages of the 64 KiB publish [messages / 40, at least 1000]
  --rpc-messages N     measured round trips of the RPC scenario [messages / 10]
  --scenario A,B       only these scenarios (or prefixes: publish, consume) [all]:
                       publish-16 publish-1k publish-64k confirm consume-ack consume-multi rpc fanin idle
  --clients A,B        only these clients [ceiling,warren,lapin,amqprs]; also warren-rpc
                       (warren::rpc::RpcClient, rpc scenario only); NAME:block-on runs an
                       async client in block_on, interleaved with the others (warren,
                       warren:block-on, ...), and adds a table of block_on against spawned
  --output FILE        also write the report there (BENCHMARKS.md), keeping its notes block
  --pause S            seconds between runs, for the broker to settle [1]
  --timeout S          longest a run may take before it is killed and counted failed [600]
  --no-build           do not build the runners first
  --block-on           run each async client's scenario in block_on on the main thread
                       (as #[tokio::main] runs main) instead of in a spawned task
  --url URL            broker [$AMQP_URL or amqp://guest:guest@127.0.0.1:5672/%2f]"
}

fn parse_options(args: &[String]) -> std::result::Result<Options, String> {
    let mut o = Options {
        rounds: 3,
        messages: 200_000,
        large_messages: None,
        rpc_messages: None,
        scenarios: Vec::new(),
        clients: CLIENTS.iter().map(|c| c.to_string()).collect(),
        output: None,
        pause: 1.0,
        timeout: 600,
        build: true,
        url: std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned()),
        block_on: false,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        if flag == "--no-build" {
            o.build = false;
            continue;
        }
        if flag == "--block-on" {
            o.block_on = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| -> std::result::Result<u64, String> {
            v.replace('_', "")
                .parse()
                .map_err(|_| format!("{flag}: bad number {v:?}"))
        };
        let list = |v: &str| v.split(',').map(str::to_owned).collect::<Vec<_>>();
        match flag.as_str() {
            "--rounds" => o.rounds = num(value)? as usize,
            "--messages" => o.messages = num(value)?,
            "--large-messages" => o.large_messages = Some(num(value)?),
            "--rpc-messages" => o.rpc_messages = Some(num(value)?),
            "--scenario" | "--scenarios" => o.scenarios.extend(list(value)),
            "--clients" => o.clients = list(value),
            "--output" => o.output = Some(PathBuf::from(value)),
            "--pause" => o.pause = value.parse().map_err(|_| "--pause: bad number")?,
            "--timeout" => o.timeout = num(value)?,
            "--url" => o.url = value.clone(),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if o.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    let known = |c: &str| CLIENTS.contains(&c) || EXTRA_CLIENTS.iter().any(|(e, _)| *e == c);
    if let Some(c) = o.clients.iter().find(|c| !known(runner_of(c).0)) {
        return Err(format!("unknown client {c}"));
    }
    if o.clients.iter().any(|c| c == &format!("ceiling{BLOCK_ON}")) {
        return Err("the ceiling runs on blocking threads: it has no block_on mode".into());
    }
    Ok(o)
}

/// One row of the table: a scenario with its parameters.
#[derive(Debug, Clone)]
struct Case {
    key: &'static str,
    title: String,
    args: Vec<String>,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Throughput,
    Rpc,
    Idle,
}

fn cases(o: &Options) -> Vec<Case> {
    let m = o.messages;
    let large = o.large_messages.unwrap_or((m / 40).max(1000));
    let rpc = o.rpc_messages.unwrap_or((m / 10).max(1000));
    let case = |key, title: String, args: &[&str], kind| Case {
        key,
        title,
        args: args.iter().map(|a| a.to_string()).collect(),
        kind,
    };
    let (m_s, large_s, rpc_s) = (m.to_string(), large.to_string(), rpc.to_string());
    let all = vec![
        case(
            "publish-16",
            format!("publish 16 B ({m} msgs)"),
            &["publish", "--size", "16", "--messages", &m_s],
            Kind::Throughput,
        ),
        case(
            "publish-1k",
            format!("publish 1 KiB ({m} msgs)"),
            &["publish", "--size", "1024", "--messages", &m_s],
            Kind::Throughput,
        ),
        case(
            "publish-64k",
            format!("publish 64 KiB ({large} msgs)"),
            &["publish", "--size", "65536", "--messages", &large_s],
            Kind::Throughput,
        ),
        case(
            "confirm",
            format!("confirmed publish 16 B, window 1000 ({m} msgs)"),
            &[
                "confirm",
                "--size",
                "16",
                "--messages",
                &m_s,
                "--window",
                "1000",
            ],
            Kind::Throughput,
        ),
        case(
            "consume-ack",
            format!("consume 16 B, prefetch 1000, ack each ({m} msgs)"),
            &[
                "consume",
                "--size",
                "16",
                "--messages",
                &m_s,
                "--prefetch",
                "1000",
                "--ack-every",
                "1",
            ],
            Kind::Throughput,
        ),
        case(
            "consume-multi",
            format!("consume 16 B, prefetch 1000, ack multiple/100 ({m} msgs)"),
            &[
                "consume",
                "--size",
                "16",
                "--messages",
                &m_s,
                "--prefetch",
                "1000",
                "--ack-every",
                "100",
            ],
            Kind::Throughput,
        ),
        case(
            "rpc",
            format!("RPC round trip 16 B, 1 in flight ({rpc} round trips)"),
            &["rpc", "--size", "16", "--messages", &rpc_s],
            Kind::Rpc,
        ),
        case(
            "fanin",
            format!("fan-in: 10 tasks, 1 connection, 16 B ({m} msgs)"),
            &["fanin", "--size", "16", "--messages", &m_s, "--tasks", "10"],
            Kind::Throughput,
        ),
        case(
            "idle",
            "idle: 1000 consumers on 100 channels".to_owned(),
            &["idle", "--consumers", "1000", "--channels", "100"],
            Kind::Idle,
        ),
    ];
    if o.scenarios.is_empty() {
        return all;
    }
    all.into_iter()
        .filter(|c| {
            o.scenarios
                .iter()
                .any(|s| c.key == s || c.key.starts_with(&format!("{s}-")))
        })
        .collect()
}

/// One child process's result.
#[derive(Debug, Clone)]
struct Run {
    report: std::result::Result<Report, String>,
    /// Whole-run CPU (user + sys) and peak RSS of the child, from wait4.
    total_cpu_s: f64,
    max_rss_kb: u64,
}

fn run_child(bin: &Path, args: &[String], timeout: Duration) -> Run {
    let failed = |e: String| Run {
        report: Err(e),
        total_cpu_s: 0.0,
        max_rss_kb: 0,
    };
    let mut child = match Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return failed(format!("cannot start {}: {e}", bin.display())),
    };
    let pid = child.id() as libc::pid_t;
    let (done, watchdog) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = watchdog.recv_timeout(timeout) {
            // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = String::new();
    let _ = child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut stdout);
    // Reap the child ourselves to get its rusage (std's Child is not used to wait after this).
    let mut status = 0;
    // SAFETY: both pointers are to live locals of the right types.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let _ = done.send(());
    let killed = watchdog.join().unwrap_or(false);
    let stderr = stderr.join().unwrap_or_default();
    if !stderr.trim().is_empty() {
        eprint!("{stderr}");
    }
    let total_cpu_s = timeval(usage.ru_utime) + timeval(usage.ru_stime);
    let max_rss_kb = usage.ru_maxrss as u64;
    let report = if reaped != pid {
        Err(format!("wait4 failed: {}", std::io::Error::last_os_error()))
    } else if killed {
        Err(format!("killed after {} s", timeout.as_secs()))
    } else if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let reason = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        Err(format!("exit status {status}: {reason}"))
    } else {
        stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .ok_or_else(|| "no report line".to_owned())
            .and_then(|l| serde_json::from_str(l).map_err(|e| format!("bad report: {e}")))
    };
    Run {
        report,
        total_cpu_s,
        max_rss_kb,
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The medians of one client in one scenario.
#[derive(Debug, Clone, Default)]
struct Summary {
    ok: usize,
    failed: Vec<String>,
    rate: Option<f64>,
    rates: Vec<Option<f64>>,
    cpu_per_m: Option<f64>,
    broker_per_m: Option<f64>,
    rss_mib: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    client_cores: Option<f64>,
    broker_cores: Option<f64>,
    idle_cpu_s: Option<f64>,
}

fn summarize(runs: &[Run]) -> Summary {
    let reports: Vec<&Report> = runs.iter().filter_map(|r| r.report.as_ref().ok()).collect();
    let med =
        |f: &dyn Fn(&Report) -> Option<f64>| median(reports.iter().filter_map(|r| f(r)).collect());
    let per_m = |x: f64, r: &Report| x / r.messages.max(1) as f64 * 1e6;
    Summary {
        ok: reports.len(),
        failed: runs
            .iter()
            .filter_map(|r| r.report.as_ref().err().cloned())
            .collect(),
        rate: med(&|r| (r.msgs_per_s > 0.0).then_some(r.msgs_per_s)),
        rates: runs
            .iter()
            .map(|r| r.report.as_ref().ok().map(|r| r.msgs_per_s))
            .collect(),
        cpu_per_m: med(&|r| Some(per_m(r.cpu_s(), r))),
        broker_per_m: med(&|r| r.broker_cpu_s.map(|b| per_m(b, r))),
        rss_mib: med(&|r| Some(r.peak_rss_kb as f64 / 1024.0)),
        p50: med(&|r| r.p50_us),
        p99: med(&|r| r.p99_us),
        client_cores: med(&|r| Some(r.cpu_s() / r.elapsed_s)),
        broker_cores: med(&|r| r.broker_cpu_s.map(|b| b / r.elapsed_s)),
        idle_cpu_s: med(&|r| Some(r.cpu_s())),
    }
}

fn f(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "–".to_owned(),
    }
}

fn thousands(value: Option<f64>) -> String {
    let Some(v) = value.filter(|v| v.is_finite()) else {
        return "–".to_owned();
    };
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

type Results = BTreeMap<(&'static str, String), Summary>;

/// The peer best at `metric` (highest if `higher`, else lowest) and its value.
fn best_peer(
    results: &Results,
    key: &'static str,
    metric: impl Fn(&Summary) -> Option<f64>,
    higher: bool,
) -> Option<(String, f64)> {
    PEERS
        .iter()
        .filter_map(|p| {
            let s = results.get(&(key, p.to_string()))?;
            Some((p.to_string(), metric(s)?))
        })
        .reduce(|a, b| {
            let better = if higher { b.1 > a.1 } else { b.1 < a.1 };
            if better { b } else { a }
        })
}

/// The runner of a client name, and whether the name asks for `block_on`
/// (`warren:block-on` is `runner-warren --block-on`).
fn runner_of(client: &str) -> (&str, bool) {
    match client.strip_suffix(BLOCK_ON) {
        Some(runner) => (runner, true),
        None => (client, false),
    }
}

/// Whether `client` runs the scenario of a case (whose arguments start with its name).
fn runs_scenario(client: &str, case_args: &[String]) -> bool {
    let client = runner_of(client).0;
    match EXTRA_CLIENTS.iter().find(|(extra, _)| *extra == client) {
        Some((_, scenario)) => case_args.first().map(String::as_str) == Some(*scenario),
        None => true,
    }
}

fn get<'a>(results: &'a Results, key: &'static str, client: &str) -> Option<&'a Summary> {
    results.get(&(key, client.to_owned()))
}

fn render_tables(cases: &[Case], clients: &[String], results: &Results, rounds: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Results\n\nMedians of {rounds} rounds. msgs/s counts messages (round trips for RPC); \
         CPU-s/M is CPU seconds (user + sys) per million messages or round trips, of the client \
         process (for RPC: client and server, both in the process) and of the broker \
         (`beam.smp`) over the same interval; peak RSS is the client process's during the \
         interval (idle: of the whole run).\n"
    );
    let _ = writeln!(
        out,
        "| scenario | client | msgs/s | % of ceiling | client CPU-s/M | broker CPU-s/M | peak RSS MiB | p50 µs | p99 µs |"
    );
    let _ = writeln!(out, "|---|---|--:|--:|--:|--:|--:|--:|--:|");
    for case in cases {
        let ceiling = get(results, case.key, "ceiling").and_then(|s| s.rate);
        for client in clients {
            let Some(s) = get(results, case.key, client) else {
                continue;
            };
            let failed = if s.failed.is_empty() {
                String::new()
            } else {
                format!(
                    " **({} of {} runs FAILED)**",
                    s.failed.len(),
                    s.failed.len() + s.ok
                )
            };
            let (rate, pct, cpu, broker) = if case.kind == Kind::Idle {
                (
                    "–".to_owned(),
                    "–".to_owned(),
                    format!("{} s idle", f(s.idle_cpu_s, 2)),
                    "–".to_owned(),
                )
            } else {
                (
                    thousands(s.rate),
                    format!("{} %", f(ratio(s.rate, ceiling).map(|r| r * 100.0), 0)),
                    f(s.cpu_per_m, 1),
                    f(s.broker_per_m, 1),
                )
            };
            let _ = writeln!(
                out,
                "| {} | {client}{failed} | {rate} | {pct} | {cpu} | {broker} | {} | {} | {} |",
                case.title,
                f(s.rss_mib, 1),
                f(s.p50, 0),
                f(s.p99, 0),
            );
        }
    }

    // warren against the best peer, metric by metric.
    let _ = writeln!(
        out,
        "\n## warren against the best peer\n\nFor each metric the best peer is the one best at \
         it (highest rate; lowest CPU, RSS, latency). Rate: above 1 is better; CPU, RSS and \
         latency: below 1 is better.\n"
    );
    let _ = writeln!(
        out,
        "| scenario | rate ÷ best peer | client CPU/msg ÷ best peer | peak RSS ÷ best peer | p50 ÷ best peer |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|");
    for case in cases {
        let Some(w) = get(results, case.key, "warren") else {
            continue;
        };
        let cell = |metric: &dyn Fn(&Summary) -> Option<f64>, higher: bool| match (
            metric(w),
            best_peer(results, case.key, metric, higher),
        ) {
            (Some(mine), Some((peer, theirs))) if theirs > 0.0 => {
                format!("{:.2} ({peer})", mine / theirs)
            }
            _ => "–".to_owned(),
        };
        let (rate, cpu) = if case.kind == Kind::Idle {
            ("–".to_owned(), "–".to_owned())
        } else {
            (cell(&|s| s.rate, true), cell(&|s| s.cpu_per_m, false))
        };
        let p50 = if case.kind == Kind::Rpc {
            cell(&|s| s.p50, false)
        } else {
            "–".to_owned()
        };
        let _ = writeln!(
            out,
            "| {} | {rate} | {cpu} | {} | {p50} |",
            case.title,
            cell(&|s| s.rss_mib, false)
        );
    }

    // Who is busy: cores used by the client and by the broker during the interval.
    let _ = writeln!(
        out,
        "\n## Where the time goes\n\nCores busy during the measured interval (CPU seconds per \
         second of wall time), medians; the machine has {} cores, shared by the broker and the \
         client. A broker near a full core (its queue and channel processes are mostly serial \
         per queue) or a total near the machine's cores means the broker or the machine is the \
         bound, not the client.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        out,
        "| scenario | client | client cores | broker cores | total |"
    );
    let _ = writeln!(out, "|---|---|--:|--:|--:|");
    for case in cases.iter().filter(|c| c.kind != Kind::Idle) {
        for client in clients {
            let Some(s) = get(results, case.key, client) else {
                continue;
            };
            let total = match (s.client_cores, s.broker_cores) {
                (Some(c), Some(b)) => Some(c + b),
                _ => None,
            };
            let _ = writeln!(
                out,
                "| {} | {client} | {} | {} | {} |",
                case.title,
                f(s.client_cores, 2),
                f(s.broker_cores, 2),
                f(total, 2)
            );
        }
    }

    out.push_str(&render_targets(cases, results));

    // Every run, to show the noise.
    let _ = writeln!(
        out,
        "\n## Every run\n\nmsgs/s of each round (spread: (max − min) / median).\n"
    );
    let header: String = (1..=rounds).map(|r| format!(" round {r} |")).collect();
    let align: String = (1..=rounds).map(|_| "--:|").collect();
    let _ = writeln!(out, "| scenario | client |{header} spread |");
    let _ = writeln!(out, "|---|---|{align}--:|");
    for case in cases.iter().filter(|c| c.kind != Kind::Idle) {
        for client in clients {
            let Some(s) = get(results, case.key, client) else {
                continue;
            };
            let cells: String = s
                .rates
                .iter()
                .map(|r| match r {
                    Some(r) => format!(" {} |", thousands(Some(*r))),
                    None => " FAILED |".to_owned(),
                })
                .collect();
            let ok: Vec<f64> = s.rates.iter().flatten().copied().collect();
            let spread = match (
                ok.iter().copied().reduce(f64::max),
                ok.iter().copied().reduce(f64::min),
                s.rate,
            ) {
                (Some(max), Some(min), Some(med)) if med > 0.0 => {
                    format!("{:.0} %", (max - min) / med * 100.0)
                }
                _ => "–".to_owned(),
            };
            let _ = writeln!(out, "| {} | {client} |{cells} {spread} |", case.title);
        }
    }
    let failures: Vec<String> = results
        .iter()
        .flat_map(|((key, client), s)| {
            s.failed
                .iter()
                .map(move |e| format!("- {key} {client}: {e}"))
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\n## Failed runs\n\n{}", failures.join("\n"));
    }
    out
}

/// Each client run both ways (`NAME` and `NAME:block-on`): `block_on` against the same
/// round's ceiling and spawned run, as the median and range over rounds (rounds are the
/// moments both modes shared), and CPU per message of each mode.
fn render_block_on(cases: &[Case], clients: &[String], results: &Results) -> String {
    let pairs: Vec<&str> = clients
        .iter()
        .filter_map(|c| c.strip_suffix(BLOCK_ON))
        .filter(|spawned| clients.iter().any(|c| c == spawned))
        .collect();
    if pairs.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## `block_on` against a spawned task\n\nPer round, `block_on`'s rate over the \
         round's ceiling and over the same client spawned in that round: median (lowest-highest) \
         over rounds. CPU: client CPU-s per million messages, spawned / `block_on`.\n"
    );
    let _ = writeln!(
        out,
        "| scenario | client | `block_on` % of ceiling | `block_on` % of spawned | spawned % of ceiling | CPU-s/M spawned / `block_on` |"
    );
    let _ = writeln!(out, "|---|---|--:|--:|--:|--:|");
    let per_round = |over: &Summary, of: &Summary| -> Vec<f64> {
        of.rates
            .iter()
            .zip(&over.rates)
            .filter_map(|(a, b)| ratio(*a, *b))
            .map(|r| r * 100.0)
            .collect()
    };
    let spread = |values: Vec<f64>| -> String {
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        match median(values) {
            Some(m) => format!("{m:.0} % ({low:.0}-{high:.0})"),
            None => "–".to_owned(),
        }
    };
    for case in cases.iter().filter(|c| c.kind != Kind::Idle) {
        let ceiling = get(results, case.key, "ceiling");
        for spawned_name in &pairs {
            let (Some(spawned), Some(blocked)) = (
                get(results, case.key, spawned_name),
                get(results, case.key, &format!("{spawned_name}{BLOCK_ON}")),
            ) else {
                continue;
            };
            let of_ceiling =
                |s: &Summary| ceiling.map_or("–".to_owned(), |c| spread(per_round(c, s)));
            let _ = writeln!(
                out,
                "| {} | {spawned_name} | {} | {} | {} | {} / {} |",
                case.title,
                of_ceiling(blocked),
                spread(per_round(spawned, blocked)),
                of_ceiling(spawned),
                f(spawned.cpu_per_m, 2),
                f(blocked.cpu_per_m, 2),
            );
        }
    }
    out
}

/// The issue's targets, evaluated on this run.
fn render_targets(cases: &[Case], results: &Results) -> String {
    let mut rows = Vec::new();
    let has = |key: &str| cases.iter().any(|c| c.key == key);
    let w = |key: &'static str| get(results, key, "warren");
    let c = |key: &'static str| get(results, key, "ceiling");
    let pct_of_ceiling = |key: &'static str| ratio(w(key)?.rate, c(key)?.rate);
    let mut target = |name: String, value: Option<f64>, limit: f64, at_least: bool, unit: &str| {
        let shown = match value {
            Some(v) if unit == "%" => format!("{:.0} %", v * 100.0),
            Some(v) => format!("{v:.2}x"),
            None => "–".to_owned(),
        };
        let met = match value {
            Some(v) if at_least => v >= limit,
            Some(v) => v <= limit,
            None => false,
        };
        let verdict = match value {
            None => "not measured",
            Some(_) if met => "met",
            Some(_) => "**missed**",
        };
        rows.push(format!("| {name} | {shown} | {verdict} |"));
    };
    for (key, label) in [
        ("publish-16", "publish 16 B"),
        ("publish-1k", "publish 1 KiB"),
        ("publish-64k", "publish 64 KiB"),
    ] {
        if !has(key) {
            continue;
        }
        target(
            format!("{label}: ≥ 95 % of the ceiling"),
            pct_of_ceiling(key),
            0.95,
            true,
            "%",
        );
        let best_rate = best_peer(results, key, |s| s.rate, true);
        target(
            format!(
                "{label}: ≥ 1.25x the best peer ({})",
                best_rate.as_ref().map_or("–", |b| b.0.as_str())
            ),
            ratio(w(key).and_then(|s| s.rate), best_rate.map(|b| b.1)),
            1.25,
            true,
            "x",
        );
        let best_cpu = best_peer(results, key, |s| s.cpu_per_m, false);
        target(
            format!(
                "{label}: client CPU/msg ≤ 0.5x the best peer's ({})",
                best_cpu.as_ref().map_or("–", |b| b.0.as_str())
            ),
            ratio(w(key).and_then(|s| s.cpu_per_m), best_cpu.map(|b| b.1)),
            0.5,
            false,
            "x",
        );
    }
    if has("confirm") {
        target(
            "confirmed publish: ≥ 95 % of the ceiling".into(),
            pct_of_ceiling("confirm"),
            0.95,
            true,
            "%",
        );
    }
    if has("consume-ack") {
        target(
            "consume, ack each: ≥ 90 % of the ceiling".into(),
            pct_of_ceiling("consume-ack"),
            0.90,
            true,
            "%",
        );
    }
    if has("consume-multi") {
        target(
            "consume, ack multiple/100: ≥ 95 % of the ceiling".into(),
            pct_of_ceiling("consume-multi"),
            0.95,
            true,
            "%",
        );
    }
    if has("rpc") {
        target(
            "RPC p50 ≤ 1.05x the ceiling's".into(),
            ratio(w("rpc").and_then(|s| s.p50), c("rpc").and_then(|s| s.p50)),
            1.05,
            false,
            "x",
        );
        let best_cpu = best_peer(results, "rpc", |s| s.cpu_per_m, false);
        target(
            format!(
                "RPC client CPU per round trip ≤ 0.6x the best peer's ({})",
                best_cpu.as_ref().map_or("–", |b| b.0.as_str())
            ),
            ratio(w("rpc").and_then(|s| s.cpu_per_m), best_cpu.map(|b| b.1)),
            0.6,
            false,
            "x",
        );
    }
    if has("fanin") {
        let best = best_peer(results, "fanin", |s| s.rate, true);
        target(
            format!(
                "fan-in ≥ 1.5x the best peer ({})",
                best.as_ref().map_or("–", |b| b.0.as_str())
            ),
            ratio(w("fanin").and_then(|s| s.rate), best.map(|b| b.1)),
            1.5,
            true,
            "x",
        );
    }
    if has("idle") {
        let best = best_peer(results, "idle", |s| s.rss_mib, false);
        target(
            format!(
                "idle footprint ≤ 0.8x the best peer's RSS ({})",
                best.as_ref().map_or("–", |b| b.0.as_str())
            ),
            ratio(w("idle").and_then(|s| s.rss_mib), best.map(|b| b.1)),
            0.8,
            false,
            "x",
        );
    }
    format!(
        "\n## Targets (issue 6), this run\n\n| target | warren | verdict |\n|---|--:|---|\n{}\n",
        rows.join("\n")
    )
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The versions of the client crates, from the workspace's Cargo.lock.
fn locked_version(name: &str) -> String {
    let lock = read(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"));
    let needle = format!("name = \"{name}\"\nversion = \"");
    lock.find(&needle)
        .and_then(|i| {
            let rest = &lock[i + needle.len()..];
            Some(rest[..rest.find('"')?].to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

fn machine(url: &AmqpUrl, broker_pid: Option<u32>, block_on: bool) -> String {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .map_or("?".to_owned(), |m| m.trim().to_owned());
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map_or("?".to_owned(), |kb| {
            format!("{:.1} GiB", kb / 1024.0 / 1024.0)
        });
    let broker = match RawConnection::connect(url) {
        Ok(conn) => {
            let p = conn.server_properties();
            let prop = |k: &str| p.get(k).map(wire_value_string).unwrap_or_default();
            let text = format!(
                "{} {} on Erlang {}",
                prop("product"),
                prop("version"),
                prop("platform")
            );
            let _ = conn.close();
            text
        }
        Err(e) => format!("unknown ({e})"),
    };
    format!(
        "- CPU: {model}, {} cores (`nproc`)\n- memory: {mem_gib}\n- kernel: Linux {}\n- broker: {broker} at {}:{}{}, sharing the cores with the clients\n- clients: warren {} ({}), lapin {} (tokio, no TLS), amqprs {} (no TLS); {}; each runner on a tokio multi-thread runtime with one worker per core, the scenario {} (the ceiling: blocking threads)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        read("/proc/sys/kernel/osrelease").trim(),
        url.host,
        url.port,
        broker_pid.map_or(
            " (its process not visible: no broker CPU)".to_owned(),
            |p| format!(" (pid {p})")
        ),
        locked_version("warren-amqp"),
        warren_revision(),
        locked_version("lapin"),
        locked_version("amqprs"),
        command_output("rustc", &["-V"]).unwrap_or_else(|| "rustc ?".to_owned()),
        if block_on {
            "in `block_on` on the main thread (`--block-on`)"
        } else {
            "in a task spawned on the runtime (a client named `NAME:block-on`: in `block_on` \
             on the main thread)"
        },
    )
}

/// The commit the measured warren was built from, and whether the client's sources differed
/// from it.
fn warren_revision() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let Some(commit) = command_output("git", &["-C", root, "rev-parse", "--short", "HEAD"]) else {
        return "commit unknown".to_owned();
    };
    let changed = command_output(
        "git",
        &[
            "-C",
            root,
            "status",
            "--porcelain",
            "--",
            "client",
            "codegen",
            "build.rs",
            "amqp-spec",
            "Cargo.toml",
        ],
    )
    .is_some_and(|s| !s.is_empty());
    if changed {
        format!("commit {commit} with uncommitted changes to the client")
    } else {
        format!("commit {commit}")
    }
}

fn load_average() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds the runners with this program's profile into its target directory.
fn build_runners(exe_dir: &Path) -> Result<()> {
    let Ok(cargo) = std::env::var("CARGO") else {
        eprintln!(
            "compare: not run through cargo; using the runners in {}",
            exe_dir.display()
        );
        return Ok(());
    };
    let target_dir = exe_dir.parent().ok_or("no target directory")?;
    let profile = match exe_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => "release",
    };
    let mut build = Command::new(cargo);
    // What `cargo run` set for this program would look like a changed environment to build
    // scripts that watch it (ring's does), and rebuild them: leave it out.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_by_cargo_run = ["CARGO_PKG_", "CARGO_BIN_", "CARGO_MANIFEST_"]
            .iter()
            .any(|prefix| key.starts_with(prefix))
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&key);
        if set_by_cargo_run {
            build.env_remove(key);
        }
    }
    let status = build
        .args([
            "build",
            "-p",
            "warren-bench",
            "--bins",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()?;
    if !status.success() {
        return Err("building the runners failed".into());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_options(&args) {
        Ok(o) => o,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("compare: {message}\n");
            }
            eprintln!("{}", usage());
            std::process::exit(2);
        }
    };
    if let Err(e) = compare(&options, &args) {
        eprintln!("compare: {e}");
        std::process::exit(1);
    }
}

fn compare(o: &Options, args: &[String]) -> Result<()> {
    let exe = std::env::current_exe()?;
    let exe_dir = exe.parent().ok_or("no directory")?.to_owned();
    if o.build {
        build_runners(&exe_dir)?;
    }
    let url = AmqpUrl::parse(&o.url)?;
    let broker_pid = listener_pid(url.port);
    let cases = cases(o);
    let started = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let load_before = load_average();
    let machine = machine(&url, broker_pid, o.block_on);
    eprintln!(
        "compare: {} scenarios x {} rounds x {} clients; load average {load_before}",
        cases.len(),
        o.rounds,
        o.clients.len()
    );

    let mut results: Results = BTreeMap::new();
    let mut runs: BTreeMap<(&'static str, String), Vec<Run>> = BTreeMap::new();
    let timeout = Duration::from_secs(o.timeout);
    for case in &cases {
        for round in 1..=o.rounds {
            for client in &o.clients {
                if !runs_scenario(client, &case.args) {
                    continue;
                }
                let (runner, block_on) = runner_of(client);
                let bin = exe_dir.join(format!("runner-{runner}"));
                let mut child_args = case.args.clone();
                if let Some(pid) = broker_pid {
                    child_args.extend(["--broker-pid".to_owned(), pid.to_string()]);
                }
                child_args.extend(["--url".to_owned(), o.url.clone()]);
                if o.block_on || block_on {
                    child_args.push("--block-on".to_owned());
                }
                let run = run_child(&bin, &child_args, timeout);
                match &run.report {
                    Ok(r) => eprintln!(
                        "{:>13} round {round} {client:>7}: {:>9.0} msgs/s  cpu {:.2} s  broker {} s  rss {:.1} MiB{}  (wait4: cpu {:.2} s, max rss {:.1} MiB)",
                        case.key,
                        r.msgs_per_s,
                        r.cpu_s(),
                        f(r.broker_cpu_s, 2),
                        r.peak_rss_kb as f64 / 1024.0,
                        r.p50_us.map_or(String::new(), |p| format!(
                            "  p50 {p:.0} µs p99 {:.0} µs",
                            r.p99_us.unwrap_or(0.0)
                        )),
                        run.total_cpu_s,
                        run.max_rss_kb as f64 / 1024.0,
                    ),
                    Err(e) => eprintln!("{:>13} round {round} {client:>7}: FAILED: {e}", case.key),
                }
                runs.entry((case.key, client.clone()))
                    .or_default()
                    .push(run);
                std::thread::sleep(Duration::from_secs_f64(o.pause));
            }
        }
        for client in &o.clients {
            if let Some(r) = runs.get(&(case.key, client.clone())) {
                results.insert((case.key, client.clone()), summarize(r));
            }
        }
    }

    let load_after = load_average();
    let via_cargo = std::env::var_os("CARGO").is_some();
    let command = if via_cargo {
        let release = if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        };
        format!(
            "cargo run{release} -p warren-bench --bin compare --{}",
            args.iter().map(|a| format!(" {a}")).collect::<String>()
        )
    } else {
        format!(
            "{}{}",
            exe.display(),
            args.iter().map(|a| format!(" {a}")).collect::<String>()
        )
    };
    let mut tables = render_tables(&cases, &o.clients, &results, o.rounds);
    tables.push_str(&render_block_on(&cases, &o.clients, &results));
    let mut report = String::new();
    let _ = writeln!(
        report,
        "# Benchmarks\n\nwarren beside lapin and amqprs and the `ceiling` (the least work a client \
         can do, on warren's codec over a plain socket: what this broker on this machine gives \
         any client), in separate processes, interleaved, against the same local broker. \
         Written by `bench/src/bin/compare.rs`; see `bench/README.md` for what each scenario \
         does and how it is measured.\n\n## This run\n\n- date: {started}\n- command: \
         `{command}`\n{machine}- load average (1, 5, 15 min) before: {load_before}; after: \
         {load_after}\n"
    );
    report.push_str(&tables);

    println!("{report}");
    if let Some(path) = &o.output {
        let previous = std::fs::read_to_string(path).unwrap_or_default();
        let notes = match (previous.find(NOTES_START), previous.find(NOTES_END)) {
            (Some(start), Some(end)) if start < end => {
                previous[start..end + NOTES_END.len()].to_owned()
            }
            _ => format!("{NOTES_START}\n## Notes\n\n(none yet)\n{NOTES_END}"),
        };
        std::fs::write(path, format!("{report}\n{notes}\n"))?;
        eprintln!("compare: wrote {}", path.display());
    }
    let failed = results.values().any(|s| !s.failed.is_empty());
    if failed {
        return Err("some runs failed; see the table".into());
    }
    Ok(())
}
