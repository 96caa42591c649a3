#!/usr/bin/env bash
# README command 2: the whole test suite, in an ASan+UBSan build with warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DPREPATCH_SANITIZE=ON -DPREPATCH_WERROR=ON >/dev/null
cmake --build build-asan -j2
cd build-asan
ctest -j2 --output-on-failure "$@"
