// The ELF reader on synthetic files (ELF32 big endian: no cross compiler needed; extended numbering),
// the writer's appended segment, and packed relocations as ld writes them.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <sstream>

#include "elf/bulk.h"
#include "elf/elf.h"
#include "elf/layout.h"
#include "elf/mapped_file.h"
#include "elf/writer.h"
#include "rewriter/prepare.h"
#include "support.h"

namespace prepatch::test {
namespace {

// A minimal ELF32 big-endian file: header, one PT_LOAD and one PT_NOTE, sections: null, .text, .shstrtab.
std::vector<u8> tiny_elf32_be() {
  const elf::Layout& l = elf::layout32;
  const elf::Codec c{false, false};
  std::vector<u8> b(0x200);
  std::memcpy(b.data(), ELFMAG, 4);
  b[EI_CLASS] = ELFCLASS32;
  b[EI_DATA] = ELFDATA2MSB;
  b[EI_VERSION] = EV_CURRENT;
  auto put = [&](u64 base, elf::Field f, u64 v) { c.put(b, base + f.off, f.width, v); };
  put(0, l.ehdr.type, ET_EXEC);
  put(0, l.ehdr.machine, EM_PPC);
  put(0, l.ehdr.version, EV_CURRENT);
  put(0, l.ehdr.entry, 0x10000100);
  put(0, l.ehdr.phoff, 0x34);
  put(0, l.ehdr.ehsize, 52);
  put(0, l.ehdr.phentsize, 32);
  put(0, l.ehdr.phnum, 2);
  put(0, l.ehdr.shoff, 0x100);
  put(0, l.ehdr.shentsize, 40);
  put(0, l.ehdr.shnum, 3);
  put(0, l.ehdr.shstrndx, 2);
  put(0x34, l.phdr.type, PT_LOAD);
  put(0x34, l.phdr.flags, PF_R | PF_X);
  put(0x34, l.phdr.offset, 0);
  put(0x34, l.phdr.vaddr, 0x10000000);
  put(0x34, l.phdr.filesz, 0xf0);
  put(0x34, l.phdr.memsz, 0xf0);
  put(0x34, l.phdr.align, 0x10000);
  put(0x54, l.phdr.type, PT_NOTE);
  put(0x54, l.phdr.offset, 0x80);
  put(0x54, l.phdr.filesz, 0);
  const char names[] = "\0.text\0.shstrtab\0";
  std::memcpy(b.data() + 0xe0, names, sizeof names);
  put(0x100 + 40, l.shdr.name, 1);
  put(0x100 + 40, l.shdr.type, SHT_PROGBITS);
  put(0x100 + 40, l.shdr.flags, SHF_ALLOC | SHF_EXECINSTR);
  put(0x100 + 40, l.shdr.addr, 0x10000100);
  put(0x100 + 40, l.shdr.offset, 0x100 - 0x80);
  put(0x100 + 40, l.shdr.size_, 0x10);
  put(0x100 + 80, l.shdr.name, 7);
  put(0x100 + 80, l.shdr.type, SHT_STRTAB);
  put(0x100 + 80, l.shdr.offset, 0xe0);
  put(0x100 + 80, l.shdr.size_, sizeof names);
  return b;
}

TEST(Elf, ReadsElf32BigEndian) {
  auto b = tiny_elf32_be();
  elf::Elf e(b, "tiny");
  EXPECT_FALSE(e.codec().is64);
  EXPECT_FALSE(e.codec().little);
  EXPECT_EQ(e.header().machine, EM_PPC);
  EXPECT_EQ(e.header().entry, 0x10000100u);
  ASSERT_EQ(e.segments().size(), 2u);
  EXPECT_EQ(e.segments()[0].vaddr, 0x10000000u);
  EXPECT_EQ(e.segments()[0].align, 0x10000u);
  ASSERT_EQ(e.sections().size(), 3u);
  EXPECT_EQ(e.sections()[1].name, ".text");
  EXPECT_EQ(e.sections()[1].addr, 0x10000100u);
  ASSERT_NE(e.section(".shstrtab"), nullptr);
  EXPECT_EQ(e.vaddr_to_offset(0x10000010, 4), 0x10u);
  EXPECT_FALSE(e.vaddr_to_offset(0x100000f0, 1));
}

TEST(Elf, WriterAppendsALoadSegmentAndASection) {
  auto b = tiny_elf32_be();
  elf::Elf e(b, "tiny");
  TempDir d;
  elf::Writer w(e);
  std::vector<u8> payload = {1, 2, 3, 4, 5};
  u64 vaddr = w.add_segment("__extra", PF_R, Bytes(payload.begin(), payload.end()));
  EXPECT_EQ(vaddr % 0x10000, 0u);
  EXPECT_GE(vaddr, 0x100000f0u);
  const u8 patch[] = {0xaa, 0xbb};
  w.patch(0x10000010, patch);
  EXPECT_THROW(w.patch(0x100000ef, patch), InputError) << "past the segment's file bytes";
  w.write(d / "out", 0751);
  MappedFile f(d / "out");
  EXPECT_EQ(f.mode(), 0751u);
  elf::Elf out(f.bytes(), "out");
  EXPECT_FALSE(out.codec().little);
  ASSERT_EQ(out.segments().size(), 2u);
  const elf::Segment& seg = out.segments()[1];
  EXPECT_EQ(seg.type, static_cast<u32>(PT_LOAD));
  EXPECT_EQ(seg.vaddr, vaddr);
  EXPECT_EQ(seg.offset % 0x10000, vaddr % 0x10000);
  EXPECT_EQ(std::vector<u8>(f.bytes().begin() + seg.offset, f.bytes().begin() + seg.offset + 5), payload);
  const elf::Section* s = out.section("__extra");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->addr, vaddr);
  EXPECT_EQ(s->offset, seg.offset);
  EXPECT_NE(out.section(".text"), nullptr);
  EXPECT_EQ(f.bytes()[0x10], 0xaa);
  EXPECT_EQ(f.bytes()[0x11], 0xbb);
  EXPECT_EQ(out.bytes_at(vaddr, 5).size(), 5u);
}

// Patches are applied while the file is streamed in 1 MiB chunks: one that straddles a chunk boundary
// must land whole.
TEST(Elf, WriterPatchesAcrossChunkBoundaries) {
  auto b = tiny_elf32_be();
  const elf::Codec c{false, false};
  const u64 big = (1 << 20) + 0x1000;  // the text segment now spans the first chunk boundary
  b.resize(big);
  c.put(b, 0x34 + elf::layout32.phdr.filesz.off, 4, big);
  c.put(b, 0x34 + elf::layout32.phdr.memsz.off, 4, big);
  elf::Elf e(b, "tiny");
  elf::Writer w(e);
  w.add_segment("__extra", PF_R, {7});
  const u8 patch[] = {1, 2, 3, 4, 5, 6};
  w.patch(0x10000000 + (1 << 20) - 3, patch);
  TempDir d;
  w.write(d / "out", 0644);
  std::string out = read_file(d / "out");
  EXPECT_EQ(out.substr((1 << 20) - 3, 6), std::string("\1\2\3\4\5\6"));
  EXPECT_EQ(out.substr(0, 4), "\x7f" "ELF");
}

// Blocks of 1 MiB and more are mapped 2 MiB-aligned (so the kernel can back them with huge pages);
// the block freed last comes back for the next allocation of its size, contents and all; smaller
// blocks come from operator new. resize() does not zero.
TEST(Bulk, LargeBlocksAreHugePageAlignedAndTheLastFreedIsReused) {
  const u8* first = nullptr;
  {
    Bytes a(3 << 20);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % (2 << 20), 0u);
    a[0] = 0x5a;
    a.back() = 0xa5;
    first = a.data();
  }
  Bytes b;
  b.resize((3 << 20) + 100);  // rounds to the same 4 MiB
  EXPECT_EQ(b.data(), first);
  EXPECT_EQ(b[0], 0x5a) << "kept, and not zeroed by resize()";
  EXPECT_EQ(b[(3 << 20) - 1], 0xa5);
  Bulk<u64> c(1 << 18);  // 2 MiB: a different size, a fresh block
  EXPECT_NE(reinterpret_cast<const u8*>(c.data()), first);
  for (size_t i = 0; i < c.size(); i++) c[i] = i;
  EXPECT_EQ(c[12345], 12345u);
  Bytes small(1000, 7);
  EXPECT_EQ(small[999], 7);
}

