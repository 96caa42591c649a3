"""What the benchmarks share: their command line, the generated many-function program, a parent
process to measure a command's peak resident set, and reading bench/toggle_rounds.h's rounds."""
import argparse, os, statistics, subprocess

from gen_many import generate


# What the per-call benchmarks (off_bench.py, qemu_bench.py) call: a recursive fib (calls that call) and
# mix, a leaf a few instructions long (the worst case for a per-call hook), both kept out of line.
CALLS_C = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((noinline)) unsigned long fib(unsigned n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
__attribute__((noinline)) unsigned mix(unsigned x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  return x;
}
"""


def arguments(runs, texts=(), **counts):
    """Parses --prepatch, --functions, --runs (default `runs`), --cc, --cxx, one integer option per keyword
    (--rounds for rounds=21, --big-mb for big_mb=1) and one text option, default empty, per name in
    `texts`; --prepatch made absolute."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepatch", default="build/prepatch")
    ap.add_argument("--functions", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--cc", default="gcc")
    ap.add_argument("--cxx", action="store_true", help="a C++ program of mangled names (gen_many.py), built with g++")
    for name, default in counts.items():
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=default)
    for name in texts:
        ap.add_argument("--" + name.replace("_", "-"), default="")
    a = ap.parse_args()
    a.prepatch = os.path.abspath(a.prepatch)
    a.compiler = "g++" if a.cxx else a.cc  # what builds write_program's program
    return a


def write_program(directory, functions, main=None, cxx=False):
    """Writes bench/gen_many.py's program with `functions` functions (and `main`, if given, instead of
    its own) to DIRECTORY/many.c (many.cc with `cxx`); returns its path."""
    src = os.path.join(directory, "many.cc" if cxx else "many.c")
    with open(src, "w") as f:
        generate(functions, f, *([main] if main else []), cxx=cxx)
    return src


# Runs its arguments and prints their peak resident set (KiB) on stderr. A child's ru_maxrss counts the
# memory of the process it was forked from (the high-water mark survives exec: forked or vforked from
# Python, every command measured ~10 MB more), so the fork is made from this small program instead.
MAXRSS_C = r"""#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char** argv) {
  (void)argc;
  pid_t pid = fork();
  if (pid == 0) { execv(argv[1], argv + 1); _exit(127); }
  int status; struct rusage ru;
  if (wait4(pid, &status, 0, &ru) != pid || status != 0) return 1;
  fprintf(stderr, "%ld\n", ru.ru_maxrss);
  return 0;
}
"""


def maxrss_runner(directory, cc):
    """Builds the MAXRSS_C parent in `directory`; returns its path. `[path, cmd...]` runs cmd (its
    stdout passes through) and prints its peak RSS in KiB as the last line of stderr."""
    path = os.path.join(directory, "maxrss")
    with open(path + ".c", "w") as f:
        f.write(MAXRSS_C)
    subprocess.run([cc, "-O1", path + ".c", "-o", path], check=True)
    return path


def toggle_medians(setups, runs, env, cwd):
    """Runs each of `setups` (name -> argv of a program built on bench/toggle_rounds.h) `runs` times,
    interleaved; returns the median time in ms of each toggle ({name: {"enable": ms, "disable": ms}})
    and the sites each switched ({name: (on, off)})."""
    times = {s: {"enable": [], "disable": []} for s in setups}
    sites = {}
    for _ in range(runs):
        for setup, argv in setups.items():
            out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                _, on, t_on, off, t_off = line.split()
                sites[setup] = (int(on), int(off))
                times[setup]["enable"].append(float(t_on))
                times[setup]["disable"].append(float(t_off))
    return {s: {k: statistics.median(v) for k, v in t.items()} for s, t in times.items()}, sites
