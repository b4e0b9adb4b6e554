//! The tx class against the real broker: select, commit, rollback of publishes and acks, and
//! that transactions and confirms exclude each other.

mod common;

use std::time::Duration;

use common::*;
use warren::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, ReplyCode};

async fn tx_channel(connection: &warren::Connection) -> warren::Channel {
    let channel = open(connection).await;
    within("tx.select", channel.tx_select())
        .await
        .expect("tx.select");
    channel
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_discards_publishes() {
    run(async {
        let connection = connect().await;
        let observer = confirm_channel(&connection).await;
        let queue = exclusive_queue(&observer).await;
        let channel = tx_channel(&connection).await;
        for i in 0..3 {
            publish(&channel, "", &queue, format!("m{i}").as_bytes()).await;
        }
        assert_eq!(
            queue_counts(&observer, &queue).await.message_count,
            0,
            "nothing is enqueued before the commit"
        );
        within("tx.rollback", channel.tx_rollback())
            .await
            .expect("tx.rollback");
        // Committing now commits an empty transaction: the rolled-back publishes are gone.
        within("tx.commit", channel.tx_commit())
            .await
            .expect("tx.commit");
        assert_eq!(queue_counts(&observer, &queue).await.message_count, 0);
        assert_eq!(get_body(&observer, &queue).await, None);
        assert!(channel.is_open());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_delivers_publishes() {
    run(async {
        let connection = connect().await;
        let observer = confirm_channel(&connection).await;
        let queue = exclusive_queue(&observer).await;
        let channel = tx_channel(&connection).await;
        for i in 0..3 {
            publish(&channel, "", &queue, format!("m{i}").as_bytes()).await;
        }
        assert_eq!(queue_counts(&observer, &queue).await.message_count, 0);
        within("tx.commit", channel.tx_commit())
            .await
            .expect("tx.commit");
        assert_eq!(queue_counts(&observer, &queue).await.message_count, 3);
        for i in 0..3 {
            assert_eq!(
                get_body(&observer, &queue).await,
                Some(format!("m{i}").into_bytes())
            );
        }
        // The channel stays transactional: the next publish waits for the next commit.
        publish(&channel, "", &queue, b"next").await;
        assert_eq!(queue_counts(&observer, &queue).await.message_count, 0);
        within("tx.commit", channel.tx_commit()).await.unwrap();
        assert_eq!(
            get_body(&observer, &queue).await.as_deref(),
            Some(&b"next"[..])
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ack_inside_a_rolled_back_transaction_is_undone() {
    run(async {
        let connection = connect().await;
        let observer = confirm_channel(&connection).await;
        let queue = exclusive_queue(&observer).await;
        publish(&observer, "", &queue, b"acked twice").await;

        // Rolled back: the ack never happened, so closing the channel requeues the message.
        let channel = tx_channel(&connection).await;
        let message = within(
            "basic.get",
            channel.basic_get(&queue, BasicGetOptions::default()),
        )
        .await
        .unwrap()
        .expect("the message");
        within("ack", message.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        within("tx.rollback", channel.tx_rollback()).await.unwrap();
        within("channel.close", channel.close()).await.unwrap();
        // The broker requeues a closed channel's unacknowledged messages after its close-ok,
        // so the count may need a moment; a rolled-back ack that took effect stays at 0.
        eventually_within(
            Duration::from_secs(5),
            "the rolled-back ack to leave the message unacknowledged, so that it is requeued",
            || async { queue_counts(&observer, &queue).await.message_count == 1 },
        )
        .await;

        // Committed: the ack takes effect, nothing comes back.
        let channel = tx_channel(&connection).await;
        let message = within(
            "basic.get",
            channel.basic_get(&queue, BasicGetOptions::default()),
        )
        .await
        .unwrap()
        .expect("the requeued message");
        assert!(message.envelope.redelivered);
        within("ack", message.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        within("tx.commit", channel.tx_commit()).await.unwrap();
        within("channel.close", channel.close()).await.unwrap();
        assert_eq!(queue_counts(&observer, &queue).await.message_count, 0);
        assert_eq!(get_body(&observer, &queue).await, None);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_and_confirms_exclude_each_other() {
    run(async {
        let connection = connect().await;
        let channel = tx_channel(&connection).await;
        let result = within(
            "confirm.select on a transactional channel",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await;
        assert_eq!(
            result.expect_err("the broker refuses").reply_code(),
            Some(ReplyCode::PRECONDITION_FAILED)
        );
        let channel = confirm_channel(&connection).await;
        let result = within("tx.select on a confirm channel", channel.tx_select()).await;
        assert_eq!(
            result.expect_err("the broker refuses").reply_code(),
            Some(ReplyCode::PRECONDITION_FAILED)
        );
        assert!(connection.is_open());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_without_select_is_a_channel_error() {
    run(async {
        let (connection, channel) = channel().await;
        let result = within("tx.commit without tx.select", channel.tx_commit()).await;
        assert_eq!(
            result.expect_err("not in a transaction").reply_code(),
            Some(ReplyCode::PRECONDITION_FAILED)
        );
        assert!(!channel.is_open());
        assert!(connection.is_open());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}
