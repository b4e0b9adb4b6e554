//! The command line: subcommands, their options, and their help.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use warren::wire::FieldValue;

use crate::values::{parse_duration, parse_entry, parse_timestamp};

/// The broker when neither --url nor AMQP_URL says otherwise.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

const TYPED_VALUES: &str = "\
Typed values (--header and --arg):
  KEY=VALUE        VALUE is an integer if it is written as one (42, -7; not 007 or +1),
                   a boolean if it is true or false, and a string otherwise
  KEY:str=VALUE    always a string (zip:str=01234, version:str=42)
  KEY:int=VALUE    a 64-bit signed integer; anything else is an error
  KEY:bool=VALUE   true or false; anything else is an error";

const MAIN_EXAMPLES: &str = "\
Examples:
  warren declare queue orders --durable
  warren publish --routing-key orders --persistent 'order 1'
  warren get orders
  warren consume orders --count 10 --json
  warren perf --producers 1 --consumers 1 --size 16 --duration 10 --confirm 1000
  AMQP_URL=amqp://user:pass@rabbit.example:5672/prod warren purge orders

Exit status: 0 on success, 1 on errors, 2 on usage errors; publish also uses 3 (nacked) and 4
(not routed: no queue took the message), delete uses 5 (it did not exist, without
--if-exists). Errors are one line on stderr; passwords never show. -v and -vv show the client
library's log on stderr (down to debug, trace); RUST_LOG (e.g. RUST_LOG=warren=warn) is the
filter instead when it is set.";

/// A command line tool for RabbitMQ: publish, consume, manage queues and exchanges, and
/// measure throughput and latency.
#[derive(Debug, Parser)]
#[command(name = "warren", version, after_help = MAIN_EXAMPLES)]
pub struct Cli {
    /// The broker: amqp://user:password@host:port/vhost (or amqps:// for TLS). The vhost is
    /// URL-encoded: %2f is the default vhost "/"
    #[arg(
        long,
        global = true,
        env = "AMQP_URL",
        hide_env_values = true,
        default_value = DEFAULT_URL,
        value_name = "URL",
        display_order = 1000
    )]
    pub url: String,

    /// Show the client library's log on stderr: -v down to debug (warnings, connections,
    /// handshakes, closes), -vv trace. RUST_LOG, if set, is the filter instead
    #[arg(short, long, global = true, action = clap::ArgAction::Count, display_order = 1001)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish one message, with a publisher confirm; an unroutable one is an error
    Publish(PublishArgs),
    /// Consume messages from a queue and print them or write them to files
    Consume(ConsumeArgs),
    /// Fetch messages from a queue one at a time (basic.get)
    Get(GetArgs),
    /// Declare a queue or an exchange
    #[command(subcommand)]
    Declare(Declare),
    /// Bind a queue or an exchange to an exchange
    #[command(subcommand)]
    Bind(Binding),
    /// Remove a binding made with `warren bind`
    #[command(subcommand)]
    Unbind(Unbinding),
    /// Remove every ready message from a queue
    Purge(PurgeArgs),
    /// Delete a queue or an exchange
    #[command(subcommand)]
    Delete(Delete),
    /// Measure throughput and latency with producers and consumers, like RabbitMQ's PerfTest
    Perf(PerfArgs),
}

const PUBLISH_EXAMPLES: &str = "\
Examples:
  warren publish -k orders 'hello'                      # to queue orders, default exchange
  warren publish -e logs -k kern.critical --file dump.bin
  echo '{\"id\": 1}' | warren publish -k orders --content-type application/json
  warren publish -k orders --persistent --header tenant=acme --header attempt=1 'retry me'
  warren publish -e amq.direct -k nowhere 'x'                   # not routed: exit status 4
  warren publish -e amq.fanout --no-mandatory 'maybe nobody listens'

