// prepatch: the command-line front end. Parses arguments (CLI11), calls the rewriter, maps errors to
// the documented exit codes (README.md, "Exit codes"). No logic of its own beyond presentation.
#include <CLI/CLI.hpp>
#include <unistd.h>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "arch/describe.h"
#include "control/control.h"
#include "control/snapshot.h"
#include "control/counts.h"
#include "control/record.h"
#include "control/top.h"
#include "elf/mapped_file.h"
#include "elf/temp_file.h"
#include "elf/writer.h"
#include "rewriter/debug_file.h"
#include "rewriter/names.h"
#include "rewriter/prepare.h"
#include "trace/progress.h"
#include "trace/trace.h"

#ifndef PREPATCH_VERSION
#define PREPATCH_VERSION "0.0.0"
#endif

namespace {

using namespace prepatch;

enum Exit : int { ok = 0, internal = 1, usage = 2, nothing_to_do = 3, bad_input = 4, io_error = 5 };

// Where a stripped binary's function names come from: its separate debug file (rewriter/debug_file.h),
// `given` (--debug-file) or found under `debug_dir` (--debug-dir) or by its .gnu_debuglink.
struct DebugFileOptions {
  std::string given, dir = default_debug_dir;
};

// The debug file of `elf` (nullptr: none); says which one it read, or which it passed over.
std::unique_ptr<DebugSymbols> debug_file_of(const elf::Elf& elf, const std::string& path, const DebugFileOptions& o, bool quiet) {
  std::string note;
  std::unique_ptr<DebugSymbols> d = debug_symbols(elf, path, o.given, o.dir, note);
  if (!note.empty()) std::cerr << "prepatch: " << path << ": " << note << "\n";
  if (d && !quiet) std::cerr << "prepatch: " << path << ": stripped; function names from its debug file " << d->file.path() << "\n";
  return d;
}

int run_prepare(const std::string& in, const std::string& out, bool quiet, const DebugFileOptions& debug) {
  MappedFile file(in);
  elf::Elf elf(file.bytes(), in);
  const std::unique_ptr<DebugSymbols> symbols = debug_file_of(elf, in, debug, quiet);
  PrepareResult r = prepare(elf, out, file.mode(), file.fd(), symbols ? &symbols->elf : nullptr);
  // (-q: nothing on success; where nothing was written, the reasons all the same)
  if (!quiet || r.outcome != PrepareOutcome::written)
    for (const std::string& m : r.messages) std::cerr << m << "\n";
  if (r.outcome != PrepareOutcome::written) return nothing_to_do;
  if (!quiet)
    std::cout << "prepatch: " << out << ": prepared " << r.prepared << " site" << (r.prepared == 1 ? "" : "s")
              << (r.skipped ? ", skipped " + std::to_string(r.skipped) + " (reasons above)" : "") << "\n";
  return ok;
}

// `status`, unless what went to standard output could not all be written (a full disk, a closed
// pipe): then that is said, and the exit is 5, as for report, replay and export.
int written(int status) {
  errno = 0;
  std::cout.flush();
  if (std::cout.good() && std::fflush(stdout) == 0 && !std::ferror(stdout)) return status;
  std::cerr << "prepatch: standard output: cannot write" << (errno ? std::string(": ") + std::strerror(errno) : std::string()) << "\n";
  return io_error;
}

int run_sites(const std::string& path, bool json, bool mangled, const DebugFileOptions& debug) {
  MappedFile file(path);
  elf::Elf elf(file.bytes(), path);
  const std::unique_ptr<DebugSymbols> symbols = debug_file_of(elf, path, debug, json);
  Listing l = list_sites(elf, symbols ? &symbols->elf : nullptr);
  if (json) {
    nlohmann::json j;
    j["file"] = path;
    j["prepared"] = l.prepared;
    j["sites"] = nlohmann::json::array();
    for (const SiteRow& r : l.rows) {
      const std::string shown = r.function.empty() ? hex(r.addr) : name_text(r.function, mangled);  // (no symbol: the site's address)
      nlohmann::json s = {{"address", r.addr},        {"function", shown}, {"symbol", r.function}, {"kind", kind_name(r.kind)},
                          {"length", r.length},       {"state", r.state},       {"status", r.status},
                          {"source", r.source}};
      s["file_offset"] = r.file_offset ? nlohmann::json(*r.file_offset) : nlohmann::json(nullptr);
      if (!r.reason.empty()) {
        s["reason"] = r.reason;
        s["found"] = r.found;
      }
      j["sites"].push_back(std::move(s));
    }
    j["islands"] = nlohmann::json::array();
    for (const IslandRow& i : l.islands) {
      nlohmann::json r = {{"address", i.addr}, {"where", i.where}, {"kind", i.arm_state ? "arm-state" : kind_name(i.kind)}};
      r["file_offset"] = i.file_offset ? nlohmann::json(*i.file_offset) : nlohmann::json(nullptr);
      j["islands"].push_back(std::move(r));
    }
    std::cout << j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";  // a raw symbol that is not UTF-8: U+FFFD
    return ok;
  }
  std::printf("%-18s %-10s %-3s %-9s %-5s %-10s %s\n", "ADDRESS", "FILE", "LEN", "KIND", "STATE", "STATUS", "FUNCTION");
  for (const SiteRow& r : l.rows) {
    std::printf("0x%016llx %-10s %-3u %-9s %-5s %-10s %s%s\n", static_cast<unsigned long long>(r.addr),
                r.file_offset ? hex(*r.file_offset).c_str() : "-", r.length, std::string(kind_name(r.kind)).c_str(),
                r.state.c_str(), r.status.c_str(), r.function.empty() ? hex(r.addr).c_str() : name_text(r.function, mangled).c_str(),
                r.reason.empty() ? "" : ("  (" + r.reason + "; found " + r.found + ")").c_str());
  }
  // The branch islands that sites out of their trampoline's reach call (README, "Branch islands").
  if (!l.islands.empty()) std::printf("%-18s %-10s %-9s %s\n", "ISLAND", "FILE", "KIND", "WHERE");
  for (const IslandRow& i : l.islands)
    std::printf("0x%016llx %-10s %-9s %s\n", static_cast<unsigned long long>(i.addr), i.file_offset ? hex(*i.file_offset).c_str() : "-",
                i.arm_state ? "arm-state" : std::string(kind_name(i.kind)).c_str(), i.where.c_str());
  size_t skipped = std::count_if(l.rows.begin(), l.rows.end(), [](const SiteRow& r) { return r.status == "skipped"; });
  const size_t traps = std::count_if(l.rows.begin(), l.rows.end(), [](const SiteRow& r) { return r.status == "trap"; });
  std::printf("%zu sites (%zu skipped", l.rows.size(), skipped);
  if (traps) std::printf(", %zu trap%s", traps, traps == 1 ? "" : "s");
  std::printf("); %s", l.prepared ? "prepared binary" : "not prepared");
  if (!l.islands.empty()) std::printf(", %zu branch island%s", l.islands.size(), l.islands.size() == 1 ? "" : "s");
  std::printf("\n");
  return ok;
}

struct PlanArgs {
  std::string arch, kind;
  unsigned length = 5;
  std::string at, target;
  bool off = false, markdown = false;
};

std::optional<u64> parse_address(const std::string& s) {
  size_t used = 0;
  u64 v = 0;
  try {
    v = std::stoull(s, &used, 0);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (used != s.size()) return std::nullopt;
  return v;
}

int run_plan(const PlanArgs& a) {
  if (a.markdown) {
    std::cout << arch::protocols_markdown();
    return ok;
  }
  auto isa = arch::isa_by_name(a.arch);
  auto kind = arch::kind_by_name(a.kind);
  if (!isa || !kind) {
    std::cerr << "prepatch plan: --arch must be one of x86-64, aarch64, ppc64le, riscv64, thumb2 and --site-kind one of "
                 "fentry, mcount, patchable (see --help)\n";
    return usage;
  }
  auto at = a.at.empty() ? arch::example_site_address(*isa, a.length) : parse_address(a.at);
  auto target = a.target.empty() ? (at ? std::optional(*at + 0x1000) : std::nullopt) : parse_address(a.target);
  if (!at || !target) {
    std::cerr << "prepatch plan: expected an address such as 0x401006, got \"" << (at ? a.target : a.at) << "\"\n";
    return usage;
  }
  auto site = arch::site_form(*isa, *kind, *at, *target, a.length);
  if (!site) {
    std::cerr << "prepatch plan: no " << a.kind << " site of " << a.arch
              << (*isa == arch::Isa::x86_64 || *isa == arch::Isa::thumb2 ? " (length " + std::to_string(a.length) + ")" : "")
              << " at " << hex(*at) << " calling " << hex(*target)
              << ": the ISA has no such site kind, the address is not instruction-aligned, the length is not 5 or 6 (x86-64), an ARM-state site (thumb2, length 8) is not a 4-aligned mcount one, "
                 "or the target is out of the call's reach\n";
    return usage;
  }
  std::cout << arch::describe_plan(*isa, *kind, arch::plan_for(*isa, *at, a.length), *site, !a.off);
  return ok;
}

int run_ctl(const std::string& pid_text, const std::vector<std::string>& words, unsigned timeout_ms, bool mangled, const std::string& out) {
  auto pid = parse_address(pid_text);
  if (!pid || *pid == 0 || *pid > 0x7fffffff || words.empty() || (words[0] == "snapshot" && words.size() != 1) || (!out.empty() && words[0] != "snapshot")) {
    std::cerr << "prepatch ctl: usage: prepatch ctl PID enable GLOBS | disable GLOBS | set NAME=VALUE | trigger SPECS | status | snapshot [-o FILE]\n";
    return usage;
  }
  if (words[0] == "snapshot") {  // read from outside: the process is not asked, nor stopped
    const Snapshot s = snapshot(static_cast<pid_t>(*pid), out);
    std::cout << "snapshot of " << printable(s.trace) << ": " << printable(s.path) << " (" << s.chunks << " chunks";
    if (s.dropped) std::cout << "; " << s.dropped << " rewritten while copied, left out";
    std::cout << ")\n";
    return ok;
  }
  std::string command;
  for (const std::string& w : words) command += (command.empty() ? "" : " ") + w;
  if (mangled && command == "status") command += " mangled";
  ControlReply r = control(static_cast<pid_t>(*pid), command, std::chrono::milliseconds(timeout_ms));
  (r.ok ? std::cout : std::cerr) << r.text;
  return r.ok ? ok : bad_input;
}

// `files`: the binaries (none, one, or one per object), then the counts file.
int run_counts(const std::vector<std::string>& files, bool all, bool json, bool mangled) {
  const std::vector<std::string> binaries(files.begin(), files.end() - 1);
  std::vector<CountRow> rows = read_counts(files.back(), binaries);
  std::vector<std::string> shown;
  shown.reserve(rows.size());
  for (const CountRow& r : rows) shown.push_back(r.function.empty() ? hex(r.addr) : name_text(r.function, mangled));  // (no symbol: the site's address)
  const std::vector<std::string> names = qualified_names(rows, shown);
  if (json) {
    nlohmann::json j = nlohmann::json::array();
    for (size_t i = 0; i < rows.size(); i++)
      if (all || rows[i].count)
        j.push_back({{"object", rows[i].object}, {"address", rows[i].addr}, {"function", names[i]}, {"symbol", rows[i].function}, {"count", rows[i].count}});
    std::cout << j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";  // a raw symbol that is not UTF-8: U+FFFD
    return ok;
  }
  std::printf("%-12s %-18s %s\n", "COUNT", "ADDRESS", "FUNCTION");
  for (size_t i = 0; i < rows.size(); i++)
    if (all || rows[i].count)
      std::printf("%-12llu 0x%016llx %s\n", static_cast<unsigned long long>(rows[i].count), static_cast<unsigned long long>(rows[i].addr), names[i].c_str());
  return ok;
}

// A damaged trace file: what was intact has been printed; the damage goes to stderr and the exit code.
int trace_problems(const trace::TraceFile& t) {
  const std::vector<std::string> problems = t.problems();
  for (const std::string& p : problems) std::cerr << "prepatch: " << p << "\n";
  const shim::TraceHeader& h = t.header();
  if (h.lost)
    std::cerr << "prepatch: " << t.file() << ": " << h.lost << " events were lost ("
              << (h.stopped == shim::trace_stopped_descriptor ? "the program closed or reused the trace file's descriptor, and the file grew no more"
                  : h.stopped == shim::trace_stopped_disk     ? "the disk had no room for the trace file"
                                                              : "the trace file was full: PREPATCH_BUFFER")
              << ")\n";
  return problems.empty() ? ok : bad_input;
}

// `files` summed (and, with `old`, compared with them). The tables come after the last record is read.
int run_report(const std::vector<std::string>& files, const std::vector<std::string>& old, const trace::ReportOptions& o, bool mangled) {
  std::vector<std::unique_ptr<trace::TraceFile>> open;
  std::vector<trace::TraceFile*> now, was;
  std::vector<std::unique_ptr<trace::Progress>> progress;
  for (const std::vector<std::string>* list : {&old, &files})
    for (const std::string& f : *list) {
      open.push_back(std::make_unique<trace::TraceFile>(f));
      open.back()->show_mangled(mangled);
      progress.push_back(std::make_unique<trace::Progress>(*open.back(), "report", isatty(2)));
      (list == &old ? was : now).push_back(open.back().get());
    }
  trace::Output out(1, "standard output");
  if (old.empty()) trace::report(now, o, out);
  else trace::report_diff(was, now, o, out);
  u64 unwound = 0;
  for (const trace::TraceFile* t : now) unwound += t->header().unwound;
  if (unwound && old.empty()) out.put("\n").num(unwound).put(" calls were left without returning (longjmp, exceptions, thread exits)\n");
  out.flush();
  int status = ok;
  for (const auto& t : open) status = std::max(status, trace_problems(*t));
  return status;
}

// A count option's check: a whole number of 1 or more (CLI11's PositiveNumber would name the largest double).
const CLI::Validator positive_whole(
    [](std::string& s) {
      const bool whole = !s.empty() && s.size() < 10 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
      return whole && std::stoul(s) >= 1 ? std::string() : "'" + s + "' is not a whole number of 1 or more";
    },
    "N");

// A time as the replay's TIME column shows it: a number (a fraction allowed) with ns, us, ms or s,
// microseconds without a unit; in ns. False when `text` is not one.
bool parse_time(const std::string& text, u64& ns) {
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) return false;
  size_t used = 0;
  double v = -1;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    return false;
  }
  const std::string unit = text.substr(used);
  const double scale = unit == "ns" ? 1 : unit == "" || unit == "us" ? 1e3 : unit == "ms" ? 1e6 : unit == "s" ? 1e9 : -1;
  if (!(v >= 0) || scale < 0 || !(v * scale < 1.8e19)) return false;
  ns = static_cast<u64>(v * scale + 0.5);
  return true;
}
std::string time_problem(const std::string& text) {
  u64 ns;
  return parse_time(text, ns) ? std::string() : "'" + text + "' is not a time (a number with ns, us, ms or s; microseconds without one)";
}

