#include "tests/perfetto.h"

#include <google/protobuf/compiler/importer.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/message.h>
#include <google/protobuf/unknown_field_set.h>

#include <cstdint>
#include <cstdio>
#include <stdexcept>

namespace prepatch::test {
namespace {

namespace pb = google::protobuf;

const char* const proto_dir = PERFETTO_PROTO_DIR;  // tests/CMakeLists.txt: ../shared/perfetto beside the project

struct Errors : pb::compiler::MultiFileErrorCollector {
  std::string text;
  void AddError(const std::string& file, int line, int column, const std::string& message) override {
    text += file + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " + message + "\n";
  }
};

// Reflection, by field name: a name the definitions do not have is a mistake of this reader. Found
// once per message type and name (`name` is always a literal: its address is the key) and kept in a
// small open-addressed table: the big trace's test looks fields up tens of millions of times.
const pb::FieldDescriptor* field(const pb::Message& m, const char* name) {
  struct Slot {
    const void *type = nullptr, *name = nullptr;
    const pb::FieldDescriptor* f = nullptr;
  };
  static Slot table[1024];
  const pb::Descriptor* type = m.GetDescriptor();
  for (size_t i = (reinterpret_cast<uintptr_t>(type) * 31 + reinterpret_cast<uintptr_t>(name)) * 0x9E3779B97F4A7C15 >> 54;; i = (i + 1) % 1024) {
    Slot& s = table[i];
    if (s.type == type && s.name == name) return s.f;
    if (s.type) continue;
    s.f = type->FindFieldByName(name);
    if (!s.f) throw std::logic_error(std::string(type->full_name()) + " has no field " + name);
    s.type = type, s.name = name;
    return s.f;
  }
}
bool has(const pb::Message& m, const char* name) { return m.GetReflection()->HasField(m, field(m, name)); }
u64 number(const pb::Message& m, const char* name) {
  const pb::FieldDescriptor* f = field(m, name);
  const pb::Reflection* r = m.GetReflection();
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_UINT64: return r->GetUInt64(m, f);
    case pb::FieldDescriptor::CPPTYPE_UINT32: return r->GetUInt32(m, f);
    case pb::FieldDescriptor::CPPTYPE_INT64: return static_cast<u64>(r->GetInt64(m, f));
    case pb::FieldDescriptor::CPPTYPE_INT32: return static_cast<u64>(static_cast<i64>(r->GetInt32(m, f)));
    case pb::FieldDescriptor::CPPTYPE_BOOL: return r->GetBool(m, f);
    case pb::FieldDescriptor::CPPTYPE_ENUM: return static_cast<u64>(r->GetEnumValue(m, f));
    default: throw std::logic_error(std::string("not a number: ") + name);
  }
}
const pb::Message& sub(const pb::Message& m, const char* name) { return m.GetReflection()->GetMessage(m, field(m, name)); }
int size(const pb::Message& m, const char* name) { return m.GetReflection()->FieldSize(m, field(m, name)); }
const pb::Message& at(const pb::Message& m, const char* name, int i) { return m.GetReflection()->GetRepeatedMessage(m, field(m, name), i); }
std::string text(const pb::Message& m, const char* name) { return m.GetReflection()->GetString(m, field(m, name)); }
bool unknown(const pb::Message& m) { return m.GetReflection()->GetUnknownFields(m).field_count() != 0; }

// A debug annotation's value as PfEvent::args keeps it.
std::string value(const pb::Message& a) {
  char b[32];
  if (has(a, "bool_value")) return number(a, "bool_value") ? "true" : "false";
  if (has(a, "int_value")) return std::to_string(static_cast<i64>(number(a, "int_value")));
  if (has(a, "uint_value")) return std::to_string(number(a, "uint_value"));
  if (has(a, "pointer_value")) return std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(number(a, "pointer_value"))), b;
  if (has(a, "string_value")) return text(a, "string_value");
  std::string r = "[";
  for (int i = 0; i < size(a, "array_values"); i++) r += (i ? "," : "") + value(at(a, "array_values", i));
  return r + "]";
}

// Per packet sequence: what its incremental state holds.
struct Sequence {
  u64 clock = 0, track = 0;  // TracePacketDefaults
  bool incremental = false;  // its clock 64 has a snapshot
  u64 last = 0;              // that clock's last absolute time
  std::map<u64, std::string> names;
};

}  // namespace

struct PerfettoReader::Impl {
  pb::compiler::DiskSourceTree tree;
  Errors errors;
  pb::compiler::Importer importer{&tree, &errors};
  pb::DynamicMessageFactory factory;
  const pb::Descriptor* packet = nullptr;
};

PerfettoReader::PerfettoReader() : impl_(new Impl) {
  impl_->tree.MapPath("", proto_dir);
  if (!impl_->importer.Import("perfetto_trace.proto"))
    throw std::runtime_error(std::string(proto_dir) + "/perfetto_trace.proto, Perfetto's published definitions (expected in ../shared/perfetto beside the project, or configure with -DPERFETTO_PROTO_DIR=DIR): " + impl_->errors.text);
  impl_->packet = impl_->importer.pool()->FindMessageTypeByName("perfetto.protos.TracePacket");
  if (!impl_->packet) throw std::runtime_error("perfetto_trace.proto has no perfetto.protos.TracePacket");
}

PerfettoReader::~PerfettoReader() = default;

