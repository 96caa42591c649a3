#include "support.h"

#include <dirent.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace prepatch::test {

int spawn(const std::vector<std::string>& argv, const std::string& cwd, int in, int out, int err) {
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    if (in >= 0) dup2(in, 0);
    if (out >= 0) dup2(out, 1);
    if (err >= 0) dup2(err, 2);
    if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(126);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  return pid;
}

int exit_code(int wait_status) { return WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status); }

Proc run(const std::vector<std::string>& argv, const std::string& cwd) {
  char out_path[] = "/tmp/prepatch-run-out-XXXXXX";
  char err_path[] = "/tmp/prepatch-run-err-XXXXXX";
  int out = mkstemp(out_path), err = mkstemp(err_path), devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (out < 0 || err < 0 || devnull < 0) throw std::runtime_error("mkstemp or opening /dev/null failed");
  const pid_t pid = spawn(argv, cwd, devnull, out, err);
  close(devnull);
  int st = 0;
  waitpid(pid, &st, 0);
  Proc r;
  r.status = exit_code(st);
  close(out);
  close(err);
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  unlink(out_path);
  unlink(err_path);
  return r;
}

Proc prepatch(const std::vector<std::string>& args) {
  std::vector<std::string> argv{PREPATCH_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

void write_file(const std::string& path, const std::string& data, unsigned mode) {
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << data;
  }
  chmod(path.c_str(), mode);
}

bool exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

std::vector<std::vector<std::string>> objdump_fields(const std::string& out) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f;
    std::istringstream fs(line);
    for (std::string part; std::getline(fs, part, '\t');) f.push_back(part);
    if (f.size() >= 3 && !f[0].empty() && f[0].back() == ':') rows.push_back(std::move(f));
  }
  return rows;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) names.push_back(e->d_name);
    closedir(d);
  }
  return names;
}

Background::Background(const std::vector<std::string>& argv, const std::string& cwd, bool ready, int err) {
  int in[2], out[2];  // close-on-exec: the child keeps only its stdin and stdout, so closing ours ends its input
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  pid_ = spawn(argv, cwd, in[0], out[1], err);
  close(in[0]), close(out[1]);
  stdin_ = in[1];
  out_ = fdopen(out[0], "r");
  if (!ready) return;
  char line[128];
  if (fgets(line, sizeof line, out_)) ready_ = line;
  std::smatch m;
  if (std::regex_search(ready_, m, std::regex("ready (\\d+)"))) target_ = std::stoi(m[1]);
}

Background::~Background() {
  if (stdin_ >= 0) finish();
}

bool Background::alive() const { return ::kill(pid_, 0) == 0 && waitpid(pid_, nullptr, WNOHANG) == 0; }

void Background::say(const std::string& line) { (void)!write(stdin_, line.data(), line.size()); }

std::string Background::line() {
  char b[4096];
  return fgets(b, sizeof b, out_) ? std::string(b) : std::string();
}

std::pair<int, std::string> Background::finish() {
  close(stdin_);
  stdin_ = -1;
  std::string rest;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, out_)) > 0;) rest.append(buf, n);
  fclose(out_);
  int st = 0;
  waitpid(pid_, &st, 0);
  return {exit_code(st), rest};
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/prepatch-test-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() { run({"rm", "-rf", path_}); }

std::string test_name(std::string s) {
  for (char& c : s)
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> w;
  std::istringstream in(s);
  for (std::string x; in >> x;) w.push_back(x);
  return w;
}

std::vector<std::string> cc_command(const std::string& cc, const std::string& flags, const std::string& src, const std::string& out) {
  std::vector<std::string> c = {cc, "-O2"};
  for (const std::string& w : words(flags)) c.push_back(w);
  c.insert(c.end(), {src, "-o", out});
  return c;
}

std::string TestBinary::name() const { return test_name(prog + "_" + flavor); }

