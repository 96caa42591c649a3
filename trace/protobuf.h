// A protocol buffers encoder for the few messages `export --format perfetto` writes: a message is
// built field by field into a byte string (varint and length-delimited fields, the wire types of
// https://protobuf.dev/programming-guides/encoding/), a nested message built apart and appended whole.
#pragma once
#include <string>
#include <string_view>

#include "elf/types.h"

namespace prepatch::trace {

class ProtoMessage {
 public:
  // A varint field: uint32/64, int64 (two's complement: a negative value takes 10 bytes), bool, enum.
  ProtoMessage& varint(u32 field, u64 v) {
    key(field, 0);
    put_varint(v);
    return *this;
  }
  // A length-delimited field: a string, bytes, or a nested message's encoding.
  ProtoMessage& bytes(u32 field, std::string_view s) {
    key(field, 2);
    put_varint(s.size());
    buf_.append(s);
    return *this;
  }
  ProtoMessage& message(u32 field, const ProtoMessage& m) { return bytes(field, m.buf_); }
  // The fields of `m`, a message of the same type, appended to this one's.
  ProtoMessage& fields(const ProtoMessage& m) {
    buf_ += m.buf_;
    return *this;
  }

  const std::string& data() const { return buf_; }
  bool empty() const { return buf_.empty(); }
  void clear() { buf_.clear(); }

 private:
  void key(u32 field, u32 wire) { put_varint(u64{field} << 3 | wire); }
  void put_varint(u64 v) {
    while (v >= 0x80) buf_ += static_cast<char>(v | 0x80), v >>= 7;
    buf_ += static_cast<char>(v);
  }
  std::string buf_;
};

}  // namespace prepatch::trace
