// Numbers from /proc listings ("Key:   123 kB" lines), one definition for the runner (its own memory at
// the end of a repetition) and edgekit_sampler (the runner's, every tick).
#pragma once

#include <cstdlib>
#include <cstring>
#include <string>

namespace edgekit {

// The number after `key` ("VmHWM:", "Pss:") at the start of a line of `text`, or -1.
inline long field_kb(const std::string& text, const char* key) {
  const size_t klen = std::strlen(key);
  for (size_t at = 0; at < text.size();) {
    if (text.compare(at, klen, key) == 0) return std::strtol(text.c_str() + at + klen, nullptr, 10);
    const size_t nl = text.find('\n', at);
    if (nl == std::string::npos) break;
    at = nl + 1;
  }
  return -1;
}

// A kB figure as JSON: null when it could not be read (-1).
inline std::string kb_json(long kb) { return kb < 0 ? "null" : std::to_string(kb); }

}  // namespace edgekit
