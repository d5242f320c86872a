// The replay driver of a fuzz target in the normal build (TESSERA_FUZZ off): calls the target's
// LLVMFuzzerTestOneInput once per file, in name order, for every directory or file named on the command
// line, so ctest replays the seed corpus (and every crash found so far) on each run, under ASan+UBSan in
// `make test`. A directory with no files fails: a corpus that went missing is not a pass.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

bool RunFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "replay: cannot read %s\n", p.c_str());
    return false;
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // A copy of exactly the file's size, so ASan sees a read past the end of the input.
  std::vector<uint8_t> data(bytes.begin(), bytes.end());
  LLVMFuzzerTestOneInput(data.empty() ? nullptr : data.data(), data.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR|FILE...\n", argv[0]);
    return 2;
  }
  size_t ran = 0;
  for (int i = 1; i < argc; ++i) {
    std::filesystem::path arg = argv[i];
    std::error_code ec;
    if (std::filesystem::is_directory(arg, ec)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(arg, ec))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      if (files.empty()) {
        std::fprintf(stderr, "replay: %s has no inputs\n", arg.c_str());
        return 1;
      }
      for (const auto& f : files) {
        if (!RunFile(f)) return 1;
        ++ran;
      }
    } else if (!RunFile(arg)) {
      return 1;
    } else {
      ++ran;
    }
  }
  std::printf("replay: %zu inputs, no crash\n", ran);
  return 0;
}