// Inserts go into a segment's data at their offsets. One that is part of the input's mapping is copied
// from the input file (by the kernel, given the file); one from elsewhere is written as it is. The
// segment and its section cover both.
TEST(Elf, WriterPutsInsertsIntoAnAppendedSegment) {
  auto b = tiny_elf32_be();
  TempDir d;
  write_file(d / "in", std::string(b.begin(), b.end()));
  MappedFile in(d / "in");
  elf::Elf e(in.bytes(), "in");
  for (int fd : {in.fd(), -1}) {
    SCOPED_TRACE(fd < 0 ? "from the mapping" : "by the kernel");
    elf::Writer w(e);
    const u8 other[] = {0xee, 0xef};
    const u64 vaddr = w.add_segment("__extra", PF_R, Bytes{1, 2, 3, 4}, {},
                                    {{1, in.bytes().subspan(0x10, 6)}, {3, std::span<const u8>(other)}});
    w.write(d / "out", 0644, fd);
    MappedFile f(d / "out");
    elf::Elf out(f.bytes(), "out");
    const elf::Section* s = out.section("__extra");
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->addr, vaddr);
    ASSERT_EQ(s->size, 12u);
    std::vector<u8> want = {1};
    want.insert(want.end(), b.begin() + 0x10, b.begin() + 0x16);
    want.insert(want.end(), {2, 3, 0xee, 0xef, 4});
    auto got = out.bytes_at(vaddr, 12);
    EXPECT_EQ(std::vector<u8>(got.begin(), got.end()), want);
  }
}

