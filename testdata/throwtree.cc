// A program whose C++ exceptions pass through traced functions, for the graph tracer
// (tests/trace_test.cc). One round, on the main thread and on two threads at once (ROUNDS each):
//   catcher -> middle (a guard whose destructor calls cleanup) -> thrower, which throws; middle's
//              cleanup runs while the exception passes; catcher catches and calls leaf
//   relay   -> rethrower, which catches, calls leaf, and rethrows; relay catches
//   nested  -> middle2 (a guard whose destructor calls inner, which throws and catches an exception of
//              its own while the outer one passes) -> thrower; nested catches
//   checked -> std::vector::at out of range: thrown inside libstdc++; checked catches
// The program prints a sum that does not depend on tracing.
#include <pthread.h>
#include <stdio.h>

#include <stdexcept>
#include <vector>

#define ROUNDS 200
#define NOINLINE __attribute__((noinline))

extern "C" {
NOINLINE int leaf(int x) {
  __asm__ volatile("");
  return x * 3 + 1;
}
NOINLINE void cleanup(int* total) { *total += leaf(1); }
NOINLINE void inner(int* total) {
  try {
    throw 7;
  } catch (int e) {
    *total += e;
  }
}
}

struct Guard {
  int* total;
  void (*fn)(int*);
  __attribute__((always_inline)) ~Guard() { fn(total); }
};

extern "C" {
NOINLINE void thrower(int x) {
  if (x >= 0) throw x;
}
NOINLINE int middle(int x, int* total) {
  Guard g{total, cleanup};
  thrower(x);
  return 0;
}
NOINLINE int catcher(int x, int* total) {
  try {
    return middle(x, total);
  } catch (int e) {
    return leaf(e);
  }
}
NOINLINE void rethrower(int x) {
  try {
    thrower(x);
  } catch (int) {
    leaf(x);
    throw;
  }
}
NOINLINE int relay(int x) {
  try {
    rethrower(x);
  } catch (int e) {
    return e;
  }
  return -1;
}
NOINLINE int middle2(int x, int* total) {
  Guard g{total, inner};
  thrower(x);
  return 0;
}
NOINLINE int nested(int x, int* total) {
  try {
    return middle2(x, total);
  } catch (int e) {
    return e + 1;
  }
}
NOINLINE int checked(const std::vector<int>* v, int i) {
  try {
    return v->at(static_cast<size_t>(i));
  } catch (const std::out_of_range&) {
    return -1;
  }
}
NOINLINE int round_trip(int x) {
  int total = 0;
  static const std::vector<int> v{1, 2, 3};
  total += catcher(x, &total);
  total += relay(x);
  total += nested(x, &total);
  total += checked(&v, 5);
  return total;
}
NOINLINE void* worker(void*) {
  long sum = 0;
  for (int i = 0; i < ROUNDS; i++) sum += round_trip(i);
  return reinterpret_cast<void*>(sum);
}
}

int main() {
  long total = reinterpret_cast<long>(worker(nullptr));
  pthread_t t[2];
  for (auto& th : t) pthread_create(&th, nullptr, worker, nullptr);
  for (auto& th : t) {
    void* r;
    pthread_join(th, &r);
    total += reinterpret_cast<long>(r);
  }
  printf("sum %ld\n", total);
  return 0;
}