std::vector<std::string> qemu_for(const std::string& isa) {
  if (isa == "aarch64") return {"qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"};
  if (isa == "ppc64le") return {"qemu-ppc64le", "-L", "/usr/powerpc64le-linux-gnu"};
  if (isa == "riscv64") return {"qemu-riscv64", "-L", "/usr/riscv64-linux-gnu"};
  if (isa == "arm") return {"qemu-arm", "-L", "/usr/arm-linux-gnueabihf"};
  return {};
}

std::vector<std::string> with_env(std::vector<std::string> vars, const std::vector<std::string>& cmd) {
  vars.insert(vars.begin(), "env");
  vars.insert(vars.end(), cmd.begin(), cmd.end());
  return vars;
}

std::vector<std::string> TestBinary::exec(const std::string& path, const std::vector<std::string>& args) const {
  std::vector<std::string> v = qemu_for(isa);
  v.push_back(path);
  v.insert(v.end(), args.begin(), args.end());
  return v;
}

std::string TestBinary::tool(const std::string& name) const {
  if (isa == "aarch64") return "aarch64-linux-gnu-" + name;
  if (isa == "ppc64le") return "powerpc64le-linux-gnu-" + name;
  if (isa == "riscv64") return "riscv64-linux-gnu-" + name;
  if (isa == "arm") return "arm-linux-gnueabihf-" + name;
  return name == "objdump" ? OBJDUMP : name;
}

bool TestBinary::has(const std::string& flag) const {
  std::istringstream in(flags);
  std::string w;
  while (in >> w)
    if (w == flag || w.rfind(flag + "=", 0) == 0) return true;
  return false;
}

Tmux::Tmux(const std::string& command, int columns, int rows) : socket_("prepatch-test-" + std::to_string(getpid())) {
  Proc t = run({"tmux", "-L", socket_, "new-session", "-d", "-s", "t", "-x", std::to_string(columns), "-y", std::to_string(rows), command});
  EXPECT_EQ(t.status, 0) << "tmux (Debian's package, installed by scripts/install-deps.sh): " << t.err;
}
Tmux::~Tmux() { run({"tmux", "-L", socket_, "kill-server"}); }
std::string Tmux::screen() { return run({"tmux", "-L", socket_, "capture-pane", "-p", "-t", "t"}).out; }
void Tmux::keys(const std::string& k) { run({"tmux", "-L", socket_, "send-keys", "-t", "t", k}); }
bool Tmux::running() { return run({"tmux", "-L", socket_, "has-session", "-t", "t"}).status == 0; }

namespace {
// testdata/calltree.c prepared and run with `threads` under `tracer`, every function traced; kept for the whole run
// (the test process's: ctest runs each test in one of its own), then removed.
std::string calltree_trace(const char* tracer) {
  static TempDir d;
  const std::string bin = d / "calltree", file = d / (std::string(tracer) + ".trace");
  if (!exists(bin)) {
    Proc p = prepatch({std::string(TESTDATA_DIR) + "/calltree-fentry", "-o", bin});
    EXPECT_EQ(p.status, 0) << p.err;
  }
  Proc r = run({"env", "PREPATCH_TRACE=*", std::string("PREPATCH_TRACER=") + tracer, "PREPATCH_OUTPUT=" + file, bin, "threads"}, d.path());
  EXPECT_EQ(r.status, 0) << r.err;
  return file;
}
}  // namespace

const std::string& calltree_graph_trace() {
  static const std::string file = calltree_trace("graph");
  return file;
}
const std::string& calltree_function_trace() {
  static const std::string file = calltree_trace("function");
  return file;
}

const std::vector<TestBinary>& manifest() {
  static const std::vector<TestBinary> m = [] {
    std::vector<TestBinary> v;
    std::ifstream f(std::string(TESTDATA_DIR) + "/manifest.txt");
    std::string line;
    while (std::getline(f, line)) {
      std::vector<std::string> p;
      std::string cur;
      for (char c : line) {
        if (c == '|') {
          p.push_back(cur);
          cur.clear();
        } else {
          cur += c;
        }
      }
      p.push_back(cur);
      if (p.size() == 6) v.push_back({p[0], p[1], p[2], p[3], p[4], p[5]});
    }
    return v;
  }();
  return m;
}

