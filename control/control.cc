#include "control/control.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "elf/mapped_file.h"
#include "rewriter/table.h"
#include "shim/abi.h"
#include "shim/core.h"

namespace prepatch {

namespace {

std::string errno_text() { return std::strerror(errno); }

constexpr u64 ctl_bit = u64{1} << (shim::ctl_signal - 1);

// A signal mask line ("SigCgt:", "SigBlk:") of a /proc status file.
std::optional<u64> status_mask(const std::string& status_path, const char* key) {
  std::ifstream f(status_path);
  std::stringstream text;
  text << f.rdbuf();
  const std::string t = text.str();
  u64 mask = 0;
  if (!shim::status_mask(t.data(), t.size(), key, mask)) return std::nullopt;
  return mask;
}

// The fields of a /proc stat file after the name, from the third (the state) on; nullopt when it
// cannot be read (gone).
std::optional<std::string> stat_fields(const std::string& stat_path) {
  std::ifstream stat(stat_path);
  std::string line;
  std::getline(stat, line);
  const auto paren = line.rfind(')');  // the name, in parentheses, may hold anything
  if (paren == std::string::npos || paren + 2 >= line.size()) return std::nullopt;
  return line.substr(paren + 2);
}

// The state letter of a process or thread (R running, S sleeping, Z zombie, ...) from its /proc stat
// file; nullopt when it cannot be read (gone).
std::optional<char> proc_state(const std::string& stat_path) {
  const auto fields = stat_fields(stat_path);
  if (!fields) return std::nullopt;
  return fields->front();
}

// How long ago process `pid` started, in seconds (its /proc stat's starttime against /proc/uptime);
// nullopt when either cannot be read.
std::optional<double> process_age(pid_t pid) {
  const auto rest = stat_fields("/proc/" + std::to_string(pid) + "/stat");
  std::ifstream uptime("/proc/uptime");
  if (!rest) return std::nullopt;
  std::istringstream fields(*rest);
  std::string field;
  for (int k = 3; k <= 22 && fields >> field; k++)  // (field 3 is the state; 22 starttime, in clock ticks since boot)
    if (k == 22) {
      double up = 0;
      const long ticks = ::sysconf(_SC_CLK_TCK);
      if (!(uptime >> up) || ticks <= 0) return std::nullopt;
      return up - std::strtod(field.c_str(), nullptr) / static_cast<double>(ticks);
    }
  return std::nullopt;
}

// The thread to deliver the request to: one that does not block the control signal, preferably one running
// (state R), whose handler then interrupts no system call. A signal to the whole process would go to
// any thread, often the main one, and cut short its sleep() or poll(). 0 when every thread blocks it now
// (as the shim's own start does for a moment): the caller tries again until its deadline.
pid_t pick_thread(pid_t pid) {
  const std::string task = "/proc/" + std::to_string(pid) + "/task/";
  pid_t any = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(task, ec)) {
    const std::string name = entry.path().filename();
    pid_t tid = static_cast<pid_t>(std::strtol(name.c_str(), nullptr, 10));
    auto blocked = status_mask(task + name + "/status", "SigBlk:");
    if (tid <= 0 || !blocked || (*blocked & ctl_bit)) continue;
    if (proc_state(task + name + "/stat") == 'R') return tid;
    if (!any) any = tid;
  }
  if (ec) throw IoError(task + ": cannot list the threads: " + ec.message());
  return any;
}

// Whether `pid` still runs: it exists and is not a zombie (exited, not yet waited for).
bool running(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  const auto state = proc_state("/proc/" + std::to_string(pid) + "/stat");
  return state && *state != 'Z' && *state != 'X';
}

// Whether a prepared shared object's runtime claimed process `pid`: the page at the address the
// runtimes meet at is mapped (docs/SHIM.md, "Shared objects"), a 64-bit or a 32-bit process's.
bool runs_object_runtime(pid_t pid) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  char page64[48], page32[48];
  std::snprintf(page64, sizeof page64, "%llx-%llx ", static_cast<unsigned long long>(shim::rendezvous_page_64),
                static_cast<unsigned long long>(shim::rendezvous_page_64 + 4096));
  std::snprintf(page32, sizeof page32, "%08llx-%08llx ", static_cast<unsigned long long>(shim::rendezvous_page_32),
                static_cast<unsigned long long>(shim::rendezvous_page_32 + 4096));
  for (std::string line; std::getline(maps, line);)
    if (line.rfind(page64, 0) == 0 || line.rfind(page32, 0) == 0) return true;
  return false;
}

