// Bad input never crashes prepatch, never leaves an output file, and is reported in one line naming the
// file and the offset. One test per case from the issue, plus an in-process mutation sweep under ASan.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <random>

#include "elf/elf.h"
#include "elf/layout.h"
#include "rewriter/prepare.h"
#include "support.h"

namespace prepatch::test {
namespace {

const std::string source = std::string(TESTDATA_DIR) + "/basic-gcc-fentry";

void put(std::string& b, size_t off, unsigned width, unsigned long long v) {
  for (unsigned i = 0; i < width; i++) b[off + i] = static_cast<char>(v >> (8 * i));
}
unsigned long long get(const std::string& b, size_t off, unsigned width) {
  unsigned long long v = 0;
  for (unsigned i = 0; i < width; i++) v |= static_cast<unsigned long long>(static_cast<unsigned char>(b[off + i])) << (8 * i);
  return v;
}

// Runs `prepatch IN -o OUT` on `bytes` and checks: the exit code, one stderr line naming the file and
// containing every `needle`, and no output (nor temporary) file left behind.
void expect_refused(const std::string& bytes, int code, std::vector<std::string> needles) {
  TempDir d;
  std::string in = d / "input.elf", out = d / "out.elf";
  write_file(in, bytes, 0755);
  Proc r = prepatch({in, "-o", out});
  EXPECT_EQ(r.status, code) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(in), std::string::npos) << r.err;
  for (const std::string& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "missing '" << n << "' in: " << r.err;
  EXPECT_FALSE(exists(out));
  EXPECT_EQ(list_dir(d.path()).size(), 1u) << "a temporary file was left behind";
  EXPECT_EQ(read_file(in), bytes) << "the input was modified";
}

TEST(BadInput, NotElf) { expect_refused("#!/bin/sh\necho hello\n", 4, {"offset 0x0", "ELF magic"}); }

TEST(BadInput, EmptyFile) { expect_refused("", 4, {"offset 0x0", "empty file"}); }

TEST(BadInput, CutInsideTheMagic) { expect_refused("\x7f" "EL", 4, {"offset 0x3", "its first 3 bytes, then the file's end (truncated?)"}); }

TEST(BadInput, TruncatedAtEveryHeader) {
  std::string b = read_file(source);
  const u64 phoff = get(b, 32, 8), shoff = get(b, 40, 8), phnum = get(b, 56, 2), shnum = get(b, 60, 2);
  struct Cut {
    u64 size;
    const char* needle;
  } cuts[] = {
      {3, "ELF magic"},
      {10, "ELF identification"},
      {40, "ELF header"},
      {63, "ELF header"},
      {phoff + 1, "program header table"},
      {phoff + phnum * 56 - 1, "program header table"},
      {0x1100, "segment"},  // inside the text segment
      {shoff + 10, "section header"},
      {shoff + shnum * 64 - 1, "section header table"},
  };
  for (const Cut& c : cuts) {
    SCOPED_TRACE(c.size);
    expect_refused(b.substr(0, c.size), 4, {c.needle});
  }
}

TEST(BadInput, CorruptOffsetsSizesAndCounts) {
  const std::string good = read_file(source);
  const u64 shoff = get(good, 40, 8);
  const u64 text = [&] {  // index of .text's header
    for (u64 i = 1; i < get(good, 60, 2); i++)
      if (get(good, shoff + i * 64 + 4, 4) == SHT_PROGBITS && (get(good, shoff + i * 64 + 8, 8) & SHF_EXECINSTR)) return i;
    return u64{0};
  }();
  ASSERT_NE(text, 0u);
  const u64 symtab = [&] {
    for (u64 i = 1; i < get(good, 60, 2); i++)
      if (get(good, shoff + i * 64 + 4, 4) == SHT_SYMTAB) return i;
    return u64{0};
  }();
  ASSERT_NE(symtab, 0u);
  struct Corruption {
    u64 off;
    unsigned width;
    unsigned long long value;
    std::string needle;
  } cases[] = {
      {EI_CLASS, 1, 7, "offset 0x4: expected ELFCLASS32 or ELFCLASS64"},
      {EI_DATA, 1, 9, "offset 0x5: expected ELFDATA2LSB"},
      {32, 8, 0xffffffffull, "offset 0x20: program header table"},
      {40, 8, good.size(), "offset 0x28: section header"},
      {54, 2, 12, "offset 0x36: expected e_phentsize 56"},
      {60, 2, 0xfff0, "offset 0x3c: section count"},
      {62, 2, 0xfff0, "offset 0x3e: expected e_shstrndx"},
      {shoff + text * 64 + 24, 8, 1ull << 40, "section " + std::to_string(text) + " contents"},
      {shoff + text * 64, 4, 0xffffff, "name offset"},
      {shoff + symtab * 64 + 40, 4, 999, "sh_link 999 is not a section"},
      {shoff + symtab * 64 + 56, 8, 7, "expected sh_entsize 24"},
  };
  for (const Corruption& c : cases) {
    SCOPED_TRACE(c.needle);
    std::string b = good;
    put(b, c.off, c.width, c.value);
    expect_refused(b, 4, {c.needle});
  }
}

TEST(BadInput, UnsupportedIsa) {
  std::string b = read_file(source);
  put(b, 18, 2, EM_S390);
  expect_refused(b, 4, {"offset 0x12", "EM_S390 not supported yet"});

}

TEST(BadInput, NoSites) { expect_refused(read_file(std::string(TESTDATA_DIR) + "/plain"), 3, {"no sites", "-pg"}); }

// Stripped, and without the unwind table whose FDEs would lead to its functions (tests/stripped_test.cc).
TEST(BadInput, StrippedWithNoSiteSection) {
  TempDir d;
  Proc s = run({"strip", "-R", ".eh_frame", "-R", ".eh_frame_hdr", "-o", d / "stripped", source});
  ASSERT_EQ(s.status, 0) << s.err;
  expect_refused(read_file(d / "stripped"), 3, {"no function symbols", "stripped", "-mrecord-mcount"});
}

TEST(BadInput, DirectoryAndMissingInput) {
  TempDir d;
  Proc r = prepatch({d.path(), "-o", d / "out"});
  EXPECT_EQ(r.status, 5);
  EXPECT_NE(r.err.find(d.path() + ": not a regular file (it is a directory)"), std::string::npos) << r.err;
  r = prepatch({d / "missing", "-o", d / "out"});
  EXPECT_EQ(r.status, 5);
  EXPECT_NE(r.err.find("missing: cannot open for reading: No such file or directory"), std::string::npos) << r.err;
  EXPECT_TRUE(list_dir(d.path()).empty());
}

TEST(BadInput, UnwritableOutput) {
  TempDir d;
  Proc r = prepatch({source, "-o", d / "no/such/dir/out"});
  EXPECT_EQ(r.status, 5);
  EXPECT_NE(r.err.find("cannot create a temporary file in " + d.path() + "/no/such/dir"), std::string::npos) << r.err;
  // The target is a directory: refused before anything is written.
  ASSERT_EQ(run({"mkdir", d / "target"}).status, 0);
  r = prepatch({source, "-o", d / "target"});
  EXPECT_EQ(r.status, 5);
  EXPECT_NE(r.err.find(d / "target" + ": is a directory, not a regular file"), std::string::npos) << r.err;
  EXPECT_EQ(list_dir(d.path()), std::vector<std::string>{"target"});
  EXPECT_TRUE(list_dir(d / "target").empty());
}

// The output is renamed into place, which would replace whatever is at its name: a device (root's
// `-o /dev/null` turned /dev/null into a regular file), a FIFO, or a symbolic link to one of them is
// refused and left as it was, by the preparer and by `export`; a symbolic link to a regular file is
// replaced, as SECURITY.md says. Output that cannot all reach standard output (/dev/full) is an error.
TEST(BadInput, OutputsThatAreNotRegularFilesAreRefused) {
  TempDir d;
  ASSERT_EQ(run({"mkfifo", d / "fifo"}).status, 0);
  ASSERT_EQ(symlink("/dev/null", (d / "null").c_str()), 0);
  write_file(d / "file", "kept");
  ASSERT_EQ(symlink((d / "file").c_str(), (d / "to-file").c_str()), 0);
  for (const auto& [out, said] : std::vector<std::pair<std::string, std::string>>{
           {"/dev/null", "/dev/null: is a character device, not a regular file"},
           {d / "fifo", d / "fifo: is a FIFO, not a regular file"},
           {d / "null", d / "null: is a symbolic link to a character device, not a regular file"}}) {
    SCOPED_TRACE(out);
    Proc r = prepatch({source, "-o", out});
    EXPECT_EQ(r.status, 5);
    EXPECT_NE(r.err.find(said), std::string::npos) << r.err;
    Proc e = prepatch({"export", calltree_graph_trace(), "-o", out});
    EXPECT_EQ(e.status, 5);
    EXPECT_NE(e.err.find(said), std::string::npos) << e.err;
  }
  struct stat st {};
  EXPECT_TRUE(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode));
  EXPECT_TRUE(lstat((d / "fifo").c_str(), &st) == 0 && S_ISFIFO(st.st_mode));
  EXPECT_TRUE(lstat((d / "null").c_str(), &st) == 0 && S_ISLNK(st.st_mode));
  Proc r = prepatch({source, "-o", d / "to-file"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(lstat((d / "to-file").c_str(), &st) == 0 && S_ISREG(st.st_mode));
  EXPECT_EQ(read_file(d / "file"), "kept");
  std::vector<std::string> left = list_dir(d.path());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"fifo", "file", "null", "to-file"}));  // and no temporary file
  Proc full = run({"sh", "-c", std::string(PREPATCH_BIN) + " sites " + source + " > /dev/full"});
  EXPECT_EQ(full.status, 5);
  EXPECT_NE(full.err.find("standard output: cannot write: No space left on device"), std::string::npos) << full.err;
}

