//! How a command fails: one line for stderr and an exit status; and connecting, which is
//! where most failures start.

use std::time::Duration;

use warren::{Connection, ConnectionOptions, Error, Initiator};

/// Exit status of errors: connection, broker refusals, bad input.
pub const EXIT_ERROR: u8 = 1;
/// Exit status of `publish` when the broker nacked the message.
pub const EXIT_NACKED: u8 = 3;
/// Exit status of `publish --mandatory` when the broker returned the message.
pub const EXIT_RETURNED: u8 = 4;

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

/// The one-line description of a warren error.
///
/// The broker's refusals (a 404 on a passive declare, a 406 on a mismatch) are shown as the
/// broker worded them, without the library's advice to open a new channel, which a command
/// line user has no use for.
pub fn describe(error: &Error) -> String {
    match error {
        Error::ChannelClosed { close, .. } if close.initiator == Initiator::Server => {
            format!("the broker refused: {close}")
        }
        other => other.to_string(),
    }
}

/// Connects to `url`, naming the connection after the subcommand in the management UI.
pub async fn connect(url: &str, purpose: &str) -> Result<Connection, Failure> {
    let options: ConnectionOptions = url.parse().map_err(|e: Error| Failure::from(e))?;
    let options = options.connection_name(format!("warren {purpose}"));
    Ok(Connection::connect_with(options).await?)
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
