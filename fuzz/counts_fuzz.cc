// libFuzzer target: `prepatch counts`'s reader (fuzz/harness.h counts_one). Built by scripts/fuzz.sh.
#include "fuzz/harness.h"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  prepatch::fuzz::counts_one({data, size});
  return 0;
}
