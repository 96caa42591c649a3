#!/usr/bin/env python3
"""The other ISAs under qemu-user (issue 29): what a call costs in a prepared binary with tracing off and
with each tracer the ISA has, as ratios to the same program built without hooks and to the same binary
unprepared, run side by side. qemu's absolute times mean nothing for real hardware: only the ratios
are reported.

A loop calls a small function (a few instructions, noinline) CALLS times and a recursive fib adds
calls of a function that calls; built with the ISA's cross gcc -O2 three ways:
  plain            no hooks;
  hooked           -pg (glibc's _mcount or __gnu_mcount_nc runs at every call: what an unprepared -pg
                   binary costs) or -fpatchable-function-entry (nops);
  prepared         the hooked build through prepatch: run with tracing off, and with
                   PREPATCH_TRACE='*' under the count tracer (every call counted) and the function
                   and graph tracers (every call recorded to a trace file).
Each case runs --runs times, interleaved; the median CPU time (user + system, qemu's own included) of
each is printed, with the cost per call above plain as a ratio of plain's whole per-call time.
qemu-arm gives user space no generic timer, so Thumb-2's trace timestamps there are CLOCK_MONOTONIC
read through a system call per event (docs/SHIM.md), which real ARMv7 cores with a readable CNTVCT
do not pay: its function and graph rows are an upper bound.
The rows marked "far" build the same program with a 1 GiB .bss (3 GiB on RISC-V64, whose auipc+jalr
reaches 2 GiB), which puts the shim beyond its call's reach of every site: each call goes through a
branch island (arch/island.h) to the trampoline. "thumb2 -marm -pg" is ARM32's ARM-state -pg sites,
whose `b` goes to the shim's ARM-state entry (or, far, to its copy as an island) and on to the Thumb
trampoline.
With --baseline OTHER_PREPATCH (another build, say of the commit before a change), each hooked build is also
prepared by that one and run under count in the same loop: the column count/before is the count tracer's
time now against then.
Usage: bench/qemu_bench.py [--prepatch build/prepatch] [--baseline OTHER/prepatch] [--runs 7] [--calls 3000000]
[--only 'marm|far'] (--only: the rows whose name matches that regular expression).
Not a test: nothing here asserts a time.
"""
import os, re, statistics, subprocess, tempfile

from common import CALLS_C, arguments

PROGRAM = CALLS_C + r"""
int main(int argc, char** argv) {
  unsigned n = (unsigned)atoi(argv[1]), h = 0;
  for (unsigned i = 0; i < n; i++) h = mix(h + i);
  printf("%lu %u\n", fib(24), h);
  return 0;
}
"""

# The same with GIB GiB of .bss between the text and the shim (written once, so that gcc keeps it).
PROGRAM_FAR = PROGRAM.replace("int main(", "static char far_bss[GIBul << 30];\nint main(").replace(
    'printf("%lu %u\\n", fib(24), h);', 'far_bss[n % sizeof far_bss] = (char)h;\n  printf("%lu %u %d\\n", fib(24), h, far_bss[n % 7]);')
assert PROGRAM_FAR.count("far_bss") == 4
FAR_GIB = {"riscv64": 3}  # else 1

QEMU = {"aarch64": ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"], "ppc64le": ["qemu-ppc64le", "-L", "/usr/powerpc64le-linux-gnu"],
        "riscv64": ["qemu-riscv64", "-L", "/usr/riscv64-linux-gnu"], "thumb2": ["qemu-arm", "-L", "/usr/arm-linux-gnueabihf"]}
CC = {"aarch64": "aarch64-linux-gnu-gcc", "ppc64le": "powerpc64le-linux-gnu-gcc", "riscv64": "riscv64-linux-gnu-gcc",
      "thumb2": "arm-linux-gnueabihf-gcc"}
# ISA, the flags of its hooks
BUILDS = [("aarch64", "-pg"), ("aarch64", "-fpatchable-function-entry=2"), ("ppc64le", "-pg"), ("riscv64", "-pg"),
          ("riscv64", "-fpatchable-function-entry=4"), ("thumb2", "-pg"), ("thumb2", "-fpatchable-function-entry=3"),
          ("thumb2", "-marm -pg"), ("aarch64", "-pg far"), ("ppc64le", "-pg far"), ("riscv64", "-pg far"),
          ("riscv64", "-fpatchable-function-entry=4 far"), ("thumb2", "-pg far"), ("thumb2", "-marm -pg far")]
FIB_CALLS = 150049  # fib(24)'s calls


def run_timed(cmd, env, cwd):
    """Runs cmd (its output to /dev/null); returns its CPU time, user + system, in seconds."""
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            os.chdir(cwd)
            os.execvpe(cmd[0], cmd, env)
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)}: status {status}")
    return ru.ru_utime + ru.ru_stime


