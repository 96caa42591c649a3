// libFuzzer target: the shim's control-request grammar and its request-file rules (fuzz/harness.h
// request_one). Built by scripts/fuzz.sh.
#include "fuzz/harness.h"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  prepatch::fuzz::request_one({data, size});
  return 0;
}
