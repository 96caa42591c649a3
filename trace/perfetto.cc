// `prepatch export --format perfetto`: Perfetto's native protobuf trace (docs/EXPORT.md), one thread
// after another, each streamed. The messages and field numbers are those of Perfetto's published
// perfetto_trace.proto (TracePacket, TrackDescriptor, TrackEvent, InternedData, ClockSnapshot).
#include <algorithm>

#include "rewriter/names.h"
#include "trace/calls.h"
#include "trace/protobuf.h"
#include "trace/trace.h"

namespace prepatch::trace {
namespace {

// Field numbers, by message.
namespace trace_packet {
constexpr u32 packet = 1;  // Trace.packet
constexpr u32 clock_snapshot = 6, timestamp = 8, trusted_packet_sequence_id = 10, track_event = 11, interned_data = 12,
              sequence_flags = 13, timestamp_clock_id = 58, trace_packet_defaults = 59, track_descriptor = 60;
constexpr u64 seq_incremental_state_cleared = 1, seq_needs_incremental_state = 2;
}  // namespace trace_packet
namespace clock_snapshot {
constexpr u32 clocks = 1, primary_trace_clock = 2;
constexpr u32 clock_id = 1, timestamp = 2, is_incremental = 3;  // ClockSnapshot.Clock
constexpr u64 monotonic = 3;       // BuiltinClock: CLOCK_MONOTONIC, the clock the trace's times are in
constexpr u64 incremental = 64;    // a sequence-scoped clock of our own: each timestamp a delta
}  // namespace clock_snapshot
namespace defaults {
constexpr u32 timestamp_clock_id = 58, track_event_defaults = 11;  // TracePacketDefaults
constexpr u32 track_uuid = 11;                                     // TrackEventDefaults
}  // namespace defaults
namespace track_descriptor {
constexpr u32 uuid = 1, process = 3, thread = 4, parent_uuid = 5;
constexpr u32 pid = 1, tid = 2;            // ThreadDescriptor
constexpr u32 process_pid = 1, process_name = 6;  // ProcessDescriptor
}  // namespace track_descriptor
namespace track_event {
constexpr u32 debug_annotations = 4, type = 9, name_iid = 10, name = 23;
constexpr u64 slice_begin = 1, slice_end = 2, instant = 3;
}  // namespace track_event
namespace interned {
constexpr u32 event_names = 2;  // InternedData
constexpr u32 iid = 1, name = 2;  // EventName
}  // namespace interned
namespace annotation {
constexpr u32 bool_value = 2, int_value = 4, pointer_value = 7, name = 10, array_values = 12;
}  // namespace annotation

// Writes the packets of one thread at a time as a sequence of its own (interned names and delta
// timestamps are per sequence), each packet framed as a Trace.packet field.
class Packets {
 public:
  Packets(TraceFile& t, Output& out) : t_(t), out_(out), process_uuid_(t.header().pid << 32) {}

  // The process's track, once.
  void process() {
    ProtoMessage proc, track;
    proc.varint(track_descriptor::process_pid, t_.header().pid);
    if (t_.header().object[0]) proc.bytes(track_descriptor::process_name, printable_text(shim::base_name(t_.header().object)));
    track.varint(track_descriptor::uuid, process_uuid_).message(track_descriptor::process, proc);
    packet_.varint(trace_packet::trusted_packet_sequence_id, 1).message(trace_packet::track_descriptor, track);
    emit();
  }

  // Starts thread `tid`'s sequence: its state cleared, its clock (deltas from the trace's start in
  // CLOCK_MONOTONIC), its track as every event's default.
  void thread(size_t k, u32 tid) {
    seq_ = static_cast<u32>(k) + 2;
    thread_uuid_ = process_uuid_ | tid;
    last_ = 0;
    std::fill(interned_.begin(), interned_.end(), false);
    interned_.resize(t_.sites(), false);
    ProtoMessage track_defaults, defaults, clock, snap, thr, track;
    track_defaults.varint(defaults::track_uuid, thread_uuid_);
    defaults.varint(defaults::timestamp_clock_id, clock_snapshot::incremental).message(defaults::track_event_defaults, track_defaults);
    packet_.varint(trace_packet::trusted_packet_sequence_id, seq_)
        .varint(trace_packet::sequence_flags, trace_packet::seq_incremental_state_cleared)
        .message(trace_packet::trace_packet_defaults, defaults);
    emit();
    const u64 t0 = t_.header().monotonic0;
    clock.varint(clock_snapshot::clock_id, clock_snapshot::monotonic).varint(clock_snapshot::timestamp, t0);
    snap.message(clock_snapshot::clocks, clock);
    clock.clear();
    clock.varint(clock_snapshot::clock_id, clock_snapshot::incremental).varint(clock_snapshot::timestamp, t0).varint(clock_snapshot::is_incremental, 1);
    snap.message(clock_snapshot::clocks, clock).varint(clock_snapshot::primary_trace_clock, clock_snapshot::monotonic);
    packet_.varint(trace_packet::trusted_packet_sequence_id, seq_)
        .varint(trace_packet::timestamp_clock_id, clock_snapshot::monotonic)
        .varint(trace_packet::timestamp, t0)
        .message(trace_packet::clock_snapshot, snap);
    emit();
    thr.varint(track_descriptor::pid, t_.header().pid).varint(track_descriptor::tid, tid);
    track.varint(track_descriptor::uuid, thread_uuid_).varint(track_descriptor::parent_uuid, process_uuid_).message(track_descriptor::thread, thr);
    packet_.varint(trace_packet::trusted_packet_sequence_id, seq_).message(trace_packet::track_descriptor, track);
    emit();
  }

