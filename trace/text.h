// The readers' text: a buffered writer to a file descriptor or a stream, a growable line buffer, and
// the number formats the views print, written without printf (a replay line used to cost two
// snprintf calls) but to the same text as printf's "%*.3f" and "%*llu".
#pragma once
#include <cstring>
#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>

#include "elf/types.h"

namespace prepatch::trace {

// Each writes at `d` and returns the end of what it wrote. `width`: right-aligned in that many columns.
char* put_num(char* d, u64 v, unsigned width = 0);          // "%*llu"
char* put_micros(char* d, u64 ns, unsigned width = 0);      // "%*.3f" of ns / 1e3
char* put_hex(char* d, u64 v);                               // "0x%llx"
// "12.345 us", "1.234 ms", "2.000 s" ("%.3f us" of ns / 1e3 below 10 us, of ns / 1e6 ms below 10 ms,
// else of ns / 1e9 s): a duration as the views print it. At most 32 characters.
char* put_duration(char* d, u64 ns, unsigned width = 0);
inline char* put(char* d, std::string_view s) { return static_cast<char*>(std::memcpy(d, s.data(), s.size())) + s.size(); }
inline constexpr size_t max_number = 32;  // characters any of the above writes, width aside
std::string duration(u64 ns);

// Bytes being put together; reserve() room, write at the pointer it returns, commit() what was written.
class Buffer {
 public:
  char* reserve(size_t k) {
    if (cap_ - n_ < k) grow(k);
    return p_.get() + n_;
  }
  void commit(char* end) { n_ = static_cast<size_t>(end - p_.get()); }
  void append(std::string_view s) { commit(put(reserve(s.size()), s)); }
  const char* data() const { return p_.get(); }
  size_t size() const { return n_; }
  void clear() { n_ = 0; }
  void truncate(size_t n) { n_ = n < n_ ? n : n_; }  // drops what lies past n

 private:
  void grow(size_t k);
  std::unique_ptr<char[]> p_;
  size_t n_ = 0, cap_ = 0;
};

class Output {
 public:
  // Writes to `fd` (not closed); `name` names it in errors.
  Output(int fd, std::string name);
  explicit Output(std::ostream& out);
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;
  ~Output();  // flushes, ignoring errors: call flush() to see them

  // Room for k <= 4096 bytes at the returned pointer; commit() what was written.
  char* reserve(size_t k) {
    if (sizeof buf_ - n_ < k) flush();
    return buf_ + n_;
  }
  void commit(char* end) { n_ = static_cast<size_t>(end - buf_); }
  Output& put(std::string_view s) {
    if (s.size() > sizeof buf_ - n_) return put_slow(s);
    std::memcpy(buf_ + n_, s.data(), s.size());
    n_ += s.size();
    return *this;
  }
  Output& put(char c) { return put(std::string_view(&c, 1)); }
  Output& num(u64 v) {
    commit(put_num(reserve(max_number), v));
    return *this;
  }
  // Throws IoError when writing fails.
  void flush();

 private:
  Output& put_slow(std::string_view s);
  int fd_ = -1;
  std::ostream* out_ = nullptr;
  std::string name_;
  size_t n_ = 0;
  char buf_[1 << 16];
};

}  // namespace prepatch::trace
