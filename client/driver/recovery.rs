//! Automatic recovery: reconnecting with backoff, then restoring the channels, topology and
//! consumers on the new connection under the same handles.
//!
//! Restoring is pipelined: every request of a round is written at once and the replies are
//! counted as they come, instead of one round trip per entity. There are two rounds, because
//! the second needs the first one's results:
//!
//! 1. the application's channels are reopened with their prefetch, confirm and tx modes, and
//!    on a few channels of recovery's own, the exchanges and queues are declared (a
//!    server-named queue gets a new name here);
//! 2. exchange-to-exchange bindings, then queue bindings (with the new names), on recovery's
//!    channels; at the same time the consumers, on their own channels, with their original
//!    tags, feeding the same streams. A consumer needs its queue, not the queue's bindings, and
//!    the broker works on both at once (a channel is a process of its own there).
//!
//! A request the broker refuses closes its channel, and the broker then discards whatever was
//! written after it on that channel. So a refusal is reported (an event naming the entity), the
//! channel is reopened, and the requests after the refused one are written again: one failing
//! entity never stops the rest.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tracing::{debug, info, warn};

use super::channels::{PendingRpc, Phase, Waiter};
use super::handshake::Opened;
use super::reconnect::Reconnect;
use super::{Driver, State};
use crate::channel::STREAM_OFFSET_ARGUMENT;
use crate::config::Target;
use crate::error::{Close, Error};
use crate::protocol::{
    BasicConsume, BasicConsumeOk, BasicQos, BasicQosOk, ChannelOpen, ChannelOpenOk, ConfirmSelect,
    ConfirmSelectOk, ExchangeBind, ExchangeBindOk, ExchangeDeclare, ExchangeDeclareOk, Method,
    QueueBind, QueueBindOk, QueueDeclare, QueueDeclareOk, TxSelect, TxSelectOk,
};
use crate::shared::connection::{ConnectionEvent, ConnectionStatus};
use crate::shared::ledger::ConfirmLedger;
use crate::topology::{
    BindingDestination, RecordedBinding, RecordedConsumer, RecordedExchange, RecordedQueue,
    Topology, TopologyEntity,
};
use crate::wire::{AmqpMethod, FieldValue, MethodId, ShortString};

/// A recovery under way.
pub(super) struct Recovery {
    /// The last attempt's error (at first, why the connection was lost).
    pub(super) last_error: Error,
    pub(super) lost_at: Instant,
    /// Attempts finished (failed or not).
    pub(super) attempts: u32,
    /// The addresses still to try in this walk over the endpoints, next first.
    pub(super) walk: VecDeque<Target>,
    /// Where the lost connection was: tried last in the first walk.
    pub(super) lost: Option<Target>,
    /// The node the lost connection was on, if it had one: connecting to another waits at
    /// least the policy's failover delay.
    pub(super) lost_endpoint: Option<crate::config::Endpoint>,
    pub(super) phase: RecoveryPhase,
}

pub(super) enum RecoveryPhase {
    /// Reconnecting: waiting, resolving the endpoints or connecting.
    Reconnecting(Reconnect),
    /// Connected: restoring channels, topology and consumers.
    Restoring(Restore),
}

impl Recovery {
    pub(super) fn new(reason: Error, lost: Option<Target>) -> Self {
        Self {
            last_error: reason,
            lost_at: Instant::now(),
            attempts: 0,
            walk: VecDeque::new(),
            lost_endpoint: lost.as_ref().map(|target| target.endpoint.clone()),
            lost,
            phase: RecoveryPhase::Reconnecting(Reconnect::Idle),
        }
    }

    /// The connection was lost again while being restored: the attempts go on.
    pub(super) fn lost_again(&mut self, reason: Error, lost: Option<Target>) {
        self.last_error = reason;
        self.lost_endpoint = lost.as_ref().map(|target| target.endpoint.clone());
        self.lost = lost;
        self.walk.clear();
    }
}

