#!/usr/bin/env python3
"""Enabling every site at start (issue 27): the CPU time `PREPATCH_TRACE='*'` adds to a run of a 100k-function
program (count tracer), side by side with what LLVM XRay's `patch_premain=true` adds to the same program.

One generated program (bench/gen_many.py: 100k functions, main calls each once) is built twice with clang -O1:
with -fpatchable-function-entry=5, then prepared; and with -fxray-instrument -fxray-instruction-threshold=1
(XRay's entry and exit sleds in every function). Four cases run --runs times each, interleaved:
  XRay, XRAY_OPTIONS=patch_premain=false     the sleds stay nops
  XRay, XRAY_OPTIONS=patch_premain=true      every sled patched before main; no handler installed, so each
                                             call enters XRay's trampoline and returns (nothing recorded)
  prepatch, no PREPATCH_TRACE                the shim starts, tracing off
  prepatch, PREPATCH_TRACE='*'               every site enabled before main; 100k calls counted into the
                                             counts file (whose name PREPATCH_COUNTS gives)
Each run's CPU time (user + system, from the kernel's accounting of the child) is taken; the medians' differences
are what enabling costs each tool, and their ratio is printed. With --baseline OTHER_PREPATCH (another build, say of
the commit before a change), the program is also prepared by that one and its two prepatch cases run interleaved
with the rest, so that a change is measured against the version before it in the same run. Not a test: nothing
here asserts a time.
Usage: bench/premain_bench.py [--prepatch build/prepatch] [--baseline OTHER/prepatch] [--functions 100000] [--runs 21]
"""
import os, resource, statistics, subprocess, tempfile

from common import arguments, write_program


def cpu_ms(argv, env):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return 1e3 * (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)


def main():
    a = arguments(21, texts=("baseline",))
    with tempfile.TemporaryDirectory(prefix="prepatch-premain-bench-") as d:
        src = write_program(d, a.functions)
        pfe5, prepared, xray = (os.path.join(d, n) for n in ("pfe5", "prepared", "xray"))
        subprocess.run(["clang", "-O1", "-fpatchable-function-entry=5", src, "-o", pfe5], check=True)
        subprocess.run([a.prepatch, "-q", pfe5, "-o", prepared], check=True)
        subprocess.run(["clang", "-O1", "-fxray-instrument", "-fxray-instruction-threshold=1", src, "-o", xray], check=True)
        if a.baseline:
            subprocess.run([os.path.abspath(a.baseline), "-q", pfe5, "-o", prepared + "-baseline"], check=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREPATCH_", "XRAY_"))}
        cases = {
            "XRay, patch_premain=false": ([xray], dict(base, XRAY_OPTIONS="patch_premain=false")),
            "XRay, patch_premain=true": ([xray], dict(base, XRAY_OPTIONS="patch_premain=true")),
            "prepatch, tracing off": ([prepared], base),
            "prepatch, PREPATCH_TRACE='*'": ([prepared], dict(base, PREPATCH_TRACE="*", PREPATCH_COUNTS=os.path.join(d, "counts"))),
        }
        if a.baseline:
            cases["baseline, tracing off"] = ([prepared + "-baseline"], base)
            cases["baseline, PREPATCH_TRACE='*'"] = ([prepared + "-baseline"], cases["prepatch, PREPATCH_TRACE='*'"][1])
        times = {k: [] for k in cases}
        for _ in range(a.runs):
            for k, (argv, env) in cases.items():
                times[k].append(cpu_ms(argv, env))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{a.functions} functions, each called once; {a.runs} runs each, interleaved; median CPU time (user + system)")
        for k, v in med.items():
            print(f"{k:<34} {v:8.2f} ms")
        xray_cost = med["XRay, patch_premain=true"] - med["XRay, patch_premain=false"]
        ours = med["prepatch, PREPATCH_TRACE='*'"] - med["prepatch, tracing off"]
        print(f"\nenabling every site: prepatch +{ours:.2f} ms, XRay +{xray_cost:.2f} ms (ratio {ours / xray_cost:.2f})")
        if a.baseline:
            theirs = med["baseline, PREPATCH_TRACE='*'"] - med["baseline, tracing off"]
            print(f"the baseline build: +{theirs:.2f} ms (ratio to XRay {theirs / xray_cost:.2f}; this build / baseline {ours / theirs:.2f})")


if __name__ == "__main__":
    main()