The channel is in confirm mode and the message is mandatory: warren waits for the broker's
answer and exits with status 0 when a queue took it and the broker acked it, 3 when the broker
nacked it, and 4 when no queue took it (\"not routed\": the broker returned it). With
--no-mandatory the broker drops an unroutable message silently and acks it, and warren exits
with status 0.";

#[derive(Debug, Args)]
#[command(
    after_help = PUBLISH_EXAMPLES,
    after_long_help = format!("{PUBLISH_EXAMPLES}\n\n{TYPED_VALUES}")
)]
pub struct PublishArgs {
    /// The message body; without it, --file, or else standard input
    #[arg(conflicts_with = "file")]
    pub body: Option<String>,

    /// Read the body from FILE ("-" for standard input)
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// The exchange to publish to; "" (the default) is the default exchange, which routes to
    /// the queue named by the routing key
    #[arg(short, long, default_value = "", hide_default_value = true)]
    pub exchange: String,

    /// The routing key (with the default exchange: the queue name)
    #[arg(short = 'k', long, default_value = "", hide_default_value = true)]
    pub routing_key: String,

    /// Let the broker drop the message silently if no queue takes it (publish without the
    /// mandatory flag): exit status 0 either way
    #[arg(long)]
    pub no_mandatory: bool,

    /// The default, kept for scripts written when it was not: a message no queue takes is
    /// returned, exit status 4
    #[arg(long, hide = true, conflicts_with = "no_mandatory")]
    pub mandatory: bool,

    #[command(flatten)]
    pub properties: PropertyArgs,
}

/// The message properties, one flag each.
#[derive(Debug, Args)]
#[command(next_help_heading = "Message properties")]
pub struct PropertyArgs {
    /// MIME type of the body, e.g. text/plain or application/json
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,

    /// Encoding of the body, e.g. gzip
    #[arg(long, value_name = "ENCODING")]
    pub content_encoding: Option<String>,

    /// 1: transient, 2: persistent (written to disk by durable queues)
    #[arg(
        long,
        value_name = "MODE",
        value_parser = clap::value_parser!(u8).range(1..=2),
        conflicts_with = "persistent"
    )]
    pub delivery_mode: Option<u8>,

    /// Same as --delivery-mode 2
    #[arg(long)]
    pub persistent: bool,

    /// Priority, for queues declared with x-max-priority
    #[arg(long, value_name = "0-255")]
    pub priority: Option<u8>,

    /// Correlation id, e.g. to match an RPC reply to its request
    #[arg(long, value_name = "ID")]
    pub correlation_id: Option<String>,

    /// The queue replies should go to (amq.rabbitmq.reply-to for direct reply-to)
    #[arg(long, value_name = "QUEUE")]
    pub reply_to: Option<String>,

    /// Time to live of the message, in milliseconds
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64))]
    pub expiration: Option<u64>,

    /// Application message id
    #[arg(long, value_name = "ID")]
    pub message_id: Option<String>,

    /// Creation time: seconds since the Unix epoch, or "now"
    #[arg(long, value_name = "SECONDS|now", value_parser = parse_timestamp)]
    pub timestamp: Option<u64>,

    /// Application message type
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,

    /// Publishing user; RabbitMQ checks that it is the connection's user
    #[arg(long, value_name = "USER")]
    pub user_id: Option<String>,

    /// Publishing application
    #[arg(long, value_name = "APP")]
    pub app_id: Option<String>,

    /// A header, repeatable; see "Typed values" in --help for how VALUE is typed
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE", value_parser = parse_entry)]
    pub headers: Vec<(String, FieldValue)>,
}

/// How deliveries are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AckMode {
    /// warren acknowledges each message once it is printed or written
    Manual,
    /// the broker considers a message acknowledged when it sends it (basic.consume no-ack)
    Auto,
}

const CONSUME_EXAMPLES: &str = "\
Examples:
  warren consume orders                          # until Ctrl-C
  warren consume orders --count 10 --json        # ten messages as JSON lines
  warren consume orders -o ./bodies --count 100  # bodies to ./bodies/000001.bin, ...
  warren consume orders --idle-timeout 5s        # until the queue stays empty for 5 s

