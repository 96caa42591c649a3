// A read-only view of a whole file: mmap'ed, never opened for writing.
#pragma once
#include <sys/stat.h>
#include <span>
#include <string>

#include "elf/types.h"

namespace prepatch {

// Opens `path` read-only (O_NONBLOCK: a FIFO put where a file is expected is refused, not waited on)
// and checks it is a regular file; its stat in `st`. Throws IoError naming the path and the reason.
int open_regular_file(const std::string& path, struct stat& st);

class MappedFile {
 public:
  // Throws IoError naming `path` when it cannot be opened, is not a regular file, or cannot be mapped.
  explicit MappedFile(std::string path);
  MappedFile(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const u8> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }
  // Permission bits of the file, to copy onto outputs: the set-user-ID and set-group-ID bits only when
  // the file's owner (group) is this process's effective user (group), who will own the output; `cp`
  // drops them the same way (a setuid binary of one user, prepared by root, must not become root's).
  unsigned mode() const { return mode_; }
  int fd() const { return fd_; }            // read-only descriptor, for copy_file_range

 private:
  std::string path_;
  const u8* data_ = nullptr;
  u64 size_ = 0;
  unsigned mode_ = 0;
  int fd_ = -1;
};

// Asks the kernel to map the pages under `part`, a stretch of a file mapping, now and in one call
// (MADV_POPULATE_READ, Linux 5.14) rather than in a page fault per 16 pages as they are first read
// (~2 us each on a VM). Only advice: where the kernel cannot, the pages fault in as usual.
void prefault(std::span<const u8> part);

}  // namespace prepatch