// The control signal kills a process that does not catch it: make sure `pid` runs a prepared binary
// whose shim is listening before sending one. A process that has only just started may not have run
// its shim yet (it installs its handler before the program's own start-up): waited for until
// `deadline`, or until the process is `start_up` old, whichever comes first (one older than that whose
// shim does not listen never will: it stood down at start).
void check_target(pid_t pid, std::chrono::steady_clock::time_point deadline) {
  const std::string who = "process " + std::to_string(pid);
  if (::kill(pid, 0) != 0)
    throw IoError(who + ": " + (errno == ESRCH ? "no such process" : errno == EPERM ? "belongs to another user" : errno_text()));
  const std::string exe = "/proc/" + std::to_string(pid) + "/exe";
  std::optional<FoundTable> table;
  try {
    MappedFile f(exe);
    elf::Elf elf(f.bytes(), exe);
    table = find_table(elf);
  } catch (const std::exception& e) {
    // A process that has just exited (a zombie) has no executable to read: say what happened.
    if (!running(pid)) throw IoError(who + " exited before its shim was listening");
    throw IoError(who + ": cannot read its executable (" + e.what() + ")");
  }
  if (!table && !runs_object_runtime(pid))
    throw IoError(who + ": its executable is not prepared by prepatch (no __patch_sites table), and no prepared shared object's runtime runs in it");
  constexpr double start_up = 2;  // seconds
  const auto age = process_age(pid);
  const auto listening_by = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<long>(1000 * std::max(0.0, start_up - age.value_or(0))));
  for (;;) {
    auto caught = status_mask("/proc/" + std::to_string(pid) + "/status", "SigCgt:");
    if (caught && (*caught & ctl_bit)) return;
    if (!running(pid)) throw IoError(who + " exited before its shim was listening");
    if (const auto now = std::chrono::steady_clock::now(); now >= deadline || now >= listening_by) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  throw IoError(who + ": it does not catch signal 62 (SIGRTMAX-2), so its shim is not listening: its sites stayed off at start (where a PREPATCH_ "
                        "variable was set, it said why on the program's standard error), or it runs setuid, setgid or with file capabilities, "
                        "which never start it (SECURITY.md); not sending a signal that would kill it");
}

// The namespace `kind` ("user", "mnt") a process is in, as /proc names it ("user:[4026531837]"); empty
// when it cannot be read.
std::string namespace_of(const std::string& proc, const char* kind) {
  std::error_code ec;
  auto link = std::filesystem::read_symlink(proc + "/ns/" + kind, ec);
  return ec ? std::string() : link.string();
}

}  // namespace

std::optional<unsigned> process_effective_id(pid_t pid, const char* key) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  const size_t n = std::strlen(key);
  for (std::string line; std::getline(f, line);) {
    if (line.compare(0, n, key) != 0) continue;
    std::istringstream in(line.substr(n));
    unsigned long real = 0, effective = 0;
    if (in >> real >> effective) return static_cast<unsigned>(effective);
  }
  return std::nullopt;
}

uid_t channel_owner(pid_t pid) {
  const std::string who = "process " + std::to_string(pid);
  const std::string proc = "/proc/" + std::to_string(pid);
  for (const char* kind : {"user", "mnt"}) {
    const std::string ours = namespace_of("/proc/self", kind), theirs = namespace_of(proc, kind);
    if (!ours.empty() && !theirs.empty() && ours != theirs)
      throw IoError(who + ": it runs in another " + (std::string(kind) == "user" ? "user" : "mount") +
                    " namespace (a container?), where the control channel's directory and user ids are not these; run prepatch ctl "
                    "inside it (nsenter --target " + std::to_string(pid) + " --user --mount --preserve-credentials prepatch ctl ...)");
  }
  auto target = process_effective_id(pid, "Uid:");
  if (!target) throw IoError(who + ": cannot read its user from " + proc + "/status");
  if (*target != ::geteuid() && ::geteuid() != 0)
    throw IoError(who + ": belongs to another user (uid " + std::to_string(*target) + "); only that user or root may drive it");
  return *target;
}