With --ack manual (the default) a message is acknowledged only after it was printed or
written, so an interrupted warren loses nothing: the broker delivers the rest again. With
--ack auto the broker does not wait for acknowledgements and ignores --prefetch; messages it
sent that warren did not handle before stopping (after --count, Ctrl-C) are lost.

When the connection is lost (a broker restart, a network failure), warren reconnects, consumes
again and says so on stderr; a message it printed but could not acknowledge before the loss is
delivered again. --no-recover makes the loss an error instead.";

#[derive(Debug, Args)]
#[command(after_help = CONSUME_EXAMPLES)]
pub struct ConsumeArgs {
    /// The queue to consume from
    pub queue: String,

    /// Stop after N messages
    #[arg(short = 'n', long, value_name = "N")]
    pub count: Option<u64>,

    /// Who acknowledges
    #[arg(long, value_enum, default_value_t = AckMode::Manual)]
    pub ack: AckMode,

    /// Same as --ack auto
    #[arg(long, conflicts_with = "ack")]
    pub no_ack: bool,

    /// Messages the broker may send ahead of acknowledgements (basic.qos; 0: no limit). With
    /// --count N, at most N
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub prefetch: u16,

    /// Stop after this long without a message (e.g. 5, 5s, 500ms, 1m)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Exit with an error when the connection is lost, instead of reconnecting and consuming
    /// on (by default warren recovers the connection and says so on stderr)
    #[arg(long)]
    pub no_recover: bool,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// Where messages go.
#[derive(Debug, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Print one JSON object per line: routing information, properties, headers, and the body
    /// as "body" (UTF-8 text) or "body_base64"
    #[arg(long, conflicts_with = "output_dir")]
    pub json: bool,

    /// Write each body to DIR/NNNNNN.bin (the next free number) and print one line per message
    #[arg(short, long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

const GET_EXAMPLES: &str = "\
Examples:
  warren get orders                   # take one message
  warren get orders --count 5 --json  # take up to five
  warren get orders --requeue         # look at the first message and leave it in the queue

Prints \"queue ... is empty\" on stderr, with exit status 0, when there is nothing to get.";

#[derive(Debug, Args)]
#[command(after_help = GET_EXAMPLES)]
pub struct GetArgs {
    /// The queue to get from
    pub queue: String,

    /// Get up to N messages
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1)]
    pub count: u64,

    /// Put the messages back (nack with requeue) after printing them: look without taking
    #[arg(long, conflicts_with = "no_ack")]
    pub requeue: bool,

    /// Get in no-ack mode: the broker forgets each message as it sends it
    #[arg(long)]
    pub no_ack: bool,

    #[command(flatten)]
    pub output: OutputArgs,
}

const DECLARE_QUEUE_EXAMPLES: &str = "\
Examples:
  warren declare queue orders --durable
  warren declare queue jobs --type quorum --durable
  warren declare queue events --arg x-max-length=10000 --arg x-overflow=reject-publish
  warren declare queue orders --passive      # does it exist? how many messages?";

const DECLARE_EXCHANGE_EXAMPLES: &str = "\
Examples:
  warren declare exchange logs --type fanout
  warren declare exchange events --type topic --durable
  warren declare exchange main --arg alternate-exchange=unrouted";

// `-h` shows the examples; `--help` shows them and how --arg values are typed.
#[derive(Debug, Subcommand)]
pub enum Declare {
    /// Declare a queue; an empty name ("") lets the broker choose one, which is printed
    #[command(
        after_help = DECLARE_QUEUE_EXAMPLES,
        after_long_help = format!("{DECLARE_QUEUE_EXAMPLES}\n\n{TYPED_VALUES}")
    )]
    Queue(DeclareQueue),
    /// Declare an exchange
    #[command(
        after_help = DECLARE_EXCHANGE_EXAMPLES,
        after_long_help = format!("{DECLARE_EXCHANGE_EXAMPLES}\n\n{TYPED_VALUES}")
    )]
    Exchange(DeclareExchange),
}

#[derive(Debug, Args)]
pub struct DeclareQueue {
    /// The queue name ("" for a server-named queue)
    pub name: String,

