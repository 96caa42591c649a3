#include "control/top.h"

#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "control/control.h"
#include "control/counts.h"
#include "rewriter/names.h"

namespace prepatch {
namespace {

std::atomic<int> stop_signal{0};
extern "C" void on_stop(int sig) { stop_signal.store(sig); }

struct Status {
  unsigned enabled = 0, sites = 0;
  std::string tracer, counts;  // counts: the counts file as the shim names it (maybe relative to its directory)
};

// The parts of a `status` reply top needs (docs/SHIM.md): "ok: pid P, E of N sites enabled", then
// "tracer: T" and, once the file exists, "counts: PATH".
Status status(pid_t pid, unsigned timeout_ms) {
  const ControlReply r = control(pid, "status", std::chrono::milliseconds(timeout_ms));
  if (!r.ok) throw IoError("pid " + std::to_string(pid) + ": status refused: " + r.text);
  Status s;
  std::istringstream in(r.text);
  std::string line;
  std::getline(in, line);
  const size_t comma = line.find(", ");
  if (comma == std::string::npos || std::sscanf(line.c_str() + comma, ", %u of %u sites enabled", &s.enabled, &s.sites) != 2)
    throw IoError("pid " + std::to_string(pid) + ": unexpected status reply: " + line);
  while (std::getline(in, line)) {
    if (line.starts_with("tracer: ")) s.tracer = line.substr(8, line.find_first_of(", ", 8) - 8);  // "graph, exceptions not followed: ..."
    else if (line.starts_with("counts: ")) s.counts = line.substr(8);
  }
  return s;
}

// The counts file as this process can open it: a relative name is the shim's working directory's.
std::string counts_path(pid_t pid, const std::string& named) {
  return named.starts_with("/") ? named : "/proc/" + std::to_string(pid) + "/cwd/" + named;
}

// The terminal in full-screen mode while the view runs: keys read one at a time without echo, the
// alternate screen, no cursor; everything put back however top ends.
class Screen {
 public:
  Screen() : tty_(isatty(0) && isatty(1)) {
    if (!tty_) return;
    tcgetattr(0, &saved_);
    termios raw = saved_;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    raw.c_cc[VMIN] = 0, raw.c_cc[VTIME] = 0;
    tcsetattr(0, TCSANOW, &raw);
    std::fputs("\033[?1049h\033[?25l", stdout);
    std::fflush(stdout);
  }
  ~Screen() {
    if (!tty_) return;
    std::fputs("\033[?25h\033[?1049l", stdout);
    std::fflush(stdout);
    tcsetattr(0, TCSANOW, &saved_);
  }
  Screen(const Screen&) = delete;
  Screen& operator=(const Screen&) = delete;
  bool tty() const { return tty_; }
  unsigned rows() const {
    winsize w{};
    return tty_ && ioctl(1, TIOCGWINSZ, &w) == 0 && w.ws_row > 4 ? w.ws_row : 24;
  }
  unsigned columns() const {
    winsize w{};
    return tty_ && ioctl(1, TIOCGWINSZ, &w) == 0 && w.ws_col > 20 ? w.ws_col : 0;  // 0: no limit
  }
  // Waits up to `ms` for a key; true when it was q (or Q).
  bool wait_for_quit(int ms) const {
    if (!tty_) {
      const timespec t{ms / 1000, (ms % 1000) * 1000000L};
      nanosleep(&t, nullptr);  // a signal ends it early
      return false;
    }
    pollfd p{0, POLLIN, 0};
    if (poll(&p, 1, ms) <= 0) return false;
    char c[16];
    const ssize_t n = read(0, c, sizeof c);
    return n > 0 && (std::find(c, c + n, 'q') != c + n || std::find(c, c + n, 'Q') != c + n);
  }

 private:
  bool tty_;
  termios saved_{};
};

// What top enabled, disabled again when it goes (also when it ends by an exception).
class Enabled {
 public:
  Enabled(pid_t pid, std::string globs, unsigned timeout_ms) : pid_(pid), globs_(std::move(globs)), timeout_ms_(timeout_ms) {}
  ~Enabled() {
    if (globs_.empty()) return;
    try {
      const ControlReply r = control(pid_, "disable " + globs_, std::chrono::milliseconds(timeout_ms_));
      if (!r.ok) std::cerr << "prepatch top: pid " << pid_ << ": could not disable " << globs_ << " again: " << r.text;
    } catch (const std::exception& e) {
      if (kill(pid_, 0) == 0) std::cerr << "prepatch top: pid " << pid_ << ": could not disable " << globs_ << " again: " << e.what() << "\n";
    }
  }
  Enabled(const Enabled&) = delete;
  Enabled& operator=(const Enabled&) = delete;
  const std::string& globs() const { return globs_; }

