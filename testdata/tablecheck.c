/* Looks for the __patch_sites table in its own loaded segments at run time (the way the shim will find
   it): a PT_LOAD whose first bytes are the table magic. Prints what it finds. */
#define _GNU_SOURCE
#include <link.h>
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) static int find(struct dl_phdr_info* info, size_t size, void* data) {
  (void)size;
  if (info->dlpi_name && info->dlpi_name[0]) return 0; /* the main program only */
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr)* p = &info->dlpi_phdr[i];
    if (p->p_type != PT_LOAD || p->p_filesz < 64) continue;
    const unsigned char* t = (const unsigned char*)(info->dlpi_addr + p->p_vaddr);
    if (memcmp(t, "PREPATCH", 8) == 0) {
      unsigned count;
      memcpy(&count, t + 16, 4);
      *(unsigned*)data = count;
      return 1;
    }
  }
  return 0;
}

int main(void) {
  unsigned count = 0;
  if (dl_iterate_phdr(find, &count)) printf("table: %u sites\n", count);
  else printf("no table\n");
  return 0;
}
