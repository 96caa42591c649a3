#!/usr/bin/env python3
"""Snapshot benchmark (issue 27): how long `prepatch ctl PID snapshot` takes on a process whose four
threads record into 4 MiB rings (16 MiB of rings in all), side by side with `cp` of the same trace file.

testdata/ring.c (built -pg -mfentry, prepared) runs its four threads forever under PREPATCH_TRACER=graph
and PREPATCH_BUFFER=ring:4M; once every ring has wrapped, the script alternates --runs snapshots with
--runs copies of the trace file by `cp`, and prints the median wall time of each (the whole command:
prepatch's start, finding the file in /proc/PID/maps, the copy), its CPU time (user + system: where
the recording threads take every core, as four do on a machine of two, the wall time is mostly
waiting for a core), and their ratios. The threads keep recording throughout: the snapshot never
stops them. Not a test: nothing here asserts a time.
Usage: bench/snapshot_bench.py [--prepatch build/prepatch] [--runs 21]
"""
import os, resource, signal, statistics, subprocess, tempfile, time

from common import arguments

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(cmd):
    """(wall, CPU) seconds of running cmd."""
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    w = time.perf_counter() - t
    a = resource.getrusage(resource.RUSAGE_CHILDREN)
    return w, a.ru_utime - b.ru_utime + a.ru_stime - b.ru_stime


def main():
    a = arguments(21)
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(HERE, "..", "testdata", "ring.c")
        hooks, exe, trace = (os.path.join(d, n) for n in ("ring.hooks", "ring", "ring.trace"))
        subprocess.run(["gcc", "-O2", "-pg", "-mfentry", "-pthread", src, "-o", hooks], check=True)
        subprocess.run([a.prepatch, "-q", hooks, "-o", exe], check=True)
        env = dict(os.environ, PREPATCH_TRACE="f*,g", PREPATCH_TRACER="graph", PREPATCH_BUFFER="ring:4M", PREPATCH_OUTPUT=trace)
        p = subprocess.Popen([exe, "0", "forever"], env=env, cwd=d, stdout=subprocess.DEVNULL)
        try:
            # Every thread's ring wraps within a second or two (a few million calls each).
            time.sleep(3)
            snap, copy = [], []
            for r in range(a.runs):
                out = os.path.join(d, f"s{r}")
                snap.append(timed([a.prepatch, "ctl", str(p.pid), "snapshot", "-o", out]))
                copy.append(timed(["cp", trace, os.path.join(d, f"c{r}")]))
                size = os.path.getsize(out)
                os.remove(out), os.remove(os.path.join(d, f"c{r}"))
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        s, c = (statistics.median(w for w, _ in v) for v in (snap, copy))
        sc, cc = (statistics.median(u for _, u in v) for v in (snap, copy))
        print(f"4 threads x 4 MiB rings, recording throughout; {a.runs} runs each, interleaved; medians")
        print(f"{'':28}{'wall':>10}{'CPU':>11}")
        print(f"prepatch ctl PID snapshot   {s * 1e3:7.2f} ms {sc * 1e3:7.2f} ms   (copy: {size / 2**20:.1f} MiB)")
        print(f"cp of the trace file        {c * 1e3:7.2f} ms {cc * 1e3:7.2f} ms")
        print(f"ratio snapshot / cp: wall {s / c:.2f}, CPU {sc / cc:.2f}")


if __name__ == "__main__":
    main()
