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
import os, statistics, subprocess, tempfile

from common import arguments, write_program

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

static atomic_int stop;

static void* runner(void* arg) {
  unsigned acc = (unsigned)(unsigned long)arg;
  while (!atomic_load_explicit(&stop, memory_order_relaxed))
    for (unsigned long i = 0; i < sizeof table / sizeof table[0]; i++) acc = table[i](acc);
  return (void*)(unsigned long)acc;
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void pause_ms(long ms) {
  struct timespec t = {0, ms * 1000000L};
  nanosleep(&t, NULL);
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
  const char* r = control(on ? "enable *" : "disable *");
  if (strncmp(r, "ok: ", 4) != 0) {
    fprintf(stderr, "%s", r);
    exit(1);
  }
  return strtoul(r + strlen(on ? "ok: enabled " : "ok: disabled "), NULL, 10);
#endif
}

int main(int argc, char** argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 21;
  pthread_t t[2];
  for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, runner, (void*)i);
  pause_ms(20);
  for (int r = 0; r < rounds; r++) {
    double t0 = now_ms();
    unsigned long on = toggle(1);
    double t1 = now_ms();
    pause_ms(5);
    double t2 = now_ms();
    unsigned long off = toggle(0);
    double t3 = now_ms();
    pause_ms(5);
    printf("toggle %lu %.4f %lu %.4f\n", on, t1 - t0, off, t3 - t2);
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  return 0;
}
"""


def main():
    a = arguments(runs=5, rounds=21)
    rounds = a.rounds
    with tempfile.TemporaryDirectory(prefix="prepatch-toggle-bench-") as d:
        src = write_program(d, a.functions, MAIN)
        pfe5, prepared, xray = (os.path.join(d, n) for n in ("pfe5", "prepared", "xray"))
        common = ["clang", "-O1", "-D_GNU_SOURCE", "-I", TESTDATA, src, "-pthread"]
        subprocess.run([*common, "-fpatchable-function-entry=5", "-o", pfe5], check=True)
        subprocess.run([*common, "-DUSE_XRAY", "-fxray-instrument", "-fxray-instruction-threshold=1", "-o", xray], check=True)
        subprocess.run([a.prepatch, "-q", pfe5, "-o", prepared], check=True)
        env = dict(os.environ, PREPATCH_COUNTS=os.path.join(d, "counts"))
        env.pop("PREPATCH_TRACE", None)
        tools = {"prepatch": prepared, "XRay": xray}
        times = {t: {"enable": [], "disable": []} for t in tools}
        sites = {}
        for _ in range(a.runs):
            for tool, binary in tools.items():
                out = subprocess.run([binary, str(rounds)], env=env, cwd=d, capture_output=True, text=True, check=True).stdout
                for line in out.splitlines():
                    _, on, t_on, off, t_off = line.split()
                    sites[tool] = (int(on), int(off))
                    times[tool]["enable"].append(float(t_on))
                    times[tool]["disable"].append(float(t_off))
        print(f"{a.functions} functions, 2 threads calling them all the time; {a.runs} interleaved runs of "
              f"{rounds} enable/disable rounds each; median ms per toggle of every site:")
        med = {t: {k: statistics.median(v) for k, v in times[t].items()} for t in tools}
        for tool in tools:
            print(f"  {tool:9s} enable {med[tool]['enable']:7.3f} ms   disable {med[tool]['disable']:7.3f} ms"
                  f"   (sites switched: {sites[tool][0]} / {sites[tool][1]}"
                  f"{', XRay function ids' if tool == 'XRay' else ''})")
        for k in ("enable", "disable"):
            print(f"prepatch / XRay, {k}: {med['prepatch'][k] / med['XRay'][k]:.2f}x")


if __name__ == "__main__":
    main()