// A real program over 4 MiB (6 MiB of .rodata), where the writer starts the kernel's copy of the input
// on a second thread before it knows the edits (Writer::begin). Built once for the tests below.
const std::string& big_program() {
  static const std::string path = [] {
    static TempDir d;
    write_file(d / "big.c",
               "#include <stdio.h>\n"
               "static const unsigned char big[6 << 20] = {1, 2, 3};\n"
               "__attribute__((noinline)) int f(int x) { return x + big[x % 3]; }\n"
               "int main(int argc, char** argv) { printf(\"%d\\n\", f(argc)); return 0; }\n");
    Proc r = run({"gcc", "-O1", "-pg", "-mfentry", d / "big.c", "-o", d / "big"});
    EXPECT_EQ(r.status, 0) << r.err;
    return d / "big";
  }();
  return path;
}

// The output with the early copy equals the one written without it (source_fd -1: through memory),
// byte for byte: where .strtab ends the input (its copy left out, so the early copy had written input
// bytes past the output's copy of the input, which must not survive in the padding) and where a payload
// follows it (the input copied whole).
TEST(Writer, EarlyCopyWritesTheSameBytes) {
  TempDir d;
  const std::string payload = "an appended payload";
  write_file(d / "payload", read_file(big_program()) + payload, 0755);
  for (const std::string& in_path : {big_program(), d / "payload"}) {
    SCOPED_TRACE(in_path);
    MappedFile in(in_path);
    ASSERT_GT(in.bytes().size(), 4u << 20);
    elf::Elf e(in.bytes(), in_path);
    ASSERT_EQ(prepare(e, d / "early", 0755, in.fd()).outcome, PrepareOutcome::written);
    ASSERT_EQ(prepare(e, d / "plain", 0755, -1).outcome, PrepareOutcome::written);
    const std::string early = read_file(d / "early");
    EXPECT_TRUE(early == read_file(d / "plain")) << "the outputs differ";
    MappedFile out(d / "early");
    elf::Elf o(out.bytes(), "early");
    EXPECT_EQ(o.section(".strtab")->offset == e.section(".strtab")->offset, in_path != big_program()) << "the payload keeps the input whole";
    TempDir cwd;  // (where an unprepared -pg input writes its gmon.out)
    Proc a = run({in_path}, cwd.path()), b = run({d / "early"}, cwd.path());
    EXPECT_EQ(b.status, 0) << b.err;
    EXPECT_EQ(a.out, b.out);
    // With one CPU there is no second thread (elf/copier.h): the same bytes again.
    Proc one = run({"taskset", "-c", "0", PREPATCH_BIN, "-q", in_path, "-o", d / "one-cpu"});
    ASSERT_EQ(one.status, 0) << one.err;
    EXPECT_TRUE(read_file(d / "one-cpu") == early) << "the outputs differ";
  }
  EXPECT_EQ(list_dir(d.path()).size(), 4u) << "a temporary file was left behind";
}

// Writer::begin is a head start, not a promise: told the wrong sections (here none, while the segment
// then carries .strtab), or written to another path, or never written, the writer still writes the
// same bytes, to the right place, and leaves no temporary file behind.
TEST(Writer, EarlyCopyWithWrongHintsOrNoWrite) {
  TempDir d;
  MappedFile in(big_program());
  elf::Elf e(in.bytes(), "big");
  const elf::Section* strtab = e.section(".strtab");
  ASSERT_NE(strtab, nullptr);
  const std::span<const u8> names = in.bytes().subspan(strtab->offset, strtab->size);
  auto build = [&](elf::Writer& w) {
    const u8 patch[] = {0x90};
    w.patch(e.header().entry, patch);
    w.add_segment({}, PF_R, Bytes{1, 2, 3, 4}, {{"__names", 0, 4 + names.size(), 0}}, {{4, names, strtab->index}});
  };
  {
    elf::Writer w(e);
    build(w);
    w.write(d / "plain", 0644);
  }
  const std::string want = read_file(d / "plain");
  ASSERT_LT(want.size(), in.bytes().size() + 4096) << ".strtab is held once";
  {
    elf::Writer w(e);
    w.begin(d / "no-hint", in.fd());
    build(w);
    w.write(d / "no-hint", 0644, in.fd());
  }
  EXPECT_TRUE(read_file(d / "no-hint") == want);
  {
    elf::Writer w(e);
    w.begin(d / "begun", in.fd(), std::array<u32, 1>{strtab->index});
    build(w);
    w.write(d / "elsewhere", 0644, in.fd());
  }
  EXPECT_TRUE(read_file(d / "elsewhere") == want);
  {
    elf::Writer w(e);
    w.begin(d / "never", in.fd(), std::array<u32, 1>{strtab->index});
  }
  EXPECT_FALSE(exists(d / "never"));
  EXPECT_FALSE(exists(d / "begun"));
  EXPECT_EQ(list_dir(d.path()).size(), 3u) << "a temporary file was left behind";
}

