#!/usr/bin/env python3
"""Shim benchmark, toggle half (issue 4): how long enabling and disabling every site takes in a live
process, prepatch against LLVM XRay, side by side.

One generated program (bench/gen_many.py, 100k functions) is built twice with clang: with
-fpatchable-function-entry=5 and then prepared by prepatch, and with -fxray-instrument
-fxray-instruction-threshold=1 (XRay's sleds in every function). In each, two threads call all the
functions in a loop the whole time, while the main thread times `rounds` pairs of "enable everything"
and "disable everything":
  prepatch: the shim's control channel from inside the process (testdata/ctl_channel.h, the protocol
            `prepatch ctl` speaks): request file, signal, the shim's checks, the three-phase batch and
            its three syncs, reply file;
  XRay:     __xray_patch() and __xray_unpatch() (no handler installed; XRay makes no promise for
            threads running while it patches, prepatch does).
Each binary runs --runs times, interleaved; the script prints the median time per toggle and the ratio.
Usage: bench/toggle_bench.py [--prepatch build/prepatch] [--functions 100000] [--runs 5] [--rounds 21]
Not a test: nothing here asserts a time.
"""
import os, subprocess, tempfile

from common import arguments, toggle_medians, write_program

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(HERE, "..", "testdata")

MAIN = r"""
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef USE_XRAY
/* From XRay's xray_interface.h, which is C++ only; the enum XRayPatchingStatus is returned as an int. */
enum { XRAY_SUCCESS = 1 };
int __xray_patch(void);
int __xray_unpatch(void);
size_t __xray_max_function_id(void);
#else
#include "ctl_channel.h"
#endif

#include "toggle_rounds.h"

static unsigned call_all(unsigned acc) {
  for (unsigned long i = 0; i < sizeof table / sizeof table[0]; i++) acc = table[i](acc);
  return acc;
}

/* Switches every site; returns how many the tool reports it switched. */
static unsigned long toggle(int on) {
#ifdef USE_XRAY
  int s = on ? __xray_patch() : __xray_unpatch();
  if (s != XRAY_SUCCESS) {
    fprintf(stderr, "XRay patching failed: %d\n", (int)s);
    exit(1);
  }
  return __xray_max_function_id();
#else
  return control_all(on);
#endif
}

int main(int argc, char** argv) {
  toggle_rounds(argc > 1 ? atoi(argv[1]) : 21, call_all, toggle);
  return 0;
}
"""


def main():
    a = arguments(runs=5, rounds=21)
    rounds = a.rounds
    with tempfile.TemporaryDirectory(prefix="prepatch-toggle-bench-") as d:
        src = write_program(d, a.functions, MAIN)
        pfe5, prepared, xray = (os.path.join(d, n) for n in ("pfe5", "prepared", "xray"))
        common = ["clang", "-O1", "-D_GNU_SOURCE", "-I", TESTDATA, "-I", HERE, src, "-pthread"]
        subprocess.run([*common, "-fpatchable-function-entry=5", "-o", pfe5], check=True)
        subprocess.run([*common, "-DUSE_XRAY", "-fxray-instrument", "-fxray-instruction-threshold=1", "-o", xray], check=True)
        subprocess.run([a.prepatch, "-q", pfe5, "-o", prepared], check=True)
        env = dict(os.environ, PREPATCH_COUNTS=os.path.join(d, "counts"))
        env.pop("PREPATCH_TRACE", None)
        tools = {"prepatch": [prepared, str(rounds)], "XRay": [xray, str(rounds)]}
        med, sites = toggle_medians(tools, a.runs, env, d)
        print(f"{a.functions} functions, 2 threads calling them all the time; {a.runs} interleaved runs of "
              f"{rounds} enable/disable rounds each; median ms per toggle of every site:")
        for tool in tools:
            print(f"  {tool:9s} enable {med[tool]['enable']:7.3f} ms   disable {med[tool]['disable']:7.3f} ms"
                  f"   (sites switched: {sites[tool][0]} / {sites[tool][1]}"
                  f"{', XRay function ids' if tool == 'XRay' else ''})")
        for k in ("enable", "disable"):
            print(f"prepatch / XRay, {k}: {med['prepatch'][k] / med['XRay'][k]:.2f}x")


if __name__ == "__main__":
    main()
