#!/usr/bin/env python3
"""Tracer benchmark (issue 5): the cost of one traced call, prepatch against uftrace and LLVM XRay FDR,
side by side.

One program calls a leaf function --calls times (default 5M) in a loop. It is built four ways:
  gcc -O2                        no hooks: the baseline of every gcc configuration;
  gcc -O2 -pg -mfentry           run under `uftrace record` (entry and exit recorded), and prepared by
                                 prepatch: run untraced, and under PREPATCH_TRACER=count, function and
                                 graph with PREPATCH_TRACE=leaf, graph in a 4 MiB ring (the flight
                                 recorder: the same records, overwriting the oldest), and graph with
                                 PREPATCH_THRESHOLD=1s, which no call reaches (nothing is recorded: the
                                 cost of a call a duration threshold filters out);
  clang -O2 -fxray-instrument    run with XRay's sleds unpatched (its baseline), and in FDR and basic
                                 mode recording every call's entry and exit (func_duration_threshold_us=0;
                                 FDR with buffers for every call). The program selects, initialises and
                                 patches the mode itself (XRay's log interface), finalises and flushes
                                 the log at the end, and fails if any step does.
A fifth build, gcc -O2 reading the TSC twice around each call, is the floor of any tracer that times
each call (the graph tracer, a duration threshold, funtrace).
Every configuration runs --runs times, interleaved; the script prints the median wall time of the
whole run, the cost per call (median minus its baseline's median, divided by --calls), each tracer's
bytes per recorded event, and the ratios. With --baseline OTHER_PREPATCH (another build, say of the commit
before a change) the -pg -mfentry build is also prepared by that one, and its function, graph and ring
configurations run interleaved with the rest, so that a change is measured against the version before it
in the same run. Not a test: nothing here asserts a time.
Usage: bench/tracer_bench.py [--prepatch build/prepatch] [--baseline OTHER/prepatch] [--runs 11] [--calls 5000000]
"""
import argparse, glob, os, shutil, statistics, subprocess, tempfile, time

PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#ifdef USE_XRAY
/* xray_log_interface.h and xray_interface.h, C linkage. A mode must be selected before it can be
   initialised; the sleds stay unpatched (the baseline) unless BENCH_XRAY_MODE names one. */
