// libFuzzer target: the preparer's whole path (fuzz/harness.h prepare_one). Built by scripts/fuzz.sh.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "fuzz/harness.h"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  // Where outputs are written; never freed, so the exit handler that removes it can still read it.
  static const std::string& dir = *[] {
    const char* t = std::getenv("TMPDIR");
    auto* d = new std::string(std::string(t ? t : "/tmp") + "/prepatch-fuzz-XXXXXX");
    if (!::mkdtemp(d->data())) std::abort();
    std::atexit([] { std::filesystem::remove_all(dir); });
    return d;
  }();
  prepatch::fuzz::prepare_one({data, size}, dir);
  return 0;
}