// A run interrupted (SIGINT here, delivered by strace as the output's mode is set, just before the
// rename) leaves no temporary file: the handler removes it, then the signal ends prepatch as it would.
TEST(BadInput, AnInterruptedRunLeavesNoTemporaryFile) {
  TempDir d;
  Proc r = run({"strace", "-f", "-o", "/dev/null", "-e", "inject=fchmod:signal=SIGINT", PREPATCH_BIN, source, "-o", d / "out"});
  EXPECT_EQ(r.status, 128 + SIGINT) << r.err;
  EXPECT_TRUE(list_dir(d.path()).empty());
}

// Permission errors need an unprivileged user: root reads and writes everything. As root the test
// drops to `nobody` with setpriv (util-linux) for the prepatch process.
TEST(BadInput, PermissionDenied) {
  TempDir d;
  ASSERT_EQ(run({"chmod", "755", d.path()}).status, 0);
  std::vector<std::string> as_user;
  if (geteuid() == 0) as_user = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  auto prepatch_as = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = as_user;
    argv.push_back(PREPATCH_BIN);
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
  };
  write_file(d / "secret", read_file(source), 0000);
  Proc r = prepatch_as({d / "secret", "-o", "/tmp/prepatch-never-written"});
  EXPECT_EQ(r.status, 5) << r.err;
  EXPECT_NE(r.err.find("secret: cannot open for reading: Permission denied"), std::string::npos) << r.err;
  EXPECT_FALSE(exists("/tmp/prepatch-never-written"));

  ASSERT_EQ(run({"mkdir", "-m", "555", d / "ro"}).status, 0);
  write_file(d / "in", read_file(source), 0755);
  r = prepatch_as({d / "in", "-o", d / "ro/out"});
  EXPECT_EQ(r.status, 5) << r.err;
  EXPECT_NE(r.err.find("cannot create a temporary file"), std::string::npos) << r.err;
  EXPECT_TRUE(list_dir(d / "ro").empty());
}

