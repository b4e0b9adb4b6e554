//! Routing incoming frames: replies to callers, content to consumers and publishers, closes and
//! flow control to everyone concerned.

use std::sync::atomic::Ordering;

use tracing::{debug, trace, warn};

use super::channels::{ConsumerSlot, ContentMethod, PendingRpc, Phase, Waiter};
use super::{Driver, State};
use crate::error::{Close, Error, Initiator, Result};
use crate::frame::{Content, ContentHeader, Frame};
use crate::protocol::{
    BasicCancelOk, BasicProperties, ChannelCloseOk, ChannelFlowOk, ConnectionCloseOk, Method,
};
use crate::shared::command::{OnReply, RpcReply};
use crate::shared::connection::ConnectionEvent;
use crate::shared::consumer::RawDelivery;
use crate::shared::delivery_queue::Closed;
use crate::shared::messages::ReturnedMessage;
use crate::topology::{
    ExchangeKind, RecordedBinding, RecordedConsumer, RecordedExchange, RecordedQueue,
};
use crate::wire::{ContentProperties, DecodeError, Reader, ShortString};

impl Driver {
    /// [`Driver::dispatch`] within the span of the frame's channel (when a subscriber wants
    /// spans), so that what it logs says which channel it is about.
    #[cold]
    #[inline(never)]
    pub(super) fn dispatch_in_span(&mut self, frame: Frame) -> Result<()> {
        let span = match frame.channel() {
            0 => tracing::Span::none(),
            channel => self.channels.span(channel),
        };
        let _entered = span.enter();
        self.dispatch(frame)
    }

