#!/usr/bin/env bash
# Installs, from Debian packages, whatever prepatch needs to build and test that is missing.
# Idempotent: does nothing (and needs no network) when everything is present.
set -euo pipefail

packages=(
  cmake make g++ gcc clang binutils   # the build, and compilers for the test programs
  libzydis-dev                        # x86-64 decoding
  libcapstone-dev pkg-config          # AArch64, PPC64le and Thumb-2 decoding (the plan checker)
  binutils-riscv64-linux-gnu          # tests: objdump, the oracle for our own RISC-V decoder
  libcli11-dev                        # command line
  nlohmann-json3-dev                  # `prepatch sites --json`
  libgtest-dev                        # tests
  liblief-dev                         # tests: an independent ELF reader to compare against
  util-linux                          # tests: setpriv, to test permission errors as root
  python3 valgrind uftrace            # bench/ (uftrace: the tracer benchmark's peer)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
