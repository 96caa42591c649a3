/* The plugin of the soak (testdata/plugin_soak.c), built -pg -mfentry -fPIC -shared and prepared. */
__attribute__((noinline)) int mix(int i) { return (i * 7 + 3) % 11; }
__attribute__((noinline)) static long sum(int n) {
  long s = 0;
  for (int i = 0; i < n; i++) s += mix(i);
  return s;
}
long plugin_work(int n) { return sum(n) + n; }
