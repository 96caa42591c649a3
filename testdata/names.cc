// C++ names for the one naming rule (tests/names_test.cc): namespaces, a nested class, templates (a
// function template in two instantiations, a class template's member), overloads, operators, a
// lambda, a constructor and destructor, a function in an anonymous namespace. Every function is called
// a known number of times (ROUNDS each, but as noted), so a glob's selection shows in the counts.
// Modes (argv[1]): run (default) calls everything and prints the total; wait prints "ready PID", then
// runs a round per line read from stdin until it closes.
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define ROUNDS 10
#define NOINLINE __attribute__((noinline))

namespace shapes {
struct Vec {
  int x, y;
  NOINLINE Vec operator+(const Vec& o) const { return {x + o.x, y + o.y}; }
  NOINLINE bool operator==(const Vec& o) const { return x == o.x && y == o.y; }
};
class Circle {
 public:
  NOINLINE explicit Circle(int r) : r_(r) {}
  NOINLINE ~Circle() { asm volatile(""); }
  NOINLINE int area() const { return 3 * r_ * r_; }
  NOINLINE int scale(int k) { return r_ *= k; }
  struct Inner {
    NOINLINE static int depth(int d) { return d + 1; }
  };

 private:
  int r_;
};
class Square {
 public:
  NOINLINE explicit Square(int s) : s_(s) {}
  NOINLINE int area() const { return s_ * s_; }

 private:
  int s_;
};
NOINLINE int area(const Circle& c) { return c.area(); }  // two overloads of shapes::area
NOINLINE int area(const Square& s) { return s.area(); }
}  // namespace shapes

namespace util {
template <class T>
NOINLINE T twice(T v) { return v + v; }
template <class T>
struct Box {
  T v;
  NOINLINE T get() const { return v; }
};
template <class F>
NOINLINE int apply(F f, int x) { return f(x); }
}  // namespace util

namespace {
NOINLINE int hidden(int x) { return x ^ 1; }
}  // namespace

NOINLINE long round_trip(int i) {
  long total = 0;
  shapes::Vec a{i, 1}, b{2, i};
  shapes::Vec c = a + b;
  total += c.x + (c == a);
  shapes::Circle circle(i);
  total += circle.area() + circle.scale(2) + shapes::area(circle);
  total += shapes::Circle::Inner::depth(i);
  shapes::Square square(i);
  total += shapes::area(square);
  total += util::twice(i) + static_cast<long>(util::twice(1.5 * i));
  util::Box<long> box{i};
  total += box.get();
  total += util::apply([](int v) { return v * 7; }, i);
  total += hidden(i);
  return total;
}

int main(int argc, char** argv) {
  long total = 0;
  if (argc > 1 && !strcmp(argv[1], "wait")) {
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) total += round_trip(1);
    printf("total %ld\n", total);
    return 0;
  }
  for (int i = 0; i < ROUNDS; i++) total += round_trip(i);
  printf("total %ld\n", total);
  return 0;
}
