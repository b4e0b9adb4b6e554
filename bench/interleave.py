#!/usr/bin/env python3
"""Interleaved rounds of runner commands, for comparing two builds of a runner.

usage: bench/interleave.py ROUNDS "SCENARIO ARGS" "RUNNER [FLAGS]" "RUNNER [FLAGS]" ...

The first runner is the reference (normally target/release/runner-ceiling); each round runs
every runner once, in order, with the scenario and its arguments inserted after the runner's
path. Prints, per runner, the median rate, the median of each round's rate over the
reference's in that round (with the lowest and highest), and the median client CPU per
message (user + sys) in microseconds.

example (a copy of an older build's runner beside the current one):
  bench/interleave.py 8 "confirm --messages 200000" target/release/runner-ceiling \\
      "/tmp/runner-warren-before --block-on" "target/release/runner-warren --block-on"
"""
import json
import statistics
import subprocess
import sys


def run(command, scenario):
    parts = command.split()
    out = subprocess.run(parts[:1] + scenario + parts[1:], capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        print(f"failed: {command}: {out.stderr.strip()}", file=sys.stderr)
        return None
    report = json.loads(lines[-1])
    cpu = report.get("cpu_user_s", 0) + report.get("cpu_sys_s", 0)
    return report["msgs_per_s"], cpu / report["messages"] * 1e6


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    rounds, scenario, runners = int(sys.argv[1]), sys.argv[2].split(), sys.argv[3:]
    results = {runner: [] for runner in runners}
    for _ in range(rounds):
        for runner in runners:
            results[runner].append(run(runner, scenario))
    reference = results[runners[0]]
    for runner in runners:
        pairs = [(r, ref) for r, ref in zip(results[runner], reference) if r and ref]
        if not pairs:
            print(f"{runner}: no successful round")
            continue
        ratios = [r[0] / ref[0] * 100 for r, ref in pairs]
        rate = statistics.median(r[0] for r, _ in pairs)
        cpu = statistics.median(r[1] for r, _ in pairs)
        print(
            f"{runner:60s} {rate:9.0f} msgs/s  {statistics.median(ratios):5.1f} % of the reference"
            f" ({min(ratios):.0f}-{max(ratios):.0f})  {cpu:.2f} µs CPU/msg  ({len(pairs)} rounds)"
        )


if __name__ == "__main__":
    main()
