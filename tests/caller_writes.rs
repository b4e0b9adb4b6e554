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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
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
