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
        "--mandatory",
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
