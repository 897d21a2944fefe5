#!/usr/bin/env python3
"""Seconds per step of `tramway finetune` in its own training loop, for several binaries or
settings alternated run by run on the same machine: what a user's fine-tuning sees (operands
warm in cache from the previous step), unlike benchmarks that interleave other work.

Each run fine-tunes all-MiniLM-L6-v2 on the sentiment sentences (batch 8 x 24, `--no-save`)
and writes one metrics line per step into a pipe; the time between consecutive lines is a
step. The first 4 steps (shader compiles, warm-up) are dropped; a run's figure is the median
of the rest; the summary is the median over rounds, and beside it the 10th percentile and
the fastest of all the variant's steps: on a shared VM contention only ever slows a step, so
when the medians swing from round to round (they did by 1.5x on the AMD EPYC VM), the fastest
steps are the least disturbed figures.

  python3 tools/loop_step_time.py --rounds 3 --steps 25 \
      old=/tmp/tramway-old new=target/release/tramway \
      new-scalar-epilogue=target/release/tramway:TRAMWAY_MATMUL_SCALAR_EPILOGUE=1

Each VARIANT is NAME=BINARY, optionally followed by :VAR=VALUE environment settings.
Needs models/all-MiniLM-L6-v2 and data/sentiment (models/fetch.sh, models/fetch_data.sh).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def parse(spec):
    name, _, rest = spec.partition("=")
    if not name or not rest:
        sys.exit(f"variant {spec!r}: expected NAME=BINARY[:VAR=VALUE...]")
    binary, *envs = rest.split(":")
    env = {}
    for e in envs:
        k, _, v = e.partition("=")
        if not k:
            sys.exit(f"variant {spec!r}: environment setting {e!r} is not VAR=VALUE")
        env[k] = v
    if not os.access(binary, os.X_OK):
        sys.exit(f"variant {name}: {binary} is not an executable")
    return name, binary, env


def run(binary, env, steps, optimizer):
    with tempfile.TemporaryDirectory() as d:
        fifo = os.path.join(d, "metrics.jsonl")
        os.mkfifo(fifo)
        cmd = [binary, "finetune", "--model", "models/all-MiniLM-L6-v2",
               "--train", "data/sentiment/movie_sentences.fit.csv", "--optimizer", optimizer,
               "--steps", str(steps), "--batch-size", "8", "--max-len", "24", "--no-save",
               "--out", os.path.join(d, "out"), "--metrics", fifo, "--log-every", "1"]
        p = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        stamps = []
        with open(fifo) as f:
            for _ in f:
                stamps.append(time.monotonic())
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{err}")
    gaps = [b - a for a, b in zip(stamps, stamps[1:])][4:]
    if not gaps:
        sys.exit(f"--steps {steps} leaves no step after the 4 warm-up steps")
    return gaps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help="NAME=BINARY[:VAR=VALUE...]")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--optimizer", default="adamw")
    a = ap.parse_args()
    variants = [parse(v) for v in a.variants]
    got = {name: [] for name, _, _ in variants}
    steps = {name: [] for name, _, _ in variants}
    for r in range(a.rounds):
        # Alternate the order each round so that no variant always runs first.
        order = variants if r % 2 == 0 else variants[::-1]
        for name, binary, env in order:
            gaps = run(binary, env, a.steps, a.optimizer)
            steps[name] += gaps
            s = statistics.median(gaps)
            got[name].append(s)
            print(f"round {r + 1}: {name} {s * 1e3:.1f} ms / step", flush=True)
    print("\n| variant | ms / step, each round | median | 10th percentile of all steps | fastest step |")
    print("|---|---|---|---|---|")
    for name, _, _ in variants:
        each = ", ".join(f"{x * 1e3:.0f}" for x in got[name])
        all_steps = sorted(steps[name])
        p10 = all_steps[len(all_steps) // 10]
        print(f"| {name} | {each} | {statistics.median(got[name]) * 1e3:.0f} | {p10 * 1e3:.0f} | "
              f"{all_steps[0] * 1e3:.0f} |")


if __name__ == "__main__":
    main()
