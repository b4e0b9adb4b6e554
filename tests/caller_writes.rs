//! Acknowledgements that the application's thread writes to the socket itself, outside the
//! runtime's tasks (`block_on`, as in `#[tokio::main]`): they reach the broker without the
//! connection's driver, in order with everything the driver writes, on every channel.

mod common;

use std::time::Duration;

use common::*;
use warren::wire::FieldTable;
use warren::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, Confirmation, ConnectionStatus, ExchangeKind, QueueBindOptions,
    QueueDeclareOptions,
};

/// A multi-thread runtime with `workers` workers, on which the direct path is on; the test's
/// thread, in `block_on`, is outside its tasks.
fn multi_thread_runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A fanout exchange for dead letters and the queue it feeds (named, so that another
/// connection can read it).
async fn dead_letters(channel: &warren::Channel, cleanup: &mut Cleanup) -> (String, String) {
    let dlx = cleanup.exchange(unique("caller-writes-dlx"));
    declare_exchange(channel, &dlx, ExchangeKind::Fanout).await;
    let dead = cleanup.queue(unique("caller-writes-dead"));
    declare_queue(channel, &dead).await;
    within(
        "queue.bind",
        channel.queue_bind(&dead, &dlx, "", QueueBindOptions::default()),
    )
    .await
    .expect("binding the dead-letter queue");
    (dlx, dead)
}

/// A queue whose rejected messages go to `dlx`.
async fn work_queue(channel: &warren::Channel, cleanup: &mut Cleanup, dlx: &str) -> String {
    let work = cleanup.queue(unique("caller-writes-work"));
    declare_queue_with(
        channel,
        &work,
        QueueDeclareOptions {
            arguments: FieldTable::new().with("x-dead-letter-exchange", dlx),
            ..Default::default()
        },
    )
    .await;
    work
}

/// A rejection made in `block_on` while the runtime's only worker, where the driver runs, is
/// kept busy must still reach the broker: the application's thread wrote it (through the
/// driver, it would wait for the worker).
#[test]
fn a_rejection_made_outside_the_runtime_reaches_the_broker_without_the_driver() {
    let mut cleanup = Cleanup::new();
    let runtime = multi_thread_runtime(1);
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (connection, dead) = runtime.block_on(run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let (dlx, dead) = dead_letters(&channel, &mut cleanup).await;
        let work = work_queue(&channel, &mut cleanup, &dlx).await;
        publish(&channel, "", &work, b"rejected by the caller's thread").await;
        let mut consumer = within(
            "basic.consume",
            channel.basic_consume(&work, BasicConsumeOptions::default()),
        )
        .await
        .expect("consuming");
        let delivery = next_delivery(&mut consumer).await;
        // Let the driver finish its turn, then take the worker away from it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (blocking, blocked) = std::sync::mpsc::channel();
        tokio::spawn(async move {
            blocking.send(()).expect("the test waits");
            let _ = released.recv();
        });
        blocked.recv().expect("the worker is blocked");
        delivery
            .reject(BasicRejectOptions { requeue: false })
            .await
            .expect("rejecting");
        (connection, dead)
    }));
    // Another runtime looks for the message in the dead-letter queue while the first one's
    // worker is still blocked.
    let checker = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    checker.block_on(run(async {
        let connection = connect().await;
        let channel = open(&connection).await;
        let mut found = None;
        for _ in 0..100 {
            found = get_body(&channel, &dead).await;
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            found.as_deref(),
            Some(&b"rejected by the caller's thread"[..]),
            "the rejection did not reach the broker while the driver could not run"
        );
        connection.close().await.expect("closing");
    }));
    release.send(()).expect("the blocking task waits");
    runtime.block_on(async { connection.close().await.expect("closing") });
}