// In process, so ASan and UBSan see every access: random byte corruptions and truncations of a real
// binary must end in a success or an InputError, never in a crash or another exception.
TEST(BadInput, MutationSweepNeverCrashes) {
  const std::string good = read_file(std::string(TESTDATA_DIR) + "/basic-gcc-fentry-record");
  std::mt19937 rng(20261122);
  TempDir d;
  int refused = 0, prepared = 0;
  for (int i = 0; i < 600; i++) {
    std::string b = good;
    if (i % 3 == 2) {
      b.resize(std::uniform_int_distribution<size_t>(0, good.size() - 1)(rng));
    } else {
      int flips = 1 + i % 8;
      for (int k = 0; k < flips; k++) {
        // Mostly headers and tables (the first 4 KiB and the section headers), sometimes anywhere.
        size_t pos = (k % 2) ? std::uniform_int_distribution<size_t>(0, 4095)(rng)
                             : std::uniform_int_distribution<size_t>(0, good.size() - 1)(rng);
        b[pos] = static_cast<char>(rng());
      }
    }
    std::span<const u8> bytes(reinterpret_cast<const u8*>(b.data()), b.size());
    try {
      elf::Elf e(bytes, "mutant");
      (void)list_sites(e);
      PrepareResult r = prepare(e, d / "out", 0644);
      if (r.outcome == PrepareOutcome::written) prepared++;
    } catch (const InputError&) {
      refused++;
    }
  }
  EXPECT_GT(refused, 50);
  EXPECT_GT(prepared, 50);
}

}  // namespace
}  // namespace prepatch::test
