#include "rewriter/debug_file.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace prepatch {
namespace {

// .gnu_debuglink: the debug file's name (NUL-terminated, padded to 4 bytes), then the CRC-32 of its
// bytes. An empty name when the section is absent or malformed.
struct DebugLink {
  std::string name;
  u32 crc = 0;
};
DebugLink debug_link(const elf::Elf& binary) {
  const elf::Section* s = binary.section(".gnu_debuglink");
  if (!s || !s->has_file_data()) return {};
  const auto b = binary.section_data(*s);
  const auto* nul = static_cast<const u8*>(std::memchr(b.data(), 0, b.size()));
  if (!nul || nul == b.data()) return {};
  const u64 name_len = static_cast<u64>(nul - b.data()), crc_at = (name_len + 1 + 3) / 4 * 4;
  if (crc_at + 4 > b.size()) return {};
  DebugLink l{std::string(reinterpret_cast<const char*>(b.data()), name_len), static_cast<u32>(binary.codec().get(b, crc_at, 4))};
  if (l.name.find('/') != std::string::npos) return {};  // a bare file name, as gdb takes it
  return l;
}

std::string directory_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

// The binary's directory as an absolute path (for DIR/that/directory/NAME), empty when unknown.
std::string absolute_directory_of(const std::string& path) {
  char* real = ::realpath(path.c_str(), nullptr);
  if (!real) return {};
  const std::string dir = directory_of(real);
  std::free(real);
  return dir;
}

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Why `d` does not belong to `binary` (empty when it does): `link` the binary's .gnu_debuglink, when
// the file was found by it.
std::string mismatch(const elf::Elf& binary, const DebugSymbols& d, const DebugLink* link) {
  if (d.elf.header().machine != binary.header().machine) return "another machine's (e_machine " + std::to_string(d.elf.header().machine) + ")";
  const auto id = binary.build_id(), other = d.elf.build_id();
  if (!id.empty() && !other.empty()) {
    if (!std::equal(id.begin(), id.end(), other.begin(), other.end()))
      return "build ID " + hex_bytes(other, "") + ", where the binary's is " + hex_bytes(id, "");
  } else {
    const DebugLink l = link ? *link : debug_link(binary);
    if (l.name.empty()) return "no build ID in both and no .gnu_debuglink to check it by";
    const auto bytes = d.file.bytes();
    uLong crc = crc32(0L, Z_NULL, 0);
    for (u64 at = 0; at < bytes.size();) {  // (zlib takes at most 4 GiB a call)
      const uInt n = static_cast<uInt>(std::min<u64>(bytes.size() - at, 1u << 30));
      crc = crc32(crc, bytes.data() + at, n);
      at += n;
    }
    if (static_cast<u32>(crc) != l.crc) return "CRC-32 " + hex(crc) + ", where the binary's .gnu_debuglink records " + hex(l.crc);
  }
  if (!d.elf.symtab()) return "no .symtab";
  return {};
}

}  // namespace

std::unique_ptr<DebugSymbols> debug_symbols(const elf::Elf& binary, const std::string& path, const std::string& given, const std::string& debug_dir,
                                            std::string& note) {
  note.clear();
  if (binary.symtab()) {
    if (!given.empty()) note = "has a .symtab of its own; " + given + " not read";
    return nullptr;
  }
  if (!given.empty()) {
    auto d = std::make_unique<DebugSymbols>(given);
    if (std::string why = mismatch(binary, *d, nullptr); !why.empty())
      throw InputError(given, 0, "not " + path + "'s debug file: " + why);
    return d;
  }
  std::vector<std::pair<std::string, bool>> candidates;  // path, found by .gnu_debuglink
  if (const auto id = binary.build_id(); id.size() >= 2 && !debug_dir.empty()) {
    const std::string h = hex_bytes(id, "");
    candidates.emplace_back(debug_dir + "/.build-id/" + h.substr(0, 2) + "/" + h.substr(2) + ".debug", false);
  }
  const DebugLink link = debug_link(binary);
  if (!link.name.empty()) {
    const std::string dir = directory_of(path), abs = absolute_directory_of(path);
    candidates.emplace_back(dir + "/" + link.name, true);
    candidates.emplace_back(dir + "/.debug/" + link.name, true);
    if (!abs.empty() && !debug_dir.empty()) candidates.emplace_back(debug_dir + abs + "/" + link.name, true);
  }
  for (const auto& [candidate, by_link] : candidates) {
    if (!exists(candidate)) continue;
    try {
      auto d = std::make_unique<DebugSymbols>(candidate);
      const std::string why = mismatch(binary, *d, by_link ? &link : nullptr);
      if (why.empty()) return d;
      note += (note.empty() ? "" : "; ") + candidate + " passed over: " + why;
    } catch (const std::exception& e) {  // not ELF, unreadable: passed over too
      note += (note.empty() ? "" : "; ") + candidate + " passed over: " + e.what();
    }
  }
  return nullptr;
}

}  // namespace prepatch