namespace {

// An unpredictable name beside `name`, as the shim draws them (shim/core.h temp_name_chars):
// NAME`tag`XXXXXXXXXXXX (NAME.tmp-XXXXXXXXXXXX for a temporary file).
std::string unpredictable_name(const std::string& name, const char* tag = ".tmp-") {
  unsigned char r[shim::temp_random_chars];
  if (::getentropy(r, sizeof r) != 0) throw IoError("cannot draw random bytes for a temporary name: " + errno_text());
  std::string t = name + tag;
  for (unsigned char c : r) t += shim::temp_name_chars[c & 31];
  return t;
}

// The channel's directory of user `owner`, opened (never through a symbolic link) and checked: a
// directory of `owner`'s with mode 0700. Created when missing (by root for another user: then given
// to that user).
int channel_dir(uid_t owner) {
  const std::string dir = shim::ctl_dir_prefix + std::to_string(owner);
  for (bool moved = false;; moved = true) {
    if (::mkdir(dir.c_str(), 0700) == 0) {
      if (owner != ::geteuid() && ::chown(dir.c_str(), owner, static_cast<gid_t>(-1)) != 0) {
        const std::string why = errno_text();
        ::rmdir(dir.c_str());
        throw IoError(dir + ": cannot give the control directory to uid " + std::to_string(owner) + ": " + why);
      }
    } else if (errno != EEXIST) {
      throw IoError(dir + ": cannot create the control directory: " + errno_text());
    }
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st {};
    if (fd >= 0 && ::fstat(fd, &st) == 0 && shim::channel_dir_safe(st.st_mode, st.st_uid, owner)) return fd;
    if (fd >= 0) ::close(fd);
    // Another user's entry at the name (made before the user's own: SECURITY.md, "Limits") would deny
    // the channel until removed, which in sticky /tmp only root may do: root moves it aside, once.
    struct stat entry {};
    if (!moved && ::geteuid() == 0 && ::lstat(dir.c_str(), &entry) == 0 && entry.st_uid != owner) {
      const std::string aside = unpredictable_name(dir, ".squatted-");
      if (::renameat2(AT_FDCWD, dir.c_str(), AT_FDCWD, aside.c_str(), RENAME_NOREPLACE) == 0) {
        std::fprintf(stderr, "prepatch ctl: %s belonged to uid %u, not to the process's user %u: moved aside to %s\n", dir.c_str(),
                     static_cast<unsigned>(entry.st_uid), static_cast<unsigned>(owner), aside.c_str());
        continue;
      }
    }
    throw IoError(dir + ": expected a directory of uid " + std::to_string(owner) +
                  " with mode 0700 (someone else may have created it; only root can remove it from /tmp, and prepatch ctl run as root "
                  "moves another user's aside); the shim would not read requests from it either");
  }
}

// Writes the request `name` in directory `dir`: created under an unpredictable temporary name,
// exclusively (nothing planted there is opened), then renamed into place. Mode 0600, or 0644 when root
// writes it for another user, whose shim must read it (the directory is that user's, mode 0700).
void write_request(int dir, const std::string& name, const std::string& command, bool for_other_user) {
  std::string tmp;
  int fd = -1;
  for (unsigned k = 0; k < shim::temp_tries && fd < 0; k++) {
    tmp = unpredictable_name(name);
    fd = ::openat(dir, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) throw IoError(name + ": cannot create the request: " + errno_text());
  const std::string line = command + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ok &= !for_other_user || ::fchmod(fd, 0644) == 0;
  ok &= ::close(fd) == 0;
  if (!ok || ::renameat(dir, tmp.c_str(), dir, name.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlinkat(dir, tmp.c_str(), 0);
    throw IoError(name + ": cannot write the request: " + why);
  }
}

// The reply `name` in directory `dir` once it is there: a regular file of `owner`'s, opened without
// following a symbolic link or waiting for a FIFO, read up to max_reply bytes. nullopt while it is not
// there yet.
std::optional<std::string> read_reply(int dir, const std::string& name, uid_t owner) {
  const int fd = ::openat(dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return std::nullopt;
  if (fd < 0) throw IoError(name + ": cannot open the reply: " + errno_text());
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != owner) {
    ::close(fd);
    throw IoError(name + ": the reply is not a regular file of uid " + std::to_string(owner) + "; not read");
  }
  std::string text;
  char buf[65536];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) {
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > max_reply) {
      ::close(fd);
      throw IoError(name + ": the reply is longer than " + std::to_string(max_reply >> 20) + " MiB; not read");
    }
  }
  ::close(fd);
  return text;
}

}  // namespace

