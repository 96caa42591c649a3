#!/usr/bin/env python3
"""Shared objects (issue 26): what a prepared 100k-site library costs the program that dlopens it.

Builds bench/gen_many.py's functions as one shared library (-O1 -pg -mfentry -fPIC), prepares a copy,
and runs a small host program that dlopens the library (RTLD_NOW), dlcloses it and exits, side by
side, interleaved: the library as built, prepared with tracing off (the shim's start: /proc/self/auxv,
pinning the object, its handlers and self-test), and prepared with PREPATCH_TRACE='*' (a batch
enabling all 100k sites; no function is called); then the host itself built -pg -mfentry and
prepared, whose runtime serves the process, so that the library enrolls with it (its table checked,
its site states mapped; at dlclose it leaves, and is unmapped), with the library as built and prepared;
and that host loading and unloading the library 20 times (each load after the first takes the entry
the library left back), as built, prepared, and prepared with PREPATCH_TRACE='*' (every load enables
all its sites again). Median wall time of the whole host run.
Usage: bench/dlopen_bench.py [--prepatch build/prepatch] [--functions 100000] [--runs 31]
Not a test: nothing here asserts a time.
"""
import os, statistics, subprocess, tempfile, time

from common import arguments, write_program

HOST = r"""#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char** argv) {
  for (int i = 0; i < (argc > 2 ? atoi(argv[2]) : 1); i++) {
    void* h = dlopen(argv[1], RTLD_NOW);
    if (!h) return fprintf(stderr, "%s\n", dlerror()), 1;
    if (dlclose(h) != 0) return 1;
  }
  return 0;
}
"""
CYCLES = 20

def timed(argv, env):
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=env)
    return time.perf_counter() - t0

def main():
    a = arguments(runs=31)
    with tempfile.TemporaryDirectory(prefix="prepatch-dlopen-bench-") as d:
        src = write_program(d, a.functions)
        lib, prepared = os.path.join(d, "libmany.so"), os.path.join(d, "libmany.prepared.so")
        subprocess.run([a.cc, "-O1", "-pg", "-mfentry", "-fPIC", "-shared", src, "-o", lib], check=True)
        subprocess.run([a.prepatch, "-q", lib, "-o", prepared], check=True)
        host = os.path.join(d, "host")
        with open(host + ".c", "w") as f:
            f.write(HOST)
        subprocess.run([a.cc, "-O2", host + ".c", "-o", host, "-ldl"], check=True)
        hooked, host_prepared = host + ".hooks", host + ".prepared"
        subprocess.run([a.cc, "-O2", "-pg", "-mfentry", host + ".c", "-o", hooked, "-ldl"], check=True)
        subprocess.run([a.prepatch, "-q", hooked, "-o", host_prepared], check=True)
        off = {k: v for k, v in os.environ.items() if not k.startswith("PREPATCH_")}
        on = dict(off, PREPATCH_TRACE="*", PREPATCH_COUNTS=os.path.join(d, "counts"))
        cases = [("as built (-pg -mfentry)", host, lib, off), ("prepared, tracing off", host, prepared, off),
                 ("prepared, PREPATCH_TRACE='*'", host, prepared, on),
                 ("prepared host, library as built", host_prepared, lib, off),
                 ("prepared host, library enrolls", host_prepared, prepared, off)]
        cases = [(label, [program, so], env) for label, program, so, env in cases]
        n = str(CYCLES)
        cases += [(f"{CYCLES} loads: as built", [host_prepared, lib, n], off),
                  (f"{CYCLES} loads: enrolls, leaves", [host_prepared, prepared, n], off),
                  (f"{CYCLES} loads: PREPATCH_TRACE='*'", [host_prepared, prepared, n], on)]
        times = {label: [] for label, _, _ in cases}
        for _ in range(a.runs):
            for label, argv, env in cases:
                times[label].append(timed(argv, env))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"a {a.functions}-function library, {a.runs} interleaved runs of a host that dlopens and dlcloses it:")
        for label, _, _ in cases:
            print(f"  {label:32s} {med[label]:7.2f} ms")
        print(f"the prepared library's dlopen, tracing off: {med[cases[1][0]] - med[cases[0][0]]:+.2f} ms (goal <= +1 ms); "
              f"enabling all {a.functions} sites as it loads: {med[cases[2][0]] - med[cases[1][0]]:+.2f} ms more; "
              f"enrolling with a prepared host's runtime, tracing off: {med[cases[4][0]] - med[cases[3][0]]:+.2f} ms; "
              f"a load and unload after the first, tracing off: {(med[cases[6][0]] - med[cases[5][0]] - (med[cases[4][0]] - med[cases[3][0]])) / (CYCLES - 1):+.3f} ms, "
              f"every site enabled again: {(med[cases[7][0]] - med[cases[6][0]]) / CYCLES:+.2f} ms")

if __name__ == "__main__":
    main()
