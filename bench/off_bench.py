#!/usr/bin/env python3
"""Shim benchmark, off half (issue 4): what a prepared binary costs with tracing off, against the same
program built without any tracing hooks.

A call-heavy program (recursive fib, and a loop calling a small mixing function: tens of millions of
calls of functions a few instructions long, the worst case for a per-call nop) is built with gcc -O2
three ways, side by side:
  plain                 no hooks;
  -pg -mfentry          prepared (every function entry is a 5-byte nop; the binary still carries
                        gcc's -pg runtime, which starts profil() and writes gmon.out at exit);
  -fpatchable-function-entry=5, prepared (5-byte nops, no profiling runtime).
Each runs --runs times, interleaved; the script prints the median wall time and the ratio to plain.
Usage: bench/off_bench.py [--prepatch build/prepatch] [--runs 21] [--cc gcc]
Not a test: nothing here asserts a time.
"""
import os, statistics, subprocess, tempfile, time

from common import CALLS_C, arguments

PROGRAM = CALLS_C + r"""
__attribute__((noinline)) unsigned walk(unsigned n) {
  unsigned h = 0;
  for (unsigned i = 0; i < n; i++) h = mix(h + i);
  return h;
}
int main(int argc, char** argv) {
  unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 34;
  printf("%lu %u\n", fib(n), walk(40000000));
  return 0;
}
"""


def main():
    a = arguments(runs=21)
    with tempfile.TemporaryDirectory(prefix="prepatch-off-bench-") as d:
        src = os.path.join(d, "calls.c")
        with open(src, "w") as f:
            f.write(PROGRAM)
        builds = {"plain": [], "fentry": ["-pg", "-mfentry"], "pfe5": ["-fpatchable-function-entry=5"]}
        for name, flags in builds.items():
            subprocess.run([a.cc, "-O2", *flags, src, "-o", os.path.join(d, name)], check=True)
        for name in ("fentry", "pfe5"):
            subprocess.run([a.prepatch, "-q", os.path.join(d, name), "-o", os.path.join(d, name + "-prepared")], check=True)
        cases = {"plain": "plain", "-pg -mfentry, prepared": "fentry-prepared",
                 "-fpatchable-function-entry=5, prepared": "pfe5-prepared"}
        env = dict(os.environ)
        env.pop("PREPATCH_TRACE", None)
        times = {c: [] for c in cases}
        outputs = {}
        for _ in range(a.runs):
            for label, binary in cases.items():
                t0 = time.perf_counter()
                r = subprocess.run([os.path.join(d, binary)], cwd=d, env=env, capture_output=True, text=True, check=True)
                times[label].append(time.perf_counter() - t0)
                outputs[label] = r.stdout
        if len(set(outputs.values())) != 1:
            raise SystemExit(f"the builds disagree: {outputs}")
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"fib(34) and 40M calls of a small function; {a.runs} interleaved runs each, median wall time "
              f"(tracing off):")
        for label in cases:
            print(f"  {label:40s} {med[label]:8.1f} ms   {med[label] / med['plain']:.3f}x plain")


if __name__ == "__main__":
    main()
