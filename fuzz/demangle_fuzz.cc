// libFuzzer target: the demangler, against GNU's (fuzz/harness.h demangle_one). Built by scripts/fuzz.sh.
#include "fuzz/harness.h"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  prepatch::fuzz::demangle_one({data, size});
  return 0;
}
