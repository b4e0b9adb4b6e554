//! The server side of warren's `rpc` scenario, shared by `runner-warren` (replies matched by
//! hand on a reply queue) and `runner-warren-rpc` (`warren::rpc::RpcClient`), so that both
//! measure their client against the same server.

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use warren::protocol::BasicProperties;
use warren::{BasicConsumeOptions, BasicPublishOptions, Connection};

use crate::{BoxError, Result};

/// A server on its own connection that answers `total` requests from queue `requests`, each
/// with `body` published to the request's `reply_to` under its `correlation_id` (no_ack on
/// both sides). Returns the connection, to close once the task is done, and the task.
pub async fn spawn(
    url: &str,
    requests: &str,
    body: Bytes,
    total: u64,
) -> Result<(Connection, JoinHandle<Result<(), BoxError>>)> {
    let connection = Connection::connect(url).await?;
    let channel = connection.open_channel().await?;
    let mut requests_in = channel
        .basic_consume(
            requests,
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
        )
        .await?;
    let server = tokio::spawn(async move {
        for _ in 0..total {
            let request = requests_in
                .next()
                .await
                .ok_or("the server's consumer ended")??;
            let reply_to = request
                .properties
                .reply_to
                .as_deref()
                .ok_or("a request without reply_to")?;
            let properties = BasicProperties {
                correlation_id: request.properties.correlation_id.clone(),
                ..Default::default()
            };
            drop(
                channel
                    .basic_publish(
                        "",
                        reply_to,
                        BasicPublishOptions::default(),
                        body.clone(),
                        properties,
                    )
                    .await?,
            );
        }
        Ok::<(), BoxError>(())
    });
    Ok((connection, server))
}
