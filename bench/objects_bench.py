#!/usr/bin/env python3
"""Shared objects (issue 26): enabling 100k sites spread over 10 loaded objects against 100k sites in
one, side by side.

Builds bench/gen_many.py's functions as shared libraries (-O1 -pg -mfentry -fPIC), prepared: one with
all --functions functions, and ten copies of one with a tenth of them (ten files, loaded RTLD_LOCAL).
An unprepared host dlopens either the one library or the ten (the first one's runtime serves the
process, the others enroll with it), starts two threads calling every loaded function the whole time,
and times `rounds` pairs of "enable everything" and "disable everything" through the shim's control
channel from inside the process (testdata/ctl_channel.h: request file, signal, the batches, reply
file): one batch for the one object, and one batch over all ten for the ten. Both set-ups run --runs times,
interleaved; the script prints the median time per toggle and the ratio (the goal: ten objects <= 1.2x
one).
Usage: bench/objects_bench.py [--prepatch build/prepatch] [--functions 100000] [--runs 5] [--rounds 21]
Not a test: nothing here asserts a time.
"""
import os, subprocess, tempfile

from common import arguments, toggle_medians, write_program

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(HERE, "..", "testdata")

# What each library exports beside its functions: one call of every one of them.
LIB = r"""
unsigned run_all(unsigned acc) {
  for (unsigned long i = 0; i < sizeof table / sizeof table[0]; i++) acc = table[i](acc);
  return acc;
}
"""

HOST = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include "ctl_channel.h"
#include "toggle_rounds.h"

static unsigned (*run_all[16])(unsigned);
static int libs;

static unsigned call_all(unsigned acc) {
  for (int i = 0; i < libs; i++) acc = run_all[i](acc);
  return acc;
}

int main(int argc, char** argv) {
  for (int i = 2; i < argc && libs < 16; i++) {
    void* h = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) return fprintf(stderr, "%s\n", dlerror()), 1;
    run_all[libs++] = (unsigned (*)(unsigned))dlsym(h, "run_all");
  }
  toggle_rounds(atoi(argv[1]), call_all, control_all);
  return 0;
}
"""


def library(d, name, functions, a):
    """Builds gen_many's `functions` functions into DIR/NAME.so with run_all, prepared; returns it."""
    sub = os.path.join(d, name)
    os.mkdir(sub)
    src = write_program(sub, functions, LIB)
    built, prepared = os.path.join(sub, "built.so"), os.path.join(d, name + ".so")
    subprocess.run([a.cc, "-O1", "-pg", "-mfentry", "-fPIC", "-shared", src, "-o", built], check=True)
    subprocess.run([a.prepatch, "-q", built, "-o", prepared], check=True)
    return prepared


def main():
    a = arguments(runs=5, rounds=21)
    with tempfile.TemporaryDirectory(prefix="prepatch-objects-bench-") as d:
        one = [library(d, "one", a.functions, a)]
        tenth = library(d, "tenth", a.functions // 10, a)
        ten = [tenth]
        for k in range(1, 10):  # the same library, ten files: ten objects
            copy = os.path.join(d, f"tenth{k}.so")
            with open(tenth, "rb") as src, open(copy, "wb") as dst:
                dst.write(src.read())
            ten.append(copy)
        host = os.path.join(d, "host")
        with open(host + ".c", "w") as f:
            f.write(HOST)
        subprocess.run([a.cc, "-O1", "-I", TESTDATA, "-I", HERE, host + ".c", "-o", host, "-ldl", "-pthread"], check=True)
        env = dict(os.environ, PREPATCH_COUNTS=os.path.join(d, "counts"))
        for var in ("PREPATCH_TRACE", "PREPATCH_NOTRACE", "PREPATCH_TRACER"):
            env.pop(var, None)
        setups = {"1 object": [host, str(a.rounds), *one], "10 objects": [host, str(a.rounds), *ten]}
        med, sites = toggle_medians(setups, a.runs, env, d)
        print(f"{a.functions} sites, in 1 prepared library or spread over 10; 2 threads calling them all the time; "
              f"{a.runs} interleaved runs of {a.rounds} enable/disable rounds each; median ms per toggle of every site:")
        for setup in setups:
            print(f"  {setup:10s} enable {med[setup]['enable']:7.3f} ms   disable {med[setup]['disable']:7.3f} ms"
                  f"   (sites switched: {sites[setup][0]} / {sites[setup][1]})")
        for k in ("enable", "disable"):
            print(f"10 objects / 1 object, {k}: {med['10 objects'][k] / med['1 object'][k]:.2f}x")


if __name__ == "__main__":
    main()
