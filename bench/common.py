"""What the benchmarks share: their command line and the generated many-function program."""
import argparse, os

from gen_many import generate


def arguments(runs, **counts):
    """Parses --prepatch, --functions, --runs (default `runs`), --cc, and one integer option per keyword
    (--rounds for rounds=21); --prepatch made absolute."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepatch", default="build/prepatch")
    ap.add_argument("--functions", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--cc", default="gcc")
    for name, default in counts.items():
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()
    a.prepatch = os.path.abspath(a.prepatch)
    return a


def write_program(directory, functions, main=None):
    """Writes bench/gen_many.py's program with `functions` functions (and `main`, if given, instead of
    its own) to DIRECTORY/many.c; returns its path."""
    src = os.path.join(directory, "many.c")
    with open(src, "w") as f:
        generate(functions, f, *([main] if main else []))
    return src
