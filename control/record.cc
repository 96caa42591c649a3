#include "control/record.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>

#include "elf/mapped_file.h"
#include "rewriter/debug_file.h"
#include "rewriter/prepare.h"

namespace prepatch {
namespace {

std::string errno_text() { return std::strerror(errno); }

// PATH lookup as execvp does it, for a name without a slash.
std::string find_program(const std::string& name) {
  if (name.empty()) throw IoError("prepatch record: no program given");
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string dirs = path && *path ? path : "/usr/local/bin:/usr/bin:/bin";
  for (size_t from = 0; from <= dirs.size();) {
    size_t colon = dirs.find(':', from);
    if (colon == std::string::npos) colon = dirs.size();
    const std::string dir = colon > from ? dirs.substr(from, colon - from) : ".";
    const std::string candidate = dir + "/" + name;
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    from = colon + 1;
  }
  throw IoError(name + ": not found in PATH");
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) throw std::runtime_error("SHA-256 is not available");
  }
  void add(const void* p, size_t n) { EVP_DigestUpdate(ctx_.get(), p, n); }
  std::string hex() {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_DigestFinal_ex(ctx_.get(), d, &n);
    std::string s;
    for (unsigned i = 0; i < n; i++) s += "0123456789abcdef"[d[i] >> 4], s += "0123456789abcdef"[d[i] & 15];
    return s;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
};

// A directory where prepared copies are run from must be this user's alone: whoever can write into it
// chooses the code that runs.
void check_private(const std::string& path, bool dir) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) throw IoError(path + ": cannot stat: " + errno_text());
  if ((dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) || st.st_uid != ::geteuid() || (st.st_mode & 022))
    throw IoError(path + ": not a " + (dir ? "directory" : "regular file") + " of this user's alone (owner uid " + std::to_string(st.st_uid) +
                  ", mode " + [&] { char b[8]; std::snprintf(b, sizeof b, "%04o", st.st_mode & 07777); return std::string(b); }() +
                  "): prepatch record will not run programs from it");
}

std::string shell_word(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./+,:=@-") == std::string::npos) return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

std::string cache_dir() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && *xdg == '/') return std::string(xdg) + "/prepatch";
  const char* home = std::getenv("HOME");
  if (!home || *home != '/') throw IoError("prepatch record: neither XDG_CACHE_HOME nor HOME names a directory for the cache of prepared programs");
  return std::string(home) + "/.cache/prepatch";
}

std::string prepared_for(const std::string& program) {
  MappedFile file(program);
  elf::Elf elf(file.bytes(), program);
  // Keyed by the program's bytes and this prepatch's own (its shim and rewriter make the copy).
  Sha256 key;
  const MappedFile self("/proc/self/exe");
  key.add(self.bytes().data(), self.bytes().size());
  key.add(file.bytes().data(), file.bytes().size());
  // A stripped program's debug file, found as `prepatch` finds one, names its functions. Its name is in
  // the key, not its bytes (often hundreds of MB): it was taken only where its build ID, or the CRC-32
  // in the program's .gnu_debuglink, is the program's, which the program's bytes already pin.
  std::string note;
  const std::unique_ptr<DebugSymbols> symbols = debug_symbols(elf, program, "", default_debug_dir, note);
  if (symbols) {
    const std::string debug = "debug file " + symbols->elf.name();
    key.add(debug.data(), debug.size());
  }
  const std::string dir = cache_dir();
  const std::string parent = dir.substr(0, dir.rfind('/'));
  if (::mkdir(parent.c_str(), 0700) != 0 && errno != EEXIST) throw IoError(parent + ": cannot create: " + errno_text());
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw IoError(dir + ": cannot create: " + errno_text());
  check_private(dir, true);
  const std::string base = program.substr(program.rfind('/') + 1);
  const std::string cached = dir + "/" + base + "." + key.hex().substr(0, 32);
  struct stat st;
  if (::lstat(cached.c_str(), &st) == 0) {
    check_private(cached, false);
    return cached;
  }
  if (!note.empty()) std::cerr << "prepatch: " << program << ": " << note << "\n";
  PrepareResult r = prepare(elf, cached, 0700, file.fd(), symbols ? &symbols->elf : nullptr);
  if (r.outcome == PrepareOutcome::already_prepared) return program;
  if (r.outcome == PrepareOutcome::no_sites)
    throw NoSites(program + ": no function-entry sites to trace: build it with -pg -mfentry (gcc), -pg, or -fpatchable-function-entry=5");
  for (const std::string& m : r.messages) std::cerr << "prepatch: " << m << "\n";
  return cached;
}

int record(const RecordOptions& o) {
  const std::string program = find_program(o.argv.empty() ? "" : o.argv[0]);
  const std::string run = prepared_for(program);
  const bool count = o.tracer == "count";
  std::vector<char*> argv;
  for (const std::string& a : o.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // The terminal's interrupt goes to the program; this process waits to report what it wrote.
  struct sigaction ignore {}, old_int {}, old_quit {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGINT, &ignore, &old_int);
  ::sigaction(SIGQUIT, &ignore, &old_quit);
  const pid_t pid = ::fork();
  if (pid < 0) throw IoError("prepatch record: cannot fork: " + errno_text());
  if (pid == 0) {
    ::sigaction(SIGINT, &old_int, nullptr);
    ::sigaction(SIGQUIT, &old_quit, nullptr);
    ::setenv("PREPATCH_TRACER", o.tracer.c_str(), 1);
    ::setenv("PREPATCH_TRACE", o.trace.c_str(), 1);
    if (!o.output.empty()) ::setenv(count ? "PREPATCH_COUNTS" : "PREPATCH_OUTPUT", o.output.c_str(), 1);
    ::execv(run.c_str(), argv.data());
    std::fprintf(stderr, "prepatch record: cannot run %s: %s\n", run.c_str(), std::strerror(errno));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGQUIT, &old_quit, nullptr);
  const std::string file = !o.output.empty() ? o.output : "prepatch." + std::to_string(pid) + (count ? ".counts" : ".trace");
  struct stat st;
  if (::stat(file.c_str(), &st) != 0) {
    std::cerr << "prepatch record: no " << (count ? "counts" : "trace") << " file " << file << " was written (see the messages above)\n";
  } else if (count) {
    std::cerr << "prepatch record: wrote " << file << "; read it with\n  prepatch counts " << shell_word(run) << " " << shell_word(file) << "\n";
  } else {
    const std::string f = shell_word(file);
    char size[32];
    if (st.st_size < 1000000) std::snprintf(size, sizeof size, "%lld kB", static_cast<long long>(st.st_size + 999) / 1000);
    else std::snprintf(size, sizeof size, "%.1f MB", static_cast<double>(st.st_size) / 1e6);
    std::cerr << "prepatch record: wrote " << file << " (" << o.tracer << ", " << size << "); read it with\n  prepatch report " << f
              << "\n  prepatch replay " << f << "\n  prepatch export " << f << " --format perfetto -o trace.pftrace\n";
  }
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

}  // namespace prepatch
