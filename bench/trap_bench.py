#!/usr/bin/env python3
"""Trap sites (README "Trap sites"): what a traced call costs when its site reaches nothing and holds
the ISA's trap, against the same call through a branch island, side by side.

One x86-64 program (gcc -O2 -pg -mfentry, linked at 64 KiB, -no-pie, beside a 3 GiB .bss that puts
the shim beyond a call's reach) calls mix(), a leaf a few instructions long, --calls times. Prepared
twice:
  island   as built: the sites call a branch island in the zero padding after the text;
  trap     the same binary with that padding made non-zero (no room for an island, and no page above
           64 KiB below the text for the islands of last resort): every site a trap site.
Each runs tracing off and with PREPATCH_TRACE=mix (count tracer), --runs times, interleaved; the script
prints the median wall time of each and the cost per traced call (on minus off, divided by the calls),
and the trap's as a ratio to the island's.
Usage: bench/trap_bench.py [--prepatch build/prepatch] [--runs 11] [--calls 200000]
Not a test: nothing here asserts a time.
"""
import os, statistics, struct, subprocess, tempfile, time

from common import CALLS_C, arguments

PROGRAM = CALLS_C + r"""
char big_bss[3UL << 30];
int main(int argc, char** argv) {
  unsigned n = (unsigned)atoi(argv[1]), h = 0;
  for (unsigned i = 0; i < n; i++) h = mix(h + i);
  printf("%u\n", h);
  return 0;
}
"""


def without_room(path, out):
    """`path` with the 64 bytes after its executable segment's file bytes made 0xff (as
    tests/island_test.cc without_room_after_the_text): no room for a branch island there."""
    b = bytearray(open(path, "rb").read())
    phoff, = struct.unpack_from("<Q", b, 0x20)
    phnum, = struct.unpack_from("<H", b, 0x38)
    end = None
    for i in range(phnum):
        p_type, p_flags, p_offset, _, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", b, phoff + 56 * i)
        if p_type == 1 and p_flags & 1:
            end = p_offset + p_filesz
    if end is None or b[end:end + 64] != bytes(64):
        raise SystemExit(f"{path}: no zero padding after its text")
    b[end:end + 64] = b"\xff" * 64
    with open(out, "wb") as f:
        f.write(b)
    os.chmod(out, 0o755)


def main():
    a = arguments(runs=11, calls=200_000)
    with tempfile.TemporaryDirectory(prefix="prepatch-trap-bench-") as d:
        src, built = os.path.join(d, "calls.c"), os.path.join(d, "calls")
        with open(src, "w") as f:
            f.write(PROGRAM)
        subprocess.run([a.cc, "-O2", "-pg", "-mfentry", "-no-pie", "-Wl,-Ttext-segment=0x10000", src, "-o", built], check=True)
        without_room(built, built + "-nopad")
        said = {}
        for name, source in (("island", built), ("trap", built + "-nopad")):
            r = subprocess.run([a.prepatch, source, "-o", os.path.join(d, name)], capture_output=True, text=True, check=True)
            said[name] = r.stderr
        if "holds the ISA's trap" not in said["trap"] or "holds the ISA's trap" in said["island"]:
            raise SystemExit(f"not the builds this measures: {said}")
        cases = [(name, on) for name in ("island", "trap") for on in (False, True)]
        times = {c: [] for c in cases}
        outputs = set()
        for _ in range(a.runs):
            for name, on in cases:
                env = {k: v for k, v in os.environ.items() if not k.startswith("PREPATCH_")}
                if on:
                    env.update(PREPATCH_TRACE="mix", PREPATCH_COUNTS=os.path.join(d, name + ".counts"))
                t0 = time.perf_counter()
                r = subprocess.run([os.path.join(d, name), str(a.calls)], cwd=d, env=env, capture_output=True, text=True, check=True)
                times[(name, on)].append(time.perf_counter() - t0)
                outputs.add(r.stdout)
        if len(outputs) != 1:
            raise SystemExit(f"the runs disagree: {outputs}")
        med = {c: statistics.median(v) * 1e3 for c, v in times.items()}
        per_call = {name: (med[(name, True)] - med[(name, False)]) * 1e6 / a.calls for name in ("island", "trap")}
        print(f"{a.calls} calls of mix(), counted; {a.runs} interleaved runs each, median wall time:")
        for name in ("island", "trap"):
            print(f"  {name:7s} off {med[(name, False)]:8.1f} ms   on {med[(name, True)]:8.1f} ms   "
                  f"{per_call[name]:8.1f} ns per traced call")
        print(f"  a trap site's traced call costs {per_call['trap'] / per_call['island']:.0f}x an island's")


if __name__ == "__main__":
    main()