std::string printable(std::string_view text, bool lines) {
  std::string out;
  out.reserve(text.size() + 1);
  for (size_t i = 0; i < text.size(); i++) {
    const auto u = static_cast<unsigned char>(text[i]);
    const auto next = i + 1 < text.size() ? static_cast<unsigned char>(text[i + 1]) : 0;
    if (u == 0xc2 && next >= 0x80 && next <= 0x9f) {  // a C1 control in UTF-8 (CSI is c2 9b): terminals act on them too
      out += "??";
      i++;
    } else {
      out += (u < 0x20 && !(lines && (u == '\n' || u == '\t'))) || u == 0x7f ? '?' : text[i];
    }
  }
  return out;
}

ParsedReply parse_reply(std::string_view text) {
  ParsedReply r;
  if (text.rfind("ok:", 0) == 0) r.kind = ReplyKind::ok;
  else if (text.rfind("error:", 0) == 0) r.kind = ReplyKind::error;
  else if (text.rfind("busy", 0) == 0) r.kind = ReplyKind::busy;
  else r.kind = ReplyKind::malformed;
  r.text = printable(text, true);
  if (r.kind == ReplyKind::malformed) r.text = "the shim's reply does not start with ok:, error: or busy (" + r.text.substr(0, 200) + ")";
  if (!r.text.empty() && r.text.back() != '\n') r.text += '\n';
  return r;
}

ControlReply control(pid_t pid, const std::string& command, std::chrono::milliseconds timeout) {
  if (command.size() >= shim::ctl_max_request || command.find('\n') != std::string::npos)
    throw IoError("the command must be one line shorter than 4096 bytes");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  check_target(pid, deadline);
  const uid_t owner = channel_owner(pid);
  const int dir = channel_dir(owner);
  const u32 id = static_cast<u32>(::getpid()) & shim::message_id_mask;
  const std::string base = std::to_string(pid) + "." + std::to_string(id);
  const std::string req = base + ".req", reply = base + ".reply";
  struct Cleanup {
    int dir;
    std::string a, b;
    ~Cleanup() { ::unlinkat(dir, a.c_str(), 0), ::unlinkat(dir, b.c_str(), 0), ::close(dir); }
  } cleanup{dir, req, reply};
  for (;;) {
    ::unlinkat(dir, reply.c_str(), 0);
    write_request(dir, req, command, owner != ::geteuid());
    siginfo_t si{};
    si.si_signo = shim::ctl_signal;
    si.si_code = SI_QUEUE;
    si.si_pid = ::getpid();
    si.si_uid = ::getuid();
    si.si_value.sival_ptr = reinterpret_cast<void*>(static_cast<uintptr_t>(shim::message_value(shim::ctl_magic, shim::ctl_tag, id)));
    std::optional<std::string> text;
    // The shim drops a request that arrives while it serves another (or in a flood): signalled again
    // every 250 ms while the request is still there, unread.
    auto next_signal = std::chrono::steady_clock::now();
    bool all_block = false;  // at the last try, every thread blocked the signal
    while (!(text = read_reply(dir, reply, owner))) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_signal && ::faccessat(dir, req.c_str(), F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
        const pid_t tid = pick_thread(pid);
        all_block = tid == 0;
        if (tid && ::syscall(SYS_rt_tgsigqueueinfo, pid, tid, shim::ctl_signal, &si) != 0)
          throw IoError("process " + std::to_string(pid) + ": cannot signal it: " + errno_text());
        next_signal = now + std::chrono::milliseconds(tid ? 250 : 5);
      }
      if (!running(pid)) throw IoError("process " + std::to_string(pid) + " exited before answering");
      if (now > deadline && all_block)
        throw IoError("process " + std::to_string(pid) + ": every thread blocks signal 62 (SIGRTMAX-2), so none can take the request");
      if (now > deadline)
        throw IoError("process " + std::to_string(pid) + " did not answer within " + std::to_string(timeout.count()) + " ms (is it stopped?)");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ParsedReply r = parse_reply(*text);
    if (r.kind == ReplyKind::busy && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    if (r.kind == ReplyKind::malformed) throw IoError("process " + std::to_string(pid) + ": " + r.text.substr(0, r.text.size() - 1));
    return {r.kind == ReplyKind::ok, r.text};
  }
}

}  // namespace prepatch
