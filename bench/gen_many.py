#!/usr/bin/env python3
"""Writes a C program with N small functions, all reachable through a table (none can be dropped); with
--cxx (or cxx=True) a C++ one whose functions are static members of classes in namespaces, so their
symbols are mangled C++ names (`_ZN5bench7modaaab6ClsAak6runadwEj`: bench::modaaab::ClsAak::runadw(unsigned)),
spelled with letters only, as identifiers mostly are."""
import sys

MAIN = """int main(int argc, char** argv) {
  (void)argv;
  unsigned acc = (unsigned)argc;
  for (unsigned long i = 0; i < sizeof table / sizeof table[0]; i++) acc = table[i](acc);
  printf("%u\\n", acc);
  return 0;
}
"""


def letters(i, width):
    """i in base 26, as `width` lowercase letters."""
    s = ""
    for _ in range(width):
        s = chr(ord("a") + i % 26) + s
        i //= 26
    return s


def generate_cxx(n, out, main=MAIN):
    """n static member functions: 10 per class, 10 classes per namespace; `table` listing them."""
    out.write("#include <stdio.h>\n")
    names = []
    for first in range(0, n, 100):  # a namespace
        out.write(f"namespace bench {{ namespace mod{letters(first // 100, 4)} {{\n")
        for cls_first in range(first, min(first + 100, n), 10):  # a class
            cls = "Cls" + letters(cls_first // 10, 3).capitalize()
            out.write(f"struct {cls} {{\n")
            for i in range(cls_first, min(cls_first + 10, n)):
                fn = "run" + letters(i, 3)
                out.write(f"  __attribute__((noinline)) static unsigned {fn}(unsigned x) {{ return x * {i % 97 + 1}u + {i}u; }}\n")
                names.append(f"bench::mod{letters(first // 100, 4)}::{cls}::{fn}")
            out.write("};\n")
        out.write("} }\n")
    out.write("static unsigned (*const table[])(unsigned) = {\n")
    for name in names:
        out.write(f"&{name},\n")
    out.write("};\n")
    out.write(main)


def generate(n, out, main=MAIN, cxx=False):
    """Writes the functions f0..f{n-1}, `table` listing them, then `main` (a benchmark may bring its own)."""
    if cxx:
        return generate_cxx(n, out, main)
    out.write("#include <stdio.h>\n")
    for i in range(n):
        out.write(f"__attribute__((noinline)) unsigned f{i}(unsigned x) {{ return x * {i % 97 + 1}u + {i}u; }}\n")
    out.write("static unsigned (*const table[])(unsigned) = {\n")
    for i in range(n):
        out.write(f"f{i},\n")
    out.write("};\n")
    out.write(main)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--cxx"]
    generate(int(args[0]) if args else 100_000, sys.stdout, cxx="--cxx" in sys.argv)
