#!/usr/bin/env python3
"""Preparer benchmark: prepatch vs cp on a generated 100k-function `-pg -mfentry` binary, side by side.

Usage: bench/prepare_bench.py [--prepatch build/prepatch] [--functions 100000] [--runs 11] [--cxx]
--cxx: the functions are C++ (mangled names such as bench::modqaxp::Clsabc::runxyz(unsigned)).
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
        src, binary = write_program(d, a.functions, cxx=a.cxx), os.path.join(d, "many")
        t0 = time.perf_counter()
        subprocess.run([a.compiler, "-O1", "-pg", "-mfentry", src, "-o", binary], check=True)
        print(f"built {a.functions} functions with {a.compiler} -O1 -pg -mfentry in {time.perf_counter() - t0:.1f} s; "
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
        # Memory beyond the mapped file: valgrind's massif counting every page mapped (--pages-as-heap:
        # the large arrays are mmap'ed in huge pages, which a heap profile does not see), at its peak,
        # less the same for the one-function input (libraries, stack, the program itself) and less
        # what mapping the bigger input adds. Mapped, not touched: an upper bound (RSS cannot tell
        # which input pages were read, and the input is copied by the kernel).
        def peak_mapped(inp, tag):
            massif = os.path.join(d, "massif." + tag)
            subprocess.run(["valgrind", "-q", "--tool=massif", "--pages-as-heap=yes", f"--massif-out-file={massif}", prepatch, "-q",
                            inp, "-o", out + ".massif." + tag], check=True)
            with open(massif) as f:
                return max(int(v) for k, _, v in (l.strip().partition("=") for l in f) if k == "mem_heap_B")
        heap = peak_mapped(binary, "big") - peak_mapped(tiny, "tiny") - (os.path.getsize(binary) - os.path.getsize(tiny))
        print(f"{'':24}{'median':>10}{'min':>10}{'max':>10}")
        print(f"{'cp':24}{mcp * 1e3:9.1f}ms{min(cp) * 1e3:9.1f}ms{max(cp) * 1e3:9.1f}ms")
        print(f"{'prepatch':24}{mpp * 1e3:9.1f}ms{min(pp) * 1e3:9.1f}ms{max(pp) * 1e3:9.1f}ms")
        print(f"ratio prepatch/cp (medians): {mpp / mcp:.2f}x   (target <= 2x)")
        print(f"sites: {sites}; peak RSS {statistics.median(rss):.0f} KiB (baseline, tiny input: {base} KiB; cp: {cp_rss} KiB); "
              f"input {in_kib:.0f} KiB mapped; output {out_kib:.0f} KiB written")
        print(f"peak memory beyond the mapped input (massif --pages-as-heap, less the one-function run and the input's size): "
              f"{heap / 1024:.0f} KiB = {heap / sites:.1f} bytes/site   (target <= 64)")

if __name__ == "__main__":
    main()
