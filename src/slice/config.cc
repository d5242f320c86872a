// Slice config parser and writer. No exceptions, no heap: the shim calls this inside applications.
#include "slice/config.h"
#include "slice/error_text.h"
#include "slice/fs.h"

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace tessera::slice {
namespace {

using internal::SetErr;

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// A [begin, end) view of the text being parsed.
struct Span {
  const char* b;
  const char* e;
  size_t size() const { return static_cast<size_t>(e - b); }
  bool Eq(const char* s) const { return size() == strlen(s) && memcmp(b, s, size()) == 0; }
};

Span Trim(Span s) {
  while (s.b < s.e && IsSpace(*s.b)) ++s.b;
  while (s.e > s.b && IsSpace(s.e[-1])) --s.e;
  return s;
}

bool CopySpan(Span s, char* out, size_t cap) {
  // A NUL inside would cut the value short of what the file says.
  if (s.size() + 1 > cap || memchr(s.b, '\0', s.size()) != nullptr) return false;
  memcpy(out, s.b, s.size());
  out[s.size()] = '\0';
  return true;
}

bool ParseInt(Span s, long long lo, long long hi, long long* out) {
  if (s.size() == 0 || s.size() > 19) return false;
  long long v = 0;
  for (const char* p = s.b; p < s.e; ++p) {
    if (*p < '0' || *p > '9') return false;
    if (v > (hi - (*p - '0')) / 10) return false;  // past hi already (and 19 digits would pass long long)
    v = v * 10 + (*p - '0');
  }
  if (v < lo || v > hi) return false;
  *out = v;
  return true;
}

bool ValidUuid(Span s) {
  if (s.size() < 5 || s.size() >= static_cast<size_t>(kUuidMax)) return false;
  for (const char* p = s.b; p < s.e; ++p) {
    char c = *p;
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '/';
    if (!ok) return false;
  }
  return true;
}

// Parses "<uuid> memory=<bytes> cores=<n>" (the value of a gpu= line).
bool ParseGpu(Span v, GpuLimit* g, int line, char* err, size_t errlen) {
  memset(g, 0, sizeof(*g));
  g->cores = 100;
  const char* p = v.b;
  auto next_token = [&](Span* tok) {
    while (p < v.e && IsSpace(*p)) ++p;
    if (p >= v.e) return false;
    const char* s = p;
    while (p < v.e && !IsSpace(*p)) ++p;
    *tok = Span{s, p};
    return true;
  };
  Span tok;
  if (!next_token(&tok) || !ValidUuid(tok)) {
    SetErr(err, errlen, "line %d: gpu: expected a GPU UUID (GPU-xxxxxxxx-...) first (form: gpu=<uuid> memory=<bytes> cores=<1..100>)", line);
    return false;
  }
  CopySpan(tok, g->uuid, sizeof(g->uuid));
  bool have_mem = false;
  while (next_token(&tok)) {
    const char* eq = static_cast<const char*>(memchr(tok.b, '=', tok.size()));
    if (!eq) {
      SetErr(err, errlen, "line %d: gpu: '%.*s' is not key=value (form: gpu=<uuid> memory=<bytes> cores=<1..100>)", line,
             static_cast<int>(tok.size()), tok.b);
      return false;
    }
    Span k{tok.b, eq}, val{eq + 1, tok.e};
    long long n = 0;
    if (k.Eq("memory")) {
      if (!ParseInt(val, 1, (1ll << 62), &n)) {
        SetErr(err, errlen, "line %d: gpu memory: '%.*s' is not a byte count (allowed 1..2^62 bytes, digits only)", line,
               static_cast<int>(val.size()), val.b);
        return false;
      }
      g->memory_bytes = static_cast<uint64_t>(n);
      have_mem = true;
    } else if (k.Eq("cores")) {
      if (!ParseInt(val, 1, 100, &n)) {
        SetErr(err, errlen, "line %d: gpu cores: '%.*s' out of range (allowed 1..100)", line, static_cast<int>(val.size()),
               val.b);
        return false;
      }
      g->cores = static_cast<int>(n);
    }  // unknown sub-keys are ignored like unknown keys
  }
  if (!have_mem) {
    SetErr(err, errlen, "line %d: gpu: memory=<bytes> missing (form: gpu=<uuid> memory=<bytes> cores=<1..100>)", line);
    return false;
  }
  return true;
}

}  // namespace

void InitSliceConfig(SliceConfig* cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->version = 1;
  cfg->priority = 1;
  cfg->cap_mode = CapMode::kHard;
}

bool ValidSliceName(const char* name) {
  size_t n = strlen(name);
  if (n == 0 || n > 63) return false;
  for (size_t i = 0; i < n; ++i) {
    char c = name[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (i == 0 ? !alnum : !(alnum || c == '.' || c == '_' || c == '-')) return false;
  }
  return true;
}

int FindGpu(const SliceConfig& cfg, const char* uuid) {
  for (int i = 0; i < cfg.gpu_count; ++i)
    if (strcmp(cfg.gpus[i].uuid, uuid) == 0) return i;
  return -1;
}

bool ParseSliceConfig(const char* text, size_t len, SliceConfig* cfg, char* err, size_t errlen) {
  InitSliceConfig(cfg);
  cfg->version = 0;
  const char* p = text;
  const char* end = text + len;
  int line = 0;
  while (p < end) {
    ++line;
    const char* nl = static_cast<const char*>(memchr(p, '\n', static_cast<size_t>(end - p)));
    const char* le = nl ? nl : end;
    Span l{p, le};
    p = nl ? nl + 1 : end;
    // Comments: '#' at line start or after whitespace.
    for (const char* q = l.b; q < l.e; ++q) {
      if (*q == '#' && (q == l.b || IsSpace(q[-1]))) {
        l.e = q;
        break;
      }
    }
    l = Trim(l);
    if (l.size() == 0) continue;
    const char* eq = static_cast<const char*>(memchr(l.b, '=', l.size()));
    if (!eq) {
      SetErr(err, errlen, "line %d: expected key=value, got '%.*s'", line, static_cast<int>(l.size()), l.b);
      return false;
    }
    Span k = Trim(Span{l.b, eq});
    Span v = Trim(Span{eq + 1, l.e});
    long long n = 0;
    if (k.Eq("version")) {
      if (!ParseInt(v, 1, 1, &n)) {
        SetErr(err, errlen, "line %d: version: '%.*s' not supported (allowed: 1)", line, static_cast<int>(v.size()), v.b);
        return false;
      }
      cfg->version = 1;
    } else if (k.Eq("slice")) {
      if (!CopySpan(v, cfg->name, sizeof(cfg->name)) || !ValidSliceName(cfg->name)) {
        SetErr(err, errlen, "line %d: slice: '%.*s' is not a valid name (allowed [a-z0-9][a-z0-9._-]{0,62})", line,
               static_cast<int>(v.size()), v.b);
        return false;
      }
    } else if (k.Eq("region")) {
      if (v.size() == 0 || *v.b != '/' || !CopySpan(v, cfg->region, sizeof(cfg->region))) {
        SetErr(err, errlen, "line %d: region: must be an absolute path shorter than %d bytes", line, kPathMax);
        return false;
      }
    } else if (k.Eq("agent") || k.Eq("mps_pipe")) {
      char* dst = k.Eq("agent") ? cfg->agent : cfg->mps_pipe;
      if (v.size() == 0 || *v.b != '/' || !CopySpan(v, dst, kPathMax)) {
        SetErr(err, errlen, "line %d: %.*s: must be an absolute path shorter than %d bytes", line,
               static_cast<int>(k.size()), k.b, kPathMax);
        return false;
      }
    } else if (k.Eq("mps_percentage")) {
      if (!ParseInt(v, 1, 100, &n)) {
        SetErr(err, errlen, "line %d: mps_percentage: '%.*s' (allowed 1..100)", line, static_cast<int>(v.size()), v.b);
        return false;
      }
      cfg->mps_percentage = static_cast<int>(n);
    } else if (k.Eq("mps_sms")) {
      if (!ParseInt(v, 1, 4096, &n)) {
        SetErr(err, errlen, "line %d: mps_sms: '%.*s' (allowed 1..4096)", line, static_cast<int>(v.size()), v.b);
        return false;
      }
      cfg->mps_sms = static_cast<int>(n);
    } else if (k.Eq("priority")) {
      if (!ParseInt(v, 0, 1, &n)) {
        SetErr(err, errlen, "line %d: priority: '%.*s' (allowed 0 high, 1 best effort)", line, static_cast<int>(v.size()),
               v.b);
        return false;
      }
      cfg->priority = static_cast<int>(n);
    } else if (k.Eq("cap_mode")) {
      if (v.Eq("hard")) {
        cfg->cap_mode = CapMode::kHard;
      } else if (v.Eq("burst")) {
        cfg->cap_mode = CapMode::kBurst;
      } else {
        SetErr(err, errlen, "line %d: cap_mode: '%.*s' (allowed hard|burst)", line, static_cast<int>(v.size()), v.b);
        return false;
      }
    } else if (k.Eq("gpu")) {
      if (cfg->gpu_count >= kMaxGpus) {
        SetErr(err, errlen, "line %d: gpu: more than %d GPUs", line, kMaxGpus);
        return false;
      }
      GpuLimit g;
      if (!ParseGpu(v, &g, line, err, errlen)) return false;
      if (FindGpu(*cfg, g.uuid) >= 0) {
        SetErr(err, errlen, "line %d: gpu: %s listed twice", line, g.uuid);
        return false;
      }
      cfg->gpus[cfg->gpu_count++] = g;
    }
    // Unknown keys are ignored (forward compatibility).
  }
  if (cfg->version != 1) {
    SetErr(err, errlen, "version: missing (expected version=1)");
    return false;
  }
  if (cfg->name[0] == '\0') {
    SetErr(err, errlen, "slice: missing (expected slice=<name>)");
    return false;
  }
  if (cfg->region[0] == '\0') {
    SetErr(err, errlen, "region: missing (expected region=<absolute path>)");
    return false;
  }
  if (cfg->gpu_count == 0) {
    SetErr(err, errlen, "gpu: no GPU listed (expected gpu=<uuid> memory=<bytes> cores=<1..100>)");
    return false;
  }
  return true;
}

const char* SliceConfigPath() {
  struct stat st;
  if (stat(kContainerSliceConfig, &st) == 0) return kContainerSliceConfig;
  const char* env = getenv("TESSERA_SLICE_CONFIG");
  return env != nullptr && *env != '\0' ? env : nullptr;
}

bool LoadSliceConfig(const char* path, bool require_trusted, SliceConfig* cfg, char* err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    SetErr(err, errlen, "%s: %s", path, strerror(errno));
    return false;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    SetErr(err, errlen, "%s: not a regular file", path);
    close(fd);
    return false;
  }
  if (require_trusted) {
    if (st.st_uid != 0 && st.st_uid != geteuid()) {
      SetErr(err, errlen, "%s: owned by uid %u; must be owned by root (or by uid %u) to be trusted", path,
             static_cast<unsigned>(st.st_uid), static_cast<unsigned>(geteuid()));
      close(fd);
      return false;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
      SetErr(err, errlen, "%s: writable by group or other (mode %03o); must not be", path,
             static_cast<unsigned>(st.st_mode & 0777));
      close(fd);
      return false;
    }
  }
  if (st.st_size > static_cast<off_t>(kConfigMaxBytes)) {
    SetErr(err, errlen, "%s: larger than %zu bytes", path, kConfigMaxBytes);
    close(fd);
    return false;
  }
  char buf[kConfigMaxBytes];
  size_t got = 0;
  while (got < sizeof(buf)) {
    ssize_t r = read(fd, buf + got, sizeof(buf) - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      SetErr(err, errlen, "%s: read: %s", path, strerror(errno));
      close(fd);
      return false;
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  close(fd);
  return ParseSliceConfig(buf, got, cfg, err, errlen);
}

int FormatSliceConfig(const SliceConfig& cfg, char* buf, size_t buflen, char* err, size_t errlen) {
  if (!ValidSliceName(cfg.name)) {
    SetErr(err, errlen, "slice: '%s' is not a valid name (allowed [a-z0-9][a-z0-9._-]{0,62})", cfg.name);
    return -1;
  }
  if (cfg.region[0] != '/') {
    SetErr(err, errlen, "region: must be an absolute path");
    return -1;
  }
  if (cfg.gpu_count < 1 || cfg.gpu_count > kMaxGpus) {
    SetErr(err, errlen, "gpu: %d GPUs (allowed 1..%d)", cfg.gpu_count, kMaxGpus);
    return -1;
  }
  size_t off = 0;
  auto put = [&](const char* fmt, auto... args) {
    if (off >= buflen) return;
    int n = snprintf(buf + off, buflen - off, fmt, args...);
    off += n < 0 ? buflen : static_cast<size_t>(n);
  };
  put("# Tessera slice config (written by tessera; read by libtessera.so)\n");
  put("version=1\nslice=%s\nregion=%s\npriority=%d\ncap_mode=%s\n", cfg.name, cfg.region, cfg.priority,
      cfg.cap_mode == CapMode::kBurst ? "burst" : "hard");
  if (cfg.agent[0] == '/') put("agent=%s\n", cfg.agent);
  if (cfg.mps_pipe[0] == '/') put("mps_pipe=%s\n", cfg.mps_pipe);
  if (cfg.mps_percentage >= 1 && cfg.mps_percentage <= 100) put("mps_percentage=%d\n", cfg.mps_percentage);
  if (cfg.mps_sms >= 1 && cfg.mps_sms <= 4096) put("mps_sms=%d\n", cfg.mps_sms);
  for (int i = 0; i < cfg.gpu_count; ++i) {
    const GpuLimit& g = cfg.gpus[i];
    if (g.memory_bytes == 0 || g.cores < 1 || g.cores > 100) {
      SetErr(err, errlen, "gpu %s: memory must be > 0 and cores 1..100", g.uuid);
      return -1;
    }
    put("gpu=%s memory=%llu cores=%d\n", g.uuid, static_cast<unsigned long long>(g.memory_bytes), g.cores);
  }
  if (off >= buflen) {
    SetErr(err, errlen, "config larger than buffer (%zu bytes)", buflen);
    return -1;
  }
  return static_cast<int>(off);
}

bool WriteSliceConfig(const char* path, const SliceConfig& cfg, char* err, size_t errlen) {
  char buf[kConfigMaxBytes];
  int n = FormatSliceConfig(cfg, buf, sizeof(buf), err, errlen);
  if (n < 0) return false;
  char tmp[kPathMax + 32];
  if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, static_cast<int>(getpid())) >= static_cast<int>(sizeof(tmp))) {
    SetErr(err, errlen, "%s: path too long", path);
    return false;
  }
  const Fs& fs = CurrentFs();
  int fd = fs.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    SetErr(err, errlen, "%s: %s", tmp, strerror(errno));
    return false;
  }
  fchmod(fd, 0644);  // umask must not make it group-writable, nor strip read for the app
  bool ok = fs.write(fd, buf, static_cast<size_t>(n)) == n && fs.fsync(fd) == 0;
  ok = (close(fd) == 0) && ok;
  if (!ok || fs.rename(tmp, path) != 0) {
    SetErr(err, errlen, "%s: write: %s", path, strerror(errno));
    unlink(tmp);
    return false;
  }
  return true;
}

