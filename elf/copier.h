// One kernel copy (copy_file_range, what cp does) of a stretch of one file into another, on a thread
// of its own, while the caller goes on with other work.
//
// The preparer's writer (elf/writer.h) starts copying the input into the output before discovery
// knows the edits: on a 100k-function binary the kernel's copying and the preparer's own work each
// take about half of preparing, and side by side they need not wait for each other.
//
// The thread starts on another CPU than the caller's: left to the scheduler, a new thread sometimes
// queued behind its parent for 1.5-2.5 ms (half the time the copy takes) before it was moved. Once
// running, it may run anywhere the process may. With one CPU to run on, there is no thread: the
// constructor throws, and the caller copies in line.
#pragma once
#include <pthread.h>

#include <atomic>

#include "elf/types.h"

namespace prepatch::elf {

class Copier {
 public:
  // Starts copying [from, from+len) of `from_fd` to `to` in `to_fd`. Throws std::system_error when no
  // thread can be started on another CPU. Both files must stay open until wait() returns or the
  // Copier is gone.
  Copier(int from_fd, int to_fd, u64 from, u64 to, u64 len);
  Copier(const Copier&) = delete;
  Copier& operator=(const Copier&) = delete;
  // Stops after the piece under way (at most 2 MiB) when nobody waited.
  ~Copier();

  // Waits for the copy; returns how many bytes it copied from the start. Short where the kernel would
  // not copy (another file system, an old kernel, an error): the caller writes the rest.
  u64 wait();

 private:
  static void* run(void* self);

  const int from_fd_, to_fd_;
  const u64 from_, to_, len_;
  cpu_set_t allowed_;  // where the process may run, for the thread once it runs
  std::atomic<bool> stop_{false};
  u64 done_ = 0;  // written by the thread, read after joining it
  pthread_t thread_{};
  bool joined_ = false;
};

}  // namespace prepatch::elf
