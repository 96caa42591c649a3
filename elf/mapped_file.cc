#include "elf/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <cstdio>

namespace prepatch {

std::string InputError::format(const std::string& file, u64 offset, const std::string& what) {
  return file + ": offset " + hex(offset) + ": " + what;
}

std::string hex(u64 v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string hex_bytes(std::span<const u8> b, std::string_view separator) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (u8 x : b) {
    if (!s.empty()) s += separator;
    s += digits[x >> 4];
    s += digits[x & 15];
  }
  return s;
}

void prefault(std::span<const u8> part) {
#ifdef MADV_POPULATE_READ
  if (part.empty()) return;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto lo = reinterpret_cast<uintptr_t>(part.data()) / page * page, hi = reinterpret_cast<uintptr_t>(part.data()) + part.size();
  ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_POPULATE_READ);
#else
  (void)part;
#endif
}

int open_regular_file(const std::string& path, struct stat& st) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) throw IoError(path + ": cannot open for reading: " + std::strerror(errno));
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw IoError(path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError(path + ": not a regular file" + (S_ISDIR(st.st_mode) ? " (it is a directory)" : ""));
  }
  return fd;
}

MappedFile::MappedFile(std::string path) : path_(std::move(path)) {
  struct stat st;
  const int fd = open_regular_file(path_, st);
  size_ = static_cast<u64>(st.st_size);
  mode_ = st.st_mode & 07777;
  if (st.st_uid != ::geteuid()) mode_ &= ~unsigned{S_ISUID};
  if (st.st_gid != ::getegid()) mode_ &= ~unsigned{S_ISGID};
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw IoError(path_ + ": cannot map: " + std::strerror(e));
    }
    data_ = static_cast<const u8*>(p);
  }
  fd_ = fd;
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), data_(o.data_), size_(o.size_), mode_(o.mode_), fd_(o.fd_) {
  o.data_ = nullptr;
  o.size_ = 0;
  o.fd_ = -1;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<u8*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace prepatch
