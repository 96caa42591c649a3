// libFuzzer target: the shim's PREPATCH_* environment parser, for every ISA (fuzz/harness.h
// settings_one). Built by scripts/fuzz.sh.
#include "fuzz/harness.h"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  prepatch::fuzz::settings_one({data, size});
  return 0;
}