/// Progress of the restoring rounds.
pub(super) struct Restore {
    round: Round,
    /// When the current round was written, to log how long each took.
    round_started: Instant,
    /// Requests of the current round whose replies have not come.
    outstanding: usize,
    /// Recovery's own channels, for declarations and bindings. The broker runs each channel
    /// in a process of its own, so declarations spread over a few go faster than on one.
    channels: Vec<u16>,
    /// What is being restored (server-named queues renamed as they are declared).
    topology: Topology,
    endpoint: String,
    /// Requests refused because the lost connection still holds an exclusive queue or
    /// consumer (the broker has not noticed yet that it is gone), to write again on their
    /// channel when `retry_timer` fires.
    retries: Vec<(u16, PendingRpc)>,
    retry_timer: Option<Pin<Box<Sleep>>>,
    retry_delay: Duration,
    /// Such refusals are retried until then: by then the broker has dropped the lost
    /// connection (it misses two of its heartbeats).
    retry_until: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Declarations,
    BindingsAndConsumers,
}

/// One request of recovery, kept to report it if the broker refuses it and to act on its reply.
#[derive(Debug)]
pub(super) enum Step {
    Open,
    Qos,
    Confirm,
    Tx,
    Exchange(RecordedExchange),
    Queue(RecordedQueue),
    Binding(RecordedBinding),
    Consumer(RecordedConsumer),
}

impl Step {
    fn entity(self, channel: u16) -> TopologyEntity {
        let setting = |what| TopologyEntity::Channel { channel, what };
        match self {
            Self::Open => setting("channel.open"),
            Self::Qos => setting("basic.qos"),
            Self::Confirm => setting("confirm.select"),
            Self::Tx => setting("tx.select"),
            Self::Exchange(exchange) => TopologyEntity::Exchange(exchange),
            Self::Queue(queue) => TopologyEntity::Queue(queue),
            Self::Binding(binding) => TopologyEntity::Binding(binding),
            Self::Consumer(consumer) => TopologyEntity::Consumer(consumer),
        }
    }
}

/// The first delay before writing again a request refused because the lost connection still
/// holds what it needs; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// How long the broker may take to drop a connection that vanished without closing: two
/// missed heartbeats (with some margin), or half a minute without heartbeats.
fn retry_window(heartbeat: Duration) -> Duration {
    if heartbeat.is_zero() {
        Duration::from_secs(30)
    } else {
        (heartbeat * 2 + Duration::from_secs(5)).max(Duration::from_secs(10))
    }
}

/// A stream consumer consumes again from `resume` (one past the last delivery its stream
/// handed to the application), so that it neither reads again what was taken nor skips what
/// was published meanwhile; with nothing taken yet (`None`) its original `x-stream-offset`
/// stands. Deliveries buffered but not taken were purged with the old connection, so they
/// come again from here.
fn resume_stream(consumer: &mut RecordedConsumer, resume: Option<u64>) {
    // RabbitMQ takes an offset as a signed 64-bit integer; its offsets never reach i64::MAX.
    let Some(offset) = resume.and_then(|offset| i64::try_from(offset).ok()) else {
        return;
    };
    debug!(
        consumer_tag = %consumer.tag,
        queue = %consumer.queue,
        offset,
        "stream consumer resumes after the last delivery taken"
    );
    consumer.arguments.insert(
        ShortString::from_static(STREAM_OFFSET_ARGUMENT),
        FieldValue::I64(offset),
    );
}

/// At most this many channels of its own restore the topology...
const RESTORE_CHANNELS: usize = 4;
/// ...one per this many exchanges, queues and bindings.
const ENTITIES_PER_CHANNEL: usize = 64;

const OPEN_OK: &[MethodId] = &[ChannelOpenOk::ID];
const QOS_OK: &[MethodId] = &[BasicQosOk::ID];
const CONFIRM_OK: &[MethodId] = &[ConfirmSelectOk::ID];
const TX_OK: &[MethodId] = &[TxSelectOk::ID];
const EXCHANGE_OK: &[MethodId] = &[ExchangeDeclareOk::ID];
const QUEUE_OK: &[MethodId] = &[QueueDeclareOk::ID];
const EXCHANGE_BIND_OK: &[MethodId] = &[ExchangeBindOk::ID];
const QUEUE_BIND_OK: &[MethodId] = &[QueueBindOk::ID];
const CONSUME_OK: &[MethodId] = &[BasicConsumeOk::ID];

