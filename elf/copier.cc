#include "elf/copier.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace prepatch::elf {

Copier::Copier(int from_fd, int to_fd, u64 from, u64 to, u64 len) : from_fd_(from_fd), to_fd_(to_fd), from_(from), to_(to), len_(len) {
  if (::sched_getaffinity(0, sizeof allowed_, &allowed_) != 0) throw std::system_error(errno, std::generic_category(), "sched_getaffinity");
  cpu_set_t others = allowed_;
  if (const int here = ::sched_getcpu(); here >= 0 && here < CPU_SETSIZE) CPU_CLR(here, &others);
  if (CPU_COUNT(&others) == 0) throw std::system_error(EAGAIN, std::generic_category(), "no other CPU");
  pthread_attr_t attr;
  if (int e = ::pthread_attr_init(&attr); e != 0) throw std::system_error(e, std::generic_category(), "pthread_attr_init");
  // A small stack: the thread makes system calls only, and 8 MiB of address space for it would show in
  // the preparer's memory (bench/prepare_bench.py counts every page mapped).
  int e = ::pthread_attr_setstacksize(&attr, 64 << 10);
  if (e == 0) e = ::pthread_attr_setaffinity_np(&attr, sizeof others, &others);
  if (e == 0) e = ::pthread_create(&thread_, &attr, &Copier::run, this);
  ::pthread_attr_destroy(&attr);
  if (e != 0) throw std::system_error(e, std::generic_category(), "pthread_create");
}

Copier::~Copier() {
  stop_.store(true, std::memory_order_relaxed);
  wait();
}

u64 Copier::wait() {
  if (!joined_) {
    ::pthread_join(thread_, nullptr);
    joined_ = true;
  }
  return done_;
}

void* Copier::run(void* self) {
  Copier& c = *static_cast<Copier*>(self);
  ::pthread_setaffinity_np(::pthread_self(), sizeof c.allowed_, &c.allowed_);  // started elsewhere; now anywhere
  constexpr u64 piece = 2 << 20;  // a stop request is seen between pieces
  loff_t in = static_cast<loff_t>(c.from_), out = static_cast<loff_t>(c.to_);
  for (u64 left = c.len_; left > 0 && !c.stop_.load(std::memory_order_relaxed);) {
    const ssize_t n = ::copy_file_range(c.from_fd_, &in, c.to_fd_, &out, std::min(piece, left), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EXDEV, ENOSYS, EINVAL...: the caller writes the rest
    left -= static_cast<u64>(n);
  }
  c.done_ = static_cast<u64>(in) - c.from_;
  return nullptr;
}

}  // namespace prepatch::elf
