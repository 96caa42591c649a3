#include "trace/text.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ostream>

namespace prepatch::trace {
namespace {

// v's decimal digits, written backwards ending at `end`; returns where they start.
char* digits(u64 v, char* end) {
  static constexpr char pairs[] =
      "0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849"
      "5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
  while (v >= 100) {
    const u64 r = v % 100;
    v /= 100;
    end -= 2;
    std::memcpy(end, pairs + 2 * r, 2);
  }
  if (v >= 10) {
    end -= 2;
    std::memcpy(end, pairs + 2 * v, 2);
    return end;
  }
  *--end = static_cast<char>('0' + v);
  return end;
}

// t / 1000 with three decimals, written backwards ending at `end`.
char* thousandths(u64 t, char* end) {
  const u64 frac = t % 1000;
  *--end = static_cast<char>('0' + frac % 10);
  *--end = static_cast<char>('0' + frac / 10 % 10);
  *--end = static_cast<char>('0' + frac / 100);
  *--end = '.';
  return digits(t / 1000, end);
}

// [p, e) at d, right-aligned in `width` columns.
char* aligned(char* d, const char* p, const char* e, unsigned width) {
  const size_t n = static_cast<size_t>(e - p);
  if (n < width) d = static_cast<char*>(std::memset(d, ' ', width - n)) + (width - n);
  return put(d, std::string_view(p, n));
}

}  // namespace

char* put_num(char* d, u64 v, unsigned width) {
  char b[24], *e = b + sizeof b;
  return aligned(d, digits(v, e), e, width);
}

char* put_micros(char* d, u64 ns, unsigned width) {
  // ns / 1e3 has at most three decimals, so "%.3f" prints it exactly: there is no rounding to mirror.
  char b[32], *e = b + sizeof b;
  return aligned(d, thousandths(ns, e), e, width);
}

char* put_hex(char* d, u64 v) {
  char b[24], *e = b + sizeof b, *p = e;
  do *--p = "0123456789abcdef"[v & 15], v >>= 4;
  while (v);
  *--p = 'x', *--p = '0';
  return put(d, std::string_view(p, static_cast<size_t>(e - p)));
}

char* put_duration(char* d, u64 ns, unsigned width) {
  const u64 scale = ns < 10000 ? 1000 : ns < 10000000 ? 1000000 : 1000000000;
  const char* unit = ns < 10000 ? " us" : ns < 10000000 ? " ms" : " s";
  const u64 step = scale / 1000, q = ns / step, r = ns % step;
  char b[48], *e = b + sizeof b, *p;
  if ((step > 1 && 2 * r == step) || ns >> 53) {
    // A tie, which the double ns / scale may hold slightly above or below, or beyond a double's
    // exact integers: printf itself decides.
    const int n = std::snprintf(b, sizeof b, "%.3f%s", static_cast<double>(ns) / static_cast<double>(scale), unit);
    p = b, e = b + n;
  } else {
    p = e - std::strlen(unit);
    std::memcpy(p, unit, std::strlen(unit));
    p = thousandths(q + (2 * r > step), p);  // rounded to nearest
  }
  return aligned(d, p, e, width);
}

std::string duration(u64 ns) {
  char b[max_number];
  return std::string(b, put_duration(b, ns));
}

void Buffer::grow(size_t k) {
  const size_t cap = std::max(2 * cap_, n_ + k + 4096);
  std::unique_ptr<char[]> p(new char[cap]);
  if (n_) std::memcpy(p.get(), p_.get(), n_);
  p_ = std::move(p);
  cap_ = cap;
}

Output::Output(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
Output::Output(std::ostream& out) : out_(&out) {}
Output::~Output() {
  try {
    flush();
  } catch (...) {
  }
}

Output& Output::put_slow(std::string_view s) {
  flush();
  if (s.size() <= sizeof buf_) return put(s);
  std::memcpy(buf_, s.data(), sizeof buf_);  // written in buffer-sized pieces
  n_ = sizeof buf_;
  return put_slow(s.substr(sizeof buf_));
}

void Output::flush() {
  if (out_) {
    out_->write(buf_, static_cast<std::streamsize>(n_));
    n_ = 0;
    return;
  }
  size_t done = 0;
  while (done < n_) {
    const ssize_t w = ::write(fd_, buf_ + done, n_ - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      n_ = 0;
      throw IoError(name_ + ": cannot write: " + std::strerror(w < 0 ? errno : EIO));
    }
    done += static_cast<size_t>(w);
  }
  n_ = 0;
}

}  // namespace prepatch::trace
