#!/usr/bin/env bash
# Fuzzes the preparer, the trace-file reader, the shim's control grammar and environment parser and
# `prepatch ctl`'s reply parser and the demangler with libFuzzer (docs/FUZZING.md): builds the clang fuzz tree in
# build-fuzz/, makes the seed corpora, then runs each target in turn. Fails when a target finds a
# crash: the input is left in build-fuzz/crashes/TARGET/.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET[=SECONDS] ...]   (targets: prepare trace counts request settings reply demangle)
# prepare and trace run SECONDS (default 120). The cheap targets (counts, request, settings, reply, demangle: a
# million executions in seconds) run PREPATCH_FUZZ_SMALL_SECONDS if set, else the smaller of SECONDS and 30.
# TARGET=SECONDS sets one target's time.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(prepare trace counts request settings reply demangle)
number() { [[ $1 =~ ^[0-9]+$ ]] || { echo "fuzz: $2 is not a number of seconds: '$1'" >&2; exit 2; }; }
number "$seconds" SECONDS
small_seconds=${PREPATCH_FUZZ_SMALL_SECONDS:-$((seconds < 30 ? seconds : 30))}
number "$small_seconds" PREPATCH_FUZZ_SMALL_SECONDS
for spec in "${targets[@]}"; do
  case ${spec%%=*} in
    prepare | trace | counts | request | settings | reply | demangle) ;;
    *) echo "fuzz: unknown target ${spec%%=*} (expected prepare, trace, counts, request, settings, reply or demangle)" >&2; exit 2 ;;
  esac
  [ "$spec" = "${spec%%=*}" ] || number "${spec#*=}" "$spec"
done
scripts/install-deps.sh

mkdir -p build-fuzz
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DPREPATCH_FUZZ=ON -DPREPATCH_TESTS=OFF -DPREPATCH_WERROR=ON >/dev/null
cmake --build build-fuzz -j2 >build-fuzz/build.log 2>&1 || { tail -40 build-fuzz/build.log >&2; exit 1; }

# Seeds: small programs in the site forms the preparer knows, two shared objects, some prepared (the
# already-prepared path), the trace files two of them write (function and graph), whole and cut
# short, alone and with a prepared library loaded (object records), and their counts files.
seeds=build-fuzz/seeds
if [ ! -f $seeds/done.4 ]; then
  rm -rf $seeds && mkdir -p $seeds/prepare $seeds/trace $seeds/counts
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
gcc|-fpatchable-function-entry=7,2 -s
clang|-pg -mfentry
clang|-fpatchable-function-entry=5 -fcf-protection
gcc|-O2
FLAVORS
  # Shared objects: one with DT_INIT (x86-64), one started from its first init_array entry (RISC-V).
  gcc -O2 -g0 -pg -mfentry -fPIC -shared -Dmain=prepatch_program_main testdata/basic.c -o $seeds/prepare/libbasic.so
  riscv64-linux-gnu-gcc -O2 -g0 -pg -fPIC -shared -Dmain=prepatch_program_main testdata/basic.c -o $seeds/prepare/libbasic-riscv.so
  # Stripped pads with nops before the entry, found through the unwind tables (rewriter/discoverer.h
  # pad_entry): above through .eh_frame_hdr; here AArch64 through .eh_frame itself.
  clang --target=aarch64-linux-gnu -O2 -g0 -fpatchable-function-entry=6,2 -s -Wl,--no-eh-frame-hdr testdata/basic.c -o $seeds/prepare/basic-aarch64-stripped
  for i in 3 7; do build-fuzz/prepatch -q $seeds/prepare/basic-$i -o $seeds/prepare/basic-$i.prepared; done
  build-fuzz/prepatch -q $seeds/prepare/libbasic.so -o $seeds/libbasic.prepared.so
  for tracer in function graph; do
    (cd $seeds && PREPATCH_TRACE='*' PREPATCH_TRACER=$tracer PREPATCH_OUTPUT=trace/basic.$tracer \
      prepare/basic-3.prepared 12 >/dev/null || true)
    head -c 16384 $seeds/trace/basic.$tracer >$seeds/trace/basic.$tracer.cut
    (cd $seeds && LD_PRELOAD=$PWD/libbasic.prepared.so PREPATCH_TRACE='*' PREPATCH_TRACER=$tracer \
      PREPATCH_OUTPUT=trace/two.$tracer prepare/basic-3.prepared 12 >/dev/null || true)
  done
  # The flight recorder's file (a ring per thread), and arguments and return values (value records).
  (cd $seeds && PREPATCH_TRACE='*' PREPATCH_TRACER=graph PREPATCH_BUFFER=ring:512K PREPATCH_OUTPUT=trace/ring.graph \
    PREPATCH_ARGS='*:3' PREPATCH_RETVAL='*' prepare/basic-3.prepared 12 >/dev/null || true)
  (cd $seeds && PREPATCH_TRACE='*' PREPATCH_TRACER=function PREPATCH_ARGS='*' PREPATCH_OUTPUT=trace/args.function \
    prepare/basic-3.prepared 12 >/dev/null || true)
  (cd $seeds && PREPATCH_TRACE='*' PREPATCH_COUNTS=counts/basic prepare/basic-3.prepared 12 >/dev/null || true)
  (cd $seeds && LD_PRELOAD=$PWD/libbasic.prepared.so PREPATCH_TRACE='*' PREPATCH_COUNTS=counts/two prepare/basic-3.prepared 12 >/dev/null || true)
  touch $seeds/done.4