/// Several threads outside the runtime consume and settle on channels of one connection
/// (acks one by one and `multiple`, nacks, rejects) and one publishes, while tasks on the
/// workers publish on the same connection through the driver. A frame of one writer inside another's would make the
/// broker close the connection (frame errors are connection errors), and an acknowledgement
/// overtaking an earlier one (a single after the `multiple` that covered it) would close a
/// channel (406): neither may happen, and every message must be settled as asked.
#[test]
fn acknowledgements_from_threads_outside_the_runtime_interleave_with_the_drivers_writes() {
    const CONSUMERS: usize = 3;
    const PER_QUEUE: usize = 10_000;
    let mut cleanup = Cleanup::new();
    let runtime = multi_thread_runtime(2);
    let (connection, queues, dead) = runtime.block_on(run(async {
        let connection = connect_with(options_without_recovery()).await;
        let channel = open(&connection).await;
        let (dlx, dead) = dead_letters(&channel, &mut cleanup).await;
        let mut queues = Vec::new();
        for _ in 0..CONSUMERS {
            queues.push(work_queue(&channel, &mut cleanup, &dlx).await);
        }
        (connection, queues, dead)
    }));

    // Publishers, confirmed: one per queue, the first on a thread outside the runtime (it
    // writes its publishes itself while the driver is idle), the others in tasks on the
    // workers (through the driver).
    let publish = |queue: String| {
        let connection = connection.clone();
        async move {
            let channel = confirm_channel(&connection).await;
            let mut confirms = Vec::with_capacity(PER_QUEUE);
            for n in 0..PER_QUEUE {
                let confirm = channel
                    .basic_publish(
                        "",
                        &queue,
                        BasicPublishOptions::default(),
                        n.to_string().into_bytes(),
                        Default::default(),
                    )
                    .await
                    .expect("publishing");
                confirms.push(confirm);
            }
            for confirm in confirms {
                assert_eq!(confirm.await.expect("confirmation"), Confirmation::Ack);
            }
        }
    };
    let thread_publisher = {
        let publishing = publish(queues[0].clone());
        let handle = runtime.handle().clone();
        std::thread::spawn(move || handle.block_on(run(publishing)))
    };
    let task_publishers: Vec<_> = queues[1..]
        .iter()
        .map(|queue| runtime.spawn(publish(queue.clone())))
        .collect();

    // Consumers: a thread each, in block_on. Every 7th message is nacked or rejected (without
    // requeue: dead-lettered), every 10th acknowledged with `multiple`, the rest one by one.
    let consumers: Vec<_> = queues
        .iter()
        .cloned()
        .map(|queue| {
            let connection = connection.clone();
            let handle = runtime.handle().clone();
            std::thread::spawn(move || {
                handle.block_on(run(async move {
                    let channel = open(&connection).await;
                    channel
                        .basic_qos(200, BasicQosOptions::default())
                        .await
                        .expect("basic.qos");
                    let mut consumer = channel
                        .basic_consume(&queue, BasicConsumeOptions::default())
                        .await
                        .expect("consuming");
                    let mut dead_lettered = 0;
                    let mut unacked_since_multiple = Vec::new();
                    for n in 0..PER_QUEUE {
                        let delivery = next_delivery(&mut consumer).await;
                        assert_eq!(
                            delivery.body,
                            n.to_string().into_bytes(),
                            "order on {queue}"
                        );
                        if n % 10 == 9 {
                            delivery
                                .ack(BasicAckOptions { multiple: true })
                                .await
                                .expect("multiple ack");
                            unacked_since_multiple.clear();
                        } else if n % 10 >= 6 {
                            // Left for the next `multiple` ack.
                            unacked_since_multiple.push(delivery);
                        } else if n % 7 == 3 {
                            dead_lettered += 1;
                            let settled = match n % 2 {
                                0 => {
                                    let options = BasicNackOptions {
                                        multiple: false,
                                        requeue: false,
                                    };
                                    delivery.nack(options).await
                                }
                                _ => delivery.reject(BasicRejectOptions { requeue: false }).await,
                            };
                            settled.expect("nack or reject");
                        } else {
                            delivery.ack(BasicAckOptions::default()).await.expect("ack");
                        }
                    }
                    assert!(unacked_since_multiple.is_empty());
                    drop(consumer);
                    channel.close().await.expect("closing the channel");
                    dead_lettered
                }))
            })
        })
        .collect();

    thread_publisher.join().expect("the publisher thread");
    let dead_lettered: usize = consumers
        .into_iter()
        .map(|consumer| consumer.join().expect("a consumer thread"))
        .sum();
    runtime.block_on(run(async {
        for publisher in task_publishers {
            publisher.await.expect("a publisher task");
        }
        // Settled as asked: nothing back in the work queues (an unsent ack would have been
        // requeued when the channel closed), the rejected ones dead-lettered.
        let channel = open(&connection).await;
        for queue in &queues {
            assert_eq!(
                queue_counts(&channel, queue).await.message_count,
                0,
                "{queue}"
            );
        }
        eventually("the rejected messages are dead-lettered", || {
            let channel = channel.clone();
            let dead = dead.clone();
            async move {
                queue_counts(&channel, &dead).await.message_count as usize == dead_lettered
            }
        })
        .await;
        let stats = connection.stats();
        assert_eq!(stats.rejected as usize, dead_lettered);
        // The threads outside the runtime wrote some of their frames themselves.
        assert!(stats.direct_writes > 0, "{stats:?}");
        assert_eq!(stats.disconnects, 0);
        assert_eq!(connection.status(), ConnectionStatus::Open);
        connection.close().await.expect("closing");
    }));
}

