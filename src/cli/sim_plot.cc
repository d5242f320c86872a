// PNG plot for `tessera sim` (see sim_plot.h).
#include "cli/sim_plot.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

namespace tessera::cli {

namespace {

// ------------------------------------------------------------------ PNG

void Put32(std::string* s, uint32_t v) {
  s->push_back(char(v >> 24));
  s->push_back(char(v >> 16));
  s->push_back(char(v >> 8));
  s->push_back(char(v));
}

void Chunk(std::string* out, const char type[4], const std::string& data) {
  Put32(out, uint32_t(data.size()));
  std::string body(type, 4);
  body += data;
  out->append(body);
  Put32(out, uint32_t(crc32(0, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size()))));
}

// ------------------------------------------------------------------ canvas

struct Rgb {
  uint8_t r, g, b;
};

class Canvas {
 public:
  Canvas(int w, int h) : w_(w), h_(h), px_(size_t(w) * h * 3, 255) {}
  int w() const { return w_; }
  int h() const { return h_; }
  const std::vector<uint8_t>& pixels() const { return px_; }

  void Set(int x, int y, Rgb c) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
    uint8_t* p = &px_[(size_t(y) * w_ + x) * 3];
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
  }
  void Rect(int x0, int y0, int x1, int y1, Rgb c) {
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x) Set(x, y, c);
  }
  // Thick line (Bresenham with a square pen), clipped to [cx0,cx1]x[cy0,cy1].
  void Line(double x0, double y0, double x1, double y1, Rgb c, int pen, int cx0, int cy0, int cx1, int cy1) {
    const int steps = int(std::max(std::abs(x1 - x0), std::abs(y1 - y0))) + 1;
    for (int i = 0; i <= steps; ++i) {
      const double t = double(i) / steps;
      const int x = int(std::lround(x0 + (x1 - x0) * t));
      const int y = int(std::lround(y0 + (y1 - y0) * t));
      for (int dy = -pen / 2; dy <= pen / 2; ++dy)
        for (int dx = -pen / 2; dx <= pen / 2; ++dx) {
          const int px = x + dx, py = y + dy;
          if (px >= cx0 && px <= cx1 && py >= cy0 && py <= cy1) Set(px, py, c);
        }
    }
  }

 private:
  int w_, h_;
  std::vector<uint8_t> px_;
};

// 5x7 glyphs, one byte per row, bit 4 = leftmost column.
struct Glyph {
  char c;
  uint8_t rows[7];
};

constexpr Glyph kFont[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'a', {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}}, {'b', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E}},
    {'c', {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E}}, {'d', {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F}},
    {'e', {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}}, {'f', {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08}},
    {'g', {0x00, 0x00, 0x0F, 0x11, 0x0F, 0x01, 0x0E}}, {'h', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'i', {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E}}, {'j', {0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C}},
    {'k', {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}}, {'l', {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'m', {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11}}, {'n', {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'o', {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}}, {'p', {0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10}},
    {'q', {0x00, 0x00, 0x0D, 0x13, 0x0F, 0x01, 0x01}}, {'r', {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}},
    {'s', {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E}}, {'t', {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}},
    {'u', {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D}}, {'v', {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'w', {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A}}, {'x', {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11}},
    {'y', {0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E}}, {'z', {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}}, {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}},
    {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}}, {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}}, {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
    {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}}, {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
    {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
};

const Glyph* Find(char c) {
  if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  for (const auto& g : kFont) {
    if (g.c == c) return &g;
  }
  return nullptr;
}

// Draws text at (x, y) top-left, `scale` pixels per font dot; vertical draws bottom-to-top.
void Text(Canvas* cv, int x, int y, const std::string& s, int scale, Rgb c, bool vertical = false) {
  int pos = 0;
  for (char ch : s) {
    const Glyph* g = Find(ch);
    if (g) {
      for (int r = 0; r < 7; ++r)
        for (int col = 0; col < 5; ++col) {
          if (!(g->rows[r] & (0x10 >> col))) continue;
          for (int dy = 0; dy < scale; ++dy)
            for (int dx = 0; dx < scale; ++dx) {
              if (vertical) {
                cv->Set(x + r * scale + dy, y - (pos + col * scale + dx), c);
              } else {
                cv->Set(x + pos + col * scale + dx, y + r * scale + dy, c);
              }
            }
        }
    }
    pos += 6 * scale;
  }
}

int TextWidth(const std::string& s, int scale) { return int(s.size()) * 6 * scale - scale; }

constexpr Rgb kPalette[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},
                            {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127}};

}  // namespace

