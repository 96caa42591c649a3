#!/usr/bin/env python3
"""Flight recorder benchmark (issue 27): the cost of one traced call (entry and exit) in prepatch's ring
against funtrace's in-memory ring, side by side on the same leaf loop.

funtrace (../shared/peers/funtrace, BSD-licensed, a peer kept for benchmarks only) is built with its own
-pg wrapper (`-pg -mfentry -minstrument-return=call`, its runtime linked in) and run with
FUNTRACE_FTRACE_EVENTS_IN_BUF=0; it keeps events in per-thread rings in memory and writes only on a
snapshot, which this program never asks for. prepatch's build is g++ -O2 -pg -mfentry, prepared, run
with PREPATCH_TRACE=leaf, PREPATCH_TRACER=graph and PREPATCH_BUFFER=ring:4M (its ring is the shared
file's, so a crash or kill -9 keeps it; funtrace's dies with the process). The baseline is g++ -O2.

Each runs with a short and a long loop (--calls and 4x as many), --runs times each, interleaved; the
cost per call is the difference of the two medians divided by the difference in calls, so process
start and exit (which vary by ~0.5 s for funtrace here) cancel; the baseline's per-call figure is
subtracted. Not a test: nothing here asserts a time.
Usage: bench/ring_bench.py [--prepatch build/prepatch] [--runs 7] [--calls 5000000]
"""
import os, statistics, subprocess, tempfile, time

from common import arguments

HERE = os.path.dirname(os.path.abspath(__file__))
FUNTRACE = os.path.join(HERE, "..", "..", "shared", "peers", "funtrace")

PROGRAM = r"""
#include <stdlib.h>
__attribute__((noinline)) int leaf(int x) { __asm__ volatile(""); return x + 1; }
int main(int argc, char** argv) {
  long n = argc > 1 ? atol(argv[1]) : 5000000;
  volatile int s = 0;
  for (long i = 0; i < n; i++) s += leaf((int)i);
  return s == 42;
}
"""


def timed(cmd, env, cwd):
    t = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    a = arguments(7, calls=5_000_000)
    wrapper = os.path.join(FUNTRACE, "compiler-wrappers", "funtrace-pg-g++")
    if not os.path.exists(wrapper):
        raise SystemExit(f"funtrace is not at {FUNTRACE} (../shared/peers/funtrace)")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "leaf.cpp")
        with open(src, "w") as f:
            f.write(PROGRAM)
        plain, hooks, prepared, ft = (os.path.join(d, n) for n in ("plain", "hooks", "prepared", "funtrace"))
        subprocess.run(["g++", "-O2", src, "-o", plain], check=True)
        subprocess.run(["g++", "-O2", "-pg", "-mfentry", src, "-o", hooks], check=True)
        subprocess.run([a.prepatch, "-q", hooks, "-o", prepared], check=True)
        subprocess.run(["python3", wrapper, "-O2", "-c", src, "-o", ft + ".o"], check=True, cwd=d)
        subprocess.run(["python3", wrapper, "-O2", ft + ".o", "-o", ft], check=True, cwd=d)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREPATCH_", "FUNTRACE"))}
        configs = [
            ("baseline (g++ -O2)", plain, base),
            ("funtrace (its -pg wrapper, rings in memory)", ft, dict(base, FUNTRACE_FTRACE_EVENTS_IN_BUF="0")),
            ("prepatch graph, ring:4M", prepared,
             dict(base, PREPATCH_TRACE="leaf", PREPATCH_TRACER="graph", PREPATCH_BUFFER="ring:4M", PREPATCH_OUTPUT=d + "/r.trace")),
        ]
        short, long = a.calls, 4 * a.calls
        times = {(name, n): [] for name, _, _ in configs for n in (short, long)}
        for r in range(a.runs):
            for name, exe, env in configs:
                for n in (short, long):
                    times[(name, n)].append(timed([exe, str(n)], env, d))
        med = {k: statistics.median(v) for k, v in times.items()}
        per = {name: (med[(name, long)] - med[(name, short)]) / (long - short) * 1e9 for name, _, _ in configs}
        print(f"{short} and {long} calls of leaf(), {a.runs} runs each, interleaved; per call = difference of the medians / {long - short}")
        print(f"{'configuration':48} {'short':>10} {'long':>10} {'per call':>10} {'traced':>10}")
        b = per["baseline (g++ -O2)"]
        for name, _, _ in configs:
            traced = "" if name.startswith("baseline") else f"{per[name] - b:8.1f}ns"
            print(f"{name:48} {med[(name, short)] * 1e3:8.1f}ms {med[(name, long)] * 1e3:8.1f}ms {per[name]:8.1f}ns {traced:>10}")
        ft_cost, pp_cost = per[configs[1][0]] - b, per[configs[2][0]] - b
        print(f"\nprepatch ring per traced call: {pp_cost:.1f} ns; funtrace {ft_cost:.1f} ns (ratio {pp_cost / ft_cost:.2f})")


if __name__ == "__main__":
    main()
