#!/usr/bin/env bash
# README command 2: the whole test suite, in an ASan+UBSan build with warnings as errors, then the
# fuzz targets for PREPATCH_FUZZ_SECONDS each (default 120; 0 skips them; the five small targets
# 30 s at most, docs/FUZZING.md). Arguments go to ctest, and
# a run given arguments (a subset) skips the fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DPREPATCH_SANITIZE=ON -DPREPATCH_WERROR=ON >/dev/null
cmake --build build-asan -j2
(cd build-asan && ctest -j2 --output-on-failure "$@")
seconds=${PREPATCH_FUZZ_SECONDS:-120}
if [ $# -eq 0 ] && [ "$seconds" != 0 ]; then
  scripts/fuzz.sh "$seconds"
fi