bool ParseBytes(const char* s, uint64_t* out) {
  const char* p = s;
  while (*p == ' ') ++p;
  if (*p < '0' || *p > '9') return false;
  // Integer part and optional fraction ("1.5GiB").
  unsigned long long whole = 0;
  while (*p >= '0' && *p <= '9') {
    if (whole > (~0ull - 9) / 10) return false;
    whole = whole * 10 + static_cast<unsigned>(*p++ - '0');
  }
  unsigned long long frac = 0, frac_div = 1;
  if (*p == '.') {
    ++p;
    if (*p < '0' || *p > '9') return false;
    while (*p >= '0' && *p <= '9') {
      if (frac_div < 1000000000ull) {
        frac = frac * 10 + static_cast<unsigned>(*p - '0');
        frac_div *= 10;
      }
      ++p;
    }
  }
  auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
  unsigned long long mult = 1;
  char c = lower(*p);
  if (c) {
    unsigned long long base = 1000;
    int exp = 0;
    switch (c) {
      case 'k': exp = 1; break;
      case 'm': exp = 2; break;
      case 'g': exp = 3; break;
      case 't': exp = 4; break;
      case 'b': exp = 0; break;
      default: return false;
    }
    if (exp > 0) {
      ++p;
      if (lower(*p) == 'i') {
        base = 1024;
        ++p;
      }
      for (int i = 0; i < exp; ++i) mult *= base;
    }
    if (lower(*p) == 'b') ++p;
    if (*p != '\0') return false;
  }
  if (mult > 1 && whole > ~0ull / mult) return false;
  unsigned long long v = whole * mult;
  if (frac && mult == 1) return false;  // fractional bytes make no sense
  // frac * mult / frac_div without the product (it passes 64 bits for "1.999999999TiB"): frac < frac_div.
  const unsigned long long part = frac * (mult / frac_div) + frac * (mult % frac_div) / frac_div;
  if (part > ~0ull - v) return false;
  v += part;
  *out = v;
  return true;
}

}  // namespace tessera::slice
