//! [`Cluster`]: the 3-node cluster of `scripts/rabbitmq-cluster.sh`, as the tests see it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;
use warren::ConnectionOptions;

use super::{Cmd, node_of_pid, pids_of_named_connections, repo_path, skip};

/// One cluster test at a time in a test binary: they kill and restart shared nodes.
static EXCLUSIVE: std::sync::OnceLock<Arc<tokio::sync::Mutex<()>>> = std::sync::OnceLock::new();

/// The cluster the environment describes: `WARREN_CLUSTER_URIS` (comma-separated amqp URIs)
/// and `WARREN_CLUSTER_NODES` (node names as `rabbitmqctl -n` takes them, space-separated, in
/// the same order), as `scripts/rabbitmq-cluster.sh env` prints them; `WARREN_CLUSTER_SCRIPT`
/// (default: the repository's script) does the kills and restarts.
///
/// A `Cluster` is held by one test at a time in a test binary ([`Cluster::get`] waits for the
/// previous one to be dropped), since its faults hit every user of the nodes. Nodes it killed
/// and did not restart are restarted when it is dropped (`rabbitmq-cluster.sh start`, which
/// also repairs anything else), so that the next test finds three running nodes; queues given
/// to [`Cluster::delete_on_drop`] are deleted then, even if the test failed.
#[derive(Debug)]
pub struct Cluster {
    uris: Vec<String>,
    nodes: Vec<String>,
    script: PathBuf,
    down: Mutex<BTreeSet<String>>,
    /// Nodes frozen with SIGSTOP, by the pid of their `beam.smp`.
    frozen: Mutex<Vec<(String, String)>>,
    queues: Mutex<Vec<String>>,
    _exclusive: OwnedMutexGuard<()>,
}

impl Cluster {
    /// The cluster of the environment, once no other test of this binary holds it, with its
    /// three nodes running (`rabbitmq-cluster.sh status`; if a node is down, `start` repairs
    /// the cluster first).
    ///
    /// Without the variables, prints `SKIPPED: …` and returns `None`, unless
    /// `WARREN_REQUIRE_CLUSTER` is set (as in `.ci/run`): then the test fails.
    pub async fn get() -> Option<Self> {
        let uris = std::env::var("WARREN_CLUSTER_URIS").unwrap_or_default();
        let nodes = std::env::var("WARREN_CLUSTER_NODES").unwrap_or_default();
        let uris: Vec<String> = uris
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        let nodes: Vec<String> = nodes.split_whitespace().map(str::to_owned).collect();
        if uris.is_empty() || nodes.is_empty() {
            skip(
                "WARREN_REQUIRE_CLUSTER",
                "no cluster: WARREN_CLUSTER_URIS and WARREN_CLUSTER_NODES are not set; run \
                 scripts/rabbitmq-cluster.sh start and export its env output",
            );
            return None;
        }
        assert_eq!(
            uris.len(),
            nodes.len(),
            "WARREN_CLUSTER_URIS and WARREN_CLUSTER_NODES must list as many entries"
        );
        for uri in &uris {
            if let Err(e) = uri.parse::<ConnectionOptions>() {
                panic!("WARREN_CLUSTER_URIS has an invalid URI: {e}");
            }
        }
        let script = std::env::var_os("WARREN_CLUSTER_SCRIPT")
            .map_or_else(|| repo_path("scripts/rabbitmq-cluster.sh"), PathBuf::from);
        let exclusive = EXCLUSIVE
            .get_or_init(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone()
            .lock_owned()
            .await;
        let cluster = Self {
            uris,
            nodes,
            script,
            down: Mutex::new(BTreeSet::new()),
            frozen: Mutex::new(Vec::new()),
            queues: Mutex::new(Vec::new()),
            _exclusive: exclusive,
        };
        if !cluster.is_whole().await {
            // An earlier test (or run) left a node down: repair before the test starts.
            eprintln!("the cluster is not whole: running rabbitmq-cluster.sh start");
            cluster.script(&["start"]).await;
        }
        Some(cluster)
    }

    /// The nodes' amqp URIs, in node order.
    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    /// The node names (`NAME@HOST`), in node order.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Connection options for node `index` (0-based).
    pub fn options(&self, index: usize) -> ConnectionOptions {
        self.uris[index].parse().expect("checked in Cluster::get")
    }

    /// The index of node `node` (a full name).
    pub fn index_of(&self, node: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n == node)
            .unwrap_or_else(|| panic!("{node} is not a node of the cluster {:?}", self.nodes))
    }

