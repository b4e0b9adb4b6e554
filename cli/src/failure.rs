//! How a command fails: one line for stderr and an exit status; and connecting, which is
//! where most failures start.

use std::time::Duration;

use warren::{Connection, ConnectionEvent, ConnectionOptions, Error, Initiator, RecoveryPolicy};

/// Exit status of errors: connection, broker refusals, bad input.
pub const EXIT_ERROR: u8 = 1;
/// Exit status of `publish` when the broker nacked the message.
pub const EXIT_NACKED: u8 = 3;
/// Exit status of `publish` when no queue took the message (the broker returned it).
pub const EXIT_NOT_ROUTED: u8 = 4;
/// Exit status of `delete` when the queue or exchange did not exist (without `--if-exists`).
pub const EXIT_NOT_FOUND: u8 = 5;

/// Why a command stopped: a message for stderr (none for a quiet exit) and an exit status.
#[derive(Debug)]
pub struct Failure {
    pub message: Option<String>,
    pub code: u8,
}

impl Failure {
    /// A failure with exit status 1.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: Some(message.into()),
            code: EXIT_ERROR,
        }
    }

    /// A failure with another exit status.
    pub fn with_code(message: impl Into<String>, code: u8) -> Self {
        Self {
            message: Some(message.into()),
            code,
        }
    }

    /// Stop without a message (the reader of our output went away).
    pub fn quiet() -> Self {
        Self {
            message: None,
            code: 0,
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self::new(describe(&error))
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            // `warren consume q | head`: the reader has what it wanted.
            return Self::quiet();
        }
        Self::new(error.to_string())
    }
}

/// The one-line description of a warren error, with its causes (`source()`), which the
/// error's own text does not repeat: "connection lost: Connection reset by peer".
///
/// The broker's refusals (a 404 on a passive declare, a 406 on a mismatch) are shown as the
/// broker worded them, without the library's advice to open a new channel, which a command
/// line user has no use for.
pub fn describe(error: &Error) -> String {
    let mut line = match error {
        Error::ChannelClosed { close, .. } if close.initiator == Initiator::Server => {
            format!("the broker refused: {close}")
        }
        other => other.to_string(),
    };
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        line.push_str(": ");
        line.push_str(&error.to_string());
        cause = error.source();
    }
    line
}

/// Connects to `url`, naming the connection after the subcommand in the management UI. The
/// connection is not recovered when lost: a one-shot command reports the loss and exits.
pub async fn connect(url: &str, purpose: &str) -> Result<Connection, Failure> {
    connect_with(url, purpose, false).await
}

/// Connects to `url` like [`connect`]; with `recover`, a lost connection is reconnected and
/// restored by the library, and each step is reported on stderr.
pub async fn connect_with(url: &str, purpose: &str, recover: bool) -> Result<Connection, Failure> {
    let options: ConnectionOptions = url.parse().map_err(|e: Error| Failure::from(e))?;
    connect_options(options, purpose, recover).await
}

/// Connects with `options` like [`connect_with`].
pub async fn connect_options(
    options: ConnectionOptions,
    purpose: &str,
    recover: bool,
) -> Result<Connection, Failure> {
    let recovery = match recover {
        true => RecoveryPolicy::default(),
        false => RecoveryPolicy::disabled(),
    };
    let options = options
        .connection_name(format!("warren {purpose}"))
        .recovery(recovery);
    let connection = Connection::connect_with(options).await?;
    if recover {
        tokio::spawn(report_recovery(connection.events()));
    }
    Ok(connection)
}

/// Says on stderr when the connection is lost, each failed attempt to get it back, and when
/// it is back (with what could not be restored).
async fn report_recovery(mut events: warren::Events) {
    use futures_util::StreamExt;
    while let Some(event) = events.next().await {
        match event {
            ConnectionEvent::Disconnected { reason } => {
                eprintln!(
                    "warren: connection lost ({}); reconnecting",
                    describe(&reason)
                );
            }
            ConnectionEvent::RecoveryAttemptFailed {
                attempt,
                endpoint,
                error,
            } => eprintln!(
                "warren: reconnecting to {endpoint} failed (attempt {attempt}): {}",
                describe(&error)
            ),
            ConnectionEvent::Recovered { endpoint, took, .. } => {
                eprintln!("warren: connection back to {endpoint} after {took:.1?}");
            }
            ConnectionEvent::TopologyRecoveryFailed { entity, error } => {
                eprintln!("warren: could not restore {entity}: {}", describe(&error));
            }
            ConnectionEvent::QueueRenamed { old, new } => {
                eprintln!("warren: queue {old} is now {new}");
            }
            _ => {}
        }
    }
}

/// Closes `connection`, not waiting long: the command's work is done either way.
pub async fn close(connection: &Connection) {
    let _ = tokio::time::timeout(Duration::from_secs(5), connection.close()).await;
}

/// Runs `work` on a new connection to `url` and closes the connection, whatever the outcome.
pub async fn with_connection<T, F, Fut>(url: &str, purpose: &str, work: F) -> Result<T, Failure>
where
    F: FnOnce(Connection) -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let connection = connect(url, purpose).await?;
    let result = work(connection.clone()).await;
    close(&connection).await;
    result
}

/// Resolves when the user asks warren to stop: Ctrl-C, or SIGTERM on Unix. Commands that run
/// until stopped (`consume`, `perf`) then finish cleanly: they close their connections, and
/// `perf` deletes its queue and prints its summary.
pub async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