std::string EncodePng(int width, int height, const std::vector<uint8_t>& rgb) {
  std::string out("\x89PNG\r\n\x1a\n", 8);
  std::string ihdr;
  Put32(&ihdr, uint32_t(width));
  Put32(&ihdr, uint32_t(height));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB, deflate, no filter method, no interlace
  Chunk(&out, "IHDR", ihdr);
  // Each scanline starts with its filter type; 0 (none) compresses well enough for flat plots.
  std::string raw;
  raw.reserve(size_t(height) * (size_t(width) * 3 + 1));
  for (int y = 0; y < height; ++y) {
    raw.push_back('\0');
    raw.append(reinterpret_cast<const char*>(&rgb[size_t(y) * width * 3]), size_t(width) * 3);
  }
  uLongf len = compressBound(uLong(raw.size()));
  std::string z(len, '\0');
  compress2(reinterpret_cast<Bytef*>(z.data()), &len, reinterpret_cast<const Bytef*>(raw.data()), uLong(raw.size()),
            9);
  z.resize(len);
  Chunk(&out, "IDAT", z);
  Chunk(&out, "IEND", "");
  return out;
}

bool WritePlotPng(const std::string& path, const std::vector<PlotSeries>& series, std::string* error) {
  const int W = 960, H = 600;
  const int left = 80, right = W - 190, top = 50, bottom = H - 70;
  Canvas cv(W, H);
  // The interesting part of the curve is near and past full arrival (as in the paper's figure).
  const double x0 = 60, x1 = 130, y0 = 0;
  double ymax = 10;
  for (const auto& s : series)
    for (const auto& [x, y] : s.points)
      if (x >= x0 && x <= 101) ymax = std::max(ymax, y);
  const double y1 = std::min(100.0, std::ceil(ymax / 5.0) * 5.0);
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * (right - left); };
  auto py = [&](double y) { return bottom - (y - y0) / (y1 - y0) * (bottom - top); };
  const Rgb black{0, 0, 0}, grid{225, 225, 225};

  for (int t = int(x0); t <= int(x1); t += 10) {
    const int x = int(std::lround(px(t)));
    cv.Rect(x, top, x, bottom, grid);
    cv.Rect(x, bottom, x, bottom + 5, black);
    const std::string label = std::to_string(t);
    Text(&cv, x - TextWidth(label, 2) / 2, bottom + 10, label, 2, black);
  }
  const double ystep = y1 <= 20 ? 2 : (y1 <= 50 ? 5 : 10);
  for (double t = y0; t <= y1 + 1e-9; t += ystep) {
    const int y = int(std::lround(py(t)));
    cv.Rect(left, y, right, y, grid);
    cv.Rect(left - 5, y, left, y, black);
    const std::string label = std::to_string(int(t));
    Text(&cv, left - 10 - TextWidth(label, 2), y - 7, label, 2, black);
  }
  // Ideal: everything that arrived is allocated until the cluster is full.
  cv.Line(px(x0), py(100 - x0), px(100), py(0), Rgb{160, 160, 160}, 1, left, top, right, bottom);
  cv.Rect(left, top, left + 1, bottom, black);
  cv.Rect(left, bottom - 1, right, bottom, black);
  cv.Rect(right - 1, top, right, bottom, black);
  cv.Rect(left, top, right, top + 1, black);
  cv.Line(px(100), py(y0), px(100), py(y1), Rgb{120, 120, 120}, 1, left, top, right, bottom);

  Text(&cv, left, 15, "unallocated gpu vs arrived workload (median over seeds)", 2, black);
  const std::string xl = "arrived workload (% of cluster gpu capacity)";
  Text(&cv, (left + right) / 2 - TextWidth(xl, 2) / 2, bottom + 40, xl, 2, black);
  const std::string yl = "unallocated gpu (%)";
  Text(&cv, 15, (top + bottom) / 2 + TextWidth(yl, 2) / 2, yl, 2, black, true);

  for (size_t i = 0; i < series.size(); ++i) {
    const Rgb c = kPalette[i % (sizeof kPalette / sizeof kPalette[0])];
    const auto& pts = series[i].points;
    for (size_t k = 1; k < pts.size(); ++k) {
      cv.Line(px(pts[k - 1].first), py(pts[k - 1].second), px(pts[k].first), py(pts[k].second), c, 3, left, top,
              right, bottom);
    }
    const int ly = top + 10 + int(i) * 26;
    cv.Rect(right + 15, ly + 5, right + 45, ly + 8, c);
    Text(&cv, right + 52, ly, series[i].name, 2, black);
  }
  Text(&cv, right + 15, top + 10 + int(series.size()) * 26, "- - ideal", 2, Rgb{160, 160, 160});

  const std::string png = EncodePng(cv.w(), cv.h(), cv.pixels());
  std::ofstream f(path, std::ios::binary);
  if (!f) {
    *error = "cannot open " + path + " for writing";
    return false;
  }
  f.write(png.data(), std::streamsize(png.size()));
  if (!f) {
    *error = "writing " + path + " failed";
    return false;
  }
  return true;
}

}  // namespace tessera::cli
