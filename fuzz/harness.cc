#include "fuzz/harness.h"

#include <cstdio>
#include <cstdlib>
#include <ostream>
#include <streambuf>

#include "elf/mapped_file.h"
#include "rewriter/prepare.h"
#include "rewriter/table.h"
#include "trace/trace.h"

namespace prepatch::fuzz {

namespace {

// A promise the preparer broke: reported, then aborted, so the fuzzer keeps the input.
void expect(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz: broken promise: %s\n", what);
  std::abort();
}

class NullBuf : public std::streambuf {
 protected:
  int overflow(int c) override { return c; }
  std::streamsize xsputn(const char*, std::streamsize n) override { return n; }
};

}  // namespace

bool prepare_one(std::span<const u8> data, const std::string& dir) {
  const std::string in = "fuzz-input", out = dir + "/out", again = dir + "/again";
  std::remove(out.c_str());
  PrepareResult r;
  try {
    elf::Elf elf(data, in);
    (void)list_sites(elf);
    r = prepare(elf, out, 0644);
  } catch (const InputError&) {
    return false;
  }
  if (r.outcome != PrepareOutcome::written) return false;
  // What was written is a binary the preparer's own reader accepts, with the sites it promised.
  MappedFile file(out);
  try {
    elf::Elf prepared(file.bytes(), out);
    auto t = find_table(prepared);
    expect(t.has_value(), "the output has no __patch_sites table");
    expect(t->table.entries.size() == r.prepared, "the table does not list every prepared site");
    Listing l = list_sites(prepared);
    expect(l.prepared, "prepatch sites does not see the output as prepared");
    expect(prepare(prepared, again, 0644).outcome == PrepareOutcome::already_prepared, "preparing the output again was not refused");
  } catch (const InputError& e) {
    std::fprintf(stderr, "fuzz: the output does not read back: %s\n", e.what());
    std::abort();
  }
  return true;
}

bool trace_one(std::span<const u8> data) {
  trace::Trace t;
  try {
    t = trace::read_trace(data, "fuzz-trace");
  } catch (const InputError&) {
    return false;
  }
  NullBuf buf;
  std::ostream null(&buf);
  for (trace::SortBy by : {trace::SortBy::total, trace::SortBy::self, trace::SortBy::calls}) trace::report(t, by, null);
  trace::replay(t, {}, null);
  trace::export_chrome(t, null);
  return true;
}

}  // namespace prepatch::fuzz
