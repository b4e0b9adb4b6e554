//! `warren`: a command line tool for RabbitMQ, on the warren client.
//!
//! Every subcommand connects to the broker of `--url` (or AMQP_URL), does its job on one
//! connection, and closes it. Errors are one line on stderr, `warren: ...`, and a non-zero exit
//! status; a password never shows.

mod cli;
mod consume;
mod failure;
mod histogram;
mod loss;
mod perf;
mod publish;
mod show;
mod topology;
mod values;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::failure::Failure;

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "warren: internal error{location}: {}",
            message.replace('\n', " ")
        );
    }));

    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return report(Failure::new(format!("cannot start the runtime: {e}"))),
    };
    // The command runs in a task on the runtime's workers, not in `block_on` on this thread:
    // `consume` and `publish` are loops that hand every batch to the connection's driver, and
    // from a thread that is not a worker each hand-over wakes a thread (README.md, "Speed:
    // where your loop runs").
    match runtime.block_on(runtime.spawn(run(cli))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(failure)) => report(failure),
        // A panic: the hook above has said where.
        Err(_) => ExitCode::FAILURE,
    }
}

/// The client library's log on stderr, when asked for: down to debug with `-v`, trace with
/// `-vv`; `RUST_LOG`, when set, is the filter instead (`RUST_LOG=warren=warn`, `RUST_LOG=trace`).
/// Off by default: what goes wrong is the one error line, and the library's warnings (a channel
/// the broker closed) would repeat it.
fn init_logging(verbose: u8) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;

    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::new(directives),
        // The library logs connections, handshakes and closes at debug, frames at trace.
        _ => EnvFilter::new(match verbose {
            0 => "off",
            1 => "warren=debug",
            _ => "warren=trace",
        }),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn report(failure: Failure) -> ExitCode {
    if let Some(message) = &failure.message {
        eprintln!("warren: {}", message.replace('\n', " "));
    }
    ExitCode::from(failure.code)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let url = cli.url;
    match cli.command {
        Command::Publish(args) => publish::run(&url, args).await,
        Command::Consume(args) => consume::consume(&url, args).await,
        Command::Get(args) => consume::get(&url, args).await,
        Command::Declare(what) => topology::declare(&url, what).await,
        Command::Bind(what) => topology::bind(&url, what, true).await,
        Command::Unbind(what) => topology::bind(&url, what.into(), false).await,
        Command::Purge(args) => topology::purge(&url, args).await,
        Command::Delete(what) => topology::delete(&url, what).await,
        Command::Perf(args) => perf::run(&url, args).await,
    }
}
