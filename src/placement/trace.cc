// Trace parsing and the artifact's workload protocol (see trace.h).
#include "placement/trace.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <tuple>

namespace tessera::placement::trace {

namespace {

std::vector<std::string_view> SplitFields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t comma = line.find(',', start);
    if (comma == std::string_view::npos) {
      out.push_back(line.substr(start));
      return out;
    }
    out.push_back(line.substr(start, comma - start));
    start = comma + 1;
  }
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  return s;
}

// Walks CSV text line by line; header columns are looked up by name.
class Csv {
 public:
  explicit Csv(std::string_view text) : text_(text) {}

  bool Header(std::string* error) {
    std::string_view line;
    if (!Next(&line)) {
      *error = "empty file: no header line";
      return false;
    }
    header_ = SplitFields(line);
    for (auto& h : header_) h = Trim(h);
    return true;
  }

  int Column(std::string_view name) const {
    for (size_t i = 0; i < header_.size(); ++i) {
      if (header_[i] == name) return int(i);
    }
    return -1;
  }

  bool Next(std::string_view* line) {
    while (pos_ < text_.size()) {
      size_t nl = text_.find('\n', pos_);
      if (nl == std::string_view::npos) nl = text_.size();
      std::string_view l = Trim(text_.substr(pos_, nl - pos_));
      pos_ = nl + 1;
      ++line_no_;
      if (!l.empty()) {
        *line = l;
        return true;
      }
    }
    return false;
  }

  int line_no() const { return line_no_; }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  int line_no_ = 0;
  std::vector<std::string_view> header_;
};

bool ParseInt(std::string_view s, int64_t* out) {
  s = Trim(s);
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

std::string Where(int line, std::string_view field) {
  return "line " + std::to_string(line) + ", field '" + std::string(field) + "'";
}

}  // namespace

namespace {

// The first of `names` the header has, or -1.
int AnyColumn(const Csv& csv, std::initializer_list<std::string_view> names) {
  for (auto n : names) {
    const int c = csv.Column(n);
    if (c >= 0) return c;
  }
  return -1;
}

// Field `col` of `f` (empty when the column is absent or the row is short: a missing trailing
// optional field reads as empty).
std::string_view Field(const std::vector<std::string_view>& f, int col) {
  return col >= 0 && size_t(col) < f.size() ? Trim(f[size_t(col)]) : std::string_view();
}

// Reads an optional integer: empty means `dflt`; otherwise an integer in [lo, hi] or an error naming
// the field. `scale` multiplies a whole-unit column (cpu cores) into the target unit.
bool OptionalInt(std::string_view text, int64_t dflt, int64_t lo, int64_t hi, int64_t* out) {
  if (text.empty()) {
    *out = dflt;
    return true;
  }
  return ParseInt(text, out) && *out >= lo && *out <= hi;
}

}  // namespace

Parsed<std::vector<TraceNode>> ParseNodes(std::string_view text) {
  Parsed<std::vector<TraceNode>> r;
  Csv csv(text);
  if (!csv.Header(&r.error)) return r;
  // Required: the GPU count and the CPU (millicores, or whole cores as `cpu`). Optional: sn (a name is
  // made up from the row), memory_mib (0: not enforced), model (needed only by nodes with GPUs).
  const int c_name = AnyColumn(csv, {"sn", "name", "node"});
  const int c_milli = csv.Column("cpu_milli");
  const int c_cores = c_milli < 0 ? csv.Column("cpu") : -1;
  const int c_mem = AnyColumn(csv, {"memory_mib"});
  const int c_gpu = AnyColumn(csv, {"gpu", "num_gpu"});
  const int c_model = AnyColumn(csv, {"model", "gpu_model"});
  if (c_gpu < 0) {
    r.error = "node list: the header needs a 'gpu' column (GPUs per node)";
    return r;
  }
  if (c_milli < 0 && c_cores < 0) {
    r.error = "node list: the header needs a 'cpu_milli' (or 'cpu', in cores) column";
    return r;
  }
  std::string_view line;
  int row = 0;
  while (csv.Next(&line)) {
    auto f = SplitFields(line);
    ++row;
    TraceNode n;
    n.name = std::string(Field(f, c_name));
    if (n.name.empty()) n.name = "node-" + std::to_string(row);
    int64_t gpus = 0, cpu = 0;
    if (c_milli >= 0) {
      if (!ParseInt(Field(f, c_milli), &cpu) || cpu < 0) {
        r.error = "node list " + Where(csv.line_no(), "cpu_milli") + ": want an integer >= 0";
        return r;
      }
    } else {
      if (!ParseInt(Field(f, c_cores), &cpu) || cpu < 0 || cpu > (int64_t(1) << 40)) {
        r.error = "node list " + Where(csv.line_no(), "cpu") + ": want an integer >= 0 (cores)";
        return r;
      }
      cpu *= 1000;
    }
    n.cpu_milli = cpu;
    if (!OptionalInt(Field(f, c_mem), 0, 0, INT64_MAX, &n.memory_mib)) {
      r.error = "node list " + Where(csv.line_no(), "memory_mib") + ": want an integer >= 0";
      return r;
    }
    if (c_mem < 0 || Field(f, c_mem).empty()) n.memory_mib = kUnlimitedMemory;
    if (!ParseInt(Field(f, c_gpu), &gpus) || gpus < 0 || gpus > kMaxGpusPerNode) {
      r.error = "node list " + Where(csv.line_no(), "gpu") + ": want an integer in 0.." +
                std::to_string(kMaxGpusPerNode);
      return r;
    }
    n.gpus = int(gpus);
    n.model = std::string(Field(f, c_model));
    if (n.gpus > 0 && n.model.empty()) {
      r.error = "node list " + Where(csv.line_no(), "model") + ": a node with GPUs needs a model";
      return r;
    }
    r.value.push_back(std::move(n));
  }
  return r;
}