TEST(Elf, WriterRefusesWhenNoSpareProgramHeader) {
  auto b = tiny_elf32_be();
  elf::Elf e(b, "tiny");
  elf::Writer w(e);
  w.add_segment("__one", PF_R, {1});
  EXPECT_THROW(w.add_segment("__two", PF_R, {2}), InputError);
}

TEST(Elf, ExtendedSectionNumbering) {
  auto b = tiny_elf32_be();
  const elf::Layout& l = elf::layout32;
  const elf::Codec c{false, false};
  c.put(b, l.ehdr.shnum.off, 2, 0);                 // e_shnum = 0: count is in section 0's sh_size
  c.put(b, 0x100 + l.shdr.size_.off, 4, 3);
  c.put(b, l.ehdr.shstrndx.off, 2, SHN_XINDEX);     // and the name table index in its sh_link
  c.put(b, 0x100 + l.shdr.link.off, 4, 2);
  elf::Elf e(b, "tiny");
  EXPECT_EQ(e.sections().size(), 3u);
  EXPECT_EQ(e.sections()[1].name, ".text");
}

TEST(Elf, ErrorsNameFileAndOffset) {
  auto b = tiny_elf32_be();
  const elf::Codec c{false, false};
  c.put(b, elf::layout32.ehdr.shoff.off, 4, 0x7fffff00);
  try {
    elf::Elf e(b, "tiny.elf");
    FAIL() << "expected InputError";
  } catch (const InputError& err) {
    EXPECT_EQ(err.file(), "tiny.elf");
    EXPECT_EQ(err.offset(), elf::layout32.ehdr.shoff.off);
    EXPECT_NE(std::string(err.what()).find("tiny.elf: offset 0x20: section header 0"), std::string::npos) << err.what();
  }
}

// Packed relative relocations (SHT_RELR, ld -z pack-relative-relocs): every address read as readelf
// lists them, from a library whose 150 consecutive pointers ld packs into bitmaps (an address entry,
// then one bitmap per 63 words) and two more after a gap.
TEST(Elf, ReadsPackedRelativeRelocationsAsReadelfDoes) {
  TempDir d;
  std::string src, table;
  for (int i = 0; i < 150; i++) src += "static int f" + std::to_string(i) + "(void) { return " + std::to_string(i) + "; }\n", table += "f" + std::to_string(i) + ", ";
  write_file(d / "tab.c", src + "int (*table[])(void) = {" + table + "};\nint (*other[])(void) = {f3, 0, 0, f9};\n");
  Proc c = run({"gcc", "-O2", "-fPIC", "-shared", "-Wl,-z,pack-relative-relocs", d / "tab.c", "-o", d / "tab.so"});
  ASSERT_EQ(c.status, 0) << c.err;
  Proc listed = run({"readelf", "-rW", d / "tab.so"});
  ASSERT_EQ(listed.status, 0) << listed.err;
  const size_t at = listed.out.find("Relocation section '.relr.dyn'");
  ASSERT_NE(at, std::string::npos) << listed.out;
  std::vector<u64> expected;
  std::istringstream lines(listed.out.substr(at));
  std::string line;
  std::getline(lines, line), std::getline(lines, line);  // the section's line, then "N offsets"
  while (std::getline(lines, line) && !line.empty() && std::isxdigit(static_cast<unsigned char>(line[0]))) expected.push_back(std::stoull(line, nullptr, 16));
  ASSERT_GE(expected.size(), 152u) << listed.out;
  MappedFile f(d / "tab.so");
  elf::Elf e(f.bytes(), "tab.so");
  const elf::Section* relr = e.section(".relr.dyn");
  ASSERT_NE(relr, nullptr);
  EXPECT_LT(relr->size / 8, expected.size() / 8) << "expected bitmap entries";
  std::vector<u64> read;
  e.for_each_relr(*relr, [&](u64 addr, u64 entry) {
    read.push_back(addr);
    EXPECT_TRUE(entry >= relr->offset && entry < relr->offset + relr->size && entry % 8 == relr->offset % 8) << entry;
  });
  EXPECT_EQ(read, expected);
}

}  // namespace
}  // namespace prepatch::test
