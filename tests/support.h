// Test helpers: running programs, the testdata manifest, and independent oracles (nm, objdump).
#pragma once
#include <unistd.h>

#include <cstdio>
#include <map>
#include <ostream>
#include <set>
#include <string>
#include <vector>

namespace prepatch::test {

struct Proc {
  int status = -1;  // exit code, or 128 + signal number
  std::string out, err;
};
// Runs argv[0] (searched in PATH) with argv, optionally in `cwd`, capturing stdout and stderr.
Proc run(const std::vector<std::string>& argv, const std::string& cwd = "");
// Starts argv[0] (searched in PATH) with argv, in `cwd` when not empty, with `in`, `out` and `err` as
// its stdin, stdout and stderr (-1: this process's own); returns its pid. The child exits 126 when it
// cannot enter `cwd`, 127 when it cannot run argv[0].
int spawn(const std::vector<std::string>& argv, const std::string& cwd, int in, int out, int err);
// A waitpid() status as Proc::status reports it: the exit code, or 128 + the signal number.
int exit_code(int wait_status);
Proc prepatch(const std::vector<std::string>& args);

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& data, unsigned mode = 0644);
bool exists(const std::string& path);
std::vector<std::string> list_dir(const std::string& dir);
// The instruction lines of `objdump -d` output, each split at its tabs: "ADDR:", the raw bytes, the
// mnemonic and (where there are any) the operands.
std::vector<std::vector<std::string>> objdump_fields(const std::string& out);

// A fresh directory under /tmp, removed with its contents at the end of the scope.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A program running in the background, its stdin a pipe. With `ready`, waits for it to print a line
// "ready PID" first (the pid it can be driven by: a forked child's, for `fork`). Its stderr goes to
// `err` (-1: this process's own).
class Background {
 public:
  explicit Background(const std::vector<std::string>& argv, const std::string& cwd, bool ready = true, int err = -1);
  ~Background();
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  int target() const { return target_; }  // the pid it reported
  int pid() const { return pid_; }        // the pid it runs as (after exec: the program's)
  bool alive() const;
  void say(const std::string& line);
  const std::string& ready_line() const { return ready_; }  // the "ready PID ..." line
  std::string line();  // its next line of output ("" at its end)
  // Closes its stdin and waits: exit status (128 + signal when killed) and the rest of its output.
  std::pair<int, std::string> finish();

 private:
  int pid_ = -1;
  int target_ = 0;
  int stdin_ = -1;
  FILE* out_ = nullptr;
  std::string ready_;
};

// A real terminal: `command` run by sh in a detached tmux session of COLUMNS x ROWS, on a tmux server
// of this test process's own (killed at the end of the scope).
class Tmux {
 public:
  Tmux(const std::string& command, int columns, int rows);
  ~Tmux();
  Tmux(const Tmux&) = delete;
  Tmux& operator=(const Tmux&) = delete;
  std::string screen();                 // what the terminal shows now (capture-pane)
  void keys(const std::string& keys);   // typed into it (send-keys)
  bool running();                       // the command has not ended

 private:
  std::string socket_;
};

// Polls `done` every 100 ms for up to `seconds`; whether it became true.
template <class F>
bool eventually(F done, int seconds = 60) {
  for (int k = 0; k < seconds * 10; k++) {
    if (done()) return true;
    usleep(100000);
  }
  return false;
}

