// Talking to a running prepared process from outside: the control channel the shim serves (`prepatch
// ctl`) and the counts file it writes (`prepatch counts`). Both formats are in shim/abi.h and
// docs/SHIM.md.
#pragma once
#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "elf/elf.h"

namespace prepatch {

struct ControlReply {
  bool ok = false;    // the shim answered "ok: ..."
  std::string text;   // its whole answer
};

// Sends `command` (one line: `enable GLOBS`, `disable GLOBS`, `status`) to process `pid` and waits up
// to `timeout` for the answer; a "busy" answer (another batch runs) is retried until then. Throws
// IoError when the process is not a prepared binary of this user, is gone, or does not answer.
ControlReply control(pid_t pid, const std::string& command, std::chrono::milliseconds timeout);

struct CountRow {
  u64 addr = 0;
  std::string function;
  u64 count = 0;
};

// The counts file `path` written by a process running `binary` (a prepared ELF): one row per site, in
// table order. Throws InputError (naming the offset) when the file is malformed or belongs to another
// binary.
std::vector<CountRow> read_counts(const std::string& path, const elf::Elf& binary);

}  // namespace prepatch