/// Stands in for an application's thread outside the runtime's tasks that the driver wakes:
/// when woken, another such thread publishes once on a confirm-mode channel, and the wake
/// returns when it has. The driver woke it at the end of its turn only if that publish was
/// written by the publishing thread itself (`ConnectionStats::direct_writes` moved): in the
/// middle of a turn, the driver is busy and the publish goes through its queue.
struct PublishWhenWoken {
    connection: warren::Connection,
    channel: warren::Channel,
    queue: String,
    handle: tokio::runtime::Handle,
    outcome: std::sync::Mutex<Option<(bool, warren::PublishConfirm)>>,
}

impl PublishWhenWoken {
    fn waker(self: &std::sync::Arc<Self>) -> std::task::Waker {
        std::task::Waker::from(self.clone())
    }

    /// Whether the thread woken wrote its publish itself, and that publish's confirmation;
    /// `None` if no wake came yet.
    fn outcome(&self) -> Option<(bool, warren::PublishConfirm)> {
        self.outcome.lock().expect("not poisoned").take()
    }
}

impl std::task::Wake for PublishWhenWoken {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        let probe = self.clone();
        // A thread of its own (the driver's worker is the one waking): in `block_on`,
        // outside the runtime's tasks, as an application's loop in `#[tokio::main]`.
        let outcome = std::thread::spawn(move || {
            probe.handle.block_on(async {
                let before = probe.connection.stats().direct_writes;
                let confirm = probe
                    .channel
                    .basic_publish(
                        "",
                        &probe.queue,
                        BasicPublishOptions::default(),
                        &b"published when woken"[..],
                        Default::default(),
                    )
                    .await
                    .expect("publishing");
                (probe.connection.stats().direct_writes > before, confirm)
            })
        })
        .join()
        .expect("the publishing thread");
        let mut slot = self.outcome.lock().expect("not poisoned");
        if slot.is_none() {
            *slot = Some(outcome);
        }
    }
}

/// Polls `future` once with `waker`: whether it is still pending.
fn pending_with<F: std::future::Future + Unpin>(future: &mut F, waker: &std::task::Waker) -> bool {
    let mut cx = std::task::Context::from_waker(waker);
    std::pin::Pin::new(future).poll(&mut cx).is_pending()
}