fi

# Seeds of the cheap targets, written every run (they cost nothing): control requests as the shim reads
# them from a request file, environments (the first byte of each line names the variable, see
# fuzz/harness.h settings_one: '@' PREPATCH_TRACE=, 'A' NOTRACE, 'B' TRACER, 'C' OUTPUT, 'D' COUNTS,
# 'E' BUFFER, 'F' FILE_MODE, 'G' WX, 'H' SYNC, 'I' PREPATCH_ and the rest, 'J' the line as it is,
# 'K' DEPTH, 'L' THRESHOLD, 'M' ARGS, 'N' TRIGGER, 'O' the line as it is), and
# replies as a process writes them.
rm -rf $seeds/request $seeds/settings $seeds/reply $seeds/demangle
# One seed file per line of standard input in directory $1, escapes (\n, \0, \033) expanded.
seed_lines() {
  mkdir -p "$1"
  local n=0 line
  while IFS= read -r line; do
    n=$((n + 1))
    printf '%b' "$line" >"$1/$n"
  done
}
seed_lines $seeds/request <<'REQUESTS'
enable main,leaf_*\n
status\n
disable *\n
enable  a?c,,*_x,\n
status now\n
enable a b\n
enable\n
stop\n
REQUESTS
seed_lines $seeds/settings <<'ENVIRONMENTS'
@main,leaf_*\nAleaf_2\nBcount\nC/tmp/out.trace\nDcounts.out\nE64\nF0644\nHsignal\nJPATH=/usr/bin\nJHOME=/root\n
Bgraph\0Gstrict\0F600\0E0001\0@*\0
Bfunction\nHflush_icache\nE1024\nF0666\n
Bbogus\nE0\nF0755\nGlax\nHnever\n
JPREPATCH_TRACER=function\nIWX=strict\nISYNC=signal\nJPREPATCH_TRACE\nJPREPATCH_TRACERX=graph\n
Bgraph\nK3\nL5ms\nMparse_*,lib.so:f:2\nNf>10us:snapshot;main:trace_on;g:trace_off\nIGRAPH_FUNCTION=a,b\nIGRAPH_NOTRACE=c\nIRETVAL=*\nITIDS=12,34\nISNAPSHOTS=3\n
Bfunction\nK2\nL70000000000\nM:3\nNf>x:snapshot;;\nITIDS=1,\nIdepth=1\nEring:4M\n
Bcount\nEring:0\nN>1ms:snapshot\nMf:7\nISNAPSHOTS=2000000\n
ENVIRONMENTS
seed_lines $seeds/reply <<'REPLIES'
ok: enabled 3 sites (3 matched)\n
ok: disabled 0 sites (0 matched)\n
ok: 2 sites enabled\nmain\nleaf_1\n
error: unknown command (expected `enable GLOBS`, `disable GLOBS` or `status`)\n
error: globs are separated by commas, not spaces\n
busy: a batch runs, try again\n
ok: \033[2J\033]0;title\007\r\n
REPLIES
# The demangler's seeds: C++ symbols of the machine's own libstdc++ (every 8th of its exported ones).
mkdir -p $seeds/demangle
nm -D --defined-only "$(g++ -print-file-name=libstdc++.so)" 2>/dev/null | awk '$3 ~ /^_Z/ && NR % 8 == 0 {print $3}' |
  sed 's/@.*//' | split -a 4 -l 1 - $seeds/demangle/sym-

status=0
for spec in "${targets[@]}"; do
  t=${spec%%=*}
  case $t in
    prepare | trace) time=$seconds max_len=1048576 ;;
    counts) time=$small_seconds max_len=65536 ;;
    *) time=$small_seconds max_len=8192 ;;  # a request file holds 4096 bytes at most
  esac
  [ "$spec" = "$t" ] || time=${spec#*=}
  mkdir -p build-fuzz/corpus/$t build-fuzz/crashes/$t
  echo "fuzz: $t for ${time}s" >&2
  if ! build-fuzz/${t}_fuzz -max_total_time="$time" -timeout=20 -rss_limit_mb=2048 -max_len=$max_len \
      -print_final_stats=1 -artifact_prefix=build-fuzz/crashes/$t/ build-fuzz/corpus/$t $seeds/$t \
      >build-fuzz/$t.log 2>&1; then
    status=1
    tail -40 build-fuzz/$t.log >&2
    echo "fuzz: $t found a crash: build-fuzz/crashes/$t/ (add it to tests/fuzz-crashes/$t/ with the fix)" >&2
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)|DONE|cov:" build-fuzz/$t.log | tail -3 >&2
done
exit $status
