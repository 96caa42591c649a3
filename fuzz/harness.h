// What the fuzz targets (fuzz/*_fuzz.cc) run on one input. The regression tests (tests/fuzz_test.cc)
// run the same functions on every input a fuzzer ever crashed, kept in tests/fuzz-crashes/.
//
// Each returns normally for any input: InputError is the expected answer to a malformed one. Anything
// else (another exception, a sanitizer report, a broken promise the function checks) is a bug.
#pragma once
#include <span>
#include <string>

#include "elf/types.h"

namespace prepatch::fuzz {

// The preparer's whole path on `data` taken as an input binary: the ELF reader, `prepatch sites`,
// discovery, normalization, the table, the appended segment and the writer, into a file in `dir`.
// When an output is written, it is read back: it must parse, list exactly the sites prepared, and a
// second prepare must find it already prepared. True when an output was written (and read back).
bool prepare_one(std::span<const u8> data, const std::string& dir);

// The trace-file reader on `data` as a trace file, then the three views (report, replay, export).
// True when the reader accepted the file.
bool trace_one(std::span<const u8> data);

}  // namespace prepatch::fuzz
