// `prepatch export --format svg`: an interactive flame graph in one self-contained SVG file (no network,
// any browser). Outermost calls at the bottom, each frame as wide as the time spent in it and in what it
// called, siblings in name order. Hover shows a frame's name, time and share; click zooms into it;
// Search highlights the frames whose names match a regular expression and shows their share. The URL
// may carry `?s=REGEX` (search at load) and `?f=ID` (zoom at load, ID the frame's `id`).
//
// Frames narrower than a pixel are merged, per caller, into one frame after its wider callees, which
// bounds the file's size by the picture's (about one frame per pixel per level), not by the number of
// distinct stacks.
#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "rewriter/names.h"
#include "trace/stacks.h"

namespace prepatch::trace {
namespace {

constexpr double width = 1200, pad = 10, frame_h = 16, top = 44, bottom = 26;
constexpr double char_w = 7.2;  // 12px monospace

// Text for XML: markup characters as entities. Names come printable (rewriter/names.h: no control
// characters, valid UTF-8), which an XML parser needs.
void put_xml(Output& out, std::string_view s) {
  for (char c : s) {
    if (c == '&') out.put("&amp;");
    else if (c == '<') out.put("&lt;");
    else if (c == '>') out.put("&gt;");
    else if (c == '"') out.put("&quot;");
    else out.put(c);
  }
}

// The first characters of `s` that fit `fit` columns (a UTF-8 character never cut), ".." after them
// when some were left out.
std::string label(const std::string& s, size_t fit) {
  if (s.size() <= fit) return s;
  size_t n = fit - 2;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80) n--;  // s[n] begins a character
  return s.substr(0, n) + "..";
}

std::string time_text(u64 ns) {
  char b[32];
  if (ns < 1000) std::snprintf(b, sizeof b, "%llu ns", static_cast<unsigned long long>(ns));
  else if (ns < 1000000) std::snprintf(b, sizeof b, "%.3g us", ns / 1e3);
  else if (ns < 1000000000) std::snprintf(b, sizeof b, "%.3g ms", ns / 1e6);
  else std::snprintf(b, sizeof b, "%.4g s", ns / 1e9);
  return b;
}

std::string fixed(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

// A warm colour that stays the same for a name across graphs (FNV-1a of the name).
std::string colour(std::string_view name) {
  u32 h = 2166136261u;
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
  return "rgb(" + std::to_string(205 + h % 50) + "," + std::to_string((h >> 8) % 230) + "," + std::to_string((h >> 16) % 55) + ")";
}

// The viewer: hover, click to zoom, search; all in the file. Frames are `g.f` holding a title (name,
// then " (time, share)"), a rect (its x and width the unzoomed layout) and a text.
constexpr std::string_view script = R"JS(
var frames = [], details, matched, unzoomBtn, searchBtn, W, PAD, CW;
function init(evt) {
  var svg = document.documentElement;
  W = +svg.getAttribute('width'); PAD = +svg.getAttribute('data-pad'); CW = +svg.getAttribute('data-char');
  details = document.getElementById('details'); matched = document.getElementById('matched');
  unzoomBtn = document.getElementById('unzoom'); searchBtn = document.getElementById('search');
  var gs = document.querySelectorAll('g.f');
  for (var i = 0; i < gs.length; i++) {
    var g = gs[i], r = g.querySelector('rect'), title = g.querySelector('title').textContent;
    var f = {g: g, r: r, t: g.querySelector('text'), title: title, name: title.slice(0, title.lastIndexOf(' (')),
             x: +r.getAttribute('x'), w: +r.getAttribute('width'), y: +r.getAttribute('y'), fill: r.getAttribute('fill')};
    frames.push(f);
    g.addEventListener('mouseover', (function (f) { return function () { details.textContent = f.title; }; })(f));
    g.addEventListener('mouseout', function () { details.textContent = ' '; });
    g.addEventListener('click', (function (f) { return function () { zoom(f); }; })(f));
  }
  unzoomBtn.addEventListener('click', unzoom);
  searchBtn.addEventListener('click', function () {
    if (searchBtn.getAttribute('data-on')) return clearSearch();
    var re = prompt('Search (a regular expression)', '');
    if (re) search(re);
  });
  var params = new URLSearchParams(document.location.search);
  if (params.get('f')) { var z = document.getElementById(params.get('f')); if (z) zoom(frames[Array.prototype.indexOf.call(gs, z)]); }
  if (params.get('s')) search(params.get('s'));
}
function place(f, x, w) {
  f.r.setAttribute('x', x.toFixed(2)); f.r.setAttribute('width', w.toFixed(2));
  f.t.setAttribute('x', (x + 3).toFixed(2));
  var fit = Math.floor((w - 6) / CW);
  f.t.textContent = fit < 3 ? '' : f.name.length <= fit ? f.name : f.name.slice(0, fit - 2) + '..';
}
function zoom(z) {
  var scale = (W - 2 * PAD) / z.w, eps = 0.01;
  for (var i = 0; i < frames.length; i++) {
    var f = frames[i], below = f.y > z.y;
    var inside = f.x >= z.x - eps && f.x + f.w <= z.x + z.w + eps;
    var around = f.x <= z.x + eps && f.x + f.w >= z.x + z.w - eps;
    if (below ? around : inside) {
      f.g.style.display = '';
      f.g.style.opacity = below ? 0.5 : 1;
      if (below) place(f, PAD, W - 2 * PAD); else place(f, PAD + (f.x - z.x) * scale, f.w * scale);
    } else {
      f.g.style.display = 'none';
    }
  }
  unzoomBtn.style.opacity = 1;
}
function unzoom() {
  for (var i = 0; i < frames.length; i++) {
    var f = frames[i];
    f.g.style.display = ''; f.g.style.opacity = 1;
    place(f, f.x, f.w);
  }
  unzoomBtn.style.opacity = 0;
}
function search(re) {
  var rx;
  try { rx = new RegExp(re); } catch (e) { matched.textContent = 'not a regular expression: ' + re; return; }
  var spans = [];
  for (var i = 0; i < frames.length; i++) {
    var f = frames[i];
    if (rx.test(f.name)) { f.r.setAttribute('fill', 'rgb(230,0,230)'); spans.push([f.x, f.x + f.w]); }
    else f.r.setAttribute('fill', f.fill);
  }
  spans.sort(function (a, b) { return a[0] - b[0]; });
  var sum = 0, end = -1;  // the matched frames' union along x: a match inside a match counts once
  for (var k = 0; k < spans.length; k++) {
    var a = Math.max(spans[k][0], end);
    if (spans[k][1] > a) sum += spans[k][1] - a;
    end = Math.max(end, spans[k][1]);
  }
  matched.textContent = 'Matched: ' + (100 * sum / (W - 2 * PAD)).toFixed(1) + '%';
  searchBtn.setAttribute('data-on', '1'); searchBtn.textContent = 'Reset Search';
}
function clearSearch() {
  for (var i = 0; i < frames.length; i++) frames[i].r.setAttribute('fill', frames[i].fill);
  matched.textContent = ' ';
  searchBtn.removeAttribute('data-on'); searchBtn.textContent = 'Search';
}
)JS";

class Svg {
 public:
  Svg(TraceFile& t, const Stacks& s, Output& out) : t_(t), nodes_(s.nodes()), out_(out) {
    // Each node's total (its self time and its callees'), and its callees in name order.
    total_.resize(nodes_.size());
    first_.assign(nodes_.size() + 1, 0);
    // Sums saturate: a damaged trace's times may add up past 2^64 ns.
    const auto add = [](u64& sum, u64 v) { sum = sum > ~u64{0} - v ? ~u64{0} : sum + v; };
    for (size_t k = nodes_.size(); k-- > 1;) {
      add(total_[k], nodes_[k].self);
      add(total_[nodes_[k].parent], total_[k]);
      first_[nodes_[k].parent + 1]++;
    }
    for (size_t k = 1; k <= nodes_.size(); k++) first_[k] += first_[k - 1];
    children_.resize(nodes_.size() - 1);
    std::vector<u32> at(first_.begin(), first_.end() - 1);
    for (u32 k = 1; k < nodes_.size(); k++) children_[at[nodes_[k].parent]++] = k;
    for (size_t k = 0; k < nodes_.size(); k++)
      std::sort(children_.begin() + first_[k], children_.begin() + first_[k + 1],
                [&](u32 a, u32 b) { return t_.name(nodes_[a].site) < t_.name(nodes_[b].site); });
  }

