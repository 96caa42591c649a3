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

// `prepatch counts`'s reader (control/counts.h read_counts) on `data` as a counts file, with no
// binary, then the names it shows: every row must be named, from its object's table copy. True when
// the reader accepted the file.
bool counts_one(std::span<const u8> data);

// The shim's control-request grammar (shim/core.h parse_command) on `data` as a request file's bytes,
// the glob list it yields matched against a few names (and compared with a reference matcher), and
// the control channel's file rules (request_file_problem, channel_dir_safe) on modes, link counts,
// owners and sizes read from the same bytes (mode: bytes 0-3, nlink 4-11, uid 12-15, size 16-23, euid
// 24-27, root_only bit 0 of byte 28, little-endian, zero past the end), each also with the file made
// regular, single-named, owned by root or by euid, and small, so that every rule is reached.
// True when the request is a valid command.
bool request_one(std::span<const u8> data);

// The PREPATCH_* environment parser (shim/settings.h parse_settings), for every ISA, on an environment
// made of `data`: split at '\0' and '\n' into strings, whose first byte (modulo 16) names the variable:
// 0 PREPATCH_TRACE=, 1 PREPATCH_NOTRACE=, 2 PREPATCH_TRACER=, 3 PREPATCH_OUTPUT=, 4 PREPATCH_COUNTS=,
// 5 PREPATCH_BUFFER=, 6 PREPATCH_FILE_MODE=, 7 PREPATCH_WX=, 8 PREPATCH_SYNC=, 9 PREPATCH_ (the name
// left to the rest), 10-15 none (the rest as it is): '@' is PREPATCH_TRACE=, 'A' PREPATCH_NOTRACE=...
// 'I' PREPATCH_, 'J' to 'O' nothing. Every setting is compared with an independent reading of the
// same variables. True when some ISA took every setting.
bool settings_one(std::span<const u8> data);

// `prepatch ctl`'s reading of what a process answered (control/control.h parse_reply) on `data`: the
// text it shows must hold no control character but newline and tab and end in a newline, and its kind
// must follow the reply's first word. True when the kind is ok, error or busy.
bool reply_one(std::span<const u8> data);

// The demangler (shim/demangle.h) on `data` as a symbol (up to a NUL), with GNU's __cxa_demangle as the
// oracle: a name it accepts must read exactly as GNU reads it; then the name forms a glob matches
// (shim/names.h) on it, with the input's own bytes as globs. True when the name was accepted.
bool demangle_one(std::span<const u8> data);

}  // namespace prepatch::fuzz
