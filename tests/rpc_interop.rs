//! `warren::rpc` against the RPC programs of RabbitMQ's tutorial 6 written with pika, the
//! Python client: a warren `RpcClient` calling a pika server, and pika clients (with their own
//! callback queue, and with direct reply-to) calling a warren `RpcServer`.
//!
//! The set-up installs pika with `python3 -m pip install pika`, as the tutorial does. Without
//! python3, or when pika cannot be installed (no network), each test prints
//! `SKIPPED pika: <test>: <reason>` and passes, unless `WARREN_REQUIRE_PIKA=1` (CI).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use futures_util::future::join_all;
use warren::Connection;
use warren::rpc::{RpcCallOptions, RpcClient, RpcServer, RpcServerOptions};

/// A pika RPC server in the manner of tutorial 6's `rpc_server.py`: answers `count` requests
/// on `queue` with fib(n), replying to `reply_to` with the request's `correlation_id`, acking
/// after replying; prints `ready` once it consumes.
const PIKA_SERVER: &str = r#"
import sys, pika
url, queue, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.queue_declare(queue=queue)
channel.basic_qos(prefetch_count=1)
answered = 0
def on_request(ch, method, props, body):
    global answered
    n = int(body)
    ch.basic_publish(exchange='', routing_key=props.reply_to,
                     properties=pika.BasicProperties(correlation_id=props.correlation_id),
                     body=str(fib(n)))
    ch.basic_ack(delivery_tag=method.delivery_tag)
    answered += 1
    if answered == count:
        ch.stop_consuming()
channel.basic_consume(queue=queue, on_message_callback=on_request)
print('ready', flush=True)
channel.start_consuming()
connection.close()
print('answered', answered, flush=True)
"#;

/// A pika RPC client in the manner of tutorial 6's `rpc_client.py`: calls fib(n) for each
/// argument on `queue`, with its own exclusive callback queue or (`direct`) with direct
/// reply-to, and prints `fib(n) = x` per call.
const PIKA_CLIENT: &str = r#"
import sys, uuid, pika
url, queue, mode = sys.argv[1], sys.argv[2], sys.argv[3]
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
if mode == 'direct':
    callback_queue = 'amq.rabbitmq.reply-to'
else:
    callback_queue = channel.queue_declare(queue='', exclusive=True).method.queue
replies = {}
def on_response(ch, method, props, body):
    replies[props.correlation_id] = body
channel.basic_consume(queue=callback_queue, on_message_callback=on_response, auto_ack=True)
for n in sys.argv[4:]:
    corr_id = str(uuid.uuid4())
    channel.basic_publish(exchange='', routing_key=queue,
                          properties=pika.BasicProperties(reply_to=callback_queue, correlation_id=corr_id),
                          body=n)
    deadline = 200
    while corr_id not in replies and deadline > 0:
        connection.process_data_events(time_limit=0.1)
        deadline -= 1
    print('fib(%s) = %s' % (n, replies[corr_id].decode() if corr_id in replies else 'TIMEOUT'), flush=True)
connection.close()
"#;

/// Whether `python3` can import pika, installing it first if it cannot; the reason when not.
fn pika() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let imports = || {
                Command::new("python3")
                    .args(["-c", "import pika"])
                    .output()
                    .map(|o| o.status.success())
            };
            match imports() {
                Err(e) => return Err(format!("python3 cannot be run: {e}")),
                Ok(true) => return Ok(()),
                Ok(false) => {}
            }
            let install = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "pika"])
                .output()
                .map_err(|e| format!("python3 -m pip cannot be run: {e}"))?;
            if !install.status.success() || !imports().unwrap_or(false) {
                return Err(format!(
                    "pika is not installed and `python3 -m pip install pika` failed: {}",
                    String::from_utf8_lossy(&install.stderr).trim()
                ));
            }
            Ok(())
        })
        .clone()
}