  void write() {
    const u64 all = total_[Stacks::root];
    const double px = all ? (width - 2 * pad) / static_cast<double>(all) : 0;  // per ns
    // The frames, depth first: callees at least a pixel wide, then the rest merged into one frame.
    struct Frame {
      u32 node;
      u32 depth;
      double x;
    };
    std::vector<Frame> todo{{Stacks::root, 0, pad}};
    size_t depth_max = 0, id = 0;
    struct Drawn {
      u32 node;  // or ~0: merged callees
      u32 depth, merged;
      double x, w;
      u64 ns;
    };
    std::vector<Drawn> drawn;
    while (!todo.empty()) {
      const Frame f = todo.back();
      todo.pop_back();
      double x = f.x;
      u64 narrow_ns = 0;
      u32 narrow = 0;
      std::vector<Frame> next;
      for (u32 i = first_[f.node]; i < first_[f.node + 1]; i++) {
        const u32 c = children_[i];
        const double w = static_cast<double>(total_[c]) * px;
        if (w < 1) {
          narrow_ns += total_[c], narrow++;
          continue;
        }
        drawn.push_back({c, f.depth, 0, x, w, total_[c]});
        next.push_back({c, f.depth + 1, x});
        x += w;
      }
      if (narrow && static_cast<double>(narrow_ns) * px >= 1) drawn.push_back({~u32{0}, f.depth, narrow, x, narrow_ns * px, narrow_ns});
      if (!next.empty()) depth_max = std::max<size_t>(depth_max, f.depth + 1);
      todo.insert(todo.end(), next.rbegin(), next.rend());
    }
    for (const Drawn& d : drawn) depth_max = std::max<size_t>(depth_max, d.depth + 1);
    const double height = top + bottom + frame_h * static_cast<double>(std::max<size_t>(depth_max, 1));

    out_.put("<?xml version=\"1.0\" standalone=\"no\"?>\n<svg version=\"1.1\" xmlns=\"http://www.w3.org/2000/svg\" width=\"")
        .put(fixed(width)).put("\" height=\"").put(fixed(height)).put("\" viewBox=\"0 0 ").put(fixed(width)).put(' ').put(fixed(height))
        .put("\" data-pad=\"").put(fixed(pad)).put("\" data-char=\"").put(fixed(char_w)).put("\" onload=\"init(evt)\">\n");
    out_.put("<style>text { font: 12px monospace; fill: rgb(0,0,0); } g.f:hover rect { stroke: black; stroke-width: 0.5; cursor: pointer; }"
             " .b { cursor: pointer; }</style>\n<script type=\"text/ecmascript\"><![CDATA[")
        .put(script)
        .put("]]></script>\n<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"rgb(248,248,240)\"/>\n");
    out_.put("<text x=\"").put(fixed(width / 2)).put("\" y=\"20\" text-anchor=\"middle\" style=\"font-size: 16px\">Flame graph of ");
    put_xml(out_, printable_text(t_.file()));
    out_.put(" (").put(time_text(all)).put(")</text>\n");
    out_.put("<text id=\"unzoom\" class=\"b\" x=\"").put(fixed(pad)).put("\" y=\"36\" style=\"opacity: 0\">Reset Zoom</text>\n");
    out_.put("<text id=\"search\" class=\"b\" x=\"").put(fixed(width - pad - 100)).put("\" y=\"36\">Search</text>\n");
    out_.put("<text id=\"matched\" x=\"").put(fixed(width - pad - 100)).put("\" y=\"").put(fixed(height - 8)).put("\"> </text>\n");
    out_.put("<text id=\"details\" x=\"").put(fixed(pad)).put("\" y=\"").put(fixed(height - 8)).put("\"> </text>\n");
    for (const Drawn& d : drawn) {
      char merged[64];
      std::snprintf(merged, sizeof merged, "(%u callees narrower than a pixel)", d.merged);
      const std::string& name = d.node == ~u32{0} ? merged : t_.name(nodes_[d.node].site);
      const double y = height - bottom - frame_h * (d.depth + 1);
      char share[32];
      std::snprintf(share, sizeof share, "%.2f%%", all ? 100.0 * static_cast<double>(d.ns) / static_cast<double>(all) : 0);
      out_.put("<g class=\"f\" id=\"f").num(id++).put("\"><title>");
      put_xml(out_, name);
      out_.put(" (").put(time_text(d.ns)).put(", ").put(share).put(")</title><rect x=\"").put(fixed(d.x)).put("\" y=\"").put(fixed(y))
          .put("\" width=\"").put(fixed(d.w)).put("\" height=\"").put(fixed(frame_h - 1)).put("\" rx=\"2\" fill=\"")
          .put(d.node == ~u32{0} ? std::string("rgb(190,190,190)") : colour(name)).put("\"/><text x=\"").put(fixed(d.x + 3))
          .put("\" y=\"").put(fixed(y + frame_h - 4)).put("\">");
      const auto fit = static_cast<size_t>(std::clamp((d.w - 6) / char_w, 0.0, width / char_w));
      if (fit >= 3) put_xml(out_, label(name, fit));
      out_.put("</text></g>\n");
    }
    out_.put("</svg>\n");
  }

 private:
  TraceFile& t_;
  const std::vector<Stacks::Node>& nodes_;
  Output& out_;
  std::vector<u64> total_;
  std::vector<u32> first_, children_;  // node k's callees: children_[first_[k] .. first_[k + 1])
};

}  // namespace

void export_svg(TraceFile& t, Output& out) {
  const Stacks stacks(t, "svg");
  Svg(t, stacks, out).write();
}

}  // namespace prepatch::trace
