//! `warren publish`: one message, mandatory, with a publisher confirm: "confirmed" means that
//! a queue took it.

use std::io::{IsTerminal, Read};

use bytes::Bytes;
use warren::wire::{ShortString, Timestamp};
use warren::{
    BasicProperties, BasicPublishOptions, ConfirmSelectOptions, Confirmation, Connection,
};

use crate::cli::{PropertyArgs, PublishArgs};
use crate::failure::{EXIT_NACKED, EXIT_NOT_ROUTED, Failure, with_connection};
use crate::values::table;

pub async fn run(url: &str, args: PublishArgs) -> Result<(), Failure> {
    // Everything that can be wrong with the input is found before connecting.
    let body = read_body(&args)?;
    let properties = properties(args.properties)?;
    let PublishArgs {
        exchange,
        routing_key,
        no_mandatory,
        ..
    } = args;
    // Mandatory unless asked otherwise: an unroutable message is an error, not "confirmed".
    let mandatory = !no_mandatory;
    with_connection(url, "publish", |connection| async move {
        publish(
            &connection,
            &exchange,
            &routing_key,
            mandatory,
            body,
            properties,
        )
        .await
    })
    .await
}

async fn publish(
    connection: &Connection,
    exchange: &str,
    routing_key: &str,
    mandatory: bool,
    body: Bytes,
    properties: BasicProperties,
) -> Result<(), Failure> {
    let channel = connection.open_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let size = body.len();
    let options = BasicPublishOptions {
        mandatory,
        ..Default::default()
    };
    let confirm = channel
        .basic_publish(exchange, routing_key, options, body, properties)
        .await?;
    let target = if exchange.is_empty() {
        format!("the default exchange with routing key {routing_key:?}")
    } else {
        format!("exchange {exchange:?} with routing key {routing_key:?}")
    };
    match confirm.await? {
        Confirmation::Ack => {
            println!("published {size} bytes to {target}: confirmed");
            Ok(())
        }
        Confirmation::Nack => Err(Failure::with_code(
            format!("the broker nacked the message to {target}: it may not have been stored"),
            EXIT_NACKED,
        )),
        Confirmation::Returned(returned) => Err(Failure::with_code(
            format!(
                "not routed: no queue took the message to {target}, and the broker returned it \
                 ({} {}); bind a queue, or publish with --no-mandatory to let it be dropped",
                returned.reply_code.0,
                returned.reply_text.as_str()
            ),
            EXIT_NOT_ROUTED,
        )),
        other => Err(Failure::new(format!(
            "unexpected confirmation for the message to {target}: {other:?}"
        ))),
    }
}

/// The body: the argument, the file, or standard input.
fn read_body(args: &PublishArgs) -> Result<Bytes, Failure> {
    if let Some(body) = &args.body {
        return Ok(Bytes::from(body.clone()));
    }
    let from_stdin = match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            return std::fs::read(path)
                .map(Bytes::from)
                .map_err(|e| Failure::new(format!("cannot read {}: {e}", path.display())));
        }
        _ => std::io::stdin(),
    };
    if from_stdin.is_terminal() {
        eprintln!("warren: reading the message body from the terminal; end it with Ctrl-D");
    }
    let mut body = Vec::new();
    from_stdin
        .lock()
        .read_to_end(&mut body)
        .map_err(|e| Failure::new(format!("cannot read standard input: {e}")))?;
    Ok(Bytes::from(body))
}

/// The message properties from their flags.
fn properties(args: PropertyArgs) -> Result<BasicProperties, Failure> {
    fn short(flag: &str, value: Option<String>) -> Result<Option<ShortString>, Failure> {
        value
            .map(|v| {
                ShortString::try_from(v)
                    .map_err(|_| Failure::new(format!("{flag}: longer than 255 bytes")))
            })
            .transpose()
    }
    let delivery_mode = if args.persistent {
        Some(2)
    } else {
        args.delivery_mode
    };
    Ok(BasicProperties {
        content_type: short("--content-type", args.content_type)?,
        content_encoding: short("--content-encoding", args.content_encoding)?,
        headers: (!args.headers.is_empty()).then(|| table(args.headers)),
        delivery_mode,
        priority: args.priority,
        correlation_id: short("--correlation-id", args.correlation_id)?,
        reply_to: short("--reply-to", args.reply_to)?,
        expiration: short("--expiration", args.expiration.map(|ms| ms.to_string()))?,
        message_id: short("--message-id", args.message_id)?,
        timestamp: args.timestamp.map(Timestamp),
        kind: short("--type", args.kind)?,
        user_id: short("--user-id", args.user_id)?,
        app_id: short("--app-id", args.app_id)?,
        reserved: None,
        invalid: None,
    })
}
