//! [`ExtraNode`]: a standalone RabbitMQ node of a test's own, to crash, freeze and restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use warren::{Connection, ConnectionOptions};

use super::{Cmd, installed, pids_of_named_connections, repo_path, skip};

/// How long [`ExtraNode::await_amqp`] waits by default for the node to serve AMQP.
pub const SERVE_TIMEOUT: Duration = Duration::from_secs(60);

/// A RabbitMQ node started with `scripts/rabbitmq-node.sh` beside the default node, on a name
/// and AMQP port of the test's choosing (helpers and tests each have their own port range: see
/// the team's allocation). Dropping it stops the node and removes its files
/// (`/tmp/rmq-extra/NAME`), after a `SIGCONT` in case the test left it frozen.
///
/// Every method fails the test, with the command's output, if its command fails.
#[derive(Debug)]
pub struct ExtraNode {
    name: String,
    port: u16,
    node: String,
    script: PathBuf,
}

impl ExtraNode {
    /// Starts a fresh node `name` on AMQP port `port` (a node left running under that name by
    /// an earlier run is stopped and wiped first) and waits until it has booted: 6-7 s here.
    ///
    /// Returns `None` after printing `SKIPPED: …` when `rabbitmq-server` is not installed,
    /// unless `WARREN_REQUIRE_EXTRA_NODES` is set: then the test fails.
    pub async fn start(name: &str, port: u16) -> Option<Self> {
        if !installed("rabbitmq-server") {
            skip(
                "WARREN_REQUIRE_EXTRA_NODES",
                "rabbitmq-server is not installed: cannot start a node of our own",
            );
            return None;
        }
        let host = Cmd::new("hostname", &["-s"]).run().await;
        let node = Self {
            name: name.to_owned(),
            port,
            node: format!("{name}@{}", host.trim()),
            script: repo_path("scripts/rabbitmq-node.sh"),
        };
        node.script("stop").await;
        node.script("start").await;
        node.script("wait").await;
        Some(node)
    }

    /// The short name (`NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full node name, as `rabbitmqctl -n` takes it (`NAME@HOST`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The AMQP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The AMQP address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Connection options for the node (guest/guest, vhost `/`).
    pub fn options(&self) -> ConnectionOptions {
        self.uri().parse().expect("the node's URI parses")
    }

    /// Runs `scripts/rabbitmq-node.sh ACTION NAME PORT`.
    async fn script(&self, action: &str) -> String {
        let script = self.script.to_string_lossy();
        Cmd::new(&script, &[action, &self.name, &self.port.to_string()])
            .run()
            .await
    }

    /// The OS pid of the node's `beam.smp`.
    pub async fn pid(&self) -> u32 {
        let pid = self.script("pid").await;
        pid.trim()
            .parse()
            .unwrap_or_else(|e| panic!("rabbitmq-node.sh pid {}: {pid:?}: {e}", self.name))
    }

    async fn signal(&self, signal: &str) {
        let pid = self.pid().await.to_string();
        Cmd::new("kill", &[signal, &pid]).run().await;
    }

    /// `kill -9` of the node; returns once the process is gone. Its files stay, for
    /// [`ExtraNode::restart_after_kill`].
    pub async fn kill9(&self) {
        self.script("kill").await;
    }

    /// Freezes the node (`SIGSTOP` to its `beam.smp`): its sockets stay open and silent, a
    /// hung broker. [`ExtraNode::sigcont`] resumes it.
    pub async fn sigstop(&self) {
        self.signal("-STOP").await;
    }

    /// Resumes a node frozen by [`ExtraNode::sigstop`].
    pub async fn sigcont(&self) {
        self.signal("-CONT").await;
    }

    /// `rabbitmqctl stop_app`: the broker application stops (every connection is closed, the
    /// AMQP port refuses), the Erlang node stays up.
    pub async fn stop_app(&self) {
        self.rabbitmqctl(&["stop_app"]).await;
    }

    /// `rabbitmqctl start_app`, then waits until the node serves AMQP again.
    pub async fn start_app(&self) {
        self.rabbitmqctl(&["start_app"]).await;
        self.await_amqp(SERVE_TIMEOUT).await;
    }

    /// Starts the node again from its files after [`ExtraNode::kill9`] (killing it first if it
    /// still runs), and waits until it serves AMQP: 6-7 s here. Durable queues and persistent
    /// messages survive; users and vhosts made by the test too.
    pub async fn restart_after_kill(&self) {
        if self.script_status().await {
            self.kill9().await;
        }
        self.script("start").await;
        self.script("wait").await;
        self.await_amqp(SERVE_TIMEOUT).await;
    }

    /// Whether the node's process runs.
    async fn script_status(&self) -> bool {
        let script = self.script.to_string_lossy();
        Cmd::new(&script, &["status", &self.name, &self.port.to_string()])
            .output()
            .await
            .is_ok()
    }