    /// Keep the queue across broker restarts
    #[arg(long)]
    pub durable: bool,

    /// Delete the queue when its last consumer goes away
    #[arg(long)]
    pub auto_delete: bool,

    /// Only this connection may use the queue: it is deleted when warren exits
    #[arg(long)]
    pub exclusive: bool,

    /// Only check that the queue exists and show its counts; create nothing
    #[arg(long)]
    pub passive: bool,

    /// The queue type: classic, quorum or stream (x-queue-type); quorum and stream queues
    /// must be --durable
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub kind: Option<String>,

    /// A declaration argument, repeatable (x-message-ttl=60000, x-dead-letter-exchange=dlx)
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_entry)]
    pub arguments: Vec<(String, FieldValue)>,
}

#[derive(Debug, Args)]
pub struct DeclareExchange {
    /// The exchange name
    pub name: String,

    /// The type: direct, fanout, topic, headers, or a plugin's (x-consistent-hash, ...)
    #[arg(
        short = 't',
        long = "type",
        value_name = "TYPE",
        default_value = "direct"
    )]
    pub kind: String,

    /// Keep the exchange across broker restarts
    #[arg(long)]
    pub durable: bool,

    /// Delete the exchange when its last binding is removed
    #[arg(long)]
    pub auto_delete: bool,

    /// Refuse publishes from clients: only other exchanges feed it
    #[arg(long)]
    pub internal: bool,

    /// Only check that the exchange exists; create nothing
    #[arg(long)]
    pub passive: bool,

    /// A declaration argument, repeatable (alternate-exchange=unrouted)
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_entry)]
    pub arguments: Vec<(String, FieldValue)>,
}

const BIND_QUEUE_EXAMPLES: &str = "\
Examples:
  warren bind queue errors logs --routing-key '*.error'
  warren bind queue matched headers-x --arg x-match=all --arg format=pdf";

const BIND_EXCHANGE_EXAMPLES: &str = "\
Examples:
  warren bind exchange audit events --routing-key '#'   # audit gets what events routes";

#[derive(Debug, Subcommand)]
pub enum Binding {
    /// A queue and the exchange it receives from
    #[command(
        after_help = BIND_QUEUE_EXAMPLES,
        after_long_help = format!("{BIND_QUEUE_EXAMPLES}\n\n{TYPED_VALUES}")
    )]
    Queue(BindQueue),
    /// Two exchanges: messages routed by SOURCE also go through DESTINATION (exchange.bind)
    #[command(
        after_help = BIND_EXCHANGE_EXAMPLES,
        after_long_help = format!("{BIND_EXCHANGE_EXAMPLES}\n\n{TYPED_VALUES}")
    )]
    Exchange(BindExchange),
}

const UNBIND_QUEUE_EXAMPLES: &str = "\
Examples:
  warren unbind queue errors logs --routing-key '*.error'
  warren unbind queue matched headers-x --arg x-match=all --arg format=pdf

The routing key and arguments must be those of the binding. Removing a binding that does not
exist succeeds.";

const UNBIND_EXCHANGE_EXAMPLES: &str = "\
Examples:
  warren unbind exchange audit events --routing-key '#'

The routing key and arguments must be those of the binding. Removing a binding that does not
exist succeeds.";

/// `warren unbind`: the arguments of `bind`, with help of its own.
#[derive(Debug, Subcommand)]
pub enum Unbinding {
    /// Remove the binding of a queue to an exchange (queue.unbind)
    #[command(
        after_help = UNBIND_QUEUE_EXAMPLES,
        after_long_help = format!("{UNBIND_QUEUE_EXAMPLES}\n\n{TYPED_VALUES}")
    )]
    Queue(BindQueue),
    /// Remove the binding of exchange DESTINATION to exchange SOURCE (exchange.unbind)
    #[command(
        after_help = UNBIND_EXCHANGE_EXAMPLES,
        after_long_help = format!("{UNBIND_EXCHANGE_EXAMPLES}\n\n{TYPED_VALUES}")
    )]
    Exchange(BindExchange),
}