int run_replay(const std::string& file, const trace::ReplayFilter& f, bool mangled) {
  trace::TraceFile t(file);
  t.show_mangled(mangled);
  trace::Output out(1, "standard output");
  trace::replay(t, f, out);
  out.flush();
  return trace_problems(t);
}

// -o -: standard output; else a file that appears whole (0600) once the export succeeded.
int run_export(const std::string& file, const std::string& format, const std::string& path, bool mangled) {
  trace::TraceFile t(file);
  t.show_mangled(mangled);
  const trace::Progress progress(t, "export", isatty(2) && (path != "-" || !isatty(1)));
  const auto write = [&](trace::Output& out) {
    if (format == "perfetto") trace::export_perfetto(t, out);
    else if (format == "folded") trace::export_folded(t, out);
    else if (format == "svg") trace::export_svg(t, out);
    else trace::export_chrome(t, out);
    out.flush();
  };
  if (path == "-") {
    trace::Output out(1, "standard output");
    write(out);
    return trace_problems(t);
  }
  elf::TempFile tmp(path, 0);
  {
    trace::Output out(tmp.fd(), path);
    write(out);
  }
  tmp.commit(0600);
  return trace_problems(t);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "prepatch: prepares the function-entry tracing sites of an ELF binary (gcc/clang -pg, -pg -mfentry,\n"
      "-mnop-mcount, -mrecord-mcount, -fpatchable-function-entry=N[,M]) so they can be toggled live;\n"
      "x86-64; AArch64, PPC64le and RISC-V64 (gcc -pg, -fpatchable-function-entry); ARM32 (gcc -pg in\n"
      "Thumb-2 and ARM state, Thumb-2 -fpatchable-function-entry with 3 or more nops): executables and\n"
      "shared objects. Each site becomes one nop instruction of its length (Thumb-2: `pop {lr}`; ARM\n"
      "state: `mov ip, pc; nop`, the nop toggled); a sorted __patch_sites\n"
      "table and the runtime shim that switches sites live are appended. Run the output with\n"
      "PREPATCH_TRACE=GLOBS to trace from the start, or switch sites while it runs with\n"
      "`prepatch ctl PID enable GLOBS`.\n\n"
      "Exit codes: 0 ok; 1 internal error; 2 usage error; 3 nothing to do (no sites, or already\n"
      "prepared); 4 bad input (not ELF, corrupt, unsupported ISA, a shared object that cannot carry the\n"
      "shim; ctl: the shim answered an error); 5 I/O error (cannot read or write; ctl: the process cannot\n"
      "be reached). record exits\n"
      "with the program's status (128 + N when a signal N killed it), or with these when it cannot run it.",
      "prepatch"};
  app.set_version_flag("--version", "prepatch " PREPATCH_VERSION);
  // Usage errors say whose they are, as every other message of prepatch does.
  app.failure_message([](const CLI::App* a, const CLI::Error& e) { return "prepatch: " + CLI::FailureMessage::simple(a, e); });
  std::string in, out;
  bool quiet = false;
  app.add_option("input", in, "ELF executable or shared object to prepare (only read, never written)");
  app.add_option("-o,--output", out, "where to write the prepared binary (may equal the input; written atomically)");
  app.add_flag("-q,--quiet", quiet, "print nothing on success");
  DebugFileOptions debug;
  const char* debug_file_help = "a stripped binary's separate debug file (objcopy --only-keep-debug), whose .symtab names its functions\n"
                                "(default: found by build ID under --debug-dir, else by .gnu_debuglink beside the binary, in .debug/\n"
                                "there, or under --debug-dir; taken only when its build ID or CRC-32 matches)";
  const char* debug_dir_help = "where debug files are looked for by build ID (DIR/.build-id/ab/cdef....debug) and by path";
  app.add_option("--debug-file", debug.given, debug_file_help);
  app.add_option("--debug-dir", debug.dir, debug_dir_help)->capture_default_str();

  CLI::App* sites = app.add_subcommand("sites", "list every site of FILE (input or prepared binary), and a prepared binary's branch islands");
  std::string sites_file;
  bool json = false;
  sites->add_option("file", sites_file, "ELF file")->required();
  sites->add_flag("--json", json, "print JSON instead of a table");
  bool mangled = false;
  const char* mangled_help = "raw symbols instead of demangled C++ names (README.md, \"Names\")";
  sites->add_flag("--mangled", mangled, mangled_help);
  sites->add_option("--debug-file", debug.given, debug_file_help);
  sites->add_option("--debug-dir", debug.dir, debug_dir_help)->capture_default_str();

  CLI::App* plan = app.add_subcommand("plan", "print the plan that switches a site of one ISA and kind on or off, the states it\n"
                                              "passes through, and the plan checker's verdict for that site");
  PlanArgs pa;
  plan->add_option("--arch", pa.arch, "x86-64, aarch64, ppc64le, riscv64 or thumb2");
  plan->add_option("--site-kind", pa.kind, "fentry (x86-64 only), mcount or patchable");
  plan->add_option("--length", pa.length, "x86-64: the site's length, 5 or 6; thumb2: 8 for an ARM-state (-marm) -pg site")->capture_default_str();
  plan->add_option("--at", pa.at, "address of the toggled instruction (default: one straddling an 8-byte word; a 4-aligned one for a thumb2 ARM-state site)");
  plan->add_option("--target", pa.target, "address the call form calls (default: --at + 0x1000)");
  plan->add_flag("--off", pa.off, "show switching the site off instead of on");
  plan->add_flag("--markdown", pa.markdown, "print the generated part of docs/PROTOCOLS.md (every ISA; runs the full check)");
  CLI::App* ctl = app.add_subcommand("ctl", "drive the shim of a running prepared process of this user (any user's as root): enable\n"
                                            "GLOBS, disable GLOBS (comma-separated globs over function names), set NAME=VALUE (a\n"
                                            "record-time filter: DEPTH, THRESHOLD, GRAPH_FUNCTION, GRAPH_NOTRACE, TIDS, RETVAL, ARGS,\n"
                                            "TRIGGER, SNAPSHOTS), trigger SPECS (set TRIGGER=SPECS) or status (docs/SHIM.md,\n"
                                            "SECURITY.md); waits for a process whose shim is not listening yet.\n"
                                            "snapshot copies the process's trace file as it is (the flight recorder's rings), without\n"
                                            "stopping it");
  std::string ctl_pid;
  std::vector<std::string> ctl_words;
  unsigned ctl_timeout = 10000;
  ctl->add_option("pid", ctl_pid, "the process")->required();
  ctl->add_option("command", ctl_words, "enable GLOBS | disable GLOBS | set NAME=VALUE | trigger SPECS | status | snapshot")->required();
  std::string ctl_out;
  ctl->add_option("-o", ctl_out, "snapshot: the copy's path (default: the trace file's, then .snapshot.N, the first N free)");
  ctl->add_option("--timeout", ctl_timeout, "milliseconds to wait for the shim to listen and answer (a busy process is asked again until then)")
      ->capture_default_str();
  ctl->add_flag("--mangled", mangled, "status: raw symbols instead of demangled C++ names");

  CLI::App* topc = app.add_subcommand("top", "a live view of a running prepared process's hottest functions (calls per second from the\n"
                                             "count tracer), refreshed every interval, like perf top; q quits. With no site enabled it\n"
                                             "enables --trace (default: every function) and disables them when it quits; with some enabled\n"
                                             "it shows those and changes nothing. Piped: one table per refresh");
  std::string top_pid;
  TopOptions top_options;
  topc->add_option("pid", top_pid, "the process")->required();
  topc->add_option("--trace", top_options.trace, "comma-separated globs: the functions to count while top runs (default: every one)");
  topc->add_option("--interval", top_options.interval, "seconds between refreshes")->check(CLI::Range(0.1, 3600.0))->capture_default_str();
  topc->add_option("-n,--iterations", top_options.iterations, "refreshes before quitting (default: until q or a signal)");
  topc->add_option("--timeout", top_options.timeout_ms, "milliseconds to wait for the shim's answers")->capture_default_str();
  topc->add_flag("--mangled", top_options.mangled, mangled_help);

  CLI::App* counts = app.add_subcommand("counts", "print the per-function call counts a prepared process wrote (PREPATCH_COUNTS)");
  std::vector<std::string> counts_files;
  bool counts_all = false, counts_json = false;
  counts->add_option("files", counts_files,
                     "[BINARY...] COUNTS: prepared binaries the process ran, to check the file against (the file names its functions "
                     "itself; a file from before 2026-12-04 needs its one binary), then the counts file (default name prepatch.PID.counts)")
      ->required();
  counts->add_flag("--all", counts_all, "include sites never called");
  counts->add_flag("--json", counts_json, "print JSON instead of a table");
  counts->add_flag("--mangled", mangled, mangled_help);

  CLI::App* report = app.add_subcommand("report", "per function: calls, total and self time (or a call's average, shortest and longest), from\n"
                                                 "trace files (PREPATCH_TRACER=function or graph; several are summed), or the change from\n"
                                                 "--diff OLD");
  const char* progress_footer = "On a terminal, progress is drawn on stderr once reading has taken PREPATCH_PROGRESS_DELAY seconds (0.5).";
  report->footer(progress_footer);
  std::string trace_file, report_sort = "total", report_threshold;
  std::vector<std::string> report_files, report_old;
  trace::ReportOptions ro_report;
  bool avg_total = false, avg_self = false;
  report->add_option("trace", report_files, "the trace files (default name prepatch.PID.trace); several are summed per function (a forking\n"
                                             "server's per-process files)")->required();
  report->add_option("--sort", report_sort, "the column to sort by, largest first: total, self, calls, avg, min, max (of --avg-total, or\n"
                                            "--avg-self; alone they imply --avg-total) or name (graph; function traces sort by calls)")
      ->check(CLI::IsMember({"total", "self", "calls", "avg", "min", "max", "name"}))->capture_default_str();
  report->add_flag("--avg-total", avg_total, "graph: a call's average, shortest and longest total time instead of the sums");
  report->add_flag("--avg-self", avg_self, "graph: a call's average, shortest and longest self time instead of the sums");
  report->add_option("--tid", ro_report.tids, "count only this thread (repeatable)");
  report->add_option("--depth", ro_report.depth, "graph: count only calls with fewer than N callers open (1: the outermost calls)")
      ->check(positive_whole);
  report->add_option("--threshold", report_threshold, "graph: count only calls lasting at least this long (10us, 5ms; us without a unit)")
      ->check(time_problem);
  report->add_option("-F,--function", ro_report.functions, "graph: count only calls of functions matching these comma-separated globs, and\n"
                                                           "the calls inside them");
  report->add_option("-N,--notrace", ro_report.notrace, "graph: leave out calls of functions matching these globs, and the calls inside them");
  report->add_option("--diff", report_old, "compare: this trace (repeatable: summed) is the old side, the trace files the new one;\n"
                                           "per function old, new and the change, the largest change first")
      ->expected(1);
  report->add_flag("--mangled", mangled, mangled_help);
  CLI::App* replay = app.add_subcommand("replay", "the trace's events in time order; graph traces nested like ftrace's function_graph");
  trace::ReplayFilter replay_filter;
  replay->add_option("trace", trace_file, "the trace file")->required();
  replay->add_option("--tid", replay_filter.tids, "show only this thread (repeatable)");
  replay->add_option("--function", replay_filter.functions, "show only calls of functions matching these comma-separated globs, and their callees");
  replay->add_option("--depth", replay_filter.depth, "graph: show only calls with fewer than N callers open (1: the outermost calls)")->check(positive_whole);
  std::string since, until, threshold;
  replay->add_option("--threshold", threshold, "graph: show only calls lasting at least this long (10us, 5ms; us without a unit), each with the\n"
                                               "calls inside it that last as long")->check(time_problem);
  replay->add_option("--since", since, "show only lines at or after this time since the trace began (TIME column: 1500, 1.5ms, 2s; us without a unit)")
      ->check(time_problem);
  replay->add_option("--until", until, "show only lines at or before this time since the trace began")->check(time_problem);
  replay->add_flag("--mangled", mangled, mangled_help);
  CLI::App* exp = app.add_subcommand("export", "convert a trace file for a trace viewer");
  exp->footer(progress_footer);
  std::string export_format = "chrome", export_out;
  exp->add_option("trace", trace_file, "the trace file")->required();
  exp->add_option("--format", export_format,
                  "chrome: Chrome Trace Event JSON (Perfetto UI, chrome://tracing); perfetto: Perfetto's protobuf trace\n"
                  "(ui.perfetto.dev, trace_processor), a fraction of the JSON's size; folded: collapsed stacks with each\n"
                  "stack's self time in ns (flamegraph.pl, speedscope, inferno; graph traces); svg: an interactive flame\n"
                  "graph in one file for any browser (hover, click to zoom, search; graph traces)")
      ->check(CLI::IsMember({"chrome", "perfetto", "folded", "svg"}))->capture_default_str();
  exp->add_flag("--mangled", mangled, mangled_help);
  exp->add_option("-o,--output", export_out, "the file to write (atomically, mode 0600), or - for standard output")->required();
  CLI::App* rec = app.add_subcommand("record", "prepare PROGRAM (into a cache keyed by its content; a prepared one runs as it is), run it\n"
                                               "traced with ARGS, pass its exit status through and print how to read the trace:\n"
                                               "prepatch record [--tracer T] [--trace GLOBS] [-o TRACE] -- PROGRAM ARGS...");
  RecordOptions ro;
  rec->add_option("--tracer", ro.tracer, "count, function or graph")->check(CLI::IsMember({"count", "function", "graph"}))->capture_default_str();
  rec->add_option("--trace", ro.trace, "comma-separated globs over function names: the functions traced (PREPATCH_TRACE)")->capture_default_str();
  rec->add_option("-o,--output", ro.output, "the trace file (the counts file for count); default prepatch.PID.trace (.counts)");
  rec->add_option("program", ro.argv, "the program (searched in PATH) and its arguments, after --")->required();
  app.require_subcommand(0, 1);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return usage;
  }
  try {
    if (sites->parsed()) return written(run_sites(sites_file, json, mangled, debug));
    if (plan->parsed()) return written(run_plan(pa));
    if (ctl->parsed()) return run_ctl(ctl_pid, ctl_words, ctl_timeout, mangled, ctl_out);
    if (topc->parsed()) {
      const auto pid = parse_address(top_pid);
      if (!pid || *pid == 0 || *pid > 0x7fffffff) {
        std::cerr << "prepatch top: usage: prepatch top PID [--trace GLOBS] [--interval S] [-n N]\n";
        return usage;
      }
      top_options.pid = static_cast<pid_t>(*pid);
      return top(top_options);
    }
    if (counts->parsed()) return written(run_counts(counts_files, counts_all, counts_json, mangled));
    if (report->parsed()) {
      using trace::SortBy;
      ro_report.by = report_sort == "self" ? SortBy::self : report_sort == "calls" ? SortBy::calls : report_sort == "avg" ? SortBy::avg
                   : report_sort == "min" ? SortBy::min : report_sort == "max" ? SortBy::max : report_sort == "name" ? SortBy::name : SortBy::total;
      if (avg_total && avg_self) {
        std::cerr << "prepatch report: --avg-total and --avg-self are two views: choose one\n";
        return usage;
      }
      const bool by_average = ro_report.by == SortBy::avg || ro_report.by == SortBy::min || ro_report.by == SortBy::max;
      ro_report.averages = avg_self ? trace::Averages::self : avg_total || by_average ? trace::Averages::total : trace::Averages::none;
      if (!report_threshold.empty()) parse_time(report_threshold, ro_report.threshold);
      return run_report(report_files, report_old, ro_report, mangled);
    }
    if (replay->parsed()) {
      if (!threshold.empty()) parse_time(threshold, replay_filter.threshold);
      if (!since.empty()) parse_time(since, replay_filter.since);
      if (!until.empty()) parse_time(until, replay_filter.until);
      return run_replay(trace_file, replay_filter, mangled);
    }
    if (exp->parsed()) {
      if (export_out.empty()) {
        std::cerr << "prepatch export: -o needs a path, or - for standard output\n";
        return usage;
      }
      return run_export(trace_file, export_format, export_out, mangled);
    }
    if (rec->parsed()) return record(ro);
    if (in.empty() || out.empty()) {
      std::cerr << "prepatch: usage: prepatch IN -o OUT, or prepatch sites FILE (see --help)\n";
      return usage;
    }
    return run_prepare(in, out, quiet, debug);
  } catch (const NoSites& e) {
    std::cerr << "prepatch: " << e.what() << "\n";
    return nothing_to_do;
  } catch (const InputError& e) {
    std::cerr << "prepatch: " << e.what() << "\n";
    return bad_input;
  } catch (const IoError& e) {
    std::cerr << "prepatch: " << e.what() << "\n";
    return io_error;
  } catch (const std::exception& e) {
    std::cerr << "prepatch: internal error: " << e.what() << "\n";
    return internal;
  }
}
