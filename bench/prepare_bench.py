#!/usr/bin/env python3
"""Preparer benchmark: prepatch vs cp on a generated 100k-function `-pg -mfentry` binary, side by side.

Usage: bench/prepare_bench.py [--prepatch build/prepatch] [--functions 100000] [--runs 11]
Prints a table and the lines docs/PERFORMANCE.md quotes. Not a test: nothing here asserts a time.
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

from common import arguments, maxrss_runner, write_program

def timed(argv):
    """Runs argv; returns its wall time in seconds. Popen starts it with vfork: os.spawnvp forks all of
    Python, which added ~2.5 ms to both sides and flattered the ratio."""
    t0 = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - t0

def peak_rss(maxrss, argv):
    """Runs argv under the maxrss parent (bench/common.py); returns the peak RSS in KiB of that one process."""
    r = subprocess.run([maxrss, *argv], stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}")
    return int(r.stderr.split()[-1])

def main():
    a = arguments(runs=11)
    prepatch = a.prepatch
    with tempfile.TemporaryDirectory(prefix="prepatch-bench-") as d:
        src, binary = write_program(d, a.functions), os.path.join(d, "many")
        t0 = time.perf_counter()
        subprocess.run([a.cc, "-O1", "-pg", "-mfentry", src, "-o", binary], check=True)
        print(f"built {a.functions} functions with {a.cc} -O1 -pg -mfentry in {time.perf_counter() - t0:.1f} s; "
              f"{os.path.getsize(binary) / 1e6:.1f} MB")
        tiny = os.path.join(d, "tiny")
        with open(os.path.join(d, "tiny.c"), "w") as f:
            f.write("int main(void) { return 0; }\n")
        subprocess.run([a.cc, "-pg", "-mfentry", os.path.join(d, "tiny.c"), "-o", tiny], check=True)

        out = os.path.join(d, "out")
        cp, pp = [], []
        for _ in range(a.runs):  # interleaved, so both see the same machine state
            for p in (out, out + ".cp"):
                if os.path.exists(p):
                    os.unlink(p)
            cp.append(timed(["cp", binary, out + ".cp"]))
            pp.append(timed([prepatch, "-q", binary, "-o", out]))
        maxrss = maxrss_runner(d, a.cc)
        rss = [peak_rss(maxrss, [prepatch, "-q", binary, "-o", out + ".rss"]) for _ in range(3)]
        base = min(peak_rss(maxrss, [prepatch, "-q", tiny, "-o", out + ".tiny"]) for _ in range(3))
        cp_rss = min(peak_rss(maxrss, ["/bin/cp", binary, out + ".cprss"]) for _ in range(3))
        sites = int(subprocess.run([prepatch, "sites", out], capture_output=True, text=True, check=True)
                    .stdout.strip().splitlines()[-1].split()[0])
        mcp, mpp = statistics.median(cp), statistics.median(pp)
        in_kib = os.path.getsize(binary) / 1024
        out_kib = os.path.getsize(out) / 1024
        # Memory beyond the mapped file: the heap's peak, measured exactly by valgrind's massif (RSS
        # cannot tell which input pages were touched, now that unchanged stretches are copied by the kernel).
        massif = os.path.join(d, "massif.out")
        subprocess.run(["valgrind", "-q", "--tool=massif", f"--massif-out-file={massif}", prepatch, "-q", binary,
                        "-o", out + ".massif"], check=True)
        heap = 0
        with open(massif) as f:
            snap = {}
            for line in f:
                k, _, v = line.strip().partition("=")
                if k in ("mem_heap_B", "mem_heap_extra_B"):
                    snap[k] = int(v)
                    if len(snap) == 2:
                        heap = max(heap, sum(snap.values()))
                        snap = {}
        print(f"{'':24}{'median':>10}{'min':>10}{'max':>10}")
        print(f"{'cp':24}{mcp * 1e3:9.1f}ms{min(cp) * 1e3:9.1f}ms{max(cp) * 1e3:9.1f}ms")
        print(f"{'prepatch':24}{mpp * 1e3:9.1f}ms{min(pp) * 1e3:9.1f}ms{max(pp) * 1e3:9.1f}ms")
        print(f"ratio prepatch/cp (medians): {mpp / mcp:.2f}x   (target <= 2x)")
        print(f"sites: {sites}; peak RSS {statistics.median(rss):.0f} KiB (baseline, tiny input: {base} KiB; cp: {cp_rss} KiB); "
              f"input {in_kib:.0f} KiB mapped; output {out_kib:.0f} KiB written")
        print(f"peak heap (massif, heap + allocator overhead): {heap / 1024:.0f} KiB = "
              f"{heap / sites:.1f} bytes/site   (target <= 64)")

if __name__ == "__main__":
    main()