    /// Waits until a connection to the node opens (and closes it), within `limit`.
    pub async fn await_amqp(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            let options = self
                .options()
                .connection_timeout(Duration::from_secs(5))
                .connection_name("warren-faults-probe");
            match Connection::connect_with(options).await {
                Ok(connection) => {
                    let _ = connection.close().await;
                    return;
                }
                Err(e) if started.elapsed() > limit => {
                    panic!(
                        "{} does not serve AMQP on port {} after {limit:?}: {e}",
                        self.node, self.port
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Runs `rabbitmqctl -n NODE ARGS…` and returns its standard output.
    pub async fn rabbitmqctl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.node];
        all.extend_from_slice(args);
        Cmd::new("rabbitmqctl", &all).run().await
    }

    /// Evaluates an Erlang expression on the node (`rabbitmqctl eval`); its printed result.
    pub async fn eval(&self, expression: &str) -> String {
        self.rabbitmqctl(&["eval", expression]).await
    }

    /// The pids (as rabbitmqctl prints them) of the node's connections whose client-provided
    /// `connection_name` is `connection_name`.
    pub async fn connection_pids(&self, connection_name: &str) -> Vec<String> {
        let list = self
            .rabbitmqctl(&[
                "list_connections",
                "-q",
                "--no-table-headers",
                "pid",
                "client_properties",
            ])
            .await;
        pids_of_named_connections(&list, connection_name)
    }

    /// Closes every connection whose `connection_name` is `connection_name`
    /// (`rabbitmqctl close_connection PID REASON`): the broker sends each a
    /// `connection.close` 320 CONNECTION_FORCED with `reason`. Returns how many it closed.
    pub async fn close_connections(&self, connection_name: &str, reason: &str) -> usize {
        let pids = self.connection_pids(connection_name).await;
        for pid in &pids {
            self.rabbitmqctl(&["close_connection", pid, reason]).await;
        }
        pids.len()
    }

    /// Closes, in one `rabbitmqctl eval` (half a second, where a list and a close per
    /// connection take a second or more), every connection whose `connection_name` is one of
    /// `names`, as [`ExtraNode::close_connections`] does. Returns how many it closed.
    pub async fn close_named(&self, names: &[&str], reason: &str) -> usize {
        let quote = |text: &str| text.replace('\\', "\\\\").replace('"', "\\\"");
        let names: Vec<String> = names
            .iter()
            .map(|name| format!("<<\"{}\">>", quote(name)))
            .collect();
        let expression = format!(
            "Names = [{names}], \
             Named = fun(P) -> \
                 case catch rabbit_networking:connection_info(P, [client_properties]) of \
                     [{{client_properties, Props}}] -> \
                         case lists:keyfind(<<\"connection_name\">>, 1, Props) of \
                             {{_, longstr, N}} -> lists:member(N, Names); \
                             _ -> false \
                         end; \
                     _ -> false \
                 end \
             end, \
             length([rabbit_networking:close_connection(P, \"{reason}\") \
                     || P <- rabbit_networking:connections(), Named(P)]).",
            names = names.join(", "),
            reason = quote(reason),
        );
        let printed = self.eval(&expression).await;
        printed.trim().parse().unwrap_or_else(|_| {
            panic!(
                "closing connections on {}: unexpected output {printed:?}",
                self.node
            )
        })
    }

    /// Creates user `user` with `password` and full permissions on vhost `/`.
    pub async fn add_user(&self, user: &str, password: &str) {
        self.secret_ctl(&["add_user", user, password], password)
            .await;
        self.set_permissions("/", user).await;
    }

    /// Changes the password of `user` (`rabbitmqctl change_password`); connections already
    /// open stay open.
    pub async fn set_password(&self, user: &str, password: &str) {
        self.secret_ctl(&["change_password", user, password], password)
            .await;
    }

    /// Deletes user `user` (its connections are closed by the broker).
    pub async fn delete_user(&self, user: &str) {
        self.rabbitmqctl(&["delete_user", user]).await;
    }

    /// Gives `user` full permissions (`.*` configure, write, read) on `vhost`.
    pub async fn set_permissions(&self, vhost: &str, user: &str) {
        self.rabbitmqctl(&["set_permissions", "-p", vhost, user, ".*", ".*", ".*"])
            .await;
    }

    /// Creates vhost `vhost` and gives guest full permissions on it.
    pub async fn add_vhost(&self, vhost: &str) {
        self.rabbitmqctl(&["add_vhost", vhost]).await;
        self.set_permissions(vhost, "guest").await;
    }

    /// Deletes vhost `vhost` (the broker closes its connections with 320).
    pub async fn delete_vhost(&self, vhost: &str) {
        self.rabbitmqctl(&["delete_vhost", vhost]).await;
    }

    /// `rabbitmqctl` with a password among its arguments: never shown in a failure message.
    async fn secret_ctl(&self, args: &[&str], secret: &str) {
        let mut all = vec!["-n", &self.node];
        all.extend_from_slice(args);
        Cmd::new("rabbitmqctl", &all).hiding(secret).run().await;
    }
}

impl Drop for ExtraNode {
    fn drop(&mut self) {
        // A frozen node would never answer `stop`; CONT of a running one is harmless. Blocking
        // here is fine: tests drop nodes at their end.
        let script = self.script.to_string_lossy().into_owned();
        let port = self.port.to_string();
        if let Ok(pid) = Cmd::new(&script, &["pid", &self.name, &port]).output_blocking() {
            let _ = Cmd::new("kill", &["-CONT", pid.trim()]).output_blocking();
        }
        if let Err(message) = Cmd::new(&script, &["stop", &self.name, &port]).output_blocking() {
            eprintln!("stopping the extra node {}: {message}", self.node);
        }
    }
}
