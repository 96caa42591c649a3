#!/usr/bin/env python3
"""Shim benchmark, start-up half (issue 4): what the embedded shim costs a program with 100k sites.

Builds one generated 100k-function program three ways, side by side: without tracing hooks (`plain`),
with -fpatchable-function-entry=5 (`pfe5`: nops, no profiling runtime linked in, unlike -pg), and that
binary prepared (`prepared`). Runs each --runs times, interleaved, and prints medians and differences:
  prepared - pfe5, tracing off: the shim's start-up (its self-test, handler and membarrier
                                registration; the table is not read),
  prepared, PREPATCH_TRACE='*': start-up with a batch enabling all 100k sites plus 100k counted calls.
Toggle latency against LLVM XRay: bench/toggle_bench.py; off overhead: bench/off_bench.py.
Usage: bench/shim_bench.py [--prepatch build/prepatch] [--functions 100000] [--runs 31]
Not a test: nothing here asserts a time.
"""
import os, statistics, subprocess, tempfile, time

from common import arguments, write_program

def run(argv, env):
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, env=env, check=True)
    return time.perf_counter() - t0

def main():
    a = arguments(runs=31)
    with tempfile.TemporaryDirectory(prefix="prepatch-shim-bench-") as d:
        src = write_program(d, a.functions)
        bins = {"plain": [], "pfe5": ["-fpatchable-function-entry=5"]}
        for name, flags in bins.items():
            subprocess.run([a.cc, "-O1", *flags, src, "-o", os.path.join(d, name)], check=True)
        subprocess.run([a.prepatch, "-q", os.path.join(d, "pfe5"), "-o", os.path.join(d, "prepared")], check=True)
        off = dict(os.environ)
        off.pop("PREPATCH_TRACE", None)
        on = dict(off, PREPATCH_TRACE="*", PREPATCH_COUNTS=os.path.join(d, "counts"))
        cases = [("plain", "plain", off), ("pfe5", "pfe5", off), ("prepared, tracing off", "prepared", off),
                 ("prepared, PREPATCH_TRACE='*'", "prepared", on)]
        times = {c[0]: [] for c in cases}
        for _ in range(a.runs):
            for label, binary, env in cases:
                times[label].append(run([os.path.join(d, binary)], env))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"{a.functions} functions, {a.runs} interleaved runs each, median wall time of the whole run:")
        for label, _, _ in cases:
            print(f"  {label:32s} {med[label]:7.2f} ms")
        print(f"shim start-up, tracing off (prepared - pfe5): {med['prepared, tracing off'] - med['pfe5']:+.2f} ms")
        print(f"enabling all sites at start and counting {a.functions} calls: "
              f"{med[cases[3][0]] - med['prepared, tracing off']:+.2f} ms")

if __name__ == "__main__":
    main()
