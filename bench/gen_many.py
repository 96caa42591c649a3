#!/usr/bin/env python3
"""Writes a C program with N small functions, all reachable through a table (none can be dropped)."""
import sys

MAIN = """int main(int argc, char** argv) {
  (void)argv;
  unsigned acc = (unsigned)argc;
  for (unsigned long i = 0; i < sizeof table / sizeof table[0]; i++) acc = table[i](acc);
  printf("%u\\n", acc);
  return 0;
}
"""


def generate(n, out, main=MAIN):
    """Writes the functions f0..f{n-1}, `table` listing them, then `main` (a benchmark may bring its own)."""
    out.write("#include <stdio.h>\n")
    for i in range(n):
        out.write(f"__attribute__((noinline)) unsigned f{i}(unsigned x) {{ return x * {i % 97 + 1}u + {i}u; }}\n")
    out.write("static unsigned (*const table[])(unsigned) = {\n")
    for i in range(n):
        out.write(f"f{i},\n")
    out.write("};\n")
    out.write(main)


if __name__ == "__main__":
    generate(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, sys.stdout)
