#!/usr/bin/env python3
"""Shim benchmark, start-up half (issue 4): what the embedded shim costs a program with 100k sites.

Builds one generated 100k-function program three ways, side by side: without tracing hooks (`plain`),
with -fpatchable-function-entry=5 (`pfe5`: nops, no profiling runtime linked in, unlike -pg), and that
binary prepared (`prepared`). Runs each --runs times, interleaved, and prints medians and differences:
  prepared - pfe5, tracing off: the shim's start-up (its self-test, handler and membarrier
                                registration; the table is not read),
  prepared, PREPATCH_TRACE='*': start-up with a batch enabling all 100k sites plus 100k counted calls,
and both again under PREPATCH_WX=strict (the text copied into a memfd and mapped over itself at start),
with each run's peak resident set (the memfd's pages are the process's own, not the page cache's).
Toggle latency against LLVM XRay: bench/toggle_bench.py; off overhead: bench/off_bench.py.
With --cxx the program is C++ (100k mangled names: bench/gen_many.py), and two more cases start with a
glob in demangled form, one naming a class (10 functions: most names never demangled, see shim/names.h)
and one every function (`bench::*`: every name demangled).
Usage: bench/shim_bench.py [--prepatch build/prepatch] [--functions 100000] [--runs 31] [--cxx]
Not a test: nothing here asserts a time.
"""
import os, statistics, subprocess, tempfile, time

from common import arguments, maxrss_runner, write_program

def run(maxrss, argv, env):
    """The wall time of one run, and its peak resident set in KiB."""
    t0 = time.perf_counter()
    r = subprocess.run([maxrss, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True, check=True)
    return time.perf_counter() - t0, int(r.stderr.split()[-1])

def main():
    a = arguments(runs=31)
    with tempfile.TemporaryDirectory(prefix="prepatch-shim-bench-") as d:
        src = write_program(d, a.functions, cxx=a.cxx)
        bins = {"plain": [], "pfe5": ["-fpatchable-function-entry=5"]}
        for name, flags in bins.items():
            subprocess.run([a.compiler, "-O1", *flags, src, "-o", os.path.join(d, name)], check=True)
        subprocess.run([a.prepatch, "-q", os.path.join(d, "pfe5"), "-o", os.path.join(d, "prepared")], check=True)
        maxrss = maxrss_runner(d, a.cc)
        off = dict(os.environ)
        off.pop("PREPATCH_TRACE", None)
        on = dict(off, PREPATCH_TRACE="*", PREPATCH_COUNTS=os.path.join(d, "counts"))
        off_wx, on_wx = dict(off, PREPATCH_WX="strict"), dict(on, PREPATCH_WX="strict")
        cases = [("plain", "plain", off), ("pfe5", "pfe5", off), ("prepared, tracing off", "prepared", off),
                 ("prepared, PREPATCH_TRACE='*'", "prepared", on), ("strict, tracing off", "prepared", off_wx),
                 ("strict, PREPATCH_TRACE='*'", "prepared", on_wx)]
        if a.cxx:  # a class by its demangled name; every function by a demangled-form glob
            cases += [("TRACE='bench::modaaab::ClsAak::*'", "prepared", dict(on, PREPATCH_TRACE="bench::modaaab::ClsAak::*")),
                      ("TRACE='bench::*'", "prepared", dict(on, PREPATCH_TRACE="bench::*"))]
        times = {c[0]: [] for c in cases}
        rss = {c[0]: [] for c in cases}
        for _ in range(a.runs):
            for label, binary, env in cases:
                t, kib = run(maxrss, [os.path.join(d, binary)], env)
                times[label].append(t)
                rss[label].append(kib)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        kib = {k: statistics.median(v) for k, v in rss.items()}
        print(f"{a.functions} functions, {a.runs} interleaved runs each, median wall time of the whole run and peak RSS:")
        for label, _, _ in cases:
            print(f"  {label:32s} {med[label]:7.2f} ms {kib[label]:8.0f} KiB")
        print(f"shim start-up, tracing off (prepared - pfe5): {med['prepared, tracing off'] - med['pfe5']:+.2f} ms")
        print(f"enabling all sites at start and counting {a.functions} calls: "
              f"{med[cases[3][0]] - med['prepared, tracing off']:+.2f} ms")
        print(f"PREPATCH_WX=strict at start, tracing off: {med['strict, tracing off'] - med['prepared, tracing off']:+.2f} ms, "
              f"{kib['strict, tracing off'] - kib['prepared, tracing off']:+.0f} KiB peak RSS; "
              f"with every site enabled: {med[cases[5][0]] - med[cases[3][0]]:+.2f} ms")
        if a.cxx:
            print(f"a class by its demangled name (10 sites) at start: {med[cases[6][0]] - med['prepared, tracing off']:+.2f} ms; "
                  f"every site by a demangled-form glob: {med[cases[7][0]] - med[cases[3][0]]:+.2f} ms more than '*'")

if __name__ == "__main__":
    main()