 private:
  pid_t pid_;
  std::string globs_;  // empty: nothing to undo
  unsigned timeout_ms_;
};

std::string rate_text(double v) {
  char b[32];
  if (v >= 1e9) std::snprintf(b, sizeof b, "%.2fG", v / 1e9);
  else if (v >= 1e6) std::snprintf(b, sizeof b, "%.2fM", v / 1e6);
  else if (v >= 1e4) std::snprintf(b, sizeof b, "%.1fk", v / 1e3);
  else std::snprintf(b, sizeof b, "%.0f", v);
  return b;
}


}  // namespace

int top(const TopOptions& o) {
  const Status before = status(o.pid, o.timeout_ms);
  const std::string who = "pid " + std::to_string(o.pid);
  if (before.tracer != "count") {
    std::cerr << "prepatch top: " << who << " runs the " << before.tracer
              << " tracer; top reads the count tracer's counters (PREPATCH_TRACER=count, the default): read its trace with "
                 "`prepatch report` instead\n";
    return 4;
  }
  if (before.enabled && !o.trace.empty()) {
    std::cerr << "prepatch top: " << who << " has " << before.enabled << " of " << before.sites
              << " sites enabled already: top shows those as they are and changes nothing, so it takes no --trace\n";
    return 4;
  }
  std::string globs;
  if (!before.enabled) {
    globs = o.trace.empty() ? "*" : o.trace;
    const ControlReply r = control(o.pid, "enable " + globs, std::chrono::milliseconds(o.timeout_ms));
    if (!r.ok) {
      std::cerr << "prepatch top: " << who << ": " << r.text;
      return 4;
    }
  }
  const Enabled undo(o.pid, globs, o.timeout_ms);
  const Status now = status(o.pid, o.timeout_ms);
  if (now.counts.empty()) throw IoError(who + ": its shim names no counts file (status has no `counts:` line)");
  const std::string path = counts_path(o.pid, now.counts);

  struct sigaction sa{};
  sa.sa_handler = on_stop;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
  const Screen screen;
  std::vector<CountRow> rows = read_counts(path, {});
  std::vector<u64> last(rows.size());
  for (size_t i = 0; i < rows.size(); i++) last[i] = rows[i].count;
  std::vector<std::string> names;
  auto then = std::chrono::steady_clock::now();
  const int ms = static_cast<int>(o.interval * 1000);
  for (unsigned shown = 0; o.iterations == 0 || shown < o.iterations; shown++) {
    if (screen.wait_for_quit(ms) || stop_signal.load()) break;
    if (kill(o.pid, 0) != 0 && errno == ESRCH) {
      std::cerr << "prepatch top: " << who << " has exited\n";
      return 0;
    }
    rows = read_counts(path, {});
    const auto t = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(t - then).count();
    then = t;
    last.resize(rows.size());  // objects loaded since: their counts start from 0
    std::vector<double> rate(rows.size());
    for (size_t i = 0; i < rows.size(); i++) {
      rate[i] = static_cast<double>(rows[i].count - std::min(rows[i].count, last[i])) / seconds;
      last[i] = rows[i].count;
    }
    std::vector<size_t> order(rows.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return rate[a] != rate[b] ? rate[a] > rate[b] : rows[a].count > rows[b].count; });
    if (names.size() != rows.size()) {  // named once, again only when an object was loaded
      names.clear();
      for (const CountRow& r : rows) names.push_back(name_text(r.function, o.mangled));
      names = qualified_names(rows, names);
    }
    double all = 0;
    for (double r : rate) all += r;

    std::string out = screen.tty() ? "\033[H\033[2J" : "";
    char line[160];
    std::snprintf(line, sizeof line, "prepatch top: %s, %u of %u sites counted%s, %s calls/s in all; every %.1f s%s\n", who.c_str(),
                  globs.empty() ? before.enabled : now.enabled, now.sites, globs.empty() ? " (enabled before top)" : "", rate_text(all).c_str(),
                  o.interval, screen.tty() ? "; q quits" : "");
    out += line;
    std::snprintf(line, sizeof line, "%12s %14s  %s\n", "CALLS/S", "TOTAL", "FUNCTION");
    out += line;
    const unsigned room = screen.tty() ? screen.rows() - 3 : 20;
    const unsigned width = screen.columns();
    for (size_t k = 0; k < order.size() && k < room; k++) {
      const size_t i = order[k];
      if (!rows[i].count) break;
      std::snprintf(line, sizeof line, "%12s %14llu  ", rate_text(rate[i]).c_str(), static_cast<unsigned long long>(rows[i].count));
      std::string row = line + names[i];
      if (width && row.size() > width) row.resize(width);
      out += row + "\n";
    }
    if (!screen.tty()) out += "\n";
    std::fputs(out.c_str(), stdout);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace prepatch
