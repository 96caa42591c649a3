#!/usr/bin/env bash
# README command 1: build prepatch and show the main job on the bundled example program.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPREPATCH_TESTS=OFF >/dev/null
cmake --build build -j2 --target prepatch >/dev/null

demo=build/demo
mkdir -p "$demo"
echo "== building testdata/basic.c with gcc -O2 -pg -mfentry"
gcc -O2 -pg -mfentry testdata/basic.c -o "$demo/basic"
echo "== prepatch $demo/basic -o $demo/basic.prepared"
build/prepatch "$demo/basic" -o "$demo/basic.prepared"
echo "== running both (from $demo, where -pg programs write gmon.out)"
run() { (cd "$demo" && { "./$1" 12 >"$2" && status=0 || status=$?; echo "exit status $status" >>"$2"; }); }
run basic original.out
run basic.prepared prepared.out
cat "$demo/prepared.out"
if cmp -s "$demo/original.out" "$demo/prepared.out"; then
  echo "== same output and exit status as the original"
else
  echo "== OUTPUT DIFFERS" >&2
  diff "$demo/original.out" "$demo/prepared.out" >&2
  exit 1
fi
echo "== prepatch sites $demo/basic.prepared"
build/prepatch sites "$demo/basic.prepared"
echo "== the first site in the original and in the prepared binary"
addr=$(build/prepatch sites "$demo/basic.prepared" | awk 'NR==2 {print $1}')
for f in basic basic.prepared; do
  objdump -d --start-address="$addr" --stop-address=$((addr + 6)) "$demo/$f" | grep -E '^ +[0-9a-f]+:' | sed "s|^|$f: |"
done
echo "== tracing: PREPATCH_TRACE='*' ./basic.prepared 12, then the calls per function it counted"
(cd "$demo" && rm -f basic.counts && PREPATCH_TRACE='*' PREPATCH_COUNTS=basic.counts ./basic.prepared 12 >/dev/null) || true
build/prepatch counts "$demo/basic.prepared" "$demo/basic.counts"
echo "== prepatch record -o basic.trace -- ./basic 12: prepared into the cache (~/.cache/prepatch), run with every call traced"
status=0
(cd "$demo" && rm -f basic.trace && ../prepatch record -o basic.trace -- ./basic 12 >/dev/null) || status=$?
if [ "$status" -ne $((12 % 7)) ]; then
  echo "== prepatch record exited $status, not the program's own status $((12 % 7))" >&2
  exit 1
fi
echo "== (the program's exit status $status passed through) prepatch report $demo/basic.trace"
build/prepatch report "$demo/basic.trace"
echo "== prepatch replay $demo/basic.trace (the first 16 lines)"
build/prepatch replay "$demo/basic.trace" >"$demo/basic.replay"
head -16 "$demo/basic.replay"
