#!/usr/bin/env python3
"""Reader benchmark (issues 25, 28): prepatch report, replay and export (chrome, perfetto; folded, svg and report's filters and --diff on the big trace) against uftrace's,
and against `cat TRACE > /dev/null` with the file cached, side by side.

testdata/bigtrace.c (4 threads, each --rounds rounds of a wide and a 60-deep call tree: 404 calls a
round) is built with gcc -O2 -pg -mfentry and recorded twice with every call's entry and exit: by
prepatch (prepared, PREPATCH_TRACER=graph, PREPATCH_TRACE='*') and by `uftrace record --no-libcall`.
Each reader command then runs --runs times, interleaved, its output to /dev/null; the script prints
the median wall time, the peak resident set (of the median run's kind: the largest seen) and the ratios.
A second, large trace (--big-mb, default 1100 MB: about 67M calls) is read by prepatch alone, to show
time and memory at that size against cat. Not a test: nothing here asserts a time.
Usage: bench/reader_bench.py [--prepatch build/prepatch] [--runs 5] [--rounds 1000] [--big-mb 1100]
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import arguments, maxrss_runner  # noqa: E402

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testdata", "bigtrace.c")


def measure(runner, cmd, cwd):
    """Wall seconds and peak RSS (KiB) of cmd, its stdout to /dev/null."""
    t = time.perf_counter()
    p = subprocess.run([runner] + cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return wall, int(p.stderr.strip().splitlines()[-1])


def table(title, configs, runs, runner, cwd):
    times = {name: [] for name, _ in configs}
    rss = {name: 0 for name, _ in configs}
    for _ in range(runs):
        for name, cmd in configs:
            w, r = measure(runner, cmd, cwd)
            times[name].append(w)
            rss[name] = max(rss[name], r)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(title)
    print(f"{'command':44} {'median':>10} {'peak RSS':>10}")
    for name, _ in configs:
        print(f"{name:44} {med[name] * 1e3:8.1f}ms {rss[name] / 1024:8.1f}MB")
    print()
    return med, rss


def main():
    a = arguments(5, rounds=1000, big_mb=1100)
    if not shutil.which("uftrace"):
        raise SystemExit("uftrace is not installed (scripts/install-deps.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="prepatch-reader-bench-") as d:
        runner = maxrss_runner(d, a.cc)
        big = os.path.join(d, "big")
        subprocess.run([a.cc, "-O2", "-pg", "-mfentry", "-pthread", SOURCE, "-o", big], check=True)
        subprocess.run([a.prepatch, "-q", big, "-o", big + ".p"], check=True)
        env = dict(os.environ, PREPATCH_TRACE="*", PREPATCH_TRACER="graph", PREPATCH_BUFFER="4096")
        trace = os.path.join(d, "t.trace")
        subprocess.run([big + ".p", "4", str(a.rounds)], env=dict(env, PREPATCH_OUTPUT=trace), check=True, stdout=subprocess.DEVNULL)
        udata = os.path.join(d, "uftrace.data")
        subprocess.run(["uftrace", "record", "--no-libcall", "-d", udata, big, "4", str(a.rounds)], check=True, stdout=subprocess.DEVNULL)
        calls = 4 * a.rounds * 404 + 5
        print(f"bigtrace: {calls} calls (4 threads x {a.rounds} rounds x 404, main and workers); prepatch trace "
              f"{os.path.getsize(trace) / 1e6:.1f} MB, uftrace data {sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(udata) for f in fs) / 1e6:.1f} MB; "
              f"{a.runs} runs each, interleaved\n")
        pp = a.prepatch
        med, _ = table("Side by side with uftrace, same workload:", [
            ("prepatch report", [pp, "report", trace]),
            ("uftrace report", ["/usr/bin/uftrace", "report", "-d", udata]),
            ("prepatch replay", [pp, "replay", trace]),
            ("uftrace replay", ["/usr/bin/uftrace", "replay", "-d", udata]),
            ("prepatch export --format chrome -o -", [pp, "export", trace, "-o", "-"]),
            ("prepatch export --format perfetto -o -", [pp, "export", trace, "--format", "perfetto", "-o", "-"]),
            ("uftrace dump --chrome", ["/usr/bin/uftrace", "dump", "--chrome", "-d", udata]),
            ("cat TRACE (cached)", ["/bin/cat", trace]),
        ], a.runs, runner, d)
        print(f"report: {med['uftrace report'] / med['prepatch report']:.1f}x faster than uftrace report; "
              f"replay: {med['uftrace replay'] / med['prepatch replay']:.1f}x faster than uftrace replay; "
              f"export: {med['uftrace dump --chrome'] / med['prepatch export --format chrome -o -']:.1f}x faster than uftrace dump --chrome")
        sizes = {}
        for fmt in ("chrome", "perfetto"):
            out = os.path.join(d, "export." + fmt)
            subprocess.run([pp, "export", trace, "--format", fmt, "-o", out], check=True)
            sizes[fmt] = os.path.getsize(out)
            os.unlink(out)
        print(f"export sizes against the trace's {os.path.getsize(trace) / 1e6:.1f} MB: chrome {sizes['chrome'] / os.path.getsize(trace):.2f}x, "
              f"perfetto {sizes['perfetto'] / os.path.getsize(trace):.2f}x\n")
        if a.big_mb <= 0:
            return
        rounds = a.big_mb * 1000000 // (4 * 404 * 16)
        big_trace = os.path.join(d, "big.trace")
        subprocess.run([big + ".p", "4", str(rounds)], env=dict(env, PREPATCH_OUTPUT=big_trace, PREPATCH_BUFFER=str(a.big_mb + 200)),
                       check=True, stdout=subprocess.DEVNULL)
        size = os.path.getsize(big_trace)
        med, rss = table(f"A {size / 1e9:.2f} GB trace ({4 * rounds * 404 + 5} calls), prepatch alone, against cat:", [
            ("cat TRACE (cached)", ["/bin/cat", big_trace]),
            ("prepatch report", [pp, "report", big_trace]),
            ("prepatch replay", [pp, "replay", big_trace]),
            ("prepatch export --format chrome -o -", [pp, "export", big_trace, "-o", "-"]),
            ("prepatch export --format perfetto -o -", [pp, "export", big_trace, "--format", "perfetto", "-o", "-"]),
            ("prepatch export --format folded -o -", [pp, "export", big_trace, "--format", "folded", "-o", "-"]),
            ("prepatch export --format svg -o -", [pp, "export", big_trace, "--format", "svg", "-o", "-"]),
            ("prepatch report --avg-self -F 'level*' -N dive --depth 6", [pp, "report", big_trace, "--avg-self", "-F", "level*", "-N", "dive", "--depth", "6"]),
            ("prepatch report --diff TRACE TRACE", [pp, "report", "--diff", big_trace, big_trace]),
        ], max(1, a.runs // 2), runner, d)
        cat = med["cat TRACE (cached)"]
        for name in ("prepatch report", "prepatch replay", "prepatch export --format chrome -o -", "prepatch export --format perfetto -o -",
                     "prepatch export --format folded -o -", "prepatch export --format svg -o -",
                     "prepatch report --avg-self -F 'level*' -N dive --depth 6", "prepatch report --diff TRACE TRACE"):
            read = size * (2 if "--diff" in name else 1)  # --diff reads both sides
            print(f"{name}: {read / med[name] / 1e6:.0f} MB/s, {cat * read / size / med[name]:.2f} of cat's speed, peak RSS {rss[name] / 1024:.1f} MB")


if __name__ == "__main__":
    main()
