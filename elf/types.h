// Fixed-width aliases and the one error type the lower layers throw.
#pragma once
#include "elf/ints.h"
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace prepatch {


// A structural problem with an input file: names the file, the file offset and what was expected.
// The ELF reader throws it from deep inside bounds checks; the CLI catches it at the top and maps it to
// the "bad input" exit code. Per-site problems are values (see rewriter/sites.h), never exceptions.
class InputError : public std::runtime_error {
 public:
  InputError(std::string file, u64 offset, const std::string& what)
      : std::runtime_error(format(file, offset, what)), file_(std::move(file)), offset_(offset) {}
  const std::string& file() const { return file_; }
  u64 offset() const { return offset_; }

 private:
  static std::string format(const std::string& file, u64 offset, const std::string& what);
  std::string file_;
  u64 offset_;
};

// Errors of the environment (open, mmap, rename...): names the path and the errno text.
class IoError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string hex(u64 v);
// "0f 1f 44 00 00": bytes in messages and diagrams ("0f1f440000" with an empty separator).
std::string hex_bytes(std::span<const u8> b, std::string_view separator = " ");

}  // namespace prepatch