std::map<u64, PfTrack> PerfettoReader::read(const std::string& path, const std::function<void(const PfEvent&)>& event) {
  std::map<u64, PfTrack> tracks;
  std::map<u64, Sequence> seqs;
  problems_.clear();
  packets_ = 0;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return problems_.push_back(path + ": cannot open"), tracks;
  u64 read_to = 0;  // the file's offset
  const auto varint = [&](u64& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      const int c = std::getc(f);
      if (c == EOF) return false;
      read_to++;
      v |= u64(c & 0x7f) << shift;
      if (!(c & 0x80)) return true;
    }
    return false;
  };
  std::unique_ptr<pb::Message> m(impl_->factory.GetPrototype(impl_->packet)->New());
  std::string bytes;
  for (u64 key, off = 0; (off = read_to, varint(key));) {
    u64 len = 0;
    if (key != (1 << 3 | 2) || !varint(len) || len > (u64{1} << 30)) {
      problems_.push_back(path + ": offset " + std::to_string(off) + ": not a Trace.packet field");
      break;
    }
    bytes.resize(len);
    if (std::fread(bytes.data(), 1, len, f) != len) {
      problems_.push_back(path + ": offset " + std::to_string(off) + ": a packet cut short");
      break;
    }
    read_to += len;
    packets_++;
    const auto problem = [&](const std::string& what) { problems_.push_back(path + ": packet at offset " + std::to_string(off) + ": " + what); };
    if (!m->ParsePartialFromString(bytes)) {  // (TracePacket has no required field to check)
      problem("does not decode as a TracePacket");
      continue;
    }
    if (unknown(*m)) problem("fields TracePacket does not define");
    if (!has(*m, "trusted_packet_sequence_id")) {
      problem("no trusted_packet_sequence_id");
      continue;
    }
    Sequence& s = seqs[number(*m, "trusted_packet_sequence_id")];
    if (number(*m, "sequence_flags") & 1) s = Sequence{};  // SEQ_INCREMENTAL_STATE_CLEARED
    if (has(*m, "trace_packet_defaults")) {
      const pb::Message& d = sub(*m, "trace_packet_defaults");
      s.clock = number(d, "timestamp_clock_id");
      if (has(d, "track_event_defaults")) s.track = number(sub(d, "track_event_defaults"), "track_uuid");
    }
    if (has(*m, "clock_snapshot")) {
      const pb::Message& c = sub(*m, "clock_snapshot");
      if (number(c, "primary_trace_clock") != 3) problem("the primary trace clock is not CLOCK_MONOTONIC");
      for (int i = 0; i < size(c, "clocks"); i++) {
        const pb::Message& k = at(c, "clocks", i);
        if (number(k, "clock_id") == 64 && number(k, "is_incremental")) s.incremental = true, s.last = number(k, "timestamp");
      }
    }
    if (has(*m, "interned_data")) {
      const pb::Message& d = sub(*m, "interned_data");
      for (int i = 0; i < size(d, "event_names"); i++) s.names[number(at(d, "event_names", i), "iid")] = text(at(d, "event_names", i), "name");
    }
    u64 ts = 0;
    bool timed = false;
    if (has(*m, "timestamp")) {
      const u64 clock = has(*m, "timestamp_clock_id") ? number(*m, "timestamp_clock_id") : s.clock;
      if (clock == 64 && s.incremental) ts = s.last += number(*m, "timestamp"), timed = true;
      else if (clock == 3) ts = number(*m, "timestamp"), timed = true;
      else problem("a timestamp in clock " + std::to_string(clock) + ", which has no snapshot");
    }
    if (has(*m, "track_descriptor")) {
      const pb::Message& d = sub(*m, "track_descriptor");
      PfTrack t;
      t.uuid = number(d, "uuid"), t.parent = number(d, "parent_uuid");
      if (has(d, "thread")) t.pid = number(sub(d, "thread"), "pid"), t.tid = number(sub(d, "thread"), "tid");
      if (has(d, "process")) t.pid = number(sub(d, "process"), "pid"), t.process_name = text(sub(d, "process"), "process_name");
      tracks[t.uuid] = t;
    }
    if (has(*m, "track_event")) {
      const pb::Message& e = sub(*m, "track_event");
      if (unknown(e)) problem("fields TrackEvent does not define");
      PfEvent ev;
      ev.type = static_cast<int>(number(e, "type"));
      ev.ts = ts;
      ev.track = has(e, "track_uuid") ? number(e, "track_uuid") : s.track;
      if (!timed) problem("a track event without a time");
      if (!tracks.contains(ev.track)) problem("a track event on track " + std::to_string(ev.track) + ", not described before it");
      if (has(e, "name_iid")) {
        const auto n = s.names.find(number(e, "name_iid"));
        if (n == s.names.end()) problem("name_iid " + std::to_string(number(e, "name_iid")) + " is not interned on its sequence");
        else ev.name = n->second;
      } else if (has(e, "name")) {
        ev.name = text(e, "name");
      }
      for (int i = 0; i < size(e, "debug_annotations"); i++) {
        const pb::Message& a = at(e, "debug_annotations", i);
        ev.args[text(a, "name")] = value(a);
      }
      event(ev);
    }
  }
  if (!std::feof(f) && problems_.empty()) problems_.push_back(path + ": not read to its end");
  std::fclose(f);
  return tracks;
}

}  // namespace prepatch::test