struct TestBinary {
  std::string prog, flavor, bin, obj, flags;
  std::string isa;  // empty: the host's (x86-64); "aarch64", "ppc64le", "riscv64", "arm": built with a cross gcc
  std::string name() const;  // usable as a gtest parameter name
  friend void PrintTo(const TestBinary& b, std::ostream* os) { *os << b.bin; }
  bool has(const std::string& flag) const;
  // The command that runs `path` (a build of this binary, prepared or not) with `args`: itself, or
  // qemu-user for another ISA.
  std::vector<std::string> exec(const std::string& path, const std::vector<std::string>& args = {}) const;
  // A binutils program for this binary's ISA ("objdump", "nm"): the host's, or the cross one.
  std::string tool(const std::string& name) const;
  // Bytes of every instruction of this ISA where it has one length (4), else 0 (x86-64).
  unsigned insn_len() const { return isa.empty() ? 0 : has("-marm") ? 8 : 4; }  // (ARM state: `mov ip, pc` and the toggled word)
};
// The qemu-user command line prefix that runs a binary of `isa` ("aarch64", "ppc64le", "riscv64", "arm")
// here.
std::vector<std::string> qemu_for(const std::string& isa);
// `s` with every character but letters and digits made `_`: a gtest parameter name.
std::string test_name(std::string s);
// The words of `s`, split at spaces (a compiler's flags written as one string).
std::vector<std::string> words(const std::string& s);
// A build of a test program, as a gtest parameter: the ISA ("" for the host's x86-64, else as
// TestBinary::isa), the compiler and its flags (split at spaces by cc_command).
struct CrossBuild {
  std::string isa, cc, flags;
  std::string name() const { return test_name((isa.empty() ? std::string("x86_64") : isa) + "_" + flags); }
};
// `cc -O2 FLAGS... SRC -o OUT`, `flags` split at spaces.
std::vector<std::string> cc_command(const std::string& cc, const std::string& flags, const std::string& src, const std::string& out);
// The binary `bytes` with the 64 bytes of zero padding after its executable segment's file bytes made
// 0xff (bytes no header describes, which the preparer leaves alone): no room for a branch island
// there. Empty when there were none. (In island_test.cc, with the tests that use it most.)
std::string without_room_after_the_text(std::string bytes);
// `env VARS... CMD...`: `cmd` (perhaps run by qemu-user, TestBinary::exec) with environment variables.
std::vector<std::string> with_env(std::vector<std::string> vars, const std::vector<std::string>& cmd);
const std::vector<TestBinary>& manifest();
// A graph trace of testdata/calltree.c (prepared from calltree-fentry, run with `threads`, every
// function traced), recorded once per test run and kept for the whole run.
const std::string& calltree_graph_trace();
// The same program's `function` trace, recorded once per test run too.
const std::string& calltree_function_trace();

// Per function, its count in the counts file `file` that a process wrote for `binary` (`prepatch counts
// --json`); empty, with a failure recorded, where prepatch cannot read it.
std::map<std::string, long> function_counts(const std::string& binary, const std::string& file);

// `source` built by `cc` (the compiler and its flags) into DIR/p, prepared into DIR/out, and each run
// with `args` (by qemu-user for `isa`), the prepared one with every site counted into DIR/c.
struct CountedRun {
  Proc prepare, plain, counted;
};
CountedRun build_prepare_and_count(const TempDir& d, const std::string& isa, std::vector<std::string> cc, const std::string& source,
                                   const std::vector<std::string>& args);

// Names of the functions an object file defines (nm, T/t): which functions must have sites.
std::set<std::string> nm_functions(const std::string& obj, const std::string& nm = "nm");

struct Insn {
  unsigned length = 0;
  std::string mnemonic;
};
// `objdump -d -j SECTION` (a cross objdump for another ISA) as people read it, aliases on: address ->
// the instruction's bytes as printed ("f7ff efee": Thumb halfwords, "ebfff725": an ARM word),
// mnemonic and operands ("blx", "53c <__gnu_mcount_nc@plt>"), and each label's address
// ("0000053c <__gnu_mcount_nc@plt>:").
struct ObjdumpLine {
  std::string hex, mnemonic, ops;
};
struct Disassembly {
  std::map<unsigned long long, ObjdumpLine> insns;
  std::map<std::string, unsigned long long> labels;
};
Disassembly objdump_section(const std::string& objdump, const std::string& bin, const std::string& section);

// objdump -d of every executable section: instruction start address -> length and mnemonic; `objdump`
// the program to run (a cross objdump for another ISA).
std::map<unsigned long long, Insn> objdump_insns(const std::string& bin, const std::string& objdump = OBJDUMP);

}  // namespace prepatch::test