Parsed<std::vector<TracePod>> ParsePods(std::string_view text) {
  Parsed<std::vector<TracePod>> r;
  Csv csv(text);
  if (!csv.Header(&r.error)) return r;
  // Required: num_gpu and the CPU (cpu_milli, or whole cores as `cpu` / `num_cpu`). Optional: name,
  // memory_mib (0), gpu_milli (1000 for GPU pods: whole cards), gpu_spec (any model). Other columns
  // (qos, pod_phase, times, ...) are ignored.
  const int c_name = AnyColumn(csv, {"name", "job_id"});
  const int c_milli = csv.Column("cpu_milli");
  const int c_cores = c_milli < 0 ? AnyColumn(csv, {"cpu", "num_cpu"}) : -1;
  const int c_mem = csv.Column("memory_mib");
  const int c_num = csv.Column("num_gpu");
  const int c_gmilli = csv.Column("gpu_milli");
  const int c_spec = csv.Column("gpu_spec");
  if (c_num < 0) {
    r.error = "pod list: the header needs a 'num_gpu' column (GPUs per pod)";
    return r;
  }
  if (c_milli < 0 && c_cores < 0) {
    r.error = "pod list: the header needs a 'cpu_milli' (or 'cpu' / 'num_cpu', in cores) column";
    return r;
  }
  std::map<std::tuple<int64_t, int64_t, int, int, std::string>, int> shapes;
  std::string_view line;
  int row = 0;
  while (csv.Next(&line)) {
    auto f = SplitFields(line);
    ++row;
    TracePod p;
    p.name = std::string(Field(f, c_name));
    if (p.name.empty()) p.name = "pod-" + std::to_string(row);
    int64_t num = 0, milli = 0, cpu = 0;
    if (c_milli >= 0) {
      if (!ParseInt(Field(f, c_milli), &cpu) || cpu < 0) {
        r.error = "pod list " + Where(csv.line_no(), "cpu_milli") + ": want an integer >= 0";
        return r;
      }
    } else {
      if (!ParseInt(Field(f, c_cores), &cpu) || cpu < 0 || cpu > (int64_t(1) << 40)) {
        r.error = "pod list " + Where(csv.line_no(), c_cores == csv.Column("cpu") ? "cpu" : "num_cpu") +
                  ": want an integer >= 0 (cores)";
        return r;
      }
      cpu *= 1000;
    }
    p.cpu_milli = cpu;
    if (!OptionalInt(Field(f, c_mem), 0, 0, INT64_MAX, &p.memory_mib)) {
      r.error = "pod list " + Where(csv.line_no(), "memory_mib") + ": want an integer >= 0";
      return r;
    }
    if (!ParseInt(Field(f, c_num), &num) || num < 0 || num > kMaxGpusPerNode) {
      r.error = "pod list " + Where(csv.line_no(), "num_gpu") + ": want an integer in 0.." +
                std::to_string(kMaxGpusPerNode);
      return r;
    }
    if (!OptionalInt(Field(f, c_gmilli), num > 0 ? 1000 : 0, 0, 1000, &milli)) {
      r.error = "pod list " + Where(csv.line_no(), "gpu_milli") + ": want an integer in 0..1000";
      return r;
    }
    if ((num > 0) != (milli > 0)) {
      r.error = "pod list " + Where(csv.line_no(), "gpu_milli") +
                ": must be > 0 exactly when num_gpu > 0 (got num_gpu " + std::to_string(num) + ", gpu_milli " +
                std::to_string(milli) + ")";
      return r;
    }
    p.num_gpu = int(num);
    p.gpu_milli = int(milli);
    std::string_view spec = Field(f, c_spec);
    while (!spec.empty()) {
      size_t bar = spec.find('|');
      std::string_view m = Trim(spec.substr(0, bar));
      if (!m.empty()) p.gpu_spec.emplace_back(m);
      if (bar == std::string_view::npos) break;
      spec.remove_prefix(bar + 1);
    }
    std::string spec_key;
    for (const auto& m : p.gpu_spec) spec_key += m + "|";
    auto key = std::make_tuple(p.cpu_milli, p.memory_mib, p.num_gpu, p.gpu_milli, spec_key);
    auto [it, inserted] = shapes.emplace(key, int(shapes.size()));
    p.shape = it->second;
    r.value.push_back(std::move(p));
  }
  return r;
}

