// Talking to a running prepared process from outside: the control channel the shim serves (`prepatch
// ctl`) and the counts file it writes (`prepatch counts`). Both formats are in shim/abi.h and
// docs/SHIM.md.
#pragma once
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "elf/elf.h"

namespace prepatch {

struct ControlReply {
  bool ok = false;    // the shim answered "ok: ..."
  std::string text;   // its whole answer
};

// The longest reply `control` reads (a status lists every enabled site: ~40 bytes each).
inline constexpr size_t max_reply = size_t{64} << 20;

enum class ReplyKind { ok, error, busy, malformed };
struct ParsedReply {
  ReplyKind kind = ReplyKind::malformed;
  std::string text;  // the reply, safe to print: control characters (C0, DEL, UTF-8 C1) but newline and tab as '?', ending in a newline
};
// `text` safe to show on a terminal: control characters (C0, DEL, UTF-8 C1) as '?', but newline and
// tab where `lines`.
std::string printable(std::string_view text, bool lines = false);

// What the shim answered: its first word, and the text to show. The process is another program (or
// another user's, when root asks), so nothing it writes reaches a terminal unfiltered.
ParsedReply parse_reply(std::string_view text);

// The effective id of process `pid` that /proc/PID/status's line `key` ("Uid:", "Gid:") gives.
std::optional<unsigned> process_effective_id(pid_t pid, const char* key);

// Who may drive `pid` from here, and through which directory (SECURITY.md, "The control channel"):
// its own user, through /tmp/prepatch-EUID; root, through the same directory of the process's user,
// whose uid it returns. A process in another user or mount namespace (a container) sees another /tmp
// or other uids: it is driven from inside its namespaces. Throws IoError for any other process.
uid_t channel_owner(pid_t pid);

// Sends `command` (one line: `enable GLOBS`, `disable GLOBS`, `status`) to process `pid` and waits up
// to `timeout` for the answer (and, for a process that has only just started, for its shim to
// listen); a "busy" answer (another batch runs) is retried until then. Throws IoError when the
// process is not a prepared binary of this user (or, for root, of any user), runs in another user or
// mount namespace, is gone, does not answer, or answers something malformed.
ControlReply control(pid_t pid, const std::string& command, std::chrono::milliseconds timeout);

}  // namespace prepatch