/// Which of a channel's pending requests the broker refused with `close`.
///
/// Usually the oldest: the broker handles a channel's requests in order. But RabbitMQ sends
/// `basic.consume-ok` from the queue's process, so the close for a later request can overtake
/// it; hence the first request of the method the close names whose entity the close's text
/// names (RabbitMQ quotes it: `no queue 'orders' in vhost '/'`), then the first of that method,
/// then the oldest. The others are written again on the reopened channel: what the old channel
/// had done (a consumer started) ended with it.
fn refused_request(
    pending: &std::collections::VecDeque<PendingRpc>,
    close: &Close,
) -> Option<usize> {
    let same_method = |rpc: &PendingRpc| close.method.is_none_or(|id| rpc.request.id() == id);
    let names_it = |rpc: &PendingRpc| {
        let named: &[&ShortString] = match &rpc.request {
            Method::QueueDeclare(m) => &[&m.queue],
            Method::ExchangeDeclare(m) => &[&m.exchange],
            Method::QueueBind(m) => &[&m.queue, &m.exchange],
            Method::ExchangeBind(m) => &[&m.destination, &m.source],
            Method::BasicConsume(m) => &[&m.queue],
            _ => &[],
        };
        named
            .iter()
            .any(|name| !name.is_empty() && close.text.contains(&format!("'{name}'")))
    };
    pending
        .iter()
        .position(|rpc| same_method(rpc) && names_it(rpc))
        .or_else(|| pending.iter().position(same_method))
        .or(if pending.is_empty() { None } else { Some(0) })
}

impl Driver {
    pub(super) fn recovery_mut(&mut self) -> Option<&mut Recovery> {
        match &mut self.state {
            State::Recovering(recovery) => Some(recovery),
            _ => None,
        }
    }

    fn restore_mut(&mut self) -> Option<&mut Restore> {
        match &mut self.recovery_mut()?.phase {
            RecoveryPhase::Restoring(restore) => Some(restore),
            _ => None,
        }
    }

    /// Whether recovery is restoring the connection (replies to its requests are expected).
    pub(super) fn restoring(&self) -> bool {
        matches!(
            &self.state,
            State::Recovering(recovery) if matches!(recovery.phase, RecoveryPhase::Restoring(_))
        )
    }

    /// A new connection is open: start restoring on it.
    pub(super) fn connected(&mut self, opened: Opened, target: Target) {
        let endpoint = target.describe();
        info!(%endpoint, "reconnected; restoring channels and topology");
        let tuning = opened.tuning;
        let server_properties = opened.server_properties.clone();
        self.shared
            .set_server(crate::telemetry::Server::of(&target));
        self.install(opened, target);
        self.shared
            .set_connected(tuning, server_properties, endpoint.clone());
        let topology = if self.options.recovery.recovers_topology() {
            self.shared.topology().clone()
        } else {
            self.abandon_consumers();
            Topology::default()
        };
        if let Some(recovery) = self.recovery_mut() {
            recovery.phase = RecoveryPhase::Restoring(Restore {
                round: Round::Declarations,
                round_started: Instant::now(),
                outstanding: 0,
                channels: Vec::new(),
                topology,
                endpoint,
                retries: Vec::new(),
                retry_timer: None,
                retry_delay: FIRST_RETRY_DELAY,
                retry_until: Instant::now() + retry_window(tuning.heartbeat),
            });
        }
        self.write_declarations();
    }

    /// Without topology recovery, consumers are not restarted: their streams end.
    fn abandon_consumers(&mut self) {
        let consumers = std::mem::take(&mut self.shared.topology().consumers);
        for consumer in consumers {
            let cause = Error::InvalidState("topology recovery is off");
            self.end_consumer(&consumer, cause);
        }
    }

    // ===== restoring =====

    /// Writes again the requests waiting for a retry once their delay has passed; moves to the
    /// next round once every reply of this one has come; finishes recovery after the last.
    /// Returns whether it did something.
    pub(super) fn poll_restore(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = self.poll_retries(cx);
        loop {
            let Some(restore) = self.restore_mut() else {
                return progress;
            };
            if restore.outstanding > 0 {
                return progress;
            }
            progress = true;
            debug!(round = ?restore.round, took = ?restore.round_started.elapsed(), "restoring round done");
            restore.round_started = Instant::now();
            match restore.round {
                Round::Declarations => {
                    restore.round = Round::BindingsAndConsumers;
                    self.write_bindings();
                    self.write_consumers();
                }
                Round::BindingsAndConsumers => {
                    self.finish_recovery();
                    return true;
                }
            }
        }
    }

