// SECURITY.md's promises, tried as an attacker would: prepared setuid, setgid and file-capability
// programs run by `nobody` with every PREPATCH_* variable aimed at root's files; symbolic links, FIFOs
// and files planted in a sticky shared directory at every name the shim and the readers create; request
// files of every wrong kind on the control channel, a flood of requests, and who may drive a process.
// These need root (to make set-id programs and to act as several users); CI runs as root.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <thread>

#include "control/control.h"
#include "shim/abi.h"
#include "support.h"

namespace prepatch::test {
namespace {

const std::string td = TESTDATA_DIR;
constexpr int nobody = 65534;

// `argv` run as user `uid` (its group too, no other groups), with setpriv's `options` (capabilities).
std::vector<std::string> as_user(int uid, std::vector<std::string> argv, const std::vector<std::string>& options = {}) {
  std::vector<std::string> v{"setpriv", "--reuid=" + std::to_string(uid), "--regid=" + std::to_string(uid), "--clear-groups"};
  v.insert(v.end(), options.begin(), options.end());
  v.insert(v.end(), argv.begin(), argv.end());
  return v;
}

void must(const std::vector<std::string>& argv) {
  Proc p = run(argv);
  ASSERT_EQ(p.status, 0) << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": " << p.err;
}

struct stat lstat_of(const std::string& path) {
  struct stat st {};
  lstat(path.c_str(), &st);
  return st;
}

// A directory entry as it was planted: its type, owner and (for a link) target, or a file's content.
std::string entry_of(const std::string& path) {
  struct stat st = lstat_of(path);
  std::string what = std::to_string(st.st_mode & S_IFMT) + " uid " + std::to_string(st.st_uid);
  if (S_ISLNK(st.st_mode)) {
    char buf[4096];
    ssize_t n = readlink(path.c_str(), buf, sizeof buf);
    what += " -> " + std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
  } else if (S_ISREG(st.st_mode)) {
    what += " " + read_file(path);
  }
  return what;
}

#define REQUIRE_ROOT() \
  if (geteuid() != 0) GTEST_SKIP() << "needs root: set-id programs and several users (CI runs as root)"

// ---- secure execution ------------------------------------------------------------------------

struct Privilege {
  std::string name;
  std::vector<std::vector<std::string>> setup;  // commands, with FILE standing for the binary
};

std::vector<Privilege> privileges() {
  return {{"setuid-root", {{"chown", "0:0", "FILE"}, {"chmod", "4755", "FILE"}}},
          {"setgid-root", {{"chown", "0:0", "FILE"}, {"chmod", "2755", "FILE"}}},
          {"capability", {{"chmod", "755", "FILE"}, {"setcap", "cap_dac_override+ep", "FILE"}}}};
}

void give(const Privilege& p, const std::string& file) {
  for (std::vector<std::string> cmd : p.setup) {
    for (std::string& a : cmd)
      if (a == "FILE") a = file;
    must(cmd);
  }
}

// Run by `nobody`, a prepared set-id program reads no PREPATCH_* variable: each one pointing into a
// directory only root (and its group) may write, at a root-owned file, or holding a value the shim would
// complain about, changes nothing, and output, messages and exit status are those of the program built
// without hooks.
TEST(SecureExecution, SetIdAndCapabilityProgramsIgnoreEveryVariable) {
  REQUIRE_ROOT();
  for (const std::string flavor : {"fentry", "pfe5"}) {
    for (const Privilege& priv : privileges()) {
      SCOPED_TRACE(flavor + " " + priv.name);
      TempDir d;
      must({"chmod", "755", d.path()});
      // The reference: the same program built without hooks (a prepared binary runs no gprof either).
      must({"cp", td + "/secure-nohooks", d / "plain"});
      ASSERT_EQ(prepatch({td + "/secure-" + flavor, "-o", d / "prepared", "-q"}).status, 0);
      give(priv, d / "plain");
      give(priv, d / "prepared");
      const std::string root_only = d / "rootonly";  // root and its group: what setgid-root may write
      must({"mkdir", "-m", "770", root_only});
      write_file(root_only + "/existing", "precious\n", 0664);
      const std::vector<std::vector<std::string>> envs{
          {"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + root_only + "/owned"},
          {"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + root_only + "/counts"},
          {"PREPATCH_TRACE=*", "PREPATCH_TRACER=function", "PREPATCH_OUTPUT=" + root_only + "/existing"},
          {"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + root_only + "/existing", "PREPATCH_FILE_MODE=0666"},
          {"PREPATCH_TRACE=*"},  // the default names, in a working directory only root may write
          {"PREPATCH_TRACE=*", "PREPATCH_WX=strict", "PREPATCH_SYNC=signal"},
          {"PREPATCH_TRACE=*", "PREPATCH_TRACER=bogus", "PREPATCH_BUFFER=x", "PREPATCH_FILE_MODE=7777"},  // would be complained about
      };
      for (const auto& env : envs) {
        SCOPED_TRACE(env.back());
        for (const char* run_dir : {"/run-plain", "/run-prepared"}) must({"mkdir", "-m", "755", d.path() + run_dir});
        std::vector<std::string> plain_cmd{"env"}, prepared_cmd{"env"};
        plain_cmd.insert(plain_cmd.end(), env.begin(), env.end());
        prepared_cmd.insert(prepared_cmd.end(), env.begin(), env.end());
        plain_cmd.push_back(d / "plain");
        prepared_cmd.push_back(d / "prepared");
        Proc plain = run(as_user(nobody, plain_cmd), d / "run-plain");
        Proc prep = run(as_user(nobody, prepared_cmd), d / "run-prepared");
        EXPECT_EQ(plain.status, 7) << plain.err;
        EXPECT_NE(plain.out.find("fib 6765"), std::string::npos) << plain.out;
        EXPECT_EQ(prep.out, plain.out);
        EXPECT_EQ(prep.err, plain.err);
        EXPECT_EQ(prep.status, plain.status);
        EXPECT_EQ(list_dir(root_only), std::vector<std::string>{"existing"});
        EXPECT_EQ(read_file(root_only + "/existing"), "precious\n");
        EXPECT_TRUE(list_dir(d / "run-prepared").empty()) << "no file: the shim's or gprof's gmon.out";
        must({"rm", "-rf", d / "run-plain", d / "run-prepared"});
      }
      // The test can fail: run by root (no privilege gained, so no secure execution), the same binary
      // honours the variables.
      Proc root = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + root_only + "/counts", d / "prepared"}, d.path());
      EXPECT_EQ(root.status, 7) << root.err;
      EXPECT_TRUE(exists(root_only + "/counts")) << "a prepared program run without privileges gained must count";
    }
  }
}

// A set-id program (unprepared) that loads a prepared library: the library's shim learns of the secure
// execution from /proc/self/auxv and does nothing, whatever the variables say.
TEST(SecureExecution, APreparedLibraryInASetuidProgramIgnoresEveryVariable) {
  REQUIRE_ROOT();
  TempDir d;
  must({"chmod", "755", d.path()});
  write_file(d / "plugin.c", "__attribute__((noinline)) int leaf(int x) { return x + 1; }\nint work(int n) { int s = 0; for (int i = 0; i < n; i++) s += leaf(i); return s; }\n");
  write_file(d / "host.c",
             "#include <dlfcn.h>\n#include <stdio.h>\n"
             "int main(int argc, char** argv) { (void)argc; void* h = dlopen(argv[1], RTLD_NOW); if (!h) return 1;\n"
             "  int (*work)(int) = (int (*)(int))dlsym(h, \"work\"); printf(\"%d\\n\", work(10)); return 0; }\n");
  must({"gcc", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", d / "plugin.c", "-o", d / "plugin.orig.so"});
  must({"gcc", "-O2", d / "host.c", "-o", d / "host", "-ldl"});
  ASSERT_EQ(prepatch({"-q", d / "plugin.orig.so", "-o", d / "plugin.so"}).status, 0);
  must({"chmod", "644", d / "plugin.so"});
  const std::string root_only = d / "rootonly";
  must({"mkdir", "-m", "700", root_only});
  for (const Privilege& priv : privileges()) {
    SCOPED_TRACE(priv.name);
    give(priv, d / "host");
    Proc r = run(as_user(nobody, {"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + root_only + "/counts", "PREPATCH_TRACER=bogus", d / "host", d / "plugin.so"}), "/");
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "55\n");
    EXPECT_EQ(r.err, "") << "not even a complaint about PREPATCH_TRACER";
    EXPECT_TRUE(list_dir(root_only).empty());
    run({"setcap", "-r", d / "host"});  // the capability case's; fails harmlessly for the others
    must({"chmod", "755", d / "host"});
  }
  // The test can fail: run by root, gaining nothing, the library's shim counts.
  Proc root = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + root_only + "/counts", d / "host", d / "plugin.so"});
  EXPECT_EQ(root.status, 0) << root.err;
  EXPECT_TRUE(exists(root_only + "/counts"));
}

// `prepatch ctl` cannot reach a set-id process: its shim installed no handler, so the client refuses
// to send a signal that would kill it, whoever asks.
TEST(SecureExecution, CtlCannotDriveASetuidProcess) {
  REQUIRE_ROOT();
  TempDir d;
  must({"chmod", "755", d.path()});
  ASSERT_EQ(prepatch({td + "/secure-fentry", "-o", d / "prepared", "-q"}).status, 0);
  give(privileges()[0], d / "prepared");
  Background p(as_user(nobody, {d / "prepared", "wait"}), d.path());
  ASSERT_GT(p.target(), 0);
  for (bool root : {true, false}) {
    // (--timeout: ctl waits that long for a shim that is not listening yet, which this one never will)
    std::vector<std::string> cmd{PREPATCH_BIN, "ctl", std::to_string(p.target()), "enable", "*", "--timeout", "300"};
    Proc c = run(root ? cmd : as_user(nobody, cmd));
    EXPECT_EQ(c.status, 5) << c.err;
    // (nobody cannot even read a setuid process's executable: the kernel keeps it from its caller)
    EXPECT_TRUE(std::regex_search(c.err, std::regex(root ? "does not catch signal 62" : "does not catch signal 62|cannot read its executable"))) << c.err;
  }
  EXPECT_TRUE(p.alive());
  auto [status, out] = p.finish();
  EXPECT_EQ(status, 7);
  EXPECT_NE(out.find("ruid 65534 euid 0"), std::string::npos) << out;
}

// The preparer keeps set-id bits only for the binary's own user: root preparing another user's setuid
// program must not make a setuid-root one (cp drops them the same way).
TEST(SecureExecution, PreparingKeepsSetIdBitsOnlyForTheOwner) {
  REQUIRE_ROOT();
  TempDir d;
  must({"cp", td + "/secure-fentry", d / "theirs"});
  must({"chown", std::to_string(nobody) + ":" + std::to_string(nobody), d / "theirs"});
  must({"chmod", "6755", d / "theirs"});
  ASSERT_EQ(prepatch({d / "theirs", "-o", d / "out", "-q"}).status, 0);
  EXPECT_EQ(lstat_of(d / "out").st_mode & 07777, 0755u);
  must({"cp", td + "/secure-fentry", d / "ours"});
  must({"chmod", "6755", d / "ours"});
  ASSERT_EQ(prepatch({d / "ours", "-o", d / "out2", "-q"}).status, 0);
  EXPECT_EQ(lstat_of(d / "out2").st_mode & 07777, 06755u);
}

// ---- files in shared directories -------------------------------------------------------------

constexpr int victim = 4242;

// A sticky world-writable directory (like /tmp), a victim user's precious file elsewhere, and
// `plant(name, kind)`: `nobody` puts a symbolic link to the precious file, a FIFO or a file of its own
// at `name` in the shared directory.
struct SharedDir {
  TempDir d;
  std::string shared = d / "shared", precious = d / "victim/precious";
  SharedDir() {
    must({"chmod", "755", d.path()});
    must({"mkdir", "-m", "1777", shared});
    must({"mkdir", "-m", "755", d / "victim"});
    write_file(precious, "precious\n", 0644);
    must({"chown", "-R", std::to_string(victim) + ":" + std::to_string(victim), d / "victim"});
  }
  void plant(const std::string& name, char kind) {
    const std::string at = shared + "/" + name;
    if (kind == 'l') {
      ASSERT_EQ(symlink(precious.c_str(), at.c_str()), 0) << at;
    } else if (kind == 'p') {
      ASSERT_EQ(mkfifo(at.c_str(), 0666), 0) << at;
    } else {
      write_file(at, "nobody's\n", 0666);
    }
    ASSERT_EQ(lchown(at.c_str(), nobody, nobody), 0) << at;
  }
  // Everything in the shared directory, as planted or created.
  std::map<std::string, std::string> entries() const {
    std::map<std::string, std::string> m;
    for (const std::string& n : list_dir(shared)) m[n] = entry_of(shared + "/" + n);
    return m;
  }
};

// Waits for `pid` at most `seconds`, then kills it: a shim that opened a planted FIFO would hang.
int wait_for(int pid, int seconds) {
  for (int i = 0; i < seconds * 100; i++) {
    int st = 0;
    if (waitpid(pid, &st, WNOHANG) == pid) return exit_code(st);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  int st = 0;
  waitpid(pid, &st, 0);
  return -1;
}

// The victim runs a prepared program in the shared directory with tracing on and the default file
// names, which name its pid: `nobody` learns the pid (the program waits behind a shell's `read` that
// then execs it, keeping the pid) and plants a link, a FIFO or a file at the trace or counts file's
// name and at the temporary names older shims used. Nothing is written through them, nothing waits on
// the FIFO, the run says why it does not trace, and the program runs to its end as usual.
TEST(SharedDirectory, NothingIsWrittenThroughNamesPlantedAtTheShimsFiles) {
  REQUIRE_ROOT();
  SharedDir s;
  ASSERT_EQ(prepatch({td + "/secure-pfe5", "-o", s.d / "prog", "-q"}).status, 0);
  struct Case {
    std::string tracer, file;  // the file the shim creates first: prepatch.PID.FILE
    char at_name, at_tmp, at_next;
  };
  for (const Case& c : {Case{"graph", "trace", 'l', 'l', 'p'}, Case{"count", "counts", 'p', 'l', 'l'},
                        Case{"function", "trace", 'f', 'p', 'f'}}) {
    SCOPED_TRACE(c.tracer + std::string(1, c.at_name));
    const std::string err_path = s.d / "err";
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(err, 0);
    Background gate(as_user(victim, {"sh", "-c", "read go; exec env PREPATCH_TRACE='*' PREPATCH_TRACER=" + c.tracer + " " + s.d / "prog"}),
                    s.shared, false, err);
    close(err);
    const std::string name = "prepatch." + std::to_string(gate.pid()) + "." + c.file;
    s.plant(name, c.at_name);
    s.plant(name + ".tmp", c.at_tmp);
    s.plant(name + ".1", c.at_next);
    const auto planted = s.entries();
    gate.say("go\n");
    const int status = wait_for(gate.pid(), 60);
    auto [ignored, out] = gate.finish();
    EXPECT_EQ(status, 7) << "the program hung or failed";
    EXPECT_NE(out.find("fib 6765"), std::string::npos) << out;
    const std::string e = read_file(err_path);
    EXPECT_NE(e.find("prepatch: PREPATCH_TRACE: cannot "), std::string::npos) << e;
    EXPECT_EQ(read_file(s.precious), "precious\n");
    EXPECT_EQ(s.entries(), planted) << "the shim created, changed or left a file in the shared directory";
    for (const auto& [n, ignored2] : planted) unlink((s.shared + "/" + n).c_str());
  }
}

// The same program with nothing planted creates its files 0600, or as PREPATCH_FILE_MODE says.
TEST(SharedDirectory, TheShimsFilesAreTheUsersAlone) {
  REQUIRE_ROOT();
  SharedDir s;
  ASSERT_EQ(prepatch({td + "/secure-pfe5", "-o", s.d / "prog", "-q"}).status, 0);
  Proc r = run(as_user(victim, {"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=t", s.d / "prog"}), s.shared);
  EXPECT_EQ(r.status, 7) << r.err;
  Proc m = run(as_user(victim, {"sh", "-c", "umask 022; exec env PREPATCH_TRACE='*' PREPATCH_COUNTS=c PREPATCH_FILE_MODE=0640 " + s.d / "prog"}),
               s.shared);
  EXPECT_EQ(m.status, 7) << m.err;
  EXPECT_EQ(lstat_of(s.shared + "/t").st_mode & 07777, 0600u);
  EXPECT_EQ(lstat_of(s.shared + "/t").st_uid, static_cast<uid_t>(victim));
  EXPECT_EQ(lstat_of(s.shared + "/c").st_mode & 07777, 0640u);
  std::vector<std::string> files = list_dir(s.shared);
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"c", "t"})) << "no temporary file left";
}

// The readers and the preparer, run by the victim with their output in the shared directory where
// `nobody` planted a link or a FIFO: refused (exit 5, saying so), nothing written through it, no
// temporary file left; a FIFO given as the input is refused, not waited on.
TEST(SharedDirectory, TheReadersAndThePreparerNeverWriteThroughPlantedNames) {
  REQUIRE_ROOT();
  SharedDir s;
  ASSERT_EQ(prepatch({td + "/secure-pfe5", "-o", s.d / "prog", "-q"}).status, 0);
  must({"cp", td + "/secure-fentry", s.d / "in"});
  Proc t = run(as_user(victim, {"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + s.d / "victim/trace", s.d / "prog"}));
  ASSERT_EQ(t.status, 7) << t.err;
  for (char kind : {'l', 'p', 'f'}) {
    SCOPED_TRACE(std::string(1, kind));
    s.plant("out.json", kind);
    s.plant("prog.out", kind);
    const auto planted = s.entries();
    Proc e = run(as_user(victim, {PREPATCH_BIN, "export", s.d / "victim/trace", "--format", "chrome", "-o", s.shared + "/out.json"}));
    EXPECT_EQ(e.status, 5) << e.err;
    // A FIFO is refused before anything is written; a link or another user's file, when the rename
    // over it is refused (sticky directory).
    const std::string why = kind == 'p' ? ": is a FIFO, not a regular file" : ": cannot rename the temporary file into place";
    EXPECT_NE(e.err.find("out.json" + why), std::string::npos) << e.err;
    Proc p = run(as_user(victim, {PREPATCH_BIN, s.d / "in", "-o", s.shared + "/prog.out"}));
    EXPECT_EQ(p.status, 5) << p.err;
    EXPECT_NE(p.err.find("prog.out" + why), std::string::npos) << p.err;
    EXPECT_EQ(read_file(s.precious), "precious\n");
    EXPECT_EQ(s.entries(), planted);
    for (const auto& [n, ignored] : planted) unlink((s.shared + "/" + n).c_str());
  }
  s.plant("fifo", 'p');
  for (const char* cmd : {"report", "replay"}) {
    Proc r = run(as_user(victim, {"timeout", "20", PREPATCH_BIN, cmd, s.shared + "/fifo"}));
    EXPECT_EQ(r.status, 5) << cmd << ": " << r.err;
    EXPECT_NE(r.err.find("fifo: not a regular file"), std::string::npos) << r.err;
  }
  Proc c = run(as_user(victim, {"timeout", "20", PREPATCH_BIN, "counts", s.d / "prog", s.shared + "/fifo"}));
  EXPECT_EQ(c.status, 5) << c.err;
  // Written where nothing was planted, the export is the victim's alone.
  Proc ok = run(as_user(victim, {PREPATCH_BIN, "export", s.d / "victim/trace", "--format", "chrome", "-o", s.shared + "/mine.json"}));
  EXPECT_EQ(ok.status, 0) << ok.err;
  EXPECT_EQ(lstat_of(s.shared + "/mine.json").st_mode & 07777, 0600u);
}

// ---- the control channel ---------------------------------------------------------------------

// The ids of the requests these tests write themselves: above every pid (PID_MAX_LIMIT is 2^22), so
// that a `prepatch ctl` run meanwhile, whose id is its pid, never takes (and removes) one of them.
constexpr unsigned raw_ids = 1u << 22;

// A process of user `uid` running live.c ("wait"), with a control directory of its user's, and a
// client that writes request files of any kind and signals the process, as an attacker of that user
// (or root) could. Replies are read back as the shim wrote them.
struct Target {
  int uid;
  TempDir d;
  std::string dir;
  std::unique_ptr<Background> proc;
  explicit Target(int uid_, const std::vector<std::string>& setpriv = {}) : uid(uid_), dir(std::string(shim::ctl_dir_prefix) + std::to_string(uid_)) {
    must({"chmod", "755", d.path()});
    EXPECT_EQ(prepatch({td + "/live-fentry", "-o", d / "live", "-q"}).status, 0);
    must({"mkdir", "-m", "777", d / "out"});
    run({"rm", "-rf", dir});
    must({"mkdir", "-m", "700", dir});
    must({"chown", std::to_string(uid) + ":" + std::to_string(uid), dir});
    proc = std::make_unique<Background>(as_user(uid, {"env", "PREPATCH_COUNTS=" + d / "out/c", d / "live", "wait"}, setpriv), d / "out");
  }
  ~Target() { run({"rm", "-rf", dir}); }
  int pid() const { return proc->target(); }
  std::string req(unsigned id) const { return dir + "/" + std::to_string(pid()) + "." + std::to_string(id) + ".req"; }
  std::string rep(unsigned id) const { return dir + "/" + std::to_string(pid()) + "." + std::to_string(id) + ".reply"; }
  // A request file of the process's user with `text` and `mode`.
  void write_req(unsigned id, const std::string& text, unsigned mode = 0600, int owner = -1) const {
    write_file(req(id), text, mode);
    ASSERT_EQ(lchown(req(id).c_str(), owner < 0 ? uid : owner, owner < 0 ? uid : owner), 0);
  }
  long signal(unsigned id, int tid = 0) const {
    siginfo_t si{};
    si.si_signo = shim::ctl_signal;
    si.si_code = SI_QUEUE;
    si.si_pid = getpid();
    si.si_value.sival_ptr = reinterpret_cast<void*>(static_cast<uintptr_t>(shim::message_value(shim::ctl_magic, shim::ctl_tag, id)));
    return syscall(SYS_rt_tgsigqueueinfo, pid(), tid ? tid : pid(), shim::ctl_signal, &si);
  }
  // Signals request `id` and waits up to `ms` for its reply; "" when none came.
  std::string ask(unsigned id, int ms = 5000) const {
    signal(id);
    for (int i = 0; i < ms; i++) {
      if (exists(rep(id))) return read_file(rep(id));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return "";
  }
  // The process, unharmed by whatever the test did, still running; it ends as it should, its results right.
  void ends_well() const {
    EXPECT_TRUE(proc->alive());
    auto [status, out] = proc->finish();
    EXPECT_EQ(status, 0);
    EXPECT_EQ(out, "wrong results 0\n");
  }
  Proc ctl(const std::vector<std::string>& words) const {
    std::vector<std::string> args{"ctl", std::to_string(pid())};
    args.insert(args.end(), words.begin(), words.end());
    return prepatch(args);
  }
};

// A prepared program whose shim stood down at start (here: a preloaded library's constructor mapped
// something else where the runtimes meet, before the program's start ran) never catches the control
// signal: `prepatch ctl` does not send it, says why it may be, and does not wait out its timeout for a
// process that has run longer than a start-up takes.
TEST(ControlChannel, AProcessWhoseShimStoodDownIsNotSignalled) {
  TempDir d;
  write_file(d / "take.c", "#include <sys/mman.h>\n__attribute__((constructor)) static void take(void) {\n"
                           "  mmap((void*)0x7e5e00000000, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);\n}\n");
  Proc c = run({"gcc", "-O2", "-fPIC", "-shared", d / "take.c", "-o", d / "take.so"});
  ASSERT_EQ(c.status, 0) << c.err;
  ASSERT_EQ(prepatch({td + "/secure-fentry", "-o", d / "prepared", "-q"}).status, 0);
  Background p({"env", "LD_PRELOAD=" + d / "take.so", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", d / "prepared", "wait"}, d.path());
  ASSERT_GT(p.target(), 0);
  Proc ctl = prepatch({"ctl", std::to_string(p.target()), "status", "--timeout", "600000"});
  EXPECT_EQ(ctl.status, 5) << ctl.err;
  EXPECT_NE(ctl.err.find("it does not catch signal 62 (SIGRTMAX-2), so its shim is not listening: its sites stayed off at start (where a "
                         "PREPATCH_ variable was set, it said why on the program's standard error)"),
            std::string::npos)
      << ctl.err;
  EXPECT_TRUE(p.alive());
  auto [status, out] = p.finish();
  EXPECT_EQ(status, 7);
  EXPECT_FALSE(exists(d / "c"));
}

// Request files that are not what a request must be are refused with a reason, read no further, and
// leave the process as it was: a symbolic link (to a request that would be valid), a hard link, a FIFO
// (never waited on), a file of another user, one writable by others, one over 4096 bytes. A directory
// that is not the user's alone gets no answer at all.
TEST(ControlChannel, RequestFilesOfEveryWrongKindAreRefused) {
  REQUIRE_ROOT();
  Target t(4243);
  ASSERT_GT(t.pid(), 0);
  unsigned id = raw_ids;
  const std::string valid = t.d / "valid";
  write_file(valid, "enable *\n", 0600);
  ASSERT_EQ(chown(valid.c_str(), t.uid, t.uid), 0);
  const std::string others = t.d / "others";
  write_file(others, "enable *\n", 0644);
  ASSERT_EQ(chown(others.c_str(), nobody, nobody), 0);
  struct Case {
    std::string name, expected;
    std::function<void(unsigned)> make;
  };
  const std::vector<Case> cases{
      {"symlink", "error: the request is a symbolic link\n", [&](unsigned i) { ASSERT_EQ(symlink(valid.c_str(), t.req(i).c_str()), 0); }},
      {"hard link to another user's file", "error: the request file has more than one name (a hard link)\n",
       [&](unsigned i) { ASSERT_EQ(link(others.c_str(), t.req(i).c_str()), 0); }},
      {"hard link to the user's own file", "error: the request file has more than one name (a hard link)\n",
       [&](unsigned i) { ASSERT_EQ(link(valid.c_str(), t.req(i).c_str()), 0); }},
      {"fifo", "error: the request is not a regular file\n",
       [&](unsigned i) {
         ASSERT_EQ(mkfifo(t.req(i).c_str(), 0600), 0);
         ASSERT_EQ(lchown(t.req(i).c_str(), t.uid, t.uid), 0);
       }},
      {"another user's", "error: the request file belongs to another user\n", [&](unsigned i) { t.write_req(i, "enable *\n", 0644, nobody); }},
      {"another user's, unreadable", "error: cannot open the request file: permission denied\n",
       [&](unsigned i) { t.write_req(i, "enable *\n", 0600, nobody); }},
      {"writable by others", "error: the request file is writable by group or others\n", [&](unsigned i) { t.write_req(i, "enable *\n", 0666); }},
      {"writable by the group", "error: the request file is writable by group or others\n", [&](unsigned i) { t.write_req(i, "enable *\n", 0620); }},
      {"oversized", "error: the request is longer than 4096 bytes\n", [&](unsigned i) { t.write_req(i, "enable " + std::string(5000, 'a') + "\n"); }},
      {"a directory", "error: the request is not a regular file\n", [&](unsigned i) { must({"mkdir", t.req(i)}); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    c.make(++id);
    EXPECT_EQ(t.ask(id), c.expected);
    EXPECT_EQ(lstat_of(t.rep(id)).st_mode & 07777, 0600u);
    EXPECT_EQ(lstat_of(t.rep(id)).st_uid, static_cast<uid_t>(t.uid));
  }
  EXPECT_EQ(read_file(valid), "enable *\n");
  // Root's requests are taken (prepatch ctl as root writes them so: SECURITY.md).
  t.write_req(++id, "status\n", 0644, 0);
  EXPECT_EQ(t.ask(id).rfind("ok: pid ", 0), 0u);
  // The directory, writable by others or a symbolic link: no reply is written, whatever is asked.
  t.write_req(++id, "enable *\n");
  must({"chmod", "733", t.dir});
  EXPECT_EQ(t.ask(id, 500), "");
  must({"chmod", "700", t.dir});
  Proc s = t.ctl({"status"});
  ASSERT_EQ(s.status, 0) << s.err;
  EXPECT_NE(s.out.find(", 0 of "), std::string::npos) << "no refused request may enable anything: " << s.out;
  EXPECT_TRUE(std::regex_search(s.out, std::regex("requests: \\d+ answered before this one, 0 dropped \\(.*\\), 11 refused"))) << s.out;
  t.ends_well();
}

// A process that holds capabilities its user has not got (started with an ambient one, which sets no
// secure execution) keeps that user's debuggers out, so it takes requests from root alone, as a
// process with differing user ids or a non-dumpable one does.
TEST(ControlChannel, AProcessHoldingCapabilitiesTakesRequestsFromRootOnly) {
  REQUIRE_ROOT();
  Target t(4248, {"--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"});
  ASSERT_GT(t.pid(), 0);
  unsigned id = raw_ids;
  t.write_req(++id, "enable *\n");
  EXPECT_EQ(t.ask(id), "error: this process takes requests from root only (its user or group ids differ, it is not dumpable, or it holds capabilities)\n");
  Proc root = t.ctl({"status"});
  EXPECT_EQ(root.status, 0) << root.err;
  EXPECT_NE(root.out.find(", 0 of "), std::string::npos) << "the user's request enabled nothing: " << root.out;
  EXPECT_NE(root.out.find("from root only"), std::string::npos) << root.out;
  t.ends_well();
}

// 10,000 requests in a burst, each a valid `status` (the largest answer), sent to every thread of the
// process: a few are answered, the others dropped unread, the process keeps running with its results
// right, and `prepatch ctl` works again at once (SECURITY.md, "A flood of requests").
TEST(ControlChannel, AFloodOfRequestsIsDroppedNotServed) {
  REQUIRE_ROOT();
  Target t(4244);
  ASSERT_GT(t.pid(), 0);
  constexpr unsigned n = 10000, first = raw_ids + 1000;
  for (unsigned i = 0; i < n; i++) t.write_req(first + i, "status\n");
  std::vector<int> tids;
  for (const std::string& name : list_dir("/proc/" + std::to_string(t.pid()) + "/task")) tids.push_back(std::stoi(name));
  ASSERT_GE(tids.size(), 2u);
  unsigned sent = 0;
  for (unsigned i = 0; i < n; i++) sent += t.signal(first + i, tids[i % tids.size()]) == 0;
  // Until every signal sent has been handled (on a loaded machine that takes a while): each status
  // asked counts itself among the answered ones.
  std::smatch m;
  unsigned long answered = 0, dropped = 0;
  std::string longest;
  for (unsigned asked = 0; asked < 100; asked++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    Proc s = t.ctl({"status"});
    ASSERT_EQ(s.status, 0) << s.err;
    ASSERT_TRUE(std::regex_search(s.out, m, std::regex("requests: (\\d+) answered before this one, (\\d+) dropped .* longest (\\d+) us"))) << s.out;
    answered = std::stoul(m[1]) - asked, dropped = std::stoul(m[2]), longest = m[3];
    if (answered + dropped >= sent) break;
  }
  std::cout << "[flood] " << sent << " signals to " << tids.size() << " threads: " << answered << " answered, " << dropped
            << " dropped, longest answer " << longest << " us\n";
  EXPECT_GE(answered + dropped, sent) << "every signal handled: answered or dropped (a status that came mid-flood may have been dropped too)";
  EXPECT_GT(dropped, sent * 9 / 10) << "a flood must be dropped, not served";
  unsigned replies = 0, unread = 0;
  for (unsigned i = 0; i < n; i++) replies += exists(t.rep(first + i)), unread += exists(t.req(first + i));
  EXPECT_EQ(replies, answered);
  EXPECT_EQ(replies + unread, n) << "every request was either answered (and removed) or left unread";
  t.ends_well();
}

// Who may drive a process: its user and root; not another user; not from outside its user namespace.
TEST(ControlChannel, OnlyTheUserAndRootMayDriveAProcess) {
  REQUIRE_ROOT();
  Target t(4245);
  ASSERT_GT(t.pid(), 0);
  Proc root = t.ctl({"enable", "leaf_add"});
  EXPECT_EQ(root.status, 0) << root.err;
  EXPECT_EQ(root.out, "ok: enabled 1 site (1 matched)\n");
  Proc other = run(as_user(nobody, {PREPATCH_BIN, "ctl", std::to_string(t.pid()), "disable", "*"}));
  EXPECT_EQ(other.status, 5);
  EXPECT_NE(other.err.find("belongs to another user"), std::string::npos) << other.err;
  Proc self = run(as_user(t.uid, {PREPATCH_BIN, "ctl", std::to_string(t.pid()), "disable", "*"}));
  EXPECT_EQ(self.status, 0) << self.err;
  EXPECT_EQ(self.out, "ok: disabled 1 site (13 matched)\n");
  t.ends_well();

  // In a user namespace of its own (as a rootless container runs it), the process's uids and /tmp are
  // not the client's: refused with the way in, not left to time out.
  TempDir d;
  must({"chmod", "755", d.path()});
  ASSERT_EQ(prepatch({td + "/live-fentry", "-o", d / "live", "-q"}).status, 0);
  Background ns(as_user(4246, {"unshare", "--user", "--map-root-user", d / "live", "wait"}), d.path());
  ASSERT_GT(ns.target(), 0);
  Proc c = prepatch({"ctl", std::to_string(ns.target()), "status"});
  EXPECT_EQ(c.status, 5);
  EXPECT_NE(c.err.find("another user namespace"), std::string::npos) << c.err;
  EXPECT_EQ(ns.finish().first, 0);
}

// `prepatch ctl PID snapshot` run by root on another user's process: the copy beside the trace file
// is made with that user's rights (owned by them; refused where they may not write, which root may),
// and the trace file is opened through the process's own descriptors, never by the path its maps
// show, which that user can make name another file: here a directory with a FIFO of that name is
// mounted over the trace file's, where opening the path would wait forever. A path that holds escape
// sequences reaches the terminal filtered.
TEST(ControlChannel, RootsSnapshotOfAnotherUsersProcessIsMadeWithThatUsersRights) {
  REQUIRE_ROOT();
  constexpr int user = 4247;
  TempDir d;
  must({"chmod", "755", d.path()});
  ASSERT_EQ(prepatch({td + "/live-fentry", "-o", d / "live", "-q"}).status, 0);
  const std::string out = d / "out", name = "t\x1b]0;x\x07.trace", trace = out + "/" + name;
  must({"mkdir", "-m", "755", out});
  must({"chown", std::to_string(user) + ":" + std::to_string(user), out});
  Background b(as_user(user, {"env", "PREPATCH_TRACER=graph", "PREPATCH_TRACE=*", "PREPATCH_BUFFER=ring:1M", "PREPATCH_OUTPUT=" + trace,
                              d / "live", "wait"}),
               out);
  ASSERT_GT(b.target(), 0) << b.ready_line();
  const std::string pid = std::to_string(b.target());
  ASSERT_TRUE(eventually([&] { return exists(trace); }, 10));

  Proc snap = prepatch({"ctl", pid, "snapshot"});
  ASSERT_EQ(snap.status, 0) << snap.err;
  EXPECT_EQ(snap.out.rfind("snapshot of " + out + "/t?]0;x?.trace: " + out + "/t?]0;x?.trace.snapshot.1 (", 0), 0u) << snap.out;
  EXPECT_EQ(lstat_of(trace + ".snapshot.1").st_uid, static_cast<uid_t>(user));
  EXPECT_EQ(prepatch({"report", trace + ".snapshot.1"}).status, 0);

  // Where the user may not write, neither does root's snapshot.
  must({"chmod", "555", out});
  Proc refused = prepatch({"ctl", pid, "snapshot"});
  EXPECT_EQ(refused.status, 5) << refused.out << refused.err;
  EXPECT_NE(refused.err.find("Permission denied"), std::string::npos) << refused.err;
  EXPECT_EQ(refused.err.find('\x1b'), std::string::npos) << refused.err;
  EXPECT_FALSE(exists(trace + ".snapshot.2"));
  must({"chmod", "755", out});

  // The path names a FIFO now: the file is still read through the process's descriptor.
  const std::string decoy = d / "decoy";
  must({"mkdir", decoy});
  must({"mkfifo", decoy + "/" + name});
  if (run({"mount", "--bind", decoy, out}).status != 0) {
    std::printf("mount --bind is not allowed here: the part with a FIFO at the trace file's path did not run\n");
  } else {
    Proc through = run({"timeout", "60", PREPATCH_BIN, "ctl", pid, "snapshot", "-o", d / "copy.trace"});
    run({"umount", out});
    EXPECT_EQ(through.status, 0) << through.out << through.err;
    EXPECT_EQ(prepatch({"report", d / "copy.trace"}).status, 0);
  }
  EXPECT_EQ(b.finish().first, 0);
}

// The page where the runtimes of prepared objects meet, at a fixed address, holds the serving
// runtime's entry points: read-only once that runtime has started, with or without tracing asked for.
TEST(ControlChannel, TheRuntimesMeetingPageIsReadOnly) {
  TempDir d;
  ASSERT_EQ(prepatch({td + "/live-fentry", "-o", d / "live", "-q"}).status, 0);
  for (const std::vector<std::string>& env : {std::vector<std::string>{"env"}, std::vector<std::string>{"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}}) {
    std::vector<std::string> argv = env;
    argv.insert(argv.end(), {d / "live", "wait"});
    Background b(argv, d.path());
    ASSERT_GT(b.target(), 0) << b.ready_line();
    char page[64];
    std::snprintf(page, sizeof page, "%llx-%llx ", static_cast<unsigned long long>(shim::rendezvous_page_64),
                  static_cast<unsigned long long>(shim::rendezvous_page_64 + 4096));
    std::string line;
    for (std::istringstream maps(read_file("/proc/" + std::to_string(b.target()) + "/maps")); std::getline(maps, line) && line.rfind(page, 0) != 0;) {
    }
    EXPECT_EQ(line.substr(0, std::strlen(page) + 4), std::string(page) + "r--p") << line;
    EXPECT_EQ(b.finish().first, 0);
  }
}

// Another user who makes /tmp/prepatch-UID before UID's own shim or ctl would deny UID's channel
// for good (only root may remove it from sticky /tmp): UID's ctl says so and sends nothing; root's
// ctl moves that entry aside, says where, and drives the process.
TEST(ControlChannel, RootMovesAnotherUsersSquattedChannelDirectoryAside) {
  REQUIRE_ROOT();
  Target t(4249);
  ASSERT_GT(t.pid(), 0);
  must({"rm", "-rf", t.dir});
  must(as_user(nobody, {"mkdir", "-m", "777", t.dir}));
  Proc user = run(as_user(t.uid, {PREPATCH_BIN, "ctl", std::to_string(t.pid()), "status"}));
  EXPECT_EQ(user.status, 5);
  EXPECT_NE(user.err.find("only root can remove it from /tmp"), std::string::npos) << user.err;
  Proc root = t.ctl({"enable", "leaf_add"});
  EXPECT_EQ(root.status, 0) << root.err;
  EXPECT_EQ(root.out, "ok: enabled 1 site (1 matched)\n");
  const std::regex said("prepatch ctl: " + t.dir + " belonged to uid 65534, not to the process's user 4249: moved aside to (" + t.dir +
                        "\\.squatted-[a-z2-7]{12})\n");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(root.err, m, said)) << root.err;
  EXPECT_EQ(lstat_of(m[1]).st_uid, static_cast<uid_t>(nobody));
  EXPECT_EQ(lstat_of(t.dir).st_uid, static_cast<uid_t>(t.uid));
  EXPECT_EQ(lstat_of(t.dir).st_mode & 07777, 0700u);
  Proc again = run(as_user(t.uid, {PREPATCH_BIN, "ctl", std::to_string(t.pid()), "disable", "*"}));
  EXPECT_EQ(again.status, 0) << again.err;
  run({"rm", "-rf", m[1]});
  t.ends_well();
}

// What a hostile process answers reaches the terminal of whoever asked (root, perhaps) filtered.
TEST(ControlChannel, RepliesAreFilteredBeforeTheyAreShown) {
  ParsedReply r = parse_reply("ok: \x1b]0;owned\x07 enabled\r\n");
  EXPECT_EQ(r.kind, ReplyKind::ok);
  EXPECT_EQ(r.text, "ok: ?]0;owned? enabled?\n");
  EXPECT_EQ(parse_reply("error: no").kind, ReplyKind::error);
  EXPECT_EQ(parse_reply("error: no").text, "error: no\n");
  EXPECT_EQ(parse_reply("busy: again\n").kind, ReplyKind::busy);
  ParsedReply bad = parse_reply("\x1b[2Jgarbage");
  EXPECT_EQ(bad.kind, ReplyKind::malformed);
  EXPECT_EQ(bad.text.find('\x1b'), std::string::npos);
  EXPECT_EQ(parse_reply("ok: \xc2\x9b" "2J caf\xc3\xa9\n").text, "ok: ??2J caf\xc3\xa9\n") << "UTF-8 C1 controls filtered, other UTF-8 kept";
}

}  // namespace
}  // namespace prepatch::test
