//! The runners' command line: `runner-<client> <scenario> [--option value]...`.

use crate::{AmqpUrl, DEFAULT_URL};

/// What a runner measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Publish `messages` bodies of `size` bytes on one channel, without confirms; done when
    /// a passive `queue.declare` reports them all in the queue.
    Publish,
    /// Publish with confirms, at most `window` unconfirmed; done when every confirm arrived
    /// (each must be an ack).
    Confirm,
    /// Consume a queue pre-filled with `messages`, prefetch `prefetch`, acknowledging each
    /// (`ack_every` 1) or with `multiple` every `ack_every` deliveries.
    Consume,
    /// Request/reply through the broker, one request in flight; a server in the same process
    /// (its own connection, same client library) answers each request.
    Rpc,
    /// `tasks` tasks publishing `messages` in all, sharing one connection (a channel each).
    Fanin,
    /// `consumers` consumers on `channels` channels of one connection, idle for `idle_secs`.
    Idle,
    /// `tasks` tasks publishing `messages` in all with confirms through one warren
    /// `Publisher` of `pool` channels, at most `window` unconfirmed over all of them (warren
    /// only: the other clients ship no such thing).
    Publisher,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 7] = [
        Self::Publish,
        Self::Confirm,
        Self::Consume,
        Self::Rpc,
        Self::Fanin,
        Self::Idle,
        Self::Publisher,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Confirm => "confirm",
            Self::Consume => "consume",
            Self::Rpc => "rpc",
            Self::Fanin => "fanin",
            Self::Idle => "idle",
            Self::Publisher => "publisher",
        }
    }

    /// The scenario with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A runner's parameters. Defaults are the issue's: 200 000 messages of 16 bytes, a confirm
/// window of 1000, prefetch 1000, 10 fan-in tasks, 1000 consumers on 100 channels.
#[derive(Debug, Clone)]
pub struct Params {
    /// What to run.
    pub scenario: Scenario,
    /// Messages (round trips for `rpc`) in the measured interval.
    pub messages: u64,
    /// Body size in bytes.
    pub size: usize,
    /// Most unconfirmed publishes (`confirm`).
    pub window: usize,
    /// `basic.qos` prefetch count (`consume`).
    pub prefetch: u16,
    /// 1: ack each delivery; n > 1: ack with `multiple` every n deliveries (`consume`).
    pub ack_every: u64,
    /// Publishing tasks (`fanin`, `publisher`).
    pub tasks: usize,
    /// Channels of the `Publisher` (`publisher`).
    pub pool: usize,
    /// Consumers (`idle`).
    pub consumers: usize,
    /// Channels they are spread over (`idle`).
    pub channels: usize,
    /// How long the consumers stay idle, in seconds (`idle`).
    pub idle_secs: f64,
    /// Round trips before the measured ones (`rpc`).
    pub warmup: u64,
    /// The broker, from `--url` or `AMQP_URL`.
    pub url: AmqpUrl,
    /// The broker's OS process, whose CPU is measured; found from the listening socket if
    /// not given.
    pub broker_pid: Option<u32>,
    /// Run the client on tokio's current-thread runtime instead of the multi-thread one.
    pub current_thread: bool,
    /// Worker threads of the multi-thread runtime (0: tokio's default, one per core).
    pub worker_threads: usize,
    /// Run the scenario in `block_on` on the main thread, as `#[tokio::main]` runs `main`,
    /// instead of in a task spawned on the runtime's workers (the default).
    pub block_on: bool,
}

