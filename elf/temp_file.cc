#include "elf/temp_file.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace prepatch::elf {

namespace {

std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

TempFile::TempFile(const std::string& target, u64 size) : target_(target) {
  path_ = dir_of(target) + "/." + base_of(target) + ".prepatch-XXXXXX";
  fd_ = ::mkstemp(path_.data());
  if (fd_ < 0) throw IoError(target + ": cannot create a temporary file in " + dir_of(target) + ": " + std::strerror(errno));
  resize(size);
}

void TempFile::resize(u64 size) {
  // Its blocks allocated up front, when the file system can: the writes then skip the per-page
  // reservation of delayed allocation (ext4: copying 10.7 MB took 3.5 ms, 2.9 ms after fallocate).
  // fallocate() only grows a file; ftruncate() also cuts what an earlier size left beyond this one.
  if (size > 0) (void)::fallocate(fd_, 0, 0, static_cast<off_t>(size));
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) fail("cannot size the temporary file");
}

TempFile::~TempFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(path_.c_str());
}

int TempFile::try_write_at(std::span<const u8> b, u64 off) {
  while (!b.empty()) {
    ssize_t n = ::pwrite(fd_, b.data(), b.size(), static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    b = b.subspan(static_cast<size_t>(n));
    off += static_cast<u64>(n);
  }
  return 0;
}

void TempFile::write_at(std::span<const u8> b, u64 off) {
  if (const int e = try_write_at(b, off)) {
    errno = e;
    fail("cannot write the temporary file");
  }
}

void TempFile::copy_from(int src_fd, u64 from, u64 to, u64 len, std::span<const u8> src) {
  if (src_fd >= 0) {
    loff_t in = static_cast<loff_t>(from), out = static_cast<loff_t>(to);
    while (len > 0) {
      ssize_t n = ::copy_file_range(src_fd, &in, fd_, &out, len, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // EXDEV, ENOSYS, EINVAL...: finish from the mapping
      len -= static_cast<u64>(n);
    }
    from = static_cast<u64>(in);
    to = static_cast<u64>(out);
  }
  if (len) write_at(src.subspan(from, len), to);
}

void TempFile::commit(unsigned mode) {
  if (::fchmod(fd_, mode) != 0) fail("cannot set the mode of the temporary file");
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("cannot write the temporary file");
  if (::rename(path_.c_str(), target_.c_str()) != 0) fail("cannot rename the temporary file into place");
  committed_ = true;
}

void TempFile::fail(const char* what) { throw IoError(target_ + ": " + what + " (" + path_ + "): " + std::strerror(errno)); }

}  // namespace prepatch::elf
