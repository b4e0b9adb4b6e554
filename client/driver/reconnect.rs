//! Connecting: walking a connection's endpoints, for the first connection and, with backoff,
//! for every recovery.
//!
//! The endpoints are put in their order ([`EndpointOrder`]) and each host is resolved, a name
//! with several addresses giving one target per address: that is a *walk*. The first
//! connection tries each target of one walk once and fails with the last error (at once for
//! an error no other node would answer differently: refused credentials, a configuration
//! error). Recovery makes one attempt per target, waiting the recovery policy's backoff before
//! each, and starts a new walk (resolving again) when one is used up; the node the connection
//! was lost on comes last in the first walk, so that a dead node is tried after the others.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::Sleep;
use tracing::{debug, warn};

use super::handshake::{self, Opened};
use super::recovery::{Recovery, RecoveryPhase};
use super::transport::Transport;
use super::{Driver, State};
use crate::config::{ConnectionOptions, Endpoint, EndpointOrder, Target, jitter, shuffle};
use crate::error::{Close, Error, Initiator, Result};
use crate::shared::connection::ConnectionEvent;

/// A future the driver polls while reconnecting.
type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Where reconnecting is.
pub(super) enum Reconnect {
    /// Nothing under way yet.
    Idle,
    /// Resolving the endpoints for a new walk.
    Resolving(Pending<Walk>),
    /// Waiting out the backoff before connecting to `target` (or, with none, before resolving
    /// again after no endpoint resolved).
    Waiting {
        sleep: Pin<Box<Sleep>>,
        target: Option<Target>,
    },
    /// An attempt in progress.
    Connecting {
        attempt: Pending<Result<Opened>>,
        target: Target,
    },
}

/// The targets of a walk, and the last error of an endpoint that did not resolve.
pub(super) struct Walk {
    targets: Vec<Target>,
    unresolved: Option<Error>,
}

/// The endpoints of `options`, in their order, resolved to addresses.
async fn resolve(options: &ConnectionOptions) -> Walk {
    let mut endpoints = options.get_endpoints();
    if options.endpoint_order == EndpointOrder::Shuffled {
        shuffle(&mut endpoints);
    }
    let mut walk = Walk {
        targets: Vec::new(),
        unresolved: None,
    };
    for endpoint in endpoints {
        match addresses(&endpoint).await {
            Ok(addresses) => walk
                .targets
                .extend(addresses.into_iter().map(|address| Target {
                    endpoint: endpoint.clone(),
                    address,
                })),
            Err(error) => {
                debug!(%endpoint, %error, "endpoint not resolved");
                walk.unresolved = Some(error);
            }
        }
    }
    walk
}

/// The addresses `endpoint`'s host stands for.
async fn addresses(endpoint: &Endpoint) -> Result<Vec<std::net::SocketAddr>> {
    if let Ok(ip) = endpoint.host().parse::<IpAddr>() {
        return Ok(vec![(ip, endpoint.port()).into()]);
    }
    let unresolved = |source: std::io::Error| Error::Connect {
        address: endpoint.to_string(),
        source: source.into(),
    };
    let addresses: Vec<_> = tokio::net::lookup_host((endpoint.host(), endpoint.port()))
        .await
        .map_err(unresolved)?
        .collect();
    if addresses.is_empty() {
        return Err(unresolved(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the host name has no address",
        )));
    }
    Ok(addresses)
}

/// Connects to `target`: TCP, TLS and the handshake, within the connection timeout.
async fn connect_to(options: &ConnectionOptions, target: &Target) -> Result<Opened> {
    let deadline = options.connection_timeout;
    tokio::time::timeout(deadline, async {
        let transport = Transport::connect(options, target).await?;
        handshake::open(transport, options).await
    })
    .await
    .map_err(|_| Error::Timeout {
        operation: "connect",
        after: deadline,
    })?
}