int __xray_log_select_mode(const char* mode);
int __xray_log_init_mode(const char* mode, const char* config);
int __xray_patch(void);
int __xray_log_finalize(void);
int __xray_log_flushLog(void);
#define XRAY_MAIN __attribute__((xray_never_instrument))
#else
#define XRAY_MAIN
#endif
__attribute__((noinline)) int leaf(int x) { __asm__ volatile(""); return x + 1; }
XRAY_MAIN int main(int argc, char** argv) {
  long n = argc > 1 ? atol(argv[1]) : 5000000;
#ifdef USE_XRAY
  const char* mode = getenv("BENCH_XRAY_MODE");
  const char* config = getenv("BENCH_XRAY_CONFIG");
  if (mode && (__xray_log_select_mode(mode) != 0 /* XRAY_REGISTRATION_OK */ ||
               __xray_log_init_mode(mode, config ? config : "") != 2 /* XRAY_LOG_INITIALIZED */ ||
               __xray_patch() != 1 /* SUCCESS */)) {
    fprintf(stderr, "XRay mode %s did not start\n", mode);
    return 1;
  }
#endif
  int s = 0;
#ifdef TWO_TSC
  /* The floor of any tracer that times each call: two TSC reads per call, nothing else. */
  unsigned long t = 0;
  for (long i = 0; i < n; i++) t += __builtin_ia32_rdtsc(), s = leaf(s), t ^= __builtin_ia32_rdtsc();
  s += (int)(t & 1);
#else
  for (long i = 0; i < n; i++) s = leaf(s);
#endif
  printf("%d\n", s);
#ifdef USE_XRAY
  if (mode && (__xray_log_finalize() != 4 /* XRAY_LOG_FINALIZED */ || __xray_log_flushLog() != 2 /* XRAY_LOG_FLUSHED */)) {
    fprintf(stderr, "XRay mode %s did not write its log\n", mode);
    return 1;
  }
#endif
  return 0;
}
"""


def sh(cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def timed(cmd, env, cwd):
    t = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def dir_bytes(pattern):
    return sum(os.path.getsize(f) for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepatch", default="build/prepatch")
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--calls", type=int, default=5_000_000)
    ap.add_argument("--baseline", default="")
    a = ap.parse_args()
    prepatch = os.path.abspath(a.prepatch)
    have_uftrace = shutil.which("uftrace") is not None
    with tempfile.TemporaryDirectory(prefix="prepatch-tracer-bench-") as d:
        src = os.path.join(d, "leaf.c")
        open(src, "w").write(PROGRAM)
        plain, fentry, prepared, xray, tsc = (os.path.join(d, n) for n in ("leaf-plain", "leaf-fentry", "leaf-prepared", "leaf-xray", "leaf-tsc"))
        sh(["gcc", "-O2", src, "-o", plain])
        sh(["gcc", "-O2", "-DTWO_TSC", src, "-o", tsc])
        sh(["gcc", "-O2", "-pg", "-mfentry", src, "-o", fentry])
        sh([prepatch, "-q", fentry, "-o", prepared])
        sh(["clang", "-O2", "-DUSE_XRAY", "-fxray-instrument", "-fxray-instruction-threshold=1", src, "-o", xray])
        n = str(a.calls)
        base = dict(os.environ)
        for k in list(base):
            if k.startswith(("PREPATCH_", "XRAY_")):
                del base[k]
        pp = dict(base, PREPATCH_TRACE="leaf")
        # Both XRay modes record every call (no duration threshold); FDR gets buffers for all of them
        # (it stops recording when they are full): 1 MiB each, one per 32k calls (its records are 8 B).
        xray_log = dict(base, XRAY_OPTIONS="verbosity=0 xray_logfile_base=" + d + "/xray-log.")
        fdr_buffers = a.calls // 32768 + 8
        xray_fdr = dict(xray_log, BENCH_XRAY_MODE="xray-fdr",
                        BENCH_XRAY_CONFIG=f"func_duration_threshold_us=0 buffer_size=1048576 buffer_max={fdr_buffers}")
        xray_basic = dict(xray_log, BENCH_XRAY_MODE="xray-basic", BENCH_XRAY_CONFIG="func_duration_threshold_us=0")
        configs = [
            ("baseline (gcc -O2, no hooks)", [plain, n], base, None),
            ("two TSC reads per call (gcc -O2, no hooks)", [tsc, n], base, None),
            ("prepatch prepared, tracing off", [prepared, n], base, None),
            ("prepatch count", [prepared, n], dict(pp, PREPATCH_TRACER="count", PREPATCH_COUNTS=d + "/c"), None),
            ("prepatch function", [prepared, n], dict(pp, PREPATCH_TRACER="function", PREPATCH_OUTPUT=d + "/f.trace"), d + "/f.trace"),
            ("prepatch graph", [prepared, n], dict(pp, PREPATCH_TRACER="graph", PREPATCH_OUTPUT=d + "/g.trace"), d + "/g.trace"),
            ("prepatch graph, ring:4M", [prepared, n], dict(pp, PREPATCH_TRACER="graph", PREPATCH_BUFFER="ring:4M",
                                                             PREPATCH_OUTPUT=d + "/r.trace"), None),
            ("prepatch graph, threshold no call reaches", [prepared, n], dict(pp, PREPATCH_TRACER="graph", PREPATCH_THRESHOLD="1s",
                                                                               PREPATCH_OUTPUT=d + "/t.trace"), None),
            ("xray baseline (clang -fxray-instrument, off)", [xray, n], base, None),
            ("xray FDR", [xray, n], xray_fdr, d + "/xray-log.*"),
            ("xray basic", [xray, n], xray_basic, d + "/xray-log.*"),
        ]
        if a.baseline:
            sh([os.path.abspath(a.baseline), "-q", fentry, "-o", prepared + "-baseline"])
            for name in ("prepatch function", "prepatch graph", "prepatch graph, ring:4M"):
                _, cmd, env, out = next(c for c in configs if c[0] == name)
                configs.append(("baseline build: " + name[len("prepatch "):], [prepared + "-baseline", n], env, out))
        if have_uftrace:
            configs.append(("uftrace record", ["uftrace", "record", "--no-libcall", "-d", d + "/uftrace.data", fentry, n], base,
                            d + "/uftrace.data/*.dat"))
        times = {c[0]: [] for c in configs}
        sizes = {}
        for r in range(a.runs):
            for name, cmd, env, out in configs:
                for f in glob.glob(d + "/xray-log.*"):
                    os.remove(f)
                shutil.rmtree(d + "/uftrace.data", ignore_errors=True)
                times[name].append(timed(cmd, env, d))
                if out:
                    sizes[name] = dir_bytes(out)
        med = {k: statistics.median(v) for k, v in times.items()}
        calls = a.calls
        per = {}
        print(f"{calls} calls of leaf(), {a.runs} runs each, interleaved; median wall time of the whole run")
        print(f"{'configuration':48} {'median':>10} {'per call':>10} {'bytes/event':>12}")
        for name, cmd, env, out in configs:
            b = med["xray baseline (clang -fxray-instrument, off)"] if name.startswith("xray") else med["baseline (gcc -O2, no hooks)"]
            per[name] = (med[name] - b) / calls * 1e9
            events = 0 if name.endswith("count") or not out else (calls if name.endswith("function") else 2 * calls)
            size = f"{sizes[name] / events:.1f}" if events and name in sizes else ""
            print(f"{name:48} {med[name] * 1e3:8.1f}ms {per[name]:8.1f}ns {size:>12}")
        print()
        print(f"graph per call: {per['prepatch graph']:.1f} ns; XRay basic {per['xray basic']:.1f} ns (ratio {per['prepatch graph'] / per['xray basic']:.2f})")
        print(f"                XRay FDR {per['xray FDR']:.1f} ns (ratio {per['prepatch graph'] / per['xray FDR']:.2f})")
        if have_uftrace:
            print(f"                uftrace {per['uftrace record']:.1f} ns (ratio {per['prepatch graph'] / per['uftrace record']:.2f})")
        else:
            print("uftrace is not installed (scripts/install-deps.sh installs it): no uftrace figures")
        for name in ("function", "graph", "graph, ring:4M") if a.baseline else ():
            now, before = per["prepatch " + name], per["baseline build: " + name]
            print(f"{name} per call: this build {now:.1f} ns, the baseline build {before:.1f} ns (this / baseline {now / before:.2f})")
        print(f"count per call: {per['prepatch count']:.1f} ns")
        print(f"graph in a 4 MiB ring per call: {per['prepatch graph, ring:4M']:.1f} ns (ratio to the file: "
              f"{per['prepatch graph, ring:4M'] / per['prepatch graph']:.2f})")
        t = per['prepatch graph, threshold no call reaches']
        print(f"graph under a threshold no call reaches, per call: {t:.1f} ns (count + {t - per['prepatch count']:.1f} ns; "
              f"two TSC reads alone: {per['two TSC reads per call (gcc -O2, no hooks)']:.1f} ns)")


if __name__ == "__main__":
    main()
