#!/usr/bin/env bash
# Fuzzes the preparer and the trace-file reader with libFuzzer (docs/FUZZING.md): builds the clang
# fuzz tree in build-fuzz/, makes the seed corpora from testdata programs, then runs each target for
# SECONDS (default 120). Fails when a target finds a crash: the input is left in build-fuzz/crashes/.
# Usage: scripts/fuzz.sh [SECONDS] [prepare|trace ...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
seconds=${1:-120}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(prepare trace)

mkdir -p build-fuzz
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DPREPATCH_FUZZ=ON -DPREPATCH_TESTS=OFF -DPREPATCH_WERROR=ON >/dev/null
cmake --build build-fuzz -j2 >build-fuzz/build.log 2>&1 || { tail -40 build-fuzz/build.log >&2; exit 1; }

# Seeds: small programs in the site forms the preparer knows, some prepared (the already-prepared
# path), and the trace files two of them write (function and graph), whole and cut short.
seeds=build-fuzz/seeds
if [ ! -f $seeds/done ]; then
  rm -rf $seeds && mkdir -p $seeds/prepare $seeds/trace
  n=0
  while IFS='|' read -r cc flags; do
    n=$((n + 1))
    for prog in basic threads; do
      # shellcheck disable=SC2086
      $cc -O2 -g0 $flags testdata/$prog.c -o $seeds/prepare/$prog-$n -pthread
    done
  done <<'FLAVORS'
gcc|-pg
gcc|-pg -fno-pie -no-pie
gcc|-pg -mfentry
gcc|-pg -mfentry -mrecord-mcount
gcc|-pg -mfentry -mnop-mcount -mrecord-mcount -fno-pie -no-pie
gcc|-pg -mfentry -fcf-protection
gcc|-fpatchable-function-entry=5
gcc|-fpatchable-function-entry=7,2
clang|-pg -mfentry
clang|-fpatchable-function-entry=5 -fcf-protection
gcc|-O2
FLAVORS
  for i in 3 7; do build-fuzz/prepatch -q $seeds/prepare/basic-$i -o $seeds/prepare/basic-$i.prepared; done
  for tracer in function graph; do
    (cd $seeds && PREPATCH_TRACE='*' PREPATCH_TRACER=$tracer PREPATCH_OUTPUT=trace/basic.$tracer \
      prepare/basic-3.prepared 12 >/dev/null || true)
    head -c 16384 $seeds/trace/basic.$tracer >$seeds/trace/basic.$tracer.cut
  done
  touch $seeds/done
fi

status=0
for t in "${targets[@]}"; do
  mkdir -p build-fuzz/corpus/$t build-fuzz/crashes/$t
  echo "fuzz: $t for ${seconds}s" >&2
  if ! build-fuzz/${t}_fuzz -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len=1048576 \
      -print_final_stats=1 -artifact_prefix=build-fuzz/crashes/$t/ build-fuzz/corpus/$t $seeds/$t \
      >build-fuzz/$t.log 2>&1; then
    status=1
    tail -40 build-fuzz/$t.log >&2
    echo "fuzz: $t found a crash: build-fuzz/crashes/$t/ (add it to tests/fuzz-crashes/$t/ with the fix)" >&2
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)|DONE|cov:" build-fuzz/$t.log | tail -3 >&2
done
exit $status
