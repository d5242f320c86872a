// PNG line plot for `tessera sim`: unallocated GPU % against arrived workload %, one curve per
// policy, with axes, ticks and a legend. Self-contained: a small raster canvas, a built-in 5x7
// font and a PNG writer (zlib for the deflate stream). Thread-compatible, no shared state.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tessera::cli {

struct PlotSeries {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (arrived %, unallocated %), x ascending
};

// Encodes an RGB image (row-major, 3 bytes per pixel) as PNG bytes.
std::string EncodePng(int width, int height, const std::vector<uint8_t>& rgb);

// Renders the series and writes the PNG to `path`; false with *error on failure.
bool WritePlotPng(const std::string& path, const std::vector<PlotSeries>& series, std::string* error);

}  // namespace tessera::cli
