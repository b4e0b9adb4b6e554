//! Failures are one line on stderr and a non-zero exit status, never a panic, never a password;
//! and `--help` is complete.

mod common;

use common::{refused_url, warren, warren_with_env};

#[test]
fn a_bad_url_is_one_line() {
    let output = warren(&["--url", "http://guest:hunter2@localhost/", "purge", "q"]);
    let line = output.one_line_error(1, "warren: invalid AMQP URI: ");
    assert!(line.contains("scheme"), "{line}");
    assert!(!output.stderr.contains("hunter2"), "{output:#?}");

    let output = warren(&[
        "--url",
        "amqp://guest:hunter2@localhost:notaport/",
        "purge",
        "q",
    ]);
    output.one_line_error(1, "warren: invalid AMQP URI: ");
    assert!(!output.stderr.contains("hunter2"), "{output:#?}");
}

#[test]
fn a_refused_connection_is_one_line() {
    let url = refused_url("hunter2");
    for args in [
        vec!["--url", url.as_str(), "get", "q"],
        vec!["--url", url.as_str(), "publish", "-k", "q", "x"],
        vec!["--url", url.as_str(), "perf", "--duration", "1"],
    ] {
        let output = warren(&args);
        let line = output.one_line_error(1, "warren: cannot connect to 127.0.0.1:");
        assert!(line.contains("refused"), "{line}");
        assert!(!output.stderr.contains("hunter2"), "{output:#?}");
        assert_eq!(output.stdout, "", "{output:#?}");
    }
}

#[test]
fn amqp_url_selects_the_broker_and_url_overrides_it() {
    let refused = refused_url("hunter2");
    let output = warren_with_env(&["purge", "q"], &[("AMQP_URL", &refused)]);
    output.one_line_error(1, "warren: cannot connect to 127.0.0.1:");
    // --url wins over AMQP_URL.
    let queue = common::unique("url-wins");
    let output = warren_with_env(
        &[
            "--url",
            &common::broker_url(),
            "declare",
            "queue",
            &queue,
            "--exclusive",
        ],
        &[("AMQP_URL", &refused)],
    )
    .ok();
    assert!(output.stdout.contains("declared"), "{output:#?}");
}

#[test]
fn a_refused_login_is_one_line() {
    let broker: warren::ConnectionOptions = common::broker_url().parse().unwrap();
    let url = format!(
        "amqp://warren-no-such-user:hunter2@{}:{}/%2f",
        broker.get_host(),
        broker.get_port()
    );
    let output = warren(&["--url", &url, "get", "q"]);
    output.one_line_error(1, "warren: the broker refused the login");
    assert!(!output.stderr.contains("hunter2"), "{output:#?}");

    // A user that exists, with a wrong password.
    let url = format!(
        "amqp://{}:hunter2-wrong@{}:{}/%2f",
        broker.get_username(),
        broker.get_host(),
        broker.get_port()
    );
    let output = warren(&["--url", &url, "purge", "q"]);
    let line = output.one_line_error(1, "warren: the broker refused the login");
    assert!(line.contains("check the user name and password"), "{line}");
    assert!(!output.stderr.contains("hunter2"), "{output:#?}");
}

#[test]
fn an_unknown_virtual_host_is_one_line() {
    // The broker's URL, credentials included, with another virtual host.
    let broker = common::broker_url();
    let authority = broker.find("://").expect("a URL") + 3;
    let path = broker[authority..]
        .find(['/', '?'])
        .map_or(broker.len(), |i| authority + i);
    let url = format!("{}/warren-no-such-vhost", &broker[..path]);
    let output = warren(&["--url", &url, "get", "q"]);
    let line = output.one_line_error(1, "warren: ");
    assert!(line.contains("NOT_ALLOWED"), "{line}");
    assert!(line.contains("warren-no-such-vhost"), "{line}");
}

#[test]
fn a_missing_queue_is_one_line_for_every_command_that_needs_it() {
    let queue = common::unique("missing");
    for args in [
        vec!["get", queue.as_str()],
        vec!["consume", queue.as_str(), "-n", "1"],
        vec!["purge", queue.as_str()],
        vec!["bind", "queue", queue.as_str(), "amq.direct", "-k", "x"],
        vec!["declare", "queue", queue.as_str(), "--passive"],
    ] {
        let output = warren(&args);
        let line = output.one_line_error(1, "warren: the broker refused: 404 - NOT_FOUND");
        assert!(line.contains(&format!("no queue '{queue}'")), "{line}");
        assert_eq!(output.stdout, "", "{output:#?}");
    }
    // A missing exchange, when publishing.
    let exchange = common::unique("missing-exchange");
    let output = warren(&["publish", "-e", &exchange, "-k", "x", "body"]);
    let line = output.one_line_error(1, "warren: the broker refused: 404 - NOT_FOUND");
    assert!(
        line.contains(&format!("no exchange '{exchange}'")),
        "{line}"
    );
}

