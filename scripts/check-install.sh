#!/usr/bin/env bash
# scripts/check-install.sh: does README.md's "Install" section work for a new project?
#
# Makes a fresh `cargo new` project outside the checkout, runs the section's `cargo add`
# commands in it (with `--path` to this checkout instead of crates.io for warren-amqp), puts the
# section's example in src/main.rs unchanged, and builds it. Exits non-zero, saying which step
# failed, if any does.
#
# The build uses this checkout's target directory (or $WARREN_INSTALL_CHECK_TARGET), so that
# dependencies the workspace built with the same versions and features are not built again
# (in CI, after the tests, this halves the step's CPU time) and a second run rebuilds nothing
# but the example. The project itself is a temporary directory, removed at the end.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readme="$repo/README.md"
target=${WARREN_INSTALL_CHECK_TARGET:-$repo/target}

# The first ```LANG block after the "## Install" heading, up to the next "## " heading.
block() {
    awk -v lang="$1" '
        /^## / { in_section = ($0 == "## Install") }
        in_section && !done && $0 == "```" lang { grab = 1; next }
        grab && /^```/ { grab = 0; done = 1 }
        grab { print }
    ' "$readme"
}

commands=$(block sh)
example=$(block rust)
if [[ -z $commands || -z $example ]]; then
    echo "check-install: README.md has no \"## Install\" section with a sh block and a rust block" >&2
    exit 1
fi

project=$(mktemp -d "${TMPDIR:-/tmp}/warren-install-check.XXXXXX")
trap 'rm -rf "$project"' EXIT
cd "$project"
cargo new --quiet --vcs none warren-install-check
cd warren-install-check

while IFS= read -r line; do
    line=${line%%#*}                          # drop a trailing comment
    [[ $line =~ ^[[:space:]]*$ ]] && continue
    read -ra words <<<"$line"
    if [[ ${words[0]} != cargo || ${words[1]} != add ]]; then
        echo "check-install: the Install section's sh block has a line that is not \`cargo add\`: $line" >&2
        exit 1
    fi
    # The crate under test comes from this checkout, not from crates.io.
    if [[ ${words[2]} == warren-amqp ]]; then
        words+=(--path "$repo")
    fi
    echo "+ ${words[*]}"
    "${words[@]}" --quiet
done <<<"$commands"

printf '%s\n' "$example" >src/main.rs
echo "+ cargo build (target directory $target)"
CARGO_TARGET_DIR=$target cargo build --quiet
echo "check-install: README.md's Install section builds its example in a new project"
