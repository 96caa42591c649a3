// `export --format svg` (issue 28, item 2): the flame graph's frames checked against the trace's call
// stacks to the pixel, then the file opened as a person would, in Debian's Chromium (headless): the
// screenshot shows every frame in its colour where the SVG puts it, and the page's own script searches
// and zooms (`?s=REGEX`, `?f=ID`; the DOM dumped after it ran). A generated program with thousands of
// callees too narrow to see checks that they are merged into one frame per caller.
#include <gtest/gtest.h>
#include <png.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <cmath>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support.h"
#include "trace/trace.h"

namespace prepatch::test {
namespace {

const std::string td = TESTDATA_DIR;
constexpr double inner_width = 1180;  // the SVG's 1200 px less 10 px of padding each side
constexpr double frame_h = 16;

struct Frame {
  std::string id, name, time, style, fill;
  double share = 0, x = 0, y = 0, w = 0;
  std::string stack;  // its callers' names and its own, `;` between them (from the geometry)
};

std::string unescape(std::string s) {
  const std::pair<const char*, const char*> entities[] = {{"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&amp;", "&"}};
  for (const auto& [e, c] : entities)
    for (size_t at; (at = s.find(e)) != std::string::npos;) s.replace(at, std::strlen(e), c);
  return s;
}

std::string attribute(const std::string& element, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(element, m, std::regex(" " + name + "=\"([^\"]*)\""))) return "";
  return m[1];
}

// The frames of an SVG as written, or as Chromium's DOM dump shows them; each one's stack worked out
// from where it is drawn: its caller is the frame one level below that spans it.
std::vector<Frame> frames_of(const std::string& svg) {
  std::vector<Frame> fs;
  const std::regex g("<g class=\"f\"[^>]*>.*?</g>");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), g); it != std::sregex_iterator(); ++it) {
    const std::string e = it->str();
    Frame f;
    const std::string open = e.substr(0, e.find('>') + 1);
    f.id = attribute(open, "id"), f.style = attribute(open, "style");
    std::smatch m;
    EXPECT_TRUE(std::regex_search(e, m, std::regex("<title>(.*) \\(([^,]*), ([0-9.]+)%\\)</title>"))) << e;
    f.name = unescape(m[1]), f.time = m[2], f.share = std::stod(m[3]);
    const std::string rect = e.substr(e.find("<rect"));
    f.x = std::stod(attribute(rect, "x")), f.y = std::stod(attribute(rect, "y")), f.w = std::stod(attribute(rect, "width"));
    f.fill = attribute(rect, "fill");
    fs.push_back(f);
  }
  return fs;
}

void name_stacks(std::vector<Frame>& fs) {
  double base = 0;
  for (const Frame& f : fs) base = std::max(base, f.y);
  std::vector<size_t> order(fs.size());
  for (size_t k = 0; k < fs.size(); k++) order[k] = k;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return fs[a].y > fs[b].y; });  // callers first
  for (size_t k : order) {
    Frame& f = fs[k];
    if (f.y == base) {
      f.stack = f.name;
      continue;
    }
    const auto caller = std::find_if(fs.begin(), fs.end(), [&](const Frame& c) {
      return c.y == f.y + frame_h && c.x <= f.x + 0.02 && c.x + c.w >= f.x + f.w - 0.02;
    });
    ASSERT_NE(caller, fs.end()) << "no caller under " << f.name << " at x " << f.x;
    f.stack = caller->stack + ";" + f.name;
  }
}

// Each call stack's total time (its calls' durations, callees included), summed over the threads.
std::map<std::string, u64> stack_totals(const std::string& trace_file) {
  std::map<std::string, u64> totals;
  trace::Trace t = trace::read_trace(trace_file);
  for (const trace::ThreadTrace& th : t.threads) {
    std::vector<std::pair<std::string, u64>> open;
    for (const trace::Event& ev : th.events) {
      if (ev.type == shim::rec_entry) {
        open.push_back({(open.empty() ? "" : open.back().first + ";") + t.names[ev.site], ev.ns});
      } else if (ev.type == shim::rec_exit) {
        totals[open.back().first] += ev.ns - open.back().second;
        open.pop_back();
      }
    }
  }
  return totals;
}