    /// Nodes that this handle did not kill or freeze (or has restarted or thawed since).
    pub fn running_nodes(&self) -> Vec<String> {
        let down = lock(&self.down);
        let frozen = lock(&self.frozen);
        self.nodes
            .iter()
            .filter(|n| !down.contains(*n) && !frozen.iter().any(|(f, _)| f == *n))
            .cloned()
            .collect()
    }

    async fn script(&self, args: &[&str]) -> String {
        Cmd::new(&self.script.to_string_lossy(), args).run().await
    }

    /// `kill -9` of node `node` (a full name, as [`Cluster::nodes`] lists it); returns once
    /// its process is gone.
    pub async fn kill(&self, node: &str) {
        self.index_of(node);
        lock(&self.down).insert(node.to_owned());
        self.script(&["kill", node]).await;
    }

    /// Starts node `node` again (a running one is stopped cleanly first) and waits until the
    /// cluster sees three running nodes again: 7-9 s after a kill here.
    pub async fn restart(&self, node: &str) {
        self.index_of(node);
        self.script(&["restart", node]).await;
        lock(&self.down).remove(node);
    }

    /// Options with every node as an endpoint (`ConnectionOptions::from_uris`), in node order.
    pub fn all_endpoints(&self) -> ConnectionOptions {
        ConnectionOptions::from_uris(&self.uris).expect("checked in Cluster::get")
    }