impl From<Unbinding> for Binding {
    fn from(unbinding: Unbinding) -> Self {
        match unbinding {
            Unbinding::Queue(queue) => Binding::Queue(queue),
            Unbinding::Exchange(exchange) => Binding::Exchange(exchange),
        }
    }
}

#[derive(Debug, Args)]
pub struct BindQueue {
    /// The queue
    pub queue: String,

    /// The exchange messages come from
    pub exchange: String,

    /// The binding key (a pattern for topic exchanges)
    #[arg(short = 'k', long, default_value = "", hide_default_value = true)]
    pub routing_key: String,

    /// A binding argument, repeatable (for headers exchanges: x-match and the headers)
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_entry)]
    pub arguments: Vec<(String, FieldValue)>,
}

#[derive(Debug, Args)]
pub struct BindExchange {
    /// The exchange that receives
    pub destination: String,

    /// The exchange messages come from
    pub source: String,

    /// The binding key
    #[arg(short = 'k', long, default_value = "", hide_default_value = true)]
    pub routing_key: String,

    /// A binding argument, repeatable
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_entry)]
    pub arguments: Vec<(String, FieldValue)>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  warren purge orders

Messages delivered and not yet acknowledged stay.")]
pub struct PurgeArgs {
    /// The queue
    pub queue: String,
}

#[derive(Debug, Subcommand)]
pub enum Delete {
    /// Delete a queue and its messages
    #[command(after_help = "\
Examples:
  warren delete queue orders
  warren delete queue orders --if-empty --if-unused
  warren delete queue orders --if-exists      # no error if there is no such queue

A queue that does not exist is reported (\"did not exist\") with exit status 5, unless
--if-exists is given.")]
    Queue(DeleteQueue),
    /// Delete an exchange and its bindings
    #[command(after_help = "\
Examples:
  warren delete exchange logs
  warren delete exchange logs --if-exists

An exchange that does not exist is reported (\"did not exist\") with exit status 5, unless
--if-exists is given.")]
    Exchange(DeleteExchange),
}

#[derive(Debug, Args)]
pub struct DeleteQueue {
    /// The queue
    pub name: String,

    /// Only if it has no consumers (the broker refuses otherwise)
    #[arg(long)]
    pub if_unused: bool,

    /// Only if it holds no messages (the broker refuses otherwise)
    #[arg(long)]
    pub if_empty: bool,

    /// Succeed quietly if there is no such queue
    #[arg(long)]
    pub if_exists: bool,
}

#[derive(Debug, Args)]
pub struct DeleteExchange {
    /// The exchange
    pub name: String,

    /// Only if it has no bindings (the broker refuses otherwise)
    #[arg(long)]
    pub if_unused: bool,

    /// Succeed quietly if there is no such exchange
    #[arg(long)]
    pub if_exists: bool,
}

const PERF_EXAMPLES: &str = "\
Examples:
  warren perf --producers 1 --consumers 1 --size 16 --duration 10 --confirm 1000
  warren perf -x 2 -y 2 -s 1000 --rate 5000 --count 100000      # 2 x 5000 msg/s, 100000 each
  warren perf --consumers 0 --queue backlog --persistent --duration 30s
  warren perf --producers 0 --queue backlog --prefetch 500 --multiple-ack 100

  warren perf --uri amqp://u:p@rabbit-1 --uri amqp://u:p@rabbit-2 --uri amqp://u:p@rabbit-3 \
      --queue-type quorum --persistent --confirm 100 --duration 30 --json   # a loss check

Each producer and consumer has its own connection. Producers publish to the default exchange
with the queue as routing key; the send time travels in the header x-warren-sent (ns since the
Unix epoch), so end-to-end latency is measured for messages of warren perf on the same host.
A progress line on stderr shows the rates of the last second; the summary on stdout shows
totals, rates, and latency percentiles (p50, p95, p99, max), or, with --json, the same as one
JSON object on one line. Without --duration or --count, perf runs until Ctrl-C; Ctrl-C (or
SIGTERM) always stops it and prints the summary.

perf is also a loss checker: every message carries its producer (x-warren-producer) and a
sequence number (x-warren-seq), and the summary counts what was lost (confirmed by the broker,
never received), duplicated (received more than once) and reordered (received after a later
message of the same producer, per consumer), and the longest pauses in publishing and in
consuming. Connections recover when lost (--no-recover: stop with the error instead), moving
to another node given with --uri, and say so on stderr; publishes whose outcome the loss made
unknown are counted as such, never as confirmed. The exit status is 6 when anything confirmed
was lost.";

#[derive(Debug, Args)]
#[command(after_help = PERF_EXAMPLES)]
pub struct PerfArgs {
    /// Producers, each on its own connection
    #[arg(short = 'x', long, value_name = "N", default_value_t = 1)]
    pub producers: u32,

    /// Consumers, each on its own connection
    #[arg(short = 'y', long, value_name = "N", default_value_t = 1)]
    pub consumers: u32,

    /// Body size in bytes
    #[arg(short = 's', long, value_name = "BYTES", default_value_t = 12)]
    pub size: usize,

    /// Limit of each producer, in messages per second, at least 0.001 (0: as fast as possible)
    #[arg(short = 'r', long, value_name = "MSGS/S", default_value_t = 0.0)]
    pub rate: f64,

    /// Use publisher confirms, with at most N unconfirmed messages per producer
    #[arg(short = 'c', long, value_name = "N")]
    pub confirm: Option<u32>,

    /// Publish for this long (10 = 10s; also 500ms, 2m)
    #[arg(
        short = 'z',
        long,
        value_name = "DURATION",
        value_parser = parse_duration,
        conflicts_with = "count"
    )]
    pub duration: Option<Duration>,