u64 all_of(const std::map<std::string, u64>& totals) {
  u64 all = 0;
  for (const auto& [stack, ns] : totals)
    if (stack.find(';') == std::string::npos) all += ns;
  return all;
}

const std::string& graph_trace() { return calltree_graph_trace(); }

// Debian's Chromium, headless, on `url`: its DOM after the page's script ran (`dump`), or a screenshot.
Proc chromium(const TempDir& d, const std::vector<std::string>& what, const std::string& url) {
  std::vector<std::string> argv = {"timeout", "120", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                   "--force-device-scale-factor=1", "--user-data-dir=" + d / "profile"};
  argv.insert(argv.end(), what.begin(), what.end());
  argv.push_back(url);
  return run(argv, d.path());
}

struct Image {
  unsigned width = 0, height = 0;
  std::vector<unsigned char> rgba;
  std::array<int, 3> at(double x, double y) const {
    const size_t k = (static_cast<size_t>(y) * width + static_cast<size_t>(x)) * 4;
    return {rgba[k], rgba[k + 1], rgba[k + 2]};
  }
};

Image read_png(const std::string& path) {
  Image img;
  png_image p{};
  p.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&p, path.c_str())) {
    ADD_FAILURE() << path << ": " << p.message;
    return img;
  }
  p.format = PNG_FORMAT_RGBA;
  img.width = p.width, img.height = p.height;
  img.rgba.resize(PNG_IMAGE_SIZE(p));
  if (!png_image_finish_read(&p, nullptr, img.rgba.data(), 0, nullptr)) ADD_FAILURE() << path << ": " << p.message;
  return img;
}

std::array<int, 3> rgb(const std::string& fill) {
  std::array<int, 3> c{};
  EXPECT_EQ(std::sscanf(fill.c_str(), "rgb(%d,%d,%d)", &c[0], &c[1], &c[2]), 3) << fill;
  return c;
}

// Every stack at least a pixel wide is a frame, as wide as its share of the trace's time, on its
// caller, its siblings in name order; nothing else is drawn; a function trace is refused.
TEST(Flamegraph, FramesAreTheStacksAndTheirTimeToThePixel) {
  TempDir d;
  Proc e = prepatch({"export", graph_trace(), "--format", "svg", "-o", d / "out.svg"});
  ASSERT_EQ(e.status, 0) << e.err;
  std::vector<Frame> fs = frames_of(read_file(d / "out.svg"));
  name_stacks(fs);
  const std::map<std::string, u64> totals = stack_totals(graph_trace());
  const u64 all = all_of(totals);
  ASSERT_GT(all, 0u);
  std::map<std::string, const Frame*> drawn;
  for (const Frame& f : fs) {
    EXPECT_TRUE(drawn.emplace(f.stack, &f).second) << "twice: " << f.stack;
    ASSERT_TRUE(totals.contains(f.stack)) << "not a stack of the trace: " << f.stack;
    const double want = static_cast<double>(totals.at(f.stack)) * inner_width / static_cast<double>(all);
    EXPECT_NEAR(f.w, want, 0.02) << f.stack;
    EXPECT_NEAR(f.share, 100.0 * static_cast<double>(totals.at(f.stack)) / static_cast<double>(all), 0.006) << f.stack;
  }
  for (const auto& [stack, ns] : totals)
    if (static_cast<double>(ns) * inner_width / static_cast<double>(all) >= 1) {
      EXPECT_TRUE(drawn.contains(stack)) << "not drawn: " << stack;
    }
  EXPECT_TRUE(drawn.contains("worker;top;mid;leaf"));
  // Callees side by side from their caller's left edge, in name order.
  for (const Frame& f : fs) {
    std::vector<const Frame*> callees;
    for (const Frame& c : fs)
      if (c.stack == f.stack + ";" + c.name) callees.push_back(&c);
    std::sort(callees.begin(), callees.end(), [](const Frame* a, const Frame* b) { return a->x < b->x; });
    double x = f.x;
    for (size_t k = 0; k < callees.size(); k++) {
      EXPECT_NEAR(callees[k]->x, x, 0.02) << callees[k]->stack;
      if (k) {
        EXPECT_LT(callees[k - 1]->name, callees[k]->name);
      }
      x += callees[k]->w;
    }
  }

  const std::string& fn = calltree_function_trace();
  Proc refused = prepatch({"export", fn, "--format", "svg", "-o", d / "f.svg"});
  EXPECT_EQ(refused.status, 4);
  EXPECT_NE(refused.err.find(fn + ": offset 0x10: a function trace, which has no durations: --format svg needs a graph trace"), std::string::npos)
      << refused.err;
  EXPECT_FALSE(exists(d / "f.svg"));
}