    /// The node a connection is on, from its endpoint (`Connection::endpoint`: `host:port`).
    pub fn node_of_endpoint(&self, endpoint: &str) -> String {
        let port = endpoint
            .rsplit(':')
            .next()
            .and_then(|port| port.split_whitespace().next())
            .and_then(|port| port.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no port in endpoint {endpoint:?}"));
        let index = (0..self.uris.len())
            .find(|&i| self.options(i).get_port() == port)
            .unwrap_or_else(|| panic!("no node of the cluster listens on {port}"));
        self.nodes[index].clone()
    }

    /// The OS pid of node `node`'s `beam.smp`.
    async fn pid(&self, node: &str) -> String {
        let index = self.index_of(node);
        let name = node.split('@').next().expect("NAME@HOST");
        let port = self.options(index).get_port().to_string();
        let script = repo_path("scripts/rabbitmq-node.sh");
        Cmd::new(&script.to_string_lossy(), &["pid", name, &port])
            .run()
            .await
            .trim()
            .to_owned()
    }

    /// Freezes node `node` (`SIGSTOP` to its `beam.smp`): its sockets stay open and silent, a
    /// node that hangs. [`Cluster::thaw`] resumes it; dropping the handle thaws it too.
    pub async fn freeze(&self, node: &str) {
        let pid = self.pid(node).await;
        Cmd::new("kill", &["-STOP", &pid]).run().await;
        lock(&self.frozen).push((node.to_owned(), pid));
    }

    /// Resumes a node frozen by [`Cluster::freeze`].
    pub async fn thaw(&self, node: &str) {
        let frozen: Vec<(String, String)> = lock(&self.frozen)
            .iter()
            .filter(|(n, _)| n == node)
            .cloned()
            .collect();
        for (_, pid) in &frozen {
            Cmd::new("kill", &["-CONT", pid]).run().await;
        }
        lock(&self.frozen).retain(|(n, _)| n != node);
    }

    /// Deletes queue `queue` (vhost `/`) when the handle is dropped, if it still exists.
    pub fn delete_on_drop(&self, queue: &str) {
        lock(&self.queues).push(queue.to_owned());
    }

    /// `rabbitmqctl ARGS…` on the first node that answers, skipping the nodes this handle
    /// killed.
    pub async fn rabbitmqctl(&self, args: &[&str]) -> String {
        let mut failures = Vec::new();
        for node in self.running_nodes() {
            let mut all = vec!["-n", node.as_str()];
            all.extend_from_slice(args);
            match Cmd::new("rabbitmqctl", &all).output().await {
                Ok(output) => return output,
                Err(message) => failures.push(message),
            }
        }
        panic!("no node of the cluster answered:\n{}", failures.join("\n"));
    }

    /// The node that serves the connection whose client-provided `connection_name` is
    /// `connection_name`, or `None` if no node lists one. Several such connections: the
    /// first listed.
    pub async fn node_of_connection(&self, connection_name: &str) -> Option<String> {
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
            .first()
            .and_then(|pid| node_of_pid(pid))
            .map(str::to_owned)
    }

    /// The nodes holding a replica of quorum queue `queue` (vhost `/`), sorted; empty if the
    /// queue does not exist.
    pub async fn quorum_queue_members(&self, queue: &str) -> Vec<String> {
        let mut members: Vec<String> = self
            .queue_column(queue, "members")
            .await
            .map(|list| erlang_list(&list))
            .unwrap_or_default();
        members.sort();
        members
    }

    /// The nodes whose replica of quorum queue `queue` (vhost `/`) is online, sorted.
    pub async fn quorum_queue_online(&self, queue: &str) -> Vec<String> {
        let mut online: Vec<String> = self
            .queue_column(queue, "online")
            .await
            .map(|list| erlang_list(&list))
            .unwrap_or_default();
        online.sort();
        online
    }

    /// The node of quorum queue `queue`'s leader (vhost `/`), if it has one.
    pub async fn quorum_queue_leader(&self, queue: &str) -> Option<String> {
        self.queue_column(queue, "leader")
            .await
            .map(|leader| leader.trim().to_owned())
            .filter(|leader| !leader.is_empty() && leader.contains('@'))
    }

    /// One column of `list_queues name COLUMN` for `queue`.
    async fn queue_column(&self, queue: &str, column: &str) -> Option<String> {
        let list = self
            .rabbitmqctl(&["list_queues", "-q", "--no-table-headers", "name", column])
            .await;
        list.lines().find_map(|line| {
            let (name, value) = line.split_once('\t')?;
            (name == queue).then(|| value.to_owned())
        })
    }

    /// Whether every node runs and node 1 (or the first that answers) sees all of them:
    /// `rabbitmq-cluster.sh status`.
    pub async fn is_whole(&self) -> bool {
        Cmd::new(&self.script.to_string_lossy(), &["status"])
            .output()
            .await
            .is_ok()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Blocking is fine here: the test is over.
        for (_, pid) in std::mem::take(&mut *lock(&self.frozen)) {
            let _ = Cmd::new("kill", &["-CONT", &pid]).output_blocking();
        }
        if !lock(&self.down).is_empty() {
            // `start` restarts what is down and waits until it has rejoined.
            let start = Cmd::new(&self.script.to_string_lossy(), &["start"]);
            if let Err(message) = start.output_blocking() {
                eprintln!("restoring the cluster after the test: {message}");
            }
        }
        let queues = std::mem::take(&mut *lock(&self.queues));
        for queue in queues {
            let deleted = self.nodes.iter().any(|node| {
                match Cmd::new("rabbitmqctl", &["-n", node, "delete_queue", &queue])
                    .output_blocking()
                {
                    Ok(_) => true,
                    // Deleted by the test already.
                    Err(message) => message.contains("Queue not found"),
                }
            });
            if !deleted {
                eprintln!("could not delete queue {queue} from the cluster");
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The atoms of an Erlang list as rabbitmqctl prints it (`[a@h, b@h]`, with or without quotes).
fn erlang_list(list: &str) -> Vec<String> {
    list.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|item| item.trim().trim_matches(|c| c == '\'' || c == '"'))
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}