/// Whether every other node would fail the same way, so that walking on is pointless.
fn fails_everywhere(error: &Error) -> bool {
    matches!(
        error,
        Error::Authentication { .. }
            | Error::Config(_)
            | Error::Uri(_)
            | Error::InvalidArgument(_)
            | Error::Handshake(_)
    )
}

/// The first connection: each target of one walk, until one opens.
pub(super) async fn connect_first(options: &ConnectionOptions) -> Result<(Opened, Target)> {
    let walk = resolve(options).await;
    let mut last = walk.unresolved;
    for target in walk.targets {
        match connect_to(options, &target).await {
            Ok(opened) => return Ok((opened, target)),
            Err(error) if fails_everywhere(&error) => return Err(error),
            Err(error) => {
                debug!(endpoint = %target.describe(), %error, "could not connect; trying the next endpoint");
                last = Some(error);
            }
        }
    }
    Err(last.unwrap_or(Error::Config("the connection has no endpoint".into())))
}

/// What polling reconnecting decided, acted on once the recovery is no longer borrowed.
enum Next {
    /// Keep polling the new phase.
    Again,
    /// Waiting for something to happen.
    Wait,
    Resolved(Walk),
    Connected(Box<Opened>, Target),
    Failed(Error, String),
}

impl Driver {
    /// Plans the next attempt (after a new walk if this one is used up), or gives up when the
    /// recovery policy says so.
    pub(super) fn schedule_attempt(&mut self) {
        if self.commands.is_closed() {
            debug!("all handles dropped while recovering; stopping");
            let reason = Error::ConnectionClosed(Close {
                code: crate::protocol::ReplyCode::REPLY_SUCCESS,
                text: "connection dropped".to_owned(),
                method: None,
                initiator: Initiator::Client,
            });
            self.fail_everything(&reason);
            self.state = State::Closed;
            return;
        }
        let policy = self.options.recovery.clone();
        let options = self.options.clone();
        let Some(recovery) = self.recovery_mut() else {
            return;
        };
        if !policy.allows(recovery.attempts, recovery.lost_at.elapsed()) {
            self.give_up();
            return;
        }
        let Some(target) = recovery.walk.front().cloned() else {
            recovery.phase =
                RecoveryPhase::Reconnecting(Reconnect::Resolving(Box::pin(async move {
                    resolve(&options).await
                })));
            return;
        };
        let attempt = recovery.attempts + 1;
        let mut delay = jitter(policy.delay_bound(attempt));
        if recovery
            .lost_endpoint
            .as_ref()
            .is_some_and(|lost| *lost != target.endpoint)
        {
            // Another node: give the cluster time to move the lost node's queue leaders.
            delay = delay.max(policy.get_failover_delay());
        }
        let endpoint = target.describe();
        recovery.phase = RecoveryPhase::Reconnecting(Reconnect::Waiting {
            sleep: Box::pin(tokio::time::sleep(delay)),
            target: Some(target),
        });
        debug!(attempt, %endpoint, ?delay, "reconnecting");
        self.shared.emit(ConnectionEvent::Recovering {
            attempt,
            endpoint,
            delay,
        });
    }

