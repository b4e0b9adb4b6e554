#!/usr/bin/env bash
# scripts/test.sh: the whole test suite, then a count of the tests that skipped and why.
#
#   scripts/test.sh [CARGO TEST ARGUMENTS...]
#
# Runs `cargo test --workspace --no-fail-fast` (with any arguments given, e.g. `--release` or
# `-- --test-threads 1`), then the tests of the `opentelemetry` feature (its test binary and
# its example's test, with the same arguments), and exits with status 0 only if all passed. Some tests need something beyond the
# default broker (TLS nodes, a node of their own, a cluster, the official spec files); without
# it they print `SKIPPED <group>: <test>: <reason>` and pass, so a local run can be green
# without having tested everything. This script counts those lines and says, at the end, how
# many tests skipped, in which group and why. README.md, section Tests, says what each group
# needs. CI sets the WARREN_REQUIRE_* variables, under which those tests fail instead of
# skipping, so a CI run has no skips to report.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log=$(mktemp "${TMPDIR:-/tmp}/warren-test.XXXXXX")
trap 'rm -f "$log"' EXIT

# One stream, so that the SKIPPED lines (which tests write to stderr past the harness's
# capture) are kept in order with the rest.
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# The `opentelemetry` feature's tests, which the default features leave out: its own test
# binary, and its example's test in tests/examples.rs (filtered to it). Arguments after `--`
# go to the test binaries.
cargo_args=() test_args=() after_dashes=0
for arg in "$@"; do
    if ((after_dashes)); then
        test_args+=("$arg")
    elif [[ $arg == -- ]]; then
        after_dashes=1
    else
        cargo_args+=("$arg")
    fi
done
otel=(cargo test -p warren-amqp --no-fail-fast --features opentelemetry "${cargo_args[@]}")
"${otel[@]}" --test opentelemetry -- "${test_args[@]}" 2>&1 | tee -a "$log"
((PIPESTATUS[0] == 0)) || status=1
"${otel[@]}" --test examples -- "${test_args[@]}" --exact opentelemetry 2>&1 | tee -a "$log"
((PIPESTATUS[0] == 0)) || status=1

passed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^passed/) n += $i } END { print n + 0 }' "$log")
skipped=$(grep -c '^SKIPPED [^ :]*: ' "$log")

echo
if ((skipped == 0)); then
    echo "==> scripts/test.sh: $passed tests passed; none skipped"
else
    echo "==> scripts/test.sh: $passed tests passed, of which $skipped SKIPPED without testing anything:"
    # Per group: how many, and each distinct reason with its count.
    sed -n 's/^SKIPPED \([^ :]*\): [^ ]*: \(.*\)$/\1\t\2/p' "$log" |
        sort | uniq -c | sort -k2,2 -k1,1nr |
        awk -F'\t' '{
            split($1, head, " "); count = head[1]; group = head[2]
            printf "    %4d %s: %s\n", count, group, $2
        }'
    cat <<'NOTE'
    What each group needs is in README.md, section Tests. CI makes these tests fail instead of
    skipping: WARREN_REQUIRE_TLS_NODE=1 (tls), WARREN_REQUIRE_EXTRA_NODES=1 (extra-node),
    WARREN_REQUIRE_CLUSTER=1 (cluster), WARREN_REQUIRE_REFERENCE=1 (reference),
    WARREN_REQUIRE_PIKA=1 (pika).
NOTE
fi
exit "$status"
