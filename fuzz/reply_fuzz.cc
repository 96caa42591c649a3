// libFuzzer target: `prepatch ctl`'s reading of a process's reply (fuzz/harness.h reply_one). Built by
// scripts/fuzz.sh.
#include "fuzz/harness.h"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  prepatch::fuzz::reply_one({data, size});
  return 0;
}