std::set<std::string> nm_functions(const std::string& obj, const std::string& nm) {
  Proc r = run({nm, "--defined-only", obj});
  std::set<std::string> names;
  std::istringstream in(r.out);
  std::string addr, type, name;
  while (in >> addr >> type >> name)
    if (type == "T" || type == "t") names.insert(name);
  return names;
}

Disassembly objdump_section(const std::string& objdump, const std::string& bin, const std::string& section) {
  Proc p = run({objdump, "-d", "-j", section, bin});
  if (p.status != 0) throw std::runtime_error(objdump + " -d -j " + section + " " + bin + ": " + p.err);
  Disassembly out;
  std::istringstream in(p.out);
  std::string line;
  while (std::getline(in, line)) {
    if (const size_t lt = line.find(" <"); lt != std::string::npos && line.size() > 2 && line.substr(line.size() - 2) == ">:") {
      out.labels[line.substr(lt + 2, line.size() - lt - 4)] = std::stoull(line.substr(0, lt), nullptr, 16);
      continue;
    }
    const size_t colon = line.find(":\t");
    if (colon == std::string::npos || line.find_first_not_of(" 0123456789abcdef") != colon) continue;
    std::vector<std::string> f;
    std::istringstream fs(line.substr(colon + 2));
    std::string part;
    while (std::getline(fs, part, '\t')) f.push_back(part);
    if (f.size() < 2) continue;
    out.insns[std::stoull(line.substr(0, colon), nullptr, 16)] = {f[0].substr(0, f[0].find_last_not_of(' ') + 1), f[1], f.size() > 2 ? f[2] : ""};
  }
  return out;
}

std::map<unsigned long long, Insn> objdump_insns(const std::string& bin, const std::string& objdump) {
  Proc r = run({objdump, "-d", "-w", "--insn-width=16", bin});
  std::map<unsigned long long, Insn> m;
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    // "  4011d0:\t0f 1f 44 00 00 \tnopl   0x0(%rax,%rax,1)"
    auto colon = line.find(":\t");
    if (colon == std::string::npos) continue;
    char* end = nullptr;
    unsigned long long addr = std::strtoull(line.c_str(), &end, 16);
    if (end != line.c_str() + colon) continue;
    auto tab = line.find('\t', colon + 2);
    std::string bytes = line.substr(colon + 2, tab == std::string::npos ? std::string::npos : tab - colon - 2);
    Insn insn;
    std::istringstream bs(bytes);
    std::string b;
    while (bs >> b) insn.length += static_cast<unsigned>(b.size() / 2);  // AArch64's objdump prints one 8-digit word
    if (tab != std::string::npos) {
      std::istringstream ms(line.substr(tab + 1));
      ms >> insn.mnemonic;
      if (insn.mnemonic == "data16" || insn.mnemonic == "cs" || insn.mnemonic == "addr32") {
        std::string next;
        if (ms >> next) insn.mnemonic += " " + next;
      }
    }
    m[addr] = insn;
  }
  return m;
}

std::map<std::string, long> function_counts(const std::string& binary, const std::string& file) {
  Proc c = prepatch({"counts", "--json", binary, file});
  EXPECT_EQ(c.status, 0) << c.err;
  std::map<std::string, long> out;
  if (c.status == 0)
    for (const auto& row : nlohmann::json::parse(c.out)) out[row["function"]] = row["count"];
  return out;
}

CountedRun build_prepare_and_count(const TempDir& d, const std::string& isa, std::vector<std::string> cc, const std::string& source,
                                   const std::vector<std::string>& args) {
  write_file(d / "p.c", source);
  cc.insert(cc.end(), {d / "p.c", "-o", d / "p"});
  Proc built = run(cc);
  EXPECT_EQ(built.status, 0) << built.err;
  CountedRun r{prepatch({d / "p", "-o", d / "out"}), {}, {}};
  const TestBinary b{.isa = isa};
  r.plain = run(b.exec(d / "p", args), d.path());  // (in d: a -pg program writes gmon.out there)
  r.counted = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, b.exec(d / "out", args)), d.path());
  return r;
}

}  // namespace prepatch::test
