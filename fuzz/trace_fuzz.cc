// libFuzzer target: the trace-file reader and its views (fuzz/harness.h trace_one). Built by scripts/fuzz.sh.
#include "fuzz/harness.h"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  prepatch::fuzz::trace_one({data, size});
  return 0;
}