    /// Routes one incoming frame. An `Err` ends the connection.
    pub(super) fn dispatch(&mut self, frame: Frame) -> Result<()> {
        if let State::Closing {
            awaiting_close_ok, ..
        } = &self.state
        {
            // After sending connection.close, everything but close and close-ok is discarded.
            let awaiting = *awaiting_close_ok;
            if let Frame::Method { channel: 0, method } = frame {
                match method {
                    Method::ConnectionCloseOk(_) if awaiting => self.finish_close(Ok(())),
                    Method::ConnectionClose(_) => {
                        let _ = self.write_method(0, &ConnectionCloseOk {}.into());
                        if let State::Closing {
                            awaiting_close_ok, ..
                        } = &mut self.state
                        {
                            *awaiting_close_ok = false;
                        }
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        match frame {
            Frame::Heartbeat => {
                trace!("heartbeat received");
                Ok(())
            }
            Frame::Method { channel: 0, method } => self.connection_method(method),
            Frame::Method { channel, method } => self.channel_method(channel, method),
            Frame::Header { channel, header } => {
                let state = self.channels.for_frame(channel, "content header")?;
                match state.content.header(header)? {
                    Some(content) => self.content(channel, content),
                    None => Ok(()),
                }
            }
            Frame::Body { channel, payload } => {
                let state = self.channels.for_frame(channel, "content body")?;
                match state.content.body(payload)? {
                    Some(content) => self.content(channel, content),
                    None => Ok(()),
                }
            }
        }
    }

    fn connection_method(&mut self, method: Method) -> Result<()> {
        trace!(method = method.name(), "received on channel 0");
        match method {
            Method::ConnectionClose(close) => {
                let close = Close::from_connection_close(&close);
                warn!(%close, "the broker closed the connection");
                let _ = self.write_method(0, &ConnectionCloseOk {}.into());
                let reason = Error::ConnectionClosed(close);
                if self.recovers() {
                    self.flush_before_dropping();
                    self.lose(reason);
                    return Ok(());
                }
                self.fail_everything(&reason);
                self.state = State::Closing {
                    awaiting_close_ok: false,
                    reason,
                    reply: None,
                    deadline: Box::pin(tokio::time::sleep(super::PROTOCOL_CLOSE_GRACE)),
                };
            }
            Method::ConnectionBlocked(blocked) => {
                warn!(reason = %blocked.reason, "the broker blocked the connection");
                let reason = blocked.reason.to_string();
                self.shared.set_blocked(Some(reason.clone()));
                self.shared.emit(ConnectionEvent::Blocked { reason });
            }
            Method::ConnectionUnblocked(_) => {
                debug!("the broker unblocked the connection");
                self.shared.set_blocked(None);
                self.shared.emit(ConnectionEvent::Unblocked);
            }
            other => {
                let id = other.id();
                match self.connection_rpcs.front() {
                    Some(rpc) if rpc.replies.contains(&id) => {
                        let Some(rpc) = self.connection_rpcs.pop_front() else {
                            return Ok(());
                        };
                        if let Method::ConnectionUpdateSecret(update) = &rpc.request {
                            // Recovery logs in with the latest secret.
                            let secret = String::from_utf8_lossy(update.new_secret.as_bytes());
                            self.options.password = secret.into_owned().into();
                        }
                        if let Waiter::Caller(reply) = rpc.waiter {
                            let _ = reply.send(Ok(RpcReply {
                                method: other,
                                content: None,
                            }));
                        }
                    }
                    _ => warn!(
                        method = other.name(),
                        "ignoring an unexpected method on channel 0"
                    ),
                }
            }
        }
        Ok(())
    }

    fn channel_method(&mut self, channel: u16, method: Method) -> Result<()> {
        let state = self.channels.for_frame(channel, "method")?;
        if !state.content.is_idle() {
            return Err(Error::Protocol(DecodeError::UnexpectedFrame {
                got: "method",
                expected: "a content header or body",
            }));
        }
        trace!(channel, method = method.name(), "received");
        if let Phase::Closing(_) = state.phase {
            // After channel.close, only close and close-ok matter; content still has to be
            // framed correctly, so content methods start (discarded) content.
            return match method {
                Method::ChannelCloseOk(_) => {
                    self.channel_closed(channel, None);
                    Ok(())
                }
                Method::ChannelClose(_) => {
                    let _ = self.write_method(channel, &ChannelCloseOk {}.into());
                    self.channel_closed(channel, None);
                    Ok(())
                }
                Method::BasicDeliver(m) => Ok(state.content.start(ContentMethod::Deliver(m))?),
                Method::BasicGetOk(m) => Ok(state.content.start(ContentMethod::GetOk(m))?),
                Method::BasicReturn(m) => Ok(state.content.start(ContentMethod::Return(m))?),
                _ => Ok(()),
            };
        }
        match method {
            Method::BasicDeliver(m) => state.content.start(ContentMethod::Deliver(m))?,
            Method::BasicGetOk(m) => state.content.start(ContentMethod::GetOk(m))?,
            Method::BasicReturn(m) => state.content.start(ContentMethod::Return(m))?,
            Method::BasicAck(m) => match &mut state.ledger {
                Some(ledger) => {
                    let settled =
                        ledger.settle(m.delivery_tag, m.multiple, true, &mut self.settled);
                    self.shared.counters.confirmed.add(settled);
                }
                None => warn!(channel, "basic.ack on a channel not in confirm mode"),
            },
            Method::BasicNack(m) => match &mut state.ledger {
                Some(ledger) => {
                    let settled =
                        ledger.settle(m.delivery_tag, m.multiple, false, &mut self.settled);
                    self.shared.counters.nacked.add(settled);
                }
                None => warn!(channel, "basic.nack on a channel not in confirm mode"),
            },
            Method::BasicCancel(cancel) => {
                warn!(channel, consumer = %cancel.consumer_tag, "the broker cancelled a consumer");
                if let Some(slot) = state.consumers.remove(&cancel.consumer_tag) {
                    slot.end(Some(Error::ConsumerCancelled {
                        consumer_tag: cancel.consumer_tag.to_string(),
                    }));
                }
                self.shared
                    .topology()
                    .remove_consumer(channel, &cancel.consumer_tag);
                if !cancel.no_wait {
                    let ok = BasicCancelOk {
                        consumer_tag: cancel.consumer_tag,
                    };
                    self.write_method(channel, &ok.into())?;
                }
            }
            Method::ChannelFlow(flow) => {
                debug!(channel, active = flow.active, "channel.flow");
                state.shared.flow.send_replace(flow.active);
                let ok = ChannelFlowOk {
                    active: flow.active,
                };
                self.write_method(channel, &ok.into())?;
            }
            Method::ChannelClose(close) => {
                let close = Close::from_channel_close(&close);
                if self.restoring() {
                    self.restore_channel_failed(channel, close);
                    return Ok(());
                }
                warn!(channel, %close, "the broker closed a channel");
                self.write_method(channel, &ChannelCloseOk {}.into())?;
                self.channel_closed(channel, Some(close));
            }
            Method::ChannelOpenOk(_) if matches!(state.phase, Phase::Opening(_)) => {
                if let Phase::Opening(reply) = &mut state.phase {
                    let reply = reply.take();
                    state.phase = Phase::Open;
                    let shared = state.shared.clone();
                    let key = shared.key();
                    let delivered = reply.is_some_and(|r| r.send(Ok(shared)).is_ok());
                    if !delivered {
                        // The caller gave up (timeout or dropped future): close it again.
                        self.close_channel(key, None);
                    }
                }
            }
            reply => self.rpc_reply(channel, reply, None)?,
        }
        Ok(())
    }

    /// Completes the oldest request of `channel` that `reply` answers.
    ///
    /// Usually the oldest request of all: the broker answers a channel's requests in order,
    /// with one exception. RabbitMQ's `basic.consume-ok` comes from the queue's process, not
    /// the channel's, so a request sent after a `basic.consume` (a `basic.get`, a
    /// `queue.declare`) can be answered before it. A reply therefore goes to the oldest
    /// request it can answer, and a `basic.consume-ok` to the consume that asked for its tag
    /// when one did.
    fn rpc_reply(
        &mut self,
        channel: u16,
        reply: Method,
        content: Option<(ContentHeader, Result<bytes::Bytes, DecodeError>)>,
    ) -> Result<()> {
        let Some(state) = self.channels.get_mut(channel) else {
            return Ok(());
        };
        let id = reply.id();
        let asked_for_tag = |rpc: &PendingRpc| match (&rpc.request, &reply) {
            (Method::BasicConsume(consume), Method::BasicConsumeOk(ok)) => {
                consume.consumer_tag == ok.consumer_tag
            }
            _ => false,
        };
        let position = state
            .rpcs
            .iter()
            .position(asked_for_tag)
            .or_else(|| state.rpcs.iter().position(|rpc| rpc.replies.contains(&id)));
        let Some(rpc) = position.and_then(|i| state.rpcs.remove(i)) else {
            warn!(
                channel,
                method = reply.name(),
                "ignoring a reply nobody waits for"
            );
            return Ok(());
        };
        let PendingRpc {
            request,
            on_reply,
            waiter,
            ..
        } = rpc;
        match waiter {
            Waiter::Restore(step) => self.restore_step_done(step, &reply),
            Waiter::Caller(caller) => {
                self.after_reply(channel, &request, Some(&reply), on_reply);
                if let Err(Ok(unclaimed)) = caller.send(Ok(RpcReply {
                    method: reply,
                    content,
                })) {
                    // The caller gave up (timeout, dropped future): the channel stays in step,
                    // and what the reply started must not outlive the caller.
                    self.release_unclaimed(channel, &request, unclaimed.method);
                }
            }
            Waiter::Nobody => self.after_reply(channel, &request, Some(&reply), on_reply),
        }
        Ok(())
    }

    /// Undoes what a reply started for a caller that is gone: cancels a consumer nobody will
    /// read, and requeues the message of a `basic.get` (unless it was `no_ack`), which would
    /// otherwise stay unacknowledged until the channel closes. (A caller that gives up after
    /// the reply arrived does the same from its side: see `channel::ReplyReceiver`.)
    fn release_unclaimed(&mut self, channel: u16, request: &Method, reply: Method) {
        match (request, reply) {
            (Method::BasicConsume(_), Method::BasicConsumeOk(ok)) => {
                if let Some(key) = self.channels.get_mut(channel).map(|s| s.shared.key()) {
                    self.forget_consumer(key, ok.consumer_tag);
                }
            }
            (Method::BasicGet(get), Method::BasicGetOk(ok)) if !get.no_ack => {
                self.requeue(channel, ok.delivery_tag);
            }
            _ => {}
        }
    }

    /// The driver's bookkeeping for a request that succeeded: consumers, prefetch, confirm
    /// mode, topology. `reply` is `None` for a request sent with `no_wait`, which succeeds
    /// unless the broker closes the channel.
    pub(super) fn after_reply(
        &mut self,
        channel: u16,
        request: &Method,
        reply: Option<&Method>,
        on_reply: OnReply,
    ) {
        let Some(state) = self.channels.get_mut(channel) else {
            return;
        };
        let mut topology = self.shared.topology();
        match request {
            Method::BasicConsume(consume) => {
                let Some(Method::BasicConsumeOk(ok)) = reply else {
                    return;
                };
                if let OnReply::RegisterConsumer {
                    events,
                    shared,
                    no_ack,
                } = on_reply
                {
                    state.consumers.insert(
                        ok.consumer_tag.clone(),
                        ConsumerSlot {
                            events,
                            shared,
                            no_ack,
                        },
                    );
                }
                topology.add_consumer(RecordedConsumer {
                    channel,
                    queue: consume.queue.clone(),
                    tag: ok.consumer_tag.clone(),
                    no_ack: consume.no_ack,
                    no_local: consume.no_local,
                    exclusive: consume.exclusive,
                    arguments: consume.arguments.clone(),
                });
            }
            Method::BasicCancel(cancel) => {
                if let Some(slot) = state.consumers.remove(&cancel.consumer_tag) {
                    slot.end(None);
                }
                state.forgotten.remove(&cancel.consumer_tag);
                topology.remove_consumer(channel, &cancel.consumer_tag);
            }
            Method::BasicQos(qos) => {
                state
                    .shared
                    .prefetch
                    .store(qos.prefetch_count, Ordering::Release);
                state.qos[usize::from(qos.global)] = Some(qos.clone());
            }
            Method::ConfirmSelect(_) => {
                state.shared.confirm_mode.store(true, Ordering::Release);
            }
            Method::TxSelect(_) => state.tx = true,
            // What was delivered so far and not settled is back in the queue, to come again
            // under new tags: acknowledging the old ones would close the channel.
            Method::BasicRecover(_) | Method::BasicRecoverAsync(_) => {
                state.shared.note_recovered(state.last_tag)
            }
            Method::ExchangeDeclare(declare) if !declare.passive => {
                topology.declare_exchange(RecordedExchange {
                    name: declare.exchange.clone(),
                    kind: exchange_kind(&declare.kind),
                    durable: declare.durable,
                    auto_delete: declare.auto_delete,
                    internal: declare.internal,
                    arguments: declare.arguments.clone(),
                });
            }
            Method::ExchangeDelete(delete) => topology.delete_exchange(&delete.exchange),
            Method::QueueDeclare(declare) if !declare.passive => {
                // The broker names the queue when the declare asks for an empty name.
                let name = match reply {
                    Some(Method::QueueDeclareOk(ok)) => ok.queue.clone(),
                    _ => declare.queue.clone(),
                };
                if !name.is_empty() {
                    topology.declare_queue(RecordedQueue {
                        name,
                        server_named: declare.queue.is_empty(),
                        durable: declare.durable,
                        exclusive: declare.exclusive,
                        auto_delete: declare.auto_delete,
                        arguments: declare.arguments.clone(),
                    });
                }
            }
            Method::QueueDelete(delete) => topology.delete_queue(&delete.queue),
            Method::QueueBind(bind) => topology.bind(RecordedBinding::queue(
                &bind.exchange,
                &bind.queue,
                &bind.routing_key,
                &bind.arguments,
            )),
            Method::QueueUnbind(unbind) => topology.unbind(&RecordedBinding::queue(
                &unbind.exchange,
                &unbind.queue,
                &unbind.routing_key,
                &unbind.arguments,
            )),
            Method::ExchangeBind(bind) => topology.bind(RecordedBinding::exchange(
                &bind.source,
                &bind.destination,
                &bind.routing_key,
                &bind.arguments,
            )),
            Method::ExchangeUnbind(unbind) => topology.unbind(&RecordedBinding::exchange(
                &unbind.source,
                &unbind.destination,
                &unbind.routing_key,
                &unbind.arguments,
            )),
            _ => {}
        }
    }

    /// A channel finished closing: by close-ok after our close, or by the broker's close.
    pub(super) fn channel_closed(&mut self, channel: u16, server_close: Option<Close>) {
        let Some(mut state) = self.channels.remove(channel) else {
            return;
        };
        let reason = Error::ChannelClosed {
            channel,
            close: server_close.unwrap_or_else(|| Close::normal(Initiator::Client)),
        };
        // Topology first: the close's caller may look at it as soon as `fail` wakes it.
        self.shared.topology().remove_channel(channel);
        state.fail(&reason);
    }

    /// Handles a complete content: a delivery, a `basic.get` answer or a returned message.
    fn content(&mut self, channel: u16, content: Content<ContentMethod>) -> Result<()> {
        let Content {
            method,
            header,
            body,
        } = content;
        let Some(state) = self.channels.get_mut(channel) else {
            return Ok(());
        };
        if !state.is_open() {
            // Content that arrived after our channel.close: discarded, as the spec says.
            return Ok(());
        }
        match method {
            ContentMethod::Deliver(mut deliver) => {
                deliver.delivery_tag = state.visible_tag(deliver.delivery_tag);
                self.deliver(
                    channel,
                    RawDelivery {
                        deliver,
                        header,
                        body,
                    },
                )
            }
            ContentMethod::GetOk(mut get_ok) => {
                self.shared.counters.fetched.incr();
                get_ok.delivery_tag = state.visible_tag(get_ok.delivery_tag);
                self.rpc_reply(channel, Method::BasicGetOk(get_ok), Some((header, body)))?
            }
            ContentMethod::Return(returned) => {
                let properties = BasicProperties::decode(&mut Reader::new(&header.properties))
                    .unwrap_or_else(|error| {
                        warn!(%error, "returned message with undecodable properties; \
                                           its properties are left empty");
                        BasicProperties::default()
                    });
                let skipped_body_size = body.is_err().then_some(header.body_size);
                if skipped_body_size.is_some() {
                    warn!(
                        channel,
                        size = header.body_size,
                        "returned message over max_body_size; \
                                                              its body is left out"
                    );
                }
                let message = ReturnedMessage {
                    reply_code: crate::protocol::ReplyCode(returned.reply_code),
                    reply_text: returned.reply_text,
                    exchange: returned.exchange,
                    routing_key: returned.routing_key,
                    properties,
                    body: body.unwrap_or_default(),
                    skipped_body_size,
                };
                debug!(channel, exchange = %message.exchange, routing_key = %message.routing_key,
                       "message returned");
                self.shared.counters.returned.incr();
                if !state.shared.publish_return(&message) && state.ledger.is_none() {
                    warn!(
                        channel,
                        "a mandatory message was returned but nothing listens to Channel::returns \
                         and confirms are off: the application will not see it"
                    );
                }
                if let Some(ledger) = &mut state.ledger {
                    ledger.returned(message);
                }
            }
        }
        Ok(())
    }

    /// Hands a delivery to its consumer; stops reading if that takes the consumer buffers
    /// over their budget.
    fn deliver(&mut self, channel: u16, delivery: RawDelivery) {
        let Some(state) = self.channels.get_mut(channel) else {
            return;
        };
        let tag = &delivery.deliver.consumer_tag;
        let Some(slot) = state.consumers.get(tag) else {
            let no_ack = state.forgotten.get(tag).copied().unwrap_or(false);
            if !state.forgotten.contains_key(tag) {
                warn!(channel, consumer = %tag, "delivery for an unknown consumer; requeueing it");
            }
            if !no_ack {
                self.requeue(channel, delivery.deliver.delivery_tag);
            }
            return;
        };
        match slot.events.send_deferred(delivery) {
            Ok(sent) => {
                self.shared.counters.delivered.incr();
                self.consumer_wakes.extend(sent.waker);
                if sent.charged && self.shared.consumer_budget.is_exceeded() {
                    self.start_stall();
                }
            }
            Err(Closed(delivery)) => {
                // The stream was dropped (or never made: its basic.consume was dropped). Cancel
                // the consumer now: the ForgetConsumer its Drop sent may come after this and
                // would then find nothing left to cancel.
                let no_ack = slot.no_ack;
                let key = state.shared.key();
                self.forget_consumer(key, delivery.deliver.consumer_tag.clone());
                if !no_ack {
                    self.requeue(channel, delivery.deliver.delivery_tag);
                }
            }
        }
    }
}

/// The exchange kind named in a declare.
fn exchange_kind(kind: &ShortString) -> ExchangeKind {
    match kind.as_str() {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "topic" => ExchangeKind::Topic,
        "headers" => ExchangeKind::Headers,
        other => ExchangeKind::Custom(other.to_owned()),
    }
}
