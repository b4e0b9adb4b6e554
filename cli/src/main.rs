//! `warren`: a command line tool for RabbitMQ, on the warren client.
//!
//! Every subcommand connects to the broker of `--url` (or AMQP_URL), does its job on one
//! connection, and closes it. Errors are one line on stderr, `warren: ...`, and a non-zero exit
//! status; a password never shows.

mod cli;
mod consume;
mod failure;
mod histogram;
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return report(Failure::new(format!("cannot start the runtime: {e}"))),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(failure),
    }
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
