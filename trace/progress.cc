#include "trace/progress.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace prepatch::trace {
namespace {

constexpr auto every = std::chrono::milliseconds(200);

// How long the work runs before the line is drawn: PREPATCH_PROGRESS_DELAY seconds (0 draws it at
// once), else half a second.
std::chrono::steady_clock::duration delay() {
  const std::chrono::milliseconds fallback(500);
  const char* v = std::getenv("PREPATCH_PROGRESS_DELAY");
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const double s = std::strtod(v, &end);
  if (*end || !(s >= 0 && s <= 86400)) {
    std::fprintf(stderr, "prepatch: PREPATCH_PROGRESS_DELAY=%s is not a number of seconds from 0 to 86400; using 0.5\n", v);
    return fallback;
  }
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

void put(const char* s, size_t n) {
  while (n) {
    const ssize_t k = write(2, s, n);
    if (k <= 0) return;  // a progress line is not worth an error
    s += k, n -= static_cast<size_t>(k);
  }
}

}  // namespace

Progress::Progress(TraceFile& t, std::string what, bool show) : t_(t), what_(std::move(what)), start_(std::chrono::steady_clock::now()) {
  if (!show) return;
  delay_ = delay();
  t_.on_progress([this](u64 done, u64 total) { update(done, total); });
}

Progress::~Progress() {
  t_.on_progress(nullptr);
  const std::lock_guard<std::mutex> l(m_);
  erase();
}

void Progress::erase() {
  if (shown_) put("\r\033[K", 4);
  shown_ = false;
}

void Progress::update(u64 done, u64 total) {
  if (done >= total) {  // the last read: the line must go before anything else is printed, so wait for the lock
    const std::lock_guard<std::mutex> l(m_);
    finished_ = true;
    return erase();
  }
  const std::unique_lock<std::mutex> l(m_, std::try_to_lock);
  if (!l.owns_lock() || finished_) return;  // another stream's thread is drawing it
  const auto now = std::chrono::steady_clock::now();
  if (now - start_ < delay_ || (shown_ && now - last_ < every)) return;
  last_ = now, shown_ = true;
  char line[160];
  const double gb = static_cast<double>(total) / 1e9;
  const int n = std::snprintf(line, sizeof line, "\r\033[Kprepatch %s: %llu%% of %.*f %s of records", what_.c_str(),
                              static_cast<unsigned long long>(done * 100 / total), gb >= 1 ? 2 : 1, gb >= 1 ? gb : gb * 1e3, gb >= 1 ? "GB" : "MB");
  put(line, static_cast<size_t>(std::min<int>(n, sizeof line - 1)));
}

}  // namespace prepatch::trace
