//! aioamqp's guide, "Starting a connection", with warren: connect, tell apart the ways
//! connecting can fail, wait a second, and close.
//!
//! ```sh
//! cargo run --example aioamqp_connect
//! AMQP_URL=amqp://guest:wrong@127.0.0.1:5672/%2f cargo run --example aioamqp_connect
//! AMQP_URL=amqp://127.0.0.1:1 cargo run --example aioamqp_connect
//! ```
//!
//! Exits with status 1, after one line saying what went wrong, when the connection fails.
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).

use std::time::Duration;

use warren::{Connection, ConnectionOptions, Error, ReplyCode};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    // Parsing first gives the options, whose Display hides the password, for messages.
    let options: ConnectionOptions = match url.parse() {
        Ok(options) => options,
        Err(error) => fail(format!("AMQP_URL: {error}")),
    };
    let broker = options.to_string();

    let connection = match Connection::connect_with(options).await {
        Ok(connection) => connection,
        // Nothing listens there, or the host name does not resolve.
        Err(Error::Connect { address, source }) => fail(format!(
            "nothing answers at {address} ({source}): is RabbitMQ running?"
        )),
        Err(error @ Error::Authentication { .. }) => fail(format!("login refused: {error}")),
        // An unknown virtual host, or one the user may not use.
        Err(Error::ConnectionClosed(close)) if close.code == ReplyCode::NOT_ALLOWED => {
            fail(format!("{broker} refused the virtual host: {}", close.text))
        }
        Err(error) if error.is_timeout() => fail(format!(
            "{broker} did not complete the handshake in time: {error}"
        )),
        Err(error) => fail(format!("cannot connect to {broker}: {error}")),
    };

    let properties = connection.server_properties();
    let field = |key| properties.get(key).and_then(|v| v.as_str()).unwrap_or("?");
    println!(
        "connected to {} {} at {broker}",
        field("product"),
        field("version")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    println!("closing the connection");
    connection.close().await?;
    Ok(())
}

fn fail(message: String) -> ! {
    eprintln!("{message}");
    std::process::exit(1);
}
