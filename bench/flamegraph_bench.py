#!/usr/bin/env python3
"""Flame graph benchmark (issue 28): `prepatch export --format svg` of a graph trace with 100k distinct
call stacks, then the SVG opened in headless Chromium (Debian's `chromium`), side by side with the
same Chromium opening a flame graph of a handful of frames (its own start-up: the baseline).

The program is generated: five levels of ten functions each, every function calling all ten of the
next level, so its 10^5 leaves are 100,000 distinct stacks (111,110 with their callers). A leaf's work
is skewed (one in 64 does 200x the spin of the rest), so some leaves are wider than a pixel and most
are not. Printed: the SVG's size and frame count, the export's time and peak RSS, and Chromium's wall
time to load, run the page's script and take a screenshot, against the baseline. Not a test: nothing
here asserts a time.
Usage: bench/flamegraph_bench.py [--prepatch build/prepatch] [--runs 5]
"""
import os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import arguments, maxrss_runner  # noqa: E402

LEVELS, FANOUT = 5, 10


def program():
    c = ["volatile unsigned long sink;",
         "static void spin(unsigned n) { for (unsigned i = 0; i < n; i++) sink++; }"]
    for d in reversed(range(LEVELS)):
        for i in range(FANOUT):
            c.append(f"__attribute__((noinline)) void L{d}_{i}(unsigned p) {{")
            if d == LEVELS - 1:
                c.append(f"  p = p * {FANOUT} + {i}; spin((p * 2654435761u) % 64 == 0 ? 4000 : 20);")
            else:
                c += [f"  L{d + 1}_{k}(p * {FANOUT} + {i});" for k in range(FANOUT)]
            c.append("}")
    c.append("int main(void) {")
    c += [f"  L0_{i}(0);" for i in range(FANOUT)]
    c.append("  return 0;\n}")
    return "\n".join(c) + "\n"


def timed(cmd, cwd, runner=None):
    t = time.perf_counter()
    p = subprocess.run(([runner] if runner else []) + cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return wall, (int(p.stderr.strip().splitlines()[-1]) if runner else 0)


def main():
    a = arguments(5)
    with tempfile.TemporaryDirectory(prefix="prepatch-flamegraph-bench-") as d:
        runner = maxrss_runner(d, a.cc)
        src = os.path.join(d, "stacks.c")
        with open(src, "w") as f:
            f.write(program())
        subprocess.run([a.cc, "-O1", "-pg", "-mfentry", src, "-o", src[:-2]], check=True)
        subprocess.run([a.prepatch, "-q", src[:-2], "-o", src[:-2] + ".p"], check=True)
        trace = os.path.join(d, "t.trace")
        subprocess.run([src[:-2] + ".p"], env=dict(os.environ, PREPATCH_TRACE="*", PREPATCH_TRACER="graph", PREPATCH_OUTPUT=trace), check=True)
        folded = subprocess.run([a.prepatch, "export", trace, "--format", "folded", "-o", "-"], check=True, capture_output=True, text=True).stdout
        stacks = len(folded.splitlines())
        svg = os.path.join(d, "t.svg")
        small_trace = os.path.join(d, "small.trace")
        small_src = os.path.join(d, "small.c")
        with open(small_src, "w") as f:
            f.write("__attribute__((noinline)) int leaf(int x) { return x * 3; }\n"
                    "__attribute__((noinline)) int mid(int x) { return leaf(x) + 1; }\n"
                    "int main(void) { return mid(0) - 1; }\n")
        subprocess.run([a.cc, "-O1", "-pg", "-mfentry", small_src, "-o", small_src[:-2]], check=True)
        subprocess.run([a.prepatch, "-q", small_src[:-2], "-o", small_src[:-2] + ".p"], check=True)
        subprocess.run([small_src[:-2] + ".p"], env=dict(os.environ, PREPATCH_TRACE="*", PREPATCH_TRACER="graph", PREPATCH_OUTPUT=small_trace), check=True)
        small_svg = os.path.join(d, "small.svg")
        subprocess.run([a.prepatch, "export", small_trace, "--format", "svg", "-o", small_svg], check=True)

        export, shots, baseline, rss = [], [], [], 0
        for run in range(a.runs):
            if os.path.exists(svg):
                os.unlink(svg)
            w, r = timed([a.prepatch, "export", trace, "--format", "svg", "-o", svg], d, runner)
            export.append(w)
            rss = max(rss, r)
            for target, times in ((svg, shots), (small_svg, baseline)):
                profile = os.path.join(d, f"profile{run}")
                times.append(timed(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--user-data-dir=" + profile,
                                    "--window-size=1200,1200", "--screenshot=" + os.path.join(d, "shot.png"), "file://" + target], d)[0])
        frames = open(svg).read().count('<g class="f"')
        print(f"graph trace: {os.path.getsize(trace) / 1e6:.1f} MB, {stacks} distinct stacks with self time (folded lines); "
              f"{a.runs} runs each, interleaved\n")
        print(f"SVG: {os.path.getsize(svg) / 1e6:.2f} MB, {frames} frames drawn (the rest merged, narrower than a pixel)")
        print(f"prepatch export --format svg: median {statistics.median(export) * 1e3:.0f} ms, peak RSS {rss / 1024:.1f} MB")
        print(f"chromium --headless --screenshot: this SVG {statistics.median(shots):.2f} s, a 3-frame SVG {statistics.median(baseline):.2f} s "
              f"(its start-up); {statistics.median(shots) / statistics.median(baseline):.2f}x")


if __name__ == "__main__":
    main()
