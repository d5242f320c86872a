#include "cli/top_prom.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace tessera::cli {
namespace {

bool NameStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':'; }
bool NameChar(char c) { return NameStart(c) || std::isdigit(static_cast<unsigned char>(c)); }

void SkipSpaces(const std::string& s, size_t* i) {
  while (*i < s.size() && (s[*i] == ' ' || s[*i] == '\t')) ++*i;
}

bool ParseValue(const std::string& tok, double* v) {
  if (tok == "+Inf" || tok == "Inf") {
    *v = std::numeric_limits<double>::infinity();
    return true;
  }
  if (tok == "-Inf") {
    *v = -std::numeric_limits<double>::infinity();
    return true;
  }
  if (tok == "NaN") {
    *v = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  if (tok.empty()) return false;
  char* end = nullptr;
  *v = std::strtod(tok.c_str(), &end);
  return end == tok.c_str() + tok.size() && std::isfinite(*v);
}

// Parses `{a="x",b="y"}` starting at s[*i] == '{'.
bool ParseLabels(const std::string& s, size_t* i, std::map<std::string, std::string>* labels, std::string* why) {
  ++*i;  // '{'
  for (;;) {
    SkipSpaces(s, i);
    if (*i < s.size() && s[*i] == '}') {
      ++*i;
      return true;
    }
    size_t start = *i;
    while (*i < s.size() && NameChar(s[*i])) ++*i;
    if (*i == start || !NameStart(s[start])) {
      *why = "bad label name";
      return false;
    }
    std::string key = s.substr(start, *i - start);
    SkipSpaces(s, i);
    if (*i >= s.size() || s[*i] != '=') {
      *why = "expected '=' after label " + key;
      return false;
    }
    ++*i;
    SkipSpaces(s, i);
    if (*i >= s.size() || s[*i] != '"') {
      *why = "expected '\"' to open the value of label " + key;
      return false;
    }
    ++*i;
    std::string val;
    bool closed = false;
    while (*i < s.size()) {
      char c = s[(*i)++];
      if (c == '"') {
        closed = true;
        break;
      }
      if (c == '\\' && *i < s.size()) {
        char e = s[(*i)++];
        if (e == 'n') val += '\n';
        else if (e == '\\' || e == '"') val += e;
        else {
          *why = "bad escape in the value of label " + key;
          return false;
        }
      } else {
        val += c;
      }
    }
    if (!closed) {
      *why = "unterminated value of label " + key;
      return false;
    }
    if (labels->count(key)) {
      *why = "duplicate label " + key;
      return false;
    }
    (*labels)[key] = val;
    SkipSpaces(s, i);
    if (*i < s.size() && s[*i] == ',') {
      ++*i;
      continue;
    }
    if (*i < s.size() && s[*i] == '}') {
      ++*i;
      return true;
    }
    *why = "expected ',' or '}' after label " + key;
    return false;
  }
}

}  // namespace

const std::string& PromSample::Label(const std::string& key) const {
  static const std::string kEmpty;
  auto it = labels.find(key);
  return it == labels.end() ? kEmpty : it->second;
}

bool ParsePromText(const std::string& text, std::vector<PromSample>* out, std::string* err) {
  size_t pos = 0;
  int lineno = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t i = 0;
    SkipSpaces(line, &i);
    if (i == line.size()) continue;
    auto fail = [&](const std::string& why) {
      *err = "line " + std::to_string(lineno) + ": " + why;
      return false;
    };
    if (line[i] == '#') {
      // "# HELP name text" and "# TYPE name type" must name a metric; other comments are free text.
      std::string rest = line.substr(i + 1);
      size_t j = 0;
      SkipSpaces(rest, &j);
      for (const char* kw : {"HELP", "TYPE"}) {
        std::string k(kw);
        if (rest.compare(j, k.size(), k) == 0 && (rest.size() == j + k.size() || rest[j + k.size()] == ' ')) {
          size_t n = j + k.size();
          SkipSpaces(rest, &n);
          if (n >= rest.size() || !NameStart(rest[n])) return fail("# " + k + " without a metric name");
        }
      }
      continue;
    }
    PromSample s;
    size_t start = i;
    if (!NameStart(line[i])) return fail("metric name must start with a letter, '_' or ':'");
    while (i < line.size() && NameChar(line[i])) ++i;
    s.name = line.substr(start, i - start);
    if (i < line.size() && line[i] == '{') {
      std::string why;
      if (!ParseLabels(line, &i, &s.labels, &why)) return fail(s.name + ": " + why);
    }
    if (i >= line.size() || (line[i] != ' ' && line[i] != '\t')) return fail(s.name + ": expected a space before the value");
    SkipSpaces(line, &i);
    size_t vstart = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (!ParseValue(line.substr(vstart, i - vstart), &s.value)) {
      return fail(s.name + ": bad value '" + line.substr(vstart, i - vstart) + "'");
    }
    SkipSpaces(line, &i);
    if (i < line.size()) {
      // Optional timestamp in milliseconds.
      size_t tstart = i;
      if (line[i] == '-') ++i;
      while (i < line.size() && std::isdigit(static_cast<unsigned char>(line[i]))) ++i;
      if (i == tstart || i != line.size()) return fail(s.name + ": junk after the value");
    }
    out->push_back(std::move(s));
  }
  return true;
}

}  // namespace tessera::cli
