#!/usr/bin/env bash
# Installs, from Debian packages, whatever prepatch needs to build and test that is missing.
# Idempotent: does nothing (and needs no network) when everything is present.
set -euo pipefail

packages=(
  cmake make g++ gcc clang binutils   # the build, and compilers for the test programs
  libzydis-dev                        # x86-64 decoding
  libcapstone-dev pkg-config          # AArch64, PPC64le and Thumb-2 decoding (the plan checker)
  binutils-riscv64-linux-gnu          # tests: objdump, the oracle for our own RISC-V decoder
  g++-aarch64-linux-gnu g++-powerpc64le-linux-gnu g++-riscv64-linux-gnu  # the other ISAs' shims and test programs
  g++-arm-linux-gnueabihf             # the ARM32 (Thumb-2) shim; tests: its programs and objdump (the discovery oracle)
  qemu-user                           # tests: runs the AArch64, PPC64le, RISC-V64 and ARM32 test programs
  libcli11-dev                        # command line
  nlohmann-json3-dev                  # `prepatch sites --json`
  libssl-dev                          # `prepatch record`: SHA-256 keys of its cache (libcrypto)
  zlib1g-dev                          # the CRC-32 of a stripped binary's separate debug file (.gnu_debuglink)
  libgtest-dev                        # tests
  libprotobuf-dev libprotoc-dev       # tests: Perfetto's .proto parsed at run time, to decode `export --format perfetto`
  chromium libpng-dev                 # tests: headless Chromium renders `export --format svg`; libpng reads its screenshot
  tmux                                # tests: `prepatch top` in a real terminal
  liblief-dev                         # tests: an independent ELF reader to compare against
  util-linux                          # tests: setpriv (permission errors, other users as root), unshare (a user namespace)
  libcap2-bin                         # tests: setcap, a prepared program with a file capability (tests/security_test.cc)
  strace                              # tests: a signal delivered at a chosen system call (an interrupted preparer leaves no temporary file)
  python3 valgrind uftrace            # bench/ (uftrace: the tracer benchmark's peer)
  python3-dev abigail-tools           # tests: a C extension module that Debian's python3 imports; abidiff (tests/shared_object_test.cc)
  dpkg-dev                            # tests: apt-get source (lua5.4, zlib: tests/real_programs.sh)
  lua5.4                              # tests: Debian's own interpreter requiring a prepared C module (tests/real_programs_test.cc)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The real-program tests fetch Debian source packages: a deb-src entry for this machine's own suite.
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
need_src=0
if [ -n "$suite" ] && ! grep -rqsE "^[[:space:]]*(deb-src[[:space:]]|Types:.*deb-src)" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  need_src=1
fi
[ ${#missing[@]} -eq 0 ] && [ $need_src -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ $need_src -eq 1 ]; then
  echo "install-deps: adding a deb-src entry for $suite (/etc/apt/sources.list.d/prepatch-deb-src.sources)" >&2
  printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$suite" | $sudo tee /etc/apt/sources.list.d/prepatch-deb-src.sources >/dev/null
fi
$sudo apt-get update -qq
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}" >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
