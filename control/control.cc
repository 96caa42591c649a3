#include "control/control.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
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

// The thread to deliver the request to: one that does not block the control signal, preferably one running
// (state R), whose handler then interrupts no system call. A signal to the whole process would go to
// any thread, often the main one, and cut short its sleep() or poll().
pid_t pick_thread(pid_t pid) {
  const std::string task = "/proc/" + std::to_string(pid) + "/task/";
  pid_t any = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(task, ec)) {
    const std::string name = entry.path().filename();
    pid_t tid = static_cast<pid_t>(std::strtol(name.c_str(), nullptr, 10));
    auto blocked = status_mask(task + name + "/status", "SigBlk:");
    if (tid <= 0 || !blocked || (*blocked & ctl_bit)) continue;
    std::ifstream stat(task + name + "/stat");
    std::string line;
    std::getline(stat, line);
    auto paren = line.rfind(')');
    if (paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'R') return tid;
    if (!any) any = tid;
  }
  if (ec) throw IoError(task + ": cannot list the threads: " + ec.message());
  if (!any) throw IoError("process " + std::to_string(pid) + ": every thread blocks signal 62 (SIGRTMAX-2), so none can take the request");
  return any;
}

// The control signal kills a process that does not catch it: make sure `pid` runs a prepared binary
// whose shim is listening before sending one.
void check_target(pid_t pid) {
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
    throw IoError(who + ": cannot read its executable (" + e.what() + ")");
  }
  if (!table) throw IoError(who + ": its executable is not prepared by prepatch (no __patch_sites table)");
  auto caught = status_mask("/proc/" + std::to_string(pid) + "/status", "SigCgt:");
  if (!caught || !(*caught & ctl_bit))
    throw IoError(who + ": it does not catch signal 62 (SIGRTMAX-2), so its shim is not listening; not sending a signal that would kill it");
}

std::string channel_dir() {
  const std::string dir = shim::ctl_dir_prefix + std::to_string(::geteuid());
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw IoError(dir + ": cannot create the control directory: " + errno_text());
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) throw IoError(dir + ": " + errno_text());
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077))
    throw IoError(dir + ": expected a directory of this user with mode 0700 (someone else may have created it)");
  return dir;
}

void write_request(const std::string& path, const std::string& command) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) throw IoError(tmp + ": " + errno_text());
  const std::string line = command + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ok &= ::close(fd) == 0;
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    throw IoError(path + ": cannot write the request: " + errno_text());
  }
}

}  // namespace

ControlReply control(pid_t pid, const std::string& command, std::chrono::milliseconds timeout) {
  if (command.size() >= shim::ctl_max_request || command.find('\n') != std::string::npos)
    throw IoError("the command must be one line shorter than 4096 bytes");
  check_target(pid);
  const u32 id = static_cast<u32>(::getpid());
  const std::string base = channel_dir() + "/" + std::to_string(pid) + "." + std::to_string(id);
  const std::string req = base + ".req", reply = base + ".reply";
  struct Cleanup {
    std::string a, b;
    ~Cleanup() { ::unlink(a.c_str()), ::unlink(b.c_str()); }
  } cleanup{req, reply};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    ::unlink(reply.c_str());
    write_request(req, command);
    siginfo_t si{};
    si.si_signo = shim::ctl_signal;
    si.si_code = SI_QUEUE;
    si.si_pid = ::getpid();
    si.si_uid = ::getuid();
    si.si_value.sival_ptr = reinterpret_cast<void*>(static_cast<uintptr_t>(shim::message_value(shim::ctl_magic, shim::ctl_tag, id)));
    if (::syscall(SYS_rt_tgsigqueueinfo, pid, pick_thread(pid), shim::ctl_signal, &si) != 0)
      throw IoError("process " + std::to_string(pid) + ": cannot signal it: " + errno_text());
    std::string text;
    for (;;) {
      std::ifstream f(reply);
      if (f) {
        std::stringstream ss;
        ss << f.rdbuf();
        text = ss.str();
        break;
      }
      if (::kill(pid, 0) != 0) throw IoError("process " + std::to_string(pid) + " exited before answering");
      if (std::chrono::steady_clock::now() > deadline)
        throw IoError("process " + std::to_string(pid) + " did not answer within " + std::to_string(timeout.count()) + " ms (is it stopped?)");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (text.rfind("busy", 0) == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    return {text.rfind("ok:", 0) == 0, text};
  }
}

std::vector<CountRow> read_counts(const std::string& path, const elf::Elf& binary) {
  auto table = find_table(binary);
  if (!table) throw InputError(binary.name(), 0, "not a prepared binary (no __patch_sites table)");
  MappedFile f(path);
  auto b = f.bytes();
  shim::CountsHeader h;
  if (b.size() < sizeof h) throw InputError(path, b.size(), "counts file ends inside its 64-byte header");
  std::memcpy(&h, b.data(), sizeof h);
  if (std::memcmp(h.magic, shim::counts_magic, 8) != 0) throw InputError(path, 0, "expected the counts magic \"PPCOUNT\\1\"");
  if (h.version != 1 || h.header_size != sizeof h) throw InputError(path, 8, "expected version 1 with a 64-byte header");
  const auto& entries = table->table.entries;
  if (h.count != entries.size() || h.table_vaddr != table->vaddr)
    throw InputError(path, 16, "written by another binary: " + std::to_string(h.count) + " sites, table at " + hex(h.table_vaddr) + "; " +
                                   binary.name() + " has " + std::to_string(entries.size()) + " at " + hex(table->vaddr));
  if ((b.size() - sizeof h) / 8 < h.count) throw InputError(path, b.size(), "counts file is truncated");
  std::vector<CountRow> rows;
  rows.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); i++) {
    u64 c;
    std::memcpy(&c, b.data() + sizeof h + 8 * i, 8);
    rows.push_back({entries[i].addr, std::string(table->table.name(entries[i])), c});
  }
  return rows;
}

}  // namespace prepatch