impl Params {
    /// Parses the process's arguments; prints usage and exits on a mistake.
    pub fn from_env_args() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match Self::parse(&args) {
            Ok(mut params) => {
                if params.broker_pid.is_none() {
                    params.broker_pid = crate::meter::listener_pid(params.url.port);
                }
                params
            }
            Err(message) => {
                let program = std::env::args().next().unwrap_or_default();
                eprintln!("{program}: {message}\n\n{}", usage());
                std::process::exit(2);
            }
        }
    }

    /// Parses `<scenario> [--option value]...`.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut args = args.iter();
        let scenario = args.next().ok_or("no scenario given")?;
        let scenario = Scenario::from_name(scenario)
            .ok_or_else(|| format!("unknown scenario {scenario:?}"))?;
        let url = std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let mut params = Self {
            scenario,
            messages: 200_000,
            size: 16,
            window: 1000,
            prefetch: 1000,
            ack_every: 1,
            tasks: 10,
            pool: 4,
            consumers: 1000,
            channels: 100,
            idle_secs: 2.0,
            warmup: 1000,
            url: AmqpUrl::parse(&url)?,
            broker_pid: None,
            current_thread: false,
            worker_threads: 0,
            block_on: false,
        };
        while let Some(flag) = args.next() {
            if flag == "--current-thread" {
                params.current_thread = true;
                continue;
            }
            if flag == "--block-on" {
                params.block_on = true;
                continue;
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            fn num<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
                value
                    .replace('_', "")
                    .parse()
                    .map_err(|_| format!("{flag}: bad value {value:?}"))
            }
            match flag.as_str() {
                "--messages" => params.messages = num(flag, value)?,
                "--size" => params.size = num(flag, value)?,
                "--window" => params.window = num(flag, value)?,
                "--prefetch" => params.prefetch = num(flag, value)?,
                "--ack-every" => params.ack_every = num(flag, value)?,
                "--tasks" => params.tasks = num(flag, value)?,
                "--pool" => params.pool = num(flag, value)?,
                "--consumers" => params.consumers = num(flag, value)?,
                "--channels" => params.channels = num(flag, value)?,
                "--idle-secs" => params.idle_secs = num(flag, value)?,
                "--warmup" => params.warmup = num(flag, value)?,
                "--broker-pid" => params.broker_pid = Some(num(flag, value)?),
                "--worker-threads" => params.worker_threads = num(flag, value)?,
                "--url" => params.url = AmqpUrl::parse(value)?,
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        if params.messages == 0 && scenario != Scenario::Idle {
            return Err("--messages must be at least 1".into());
        }
        if params.window == 0 || params.ack_every == 0 || params.tasks == 0 || params.pool == 0 {
            return Err("--window, --ack-every, --tasks and --pool must be at least 1".into());
        }
        if params.channels == 0 || !params.consumers.is_multiple_of(params.channels) {
            return Err("--consumers must be a multiple of --channels".into());
        }
        Ok(params)
    }

    /// The parameters that matter for this scenario, for the report.
    pub fn describe(&self) -> String {
        match self.scenario {
            Scenario::Publish => format!("{} x {} B", self.messages, self.size),
            Scenario::Confirm => format!(
                "{} x {} B, window {}",
                self.messages, self.size, self.window
            ),
            Scenario::Consume => format!(
                "{} x {} B, prefetch {}, {}",
                self.messages,
                self.size,
                self.prefetch,
                if self.ack_every == 1 {
                    "ack each".to_owned()
                } else {
                    format!("ack multiple every {}", self.ack_every)
                }
            ),
            Scenario::Rpc => format!(
                "{} round trips of {} B (after {} warm-up)",
                self.messages, self.size, self.warmup
            ),
            Scenario::Fanin => format!(
                "{} x {} B from {} tasks",
                self.messages, self.size, self.tasks
            ),
            Scenario::Idle => format!(
                "{} consumers on {} channels, idle {} s",
                self.consumers, self.channels, self.idle_secs
            ),
            Scenario::Publisher => format!(
                "{} x {} B from {} tasks through a Publisher of {} channels, window {}",
                self.messages, self.size, self.tasks, self.pool, self.window
            ),
        }
    }
}

/// The usage text.
pub fn usage() -> &'static str {
    "usage: runner-<client> <publish|confirm|consume|rpc|fanin|idle|publisher> [options]
  --messages N        messages (round trips for rpc) measured [200000]
  --size B            body size in bytes [16]
  --window N          confirm, publisher: most unconfirmed publishes [1000]
  --prefetch N        consume: basic.qos prefetch count [1000]
  --ack-every N       consume: 1 = ack each, N > 1 = ack multiple every N [1]
  --tasks N           fanin, publisher: publishing tasks on one connection [10]
  --pool N            publisher (warren only): channels of the Publisher [4]
  --consumers N       idle: consumers [1000]
  --channels N        idle: channels they are spread over [100]
  --idle-secs S       idle: seconds to stay idle [2]
  --warmup N          rpc: round trips before measuring [1000]
  --broker-pid PID    the broker process whose CPU is measured [found from port]
  --current-thread    tokio current-thread runtime (default: multi-thread)
  --block-on          run the scenario in block_on on the main thread (default: in a spawned task)
  --worker-threads N  multi-thread runtime workers [one per core]
  --url URL           broker [$AMQP_URL or amqp://guest:guest@127.0.0.1:5672/%2f]
Prints one JSON line (see warren_bench::Report); exit status 1 if the work was not done."
}
