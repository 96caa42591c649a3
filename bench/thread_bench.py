#!/usr/bin/env python3
"""What the shim adds to a thread's life (issue 6): each thread started through pthread_create gets an
alternate signal stack (mmap, mprotect, sigaltstack, pthread_setspecific) and frees it as it ends.

Builds testdata/procs.c with -fpatchable-function-entry=5 and prepares it; runs `procs churn N x still`
(N threads one after another, ending by return, pthread_exit and cancellation in turn, each created and
joined; nothing toggled) on both, --runs times interleaved, and prints the median wall time per thread
of each and the difference. Tracing stays off, as in production.
Usage: bench/thread_bench.py [--prepatch build/prepatch] [--threads 20000] [--runs 11]
Not a test: nothing here asserts a time.
"""
import os, statistics, subprocess, tempfile, time

from common import arguments

def main():
    a = arguments(runs=11, threads=20_000)
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testdata", "procs.c")
    with tempfile.TemporaryDirectory(prefix="prepatch-thread-bench-") as d:
        plain, prepared = os.path.join(d, "procs"), os.path.join(d, "procs.prepared")
        subprocess.run([a.cc, "-O2", "-fpatchable-function-entry=5", src, "-o", plain, "-pthread"], check=True)
        subprocess.run([a.prepatch, "-q", plain, "-o", prepared], check=True)
        times = {plain: [], prepared: []}
        for _ in range(a.runs):
            for binary in times:
                t0 = time.perf_counter()
                subprocess.run([binary, "churn", str(a.threads), "x", "still"], stdout=subprocess.DEVNULL, cwd=d, check=True)
                times[binary].append(time.perf_counter() - t0)
        per = {b: statistics.median(v) / a.threads * 1e6 for b, v in times.items()}
        print(f"{a.threads} threads created and joined one after another, {a.runs} interleaved runs, median per thread:")
        print(f"  unprepared          {per[plain]:7.2f} us")
        print(f"  prepared (off)      {per[prepared]:7.2f} us")
        print(f"the shim's alternate signal stack: {per[prepared] - per[plain]:+.2f} us a thread "
              f"({per[prepared] / per[plain]:.2f}x)")

if __name__ == "__main__":
    main()