  // An event on the thread's track at `ns` (since the trace's start): `site`'s name (interned) unless
  // `name` is given; `annotations` encoded DebugAnnotation fields of the TrackEvent.
  void event(u64 type, u64 ns, u32 site, const ProtoMessage& annotations, const std::string* name = nullptr) {
    // A thread's times never go back (a delta is unsigned): an event out of order takes its predecessor's.
    const u64 at = std::max(ns, last_);
    ProtoMessage& ev = event_;
    ev.clear();
    ev.varint(track_event::type, type);
    if (name) ev.bytes(track_event::name, *name);
    else if (type != track_event::slice_end) ev.varint(track_event::name_iid, u64{site} + 1);
    ev.fields(annotations);
    packet_.varint(trace_packet::trusted_packet_sequence_id, seq_).varint(trace_packet::timestamp, at - last_);
    if (!name && type != track_event::slice_end && site < interned_.size() && !interned_[site]) {
      interned_[site] = true;
      ProtoMessage n, data;
      n.varint(interned::iid, u64{site} + 1).bytes(interned::name, t_.name(site));
      data.message(interned::event_names, n);
      packet_.message(trace_packet::interned_data, data);
    }
    packet_.varint(trace_packet::sequence_flags, trace_packet::seq_needs_incremental_state).message(trace_packet::track_event, ev);
    emit();
    last_ = at;
  }

  // Graph: a slice per call, begun at its entry.
  void enter(std::vector<Call>& open) { event(track_event::slice_begin, open.back().begin, open.back().site, none_); }
  // Ended at its exit, with how it ended and its recorded values (Perfetto merges an end's debug
  // annotations into the slice's arguments).
  void close(const Call& c, std::vector<Call>&) {
    ProtoMessage a;
    if (c.unwound) flag(a, "unwound");
    else if (c.cut) flag(a, "cut");
    else if (!c.finished) flag(a, "unfinished");
    if (c.args) values(a, "args", matcher_->args(c), c.args);
    if (c.has_retval) value(a, "retval", c.retval);
    event(track_event::slice_end, c.end, c.site, a);
  }

  // Annotations, each a TrackEvent.debug_annotations field.
  static void flag(ProtoMessage& a, std::string_view name) {
    ProtoMessage d;
    d.bytes(annotation::name, name).varint(annotation::bool_value, 1);
    a.message(track_event::debug_annotations, d);
  }
  // A value as the views print it: small integers as integers, the rest (pointers, most likely) as
  // pointers, which Perfetto shows in hex.
  static void value_fields(ProtoMessage& d, u64 v) {
    if (value_text(v).starts_with("0x")) d.varint(annotation::pointer_value, v);
    else d.varint(annotation::int_value, v);
  }
  static void value(ProtoMessage& a, std::string_view name, u64 v) {
    ProtoMessage d;
    d.bytes(annotation::name, name);
    value_fields(d, v);
    a.message(track_event::debug_annotations, d);
  }
  static void values(ProtoMessage& a, std::string_view name, const u64* v, u8 n) {
    ProtoMessage d, e;
    d.bytes(annotation::name, name);
    for (u8 k = 0; k < n; k++) {
      e.clear();
      value_fields(e, v[k]);
      d.message(annotation::array_values, e);
    }
    a.message(track_event::debug_annotations, d);
  }

  CallMatcher<Packets>* matcher_ = nullptr;
  const ProtoMessage none_;

 private:
  void emit() {
    frame_.clear();
    frame_.message(trace_packet::packet, packet_);
    out_.put(frame_.data());
    packet_.clear();
  }

  TraceFile& t_;
  Output& out_;
  const u64 process_uuid_;
  u64 thread_uuid_ = 0, last_ = 0;
  u32 seq_ = 0;
  std::vector<bool> interned_;  // per site: its name interned on this sequence
  ProtoMessage packet_, frame_, event_;
};

}  // namespace

void export_perfetto(TraceFile& t, Output& out) {
  Packets p(t, out);
  p.process();
  for (size_t k = 0; k < t.threads(); k++) {
    p.thread(k, t.tid(k));
    CallMatcher<Packets> m(p);
    p.matcher_ = &m;
    stream_thread(t, k, m, [&](const Event& e, const u64* args, u8 n) {
      ProtoMessage a;
      if (n) Packets::values(a, "args", args, n);
      p.event(track_event::instant, e.ns, e.site, a);
    }, [&](const Event& e) {  // a fatal signal: an instant event named after it
      ProtoMessage a;
      Packets::flag(a, "signal");
      const std::string name = signal_name(e.rest);
      p.event(track_event::instant, e.ns, 0, a, &name);
    });
  }
}

}  // namespace prepatch::trace
