// The shim's logic (shim/core.h) on the host: the table as the trap handler reads it, globs, the
// control grammar, the batch executor against a recording memory, and the kernel structures the
// freestanding shim declares itself (checked against glibc's).
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <link.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "arch/x86_64.h"
#include "rewriter/table.h"
#include "shim/core.h"
#include "shim/settings.h"
#include "shim/snapshot.h"
#include "shim/dynlink.h"
#include "shim/sys.h"

namespace prepatch {
namespace {

std::vector<u8> sample_table() {
  Table t;
  t.machine = 62;
  t.strings = {'\0', 'm', 'a', 'i', 'n', '\0', 'f', 'o', 'o', '\0'};
  t.entries = {{0x1000, 1, SiteKind::fentry, 5, arch::CallForm::call_rel32, 0},
               {0x1010, 6, SiteKind::mcount, 6, arch::CallForm::addr32_call_rel32, 0},
               {0x2000, 0, SiteKind::patchable, 5, arch::CallForm::call_rel32, 0}};
  elf::Codec c{true, true};
  return encode_table(t, c);
}

TEST(ShimCore, TableLookupIsABinarySearchOverTheSortedEntries) {
  auto b = sample_table();
  shim::TableView t;
  ASSERT_EQ(t.check(b.data(), b.size(), 62), nullptr);
  EXPECT_EQ(t.count(), 3u);
  EXPECT_STREQ(t.name(0), "main");
  EXPECT_STREQ(t.name(1), "foo");
  EXPECT_STREQ(t.name(2), "");
  EXPECT_EQ(t.find_start(0x1000), 0u);
  EXPECT_EQ(t.find_start(0x1010), 1u);
  EXPECT_EQ(t.find_start(0x2000), 2u);
  EXPECT_EQ(t.find_start(0x1001), 3u);  // inside a site: not a start
  EXPECT_EQ(t.find_start(0xfff), 3u);
  EXPECT_EQ(t.find_containing(0x1004), 0u);
  EXPECT_EQ(t.find_containing(0x1005), 3u);
  EXPECT_EQ(t.find_containing(0x1015), 1u);
  EXPECT_EQ(t.find_containing(0x2004), 2u);
  EXPECT_EQ(t.find_containing(0x3000), 3u);
  EXPECT_EQ(t.entry(1).kind, 2);
  EXPECT_EQ(t.entry(1).length, 6);
}

TEST(ShimCore, TableCheckRefusesWhatTheHandlerCouldNotTrust) {
  auto good = sample_table();
  shim::TableView t;
  auto bad = good;
  bad[0] = 'X';
  EXPECT_STREQ(t.check(bad.data(), bad.size(), 62), "the site table has no PREPATCH magic");
  EXPECT_STREQ(t.check(good.data(), good.size(), 183), "the site table is for another machine");
  EXPECT_NE(t.check(good.data(), 40, 62), nullptr);
  bad = good;
  bad[64 + 16] = 0x00, bad[64 + 17] = 0x0f;  // entry 1 at 0xf00: below entry 0
  EXPECT_STREQ(t.check(bad.data(), bad.size(), 62), "the site table is not sorted by address");
  bad = good;
  bad[64 + 12] = 9;  // kind
  EXPECT_STREQ(t.check(bad.data(), bad.size(), 62), "a site table entry is malformed");
  bad = good;
  bad[16] = 0xff;  // count
  EXPECT_STREQ(t.check(bad.data(), bad.size(), 62), "the site table's count runs past its end");
  bad = good;
  bad.back() = 'x';  // strings not NUL-terminated
  EXPECT_NE(t.check(bad.data(), bad.size(), 62), nullptr);
}

TEST(ShimCore, Globs) {
  auto m = [](const char* p, const char* s) { return shim::glob_match(p, std::strlen(p), s); };
  EXPECT_TRUE(m("*", ""));
  EXPECT_TRUE(m("*", "main"));
  EXPECT_TRUE(m("ma*", "main"));
  EXPECT_TRUE(m("*in", "main"));
  EXPECT_TRUE(m("m?in", "main"));
  EXPECT_TRUE(m("*a*n*", "main"));
  EXPECT_FALSE(m("ma", "main"));
  EXPECT_FALSE(m("m?n", "main"));
  EXPECT_FALSE(m("", "main"));
  EXPECT_TRUE(m("", ""));
  EXPECT_TRUE(m("f*o*o", "foxoo"));
  // A name holding a star (a C++ operator's demangled name, a hand-named symbol): the pattern's star is
  // a star, not a letter that the name's star uses up (fuzz/request_fuzz.cc found that).
  EXPECT_TRUE(m("*", "*x"));
  EXPECT_TRUE(m("*x*", "enable *x*\n"));
  EXPECT_TRUE(m("operator*", "operator*"));
  EXPECT_TRUE(m("*isae m*", "disable *isae m*\n"));
  EXPECT_FALSE(m("a*b", "a*c"));
  shim::GlobList l = shim::glob_list("leaf_*,,main");
  EXPECT_TRUE(l.matches("leaf_add"));
  EXPECT_TRUE(l.matches("main"));
  EXPECT_FALSE(l.matches("mainly"));
  EXPECT_TRUE(shim::glob_list(",,").empty());
  EXPECT_FALSE(shim::glob_list(nullptr).matches("x"));
  // A comma inside a parameter or template argument list belongs to the glob.
  shim::GlobList params = shim::glob_list("ns::f(int, char),g<a, b>::*,main");
  EXPECT_TRUE(params.matches("ns::f(int, char)"));
  EXPECT_TRUE(params.matches("g<a, b>::h"));
  EXPECT_TRUE(params.matches("main"));
  EXPECT_FALSE(params.matches(" char)"));
}

// The control channel's signal value: the id and a tag byte in the low 32 bits, which is all a 32-bit
// (ARM32) process receives, and the magic above them for the 64-bit shims.
TEST(ShimCore, MessagesCarryTheirIdAndTagInTheLow32Bits) {
  using namespace shim;
  const u64 v = message_value(ctl_magic, ctl_tag, 4194303);  // the largest pid (PID_MAX_LIMIT - 1)
  EXPECT_EQ(message_id(v, ctl_magic, ctl_tag), 4194303);
  EXPECT_EQ(message_id(v, sync_magic, sync_tag), -1);
  EXPECT_EQ(message_id(v & 0xffffffff, ctl_magic, ctl_tag), -1);  // a 64-bit shim wants the magic too
  EXPECT_EQ(static_cast<u32>(v) >> 24, ctl_tag);
  EXPECT_EQ(static_cast<u32>(v) & message_id_mask, 4194303u);
  EXPECT_EQ(message_id(message_value(sync_magic, sync_tag, 0x1234567), sync_magic, sync_tag), 0x234567);  // rounds modulo 2^24
  EXPECT_EQ(message_id(0x50524550ul << 32 | 7, ctl_magic, ctl_tag), -1);  // the old encoding, without the tag
}

TEST(ShimCore, CommandGrammar) {
  auto p = [](const std::string& s) { return shim::parse_command(s.data(), s.size()); };
  EXPECT_EQ(p("status\n").verb, shim::Command::status);
  EXPECT_EQ(p("enable *\n").verb, shim::Command::enable);
  const std::string line = "disable leaf_*,main";  // the globs point into it
  auto c = shim::parse_command(line.data(), line.size());
  EXPECT_EQ(c.verb, shim::Command::disable);
  EXPECT_EQ(std::string(c.globs.text, c.globs.len), "leaf_*,main");
  EXPECT_EQ(p("enable").verb, shim::Command::invalid);
  // Demangled names hold spaces: `operator new`, `unsigned long`, `(anonymous namespace)`.
  EXPECT_EQ(p("enable (anonymous namespace)::f(unsigned long, int)").verb, shim::Command::enable);
  EXPECT_EQ(p("status now").verb, shim::Command::invalid);
  EXPECT_TRUE(p("status mangled").mangled);
  EXPECT_FALSE(p("status").mangled);
  EXPECT_EQ(p("enable *\nstatus").verb, shim::Command::invalid);
  EXPECT_EQ(p("enablex *").verb, shim::Command::invalid);
  EXPECT_EQ(p("").verb, shim::Command::invalid);
  EXPECT_EQ(p(std::string("sta\0us", 6)).verb, shim::Command::invalid);
  EXPECT_NE(p("frobnicate").error, nullptr);
}

// A recording memory: the batch's stores in order and where the syncs fell.
struct Recorder {
  std::vector<u8> text = std::vector<u8>(0x100, 0x90);
  u64 base = 0x1000;
  std::vector<std::pair<u64, u8>> stores;
  std::vector<size_t> syncs;  // stores.size() at each sync
  void store(u64 addr, const u8* b, unsigned width) {
    for (unsigned i = 0; i < width; i++) {
      text.at(addr - base + i) = b[i];
      stores.push_back({addr + i, b[i]});
    }
  }
  void sync() { syncs.push_back(stores.size()); }
};

struct FakeSites {
  std::vector<u64> addrs;
  std::vector<unsigned> lens;
  std::vector<bool> in_batch;
  u64 count() const { return addrs.size(); }
  bool changes(u64 i) const { return in_batch[i]; }
  u64 addr(u64 i) const { return addrs[i]; }
  unsigned len(u64 i) const { return lens[i]; }
  const u8* target(u64 i) const {
    shim::site_form(62, true, addrs[i], static_cast<u8>(lens[i]), lens[i] == 5 ? 1 : 2, 0x5000, form);
    return form;
  }
  mutable u8 form[16];
};

TEST(ShimCore, ABatchRunsTheX86PlanInThreePhasesWhateverItsSize) {
  Recorder mem;
  FakeSites s{{0x1000, 0x1010, 0x1020, 0x1033}, {5, 6, 5, 5}, {true, true, false, true}};
  shim::run_batch(arch::Isa::x86_64, s, mem);
  ASSERT_EQ(mem.syncs.size(), 3u);
  // Phase 1: an int3 on each changed site's first byte, in address order.
  ASSERT_EQ(mem.syncs[0], 3u);
  EXPECT_EQ(mem.stores[0], (std::pair<u64, u8>{0x1000, 0xcc}));
  EXPECT_EQ(mem.stores[1], (std::pair<u64, u8>{0x1010, 0xcc}));
  EXPECT_EQ(mem.stores[2], (std::pair<u64, u8>{0x1033, 0xcc}));
  // Phase 2: the tails (4 + 5 + 4 bytes), phase 3: the first bytes.
  EXPECT_EQ(mem.syncs[1], 3u + 13u);
  EXPECT_EQ(mem.syncs[2], 3u + 13u + 3u);
  for (size_t i = 3; i < 16; i++) EXPECT_NE(mem.stores[i].second, 0xcc);
  for (size_t i = 1; i < mem.stores.size(); i++) {
    if (i == 3 || i == 16) continue;  // a phase starts over at the lowest address
    EXPECT_LT(mem.stores[i - 1].first, mem.stores[i].first) << "stores within a phase go in address order";
  }
  // The result: each changed site holds its call, the unchanged one its old bytes.
  u8 call[6];
  for (size_t i : {0, 1, 3}) {
    ASSERT_TRUE(arch::encode_call(arch::call_form_for_length(s.lens[i]), s.addrs[i], 0x5000, {call, s.lens[i]}));
    EXPECT_EQ(0, std::memcmp(mem.text.data() + (s.addrs[i] - mem.base), call, s.lens[i])) << i;
  }
  EXPECT_EQ(mem.text[0x20], 0x90);
}

// The executor compiled for an ISA's one plan must store exactly what the one reading the plan at run
// time stores, in the same order, with the same syncs.
template <arch::Isa I>
void expect_same_batch(const FakeSites& s) {
  Recorder any, of;
  FakeSites a = s, b = s;
  const u64 n_any = shim::run_batch_any(I, a, any), n_of = shim::run_batch_of<I>(b, of);
  EXPECT_EQ(n_any, n_of);
  EXPECT_EQ(any.stores, of.stores);
  EXPECT_EQ(any.syncs, of.syncs);
  EXPECT_EQ(any.text, of.text);
}

// 14 random sites of each kind, 16 bytes apart within the Recorder's 256 bytes, the same two-thirds
// of them in the batch (none when `empty`): x86-64's 5- and 6-byte sites at any byte, aligned words,
// and halfword-aligned 4-byte sites (RISC-V64's and Thumb-2's).
struct RandomBatches {
  FakeSites x86, word, half;
};
RandomBatches random_batches(std::mt19937& rng, bool empty = false) {
  RandomBatches b;
  for (u64 i = 0, at = 0x1000; i < 14; i++, at += 16) {
    const bool in = !empty && rng() % 3 != 0;
    b.x86.addrs.push_back(at + rng() % 8), b.x86.lens.push_back(rng() % 2 ? 5 : 6), b.x86.in_batch.push_back(in);
    b.word.addrs.push_back(at + 4 * (rng() % 3)), b.word.lens.push_back(4), b.word.in_batch.push_back(in);
    b.half.addrs.push_back(at + 2 * (rng() % 5)), b.half.lens.push_back(4), b.half.in_batch.push_back(in);
  }
  return b;
}

TEST(ShimCore, TheCompiledExecutorStoresWhatThePlanReaderStores) {
  std::mt19937 rng(7);
  for (int round = 0; round < 50; round++) {
    auto [x86, word, half] = random_batches(rng);
    expect_same_batch<arch::Isa::x86_64>(x86);
    expect_same_batch<arch::Isa::aarch64>(word);
    expect_same_batch<arch::Isa::ppc64le>(word);
    expect_same_batch<arch::Isa::thumb2>(half);
    if (round == 0) {  // and the empty batch
      for (auto&& f : {&x86, &word, &half}) f->in_batch.assign(f->in_batch.size(), false);
      expect_same_batch<arch::Isa::x86_64>(x86);
      expect_same_batch<arch::Isa::thumb2>(half);
    }
  }
}

// A batch run alone (no other thread: shim/runtime/toggle.inc) puts each site through the same stores
// as the phase-by-phase executor, site after site in address order, with one sync at the end, and
// leaves the same bytes.
template <arch::Isa I>
void expect_same_sites_alone(const FakeSites& s) {
  Recorder phased, alone;
  FakeSites a = s, b = s;
  const u64 n_phased = shim::run_batch_of<I>(a, phased), n_alone = shim::run_batch_alone_of<I>(b, alone);
  EXPECT_EQ(n_phased, n_alone);
  EXPECT_EQ(phased.text, alone.text);
  const bool any = std::find(s.in_batch.begin(), s.in_batch.end(), true) != s.in_batch.end();
  EXPECT_EQ(alone.syncs, any ? std::vector<size_t>{alone.stores.size()} : std::vector<size_t>{});
  size_t at = 0;  // alone.stores, site by site
  for (u64 i = 0; i < s.count(); i++) {
    if (!s.in_batch[i]) continue;
    std::vector<std::pair<u64, u8>> of_site;  // the phased executor's stores to this site, in order
    for (const auto& st : phased.stores)
      if (st.first >= s.addrs[i] && st.first < s.addrs[i] + s.lens[i]) of_site.push_back(st);
    ASSERT_LE(at + of_site.size(), alone.stores.size());
    EXPECT_TRUE(std::equal(of_site.begin(), of_site.end(), alone.stores.begin() + static_cast<long>(at))) << "site " << i;
    at += of_site.size();
  }
  EXPECT_EQ(at, alone.stores.size());
}

TEST(ShimCore, ABatchRunAloneStoresWhatThePhasesStoreSiteBySite) {
  std::mt19937 rng(11);
  for (int round = 0; round < 50; round++) {
    const auto [x86, word, half] = random_batches(rng, round == 0);  // round 0: the empty batch
    expect_same_sites_alone<arch::Isa::x86_64>(x86);
    expect_same_sites_alone<arch::Isa::aarch64>(word);
    expect_same_sites_alone<arch::Isa::ppc64le>(word);
    expect_same_sites_alone<arch::Isa::riscv64>(half);
    expect_same_sites_alone<arch::Isa::thumb2>(half);
  }
}

TEST(ShimCore, AnEmptyBatchNeitherWritesNorSyncs) {
  Recorder mem;
  FakeSites s{{0x1000}, {5}, {false}};
  shim::run_batch(arch::Isa::x86_64, s, mem);
  EXPECT_TRUE(mem.stores.empty());
  EXPECT_TRUE(mem.syncs.empty());
}

TEST(ShimCore, SiteFormsAreTheCanonicalNopAndTheCallForm) {
  u8 b[8];
  ASSERT_TRUE(shim::site_form(62, false, 0x1000, 5, 1, 0, b));
  EXPECT_EQ(0, std::memcmp(b, arch::canonical_nop(5).data(), 5));
  ASSERT_TRUE(shim::site_form(62, false, 0x1000, 6, 2, 0, b));
  EXPECT_EQ(0, std::memcmp(b, arch::canonical_nop(6).data(), 6));
  ASSERT_TRUE(shim::site_form(62, true, 0x1000, 6, 2, 0x2000, b));
  EXPECT_EQ(b[0], 0x67);
  EXPECT_EQ(b[1], 0xe8);
  EXPECT_FALSE(shim::site_form(62, true, 0x1000, 5, 2, 0x2000, b)) << "a form of another length";
  EXPECT_FALSE(shim::site_form(62, true, 0x1000, 5, 1, 0x1000 + (u64{1} << 32), b)) << "out of rel32 reach";
}

TEST(ShimCore, KernelStructuresMatchGlibcs) {
  static_assert(offsetof(siginfo_t, si_code) == offsetof(shim::sys::SigInfo, code));
  siginfo_t si{};
  si.si_value.sival_ptr = reinterpret_cast<void*>(0x1122334455667788);
  si.si_pid = 77;
  shim::sys::SigInfo mine;
  std::memcpy(&mine, &si, sizeof mine);
  EXPECT_EQ(mine.value, 0x1122334455667788u);
  EXPECT_EQ(mine.pid, 77);
  EXPECT_EQ(offsetof(ucontext_t, uc_mcontext.gregs), offsetof(shim::sys::UContext, gregs));
  EXPECT_EQ(REG_RSP, shim::sys::reg_rsp);
  EXPECT_EQ(REG_RIP, shim::sys::reg_rip);
  EXPECT_EQ(SI_QUEUE, shim::sys::si_queue);
  EXPECT_EQ(SI_KERNEL, shim::sys::si_kernel);
  EXPECT_EQ(SA_NODEFER, static_cast<int>(shim::sys::sa_nodefer));
  EXPECT_EQ(SIGRTMAX - 2, 62) << "the control signal is SIGRTMAX-2";
  static_assert(sizeof(stack_t) == sizeof(shim::sys::StackT));
  EXPECT_EQ(offsetof(stack_t, ss_flags), offsetof(shim::sys::StackT, flags));
  EXPECT_EQ(offsetof(stack_t, ss_size), offsetof(shim::sys::StackT, size));
  EXPECT_EQ(SS_ONSTACK, shim::sys::ss_onstack);
  EXPECT_EQ(SS_DISABLE, shim::sys::ss_disable);
  EXPECT_EQ(MAP_FIXED, shim::sys::map_fixed);
  EXPECT_EQ(MFD_CLOEXEC, static_cast<unsigned>(shim::sys::mfd_cloexec));
}

TEST(ShimCore, SignalMasksFromProcStatus) {
  const std::string status = "Name:\tx\nSigPnd:\t0000000000000000\nSigBlk:\t8000000000000010\nSigCgt:\t0000000180000000\n";
  u64 m = 0;
  ASSERT_TRUE(shim::status_mask(status.data(), status.size(), "SigBlk:", m));
  EXPECT_EQ(m, 0x8000000000000010u);
  ASSERT_TRUE(shim::status_mask(status.data(), status.size(), "SigCgt:", m));
  EXPECT_EQ(m, 0x180000000u);
  EXPECT_FALSE(shim::status_mask(status.data(), status.size(), "ShdPnd:", m));
  EXPECT_FALSE(shim::status_mask(status.data(), status.size(), "lk:", m)) << "keys match at line starts only";
}

TEST(ShimCore, EnvironmentLookup) {
  char a[] = "PREPATCH_TRACE=main,leaf_*", b[] = "PREPATCH=x", c[] = "PREPATCH_TRACEX=no";
  char* envp[] = {b, c, a, nullptr};
  EXPECT_STREQ(shim::env_get(envp, "PREPATCH_TRACE"), "main,leaf_*");
  EXPECT_EQ(shim::env_get(envp, "PREPATCH_NOTRACE"), nullptr);
}

// The PREPATCH_* variables (shim/settings.h): defaults, every value taken, and the first wrong one
// named; ISA-specific ones refused elsewhere.
TEST(ShimSettings, ParsesEveryVariableAndNamesTheFirstWrongOne) {
  auto parse = [](std::vector<std::string> vars, arch::Isa isa = arch::Isa::x86_64) {
    static std::vector<std::string> keep;
    keep = std::move(vars);
    static std::vector<char*> envp;
    envp.clear();
    for (std::string& v : keep) envp.push_back(v.data());
    envp.push_back(nullptr);
    return shim::parse_settings(envp.data(), isa);
  };
  shim::Settings d = parse({});
  EXPECT_EQ(d.tracer, shim::Tracer::count);
  EXPECT_EQ(d.file_mode, 0600u);
  EXPECT_EQ(d.buffer_bytes, u64{1024} << 20);
  EXPECT_EQ(d.output, nullptr);
  EXPECT_EQ(d.error, nullptr);
  shim::Settings s = parse({"PREPATCH_TRACER=graph", "PREPATCH_TRACE=a,b*", "PREPATCH_NOTRACE=b2", "PREPATCH_OUTPUT=t.%p",
                            "PREPATCH_COUNTS=c", "PREPATCH_BUFFER=64", "PREPATCH_FILE_MODE=0640", "PREPATCH_WX=strict", "PREPATCH_SYNC=signal"});
  EXPECT_EQ(s.error, nullptr);
  EXPECT_EQ(s.tracer, shim::Tracer::graph);
  EXPECT_STREQ(s.trace, "a,b*");
  EXPECT_STREQ(s.notrace, "b2");
  EXPECT_STREQ(s.output, "t.%p");
  EXPECT_STREQ(s.counts, "c");
  EXPECT_EQ(s.buffer_bytes, u64{64} << 20);
  EXPECT_EQ(s.file_mode, 0640u);
  EXPECT_TRUE(s.wx_strict);
  EXPECT_TRUE(s.sync_signal);
  for (const char* mode : {"0700", "0400", "4666", "0666x", "9", "06666", "01000000000000000000000600"}) {
    shim::Settings m = parse({std::string("PREPATCH_FILE_MODE=") + mode});
    EXPECT_STREQ(m.error, "PREPATCH_FILE_MODE is not an octal mode between 0600 and 0666 (no execute or set-id bits)") << mode;
    EXPECT_EQ(m.file_mode, 0600u) << mode;
  }
  EXPECT_STREQ(parse({"PREPATCH_BUFFER=0"}).error, "PREPATCH_BUFFER is not a size in MiB (1 or more), or ring:SIZE");
  EXPECT_STREQ(parse({"PREPATCH_BUFFER=1073741824"}).error, "PREPATCH_BUFFER is not a size in MiB (1 or more), or ring:SIZE");
  EXPECT_STREQ(parse({"PREPATCH_BUFFER=4M"}).error, "PREPATCH_BUFFER is not a size in MiB (1 or more), or ring:SIZE");
  // The flight recorder: each thread's ring, in whole 256 KiB chunks, two at least.
  EXPECT_EQ(d.ring_chunks, 0u);
  EXPECT_EQ(parse({"PREPATCH_BUFFER=ring:4M"}).ring_chunks, 16u);
  EXPECT_EQ(parse({"PREPATCH_BUFFER=ring:4"}).ring_chunks, 16u) << "MiB without a unit";
  EXPECT_EQ(parse({"PREPATCH_BUFFER=ring:1K"}).ring_chunks, 2u);
  EXPECT_EQ(parse({"PREPATCH_BUFFER=ring:600K"}).ring_chunks, 3u);
  EXPECT_EQ(parse({"PREPATCH_BUFFER=ring:1G"}).ring_chunks, 4096u);
  EXPECT_EQ(parse({"PREPATCH_BUFFER=ring:4M"}).buffer_bytes, u64{1024} << 20);
  for (const char* bad : {"ring:", "ring:0", "ring:2G", "ring:4T", "ring:4MB", "ring:-1", "ring:1025M", "rings:4M"}) {
    shim::Settings b = parse({std::string("PREPATCH_BUFFER=") + bad});
    EXPECT_NE(b.error, nullptr) << bad;
    EXPECT_EQ(b.ring_chunks, 0u) << bad;
  }
  EXPECT_STREQ(parse({"PREPATCH_BUFFER=ring:2G"}).error, "PREPATCH_BUFFER=ring:SIZE is not a size between 1K and 1G (a number with K, M or G; MiB without)");
  EXPECT_STREQ(parse({"PREPATCH_OUTPUT=" + std::string(501, 'a')}).error, "PREPATCH_OUTPUT is longer than 500 bytes");
  EXPECT_EQ(parse({"PREPATCH_OUTPUT=" + std::string(500, 'a')}).error, nullptr);
  EXPECT_STREQ(parse({"PREPATCH_TRACER=x", "PREPATCH_WX=no"}).error, "PREPATCH_TRACER is not count, function or graph");
  EXPECT_EQ(parse({"PREPATCH_TRACER=graph"}, arch::Isa::thumb2).error, nullptr);
  EXPECT_EQ(parse({"PREPATCH_TRACER=graph"}, arch::Isa::thumb2).tracer, shim::Tracer::graph);
  EXPECT_EQ(parse({"PREPATCH_TRACER=graph"}, arch::Isa::riscv64).error, nullptr);
  EXPECT_EQ(parse({"PREPATCH_TRACER=graph"}, arch::Isa::aarch64).error, nullptr);
  EXPECT_EQ(parse({"PREPATCH_TRACER=function"}, arch::Isa::aarch64).tracer, shim::Tracer::function);
  for (arch::Isa isa : {arch::Isa::x86_64, arch::Isa::aarch64, arch::Isa::ppc64le, arch::Isa::riscv64, arch::Isa::thumb2}) {
    const shim::Settings strict = parse({"PREPATCH_WX=strict"}, isa);
    EXPECT_EQ(strict.error, nullptr);
    EXPECT_TRUE(strict.wx_strict);
  }
  EXPECT_TRUE(parse({"PREPATCH_SYNC=flush_icache"}, arch::Isa::riscv64).sync_flush_icache);
  EXPECT_STREQ(parse({"PREPATCH_SYNC=flush_icache"}).error, "PREPATCH_SYNC is not signal");
}

// The control channel's rules on its directory and request files (shim/core.h; SECURITY.md).
TEST(ShimCore, ControlChannelFileRules) {
  EXPECT_TRUE(shim::channel_dir_safe(040700, 1000, 1000));
  EXPECT_FALSE(shim::channel_dir_safe(040700, 0, 1000)) << "another user's directory";
  EXPECT_FALSE(shim::channel_dir_safe(040710, 1000, 1000)) << "the group may enter";
  EXPECT_FALSE(shim::channel_dir_safe(041777, 1000, 1000));
  EXPECT_FALSE(shim::channel_dir_safe(0100700, 1000, 1000)) << "not a directory";
  const u32 reg = 0100000;
  EXPECT_EQ(shim::request_file_problem(reg | 0600, 1, 1000, 12, 1000, false), nullptr);
  EXPECT_EQ(shim::request_file_problem(reg | 0644, 1, 0, 12, 1000, false), nullptr) << "root's request";
  EXPECT_EQ(shim::request_file_problem(reg | 0644, 1, 0, 12, 1000, true), nullptr) << "root's request, root only";
  EXPECT_STREQ(shim::request_file_problem(reg | 0600, 1, 1000, 12, 1000, true),
               "this process takes requests from root only (its user or group ids differ, it is not dumpable, or it holds capabilities)");
  EXPECT_STREQ(shim::request_file_problem(010600, 1, 1000, 0, 1000, false), "the request is not a regular file");  // FIFO
  EXPECT_STREQ(shim::request_file_problem(020600, 1, 1000, 0, 1000, false), "the request is not a regular file");  // device
  EXPECT_STREQ(shim::request_file_problem(reg | 0600, 2, 1000, 12, 1000, false), "the request file has more than one name (a hard link)");
  EXPECT_STREQ(shim::request_file_problem(reg | 0600, 1, 1001, 12, 1000, false), "the request file belongs to another user");
  EXPECT_STREQ(shim::request_file_problem(reg | 0602, 1, 1000, 12, 1000, false), "the request file is writable by group or others");
  EXPECT_STREQ(shim::request_file_problem(reg | 0620, 1, 1000, 12, 1000, false), "the request file is writable by group or others");
  EXPECT_EQ(shim::request_file_problem(reg | 0600, 1, 1000, 4096, 1000, false), nullptr);
  EXPECT_STREQ(shim::request_file_problem(reg | 0600, 1, 1000, 4097, 1000, false), "the request is longer than 4096 bytes");
}

// The site hash the tracers use to find a site from the return address its call pushed: every key
// inserted is found with its value, keys never inserted are not, at the highest load it is sized for,
// with its keys scattered and in address order; the last slot stays empty so a lookup of a missing
// key ends.
TEST(SiteHash, FindsEveryInsertedSiteAndNoOther) {
  for (u64 n : {1u, 5u, 1000u, 100000u}) {
    const u64 mask = shim::site_hash_mask(n);
    EXPECT_GE(mask + 1, 2 * n);
    for (u64 mult : {shim::site_hash_mult, shim::site_hash_ordered(4)}) {
      std::vector<shim::SiteHashSlot> t(shim::site_hash_size(mask));
      // Addresses like real site ends: 16-aligned functions, 5 bytes in, in one text segment.
      using R = shim::HashInsert;
      for (u64 i = 0; i < n; i++) ASSERT_EQ(shim::site_hash_insert(t.data(), {mask, mult, 0}, 0x401000 + 16 * i + 5, i), R::added) << n << " " << i;
      EXPECT_EQ(shim::site_hash_insert(t.data(), {mask, mult, 0}, 0x401005, 0), R::replaced);  // again, same value
      // Again with another value (a site loaded where an unloaded object's was): the entry takes it.
      EXPECT_EQ(shim::site_hash_insert(t.data(), {mask, mult, 0}, 0x401005, 7), R::replaced);
      EXPECT_EQ(shim::site_hash_find(t.data(), {mask, mult, 0}, 0x401005)->value, 7u);
      shim::site_hash_insert(t.data(), {mask, mult, 0}, 0x401005, 0);
      for (u64 i = 0; i < n; i++) {
        const shim::SiteHashSlot* s = shim::site_hash_find(t.data(), {mask, mult, 0}, 0x401000 + 16 * i + 5);
        ASSERT_NE(s, nullptr);
        ASSERT_EQ(s->value, i);
        // A key not there is probed to the end of its home's run: in address order, with every slot
        // from here on taken, the rest of the table. So only some are looked for there.
        if (mult == shim::site_hash_mult || i % 512 == 0) {
          ASSERT_EQ(shim::site_hash_find(t.data(), {mask, mult, 0}, 0x401000 + 16 * i + 6), nullptr);
        }
      }
      EXPECT_EQ(t.back().key, 0u);
    }
  }
}

// In address order a key's home is its distance from the base, shifted, so keys that walk the text
// walk the slots: 16 bytes apart with a slot per 16 bytes from the first site, each key sits in its
// home slot, the first in slot 0, one after the other.
TEST(SiteHash, InAddressOrderKeysLieInOrderAtHome) {
  const shim::HashShape shape{shim::site_hash_mask(1000), shim::site_hash_ordered(4), 0x401000};
  std::vector<shim::SiteHashSlot> t(shim::site_hash_size(shape.mask));
  for (u64 i = 0; i < 1000; i++) ASSERT_EQ(shim::site_hash_insert(t.data(), shape, 0x401000 + 16 * i + 5, i), shim::HashInsert::added);
  for (u64 i = 0; i < 1000; i++) {
    EXPECT_EQ(shape.home(0x401000 + 16 * i + 5), i);
    ASSERT_EQ(t[i].value, i);
  }
}

// site_hash_probes' bounds hold whatever subset of the keys is inserted in whatever order: each key
// is found no farther from its home than `farthest`, and the probes of the whole set sum to no more
// than `total`. Keys crowded into shared homes, over a table in address order, checked by inserting
// them for real; and the verdicts: keys a home apart probe nothing, keys crowded past `most` or the
// slack do not fit.
TEST(SiteHash, ProbeBoundsHoldForEverySubsetInEveryOrder) {
  const u64 mask = shim::site_hash_mask(300), mult = shim::site_hash_ordered(4);
  std::mt19937_64 rng(29);
  std::vector<u8> count(shim::site_hash_size(mask));
  for (int round = 0; round < 200; round++) {
    std::vector<u64> keys;  // clusters: runs of keys 1 to 64 bytes apart, with gaps between
    for (u64 at = 0x400000 + (rng() % 4096); keys.size() < 300;) {
      at += rng() % 4 == 0 ? 256 + rng() % 4096 : 1 + rng() % 64;
      keys.push_back(at);
    }
    const auto each = [&](auto f) {
      for (u64 k : keys) f(k);
    };
    const shim::HashProbes p = shim::site_hash_probes({mask, mult, 0}, 1000, count.data(), each);
    ASSERT_TRUE(p.fits) << round;
    std::vector<u64> subset;
    for (u64 k : keys)
      if (rng() % 3) subset.push_back(k);
    std::shuffle(subset.begin(), subset.end(), rng);
    std::vector<shim::SiteHashSlot> t(shim::site_hash_size(mask));
    u64 probes = 0;
    for (u64 k : subset) {
      ASSERT_EQ(shim::site_hash_insert(t.data(), {mask, mult, 0}, k, 1), shim::HashInsert::added);
      const u64 at = static_cast<u64>(shim::site_hash_find(t.data(), {mask, mult, 0}, k) - t.data());
      const u64 far = at - shim::site_hash_home(k, mask, mult);
      ASSERT_LE(far, p.farthest) << round << " " << k;
      probes += far;
    }
    EXPECT_LE(probes, p.total) << round;
  }
  // A home apart: nothing probed. The same keys all in one home: each up to n - 1 past it.
  std::vector<u64> apart, crowded;
  for (u64 i = 0; i < 100; i++) apart.push_back(0x401005 + 16 * i), crowded.push_back(0x401000 + i % 16);
  const auto over = [](const std::vector<u64>& keys) {
    return [&keys](auto f) {
      for (u64 k : keys) f(k);
    };
  };
  shim::HashProbes p = shim::site_hash_probes({mask, mult, 0}, 16, count.data(), over(apart));
  EXPECT_TRUE(p.fits);
  EXPECT_EQ(p.farthest, 0u);
  EXPECT_EQ(p.total, 0u);
  crowded.resize(16);
  p = shim::site_hash_probes({mask, mult, 0}, 16, count.data(), over(crowded));
  EXPECT_TRUE(p.fits);
  EXPECT_EQ(p.farthest, 15u);
  EXPECT_EQ(p.total, 16u * 15u);
  crowded.push_back(0x401000 + ((mask + 1) << 4));  // the same home, a table's span of text later
  EXPECT_FALSE(shim::site_hash_probes({mask, mult, 0}, 15, count.data(), over(crowded)).fits) << "16 past home, 15 allowed";
  // Keys homed at the last slot of the mask's range spill into the slack: 64 fit, as inserting them
  // shows; a 65th would take the last slot, however far from home is allowed.
  std::vector<u64> at_end;
  for (u64 i = 0; i <= shim::site_hash_slack; i++) at_end.push_back((mask << 4) + (i / 16) * ((mask + 1) << 4) + i % 16);
  const std::vector<u64> fitting(at_end.begin(), at_end.end() - 1);
  EXPECT_TRUE(shim::site_hash_probes({mask, mult, 0}, 1000, count.data(), over(fitting)).fits);
  EXPECT_FALSE(shim::site_hash_probes({mask, mult, 0}, 1000, count.data(), over(at_end)).fits);
  std::vector<shim::SiteHashSlot> t(shim::site_hash_size(mask));
  for (u64 k : fitting) EXPECT_EQ(shim::site_hash_insert(t.data(), {mask, mult, 0}, k, 1), shim::HashInsert::added);
  EXPECT_EQ(shim::site_hash_insert(t.data(), {mask, mult, 0}, at_end.back(), 1), shim::HashInsert::full);
}

// The one-pass bounds for keys in home order give what the scratch pass gives, for clustered keys
// (some sharing homes, up to 200 in one), keys near the end of the mask's range (spilling into the
// slack), and every `most`; keys out of home order are left to the scratch pass.
TEST(SiteHash, SortedProbeBoundsAreTheScratchPassOnes) {
  std::mt19937_64 rng(31);
  for (int round = 0; round < 2000; round++) {
    const u64 mask = shim::site_hash_mask(50 + rng() % 400);
    const shim::HashShape shape{mask, shim::site_hash_ordered(static_cast<unsigned>(rng() % 6)), 0x400000};
    std::vector<u64> keys;
    const u64 n = 1 + rng() % 300, crowd = rng() % 10 == 0 ? 1 + rng() % 200 : 0;
    u64 at = 0x400000 + (rng() % 4 == 0 ? (mask - rng() % 64) << 5 : rng() % 4096);  // at times near the end
    for (u64 i = 0; i < n; i++, at += rng() % 4 == 0 ? 64 + rng() % 2048 : 1 + rng() % 48) keys.push_back(at);
    for (u64 i = 1; i <= crowd; i++) keys.push_back(at + i);  // (a slot per byte and up: crowded)
    const auto each = [&](auto f) {
      for (u64 k : keys) f(k);
    };
    std::vector<u8> count(shim::site_hash_size(mask));
    for (const u64 most : {u64{2}, u64{16}, u64{1000}}) {
      shim::HashProbes sorted;
      const shim::HashProbes scratch = shim::site_hash_probes(shape, most, count.data(), each);
      const bool in_order = std::is_sorted(keys.begin(), keys.end(), [&](u64 a, u64 b) { return shape.home(a) < shape.home(b); });
      ASSERT_EQ(shim::site_hash_probes_sorted(shape, most, each, sorted), in_order) << round;
      if (!in_order) continue;
      ASSERT_EQ(sorted.fits, scratch.fits) << round << " most " << most;
      if (!scratch.fits) continue;
      EXPECT_EQ(sorted.farthest, scratch.farthest) << round << " most " << most;
      EXPECT_EQ(sorted.total, scratch.total) << round << " most " << most;
    }
  }
  // The edges, each as the scratch pass judges it: keys homed at the mask's last slot spilling into
  // the slack (64 fit, a 65th would take the last slot), and keys sharing one home (126 fit where
  // `most` allows; the scratch pass counts no further than 127).
  const u64 mask = 1023;
  const shim::HashShape by16{mask, shim::site_hash_ordered(4), 0};
  std::vector<u64> at_end, one_home;
  for (u64 i = 0; i <= shim::site_hash_slack; i++) at_end.push_back((mask << 4) + (i / 16) * ((mask + 1) << 4) + i % 16);
  for (u64 i = 0; i < 127; i++) one_home.push_back(0x400 + (i / 16) * ((mask + 1) << 4) + i % 16);
  std::vector<u8> count(shim::site_hash_size(mask));
  for (const auto& [keys, fits] : std::vector<std::pair<std::vector<u64>, bool>>{
           {at_end, false}, {{at_end.begin(), at_end.end() - 1}, true}, {one_home, false}, {{one_home.begin(), one_home.end() - 1}, true}}) {
    const auto each = [&](auto f) {
      for (u64 k : keys) f(k);
    };
    shim::HashProbes sorted;
    const shim::HashProbes scratch = shim::site_hash_probes(by16, 1000, count.data(), each);
    ASSERT_TRUE(shim::site_hash_probes_sorted(by16, 1000, each, sorted)) << keys.size();
    EXPECT_EQ(scratch.fits, fits) << keys.size();
    EXPECT_EQ(sorted.fits, fits) << keys.size();
    if (fits) {
      EXPECT_EQ(sorted.farthest, scratch.farthest) << keys.size();
      EXPECT_EQ(sorted.total, scratch.total) << keys.size();
    }
  }
  // Out of home order: refused, whatever else they are.
  std::vector<u64> back{0x401000, 0x400000};
  shim::HashProbes p;
  EXPECT_FALSE(shim::site_hash_probes_sorted({1023, shim::site_hash_ordered(4), 0}, 16, [&](auto f) { for (u64 k : back) f(k); }, p));
}

// A new block takes the entries of the old one that `keep` wants (those of objects loaded now), and
// counts what it holds; the old block is left as it was (a thread may still be reading it).
TEST(SiteHash, ANewBlockTakesTheEntriesKeptAndCountsThem) {
  const auto block = [](u64 mask) {
    std::vector<u64> mem(shim::SiteHash::bytes(mask) / sizeof(u64));
    auto* h = reinterpret_cast<shim::SiteHash*>(mem.data());
    h->shape.mask = mask;
    return std::make_pair(std::move(mem), h);
  };
  auto [old_mem, old] = block(shim::site_hash_mask(200));
  old->shape.mult = shim::site_hash_mult;
  for (u64 i = 0; i < 200; i++) ASSERT_TRUE(old->insert((i < 100 ? 0x401000 : 0x7f0000001000) + 16 * i + 5, i));
  EXPECT_EQ(old->used, 200u);
  EXPECT_TRUE(old->insert(0x401005, 9)) << "a key inserted again replaces its value";
  EXPECT_EQ(old->used, 200u);
  auto [new_mem, h] = block(shim::site_hash_mask(100));
  h->shape.mult = shim::site_hash_ordered(8), h->shape.base = 0x401000;  // (keys in another order in the new block)
  ASSERT_TRUE(h->take(*old, [](u64 key) { return key < 0x7f0000000000; }));
  EXPECT_EQ(h->used, 100u);
  EXPECT_EQ(h->find(0x401005)->value, 9u);
  for (u64 i = 1; i < 200; i++) {
    const u64 key = (i < 100 ? 0x401000 : 0x7f0000001000) + 16 * i + 5;
    EXPECT_EQ(h->find(key) != nullptr, i < 100) << i;
    ASSERT_NE(old->find(key), nullptr);
  }
}

TEST(SiteHash, RefusesWhenTheProbeWouldPassTheSlack) {
  const u64 mask = shim::site_hash_mask(1);  // 64 slots and 64 of slack
  std::vector<shim::SiteHashSlot> t(shim::site_hash_size(mask));
  u64 inserted = 0;
  for (u64 k = 1; k < 100000 && inserted < t.size(); k++) inserted += shim::site_hash_insert(t.data(), {mask, shim::site_hash_mult, 0}, k, k) == shim::HashInsert::added;
  EXPECT_EQ(inserted, t.size() - 1);  // all but the last slot
  EXPECT_EQ(t.back().key, 0u);
  EXPECT_EQ(shim::site_hash_find(t.data(), {mask, shim::site_hash_mult, 0}, 1000000), nullptr);  // ends at the empty last slot
}

// The graph tracer's shadow stack: frames are matched by the slot of the return address; frames left
// without returning (longjmp, exceptions) are dropped when a call or return further up the stack shows
// they are dead, and reported.
TEST(ShadowStack, DropsFramesLeftWithoutReturningAndMatchesReturnsBySlot) {
  shim::ShadowFrame mem[4];
  shim::ShadowStack s;
  s.frames = mem, s.cap = 4;
  std::vector<u64> unwound;
  const auto note = [&](const shim::ShadowFrame& f) { unwound.push_back(f.site); };
  ASSERT_TRUE(s.push({0x7000, 0xa, 1}));  // outer, its return address at 0x7000
  ASSERT_TRUE(s.push({0x6f00, 0xb, 2}));
  ASSERT_TRUE(s.push({0x6e00, 0xc, 3}));
  // A longjmp back into site 1's function, which now calls another: frames at or below its slot are dead.
  s.drop_dead(0x6f80, note);
  EXPECT_EQ(unwound, (std::vector<u64>{3, 2}));
  EXPECT_EQ(s.depth, 1u);
  ASSERT_TRUE(s.push({0x6f80, 0xd, 4}));
  ASSERT_TRUE(s.push({0x6e80, 0xe, 5}));
  // Site 4's function returns while site 5's frame is still on top: 5 was left by a longjmp.
  shim::ShadowFrame f{};
  unwound.clear();
  ASSERT_TRUE(s.pop(0x6f80, f, note));
  EXPECT_EQ(f.ret, 0xdu);
  EXPECT_EQ(unwound, (std::vector<u64>{5}));
  // A return through a slot above every frame cannot be resolved (a stack switch): nothing is popped.
  EXPECT_FALSE(s.pop(0x6000, f, note));
  EXPECT_EQ(s.depth, 1u);
  ASSERT_TRUE(s.pop(0x7000, f, note));
  EXPECT_EQ(f.ret, 0xau);
  EXPECT_FALSE(s.pop(0x7000, f, note));  // empty
  // Full: the push is refused (the call goes untraced) and nothing is overwritten.
  for (u64 i = 0; i < 4; i++) ASSERT_TRUE(s.push({0x7000 - 16 * i, i, static_cast<u32>(i)}));
  EXPECT_FALSE(s.push({0x6000, 9, 9}));
  EXPECT_EQ(s.frames[3].site, 3u);
}

TEST(ShadowStack, UnhooksLiveFramesForAnExceptionAndRehooksTheCatchersFrames) {
  // A stack of 8 slots; word k lies at stack + 8k. Frames A (slot 7), B (slot 5) and C (slot 3) return
  // through the trampoline; word 1 held a frame that died before (its slot was reused since).
  constexpr u64 tramp = 0x5000;
  u64 stack[8] = {};
  const auto at = [&](int k) { return reinterpret_cast<u64>(&stack[k]); };
  shim::ShadowFrame mem[4];
  shim::ShadowStack s;
  s.frames = mem, s.cap = 4;
  std::vector<u64> unwound;
  const auto note = [&](const shim::ShadowFrame& f) { unwound.push_back(f.site); };
  ASSERT_TRUE(s.push({at(7), 0xa, 1}));
  ASSERT_TRUE(s.push({at(5), 0xb, 2}));
  ASSERT_TRUE(s.push({at(3), 0xc, 3}));
  ASSERT_TRUE(s.push({at(1), 0xd, 4}));
  stack[7] = stack[5] = stack[3] = tramp;
  stack[1] = 0x1234;  // reused: no longer the dead frame's return slot
  // The unwinder is called with its caller's stack pointer at word 2: frame 4 is dead and its slot is
  // left alone; the live frames get their real return addresses.
  s.relink(at(2), tramp, true, note);
  EXPECT_EQ(unwound, (std::vector<u64>{4}));
  EXPECT_EQ(s.depth, 3u);
  EXPECT_EQ(stack[7], 0xau);
  EXPECT_EQ(stack[5], 0xbu);
  EXPECT_EQ(stack[3], 0xcu);
  EXPECT_EQ(stack[1], 0x1234u);
  // A second unwind (a cleanup resumes) finds nothing to change.
  s.relink(at(2), tramp, true, note);
  EXPECT_EQ(stack[3], 0xcu);
  // B's function catches with its stack pointer at word 4: C was unwound; A and B return through the
  // trampoline again. A slot that holds neither is not touched.
  unwound.clear();
  stack[7] = 0x9999;
  s.relink(at(4), tramp, false, note);
  EXPECT_EQ(unwound, (std::vector<u64>{3}));
  EXPECT_EQ(s.depth, 2u);
  EXPECT_EQ(stack[5], tramp);
  EXPECT_EQ(stack[7], 0x9999u);
  EXPECT_EQ(stack[3], 0xcu);
}

// shim/dynlink.h on this test process, whose dynamic linker is the oracle: a definition found by GNU
// hash in link-map order is what dlsym finds, and the objects that call the unwinder do so through GOT
// slots the relocations name.
TEST(DynamicLinking, FindsDefinitionsAsDlsymDoesAndTheSlotsThatImportThem) {
  const auto* r = reinterpret_cast<const shim::RDebug*>(&_r_debug);
  ASSERT_NE(r->map, nullptr);
  // pthread_create: the sanitizers' runtime, in this executable, interposes libc's.
  for (const char* name : {"_Unwind_RaiseException", "_Unwind_Resume", "__cxa_begin_catch", "pthread_create", "dlopen"}) {
    u64 found = 0;
    for (const shim::LinkMap* m = r->map; m && !found; m = m->next) found = shim::find_definition(shim::read_dynamic(m->addr, m->ld), name);
    EXPECT_EQ(found, reinterpret_cast<u64>(dlsym(RTLD_DEFAULT, name))) << name;
  }
  u64 none = 0;
  for (const shim::LinkMap* m = r->map; m; m = m->next) none |= shim::find_definition(shim::read_dynamic(m->addr, m->ld), "no_such_function_here");
  EXPECT_EQ(none, 0u);
  const char* const names[2] = {"_Unwind_RaiseException", "__cxa_begin_catch"};
  unsigned raise = 0, caught = 0;
  for (const shim::LinkMap* m = r->map; m; m = m->next) {
    const std::string object = m->name;
    shim::for_each_import(shim::read_dynamic(m->addr, m->ld), names, 2, [&](u64* slot, unsigned k) {
      EXPECT_GT(reinterpret_cast<u64>(slot), m->addr) << object;
      if (k == 0 && object.find("libstdc++") != std::string::npos) raise++;  // __cxa_throw's call
      if (k == 1 && object.empty()) caught++;                                // this executable catches
    });
  }
  EXPECT_GE(raise, 1u);
  EXPECT_GE(caught, 1u);
  // The relocations DT_RELACOUNT counts are R_X86_64_RELATIVE, none a slot to find: skipping them
  // finds every slot a full scan finds.
  u64 relative = 0;
  for (const shim::LinkMap* m = r->map; m; m = m->next) {
    const shim::DynamicInfo d = shim::read_dynamic(m->addr, m->ld);
    relative += d.relative;
    for (u64 i = 0; i < d.relative && i < d.rela_size / shim::elfc::rel_size; i++)
      if (shim::elfc::rel_type(shim::load_le(d.rela + i * shim::elfc::rel_size + 8, 8)) != 8) ADD_FAILURE() << m->name << " relocation " << i;
    shim::DynamicInfo all = d;
    all.relative = 0;
    std::vector<u64*> skipping, full;
    shim::for_each_import(d, names, 2, [&](u64* slot, unsigned) { skipping.push_back(slot); });
    shim::for_each_import(all, names, 2, [&](u64* slot, unsigned) { full.push_back(slot); });
    EXPECT_EQ(skipping, full) << m->name;
  }
  EXPECT_GT(relative, 100u);  // libc's and libstdc++'s, at least
}

// snapshot_copy over a file in memory: one thread's two chunks, A (number 0, first in the file, still
// being written) and B (number 1, its next). The second pass finds A with more records and reads them;
// meanwhile the thread starts A over (a ring wrapping onto it, here: its number changes as they are
// read). A kept with what the first pass took would join B with those records missing: it must be
// left out, B kept alone (before the fix it was kept, and the thread's events had a hole).
TEST(Snapshot, AChunkStartedOverWhileItsNewRecordsAreReadIsLeftOut) {
  constexpr u64 cs = shim::trace_chunk_bytes, at = 4096;
  std::vector<u8> file(at + 2 * cs);
  shim::TraceHeader h{};
  h.header_size = sizeof h, h.chunk_size = cs, h.chunk_offset = at, h.chunk_capacity = 2, h.chunks_claimed = 2;
  const auto chunk = [&](u64 k) { return reinterpret_cast<shim::ChunkHeader*>(file.data() + at + k * cs); };
  *chunk(0) = {shim::chunk_magic, 7, 0, 16, 0, 0, 0, 0, {}};
  *chunk(1) = {shim::chunk_magic, 7, 1, 16, 0, 0, 0, 0, {}};
  struct Src {
    std::vector<u8>& f;
    int header_reads_of_a = 0;
    bool read(void* to, u64 n, u64 off) {
      if (off + n > f.size()) return false;
      memcpy(to, f.data() + off, n);
      if (off == at && n == sizeof(shim::ChunkHeader) && ++header_reads_of_a == 2) {
        reinterpret_cast<shim::ChunkHeader*>(f.data() + at)->used = 32;  // the thread went on writing A...
      } else if (off == at + sizeof(shim::ChunkHeader) + 16) {
        reinterpret_cast<shim::ChunkHeader*>(f.data() + at)->seq = 2;  // ... and started it over as its new records were read
      }
      return true;
    }
  } src{file};
  struct Dst {
    std::vector<u8>& src;
    std::vector<u8> out = std::vector<u8>(src.size());
    bool write(const void* p, u64 n, u64 off) { return memcpy(out.data() + off, p, n), true; }
    int copy(u64 n, u64 off) { return memcpy(out.data() + off, src.data() + off, n), 1; }
  } dst{file};
  std::vector<u8> buf(cs);
  shim::SnapshotChunk kept[2];
  shim::SnapshotResult r;
  ASSERT_TRUE(shim::snapshot_copy(src, dst, h, 2, buf.data(), kept, r));
  const auto* a = reinterpret_cast<const shim::ChunkHeader*>(dst.out.data() + at);
  const auto* b = reinterpret_cast<const shim::ChunkHeader*>(dst.out.data() + at + cs);
  EXPECT_NE(a->magic, shim::chunk_magic);  // no chunk: left out
  EXPECT_EQ(b->magic, shim::chunk_magic);
  EXPECT_EQ(b->seq, 1u);
  EXPECT_EQ(r.chunks, 1u);
  EXPECT_EQ(r.dropped, 1u);
}

}  // namespace
}  // namespace prepatch
