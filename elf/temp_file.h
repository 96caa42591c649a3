// A file that appears whole or not at all: written under a temporary name beside its target, renamed
// into place by commit(), removed if never committed (also when SIGINT, SIGTERM, SIGHUP, SIGQUIT or
// SIGPIPE ends the process). A target that is a device, FIFO or socket, or a symbolic link to one, is
// refused (IoError) before anything is written: the rename would replace it. The preparer's output,
// `export -o` and `ctl snapshot` use it.
#pragma once
#include <span>
#include <string>

#include "elf/types.h"

namespace prepatch::elf {

class TempFile {
 public:
  // `size`: the final size when known (blocks are then allocated up front), else 0. Throws IoError.
  TempFile(const std::string& target, u64 size);
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile();
  int fd() const { return fd_; }
  // Sets the file's size, its blocks allocated up front where the file system can. Throws IoError.
  void resize(u64 size);
  void write_at(std::span<const u8> b, u64 off);
  // write_at without the throw: 0, or the errno of the write that failed (EFAULT: `b` could not be
  // read, as from a mapping of a file cut under it). What came before it is written.
  int try_write_at(std::span<const u8> b, u64 off);
  // Copies [from, from+len) of the input to offset `to`: in the kernel (copy_file_range, as cp does)
  // when `src_fd` is open and the kernel can, else from the mapping `src`.
  void copy_from(int src_fd, u64 from, u64 to, u64 len, std::span<const u8> src);
  // Gives the file `mode` and renames it to the target. Throws IoError.
  void commit(unsigned mode);

 private:
  [[noreturn]] void fail(const char* what);
  std::string target_, path_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace prepatch::elf