// Chromium draws every frame in its colour where the SVG says; its script highlights the frames a
// search matches and shows their share, and a zoom widens a frame to the whole width with its callees
// scaled alike, its callers kept (faded) and everything else hidden.
TEST(Flamegraph, ChromiumDrawsSearchesAndZooms) {
  TempDir d;
  Proc e = prepatch({"export", graph_trace(), "--format", "svg", "-o", d / "g.svg"});
  ASSERT_EQ(e.status, 0) << e.err;
  const std::string svg = read_file(d / "g.svg");
  std::vector<Frame> fs = frames_of(svg);
  name_stacks(fs);
  ASSERT_FALSE(fs.empty());
  const std::string url = "file://" + d / "g.svg";

  const int height = static_cast<int>(std::stod(attribute(svg.substr(svg.find("<svg")), "height")));
  // The window is taller than the picture: headless Chromium's page area can be smaller than its window.
  Proc shot = chromium(d, {"--screenshot=" + d / "g.png", "--window-size=1200," + std::to_string(height + 200)}, url);
  ASSERT_EQ(shot.status, 0) << "chromium (Debian's package `chromium`, installed by scripts/install-deps.sh): " << shot.err;
  const Image img = read_png(d / "g.png");
  ASSERT_EQ(img.width, 1200u);
  ASSERT_GE(img.height, static_cast<unsigned>(height));
  size_t checked = 0;
  for (const Frame& f : fs) {
    if (f.w < 8) continue;
    const std::array<int, 3> want = rgb(f.fill), got = img.at(f.x + f.w / 2, f.y + 1.5);
    for (int c = 0; c < 3; c++) EXPECT_NEAR(got[c], want[c], 3) << f.stack << " at " << f.x + f.w / 2 << "," << f.y + 1.5;
    checked++;
  }
  EXPECT_GE(checked, 4u);
  const std::array<int, 3> blank = img.at(600, 2);  // the background, above the title
  EXPECT_NE(blank, rgb(fs[0].fill));

  // Search: the leaf frames turn magenta, the share they cover is shown.
  Proc searched = chromium(d, {"--dump-dom"}, url + "?s=" + "%5Eleaf%24");  // ^leaf$
  ASSERT_EQ(searched.status, 0) << searched.err;
  double leaf_share = 0;
  for (const Frame& f : frames_of(searched.out)) {
    const Frame& orig = *std::find_if(fs.begin(), fs.end(), [&](const Frame& o) { return o.id == f.id; });
    EXPECT_EQ(f.fill, f.name == "leaf" ? "rgb(230,0,230)" : orig.fill) << f.name;
    if (f.name == "leaf") leaf_share += f.share;
  }
  ASSERT_GT(leaf_share, 0);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(searched.out, m, std::regex("id=\"matched\"[^>]*>Matched: ([0-9.]+)%<"))) << searched.out.substr(0, 4000);
  EXPECT_NEAR(std::stod(m[1]), leaf_share, 0.15);

  // Zoom into worker;top;mid.
  const auto mid = std::find_if(fs.begin(), fs.end(), [](const Frame& f) { return f.stack == "worker;top;mid"; });
  ASSERT_NE(mid, fs.end());
  Proc zoomed = chromium(d, {"--dump-dom"}, url + "?f=" + mid->id);
  ASSERT_EQ(zoomed.status, 0) << zoomed.err;
  const double scale = inner_width / mid->w;
  size_t shown = 0;
  for (const Frame& f : frames_of(zoomed.out)) {
    const Frame& orig = *std::find_if(fs.begin(), fs.end(), [&](const Frame& o) { return o.id == f.id; });
    const bool hidden = f.style.find("display: none") != std::string::npos;
    if (orig.stack == "worker" || orig.stack == "worker;top") {  // its callers: whole width, faded
      EXPECT_FALSE(hidden) << orig.stack;
      EXPECT_NEAR(f.x, 10, 0.01);
      EXPECT_NEAR(f.w, inner_width, 0.01);
      EXPECT_NE(f.style.find("opacity: 0.5"), std::string::npos) << orig.stack << ": " << f.style;
    } else if (orig.stack.starts_with("worker;top;mid")) {  // it and its callees, scaled
      EXPECT_FALSE(hidden) << orig.stack;
      EXPECT_NEAR(f.x, 10 + (orig.x - mid->x) * scale, 0.05) << orig.stack;
      EXPECT_NEAR(f.w, orig.w * scale, 0.05) << orig.stack;
      shown++;
    } else {
      EXPECT_TRUE(hidden) << orig.stack;
    }
  }
  EXPECT_GE(shown, 2u);  // mid and its leaf
}