#[test]
fn usage_errors_exit_with_status_2() {
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["consume"],
        vec!["publish", "--priority", "300", "x"],
        vec!["publish", "--delivery-mode", "3", "x"],
        vec!["publish", "--header", "no-equals-sign", "x"],
        vec!["publish", "--header", "n:int=seven", "x"],
        vec!["consume", "q", "--ack", "sometimes"],
        vec!["perf", "--duration", "forever"],
        vec!["perf", "--duration", "1", "--count", "1"],
        vec!["declare", "queue"],
    ] {
        let output = warren(&args);
        assert_eq!(output.code(), Some(2), "{args:?}: {output:#?}");
        assert!(!output.stderr.contains("panicked"), "{output:#?}");
    }
    // Checked by warren rather than the parser: status 1, one line.
    warren(&["perf", "--confirm", "0"]).one_line_error(1, "warren: --confirm must be at least 1");
    warren(&["perf", "--rate", "0.00001"]).one_line_error(
        1,
        "warren: --rate must be a number of messages per second: 0 (no limit) or at least 0.001",
    );
    warren(&["perf", "--producers", "0", "--consumers", "0"])
        .one_line_error(1, "warren: perf needs at least one producer or consumer");
    warren(&["perf", "--prefetch", "10", "--multiple-ack", "20"])
        .one_line_error(1, "warren: --multiple-ack 20 exceeds --prefetch 10");
}

#[test]
fn help_describes_every_subcommand_and_option() {
    let help = warren(&["--help"]).ok().stdout;
    for command in [
        "publish", "consume", "get", "declare", "bind", "unbind", "purge", "delete", "perf",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} missing from --help:\n{help}"
        );
    }
    assert!(help.contains("AMQP_URL"), "{help}");
    assert!(help.contains("Examples:"), "{help}");

    let subcommands: &[&[&str]] = &[
        &["publish"],
        &["consume"],
        &["get"],
        &["declare", "queue"],
        &["declare", "exchange"],
        &["bind", "queue"],
        &["bind", "exchange"],
        &["unbind", "queue"],
        &["unbind", "exchange"],
        &["purge"],
        &["delete", "queue"],
        &["delete", "exchange"],
        &["perf"],
    ];
    for subcommand in subcommands {
        let mut args = subcommand.to_vec();
        args.push("-h");
        let help = warren(&args).ok().stdout;
        assert!(
            help.contains("Examples:"),
            "{subcommand:?} -h has no examples:\n{help}"
        );
        // Every option has a description, on its line after a gap: `  -k, --flag <V>  What`.
        let options = help.split("Examples:").next().unwrap();
        for line in options.lines() {
            let indent = line.len() - line.trim_start().len();
            let trimmed = line.trim_start();
            if indent <= 6 && trimmed.starts_with('-') {
                let described = trimmed
                    .split_once("  ")
                    .is_some_and(|(_, description)| !description.trim().is_empty());
                assert!(
                    described,
                    "{subcommand:?}: {trimmed:?} has no description:\n{help}"
                );
            }
        }
        // --help has at least what -h has: the examples too, and, where values are typed
        // (--header, --arg), how.
        let mut args = subcommand.to_vec();
        args.push("--help");
        let long = warren(&args).ok().stdout;
        assert!(
            long.contains("Examples:"),
            "{subcommand:?} --help has no examples:\n{long}"
        );
        if long.contains("--arg <KEY=VALUE>") || long.contains("--header <KEY=VALUE>") {
            assert!(
                long.contains("Typed values"),
                "{subcommand:?} --help does not say how values are typed:\n{long}"
            );
        }
        // The examples of a subcommand are of that subcommand.
        let examples = help.split("Examples:").nth(1).unwrap();
        let command = format!("warren {}", subcommand.join(" "));
        for example in examples
            .lines()
            .filter(|l| l.trim_start().starts_with("warren "))
        {
            assert!(
                example.trim_start().starts_with(&command),
                "{subcommand:?} -h shows an example of another command: {example:?}"
            );
        }
    }

    let publish = warren(&["publish", "--help"]).ok().stdout;
    for flag in [
        "--content-type",
        "--content-encoding",
        "--delivery-mode",
        "--persistent",
        "--priority",
        "--correlation-id",
        "--reply-to",
        "--expiration",
        "--message-id",
        "--timestamp",
        "--type",
        "--user-id",
        "--app-id",
        "--header",
        "--no-mandatory",
        "--file",
    ] {
        assert!(publish.contains(flag), "publish --help lacks {flag}");
    }
    assert!(publish.contains("Typed values"), "{publish}");
    let perf = warren(&["perf", "--help"]).ok().stdout;
    for flag in [
        "--producers",
        "--consumers",
        "--size",
        "--rate",
        "--confirm",
        "--duration",
        "--count",
        "--queue",
        "--autoack",
        "--multiple-ack",
        "--prefetch",
    ] {
        assert!(perf.contains(flag), "perf --help lacks {flag}");
    }
}