    /// Resolves, waits out the backoff and connects. Returns whether it connected (the driver
    /// then turns again to start restoring) or ended the recovery.
    pub(super) fn poll_reconnect(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let options = &self.options;
            let Some(recovery) = (match &mut self.state {
                State::Recovering(recovery) => Some(recovery),
                _ => None,
            }) else {
                return true;
            };
            let RecoveryPhase::Reconnecting(reconnect) = &mut recovery.phase else {
                return false;
            };
            let next = match reconnect {
                Reconnect::Idle => Next::Wait,
                Reconnect::Resolving(resolving) => match resolving.as_mut().poll(cx) {
                    Poll::Pending => Next::Wait,
                    Poll::Ready(walk) => Next::Resolved(walk),
                },
                Reconnect::Waiting { sleep, target } => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        Next::Wait
                    } else if let Some(target) = target.take() {
                        recovery.walk.pop_front();
                        let options = options.clone();
                        let attempt_target = target.clone();
                        *reconnect = Reconnect::Connecting {
                            attempt: Box::pin(async move {
                                connect_to(&options, &attempt_target).await
                            }),
                            target,
                        };
                        Next::Again
                    } else {
                        let options = options.clone();
                        *reconnect =
                            Reconnect::Resolving(Box::pin(async move { resolve(&options).await }));
                        Next::Again
                    }
                }
                Reconnect::Connecting { attempt, target } => match attempt.as_mut().poll(cx) {
                    Poll::Pending => Next::Wait,
                    Poll::Ready(Ok(opened)) => Next::Connected(Box::new(opened), target.clone()),
                    Poll::Ready(Err(error)) => Next::Failed(error, target.describe()),
                },
            };
            match next {
                Next::Again => continue,
                Next::Wait => return false,
                Next::Resolved(walk) => self.start_walk(walk),
                Next::Connected(opened, target) => {
                    recovery.attempts += 1;
                    self.connected(*opened, target);
                    return true;
                }
                Next::Failed(error, endpoint) => self.attempt_failed(error, endpoint),
            }
            if !matches!(self.state, State::Recovering(_)) {
                return true;
            }
        }
    }

    /// A walk's targets are known: plan its first attempt. With none, that was a failed
    /// attempt (no endpoint resolved); resolving is tried again after the backoff.
    fn start_walk(&mut self, walk: Walk) {
        let Some(recovery) = self.recovery_mut() else {
            return;
        };
        if walk.targets.is_empty() {
            let error = walk
                .unresolved
                .unwrap_or(Error::Config("the connection has no endpoint".into()));
            recovery.attempts += 1;
            self.report_failed_attempt(error, "every endpoint".into());
            self.schedule_resolving();
            return;
        }
        recovery.walk = walk.targets.into();
        if let Some(lost) = recovery.lost.take()
            && recovery.walk.len() > 1
            && let Some(index) = recovery.walk.iter().position(|t| *t == lost)
            && let Some(target) = recovery.walk.remove(index)
        {
            // The node the connection was lost on may be gone: try the others first.
            recovery.walk.push_back(target);
        }
        self.schedule_attempt();
    }

    /// An attempt failed: report it, and plan the next one.
    fn attempt_failed(&mut self, error: Error, endpoint: String) {
        if let Some(recovery) = self.recovery_mut() {
            recovery.attempts += 1;
        }
        self.report_failed_attempt(error, endpoint);
        self.schedule_attempt();
    }

    fn report_failed_attempt(&mut self, error: Error, endpoint: String) {
        let Some(recovery) = self.recovery_mut() else {
            return;
        };
        let attempt = recovery.attempts;
        recovery.last_error = error.clone();
        warn!(attempt, %endpoint, %error, "reconnecting failed");
        self.shared.emit(ConnectionEvent::RecoveryAttemptFailed {
            attempt,
            endpoint,
            error,
        });
    }

    /// Waits out the backoff, then resolves the endpoints again.
    fn schedule_resolving(&mut self) {
        let policy = self.options.recovery.clone();
        let Some(recovery) = self.recovery_mut() else {
            return;
        };
        if !policy.allows(recovery.attempts, recovery.lost_at.elapsed()) {
            self.give_up();
            return;
        }
        let delay = jitter(policy.delay_bound(recovery.attempts + 1));
        recovery.phase = RecoveryPhase::Reconnecting(Reconnect::Waiting {
            sleep: Box::pin(tokio::time::sleep(delay)),
            target: None,
        });
    }

    /// Recovery gave up: the connection closes for good with the last attempt's error.
    pub(super) fn give_up(&mut self) {
        let State::Recovering(recovery) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        let Recovery {
            attempts,
            lost_at,
            last_error,
            ..
        } = *recovery;
        let error = Error::RecoveryFailed {
            attempts,
            elapsed: lost_at.elapsed(),
            last: Box::new(last_error),
        };
        warn!(%error, "giving up recovering the connection");
        self.fail_everything(&error);
    }
}