    /// Messages each producer publishes (with --producers 0: messages to receive in all)
    #[arg(short = 'C', long, value_name = "N")]
    pub count: Option<u64>,

    /// The queue: declared if missing, kept, not purged. By default a new queue, deleted at
    /// the end
    #[arg(short = 'u', long, value_name = "NAME")]
    pub queue: Option<String>,

    /// Consume in no-ack mode: the broker does not wait for acknowledgements
    #[arg(short = 'a', long)]
    pub autoack: bool,

    /// Acknowledge every N messages with one multiple ack (without --autoack)
    #[arg(short = 'A', long, value_name = "N", default_value_t = 1)]
    pub multiple_ack: u32,

    /// Prefetch of each consumer (basic.qos; 0: no limit)
    #[arg(short = 'q', long, value_name = "N", default_value_t = 0)]
    pub prefetch: u16,

    /// Publish persistent messages (delivery mode 2)
    #[arg(long)]
    pub persistent: bool,

    /// When publishing stops, how long confirms and consumers may take to catch up
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub drain_timeout: Duration,

    /// Print the final report as one JSON object (counts, rates, latencies in ms, pauses,
    /// loss) instead of text
    #[arg(long)]
    pub json: bool,

    /// A node of the broker (an amqp:// or amqps:// URI); repeat it for each node of a
    /// cluster: connections are spread over them and move to another when theirs fails. The
    /// URIs share credentials and vhost. Without it, --url
    #[arg(long = "uri", value_name = "URI")]
    pub uris: Vec<String>,

    /// The type of the queue perf declares: classic, quorum (replicated) or stream; quorum
    /// and stream queues are durable
    #[arg(long, value_enum, default_value_t = QueueType::Classic)]
    pub queue_type: QueueType,

    /// Stop with the error when a connection is lost, instead of recovering it
    #[arg(long)]
    pub no_recover: bool,
}

/// The type of a queue (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueType {
    /// A classic queue, on one node.
    Classic,
    /// A quorum queue, replicated with Raft.
    Quorum,
    /// A stream: an append-only log consumers read from an offset.
    Stream,
}

impl QueueType {
    /// The `x-queue-type` argument's value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
            Self::Stream => "stream",
        }
    }
}