/// The driver tells a waiting publisher or consumer (wakes it) when its turn is over, after
/// it has said it is idle: a thread outside the runtime woken by a confirmation or a delivery
/// then writes its next publish itself. Woken in the middle of the turn (as before), it found
/// the driver busy and queued the publish, waking the driver once more for each batch.
#[test]
fn a_thread_woken_by_a_confirmation_or_a_delivery_finds_the_driver_idle() {
    let mut cleanup = Cleanup::new();
    let runtime = multi_thread_runtime(2);
    let (connection, channel, queue) = runtime.block_on(run(async {
        let connection = connect_with(options_without_recovery()).await;
        let channel = confirm_channel(&connection).await;
        let queue = cleanup.queue(unique("caller-writes-woken"));
        declare_queue(&channel, &queue).await;
        (connection, channel, queue)
    }));
    let probe = || {
        std::sync::Arc::new(PublishWhenWoken {
            connection: connection.clone(),
            channel: channel.clone(),
            queue: queue.clone(),
            handle: runtime.handle().clone(),
            outcome: std::sync::Mutex::new(None),
        })
    };
    let woken = |probe: &PublishWhenWoken| {
        for _ in 0..500 {
            if let Some(outcome) = probe.outcome() {
                return outcome;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the waiting future was not woken within 5 s");
    };

    // Each half is tried up to WOKEN times and passes at the first publish the woken thread
    // wrote itself: a loaded machine may run the driver again (a timer) before that thread
    // publishes, but with the wake in the middle of the turn no attempt can pass.
    const WOKEN: usize = 5;

    // A confirmation: polled once before the broker's ack can have come (if it came, again).
    let mut woken_attempts = 0;
    for attempt in 0.. {
        assert!(attempt < 50, "the confirmations came before the first poll");
        let probe = probe();
        let mut confirm = runtime
            .block_on(run(channel.basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                &b"confirmed"[..],
                Default::default(),
            )))
            .expect("publishing");
        if !pending_with(&mut confirm, &probe.waker()) {
            continue;
        }
        let (direct, probes_confirm) = woken(&probe);
        runtime.block_on(run(async {
            assert_eq!(confirm.await.expect("confirmation"), Confirmation::Ack);
            assert_eq!(
                probes_confirm.await.expect("confirmation"),
                Confirmation::Ack
            );
        }));
        if direct {
            break;
        }
        woken_attempts += 1;
        assert!(
            woken_attempts < WOKEN,
            "the publisher woken by its confirmation found the driver busy, {WOKEN} times"
        );
    }

    // A delivery: the consumer waits on an empty queue, then a message comes.
    let (consumed_queue, mut consumer) = runtime.block_on(run(async {
        let channel = open(&connection).await;
        let queue = cleanup.queue(unique("caller-writes-woken-consumer"));
        declare_queue(&channel, &queue).await;
        let consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .expect("consuming");
        (queue, consumer)
    }));
    let publisher = runtime.block_on(run(open(&connection)));
    for attempt in 1.. {
        let probe = probe();
        let mut next = Box::pin(futures_util::StreamExt::next(&mut consumer));
        assert!(
            pending_with(&mut next, &probe.waker()),
            "the queue is empty"
        );
        runtime.block_on(run(publish(&publisher, "", &consumed_queue, b"delivered")));
        let (direct, probes_confirm) = woken(&probe);
        runtime.block_on(run(async {
            assert_eq!(
                probes_confirm.await.expect("confirmation"),
                Confirmation::Ack
            );
            let delivery = within("the delivery", next)
                .await
                .expect("a delivery")
                .expect("not an error");
            assert_eq!(&delivery.body[..], b"delivered");
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
        }));
        if direct {
            break;
        }
        assert!(
            attempt < WOKEN,
            "the consumer woken by its delivery found the driver busy, {WOKEN} times"
        );
    }
    runtime.block_on(run(async {
        connection.close().await.expect("closing");
    }));
}
