/* The plugin of the soak (testdata/plugin_soak.c), built -pg -mfentry -fPIC -shared and prepared.
   Each time it is loaded it tells the host, when the host defines soak_plugin_loaded. */
extern void soak_plugin_loaded(void) __attribute__((weak));
__attribute__((constructor)) static void loaded_now(void) {
  if (soak_plugin_loaded) soak_plugin_loaded();
}
__attribute__((noinline)) int mix(int i) { return (i * 7 + 3) % 11; }
__attribute__((noinline)) static long sum(int n) {
  long s = 0;
  for (int i = 0; i < n; i++) s += mix(i);
  return s;
}
long plugin_work(int n) { return sum(n) + n; }