// Thousands of callees each far narrower than a pixel, beside one that takes nearly all the time: they
// become one frame, as wide as their sum, that says how many it holds; the file stays small.
TEST(Flamegraph, CalleesNarrowerThanAPixelAreMergedPerCaller) {
  TempDir d;
  constexpr int tiny = 3000;
  std::ostringstream c;
  c << "volatile unsigned long sink;\n";
  for (int k = 0; k < tiny; k++) c << "__attribute__((noinline)) void tiny_" << k << "(void) { sink++; }\n";
  c << "__attribute__((noinline)) void heavy(void) { for (long k = 0; k < 5000000; k++) sink++; }\n"
       "int main(void) {\n  heavy();\n";
  for (int k = 0; k < tiny; k++) c << "  tiny_" << k << "();\n";
  c << "  return 0;\n}\n";
  write_file(d / "wide.c", c.str());
  Proc cc = run({"gcc", "-O1", "-pg", "-mfentry", d / "wide.c", "-o", d / "wide.hooks"});
  ASSERT_EQ(cc.status, 0) << cc.err;
  Proc p = prepatch({"-q", d / "wide.hooks", "-o", d / "wide"});
  ASSERT_EQ(p.status, 0) << p.err;
  Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "w.trace", d / "wide"}, d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  Proc e = prepatch({"export", d / "w.trace", "--format", "svg", "-o", d / "w.svg"});
  ASSERT_EQ(e.status, 0) << e.err;
  std::vector<Frame> fs = frames_of(read_file(d / "w.svg"));
  name_stacks(fs);

  const std::map<std::string, u64> totals = stack_totals(d / "w.trace");
  const u64 all = all_of(totals);
  u64 narrow_ns = 0;
  int narrow = 0;
  for (const auto& [stack, ns] : totals)
    if (stack.starts_with("main;") && static_cast<double>(ns) * inner_width / static_cast<double>(all) < 1) narrow_ns += ns, narrow++;
  ASSERT_GT(narrow, tiny / 2) << "the tiny functions were not narrower than a pixel";
  std::vector<std::string> stacks;
  for (const Frame& f : fs) stacks.push_back(f.stack);
  const auto merged = std::find_if(fs.begin(), fs.end(), [](const Frame& f) { return f.name.find("callees narrower than a pixel") != std::string::npos; });
  ASSERT_GE(static_cast<double>(narrow_ns) * inner_width / static_cast<double>(all), 1) << "the tiny functions together were narrower than a pixel";
  ASSERT_NE(merged, fs.end()) << testing::PrintToString(stacks);
  EXPECT_EQ(merged->name, "(" + std::to_string(narrow) + " callees narrower than a pixel)");
  EXPECT_EQ(merged->stack, "main;" + merged->name);
  EXPECT_NEAR(merged->w, static_cast<double>(narrow_ns) * inner_width / static_cast<double>(all), 0.02);
  EXPECT_LE(fs.size(), 3u + (tiny - static_cast<size_t>(narrow)));  // main, heavy, the merged frame, and the few wide tiny ones
  for (const Frame& f : fs) EXPECT_GE(f.w, 1) << f.stack;
}

}  // namespace
}  // namespace prepatch::test