def main():
    a = arguments(runs=7, texts=("only", "baseline"), calls=3_000_000)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PREPATCH_")}
    count_env = dict(base_env, PREPATCH_TRACE="*")
    print(f"{a.calls:,} calls of a small function and fib(24) ({FIB_CALLS:,} calls); {a.runs} interleaved runs each, "
          f"median CPU time under qemu-user; ratios only")
    columns = [("hooked", "plain"), ("off", "plain"), ("count", "plain"), ("function", "plain"), ("graph", "plain"), ("count", "hooked"),
               ("function", "hooked"), ("graph", "hooked")] + ([("count", "count_before")] if a.baseline else [])
    print(f"{'ISA and sites':38s}" + "".join(f"{x + '/' + y.replace('count_', ''):>16s}" for x, y in columns))
    with tempfile.TemporaryDirectory(prefix="prepatch-qemu-bench-") as d:
        with open(os.path.join(d, "calls.c"), "w") as f:
            f.write(PROGRAM)
        for gib in (1, 3):
            with open(os.path.join(d, f"far{gib}.c"), "w") as f:
                f.write(PROGRAM_FAR.replace("GIB", str(gib)))
        for isa, flags in BUILDS:
            if not re.search(a.only, f"{isa} {flags}"):
                continue
            far = flags.endswith(" far")
            flag = flags.removesuffix(" far").split()
            src = os.path.join(d, f"far{FAR_GIB.get(isa, 1)}.c" if far else "calls.c")
            name, cc, qemu = f"{isa} {flags}", CC[isa], QEMU[isa]
            tag = name.replace(" ", "_").replace("=", "")
            plain, hooked, prepared, before = (os.path.join(d, f"{tag}-{k}") for k in ("plain", "hooked", "prepared", "before"))
            subprocess.run([cc, "-O2", *[f for f in flag if f == "-marm"], src, "-o", plain], check=True)  # the same state
            subprocess.run([cc, "-O2", *flag, src, "-o", hooked], check=True)
            prep = subprocess.run([a.prepatch, hooked, "-o", prepared], capture_output=True, text=True, check=True)
            if far != ("branch island" in prep.stderr):
                raise SystemExit(f"{name}: expected {'a' if far else 'no'} branch island:\n{prep.stderr}")
            if a.baseline:
                subprocess.run([os.path.abspath(a.baseline), hooked, "-o", before], capture_output=True, check=True)
            trace = os.path.join(d, tag + ".trace")
            cases = {"plain": (plain, base_env), "hooked": (hooked, base_env), "off": (prepared, base_env),
                     "count": (prepared, dict(count_env, PREPATCH_COUNTS=os.path.join(d, tag + ".counts")))}
            for tracer in ("function", "graph"):
                cases[tracer] = (prepared, dict(count_env, PREPATCH_TRACER=tracer, PREPATCH_OUTPUT=trace))
            if a.baseline:
                cases["count_before"] = (before, dict(count_env, PREPATCH_COUNTS=os.path.join(d, tag + ".before.counts")))
            outs = {}
            for k, (b, e) in cases.items():
                outs[k] = subprocess.run([*qemu, b, "1000"], env=e, cwd=d, capture_output=True, text=True, check=True).stdout
                if k in ("function", "graph"):  # every call of mix recorded
                    rep = subprocess.run([a.prepatch, "report", trace], capture_output=True, text=True, check=True).stdout
                    if not any(line.split()[-2:] == ["1000", "mix"] for line in rep.splitlines()):
                        raise SystemExit(f"{name}: the {k} tracer did not record mix() 1000 times:\n{rep}")
                    os.unlink(trace)
            if len(set(outs.values())) != 1:
                raise SystemExit(f"{name}: the builds disagree: {outs}")
            for binary, counts in [(prepared, tag + ".counts")] + ([(before, tag + ".before.counts")] if a.baseline else []):
                counted = subprocess.run([a.prepatch, "counts", binary, os.path.join(d, counts)], capture_output=True,
                                         text=True, check=True).stdout
                if not any(line.split()[:1] == ["1000"] and line.endswith(" mix") for line in counted.splitlines()):
                    raise SystemExit(f"{name}: the count tracer did not count mix() 1000 times:\n{counted}")
                os.unlink(os.path.join(d, counts))
            times = {k: [] for k in cases}
            for _ in range(a.runs):
                for k, (b, e) in cases.items():
                    times[k].append(run_timed([*qemu, b, str(a.calls)], e, d))
                    if os.path.exists(trace):
                        os.unlink(trace)
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"{name:38s}" + "".join(f"{med[x] / med[y]:15.2f}x" if x in med else f"{'-':>16s}" for x, y in columns))


if __name__ == "__main__":
    main()
