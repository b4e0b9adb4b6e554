//! The client library's log on stderr: warnings by default, more with `-v`, or what RUST_LOG
//! asks for.

mod common;

use common::{Cleanup, warren, warren_with_env};

#[test]
fn a_quiet_run_logs_nothing_and_v_shows_the_connection_log() {
    let mut cleanup = Cleanup::new();
    let queue = cleanup.queue("logging");
    let quiet = warren(&["declare", "queue", &queue]).ok();
    assert!(quiet.stderr.is_empty(), "{quiet:#?}");

    // -v: the library's debug lines (the handshake, the connection), on stderr only.
    let verbose = warren(&["-v", "declare", "queue", &queue]).ok();
    assert!(verbose.stderr.contains("DEBUG"), "{verbose:#?}");
    assert!(verbose.stderr.contains("connection open"), "{verbose:#?}");
    assert!(!verbose.stderr.contains("TRACE"), "{verbose:#?}");
    // The driver's lines say which connection they are about.
    assert!(
        verbose
            .stderr
            .lines()
            .any(|line| line.contains("amqp.connection{") && line.contains("server.port=")),
        "{verbose:#?}"
    );
    assert!(!verbose.stdout.contains("DEBUG"), "{verbose:#?}");
    // The password never shows, even at trace level.
    let traced = warren(&["-vv", "declare", "queue", &queue]).ok();
    assert!(traced.stderr.contains("TRACE"), "{traced:#?}");
    let url = common::broker_url();
    let userinfo = url
        .split_once("//")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(userinfo, _)| userinfo);
    if let Some(userinfo) = userinfo.filter(|u| u.contains(':')) {
        assert!(!traced.stderr.contains(userinfo), "{traced:#?}");
    }

    // RUST_LOG replaces -v.
    let filtered = warren_with_env(
        &["declare", "queue", &queue],
        &[("RUST_LOG", "warren=debug")],
    )
    .ok();
    assert!(filtered.stderr.contains("connection open"), "{filtered:#?}");
}

/// The library's warnings show with -v or RUST_LOG=warren=warn, not by default: here, a URI
/// parameter warren ignores.
#[test]
fn warnings_show_when_asked_for() {
    let url = format!("{}?connection_attempts=3", common::broker_url());
    let mut cleanup = Cleanup::new();
    let queue = cleanup.queue("warning");
    let quiet = warren(&["--url", &url, "declare", "queue", &queue]).ok();
    assert!(quiet.stderr.is_empty(), "{quiet:#?}");
    for output in [
        warren(&["--url", &url, "-v", "declare", "queue", &queue]).ok(),
        warren_with_env(
            &["--url", &url, "declare", "queue", &queue],
            &[("RUST_LOG", "warren=warn")],
        )
        .ok(),
    ] {
        assert!(output.stderr.contains("WARN"), "{output:#?}");
        assert!(output.stderr.contains("connection_attempts"), "{output:#?}");
    }
}