int64_t ModelMemoryMib(std::string_view model) {
  // Card memory by model as sold; unknown models (the trace's anonymised G1..G3) get 16 GiB.
  struct Entry {
    std::string_view model;
    int64_t mib;
  };
  static constexpr Entry kTable[] = {
      {"P4", 8192},      {"T4", 16384},   {"P100", 16384}, {"V100M16", 16384}, {"V100M32", 32768},
      {"V100", 16384},   {"A10", 24576},  {"A100", 81920}, {"H100", 81920},    {"H200", 143360},
      {"L4", 24576},     {"L40", 49152},  {"A30", 24576},  {"2080", 11264},    {"3090", 24576},
  };
  for (const auto& e : kTable) {
    if (e.model == model) return e.mib;
  }
  return 16384;
}

std::vector<Node> ToNodes(const std::vector<TraceNode>& in) {
  std::vector<Node> out;
  out.reserve(in.size());
  for (const auto& t : in) {
    Node n;
    n.name = t.name;
    n.cpu_milli = t.cpu_milli;
    n.memory_mib = t.memory_mib;
    const int64_t mem = ModelMemoryMib(t.model);
    for (int i = 0; i < t.gpus; ++i) {
      Gpu g;
      g.uuid = "GPU-" + t.name + "-" + std::to_string(i);
      g.model = t.model;
      g.memory_mib = mem;
      g.cores = 100;
      g.numa = t.gpus > 1 ? (2 * i) / t.gpus : 0;
      n.gpus.push_back(std::move(g));
    }
    out.push_back(std::move(n));
  }
  return out;
}

PodRequest ToRequest(const TracePod& pod, Policy policy) {
  PodRequest r;
  r.cpu_milli = pod.cpu_milli;
  r.memory_mib = pod.memory_mib;
  r.node_policy = policy;
  if (pod.num_gpu > 0) {
    ContainerRequest c;
    c.gpus = pod.num_gpu;
    c.cores = (pod.gpu_milli + 9) / 10;
    c.memory_percent = c.cores;
    c.type_include = pod.gpu_spec;
    c.gpu_policy = policy == Policy::kSpread ? Policy::kSpread : Policy::kBinpack;
    r.containers.push_back(std::move(c));
  }
  return r;
}

std::shared_ptr<const Workload> TypicalWorkload(const std::vector<TracePod>& pods, double coverage) {
  struct Acc {
    double count = 0;
    double mem_sum = 0;
  };
  std::map<std::tuple<int64_t, int, int, std::vector<std::string>>, Acc> kinds;
  for (const auto& p : pods) {
    auto& a = kinds[std::make_tuple(p.cpu_milli, p.num_gpu, (p.gpu_milli + 9) / 10, p.gpu_spec)];
    a.count += 1;
    a.mem_sum += double(p.memory_mib);
  }
  std::vector<TypicalRequest> reqs;
  for (const auto& [key, acc] : kinds) {
    TypicalRequest t;
    t.cpu_milli = std::get<0>(key);
    t.gpus = std::get<1>(key);
    t.cores = std::get<2>(key);
    t.models = std::get<3>(key);
    t.memory_mib = int64_t(acc.mem_sum / acc.count);
    t.weight = acc.count;
    reqs.push_back(std::move(t));
  }
  return Workload::Make(std::move(reqs), coverage);
}

uint64_t UniformBelow(std::mt19937_64& rng, uint64_t n) {
  // Rejection sampling: unbiased and identical on every platform.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do {
    x = rng();
  } while (x >= limit);
  return x % n;
}

std::vector<uint32_t> ArrivalOrder(const std::vector<TracePod>& pods, int64_t capacity_milli, double ratio,
                                   uint64_t seed) {
  std::vector<uint32_t> order(pods.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  if (pods.empty()) return order;
  std::mt19937_64 rng(seed);
  for (size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[UniformBelow(rng, i + 1)]);
  int64_t total = 0;
  for (const auto& p : pods) total += p.gpu_milli_total();
  const double target = ratio * double(capacity_milli);
  bool any_gpu = total > 0;
  while (any_gpu) {
    const uint32_t pick = uint32_t(UniformBelow(rng, pods.size()));
    if (double(total + pods[pick].gpu_milli_total()) > target) break;
    total += pods[pick].gpu_milli_total();
    order.push_back(pick);
  }
  return order;
}

}  // namespace tessera::placement::trace
