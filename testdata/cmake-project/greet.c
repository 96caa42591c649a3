// A library function for the post-link example's shared library and module.
__attribute__((noinline)) int greet_twice(int x) { return 2 * x; }