    /// Writes again, once their delay has passed, the requests refused for a lock the lost
    /// connection held.
    fn poll_retries(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(restore) = self.restore_mut() else {
            return false;
        };
        let Some(timer) = &mut restore.retry_timer else {
            return false;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        restore.retry_timer = None;
        let retries = std::mem::take(&mut restore.retries);
        for (channel, rpc) in retries {
            let writable = self
                .channels
                .get_mut(channel)
                .is_some_and(|state| state.is_open());
            if writable && self.write_method(channel, &rpc.request).is_ok() {
                if let Some(state) = self.channels.get_mut(channel) {
                    state.rpcs.push_back(rpc);
                }
            } else if let Waiter::Restore(step) = rpc.waiter {
                if let Some(restore) = self.restore_mut() {
                    restore.outstanding = restore.outstanding.saturating_sub(1);
                }
                let error = Error::InvalidState("its channel could not be restored");
                self.report_failure(channel, step, error);
            }
        }
        true
    }

    /// Keeps a request refused because the lost connection still holds an exclusive queue or
    /// consumer, to write it again after a delay; `false` if it should be reported instead.
    fn retry_later(&mut self, channel: u16, rpc: PendingRpc, close: &Close) -> Option<PendingRpc> {
        const ACCESS_REFUSED: u16 = 403;
        const RESOURCE_LOCKED: u16 = 405;
        let lock = match &rpc.waiter {
            Waiter::Restore(Step::Queue(queue)) => {
                queue.exclusive && close.code.0 == RESOURCE_LOCKED
            }
            Waiter::Restore(Step::Consumer(consumer)) => {
                close.code.0 == RESOURCE_LOCKED
                    || (consumer.exclusive && close.code.0 == ACCESS_REFUSED)
            }
            _ => false,
        };
        let Some(restore) = self.restore_mut() else {
            return Some(rpc);
        };
        if !lock || Instant::now() >= restore.retry_until {
            return Some(rpc);
        }
        debug!(channel, %close, "refused for a lock the lost connection holds; retrying");
        restore.retries.push((channel, rpc));
        if restore.retry_timer.is_none() {
            restore.retry_timer = Some(Box::pin(tokio::time::sleep(restore.retry_delay)));
            restore.retry_delay = (restore.retry_delay * 2).min(MAX_RETRY_DELAY);
        }
        None
    }

    /// Round 1: the application's channels with their settings; exchanges and queues.
    fn write_declarations(&mut self) {
        for id in self.channels.ids() {
            if self.channels.get_mut(id).is_some_and(|c| !c.internal) {
                self.reopen_channel(id);
            }
        }
        let Some(restore) = self.restore_mut() else {
            return;
        };
        let topology = &restore.topology;
        if topology.exchanges.is_empty()
            && topology.queues.is_empty()
            && topology.bindings.is_empty()
        {
            return;
        }
        let exchanges = topology.exchanges.clone();
        let queues = topology.queues.clone();
        let entities = exchanges.len() + queues.len() + topology.bindings.len();
        let wanted = (entities / ENTITIES_PER_CHANNEL).clamp(1, RESTORE_CHANNELS);
        let mut channels = Vec::with_capacity(wanted);
        while channels.len() < wanted {
            let Some(channel) = self.channels.free_id() else {
                break;
            };
            self.channels
                .open_internal(channel, self.options.max_body_size);
            self.write_step(channel, ChannelOpen {}.into(), OPEN_OK, Step::Open);
            channels.push(channel);
        }
        if channels.is_empty() {
            warn!("no free channel number to restore the topology on");
            return;
        }
        if let Some(restore) = self.restore_mut() {
            restore.channels = channels.clone();
        }
        let mut next_channel = channels.iter().copied().cycle();
        let mut channel = || next_channel.next().expect("at least one channel");
        for exchange in exchanges {
            let declare = ExchangeDeclare {
                exchange: exchange.name.clone(),
                kind: ShortString::try_from(exchange.kind.as_str()).unwrap_or_default(),
                passive: false,
                durable: exchange.durable,
                auto_delete: exchange.auto_delete,
                internal: exchange.internal,
                no_wait: false,
                arguments: exchange.arguments.clone(),
            };
            self.write_step(
                channel(),
                declare.into(),
                EXCHANGE_OK,
                Step::Exchange(exchange),
            );
        }
        for queue in queues {
            let declare = QueueDeclare {
                queue: if queue.server_named {
                    ShortString::default()
                } else {
                    queue.name.clone()
                },
                passive: false,
                durable: queue.durable,
                exclusive: queue.exclusive,
                auto_delete: queue.auto_delete,
                no_wait: false,
                arguments: queue.arguments.clone(),
            };
            self.write_step(channel(), declare.into(), QUEUE_OK, Step::Queue(queue));
        }
    }

    /// Reopens an application channel and applies its settings again.
    fn reopen_channel(&mut self, id: u16) {
        let Some(state) = self.channels.get_mut(id) else {
            return;
        };
        state.phase = Phase::Open;
        let qos: Vec<BasicQos> = state.qos.iter().flatten().cloned().collect();
        let confirm = state.in_confirm_mode();
        let tx = state.tx;
        if confirm {
            // The broker numbers publishes from 1 again once confirm.select is written.
            state.ledger = Some(ConfirmLedger::counting(
                self.shared.counters.awaiting_confirms.clone(),
            ));
            state.confirm = false;
        }
        self.write_step(id, ChannelOpen {}.into(), OPEN_OK, Step::Open);
        for qos in qos {
            self.write_step(id, qos.into(), QOS_OK, Step::Qos);
        }
        if confirm {
            let select = ConfirmSelect { no_wait: false };
            self.write_step(id, select.into(), CONFIRM_OK, Step::Confirm);
        }
        if tx {
            self.write_step(id, TxSelect {}.into(), TX_OK, Step::Tx);
        }
    }

    /// Round 2: exchange-to-exchange bindings, then queue bindings.
    fn write_bindings(&mut self) {
        let Some(restore) = self.restore_mut() else {
            return;
        };
        if restore.channels.is_empty() {
            return;
        }
        let channels = restore.channels.clone();
        let bindings = restore.topology.bindings.clone();
        let mut next_channel = channels.iter().copied().cycle();
        let (exchanges, queues): (Vec<_>, Vec<_>) = bindings
            .into_iter()
            .partition(|b| matches!(b.destination, BindingDestination::Exchange(_)));
        for binding in exchanges.into_iter().chain(queues) {
            let method: Method = match &binding.destination {
                BindingDestination::Exchange(destination) => ExchangeBind {
                    destination: destination.clone(),
                    source: binding.source.clone(),
                    routing_key: binding.routing_key.clone(),
                    no_wait: false,
                    arguments: binding.arguments.clone(),
                }
                .into(),
                BindingDestination::Queue(queue) => QueueBind {
                    queue: queue.clone(),
                    exchange: binding.source.clone(),
                    routing_key: binding.routing_key.clone(),
                    no_wait: false,
                    arguments: binding.arguments.clone(),
                }
                .into(),
            };
            let replies = match binding.destination {
                BindingDestination::Exchange(_) => EXCHANGE_BIND_OK,
                BindingDestination::Queue(_) => QUEUE_BIND_OK,
            };
            let channel = next_channel.next().expect("at least one channel");
            self.write_step(channel, method, replies, Step::Binding(binding));
        }
    }

    /// Round 2 as well: the consumers, on their own channels, under their original tags.
    fn write_consumers(&mut self) {
        let Some(restore) = self.restore_mut() else {
            return;
        };
        let consumers = restore.topology.consumers.clone();
        for mut consumer in consumers {
            let slot = self
                .channels
                .get_mut(consumer.channel)
                .filter(|state| !state.internal && state.is_open())
                .and_then(|state| state.consumers.get(&consumer.tag));
            let Some(slot) = slot else {
                // Its stream or channel is gone: nothing to feed.
                self.shared
                    .topology()
                    .remove_consumer(consumer.channel, &consumer.tag);
                continue;
            };
            if slot.shared.is_stream() {
                resume_stream(&mut consumer, slot.shared.resume_offset());
            }
            let consume = BasicConsume {
                queue: consumer.queue.clone(),
                consumer_tag: consumer.tag.clone(),
                no_local: consumer.no_local,
                no_ack: consumer.no_ack,
                exclusive: consumer.exclusive,
                no_wait: false,
                arguments: consumer.arguments.clone(),
            };
            self.write_step(
                consumer.channel,
                consume.into(),
                CONSUME_OK,
                Step::Consumer(consumer),
            );
        }
    }

    /// Writes one request of recovery and waits for its reply in the channel's queue.
    fn write_step(
        &mut self,
        channel: u16,
        method: Method,
        replies: &'static [MethodId],
        step: Step,
    ) {
        if let Err(error) = self.write_method(channel, &method) {
            // Too large for a frame (an argument table): it can never be restored.
            self.report_failure(channel, step, error);
            return;
        }
        let Some(state) = self.channels.get_mut(channel) else {
            return;
        };
        state.rpcs.push_back(PendingRpc {
            request: method,
            replies,
            on_reply: crate::shared::command::OnReply::Nothing,
            waiter: Waiter::Restore(step),
        });
        if let Some(restore) = self.restore_mut() {
            restore.outstanding += 1;
        }
    }

    /// The broker answered a request of recovery.
    pub(super) fn restore_step_done(&mut self, step: Step, reply: &Method) {
        if let (Step::Queue(queue), Method::QueueDeclareOk(ok)) = (&step, reply)
            && queue.server_named
            && ok.queue != queue.name
        {
            self.rename_queue(&queue.name, &ok.queue);
        }
        if let Some(restore) = self.restore_mut() {
            restore.outstanding = restore.outstanding.saturating_sub(1);
        }
    }

    fn rename_queue(&mut self, old: &ShortString, new: &ShortString) {
        info!(%old, %new, "a server-named queue was declared again under a new name");
        self.shared.topology().rename_queue(old, new);
        if let Some(restore) = self.restore_mut() {
            restore.topology.rename_queue(old, new);
        }
        self.shared.emit(ConnectionEvent::QueueRenamed {
            old: old.to_string(),
            new: new.to_string(),
        });
    }

    /// The broker refused a request of recovery by closing `channel`: report the request, and
    /// reopen the channel to send again what it discarded.
    pub(super) fn restore_channel_failed(&mut self, channel: u16, close: Close) {
        let _ = self.write_method(channel, &crate::protocol::ChannelCloseOk {}.into());
        let Some(state) = self.channels.get_mut(channel) else {
            return;
        };
        state.content.reset();
        let internal = state.internal;
        let mut discarded = std::mem::take(&mut state.rpcs);
        let Some(refused) = refused_request(&discarded, &close).and_then(|i| discarded.remove(i))
        else {
            return;
        };
        let refused = self.retry_later(channel, refused, &close);
        let error = Error::ChannelClosed { channel, close };
        let Some(refused) = refused else {
            self.reopen_after_refusal(channel, internal, discarded);
            return;
        };
        let refused_step = match refused.waiter {
            Waiter::Restore(step) => step,
            other => {
                PendingRpc {
                    waiter: other,
                    ..refused
                }
                .fail(&error);
                return;
            }
        };
        if let Some(restore) = self.restore_mut() {
            restore.outstanding = restore.outstanding.saturating_sub(1);
        }
        let open_refused = matches!(refused_step, Step::Open);
        self.report_failure(channel, refused_step, error.clone());
        if open_refused {
            // The channel itself cannot be had: what was to go on it fails too.
            for rpc in discarded {
                if let Waiter::Restore(step) = rpc.waiter {
                    if let Some(restore) = self.restore_mut() {
                        restore.outstanding = restore.outstanding.saturating_sub(1);
                    }
                    self.report_failure(channel, step, error.clone());
                }
            }
            if let Some(mut state) = self.channels.remove(channel) {
                self.shared.topology().remove_channel(channel);
                state.fail(&error);
            }
            if let Some(restore) = self.restore_mut() {
                restore.channels.retain(|&c| c != channel);
            }
            return;
        }
        self.reopen_after_refusal(channel, internal, discarded);
    }

    /// Reopens a channel the broker closed on a refused request, and writes again what it
    /// discarded after that request.
    fn reopen_after_refusal(
        &mut self,
        channel: u16,
        internal: bool,
        discarded: std::collections::VecDeque<PendingRpc>,
    ) {
        if internal {
            self.write_step(channel, ChannelOpen {}.into(), OPEN_OK, Step::Open);
        } else {
            self.reopen_channel(channel);
        }
        for rpc in discarded {
            if self.write_method(channel, &rpc.request).is_ok()
                && let Some(state) = self.channels.get_mut(channel)
            {
                state.rpcs.push_back(rpc);
            }
        }
    }

    /// Reports what recovery could not restore; a consumer's stream ends with the error.
    fn report_failure(&mut self, channel: u16, step: Step, error: Error) {
        if let Step::Consumer(consumer) = &step {
            let consumer = consumer.clone();
            self.end_consumer(&consumer, error.clone());
        }
        let entity = step.entity(channel);
        warn!(%entity, %error, "recovery could not restore");
        self.shared
            .emit(ConnectionEvent::TopologyRecoveryFailed { entity, error });
    }

    /// Ends a consumer's stream with [`Error::ConsumerNotRecovered`] and forgets it.
    fn end_consumer(&mut self, consumer: &RecordedConsumer, cause: Error) {
        self.shared
            .topology()
            .remove_consumer(consumer.channel, &consumer.tag);
        let Some(state) = self.channels.get_mut(consumer.channel) else {
            return;
        };
        if let Some(slot) = state.consumers.remove(&consumer.tag) {
            slot.end(Some(Error::ConsumerNotRecovered {
                consumer_tag: consumer.tag.to_string(),
                queue: consumer.queue.to_string(),
                cause: Box::new(cause),
            }));
        }
    }

    /// Everything is restored (or reported): the connection is open again.
    fn finish_recovery(&mut self) {
        let State::Recovering(recovery) = std::mem::replace(&mut self.state, State::Open) else {
            return;
        };
        let RecoveryPhase::Restoring(restore) = recovery.phase else {
            return;
        };
        for channel in restore.channels {
            if let Some(state) = self.channels.get_mut(channel) {
                state.phase = Phase::Closing(Vec::new());
                self.write_channel_close(channel);
            }
        }
        let took = recovery.lost_at.elapsed();
        info!(endpoint = %restore.endpoint, attempts = recovery.attempts, ?took, "connection recovered");
        self.shared.counters.recoveries.incr();
        self.shared.set_status(ConnectionStatus::Open);
        self.shared.emit(ConnectionEvent::Recovered {
            endpoint: restore.endpoint,
            attempts: recovery.attempts,
            took,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FieldTable;

    fn stream_consumer(offset: FieldValue) -> RecordedConsumer {
        RecordedConsumer {
            channel: 1,
            queue: ShortString::from_static("events"),
            tag: ShortString::from_static("reader"),
            no_ack: false,
            no_local: false,
            exclusive: true,
            arguments: FieldTable::new()
                .with(STREAM_OFFSET_ARGUMENT, offset)
                .with("x-priority", 5i32),
        }
    }

    #[test]
    fn a_stream_consumer_resumes_after_the_last_delivery_taken() {
        let mut consumer = stream_consumer(FieldValue::from("first"));
        let original = consumer.clone();
        resume_stream(&mut consumer, Some(7));
        assert_eq!(
            consumer.arguments.get(STREAM_OFFSET_ARGUMENT),
            Some(&FieldValue::I64(7))
        );
        assert_eq!(
            consumer.arguments.get("x-priority"),
            Some(&FieldValue::I32(5))
        );
        assert_eq!(consumer.arguments.len(), 2);
        assert_eq!(
            (consumer.tag, consumer.exclusive),
            (original.tag, original.exclusive)
        );
    }

    #[test]
    fn a_stream_consumer_that_took_nothing_keeps_its_offset() {
        let mut consumer = stream_consumer(FieldValue::from("next"));
        let original = consumer.clone();
        resume_stream(&mut consumer, None);
        assert_eq!(consumer, original);
        resume_stream(&mut consumer, Some(u64::MAX));
        assert_eq!(
            consumer, original,
            "an offset RabbitMQ cannot take changes nothing"
        );
    }
}