/// Skips the test (see the module documentation) unless pika is there.
fn need_pika() -> bool {
    match pika() {
        Ok(()) => true,
        Err(reason) => {
            skip("pika", "WARREN_REQUIRE_PIKA", &reason);
            false
        }
    }
}

/// Runs a Python program with `args`; kills it when dropped.
struct Python {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Python {
    fn start(program: &str, args: &[&str]) -> Self {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting python3");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Self { child, stdout }
    }

    /// The next line it prints (without the newline); `None` when it exits.
    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end().to_owned()),
        }
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `process`'s lines on a blocking thread, within [`STEP`] each.
async fn lines(mut process: Python, n: usize) -> (Python, Vec<String>) {
    let read = tokio::task::spawn_blocking(move || {
        let lines: Vec<String> = (0..n).map_while(|_| process.line()).collect();
        (process, lines)
    });
    within("the Python program's output", read)
        .await
        .expect("reading the Python program's output")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warren_client_calls_a_pika_server() {
    if !need_pika() {
        return;
    }
    run(async {
        let mut cleanup = Cleanup::new();
        let queue = cleanup.queue(unique("rpc-pika-server"));
        let url = broker_url();
        let server = Python::start(PIKA_SERVER, &[&url, &queue, "5"]);
        let (server, ready) = lines(server, 1).await;
        assert_eq!(ready, ["ready"], "the pika server did not start");

        let connection = connect().await;
        let client = within("RpcClient::new", RpcClient::new(&connection))
            .await
            .expect("RpcClient");
        // Five calls at once; the pika server answers one at a time (prefetch 1).
        let numbers = [10u64, 20, 1, 0, 25];
        let calls = numbers.map(|n| client.call(&queue, n.to_string(), RpcCallOptions::default()));
        let replies = within("calls to the pika server", join_all(calls)).await;
        let expected = ["55", "6765", "1", "0", "75025"];
        for ((n, reply), fib) in numbers.iter().zip(replies).zip(expected) {
            let reply = reply.unwrap_or_else(|e| panic!("fib({n}) from pika: {e}"));
            assert_eq!(String::from_utf8_lossy(&reply.body), fib, "fib({n})");
        }
        assert_eq!(client.late_replies(), 0);
        let (_, done) = lines(server, 1).await;
        assert_eq!(done, ["answered 5"]);
        connection.close().await.expect("closing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pika_clients_call_a_warren_server() {
    if !need_pika() {
        return;
    }
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let queue = cleanup.queue(unique("rpc-pika-client"));
        let channel = open(&connection).await;
        declare_queue(&channel, &queue).await;
        let server = serve_fib(&connection, &queue).await;

        let url = broker_url();
        for mode in ["callback-queue", "direct"] {
            let client = Python::start(PIKA_CLIENT, &[&url, &queue, mode, "10", "20", "30"]);
            let (_, printed) = lines(client, 3).await;
            assert_eq!(
                printed,
                ["fib(10) = 55", "fib(20) = 6765", "fib(30) = 832040"],
                "pika client with {mode}"
            );
        }
        server.shutdown().await.expect("shutting the server down");
        connection.close().await.expect("closing");
    })
    .await;
}

/// A warren server answering fib(n).
async fn serve_fib(connection: &Connection, queue: &str) -> RpcServer {
    fn fib(n: u64) -> u64 {
        if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
    }
    let server = RpcServer::serve(
        connection,
        queue,
        RpcServerOptions::default(),
        |request| async move {
            let n: u64 = std::str::from_utf8(&request.body)
                .map_err(|e| e.to_string())?
                .parse()
                .map_err(|e: std::num::ParseIntError| e.to_string())?;
            let answer = tokio::task::spawn_blocking(move || fib(n))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(answer.to_string())
        },
    );
    within_for(Duration::from_secs(20), "RpcServer::serve", server)
        .await
        .expect("starting the RPC server")
}
